#!/usr/bin/env python3
"""Watchdog cost and detection latency (bench/src/bin/watchdog.rs): the
agent's sampler thread's share of a core with no tasks, with 10,000
tasks a second that have a deadline, and with 1,000 threads inside a
watched task; then how late past a 50 ms deadline each of STUCK stuck
tasks is caught (p50/p99/max). One run.

    PHASE=10 STUCK=40 python3 bench/watchdog.py
"""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--bin", "watchdog"],
               cwd=ROOT, check=True)
out = subprocess.run([os.path.join(ROOT, "target", "release", "watchdog")], cwd=ROOT,
                     check=True, capture_output=True, text=True)
print(out.stderr.strip())
r = json.loads(out.stdout.strip().splitlines()[-1])
print(json.dumps(r, indent=2))
idle = r["sampler_core_idle"]
for k in ["sampler_core_10k_tasks_per_s", "sampler_core_1000_threads_in_tasks"]:
    print(f"{k:36} {100 * r[k]:6.2f}% of a core (idle {100 * idle:.2f}%: +{100 * (r[k] - idle):.2f} points)")
print(f"caught {r['stuck_caught']} stuck tasks, late by p50 {r['late_ms_p50']:.1f} ms, "
      f"p99 {r['late_ms_p99']:.1f} ms, max {r['late_ms_max']:.1f} ms (deadline 50 ms)")
