#!/usr/bin/env bash
# Time from navigation to the first flame graph of a 50k-node profile in
# Debian's Chromium (headless, playwright-core from e2e/): Kiln's web UI
# against the same profile as an inferno SVG flame graph (`kiln flamegraph`,
# the flamegraph.pl format most tools emit) opened in the same browser.
# Each is timed from navigation to the first animation frame after it is
# drawn; median of RUNS (default 7), one run of each side after the other.
#
#   bench/ui.sh                 # 50k nodes
#   NODES=100000 bench/ui.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-50000}
RUNS=${RUNS:-7}
out=bench/out/ui
mkdir -p "$out"
cargo build --release -q -p kiln
[ -d e2e/node_modules/playwright-core ] || npm ci --prefix e2e --no-audit --no-fund --loglevel=error
kiln=target/release/kiln
python3 - "$NODES" > "$out/profile.folded" <<'PY'
import random, sys
# A tree of NODES frames: each line adds one new frame under a random
# existing one, so every line is a distinct node.
n = int(sys.argv[1]); rnd = random.Random(7)
paths = [()]
mods = [f"crate_{i}::module_{j}" for i in range(40) for j in range(5)]
for i in range(n):
    parent = paths[rnd.randrange(len(paths))] if rnd.random() < 0.9 else paths[-1]
    frame = f"{rnd.choice(mods)}::function_{i}"
    p = parent + (frame,)
    paths.append(p)
    print(";".join(p), rnd.randint(1, 1000))
PY
$kiln flamegraph "$out/profile.folded" -o "$out/inferno.svg" 2>/dev/null
data=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$data"' EXIT
$kiln server --listen 127.0.0.1:0 --data-dir "$data" --no-self-profile > "$out/server.out" 2>&1 &
PID=$!
until grep -q 'http://' "$out/server.out"; do sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$out/server.out")
gzip -kf "$out/profile.folded"
curl -sf -X POST "$URL/ingest?name=bench%7B%7D&format=folded&from=now-1m" --data-binary @"$out/profile.folded.gz" > /dev/null
node bench/ui-first-graph.mjs "$URL" "$out/inferno.svg" "$RUNS" | tee "$out/result.txt"
