#!/usr/bin/env bash
# Soak: an agent pushes 100 ms windows to a dead server (it accepts
# connections and never answers) for DEAD_SECONDS (default 300) while two
# application threads compute. Prints the RSS over time, what the push
# sink dropped, how often the application threads waited (voluntary
# context switches), and how long stop() took.
#
#   DEAD_SECONDS=300 bench/ship_down.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEAD_SECONDS="${DEAD_SECONDS:-300}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test -q -p kiln-agent --test integration dead_push_target -- --nocapture >"$log" 2>&1 || {
  cat "$log"
  exit 1
}
python3 - "$log" <<'PY'
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("dead push target: "))
r = json.loads(line.split(": ", 1)[1])
rss = [v / 2**20 for v in r["rss"]]
sink = r["status"]["sinks"][0]
print(f"seconds: {len(rss)}")
print(f"RSS MiB: at 10 s {rss[9]:.1f}, at end {rss[-1]:.1f}, max after 10 s {max(rss[9:]):.1f}, "
      f"growth after 10 s {max(rss[9:]) - rss[9]:+.2f}")
print("RSS every 30 s:", " ".join(f"{v:.1f}" for v in rss[::30]))
print(f"push sink: queued {sink['queued']}, dropped {sink['dropped']}, errors {sink['errors']}, "
      f"failed {sink['failed']}, sent {sink['sent']}")
print(f"application threads' voluntary context switches: {r['app_waits']}")
print(f"stop(): {r['stop_ms']} ms, error: {r['stop_error']}")
PY
