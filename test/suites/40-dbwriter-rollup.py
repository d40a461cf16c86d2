#!/usr/bin/python3
# 40-dbwriter-rollup.py: the plain-PostgreSQL 1-minute rollup under backfill
# (the security issue's item 2: devices sending backfill in many different
# old minutes once made one rollup step run for minutes on the writing
# connection, and no device got an ACK meanwhile).
#
#   - backfill in many distinct old minutes for several devices: live frames
#     are acknowledged while the rollup works through its backlog, and each
#     step recomputes at most --rollup-max-buckets buckets;
#   - a rollup step that cannot finish (a test session holds a lock on
#     telemetry_1m): batches keep committing and ACKs keep coming, because
#     the step runs on its own connection;
#   - the rollup converges: telemetry_1m equals an aggregate computed
#     directly from the raw rows, for backfilled minutes (the queue) and
#     for minutes the watermark swept, with inserts racing the steps;
#   - the work of one step is bounded: it reads the rows of the buckets it
#     recomputes through the (device_id, ts) index, not the device's rows.
import importlib.util
import os
import shutil
import subprocess
import sys
import time

_spec = importlib.util.spec_from_file_location(
    "dbwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "40-dbwriter-lib.py"))
L = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(L)
ok, diag = L.ok, L.diag

MAXB = 10           # --rollup-max-buckets
DEVS = 6            # devices sending backfill
MINUTES = 150       # distinct old minutes per device
NOW_MIN = int(time.time()) // 60 * 60 * 1000
OLD0 = NOW_MIN - 6 * 3600 * 1000  # six hours ago, on a whole minute


class Seq:
    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n


def bp_of(dev, minute, k):
    return float((dev * 7 + minute * 3 + k) % 500)  # integers: exact sums


def backfill_frames(seq, minute_from, minute_to, prefix="rq"):
    """Two packets per device and minute, as frames of 50 records."""
    frames = []
    for dv in range(DEVS):
        pk = []
        for m in range(minute_from, minute_to):
            for k in range(2):
                ts = OLD0 + m * 60000 + k * 20000 + dv * 100
                pk.append(L.packet("%s_%d" % (prefix, dv), ts, seq=m * 2 + k, bp=bp_of(dv, m, k),
                                   backfill=True, temp=None if k else 20.0 + m % 5))
        for i in range(0, len(pk), 50):
            frames.append(L.telemetry(seq.next(), pk[i:i + 50]))
    return frames


def live_frame(seq, i, dev="rq_live"):
    now = int(time.time() * 1000)
    return L.telemetry(seq.next(), [L.packet(dev, now - 500 + k, seq=i * 10 + k, bp=float(i % 50))
                                    for k in range(3)])


def queue_len(pg):
    return int(pg.sql("SELECT count(*) FROM ems_rollup_queue"))


def test_backlog(pg, d, c, seq):
    frames = backfill_frames(seq, 0, MINUTES)
    for f in frames:
        c.send(f)
    got = c.wait_ack(seq.n, 60)
    ok("backfill in %d distinct old minutes for %d devices is acknowledged" % (MINUTES, DEVS), got,
       "acked %d of %d" % (c.acked, seq.n))
    backlog = queue_len(pg)
    # Live frames while the rollup works through the backlog.
    acked_live = 0
    for i in range(20):
        c.send(live_frame(seq, i))
        if c.wait_ack(seq.n, 10):
            acked_live += 1
    left = queue_len(pg)
    ok("live frames are acknowledged while the rollup has a backlog (%d queued buckets before, "
       "%d after)" % (backlog, left), acked_live == 20 and backlog >= 5 * MAXB and left > 0,
       "acked %d of 20, queue %d -> %d" % (acked_live, backlog, left))
    st, stats = c.query({"op": "stats"})
    ok("a rollup step recomputes at most --rollup-max-buckets buckets",
       st == 0 and stats["rollup_steps"] > 0 and 0 < stats["rollup_recomputed_max"] <= MAXB,
       str({k: v for k, v in (stats or {}).items() if k.startswith("rollup")}))


def rollup_waiting(pg):
    return pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ems_rollup_step%'"
                  " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()") != "0"


def test_blocked_step(pg, d, c, seq):
    # More late rows, so the step has work; then hold its table.
    for f in backfill_frames(seq, MINUTES, MINUTES + 20):
        c.send(f)
    c.wait_ack(seq.n, 30)
    hold = subprocess.Popen(["psql", pg.dsn, "-Xq", "-c",
                             "BEGIN; LOCK TABLE telemetry_1m IN EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;"],
                            stdout=subprocess.DEVNULL)
    end = time.time() + 6
    while not rollup_waiting(pg) and time.time() < end:
        time.sleep(0.05)
    blocked = rollup_waiting(pg)
    ok("a rollup step is running and blocked (telemetry_1m locked by the test)", blocked)
    acked = 0
    first = seq.n + 1
    for i in range(10):
        c.send(live_frame(seq, 100 + i))
        for f in backfill_frames(seq, MINUTES + 20 + i, MINUTES + 21 + i):
            c.send(f)
        if c.wait_ack(seq.n, 3):
            acked += 1
    still = rollup_waiting(pg)
    ok("while the step is blocked, batches keep committing and ACKs keep coming",
       blocked and acked == 10 and still,
       "acked %d of 10 rounds (frames %d..%d, last ack %d); step still blocked: %s" %
       (acked, first, seq.n, c.acked, still))
    hold.wait(20)


AGG_RAW = ("SELECT device_id, date_bin('1 minute', ts, TIMESTAMPTZ 'epoch') AS b, count(*)::int AS n,"
           " count(battery_temperature)::int AS nt, sum(battery_power::float8) AS s,"
           " min(battery_power) AS mn, max(battery_power) AS mx,"
           " coalesce(sum(battery_temperature::float8), 0) AS ts_"
           " FROM telemetry WHERE device_id LIKE 'rq\\_%' AND ts < (SELECT watermark FROM ems_rollup_state)"
           " GROUP BY 1, 2")
AGG_1M = ("SELECT device_id, bucket, n, n_temp, battery_power_sum, battery_power_min, battery_power_max,"
          " battery_temperature_sum FROM telemetry_1m WHERE device_id LIKE 'rq\\_%'"
          " AND bucket < (SELECT watermark FROM ems_rollup_state)")


def test_converges(pg, c, live_until_ms):
    end = time.time() + 150
    while time.time() < end:
        st, stats = c.query({"op": "stats"})
        wm = int(pg.sql("SELECT (extract(epoch FROM watermark) * 1000)::int8 FROM ems_rollup_state"))
        if queue_len(pg) == 0 and not stats.get("rollup_backlog") and wm > live_until_ms:
            break
        time.sleep(0.5)
    ok("the rollup works through its backlog and the watermark passes the live rows",
       queue_len(pg) == 0 and wm > live_until_ms,
       "queue %d, watermark %d, live rows until %d" % (queue_len(pg), wm, live_until_ms))
    missing = pg.sql("SELECT count(*) FROM ((%s) EXCEPT (%s)) x" % (AGG_RAW, AGG_1M))
    extra = pg.sql("SELECT count(*) FROM ((%s) EXCEPT (%s)) x" % (AGG_1M, AGG_RAW))
    buckets = pg.sql("SELECT count(*) FROM (%s) x" % AGG_RAW)
    live = pg.sql("SELECT count(*) FROM telemetry_1m WHERE device_id = 'rq_live'")
    ok("telemetry_1m equals a direct aggregate of the raw rows (%s buckets, %s of them swept live)"
       % (buckets, live), missing == "0" and extra == "0" and int(buckets) > DEVS * MINUTES and int(live) > 0,
       "%s buckets differ or are missing, %s extra" % (missing, extra))


def test_bounded_work(pg):
    """One step of 50 buckets reads ~50 buckets' rows, whatever the device holds."""
    pg.sql("CREATE DATABASE bounded")
    r = subprocess.run([L.DBW, "--dsn", pg.dsn.replace("dbname=postgres", "dbname=bounded"),
                        "--migrate-only", "--storage", "postgres",
                        "--migrations", os.path.join(L.ROOT, "cloud", "db")], capture_output=True, text=True)
    if not ok("a second database migrates", r.returncode == 0, r.stderr[-500:]):
        return
    q = lambda s: pg.sql_db("bounded", s)  # noqa: E731
    # 10 devices x 4 hours at one row per 2 s (72,000 rows); three of them
    # get 120 old minutes queued, 30 rows in each.
    q("INSERT INTO telemetry (ts, received_at, seq, battery_voltage, battery_current, battery_power,"
      " battery_soc, grid_voltage, grid_power, grid_frequency, error_flags, state, mode, device_id)"
      " SELECT date_bin('1 minute', now() - interval '5 hours', TIMESTAMPTZ 'epoch') + s * interval '2 seconds',"
      " now(), s, 50, 1, s % 100, 50, 230, 0, 50, 0, 'IDLE', 'AUTO', 'd' || d"
      " FROM generate_series(1, 10) d, generate_series(0, 4 * 1800 - 1) s")
    q("INSERT INTO ems_rollup_queue (device_id, bucket) SELECT device_id, date_bin('1 minute', ts,"
      " TIMESTAMPTZ 'epoch') FROM telemetry WHERE device_id IN ('d1', 'd2', 'd3') AND seq < 40 * 30 GROUP BY 1, 2")
    q("ANALYZE")
    queued = int(q("SELECT count(*) FROM ems_rollup_queue"))
    q("SELECT pg_stat_reset()")
    res = q("SELECT recomputed FROM ems_rollup_step(interval '30 seconds', 50)")
    time.sleep(0.5)  # the step's session has ended and flushed its counters
    read = int(q("SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0) FROM pg_stat_user_tables"
                 " WHERE relname ~ '^telemetry_(p[0-9]{8}|default)$'"))
    left = int(q("SELECT count(*) FROM ems_rollup_queue"))
    ok("one step recomputes at most its bound (50 of %d queued buckets)" % queued,
       res == "50" and left == queued - 50, "recomputed %s, queue %d -> %d" % (res, queued, left))
    ok("one step reads only the rows of its buckets (%d rows read for 50 x 30; 72,000 stored)" % read,
       50 * 30 <= read <= 50 * 30 + 200, "%d rows read" % read)


def main():
    if not os.access(L.DBW, os.X_OK):
        print("not ok - ems-dbwriter binary missing at %s" % L.DBW)
        return 1
    pg = L.Postgres()
    wd = L.workdir()
    d = None
    try:
        d = L.DBWriter(pg, wd, "--batch-rows", "200", "--batch-ms", "20", "--rollup-interval-ms", "200",
                       "--rollup-max-buckets", str(MAXB), storage="postgres")
        ok("the writer starts", d.ready() is not None)
        c = L.Link(d.sock)
        seq = Seq()
        test_backlog(pg, d, c, seq)
        test_blocked_step(pg, d, c, seq)
        live_until = int(time.time() * 1000)
        test_converges(pg, c, live_until)
        c.close()
        test_bounded_work(pg)
    except Exception as e:
        import traceback
        ok("suite ran to the end", False, "%s\n%s" % (e, traceback.format_exc()))
    finally:
        if d and d.alive():
            d.stop()
        L.check_log_clean(os.path.join(wd, "dbwriter.log"))
        if L.tap.failed:
            diag("dbwriter log:\n" + L.log_tail(os.path.join(wd, "dbwriter.log"), 40))
        pg.stop()
        shutil.rmtree(wd, ignore_errors=True)
    return 1 if L.tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
