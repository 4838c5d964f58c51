#!/usr/bin/env python3
"""Open loop vs closed loop against reflectd (reflect-bench --rate, issue 20).

1. A server stall: reflectd (--exit-line off, CPU 0) is stopped with SIGSTOP for STALL seconds in
   the middle of the measured run, once under a closed loop (10 connections, as fast as they go)
   and once under an open loop (--rate, the same 10 connections). The closed loop records the
   stall once per connection; the open loop in every message that was due during it. Both
   latency distributions are written as HdrHistogram files and drawn with `reflect-bench plot`.
2. Latency against offered load: open-loop runs at rising rates on 100 connections (depth 4),
   and the closed loop on the same connections (depth 1) for what the server can do at most.
3. The generator's threads: the closed loop at depth 16 with --threads 1 and 2, both on CPU 1
   (one core: this shows the merge costs nothing, not a speed-up).
4. The generator's capacity against a bare C generator (baselines/c-load/loadgen.c: closed loop,
   no checking, no timing), both on CPU 1 against the C epoll server on CPU 0, 100 connections at
   depth 16 and 1, interleaved, REPEAT times each: msg/s and the generator's CPU time per message
   (its user + system time, from getrusage of the children).

Writes benchmarks/results/DATE-openloop.{md,json,svg} and DATE-openloop-{closed,open}.hgrm.

Usage: benchmarks/openloop.sh [--duration S] [--stall S] [--rate R] [--rates 5000,10000,...] [--no-build]
"""
import argparse, datetime, json, os, resource, shlex, signal, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (benchmarks/run.py: build, Server)
from run import ROOT, SERVER_CPU, LOAD_CPU, log, rel  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
BASELINES = os.path.join(ROOT, "benchmarks", "baselines")


def build_c(src, out):
    """cc -O2 `src` into `out` unless `out` is newer (as baselines/build.sh does)."""
    if not os.path.exists(out) or os.path.getmtime(src) > os.path.getmtime(out):
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-o", out, src], check=True)
    return out


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def capacity(bench_bin, loadgen, repeat, duration):
    """reflect-bench and the C generator, interleaved, against the C epoll server."""
    server_bin = build_c(os.path.join(BASELINES, "c-epoll", "echo_epoll.c"), os.path.join(BASELINES, "c-epoll", "echo_epoll"))
    rows, commands = [], []
    server = run.Server("c-epoll", [server_bin])
    try:
        for depth in (16, 1):
            samples = {"reflect-bench": [], "c-load": []}
            for _ in range(repeat):
                for name in ("reflect-bench", "c-load"):
                    if name == "c-load":
                        argv = ["taskset", "-c", LOAD_CPU, loadgen, str(server.port), "100", str(depth), "64", str(duration)]
                    else:
                        argv = ["taskset", "-c", LOAD_CPU, bench_bin, "pingpong", "--port", str(server.port), "--connections",
                                "100", "--depth", str(depth), "--size", "64", "--warmup", "0", "--duration", str(duration),
                                "--json", "--quiet"]
                    before = children_cpu()
                    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
                    cpu = children_cpu() - before
                    if name == "c-load":
                        fields = out.split()
                        messages, rate = int(fields[1]), float(fields[5])
                    else:
                        j = json.loads(out.strip().splitlines()[-1])
                        # reflect-bench also ran its connect phase; its CPU is counted too (a few ms).
                        messages, rate = j["messages"], j["msgs_per_s"]
                    samples[name].append((rate, cpu / max(1, messages) * 1e6))
                    commands.append(rel(" ".join(map(shlex.quote, argv))))
            med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}
            rows.append({"depth": depth, "reflect_bench_msgs_per_s": med["reflect-bench"][0],
                         "c_load_msgs_per_s": med["c-load"][0], "reflect_bench_cpu_us_per_msg": med["reflect-bench"][1],
                         "c_load_cpu_us_per_msg": med["c-load"][1], "samples": samples})
    finally:
        server.stop()
    return rows, commands


def bench(bench_bin, port, args, warmup, duration):
    cmd = (f"ulimit -n $(ulimit -Hn); exec taskset -c {LOAD_CPU} {shlex.quote(bench_bin)} {args} "
           f"--host 127.0.0.1 --port {port} --warmup {warmup} --duration {duration} --json --quiet")
    return subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), cmd


def finish(proc, cmd):
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"reflect-bench failed ({proc.returncode}): {cmd}\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def stalled_run(server, bench_bin, args, warmup, duration, stall):
    """Runs reflect-bench and stops the server for `stall` seconds halfway through the measurement."""
    proc, cmd = bench(bench_bin, server.port, args, warmup, duration)
    time.sleep(warmup + duration / 2 - stall / 2)
    os.kill(server.pid, signal.SIGSTOP)
    time.sleep(stall)
    os.kill(server.pid, signal.SIGCONT)
    return finish(proc, cmd), cmd


def row(j):
    lat = j["latency_us"]
    return {"msgs_per_s": j["msgs_per_s"], "messages": j["messages"], "p50": lat["p50"], "p90": lat["p90"],
            "p99": lat["p99"], "p99_9": lat["p99_9"], "max": lat["max"], "over_100ms": j["over_hold"],
            "late": j.get("late", 0), "late_generator": j.get("late_generator", 0), "unsent": j.get("unsent", 0), "errors": j["errors"]["total"]}


def us(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f} s"
    if x >= 1e3:
        return f"{x / 1e3:.2f} ms"
    return f"{x:.0f} µs"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=6, help="seconds measured per run (default 6)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--stall", type=float, default=1.0, help="seconds the server is stopped (default 1)")
    p.add_argument("--rate", type=int, default=2000, help="open-loop rate of the stall run (default 2000: far below what 10 connections at depth 1 carry, so what shows is the stall)")
    p.add_argument("--rates", default="5000,10000,20000,40000,80000", help="open-loop rates of the load sweep")
    p.add_argument("--repeat", type=int, default=3, help="capacity runs per generator and depth (default 3; median)")
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    args.servers = ["reflectd-off"]
    started = datetime.datetime.now()
    load_before = open("/proc/loadavg").read().split()[0]
    date = started.strftime("%Y-%m-%d")
    servers, bench_bin = run.build(args)
    argv = servers["reflectd-off"]
    w, d = args.warmup, args.duration
    result = {"date": date, "server": rel(" ".join(argv)), "stall_s": args.stall}
    hgrm = {k: os.path.join(RESULTS, f"{date}-openloop-{k}.hgrm") for k in ("closed", "open")}

    # 1. the stall
    stall_rows, commands = {}, []
    for kind, extra in (("closed", ""), ("open", f" --rate {args.rate}")):
        server = run.Server("reflectd-off", argv)
        try:
            log(f"stall run, {kind} loop")
            j, cmd = stalled_run(server, bench_bin, f"pingpong --connections 10 --hold-ms 100{extra} "
                                 f"--histogram {shlex.quote(hgrm[kind])}", w, d, args.stall)
        finally:
            server.stop()
        stall_rows[kind] = row(j)
        commands.append(rel(cmd))
    result["stall"] = stall_rows
    svg = os.path.join(RESULTS, f"{date}-openloop.svg")
    plot = [bench_bin, "plot", hgrm["closed"], hgrm["open"], "--label", "closed loop",
            "--label", f"open loop, {args.rate}/s", "--title",
            f"reflectd stopped for {args.stall:g} s during a {d} s run, 10 connections", "--output", svg]
    subprocess.run(plot, check=True)
    commands.append(rel(" ".join(map(shlex.quote, plot))))

    # 2. latency against offered load
    sweep = []
    server = run.Server("reflectd-off", argv)
    try:
        for rate in [None] + [int(r) for r in args.rates.split(",")]:
            extra = "--depth 1" if rate is None else f"--depth 4 --rate {rate}"
            log(f"sweep: {'closed loop' if rate is None else f'rate {rate}'}")
            proc, cmd = bench(bench_bin, server.port, f"pingpong --connections 100 {extra}", w, d)
            r = row(finish(proc, cmd))
            r["rate"] = rate
            sweep.append(r)
            commands.append(rel(cmd))
        # 3. threads
        threads = []
        for n in (1, 2):
            proc, cmd = bench(bench_bin, server.port, f"pingpong --connections 100 --depth 16 --threads {n}", w, d)
            r = row(finish(proc, cmd))
            r["threads"] = n
            threads.append(r)
            commands.append(rel(cmd))
    finally:
        server.stop()
    # 4. capacity against the C generator
    loadgen = build_c(os.path.join(BASELINES, "c-load", "loadgen.c"), os.path.join(BASELINES, "c-load", "loadgen"))
    log("capacity: reflect-bench vs the C generator")
    cap, cap_commands = capacity(bench_bin, loadgen, args.repeat, min(d, 4))
    commands += cap_commands
    result["sweep"], result["threads"], result["capacity"], result["commands"] = sweep, threads, cap, commands

    load_after = open("/proc/loadavg").read().split()[0]
    result["loadavg"] = [load_before, load_after]
    with open(os.path.join(RESULTS, f"{date}-openloop.json"), "w") as f:
        json.dump(result, f, indent=1)
    c, o = stall_rows["closed"], stall_rows["open"]
    lines = [
        f"# Open loop vs closed loop, {date}",
        "",
        f"`benchmarks/openloop.sh` (started {started.strftime('%H:%M')}): reflectd `--exit-line off` "
        f"(release) on CPU {SERVER_CPU}, `reflect-bench` on CPU {LOAD_CPU}, 64-byte binary messages, "
        f"{w} s warm-up and {d} s measured per run. A shared 2-core VM: other work ran beside it "
        f"(1-minute load average {load_before} before, {load_after} after). `late`: sent more than 1 ms after "
        f"it was due; in brackets the generator's own lag (it had room to send but woke or got the CPU late), "
        f"the rest waited for the server's echo. When the generator's own lag is large, that row measures "
        f"the machine, not the server.",
        "",
        f"## A {args.stall:g} s server stall (SIGSTOP in the middle of the measurement), 10 connections",
        "",
        "| | msg/s | p50 | p90 | p99 | p99.9 | max | echoes over 100 ms | late (generator's own) | unsent |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("closed loop (as fast as it goes)", c), (f"open loop, `--rate {args.rate}`", o)):
        lines.append(f"| {name} | {r['msgs_per_s']:,.0f} | {us(r['p50'])} | {us(r['p90'])} | {us(r['p99'])} | "
                     f"{us(r['p99_9'])} | {us(r['max'])} | {r['over_100ms']:,} of {r['messages']:,} | {r['late']:,} ({r['late_generator']:,}) | {r['unsent']:,} |")
    lines += [
        "",
        f"The closed loop waited through the stall with one message per connection: "
        f"{c['over_100ms']} echoes over 100 ms (one per connection is the stall; more are the machine), p99 "
        f"{us(c['p99'])}. The open loop had "
        f"about {args.rate * args.stall:,.0f} messages due during the stall, each timed from when it was "
        f"due: {o['over_100ms']:,} echoes over 100 ms. Chart: `{date}-openloop.svg` (from "
        f"`{date}-openloop-closed.hgrm` and `{date}-openloop-open.hgrm`).",
        "",
        "## Latency against offered load, 100 connections",
        "",
        "| load | msg/s | p50 | p90 | p99 | p99.9 | max | late (generator's own) | unsent |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sweep:
        name = "closed loop, depth 1" if r["rate"] is None else f"`--rate {r['rate']}`, depth 4"
        lines.append(f"| {name} | {r['msgs_per_s']:,.0f} | {us(r['p50'])} | {us(r['p90'])} | {us(r['p99'])} | "
                     f"{us(r['p99_9'])} | {us(r['max'])} | {r['late']:,} ({r['late_generator']:,}) | {r['unsent']:,} |")
    lines += [
        "",
        "## Generator threads (closed loop, depth 16, both on one core)",
        "",
        "| threads | msg/s | p50 | p99 | errors |",
        "|---|---|---|---|---|",
    ]
    for r in threads:
        lines.append(f"| {r['threads']} | {r['msgs_per_s']:,.0f} | {us(r['p50'])} | {us(r['p99'])} | {r['errors']} |")
    lines += [
        "",
        "## Generator capacity: reflect-bench vs a bare C generator",
        "",
        f"Against the C epoll server (CPU {SERVER_CPU}), each generator on CPU {LOAD_CPU}, 100 connections, "
        f"64-byte messages, closed loop, {min(d, 4)} s, interleaved, median of {args.repeat}. "
        "`baselines/c-load/loadgen.c` checks and times nothing; reflect-bench compares every echoed byte and "
        "records every latency. CPU per message: the generator's user + system time / messages.",
        "",
        "| depth | reflect-bench msg/s | C msg/s | ratio | reflect-bench CPU/msg | C CPU/msg | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in cap:
        lines.append(f"| {r['depth']} | {r['reflect_bench_msgs_per_s']:,.0f} | {r['c_load_msgs_per_s']:,.0f} | "
                     f"{r['reflect_bench_msgs_per_s'] / r['c_load_msgs_per_s']:.2f}x | "
                     f"{r['reflect_bench_cpu_us_per_msg']:.2f} µs | {r['c_load_cpu_us_per_msg']:.2f} µs | "
                     f"{r['reflect_bench_cpu_us_per_msg'] / r['c_load_cpu_us_per_msg']:.2f}x |")
    lines += ["", "## Commands", "", "```"] + commands + ["```", ""]
    with open(os.path.join(RESULTS, f"{date}-openloop.md"), "w") as f:
        f.write("\n".join(lines))
    log(f"wrote benchmarks/results/{date}-openloop.md")


if __name__ == "__main__":
    main()
