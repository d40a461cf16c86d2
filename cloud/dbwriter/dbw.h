/* dbw.h: ems-dbwriter's process wiring (the daemon), apart from main.c.
 *
 * One libuv loop. The gateway connects over a Unix socket (common/link.h);
 * durable frames go to the batching writer (ingest.c) on one PostgreSQL
 * connection, queries to query.c on a second one, so a long history query
 * never delays a commit. Schema migrations (migrate.c) run on the first
 * connect; nothing is written before they succeed. A third connection
 * LISTENs for credential changes, a fourth runs maintenance (rollup steps,
 * partitions and retention, TimescaleDB job checks). SIGTERM or SIGINT:
 * stop reading, write and acknowledge what is held (bounded by
 * --shutdown-timeout), close; SIGHUP only logs (nothing is reloadable).
 */
#ifndef EMS_DBW_H
#define EMS_DBW_H

#include "log.h"
#include "migrate.h"

#include <stdbool.h>
#include <uv.h>

/* The settings, from flags and the environment (ems-dbwriter --help). */
typedef struct {
    const char *socket_path;
    const char *dsn;
    const char *migrations;
    ems_storage_t storage;
    unsigned batch_rows, batch_ms, queue_rows;
    unsigned retention_days, rollup_retention_days;
    unsigned rollup_interval_ms, rollup_max_buckets;
    unsigned tsdb_jobs_check_ms;
    unsigned shutdown_timeout_ms;
    bool migrate_only;
    bool health; /* --health: ask the running writer, print, exit */
} ems_dbw_config_t;

/* Fills `c` from the environment, then the flags. Returns 0; 1 when
 * --help was printed (exit 0); EMS_ECONFIG after printing why to stderr.
 * `level` receives --log-level / EMS_LOG_LEVEL. Strings point into argv
 * or the environment. */
int ems_dbw_config_from_args(ems_dbw_config_t *c, int argc, char **argv, ems_log_level_t *level);

typedef struct ems_dbw ems_dbw_t;

/* Creates the writer on `loop`: finds the migrations, opens the
 * PostgreSQL connections (which migrate on the first connect) and, unless
 * --migrate-only, starts listening on the socket. `cfg` is copied (its
 * strings are borrowed). Returns 0, or EMS_ENOMEM / EMS_ECONFIG (logged;
 * nothing to run). A failure to listen is not an error here: the writer
 * has begun its shutdown and the loop ends with exit status 1. */
int ems_dbw_new(uv_loop_t *loop, const ems_dbw_config_t *cfg, ems_dbw_t **out);

/* After the loop has returned: 0 after a clean shutdown (or --migrate-only
 * done), 1 otherwise. */
int ems_dbw_exit_status(const ems_dbw_t *d);

/* After the loop has returned: frees what is left, removes the socket. */
void ems_dbw_free(ems_dbw_t *d);

#endif
