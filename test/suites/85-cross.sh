#!/usr/bin/env bash
# 85-cross.sh: the Raspberry Pi builds. scripts/cross.sh builds ems-edge for
# arm64 and armhf (into a scratch directory, so it never touches build/),
# smoke-runs each under qemu-user, and then each ARM binary, still under
# qemu, runs as a simulated device against the native DB writer and gateway
# over TLS with a real token: its telemetry must land in PostgreSQL, and it
# must stop cleanly on SIGTERM.
#
# Needs the cross toolchain, which `make test` installs in its first step
# (scripts/deps.sh runs scripts/cross.sh --install-only). The suite never
# installs packages itself: a missing toolchain is a failure that names
# scripts/deps.sh, unless EMS_SKIP_CROSS=1 asks to skip the suite (a machine
# that cannot have the toolchain). It also checks cross.sh's install
# decision on recorded apt transcripts: upgrades are fine, removals are not.
# Prints TAP lines "ok - NAME" / "not ok - NAME: why".
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${EMS_BUILD:-$ROOT/build/san}
cd "$ROOT" || exit 1

. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status

ARCHS="arm64 armhf"
triple() { case "$1" in arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;; esac; }
qemu() { case "$1" in arm64) echo qemu-aarch64 ;; armhf) echo qemu-arm ;; esac; }

# ---------------------------------------------------------------- install decision
# A fresh Debian 12 lags the archive's security updates, and the foreign
# libraries need their native twins at the same version: the toolchain
# install upgrades perl, libc6 and friends there. That must go ahead; only a
# removal (a foreign -dev package pushing out the native one) is refused.
J=$(mktemp /tmp/ems-cross-judge.XXXXXX)
cat >"$J" <<'SIM'
Inst perl-base [5.36.0-7+deb12u1] (5.36.0-7+deb12u2 Debian-Security:12/stable-security [amd64])
Inst perl [5.36.0-7+deb12u1] (5.36.0-7+deb12u2 Debian-Security:12/stable-security [amd64]) []
Inst libc6:arm64 (2.36-9+deb12u10 Debian:12.10/stable [arm64])
Inst crossbuild-essential-arm64 (12.9 Debian:12.10/stable [all])
Conf perl-base (5.36.0-7+deb12u2 Debian-Security:12/stable-security [amd64])
SIM
if out=$(scripts/cross.sh --judge "$J" 2>&1) && [[ "$out" == *"perl (5.36.0-7+deb12u1 -> 5.36.0-7+deb12u2)"* ]]; then
    ok "cross.sh: an install that upgrades native packages goes ahead and lists the upgrades"
else
    notok "cross.sh: an install that upgrades native packages goes ahead and lists the upgrades" "$(echo "$out" | tr '\n' ' ')"
fi
printf 'Remv libwslay-dev [1.1.1-3+b1]\nInst libwslay-dev:arm64 (1.1.1-3+b1 Debian:12.10/stable [arm64])\n' >"$J"
if out=$(scripts/cross.sh --judge "$J" 2>&1); then
    notok "cross.sh: an install that would remove a native package is refused" "accepted: $(echo "$out" | tr '\n' ' ')"
elif [[ "$out" == *"libwslay-dev 1.1.1-3+b1"* ]]; then
    ok "cross.sh: an install that would remove a native package is refused and names it"
else
    notok "cross.sh: an install that would remove a native package is refused and names it" "$(echo "$out" | tr '\n' ' ')"
fi
rm -f "$J"

# ---------------------------------------------------------------- toolchain
have=""
for a in $ARCHS; do
    if why=$(scripts/cross.sh --check "$a" 2>&1); then
        have="$have $a"
    elif [ "${EMS_SKIP_CROSS:-}" = 1 ]; then
        skip "cross $a: build, smoke run and telemetry end to end" "EMS_SKIP_CROSS=1 (toolchain: ${why#cross: })"
    else
        notok "cross $a: the toolchain is installed" "scripts/deps.sh (make test's first step) did not install it; ${why#cross: }; run scripts/cross.sh --install-only $a, or set EMS_SKIP_CROSS=1 to skip"
    fi
done
if [ -z "$have" ]; then
    tap_status
    exit
fi
if [ ! -f edge/main.c ]; then
    notok "cross: edge/main.c exists" "nothing to build"
    exit 1
fi

TMP=$(mktemp -d /tmp/ems-cross-test.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ -n "${EMS_PG_DIR:-}" ] && ems_pg_stop
    rm -rf "$TMP"
}
trap cleanup EXIT

# ---------------------------------------------------------------- build + smoke run
built=""
for a in $have; do
    log=$TMP/cross-$a.log
    if scripts/cross.sh --no-install --build-root "$TMP/cross" "$a" >"$log" 2>&1; then
        ok "cross $a: builds with -Werror and starts under $(qemu "$a") ($(grep -m1 -- "--version" "$log" | sed 's/.*--version: //'))"
        built="$built $a"
    else
        notok "cross $a: builds with -Werror and starts under $(qemu "$a")" "$(grep -m 4 -E 'error|FAILED|not ' "$log" | tr '\n' ' ')"
    fi
done

for a in $built; do
    bin=$TMP/cross/$a/ems-edge
    list=$(tar tzf "$TMP/cross/ems-edge-$a.tar.gz" 2>&1)
    if [[ "$list" == *"ems-edge-$a/install.sh"* && "$list" == *"ems-edge-$a/ems-edge.service"* ]] &&
        grep -qx "ems-edge-$a/ems-edge" <<<"$list"; then
        ok "cross $a: the bundle holds the binary, the unit and install.sh"
    else
        notok "cross $a: the bundle holds the binary, the unit and install.sh" "$(echo "$list" | tr '\n' ' ')"
    fi
    # The packages install.sh tells the Pi to install provide every library
    # the binary links.
    pkgs=" $(sed -n 's/^RUNTIME_PACKAGES="\(.*\)"$/\1/p' edge/packaging/install.sh) "
    missing=""
    for lib in $(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }'); do
        case "$lib" in libc.so.*|libm.so.*|ld-linux*) continue ;; esac
        pkg=$(dpkg -S "/usr/lib/$(triple "$a")/$lib" 2>/dev/null | head -n 1 | cut -d: -f1)
        [[ -n "$pkg" && "$pkgs" == *" $pkg "* ]] || missing="$missing $lib(${pkg:-no package})"
    done
    if [ "$pkgs" != "  " ] && [ -z "$missing" ]; then
        ok "cross $a: install.sh's runtime packages cover the binary's libraries"
    else
        notok "cross $a: install.sh's runtime packages cover the binary's libraries" "missing:$missing"
    fi
    # The shipped example configuration, as the Pi's unit uses it.
    openssl rand -hex 32 >"$TMP/$a.token"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/$a.key" \
        -out "$TMP/$a.ca" -days 2 -subj "/CN=test" >/dev/null 2>&1
    sed -e "s#^token_file = .*#token_file = $TMP/$a.token#" -e "s#^ca_file = .*#ca_file = $TMP/$a.ca#" \
        -e "s#^buffer_path = .*#buffer_path = $TMP/$a.buffer#" edge/ems-edge.conf.example >"$TMP/$a.conf"
    if out=$("$(qemu "$a")" "$bin" --config "$TMP/$a.conf" --check 2>&1); then
        ok "cross $a: --check accepts the example configuration"
    else
        notok "cross $a: --check accepts the example configuration" "$(echo "$out" | tail -n 2 | tr '\n' ' ')"
    fi
done
if [ -z "$built" ]; then
    exit 1
fi

# ---------------------------------------------------------------- end to end
if ! command -v curl >/dev/null 2>&1; then
    skip "cross: ARM edges against the native cloud" "curl is not installed"
    tap_status
    exit
fi
for b in ems-gateway ems-dbwriter emsctl; do
    if [ ! -x "$BUILD/$b" ]; then
        skip "cross: ARM edges against the native cloud" "$BUILD/$b not built"
        tap_status
        exit
    fi
done
# shellcheck source=../lib/pg.sh
. "$ROOT/test/lib/pg.sh"
export EMS_PG_NO_TRAP=1
if ! ems_pg_start 2>"$TMP/pg.err"; then
    notok "cross: PostgreSQL starts" "$(tail -n 3 "$TMP/pg.err" | tr '\n' ' ')"
    exit 1
fi
export EMS_DB_DIR=$ROOT/cloud/db
export EMS_PG_DSN="host=$EMS_PG_SOCKDIR port=$EMS_PG_PORT user=postgres dbname=postgres"
S=$TMP/secrets
EMS_SECRETS_DIR=$S docker/init-secrets.sh localhost >/dev/null 2>&1
run=$TMP/run
mkdir -p "$run" "$TMP/static"
EMS_DBWRITER_SOCKET=$run/dbwriter.sock "$BUILD/ems-dbwriter" >"$TMP/dbwriter.log" 2>&1 &
pids+=($!)
"$BUILD/ems-gateway" --listen 127.0.0.1:0 --port_file "$run/port" --tls_cert "$S/tls.crt" \
    --tls_key "$S/tls.key" --dbwriter_socket "$run/dbwriter.sock" --static_dir "$TMP/static" \
    >"$TMP/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    [ -s "$run/port" ] && curl -fsSk --max-time 2 "https://127.0.0.1:$(cat "$run/port")/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
port=$(cat "$run/port" 2>/dev/null)
if [ -z "$port" ]; then
    notok "cross: the native cloud starts" "$(tail -n 3 "$TMP/gateway.log" "$TMP/dbwriter.log" | tr '\n' ' ')"
    exit 1
fi

edge_pids=()
for a in $built; do
    id=pi_$a
    "$BUILD/emsctl" device add "$id" >"$TMP/$id.token" 2>"$TMP/$id.emsctl.err"
    # localhost: a name in the certificate (mbedTLS 2.28 does not match IP entries).
    "$(qemu "$a")" "$TMP/cross/$a/ems-edge" --sim --profile sunny --device-id "$id" \
        --url "wss://localhost:$port" --ca-file "$S/ca.crt" --token-file "$TMP/$id.token" \
        --buffer "$TMP/$id.buffer" --log-level info >"$TMP/$id.log" 2>&1 &
    edge_pids+=($!)
    pids+=($!)
done
count() {
    psql -X -Atq "$EMS_PG_DSN" -c "SELECT count(*) FROM telemetry WHERE device_id = '$1'" 2>/dev/null
}
# Telemetry goes out once a second; wait until each ARM edge has a few rows
# committed (qemu starts slowly, so allow for it).
for _ in $(seq 1 60); do
    all=1
    for a in $built; do
        n=$(count "pi_$a")
        [ "${n:-0}" -ge 3 ] || all=0
    done
    [ "$all" = 1 ] && break
    sleep 1
done
for a in $built; do
    n=$(count "pi_$a")
    if [ "${n:-0}" -ge 3 ]; then
        ok "cross $a: ems-edge --sim under $(qemu "$a") connects over TLS with its token; $n packets committed"
    else
        notok "cross $a: ems-edge --sim under $(qemu "$a") connects over TLS with its token" "${n:-0} rows; $(tail -n 3 "$TMP/pi_$a.log" | tr '\n' ' ')"
    fi
done

for p in "${edge_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
i=0
for a in $built; do
    p=${edge_pids[$i]}
    i=$((i + 1))
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null # still there after 20 s: counts as a failure below
    wait "$p"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        ok "cross $a: stops cleanly on SIGTERM (exit 0)"
    else
        notok "cross $a: stops cleanly on SIGTERM" "exit status $rc; $(tail -n 2 "$TMP/pi_$a.log" | tr '\n' ' ')"
    fi
done

tap_status
