/* Rewriting addresses and ports in place, with the IP and L4 checksums fixed up
 * incrementally (offload-aware through the helpers), source NAT port allocation, and the
 * outcomes every translation step (services.h, snat.h, icmp_error.h) returns. */
#ifndef NODENET_BPF_NAT_H
#define NODENET_BPF_NAT_H

#include "common.h"
#include "l3.h"
#include "conntrack.h"
#include "endpoints.h"

/* Outcomes of the translation steps: distinct from every TC_ACT_* verdict, so a function
 * may return either. */
#define NODENET_PASS 100
#define NODENET_TRANSLATED 101
#define NODENET_NO_BACKEND 102
#define NODENET_ERROR 103
/* A frontend with a Local traffic policy and no backend on this node: dropped, as kube-proxy does. */
#define NODENET_NO_LOCAL_BACKEND 104
#define NODENET_SOURCE_DENIED 105  /* a client outside the frontend's loadBalancerSourceRanges */
#define NODENET_QUOTA_EXCEEDED 106 /* a pod at its conntrack quota opening a flow */

/* Where the port (or ICMP echo id) and the checksum of `proto` are. */
static __always_inline int nodenet_l4_csum_off(__u8 proto)
{
	return NODENET_L4_OFF + (proto == IPPROTO_TCP ? 16 : proto == IPPROTO_UDP ? 6 : 2);
}

/* Replaces the 4-byte address at `addr_off` and fixes the IPv4 header checksum at
 * `csum_off` (the packet's own header, or the header an ICMP error quotes). */
static __always_inline int nodenet_store_addr(struct __sk_buff *skb, int csum_off, int addr_off, __u32 from, __u32 to)
{
	if (bpf_l3_csum_replace(skb, csum_off, from, to, 4) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, addr_off, &to, 4, 0);
}

/* Rewrites the source (`source` != 0) or destination address and port of flow `f`'s packet
 * to `new_addr:new_port`, and `f` with it. For ICMP echo the "port" is the identifier. A
 * later fragment has only its addresses (the first fragment's L4 checksum covers the whole
 * datagram). Returns 0, or < 0 when a helper failed. */
static __always_inline int nodenet_rewrite(struct __sk_buff *skb, struct nodenet_flow *f, int source, __u32 new_addr, __u16 new_port)
{
	__u8 proto = f->tuple.proto;
	__u32 *addr = source ? &f->tuple.saddr : &f->tuple.daddr;
	__u16 *port = source ? &f->tuple.sport : &f->tuple.dport;
	__u32 old_addr = *addr;
	__u16 old_port = *port;
	int l4 = f->fragment != NODENET_FRAGMENT_LATER;
	int csum = nodenet_l4_csum_off(proto);
	int port_off = proto == IPPROTO_ICMP ? NODENET_L4_OFF + 4 : NODENET_L4_OFF + (source ? 0 : 2);
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	if (old_addr != new_addr) {
		/* The ICMP checksum has no pseudo header. */
		if (l4 && proto != IPPROTO_ICMP && bpf_l4_csum_replace(skb, csum, old_addr, new_addr, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		if (nodenet_store_addr(skb, NODENET_IP_CSUM_OFF, source ? NODENET_SADDR_OFF : NODENET_DADDR_OFF, old_addr, new_addr) < 0)
			return -1;
	}
	if (l4 && old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum, old_port, new_port, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
			return -1;
	}
	*addr = new_addr;
	*port = new_port;
	return 0;
}

/* Whether `last_seen` is more than `idle_ns` before `now` (an entry written after `now` was
 * read is not). */
static __always_inline int nodenet_nat_idle(__u64 last_seen, __u64 now, __u64 idle_ns)
{
	return now > last_seen && now - last_seen > idle_ns;
}

/* How long a TCP flow whose directions' entries carry `in_flags` and `out_flags` must have been
 * quiet before its NAT port goes to another, when it is over: reset, or finished (FIN) each
 * way; 0 when it is not over. */
static __always_inline __u64 nodenet_flow_over_wait(__u8 in_flags, __u8 out_flags)
{
	if (!nodenet_flow_over(in_flags, out_flags))
		return 0;
	return ((in_flags | out_flags) & NODENET_CT_F_RESET) ? NODENET_NAT_REUSE_RESET_NS : NODENET_NAT_REUSE_FINISHED_NS;
}

/* Gives back `entries` a flow opened by `client` had counted: the pod's when `client` is a
 * local pod (as the agent's recount judges it), else the outside's and its client's. */
static __always_inline void nodenet_ct_give_back(__u32 client, __u32 entries)
{
	if (!entries)
		return;
	struct nodenet_endpoint_key pod = { .ip = client };
	if (bpf_map_lookup_elem(&nodenet_endpoints, &pod)) {
		nodenet_ct_count_down(&nodenet_ct_quota, client, entries);
	} else {
		nodenet_ct_count_down(&nodenet_ct_quota, NODENET_CT_QUOTA_OUTSIDE, entries);
		nodenet_ct_count_down(&nodenet_ct_client, client, entries);
	}
}

/* The rest of a flow whose NAT port went to another (NAT_IN key `in`, its original source
 * `address:port`): when `owned` (its NAT_OUT still named this port, so the client's tuple was
 * not opened again with another), its service pair when it had been translated to a backend (a
 * node port with a remote backend, a pod's flow under per-packet LB: key the client's, value
 * the backend `in` came from) goes too; what the flow's opener had counted for it is given back
 * (the pod's when the source is a local pod, as the agent's recount judges it, else the
 * outside's and its client's): the service pair's when it went, the NAT pair's when `counted`
 * (a hairpinned flow's NAT is not counted). Closed flows do not hold quotas until the agent's collection. */
static __always_inline void nodenet_nat_forget(const struct nodenet_tuple *in, __u32 address, __u16 port, int counted, int owned)
{
	__u32 entries = counted ? 2 : 0;
	struct nodenet_tuple reply = nodenet_tuple_of(in->saddr, in->sport, address, port, in->proto, NODENET_CT_REPLY);
	struct nodenet_ct_entry *r = owned ? bpf_map_lookup_elem(&nodenet_ct, &reply) : 0;
	if (r) {
		struct nodenet_tuple service = nodenet_tuple_of(address, port, r->address, r->port, in->proto, NODENET_CT_SERVICE);
		struct nodenet_ct_entry *s = bpf_map_lookup_elem(&nodenet_ct, &service);
		if (s && s->address == in->saddr && s->port == in->sport) {
			bpf_map_delete_elem(&nodenet_ct, &service);
			bpf_map_delete_elem(&nodenet_ct, &reply);
			entries += 2;
		}
	}
	nodenet_ct_give_back(address, entries);
}

/* Takes the NAT port of key `in` (a NAT_IN key, every field set) for the flow `f` when its
 * present flow is done with it: a TCP flow that is over (reset, or FIN each way) and quiet
 * for NODENET_NAT_REUSE_RESET_NS or _FINISHED_NS, or a flow that never got going (TCP: not established;
 * UDP, ICMP: never answered) and quiet for NODENET_NAT_RECLAIM_NS, both directions judged.
 * The entry is claimed first by moving its time forward atomically: of CPUs reclaiming it at
 * once one wins, and the others (and any that read it later) see it busy. Its NAT_IN is then
 * replaced by `f`'s (deleted, then inserted exclusively), its NAT_OUT and its service pair
 * go, and its quota counts are given back (`counted`: nodenet_nat_forget). 0 when the port
 * is `f`'s now. */
static __always_inline int nodenet_nat_reclaim(__u32 saddr, __u16 sport, struct nodenet_tuple *in, __u32 nat_addr, int counted)
{
	struct nodenet_ct_entry *held = bpf_map_lookup_elem(&nodenet_ct, in);
	if (!held)
		return nodenet_ct_put(in, NODENET_CT_NAT_IN, saddr, sport, 0, 0, BPF_NOEXIST) == 0 ? 0 : -1;
	__u64 now = bpf_ktime_get_ns();
	__u32 address = held->address;
	__u16 port = held->port;
	__u8 held_flags = held->flags;
	__u64 held_seen = held->last_seen_ns;
	struct nodenet_tuple out = nodenet_tuple_of(address, port, in->saddr, in->sport, in->proto, NODENET_CT_NAT_OUT);
	struct nodenet_ct_entry *o = bpf_map_lookup_elem(&nodenet_ct, &out);
	int owns = o && o->address == nat_addr && o->port == in->dport;
	__u8 out_flags = owns ? o->flags : 0;
	__u64 quiet_ns = in->proto == IPPROTO_TCP ? nodenet_flow_over_wait(held_flags, out_flags) : 0;
	if (!quiet_ns) {
		if (held_flags & (in->proto == IPPROTO_TCP ? NODENET_CT_F_ESTABLISHED : NODENET_CT_F_SEEN_REPLY))
			return -1;
		quiet_ns = NODENET_NAT_RECLAIM_NS;
	}
	if (!nodenet_nat_idle(held_seen, now, quiet_ns) || (owns && !nodenet_nat_idle(o->last_seen_ns, now, quiet_ns)))
		return -1;
	if (__sync_val_compare_and_swap(&held->last_seen_ns, held_seen, now) != held_seen)
		return -1;
	/* Still the same entry (an LRU element may be reused for another key once deleted). */
	struct nodenet_ct_entry *again = bpf_map_lookup_elem(&nodenet_ct, in);
	if (again != held || again->address != address || again->port != port)
		return -1;
	bpf_map_delete_elem(&nodenet_ct, in);
	if (nodenet_ct_put(in, NODENET_CT_NAT_IN, saddr, sport, 0, 0, BPF_NOEXIST) != 0)
		return -1;
	/* Its NAT_OUT goes when it still names this port (a SYN reopening the tuple meanwhile may
	 * have given it another). */
	struct nodenet_ct_entry *still = owns ? bpf_map_lookup_elem(&nodenet_ct, &out) : 0;
	owns = still && still->address == nat_addr && still->port == in->dport;
	if (owns)
		bpf_map_delete_elem(&nodenet_ct, &out);
	nodenet_nat_forget(in, address, port, counted, owns);
	return 0;
}

/* Whether `port` (network order) is one nodenet_snat hands out (NODENET_NAT_PORT_MIN on). */
static __always_inline int nodenet_nat_port(__u16 port)
{
	return (__u32)bpf_ntohs(port) - NODENET_NAT_PORT_MIN < NODENET_NAT_PORT_COUNT;
}

/* Source NAT of the flow to `nat_addr`: reuses its NAT_OUT entry (its NAT_IN made again if
 * the LRU table evicted it), or allocates a port (NAT_IN inserted first, exclusively, so two
 * flows never share one) when `may_create`, within the quotas of `opener` (0: none).
 * Returns 0 with *port set, -1 when there is no mapping and none may be made, -2 when no port
 * is free, -3 when the pod is at its quota. */
static __always_inline int nodenet_snat(struct nodenet_flow *f, __u32 nat_addr, int may_create, const struct nodenet_opener *opener, __u16 *port)
{
	struct nodenet_tuple in = {};
	in.saddr = f->tuple.daddr;
	in.daddr = nat_addr;
	in.sport = f->tuple.dport;
	in.proto = f->tuple.proto;
	in.kind = NODENET_CT_NAT_IN;
	struct nodenet_ct_entry *out = nodenet_ct_lookup(f, NODENET_CT_NAT_OUT);
	if (out && out->address == nat_addr) {
		__u16 mapped = out->port;
		in.dport = mapped;
		struct nodenet_ct_entry *back = bpf_map_lookup_elem(&nodenet_ct, &in);
		if (back && back->address == f->tuple.saddr && back->port == f->tuple.sport) {
			nodenet_ct_pair_seen(out, back, f);
			nodenet_ct_mark_established(back, f);
			*port = mapped;
			return 0;
		}
		if (!back && nodenet_ct_put(&in, NODENET_CT_NAT_IN, f->tuple.saddr, f->tuple.sport, 0, 0, BPF_NOEXIST) == 0) {
			*port = mapped;
			return 0;
		}
		/* The port went to another flow meanwhile: this one gets a new port. */
		may_create = 1;
	}
	if (!may_create)
		return -1;
	if (opener && !nodenet_ct_quota_take(opener, 2))
		return -3;
	__u32 start = bpf_get_prandom_u32();
	/* Eight candidates tried free only; when all are taken, eight more, each also claimed if
	 * its flow is over (a client closing connections quickly does not run out of ports) or
	 * never got going (a SYN flood nobody completes cannot hold them). */
	for (int i = 0; i < 16; i++) {
		__u16 candidate = bpf_htons((__u16)(NODENET_NAT_PORT_MIN + (start + i * 577) % NODENET_NAT_PORT_COUNT));
		in.dport = candidate;
		/* A port seen taken by a lookup is not tried by an insertion: a failing one costs as
		 * much as a successful one (an LRU node taken and given back under locks). */
		int taken = i < 8 ? bpf_map_lookup_elem(&nodenet_ct, &in) != 0 ||
					    nodenet_ct_put(&in, NODENET_CT_NAT_IN, f->tuple.saddr, f->tuple.sport, 0, 0, BPF_NOEXIST) != 0
				  : nodenet_nat_reclaim(f->tuple.saddr, f->tuple.sport, &in, nat_addr, opener != 0) != 0;
		if (!taken) {
			struct nodenet_tuple key = f->tuple;
			nodenet_ct_put(&key, NODENET_CT_NAT_OUT, nat_addr, candidate, 0, 0, BPF_ANY);
			*port = candidate;
			return 0;
		}
	}
	if (opener)
		nodenet_ct_quota_return(opener, 2);
	return -2;
}

#endif
