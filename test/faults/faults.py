#!/usr/bin/python3
# test/faults/faults.py: the fault-injection suite (issue 6, item 6;
# docs/faults.md explains the scenarios and holds the last full table).
#
# Runs the real system on this machine: a private PostgreSQL 15
# (test/lib/pg.sh), ems-dbwriter, ems-gateway with TLS (certificates from
# test/lib/mkcerts.sh's CA), and simulated ems-edge devices (--sim), each
# with its own buffer. The devices live in a network namespace joined to
# the host by a veth pair; "cutting the network" sets the device side of
# that pair down. Where namespaces are not available (not root) a TCP
# proxy of this script stands between the devices and the gateway instead,
# and a cut stops it forwarding anything (--net proxy forces that).
#
# Per scenario and device it takes the seq range the device generated
# (from its /status endpoint: buffer.next_seq before the fault and at the
# end), breaks something, repairs it, waits until PostgreSQL holds every
# generated seq, and counts with SQL:
#     generated  = seqs the edge appended to its buffer in the range
#     stored     = rows in telemetry for the device and the range
#     lost       = generated - count(DISTINCT seq)
#     duplicated = rows - count(DISTINCT seq)
#     catch-up   = from the end of the fault until every packet generated
#                  so far (all but the newest second) is in the database
# and checks the spacing of the stored packets (no missing second) and the
# live view: a dashboard WebSocket client (a user made with emsctl, a
# session from POST /api/login) must see the live packets within ~2 s
# while the backlog drains behind them.
#
# "Generated" after a kill -9 of the edge: every seq below the restarted
# daemon's first seq was handed out by the killed one. A seq counts as
# generated if its packet was appended to the buffer, i.e. it is in a copy
# of the buffer taken after the kill (before the restart) or already in
# PostgreSQL. Only the last seq handed out may be neither (the packet being
# built at the instant of the kill, never appended, never sent): that one
# is reported as "never appended" and not counted. Any other seq missing
# from both is a loss.
#
# Usage (faults.py --help lists every option):
#   faults.py [--build DIR] [--short | --full] [--hour fast|real|off]
#             [--only REGEX] [--net auto|netns|proxy] [--tap] [--md FILE]
# --short is what `make test` runs (test/suites/90-faults.py): outages of a
# few seconds, two devices. --full (`make test-faults`) uses 60 s outages
# and adds the one-hour outage (--hour fast: 3600 packets made at a 50 ms
# tick while the network is cut, then the daemon restarted at the normal
# 1 s tick; --hour real: the network cut for a real hour) and a backlog of
# 12,000 packets. Exit status 0 only if every check passed.
import argparse
import asyncio
import calendar
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.environ.get("EMS_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import emstest  # noqa: E402  (test/lib/emstest.py)
from emstest import Proc, free_port, iso_ms, wait_for  # noqa: E402

PG_SH = os.path.join(ROOT, "test/lib/pg.sh")
MKCERTS = os.path.join(ROOT, "test/lib/mkcerts.sh")

LIVE_DELAY_MAX_S = 2.0   # a live packet must reach the dashboard within this
LIVE_GAP_MAX_S = 2.5     # and live packets must keep coming at least this often
SPACING_MAX_S = 1.5      # stored packets at the 1 s tick: no step above 1.5 s


class Stop(BaseException):
    """SIGTERM or SIGINT: unwind and clean up."""


log = emstest.note  # one "# " comment line per line of text


def now():
    return time.time()


def ts_ms(text):
    """RFC 3339 UTC with milliseconds -> ms since the epoch."""
    main, _, frac = text.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return t * 1000 + int((frac + "000")[:3] or 0)


# ---------------------------------------------------------------- processes

# ---------------------------------------------------------------- the network

class NetnsNet:
    """The devices in their own network namespace, joined to the host by two
    veth pairs: "data" (edge <-> gateway; the one that is cut) and "mgmt"
    (the harness reading the devices' /status; never cut)."""

    kind = "netns"

    def __init__(self):
        pid = os.getpid()
        self.ns = f"emsf-{pid}"
        self.tag = f"emsf{pid}"
        n = pid % 8192
        base = f"10.231.{n // 32}.{(n % 32) * 8}"
        b = [int(x) for x in base.split(".")]
        self.host_ip = f"10.231.{b[2]}.{b[3] + 1}"     # the gateway listens here
        self.ns_ip = f"10.231.{b[2]}.{b[3] + 2}"
        self.mgmt_host_ip = f"10.231.{b[2]}.{b[3] + 5}"
        self.status_ip = f"10.231.{b[2]}.{b[3] + 6}"   # the devices' /status
        self.cut_now = False

    @staticmethod
    def available():
        if os.geteuid() != 0 or not shutil.which("ip"):
            return False
        probe = f"emsfp{os.getpid()}"
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
        if r.returncode != 0:
            return False
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return True

    @staticmethod
    def clean_stale():
        """Removes namespaces and links of earlier runs whose process is gone."""
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.match(r"emsf-(\d+)\b", line)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                subprocess.run(["ip", "netns", "del", f"emsf-{m.group(1)}"], capture_output=True)
                for s in "ac":
                    subprocess.run(["ip", "link", "del", f"emsf{m.group(1)}{s}"],
                                   capture_output=True)

    def _ip(self, *args, ns=False):
        argv = (["ip", "netns", "exec", self.ns, "ip"] if ns else ["ip"]) + list(args)
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")

    def setup(self):
        self.clean_stale()
        self._ip("netns", "add", self.ns)
        for host_if, ns_if, hip, nip in ((self.tag + "a", self.tag + "b", self.host_ip, self.ns_ip),
                                         (self.tag + "c", self.tag + "e", self.mgmt_host_ip,
                                          self.status_ip)):
            self._ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            self._ip("link", "set", ns_if, "netns", self.ns)
            self._ip("addr", "add", hip + "/30", "dev", host_if)
            self._ip("link", "set", host_if, "up")
            self._ip("addr", "add", nip + "/30", "dev", ns_if, ns=True)
            self._ip("link", "set", ns_if, "up", ns=True)
        self._ip("link", "set", "lo", "up", ns=True)

    def gateway_host(self):
        return self.host_ip

    def edge_url_host_port(self, gw_port):
        return self.host_ip, gw_port

    def wrap(self, argv):
        return ["ip", "netns", "exec", self.ns] + argv

    def status_bind(self):
        return self.status_ip

    def status_port(self, i):
        return 18080 + i  # a fresh namespace: every port is free

    def cut(self):
        self._ip("link", "set", self.tag + "b", "down", ns=True)
        self.cut_now = True

    def restore(self):
        self._ip("link", "set", self.tag + "b", "up", ns=True)
        self.cut_now = False

    def describe(self):
        return (f"network namespace {self.ns}; a cut sets the device side of the veth pair "
                f"{self.tag}a/{self.tag}b down (ip link set {self.tag}b down)")

    def teardown(self):
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        for s in "ac":
            subprocess.run(["ip", "link", "del", self.tag + s], capture_output=True)


class ProxyNet:
    """A TCP proxy between the devices and the gateway, on loopback. A cut
    stops it moving bytes (connections stay open and silent, new ones are
    accepted and held), as a dead link does; a restore resumes everything."""

    kind = "proxy"

    def __init__(self):
        self.up = threading.Event()
        self.up.set()
        self.quit = False
        self.lsock = None
        self.threads = []
        self.socks = []
        self.cut_now = False
        self.used_ports = set()

    def setup(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]

    def start(self, gw_port):
        self.gw_port = gw_port
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.quit:
            r, _, _ = select.select([self.lsock], [], [], 0.2)
            if not r:
                continue
            try:
                c, _ = self.lsock.accept()
            except OSError:
                continue
            self.socks.append(c)
            t = threading.Thread(target=self._conn, args=(c,), daemon=True)
            t.start()

    def _conn(self, c):
        while not self.up.wait(0.2):
            if self.quit:
                c.close()
                return
        try:
            u = socket.create_connection(("127.0.0.1", self.gw_port), 5)
        except OSError:
            c.close()
            return
        self.socks.append(u)
        t = threading.Thread(target=self._pump, args=(u, c), daemon=True)
        t.start()
        self._pump(c, u)

    def _pump(self, a, b):
        try:
            while not self.quit:
                r, _, _ = select.select([a], [], [], 0.2)
                if not r:
                    continue
                data = a.recv(65536)
                while not self.up.wait(0.2):
                    if self.quit:
                        return
                if not data:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(data)
        except (OSError, ValueError):  # ValueError: the other pump closed it
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def gateway_host(self):
        return "127.0.0.1"

    def edge_url_host_port(self, gw_port):
        return "127.0.0.1", self.port

    def wrap(self, argv):
        return argv

    def status_bind(self):
        return "127.0.0.1"

    def status_port(self, i):
        while True:
            p = free_port("127.0.0.1")
            if p not in self.used_ports:
                self.used_ports.add(p)
                return p

    def cut(self):
        self.up.clear()
        self.cut_now = True

    def restore(self):
        self.up.set()
        self.cut_now = False

    def describe(self):
        return ("a TCP proxy of the harness between the devices and the gateway; a cut stops it "
                "forwarding bytes and holds new connections (a silent link)")

    def teardown(self):
        self.quit = True
        self.up.set()
        for s in self.socks + [self.lsock]:
            try:
                s.close()
            except Exception:
                pass


# ---------------------------------------------------------------- the dashboard

class Dashboard:
    """A browser's live view: /ws/dashboard subscribed to every device, in a
    thread of its own; reconnects whenever the gateway goes away."""

    def __init__(self, host, port, cafile, cookie_fn):
        self.host, self.port, self.cafile, self.cookie_fn = host, port, cafile, cookie_fn
        self.live = []        # (recv_time, device, seq, ts_ms, backfill flag, backlog)
        self.connects = 0
        self.quit = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.quit = True
        self.thread.join(10)

    def _run(self):
        asyncio.run(self._main())

    async def _main(self):
        import websockets
        ctx = ssl.create_default_context(cafile=self.cafile)
        url = f"wss://{self.host}:{self.port}/ws/dashboard"
        origin = f"https://{self.host}:{self.port}"
        while not self.quit:
            try:
                cookie = self.cookie_fn()
                async with websockets.connect(url, ssl=ctx, origin=origin,
                                              extra_headers={"Cookie": cookie},
                                              open_timeout=5, max_size=2 ** 22) as ws:
                    self.connects += 1
                    await ws.send(json.dumps({"type": "subscribe", "devices": "*"}))
                    while not self.quit:
                        try:
                            text = await asyncio.wait_for(ws.recv(), 0.5)
                        except asyncio.TimeoutError:
                            continue
                        t = now()
                        m = json.loads(text)
                        if m.get("type") == "telemetry":
                            p = m["packet"]
                            with self.lock:
                                self.live.append((t, p["device_id"], p.get("seq"),
                                                  ts_ms(p["timestamp"]), bool(p.get("backfill")),
                                                  p.get("backlog") or 0))
            except Exception:
                await asyncio.sleep(0.3)

    def between(self, dev, t0, t1):
        with self.lock:
            return [x for x in self.live if x[1] == dev and t0 <= x[0] <= t1]


# ---------------------------------------------------------------- the system

class Edge:
    def __init__(self, sysm, name, index, extra_conf=None, seed=1):
        self.sysm, self.name, self.index = sysm, name, index
        self.dir = os.path.join(sysm.dir, f"edge-{name}")
        os.makedirs(self.dir)
        self.buffer = os.path.join(self.dir, "buffer")
        self.token_file = os.path.join(self.dir, "token")
        self.conf = os.path.join(self.dir, "ems-edge.conf")
        self.status_host = sysm.net.status_bind()
        self.status_port = sysm.net.status_port(index)
        self.extra_conf = dict(extra_conf or {})
        self.seed = seed
        self.proc = None
        self.first_seq = None  # the first seq this device ever made

    def write_conf(self, **over):
        host, port = self.sysm.net.edge_url_host_port(self.sysm.gw_port)
        conf = {
            "device_id": self.name,
            "cloud_url": f"wss://{host}:{port}",
            "token_file": self.token_file,
            "ca_file": os.path.join(self.sysm.certs, "ca.crt"),
            "buffer_path": self.buffer,
            "status_port": str(self.status_port),
            "status_bind": self.status_host,
            "log_level": "info",
        }
        conf.update(self.sysm.edge_conf)
        conf.update(self.extra_conf)
        conf.update({k: str(v) for k, v in over.items()})
        with open(self.conf, "w") as f:
            f.write("# written by test/faults/faults.py\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")

    def start(self, **over):
        self.write_conf(**over)
        argv = self.sysm.net.wrap([os.path.join(self.sysm.build, "ems-edge"), "--config",
                                   self.conf, "--sim", "--profile", "sunny",
                                   "--seed", str(self.seed)])
        if self.proc is None:
            self.proc = Proc(f"edge-{self.name}", argv,
                             os.path.join(self.sysm.dir, f"edge-{self.name}.log"),
                             start=False, banner=True)
        self.proc.argv = argv
        self.proc.start()
        st = wait_for(lambda: self.status() if self.proc.alive() else None, 30)
        if not st:
            raise RuntimeError(f"edge {self.name} did not start:\n" + self.proc.text()[-3000:])
        if self.first_seq is None:
            self.first_seq = self.opened_next_seq()
        return st

    def opened_next_seq(self):
        """The first seq of the running process, from the store's open line."""
        m = wait_for(lambda: re.findall(r"next seq (\d+)", self.proc.text(since_start=True)), 10)
        if not m:
            raise RuntimeError(f"edge {self.name}: no 'next seq' line in its log")
        return int(m[0])

    def status(self, timeout=3):
        c = http.client.HTTPConnection(self.status_host, self.status_port, timeout=timeout)
        try:
            c.request("GET", "/status")
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                return None
            return json.loads(body)
        finally:
            c.close()

    def next_seq(self):
        return self.status()["buffer"]["next_seq"]

    def snapshot_buffer(self, dest):
        """Copies the buffer files (after a kill) and returns the seqs in it."""
        os.makedirs(dest, exist_ok=True)
        for suffix in ("", "-wal", "-journal"):
            src = self.buffer + suffix
            if os.path.exists(src):
                shutil.copy2(src, os.path.join(dest, "buffer" + suffix))
        path = os.path.join(dest, "buffer")
        if not os.path.exists(path):
            return set()
        con = sqlite3.connect(path)
        try:
            rows = con.execute("SELECT seq FROM packets WHERE seq < 4611686018427387904").fetchall()
        finally:
            con.close()
        return {r[0] for r in rows}


class System:
    def __init__(self, build, net, edge_conf, keep=False):
        self.build = build
        self.net = net
        self.edge_conf = edge_conf
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="ems-faults.")
        os.chmod(self.dir, 0o755)
        self.certs = os.path.join(self.dir, "certs")
        self.sock = os.path.join(self.dir, "dbwriter.sock")
        self.keyfile = os.path.join(self.dir, "session.key")
        self.pg_dir = self.dsn = None
        self.dbw = self.gw = None
        self.edges = {}
        self.dash = None
        self.gw_port = None
        self.password = "faults-" + os.urandom(6).hex()
        self.cookie = None

    # ---- setup
    def make_certs(self):
        subprocess.run(["sh", MKCERTS, self.certs], check=True)
        ip = self.net.gateway_host()
        # mbedTLS 2.28 matches a host name against DNS names only, so the
        # address is there twice: as a DNS name (the edge) and as an IP (Python).
        san = f"DNS:localhost,IP:127.0.0.1,DNS:{ip},IP:{ip}"
        c = self.certs
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{c}/gw.key", "-out",
                        f"{c}/gw.csr", "-subj", "/CN=localhost"], check=True, capture_output=True)
        with open(f"{c}/gw.ext", "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        subprocess.run(["openssl", "x509", "-req", "-in", f"{c}/gw.csr", "-CA", f"{c}/ca.crt",
                        "-CAkey", f"{c}/ca.key", "-CAcreateserial", "-days", "30", "-out",
                        f"{c}/gw.crt", "-extfile", f"{c}/gw.ext"], check=True, capture_output=True)
        with open(f"{c}/gw-chain.crt", "w") as out:
            for n in ("gw.crt", "ca.crt"):
                with open(f"{c}/{n}") as f:
                    out.write(f.read())

    def start_pg(self):
        out = subprocess.run([PG_SH, "start"], check=True, capture_output=True,
                             text=True).stdout.strip()
        parts = out.split(" ", 2)
        self.pg_dir, self.dsn = parts[0], parts[2]

    def emsctl(self, *args, stdin=None):
        r = subprocess.run([os.path.join(self.build, "emsctl"), *args], input=stdin,
                           capture_output=True, text=True, env=dict(os.environ, EMS_PG_DSN=self.dsn))
        if r.returncode != 0:
            raise RuntimeError(f"emsctl {' '.join(args)}: {r.stderr}")
        return r.stdout

    def psql(self, sql, timeout=20):
        r = subprocess.run(["psql", self.dsn, "-XAtq", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="5"))
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.strip()}")
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def start(self, devices):
        self.net.setup()
        self.make_certs()
        with open(self.keyfile, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.makedirs(os.path.join(self.dir, "www"))
        with open(os.path.join(self.dir, "www", "index.html"), "w") as f:
            f.write("<!doctype html><title>ems</title>\n")
        self.start_pg()
        self.emsctl("user", "add", "faults", "--role", "viewer", stdin=self.password + "\n")
        self.dbw = Proc("dbwriter", [os.path.join(self.build, "ems-dbwriter"), "--socket", self.sock,
                                     "--dsn", self.dsn], os.path.join(self.dir, "dbwriter.log"),
                        start=False, banner=True)
        self.dbw.start()
        if not wait_for(lambda: os.path.exists(self.sock) or not self.dbw.alive(), 30) or \
                not self.dbw.alive():
            raise RuntimeError("ems-dbwriter did not start:\n" + self.dbw.text()[-3000:])
        self.gw_port = free_port(self.net.gateway_host())
        if isinstance(self.net, ProxyNet):
            self.net.start(self.gw_port)
        self.gw = Proc("gateway", [
            os.path.join(self.build, "ems-gateway"),
            f"--listen={self.net.gateway_host()}:{self.gw_port}", "--tls=on",
            f"--tls_cert={self.certs}/gw-chain.crt", f"--tls_key={self.certs}/gw.key",
            f"--dbwriter_socket={self.sock}", f"--session_key_file={self.keyfile}",
            f"--static_dir={self.dir}/www", "--log_level=info"],
            os.path.join(self.dir, "gateway.log"), start=False, banner=True)
        self.start_gateway()
        self.cookie = self.login()
        self.dash = Dashboard(self.net.gateway_host(), self.gw_port,
                              os.path.join(self.certs, "ca.crt"), self.session_cookie)
        self.dash.start()
        for i, (name, extra) in enumerate(devices):
            self.add_edge(name, i, extra)

    def add_edge(self, name, i, extra=None, start=True, **over):
        e = Edge(self, name, i, extra, seed=i + 1)
        out = self.emsctl("device", "add", name)
        tok = re.findall(r"\b[0-9a-f]{64}\b", out)
        if not tok:
            raise RuntimeError(f"emsctl device add {name} printed no token")
        with open(e.token_file, "w") as f:
            f.write(tok[0] + "\n")
        os.chmod(e.token_file, 0o600)
        self.edges[name] = e
        if start:
            e.start(**over)
        return e

    def healthy(self):
        st, _ = self.http("GET", "/healthz")
        return st == 200

    def start_gateway(self):
        self.gw.start()
        ok = wait_for(lambda: self.healthy() or not self.gw.alive(), 30, 0.1)
        if not self.gw.alive() or not ok:
            raise RuntimeError("ems-gateway did not become healthy:\n" + self.gw.text()[-3000:])

    def start_dbwriter(self):
        self.dbw.start()

    def http(self, method, path, body=None, timeout=5, cookie=None):
        ctx = ssl.create_default_context(cafile=os.path.join(self.certs, "ca.crt"))
        c = http.client.HTTPSConnection(self.net.gateway_host(), self.gw_port, context=ctx,
                                        timeout=timeout)
        try:
            h = {"Cookie": cookie} if cookie else {}
            if body is not None:
                body = json.dumps(body)
                h["Content-Type"] = "application/json"
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, (r.getheader("Set-Cookie"), data)
        finally:
            c.close()

    def login(self):
        st, (cookie, body) = self.http("POST", "/api/login",
                                       {"username": "faults", "password": self.password})
        if st != 200 or not cookie:
            raise RuntimeError(f"login: {st} {body!r}")
        return cookie.split(";", 1)[0]

    def session_cookie(self):
        return self.cookie

    def pg_pids(self):
        """The postmaster and its children (for SIGSTOP)."""
        with open(os.path.join(self.pg_dir, "data", "postmaster.pid")) as f:
            pm = int(f.readline())
        pids = [pm]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        st = f.read()
                    ppid = int(st.rsplit(")", 1)[1].split()[1])
                    if ppid == pm:
                        pids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        return pids

    def stop_processes(self):
        """Stops devices, gateway, DB writer (in that order) with SIGTERM;
        returns {name: exit status} (None: it had to be killed)."""
        if self.dash:
            self.dash.stop()
            self.dash = None
        out = {}
        procs = [e.proc for e in self.edges.values() if e.proc] + [self.gw, self.dbw]
        for p in procs:
            if p and p.p is not None and p.alive():
                out[p.name] = p.stop()
        return out

    def sanitizer_reports(self):
        """Lines of sanitizer reports in any process log."""
        bad = []
        for n in sorted(os.listdir(self.dir)):
            if n.endswith(".log"):
                with open(os.path.join(self.dir, n), "rb") as f:
                    text = f.read().decode("utf-8", "replace")
                bad += [f"{n}: {line.strip()}" for line in emstest.sanitizer_lines(text)]
        return bad

    def close(self, failed=False):
        self.stop_processes()
        if self.pg_dir:
            subprocess.run([PG_SH, "stop", self.pg_dir], capture_output=True)
        self.net.teardown()
        if failed or self.keep:
            dest = os.path.join(ROOT, "build", "test-logs", "faults")
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest, exist_ok=True)
            for n in os.listdir(self.dir):
                if n.endswith(".log"):
                    shutil.copy2(os.path.join(self.dir, n), dest)
            log(f"process logs kept in {dest}")
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- accounting

def db_range(sysm, dev, lo, hi):
    """(rows, distinct) of dev's telemetry with seq in [lo, hi]."""
    r = sysm.psql(f"SELECT count(*), count(DISTINCT seq) FROM telemetry "
                  f"WHERE device_id = '{dev}' AND seq BETWEEN {lo} AND {hi}")
    return int(r[0][0]), int(r[0][1])


def db_max_gap(sysm, dev, lo, hi):
    """The largest time step between consecutive stored seqs in [lo, hi], s."""
    r = sysm.psql(
        f"SELECT coalesce(max(gap), 0) FROM (SELECT extract(epoch FROM ts - lag(ts) OVER "
        f"(ORDER BY seq)) AS gap FROM telemetry WHERE device_id = '{dev}' AND seq BETWEEN {lo} "
        f"AND {hi}) g")
    return float(r[0][0])


def db_count_span(sysm, dev, lo, hi):
    """(rows, seconds from the first to the last timestamp) of seqs in [lo, hi]."""
    r = sysm.psql(f"SELECT count(*), coalesce(extract(epoch FROM max(ts) - min(ts)), 0) "
                  f"FROM telemetry WHERE device_id = '{dev}' AND seq BETWEEN {lo} AND {hi}")
    return int(r[0][0]), float(r[0][1])


def db_details(sysm, dev, lo, hi, excused):
    ex = ",".join(str(s) for s in excused) or "-1"
    missing = [int(r[0]) for r in sysm.psql(
        f"SELECT s FROM generate_series({lo}::bigint, {hi}::bigint) s "
        f"WHERE s NOT IN ({ex}) AND NOT EXISTS (SELECT 1 FROM telemetry t "
        f"WHERE t.device_id = '{dev}' AND t.seq = s) ORDER BY s LIMIT 50")] if hi >= lo else []
    dups = [(int(a), int(b)) for a, b in sysm.psql(
        f"SELECT seq, count(*) FROM telemetry WHERE device_id = '{dev}' AND seq BETWEEN {lo} "
        f"AND {hi} GROUP BY seq HAVING count(*) > 1 ORDER BY seq LIMIT 20")]
    r = sysm.psql(f"SELECT count(*) FILTER (WHERE backfill) FROM telemetry "
                  f"WHERE device_id = '{dev}' AND seq BETWEEN {lo} AND {hi}")
    return missing, dups, int(r[0][0])


class Scenario:
    def __init__(self, name, title, inject, outage, keeps_link=False, edges=None):
        self.name, self.title, self.inject, self.outage = name, title, inject, outage
        self.keeps_link = keeps_link  # the edge's connection survives the fault
        self.edges = edges            # None: every device


class Runner:
    def __init__(self, sysm, args):
        self.s = sysm
        self.args = args
        self.rows = []
        self.failures = []
        self.tap = emstest.Tap() if args.tap else None  # else PASS/FAIL lines
        self.excused_all = set()  # (device, seq) never appended, over the run

    def ok(self, name, cond, why=""):
        if self.tap:
            self.tap.ok(name, cond, why)
        else:
            log(("PASS " if cond else "FAIL ") + name + ("" if cond else f": {why}"))
        if not cond:
            self.failures.append(f"{name}: {why}")
        return cond

    def control(self):
        """Negative control: the counting must see a row taken away and a
        row doubled (a second row for a seq, as a re-stamped resend would
        make). Done last, on the device fa, after every other check."""
        s = self.s
        e = s.edges["fa"]
        lo, hi = e.first_seq, e.next_seq() - 1
        mid = s.psql(f"SELECT seq FROM telemetry WHERE device_id = 'fa' AND seq BETWEEN {lo} "
                     f"AND {hi} ORDER BY seq OFFSET 3 LIMIT 2")
        a, b = int(mid[0][0]), int(mid[1][0])
        s.psql(f"DELETE FROM telemetry WHERE device_id = 'fa' AND seq = {a}")
        s.psql(f"INSERT INTO telemetry SELECT ts + interval '1 ms', received_at, seq, "
               f"battery_voltage, battery_current, battery_power, battery_soc, battery_temperature, "
               f"grid_voltage, grid_power, grid_frequency, target_power, error_flags, state, mode, "
               f"target_mode, wifi_strength, clock_synced, backfill, device_id FROM telemetry "
               f"WHERE device_id = 'fa' AND seq = {b}")
        rows, distinct = db_range(s, "fa", lo, hi)
        missing, dups, _ = db_details(s, "fa", lo, hi, set())
        self.ok("control: the counting sees a deleted row and a doubled one",
                (hi - lo + 1) - distinct == 1 and rows - distinct == 1 and missing == [a] and
                dups == [(b, 2)], f"lost {(hi - lo + 1) - distinct} missing {missing}, "
                f"duplicated {rows - distinct} {dups}")

    @staticmethod
    def sample_held(ctx, edges):
        """What the devices hold unacknowledged just before the repair:
        proof that the fault held commits (and so acks) back, end to end."""
        held = 0
        for e in edges:
            try:
                held += e.status()["buffer"]["pending"]
            except Exception:
                pass
        ctx["held"] = held

    def history(self):
        """What a dashboard's chart gets: the raw history of each device over
        the whole run (GET /api/devices/ID/telemetry?resolution=raw, asked
        in windows of 2,000 packets) must be exactly the stored packets, one
        per seq, with the backfilled ones marked. A device with more than
        3,000 packets in the last hour is also asked for the dashboard's
        default view, the last hour at resolution auto (raw)."""
        s = self.s
        for e in s.edges.values():
            # The device goes on sending: the rows first, then the API, and
            # the API's answer is compared up to the last of those rows.
            db = {int(a): b == "t" for a, b in s.psql(
                f"SELECT seq, backfill FROM telemetry WHERE device_id = '{e.name}'")}
            top = max(db)
            # Windows of at most 2,000 packets (the answer stays well under a
            # megabyte), cut at the packets' own timestamps: from inclusive,
            # to exclusive, so they partition the rows exactly.
            cuts = [int(x[0]) for x in s.psql(
                f"SELECT ms FROM (SELECT (extract(epoch FROM ts) * 1000)::bigint AS ms, "
                f"row_number() OVER (ORDER BY ts) AS i FROM telemetry WHERE device_id = "
                f"'{e.name}' AND seq <= {top}) r WHERE i % 2000 = 1 ORDER BY ms")]
            last = int(s.psql(f"SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM telemetry "
                              f"WHERE device_id = '{e.name}' AND seq <= {top}")[0][0])
            cuts.append(last + 1)
            api, err = {}, None
            for w0, w1 in zip(cuts, cuts[1:]):
                try:
                    st, (_, body) = s.http("GET", f"/api/devices/{e.name}/telemetry?from="
                                           f"{iso_ms(w0)}&to={iso_ms(w1)}&resolution=raw",
                                           cookie=s.cookie, timeout=60)
                except Exception as ex:
                    st, body = 0, f"{type(ex).__name__}: {ex}".encode()
                if st != 200:
                    err = f"HTTP {st}: {body[:200]!r}"
                    break
                for p in json.loads(body)["points"]:
                    if p["seq"] <= top:
                        api.setdefault(p["seq"], []).append(bool(p["backfill"]))
            if err:
                self.ok(f"{e.name}: the history API shows every stored packet", False, err)
                continue
            doubled = [q for q, v in api.items() if len(v) > 1]
            flags = {q: v[0] for q, v in api.items()}
            nbf = sum(1 for v in db.values() if v)
            self.ok(f"{e.name}: the history API shows every stored packet once, {nbf} of "
                    f"{len(db)} marked backfilled", flags == db and not doubled,
                    f"{len(flags)} seqs for {len(db)} rows; doubled {doubled[:10]}; "
                    f"missing {sorted(set(db) - set(flags))[:10]}; flags differ "
                    f"{[q for q in db if q in flags and flags[q] != db[q]][:10]}")
            last_hour = int(s.psql(f"SELECT count(*) FROM telemetry WHERE device_id = '{e.name}' "
                                   f"AND ts > now() - interval '1 hour'")[0][0])
            if last_hour > 3000:
                # The DB writer answers at most 5,000 raw rows, "truncated"
                # beyond (docs/protocol.md 5.5); only a device at a test tick
                # has that many in an hour.
                try:
                    st, (_, body) = s.http("GET", f"/api/devices/{e.name}/telemetry",
                                           cookie=s.cookie, timeout=60)
                    why = f"HTTP {st}" if st != 200 else ""
                    ans = json.loads(body) if st == 200 else {}
                    n, cut = len(ans.get("points", [])), bool(ans.get("truncated"))
                except Exception as ex:
                    st, n, cut, why = 0, 0, False, f"{type(ex).__name__}: {ex}"
                self.ok(f"{e.name}: the dashboard's default history view (the last hour, "
                        f"auto) answers ({n} of {last_hour} points"
                        f"{', truncated' if cut else ''})",
                        st == 200 and (n >= last_hour or (cut and n > 0)),
                        why or f"{n} points, truncated {cut}")

    # ---- steady state between scenarios
    def settle(self, edges, timeout=120):
        def ready():
            if not self.s.healthy():
                return False
            for e in edges:
                st = e.status()
                if not st["link"]["connected"] or st["buffer"]["pending"] > 2 or \
                        st["backfill"]["active"]:
                    return False
            return True
        if not wait_for(ready, timeout, 0.25):
            states = {e.name: (lambda st: (st["link"]["state"], st["buffer"]["pending"],
                                           st["backfill"]["active"]))(e.status()) for e in edges}
            raise RuntimeError(f"the system did not settle within {timeout} s: {states}")

    def run(self, sc):
        s = self.s
        edges = [s.edges[n] for n in (sc.edges or list(s.edges))]
        self.settle(edges)
        time.sleep(1.5)
        # excused: seqs handed out but never appended (edge kill -9, see the
        # top); bounds: process restarts of a device, (first seq of the new
        # process, its tick in s): the spacing is checked between them.
        ctx = {"excused": {e.name: set() for e in edges}, "notes": [],
               "bounds": {e.name: [] for e in edges}, "tick0": {}, "checks": [],
               "scenario": sc.name}
        start = {e.name: e.next_seq() for e in edges}
        t_start = now()
        gw_log_at = os.path.getsize(s.gw.log)
        # A few packets flow normally first, and the fault lands at a random
        # instant within a tick, so that it catches packets in every stage.
        time.sleep(2.0 + random.random())
        log(f"--- {sc.name}: {sc.title} (outage {sc.outage:g} s)")
        t_end = sc.inject(self, ctx, edges, sc.outage)
        held = ctx.get("held", 0)
        for dev, seqs in ctx["excused"].items():
            self.excused_all.update((dev, x) for x in seqs)
        for name, s0 in ctx.get("start_override", {}).items():
            start[name] = s0
        # Catch-up: every packet generated so far, but the newest second, is stored.
        cap = max(90.0, 3 * sc.outage + 90)
        t_caught = None
        caught = {}  # device -> when it had caught up
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline and len(caught) < len(edges):
            for e in edges:
                if e.name in caught:
                    continue
                try:
                    hi = e.next_seq() - 2
                    want = hi - start[e.name] + 1 - len([x for x in ctx["excused"][e.name]
                                                         if start[e.name] <= x <= hi])
                    if db_range(s, e.name, start[e.name], hi)[1] >= want:
                        caught[e.name] = now()
                except Exception:
                    pass
            time.sleep(0.25)
        if len(caught) == len(edges):
            t_caught = max(caught.values())
        catch = (t_caught - t_end) if t_caught else None
        # Final range: what the edges made up to now; wait until all is stored.
        time.sleep(2)
        end = {e.name: e.next_seq() - 1 for e in edges}

        def all_in():
            for e in edges:
                lo, hi = start[e.name], end[e.name]
                exc = len([x for x in ctx["excused"][e.name] if lo <= x <= hi])
                if db_range(s, e.name, lo, hi)[1] < hi - lo + 1 - exc:
                    return False
            return True
        wait_for(all_in, 30, 0.25)
        tot = {"generated": 0, "stored": 0, "lost": 0, "dup": 0}
        spacing = 0.0  # the largest step between stored packets, as a share of its limit
        step = 0.0     # the largest step in seconds where the tick is 1 s
        live_delay, live_gap, live_n = 0.0, 0.0, 0
        bf_live = False
        stale_total = [0]
        backfilled = 0
        for e in edges:
            lo, hi = start[e.name], end[e.name]
            exc = {x for x in ctx["excused"][e.name] if lo <= x <= hi}
            gen = hi - lo + 1 - len(exc)
            rows, distinct = db_range(s, e.name, lo, hi)
            missing, dups, nbf = db_details(s, e.name, lo, hi, exc)
            # Stored packets must follow each other at the tick, except across
            # a restart of the device's daemon (it made nothing while down).
            cuts = [(lo, float(ctx["tick0"].get(e.name, 1.0)))] + \
                [(b, t) for b, t in ctx["bounds"][e.name] if lo < b <= hi]
            gap = 0.0
            for i, (a, tick) in enumerate(cuts):
                b = cuts[i + 1][0] - 1 if i + 1 < len(cuts) else hi
                g = db_max_gap(s, e.name, a, b)
                if tick >= 1.0:
                    # At 1 s: at most 1.5 s between two stored packets.
                    spacing = max(spacing, g / SPACING_MAX_S)
                    step = max(step, g)
                else:
                    # A test tick of tens of ms: jitter is a large share of
                    # the tick, so the steps say little; instead, one packet
                    # per tick of the daemon's grid over the segment's time,
                    # less the ticks the daemon logged as skipped (a stalled
                    # process skips missed ticks rather than run a burst).
                    n, span = db_count_span(s, e.name, a, b)
                    slots = int(round(span / tick)) + 1
                    skipped = ctx.get("skipped", {}).get(e.name, 0)
                    spacing = max(spacing, 0.0 if slots - n <= skipped else 2.0)
                    ctx["notes"].append(f"{e.name}: the {tick * 1000:.0f} ms segment seq {a}..{b}: "
                                        f"{n} packets over {span:.2f} s = {slots} ticks, "
                                        f"{skipped} ticks the daemon logged as skipped")
                gap = max(gap, g)
            lost = gen - distinct
            dup = rows - distinct
            tot["generated"] += gen
            tot["stored"] += rows
            tot["lost"] += lost
            tot["dup"] += dup
            backfilled += nbf
            detail = f"{e.name}: seq {lo}..{hi}: generated {gen}, rows {rows}, distinct {distinct}"
            if exc:
                detail += f", never appended {sorted(exc)}"
            if missing:
                detail += f", MISSING {missing[:20]}{'...' if len(missing) > 20 else ''}"
            if dups:
                detail += f", DUPLICATED {dups}"
            detail += f", {nbf} backfilled, largest spacing {gap:.3f} s"
            detail += (f", caught up {caught[e.name] - t_end:.1f} s after the fault"
                       if e.name in caught else ", NOT caught up")
            if len(cuts) > 1:
                detail += f" (restarts at seq {[b for b, _ in cuts[1:]]})"
            log(detail)
            # Live view of this device while its backlog drained. After a
            # fault that drops the link, a device that had nothing left to
            # send counts as caught up while it still waits out its reconnect
            # delay (up to reconnect_max_s, with jitter; finding 2 below):
            # its live view is judged from its first live packet after the
            # repair, so the window waits for that packet (bounded).
            t0 = t_start if sc.keeps_link else t_end
            t1 = (t_caught or now()) + 3
            if not sc.keeps_link:
                back = wait_for(lambda: s.dash.between(e.name, t_end, now() + 1),
                                float({**s.edge_conf, **e.extra_conf}.get("reconnect_max_s", 60)) + 5, 0.25)
                if back:
                    t1 = max(t1, back[0][0] + 3)
                    time.sleep(max(0.0, t1 - now()))
            lv = s.dash.between(e.name, t0, t1)
            if not sc.keeps_link:
                # Packets sent live before or during the cut may still come
                # out of the old TCP connection once the link is back (the
                # kernel, or a middlebox, kept them): late by the outage. They
                # are reported, not taken for the live view's delay, which is
                # about packets made after the repair.
                stale = [x for x in lv if x[3] / 1000.0 < t_end - 1.0]
                lv = [x for x in lv if x[3] / 1000.0 >= t_end - 1.0]
                if stale:
                    ctx["notes"].append(
                        f"{e.name}: {len(stale)} packets made before the repair (seq "
                        f"{stale[0][2]}..{stale[-1][2]}) reached the live view after it, up to "
                        f"{max(x[0] - x[3] / 1000.0 for x in stale):.1f} s late (sent live on "
                        "the old connection, delivered when the link came back)")
                    stale_total[0] += len(stale)
                if lv:
                    t0 = lv[0][0]
            if lv:
                live_n += len(lv)
                live_delay = max(live_delay, max(x[0] - x[3] / 1000.0 for x in lv))
                times = [t0] + [x[0] for x in lv] + [t1]
                live_gap = max(live_gap, max(b - a for a, b in zip(times, times[1:])))
            else:
                live_gap = float("inf")
            if lv and max(x[5] for x in lv) > 0:
                bl = [x[5] for x in lv]
                ctx["notes"].append(f"{e.name}: the backlog member of its live packets: largest "
                                    f"{max(bl)}, last {bl[-1]} (backfill progress)")
            if any(x[4] for x in lv):
                bf_live = True
                ctx["notes"].append(f"{e.name}: a backfilled packet reached the live view")
        with open(s.gw.log, "rb") as f:
            f.seek(gw_log_at)
            limited = f.read().decode("utf-8", "replace").count("closing 4008")
        if limited:
            ctx["notes"].append(f"the gateway closed devices {limited} times for exceeding its "
                                "rate limit (4008) during this scenario")
        row = {"scenario": sc.name, "limited": limited, "stale": stale_total[0], "title": sc.title, "outage": sc.outage, **tot, "held": held,
               "catchup": catch, "spacing": spacing, "step": step, "live_delay": live_delay,
               "live_gap": live_gap, "live_n": live_n, "backfilled": backfilled,
               "notes": ctx["notes"]}
        self.rows.append(row)
        c = f"{catch:.1f} s" if catch is not None else "never"
        self.ok(f"{sc.name}: 0 lost, 0 duplicated ({tot['generated']} generated, "
                f"{tot['stored']} stored, caught up in {c})",
                tot["lost"] == 0 and tot["dup"] == 0 and catch is not None,
                f"lost {tot['lost']}, duplicated {tot['dup']}, catch-up {c}")
        self.ok(f"{sc.name}: the gap is backfilled at 1 s resolution (largest spacing "
                f"{spacing:.2f} of the limit)", spacing <= 1.0 and tot["lost"] == 0,
                f"largest spacing {spacing:.2f} of the limit")
        self.ok(f"{sc.name}: the live view stays current (largest delay {live_delay:.2f} s, "
                f"largest gap {live_gap:.2f} s, {live_n} live packets, {limited} rate-limit "
                "disconnects)",
                live_n > 0 and live_delay <= LIVE_DELAY_MAX_S and live_gap <= LIVE_GAP_MAX_S
                and limited == 0 and not bf_live,
                f"delay {live_delay:.2f} s, gap {live_gap:.2f} s, {limited} rate-limit "
                f"disconnects (4008){', backfilled packets in the live view' if bf_live else ''}")
        for name, cond, why in ctx["checks"]:
            self.ok(name, cond, why)
        for n in ctx["notes"]:
            log(f"note: {n}")
        return row


# ---------------------------------------------------------------- the faults

def fault_gateway_kill9(r, ctx, edges, outage):
    r.s.gw.kill9()
    time.sleep(outage)
    r.sample_held(ctx, edges)
    t = now()
    r.s.start_gateway()
    return t


def fault_dbwriter_kill9(r, ctx, edges, outage):
    r.s.dbw.kill9()
    time.sleep(outage)
    r.sample_held(ctx, edges)
    t = now()
    r.s.start_dbwriter()
    return t


def _aim_at_tick(e):
    """Sleeps until just after the device's next tick (its packets are
    stamped at the tick), plus 0..3 ms, so that some kills land while the
    packet is being built or appended."""
    st = e.status()
    last = ts_ms(st["last_telemetry"]["timestamp"]) / 1000.0
    nxt = last + 1.0
    while nxt < now():
        nxt += 1.0
    time.sleep(max(0.0, nxt - now() + random.uniform(0.0, 0.003)))


def sc_name(ctx):
    return ctx["scenario"]


def fault_edge_kill9(r, ctx, edges, outage):
    """Kills the device's daemon with SIGKILL `kills` times in a row, at
    random instants and at the instant of its tick, restarting it each time;
    the total time it is down is `outage`."""
    e = edges[0]
    kills = r.args.edge_kills
    damaged = []
    t = now()
    for i in range(kills):
        if i:
            time.sleep(random.uniform(1.0, 3.0))
        if i % 2:
            _aim_at_tick(e)
        e.proc.kill9()
        snap = e.snapshot_buffer(os.path.join(r.s.dir, f"snap-{e.name}-{i}"))
        time.sleep(max(0.5, outage / kills))
        t = now()
        e.start()
        first = e.opened_next_seq()
        ctx["bounds"][e.name].append((first, 1.0))
        # The killed daemon handed out every seq below `first`. The last one
        # is excused if it is neither in the buffer copied after the kill nor
        # in PostgreSQL: the packet being built at the instant of the kill,
        # never appended, never sent. Anything else missing counts as lost.
        last = first - 1
        in_db = r.s.psql(f"SELECT 1 FROM telemetry WHERE device_id = '{e.name}' AND seq = {last}")
        excused = last not in snap and not in_db
        if excused:
            ctx["excused"][e.name].add(last)
        ctx["notes"].append(f"{e.name}: kill {i + 1}: the buffer copied after the kill held "
                            f"{len(snap)} packets"
                            + (f" (seq {min(snap)}..{max(snap)})" if snap else "")
                            + f"; the restarted daemon continued at seq {first}"
                            + (f"; seq {last} was handed out but never appended (killed while "
                               "building it): not counted" if excused else ""))
        opened = e.proc.text(since_start=True)
        if re.search(r"damaged|fails its checksum|salvaged", opened) or \
                "integrity check: ok" not in opened:
            damaged.append(i + 1)
            ctx["notes"].append(f"{e.name}: after kill {i + 1} the store did not open clean:\n"
                                + "\n".join(ln for ln in opened.splitlines() if "store" in ln))
    r.sample_held(ctx, edges)
    corrupt = e.status()["buffer"]["corrupt_total"]
    ctx["checks"].append((f"{sc_name(ctx)}: the buffer opened intact after each of {kills} kills "
                          "(integrity check ok, no damaged record)",
                          not damaged and corrupt == 0,
                          f"not clean after kills {damaged}, corrupt_total {corrupt}"))
    return t


def fault_pg_immediate(r, ctx, edges, outage):
    subprocess.run([PG_SH, "kill", r.s.pg_dir], check=True, capture_output=True)
    time.sleep(outage)
    r.sample_held(ctx, edges)
    t = now()
    subprocess.run([PG_SH, "restart", r.s.pg_dir], check=True, capture_output=True)
    return t


def fault_link_cut(r, ctx, edges, outage):
    r.s.net.cut()
    try:
        time.sleep(outage)
        r.sample_held(ctx, edges)
    finally:
        t = now()
        r.s.net.restore()
    return t


def _gw_during_backfill(r, ctx, edges, outage, sig):
    """Cuts the network for `outage` s, restores it and, as soon as the
    slow-draining device is backfilling, restarts the gateway."""
    target = [e for e in edges if e.extra_conf.get("backfill_batch")] or edges
    target = target[0]
    r.s.net.cut()
    time.sleep(outage)
    r.s.net.restore()
    base = target.status()["backfill"]["batches"]

    def backfilling():
        st = target.status()
        return st["backfill"]["active"] and st["backfill"]["batches"] > base and \
            st["buffer"]["pending"] > 3
    hit = wait_for(backfilling, 60 + outage, 0.05)
    r.sample_held(ctx, edges)
    st = target.status()
    ctx["notes"].append(f"{target.name}: gateway {'killed (-9)' if sig == signal.SIGKILL else 'restarted'} "
                        f"with {st['buffer']['pending']} packets still pending, "
                        f"{st['backfill']['batches'] - base} batches sent"
                        + ("" if hit else " (BACKFILL NOT CAUGHT: the restart came too late)"))
    if not hit:
        r.failures.append(f"gateway restart missed the backfill of {target.name}")
    if sig == signal.SIGKILL:
        r.s.gw.kill9()
    else:
        r.s.gw.stop()
    t = now()
    r.s.start_gateway()
    return t


def fault_gw_restart_backfill(r, ctx, edges, outage):
    return _gw_during_backfill(r, ctx, edges, outage, signal.SIGTERM)


def fault_gw_kill_backfill(r, ctx, edges, outage):
    return _gw_during_backfill(r, ctx, edges, outage, signal.SIGKILL)


def fault_db_lock(r, ctx, edges, outage):
    # SHARE conflicts with the ROW EXCLUSIVE lock every INSERT takes: writes
    # wait behind it, reads go on. On the parent, it covers every partition.
    err = []

    def lock():
        try:
            r.s.psql(f"BEGIN; LOCK TABLE telemetry IN SHARE MODE; SELECT pg_sleep({outage}); "
                     "COMMIT;", timeout=outage + 60)
        except Exception as ex:
            err.append(ex)
    t = threading.Thread(target=lock)
    t.start()
    time.sleep(max(0.0, outage - 0.3))
    r.sample_held(ctx, edges)
    t.join()
    if err:
        raise err[0]
    return now()


def fault_db_sigstop(r, ctx, edges, outage):
    pids = r.s.pg_pids()
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        time.sleep(outage)
        r.sample_held(ctx, edges)
    finally:
        t = now()
        for p in pids:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
    ctx["notes"].append(f"SIGSTOP/SIGCONT of {len(pids)} PostgreSQL processes")
    return t


def prefill_fault(dev, packets, tick_ms):
    """A device that is offline while it makes `packets` packets (at a test
    tick of `tick_ms`, so that an hour of 1 Hz packets takes minutes), then
    restarted at the normal 1 s tick as the network comes back: its whole
    backlog drains behind live packets. The network is cut for every device
    meanwhile."""
    def inject(r, ctx, edges, outage):
        s = r.s
        h = s.edges.get(dev)
        r.s.net.cut()
        try:
            if h is None:
                h = s.add_edge(dev, len(s.edges), start=False)
                h.start(tick_ms=tick_ms)
                s0 = h.first_seq
            else:
                h.proc.stop()
                h.start(tick_ms=tick_ms)
                s0 = h.opened_next_seq()
            ctx.setdefault("start_override", {})[dev] = s0
            ctx["tick0"][dev] = tick_ms / 1000.0
            wait_for(lambda: h.next_seq() - s0 >= packets, packets * tick_ms / 1000.0 * 3 + 60, 0.5)
            # At a tick of tens of ms a busy machine makes the daemon skip
            # missed ticks now and then (it counts them): gaps in time with no
            # seq missing, which the spacing check must tell from lost data.
            skipped = h.status()["ticks_skipped"]
            h.proc.stop()
            ctx.setdefault("skipped", {})[dev] = skipped
            h.start()  # the normal tick again
            ctx["bounds"][dev] = [(h.opened_next_seq(), 1.0)]
            st = h.status()
            ctx["notes"].append(f"{dev}: {st['buffer']['pending']} packets pending after the "
                                f"prefill at {tick_ms} ms; restarted at the 1 s tick")
            r.sample_held(ctx, edges + ([h] if h not in edges else []))
        finally:
            t = now()
            r.s.net.restore()
        if h not in edges:
            edges.append(h)
            ctx["excused"][dev] = set()
            ctx["bounds"].setdefault(dev, [])
        return t
    return inject


# ---------------------------------------------------------------- main

def scenarios(args):
    o = args.outage
    l = args.link_outage
    out = [
        Scenario("gateway-kill9", "ems-gateway killed with SIGKILL, restarted", fault_gateway_kill9, o),
        Scenario("dbwriter-kill9", "ems-dbwriter killed with SIGKILL, restarted",
                 fault_dbwriter_kill9, o, keeps_link=True),
        Scenario("edge-kill9", "ems-edge (fa) killed with SIGKILL, restarted",
                 fault_edge_kill9, o, edges=["fa"]),
        Scenario("pg-immediate", "PostgreSQL stopped with -m immediate, restarted",
                 fault_pg_immediate, o, keeps_link=True),
        Scenario("link-cut", "network between the devices and the cloud cut", fault_link_cut, l),
        Scenario("gw-restart-backfill", "ems-gateway restarted (SIGTERM) during backfill",
                 fault_gw_restart_backfill, l),
        Scenario("db-lock", "telemetry table locked (LOCK TABLE ... IN SHARE MODE; pg_sleep)",
                 fault_db_lock, o, keeps_link=True),
        Scenario("db-sigstop", "PostgreSQL stalled (SIGSTOP of every server process)",
                 fault_db_sigstop, o, keeps_link=True),
    ]
    if args.full:
        out.insert(6, Scenario("gw-kill9-backfill", "ems-gateway killed with SIGKILL during backfill",
                               fault_gw_kill_backfill, l))
        if args.hour == "fast":
            out.append(Scenario("hour-outage", f"{args.hour_packets} packets "
                                f"({args.hour_packets / 3600:g} h at 1 Hz) made "
                                f"at a {args.hour_tick_ms} ms tick while the network is cut, "
                                "then backfilled",
                                prefill_fault("fh", args.hour_packets, args.hour_tick_ms), 0))
        elif args.hour == "real":
            out.append(Scenario("hour-outage", "network cut for one real hour", fault_link_cut, 3600))
        if args.long_backlog:
            out.append(Scenario("long-backlog", f"{args.long_backlog} packets "
                                f"({args.long_backlog / 3600:.1f} h at 1 Hz) made "
                                "at a 20 ms tick while the network is cut, then backfilled",
                                prefill_fault("fl", args.long_backlog, 20), 0))
    if args.only:
        out = [x for x in out if re.search(args.only, x.name)]
    return out


def table(rows, md=False):
    head = ["scenario", "outage", "held", "generated", "stored", "lost", "duplicated", "catch-up",
            "largest step", "live delay max", "live gap max"]
    lines = []
    data = []
    for r in rows:
        data.append([r["scenario"], f"{r['outage']:g} s" if r["outage"] else "-", str(r["held"]),
                     str(r["generated"]), str(r["stored"]), str(r["lost"]), str(r["dup"]),
                     f"{r['catchup']:.1f} s" if r["catchup"] is not None else "never",
                     f"{r['step']:.2f} s",
                     f"{r['live_delay']:.2f} s", f"{r['live_gap']:.2f} s"])
    if md:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("| " + " | ".join("---" for _ in head) + " |")
        for d in data:
            lines.append("| " + " | ".join(d) + " |")
        return "\n".join(lines)
    w = [max(len(h), *(len(d[i]) for d in data)) if data else len(h) for i, h in enumerate(head)]
    lines.append("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    for d in data:
        lines.append("  ".join(x.ljust(w[i]) for i, x in enumerate(d)))
    return "\n".join(lines)


def parse(argv):
    ap = argparse.ArgumentParser(description="ems fault-injection suite (docs/faults.md)")
    ap.add_argument("--build", default=os.environ.get("EMS_BUILD") or os.path.join(ROOT, "build"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--short", action="store_true", help="the short form (make test)")
    g.add_argument("--full", action="store_true", help="the full form (make test-faults)")
    ap.add_argument("--hour", choices=["fast", "real", "off"], default="fast")
    ap.add_argument("--hour-packets", type=int, default=3600,
                    help="--hour fast: packets made while cut (3600: an hour at 1 Hz)")
    ap.add_argument("--hour-tick-ms", type=int, default=50, help="--hour fast: the tick meanwhile")
    ap.add_argument("--long-backlog", type=int, help="--full: packets of the long-backlog "
                    "scenario (default 12000; 0: leave it out)")
    ap.add_argument("--outage", type=float, help="seconds a process stays dead")
    ap.add_argument("--link-outage", type=float, help="seconds the network stays cut")
    ap.add_argument("--only", help="run only scenarios whose name matches")
    ap.add_argument("--net", choices=["auto", "netns", "proxy"],
                    default=os.environ.get("EMS_FAULTS_NET", "auto"))
    ap.add_argument("--edge-kills", type=int, help="kill -9 of the edge, how many times")
    ap.add_argument("--edge-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a configuration key for every device (repeatable)")
    ap.add_argument("--tap", action="store_true", help="TAP lines (ok / not ok)")
    ap.add_argument("--md", help="also write the table as Markdown to this file")
    ap.add_argument("--keep", action="store_true", help="keep the process logs")
    a = ap.parse_args(argv)
    if not a.full:
        a.short = True
    if a.outage is None:
        a.outage = 60.0 if a.full else 4.0
    if a.long_backlog is None:
        a.long_backlog = 12000 if a.full else 0
    if a.edge_kills is None:
        a.edge_kills = 10 if a.full else 3
    if a.link_outage is None:
        a.link_outage = 60.0 if a.full else 20.0
    a.build = os.path.abspath(a.build)
    return a


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    for b in ("ems-edge", "ems-gateway", "ems-dbwriter", "emsctl"):
        if not os.access(os.path.join(args.build, b), os.X_OK):
            print(f"not ok - faults: {args.build}/{b} is missing (make BUILD=... all)")
            return 1

    def on_signal(signum, frame):
        raise Stop(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.net == "auto":
        net = NetnsNet() if NetnsNet.available() else ProxyNet()
    else:
        net = NetnsNet() if args.net == "netns" else ProxyNet()
    edge_conf = {}
    if args.short:
        # Shorter reconnect delays keep the short form short; the full form
        # runs the defaults (1 s .. 60 s).
        edge_conf["reconnect_max_s"] = "8"
    for kv in args.edge_set:
        k, _, v = kv.partition("=")
        edge_conf[k.strip()] = v.strip()
    devices = [("fa", {}),
               # fb drains its backlog slowly (10 packets/s), so that a
               # restart "during backfill" has a backfill to hit.
               ("fb", {"backfill_batch": "5", "backfill_interval_ms": "500"})]
    sysm = System(args.build, net, edge_conf, keep=args.keep)
    runner = None
    failed = True
    t0 = time.monotonic()
    try:
        log(f"build {args.build}; network: {net.describe()}")
        sysm.start(devices)
        runner = Runner(sysm, args)
        for sc in scenarios(args):
            try:
                runner.run(sc)
            except Stop:
                raise
            except Exception as ex:
                runner.ok(f"{sc.name}: ran", False, f"{type(ex).__name__}: {ex}")
                # Put the system back together for the next scenario.
                try:
                    net.restore()
                    for p in (sysm.dbw, sysm.gw):
                        if not p.alive():
                            (sysm.start_dbwriter if p is sysm.dbw else sysm.start_gateway)()
                    for e in sysm.edges.values():
                        if not e.proc.alive():
                            e.start()
                except Exception as ex2:
                    log(f"could not repair the system: {ex2}")
                    break
        # The whole run: every packet every device ever made, once.
        all_gen = all_rows = all_dist = 0
        runner.settle(list(sysm.edges.values()))
        time.sleep(2)
        excused = runner.excused_all
        for e in sysm.edges.values():
            hi = e.next_seq() - 1
            lo = e.first_seq
            exc = len([1 for d, sq in excused if d == e.name and lo <= sq <= hi])
            wait_for(lambda: db_range(sysm, e.name, lo, hi)[1] >= hi - lo + 1 - exc, 30, 0.25)
            rows, distinct = db_range(sysm, e.name, lo, hi)
            all_gen += hi - lo + 1 - exc
            all_rows += rows
            all_dist += distinct
            unsynced, nbf = sysm.psql(f"SELECT count(*) FILTER (WHERE NOT clock_synced), "
                                      f"count(*) FILTER (WHERE backfill) FROM telemetry "
                                      f"WHERE device_id = '{e.name}'")[0]
            log(f"{e.name}: seq {lo}..{hi}: {rows} rows, {nbf} of them backfilled, "
                f"{unsynced} taken with clock_synced=false")
            st = e.status()["buffer"]
            runner.ok(f"{e.name}: the buffer evicted, expired and found corrupt nothing",
                      st["evicted_total"] == 0 and st["expired_total"] == 0 and
                      st["corrupt_total"] == 0, json.dumps(st))
        runner.ok(f"whole run: every packet of every device stored exactly once "
                  f"({all_gen} generated, {all_rows} rows)",
                  all_gen == all_dist and all_rows == all_dist,
                  f"lost {all_gen - all_dist}, duplicated {all_rows - all_dist}")
        runner.history()
        runner.control()
        statuses = sysm.stop_processes()
        runner.ok("every process stops cleanly on SIGTERM at the end",
                  all(v == 0 for v in statuses.values()), json.dumps(statuses))
        bad = sysm.sanitizer_reports()
        runner.ok("no sanitizer report in any process log", not bad, "; ".join(bad[:5]))
        failed = bool(runner.failures)
    except Stop as ex:
        log(f"stopped by {ex}")
    except Exception as ex:
        print(f"not ok - faults: {type(ex).__name__}: {ex}", flush=True)
    finally:
        elapsed = time.monotonic() - t0
        if runner and runner.rows:
            log("")
            for line in table(runner.rows).splitlines():
                log(line)
            log(f"{len(runner.rows)} scenarios in {elapsed:.0f} s; network: {net.kind}")
            if args.md:
                with open(args.md, "w") as f:
                    f.write(table(runner.rows, md=True) + "\n")
        if failed and runner:
            for f in runner.failures:
                log(f"FAILED: {f}")
        sysm.close(failed=failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
