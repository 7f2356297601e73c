#!/usr/bin/env bash
# The test command: installs what the build needs, then runs every test.
# As root, integration tests run in throwaway network namespaces; without root they are
# skipped with a printed reason and only the unit tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# Formatting is part of the test: .swift-format is the style, `swift format` (the toolchain's) checks it.
swift format lint --strict --recursive --parallel Sources Tests Benchmarks Plugins Tools Examples Package.swift
swift build --build-tests
# The CNI tests drive nodenet-cni through the real libcni: their client is a Go program.
./scripts/build-cni-client.sh >/dev/null
# One test at a time: many integration tests block a thread while they wait for the kernel or a
# child process, and on a 2-core machine two of them side by side leave no thread of Swift's
# concurrency pool to the agents other tests run in-process (their waits then time out).
swift test --no-parallel "$@"
