#!/usr/bin/env python3
"""Lock cost: ns per lock+unlock of `kiln_agent::sync::Mutex` against
std's `Mutex`, and of `lock_api::Mutex<kiln_agent::sync::RawMutex, _>`
against `parking_lot::Mutex`, uncontended (one thread) and contended
(THREADS threads on one lock), with an agent profiling lock waits at the
default rate (bench/src/bin/locks.rs; medians of ROUNDS alternating
rounds, in one run).

    ROUNDS=7 THREADS=4 python3 bench/locks.py
"""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--bin", "locks"],
               cwd=ROOT, check=True)
out = subprocess.run([os.path.join(ROOT, "target", "release", "locks")], cwd=ROOT,
                     check=True, capture_output=True, text=True).stdout
r = json.loads(out.strip().splitlines()[-1])
print(json.dumps(r, indent=2))
for kind in ["uncontended", "contended"]:
    for ours, peer in [("kiln", "std"), ("kiln_raw", "parking_lot")]:
        a, b = r[f"{ours}_{kind}_ns"], r[f"{peer}_{kind}_ns"]
        print(f"{kind:12} {ours:9} {a:7.2f} ns vs {peer:12} {b:7.2f} ns: x{a / b:.2}")
print(f"waits seen {r['contended_waits']}, sampled {r['sampled_waits']}")
