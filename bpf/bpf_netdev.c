/* from-netdev: tc ingress of the node's native device. Traffic for a local pod goes
 * straight into that pod (bpf_redirect_peer), past the routing stack and cilium_host;
 * everything else continues to the next program on the device, if any, then to the stack
 * (TC_ACT_UNSPEC = TCX_NEXT: other tools' programs on the shared device keep running). */
#include "lib/common.h"
#include "lib/l3.h"
#include "lib/endpoints.h"

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
	struct nodenet_endpoint_key key = { .ip = ip->daddr };
	struct nodenet_endpoint *dst = bpf_map_lookup_elem(&nodenet_endpoints, &key);
	if (!dst)
		return TC_ACT_UNSPEC;
	return nodenet_deliver_local(skb, ip, dst);
}

char LICENSE[] SEC("license") = "GPL";
