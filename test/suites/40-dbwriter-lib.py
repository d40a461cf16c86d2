# 40-dbwriter-lib.py: shared helpers of the 40-dbwriter* suites (not a suite
# itself: not executable). A client of the gateway <-> DB writer link written
# from docs/protocol.md section 5 (so the suites check the document too),
# a private PostgreSQL cluster through test/lib/pg.sh, and psql for checks.
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import emstest  # noqa: E402  (test/lib/emstest.py: Tap, Proc, wait_for)

ROOT = os.environ.get("EMS_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("EMS_BUILD") or os.path.join(ROOT, "build")
DBW = os.path.join(BUILD, "ems-dbwriter")
PGSH = os.path.join(ROOT, "test", "lib", "pg.sh")

HELLO, ERROR, TELEMETRY, EVENT, ACK, REJECT, QUERY, RESULT = range(1, 9)
MAGIC = 0x4C534D45
STATES = ["IDLE", "CHARGING", "DISCHARGING", "FULL", "EMPTY", "ERROR"]
MODES = ["AUTO", "MANUAL"]
TARGETS = ["AUTO", "MANUAL_CHARGE", "MANUAL_DISCHARGE", "MANUAL_IDLE"]
F_HAS_SEQ, F_HAS_BACKLOG, F_HAS_WIFI, F_HAS_TARGET_MODE = 0x1, 0x2, 0x4, 0x8
F_HAS_TARGET_POWER, F_HAS_TEMP, F_HAS_CLOCK, F_CLOCK = 0x10, 0x20, 0x40, 0x80
F_HAS_BACKFILL, F_BACKFILL = 0x100, 0x200

# One Tap for the suite: ok(name, cond, why) and diag(msg) print its lines,
# tap.failed decides the exit status.
tap = emstest.Tap()
ok, diag = tap.ok, tap.note


# ------------------------------------------------------------------ frames

def frame(kind, payload):
    return struct.pack(">IB", len(payload) + 1, kind) + payload


def hello(version=1, info=b'{"name":"test-gateway"}'):
    return frame(HELLO, struct.pack("<IHH", MAGIC, version, 0) + info)


def packet(dev, ts_ms, seq=None, state="CHARGING", bv=53.2, bi=10.5, bp=558.6, soc=85.0,
           temp=27.5, gv=230.1, gp=-200.0, gf=50.0, wifi=-45, backfill=None, clock_synced=True,
           target_mode="AUTO", target_power=None, error_flags=0, mode="AUTO"):
    """A telemetry packet as a dict (the fields of ems_telemetry_t)."""
    return dict(dev=dev, ts=ts_ms, seq=seq, state=state, bv=bv, bi=bi, bp=bp, soc=soc, temp=temp,
                gv=gv, gp=gp, gf=gf, wifi=wifi, backfill=backfill, clock_synced=clock_synced,
                target_mode=target_mode, target_power=target_power, error_flags=error_flags,
                mode=mode)


def record(p, received_ms=None):
    """One telemetry record, version 1 (docs/protocol.md 5.6)."""
    flags = 0
    if p["seq"] is not None:
        flags |= F_HAS_SEQ
    if p["wifi"] is not None:
        flags |= F_HAS_WIFI
    if p["target_mode"] is not None:
        flags |= F_HAS_TARGET_MODE
    if p["target_power"] is not None:
        flags |= F_HAS_TARGET_POWER
    if p["temp"] is not None:
        flags |= F_HAS_TEMP
    if p["clock_synced"] is not None:
        flags |= F_HAS_CLOCK | (F_CLOCK if p["clock_synced"] else 0)
    if p["backfill"] is not None:
        flags |= F_HAS_BACKFILL | (F_BACKFILL if p["backfill"] else 0)
    dev = p["dev"].encode()
    return (struct.pack("<B", len(dev)) + dev +
            struct.pack("<qqQQBBBbHI9d", p["ts"], received_ms or p["ts"] + 20, p["seq"] or 0, 0,
                        STATES.index(p["state"]), MODES.index(p["mode"]),
                        TARGETS.index(p["target_mode"]) if p["target_mode"] else 0,
                        p["wifi"] or 0, flags, p["error_flags"],
                        p["target_power"] or 0.0, p["bv"], p["bi"], p["bp"], p["soc"],
                        p["temp"] or 0.0, p["gv"], p["gp"], p["gf"]))


def telemetry(link_seq, packets, version=1):
    body = b"".join(record(p) for p in packets)
    return frame(TELEMETRY, struct.pack("<QHH", link_seq, version, len(packets)) + body)


def event(link_seq, obj):
    return frame(EVENT, struct.pack("<Q", link_seq) + json.dumps(obj).encode())


def query(req_id, obj):
    return frame(QUERY, struct.pack("<Q", req_id) + json.dumps(obj).encode())


# ------------------------------------------------------------------ client

class Link:
    """A blocking client of the link with a frame reader."""

    def __init__(self, path, send_hello=True, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.acked = 0
        self.rejects = []
        self.results = {}
        self.peer_hello = None
        self.error = None
        self.eof = False
        self.next_req = 1
        if send_hello:
            self.send(hello())

    def send(self, data):
        self.s.sendall(data)

    def try_send(self, data, timeout):
        """Sends what fits within `timeout`; returns the bytes sent."""
        self.s.setblocking(False)
        sent = 0
        end = time.time() + timeout
        try:
            while sent < len(data) and time.time() < end:
                _, w, _ = select.select([], [self.s], [], max(0, end - time.time()))
                if not w:
                    break
                try:
                    sent += self.s.send(data[sent:])
                except BlockingIOError:
                    pass
        finally:
            self.s.setblocking(True)
        return sent

    def _read_some(self, timeout):
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            return False
        try:
            chunk = self.s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        while len(self.buf) >= 5:
            (n,) = struct.unpack(">I", self.buf[:4])
            if len(self.buf) < 4 + n:
                break
            kind, payload = self.buf[4], self.buf[5:4 + n]
            self.buf = self.buf[4 + n:]
            self._frame(kind, payload)
        return True

    def _frame(self, kind, p):
        if kind == HELLO:
            self.peer_hello = p
        elif kind == ERROR:
            self.error = p.decode(errors="replace")
        elif kind == ACK:
            (seq,) = struct.unpack("<Q", p)
            assert seq >= self.acked, "ACK went backwards"
            self.acked = seq
        elif kind == REJECT:
            seq, idx = struct.unpack("<QI", p[:12])
            self.rejects.append((seq, idx, p[12:].decode(errors="replace")))
        elif kind == RESULT:
            rid, st = struct.unpack("<Qi", p[:12])
            self.results[rid] = (st, json.loads(p[12:]))

    def pump(self, timeout=0.0):
        end = time.time() + timeout
        while True:
            got = self._read_some(max(0, end - time.time()))
            if self.eof or (not got and time.time() >= end):
                return

    def wait(self, cond, timeout=20):
        end = time.time() + timeout
        while not cond():
            if self.eof or time.time() >= end:
                return cond()
            self._read_some(min(0.2, max(0, end - time.time())))
        return True

    def wait_ack(self, seq, timeout=20):
        return self.wait(lambda: self.acked >= seq, timeout)

    def query(self, obj, timeout=20):
        rid = self.next_req
        self.next_req += 1
        self.send(query(rid, obj))
        if not self.wait(lambda: rid in self.results, timeout):
            return (None, None)
        return self.results.pop(rid)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


# ------------------------------------------------------------------ processes

class Postgres:
    def __init__(self, preload=None):
        env = dict(os.environ)
        if preload:
            env["EMS_PG_PRELOAD"] = preload
        out = subprocess.run([PGSH, "start"], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError("pg.sh start failed: " + out.stderr)
        self.dir, self.port, self.dsn = out.stdout.strip().split(" ", 2)

    def kill(self):
        subprocess.run([PGSH, "kill", self.dir], check=True)

    def restart(self):
        subprocess.run([PGSH, "restart", self.dir], check=True)

    def stop(self):
        subprocess.run([PGSH, "stop", self.dir])

    def sql(self, text):
        out = subprocess.run(["psql", self.dsn, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", text],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("psql: " + out.stderr)
        return out.stdout.strip()

    def sql_db(self, db, text):
        """sql() in another database of the cluster."""
        out = subprocess.run(["psql", self.dsn.replace("dbname=postgres", "dbname=" + db), "-XAtq",
                              "-v", "ON_ERROR_STOP=1", "-c", text], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("psql: " + out.stderr)
        return out.stdout.strip()

    def count(self, where="true"):
        return int(self.sql("SELECT count(*) FROM telemetry WHERE " + where))


class DBWriter(emstest.Proc):
    """The real ems-dbwriter (an emstest.Proc); start() returns once it
    accepts connections on its socket."""

    def __init__(self, pg, workdir, *args, storage="auto", dsn=None):
        self.sock = os.path.join(workdir, "dbw.sock")
        argv = [DBW, "--socket", self.sock, "--dsn", dsn or pg.dsn, "--storage", storage,
                "--migrations", os.path.join(ROOT, "cloud", "db")] + list(args)
        super().__init__("ems-dbwriter", argv, os.path.join(workdir, "dbwriter.log"))

    def start(self):
        super().start()
        end = time.time() + 20
        while time.time() < end:
            if os.path.exists(self.sock):
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(self.sock)
                    s.close()
                    return self
                except OSError:
                    pass
            if not self.alive():
                raise RuntimeError("ems-dbwriter exited with %d" % self.returncode)
            time.sleep(0.05)
        raise RuntimeError("ems-dbwriter did not listen")

    def ready(self, timeout=20):
        """Waits until migrations are done (the stats say the storage mode)."""
        end = time.time() + timeout
        while time.time() < end:
            c = Link(self.sock)
            st, res = c.query({"op": "stats"})
            c.close()
            if st == 0 and res.get("storage") not in (None, "unknown"):
                return res
            time.sleep(0.1)
        return None


def workdir():
    return tempfile.mkdtemp(prefix="ems-dbw-test.")


def log_tail(path, n=30):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


def check_log_clean(path):
    """Every run of the writer (sanitized in `make test`) left no sanitizer
    report and no error line it should not have."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        text = ""
    bad = emstest.sanitizer_lines(text)
    ok("no sanitizer report in the writer's log", not bad, "\n".join(bad[:10]))
