#!/usr/bin/env python3
"""Per-function truth on a libc-heavy job: Kiln vs pprof-rs 0.15 (its
default DWARF unwinder, no blocklist).

    python3 bench/truth.py                 # 250 Hz, 12 s, 3 runs each
    HZ=100 SECONDS=20 RUNS=5 python3 bench/truth.py

Runs `target/release/truth MODE HZ SECONDS` for each profiler, alternating,
RUNS times. Each run measures every function's CPU time itself (thread CPU
clock around each call) and reports the profile's share of each function
(samples whose stack holds it, over the samples of the four). Prints a
Markdown table of the median shares and the worst error in points.
"""
import json
import os
import statistics
import subprocess

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runs = int(os.environ.get("RUNS", "3"))
hz = os.environ.get("HZ", "250")
seconds = os.environ.get("SECONDS", "12")
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--bin", "truth"], cwd=root, check=True)
exe = os.path.join(root, "target", "release", "truth")
names = ["copy_job (memcpy)", "write_job (write(2))", "clock_job (vDSO)", "compute_job"]

results = {"kiln": [], "pprof-rs": []}
for _ in range(runs):
    for mode in results:
        out = subprocess.run([exe, mode, hz, seconds], check=True, capture_output=True, text=True).stdout
        results[mode].append(json.loads(out.strip().splitlines()[-1]))

print(f"| profiler | {' | '.join(names)} | worst error | job in profile |")
print("|---|" + "---|" * (len(names) + 2))
truth_rows = []
for mode, rs in results.items():
    shares, worst, held = [], [], []
    for r in rs:
        t, p = r["truth"], r["profile"]
        ts, ps = sum(t), sum(p) or 1
        truth_rows.append([100 * x / ts for x in t])
        s = [100 * x / ps for x in p]
        shares.append(s)
        worst.append(max(abs(a - 100 * b / ts) for a, b in zip(s, t)))
        held.append(100 * ps / max(r["samples"], 1))
    med = [statistics.median(col) for col in zip(*shares)]
    print(f"| {mode} | " + " | ".join(f"{m:.1f}%" for m in med)
          + f" | {statistics.median(worst):.1f} points (max {max(worst):.1f}) | {statistics.median(held):.1f}% |")
tmed = [statistics.median(col) for col in zip(*truth_rows)]
print("| measured CPU | " + " | ".join(f"{m:.1f}%" for m in tmed) + " | | |")
print()
print(f"{hz} Hz, {seconds} s, two threads, {runs} alternating runs per profiler, machine: {os.cpu_count()} cores")
