/* Forwarding toward a next hop without the routing stack: FIB lookup, TTL, bpf_redirect_neigh
 * to the next hop found (the kernel resolves the neighbour, with its state machine). Anything
 * the lookup cannot answer goes to the stack. */
#ifndef NODENET_BPF_FORWARD_H
#define NODENET_BPF_FORWARD_H

#include "common.h"
#include "l3.h"
#include "events.h"
#include "endpoints.h"
#include "nat.h"
#include "reject.h"

static __always_inline int nodenet_forward(struct __sk_buff *skb)
{
	struct iphdr *ip = nodenet_ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	/* tot_len stays 0: with it set, the kernel checks the IP length (64 KiB for a GSO packet)
	 * against the route MTU and answers FRAG_NEEDED; at 0 it checks the skb, GSO-aware. */
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = skb->ifindex;
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* Re-validate after the lookup: the verifier needs fresh packet pointers. */
	ip = nodenet_ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return nodenet_to_stack(skb, ip);
	if (ip->ttl <= 1)
		return nodenet_to_stack(skb, ip);  /* expiring: the stack answers time exceeded */
	nodenet_emit(skb, NODENET_VERDICT_REMOTE_REDIRECT, ip, fib.ifindex);
	if (nodenet_dec_ttl(ip) < 0)
		return TC_ACT_OK;
	nodenet_count(NODENET_VERDICT_REMOTE_REDIRECT);
	/* The next hop the lookup found (the gateway, or the destination on a link; an IPv6
	 * gateway of an IPv4 route turns the result's family to AF_INET6): without it the kernel
	 * would look the route up again for every packet. */
	struct bpf_redir_neigh nh = { .nh_family = fib.family };
	if (fib.family == AF_INET)
		nh.ipv4_nh = fib.ipv4_dst;
	else
		__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, sizeof(nh.ipv6_nh));
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

/* The local pod a packet whose addresses may have been rewritten is for (0: none), with its
 * header read again into *ip (0 when the packet has none). */
static __always_inline struct nodenet_endpoint *nodenet_local_destination(struct __sk_buff *skb, const struct nodenet_config *cfg, struct iphdr **ip)
{
	*ip = nodenet_ipv4(skb);
	if (!*ip)
		return 0;
	return nodenet_local_endpoint(cfg, (*ip)->daddr);
}

/* Sends a packet whose addresses may have been rewritten on its way: into a local pod, or
 * toward the next hop. */
static __always_inline int nodenet_deliver(struct __sk_buff *skb, const struct nodenet_config *cfg)
{
	struct iphdr *ip;
	struct nodenet_endpoint *dst = nodenet_local_destination(skb, cfg, &ip);
	if (!ip)
		return TC_ACT_OK;
	if (dst)
		return nodenet_deliver_local(skb, ip, dst);
	return nodenet_forward(skb);
}

static __always_inline int nodenet_drop(struct __sk_buff *skb, __u8 verdict)
{
	nodenet_count(verdict);
	nodenet_emit(skb, verdict, nodenet_ipv4(skb), 0);
	return TC_ACT_SHOT;
}

/* A translation's result as a TC verdict: the packet delivered when it was translated, dropped
 * on an error, NODENET_PASS when it is unchanged (its packet pointers are stale all the same). */
static __always_inline int nodenet_deliver_translated(struct __sk_buff *skb, const struct nodenet_config *cfg, int rc)
{
	if (rc == NODENET_TRANSLATED)
		return nodenet_deliver(skb, cfg);
	if (rc == NODENET_ERROR)
		return TC_ACT_SHOT;
	return NODENET_PASS;
}

/* A service translation that did not happen, as a TC verdict: a service without backends answers
 * (TCP reset, ICMP port unreachable), one whose Local policy finds no backend on this node drops,
 * a client outside a LoadBalancer's source ranges drops, an error drops; NODENET_PASS for every other result (translated, or not a service). */
static __always_inline int nodenet_service_failure(struct __sk_buff *skb, int rc)
{
	if (rc == NODENET_NO_BACKEND)
		return nodenet_reject(skb);
	if (rc == NODENET_NO_LOCAL_BACKEND)
		return nodenet_drop(skb, NODENET_VERDICT_DROP_NO_LOCAL_BACKEND);
	if (rc == NODENET_SOURCE_DENIED)
		return nodenet_drop(skb, NODENET_VERDICT_DROP_SOURCE_RANGE);
	if (rc == NODENET_QUOTA_EXCEEDED)
		return nodenet_drop(skb, NODENET_VERDICT_DROP_QUOTA);
	if (rc == NODENET_ERROR)
		return TC_ACT_SHOT;
	return NODENET_PASS;
}

#endif
