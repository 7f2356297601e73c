/* Service load balancing: the frontend and backend tables, backend choice, the cluster's
 * node addresses. Shared (pinned by name) by the socket, from-container and from-netdev
 * programs; written only by nodenet's apply. */
#ifndef NODENET_BPF_LB_H
#define NODENET_BPF_LB_H

#include "common.h"
#include "maglev.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nodenet_service_key);
	__type(value, struct nodenet_service);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_services SEC(".maps");

/* Backends and frontends' reverse-NAT values by id (ids are dense, 0 is none): arrays that apply
 * maps into its memory and writes in place, each entry with one 8-byte store. An entry whose
 * proto is 0 is absent. Apply never changes an entry in use: a new backend takes an id no
 * backend has, and an id is zeroed once no frontend names it (a flow holding it then finds
 * its backend gone). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NODENET_BACKENDS_MAX);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct nodenet_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NODENET_REVNAT_MAX);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct nodenet_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_revnat SEC(".maps");

/* Backend `id` copied into `out` with one 8-byte load (apply may zero the entry meanwhile:
 * the copy is the old value or the new one, never a mix); 0 when there is none. */
static __always_inline int nodenet_backend_get(__u32 id, struct nodenet_backend *out)
{
	_Static_assert(sizeof(struct nodenet_backend) == sizeof(__u64), "one load, one store");
	__u64 *entry = bpf_map_lookup_elem(&nodenet_backends, &id);
	if (!entry)
		return 0;
	__u64 word = *(volatile __u64 *)entry;
	__builtin_memcpy(out, &word, sizeof(word));
	return out->proto != 0;
}

/* Whether frontend `id` exists (its reverse-NAT value is there). */
static __always_inline int nodenet_frontend_exists(__u32 id)
{
	struct nodenet_revnat *r = bpf_map_lookup_elem(&nodenet_revnat, &id);
	return r && r->proto;
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_NODES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nodenet_node_key);
	__type(value, struct nodenet_node);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_nodes SEC(".maps");

static __always_inline int nodenet_is_node_address(__u32 address, __u32 flags)
{
	struct nodenet_node_key key = { .address = address };
	struct nodenet_node *node = bpf_map_lookup_elem(&nodenet_nodes, &key);
	return node && (node->flags & flags);
}

static __always_inline int nodenet_is_loopback(__u32 address)
{
	return (address & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
}

/* The frontend for address:port/proto (key->slot = 0 on return). NodePorts also answer on
 * every node address (and loopback, for `from_socket`) through their wildcard frontend.
 * Only NodePort frontends are returned when `nodeport_only` (traffic from outside). */
static __always_inline struct nodenet_service *
nodenet_service_lookup(struct nodenet_service_key *key, __u32 address, __u16 port, __u8 proto, int from_socket, int nodeport_only)
{
	key->address = address;
	key->port = port;
	key->proto = proto;
	key->pad = 0;
	key->slot = 0;
	key->pad2 = 0;
	struct nodenet_service *svc = bpf_map_lookup_elem(&nodenet_services, key);
	if (!svc) {
		if (!nodenet_is_node_address(address, NODENET_NODE_LOCAL | NODENET_NODE_REMOTE) && !(from_socket && nodenet_is_loopback(address)))
			return 0;
		key->address = 0;
		svc = bpf_map_lookup_elem(&nodenet_services, key);
		if (!svc)
			return 0;
	}
	if (nodeport_only && !(svc->flags & NODENET_SERVICE_NODEPORT))
		return 0;
	return svc;
}

/* How a new flow's backend is chosen: by its frontend's Maglev table when `maglev_size` is
 * set (the packet path), else at random (socket LB: no 5-tuple at connect()). */
struct nodenet_choice {
	__u32 maglev_size;
	__u32 hash;  /* nodenet_flow_hash of the flow */
};

/* A backend of the frontend `key` (slot 0) whose entry is `svc`, as `how` says (0: random),
 * copied into `out`: 0 when it has none. A frontend without its table yet is served at random. */
static __always_inline int
nodenet_select_backend(struct nodenet_service_key *key, struct nodenet_service *svc, __u32 *backend_id,
		       const struct nodenet_choice *how, struct nodenet_backend *out)
{
	__u16 count = svc->count;
	if (count == 0)
		return 0;
	if (how && nodenet_maglev_lookup(svc->id, how->maglev_size, how->hash, backend_id) &&
	    nodenet_backend_get(*backend_id, out))
		return 1;
	struct nodenet_service_key slot_key = *key;
	__u32 pick = bpf_get_prandom_u32();
	slot_key.slot = (__u16)(pick % count) + 1;
	struct nodenet_service *slot = bpf_map_lookup_elem(&nodenet_services, &slot_key);
	if (!slot) {
		/* The frontend shrank since its slot 0 was read (apply removes surplus slots after
		 * writing the new count): read the count again and choose among the slots left. */
		struct nodenet_service *again = bpf_map_lookup_elem(&nodenet_services, key);
		if (!again || again->count == 0)
			return 0;
		slot_key.slot = (__u16)(pick % again->count) + 1;
		slot = bpf_map_lookup_elem(&nodenet_services, &slot_key);
		if (!slot)
			return 0;
	}
	__u32 id = slot->backend_id;
	*backend_id = id;
	return nodenet_backend_get(id, out);
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NODENET_AFFINITY_MAX);
	__type(key, struct nodenet_affinity_key);
	__type(value, struct nodenet_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_affinity SEC(".maps");

/* Whether `backend_id` is in one of the first NODENET_AFFINITY_SCAN slots of the frontend `key`
 * (slot 0) with `count` backends; beyond them, trusted. */
static __always_inline int nodenet_frontend_has_backend(struct nodenet_service_key *key, __u16 count, __u32 backend_id)
{
	struct nodenet_service_key slot_key = *key;
	for (int i = 1; i <= NODENET_AFFINITY_SCAN; i++) {
		if (i > count)
			return 0;
		slot_key.slot = (__u16)i;
		struct nodenet_service *slot = bpf_map_lookup_elem(&nodenet_services, &slot_key);
		if (slot && slot->backend_id == backend_id)
			return 1;
	}
	return 1;
}

/* A backend for `client` (session affinity), copied into `out`: the one it had within the
 * frontend's timeout, while that backend is still one of the frontend's; else a new one chosen
 * as `how` says, remembered. Without the affinity flag, as `how` says. 0: none. */
static __always_inline int
nodenet_select_backend_for(struct nodenet_service_key *key, struct nodenet_service *svc, __u32 *backend_id, __u64 client,
			   const struct nodenet_choice *how, struct nodenet_backend *out)
{
	if (!(svc->flags & NODENET_SERVICE_AFFINITY) || svc->count == 0)
		return nodenet_select_backend(key, svc, backend_id, how, out);
	struct nodenet_affinity_key akey = { .client = client, .id = svc->id };
	__u64 now = bpf_ktime_get_ns();
	__u64 timeout = (__u64)svc->backend_id * 1000000000ULL;
	struct nodenet_affinity *a = bpf_map_lookup_elem(&nodenet_affinity, &akey);
	if (a && now - a->last_ns < timeout) {
		__u32 id = a->backend_id;
		if (nodenet_backend_get(id, out) && nodenet_frontend_has_backend(key, svc->count, id)) {
			a->last_ns = now;
			*backend_id = id;
			return 1;
		}
	}
	if (!nodenet_select_backend(key, svc, backend_id, how, out))
		return 0;
	struct nodenet_affinity v = { .last_ns = now, .backend_id = *backend_id };
	bpf_map_update_elem(&nodenet_affinity, &akey, &v, BPF_ANY);
	return 1;
}

/* Whether a flow's backend is still one of its frontend's: the backend id still names the
 * same address and port, and the frontend still exists with the same id. */
static __always_inline int nodenet_backend_current(__u32 backend_id, __u32 address, __u16 port, __u32 frontend_id)
{
	struct nodenet_backend b = {};
	if (!nodenet_backend_get(backend_id, &b) || b.address != address || b.port != port)
		return 0;
	return nodenet_frontend_exists(frontend_id);
}

#endif
