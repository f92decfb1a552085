#!/usr/bin/env python3
"""Capture ratio: CPU time in the agent's profiles / the process's CPU time.

    python3 bench/capture.py

Runs the `spin` example (two threads burning CPU 60/30/10 in hot_a, hot_b,
hot_c) for SPIN_SECONDS (default 10) under each engine at 100 and 1000 Hz,
reads the process's CPU time from wait4's rusage, sums `cpu/nanoseconds` of
every profile the agent wrote with `kiln top --format json`, and prints the
ratio and the 60/30/10 split the profile shows. Prints a Markdown table.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
seconds = os.environ.get("SPIN_SECONDS", "10")
# Two builds: `--example` with `-p kiln` would build only the example.
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-agent", "--example", "spin"], cwd=root, check=True)
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln", "--bin", "kiln"], cwd=root, check=True)
spin = os.path.join(root, "target", "release", "examples", "spin")
kiln = os.path.join(root, "target", "release", "kiln")

print("| engine | rate | process CPU | in profiles | capture | hot_a / hot_b / hot_c |")
print("|---|---|---|---|---|---|")
for engine in ("perf", "ctimer", "itimer"):
    for hz in (100, 1000):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, KILN_ENGINE=engine, KILN_CPU_HZ=str(hz), KILN_DIR=d, SPIN_SECONDS=seconds)
            p = subprocess.Popen([spin], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(p.pid, 0)
            if status != 0:
                sys.exit(f"{engine} {hz}: {p.stderr.read().decode()}")
            cpu = usage.ru_utime + usage.ru_stime
            files = glob.glob(os.path.join(d, "**", "*.pb.gz"), recursive=True)
            out = subprocess.run([kiln, "top", *files, "--type", "cpu", "-n", "0", "--format", "json"], capture_output=True, check=True)
            top = json.loads(out.stdout)
            sampled = top["total"] / 1e9
            totals = {r["name"].rsplit("::", 1)[-1]: r["total"] for r in top["rows"] if r["name"].startswith("spin::hot_")}
            s = sum(totals.values()) or 1
            split = " / ".join(f"{100 * totals.get(h, 0) / s:.1f}%" for h in ("hot_a", "hot_b", "hot_c"))
            print(f"| {engine} | {hz} Hz | {cpu:.2f} s | {sampled:.2f} s | {sampled / cpu:.3f} | {split} |")
