#!/usr/bin/env bash
# Long ranges: a flame graph of a service over 7 and over 30 days of 100
# instances. bench/src/bin/make-history.rs writes DAYS (default 30) of
# history ending now into a data directory, one block per hour with its
# hour sums, as a server that ran that long leaves it, then the day-sum
# blocks (Store::sum_days). `kiln server` is started on a copy with
# `[storage] cache = CACHE` (default 512MiB); after its blocks are listed,
# and its upkeep has summed what the generator left unsummed (as a server
# that ran that long has it), the server is restarted on the same data,
# and each range is asked twice (`/pyroscope/render`: merge and timeline,
# as the UI asks), the first from storage, the second from the cache, with
# RSS after each and once settled (6 s later: the server hands freed
# memory back every 5 s). Each range (RANGES, in hours: default 7 and 30
# days) ends 10 minutes after the data's last profile, as "now" is for a
# server taking pushes (the blocks cut so far today, the hour under way
# in its head), whatever the time of day the script runs at; BACK=H ends
# them H hours earlier (a range in the past, whose first and last days
# are cut: their quarter-day sums and hours).
# KILN_BEFORE=path also runs another build of `kiln` on the same data in
# the same run (the figures before a change).
#
#   bench/history.sh
#   KILN_BEFORE=/work/before/target/release/kiln bench/history.sh
#   DAYS=7 INSTANCES=10 bench/history.sh
#   DAYS=1 PER_HOUR=12 RANGES=16 bench/history.sh   # a range's edge hour
#   BACK=14 bench/history.sh                        # ranges ending at 08:10
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS=${DAYS:-30}
INSTANCES=${INSTANCES:-100}
PER_HOUR=${PER_HOUR:-1}
RANGES=${RANGES:-168 720}
BACK=${BACK:-0}
CACHE=${CACHE:-512MiB}
out=bench/out/history
mkdir -p "$out"
cargo build --release -q -p kiln -p kiln-bench
data="$out/data-$DAYS-$INSTANCES-$PER_HOUR"
if [ ! -f "$data/.done" ]; then
  rm -rf "$data"
  t0=$(date +%s)
  target/release/make-history bench/data/cargo-build.folded.gz "$data" "$DAYS" "$INSTANCES" "$PER_HOUR" >&2
  echo "history written in $(( $(date +%s) - t0 )) s" >&2
  touch "$data/.done"
fi
work=$(mktemp -d)
PID=
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$work"' EXIT
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$PID/status"; }
metric() { curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# The data's last profile (ms) and 10 minutes: where every range ends.
end_ms=$(python3 - "$data/blocks" <<'PY'
import glob, json, sys
metas = (json.load(open(f)) for f in glob.glob(sys.argv[1] + "/*/*/meta.json"))
print(max(m["max_ms"] for m in metas if not m.get("sums_of")) + 600_000)
PY
)
end_ms=$((end_ms - BACK * 3600000))
render() { # seconds for one flame graph of the $1 hours to end_ms; checks it is not empty
  local s
  s=$(curl -s -o "$work/body" -w '%{time_total}' -G "$URL/pyroscope/render" \
    --data-urlencode 'query=process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="bench"}' \
    --data-urlencode "from=$((end_ms - $1 * 3600000))" --data-urlencode "until=$end_ms" \
    --data-urlencode maxNodes=8192)
  python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["flamebearer"]["numTicks"]; assert t > 0, t; print(t)' "$work/body" > "$work/ticks"
  echo "$s"
}
start() { # $1: kiln binary; starts it on $work/data, sets PID and URL
  "$1" server --listen 127.0.0.1:0 --data-dir "$work/data" --no-self-profile --config "$work/kiln.toml" > "$work/out" 2> "$work/err" &
  PID=$!
  until grep -q 'http://' "$work/out" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.01
  done
  URL=$(grep -o 'http://[0-9.:]*' "$work/out")
  until [ "$(metric kiln_server_blocks_listed)" = 1 ]; do sleep 0.05; done
}
run() { # $1: name, $2: kiln binary
  rm -rf "$work/data"; cp -r "$data" "$work/data"
  printf '[storage]\ncache = "%s"\n' "$CACHE" > "$work/kiln.toml"
  start "$2"
  # The days the generator's own store left unsummed (their blocks were
  # too new then) are summed by the server's upkeep now, as a server that
  # ran that long has them: wait until it is done (a build without day
  # sums has no such metric and waits for nothing).
  local t0 n last=""
  t0=$SECONDS
  while n=$(metric kiln_server_days_summed); [ -n "$n" ] && [ "$n" != "$last" ]; do
    last=$n; sleep 5
  done
  local line="$1: sums_written_at_start=${n:-none} summing_s=$((SECONDS - t0))"
  # Then a restart: nothing of the blocks in memory but their indexes.
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
  t0=$(date +%s%N)
  start "$2"
  line="$line listed_ms=$(( ($(date +%s%N) - t0) / 1000000 )) rss_ready_mb=$(rss_mb) blocks=$(metric kiln_server_blocks)"
  for h in $RANGES; do
    [ "$h" -le $((DAYS * 24)) ] || continue
    local a b d=${h}h
    [ $((h % 24)) -ne 0 ] || d=$((h / 24))d
    a=$(render "$h"); local ticks; ticks=$(cat "$work/ticks")
    b=$(render "$h")
    line="$line ${d}_first_s=$a ${d}_later_s=$b ${d}_ticks=$ticks rss_after_${d}_mb=$(rss_mb)"
  done
  sleep 6
  echo "$line rss_settled_mb=$(rss_mb) cache_bytes=$(metric kiln_server_cache_bytes) loads=$(metric kiln_server_cache_loads)"
  kill -9 "$PID"; wait "$PID" 2>/dev/null || true
}
echo "data=$data ($(du -sh "$data/blocks" | cut -f1) of blocks, $DAYS days of $INSTANCES instances, $PER_HOUR profile(s) an hour each; ranges end at $(date -u -d @$((end_ms / 1000)) +%FT%TZ))"
run kiln target/release/kiln
[ -z "${KILN_BEFORE:-}" ] || run before "$KILN_BEFORE"
