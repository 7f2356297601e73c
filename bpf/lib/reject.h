/* Refusing a connection to a service with no backend at once: the packet is turned in place
 * into an ICMP port unreachable (RFC 792: the offending IP header and its first 8 bytes
 * quoted) from the address the client sent to, and sent back out of the device it came in on.
 * The client's kernel reports ECONNREFUSED instead of retrying until it times out. */
#ifndef NODENET_BPF_REJECT_H
#define NODENET_BPF_REJECT_H

#include "common.h"

struct nodenet_icmp_reject {
	struct iphdr ip;
	__u8 type, code;
	__u16 check;
	__u32 unused;
	__u8 quote[28];  /* the offending IPv4 header (no options) and 8 bytes of its payload */
};

static __always_inline __u16 nodenet_csum_fold(__s64 csum)
{
	__u32 sum = (__u32)csum;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Returns the verdict for the rewritten packet, or TC_ACT_SHOT when it cannot be built. */
static __always_inline int nodenet_reject(struct __sk_buff *skb)
{
	struct ethhdr eth;
	struct nodenet_icmp_reject r = {};
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r.quote, sizeof(r.quote)) < 0)
		return TC_ACT_SHOT;
	struct iphdr *offending = (struct iphdr *)r.quote;
	if (offending->ihl != 5 || offending->protocol == IPPROTO_ICMP)
		return TC_ACT_SHOT;  /* never an ICMP error about an ICMP packet */
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = offending->daddr;
	r.ip.daddr = offending->saddr;
	r.type = 3;  /* destination unreachable */
	r.code = 3;  /* port unreachable */
	r.check = nodenet_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.type, sizeof(r) - sizeof(r.ip), 0));
	r.ip.check = nodenet_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.ip, sizeof(r.ip), 0));
	__u8 mac[6];
	__builtin_memcpy(mac, eth.h_dest, 6);
	__builtin_memcpy(eth.h_dest, eth.h_source, 6);
	__builtin_memcpy(eth.h_source, mac, 6);
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(r), 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &r, sizeof(r), BPF_F_INVALIDATE_HASH) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#endif
