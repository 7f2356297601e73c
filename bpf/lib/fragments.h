/* IPv4 fragments of translated flows: the first fragment carries the ports, the later ones
 * only the IP header. The first records the ports by (source, destination, protocol, id);
 * the later ones read them back, and only their addresses are rewritten. A later fragment
 * that arrives before its first is not translated (the receiver cannot reassemble it). */
#ifndef NODENET_BPF_FRAGMENTS_H
#define NODENET_BPF_FRAGMENTS_H

#include "common.h"

#define NODENET_IP_MF 0x2000
#define NODENET_IP_OFFSET 0x1fff

/* struct nodenet_flow.fragment */
#define NODENET_FRAGMENT_NONE 0
#define NODENET_FRAGMENT_FIRST 1
#define NODENET_FRAGMENT_LATER 2

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NODENET_FRAGMENTS_MAX);
	__type(key, struct nodenet_fragment_key);
	__type(value, struct nodenet_fragment_ports);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_fragments SEC(".maps");

/* Which part of a datagram `ip` is (NODENET_FRAGMENT_*). */
static __always_inline int nodenet_fragment_of(const struct iphdr *ip)
{
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & NODENET_IP_OFFSET)
		return NODENET_FRAGMENT_LATER;
	return (frag & NODENET_IP_MF) ? NODENET_FRAGMENT_FIRST : NODENET_FRAGMENT_NONE;
}

static __always_inline void nodenet_fragment_key_of(const struct iphdr *ip, struct nodenet_fragment_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->saddr = ip->saddr;
	key->daddr = ip->daddr;
	key->id = ip->id;
	key->proto = ip->protocol;
}

static __always_inline void nodenet_fragment_record(const struct iphdr *ip, __u16 sport, __u16 dport)
{
	struct nodenet_fragment_key key;
	nodenet_fragment_key_of(ip, &key);
	struct nodenet_fragment_ports ports = { .sport = sport, .dport = dport };
	bpf_map_update_elem(&nodenet_fragments, &key, &ports, BPF_ANY);
}

/* The ports its first fragment recorded for a later fragment; -1 when there are none. */
static __always_inline int nodenet_fragment_ports(const struct iphdr *ip, __u16 *sport, __u16 *dport)
{
	struct nodenet_fragment_key key;
	nodenet_fragment_key_of(ip, &key);
	struct nodenet_fragment_ports *ports = bpf_map_lookup_elem(&nodenet_fragments, &key);
	if (!ports)
		return -1;
	*sport = ports->sport;
	*dport = ports->dport;
	return 0;
}

#endif
