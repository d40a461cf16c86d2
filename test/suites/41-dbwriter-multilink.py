#!/usr/bin/python3
# 41-dbwriter-multilink.py: two gateway links on one DB writer under constant
# backpressure. The benchmark (docs/benchmarks.md, note 6) saw the writer stop
# reading both link sockets with two gateways at 20,000 devices; this suite
# drives the paths that pause and resume several links at once:
#
#   - a small --queue-rows, so every few frames the queue is full and the
#     writer pauses every durable link, then resumes all of them at half;
#   - both links write as fast as the writer reads, with queries between the
#     telemetry frames (the gateway asks for credentials on the same link);
#   - the clients read nothing until they have sent everything (a saturated
#     gateway), so the writer's ACK/RESULT writes back up while it pauses;
#   - one round with slow commits (a table lock held for 3 s, like the
#     rollup step holding the writing connection at 20,000 devices).
#
# Each round checks that both links were read to the end, every frame of both
# is acknowledged and stored exactly once, and that backpressure did happen.
import importlib.util
import os
import select
import shutil
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


def stream(prefix, frames, per, queries):
    """`frames` TELEMETRY frames of `per` records, each followed by
    `queries` stats queries."""
    out = []
    for k in range(frames):
        out.append(L.telemetry(k + 1, [L.packet("%s_%d" % (prefix, i), T0 + k * 1000, seq=k)
                                       for i in range(per)]))
        for j in range(queries):
            out.append(L.query(k * 100 + j + 1, {"op": "stats"}))
    return b"".join(out)


def pump_all(links, datas, want, answers, quiet_s):
    """Writes each link's stream without blocking; a link's replies are read
    only once all of its stream is written. Stops when every frame is
    acknowledged and every query answered, or nothing moved for `quiet_s` seconds. Returns the bytes
    written per link. `answers`: RESULTs expected per link."""
    sent = [0] * len(links)
    for c in links:
        c.s.setblocking(False)
    last_move = time.time()
    while time.time() - last_move < quiet_s:
        rd = [c.s for c, d, n in zip(links, datas, sent) if n == len(d) and not c.eof]
        wr = [c.s for c, d, n in zip(links, datas, sent) if n < len(d)]
        if not rd and not wr:
            break
        r, w, _ = select.select(rd, wr, [], 0.2)
        for i, c in enumerate(links):
            if c.s in w:
                try:
                    n = c.s.send(datas[i][sent[i]:sent[i] + 262144])
                    if n:
                        sent[i] += n
                        last_move = time.time()
                except (BlockingIOError, InterruptedError):
                    pass
            if c.s in r:
                before = (c.acked, len(c.buf), len(c.results))
                try:
                    c._read_some(0)
                except (BlockingIOError, InterruptedError):
                    pass
                if (c.acked, len(c.buf), len(c.results)) != before:
                    last_move = time.time()
        if all(n == len(d) for n, d in zip(sent, datas)) and \
                all(c.acked >= want and len(c.results) >= answers for c in links):
            break
    for c in links:
        c.s.setblocking(True)
    return sent


def pauses_logged(log):
    try:
        with open(log, "rb") as f:
            return f.read().count(b"pausing the link")
    except OSError:
        return 0


def round_(pg, wd, name, args, frames, per, queries, lock_s=0):
    d = L.DBWriter(pg, wd, *args, storage=STORAGE)
    log = os.path.join(wd, "dbwriter.log")
    pauses_before = pauses_logged(log)
    try:
        ok("%s: the writer starts" % name, d.ready() is not None)
        prefixes = [name + "a", name + "b"]
        datas = [stream(p, frames, per, queries) for p in prefixes]
        links = [L.Link(d.sock), L.Link(d.sock)]
        lock = None
        if lock_s:
            lock = subprocess.Popen(
                ["psql", pg.dsn, "-Xq", "-c",
                 "SELECT pg_sleep(0.3); BEGIN; LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE; "
                 "SELECT pg_sleep(%g); COMMIT;" % lock_s], stdout=subprocess.DEVNULL)
        sent = pump_all(links, datas, frames, frames * queries, 15.0)
        if lock:
            lock.wait(20)
        q = L.Link(d.sock)
        st, stats = q.query({"op": "stats"}, timeout=10)
        q.close()
        ok("%s: both links are read to the end" % name,
           all(n == len(x) for n, x in zip(sent, datas)),
           "wrote %s of %s bytes; writer stats %s" % (sent, [len(x) for x in datas], stats))
        ok("%s: every frame of both links is acknowledged" % name,
           all(c.acked >= frames for c in links),
           "acked %s of %d; writer stats %s" % ([c.acked for c in links], frames, stats))
        for p in prefixes:
            n = pg.count("device_id LIKE '%s\\_%%'" % p)
            dist = int(pg.sql("SELECT count(DISTINCT (device_id, ts, seq)) FROM telemetry "
                              "WHERE device_id LIKE '%s\\_%%'" % p))
            ok("%s: link %s stored exactly once" % (name, p),
               n == frames * per and dist == n, "rows %d, distinct %d, expected %d" % (n, dist, frames * per))
        if queries:
            ok("%s: every query on the links is answered" % name,
               all(len(c.results) == frames * queries for c in links),
               "answered %s of %d" % ([len(c.results) for c in links], frames * queries))
        ok("%s: backpressure paused the links (the case under test happened)" % name,
           pauses_logged(log) > pauses_before, "no 'pausing the link' line in the writer's log")
        for c in links:
            c.close()
    finally:
        ok("%s: the writer stops cleanly" % name, d.stop() == 0)


def main():
    if not os.access(L.DBW, os.X_OK):
        print("not ok - ems-dbwriter binary missing at %s" % L.DBW)
        return 1
    pg = L.Postgres(preload="timescaledb" if STORAGE == "timescaledb" else None)
    wd = L.workdir()
    try:
        round_(pg, wd, "small", ["--batch-rows", "100", "--queue-rows", "200", "--batch-ms", "5"],
               frames=400, per=25, queries=2)
        round_(pg, wd, "big", ["--batch-rows", "500", "--queue-rows", "1000", "--batch-ms", "5"],
               frames=150, per=400, queries=1)
        round_(pg, wd, "slow", ["--batch-rows", "100", "--queue-rows", "300", "--batch-ms", "5"],
               frames=300, per=25, queries=1, lock_s=3)
    except Exception as e:
        import traceback
        ok("suite ran to the end", False, "%s\n%s" % (e, traceback.format_exc()))
    finally:
        L.check_log_clean(os.path.join(wd, "dbwriter.log"))
        if L.tap.failed:
            diag("dbwriter log:\n" + L.log_tail(os.path.join(wd, "dbwriter.log"), 40))
        pg.stop()
        shutil.rmtree(wd, ignore_errors=True)
    return 1 if L.tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
