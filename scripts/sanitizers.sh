#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer and, with --tsan, the threaded tests (every test
# that runs a reactor on its own thread, or starts reflectd, whose reactors run one per thread)
# under ThreadSanitizer. Exits non-zero if a test fails or a sanitizer reports.
#
# Usage: scripts/sanitizers.sh [--tsan | --tsan-only] [--filter REGEX]
#
#   scripts/sanitizers.sh                 ASan over the whole suite, then LeakSanitizer over the
#                                         in-process reactor tests        (scratch .build-asan)
#   scripts/sanitizers.sh --tsan          the same, then TSan over TSAN_FILTER (scratch .build-tsan)
#   scripts/sanitizers.sh --tsan-only     TSan only
#   scripts/sanitizers.sh --filter REGEX  restrict the ASan pass to REGEX (swift test --filter)
#
# Environment:
#   TSAN_FILTER   tests for the TSan pass (default: every ReactorTests and ReflectdTests test)
#   ASAN_SKIP     tests the ASan pass skips (default: the chat, resp-server and UDP rate-table
#                 tests that assert on RSS, which ASan's shadow memory and quarantine inflate by
#                 MBs to hundreds of MB: not a code bug)
#   LEAK_FILTER   tests for the leak pass (default: the in-process reactor tests)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

run_asan=1
run_tsan=0
asan_filter=""
tsan_filter=${TSAN_FILTER:-"^(ReactorTests|ReflectdTests)\."}
asan_skip=${ASAN_SKIP:-"testSlowReceiverIsDroppedWhileOthersReceiveEverything|testNeverReadingPipelinerIsBoundedByBackpressure|testMaxmemoryClientsClosesClientsWithTheLargestOutputAndBoundsTheServer|testMaxmemoryClientsCountsUnfinishedRequests|testAMillionForgedSourcesLeaveTheRateTableBounded|testTheRateTableStaysBoundedUnderManyDistinctSources"}
leak_filter=${LEAK_FILTER:-"^ReactorTests\.|ExitLinePropertyTests"}
while [ $# -gt 0 ]; do
    case "$1" in
        --tsan) run_tsan=1 ;;
        --tsan-only) run_tsan=1; run_asan=0 ;;
        --filter) shift; asan_filter=${1:?--filter needs a regex} ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "sanitizers.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

# The Swift runtime's crash backtracer can hang on a sanitizer abort and keep the output pipe
# open; the sanitizers print their own reports and stacks.
export SWIFT_BACKTRACE=enable=no
# Report every race (not just the first); the process still exits non-zero (66) if there was one.
export TSAN_OPTIONS=${TSAN_OPTIONS:-"halt_on_error=0:second_deadlock_stack=1"}
# Whole-suite ASan pass: memory errors only. LeakSanitizer would also report what Foundation,
# XCTest and the tools' child processes keep until exit; the leak pass below looks at our code.
asan_options=${ASAN_OPTIONS:-"halt_on_error=1:detect_leaks=0"}
# Leak pass: LeakSanitizer with the allocation stacks cut to 8 frames, so that a suppression
# matches only the allocating code, never the XCTest frames under every test.
leak_options="halt_on_error=1:detect_leaks=1:malloc_context_size=8"

status=0
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# build SANITIZER SCRATCH -> 0 if the tests built
build() {
    local sanitizer=$1 scratch=$2 start=$SECONDS log="$2/sanitizers-build.log"
    mkdir -p "$scratch"
    if ! swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" >"$log" 2>&1; then
        grep -E 'error:' "$log" | sort -u | head -40 || true
        tail -20 "$log"
        echo "sanitizers.sh: the --sanitize=$sanitizer build FAILED (full log: $log)"
        status=1
        return 1
    fi
    echo "built with --sanitize=$sanitizer in $((SECONDS - start)) s"
}

# run NAME SANITIZER SCRATCH FILTER SKIP
run() {
    local name=$1 sanitizer=$2 scratch=$3 filter=$4 skip=$5 start=$SECONDS
    step "$name: swift test --sanitize=$sanitizer${filter:+ --filter '$filter'}${skip:+ --skip '$skip'}"
    if ! swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" \
        ${filter:+--filter "$filter"} ${skip:+--skip "$skip"}; then
        echo "sanitizers.sh: the $name pass FAILED"
        status=1
    fi
    echo "$name pass: $((SECONDS - start)) s"
}

if [ "$run_asan" -eq 1 ]; then
    step "building the tests with AddressSanitizer (.build-asan)"
    if build address .build-asan; then
        ASAN_OPTIONS=$asan_options run AddressSanitizer address .build-asan "$asan_filter" "$asan_skip"
        # Known noise, matched in the innermost 8 frames only: XCTest's own test-case objects,
        # names and expectation bookkeeping, CoreFoundation arrays and file reads inside
        # Foundation, libcurl's globals. (Checked: a Reactor leaked on purpose is still reported.)
        suppressions=.build-asan/lsan-suppressions.txt
        cat >"$suppressions" <<'EOF'
leak:XCTMainMisc
leak:XCTest0A4CaseC4name11testClosure
leak:awaitUsingExpectation
leak:__CFArrayCreate
leak:readBytesFromFile
leak:readDataFromFile
leak:libcurl
EOF
        ASAN_OPTIONS=$leak_options LSAN_OPTIONS="suppressions=$suppressions:print_suppressions=0" \
            run LeakSanitizer address .build-asan "$leak_filter" ""
    fi
fi

if [ "$run_tsan" -eq 1 ]; then
    step "building the tests with ThreadSanitizer (.build-tsan)"
    if build thread .build-tsan; then
        run ThreadSanitizer thread .build-tsan "$tsan_filter" ""
    fi
fi

if [ "$status" -eq 0 ]; then echo "sanitizers.sh: clean"; fi
exit "$status"
