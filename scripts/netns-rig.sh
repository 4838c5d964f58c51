#!/usr/bin/env bash
# A multi-host rig on network namespaces: a client host, a balancer host running the real
# HAProxy with send-proxy-v2, and two reflectd hosts with --proxy-protocol, joined by veth pairs
# only (never bridged to a real interface):
#
#   rig-client 10.81.1.2 (+ .3) --veth-- 10.81.1.1 rig-lb 10.81.2.1 --veth-- 10.81.2.2 rig-r1
#                                                    10.81.3.1 --veth-- 10.81.3.2 rig-r2
#
# The client link is lossy and slow: nft drops 2 % of packets at random each way
# (`numgen random mod 100 < 2 drop`) and tbf limits it to RATE each way. netem is checked first;
# this kernel has none (the rig says so, and says so if that changes).
#
# Checks (each bounded; any failure exits non-zero):
#   1. 200 clients at once each echo 4 MiB byte-exact through the lossy path, every 5th ending
#      with the exit line; retransmits (nstat) and the time are reported;
#   2. the reflectd logs name the client host's address (10.81.1.2), with the balancer's beside it;
#   3. the per-client limit holds through the balancer: from 10.81.1.3, LIMIT connections to r1
#      echo, one more is accepted and closed (reason limit, in r1's log), and a place comes back;
#   4. reflectd on r2 is killed (SIGKILL) while 40 clients echo 4 MiB: its clients see reset or
#      EOF with every byte they got correct, the others complete, and 20 new clients all reach r1.
#
# Usage: scripts/netns-rig.sh   (as root; REFLECTD=path to choose the binary, else a release
#        build is made; RATE=400mbit CLIENTS=200 BYTES=4194304 to change the load)
# Namespaces refused (no root, no CAP_SYS_ADMIN, a sandbox): it says so and fails; it never skips.
set -euo pipefail
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "netns-rig.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "${NETNS_RIG_BOUNDED:-}" ]; then
    export NETNS_RIG_BOUNDED=1
    exec timeout --kill-after=10 300 "$0" "$@"
fi

cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
RATE=${RATE:-400mbit}
CLIENTS=${CLIENTS:-200}
BYTES=${BYTES:-4194304}
LIMIT=${LIMIT:-150}

log() { printf '[netns-rig %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
began=$(date +%s)

# --- what we need ----------------------------------------------------------------------------

missing=()
for tool in ip:iproute2 nft:nftables haproxy:haproxy tc:iproute2 nstat:iproute2 python3:python3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
for tool in ip nft haproxy tc nstat python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing and could not be installed"
done
if [ -z "${REFLECTD:-}" ]; then
    log "building reflectd (release)"
    swift build -c release --product reflectd 2>&1 | tail -1
    REFLECTD="$(swift build -c release --show-bin-path)/reflectd"
fi
[ -x "$REFLECTD" ] || fail "no reflectd binary at $REFLECTD"
log "$(haproxy -v | head -n 1); $(nft --version); kernel $(uname -r)"

# --- namespaces, always deleted --------------------------------------------------------------

tag="rig$$"
namespaces=("$tag-client" "$tag-lb" "$tag-r1" "$tag-r2")
work=$(mktemp -d /tmp/reflectd-netns-rig.XXXXXX)
pids=()
cleanup() {
    status=$?
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "$status" -ne 0 ]; then
        for f in "$work"/*.err "$work"/haproxy.log "$work"/*.json; do
            [ -s "$f" ] && { echo "--- $f (last 15 lines)"; tail -n 15 "$f"; }
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 124' TERM INT HUP PIPE

if ! err=$(ip netns add "$tag-client" 2>&1); then
    fail "network namespaces are refused here ($err): the rig needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN; it does not skip"
fi
for ns in "$tag-lb" "$tag-r1" "$tag-r2"; do ip netns add "$ns" || fail "cannot create namespace $ns"; done
on() { local ns=$1; shift; ip netns exec "$tag-$ns" "$@"; }
for ns in client lb r1 r2; do on "$ns" ip link set lo up; done

# veth NAME_A in NS_A with ADDR_A <-> NAME_B in NS_B with ADDR_B
link() {
    ip link add "$1" netns "$tag-$2" type veth peer name "$4" netns "$tag-$5" || fail "cannot create veth $1/$4"
    on "$2" ip addr add "$3" dev "$1"; on "$2" ip link set "$1" up
    on "$5" ip addr add "$6" dev "$4"; on "$5" ip link set "$4" up
}
link vcli client 10.81.1.2/24 vlb0 lb 10.81.1.1/24
on client ip addr add 10.81.1.3/24 dev vcli
link vlb1 lb 10.81.2.1/24 vr1 r1 10.81.2.2/24
link vlb2 lb 10.81.3.1/24 vr2 r2 10.81.3.2/24
on client ip link set vcli mtu 1500

# --- link faults -----------------------------------------------------------------------------

if on lb tc qdisc add dev vlb0 root netem loss 1% 2>/dev/null; then
    on lb tc qdisc del dev vlb0 root
    log "netem: AVAILABLE on this kernel now (it was not when this rig was written); loss still comes from nft"
else
    log "netem: not available on this kernel (tc: unknown qdisc); loss comes from nft numgen, rate from tbf"
fi
on lb nft -f - <<'NFT' || fail "cannot load the nft loss rules"
table inet rig {
    chain input { type filter hook input priority 0; iifname "vlb0" numgen random mod 100 < 2 counter drop; }
    chain output { type filter hook output priority 0; oifname "vlb0" numgen random mod 100 < 2 counter drop; }
}
NFT
on client tc qdisc add dev vcli root tbf rate "$RATE" burst 256kb latency 50ms || fail "tbf on the client link"
on lb tc qdisc add dev vlb0 root tbf rate "$RATE" burst 256kb latency 50ms || fail "tbf on the balancer link"
log "client link: 2 % random drop each way (nft), $RATE each way (tbf)"

# --- two reflectd hosts, one balancer --------------------------------------------------------

for host in r1 r2; do
    addr=$([ "$host" = r1 ] && echo 10.81.2.2 || echo 10.81.3.2)
    # ip netns exec execs the command, so $! is reflectd itself (a shell function would fork).
    ip netns exec "$tag-$host" "$REFLECTD" --host "$addr" --port 8887 --proxy-protocol --max-connections-per-client "$LIMIT" \
        --log-level info >"$work/$host.out" 2>"$work/$host.err" &
    pids+=($!)
    eval "pid_$host=$!"
    for _ in $(seq 100); do grep -q '^listening on ' "$work/$host.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '^listening on ' "$work/$host.out" || fail "reflectd on $host did not start: $(cat "$work/$host.err")"
    log "reflectd on $host: $(cat "$work/$host.out")"
done

cat >"$work/haproxy.cfg" <<'CFG'
global
    log stderr format raw local0 info
    maxconn 4000
defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout client-fin 30s
    timeout server-fin 30s
    timeout check 2s
    retries 3
    option redispatch 1
frontend echo
    bind 10.81.1.1:8887
    default_backend reflectd
# Only r1, so that the per-client limit check knows which host counts.
frontend echo-r1
    bind 10.81.1.1:8888
    default_backend reflectd-r1
backend reflectd
    balance leastconn
    default-server send-proxy-v2 check inter 1s fall 2 rise 2 maxconn 100000
    server r1 10.81.2.2:8887
    server r2 10.81.3.2:8887
backend reflectd-r1
    default-server send-proxy-v2 check inter 1s fall 2 rise 2
    server r1 10.81.2.2:8887
CFG
haproxy -c -q -f "$work/haproxy.cfg" || fail "haproxy config: $(haproxy -c -f "$work/haproxy.cfg" 2>&1)"
ip netns exec "$tag-lb" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    on client python3 -c "import socket; socket.create_connection(('10.81.1.1', 8887), timeout=1).close()" 2>/dev/null && break
    sleep 0.2
done
log "haproxy in rig-lb on 10.81.1.1:8887 (both hosts) and :8888 (r1 only), send-proxy-v2"

retransmits() { on "$1" nstat -az TcpRetransSegs | awk '/TcpRetransSegs/ { print $2 }'; }
drops() { on lb nft list table inet rig | grep -o 'packets [0-9]*' | awk '{ s += $2 } END { print s + 0 }'; }
client_py=scripts/netns-rig-client.py

# --- 1. 200 clients x 4 MiB through the lossy path --------------------------------------------

rc0=$(retransmits client); rl0=$(retransmits lb); d0=$(drops)
log "1. $CLIENTS clients each echo $BYTES bytes through haproxy (every 5th ends with the exit line)"
on client python3 "$client_py" --host 10.81.1.1 --port 8887 --clients "$CLIENTS" --bytes "$BYTES" --exit-every 5 \
    --source 10.81.1.2 --deadline 150 >"$work/run1.json" 2>"$work/run1.err" || true
rc1=$(retransmits client); rl1=$(retransmits lb); d1=$(drops)
cat "$work/run1.json"
python3 - "$work/run1.json" "$CLIENTS" <<'PY' || fail "the 200-client echo through the lossy path"
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2])
ok = r["complete"] == n and r["wrong"] == 0 and r["stuck"] == 0
if not ok: print("problems:", r["problems"], "cuts:", r["cuts"])
sys.exit(0 if ok else 1)
PY
verified=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_verified"])' "$work/run1.json")
seconds=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$work/run1.json")
log "1. ok: $CLIENTS/$CLIENTS complete, $verified bytes verified in $seconds s; packets dropped by nft: $((d1 - d0)); TCP retransmits: client host $((rc1 - rc0)), balancer $((rl1 - rl0))"
[ $((d1 - d0)) -gt 0 ] || fail "nft dropped nothing: the link was not lossy"
[ $((rc1 - rc0 + rl1 - rl0)) -gt 0 ] || fail "no retransmits across a lossy link"

# --- 2. the logs name the client ---------------------------------------------------------------

for host in r1 r2; do
    n=$(grep -c 'open 10\.81\.1\.2:[0-9]* via 10\.81\.[23]\.1:[0-9]* .*proxy=v2' "$work/$host.err" || true)
    log "2. reflectd on $host logged $n opens as 10.81.1.2 via the balancer"
    [ "$n" -gt 0 ] || fail "reflectd on $host never logged the client host's address: $(grep ' open ' "$work/$host.err" | head -3)"
done
grep -q 'proxy=v2 local' "$work/r1.err" || fail "haproxy's health checks (PROXY v2 LOCAL) were not served on r1"

# --- 3. the per-client limit through the balancer ----------------------------------------------

log "3. from 10.81.1.3: $LIMIT connections to r1 through haproxy, then one more"
on client python3 - "$LIMIT" <<'PY' >"$work/limit.log" 2>&1 || fail "the per-client limit through the balancer: $(cat "$work/limit.log")"
import socket, sys, time
limit = int(sys.argv[1])
def connect():
    s = socket.socket(); s.bind(("10.81.1.3", 0)); s.settimeout(10)
    s.connect(("10.81.1.1", 8888)); return s
def echo(s, tag):
    msg = f"{tag}\n".encode(); s.sendall(msg); got = b""
    while len(got) < len(msg):
        chunk = s.recv(100)
        if not chunk: return False
        got += chunk
    return got == msg
held = []
for i in range(limit):
    s = connect()
    assert echo(s, f"held {i}"), f"connection {i} of {limit} was not served"
    held.append(s)
over = connect()
try:
    over.sendall(b"one too many\n")
    data = over.recv(100)
except ConnectionResetError:
    data = b""
assert data == b"", f"connection {limit + 1} was served: {data!r}"
held.pop().close()
for attempt in range(50):
    s = connect()
    try:
        if echo(s, "replacement"): break
    except ConnectionResetError:
        pass
    s.close(); time.sleep(0.1)
else:
    raise SystemExit("no place came back after a close")
print(f"limit {limit}: {limit} served, connection {limit + 1} closed unserved, a place came back after a close")
PY
cat "$work/limit.log"
grep -q "connection from 10\.81\.1\.3:[0-9]* via 10\.81\.2\.1:[0-9]* .* refused: $LIMIT connections from 10\.81\.1\.3 open already (reason limit)" "$work/r1.err" \
    || fail "r1 did not log the refusal with reason limit: $(grep 'refused' "$work/r1.err" | tail -3)"
log "3. ok: r1 logged: $(grep -o "refused: $LIMIT connections from 10.81.1.3 open already (reason limit)" "$work/r1.err" | head -1)"

# --- 4. a host dies mid-run ----------------------------------------------------------------------

log "4. 40 clients echo $BYTES bytes; reflectd on r2 is killed (SIGKILL) after 30 % of the echo"
on client python3 "$client_py" --host 10.81.1.1 --port 8887 --clients 40 --bytes "$BYTES" --exit-every 0 --seed 15 \
    --source 10.81.1.2 --deadline 90 --run-at 0.3 "kill -KILL $pid_r2" >"$work/run4.json" 2>"$work/run4.err" || true
cat "$work/run4.json"
python3 - "$work/run4.json" <<'PY' || fail "killing r2 mid-run"
import json, sys
r = json.load(open(sys.argv[1]))
print("cut clients (first 5):", r["cuts"])
ok = r["wrong"] == 0 and r["stuck"] == 0 and r["cut"] >= 1 and r["complete"] >= 1
if not ok: print("problems:", r["problems"])
sys.exit(0 if ok else 1)
PY
kill -0 "$pid_r2" 2>/dev/null && fail "reflectd on r2 still runs"
on client python3 "$client_py" --host 10.81.1.1 --port 8887 --clients 20 --bytes 262144 --exit-every 2 --seed 16 \
    --source 10.81.1.2 --deadline 60 >"$work/run4b.json" 2>"$work/run4b.err" || true
cat "$work/run4b.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["complete"] == 20 else 1)' "$work/run4b.json" \
    || fail "new clients did not all reach r1 after r2 died"
log "4. ok: r2's clients saw reset/EOF with correct bytes only; 20/20 new clients were served by r1"

log "done in $(( $(date +%s) - began )) s: $verified bytes verified byte-exact through 2 % loss each way at $RATE; retransmits client $((rc1 - rc0)), balancer $((rl1 - rl0))"
