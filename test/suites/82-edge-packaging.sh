#!/usr/bin/env bash
# 82-edge-packaging.sh: what a Raspberry Pi gets from edge/packaging/,
# checked on this machine (no systemd runs here, so the unit is verified
# offline):
#   - systemd-analyze verify accepts ems-edge.service without a warning, and
#     its offline security score stays low;
#   - the unit keeps the promises of docs/deploy-edge.md (simple service,
#     restarts, dedicated user, state directory, sandbox, no watchdog or
#     sd_notify the daemon does not implement);
#   - the state directory is where the daemon keeps its buffer by default;
#   - systemd-sysusers creates the user and the groups from ems-edge.sysusers;
#   - install.sh --root installs every file with the right owner and mode,
#     and a second run keeps the edited configuration;
#   - the command lines of the unit are accepted by the real ems-edge.
# Prints TAP lines "ok - NAME" / "not ok - NAME: why".
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${EMS_BUILD:-$ROOT/build/san}
cd "$ROOT" || exit 1
P=edge/packaging
UNIT=$P/ems-edge.service

. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status

TMP=$(mktemp -d /tmp/ems-edge-pkg-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- the unit
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify also checks that ExecStart exists; point it at a binary that does.
    sed 's#/usr/local/bin/ems-edge#/bin/true#g' "$UNIT" >"$TMP/ems-edge.service"
    out=$(cd "$TMP" && systemd-analyze verify ./ems-edge.service 2>&1)
    if [ $? -eq 0 ] && [ -z "$out" ]; then
        ok "ems-edge.service: systemd-analyze verify has no complaint"
    else
        notok "ems-edge.service: systemd-analyze verify has no complaint" "$(echo "$out" | head -n 5 | tr '\n' ' ')"
    fi
    score=$(cd "$TMP" && systemd-analyze security --offline=yes ./ems-edge.service 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then
        ok "ems-edge.service: offline exposure level $score (at most 3.0)"
    else
        notok "ems-edge.service: offline exposure level at most 3.0" "got '${score:-none}'"
    fi
else
    skip "ems-edge.service: systemd-analyze verify has no complaint" "systemd-analyze not installed"
fi

# One value of a key in [Service]/[Unit] (the last one wins, as in systemd).
key() { awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); v = $0 } END { print v }' "$UNIT"; }
want() { # NAME KEY EXPECTED
    local got
    got=$(key "$2")
    if [ "$got" = "$3" ]; then ok "ems-edge.service: $1 ($2=$3)"; else notok "ems-edge.service: $1" "$2 is '$got', want '$3'"; fi
}
want "a plain service" Type simple
want "restarts whatever made it exit" Restart always
want "restarts without a start limit" StartLimitIntervalSec 0
want "a dedicated user" User ems-edge
want "a dedicated group" Group ems-edge
want "GPIO and I2C access through groups" SupplementaryGroups "gpio i2c"
want "the buffer's state directory" StateDirectory ems-edge
want "a read-only system" ProtectSystem strict
want "writes only its state directory" ReadWritePaths /var/lib/ems-edge
want "no capabilities" CapabilityBoundingSet ""
want "no new privileges" NoNewPrivileges yes
rs=$(key RestartSec)
if [[ "$rs" =~ ^[0-9]+$ ]] && [ "$rs" -ge 1 ]; then ok "ems-edge.service: RestartSec=$rs keeps a crash loop from spinning"; else notok "ems-edge.service: RestartSec at least 1 s" "'$rs'"; fi
nf=$(key LimitNOFILE)
if [[ "$nf" =~ ^[0-9]+$ ]] && [ "$nf" -ge 1024 ]; then ok "ems-edge.service: LimitNOFILE=$nf"; else notok "ems-edge.service: LimitNOFILE set" "'$nf'"; fi
# Honest about readiness and liveness: no Type=notify / WatchdogSec unless the
# daemon speaks sd_notify.
if grep -rqs 'sd_notify' edge/*.c; then
    skip "ems-edge.service: no watchdog the daemon does not pet" "the daemon calls sd_notify; review WatchdogSec by hand"
elif grep -qE '^(WatchdogSec|NotifyAccess)=' "$UNIT" || [ "$(key Type)" = notify ]; then
    notok "ems-edge.service: no watchdog the daemon does not pet" "the daemon has no sd_notify, the unit expects it"
else
    ok "ems-edge.service: no watchdog or notify the daemon does not implement"
fi
if grep -qE '^ProtectClock=yes' "$UNIT"; then
    notok "ems-edge.service: adjtimex stays readable" "ProtectClock=yes refuses even the read-only adjtimex()"
else
    ok "ems-edge.service: adjtimex stays readable (no ProtectClock, adjtimex allowed by the filter)"
fi

# The daemon's default buffer lives in the state directory the unit makes.
buf=$(awk -F' *= *' '$1 == "buffer_path" { print $2 }' edge/ems-edge.conf.example)
case "$buf" in
    /var/lib/ems-edge/*) ok "ems-edge.service: the example's buffer_path ($buf) is in StateDirectory" ;;
    *) notok "ems-edge.service: the example's buffer_path is in StateDirectory" "buffer_path is '$buf'" ;;
esac
cfgpath=$(key ExecStart | awk '{ for (i = 1; i < NF; i++) if ($i == "--config") print $(i + 1) }')
tok=$(awk -F' *= *' '$1 == "token_file" { print $2 }' edge/ems-edge.conf.example)
ca=$(awk -F' *= *' '$1 == "ca_file" { print $2 }' edge/ems-edge.conf.example)
if [ "$(dirname "$cfgpath")" = "$(dirname "$tok")" ] && [ "$(dirname "$tok")" = "$(dirname "$ca")" ]; then
    ok "ems-edge.service: config, token and CA share one directory ($(dirname "$cfgpath"))"
else
    notok "ems-edge.service: config, token and CA share one directory" "config $cfgpath, token $tok, CA $ca"
fi

# ---------------------------------------------------------------- sysusers + install.sh
R=$TMP/root
mkdir -p "$R/etc"
: >"$R/etc/passwd"
: >"$R/etc/group"
if out=$(systemd-sysusers --root="$R" "$ROOT/$P/ems-edge.sysusers" 2>&1) &&
    grep -q '^ems-edge:' "$R/etc/passwd" && grep -q '^gpio:' "$R/etc/group" && grep -q '^i2c:' "$R/etc/group"; then
    shell=$(awk -F: '$1 == "ems-edge" { print $7 }' "$R/etc/passwd")
    if [ "$shell" = /usr/sbin/nologin ]; then
        ok "ems-edge.sysusers: creates user ems-edge (no login) and groups gpio and i2c"
    else
        notok "ems-edge.sysusers: creates user ems-edge (no login) and groups gpio and i2c" "shell is '$shell'"
    fi
else
    notok "ems-edge.sysusers: creates user ems-edge (no login) and groups gpio and i2c" "$(echo "$out" | tail -n 2 | tr '\n' ' ')"
fi

# A bundle as scripts/cross.sh makes it, with a stand-in binary (the real
# one is tested below and in 85-cross.sh).
B=$TMP/bundle
mkdir -p "$B"
cp "$P/install.sh" "$UNIT" "$P/ems-edge.sysusers" "$P/99-ems-edge.rules" edge/ems-edge.conf.example "$B/"
printf '#!/bin/sh\necho "ems-edge stand-in"\n' >"$B/ems-edge"
chmod +x "$B/ems-edge"
R=$TMP/pi
if out=$("$B/install.sh" --root "$R" 2>&1); then
    ok "install.sh --root installs the bundle"
else
    notok "install.sh --root installs the bundle" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi
gid=$(awk -F: '$1 == "ems-edge" { print $3 }' "$R/etc/group" 2>/dev/null)
bad=""
check_file() { # PATH MODE OWNER:GROUP(numeric)
    local st
    st=$(stat -c '%a %u:%g' "$R$1" 2>/dev/null) || { bad="$bad $1(missing)"; return; }
    [ "$st" = "$2 $3" ] || bad="$bad $1($st, want $2 $3)"
}
check_file /usr/local/bin/ems-edge 755 0:0
check_file /etc/systemd/system/ems-edge.service 644 0:0
check_file /etc/sysusers.d/ems-edge.conf 644 0:0
check_file /etc/udev/rules.d/99-ems-edge.rules 644 0:0
check_file /etc/ems 750 "0:$gid"
check_file /etc/ems/ems-edge.conf 640 "0:$gid"
if [ -n "$gid" ] && [ -z "$bad" ]; then
    ok "install.sh: files, owners and modes (config readable by group ems-edge only)"
else
    notok "install.sh: files, owners and modes" "gid '$gid';$bad"
fi
if [[ "$out" == *"/etc/ems/device.token"* && "$out" == *"/etc/ems/ca.pem"* ]]; then
    ok "install.sh: says which secrets are still missing"
else
    notok "install.sh: says which secrets are still missing" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi
echo "device_id = pi_kitchen # edited" >>"$R/etc/ems/ems-edge.conf"
sum=$(sha256sum <"$R/etc/ems/ems-edge.conf")
if "$B/install.sh" --root "$R" >/dev/null 2>&1 && [ "$(sha256sum <"$R/etc/ems/ems-edge.conf")" = "$sum" ]; then
    ok "install.sh: a second run (an upgrade) keeps the edited configuration"
else
    notok "install.sh: a second run (an upgrade) keeps the edited configuration" "the file changed or the run failed"
fi
if "$B/install.sh" --bogus >/dev/null 2>&1; then
    notok "install.sh: refuses an unknown argument" "exit 0"
else
    ok "install.sh: refuses an unknown argument"
fi

# ---------------------------------------------------------------- the real daemon
# The unit's ExecStart/ExecReload with the installed example (token and CA
# pointed at real files): --check must accept it.
if [ -x "$BUILD/ems-edge" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/ca.key" \
        -out "$TMP/ca.pem" -days 2 -subj "/CN=test CA" >/dev/null 2>&1
    openssl rand -hex 32 >"$TMP/device.token"
    sed -e "s#^token_file = .*#token_file = $TMP/device.token#" -e "s#^ca_file = .*#ca_file = $TMP/ca.pem#" \
        -e "s#^buffer_path = .*#buffer_path = $TMP/buffer#" edge/ems-edge.conf.example >"$TMP/ems-edge.conf"
    if out=$("$BUILD/ems-edge" --config "$TMP/ems-edge.conf" --check 2>&1); then
        ok "ems-edge --config FILE --check (the unit's ExecReload) accepts the example"
    else
        notok "ems-edge --config FILE --check (the unit's ExecReload) accepts the example" "$(echo "$out" | tail -n 2 | tr '\n' ' ')"
    fi
    echo "no_such_key = 1" >>"$TMP/ems-edge.conf"
    if out=$("$BUILD/ems-edge" --config "$TMP/ems-edge.conf" --check 2>&1); then
        notok "ems-edge --check refuses a bad file (so a bad reload is not sent SIGHUP)" "exit 0"
    else
        ok "ems-edge --check refuses a bad file (so a bad reload is not sent SIGHUP)"
    fi
    if "$BUILD/ems-edge" --version >/dev/null 2>&1; then
        ok "ems-edge --version works (install.sh and cross.sh use it)"
    else
        notok "ems-edge --version works (install.sh and cross.sh use it)" "non-zero exit"
    fi
else
    skip "ems-edge accepts the unit's command lines" "$BUILD/ems-edge not built yet"
fi

if command -v shellcheck >/dev/null 2>&1; then
    if out=$(shellcheck -S warning "$P/install.sh" scripts/cross.sh 2>&1); then
        ok "shellcheck: install.sh and cross.sh have no warnings"
    else
        notok "shellcheck: install.sh and cross.sh have no warnings" "$(echo "$out" | head -n 4 | tr '\n' ' ')"
    fi
fi

tap_status
