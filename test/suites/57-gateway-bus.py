#!/usr/bin/python3
# 57-gateway-bus: two real ems-gateways joined by a real nats-server
# (docs/scaling.md), sharing one PostgreSQL and one ems-dbwriter:
#   - a device connected to gateway B is online in gateway A's REST API;
#   - a command posted on A reaches the device on B, its answers come back to
#     A (GET /api/commands/{id} on A: completed), and the audit trail in
#     PostgreSQL has each status exactly once;
#   - B frozen (SIGSTOP): a command on A fails within seconds (not acknowledged)
#     and is not delivered late when B wakes up;
#   - nats-server stopped: a command on A for B's device fails at once with a
#     clear message, one for A's own device still works; nats-server
#     restarted: routing recovers by itself;
#   - B killed with SIGKILL: A shows its device offline within ~10 s;
#   - a gateway started before the NATS server runs alone and joins later, and
#     one stopped while its NATS connection is down exits cleanly.
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


free_port = gw.free_port
Side = gw.BusGateway
Edge = gw.BusDevice
Nats = gw.Nats


async def arun(fn, *a):
    """A blocking client call without stalling the devices' tasks."""
    return await asyncio.get_event_loop().run_in_executor(None, fn, *a)


def jget(side, cookie, path):
    st, h, b = side.http("GET", path, cookie=cookie)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


def post(side, cookie, dev, body):
    st, h, b = side.http("POST", f"/api/devices/{dev}/commands", body, cookie=cookie)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


async def wait_until(pred, timeout, step=0.2):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = await arun(pred)
        if last and last[0]:
            return True, last[1]
        await asyncio.sleep(step)
    return False, last[1] if last else None


def device_view(side, cookie, dev):
    st, b = jget(side, cookie, f"/api/devices/{dev}")
    return b


async def wait_online(side, cookie, dev, online, timeout):
    def p():
        b = device_view(side, cookie, dev)
        return b.get("online") is online, b
    return await wait_until(p, timeout)


async def wait_status(side, cookie, cid, status, timeout=10):
    def p():
        st, b = jget(side, cookie, f"/api/commands/{cid}")
        return b.get("status") == status, b
    return await wait_until(p, timeout, 0.1)


def audit(env, cid):
    return sorted(r[0] for r in env.psql(
        f"SELECT status FROM command_events WHERE command_id = '{cid}'"))


async def main():
    if not shutil.which("nats-server"):
        tap.ok("nats-server is installed (scripts/deps.sh)", False, "not found")
        tap.done()
    env = gw.Env(tap, tls=False)
    nats = Nats(env)
    a = Side(env, "gwA")
    b = Side(env, "gwB")
    edges = []
    try:
        env.start_pg()
        tok = {d: env.add_device(d) for d in ("bus_a", "bus_b")}
        env.add_user("ada", "operator", "ada-password-1")
        env.start_dbwriter()
        common = dict(nats_url=nats.url(), command_timeout_s=5, command_complete_s=10)
        # A starts before the NATS server: it runs alone and keeps trying.
        a.start(**common)
        time.sleep(2)
        tap.eq("no NATS server yet: A serves and says so once",
               (a.http("GET", "/healthz")[0], a.proc.text().count("bus: cannot connect")), (200, 1))
        nats.start()
        b.start(**common)
        tap.ok("both gateways joined the bus",
               gw.wait_for(lambda: "bus: connected" in a.proc.text() and
                           "bus: connected" in b.proc.text(), 10))
        st, h, raw = a.http("POST", "/api/login", {"username": "ada", "password": "ada-password-1"})
        ada = h["set-cookie"].split(";", 1)[0]

        # --- presence
        eb = Edge(b, "bus_b", tok["bus_b"])
        ea = Edge(a, "bus_a", tok["bus_a"])
        edges += [eb, ea]
        await eb.start()
        await ea.start()
        ok, v = await wait_online(a, ada, "bus_b", True, 5)
        tap.ok("A's GET /api/devices/{id}: B's device online, with B's id",
               ok and v.get("gateway") == "gwB", v)
        st, lst = await arun(jget, a, ada, "/api/devices")
        row = [d for d in lst.get("devices", []) if d.get("device_id") == "bus_b"]
        tap.ok("A's GET /api/devices lists it online",
               row and row[0].get("online") is True and row[0].get("gateway") == "gwB", lst)
        v = await arun(device_view, b, ada, "bus_a")
        tap.ok("and B shows A's device online", v.get("online") is True and
               v.get("gateway") == "gwA", v)
        v = await arun(device_view, a, ada, "bus_a")
        tap.ok("a gateway names itself for its own devices", v.get("gateway") == "gwA", v)

        # --- live telemetry across gateways (subscribe by interest)
        await eb.send_packets(1, 3, 0.1)
        await asyncio.sleep(0.3)
        st, h, raw = await arun(b.http, "GET", "/metrics")
        tap.ok("nobody watches B's device: B publishes none of its telemetry",
               'ems_gateway_bus_telemetry_total{dir="published"} 0' in raw.decode(),
               [ln for ln in raw.decode().splitlines() if "telemetry_total" in ln])
        dash = await a.dashboard(ada)
        await dash.send(json.dumps({"type": "subscribe", "devices": ["bus_b"]}))
        sender = asyncio.ensure_future(eb.send_packets(1000, 40))
        try:
            m = await gw.recv_until(dash, lambda m: m.get("type") == "telemetry", 8)
            tap.ok("a dashboard on A gets live telemetry of B's device",
                   m.get("packet", {}).get("device_id") == "bus_b", m)
            seqs = []
            while len(seqs) < 3:
                m = await gw.recv_until(dash, lambda m: m.get("type") == "telemetry", 3)
                seqs.append(m["packet"]["seq"])
            tap.ok("... each packet once, in order", seqs == sorted(set(seqs)), seqs)
        except asyncio.TimeoutError:
            tap.ok("a dashboard on A gets live telemetry of B's device", False, "timeout")
        await dash.send(json.dumps({"type": "subscribe", "devices": ["*"]}))
        try:
            seqs = []
            await gw.recv_until(dash, lambda m: m.get("type") == "telemetry", 3)
            await asyncio.sleep(1.5)  # the switch to ems.tel.> is done by now
            while len(seqs) < 4:
                m = await gw.recv_until(dash, lambda m: m.get("type") == "telemetry", 3)
                seqs.append(m["packet"]["seq"])
            tap.ok('a "*" dashboard on A gets it too, once per packet',
                   len(set(seqs)) == len(seqs), seqs)
        except asyncio.TimeoutError:
            tap.ok('a "*" dashboard on A gets it too, once per packet', False, "timeout")
        sender.cancel()
        await dash.close()

        # --- a command across gateways
        st, c = await arun(post, a, ada, "bus_b", SET)
        tap.ok("POST on A for B's device: 202 sent", st == 202 and c.get("status") == "sent",
               (st, c))
        cid = c.get("command_id", "")
        ok, last = await wait_status(a, ada, cid, "completed")
        tap.ok("A's GET /api/commands/{id} reaches completed", ok, last)
        tap.eq("its history on A", [x["status"] for x in (last or {}).get("history", [])],
               ["sent", "accepted", "completed"])
        tap.eq("the device on B got it once", eb.count(cid), 1)
        for _ in range(50):
            if audit(env, cid) == ["accepted", "completed", "sent"]:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        tap.eq("the audit trail has each status exactly once", audit(env, cid),
               ["accepted", "completed", "sent"])
        tap.eq("... and one command row",
               env.psql(f"SELECT count(*) FROM commands WHERE command_id = '{cid}'"), [["1"]])

        st, h, raw = await arun(a.http, "GET", "/metrics")
        text = raw.decode()
        tap.ok("A's /metrics: connected, B's device, one forwarded command",
               "ems_gateway_bus_connected 1" in text and
               "ems_gateway_bus_remote_devices 1" in text and
               'ems_gateway_bus_commands_total{dir="forwarded"} 1' in text,
               [ln for ln in text.splitlines() if "bus" in ln])

        # --- local commands are unchanged
        st, c = await arun(post, a, ada, "bus_a", SET)
        ok, last = await wait_status(a, ada, c.get("command_id", ""), "completed")
        tap.ok("a command for A's own device still completes", st == 202 and ok, (st, last))

        # --- B frozen: not acknowledged, fails fast, never delivered late
        b.proc.send_signal(signal.SIGSTOP)
        t0 = time.time()
        st, c = await arun(post, a, ada, "bus_b", SET)
        cid2 = c.get("command_id", "")
        ok, last = await wait_status(a, ada, cid2, "failed", 8)
        tap.ok("B frozen: the command fails within seconds, saying why",
               ok and time.time() - t0 < 6 and "acknowledge" in (last.get("message") or ""),
               last)
        b.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(1.5)
        tap.eq("... and B does not deliver it late", eb.count(cid2), 0)
        ok, v = await wait_online(a, ada, "bus_b", True, 10)
        tap.ok("B back: its device is online on A again", ok, v)

        # --- NATS down
        nats.stop()
        await asyncio.sleep(1.0)
        t0 = time.time()
        st, c = await arun(post, a, ada, "bus_b", SET)
        msg = c.get("error", "")
        tap.ok("bus down: a command for B's device fails at once, naming the bus",
               st == 409 and time.time() - t0 < 2 and "message bus" in msg and
               c.get("command", {}).get("status") == "failed", (st, c))
        st, c = await arun(post, a, ada, "bus_a", SET)
        ok, last = await wait_status(a, ada, c.get("command_id", ""), "completed")
        tap.ok("bus down: a command for A's own device still completes", st == 202 and ok,
               (st, last))
        tap.ok("the loss is logged once",
               a.proc.text().count("bus: connection to") == 1, a.proc.text()[-1500:])

        # --- NATS back
        nats.start()

        ok = await arun(gw.wait_for, lambda: "bus: reconnected" in a.proc.text() and
                        "bus: reconnected" in b.proc.text(), 20)
        tap.ok("both gateways reconnect by themselves, and say so", ok)
        ok, v = await wait_online(a, ada, "bus_b", True, 10)
        st, c = await arun(post, a, ada, "bus_b", SET)
        ok, last = await wait_status(a, ada, c.get("command_id", ""), "completed")
        tap.ok("bus back: a command for B's device is routed and completes", st == 202 and ok,
               (st, c, last))

        # --- B killed
        b.proc.p.kill()
        b.proc.p.wait()
        t0 = time.time()
        ok, v = await wait_online(a, ada, "bus_b", False, 12)
        tap.ok("B killed: A shows its device offline within ~10 s",
               ok and time.time() - t0 < 10.5, (time.time() - t0, v))
        st, c = await arun(post, a, ada, "bus_b", SET)
        tap.ok("... and a command for it fails as offline",
               st == 409 and "offline" in c.get("error", ""), (st, c))
        # A stops while libnats is reconnecting (checked below: exit 0).
        nats.stop()
        await asyncio.sleep(0.5)
    finally:
        for e in edges:
            try:
                await asyncio.wait_for(e.ws.close(), 2)
            except Exception:
                pass
        for s in (a, b):
            if s.proc:
                s.proc.send_signal(signal.SIGCONT)
                rc = s.proc.stop()
                if s is a:
                    tap.eq("gateway A exits cleanly", rc, 0)
                if tap.failed:
                    tap.note(f"--- {s.name} log (tail) ---\n" + s.proc.text()[-5000:])
        nats.stop()
        env.close()
    tap.done()


asyncio.run(main())
