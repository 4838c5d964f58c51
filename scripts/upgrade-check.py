#!/usr/bin/env python3
"""Upgrade scenarios through the built reflectd binary (issue 16), bounded in time.

Each scenario starts reflectd from a private copy of the binary (so the file at its path can be
replaced, as an operator would), drives real loopback clients, sends SIGUSR2, and checks every
byte on both sides of the swap. Exit status 0 only if every check passed.

  scripts/upgrade-check.py BINARY [--connections N] [--repeat N] [--only NAME ...]

Scenarios (names for --only): mixed, repeat, reactors-unix, failures, activation, proxy-limit,
connection-limit, take-back, stop-race, failed-traces.
"""
import argparse, os, random, re, selectors, shutil, signal, socket, subprocess, sys, tempfile, threading, time

FAILURES = []


def check(condition, what):
    if condition:
        print(f"  ok   {what}")
    else:
        print(f"  FAIL {what}")
        FAILURES.append(what)
    return condition


class Server:
    """reflectd started from DIR/reflectd; stdout and stderr go to files (old and new share them)."""

    def __init__(self, binary, args, env=None, pre_exec=None, launcher=None):
        self.dir = tempfile.mkdtemp(prefix="reflectd-upgrade-")
        self.path = os.path.join(self.dir, "reflectd")
        shutil.copy2(binary, self.path)
        self.binary = binary
        self.out = open(os.path.join(self.dir, "out"), "w+b")
        self.err = open(os.path.join(self.dir, "err"), "w+b")
        command = (launcher or []) + [self.path] + args
        self.proc = subprocess.Popen(command, stdout=self.out, stderr=self.err, env=env, pass_fds=pre_exec or ())
        self.pid = self.proc.pid
        self.wait_for(lambda: b"listening on" in self.stdout(), 10, "listening")
        m = re.search(rb"listening on [^\n]*:(\d+)\n", self.stdout())
        self.port = int(m.group(1)) if m else None
        m = re.search(rb"metrics on http://[^\n]*:(\d+)/metrics", self.stdout())
        self.metrics_port = int(m.group(1)) if m else None

    def stdout(self):
        with open(self.out.name, "rb") as f:
            return f.read()

    def stderr(self):
        with open(self.err.name, "rb") as f:
            return f.read()

    def wait_for(self, condition, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        raise RuntimeError(f"timed out waiting for {what}; stderr:\n{self.stderr().decode(errors='replace')[-3000:]}")

    def takeovers(self):
        return re.findall(rb"upgrade: took (\d+) connections from pid (\d+) \(this is pid (\d+)\)", self.stderr())

    def upgrade(self, timeout=15):
        """SIGUSR2 to the current process; waits for the new one to take over and the old to exit 0."""
        before = len(self.takeovers())
        old = self.pid
        start = time.time()
        os.kill(old, signal.SIGUSR2)
        self.wait_for(lambda: len(self.takeovers()) > before, timeout, "the new process to take over")
        taken, from_pid, new_pid = self.takeovers()[-1]
        status = self.reap(old, timeout)
        elapsed = time.time() - start
        self.pid = int(new_pid)
        return int(taken), int(from_pid) == old, status, elapsed

    def reap(self, pid, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pid == self.proc.pid:
                code = self.proc.poll()
                if code is not None:
                    return code
            elif not os.path.exists(f"/proc/{pid}") or _zombie(pid):
                return 0 if "exiting" in self.stderr().decode(errors="replace") else None
            time.sleep(0.02)
        return None

    def alive(self, pid=None):
        pid = pid or self.pid
        return os.path.exists(f"/proc/{pid}") and not _zombie(pid)

    def replace_binary(self, content=None, mode=0o755):
        """Puts a new file at the server's path by rename (a running binary cannot be overwritten)."""
        temporary = self.path + ".new"
        if content is None:
            shutil.copy2(self.binary, temporary)
        else:
            with open(temporary, "w") as f:
                f.write(content)
            os.chmod(temporary, mode)
        os.rename(temporary, self.path)

    def stop(self):
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.time() + 10
            while self.alive() and time.time() < deadline:
                time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


NO_NEWLINE = bytes(11 if b == 10 else b for b in range(256))


def payload(n, rng):
    """Binary bytes without a newline, not starting with 'e': never an exit line."""
    data = bytearray(rng.randbytes(n).translate(NO_NEWLINE))
    if data and data[0] == ord("e"):
        data[0] = ord("f")
    return bytes(data)


def connect(port, family=socket.AF_INET, address=None, rcvbuf=None):
    s = socket.socket(family, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(address or ("127.0.0.1", port))
    return s


def recv_exact(s, n, timeout=20):
    data = bytearray()
    s.settimeout(timeout)
    while len(data) < n:
        chunk = s.recv(min(1 << 20, n - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def recv_until_eof(s, timeout=20):
    data = bytearray()
    s.settimeout(timeout)
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return bytes(data), "eof"
            data += chunk
    except ConnectionResetError:
        return bytes(data), "reset"
    except socket.timeout:
        return bytes(data), "timeout"


class PingPong(threading.Thread):
    """Request/response echo until stopped; each reply checked byte-exact. Records the longest stall."""

    def __init__(self, make_socket, seed):
        super().__init__(daemon=True)
        self.make_socket = make_socket
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.rounds = 0
        self.errors = []
        self.longest = 0.0
        self.sock = make_socket()

    def run(self):
        try:
            while not self.stop.is_set():
                message = payload(self.rng.randint(1, 3000), self.rng)
                start = time.time()
                self.sock.sendall(message)
                reply = recv_exact(self.sock, len(message))
                self.longest = max(self.longest, time.time() - start)
                if reply != message:
                    self.errors.append(f"round {self.rounds}: sent {len(message)} B, got {len(reply)} B back, equal prefix {os.path.commonprefix([reply, message]).__len__()}")
                    return
                self.rounds += 1
                time.sleep(self.rng.random() * 0.01)
        except Exception as e:
            self.errors.append(f"round {self.rounds}: {e!r}")

    def finish(self):
        self.stop.set()
        self.join(30)
        self.sock.close()


class PingPongGroup(threading.Thread):
    """Many request/response echo clients on one epoll loop (threads do not scale to 900 in
    Python); each reply checked byte-exact. Records the longest round trip."""

    def __init__(self, sockets, seed):
        super().__init__(daemon=True)
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.rounds = 0
        self.errors = []
        self.longest = 0.0
        self.sockets = sockets
        self.selector = selectors.DefaultSelector()
        self.state = {}
        for s in sockets:
            s.setblocking(False)
            self.state[s.fileno()] = self.next_message(s)
            self.selector.register(s, selectors.EVENT_READ)

    def next_message(self, s):
        message = payload(self.rng.randint(1, 3000), self.rng)
        self.send_all(s, message)
        return [message, bytearray(), time.time()]

    @staticmethod
    def send_all(s, data):
        view = memoryview(data)
        while view:
            try:
                n = s.send(view)
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)

    def run(self):
        try:
            while not self.stop.is_set():
                for key, _ in self.selector.select(0.05):
                    s = key.fileobj
                    message, buffer, sent_at = st = self.state[key.fd]
                    data = s.recv(65536)
                    if not data:
                        self.errors.append(f"fd {key.fd}: EOF after {len(buffer)} of {len(message)} bytes")
                        self.selector.unregister(s)
                        continue
                    buffer += data
                    if len(buffer) > len(message) or bytes(buffer) != message[:len(buffer)]:
                        self.errors.append(f"fd {key.fd}: echo differs after {len(buffer)} bytes")
                        self.selector.unregister(s)
                        continue
                    if len(buffer) == len(message):
                        self.longest = max(self.longest, time.time() - sent_at)
                        self.rounds += 1
                        self.state[key.fd] = self.next_message(s)
        except Exception as e:
            self.errors.append(repr(e))

    def finish(self):
        self.stop.set()
        self.join(30)
        for s in self.sockets:
            s.close()


class Connector(threading.Thread):
    """New connections one after another (connect, one echo, close); none may be refused."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.done = 0
        self.errors = []

    def run(self):
        rng = random.Random(7)
        while not self.stop.is_set():
            try:
                s = connect(self.port)
                message = payload(100, rng)
                s.sendall(message)
                if recv_exact(s, len(message)) != message:
                    self.errors.append("wrong echo")
                s.close()
                self.done += 1
            except Exception as e:
                self.errors.append(repr(e))
            time.sleep(0.002)

    def finish(self):
        self.stop.set()
        self.join(30)


def fill_never_reader(s, budget, rng):
    """Sends until the server stops reading (its pending output past the high watermark)."""
    s.setblocking(False)
    sent = bytearray()
    idle_since = time.time()
    while len(sent) < budget and time.time() - idle_since < 0.5:
        chunk = payload(16384, rng)
        try:
            n = s.send(chunk)
            sent += chunk[:n]
            idle_since = time.time()
        except BlockingIOError:
            time.sleep(0.01)
    s.setblocking(True)
    return bytes(sent)


def mixed(binary, n, extra_args=(), family="tcp", upgrades=1, name="mixed"):
    """n connections in five kinds, upgraded mid-stream, checked byte-exact on both sides."""
    print(f"\n== {name}: {n} connections, {upgrades} upgrade(s), reflectd {' '.join(extra_args)}")
    unix_path = None
    args = ["--port", "0", "--exit-hold-ms", "60000", "--metrics-port", "0", "--log-level", "notice"] + list(extra_args)
    if family == "unix":
        unix_path = os.path.join(tempfile.mkdtemp(prefix="reflectd-unix-"), "echo.sock")
        args += ["--unix", unix_path]
    server = Server(binary, args)
    rng = random.Random(42)

    def make():
        if unix_path:
            return connect(0, socket.AF_UNIX, unix_path)
        return connect(server.port)

    counts = {"pingpong": n * 90 // 100, "never": max(1, n * 5 // 100), "held": max(1, n * 2 // 100),
              "half": max(1, n * 2 // 100), "linger": max(1, n // 100)}
    try:
        pingers = [PingPongGroup([make() for _ in range(counts["pingpong"])], 1)]
        for p in pingers:
            p.start()
        connector = Connector(server.port)
        connector.start()
        # Never-readers: a small receive buffer, so the server's output backs up past 64 KiB.
        never = []
        for _ in range(counts["never"]):
            s = connect(server.port, rcvbuf=4096) if not unix_path else make()
            never.append((s, fill_never_reader(s, 4 << 20, rng)))
        held = []
        for _ in range(counts["held"]):
            s = make()
            s.sendall(b"data\nex")
            held.append(s)
        half = []
        for _ in range(counts["half"]):
            s = connect(server.port, rcvbuf=4096) if not unix_path else make()
            data = payload(6_000_000, rng)  # more than the kernel buffers (4 MiB tcp_wmem): output stays pending
            threading.Thread(target=lambda s=s, d=data: (s.sendall(d), s.shutdown(socket.SHUT_WR)), daemon=True).start()
            half.append((s, data, bytearray(recv_exact(s, 10_000))))
        time.sleep(0.3)
        before = scrape(server.metrics_port)
        lingering = []
        for _ in range(counts["linger"]):
            s = make()
            s.sendall(b"abc\nexit\n")
            lingering.append(s)
        time.sleep(0.05)  # the exit lines are read: these connections linger (2 s at most)
        for round_ in range(upgrades):
            taken, from_old, status, elapsed = server.upgrade()
            # Lingering connections end within 2 s of their exit line: only the first swap has them.
            expected = n - (counts["linger"] if round_ > 0 else 0)
            check(taken >= expected, f"upgrade {round_ + 1}: took {taken} connections (about {expected} expected) in {elapsed * 1000:.0f} ms")
            check(status == 0, f"upgrade {round_ + 1}: the old process exited 0 (got {status})")
            time.sleep(0.3)
        # The pingpong clients stop first (they checked every round across the swap), so that
        # 900 Python threads do not slow down reading what the others were owed.
        connector.finish()
        for p in pingers:
            p.finish()
        for s in lingering:
            try:
                s.sendall(b"ignored after exit\n")
            except OSError:
                pass
        for s in held:
            s.sendall(b"it\n")
        # Verify everything.
        for k, s in enumerate(held):
            data, how = recv_until_eof(s)
            check(data == b"data\n" and how == "eof", f"held 'ex' {k}: 'it\\n' after the swap closed it without echo ({data!r}, {how})") if k < 3 or data != b"data\n" or how != "eof" else None
        for k, s in enumerate(lingering):
            data, how = recv_until_eof(s)
            ok = data == b"abc\n" and how == "eof"
            if k < 3 or not ok:
                check(ok, f"linger {k}: 'abc\\n' then EOF, no reset ({data!r}, {how})")
        for k, (s, data, got) in enumerate(half):
            rest, how = recv_until_eof(s)
            got += rest
            ok = bytes(got) == data and how == "eof"
            if k < 3 or not ok:
                check(ok, f"half-closed {k}: {len(got)} of {len(data)} bytes echoed exactly, then EOF ({how})")
        for k, (s, data) in enumerate(never):
            got = recv_exact(s, len(data))
            ok = got == data and len(data) > 64 * 1024 + 4096
            if k < 3 or not ok:
                check(ok, f"never-reader {k}: {len(got)} of {len(data)} pending bytes echoed exactly after the swap")
            # Its output drained in the new process: it reads again (backpressure carried, then lifted).
            s.sendall(b"still here\n")
            more = recv_exact(s, 11)
            if k < 3 or more != b"still here\n":
                check(more == b"still here\n", f"never-reader {k}: echoes again once drained ({more!r})")
        if unix_path:
            s = make()
            s.sendall(b"new on unix\n")
            check(recv_exact(s, 12) == b"new on unix\n", "a new connection on the handed-over Unix socket is served")
            s.close()
        bad = [e for p in pingers for e in p.errors]
        check(not bad, f"{counts['pingpong']} pingpong connections byte-exact, {sum(p.rounds for p in pingers)} rounds ({bad[:3]})")
        check(not connector.errors, f"{connector.done} connects during the swaps, none refused or wrong ({connector.errors[:3]})")
        longest = max(p.longest for p in pingers)
        print(f"  longest pingpong stall: {longest * 1000:.0f} ms")
        after = scrape(server.metrics_port)
        check(after.get("reflectd_connections_accepted_total", 0) >= before.get("reflectd_connections_accepted_total", 1) and
              after.get("reflectd_bytes_received_total", 0) >= before.get("reflectd_bytes_received_total", 1),
              f"metrics continue: accepted {before.get('reflectd_connections_accepted_total')} -> {after.get('reflectd_connections_accepted_total')}, "
              f"bytes received {before.get('reflectd_bytes_received_total')} -> {after.get('reflectd_bytes_received_total')}")
        return longest
    finally:
        server.stop()
        if unix_path:
            shutil.rmtree(os.path.dirname(unix_path), ignore_errors=True)


def scrape(port):
    if not port:
        return {}
    try:
        s = connect(port)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text, _ = recv_until_eof(s, 5)
        s.close()
    except OSError:
        return {}
    values = {}
    for line in text.decode(errors="replace").splitlines():
        m = re.match(r"^([a-z_]+) (\d+)$", line)
        if m:
            values[m.group(1)] = int(m.group(2))
    return values


def failures(binary):
    print("\n== failure cases: the old process keeps serving")
    server = Server(binary, ["--port", "0", "--log-level", "info"])
    try:
        pingers = [PingPong(lambda: connect(server.port), i) for i in range(10)]
        for p in pingers:
            p.start()
        old = server.pid
        # 1. A new binary that exits 1 at once.
        server.replace_binary("#!/bin/sh\nexit 1\n")
        os.kill(old, signal.SIGUSR2)
        server.wait_for(lambda: b"upgrade failed" in server.stderr(), 10, "the failure to be logged")
        check(re.search(rb"error .*upgrade failed: the new process \(pid \d+\) exited with status 1", server.stderr()) is not None,
              "a new binary that exits 1: logged at error with its status")
        # 2. A new binary that hangs; a second SIGUSR2 meanwhile is ignored.
        server.replace_binary("#!/bin/sh\nexec sleep 60\n")
        start = time.time()
        os.kill(old, signal.SIGUSR2)
        time.sleep(0.5)
        os.kill(old, signal.SIGUSR2)
        server.wait_for(lambda: server.stderr().count(b"upgrade failed") >= 2, 15, "the hang to time out")
        waited = time.time() - start
        check(b"ignored, an upgrade is already in progress" in server.stderr(), "a second SIGUSR2 during an upgrade is ignored with a log line")
        check(b"did not answer within 5" in server.stderr() and 4.5 < waited < 9, f"a new binary that hangs: given up after {waited:.1f} s")
        # 3. A path that does not exist any more.
        os.unlink(server.path)
        os.kill(old, signal.SIGUSR2)
        server.wait_for(lambda: server.stderr().count(b"upgrade failed") >= 3, 10, "the missing binary failure")
        check(b"cannot start" in server.stderr(), "a missing binary: 'cannot start' logged")
        check(server.alive(old), "the old process is still running")
        s = connect(server.port)
        s.sendall(b"still here\n")
        check(recv_exact(s, 11) == b"still here\n", "new connections are still served by the old process")
        s.close()
        for p in pingers:
            p.finish()
        bad = [e for p in pingers for e in p.errors]
        check(not bad and all(p.rounds > 0 for p in pingers), f"10 connections echoed byte-exact through three failed upgrades ({bad[:3]})")
        # 4. Then a real upgrade still works.
        server.replace_binary()
        taken, _, status, _ = server.upgrade()
        check(status == 0, "after the failures, a real upgrade succeeds and the old process exits 0")
    finally:
        server.stop()

    print("\n== version mismatch: refused cleanly")
    env = dict(os.environ, REFLECTD_UPGRADE_ANNOUNCE_VERSION="99")
    server = Server(binary, ["--port", "0"], env=env)
    try:
        s = connect(server.port)
        os.kill(server.pid, signal.SIGUSR2)
        server.wait_for(lambda: b"upgrade failed" in server.stderr(), 10, "the refusal")
        check(b"hand-over format version 99 from the other process; this binary speaks version 2" in server.stderr(),
              "the old process refuses a new one announcing format version 99")
        s.sendall(b"v\n")
        check(recv_exact(s, 2) == b"v\n" and server.alive(), "and keeps serving its connection")
        s.close()
    finally:
        server.stop()


def activation_and_notify(binary):
    print("\n== socket activation (LISTEN_FDS) and sd_notify on a fake NOTIFY_SOCKET")
    directory = tempfile.mkdtemp(prefix="reflectd-notify-")
    notify_path = os.path.join(directory, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(10)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    # A launcher in the role of systemd: the socket on fd 3, LISTEN_PID = the pid that execs.
    launcher = ["python3", "-c",
                "import os,sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID']=str(os.getpid()); "
                "os.environ['LISTEN_FDS']='1'; os.execv(sys.argv[2], sys.argv[2:])", str(listener.fileno())]
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    server = Server(binary, ["--reactors", "2", "--log-level", "info"], env=env, pre_exec=(listener.fileno(),), launcher=launcher)
    listener.close()
    try:
        first = notify.recv(4096)
        check(first == b"READY=1", f"READY=1 when serving ({first!r})")
        pingers = [PingPong(lambda: connect(port), i) for i in range(20)]
        for p in pingers:
            p.start()
        connector = Connector(port)
        connector.start()
        time.sleep(0.3)
        taken, _, status, _ = server.upgrade()
        message = notify.recv(4096)
        check(message == f"MAINPID={server.pid}\nREADY=1".encode(), f"the new process sends MAINPID=<its pid> and READY=1 in one datagram ({message!r})")
        # 20 pingers, plus the connector's one connection if it was open at that moment.
        check(taken in (20, 21) and status == 0, f"socket-activated, 2 reactors: the 20 connections taken ({taken}), old exited 0")
        time.sleep(0.3)
        bad = [e for p in pingers for e in p.errors] + connector.errors
        check(not bad, f"every echo byte-exact and {connector.done} connects to the inherited socket never refused ({bad[:3]})")
    finally:
        server.stop()
        notify.close()
        shutil.rmtree(directory, ignore_errors=True)


def proxy_and_client_limit(binary):
    """--proxy-protocol with --max-connections-per-client 2: the client's name and its place travel;
    the place is taken again by the new process and given back once (a place given back twice, or
    never taken, stops the process with 'given back twice'); a header still pending is not carried."""
    print("\n== PROXY clients under --max-connections-per-client across a swap")
    server = Server(binary, ["--port", "0", "--proxy-protocol", "--max-connections-per-client", "2",
                             "--max-connections", "100", "--log-level", "info"])

    def client(port_from):
        s = connect(server.port)
        s.sendall(f"PROXY TCP4 10.9.8.7 127.0.0.1 {port_from} 8887\r\n".encode())
        return s

    try:
        rng = random.Random(16)
        held = [client(41000 + k) for k in range(2)]
        for k, s in enumerate(held):
            data = payload(1000, rng) + b"\n"
            s.sendall(data)
            check(recv_exact(s, len(data)) == data, f"PROXY client {k} echoes before the swap")
        partial = connect(server.port)
        partial.sendall(b"PROXY TCP4 10.9")  # header never completed
        time.sleep(0.2)
        taken, _, status, _ = server.upgrade()
        check(taken == 2, f"2 PROXY clients handed over, the pending header not ({taken} taken)")
        check(status == 0, f"old process exited 0 ({status})")
        _, how = recv_until_eof(partial, 10)
        check(how in ("eof", "reset"), f"the connection with a pending PROXY header is closed by the old process ({how})")
        for k, s in enumerate(held):
            data = payload(5000, rng) + b"\n"
            s.sendall(data)
            check(recv_exact(s, len(data)) == data, f"PROXY client {k} echoes exactly after the swap")
        third = client(41002)
        third.sendall(b"refused?\n")
        got, how = recv_until_eof(third, 10)
        check(got == b"" and how in ("eof", "reset"), f"a third connection of 10.9.8.7 is refused by the new process (limit 2 carried): {got!r} {how}")
        held[0].close()
        server.wait_for(lambda: re.search(rb"close 10\.9\.8\.7:41000 via 127\.0\.0\.1:\d+ \(", server.stderr()) is not None, 10,
                        "the new process to log the carried client's close under its PROXY name")
        check(True, "the new process logs a carried client's close under its PROXY name")
        again = client(41003)
        data = b"place given back once\n"
        again.sendall(data)
        check(recv_exact(again, len(data), 10) == data, "after one carried client closed, a new one of 10.9.8.7 is served")
        for s in [held[1], again]:
            s.close()
        time.sleep(0.5)
        pair = [client(41004 + k) for k in range(2)]
        ok = True
        for s in pair:
            s.sendall(b"x\n")
            ok = ok and recv_exact(s, 2, 10) == b"x\n"
        check(ok, "with every carried client closed, 2 new ones of 10.9.8.7 are served (no place leaked)")
        for s in pair:
            s.close()
        check(server.alive() and b"given back twice" not in server.stderr(), "the new process is alive (no place given back twice)")
    finally:
        server.stop()


def connection_limit(binary):
    """--max-connections 3: the carried connections hold their places in the new process (a 4th is
    refused), and each place is given back once (after all close, exactly 3 new ones are served)."""
    print("\n== --max-connections 3 across a swap")
    server = Server(binary, ["--port", "0", "--max-connections", "3", "--log-level", "info"])

    def refused(what):
        s = connect(server.port)
        try:
            s.sendall(b"over the limit\n")
        except OSError:
            pass
        got, how = recv_until_eof(s, 10)
        s.close()
        check(got == b"" and how in ("eof", "reset"), f"{what}: a 4th connection is refused ({got!r}, {how})")

    def served(n):
        clients = [connect(server.port) for _ in range(n)]
        ok = True
        for k, s in enumerate(clients):
            data = f"client {k}\n".encode()
            s.sendall(data)
            ok = ok and recv_exact(s, len(data), 10) == data
        return clients, ok

    try:
        held, ok = served(3)
        check(ok, "3 connections echo before the swap")
        refused("before the swap")
        taken, _, status, _ = server.upgrade()
        check(taken == 3 and status == 0, f"3 connections handed over, old process exited 0 ({taken}, {status})")
        refused("after the swap")
        held[0].close()
        time.sleep(0.5)
        more, ok = served(1)
        check(ok, "after one carried connection closed, a new one is served")
        for s in held[1:] + more:
            s.close()
        time.sleep(0.5)
        fresh, ok = served(3)
        check(ok, "with every carried connection closed, 3 new ones are served")
        refused("with 3 new ones open (no place given back twice)")
        for s in fresh:
            s.close()
    finally:
        server.stop()


def take_back(binary):
    """A new process that fails after the connections were detached (its fd limit, 64, cannot take
    a batch of 200): the old one takes every connection back with its places (--max-connections-per-client
    210 stays exact: a 211th is refused, and after 10 close, 10 new ones are served), then a real
    upgrade still works."""
    print("\n== take-back after detach: the new process cannot receive the fds")
    server = Server(binary, ["--port", "0", "--max-connections-per-client", "210", "--log-level", "info"])
    try:
        clients = [connect(server.port) for _ in range(210)]
        ok = all(s.sendall(b"a\n") is None and recv_exact(s, 2, 10) == b"a\n" for s in clients)
        check(ok, "210 connections echo before the failed upgrade")
        old = server.pid
        server.replace_binary(f"#!/bin/sh\nulimit -n 64\nexec {binary} \"$@\"\n")
        os.kill(old, signal.SIGUSR2)
        server.wait_for(lambda: b"upgrade failed" in server.stderr(), 15, "the failure to be logged")
        m = re.search(rb"upgrade failed: [^\n]*\((\d+) connections taken back\)", server.stderr())
        check(m is not None and int(m.group(1)) == 210, f"the old process took back 210 detached connections ({m.group(0) if m else server.stderr()[-400:]!r})")
        check(server.alive(old), "the old process is still running")
        ok = all(s.sendall(b"b\n") is None and recv_exact(s, 2, 10) == b"b\n" for s in clients)
        check(ok, "every taken-back connection echoes")
        extra = connect(server.port)
        extra.sendall(b"over\n")
        got, how = recv_until_eof(extra, 10)
        check(got == b"", f"a 211th connection from 127.0.0.1 is refused (places kept: {got!r}, {how})")
        extra.close()  # else it lingers in the server (and would be handed over too)
        for s in clients[:10]:
            s.close()
        time.sleep(0.5)
        more = [connect(server.port) for _ in range(10)]
        ok = all(s.sendall(b"c\n") is None and recv_exact(s, 2, 10) == b"c\n" for s in more)
        check(ok, "after 10 close, 10 new ones are served (no place taken twice)")
        clients = clients[10:] + more
        server.replace_binary()
        taken, _, status, _ = server.upgrade()
        check(taken == 210 and status == 0, f"then a real upgrade takes all 210 ({taken}, status {status})")
        ok = all(s.sendall(b"d\n") is None and recv_exact(s, 2, 10) == b"d\n" for s in clients)
        check(ok, "every connection echoes after the real upgrade")
        for s in clients:
            s.close()
    finally:
        server.stop()


def reflectd_processes(path):
    """Pids of every live process whose command line starts with `path` (old, new, strays)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        if argv0 == path.encode() and not _zombie(int(entry)):
            found.append(int(entry))
    return found


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def group_members(pgid):
    """Live processes in process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def stop_race(binary, tries=10):
    """Issue 19.1: SIGUSR2 then SIGTERM 0, 1 and 10 ms apart. Whichever process holds the
    connections stops gracefully, no reflectd is left running, the ports are free at once, and
    the log tells what happened."""
    print(f"\n== a stop right after SIGUSR2 ({tries} tries each at 0, 1 and 10 ms): nothing is left running")
    outcomes = {}
    for gap in (0.0, 0.001, 0.010):
        for attempt in range(tries):
            server = Server(binary, ["--port", "0", "--metrics-port", "0", "--log-level", "info"])
            what = f"gap {gap * 1000:.0f} ms, try {attempt + 1}"
            try:
                port, metrics_port = server.port, server.metrics_port
                client = connect(port)
                client.sendall(b"before\n")
                ok = recv_exact(client, 7) == b"before\n"
                os.kill(server.pid, signal.SIGUSR2)
                if gap:
                    time.sleep(gap)
                os.kill(server.pid, signal.SIGTERM)
                deadline = time.time() + 20
                while reflectd_processes(server.path) and time.time() < deadline:
                    server.proc.poll()
                    time.sleep(0.02)
                left = reflectd_processes(server.path)
                status = server.proc.wait(timeout=5) if server.proc.poll() is None and not left else server.proc.poll()
                _, how = recv_until_eof(client, timeout=5)
                client.close()
                log = server.stderr().decode(errors="replace")
                if "forwarding the SIGTERM" in log or "forwarded the signal" in log or "stop signal(s) that reached this process after the hand-over" in log:
                    outcome = "new process stopped"
                elif "stopping gracefully, as the SIGTERM" in log or "stopping now, as the" in log:
                    outcome = "upgrade failed, old stopped"
                elif "received SIGUSR2: ignored, this process is stopping" in log:
                    outcome = "upgrade refused while stopping"
                else:
                    outcome = "old stopped first" if "upgrade" not in log.split("received SIGTERM")[0] else "other"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                bad = []
                if not ok:
                    bad.append("no echo before the signals")
                if left:
                    bad.append(f"reflectd still running: pids {left}")
                if status != 0:
                    bad.append(f"the first process exited {status}")
                if how != "eof":
                    bad.append(f"the client saw no EOF ({how})")
                if "still serving" in log:
                    bad.append("the log says 'still serving' although the process stopped")
                if not left:
                    # A restart on the same ports works at once.
                    try:
                        again = Server(binary, ["--port", str(port), "--metrics-port", str(metrics_port)])
                        again.stop()
                    except Exception as e:
                        bad.append(f"restart on the same ports failed: {e}")
                if bad:
                    check(False, f"{what}: {'; '.join(bad)}\n{log[-1500:]}")
            finally:
                for pid in reflectd_processes(server.path):
                    os.kill(pid, signal.SIGKILL)
                server.stop()
    check(not any(w.startswith("gap") for w in FAILURES),
          f"{3 * tries} races: no stray process, exit 0, EOF for the client, ports free at once ({outcomes})")


def failed_child_traces(binary):
    """Issue 19.7: a "binary" that prints a fake startup line and forks a child leaves no trace."""
    print("\n== a failed upgrade leaves no trace: no stray stdout line, no surviving child")
    server = Server(binary, ["--port", "0", "--log-level", "info"])
    try:
        marker = f"{60 + random.random():.6f}"  # a sleep no other process runs
        server.replace_binary(f"#!/bin/sh\necho 'listening on 127.0.0.1:1'\nsleep {marker}\necho done\n")
        os.kill(server.pid, signal.SIGUSR2)
        server.wait_for(lambda: b"upgrade failed" in server.stderr(), 15, "the failure to be logged")
        m = re.search(rb"the new process \(pid (\d+)\)", server.stderr())
        child = int(m.group(1)) if m else None
        check(child is not None, "the log names the failed process")
        time.sleep(0.2)
        check(b"127.0.0.1:1" not in server.stdout(), "its 'listening on 127.0.0.1:1' never reached reflectd's stdout")
        members = group_members(child) if child else []
        sleepers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid) == ["sleep", marker]]
        check(not members and not sleepers, f"the failed process and its child (`sleep`) are gone (group {members}, sleep {sleepers})")
        for pid in sleepers:
            os.kill(int(pid), signal.SIGKILL)
        s = connect(server.port)
        s.sendall(b"ok\n")
        check(recv_exact(s, 3) == b"ok\n" and server.alive(), "the old process still serves")
        s.close()
        server.replace_binary()
        taken, _, status, _ = server.upgrade()
        check(status == 0 and b"listening on" in server.stdout().split(b"\n", 1)[1],
              "a real upgrade afterwards still prints the new process's 'listening on' line")
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--race-tries", type=int, default=10, help="tries of each gap in the stop-race scenario")
    options = parser.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 clients need more than 1,024 fds
    binary = os.path.abspath(options.binary)
    scenarios = {
        "mixed": lambda: mixed(binary, options.connections),
        "repeat": lambda: mixed(binary, 50, upgrades=options.repeat, name="repeat"),
        "reactors-unix": lambda: mixed(binary, 50, ["--reactors", "2", "--max-connections", "500"], family="unix", name="reactors-unix"),
        "failures": lambda: failures(binary),
        "activation": lambda: activation_and_notify(binary),
        "proxy-limit": lambda: proxy_and_client_limit(binary),
        "connection-limit": lambda: connection_limit(binary),
        "take-back": lambda: take_back(binary),
        "stop-race": lambda: stop_race(binary, options.race_tries),
        "failed-traces": lambda: failed_child_traces(binary),
    }
    for name, run in scenarios.items():
        if options.only and name not in options.only:
            continue
        try:
            run()
        except Exception as e:
            check(False, f"{name}: {e}")
    print(f"\n{len(FAILURES)} failure(s)")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
