#!/usr/bin/env bash
# Installs the Debian packages nodenet needs to build and test. Safe to run again:
# it calls apt-get only when something is missing.
set -euo pipefail

packages=(
  libmnl-dev libbpf-dev libelf-dev pkg-config   # build: libmnl, libbpf (and libelf behind it)
  iproute2 iputils-ping bpftool                 # tests observe the kernel with ip, tc, ping and bpftool
  iptables conntrack                            # tests prove services stay out of iptables/conntrack; service-bench's baseline
  golang-go golang-github-appc-cni-dev          # the CNI tests' client: a Go program on the real libcni (GOPATH mode, offline)
  containernetworking-plugins                   # CNI plugins chained after nodenet-cni (portmap) and cni-bench's baseline (ptp)
  etcd-server etcd-client openssl               # cluster mode: tests start their own etcd (temp dir, unix sockets, TLS)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # etcd-server's package would start a machine-wide etcd: no service may start during the install
  # (tests start etcd themselves). A policy-rc.d answering 101 forbids it; ours is removed afterwards.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Where an init system ran it anyway, stop it: nothing of ours listens on the machine's ports.
  if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi

command -v swift >/dev/null || { echo "install-deps: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }
