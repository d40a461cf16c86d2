#!/usr/bin/env bash
# test/run.sh BUILD_DIR: runs every test program and counts TAP lines.
#
#   1. every C unit test binary BUILD_DIR/test/test_*
#   2. every executable suite test/suites/NN-*.{sh,py} (in name order); each
#      gets EMS_BUILD=BUILD_DIR (sanitized binaries) and EMS_ROOT (the repo)
#
# A program prints "ok - name" or "not ok - name: why" per case. A program that
# exits non-zero without printing any "not ok" line counts as one failure (it
# crashed or could not start); one that runs past its deadline counts as one too.
# A case printed as "ok - name # SKIP why" did not run: it is counted as
# skipped, never as passed, and listed with its reason at the end. The last
# line is "N passed, N failed, N skipped", and the exit status is 0 only if
# none failed. EMS_TEST_ONLY=unit runs just the unit tests; EMS_TEST_FILTER=REGEX
# runs only the programs whose path matches.
set -u
BUILD=${1:-build/san}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export EMS_ROOT=$ROOT EMS_BUILD=$ROOT/$BUILD
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
LOGDIR=$EMS_BUILD/test-logs   # one per build dir: parallel runs never mix logs
mkdir -p "$LOGDIR"

passed=0 failed=0 skipped=0
failures=()
skips=()

run_one() {
    local prog=$1 deadline=$2
    local name log out rc
    name=$(basename "$prog")
    log=$LOGDIR/$name.log
    echo "# running $prog"
    timeout --kill-after=10 "$deadline" "$prog" >"$log.out" 2>"$log"
    rc=$?
    local p f
    local s
    p=$(grep -c '^ok ' "$log.out")
    s=$(grep -cE '^ok .*# SKIP' "$log.out")
    p=$((p - s))
    f=$(grep -c '^not ok ' "$log.out")
    while IFS= read -r line; do
        skips+=("$name: ${line#ok - }")
    done < <(grep -E '^ok .*# SKIP' "$log.out")
    grep -E '^(ok|not ok|#)' "$log.out" | sed 's/^/  /'
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "  not ok - $name: deadline of ${deadline}s passed"
        else
            echo "  not ok - $name: exited with status $rc"
        fi
    fi
    if [ "$f" -gt 0 ]; then
        failures+=("$name")
        echo "  # stderr of $name (last 40 lines, full log in $log):"
        tail -n 40 "$log" | sed 's/^/  #   /'
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
}

filter=${EMS_TEST_FILTER:-.}
for t in "$BUILD"/test/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d|*.o) continue ;; esac
    [[ "$t" =~ $filter ]] || continue
    run_one "$t" 300
done

if [ "${EMS_TEST_ONLY:-}" != unit ]; then
    for s in test/suites/[0-9]*; do
        [ -x "$s" ] || continue
        [[ "$s" =~ $filter ]] || continue
        run_one "$s" 900
    done
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "# failed programs: ${failures[*]}"
fi
if [ ${#skips[@]} -gt 0 ]; then
    echo "# skipped (did not run; not counted as passed):"
    for k in "${skips[@]}"; do echo "#   $k"; done
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
