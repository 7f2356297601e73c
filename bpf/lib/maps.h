/* Map key and value layouts: the one definition, shared by the BPF programs in bpf/ and
 * the Swift side (module CNodeNetBPF). Fixed-size fields only, explicitly padded. */
#ifndef NODENET_BPF_MAPS_H
#define NODENET_BPF_MAPS_H

#include <linux/types.h>

#define NODENET_ENDPOINTS_MAX 65536

/* Key of the endpoints map: a local pod's IPv4 address (network byte order). */
struct nodenet_endpoint_key {
	__u32 ip;
};

/* A local pod: its host-side veth (lxc) and both MACs. */
struct nodenet_endpoint {
	__u32 ifindex;     /* host-side lxc device */
	__u8 host_mac[6];  /* lxc MAC: the pod's gateway MAC, and the source of frames delivered to the pod */
	__u8 pod_mac[6];   /* the pod's eth0 MAC */
	__u32 flags;
};

/* Read-only configuration of the from-container program (set before load). */
struct nodenet_lxc_config {
	__u32 router_ip;   /* network byte order; answered by the ARP responder like any other address */
	__u32 reserved;
};

/* Per-verdict counters (array map indexed by these values). */
enum nodenet_verdict {
	NODENET_VERDICT_LOCAL_REDIRECT = 0,
	NODENET_VERDICT_REMOTE_REDIRECT = 1,
	NODENET_VERDICT_TO_STACK = 2,
	NODENET_VERDICT_ARP_REPLY = 3,
	NODENET_VERDICT_DROP_SPOOFED = 4,
	NODENET_VERDICT_MAX = 8,
};

/* The monitor lease: the one value of the array `nodenet_monitor`. Programs emit events only
 * while bpf_ktime_get_ns() (CLOCK_MONOTONIC) < deadline_ns. A running monitor moves the deadline
 * to now + NODENET_MONITOR_LEASE_NS every NODENET_MONITOR_RENEW_NS and sets it to 0 when it
 * stops; one that is killed stops renewing, so emitting ends at most one lease later. */
struct nodenet_monitor_lease {
	__u64 deadline_ns;
};

#define NODENET_MONITOR_LEASE_NS 2000000000ULL
#define NODENET_MONITOR_RENEW_NS 500000000ULL

/* One datapath event (ring buffer `nodenet_events`), written only while a monitor holds the
 * lease (`nodenet_monitor`). Addresses and ports in network byte order. */
struct nodenet_event {
	__u64 timestamp_ns;  /* bpf_ktime_get_ns */
	__u32 ifindex;       /* where the packet came in */
	__u8 verdict;        /* enum nodenet_verdict */
	__u8 protocol;       /* IP protocol (0 for ARP) */
	__u16 reserved;
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u32 target_ifindex; /* where it was sent (redirects) */
};

#define NODENET_EVENTS_BYTES (256 * 1024)

#endif
