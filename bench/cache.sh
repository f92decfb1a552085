#!/usr/bin/env bash
# Restart on history larger than the block cache: a data directory left by
# bench/server.sh (whose blocks hold everything) is started with
# `[storage] cache = CACHE` (default 256MiB) and, in the same run, with a
# cache that holds everything (64GiB: every block's data in memory, as
# before the cache existed). For each: seconds from exec to listening, to
# the first push acknowledged and to the blocks being listed; RSS then;
# the first and a later flame graph of the service over its whole hours
# (hour sums) and of one instance (rows); RSS and cached bytes after each.
#
#   N=12000 GO=0 bench/server.sh && bench/cache.sh bench/out/server/data-12000-100
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1
CACHE=${CACHE:-256MiB}
kiln=target/release/kiln
work=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$work"' EXIT
PID=
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$PID/status"; }
metric() { curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
render() { # seconds for one flame graph of selector $1 (from a distinct minute each time)
  curl -s -o /dev/null -w '%{time_total}' -G "$URL/pyroscope/render" \
    --data-urlencode "query=process_cpu:cpu:nanoseconds:cpu:nanoseconds$1" \
    --data-urlencode "from=$2" --data-urlencode until=now --data-urlencode maxNodes=8192
}
run() { # $1: cache size
  rm -rf "$work/data"; cp -r "$data" "$work/data"
  printf '[storage]\nflush_every = "10d"\nhead_max_bytes = 100000000000\ncache = "%s"\n' "$1" > "$work/kiln.toml"
  local t0; t0=$(date +%s.%N)
  $kiln server --listen 127.0.0.1:0 --data-dir "$work/data" --no-self-profile --config "$work/kiln.toml" > "$work/out" 2> "$work/err" &
  PID=$!
  until grep -q 'http://' "$work/out" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.01
  done
  local listen; listen=$(echo "$(date +%s.%N) - $t0" | bc)
  URL=$(grep -o 'http://[0-9.:]*' "$work/out")
  # The first push acknowledged (a folded profile of a new series).
  until curl -sf -o /dev/null -X POST --data-binary $'main;work 1\n' \
      "$URL/ingest?name=process_cpu%7Bservice_name%3Dprobe%7D&format=folded&from=1790000000&until=1790000010"; do
    sleep 0.01
  done
  local acked; acked=$(echo "$(date +%s.%N) - $t0" | bc)
  until [ "$(metric kiln_server_blocks_listed)" = 1 ]; do sleep 0.01; done
  local listed; listed=$(echo "$(date +%s.%N) - $t0" | bc)
  local rss_ready; rss_ready=$(rss_mb)
  local svc1 svc2 inst1 inst2 rss_svc rss_inst cached
  svc1=$(render '{service_name="bench"}' 0)
  svc2=$(render '{service_name="bench"}' 60000)
  rss_svc=$(rss_mb)
  inst1=$(render '{service_name="bench",instance="007"}' 0)
  inst2=$(render '{service_name="bench",instance="007"}' 60000)
  rss_inst=$(rss_mb)
  cached=$(metric kiln_server_cache_bytes)
  echo "cache=$1 listen_s=$listen first_push_acked_s=$acked blocks_listed_s=$listed rss_ready_mb=$rss_ready" \
    "service_first_s=$svc1 service_later_s=$svc2 rss_after_service_mb=$rss_svc" \
    "instance_first_s=$inst1 instance_later_s=$inst2 rss_after_instance_mb=$rss_inst cache_bytes=$cached" \
    "blocks=$(metric kiln_server_blocks) loads=$(metric kiln_server_cache_loads) drops=$(metric kiln_server_cache_drops)"
  kill -9 "$PID"; wait "$PID" 2>/dev/null || true
}
[ -x "$kiln" ] || cargo build --release -q -p kiln
echo "data=$data ($(du -sh "$data/blocks" | cut -f1) of blocks) input=$(du -sh "$(dirname "$data")/in-${data##*data-}" 2>/dev/null | cut -f1)"
run "$CACHE"
run 64GiB
