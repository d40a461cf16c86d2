#!/usr/bin/python3
# 53-gateway-health.py: health means "can commit" (the item 12).
#
# The DB writer reports its database state over the link (STATUS frames,
# docs/protocol.md 5.7); the gateway's /healthz is 200 only when the writer
# can commit, and `ems-dbwriter --health` (the container health check) asks
# the running writer the same question. Scenario, on the real binaries:
#
#   1. the writer starts with a WRONG database password (PostgreSQL asks for
#      scram-sha-256 over TCP): its socket exists and the gateway's link is
#      up, yet /healthz is 503 naming the database and the password error,
#      and --health exits 1 saying so;
#   2. the password is fixed in the database (ALTER ROLE): within the
#      writer's reconnect backoff both turn healthy, and telemetry is acked;
#   3. INSERT is revoked from the role (connected, but batches fail): 503
#      "database refuses commits" within seconds, 200 once granted again;
#      PostgreSQL is killed mid-run: /healthz turns 503 within seconds;
#   4. it comes back: 200 again; the writer stopped: 503 "dbwriter link
#      down" and --health exits 2.
import asyncio
import importlib.util
import json
import os
import subprocess
import time

_spec = importlib.util.spec_from_file_location(
    "gw", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gw)

tap = gw.Tap()
PGSH = os.path.join(gw.ROOT, "test/lib/pg.sh")


def healthz(env):
    st, h, b = env.http("GET", "/healthz", timeout=5)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b[:200]}


def health_cli(env):
    r = subprocess.run([os.path.join(gw.BUILD, "ems-dbwriter"), "--health", "--socket", env.sock],
                       capture_output=True, text=True, timeout=10)
    return r.returncode, (r.stdout + r.stderr).strip()


def wait_health(env, pred, timeout):
    """Polls /healthz until pred(status, body); returns (ok, seconds, last)."""
    t0 = time.time()
    last = None
    while time.time() - t0 < timeout:
        try:
            last = healthz(env)
            if pred(*last):
                return True, time.time() - t0, last
        except OSError as e:
            last = ("error", repr(e))
        time.sleep(0.1)
    return False, time.time() - t0, last


async def main():
    env = gw.Env(tap, tls=False)
    try:
        env.start_pg()
        pg_port = env.dsn.split("port=")[1].split()[0]
        # A role that must log in with a password over TCP, and that owns
        # what it creates (not a superuser: privileges apply to it).
        env.psql("CREATE ROLE ems LOGIN PASSWORD 'right-password'")
        env.psql("ALTER SCHEMA public OWNER TO ems")
        with open(os.path.join(env.pg_dir, "data", "pg_hba.conf")) as f:
            hba = f.read()
        with open(os.path.join(env.pg_dir, "data", "pg_hba.conf"), "w") as f:
            f.write("host all ems 127.0.0.1/32 scram-sha-256\n" + hba)
        env.psql("SELECT pg_reload_conf()")
        # From here on emsctl and psql work as ems too (over the Unix socket,
        # trust), so every table belongs to ems.
        env.dsn = env.dsn.replace("user=postgres", "user=ems")
        os.environ["EMS_PG_DSN"] = env.dsn
        tok = env.add_device("hz_1")
        bad_dsn = (f"host=127.0.0.1 port={pg_port} dbname=postgres user=ems "
                   "password=wrong-password")
        env.dbw = gw.Proc("ems-dbwriter",
                          [os.path.join(gw.BUILD, "ems-dbwriter"), "--socket", env.sock,
                           "--dsn", bad_dsn],
                          os.path.join(env.dir, "dbwriter.log"))
        gw.wait_for(lambda: os.path.exists(env.sock), 20)
        tap.ok("the writer with a wrong password still creates its socket (so a `test -S` "
               "health check would pass)", os.path.exists(env.sock) and env.dbw.alive())
        env.start_gateway()

        # 1. wrong password: the link is up, the database is not.
        ok, _, last = wait_health(env, lambda st, b: b.get("database") == "failing", 15)
        st, body = last if ok else (None, {})
        tap.ok("wrong password: /healthz is 503 although the writer's link is up",
               ok and st == 503 and body.get("dbwriter") == "connected", last)
        tap.ok("... and the body names the database and the password failure",
               "database unreachable" in body.get("reason", "") and
               "password authentication failed" in body.get("reason", ""), body)
        rc, out = health_cli(env)
        tap.ok("wrong password: `ems-dbwriter --health` exits 1 and says why",
               rc == 1 and "password authentication failed" in out, (rc, out))
        tap.ok("the writer did not exit over it (it retries)", env.dbw.alive())

        # 2. fix the password in the database: healthy without a restart.
        env.psql("ALTER ROLE ems PASSWORD 'wrong-password'")
        ok, secs, last = wait_health(env, lambda st, b: st == 200, 30)
        tap.ok("password fixed: /healthz turns 200 (within the writer's reconnect backoff)",
               ok and last[1].get("status") == "ok" and last[1].get("migrations") == "done",
               (secs, last))
        rc, out = health_cli(env)
        tap.ok("... and `ems-dbwriter --health` exits 0", rc == 0 and out.startswith("ok"),
               (rc, out))
        # The writer's query connection (device lookups) has its own
        # backoff; when the writing connection is back it tries at once
        # (ems_pg_retry_now), so device logins work as soon as /healthz
        # says ok, not after that connection's delay.
        ws = None
        t_ok = time.time()
        end = t_ok + 2
        while ws is None:
            try:
                ws = await env.device("hz_1", tok)
            except Exception:
                if time.time() > end:
                    break
                await asyncio.sleep(0.1)
        tap.ok("... and a device can log in within 2 s of that", ws is not None,
               f"{time.time() - t_ok:.1f} s")
        if ws is None:
            ws = await env.device("hz_1", tok)  # whatever the delay, go on
        await asyncio.wait_for(ws.recv(), 5)
        await ws.send(json.dumps(gw.packet("hz_1", 1)))
        got = await gw.acked(ws, [1], timeout=10)
        tap.ok("... and telemetry is committed and acked", 1 in got)
        ok, _, last = wait_health(env, lambda st, b: b.get("last_commit"), 10)
        tap.ok("/healthz shows the time of the last commit", ok, last)

        # 2b. Connected, but the database refuses the batches.
        env.psql("REVOKE INSERT ON telemetry FROM ems")
        await ws.send(json.dumps(gw.packet("hz_1", 2)))
        ok, secs, last = wait_health(env, lambda st, b: st == 503, 10)
        tap.ok("INSERT revoked: /healthz turns 503 'database refuses commits' within 5 s",
               ok and secs < 5 and "database refuses commits" in last[1].get("reason", ""),
               (secs, last))
        rc, out = health_cli(env)
        tap.ok("... and `ems-dbwriter --health` exits 1", rc == 1, (rc, out))
        env.psql("GRANT INSERT ON telemetry TO ems")
        got = await gw.acked(ws, [2], timeout=20)
        tap.ok("INSERT granted again: the held packet is committed and acked", 2 in got)
        ok, secs, last = wait_health(env, lambda st, b: st == 200, 10)
        tap.ok("... and /healthz is 200 again", ok, (secs, last))

        # 3. PostgreSQL dies mid-run.
        subprocess.run([PGSH, "kill", env.pg_dir], check=True)
        t0 = time.time()
        ok, secs, last = wait_health(env, lambda st, b: st == 503, 10)
        tap.ok("PostgreSQL killed: /healthz turns 503 within 5 s",
               ok and secs < 5 and "database unreachable" in last[1].get("reason", ""),
               (secs, last))
        rc, out = health_cli(env)
        tap.ok("... and `ems-dbwriter --health` exits 1", rc == 1, (rc, out))
        tap.note(f"503 after {time.time() - t0:.2f} s: {last[1].get('reason')}")

        # 4. back, then the writer gone.
        subprocess.run([PGSH, "restart", env.pg_dir], check=True)
        ok, secs, last = wait_health(env, lambda st, b: st == 200, 30)
        tap.ok("PostgreSQL back: /healthz 200 again", ok, (secs, last))
        await ws.send(json.dumps(gw.packet("hz_1", 3)))
        got = await gw.acked(ws, [3], timeout=15)
        tap.ok("... and telemetry is acked again", 3 in got)
        await ws.close()
        env.dbw.stop()
        ok, secs, last = wait_health(env, lambda st, b: st == 503, 10)
        tap.ok("writer stopped: /healthz 503 'dbwriter link down'",
               ok and last[1].get("reason") == "dbwriter link down" and
               last[1].get("dbwriter") == "disconnected", last)
        rc, out = health_cli(env)
        tap.ok("... and `ems-dbwriter --health` exits 2 (nobody answers)", rc == 2, (rc, out))
        text = env.dbw.text()
        tap.ok("no sanitizer report in the writer's log",
               "AddressSanitizer" not in text and "runtime error:" not in text)
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, repr(e))
        tap.note(traceback.format_exc())
    finally:
        rc = env.close()
        tap.eq("gateway exits 0 after SIGTERM", rc, 0)


asyncio.run(main())
tap.done()
