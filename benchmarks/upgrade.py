#!/usr/bin/env python3
"""Upgrade benchmark: N connections open, A of them in a pingpong loop, then SIGUSR2.

Reports the time to hand over (SIGUSR2 to the old process's exit, and the old process's own
count), the longest echo round trip seen by any active client around the swap, and refused
connects, lost and duplicated bytes (each active client checks every reply byte-exact; every
idle connection is pinged after the swap). Loopback only; one epoll loop on the client side.

  benchmarks/upgrade.py BINARY [--connections 10000] [--active 1000] [--seconds 3]
"""
import argparse, os, random, re, resource, selectors, shutil, signal, socket, subprocess, sys, tempfile, threading, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--active", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--reactors", type=int, default=1)
    o = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    directory = tempfile.mkdtemp(prefix="reflectd-upgrade-bench-")
    path = os.path.join(directory, "reflectd")
    shutil.copy2(o.binary, path)
    err = open(os.path.join(directory, "err"), "w+b")
    server = subprocess.Popen([path, "--host", "127.0.0.1", "--port", "0", "--reactors", str(o.reactors), "--log-level", "notice"],
                              stdout=subprocess.PIPE, stderr=err)
    line = server.stdout.readline().decode()
    port = int(line.rsplit(":", 1)[1])

    def stderr():
        with open(err.name, "rb") as f:
            return f.read().decode(errors="replace")

    rng = random.Random(1)
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(o.connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        conns.append(s)
    active = conns[:o.active]
    idle = conns[o.active:]
    state = {}
    for s in active:
        msg = bytes(rng.randbytes(64)).replace(b"\n", b"x").replace(b"e", b"f")
        state[s.fileno()] = [s, msg, bytearray(), time.time(), 0]
        s.send(msg)
        sel.register(s, selectors.EVENT_READ)

    stats = {"rounds": 0, "lost": 0, "dup": 0, "longest": 0.0, "longest_at": 0.0}
    refused = []
    connects = [0]
    stop = threading.Event()

    def connector():
        while not stop.is_set():
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(b"ping\n")
                c.settimeout(5)
                got = b""
                while len(got) < 5:
                    chunk = c.recv(5 - len(got))
                    if not chunk:
                        break
                    got += chunk
                if got != b"ping\n":
                    refused.append(f"bad echo {got!r}")
                c.close()
                connects[0] += 1
            except OSError as e:
                refused.append(repr(e))
            time.sleep(0.005)

    def pump(until):
        while time.time() < until:
            for key, _ in sel.select(0.05):
                fd = key.fd
                s, msg, buf, sent_at, _ = st = state[fd]
                data = s.recv(65536)
                if not data:
                    stats["lost"] += 1
                    sel.unregister(s)
                    continue
                buf += data
                if len(buf) >= len(msg):
                    if bytes(buf[:len(msg)]) != msg:
                        stats["lost"] += 1
                    if len(buf) > len(msg):
                        stats["dup"] += len(buf) - len(msg)
                    rtt = time.time() - sent_at
                    if rtt > stats["longest"]:
                        stats["longest"], stats["longest_at"] = rtt, sent_at
                    stats["rounds"] += 1
                    st[2] = bytearray()
                    st[3] = time.time()
                    s.send(msg)

    thread = threading.Thread(target=connector, daemon=True)
    thread.start()
    pump(time.time() + o.seconds)
    before = dict(stats)
    stats["longest"] = 0.0
    old = server.pid
    t0 = time.time()
    os.kill(old, signal.SIGUSR2)
    exited = None

    def watch():
        nonlocal exited
        server.wait()
        exited = time.time()

    threading.Thread(target=watch, daemon=True).start()
    pump(time.time() + o.seconds)
    stop.set()
    thread.join(10)
    m = re.search(r"handed (\d+) connections and (\d+) listeners to pid (\d+) in (\d+) ms \(reading paused (\d+) ms\)", stderr())
    took = re.search(r"took (\d+) connections from pid", stderr())
    new_pid = int(m.group(3)) if m else None
    # Every idle connection still echoes, exactly once.
    idle_bad = 0
    for s in idle:
        s.setblocking(True)
        s.settimeout(5)
        try:
            s.sendall(b"idle\n")
            got = b""
            while len(got) < 5:
                chunk = s.recv(5 - len(got))
                if not chunk:
                    break
                got += chunk
            if got != b"idle\n":
                idle_bad += 1
        except OSError:
            idle_bad += 1
    handover_ms = (exited - t0) * 1000 if exited else None
    print(f"connections {o.connections}, active {o.active}, reactors {o.reactors}")
    print(f"handed over: {m.group(1) if m else '?'} connections (new process took {took.group(1) if took else '?'}), old exit status {server.returncode}")
    print(f"time to hand over: SIGUSR2 -> old process exited {handover_ms:.0f} ms; old process's own count {m.group(4) if m else '?'} ms, reading paused {m.group(5) if m else '?'} ms")
    print(f"longest echo round trip: {before['longest'] * 1000:.1f} ms before the swap, {stats['longest'] * 1000:.1f} ms across it")
    print(f"rounds {stats['rounds']}; lost replies {stats['lost']}; duplicated bytes {stats['dup']}; idle connections not echoing {idle_bad}")
    print(f"connects during the swap {connects[0]}, refused or failed {len(refused)} {refused[:3]}")
    ok = m and server.returncode == 0 and stats["lost"] == 0 and stats["dup"] == 0 and idle_bad == 0 and not refused
    for s in conns:
        s.close()
    if new_pid:
        try:
            os.kill(new_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    shutil.rmtree(directory, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
