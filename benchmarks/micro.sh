#!/usr/bin/env bash
# Hot-path microbenchmarks that count instead of time, so they repeat exactly on a noisy VM:
#   - user-space instructions per echoed message (callgrind), reflectd vs the C baseline;
#   - user-space instructions per MB echoed on a binary bulk stream (callgrind), likewise;
#   - heap allocations per echoed message and per accepted connection (valgrind's heap summary).
# Each number is a difference between two runs of the same fixed workload with different sizes,
# so start-up and shutdown cancel out. Writes benchmarks/results/DATE-micro.md.
# Usage: benchmarks/micro.sh [--no-build]
#        benchmarks/micro.sh --per-message NAME=COMMAND...
#   --per-message: only the first count (user-space instructions per echoed 64-byte message), for
#   any servers: COMMAND is a server's command line, words split at spaces, to which `--port 0` is
#   appended; it must print `listening on ...:PORT`. Prints one line per server on stdout,
#   `NAME INSTRUCTIONS`, or `NAME n/a WHY` when the server did not run under valgrind. Builds
#   nothing and writes no report (benchmarks/run.sh uses it for its instructions column). The
#   profile is dumped (callgrind_control) before SIGTERM, for servers that callgrind cannot stop
#   cleanly (Go: also set GODEBUG=asyncpreemptoff=1, as run.sh does; see run.py).
set -euo pipefail
build=yes
per_message=()
mode=report
for argument in "$@"; do
    case "$argument" in
        --no-build) build=no ;;
        --per-message) mode=per-message; build=no ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *=*) [ "$mode" = per-message ] || { echo "micro.sh: NAME=COMMAND needs --per-message first (see --help)" >&2; exit 2; }
             per_message+=("$argument") ;;
        *) echo "micro.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done
[ "$mode" = report ] || [ ${#per_message[@]} -gt 0 ] || { echo "micro.sh: --per-message needs NAME=COMMAND (see --help)" >&2; exit 2; }
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }

if [ "$build" = yes ]; then
    swift build -c release --product reflectd >&2
    make -s -C benchmarks/baselines/c-epoll >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run TOOL NAME WORKLOAD ARG... -- SERVER ARGS: runs SERVER under valgrind TOOL, drives it with
# WORKLOAD, stops it with SIGTERM, and prints the output file.
run() {
    local tool=$1 name=$2 workload=$3 arg1=$4 arg2=$5; shift 5
    local out="$work/$name.out"
    local extra=()
    [ "$tool" = callgrind ] && extra=(--callgrind-out-file="$work/$name.cg")
    valgrind --tool="$tool" "${extra[@]}" --log-file="$work/$name.vg" "$@" --port 0 >"$out" 2>&1 &
    local pid=$!
    local port=""
    # Up to 60 s: an interpreter (uvloop's Python) starts slowly under valgrind.
    for _ in $(seq 300); do
        port=$(awk '/listening on/ && !n { sub(/.*:/, "", $NF); print $NF; n = 1 }' "$out")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    [ -n "$port" ] || { echo "server did not start: $(cat "$out")" >&2; exit 1; }
    python3 "benchmarks/tools/$workload" "$port" $arg1 $arg2 >/dev/null || { echo "$workload failed against $1 $name" >&2; kill -KILL "$pid"; exit 1; }
    # Per-message mode: dump the profile before stopping the server, for servers that do not
    # survive a signal under callgrind (Go: callgrind asserts in vgCallgrind_post_signal on
    # SIGTERM and writes nothing at exit). A dump zeroes the counters, so instructions() sums the
    # dump and the exit profile.
    if [ "$tool" = callgrind ] && [ "$mode" = per-message ]; then
        callgrind_control --dump "$pid" >/dev/null 2>&1 || true
    fi
    kill -TERM "$pid"
    local status=0
    wait "$pid" || status=$?
    echo "$status" >"$work/$name.status"
}
# awk reads to the end: with pipefail, `grep -m1` would kill the writer with SIGPIPE.
# The profile written at exit, plus in --per-message mode the dump taken before SIGTERM (NAME.cg.1);
# empty when none of them holds totals.
instructions() {
    local file total="" n
    for file in "$work/$1.cg" "$work/$1.cg".[0-9]*; do
        [ -s "$file" ] || continue
        n=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n { gsub(",", "", $1); print $1; n = 1 }')
        [ -n "$n" ] && total=$(( ${total:-0} + n ))
    done
    echo "$total"
}
allocs() { awk '/total heap usage/ && !n { v = $0; sub(/.*usage: /, "", v); sub(/ allocs.*/, "", v); gsub(",", "", v); print v; n = 1 }' "$work/$1.vg"; }

small=1; large=2001; conns=10       # ping-pong rounds per connection

# per_message_instructions NAME ARGV...: user-space instructions per echoed 64-byte message.
per_message_instructions() {
    local name=$1; shift
    run callgrind "$name-s" pingpong.py "$conns $small" 64 "$@"
    run callgrind "$name-l" pingpong.py "$conns $large" 64 "$@"
    local s l
    s=$(instructions "$name-s"); l=$(instructions "$name-l")
    if [ -z "$s" ] || [ -z "$l" ]; then
        # Say why: valgrind's own last words, or how the server ended (143: SIGTERM killed it
        # under valgrind before callgrind could write its profile, as Go's runtime does).
        local why
        why=$(grep -h -m1 -E 'Process terminating|VALGRIND INTERNAL ERROR|valgrind: the .impossible' "$work/$name-s.vg" "$work/$name-l.vg" 2>/dev/null | head -1 | sed 's/^==[0-9]*== //')
        echo "callgrind wrote no profile (exit status under valgrind: $(cat "$work/$name-s.status" 2>/dev/null) and $(cat "$work/$name-l.status" 2>/dev/null)${why:+; $why})" >&2
        return 1
    fi
    echo $(( (l - s) / (conns * (large - small)) ))
}

if [ "$mode" = per-message ]; then
    for spec in "${per_message[@]}"; do
        name=${spec%%=*}
        read -ra argv <<<"${spec#*=}"
        binary=${argv[0]}
        # valgrind 3.19 cannot read the DWARF 5 of Swift binaries: keep the symbols, drop the
        # debug info (a copy; other binaries, and interpreters, run as they are).
        if readelf -d "$binary" 2>/dev/null | grep -q 'libswiftCore'; then
            strip --strip-debug -o "$work/$name.bin" "$binary"
            argv[0]="$work/$name.bin"
        fi
        # In a subshell, so that one server that does not run under valgrind costs only its line.
        if count=$(per_message_instructions "$name" "${argv[@]}" 2>"$work/$name.err"); then
            echo "$name $count"
        else
            why=$(tr '\n' ' ' <"$work/$name.err" | cut -c1-200)
            echo "$name n/a valgrind run failed: ${why:-no output}"
        fi
    done
    exit 0
fi

# valgrind 3.19 cannot read the DWARF 5 of Swift binaries: keep the symbols, drop the debug info.
strip --strip-debug -o "$work/reflectd" "$(swift build -c release --show-bin-path)/reflectd"
c_server=benchmarks/baselines/c-epoll/echo_epoll
declare -A ir irmb al
for server in reflectd c; do
    if [ $server = reflectd ]; then argv=("$work/reflectd" --log-level warning); else argv=("$c_server"); fi
    run callgrind "$server-s" pingpong.py "$conns $small" 64 "${argv[@]}"
    run callgrind "$server-l" pingpong.py "$conns $large" 64 "${argv[@]}"
    ir[$server]=$(( ($(instructions $server-l) - $(instructions $server-s)) / (conns * (large - small)) ))
    # Bulk: 4 connections streaming random binary bytes; 4 x 32 MiB more in the large run.
    run callgrind "$server-bs" bulk.py "4 4" "" "${argv[@]}"
    run callgrind "$server-bl" bulk.py "4 36" "" "${argv[@]}"
    irmb[$server]=$(( ($(instructions $server-bl) - $(instructions $server-bs)) * 1000000 / (4 * 32 * 1048576) ))
done
run memcheck al-msg-s pingpong.py "$conns $small" 64 "$work/reflectd" --log-level warning
run memcheck al-msg-l pingpong.py "$conns $large" 64 "$work/reflectd" --log-level warning
msgs=$(( conns * (large - small) ))
alloc_per_msg=$(python3 -c "print(round(($(allocs al-msg-l) - $(allocs al-msg-s)) / $msgs, 4))")
run memcheck al-conn-s churn.py 10 "" "$work/reflectd" --log-level warning
run memcheck al-conn-l churn.py 510 "" "$work/reflectd" --log-level warning
alloc_per_conn=$(python3 -c "print(round(($(allocs al-conn-l) - $(allocs al-conn-s)) / 500, 3))")

date=$(date +%Y-%m-%d)
mkdir -p benchmarks/results
report="benchmarks/results/$date-micro.md"
cat >"$report" <<MD
# Hot-path microbenchmarks $date

Command: \`benchmarks/micro.sh\` (valgrind $(valgrind --version | sed 's/valgrind-//'), $(swift --version 2>&1 | head -1)).
Counts, not times: each is the difference between two runs of the same workload, divided by
the extra messages or connections, so start-up and shutdown cancel out.

| measure | reflectd | C epoll baseline | ratio |
|---|---|---|---|
| user-space instructions per echoed 64-byte message (callgrind, $conns connections, depth 1) | ${ir[reflectd]} | ${ir[c]} | $(python3 -c "print(f'{${ir[reflectd]}/${ir[c]}:.2f}×')") |
| user-space instructions per MB echoed, binary bulk stream (callgrind, 4 connections, exit line on) | ${irmb[reflectd]} | ${irmb[c]} | $(python3 -c "print(f'{${irmb[reflectd]}/${irmb[c]}:.0f}×')") |
| heap allocations per echoed message (steady state, $msgs messages) | $alloc_per_msg | – | |
| heap allocations per accepted connection (connect, echo, close; 500 connections) | $alloc_per_conn | – | |

Instructions are user space only (the kernel's share of a message, several µs, is not counted).
Workloads: \`benchmarks/tools/pingpong.py PORT $conns N 64\` with N = $small and $large rounds per
connection; \`benchmarks/tools/churn.py PORT N\` with N = 10 and 510; \`benchmarks/tools/bulk.py PORT 4 N\`
with N = 4 and 36 MiB per connection. A bulk MB costs reflectd its exit-line scan (the C server
does no scan), so that ratio is large however fast the scan is; the scan's share of the server's
CPU time is in \`run.sh\`'s bulk rows (exit line on vs off).
MD
cat "$report"
