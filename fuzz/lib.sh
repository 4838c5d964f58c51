# Shared by the fuzz/*.sh scripts: builds one libFuzzer target with swiftc and runs it for a
# bounded time. Source it, then call
#   fuzz_target SECONDS NAME MODULE MAX_LEN CORPUS WORK SOURCE...
# Seeds come from CORPUS (committed, read-only here); inputs the fuzzer finds go to WORK, and a
# crashing input to fuzz/out/crash-* (both ignored by git). Exits non-zero if the build fails or
# the fuzzer finds a crash (the targets trap on any disagreement with their model).
# fuzz_arguments "$@": the scripts' one optional argument, SECONDS; --help prints the calling
# script's header comment (up to its `set -euo pipefail` line) and exits 0; anything else exits 2.
fuzz_arguments() {
    case "${1:-}" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
    esac
    case "$#:${1:-}" in
        0:|1:[0-9]*) ;;
        *) echo "$(basename "$0"): takes at most one argument, SECONDS (a whole number), not: $* (see --help)" >&2; exit 2 ;;
    esac
}

fuzz_target() {
    local seconds=$1 name=$2 module=$3 max_len=$4 corpus=$5 work=$6
    shift 6
    case "$seconds" in
        ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
    esac
    export PATH="/opt/swift/usr/bin:$PATH"
    local out=fuzz/out
    mkdir -p "$out" "$work"

    echo "building $out/$name (swiftc -sanitize=fuzzer,address)"
    swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name "$module" "$@" -o "$out/$name"

    echo "fuzzing for ${seconds}s"
    local status=0
    # The Swift runtime's own crash backtracer can outlive the crashed process and hold the output
    # pipe open; libFuzzer's deadly-signal handler reports the crash and the stack by itself.
    SWIFT_BACKTRACE=enable=no "$out/$name" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        -artifact_prefix="$out/" -print_final_stats=1 \
        "$work" "$corpus" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "$0: the fuzzer failed (status $status); reproduce with: $out/$name $out/crash-*" >&2
        exit "$status"
    fi
    echo "$0: no crash in ${seconds}s"
}
