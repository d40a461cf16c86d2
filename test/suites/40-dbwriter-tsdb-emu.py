#!/usr/bin/python3
# 40-dbwriter-tsdb-emu.py: the DB writer against the conditions of a machine
# where TimescaleDB is installed but not usable, on a private copy of
# PostgreSQL 15 that carries an EMULATED `timescaledb` extension
# (test/lib/tsdb-emu, built by `test/lib/pg.sh emu-tsdb`). The emulation is
# not TimescaleDB: it reproduces one behaviour of the real one, the FATAL
# "extension "timescaledb" must be preloaded" that ends the session when
# the library is loaded without shared_preload_libraries, and (preloaded)
# provides stand-in tables for timescaledb_information.jobs / job_stats.
#
#   - installed but not preloaded, --storage auto: --migrate-only finishes,
#     falls back to plain PostgreSQL with one warning naming the fix
#     (before the fix it reconnected every ~100 ms for ever);
#   - the same with --storage timescaledb: one clear error, exit non-zero;
#   - emsctl (same migration code, blocking driver) finishes too;
#   - a server that ends every session right after it starts (here: the
#     migration's first statement calls pg_terminate_backend on itself):
#     the writer backs off exponentially and logs the repeated error once,
#     not every 100 ms;
#   - TimescaleDB mode with the emulation preloaded: the writer reads the
#     background jobs' state into its stats (tsdb_jobs, tsdb_job_failures,
#     tsdb_jobs_failing) and logs once when a job's failures grow.
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

_spec = importlib.util.spec_from_file_location(
    "dbwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "40-dbwriter-lib.py"))
L = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(L)
ok, diag = L.ok, L.diag

EMSCTL = os.path.join(L.BUILD, "emsctl")
DBDIR = os.path.join(L.ROOT, "cloud", "db")


def emu_cluster(bindir, preload):
    """A Postgres of the emulation tree (pg.sh reads EMS_PG_BIN)."""
    old = os.environ.get("EMS_PG_BIN")
    os.environ["EMS_PG_BIN"] = bindir
    try:
        return L.Postgres(preload=preload)
    finally:
        if old is None:
            del os.environ["EMS_PG_BIN"]
        else:
            os.environ["EMS_PG_BIN"] = old


def dsn_db(pg, db):
    return pg.dsn.replace("dbname=postgres", "dbname=" + db)


def migrate_only(dsn, storage, timeout=30):
    try:
        r = subprocess.run([L.DBW, "--dsn", dsn, "--migrate-only", "--storage", storage,
                            "--migrations", DBDIR], capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, err


def test_not_preloaded(pg, wd):
    pg.sql("CREATE DATABASE auto_db")
    pg.sql("CREATE DATABASE tsdb_db")
    pg.sql("CREATE DATABASE ctl_db")
    avail = pg.sql("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
    ok("the emulated timescaledb extension is installed in the private PostgreSQL", avail == "1", avail)

    rc, err = migrate_only(dsn_db(pg, "auto_db"), "auto")
    warns = [l for l in err.splitlines() if " warn: " in l or " error: " in l]
    ok("installed but not preloaded, --storage auto: --migrate-only finishes (exit 0)", rc == 0,
       "rc %s (None: still running after 30 s)\n%s" % (rc, err[-1500:]))
    mode = pg.sql_db("auto_db", "SELECT value FROM ems_meta WHERE key = 'storage'") if rc == 0 else None
    ok("... and falls back to plain PostgreSQL", mode == "postgres", str(mode))
    ok("... with exactly one warning, which names the fix",
       len(warns) == 1 and "shared_preload_libraries" in warns[0] and "restart PostgreSQL" in warns[0],
       "\n".join(warns[:10]))

    rc, err = migrate_only(dsn_db(pg, "tsdb_db"), "timescaledb")
    errs = [l for l in err.splitlines() if " error: " in l]
    ok("installed but not preloaded, --storage timescaledb: stops with an error (exit non-zero)",
       rc not in (0, None), "rc %s\n%s" % (rc, err[-1500:]))
    ok("... one error line that names the fix",
       len(errs) == 1 and "shared_preload_libraries" in errs[0] and "restart PostgreSQL" in errs[0]
       and err.count("connection lost") == 0, err[-1500:])

    if not os.access(EMSCTL, os.X_OK):
        ok("emsctl finishes on a server with timescaledb installed but not preloaded", False,
           "no emsctl at %s" % EMSCTL)
        return
    env = dict(os.environ, EMS_PG_DSN=dsn_db(pg, "ctl_db"), EMS_DB_DIR=DBDIR)
    try:
        r = subprocess.run([EMSCTL, "device", "add", "emu_dev"], capture_output=True, text=True,
                           env=env, timeout=30)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = None, "", "timeout"
    ok("emsctl finishes on a server with timescaledb installed but not preloaded (plain mode)",
       rc == 0 and len(out.strip()) == 64, "rc %s: %s" % (rc, err[-800:]))


def test_session_killer(pg, wd):
    """A server that ends every session of this role at its first statement."""
    pg.sql("CREATE DATABASE loop_db")
    pg.sql("CREATE ROLE ems_loop LOGIN SUPERUSER")
    # The migration runner's first statement calls pg_advisory_lock; for
    # this role a function of that name in public comes first and ends the
    # session, like a FATAL error would.
    pg.sql_db("loop_db", "ALTER ROLE ems_loop IN DATABASE loop_db SET search_path = public, pg_catalog")
    pg.sql_db("loop_db", "CREATE FUNCTION public.pg_advisory_lock(bigint) RETURNS void LANGUAGE sql AS "
                         "$$ SELECT pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid()); "
                         "SELECT NULL::void $$")
    dsn = dsn_db(pg, "loop_db").replace("user=postgres", "user=ems_loop")
    before = int(pg.sql("SELECT coalesce(sessions, 0) FROM pg_stat_database WHERE datname = 'loop_db'"))
    log = os.path.join(wd, "loop.log")
    with open(log, "wb") as f:
        p = subprocess.Popen([L.DBW, "--dsn", dsn, "--socket", os.path.join(wd, "loop.sock"),
                              "--migrations", DBDIR], stdout=f, stderr=f)
        time.sleep(8)
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    time.sleep(0.5)  # the server's counters of the sessions that just ended
    sessions = int(pg.sql("SELECT coalesce(sessions, 0) FROM pg_stat_database WHERE datname = 'loop_db'")) - before
    text = open(log, errors="replace").read()
    lost = [l for l in text.splitlines() if "pg ingest: connection lost" in l]
    interrupted = [l for l in text.splitlines() if "migrations: interrupted" in l]
    # 3 steady connections (query, listen, maint) and the ingest connection's
    # attempts: 100 ms doubling (+-20%) gives about 7 in 8 s; without a
    # backoff it is one every ~100 ms (70 and more).
    ok("a server that drops every new session: the writer backs off (%d sessions in 8 s)" % sessions,
       sessions <= 16, "%d sessions" % sessions)
    ok("... and logs the repeated error once, not every attempt",
       len(lost) == 1 and len(interrupted) == 1,
       "%d 'connection lost' and %d 'interrupted' lines:\n%s" %
       (len(lost), len(interrupted), "\n".join((lost + interrupted)[:6])))
    L.check_log_clean(log)


def wait_stats(c, cond, timeout=15):
    end = time.time() + timeout
    stats = None
    while time.time() < end:
        st, stats = c.query({"op": "stats"})
        if st == 0 and cond(stats):
            return True, stats
        time.sleep(0.2)
    return False, stats


def test_tsdb_jobs(pg, wd):
    """TimescaleDB mode on the emulation (preloaded): job failures become visible."""
    pg.sql("CREATE DATABASE jobs_db")
    dsn = dsn_db(pg, "jobs_db")
    # A database in TimescaleDB mode as far as the writer is concerned: the
    # plain schema (the writer's insert and queries work on it unchanged),
    # the mode recorded as timescaledb, the emulated extension created.
    rc, err = migrate_only(dsn, "postgres")
    pg.sql_db("jobs_db", "UPDATE ems_meta SET value = 'timescaledb' WHERE key = 'storage'")
    pg.sql_db("jobs_db", "CREATE EXTENSION timescaledb")
    d = L.DBWriter(pg, wd, "--batch-ms", "20", "--tsdb-jobs-check-ms", "300", storage="auto", dsn=dsn)
    try:
        stats = d.ready()
        ok("TimescaleDB mode (emulated, preloaded): the writer starts",
           stats is not None and stats.get("storage") == "timescaledb", str(stats)[:300])
        c = L.Link(d.sock)
        c.send(L.telemetry(1, [L.packet("j_dev", int(time.time() * 1000) - i * 1000, seq=i) for i in range(5)]))
        ok("... and stores telemetry with the TimescaleDB statement", c.wait_ack(1, 10)
           and pg.sql_db("jobs_db", "SELECT count(*) FROM telemetry WHERE device_id = 'j_dev'") == "5")
        good, stats = wait_stats(c, lambda s: isinstance(s.get("tsdb_jobs"), list) and len(s["tsdb_jobs"]) == 3)
        ok("the stats list the background jobs (tsdb_jobs)", good, str(stats)[:600])
        if good:
            j = {x["job_id"]: x for x in stats["tsdb_jobs"]}
            ok("... with their name, proc, status, runs, failures and next start",
               j[1000]["proc_name"] == "policy_compression" and j[1000]["total_runs"] == 3
               and j[1001]["application_name"].startswith("Retention Policy")
               and j[1000]["last_run_status"] == "Success" and j[1000]["next_start"].endswith("Z")
               and stats["tsdb_job_failures"] == 0 and stats["tsdb_jobs_failing"] == 0, json.dumps(j)[:600])
        # The job fails (on PostgreSQL 15.20 every TimescaleDB job does).
        pg.sql_db("jobs_db", "UPDATE timescaledb_information.job_stats SET total_failures = 1,"
                             " total_runs = 2, last_run_status = 'Failed' WHERE job_id = 1001")
        good, stats = wait_stats(c, lambda s: s.get("tsdb_job_failures") == 1)
        ok("a failing job shows in the stats (tsdb_job_failures, tsdb_jobs_failing)",
           good and stats["tsdb_jobs_failing"] == 1, str(stats)[:600])
        time.sleep(1.5)  # several more reads: still logged once
        text = open(os.path.join(wd, "dbwriter.log"), errors="replace").read()
        lines = [l for l in text.splitlines() if "background job 1001" in l]
        ok("the writer logs once when a job's failures increase",
           len(lines) == 1 and "run_job(1001)" in lines[0] and "has failed 1 of 2 runs" in lines[0],
           "\n".join(lines[:5]))
        pg.sql_db("jobs_db", "UPDATE timescaledb_information.job_stats SET total_failures = 2,"
                             " total_runs = 3 WHERE job_id = 1001")
        good, stats = wait_stats(c, lambda s: s.get("tsdb_job_failures") == 2)
        time.sleep(1)
        text = open(os.path.join(wd, "dbwriter.log"), errors="replace").read()
        lines = [l for l in text.splitlines() if "background job 1001" in l]
        ok("... and once more when they increase again", good and len(lines) == 2, "\n".join(lines[:5]))
        c.close()
    finally:
        d.stop()


def main():
    if not os.access(L.DBW, os.X_OK):
        print("not ok - ems-dbwriter binary missing at %s" % L.DBW)
        return 1
    emu = tempfile.mkdtemp(prefix="ems-pg-emu.")
    wd = L.workdir()
    pgs = []
    try:
        r = subprocess.run([L.PGSH, "emu-tsdb", emu], capture_output=True, text=True)
        if r.returncode != 0:
            ok("the TimescaleDB emulation builds (test/lib/pg.sh emu-tsdb)", False, r.stderr[-800:])
            return 1
        bindir = r.stdout.strip()
        pg = emu_cluster(bindir, None)
        pgs.append(pg)
        test_not_preloaded(pg, wd)
        test_session_killer(pg, wd)
        pg2 = emu_cluster(bindir, "timescaledb")
        pgs.append(pg2)
        test_tsdb_jobs(pg2, wd)
    except Exception as e:
        import traceback
        ok("suite ran to the end", False, "%s\n%s" % (e, traceback.format_exc()))
    finally:
        L.check_log_clean(os.path.join(wd, "dbwriter.log"))
        if L.tap.failed:
            diag("dbwriter log:\n" + L.log_tail(os.path.join(wd, "dbwriter.log"), 40))
        for p in pgs:
            p.stop()
        shutil.rmtree(wd, ignore_errors=True)
        shutil.rmtree(emu, ignore_errors=True)
    return 1 if L.tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
