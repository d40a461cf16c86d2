#!/usr/bin/python3
# 52-gateway-storm.py: a reconnect storm's credential lookups are batched
# and queued, not refused (issue 13, item 4).
#
# 500 devices connect at once (plain WebSocket, so the suite measures the
# lookups, not TLS). Every one must get its welcome: none may be refused
# with 503 "credential store unavailable", which is what one query per
# device waiting behind the others at the DB writer used to give. The
# lookups travel in a few device_auths queries (one SQL statement each),
# counted in /metrics. Then the DB writer is stopped while 50 more devices
# connect, and started again within the lookup deadline: they wait and get
# in, instead of an immediate 503.
import asyncio
import importlib.util
import json
import os
import re
import time

_spec = importlib.util.spec_from_file_location(
    "gw", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gw)

tap = gw.Tap()
N = 500


def metric(env, name):
    """The value of one series in /metrics (0 if absent)."""
    body = env.http("GET", "/metrics")[2].decode()
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+]+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


async def connect(env, dev, tok):
    """'ok' after the welcome, else the failure (HTTP status or exception)."""
    try:
        ws = await env.device(dev, tok, open_timeout=20)
        m = json.loads(await asyncio.wait_for(ws.recv(), 20))
        return ("ok" if m.get("type") == "welcome" else repr(m)), ws
    except Exception as e:
        return getattr(e, "status_code", None) or repr(e)[:80], None


async def crowd(env, toks):
    got = await asyncio.gather(*(connect(env, d, t) for d, t in toks.items()))
    fails = {}
    for r, _ in got:
        if r != "ok":
            fails[r] = fails.get(r, 0) + 1
    return [ws for _, ws in got if ws], fails


async def main():
    env = gw.Env(tap, tls=False)
    try:
        env.start_pg()
        env.add_device("st_first")  # emsctl migrates the schema
        toks = gw.bulk_provision(env, "st_", N)
        late = gw.bulk_provision(env, "lt_", 50)
        env.start_dbwriter()
        # No cache help: every upgrade needs the database.
        env.start_gateway(auth_cache_s=0, recheck_s=60, max_unauth_per_addr=0)
        gw.wait_for(lambda: "dbwriter link up" in env.gw.text(), 10)

        t0 = time.time()
        socks, fails = await crowd(env, toks)
        secs = time.time() - t0
        tap.eq(f"{N} devices connecting at once all get in ({secs:.1f} s)", fails, {})
        await asyncio.sleep(1.2)  # the link's counters reach /metrics on the 1 s tick
        lookups = metric(env, "ems_gateway_credential_lookups_total")
        batches = metric(env, "ems_gateway_credential_lookup_batches_total")
        tap.ok(f"their lookups went in few DB writer queries ({lookups:.0f} lookups, "
               f"{batches:.0f} queries)", lookups >= N and 0 < batches <= N / 10,
               f"lookups {lookups}, batches {batches}")
        tap.eq("no lookup expired or was refused",
               metric(env, 'ems_gateway_credential_lookups_failed_total{reason="expired"}') +
               metric(env, 'ems_gateway_credential_lookups_failed_total{reason="queue_full"}'),
               0.0)
        for ws in socks:
            await ws.close()

        # The DB writer goes away; devices arriving now wait for it.
        env.dbw.stop()
        gw.wait_for(lambda: "dbwriter link down" in env.gw.text(), 10)
        task = asyncio.ensure_future(crowd(env, late))
        await asyncio.sleep(1.5)
        env.start_dbwriter()
        socks, fails = await task
        tap.eq("devices arriving while the DB writer restarts wait and get in", fails, {})
        tap.ok("and they were not refused with 503",
               "credential store unavailable" not in env.gw.text(), "")
        for ws in socks:
            await ws.close()
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, repr(e))
        tap.note(traceback.format_exc())
    finally:
        rc = env.close()
        tap.eq("gateway exits 0 after SIGTERM", rc, 0)


asyncio.run(main())
tap.done()
