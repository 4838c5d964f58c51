#!/usr/bin/env python3
"""The cost curve: what 100 active connections cost the server as idle ones pile up beside them.

For each server (reflectd, the C epoll baseline) and each N idle connections: a fresh server
pinned to CPU 0; N idle connections opened by holder processes (at most HOLD_PER_PROCESS each, a
process may hold at most ~20,000 fds here); then reflect-bench pingpong on 100 connections at
depth 1 and at depth 16 (on CPU 1). Reported at each N:
  - server CPU per message (utime+stime of the server over the run / messages),
  - p50 / p99 latency (reflect-bench),
  - server RSS per idle connection ((RSS with N idle - RSS before) / N),
  - kernel memory per idle connection: /proc/meminfo Slab and /proc/net/sockstat TCP `mem`
    deltas / N. Both ends of each connection are on this host (loopback), so these count two
    sockets per connection; other processes on a shared machine add noise to Slab.
Writes benchmarks/results/DATE-scale.{md,json,svg}.

Usage: benchmarks/scale.sh [--idle 0,1000,5000,10000,19000] [--duration S] [--servers reflectd,c-epoll] [--no-build]
"""
import argparse, datetime, json, os, shlex, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (benchmarks/run.py: build, Server, bench, CPU and memory readings)
from run import ROOT, SERVER_CPU, LOAD_CPU, log  # noqa: E402

HOLD_PER_PROCESS = 9500

HOLDER = r"""
import socket, sys, selectors, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
sel = selectors.DefaultSelector()
pending = 0
for i in range(n):
    s = socket.socket(); s.setblocking(False)
    try: s.connect(("127.0.0.1", port))
    except BlockingIOError: pass
    socks.append(s); sel.register(s, selectors.EVENT_WRITE); pending += 1
    if pending >= 500 or i == n - 1:
        deadline = time.time() + 30
        while pending and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err: sys.exit(f"connect failed: errno {err}")
                sel.unregister(key.fileobj); pending -= 1
        if pending: sys.exit("connects timed out")
print("ready", flush=True)
sys.stdin.read()
"""


def meminfo_slab():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    return 0


def sockstat_mem():
    """TCP socket buffer memory in bytes (sockstat `mem` is in pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def hold(port, n):
    holders = []
    left = n
    while left > 0:
        k = min(HOLD_PER_PROCESS, left)
        cmd = f"ulimit -n $(ulimit -Hn); exec taskset -c {LOAD_CPU} python3 -c {shlex.quote(HOLDER)} {port} {k}"
        p = subprocess.Popen(["bash", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"idle holder failed after {n - left} connections")
        holders.append(p)
        left -= k
    return holders


def release(holders):
    for p in holders:
        p.stdin.close()
    for p in holders:
        p.wait(timeout=30)


def pingpong(server, bench_bin, depth, duration):
    flags = f"--connections 100 --depth {depth} --size 64"
    cpu0 = run.proc_cpu_seconds(server.pid)
    result, cmd = run.bench(bench_bin, server.port, "pingpong", flags, 0, duration)
    cpu1 = run.proc_cpu_seconds(server.pid)
    messages = run.get(result, "messages")
    return {
        "command": cmd, "messages": messages, "msg_per_s": run.get(result, "msgs_per_s"),
        "p50_us": run.get(result, "latency_us.p50"), "p99_us": run.get(result, "latency_us.p99"),
        "errors": run.get(result, "errors.total"),
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "cpu_us_per_msg": round((cpu1 - cpu0) / messages * 1e6, 4) if messages else None,
    }


def point(name, argv, bench_bin, n, args):
    server = run.Server(name, argv)
    try:
        run.bench(bench_bin, server.port, "pingpong", "--connections 100 --depth 16 --size 64", 0, 1)  # warm-up
        time.sleep(0.5)
        rss0, slab0, mem0 = vm_rss(server.pid), meminfo_slab(), sockstat_mem()
        holders = hold(server.port, n) if n else []
        try:
            time.sleep(1.0)
            rss1, slab1, mem1 = vm_rss(server.pid), meminfo_slab(), sockstat_mem()
            row = {"server": name, "idle": n,
                   "rss_per_idle": round((rss1 - rss0) / n, 1) if n else None,
                   "slab_per_idle": round((slab1 - slab0) / n, 1) if n else None,
                   "sockmem_per_idle": round((mem1 - mem0) / n, 1) if n else None,
                   "rss_before": rss0, "rss_after": rss1,
                   "d1": pingpong(server, bench_bin, 1, args.duration),
                   "d16": pingpong(server, bench_bin, 16, args.duration)}
        finally:
            release(holders)
    finally:
        server.stop()
    log(f"{name:9} idle {n:>6}: cpu/msg d1 {row['d1']['cpu_us_per_msg']} us, d16 {row['d16']['cpu_us_per_msg']} us, "
        f"p99 d1 {row['d1']['p99_us']} us, RSS/idle {row['rss_per_idle']} B, Slab/idle {row['slab_per_idle']} B")
    return row


def median_row(points):
    """The median of each figure over repeated points (the spread of CPU/msg kept beside it)."""
    def med(values):
        values = sorted(v for v in values if v is not None)
        return values[len(values) // 2] if values else None
    row = {"server": points[0]["server"], "idle": points[0]["idle"], "points": len(points)}
    for key in ("rss_per_idle", "slab_per_idle", "sockmem_per_idle"):
        row[key] = med([p[key] for p in points])
    for depth in ("d1", "d16"):
        row[depth] = {key: med([p[depth][key] for p in points])
                      for key in ("cpu_us_per_msg", "p50_us", "p99_us", "msg_per_s", "messages", "errors")}
        cpus = [p[depth]["cpu_us_per_msg"] for p in points]
        row[depth]["cpu_us_per_msg_range"] = [min(cpus), max(cpus)]
        row[depth]["command"] = points[0][depth]["command"]
    return row


def chart(rows, idle, date):
    """Two panels (CPU/msg at depth 1 and 16) against N idle, one line per server."""
    colors = {"reflectd": "#d9480f", "c-epoll": "#1c7ed6"}
    w, ph, left, right = 720, 220, 70, 150
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{2 * ph + 50}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="15" font-weight="bold">Server CPU per message vs idle connections, 100 active — {date}</text>']
    xs = {n: left + (w - left - right) * i / max(1, len(idle) - 1) for i, n in enumerate(idle)}
    for p, depth in enumerate(["d1", "d16"]):
        y0 = 40 + p * ph
        vals = [r[depth]["cpu_us_per_msg"] or 0 for r in rows]
        top = max(vals + [1e-9]) * 1.15
        y = lambda v: y0 + ph - 30 - (ph - 60) * v / top  # noqa: E731
        out.append(f'<text x="10" y="{y0 + 14}" font-weight="bold">depth {depth[1:]}: CPU/msg (µs)</text>')
        out.append(f'<line x1="{left}" y1="{y(0):.1f}" x2="{w - right}" y2="{y(0):.1f}" stroke="#999"/>')
        for n in idle:
            out.append(f'<text x="{xs[n]:.1f}" y="{y(0) + 16:.1f}" text-anchor="middle">{n:,}</text>')
        for s in colors:
            pts = [(xs[r["idle"]], y(r[depth]["cpu_us_per_msg"] or 0), r[depth]["cpu_us_per_msg"]) for r in rows if r["server"] == s]
            if not pts:
                continue
            out.append(f'<polyline fill="none" stroke="{colors[s]}" stroke-width="2" points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b, _ in pts) + '"/>')
            for a, b, v in pts:
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colors[s]}"/>')
            out.append(f'<text x="{pts[-1][0] + 8:.1f}" y="{pts[-1][1] + 4:.1f}" fill="{colors[s]}">{s} {pts[-1][2]:.2f}</text>')
        out.append(f'<text x="{w - right + 8}" y="{y(0) + 16:.1f}">idle conns</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--idle", default="0,1000,5000,10000,19000")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--servers", default="reflectd,c-epoll")
    p.add_argument("--repeat", type=int, default=3, help="points per server and N; the median is reported")
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    args.servers = args.servers.split(",")
    idle = [int(x) for x in args.idle.split(",")]
    servers, bench_bin = run.build(args)
    started = time.time()
    runs = []
    # Interleaved (for each N: reflectd, C, reflectd, C, ...), so that a change in the shared
    # machine's load hits both servers alike; each figure is the median of --repeat points.
    for n in idle:
        for _ in range(args.repeat):
            for name in args.servers:
                runs.append(point(name, servers[name], bench_bin, n, args))
    rows = [median_row([r for r in runs if r["server"] == name and r["idle"] == n])
            for n in idle for name in args.servers]
    date = datetime.date.today().isoformat()
    base = os.path.join(ROOT, "benchmarks", "results", f"{date}-scale")
    command = "benchmarks/scale.sh " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with open(base + ".json", "w") as f:
        text = json.dumps({"date": date, "command": command, "idle": idle, "duration_s": args.duration,
                           "seconds": round(time.time() - started), "repeat": args.repeat,
                           "rows": rows, "runs": runs}, indent=1)
        f.write(text.replace(ROOT + "/", ""))  # repo-relative paths in committed results
    by = {(r["server"], r["idle"]): r for r in rows}
    md = [f"# The cost curve, {date}", "",
          f"Command: `{command}` ({round(time.time() - started)} s). Server pinned to CPU {SERVER_CPU}, "
          f"reflect-bench and the idle holders on CPU {LOAD_CPU}; 100 active pingpong connections (64-byte messages), "
          f"{args.duration:g} s per point, a fresh server per point, each figure the median of {args.repeat} points "
          "(CPU/msg min–max in the JSON). The machine was shared with other builds: "
          "compare the two servers at the same N (measured back to back), not absolute numbers across runs.", "",
          "Kernel memory is per idle connection with both ends on this host (two sockets). Slab is the whole "
          "machine's, so other processes add noise to it.", "",
          "| N idle | server | CPU/msg d1 (µs) | CPU/msg d16 (µs) | vs C d1 | vs C d16 | p50/p99 d1 (µs) | p99 d16 (µs) | msg/s d16 | RSS/idle conn (B) | Slab/idle conn (B) | sockstat mem/idle conn (B) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def ratio(r, depth):
        c = by.get(("c-epoll", r["idle"]))
        if not c or not c[depth]["cpu_us_per_msg"] or not r[depth]["cpu_us_per_msg"]:
            return "–"
        return f"{r[depth]['cpu_us_per_msg'] / c[depth]['cpu_us_per_msg']:.2f}x"

    fmt = lambda v: "–" if v is None else f"{v:,.0f}"  # noqa: E731
    for r in rows:
        md.append(f"| {r['idle']:,} | {r['server']} | {r['d1']['cpu_us_per_msg']:.2f} | {r['d16']['cpu_us_per_msg']:.2f} | "
                  f"{ratio(r, 'd1')} | {ratio(r, 'd16')} | {r['d1']['p50_us']:.0f}/{r['d1']['p99_us']:.0f} | {r['d16']['p99_us']:.0f} | "
                  f"{r['d16']['msg_per_s']:,.0f} | {fmt(r['rss_per_idle'])} | {fmt(r['slab_per_idle'])} | {fmt(r['sockmem_per_idle'])} |")
    md += ["", f"Raw numbers: [{date}-scale.json]({date}-scale.json). Chart: [{date}-scale.svg]({date}-scale.svg).", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(md))
    with open(base + ".svg", "w") as f:
        f.write(chart(rows, idle, date))
    print("\n".join(md))
    log(f"wrote {base}.md, .json, .svg")


if __name__ == "__main__":
    main()
