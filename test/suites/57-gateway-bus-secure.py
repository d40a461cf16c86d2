#!/usr/bin/python3
# 57-gateway-bus-secure: the message bus over TLS with a user and password
# (docs/scaling.md, "Turning it on"). A real nats-server with --tls and
# --user/--pass, two real ems-gateways with tls://USER:PASSWORD@HOST:PORT,
# nats_ca_file and nats_tls_hostname, one DB writer and PostgreSQL:
#   - both join the bus and route presence and live telemetry (a device on B,
#     whose id holds "..", which NATS subjects cannot carry as such, is online
#     on A, and a dashboard on A gets its packets);
#   - a list of servers whose first one is down: the gateway joins through
#     the next one;
#   - the password never appears in a log line;
#   - a wrong password, a CA that did not sign the server's certificate, and
#     a name the certificate does not carry: the gateway runs alone, serves,
#     and says why once;
#   - tls:// without nats_ca_file: the gateway refuses to start and names
#     the setting; so does a URL of another scheme.
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

tap = gw.Tap()
USER, PASSWORD = "ems-bus", "s3cret-bus-Passw0rd"


class SecureNats(gw.Nats):
    """nats-server requiring TLS (the test CA's localhost certificate) and a
    user and password."""

    def __init__(self, env, certs):
        super().__init__(env)
        self.certs = certs

    def start(self):
        argv = [shutil.which("nats-server") or "nats-server", "-a", "127.0.0.1", "-p",
                str(self.port), "--tls", "--tlscert", os.path.join(self.certs, "server.crt"),
                "--tlskey", os.path.join(self.certs, "server.key"), "--user", USER,
                "--pass", PASSWORD]
        self.proc = gw.Proc("nats-server", argv, os.path.join(self.env.dir, "nats.log"))
        ok = gw.wait_for(lambda: gw.socket.create_connection(("127.0.0.1", self.port), 1).close()
                         is None, 10)
        if not ok:
            raise RuntimeError("nats-server did not start:\n" + self.proc.text()[-2000:])

    def url(self, password=PASSWORD):
        return f"tls://{USER}:{password}@127.0.0.1:{self.port}"


def jget(side, cookie, path):
    st, h, b = side.http("GET", path, cookie=cookie)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, {"raw": b}


async def wait_online(side, cookie, dev, timeout):
    end = time.time() + timeout
    v = None
    while time.time() < end:
        st, v = await asyncio.get_event_loop().run_in_executor(
            None, jget, side, cookie, f"/api/devices/{dev}")
        if v.get("online") is True:
            return True, v
        await asyncio.sleep(0.2)
    return False, v


def refused_start(env, name, **over):
    """Runs a gateway that must refuse its configuration; returns (exit
    status, output)."""
    args = {"listen": "127.0.0.1:0", "tls": "off", "dbwriter_socket": env.sock,
            "session_key_file": env.keyfile, "static_dir": env.static, "log_level": "info",
            "gateway_id": name}
    args.update(over)
    argv = [os.path.join(gw.BUILD, "ems-gateway")] + [f"--{k}={v}" for k, v in args.items()]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout + p.stderr


async def main():
    if not shutil.which("nats-server"):
        tap.ok("nats-server is installed (scripts/deps.sh)", False, "not found")
        tap.done()
    env = gw.Env(tap, tls=False)
    certs = os.path.join(env.dir, "certs")
    subprocess.run([os.path.join(gw.ROOT, "test/lib/mkcerts.sh"), certs], check=True)
    nats = SecureNats(env, certs)
    ca = os.path.join(certs, "ca.crt")
    sides = []
    edges = []
    try:
        env.start_pg()
        tok = {d: env.add_device(d) for d in ("sec_a", "sec..b")}
        env.add_user("ada", "operator", "ada-password-1")
        env.start_dbwriter()
        nats.start()
        good = dict(nats_url=nats.url(), nats_ca_file=ca, nats_tls_hostname="localhost")
        a, b = gw.BusGateway(env, "gwA"), gw.BusGateway(env, "gwB")
        sides += [a, b]
        a.start(**good)
        b.start(**good)
        tap.ok("over TLS with a password both gateways join the bus",
               gw.wait_for(lambda: "bus: connected" in a.proc.text() and
                           "bus: connected" in b.proc.text(), 15),
               a.proc.text()[-1500:] + b.proc.text()[-1500:])
        st, h, raw = a.http("POST", "/api/login", {"username": "ada", "password": "ada-password-1"})
        ada = h["set-cookie"].split(";", 1)[0]
        eb = gw.BusDevice(b, "sec..b", tok["sec..b"])
        edges.append(eb)
        await eb.start()
        ok, v = await wait_online(a, ada, "sec..b", 8)
        tap.ok("presence crosses the TLS bus: B's device 'sec..b' is online on A, with B's id",
               ok and v.get("gateway") == "gwB", v)
        dash = await a.dashboard(ada)
        await dash.send(json.dumps({"type": "subscribe", "devices": ["sec..b"]}))
        got = []

        async def read_dash():
            async for raw in dash:
                m = json.loads(raw)
                if m.get("type") == "telemetry" and m.get("packet", {}).get("device_id") == "sec..b":
                    got.append(m)
                    return
        sender = asyncio.ensure_future(eb.send_packets(1, 30, every=0.2))
        try:
            await asyncio.wait_for(read_dash(), 8)
        except asyncio.TimeoutError:
            pass
        sender.cancel()
        await dash.close()
        tap.ok("a dashboard on A gets the live telemetry of 'sec..b' on B", got, got)
        tap.ok("the log names the bus with the password masked",
               f"tls://{USER}:***@127.0.0.1:{nats.port}" in a.proc.text(), a.proc.text()[-800:])

        # --- a list whose first server does not answer
        dead = gw.free_port()
        listed = dict(good, nats_url=f"tls://{USER}:{PASSWORD}@127.0.0.1:{dead}," + nats.url())
        c = gw.BusGateway(env, "gwL")
        sides.append(c)
        c.start(**listed)
        tap.ok("a server list whose first server is down: joins through the next one",
               gw.wait_for(lambda: "bus: connected" in c.proc.text(), 15) and
               "bus: cannot connect" not in c.proc.text(), c.proc.text()[-1500:])
        ok, v = await wait_online(c, ada, "sec..b", 8)
        tap.ok("... and sees B's device online", ok and v.get("gateway") == "gwB", v)
        tap.ok("... its log shows both servers, both passwords masked",
               f"tls://{USER}:***@127.0.0.1:{dead},tls://{USER}:***@127.0.0.1:{nats.port}"
               in c.proc.text(), c.proc.text()[-800:])
        c.proc.stop()

        # --- what must not connect
        bad = {
            "a wrong password": (dict(good, nats_url=nats.url("wrong-password")),
                                 r"(?i)authori[sz]ation"),
            "a CA that did not sign the server's certificate":
                (dict(good, nats_ca_file=os.path.join(certs, "other-ca.crt")),
                 r"(?i)(certificate|ssl|tls|verif)"),
            "a name the certificate does not carry":
                (dict(good, nats_tls_hostname="not-the-server.example"),
                 r"(?i)(certificate|ssl|tls|verif|host)"),
        }
        import re
        for i, (what, (cfg, pattern)) in enumerate(bad.items()):
            s = gw.BusGateway(env, f"gwX{i}")
            sides.append(s)
            s.start(**cfg)
            said = gw.wait_for(lambda: "bus: cannot connect" in s.proc.text(), 15)
            time.sleep(2.5)  # a few retries
            text = s.proc.text()
            lines = [ln for ln in text.splitlines() if "bus: cannot connect" in ln]
            tap.ok(f"{what}: the gateway serves alone and says why once",
                   said and s.http("GET", "/healthz")[0] == 200 and len(lines) == 1 and
                   re.search(pattern, lines[0]) is not None and "bus: connected" not in text,
                   lines or text[-1500:])
            s.proc.stop()

        rc, out = refused_start(env, "gwY", nats_url=nats.url())
        tap.ok("tls:// without nats_ca_file: refused at start, naming nats_ca_file",
               rc != 0 and "nats_ca_file" in out and PASSWORD not in out, (rc, out[-600:]))
        rc, out = refused_start(env, "gwZ", nats_url=f"http://{USER}:{PASSWORD}@127.0.0.1:1")
        tap.ok("another scheme: refused at start, the password not repeated",
               rc != 0 and "nats_url" in out and PASSWORD not in out, (rc, out[-600:]))

        logs = [s.proc.text() for s in sides]
        tap.ok("the password appears in no gateway log",
               all(PASSWORD not in t for t in logs),
               [t[t.find(PASSWORD) - 200:t.find(PASSWORD) + 50] for t in logs if PASSWORD in t])
    finally:
        for e in edges:
            try:
                await asyncio.wait_for(e.ws.close(), 2)
            except Exception:
                pass
        for s in sides:
            if s.proc and s.proc.alive():
                rc = s.proc.stop()
                if s.name in ("gwA", "gwB"):
                    tap.eq(f"gateway {s.name} exits cleanly", rc, 0)
            if tap.failed and s.proc:
                tap.note(f"--- {s.name} log (tail) ---\n" + s.proc.text()[-3000:])
        nats.stop()
        env.close()
    tap.done()


asyncio.run(main())
