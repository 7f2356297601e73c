/* Map key and value layouts: the one definition, shared by the BPF programs in bpf/ and
 * the Swift side (module CNodeNetBPF). Fixed-size fields only, explicitly padded.
 *
 * An upgrade keeps a pinned map whose type, key and value sizes and max_entries are this
 * build's (BPFFSLayout.incompatibleMaps), and replaces it otherwise. A layout change that keeps
 * all four must read the entries older builds wrote as they meant them (a field widened into
 * zero padding); any other must change one of the four. (nodenet_service moved its id when
 * the service maps grew: older maps are replaced.) A node's loadBalancer.mapEntries sets four
 * of the service tables' max_entries (ServiceMapCapacity): another size replaces them as an
 * upgrade does. (Maps of builds with 16-bit ids never pass for these at any size: their
 * nodenet_maglev key is 4 bytes, and their revnat map held half the services map, not a
 * quarter.) The service tables are replaced together
 * (BPFFSLayout.Map.serviceTables, affinity included), and the new ones number frontends and
 * backends afresh: conntrack entries of older builds keep their bytes' meaning, not their ids'
 * (a packet-path flow whose backend id now names another address picks a backend again). */
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

/* The node's settings for the tc programs: the one entry of the array map
 * `nodenet_settings`, written by apply. Addresses in network byte order. */
struct nodenet_config {
	__u32 router_ip;
	__u32 node_ip;      /* the node's address on its native device: NodePort and masquerade source */
	__u32 native_cidr;  /* nativeRoutingCIDR: never masqueraded (address and mask) */
	__u32 native_mask;
	__u32 flags;        /* NODENET_CONFIG_* */
	__u32 native_ifindex; /* the native device: masquerading applies only to traffic leaving through it */
	__u32 maglev_size;  /* loadBalancer.algorithm maglev: the lookup tables' size (a prime); 0: random */
	__u32 pod_cidr;     /* this node's pod CIDR (address and mask): every local pod is inside it */
	__u32 pod_mask;
	__u32 outside_client_max; /* conntrack entries one client outside may hold (nodenet_ct_client); 0: no own limit */
};

#define NODENET_CONFIG_SERVICES 1     /* kube-proxy replacement: NodePort from outside, reverse translation */
#define NODENET_CONFIG_PACKET_LB 2    /* socket LB is off: from-container translates services per packet */
#define NODENET_CONFIG_MASQUERADE 4   /* pod traffic leaving nativeRoutingCIDR takes the node's address */
#define NODENET_CONFIG_NATIVE_CIDR 8  /* native_cidr/native_mask hold nativeRoutingCIDR */
#define NODENET_CONFIG_EXTERNAL_IPS 16 /* frontends on external or LoadBalancer addresses: from-netdev looks up any destination */

/* Per-verdict counters (array map indexed by these values). */
enum nodenet_verdict {
	NODENET_VERDICT_LOCAL_REDIRECT = 0,
	NODENET_VERDICT_REMOTE_REDIRECT = 1,
	NODENET_VERDICT_TO_STACK = 2,
	NODENET_VERDICT_ARP_REPLY = 3,
	NODENET_VERDICT_DROP_SPOOFED = 4,
	NODENET_VERDICT_DROP_NO_BACKEND = 5,  /* a service frontend with no backend */
	NODENET_VERDICT_DROP_NAT_EXHAUSTED = 6, /* no free port to translate a source to */
	NODENET_VERDICT_DROP_NO_FLOW = 7,     /* a reply to a translated address (hairpin, a node port's source NAT) whose flow is gone */
	NODENET_VERDICT_DROP_NO_LOCAL_BACKEND = 8, /* a Local traffic policy and no backend on this node */
	NODENET_VERDICT_DROP_SOURCE_RANGE = 9, /* a LoadBalancer frontend's loadBalancerSourceRanges exclude the client */
	NODENET_VERDICT_DROP_NO_MAPPING = 10, /* a masqueraded TCP segment with no mapping that may not open one */
	NODENET_VERDICT_DROP_QUOTA = 11,      /* a pod (or the outside) holding its share of the conntrack table opens no new flow */
	NODENET_VERDICT_MAX = 12,
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

/* ---- Services (kube-proxy replacement) ---- */

/* The service tables' declared sizes: apply makes them with loadBalancer.mapEntries entries
 * (ServiceMapCapacity, bpf_map__set_max_entries before load; Cilium's bpf-lb-map-max), these
 * by default: services that many, the backends array twice as many ids (new backends take ids
 * beside the old ones), the reverse-NAT and Maglev index maps (by frontend id) a quarter.
 * 100 000 ClusterIP services of 3 backends (400 000 entries, 300 000 backends, 100 000
 * frontends) need 524288. The hash maps (services, Maglev index) are not preallocated: entries
 * cost memory only when written, their buckets 16 bytes each (a power of two at least
 * max_entries); the backends and reverse-NAT arrays 8 bytes an entry, all made at once. 2.4 MiB
 * of kernel memory for the four at the default, 19 MiB at 524288. No program reads these
 * numbers: only the maps' declarations. */
#define NODENET_SERVICES_MAX 65536
#define NODENET_BACKENDS_MAX 131072
#define NODENET_REVNAT_MAX 16384
#define NODENET_NODES_MAX 16384
#define NODENET_SOCK_REVNAT_MAX 131072
#define NODENET_CT_MAX 262144
/* The conntrack entries the flows one pod opened may hold (nodenet_ct_quota): a pod cannot
 * push the others' flows out of the shared LRU table. */
#define NODENET_CT_QUOTA (NODENET_CT_MAX / 4)
/* The flows opened from outside (node ports, load balancer and external addresses,
 * connections straight to pods) share one count under this key, and may hold half the
 * table: a flood from outside cannot push the pods' own flows out. */
#define NODENET_CT_QUOTA_OUTSIDE 0xffffffffU
#define NODENET_CT_QUOTA_OUTSIDE_MAX (NODENET_CT_MAX / 2)
/* Under this key the agent's last recount (seconds of CLOCK_MONOTONIC): the datapath only
 * counts up, so quotas are enforced only while recounts come (every collection of `nodenetd
 * run`); without them a pod would stay at its quota for good. */
#define NODENET_CT_QUOTA_STAMP 0
#define NODENET_CT_QUOTA_FRESH_S 900
/* Each client outside holds its own part of the outside's share (nodenet_ct_client, at most
 * nodenet_config.outside_client_max entries): one host outside cannot take the node ports from
 * the others. The clients with the fewest recent flows are forgotten first (LRU). */
#define NODENET_CT_CLIENTS_MAX 65536

/* A service frontend (address, port, protocol) and a slot: slot 0 holds the frontend itself
 * (its id and backend count), slots 1..count name one backend each. Changing a frontend
 * writes its new slots first, then slot 0, then removes slots beyond the new count, so a
 * reader never picks a slot that is not there. */
struct nodenet_service_key {
	__u32 address;  /* 0.0.0.0: a NodePort's wildcard frontend (any address of a node) */
	__u16 port;
	__u8 proto;     /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};

struct nodenet_service {
	__u32 backend_id;  /* slots 1..count */
	__u16 count;       /* slot 0: backends to choose from (0: refuse) */
	__u8 flags;        /* slot 0: NODENET_SERVICE_* */
	__u8 pad;
	__u32 id;          /* slot 0: the frontend's id, key of nodenet_revnat */
};

#define NODENET_SERVICE_NODEPORT 1   /* reachable from outside the node (NodePort frontends) */
#define NODENET_SERVICE_LOCAL_ONLY 2 /* a Local traffic policy: only this node's backends; none: drop */
#define NODENET_SERVICE_AFFINITY 4   /* sessionAffinity ClientIP: slot 0's backend_id is the timeout in seconds */
#define NODENET_SERVICE_SOURCE_RANGES 8 /* loadBalancerSourceRanges: only clients in nodenet_source_ranges from outside */

/* loadBalancerSourceRanges: the client prefixes a frontend takes from outside, longest-prefix
 * matched on (frontend id, client address). prefixlen counts the id's 32 bits plus the
 * range's length. */
struct nodenet_source_range_key {
	__u32 prefixlen;
	__u32 id;     /* the frontend's id (host order) */
	__u32 address; /* network order */
};

#define NODENET_SOURCE_RANGES_MAX 16384

/* Session affinity: a client's backend per frontend. The client is the source address (packet
 * path) or the socket's network namespace cookie with the top bit set (socket LB, where the
 * source address is not known yet at connect()). */
struct nodenet_affinity_key {
	__u64 client;
	__u32 id;     /* the frontend's id */
	__u32 pad;
};

struct nodenet_affinity {
	__u64 last_ns;     /* bpf_ktime_get_ns() of the last flow that used it */
	__u32 backend_id;
	__u32 pad;
};

#define NODENET_AFFINITY_MAX 65536
#define NODENET_AFFINITY_SOCKET (1ULL << 63)
/* How many of a frontend's slots are searched for an affine backend (one removed from the
 * frontend must not keep its clients); beyond them the backend's existence is trusted. */
#define NODENET_AFFINITY_SCAN 64

/* Maglev (loadBalancer.algorithm maglev): a frontend's lookup table of maglev_size backend
 * ids, in chunks of NODENET_MAGLEV_CHUNK (chunk i holds entries i*CHUNK...). The packet path
 * picks entry hash(5-tuple) % maglev_size of a new flow's frontend. */
#define NODENET_MAGLEV_CHUNK 1024
#define NODENET_MAGLEV_MAX 131072  /* chunks of all tables: 8 192 tables of 16 381 */

struct nodenet_maglev_key {
	__u32 id;     /* the frontend's id */
	__u32 chunk;
};

struct nodenet_maglev_chunk {
	__u32 backend_ids[NODENET_MAGLEV_CHUNK];
};

/* What a frontend's table was built from, by frontend id (key __u32): apply compares it and
 * never reads the tables back; the datapath does not read it. */
struct nodenet_maglev_index {
	__u32 size;      /* entries */
	__u32 backends;  /* backends in it */
	__u64 digest;    /* of the size and the backends (address, port, protocol, id) it was built from */
};

/* A backend, by id (proto 0: none). 8 bytes: apply writes one with a single store. */
struct nodenet_backend {
	__u32 address;
	__u16 port;
	__u8 proto;
	__u8 flags;
};

/* A frontend by id: what replies and getpeername() show (proto 0: none). Key: __u32 id. 8
 * bytes, written with a single store as a backend is. */
struct nodenet_revnat {
	__u32 address;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/* Addresses of the cluster's nodes: a NodePort is reachable on each of them. */
struct nodenet_node_key {
	__u32 address;
};

struct nodenet_node {
	__u32 flags;  /* NODENET_NODE_* */
};

#define NODENET_NODE_LOCAL 1
#define NODENET_NODE_REMOTE 2

/* Socket LB: what a socket connected (or sent) to, by socket cookie and backend, so that
 * recvmsg and getpeername show the service address again. */
struct nodenet_sock_key {
	__u64 cookie;
	__u32 address;  /* the backend */
	__u16 port;
	__u16 pad;
};

/* The backends an unconnected socket sent to through a service (bpf_sock.c's nodenet_sock_sent,
 * by socket cookie), so that its reverse entries go with it. */
#define NODENET_SOCK_SENT 8
struct nodenet_sock_sent {
	__u32 address[NODENET_SOCK_SENT];
	__u16 port[NODENET_SOCK_SENT];
	__u32 count;  /* backends noted; past NODENET_SOCK_SENT the oldest is overwritten */
	__u32 pad;
};

struct nodenet_sock_revnat {
	__u32 address;  /* the frontend */
	__u16 port;
	__u16 pad;
};

/* Connection tracking and NAT for packet-level translation. One table, four kinds of entry:
 *   SERVICE  client -> frontend         value: the chosen backend
 *   REPLY    backend -> client          value: the frontend the client used
 *   NAT_OUT  source -> peer             value: the source it was translated to
 *   NAT_IN   peer -> translated source  value: the original source
 * ICMP echo uses the identifier as source port (request) or destination port (reply). */
struct nodenet_tuple {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u8 kind;     /* NODENET_CT_* */
	__u16 pad;
};

enum nodenet_ct_kind {
	NODENET_CT_SERVICE = 1,
	NODENET_CT_REPLY = 2,
	NODENET_CT_NAT_OUT = 3,
	NODENET_CT_NAT_IN = 4,
	/* A reply direction of a connection that came in from outside nativeRoutingCIDR to a
	 * pod directly: never masqueraded. Key: pod -> peer; value unused. */
	NODENET_CT_INBOUND = 5,
};

struct nodenet_ct_entry {
	__u64 last_seen_ns;  /* bpf_ktime_get_ns (CLOCK_MONOTONIC): garbage collection by age */
	__u32 address;
	__u16 port;
	__u16 id;            /* SERVICE/REPLY: the frontend's id, its low 16 bits */
	__u32 backend_id;    /* SERVICE: the backend's id */
	__u8 flags;          /* NODENET_CT_F_* */
	__u8 pad;
	__u16 id_high;       /* the frontend id's high 16 bits (padding before ids outgrew 16 bits:
	                      * the table, not replaced by that upgrade, keeps its entries' bytes) */
};

#define NODENET_CT_F_CLOSING 1   /* TCP FIN or RST seen: short timeout */
#define NODENET_CT_F_SEEN_REPLY 2 /* REPLY, NAT_IN: a packet came back */
#define NODENET_CT_F_ESTABLISHED 4 /* TCP: a segment past the handshake went forward (ACK, no SYN/RST/FIN) */
#define NODENET_CT_F_RESET 8     /* TCP RST seen: the flow is over */

/* A NAT port whose flow never got going (TCP: never established; UDP, ICMP: never answered)
 * and was not used for this long may be given to a new flow when the ports run out: a flood
 * of SYNs no one completes cannot hold them. */
#define NODENET_NAT_RECLAIM_NS 1000000000ULL
/* A NAT port whose TCP flow is over and was quiet this long may be given to a new flow when
 * the ports run out: a client closing thousands of connections a second does not wait for the
 * agent's collection (10 s) for ports. A FIN or RST refreshes both directions' entries, and a
 * closing entry every packet, so this counts from the flow's last packet. The wait bounds the
 * rate: a new flow finds no port among the 8 it may claim (nodenet_snat) once about a quarter
 * of a backend's 4 536 ports closed within the wait (above ~50 000 new connections a second to
 * one backend closed by resets, ~10 000 by FINs), and drops its SYN. A reset flow sends nothing
 * more; what was in flight toward it is refused by the port's next flow. A finished flow
 * waits half TCP's shortest retransmission timeout (200 ms): when its last ACK was lost, the
 * FIN sent again may meet the port's next flow, which then connects on its SYN's
 * retransmission. */
#define NODENET_NAT_REUSE_RESET_NS 20000000ULL
#define NODENET_NAT_REUSE_FINISHED_NS 100000000ULL

/* The ports of a fragmented datagram, recorded from its first fragment so that the later
 * ones (which carry no L4 header) are translated with it. Keyed by the IP header fields all
 * fragments of a datagram share (RFC 791: source, destination, protocol, identification). */
#define NODENET_FRAGMENTS_MAX 8192

struct nodenet_fragment_key {
	__u32 saddr, daddr;
	__u16 id;
	__u8 proto;
	__u8 pad;
};

struct nodenet_fragment_ports {
	__u16 sport, dport;
};

/* The source a pod sees on a connection it made to a service that chose the pod itself as
 * backend (hairpin, per-packet LB): its own address would be a martian to it. Link-local, as
 * Cilium's IPV4_LOOPBACK. Host byte order. */
#define NODENET_HAIRPIN_IPV4 0xa9fe2a01  /* 169.254.42.1 */
#define NODENET_NAT_PORT_MIN 61000  /* above Linux's default ephemeral range (32768-60999) */
#define NODENET_NAT_PORT_COUNT 4536

#endif
