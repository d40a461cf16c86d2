#!/usr/bin/env bash
# scripts/bench.sh: runs every benchmark program under build/bench/ (make bench)
# and prints its results; docs/benchmarks.md records them with this command.
#
# Programs run without arguments, except the fleet load generator
# (bench_fleet), which needs the whole system around it: for it this runs
# the short scenario of scripts/bench-fleet.sh (2,000 devices, 20 s window);
# the larger ones are in docs/benchmarks.md. EMS_BENCH_FLEET="ARGS" replaces
# the scenario's arguments; EMS_BENCH_FLEET=off skips it.
set -u
cd "$(dirname "$0")/.."
found=0
for b in build/bench/bench_*; do
    [ -x "$b" ] || continue
    found=1
    case "$(basename "$b")" in
    bench_fleet)
        [ "${EMS_BENCH_FLEET:-}" = off ] && continue
        echo "== scripts/bench-fleet.sh ${EMS_BENCH_FLEET:---devices 2000 --window 20}"
        # shellcheck disable=SC2086
        scripts/bench-fleet.sh --build build ${EMS_BENCH_FLEET:---devices 2000 --window 20} ||
            echo "bench: scripts/bench-fleet.sh exited with status $?"
        ;;
    *)
        echo "== $b"
        "$b" || echo "bench: $b exited with status $?"
        ;;
    esac
done
[ "$found" -eq 1 ] || echo "bench: no benchmark programs under build/bench/"
