#!/usr/bin/env python3
"""CPU and memory overhead of the Kiln agent vs pprof-rs 0.15 on the same
fixed work.

    python3 bench/overhead.py            # 100 and 1000 Hz, 10 s and 1 s windows, 7 runs
    RUNS=3 RATES=1000 WINDOWS=1s ROUNDS=3000000 python3 bench/overhead.py

Runs `target/release/overhead MODE HZ` for MODE in none, kiln (once per
window length in WINDOWS), pprof-rs, interleaved, RUNS times each, and
reads each process's CPU time (user + system) from wait4's rusage and
its peak RSS from the `VmHWM` it prints as it exits (wait4's ru_maxrss
would floor it at this script's own RSS, which a forked child starts
with). Overhead is the median of a mode over the median of
`none`. Prints a Markdown table.
"""
import os
import statistics
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runs = int(os.environ.get("RUNS", "7"))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench", "--bin", "overhead"], cwd=root, check=True)
exe = os.path.join(root, "target", "release", "overhead")


def measure(mode, hz):
    """(CPU seconds, peak RSS in MiB) of one run; mode `kiln@1s` sets KILN_WINDOW."""
    env = dict(os.environ)
    exe_mode = mode
    if mode.startswith("kiln@"):
        exe_mode, env["KILN_WINDOW"] = mode.split("@")
    p = subprocess.Popen([exe, exe_mode, str(hz)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = p.stdout.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"{mode} {hz} Hz failed: {p.stderr.read().decode()}")
    hwm = [int(line.split()[1]) for line in out.splitlines() if line.startswith("VmHWM")]
    if not hwm:
        sys.exit(f"{mode} {hz} Hz printed no VmHWM")
    return usage.ru_utime + usage.ru_stime, hwm[0] / 1024


windows = os.environ.get("WINDOWS", "10s,1s").split(",")
print("| rate | profiler | median CPU time | CPU vs none | median peak RSS | RSS over none |")
print("|---|---|---|---|---|---|")
for hz in [int(r) for r in os.environ.get("RATES", "100,1000").split(",")]:
    modes = ["none"] + [f"kiln@{w}" for w in windows] + ["pprof-rs"]
    cpu = {m: [] for m in modes}
    rss = {m: [] for m in modes}
    for _ in range(runs):
        for m in modes:
            c, r = measure(m, hz)
            cpu[m].append(c)
            rss[m].append(r)
    base = statistics.median(cpu["none"])
    base_rss = statistics.median(rss["none"])
    for m in modes:
        med = statistics.median(cpu[m])
        mr = statistics.median(rss[m])
        over = "" if m == "none" else f"{100 * (med - base) / base:+.2f}%"
        over_rss = "" if m == "none" else f"{mr - base_rss:+.1f} MiB"
        name = m.replace("@", ", window ")
        print(f"| {hz} Hz | {name} | {med:.3f} s (spread {min(cpu[m]):.3f}–{max(cpu[m]):.3f}) | {over} | {mr:.1f} MiB | {over_rss} |")
print()
print(f"machine: {os.cpu_count()} cores; {runs} interleaved runs per mode")
