#!/usr/bin/env bash
# Builds the RESP request parser's libFuzzer target and runs it for a bounded time.
#
# Usage: fuzz/resp-run.sh [SECONDS]     (default 30)
#
# Seeds come from fuzz/resp-corpus (committed, read-only here); inputs the fuzzer finds go to
# fuzz/resp-corpus-work, and a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a disagreement traps).
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
esac
case "$#:${1:-}" in
    0:|1:[0-9]*) ;;
    *) echo "resp-run.sh: takes at most one argument, SECONDS (a whole number), not: $* (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
. fuzz/lib.sh

fuzz_target "${1:-30}" resp-parser-fuzz RespParserFuzz 8192 fuzz/resp-corpus fuzz/resp-corpus-work \
    fuzz/RespParserFuzz.swift Examples/resp/RESP/*.swift
