/* IPv4 forwarding helpers: TTL decrement with checksum fix-up, as a router does. */
#ifndef NODENET_BPF_L3_H
#define NODENET_BPF_L3_H

#include "common.h"

#define NODENET_IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define NODENET_IP_TTL_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, ttl))

/* Returns 0, or -1 when the TTL would expire (the stack then answers with ICMP). Written in
 * place (`ip` is a checked packet pointer; the verifier has the program make the skb's head
 * writable first), the checksum fixed as ip_decrease_ttl() does (RFC 1624): no helper calls,
 * and the packet pointers stay valid. */
static __always_inline int nodenet_dec_ttl(struct iphdr *ip)
{
	if (ip->ttl <= 1)
		return -1;
	/* TTL is the high byte of the 16-bit word it shares with the protocol. */
	__u32 check = (__u32)ip->check + (__u32)bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
	return 0;
}

#endif
