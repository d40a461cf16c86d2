#!/usr/bin/env bash
# scripts/bench.sh: runs every benchmark program under build/bench/ (make bench)
# and prints its results; docs/benchmarks.md records them with this command.
set -u
cd "$(dirname "$0")/.."
found=0
for b in build/bench/bench_*; do
    [ -x "$b" ] || continue
    found=1
    echo "== $b"
    "$b" || echo "bench: $b exited with status $?"
done
[ "$found" -eq 1 ] || echo "bench: no benchmark programs under build/bench/"
