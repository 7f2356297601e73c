/* Connection tracking for packet-level translation (NodePort from outside, per-packet
 * service translation, masquerading): one LRU table keyed by tuple and kind (maps.h).
 * Entries carry the time they were last used; nodenet's agent removes idle ones. */
#ifndef NODENET_BPF_CONNTRACK_H
#define NODENET_BPF_CONNTRACK_H

#include "common.h"
#include "fragments.h"

/* The few L4 fields read here (linux/tcp.h and linux/icmp.h pull in libc headers). */
struct nodenet_tcp_head {
	__be16 source, dest;
	__be32 seq, ack_seq;
	__u8 offset;
	__u8 flags;
	__be16 window;
};

struct nodenet_icmp_echo {
	__u8 type, code;
	__be16 checksum;
	__be16 id, sequence;
};

#define NODENET_ICMP_ECHOREPLY 0
#define NODENET_ICMP_ECHO 8

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NODENET_CT_MAX);
	__type(key, struct nodenet_tuple);
	__type(value, struct nodenet_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_ct SEC(".maps");

/* The conntrack entries of flows each local pod opened (key: the pod's address), and of those
 * opened from outside together (key NODENET_CT_QUOTA_OUTSIDE): counted up here as flows open,
 * recounted from the table by the agent's collection (which is when entries that went are
 * subtracted). A pod at NODENET_CT_QUOTA, or the outside at NODENET_CT_QUOTA_OUTSIDE_MAX, opens
 * no new flow while the last recount (NODENET_CT_QUOTA_STAMP) is fresh. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * NODENET_ENDPOINTS_MAX);  /* pods, addresses of pods gone (until recounted), outside, stamp */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_ct_quota SEC(".maps");

/* The conntrack entries of the flows each client outside opened (key: its address), counted and
 * recounted like nodenet_ct_quota's. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NODENET_CT_CLIENTS_MAX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_ct_client SEC(".maps");

/* Who opens a flow, for the quotas: a local pod (`owner` its address), or a client outside
 * (`owner` NODENET_CT_QUOTA_OUTSIDE, `client` its address, `client_max` its part of the
 * outside's share; 0: none of its own). */
struct nodenet_opener {
	__u32 owner;
	__u32 client;
	__u32 client_max;
};

static __always_inline struct nodenet_opener nodenet_opener_of(const struct nodenet_config *cfg, __u32 owner, __u32 client)
{
	struct nodenet_opener o = { .owner = owner, .client = client };
	if (owner == NODENET_CT_QUOTA_OUTSIDE)
		o.client_max = cfg->outside_client_max;
	return o;
}

/* Whether the agent's last recount is recent: quotas are enforced only then. */
static __always_inline int nodenet_ct_quota_fresh(void)
{
	__u32 key = NODENET_CT_QUOTA_STAMP;
	__u32 *stamp = bpf_map_lookup_elem(&nodenet_ct_quota, &key);
	__u64 now = bpf_ktime_get_ns() / 1000000000ULL;
	return stamp && now >= *stamp && now - *stamp < NODENET_CT_QUOTA_FRESH_S;
}

/* Counts `entries` for `key` of `map` unless it holds `max` (0: no limit) while quotas are
 * enforced; whether it did. */
static __always_inline int nodenet_ct_count_up(void *map, __u32 key, __u32 entries, __u32 max)
{
	__u32 *count = bpf_map_lookup_elem(map, &key);
	if (!count) {
		bpf_map_update_elem(map, &key, &entries, BPF_NOEXIST);
		return 1;
	}
	if (max && *count >= max && nodenet_ct_quota_fresh())
		return 0;
	__sync_fetch_and_add(count, entries);
	return 1;
}

/* Subtracts `entries` (at most down to 0: a recount may have come in between), atomically:
 * flows closing on several CPUs give back at once. */
static __always_inline void nodenet_ct_count_down(void *map, __u32 key, __u32 entries)
{
	__u32 *count = bpf_map_lookup_elem(map, &key);
	if (!count)
		return;
	for (int i = 0; i < 4; i++) {
		__u32 seen = *(volatile __u32 *)count;
		__u32 left = seen > entries ? seen - entries : 0;
		if (seen == left || __sync_val_compare_and_swap(count, seen, left) == seen)
			return;
	}
}

/* Whether `o` may open a flow of `entries` conntrack entries; counted when it may (a client
 * outside against its own part first, then the outside's share). */
static __always_inline int nodenet_ct_quota_take(const struct nodenet_opener *o, __u32 entries)
{
	if (o->owner != NODENET_CT_QUOTA_OUTSIDE)
		return nodenet_ct_count_up(&nodenet_ct_quota, o->owner, entries, NODENET_CT_QUOTA);
	if (!nodenet_ct_count_up(&nodenet_ct_client, o->client, entries, o->client_max))
		return 0;
	if (nodenet_ct_count_up(&nodenet_ct_quota, NODENET_CT_QUOTA_OUTSIDE, entries, NODENET_CT_QUOTA_OUTSIDE_MAX))
		return 1;
	nodenet_ct_count_down(&nodenet_ct_client, o->client, entries);
	return 0;
}

/* Gives back what `nodenet_ct_quota_take` counted for a flow that did not open after all. */
static __always_inline void nodenet_ct_quota_return(const struct nodenet_opener *o, __u32 entries)
{
	nodenet_ct_count_down(&nodenet_ct_quota, o->owner, entries);
	if (o->owner == NODENET_CT_QUOTA_OUTSIDE)
		nodenet_ct_count_down(&nodenet_ct_client, o->client, entries);
}

/* A packet's flow, read once (packet pointers die with the first write). */
struct nodenet_flow {
	struct nodenet_tuple tuple;  /* kind 0 */
	__u8 tcp_flags;              /* TCP: the flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10) */
	__u8 icmp_type;
	__u8 has_ports;              /* TCP, UDP or ICMP echo */
	__u8 fragment;               /* NODENET_FRAGMENT_*: a later fragment has no L4 header */
};

#define NODENET_TCP_FIN 0x01
#define NODENET_TCP_SYN 0x02
#define NODENET_TCP_RST 0x04
#define NODENET_TCP_ACK 0x10

/* Offsets in the frame (IPv4 without options; callers check ihl == 5). */
#define NODENET_L4_OFF (ETH_HLEN + sizeof(struct iphdr))
#define NODENET_SADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define NODENET_DADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))

/* Reads the flow of an IPv4 packet whose header `ip` is valid up to `end`. Returns 0 when
 * the packet has ports (TCP, UDP, also as fragments: fragments.h) or is an ICMP echo. */
static __always_inline int nodenet_flow_read(struct iphdr *ip, void *end, struct nodenet_flow *f)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->tuple.saddr = ip->saddr;
	f->tuple.daddr = ip->daddr;
	f->tuple.proto = ip->protocol;
	if (ip->ihl != 5)
		return -1;  /* options: not translated */
	f->fragment = nodenet_fragment_of(ip);
	if (f->fragment != NODENET_FRAGMENT_NONE && ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	if (f->fragment == NODENET_FRAGMENT_LATER) {
		if (nodenet_fragment_ports(ip, &f->tuple.sport, &f->tuple.dport) < 0)
			return -1;
		f->has_ports = 1;
		return 0;
	}
	void *l4 = (void *)(ip + 1);
	if (ip->protocol == IPPROTO_TCP) {
		struct nodenet_tcp_head *tcp = l4;
		if ((void *)(tcp + 1) > end)
			return -1;
		f->tuple.sport = tcp->source;
		f->tuple.dport = tcp->dest;
		f->tcp_flags = tcp->flags;
	} else if (ip->protocol == IPPROTO_UDP) {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return -1;
		f->tuple.sport = ports[0];
		f->tuple.dport = ports[1];
	} else if (ip->protocol == IPPROTO_ICMP) {
		struct nodenet_icmp_echo *icmp = l4;
		if ((void *)(icmp + 1) > end)
			return -1;
		f->icmp_type = icmp->type;
		if (icmp->type == NODENET_ICMP_ECHO)
			f->tuple.sport = icmp->id;
		else if (icmp->type == NODENET_ICMP_ECHOREPLY)
			f->tuple.dport = icmp->id;
		else
			return -1;
	} else {
		return -1;
	}
	if (f->fragment == NODENET_FRAGMENT_FIRST)
		nodenet_fragment_record(ip, f->tuple.sport, f->tuple.dport);
	f->has_ports = 1;
	return 0;
}

/* The key of kind `kind` for the flow `saddr:sport -> daddr:dport` (network order). */
static __always_inline struct nodenet_tuple nodenet_tuple_of(__u32 saddr, __u16 sport, __u32 daddr, __u16 dport, __u8 proto, __u8 kind)
{
	struct nodenet_tuple t = {};
	t.saddr = saddr;
	t.daddr = daddr;
	t.sport = sport;
	t.dport = dport;
	t.proto = proto;
	t.kind = kind;
	return t;
}

/* The flow of the replies to `f` when they come from `address:port` (its destination, or
 * the backend it was translated to). */
static __always_inline void nodenet_reply_of(const struct nodenet_flow *f, __u32 address, __u16 port, struct nodenet_flow *reply)
{
	__builtin_memset(reply, 0, sizeof(*reply));
	reply->tuple.saddr = address;
	reply->tuple.daddr = f->tuple.saddr;
	reply->tuple.sport = port;
	reply->tuple.dport = f->tuple.sport;
	reply->tuple.proto = f->tuple.proto;
}

/* The entry of `kind` for the flow's tuple, refreshed (time, closing flag), or 0;
 * `*refreshed` says whether its time was written. */
static __always_inline struct nodenet_ct_entry *nodenet_ct_lookup_refreshed(struct nodenet_flow *f, __u8 kind, int *refreshed)
{
	struct nodenet_tuple key = f->tuple;
	key.kind = kind;
	struct nodenet_ct_entry *e = bpf_map_lookup_elem(&nodenet_ct, &key);
	if (!e)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (f->tcp_flags & (NODENET_TCP_FIN | NODENET_TCP_RST))
		e->flags |= (f->tcp_flags & NODENET_TCP_RST) ? NODENET_CT_F_CLOSING | NODENET_CT_F_RESET : NODENET_CT_F_CLOSING;
	/* Refresh at most every ~0.5 s: a write per packet would bounce the cache line. A closing
	 * flow's every packet refreshes: one that is over may give its NAT port up shortly after
	 * its last packet (nat.h), so that time must be exact (and a flow still sending after a
	 * FIN or a forged RST is never taken for quiet). */
	*refreshed = (e->flags & NODENET_CT_F_CLOSING) || now - e->last_seen_ns > (1ULL << 29);
	if (*refreshed)
		e->last_seen_ns = now;
	return e;
}

static __always_inline struct nodenet_ct_entry *nodenet_ct_lookup(struct nodenet_flow *f, __u8 kind)
{
	int refreshed;
	return nodenet_ct_lookup_refreshed(f, kind, &refreshed);
}

/* Whether a TCP flow whose directions' entries carry `a` and `b` is over: reset, or finished
 * (FIN) each way. */
static __always_inline int nodenet_flow_over(__u8 a, __u8 b)
{
	return ((a | b) & NODENET_CT_F_RESET) || (a & b & NODENET_CT_F_CLOSING);
}

/* A packet of flow `f` in the direction that opened it, whose entry `own` and its other
 * direction's `partner` are at hand (either 0 when there is none or it was just written anew,
 * fresh). A SYN (no ACK) on a flow that is over opens the tuple again (a client reusing its
 * port): the new flow starts afresh in the entries at hand, not closing, reset or established,
 * and now (else it would inherit the old flow's end, lose its NAT port or its entries when
 * quiet, or have its backend's SYN-ACK taken for a direct connection's: services.h). A SYN on
 * a flow that is not over (open, or half-closed) changes nothing, as in netfilter: a forged one
 * cannot make a live connection look new. A FIN or RST refreshes the partner: a flow that is
 * over gives its NAT port up only once both directions were quiet after its last one. */
static __always_inline void nodenet_ct_pair_seen(struct nodenet_ct_entry *own, struct nodenet_ct_entry *partner, const struct nodenet_flow *f)
{
	/* Most packets are neither: nothing to do, no clock read. */
	if (!(f->tcp_flags & (NODENET_TCP_SYN | NODENET_TCP_FIN | NODENET_TCP_RST)))
		return;
	__u64 now = bpf_ktime_get_ns();
	if ((f->tcp_flags & (NODENET_TCP_SYN | NODENET_TCP_ACK)) == NODENET_TCP_SYN &&
	    nodenet_flow_over(own ? own->flags : 0, partner ? partner->flags : 0)) {
		if (own) {
			own->flags &= ~(NODENET_CT_F_CLOSING | NODENET_CT_F_RESET | NODENET_CT_F_ESTABLISHED);
			own->last_seen_ns = now;
		}
		if (partner) {
			partner->flags &= ~(NODENET_CT_F_CLOSING | NODENET_CT_F_RESET | NODENET_CT_F_ESTABLISHED);
			partner->last_seen_ns = now;
		}
	}
	if (partner && (f->tcp_flags & (NODENET_TCP_FIN | NODENET_TCP_RST)))
		partner->last_seen_ns = now;
}

/* The frontend id of a SERVICE or REPLY entry. */
static __always_inline __u32 nodenet_ct_frontend(const struct nodenet_ct_entry *e)
{
	return e->id | ((__u32)e->id_high << 16);
}

static __always_inline int nodenet_ct_put(struct nodenet_tuple *key, __u8 kind, __u32 address, __u16 port, __u32 id, __u32 backend_id, __u64 flags)
{
	struct nodenet_ct_entry e = {};
	e.last_seen_ns = bpf_ktime_get_ns();
	e.address = address;
	e.port = port;
	e.id = (__u16)id;
	e.id_high = (__u16)(id >> 16);
	e.backend_id = backend_id;
	key->kind = kind;
	key->pad = 0;
	return bpf_map_update_elem(&nodenet_ct, key, &e, flags);
}

/* Marks a reply-direction entry (REPLY, NAT_IN) as answered; written once, as a write per
 * packet would bounce the cache line between CPUs. */
static __always_inline void nodenet_ct_mark_seen_reply(struct nodenet_ct_entry *e)
{
	if (!(e->flags & NODENET_CT_F_SEEN_REPLY))
		e->flags |= NODENET_CT_F_SEEN_REPLY;
}

/* Marks the flow's entry `e` established when `f`, a packet in the direction that opened it,
 * is a TCP segment past the handshake (ACK without SYN, RST or FIN). Unestablished flows time
 * out in seconds and give their NAT ports up (nat.h). */
static __always_inline void nodenet_ct_mark_established(struct nodenet_ct_entry *e, const struct nodenet_flow *f)
{
	if (f->tuple.proto == IPPROTO_TCP && !(e->flags & NODENET_CT_F_ESTABLISHED) &&
	    (f->tcp_flags & (NODENET_TCP_SYN | NODENET_TCP_ACK | NODENET_TCP_RST | NODENET_TCP_FIN)) == NODENET_TCP_ACK)
		e->flags |= NODENET_CT_F_ESTABLISHED;
}

/* Whether a packet may open a flow: any UDP datagram, an ICMP echo request, a TCP SYN
 * (without ACK). Nothing else makes conntrack or NAT state. */
static __always_inline int nodenet_may_open(const struct nodenet_flow *f)
{
	if (f->tuple.proto == IPPROTO_TCP)
		return (f->tcp_flags & (NODENET_TCP_SYN | NODENET_TCP_ACK)) == NODENET_TCP_SYN;
	if (f->tuple.proto == IPPROTO_ICMP)
		return f->icmp_type == NODENET_ICMP_ECHO;
	return 1;
}

#endif
