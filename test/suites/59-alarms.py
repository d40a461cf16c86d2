#!/usr/bin/python3
# 59-alarms.py: alarms and their webhooks (issue 16, items 4 and 5;
# docs/alarms.md) on the real binaries: PostgreSQL + ems-dbwriter +
# ems-gateway, devices on their WebSocket, and a local webhook receiver (a
# small Python HTTP server in this process) that checks every signature.
#
# The gateway runs with short settings (debounce 2 s, SoC low 20 % with 5 %
# hysteresis, offline after 3 s, retries 4 with 200 ms backoff, a 4 s
# lease) so the suite takes about a minute. Checked:
#   - a device in ERROR raises one alarm, not before the debounce, with its
#     flags; it stays one alarm while ERROR lasts, and clears afterwards;
#   - a SoC that moves around the threshold (below, then inside the
#     hysteresis band, below again...) raises once and clears only above
#     threshold + hysteresis;
#   - a device offline longer than 3 s raises "offline"; reconnecting clears;
#   - acknowledge: an operator may (200, who and when are stored), a viewer
#     may not (403), a foreign Origin is refused (403), a body that is not
#     JSON is refused (415), an unknown alarm is 404, a second ack changes
#     nothing; the list filters by state and device; history per device;
#   - webhooks: every raise, acknowledgement and clear is POSTed with a
#     valid HMAC-SHA256 signature, in order per device; a receiver that
#     answers 500 gets the same event again (backoff) until it answers 200;
#     after the retry limit the event is dead-lettered and counted in
#     /metrics, and the next events still go out;
#   - kill -9 of the gateway after an alarm is stored but before the webhook
#     got it: the restarted gateway delivers it, and clears the alarm when
#     the device comes back fine (it learns the open alarms from the
#     database when the device connects).
import asyncio
import hashlib
import hmac
import importlib.util
import json
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_spec = importlib.util.spec_from_file_location(
    "gw", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gw)

tap = gw.Tap()
SECRET = b"webhook-secret-for-the-suite"


# ---------------------------------------------------------------- the receiver

class Receiver:
    """A webhook receiver: records every request; answers 500 while told to."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []   # dicts: t, status, headers, body, sig_ok, event
        self.fail_next = 0   # answer 500 to this many requests
        self.fail_all = False
        self.holding = False  # keep requests waiting (then 500) until release is set
        self.release = threading.Event()
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                ts = self.headers.get("X-EMS-Timestamp", "")
                want = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body,
                                            hashlib.sha256).hexdigest()
                sig_ok = hmac.compare_digest(want, self.headers.get("X-EMS-Signature", ""))
                with rec.lock:
                    held = rec.holding
                    if held or rec.fail_all or rec.fail_next > 0:
                        status = 500
                        rec.fail_next = max(0, rec.fail_next - (0 if held else 1))
                    else:
                        status = 200
                    try:
                        ev = json.loads(body)
                    except ValueError:
                        ev = None
                    rec.requests.append({"t": time.time(), "status": status,
                                         "headers": dict(self.headers), "body": body,
                                         "sig_ok": sig_ok, "event": ev,
                                         "path": self.path, "held": held})
                if held:
                    rec.release.wait(30)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the gateway is gone (killed while we held it)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks/ems"

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def delivered(self):
        """Events answered with 200, in arrival order."""
        return [r["event"] for r in self.snapshot() if r["status"] == 200]

    def close(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


# ---------------------------------------------------------------- devices

class Device:
    """A device sending a live packet every 0.5 s with the state it is told."""

    def __init__(self, env, dev, token):
        self.env, self.dev, self.token = env, dev, token
        self.state, self.flags, self.soc = "CHARGING", [], 60.0
        self.seq = 0
        self.ws = None
        self.task = None
        self.first_error_ms = None

    async def connect(self):
        self.ws = await self.env.device(self.dev, self.token)
        await asyncio.wait_for(self.ws.recv(), 5)  # welcome
        self.stopping = False
        self.task = asyncio.ensure_future(self.run())
        self.reader = asyncio.ensure_future(self.drain())

    async def run(self):
        try:
            while not self.stopping:
                self.seq += 1
                p = gw.packet(self.dev, self.seq)
                p["system_status"]["state"] = self.state
                p["system_status"]["error_flags"] = list(self.flags)
                p["battery"]["soc"] = self.soc
                if self.state == "ERROR" and self.first_error_ms is None:
                    self.first_error_ms = int(time.time() * 1000)
                await self.ws.send(json.dumps(p))
                await asyncio.sleep(0.5)
        except Exception:
            pass

    async def drain(self):
        """Reads (and drops) acks, so nothing piles up."""
        try:
            async for _ in self.ws:
                pass
        except Exception:
            pass

    async def close(self):
        # A flag as well as cancel(): the loop ends even if a cancellation
        # is swallowed somewhere below it.
        self.stopping = True
        tasks = [t for t in (self.task, getattr(self, "reader", None)) if t]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.task = self.reader = None
        if self.ws:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except BaseException:
                pass
            self.ws = None


# ---------------------------------------------------------------- helpers

def ms_of(iso):
    from datetime import datetime
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def until(cond, timeout, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = cond()
            if v:
                return v
        except Exception:
            pass
        await asyncio.sleep(step)
    return None


def alarms(env, cookie, query=""):
    st, _, b = env.http("GET", "/api/alarms" + query, cookie=cookie)
    if st != 200:
        raise RuntimeError(f"GET /api/alarms{query}: {st} {b!r}")
    return json.loads(b)["alarms"]


def of(env, cookie, dev, rule=None, query=""):
    """The alarms of `dev` (of one rule), newest first; `query` adds "k=v"."""
    lst = alarms(env, cookie, f"?device={dev}" + (f"&{query}" if query else ""))
    return [a for a in lst if rule is None or a["rule"] == rule]


def metric(env, name):
    st, _, b = env.http("GET", "/metrics")
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+]+)$", b.decode(), re.M)
    return float(m.group(1)) if m else None


def ack(env, cookie, alarm_id, origin=None, ctype="application/json"):
    h = {"Content-Type": ctype}
    if origin:
        h["Origin"] = origin
    return env.http("POST", f"/api/alarms/{alarm_id}/ack", body="{}", headers=h, cookie=cookie)


def events_for(rcv, alarm_id):
    return [e for e in rcv.delivered() if e and e["alarm"]["alarm_id"] == alarm_id]


# ---------------------------------------------------------------- several gateways

async def arbiter_tests(env, op):
    """The database makes one alarm of the raises of several gateways."""
    def ev(e):
        env.psql("SELECT ems_event('" + json.dumps(e).replace("'", "''") + "'::jsonb)")
    now = int(time.time() * 1000)
    base = {"type": "alarm_raise", "device_id": "al_mv", "rule": "sensor_fault",
            "message": "sensor fault reported", "details": {"error_flags": ["SENSOR_FAULT"]}}
    ev(dict(base, at=gw.iso(now - 2000), gateway="gwX"))
    ev(dict(base, at=gw.iso(now - 1000), gateway="gwY"))   # a second gateway's raise
    ev(dict(base, at=gw.iso(now - 2000), gateway="gwX"))   # a replayed EVENT
    lst = of(env, op, "al_mv", "sensor_fault")
    tap.ok("two gateways' raises and a replay make one alarm",
           len(lst) == 1 and lst[0]["raised_by"] == "gwX", lst)
    ev({"type": "alarm_clear", "device_id": "al_mv", "rule": "sensor_fault",
        "at": gw.iso(now), "reason": "test"})
    ev({"type": "alarm_clear", "device_id": "al_mv", "rule": "sensor_fault",
        "at": gw.iso(now), "reason": "test"})
    n = env.psql("SELECT count(*) FROM alarm_events e JOIN alarms a USING (alarm_id) "
                 "WHERE a.device_id = 'al_mv' AND a.rule = 'sensor_fault'")
    tap.eq("  a repeated clear adds no event (raised, cleared)", n, [["2"]])
    # An offline raise from a gateway the device left, arriving after the
    # device connected elsewhere (its session_open is stored): dropped.
    env.psql("INSERT INTO device_sessions (device_id, connected_at, gateway) "
             f"VALUES ('al_mv', '{gw.iso(now - 500)}', 'gwB')")
    ev({"type": "alarm_raise", "device_id": "al_mv", "rule": "offline",
        "at": gw.iso(now), "since": gw.iso(now - 5000), "gateway": "gwA",
        "message": "device offline for more than 3 s", "details": {"offline_s": 3}})
    tap.eq("a late offline raise after the device came back is dropped",
           of(env, op, "al_mv", "offline"), [])


async def several_gateways(env, op, rcv, toks, gwopts, devs):
    """Two gateways on NATS with the same webhook: a device in ERROR that
    moves from A to B is one alarm, B clears it, A raises no offline alarm,
    and each event reaches the webhook once."""
    nats = gw.Nats(env)
    nats.start()
    sides = []
    try:
        opts = dict(gwopts, nats_url=nats.url())
        for name in ("gwA", "gwB"):
            side = gw.BusGateway(env, name)
            side.start(**opts)
            sides.append(side)
        a, b = sides
        d = Device(a, "al_mv", toks["al_mv"])
        devs.append(d)
        d.state, d.flags = "ERROR", ["GRID_FAULT"]
        await d.connect()
        got = await until(lambda: [x for x in of(env, op, "al_mv", "error")
                                   if x["state"] == "active"], 10)
        tap.ok("several gateways: ERROR on gateway A raises", bool(got))
        mv = got[0] if got else {"alarm_id": None}
        await d.close()
        d2 = Device(b, "al_mv", toks["al_mv"])
        devs.append(d2)
        d2.state, d2.flags = "ERROR", ["GRID_FAULT"]
        await d2.connect()
        await asyncio.sleep(5)  # > debounce and > alarm_offline_s
        lst = of(env, op, "al_mv", "error")
        tap.ok("  the device moves to B, still in ERROR: still one alarm",
               len(lst) == 1 and lst[0]["alarm_id"] == mv["alarm_id"], lst)
        tap.eq("  A raises no offline alarm for a device online on B",
               [x for x in of(env, op, "al_mv", "offline")], [])
        d2.state, d2.flags = "IDLE", []
        cl = await until(lambda: [x for x in of(env, op, "al_mv", "error")
                                  if x["state"] == "cleared"], 10)
        tap.ok("  B clears the alarm A raised", bool(cl))
        ok = await until(lambda: {e["type"] for e in events_for(rcv, mv["alarm_id"])}
                         >= {"alarm.raised", "alarm.cleared"}, 20)
        await asyncio.sleep(2)
        got = [e["type"] for e in events_for(rcv, mv["alarm_id"])]
        tap.ok("  each change reaches the webhook once (three gateways share it)",
               bool(ok) and sorted(got) == ["alarm.cleared", "alarm.raised"], got)
        await d2.close()
    finally:
        for side in sides:
            rc = side.proc.stop()
            tap.ok(f"gateway {side.name} exits cleanly", rc == 0, rc)
            if rc != 0 or tap.failed:
                tap.note(f"--- {side.name} log (tail) ---\n" + side.proc.text()[-4000:])
        nats.stop()


# ---------------------------------------------------------------- the suite

async def main():
    env = gw.Env(tap, tls=False)
    rcv = Receiver()
    devs = []
    try:
        env.start_pg()
        env.start_dbwriter()
        toks = {d: env.add_device(d) for d in ("al_err", "al_soc", "al_off", "al_mv")}
        env.add_user("op", "operator", "op-password-1")
        env.add_user("vw", "viewer", "vw-password-1")
        secret = os.path.join(env.dir, "webhook.secret")
        with open(secret, "wb") as f:
            f.write(SECRET + b"\n")
        gwopts = dict(alarm_debounce_s=2, alarm_soc_low=20, alarm_soc_hysteresis=5,
                      alarm_offline_s=3, alarm_webhooks=rcv.url(),
                      alarm_webhook_secret_file=secret, alarm_webhook_retries=4,
                      alarm_webhook_backoff_ms=200, alarm_webhook_backoff_max_ms=800,
                      alarm_webhook_lease_s=4, alarm_webhook_timeout_ms=3000)
        env.start_gateway(**gwopts)
        op = env.login("op", "op-password-1")
        vw = env.login("vw", "vw-password-1")

        # ------------------------------------------------ ERROR, debounce
        d_err = Device(env, "al_err", toks["al_err"])
        devs.append(d_err)
        await d_err.connect()
        await asyncio.sleep(3)  # settles the rules (clears of unknown ones are no-ops)
        tap.eq("no alarm while the device is fine", of(env, op, "al_err"), [])
        d_err.state, d_err.flags = "ERROR", ["OVERHEAT", "SENSOR_FAULT"]
        await asyncio.sleep(1.0)
        tap.eq("ERROR for 1 s (debounce 2 s): no alarm yet", of(env, op, "al_err", "error"), [])
        got = await until(lambda: of(env, op, "al_err", "error"), 10)
        tap.ok("ERROR for the debounce raises an alarm", bool(got))
        a_err = got[0] if got else {}
        tap.eq("  state active", a_err.get("state"), "active")
        tap.ok("  raised no earlier than the debounce after the first ERROR packet",
               a_err and ms_of(a_err["raised_at"]) - d_err.first_error_ms >= 1900,
               f"{a_err.get('raised_at')} vs {d_err.first_error_ms}")
        tap.eq("  details carry the error flags", a_err.get("details"),
               {"error_flags": ["OVERHEAT", "SENSOR_FAULT"]})
        tap.ok("  message names the flags", "OVERHEAT" in (a_err.get("message") or ""))
        sf = await until(lambda: of(env, op, "al_err", "sensor_fault"), 5)
        tap.ok("the SENSOR_FAULT flag raises sensor_fault", bool(sf))
        await asyncio.sleep(3)
        tap.eq("ERROR going on: still one error alarm", len(of(env, op, "al_err", "error")), 1)

        # ------------------------------------------------ acknowledge
        aid = a_err.get("alarm_id")
        st, _, b = ack(env, vw, aid)
        tap.eq("viewer acknowledging: 403", st, 403)
        st, _, b = ack(env, op, aid, origin="https://evil.example")
        tap.eq("foreign Origin: 403", st, 403)
        st, _, b = ack(env, op, aid, ctype="text/plain")
        tap.eq("not application/json: 415", st, 415)
        st, _, b = ack(env, None, aid)
        tap.eq("not logged in: 401", st, 401)
        st, _, b = ack(env, op, 999999)
        tap.eq("unknown alarm: 404", st, 404)
        st, _, b = env.http("GET", f"/api/alarms/{aid}/ack", cookie=op)
        tap.eq("GET on the ack route: 405", st, 405)
        st, _, b = ack(env, op, aid)
        body = json.loads(b) if st == 200 else {}
        tap.eq("operator acknowledges: 200", st, 200)
        tap.eq("  answer: acknowledged by op", (body.get("state"), body.get("acked_by")),
               ("acknowledged", "op"))
        stored = await until(lambda: [a for a in of(env, op, "al_err", "error")
                                      if a["state"] == "acknowledged"], 5)
        tap.ok("acknowledgement stored, with who and when",
               bool(stored) and stored[0]["acked_by"] == "op" and stored[0]["acked_at"])
        st, _, b = ack(env, op, aid)
        tap.ok("a second ack changes nothing", st == 200 and
               json.loads(b)["acked_at"] == stored[0]["acked_at"] if stored else False)
        tap.eq("state=active excludes it", [a for a in alarms(env, op, "?state=active")
                                             if a["alarm_id"] == aid], [])
        tap.eq("state=open includes it", len([a for a in alarms(env, op, "?state=open")
                                              if a["alarm_id"] == aid]), 1)
        st, _, _ = env.http("GET", "/api/alarms?state=bogus", cookie=op)
        tap.eq("bad state: 400", st, 400)
        st, _, _ = env.http("GET", "/api/alarms?limit=0", cookie=op)
        tap.eq("bad limit: 400", st, 400)
        st, _, _ = env.http("GET", "/api/alarms", cookie=None)
        tap.eq("list without a session: 401", st, 401)

        # ------------------------------------------------ clear
        d_err.state, d_err.flags = "IDLE", []
        cl = await until(lambda: [a for a in of(env, op, "al_err", "error")
                                  if a["state"] == "cleared"], 10)
        tap.ok("back to normal: the alarm clears after the debounce", bool(cl))
        tap.ok("  cleared keeps who acknowledged", bool(cl) and cl[0]["acked_by"] == "op")
        st, _, b = env.http("GET", "/api/devices/al_err/alarms", cookie=vw)
        hist = json.loads(b)["alarms"] if st == 200 else []
        tap.ok("history per device (a viewer may read it)", st == 200 and
               {a["rule"] for a in hist} == {"error", "sensor_fault"}, f"{st} {hist}")
        tap.eq("state=open of al_err: none left", of(env, op, "al_err", query="state=open"), [])

        # ------------------------------------------------ SoC hysteresis
        d_soc = Device(env, "al_soc", toks["al_soc"])
        devs.append(d_soc)
        await d_soc.connect()
        d_soc.soc = 15.0
        got = await until(lambda: of(env, op, "al_soc", "soc_low"), 10)
        tap.ok("SoC 15 % < 20 %: soc_low raised", bool(got))
        # Above the threshold but inside the band, long enough to clear
        # without hysteresis; then below again; twice.
        for _ in range(2):
            d_soc.soc = 23.0
            await asyncio.sleep(3)
            d_soc.soc = 18.0
            await asyncio.sleep(3)
        lst = of(env, op, "al_soc", "soc_low")
        tap.ok("SoC moving 23 % / 18 % (band 20..25): one alarm, still open",
               len(lst) == 1 and lst[0]["state"] == "active", json.dumps(lst))

        # ------------------------------------------------ offline
        d_off = Device(env, "al_off", toks["al_off"])
        devs.append(d_off)
        await d_off.connect()
        await asyncio.sleep(1)
        await d_off.close()
        await asyncio.sleep(1.5)
        tap.eq("offline 1.5 s (limit 3 s): no alarm", of(env, op, "al_off", "offline"), [])
        got = await until(lambda: of(env, op, "al_off", "offline"), 10)
        tap.ok("offline longer than 3 s raises", bool(got) and got[0]["state"] == "active")
        await d_off.connect()
        cl = await until(lambda: [a for a in of(env, op, "al_off", "offline")
                                  if a["state"] == "cleared"], 5)
        tap.ok("reconnecting clears it", bool(cl))
        # (it stays connected: going away again would raise offline again)

        # ------------------------------------------------ webhook: delivered, signed, ordered
        want = {(aid, "alarm.raised"), (aid, "alarm.acknowledged"), (aid, "alarm.cleared")}
        ok = await until(lambda: want <= {(e["alarm"]["alarm_id"], e["type"])
                                          for e in rcv.delivered() if e}, 15)
        tap.ok("webhook: raised, acknowledged and cleared of the ERROR alarm delivered", bool(ok))
        reqs = rcv.snapshot()
        tap.ok("every webhook request has a valid signature", reqs and all(r["sig_ok"] for r in reqs),
               f"{sum(1 for r in reqs if not r['sig_ok'])} bad of {len(reqs)}")
        tap.ok("webhook requests go to the configured path",
               reqs and all(r["path"] == "/hooks/ems" for r in reqs))
        kinds = [e["type"] for e in events_for(rcv, aid)]
        tap.eq("per alarm in order", kinds[:3], ["alarm.raised", "alarm.acknowledged",
                                                 "alarm.cleared"])
        ids = [e["event_id"] for e in rcv.delivered() if e]
        tap.ok("events delivered in event order (ordered per device)", ids == sorted(ids), ids)
        r0 = reqs[0] if reqs else {"headers": {}, "event": {}}
        tap.ok("headers: X-EMS-Event and X-EMS-Event-Id match the body",
               r0["headers"].get("X-EMS-Event") == r0["event"]["type"] and
               r0["headers"].get("X-EMS-Event-Id") == str(r0["event"]["event_id"]))
        ev = events_for(rcv, aid)[0] if events_for(rcv, aid) else {}
        tap.ok("the event carries the alarm (device, rule, message)",
               ev.get("alarm", {}).get("device_id") == "al_err" and
               ev["alarm"]["rule"] == "error" and "OVERHEAT" in ev["alarm"]["message"])
        offl = await until(lambda: [e for e in rcv.delivered()
                                    if e and e["alarm"]["rule"] == "offline"][1:] and
                           [e for e in rcv.delivered() if e and e["alarm"]["rule"] == "offline"], 10)
        tap.ok("offline raise and clear delivered",
               bool(offl) and [e["type"] for e in offl][:2] == ["alarm.raised", "alarm.cleared"])

        # ------------------------------------------------ webhook: 500 then 200
        with rcv.lock:
            rcv.fail_next = 2
        n0 = len(rcv.snapshot())
        d_soc.soc = 40.0  # clears soc_low
        soc_alarm = of(env, op, "al_soc", "soc_low")[0]["alarm_id"]
        ok = await until(lambda: [e for e in events_for(rcv, soc_alarm)
                                  if e["type"] == "alarm.cleared"], 20)
        tap.ok("receiver answering 500 twice: delivered on the third attempt", bool(ok))
        tries = [r for r in rcv.snapshot()[n0:] if r["event"] and
                 r["event"]["alarm"]["alarm_id"] == soc_alarm and
                 r["event"]["type"] == "alarm.cleared"]
        tap.eq("  same event three times: 500, 500, 200", [r["status"] for r in tries],
               [500, 500, 200])
        if [r["status"] for r in tries] != [500, 500, 200]:
            tap.note("requests since: " + json.dumps(
                [(r["status"], r["event"] and r["event"]["event_id"], r["event"] and r["event"]["type"],
                  r["event"] and r["event"]["alarm"]["alarm_id"]) for r in rcv.snapshot()[n0:]]) +
                f" soc_alarm {soc_alarm}")
        tap.ok("  the same event id every time", len({r["event"]["event_id"] for r in tries}) == 1)
        fails = metric(env, "ems_gateway_webhook_failures_total")
        tap.ok("  failures counted in /metrics", fails is not None and fails >= 2, fails)

        # ------------------------------------------------ webhook: dead letter
        with rcv.lock:
            rcv.fail_all = True
        n0 = len(rcv.snapshot())
        d_err.state, d_err.flags = "ERROR", ["OVERVOLTAGE"]
        got = await until(lambda: [a for a in of(env, op, "al_err", "error")
                                   if a["state"] == "active"], 10)
        new_err = got[0]["alarm_id"] if got else None
        tap.ok("ERROR again: a new alarm (the old one stays cleared)", new_err and new_err != aid)
        dead = await until(lambda: (metric(env, "ems_gateway_webhook_dead_letters_total") or 0)
                           >= 1, 20)
        tap.ok("after 4 failed attempts the event is dead-lettered (/metrics)", bool(dead))
        tries = [r for r in rcv.snapshot()[n0:] if r["event"] and
                 r["event"]["alarm"]["alarm_id"] == new_err]
        tap.eq("  exactly 4 attempts", len(tries), 4)
        gaps = [b["t"] - a["t"] for a, b in zip(tries, tries[1:])]
        tap.ok("  retries are spaced by a backoff (not a tight loop)",
               len(gaps) == 3 and sum(gaps) > 0.05, gaps)
        with rcv.lock:
            rcv.fail_all = False
        d_err.state, d_err.flags = "IDLE", []
        ok = await until(lambda: [e for e in events_for(rcv, new_err)
                                  if e["type"] == "alarm.cleared"], 20)
        tap.ok("the next event is delivered after a dead letter", bool(ok))
        tap.eq("  the dead-lettered raise was never delivered",
               [e["type"] for e in events_for(rcv, new_err)], ["alarm.cleared"])

        # ------------------------------------------------ kill -9 before delivery
        # The receiver holds the request (no answer), so the delivery is in
        # progress when the gateway dies.
        with rcv.lock:
            rcv.holding = True
        n0 = len(rcv.snapshot())
        d_soc.soc = 5.0
        got = await until(lambda: [a for a in of(env, op, "al_soc", "soc_low")
                                   if a["state"] == "active"], 10)
        k_alarm = got[0]["alarm_id"] if got else None
        tap.ok("SoC low again: a new alarm stored", bool(k_alarm))
        tried = await until(lambda: [r for r in rcv.snapshot()[n0:] if r["event"] and
                                     r["event"]["alarm"]["alarm_id"] == k_alarm], 10)
        tap.ok("  its delivery is under way (the receiver holds it)", bool(tried))
        for d in devs:
            await d.close()
        before_kill = rcv.snapshot()[n0:]
        env.gw.stop(signal.SIGKILL)
        with rcv.lock:
            rcv.holding = False
        rcv.release.set()
        env.start_gateway(**gwopts)
        ok = await until(lambda: [e for e in events_for(rcv, k_alarm)
                                  if e["type"] == "alarm.raised"], 20)
        tap.ok("after kill -9 and a restart the stored alarm is delivered", bool(ok))
        tap.eq("  nothing of it was answered 200 before the kill",
               [r["status"] for r in before_kill if r["event"] and
                r["event"]["alarm"]["alarm_id"] == k_alarm and r["status"] == 200], [])
        dl = metric(env, "ems_gateway_webhook_deliveries_total")
        tap.ok("  deliveries counted by the new gateway", dl is not None and dl >= 1, dl)
        # The new gateway never saw al_soc low; the database has its alarm
        # open. When the device comes back fine, the alarm is cleared here.
        d_soc2 = Device(env, "al_soc", toks["al_soc"])
        devs.append(d_soc2)
        d_soc2.soc = 60.0
        await d_soc2.connect()
        cl = await until(lambda: [a for a in of(env, op, "al_soc", "soc_low")
                                  if a["alarm_id"] == k_alarm and a["state"] == "cleared"], 10)
        tap.ok("a restarted gateway clears an alarm the old one raised (open in the database)",
               bool(cl))
        # al_off went away just before the kill: no running gateway saw it
        # go. The restarted one finds it silent in the database (its newest
        # packet older than alarm_offline_s) and raises offline.
        got = await until(lambda: [a for a in of(env, op, "al_off", "offline")
                                   if a["state"] == "active"], 15)
        tap.ok("a device that went away while its gateway was down: the restarted gateway "
               "raises offline (the silent-device sweep)", bool(got),
               json.dumps(of(env, op, "al_off", "offline")))

        await arbiter_tests(env, op)
        await several_gateways(env, op, rcv, toks, gwopts, devs)
    finally:
        for d in devs:
            await d.close()
        rcv.close()
        rc = env.close()
        tap.ok("gateway exits cleanly", rc == 0, rc)
    tap.done()


asyncio.run(main())
