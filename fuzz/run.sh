#!/usr/bin/env bash
# Builds the exit-line libFuzzer target and runs it for a bounded time.
#
#   fuzz/run.sh [SECONDS]     (default 60)
#
# Seeds come from fuzz/corpus (committed, read-only here); inputs the fuzzer finds go to
# fuzz/corpus-work, and a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a mismatch with the model traps).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
case "$seconds" in
    ''|*[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac
export PATH="/opt/swift/usr/bin:$PATH"
out=fuzz/out
work=fuzz/corpus-work
mkdir -p "$out" "$work"

echo "building $out/exitline-fuzz (swiftc -sanitize=fuzzer,address)"
swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name ExitLineFuzz \
    -I Sources/CScan fuzz/ExitLineFuzz.swift Sources/Echo/ExitLineDetector.swift Sources/Echo/LineStartScan.swift \
    -o "$out/exitline-fuzz"

echo "fuzzing for ${seconds}s"
status=0
# The Swift runtime's own crash backtracer can outlive the crashed process and hold the output
# pipe open; libFuzzer's deadly-signal handler reports the crash and the stack by itself.
SWIFT_BACKTRACE=enable=no "$out/exitline-fuzz" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -artifact_prefix="$out/" -print_final_stats=1 \
    "$work" fuzz/corpus || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz/run.sh: the fuzzer failed (status $status); reproduce with: $out/exitline-fuzz $out/crash-*" >&2
    exit "$status"
fi
echo "fuzz/run.sh: no crash in ${seconds}s"
