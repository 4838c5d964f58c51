#!/usr/bin/env bash
# Where reflectd's user-space instructions per echoed 64-byte message go: callgrind runs of the
# same depth-1 ping-pong with 1 and 2001 rounds per connection (10 connections), and for each
# function the difference of its inclusive cost (`callgrind_annotate --inclusive=yes`) divided by
# the 20,000 extra messages, so start-up and shutdown cancel out (the method of micro.sh).
# Usage: benchmarks/callgrind-breakdown.sh [REFLECTD-OPTION VALUE...]   (prints markdown to stdout;
#        the options passed on to reflectd: --exit-line, --exit-hold-ms, --max-connections-per-client,
#        --reactors, --idle-timeout, --send-timeout)
# WORKLOAD=churn measures a connect / one 64-byte echo / close cycle instead (churn.py, 10 and
# 510 sequential connections), per connection. SERVER=path runs another server (the C baseline:
# SERVER=benchmarks/baselines/c-epoll/echo_epoll) with no reflectd arguments.
# Needs a release build (swift build -c release) and valgrind.
set -euo pipefail
# The reflectd options it passes on, each with its value; anything else is refused.
passed=(--exit-line --exit-hold-ms --max-connections-per-client --reactors --idle-timeout --send-timeout)
arguments=("$@")
for ((k = 0; k < ${#arguments[@]}; k++)); do
    argument=${arguments[k]}
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
    esac
    if [[ " ${passed[*]} " == *" ${argument%%=*} "* ]]; then
        if [[ "$argument" != *=* ]]; then
            k=$((k + 1))
            [ "$k" -lt ${#arguments[@]} ] || { echo "callgrind-breakdown.sh: $argument needs a value (see --help)" >&2; exit 2; }
        fi
        continue
    fi
    echo "callgrind-breakdown.sh: unknown argument: $argument (it passes on only ${passed[*]}; see --help)" >&2
    exit 2
done
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# REFLECTD=path picks another build (e.g. a baseline), else this checkout's release build.
if [ -n "${SERVER:-}" ]; then
    server=("$SERVER")
else
    strip --strip-debug -o "$work/reflectd" "${REFLECTD:-$(swift build -c release --show-bin-path)/reflectd}"
    server=("$work/reflectd" --log-level warning "$@")
fi
if [ "${WORKLOAD:-pingpong}" = churn ]; then
    conns=1; small=10; large=510; unit="connection (connect, one 64-byte echo, close)"
else
    conns=10; small=1; large=2001; unit="echoed 64-byte message"
fi
for rounds in $small $large; do
    valgrind --tool=callgrind --callgrind-out-file="$work/$rounds.cg" --log-file="$work/$rounds.vg" \
        "${server[@]}" --port 0 >"$work/$rounds.out" 2>&1 &
    pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(awk '/listening on/ && !n { sub(/.*:/, "", $NF); print $NF; n = 1 }' "$work/$rounds.out")
        [ -n "$port" ] && break
        sleep 0.2
    done
    [ -n "$port" ] || { echo "server did not start" >&2; exit 1; }
    if [ "${WORKLOAD:-pingpong}" = churn ]; then
        python3 benchmarks/tools/churn.py "$port" $rounds >/dev/null
    else
        python3 benchmarks/tools/pingpong.py "$port" $conns $rounds 64 >/dev/null
    fi
    kill -TERM "$pid"; wait "$pid" || true
    callgrind_annotate --inclusive=yes --threshold=100 "$work/$rounds.cg" >"$work/$rounds.txt" 2>/dev/null
    callgrind_annotate --threshold=100 "$work/$rounds.cg" >"$work/$rounds.self.txt" 2>/dev/null
done
python3 - "$work" $small $large $(( conns * (large - small) )) "$unit" <<'PY'
import re, subprocess, sys
work, small, large, msgs, unit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
def load(path):
    costs, total = {}, 0
    for line in open(path):
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(.*?)\s*$", line)
        if not m or not m.group(2):
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = n
            continue
        name = m.group(2)
        name = re.sub(r"^\S*?:", "", name, count=1) if ":" in name.split(" ")[0] else name
        name = re.sub(r" \[[^\]]*\]$", "", name)
        costs[name] = costs.get(name, 0) + n
    return costs, total
def table(kind, title):
    s, ts = load(f"{work}/{small}{kind}.txt"); l, tl = load(f"{work}/{large}{kind}.txt")
    names = [n.strip() for n in l]
    demangled = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(names),
                               capture_output=True, text=True).stdout.splitlines() if names else []
    dm = dict(zip(names, demangled)) if len(demangled) == len(names) else {}
    rows = sorted(((l[n] - s.get(n, 0)) / msgs, n) for n in l)
    rows.reverse()
    print(f"\n## {title}\n")
    print(f"PROGRAM TOTALS per {unit}: {(tl - ts) / msgs:.1f} instructions ({msgs} more in the large run)\n")
    print("| Ir per unit | function |")
    print("|---:|---|")
    for v, n in rows:
        if v < 0.5:
            break
        label = dm.get(n.strip(), n).replace("|", "\\|")
        if len(label) > 160:
            label = label[:157] + "..."
        print(f"| {v:.1f} | `{label}` |")
table("", "Inclusive (callgrind_annotate --inclusive=yes)")
table(".self", "Self (exclusive)")
PY
