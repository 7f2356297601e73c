#ifndef NODENET_CBPF_SHIM_H
#define NODENET_CBPF_SHIM_H
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>
#endif
