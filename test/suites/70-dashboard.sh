#!/usr/bin/env bash
# 70-dashboard.sh: the dashboard in a real browser against the real system.
#
# Builds the dashboard (make dashboard, into a temporary directory), runs the
# unit tests of its pure modules under node, then starts a private
# PostgreSQL (test/lib/pg.sh), ems-dbwriter, ems-gateway with TLS (a test CA
# from test/lib/mkcerts.sh) serving the built page, provisions an operator,
# a viewer and three devices with emsctl, starts three `ems-edge --sim`
# (a sunny day, an evening, and a pack that overheats), and runs
# cloud/dashboard/test/browser.mjs: Debian's Chromium driven by
# playwright-core. Screenshots go to build/test-artifacts/dashboard/.
# The gateway debounces alarms for 2 s and sends them to the demo's webhook
# receiver (scripts/demo-webhook.py), whose output is checked at the end.
#
# The browser test changes the world through this same script:
#   70-dashboard.sh hook stop ID | start ID | restart-gateway
# with EMS_DASH_WORK naming the run's directory (the pid files live there).
#
# EMS_BUILD: the binaries (test/run.sh passes the sanitized build).
# EMS_KEEP_TMP=1 keeps the run's directory and logs.
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${EMS_BUILD:-$ROOT/build/san}
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status

# ------------------------------------------------------------ processes
# Each process runs in the background with its pid in $W/NAME.pid and its
# log in $W/NAME.log; the hook invocations find them there.

alive() { [ -f "$W/$1.pid" ] && kill -0 "$(cat "$W/$1.pid")" 2>/dev/null; }

stop_proc() { # NAME: SIGTERM, then SIGKILL after 20 s
    local name=$1 pid i
    [ -f "$W/$name.pid" ] || return 0
    pid=$(cat "$W/$name.pid")
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$W/$name.pid"
}

port() { cat "$W/gw.port"; }

start_gateway() {
    rm -f "$W/gw.bound"
    setsid "$BIN/ems-gateway" \
        --listen="127.0.0.1:$(port)" --tls=on \
        --tls_cert="$W/certs/chain.crt" --tls_key="$W/certs/server.key" \
        --dbwriter_socket="$W/dbwriter.sock" --session_key_file="$W/session.key" \
        --static_dir="$W/build/dashboard" --port_file="$W/gw.bound" --log_level=info \
        --alarm_debounce_s=2 --alarm_webhooks="http://127.0.0.1:$(cat "$W/webhook.port")/ems" \
        --alarm_webhook_secret_file="$W/webhook.secret" --alarm_webhook_backoff_ms=200 \
        --alarm_webhook_backoff_max_ms=1000 \
        >>"$W/gateway.log" 2>&1 </dev/null &
    echo $! >"$W/gateway.pid"
    local i
    for i in $(seq 300); do
        if [ -s "$W/gw.bound" ] &&
            curl -fsS --cacert "$W/certs/ca.crt" "https://localhost:$(port)/healthz" >/dev/null 2>&1; then
            return 0
        fi
        alive gateway || break
        sleep 0.1
    done
    echo "# ems-gateway did not become healthy; log tail:" >&2
    tail -n 30 "$W/gateway.log" | sed 's/^/#   /' >&2
    return 1
}

start_edge() { # ID
    local id=$1
    setsid "$BIN/ems-edge" --sim --config "$W/edge-$id/ems-edge.conf" \
        >>"$W/edge-$id.log" 2>&1 </dev/null &
    echo $! >"$W/edge-$id.pid"
    sleep 0.5
    alive "edge-$id" || {
        echo "# ems-edge $id exited; log tail:" >&2
        tail -n 20 "$W/edge-$id.log" | sed 's/^/#   /' >&2
        return 1
    }
}

# ------------------------------------------------------------ hook mode
if [ "${1:-}" = hook ]; then
    W=${EMS_DASH_WORK:?EMS_DASH_WORK is not set}
    case "${2:-}" in
    stop) stop_proc "edge-$3" ;;
    start) start_edge "$3" ;;
    restart-gateway)
        stop_proc gateway
        sleep 4
        start_gateway
        ;;
    *)
        echo "usage: $0 hook stop ID | start ID | restart-gateway" >&2
        exit 2
        ;;
    esac
    exit $?
fi

# ------------------------------------------------------------ the run
cd "$ROOT" || exit 1
W=$(mktemp -d /tmp/ems-dash.XXXXXX)
export EMS_DASH_WORK=$W EMS_BUILD=$BIN
ART=$ROOT/build/test-artifacts/dashboard
DEVICES=(dash_sunny dash_evening dash_faulty)

cleanup() {
    local d
    for d in "${DEVICES[@]}"; do stop_proc "edge-$d"; done
    stop_proc gateway
    stop_proc webhook
    stop_proc dbwriter
    if [ -n "${EMS_PG_DIR:-}" ]; then ems_pg_stop; fi
    if [ "${EMS_KEEP_TMP:-}" = 1 ]; then
        echo "# kept $W"
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT

fail_setup() { # NAME REASON [LOG]
    notok "$1" "$2"
    if [ -n "${3:-}" ] && [ -f "$3" ]; then tail -n 40 "$3" | sed 's/^/# /'; fi
    exit 1
}

for f in ems-gateway ems-dbwriter ems-edge emsctl; do
    [ -x "$BIN/$f" ] || fail_setup "system under test" "$BIN/$f is missing"
done
command -v node >/dev/null || fail_setup "system under test" "node is not installed"
CHROMIUM=${EMS_CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || fail_setup "system under test" "$CHROMIUM is missing (apt-get install chromium)"

# The page, built as the gateway will serve it.
if make -C "$ROOT" --no-print-directory dashboard BUILD="$W/build" >"$W/build.log" 2>&1 &&
    [ -s "$W/build/dashboard/index.html" ] && [ -s "$W/build/dashboard/assets/app.js" ]; then
    ok "the dashboard builds into index.html and assets/"
else
    fail_setup "the dashboard builds" "make dashboard failed" "$W/build.log"
fi

# The pure modules (gaps, backfill, command validation) under node.
(cd "$ROOT/cloud/dashboard" && node --test --test-reporter=tap test/unit/) >"$W/unit.tap" 2>&1
unit_rc=$?
sed -n -e 's/^ok [0-9]* - /ok - dashboard unit: /p' -e 's/^not ok [0-9]* - /not ok - dashboard unit: /p' "$W/unit.tap"
[ $unit_rc -eq 0 ] || tail -n 40 "$W/unit.tap" | sed 's/^/# /'

# PostgreSQL, the DB writer, certificates, the gateway.
. "$ROOT/test/lib/pg.sh"
EMS_PG_NO_TRAP=1 ems_pg_start || fail_setup "system under test" "PostgreSQL did not start"
export EMS_PG_DSN
"$ROOT/test/lib/mkcerts.sh" "$W/certs" || fail_setup "system under test" "mkcerts.sh failed"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/session.key"
echo >>"$W/session.key"

setsid "$BIN/ems-dbwriter" --socket "$W/dbwriter.sock" --dsn "$EMS_PG_DSN" \
    >>"$W/dbwriter.log" 2>&1 </dev/null &
echo $! >"$W/dbwriter.pid"
for i in $(seq 300); do
    [ -S "$W/dbwriter.sock" ] && break
    alive dbwriter || break
    sleep 0.1
done
[ -S "$W/dbwriter.sock" ] || fail_setup "system under test" "ems-dbwriter did not start" "$W/dbwriter.log"

# The demo's webhook receiver (scripts/demo-webhook.py) takes the alarm
# events: the gateway signs them with this secret, the receiver checks.
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/webhook.secret"
setsid /usr/bin/python3 "$ROOT/scripts/demo-webhook.py" --secret-file "$W/webhook.secret" \
    --port-file "$W/webhook.port" >>"$W/webhook.log" 2>&1 </dev/null &
echo $! >"$W/webhook.pid"
for i in $(seq 100); do
    [ -s "$W/webhook.port" ] && break
    alive webhook || break
    sleep 0.1
done
[ -s "$W/webhook.port" ] || fail_setup "system under test" "demo-webhook.py did not start" "$W/webhook.log"

/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' >"$W/gw.port"
start_gateway || fail_setup "system under test" "ems-gateway did not start" "$W/gateway.log"

# Users and devices.
rnd() { head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
OP_PASS=op-$(rnd)
VIEW_PASS=view-$(rnd)
printf '%s\n' "$OP_PASS" | "$BIN/emsctl" user add ada --role operator >>"$W/emsctl.log" 2>&1 ||
    fail_setup "provisioning" "emsctl user add failed" "$W/emsctl.log"
printf '%s\n' "$VIEW_PASS" | "$BIN/emsctl" user add vic --role viewer >>"$W/emsctl.log" 2>&1 ||
    fail_setup "provisioning" "emsctl user add failed" "$W/emsctl.log"

edge_conf() { # ID PROFILE [extra config lines...]
    local id=$1 profile=$2 l
    shift 2
    mkdir -p "$W/edge-$id"
    "$BIN/emsctl" device add "$id" >"$W/edge-$id/token" 2>>"$W/emsctl.log" ||
        fail_setup "provisioning" "emsctl device add $id failed" "$W/emsctl.log"
    {
        echo "device_id = $id"
        echo "cloud_url = wss://localhost:$(port)"
        echo "token_file = $W/edge-$id/token"
        echo "ca_file = $W/certs/ca.crt"
        echo "buffer_path = $W/edge-$id/buffer"
        echo "plant_profile = $profile"
        echo "log_level = info"
        for l in "$@"; do echo "$l"; done
    } >"$W/edge-$id/ems-edge.conf"
}
edge_conf dash_sunny sunny
edge_conf dash_evening evening
# The pack heats from 20 s after start and trips OVERHEAT (above 55 C) some
# 40 s later; the heat stops at 80 s and the pack is below 50 C (55 minus
# the 5 C hysteresis) at about 130 s: the window in which a reset is refused.
edge_conf dash_faulty faulty "plant_fault_at_s = 20"
for d in "${DEVICES[@]}"; do
    start_edge "$d" || fail_setup "system under test" "ems-edge $d did not start" "$W/edge-$d.log"
done

# The browser; it calls back through $W/hook to stop and start processes.
mkdir -p "$ART"
rm -f "$ART"/*.png
printf '#!/bin/sh\nexec bash "%s" hook "$@"\n' "$SELF" >"$W/hook"
chmod +x "$W/hook"
(
    cd "$ROOT/cloud/dashboard" &&
        EMS_DASH_URL="https://localhost:$(port)" \
        EMS_DASH_OPERATOR="ada:$OP_PASS" \
        EMS_DASH_VIEWER="vic:$VIEW_PASS" \
        EMS_DASH_DEVICES=$(IFS=,; echo "${DEVICES[*]}") \
        EMS_DASH_CONTROL=dash_sunny \
        EMS_DASH_FAULT=dash_faulty \
        EMS_DASH_OFFLINE=dash_evening \
        EMS_DASH_RESET_BELOW_C=50 \
        EMS_DASH_HOOK="$W/hook" \
        EMS_DASH_ARTIFACTS="$ART" \
        EMS_CHROMIUM="$CHROMIUM" \
        node test/browser.mjs
)
rc=$?

# The alarm the browser saw raised, acknowledged and cleared reached the
# webhook receiver as three signed events (docs/alarms.md), and nothing was
# refused: the receiver checks every signature.
hook_rc=0
for ev in alarm.raised alarm.acknowledged alarm.cleared; do
    if ! timeout 20 sh -c "until grep -q '$ev .* dash_faulty error .*signature ok' '$W/webhook.log'; do sleep 0.5; done"; then
        notok "the webhook receiver printed $ev of dash_faulty with a valid signature"
        hook_rc=1
    fi
done
if grep -q REJECTED "$W/webhook.log"; then
    notok "the webhook receiver refused no event"
    hook_rc=1
fi
if [ $hook_rc -eq 0 ]; then
    ok "the webhook receiver printed the alarm raised, acknowledged and cleared, signatures valid"
else
    sed 's/^/#   webhook: /' "$W/webhook.log" | tail -n 20
fi

if [ $rc -ne 0 ]; then
    for f in gateway dbwriter "${DEVICES[@]/#/edge-}"; do
        echo "# --- $f.log (tail) ---"
        tail -n 25 "$W/$f.log" 2>/dev/null | sed 's/^/#   /'
    done
fi
[ $rc -eq 0 ] && [ $unit_rc -eq 0 ] && [ $hook_rc -eq 0 ]
