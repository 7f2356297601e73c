/* Socket-level load balancing: cgroup hooks on the node's cgroup (v2).
 *
 * connect4 and sendmsg4 turn a service address into a backend before any packet exists,
 * so no packet carries the service address and nothing needs translating later; recvmsg4
 * and getpeername4 show the service address again (a UDP reply seems to come from the
 * service, getpeername() returns it). A frontend with no backend refuses at once. */
#include "lib/common.h"
#include "lib/lb.h"

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NODENET_SOCK_REVNAT_MAX);
	__type(key, struct nodenet_sock_key);
	__type(value, struct nodenet_sock_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_sock_revnat SEC(".maps");

/* 1: let the call proceed (translated or not); 0: refuse it with ECONNREFUSED. */
static __always_inline int nodenet_sock_translate(struct bpf_sock_addr *ctx)
{
	__u8 proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	__u32 address = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	struct nodenet_service_key key;
	struct nodenet_service *svc = nodenet_service_lookup(&key, address, port, proto, 1, 0);
	if (!svc)
		return 1;
	__u16 id = svc->id;
	__u32 backend_id = 0;
	struct nodenet_backend *backend = nodenet_select_backend(&key, svc, &backend_id);
	if (!backend) {
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	struct nodenet_sock_key sk = {};
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = backend->address;
	sk.port = backend->port;
	struct nodenet_sock_revnat rev = { .address = address, .port = port, .id = id };
	bpf_map_update_elem(&nodenet_sock_revnat, &sk, &rev, BPF_ANY);
	ctx->user_ip4 = backend->address;
	ctx->user_port = backend->port;
	return 1;
}

static __always_inline void nodenet_sock_reverse(struct bpf_sock_addr *ctx)
{
	struct nodenet_sock_key sk = {};
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = ctx->user_ip4;
	sk.port = (__u16)ctx->user_port;
	struct nodenet_sock_revnat *rev = bpf_map_lookup_elem(&nodenet_sock_revnat, &sk);
	if (!rev)
		return;
	ctx->user_ip4 = rev->address;
	ctx->user_port = rev->port;
}

SEC("cgroup/connect4")
int nodenet_sock_connect4(struct bpf_sock_addr *ctx)
{
	return nodenet_sock_translate(ctx);
}

SEC("cgroup/sendmsg4")
int nodenet_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return nodenet_sock_translate(ctx);
}

SEC("cgroup/recvmsg4")
int nodenet_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	nodenet_sock_reverse(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int nodenet_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	nodenet_sock_reverse(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
