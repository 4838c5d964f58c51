#!/usr/bin/env bash
# Upgrade benchmark (issue 16): 10,000 connections, 1,000 of them active, then SIGUSR2.
# Reports the time to hand over, the longest echo stall any client saw during the swap, and
# refused connects, lost and duplicated bytes (all must be 0). Release build, loopback only.
#
# Usage: benchmarks/upgrade.sh [--connections N] [--active N] [--seconds N] [--reactors N]
#        (defaults: benchmarks/upgrade.py --help)
set -euo pipefail
arguments=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --connections|--active|--seconds|--reactors) [ $# -ge 2 ] || { echo "upgrade.sh: $1 needs a number" >&2; exit 2; }; shift 2 ;;
        --connections=*|--active=*|--seconds=*|--reactors=*) shift ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "upgrade.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
set -- "${arguments[@]}"
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product reflectd --scratch-path .build-upgrade >/dev/null
ulimit -n "$(ulimit -Hn)"
exec python3 benchmarks/upgrade.py .build-upgrade/release/reflectd "$@"
