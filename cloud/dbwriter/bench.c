/* bench.c: `ems-dbwriter --bench`, the measurement behind the insert
 * method the writer uses (docs/storage.md, "Ingest: measured").
 *
 * It inserts the same synthetic rows into the real schema with each method
 * and prints rows per second. It uses blocking libpq on purpose: it runs
 * alone, outside the daemon's loop, and measures the server side of each
 * method, not our event loop. The "unnest-binary" method is the writer's
 * own statement and row encoding (ingest.h).
 */
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

/* Text form of one row's 20 values, in the statement's column order; NULL
 * as a NULL pointer. Strings live in `buf` (20 x 72 bytes). */
static void row_text(const bench_t *b, const ems_telemetry_t *t, char buf[20][72], const char *v[20])
{
    char when[EMS_TIME_STR_MAX];
    ems_time_format(t->timestamp_ms, when, sizeof when);
    snprintf(buf[0], 72, "%s", t->device_id);
    snprintf(buf[1], 72, "%s", when);
    snprintf(buf[2], 72, "%lld", t->has_seq ? (long long)t->seq : -1LL);
    ems_time_format(b->received_ms, buf[3], 72);
    snprintf(buf[4], 72, "%s", ems_state_name(t->state));
    snprintf(buf[5], 72, "%s", ems_mode_name(t->mode));
    snprintf(buf[6], 72, "%s", ems_target_mode_name(t->target_mode));
    snprintf(buf[7], 72, "%.9g", t->target_power);
    snprintf(buf[8], 72, "%u", ems_ingest_db_faults(t->error_flags));
    snprintf(buf[9], 72, "%d", t->wifi_strength);
    const double d[8] = {t->battery_voltage, t->battery_current,     t->battery_power,
                         t->battery_soc,     t->battery_temperature, t->grid_voltage,
                         t->grid_power,      t->grid_frequency};
    for (int i = 0; i < 8; i++)
        snprintf(buf[10 + i], 72, "%.9g", d[i]);
    snprintf(buf[18], 72, "%s", t->clock_synced ? "t" : "f");
    snprintf(buf[19], 72, "%s", t->backfill ? "t" : "f");
    for (int i = 0; i < 20; i++)
        v[i] = buf[i];
    if (!t->has_target_mode)
        v[6] = NULL;
    if (!t->has_target_power)
        v[7] = NULL;
    if (!t->has_wifi_strength)
        v[9] = NULL;
    if (!t->has_battery_temperature)
        v[14] = NULL;
    if (!t->has_clock_synced)
        v[18] = NULL;
}

static bool m_unnest_text(bench_t *b)
{
    PGresult *r = PQprepare(b->conn, "b_txt", ems_ingest_insert_sql(b->rollup), 0, NULL);
    if (!res_ok(b->conn, r, "prepare"))
        return false;
    ems_link_buf_t arr[EMS_INGEST_NCOLS] = {{0}};
    bool ok = true;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        for (int c = 0; c < EMS_INGEST_NCOLS; c++) {
            ems_link_buf_reset(&arr[c]);
            ems_link_put_u8(&arr[c], '{');
        }
        for (unsigned i = 0; i < n; i++) {
            char buf[20][72];
            const char *v[20];
            row_text(b, &b->rows[off + i], buf, v);
            for (int c = 0; c < EMS_INGEST_NCOLS; c++) {
                if (i)
                    ems_link_put_u8(&arr[c], ',');
                const char *s = c < 20 && v[c] ? v[c] : "NULL"; /* no energy counters */
                ems_link_put_bytes(&arr[c], s, strlen(s));
            }
        }
        const char *vals[EMS_INGEST_NCOLS];
        for (int c = 0; c < EMS_INGEST_NCOLS; c++) {
            ems_link_put_bytes(&arr[c], "}", 2);
            vals[c] = (const char *)arr[c].data;
        }
        r = PQexecPrepared(b->conn, "b_txt", EMS_INGEST_NCOLS, vals, NULL, NULL, 0);
        ok = res_ok(b->conn, r, "insert");
    }
    for (int c = 0; c < EMS_INGEST_NCOLS; c++)
        ems_link_buf_free(&arr[c]);
    exec_ok(b->conn, "DEALLOCATE b_txt");
    return ok;
}

#define COLS_SQL                                                                          \
    "device_id, ts, seq, received_at, state, mode, target_mode, target_power, error_flags," \
    " wifi_strength, battery_voltage, battery_current, battery_power, battery_soc,"        \
    " battery_temperature, grid_voltage, grid_power, grid_frequency, clock_synced, backfill"

static bool m_values(bench_t *b)
{
    ems_link_buf_t sql = {0};
    const char **vals = malloc((size_t)b->batch * 20 * sizeof *vals);
    char(*buf)[20][72] = malloc((size_t)b->batch * sizeof *buf);
    bool ok = vals && buf;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        ems_link_buf_reset(&sql);
        const char *head = "INSERT INTO telemetry (" COLS_SQL ") VALUES ";
        ems_link_put_bytes(&sql, head, strlen(head));
        for (unsigned i = 0; i < n; i++) {
            char tuple[512];
            int p = (int)i * 20;
            snprintf(tuple, sizeof tuple,
                     "%s($%d,$%d,$%d,$%d,$%d::ems_state,$%d::ems_mode,$%d::ems_target_mode,$%d,$%d,$%d,"
                     "$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d)",
                     i ? "," : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7, p + 8, p + 9,
                     p + 10, p + 11, p + 12, p + 13, p + 14, p + 15, p + 16, p + 17, p + 18, p + 19,
                     p + 20);
            ems_link_put_bytes(&sql, tuple, strlen(tuple));
            row_text(b, &b->rows[off + i], buf[i], vals + (size_t)i * 20);
        }
        const char *tail = " ON CONFLICT DO NOTHING";
        ems_link_put_bytes(&sql, tail, strlen(tail) + 1);
        PGresult *r = PQexecParams(b->conn, (const char *)sql.data, (int)n * 20, NULL, vals, NULL,
                                   NULL, 0);
        ok = res_ok(b->conn, r, "insert");
    }
    ems_link_buf_free(&sql);
    free(vals);
    free(buf);
    return ok;
}

static bool m_copy(bench_t *b)
{
    if (!exec_ok(b->conn, "CREATE TEMP TABLE IF NOT EXISTS ems_stage (LIKE telemetry) ON COMMIT DELETE ROWS"))
        return false;
    ems_link_buf_t data = {0};
    bool ok = true;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        ok = exec_ok(b->conn, "BEGIN");
        PGresult *r = PQexec(b->conn, "COPY ems_stage (" COLS_SQL ") FROM STDIN");
        if (PQresultStatus(r) != PGRES_COPY_IN) {
            res_ok(b->conn, r, "copy");
            ok = false;
            break;
        }
        PQclear(r);
        ems_link_buf_reset(&data);
        for (unsigned i = 0; i < n; i++) {
            char buf[20][72];
            const char *v[20];
            row_text(b, &b->rows[off + i], buf, v);
            for (int c = 0; c < 20; c++) {
                const char *s = v[c] ? v[c] : "\\N";
                ems_link_put_bytes(&data, s, strlen(s));
                ems_link_put_u8(&data, c == 19 ? '\n' : '\t');
            }
        }
        ok = PQputCopyData(b->conn, (const char *)data.data, (int)data.len) == 1 &&
             PQputCopyEnd(b->conn, NULL) == 1;
        ok = res_ok(b->conn, PQgetResult(b->conn), "copy end") && ok;
        while ((r = PQgetResult(b->conn)))
            PQclear(r);
        ok = ok && exec_ok(b->conn, "INSERT INTO telemetry (" COLS_SQL ") SELECT " COLS_SQL
                                    " FROM ems_stage ON CONFLICT DO NOTHING");
        ok = exec_ok(b->conn, ok ? "COMMIT" : "ROLLBACK") && ok;
    }
    ems_link_buf_free(&data);
    return ok;
}

static bool m_pipeline(bench_t *b)
{
    static const char one[] =
        "INSERT INTO telemetry (" COLS_SQL ") VALUES ($1,$2,$3,$4,$5::ems_state,$6::ems_mode,"
        "$7::ems_target_mode,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20) ON CONFLICT DO NOTHING";
    PGresult *r = PQprepare(b->conn, "b_one", one, 0, NULL);
    if (!res_ok(b->conn, r, "prepare"))
        return false;
    bool ok = PQenterPipelineMode(b->conn) == 1;
    for (unsigned off = 0; ok && off < b->nrows; off += b->batch) {
        unsigned n = b->nrows - off < b->batch ? b->nrows - off : b->batch;
        for (unsigned i = 0; ok && i < n; i++) {
            char buf[20][72];
            const char *v[20];
            row_text(b, &b->rows[off + i], buf, v);
            ok = PQsendQueryPrepared(b->conn, "b_one", 20, v, NULL, NULL, 0) == 1;
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
        exec_ok(conn, m->rollup == 2
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

int ems_bench_main(int argc, char **argv)
{
    const char *dsn = getenv("EMS_PG_DSN"), *only = NULL, *dir = NULL;
    unsigned rows = 200000, batch = 2000, devices = 2000, repeat = 3;
    static const struct option opts[] = {
        {"bench", no_argument, 0, 'B'},   {"dsn", required_argument, 0, 'd'},
        {"rows", required_argument, 0, 'r'}, {"batch-rows", required_argument, 0, 'b'},
        {"devices", required_argument, 0, 'n'}, {"method", required_argument, 0, 'm'},
        {"migrations", required_argument, 0, 'M'}, {"repeat", required_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'B': break;
        case 'd': dsn = optarg; break;
        case 'r': rows = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b': batch = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'n': devices = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': only = optarg; break;
        case 'M': dir = optarg; break;
        case 'R': repeat = (unsigned)strtoul(optarg, NULL, 10); break;
        default:
            printf("usage: ems-dbwriter --bench [--dsn DSN] [--rows N] [--batch-rows N] "
                   "[--devices N] [--method NAME] [--migrations DIR] [--repeat N]\n"
                   "Each method runs --repeat times (default 3, in rounds); the median is shown.\n"
                   "methods: unnest-binary unnest-binary+rollup unnest-binary+backfill unnest-text copy values\n"
                   "         pipeline\n"
                   "Empties the telemetry tables of the database it is given.\n");
            return o == 'h' ? 0 : 2;
        }
    }
    if (!rows || !batch || !devices || batch > 3000 || !repeat || repeat > 15) {
        fprintf(stderr, "bench: rows, devices >= 1, batch-rows 1..3000 (the VALUES method's limit)\n");
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
    printf("# %u rows, %u devices, batches of %u rows, storage %s, fsync %s, server %d, median of %u\n",
           rows, devices, batch, ems_storage_name(mr.storage),
           PQresultStatus(sv) == PGRES_TUPLES_OK ? PQgetvalue(sv, 0, 0) : "?", PQserverVersion(conn),
           repeat);
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
        exec_ok(conn, "UPDATE ems_rollup_state SET watermark = "
                      "date_bin('1 minute', now(), TIMESTAMPTZ '1970-01-01 00:00:00+00'), mark = watermark");
    }
    free(b.rows);
    PQfinish(conn);
    return rc;
}
