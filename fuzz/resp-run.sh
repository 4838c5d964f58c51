#!/usr/bin/env bash
# Builds the RESP request parser's libFuzzer target and runs it for a bounded time.
#
# Usage: fuzz/resp-run.sh [SECONDS]     (default 30)
#
# Seeds come from fuzz/resp-corpus (committed, read-only here); inputs the fuzzer finds go to
# fuzz/resp-corpus-work, and a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a disagreement traps).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
fuzz_arguments "$@"   # --help prints the header above; at most one argument, SECONDS (fuzz/lib.sh)
cd "$(dirname "$0")/.."

fuzz_target "${1:-30}" resp-parser-fuzz RespParserFuzz 8192 fuzz/resp-corpus fuzz/resp-corpus-work \
    fuzz/RespParserFuzz.swift Examples/resp/RESP/*.swift
