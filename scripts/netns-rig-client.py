#!/usr/bin/env python3
"""Echo clients for scripts/netns-rig.sh: N connections at once, each sends BYTES of binary data
and checks every byte that comes back against what it sent.

Each client sends a slice of one random pattern (its own offset), reads concurrently, and ends
its stream one of two ways: every EXIT_EVERY-th client sends "\\nexit\\n" (the "\\n" is echoed,
the exit line closes the connection), the others shut down their write side. A client is
  complete  every byte (plus the "\\n" for an exit client) came back, then EOF;
  cut       EOF or reset before that, every byte received so far correct;
  wrong     a byte differs, or more came back than was sent (always a failure);
  stuck     no progress for --stall seconds.
Prints one JSON line with the counts, the bytes verified and the time.

--run-at FRACTION CMD runs CMD (a shell command) once FRACTION of all bytes have been echoed:
the rig kills a reflectd host mid-run with it.
"""
import argparse, errno, json, os, random, selectors, socket, subprocess, sys, time

p = argparse.ArgumentParser()
p.add_argument("--host", required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--clients", type=int, default=200)
p.add_argument("--bytes", type=int, default=4 << 20)
p.add_argument("--exit-every", type=int, default=5)
p.add_argument("--source", default=None, help="bind to this local address")
p.add_argument("--stall", type=float, default=30)
p.add_argument("--deadline", type=float, default=150)
p.add_argument("--run-at", nargs=2, metavar=("FRACTION", "CMD"))
p.add_argument("--seed", type=int, default=14)
args = p.parse_args()

CHUNK = 64 * 1024
rng = random.Random(args.seed)
pattern = rng.randbytes(args.bytes + 65536)
view = memoryview(pattern)


class Client:
    def __init__(self, i):
        self.i = i
        self.offset = (i * 7919) % 65536
        self.exit = args.exit_every > 0 and i % args.exit_every == 0
        self.trailer = b"\nexit\n" if self.exit else b""
        self.expect = args.bytes + (1 if self.exit else 0)  # the "\n" before "exit" is data
        self.sent = 0
        self.received = 0
        self.state = "open"
        self.detail = ""
        self.last = time.monotonic()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if args.source:
            s.bind((args.source, 0))
        s.setblocking(False)
        try:
            s.connect((args.host, args.port))
        except BlockingIOError:
            pass
        self.sock = s
        self.writing = True

    def outgoing(self):
        if self.sent < args.bytes:
            return view[self.offset + self.sent: self.offset + min(args.bytes, self.sent + CHUNK)]
        t = self.sent - args.bytes
        return memoryview(self.trailer)[t:]

    def expected(self, start, n):
        """The n bytes expected at stream position start."""
        body = pattern[self.offset + start: self.offset + min(start + n, args.bytes)] if start < args.bytes else b""
        if start + n > args.bytes:
            body += b"\n"
        return body


clients = [Client(i) for i in range(args.clients)]
sel = selectors.DefaultSelector()
for c in clients:
    sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
total_expected = sum(c.expect for c in clients)
echoed = 0
ran = False
started = time.monotonic()
buffer = bytearray(CHUNK)
live = len(clients)


def finish(c, state, detail=""):
    global live
    c.state, c.detail = state, detail
    sel.unregister(c.sock)
    c.sock.close()
    live -= 1


while live > 0:
    now = time.monotonic()
    if now - started > args.deadline:
        for c in clients:
            if c.state == "open":
                finish(c, "stuck", f"deadline {args.deadline}s at {c.received}/{c.expect}")
        break
    for key, events in sel.select(timeout=1):
        c = key.data
        if c.state != "open":
            continue
        if events & selectors.EVENT_WRITE and c.writing:
            data = c.outgoing()
            if len(data) == 0:
                if not c.exit:
                    c.sock.shutdown(socket.SHUT_WR)
                c.writing = False
                sel.modify(c.sock, selectors.EVENT_READ, c)
            else:
                try:
                    c.sent += c.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    # The connection was reset (the host died); what came back is judged on read.
                    c.writing = False
                    sel.modify(c.sock, selectors.EVENT_READ, c)
        if events & selectors.EVENT_READ:
            try:
                n = c.sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                finish(c, "cut" if c.received < c.expect else "complete", f"recv: {errno.errorcode.get(e.errno, e.errno)} after {c.received}")
                continue
            if n == 0:
                if c.received == c.expect:
                    finish(c, "complete")
                else:
                    finish(c, "cut", f"EOF after {c.received}/{c.expect}")
                continue
            if c.received + n > c.expect:
                finish(c, "wrong", f"{c.received + n} bytes back, {c.expect} sent")
                continue
            if bytes(buffer[:n]) != c.expected(c.received, n):
                got = bytes(buffer[:n])
                want = c.expected(c.received, n)
                at = next(k for k in range(n) if got[k] != want[k])
                finish(c, "wrong", f"byte {c.received + at} differs")
                continue
            c.received += n
            echoed += n
            c.last = now
            if args.run_at and not ran and echoed >= float(args.run_at[0]) * total_expected:
                ran = True
                print(f"client: {echoed} of {total_expected} bytes echoed; running: {args.run_at[1]}", file=sys.stderr, flush=True)
                subprocess.run(args.run_at[1], shell=True)
    for c in clients:
        if c.state == "open" and now - c.last > args.stall:
            finish(c, "stuck", f"no progress for {args.stall}s at {c.received}/{c.expect}")

counts = {s: sum(1 for c in clients if c.state == s) for s in ("complete", "cut", "wrong", "stuck")}
problems = [f"client {c.i}: {c.state} {c.detail}" for c in clients if c.state in ("wrong", "stuck")][:10]
print(json.dumps({
    "clients": args.clients, **counts,
    "exit_clients": sum(1 for c in clients if c.exit),
    "bytes_verified": sum(c.received for c in clients),
    "seconds": round(time.monotonic() - started, 2),
    "problems": problems,
    "cuts": [f"client {c.i}: {c.detail}" for c in clients if c.state == "cut"][:5],
}))
