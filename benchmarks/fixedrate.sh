#!/usr/bin/env bash
# reflectd and the C epoll baseline at one fixed offered rate, side by side: an open-loop
# `reflect-bench pingpong --rate R --json` against each (server pinned to CPU 0 with taskset,
# reflect-bench on CPU 1), then `reflect-bench plot` of both summaries.
#
# Usage: benchmarks/fixedrate.sh [--rate R] [--connections N] [--depth D] [--duration S]
#                                [--warmup S] [--date YYYY-MM-DD] [--no-build]
#   --rate R         messages per second in all (default 20000)
#   --connections N  connections (default 100); --depth D messages in flight at most (default 4)
#   --duration S     seconds measured (default 10), after --warmup S (default 2)
#   --date D         the date in the file names (default: today, UTC)
#   --no-build       use the release binaries already built
#
# Writes benchmarks/results/DATE-fixed-rate-reflectd.json, DATE-fixed-rate-c-epoll.json,
# DATE-fixed-rate.svg and DATE-fixed-rate.md (the command, the machine and a table).
# Needs swift (release build of reflectd and reflect-bench), cc (benchmarks/baselines/build.sh
# builds the C server) and taskset, and two CPUs at least. reflectd runs with --exit-line off
# (binary payloads, as the C server: a pure echo) and one reactor.
set -euo pipefail
rate=20000 connections=100 depth=4 duration=10 warmup=2 date="$(date -u +%F)" build=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        --rate) rate="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        --depth) depth="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --date) date="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "fixedrate.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results=benchmarks/results
if [[ $build == 1 ]]; then
    swift build -c release --product reflectd >&2
    swift build -c release --product reflect-bench >&2
    benchmarks/baselines/build.sh >/dev/null
fi
bin="$(swift build -c release --show-bin-path)"
epoll=benchmarks/baselines/c-epoll/echo_epoll
[[ -x $epoll ]] || { cc -O2 -Wall -Wextra -o "$epoll" benchmarks/baselines/c-epoll/echo_epoll.c; }

# start_server NAME ARGV...: pinned to CPU 0; sets $pid and $port from its listening line.
start_server() {
    local name="$1" log; shift
    log="$(mktemp)"
    taskset -c 0 "$@" --port 0 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        port="$(grep -o 'listening on [^ ]*:[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
        [[ -n $port ]] && break
        sleep 0.1
    done
    [[ -n $port ]] || { echo "fixedrate.sh: $name did not say where it listens: $(cat "$log")" >&2; kill "$pid" 2>/dev/null; exit 1; }
    rm -f "$log"
}

# load LABEL OUT: the open-loop run against $port, pinned to CPU 1.
load() {
    taskset -c 1 "$bin/reflect-bench" pingpong --port "$port" --connections "$connections" --depth "$depth" \
        --rate "$rate" --warmup "$warmup" --duration "$duration" --label "$1" --quiet --json >"$2"
}

before="$(cut -d' ' -f1-3 /proc/loadavg)"
start_server reflectd "$bin/reflectd" --host 127.0.0.1 --reactors 1 --exit-line off --log-level warning
load "reflectd (1 reactor)" "$results/$date-fixed-rate-reflectd.json"
kill -TERM "$pid"; wait "$pid" || true
start_server c-epoll "$epoll"
load "C epoll baseline" "$results/$date-fixed-rate-c-epoll.json"
kill -TERM "$pid"; wait "$pid" || true
after="$(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/reflect-bench" plot "$results/$date-fixed-rate-reflectd.json" "$results/$date-fixed-rate-c-epoll.json" \
    --title "Echo latency at $rate msg/s ($connections connections, 64-byte messages)" -o "$results/$date-fixed-rate.svg"

# The table, from the two summaries.
python3 - "$results/$date-fixed-rate-reflectd.json" "$results/$date-fixed-rate-c-epoll.json" >"$results/$date-fixed-rate.md" <<PY
import json, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
print("# reflectd vs the C epoll baseline at a fixed rate ($date)\n")
print("Command: \`benchmarks/fixedrate.sh --rate $rate --connections $connections --depth $depth "
      "--duration $duration --warmup $warmup --date $date\`  ")
print("Server on CPU 0 (\`taskset -c 0\`), \`reflect-bench pingpong --rate $rate\` on CPU 1, release builds; "
      "$(nproc) CPUs, load average $before before, $after after.  ")
print("Latency counts from when each message was due (open loop); service time from when it went out.\n")
print("| server | achieved msg/s | late (generator's own) | unsent | p50 | p90 | p99 | p99.9 | max | service p50 | service p99 | generator CPU | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
us = lambda x: f"{x:.0f} µs" if x < 1000 else f"{x / 1000:.2f} ms"
for r in runs:
    l, s = r["latency_us"], r["service_us"]
    cpu = sum(r.get("thread_cpu_s", []))
    print(f"| {r['label']} | {r['achieved_rate']:.1f} | {r['late']} ({r['late_generator']}) | {r['unsent']} | {us(l['p50'])} "
          f"| {us(l['p90'])} | {us(l['p99'])} | {us(l['p99_9'])} | {us(l['max'])} | {us(s['p50'])} | {us(s['p99'])} "
          f"| {cpu:.2f} s | {r['errors']['total']} |")
print("\n`late`: sends more than 1 ms after they were due, of them `(generator's own)` those that had room in "
      "the pipeline but whose send reflect-bench itself made late (its timer woke late or it did not get the CPU). "
      "When most late sends are the generator's own, the tail above measures the generator and the machine as much "
      "as the server: compare the two servers with each other, not with other machines.")
print(f"\n![latency by percentile]($date-fixed-rate.svg)")
PY
cat "$results/$date-fixed-rate.md"
