#!/usr/bin/env python3
"""Task cost: ns per `kiln_agent::task::start` + drop, per `task::io` call
and per span under `kiln_agent::tracing::layer()`, with and without a
running agent, against a `tracing` span under a bare registry (the peer:
what a traced service already pays per span) and two `Instant` reads (the
floor of timing anything). bench/src/bin/tasks.rs; medians of ROUNDS
rounds, in one run.

    ROUNDS=7 N=1000000 python3 bench/tasks.py
"""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--bin", "tasks"],
               cwd=ROOT, check=True)
out = subprocess.run([os.path.join(ROOT, "target", "release", "tasks")], cwd=ROOT,
                     check=True, capture_output=True, text=True).stdout
r = json.loads(out.strip().splitlines()[-1])
print(json.dumps(r, indent=2))
peer = r["span_registry_ns"]
for k in ["task_agent_ns", "io_agent_ns", "span_layer_ns", "task_no_agent_ns", "io_no_agent_ns"]:
    print(f"{k:18} {r[k]:8.1f} ns  x{r[k] / peer:.2f} a bare tracing span ({peer:.1f} ns)")
print(f"two Instant reads {r['two_clock_reads_ns']:.1f} ns")
print(f"two CPU clock reads {r['two_cpu_clock_reads_ns']:.1f} ns")
print(f"memory per task name: {r['kib_per_task_name']:.1f} KiB")
