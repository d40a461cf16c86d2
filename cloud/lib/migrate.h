/* migrate.h: versioned schema migrations from the files in cloud/db.
 *
 * Files are named NNNN_name.sql (both storage modes), NNNN_name.pg.sql
 * (plain PostgreSQL only) or NNNN_name.tsdb.sql (TimescaleDB only). For the
 * active mode, each version number has at most one file; versions are
 * applied in order, each file in one transaction together with its row in
 * schema_migrations(version, name, applied_at), so every file runs exactly
 * once and a failed file leaves nothing behind. A session-level advisory
 * lock serialises concurrent migrators (the DB writer at start and
 * `emsctl db migrate`). Files must not contain BEGIN/COMMIT.
 *
 * The storage mode is decided once, at the first migration, and kept in
 * ems_meta('storage'): "timescaledb" when the extension can be created
 * (CREATE EXTENSION IF NOT EXISTS timescaledb succeeds), else "postgres".
 * A database never switches modes by itself.
 *
 * TimescaleDB must be in shared_preload_libraries: loaded any other way it
 * raises FATAL, which ends the session. So before CREATE EXTENSION the
 * runner reads that setting (pg_settings): installed but not preloaded,
 * "auto" takes plain PostgreSQL with one warning naming the fix, and
 * "timescaledb" (or a database already in that mode) fails with
 * EMS_ECONFIG naming it. When the setting cannot be read (a role without
 * pg_read_all_settings) the runner tries, and a session that ends during
 * CREATE EXTENSION is reported as EMS_ECONFIG with the same fix, never
 * retried.
 *
 * Two drivers share the same steps: ems_migrate_start runs on the async
 * connection of pg.h (the DB writer), ems_migrate_sync on a blocking PGconn
 * (emsctl, tests).
 */
#ifndef EMS_MIGRATE_H
#define EMS_MIGRATE_H

#include "pg.h"

#include <libpq-fe.h>
#include <stddef.h>

typedef enum {
    EMS_STORAGE_AUTO = 0, /* TimescaleDB if it can be created, else postgres */
    EMS_STORAGE_POSTGRES,
    EMS_STORAGE_TIMESCALEDB,
} ems_storage_t;

/* "auto", "postgres", "timescaledb". */
const char *ems_storage_name(ems_storage_t s);
int ems_storage_parse(const char *s, ems_storage_t *out);

/* The outcome of a run. */
typedef struct {
    ems_storage_t storage; /* the mode in force (never AUTO after success) */
    int applied;           /* files applied by this run */
    int version;           /* highest version now applied */
    char error[512];       /* why it failed, for the log */
} ems_migrate_result_t;

/* Finds the migrations directory: $EMS_DB_DIR, then cloud/db next to the
 * executable's build tree (<exe>/../cloud/db, <exe>/../../cloud/db,
 * <exe>/../../../cloud/db), then /usr/share/ems/db. Writes it to `out` and
 * returns 0, or EMS_ENOENT. */
int ems_migrate_find_dir(char *out, size_t cap);

typedef void (*ems_migrate_cb)(void *ud, int status, const ems_migrate_result_t *r);

/* Runs the migrations on `pg` (which must be up) and calls `cb` once:
 * status 0, EMS_ECONFIG (bad directory or file names, or a mode the
 * database cannot have, e.g. TimescaleDB not preloaded), EMS_EDB (a file failed; r->error says which and
 * why) or EMS_ECLOSED (the connection dropped; run again when it is back).
 * The directory is read before anything is sent. `dir` is copied. */
int ems_migrate_start(ems_pg_t *pg, const char *dir, ems_storage_t want, ems_migrate_cb cb,
                      void *ud);

/* The same on a blocking connection. Returns the status; fills *r. */
int ems_migrate_sync(PGconn *conn, const char *dir, ems_storage_t want, ems_migrate_result_t *r);

#endif
