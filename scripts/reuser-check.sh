#!/usr/bin/env bash
# The reuser check (issue 21): Examples/reuser is a package of its own that depends on this
# repository by path and on its library products only (Reactor, ClientAdmission, ServerKit,
# NonBlockingLog, ZeroDropUpgrade). This builds it (its .build stays in Examples/reuser) and drives
# its tiny server (under 100 lines; `hello <client>` then echo) over loopback, bounded in time:
#   a. PROXY v2 (binary) header with a forged source 203.0.113.7, then binary bytes: the hello
#      names 203.0.113.7 and the bytes come back;
#   b. --proxy-protocol and no header: the connection is refused (closed, nothing echoed);
#   c. SIGUSR2: a new pid serves, the old process exits, the connection opened before still
#      echoes binary bytes, and a new connection works;
#   d. --max-connections-per-client 1: a second connection from 203.0.113.7 is refused before
#      and after the upgrade (its place travelled with the connection) and admitted once the
#      first one closed (the place was given back once).
# Exits non-zero, saying which check failed, on any failure.
#
# Usage: scripts/reuser-check.sh          (no arguments; --help prints this)
set -euo pipefail
for argument in "$@"; do
    case "$argument" in
        -h|--help) sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "reuser-check.sh: unknown argument: $argument (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

lines=$(cat Examples/reuser/Sources/reuser/*.swift | wc -l)
if [ "$lines" -ge 100 ]; then
    echo "reuser-check: FAIL Examples/reuser has $lines lines of Swift (the point is under 100)" >&2; exit 1
fi
if grep -rnE '@testable|\.\./Sources|path: *"Sources' Examples/reuser/Package.swift Examples/reuser/Sources; then
    echo "reuser-check: FAIL Examples/reuser reaches past the products (above)" >&2; exit 1
fi
echo "reuser-check: Examples/reuser: $lines lines of Swift, products only"
swift build --package-path Examples/reuser
binary="$(swift build --package-path Examples/reuser --show-bin-path)/reuser"

timeout --kill-after=5 90 python3 - "$binary" <<'EOF'
import os, re, signal, socket, struct, subprocess, sys, tempfile, time

binary = sys.argv[1]
work = tempfile.mkdtemp(prefix="reuser-check.")
out_path, err_path = os.path.join(work, "out"), os.path.join(work, "err")
server = subprocess.Popen([binary, "0", "--proxy-protocol", "--max-connections-per-client", "1"], stdout=open(out_path, "w"),
                          stderr=open(err_path, "w"), start_new_session=True)
pids = [server.pid]

def fail(message):
    print(f"reuser-check: FAIL {message}", file=sys.stderr)
    print("--- server stdout ---\n" + open(out_path).read() + "--- server stderr ---\n"
          + open(err_path).read()[-3000:], file=sys.stderr)
    for pid in pids:
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass
    sys.exit(1)

def listening(count, seconds=15):
    """The count-th `listening on HOST:PORT pid N` line: (port, pid)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.findall(r"listening on 127\.0\.0\.1:(\d+) pid (\d+)", open(out_path).read())
        if len(found) >= count:
            return int(found[count - 1][0]), int(found[count - 1][1])
        time.sleep(0.05)
    fail(f"no listening line number {count} within {seconds} s")

def receive(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk: break
        data += chunk
    return data

def proxy_v2(port, source):
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 5000, port)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses

def closed(sock):
    """True if the server closed (or reset) the connection without a byte for us."""
    try: return receive(sock, 64) == b""
    except ConnectionResetError: return True
    except socket.timeout: return False

def admitted(port, what, source="203.0.113.7"):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    payload = bytes(range(256)) * 4
    sock.sendall(proxy_v2(port, source) + payload)
    hello = f"hello {source}:5000\n".encode()
    got = receive(sock, len(hello) + len(payload))
    if got != hello + payload:
        fail(f"{what}: expected {hello!r} and 1024 binary bytes back, got {len(got)} bytes: {got[:60]!r}")
    print(f"  ok   {what}: PROXY v2 from {source}, hello names it, 1024 binary bytes echoed")
    return sock

port, old_pid = listening(1)
print(f"reuser-check: server pid {old_pid} on port {port}")
kept = admitted(port, "a. PROXY v2 header")

bare = socket.create_connection(("127.0.0.1", port), timeout=5)
bare.sendall(b"\x00\x01\x02 no header here\r\n")
if not closed(bare):
    fail("b. no header under --proxy-protocol: expected the connection closed, nothing echoed")
print("  ok   b. no header under --proxy-protocol: refused, nothing echoed")

def second_refused(what):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(proxy_v2(port, "203.0.113.7") + b"\x00\xff")
    if not closed(sock):
        fail(f"d. {what}: a second connection from 203.0.113.7 was not refused (limit 1)")
    print(f"  ok   d. {what}: a second connection from 203.0.113.7 refused (limit 1)")
second_refused("before the upgrade")

os.kill(old_pid, signal.SIGUSR2)
new_port, new_pid = listening(2)
pids.append(new_pid)
if new_pid == old_pid or new_port != port:
    fail(f"c. after SIGUSR2: pid {new_pid} on port {new_port} (was pid {old_pid} on port {port})")
try: server.wait(timeout=10)
except subprocess.TimeoutExpired: fail(f"c. the old process {old_pid} did not exit after the upgrade")
payload = bytes(range(255, -1, -1)) * 8
try:
    kept.sendall(payload)
    got = receive(kept, len(payload))
except OSError as error:
    got = f"{error}".encode()
if got != payload:
    fail(f"c. the connection opened before SIGUSR2 no longer echoes: {len(got)} of {len(payload)} bytes, {got[:60]!r}")
print(f"  ok   c. SIGUSR2: pid {old_pid} -> {new_pid} (old one exited {server.returncode}); the open connection echoes 2048 binary bytes")
admitted(port, "c. a new connection after the upgrade", "203.0.113.8").close()
second_refused("after the upgrade")
kept.close()
time.sleep(0.3)
admitted(port, "d. once the first connection closed, 203.0.113.7 again").close()
os.kill(new_pid, signal.SIGTERM)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try: os.kill(new_pid, 0)
    except ProcessLookupError: break
    time.sleep(0.05)
else:
    fail(f"the new process {new_pid} did not stop on SIGTERM")
print("reuser-check: passed")
EOF
