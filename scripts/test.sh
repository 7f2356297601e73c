#!/usr/bin/env bash
# The test command: installs what the build needs, then runs every test.
# As root, integration tests run in throwaway network namespaces; without root they are
# skipped with a printed reason and only the unit tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build --build-tests
swift test "$@"
