#!/usr/bin/env python3
"""resp-server vs redis-server under redis-benchmark. See benchmarks/resp.sh."""
import argparse, datetime, os, platform, re, resource, shutil, socket, subprocess, sys, time

TESTS = ["ping_inline", "ping_mbulk", "set", "get", "incr"]
SETTINGS = [(50, 1), (50, 16), (1000, 1)]
TICK = os.sysconf("SC_CLK_TCK")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)

def wait_ready(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"): return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"server on port {port} did not answer PING")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1_000_000, help="requests per test (redis-benchmark -n)")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    for tool in ["redis-server", "redis-benchmark", "taskset"]:
        if not shutil.which(tool): sys.exit(f"{tool} is not installed (apt-get install redis-server redis-tools util-linux)")
    if not args.no_build:
        subprocess.run(["swift", "build", "-c", "release", "--product", "resp-server"], check=True)
    binary = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], check=True,
                            capture_output=True, text=True).stdout.strip() + "/resp-server"
    # 1000 clients need 1000 fds in redis-benchmark and in each server (plus a few).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1100: sys.exit(f"the fd hard limit is {hard}: -c 1000 needs at least 1100")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ports = {"resp-server": free_port(), "redis-server": free_port()}
    commands = {
        "resp-server": ["taskset", "-c", "0", binary, "--host", "127.0.0.1", "--port", str(ports["resp-server"]), "--log-level", "warning"],
        "redis-server": ["taskset", "-c", "0", "redis-server", "--save", "", "--appendonly", "no", "--port", str(ports["redis-server"]),
                         "--bind", "127.0.0.1", "--maxclients", "10000", "--logfile", ""],
    }
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, cmd in commands.items()}
    results = {}  # (name, clients, pipeline, test) -> (rps, cpu_us_per_request)
    bench_commands = {}
    try:
        for name, port in ports.items(): wait_ready(port)
        for clients, pipeline in SETTINGS:
            for test in TESTS:
                for name, port in ports.items():
                    cmd = ["taskset", "-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test,
                           "-n", str(args.n), "-r", "100000", "-c", str(clients), "-P", str(pipeline), "-q"]
                    bench_commands[(clients, pipeline)] = " ".join(cmd).replace(str(port), "PORT").replace(f"-t {test}", "-t TEST")
                    before = cpu_seconds(procs[name].pid)
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                    used = cpu_seconds(procs[name].pid) - before
                    text = out.stdout + out.stderr
                    finals = [l for l in re.split(r"[\r\n]", text) if "requests per second" in l and "rps=" not in l]
                    if out.returncode != 0 or not finals or "ERR" in text:
                        sys.exit(f"{name} {test} -c {clients} -P {pipeline}: redis-benchmark failed:\n{text}")
                    rps = float(re.search(r":\s*([0-9.]+) requests per second", finals[-1]).group(1))
                    results[(name, clients, pipeline, test)] = (rps, used / args.n * 1e6)
                    print(f"{name:12} -c {clients:4} -P {pipeline:2} {test:11} {rps:12,.0f} req/s  {used / args.n * 1e6:7.3f} µs CPU/req", flush=True)
    finally:
        for p in procs.values():
            p.terminate()
            try: p.wait(10)
            except subprocess.TimeoutExpired: p.kill()

    date = datetime.date.today().isoformat()
    lines = [f"# resp-server vs redis-server, {date}", "",
             f"- command: `benchmarks/resp.sh -n {args.n}`" + ("" if args.n == 1_000_000 else " (a smaller -n than the issue's 1,000,000, to fit the run in the time available)"),
             f"- kernel: {platform.system()} {platform.release()}; {os.cpu_count()} CPUs; the machine was shared with other builds, so compare the ratios, not the absolute numbers",
             f"- redis-server: `{subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.strip()}`, started as `taskset -c 0 redis-server --save '' --appendonly no --port P`",
             "- resp-server: `taskset -c 0 resp-server --port P` (release build, one reactor)",
             "- each test runs against resp-server, then at once against redis-server; CPU per request = server utime+stime from /proc/PID/stat over that test / requests",
             "- redis-benchmark on CPU 1: " + "; ".join(f"`{c}`" for c in bench_commands.values()), ""]
    for clients, pipeline in SETTINGS:
        lines += [f"## -c {clients} -P {pipeline}", "",
                  "| test | resp-server req/s | redis-server req/s | req/s ratio | resp-server CPU/req (µs) | redis-server CPU/req (µs) | CPU/req ratio |",
                  "|---|---|---|---|---|---|---|"]
        for test in TESTS:
            ours, theirs = results[("resp-server", clients, pipeline, test)], results[("redis-server", clients, pipeline, test)]
            lines.append(f"| {test} | {ours[0]:,.0f} | {theirs[0]:,.0f} | {ours[0] / theirs[0]:.2f}× | {ours[1]:.3f} | {theirs[1]:.3f} | {ours[1] / theirs[1]:.2f}× |")
        lines.append("")
    os.makedirs("benchmarks/results", exist_ok=True)
    path = f"benchmarks/results/{date}-resp.md"
    with open(path, "w") as f: f.write("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
