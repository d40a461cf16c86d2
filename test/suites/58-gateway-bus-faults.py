#!/usr/bin/python3
# 58-gateway-bus-faults: three real ems-gateways joined by one real
# nats-server (docs/scaling.md), sharing one PostgreSQL and one ems-dbwriter;
# real ems-edge devices (--sim) reach them through HAProxy (TCP mode,
# leastconn, /healthz checks: the documented way to put several gateways
# behind one address, docker/haproxy.cfg), the test's own device clients
# connect to one gateway each.
#   1. dashboards across gateways: a "*" dashboard on A gets the device
#      (online/offline) messages and the live telemetry of devices on A, B
#      and C; a device on A commanded through the REST API of B: a dashboard
#      on C watching that device gets each command status (sent, accepted,
#      completed) once and in order, and the audit trail has each once; a
#      device that moves from B to C while a command posted on A is
#      accepted but not completed: A's record still ends completed;
#   2. the gateway holding the most edges killed with SIGKILL: its edges
#      reconnect (backoff, through the proxy) to the two others, which both
#      show every edge online on the same new gateway within seconds; no
#      packet lost or stored twice (rows in `telemetry` against each edge's
#      seqs); restarted at once with the same id (its heartbeat is never
#      missed), the others drop the device its previous life had and lost;
#      a moved edge that leaves again is offline everywhere at once;
#   3. nats-server frozen (SIGSTOP): a command across gateways fails within
#      seconds (not acknowledged) and never reaches the device late;
#      nats-server stopped mid-traffic and started again: the edges keep
#      sending and every packet is stored; a command across gateways during
#      the outage fails at once, naming the bus; afterwards presence,
#      commands and cross-gateway telemetry (to a dashboard that stayed
#      open) work again without a restart; a 2 s blip during which a device
#      leaves its gateway and another completes a command from elsewhere:
#      the first is shown offline everywhere, the command ends completed.
# Every process is stopped on the way out, also on failure, on the suite's
# own deadline and on SIGTERM (test/run.sh's timeout).
import asyncio
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
SET = {"action": "SET_MODE", "payload": {"target_mode": "MANUAL_DISCHARGE", "target_power": 500}}
AUTO = {"action": "SET_MODE", "payload": {"target_mode": "AUTO"}}
DEADLINE_S = 240  # the whole suite; every process is stopped on the way out


class Proxy:
    """HAProxy in TCP mode in front of the gateways (as docker/haproxy.cfg),
    with fast checks so a dead gateway gets no new connections; a connection
    refused by a gateway that just died is sent to another one (redispatch)."""

    def __init__(self, env, sides):
        self.env, self.sides = env, sides
        self.port = gw.free_port()
        self.proc = None

    def start(self):
        cfg = os.path.join(self.env.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 1000
defaults
    mode tcp
    timeout connect 1s
    timeout client 5m
    timeout server 5m
    timeout tunnel 1h
    timeout check 1s
    retries 3
    option redispatch 1
frontend ems
    bind 127.0.0.1:{self.port}
    default_backend gateways
backend gateways
    balance leastconn
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server check inter 500ms fall 1 rise 1
""")
            for s in self.sides:
                f.write(f"    server {s.name} 127.0.0.1:{s.port}\n")
        self.proc = gw.Proc("haproxy", [shutil.which("haproxy"), "-db", "-f", cfg],
                            os.path.join(self.env.dir, "haproxy.log"))
        if not gw.wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), 1).close()
                           is None, 10):
            raise RuntimeError("haproxy did not start:\n" + self.proc.text()[-2000:])

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


class RealEdge:
    """A real ems-edge in simulation mode, through the proxy."""

    def __init__(self, env, name, token, url):
        self.env, self.name = env, name
        self.dir = os.path.join(env.dir, f"edge-{name}")
        os.makedirs(self.dir)
        self.token_file = os.path.join(self.dir, "token")
        with open(self.token_file, "w") as f:
            f.write(token + "\n")
        os.chmod(self.token_file, 0o600)
        self.status_port = gw.free_port()
        self.url = url
        self.proc = None
        self.first_seq = None

    def start(self):
        conf = os.path.join(self.dir, "ems-edge.conf")
        with open(conf, "w") as f:
            for k, v in {"device_id": self.name, "cloud_url": self.url,
                         "allow_insecure_ws": "true", "token_file": self.token_file,
                         "buffer_path": os.path.join(self.dir, "buffer"),
                         "status_port": self.status_port, "status_bind": "127.0.0.1",
                         "log_level": "info", "tick_ms": 500, "reconnect_min_s": 0.2,
                         "reconnect_max_s": 2}.items():
                f.write(f"{k} = {v}\n")
        self.proc = gw.Proc(f"edge-{self.name}",
                            [os.path.join(gw.BUILD, "ems-edge"), "--config", conf, "--sim",
                             "--profile", "sunny"], os.path.join(self.dir, "edge.log"))
        if not gw.wait_for(lambda: self.status() is not None or not self.proc.alive(), 30):
            raise RuntimeError(f"edge {self.name} did not start:\n" + self.proc.text()[-3000:])
        m = re.findall(r"next seq (\d+)", self.proc.text())
        if not m:
            raise RuntimeError(f"edge {self.name}: no 'next seq' line:\n" + self.proc.text()[-3000:])
        if self.first_seq is None:  # a restart keeps its buffer and its seqs
            self.first_seq = int(m[0])

    def status(self):
        c = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=3)
        try:
            c.request("GET", "/status")
            r = c.getresponse()
            body = r.read()
            return json.loads(body) if r.status == 200 else None
        except (OSError, ValueError):
            return None
        finally:
            c.close()

    def connected(self):
        st = self.status()
        return bool(st and st.get("link", {}).get("connected"))

    def stop(self):
        if self.proc:
            self.proc.stop()


class DashLog:
    """A dashboard socket whose messages are collected in the background."""

    def __init__(self, ws):
        self.ws = ws
        self.msgs = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        try:
            async for raw in self.ws:
                self.msgs.append(json.loads(raw))
        except Exception:
            pass

    async def send(self, o):
        await self.ws.send(json.dumps(o))

    async def wait(self, pred, timeout):
        end = time.time() + timeout
        while time.time() < end:
            for m in self.msgs:
                if pred(m):
                    return m
            await asyncio.sleep(0.1)
        return None

    def devices(self, dev):
        return [m for m in self.msgs if m.get("type") == "device" and m.get("device_id") == dev]

    def telemetry(self, dev):
        return [m for m in self.msgs
                if m.get("type") == "telemetry" and m.get("packet", {}).get("device_id") == dev]

    def statuses(self, cid):
        return [m["command"]["status"] for m in self.msgs
                if m.get("type") == "command" and m.get("command", {}).get("command_id") == cid]

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 2)
        except Exception:
            pass
        self.task.cancel()


async def arun(fn, *a):
    return await asyncio.get_event_loop().run_in_executor(None, fn, *a)


def jget(side, cookie, path):
    try:
        st, h, b = side.http("GET", path, cookie=cookie, timeout=5)
        return st, json.loads(b)
    except (OSError, ValueError) as e:
        return 0, {"error": str(e)}


def post(side, cookie, dev, body):
    st, h, b = side.http("POST", f"/api/devices/{dev}/commands", body, cookie=cookie)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


async def wait_until(pred, timeout, step=0.2):
    """pred() -> (done, detail), run off the loop; returns (done, last detail)."""
    end = time.time() + timeout
    last = (False, None)
    while time.time() < end:
        last = await arun(pred)
        if last[0]:
            return last
        await asyncio.sleep(step)
    return last


async def wait_status(side, cookie, cid, statuses, timeout=10):
    def p():
        st, b = jget(side, cookie, f"/api/commands/{cid}")
        return b.get("status") in statuses, b
    return await wait_until(p, timeout, 0.1)


def placement(side, cookie, names):
    """{device: gateway} of the online devices among `names`, as `side` says."""
    st, b = jget(side, cookie, "/api/devices")
    out = {}
    for d in b.get("devices", []):
        if d.get("device_id") in names and d.get("online") is True:
            out[d["device_id"]] = d.get("gateway")
    return out


def reconnects(side):
    return side.proc.text().count("bus: reconnected")


def audit(env, cid):
    return sorted(r[0] for r in env.psql(
        f"SELECT status FROM command_events WHERE command_id = '{cid}'"))


async def settled(edge, timeout=20):
    """A /status with nothing pending: every seq below next_seq is acked
    (committed). Returns next_seq, or None."""
    def p():
        st = edge.status()
        return bool(st and st["buffer"]["pending"] == 0), st
    ok, st = await wait_until(p, timeout, 0.2)
    return st["buffer"]["next_seq"] if ok else None


async def account(env, edges, label):
    """No packet lost or stored twice, per edge, since it started."""
    for e in edges:
        nxt = await settled(e)
        if nxt is None:
            tap.ok(f"{label}: {e.name} acknowledged everything", False, e.status())
            continue
        lo, hi = e.first_seq, nxt - 1
        r = env.psql(f"SELECT count(*), count(DISTINCT seq) FROM telemetry "
                     f"WHERE device_id = '{e.name}' AND seq BETWEEN {lo} AND {hi}")
        n, distinct = int(r[0][0]), int(r[0][1])
        want = hi - lo + 1
        why = (lo, hi, n, distinct)
        if n != want:
            why = (lo, hi, n, distinct, "missing", [int(x[0]) for x in env.psql(
                f"SELECT s FROM generate_series({lo}::bigint, {hi}::bigint) s WHERE NOT EXISTS "
                f"(SELECT 1 FROM telemetry t WHERE t.device_id = '{e.name}' AND t.seq = s) "
                f"ORDER BY s LIMIT 20")])
        tap.ok(f"{label}: {e.name}: seqs {lo}..{hi} each stored once ({want} packets)",
               n == want and distinct == want and want > 0, why)


async def part_dashboards(env, A, B, C, tok, ada):
    """Device events, telemetry and command statuses across gateways."""
    dashA = DashLog(await A.dashboard(ada))
    dashC = DashLog(await C.dashboard(ada))
    devs = []
    senders = []
    try:
        await dashA.send({"type": "subscribe", "devices": "*"})
        await dashC.send({"type": "subscribe", "devices": ["dev_a"]})
        await asyncio.sleep(1.5)  # the interest is announced on the next tick
        for side, name in ((A, "dev_a"), (B, "dev_b"), (C, "dev_c")):
            d = gw.BusDevice(side, name, tok[name])
            await d.start()
            devs.append(d)
        for name in ("dev_a", "dev_b", "dev_c"):
            m = await dashA.wait(lambda m: m.get("type") == "device" and
                                 m.get("device_id") == name and m.get("online") is True, 5)
            tap.ok(f'"*" dashboard on A: {name} online', m is not None, dashA.devices(name))
        senders = [asyncio.ensure_future(d.send_packets(1, 1000, 0.2)) for d in devs]
        for name in ("dev_a", "dev_b", "dev_c"):
            m = await dashA.wait(lambda m: m.get("type") == "telemetry" and
                                 m["packet"].get("device_id") == name, 8)
            tap.ok(f'"*" dashboard on A: live telemetry of {name}', m is not None,
                   [x.get("type") for x in dashA.msgs[-10:]])
        m = await dashC.wait(lambda m: m.get("type") == "device" and
                             m.get("device_id") == "dev_a" and m.get("online") is True, 5)
        tap.ok("dashboard on C watching dev_a (on A): its online message", m is not None,
               dashC.msgs[-5:])
        m = await dashC.wait(lambda m: m.get("type") == "telemetry", 8)
        tap.ok("... and its live telemetry", m is not None, dashC.msgs[-5:])
        tap.eq("... and nothing of the devices it does not watch",
               [x for x in dashC.msgs if (x.get("device_id") or x.get("packet", {}).get(
                   "device_id") or x.get("command", {}).get("device_id")) != "dev_a"], [])

        # A device on A commanded through B; its statuses seen on C.
        st, c = await arun(post, B, ada, "dev_a", SET)
        cid = c.get("command_id", "")
        tap.ok("POST on B for dev_a (on A): 202 sent", st == 202 and c.get("status") == "sent",
               (st, c))
        ok, last = await wait_status(B, ada, cid, ("completed",))
        tap.ok("B's GET /api/commands/{id}: completed", ok, last)
        await dashC.wait(lambda m: m.get("type") == "command" and
                         m["command"].get("command_id") == cid and
                         m["command"].get("status") == "completed", 5)
        await asyncio.sleep(0.5)  # anything repeated would be here by now
        tap.eq("dashboard on C: the command's statuses, each once, in order",
               dashC.statuses(cid), ["sent", "accepted", "completed"])
        tap.eq('"*" dashboard on A: the same', dashA.statuses(cid),
               ["sent", "accepted", "completed"])
        cmd = [m["command"] for m in dashC.msgs if m.get("type") == "command"]
        tap.ok("... as full records (device, action, history)",
               cmd and cmd[-1].get("device_id") == "dev_a" and cmd[-1].get("action") ==
               "SET_MODE" and len(cmd[-1].get("history", [])) == 3, cmd[-1:])
        tap.eq("the device on A got it once", devs[0].count(cid), 1)
        for _ in range(50):
            if audit(env, cid) == ["accepted", "completed", "sent"]:
                break
            await asyncio.sleep(0.1)
        tap.eq("the audit trail has each status exactly once", audit(env, cid),
               ["accepted", "completed", "sent"])

        # A dashboard that subscribes later gets the state of all three at once.
        late = DashLog(await C.dashboard(ada))
        await late.send({"type": "subscribe", "devices": "*"})
        got = {}
        for name in ("dev_a", "dev_b", "dev_c"):
            m = await late.wait(lambda m: m.get("type") == "device" and
                                m.get("device_id") == name, 3)
            got[name] = m and m.get("online")
        tap.eq('a new "*" dashboard on C: the state of every device at once', got,
               {"dev_a": True, "dev_b": True, "dev_c": True})
        await late.close()

        # Offline across gateways.
        for s in senders:
            s.cancel()
        await devs[2].ws.close()
        m = await dashA.wait(lambda m: m.get("type") == "device" and
                             m.get("device_id") == "dev_c" and m.get("online") is False, 5)
        tap.ok('"*" dashboard on A: dev_c (on C) offline when it leaves', m is not None,
               dashA.devices("dev_c"))
        await devs[0].ws.close()
        m = await dashC.wait(lambda m: m.get("type") == "device" and
                             m.get("device_id") == "dev_a" and m.get("online") is False, 5)
        tap.ok("dashboard on C: dev_a (on A) offline when it leaves", m is not None,
               dashC.devices("dev_a"))
        tap.eq("... one online and one offline message for it, no repeats",
               [m.get("online") for m in dashC.devices("dev_a")], [True, False])

        # A device that moves from B to C while a command posted on A is in
        # flight (accepted, not yet completed): its answer, sent on C, must
        # still reach A.
        mover = gw.BusDevice(B, "mover", tok["mover"], complete_after=2.0)
        devs.append(mover)
        await mover.start()
        ok, v = await wait_until(lambda: (jget(A, ada, "/api/devices/mover")[1].get("gateway")
                                          == "gwB", None), 5)
        st, c = await arun(post, A, ada, "mover", SET)
        mid = c.get("command_id", "")
        ok, last = await wait_status(A, ada, mid, ("accepted",), 5)
        tap.ok("a command on A for a device on B: accepted", st == 202 and ok, (st, last))
        await mover.ws.close()
        mover.task.cancel()
        mover.side = C
        await mover.start()
        ok, last = await wait_status(A, ada, mid, ("completed",), 8)
        tap.ok("the device moved to C before completing it: A's record is completed", ok, last)
        tap.ok("... asked again on C, the device repeated its answer (executed it once)",
               mover.count(mid) >= 2 and list(mover.last) == [mid], (mover.count(mid), mover.last))
        for _ in range(30):
            if audit(env, mid) == ["accepted", "completed", "sent"]:
                break
            await asyncio.sleep(0.1)
        tap.eq("... and the audit trail has each status once", audit(env, mid),
               ["accepted", "completed", "sent"])
    finally:
        for s in senders:
            s.cancel()
        for d in devs:
            try:
                await asyncio.wait_for(d.ws.close(), 2)
            except Exception:
                pass
            if d.task:
                d.task.cancel()
        await dashA.close()
        await dashC.close()


async def part_kill(env, sides, edges, ada, tok, common):
    """SIGKILL of the gateway holding the most edges, restarted at once."""
    names = [e.name for e in edges]

    def agreed():
        views = [placement(s, ada, names) for s in sides if s.proc and s.proc.alive()]
        ok = all(len(v) == len(names) for v in views) and all(v == views[0] for v in views)
        return ok, views
    ok, views = await wait_until(agreed, 10)
    tap.ok("every edge online, and all three gateways agree where", ok, views)
    where = views[0] if views else {}
    counts = {s.name: list(where.values()).count(s.name) for s in sides}
    victim = max(sides, key=lambda s: counts[s.name])
    rest = [s for s in sides if s is not victim]
    tap.note(f"placement {where}; killing {victim.name}")
    # And a device of the test's own on it, which will not come back.
    lone = gw.BusDevice(victim, "lone", tok["lone"])
    await lone.start()

    def lone_view():
        views = [jget(s, ada, "/api/devices/lone")[1] for s in rest]
        return all(v.get("online") is True and v.get("gateway") == victim.name
                   for v in views), views
    ok, views = await wait_until(lone_view, 5)
    tap.ok(f"a device on {victim.name}: online there for the others", ok, views)
    watch = DashLog(await rest[0].dashboard(ada))
    try:
        await watch.send({"type": "subscribe", "devices": ["lone"]})
        await asyncio.sleep(2)
        victim.proc.p.kill()
        victim.proc.p.wait()
        t0 = time.time()

        def moved():
            views = [placement(s, ada, names) for s in rest]
            ok = all(len(v) == len(names) and victim.name not in v.values() for v in views) \
                and views[0] == views[1]
            return ok, views
        ok, views = await wait_until(moved, 20)
        dt = time.time() - t0
        tap.ok(f"{victim.name} killed: its edges are online on the others, which agree, "
               f"within 10 s ({dt:.1f} s)", ok and dt < 10, views)
        ok = await arun(gw.wait_for, lambda: all(e.connected() for e in edges), 10)
        tap.ok("every edge is connected again", ok, [(e.name, e.status()) for e in edges])

        # Restarted at once with the same id and port (as systemd would), so
        # its heartbeat is never missed: the others must still drop what its
        # previous life had announced.
        await arun(lambda: victim.start(listen=f"127.0.0.1:{victim.port}", **common))
        t1 = time.time()

        def lone_off():
            views = [jget(s, ada, "/api/devices/lone")[1] for s in rest]
            return all(v.get("online") is False for v in views), views
        ok, views = await wait_until(lone_off, 5)
        silent = [s.name for s in rest if f"gateway {victim.name} silent" in s.proc.text()]
        tap.ok(f"{victim.name} restarted {t1 - t0:.1f} s after the kill: the device it lost is "
               f"offline on the others within 3 s ({time.time() - t1:.1f} s)",
               ok and time.time() - t1 < 3 and not silent, (views, "silent seen by", silent))
        await arun(gw.wait_for, lambda: [m.get("online") for m in watch.devices("lone")][-1:] ==
                   [False], 3)
        tap.eq(f"... and a dashboard on {rest[0].name} watching it is told so",
               [m.get("online") for m in watch.devices("lone")], [True, False])
    finally:
        await watch.close()
        try:
            await asyncio.wait_for(lone.ws.close(), 2)
        except Exception:
            pass
        if lone.task:
            lone.task.cancel()

    # One of the moved edges goes away again: the gateway it had moved to
    # must not show it online on the gateway it came from.
    was = [e for e in edges if where.get(e.name) == victim.name]
    if was:
        e = was[0]
        await arun(e.stop)

        def gone():
            views = [jget(s, ada, f"/api/devices/{e.name}")[1] for s in sides]
            return all(v.get("online") is False for v in views), views
        ok, views = await wait_until(gone, 3)
        tap.ok(f"{e.name}, moved off {victim.name}, stopped: offline on all three at once",
               ok, views)
        await arun(e.start)
        ok = await arun(gw.wait_for, e.connected, 10)
        tap.ok(f"{e.name} started again and connected", ok, e.status())
    ok, views = await wait_until(agreed, 10)
    tap.ok("all three gateways agree where every edge is", ok, views)
    await asyncio.sleep(2)
    await account(env, edges, "gateway killed")
    return rest, (views[0] if views else {})


async def part_nats(env, nats, sides, rest, edges, ada, where, tok):
    """nats-server stopped mid-traffic, then started again."""
    names = [e.name for e in edges]
    # A device on P, watched and commanded from Q.
    by_gw = {}
    for dev, g in where.items():
        by_gw.setdefault(g, []).append(dev)
    P = next((s for s in rest if by_gw.get(s.name)), rest[0])
    Q = rest[1] if P is rest[0] else rest[0]
    far = (by_gw.get(P.name) or [names[0]])[0]
    tap.note(f"{far} is on {P.name}; watched and commanded from {Q.name}")
    dash = DashLog(await Q.dashboard(ada))
    try:
        await dash.send({"type": "subscribe", "devices": [far]})
        m = await dash.wait(lambda m: m.get("type") == "telemetry", 8)
        tap.ok(f"before: a dashboard on {Q.name} gets {far}'s telemetry from {P.name}",
               m is not None, dash.msgs[-3:])
        st, c = await arun(post, Q, ada, far, AUTO)
        ok, last = await wait_status(Q, ada, c.get("command_id", ""), ("completed",), 10)
        tap.ok("before: a command across gateways completes", st == 202 and ok, (st, last))

        # A short blip (shorter than the 6 s heartbeat limit) during which a
        # device leaves P: its "offline" could not be sent; Q must still
        # learn it once NATS is back.
        blip = gw.BusDevice(P, "blip", tok["blip"])
        await blip.start()
        # And a device on P that completes a command from Q during the blip:
        # its answer, relayed by P while the bus is down, must still reach Q.
        slow = gw.BusDevice(P, "slow", tok["slow"], complete_after=1.5)
        await slow.start()
        await dash.send({"type": "subscribe", "devices": ["blip"]})

        def blip_view(online):
            def p():
                views = [jget(s, ada, "/api/devices/blip")[1] for s in sides]
                return all(v.get("online") is online for v in views), views
            return p
        ok, views = await wait_until(blip_view(True), 5)
        tap.ok(f"a device on {P.name} is online for all three", ok, views)
        ok, views = await wait_until(lambda: (all(
            jget(s, ada, "/api/devices/slow")[1].get("online") is True for s in sides), None), 5)
        st, c = await arun(post, Q, ada, "slow", SET)
        slow_id = c.get("command_id", "")
        ok, last = await wait_status(Q, ada, slow_id, ("accepted",), 5)
        tap.ok(f"a command posted on {Q.name} for a device on {P.name}: accepted", ok, (st, last))
        before = {s.name: reconnects(s) for s in sides}
        nats.stop()
        await asyncio.sleep(0.5)
        await blip.ws.close()
        blip.task.cancel()
        await asyncio.sleep(1.5)
        tap.eq("the device completed it while NATS was down", slow.last.get(slow_id), "completed")
        nats.start()
        t0 = time.time()
        ok, views = await wait_until(blip_view(False), 8)
        tap.ok(f"NATS blip of 2 s while it left {P.name}: offline for all three once NATS is "
               f"back ({time.time() - t0:.1f} s)", ok and time.time() - t0 < 5, views)
        await arun(gw.wait_for, lambda: [m.get("online") for m in dash.devices("blip")][-1:] ==
                   [False], 3)
        tap.eq(f"... and the dashboard on {Q.name} is told so",
               [m.get("online") for m in dash.devices("blip")], [True, False])
        ok = await arun(gw.wait_for, lambda: all(reconnects(s) > before[s.name] for s in sides),
                        10)
        tap.ok("... and the three gateways reconnected", ok)
        ok, last = await wait_status(Q, ada, slow_id, ("completed",), 8)
        tap.ok(f"... and {Q.name}'s record of the command completed during the blip is "
               f"completed ({time.time() - t0:.1f} s after NATS was back)", ok, last)
        tap.eq("... its history", [x["status"] for x in (last or {}).get("history", [])],
               ["sent", "accepted", "completed"])
        for _ in range(30):
            if audit(env, slow_id) == ["accepted", "completed", "sent"]:
                break
            await asyncio.sleep(0.1)
        tap.eq("... and its audit trail has each status once", audit(env, slow_id),
               ["accepted", "completed", "sent"])
        try:
            await asyncio.wait_for(slow.ws.close(), 2)
        except Exception:
            pass
        slow.task.cancel()
        await asyncio.sleep(1)

        # Partitioned: nats-server frozen, so the gateways cannot tell yet
        # that nothing gets through.
        fe = next(e for e in edges if e.name == far)
        nats.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.time()
            st, c = await arun(post, Q, ada, far, SET)
            cid = c.get("command_id", "")
            ok, last = await wait_status(Q, ada, cid, ("failed",), 8)
            dt = time.time() - t0
            tap.ok("NATS frozen: a command across gateways fails within seconds, saying why",
                   st == 202 and ok and dt < 6 and last.get("reason") == "GATEWAY_UNREACHABLE",
                   (dt, st, last))
        finally:
            nats.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(2)
        tap.ok("... and it does not reach the device late", cid and cid not in fe.proc.text(),
               [ln for ln in fe.proc.text().splitlines() if cid in ln])
        st, c = await arun(post, Q, ada, far, AUTO)
        ok, last = await wait_status(Q, ada, c.get("command_id", ""), ("completed",), 10)
        tap.ok("NATS thawed: a command across gateways completes", st == 202 and ok, (st, last))

        before = {s.name: reconnects(s) for s in sides}
        nats.stop()
        t_down = time.time()
        await asyncio.sleep(1)
        t0 = time.time()
        st, c = await arun(post, Q, ada, far, AUTO)
        dt = time.time() - t0
        tap.ok("NATS down: a command across gateways fails at once (409), naming the bus",
               st == 409 and dt < 2 and "message bus" in c.get("error", "") and
               c.get("command", {}).get("status") == "failed", (dt, st, c))
        # Longer than the 6 s heartbeat limit: the gateways lose sight of
        # each other's devices (docs/scaling.md) and must find them again.
        await asyncio.sleep(max(0, 8 - (time.time() - t_down)))
        m = await dash.wait(lambda m: m.get("type") == "device" and m.get("online") is False, 1)
        tap.ok(f"NATS down > 6 s: the dashboard on {Q.name} is told {far} is offline",
               m is not None, dash.devices(far))
        seen = len(dash.telemetry(far))
        nats.start()
        t0 = time.time()
        ok = await arun(gw.wait_for, lambda: all(reconnects(s) > before[s.name] for s in sides),
                        15)
        tap.ok("NATS back: the three gateways reconnect by themselves", ok)

        def agreed():
            views = [placement(s, ada, names) for s in sides]
            return all(len(v) == len(names) and v == views[0] for v in views), views
        ok, views = await wait_until(agreed, 15)
        tap.ok(f"NATS back: presence agrees again within 10 s ({time.time() - t0:.1f} s)",
               ok and time.time() - t0 < 10, views)
        await arun(gw.wait_for, lambda: [x.get("online") for x in dash.devices(far)][-1:] ==
                   [True], 10)
        tap.ok(f"... and the dashboard is told {far} is online again",
               [x.get("online") for x in dash.devices(far)][-1:] == [True], dash.devices(far))
        ok = await arun(gw.wait_for, lambda: len(dash.telemetry(far)) > seen, 10)
        tap.ok("... and gets its telemetry again, without subscribing again", ok,
               (seen, len(dash.telemetry(far))))
        st, c = await arun(post, Q, ada, far, SET)
        ok, last = await wait_status(Q, ada, c.get("command_id", ""), ("completed",), 10)
        tap.ok("NATS back: a command across gateways completes", st == 202 and ok, (st, c, last))
    finally:
        await dash.close()
    await account(env, edges, "NATS restarted")


async def main():
    if not shutil.which("nats-server") or not shutil.which("haproxy"):
        tap.ok("nats-server and haproxy are installed (scripts/deps.sh)", False,
               (shutil.which("nats-server"), shutil.which("haproxy")))
        tap.done()
    env = gw.Env(tap, tls=False)
    nats = gw.Nats(env)
    A, B, C = (gw.BusGateway(env, n) for n in ("gwA", "gwB", "gwC"))
    sides = [A, B, C]
    proxy = None
    edges = []
    try:
        env.start_pg()
        names = ["dev_a", "dev_b", "dev_c", "mover", "lone", "blip", "slow", "edge1", "edge2", "edge3", "edge4"]
        tok = {}
        for n in names:
            out = env.add_device(n)
            m = re.findall(r"\b[0-9a-f]{64}\b", out)
            tok[n] = m[0] if m else out
        env.add_user("ada", "operator", "ada-password-1")
        env.start_dbwriter()
        nats.start()
        common = dict(nats_url=nats.url(), command_timeout_s=5, command_complete_s=10)
        for s in sides:
            s.start(**common)
        ok = await arun(gw.wait_for, lambda: all(
            "ems_gateway_bus_peers 2" in s.http("GET", "/metrics")[2].decode() for s in sides), 15)
        tap.ok("three gateways on the bus, each hears the two others", ok)
        ada = A._view().login("ada", "ada-password-1")

        await part_dashboards(env, A, B, C, tok, ada)

        proxy = Proxy(env, sides)
        proxy.start()
        for n in ("edge1", "edge2", "edge3", "edge4"):
            e = RealEdge(env, n, tok[n], f"ws://127.0.0.1:{proxy.port}")
            edges.append(e)
            e.start()
            if not await arun(gw.wait_for, e.connected, 15):
                raise RuntimeError(f"{n} did not connect:\n" + e.proc.text()[-2000:])
        rest, where = await part_kill(env, sides, edges, ada, tok, common)
        await part_nats(env, nats, sides, rest, edges, ada, where, tok)
    finally:
        for e in edges:
            e.stop()
        if proxy:
            proxy.stop()
        for s in sides:
            if s.proc:
                alive = s.proc.alive()
                rc = s.proc.stop()
                if alive:
                    tap.eq(f"gateway {s.name} exits cleanly", rc, 0)
                if tap.failed:
                    tap.note(f"--- {s.name} log (tail) ---\n" + s.proc.text()[-4000:])
        nats.stop()
        env.close()


async def guarded():
    task = asyncio.ensure_future(main())
    # `timeout` (test/run.sh) sends SIGTERM: end through main's cleanup.
    asyncio.get_event_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await asyncio.wait_for(task, DEADLINE_S)
    except asyncio.TimeoutError:
        tap.ok(f"the suite finishes within {DEADLINE_S} s", False, "deadline passed")
    except asyncio.CancelledError:
        tap.ok("the suite was not stopped from outside", False, "SIGTERM")
    except Exception as ex:  # a step that could not run (its log tails were printed)
        tap.ok("the suite ran to its end", False, repr(ex))


asyncio.run(guarded())
tap.done()
