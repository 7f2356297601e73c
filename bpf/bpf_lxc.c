/* from-container: tc ingress of each pod's host-side veth (lxc…).
 *
 * - ARP requests are answered with the lxc MAC (the pod's gateway is never a real neighbour);
 * - a source address that is not the pod's own is dropped (spoofing);
 * - a local destination is delivered straight into that pod (bpf_redirect_peer), with the
 *   destination lxc MAC as source, as the seed observes; no routing stack, no cilium_host;
 * - anything else is looked up in the FIB and sent to the next hop (bpf_redirect_neigh);
 * - what the program cannot handle goes to the kernel stack, which still works. */
#include "lib/common.h"
#include "lib/arp.h"
#include "lib/l3.h"
#include "lib/endpoints.h"

const volatile struct nodenet_lxc_config CONFIG = {};

SEC("tc")
int nodenet_from_container(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;

	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		/* Our lxc's MAC is the source endpoint's host_mac; find it by the sender address. */
		struct nodenet_arp *arp = (void *)(eth + 1);
		if ((void *)(arp + 1) > end)
			return TC_ACT_OK;
		struct nodenet_endpoint_key key = { .ip = arp->spa };
		struct nodenet_endpoint *self = bpf_map_lookup_elem(&nodenet_endpoints, &key);
		if (!self || self->ifindex != skb->ifindex)
			return TC_ACT_OK;
		__u8 mac[6];
		__builtin_memcpy(mac, self->host_mac, 6);
		int rc = nodenet_arp_respond(skb, mac);
		if (rc < 0)
			return TC_ACT_OK;
		nodenet_count(NODENET_VERDICT_ARP_REPLY);
		nodenet_emit(skb, NODENET_VERDICT_ARP_REPLY, 0, skb->ifindex);
		return rc;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	/* A header shorter than 20 bytes is malformed: never forwarded, the stack drops it
	 * (and counts it), as from-netdev leaves anything but ihl 5 to the stack. */
	if (ip->ihl < 5) {
		nodenet_count(NODENET_VERDICT_TO_STACK);
		return TC_ACT_OK;
	}

	struct nodenet_endpoint_key src_key = { .ip = ip->saddr };
	struct nodenet_endpoint *src = bpf_map_lookup_elem(&nodenet_endpoints, &src_key);
	if (!src || src->ifindex != skb->ifindex) {
		nodenet_count(NODENET_VERDICT_DROP_SPOOFED);
		nodenet_emit(skb, NODENET_VERDICT_DROP_SPOOFED, ip, 0);
		return TC_ACT_SHOT;
	}

	struct nodenet_endpoint_key dst_key = { .ip = ip->daddr };
	struct nodenet_endpoint *dst = bpf_map_lookup_elem(&nodenet_endpoints, &dst_key);
	if (dst)
		return nodenet_deliver_local(skb, ip, dst);

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	/* tot_len stays 0: with it set, the kernel checks the IP length (64 KiB for a GSO packet)
	 * against the route MTU and answers FRAG_NEEDED; at 0 it checks the skb, GSO-aware. */
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = skb->ifindex;
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		nodenet_count(NODENET_VERDICT_TO_STACK);
		nodenet_emit(skb, NODENET_VERDICT_TO_STACK, ip, 0);
		return TC_ACT_OK;
	}
	/* Re-validate after the lookup: the verifier needs fresh packet pointers. */
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	if (ip->ttl <= 1) {
		nodenet_emit(skb, NODENET_VERDICT_TO_STACK, ip, 0);
		return TC_ACT_OK;
	}
	/* Emit first: changing the packet (TTL) invalidates packet pointers. */
	nodenet_emit(skb, NODENET_VERDICT_REMOTE_REDIRECT, ip, fib.ifindex);
	if (nodenet_dec_ttl(skb, ip) < 0)
		return TC_ACT_OK;
	nodenet_count(NODENET_VERDICT_REMOTE_REDIRECT);
	return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
}

char LICENSE[] SEC("license") = "GPL";
