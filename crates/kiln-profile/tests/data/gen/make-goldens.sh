#!/usr/bin/env bash
# Regenerates Kiln's golden profiles with real tools (see ../README.md).
# Needs: javac/java (a JDK 11+), go (Debian's golang-go), gcc, perf (Debian's
# linux-perf) and inferno-collapse-perf (`cargo install inferno`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=$(dirname "$here")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# JFR: a JDK program with known hot methods, recorded by Flight Recorder.
javac -d "$work/java" "$here/Hot.java"
(cd "$work/java" && java -XX:StartFlightRecording=filename="$work/hot.jfr",settings=profile Hot 8)
cp "$work/hot.jfr" "$data/jfr/hot-jdk$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p').jfr"

# pprof: a Go program profiled by runtime/pprof.
mkdir -p "$work/go" && cp "$here/hot.go" "$work/go/"
(cd "$work/go" && go mod init hot >/dev/null 2>&1 && go build -o hotgo . && ./hotgo "$data/pprof/go-cpu.pb.gz")

# folded: perf record -g of a C program, collapsed by inferno.
gcc -O0 -fno-omit-frame-pointer -g -o "$work/hotc" "$here/hot.c"
perf record -e cpu-clock:u -F 999 -g -o "$work/perf.data" "$work/hotc" 3
perf script -i "$work/perf.data" > "$work/perf.script"
inferno-collapse-perf "$work/perf.script" > "$data/folded/perf-hotc.folded"
