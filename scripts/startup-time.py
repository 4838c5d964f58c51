#!/usr/bin/env python3
"""Start-up time of reflectd builds: from exec to the `listening on` line on stdout (then SIGTERM),
and the whole run of `--version`. Prints the median and the spread of 30 runs of each, builds
interleaved so that machine load affects them alike.

    scripts/startup-time.py BINARY [BINARY ...]
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

RUNS = 30


def listening(binary):
    start = time.perf_counter()
    p = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", "0", "--log-level", "error"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = p.stdout.readline()
    elapsed = time.perf_counter() - start
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    if not line.startswith(b"listening on "):
        sys.exit(f"{binary} printed {line!r}")
    return elapsed


def version(binary):
    start = time.perf_counter()
    subprocess.run([binary, "--version"], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binaries", nargs="+", metavar="BINARY", help="a reflectd to time")
    binaries = parser.parse_args().binaries
    results = {b: {"listening": [], "version": []} for b in binaries}
    for _ in range(RUNS):
        for b in binaries:
            results[b]["listening"].append(listening(b))
            results[b]["version"].append(version(b))
    for b in binaries:
        for what, samples in results[b].items():
            samples.sort()
            print(f"  {os.path.relpath(b):40s} {what:9s} median {statistics.median(samples) * 1e3:6.2f} ms"
                  f"  (min {samples[0] * 1e3:.2f}, p90 {samples[int(len(samples) * 0.9)] * 1e3:.2f})")


if __name__ == "__main__":
    main()
