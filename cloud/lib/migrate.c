/* migrate.c: versioned schema migrations (see migrate.h). */
#include "migrate.h"

#include "error.h"
#include "log.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *ems_storage_name(ems_storage_t s)
{
    switch (s) {
    case EMS_STORAGE_POSTGRES: return "postgres";
    case EMS_STORAGE_TIMESCALEDB: return "timescaledb";
    default: return "auto";
    }
}

int ems_storage_parse(const char *s, ems_storage_t *out)
{
    if (!strcmp(s, "auto"))
        *out = EMS_STORAGE_AUTO;
    else if (!strcmp(s, "postgres"))
        *out = EMS_STORAGE_POSTGRES;
    else if (!strcmp(s, "timescaledb"))
        *out = EMS_STORAGE_TIMESCALEDB;
    else
        return EMS_EINVAL;
    return 0;
}

/* ------------------------------------------------------------------ directory */

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int ems_migrate_find_dir(char *out, size_t cap)
{
    const char *env = getenv("EMS_DB_DIR");
    if (env && *env) {
        if (!is_dir(env))
            return EMS_ENOENT;
        snprintf(out, cap, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        const char *up[] = {"/../cloud/db", "/../../cloud/db", "/../../../cloud/db"};
        for (size_t i = 0; i < sizeof up / sizeof up[0]; i++) {
            char p[PATH_MAX + 32];
            snprintf(p, sizeof p, "%s%s", exe, up[i]);
            char real[PATH_MAX];
            if (is_dir(p) && realpath(p, real)) {
                snprintf(out, cap, "%s", real);
                return 0;
            }
        }
    }
    if (is_dir("/usr/share/ems/db")) {
        snprintf(out, cap, "/usr/share/ems/db");
        return 0;
    }
    return EMS_ENOENT;
}

typedef struct {
    int version;
    int variant; /* 0 both modes, 1 postgres, 2 timescaledb */
    char file[128];
} mig_file_t;

/* Parses "NNNN_name[.pg|.tsdb].sql". Returns false for other names. */
static bool parse_name(const char *n, mig_file_t *f)
{
    size_t len = strlen(n);
    if (len >= sizeof f->file || len < 10)
        return false;
    for (int i = 0; i < 4; i++)
        if (!isdigit((unsigned char)n[i]))
            return false;
    if (n[4] != '_' || strcmp(n + len - 4, ".sql") != 0)
        return false;
    size_t end = len - 4;
    f->variant = 0;
    if (end > 8 && !strncmp(n + end - 5, ".tsdb", 5)) {
        f->variant = 2;
        end -= 5;
    } else if (end > 6 && !strncmp(n + end - 3, ".pg", 3)) {
        f->variant = 1;
        end -= 3;
    }
    if (end <= 5)
        return false;
    for (size_t i = 5; i < end; i++)
        if (!(islower((unsigned char)n[i]) || isdigit((unsigned char)n[i]) || n[i] == '_'))
            return false;
    f->version = atoi(n); /* the 4 leading digits */
    memcpy(f->file, n, len + 1); /* len < sizeof f->file, checked above */
    return f->version > 0;
}

static int cmp_file(const void *a, const void *b)
{
    const mig_file_t *x = a, *y = b;
    return x->version - y->version;
}

/* Reads the directory into a sorted list (all variants). */
static int scan_dir(const char *dir, mig_file_t **out, int *count, char *err, size_t errcap)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errcap, "cannot open the migrations directory %s", dir);
        return EMS_ECONFIG;
    }
    mig_file_t *v = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        mig_file_t f;
        if (!parse_name(e->d_name, &f)) {
            if (strstr(e->d_name, ".sql"))
                ems_log_warn("migrations: ignoring %s (not NNNN_name[.pg|.tsdb].sql)", e->d_name);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            mig_file_t *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                free(v);
                closedir(d);
                return EMS_ENOMEM;
            }
            v = nv;
        }
        v[n++] = f;
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, cmp_file);
    if (n == 0) {
        free(v);
        snprintf(err, errcap, "no migrations in %s", dir);
        return EMS_ECONFIG;
    }
    *out = v;
    *count = n;
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 16384;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ------------------------------------------------------------------ the steps */

typedef enum {
    ST_LOCK,
    ST_INSPECT,
    ST_EXTENSION,
    ST_SETMODE,
    ST_APPLY,
    ST_UNLOCK,
    ST_DONE,
} mig_step_t;

typedef struct {
    char dir[PATH_MAX];
    ems_storage_t want;
    mig_file_t *files;
    int nfiles;
    int *applied; /* versions already in schema_migrations */
    int napplied;
    bool have_stored;
    ems_storage_t stored;
    bool ts_available;
    int ts_preloaded; /* timescaledb in shared_preload_libraries: 1, 0, -1 unknown */
    ems_storage_t mode;
    int cursor; /* next index into files for ST_APPLY */
    int current; /* file index being applied, -1 none */
    mig_step_t step;
    int status; /* final status (set on error, then UNLOCK runs) */
    char *sql;  /* the SQL of the current step */
    ems_migrate_result_t res;

    /* async driver */
    ems_pg_t *pg;
    ems_pg_req_t req;
    ems_migrate_cb cb;
    void *ud;
} mig_t;

static bool applied_has(const mig_t *m, int v)
{
    for (int i = 0; i < m->napplied; i++)
        if (m->applied[i] == v)
            return true;
    return false;
}

static bool file_for_mode(const mig_file_t *f, ems_storage_t mode)
{
    return f->variant == 0 || (f->variant == 1 && mode == EMS_STORAGE_POSTGRES) ||
           (f->variant == 2 && mode == EMS_STORAGE_TIMESCALEDB);
}

/* Checks that each version has at most one file for the mode. */
static int check_plan(mig_t *m)
{
    int last = 0;
    for (int i = 0; i < m->nfiles; i++) {
        if (!file_for_mode(&m->files[i], m->mode))
            continue;
        if (m->files[i].version == last) {
            snprintf(m->res.error, sizeof m->res.error,
                     "two migrations with version %04d for %s mode", last, ems_storage_name(m->mode));
            return EMS_ECONFIG;
        }
        last = m->files[i].version;
    }
    return 0;
}

static void mig_fail(mig_t *m, int status)
{
    if (!m->status)
        m->status = status;
    m->step = ST_UNLOCK;
}

/* The SQL for the current step, or NULL when done. May move past steps
 * that have nothing to do. */
static const char *mig_sql(mig_t *m)
{
    free(m->sql);
    m->sql = NULL;
    switch (m->step) {
    case ST_LOCK:
        /* The lock key is any constant every migrator shares. */
        m->sql = strdup("SELECT pg_advisory_lock(7236577001);\n"
                        "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                        "  version integer PRIMARY KEY, name text NOT NULL,\n"
                        "  applied_at timestamptz NOT NULL DEFAULT now());\n"
                        "CREATE TABLE IF NOT EXISTS ems_meta (key text PRIMARY KEY, value text NOT NULL);");
        break;
    case ST_INSPECT:
        /* The 4th column: is timescaledb in shared_preload_libraries? NULL
         * when this role may not read the setting (it needs superuser or
         * pg_read_all_settings; pg_settings then hides the row). */
        m->sql = strdup("SELECT (SELECT value FROM ems_meta WHERE key = 'storage'),\n"
                        "  (SELECT coalesce(string_agg(version::text, ','), '') FROM schema_migrations),\n"
                        "  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),\n"
                        "  (SELECT coalesce(bool_or(trim(both ' \"' FROM l) ~ '(^|/)timescaledb'), false)\n"
                        "   FROM pg_settings s LEFT JOIN LATERAL unnest(string_to_array(s.setting, ',')) l ON true\n"
                        "   WHERE s.name = 'shared_preload_libraries' HAVING count(s.name) > 0)");
        break;
    case ST_EXTENSION:
        m->sql = strdup("CREATE EXTENSION IF NOT EXISTS timescaledb");
        break;
    case ST_SETMODE: {
        char b[160];
        snprintf(b, sizeof b, "INSERT INTO ems_meta VALUES ('storage', '%s') ON CONFLICT (key) DO NOTHING",
                 ems_storage_name(m->mode));
        m->sql = strdup(b);
        break;
    }
    case ST_APPLY:
        while (m->cursor < m->nfiles &&
               (!file_for_mode(&m->files[m->cursor], m->mode) ||
                applied_has(m, m->files[m->cursor].version)))
            m->cursor++;
        if (m->cursor >= m->nfiles) {
            m->step = ST_UNLOCK;
            return mig_sql(m);
        } else {
            const mig_file_t *f = &m->files[m->cursor];
            char path[PATH_MAX + 160];
            snprintf(path, sizeof path, "%s/%s", m->dir, f->file);
            size_t len;
            char *body = read_file(path, &len);
            if (!body) {
                snprintf(m->res.error, sizeof m->res.error, "cannot read %.400s", path);
                mig_fail(m, EMS_ECONFIG);
                return mig_sql(m);
            }
            /* The file and its record run as one implicit transaction (a
             * simple query with several statements). */
            size_t cap = len + 256;
            m->sql = malloc(cap);
            if (m->sql)
                snprintf(m->sql, cap, "%s\n;\nINSERT INTO schema_migrations (version, name) VALUES (%d, '%s');",
                         body, f->version, f->file);
            free(body);
            m->current = m->cursor++;
        }
        break;
    case ST_UNLOCK:
        m->sql = strdup("SELECT pg_advisory_unlock_all()");
        break;
    case ST_DONE:
        return NULL;
    }
    if (!m->sql) {
        snprintf(m->res.error, sizeof m->res.error, "out of memory");
        if (!m->status)
            m->status = EMS_ENOMEM;
        m->step = ST_DONE;
        return NULL;
    }
    return m->sql;
}

/* A row of the INSPECT step. */
static void mig_tuples(mig_t *m, const PGresult *res)
{
    if (m->step != ST_INSPECT || PQntuples(res) != 1 || PQnfields(res) != 4)
        return;
    if (!PQgetisnull(res, 0, 0)) {
        m->have_stored = ems_storage_parse(PQgetvalue(res, 0, 0), &m->stored) == 0;
        if (!m->have_stored)
            ems_log_warn("migrations: unknown storage mode '%s' in ems_meta", PQgetvalue(res, 0, 0));
    }
    const char *list = PQgetvalue(res, 0, 1);
    free(m->applied);
    m->applied = NULL;
    m->napplied = 0;
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    m->applied = calloc(n, sizeof *m->applied);
    if (m->applied) {
        for (const char *p = list; *p;) {
            m->applied[m->napplied++] = atoi(p);
            const char *c = strchr(p, ',');
            if (!c)
                break;
            p = c + 1;
        }
    }
    m->ts_available = PQgetvalue(res, 0, 2)[0] == 't';
    m->ts_preloaded = PQgetisnull(res, 0, 3) ? -1 : PQgetvalue(res, 0, 3)[0] == 't';
}

/* How to make TimescaleDB usable, for the log and the error. */
#define PRELOAD_FIX                                                                      \
    "add timescaledb to shared_preload_libraries in postgresql.conf "                   \
    "(shared_preload_libraries = 'timescaledb') and restart PostgreSQL"

/* The end of a step: moves to the next one. */
static void mig_step_done(mig_t *m, int status, const char *sqlstate, const char *error)
{
    (void)sqlstate;
    if (status == EMS_ECLOSED && m->step == ST_EXTENSION) {
        /* TimescaleDB raises FATAL (the server ends the session) when its
         * library is loaded without being preloaded. Reached only when the
         * preload list could not be read (ST_INSPECT): stop with the fix
         * rather than reconnect and fail again for ever. */
        snprintf(m->res.error, sizeof m->res.error,
                 "the server closed the session during CREATE EXTENSION timescaledb (%.120s): "
                 "timescaledb is most likely installed but not preloaded; %s, or start with "
                 "--storage postgres on a new database",
                 error && *error ? error : "no message", PRELOAD_FIX);
        m->status = EMS_ECONFIG;
        m->step = ST_DONE;
        return;
    }
    if (status == EMS_ECLOSED) {
        snprintf(m->res.error, sizeof m->res.error, "connection lost during migration");
        m->status = EMS_ECLOSED;
        m->step = ST_DONE;
        return;
    }
    switch (m->step) {
    case ST_LOCK:
        if (status) {
            snprintf(m->res.error, sizeof m->res.error, "cannot prepare the migration tables: %s", error);
            mig_fail(m, EMS_EDB);
            return;
        }
        m->step = ST_INSPECT;
        return;
    case ST_INSPECT:
        if (status) {
            snprintf(m->res.error, sizeof m->res.error, "cannot read the migration state: %s", error);
            mig_fail(m, EMS_EDB);
            return;
        }
        if (m->have_stored) {
            if (m->want != EMS_STORAGE_AUTO && m->want != m->stored) {
                snprintf(m->res.error, sizeof m->res.error,
                         "the database is in %s mode; %s was asked for (a mode never changes by itself)",
                         ems_storage_name(m->stored), ems_storage_name(m->want));
                mig_fail(m, EMS_ECONFIG);
                return;
            }
            if (m->stored == EMS_STORAGE_TIMESCALEDB && m->ts_preloaded == 0) {
                snprintf(m->res.error, sizeof m->res.error,
                         "the database is in timescaledb mode but timescaledb is not in "
                         "shared_preload_libraries, so it cannot be used: %s",
                         PRELOAD_FIX);
                mig_fail(m, EMS_ECONFIG);
                return;
            }
            m->mode = m->stored;
            m->step = m->mode == EMS_STORAGE_TIMESCALEDB ? ST_EXTENSION : ST_APPLY;
        } else if (m->want == EMS_STORAGE_POSTGRES) {
            m->mode = EMS_STORAGE_POSTGRES;
            m->step = ST_SETMODE;
        } else if (m->ts_available && m->ts_preloaded == 0 && m->want == EMS_STORAGE_TIMESCALEDB) {
            /* CREATE EXTENSION would end the session with a FATAL error. */
            snprintf(m->res.error, sizeof m->res.error,
                     "timescaledb was asked for; the extension is installed but not in "
                     "shared_preload_libraries: %s",
                     PRELOAD_FIX);
            mig_fail(m, EMS_ECONFIG);
            return;
        } else if (m->ts_available && m->ts_preloaded == 0) {
            ems_log_warn("migrations: the timescaledb extension is installed but not in "
                         "shared_preload_libraries, so it cannot be used; using plain PostgreSQL "
                         "for this database (the mode is chosen once). To use TimescaleDB, %s "
                         "before the first start on a new database",
                         PRELOAD_FIX);
            m->mode = EMS_STORAGE_POSTGRES;
            m->step = ST_SETMODE;
        } else if (m->ts_available) {
            if (m->ts_preloaded < 0)
                ems_log_info("migrations: cannot read shared_preload_libraries (needs superuser or "
                             "pg_read_all_settings); trying CREATE EXTENSION timescaledb");
            m->mode = EMS_STORAGE_TIMESCALEDB;
            m->step = ST_EXTENSION;
        } else if (m->want == EMS_STORAGE_TIMESCALEDB) {
            snprintf(m->res.error, sizeof m->res.error,
                     "timescaledb was asked for but the extension is not installed");
            mig_fail(m, EMS_ECONFIG);
            return;
        } else {
            ems_log_info("migrations: the timescaledb extension is not installed; using plain PostgreSQL");
            m->mode = EMS_STORAGE_POSTGRES;
            m->step = ST_SETMODE;
        }
        if (check_plan(m) < 0)
            mig_fail(m, EMS_ECONFIG);
        return;
    case ST_EXTENSION:
        if (status) {
            if (!m->have_stored && m->want == EMS_STORAGE_AUTO) {
                ems_log_warn("migrations: CREATE EXTENSION timescaledb failed (%s); using plain PostgreSQL",
                             error);
                m->mode = EMS_STORAGE_POSTGRES;
                m->step = ST_SETMODE;
                if (check_plan(m) < 0)
                    mig_fail(m, EMS_ECONFIG);
                return;
            }
            snprintf(m->res.error, sizeof m->res.error, "CREATE EXTENSION timescaledb failed: %s", error);
            mig_fail(m, EMS_EDB);
            return;
        }
        m->step = m->have_stored ? ST_APPLY : ST_SETMODE;
        return;
    case ST_SETMODE:
        if (status) {
            snprintf(m->res.error, sizeof m->res.error, "cannot record the storage mode: %s", error);
            mig_fail(m, EMS_EDB);
            return;
        }
        m->step = ST_APPLY;
        return;
    case ST_APPLY: {
        const mig_file_t *f = &m->files[m->current];
        if (status) {
            snprintf(m->res.error, sizeof m->res.error, "%s failed: %s", f->file, error);
            mig_fail(m, EMS_EDB);
            return;
        }
        ems_log_info("migrations: applied %s", f->file);
        m->res.applied++;
        m->res.version = f->version;
        return; /* stay in ST_APPLY for the next file */
    }
    case ST_UNLOCK:
    case ST_DONE:
        m->step = ST_DONE;
        return;
    }
}

static int mig_init(mig_t *m, const char *dir, ems_storage_t want)
{
    memset(m, 0, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    m->want = want;
    m->current = -1;
    m->step = ST_LOCK;
    return scan_dir(dir, &m->files, &m->nfiles, m->res.error, sizeof m->res.error);
}

static void mig_finish_result(mig_t *m)
{
    m->res.storage = m->mode;
    if (m->res.version == 0) {
        /* Nothing new: report the highest version already there. */
        for (int i = 0; i < m->napplied; i++)
            if (m->applied[i] > m->res.version)
                m->res.version = m->applied[i];
    }
}

static void mig_free(mig_t *m)
{
    free(m->files);
    free(m->applied);
    free(m->sql);
}

/* ------------------------------------------------------------------ sync driver */

int ems_migrate_sync(PGconn *conn, const char *dir, ems_storage_t want, ems_migrate_result_t *r)
{
    mig_t m;
    int rc = mig_init(&m, dir, want);
    if (rc < 0) {
        *r = m.res;
        mig_free(&m);
        return rc;
    }
    const char *sql;
    while ((sql = mig_sql(&m))) {
        PGresult *res = PQexec(conn, sql);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        int status = 0;
        char err[400] = "";
        if (!res || PQstatus(conn) == CONNECTION_BAD) {
            status = EMS_ECLOSED;
            snprintf(err, sizeof err, "%s", PQerrorMessage(conn));
            for (char *p = err; *p; p++)
                if (*p == '\n')
                    *p = ' ';
        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            status = EMS_EDB;
            snprintf(err, sizeof err, "%s", PQresultErrorMessage(res));
            size_t n = strlen(err);
            while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
                err[--n] = '\0';
        } else if (st == PGRES_TUPLES_OK) {
            mig_tuples(&m, res);
        }
        PQclear(res);
        mig_step_done(&m, status, NULL, err);
    }
    mig_finish_result(&m);
    *r = m.res;
    rc = m.status;
    mig_free(&m);
    return rc;
}

/* ------------------------------------------------------------------ async driver */

static void mig_async_next(mig_t *m);

static int mig_send(ems_pg_req_t *r, PGconn *conn)
{
    mig_t *m = r->data;
    return PQsendQuery(conn, m->sql) == 1 ? 0 : EMS_EDB;
}

static void mig_result(ems_pg_req_t *r, const PGresult *res)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        mig_tuples(r->data, res);
}

static void mig_done(ems_pg_req_t *r, int status)
{
    mig_t *m = r->data;
    mig_step_done(m, status, r->sqlstate, r->error);
    mig_async_next(m);
}

static void mig_async_next(mig_t *m)
{
    if (mig_sql(m)) {
        int rc = ems_pg_submit(m->pg, &m->req);
        if (rc == 0)
            return;
        snprintf(m->res.error, sizeof m->res.error, "connection lost during migration");
        m->status = EMS_ECLOSED;
    }
    mig_finish_result(m);
    ems_migrate_cb cb = m->cb;
    void *ud = m->ud;
    ems_migrate_result_t res = m->res;
    int status = m->status;
    mig_free(m);
    free(m);
    cb(ud, status, &res);
}

int ems_migrate_start(ems_pg_t *pg, const char *dir, ems_storage_t want, ems_migrate_cb cb, void *ud)
{
    mig_t *m = malloc(sizeof *m);
    if (!m)
        return EMS_ENOMEM;
    int rc = mig_init(m, dir, want);
    if (rc < 0) {
        ems_log_error("migrations: %s", m->res.error);
        mig_free(m);
        free(m);
        return rc;
    }
    m->pg = pg;
    m->cb = cb;
    m->ud = ud;
    m->req.send = mig_send;
    m->req.on_result = mig_result;
    m->req.on_done = mig_done;
    m->req.data = m;
    if (!mig_sql(m) || (rc = ems_pg_submit(pg, &m->req)) < 0) {
        mig_free(m);
        free(m);
        return rc < 0 ? rc : EMS_ENOMEM;
    }
    return 0;
}
