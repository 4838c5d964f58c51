#!/usr/bin/env bash
# Builds the PROXY protocol libFuzzer target and runs it for a bounded time.
#
# Usage: fuzz/run-proxy.sh [SECONDS]     (default 30)
#
# Seeds come from fuzz/corpus-proxy (committed); what the fuzzer finds goes to
# fuzz/corpus-work-proxy, a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a self-disagreement traps).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
fuzz_arguments "$@"   # --help prints the header above; at most one argument, SECONDS (fuzz/lib.sh)
cd "$(dirname "$0")/.."

fuzz_target "${1:-30}" proxy-fuzz ProxyFuzz 512 fuzz/corpus-proxy fuzz/corpus-work-proxy \
    fuzz/ProxyFuzz.swift Sources/ClientAdmission/ProxyProtocol.swift
