#!/usr/bin/env bash
# Server benchmark: ingest N realistic 10-second profiles of 100 instances
# (bench/src/bin/make-profiles.rs; N=600 is one minute of the fleet) into
# `kiln server` over the Connect push API, then time a flame graph over
# all of it (`/pyroscope/render`, median of 5) against `go tool pprof -proto`
# merging the same files, in one run. Also: ingest rate, server memory per
# head sample, bytes on disk per sample in blocks against the gzipped input
# (after POST /api/v1/admin/flush), the flame graph read from blocks, and
# the time a restart takes: from blocks, and replaying the log alone.
#
#   bench/server.sh                       # N=600: 100 instances x 1 minute
#   N=3600 INSTANCES=10 bench/server.sh     # 10 instances x 1 hour
#   N=3600 GO=0 bench/server.sh             # 100 instances x 10 minutes, Kiln alone
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-600}
GO=${GO:-1}
INSTANCES=${INSTANCES:-100}
out=bench/out/server
mkdir -p "$out"
cargo build --release -q -p kiln -p kiln-bench
kiln=target/release/kiln
dir="$out/in-$N-$INSTANCES"
if [ ! -f "$dir/.done" ]; then
  rm -rf "$dir"
  target/release/make-profiles bench/data/cargo-build.folded.gz "$dir" "$N" 3000 11400714819323198485 "$INSTANCES" >&2
  touch "$dir/.done"
fi
data="$out/data-$N-$INSTANCES"
rm -rf "$data"

start() { # -> sets PID and URL; writes the seconds it took to listen to $out/start-s
  local t0; t0=$(date +%s.%N)
  # No cut but the bench's own: the head holds everything until then.
  printf '[storage]\nflush_every = "10d"\nhead_max_bytes = 100000000000\n' > "$out/kiln.toml"
  $kiln server --listen 127.0.0.1:0 --data-dir "$data" --no-self-profile --config "$out/kiln.toml" >"$out/server.out" 2>"$out/server.err" &
  PID=$!
  until grep -q 'http://' "$out/server.out" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { cat "$out/server.err"; exit 1; }
    sleep 0.02
  done
  URL=$(grep -o 'http://[0-9.:]*' "$out/server.out")
  echo "$(date +%s.%N) - $t0" | bc > "$out/start-s"
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
metric() { curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
render_s() { # median of 5 flame graphs over everything; each `from` is a
  # different minute before the data, so no answer comes from the server's
  # cache of recent merges: every one merges.
  for i in 1 2 3 4 5; do
    curl -s -o /dev/null -w '%{time_total}\n' -G "$URL/pyroscope/render" \
      --data-urlencode 'query=process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="bench"}' \
      --data-urlencode from=$((i * 60000)) --data-urlencode until=now --data-urlencode maxNodes=8192
  done | sort -n | sed -n 3p
}

start
rss0=$(rss_kb)
result=$(target/release/load "$URL" "$dir" 8 5)
rss1=$(rss_kb)
samples=$(metric kiln_server_head_samples)
ingested=$(metric kiln_server_ingested_samples_total)
head_bytes=$(metric kiln_server_head_bytes)
head_q=$(render_s)
head_rows=$(metric kiln_server_head_rows)
echo "head_rows=$head_rows head_bytes=$head_bytes samples=$samples" >&2
wal=$(du -sb "$data/wal" | cut -f1)
# The log alone: a restart replays all of it.
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start
restart_wal=$(cat "$out/start-s")
# Cut the head into blocks; read them back.
curl -s -X POST "$URL/api/v1/admin/flush" > /dev/null
blocks=$(du -sb "$data/blocks" | cut -f1)
block_q=$(render_s)
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start
restart_blocks=$(cat "$out/start-s")
rss_blocks=$(rss_kb)
first_q=$(curl -s -o /dev/null -w '%{time_total}' -G "$URL/pyroscope/render" \
  --data-urlencode 'query=process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="bench"}' \
  --data-urlencode from=0 --data-urlencode until=now --data-urlencode maxNodes=8192)
kill "$PID"; wait "$PID" 2>/dev/null || true

gzbytes=$(du -sb --exclude=.done "$dir" | cut -f1)
python3 - "$result" "$N" "$rss0" "$rss1" "$samples" "$ingested" "$wal" "$gzbytes" "$blocks" "$head_bytes" "$rss_blocks" "$restart_wal" "$restart_blocks" "$block_q" "$first_q" "$head_q" <<'PY' > "$out/kiln.txt"
import json, sys, statistics
r = json.loads(sys.argv[1]); n = int(sys.argv[2])
rss0, rss1, head, ingested, wal, gz, blocks, head_bytes, rss_blocks = map(int, sys.argv[3:12])
restart_wal, restart_blocks, block_q, first_q, head_q = map(float, sys.argv[12:17])
q = statistics.median(r["query_s"])
print(f"files={n} ingest_s={r['ingest_s']:.2f} profiles_per_s={n / r['ingest_s']:.0f} samples_per_s={ingested / r['ingest_s']:.0f}")
print(f"first_query_s={r['query_s'][0]:.3f} cached_query_median_s={q:.3f} query_all={','.join(f'{x:.3f}' for x in r['query_s'])} ticks={r['ticks']}")
print(f"head_query_median_s={head_q:.3f} (each merges: no cached answer)")
print(f"from_blocks_query_median_s={block_q:.3f} (each merges) first_query_after_restart_s={first_q:.3f}")
print(f"input_gz_bytes={gz} gz_per_sample={gz / ingested:.1f} wal_per_sample={wal / ingested:.1f} block_bytes={blocks} block_per_sample={blocks / ingested:.2f} gz_over_block={gz / blocks:.1f}")
print(f"rss_growth_mb={(rss1 - rss0) / 1024:.1f} head_samples={head} bytes_per_head_sample={(rss1 - rss0) * 1024 / max(head, 1):.1f} head_bytes_metric_per_sample={head_bytes / max(head, 1):.1f}")
print(f"restart_replaying_log_s={restart_wal:.2f} restart_from_blocks_s={restart_blocks:.2f} rss_after_restart_mb={rss_blocks / 1024:.0f}")
PY
cat "$out/kiln.txt"
if [ "$GO" = 1 ]; then
  command -v go >/dev/null || { echo "needs go (Debian's golang-go)"; exit 1; }
  /usr/bin/time -f "%e %M" -o "$out/go-time" sh -c "go tool pprof -proto $dir/*.pb.gz > $out/go.pb.gz" 2>/dev/null
  read -r gs gm < "$out/go-time"
  q=$(sed -n 's/^head_query_median_s=\([0-9.]*\).*/\1/p' "$out/kiln.txt")
  f=$(sed -n 's/^first_query_s=\([0-9.]*\).*/\1/p' "$out/kiln.txt")
  echo "go_tool_pprof_proto_s=$gs go_rss_mb=$((gm / 1024)) ratio_over_kiln_query=$(echo "scale=1; $gs / $q" | bc) ratio_over_kiln_first_query=$(echo "scale=1; $gs / $f" | bc)"
  gt=$($kiln top "$out/go.pb.gz" --type cpu --format json -n 1 | sed -n 's/.*"total": \([0-9]*\).*/\1/p' | head -1)
  kt=$(sed -n 's/.*ticks=\([0-9]*\).*/\1/p' "$out/kiln.txt")
  [ "$gt" = "$kt" ] || { echo "totals differ: go $gt, kiln $kt" >&2; exit 1; }
  echo "totals agree: $kt"
fi
