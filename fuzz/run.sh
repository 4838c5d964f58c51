#!/usr/bin/env bash
# Builds the exit-line libFuzzer target and runs it for a bounded time.
#
# Usage: fuzz/run.sh [SECONDS]     (default 60)
#
# Seeds come from fuzz/corpus (committed, read-only here); inputs the fuzzer finds go to
# fuzz/corpus-work, and a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a mismatch with the model traps).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
fuzz_arguments "$@"   # --help prints the header above; at most one argument, SECONDS (fuzz/lib.sh)
cd "$(dirname "$0")/.."

fuzz_target "${1:-60}" exitline-fuzz ExitLineFuzz 4096 fuzz/corpus fuzz/corpus-work \
    -I Sources/CScan fuzz/ExitLineFuzz.swift Sources/Echo/ExitLineDetector.swift Sources/Echo/LineStartScan.swift
