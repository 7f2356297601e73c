/* The maps every nodenet program shares, pinned by name under the node's bpffs directory
 * (libbpf reuses a compatible pinned map, so the contents survive restarts and are shared
 * between the from-container and from-netdev objects). */
#ifndef NODENET_BPF_ENDPOINTS_H
#define NODENET_BPF_ENDPOINTS_H

#include "common.h"
#include "l3.h"
#include "events.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_ENDPOINTS_MAX);
	__type(key, struct nodenet_endpoint_key);
	__type(value, struct nodenet_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NODENET_VERDICT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_verdicts SEC(".maps");

/* Whether `address` is in this node's pod CIDR (every local pod is: the spec's pods are
 * validated so, endpoints are given addresses from it; none set: any address). */
static __always_inline int nodenet_in_pod_cidr(const struct nodenet_config *cfg, __u32 address)
{
	return (address & cfg->pod_mask) == cfg->pod_cidr;
}

/* The local pod at `address` (network order), 0 when there is none: looked up only inside
 * the pod CIDR (the destinations of traffic leaving the node need no lookup). The settings'
 * pod CIDR and the endpoints agree once an apply is done; while a node's podCIDR is changed
 * in place, a pod outside the CIDR the settings already say is routed, not delivered. */
static __always_inline struct nodenet_endpoint *nodenet_local_endpoint(const struct nodenet_config *cfg, __u32 address)
{
	if (!nodenet_in_pod_cidr(cfg, address))
		return 0;
	struct nodenet_endpoint_key key = { .ip = address };
	return bpf_map_lookup_elem(&nodenet_endpoints, &key);
}

static __always_inline void nodenet_count(__u32 verdict)
{
	__u64 *n = bpf_map_lookup_elem(&nodenet_verdicts, &verdict);
	if (n)
		*n += 1;
}

/* Leaves the packet to the kernel stack, counted and reported as such. */
static __always_inline int nodenet_to_stack(struct __sk_buff *skb, struct iphdr *ip)
{
	nodenet_count(NODENET_VERDICT_TO_STACK);
	nodenet_emit(skb, NODENET_VERDICT_TO_STACK, ip, 0);
	return TC_ACT_OK;
}

/* Delivers the packet straight into a local pod: destination MAC = the pod's eth0, source
 * MAC = its lxc (as the seed observes), TTL decremented, redirected into the lxc's peer. */
static __always_inline int nodenet_deliver_local(struct __sk_buff *skb, struct iphdr *ip, struct nodenet_endpoint *dst)
{
	__u8 pod_mac[6], host_mac[6];
	__u32 ifindex = dst->ifindex;
	__builtin_memcpy(pod_mac, dst->pod_mac, 6);
	__builtin_memcpy(host_mac, dst->host_mac, 6);
	if (ip->ttl <= 1)
		return nodenet_to_stack(skb, ip);  /* expiring: the stack answers time exceeded */
	nodenet_emit(skb, NODENET_VERDICT_LOCAL_REDIRECT, ip, ifindex);
	if (nodenet_dec_ttl(ip) < 0)
		return TC_ACT_OK;
	/* The Ethernet header lies before `ip`, whose bounds were checked. */
	struct ethhdr *eth = (void *)ip - sizeof(struct ethhdr);
	__builtin_memcpy(eth->h_dest, pod_mac, 6);
	__builtin_memcpy(eth->h_source, host_mac, 6);
	nodenet_count(NODENET_VERDICT_LOCAL_REDIRECT);
	return bpf_redirect_peer(ifindex, 0);
}

#endif
