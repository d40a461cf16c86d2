#!/usr/bin/env bash
# 15-fuzz: runs the libFuzzer target fuzz_msg (test/fuzz/fuzz_msg.c) for 60 s
# on a temporary copy of test/vectors, and prints one TAP line.
#
# The binary comes from `make fuzz BUILD=<dir>` (make test builds it); if it
# is missing the suite fails and says so. EMS_FUZZ_SECONDS overrides the
# duration. A crash, leak, UB report or failed property leaves the input in
# build/test-logs/fuzz-artifacts/ for `$EMS_BUILD/fuzz/fuzz_msg FILE`.
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${EMS_BUILD:-$ROOT/build/san}
FUZZ=$BUILD/fuzz/fuzz_msg
SECS=${EMS_FUZZ_SECONDS:-60}
NAME="fuzz_msg runs ${SECS}s on the vectors without a crash, leak or failed property"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if [ ! -x "$FUZZ" ]; then
    echo "not ok - $NAME: $FUZZ is missing; build it with: make fuzz BUILD=${BUILD#"$ROOT"/}"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ems-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/corpus" "$tmp/artifacts"
# The vectors are the seed corpus; names are made unique across kinds.
while IFS= read -r -d '' f; do
    rel=${f#"$ROOT"/test/vectors/}
    cp "$f" "$tmp/corpus/${rel//\//__}"
done < <(find "$ROOT/test/vectors" -type f -name '*.json' -print0)
seeds=$(find "$tmp/corpus" -type f | wc -l)

# -max_len: a device frame is at most 64 KiB (docs/protocol.md, close 1009).
"$FUZZ" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$tmp/artifacts/" "$tmp/corpus" >"$tmp/log" 2>&1
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/log" | tail -n 1)
if [ "$rc" -eq 0 ]; then
    echo "ok - $NAME (${runs:-?} runs from $seeds seeds)"
    exit 0
fi
keep=$ROOT/build/test-logs/fuzz-artifacts
mkdir -p "$keep"
cp "$tmp"/artifacts/* "$keep"/ 2>/dev/null
echo "not ok - $NAME: fuzzer exited with $rc; inputs kept in $keep"
tail -n 60 "$tmp/log" | sed 's/^/# /' >&2
exit 1
