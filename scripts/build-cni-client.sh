#!/usr/bin/env bash
# Builds the CNI tests' container runtime: Tests/CNIClient, a Go program on Debian's libcni
# (golang-go + golang-github-appc-cni-dev, GOPATH mode, offline). Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/.build/cni-client"
mkdir -p "$out"
GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$out/gocache" GOTOOLCHAIN=local \
  go build -o "$out/cni-client" ./Tests/CNIClient
echo "$out/cni-client"
