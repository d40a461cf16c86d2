#!/usr/bin/python3
# 50-gateway-commands: the life of a command through the real ems-gateway,
# ems-dbwriter and PostgreSQL: POST /api/devices/{id}/commands, delivery to a
# device (Python websockets speaking docs/protocol.md), the device's answers,
# timeouts, TTL queueing and expiry, idempotent ids, the audit trail in
# PostgreSQL and the command events on a dashboard.
import asyncio
import importlib.util
import json
import os
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
SET = {"action": "SET_MODE", "payload": {"target_mode": "MANUAL_DISCHARGE", "target_power": 500}}


class Edge:
    """A device that answers commands as `policy(cmd)` says: a list of
    (status, reason) to send in order, possibly empty (never answers)."""

    def __init__(self, env, dev, token, policy):
        self.env, self.dev, self.token, self.policy = env, dev, token, policy
        self.received = []
        self.ws = None
        self.task = None

    async def start(self):
        self.ws = await self.env.device(self.dev, self.token)
        json.loads(await asyncio.wait_for(self.ws.recv(), 5))  # welcome
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        try:
            async for raw in self.ws:
                m = json.loads(raw)
                if "action" not in m:
                    continue
                self.received.append(m)
                for status, reason in self.policy(m):
                    r = {"type": "command_result", "command_id": m["command_id"],
                         "status": status, "timestamp": gw.iso(int(time.time() * 1000))}
                    if reason:
                        r["reason"] = reason
                        r["message"] = f"{reason.lower()} in the test"
                    await self.ws.send(json.dumps(r))
                    await asyncio.sleep(0.05)
        except Exception:
            pass

    async def stop(self):
        await self.ws.close()
        if self.task:
            await asyncio.wait_for(self.task, 5)


def post(env, cookie, dev, body, **kw):
    st, h, b = env.http("POST", f"/api/devices/{dev}/commands", body, cookie=cookie, **kw)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


def get_cmd(env, cookie, cid):
    st, h, b = env.http("GET", f"/api/commands/{cid}", cookie=cookie)
    return st, json.loads(b)


async def wait_status(env, cookie, cid, status, timeout=10):
    """Polls the command until it has `status`, letting the devices' tasks
    run meanwhile. Returns (reached, last record)."""
    last = {}
    end = time.time() + timeout
    while time.time() < end:
        st, last = get_cmd(env, cookie, cid)
        if last.get("status") == status:
            return True, last
        await asyncio.sleep(0.1)
    return False, last


def audit(env, cid):
    return [r[0] for r in env.psql(
        f"SELECT status FROM command_events WHERE command_id = '{cid}' ORDER BY at, status")]


async def main():
    env = gw.Env(tap, tls=True)
    try:
        env.start_pg()
        tok = {d: env.add_device(d) for d in ("c_ok", "c_rej", "c_mute", "c_slow", "c_q", "c_x")}
        env.add_user("ada", "operator", "ada-password-1")
        env.add_user("vic", "viewer", "vic-password-1")
        env.start_dbwriter()
        env.start_gateway(command_timeout_s=2, command_complete_s=3)
        ada = env.login("ada", "ada-password-1")
        vic = env.login("vic", "vic-password-1")

        # --- refusals
        st, b = post(env, vic, "c_ok", SET)
        tap.eq("a viewer may not send commands: 403", st, 403)
        st, b = post(env, None, "c_ok", SET)
        tap.eq("no session: 401", st, 401)
        st, b = post(env, ada, "c_ok", {"action": "SET_MODE",
                                        "payload": {"target_mode": "MANUAL_DISCHARGE"}})
        tap.ok("SET_MODE without target_power: 400 naming the path",
               st == 400 and b.get("path") == "payload.target_power", (st, b))
        st, b = post(env, ada, "c_ok", {"action": "REBOOT", "payload": {}})
        tap.ok("unknown action: 400 naming the path", st == 400 and b.get("path") == "action",
               (st, b))
        st, b = post(env, ada, "c_ok", dict(SET, ttl_s=0))
        tap.ok("ttl_s out of range: 400", st == 400 and b.get("path") == "ttl_s", (st, b))
        st, h, raw = env.http("POST", "/api/devices/c_ok/commands", json.dumps(SET), cookie=ada,
                              headers={"Content-Type": "text/plain"})
        tap.eq("a body that is not application/json: 415", st, 415)
        st, h, raw = env.http("POST", "/api/devices/c_ok/commands", SET, cookie=ada,
                              headers={"Origin": "https://evil.example"})
        tap.eq("a POST from a foreign Origin: 403", st, 403)
        st, b = post(env, ada, "ghost", SET)
        tap.eq("unknown device: 404", st, 404)

        # --- offline, no TTL: fails at once
        st, b = post(env, ada, "c_x", SET)
        tap.ok("offline device without ttl_s: 409, command failed",
               st == 409 and "offline" in b.get("error", "") and
               b.get("command", {}).get("status") == "failed", (st, b))

        # --- dashboard sees command events
        dash = await env.dashboard(ada)
        await dash.send(json.dumps({"type": "subscribe", "devices": ["c_ok", "c_q"]}))

        # --- online: accepted then completed
        edge = Edge(env, "c_ok", tok["c_ok"], lambda m: [("accepted", None), ("completed", None)])
        await edge.start()
        st, b = post(env, ada, "c_ok", SET)
        tap.ok("POST to an online device: 202 sent", st == 202 and b.get("status") == "sent"
               and b.get("created_by") == "ada", (st, b))
        cid = b.get("command_id", "")
        ok, last = await wait_status(env, ada, cid, "completed")
        tap.ok("the device's answers take it to completed", ok, last)
        tap.eq("its history", [h["status"] for h in last.get("history", [])],
               ["sent", "accepted", "completed"])
        tap.ok("the device got the seed's command",
               edge.received and edge.received[0].get("command_id") == cid and
               edge.received[0].get("payload") == SET["payload"], edge.received)
        statuses = []
        while len(statuses) < 3:
            m = await gw.recv_until(dash, lambda m: m.get("type") == "command")
            statuses.append(m["command"]["status"])
        tap.eq("a dashboard sees every status change", statuses, ["sent", "accepted", "completed"])
        for _ in range(50):
            if audit(env, cid) == ["sent", "accepted", "completed"]:
                break
            await asyncio.sleep(0.1)
        tap.eq("the audit trail is in PostgreSQL", audit(env, cid),
               ["sent", "accepted", "completed"])
        st, h, raw = env.http("GET", "/api/devices/c_ok/commands?limit=5", cookie=ada)
        lst = json.loads(raw).get("commands", [])
        tap.ok("GET /api/devices/{id}/commands lists it",
               st == 200 and lst and lst[0]["command_id"] == cid, (st, raw[:300]))

        # --- idempotent retries
        st, b1 = post(env, ada, "c_ok", dict(SET, command_id="retry-42"))
        st2, b2 = post(env, ada, "c_ok", dict(SET, command_id="retry-42"))
        tap.ok("the same command_id and body returns the same command",
               st == 202 and st2 == 200 and b1["command_id"] == b2["command_id"] == "retry-42",
               (st, st2))
        await asyncio.sleep(0.3)
        tap.eq("... and the device got it once",
               sum(1 for m in edge.received if m["command_id"] == "retry-42"), 1)
        st, b = post(env, ada, "c_ok", {"command_id": "retry-42", "action": "RESET_ERROR",
                                        "payload": {}})
        tap.eq("the same command_id with another body: 409", st, 409)
        await edge.stop()

        # --- rejected by the edge
        edge = Edge(env, "c_rej", tok["c_rej"], lambda m: [("rejected", "POWER_LIMIT")])
        await edge.start()
        st, b = post(env, ada, "c_rej", SET)
        ok, last = await wait_status(env, ada, b.get("command_id", ""), "rejected")
        tap.ok("rejected by the edge, with its reason and message",
               ok and last.get("reason") == "POWER_LIMIT" and "power_limit" in
               (last.get("message") or ""), last)
        await edge.stop()

        # --- no answer: timed_out
        edge = Edge(env, "c_mute", tok["c_mute"], lambda m: [])
        await edge.start()
        st, b = post(env, ada, "c_mute", SET)
        t0 = time.time()
        ok, last = await wait_status(env, ada, b.get("command_id", ""), "timed_out", 10)
        tap.ok("no answer within command_timeout_s: timed_out", ok and time.time() - t0 < 6, last)
        await edge.stop()

        # --- accepted, never completed: timed_out
        edge = Edge(env, "c_slow", tok["c_slow"], lambda m: [("accepted", None)])
        await edge.start()
        st, b = post(env, ada, "c_slow", SET)
        ok, last = await wait_status(env, ada, b.get("command_id", ""), "timed_out", 10)
        tap.ok("accepted but not completed in time: timed_out",
               ok and [h["status"] for h in last["history"]] == ["sent", "accepted", "timed_out"],
               last)
        # A late answer does not resurrect it.
        await edge.ws.send(json.dumps({"type": "command_result", "command_id": b["command_id"],
                                       "status": "completed",
                                       "timestamp": gw.iso(int(time.time() * 1000))}))
        await asyncio.sleep(0.3)
        st, last = get_cmd(env, ada, b["command_id"])
        tap.eq("a late answer is ignored", last.get("status"), "timed_out")
        await edge.stop()

        # --- queued with a TTL, delivered on reconnect
        st, b = post(env, ada, "c_q", dict(SET, ttl_s=60))
        tap.ok("offline device with ttl_s: 202 queued",
               st == 202 and b.get("status") == "queued" and b.get("expires_at"), (st, b))
        qid = b.get("command_id", "")
        edge = Edge(env, "c_q", tok["c_q"], lambda m: [("accepted", None), ("completed", None)])
        await edge.start()
        ok, last = await wait_status(env, ada, qid, "completed")
        tap.ok("queued -> sent on reconnect -> completed",
               ok and [h["status"] for h in last["history"]] ==
               ["queued", "sent", "accepted", "completed"], last)
        tap.ok("the queued command carries expires_at on the wire",
               edge.received and "expires_at" in edge.received[0], edge.received)
        await edge.stop()
        # --- queued with a short TTL: expires
        st, b = post(env, ada, "c_q", {"action": "RESET_ERROR", "payload": {}, "ttl_s": 1})
        ok, last = await wait_status(env, ada, b.get("command_id", ""), "expired", 6)
        tap.ok("a queued command whose TTL passes: expired", ok, last)
        edge = Edge(env, "c_q", tok["c_q"], lambda m: [("completed", None)])
        await edge.start()
        await asyncio.sleep(0.5)
        tap.ok("an expired command is never sent",
               all(m["command_id"] != b.get("command_id") for m in edge.received), edge.received)
        await edge.stop()

        # --- a command from the DB after the gateway restarted
        env.stop_gateway()
        env.start_gateway(command_timeout_s=2, command_complete_s=3)
        st, last = get_cmd(env, ada, cid)
        tap.ok("after a restart the command is read from PostgreSQL",
               st == 200 and last.get("status") == "completed" and
               [h["status"] for h in last.get("history", [])] == ["sent", "accepted", "completed"],
               (st, last))
        st, h, raw = env.http("GET", "/api/commands/nope-nope", cookie=ada)
        tap.eq("an unknown command: 404", st, 404)
        await dash.close()
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, f"{e!r}")
        tap.note(traceback.format_exc())
    finally:
        await asyncio.sleep(0)
        rc = env.close()
        tap.eq("gateway exits 0 after SIGTERM", rc, 0)


asyncio.run(main())
tap.done()
