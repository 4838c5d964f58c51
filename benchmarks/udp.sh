#!/usr/bin/env bash
# UDP echo: reflectd --udp against a naive C loop (recvfrom + sendto per datagram, what inetd
# does), a C recvmmsg/sendmmsg loop (the practical one-core limit), Go net (ReadFrom/WriteTo in
# one goroutine; skipped with a note if `go` is missing) and socat (UDP-RECVFROM,fork EXEC:/bin/cat,
# a fork and an exec per datagram: only at a low fixed rate). Server pinned to CPU 0, load
# (benchmarks/tools/udp_load.c) on CPU 1, 64-byte datagrams, 16 client sockets.
#   - saturation: 8 datagrams in flight per socket (closed loop);
#   - fixed rate: RATE datagrams per second offered in all (open loop);
#   - low fixed rate: 2,000 datagrams per second (naive, Go, socat);
#   - GSO/GRO: a client that sends 8 x 64-byte datagrams per sendmsg with UDP_SEGMENT, against one
#     that sends them one by one (16 in flight per socket either way), to reflectd, the recvmmsg
#     loop and the recvmmsg loop with UDP_GRO on its socket (it echoes a GRO'd buffer with one
#     UDP_SEGMENT sendmsg). Interleaved, 3 rounds, medians.
# Reports datagrams per second and server CPU per datagram (utime + stime of the server and of its
# reaped children, from /proc/PID/stat, 10 ms ticks, over the whole run), and both as ratios to
# the naive loop. reflectd runs twice: with --udp-rate 0 (no limiter) and with a limit it never
# reaches (the limiter's cost). Writes benchmarks/results/DATE-udp.md.
#
# Usage: benchmarks/udp.sh [--no-build] [SECONDS] [RATE]
#        SECONDS per run (default 5), RATE the fixed offered rate (default 50000).
set -euo pipefail
command_line="benchmarks/udp.sh${*:+ $*}"
build=1
positional=()
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        --no-build) build=0 ;;
        -*) echo "udp.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
        *) positional+=("$argument") ;;
    esac
done
[ "${#positional[@]}" -le 2 ] || { echo "udp.sh: too many arguments (see --help)" >&2; exit 2; }
seconds=${positional[0]:-5}
rate=${positional[1]:-50000}
low_rate=2000
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
if [ "$build" = 1 ]; then
    swift build -c release --product reflectd >&2
fi
make -s -C benchmarks/baselines/c-udp >&2
cc -O2 -Wall -Wextra -o benchmarks/tools/udp_load benchmarks/tools/udp_load.c
go_note=""
if command -v go >/dev/null; then
    (cd benchmarks/baselines/go-udp && go build -o go-udp main.go) >&2
else
    go_note="Go net: skipped, no \`go\` on this machine."
fi
reflectd="$(swift build -c release --show-bin-path)/reflectd"
load=benchmarks/tools/udp_load
work=$(mktemp -d)
: >"$work/repeated"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

ticks=$(getconf CLK_TCK)
# utime + stime + the reaped children's (socat forks one per datagram)
cpu_ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat"; }

# measure NAME MODE(sat|rate|low|plain|gso) COMMAND...: prints "name mode pps us_per_datagram received sent".
# A run that got nothing at all back (seen on this shared machine: the server used no CPU, so no
# datagram reached it) is run once more, and counted in the results.
measure() {
    local line
    line=$(measure_once "$@")
    if awk '{ exit !($5 == 0) }' <<<"$line"; then
        echo "$1 $2: nothing echoed, running it once more" >&2
        echo "$1 $2" >>"$work/repeated"
        line=$(measure_once "$@")
    fi
    echo "$line"
}
measure_once() {
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
    case $mode in
        sat) result=$(taskset -c 1 "$load" "$port" "$seconds" 16 8 64 0) ;;
        rate) result=$(taskset -c 1 "$load" "$port" "$seconds" 16 8 64 "$rate") ;;
        low) result=$(taskset -c 1 "$load" "$port" "$seconds" 16 8 64 "$low_rate") ;;
        plain) result=$(taskset -c 1 "$load" "$port" "$seconds" 16 16 64 0 1) ;;
        gso) result=$(taskset -c 1 "$load" "$port" "$seconds" 16 16 64 0 8) ;;
    esac
    after=$(cpu_ticks "$server_pid")
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    local sent received
    sent=$(sed 's/.*sent=\([0-9]*\).*/\1/' <<<"$result")
    received=$(sed 's/.*received=\([0-9]*\).*/\1/' <<<"$result")
    awk -v n="$name" -v m="$mode" -v s="$seconds" -v r="$received" -v t="$sent" -v c="$((after - before))" -v hz="$ticks" \
        'BEGIN { printf "%s %s %.0f %.3f %d %d\n", n, m, r / s, (c / hz) * 1e6 / (r > 0 ? r : 1), r, t }'
}

servers=(naive mmsg reflectd reflectd-limiter)
[ -z "$go_note" ] && servers+=(go)
free_port() { python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
command_of() {
    case $1 in
        naive) echo benchmarks/baselines/c-udp/udp_naive 0 ;;
        mmsg) echo benchmarks/baselines/c-udp/udp_mmsg 0 ;;
        mmsg-gro) echo benchmarks/baselines/c-udp/udp_mmsg 0 gro ;;
        go) echo benchmarks/baselines/go-udp/go-udp 0 ;;
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
low_servers=(naive)
[ -z "$go_note" ] && low_servers+=(go)
command -v socat >/dev/null && low_servers+=(socat)
for s in "${low_servers[@]}"; do
    if [ "$s" = socat ]; then
        measure socat low bash -c "echo listening on udp 127.0.0.1:\$0; exec socat UDP-RECVFROM:\$0,bind=127.0.0.1,fork EXEC:/bin/cat" "$(free_port)" | tee -a "$work/results" >&2
    else
        # shellcheck disable=SC2046
        measure "$s" low $(command_of "$s") | tee -a "$work/results" >&2
    fi
done
# GSO/GRO: interleaved rounds (the machine is shared: medians of 3)
: >"$work/gso"
for round in 1 2 3; do
    for s in reflectd mmsg mmsg-gro; do
        for client in plain gso; do
            # shellcheck disable=SC2046
            measure "$s" "$client" $(command_of "$s") | sed "s/^/$round /" | tee -a "$work/gso" >&2
        done
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
    echo "Command: \`$command_line\`"
    echo
    echo "64-byte datagrams, 16 client sockets on 127.0.0.1; server on CPU 0, load on CPU 1; $seconds s per run,"
    echo "one run each. $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'). Kernel $(uname -r)."
    echo "Load average when it finished (other work on the machine makes runs noisy): $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "CPU per datagram = server utime + stime over the run / datagrams echoed (10 ms ticks)."
    echo
    for mode in sat rate low; do
        case $mode in
            sat) echo "## Saturation (8 in flight per socket, closed loop)" ;;
            rate) echo "## Fixed rate ($rate datagrams/s offered)" ;;
            low) echo "## Low fixed rate ($low_rate datagrams/s offered; socat forks and execs /bin/cat per datagram)" ;;
        esac
        echo
        echo "| server | datagrams/s | × naive | µs CPU / datagram | × naive | × recvmmsg loop | echoed / sent |"
        echo "|---|---|---|---|---|---|---|"
        awk -v m="$mode" '$2 == m { n[$1] = $3; c[$1] = $4; r[$1] = $5; t[$1] = $6; order[++k] = $1 }
            END { for (i = 1; i <= k; i++) { s = order[i];
                printf "| %s | %d | %.2f | %.3f | %.2f | %s | %d / %d |\n", s, n[s], n[s] / n["naive"], c[s], c[s] / c["naive"], ("mmsg" in c) ? sprintf("%.2f", c[s] / c["mmsg"]) : "-", r[s], t[s] } }' "$work/results"
        echo
    done
    [ -n "$go_note" ] && { echo "$go_note"; echo; }
    echo "## GSO/GRO (16 in flight per socket; client sends one by one, or 8 per sendmsg with UDP_SEGMENT)"
    echo
    echo "Medians of 3 interleaved rounds ($seconds s each). CPU per datagram counts each echoed 64-byte segment."
    echo
    echo "| server | client | datagrams/s | µs CPU / datagram | × same server, one-by-one client | × recvmmsg loop, one-by-one client | µs CPU / datagram, each round |"
    echo "|---|---|---|---|---|---|---|"
    awk '{ key = $2 " " $3; p[key] = p[key] " " $4; c[key] = c[key] " " $5; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
        function median(list,   a, n, i, j, x) { n = split(list, a, " ")
            for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
            return a[int((n + 1) / 2)] }
        END { for (i = 1; i <= k; i++) { key = order[i]; mc[key] = median(c[key]); mp[key] = median(p[key]) }
              for (i = 1; i <= k; i++) { key = order[i]; split(key, f, " ")
                  printf "| %s | %s | %d | %.3f | %.2f | %.2f |%s |\n", f[1], (f[2] == "gso" ? "GSO, 8 per sendmsg" : "one by one"), mp[key], mc[key], mc[key] / mc[f[1] " plain"], mc[key] / mc["mmsg plain"], c[key] } }' "$work/gso"
    echo
    if [ -s "$work/repeated" ]; then
        echo "Runs that echoed nothing at all and were run once more: $(paste -sd, "$work/repeated" | sed 's/,/, /g')."
        echo
    fi
    [ -n "$counts" ] && printf '%s' "$counts"
} >"$out"
cat "$out"
