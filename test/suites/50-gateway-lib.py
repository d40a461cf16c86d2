# 50-gateway-lib.py: the harness the 50-gateway-* suites share (not a suite
# itself: it is not executable, so test/run.sh skips it; the suites load it
# with importlib).
#
# It starts the real processes on loopback: a private PostgreSQL
# (test/lib/pg.sh), the real ems-dbwriter, and the real ems-gateway from
# $EMS_BUILD, provisions devices and users with the real emsctl, and offers
# clients: Python's websockets (Debian's python3-websockets) as a device and
# as a dashboard, http.client for the REST API, and a raw-socket WebSocket
# client for the frames a polite library will not send (fragments, invalid
# UTF-8, oversized and binary messages, malformed HTTP).
#
# Every process gets a unique temporary directory and port 0, so suites can
# run in parallel with anything else.
import asyncio
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("EMS_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.environ.get("EMS_BUILD") or os.path.join(ROOT, "build/san")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import emstest  # noqa: E402  (test/lib/emstest.py)
from emstest import Proc, Tap, free_port, wait_for  # noqa: E402,F401  (the suites use gw.Tap ...)


def packet(dev, seq, ts_ms=None, **over):
    """A valid telemetry packet of `dev` (docs/protocol.md 2.1)."""
    if ts_ms is None:
        ts_ms = int(time.time() * 1000)
    t = time.gmtime(ts_ms // 1000)
    p = {
        "device_id": dev,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % (ts_ms % 1000),
        "system_status": {"state": "CHARGING", "mode": "AUTO", "error_flags": [],
                          "wifi_strength": -45, "target_mode": "AUTO"},
        "battery": {"voltage": 53.2, "current": 10.5, "power": 558.6, "soc": 85.5,
                    "temperature": 27.5},
        "grid": {"voltage": 230.1, "power": -200, "frequency": 50.0},
        "seq": seq,
        "clock_synced": True,
    }
    for k, v in over.items():
        p[k] = v
    return p


iso = emstest.iso_ms


class Env:
    """PostgreSQL + ems-dbwriter + ems-gateway on loopback."""

    def __init__(self, tap, tls=True):
        self.tap = tap
        self.tls = tls
        self.dir = tempfile.mkdtemp(prefix="ems-gw-test.")
        self.pg_dir = None
        self.dsn = None
        self.dbw = None
        self.gw = None
        self.port = None
        self.sock = os.path.join(self.dir, "dbwriter.sock")
        self.certs = os.path.join(self.dir, "certs")
        self.keyfile = os.path.join(self.dir, "session.key")
        with open(self.keyfile, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        self.static = os.path.join(self.dir, "www")
        os.makedirs(os.path.join(self.static, "assets"))
        with open(os.path.join(self.static, "index.html"), "w") as f:
            f.write("<!doctype html><title>ems</title>\n")
        with open(os.path.join(self.static, "assets", "app.js"), "w") as f:
            f.write("console.log('ems');\n")
        with open(os.path.join(self.dir, "secret.txt"), "w") as f:
            f.write("top secret\n")
        if tls:
            subprocess.run([os.path.join(ROOT, "test/lib/mkcerts.sh"), self.certs], check=True)

    # ---------------------------------------------------------- processes

    def start_pg(self):
        out = subprocess.run([os.path.join(ROOT, "test/lib/pg.sh"), "start"], check=True,
                             capture_output=True, text=True).stdout.strip()
        parts = out.split(" ", 2)
        self.pg_dir, self.dsn = parts[0], parts[2]
        os.environ["EMS_PG_DSN"] = self.dsn

    def emsctl(self, *args, stdin=None):
        r = subprocess.run([os.path.join(BUILD, "emsctl"), *args], input=stdin,
                           capture_output=True, text=True, env=dict(os.environ, EMS_PG_DSN=self.dsn))
        return r.returncode, r.stdout, r.stderr

    def add_device(self, dev):
        rc, out, err = self.emsctl("device", "add", dev)
        if rc != 0:
            raise RuntimeError(f"emsctl device add {dev}: {err}")
        return out.strip()

    def add_user(self, name, role, pw, iterations=1000):
        # A low PBKDF2 count keeps the suites fast; the gateway raises it to
        # the current default at the first login (50-gateway-api checks that).
        rc, out, err = self.emsctl("user", "add", name, "--role", role,
                                   "--iterations", str(iterations), stdin=pw + "\n")
        if rc != 0:
            raise RuntimeError(f"emsctl user add {name}: {err}")

    def psql(self, sql):
        r = subprocess.run(["psql", self.dsn, "-XAtq", "-F", "|", "-c", sql], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr}")
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def start_dbwriter(self, *extra):
        self.dbw = Proc("ems-dbwriter",
                        [os.path.join(BUILD, "ems-dbwriter"), "--socket", self.sock,
                         "--dsn", self.dsn, *extra],
                        os.path.join(self.dir, "dbwriter.log"))
        if not wait_for(lambda: os.path.exists(self.sock) or not self.dbw.alive(), 30):
            raise RuntimeError("ems-dbwriter did not create its socket")
        if not self.dbw.alive():
            raise RuntimeError("ems-dbwriter exited:\n" + self.dbw.text()[-3000:])

    def start_gateway(self, **over):
        portfile = os.path.join(self.dir, "port")
        if os.path.exists(portfile):
            os.unlink(portfile)
        args = {
            "listen": "127.0.0.1:0",
            "tls": "on" if self.tls else "off",
            "dbwriter_socket": self.sock,
            "session_key_file": self.keyfile,
            "static_dir": self.static,
            "port_file": portfile,
            "log_level": "info",
            "recheck_s": "1",
            "auth_cache_s": "0",
        }
        if self.tls:
            args["tls_cert"] = os.path.join(self.certs, "chain.crt")
            args["tls_key"] = os.path.join(self.certs, "server.key")
        args.update({k: str(v) for k, v in over.items()})
        argv = [os.path.join(BUILD, "ems-gateway")] + [f"--{k}={v}" for k, v in args.items()]
        self.gw = Proc("ems-gateway", argv, os.path.join(self.dir, "gateway.log"))
        if not wait_for(lambda: os.path.exists(portfile) or not self.gw.alive(), 30):
            raise RuntimeError("ems-gateway did not start")
        if not self.gw.alive():
            raise RuntimeError("ems-gateway exited:\n" + self.gw.text()[-3000:])
        with open(portfile) as f:
            self.port = int(f.read())
        # Ready when the DB writer link is up.
        if self.dbw:
            wait_for(lambda: self.http("GET", "/healthz")[0] == 200, 20)

    def stop_gateway(self, sig=signal.SIGTERM):
        rc = self.gw.stop(sig) if self.gw else 0
        return rc

    def close(self):
        """Stops everything; returns the gateway's exit status."""
        rc = None
        if self.gw:
            rc = self.gw.stop()
            if rc != 0:
                self.tap.note(f"gateway exit status {rc}; log tail:\n" + self.gw.text()[-4000:])
        if self.dbw:
            self.dbw.stop()
        if self.pg_dir:
            subprocess.run([os.path.join(ROOT, "test/lib/pg.sh"), "stop", self.pg_dir])
        if self.tap.failed:
            for p in (self.gw, self.dbw):
                if p:
                    self.tap.note(f"--- {p.name} log (tail) ---\n" + p.text()[-6000:])
        if os.environ.get("EMS_KEEP_TMP"):
            self.tap.note(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    # ---------------------------------------------------------- clients

    def ssl_ctx(self, ca=None):
        ctx = ssl.create_default_context(cafile=ca or os.path.join(self.certs, "ca.crt"))
        return ctx

    def base(self, ws=False):
        if ws:
            return ("wss" if self.tls else "ws") + f"://localhost:{self.port}"
        return ("https" if self.tls else "http") + f"://localhost:{self.port}"

    def origin(self):
        return self.base()

    def http(self, method, path, body=None, headers=None, cookie=None, timeout=10):
        """One request; returns (status, headers dict (lower-case), body bytes)."""
        if self.tls:
            c = http.client.HTTPSConnection("localhost", self.port, context=self.ssl_ctx(),
                                            timeout=timeout)
        else:
            c = http.client.HTTPConnection("localhost", self.port, timeout=timeout)
        h = dict(headers or {})
        if cookie:
            h["Cookie"] = cookie
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, data

    def login(self, user, pw):
        st, h, b = self.http("POST", "/api/login", {"username": user, "password": pw})
        if st != 200:
            raise RuntimeError(f"login {user}: {st} {b!r}")
        return h["set-cookie"].split(";", 1)[0]

    async def device(self, dev, token, **kw):
        import websockets
        hdrs = {"Authorization": "Bearer " + token} if token is not None else {}
        return await websockets.connect(self.base(True) + f"/ws/device/{dev}", extra_headers=hdrs,
                                        ssl=self.ssl_ctx() if self.tls else None,
                                        max_size=2**20, **kw)

    async def dashboard(self, cookie, origin="same", **kw):
        import websockets
        hdrs = {}
        if cookie:
            hdrs["Cookie"] = cookie
        if origin == "same":
            origin = self.origin()
        return await websockets.connect(self.base(True) + "/ws/dashboard", extra_headers=hdrs,
                                        origin=origin, ssl=self.ssl_ctx() if self.tls else None,
                                        max_size=2**22, **kw)

    # ---------------------------------------------------------- raw sockets

    def raw(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls:
            s = self.ssl_ctx().wrap_socket(s, server_hostname="localhost")
        return s


async def recv_json(ws, timeout=5, skip=("device",)):
    """The next message as JSON, skipping the types in `skip`."""
    end = time.time() + timeout
    while True:
        left = end - time.time()
        if left <= 0:
            raise asyncio.TimeoutError()
        m = json.loads(await asyncio.wait_for(ws.recv(), left))
        if m.get("type") in skip:
            continue
        return m


async def recv_until(ws, pred, timeout=5):
    """Messages (as JSON) until one satisfies pred; returns it."""
    end = time.time() + timeout
    while True:
        left = end - time.time()
        if left <= 0:
            raise asyncio.TimeoutError()
        m = json.loads(await asyncio.wait_for(ws.recv(), left))
        if pred(m):
            return m


async def acked(ws, seqs, timeout=10):
    """Collects acks until every seq in `seqs` is covered; returns the set
    of seqs acked (raises on timeout). Nacks are returned in .nacks."""
    want = set(seqs)
    got = set()
    end = time.time() + timeout
    while not want <= got:
        left = end - time.time()
        if left <= 0:
            raise asyncio.TimeoutError(f"acked {sorted(got)} of {sorted(want)}")
        m = json.loads(await asyncio.wait_for(ws.recv(), left))
        if m.get("type") == "ack":
            for lo, hi in m["ranges"]:
                got.update(range(lo, hi + 1))
    return got


# ---------------------------------------------------------- raw WebSocket frames

def ws_request(path, headers=None, key=None, host="localhost"):
    key = key or base64.b64encode(os.urandom(16)).decode()
    h = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key}
    for k, v in (headers or {}).items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_http_head(s):
    """Reads a response head; returns (status, headers, rest bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1.1 "):
        return 0, {}, rest
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def frame(opcode, payload, fin=True, mask=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return hdr + payload
    m = os.urandom(4)
    return hdr + m + bytes(b ^ m[i % 4] for i, b in enumerate(payload))


class RawWs:
    """A WebSocket client on a raw socket: sends exactly the frames asked."""

    def __init__(self, sock, rest=b""):
        self.s = sock
        self.buf = rest

    def send(self, data):
        self.s.sendall(data)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv(self):
        """Returns (opcode, payload) of the next frame."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def recv_close(self, timeout=10):
        """Reads until a close frame; returns its code (or None on EOF)."""
        self.s.settimeout(timeout)
        try:
            while True:
                op, p = self.recv()
                if op == 8:
                    return struct.unpack("!H", p[:2])[0] if len(p) >= 2 else 1005
        except (EOFError, OSError):
            return None

    def recv_text(self, timeout=5):
        """The next text message (skipping pings), as a str."""
        self.s.settimeout(timeout)
        while True:
            op, p = self.recv()
            if op == 1:
                return p.decode()
            if op == 8:
                raise EOFError("close frame %r" % p)


def raw_upgrade(env, path, headers=None):
    """Opens a raw WebSocket; returns (status, headers, RawWs or None)."""
    s = env.raw()
    s.sendall(ws_request(path, headers, host=f"localhost:{env.port}"))
    st, h, rest = read_http_head(s)
    if st != 101:
        s.close()
        return st, h, None
    return st, h, RawWs(s, rest)


# ---------------------------------------------------------- several gateways (NATS)

class BusGateway:
    """One of several gateways sharing an Env's PostgreSQL, DB writer and
    session key (docs/scaling.md): the Env's clients pointed at its port."""

    def __init__(self, env, name):
        self.env, self.name = env, name
        self.proc = None
        self.port = None

    def start(self, **over):
        e = self.env
        portfile = os.path.join(e.dir, f"port-{self.name}")
        if os.path.exists(portfile):
            os.unlink(portfile)
        args = {"listen": "127.0.0.1:0", "tls": "off", "dbwriter_socket": e.sock,
                "session_key_file": e.keyfile, "static_dir": e.static, "port_file": portfile,
                "log_level": "info", "auth_cache_s": "0", "gateway_id": self.name}
        args.update({k: str(v) for k, v in over.items()})
        argv = [os.path.join(BUILD, "ems-gateway")] + [f"--{k}={v}" for k, v in args.items()]
        self.proc = Proc(f"ems-gateway {self.name}", argv,
                         os.path.join(e.dir, f"gateway-{self.name}.log"))
        if not wait_for(lambda: os.path.exists(portfile) or not self.proc.alive(), 30):
            raise RuntimeError(f"gateway {self.name} did not start")
        if not self.proc.alive():
            raise RuntimeError(f"gateway {self.name} exited:\n" + self.proc.text()[-3000:])
        with open(portfile) as f:
            self.port = int(f.read())
        wait_for(lambda: self.http("GET", "/healthz")[0] == 200, 20)

    def _view(self):
        v = Env.__new__(Env)
        v.__dict__.update(self.env.__dict__)
        v.port = self.port
        return v

    def http(self, *a, **kw):
        return self._view().http(*a, **kw)

    async def device(self, dev, token):
        return await self._view().device(dev, token)

    async def dashboard(self, cookie):
        return await self._view().dashboard(cookie)


class BusDevice:
    """A device client that answers each command accepted, then completed
    `complete_after` seconds later, and records the commands it got. Like
    the edge, it answers a command_id it has seen with its latest answer and
    never executes it again."""

    def __init__(self, side, dev, token, complete_after=0.05):
        self.side, self.dev, self.token = side, dev, token
        self.complete_after = complete_after
        self.received = []
        self.last = {}  # command_id -> the latest status it answered
        self.ws = self.task = None

    async def start(self):
        self.ws = await self.side.device(self.dev, self.token)
        json.loads(await asyncio.wait_for(self.ws.recv(), 5))  # welcome
        self.task = asyncio.ensure_future(self.run())

    async def answer(self, cid, status):
        self.last[cid] = status
        await self.ws.send(json.dumps({
            "type": "command_result", "command_id": cid, "status": status,
            "timestamp": iso(int(time.time() * 1000))}))

    async def execute(self, cid):
        try:
            await self.answer(cid, "accepted")
            await asyncio.sleep(self.complete_after)
            await self.answer(cid, "completed")
        except Exception:
            pass

    async def run(self):
        try:
            async for raw in self.ws:
                m = json.loads(raw)
                if "action" not in m:
                    continue
                self.received.append(m)
                cid = m["command_id"]
                if cid in self.last:
                    await self.answer(cid, self.last[cid])
                else:
                    self.last[cid] = "accepted"
                    asyncio.ensure_future(self.execute(cid))
        except Exception:
            pass

    async def send_packets(self, first_seq, n, every=0.2):
        for i in range(n):
            await self.ws.send(json.dumps(packet(self.dev, first_seq + i)))
            await asyncio.sleep(every)

    def count(self, cid):
        return sum(1 for m in self.received if m["command_id"] == cid)


class Nats:
    """A private nats-server on loopback (start/stop/start keeps the port)."""

    def __init__(self, env):
        self.env = env
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = Proc("nats-server", [shutil.which("nats-server") or "nats-server", "-a",
                                            "127.0.0.1", "-p", str(self.port)],
                            os.path.join(self.env.dir, "nats.log"))
        ok = wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), 1).close()
                         is None, 10)
        if not ok:
            raise RuntimeError("nats-server did not start:\n" + self.proc.text()[-2000:])

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def url(self):
        return f"nats://127.0.0.1:{self.port}"


# ---------------------------------------------------------- many devices at once

def bulk_token(dev):
    """The token bulk_provision gives `dev` (64 hex characters)."""
    import hashlib
    return hashlib.sha256(f"ems-test-bulk:{dev}".encode()).hexdigest()


def bulk_provision(env, prefix, n):
    """Provisions prefix0000 .. prefix{n-1} in one INSERT (emsctl would take a
    process per device); returns {device_id: token}."""
    env.psql(f"""INSERT INTO devices (device_id, token_hash)
        SELECT id, encode(sha256(convert_to(encode(sha256(convert_to('ems-test-bulk:' || id, 'UTF8')),
                                                   'hex'), 'UTF8')), 'hex')
        FROM (SELECT '{prefix}' || lpad(i::text, 4, '0') AS id FROM generate_series(0, {n - 1}) i) s""")
    return {f"{prefix}{i:04d}": bulk_token(f"{prefix}{i:04d}") for i in range(n)}


def schema_validator(kind):
    """A jsonschema validator of proto-schemas/<kind>.schema.json (with the
    folder's $refs resolved), to check what the gateway sends."""
    from jsonschema import Draft202012Validator, RefResolver
    store = {}
    d = os.path.join(ROOT, "proto-schemas")
    for name in os.listdir(d):
        if name.endswith(".schema.json"):
            with open(os.path.join(d, name)) as f:
                s = json.load(f)
            store[s["$id"]] = s
            store[name] = s
    with open(os.path.join(d, f"{kind}.schema.json")) as f:
        schema = json.load(f)
    return Draft202012Validator(schema, resolver=RefResolver.from_schema(schema, store=store))
