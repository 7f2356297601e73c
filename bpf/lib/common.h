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

#endif
