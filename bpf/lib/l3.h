/* IPv4 forwarding helpers: TTL decrement with checksum fix-up, as a router does. */
#ifndef NODENET_BPF_L3_H
#define NODENET_BPF_L3_H

#include "common.h"

#define NODENET_IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define NODENET_IP_TTL_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, ttl))

/* Returns 0, or -1 when the TTL would expire (the stack then answers with ICMP). */
static __always_inline int nodenet_dec_ttl(struct __sk_buff *skb, struct iphdr *ip)
{
	__u8 ttl = ip->ttl;
	if (ttl <= 1)
		return -1;
	/* TTL is the high byte of the 16-bit word it shares with the protocol. */
	__u16 old = bpf_htons((__u16)ttl << 8), new = bpf_htons((__u16)(ttl - 1) << 8);
	bpf_l3_csum_replace(skb, NODENET_IP_CSUM_OFF, old, new, 2);
	__u8 next = ttl - 1;
	bpf_skb_store_bytes(skb, NODENET_IP_TTL_OFF, &next, 1, 0);
	return 0;
}

#endif
