#!/usr/bin/python3
# 57-gateway-bus-adopt: a command whose origin gateway dies (docs/scaling.md,
# "Failure behaviour"). Two real ems-gateways on a real nats-server, one DB
# writer and PostgreSQL. A device on B executes a command posted on A and
# takes 10 s to complete it; A is killed with SIGKILL meanwhile. B notices
# A is gone (6 s without a heartbeat), takes the command over, and records
# the device's "completed": in PostgreSQL the command ends completed with
# each status once in its audit trail, and B's REST API and a dashboard on
# B show it. Before that: the device's device_info (firmware, limits), told
# to B, shows in A's GET /api/devices/{id} too.
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
SET = {"action": "SET_MODE", "payload": {"target_mode": "MANUAL_DISCHARGE", "target_power": 500}}


def jget(side, cookie, path):
    st, h, b = side.http("GET", path, cookie=cookie)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


async def wait_for_async(pred, timeout, step=0.2):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        ok, last = await asyncio.get_event_loop().run_in_executor(None, pred)
        if ok:
            return True, last
        await asyncio.sleep(step)
    return False, last


async def main():
    if not shutil.which("nats-server"):
        tap.ok("nats-server is installed (scripts/deps.sh)", False, "not found")
        tap.done()
    env = gw.Env(tap, tls=False)
    nats = gw.Nats(env)
    a, b = gw.BusGateway(env, "gwA"), gw.BusGateway(env, "gwB")
    dev = None
    dash = None
    try:
        env.start_pg()
        tok = env.add_device("far_dev")
        env.add_user("ada", "operator", "ada-password-1")
        env.start_dbwriter()
        nats.start()
        common = dict(nats_url=nats.url(), command_timeout_s=5, command_complete_s=40)
        a.start(**common)
        b.start(**common)
        tap.ok("both gateways joined the bus",
               gw.wait_for(lambda: "bus: connected" in a.proc.text() and
                           "bus: connected" in b.proc.text(), 10))
        st, h, raw = a.http("POST", "/api/login", {"username": "ada", "password": "ada-password-1"})
        ada = h["set-cookie"].split(";", 1)[0]
        dev = gw.BusDevice(b, "far_dev", tok, complete_after=10)
        await dev.start()
        ok, v = await wait_for_async(
            lambda: (jget(a, ada, "/api/devices/far_dev")[1].get("online") is True, None), 8)
        tap.ok("A sees the device on B online", ok)
        info = {"type": "device_info", "firmware": "ems-edge 9.9.9",
                "limits": {"max_charge_w": 4200, "max_discharge_w": 3900, "soc_min": 12,
                           "soc_max": 93}}
        await dev.ws.send(json.dumps(info))

        def same_info():
            v = jget(a, ada, "/api/devices/far_dev")[1]
            return v.get("limits") == info["limits"] and v.get("firmware") == "ems-edge 9.9.9", v
        ok, v = await wait_for_async(same_info, 5)
        tap.ok("the device_info it told B shows in A's GET /api/devices/{id}", ok, v)
        dash = await b.dashboard(ada)
        await dash.send(json.dumps({"type": "subscribe", "devices": ["far_dev"]}))
        seen = []

        async def read_dash():
            try:
                async for raw in dash:
                    m = json.loads(raw)
                    if m.get("type") == "command":
                        seen.append(m["command"]["status"])
            except Exception:
                pass
        reader = asyncio.ensure_future(read_dash())

        st, h, raw = a.http("POST", "/api/devices/far_dev/commands", SET, cookie=ada)
        cid = json.loads(raw).get("command_id") if st in (200, 201, 202) else None
        tap.ok("a command posted on A for the device on B", cid, (st, raw))
        ok, v = await wait_for_async(
            lambda: (jget(a, ada, f"/api/commands/{cid}")[1].get("status") == "accepted",
                     jget(a, ada, f"/api/commands/{cid}")[1]), 5)
        tap.ok("... is accepted by the device (seen on A)", ok, v)
        a.proc.stop(signal.SIGKILL)
        t_kill = time.time()

        def final_row():
            rows = env.psql(f"SELECT status FROM commands WHERE command_id = '{cid}'")
            return bool(rows) and rows[0][0] == "completed", rows
        ok, rows = await wait_for_async(final_row, 25, 0.5)
        tap.ok("A killed: the device's 'completed' still reaches PostgreSQL (B took the command "
               "over)", ok, (rows, b.proc.text()[-1500:]))
        tap.ok("... B says it took the command over, after A's heartbeat stopped",
               "took over 1 open command(s) of gateway gwA" in b.proc.text() and
               time.time() - t_kill >= 5, b.proc.text()[-800:])
        events = sorted(r[0] for r in env.psql(
            f"SELECT status FROM command_events WHERE command_id = '{cid}'"))
        tap.eq("... its audit trail has each status once", events,
               sorted(["sent", "accepted", "completed"]))
        st, v = jget(b, ada, f"/api/commands/{cid}")
        tap.ok("... B's REST API shows it completed", st == 200 and v.get("status") == "completed",
               (st, v))
        ok, _ = await wait_for_async(lambda: ("completed" in seen, seen), 3)
        tap.ok("... and a dashboard on B watching the device got 'completed'", ok, seen)
        tap.eq("the device executed it once", dev.count(cid), 1)
        reader.cancel()
    finally:
        for ws in ([dev.ws] if dev and dev.ws else []) + ([dash] if dash else []):
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        for s in (a, b):
            if s.proc and s.proc.alive():
                rc = s.proc.stop()
                if s is b:
                    tap.eq("gateway B exits cleanly", rc, 0)
            if tap.failed and s.proc:
                tap.note(f"--- {s.name} log (tail) ---\n" + s.proc.text()[-3000:])
        nats.stop()
        env.close()
    tap.done()


asyncio.run(main())
