#!/usr/bin/env python3
"""Soak driver for reflectd (stdlib only, asyncio). Normally started by benchmarks/soak.sh.

Drives a running reflectd on 127.0.0.1 with a mix of clients, all at the same time:
  long-lived  echo clients verifying every byte (rounds of random sizes, pipelined small
              messages), each ending with the exit line and checking EOF follows the echo;
  churn       connect, one message, check the echo, close (or send the exit line);
  reset       connect, send, maybe read a little, close with SO_LINGER 0 (RST);
  never-read  connect with a tiny receive buffer, send until the server stops reading, hold the
              connection a few seconds without reading a byte, then close or reset (bounded count);
  half-close  send a payload, shutdown(SHUT_WR), read the whole echo and then EOF.

Phases: baseline (fd count, RSS) -> warm-up with the full mix -> everyone disconnects and the
server settles (fd count back to baseline; RSS measured: "RSS after warm-up") -> the main soak
with the full mix -> everyone disconnects and the server settles (RSS and fd count measured
again) -> a fresh echo checks the server still accepts.

Fails (exit status 1) on any echo mismatch, any error on a well-behaved client, an fd count that
does not return to its baseline, RSS after the soak above RSS after warm-up plus the margin, a
fresh echo that fails, or a server that died. Every loop is bounded by the phase deadline and
every I/O by a timeout.
"""

import argparse
import asyncio
import os
import random
import socket
import struct
import sys
import time

IO_TIMEOUT = 30.0  # seconds for any single exchange of a well-behaved client


class Stats:
    def __init__(self, max_connections):
        self.max_connections = max_connections
        self.total = 0
        self.connections = {}  # kind -> count
        self.bytes_sent = 0
        self.bytes_verified = 0
        self.mismatches = []
        self.errors = []  # unexpected errors on well-behaved clients
        self.expected_failures = 0  # resets and never-readers that saw the server drop them
        self.never_read_sent = []  # bytes each never-reader got into the connection before it stalled

    def opened(self, kind):
        self.connections[kind] = self.connections.get(kind, 0) + 1
        self.total += 1

    def more(self, stop_at):
        """Whether a client loop may go round again: bounded in time and in connections."""
        return time.monotonic() < stop_at and self.total < self.max_connections

    def mismatch(self, message):
        self.mismatches.append(message)

    def error(self, kind, exc):
        self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")


def proc_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except FileNotFoundError:
        return False
    return True


def random_payload(rng, n):
    # No byte 'e' (0x65): random data can then never contain the exit line by chance.
    data = bytearray(rng.randbytes(n))
    return bytes(data.replace(b"e", b"E"))


async def connect(port, rcvbuf=None):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), IO_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


async def recv_exactly(sock, n, deadline):
    """Reads n bytes; returns (data, eof_seen)."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out with {len(buf)}/{n} bytes")
        chunk = await asyncio.wait_for(loop.sock_recv(sock, min(65536, n - len(buf))), left)
        if not chunk:
            return bytes(buf), True
        buf += chunk
    return bytes(buf), False


async def recv_until_eof(sock, deadline, limit):
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no EOF after {len(buf)} bytes")
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise ValueError(f"more than {limit} bytes before EOF")


def reset_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def compare(stats, kind, sent, got, what):
    if sent != got:
        i = next((k for k in range(min(len(sent), len(got))) if sent[k] != got[k]), min(len(sent), len(got)))
        stats.mismatch(f"{kind}: {what}: sent {len(sent)} bytes, got {len(got)}, first difference at byte {i}")
        return False
    stats.bytes_verified += len(got)
    return True


# ---- client kinds ------------------------------------------------------------------------------

async def long_lived(port, stats, rng, stop_at):
    """Echo rounds until the phase ends (or its own lifetime does), then the exit line."""
    loop = asyncio.get_running_loop()
    while stats.more(stop_at):
        sock = await connect(port)
        stats.opened("long-lived")
        lifetime_end = min(stop_at, time.monotonic() + rng.uniform(5, 30))
        try:
            while time.monotonic() < lifetime_end:
                if rng.random() < 0.3:
                    # Pipelined small messages, some of them lines.
                    parts = [random_payload(rng, rng.randint(1, 200)) + (b"\n" if rng.random() < 0.5 else b"")
                             for _ in range(rng.randint(2, 20))]
                    payload = b"".join(parts)
                    for p in parts:
                        await asyncio.wait_for(loop.sock_sendall(sock, p), IO_TIMEOUT)
                else:
                    payload = random_payload(rng, rng.randint(1, 32 * 1024))
                    await asyncio.wait_for(loop.sock_sendall(sock, payload), IO_TIMEOUT)
                stats.bytes_sent += len(payload)
                got, eof = await recv_exactly(sock, len(payload), time.monotonic() + IO_TIMEOUT)
                if eof or not compare(stats, "long-lived", payload, got, "echo round"):
                    if eof:
                        stats.mismatch(f"long-lived: EOF after {len(got)}/{len(payload)} bytes of a round")
                    return
                await asyncio.sleep(rng.uniform(0, 0.02))
            # The exit line: everything before it comes back, then EOF.
            tail = random_payload(rng, rng.randint(0, 100)) + b"\n"
            await asyncio.wait_for(loop.sock_sendall(sock, tail + b"exit\r\n" + b"ignored after exit"), IO_TIMEOUT)
            stats.bytes_sent += len(tail)
            got = await recv_until_eof(sock, time.monotonic() + IO_TIMEOUT, len(tail) + 64)
            compare(stats, "long-lived", tail, got, "bytes before the exit line")
        except (OSError, asyncio.TimeoutError, TimeoutError, ValueError) as exc:
            stats.error("long-lived", exc)
            return
        finally:
            sock.close()


async def churn(port, stats, rng, stop_at):
    loop = asyncio.get_running_loop()
    while stats.more(stop_at):
        try:
            sock = await connect(port)
        except (OSError, asyncio.TimeoutError) as exc:
            stats.error("churn", exc)
            return
        stats.opened("churn")
        try:
            payload = random_payload(rng, rng.randint(1, 512))
            if rng.random() < 0.25:
                await asyncio.wait_for(loop.sock_sendall(sock, payload + b"\nexit\n"), IO_TIMEOUT)
                stats.bytes_sent += len(payload) + 1
                got = await recv_until_eof(sock, time.monotonic() + IO_TIMEOUT, len(payload) + 64)
                compare(stats, "churn", payload + b"\n", got, "echo before the exit line")
            else:
                await asyncio.wait_for(loop.sock_sendall(sock, payload), IO_TIMEOUT)
                stats.bytes_sent += len(payload)
                got, eof = await recv_exactly(sock, len(payload), time.monotonic() + IO_TIMEOUT)
                compare(stats, "churn", payload, got, "echo")
        except (OSError, asyncio.TimeoutError, TimeoutError, ValueError) as exc:
            stats.error("churn", exc)
            return
        finally:
            sock.close()


async def resetter(port, stats, rng, stop_at):
    loop = asyncio.get_running_loop()
    while stats.more(stop_at):
        try:
            sock = await connect(port)
        except (OSError, asyncio.TimeoutError) as exc:
            stats.error("reset", exc)
            return
        stats.opened("reset")
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, random_payload(rng, rng.randint(1, 64 * 1024))), 5)
            if rng.random() < 0.5:
                await asyncio.wait_for(loop.sock_recv(sock, rng.randint(1, 4096)), 5)
        except (OSError, asyncio.TimeoutError):
            stats.expected_failures += 1
        finally:
            reset_close(sock)
        await asyncio.sleep(rng.uniform(0, 0.05))


async def never_reader(port, stats, rng, stop_at, sent_cap):
    """Sends without ever reading until the server stops taking bytes, holds, then goes."""
    loop = asyncio.get_running_loop()
    while stats.more(stop_at):
        try:
            sock = await connect(port, rcvbuf=4096)
        except (OSError, asyncio.TimeoutError) as exc:
            stats.error("never-read", exc)
            return
        stats.opened("never-read")
        hold_until = min(stop_at, time.monotonic() + rng.uniform(2, 8))
        sent = 0
        chunk = random_payload(rng, 64 * 1024)
        try:
            while time.monotonic() < hold_until:
                if sent < sent_cap:
                    try:
                        n = sock.send(chunk)
                        sent += n
                        continue
                    except BlockingIOError:
                        pass
                await asyncio.sleep(0.05)
        except OSError:
            stats.expected_failures += 1
        finally:
            stats.never_read_sent.append(sent)
            if rng.random() < 0.5:
                reset_close(sock)
            else:
                sock.close()  # unread input makes this an RST too


async def half_closer(port, stats, rng, stop_at):
    loop = asyncio.get_running_loop()
    while stats.more(stop_at):
        try:
            sock = await connect(port)
        except (OSError, asyncio.TimeoutError) as exc:
            stats.error("half-close", exc)
            return
        stats.opened("half-close")
        try:
            payload = random_payload(rng, rng.randint(1, 256 * 1024))
            deadline = time.monotonic() + IO_TIMEOUT
            reader = asyncio.ensure_future(recv_until_eof(sock, deadline, len(payload) + 64))
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, payload), IO_TIMEOUT)
                sock.shutdown(socket.SHUT_WR)
            except BaseException:
                reader.cancel()
                raise
            stats.bytes_sent += len(payload)
            got = await reader
            compare(stats, "half-close", payload, got, "echo before EOF")
        except (OSError, asyncio.TimeoutError, TimeoutError, ValueError) as exc:
            stats.error("half-close", exc)
            return
        finally:
            sock.close()


# ---- phases ------------------------------------------------------------------------------------

async def run_mix(args, stats, seconds, seed, sampler):
    stop_at = time.monotonic() + seconds
    rng = random.Random(seed)
    tasks = []
    for i in range(args.long_lived):
        tasks.append(long_lived(args.port, stats, random.Random(rng.random()), stop_at))
    for i in range(args.churn):
        tasks.append(churn(args.port, stats, random.Random(rng.random()), stop_at))
    for i in range(args.resetters):
        tasks.append(resetter(args.port, stats, random.Random(rng.random()), stop_at))
    for i in range(args.never_readers):
        tasks.append(never_reader(args.port, stats, random.Random(rng.random()), stop_at, args.never_read_cap))
    for i in range(args.half_closers):
        tasks.append(half_closer(args.port, stats, random.Random(rng.random()), stop_at))
    tasks.append(sampler(stop_at))
    # Bounded: every client stops starting work at stop_at, and every exchange has a timeout.
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 2 * IO_TIMEOUT + 10)


async def settle(pid, baseline_fds, timeout):
    """Waits until the server's fd count is back at baseline. Returns (fds, seconds waited)."""
    start = time.monotonic()
    fds = proc_fd_count(pid)
    while fds != baseline_fds and time.monotonic() - start < timeout:
        await asyncio.sleep(0.1)
        fds = proc_fd_count(pid)
    return fds, time.monotonic() - start


async def fresh_echo(port):
    sock = await connect(port)
    try:
        loop = asyncio.get_running_loop()
        msg = b"still accepting\n"
        await asyncio.wait_for(loop.sock_sendall(sock, msg), 5)
        got, _ = await recv_exactly(sock, len(msg), time.monotonic() + 5)
        return got == msg
    finally:
        sock.close()


async def main_async(args):
    pid = args.pid
    stats = Stats(args.max_connections)
    failures = []
    peak = {"rss": 0, "fds": 0}

    async def sampler(stop_at):
        while stats.more(stop_at):
            if not alive(pid):
                return
            peak["rss"] = max(peak["rss"], proc_rss_kb(pid))
            peak["fds"] = max(peak["fds"], proc_fd_count(pid))
            await asyncio.sleep(0.5)

    baseline_fds = proc_fd_count(pid)
    rss_start = proc_rss_kb(pid)
    warmup = args.warmup if args.warmup is not None else min(60.0, max(5.0, args.seconds * 0.2))
    main_seconds = max(1.0, args.seconds - warmup)
    print(f"soak: reflectd pid {pid} port {args.port}; baseline {baseline_fds} fds, RSS {rss_start} kB; "
          f"warm-up {warmup:.0f} s, soak {main_seconds:.0f} s", flush=True)

    t0 = time.monotonic()
    await run_mix(args, stats, warmup, args.seed, sampler)
    fds_warm, waited = await settle(pid, baseline_fds, args.settle)
    rss_warm = proc_rss_kb(pid)
    print(f"soak: warm-up done in {time.monotonic() - t0:.1f} s; settled in {waited:.1f} s to {fds_warm} fds, "
          f"RSS {rss_warm} kB", flush=True)
    if fds_warm != baseline_fds:
        failures.append(f"fd count {fds_warm} after warm-up, baseline {baseline_fds}")

    warm_connections = dict(stats.connections)
    t1 = time.monotonic()
    await run_mix(args, stats, main_seconds, args.seed + 1, sampler)
    soak_elapsed = time.monotonic() - t1
    fds_end, waited = await settle(pid, baseline_fds, args.settle)
    rss_end = proc_rss_kb(pid)
    print(f"soak: main phase done in {soak_elapsed:.1f} s; settled in {waited:.1f} s to {fds_end} fds, "
          f"RSS {rss_end} kB", flush=True)

    if not alive(pid):
        failures.append("reflectd died")
        accepting = False
    else:
        try:
            accepting = await fresh_echo(args.port)
        except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
            accepting = False
            failures.append(f"fresh echo failed: {exc}")
        if not accepting and not any(f.startswith("fresh echo") for f in failures):
            failures.append("fresh echo came back wrong")
        fds_after_fresh, _ = await settle(pid, baseline_fds, args.settle)
        if fds_after_fresh != baseline_fds:
            failures.append(f"fd count {fds_after_fresh} after the fresh echo, baseline {baseline_fds}")

    margin_kb = max(args.rss_margin_kb, int(rss_warm * args.rss_margin_pct / 100))
    if stats.mismatches:
        failures.append(f"{len(stats.mismatches)} echo mismatch(es)")
    if stats.errors:
        failures.append(f"{len(stats.errors)} error(s) on well-behaved clients")
    if fds_end != baseline_fds:
        failures.append(f"fd count {fds_end} at the end, baseline {baseline_fds}")
    if rss_end > rss_warm + margin_kb:
        failures.append(f"RSS {rss_end} kB at the end > {rss_warm} kB after warm-up + {margin_kb} kB margin")

    total = sum(stats.connections.values())
    print()
    print("==== soak summary ====")
    print(f"duration        warm-up {warmup:.0f} s + soak {soak_elapsed:.0f} s (total {time.monotonic() - t0:.0f} s)")
    print(f"connections     {total} total: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.connections.items())))
    print(f"                (warm-up {sum(warm_connections.values())}, soak {total - sum(warm_connections.values())})")
    print(f"bytes           {stats.bytes_sent} sent by verifying clients, {stats.bytes_verified} echoed and verified")
    print(f"mismatches      {len(stats.mismatches)}")
    print(f"client errors   {len(stats.errors)} (well-behaved clients); "
          f"{stats.expected_failures} expected drops (reset / never-read clients)")
    if stats.never_read_sent:
        nr = stats.never_read_sent
        stalled = sum(1 for n in nr if n < args.never_read_cap)
        print(f"never-readers   {stalled}/{len(nr)} stalled (server stopped reading) after at most {max(nr) // 1024} KiB, "
              f"mean {sum(nr) // len(nr) // 1024} KiB (socket buffers + the server's bounded output buffer)")
    print(f"RSS             start {rss_start} kB, after warm-up {rss_warm} kB, peak {peak['rss']} kB, "
          f"end {rss_end} kB (allowed {rss_warm + margin_kb} kB)")
    print(f"fds             baseline {baseline_fds}, after warm-up {fds_warm}, peak {peak['fds']}, end {fds_end}")
    print(f"still accepting {'yes' if accepting else 'NO'}")
    for m in stats.mismatches[:10]:
        print(f"  mismatch: {m}")
    for e in stats.errors[:10]:
        print(f"  error: {e}")
    if failures:
        print("RESULT: FAIL: " + "; ".join(failures))
        return 1
    print("RESULT: PASS")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pid", type=int, required=True, help="reflectd's process id (for /proc)")
    p.add_argument("--port", type=int, required=True, help="reflectd's port on 127.0.0.1")
    p.add_argument("--seconds", type=float, default=300, help="total drive time, warm-up included (default 300)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds (default 20%% of --seconds, 5..60)")
    p.add_argument("--settle", type=float, default=30, help="most seconds to wait for the fd count to return")
    p.add_argument("--long-lived", type=int, default=16)
    p.add_argument("--churn", type=int, default=6, help="churn workers (each opens connections one after another)")
    p.add_argument("--resetters", type=int, default=2)
    p.add_argument("--never-readers", type=int, default=4, help="never-reading connections open at once")
    p.add_argument("--never-read-cap", type=int, default=64 << 20, help="most bytes one never-reader sends")
    p.add_argument("--half-closers", type=int, default=2)
    p.add_argument("--rss-margin-kb", type=int, default=2048, help="allowed RSS growth, absolute (default 2048)")
    p.add_argument("--rss-margin-pct", type=float, default=5, help="allowed RSS growth, %% of RSS after warm-up (default 5)")
    p.add_argument("--max-connections", type=int, default=10_000_000,
                   help="stop opening connections after this many (a bound besides time)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if not alive(args.pid):
        print(f"soak: no process {args.pid}", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
