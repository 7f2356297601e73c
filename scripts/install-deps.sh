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
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v swift >/dev/null || { echo "install-deps: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }
