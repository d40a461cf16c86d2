#!/usr/bin/python3
# 40-dbwriter-faults.py: the DB writer when things break, with a client that
# behaves like the gateway (it keeps every frame until it is acknowledged
# and resends the unacknowledged ones, in order, after a reconnect).
#
#   - PostgreSQL stopped with -m immediate mid-stream, then restarted: no
#     ACK advances while it is down, nothing is lost, nothing is doubled;
#   - backpressure: with PostgreSQL down the writer holds at most
#     --queue-rows rows, stops reading the socket (the client's writes
#     block), still answers queries on another connection, and everything
#     arrives once PostgreSQL is back;
#   - ems-dbwriter killed with SIGKILL mid-stream and restarted;
#   - a stalled database (a lock held for 2 s): ACKs wait, then catch up.
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

_spec = importlib.util.spec_from_file_location(
    "dbwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "40-dbwriter-lib.py"))
L = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(L)
ok, diag = L.ok, L.diag

STORAGE = os.environ.get("EMS_DBW_STORAGE", "auto")
T0 = (int(time.time()) // 3600 - 1) * 3600 * 1000


class Gateway:
    """The gateway's side of the delivery rule, in miniature."""

    def __init__(self, sock):
        self.sock = sock
        self.unacked = []  # (link_seq, bytes)
        self.seq = 0
        self.link = None
        self.acked = 0
        self.connect()

    def connect(self):
        end = time.time() + 20
        while True:
            try:
                self.link = L.Link(self.sock)
                break
            except OSError:
                if time.time() > end:
                    raise
                time.sleep(0.1)
        for _, data in self.unacked:
            self.link.send(data)

    def prune(self):
        self.link.pump(0)
        if self.link.acked > self.acked:
            self.acked = self.link.acked
        self.unacked = [(s, d) for s, d in self.unacked if s > self.acked]

    def send(self, packets):
        self.seq += 1
        data = L.telemetry(self.seq, packets)
        self.unacked.append((self.seq, data))
        try:
            self.link.send(data)
        except OSError:
            pass  # reconnect() resends it
        self.prune()

    def reconnect(self):
        self.link.close()
        self.connect()

    def wait_all(self, timeout=40):
        end = time.time() + timeout
        while time.time() < end:
            self.link.pump(0.2)
            self.prune()
            if self.acked >= self.seq:
                return True
            if self.link.eof:
                self.reconnect()
        return False


def packets_for(k, per, prefix):
    return [L.packet("%s_%d" % (prefix, i), T0 + k * 1000, seq=k) for i in range(per)]


def distinct_ok(pg, prefix, expect):
    n = pg.count("device_id LIKE '%s\\_%%'" % prefix)
    d = int(pg.sql("SELECT count(DISTINCT (device_id, ts, seq)) FROM telemetry WHERE device_id LIKE '%s\\_%%'"
                   % prefix))
    return n == expect and d == expect, "rows %d, distinct %d, expected %d" % (n, d, expect)


def test_pg_killed(pg, d):
    g = Gateway(d.sock)
    frames, per = 300, 10
    acked_at_kill = None
    for k in range(frames):
        g.send(packets_for(k, per, "pk"))
        time.sleep(0.01)
        if k == 100:
            pg.kill()
            time.sleep(0.5)
            g.prune()
            acked_at_kill = g.acked
        if k == 200:
            g.prune()
            ok("no ACK advances while PostgreSQL is down", g.acked == acked_at_kill,
               "acked %d at kill, %d later" % (acked_at_kill, g.acked))
            pg.restart()
    done = g.wait_all()
    good, why = distinct_ok(pg, "pk", frames * per)
    ok("PostgreSQL killed and restarted mid-stream: every frame acknowledged", done,
       "acked %d of %d" % (g.acked, g.seq))
    ok("PostgreSQL killed and restarted mid-stream: nothing lost, nothing doubled", good, why)
    st, stats = g.link.query({"op": "stats"})
    ok("the stats count the reconnect", st == 0 and stats["pg_reconnects"] >= 1, str(stats))
    g.link.close()


def test_backpressure(pg, wd):
    d = L.DBWriter(pg, wd, "--batch-rows", "200", "--queue-rows", "1000", "--batch-ms", "20",
                   storage=STORAGE)
    d.ready()
    pg.kill()
    time.sleep(0.3)
    c = L.Link(d.sock)
    per, frames = 100, 200
    data = b"".join(L.telemetry(k + 1, packets_for(k, per, "bp")) for k in range(frames))
    sent = c.try_send(data, 3.0)
    ok("with PostgreSQL down the writer stops reading (the client's writes block)",
       sent < len(data), "sent %d of %d bytes" % (sent, len(data)))
    q = L.Link(d.sock)
    st, stats = q.query({"op": "stats"}, timeout=10)
    ok("a query-only connection is still answered during backpressure", st == 0, str(st))
    ok("the writer holds at most --queue-rows rows (plus one frame)",
       st == 0 and stats["paused"] and stats["queue_rows"] <= 1000 + per, str(stats))
    ok("nothing is acknowledged while PostgreSQL is down", c.acked == 0, str(c.acked))
    pg.restart()
    end = time.time() + 60
    while sent < len(data) and time.time() < end:
        sent += c.try_send(data[sent:], 0.5)
        c.pump(0)
    done = c.wait_ack(frames, 60)
    good, why = distinct_ok(pg, "bp", frames * per)
    ok("after PostgreSQL is back everything is stored once and acknowledged", done and good,
       "acked %d, %s" % (c.acked, why))
    c.close()
    q.close()
    d.stop()


def test_dbwriter_killed(pg, wd):
    d = L.DBWriter(pg, wd, "--batch-rows", "100", "--batch-ms", "20", storage=STORAGE)
    d.ready()
    g = Gateway(d.sock)
    frames, per = 200, 10
    for k in range(frames):
        g.send(packets_for(k, per, "dk"))
        time.sleep(0.005)
        if k == 100:
            d.stop(signal.SIGKILL)
            d.start()
            g.reconnect()  # resends everything not acknowledged
    done = g.wait_all()
    good, why = distinct_ok(pg, "dk", frames * per)
    ok("ems-dbwriter killed with SIGKILL and restarted: nothing lost, nothing doubled",
       done and good, "acked %d of %d, %s" % (g.acked, g.seq, why))
    g.link.close()
    d.stop()


def test_stalled(pg, wd):
    d = L.DBWriter(pg, wd, "--batch-rows", "50", "--batch-ms", "20", storage=STORAGE)
    d.ready()
    g = Gateway(d.sock)
    g.send(packets_for(0, 10, "st"))
    g.wait_all(10)
    lock = subprocess.Popen(["psql", pg.dsn, "-Xq", "-c",
                             "BEGIN; LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE; "
                             "SELECT pg_sleep(2); COMMIT;"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    before = g.acked
    for k in range(1, 40):
        g.send(packets_for(k, 10, "st"))
        time.sleep(0.02)
    g.prune()
    stalled = g.acked == before
    lock.wait(10)
    done = g.wait_all(20)
    good, why = distinct_ok(pg, "st", 400)
    ok("a stalled database holds the ACKs back, then everything commits",
       stalled and done and good, "stalled=%s acked %d of %d, %s" % (stalled, g.acked, g.seq, why))
    g.link.close()
    d.stop()


def main():
    if not os.access(L.DBW, os.X_OK):
        print("not ok - ems-dbwriter binary missing at %s" % L.DBW)
        return 1
    pg = L.Postgres(preload="timescaledb" if STORAGE == "timescaledb" else None)
    wd = L.workdir()
    d = None
    try:
        d = L.DBWriter(pg, wd, "--batch-rows", "100", "--batch-ms", "20", storage=STORAGE)
        ok("the writer starts", d.ready() is not None)
        test_pg_killed(pg, d)
        d.stop()
        test_backpressure(pg, wd)
        test_dbwriter_killed(pg, wd)
        test_stalled(pg, wd)
    except Exception as e:
        import traceback
        ok("suite ran to the end", False, "%s\n%s" % (e, traceback.format_exc()))
    finally:
        if d and d.alive():
            d.stop()
        L.check_log_clean(os.path.join(wd, "dbwriter.log"))
        if L.tap.failed:
            diag("dbwriter log:\n" + L.log_tail(os.path.join(wd, "dbwriter.log"), 60))
        pg.stop()
        shutil.rmtree(wd, ignore_errors=True)
    return 1 if L.tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
