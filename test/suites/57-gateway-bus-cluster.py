#!/usr/bin/python3
# 57-gateway-bus-cluster: the bus on a real two-server NATS cluster
# (docs/scaling.md, "Turning it on": nats_url lists the servers).
# Two nats-servers joined by routes; gateway A lists server 1 first, B lists
# server 2 first, so each joins through a different server:
#   - presence and commands cross the cluster (A sees B's device, a command
#     posted on A completes on B's device);
#   - server 1 is killed: A reconnects through server 2 by itself, and
#     presence and commands work again.
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


class ClusterNats(gw.Nats):
    """One server of a NATS cluster with a route to the other."""

    def __init__(self, env, name, route_port_self, route_port_other):
        super().__init__(env)
        self.name, self.rself, self.rother = name, route_port_self, route_port_other

    def start(self):
        argv = [shutil.which("nats-server") or "nats-server", "-a", "127.0.0.1", "-p",
                str(self.port), "-n", self.name, "--cluster_name", "ems-test",
                "--cluster", f"nats://127.0.0.1:{self.rself}",
                "--routes", f"nats://127.0.0.1:{self.rother}"]
        self.proc = gw.Proc(f"nats-server {self.name}", argv,
                            os.path.join(self.env.dir, f"nats-{self.name}.log"))
        ok = gw.wait_for(lambda: gw.socket.create_connection(("127.0.0.1", self.port), 1).close()
                         is None, 10)
        if not ok:
            raise RuntimeError("nats-server did not start:\n" + self.proc.text()[-2000:])


def jget(side, cookie, path):
    st, h, b = side.http("GET", path, cookie=cookie)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


async def poll(pred, timeout, step=0.2):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        ok, last = await asyncio.get_event_loop().run_in_executor(None, pred)
        if ok:
            return True, last
        await asyncio.sleep(step)
    return False, last


async def command_completes(a, cookie, dev):
    st, h, raw = a.http("POST", f"/api/devices/{dev}/commands", SET, cookie=cookie)
    if st not in (200, 201, 202):
        return False, (st, raw)
    cid = json.loads(raw)["command_id"]
    return await poll(lambda: (jget(a, cookie, f"/api/commands/{cid}")[1].get("status") ==
                               "completed", jget(a, cookie, f"/api/commands/{cid}")[1]), 10)


async def main():
    if not shutil.which("nats-server"):
        tap.ok("nats-server is installed (scripts/deps.sh)", False, "not found")
        tap.done()
    env = gw.Env(tap, tls=False)
    r1, r2 = gw.free_port(), gw.free_port()
    n1, n2 = ClusterNats(env, "n1", r1, r2), ClusterNats(env, "n2", r2, r1)
    a, b = gw.BusGateway(env, "gwA"), gw.BusGateway(env, "gwB")
    dev = None
    try:
        env.start_pg()
        tok = env.add_device("cl_dev")
        env.add_user("ada", "operator", "ada-password-1")
        env.start_dbwriter()
        n1.start()
        n2.start()
        tap.ok("the two NATS servers form a cluster",
               gw.wait_for(lambda: "Route connection created" in n1.proc.text() and
                           "Route connection created" in n2.proc.text(), 10),
               n1.proc.text()[-800:])
        u1, u2 = f"nats://127.0.0.1:{n1.port}", f"nats://127.0.0.1:{n2.port}"
        common = dict(command_timeout_s=5, command_complete_s=10)
        a.start(nats_url=f"{u1},{u2}", **common)
        b.start(nats_url=f"{u2},{u1}", **common)
        tap.ok("A joins through server 1, B through server 2",
               gw.wait_for(lambda: f"bus: connected to {u1},{u2}" in a.proc.text() and
                           f"bus: connected to {u2},{u1}" in b.proc.text(), 15),
               a.proc.text()[-600:] + b.proc.text()[-600:])
        st, h, raw = a.http("POST", "/api/login", {"username": "ada", "password": "ada-password-1"})
        ada = h["set-cookie"].split(";", 1)[0]
        dev = gw.BusDevice(b, "cl_dev", tok)
        await dev.start()
        ok, v = await poll(lambda: (jget(a, ada, "/api/devices/cl_dev")[1].get("online") is True,
                                    jget(a, ada, "/api/devices/cl_dev")[1]), 10)
        tap.ok("presence crosses the cluster: B's device online on A", ok, v)
        ok, v = await command_completes(a, ada, "cl_dev")
        tap.ok("a command posted on A completes on B's device across the cluster", ok, v)

        n1.proc.stop(signal.SIGKILL)
        ok = await asyncio.get_event_loop().run_in_executor(
            None, lambda: gw.wait_for(lambda: "bus: reconnected" in a.proc.text(), 20))
        tap.ok("server 1 killed: A reconnects by itself (through server 2)", ok,
               a.proc.text()[-1200:])
        ok, v = await poll(lambda: (jget(a, ada, "/api/devices/cl_dev")[1].get("online") is True,
                                    jget(a, ada, "/api/devices/cl_dev")[1]), 15)
        tap.ok("... B's device is online on A again", ok, v)
        ok, v = await command_completes(a, ada, "cl_dev")
        tap.ok("... and a command posted on A completes again", ok, v)
    finally:
        if dev and dev.ws:
            try:
                await asyncio.wait_for(dev.ws.close(), 2)
            except Exception:
                pass
        for s in (a, b):
            if s.proc and s.proc.alive():
                rc = s.proc.stop()
                tap.eq(f"gateway {s.name} exits cleanly", rc, 0)
            if tap.failed and s.proc:
                tap.note(f"--- {s.name} log (tail) ---\n" + s.proc.text()[-3000:])
        n1.stop()
        n2.stop()
        env.close()
    tap.done()


asyncio.run(main())
