#!/usr/bin/env bash
# Soak test: reflectd under a mix of well-behaved and hostile clients for a bounded time, then
# checks that nothing was lost or leaked. Loopback only.
#
# Usage: benchmarks/soak.sh [--minutes N | --seconds N] [--binary PATH] [--reactors N] [-- SOAK_PY_ARGS...]
#
#   --minutes N    drive time in minutes, warm-up included (default 5)
#   --seconds N    the same in seconds (for short runs; CI uses --seconds 60)
#   --binary PATH  use this reflectd instead of building one (swift build -c release, .build-soak)
#   --reactors N   reactor threads for reflectd (default 2, so the multi-reactor path is soaked)
#   anything after `--` goes to benchmarks/soak.py (see benchmarks/soak.py --help)
#
# Starts reflectd on 127.0.0.1 --port 0, drives it with benchmarks/soak.py (long-lived verifying
# echo clients, connect/close churn, resetting clients, clients that never read, half-closing
# clients, all at once), prints a summary (connections, bytes, RSS, fd counts), stops reflectd
# with SIGTERM and expects exit status 0. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

seconds=300
binary=""
reactors=2
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) seconds=$(( ${2:?--minutes needs a number} * 60 )); shift ;;
        --seconds) seconds=${2:?--seconds needs a number}; shift ;;
        --binary) binary=${2:?--binary needs a path}; shift ;;
        --reactors) reactors=${2:?--reactors needs a number}; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$seconds" in ''|*[!0-9]*) echo "soak.sh: seconds must be a whole number" >&2; exit 2 ;; esac
[ "$seconds" -ge 10 ] || { echo "soak.sh: at least 10 seconds" >&2; exit 2; }

if [ -z "$binary" ]; then
    echo "soak.sh: building reflectd (release, .build-soak)"
    swift build -c release --product reflectd --scratch-path .build-soak 2>&1 | tail -3
    binary=.build-soak/release/reflectd
fi
[ -x "$binary" ] || { echo "soak.sh: $binary is not an executable" >&2; exit 2; }

work=$(mktemp -d /tmp/reflectd-soak.XXXXXX)
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$binary" --host 127.0.0.1 --port 0 --reactors "$reactors" --log-level warning \
    >"$work/stdout" 2>"$work/stderr" &
pid=$!
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/stdout" | head -1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "soak.sh: reflectd did not announce its port" >&2
    cat "$work/stdout" "$work/stderr" >&2
    exit 1
fi
echo "soak.sh: $binary (pid $pid, $reactors reactors) on 127.0.0.1:$port for ${seconds}s"

status=0
# Hard bound on the driver: its own phases end at `seconds` plus settling and timeouts.
timeout --signal=KILL $(( seconds + 240 )) \
    python3 benchmarks/soak.py --pid "$pid" --port "$port" --seconds "$seconds" "${extra[@]}" || status=$?

if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "soak.sh: FAIL: reflectd did not exit within 10 s of SIGTERM" >&2
        status=1
    else
        wait "$pid" && server_status=0 || server_status=$?
        pid=""
        if [ "$server_status" -ne 0 ]; then
            echo "soak.sh: FAIL: reflectd exited with status $server_status after SIGTERM" >&2
            status=1
        fi
    fi
else
    echo "soak.sh: FAIL: reflectd is gone" >&2
    status=1
fi
if [ -s "$work/stderr" ]; then
    echo "soak.sh: reflectd stderr ($(wc -l <"$work/stderr") lines, last 20):"
    tail -20 "$work/stderr"
fi
if [ "$status" -eq 0 ]; then echo "soak.sh: PASS"; else echo "soak.sh: FAIL (status $status)"; fi
exit "$status"
