/* ems-dbwriter: stores the gateway's telemetry and events in PostgreSQL
 * (TimescaleDB when available) and answers its history queries.
 *
 * One libuv loop. The gateway connects over a Unix socket (common/link.h);
 * durable frames go to the batching writer (ingest.c) on one PostgreSQL
 * connection, queries to query.c on a second one, so a long history query
 * never delays a commit. Schema migrations (migrate.c) run on the first
 * connect; nothing is written before they succeed. Configuration comes
 * from flags and the environment (--help). SIGTERM or SIGINT: stop reading,
 * write and acknowledge what is held (bounded by --shutdown-timeout), close.
 */
#include "error.h"
#include "ingest.h"
#include "link.h"
#include "log.h"
#include "migrate.h"
#include "pg.h"
#include "query.h"

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ems_bench_main(int argc, char **argv); /* bench.c */

typedef struct {
    const char *socket_path;
    const char *dsn;
    const char *migrations;
    ems_storage_t storage;
    unsigned batch_rows, batch_ms, queue_rows;
    unsigned retention_days, rollup_retention_days;
    unsigned rollup_interval_ms;
    unsigned shutdown_timeout_ms;
    bool migrate_only;
} config_t;

typedef struct app app_t;

/* One gateway connection. Queries hold a reference, so an answer that
 * arrives after the connection closed finds the struct and drops itself. */
typedef struct link {
    app_t *app;
    ems_link_conn_t *conn;
    ems_ingest_src_t *src;
    struct link *next;
    unsigned refs;
    bool closed;
    bool durable;     /* has sent TELEMETRY or EVENT: subject to backpressure */
    bool ack_pending; /* an ACK could not be queued; sent on drain */
    uint64_t ack_seq;
} link_t;

struct app {
    uv_loop_t *loop;
    config_t cfg;
    char dir[PATH_MAX];
    uv_pipe_t server;
    bool listening;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t maint_timer;    /* partitions, retention, stats line */
    uv_timer_t shutdown_timer; /* bounds the final drain */
    uv_timer_t rollup_timer;   /* plain PostgreSQL: ems_rollup_step */
    ems_pg_t *pg_ingest, *pg_query;
    ems_ingest_t *ingest;
    ems_query_t *query;
    link_t *links;
    unsigned nlinks;
    bool migrating, migrated;
    ems_storage_t storage;
    int schema_version;
    bool paused;
    uint64_t pause_logged_ms; /* backpressure can oscillate: log it sparingly */
    bool stopping;
    int exit_code;
    ems_pg_req_t maint_req;
    bool maint_busy;
    unsigned maint_ticks;
    ems_pg_req_t rollup_req;
    bool rollup_busy;
    char maint_sql[512];
    ems_ingest_stats_t last_logged;
};

/* ------------------------------------------------------------------ links */

static void link_unref(link_t *l)
{
    if (--l->refs == 0)
        free(l);
}

static void link_send_ack(link_t *l)
{
    uint8_t frame[EMS_LINK_HEADER + 8];
    ems_link_buf_t b = {frame, 0, sizeof frame};
    ems_link_put_ack(&b, l->ack_seq);
    if (ems_link_conn_send_raw(l->conn, b.data, b.len) == 0)
        l->ack_pending = false;
    else
        l->ack_pending = true; /* the gateway is not reading; on_drain retries */
}

static void on_ack(void *ud, uint64_t link_seq)
{
    link_t *l = ud;
    if (l->closed)
        return;
    l->ack_seq = link_seq;
    link_send_ack(l);
}

static void on_reject(void *ud, uint64_t link_seq, uint32_t index, const char *reason)
{
    link_t *l = ud;
    if (l->closed)
        return;
    ems_link_buf_t b = {0};
    if (ems_link_put_reject(&b, link_seq, index, reason, strlen(reason)) == 0 &&
        ems_link_conn_send_raw(l->conn, b.data, b.len) < 0)
        ems_log_warn("link: could not queue REJECT for link_seq %llu (send queue full)",
                     (unsigned long long)link_seq);
    ems_link_buf_free(&b);
}

/* Backpressure stops the connections that feed the queue; a connection
 * that only asks queries keeps being served (the gateway may keep one for
 * that, so history requests work while PostgreSQL is slow). On shutdown
 * every connection stops. */
static void links_pause(app_t *a, bool pause)
{
    a->paused = pause;
    for (link_t *l = a->links; l; l = l->next) {
        if (pause && (l->durable || a->stopping))
            ems_link_conn_pause(l->conn);
        else if (!pause)
            ems_link_conn_resume(l->conn);
    }
}

static void on_space(void *ud)
{
    app_t *a = ud;
    if (a->paused && !a->stopping) {
        ems_log_debug("ingest: queue below half; reading the link again");
        links_pause(a, false);
    }
}

static void on_query_done(void *ud, uint64_t id, int status, const char *json, size_t len)
{
    link_t *l = ud;
    if (!l->closed) {
        ems_link_buf_t b = {0};
        int rc = ems_link_put_result(&b, id, status, json, len);
        if (rc == EMS_EMSGSIZE) {
            static const char big[] = "{\"error\":\"result larger than the link's frame limit; ask for less\"}";
            ems_link_buf_reset(&b);
            rc = ems_link_put_result(&b, id, EMS_EMSGSIZE, big, sizeof big - 1);
        }
        if (rc == 0 && ems_link_conn_send_raw(l->conn, b.data, b.len) < 0)
            ems_log_warn("link: could not queue the result of query %llu", (unsigned long long)id);
        ems_link_buf_free(&b);
    }
    link_unref(l);
}

static void link_ready(ems_link_conn_t *c, void *ud, const char *info, size_t n)
{
    (void)c;
    link_t *l = ud;
    ems_log_info("link: gateway connected (%.*s)", (int)(n > 200 ? 200 : n), info);
    (void)l;
}

static void link_frame(ems_link_conn_t *c, void *ud, const ems_link_frame_t *f)
{
    link_t *l = ud;
    app_t *a = l->app;
    int rc = 0;
    switch (f->kind) {
    case EMS_LINK_TELEMETRY:
        l->durable = true;
        rc = ems_ingest_add_telemetry(a->ingest, l->src, f);
        if (rc == EMS_EPROTO)
            ems_link_conn_fail(c, rc, "malformed telemetry frame or link_seq not increasing");
        break;
    case EMS_LINK_EVENT: {
        uint64_t seq;
        const char *json;
        size_t len;
        l->durable = true;
        rc = ems_link_parse_id_json(f, &seq, &json, &len);
        if (rc == 0)
            rc = ems_ingest_add_event(a->ingest, l->src, seq, json, len);
        if (rc == EMS_EPROTO)
            ems_link_conn_fail(c, rc, "malformed event frame or link_seq not increasing");
        break;
    }
    case EMS_LINK_QUERY: {
        uint64_t id;
        const char *json;
        size_t len;
        if (ems_link_parse_id_json(f, &id, &json, &len) < 0) {
            ems_link_conn_fail(c, EMS_EPROTO, "malformed query frame");
            return;
        }
        l->refs++;
        ems_query_run(a->query, id, json, len, on_query_done, l);
        return;
    }
    default: {
        char text[96];
        snprintf(text, sizeof text, "the DB writer does not accept %s frames",
                 ems_link_kind_name(f->kind));
        ems_link_conn_fail(c, EMS_EPROTO, text);
        return;
    }
    }
    if (rc == EMS_ENOMEM)
        ems_link_conn_fail(c, rc, "out of memory");
    if (ems_ingest_full(a->ingest)) {
        uint64_t now = uv_now(a->loop);
        if (!a->paused && now - a->pause_logged_ms >= 10000) {
            a->pause_logged_ms = now;
            ems_log_warn("ingest: %u rows held and not committed; pausing the link until half are "
                         "(backpressure; logged at most every 10 s)",
                         a->cfg.queue_rows);
        }
        links_pause(a, true); /* idempotent; also catches a link that just became durable */
    }
}

static void link_drain(ems_link_conn_t *c, void *ud)
{
    (void)c;
    link_t *l = ud;
    if (l->ack_pending && !l->closed)
        link_send_ack(l);
}

static void link_closed(ems_link_conn_t *c, void *ud, int status)
{
    (void)c;
    link_t *l = ud;
    app_t *a = l->app;
    ems_log_info("link: gateway connection closed (%s)",
                 status == 0 ? "normal" : status == EMS_ECLOSED ? "by the gateway" : ems_strerror(status));
    l->closed = true;
    ems_ingest_src_close(l->src);
    for (link_t **p = &a->links; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    a->nlinks--;
    link_unref(l);
}

static const ems_link_conn_cb_t LINK_CB = {link_ready, link_frame, link_drain, link_closed};

static void on_connection(uv_stream_t *server, int status)
{
    app_t *a = server->data;
    if (status < 0) {
        ems_log_warn("link: accept failed: %s", uv_strerror(status));
        return;
    }
    link_t *l = calloc(1, sizeof *l);
    if (!l)
        return;
    l->app = a;
    l->refs = 1;
    l->src = ems_ingest_src_new(a->ingest, l);
    char info[128];
    snprintf(info, sizeof info, "{\"name\":\"ems-dbwriter\",\"storage\":\"%s\"}",
             a->migrated ? ems_storage_name(a->storage) : "starting");
    ems_link_conn_opts_t o = {.name = "gateway link", .hello_info = info};
    if (!l->src || ems_link_conn_accept(server, &o, &LINK_CB, l, &l->conn) < 0) {
        ems_ingest_src_close(l->src);
        free(l);
        return;
    }
    l->next = a->links;
    a->links = l;
    a->nlinks++;
    if (a->stopping)
        ems_link_conn_pause(l->conn); /* backpressure pauses it once it sends durable frames */
}

/* ------------------------------------------------------------------ stats */

static char *stats_json(void *ud)
{
    app_t *a = ud;
    ems_ingest_stats_t s;
    ems_ingest_stats(a->ingest, &s);
    char *out = malloc(1024);
    if (!out)
        return NULL;
    snprintf(out, 1024,
             "{\"rows_received\":%llu,\"rows_written\":%llu,\"rows_duplicate\":%llu,"
             "\"rows_rejected\":%llu,\"events_written\":%llu,\"events_rejected\":%llu,"
             "\"batches\":%llu,\"batch_failures\":%llu,\"commit_ms_last\":%llu,"
             "\"commit_ms_max\":%llu,\"commit_ms_avg\":%.1f,\"queue_rows\":%llu,"
             "\"queue_frames\":%llu,\"inflight_rows\":%llu,\"queue_limit\":%u,\"paused\":%s,"
             "\"pg_up\":%s,\"pg_reconnects\":%llu,\"storage\":\"%s\",\"schema_version\":%d,"
             "\"links\":%u,\"queries_inflight\":%u}",
             (unsigned long long)s.rows_received, (unsigned long long)s.rows_written,
             (unsigned long long)s.rows_duplicate, (unsigned long long)s.rows_rejected,
             (unsigned long long)s.events_written, (unsigned long long)s.events_rejected,
             (unsigned long long)s.batches, (unsigned long long)s.batch_failures,
             (unsigned long long)s.commit_ms_last, (unsigned long long)s.commit_ms_max,
             s.batches ? (double)s.commit_ms_sum / (double)s.batches : 0.0,
             (unsigned long long)s.queue_rows, (unsigned long long)s.queue_frames,
             (unsigned long long)s.inflight_rows, a->cfg.queue_rows, a->paused ? "true" : "false",
             ems_pg_is_up(a->pg_ingest) ? "true" : "false",
             (unsigned long long)ems_pg_reconnects(a->pg_ingest),
             a->migrated ? ems_storage_name(a->storage) : "unknown", a->schema_version, a->nlinks,
             ems_query_inflight(a->query));
    return out;
}

/* ------------------------------------------------------------------ maintenance */

static int maint_send(ems_pg_req_t *r, PGconn *conn)
{
    app_t *a = r->data;
    return PQsendQuery(conn, a->maint_sql) == 1 ? 0 : EMS_EDB;
}

static void maint_done(ems_pg_req_t *r, int status)
{
    app_t *a = r->data;
    a->maint_busy = false;
    if (status == EMS_EDB)
        ems_log_warn("maintenance failed: %s", r->error);
}

/* Every minute: one line of counters when something happened. Every hour
 * (and at start), plain PostgreSQL mode only: partitions two days ahead
 * (so no insert waits for DDL) and retention. TimescaleDB does both with
 * its own policies. */
static void maint_cb(uv_timer_t *t)
{
    app_t *a = t->data;
    ems_ingest_stats_t s;
    ems_ingest_stats(a->ingest, &s);
    if (s.rows_received != a->last_logged.rows_received || s.batch_failures != a->last_logged.batch_failures)
        ems_log_info("stats: %llu rows written, %llu duplicates, %llu batches (%llu failed), "
                     "commit %llu ms (max %llu), %llu rows held",
                     (unsigned long long)s.rows_written, (unsigned long long)s.rows_duplicate,
                     (unsigned long long)s.batches, (unsigned long long)s.batch_failures,
                     (unsigned long long)s.commit_ms_last, (unsigned long long)s.commit_ms_max,
                     (unsigned long long)s.queue_rows);
    a->last_logged = s;
    if (!a->migrated || a->storage != EMS_STORAGE_POSTGRES || a->maint_busy || a->maint_ticks++ % 60)
        return;
    snprintf(a->maint_sql, sizeof a->maint_sql,
             "SELECT ems_ensure_partitions(now() - interval '8 days', now() + interval '2 days'),"
             " ems_apply_retention(now() - interval '%u days', now() - interval '%u days')",
             a->cfg.retention_days, a->cfg.rollup_retention_days);
    a->maint_req.send = maint_send;
    a->maint_req.on_done = maint_done;
    a->maint_req.on_result = NULL;
    a->maint_req.data = a;
    if (ems_pg_submit(a->pg_ingest, &a->maint_req) == 0)
        a->maint_busy = true;
}

/* Plain PostgreSQL mode: the rollup step (0002_telemetry.pg.sql) moves the
 * watermark over the minutes that closed and recomputes dirty buckets. It
 * runs on the writing connection, between batches, so it never races the
 * writer's own inserts. */
static int rollup_send(ems_pg_req_t *r, PGconn *conn)
{
    (void)r;
    return PQsendQuery(conn, "SELECT ems_rollup_step()") == 1 ? 0 : EMS_EDB;
}

static void rollup_done(ems_pg_req_t *r, int status)
{
    app_t *a = r->data;
    a->rollup_busy = false;
    if (status == EMS_EDB)
        ems_log_warn("rollup step failed: %s", r->error);
}

static void rollup_cb(uv_timer_t *t)
{
    app_t *a = t->data;
    if (a->rollup_busy || !a->migrated)
        return;
    a->rollup_req.send = rollup_send;
    a->rollup_req.on_done = rollup_done;
    a->rollup_req.on_result = NULL;
    a->rollup_req.data = a;
    if (ems_pg_submit(a->pg_ingest, &a->rollup_req) == 0)
        a->rollup_busy = true;
}

/* ------------------------------------------------------------------ start and stop */

static void shutdown_begin(app_t *a, int code);

static void on_migrated(void *ud, int status, const ems_migrate_result_t *r)
{
    app_t *a = ud;
    a->migrating = false;
    if (status == EMS_ECLOSED) {
        ems_log_warn("migrations: interrupted (%s); again when the database is back", r->error);
        return;
    }
    if (status < 0) {
        ems_log_error("migrations: %s", r->error);
        shutdown_begin(a, 1);
        return;
    }
    a->migrated = true;
    a->storage = r->storage;
    a->schema_version = r->version;
    if (a->storage == EMS_STORAGE_TIMESCALEDB)
        ems_log_info("storage mode: timescaledb (hypertable with compression and retention "
                     "policies, continuous aggregates telemetry_1m and telemetry_1h); schema "
                     "version %d, %d migration(s) applied now",
                     r->version, r->applied);
    else
        ems_log_info("storage mode: postgres (timescaledb not in use: daily native partitions, "
                     "1-minute rollup behind a watermark every %u ms, retention %u days raw / %u "
                     "days rollup); schema version %d, %d migration(s) applied now",
                     a->cfg.rollup_interval_ms, a->cfg.retention_days, a->cfg.rollup_retention_days,
                     r->version, r->applied);
    if (a->cfg.migrate_only) {
        shutdown_begin(a, 0);
        return;
    }
    ems_query_set_storage(a->query, a->storage);
    ems_ingest_start(a->ingest, a->storage == EMS_STORAGE_POSTGRES);
    uv_timer_start(&a->maint_timer, maint_cb, 0, 60 * 1000);
    if (a->storage == EMS_STORAGE_POSTGRES)
        uv_timer_start(&a->rollup_timer, rollup_cb, a->cfg.rollup_interval_ms,
                       a->cfg.rollup_interval_ms);
}

static void pg_ingest_up(ems_pg_t *pg, void *ud)
{
    app_t *a = ud;
    if (a->stopping && !a->migrated)
        return;
    if (!a->migrated) {
        if (!a->migrating) {
            int rc = ems_migrate_start(pg, a->dir, a->cfg.storage, on_migrated, a);
            if (rc < 0) {
                ems_log_error("migrations: cannot start (%s)", ems_strerror(rc));
                shutdown_begin(a, 1);
                return;
            }
            a->migrating = true;
        }
        return;
    }
    ems_ingest_pg_up(a->ingest);
}

static void pg_ingest_down(ems_pg_t *pg, void *ud, const char *why)
{
    (void)pg, (void)why;
    app_t *a = ud;
    a->maint_busy = false; /* its request was failed with the connection */
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Last step: everything that could be written is written and acknowledged. */
static void shutdown_finish(app_t *a)
{
    uv_timer_stop(&a->shutdown_timer);
    for (link_t *l = a->links; l; l = l->next)
        ems_link_conn_end(l->conn, 0); /* the ACKs queued last still go out */
    if (a->pg_ingest)
        ems_pg_close(a->pg_ingest, NULL, NULL);
    if (a->pg_query)
        ems_pg_close(a->pg_query, NULL, NULL);
    a->pg_ingest = a->pg_query = NULL;
    ems_ingest_close(a->ingest, NULL, NULL);
    close_handle((uv_handle_t *)&a->maint_timer);
    close_handle((uv_handle_t *)&a->rollup_timer);
    close_handle((uv_handle_t *)&a->shutdown_timer);
    close_handle((uv_handle_t *)&a->sigterm);
    close_handle((uv_handle_t *)&a->sigint);
    close_handle((uv_handle_t *)&a->sighup);
}

static void drained(void *ud)
{
    app_t *a = ud;
    ems_log_info("shutdown: everything held was committed and acknowledged");
    shutdown_finish(a);
}

static void shutdown_timeout(uv_timer_t *t)
{
    app_t *a = t->data;
    ems_ingest_stats_t s;
    ems_ingest_stats(a->ingest, &s);
    ems_log_warn("shutdown: %llu rows not committed after %u ms; leaving them to the gateway, "
                 "which resends everything unacknowledged",
                 (unsigned long long)s.queue_rows, a->cfg.shutdown_timeout_ms);
    shutdown_finish(a);
}

static void shutdown_begin(app_t *a, int code)
{
    if (a->stopping)
        return;
    a->stopping = true;
    a->exit_code = code;
    if (a->listening) {
        uv_close((uv_handle_t *)&a->server, NULL);
        a->listening = false;
    }
    links_pause(a, true);
    uv_timer_stop(&a->maint_timer);
    uv_timer_stop(&a->rollup_timer);
    if (a->migrated && code == 0) {
        uv_timer_start(&a->shutdown_timer, shutdown_timeout, a->cfg.shutdown_timeout_ms, 0);
        ems_ingest_drain(a->ingest, drained, a);
    } else {
        shutdown_finish(a);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    app_t *a = s->data;
    ems_log_info("received signal %d: finishing the batch in flight, then stopping", signum);
    shutdown_begin(a, 0);
}

/* SIGHUP's default action would end the writer at once, without the drain
 * of SIGTERM (a `docker compose kill -s HUP` sent to every service, or a
 * reload habit). Everything it reads comes from flags at start, so there is
 * nothing to reload: it says so and goes on. */
static void on_sighup(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    ems_log_info("SIGHUP: nothing to reload (settings are read at start); still running");
}

/* ------------------------------------------------------------------ config */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ems-dbwriter [options]\n"
            "  --socket PATH            Unix socket for the gateway (EMS_DBWRITER_SOCKET,\n"
            "                           default /run/ems/dbwriter.sock)\n"
            "  --dsn DSN                PostgreSQL connection string (EMS_PG_DSN; else the\n"
            "                           libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE...)\n"
            "  --storage MODE           auto | postgres | timescaledb (default auto)\n"
            "  --migrations DIR         SQL migrations (EMS_DB_DIR; default cloud/db of the tree)\n"
            "  --migrate-only           apply the migrations and exit\n"
            "  --batch-rows N           rows per batch (default 2000)\n"
            "  --batch-ms N             longest wait before a batch is written (default 100)\n"
            "  --queue-rows N           uncommitted rows held before backpressure (default 50000)\n"
            "  --retention-days N       plain PostgreSQL: raw rows kept (default 30)\n"
            "  --rollup-retention-days N  plain PostgreSQL: 1-minute rollup kept (default 730)\n"
            "  --rollup-interval-ms N   plain PostgreSQL: rollup step period (default 10000)\n"
            "  --shutdown-timeout MS    longest final drain on SIGTERM (default 10000)\n"
            "  --log-level LEVEL        error | warn | info | debug (EMS_LOG_LEVEL, default info)\n"
            "  --bench ...              insert benchmark (ems-dbwriter --bench --help)\n");
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v < min || v > max)
        return EMS_EINVAL;
    *out = (unsigned)v;
    return 0;
}

static int parse_config(int argc, char **argv, config_t *c, ems_log_level_t *level)
{
    const char *env;
    c->socket_path = (env = getenv("EMS_DBWRITER_SOCKET")) && *env ? env : "/run/ems/dbwriter.sock";
    c->dsn = getenv("EMS_PG_DSN");
    c->batch_rows = 2000;
    c->batch_ms = 100;
    c->queue_rows = 50000;
    c->retention_days = 30;
    c->rollup_retention_days = 730;
    c->rollup_interval_ms = 10000;
    c->shutdown_timeout_ms = 10000;
    if ((env = getenv("EMS_LOG_LEVEL")) && *env && ems_log_level_parse(env, level) < 0) {
        fprintf(stderr, "ems-dbwriter: bad EMS_LOG_LEVEL %s\n", env);
        return EMS_ECONFIG;
    }
    enum { O_SOCKET = 256, O_DSN, O_STORAGE, O_MIGRATIONS, O_MIGRATE_ONLY, O_BATCH_ROWS, O_BATCH_MS,
           O_QUEUE_ROWS, O_RETENTION, O_ROLLUP_RETENTION, O_ROLLUP_INTERVAL, O_SHUTDOWN, O_LOG,
           O_HELP };
    static const struct option opts[] = {
        {"socket", required_argument, 0, O_SOCKET},
        {"dsn", required_argument, 0, O_DSN},
        {"storage", required_argument, 0, O_STORAGE},
        {"migrations", required_argument, 0, O_MIGRATIONS},
        {"migrate-only", no_argument, 0, O_MIGRATE_ONLY},
        {"batch-rows", required_argument, 0, O_BATCH_ROWS},
        {"batch-ms", required_argument, 0, O_BATCH_MS},
        {"queue-rows", required_argument, 0, O_QUEUE_ROWS},
        {"retention-days", required_argument, 0, O_RETENTION},
        {"rollup-retention-days", required_argument, 0, O_ROLLUP_RETENTION},
        {"rollup-interval-ms", required_argument, 0, O_ROLLUP_INTERVAL},
        {"shutdown-timeout", required_argument, 0, O_SHUTDOWN},
        {"log-level", required_argument, 0, O_LOG},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int o;
    int rc = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_SOCKET: c->socket_path = optarg; break;
        case O_DSN: c->dsn = optarg; break;
        case O_STORAGE: rc = ems_storage_parse(optarg, &c->storage); break;
        case O_MIGRATIONS: c->migrations = optarg; break;
        case O_MIGRATE_ONLY: c->migrate_only = true; break;
        case O_BATCH_ROWS: rc = parse_uint(optarg, 1, EMS_LINK_RECORDS_MAX * 16, &c->batch_rows); break;
        case O_BATCH_MS: rc = parse_uint(optarg, 1, 60000, &c->batch_ms); break;
        case O_QUEUE_ROWS: rc = parse_uint(optarg, 100, 10000000, &c->queue_rows); break;
        case O_RETENTION: rc = parse_uint(optarg, 1, 100000, &c->retention_days); break;
        case O_ROLLUP_RETENTION: rc = parse_uint(optarg, 1, 100000, &c->rollup_retention_days); break;
        case O_ROLLUP_INTERVAL: rc = parse_uint(optarg, 100, 3600000, &c->rollup_interval_ms); break;
        case O_SHUTDOWN: rc = parse_uint(optarg, 0, 3600000, &c->shutdown_timeout_ms); break;
        case O_LOG: rc = ems_log_level_parse(optarg, level); break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); return EMS_ECONFIG;
        }
        if (rc < 0) {
            fprintf(stderr, "ems-dbwriter: bad value for --%s: %s\n", opts[o - O_SOCKET].name, optarg);
            return EMS_ECONFIG;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return EMS_ECONFIG;
    }
    if (c->queue_rows < c->batch_rows * 2) {
        fprintf(stderr, "ems-dbwriter: --queue-rows must be at least twice --batch-rows\n");
        return EMS_ECONFIG;
    }
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--bench"))
            return ems_bench_main(argc, argv);

    app_t app;
    memset(&app, 0, sizeof app);
    app_t *a = &app;
    ems_log_level_t level = EMS_LOG_INFO;
    if (parse_config(argc, argv, &a->cfg, &level) < 0)
        return 2;
    ems_log_init("ems-dbwriter", level);
    signal(SIGPIPE, SIG_IGN);

    if (a->cfg.migrations)
        snprintf(a->dir, sizeof a->dir, "%s", a->cfg.migrations);
    else if (ems_migrate_find_dir(a->dir, sizeof a->dir) < 0) {
        ems_log_error("cannot find the migrations (cloud/db); set --migrations or EMS_DB_DIR");
        return 1;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    a->loop = &loop;
    uv_timer_init(&loop, &a->maint_timer);
    uv_timer_init(&loop, &a->shutdown_timer);
    uv_timer_init(&loop, &a->rollup_timer);
    a->maint_timer.data = a->shutdown_timer.data = a->rollup_timer.data = a;
    uv_signal_init(&loop, &a->sigterm);
    uv_signal_init(&loop, &a->sigint);
    a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_init(&loop, &a->sighup);
    a->sighup.data = a;
    uv_signal_start(&a->sighup, on_sighup, SIGHUP);

    ems_pg_opts_t po = {
        .conninfo = a->cfg.dsn,
        .name = "pg ingest",
        .app_name = "ems-dbwriter",
        .on_up = pg_ingest_up,
        .on_down = pg_ingest_down,
        .ud = a,
    };
    ems_pg_opts_t qo = {
        .conninfo = a->cfg.dsn,
        .name = "pg query",
        .app_name = "ems-dbwriter-query",
        .options = "-c statement_timeout=30000",
    };
    ems_ingest_opts_t io = {
        .batch_rows = a->cfg.batch_rows,
        .batch_ms = a->cfg.batch_ms,
        .queue_rows = a->cfg.queue_rows,
        .on_ack = on_ack,
        .on_reject = on_reject,
        .on_space = on_space,
        .ud = a,
    };
    ems_query_opts_t qy = {.stats_json = stats_json, .stats_ud = a};
    if (ems_pg_new(&loop, &po, &a->pg_ingest) < 0 || ems_pg_new(&loop, &qo, &a->pg_query) < 0 ||
        ems_ingest_new(&loop, a->pg_ingest, &io, &a->ingest) < 0 ||
        ems_query_new(a->pg_query, &qy, &a->query) < 0) {
        ems_log_error("out of memory");
        return 1;
    }

    if (!a->cfg.migrate_only) {
        uv_pipe_init(&loop, &a->server, 0);
        a->server.data = a;
        int rc = ems_link_listen(&a->server, a->cfg.socket_path, on_connection);
        if (rc < 0) {
            ems_log_error("cannot listen on %s: %s", a->cfg.socket_path, ems_strerror(rc));
            uv_close((uv_handle_t *)&a->server, NULL);
            shutdown_begin(a, 1);
        } else {
            a->listening = true;
            ems_log_info("listening on %s (batches of %u rows or %u ms, at most %u rows held)",
                         a->cfg.socket_path, a->cfg.batch_rows, a->cfg.batch_ms, a->cfg.queue_rows);
        }
    }

    uv_run(&loop, UV_RUN_DEFAULT);
    ems_query_free(a->query);
    if (uv_loop_close(&loop) != 0)
        ems_log_warn("shutdown: handles still open at exit");
    if (!a->cfg.migrate_only)
        unlink(a->cfg.socket_path);
    ems_log_info("stopped");
    return a->exit_code;
}
