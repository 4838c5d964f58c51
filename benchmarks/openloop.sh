#!/usr/bin/env bash
# Open loop vs closed loop against reflectd (reflect-bench --rate): a server stall seen both
# ways, latency against offered load, and the generator's threads. Server on CPU 0, load on CPU 1.
# Writes benchmarks/results/DATE-openloop.{md,json,svg} and DATE-openloop-{closed,open}.hgrm.
# See benchmarks/openloop.py for what is measured.
# Usage: benchmarks/openloop.sh [--duration S] [--stall S] [--rate R] [--rates 5000,10000,...] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
exec python3 benchmarks/openloop.py "$@"
