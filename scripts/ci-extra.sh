#!/usr/bin/env bash
# The CI passes after `swift test`: documentation, HAProxy in front of two instances, 60 s of
# fuzzing, a 60 s soak, and the test suite under AddressSanitizer. Cheapest first, so a broken
# build fails fast. Each step exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "documentation: swift package generate-documentation --target Reactor"
if ! swift package --scratch-path .build-docs generate-documentation --target Reactor >/tmp/reflectd-docs.log 2>&1; then
    tail -40 /tmp/reflectd-docs.log
    exit 1
fi
grep -E "warning:" /tmp/reflectd-docs.log | sort -u || true
tail -2 /tmp/reflectd-docs.log

step "HAProxy (TCP mode) in front of two reflectd instances"
scripts/haproxy-check.sh

step "upgrade without dropping connections (SIGUSR2 hand-over through the binary)"
swift build --product reflectd >/dev/null
scripts/upgrade-check.py .build/debug/reflectd
if command -v systemd-analyze >/dev/null 2>&1; then
    unit_dir=$(mktemp -d)
    sed "s|/usr/local/bin/reflectd|$PWD/.build/debug/reflectd|" deploy/reflectd.service >"$unit_dir/reflectd.service"
    cp deploy/reflectd.socket "$unit_dir/"
    systemd-analyze verify "$unit_dir/reflectd.service"
    rm -rf "$unit_dir"
fi

step "fuzzing the exit-line detector for 60 s"
fuzz/run.sh 60

step "soak: 60 s of mixed clients against a release build"
benchmarks/soak.sh --seconds 60

step "test suite under AddressSanitizer"
scripts/sanitizers.sh
