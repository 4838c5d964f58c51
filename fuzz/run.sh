#!/usr/bin/env bash
# Builds the exit-line libFuzzer target and runs it for a bounded time.
#
# Usage: fuzz/run.sh [SECONDS]     (default 60)
#
# Seeds come from fuzz/corpus (committed, read-only here); inputs the fuzzer finds go to
# fuzz/corpus-work, and a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a mismatch with the model traps).
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
esac
case "$#:${1:-}" in
    0:|1:[0-9]*) ;;
    *) echo "run.sh: takes at most one argument, SECONDS (a whole number), not: $* (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
. fuzz/lib.sh

fuzz_target "${1:-60}" exitline-fuzz ExitLineFuzz 4096 fuzz/corpus fuzz/corpus-work \
    -I Sources/CScan fuzz/ExitLineFuzz.swift Sources/Echo/ExitLineDetector.swift Sources/Echo/LineStartScan.swift
