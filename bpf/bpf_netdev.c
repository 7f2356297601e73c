/* from-netdev: tc ingress of the node's native device.
 *
 * - Traffic for a local pod goes straight into that pod (bpf_redirect_peer), past the
 *   routing stack and cilium_host; replies of flows this node translated per packet get
 *   their frontend back as source first.
 * - Traffic to the node's address: replies to a masqueraded or NodePort-translated source
 *   get their original destination back (ICMP errors about such flows too, quote included); a NodePort frontend is translated to a backend
 *   (conntrack): a local backend receives it directly, a remote one with the node's address
 *   as source so that the reply returns here; a NodePort with no backend is refused at once
 *   (reject.h).
 * - Everything else continues to the next program on the device, if any, then to the stack
 *   (TC_ACT_UNSPEC = TCX_NEXT: other tools' programs on the shared device keep running). */
#include "lib/common.h"
#include "lib/l3.h"
#include "lib/endpoints.h"
#include "lib/services.h"
#include "lib/snat.h"
#include "lib/icmp_error.h"
#include "lib/reject.h"
#include "lib/forward.h"

/* A packet to the node's own address. NODENET_PASS leaves it to the stack. */
static __always_inline int nodenet_to_node(struct __sk_buff *skb, const struct nodenet_config *cfg, struct nodenet_flow *flow)
{
	int rc = nodenet_snat_reverse(skb, flow);
	if (rc == NODENET_TRANSLATED) {
		int services = cfg->flags & NODENET_CONFIG_SERVICES;
		int reversed = services ? nodenet_reverse_service(skb, flow, 0) : NODENET_PASS;
		if (reversed == NODENET_ERROR)
			return TC_ACT_SHOT;
		struct iphdr *ip;
		struct nodenet_endpoint *dst = nodenet_local_destination(skb, cfg, &ip);
		if (!ip)
			return TC_ACT_OK;
		if (dst)
			return nodenet_deliver_local(skb, ip, dst);  /* a masqueraded pod's reply */
		/* Anything else this node's source NAT took back is a remote backend's reply to a
		 * node port's client, which must leave from the frontend: without its reverse entry
		 * (evicted, made again by the flow's next packets) it would reach the client from the
		 * backend's address, which a TCP client answers with a reset (to that address, which
		 * the backend, seeing the node's, never takes for its flow) and a UDP one ignores.
		 * Dropped, it is sent again (TCP) once the client's next packet made the entry again. */
		if (services && reversed != NODENET_TRANSLATED && flow->tuple.proto != IPPROTO_ICMP)
			return nodenet_drop(skb, NODENET_VERDICT_DROP_NO_FLOW);
		return nodenet_forward(skb);
	}
	if (rc == NODENET_ERROR)
		return TC_ACT_SHOT;
	if (!(cfg->flags & NODENET_CONFIG_SERVICES))
		return NODENET_PASS;
	rc = nodenet_translate_service(skb, cfg, flow, 1);
	if (rc != NODENET_TRANSLATED)
		return nodenet_service_failure(skb, rc);
	/* The backend, looked up once: delivered into it when local, forwarded when not. */
	struct nodenet_endpoint *backend = nodenet_local_endpoint(cfg, flow->tuple.daddr);
	if (!backend) {
		/* A remote backend: the reply must come back through this node. */
		rc = nodenet_snat_to_node(skb, cfg, flow, 1, NODENET_CT_QUOTA_OUTSIDE);
		if (rc == NODENET_QUOTA_EXCEEDED)
			return nodenet_drop(skb, NODENET_VERDICT_DROP_QUOTA);
		if (rc != NODENET_TRANSLATED)
			return nodenet_drop(skb, NODENET_VERDICT_DROP_NAT_EXHAUSTED);
		return nodenet_forward(skb);
	}
	struct iphdr *ip = nodenet_ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	return nodenet_deliver_local(skb, ip, backend);
}

SEC("tc")
int nodenet_from_netdev(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5)
		return TC_ACT_UNSPEC;
	__u32 daddr = ip->daddr;
	struct nodenet_config cfg;
	nodenet_settings_read(&cfg);
	/* The local pod it is for (looked up inside the pod CIDR only: not for the node ports'
	 * and the node's own traffic). */
	struct nodenet_endpoint *dst = nodenet_local_endpoint(&cfg, daddr);
	/* Nothing from outside may come from this node itself, its router or its pods: a spoofed
	 * source would reach the pods as the node (kubelet's address) or as their neighbours. Pod
	 * addresses are looked up only for sources inside this node's pod CIDR (other nodes' pods,
	 * most of this device's traffic, need no lookup). */
	if (cfg.node_ip && (ip->saddr == cfg.node_ip || ip->saddr == cfg.router_ip))
		return nodenet_drop(skb, NODENET_VERDICT_DROP_SPOOFED);
	if (cfg.node_ip && nodenet_local_endpoint(&cfg, ip->saddr))
		return nodenet_drop(skb, NODENET_VERDICT_DROP_SPOOFED);
	/* A frontend on an external or LoadBalancer address is not the node's: with such frontends,
	 * any destination may be one. */
	int external = !dst && daddr != cfg.node_ip && (cfg.flags & NODENET_CONFIG_EXTERNAL_IPS);
	if ((cfg.flags & (NODENET_CONFIG_SERVICES | NODENET_CONFIG_MASQUERADE)) && (daddr == cfg.node_ip || dst || external)) {
		if (ip->protocol == IPPROTO_ICMP) {
			/* An error about a translated flow: to the node (masquerade, NodePort SNAT) or
			 * to a local pod (a per-packet translated flow). */
			int rc = NODENET_PASS;
			if (daddr == cfg.node_ip)
				rc = nodenet_icmp_error_to_node(skb, cfg.node_ip, daddr);
			else if (cfg.flags & NODENET_CONFIG_PACKET_LB)
				rc = nodenet_icmp_error_reverse_service(skb, ip->saddr, ip->daddr);
			int verdict = nodenet_deliver_translated(skb, &cfg, rc);
			if (verdict != NODENET_PASS)
				return verdict;
			ip = nodenet_ipv4_end(skb, &end);
			if (!ip)
				return TC_ACT_UNSPEC;
		}
		struct nodenet_flow flow;
		if (nodenet_flow_read(ip, end, &flow) == 0) {
			if (daddr == cfg.node_ip || external) {
				int rc = nodenet_to_node(skb, &cfg, &flow);
				if (rc != NODENET_PASS)
					return rc;
			} else {
				/* A reply of a per-packet translated flow gets its frontend back and goes on
				 * below to the same local pod; anything else may be a new inbound connection. */
				int rc = (cfg.flags & NODENET_CONFIG_PACKET_LB) ? nodenet_reverse_service(skb, &flow, 1) : NODENET_PASS;
				if (rc == NODENET_ERROR)
					return TC_ACT_SHOT;
				if (rc != NODENET_TRANSLATED && nodenet_note_inbound(&cfg, &flow) == NODENET_QUOTA_EXCEEDED)
					return nodenet_drop(skb, NODENET_VERDICT_DROP_QUOTA);
			}
		}
		ip = nodenet_ipv4(skb);
		if (!ip)
			return TC_ACT_UNSPEC;
	}
	if (!dst)
		return TC_ACT_UNSPEC;
	return nodenet_deliver_local(skb, ip, dst);
}

char LICENSE[] SEC("license") = "GPL";
