# 60-edge-lib.py: the harness the 60-edge-* suites share (not a suite itself:
# it is not executable, so test/run.sh skips it; the suites load it with
# importlib).
#
# It runs the real ems-edge from $EMS_BUILD (sanitized) against a cloud made
# of Python's websockets (Debian's python3-websockets) on loopback, with TLS
# from the test CA of test/lib/mkcerts.sh. The fake cloud records every
# message with the time it arrived, can ack or not, can send anything to the
# edge (commands, garbage, oversized and raw invalid frames), drop the TCP
# connection without a close frame, stop listening and come back on the
# same port. Each edge gets its own temporary directory; ports are 0 or
# picked free by the kernel, so suites run in parallel with anything else.
import asyncio
import ctypes
import glob
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from http import HTTPStatus

import websockets
from jsonschema import Draft202012Validator, RefResolver

ROOT = os.environ.get("EMS_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.environ.get("EMS_BUILD") or os.path.join(ROOT, "build/san")
EDGE = os.path.join(BUILD, "ems-edge")
EMSCTL = os.path.join(BUILD, "emsctl")
DEV = "edge_t1"

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import emstest  # noqa: E402  (test/lib/emstest.py)
from emstest import Tap, free_port  # noqa: E402,F401  (the suites use lib.Tap, lib.free_port)


def kernel_clock_synced():
    """What adjtimex() says, as the edge reads it (None if unavailable)."""
    class Timex(ctypes.Structure):
        _fields_ = [("modes", ctypes.c_uint), ("pad", ctypes.c_byte * 204)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)
        rc = libc.adjtimex(buf)
        if rc < 0:
            return None
        status = int.from_bytes(buf.raw[40:44], "little", signed=True)  # struct timex.status (x86_64, aarch64)
        return not (status & 0x40)  # STA_UNSYNC
    except Exception:
        return None


def load_validators():
    store, by_name = {}, {}
    for path in glob.glob(os.path.join(ROOT, "proto-schemas", "*.schema.json")):
        with open(path) as f:
            schema = json.load(f)
        store[schema["$id"]] = schema
        by_name[os.path.basename(path)[: -len(".schema.json")]] = schema
    out = {}
    for name, schema in by_name.items():
        resolver = RefResolver(base_uri=schema["$id"], referrer=schema, store=store)
        out[name] = Draft202012Validator(schema, resolver=resolver)
    return out


VALIDATORS = load_validators()


def kind_of(msg):
    if "type" in msg:
        return {"telemetry_batch": "telemetry-batch", "command_result": "command-result",
                "device_info": "device-info"}.get(msg["type"], msg["type"])
    if "device_id" in msg:
        return "telemetry"
    return "unknown"


def schema_errors(msg):
    """Schema errors of a message the edge sent (empty list: valid)."""
    v = VALIDATORS.get(kind_of(msg))
    if v is None:
        return [f"no schema for {kind_of(msg)}"]
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(msg)]


def emsctl_validate(texts, tmpdir):
    """Runs `emsctl validate` over raw message texts; returns (ok, output)."""
    if not os.access(EMSCTL, os.X_OK):
        return None, "emsctl not built"
    d = tempfile.mkdtemp(dir=tmpdir)
    files = []
    for i, t in enumerate(texts):
        p = os.path.join(d, f"m{i:05d}.json")
        with open(p, "w") as f:
            f.write(t)
        files.append(p)
    r = subprocess.run([EMSCTL, "validate", *files], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr)


iso = emstest.iso_ms


class Msg:
    """One message the cloud received."""

    def __init__(self, conn, text):
        self.t = time.monotonic()
        self.conn = conn
        self.text = text
        try:
            self.obj = json.loads(text)
        except ValueError:
            self.obj = None

    @property
    def kind(self):
        return kind_of(self.obj) if isinstance(self.obj, dict) else "invalid"


class Cloud:
    """A fake gateway: one device path, a bearer token, TLS or not."""

    def __init__(self, tmp, certs, token, device=DEV, tls=True, cert="server", port=0):
        self.tmp, self.certs, self.token, self.device = tmp, certs, token, device
        self.tls, self.cert = tls, cert
        self.port = port
        self.server = None
        self.msgs = []          # every message, in arrival order
        self.conns = 0          # connections accepted (upgrades done)
        self.conn_times = []    # monotonic time of each upgrade
        self.closes = []        # (conn, code, reason) as seen by the server
        self.auth_fail = 0
        self.ws = None          # the current connection
        self.auto_ack = True
        self.welcome = True
        self.welcome_offset_ms = 0
        self.ack_filter = None  # function(seq) -> bool: ack it?
        self.event = asyncio.Event()

    def ssl_ctx(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.certs, self.cert + ".crt"),
                            os.path.join(self.certs, self.cert + ".key"))
        return ctx

    async def _process_request(self, path, headers):
        if path != f"/ws/device/{self.device}":
            return (HTTPStatus.NOT_FOUND, [], b"unknown path\n")
        if headers.get("Authorization") != f"Bearer {self.token}":
            self.auth_fail += 1
            return (HTTPStatus.UNAUTHORIZED, [], b"bad credential\n")
        return None

    async def _handler(self, ws, path):
        self.conns += 1
        conn = self.conns
        self.conn_times.append(time.monotonic())
        self.ws = ws
        try:
            if self.welcome:
                now = int(time.time() * 1000) + self.welcome_offset_ms
                await ws.send(json.dumps({"type": "welcome", "device_id": self.device,
                                          "server_time": iso(now)}))
            async for text in ws:
                m = Msg(conn, text)
                self.msgs.append(m)
                self.event.set()
                if self.auto_ack and isinstance(m.obj, dict):
                    seqs = []
                    if m.kind == "telemetry" and "seq" in m.obj:
                        seqs = [m.obj["seq"]]
                    elif m.kind == "telemetry-batch":
                        seqs = [p["seq"] for p in m.obj.get("packets", [])]
                    if self.ack_filter:
                        seqs = [s for s in seqs if self.ack_filter(s)]
                    if seqs:
                        await ws.send(json.dumps({"type": "ack", "ranges": ranges(seqs)}))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closes.append((conn, ws.close_code, ws.close_reason))
            if self.ws is ws:
                self.ws = None
            self.event.set()

    async def start(self):
        self.server = await websockets.serve(
            self._handler, "127.0.0.1", self.port, ssl=self.ssl_ctx() if self.tls else None,
            process_request=self._process_request, ping_interval=None, max_size=2 ** 20)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        """Stops listening and closes connections (1001, going away)."""
        if self.server:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def url(self):
        return f"{'wss' if self.tls else 'ws'}://localhost:{self.port}"

    async def send(self, obj):
        text = obj if isinstance(obj, str) else json.dumps(obj)
        await self.ws.send(text)

    def drop(self):
        """Drops the TCP connection without a close frame."""
        if self.ws:
            self.ws.transport.abort()

    def raw(self, data):
        """Writes raw bytes on the connection (below the WebSocket layer)."""
        self.ws.transport.write(data)

    # ---- queries
    def of(self, kind, since=0.0, conn=None):
        return [m for m in self.msgs if m.kind == kind and m.t >= since and (conn is None or m.conn == conn)]

    def telemetry(self, since=0.0):
        """Every telemetry packet (live and from batches) as (msg, packet)."""
        out = []
        for m in self.msgs:
            if m.t < since:
                continue
            if m.kind == "telemetry":
                out.append((m, m.obj))
            elif m.kind == "telemetry-batch":
                for p in m.obj.get("packets", []):
                    out.append((m, p))
        return out

    def results(self, cid):
        return [m.obj for m in self.of("command-result") if m.obj.get("command_id") == cid]

    async def wait(self, pred, timeout):
        """Waits until pred() is true (checked on every message and every 50 ms)."""
        end = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            left = end - time.monotonic()
            if left <= 0:
                return v
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), min(left, 0.05))
            except asyncio.TimeoutError:
                pass


def ranges(seqs):
    seqs = sorted(set(seqs))
    out = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class Edge:
    """The real ems-edge as a subprocess; stderr collected line by line."""

    def __init__(self, tmp, name="edge"):
        self.tmp = tmp
        self.name = name
        self.proc = None
        self.lines = []
        self.reader = None
        self.status_port = None
        self.logf = open(os.path.join(tmp, f"{name}.log"), "a")

    async def start(self, cloud_url, token_file, ca=None, extra=(), status=True, buffer=None,
                    device=DEV, config=None):
        args = [EDGE, "--sim", "--device-id", device, "--url", cloud_url,
                "--token-file", token_file, "--buffer", buffer or os.path.join(self.tmp, "buffer"),
                "--set", "buffer_sync=off", "--set", "wifi_path=" + os.path.join(self.tmp, "wireless"),
                "--log-level", "debug"]
        if config:
            args[1:1] = ["--config", config]
        if ca:
            args += ["--ca-file", ca]
        if cloud_url.startswith("ws://"):
            args += ["--insecure-ws"]
        if status:
            self.status_port = free_port()
            args += ["--status-port", str(self.status_port), "--set", "sim_control=true"]
        args += list(extra)
        self.lines = []
        self.proc = await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL,
                                                         stdout=subprocess.DEVNULL,
                                                         stderr=subprocess.PIPE)
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                break
            s = line.decode(errors="replace").rstrip("\n")
            self.lines.append((time.monotonic(), s))
            self.logf.write(s + "\n")
            self.logf.flush()

    def log(self, pattern, since=0.0):
        r = re.compile(pattern)
        return [s for t, s in self.lines if t >= since and r.search(s)]

    async def wait_log(self, pattern, timeout, since=0.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.log(pattern, since)
            if found:
                return found
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        return self.log(pattern, since)

    def alive(self):
        return self.proc is not None and self.proc.returncode is None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout):
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        if self.reader:
            await self.reader
        return rc

    async def stop(self, sig=signal.SIGTERM, timeout=20):
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.send_signal(sig)
        rc = await self.wait_exit(timeout)
        if rc is None:
            self.proc.kill()
            rc = await self.wait_exit(5)
        return rc

    async def http(self, method, path, body=None):
        """A small HTTP/1.1 client for the status endpoint: (status, body)."""
        r, w = await asyncio.open_connection("127.0.0.1", self.status_port)
        data = body.encode() if body else b""
        w.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await w.drain()
        resp = await asyncio.wait_for(r.read(), 10)
        w.close()
        head, _, rest = resp.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        return status, rest.decode(errors="replace")

    async def status(self):
        st, body = await self.http("GET", "/status")
        return json.loads(body) if st == 200 else None

    async def inject(self, query):
        return await self.http("POST", "/sim/fault?" + query)

    def tail(self, n=40):
        return "\n".join(s for _, s in self.lines[-n:])


class Env:
    """A temporary directory with certificates and a token."""

    def __init__(self, tap, name):
        self.tap = tap
        base = os.path.join(ROOT, "build", "test-artifacts")
        os.makedirs(base, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=f"{name}-", dir=base)
        self.certs = os.path.join(self.tmp, "certs")
        subprocess.run(["sh", os.path.join(ROOT, "test/lib/mkcerts.sh"), self.certs], check=True)
        self.token = os.urandom(32).hex()
        self.token_file = os.path.join(self.tmp, "token")
        with open(self.token_file, "w") as f:
            f.write(self.token + "\n")
        self.ca = os.path.join(self.certs, "ca.crt")
        self.edges = []

    def cloud(self, **kw):
        return Cloud(self.tmp, self.certs, self.token, **kw)

    def edge(self, name="edge"):
        e = Edge(self.tmp, name)
        self.edges.append(e)
        return e

    async def close(self, keep=False):
        for e in self.edges:
            if e.alive():
                e.proc.kill()
                await e.wait_exit(5)
        if not keep and not self.tap.failed:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tap.note(f"artifacts kept in {self.tmp}")


def seqs_of(packets):
    return [p["seq"] for p in packets]


def run(main):
    """Runs an async suite main(tap) and exits with its status."""
    tap = Tap()
    try:
        asyncio.run(asyncio.wait_for(main(tap), 600))
    except Exception as e:  # a crash of the harness is one failure, with its story
        import traceback
        traceback.print_exc()
        tap.ok("suite ran to the end", False, repr(e))
    tap.done()


async def wait_result(cloud, cid, status, timeout=5):
    """Waits for a command_result of `cid` with `status`; returns it or None."""
    def find():
        for r in cloud.results(cid):
            if r.get("status") == status:
                return r
        return None
    return await cloud.wait(find, timeout)


async def next_packets(cloud, n, timeout, pred=None):
    """Waits for n more live telemetry packets (after now) matching pred."""
    t0 = time.monotonic()

    def got():
        ps = [m.obj for m in cloud.of("telemetry", since=t0) if pred is None or pred(m.obj)]
        return ps if len(ps) >= n else None
    return await cloud.wait(got, timeout) or []


def cmd(cid, action, **payload):
    return {"command_id": cid, "action": action, "payload": payload}
