/* Datapath events for `nodenetd monitor`: one ring-buffer record per verdict, written only
 * while a monitor holds the lease (maps.h), so the cost when nobody listens is one array
 * lookup and a clock read. */
#ifndef NODENET_BPF_EVENTS_H
#define NODENET_BPF_EVENTS_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NODENET_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nodenet_monitor_lease);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_monitor SEC(".maps");

static __always_inline void nodenet_emit(struct __sk_buff *skb, __u8 verdict, struct iphdr *ip, __u32 target_ifindex)
{
	__u32 zero = 0;
	struct nodenet_monitor_lease *lease = bpf_map_lookup_elem(&nodenet_monitor, &zero);
	if (!lease || !lease->deadline_ns)
		return;
	__u64 now = bpf_ktime_get_ns();
	if (now >= lease->deadline_ns)
		return;
	struct nodenet_event e = {};
	e.timestamp_ns = now;
	e.ifindex = skb->ifindex;
	e.verdict = verdict;
	e.target_ifindex = target_ifindex;
	if (ip) {
		void *end = (void *)(long)skb->data_end;
		if ((void *)(ip + 1) <= end) {
			e.protocol = ip->protocol;
			e.saddr = ip->saddr;
			e.daddr = ip->daddr;
			/* Ports only in a first (or unfragmented) fragment. */
			if (ip->ihl == 5 && (ip->frag_off & bpf_htons(0x1fff)) == 0 &&
			    (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP)) {
				__be16 *ports = (void *)(ip + 1);
				if ((void *)(ports + 2) <= end) {
					e.sport = ports[0];
					e.dport = ports[1];
				}
			}
		}
	}
	bpf_ringbuf_output(&nodenet_events, &e, sizeof(e), 0);
}

#endif
