#!/usr/bin/env bash
# scripts/demo.sh: runs the whole system locally (make demo).
#
# Everything lives under var/demo/ in the repository (EMS_DEMO_DIR to move
# it): a private PostgreSQL cluster, a development CA and server certificate,
# the DB writer, the gateway (TLS), three simulated edge devices with different
# profiles, an admin and a viewer user. A second run reuses the data, the
# certificates, the device tokens and the passwords. Ctrl-C stops everything
# in order (devices, gateway, DB writer, PostgreSQL). Each process logs to
# var/demo/log/NAME.log.
#
# GATEWAYS=N (make demo GATEWAYS=2; default 1) runs N gateways joined over
# NATS (docs/scaling.md): a nats-server on 127.0.0.1:EMS_DEMO_NATS_PORT
# (14222), and N gateways sharing the public port with SO_REUSEPORT (the
# kernel spreads the devices' connections over them), each with its own
# gateway_id (demo-gw1, demo-gw2, ...) and its own link to the one DB
# writer. Ctrl-C stops the devices, the gateways, nats-server, the DB writer
# and PostgreSQL.
#
# Alarms (docs/alarms.md): the gateways send every alarm change to a small
# webhook receiver (scripts/demo-webhook.py on 127.0.0.1:EMS_DEMO_WEBHOOK_PORT,
# 18099), which checks the HMAC signature with the secret in
# var/demo/secrets/webhook.secret and prints each event to
# var/demo/log/webhook.log. demo_faulty overheats about two minutes after the
# start: its `error` alarm shows in the dashboard's banner and list, and in
# that log; acknowledging it and resetting the device once it has cooled
# add the `alarm.acknowledged` and `alarm.cleared` events.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=${EMS_DEMO_DIR:-$ROOT/var/demo}
PORT=${EMS_DEMO_PORT:-8443}
PG_PORT=${EMS_DEMO_PG_PORT:-55432}
NATS_PORT=${EMS_DEMO_NATS_PORT:-14222}
WEBHOOK_PORT=${EMS_DEMO_WEBHOOK_PORT:-18099}
GATEWAYS=${GATEWAYS:-1}
PG_BIN=/usr/lib/postgresql/15/bin
BIN=${EMS_DEMO_BIN:-$ROOT/build} # another build directory: EMS_DEMO_BIN=build/x
BIN=$(cd "$BIN" 2>/dev/null && pwd) || { echo "demo: EMS_DEMO_BIN: no directory $BIN" >&2; exit 1; }

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

for b in ems-gateway ems-dbwriter ems-edge emsctl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make all' (make demo does it)"
done
[ -f "$BIN/dashboard/index.html" ] || die "$BIN/dashboard is missing: run 'make dashboard'"
case "$GATEWAYS" in
[1-9] | [1-9][0-9]) ;;
*) die "GATEWAYS=$GATEWAYS: a number of gateways from 1 to 99" ;;
esac
if [ "$GATEWAYS" -gt 1 ]; then
    command -v nats-server >/dev/null ||
        die "GATEWAYS=$GATEWAYS needs nats-server (apt-get install nats-server)"
fi

mkdir -p "$DEMO"/{log,run,certs,edge,secrets}
chmod 755 "$DEMO" "$DEMO/run"
LOG=$DEMO/log

# ------------------------------------------------------------ PostgreSQL
# initdb and pg_ctl refuse to run as root; the cluster belongs to "postgres".
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then (cd /tmp && runuser -u postgres -- "$@"); else "$@"; fi
}
PGDATA=$DEMO/pg
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    say "creating a PostgreSQL cluster in $PGDATA"
    mkdir -p "$PGDATA"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PGDATA"; fi
    chmod 700 "$PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres >"$LOG/initdb.log" 2>&1 ||
        die "initdb failed, see $LOG/initdb.log"
fi
touch "$LOG/postgresql.log"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DEMO/run" "$LOG/postgresql.log"; fi
if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOG/postgresql.log" -w \
        -o "-p $PG_PORT -k $DEMO/run -c listen_addresses=127.0.0.1" start >/dev/null ||
        die "PostgreSQL did not start, see $LOG/postgresql.log"
fi
export EMS_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
say "PostgreSQL on 127.0.0.1:$PG_PORT (log $LOG/postgresql.log)"

PIDS=()
stop_all() {
    trap - INT TERM EXIT
    say "stopping"
    # Devices first, then the gateway (it flushes to the DB writer), then the
    # DB writer (it commits what it holds), then PostgreSQL.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    say "stopped; data kept in $DEMO (delete it to start afresh)"
    exit 0
}
trap stop_all INT TERM EXIT

"$BIN/ems-dbwriter" --dsn "$EMS_PG_DSN" --migrate-only >"$LOG/migrate.log" 2>&1 ||
    die "migrations failed, see $LOG/migrate.log"

# ------------------------------------------------------------ certificates
CERTS=$DEMO/certs
if [ ! -f "$CERTS/server.crt" ] || ! openssl x509 -checkend 86400 -noout -in "$CERTS/server.crt" >/dev/null 2>&1; then
    say "making a development CA and a server certificate for localhost"
    EMS_CERT_DAYS=365 sh "$ROOT/test/lib/mkcerts.sh" "$CERTS"
fi
[ -f "$DEMO/secrets/session.key" ] || head -c 32 /dev/urandom >"$DEMO/secrets/session.key"
chmod 600 "$DEMO/secrets/session.key"
# The webhooks' HMAC key, shared by the gateways and the demo's receiver.
[ -s "$DEMO/secrets/webhook.secret" ] ||
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DEMO/secrets/webhook.secret"
chmod 600 "$DEMO/secrets/webhook.secret"

# ------------------------------------------------------------ users and devices
CRED=$DEMO/secrets/credentials.txt
touch "$CRED"; chmod 600 "$CRED"
ensure_user() { # name role
    if ! grep -q "^$1 " "$CRED"; then
        local pw
        pw=$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 12)
        if printf '%s\n' "$pw" | "$BIN/emsctl" user add "$1" --role "$2" >>"$LOG/emsctl.log" 2>&1 ||
           printf '%s\n' "$pw" | "$BIN/emsctl" user passwd "$1" >>"$LOG/emsctl.log" 2>&1; then
            echo "$1 $pw $2" >>"$CRED"
        else
            die "could not create user $1, see $LOG/emsctl.log"
        fi
    fi
}
ensure_user admin admin
ensure_user viewer viewer

DEVICES=("demo_sunny:sunny" "demo_evening:evening" "demo_faulty:faulty")
# demo_hw: the unchanged ems-edge with backend = hw, reading emulated chips
# (INA228, TMP102, ADE7953, MCP4725, GPIO) through /dev/i2c-1 and
# /dev/gpiochip0 served by test/hwemu (docs/hardware.md).
HWEMU=$BIN/hwemu/libemshwemu.so
[ -f "$HWEMU" ] || die "$HWEMU is missing (make hwemu)"
ensure_device() { # id
    local tok=$DEMO/secrets/$1.token
    if [ ! -s "$tok" ]; then
        local out
        out=$("$BIN/emsctl" device add "$1" 2>>"$LOG/emsctl.log") ||
            out=$("$BIN/emsctl" device rotate "$1" 2>>"$LOG/emsctl.log") ||
            die "could not provision device $1, see $LOG/emsctl.log"
        printf '%s\n' "$out" | grep -Eo '[0-9a-f]{64}' | head -n 1 >"$tok"
        chmod 600 "$tok"
        [ -s "$tok" ] || die "emsctl printed no token for $1"
    fi
}
for d in "${DEVICES[@]}"; do ensure_device "${d%%:*}"; done
ensure_device demo_hw

# ------------------------------------------------------------ cloud processes
SOCK=$DEMO/run/dbwriter.sock
"$BIN/ems-dbwriter" --dsn "$EMS_PG_DSN" --socket "$SOCK" >"$LOG/dbwriter.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || die "the DB writer did not open $SOCK, see $LOG/dbwriter.log"

# The webhook receiver: it prints every alarm event the gateways send.
python3 "$ROOT/scripts/demo-webhook.py" --secret-file "$DEMO/secrets/webhook.secret" \
    --port "$WEBHOOK_PORT" >"$LOG/webhook.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$WEBHOOK_PORT") 2>/dev/null && break
    kill -0 "$!" 2>/dev/null || break
    sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$WEBHOOK_PORT") 2>/dev/null ||
    die "the webhook receiver does not listen on port $WEBHOOK_PORT, see $LOG/webhook.log"
ALARMS=(--alarm_webhooks "http://127.0.0.1:$WEBHOOK_PORT/ems-alarms"
    --alarm_webhook_secret_file "$DEMO/secrets/webhook.secret"
    --alarm_webhook_backoff_max_ms 5000 --alarm_offline_s 60)

# One gateway: exactly as always. Several: a NATS server first (it is
# stopped after the gateways), then the gateways on the same port; reuseport
# is on by default, so each binds its own socket and the kernel spreads new
# connections over them.
GW_BUS=() GW_NAMES=() GW_LOGS=()
if [ "$GATEWAYS" -gt 1 ]; then
    nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$LOG/nats.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null ||
        die "nats-server does not answer on port $NATS_PORT, see $LOG/nats.log"
    say "nats-server on 127.0.0.1:$NATS_PORT (log $LOG/nats.log)"
    GW_BUS=(--nats_url "nats://127.0.0.1:$NATS_PORT")
fi
for ((g = 1; g <= GATEWAYS; g++)); do
    if [ "$GATEWAYS" -gt 1 ]; then
        name=demo-gw$g glog=$LOG/gateway-$name.log
        bus=("${GW_BUS[@]}" --gateway_id "$name")
    else
        name=gateway glog=$LOG/gateway.log bus=()
    fi
    rm -f "$DEMO/run/$name.port"
    "$BIN/ems-gateway" --listen "127.0.0.1:$PORT" --tls true \
        --tls_cert "$CERTS/chain.crt" --tls_key "$CERTS/server.key" \
        --dbwriter_socket "$SOCK" --session_key_file "$DEMO/secrets/session.key" \
        --static_dir "$BIN/dashboard" --port_file "$DEMO/run/$name.port" "${bus[@]}" "${ALARMS[@]}" \
        >"$glog" 2>&1 &
    PIDS+=($!)
    GW_NAMES+=("$name (pid $!, log $glog)") GW_LOGS+=("$glog")
    # The port file is written once this gateway listens: the next one then
    # binds the same port beside it (a second bind fails without reuseport).
    for _ in $(seq 50); do
        [ -s "$DEMO/run/$name.port" ] && break
        kill -0 "$!" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$DEMO/run/$name.port" ] || die "$name did not listen on port $PORT, see $glog"
done
for _ in $(seq 50); do
    curl -fsk "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsk "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 ||
    die "the gateway does not answer on port $PORT, see ${GW_LOGS[*]}"
if [ "$GATEWAYS" -gt 1 ]; then
    say "$GATEWAYS gateways on port $PORT, joined by NATS:"
    for n in "${GW_NAMES[@]}"; do say "  $n"; done
fi

# ------------------------------------------------------------ simulated devices
sp=18080
for d in "${DEVICES[@]}"; do
    id=${d%%:*} profile=${d##*:}
    mkdir -p "$DEMO/edge/$id"
    cat >"$DEMO/edge/$id.conf" <<EOF
# written by scripts/demo.sh
device_id = $id
cloud_url = wss://localhost:$PORT
token_file = $DEMO/secrets/$id.token
ca_file = $CERTS/ca.crt
buffer_path = $DEMO/edge/$id/buffer
status_port = $sp
# Fault injection from this machine only: curl -X POST 'localhost:$sp/sim/fault?overheat=on'
sim_control = true
EOF
    "$BIN/ems-edge" --config "$DEMO/edge/$id.conf" --sim --profile "$profile" \
        >"$LOG/edge-$id.log" 2>&1 &
    PIDS+=($!)
    sp=$((sp + 1))
done

# The hardware path: the emulated board's plant runs the sunny day; its
# control file injects faults (echo overheat=on > .../demo_hw/emu.control).
HWD=$DEMO/edge/demo_hw
mkdir -p "$HWD"
cat >"$HWD/emu.conf" <<EOF
# written by scripts/demo.sh: the emulated board (test/hwemu/README.md)
i2c_bus = 1
gpiochip = gpiochip0
battery_monitor = ina228
plant_profile = sunny
plant_seed = 11
# the same transfer functions as the edge's defaults (docs/hardware.md)
grid_v_per_lsb = 0.0000384615
grid_a_per_lsb = 0.00001
grid_w_per_lsb = 0.00649351
dac_volts_per_w = 0.00055
EOF
: >"$HWD/emu.control"
cat >"$DEMO/edge/demo_hw.conf" <<EOF
# written by scripts/demo.sh: backend = hw with the reference wiring of
# docs/hardware.md (every hardware key at its default)
device_id = demo_hw
cloud_url = wss://localhost:$PORT
token_file = $DEMO/secrets/demo_hw.token
ca_file = $CERTS/ca.crt
buffer_path = $HWD/buffer
status_port = $sp
backend = hw
# the emulated pack: 10 kWh of 16 LFP cells, and their OCV curve
soc_capacity_ah = 192
soc_ocv_table = "0:44.80,5:49.60,10:51.20,20:51.84,40:52.32,60:52.64,80:53.12,90:53.44,95:53.76,99:55.20,100:56.80"
EOF
LD_PRELOAD=$HWEMU EMS_HWEMU_CONFIG=$HWD/emu.conf EMS_HWEMU_CONTROL=$HWD/emu.control \
    EMS_HWEMU_STATE=$HWD/emu.state \
    "$BIN/ems-edge" --config "$DEMO/edge/demo_hw.conf" >"$LOG/edge-demo_hw.log" 2>&1 &
PIDS+=($!)

cat <<EOF

  ems is running.

  Dashboard:   https://localhost:$PORT/
               (the certificate comes from the development CA
                $CERTS/ca.crt: import it into the browser,
                or accept the warning once)
  Logins:      $(awk '{printf "%s / %s (%s)   ", $1, $2, $3}' "$CRED")
  Devices:     ${DEVICES[*]%%:*} demo_hw
               demo_faulty develops an overheat; reset it from the dashboard
               once it has cooled.
               demo_hw runs backend = hw on emulated chips: its outputs
               (DAC code, enable lines) are in $HWD/emu.state;
               overheat it with: echo overheat=on > $HWD/emu.control
  Alarms:      demo_faulty's overheat raises an alarm (banner and Alarms page
               of the dashboard; acknowledge it as admin). Every alarm change
               goes to the demo's webhook receiver, which checks the signature
               and prints it:  tail -f $LOG/webhook.log
               (a device stopped for 60 s raises "offline" too)
  Energy:      the Energy page (fleet) and each device's Energy tab: bars per
               day or month from the devices' energy counters.
  Edge status: http://127.0.0.1:18080/status (one port per device, 18080..)
  Logs:        $LOG/
  Data:        $DEMO (kept between runs)
$(if [ "$GATEWAYS" -gt 1 ]; then
    echo "  Gateways:    $GATEWAYS on port $PORT (SO_REUSEPORT), joined by nats-server on 127.0.0.1:$NATS_PORT:"
    for n in "${GW_NAMES[@]}"; do echo "               $n"; done
    echo "               GET /api/devices on any of them shows every device, with"
    echo "               \"gateway\" naming the one it is connected to."
fi)

  Press Ctrl-C to stop everything.

EOF
wait -n "${PIDS[@]}" || true
say "a process ended; see $LOG/"
