/* Refusing a connection to a service with no backend at once: the packet is turned in place
 * into the answer a closed port gives, from the address the client sent to, and sent back out
 * of the device it came in on; the client's kernel reports ECONNREFUSED instead of retrying
 * until it times out.
 * - TCP: a reset (RFC 9293 3.10.7.1: RST with the acknowledged sequence number, or RST|ACK
 *   acknowledging the segment when it carried no ACK). Not an ICMP error: a client on this
 *   node meets the answer while its connect() still holds the socket (the reply is processed
 *   in the same softirq as the SYN), and the kernel only notes an ICMP error then ("soft"),
 *   reporting it after the SYN's first retransmit a second later; a reset is queued and acted
 *   on as soon as connect() lets go.
 * - Other protocols: an ICMP port unreachable (RFC 792: the offending IP header and its first
 *   8 bytes quoted). */
#ifndef NODENET_BPF_REJECT_H
#define NODENET_BPF_REJECT_H

#include <linux/tcp.h>
#include "common.h"
#include "endpoints.h"
#include "fragments.h"

struct nodenet_icmp_reject {
	struct iphdr ip;
	__u8 type, code;
	__u16 check;
	__u32 unused;
	__u8 quote[28];  /* the offending IPv4 header (no options) and 8 bytes of its payload */
};

static __always_inline __u16 nodenet_csum_fold(__s64 csum)
{
	__u32 sum = (__u32)csum;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

struct nodenet_tcp_reset {
	struct iphdr ip;
	struct tcphdr tcp;
};

/* The TCP pseudo header (RFC 9293 3.1) of a 20-byte segment. */
struct nodenet_tcp_pseudo {
	__be32 saddr, daddr;
	__u8 zero, protocol;
	__be16 length;
};

static __always_inline void nodenet_swap_macs(struct ethhdr *eth)
{
	__u8 mac[6];
	__builtin_memcpy(mac, eth->h_dest, 6);
	__builtin_memcpy(eth->h_dest, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, mac, 6);
}

/* Replaces the packet with `eth` + `len` bytes at `l3` and sends it back where it came from. */
static __always_inline int nodenet_send_back(struct __sk_buff *skb, struct ethhdr *eth, void *l3, __u32 len)
{
	nodenet_swap_macs(eth);
	if (bpf_skb_change_tail(skb, ETH_HLEN + len, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, eth, sizeof(*eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, l3, len, BPF_F_INVALIDATE_HASH) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* The IPv4 header (no options) of an answer to `offending`, from where it was sent to. */
static __always_inline void nodenet_answer_header(struct iphdr *ip, const struct iphdr *offending, __u8 protocol, __u16 length)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(length);
	ip->ttl = 64;
	ip->protocol = protocol;
	ip->saddr = offending->daddr;
	ip->daddr = offending->saddr;
}

static __always_inline int nodenet_reset(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *offending)
{
	struct tcphdr in;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &in, sizeof(in)) < 0 || in.rst)
		return TC_ACT_SHOT;  /* never a reset for a reset */
	struct nodenet_tcp_reset r = {};
	nodenet_answer_header(&r.ip, offending, IPPROTO_TCP, sizeof(r));
	r.tcp.source = in.dest;
	r.tcp.dest = in.source;
	r.tcp.doff = 5;
	r.tcp.rst = 1;
	if (in.ack) {
		r.tcp.seq = in.ack_seq;
	} else {
		__u32 hlen = (__u32)in.doff * 4;
		__u32 total = bpf_ntohs(offending->tot_len);
		__u32 payload = total > sizeof(struct iphdr) + hlen ? total - sizeof(struct iphdr) - hlen : 0;
		r.tcp.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + payload + in.syn + in.fin);
		r.tcp.ack = 1;
	}
	struct nodenet_tcp_pseudo pseudo = {
		.saddr = r.ip.saddr, .daddr = r.ip.daddr, .protocol = IPPROTO_TCP, .length = bpf_htons(sizeof(r.tcp)),
	};
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	r.tcp.check = nodenet_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.tcp, sizeof(r.tcp), (__u32)sum));
	r.ip.check = nodenet_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.ip, sizeof(r.ip), 0));
	return nodenet_send_back(skb, eth, &r, sizeof(r));
}

/* Counts and reports the packet as dropped for want of a backend, and answers it. Returns
 * the verdict for the rewritten packet, or TC_ACT_SHOT when it cannot be built. */
static __always_inline int nodenet_reject(struct __sk_buff *skb)
{
	nodenet_count(NODENET_VERDICT_DROP_NO_BACKEND);
	nodenet_emit(skb, NODENET_VERDICT_DROP_NO_BACKEND, nodenet_ipv4(skb), 0);
	struct ethhdr eth;
	struct nodenet_icmp_reject r = {};
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r.quote, sizeof(r.quote)) < 0)
		return TC_ACT_SHOT;
	struct iphdr *offending = (struct iphdr *)r.quote;
	if (offending->ihl != 5 || offending->protocol == IPPROTO_ICMP)
		return TC_ACT_SHOT;  /* never an ICMP error about an ICMP packet */
	if (offending->frag_off & bpf_htons(NODENET_IP_OFFSET))
		return TC_ACT_SHOT;  /* a later fragment has no L4 header: its first fragment was answered */
	if (offending->protocol == IPPROTO_TCP)
		return nodenet_reset(skb, &eth, offending);
	nodenet_answer_header(&r.ip, offending, IPPROTO_ICMP, sizeof(r));
	r.type = 3;  /* destination unreachable */
	r.code = 3;  /* port unreachable */
	r.check = nodenet_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.type, sizeof(r) - sizeof(r.ip), 0));
	r.ip.check = nodenet_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.ip, sizeof(r.ip), 0));
	return nodenet_send_back(skb, &eth, &r, sizeof(r));
}

#endif
