/* Packet-level service translation (NodePort from outside; pods when socket LB is off) and
 * the reverse translation of replies, on top of lb.h, conntrack.h and nat.h; also the node's
 * settings map the tc programs read. Source NAT to the node's address (masquerade, NodePort
 * SNAT) is snat.h. */
#ifndef NODENET_BPF_SERVICES_H
#define NODENET_BPF_SERVICES_H

#include "common.h"
#include "endpoints.h"
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

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, NODENET_SOURCE_RANGES_MAX);
	__type(key, struct nodenet_source_range_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_source_ranges SEC(".maps");

/* Whether the frontend `id` takes a flow from `client` (network order) under its source ranges. */
static __always_inline int nodenet_source_allowed(__u32 id, __u32 client)
{
	struct nodenet_source_range_key key = { .prefixlen = 64, .id = id, .address = client };
	return bpf_map_lookup_elem(&nodenet_source_ranges, &key) != 0;
}

/* Whether `f`, a backend's SYN-ACK, answers a connection the client opened to the backend's own
 * address, reusing the ports of a translated flow that is over: the old pair goes, with what its
 * opener had counted, and the reply keeps its source. A SYN through the frontend would have
 * opened that flow again (nodenet_translate_service starts its pair afresh), so this one came
 * straight to the backend (a pod's address routed from outside, another pod). Without this,
 * the reply was rewritten to the old frontend and the connection failed until the agent's
 * collection.
 *
 * Only a flow the client's side ended (its reset or its FIN, which nobody outside can forge for
 * a local pod or for the node's own NAT mapping), over both ways, and quiet since as long as
 * its NAT port would have to be (nodenet_flow_over_wait): a reset or FIN forged as the backend
 * cannot retire a live pair, and a late packet of the old flow is not taken for the new one (a
 * client reopening at once has its SYN retransmitted a second later). Read before the reverse
 * lookup refreshes the pair. */
static __noinline int nodenet_reply_opens_direct(const struct nodenet_flow *f)
{
	if (f->tuple.proto != IPPROTO_TCP ||
	    (f->tcp_flags & (NODENET_TCP_SYN | NODENET_TCP_ACK)) != (NODENET_TCP_SYN | NODENET_TCP_ACK))
		return 0;
	/* One key, the reply's then the service's (a subprogram's stack adds to its callers'). */
	struct nodenet_tuple key = f->tuple;
	key.kind = NODENET_CT_REPLY;
	key.pad = 0;
	struct nodenet_ct_entry *rev = bpf_map_lookup_elem(&nodenet_ct, &key);
	if (!rev)
		return 0;
	__u8 rev_flags = rev->flags;
	__u64 rev_seen = rev->last_seen_ns;
	key = nodenet_tuple_of(f->tuple.daddr, f->tuple.dport, rev->address, rev->port, f->tuple.proto, NODENET_CT_SERVICE);
	struct nodenet_ct_entry *s = bpf_map_lookup_elem(&nodenet_ct, &key);
	if (!s || s->address != f->tuple.saddr || s->port != f->tuple.sport ||
	    !(s->flags & (NODENET_CT_F_CLOSING | NODENET_CT_F_RESET)))
		return 0;
	__u64 quiet = nodenet_flow_over_wait(s->flags, rev_flags);
	__u64 now = bpf_ktime_get_ns();
	if (!quiet || !nodenet_nat_idle(s->last_seen_ns, now, quiet) || !nodenet_nat_idle(rev_seen, now, quiet))
		return 0;
	bpf_map_delete_elem(&nodenet_ct, &key);
	key = f->tuple;
	key.kind = NODENET_CT_REPLY;
	key.pad = 0;
	bpf_map_delete_elem(&nodenet_ct, &key);
	nodenet_ct_give_back(f->tuple.daddr, 2);
	return 1;
}

/* A reply of a translated flow (backend -> client): the source becomes the frontend the
 * client used again. `may_be_direct`: the packet may answer a connection to the backend's own
 * address (not a reply the node's source NAT took back, which answers the frontend's flow). */
static __always_inline int nodenet_reverse_service(struct __sk_buff *skb, struct nodenet_flow *f, int may_be_direct)
{
	if (f->tuple.proto != IPPROTO_TCP && f->tuple.proto != IPPROTO_UDP)
		return NODENET_PASS;
	if (may_be_direct && nodenet_reply_opens_direct(f))
		return NODENET_PASS;
	struct nodenet_ct_entry *rev = nodenet_ct_lookup(f, NODENET_CT_REPLY);
	if (!rev)
		return NODENET_PASS;
	nodenet_ct_mark_seen_reply(rev);
	__u32 address = rev->address;
	__u16 port = rev->port;
	if (nodenet_rewrite(skb, f, 1, address, port) < 0)
		return NODENET_ERROR;
	return NODENET_TRANSLATED;
}

/* Whether `address` is on this node: in its pod CIDR or its own. */
static __always_inline int nodenet_on_this_node(const struct nodenet_config *cfg, __u32 address)
{
	return nodenet_in_pod_cidr(cfg, address) || address == cfg->node_ip;
}

/* A packet to a service frontend: the destination becomes the flow's backend (chosen on its
 * first packet, kept in conntrack with the reverse entry for the replies). A flow whose
 * backend was removed (or whose service is gone) is not kept on it: it is chosen again. */
static __always_inline int nodenet_translate_service(struct __sk_buff *skb, const struct nodenet_config *cfg, struct nodenet_flow *f, int nodeport_only)
{
	if (f->tuple.proto != IPPROTO_TCP && f->tuple.proto != IPPROTO_UDP)
		return NODENET_PASS;
	__u32 address = 0, backend_id = 0, id = 0;
	__u16 port = 0;
	int refreshed = 1;
	struct nodenet_ct_entry *ct = nodenet_ct_lookup_refreshed(f, NODENET_CT_SERVICE, &refreshed);
	/* The flow's entry as it stays (an entry written anew below is another element). */
	struct nodenet_ct_entry *own = 0;
	if (ct && nodenet_backend_current(ct->backend_id, ct->address, ct->port, nodenet_ct_frontend(ct))) {
		own = ct;
		nodenet_ct_mark_established(ct, f);
		address = ct->address;
		port = ct->port;
		id = nodenet_ct_frontend(ct);
		backend_id = ct->backend_id;
	} else {
		/* Only a flow's first packet opens it (kube-proxy translates NEW connections only):
		 * a stray TCP segment to a node port is left to the stack. */
		if (!ct && f->tuple.proto == IPPROTO_TCP && (f->tcp_flags & (NODENET_TCP_SYN | NODENET_TCP_ACK)) != NODENET_TCP_SYN)
			return NODENET_PASS;
		struct nodenet_service_key key;
		struct nodenet_service *svc = nodenet_service_lookup(&key, f->tuple.daddr, f->tuple.dport, f->tuple.proto, 0, nodeport_only);
		if (!svc)
			return ct ? NODENET_NO_BACKEND : NODENET_PASS;
		id = svc->id;
		/* loadBalancerSourceRanges govern traffic from outside (the packet path from the
		 * native device); a flow already open keeps going. */
		if (nodeport_only && (svc->flags & NODENET_SERVICE_SOURCE_RANGES) && !nodenet_source_allowed(id, f->tuple.saddr))
			return NODENET_SOURCE_DENIED;
		/* Maglev when the node uses it: the same backend for this 5-tuple on every node. */
		struct nodenet_choice how = { 0 };
		if (cfg->maglev_size) {
			how.maglev_size = cfg->maglev_size;
			how.hash = nodenet_flow_hash(f->tuple.saddr, f->tuple.daddr, f->tuple.sport, f->tuple.dport, f->tuple.proto);
		}
		struct nodenet_backend backend = {};
		if (!nodenet_select_backend_for(&key, svc, &backend_id, f->tuple.saddr, &how, &backend))
			return (svc->flags & NODENET_SERVICE_LOCAL_ONLY) ? NODENET_NO_LOCAL_BACKEND : NODENET_NO_BACKEND;
		address = backend.address;
		port = backend.port;
		/* A new flow counts against its opener's conntrack quota: the pod's (per-packet LB),
		 * or the outside's together (node ports, load balancer and external addresses). */
		struct nodenet_opener opener =
			nodenet_opener_of(cfg, nodeport_only ? NODENET_CT_QUOTA_OUTSIDE : f->tuple.saddr, f->tuple.saddr);
		if (!ct && !nodenet_ct_quota_take(&opener, 2))
			return NODENET_QUOTA_EXCEEDED;
		struct nodenet_tuple forward = f->tuple;
		if (ct) {
			nodenet_ct_put(&forward, NODENET_CT_SERVICE, address, port, id, backend_id, BPF_ANY);
		} else if (nodenet_ct_put(&forward, NODENET_CT_SERVICE, address, port, id, backend_id, BPF_NOEXIST) < 0) {
			/* Another CPU opened the flow first: follow its choice (counted once). */
			nodenet_ct_quota_return(&opener, 2);
			struct nodenet_ct_entry *winner = nodenet_ct_lookup(f, NODENET_CT_SERVICE);
			if (!winner)
				return NODENET_ERROR;
			address = winner->address;
			port = winner->port;
			id = nodenet_ct_frontend(winner);
			backend_id = winner->backend_id;
		}
	}
	/* The reverse entry: (re)made when missing (an LRU table may evict one direction), and
	 * refreshed. An open TCP flow from outside to a backend on another node looks it up, with a
	 * packet without a flag to record, only when its own entry was refreshed (every ~0.5 s:
	 * nodenet_ct_lookup): a lookup fewer per packet; the replies refresh it themselves, and a
	 * reply while it is missing comes back through this node's source NAT, where from-netdev
	 * drops it (TCP sends it again). Every other flow looks it up with each packet: a reply
	 * from a backend on this node, or to a pod, would reach its client untranslated, whose
	 * kernel answers with a reset that ends the backend's connection. UDP has nothing to send
	 * a lost reply again: each datagram looks it up. */
	if (!own || refreshed || !nodeport_only || f->tuple.proto != IPPROTO_TCP ||
	    (f->tcp_flags & (NODENET_TCP_SYN | NODENET_TCP_FIN | NODENET_TCP_RST)) || nodenet_on_this_node(cfg, address)) {
		struct nodenet_flow reply;
		nodenet_reply_of(f, address, port, &reply);
		struct nodenet_ct_entry *rev = nodenet_ct_lookup(&reply, NODENET_CT_REPLY);
		if (!rev || rev->address != f->tuple.daddr || rev->port != f->tuple.dport) {
			nodenet_ct_pair_seen(own, 0, f);  /* (the reverse entry made anew below) */
			nodenet_ct_put(&reply.tuple, NODENET_CT_REPLY, f->tuple.daddr, f->tuple.dport, id, backend_id, BPF_ANY);
		} else {
			nodenet_ct_pair_seen(own, rev, f);
		}
	}
	if (nodenet_rewrite(skb, f, 0, address, port) < 0)
		return NODENET_ERROR;
	return NODENET_TRANSLATED;
}

/* A pod whose connection to a service was given to the pod itself (hairpin): the source
 * becomes NODENET_HAIRPIN_IPV4 (with a NAT port), so that the pod accepts the packet and its
 * replies come back through from-container, where nodenet_snat_reverse restores them. */
static __always_inline int nodenet_hairpin(struct __sk_buff *skb, struct nodenet_flow *f)
{
	if (f->tuple.saddr != f->tuple.daddr)
		return NODENET_PASS;
	__u32 hairpin = bpf_htonl(NODENET_HAIRPIN_IPV4);
	__u16 port = 0;
	int rc = nodenet_snat(f, hairpin, 1, (const struct nodenet_opener *)0, &port);
	if (rc < 0)
		return NODENET_ERROR;
	if (nodenet_rewrite(skb, f, 1, hairpin, port) < 0)
		return NODENET_ERROR;
	return NODENET_TRANSLATED;
}

#endif
