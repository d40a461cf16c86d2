/* bench_dbwriter.c: the measurement behind the insert method the DB
 * writer uses (docs/storage.md, "Ingest: measured"). It was
 * `ems-dbwriter --bench`; it lives here so the production binary carries
 * no benchmark.
 *
 * It inserts the same synthetic rows into the real schema with each method
 * and prints rows per second. It uses blocking libpq on purpose: it runs
 * alone, outside the daemon's loop, and measures the server side of each
 * method, not our event loop. The "unnest-binary" method is the writer's
 * own statement and row encoding (ingest.h); every method writes the
 * columns of cloud/dbwriter/telemetry_columns.h, and the text forms below
 * are derived from that table too.
 *
 * Without arguments it prints its usage and exits 0 (scripts/bench.sh runs
 * every bench program that way): it empties the telemetry tables of the
 * database it is given, so it runs only when asked to.
 */
#include "buf.h"
#include "error.h"
#include "ingest.h"
#include "log.h"
#include "migrate.h"
#include "timefmt.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    PGconn *conn;
    ems_telemetry_t *rows;
    int64_t received_ms;
    unsigned nrows, batch;
    bool rollup;
} bench_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "bench: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static bool res_ok(PGconn *c, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "bench: %s: %s", what, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static void make_rows(bench_t *b, unsigned devices)
{
    int64_t base = ems_time_now_ms() / 1000 * 1000 - 3600 * 1000;
    for (unsigned i = 0; i < b->nrows; i++) {
        ems_telemetry_t *t = &b->rows[i];
        memset(t, 0, sizeof *t);
        snprintf(t->device_id, sizeof t->device_id, "bench_%05u", i % devices);
        t->timestamp_ms = base + (int64_t)(i / devices) * 1000;
        t->state = EMS_STATE_CHARGING;
        t->mode = EMS_MODE_AUTO;
        t->has_target_mode = true;
        t->target_mode = EMS_TARGET_AUTO;
        t->has_wifi_strength = true;
        t->wifi_strength = -40 - (int)(i % 50);
        t->battery_voltage = 50.0 + (double)(i % 40) / 10.0;
        t->battery_current = 10.5;
        t->battery_power = t->battery_voltage * 10.5;
        t->battery_soc = (double)(i % 1000) / 10.0;
        t->has_battery_temperature = true;
        t->battery_temperature = 27.5;
        t->grid_voltage = 230.1;
        t->grid_power = -200.0 + (double)(i % 400);
        t->grid_frequency = 50.0;
        t->has_seq = true;
        t->seq = i / devices;
        t->has_clock_synced = true;
        t->clock_synced = true;
    }
    b->received_ms = base;
}

/* ------------------------------------------------------------------ methods */

static bool m_unnest_binary(bench_t *b)
{
    PGresult *r = PQprepare(b->conn, "b_bin", ems_ingest_insert_sql(b->rollup), EMS_INGEST_NCOLS,
                            ems_ingest_col_types());
    if (!res_ok(b->conn, r, "prepare"))
        return false;
    ems_pg_array_t cols[EMS_INGEST_NCOLS];
    for (int i = 0; i < EMS_INGEST_NCOLS; i++)
        ems_pg_array_init(&cols[i], 0);
    bool ok = true;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        ems_ingest_cols_reset(cols);
        for (unsigned i = 0; i < n; i++)
            ems_ingest_cols_add(cols, &b->rows[off + i], b->received_ms);
        const char *vals[EMS_INGEST_NCOLS];
        int lens[EMS_INGEST_NCOLS], fmts[EMS_INGEST_NCOLS];
        ems_ingest_cols_params(cols, vals, lens, fmts);
        r = PQexecPrepared(b->conn, "b_bin", EMS_INGEST_NCOLS, vals, lens, fmts, 0);
        ok = res_ok(b->conn, r, "insert");
    }
    for (int i = 0; i < EMS_INGEST_NCOLS; i++)
        ems_pg_array_free(&cols[i]);
    exec_ok(b->conn, "DEALLOCATE b_bin");
    return ok;
}

#define NCOLS EMS_INGEST_NCOLS
#define TXT_MAX 72

/* Text form of one value, by kind (telemetry_columns.h). */
#define TXT_TEXT(buf, v) snprintf(buf, TXT_MAX, "%s", (v))
#define TXT_TS(buf, v) ems_time_format((v), buf, TXT_MAX)
#define TXT_I64(buf, v) snprintf(buf, TXT_MAX, "%lld", (long long)(v))
#define TXT_I32(buf, v) snprintf(buf, TXT_MAX, "%ld", (long)(int32_t)(v))
#define TXT_I16(buf, v) snprintf(buf, TXT_MAX, "%d", (int)(int16_t)(v))
#define TXT_F32(buf, v) snprintf(buf, TXT_MAX, "%.9g", (double)(v))
#define TXT_BOOL(buf, v) snprintf(buf, TXT_MAX, "%s", (v) ? "t" : "f")

/* Text form of one row's values, in the statement's column order; NULL as
 * a NULL pointer. Strings live in `buf`. */
static void row_text(const bench_t *b, const ems_telemetry_t *t, char buf[NCOLS][TXT_MAX],
                     const char *v[NCOLS])
{
    int64_t received_ms = b->received_ms;
    bool energy = ems_ingest_energy_ok(t);
    int i = 0;
#define COL_TEXT(name, sql_type, kind, present, value)                                             \
    if (present) {                                                                                 \
        TXT_##kind(buf[i], value);                                                                 \
        v[i] = buf[i];                                                                             \
    } else {                                                                                       \
        v[i] = NULL;                                                                               \
    }                                                                                              \
    i++;
    EMS_TELEMETRY_COLUMNS(COL_TEXT)
#undef COL_TEXT
}

/* The content as a C string: ems_buf_t holds bytes, so a NUL goes after
 * them (call once, after the last append). */
static const char *buf_cstr(ems_buf_t *b)
{
    ems_buf_append(b, "", 1);
    return ems_buf_data(b);
}

/* "device_id, ts, ..." : the column list, from the table. */
static void cols_sql(ems_buf_t *out)
{
    const ems_ingest_col_t *c = ems_ingest_cols();
    for (int i = 0; i < NCOLS; i++)
        ems_buf_appendf(out, "%s%s", i ? ", " : "", c[i].name);
}

/* "$1,$2::ems_state,..." : one row's placeholders from parameter `first`,
 * with the casts the text parameters of enum columns need. */
static void placeholders(ems_buf_t *out, int first)
{
    const ems_ingest_col_t *c = ems_ingest_cols();
    for (int i = 0; i < NCOLS; i++) {
        bool cast = strcmp(c[i].sql_type, c[i].param_type) != 0;
        ems_buf_appendf(out, "%s$%d%s%s", i ? "," : "", first + i, cast ? "::" : "",
                        cast ? c[i].sql_type : "");
    }
}

static bool m_unnest_text(bench_t *b)
{
    PGresult *r = PQprepare(b->conn, "b_txt", ems_ingest_insert_sql(b->rollup), 0, NULL);
    if (!res_ok(b->conn, r, "prepare"))
        return false;
    ems_buf_t arr[NCOLS];
    for (int c = 0; c < NCOLS; c++)
        ems_buf_init(&arr[c], SIZE_MAX);
    bool ok = true;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        for (int c = 0; c < NCOLS; c++) {
            ems_buf_clear(&arr[c]);
            ems_buf_append_str(&arr[c], "{");
        }
        for (unsigned i = 0; i < n; i++) {
            char buf[NCOLS][TXT_MAX];
            const char *v[NCOLS];
            row_text(b, &b->rows[off + i], buf, v);
            for (int c = 0; c < NCOLS; c++) {
                if (i)
                    ems_buf_append_str(&arr[c], ",");
                ems_buf_append_str(&arr[c], v[c] ? v[c] : "NULL");
            }
        }
        const char *vals[NCOLS];
        for (int c = 0; c < NCOLS; c++) {
            ems_buf_append_str(&arr[c], "}");
            vals[c] = buf_cstr(&arr[c]);
        }
        r = PQexecPrepared(b->conn, "b_txt", NCOLS, vals, NULL, NULL, 0);
        ok = res_ok(b->conn, r, "insert");
    }
    for (int c = 0; c < NCOLS; c++)
        ems_buf_free(&arr[c]);
    exec_ok(b->conn, "DEALLOCATE b_txt");
    return ok;
}

static bool m_values(bench_t *b)
{
    ems_buf_t sql;
    ems_buf_init(&sql, SIZE_MAX);
    const char **vals = malloc((size_t)b->batch * NCOLS * sizeof *vals);
    char(*buf)[NCOLS][TXT_MAX] = malloc((size_t)b->batch * sizeof *buf);
    bool ok = vals && buf;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        ems_buf_clear(&sql);
        ems_buf_append_str(&sql, "INSERT INTO telemetry (");
        cols_sql(&sql);
        ems_buf_append_str(&sql, ") VALUES ");
        for (unsigned i = 0; i < n; i++) {
            ems_buf_append_str(&sql, i ? ",(" : "(");
            placeholders(&sql, (int)i * NCOLS + 1);
            ems_buf_append_str(&sql, ")");
            row_text(b, &b->rows[off + i], buf[i], vals + (size_t)i * NCOLS);
        }
        ems_buf_append_str(&sql, " ON CONFLICT DO NOTHING");
        PGresult *r =
            PQexecParams(b->conn, buf_cstr(&sql), (int)n * NCOLS, NULL, vals, NULL, NULL, 0);
        ok = res_ok(b->conn, r, "insert");
    }
    ems_buf_free(&sql);
    free(vals);
    free(buf);
    return ok;
}

static bool m_copy(bench_t *b)
{
    if (!exec_ok(
            b->conn,
            "CREATE TEMP TABLE IF NOT EXISTS ems_stage (LIKE telemetry) ON COMMIT DELETE ROWS"))
        return false;
    ems_buf_t cols, copy, move, data;
    ems_buf_init(&cols, SIZE_MAX);
    ems_buf_init(&copy, SIZE_MAX);
    ems_buf_init(&move, SIZE_MAX);
    ems_buf_init(&data, SIZE_MAX);
    cols_sql(&cols);
    const char *list = buf_cstr(&cols);
    ems_buf_appendf(&copy, "COPY ems_stage (%s) FROM STDIN", list);
    ems_buf_appendf(&move,
                    "INSERT INTO telemetry (%s) SELECT %s FROM ems_stage ON CONFLICT DO NOTHING",
                    list, list);
    buf_cstr(&copy);
    buf_cstr(&move);
    bool ok = true;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        ok = exec_ok(b->conn, "BEGIN");
        PGresult *r = PQexec(b->conn, ems_buf_data(&copy));
        if (PQresultStatus(r) != PGRES_COPY_IN) {
            res_ok(b->conn, r, "copy");
            ok = false;
            break;
        }
        PQclear(r);
        ems_buf_clear(&data);
        for (unsigned i = 0; i < n; i++) {
            char buf[NCOLS][TXT_MAX];
            const char *v[NCOLS];
            row_text(b, &b->rows[off + i], buf, v);
            for (int c = 0; c < NCOLS; c++) {
                ems_buf_append_str(&data, v[c] ? v[c] : "\\N");
                ems_buf_append_str(&data, c == NCOLS - 1 ? "\n" : "\t");
            }
        }
        ok = PQputCopyData(b->conn, ems_buf_data(&data), (int)ems_buf_len(&data)) == 1 &&
             PQputCopyEnd(b->conn, NULL) == 1;
        ok = res_ok(b->conn, PQgetResult(b->conn), "copy end") && ok;
        while ((r = PQgetResult(b->conn)))
            PQclear(r);
        ok = ok && exec_ok(b->conn, ems_buf_data(&move));
        ok = exec_ok(b->conn, ok ? "COMMIT" : "ROLLBACK") && ok;
    }
    ems_buf_free(&cols);
    ems_buf_free(&copy);
    ems_buf_free(&move);
    ems_buf_free(&data);
    return ok;
}

static bool m_pipeline(bench_t *b)
{
    ems_buf_t one;
    ems_buf_init(&one, SIZE_MAX);
    ems_buf_append_str(&one, "INSERT INTO telemetry (");
    cols_sql(&one);
    ems_buf_append_str(&one, ") VALUES (");
    placeholders(&one, 1);
    ems_buf_append_str(&one, ") ON CONFLICT DO NOTHING");
    PGresult *r = PQprepare(b->conn, "b_one", buf_cstr(&one), 0, NULL);
    ems_buf_free(&one);
    if (!res_ok(b->conn, r, "prepare"))
        return false;
    bool ok = PQenterPipelineMode(b->conn) == 1;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        for (unsigned i = 0; ok && i < n; i++) {
            char buf[NCOLS][TXT_MAX];
            const char *v[NCOLS];
            row_text(b, &b->rows[off + i], buf, v);
            ok = PQsendQueryPrepared(b->conn, "b_one", NCOLS, v, NULL, NULL, 0) == 1;
        }
        ok = ok && PQpipelineSync(b->conn) == 1;
        /* n results (each followed by NULL), then the Sync. */
        for (;;) {
            r = PQgetResult(b->conn);
            if (!r)
                continue;
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
                fprintf(stderr, "bench: pipeline: %s", PQresultErrorMessage(r));
                ok = false;
            }
            PQclear(r);
            if (st == PGRES_PIPELINE_SYNC)
                break;
        }
    }
    PQexitPipelineMode(b->conn);
    exec_ok(b->conn, "DEALLOCATE b_one");
    return ok;
}

/* rollup: 0 the plain statement (TimescaleDB mode), 1 the plain
 * PostgreSQL statement with live rows (ahead of the rollup's watermark),
 * 2 the same with backfilled rows (behind it: every bucket marked dirty).
 * For 1 and 2 the rollup step that follows is timed too. */
typedef struct {
    const char *name;
    bool (*fn)(bench_t *);
    int rollup;
} method_t;

static const method_t METHODS[] = {
    {"unnest-binary", m_unnest_binary, 0},
    {"unnest-binary+rollup", m_unnest_binary, 1},
    {"unnest-binary+backfill", m_unnest_binary, 2},
    {"unnest-text", m_unnest_text, 0},
    {"copy", m_copy, 0},
    {"values", m_values, 0},
    {"pipeline", m_pipeline, 0},
};

static double median(double *v, unsigned n)
{
    for (unsigned i = 1; i < n; i++)
        for (unsigned k = i; k > 0 && v[k - 1] > v[k]; k--) {
            double t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One measurement of a method: empty tables, insert every row (timed),
 * the rollup step if any (timed), then the same rows again (timed: every
 * one a conflict, the cost of a replay). */
static bool run_once(bench_t *b, const method_t *m, ems_storage_t storage, double *t_ins,
                     double *t_step, double *t_rep)
{
    PGconn *conn = b->conn;
    exec_ok(conn, "TRUNCATE telemetry");
    if (storage == EMS_STORAGE_POSTGRES) {
        exec_ok(conn, "TRUNCATE telemetry_1m, ems_rollup_queue");
        exec_ok(
            conn,
            m->rollup == 2
                ? "UPDATE ems_rollup_state SET watermark = date_bin('1 minute', now() + "
                  "interval '1 day', TIMESTAMPTZ '1970-01-01 00:00:00+00'), mark = watermark"
                : "UPDATE ems_rollup_state SET watermark = date_bin('1 minute', now() - "
                  "interval '3 hours', TIMESTAMPTZ '1970-01-01 00:00:00+00'), mark = watermark");
    }
    exec_ok(conn, "CHECKPOINT");
    double t0 = now_s();
    if (!m->fn(b))
        return false;
    double t1 = now_s();
    *t_step = 0;
    if (m->rollup) {
        /* One step over everything: the sweep up to a mark past the rows
         * (as if an earlier step had published it), every queued bucket. */
        if (m->rollup == 1)
            exec_ok(conn, "UPDATE ems_rollup_state SET mark = date_bin('1 minute', now() + "
                          "interval '1 minute', TIMESTAMPTZ '1970-01-01 00:00:00+00')");
        if (!exec_ok(conn, "SELECT * FROM ems_rollup_step('0 seconds', 100000000, '1 day')"))
            return false;
        *t_step = now_s() - t1;
    }
    double t2 = now_s();
    if (!m->fn(b))
        return false;
    *t_ins = t1 - t0;
    *t_rep = now_s() - t2;
    return true;
}

static void usage(void)
{
    printf("usage: bench_dbwriter --dsn DSN [--rows N] [--batch-rows N] [--devices N] "
           "[--method NAME] [--migrations DIR] [--repeat N]\n"
           "Each method runs --repeat times (default 3, in rounds); the median is shown.\n"
           "methods: unnest-binary unnest-binary+rollup unnest-binary+backfill unnest-text copy "
           "values\n"
           "         pipeline\n"
           "Empties the telemetry tables of the database it is given, so it runs only with\n"
           "options (--dsn \"\" takes EMS_PG_DSN, else libpq's PG* variables).\n");
}

int main(int argc, char **argv)
{
    const char *dsn = getenv("EMS_PG_DSN"), *only = NULL, *dir = NULL;
    unsigned rows = 200000, batch = 2000, devices = 2000, repeat = 3;
    if (argc < 2) {
        usage();
        return 0;
    }
    static const struct option opts[] = {
        {"dsn", required_argument, 0, 'd'},
        {"rows", required_argument, 0, 'r'},
        {"batch-rows", required_argument, 0, 'b'},
        {"devices", required_argument, 0, 'n'},
        {"method", required_argument, 0, 'm'},
        {"migrations", required_argument, 0, 'M'},
        {"repeat", required_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'd':
            dsn = *optarg ? optarg : dsn;
            break;
        case 'r':
            rows = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'b':
            batch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'n':
            devices = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'm':
            only = optarg;
            break;
        case 'M':
            dir = optarg;
            break;
        case 'R':
            repeat = (unsigned)strtoul(optarg, NULL, 10);
            break;
        default:
            usage();
            return o == 'h' ? 0 : 2;
        }
    }
    /* The VALUES method binds every value of a batch: at most 65535. */
    if (!rows || !batch || !devices || batch > 65535 / NCOLS || !repeat || repeat > 15) {
        fprintf(stderr,
                "bench: rows, devices >= 1, batch-rows 1..%d (the VALUES method's limit), "
                "repeat 1..15\n",
                65535 / NCOLS);
        return 2;
    }
    ems_log_init("ems-dbwriter-bench", EMS_LOG_WARN);
    char dirbuf[PATH_MAX];
    if (!dir) {
        if (ems_migrate_find_dir(dirbuf, sizeof dirbuf) < 0) {
            fprintf(stderr, "bench: cannot find cloud/db\n");
            return 1;
        }
        dir = dirbuf;
    }
    PGconn *conn = PQconnectdb(dsn ? dsn : "");
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "bench: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return 1;
    }
    exec_ok(conn, "SET client_min_messages = warning");
    ems_migrate_result_t mr;
    if (ems_migrate_sync(conn, dir, EMS_STORAGE_AUTO, &mr) < 0) {
        fprintf(stderr, "bench: migrations: %s\n", mr.error);
        PQfinish(conn);
        return 1;
    }
    bench_t b = {.conn = conn, .nrows = rows, .batch = batch};
    b.rows = malloc((size_t)rows * sizeof *b.rows);
    if (!b.rows)
        return 1;
    make_rows(&b, devices);
    PGresult *sv = PQexec(conn, "SHOW fsync");
    printf("# %u rows, %u devices, batches of %u rows, storage %s, fsync %s, server %d, median of "
           "%u\n",
           rows, devices, batch, ems_storage_name(mr.storage),
           PQresultStatus(sv) == PGRES_TUPLES_OK ? PQgetvalue(sv, 0, 0) : "?",
           PQserverVersion(conn), repeat);
    PQclear(sv);
    printf("%-22s %12s %12s %12s\n", "method", "rows/s", "ms/batch", "replay rows/s");
    int rc = 0;
    /* Rounds over all methods, rather than all rounds of one method after
     * the other: on a shared machine the load changes over minutes, and
     * this way every method sees the same mix of it. */
    enum { NM = sizeof METHODS / sizeof METHODS[0] };
    double ins[NM][15], rep_s[NM][15], steps[NM][15];
    bool use[NM], failed[NM];
    for (size_t i = 0; i < NM; i++) {
        use[i] = (!only || !strcmp(only, METHODS[i].name)) &&
                 (!METHODS[i].rollup || mr.storage == EMS_STORAGE_POSTGRES);
        failed[i] = false;
    }
    for (unsigned k = 0; k < repeat; k++)
        for (size_t i = 0; i < NM; i++) {
            if (!use[i] || failed[i])
                continue;
            b.rollup = METHODS[i].rollup != 0;
            if (!run_once(&b, &METHODS[i], mr.storage, &ins[i][k], &steps[i][k], &rep_s[i][k]))
                failed[i] = true;
        }
    for (size_t i = 0; i < NM; i++) {
        const method_t *m = &METHODS[i];
        if (!use[i])
            continue;
        if (failed[i]) {
            printf("%-22s failed\n", m->name);
            rc = 1;
            continue;
        }
        double t_ins = median(ins[i], repeat), t_rep = median(rep_s[i], repeat);
        double step = median(steps[i], repeat);
        double batches = (double)((rows + batch - 1) / batch);
        printf("%-22s %12.0f %12.2f %12.0f", m->name, rows / t_ins, t_ins * 1000 / batches,
               rows / t_rep);
        if (m->rollup)
            printf("   rollup step %.0f ms (%.0f rows/s)", step * 1000, rows / step);
        printf("\n");
    }
    exec_ok(conn, "TRUNCATE telemetry");
    if (mr.storage == EMS_STORAGE_POSTGRES) {
        exec_ok(conn, "TRUNCATE telemetry_1m, ems_rollup_queue");
        exec_ok(
            conn,
            "UPDATE ems_rollup_state SET watermark = "
            "date_bin('1 minute', now(), TIMESTAMPTZ '1970-01-01 00:00:00+00'), mark = watermark");
    }
    free(b.rows);
    PQfinish(conn);
    return rc;
}
