#!/usr/bin/env python3
"""Comparison benchmark for reflectd. See benchmarks/README.md.

reflectd runs twice: as users run it (the exit line on) and with `--exit-line off` (a pure RFC 862
echo, the same work as the baselines), beside C epoll, Go, SwiftNIO, uvloop and fork-per-client
servers. Payloads are binary (every byte value) unless --payload text is given.

Speed is reported as server CPU time per message, per MB of bulk or per connect/echo/close cycle,
by two measures over the same window: the server's own utime+stime (from /proc/PID/stat), and
CPU 0's busy time (user+nice+system+irq+softirq from /proc/stat; the server is pinned to CPU 0).
Every repeat runs every server through every scenario, the servers of each scenario in a fresh
random (seeded) order, so that the machine's drift falls on all servers alike; each cell is the
median over the repeats, with its min-max spread, and a run whose CPU 0 busy time exceeds the
server's own by more than 10 % (someone else ran on CPU 0) is flagged and left out of the median
when at least one run of that cell is clean. Ratios are of medians from this one run. User-space
instructions per message (callgrind, via benchmarks/micro.sh --per-message) are a count.
"""
import argparse, datetime, json, os, random, re, shlex, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, LOAD_CPU = "0", "1"
# A run is contaminated when CPU 0's busy time exceeds the server's own by more than this share
# (2026-12-07-bulk-harness.md: on a quiet CPU 0 the two agree within 3 %) ...
CONTAMINATION_SHARE = 0.10
# ... plus two clock ticks, the resolution of the two differences compared.
CONTAMINATION_SLACK_S = 2 / TICK
# Shown instead of machine paths in the report (filled in by build()).
DISPLAY = {}


def rel(text):
    """`text` with this checkout's absolute path made repository-relative, and the temporary
    and interpreter paths named (results are committed)."""
    for path, name in DISPLAY.items():
        text = text.replace(path, name)
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
               "reflectd-off": [reflectd, "--log-level", "warning", "--exit-line", "off"] + unlimited,
               # reflectd-off echoes bulk streams inside the kernel (splice, issue 23.2); this one
               # reads and writes every byte, as before, to show what the kernel echo is worth.
               "reflectd-off-copy": [reflectd, "--log-level", "warning", "--exit-line", "off", "--kernel-echo", "off"] + unlimited}
    baselines = os.path.join(ROOT, "benchmarks", "baselines")
    wanted = set(args.servers)
    if not args.no_build and wanted & {"c-epoll", "nio", "go", "uvloop", "fork"}:
        sh([os.path.join(baselines, "build.sh")], stdout=subprocess.DEVNULL)
    servers["c-epoll"] = [os.path.join(baselines, "c-epoll", "echo_epoll")]
    servers["nio"] = [os.path.join(baselines, "nio-echo", ".build", "release", "nio-echo")]
    servers["go"] = [os.path.join(baselines, "go-echo", "go-echo")]
    # This interpreter runs the uvloop server (build.sh installs uvloop for `python3`, which
    # run.sh runs this script with).
    servers["uvloop"] = [sys.executable, os.path.join(baselines, "uvloop-echo", "echo.py")]
    DISPLAY[sys.executable] = "python3"
    servers["fork"] = [os.path.join(baselines, "c-fork", "echo_fork")]
    bench = os.path.join(bin_dir, "reflect-bench")
    if "reflectd-off" in wanted and not supports(reflectd, "--exit-line"):
        log("skipping reflectd-off: this reflectd has no --exit-line option")
        wanted.discard("reflectd-off")
    if "reflectd-off-copy" in wanted and not supports(reflectd, "--kernel-echo"):
        log("skipping reflectd-off-copy: this reflectd has no --kernel-echo option")
        wanted.discard("reflectd-off-copy")
    if "uvloop" in wanted and subprocess.run([sys.executable, "-c", "import uvloop"], capture_output=True).returncode != 0:
        log("skipping uvloop: no uvloop module for this python3 (benchmarks/baselines/build.sh installs it)")
        wanted.discard("uvloop")
    # The C bulk generator (the second bulk harness of issue 23), built like tools/harness.py does.
    tmp = tempfile.mkdtemp(prefix="reflectd-bench-")
    cbulk = os.path.join(tmp, "cbulk")
    sh(["cc", "-O2", "-o", cbulk, os.path.join(ROOT, "benchmarks", "tools", "cbulk.c")])
    DISPLAY[cbulk] = "cbulk"
    for name in [n for n in args.servers if n in wanted]:
        if not os.path.exists(servers[name][-1 if name == "uvloop" else 0]):
            log(f"skipping {name}: {rel(servers[name][0])} not built")
            wanted.discard(name)
    return {k: servers[k] for k in args.servers if k in wanted}, bench, cbulk


def supports(binary, option):
    """True if `binary --help` mentions `option`."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return option in out.stdout + out.stderr


# ---------------------------------------------------------------- processes and CPU measures

def proc_cpu_seconds(pid):
    """utime+stime of pid (all its threads) plus that of its reaped children and live children."""
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


def cpu0_busy_seconds():
    """CPU 0's busy time: user+nice+system+irq+softirq from /proc/stat (softirq included: on
    loopback the receive processing of the server's own sends runs there)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{SERVER_CPU} "):
                v = list(map(int, line.split()[1:]))
                return (v[0] + v[1] + v[2] + v[5] + v[6]) / TICK
    raise RuntimeError(f"no cpu{SERVER_CPU} line in /proc/stat")


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
        self.proc.kill()
        self.proc.wait()
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


def cbulk_run(cbulk, port, flags, duration):
    """The C bulk generator: `cbulk PORT CONNS SECONDS SIZE DEPTH` prints the bytes echoed."""
    cmd = f"exec taskset -c {LOAD_CPU} {shlex.quote(cbulk)} {port} {flags.replace('SECONDS', str(duration))}"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise RuntimeError(f"cbulk failed ({out.returncode}): {out.stderr[-2000:]}")
    echoed = int(out.stdout.strip().splitlines()[-1])
    return {"bytes": echoed, "mb_per_s": round(echoed / duration / 1e6, 1)}, cmd


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

SERVER_ORDER = ["reflectd", "reflectd-off", "reflectd-off-copy", "c-epoll", "go", "nio", "uvloop", "fork"]

SCENARIOS = [
    # name, load generator and its scenario, flags
    ("pingpong-d1", "pingpong", "--connections 100 --depth 1 --size 64"),
    ("pingpong-d16", "pingpong", "--connections 100 --depth 16 --size 64"),
    ("bulk-64k", "bulk", "--connections 4 --depth 4 --size 65536"),
    # The same shape from benchmarks/tools/cbulk.c: 4 connections, 64 KiB writes, 4 deep, binary.
    ("bulk-cbulk", "cbulk", "4 SECONDS 65536 4"),
    ("churn", "churn", "--connections 50 --size 64"),
]
SCENARIO_NAMES = [n for n, _, _ in SCENARIOS]
# The scenarios measured once per server (repeat 0): counts and memory, not CPU time.
ONCE = ["idle", "strace"]


def measure(server, bench_bin, cbulk, name, scenario, flags, args, repeat):
    # Warm-up run first (caches, page faults, pools), then the measured run with the server's CPU
    # time and CPU 0's busy time sampled around it.
    if scenario == "cbulk":
        cbulk_run(cbulk, server.port, flags, args.warmup)
    else:
        bench(bench_bin, server.port, scenario, flags, 0, args.warmup)
    own0, busy0 = proc_cpu_seconds(server.pid), cpu0_busy_seconds()
    if scenario == "cbulk":
        result, cmd = cbulk_run(cbulk, server.port, flags, args.duration)
    else:
        result, cmd = bench(bench_bin, server.port, scenario, flags, 0, args.duration)
    own1, busy1 = proc_cpu_seconds(server.pid), cpu0_busy_seconds()
    messages = get(result, "messages")
    rate = get(result, "msgs_per_s")
    if scenario == "churn":
        # One connect, one echo, one close per unit: count connections.
        messages = get(result, "connects", "messages")
        rate = get(result, "connects_per_s", "msgs_per_s")
    cpu, busy = own1 - own0, busy1 - busy0
    echoed = get(result, "bytes")
    per = lambda seconds, units, scale: round(seconds / units * scale, 4) if units else None
    row = {
        "server": server.name, "scenario": name, "repeat": repeat, "command": rel(cmd), "server_command": rel(server.command),
        "messages": messages if scenario != "cbulk" else None,
        "msg_per_s": rate if scenario != "cbulk" else None,
        "mb_per_s": get(result, "mb_per_s"),
        "p50_us": get(result, "latency_us.p50", default=None),
        "p99_us": get(result, "latency_us.p99", default=None),
        "p999_us": get(result, "latency_us.p99_9", default=None),
        "p9999_us": get(result, "latency_us.p99_99", default=None),
        # Messages whose echo took longer than reflect-bench's --hold-ms (reflectd's exit-line hold).
        "over_hold": get(result, "over_hold", default=None),
        "timeouts": get(result, "errors.timeouts", default=None),
        "max_us": get(result, "latency_us.max", default=None),
        "errors": get(result, "errors.total", default=None),
        "server_cpu_s": round(cpu, 3),
        "cpu0_busy_s": round(busy, 3),
        "contaminated": busy > cpu * (1 + CONTAMINATION_SHARE) + CONTAMINATION_SLACK_S,
        # Per message (per connect/echo/close cycle for churn), and per 10^6 bytes echoed.
        "cpu_us_per_msg": per(cpu, messages, 1e6) if scenario != "cbulk" else None,
        "cpu0_us_per_msg": per(busy, messages, 1e6) if scenario != "cbulk" else None,
        "cpu_us_per_mb": per(cpu, echoed, 1e12),
        "cpu0_us_per_mb": per(busy, echoed, 1e12),
        "raw": result,
    }
    unit = "mb" if name.startswith("bulk") else "msg"
    log(f"{server.name:12} {name:13} r{repeat} own {row['cpu_us_per_' + unit]} µs/{unit.replace('mb', 'MB')}  CPU 0 {row['cpu0_us_per_' + unit]}"
        f"{'  CONTAMINATED' if row['contaminated'] else ''}  {row['mb_per_s'] if unit == 'mb' else row['msg_per_s']} {'MB/s' if unit == 'mb' else 'msg/s'}")
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
    return {"server": server.name, "scenario": "idle", "repeat": 0, "command": rel(cmd), "server_command": rel(server.command),
            "connections": n, "rss_before": before, "rss_peak": peak, "rss_per_connection": round(per, 1)}


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
    return {"server": server.name, "scenario": "strace", "repeat": 0, "command": rel(cmd), "server_command": rel(server.command),
            "messages": messages, "syscalls": calls, "syscalls_per_msg": round(per, 3) if per else None}


# Go under callgrind (checked 2026-12-07, valgrind 3.19, Go 1.19): callgrind asserts in
# vgCallgrind_post_signal ("sigNum == vgCallgrind_current_state.sig") on the runtime's signals: on
# SIGTERM (micro.sh --per-message dumps the profile before it) and, at random, on the SIGURG of
# asynchronous preemption, which GODEBUG=asyncpreemptoff=1 turns off for the count. An echo with
# one goroutine per connection never needs preempting, so that changes nothing it counts.
GO_COUNT_ENV = {"GODEBUG": "asyncpreemptoff=1"}
GO_UNDER_VALGRIND = (" (counted with `GODEBUG=asyncpreemptoff=1`: callgrind 3.19 asserts in vgCallgrind_post_signal on the "
                     "SIGURG of Go's asynchronous preemption; the runtime's scheduling makes the count vary by a few % "
                     "between runs: 2,329 to 2,387 in four runs on 2026-12-07)")


def instructions_per_message(servers):
    """User-space instructions per echoed 64-byte message, by callgrind (benchmarks/micro.sh
    --per-message): {server: count or "n/a: why"}. A count: it does not vary from run to run."""
    out = {}
    specs = []
    for name, argv in servers.items():
        if name == "fork":
            out[name] = "n/a: one process per client (callgrind would count fork and exit, not the echo)"
        elif any(" " in a for a in argv):
            out[name] = "n/a: a path with a space (micro.sh splits the command at spaces)"
        else:
            specs.append(f"{name}={' '.join(argv)}")
    if not specs:
        return out
    if subprocess.run(["which", "valgrind"], capture_output=True).returncode != 0:
        return {**out, **{s.split('=')[0]: "n/a: no valgrind" for s in specs}}
    cmd = ["bash", os.path.join(ROOT, "benchmarks", "micro.sh"), "--per-message"] + specs
    log("$ " + rel(" ".join(map(shlex.quote, cmd))))
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600, env={**os.environ, **GO_COUNT_ENV})
    for line in res.stdout.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2:
            out[parts[0]] = int(parts[1]) if parts[1].isdigit() else rel(parts[1]).replace("n/a ", "n/a: ", 1)
    for s in specs:
        out.setdefault(s.split("=")[0], f"n/a: micro.sh printed nothing (exit {res.returncode}: {rel(res.stderr[-200:])})")
    log(f"instructions per message: {out}")
    return out


# ---------------------------------------------------------------- statistics

def cell(rows, server, scenario):
    """The runs of one server in one scenario, summarised: which runs count (the clean ones when
    at least one is clean, else all), and the median and min/max over them of every measure."""
    runs = [r for r in rows if r["server"] == server and r["scenario"] == scenario]
    if not runs:
        return None
    clean = [r for r in runs if not r.get("contaminated")]
    used = clean or runs
    summary = {"runs": len(runs), "flagged": len(runs) - len(clean), "all_flagged": not clean, "used": len(used)}
    for key in ("cpu_us_per_msg", "cpu0_us_per_msg", "cpu_us_per_mb", "cpu0_us_per_mb", "msg_per_s", "mb_per_s",
                "p50_us", "p99_us", "p999_us", "p9999_us", "max_us", "rss_per_connection", "syscalls_per_msg"):
        vals = [r[key] for r in used if r.get(key) is not None]
        if vals:
            summary[key] = statistics.median(vals)
            summary[key + "_min"], summary[key + "_max"] = min(vals), max(vals)
    return summary


def summarise(rows, servers):
    return {(s, scn): c for s in servers for scn in SCENARIO_NAMES + ONCE if (c := cell(rows, s, scn))}


# Which measure each summary column reads: (scenario, key, label).
MEASURES = [("pingpong-d1", "cpu_us_per_msg", "CPU/msg d1"),
            ("pingpong-d16", "cpu_us_per_msg", "CPU/msg d16"),
            ("bulk-64k", "cpu_us_per_mb", "CPU/MB bulk-64k, own"),
            ("bulk-64k", "cpu0_us_per_mb", "CPU/MB bulk-64k, CPU 0"),
            ("bulk-cbulk", "cpu_us_per_mb", "CPU/MB bulk-cbulk, own"),
            ("bulk-cbulk", "cpu0_us_per_mb", "CPU/MB bulk-cbulk, CPU 0"),
            ("churn", "cpu_us_per_msg", "CPU/cycle churn, own"),
            ("churn", "cpu0_us_per_msg", "CPU/cycle churn, CPU 0")]


# ---------------------------------------------------------------- report

def write_report(rows, args, started, seed, instructions, failures=()):
    date = started.strftime("%Y-%m-%d")
    out_dir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out_dir, exist_ok=True)
    # A --quick run only checks the script: it gets its own name, so it never passes for the real one.
    stem = date + ("-quick" if args.quick else "")
    base = os.path.join(out_dir, stem)
    uname = subprocess.run(["uname", "-sr"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    load = open("/proc/loadavg").read().split()[:3]
    meta = {"date": started.isoformat(timespec="seconds"), "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "kernel": uname, "cpu": cpu, "cores": os.cpu_count(),
            "command": "benchmarks/run.sh " + " ".join(sys.argv[1:]), "duration_s": args.duration,
            "warmup_s": args.warmup, "repeats": args.repeats, "seed": seed, "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
            "load_average_at_end": load, "contamination": f"CPU 0 busy > server's own × {1 + CONTAMINATION_SHARE:.2f} + {CONTAMINATION_SLACK_S:.2f} s",
            "payload": PAYLOAD_FLAG.split()[-1] if PAYLOAD_FLAG else "reflect-bench's default (it has no --payload option)"}
    servers = [s for s in SERVER_ORDER if any(r["server"] == s for r in rows) or s in instructions]
    med = summarise(rows, servers)
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows, "instructions_per_msg": instructions,
                   "medians": [{"server": s, "scenario": scn, **c} for (s, scn), c in med.items()],
                   "failures": list(failures)}, f, indent=1)

    def num(v, digits):
        return "–" if v is None else f"{v:,.{digits}f}"

    def value(server, scn, key):
        c = med.get((server, scn))
        return None if not c else c.get(key)

    def ratio(a_server, b_server, scn, key):
        a, b = value(a_server, scn, key), value(b_server, scn, key)
        return "–" if not a or not b else f"{a / b:.2f}×"

    def instr(server):
        v = instructions.get(server)
        return "–" if v is None else f"{v:,}" if isinstance(v, int) else "n/a"

    def instr_ratio(a, b):
        x, y = instructions.get(a), instructions.get(b)
        return f"{x / y:.2f}×" if isinstance(x, int) and isinstance(y, int) and y else "–"

    def flag(server, scn):
        c = med.get((server, scn))
        if not c or not c["flagged"]:
            return ""
        return f" ⚑{c['flagged']}/{c['runs']}" + ("!" if c["all_flagged"] else "")

    lines = [f"# Benchmark results {date}", "",
             f"- command: `{meta['command']}`; started {meta['date']}, finished {meta['finished']}; load average at the end {' '.join(load)}",
             f"- kernel: {uname}; CPU: {cpu}; {os.cpu_count()} cores",
             f"- server pinned to CPU {SERVER_CPU} (`taskset -c {SERVER_CPU}`), load generator (`reflect-bench`, or `cbulk` for bulk-cbulk) to CPU {LOAD_CPU}",
             f"- payload: {meta['payload']}",
             "- reflectd runs as `reflectd` with the exit line on (the default), `reflectd-off` with `--exit-line off` (a pure RFC 862 echo, no scan; "
             "bulk streams echoed inside the kernel with splice where the build has it) and `reflectd-off-copy` with `--exit-line off --kernel-echo off` "
             "(every byte read and written, as before the kernel echo; only where the build has `--kernel-echo`)",
             f"- **{args.repeats} repeat{'s' if args.repeats != 1 else ''}**; in each, every server runs every scenario, the servers of each scenario in a fresh random order "
             f"(Python `random.Random({seed})`, `--seed {seed}` repeats the order), each run on a fresh server process: a {args.warmup} s warm-up, "
             f"then a {args.duration} s measured run. Memory per idle connection and system calls per message are measured once (repeat 0).",
             "- **two CPU measures over the same measured window**: *own* = the server's utime+stime (`/proc/PID/stat`, all threads, the fork "
             "server's children included); *CPU 0* = CPU 0's busy time (user+nice+system+irq+softirq from `/proc/stat`), which includes softirq "
             "work done on CPU 0 outside the server and every other process that ran there. Per message = / messages echoed (per connect/echo/close "
             "cycle for churn); per MB = / 10^6 bytes echoed.",
             f"- **flags**: a run whose CPU 0 busy time exceeds the server's own by more than {CONTAMINATION_SHARE:.0%} (plus two clock ticks) is "
             "*contaminated*: something else ran on CPU 0. `⚑k/n` after a cell: k of its n runs were flagged; its median and spread are over the "
             "clean runs only, and `⚑n/n!` means every run was flagged and the median is over all of them (do not trust that cell).",
             "- **how to read a cell**: `median [min–max]` over the runs used; ratios are of medians, from this one run. A spread wider than the "
             "gap between two servers means the ratio of those two decides nothing (bulk is bimodal on this VM: "
             "`results/2026-12-07-bulk-harness.md`, `results/2026-12-07-harness-after-21.md`). Instructions per message are a count "
             "(callgrind, `benchmarks/micro.sh --per-message`): they do not vary, so they have no spread.",
             ""]

    # 1. The summary the issue asks for: ratios of medians against C epoll.
    if "c-epoll" in servers:
        lines += ["## Summary: every server against C epoll (ratio of medians, server / c-epoll; lower is better)", "",
                  "| server | " + " | ".join(label for _, _, label in MEASURES) + " | instructions/msg (count) |",
                  "|---|" + "---|" * (len(MEASURES) + 1)]
        for s in servers:
            cells = [ratio(s, "c-epoll", scn, key) + flag(s, scn) for scn, key, _ in MEASURES]
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {instr_ratio(s, 'c-epoll')} ({instr(s)}) |")
        lines.append("")
    # 2. The medians themselves.
    lines += ["## Medians [min–max] per server (µs per message, per MB or per churn cycle)", "",
              "| server | " + " | ".join(label for _, _, label in MEASURES) + " | instructions/msg (count) |",
              "|---|" + "---|" * (len(MEASURES) + 1)]
    for s in servers:
        cells = []
        for scn, key, _ in MEASURES:
            c = med.get((s, scn))
            if not c or c.get(key) is None:
                cells.append("–")
                continue
            d = 3 if key.endswith("per_msg") and scn != "churn" else 1 if scn == "churn" else 0
            cells.append(f"{num(c[key], d)} [{num(c[key + '_min'], d)}–{num(c[key + '_max'], d)}]{flag(s, scn)}")
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {instr(s)} |")
    lines.append("")
    # 3. reflectd against each peer.
    for me in ("reflectd", "reflectd-off"):
        if me not in servers:
            continue
        lines += [f"## {me} against each peer (ratio of medians, {me} / peer; lower is better for CPU and latency, higher for throughput)", "",
                  "| vs | " + " | ".join(label for _, _, label in MEASURES) + " | instructions/msg | p99 d1 | bulk-64k MB/s | bulk-cbulk MB/s | memory/idle conn | syscalls/msg |",
                  "|---|" + "---|" * (len(MEASURES) + 6)]
        for s in servers:
            if s == me:
                continue
            cells = [ratio(me, s, scn, key) for scn, key, _ in MEASURES]
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {instr_ratio(me, s)} | {ratio(me, s, 'pingpong-d1', 'p99_us')} | "
                         f"{ratio(me, s, 'bulk-64k', 'mb_per_s')} | {ratio(me, s, 'bulk-cbulk', 'mb_per_s')} | "
                         f"{ratio(me, s, 'idle', 'rss_per_connection')} | {ratio(me, s, 'strace', 'syscalls_per_msg')} |")
        lines.append("")
    # 4. Throughput, latency, memory, system calls (the columns of earlier reports).
    lines += ["## Throughput, latency, memory and system calls (medians over the same runs)", "",
              "| server | msg/s d1 | msg/s d16 | p50 / p99 d1 (µs) | bulk-64k MB/s | bulk-cbulk MB/s | churn conn/s | memory/idle conn (B, PSS) | syscalls/msg |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in servers:
        v = lambda scn, key, d=0: num(value(s, scn, key), d)
        lines.append(f"| {s} | {v('pingpong-d1', 'msg_per_s')} | {v('pingpong-d16', 'msg_per_s')} | {v('pingpong-d1', 'p50_us')} / {v('pingpong-d1', 'p99_us')} | "
                     f"{v('bulk-64k', 'mb_per_s')} | {v('bulk-cbulk', 'mb_per_s')} | {v('churn', 'msg_per_s')} | {v('idle', 'rss_per_connection')} | "
                     f"{v('strace', 'syscalls_per_msg', 3)} |")
    lines.append("")
    # 5. Per run: every number behind the medians, with its flag.
    lines += ["## Every run (own / CPU 0, µs per message, MB or cycle; ⚑ = contaminated)", "",
              "| scenario | server | " + " | ".join(f"repeat {i}" for i in range(args.repeats)) + " |",
              "|---|---|" + "---|" * args.repeats]
    for scn in SCENARIO_NAMES:
        key, ckey = ("cpu_us_per_mb", "cpu0_us_per_mb") if scn.startswith("bulk") else ("cpu_us_per_msg", "cpu0_us_per_msg")
        d = 0 if scn.startswith("bulk") else 1 if scn == "churn" else 3
        for s in servers:
            cells = []
            for i in range(args.repeats):
                r = next((r for r in rows if r["server"] == s and r["scenario"] == scn and r["repeat"] == i), None)
                cells.append("–" if not r else f"{num(r.get(key), d)} / {num(r.get(ckey), d)}{' ⚑' if r['contaminated'] else ''} (#{r['position']})")
            if any(c != "–" for c in cells):
                lines.append(f"| {scn} | {s} | " + " | ".join(cells) + " |")
    lines += ["", "(#N: the server's place in that scenario's random order of that repeat.)", ""]
    # 6. Instructions: how, and why not where not.
    lines += ["## Instructions per message (callgrind)", "",
              "User-space instructions per echoed 64-byte message: `benchmarks/micro.sh --per-message NAME=COMMAND...` runs each server "
              "under callgrind for 10 connections × 1 and × 2,001 ping-pong rounds (`tools/pingpong.py`) and divides the difference by the "
              "20,000 extra messages, so start-up and shutdown cancel out (the profile is dumped before the server is stopped, and the dump and "
              "the exit profile are summed). Kernel work is not counted. All threads of the server count (Go's runtime, NIO's, "
              "Python's interpreter). The C and Swift servers repeat their counts to within an instruction; Go and Python "
              "vary by a few % (uvloop 3,501 to 3,520 in three runs on 2026-12-07).", ""]
    for s in servers:
        v = instructions.get(s)
        lines.append(f"- {s}: " + ("not measured (`--no-instructions`)" if v is None else f"{v:,}" if isinstance(v, int) else v)
                     + (GO_UNDER_VALGRIND if s == "go" and v is not None else ""))
    lines.append("")
    lines += ["## Tail latency and the exit-line hold", "",
              "Medians of p99.9, p99.99 and max over the runs used. Messages over the hold: echoes that took longer than reflect-bench's "
              "`--hold-ms` (250 ms, reflectd's default `--exit-hold-ms`), summed over every measured run. Any server's slow echo counts; only "
              "`reflectd` with the exit line on waits on purpose, for a binary message that ends in a line-start `e`, `ex` or `exi`.", "",
              "| server | p99.9 / p99.99 / max d1 (µs) | p99.9 / p99.99 / max d16 (µs) | messages over the hold | timeouts | errors |",
              "|---|---|---|---|---|---|"]
    for s in servers:
        mine = [r for r in rows if r["server"] == s and r["scenario"] in SCENARIO_NAMES and r["scenario"] != "bulk-cbulk"]
        def total(key):
            vals = [r.get(key) for r in mine]
            return "–" if not vals or any(v is None for v in vals) else f"{sum(vals):,}"
        tail = lambda scn: " / ".join(num(value(s, scn, k), 0) for k in ("p999_us", "p9999_us", "max_us"))
        lines.append(f"| {s} | {tail('pingpong-d1')} | {tail('pingpong-d16')} | {total('over_hold')} | {total('timeouts')} | {total('errors')} |")
    if failures:
        lines += ["", "## Failed runs (no numbers above)", ""]
        for fl in failures:
            # reflect-bench's own "error:" lines say what went wrong; its progress lines do not.
            last = [l for l in fl["error"].splitlines() if "error:" in l] or fl["error"].splitlines()[-1:] or [""]
            lines.append(f"- {fl['server']} / {fl['scenario']} (repeat {fl['repeat']}): {last[0][:300]}")
    lines += ["", "## Commands", "", "- `cbulk` is `benchmarks/tools/cbulk.c`, built with `cc -O2` (usage: `cbulk PORT CONNS SECONDS SIZE DEPTH`)."]
    for s in servers:
        sc = next((r.get("server_command") for r in rows if r["server"] == s and r.get("server_command")), None)
        if sc:
            lines.append(f"- {s} server: `{sc}`")
    # One line per load command: runs differ only in the server's port.
    loads = {}
    for r in rows:
        cmd = re.sub(r"--port [0-9]+|cbulk [0-9]+", lambda m: m.group(0).split()[0] + " PORT", r["command"])
        names = loads.setdefault((r["scenario"], cmd), [])
        if r["server"] not in names:
            names.append(r["server"])
    for (scn, cmd), names in loads.items():
        lines.append(f"- {scn} ({', '.join(names)}): `{cmd}`")
    lines += ["", f"Raw numbers (every run, the medians, the seed): [{stem}.json]({stem}.json). Chart of the medians: [{stem}.svg]({stem}.svg).", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(base + ".svg", "w") as f:
        f.write(chart(med, servers, instructions, date))
    log(f"wrote {rel(base)}.md, .json, .svg")


def chart(med, servers, instructions, date):
    panels = [("CPU per message, depth 1 (µs, own)", "pingpong-d1", "cpu_us_per_msg"),
              ("CPU per message, depth 16 (µs, own)", "pingpong-d16", "cpu_us_per_msg"),
              ("CPU per MB of bulk, reflect-bench (µs, own)", "bulk-64k", "cpu_us_per_mb"),
              ("CPU per MB of bulk, cbulk (µs, own)", "bulk-cbulk", "cpu_us_per_mb"),
              ("CPU per churn cycle (µs, own)", "churn", "cpu_us_per_msg"),
              ("user instructions per message (callgrind)", None, None),
              ("memory (PSS) per idle connection (B)", "idle", "rss_per_connection")]
    colors = {"reflectd": "#d9480f", "reflectd-off": "#f08c00", "reflectd-off-copy": "#fab005", "c-epoll": "#1c7ed6", "go": "#0b7285", "nio": "#2b8a3e",
              "uvloop": "#7048e8", "fork": "#868e96"}
    w, ph = 760, 34 + 28 * len(servers)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ph * len(panels) + 40}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="15" font-weight="bold">reflectd vs C epoll, Go, SwiftNIO, uvloop and fork: medians, {date} (server on 1 core)</text>']
    for i, (title, scn, key) in enumerate(panels):
        y0 = 40 + i * ph
        vals = []
        for s in servers:
            if scn is None:
                v = instructions.get(s)
                vals.append((s, v if isinstance(v, int) else 0))
            else:
                vals.append((s, (med.get((s, scn)) or {}).get(key) or 0))
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds of each measured run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of the warm-up run before each (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="how many times every server runs every scenario (default 3)")
    p.add_argument("--seed", type=int, default=None, help="seed of the servers' random order (default: from the clock; the report names it)")
    p.add_argument("--servers", default=",".join(SERVER_ORDER),
                   help="comma-separated, from: " + ", ".join(SERVER_ORDER) + " (reflectd-off is reflectd --exit-line off; "
                        "reflectd-off-copy adds --kernel-echo off)")
    p.add_argument("--payload", choices=["binary", "text"], default="binary",
                   help="reflect-bench payload: binary (every byte value; the default) or text lines")
    p.add_argument("--idle-connections", type=int, default=10000)
    p.add_argument("--idle-seconds", type=int, default=5)
    p.add_argument("--strace-seconds", type=int, default=3)
    p.add_argument("--no-instructions", action="store_true", help="skip the callgrind count of instructions per message")
    p.add_argument("--quick", action="store_true", help="short runs, for checking the script (results named DATE-quick)")
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    args.servers = args.servers.split(",")
    unknown = [s for s in args.servers if s not in SERVER_ORDER]
    if unknown:
        p.error(f"unknown server(s): {', '.join(unknown)} (choose from {', '.join(SERVER_ORDER)})")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.quick:
        args.duration, args.warmup, args.idle_connections, args.idle_seconds, args.strace_seconds = 2, 1, 1000, 2, 1
    seed = args.seed if args.seed is not None else int(time.time()) % 1000000
    rng = random.Random(seed)
    started = datetime.datetime.now()
    servers, bench_bin, cbulk = build(args)
    global PAYLOAD_FLAG
    if supports(bench_bin, "--payload"):
        PAYLOAD_FLAG = f"--payload {args.payload}"
    else:
        # Older reflect-bench: its only payload is text lines with no `e` (no exit line possible).
        log(f"reflect-bench has no --payload option: using its default payload, not {args.payload}")
    log(f"servers {', '.join(servers)}; {args.repeats} repeats; seed {seed}")
    rows, failures = [], []

    def attempt(name, scenario, repeat, position, run):
        # One failed run (a server too slow for reflect-bench's timeout on a loaded machine) must
        # not throw away the rest: it is reported, and the exit status says so.
        try:
            server = Server(name, servers[name])
        except RuntimeError as e:
            failures.append({"server": name, "scenario": scenario, "repeat": repeat, "error": rel(str(e))})
            return
        try:
            row = run(server)
            row["position"] = position
            rows.append(row)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as e:
            log(f"{name} {scenario} FAILED: {str(e)[-1500:]}")
            failures.append({"server": name, "scenario": scenario, "repeat": repeat, "error": rel(str(e)[-1500:])})
        finally:
            server.stop()

    have_strace = subprocess.run(["which", "strace"], capture_output=True).returncode == 0
    for repeat in range(args.repeats):
        for scn_name, scn, flags in SCENARIOS:
            order = list(servers)
            rng.shuffle(order)
            log(f"repeat {repeat} {scn_name}: {' '.join(order)}")
            for position, name in enumerate(order, 1):
                f = flags
                if name == "fork" and scn == "churn":
                    f = flags.replace("--connections 50", "--connections 10")
                attempt(name, scn_name, repeat, position,
                        lambda server, f=f, scn_name=scn_name, scn=scn: measure(server, bench_bin, cbulk, scn_name, scn, f, args, repeat))
        if repeat == 0:
            for once, run in (("idle", idle_rss), ("strace", syscalls_per_message)):
                if once == "strace" and not have_strace:
                    continue
                order = list(servers)
                rng.shuffle(order)
                for position, name in enumerate(order, 1):
                    attempt(name, once, 0, position, lambda server, run=run: run(server, bench_bin, args))
    instructions = {} if args.no_instructions else instructions_per_message(servers)
    write_report(rows, args, started, seed, instructions, failures)
    if failures:
        log(f"{len(failures)} run(s) failed: " + ", ".join(f"{f['server']}/{f['scenario']}/r{f['repeat']}" for f in failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
