#!/usr/bin/env bash
# The cost curve: 100 active pingpong connections (depth 1 and 16) beside N idle ones
# (0, 1,000, 5,000, 10,000, 19,000), reflectd vs the C epoll baseline in one run, server on CPU 0.
# Writes benchmarks/results/DATE-scale.{md,json,svg}. See benchmarks/scale.py for what is measured.
# Usage: benchmarks/scale.sh [--idle 0,1000,...] [--duration S] [--servers reflectd,c-epoll] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
exec python3 benchmarks/scale.py "$@"
