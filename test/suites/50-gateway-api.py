#!/usr/bin/python3
# 50-gateway-api: the REST API, static files and operations of the real
# ems-gateway with the real ems-dbwriter and PostgreSQL (docs/api.md).
#
# Proves: static files with their types and no path traversal; the security
# headers (CSP, X-Frame-Options, HSTS...) on every answer; only AEAD suites
# with forward secrecy over TLS 1.2; 404/405/413;
# the devices list (online state, limits, newest packet); telemetry history
# raw, downsampled (gaps stay gaps) and as CSV, and its parameter errors;
# device sessions; login throttling; /healthz and /metrics; while the DB
# writer is down nothing is acked and REST answers 503, and after it is
# back the held packets are stored and acked; SIGHUP loads a new
# certificate without dropping a live connection.
import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
packet = gw.packet


def static_tests(env):
    st, h, b = env.http("GET", "/")
    tap.ok("GET / serves index.html as HTML, revalidated",
           st == 200 and h.get("content-type", "").startswith("text/html") and
           h.get("cache-control") == "no-cache" and b.startswith(b"<!doctype html>"), (st, h))
    st, h, b = env.http("GET", "/assets/app.js")
    tap.ok("a script is served as text/javascript",
           st == 200 and h.get("content-type", "").startswith("text/javascript") and
           h.get("x-content-type-options") == "nosniff", (st, h))
    security_header_tests(env)
    st, h, b = env.http("HEAD", "/assets/app.js")
    tap.ok("HEAD answers without a body", st == 200 and b == b"", (st, b))
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt",
                 "/%2E%2E/secret.txt", "/assets/..%2f..%2fsecret.txt", "/..%5csecret.txt",
                 "/..\\secret.txt", "/index.html%00.js", "/nope.html"):
        st, h, b = env.http("GET", path)
        tap.ok(f"GET {path}: 404", st == 404 and b"secret" not in b, (st, b[:80]))


def check_security_headers(what, h, tls):
    """The headers every answer carries (gw_static_security_headers)."""
    csp = h.get("content-security-policy", "")
    d = {p.strip().split(" ")[0]: p.strip()[len(p.strip().split(" ")[0]):].split()
         for p in csp.split(";") if p.strip()}
    tap.ok(f"{what}: CSP allows only same-origin scripts, no inline script, no framing",
           d.get("default-src") == ["'none'"] and d.get("script-src") == ["'self'"] and
           d.get("connect-src") == ["'self'"] and d.get("frame-ancestors") == ["'none'"] and
           "'unsafe-inline'" not in d.get("style-src", []) and
           not any("'unsafe-eval'" in v for v in d.values()), csp)
    tap.ok(f"{what}: X-Frame-Options DENY, nosniff, Referrer-Policy",
           h.get("x-frame-options") == "DENY" and h.get("x-content-type-options") == "nosniff" and
           h.get("referrer-policy") == "no-referrer", h)
    hsts = h.get("strict-transport-security")
    if tls:
        tap.eq(f"{what}: HSTS over TLS", hsts, "max-age=31536000")
    else:
        tap.eq(f"{what}: no HSTS over plain HTTP", hsts, None)


def security_header_tests(env):
    for path in ("/", "/assets/app.js", "/api/devices", "/healthz", "/nope.html"):
        st, h, b = env.http("GET", path)
        check_security_headers(f"GET {path} ({st})", h, True)
    # the server's own refusals carry them too
    st, h, b = env.http("GET", "/" + "a" * 20000)
    check_security_headers(f"a URL over the limit ({st})", h, True)


def tls_suite_tests(env):
    """Only ECDHE with AES-GCM or ChaCha20-Poly1305, TLS 1.2 at least."""
    if not shutil.which("openssl"):
        tap.note("skip: openssl(1) not installed")
        return

    def hs(*args):
        r = subprocess.run(["openssl", "s_client", "-connect", f"localhost:{env.port}",
                            "-servername", "localhost", *args],
                           input=b"", capture_output=True, timeout=20)
        out = r.stdout.decode(errors="replace")
        return r.returncode == 0 and "Cipher is (NONE)" not in out, out
    for suite, ok in (("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256", True),
                      ("ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305", True),
                      ("ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256", False),
                      ("ECDHE-RSA-AES256-SHA:ECDHE-ECDSA-AES256-SHA", False),
                      ("ECDHE-ECDSA-CAMELLIA128-SHA256:ECDHE-RSA-CAMELLIA128-SHA256", False),
                      ("ECDHE-ECDSA-AES128-CCM8", False),
                      ("AES128-GCM-SHA256", False)):
        got, out = hs("-tls1_2", "-cipher", suite + ":@SECLEVEL=0")
        tap.ok(f"TLS 1.2 client offering only {suite}: {'accepted' if ok else 'refused'}",
               got == ok, out[-300:])
    got, out = hs("-tls1_1", "-cipher", "ALL:@SECLEVEL=0")
    tap.ok("a TLS 1.1 client is refused", not got, out[-300:])


def http_error_tests(env, cookie):
    st, h, b = env.http("GET", "/api/nope", cookie=cookie)
    tap.eq("unknown API path: 404", st, 404)
    st, h, b = env.http("DELETE", "/api/devices", cookie=cookie)
    tap.ok("DELETE on a GET resource: 405 with Allow", st == 405 and "GET" in h.get("allow", ""),
           (st, h))
    st, h, b = env.http("GET", "/api/login")
    tap.eq("GET /api/login: 405", st, 405)
    st, h, b = env.http("POST", "/api/login", "x" * 70000,
                        headers={"Content-Type": "application/json"})
    tap.eq("a body over 64 KiB: 413", st, 413)
    st, h, b = env.http("GET", "/api/devices")
    tap.eq("REST without a session: 401", st, 401)


async def device_state_tests(env, cookie, tok):
    ws = await env.device("h_1", tok["h_1"])
    await asyncio.wait_for(ws.recv(), 5)
    await ws.send(json.dumps({"type": "device_info", "firmware": "ems-edge test",
                              "capacity_wh": 10000,
                              "limits": {"max_charge_w": 5000, "max_discharge_w": 4000,
                                         "soc_min": 10, "soc_max": 95}}))
    now = int(time.time() * 1000)
    # Two runs of packets 3 minutes apart: the 1-minute buckets between
    # them must be absent.
    base = (now // 60000) * 60000 - 10 * 60000
    seqs = []
    for i in range(5):
        await ws.send(json.dumps(packet("h_1", i + 1, base + i * 1000, battery={
            "voltage": 50.0, "current": 2.0, "power": 100.0 + i, "soc": 50.0 + i})))
        seqs.append(i + 1)
    for i in range(3):
        await ws.send(json.dumps(packet("h_1", 10 + i, base + 4 * 60000 + i * 1000)))
        seqs.append(10 + i)
    await gw.acked(ws, seqs)
    st, h, b = env.http("GET", "/api/devices", cookie=cookie)
    devs = {d["device_id"]: d for d in json.loads(b).get("devices", [])}
    d1, d2 = devs.get("h_1", {}), devs.get("h_2", {})
    tap.ok("GET /api/devices: the connected device is online with its limits and packet",
           st == 200 and d1.get("online") is True and d1.get("limits", {}).get("soc_max") == 95
           and d1.get("firmware") == "ems-edge test" and d1.get("telemetry", {}).get("seq") == 12
           and d1.get("connected_since") and d1.get("last_seen"), d1)
    tap.ok("... a never-connected device is offline without telemetry",
           d2.get("online") is False and d2.get("telemetry") is None, d2)
    st, h, b = env.http("GET", "/api/devices/h_1", cookie=cookie)
    tap.ok("GET /api/devices/{id}", st == 200 and json.loads(b).get("device_id") == "h_1", b[:200])
    body = b.decode() if isinstance(b, bytes) else b
    tap.ok("... numbers read as the device sent them (53.2, not 53.200000000000003)",
           '"voltage":53.2,' in body and '"power":558.6,' in body
           and not re.search(r"\d\.\d{14,}", body), body[:400])
    st, h, b = env.http("GET", "/api/devices/ghost", cookie=cookie)
    tap.eq("GET /api/devices/ghost: 404", st, 404)

    frm, to = gw.iso(base - 1000), gw.iso(base + 10 * 60000)
    st, h, b = env.http("GET", f"/api/devices/h_1/telemetry?from={frm}&to={to}&resolution=raw",
                        cookie=cookie)
    ans = json.loads(b)
    pts = ans.get("points", [])
    tap.ok("raw history: every packet, in order, with its values",
           st == 200 and [p["seq"] for p in pts] == seqs and pts[0]["soc"] == 50 and
           pts[1]["battery_power"] == 101 and pts[0]["count"] == 1 and pts[0]["state"] ==
           "CHARGING" and pts[0]["t"] == gw.iso(base), (st, pts[:2]))
    # A raw answer larger than 1 MiB (the net layer's default output cap)
    # must arrive whole: 4,000 points of an hour-old stretch, made in SQL.
    t0 = base - 3 * 3600 * 1000
    env.psql("INSERT INTO telemetry (ts, received_at, seq, battery_voltage, battery_current, "
             "battery_power, battery_soc, grid_voltage, grid_power, grid_frequency, error_flags, "
             "state, mode, device_id) SELECT to_timestamp((%d + g * 1000) / 1000.0), now(), "
             "100000 + g, 53.2, 10.5, 558.6, 85, 230.1, -200, 50, 0, 'CHARGING', 'AUTO', 'h_2' "
             "FROM generate_series(0, 3999) g" % t0)
    st, h, b = env.http("GET", "/api/devices/h_2/telemetry?from=%s&to=%s&resolution=raw"
                        % (gw.iso(t0), gw.iso(t0 + 4000 * 1000)), cookie=cookie)
    pts = json.loads(b).get("points", []) if st == 200 else []
    tap.ok("a raw history answer over 1 MiB arrives whole (4000 points)",
           st == 200 and len(b) > (1 << 20) and len(pts) == 4000, (st, len(b), len(pts)))
    # Rows older than the DB writer's rollup watermark reach the 1-minute
    # rollup at its next step (docs/storage.md): poll for a while.
    end = time.time() + 30
    while True:
        st, h, b = env.http("GET",
                            f"/api/devices/h_1/telemetry?from={frm}&to={to}&resolution=1m",
                            cookie=cookie)
        ans = json.loads(b)
        pts = ans.get("points", [])
        if st != 200 or len(pts) >= 2 or time.time() > end:
            break
        await asyncio.sleep(0.5)
    tap.ok("1-minute buckets: two buckets with their counts, the gap is absent",
           st == 200 and ans.get("bucket_seconds") == 60 and [p["count"] for p in pts] == [5, 3]
           and pts[0]["t"] == gw.iso(base) and pts[1]["t"] == gw.iso(base + 4 * 60000) and
           pts[0]["soc_min"] == 50 and pts[0]["soc_max"] == 54 and pts[0]["soc"] == 52, (st, ans))
    st, h, b = env.http("GET", f"/api/devices/h_1/telemetry?from={frm}&to={to}&format=csv",
                        cookie=cookie)
    lines = b.decode().splitlines()
    tap.ok("CSV: text/csv, a header and one line per packet",
           st == 200 and h.get("content-type", "").startswith("text/csv") and
           lines[0].startswith("t,count,seq") and len(lines) == 1 + len(seqs), (st, lines[:3]))
    for q, name in ((f"from=yesterday&to={to}", "a bad from"),
                    (f"from={to}&to={frm}", "from after to"),
                    (f"from={frm}&to={to}&resolution=5s", "an unknown resolution"),
                    ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "a range over 400 days"),
                    (f"from={frm}&to={to}&format=xml", "format=xml"),
                    (f"from={frm}&to={to}&format=" + "j" * 100, "a format too long to be one")):
        st, h, b = env.http("GET", f"/api/devices/h_1/telemetry?{q}", cookie=cookie)
        tap.eq(f"history with {name}: 400", st, 400)
    st, h, b = env.http("GET", "/api/devices/h_1/sessions", cookie=cookie)
    ss = json.loads(b).get("sessions", [])
    tap.ok("GET /api/devices/{id}/sessions lists the open session",
           st == 200 and ss and ss[0].get("device_id") == "h_1" and ss[0].get("connected_at"),
           b[:300])
    return ws


async def dbwriter_down_tests(env, cookie, ws):
    env.dbw.stop()
    ok = gw.wait_for(lambda: env.http("GET", "/healthz")[0] == 503, 10)
    st, h, b = env.http("GET", "/healthz")
    tap.ok("/healthz says 503 while the DB writer is down",
           ok and json.loads(b).get("dbwriter") == "disconnected", b)
    st, h, b = env.http("GET", "/api/devices", cookie=cookie)
    tap.eq("REST that needs the DB writer: 503", st, 503)
    now = int(time.time() * 1000)
    for i in range(5):
        await ws.send(json.dumps(packet("h_1", 100 + i, now + i)))
    try:
        m = await gw.recv_until(ws, lambda m: m.get("type") == "ack", timeout=1.5)
        tap.ok("nothing is acked while the DB writer is down", False, m)
    except asyncio.TimeoutError:
        tap.ok("nothing is acked while the DB writer is down")
    # The hold is bounded (link_ring = 64 here): what does not fit is
    # neither stored nor acked; the edge keeps it and sends it again.
    for i in range(5, 100):
        await ws.send(json.dumps(packet("h_1", 100 + i, now + i)))
    await asyncio.sleep(0.3)
    st, h, b = env.http("GET", "/metrics")
    tap.ok("packets beyond the bounded hold are counted as not stored",
           "ems_gateway_telemetry_not_stored_total 36" in b.decode() and
           "ems_gateway_dbwriter_held 64" in b.decode(),
           [l for l in b.decode().splitlines() if "not_stored" in l or "held " in l])
    env.start_dbwriter()
    got = await gw.acked(ws, range(100, 164), timeout=20)
    try:
        while True:
            m = await gw.recv_until(ws, lambda m: m.get("type") == "ack", timeout=1)
            for lo, hi in m["ranges"]:
                got.update(range(lo, hi + 1))
    except asyncio.TimeoutError:
        pass
    tap.eq("after it is back, exactly the held packets are stored and acked", got,
           set(range(100, 164)))
    n = env.psql("SELECT count(*), min(seq), max(seq) FROM telemetry WHERE device_id='h_1' "
                 "AND seq BETWEEN 100 AND 199")
    tap.eq("... and they are what PostgreSQL has", n[0], ["64", "100", "163"])
    gw.wait_for(lambda: env.http("GET", "/healthz")[0] == 200, 10)


async def sighup_test(env, ws):
    import ssl
    new = os.path.join(env.dir, "certs2")
    subprocess.run([os.path.join(gw.ROOT, "test/lib/mkcerts.sh"), new], check=True)
    shutil.copy(os.path.join(new, "chain.crt"), os.path.join(env.certs, "chain.crt"))
    shutil.copy(os.path.join(new, "server.key"), os.path.join(env.certs, "server.key"))
    env.gw.send_signal(signal.SIGHUP)
    gw.wait_for(lambda: "SIGHUP: TLS certificate and key reloaded" in env.gw.text(), 5)
    import http.client
    c = http.client.HTTPSConnection("localhost", env.port,
                                    context=env.ssl_ctx(os.path.join(new, "ca.crt")), timeout=5)
    c.request("GET", "/healthz")
    tap.eq("after SIGHUP new connections get the new certificate", c.getresponse().status, 200)
    c.close()
    try:
        c = http.client.HTTPSConnection("localhost", env.port, context=env.ssl_ctx(), timeout=5)
        c.request("GET", "/healthz")
        c.getresponse()
        tap.ok("... and not the old one", False, "the old CA still verifies")
    except ssl.SSLError:
        tap.ok("... and not the old one")
    shutil.copy(os.path.join(new, "ca.crt"), os.path.join(env.certs, "ca.crt"))
    await ws.send(json.dumps(packet("h_1", 200)))
    got = await gw.acked(ws, [200])
    tap.ok("the connection opened before SIGHUP keeps working", 200 in got)


def login_throttle_test(env):
    codes = [env.http("POST", "/api/login", {"username": "ada", "password": "nope-nope"})[0]
             for _ in range(7)]
    tap.ok("repeated failed logins from one address are throttled (429)",
           codes[:5] == [401] * 5 and codes[-1] == 429, codes)


def metrics_test(env):
    st, h, b = env.http("GET", "/metrics")
    t = b.decode()
    want = ["ems_gateway_telemetry_total", 'ems_gateway_connections{endpoint="device"} 1',
            "ems_gateway_committed_records_total", "ems_gateway_dbwriter_up 1",
            'ems_gateway_command_transitions_total{status="queued"}',
            "ems_gateway_query_latency_seconds_bucket"]
    missing = [w for w in want if w not in t]
    tap.ok("/metrics is Prometheus text with the gateway's series",
           st == 200 and h.get("content-type", "").startswith("text/plain") and not missing,
           missing)

    # The DB writer's counters ride along (fetched over the link every 10 s).
    def dbw_rows():
        body = env.http("GET", "/metrics")[2].decode()
        for line in body.splitlines():
            if line.startswith("ems_dbwriter_rows_written_total "):
                return float(line.split()[1])
        return 0.0
    ok = gw.wait_for(lambda: dbw_rows() > 0, 15, step=0.5)
    body = env.http("GET", "/metrics")[2].decode()
    tap.ok("/metrics includes the DB writer's counters (rows written, commit time, backpressure)",
           ok and "ems_dbwriter_commit_ms_max" in body and "ems_dbwriter_paused 0" in body
           and "ems_dbwriter_pg_up 1" in body, [l for l in body.splitlines() if "dbwriter_" in l])


def version_tests():
    for prog in ("ems-gateway", "ems-dbwriter"):
        r = subprocess.run([os.path.join(gw.BUILD, prog), "--version"], capture_output=True,
                           text=True, timeout=10)
        tap.ok(f"{prog} --version prints its release",
               r.returncode == 0 and re.fullmatch(prog + r" \d+\.\d+\.\d+\n", r.stdout),
               (r.returncode, r.stdout, r.stderr))


async def main():
    version_tests()
    env = gw.Env(tap, tls=True)
    try:
        env.start_pg()
        tok = {d: env.add_device(d) for d in ("h_1", "h_2")}
        env.add_user("ada", "operator", "ada-password-1")
        env.start_dbwriter()
        env.start_gateway(login_per_min=5, link_ring=64, link_batch=16, rate_burst=1000,
                          rate_per_s=1000)
        cookie = env.login("ada", "ada-password-1")
        static_tests(env)
        tls_suite_tests(env)
        http_error_tests(env, cookie)
        ws = await device_state_tests(env, cookie, tok)
        metrics_test(env)
        await dbwriter_down_tests(env, cookie, ws)
        await sighup_test(env, ws)
        login_throttle_test(env)
        await ws.close()
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, f"{e!r}")
        tap.note(traceback.format_exc())
    finally:
        rc = env.close()
        tap.eq("gateway exits 0 after SIGTERM", rc, 0)


asyncio.run(main())
tap.done()
