#!/usr/bin/env python3
"""Self-test for the baseline echo servers (loopback 127.0.0.1 only).

    python3 benchmarks/baselines/selftest.py [--skip-build] [epoll] [fork] [nio] [go] [uvloop]

Builds the servers with build.sh (unless --skip-build), then for each server:
starts it with `--port 0`, parses the exact "listening on 0.0.0.0:PORT" line
from stderr, and checks binary-safe echo (all 256 byte values incl. NUL and
0xFF), small ping-pong round trips, a 4 MiB transfer read concurrently, a
4 MiB transfer whose reader starts late (back-pressure path), several
concurrent connections, survival of an aborted (RST) client, close after
the client's EOF, the fork server's "exit" line, and finally that SIGTERM
(and, in a second run, SIGINT) with a connection still open makes it exit 0
and close that connection.

Stdlib only, every wait bounded. Exits 0 if everything passed, 1 otherwise.
"""
import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"  # never anything but loopback
IO_TIMEOUT = 20.0
LISTEN_RE = re.compile(r"^listening on 0\.0\.0\.0:(\d+)$")

DEFAULT_BINS = {
    "epoll": os.path.join(HERE, "c-epoll", "echo_epoll"),
    "fork": os.path.join(HERE, "c-fork", "echo_fork"),
    "nio": os.path.join(HERE, "nio-echo", ".build", "release", "nio-echo"),
    "go": os.path.join(HERE, "go-echo", "go-echo"),
    "uvloop": os.path.join(HERE, "uvloop-echo", "echo.py"),
}
# build.sh prints one path per server, in this order.
BUILD_ORDER = ["epoll", "fork", "nio", "go", "uvloop"]


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Server:
    def __init__(self, name, binary, args):
        self.name = name
        # A Python server (uvloop) runs with this interpreter, the one build.sh installed uvloop for.
        command = [sys.executable, binary] if binary.endswith(".py") else [binary]
        self.proc = subprocess.Popen(
            command + args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.stderr_lines = []
        first = []
        got = threading.Event()

        def drain():
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.stderr_lines.append(line)
                if not first:
                    first.append(line)
                    got.set()
            got.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not got.wait(30.0) or not first:
            self.kill()
            raise Failure(f"{name}: no listening line on stderr within 30s "
                          f"(exit={self.proc.poll()}, stderr={self.stderr_lines!r})")
        m = LISTEN_RE.match(first[0])
        if not m:
            self.kill()
            raise Failure(f"{name}: first stderr line is not 'listening on 0.0.0.0:PORT': {first[0]!r}")
        self.port = int(m.group(1))
        check(0 < self.port < 65536, f"{name}: bad port {self.port}")

    def connect(self):
        s = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT)
        s.settimeout(IO_TIMEOUT)
        return s

    def stop(self, sig):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15.0)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f"{self.name}: did not exit within 15s of signal {sig}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                pass


def recv_exact(s, n):
    chunks = []
    got = 0
    while got < n:
        b = s.recv(min(1 << 20, n - got))
        if not b:
            raise Failure(f"EOF after {got} of {n} bytes")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def expect_eof(s, what):
    try:
        b = s.recv(65536)
    except ConnectionResetError:
        return
    except socket.timeout:
        raise Failure(f"{what}: connection not closed by server (timeout)")
    check(b == b"", f"{what}: expected EOF, got {len(b)} more bytes {b[:40]!r}")


def transfer(srv, payload, late_reader=0.0, chunk=256 * 1024):
    """Send payload from a thread while reading concurrently; compare."""
    s = srv.connect()
    err = []

    def sender():
        try:
            view = memoryview(payload)
            for off in range(0, len(view), chunk):
                s.sendall(view[off:off + chunk])
        except Exception as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    if late_reader:
        time.sleep(late_reader)
    try:
        back = recv_exact(s, len(payload))
    finally:
        t.join(IO_TIMEOUT)
    check(not t.is_alive(), "sender thread stuck")
    check(not err, f"sender failed: {err!r}")
    check(back == payload, f"echo mismatch in {len(payload)}-byte transfer")
    s.shutdown(socket.SHUT_WR)
    expect_eof(s, "after client EOF")
    s.close()


def test_binary_safe(srv):
    data = bytes(range(256)) + b"\x00\x00\xff\xff\x00\xff" + bytes(reversed(range(256)))
    with srv.connect() as s:
        s.sendall(data)
        check(recv_exact(s, len(data)) == data, "binary echo mismatch")
        # lone NUL, 0xFF, CRLF and "e" (a prefix of "exit") sent on their own
        for b in (b"\x00", b"\xff", b"\r\n", b"e"):
            s.sendall(b)
            check(recv_exact(s, len(b)) == b, f"echo of {b!r} mismatch")


def test_ping_pong(srv):
    with srv.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(500):
            msg = struct.pack("!I", i) + b"\x00ping\xff" * (1 + i % 7)
            s.sendall(msg)
            check(recv_exact(s, len(msg)) == msg, f"ping-pong {i} mismatch")


def test_4mib(srv):
    transfer(srv, os.urandom(4 * 1024 * 1024))


def test_4mib_late_reader(srv):
    # The reader starts 1s late, so the server's socket send buffer fills and
    # the server must queue / apply back-pressure without losing bytes.
    transfer(srv, os.urandom(4 * 1024 * 1024), late_reader=1.0, chunk=1024 * 1024)


def test_concurrent(srv):
    errs = []

    def one(i):
        try:
            transfer(srv, os.urandom(256 * 1024 + i * 977))
        except Exception as e:  # noqa: BLE001
            errs.append(f"conn {i}: {e}")

    ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60.0)
    check(not any(t.is_alive() for t in ts), "concurrent clients stuck")
    check(not errs, "; ".join(errs))


def test_abort(srv):
    s = srv.connect()
    s.sendall(os.urandom(512 * 1024))
    # close with SO_LINGER 0 -> RST while the server may still be echoing
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.2)
    check(srv.proc.poll() is None, "server died after a client reset")
    with srv.connect() as s2:
        s2.sendall(b"still alive\x00")
        check(recv_exact(s2, 12) == b"still alive\x00", "echo after RST mismatch")


def test_exit_line(srv):
    with srv.connect() as s:
        s.sendall(b"hello\n")
        check(recv_exact(s, 6) == b"hello\n", "echo before exit mismatch")
        s.sendall(b"exit\n")
        expect_eof(s, "after 'exit' line")
    with srv.connect() as s:
        s.sendall(b"a\r\nexit\r\nignored")
        check(recv_exact(s, 3) == b"a\r\n", "echo before exit (CRLF) mismatch")
        expect_eof(s, "after 'exit\\r\\n' line")
    with srv.connect() as s:  # "exit" not alone on its line: plain data
        s.sendall(b"exits\nno exit\n")
        check(recv_exact(s, 14) == b"exits\nno exit\n", "non-exit line mismatch")


def child_pids(pid):
    """Pids whose parent is pid (Linux /proc scan)."""
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(b")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(d))
    return kids


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rfind(b")") + 2:].split()[0].decode()


def test_signal_with_open_conn(srv, sig):
    name = signal.Signals(sig).name
    s = srv.connect()
    s.sendall(b"x")
    check(recv_exact(s, 1) == b"x", "echo before signal mismatch")
    kids = child_pids(srv.proc.pid)
    if srv.name == "fork":
        check(kids, "fork server: no child process found for the open connection")
    rc = srv.stop(sig)
    check(rc == 0, f"exit code after {name} is {rc}, want 0")
    expect_eof(s, f"open connection after {name}")
    s.close()
    # no child process (fork server) may outlive the server, not even as a zombie
    deadline = time.monotonic() + 5.0
    while True:
        left = [(k, proc_state(k)) for k in kids if proc_state(k) is not None]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    check(not left, f"child processes left after {name}: {left}")


def run_server(name, binary):
    results = []
    tests = [
        ("binary-safe echo (NUL, 0xFF, all bytes)", test_binary_safe),
        ("500 ping-pong round trips", test_ping_pong),
        ("4 MiB, concurrent read", test_4mib),
        ("4 MiB, reader 1s late (back-pressure)", test_4mib_late_reader),
        ("8 concurrent connections", test_concurrent),
        ("client RST does not hurt server", test_abort),
    ]
    if name == "fork":
        tests.append(("'exit' line closes connection", test_exit_line))

    def record(label, fn):
        t0 = time.monotonic()
        try:
            fn()
            results.append((True, label, time.monotonic() - t0, ""))
        except Exception as e:  # noqa: BLE001
            results.append((False, label, time.monotonic() - t0, f"{type(e).__name__}: {e}"))

    srv = None
    try:
        srv = Server(name, binary, ["--port", "0"])
        results.append((True, f"listening line (port {srv.port})", 0.0, ""))
        for label, fn in tests:
            record(label, lambda fn=fn: fn(srv))
        record("SIGTERM with open connection -> exit 0",
               lambda: test_signal_with_open_conn(srv, signal.SIGTERM))
    except Failure as e:
        results.append((False, "start", 0.0, str(e)))
    finally:
        if srv:
            srv.kill()

    # second run: --port=0 spelling and SIGINT
    def sigint_run():
        s2 = Server(name, binary, ["--port=0"])
        try:
            test_binary_safe(s2)
            test_signal_with_open_conn(s2, signal.SIGINT)
        finally:
            s2.kill()

    record("--port=0 + SIGINT with open connection -> exit 0", sigint_run)
    return results


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="SERVER",
                        help=f"servers to test (default: all of {', '.join(sorted(DEFAULT_BINS))})")
    parser.add_argument("--skip-build", action="store_true", help="use the binaries already built (build.sh not run)")
    args = parser.parse_args(argv)
    skip_build = args.skip_build
    names = args.names or list(BUILD_ORDER)
    for n in names:
        if n not in DEFAULT_BINS:
            print(f"unknown server {n!r}; choose from {sorted(DEFAULT_BINS)}", file=sys.stderr)
            return 2
    bins = dict(DEFAULT_BINS)
    if not skip_build:
        print("building (build.sh) ...", flush=True)
        try:
            out = subprocess.run(["bash", os.path.join(HERE, "build.sh")],
                                 stdout=subprocess.PIPE, timeout=1800, check=True).stdout
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            print(f"FAIL build.sh: {e}", file=sys.stderr)
            return 1
        paths = out.decode().split()
        if len(paths) != len(BUILD_ORDER):
            print(f"FAIL build.sh printed {paths!r}, want {len(BUILD_ORDER)} paths", file=sys.stderr)
            return 1
        bins = dict(zip(BUILD_ORDER, paths))

    npass = nfail = 0
    for n in names:
        b = bins[n]
        print(f"== {n}: {b}", flush=True)
        if not os.access(b, os.R_OK if b.endswith(".py") else os.X_OK):
            print(f"  FAIL binary missing: {b}")
            nfail += 1
            continue
        for ok, label, dt, detail in run_server(n, b):
            if ok:
                npass += 1
                print(f"  ok   {label} ({dt:.2f}s)", flush=True)
            else:
                nfail += 1
                print(f"  FAIL {label}: {detail}", flush=True)
    print(f"selftest: {npass} passed, {nfail} failed")
    return 0 if nfail == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
