#!/usr/bin/env bash
# Builds the upgrade hand-over wire decoder's libFuzzer target and runs it for a bounded time.
#
# Usage: fuzz/run-upgrade.sh [SECONDS]     (default 30)
#
# Seeds come from fuzz/corpus-upgrade (committed); what the fuzzer finds goes to
# fuzz/corpus-work-upgrade, a crashing input to fuzz/out/crash-* (both ignored by git).
# Exits non-zero if the build fails or the fuzzer finds a crash (the target traps when the
# decoder holds more than it was given or decodes its own re-encoding differently).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
fuzz_arguments "$@"   # --help prints the header above; at most one argument, SECONDS (fuzz/lib.sh)
cd "$(dirname "$0")/.."

fuzz_target "${1:-30}" upgrade-wire-fuzz UpgradeWireFuzz 4096 fuzz/corpus-upgrade fuzz/corpus-work-upgrade \
    fuzz/UpgradeWireFuzz.swift Sources/ZeroDropUpgrade/UpgradeWire.swift Sources/ZeroDropUpgrade/ConnectionRecord.swift \
    Sources/ZeroDropUpgrade/ListenerRecord.swift Sources/ZeroDropUpgrade/HandOverStream.swift \
    Sources/ZeroDropUpgrade/SockaddrBytes.swift
