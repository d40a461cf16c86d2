#!/usr/bin/env bash
# scripts/bench-fleet.sh: the end-to-end fleet benchmark (docs/benchmarks.md).
#
# Starts the real system on loopback: a private PostgreSQL 15 with fsync ON
# (test/lib/pg.sh, EMS_PG_FSYNC=on; its data directory is a temporary
# directory removed at the end), ems-dbwriter, G ems-gateway processes,
# provisions N devices in one SQL statement (token hashes computed by
# PostgreSQL's sha256(), the same derivation as bench_fleet's tokens) and a
# dashboard user, then runs:
#   - K load-generator processes (build/.../bench/bench_fleet devices), each
#     with at most --per-proc devices bound to its own 127.0.0.x source
#     address (a process holds one fd per device, `ulimit -n` at most: 20,000
#     here; with the port chosen at connect time, one source address reaches
#     one port of the ephemeral range per destination port, ~28,000). For
#     ws:// they use bench_fleet's lean WebSocket client (test/bench/lean_ws.c,
#     one write per packet); --tls uses the project's client;
#   - per gateway one dashboard subscribed to every device ("*") and one
#     subscribed to 100 devices, measuring fan-out latency, and one on the
#     coalesced fleet view ("mode": "fleet"), measuring the latest-state
#     latency (BENCH_FLEET_VIEW=0 in the environment leaves it out);
# ramps the connections at --rate per second, waits until all are connected,
# sends SIGUSR1 (every device then sends one packet per second), measures
# CPU and memory of the server processes over the measurement window, waits
# for the final acks, and compares the acked packets with the rows in
# PostgreSQL. Every phase is bounded in time; every process it started is
# stopped at the end, also on error or Ctrl-C.
#
# usage: scripts/bench-fleet.sh [--devices N] [--gateways G] [--per-proc M]
#            [--rate R] [--warmup S] [--window S] [--drain S] [--tls]
#            [--reuseport] [--bus] [--no-dashboards] [--perf] [--perf-gen]
#            [--nice N] [--engine lean|client] [--gen-args "ARGS"]
#            [--dbwriter-args "ARGS"] [--gateway-args "ARGS"] [--attack "ARGS"]
#            [--build DIR] [--results FILE] [--keep]
#   --devices N      simulated devices (default 2000)
#   --gateways G     gateway processes (default: 1, or enough for 15,000
#                    connections each)
#   --per-proc M     devices per load-generator process (default 10000, <= 15000;
#                    the fd limit of a process is `ulimit -n`, raised to the
#                    hard limit here)
#   --engine E       the generators' WebSocket client: lean (default for
#                    ws://) or client (the project's client, as before the
#                    lean one existed; always used with --tls)
#   --gen-args ARGS  extra flags for every `bench_fleet devices` (e.g.
#                    "--tick-ms 10")
#   --rate R         new connections per second, all generators together (1000)
#   --warmup S       seconds of sending before measuring (5)
#   --window S       measurement window in seconds (60)
#   --drain S        longest wait for the last acks after sending stops (30)
#   --tls            wss:// (TLS in the gateway) instead of ws://
#   --reuseport      all gateways on one port (SO_REUSEPORT; the kernel
#                    spreads connections); default: one port per gateway and
#                    devices spread round-robin, so each dashboard knows which
#                    gateway's devices it sees
#   --bus            join the gateways over NATS (docs/scaling.md): starts
#                    nats-server on loopback and gives every gateway
#                    --nats_url and --gateway_id=gwN; its CPU and memory
#                    are sampled as the group "nats". With --reuseport the
#                    one "*" dashboard (on whichever gateway the kernel
#                    picks) then sees the devices of every gateway
#   --no-dashboards  no dashboard subscribers
#   --dashboards K   which dashboards, comma-separated (default all,sub,fleet):
#                    all = every packet of every device ("*"), sub = 100
#                    devices, fleet = the coalesced fleet view
#   --nice N         run every process of the benchmark (PostgreSQL, writer,
#                    gateways, generators, dashboards) at nice N (e.g. -10):
#                    on a machine shared with other work this approximates a
#                    dedicated server; the report shows the CPU others used
#   --dbwriter-args  extra flags for ems-dbwriter (e.g. "--batch-rows 5000")
#   --gateway-args   extra flags for every ems-gateway (e.g.
#                    "--dashboard_send_queue=16777216")
#   --attack "ARGS"  during warm-up and window, abusive clients hit the first
#                    gateway (test/bench/attack.py: slow TLS clients,
#                    pipelining clients that never read, wrong-password login
#                    bursts, and a legitimate login every 2 s); ARGS go to
#                    attack.py ("" for its defaults: 1000 / 60 / 200). The
#                    report adds what the attackers achieved and the
#                    legitimate login's latency.
#   --perf           perf record (DWARF call graphs, 199 Hz, at most 20 s) the
#                    first gateway during the window; prints the top symbols
#   --perf-gen       the same for the first load generator
#   --build DIR      where ems-gateway, ems-dbwriter, emsctl, bench/bench_fleet
#                    are (default build, i.e. what `make bench` builds)
#   --results FILE   append the result (one JSON line) to FILE
#   --keep           keep the temporary directory (logs, per-process JSON)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3

DEVICES=2000 GATEWAYS=0 PER_PROC=10000 RATE=1000 WARMUP=5 WINDOW=60 DRAIN=30
DASH_KINDS="all sub fleet"
TLS=0 REUSEPORT=0 BUS=0 DASH=1 PERF=0 BUILD=build RESULTS="" KEEP=0 NICE="" DBW_ARGS="" GW_ARGS=""
ATTACK=0 ATTACK_ARGS="" PERF_GEN=0 ENGINE="" GEN_ARGS=""
while [ $# -gt 0 ]; do
    case "$1" in
    --devices) DEVICES=$2; shift ;;
    --gateways) GATEWAYS=$2; shift ;;
    --per-proc) PER_PROC=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --drain) DRAIN=$2; shift ;;
    --tls) TLS=1 ;;
    --reuseport) REUSEPORT=1 ;;
    --bus) BUS=1 ;;
    --no-dashboards) DASH=0 ;;
    --dashboards) DASH_KINDS=${2//,/ }; shift ;;
    --perf) PERF=1 ;;
    --perf-gen) PERF_GEN=1 ;;
    --engine) ENGINE=$2; shift ;;
    --gen-args) GEN_ARGS=$2; shift ;;
    --nice) NICE=$2; shift ;;
    --dbwriter-args) DBW_ARGS=$2; shift ;;
    --gateway-args) GW_ARGS=$2; shift ;;
    --attack) ATTACK=1 ATTACK_ARGS=$2; shift ;;
    --build) BUILD=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-fleet: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$PER_PROC" -le 15000 ] || { echo "bench-fleet: --per-proc at most 15000" >&2; exit 2; }
if [ "$GATEWAYS" -eq 0 ]; then GATEWAYS=$(((DEVICES + 14999) / 15000)); fi
NPROC=$(((DEVICES + PER_PROC - 1) / PER_PROC))
# Every process started here (generators, gateways) holds one fd per
# connection: take the hard limit, and check that the split fits it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
FDMAX=$(ulimit -n)
[ "$FDMAX" = unlimited ] && FDMAX=1048576
[ "$PER_PROC" -le $((FDMAX - 100)) ] ||
    { echo "bench-fleet: --per-proc $PER_PROC does not fit the fd limit ($FDMAX); lower it" >&2; exit 2; }
# With --reuseport the kernel's split is uneven (a few %): keep 10 % spare.
[ $((DEVICES / GATEWAYS + DEVICES / GATEWAYS / 10)) -le $((FDMAX - 200)) ] ||
    { echo "bench-fleet: $DEVICES devices on $GATEWAYS gateway(s) exceed a process's fd limit ($FDMAX); add --gateways" >&2; exit 2; }
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range
[ "$PER_PROC" -le $((EPH_HI - EPH_LO)) ] ||
    { echo "bench-fleet: --per-proc $PER_PROC exceeds the ephemeral port range ($EPH_LO-$EPH_HI) of one source address" >&2; exit 2; }
[ "$NPROC" -le 200 ] || { echo "bench-fleet: at most 200 generator processes (127.0.0.11..210)" >&2; exit 2; }
for b in ems-gateway ems-dbwriter emsctl bench/bench_fleet; do
    [ -x "$BUILD/$b" ] || { echo "bench-fleet: $BUILD/$b missing (make bench, or make BUILD=$BUILD all $BUILD/bench/bench_fleet)" >&2; exit 2; }
done
BUILD=$(cd "$BUILD" && pwd)
FLEET=$BUILD/bench/bench_fleet

T=$(mktemp -d /tmp/ems-bench.XXXXXX)
PIDS_GW=() PIDS_GEN=() PIDS_DASH=() PID_DBW="" PID_PERF="" PID_ATTACK="" PID_NATS=""
log() { echo "bench-fleet: $*" >&2; }

cleanup() {
    set +e
    for p in "${PIDS_GEN[@]}" "${PIDS_DASH[@]}" $PID_PERF $PID_ATTACK; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS_GW[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS_GEN[@]}" "${PIDS_DASH[@]}" "${PIDS_GW[@]}" $PID_PERF $PID_ATTACK; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    # nats-server after the gateways, so none of them logs a lost bus.
    if [ -n "$PID_NATS" ]; then
        kill -TERM "$PID_NATS" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$PID_NATS" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID_NATS" 2>/dev/null
    fi
    if [ -n "$PID_DBW" ]; then
        kill -TERM "$PID_DBW" 2>/dev/null
        for _ in $(seq 150); do kill -0 "$PID_DBW" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID_DBW" 2>/dev/null
    fi
    wait 2>/dev/null
    ems_pg_stop 2>/dev/null
    if [ "$KEEP" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Waits (at most $2 s) until command $1 succeeds.
wait_until() {
    local cond=$1 secs=$2 i
    for i in $(seq $((secs * 10))); do
        if eval "$cond"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------ PostgreSQL + writer
. "$ROOT/test/lib/pg.sh"
export EMS_PG_FSYNC=on EMS_PG_NO_TRAP=1
ems_pg_start || { log "PostgreSQL did not start"; exit 1; }
log "PostgreSQL 15 (fsync on) in $EMS_PG_DIR, port $EMS_PG_PORT"
PSQL=(psql "$EMS_PG_DSN" -XAtq -v ON_ERROR_STOP=1)
# renice PIDS...: applies --nice (PostgreSQL's backends inherit the
# postmaster's, so it is reniced before the writer connects).
renice_all() { [ -n "$NICE" ] && renice -n "$NICE" -p "$@" >/dev/null; return 0; }
# Statements slower than 250 ms and checkpoints go to the server log, so a
# stall of the ingest (a slow commit, the rollup step) can be named.
"${PSQL[@]}" -c "ALTER SYSTEM SET log_min_duration_statement = 250" \
    -c "ALTER SYSTEM SET log_checkpoints = on" -c "SELECT pg_reload_conf()" >/dev/null
PG_PM=$(head -n 1 "$EMS_PG_DIR/data/postmaster.pid")
renice_all "$PG_PM" $(ps -o pid= --ppid "$PG_PM")

"$BUILD/ems-dbwriter" --socket "$T/dbw.sock" --dsn "$EMS_PG_DSN" --migrations "$ROOT/cloud/db" \
    $DBW_ARGS >"$T/dbwriter.log" 2>&1 &
PID_DBW=$!
renice_all $PID_DBW
wait_until '[ -S "$T/dbw.sock" ] || ! kill -0 $PID_DBW 2>/dev/null' 60
[ -S "$T/dbw.sock" ] || { log "ems-dbwriter did not start:"; tail "$T/dbwriter.log" >&2; exit 1; }
wait_until '"${PSQL[@]}" -c "select 1 from devices limit 0" >/dev/null 2>&1' 30 ||
    { log "schema not migrated"; exit 1; }

# ------------------------------------------------------------ provisioning
SEED=$RANDOM$RANDOM
t_prov=$(date +%s.%N)
"${PSQL[@]}" -c "INSERT INTO devices (device_id, token_hash)
  SELECT id, encode(sha256(convert_to(encode(sha256(convert_to('ems-bench:$SEED:' || id, 'UTF8')), 'hex'), 'UTF8')), 'hex')
  FROM (SELECT 'bench' || lpad(i::text, 6, '0') AS id FROM generate_series(0, $DEVICES - 1) i) s" ||
    { log "provisioning failed"; exit 1; }
PROV_S=$($PY -c "import time; print('%.2f' % (time.time() - $t_prov))")
# The generator's token derivation must match the SQL above.
want=$("$FLEET" token bench "$SEED" 0 | cut -d' ' -f2 | tr -d '\n' | sha256sum | cut -d' ' -f1)
got=$("${PSQL[@]}" -c "select token_hash from devices where device_id = 'bench000000'")
[ "$want" = "$got" ] || { log "token derivation mismatch ($want vs $got)"; exit 1; }
PASS=bench-$SEED
echo "$PASS" | EMS_PG_DSN=$EMS_PG_DSN "$BUILD/emsctl" user add bench --role viewer >/dev/null 2>"$T/emsctl.log" ||
    { log "emsctl user add failed:"; cat "$T/emsctl.log" >&2; exit 1; }
log "provisioned $DEVICES devices in $PROV_S s (one INSERT ... SELECT)"

# ------------------------------------------------------------ gateways
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/session.key"
mkdir -p "$T/www" && echo '<!doctype html><title>ems</title>' >"$T/www/index.html"
SCHEME=http WSCHEME=ws CURL_TLS=() GW_TLS=(--tls=off) FLEET_TLS=() DEV_TLS=()
if [ "$TLS" = 1 ]; then
    "$ROOT/test/lib/mkcerts.sh" "$T/certs"
    SCHEME=https WSCHEME=wss
    CURL_TLS=(--cacert "$T/certs/ca.crt")
    GW_TLS=(--tls=on --tls_cert="$T/certs/chain.crt" --tls_key="$T/certs/server.key")
    FLEET_TLS=(--tls-ca "$T/certs/ca.crt")
    DEV_TLS=(--tls-name localhost)
fi
PORTS=()
if [ "$REUSEPORT" = 1 ]; then
    p=$(free_port)
    for g in $(seq 0 $((GATEWAYS - 1))); do PORTS+=("$p"); done
else
    for g in $(seq 0 $((GATEWAYS - 1))); do PORTS+=("$(free_port)"); done
fi
BUS_ARGS=()
if [ "$BUS" = 1 ]; then
    command -v nats-server >/dev/null || { log "--bus needs nats-server (apt-get install nats-server)"; exit 2; }
    NATS_PORT=$(free_port)
    nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$T/nats.log" 2>&1 &
    PID_NATS=$!
    renice_all $PID_NATS
    wait_until "(exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT) 2>/dev/null" 10 ||
        { log "nats-server did not start:"; tail "$T/nats.log" >&2; exit 1; }
    log "nats-server on 127.0.0.1:$NATS_PORT, pid $PID_NATS"
fi
# The generators stand for thousands of homes but connect from a few
# 127.0.0.x addresses: the per-address cap on connections still in their
# upgrade (64, against floods from one address) would refuse most of a
# ramp, so it is off here, as behind a proxy (docs/deploy-cloud.md).
for g in $(seq 0 $((GATEWAYS - 1))); do
    [ "$BUS" = 1 ] && BUS_ARGS=(--nats_url="nats://127.0.0.1:$NATS_PORT" --gateway_id="gw$g")
    "$BUILD/ems-gateway" --listen="127.0.0.1:${PORTS[$g]}" "${GW_TLS[@]}" \
        --reuseport=$([ "$REUSEPORT" = 1 ] && echo on || echo off) \
        --dbwriter_socket="$T/dbw.sock" --session_key_file="$T/session.key" \
        --static_dir="$T/www" --port_file="$T/gw$g.port" --log_level=info --max_unauth_per_addr=0 \
        "${BUS_ARGS[@]}" $GW_ARGS \
        >"$T/gateway$g.log" 2>&1 &
    PIDS_GW+=($!)
    renice_all $!
done
for g in $(seq 0 $((GATEWAYS - 1))); do
    wait_until "[ -s '$T/gw$g.port' ]" 30 || { log "gateway $g did not start:"; tail "$T/gateway$g.log" >&2; exit 1; }
done
UNIQ_PORTS=$(printf '%s\n' "${PORTS[@]}" | sort -u)
for p in $UNIQ_PORTS; do
    wait_until "curl -sf ${CURL_TLS[*]} -o /dev/null $SCHEME://localhost:$p/healthz" 30 ||
        { log "gateway on port $p not healthy"; exit 1; }
done
log "$GATEWAYS gateway(s) on port(s) $(echo $UNIQ_PORTS) ($WSCHEME), pids ${PIDS_GW[*]}"
# bus_joined: every gateway reports the others as peers on the bus
# (ems_gateway_bus_peers in /metrics). With --reuseport one port reaches a
# gateway the kernel picks, so it is asked several times.
bus_joined() {
    local p
    for p in $UNIQ_PORTS; do
        for _ in $(seq $((GATEWAYS * 3))); do
            curl -s "${CURL_TLS[@]}" "$SCHEME://localhost:$p/metrics" 2>/dev/null |
                grep -qE "^ems_gateway_bus_peers $((GATEWAYS - 1))(\.0)?\$" || return 1
        done
    done
}
if [ "$BUS" = 1 ] && [ "$GATEWAYS" -gt 1 ]; then
    # Each gateway must hear the others before the dashboards subscribe, or
    # a "*" dashboard would start without the other gateways' telemetry.
    wait_until bus_joined 20 || log "warning: the gateways did not all see each other on the bus within 20 s"
fi

# ------------------------------------------------------------ dashboards
NDASH=0 DASH_LOGS=()
if [ "$DASH" = 1 ]; then
    COOKIE=$(curl -s "${CURL_TLS[@]}" -D - -o /dev/null -H 'Content-Type: application/json' \
        -d "{\"username\":\"bench\",\"password\":\"$PASS\"}" "$SCHEME://localhost:${PORTS[0]}/api/login" |
        tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(ems_session=[^;]*\).*/\1/p')
    [ -n "$COOKIE" ] || { log "login failed"; exit 1; }
    ndash_gw=$GATEWAYS
    [ "$REUSEPORT" = 1 ] && ndash_gw=1
    for g in $(seq 0 $((ndash_gw - 1))); do
        # subset: 100 devices of this gateway (ids g, g+G, g+2G, ...)
        for kind in $DASH_KINDS; do
            [ "$kind" = fleet ] && [ "${BENCH_FLEET_VIEW:-1}" = 0 ] && continue
            if [ $kind = all ]; then sub='*'; elif [ $kind = fleet ]; then sub=fleet; else sub="bench:$g:100:$GATEWAYS"; fi
            "$FLEET" dashboard --port "${PORTS[$g]}" --cookie "$COOKIE" "${FLEET_TLS[@]}" \
                --sub "$sub" --warmup "$WARMUP" --window "$WINDOW" --tail 3 \
                --out "$T/dash-$g-$kind.json" >"$T/dash-$g-$kind.log" 2>&1 &
            PIDS_DASH+=($!)
            renice_all $!
            DASH_LOGS+=("$T/dash-$g-$kind.log")
            NDASH=$((NDASH + 1))
        done
    done
    for f in "${DASH_LOGS[@]}"; do
        wait_until "grep -qs READY '$f'" 20 || { log "dashboard did not connect: $(cat "$f")"; exit 1; }
    done
    log "$NDASH dashboard(s) connected"
fi

# ------------------------------------------------------------ load generators
pg_pids() { echo "$PG_PM"; ps -o pid= --ppid "$PG_PM"; }
# sample FILE: CPU ticks of each group and the machine's /proc/stat line.
sample() {
    $PY - "$1" "gw:${PIDS_GW[*]}" "dbw:$PID_DBW" "pg:$(pg_pids | tr '\n' ' ')" \
        "gen:${PIDS_GEN[*]}" "dash:${PIDS_DASH[*]}" "nats:$PID_NATS" <<'EOF'
import json, sys, time
out = {"t": time.time(), "groups": {}}
def ticks(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
        f = s[s.rindex(")") + 2:].split()
        return int(f[11]) + int(f[12])
    except OSError:
        return 0
def mem(pid):
    r = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                r[k] = int(v.split()[0])
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                r["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return r
for arg in sys.argv[2:]:
    name, _, pids = arg.partition(":")
    pids = [p for p in pids.split() if p]
    g = {"ticks": 0, "rss_kb": 0, "hwm_kb": 0, "pss_kb": 0, "n": len(pids)}
    for p in pids:
        g["ticks"] += ticks(p)
        m = mem(p)
        g["rss_kb"] += m.get("VmRSS", 0)
        g["hwm_kb"] += m.get("VmHWM", 0)
        g["pss_kb"] += m.get("Pss", 0)
    out["groups"][name] = g
out["stat"] = [int(x) for x in open("/proc/stat").readline().split()[1:]]
json.dump(out, open(sys.argv[1], "w"))
EOF
}

PORTLIST=$(printf '%s,' "${PORTS[@]}")
PORTLIST=${PORTLIST%,}
[ "$REUSEPORT" = 1 ] && PORTLIST=${PORTS[0]}
sample "$T/ramp0.json"
t_ramp=$(date +%s.%N)
left=$DEVICES first=0
for k in $(seq 0 $((NPROC - 1))); do
    n=$(((left + NPROC - k - 1) / (NPROC - k)))
    # shellcheck disable=SC2086
    "$FLEET" devices --ports "$PORTLIST" --src "127.0.0.$((11 + k))" --seed "$SEED" \
        --first $first --count $n --rate $((RATE / NPROC > 0 ? RATE / NPROC : 1)) \
        --warmup "$WARMUP" --window "$WINDOW" --drain "$DRAIN" "${FLEET_TLS[@]}" "${DEV_TLS[@]}" \
        ${ENGINE:+--engine "$ENGINE"} $GEN_ARGS \
        --out "$T/gen$k.json" >"$T/gen$k.out" 2>"$T/gen$k.log" &
    PIDS_GEN+=($!)
    renice_all $!
    first=$((first + n))
    left=$((left - n))
done
RAMP_MAX=$((DEVICES / RATE * 3 + 60))
for k in $(seq 0 $((NPROC - 1))); do
    if ! wait_until "grep -qs READY '$T/gen$k.out'" $RAMP_MAX; then
        log "generator $k did not connect all its devices within $RAMP_MAX s:"
        tail -n 5 "$T/gen$k.log" >&2
        for g in $(seq 0 $((GATEWAYS - 1))); do grep -v ' connected from ' "$T/gateway$g.log" | tail -n 5 >&2; done
        exit 1
    fi
done
RAMP_S=$($PY -c "import time; print('%.1f' % (time.time() - $t_ramp))")
sample "$T/ramp1.json"
log "$DEVICES devices connected in $RAMP_S s ($NPROC generator process(es))"

# ------------------------------------------------------------ measurement
for p in "${PIDS_GEN[@]}" "${PIDS_DASH[@]}"; do kill -USR1 "$p"; done
t_start=$(date +%s.%N)
log "sending: warm-up $WARMUP s, window $WINDOW s"
if [ "$ATTACK" = 1 ]; then
    # shellcheck disable=SC2086
    $PY "$ROOT/test/bench/attack.py" --port "${PORTS[0]}" --user bench --password "$PASS" \
        $([ "$TLS" = 1 ] && echo "--ca $T/certs/ca.crt" || echo --plain) \
        --duration "$($PY -c "print($WARMUP + $WINDOW)")" --out "$T/attack.json" $ATTACK_ARGS \
        >"$T/attack.log" 2>&1 &
    PID_ATTACK=$!
    renice_all $PID_ATTACK
    log "attack started (pid $PID_ATTACK): $ATTACK_ARGS"
fi
# Samples inside the window on both sides (0.4 s after its start, ~1.5 s
# before its end) (a generator exits soon
# after its window when the acks come quickly); rates use the real interval.
sleep "$($PY -c "print($WARMUP + 0.5)")"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
sample "$T/cpu0.json"
if [ "$PERF" = 1 ] || [ "$PERF_GEN" = 1 ]; then
    PERF_PID=${PIDS_GW[0]} PERF_WHAT="gateway ${PIDS_GW[0]}"
    [ "$PERF_GEN" = 1 ] && PERF_PID=${PIDS_GEN[0]} PERF_WHAT="load generator ${PIDS_GEN[0]}"
    perf record --call-graph dwarf,8192 -F 199 -p "$PERF_PID" -o "$T/perf.data" -- sleep "$((WINDOW > 20 ? 20 : WINDOW - 1))" >"$T/perf.log" 2>&1 &
    PID_PERF=$!
fi
sleep "$($PY -c "print($WINDOW - 2)")"
sample "$T/cpu1.json"
log "window over; waiting for the last acks (at most $DRAIN s)"
[ -n "$PID_PERF" ] && { wait "$PID_PERF"; PID_PERF=""; }

for p in "${PIDS_GEN[@]}"; do
    for _ in $(seq $(((DRAIN + 30) * 10))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
for p in "${PIDS_DASH[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
if [ -n "$PID_ATTACK" ]; then
    for _ in $(seq 300); do kill -0 "$PID_ATTACK" 2>/dev/null || break; sleep 0.1; done
    PID_ATTACK=""
fi
# Everything acked is committed; give the writer a moment for anything in
# flight that was not acked (its rows would show up as rows > acked).
sleep 1
"${PSQL[@]}" -F ' ' -c "SELECT count(*), count(DISTINCT (device_id, seq)), count(DISTINCT device_id)
    FROM telemetry WHERE device_id LIKE 'bench%'" >"$T/db.txt"
"${PSQL[@]}" -c "SELECT pg_size_pretty(pg_total_relation_size('telemetry'))" >/dev/null 2>&1

# Slow statements (> 250 ms) during the whole run, by kind.
$PY - "$EMS_PG_DIR/server.log" >"$T/slow.txt" <<'EOF'
import re, sys
kinds = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*): (.*)", line)
    if not m:
        continue
    q = m.group(2)
    k = ("rollup step" if "ems_rollup_step" in q else "telemetry insert batch" if "INSERT INTO telemetry" in q
         else "event" if "ems_event" in q else q[:60])
    d = float(m.group(1))
    n, mx, tot = kinds.get(k, (0, 0.0, 0.0))
    kinds[k] = (n + 1, max(mx, d), tot + d)
for k, (n, mx, tot) in sorted(kinds.items(), key=lambda x: -x[1][2]):
    print(f"  {k}: {n} x > 250 ms, max {mx:.0f} ms, total {tot / 1000:.1f} s")
cp = sum(1 for line in open(sys.argv[1], errors="replace") if "checkpoint complete" in line)
print(f"  checkpoints completed: {cp}")
EOF
if { [ "$PERF" = 1 ] || [ "$PERF_GEN" = 1 ]; } && [ -s "$T/perf.data" ]; then
    perf report -i "$T/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9]+\.[0-9]+%' | head -n 40 >"$T/perf-top.txt"
    perf report -i "$T/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]+\.[0-9]+%' | grep -v '\[k\]' | head -n 50 >"$T/perf-children.txt"
    perf report -i "$T/perf.data" --no-children --sort dso --stdio 2>/dev/null |
        grep -E '^ +[0-9]+\.[0-9]+%' | head -n 12 >"$T/perf-dso.txt"
fi

# ------------------------------------------------------------ report
CMD="scripts/bench-fleet.sh --devices $DEVICES --gateways $GATEWAYS --per-proc $PER_PROC --rate $RATE --warmup $WARMUP --window $WINDOW --drain $DRAIN$([ "$TLS" = 1 ] && echo ' --tls')$([ "$REUSEPORT" = 1 ] && echo ' --reuseport')$([ "$BUS" = 1 ] && echo ' --bus')$([ "$DASH" = 0 ] && echo ' --no-dashboards')$([ "$DASH" = 1 ] && [ "$DASH_KINDS" != "all sub fleet" ] && echo " --dashboards ${DASH_KINDS// /,}")$([ -n "$NICE" ] && echo " --nice $NICE")$([ -n "$DBW_ARGS" ] && echo " --dbwriter-args \"$DBW_ARGS\"")$([ -n "$GW_ARGS" ] && echo " --gateway-args \"$GW_ARGS\"")$([ "$ATTACK" = 1 ] && echo " --attack \"$ATTACK_ARGS\"")$([ -n "$ENGINE" ] && echo " --engine $ENGINE")$([ -n "$GEN_ARGS" ] && echo " --gen-args \"$GEN_ARGS\"")"
$PY - "$T" "$DEVICES" "$GATEWAYS" "$NPROC" "$WINDOW" "$RAMP_S" "$PROV_S" "$TLS" "$CMD" "$RESULTS" "$LOAD0" <<'EOF'
import glob, json, os, sys
T, N, G, K, W, ramp, prov, tls, cmd, results, load0 = sys.argv[1:12]
N, G, K, W = int(N), int(G), int(K), float(W)

def merge(hists):
    b = {}
    n = 0
    mx = 0
    for h in hists:
        n += h["n"]
        mx = max(mx, h["max_us"])
        for lo, w, c in h["buckets"]:
            b[(lo, w)] = b.get((lo, w), 0) + c
    keys = sorted(b)
    def pct(p):
        if not n:
            return None
        want = max(1, int(p * n + 0.5))
        acc = 0
        for lo, w in keys:
            acc += b[(lo, w)]
            if acc >= want:
                return (lo + w / 2) / 1000.0
        return mx / 1000.0
    return {"n": n, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "max_ms": mx / 1000.0}

gens = [json.load(open(f)) for f in sorted(glob.glob(T + "/gen*.json"))]
dashes = {os.path.basename(f): json.load(open(f)) for f in sorted(glob.glob(T + "/dash-*.json"))}
s = lambda k: sum(g[k] for g in gens)
rows, distinct, ndev = [int(x) for x in open(T + "/db.txt").read().split()]
c0, c1 = json.load(open(T + "/cpu0.json")), json.load(open(T + "/cpu1.json"))
dt = c1["t"] - c0["t"]
hz = os.sysconf("SC_CLK_TCK")
cpu = {k: round(100.0 * (c1["groups"][k]["ticks"] - c0["groups"][k]["ticks"]) / hz / dt, 1)
       for k in c1["groups"]}
mem = {k: {"rss_mb": round(v["rss_kb"] / 1024, 1), "pss_mb": round(v["pss_kb"] / 1024, 1)}
       for k, v in c1["groups"].items()}
# CPU seconds each group spent while the devices connected (TLS handshakes,
# upgrades, credential lookups, session events), per connection.
r0, r1 = json.load(open(T + "/ramp0.json")), json.load(open(T + "/ramp1.json"))
ramp_cpu_ms = {k: round(1000.0 * (r1["groups"][k]["ticks"] - r0["groups"][k]["ticks"]) / hz / N, 3)
               for k in ("gw", "dbw", "pg")}
# Memory each connection adds while connected and idle (after its upgrade,
# welcome and device_info, before the first packet): the RSS grown over the
# ramp, per device.
idle_kib = {k: round((r1["groups"][k]["rss_kb"] - r0["groups"][k]["rss_kb"]) / N, 2)
            for k in ("gw", "dbw")}
st0, st1 = c0["stat"], c1["stat"]
tot = sum(st1) - sum(st0)
idle = (st1[3] + st1[4]) - (st0[3] + st0[4])
# CPU in % of one core (the machine has os.cpu_count() of them); "others"
# is everything on the machine that is not this benchmark.
ncpu = os.cpu_count()
machine_busy = round(100.0 * ncpu * (1 - idle / tot), 1) if tot else None
others = round(machine_busy - sum(cpu.values()), 1) if tot else None
r = {
    "devices": N, "gateways": G, "generators": K, "tls": tls == "1", "window_s": W,
    "ramp_s": float(ramp), "provision_s": float(prov), "ramp_cpu_ms_per_conn": ramp_cpu_ms,
    "idle_rss_kib_per_conn": idle_kib,
    "sent": s("sent"), "acked": s("acked"), "nacked": s("nacked"), "unsettled": s("unsettled"),
    "sent_window": s("sent_window"), "acked_window": s("acked_window"),
    "rate_window_per_s": round(s("sent_window") / W, 1),
    "disconnects": s("disconnects"), "connect_failures": s("connect_failures"),
    "skipped": s("skipped"), "send_fail": s("send_fail"), "late_acks": s("late_acks"),
    "dup_acks": s("dup_acks"), "expired": s("expired"),
    "db_rows": rows, "db_duplicates": rows - distinct, "db_devices": ndev,
    "db_rows_minus_acked": rows - s("acked"),
    "ack_latency": merge([g["ack_latency"] for g in gens]),
    "fanout_all": merge([d["fanout_latency"] for k, d in dashes.items() if k.endswith("-all.json")]),
    "fanout_sub": merge([d["fanout_latency"] for k, d in dashes.items() if k.endswith("-sub.json")]),
    "dash_received_all": sum(d["telemetry"] for k, d in dashes.items() if k.endswith("-all.json")),
    "dash_closed_early": [k for k, d in dashes.items() if d["close_code"] not in (0, 1000)],
    "fleet_latest": merge([d["fleet_latency"] for k, d in dashes.items() if k.endswith("-fleet.json")]),
    "fleet_items": sum(d.get("fleet_items", 0) for k, d in dashes.items() if k.endswith("-fleet.json")),
    "fleet_frames": sum(d.get("fleet_frames", 0) for k, d in dashes.items() if k.endswith("-fleet.json")),
    "fleet_gap_max_ms": max([d.get("fleet_gap_max_ms", 0) for k, d in dashes.items() if k.endswith("-fleet.json")] or [0]),
    "cpu_pct": cpu, "machine_busy_pct": machine_busy, "others_pct": others, "ncpu": ncpu,
    # CPU milliseconds per 1,000 packets of the fleet, by group (each
    # includes the kernel's loopback work it triggers on the other side).
    "cpu_ms_per_1k_pkts": {k: (round(v * 10000.0 / (s("sent_window") / W), 2) if s("sent_window") else None)
                           for k, v in cpu.items()},
    "gen_engine": sorted({g.get("engine", "client") for g in gens}),
    "gen_rss_kib_per_device": round(sum(g["rss_kb"] for g in gens) / N, 2),
    "gw_rss_kib_per_device": round(c1["groups"]["gw"]["rss_kb"] / N, 2),
    "loadavg_before": load0, "mem": mem,
    "cmd": cmd,
}
if os.path.exists(T + "/attack.json"):
    r["attack"] = json.load(open(T + "/attack.json"))
elif os.path.exists(T + "/attack.log"):
    r["attack"] = {"error": open(T + "/attack.log").read()[-2000:]}
print(json.dumps(r, indent=1))
if results:
    with open(results, "a") as f:
        f.write(json.dumps(r) + "\n")
ok = r["db_rows"] == r["acked"] and r["db_duplicates"] == 0 and r["unsettled"] == 0 and r["nacked"] == 0
fmt = lambda v: "-" if v is None else ("%.1f" % v if v >= 10 else "%.2f" % v)
print()
print("| devices | gw | TLS | pkts/s (window) | sent | acked | DB rows | dup | ack p50/p99 ms | fan-out * p50/p99 ms | fan-out 100 p50/p99 ms | CPU % of a core: gw / dbw / pg / gen+dash / other procs | RSS gw/dbw MB, PG PSS MB |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
a, fa, fs = r["ack_latency"], r["fanout_all"], r["fanout_sub"]
print(f"| {N} | {G} | {'yes' if r['tls'] else 'no'} | {r['rate_window_per_s']} | {r['sent']} | {r['acked']} | {rows} | {r['db_duplicates']} | "
      f"{fmt(a['p50_ms'])} / {fmt(a['p99_ms'])} | {fmt(fa['p50_ms'])} / {fmt(fa['p99_ms'])} | {fmt(fs['p50_ms'])} / {fmt(fs['p99_ms'])} | "
      f"{cpu['gw']} / {cpu['dbw']} / {cpu['pg']} / {round(cpu['gen'] + cpu['dash'], 1)} / {others} | "
      f"{mem['gw']['rss_mb']} / {mem['dbw']['rss_mb']}, {mem['pg']['pss_mb']} |")
if cpu.get("nats") or mem.get("nats", {}).get("rss_mb"):
    per_k = round(1000.0 * cpu["nats"] / 100.0 / r["rate_window_per_s"], 3) if r["rate_window_per_s"] else None
    print(f"nats-server: CPU {cpu['nats']} % of a core ({per_k} CPU-s per 1,000 packets), RSS {mem['nats']['rss_mb']} MB")
cms = r["cpu_ms_per_1k_pkts"]
print("CPU ms per 1,000 packets: " + ", ".join(f"{k} {v}" for k, v in cms.items() if v) +
      f"; generators {r['gen_engine']}: {r['generators']} process(es), RSS {r['gen_rss_kib_per_device']} KiB per device")
print(f"idle connections: gateway RSS grew {idle_kib['gw']} KiB per connection over the ramp "
      f"(DB writer {idle_kib['dbw']} KiB); under load {round(mem['gw']['rss_mb'] * 1024 / N, 1)} KiB per device in total")
sent_w = r["sent_window"]
print(f"\"*\" dashboards received {r['dash_received_all']} telemetry messages (devices sent {r['sent']} packets, {sent_w} in the window)")
if r["fleet_frames"]:
    fl = r["fleet_latest"]
    print(f"fleet view: {r['fleet_frames']} frames, {r['fleet_items']} items; latest-state latency "
          f"p50 {fmt(fl['p50_ms'])} ms, p99 {fmt(fl['p99_ms'])} ms (n={fl['n']} in the window); "
          f"longest pause between frames {r['fleet_gap_max_ms']} ms")
print()
if "attack" in r:
    print()
    print("attack:", json.dumps(r["attack"], sort_keys=True))
print("every packet committed and acked:", "YES" if ok else "NO")
EOF
echo
echo "PostgreSQL statements slower than 250 ms (whole run):"
cat "$T/slow.txt"
if [ -s "$T/perf-top.txt" ]; then
    echo
    echo "perf ($PERF_WHAT, self time, top 40):"
    cat "$T/perf-top.txt"
    echo
    echo "perf ($PERF_WHAT, user-space functions including callees, top 50):"
    cat "$T/perf-children.txt"
    echo
    echo "perf ($PERF_WHAT, self time by library):"
    cat "$T/perf-dso.txt"
fi
for g in $(seq 0 $((GATEWAYS - 1))); do
    n=$(grep -c -E 'warn|error' "$T/gateway$g.log")
    [ "$n" -gt 0 ] && { log "gateway $g: $n warning/error lines, last ones:"; grep -E 'warn|error' "$T/gateway$g.log" | tail -n 5 >&2; }
done
n=$(grep -c -E 'warn|error' "$T/dbwriter.log")
[ "$n" -gt 0 ] && { log "dbwriter: $n warning/error lines, last ones:"; grep -E 'warn|error' "$T/dbwriter.log" | tail -n 5 >&2; }
exit 0
