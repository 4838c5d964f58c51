#!/usr/bin/env bash
# Builds the PROXY protocol libFuzzer target and runs it for a bounded time.
#
# Usage: fuzz/run-proxy.sh [SECONDS]     (default 30)
#
# Seeds come from fuzz/corpus-proxy (committed); what the fuzzer finds goes to
# fuzz/corpus-work-proxy, a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a self-disagreement traps).
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
esac
case "$#:${1:-}" in
    0:|1:[0-9]*) ;;
    *) echo "run-proxy.sh: takes at most one argument, SECONDS (a whole number), not: $* (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
. fuzz/lib.sh

fuzz_target "${1:-30}" proxy-fuzz ProxyFuzz 512 fuzz/corpus-proxy fuzz/corpus-work-proxy \
    fuzz/ProxyFuzz.swift Sources/Echo/ProxyProtocol.swift
