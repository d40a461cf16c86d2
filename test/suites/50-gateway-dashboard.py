#!/usr/bin/python3
# 50-gateway-dashboard: logins, sessions and the dashboard endpoint
# /ws/dashboard of the real ems-gateway (TLS, real ems-dbwriter and
# PostgreSQL behind it), with Python's websockets as the browser.
#
# Proves: login refusals and the cookie's attributes; the upgrade refusals
# (401 without or with a forged session, 403 foreign Origin); subscriptions
# and their errors; online/offline events; fan-out of each packet to every
# subscribed dashboard within milliseconds and to nobody else; a dashboard
# that never reads is dropped (4009) while the others get every packet in
# order without delay; the 16 KiB message limit (1009).
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
packet = gw.packet


def login_tests(env):
    st, h, b = env.http("POST", "/api/login", {"username": "ada", "password": "wrong-password"})
    tap.eq("login with a wrong password: 401", st, 401)
    st, h, b = env.http("POST", "/api/login", {"username": "nobody", "password": "whatever1"})
    tap.eq("login of an unknown user: 401", st, 401)
    tap.ok("both refusals say the same", json.loads(b).get("error") ==
           "invalid username or password", b)
    st, h, b = env.http("POST", "/api/login", {"username": "ada"})
    tap.eq("login without password: 400", st, 400)
    st, h, b = env.http("POST", "/api/login", "username=ada&password=x",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    tap.eq("login with a form body: 415", st, 415)
    st, h, b = env.http("POST", "/api/login", {"username": "ada", "password": "ada-password-1"})
    tap.eq("login: 200", st, 200)
    tap.eq("login answers name and role", json.loads(b), {"username": "ada", "role": "operator"})
    c = h.get("set-cookie", "")
    tap.ok("the cookie is HttpOnly, SameSite=Strict, Secure, 12 h",
           c.startswith("ems_session=") and "HttpOnly" in c and "SameSite=Strict" in c and
           "Secure" in c and "Max-Age=43200" in c, c)
    cookie = c.split(";", 1)[0]
    st, h, b = env.http("GET", "/api/me", cookie=cookie)
    tap.eq("/api/me with the cookie", (st, json.loads(b).get("username")), (200, "ada"))
    st, h, b = env.http("GET", "/api/me")
    tap.eq("/api/me without a cookie: 401", st, 401)
    forged = cookie.replace("|operator|", "|admin|")
    st, h, b = env.http("GET", "/api/me", cookie=forged)
    tap.eq("a cookie with a changed role: 401", st, 401)
    st, h, b = env.http("POST", "/api/logout", cookie=cookie)
    tap.ok("logout clears the cookie", st == 204 and "Max-Age=0" in h.get("set-cookie", ""), h)
    # Logout ends the session on the server too (54-gateway-abuse has more).
    st, h, b = env.http("GET", "/api/me", cookie=cookie)
    tap.eq("the logged-out cookie no longer works", st, 401)
    st, h, b = env.http("POST", "/api/login", {"username": "ada", "password": "ada-password-1"})
    cookie = h.get("set-cookie", "").split(";", 1)[0]
    st, h, b = env.http("GET", "/api/me", cookie=cookie)
    tap.eq("a new login right after the logout works", st, 200)
    return cookie


async def refusal_tests(env, cookie):
    import websockets

    async def status(name, want, **kw):
        try:
            ws = await env.dashboard(**kw)
            await ws.close()
            tap.ok(name, want == 101, "accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            tap.eq(name, e.status_code, want)

    await status("dashboard without a session: 401", 401, cookie=None)
    await status("dashboard with a forged session: 401", 401,
                 cookie=cookie.replace("|operator|", "|admin|"))
    await status("dashboard from a foreign Origin: 403", 403, cookie=cookie,
                 origin="https://evil.example")
    await status("dashboard from its own Origin: accepted", 101, cookie=cookie)
    await status("dashboard without Origin (not a browser): accepted", 101, cookie=cookie,
                 origin=None)


async def subscription_tests(env, cookie, tok):
    d = await env.dashboard(cookie)
    await d.send(json.dumps({"type": "subscribe", "devices": ["ok_1", "bad id"]}))
    m = await gw.recv_json(d)
    tap.ok("subscribe with a bad id: error naming devices[1]",
           m.get("type") == "error" and m.get("path") == "devices[1]", m)
    await d.send("{nope")
    m = await gw.recv_json(d)
    tap.ok("invalid JSON: error", m.get("type") == "error" and "JSON" in m.get("reason", ""), m)
    await d.send(json.dumps({"command_id": "x", "action": "RESET_ERROR", "payload": {}}))
    m = await gw.recv_json(d)
    tap.ok("a command on the socket is refused (REST only)", m.get("type") == "error", m)
    await d.send(json.dumps({"type": "subscribe", "devices": ["fan_1"]}))
    dev = await env.device("fan_1", tok["fan_1"])
    await asyncio.wait_for(dev.recv(), 5)
    m = await gw.recv_until(d, lambda m: m.get("type") == "device")
    tap.ok("online event when the device connects",
           m.get("device_id") == "fan_1" and m.get("online") is True and "since" in m, m)
    await dev.close()
    m = await gw.recv_until(d, lambda m: m.get("type") == "device")
    tap.ok("offline event when it goes", m.get("online") is False, m)
    # Oversized dashboard message: 16 KiB limit.
    import websockets
    try:
        await d.send(json.dumps({"type": "subscribe", "devices": ["a" * 60] * 400}))
        await asyncio.wait_for(d.recv(), 5)
    except (websockets.exceptions.ConnectionClosed, asyncio.TimeoutError):
        pass
    await asyncio.sleep(0.2)
    tap.eq("a dashboard message over 16 KiB closes with 1009", d.close_code, 1009)


async def fanout_tests(env, cookie, tok):
    dashes = [await env.dashboard(cookie) for _ in range(4)]
    await dashes[0].send(json.dumps({"type": "subscribe", "devices": ["fan_1"]}))
    await dashes[1].send(json.dumps({"type": "subscribe", "devices": ["fan_1", "fan_2"]}))
    await dashes[2].send(json.dumps({"type": "subscribe", "devices": "*"}))
    await dashes[3].send(json.dumps({"type": "subscribe", "devices": ["fan_2"]}))
    await asyncio.sleep(0.2)
    dev = await env.device("fan_1", tok["fan_1"])
    await asyncio.wait_for(dev.recv(), 5)
    lat = []
    n = 20
    for i in range(n):
        p = packet("fan_1", 100 + i)
        t0 = time.perf_counter()
        await dev.send(json.dumps(p))
        m = await gw.recv_json(dashes[0])
        lat.append(time.perf_counter() - t0)
        if m.get("type") != "telemetry" or m["packet"]["seq"] != 100 + i:
            tap.ok("fan-out order", False, m)
            break
    med = statistics.median(lat)
    tap.ok(f"a dashboard sees each packet within milliseconds (median {med * 1000:.1f} ms)",
           med < 0.1, lat)
    for k in (1, 2):
        seqs = []
        while len(seqs) < n:
            m = await gw.recv_json(dashes[k])
            if m.get("type") == "telemetry":
                seqs.append(m["packet"]["seq"])
        tap.eq(f"subscriber {k} got all {n} packets in order", seqs, list(range(100, 100 + n)))
    try:
        m = await gw.recv_json(dashes[3], timeout=0.5)
        tap.ok("a dashboard watching another device gets nothing", False, m)
    except asyncio.TimeoutError:
        tap.ok("a dashboard watching another device gets nothing")
    await dashes[0].send(json.dumps({"type": "unsubscribe", "devices": ["fan_1"]}))
    await asyncio.sleep(0.1)
    await dev.send(json.dumps(packet("fan_1", 500)))
    m = await gw.recv_until(dashes[2], lambda m: m.get("type") == "telemetry")
    tap.eq("the \"*\" subscriber still gets it", m["packet"]["seq"], 500)
    # The gateway passes the device's own (validated) text on instead of
    # encoding the packet again: an unknown member rides along unchanged.
    p = packet("fan_1", 501)
    p["x_note"] = "from a newer edge"
    await dev.send(json.dumps(p))
    m = await gw.recv_until(dashes[2], lambda m: m.get("type") == "telemetry")
    tap.eq("the dashboard gets the device's packet as it was sent", m["packet"], p)
    try:
        m = await gw.recv_json(dashes[0], timeout=0.5)
        tap.ok("after unsubscribe nothing arrives", False, m)
    except asyncio.TimeoutError:
        tap.ok("after unsubscribe nothing arrives")
    for d in dashes:
        await d.close()
    await dev.close()


async def slow_dashboard_test(env, cookie, tok):
    # The slow dashboard: a raw socket with a tiny receive buffer that never
    # reads after the upgrade.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", env.port))
    s = env.ssl_ctx().wrap_socket(s, server_hostname="localhost")
    s.sendall(gw.ws_request("/ws/dashboard", {"Cookie": cookie, "Origin": env.origin()},
                            host=f"localhost:{env.port}"))
    st, h, rest = gw.read_http_head(s)
    tap.eq("slow dashboard upgraded", st, 101)
    gw.RawWs(s, rest).send(gw.frame(1, json.dumps({"type": "subscribe", "devices": "*"}).encode()))

    fast = await env.dashboard(cookie)
    await fast.send(json.dumps({"type": "subscribe", "devices": ["flood"]}))
    await asyncio.sleep(0.3)
    dev = await env.device("flood", tok["flood"])
    await asyncio.wait_for(dev.recv(), 5)

    async def drain_device():
        try:
            while True:
                await dev.recv()
        except Exception:
            pass

    drainer = asyncio.ensure_future(drain_device())
    # About 12 MB: several times the slow dashboard's queue cap (1 MiB) plus
    # what loopback TCP buffers absorb (the kernel grows the gateway's send
    # buffer to several MB), sent at ~2000/s, a pace a Python reader keeps up
    # with even on a loaded 2-core CI machine under ASan (a faster burst made
    # the *fast* reader fall behind by more than its cap and get dropped too).
    n = 25000
    got = []
    lat = []

    async def read_fast():
        while len(got) < n:
            m = json.loads(await asyncio.wait_for(fast.recv(), 20))
            if m.get("type") == "telemetry":
                got.append(m["packet"]["seq"])
                lat.append(time.time() * 1000 - m["packet"]["battery"]["power"])

    reader = asyncio.ensure_future(read_fast())
    for i in range(n):
        # battery.power carries the send time (ms mod 1e6) for the latency.
        p = packet("flood", i)
        p["battery"]["power"] = round(time.time() * 1000 % 1000000, 1)
        await dev.send(json.dumps(p))
        if i % 20 == 0:
            await asyncio.sleep(0.01)  # a fleet's pace, not a single burst
    try:
        await asyncio.wait_for(reader, 60)
    except asyncio.TimeoutError:
        pass
    tap.eq("the fast dashboard got every packet in order while another does not read",
           got, list(range(n)))
    lat = [(x % 1000000) for x in lat]
    if lat:
        lat.sort()
        p99 = lat[int(len(lat) * 0.99) - 1]
        tap.ok(f"... without delay (p99 {p99:.0f} ms)", p99 < 1000, p99)
    ok = gw.wait_for(lambda: "closing 4009" in env.gw.text(), 15)
    tap.ok("the slow dashboard is dropped with 4009", ok, env.gw.text()[-2000:])
    st, h, b = env.http("GET", "/metrics")
    tap.ok("the drop is counted", "ems_gateway_dashboards_dropped_total 1" in b.decode() or
           "ems_gateway_dashboards_dropped_total 2" in b.decode(), b[-500:])
    drainer.cancel()
    await fast.close()
    await dev.close()
    s.close()


async def main():
    env = gw.Env(tap, tls=True)
    try:
        env.start_pg()
        tok = {d: env.add_device(d) for d in ("fan_1", "fan_2", "flood", "ok_1")}
        env.add_user("ada", "operator", "ada-password-1")
        env.add_user("vic", "viewer", "vic-password-1")
        env.start_dbwriter()
        env.start_gateway(rate_burst=100000, rate_per_s=100000)
        cookie = login_tests(env)
        rc, out, err = env.emsctl("user", "passwd", "vic", stdin="vic-password-2\n")
        tap.eq("emsctl user passwd", rc, 0)
        st, h, b = env.http("POST", "/api/login", {"username": "vic", "password": "vic-password-1"})
        tap.eq("the old password no longer works", st, 401)
        st, h, b = env.http("POST", "/api/login", {"username": "vic", "password": "vic-password-2"})
        tap.ok("the new one does, with the viewer role",
               st == 200 and json.loads(b).get("role") == "viewer", (st, b))
        rc, out, err = env.emsctl("user", "list")
        tap.ok("emsctl user list shows both users", rc == 0 and "ada" in out and "vic" in out, out)
        await refusal_tests(env, cookie)
        await subscription_tests(env, cookie, tok)
        await fanout_tests(env, cookie, tok)
        await slow_dashboard_test(env, cookie, tok)
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
