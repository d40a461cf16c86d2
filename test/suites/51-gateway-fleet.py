#!/usr/bin/python3
# 51-gateway-fleet: the coalesced fleet view on /ws/dashboard
# ({"type":"subscribe","devices":"*","mode":"fleet"}, docs/api.md "The fleet
# view") of the real ems-gateway, with the real ems-dbwriter and PostgreSQL
# behind it and Python as devices and browsers.
#
# Proves:
#   - bad subscribe requests get a dashboard error naming the member;
#   - right after the subscribe, a snapshot of every known device (online
#     and offline, with its last values) arrives, before the next interval;
#   - while devices send 20 packets a second, the fleet subscriber gets each
#     device at most once per interval, always its newest state, in `fleet`
#     frames that the JSON Schema accepts; a detail subscription on the same
#     and on another dashboard still gets every packet, in order;
#   - a fleet subscriber reading slowly (tiny receive buffer, a 4 s stall)
#     while 1,000 devices send a burst is never closed with 4009, even with
#     a 64 KiB send queue: frames stay under 64 KiB, at most one item per
#     device each, at most one item per device per
#     interval (fewer items than packets), and in the end it holds
#     every device's last packet;
#   - unsubscribing ends the fleet frames;
#   - with two gateways on NATS, a fleet subscriber on A gets the latest
#     state of a device connected to B (coalesced too) and of A's own.
import asyncio
import importlib.util
import json
import os
import shutil
import socket
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
packet = gw.packet
INTERVAL = 0.5  # fleet_interval_ms of the gateway under test
QUEUE = 65536   # dashboard_send_queue: small, so a non-coalescing stream would overflow it
N_BURST = 1000
FLEET = {"type": "subscribe", "devices": "*", "mode": "fleet"}
fleet_schema = gw.schema_validator("dashboard-fleet")


def check_frame(m, where):
    errs = list(fleet_schema.iter_errors(m))
    if errs:
        tap.ok(f"{where}: the fleet frame is valid by dashboard-fleet.schema.json", False,
               f"{errs[0].message[:200]} in {json.dumps(m)[:300]}")
        return False
    ids = [it["device_id"] for it in m["devices"]]
    if len(ids) != len(set(ids)):
        tap.ok(f"{where}: a device at most once per frame", False, ids)
        return False
    return True


async def error_tests(env, cookie):
    d = await env.dashboard(cookie)
    cases = [
        ({"type": "subscribe", "devices": ["fl0000"], "mode": "fleet"}, "devices", "\"*\""),
        ({"type": "subscribe", "devices": "*", "mode": "fast"}, "mode", "\"fast\""),
        ({"type": "subscribe", "devices": "*", "mode": 1}, "mode", "number"),
        ({"type": "unsubscribe", "devices": [], "mode": "fleet"}, "devices", "\"*\""),
    ]
    for req, path, word in cases:
        await d.send(json.dumps(req))
        m = await gw.recv_json(d)
        tap.ok(f"{json.dumps(req)}: error naming {path}",
               m.get("type") == "error" and m.get("path") == path and word in m.get("reason", ""), m)
    try:
        m = await gw.recv_json(d, timeout=INTERVAL * 3)
        tap.ok("a refused fleet subscribe sends no fleet frames", False, m)
    except asyncio.TimeoutError:
        tap.ok("a refused fleet subscribe sends no fleet frames")
    await d.close()


async def connect_devices(env, toks, ids):
    async def one(dev):
        ws = await env.device(dev, toks[dev])
        json.loads(await asyncio.wait_for(ws.recv(), 20))  # welcome
        return ws
    out = {}
    for i in range(0, len(ids), 50):
        chunk = ids[i:i + 50]
        for dev, ws in zip(chunk, await asyncio.gather(*(one(d) for d in chunk))):
            out[dev] = ws
    return out


async def drain(ws):
    try:
        while True:
            await ws.recv()
    except Exception:
        pass


async def coalesce_tests(env, cookie, toks):
    ids = [f"fl{i:04d}" for i in range(10)]
    devs = await connect_devices(env, toks, ids)
    drains = [asyncio.ensure_future(drain(w)) for w in devs.values()]
    # fl0009 sends one packet and goes: the snapshot must show it offline
    # with its last values.
    gone = packet("fl0009", 1)
    await devs["fl0009"].send(json.dumps(gone))
    await asyncio.sleep(0.3)
    await devs["fl0009"].close()
    await asyncio.sleep(0.3)

    fleet = await env.dashboard(cookie)     # fleet view + detail of fl0000
    detail = await env.dashboard(cookie)    # detail of fl0000 only
    await fleet.send(json.dumps(FLEET))
    m = await gw.recv_json(fleet, timeout=INTERVAL * 0.8)  # before the first flush
    tap.ok("the snapshot arrives at once after the subscribe", m.get("type") == "fleet", m)
    snap = {it["device_id"]: it for it in m.get("devices", [])}
    check_frame(m, "snapshot")
    tap.ok("the snapshot lists every device that connected, online",
           all(snap.get(i, {}).get("online") is True for i in ids[:9]), sorted(snap))
    g = snap.get("fl0009", {})
    tap.ok("... and the one that left, offline with its last values",
           g.get("online") is False and g.get("timestamp") == gone["timestamp"] and
           g.get("soc") == gone["battery"]["soc"] and g.get("state") == "CHARGING" and "since" in g, g)
    await fleet.send(json.dumps({"type": "subscribe", "devices": ["fl0000"]}))
    await detail.send(json.dumps({"type": "subscribe", "devices": ["fl0000"]}))
    await asyncio.sleep(0.3)

    # 9 devices, 20 packets a second each, for 3 s.
    rate, secs = 20, 3.0
    sent = {i: [] for i in ids[:9]}
    got_fleet = {i: [] for i in ids}  # (receive time, item)
    got_tel = {"fleet": [], "detail": []}
    frames = []

    async def read(ws, name, until):
        while time.time() < until:
            try:
                m = json.loads(await asyncio.wait_for(ws.recv(), max(0.05, until - time.time())))
            except asyncio.TimeoutError:
                break
            if m.get("type") == "telemetry":
                got_tel[name].append(m["packet"]["seq"])
            elif m.get("type") == "fleet" and name == "fleet":
                frames.append((time.time(), m))
                for it in m["devices"]:
                    got_fleet.setdefault(it["device_id"], []).append((time.time(), it))

    until = time.time() + secs + INTERVAL * 3
    readers = [asyncio.ensure_future(read(fleet, "fleet", until)),
               asyncio.ensure_future(read(detail, "detail", until))]
    n = int(rate * secs)
    for k in range(n):
        for i in ids[:9]:
            p = packet(i, 1000 + k)
            p["battery"]["soc"] = round(k * 100 / n, 1)
            sent[i].append(p)
            await devs[i].send(json.dumps(p))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*readers)

    tap.ok(f"fleet frames arrived ({len(frames)})", len(frames) >= 3, len(frames))
    tap.ok("every fleet frame is valid and lists a device at most once",
           all(check_frame(m, "coalesced") for _, m in frames))
    worst = max(len(got_fleet[i]) for i in ids[:9])
    most = int(secs / INTERVAL) + 3
    tap.ok(f"each device at most once per interval ({worst} updates for {n} packets, at most {most})",
           worst <= most and min(len(got_fleet[i]) for i in ids[:9]) >= 2,
           {i: len(v) for i, v in got_fleet.items()})
    gaps = []
    for i in ids[:9]:
        ts = [t for t, _ in got_fleet[i]]
        gaps += [b - a for a, b in zip(ts, ts[1:])]
    tap.ok(f"... spaced by the interval (smallest gap {min(gaps or [0]) * 1000:.0f} ms)",
           gaps and min(gaps) >= INTERVAL * 0.5, sorted(gaps)[:5])
    newest = all(got_fleet[i] and got_fleet[i][-1][1]["timestamp"] == sent[i][-1]["timestamp"] and
                 got_fleet[i][-1][1]["soc"] == sent[i][-1]["battery"]["soc"] for i in ids[:9])
    tap.ok("the last update of each device is its newest packet", newest,
           {i: (got_fleet[i][-1][1] if got_fleet[i] else None, sent[i][-1]["timestamp"]) for i in ids[:2]})
    order = all([it["timestamp"] for _, it in got_fleet[i]] == sorted(it["timestamp"] for _, it in got_fleet[i])
                for i in ids[:9])
    tap.ok("updates never go back in time", order)
    tap.eq("the fleet dashboard's detail subscription got every packet of fl0000 in order",
           got_tel["fleet"], list(range(1000, 1000 + n)))
    tap.eq("a detail-only dashboard got every packet too", got_tel["detail"], list(range(1000, 1000 + n)))

    # Unsubscribe the fleet view: the detail stays, the frames stop.
    await fleet.send(json.dumps({"type": "unsubscribe", "devices": "*", "mode": "fleet"}))
    await asyncio.sleep(INTERVAL * 2)
    while True:  # what was already in flight
        try:
            await asyncio.wait_for(fleet.recv(), 0.2)
        except asyncio.TimeoutError:
            break
    await devs["fl0000"].send(json.dumps(packet("fl0000", 5000)))
    await devs["fl0001"].send(json.dumps(packet("fl0001", 5000)))
    kinds = []
    end = time.time() + INTERVAL * 3
    while time.time() < end:
        try:
            kinds.append(json.loads(await asyncio.wait_for(fleet.recv(), end - time.time())).get("type"))
        except asyncio.TimeoutError:
            break
    tap.eq("after unsubscribing the fleet view: the detail packet only", kinds, ["telemetry"])
    for w in (fleet, detail, *devs.values()):
        await w.close()
    for t in drains:
        t.cancel()


async def burst_test(env, cookie, toks):
    ids = [f"fl{i:04d}" for i in range(N_BURST)]
    t0 = time.time()
    devs = await connect_devices(env, toks, ids)
    tap.note(f"{len(devs)} devices connected in {time.time() - t0:.1f} s")
    drains = [asyncio.ensure_future(drain(w)) for w in devs.values()]

    # The slow browser: a raw socket with a tiny receive buffer that does
    # not read while the burst arrives.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", env.port))
    s.sendall(gw.ws_request("/ws/dashboard", {"Cookie": cookie, "Origin": env.origin()},
                            host=f"localhost:{env.port}"))
    st, h, rest = gw.read_http_head(s)
    tap.eq("slow fleet dashboard upgraded", st, 101)
    slow = gw.RawWs(s, rest)
    slow.send(gw.frame(1, json.dumps(FLEET).encode()))

    per_dev = 10
    last = {}
    t0 = time.time()
    for k in range(per_dev):
        for i in ids:
            p = packet(i, 2000 + k)
            p["battery"]["soc"] = float(k)
            last[i] = p["timestamp"]
            await devs[i].send(json.dumps(p))
        await asyncio.sleep(0.05)
    burst_s = time.time() - t0
    tap.note(f"burst: {N_BURST * per_dev} packets in {burst_s:.1f} s")
    await asyncio.sleep(max(0.0, 4.0 - burst_s))  # the stall

    # Now read, slowly, until every device's last packet was seen.
    newest = {}
    items = 0
    big = 0
    bad = None
    code = None
    s.settimeout(10)
    end = time.time() + 60
    while time.time() < end and not all(newest.get(i) == last[i] for i in ids):
        try:
            op, payload = slow.recv()
        except (EOFError, OSError) as e:
            code = f"read failed: {e!r}"
            break
        if op == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            break
        if op != 1:
            continue
        big = max(big, len(payload))
        m = json.loads(payload)
        if m.get("type") != "fleet":
            continue
        if bad is None and not check_frame(m, "burst"):
            bad = m
        for it in m["devices"]:
            items += 1
            if it.get("timestamp"):
                newest[it["device_id"]] = max(newest.get(it["device_id"], ""), it["timestamp"])
        await asyncio.sleep(0.02)  # a slow browser
    have = sum(1 for i in ids if newest.get(i) == last[i])
    tap.ok("the slow fleet dashboard was not closed (no 4009)", code is None and
           "closing 4009" not in env.gw.text(), code)
    tap.eq("it ends up with every device's last packet", have, N_BURST)
    tap.ok(f"every frame is at most 64 KiB (largest {big} bytes)", 0 < big <= 65536, big)
    # At most one item per device per collect (one per interval) during the
    # burst, plus the one after it and the snapshot, whatever the packet rate.
    bound = N_BURST * (int(burst_s / INTERVAL) + 3)
    tap.ok(f"coalesced: {items} items for {N_BURST * per_dev} packets (at most {bound})",
           items <= min(bound, N_BURST * per_dev - 1), items)
    tap.ok("every burst frame was valid", bad is None)
    st, h, b = env.http("GET", "/metrics")
    tap.ok("no dashboard was dropped", "ems_gateway_dashboards_dropped_total 0" in b.decode(),
           [line for line in b.decode().splitlines() if "dropped" in line])
    s.close()
    for t in drains:
        t.cancel()
    await asyncio.gather(*(w.close() for w in devs.values()), return_exceptions=True)


async def bus_test(env, cookie, toks):
    if not shutil.which("nats-server"):
        tap.ok("nats-server is installed (scripts/deps.sh)", False, "not found")
        return
    nats = gw.Nats(env)
    a, b = gw.BusGateway(env, "gwA"), gw.BusGateway(env, "gwB")
    socks = []
    try:
        nats.start()
        common = dict(nats_url=nats.url(), fleet_interval_ms=int(INTERVAL * 1000))
        a.start(**common)
        b.start(**common)
        tap.ok("both gateways joined the bus",
               gw.wait_for(lambda: "bus: connected" in a.proc.text() and "bus: connected" in b.proc.text(), 10))
        d = await a.dashboard(cookie)
        socks.append(d)
        await d.send(json.dumps(FLEET))
        await asyncio.sleep(1.5)  # A announces its interest in every device
        on_b = await b.device("fl0990", toks["fl0990"])
        on_a = await a.device("fl0991", toks["fl0991"])
        socks += [on_b, on_a]
        for w in (on_b, on_a):
            json.loads(await asyncio.wait_for(w.recv(), 10))  # welcome
        drains = [asyncio.ensure_future(drain(w)) for w in (on_b, on_a)]
        items = {"fl0990": [], "fl0991": []}

        async def read(until):
            while time.time() < until:
                try:
                    m = json.loads(await asyncio.wait_for(d.recv(), max(0.05, until - time.time())))
                except asyncio.TimeoutError:
                    break
                if m.get("type") == "fleet":
                    check_frame(m, "bus")
                    for it in m["devices"]:
                        if it["device_id"] in items:
                            items[it["device_id"]].append(it)

        secs = 4.0
        reader = asyncio.ensure_future(read(time.time() + secs + INTERVAL * 4 + 1))
        last = {}
        for k in range(int(secs * 10)):
            for dev, w in (("fl0990", on_b), ("fl0991", on_a)):
                p = packet(dev, 3000 + k)
                last[dev] = p["timestamp"]
                await w.send(json.dumps(p))
            await asyncio.sleep(0.1)
        await reader
        rb = [it for it in items["fl0990"] if "timestamp" in it]
        tap.ok("A's fleet view has the newest packet of the device on B",
               rb and rb[-1]["timestamp"] == last["fl0990"] and rb[-1]["online"] is True,
               (rb[-1] if rb else None, last["fl0990"]))
        tap.ok(f"... coalesced ({len(rb)} items for {int(secs * 10)} packets)",
               0 < len(rb) <= int(secs / INTERVAL) + 4, len(rb))
        ra = [it for it in items["fl0991"] if "timestamp" in it]
        tap.ok("... and of its own device", ra and ra[-1]["timestamp"] == last["fl0991"],
               ra[-1] if ra else None)
        for t in drains:
            t.cancel()
    finally:
        for w in socks:
            try:
                await asyncio.wait_for(w.close(), 2)
            except Exception:
                pass
        for s in (a, b):
            if s.proc:
                rc = s.proc.stop()
                tap.eq(f"gateway {s.name} exits cleanly", rc, 0)
                if tap.failed:
                    tap.note(f"--- {s.name} log (tail) ---\n" + s.proc.text()[-3000:])
        nats.stop()


async def main():
    env = gw.Env(tap, tls=False)
    try:
        env.start_pg()
        env.add_user("ada", "operator", "ada-password-1")  # emsctl migrates the schema
        toks = gw.bulk_provision(env, "fl", N_BURST)
        env.start_dbwriter()
        env.start_gateway(rate_burst=100000, rate_per_s=100000, fleet_interval_ms=int(INTERVAL * 1000),
                          dashboard_send_queue=QUEUE)
        cookie = env.login("ada", "ada-password-1")
        await error_tests(env, cookie)
        await coalesce_tests(env, cookie, toks)
        await burst_test(env, cookie, toks)
        await bus_test(env, cookie, toks)
        st, h, b = env.http("GET", "/healthz")
        tap.eq("the gateway is healthy afterwards", st, 200)
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, f"{e!r}")
        tap.note(traceback.format_exc())
    finally:
        rc = env.close()
        tap.eq("gateway exits 0 after SIGTERM", rc, 0)


asyncio.run(main())
tap.done()
