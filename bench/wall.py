#!/usr/bin/env python3
"""Wall-clock sampling with many idle threads: 200 threads (190 parked,
waking every PARK_MS, default 1000; 10 computing a tenth of the time), the agent sampling wall clock at 20 Hz
against the same agent with wall sampling off; the CPU the agent's own
threads use, as a share of one core (bench/src/bin/wall.rs). Runs
alternate; medians of RUNS (default 3).

    RUNS=3 SECONDS=10 python3 bench/wall.py
    RUNS=3 SECONDS=10 PARK_MS=3600000 python3 bench/wall.py   # idle for good
"""
import json
import os
import statistics
import subprocess

RUNS = int(os.environ.get("RUNS", "3"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--bin", "wall"],
               cwd=ROOT, check=True)
BIN = os.path.join(ROOT, "target", "release", "wall")
res = {"0": [], "20": []}
last = {}
for _ in range(RUNS):
    for hz in ["0", "20"]:
        env = dict(os.environ, WALL_HZ=hz)
        out = subprocess.run([BIN], env=env, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        res[hz].append(r["agent_cpu_share_of_core"])
        last[hz] = r
off = statistics.median(res["0"])
on = statistics.median(res["20"])
print(json.dumps(last, indent=2))
print(f"agent CPU, wall off: {100 * off:.3f}% of a core; wall at 20 Hz: {100 * on:.3f}% "
      f"(+{100 * (on - off):.3f} points, x{on / off if off else float('inf'):.1f})")
