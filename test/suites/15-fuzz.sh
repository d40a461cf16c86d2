#!/usr/bin/env bash
# 15-fuzz: runs each libFuzzer target for a short time and prints one TAP
# line per target:
#   fuzz_msg       60 s, seeded with test/vectors (every wire message decoder)
#   fuzz_net_http  20 s (the HTTP/1.1 request parser and upgrade checks)
#   fuzz_link      20 s (the gateway <-> DB writer frame decoder)
#
# The binaries come from `make fuzz BUILD=<dir>` (make test builds them); a
# missing one fails and says so. EMS_FUZZ_SECONDS scales every duration
# (the value is fuzz_msg's; the others get a third of it). A crash, leak, UB
# report or failed property leaves the input in $EMS_BUILD/test-logs/fuzz-artifacts/
# for `$EMS_BUILD/fuzz/fuzz_NAME FILE`.
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${EMS_BUILD:-$ROOT/build/san}
SECS=${EMS_FUZZ_SECONDS:-60}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ems-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status

run_target() { # name seconds seed-dir-or-empty
    local name=$1 secs=$2 seeds_from=$3
    local fuzz=$BUILD/fuzz/$name
    local label="$name runs ${secs}s without a crash, leak or failed property"
    if [ ! -x "$fuzz" ]; then
        notok "$label" "$fuzz is missing; build it with: make fuzz BUILD=${BUILD#"$ROOT"/}"
        return
    fi
    local work=$tmp/$name
    mkdir -p "$work/corpus" "$work/artifacts"
    if [ -n "$seeds_from" ]; then
        # Names are made unique across kinds.
        while IFS= read -r -d '' f; do
            local rel=${f#"$seeds_from"/}
            cp "$f" "$work/corpus/${rel//\//__}"
        done < <(find "$seeds_from" -type f -name '*.json' -print0)
    fi
    local seeds
    seeds=$(find "$work/corpus" -type f | wc -l)
    # -max_len: a device frame is at most 64 KiB (docs/protocol.md, close 1009).
    "$fuzz" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1
    local rc=$?
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        ok "$label (${runs:-?} runs from $seeds seeds)"
        return
    fi
    local keep=$BUILD/test-logs/fuzz-artifacts
    mkdir -p "$keep"
    cp "$work"/artifacts/* "$keep"/ 2>/dev/null
    notok "$label" "fuzzer exited with $rc; inputs kept in $keep"
    tail -n 60 "$work/log" | sed 's/^/# /' >&2
}

run_target fuzz_msg "$SECS" "$ROOT/test/vectors"
run_target fuzz_net_http $(((SECS + 2) / 3)) ""
run_target fuzz_link $(((SECS + 2) / 3)) ""
tap_status
