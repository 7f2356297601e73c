/* What every nodenet BPF program includes: UAPI headers, libbpf helpers, the map layouts. */
#ifndef NODENET_BPF_COMMON_H
#define NODENET_BPF_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* The IPv4 header after the Ethernet header, or 0 when the packet is shorter. Packet
 * pointers die with every helper that may change the packet: call it again after those. */
static __always_inline struct iphdr *nodenet_ipv4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	return (void *)(ip + 1) <= end ? ip : 0;
}

/* The same, with the packet's end for reading past the IPv4 header. */
static __always_inline struct iphdr *nodenet_ipv4_end(struct __sk_buff *skb, void **end)
{
	*end = (void *)(long)skb->data_end;
	return nodenet_ipv4(skb);
}

#endif
