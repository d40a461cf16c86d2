#!/usr/bin/python3
# 50-gateway-device: the device endpoint /ws/device/{id} of the real
# ems-gateway, with the real ems-dbwriter and PostgreSQL behind it, over TLS
# and plain TCP on loopback. The device is Python's websockets library (an
# independent client) or a raw socket for the frames a library will not send.
#
# Proves: the upgrade and its refusals (401 no/wrong token, token of another
# device, unknown device; 403 revoked; 400/426 bad upgrade headers; 404 bad
# path; 400 malformed HTTP), welcome, acks only after PostgreSQL committed,
# nacks for invalid JSON / invalid telemetry / a foreign device_id, backfill
# batches with one bad packet, newer connection wins (4001), revocation and
# rotation close a live connection (4003), binary (1008), oversized (1009),
# invalid UTF-8 (1007), fragmented messages reassembled, the rate limit
# (4008), and that the gateway survives all of it and exits cleanly.
import asyncio
import importlib.util
import json
import os
import signal
import socket
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
packet = gw.packet


async def expect_refused(env, name, dev, token, status):
    import websockets
    try:
        ws = await env.device(dev, token)
        await ws.close()
        tap.ok(name, False, "the upgrade was accepted")
    except websockets.exceptions.InvalidStatusCode as e:
        tap.eq(name, e.status_code, status)


def rows(env, dev, lo, hi):
    return int(env.psql(f"SELECT count(*) FROM telemetry WHERE device_id = '{dev}' "
                        f"AND seq BETWEEN {lo} AND {hi}")[0][0])


async def device_tests(env, tok):
    # --- handshake and welcome
    ws = await env.device("dev_a", tok["dev_a"])
    w = json.loads(await asyncio.wait_for(ws.recv(), 5))
    tap.eq("welcome names the device", (w.get("type"), w.get("device_id")), ("welcome", "dev_a"))
    tap.ok("welcome carries server_time", abs(
        time.mktime(time.strptime(w["server_time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
            time.gmtime())) < 60, w)

    await ws.send(json.dumps({"type": "device_info", "firmware": "test 1",
                              "limits": {"max_charge_w": 5000, "soc_min": 10, "soc_max": 95}}))
    # --- telemetry acked only after commit
    now = int(time.time() * 1000)
    for i in range(5):
        await ws.send(json.dumps(packet("dev_a", 1000 + i, now - 5000 + i * 1000)))
    got = await gw.acked(ws, range(1000, 1005))
    tap.ok("five packets acked", set(range(1000, 1005)) <= got, got)
    tap.eq("acked packets are in PostgreSQL when the ack arrives", rows(env, "dev_a", 1000, 1004),
           5)

    # --- nacks; the connection stays usable
    await ws.send('{"device_id": "dev_a", "seq": ')
    m = await gw.recv_json(ws)
    tap.ok("invalid JSON is nacked", m.get("type") == "nack" and "JSON" in m.get("reason", "")
           and "seq" not in m, m)
    bad = packet("dev_a", 1005)
    bad["battery"]["soc"] = 101
    await ws.send(json.dumps(bad))
    m = await gw.recv_json(ws)
    tap.ok("invalid telemetry is nacked with path and seq",
           m.get("type") == "nack" and m.get("seq") == 1005 and m.get("path") == "battery.soc"
           and "100" in m.get("reason", ""), m)
    await ws.send(json.dumps(packet("dev_b", 1006)))
    m = await gw.recv_json(ws)
    tap.ok("a packet for another device is nacked",
           m.get("type") == "nack" and m.get("seq") == 1006 and m.get("path") == "device_id", m)
    await ws.send(json.dumps({"type": "subscribe", "devices": "*"}))
    m = await gw.recv_json(ws)
    tap.ok("a dashboard message from a device is nacked", m.get("type") == "nack", m)
    await ws.send(json.dumps({"type": "command_result", "command_id": "nope", "status": "completed",
                              "timestamp": gw.iso(now)}))
    # --- backfill batch with one bad packet
    pk = [packet("dev_a", 900 + i, now - 60000 + i * 1000, backfill=True) for i in range(4)]
    pk[2]["grid"]["frequency"] = "fifty"
    await ws.send(json.dumps({"type": "telemetry_batch", "packets": pk}))
    nack = None
    got = set()
    end = time.time() + 10
    while (not nack or not {900, 901, 903} <= got) and time.time() < end:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m["type"] == "nack":
            nack = m
        elif m["type"] == "ack":
            for lo, hi in m["ranges"]:
                got.update(range(lo, hi + 1))
    tap.ok("batch: the bad packet is nacked by seq and path",
           nack and nack.get("seq") == 902 and nack.get("path") == "grid.frequency", nack)
    tap.ok("batch: the good packets are acked", {900, 901, 903} <= got and 902 not in got, got)
    tap.eq("batch: the good packets are stored, flagged backfill",
           env.psql("SELECT count(*) FROM telemetry WHERE device_id='dev_a' AND seq BETWEEN 900 "
                    "AND 903 AND backfill")[0][0], "3")

    # --- fragmented message through the raw client, after a newer-wins check
    import websockets
    ws2 = await env.device("dev_a", tok["dev_a"])
    await asyncio.wait_for(ws2.recv(), 5)
    try:
        await asyncio.wait_for(ws.recv(), 5)
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.exceptions.ConnectionClosed:
        pass
    tap.eq("the older connection of a device is closed with 4001", ws.close_code, 4001)
    await ws2.send(json.dumps(packet("dev_a", 1010)))
    tap.ok("the newer connection works", 1010 in await gw.acked(ws2, [1010]))
    await ws2.close()


def raw_tests(env, tok):
    auth = {"Authorization": "Bearer " + tok["dev_c"]}
    # --- fragmented text message: reassembled and processed
    st, h, r = gw.raw_upgrade(env, "/ws/device/dev_c", auth)
    tap.eq("raw upgrade answers 101", st, 101)
    json.loads(r.recv_text())  # welcome
    text = json.dumps(packet("dev_c", 1)).encode()
    a, b = len(text) // 3, 2 * len(text) // 3
    r.send(gw.frame(1, text[:a], fin=False) + gw.frame(0, text[a:b], fin=False))
    r.send(gw.frame(9, b"ping in the middle"))  # control frames may interleave
    r.send(gw.frame(0, text[b:], fin=True))
    m = None
    end = time.time() + 10
    while time.time() < end:
        op, p = r.recv()
        if op == 1:
            m = json.loads(p)
            if m.get("type") == "ack":
                break
    tap.ok("a fragmented message is reassembled and acked", m and m.get("type") == "ack" and
           [1, 1] in m["ranges"], m)
    # --- invalid UTF-8
    r.send(gw.frame(1, b'{"device_id": "\xc3\x28"}'))
    tap.eq("invalid UTF-8 closes with 1007", r.recv_close(), 1007)
    r.s.close()

    # --- binary frame
    st, h, r = gw.raw_upgrade(env, "/ws/device/dev_c", auth)
    r.recv_text()
    r.send(gw.frame(2, b"\x00\x01binary"))
    tap.eq("a binary message closes with 1008", r.recv_close(), 1008)
    r.s.close()

    # --- oversized message (device limit 64 KiB)
    st, h, r = gw.raw_upgrade(env, "/ws/device/dev_c", auth)
    r.recv_text()
    big = json.dumps(packet("dev_c", 2, pad="x" * 70000)).encode()
    try:
        r.send(gw.frame(1, big))
    except OSError:
        pass
    tap.eq("a message over 64 KiB closes with 1009", r.recv_close(), 1009)
    r.s.close()
    # ... and in fragments that add up to too much
    st, h, r = gw.raw_upgrade(env, "/ws/device/dev_c", auth)
    r.recv_text()
    try:
        for i in range(10):
            r.send(gw.frame(1 if i == 0 else 0, b"x" * 10000, fin=False))
    except OSError:
        pass
    tap.eq("fragments adding up to over 64 KiB close with 1009", r.recv_close(), 1009)
    r.s.close()

    # --- unmasked client frame is a protocol error
    st, h, r = gw.raw_upgrade(env, "/ws/device/dev_c", auth)
    r.recv_text()
    r.send(gw.frame(1, b"{}", mask=False))
    tap.eq("an unmasked client frame closes with 1002", r.recv_close(), 1002)
    r.s.close()

    # --- bad upgrade requests
    def status_of(path, headers):
        st, h, r = gw.raw_upgrade(env, path, headers)
        if r:
            r.s.close()
        return st

    tap.eq("missing Sec-WebSocket-Key: 400",
           status_of("/ws/device/dev_c", dict(auth, **{"Sec-WebSocket-Key": None})), 400)
    tap.eq("Sec-WebSocket-Version 8: 426",
           status_of("/ws/device/dev_c", dict(auth, **{"Sec-WebSocket-Version": "8"})), 426)
    tap.eq("no Upgrade header: 400",
           status_of("/ws/device/dev_c", dict(auth, **{"Upgrade": None})), 400)
    tap.eq("bad device id in the path: 404", status_of("/ws/device/bad%20id", auth), 404)
    tap.eq("unknown WebSocket path: 404", status_of("/ws/other", auth), 404)

    # --- malformed HTTP
    s = env.raw()
    s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    st, h, rest = gw.read_http_head(s)
    tap.eq("malformed HTTP: 400", st, 400)
    s.close()
    s = env.raw()
    s.sendall(b"GET /ws/device/dev_c HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 20000 +
              b"\r\n\r\n")
    st, h, rest = gw.read_http_head(s)
    tap.eq("oversized HTTP header: 431", st, 431)
    s.close()
    # A client that connects and says nothing (not even a TLS hello) is cut
    # off at the handshake deadline (2 s in this suite).
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    t0 = time.time()
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    tap.ok("a silent client is closed at the TLS handshake deadline",
           data == b"" and time.time() - t0 < 8, (data, time.time() - t0))
    s.close()


async def auth_tests(env, tok):
    await expect_refused(env, "no token: 401", "dev_a", None, 401)
    await expect_refused(env, "wrong token: 401", "dev_a", "0" * 64, 401)
    await expect_refused(env, "token of device A on device B's path: 401", "dev_b",
                         tok["dev_a"], 401)
    await expect_refused(env, "unknown device: 401", "ghost", tok["dev_a"], 401)
    rc, out, err = env.emsctl("device", "revoke", "dev_r")
    tap.eq("emsctl device revoke", rc, 0)
    await expect_refused(env, "revoked device: 403", "dev_r", tok["dev_r"], 403)


async def revoke_tests(env, tok):
    import websockets
    ws = await env.device("dev_live", tok["dev_live"])
    await asyncio.wait_for(ws.recv(), 5)
    rc, out, err = env.emsctl("device", "revoke", "dev_live")
    t0 = time.time()
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.exceptions.ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        pass
    tap.eq("revoking closes the live connection with 4003", ws.close_code, 4003)
    tap.ok("... within the re-check interval", time.time() - t0 < 5, time.time() - t0)

    ws = await env.device("dev_rot", tok["dev_rot"])
    await asyncio.wait_for(ws.recv(), 5)
    rc, out, err = env.emsctl("device", "rotate", "dev_rot")
    newtok = out.strip()
    tap.ok("emsctl device rotate prints a new token", rc == 0 and len(newtok) == 64, err)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except (websockets.exceptions.ConnectionClosed, asyncio.TimeoutError):
        pass
    tap.eq("rotating closes the live connection with 4003", ws.close_code, 4003)
    await expect_refused(env, "the old token is refused after rotation", "dev_rot",
                         tok["dev_rot"], 401)
    ws = await env.device("dev_rot", newtok)
    w = json.loads(await asyncio.wait_for(ws.recv(), 5))
    tap.eq("the new token is accepted", w.get("type"), "welcome")
    await ws.close()


async def rate_tests(env, tok):
    import websockets
    ws = await env.device("dev_rate", tok["dev_rate"])
    await asyncio.wait_for(ws.recv(), 5)
    for i in range(40):
        try:
            await ws.send(json.dumps(packet("dev_rate", i)))
        except websockets.exceptions.ConnectionClosed:
            break
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except (websockets.exceptions.ConnectionClosed, asyncio.TimeoutError):
        pass
    tap.eq("more than the burst at once closes with 4008", ws.close_code, 4008)


async def acks_until_close(ws, timeout=10):
    """Reads until the gateway closes `ws`; returns (seqs acked, close code or None)."""
    import websockets
    acks = set()
    try:
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if m.get("type") == "ack":
                for lo, hi in m["ranges"]:
                    acks.update(range(lo, hi + 1))
    except websockets.exceptions.ConnectionClosed:
        return acks, ws.close_code
    except asyncio.TimeoutError:
        return acks, None


async def ack_messages(ws, want, timeout=10):
    """Reads until every seq in `want` is acked; returns [(time, ranges)] per ack message."""
    got, msgs = set(), []
    end = time.time() + timeout
    while not set(want) <= got and time.time() < end:
        try:
            m = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, end - time.time())))
        except asyncio.TimeoutError:
            break
        if m.get("type") == "ack":
            msgs.append((time.time(), m["ranges"]))
            for lo, hi in m["ranges"]:
                got.update(range(lo, hi + 1))
    return msgs, got


async def ack_delay_tests(env, tok):
    """ack_delay_ms: one ack message per device per interval, a backlog at
    once, and held acks sent before a shutdown closes the device."""
    env.stop_gateway()
    env.start_gateway(ack_delay_ms=1500, ack_batch=5)
    ws = await env.device("plain_1", tok)
    await asyncio.wait_for(ws.recv(), 5)  # welcome
    now = int(time.time() * 1000)
    t0 = time.time()
    await ws.send(json.dumps(packet("plain_1", 100, now)))
    msgs, got = await ack_messages(ws, [100])
    tap.ok("ack_delay_ms: the first packet after a quiet spell is acked at once",
           100 in got and msgs[0][0] - t0 < 1.2, (msgs, time.time() - t0))
    first = msgs[0][0] if msgs else time.time()
    for i, seq in enumerate((101, 102, 103)):
        await ws.send(json.dumps(packet("plain_1", seq, now + 300 * (i + 1))))
        await asyncio.sleep(0.3)
    msgs, got = await ack_messages(ws, [101, 102, 103])
    tap.ok("ack_delay_ms: packets committed within the interval share one ack message, "
           "sent when the interval is over",
           got >= {101, 102, 103} and len(msgs) == 1 and msgs[0][1] == [[101, 103]] and
           1.4 <= msgs[0][0] - first < 2.6, [(round(t - first, 2), r) for t, r in msgs])
    t0 = time.time()
    for seq in range(200, 210):
        await ws.send(json.dumps(packet("plain_1", seq, now + 2000 + seq)))
    msgs, got = await ack_messages(ws, range(200, 210))
    tap.ok("ack_delay_ms: a backlog of ack_batch seqs is acked without waiting",
           got >= set(range(200, 210)) and msgs and msgs[0][0] - t0 < 1.2,
           ([(round(t - t0, 2), r) for t, r in msgs]))
    # Held at SIGTERM: sent before the device is closed with 1001.
    await ws.send(json.dumps(packet("plain_1", 300, now + 4000)))
    await asyncio.sleep(0.4)  # committed, and held (the last ack was just sent)
    env.gw.send_signal(signal.SIGTERM)
    acks, code = await acks_until_close(ws)
    tap.ok("ack_delay_ms: a held ack is sent before the shutdown closes the device (1001)",
           300 in acks and code == 1001, (sorted(acks), code))
    tap.eq("ack_delay_ms: the gateway exits 0", env.gw.stop(), 0)
    env.start_gateway(handshake_timeout_ms=2000)


async def plain_tests():
    env = gw.Env(tap, tls=False)
    try:
        env.start_pg()
        t = env.add_device("plain_1")
        env.start_dbwriter()
        t2 = env.add_device("plain_2")
        env.start_gateway(handshake_timeout_ms=2000, ping_interval_s=1, idle_timeout_s=2,
                          max_connections=2)
        ws = await env.device("plain_1", t)
        w = json.loads(await asyncio.wait_for(ws.recv(), 5))
        tap.eq("plain ws:// handshake (tls = off)", w.get("type"), "welcome")
        st, h, b = env.http("GET", "/healthz")
        tap.ok("plain HTTP: security headers, but no Strict-Transport-Security",
               h.get("x-frame-options") == "DENY" and "content-security-policy" in h and
               "strict-transport-security" not in h, h)
        await ws.send(json.dumps(packet("plain_1", 5)))
        tap.ok("plain: telemetry acked", 5 in await gw.acked(ws, [5]))

        # Keepalive: a peer that never answers pings is dropped after the
        # idle timeout (2 s here); one that answers stays.
        def silent_peer():
            st, h, r = gw.raw_upgrade(env, "/ws/device/plain_2",
                                      {"Authorization": "Bearer " + t2})
            r.recv_text()
            t0 = time.time()
            pings = 0
            r.s.settimeout(10)
            try:
                while True:
                    op, p = r.recv()
                    if op == 9:
                        pings += 1
            except (EOFError, OSError):
                pass
            r.s.close()
            return pings, time.time() - t0

        # In a thread, so the event loop keeps answering the other
        # connection's pings meanwhile.
        pings, took = await asyncio.to_thread(silent_peer)
        tap.ok(f"a silent peer gets pings, then is dropped at the idle timeout ({took:.1f} s)",
               pings >= 1 and 1.5 < took < 6, (pings, took))
        await asyncio.sleep(1.5)
        tap.ok("a peer that answers pings stays connected past the idle timeout",
               ws.open, ws.close_code)

        # Connection limit: max_connections = 2.
        ws2 = await env.device("plain_2", t2)
        await asyncio.wait_for(ws2.recv(), 5)
        await expect_refused(env, "over max_connections: 429", "plain_2", t2, 429)
        await ws2.close()

        # SIGTERM with a device connected: its packet is still acked, then
        # the close frame says 1001.
        now = int(time.time() * 1000)
        await ws.send(json.dumps(packet("plain_1", 6, now)))
        await asyncio.sleep(0.05)
        env.gw.send_signal(signal.SIGTERM)
        acks, code = await acks_until_close(ws)
        tap.ok("SIGTERM: what the device sent last is committed and acked first", 6 in acks, acks)
        tap.eq("SIGTERM: devices get close code 1001", code, 1001)
        tap.eq("SIGTERM: the gateway exits 0", env.gw.stop(), 0)
        gw.wait_for(lambda: int(env.psql("SELECT count(*) FROM device_sessions WHERE "
                                          "device_id='plain_1' AND disconnected_at IS NOT NULL")
                                [0][0]) > 0, 5)
        tap.ok("SIGTERM: the session's end is stored before the gateway exits",
               env.psql("SELECT reason FROM device_sessions WHERE device_id='plain_1' "
                        "ORDER BY connected_at DESC LIMIT 1")[0][0] == "gateway shutting down")
        env.start_gateway(handshake_timeout_ms=2000)
        s = env.raw()
        s.settimeout(10)
        t0 = time.time()
        data = s.recv(100)
        tap.ok("a silent client is closed at the handshake deadline",
               data == b"" and time.time() - t0 < 8, (data, time.time() - t0))
        s.close()
        await ack_delay_tests(env, t)
    finally:
        rc = env.close()
        tap.eq("plain gateway exits 0 after SIGTERM", rc, 0)


async def main():
    env = gw.Env(tap, tls=True)
    try:
        env.start_pg()
        tok = {d: env.add_device(d) for d in
               ("dev_a", "dev_b", "dev_c", "dev_r", "dev_live", "dev_rot", "dev_rate")}
        tap.ok("emsctl device add prints a 64-hex token",
               all(len(t) == 64 and int(t, 16) >= 0 for t in tok.values()))
        env.start_dbwriter()
        env.start_gateway(handshake_timeout_ms=2000)
        await device_tests(env, tok)
        raw_tests(env, tok)
        await auth_tests(env, tok)
        await revoke_tests(env, tok)
        await rate_tests(env, tok)
        st, h, b = env.http("GET", "/healthz")
        tap.eq("the gateway is healthy after all of that", st, 200)
        st, h, b = env.http("GET", "/metrics")
        text = b.decode()
        tap.ok("metrics count refusals and validation failures",
               'ems_gateway_upgrades_refused_total{endpoint="device"}' in text and
               "ems_gateway_validation_failures_total" in text, text[:300])
        sessions = env.psql("SELECT count(*) FROM device_sessions WHERE device_id = 'dev_a' "
                            "AND disconnected_at IS NOT NULL")
        tap.ok("device sessions are recorded", int(sessions[0][0]) >= 1, sessions)
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, f"{e!r}")
        tap.note(traceback.format_exc())
    finally:
        rc = env.close()
        tap.eq("TLS gateway exits 0 after SIGTERM (no leaks under ASan)", rc, 0)
    await plain_tests()


asyncio.run(main())
tap.done()
