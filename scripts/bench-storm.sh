#!/usr/bin/env bash
# scripts/bench-storm.sh: a reconnect storm over TLS (docs/benchmarks.md,
# "Reconnect storms"). Starts a private PostgreSQL (fsync on), ems-dbwriter
# and one ems-gateway with TLS on loopback, provisions N devices (the same
# token derivation as bench_fleet), then runs test/bench/bench_storm twice:
# with full handshakes only, and with TLS session tickets. Each run connects
# all N, drops them all at once and measures until all are back, counting
# the failed attempts by kind. The gateway's handshake counters and CPU
# are printed after each run. Everything it started is stopped at the end,
# also on error or Ctrl-C.
#
# usage: scripts/bench-storm.sh [--devices N] [--build DIR] [--nice N]
#            [--gateway-args "ARGS"] [--timeout-ms MS]
#   --devices N      devices (default 5000; each process holds one fd each)
#   --build DIR      binaries (default build; make BUILD=DIR OPT=-O2 all
#                    DIR/bench/bench_storm)
#   --nice N         every process at nice N (e.g. -10 on a shared machine)
#   --gateway-args   extra flags for ems-gateway
#   --timeout-ms MS  a device's handshake + upgrade deadline (10000)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICES=5000 BUILD=build NICE="" GW_ARGS="" TIMEOUT=10000
while [ $# -gt 0 ]; do
    case "$1" in
    --devices) DEVICES=$2; shift ;;
    --build) BUILD=$2; shift ;;
    --nice) NICE=$2; shift ;;
    --gateway-args) GW_ARGS=$2; shift ;;
    --timeout-ms) TIMEOUT=$2; shift ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-storm: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
STORM=$BUILD/bench/bench_storm
for b in "$BUILD/ems-gateway" "$BUILD/ems-dbwriter" "$STORM"; do
    [ -x "$b" ] || { echo "bench-storm: $b is missing (make BUILD=$BUILD OPT=-O2 all $BUILD/bench/bench_storm)" >&2; exit 2; }
done
log() { echo "bench-storm: $*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" -gt $((DEVICES + 200)) ] || { log "ulimit -n $(ulimit -n) is too low for $DEVICES devices"; exit 2; }

T=$(mktemp -d /tmp/ems-storm.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ -n "${EMS_PG_DIR:-}" ] && ems_pg_stop >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
renice_all() { [ -n "$NICE" ] && renice -n "$NICE" -p "$@" >/dev/null; return 0; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_until() { # CMD SECONDS
    local end=$((SECONDS + $2))
    while [ $SECONDS -lt $end ]; do eval "$1" && return 0; sleep 0.2; done
    return 1
}

. "$ROOT/test/lib/pg.sh"
export EMS_PG_FSYNC=on EMS_PG_NO_TRAP=1
ems_pg_start >/dev/null || { log "PostgreSQL did not start"; exit 1; }
PG_PM=$(head -n 1 "$EMS_PG_DIR/data/postmaster.pid")
renice_all "$PG_PM" $(ps -o pid= --ppid "$PG_PM")
PSQL=(psql "$EMS_PG_DSN" -XAtq -v ON_ERROR_STOP=1)
"$BUILD/ems-dbwriter" --socket "$T/dbw.sock" --dsn "$EMS_PG_DSN" --migrations "$ROOT/cloud/db" \
    >"$T/dbwriter.log" 2>&1 &
PIDS+=($!)
renice_all $!
wait_until '[ -S "$T/dbw.sock" ]' 60 || { log "ems-dbwriter did not start"; tail "$T/dbwriter.log" >&2; exit 1; }
wait_until '"${PSQL[@]}" -c "select 1 from devices limit 0" >/dev/null 2>&1' 30 || { log "schema not migrated"; exit 1; }
SEED=$RANDOM$RANDOM
"${PSQL[@]}" -c "INSERT INTO devices (device_id, token_hash)
  SELECT id, encode(sha256(convert_to(encode(sha256(convert_to('ems-bench:$SEED:' || id, 'UTF8')), 'hex'), 'UTF8')), 'hex')
  FROM (SELECT 'bench' || lpad(i::text, 6, '0') AS id FROM generate_series(0, $DEVICES - 1) i) s" >/dev/null ||
    { log "provisioning failed"; exit 1; }

"$ROOT/test/lib/mkcerts.sh" "$T/certs" >/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/session.key"
PORT=$(free_port)
# All devices come from one address: the per-address cap for connections
# in their handshake (64) is off, as behind a proxy.
# shellcheck disable=SC2086
"$BUILD/ems-gateway" --listen="127.0.0.1:$PORT" --tls=on --tls_cert="$T/certs/chain.crt" \
    --tls_key="$T/certs/server.key" --dbwriter_socket="$T/dbw.sock" \
    --session_key_file="$T/session.key" --port_file="$T/gw.port" --max_unauth_per_addr=0 \
    --max_connections=$((DEVICES + 1000)) $GW_ARGS >"$T/gateway.log" 2>&1 &
PID_GW=$!
PIDS+=($PID_GW)
renice_all $PID_GW
wait_until "[ -s '$T/gw.port' ]" 30 || { log "gateway did not start"; tail "$T/gateway.log" >&2; exit 1; }
wait_until "curl -sf --cacert '$T/certs/ca.crt' -o /dev/null https://localhost:$PORT/healthz" 30 ||
    { log "gateway not healthy"; exit 1; }
log "$DEVICES devices provisioned; gateway pid $PID_GW on port $PORT (TLS)"

cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$PID_GW/stat"; }
metric() { curl -s --cacert "$T/certs/ca.crt" "https://localhost:$PORT/metrics" | awk -v k="$1" '$1 == k {print $2}'; }
for mode in full tickets; do
    extra=()
    [ $mode = tickets ] && extra=(--tickets)
    c0=$(cpu_s)
    f0=$(metric 'ems_gateway_tls_handshakes_total{kind="full"}')
    r0=$(metric 'ems_gateway_tls_handshakes_total{kind="resumed"}')
    log "run: $STORM wss://127.0.0.1:$PORT CA $SEED $DEVICES ${extra[*]} --timeout-ms $TIMEOUT"
    "$STORM" "wss://127.0.0.1:$PORT" "$T/certs/ca.crt" "$SEED" "$DEVICES" "${extra[@]}" \
        --timeout-ms "$TIMEOUT" &
    sp=$!
    renice_all $sp
    wait $sp
    echo "  [$mode] gateway CPU during the run: $(echo "$(cpu_s) - $c0" | bc) s;" \
        "handshakes full $(echo "${f0:-0} $(metric 'ems_gateway_tls_handshakes_total{kind="full"}')" | awk '{print $2 - $1}')," \
        "resumed $(echo "${r0:-0} $(metric 'ems_gateway_tls_handshakes_total{kind="resumed"}')" | awk '{print $2 - $1}');" \
        "accept paused $(metric ems_gateway_accept_paused_total) times (total)"
    sleep 2
done
