#!/usr/bin/env python3
"""Allocation profiling overhead: Kiln's `Profiled<System>` with an agent
sampling at the default mean (512 KiB) against the system allocator alone,
and jemalloc's own heap profiler (tikv-jemallocator, `prof:true,
lg_prof_sample:19`, the same mean) against jemalloc alone, on one
workload (bench/src/alloc/work.rs: JSON parsed into structs, a moving
live heap, then 64-byte alloc+free pairs timed alone; every variant has
a second, idle thread, as services do, so glibc's single-thread fast path
favours none). Runs alternate, so
machine noise falls on all alike; medians of RUNS (default 5).

    RUNS=5 ROUNDS=60 PAIRS=20000000 python3 bench/alloc.py
"""
import json
import os
import resource
import statistics
import subprocess
import sys

RUNS = int(os.environ.get("RUNS", "5"))
ROUNDS = os.environ.get("ROUNDS", "60")
PAIRS = os.environ.get("PAIRS", "20000000")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")

subprocess.run(
    ["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--features", "jemalloc",
     "--bin", "alloc-system", "--bin", "alloc-kiln", "--bin", "alloc-jemalloc"],
    cwd=ROOT, check=True)

VARIANTS = [
    ("system", "alloc-system", {}),
    ("kiln", "alloc-kiln", {}),
    ("jemalloc", "alloc-jemalloc", {}),
    ("jemalloc-prof", "alloc-jemalloc", {"_RJEM_MALLOC_CONF": "prof:true,lg_prof_sample:19"}),
]

results = {name: [] for name, _, _ in VARIANTS}
for _ in range(RUNS):
    for name, exe, env in VARIANTS:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([os.path.join(BIN, exe), ROUNDS, PAIRS], env={**os.environ, **env},
                             capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        results[name].append(r)

def med(name, key):
    return statistics.median(r[key] for r in results[name])

print(f"runs={RUNS} rounds={ROUNDS} pairs={PAIRS}")
print("| variant | CPU time | parse time | alloc+free pair | peak RSS |")
print("|---|---|---|---|---|")
for name, _, _ in VARIANTS:
    print(f"| {name} | {med(name, 'cpu_s'):.3f} s | {med(name, 'parse_s'):.3f} s | "
          f"{med(name, 'pair_ns'):.1f} ns | {med(name, 'vmhwm_kb') / 1024:.1f} MiB |")
for prof, base in [("kiln", "system"), ("jemalloc-prof", "jemalloc")]:
    print(f"{prof} over {base}: CPU {100 * (med(prof, 'cpu_s') / med(base, 'cpu_s') - 1):+.1f}%, "
          f"parse {100 * (med(prof, 'parse_s') / med(base, 'parse_s') - 1):+.1f}%, "
          f"pair {med(prof, 'pair_ns') - med(base, 'pair_ns'):+.1f} ns, "
          f"RSS {(med(prof, 'vmhwm_kb') - med(base, 'vmhwm_kb')) / 1024:+.1f} MiB")
