#!/usr/bin/env bash
# Upgrade benchmark (issue 16): 10,000 connections, 1,000 of them active, then SIGUSR2.
# Reports the time to hand over, the longest echo stall any client saw during the swap, and
# refused connects, lost and duplicated bytes (all must be 0). Release build, loopback only.
#
#   benchmarks/upgrade.sh [--connections N] [--active N] [--seconds N] [--reactors N]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product reflectd --scratch-path .build-upgrade >/dev/null
ulimit -n "$(ulimit -Hn)"
exec python3 benchmarks/upgrade.py .build-upgrade/release/reflectd "$@"
