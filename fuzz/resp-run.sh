#!/usr/bin/env bash
# Builds the RESP request parser's libFuzzer target and runs it for a bounded time.
#
#   fuzz/resp-run.sh [SECONDS]     (default 30)
#
# Seeds come from fuzz/resp-corpus (committed, read-only here); inputs the fuzzer finds go to
# fuzz/resp-corpus-work, and a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a disagreement traps).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
case "$seconds" in
    ''|*[!0-9]*) echo "usage: fuzz/resp-run.sh [SECONDS]" >&2; exit 2 ;;
esac
export PATH="/opt/swift/usr/bin:$PATH"
out=fuzz/out
work=fuzz/resp-corpus-work
mkdir -p "$out" "$work"

echo "building $out/resp-parser-fuzz (swiftc -sanitize=fuzzer,address)"
swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name RespParserFuzz \
    fuzz/RespParserFuzz.swift Examples/resp/RESP/*.swift \
    -o "$out/resp-parser-fuzz"

echo "fuzzing for ${seconds}s"
status=0
SWIFT_BACKTRACE=enable=no "$out/resp-parser-fuzz" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -artifact_prefix="$out/" -print_final_stats=1 \
    "$work" fuzz/resp-corpus || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz/resp-run.sh: the fuzzer failed (status $status); reproduce with: $out/resp-parser-fuzz $out/crash-*" >&2
    exit "$status"
fi
echo "fuzz/resp-run.sh: no crash in ${seconds}s"
