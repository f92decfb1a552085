#!/usr/bin/env bash
# Restart time of `kiln server` on an existing data directory (e.g. one left
# by bench/server.sh, whose blocks hold everything): seconds from exec to
# listening, median of RUNS (default 3), for each binary given, alternating
# so that machine noise falls on all alike. Each run starts on a fresh copy.
#
#   bench/restart.sh bench/out/server/data-36000-100 /tmp/kiln-old target/release/kiln
set -euo pipefail
data=$1; shift
RUNS=${RUNS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[storage]\nflush_every = "10d"\nhead_max_bytes = 100000000000\n' > "$work/kiln.toml"
declare -A times
for r in $(seq "$RUNS"); do
  for bin in "$@"; do
    rm -rf "$work/data"; cp -r "$data" "$work/data"
    t0=$(date +%s.%N)
    "$bin" server --listen 127.0.0.1:0 --data-dir "$work/data" --no-self-profile --config "$work/kiln.toml" > "$work/out" 2> "$work/err" &
    pid=$!
    until grep -q 'http://' "$work/out" 2>/dev/null; do
      kill -0 "$pid" 2>/dev/null || { cat "$work/err"; exit 1; }
      sleep 0.02
    done
    s=$(echo "$(date +%s.%N) - $t0" | bc)
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
    times[$bin]="${times[$bin]:-} $s"
  done
done
for bin in "$@"; do
  m=$(printf '%s\n' ${times[$bin]} | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  echo "$bin restart_s=$m all=${times[$bin]# }"
done
