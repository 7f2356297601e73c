#ifndef NODENET_CMNL_SHIM_H
#define NODENET_CMNL_SHIM_H
// libmnl for the netlink socket. Kernel UAPI constants are kept as typed Swift
// constants in Netlink/Core/Constants.swift (the imported macros come as a mix
// of integer types and function-like macros do not import at all).
#include <libmnl/libmnl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <poll.h>
#include <linux/sched.h>

// glibc declares these only with _GNU_SOURCE, which must not be defined here
// (it changes fd_set and breaks modules that import Foundation or XCTest).
int setns(int fd, int nstype);
int unshare(int flags);

static inline int nodenet_clone_newnet(void) { return CLONE_NEWNET; }
#endif
