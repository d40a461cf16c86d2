#!/usr/bin/python3
"""60-edge-link: the edge's cloud link under everything a network does wrong.

The real ems-edge against a fake cloud on loopback (docs/edge-daemon.md,
"The link"): a server certificate from another CA and one for another host
name are refused (no telemetry, a clear log line, retries with growing
delays); a refused token is named; a dropped TCP connection and a cloud that
goes away and comes back are reconnected with backoff and the reconnect
count is logged; malformed, unknown and wrong-direction messages are logged
and ignored; oversized, binary and broken frames close the link with the
right code and the edge reconnects; a silent peer is noticed by the
keepalive within seconds. The daemon never crashes and exits cleanly.
"""
import asyncio
import importlib.util
import json
import os
import re
import subprocess
import time

spec = importlib.util.spec_from_file_location(
    "edgelib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "60-edge-lib.py"))
lib = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lib)


def wrong_name_cert(certs):
    """A certificate from the test CA, but for other.example only."""
    key, csr, crt, ext = (os.path.join(certs, "wrongname." + x) for x in ("key", "csr", "crt", "ext"))
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=other.example"],
                   check=True, capture_output=True)
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:other.example\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(certs, "ca.crt"),
                    "-CAkey", os.path.join(certs, "ca.key"), "-CAcreateserial", "-days", "2",
                    "-out", crt, "-extfile", ext], check=True, capture_output=True)


def attempt_delays(edge):
    """The backoff delays the edge logged, in order, as (attempt, seconds)."""
    out = []
    for s in edge.log(r"uplink: next attempt in"):
        m = re.search(r"next attempt in ([0-9.]+) s \(attempt (\d+)", s)
        if m:
            out.append((int(m.group(2)), float(m.group(1))))
    return out


async def refused_tls(tap, env, cert, what, pattern):
    cloud = await env.cloud(cert=cert).start()
    edge = await env.edge(f"edge-{cert}").start(cloud.url(), env.token_file, ca=env.ca, status=False,
                                                buffer=os.path.join(env.tmp, f"buf-{cert}"))
    await asyncio.sleep(7)
    tap.ok(f"{what}: no connection is made, no telemetry sent", cloud.conns == 0 and not cloud.msgs,
           f"{cloud.conns} connections, {len(cloud.msgs)} messages")
    lines = edge.log(pattern)
    tap.ok(f"{what}: the log says why ({pattern})", lines, edge.tail(6))
    delays = attempt_delays(edge)
    ok = len(delays) >= 2 and all(d <= min(60.0, 1.0 * 2 ** (a - 2)) + 0.05 for a, d in delays)
    tap.ok(f"{what}: retried with backoff (delays within 1 s doubling)", ok, delays)
    rc = await edge.stop()
    tap.eq(f"{what}: the edge still exits cleanly", rc, 0)
    await cloud.stop()


async def main(tap):
    env = lib.Env(tap, "60-edge-link")
    wrong_name_cert(env.certs)
    try:
        # -------------------------------------------------- TLS refusals
        await refused_tls(tap, env, "other-server", "a server certificate from another CA",
                          r"TLS failure: .*(verif|certificate|CA)")
        await refused_tls(tap, env, "wrongname", "a server certificate for another host name",
                          r"TLS failure: .*(name|CN|verif)")

        # -------------------------------------------------- wrong token
        cloud = await env.cloud().start()
        cloud.token = "0" * 64
        edge = await env.edge("edge-401").start(cloud.url(), env.token_file, ca=env.ca, status=False,
                                                buffer=os.path.join(env.tmp, "buf-401"))
        lines = await edge.wait_log(r"HTTP 401 \(the device token was refused\)", 5)
        tap.ok("a refused token is logged as HTTP 401, nothing is sent", lines and not cloud.msgs, edge.tail(4))
        cloud.token = env.token  # the operator fixes the gateway: the edge gets in by itself
        ps = await lib.next_packets(cloud, 1, 8)
        tap.ok("once the token is accepted the edge connects on its next attempt", ps, edge.tail(4))
        await edge.stop()
        await cloud.stop()

        # -------------------------------------------------- the main edge
        cloud = await env.cloud().start()
        edge = await env.edge().start(cloud.url(), env.token_file, ca=env.ca,
                                      extra=["--set", "ws_ping_s=1", "--set", "ws_timeout_s=3",
                                             # links here drop within seconds, so the
                                             # backoff would climb to a minute
                                             "--set", "reconnect_max_s=2"])
        ok = await lib.next_packets(cloud, 2, 6)
        tap.ok("connected over TLS with the test CA; packets flow", ok, edge.tail(5))

        # A TCP drop without a close frame.
        t0 = time.monotonic()
        cloud.drop()
        lost = await edge.wait_log(r"link lost after .*without a close frame", 5, t0)
        back = await cloud.wait(lambda: cloud.conns >= 2, 5)
        tap.ok("a dropped TCP connection is noticed and logged", lost, edge.tail(4))
        tap.ok("and reconnected within the first backoff ceiling (1 s) plus the handshake",
               back and cloud.conn_times[1] - t0 < 2.5, f"{cloud.conn_times} t0={t0}")
        tap.ok("the reconnect count is logged", await edge.wait_log(r"link ready .*reconnects 1\)", 3, t0),
               edge.tail(4))

        # The cloud goes away (1001) and comes back on the same port; a
        # command sent just before completes while it is away.
        await cloud.send(lib.cmd("c_offline", "SET_MODE", target_mode="MANUAL_IDLE"))
        t0 = time.monotonic()
        await cloud.stop()
        await asyncio.sleep(4)
        fails = edge.log(r"attempt \d+ failed", t0)
        tap.ok("while the cloud is away attempts fail and are logged", fails, edge.tail(4))
        await cloud.start()
        back = await cloud.wait(lambda: cloud.conns >= 3, 12)
        tap.ok("the cloud comes back: the edge reconnects by itself", back, edge.tail(6))
        delays = [d for a, d in attempt_delays(edge)]
        # "link ready" is logged after the welcome, a moment after the
        # cloud counted the connection: wait for it, as above.
        tap.ok("the delays stayed within full-jitter ceilings and the count is in the log",
               await edge.wait_log(r"reconnects 2\)", 3, t0), (delays, edge.tail(4)))
        ps = await lib.next_packets(cloud, 2, 5)
        tap.ok("telemetry flows again after the reconnect", ps, edge.tail(4))
        done = [m for m in cloud.of("command-result") if m.obj["command_id"] == "c_offline"
                and m.obj["status"] == "completed"]
        tap.ok("a command result decided while the cloud was away is sent after the reconnect",
               done and done[0].conn == cloud.conns and done[0].obj["timestamp"] < ps[0]["timestamp"],
               [(m.conn, m.obj) for m in cloud.of("command-result")][-3:])

        # Malformed and unexpected messages: logged, ignored, link stays.
        conn = cloud.conns
        t0 = time.monotonic()
        for text in ["not json", "[1, 2]", '{"type":"bogus"}', '{"type":"ack","ranges":[[5,1]]}',
                     json.dumps({"type": "nack", "reason": ""}), '{"a":1,"a":2}',
                     json.dumps(lib.cmd("x", "SET_MODE", target_mode="AUTO"))[:-1] + ',"command_id":"y"}',
                     json.dumps({"type": "welcome", "device_id": lib.DEV, "server_time": "2026-01-01T00:00:00Z"}),
                     json.dumps({"device_id": lib.DEV, "timestamp": "x"})]:
            await cloud.send(text)
        ps = await lib.next_packets(cloud, 2, 5)
        tap.ok("malformed and unexpected messages do not close the link",
               ps and cloud.conns == conn and edge.alive(), f"conns {cloud.conns} vs {conn}")
        bad = edge.log(r"uplink: (bad message from the gateway|invalid (ack|nack) ignored|a \S+ message .* is not for a device)", t0)
        tap.ok("each is logged (rate-limited)", len(bad) >= 5, "\n".join(bad))
        st, body = await edge.http("GET", "/metrics")
        m = re.search(r"ems_edge_messages_bad_total (\d+)", body)
        tap.ok("and counted in ems_edge_messages_bad_total", m and int(m.group(1)) >= 7, m.group(0) if m else body[:200])

        # Oversized: closed with 1009, then reconnected.
        async def closed_with(name, action, code):
            n, c0, t0 = len(cloud.closes), cloud.conns, time.monotonic()
            await action()
            await cloud.wait(lambda: len(cloud.closes) > n, 5)
            got = cloud.closes[n][1] if len(cloud.closes) > n else None
            tap.eq(f"{name}: the edge closes the link with {code}", got, code)
            back = await cloud.wait(lambda: cloud.conns > c0, 6)
            ps = await lib.next_packets(cloud, 1, 4)
            tap.ok(f"{name}: the edge reconnects and sends again", back and ps and edge.alive(), edge.tail(4))
            return t0

        async def oversized():
            await cloud.send("x" * 100000)

        async def binary():
            await cloud.ws.send(b"\x00\x01binary")

        async def broken():
            cloud.raw(b"\x8f\x00")  # FIN + reserved opcode 0xF

        await closed_with("an oversized message (100 kB)", oversized, 1009)
        await closed_with("a binary message", binary, 1008)
        await closed_with("a frame with a reserved opcode", broken, 1002)

        # A silent peer: the cloud stops reading; pings go unanswered.
        t0, c0 = time.monotonic(), cloud.conns
        cloud.ws.transport.pause_reading()
        lost = await edge.wait_log(r"link lost after .*timed out", 6, t0)
        tap.ok("a peer that went silent is noticed by the keepalive within ws_timeout_s (3 s) + 1",
               lost and lines_time(edge, r"link lost after .*timed out", t0) - t0 < 4.5, edge.tail(4))
        back = await cloud.wait(lambda: cloud.conns > c0, 6)
        tap.ok("and replaced by a new link", back, edge.tail(4))

        s = await edge.status()
        tap.ok("/status counts attempts, reconnects and drops",
               s and s["link"]["reconnects"] >= 5 and s["link"]["drops"] >= 5, s and s["link"])
        rc = await edge.stop()
        tap.eq("after all that the edge exits cleanly (0)", rc, 0)
        tap.ok("no sanitizer report", not edge.log(r"ERROR: (Address|Leak)Sanitizer|runtime error"),
               edge.tail(20))
        await cloud.stop()
    finally:
        await env.close()


def lines_time(edge, pattern, since):
    r = re.compile(pattern)
    for t, s in edge.lines:
        if t >= since and r.search(s):
            return t
    return float("inf")


lib.run(main)
