/* Maglev consistent hashing for the packet path (loadBalancer.algorithm maglev): every node
 * holds the same table for a frontend with the same backends (apply builds them alike), and
 * hashes a flow's 5-tuple alike, so a flow reaching any node picks the same backend, and a
 * backend change moves little more than that backend's share of flows. */
#ifndef NODENET_BPF_MAGLEV_H
#define NODENET_BPF_MAGLEV_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_MAGLEV_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nodenet_maglev_key);
	__type(value, struct nodenet_maglev_chunk);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NODENET_REVNAT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct nodenet_maglev_index);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodenet_maglev_index SEC(".maps");

static __always_inline __u32 nodenet_hash_round(__u32 h, __u32 word)
{
	word *= 0xcc9e2d51;
	word = (word << 15) | (word >> 17);
	word *= 0x1b873593;
	h ^= word;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

/* MurmurHash3 (x86, 32 bit) of the 5-tuple's bytes as the packet carries them, with no seed
 * of the node's own: the same on every node. */
static __always_inline __u32 nodenet_flow_hash(__u32 saddr, __u32 daddr, __u16 sport, __u16 dport, __u8 proto)
{
	__u32 h = 0;
	h = nodenet_hash_round(h, saddr);
	h = nodenet_hash_round(h, daddr);
	h = nodenet_hash_round(h, ((__u32)sport << 16) | dport);
	h = nodenet_hash_round(h, proto);
	h ^= 16;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* The backend id at entry `hash % size` of frontend `id`'s table; 0 (false) when the table
 * or that chunk is not there (being written, or none for this frontend). */
static __always_inline int nodenet_maglev_lookup(__u32 id, __u32 size, __u32 hash, __u32 *backend_id)
{
	if (size == 0)
		return 0;
	__u32 index = hash % size;
	struct nodenet_maglev_key key = { .id = id, .chunk = index / NODENET_MAGLEV_CHUNK };
	struct nodenet_maglev_chunk *chunk = bpf_map_lookup_elem(&nodenet_maglev, &key);
	if (!chunk)
		return 0;
	*backend_id = chunk->backend_ids[index % NODENET_MAGLEV_CHUNK];
	return 1;
}

#endif
