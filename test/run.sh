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

# Every process a test program starts inherits this marker (also PostgreSQL
# under runuser, nats-server, Chromium), so whatever a program leaves
# running, after a failure, a timeout or a bug in its cleanup, is found and
# stopped before the next one starts, and named: a test run leaves nothing
# behind.
export EMS_TEST_RUN="$$.$(date +%s%N)"
left_running() { # (the helpers here run without the marker, so they never list themselves)
    local me=$BASHPID
    env -u EMS_TEST_RUN grep -lsxz "EMS_TEST_RUN=$EMS_TEST_RUN" /proc/[0-9]*/environ 2>/dev/null |
        env -u EMS_TEST_RUN sed 's|^/proc/\([0-9]*\)/environ$|\1|' |
        env -u EMS_TEST_RUN grep -vx -e "$$" -e "$me"
}
stop_leftovers() {
    local name=$1 pids pid
    for _ in 1 2 3 4 5 6 7 8 9 10; do # a moment for exits under way
        pids=$(left_running)
        [ -z "$pids" ] && return 0
        sleep 0.5
    done
    for pid in $pids; do
        echo "  # $name left running, killed: pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
        leftovers+=("$name: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100)")
    done
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null
}
leftovers=()
times=() # "seconds name" per program: the slowest are listed at the end

passed=0 failed=0 skipped=0
failures=()
skips=()

run_one() {
    local prog=$1 deadline=$2
    local name log out rc
    name=$(basename "$prog")
    log=$LOGDIR/$name.log
    echo "# running $prog"
    local t0=$SECONDS
    timeout --kill-after=10 "$deadline" "$prog" >"$log.out" 2>"$log"
    rc=$?
    local took=$((SECONDS - t0))
    times+=("$took $name")
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
    stop_leftovers "$name"
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
if [ ${#leftovers[@]} -gt 0 ]; then
    echo "# processes left running by a test program (killed; fix its cleanup):"
    for k in "${leftovers[@]}"; do echo "#   $k"; done
fi
if [ ${#skips[@]} -gt 0 ]; then
    echo "# skipped (did not run; not counted as passed):"
    for k in "${skips[@]}"; do echo "#   $k"; done
fi
echo "# slowest programs (seconds):"
printf '%s\n' "${times[@]}" | sort -rn | head -n 8 | sed 's/^/#   /'
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
