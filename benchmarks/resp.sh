#!/usr/bin/env bash
# resp-server (Examples/resp) vs redis-server, driven by redis-benchmark, in one run.
# Servers pinned to CPU 0 (`taskset -c 0`), redis-benchmark to CPU 1. For each client setting
# (-c 50 -P 1, -c 50 -P 16, -c 1000 -P 1) and each test (ping_inline, ping_mbulk, set, get, incr),
# resp-server and redis-server are measured one right after the other, so load from elsewhere on
# the machine hits both alike. CPU per request = server utime+stime (/proc/PID/stat) / requests.
# Writes benchmarks/results/DATE-resp.md.
# Usage: benchmarks/resp.sh [-n REQUESTS] [--no-build]      (default -n 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
exec python3 benchmarks/resp.py "$@"
