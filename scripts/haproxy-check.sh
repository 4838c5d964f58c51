#!/usr/bin/env bash
# HAProxy in front of two reflectd instances, on loopback:
#   1. echo works through HAProxy (and both instances get connections);
#   2. one instance is stopped (SIGTERM, exits 0): 50 new connections made at once all echo
#      (HAProxy retries and redispatches a refused connect), and so do 50 more once the health
#      check has marked the instance down.
# The HAProxy config is deploy/haproxy.cfg with loopback addresses and ports substituted.
#
# Usage: scripts/haproxy-check.sh            (REFLECTD=/path/to/reflectd to choose the binary;
#                                             otherwise the newest .build*/{release,debug}/reflectd)
# Needs: haproxy (installed with apt-get if missing), python3. Exits non-zero on any failure.
# Bounded: the whole run is killed after 60 s.
set -euo pipefail
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "haproxy-check.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "${HAPROXY_CHECK_BOUNDED:-}" ]; then
    export HAPROXY_CHECK_BOUNDED=1
    exec timeout --kill-after=5 60 "$0" "$@"
fi

cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '[haproxy-check %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

# --- what we need ----------------------------------------------------------------------------

if ! command -v haproxy >/dev/null 2>&1; then
    log "installing haproxy"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq haproxy >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }
fi
command -v haproxy >/dev/null 2>&1 || fail "haproxy is not installed and could not be installed"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed for the echo client"

if [ -z "${REFLECTD:-}" ]; then
    # The newer of .build/release and .build/debug; failing those, the newest under other .build* dirs.
    REFLECTD=$(ls -t .build/release/reflectd .build/debug/reflectd 2>/dev/null | head -n 1 || true)
    [ -n "$REFLECTD" ] || REFLECTD=$(ls -t .build*/release/reflectd .build*/debug/reflectd 2>/dev/null | head -n 1 || true)
fi
[ -n "${REFLECTD:-}" ] && [ -x "$REFLECTD" ] || fail "no reflectd binary: build it (swift build) or set REFLECTD"
log "reflectd: $REFLECTD"
log "$(haproxy -v | head -n 1)"

work=$(mktemp -d /tmp/reflectd-haproxy-check.XXXXXX)
pids=()
cleanup() {
    status=$?
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ]; then
        for f in "$work"/*.err "$work"/*.out "$work"/haproxy.log; do
            [ -s "$f" ] && { echo "--- $f (last 20 lines)"; tail -n 20 "$f"; }
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 124' TERM INT HUP PIPE

# --- the echo client -------------------------------------------------------------------------

cat >"$work/echo_client.py" <<'PY'
# usage: echo_client.py HOST PORT COUNT TAG [CONCURRENT]
# COUNT connections, each sends one unique line and must get exactly it back within 5 s.
import socket, sys, threading
host, port, count, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
concurrent = len(sys.argv) > 5 and sys.argv[5] == "concurrent"
failures = []
def one(i):
    message = f"{tag} {i} {'x' * (i % 50)}\n".encode()
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(5)
            s.sendall(message)
            got = b""
            while len(got) < len(message):
                chunk = s.recv(len(message) - len(got))
                if not chunk:
                    raise RuntimeError(f"EOF after {len(got)} of {len(message)} bytes")
                got += chunk
            if got != message:
                raise RuntimeError(f"wrong echo {got!r}")
    except Exception as e:
        failures.append(f"connection {i}: {e}")
if concurrent:
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads: t.start()
    for t in threads: t.join(15)
else:
    for i in range(count): one(i)
for f in failures[:10]: print(f, file=sys.stderr)
print(f"{tag}: {count - len(failures)}/{count} connections echoed")
sys.exit(1 if failures else 0)
PY
echo_through() { python3 "$work/echo_client.py" 127.0.0.1 "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- two reflectd instances ------------------------------------------------------------------

declare -A port_of pid_of metrics_of
# deploy/haproxy.cfg sends a PROXY v2 header (send-proxy-v2): reflectd must expect it.
proxy_flag=()
grep -Eq '^[[:space:]]*default-server .*send-proxy' deploy/haproxy.cfg && proxy_flag=(--proxy-protocol)
for name in r1 r2; do
    "$REFLECTD" --host 127.0.0.1 --port 0 --metrics-port 0 --log-level info "${proxy_flag[@]}" >"$work/$name.out" 2>"$work/$name.err" &
    pid=$!
    pids+=("$pid")
    pid_of[$name]=$pid
    for _ in $(seq 100); do
        grep -q '^listening on ' "$work/$name.out" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || fail "$name exited before listening"
        sleep 0.1
    done
    line=$(grep -m 1 '^listening on ' "$work/$name.out") || fail "$name printed no listening line within 10 s"
    port_of[$name]=${line##*:}
    # On stdout after the listening lines since 0.2.0 (an info log line before).
    for _ in $(seq 20); do
        grep -q -h 'metrics on http://' "$work/$name.out" "$work/$name.err" 2>/dev/null && break
        sleep 0.1
    done
    metrics_of[$name]=$(grep -o -h -m 1 'metrics on http://[^ ]*' "$work/$name.out" "$work/$name.err" | sed -n '1s/^metrics on //p') \
        || fail "$name did not print its metrics URL"
    log "$name: pid $pid, $line, ${metrics_of[$name]}"
done

# --- HAProxy with a config derived from deploy/haproxy.cfg ------------------------------------

front=$(free_port)
awk -v front="$front" -v p1="${port_of[r1]}" -v p2="${port_of[r2]}" '
    # No privileges, chroot, admin socket, daemon mode or syslog on a test machine.
    /^[[:space:]]*(user|group|chroot|daemon|pidfile)([[:space:]]|$)/ { next }
    /^[[:space:]]*stats socket/ { next }
    # Connection logs and server state changes go to stderr (HAProxy runs in the foreground).
    /^[[:space:]]*log \// { print "    log stderr format raw local0 info"; next }
    # Loopback only: the frontend on the chosen port, the servers on the two instances.
    /^[[:space:]]*bind / { print "    bind 127.0.0.1:" front; next }
    /^[[:space:]]*server / {
        if (!servers_done) {
            print "    server reflectd1 127.0.0.1:" p1
            print "    server reflectd2 127.0.0.1:" p2
            servers_done = 1
        }
        next
    }
    { print }
' deploy/haproxy.cfg >"$work/haproxy.cfg"
grep -q "bind 127.0.0.1:$front" "$work/haproxy.cfg" || fail "could not substitute the frontend address in the config"
[ "$(grep -c '^    server ' "$work/haproxy.cfg")" -eq 2 ] || fail "could not substitute the servers in the config"
haproxy -c -q -f "$work/haproxy.cfg" || fail "the derived config is invalid: $(haproxy -c -f "$work/haproxy.cfg" 2>&1)"
inter=$(grep -o 'inter [0-9]*s' "$work/haproxy.cfg" | head -n 1 | grep -o '[0-9]*' || echo 2)
fall=$(grep -o 'fall [0-9]*' "$work/haproxy.cfg" | head -n 1 | grep -o '[0-9]*' || echo 3)

# The config's own maxconn, under the fd hard limit it promises to fit (HAProxy raises its limit
# to about 2 x maxconn at start and refuses to start above the hard limit; `haproxy -c` does not
# check that).
haproxy_fds=20000
prlimit --nofile="$haproxy_fds:$haproxy_fds" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $front), timeout=1).close()" 2>/dev/null && break
    kill -0 "$haproxy_pid" 2>/dev/null || fail "haproxy exited (fd limit $haproxy_fds): $(cat "$work/haproxy.log")"
    sleep 0.1
done
kill -0 "$haproxy_pid" 2>/dev/null || fail "haproxy exited (fd limit $haproxy_fds): $(cat "$work/haproxy.log")"
log "haproxy: pid $haproxy_pid on 127.0.0.1:$front in front of ports ${port_of[r1]} and ${port_of[r2]} (fd limit $haproxy_fds)"

# --- 1. echo through HAProxy -------------------------------------------------------------------

echo_through "$front" 40 before-stop || fail "echo through haproxy with both instances up"
echo_through "$front" 40 before-stop-concurrent concurrent || fail "concurrent echo through haproxy with both instances up"
# Health checks connect and send nothing, so bytes received show where the clients went.
received() {
    python3 - "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
print(next(int(float(l.split()[1])) for l in text.splitlines() if l.startswith("reflectd_bytes_received_total ")))
PY
}
for name in r1 r2; do
    bytes=$(received "${metrics_of[$name]}") || fail "cannot scrape ${metrics_of[$name]}"
    log "$name received $bytes bytes from clients through haproxy"
    [ "$bytes" -gt 0 ] || fail "$name received no client traffic through haproxy"
done

if [ ${#proxy_flag[@]} -gt 0 ]; then
    for name in r1 r2; do
        grep -q 'open 127\.0\.0\.1:[0-9]* via 127\.0\.0\.1:[0-9]* .*proxy=v2' "$work/$name.err" \
            || fail "$name did not log clients by their PROXY v2 address"
    done
    log "both instances logged clients by the address in HAProxy's PROXY v2 header"
fi

# --- 2. stop one instance: no new connection is lost -------------------------------------------

log "stopping r1 (SIGTERM)"
kill -TERM "${pid_of[r1]}"
status=0
for _ in $(seq 100); do kill -0 "${pid_of[r1]}" 2>/dev/null || break; sleep 0.1; done
kill -0 "${pid_of[r1]}" 2>/dev/null && fail "r1 still runs 10 s after SIGTERM"
wait "${pid_of[r1]}" || status=$?
[ "$status" -eq 0 ] || fail "r1 exited with status $status after SIGTERM"
log "r1 exited 0"

# At once, before any health check noticed: a refused connect is retried on the other server.
echo_through "$front" 50 right-after-stop || fail "new connections right after one instance stopped"
echo_through "$front" 20 right-after-stop-concurrent concurrent || fail "concurrent new connections right after one instance stopped"

# Once the health check has marked r1 down (fall x inter, plus a margin).
wait_s=$(( inter * fall + 1 ))
log "waiting ${wait_s} s for the health check to mark r1 down"
sleep "$wait_s"
grep -q 'reflectd1 is DOWN' "$work/haproxy.log" && log "haproxy marked reflectd1 DOWN" \
    || log "note: no 'reflectd1 is DOWN' line in haproxy's output (logging may be off); checking echo anyway"
echo_through "$front" 50 after-check || fail "new connections after the health check marked the instance down"

kill -0 "${pid_of[r2]}" 2>/dev/null || fail "r2 died"

# HAProxy's health checks (a PROXY v2 LOCAL header, then a reset, once per `inter`): counted under
# close reason `check` by a reflectd that has that reason, under `reset` by an older one.
closed_by_reason() {
    python3 - "$1" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for line in text.splitlines():
    m = re.match(r'reflectd_connections_closed_total\{reason="([a-z_-]+)"\} ([0-9.e+]+)$', line)
    if m: print(m.group(1), int(float(m.group(2))))
PY
}
closes=$(closed_by_reason "${metrics_of[r2]}") || fail "cannot scrape ${metrics_of[r2]}"
log "r2 closes by reason: $(echo $closes)"
checks=$(awk '$1 == "check" { print $2 }' <<<"$closes")
if [ -n "$checks" ]; then
    [ "$checks" -ge "$fall" ] || fail "r2 counted $checks closes with reason check after more than $((inter * fall)) s of health checks"
    log "r2 counted HAProxy's health checks under reason check ($checks)"
else
    log "note: this reflectd has no close reason check; HAProxy's health checks count as reset"
fi
log "PASS: echo through haproxy; stopping one of two instances lost no new connection"
