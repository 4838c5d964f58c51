#!/usr/bin/env bash
# Builds everything in release mode and runs the comparison benchmark: reflectd (exit line on
# and off) vs the hand-written C epoll server, Go, SwiftNIO, uvloop and the classic fork-per-client
# server, each scenario repeated with the servers in a fresh seeded random order, two CPU measures
# per run (the server's utime+stime, CPU 0's busy time) and runs flagged where CPU 0 ran other work;
# medians, spreads and ratios of medians, plus callgrind instructions per message (a count).
# Server pinned to CPU 0, load generator to CPU 1. Writes benchmarks/results/DATE.{md,json,svg}.
# Usage: benchmarks/run.sh [--repeats N] [--seed N] [--duration S] [--warmup S] [--quick]
#                          [--servers a,b,c] [--no-instructions] [--no-build]   (--help: all options)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
exec python3 benchmarks/run.py "$@"
