#!/usr/bin/env bash
# UDP echo: reflectd --udp against a naive C loop (recvfrom + sendto per datagram, what inetd
# does) and a C recvmmsg/sendmmsg loop (the practical one-core limit). Server pinned to CPU 0,
# load (benchmarks/tools/udp_load.c) on CPU 1, 64-byte datagrams, 16 client sockets.
#   - saturation: 8 datagrams in flight per socket (closed loop);
#   - fixed rate: RATE datagrams per second offered in all (open loop).
# Reports datagrams per second and server CPU per datagram (utime + stime from /proc/PID/stat,
# 10 ms ticks, over the whole run), and both as ratios to the naive loop. reflectd runs twice:
# with --udp-rate 0 (no limiter) and with a limit it never reaches (the limiter's cost).
# Writes benchmarks/results/DATE-udp.md.
# Usage: benchmarks/udp.sh [--no-build] [SECONDS] [RATE]     (defaults: 5 s, 50000 datagrams/s)
set -euo pipefail
build=1
positional=()
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        --no-build) build=0 ;;
        [0-9]*) positional+=("$argument") ;;
        *) echo "udp.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#positional[@]} -le 2 ] || { echo "udp.sh: at most SECONDS and RATE (see --help)" >&2; exit 2; }
seconds=${positional[0]:-5}
rate=${positional[1]:-50000}
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
if [ "$build" = 1 ]; then
    swift build -c release --product reflectd >&2
fi
make -s -C benchmarks/baselines/c-udp >&2
cc -O2 -Wall -Wextra -o benchmarks/tools/udp_load benchmarks/tools/udp_load.c
reflectd="$(swift build -c release --show-bin-path)/reflectd"
load=benchmarks/tools/udp_load
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure NAME MODE(sat|rate) COMMAND...: prints "name mode pps us_per_datagram received sent"
measure() {
    local name=$1 mode=$2; shift 2
    taskset -c 0 "$@" >"$work/out" 2>"$work/err" &
    server_pid=$!
    local port=""
    for _ in $(seq 100); do
        port=$(awk '/listening on udp/ { sub(/.*:/, "", $NF); print $NF; exit }' "$work/out")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$name did not start: $(cat "$work/out" "$work/err")" >&2; exit 1; }
    local before after result
    before=$(cpu_ticks "$server_pid")
    if [ "$mode" = sat ]; then
        result=$(taskset -c 1 "$load" "$port" "$seconds" 16 8 64 0)
    else
        result=$(taskset -c 1 "$load" "$port" "$seconds" 16 8 64 "$rate")
    fi
    after=$(cpu_ticks "$server_pid")
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    local sent received
    sent=$(sed 's/.*sent=\([0-9]*\).*/\1/' <<<"$result")
    received=$(sed 's/.*received=\([0-9]*\).*/\1/' <<<"$result")
    awk -v n="$name" -v m="$mode" -v s="$seconds" -v r="$received" -v t="$sent" -v c="$((after - before))" -v hz="$ticks" \
        'BEGIN { printf "%s %s %.0f %.3f %d %d\n", n, m, r / s, (c / hz) * 1e6 / (r > 0 ? r : 1), r, t }'
}

servers=(naive mmsg reflectd reflectd-limiter)
command_of() {
    case $1 in
        naive) echo benchmarks/baselines/c-udp/udp_naive 0 ;;
        mmsg) echo benchmarks/baselines/c-udp/udp_mmsg 0 ;;
        reflectd) echo "$reflectd" --host 127.0.0.1 --port 0 --udp --udp-rate 0 --log-level warning ;;
        reflectd-limiter) echo "$reflectd" --host 127.0.0.1 --port 0 --udp --udp-rate 10000000 --log-level warning ;;
    esac
}
: >"$work/results"
for mode in sat rate; do
    for s in "${servers[@]}"; do
        # shellcheck disable=SC2046
        measure "$s" "$mode" $(command_of "$s") | tee -a "$work/results" >&2
    done
done

# Counts that repeat exactly on a noisy machine, from two runs echoing 2,000 and 4,000 64-byte
# datagrams one at a time (so one datagram per wakeup, the worst case for batching); the
# difference is what the datagrams cost (start-up and shutdown cancel out):
#   - heap allocations per datagram (valgrind's heap summary), reflectd;
#   - user-space instructions per datagram (callgrind), each server.
counts=""
if command -v valgrind >/dev/null && command -v python3 >/dev/null; then
    # valgrind 3.19 cannot read the DWARF 5 of Swift binaries: keep the symbols, drop the debug info.
    strip --strip-debug -o "$work/reflectd" "$reflectd"
    # run_counted TOOL N COMMAND...: runs COMMAND under valgrind TOOL, echoes N datagrams through it.
    run_counted() {
        local tool=$1 n=$2; shift 2
        local extra=()
        [ "$tool" = callgrind ] && extra=(--callgrind-out-file="$work/cg.out")
        valgrind --tool="$tool" "${extra[@]}" --log-file="$work/vg.log" "$@" >"$work/vgout" 2>&1 &
        server_pid=$!
        local port=""
        for _ in $(seq 150); do
            port=$(awk '/listening on udp/ { sub(/.*:/, "", $NF); print $NF; exit }' "$work/vgout")
            [ -n "$port" ] && break
            sleep 0.2
        done
        python3 -c '
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
for i in range(n):
    s.sendto(bytes(64), ("127.0.0.1", port)); s.recvfrom(100)
' "$port" "$n"
        kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
        if [ "$tool" = callgrind ]; then
            sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/vg.log"
        else
            sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' "$work/vg.log" | tr -d ,
        fi
    }
    per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 2000 }'; }
    rd=("$work/reflectd" --host 127.0.0.1 --port 0 --udp --log-level warning)
    a2=$(run_counted memcheck 2000 "${rd[@]}" --udp-rate 0); a4=$(run_counted memcheck 4000 "${rd[@]}" --udp-rate 0)
    counts="Heap allocations (valgrind), reflectd: $a2 for 2,000 echoed datagrams, $a4 for 4,000: $(awk -v a="$a2" -v b="$a4" 'BEGIN { printf "%.4f", (b - a) / 2000 }') per datagram."$'\n\n'
    counts+="User-space instructions per datagram (callgrind, one datagram per wakeup):"$'\n\n'"| server | instructions / datagram |"$'\n'"|---|---|"$'\n'
    for s in naive mmsg reflectd reflectd-limiter; do
        case $s in
            naive) cmd=(benchmarks/baselines/c-udp/udp_naive 0) ;;
            mmsg) cmd=(benchmarks/baselines/c-udp/udp_mmsg 0) ;;
            reflectd) cmd=("${rd[@]}" --udp-rate 0) ;;
            reflectd-limiter) cmd=("${rd[@]}" --udp-rate 10000000) ;;
        esac
        i2=$(run_counted callgrind 2000 "${cmd[@]}"); i4=$(run_counted callgrind 4000 "${cmd[@]}")
        counts+="| $s | $(per "$i2" "$i4") |"$'\n'
    done
fi

date=$(date -u +%Y-%m-%d)
out="benchmarks/results/$date-udp.md"
{
    echo "# UDP echo, $date (benchmarks/udp.sh)"
    echo
    echo "64-byte datagrams, 16 client sockets on 127.0.0.1; server on CPU 0, load on CPU 1; $seconds s per run,"
    echo "one run each. $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'). Kernel $(uname -r)."
    echo "Load average when it finished (other work on the machine makes runs noisy): $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "CPU per datagram = server utime + stime over the run / datagrams echoed (10 ms ticks)."
    echo
    for mode in sat rate; do
        if [ "$mode" = sat ]; then echo "## Saturation (8 in flight per socket, closed loop)"; else echo "## Fixed rate ($rate datagrams/s offered)"; fi
        echo
        echo "| server | datagrams/s | × naive | µs CPU / datagram | × naive | × recvmmsg loop | echoed / sent |"
        echo "|---|---|---|---|---|---|---|"
        awk -v m="$mode" '$2 == m { n[$1] = $3; c[$1] = $4; r[$1] = $5; t[$1] = $6; order[++k] = $1 }
            END { for (i = 1; i <= k; i++) { s = order[i];
                printf "| %s | %d | %.2f | %.3f | %.2f | %.2f | %d / %d |\n", s, n[s], n[s] / n["naive"], c[s], c[s] / c["naive"], c[s] / c["mmsg"], r[s], t[s] } }' "$work/results"
        echo
    done
    [ -n "$counts" ] && printf '%s' "$counts"
} >"$out"
cat "$out"
