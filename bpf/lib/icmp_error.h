/* ICMP errors (destination unreachable, time exceeded, parameter problem, including
 * "fragmentation needed" for path MTU discovery) about a flow this node translated to its
 * own address: the error is addressed to the node, and quotes the packet as translated. It
 * is turned back into an error about the original packet and sent to the original source
 * (a pod behind masquerade, or the client of a NodePort served by a remote backend). */
#ifndef NODENET_BPF_ICMP_ERROR_H
#define NODENET_BPF_ICMP_ERROR_H

#include "common.h"
#include "conntrack.h"
#include "nat.h"
#include "fragments.h"

#define NODENET_ICMP_OFF NODENET_L4_OFF
#define NODENET_INNER_OFF (NODENET_L4_OFF + 8)
#define NODENET_INNER_L4_OFF (NODENET_INNER_OFF + 20)
#define NODENET_INNER_CHECK_OFF (NODENET_INNER_OFF + __builtin_offsetof(struct iphdr, check))
#define NODENET_INNER_SADDR_OFF (NODENET_INNER_OFF + __builtin_offsetof(struct iphdr, saddr))
#define NODENET_INNER_DADDR_OFF (NODENET_INNER_OFF + __builtin_offsetof(struct iphdr, daddr))
#define NODENET_ICMP_CHECK_OFF (NODENET_ICMP_OFF + 2)

/* Rewrites a 4-byte address inside the quoted header: its own checksum follows, so the
 * ICMP checksum (which covers the quote) does not change. */
static __always_inline int nodenet_inner_addr(struct __sk_buff *skb, int off, __u32 from, __u32 to)
{
	return nodenet_store_addr(skb, NODENET_INNER_CHECK_OFF, off, from, to);
}

/* Rewrites a 2-byte port (or echo id) inside the quote: the ICMP checksum follows. */
static __always_inline int nodenet_inner_port(struct __sk_buff *skb, int off, __u16 from, __u16 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, NODENET_ICMP_CHECK_OFF, from, to, 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, 2, 0);
}

/* The IPv4 header an ICMP error (destination unreachable, time exceeded, parameter problem)
 * quotes; -1 when the packet is no such error. */
static __always_inline int nodenet_icmp_error_quote(struct __sk_buff *skb, struct iphdr *inner)
{
	struct nodenet_icmp_echo icmp;
	if (bpf_skb_load_bytes(skb, NODENET_ICMP_OFF, &icmp, sizeof(icmp)) < 0)
		return -1;
	if (icmp.type != 3 && icmp.type != 11 && icmp.type != 12)
		return -1;
	return bpf_skb_load_bytes(skb, NODENET_INNER_OFF, inner, sizeof(*inner)) < 0 ? -1 : 0;
}

/* An ICMP error to the node's address (outer header IPv4 without options, checked by the
 * caller). NODENET_TRANSLATED when it belonged to a translated flow and was rewritten. */
static __always_inline int nodenet_icmp_error_to_node(struct __sk_buff *skb, __u32 node_ip, __u32 outer_daddr)
{
	struct iphdr inner;
	if (nodenet_icmp_error_quote(skb, &inner) < 0)
		return NODENET_PASS;
	if (inner.ihl != 5 || inner.saddr != node_ip || (inner.frag_off & bpf_htons(NODENET_IP_OFFSET)))
		return NODENET_PASS;  /* a quoted later fragment has no ports */
	/* The quoted packet went node:port -> peer:port; its replies would match NAT_IN. */
	struct nodenet_flow f = {};
	f.tuple.saddr = inner.daddr;
	f.tuple.daddr = inner.saddr;
	f.tuple.proto = inner.protocol;
	int sport_off = NODENET_INNER_L4_OFF, dport_off = NODENET_INNER_L4_OFF + 2;
	__u16 quoted_sport, quoted_dport = 0;
	if (inner.protocol == IPPROTO_TCP || inner.protocol == IPPROTO_UDP) {
		__be16 ports[2];
		if (bpf_skb_load_bytes(skb, NODENET_INNER_L4_OFF, ports, sizeof(ports)) < 0)
			return NODENET_PASS;
		quoted_sport = ports[0];
		quoted_dport = ports[1];
		f.tuple.sport = quoted_dport;
		f.tuple.dport = quoted_sport;
	} else if (inner.protocol == IPPROTO_ICMP) {
		struct nodenet_icmp_echo echo;
		if (bpf_skb_load_bytes(skb, NODENET_INNER_L4_OFF, &echo, sizeof(echo)) < 0 || echo.type != NODENET_ICMP_ECHO)
			return NODENET_PASS;
		quoted_sport = echo.id;
		sport_off = NODENET_INNER_L4_OFF + 4;
		f.tuple.dport = echo.id;
	} else {
		return NODENET_PASS;
	}
	struct nodenet_ct_entry *in = nodenet_ct_lookup(&f, NODENET_CT_NAT_IN);
	if (!in)
		return NODENET_PASS;
	__u32 orig = in->address;
	__u16 orig_port = in->port;
	/* The error goes to the original source ... */
	if (nodenet_store_addr(skb, NODENET_IP_CSUM_OFF, NODENET_DADDR_OFF, outer_daddr, orig) < 0)
		return NODENET_ERROR;
	/* ... and quotes the packet as that source sent it. */
	if (nodenet_inner_addr(skb, NODENET_INNER_SADDR_OFF, inner.saddr, orig) < 0 ||
	    nodenet_inner_port(skb, sport_off, quoted_sport, orig_port) < 0)
		return NODENET_ERROR;
	if (inner.protocol == IPPROTO_ICMP)
		return NODENET_TRANSLATED;
	/* A NodePort flow: the client sent it to the frontend, not to the backend. */
	struct nodenet_flow reply = {};
	reply.tuple.saddr = inner.daddr;
	reply.tuple.daddr = orig;
	reply.tuple.sport = quoted_dport;
	reply.tuple.dport = orig_port;
	reply.tuple.proto = inner.protocol;
	struct nodenet_ct_entry *rev = nodenet_ct_lookup(&reply, NODENET_CT_REPLY);
	if (rev) {
		__u32 frontend = rev->address;
		__u16 frontend_port = rev->port;
		if (nodenet_inner_addr(skb, NODENET_INNER_DADDR_OFF, inner.daddr, frontend) < 0 ||
		    nodenet_inner_port(skb, dport_off, quoted_dport, frontend_port) < 0)
			return NODENET_ERROR;
	}
	return NODENET_TRANSLATED;
}

/* An ICMP error about a flow translated to a backend (per-packet LB, NodePort to a local
 * backend), on its way to the flow's client: the quote names the frontend the client used,
 * and an error from the backend itself comes from the frontend's address. A hairpinned
 * flow's error (the pod quotes 169.254.42.1 as the source) goes to the pod's own address and
 * quotes the port it used. */
static __always_inline int nodenet_icmp_error_reverse_service(struct __sk_buff *skb, __u32 outer_saddr, __u32 outer_daddr)
{
	struct iphdr inner;
	if (nodenet_icmp_error_quote(skb, &inner) < 0)
		return NODENET_PASS;
	if (inner.ihl != 5 || (inner.protocol != IPPROTO_TCP && inner.protocol != IPPROTO_UDP) || (inner.frag_off & bpf_htons(NODENET_IP_OFFSET)))
		return NODENET_PASS;
	__be16 ports[2];
	if (bpf_skb_load_bytes(skb, NODENET_INNER_L4_OFF, ports, sizeof(ports)) < 0)
		return NODENET_PASS;
	/* The quote is client -> backend; its replies (backend -> client) match REPLY, and for a
	 * hairpinned flow first NAT_IN (backend -> 169.254.42.1:port names the client). */
	__u32 client = inner.saddr;
	__u16 client_port = ports[0];
	int hairpin = inner.saddr == bpf_htonl(NODENET_HAIRPIN_IPV4);
	if (hairpin) {
		struct nodenet_flow back = {};
		back.tuple.saddr = inner.daddr;
		back.tuple.daddr = inner.saddr;
		back.tuple.sport = ports[1];
		back.tuple.dport = ports[0];
		back.tuple.proto = inner.protocol;
		struct nodenet_ct_entry *in = nodenet_ct_lookup(&back, NODENET_CT_NAT_IN);
		if (!in)
			return NODENET_PASS;
		client = in->address;
		client_port = in->port;
	}
	struct nodenet_flow reply = {};
	reply.tuple.saddr = inner.daddr;
	reply.tuple.daddr = client;
	reply.tuple.sport = ports[1];
	reply.tuple.dport = client_port;
	reply.tuple.proto = inner.protocol;
	struct nodenet_ct_entry *rev = nodenet_ct_lookup(&reply, NODENET_CT_REPLY);
	if (!rev)
		return NODENET_PASS;
	__u32 frontend = rev->address;
	__u16 frontend_port = rev->port;
	if (hairpin) {
		if (outer_daddr == inner.saddr && nodenet_store_addr(skb, NODENET_IP_CSUM_OFF, NODENET_DADDR_OFF, outer_daddr, client) < 0)
			return NODENET_ERROR;
		if (nodenet_inner_addr(skb, NODENET_INNER_SADDR_OFF, inner.saddr, client) < 0 ||
		    nodenet_inner_port(skb, NODENET_INNER_L4_OFF, ports[0], client_port) < 0)
			return NODENET_ERROR;
	}
	if (nodenet_inner_addr(skb, NODENET_INNER_DADDR_OFF, inner.daddr, frontend) < 0 ||
	    nodenet_inner_port(skb, NODENET_INNER_L4_OFF + 2, ports[1], frontend_port) < 0)
		return NODENET_ERROR;
	if (outer_saddr == inner.daddr && nodenet_store_addr(skb, NODENET_IP_CSUM_OFF, NODENET_SADDR_OFF, outer_saddr, frontend) < 0)
		return NODENET_ERROR;
	return NODENET_TRANSLATED;
}

#endif
