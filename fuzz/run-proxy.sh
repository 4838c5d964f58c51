#!/usr/bin/env bash
# Builds the PROXY protocol libFuzzer target and runs it for a bounded time.
#
#   fuzz/run-proxy.sh [SECONDS]     (default 30)
#
# Seeds come from fuzz/corpus-proxy (committed); what the fuzzer finds goes to
# fuzz/corpus-work-proxy, a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (a self-disagreement traps).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
case "$seconds" in
    ''|*[!0-9]*) echo "usage: fuzz/run-proxy.sh [SECONDS]" >&2; exit 2 ;;
esac
export PATH="/opt/swift/usr/bin:$PATH"
out=fuzz/out
work=fuzz/corpus-work-proxy
mkdir -p "$out" "$work"

echo "building $out/proxy-fuzz (swiftc -sanitize=fuzzer,address)"
swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name ProxyFuzz \
    fuzz/ProxyFuzz.swift Sources/Echo/ProxyProtocol.swift \
    -o "$out/proxy-fuzz"

echo "fuzzing for ${seconds}s"
status=0
SWIFT_BACKTRACE=enable=no "$out/proxy-fuzz" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=512 \
    -artifact_prefix="$out/" -print_final_stats=1 \
    "$work" fuzz/corpus-proxy || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz/run-proxy.sh: the fuzzer failed (status $status); reproduce with: $out/proxy-fuzz $out/crash-*" >&2
    exit "$status"
fi
echo "fuzz/run-proxy.sh: no crash in ${seconds}s"
