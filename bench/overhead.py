#!/usr/bin/env python3
"""CPU overhead of the Kiln agent vs pprof-rs 0.15 on the same fixed work.

    python3 bench/overhead.py            # 100 Hz and 1000 Hz, 7 runs each
    RUNS=3 RATES=1000 ROUNDS=3000000 python3 bench/overhead.py

Runs `target/release/overhead MODE HZ` for MODE in none, kiln, pprof-rs,
interleaved, RUNS times each, and reads each process's CPU time (user +
system, microseconds) from wait4's rusage. Overhead is the median CPU time
of a mode over the median of `none`. Prints a Markdown table.
"""
import os
import statistics
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runs = int(os.environ.get("RUNS", "7"))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--bin", "overhead"], cwd=root, check=True)
exe = os.path.join(root, "target", "release", "overhead")


def cpu_seconds(mode, hz):
    p = subprocess.Popen([exe, mode, str(hz)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"{mode} {hz} Hz failed: {p.stderr.read().decode()}")
    return usage.ru_utime + usage.ru_stime


print("| rate | profiler | median CPU time | overhead vs none |")
print("|---|---|---|---|")
for hz in [int(r) for r in os.environ.get("RATES", "100,1000").split(",")]:
    times = {m: [] for m in ("none", "kiln", "pprof-rs")}
    for _ in range(runs):
        for m in times:
            times[m].append(cpu_seconds(m, hz))
    base = statistics.median(times["none"])
    for m, ts in times.items():
        med = statistics.median(ts)
        over = "" if m == "none" else f"{100 * (med - base) / base:+.2f}%"
        print(f"| {hz} Hz | {m} | {med:.3f} s (spread {min(ts):.3f}–{max(ts):.3f}) | {over} |")
print()
print(f"machine: {os.cpu_count()} cores; {runs} interleaved runs per mode")
