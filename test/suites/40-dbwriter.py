#!/usr/bin/python3
# 40-dbwriter.py: the DB writer against a real PostgreSQL 15 in a temporary
# directory, driven over its real Unix socket by a client written from
# docs/protocol.md section 5. Covers: migrations (from empty, re-run, a
# failing one leaves nothing), batches of every size, acks only after
# commit, duplicate replays, replays after a reconnect, malformed frames,
# history queries (raw and downsampled) against hand-computed numbers,
# latest-value semantics with out-of-order arrivals, events (commands,
# sessions, devices, users), rejects, stats, and SIGTERM.
#
# EMS_DBW_STORAGE=timescaledb runs it in hypertable mode (used by
# 40-dbwriter-tsdb.sh when the extension is installed).
import importlib.util
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

_spec = importlib.util.spec_from_file_location(
    "dbwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "40-dbwriter-lib.py"))
L = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(L)
ok, diag = L.ok, L.diag

STORAGE = os.environ.get("EMS_DBW_STORAGE", "auto")
BATCH = 50  # small batches so that every size class is cheap to reach
ROLLUP_MS = 200  # rollup step period (plain PostgreSQL mode)
T0 = (int(time.time()) // 3600 - 2) * 3600 * 1000  # two hours ago, on a whole hour


def run_migrate(pg, dirpath):
    return subprocess.run([L.DBW, "--dsn", pg.dsn, "--migrate-only", "--storage", STORAGE,
                           "--migrations", dirpath], capture_output=True, text=True)


def test_migrations(pg, wd):
    r = run_migrate(pg, os.path.join(L.ROOT, "cloud", "db"))
    ok("migrations apply to an empty database", r.returncode == 0, r.stderr[-800:])
    versions = pg.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations")
    mode = pg.sql("SELECT value FROM ems_meta WHERE key = 'storage'")
    # The versions of cloud/db that apply to this mode (NNNN_name[.pg|.tsdb].sql).
    skip = ".tsdb.sql" if mode == "postgres" else ".pg.sql"
    want = sorted({int(f[:4]) for f in os.listdir(os.path.join(L.ROOT, "cloud", "db"))
                   if f[:4].isdigit() and f.endswith(".sql") and not f.endswith(skip)})
    ok("schema_migrations records each file once", versions == ",".join(map(str, want)),
       (versions, want))
    ok("the storage mode is recorded", mode in ("postgres", "timescaledb"), mode)
    r = run_migrate(pg, os.path.join(L.ROOT, "cloud", "db"))
    again = pg.sql("SELECT count(*) FROM schema_migrations")
    ok("re-running the migrations changes nothing", r.returncode == 0 and again == str(len(want))
       and "0 migration(s) applied" in r.stderr, r.stderr[-400:])
    if mode == "postgres":
        ok("plain PostgreSQL mode says so in the log",
           "storage mode: postgres" in r.stderr and "timescaledb" in r.stderr, r.stderr[-400:])
    # A failing migration runs in one transaction: nothing of it stays.
    bad = os.path.join(wd, "db-bad")
    shutil.copytree(os.path.join(L.ROOT, "cloud", "db"), bad)
    with open(os.path.join(bad, "0999_bad.sql"), "w") as f:
        f.write("CREATE TABLE half_done (x int);\nSELECT 1 / 0;\n")
    r = run_migrate(pg, bad)
    left = pg.sql("SELECT to_regclass('half_done') IS NULL AND NOT EXISTS "
                  "(SELECT 1 FROM schema_migrations WHERE version = 999)")
    ok("a failing migration exits non-zero and leaves nothing behind",
       r.returncode != 0 and left == "t" and "0999_bad.sql failed" in r.stderr, r.stderr[-400:])
    # Asking for TimescaleDB on a database that is in the other mode is refused.
    other = "timescaledb" if mode == "postgres" else "postgres"
    r = subprocess.run([L.DBW, "--dsn", pg.dsn, "--migrate-only", "--storage", other,
                        "--migrations", os.path.join(L.ROOT, "cloud", "db")],
                       capture_output=True, text=True)
    ok("a database never switches storage mode by itself", r.returncode != 0, r.stderr[-300:])


def pk(dev, i, **kw):
    return L.packet(dev, T0 + i * 1000, seq=i, **kw)


def test_batches(pg, d):
    c = L.Link(d.sock)
    seq = 0
    expect = 0
    # 1, batch size, batch size + 1, and many frames of many sizes at once.
    for n, dev in ((1, "b_one"), (BATCH, "b_full"), (BATCH + 1, "b_over")):
        seq += 1
        c.send(L.telemetry(seq, [pk(dev, i) for i in range(n)]))
        got = c.wait_ack(seq)
        # Visible to another session right when the ACK arrives: it was
        # committed before it was acknowledged.
        stored = pg.count("device_id = '%s'" % dev)
        ok("a batch of %d row(s) is stored and acknowledged" % n, got and stored == n,
           "acked %d, stored %d" % (c.acked, stored))
        expect += n
    sizes = [1, 7, BATCH - 1, BATCH, BATCH + 1, 3 * BATCH + 5, 400, 1, 2]
    first = seq + 1
    start = 0
    for n in sizes:
        seq += 1
        c.send(L.telemetry(seq, [pk("b_many", start + i) for i in range(n)]))
        start += n
    got = c.wait_ack(seq)
    stored = pg.count("device_id = 'b_many'")
    ok("many frames of every size are stored once (%d rows)" % start,
       got and stored == start, "acked %d of %d..%d, stored %d" % (c.acked, first, seq, stored))
    # Replayed: the same rows again under new link_seqs (the gateway resends
    # after a reset): acknowledged, no duplicate rows.
    seq += 1
    c.send(L.telemetry(seq, [pk("b_many", i) for i in range(start)][:EMS_RECORDS]))
    seq += 1
    c.send(L.telemetry(seq, [pk("b_full", i) for i in range(BATCH)]))
    got = c.wait_ack(seq)
    ok("replayed packets are acknowledged without duplicate rows",
       got and pg.count("device_id = 'b_many'") == start and pg.count("device_id = 'b_full'") == BATCH,
       "count %d" % pg.count("device_id = 'b_many'"))
    st, stats = c.query({"op": "stats"})
    ok("the stats count the duplicates", st == 0 and stats["rows_duplicate"] >= start + BATCH,
       str(stats))
    # Same timestamp, different seq (a clock that stepped back): two rows.
    seq += 1
    c.send(L.telemetry(seq, [L.packet("b_clock", T0, seq=1), L.packet("b_clock", T0, seq=2)]))
    c.wait_ack(seq)
    ok("packets with the same time but another seq are both kept",
       pg.count("device_id = 'b_clock'") == 2)
    # Link reset before the ACK: resend with the same link_seq on a new
    # connection; idempotent.
    c2 = L.Link(d.sock)
    c2.send(L.telemetry(1, [pk("b_reset", i) for i in range(30)]))
    c2.close()
    c3 = L.Link(d.sock)
    c3.send(L.telemetry(1, [pk("b_reset", i) for i in range(30)]))
    got = c3.wait_ack(1)
    ok("a frame resent after a link reset is stored once", got and pg.count("device_id = 'b_reset'") == 30,
       "stored %d" % pg.count("device_id = 'b_reset'"))
    c3.close()
    # The rollup (plain mode) counts every stored row exactly once. These
    # rows are two hours old, behind the watermark: the writer marked their
    # buckets dirty and the next rollup step recomputes them.
    if pg.sql("SELECT value FROM ems_meta WHERE key = 'storage'") == "postgres":
        q = "SELECT coalesce(sum(n), 0) FROM telemetry_1m WHERE device_id IN ('b_many', 'b_full')"
        end = time.time() + 10
        while pg.sql(q) != str(start + BATCH) and time.time() < end:
            time.sleep(0.1)
        n1m = pg.sql(q)
        ok("the 1-minute rollup counts each stored row once despite replays",
           n1m == str(start + BATCH), "rollup says %s, stored %d" % (n1m, start + BATCH))
    c.close()


EMS_RECORDS = 4096


def expect_refused(d, data, name, reason_part, send_hello=True):
    c = L.Link(d.sock, send_hello=send_hello)
    c.send(data)
    c.wait(lambda: c.eof, 10)
    closed = c.eof
    ok(name, closed and c.error is not None and reason_part in c.error,
       "eof=%s error=%r" % (closed, c.error))
    c.close()


def test_malformed(pg, d):
    expect_refused(d, struct.pack(">IB", 0x7FFFFFFF, L.TELEMETRY), "an oversized frame is refused",
                   "length above the limit")
    expect_refused(d, struct.pack(">IB", (1 << 20) + 1, L.QUERY) + b"x" * 100,
                   "a frame one byte over 1 MiB is refused", "length above the limit")
    expect_refused(d, L.frame(99, b"abc"), "an unknown frame kind is refused", "unknown kind")
    expect_refused(d, L.frame(L.TELEMETRY, b""), "a frame before HELLO is refused",
                   "first frame must be hello", send_hello=False)
    expect_refused(d, L.hello(version=2), "another protocol version is refused with the reason",
                   "unsupported link protocol version 2", send_hello=False)
    bad = L.telemetry(1, [pk("m_bad", 0)])
    bad = bad.replace(b"m_bad", b"m/bad")
    expect_refused(d, bad, "a record with an invalid device id is refused", "malformed telemetry")
    expect_refused(d, L.telemetry(1, [pk("m_v", 0)], version=7),
                   "an unknown record version is refused", "malformed telemetry")
    trunc = L.telemetry(1, [pk("m_trunc", 0)])
    trunc = struct.pack(">I", struct.unpack(">I", trunc[:4])[0] - 3) + trunc[4:-3]
    expect_refused(d, trunc, "a truncated record is refused", "malformed telemetry")
    expect_refused(d, L.telemetry(5, [pk("m_seq", 0)]) + L.telemetry(5, [pk("m_seq", 1)]),
                   "a link_seq that does not increase is refused", "link_seq not increasing")
    expect_refused(d, L.frame(L.ACK, struct.pack("<Q", 1)), "the gateway may not send ACK",
                   "does not accept ack")
    ok("nothing of a refused frame is stored", pg.count("device_id LIKE 'm\\_%'") <= 1,
       str(pg.count("device_id LIKE 'm\\_%'")))
    c = L.Link(d.sock)
    c.send(L.telemetry(1, [pk("m_after", 0)]))
    ok("the writer keeps serving after malformed input", d.alive() and c.wait_ack(1))
    c.close()


def bucket_expect(samples, width_s, field):
    """Hand computation: {bucket_start_ms: (n, min, max, avg)} of one field."""
    out = {}
    for ts, vals in samples:
        b = (ts // (width_s * 1000)) * width_s * 1000
        out.setdefault(b, []).append(vals[field])
    return {b: (len(v), min(v), max(v), sum(v) / len(v)) for b, v in out.items()}


def test_history(pg, d):
    c = L.Link(d.sock)
    # 3 minutes at 1 Hz with a 50 s gap in the middle of the second minute,
    # varying values; temperature missing on every 7th sample.
    samples, packets = [], []
    for i in range(180):
        if 70 <= i < 120:
            continue
        bp = float(100 + (i * 37) % 251)      # integers: exact in float4
        soc = 50.0 + (i % 20) * 0.5            # halves: exact
        temp = None if i % 7 == 0 else 20.0 + (i % 5)
        p = L.packet("h_dev", T0 + i * 1000, seq=i, bp=bp, soc=soc, temp=temp, gv=230.0, gp=-float(i))
        packets.append(p)
        samples.append((T0 + i * 1000, {"bp": bp, "soc": soc, "temp": temp, "gp": -float(i)}))
    c.send(L.telemetry(1, packets))
    c.wait_ack(1)
    time.sleep(ROLLUP_MS * 3 / 1000.0)  # the late buckets reach the rollup
    if STORAGE == "timescaledb":
        # Backfill older than a continuous aggregate's watermark appears at
        # its next refresh (policy: every minute); do it now.
        pg.sql("CALL refresh_continuous_aggregate('telemetry_1m', NULL, NULL)")
        pg.sql("CALL refresh_continuous_aggregate('telemetry_1h', NULL, NULL)")
    q = {"op": "history", "device_id": "h_dev", "from": T0, "to": T0 + 180000}
    st, raw = c.query(dict(q, resolution="raw"))
    ok("raw history returns every stored sample in order",
       st == 0 and raw["count"] == 130 and raw["series"]["ts"] == [s[0] for s in samples]
       and raw["series"]["seq"][:3] == [0, 1, 2] and not raw["truncated"], str(raw)[:300])
    ok("raw history returns the stored values exactly (float4 shortest text)",
       st == 0 and raw["series"]["battery_voltage"][0] == 53.2 and raw["series"]["grid_voltage"][0] == 230
       and raw["series"]["battery_temperature"][0] is None and raw["series"]["battery_temperature"][1] == 21,
       str(raw["series"].get("battery_voltage", [])[:3]))
    for width in (10, 60, 120, 3600):
        st, res = c.query(dict(q, resolution=width))
        exp = bucket_expect(samples, width, "bp")
        expt = bucket_expect([(t, v) for t, v in samples if v["temp"] is not None], width, "temp")
        good = st == 0 and res["bucket_s"] == width and res["series"]["ts"] == sorted(exp)
        why = ""
        if good:
            for k, b in enumerate(res["series"]["ts"]):
                n, mn, mx, avg = exp[b]
                s = res["series"]
                if (s["n"][k] != n or s["battery_power_min"][k] != mn or s["battery_power_max"][k] != mx
                        or abs(s["battery_power_avg"][k] - avg) > 1e-3 * max(1, abs(avg))):
                    good, why = False, "bucket %d: %s vs %s" % (b, (s["n"][k], s["battery_power_min"][k],
                                                                  s["battery_power_max"][k],
                                                                  s["battery_power_avg"][k]), exp[b])
                    break
                tn, tmn, tmx, tavg = expt[b]
                if (s["battery_temperature_min"][k] != tmn or s["battery_temperature_max"][k] != tmx
                        or abs(s["battery_temperature_avg"][k] - tavg) > 1e-3 * tavg):
                    good, why = False, "temperature bucket %d" % b
                    break
        else:
            why = "%s %s" % (st, str(res)[:300])
        ok("downsampled history at %d s matches the hand computation" % width, good, why)
    # The gap shows as a gap: no bucket covers 80..110 s at 10 s width.
    st, res = c.query(dict(q, resolution=10))
    gap = [b for b in res["series"]["ts"] if T0 + 80000 <= b < T0 + 110000] if st == 0 else None
    ok("empty buckets are absent (gaps stay gaps)", gap == [], str(gap))
    st, res = c.query(dict(q, max_points=10))
    ok("auto resolution picks 60 s for 3 minutes and at most 10 points",
       st == 0 and res["bucket_s"] == 60 and len(res["series"]["ts"]) == 3, str(res)[:200])
    st, res = c.query(dict(q, max_points=1000))
    ok("auto resolution picks raw rows when they fit", st == 0 and res["resolution"] == "raw",
       str(res)[:200])
    # Rows newer than the rollup's watermark are answered too (from raw
    # rows), right after their ACK. The three rows stay in the current
    # minute: the watermark starts at the minute the database was made, so
    # a row from the minute before that is "late" and appears only after
    # the next rollup step (seen once when the suite began at hh:mm:59).
    if time.time() % 60 < 4:
        time.sleep(4.2 - time.time() % 60)
    now = int(time.time()) * 1000
    c.send(L.telemetry(2, [L.packet("h_live", now - 3000 + i * 1000, seq=i, bp=10.0 * (i + 1))
                           for i in range(3)]))
    c.wait_ack(2)
    st, res = c.query({"op": "history", "device_id": "h_live", "from": now - 3600000, "to": now + 60000,
                       "resolution": 60})
    n = sum(res["series"]["n"]) if st == 0 else -1
    ok("downsampled history includes rows newer than the rollup", n == 3, str(res)[:300])
    st, res = c.query({"op": "history", "device_id": "h_dev", "from": "2026-01-01T00:00:00Z",
                       "to": "2026-01-01T00:00:00Z"})
    ok("a bad range is refused with the member named", st == -22 and "to" in res["error"], str(res))
    st, res = c.query({"op": "history", "device_id": "bad/id", "from": 0, "to": 1})
    ok("a bad device id is refused", st == -22 and "device_id" in res["error"], str(res))
    st, res = c.query({"op": "nonsense"})
    ok("an unknown operation is refused", st == -22 and "op" in res["error"], str(res))
    c.close()


def test_latest(pg, d):
    c = L.Link(d.sock)
    live = L.packet("l_dev", T0 + 100000, seq=100, bp=1.5, backfill=False)
    c.send(L.telemetry(1, [live]))
    # Backfill arrives after the live packet, older timestamps, lower seqs.
    c.send(L.telemetry(2, [L.packet("l_dev", T0 + i * 1000, seq=i, bp=2.5, backfill=True)
                           for i in range(50)]))
    # An older packet with a higher seq number (e.g. after the edge's clock
    # stepped back) does not win either: the newest timestamp does.
    c.send(L.telemetry(3, [L.packet("l_dev", T0 + 60000, seq=500, bp=3.5)]))
    c.send(L.telemetry(4, [L.packet("l_other", T0, seq=1)]))
    c.wait_ack(4)
    st, res = c.query({"op": "latest", "device_ids": ["l_dev", "l_other", "l_none"]})
    devs = {x["device_id"]: x for x in res["devices"]} if st == 0 else {}
    ld = devs.get("l_dev", {})
    ok("latest is the newest timestamp, not the last arrival",
       ld.get("seq") == 100 and ld.get("battery", {}).get("power") == 1.5 and ld.get("backfill") is False,
       str(ld))
    ok("latest answers in the packet's own shape with received_at",
       ld.get("timestamp", "").endswith("Z") and "received_at" in ld
       and ld.get("system_status", {}).get("state") == "CHARGING", str(ld))
    ok("latest leaves out devices without telemetry", "l_none" not in devs and "l_other" in devs,
       str(list(devs)))
    c.close()


def test_events(pg, d):
    c = L.Link(d.sock)
    evs = [
        {"type": "device_add", "device_id": "e_dev", "token_hash": "ab" * 32},
        {"type": "user_upsert", "name": "alice", "role": "operator", "password_hash": "pbkdf2$x"},
        {"type": "command", "command_id": "cmd_1", "device_id": "e_dev", "action": "SET_MODE",
         "payload": {"target_mode": "AUTO"}, "created_by": "alice", "created_at": "2026-01-31T12:00:00.000Z"},
        {"type": "command_status", "command_id": "cmd_1", "status": "completed",
         "at": "2026-01-31T12:00:03.000Z"},
        {"type": "command_status", "command_id": "cmd_1", "status": "accepted",
         "at": "2026-01-31T12:00:01.000Z"},
        {"type": "session_open", "device_id": "e_dev", "connected_at": "2026-01-31T11:00:00.000Z",
         "remote": "127.0.0.1:4000", "gateway": "gw1"},
        {"type": "session_close", "device_id": "e_dev", "connected_at": "2026-01-31T11:00:00.000Z",
         "disconnected_at": "2026-01-31T11:30:00.000Z", "reason": "timeout"},
    ]
    for i, e in enumerate(evs):
        c.send(L.event(i + 1, e))
    # Replayed in full: nothing doubles.
    for i, e in enumerate(evs):
        c.send(L.event(100 + i, e))
    c.wait_ack(100 + len(evs) - 1)
    st, res = c.query({"op": "commands", "device_id": "e_dev"})
    cmd = res["commands"][0] if st == 0 and res["commands"] else {}
    ok("a command keeps its full status history, once",
       [e["status"] for e in cmd.get("events", [])] == ["pending", "accepted", "completed"], str(cmd))
    ok("the command's status is the newest, whatever the arrival order",
       cmd.get("status") == "completed" and cmd.get("created_by") == "alice", str(cmd))
    st, res = c.query({"op": "sessions", "device_id": "e_dev"})
    ok("device sessions are recorded open and closed",
       st == 0 and len(res["sessions"]) == 1 and res["sessions"][0]["disconnected_at"] ==
       "2026-01-31T11:30:00.000Z" and res["sessions"][0]["reason"] == "timeout", str(res))
    st, res = c.query({"op": "device_auth", "device_id": "e_dev"})
    ok("device auth lookup returns the token hash", st == 0 and res.get("found") and
       res["token_hash"] == "ab" * 32 and res["revoked"] is False, str(res))
    c.send(L.event(200, {"type": "device_revoke", "device_id": "e_dev", "at": "2026-02-01T00:00:00Z"}))
    c.wait_ack(200)
    st, res = c.query({"op": "device_auth", "device_id": "e_dev"})
    ok("a revoked device says so", st == 0 and res["revoked"] is True, str(res))
    st, res = c.query({"op": "device_auth", "device_id": "e_nobody"})
    ok("an unknown device is not found", st == 0 and res == {"found": False}, str(res))
    st, res = c.query({"op": "user", "name": "alice"})
    ok("user lookup returns role and password hash",
       st == 0 and res.get("role") == "operator" and res.get("password_hash") == "pbkdf2$x", str(res))
    # An event the database refuses for good is rejected, then acknowledged.
    c.send(L.event(300, {"type": "command_status", "command_id": "cmd_missing", "status": "accepted",
                         "at": "2026-01-31T12:00:01Z"}))
    c.send(L.event(301, {"type": "no_such_event"}))
    c.send(L.event(302, {"type": "session_open", "device_id": "e_dev2",
                         "connected_at": "2026-01-31T11:00:00Z"}))
    got = c.wait_ack(302)
    rej = sorted(r[0] for r in c.rejects)
    ok("events refused for good are rejected by link_seq, the rest of the batch commits",
       got and rej == [300, 301] and
       pg.sql("SELECT count(*) FROM device_sessions WHERE device_id = 'e_dev2'") == "1",
       "rejects %s" % c.rejects)
    # A telemetry record refused for good (a value PostgreSQL cannot store:
    # a time past its last timestamp, 294276 AD, that still fits the int64
    # microseconds of the binary format) is rejected alone; its neighbours
    # are stored. The gateway never sends this (it refuses years > 9999).
    far = L.packet("r_dev", 9224318684800000, seq=2)
    c.send(L.telemetry(400, [L.packet("r_dev", T0, seq=1), far, L.packet("r_dev", T0 + 1000, seq=3)]))
    got = c.wait_ack(400)
    ok("a record refused for good is rejected alone; its neighbours are stored",
       got and (400, 1) in [(r[0], r[1]) for r in c.rejects] and pg.count("device_id = 'r_dev'") == 2,
       "rejects %s, stored %d" % (c.rejects, pg.count("device_id = 'r_dev'")))
    c.close()


def tsdb_try(pg, *queries):
    """The first query that runs (view names differ between TimescaleDB versions)."""
    for q in queries:
        try:
            return pg.sql(q)
        except RuntimeError:
            continue
    return None


def test_tsdb_objects(pg, d):
    """TimescaleDB mode: the storage that 0002_telemetry.tsdb.sql promises
    exists (not only that rows arrive), and the writer watches its jobs."""
    ht = pg.sql("SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = 'telemetry' AND compression_enabled")
    ok("tsdb: telemetry is a hypertable with compression enabled", ht == "1", ht)
    iv = pg.sql("SELECT time_interval FROM timescaledb_information.dimensions"
                " WHERE hypertable_name = 'telemetry' AND column_name = 'ts'")
    ok("tsdb: chunks of 1 hour", iv == "01:00:00", iv)
    seg = tsdb_try(pg, "SELECT segmentby || ' / ' || orderby FROM timescaledb_information.hypertable_compression_settings"
                       " WHERE hypertable = 'telemetry'::regclass",
                   "SELECT string_agg(attname, ',' ORDER BY segmentby_column_index) FILTER (WHERE segmentby_column_index"
                   " IS NOT NULL) || ' / ' || string_agg(attname, ',' ORDER BY orderby_column_index) FILTER"
                   " (WHERE orderby_column_index IS NOT NULL) FROM timescaledb_information.compression_settings"
                   " WHERE hypertable_name = 'telemetry'")
    ok("tsdb: compression segments by device_id, orders by ts, seq",
       seg is not None and seg.startswith("device_id / ") and "ts" in seg and "seq" in seg, str(seg))
    pol = pg.sql("SELECT string_agg(proc_name || '=' || coalesce(config->>'compress_after', config->>'drop_after', ''),"
                 " ',' ORDER BY proc_name) FROM timescaledb_information.jobs WHERE hypertable_name = 'telemetry'")
    ok("tsdb: compression (after 1 day) and retention (90 days) policies on telemetry",
       pol == "policy_compression=1 day,policy_retention=90 days", pol)
    ca = pg.sql("SELECT string_agg(view_name || ':' || materialized_only, ',' ORDER BY view_name)"
                " FROM timescaledb_information.continuous_aggregates")
    ok("tsdb: continuous aggregates telemetry_1h and telemetry_1m, real-time", ca == "telemetry_1h:f,telemetry_1m:f", ca)
    caj = pg.sql("SELECT string_agg(c.view_name || ':' || j.proc_name, ',' ORDER BY c.view_name, j.proc_name)"
                 " FROM timescaledb_information.jobs j JOIN timescaledb_information.continuous_aggregates c"
                 " ON j.hypertable_name = c.materialization_hypertable_name")
    ok("tsdb: refresh policies on both aggregates, retention on telemetry_1m",
       caj == "telemetry_1h:policy_refresh_continuous_aggregate,telemetry_1m:policy_refresh_continuous_aggregate,"
              "telemetry_1m:policy_retention", caj)
    # The writer reads the jobs' state (first read about 1 s after start).
    c = L.Link(d.sock)
    end = time.time() + 10
    stats = None
    while time.time() < end:
        st, stats = c.query({"op": "stats"})
        if st == 0 and isinstance(stats.get("tsdb_jobs"), list) and len(stats["tsdb_jobs"]) >= 5:
            break
        time.sleep(0.2)
    ok("tsdb: the writer's stats list the background jobs and their failures",
       isinstance((stats or {}).get("tsdb_jobs"), list) and len(stats["tsdb_jobs"]) >= 5
       and "tsdb_job_failures" in stats, str(stats)[:500])
    c.close()


def test_sigterm(pg, d):
    c = L.Link(d.sock)
    # SIGHUP first: it must not end the writer (its default action would).
    d.send_signal(signal.SIGHUP)
    c.send(L.telemetry(1, [pk("hup_dev", 0)]))
    got = c.wait_ack(1)
    ok("SIGHUP leaves the writer running (nothing to reload)",
       got and d.alive() and pg.count("device_id = 'hup_dev'") == 1,
       "alive %s acked %s stored %d" % (d.alive(), got, pg.count("device_id = 'hup_dev'")))
    c.close()
    c = L.Link(d.sock)
    n = 0
    for k in range(20):
        c.send(L.telemetry(k + 1, [pk("s_dev", n + i) for i in range(25)]))
        n += 25
    d.send_signal(signal.SIGTERM)
    c.wait(lambda: c.eof, 20)
    rc = d.wait(20)
    stored = pg.count("device_id = 's_dev'")
    ok("SIGTERM writes and acknowledges what it holds, then exits 0",
       rc == 0 and c.acked == 20 and stored == n, "rc %s acked %d stored %d" % (rc, c.acked, stored))
    c.close()


def main():
    if not os.access(L.DBW, os.X_OK):
        print("not ok - ems-dbwriter binary missing at %s" % L.DBW)
        return 1
    pg = L.Postgres(preload="timescaledb" if STORAGE == "timescaledb" else None)
    wd = L.workdir()
    d = None
    try:
        test_migrations(pg, wd)
        d = L.DBWriter(pg, wd, "--batch-rows", str(BATCH), "--batch-ms", "30",
                       "--rollup-interval-ms", str(ROLLUP_MS), storage=STORAGE)
        stats = d.ready()
        ok("the writer starts and reports its storage mode", stats is not None, str(stats))
        test_batches(pg, d)
        test_malformed(pg, d)
        test_history(pg, d)
        test_latest(pg, d)
        test_events(pg, d)
        if pg.sql("SELECT value FROM ems_meta WHERE key = 'storage'") == "timescaledb":
            test_tsdb_objects(pg, d)
        test_sigterm(pg, d)
    except Exception as e:  # a crash of the test itself is a failure, with context
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
