/* timescaledb_emu.c: an EMULATION of one behaviour of TimescaleDB, for the
 * ems test suites only. It is not TimescaleDB and does nothing useful.
 *
 * The real extension's library refuses to be loaded any other way than
 * through shared_preload_libraries: its _PG_init raises
 *     FATAL:  extension "timescaledb" must be preloaded
 * which ends the session. `CREATE EXTENSION timescaledb` on a server that
 * has the package installed but not preloaded therefore drops the
 * connection. This library does exactly that, so the DB writer's handling
 * of the condition can be tested on a machine without TimescaleDB
 * (test/lib/pg.sh emu-tsdb builds it into a private copy of PostgreSQL).
 * When it is preloaded, its SQL script creates stand-ins of the two
 * timescaledb_information views the DB writer reads (jobs, job_stats) as
 * plain tables that a test can change. */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;

void _PG_init(void);

void _PG_init(void)
{
    if (!process_shared_preload_libraries_in_progress)
        ereport(FATAL,
                (errmsg("extension \"timescaledb\" must be preloaded"),
                 errhint("Please preload the timescaledb library via shared_preload_libraries. "
                         "(This is the ems test suites' emulation of that check.)")));
}

PG_FUNCTION_INFO_V1(ems_tsdb_emulation);

Datum ems_tsdb_emulation(PG_FUNCTION_ARGS)
{
    (void)fcinfo;
    PG_RETURN_TEXT_P(cstring_to_text("ems test emulation of timescaledb (not timescaledb)"));
}
