#ifndef NODENET_CBPF_SHIM_H
#define NODENET_CBPF_SHIM_H
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>

/* tcx (kernel >= 6.6) is newer than Debian 12's UAPI headers. */
#ifndef BPF_TCX_INGRESS
#define BPF_TCX_INGRESS 46
#define BPF_TCX_EGRESS 47
#endif
static inline int nodenet_tcx_ingress(void) { return BPF_TCX_INGRESS; }
#endif
