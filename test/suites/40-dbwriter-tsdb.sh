#!/usr/bin/env bash
# 40-dbwriter-tsdb.sh: the DB writer suites again in TimescaleDB mode
# (hypertable, compression and retention policies, continuous aggregates),
# when the extension is installed on this machine. Debian 12's archive has
# no TimescaleDB package, so on the usual test machine this reports a TAP
# skip that says why; the docker compose setup runs TimescaleDB. In that
# mode 40-dbwriter.py also checks that the hypertable, its compression
# settings, the compression and retention policies and both continuous
# aggregates with their refresh policies exist, and that the writer's
# stats list the background jobs (tsdb_jobs). What can be checked without
# TimescaleDB (its preload FATAL, the job-failure reporting) runs in
# 40-dbwriter-tsdb-emu.py against an emulation.
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$ROOT/test/lib/pg.sh"
. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status

EMS_PG_NO_TRAP=1 ems_pg_start || { notok "timescaledb suite" "cannot start PostgreSQL"; exit 1; }
avail=$(psql "$EMS_PG_DSN" -XAtqc "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'" 2>/dev/null)
ems_pg_stop
if [ "$avail" != 1 ]; then
    skip "timescaledb suite" "timescaledb extension not installed"
    exit 0
fi
rc=0
EMS_DBW_STORAGE=timescaledb "$ROOT/test/suites/40-dbwriter.py" || rc=1
EMS_DBW_STORAGE=timescaledb "$ROOT/test/suites/40-dbwriter-faults.py" || rc=1
exit $rc
