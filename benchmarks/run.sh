#!/usr/bin/env bash
# Builds everything in release mode and runs the comparison benchmark:
# reflectd vs the hand-written C epoll server vs SwiftNIO (vs the classic fork-per-client server).
# Server pinned to CPU 0, load generator to CPU 1. Writes benchmarks/results/DATE.{md,json,svg}.
# Usage: benchmarks/run.sh [--duration S] [--warmup S] [--quick] [--servers a,b,c] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
exec python3 benchmarks/run.py "$@"
