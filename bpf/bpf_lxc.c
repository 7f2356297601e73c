/* from-container: tc ingress of each pod's host-side veth (lxc…).
 *
 * - ARP requests are answered with the lxc MAC (the pod's gateway is never a real neighbour);
 * - a source address that is not the pod's own is dropped (spoofing);
 * - a local destination is delivered straight into that pod (bpf_redirect_peer), with the
 *   destination lxc MAC as source, as the seed observes; no routing stack, no cilium_host;
 * - replies of flows translated on this node get their frontend back as source; with socket
 *   LB off, service frontends are translated here per packet (conntrack), and a pod given
 *   itself as backend sees the connection come from 169.254.42.1 (hairpin);
 * - traffic leaving nativeRoutingCIDR (not to a node) is masqueraded to the node's address;
 * - anything else is looked up in the FIB and sent to the next hop (bpf_redirect_neigh);
 * - what the program cannot handle goes to the kernel stack, which still works. */
#include "lib/common.h"
#include "lib/arp.h"
#include "lib/l3.h"
#include "lib/endpoints.h"
#include "lib/services.h"
#include "lib/snat.h"
#include "lib/forward.h"
#include "lib/reject.h"
#include "lib/icmp_error.h"

/* Service translation, reverse translation and masquerading of a pod's packet (a BPF
 * subprogram: called only off the pod-to-pod path). Returns a TC verdict, or NODENET_PASS
 * when the packet is unchanged and takes the normal path. */
static __noinline int nodenet_lxc_translate(struct __sk_buff *skb, struct nodenet_config *cfg, int pod_to_pod)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return NODENET_PASS;
	if ((cfg->flags & NODENET_CONFIG_SERVICES) && ip->protocol == IPPROTO_ICMP) {
		/* An error this pod (a backend) sends about a translated flow. */
		int verdict = nodenet_deliver_translated(skb, cfg, nodenet_icmp_error_reverse_service(skb, ip->saddr, ip->daddr));
		if (verdict != NODENET_PASS)
			return verdict;
		ip = nodenet_ipv4_end(skb, &end);
		if (!ip)
			return NODENET_PASS;
	}
	if (pod_to_pod)
		return NODENET_PASS;  /* entered for the ICMP errors above only */
	struct nodenet_flow flow;
	if (nodenet_flow_read(ip, end, &flow) < 0)
		return NODENET_PASS;
	int replied = 0, translated = 0;
	if (cfg->flags & NODENET_CONFIG_SERVICES) {
		/* A hairpinned flow's reply: to the pod's own address and port again, then (below)
		 * from the frontend. Without its flow (expired, evicted, or per-packet LB switched
		 * off meanwhile) it has nowhere to go: never out to the network. */
		int hairpin = flow.tuple.daddr == bpf_htonl(NODENET_HAIRPIN_IPV4);
		if (hairpin && flow.tuple.proto != IPPROTO_ICMP) {
			int rc = nodenet_snat_reverse(skb, &flow);
			if (rc == NODENET_ERROR)
				return TC_ACT_SHOT;
			if (rc != NODENET_TRANSLATED)
				return nodenet_drop(skb, NODENET_VERDICT_DROP_NO_FLOW);
		}
		/* A reply of a flow translated here (NodePort to this backend, per-packet LB). */
		int rc = nodenet_reverse_service(skb, &flow, !hairpin);
		if (rc == NODENET_ERROR)
			return TC_ACT_SHOT;
		replied = rc == NODENET_TRANSLATED;
		if (!replied && (cfg->flags & NODENET_CONFIG_PACKET_LB)) {
			rc = nodenet_translate_service(skb, cfg, &flow, 0);
			int verdict = nodenet_service_failure(skb, rc);
			if (verdict != NODENET_PASS)
				return verdict;
			translated = rc == NODENET_TRANSLATED;
			if (translated && nodenet_hairpin(skb, &flow) == NODENET_ERROR)
				return nodenet_drop(skb, NODENET_VERDICT_DROP_NAT_EXHAUSTED);
		}
	}
	/* A reply already carries the frontend's address; anything else leaving the cluster
	 * takes the node's. */
	if (!replied && nodenet_needs_masquerade(skb, cfg, &flow)) {
		int rc = nodenet_snat_to_node(skb, cfg, &flow, nodenet_may_open(&flow), flow.tuple.saddr);
		if (rc == NODENET_ERROR)
			return nodenet_drop(skb, NODENET_VERDICT_DROP_NAT_EXHAUSTED);
		if (rc == NODENET_QUOTA_EXCEEDED)
			return nodenet_drop(skb, NODENET_VERDICT_DROP_QUOTA);
		/* A TCP segment with no mapping that may not open one never leaves with the pod's
		 * address (fail closed). ICMP that is not an echo request goes as it is: an error or
		 * an echo reply about a connection from outside straight to the pod. */
		if (rc == NODENET_PASS && flow.tuple.proto == IPPROTO_TCP)
			return nodenet_drop(skb, NODENET_VERDICT_DROP_NO_MAPPING);
		translated |= rc == NODENET_TRANSLATED;
	}
	if (replied || translated)
		return nodenet_deliver(skb, cfg);
	return NODENET_PASS;
}

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
		/* A pod speaks ARP only for its own address: a sender it does not own would have the
		 * node make a neighbour entry for it (a flood fills the table, gc_thresh3). */
		if (!self || self->ifindex != skb->ifindex)
			return nodenet_drop(skb, NODENET_VERDICT_DROP_SPOOFED);
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
	if (ip->ihl < 5)
		return nodenet_to_stack(skb, ip);

	struct nodenet_endpoint_key src_key = { .ip = ip->saddr };
	struct nodenet_endpoint *src = bpf_map_lookup_elem(&nodenet_endpoints, &src_key);
	if (!src || src->ifindex != skb->ifindex)
		return nodenet_drop(skb, NODENET_VERDICT_DROP_SPOOFED);

	struct nodenet_config cfg;
	nodenet_settings_read(&cfg);
	/* Pod to pod (inside nativeRoutingCIDR) with socket LB has nothing to translate and no
	 * translation state to look up: it never enters the translation subprogram, which keeps
	 * this path as short as it was without services. */
	int pod_to_pod = nodenet_inside_native(&cfg, ip->daddr) && !(cfg.flags & NODENET_CONFIG_PACKET_LB);
	if ((cfg.flags & (NODENET_CONFIG_SERVICES | NODENET_CONFIG_MASQUERADE)) && (!pod_to_pod || ip->protocol == IPPROTO_ICMP)) {
		int rc = nodenet_lxc_translate(skb, &cfg, pod_to_pod);
		if (rc != NODENET_PASS)
			return rc;
		ip = nodenet_ipv4(skb);
		if (!ip)
			return TC_ACT_OK;
	}

	struct nodenet_endpoint *dst = nodenet_local_endpoint(&cfg, ip->daddr);
	if (dst)
		return nodenet_deliver_local(skb, ip, dst);
	return nodenet_forward(skb);
}

char LICENSE[] SEC("license") = "GPL";
