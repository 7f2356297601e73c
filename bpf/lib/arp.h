/* ARP responder: the pod's gateway (the router IP) is never a real neighbour, so every ARP
 * request from a pod is answered with the pod's lxc MAC, except for the pod's own address. */
#ifndef NODENET_BPF_ARP_H
#define NODENET_BPF_ARP_H

#include "common.h"

struct nodenet_arp {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 op;
	__u8 sha[6];
	__be32 spa;
	__u8 tha[6];
	__be32 tpa;
} __attribute__((packed));

/* Turns an ARP request in place into the reply "tpa is at mac" and sends it back out of
 * the device it came in on. Returns -1 when the packet is not a request to answer. */
static __always_inline int nodenet_arp_respond(struct __sk_buff *skb, const __u8 mac[6])
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct nodenet_arp *arp = (void *)(eth + 1);
	if ((void *)(arp + 1) > end)
		return -1;
	if (arp->op != bpf_htons(1) || arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != 6 || arp->plen != 4)
		return -1;
	if (arp->tpa == arp->spa) /* gratuitous or duplicate-address probe */
		return -1;
	__be32 target = arp->tpa;
	__builtin_memcpy(arp->tha, arp->sha, 6);
	arp->tpa = arp->spa;
	__builtin_memcpy(arp->sha, mac, 6);
	arp->spa = target;
	arp->op = bpf_htons(2);
	__builtin_memcpy(eth->h_dest, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, mac, 6);
	return bpf_redirect(skb->ifindex, 0);
}

#endif
