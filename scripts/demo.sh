#!/usr/bin/env bash
# The demo command: installs what the build needs, builds nodenetd and runs its lab demo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build -c release --product nodenetd
exec .build/release/nodenetd lab demo "$@"
