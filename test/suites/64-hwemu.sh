#!/usr/bin/env bash
# 64-hwemu.sh: the hardware emulator libemshwemu.so (test/hwemu/README.md),
# checked with tools that know nothing about it:
#   - Debian's i2c-tools (i2ctransfer, i2cdetect, i2cget, i2cset) and gpiod
#     tools (gpiodetect, gpioinfo, gpioget, gpioset, gpiomon) under
#     LD_PRELOAD see the chips, their register values and the GPIO chip;
#   - the control file's faults (silence, nack_once, stuck, wrong_id,
#     overheat, freq, jitter, missing edges, glitches, grid outage) act;
#   - hwemu_check, a small libgpiod program (sanitized in make test's build),
#     measures the zero-crossing frequency, the 16-event FIFO, EBUSY, and
#     drives the DAC and the enable lines, checking the state file's
#     command_w and both_enables and the INA228's current against the plant;
#   - the same checker, built for arm64 and armhf with the library, under
#     qemu-user (skipped, saying why, without the cross toolchain).
# Uses the library and checker make built in $EMS_BUILD/hwemu (make test
# builds them: `make hwemu`); builds only the cross ones, into a temp dir.
# Prints TAP lines "ok - NAME" / "not ok - NAME: why".
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${EMS_BUILD:-$ROOT/build/san}
cd "$ROOT" || exit 1
LIB=$BUILD/hwemu/libemshwemu.so
CHECK=$BUILD/hwemu/hwemu_check

. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status

if [ ! -f "$LIB" ] || [ ! -x "$CHECK" ]; then
    notok "hwemu: library and checker are built" "$LIB or $CHECK missing (make BUILD=${BUILD#"$ROOT"/} hwemu)"
    exit 1
fi

TMP=$(mktemp -d /tmp/ems-hwemu-test.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

CONF=$TMP/emu.conf
CTL=$TMP/control
STATE=$TMP/state.json
LOG=$TMP/emu.log
cat >"$CONF" <<'EOF'
# the defaults, spelled out
i2c_bus = 1
gpiochip = gpiochip0
battery_monitor = ina228
battery_monitor_address = 0x40
temp_sensor_address = 0x48
grid_meter_address = 0x38
dac_address = 0x60
charge_enable_line = 17
discharge_enable_line = 27
zero_cross_line = 22
plant_profile = sunny
plant_seed = 7
EOF
: >"$CTL"

# The sanitized checker needs this with a library preloaded ahead of ASan.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0

# emu [CONFIG] -- CMD...: CMD with the emulator preloaded, 20 s at most.
emu() {
    local conf=$CONF
    if [ "$1" != "--" ]; then conf=$1; shift; fi
    shift
    EMS_HWEMU_CONFIG=$conf EMS_HWEMU_CONTROL=$CTL EMS_HWEMU_STATE=$STATE EMS_HWEMU_LOG=$LOG \
        LD_PRELOAD=$LIB timeout -s KILL 20 "$@"
}
ctl() { printf '%s\n' "$@" >"$CTL"; }
# state KEY: a number (or true/false) from the state file.
state() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$STATE" 2>/dev/null | head -n 1; }
# hex bytes "0x12 0x34 0x56" -> unsigned integer
bytes() { local v=0 b; for b in "$@"; do v=$(( (v << 8) | b )); done; echo "$v"; }
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }

# ---------------------------------------------------------------- the library itself
needed=$(readelf -d "$LIB" 2>/dev/null | awk '/NEEDED/ { gsub(/[][]/, "", $5); print $5 }' | tr '\n' ' ')
if [[ "$needed" == *asan* || "$needed" == *ubsan* ]]; then
    notok "library: not sanitized (preloaded into any program)" "links $needed"
else
    ok "library: not sanitized, links only: $needed"
fi
exported=$(readelf --dyn-syms -W "$LIB" | awk '$5 == "GLOBAL" && $7 != "UND" { print $8 }' | grep -c ems_)
if [ "$exported" -eq 0 ]; then ok "library: exports libc names only (the plant stays internal)"; else notok "library: exports libc names only" "$exported ems_* symbols exported"; fi

if [ ! -e /dev/i2c-1 ]; then
    out=$(LD_PRELOAD=$LIB timeout 10 i2ctransfer -y 1 w1@0x40 0x3e r2 2>&1)
    if [ $? -ne 0 ]; then ok "inert without EMS_HWEMU_CONFIG: /dev/i2c-1 does not exist"; else notok "inert without EMS_HWEMU_CONFIG" "i2ctransfer answered '$out'"; fi
    printf 'battery_monitor = ina999\n' >"$TMP/bad.conf"
    out=$(EMS_HWEMU_CONFIG=$TMP/bad.conf LD_PRELOAD=$LIB timeout 10 i2ctransfer -y 1 w1@0x40 0x3e r2 2>&1)
    if [ $? -ne 0 ] && [[ "$out" == *"ems-hwemu: $TMP/bad.conf:1: battery_monitor"* ]]; then
        ok "a bad config is reported with FILE:LINE and the library stays inert"
    else
        notok "a bad config is reported with FILE:LINE" "$out"
    fi
else
    skip "inert without EMS_HWEMU_CONFIG" "this machine has a real /dev/i2c-1"
fi

# ---------------------------------------------------------------- i2c-tools
out=$(emu -- i2ctransfer -y 1 w1@0x40 0x3e r2 w1@0x40 0x3f r2 2>&1)
if [ "$out" = $'0x54 0x49\n0x22 0x81' ]; then
    ok "i2ctransfer: INA228 MANUFACTURER_ID 0x5449 ('TI'), DEVICE_ID 0x2281"
else
    notok "i2ctransfer: INA228 IDs" "got '$out'"
fi

out=$(emu -- i2ctransfer -y 1 w1@0x40 0x05 r3 2>&1)
# shellcheck disable=SC2086
vbus=$(awk -v r="$(bytes $out)" 'BEGIN { printf "%.3f", int(r / 16) * 195.3125e-6 }')
if near "$vbus" 52.5 3; then ok "i2ctransfer: INA228 VBUS reads the 48 V pack ($vbus V at 195.3125 uV/LSB)"; else notok "i2ctransfer: INA228 VBUS" "'$out' = $vbus V"; fi

out=$(emu -- i2ctransfer -y 1 w1@0x41 0x3e r2 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"Remote I/O error"* ]]; then
    ok "i2ctransfer: an address nobody answers fails with EREMOTEIO"
else
    notok "i2ctransfer: absent address fails with EREMOTEIO" "rc=$rc '$out'"
fi

out=$(emu -- i2cdetect -y 1 2>&1)
found=$(echo "$out" | awk 'NR > 1 { for (i = 2; i <= NF; i++) if ($i != "--" && $i != "UU") printf "%s ", $i }')
if [ "$found" = "38 40 48 60 " ]; then ok "i2cdetect: the bus shows 0x38 0x40 0x48 0x60 (SMBus quick and read byte, emulated)"; else notok "i2cdetect: four chips" "found '$found'"; fi

out=$(emu -- i2cget -y 1 0x48 0x01 w 2>&1)
if [ "$out" = "0xa060" ]; then ok "i2cget: TMP102 CONFIG resets to 0x60A0 (SMBus word, little-endian)"; else notok "i2cget: TMP102 CONFIG" "got '$out'"; fi

tempc() { # the TMP102 temperature from i2ctransfer output
    # shellcheck disable=SC2086
    awk -v r="$(bytes $1)" 'BEGIN { if (r >= 32768) r -= 65536; printf "%.4f", int(r / 16) * 0.0625 }'
}
t=$(tempc "$(emu -- i2ctransfer -y 1 w1@0x48 0x00 r2 2>&1)")
if near "$t" 25 1; then ok "TMP102: the pack reads $t °C"; else notok "TMP102: the pack temperature" "$t °C"; fi
ctl overheat=on
t=$(tempc "$(emu -- i2ctransfer -y 1 w1@0x48 0x00 r2 2>&1)")
if near "$t" 75 0.2; then ok "control overheat=on: TMP102 reads $t °C (75 and the sensor's noise)"; else notok "control overheat=on" "$t °C"; fi
ctl temp=41.5
t=$(tempc "$(emu -- i2ctransfer -y 1 w1@0x48 0x00 r2 2>&1)")
if near "$t" 41.5 0.2; then ok "control temp=41.5: TMP102 reads $t °C"; else notok "control temp=41.5" "$t °C"; fi

ctl silence=0x40,0x48
out=$(emu -- i2ctransfer -y 1 w1@0x48 0x00 r2 2>&1)
rc=$?
out2=$(emu -- i2ctransfer -y 1 r1@0x60 2>&1)
rc2=$?
if [ $rc -ne 0 ] && [[ "$out" == *"Remote I/O error"* ]] && [ $rc2 -eq 0 ]; then
    ok "control silence=0x40,0x48: those chips stop acknowledging, the DAC still does ($out2)"
else
    notok "control silence=" "rc=$rc '$out' / '$out2'"
fi
ctl "silence="
out=$(emu -- i2ctransfer -y 1 w1@0x48 0x00 r2 2>&1)
if [ $? -eq 0 ]; then ok "control silence= (empty): the chips answer again"; else notok "control silence= (empty)" "$out"; fi

ctl wrong_id=0x40
out=$(emu -- i2ctransfer -y 1 w1@0x40 0x3e r2 w1@0x40 0x3f r2 2>&1)
if [ "$out" = $'0x00 0x00\n0x23 0x81' ]; then ok "control wrong_id=0x40: the INA228's identity registers read wrong"; else notok "control wrong_id=0x40" "'$out'"; fi
ctl ""

cat "$CONF" >"$TMP/ina226.conf"
printf 'battery_monitor = ina226\nbus_divider = 2\n' >>"$TMP/ina226.conf"
out=$(emu "$TMP/ina226.conf" -- i2ctransfer -y 1 w1@0x40 0xfe r2 w1@0x40 0xff r2 w1@0x40 0x00 r2 w1@0x40 0x02 r2 2>&1)
# shellcheck disable=SC2086
bus=$(awk -v r="$(bytes $(echo "$out" | sed -n 4p))" 'BEGIN { printf "%.3f", r * 1.25e-3 * 2 }')
if [ "$(echo "$out" | head -n 3 | tr '\n' ' ')" = "0x54 0x49 0x22 0x60 0x41 0x27 " ] && near "$bus" 52.5 3; then
    ok "battery_monitor = ina226: IDs 0x5449/0x2260, CONFIG 0x4127, bus $bus V through a 1:2 divider"
else
    notok "battery_monitor = ina226" "'$(echo "$out" | tr '\n' ' ')' bus $bus V"
fi

# ADE7953: identity, voltage, period, power against the plant.
out=$(emu -- i2ctransfer -y 1 w2@0x38 0x03 0x03 r4 w2@0x38 0x07 0x02 r1 w2@0x38 0x00 0x04 r1 \
    w2@0x38 0x03 0x1c r4 w2@0x38 0x01 0x0e r2 w2@0x38 0x03 0x12 r4 w2@0x38 0x03 0x1a r4 2>&1)
mapfile -t L <<<"$out"
# shellcheck disable=SC2086
{
    vrms=$(awk -v r="$(bytes ${L[3]})" 'BEGIN { printf "%.2f", r / 26000 }')
    period=$(bytes ${L[4]})
    awatt=$(awk -v r="$(bytes ${L[5]})" 'BEGIN { if (r >= 2147483648) r -= 4294967296; printf "%.1f", r / 154 }')
    irms=$(awk -v r="$(bytes ${L[6]})" 'BEGIN { printf "%.3f", r * 1.0e-5 }')
}
grid_w=$(state grid_w)
if [ "${L[0]}" = "0x00 0x00 0xe4 0x19" ] && [ "${L[2]}" = "0x40" ] && near "$vrms" 230 5 &&
    near "$period" 4474 10 && near "$awatt" "$grid_w" 60; then
    ok "ADE7953: AP_NOLOAD 0x00E419, VERSION ${L[1]}, VRMS $vrms V, PERIOD $period, AWATT $awatt W (plant $grid_w W), IRMSA $irms A"
else
    notok "ADE7953 registers" "'$(echo "$out" | tr '\n' ' ')' vrms=$vrms period=$period awatt=$awatt plant=$grid_w"
fi
ctl freq=49.8 "grid_outage=off"
out=$(emu -- i2ctransfer -y 1 w2@0x38 0x01 0x0e r2 2>&1)
# shellcheck disable=SC2086
p=$(bytes $out)
if [ "$p" = 4492 ]; then ok "control freq=49.8: ADE7953 PERIOD 4492 (223750 / f - 1)"; else notok "control freq=49.8: PERIOD" "$p"; fi
ctl grid_outage=on
out=$(emu -- i2ctransfer -y 1 w2@0x38 0x01 0x0e r2 w2@0x38 0x03 0x1c r4 2>&1)
mapfile -t L <<<"$out"
# shellcheck disable=SC2086
v=$(awk -v r="$(bytes ${L[1]})" 'BEGIN { printf "%.2f", r / 26000 }')
if [ "${L[0]}" = "0xff 0xff" ] && near "$v" 0 1; then ok "control grid_outage=on: the meter reads $v V and no period"; else notok "control grid_outage=on: meter" "'$(echo "$out" | tr '\n' ' ')'"; fi
ctl ""

# MCP4725: power-on read, fast write, EEPROM write with RDY/BSY.
out=$(emu -- i2ctransfer -y 1 r5@0x60 w2@0x60 0x08 0x00 r5@0x60 w3@0x60 0x60 0x40 0x00 r5@0x60 2>&1)
if [ "$out" = $'0xc0 0x00 0x00 0x00 0x00\n0xc0 0x80 0x00 0x00 0x00\n0x40 0x40 0x00 0x04 0x00' ]; then
    ok "MCP4725: power-on code 0, fast write 0x800, DAC+EEPROM write shows busy and the EEPROM content"
else
    notok "MCP4725 read-back" "'$(echo "$out" | tr '\n' ' ')'"
fi
emu -- i2cset -y 1 0x60 0x08 0x00 >/dev/null 2>&1
if [ "$(state dac_code)" = 2048 ] && near "$(state dac_volts)" 1.65 0.001 && [ "$(state command_w)" = 0.000 ]; then
    ok "i2cset: DAC code 2048 = 1.65 V in the state file; no enable, so command_w 0"
else
    notok "i2cset: DAC code in the state file" "$(cat "$STATE")"
fi
if grep -q 'i2c w2@0x60 08 00 -> ok' "$LOG"; then ok "EMS_HWEMU_LOG: one line per transfer"; else notok "EMS_HWEMU_LOG" "$(tail -n 3 "$LOG")"; fi
if /usr/bin/python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$STATE" 2>/dev/null; then
    ok "EMS_HWEMU_STATE is valid JSON"
else
    notok "EMS_HWEMU_STATE is valid JSON" "$(cat "$STATE")"
fi

# ---------------------------------------------------------------- gpiod tools
out=$(emu -- gpiodetect 2>&1)
if [ "$out" = "gpiochip0 [ems-hwemu] (54 lines)" ]; then ok "gpiodetect: gpiochip0 [ems-hwemu] (54 lines)"; else notok "gpiodetect" "'$out'"; fi
out=$(emu -- gpioinfo gpiochip0 2>&1)
n=$(echo "$out" | grep -c '^[[:space:]]*line ')
if [ "$n" = 54 ] && echo "$out" | grep -q 'line  17:[[:space:]]*"GPIO17"[[:space:]]*unused[[:space:]]*input'; then
    ok "gpioinfo: 54 lines, GPIO17 unused input"
else
    notok "gpioinfo" "$n lines; $(echo "$out" | sed -n 19p)"
fi
out=$(emu -- gpioget gpiochip0 17 27 2>&1)
if [ "$out" = "0 0" ]; then ok "gpioget: the enable lines read their inactive level 0"; else notok "gpioget 17 27" "'$out'"; fi

emu -- gpioset --mode=time --sec=2 gpiochip0 17=1 &
pids+=($!)
seen=""
for _ in $(seq 1 30); do
    sleep 0.05
    if [ "$(state charge_enable)" = true ] && [ "$(state charge_line)" = 1 ]; then seen=1; break; fi
done
wait "${pids[-1]}" 2>/dev/null
if [ -n "$seen" ] && [ "$(state charge_enable)" = false ] && [ "$(state charge_line)" = 0 ]; then
    ok "gpioset: charge enable active while held, inactive again after the process exits"
else
    notok "gpioset 17=1" "seen=$seen, after exit: $(cat "$STATE")"
fi

cat "$CONF" >"$TMP/al.conf"
printf 'enable_active_low = true\n' >>"$TMP/al.conf"
out=$(emu "$TMP/al.conf" -- gpioget gpiochip0 17 2>&1)
emu "$TMP/al.conf" -- gpioset --mode=time --usec=300000 -l gpiochip0 27=1 &
pids+=($!)
seen=""
for _ in $(seq 1 20); do
    sleep 0.03
    if [ "$(state discharge_enable)" = true ] && [ "$(state discharge_line)" = 0 ]; then seen=1; break; fi
done
wait "${pids[-1]}" 2>/dev/null
if [ "$out" = 1 ] && [ -n "$seen" ]; then
    ok "enable_active_low = true: idle lines read 1; an active-low request of 1 drives 0 = enabled"
else
    notok "enable_active_low = true" "idle '$out', seen=$seen"
fi

# gpiomon timestamps are the edges' own: frequency = (N - 1) / span. (%n is
# not zero-padded, so seconds and nanoseconds come as two fields.)
monfreq() { awk 'NR == 1 { a = $1 + $2 / 1e9 } { b = $1 + $2 / 1e9 } END { if (NR > 1 && b > a) printf "%.4f", (NR - 1) / (b - a); else print "none" }'; }
f=$(emu -- gpiomon --num-events=51 --rising-edge -F '%s %n' gpiochip0 22 2>&1 | monfreq)
if near "$f" 50 0.3; then ok "gpiomon: zero-crossing rising edges at $f Hz"; else notok "gpiomon: zero crossings at ~50 Hz" "$f"; fi
ctl freq=49.8
f=$(emu -- gpiomon --num-events=51 --rising-edge -F '%s %n' gpiochip0 22 2>&1 | monfreq)
if near "$f" 49.8 0.01; then ok "gpiomon with freq=49.8: $f Hz"; else notok "gpiomon with freq=49.8" "$f"; fi
ctl ""
out=$(emu -- gpiomon --num-events=6 -F '%e %s %n' gpiochip0 22 2>&1)
kinds=$(echo "$out" | awk '{ printf "%s", $1 }')
gap=$(echo "$out" | awk 'NR == 1 { a = $2 + $3 / 1e9 } NR == 2 { printf "%.2f", ($2 + $3 / 1e9 - a) * 1000 }')
if [[ "$kinds" == "101010" || "$kinds" == "010101" ]] && near "$gap" 10 0.1; then
    ok "gpiomon, both edges: rising and falling alternate, $gap ms apart"
else
    notok "gpiomon, both edges" "'$(echo "$out" | tr '\n' ' ')'"
fi
ctl grid_outage=on
out=$(EMS_HWEMU_CONFIG=$CONF EMS_HWEMU_CONTROL=$CTL LD_PRELOAD=$LIB timeout 1.5 gpiomon --num-events=1 gpiochip0 22 2>&1)
rc=$?
if [ $rc -eq 124 ] && [ -z "$out" ]; then ok "control grid_outage=on: no zero-crossing edges"; else notok "grid_outage=on: no edges" "rc=$rc '$out'"; fi
ctl ""
cat "$CONF" >"$TMP/fast.conf"
printf 'plant_speed = 60\n' >>"$TMP/fast.conf"
emu "$TMP/fast.conf" -- gpiomon --num-events=50 -s gpiochip0 22 >/dev/null 2>&1
t=$(state t_s)
if near "${t:-0}" 30 8; then ok "plant_speed = 60: half a second of edges is ${t} s of plant time"; else notok "plant_speed = 60" "plant t_s = $t"; fi

# ---------------------------------------------------------------- the checker
san=""
readelf -d "$CHECK" 2>/dev/null | grep -q 'libasan' && san=" (ASan+UBSan binary)"
check() { # NAME ARGS...: runs the checker, its last line must be PASS
    local name=$1 out
    shift
    out=$(emu -- "$CHECK" "$@" 2>&1)
    if [ "$(echo "$out" | tail -n 1)" = PASS ]; then
        ok "hwemu_check$san $name: $(echo "$out" | grep -v '^PASS$' | tail -n 1)"
    else
        notok "hwemu_check$san $name" "$(echo "$out" | grep -v '^ok' | tr '\n' ' ' | cut -c1-400)"
    fi
    CHECK_OUT=$out
}
ctl ""
check "zero-crossing frequency (libgpiod events)" freq 22 100 rising
f=$(echo "$CHECK_OUT" | sed -n 's/.*freq_hz=\([0-9.]*\).*/\1/p')
near "${f:-0}" 50 0.3 || notok "hwemu_check: frequency near 50 Hz" "$f"
ctl freq=49.8
check "frequency with freq=49.8" freq 22 60 both
f=$(echo "$CHECK_OUT" | sed -n 's/.*freq_hz=\([0-9.]*\).*/\1/p')
near "${f:-0}" 49.8 0.01 || notok "hwemu_check: freq=49.8 measured" "$f"
ctl freq_jitter_us=500
check "freq_jitter_us=500" freq 22 60 rising
read -r lo hi < <(echo "$CHECK_OUT" | sed -n 's/.*min_gap_ms=\([0-9.]*\) max_gap_ms=\([0-9.]*\).*/\1 \2/p')
if awk -v a="${lo:-20}" -v b="${hi:-20}" 'BEGIN { exit !(a < 19.7 && b > 20.3 && a > 17 && b < 23) }'; then
    ok "freq_jitter_us=500: periods spread $lo..$hi ms"
else
    notok "freq_jitter_us=500: periods spread" "$lo..$hi ms"
fi
ctl missing_edges=5
check "missing_edges=5" freq 22 40 rising
hi=$(echo "$CHECK_OUT" | sed -n 's/.*max_gap_ms=\([0-9.]*\).*/\1/p')
near "${hi:-0}" 40 0.5 || notok "missing_edges=5: a lost edge leaves a 40 ms gap" "max gap $hi ms"
ctl glitches=10
check "glitches=10" freq 22 44 both
lo=$(echo "$CHECK_OUT" | sed -n 's/.*min_gap_ms=\([0-9.]*\).*/\1/p')
near "${lo:-1}" 0.05 0.01 || notok "glitches=10: a 50 us glitch pulse" "min gap $lo ms"
ctl ""
check "16-event FIFO drops the oldest" overflow 22
check "a requested line answers EBUSY" ebusy 17
check "DAC + enables -> command_w, plant and INA228" drive "$STATE"
check "both enables are counted as a wiring fault" drive "$STATE" --both
if [ "$(state both_enables)" = 1 ]; then ok "state: both_enables counts the deliberate fault (1)"; else notok "state: both_enables" "$(state both_enables)"; fi
check "INA228 arithmetic, CHARGE/RSTACC, CNVRF" ina "$STATE"
check "stuck=0x40 freezes readings" stuck "$CTL"
check "nack_once=0x40" nack "$CTL"
check "an fd closed behind our back is forgotten" stale
ctl ""

# The daemon itself (sanitized in make test): its hardware back end reads
# every emulated chip and the zero-crossing line.
if [ ! -x "$BUILD/ems-edge" ]; then
    skip "ems-edge with the library preloaded" "no $BUILD/ems-edge"
elif "$BUILD/ems-edge" --help 2>&1 | grep -q -- --probe; then
    out=$(emu -- "$BUILD/ems-edge" --probe --set backend=hw 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        ok "ems-edge --probe --set backend=hw (from $(basename "$BUILD")) reads the emulated board: $(echo "$out" | tail -n 1)"
    else
        notok "ems-edge --probe --set backend=hw on the emulated board" "rc=$rc $(echo "$out" | grep -iE 'error|fail|not ' | head -n 3 | tr '\n' ' ')"
    fi
else
    out=$(emu -- "$BUILD/ems-edge" --version 2>&1)
    if [ $? -eq 0 ] && [[ "$out" == ems-edge* ]]; then ok "ems-edge runs with the library preloaded ($out)"; else notok "ems-edge --version with the library preloaded" "$out"; fi
fi

# ---------------------------------------------------------------- arm64 / armhf under qemu-user
triple() { case "$1" in arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;; esac; }
qemu() { case "$1" in arm64) echo qemu-aarch64 ;; armhf) echo qemu-arm ;; esac; }
for a in arm64 armhf; do
    t=$(triple "$a")
    if ! command -v "$t-gcc" >/dev/null 2>&1 || ! command -v "$(qemu "$a")" >/dev/null 2>&1 ||
        [ ! -e "/usr/lib/$t/libgpiod.so" ]; then
        skip "$a: library and checker under $(qemu "$a")" "no $t-gcc, $(qemu "$a") or libgpiod-dev:$a (make cross installs them)"
        continue
    fi
    xb=$TMP/$a
    if ! make -s BUILD="$xb" CC="$t-gcc" AR="$t-ar" "$xb/hwemu/libemshwemu.so" "$xb/hwemu/hwemu_check" >"$TMP/make-$a.log" 2>&1; then
        notok "$a: the library and checker build with $t-gcc" "$(grep -m 3 -E 'error|Error' "$TMP/make-$a.log" | tr '\n' ' ')"
        continue
    fi
    ok "$a: the library and checker build with $t-gcc -Werror"
    for c in "freq 22 50 both" "drive $STATE --both" "ina $STATE" "ebusy 17"; do
        : >"$CTL"
        # shellcheck disable=SC2086
        out=$(EMS_HWEMU_CONFIG=$CONF EMS_HWEMU_CONTROL=$CTL EMS_HWEMU_STATE=$STATE \
            timeout -s KILL 60 "$(qemu "$a")" -E LD_PRELOAD="$xb/hwemu/libemshwemu.so" \
            "$xb/hwemu/hwemu_check" $c 2>&1)
        name="$a under $(qemu "$a"): hwemu_check ${c%% *}"
        if [ "$(echo "$out" | tail -n 1)" = PASS ]; then
            ok "$name: $(echo "$out" | grep -v '^PASS$' | tail -n 1)"
        else
            notok "$name" "$(echo "$out" | grep -v '^ok' | tr '\n' ' ' | cut -c1-400)"
        fi
    done
done

tap_status
