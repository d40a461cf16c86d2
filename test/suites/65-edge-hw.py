#!/usr/bin/python3
"""65-edge-hw: the unchanged ems-edge with `backend = hw` against emulated chips.

The emulator (test/hwemu, preloaded) serves /dev/i2c-1 and /dev/gpiochip0 at
the system-call boundary with an INA228, a TMP102, an ADE7953, an MCP4725 and
a gpiochip whose lines are driven by the simulated plant. The edge talks to
the real gateway, DB writer and PostgreSQL over TLS on loopback. Proven here:
  - --probe reads every chip and names what it read; a wrong chip ID refuses
    the start naming the bus and the address;
  - the telemetry reaches the database and matches the emulated physics;
  - SET_MODE from the REST API moves the DAC and the enable lines (never both
    enables at once);
  - an emulated overheat latches ERROR and the outputs go safe; RESET_ERROR
    from the REST API clears it;
  - a chip that stops answering becomes SENSOR_FAULT, named in the log;
  - the state of charge is persisted at shutdown and continues after a
    restart;
  - the same under qemu-aarch64 with the arm64 build of the edge and of the
    emulator (skipped, saying why, only when the cross toolchain is absent).
"""
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

ROOT, BUILD = gw.ROOT, gw.BUILD
tap = gw.Tap()

# The wiring both sides agree on: the edge's config keys and the
# emulator's, describing the same board.
WIRING = {
    "i2c_bus": 1, "shunt_ohms": 0.0005, "dac_vref_v": 3.3, "dac_offset_v": 0,
    "v_per_lsb": 1 / 26000, "a_per_lsb": 1 / 100000, "w_per_lsb": 1 / 154,
}


def emu_config(path, profile="sunny", soc=50, active_low=False):
    with open(path, "w") as f:
        f.write(f"""# written by 65-edge-hw.py
i2c_bus = 1
gpiochip = gpiochip0
battery_monitor = ina228
battery_monitor_address = 0x40
shunt_ohms = {WIRING['shunt_ohms']}
temp_sensor_address = 0x48
grid_meter_address = 0x38
grid_v_per_lsb = {WIRING['v_per_lsb']!r}
grid_a_per_lsb = {WIRING['a_per_lsb']!r}
grid_w_per_lsb = {WIRING['w_per_lsb']!r}
dac_address = 0x60
dac_vref_v = 3.3
dac_offset_v = 0
dac_volts_per_w = 0.00055
charge_enable_line = 17
discharge_enable_line = 27
enable_active_low = {"true" if active_low else "false"}
zero_cross_line = 22
plant_profile = {profile}
plant_seed = 5
plant_soc = {soc}
""")


def edge_config(path, env, dev, token_file, buf, status_port):
    with open(path, "w") as f:
        f.write(f"""# written by 65-edge-hw.py
device_id = {dev}
cloud_url = {env.base(True)}
token_file = {token_file}
ca_file = {os.path.join(env.certs, 'ca.crt')}
buffer_path = {buf}
buffer_sync = off
log_level = debug
status_port = {status_port}
backend = hw
i2c_bus = 1
gpio_chip = gpiochip0
battery_monitor = ina228
battery_monitor_address = 0x40
shunt_ohms = {WIRING['shunt_ohms']}
shunt_max_current_a = 150
temp_sensor_address = 0x48
grid_meter_address = 0x38
grid_voltage_per_lsb = {WIRING['v_per_lsb']!r}
grid_current_per_lsb = {WIRING['a_per_lsb']!r}
grid_power_per_lsb = {WIRING['w_per_lsb']!r}
zero_cross_line = 22
charge_enable_line = 17
discharge_enable_line = 27
dac_address = 0x60
dac_vref_v = 3.3
dac_volts_per_kw = 0.55
soc_capacity_ah = 192
# the emulated pack's own curve (edge/plant.c), as an installer would
# take it from the cell datasheet
soc_ocv_table = "0:44.80,5:49.60,10:51.20,20:51.84,40:52.32,60:52.64,80:53.12,90:53.44,95:53.76,99:55.20,100:56.80"
max_charge_w = 5000
max_discharge_w = 5000
""")


class Hw:
    """One emulated board: config, control and state files."""

    def __init__(self, tmp, name, lib, profile="sunny", active_low=False):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.lib = lib
        self.cfg = os.path.join(self.dir, "emu.conf")
        self.control = os.path.join(self.dir, "emu.control")
        self.state = os.path.join(self.dir, "emu.state")
        emu_config(self.cfg, profile, active_low=active_low)
        open(self.control, "w").close()
        self.ctl = {}

    def env(self):
        e = dict(os.environ)
        e.update({
            "LD_PRELOAD": self.lib,
            "EMS_HWEMU_CONFIG": self.cfg,
            "EMS_HWEMU_CONTROL": self.control,
            "EMS_HWEMU_STATE": self.state,
            "EMS_HWEMU_LOG": os.path.join(self.dir, "emu.log"),
            # The emulator is not built with ASan; it must not be first.
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0",
        })
        return e

    def set(self, **kv):
        self.ctl.update({k: v for k, v in kv.items()})
        text = "".join(f"{k}={v}\n" for k, v in self.ctl.items() if v is not None)
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.control)
        # mtime resolution: make sure the next change is seen as one
        time.sleep(0.06)

    def read(self):
        try:
            with open(self.state) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


def latest(env, dev):
    rows = env.psql("SELECT seq, battery_voltage, battery_current, battery_power, battery_soc, "
                    "battery_temperature, grid_voltage, grid_power, grid_frequency, state, "
                    f"error_flags FROM telemetry WHERE device_id = '{dev}' ORDER BY seq DESC LIMIT 1")
    if not rows:
        return None
    r = rows[0]
    keys = ("seq", "v", "i", "p", "soc", "temp", "gv", "gp", "hz", "state", "flags")
    out = dict(zip(keys, r))
    for k in keys:
        if k != "state" and out[k] != "":
            out[k] = float(out[k])
    return out


def post(env, cookie, dev, body):
    st, h, b = env.http("POST", f"/api/devices/{dev}/commands", body, cookie=cookie)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


def command_done(env, cookie, cid, timeout=8):
    end = time.time() + timeout
    rec = {}
    while time.time() < end:
        st, h, b = env.http("GET", f"/api/commands/{cid}", cookie=cookie)
        if st == 200:
            rec = json.loads(b)
            if rec.get("status") in ("completed", "rejected", "failed", "timed_out"):
                return rec
        time.sleep(0.2)
    return rec


# The shared poll (test/lib/emstest.py), at the pace of the emulated chips.
wait_for = functools.partial(gw.wait_for, step=0.2)


def start_edge(env, hw, conf, name, argv_prefix=()):
    return gw.Proc(name, [*argv_prefix, EDGE_BIN, "--config", conf],
                   os.path.join(hw.dir, f"{name}.log"), env=hw.env())


def probe_checks(hw, conf, prefix=(), edge_bin=None, label=""):
    edge_bin = edge_bin or EDGE_BIN
    r = subprocess.run([*prefix, edge_bin, "--config", conf, "--probe"], capture_output=True,
                       text=True, env=hw.env(), timeout=60)
    out = r.stdout + r.stderr
    tap.ok(f"{label}--probe reads every chip and the lines and exits 0",
           r.returncode == 0 and "probe: every device answered" in out
           and re.search(r"0x5449", out, re.I) and re.search(r"rising edges .*\b(49|50)\.\d+ Hz", out),
           out[-3000:])
    return out


def main():
    global EDGE_BIN
    EDGE_BIN = os.path.join(BUILD, "ems-edge")
    lib = os.path.join(BUILD, "hwemu", "libemshwemu.so")
    if not os.path.exists(lib):
        tap.ok("the emulator library is built", False, f"{lib} is missing (make hwemu)")
        return tap.done()
    env = gw.Env(tap, tls=True)
    procs = []
    tmp = env.dir
    try:
        env.start_pg()
        dev = "hw_1"
        token = env.add_device(dev)
        token_file = os.path.join(tmp, "hw_1.token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        env.add_user("ada", "operator", "ada-password-1")
        env.start_dbwriter()
        env.start_gateway()
        ada = env.login("ada", "ada-password-1")

        hw = Hw(tmp, "board", lib)
        conf = os.path.join(hw.dir, "edge.conf")
        buf = os.path.join(hw.dir, "buffer")
        edge_config(conf, env, dev, token_file, buf, 0)

        # ---- probe, and a wrong chip refusing the start
        probe_checks(hw, conf)
        hw.set(wrong_id="0x40")
        r = subprocess.run([EDGE_BIN, "--config", conf, "--probe"], capture_output=True, text=True,
                           env=hw.env(), timeout=60)
        tap.ok("--probe with a wrong manufacturer ID: exit 1, bus and address named",
               r.returncode == 1 and "/dev/i2c-1" in r.stdout and "0x40" in r.stdout
               and "FAILED" in r.stdout, r.stdout[-1500:])
        p = start_edge(env, hw, conf, "edge-wrongid")
        procs.append(p)
        try:
            rc = p.p.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        tap.ok("the daemon refuses to start on a wrong chip ID, naming bus and address",
               rc == 1 and re.search(r"/dev/i2c-1 0x40.*(manufacturer|device) ID", p.text()),
               p.text()[-1500:])
        hw.set(wrong_id=None)

        # ---- telemetry into the database, matching the emulated physics
        edge = start_edge(env, hw, conf, "edge")
        procs.append(edge)
        got = wait_for(lambda: (latest(env, dev) or {}).get("seq", 0) >= 5, 30)
        row = latest(env, dev)
        st = hw.read()
        tap.ok("the hw edge's telemetry reaches the database", bool(got), edge.text()[-3000:])
        first = env.psql(f"SELECT state, error_flags FROM telemetry WHERE device_id = '{dev}' "
                         "ORDER BY seq LIMIT 5")
        tap.ok("a fresh start reads every chip before the first tick: no SENSOR_FAULT, no ERROR",
               first and all(r[0] != "ERROR" and r[1] == "0" for r in first), first)
        tap.ok("a clean start logs no hardware warning or error",
               not re.search(r"<[34]>.*(hw|fsm):", edge.text()), edge.text()[-2000:])
        if row and st:
            pl = st["plant"]
            tap.ok("battery voltage, grid voltage and frequency match the emulated plant",
                   abs(row["v"] - pl["voltage_v"]) < 0.5 and abs(row["gv"] - pl["grid_v"]) < 2.0
                   and abs(row["hz"] - pl["grid_hz"]) < 0.05 and abs(row["temp"] - pl["temp_c"]) < 0.5,
                   (row, pl))
            tap.ok("the state of charge starts from the pack voltage (no saved value)",
                   0 <= row["soc"] <= 100 and abs(row["soc"] - pl["soc"]) < 15, (row["soc"], pl["soc"]))
        else:
            tap.ok("battery voltage, grid voltage and frequency match the emulated plant", False,
                   (row, st))

        # ---- SET_MODE from the REST API moves the DAC and the enables
        st_, b = post(env, ada, dev, {"action": "SET_MODE",
                                      "payload": {"target_mode": "MANUAL_CHARGE", "target_power": 1000}})
        rec = command_done(env, ada, b.get("command_id", b.get("command", {}).get("command_id", "")))
        s = wait_for(lambda: (lambda x: x if x and x["charge_enable"] and abs(x["command_w"] - 1000) < 5
                              else None)(hw.read()), 6)
        tap.ok("SET_MODE MANUAL_CHARGE 1000 W: completed; charge enable on, DAC at 1000 W",
               rec.get("status") == "completed" and s and not s["discharge_enable"]
               and abs(s["dac_code"] - round(1000 * 0.00055 / 3.3 * 4095)) <= 1, (rec, hw.read()))
        st_, b = post(env, ada, dev, {"action": "SET_MODE",
                                      "payload": {"target_mode": "MANUAL_DISCHARGE", "target_power": 2000}})
        rec = command_done(env, ada, b.get("command_id", b.get("command", {}).get("command_id", "")))
        s = wait_for(lambda: (lambda x: x if x and x["discharge_enable"] and abs(x["command_w"] + 2000) < 5
                              else None)(hw.read()), 6)
        tap.ok("SET_MODE MANUAL_DISCHARGE 2000 W: discharge enable on, charge off, DAC at 2000 W",
               rec.get("status") == "completed" and s and not s["charge_enable"], (rec, hw.read()))
        row = wait_for(lambda: (lambda r: r if r and r["p"] < -1500 else None)(latest(env, dev)), 8)
        tap.ok("the battery power measured by the INA228 follows: about -2000 W in the database",
               row and abs(row["p"] + 2000) < 150, row)
        tap.ok("the two enables were never on at once", (hw.read() or {}).get("both_enables") == 0,
               hw.read())

        # ---- an emulated overheat: ERROR, outputs safe
        hw.set(overheat="on")
        row = wait_for(lambda: (lambda r: r if r and r["state"] == "ERROR" else None)(latest(env, dev)), 10)
        s = hw.read()
        tap.ok("an emulated overheat latches ERROR (OVERHEAT in error_flags)",
               row and int(row["flags"]) & 1, row)
        tap.ok("in ERROR the outputs are safe: both enables off, DAC at code 0",
               s and not s["charge_enable"] and not s["discharge_enable"] and s["dac_code"] == 0, s)
        # Released, the pack would cool with the plant's 120 s time constant;
        # force it to ambient instead.
        hw.set(overheat="off", temp=25)
        time.sleep(1.5)
        ok_reset = False
        for _ in range(15):  # the pack must cool below the hysteresis first
            st_, b = post(env, ada, dev, {"action": "RESET_ERROR", "payload": {}})
            rec = command_done(env, ada, b.get("command_id", b.get("command", {}).get("command_id", "")))
            if rec.get("status") == "completed":
                ok_reset = True
                break
            time.sleep(1)
        tap.ok("RESET_ERROR from the REST API clears it once the pack is cool", ok_reset, rec)

        # ---- a chip that stops answering
        t0 = time.time()
        hw.set(temp=None, silence="0x48")
        row = wait_for(lambda: (lambda r: r if r and int(r["flags"]) & 32 else None)(latest(env, dev)), 12)
        tap.ok("the TMP102 stops answering: SENSOR_FAULT and ERROR within the stale limit",
               row and row["state"] == "ERROR" and time.time() - t0 < 10, row)
        tap.ok("the log names the chip, the bus and the address once",
               len(re.findall(r"temperature sensor \(TMP102 at /dev/i2c-1 0x48\): no answer", edge.text())) == 1,
               edge.text()[-2000:])
        hw.set(silence="")
        wait_for(lambda: "temperature sensor (TMP102 at /dev/i2c-1 0x48) reads again" in edge.text(), 5)
        st_, b = post(env, ada, dev, {"action": "RESET_ERROR", "payload": {}})
        rec = command_done(env, ada, b.get("command_id", b.get("command", {}).get("command_id", "")))
        tap.ok("the chip answers again: logged, and RESET_ERROR completes",
               rec.get("status") == "completed" and "reads again" in edge.text(), rec)

        # ---- a noisy zero-crossing detector: lost edges and glitches
        hw.set(glitches=5, missing_edges=7)
        time.sleep(3.5)
        rows = env.psql("SELECT grid_frequency, state FROM telemetry WHERE device_id = "
                        f"'{dev}' ORDER BY seq DESC LIMIT 2")
        pl = (hw.read() or {}).get("plant", {})
        tap.ok("every 7th zero-crossing edge lost and a glitch every 5: the frequency holds, no fault",
               rows and all(abs(float(r[0]) - pl.get("grid_hz", 0)) < 0.05 and r[1] != "ERROR"
                            for r in rows), (rows, pl))
        hw.set(glitches=None, missing_edges=None)

        # ---- a flapping chip does not flood the journal
        before = len(re.findall(r"hw: temperature sensor \(TMP102", edge.text()))
        for i in range(12):
            hw.set(silence="0x48" if i % 2 == 0 else "")
            time.sleep(1.1)
        hw.set(silence="")
        time.sleep(1.5)
        lines = len(re.findall(r"hw: temperature sensor \(TMP102", edge.text())) - before
        tap.ok("a chip that flaps 12 times in 14 s: at most 4 changes a minute are logged",
               lines <= 4, f"{lines} lines:\n" + edge.text()[-2500:])

        # ---- the DAC stops answering: the enables go off at once
        t0 = len(edge.text())
        hw.set(silence="0x60")
        s = wait_for(lambda: (lambda x: x if x and not x["charge_enable"] and not x["discharge_enable"]
                              else None)(hw.read()), 5)
        logged = wait_for(lambda: re.search(r"hw: outputs \(MCP4725 and the enable lines\): no answer"
                                            r".*the daemon puts the outputs in the safe state",
                                            edge.text()[t0:]), 5)
        tap.ok("the DAC stops answering: both enables off, the failure logged with its consequence",
               s and logged, (hw.read(), edge.text()[-1500:]))
        time.sleep(2.5)
        tap.ok("the refused setpoint is logged once, not every tick",
               len(re.findall(r"io: the back end refused setpoint", edge.text()[t0:])) == 1,
               edge.text()[-1500:])
        hw.set(silence="")
        tap.ok("the DAC answers again: logged",
               bool(wait_for(lambda: "outputs (MCP4725 and the enable lines) answer again"
                             in edge.text()[t0:], 6)), edge.text()[-1500:])

        # ---- SIGTERM: outputs safe, SoC persisted; a restart continues from it
        rc = edge.stop(signal.SIGTERM)
        s = hw.read()
        tap.ok("SIGTERM: exit 0 with the outputs safe", rc == 0 and s and not s["charge_enable"]
               and not s["discharge_enable"] and s["dac_code"] == 0, (rc, s, edge.text()[-1500:]))
        try:
            state = open(buf + ".state").read()
        except OSError as e:
            state = str(e)
        m = re.search(r"^soc = ([0-9.]+)$", state, re.M)
        tap.ok("the state of charge is saved at shutdown", m is not None, state)
        edge2 = start_edge(env, hw, conf, "edge2")
        procs.append(edge2)
        seen = wait_for(lambda: re.search(r"state of charge ([0-9.]+) % from the state file", edge2.text()), 15)
        tap.ok("a restart continues counting from the saved state of charge",
               m and seen and abs(float(seen.group(1)) - float(m.group(1))) < 0.1, edge2.text()[-1500:])
        rc = edge2.stop(signal.SIGTERM)
        tap.ok("no sanitizer report from the hw edge",
               not re.search(r"ERROR: (Address|Leak)Sanitizer|runtime error",
                             edge.text() + edge2.text()), (edge.text() + edge2.text())[-3000:])

        # ---- active-low enables: the physical levels invert, the logic does not
        hw2 = Hw(tmp, "board-al", lib, active_low=True)
        conf2 = os.path.join(hw2.dir, "edge.conf")
        edge_config(conf2, env, dev, token_file, os.path.join(hw2.dir, "buffer"), 0)
        with open(conf2, "a") as f:
            f.write("enable_active_low = true\n")
        edge3 = start_edge(env, hw2, conf2, "edge-al")
        procs.append(edge3)
        wait_for(lambda: "link ready" in edge3.text(), 20)
        st_, b = post(env, ada, dev, {"action": "SET_MODE", "payload": {"target_mode": "MANUAL_IDLE"}})
        command_done(env, ada, b.get("command_id", ""))
        idle = wait_for(lambda: (lambda x: x if x and not x["charge_enable"] and not x["discharge_enable"]
                                 else None)(hw2.read()), 6) or {}
        st_, b = post(env, ada, dev, {"action": "SET_MODE",
                                      "payload": {"target_mode": "MANUAL_CHARGE", "target_power": 800}})
        rec = command_done(env, ada, b.get("command_id", ""))
        s = wait_for(lambda: (lambda x: x if x and x["charge_enable"] else None)(hw2.read()), 6)
        tap.ok("enable_active_low: inactive lines are driven high, an active one low",
               rec.get("status") == "completed" and idle.get("charge_line") == 1
               and idle.get("discharge_line") == 1 and s and s["charge_line"] == 0
               and s["discharge_line"] == 1 and abs(s["command_w"] - 800) < 5, (rec, idle, s))
        edge3.stop(signal.SIGTERM)
        s = hw2.read() or {}
        tap.ok("enable_active_low: after SIGTERM both lines are high (inactive)",
               s.get("charge_line") == 1 and s.get("discharge_line") == 1, s)

        arm64_checks(env, ada, token_file, tmp)
    finally:
        for p in procs:
            p.stop(signal.SIGKILL, 5)
        env.close()
    return tap.done()


def arm64_checks(env, ada, token_file, tmp):
    """The arm64 edge and emulator under qemu-aarch64, against the native cloud."""
    name = "arm64 under qemu: telemetry lands and SET_MODE moves the DAC"
    if not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")):
        tap.ok(f"{name} # SKIP the arm64 cross toolchain or qemu-user is not installed")
        return
    out = os.path.join(tmp, "cross")
    r = subprocess.run([os.path.join(ROOT, "scripts/cross.sh"), "--no-install", "--build-root", out,
                        "arm64"], capture_output=True, text=True, cwd=ROOT)
    r2 = subprocess.run(["make", "--no-print-directory", f"BUILD={out}/arm64", "CC=aarch64-linux-gnu-gcc",
                         "AR=aarch64-linux-gnu-ar", f"{out}/arm64/hwemu/libemshwemu.so"],
                        capture_output=True, text=True, cwd=ROOT)
    edge_bin = os.path.join(out, "arm64", "ems-edge")
    lib = os.path.join(out, "arm64", "hwemu", "libemshwemu.so")
    if r.returncode != 0 or r2.returncode != 0:
        tap.ok(name, False, (r.stdout + r.stderr + r2.stdout + r2.stderr)[-3000:])
        return
    hw = Hw(tmp, "board-arm64", lib)
    dev = "hw_arm64"
    tok = env.add_device(dev)
    tf = os.path.join(tmp, "hw_arm64.token")
    with open(tf, "w") as f:
        f.write(tok + "\n")
    conf = os.path.join(hw.dir, "edge.conf")
    edge_config(conf, env, dev, tf, os.path.join(hw.dir, "buffer"), 0)
    # No -L: with it qemu takes the cross toolchain's ld.so beside the
    # multiarch libc6:arm64, two glibc builds that disagree (the first
    # pthread_create spins for ever); test/hwemu/README.md.
    qemu = ["qemu-aarch64", "-E", f"LD_PRELOAD={lib}"]
    e = hw.env()
    del e["LD_PRELOAD"]  # for qemu itself: the guest gets it through -E
    r = subprocess.run([*qemu, edge_bin, "--config", conf, "--probe"], capture_output=True, text=True,
                       env=e, timeout=120)
    tap.ok("arm64 under qemu: --probe reads every chip",
           r.returncode == 0 and "probe: every device answered" in r.stdout, (r.stdout + r.stderr)[-2000:])
    p = gw.Proc("edge-arm64", [*qemu, edge_bin, "--config", conf], os.path.join(hw.dir, "edge.log"), env=e)
    try:
        got = wait_for(lambda: (latest(env, dev) or {}).get("seq", 0) >= 3, 60)
        st_, b = post(env, ada, dev, {"action": "SET_MODE",
                                      "payload": {"target_mode": "MANUAL_CHARGE", "target_power": 1500}})
        cid = b.get("command_id", b.get("command", {}).get("command_id", ""))
        rec = command_done(env, ada, cid, 15)
        s = wait_for(lambda: (lambda x: x if x and x["charge_enable"] and abs(x["command_w"] - 1500) < 5
                              else None)(hw.read()), 10)
        tap.ok(name, bool(got) and rec.get("status") == "completed" and bool(s),
               (latest(env, dev), rec, hw.read(), p.text()[-2000:]))
    finally:
        rc = p.stop(signal.SIGTERM, 30)
    tap.ok("arm64 under qemu: SIGTERM stops it cleanly with the outputs safe",
           rc == 0 and (hw.read() or {}).get("dac_code") == 0, (rc, p.text()[-1000:]))


if __name__ == "__main__":
    sys.exit(main())
