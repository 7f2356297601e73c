/* Socket-level load balancing: cgroup hooks on the node's cgroup (v2).
 *
 * connect4 and sendmsg4 turn a service address into a backend before any packet exists,
 * so no packet carries the service address and nothing needs translating later; recvmsg4
 * and getpeername4 show the service address again (a UDP reply seems to come from the
 * service, getpeername() returns it). A frontend with no backend refuses at once. When a
 * socket is released, sock_release removes its reverse entries. */
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

/* The backends an unconnected socket (UDP sendmsg) was sent to through a service, by socket
 * cookie: its reverse entries (one per backend) go when it does. The last NODENET_SOCK_SENT
 * are kept; older ones are left to the LRU, as are sockets this map forgot. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NODENET_SOCK_REVNAT_MAX / 2);
	__type(key, __u64);
	__type(value, struct nodenet_sock_sent);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_sock_sent SEC(".maps");

static __always_inline void nodenet_sock_note_sent(__u64 cookie, __u32 address, __u16 port)
{
	struct nodenet_sock_sent *sent = bpf_map_lookup_elem(&nodenet_sock_sent, &cookie);
	if (!sent) {
		struct nodenet_sock_sent fresh = { .count = 1 };
		fresh.address[0] = address;
		fresh.port[0] = port;
		bpf_map_update_elem(&nodenet_sock_sent, &cookie, &fresh, BPF_NOEXIST);
		return;
	}
	for (int i = 0; i < NODENET_SOCK_SENT; i++) {
		if (i < sent->count && sent->address[i] == address && sent->port[i] == port)
			return;
	}
	__u32 slot = sent->count & (NODENET_SOCK_SENT - 1);
	sent->address[slot] = address;
	sent->port[slot] = port;
	sent->count++;
}

/* The IPv4 address a socket address names: user_ip4, or for an IPv6 socket a v4-mapped
 * address (::ffff:a.b.c.d: dual-stack sockets, e.g. Java's). 0 when there is none. */
static __always_inline __u32 nodenet_sock_ip4(struct bpf_sock_addr *ctx, int v6)
{
	if (!v6)
		return ctx->user_ip4;
	if (ctx->user_ip6[0] != 0 || ctx->user_ip6[1] != 0 || ctx->user_ip6[2] != bpf_htonl(0xffff))
		return 0;
	return ctx->user_ip6[3];
}

static __always_inline void nodenet_sock_set_ip4(struct bpf_sock_addr *ctx, int v6, __u32 address)
{
	if (v6)
		ctx->user_ip6[3] = address;
	else
		ctx->user_ip4 = address;
}

/* 1: let the call proceed (translated or not); 0: refuse it (ECONNREFUSED where the kernel
 * lets a program choose the error (5.18+, `refuse`), EPERM before). */
static __always_inline int nodenet_sock_translate(struct bpf_sock_addr *ctx, int v6, int refuse, int sendmsg)
{
	__u8 proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	__u32 address = nodenet_sock_ip4(ctx, v6);
	if (!address)
		return 1;
	__u16 port = (__u16)ctx->user_port;
	struct nodenet_service_key key;
	struct nodenet_service *svc = nodenet_service_lookup(&key, address, port, proto, 1, 0);
	if (!svc)
		return 1;
	__u32 backend_id = 0;
	__u64 client = bpf_get_netns_cookie(ctx) | NODENET_AFFINITY_SOCKET;
	struct nodenet_backend backend = {};
	if (!nodenet_select_backend_for(&key, svc, &backend_id, client, 0, &backend)) {
		if (refuse)
			bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	struct nodenet_sock_key sk = {};
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = backend.address;
	sk.port = backend.port;
	struct nodenet_sock_revnat rev = { .address = address, .port = port };
	bpf_map_update_elem(&nodenet_sock_revnat, &sk, &rev, BPF_ANY);
	if (sendmsg)
		nodenet_sock_note_sent(sk.cookie, sk.address, sk.port);
	nodenet_sock_set_ip4(ctx, v6, backend.address);
	ctx->user_port = backend.port;
	return 1;
}

static __always_inline int nodenet_sock_reverse(struct bpf_sock_addr *ctx, int v6)
{
	__u32 address = nodenet_sock_ip4(ctx, v6);
	if (!address)
		return 1;
	struct nodenet_sock_key sk = {};
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = address;
	sk.port = (__u16)ctx->user_port;
	struct nodenet_sock_revnat *rev = bpf_map_lookup_elem(&nodenet_sock_revnat, &sk);
	if (rev) {
		nodenet_sock_set_ip4(ctx, v6, rev->address);
		ctx->user_port = rev->port;
	}
	return 1;
}

/* connect and sendmsg, IPv4 and v4-mapped IPv6, each in two builds: refusing with
 * ECONNREFUSED (bpf_set_retval, kernel 5.18+) and, for older kernels, with EPERM. nodenet
 * loads the one the kernel supports. */
SEC("cgroup/connect4")
int nodenet_sock_connect4(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 0, 1, 0); }
SEC("cgroup/connect4")
int nodenet_sock_connect4_eperm(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 0, 0, 0); }
SEC("cgroup/sendmsg4")
int nodenet_sock_sendmsg4(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 0, 1, 1); }
SEC("cgroup/sendmsg4")
int nodenet_sock_sendmsg4_eperm(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 0, 0, 1); }
SEC("cgroup/connect6")
int nodenet_sock_connect6(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 1, 1, 0); }
SEC("cgroup/connect6")
int nodenet_sock_connect6_eperm(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 1, 0, 0); }
SEC("cgroup/sendmsg6")
int nodenet_sock_sendmsg6(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 1, 1, 1); }
SEC("cgroup/sendmsg6")
int nodenet_sock_sendmsg6_eperm(struct bpf_sock_addr *ctx) { return nodenet_sock_translate(ctx, 1, 0, 1); }

SEC("cgroup/recvmsg4")
int nodenet_sock_recvmsg4(struct bpf_sock_addr *ctx) { return nodenet_sock_reverse(ctx, 0); }
SEC("cgroup/getpeername4")
int nodenet_sock_getpeername4(struct bpf_sock_addr *ctx) { return nodenet_sock_reverse(ctx, 0); }
SEC("cgroup/recvmsg6")
int nodenet_sock_recvmsg6(struct bpf_sock_addr *ctx) { return nodenet_sock_reverse(ctx, 1); }
SEC("cgroup/getpeername6")
int nodenet_sock_getpeername6(struct bpf_sock_addr *ctx) { return nodenet_sock_reverse(ctx, 1); }

/* A socket going away takes its reverse entries with it: a connected socket (TCP, connected
 * UDP) the one of the backend it is connected to, an unconnected one those of the backends it
 * sent to (nodenet_sock_sent). */
SEC("cgroup/sock_release")
int nodenet_sock_release(struct bpf_sock *ctx)
{
	if (ctx->family != AF_INET && ctx->family != 10 /* AF_INET6: v4-mapped peers */)
		return 1;
	struct nodenet_sock_key sk = {};
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = ctx->dst_ip4;
	if (sk.address) {
		sk.port = ctx->dst_port;
		bpf_map_delete_elem(&nodenet_sock_revnat, &sk);
	}
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	__u64 cookie = sk.cookie;
	struct nodenet_sock_sent *sent = bpf_map_lookup_elem(&nodenet_sock_sent, &cookie);
	if (!sent)
		return 1;
	for (int i = 0; i < NODENET_SOCK_SENT; i++) {
		if (i >= sent->count)
			break;
		sk.address = sent->address[i];
		sk.port = sent->port[i];
		bpf_map_delete_elem(&nodenet_sock_revnat, &sk);
	}
	bpf_map_delete_elem(&nodenet_sock_sent, &cookie);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
