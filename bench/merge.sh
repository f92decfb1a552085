#!/usr/bin/env bash
# Merge benchmark: `kiln merge` vs `go tool pprof -proto` on the same N
# gzipped pprof files (realistic 10-second windows of 100 instances, drawn
# from a real `perf record -g` capture of `cargo build`, ~33k distinct
# stacks; see bench/src/bin/make-profiles.rs). Measures wall time and peak
# RSS with /usr/bin/time in one run, checks both outputs have the same
# total, and prints a Markdown table for docs/performance.md.
#
#   bench/merge.sh                 # N=1000 for both tools, then kiln alone at 10000
#   N=300 BIG=0 bench/merge.sh     # quicker
#
# go tool pprof holds every input in memory before merging (~10 MB per file
# here), so 10,000 files would need ~100 GB: on a 24 GB machine it runs at N
# and Kiln alone at BIG. GO_BIG=1 tries Go at BIG as well.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
BIG=${BIG:-10000}
GO_BIG=${GO_BIG:-0}
out=bench/out/merge
mkdir -p "$out"
command -v go >/dev/null || { echo "needs go (Debian's golang-go)"; exit 1; }
cargo build --release -q -p kiln -p kiln-bench
kiln=target/release/kiln

inputs() { # N -> directory with N profiles
  local n=$1 dir="$out/in-$1"
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    target/release/make-profiles bench/data/cargo-build.folded.gz "$dir" "$n" >&2
    touch "$dir/.done"
  fi
  echo "$dir"
}

measure() { # label command... -> "seconds max_rss_kb"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$out/time-$label" "$@" >/dev/null 2>"$out/err-$label" || { echo "FAILED"; return; }
  cat "$out/time-$label"
}

total() { $kiln top "$1" --type cpu --format json -n 1 | sed -n 's/.*"total": \([0-9]*\).*/\1/p' | head -1; }

row() { # n -> markdown rows
  local n=$1 dir; dir=$(inputs "$n")
  local bytes; bytes=$(du -sb "$dir" | cut -f1)
  read -r ks km <<<"$(measure kiln-$n $kiln merge "$dir"/*.pb.gz -o "$out/kiln-$n.pb.gz")"
  echo "| $n files ($((bytes / 1048576)) MiB gz) | kiln merge | $ks s | $((km / 1024)) MiB |"
  if [ "$n" = "$N" ] || [ "$GO_BIG" = 1 ]; then
    read -r gs gm <<<"$(measure go-$n sh -c "go tool pprof -proto $dir/*.pb.gz > $out/go-$n.pb.gz")"
    if [ "$gs" = FAILED ]; then
      echo "| $n files | go tool pprof -proto | failed: $(tail -1 "$out/err-go-$n") | |"
    else
      echo "| $n files | go tool pprof -proto | $gs s | $((gm / 1024)) MiB |"
      local kt gt; kt=$(total "$out/kiln-$n.pb.gz"); gt=$(total "$out/go-$n.pb.gz")
      [ "$kt" = "$gt" ] || { echo "totals differ: kiln $kt, go $gt" >&2; exit 1; }
      echo "| | **ratio go/kiln** | **$(echo "scale=1; $gs / $ks" | bc)× faster** | **$(echo "scale=1; $gm / $km" | bc)× less memory** |"
    fi
  fi
}

echo "| input | tool | wall time | peak RSS |"
echo "|---|---|---|---|"
row "$N"
[ "$BIG" = 0 ] || row "$BIG"
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(go version); kiln $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
