/* Source NAT to the node's address: pod traffic leaving nativeRoutingCIDR (masquerade) and
 * NodePort traffic sent on to a remote backend leave with the node's address and a NAT port,
 * and their replies get the original source back; which pod flows are masqueraded (not the
 * replies of connections from outside). Port allocation and packet rewriting are nat.h. */
#ifndef NODENET_BPF_SNAT_H
#define NODENET_BPF_SNAT_H

#include "common.h"
#include "lb.h"
#include "conntrack.h"
#include "nat.h"

/* Whether `address` is inside nativeRoutingCIDR (never when the spec names none). */
static __always_inline int nodenet_inside_native(const struct nodenet_config *cfg, __u32 address)
{
	return (cfg->flags & NODENET_CONFIG_NATIVE_CIDR) && (address & cfg->native_mask) == cfg->native_cidr;
}

/* A connection from outside nativeRoutingCIDR straight to a local pod: its replies are
 * marked so that they are not masqueraded (the peer expects the pod's address). Returns
 * NODENET_QUOTA_EXCEEDED for a new one when the flows opened from outside hold their share of
 * the table (the packet must not reach the pod: its replies would be masqueraded), else 0. */
static __always_inline int nodenet_note_inbound(const struct nodenet_config *cfg, struct nodenet_flow *f)
{
	if (!(cfg->flags & NODENET_CONFIG_MASQUERADE) || nodenet_inside_native(cfg, f->tuple.saddr) ||
	    nodenet_is_node_address(f->tuple.saddr, NODENET_NODE_LOCAL | NODENET_NODE_REMOTE))
		return 0;
	if (f->tuple.proto == IPPROTO_ICMP)
		return 0;  /* echo requests to pods are answered by echo replies, never masqueraded */
	struct nodenet_flow reply;
	nodenet_reply_of(f, f->tuple.daddr, f->tuple.dport, &reply);
	/* Only what may open a connection makes an entry: TCP segments other than a SYN, sent
	 * from outside in any number, would otherwise fill the shared table and evict live ones. */
	struct nodenet_ct_entry *inbound = nodenet_ct_lookup(&reply, NODENET_CT_INBOUND);
	if (inbound) {
		nodenet_ct_mark_established(inbound, f);
		return 0;
	}
	if (!nodenet_may_open(f))
		return 0;
	struct nodenet_opener opener = nodenet_opener_of(cfg, NODENET_CT_QUOTA_OUTSIDE, f->tuple.saddr);
	if (!nodenet_ct_quota_take(&opener, 1))
		return NODENET_QUOTA_EXCEEDED;
	nodenet_ct_put(&reply.tuple, NODENET_CT_INBOUND, 0, 0, 0, 0, BPF_ANY);
	return 0;
}

/* Source NAT to the node's address (masquerade, NodePort to a remote backend), a new mapping
 * within the quotas of `owner` (a pod, or NODENET_CT_QUOTA_OUTSIDE and the flow's client).
 * Returns NODENET_TRANSLATED, NODENET_PASS (no mapping and none may be made),
 * NODENET_QUOTA_EXCEEDED or an error. */
static __always_inline int nodenet_snat_to_node(struct __sk_buff *skb, const struct nodenet_config *cfg, struct nodenet_flow *f, int may_create, __u32 owner)
{
	__u16 port = 0;
	struct nodenet_opener opener = nodenet_opener_of(cfg, owner, f->tuple.saddr);
	int rc = nodenet_snat(f, cfg->node_ip, may_create, &opener, &port);
	if (rc == -1)
		return NODENET_PASS;
	if (rc == -3)
		return NODENET_QUOTA_EXCEEDED;
	if (rc < 0)
		return NODENET_ERROR;
	if (nodenet_rewrite(skb, f, 1, cfg->node_ip, port) < 0)
		return NODENET_ERROR;
	return NODENET_TRANSLATED;
}

/* A reply to a translated source (nodenet_snat_to_node, or a hairpinned flow: services.h):
 * the destination becomes the original source again. */
static __always_inline int nodenet_snat_reverse(struct __sk_buff *skb, struct nodenet_flow *f)
{
	/* Only a port nodenet_snat hands out can be a translated source's (a node port's packets,
	 * most of what reaches the node's address here, need no lookup). */
	if (!nodenet_nat_port(f->tuple.dport))
		return NODENET_PASS;
	struct nodenet_ct_entry *in = nodenet_ct_lookup(f, NODENET_CT_NAT_IN);
	if (!in)
		return NODENET_PASS;
	nodenet_ct_mark_seen_reply(in);
	__u32 address = in->address;
	__u16 port = in->port;
	if (f->tcp_flags & (NODENET_TCP_FIN | NODENET_TCP_RST)) {
		/* The flow's other direction is refreshed too (nodenet_ct_pair_seen). */
		struct nodenet_tuple key = nodenet_tuple_of(address, port, f->tuple.saddr, f->tuple.sport, f->tuple.proto, NODENET_CT_NAT_OUT);
		struct nodenet_ct_entry *out = bpf_map_lookup_elem(&nodenet_ct, &key);
		if (out && out->address == f->tuple.daddr && out->port == f->tuple.dport)
			out->last_seen_ns = bpf_ktime_get_ns();
	}
	if (nodenet_rewrite(skb, f, 0, address, port) < 0)
		return NODENET_ERROR;
	return NODENET_TRANSLATED;
}

/* Whether a pod's flow leaves with the node's address: its destination is outside
 * nativeRoutingCIDR and not a node, it is not the reply of a connection from outside, and it
 * leaves through the native device (not to a local address or another interface). */
static __always_inline int nodenet_needs_masquerade(struct __sk_buff *skb, const struct nodenet_config *cfg, struct nodenet_flow *f)
{
	if (!(cfg->flags & NODENET_CONFIG_MASQUERADE))
		return 0;
	__u32 daddr = f->tuple.daddr;
	if (nodenet_inside_native(cfg, daddr))
		return 0;
	if (nodenet_is_node_address(daddr, NODENET_NODE_LOCAL | NODENET_NODE_REMOTE))
		return 0;
	if (f->tuple.proto != IPPROTO_ICMP && nodenet_ct_lookup(f, NODENET_CT_INBOUND))
		return 0;
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.l4_protocol = f->tuple.proto;
	fib.ipv4_src = f->tuple.saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ifindex;
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	return cfg->native_ifindex == 0 || fib.ifindex == cfg->native_ifindex;
}

#endif
