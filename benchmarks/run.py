#!/usr/bin/env python3
"""Comparison benchmark for reflectd. See benchmarks/README.md.

reflectd runs twice: as users run it (the exit line on) and with `--exit-line off` (a pure RFC 862
echo, the same work as the baselines). Payloads are binary (every byte value) unless --payload
text is given.

Speed is reported as server CPU time per message (utime+stime of the server, read from /proc,
over the measured window, divided by the messages echoed in it), with ratios against the other
servers measured in the same run: the load generator shares the machine, so msg/s alone says
more about the client than about the server.
"""
import argparse, datetime, json, os, re, shlex, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, LOAD_CPU = "0", "1"


def rel(text):
    """`text` with this checkout's absolute path made repository-relative (results are committed)."""
    return text.replace(ROOT + os.sep, "").replace(ROOT, ".")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    log("$ " + (cmd if isinstance(cmd, str) else " ".join(map(shlex.quote, cmd))))
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


# ---------------------------------------------------------------- building

def build(args):
    if not args.no_build:
        sh(["swift", "build", "-c", "release", "--product", "reflectd"], cwd=ROOT)
        sh(["swift", "build", "-c", "release", "--product", "reflect-bench"], cwd=ROOT)
    bin_dir = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout.strip()
    reflectd = os.path.join(bin_dir, "reflectd")
    # The load comes from one address, which may hold more connections (scale.sh: 19,000 idle)
    # than the default per-client limit allows (90 % of the fd room): off, as for any benchmark.
    unlimited = ["--max-connections-per-client", "off"] if supports(reflectd, "--max-connections-per-client") else []
    servers = {"reflectd": [reflectd, "--log-level", "warning"] + unlimited,
               "reflectd-off": [reflectd, "--log-level", "warning", "--exit-line", "off"] + unlimited}
    baselines = os.path.join(ROOT, "benchmarks", "baselines")
    wanted = set(args.servers)
    if not args.no_build and wanted & {"c-epoll", "nio", "go", "fork"}:
        sh([os.path.join(baselines, "build.sh")], stdout=subprocess.DEVNULL)
    servers["c-epoll"] = [os.path.join(baselines, "c-epoll", "echo_epoll")]
    servers["nio"] = [os.path.join(baselines, "nio-echo", ".build", "release", "nio-echo")]
    servers["go"] = [os.path.join(baselines, "go-echo", "go-echo")]
    servers["fork"] = [os.path.join(baselines, "c-fork", "echo_fork")]
    bench = os.path.join(bin_dir, "reflect-bench")
    if "reflectd-off" in wanted and not supports(reflectd, "--exit-line"):
        log("skipping reflectd-off: this reflectd has no --exit-line option")
        wanted.discard("reflectd-off")
    return {k: v for k, v in servers.items() if k in wanted}, bench


def supports(binary, option):
    """True if `binary --help` mentions `option`."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return option in out.stdout + out.stderr


# ---------------------------------------------------------------- processes

def proc_cpu_seconds(pid):
    """utime+stime of pid (all its threads) plus that of its live children and reaped children."""
    def stat(p):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields
    total = 0
    f = stat(pid)
    total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            try:
                g = stat(entry)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(g[1]) == pid:  # a fork-per-client child
                total += int(g[11]) + int(g[12])
    return total / TICK


def rss_bytes(pid):
    """Proportional set size (PSS) of pid and its children: resident memory, with each page shared
    by several processes (the fork server's children share the parent's code and libraries)
    counted once in total rather than once per process."""
    def one(p):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
        return 0
    total = one(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            if ppid == pid:
                total += one(entry)
    return total


class Server:
    def __init__(self, name, argv):
        self.name = name
        cmd = f"ulimit -n $(ulimit -Hn); exec taskset -c {SERVER_CPU} " + " ".join(map(shlex.quote, argv + ["--port", "0"]))
        self.command = f"taskset -c {SERVER_CPU} " + " ".join(map(shlex.quote, argv + ["--port", "0"]))
        self.proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = self._wait_listening()

    def _wait_listening(self):
        deadline = time.time() + 30
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        while time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                line = key.fileobj.readline()
                m = re.search(r"listening on \S*:(\d+)", line)
                if m:
                    sel.close()
                    # Keep draining output in the background so the server never blocks on a pipe.
                    for stream in (self.proc.stdout, self.proc.stderr):
                        subprocess.Popen(["cat"], stdin=stream, stdout=subprocess.DEVNULL)
                    return int(m.group(1))
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"{self.name} did not print its listening line")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Set in main(): "--payload binary" or "--payload text", or "" when reflect-bench has no such option.
PAYLOAD_FLAG = ""


def bench(bench_bin, port, scenario, extra, warmup, duration):
    payload = f" {PAYLOAD_FLAG}" if PAYLOAD_FLAG else ""
    cmd = (f"ulimit -n $(ulimit -Hn); exec taskset -c {LOAD_CPU} {shlex.quote(bench_bin)} {scenario} "
           f"--host 127.0.0.1 --port {port} --warmup {warmup} --duration {duration} --json{payload} {extra}")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=duration + warmup + 120)
    if out.returncode != 0:
        raise RuntimeError(f"reflect-bench {scenario} failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), cmd


def get(d, *names, default=0):
    for n in names:
        cur = d
        ok = True
        for part in n.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                ok = False
                break
        if ok:
            return cur
    return default


# ---------------------------------------------------------------- scenarios

SERVER_ORDER = ["reflectd", "reflectd-off", "c-epoll", "go", "nio", "fork"]

SCENARIOS = [
    # name, reflect-bench scenario, flags, what counts as a "message"
    ("pingpong-d1", "pingpong", "--connections 100 --depth 1 --size 64"),
    ("pingpong-d16", "pingpong", "--connections 100 --depth 16 --size 64"),
    ("bulk-64k", "bulk", "--connections 4 --depth 4 --size 65536"),
    ("churn", "churn", "--connections 50 --size 64"),
]


def measure(server, bench_bin, name, scenario, flags, args):
    # Warm-up run first (caches, JIT-free but page faults, pools), then the measured run with the
    # server's CPU time sampled around it.
    bench(bench_bin, server.port, scenario, flags, 0, args.warmup)
    cpu0 = proc_cpu_seconds(server.pid)
    result, cmd = bench(bench_bin, server.port, scenario, flags, 0, args.duration)
    cpu1 = proc_cpu_seconds(server.pid)
    messages = get(result, "messages")
    rate = get(result, "msgs_per_s")
    if scenario == "churn":
        # One connect, one echo, one close per unit: count connections.
        messages = get(result, "connects", "messages")
        rate = get(result, "connects_per_s", "msgs_per_s")
    cpu = cpu1 - cpu0
    echoed = get(result, "bytes")
    row = {
        "server": server.name, "scenario": name, "command": rel(cmd), "server_command": rel(server.command),
        "messages": messages,
        "msg_per_s": rate,
        "mb_per_s": get(result, "mb_per_s"),
        "p50_us": get(result, "latency_us.p50"),
        "p99_us": get(result, "latency_us.p99"),
        "p999_us": get(result, "latency_us.p99_9"),
        "p9999_us": get(result, "latency_us.p99_99", default=None),
        # Messages whose echo took longer than reflect-bench's --hold-ms (reflectd's exit-line hold).
        "over_hold": get(result, "over_hold", default=None),
        "timeouts": get(result, "errors.timeouts", default=None),
        "max_us": get(result, "latency_us.max"),
        "errors": get(result, "errors.total"),
        "server_cpu_s": round(cpu, 3),
        "cpu_us_per_msg": round(cpu / messages * 1e6, 4) if messages else None,
        # Per 10^6 bytes echoed, the unit of mb_per_s.
        "cpu_us_per_mb": round(cpu / echoed * 1e12, 2) if echoed else None,
        "raw": result,
    }
    log(f"{server.name:12} {name:13} {row['msg_per_s']:>12} msg/s  cpu/msg {row['cpu_us_per_msg']} us  cpu/MB {row['cpu_us_per_mb']} us  p99 {row['p99_us']}")
    return row


def idle_rss(server, bench_bin, args):
    """RSS per idle connection: server RSS holding N idle connections minus RSS before."""
    n = args.idle_connections if server.name != "fork" else min(args.idle_connections, 1000)
    before = rss_bytes(server.pid)
    cmd = (f"ulimit -n $(ulimit -Hn); exec taskset -c {LOAD_CPU} {shlex.quote(bench_bin)} idle "
           f"--host 127.0.0.1 --port {server.port} --connections {n} --warmup 0 --duration {args.idle_seconds} --json")
    proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = before
    deadline = time.time() + args.idle_seconds + 60
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        peak = max(peak, rss_bytes(server.pid))
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"idle failed: {err[-1500:]}")
    per = (peak - before) / n
    log(f"{server.name:12} idle {n} connections: PSS {before/1e6:.1f} MB -> {peak/1e6:.1f} MB, {per:.0f} B per connection")
    return {"server": server.name, "scenario": f"idle-{n}", "command": rel(cmd), "server_command": rel(server.command), "connections": n,
            "rss_before": before, "rss_peak": peak, "rss_per_connection": round(per, 1)}


def syscalls_per_message(server, bench_bin, args):
    """strace -c -f on the server during a fixed pingpong workload: system calls per message."""
    out_file = os.path.join(tempfile.gettempdir(), f"reflectd-strace-{server.name}.txt")
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out_file, "-p", str(server.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    result, cmd = bench(bench_bin, server.port, "pingpong", "--connections 100 --depth 1 --size 64", 0, args.strace_seconds)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    total, calls = 0, {}
    with open(out_file) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
                total += int(m.group(1))
    messages = get(result, "messages")
    per = total / messages if messages else None
    log(f"{server.name:12} syscalls per message {per:.3f} ({calls})")
    return {"server": server.name, "scenario": "strace-pingpong-d1", "command": rel(cmd), "server_command": rel(server.command), "messages": messages,
            "syscalls": calls, "syscalls_per_msg": round(per, 3) if per else None}


# ---------------------------------------------------------------- report

def write_report(rows, args, started, failures=()):
    date = started.strftime("%Y-%m-%d")
    out_dir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out_dir, exist_ok=True)
    # A --quick run only checks the script: it gets its own name, so it never passes for the real one.
    stem = date + ("-quick" if args.quick else "")
    base = os.path.join(out_dir, stem)
    uname = subprocess.run(["uname", "-sr"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    meta = {"date": started.isoformat(timespec="seconds"), "kernel": uname, "cpu": cpu,
            "command": "benchmarks/run.sh " + " ".join(sys.argv[1:]), "duration_s": args.duration,
            "warmup_s": args.warmup, "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
            "payload": PAYLOAD_FLAG.split()[-1] if PAYLOAD_FLAG else "reflect-bench's default (it has no --payload option)"}
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows, "failures": list(failures)}, f, indent=1)

    def row(server, scenario):
        return next((r for r in rows if r["server"] == server and r["scenario"].startswith(scenario)), None)

    servers = [s for s in SERVER_ORDER if any(r["server"] == s for r in rows)]
    lines = [f"# Benchmark results {date}", "",
             f"- command: `{meta['command']}`", f"- kernel: {uname}; CPU: {cpu}; {os.cpu_count()} cores",
             f"- server pinned to CPU {SERVER_CPU} (`taskset -c {SERVER_CPU}`), load generator `reflect-bench` to CPU {LOAD_CPU}",
             f"- payload: {meta['payload']}",
             "- reflectd runs twice: `reflectd` with the exit line on (the default), `reflectd-off` with `--exit-line off` (a pure RFC 862 echo, no scan)",
             f"- each scenario: {args.warmup} s warm-up run, then a {args.duration} s measured run; CPU per message = server utime+stime over the measured run / messages echoed; CPU per MB = the same / 10^6 bytes echoed",
             "", "## Per server", "",
             "| server | CPU/msg depth 1 (µs) | CPU/msg depth 16 (µs) | msg/s d1 | msg/s d16 | p50 / p99 d1 (µs) | bulk MB/s | CPU per MB bulk (µs) | churn conn/s | CPU/conn churn (µs) | memory/idle conn (B, PSS) | syscalls/msg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in servers:
        d1, d16, bulk, churn = row(s, "pingpong-d1"), row(s, "pingpong-d16"), row(s, "bulk"), row(s, "churn")
        idle, st = row(s, "idle"), row(s, "strace")
        f = lambda r, k, fmt="{:.3f}": (fmt.format(r[k]) if r and r.get(k) is not None else "–")
        lines.append(f"| {s} | {f(d1,'cpu_us_per_msg')} | {f(d16,'cpu_us_per_msg')} | {f(d1,'msg_per_s','{:,.0f}')} | "
                     f"{f(d16,'msg_per_s','{:,.0f}')} | {f(d1,'p50_us','{:.0f}')} / {f(d1,'p99_us','{:.0f}')} | {f(bulk,'mb_per_s','{:,.0f}')} | {f(bulk,'cpu_us_per_mb','{:.0f}')} | "
                     f"{f(churn,'msg_per_s','{:,.0f}')} | {f(churn,'cpu_us_per_msg','{:.2f}')} | {f(idle,'rss_per_connection','{:,.0f}')} | {f(st,'syscalls_per_msg')} |")

    def ratio(a_server, b_server, scn, key):
        a, b = row(a_server, scn), row(b_server, scn)
        if not a or not b or not a.get(key) or not b.get(key):
            return "–"
        return f"{a[key] / b[key]:.2f}×"

    if "c-epoll" in servers:
        lines += ["", "## Every server against C epoll (server / c-epoll, same run; lower is better for CPU, higher for throughput)", "",
                  "| server | CPU/msg d1 | CPU/msg d16 | CPU per MB bulk | bulk MB/s | CPU/conn churn | memory/idle conn | syscalls/msg |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in servers:
            if s == "c-epoll":
                continue
            lines.append(f"| {s} | {ratio(s,'c-epoll','pingpong-d1','cpu_us_per_msg')} | {ratio(s,'c-epoll','pingpong-d16','cpu_us_per_msg')} | "
                         f"{ratio(s,'c-epoll','bulk','cpu_us_per_mb')} | {ratio(s,'c-epoll','bulk','mb_per_s')} | {ratio(s,'c-epoll','churn','cpu_us_per_msg')} | "
                         f"{ratio(s,'c-epoll','idle','rss_per_connection')} | {ratio(s,'c-epoll','strace','syscalls_per_msg')} |")
    for me in ("reflectd", "reflectd-off"):
        if me not in servers:
            continue
        lines += ["", f"## Ratios ({me} / other, same run; lower is better for CPU and latency, higher for throughput)", "",
                  "| vs | CPU/msg d1 | CPU/msg d16 | p99 d1 | bulk MB/s | CPU per MB bulk | churn conn/s | memory/idle conn | syscalls/msg |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in servers:
            if s == me:
                continue
            lines.append(f"| {s} | {ratio(me,s,'pingpong-d1','cpu_us_per_msg')} | {ratio(me,s,'pingpong-d16','cpu_us_per_msg')} | "
                         f"{ratio(me,s,'pingpong-d1','p99_us')} | {ratio(me,s,'bulk','mb_per_s')} | {ratio(me,s,'bulk','cpu_us_per_mb')} | {ratio(me,s,'churn','msg_per_s')} | "
                         f"{ratio(me,s,'idle','rss_per_connection')} | {ratio(me,s,'strace','syscalls_per_msg')} |")
    lines += ["", "## Tail latency and the exit-line hold", "",
              "Messages over the hold: echoes that took longer than reflect-bench's `--hold-ms` (250 ms, reflectd's default "
              "`--exit-hold-ms`), summed over the measured runs of the scenarios above. Any server's slow echo counts; only "
              "`reflectd` with the exit line on waits on purpose, for a binary message that ends in a line-start `e`, `ex` or `exi`.", "",
              "| server | p99.9 / p99.99 / max d1 (µs) | p99.9 / p99.99 / max d16 (µs) | messages over the hold | timeouts | errors |",
              "|---|---|---|---|---|---|"]
    for s in servers:
        d1, d16 = row(s, "pingpong-d1"), row(s, "pingpong-d16")
        mine = [r for r in rows if r["server"] == s and "messages" in r and r["scenario"] in {n for n, _, _ in SCENARIOS}]
        def total(key):
            vals = [r.get(key) for r in mine]
            return "–" if not vals or any(v is None for v in vals) else f"{sum(vals):,}"
        tail = lambda r: "–" if not r else " / ".join("–" if r.get(k) is None else f"{r[k]:,.0f}" for k in ("p999_us", "p9999_us", "max_us"))
        lines.append(f"| {s} | {tail(d1)} | {tail(d16)} | {total('over_hold')} | {total('timeouts')} | {total('errors')} |")
    if failures:
        lines += ["", "## Failed scenarios (no numbers above)", ""]
        for fl in failures:
            # reflect-bench's own "error:" lines say what went wrong; its progress lines do not.
            last = [l for l in fl["error"].splitlines() if "error:" in l] or fl["error"].splitlines()[-1:] or [""]
            lines.append(f"- {fl['server']} / {fl['scenario']}: {last[0][:300]}")
    lines += ["", "## Commands", ""]
    for s in servers:
        sc = next((r.get("server_command") for r in rows if r["server"] == s and r.get("server_command")), None)
        if sc:
            lines.append(f"- {s} server: `{sc}`")
    for r in rows:
        lines.append(f"- {r['server']} / {r['scenario']}: `{r['command']}`")
    lines += ["", f"Raw numbers: [{stem}.json]({stem}.json). Chart: [{stem}.svg]({stem}.svg).", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(base + ".svg", "w") as f:
        f.write(chart(rows, servers, date))
    log(f"wrote {rel(base)}.md, .json, .svg")


def chart(rows, servers, date):
    panels = [("CPU per message, depth 1 (µs)", "pingpong-d1", "cpu_us_per_msg"),
              ("CPU per message, depth 16 (µs)", "pingpong-d16", "cpu_us_per_msg"),
              ("bulk 64 KiB (MB/s)", "bulk", "mb_per_s"),
              ("CPU per MB of bulk (µs)", "bulk", "cpu_us_per_mb"),
              ("churn (connections/s)", "churn", "msg_per_s"),
              ("memory (PSS) per idle connection (B)", "idle", "rss_per_connection")]
    colors = {"reflectd": "#d9480f", "reflectd-off": "#f08c00", "c-epoll": "#1c7ed6", "go": "#0b7285", "nio": "#2b8a3e", "fork": "#868e96"}
    w, ph = 760, 34 + 28 * len(servers)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ph * len(panels) + 40}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="15" font-weight="bold">reflectd vs C epoll, Go, SwiftNIO and fork — {date} (server on 1 core)</text>']
    for i, (title, scn, key) in enumerate(panels):
        y0 = 40 + i * ph
        vals = []
        for s in servers:
            r = next((r for r in rows if r["server"] == s and r["scenario"].startswith(scn)), None)
            vals.append((s, (r or {}).get(key) or 0))
        top = max([v for _, v in vals] + [1e-9])
        out.append(f'<text x="10" y="{y0 + 12}" font-weight="bold">{title}</text>')
        for j, (s, v) in enumerate(vals):
            y = y0 + 22 + j * 28
            bw = 0 if not v else max(2, (w - 260) * v / top)
            out.append(f'<text x="10" y="{y + 14}">{s}</text>')
            out.append(f'<rect x="100" y="{y}" width="{bw:.1f}" height="20" fill="{colors.get(s, "#444")}"/>')
            out.append(f'<text x="{105 + bw:.1f}" y="{y + 14}">{v:,.3f}</text>' if isinstance(v, float) and v < 100 else f'<text x="{105 + bw:.1f}" y="{y + 14}">{v:,.0f}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--servers", default=",".join(SERVER_ORDER),
                   help="comma-separated, from: " + ", ".join(SERVER_ORDER) + " (reflectd-off is reflectd --exit-line off)")
    p.add_argument("--payload", choices=["binary", "text"], default="binary",
                   help="reflect-bench payload: binary (every byte value; the default) or text lines")
    p.add_argument("--idle-connections", type=int, default=10000)
    p.add_argument("--idle-seconds", type=int, default=5)
    p.add_argument("--strace-seconds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="short runs, for checking the script")
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    args.servers = args.servers.split(",")
    if args.quick:
        args.duration, args.warmup, args.idle_connections, args.idle_seconds, args.strace_seconds = 2, 1, 1000, 2, 1
    started = datetime.datetime.now()
    servers, bench_bin = build(args)
    global PAYLOAD_FLAG
    if supports(bench_bin, "--payload"):
        PAYLOAD_FLAG = f"--payload {args.payload}"
    else:
        # Older reflect-bench: its only payload is text lines with no `e` (no exit line possible).
        log(f"reflect-bench has no --payload option: using its default payload, not {args.payload}")
    rows, failures = [], []

    def attempt(name, scenario, run):
        # One failed scenario (a server too slow for reflect-bench's timeout on a loaded machine)
        # must not throw away the rest of the run: it is reported, and the exit status says so.
        try:
            rows.append(run())
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            log(f"{name} {scenario} FAILED: {str(e)[-1500:]}")
            failures.append({"server": name, "scenario": scenario, "error": rel(str(e)[-1500:])})

    for name, argv in servers.items():
        if not os.path.exists(argv[0]):
            log(f"skipping {name}: {argv[0]} not built")
            continue
        server = Server(name, argv)
        try:
            for scn_name, scn, flags in SCENARIOS:
                if name == "fork" and scn == "churn":
                    flags = flags.replace("--connections 50", "--connections 10")
                attempt(name, scn_name, lambda: measure(server, bench_bin, scn_name, scn, flags, args))
            attempt(name, "idle", lambda: idle_rss(server, bench_bin, args))
            if subprocess.run(["which", "strace"], capture_output=True).returncode == 0:
                attempt(name, "strace", lambda: syscalls_per_message(server, bench_bin, args))
        finally:
            server.stop()
    write_report(rows, args, started, failures)
    if failures:
        log(f"{len(failures)} scenario(s) failed: " + ", ".join(f"{f['server']}/{f['scenario']}" for f in failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
