# Both harnesses of issue 23 side by side, servers interleaved (shuffled) in each repeat.
#   python3 benchmarks/tools/harness.py [--seconds 4] [--repeats 3] [--scenarios bulk:reflect-bench,bulk:cbulk,churn]
#                                       [--base DIR] [--trace] [--out FILE.jsonl]
# Run from the repository root after `swift build -c release` and `make -C benchmarks/baselines/c-epoll`.
# Servers: reflectd (exit line on), reflectd-off, reflectd-off-copy (--kernel-echo off, where the
# build has it), c-epoll, and with --base DIR the reflectd in DIR
# (another release build) as base / base-off. Server on CPU 0, load on CPU 1.
# Load generators for bulk: reflect-bench (4 connections, 64 KiB writes, 4 deep, binary) and cbulk
# (benchmarks/tools/cbulk.c, the same shape in C, built into a temporary directory).
# Per run it records the server's CPU per unit (MB for bulk, connection for churn) by three measures:
#   utst   utime+stime from /proc/PID/stat (what run.sh uses)
#   sched  the sum of /proc/PID/task/*/schedstat on-CPU time
#   cpu0   CPU 0's non-idle time from /proc/stat (user+nice+system+irq+softirq+steal): includes
#          every other process that ran on CPU 0, so a run where it exceeds the server's own time
#          by more than 10 % is flagged "contaminated" (someone else used CPU 0).
# With --paired A,B only those two servers run, alternating which goes first, and the last lines
# are the median of the per-repeat ratios A/B (many short pairs beat medians of a few long runs
# when the machine drifts: churn's CPU per cycle moved 28.8 -> 35.3 us for the same server between
# repeats of one run.sh run).
# With --trace (needs perf and tracepoints), each bulk run also records system calls per MB, bytes
# per read and per send, and the bytes a server copied into an output buffer after a short send.
import argparse, collections, json, os, random, re, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=float, default=4)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--scenarios", default="bulk:reflect-bench,bulk:cbulk,churn")
ap.add_argument("--base")
ap.add_argument("--trace", action="store_true")
ap.add_argument("--out")
ap.add_argument("--paired", metavar="A,B",
                help="run only servers A and B, in the order A B in even repeats and B A in odd ones, and end with "
                     "the median of the per-repeat ratios A/B for each scenario and measure: drift over the run "
                     "(the host, TIME_WAIT sockets piling up) falls on both sides of each pair alike")
args = ap.parse_args()
NEW = ".build/release"
tmp = tempfile.mkdtemp()
CBULK = os.path.join(tmp, "cbulk")
subprocess.run(["cc", "-O2", "-o", CBULK, "benchmarks/tools/cbulk.c"], check=True)
# As in run.sh: no per-client connection limit (the C server has none; reflectd's default table
# costs about 800 user instructions per connection).
UNLIMITED = ["--max-connections-per-client", "off"]
servers = {"reflectd": [f"{NEW}/reflectd", "--log-level", "warning"] + UNLIMITED,
           "reflectd-off": [f"{NEW}/reflectd", "--log-level", "warning", "--exit-line", "off"] + UNLIMITED,
           "c-epoll": ["benchmarks/baselines/c-epoll/echo_epoll"]}
if "--kernel-echo" in subprocess.run([f"{NEW}/reflectd", "--help"], capture_output=True, text=True).stdout:
    # reflectd-off echoes bulk in the kernel (splice); this one reads and writes every byte, as before.
    servers["reflectd-off-copy"] = [f"{NEW}/reflectd", "--log-level", "warning", "--exit-line", "off", "--kernel-echo", "off"] + UNLIMITED
if args.base:
    base_help = subprocess.run([f"{args.base}/reflectd", "--help"], capture_output=True, text=True).stdout
    base_unlimited = UNLIMITED if "--max-connections-per-client" in base_help else []
    servers["base"] = [f"{args.base}/reflectd", "--log-level", "warning"] + base_unlimited
    servers["base-off"] = [f"{args.base}/reflectd", "--log-level", "warning", "--exit-line", "off"] + base_unlimited
TICK = os.sysconf("SC_CLK_TCK")

def start(argv):
    p = subprocess.Popen(["taskset", "-c", "0"] + argv + ["--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while True:
        line = p.stdout.readline()
        m = re.search(r"listening on \S*:(\d+)", line)
        if m:
            break
        if not line:
            raise SystemExit(f"{argv[0]} printed no listening line")
    subprocess.Popen(["cat"], stdin=p.stdout, stdout=subprocess.DEVNULL)
    return p, int(m.group(1))

def bench(kind, port, s):
    if kind == "cbulk":
        return int(subprocess.run(["taskset", "-c", "1", CBULK, str(port), "4", str(s)], capture_output=True, text=True, check=True).stdout)
    flags = {"reflect-bench": ["bulk", "--payload", "binary", "--connections", "4", "--depth", "4", "--size", "65536"],
             "churn": ["churn", "--connections", "50", "--size", "64"]}[kind]
    out = subprocess.run(["taskset", "-c", "1", f"{NEW}/reflect-bench", flags[0], "--host", "127.0.0.1", "--port", str(port),
                          "--warmup", "0", "--duration", str(s), "--json"] + flags[1:], capture_output=True, text=True, check=True)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return d.get("connects", d.get("messages")) if kind == "churn" else d["bytes"]

def utst(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK
def sched(pid):
    return sum(int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0]) for t in os.listdir(f"/proc/{pid}/task")) / 1e9
def cpu0():
    for line in open("/proc/stat"):
        if line.startswith("cpu0 "):
            v = list(map(int, line.split()[1:]))
            return (sum(v) - v[3] - v[4]) / TICK  # all but idle and iowait

EVENTS = ["sys_exit_read", "sys_exit_recvfrom", "sys_enter_sendto", "sys_exit_sendto", "sys_enter_epoll_wait", "sys_enter_epoll_pwait",
          "sys_enter_epoll_ctl"]
def trace_summary(data):
    script = subprocess.run(["perf", "script", "-i", data, "-F", "event,trace"], capture_output=True, text=True).stdout
    c = collections.Counter(); readbytes = 0; sends = []; enter = None
    for line in script.splitlines():
        m = re.match(r"\s*syscalls:(\w+):\s*(.*)", line)
        if not m:
            continue
        e, t = m.groups(); c[e] += 1
        if e in ("sys_exit_read", "sys_exit_recvfrom"):
            r = int(t.split("0x")[-1], 16)
            readbytes += r if r < (1 << 62) else 0
        elif e == "sys_enter_sendto":
            d = dict(re.findall(r"(\w+): (0x[0-9a-f]+)", t)); enter = (int(d["buff"], 16), int(d["len"], 16))
        elif e == "sys_exit_sendto" and enter:
            r = int(t.split("0x")[-1], 16); sends.append((enter[0], enter[1], r if r < (1 << 62) else 0)); enter = None
    mb = sum(r for _, _, r in sends) / 1e6 or 1
    shared = collections.Counter(b for b, _, _ in sends).most_common(1)[0][0] if sends else 0  # the read buffer
    reads = c["sys_exit_read"] + c["sys_exit_recvfrom"]
    return dict(reads_per_MB=round(reads / mb, 2), sends_per_MB=round(len(sends) / mb, 2),
                epoll_wait_per_MB=round((c["sys_enter_epoll_wait"] + c["sys_enter_epoll_pwait"]) / mb, 2), epoll_ctl_per_MB=round(c["sys_enter_epoll_ctl"] / mb, 2),
                bytes_per_read=round(readbytes / max(reads, 1)), bytes_per_send=round(mb * 1e6 / max(len(sends), 1)),
                copied_to_output_B_per_MB=round(sum(l - r for b, l, r in sends if b == shared) / mb),
                sent_from_output_B_per_MB=round(sum(r for b, l, r in sends if b != shared) / mb))

pair = args.paired.split(",") if args.paired else None
if pair:
    unknown = [p for p in pair if p not in servers]
    if len(pair) != 2 or unknown:
        raise SystemExit(f"--paired wants two of {', '.join(servers)}, not {args.paired}")
out = open(args.out, "a") if args.out else None
results = []
for rep in range(args.repeats):
    for scen in args.scenarios.split(","):
        kind = scen.split(":")[-1]
        if pair:
            order = [(n, servers[n]) for n in (pair if rep % 2 == 0 else pair[::-1])]
        else:
            order = list(servers.items()); random.shuffle(order)
        for name, argv in order:
            p, port = start(argv)
            bench(kind, port, 1)  # warm-up
            rec = None
            if args.trace and scen.startswith("bulk"):
                data = os.path.join(tmp, "trace.data")
                rec = subprocess.Popen(["perf", "record", "-q", "-o", data, "-e", ",".join("syscalls:" + e for e in EVENTS), "-p", str(p.pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            a, b, c = utst(p.pid), sched(p.pid), cpu0()
            n = bench(kind, port, args.seconds)
            a2, b2, c2 = utst(p.pid), sched(p.pid), cpu0()
            if rec:
                rec.send_signal(2); rec.wait()
            p.terminate(); p.wait()
            unit = n / 1e6 if scen.startswith("bulk") else n
            r = dict(rep=rep, scenario=scen, server=name, units=n, per_s=round(unit / args.seconds, 1),
                     utst_us=round((a2 - a) / unit * 1e6, 2), sched_us=round((b2 - b) / unit * 1e6, 2), cpu0_us=round((c2 - c) / unit * 1e6, 2),
                     contaminated=(c2 - c) > 1.1 * (b2 - b) + 0.05)
            if rec:
                r.update(trace_summary(data))
            print(json.dumps(r), flush=True)
            results.append(r)
            if out:
                out.write(json.dumps(r) + "\n"); out.flush()
if pair:
    for scen in args.scenarios.split(","):
        for measure in ("utst_us", "cpu0_us"):
            ratios = []
            for rep in range(args.repeats):
                a = [r for r in results if r["rep"] == rep and r["scenario"] == scen and r["server"] == pair[0]]
                b = [r for r in results if r["rep"] == rep and r["scenario"] == scen and r["server"] == pair[1]]
                if a and b and b[0][measure]:
                    ratios.append(round(a[0][measure] / b[0][measure], 4))
            ratios.sort()
            median = ratios[len(ratios) // 2] if len(ratios) % 2 else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
            line = dict(paired=f"{pair[0]}/{pair[1]}", scenario=scen, measure=measure, pairs=len(ratios),
                        median_ratio=round(median, 4), ratios=ratios)
            print(json.dumps(line), flush=True)
            if out:
                out.write(json.dumps(line) + "\n"); out.flush()
