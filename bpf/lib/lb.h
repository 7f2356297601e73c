/* Service load balancing: the frontend and backend tables, backend choice, the cluster's
 * node addresses. Shared (pinned by name) by the socket, from-container and from-netdev
 * programs; written only by nodenet's apply. */
#ifndef NODENET_BPF_LB_H
#define NODENET_BPF_LB_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nodenet_service_key);
	__type(value, struct nodenet_service);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct nodenet_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_REVNAT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct nodenet_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_revnat SEC(".maps");

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

/* A uniformly random backend of the frontend `key` (slot 0) whose entry is `svc`; 0 when it
 * has none. */
static __always_inline struct nodenet_backend *
nodenet_select_backend(struct nodenet_service_key *key, struct nodenet_service *svc, __u32 *backend_id)
{
	__u16 count = svc->count;
	if (count == 0)
		return 0;
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
	return bpf_map_lookup_elem(&nodenet_backends, &id);
}

/* Whether a flow's backend is still one of its frontend's: the backend id still names the
 * same address and port, and the frontend still exists with the same id. */
static __always_inline int nodenet_backend_current(__u32 backend_id, __u32 address, __u16 port, __u16 frontend_id)
{
	struct nodenet_backend *b = bpf_map_lookup_elem(&nodenet_backends, &backend_id);
	if (!b || b->address != address || b->port != port)
		return 0;
	__u32 id = frontend_id;
	return bpf_map_lookup_elem(&nodenet_revnat, &id) != 0;
}

#endif
