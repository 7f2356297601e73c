/* Packet-level service translation (NodePort from outside; pods when socket LB is off) and
 * the reverse translation of replies, on top of lb.h, conntrack.h and nat.h. */
#ifndef NODENET_BPF_SERVICES_H
#define NODENET_BPF_SERVICES_H

#include "common.h"
#include "lb.h"
#include "conntrack.h"
#include "nat.h"

/* The node's settings (one entry, written by apply): a map rather than load-time constants,
 * so changing a setting needs no program reload. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nodenet_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_settings SEC(".maps");

/* A copy of the settings (all zero, i.e. everything off, before the first apply wrote them). */
static __always_inline void nodenet_settings_read(struct nodenet_config *cfg)
{
	__u32 zero = 0;
	struct nodenet_config *c = bpf_map_lookup_elem(&nodenet_settings, &zero);
	if (c)
		*cfg = *c;
	else
		__builtin_memset(cfg, 0, sizeof(*cfg));
}

#define NODENET_PASS 0
#define NODENET_TRANSLATED 1
#define NODENET_NO_BACKEND -1
#define NODENET_ERROR -2

/* A reply of a translated flow (backend -> client): the source becomes the frontend the
 * client used again. */
static __always_inline int nodenet_reverse_service(struct __sk_buff *skb, struct nodenet_flow *f)
{
	if (f->tuple.proto != IPPROTO_TCP && f->tuple.proto != IPPROTO_UDP)
		return NODENET_PASS;
	struct nodenet_ct_entry *rev = nodenet_ct_lookup(f, NODENET_CT_REPLY);
	if (!rev)
		return NODENET_PASS;
	rev->flags |= NODENET_CT_F_SEEN_REPLY;
	__u32 address = rev->address;
	__u16 port = rev->port;
	if (nodenet_rewrite(skb, f->tuple.proto, 1, f->tuple.saddr, address, f->tuple.sport, port) < 0)
		return NODENET_ERROR;
	f->tuple.saddr = address;
	f->tuple.sport = port;
	return NODENET_TRANSLATED;
}

/* A packet to a service frontend: the destination becomes the flow's backend (chosen on its
 * first packet, kept in conntrack with the reverse entry for the replies). */
static __always_inline int nodenet_translate_service(struct __sk_buff *skb, struct nodenet_flow *f, int nodeport_only)
{
	if (f->tuple.proto != IPPROTO_TCP && f->tuple.proto != IPPROTO_UDP)
		return NODENET_PASS;
	__u32 address;
	__u16 port;
	struct nodenet_ct_entry *ct = nodenet_ct_lookup(f, NODENET_CT_SERVICE);
	if (ct) {
		address = ct->address;
		port = ct->port;
	} else {
		struct nodenet_service_key key;
		struct nodenet_service *svc = nodenet_service_lookup(&key, f->tuple.daddr, f->tuple.dport, f->tuple.proto, 0, nodeport_only);
		if (!svc)
			return NODENET_PASS;
		__u16 id = svc->id;
		__u32 backend_id = 0;
		struct nodenet_backend *backend = nodenet_select_backend(&key, svc, &backend_id);
		if (!backend)
			return NODENET_NO_BACKEND;
		address = backend->address;
		port = backend->port;
		struct nodenet_tuple reply = {};
		reply.saddr = address;
		reply.daddr = f->tuple.saddr;
		reply.sport = port;
		reply.dport = f->tuple.sport;
		reply.proto = f->tuple.proto;
		nodenet_ct_put(&reply, NODENET_CT_REPLY, f->tuple.daddr, f->tuple.dport, id, backend_id, BPF_ANY);
		struct nodenet_tuple forward = f->tuple;
		nodenet_ct_put(&forward, NODENET_CT_SERVICE, address, port, id, backend_id, BPF_ANY);
	}
	if (nodenet_rewrite(skb, f->tuple.proto, 0, f->tuple.daddr, address, f->tuple.dport, port) < 0)
		return NODENET_ERROR;
	f->tuple.daddr = address;
	f->tuple.dport = port;
	return NODENET_TRANSLATED;
}

/* Source NAT to the node's address (masquerade, NodePort to a remote backend). Returns
 * NODENET_TRANSLATED, NODENET_PASS (no mapping and none may be made) or an error. */
static __always_inline int nodenet_masquerade(struct __sk_buff *skb, const struct nodenet_config *cfg, struct nodenet_flow *f, int may_create)
{
	__u16 port = 0;
	int rc = nodenet_snat(f, cfg->node_ip, may_create, &port);
	if (rc == -1)
		return NODENET_PASS;
	if (rc < 0)
		return NODENET_ERROR;
	if (nodenet_rewrite(skb, f->tuple.proto, 1, f->tuple.saddr, cfg->node_ip, f->tuple.sport, port) < 0)
		return NODENET_ERROR;
	f->tuple.saddr = cfg->node_ip;
	f->tuple.sport = port;
	return NODENET_TRANSLATED;
}

/* A reply to a translated source: the destination becomes the original source again. */
static __always_inline int nodenet_unmasquerade(struct __sk_buff *skb, struct nodenet_flow *f)
{
	struct nodenet_ct_entry *in = nodenet_ct_lookup(f, NODENET_CT_NAT_IN);
	if (!in)
		return NODENET_PASS;
	__u32 address = in->address;
	__u16 port = in->port;
	if (nodenet_rewrite(skb, f->tuple.proto, 0, f->tuple.daddr, address, f->tuple.dport, port) < 0)
		return NODENET_ERROR;
	f->tuple.daddr = address;
	f->tuple.dport = port;
	return NODENET_TRANSLATED;
}

/* Whether traffic from a pod to `daddr` leaves with the node's address. */
static __always_inline int nodenet_needs_masquerade(const struct nodenet_config *cfg, __u32 daddr)
{
	if (!(cfg->flags & NODENET_CONFIG_MASQUERADE))
		return 0;
	if ((daddr & cfg->native_mask) == cfg->native_cidr)
		return 0;
	return !nodenet_is_node_address(daddr, NODENET_NODE_LOCAL | NODENET_NODE_REMOTE);
}

#endif
