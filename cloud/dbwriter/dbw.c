/* dbw.c: ems-dbwriter's wiring (dbw.h): the links from the gateways and
 * their backpressure, STATUS frames and credential notices, the stats, the
 * maintenance connection (rollup steps, partitions and retention,
 * TimescaleDB job checks), the listen connection (credential NOTIFY), the
 * migrations on first connect, and the graceful shutdown.
 */
#include "dbw.h"

#include "error.h"
#include "health.h"
#include "ingest.h"
#include "link.h"
#include "log.h"
#include "migrate.h"
#include "pg.h"
#include "query.h"
#include "timefmt.h"

#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct ems_dbw app_t;

/* The rollup steps (plain PostgreSQL), for the stats. */
typedef struct {
    uint64_t steps, failures;
    uint64_t started, ms_last, ms_max;
    uint64_t swept_last, recomputed_last, recomputed_max, recomputed_total;
    bool more;    /* the last step said work is left */
    bool backlog; /* steps run back to back */
    uint64_t backlog_steps;
} rollup_stats_t;

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
    /* What the peer's HELLO "accepts" (an older gateway gets neither, so it
     * never sees a frame kind it does not know). */
    bool wants_status, wants_credentials;
} link_t;

/* The writing connection's state as the gateways and --health see it
 * (STATUS frames, docs/protocol.md 5.7): health means "can commit". */
typedef enum { DB_CONNECTING, DB_OK, DB_FAILING } db_state_t;
static const char *const DB_STATE_NAMES[] = {"connecting", "ok", "failing"};

struct ems_dbw {
    uv_loop_t *loop;
    ems_dbw_config_t cfg;
    char dir[PATH_MAX];
    uv_pipe_t server;
    bool listening;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t maint_timer;    /* partitions, retention, stats line */
    uv_timer_t shutdown_timer; /* bounds the final drain */
    uv_timer_t rollup_timer;   /* plain PostgreSQL: ems_rollup_step */
    ems_pg_t *pg_ingest, *pg_query;
    ems_pg_t *pg_listen; /* LISTEN ems_device_auth (0004_device_auth_notify.sql) */
    ems_pg_req_t listen_req;
    uv_timer_t status_timer; /* commit tracking and STATUS refresh, every second */
    db_state_t db_state;
    char db_error[256];     /* why it is failing ("" when ok) */
    bool commits_failing;   /* batches fail while the connection is up */
    int64_t last_commit_ms; /* wall clock of the last commit seen, 0 if none */
    uint64_t seen_batches, seen_failures;
    char *status_sent; /* the last STATUS broadcast (JSON), to send changes only */
    int64_t status_sent_mono;
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
    rollup_stats_t rollup;
    char maint_sql[512];
    ems_ingest_stats_t last_logged;
    ems_pg_t *pg_maint;    /* rollup steps, partitions and retention, TimescaleDB job checks */
    uv_timer_t jobs_timer; /* TimescaleDB: job_stats every --tsdb-jobs-check-ms */
    ems_pg_req_t jobs_req;
    bool jobs_busy, jobs_error_logged;
    json_t *tsdb_jobs; /* the last job_stats read (array), NULL before */
    long long tsdb_job_failures, tsdb_jobs_failing;
    unsigned mig_interrupts; /* migrations cut by a lost connection (logged sparingly) */
    uint64_t mig_logged_ms;
};

/* ------------------------------------------------------------------ links */

/* The STATUS JSON of now. Caller frees. */
static char *status_json(app_t *a)
{
    db_state_t st = a->db_state;
    const char *err = a->db_error[0] ? a->db_error : NULL;
    bool refusing = st == DB_OK && a->commits_failing; /* connected, batches fail */
    if (refusing) {
        st = DB_FAILING;
        err = "batches fail to commit (the DB writer's log says why)";
    }
    json_t *o = json_pack("{sssosssssssisI}", "db", DB_STATE_NAMES[st], "error",
                          st == DB_OK || !err ? json_null() : json_string(err), "commits",
                          refusing ? "failing" : "ok", "migrations",
                          a->migrated ? "done" : "pending", "storage",
                          a->migrated ? ems_storage_name(a->storage) : "unknown", "schema_version",
                          a->schema_version, "last_commit_ms", (json_int_t)a->last_commit_ms);
    if (o && a->last_commit_ms == 0)
        json_object_set_new(o, "last_commit_ms", json_null());
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* Queues a STATUS or CREDENTIALS frame in the urgent lane; a gateway that
 * does not read gets it with the next change (STATUS) or its periodic
 * re-check (CREDENTIALS). */
static void link_send_frame(link_t *l, const ems_buf_t *b, const char *what)
{
    if (l->closed || !ems_buf_len(b))
        return;
    if (ems_link_conn_send_raw(l->conn, ems_buf_data(b), ems_buf_len(b)) < 0)
        ems_log_debug("link: could not queue %s (send queue full)", what);
}

static void link_send_status(link_t *l, const char *json)
{
    if (!l->wants_status)
        return;
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    if (ems_link_put_status(&b, json, strlen(json)) == 0)
        link_send_frame(l, &b, "STATUS");
    ems_buf_free(&b);
}

/* True when two STATUS texts differ in more than last_commit_ms. */
static bool status_changed(const char *x, const char *y)
{
    json_t *a = json_loads(x, 0, NULL), *b = json_loads(y, 0, NULL);
    json_object_del(a, "last_commit_ms");
    json_object_del(b, "last_commit_ms");
    bool changed = !json_equal(a, b);
    json_decref(a);
    json_decref(b);
    return changed;
}

/* Sends STATUS to every gateway that asked for it: at once when the state
 * changed, and every 5 s while only the time of the last commit moves. */
static void status_broadcast(app_t *a)
{
    char *s = status_json(a);
    if (!s)
        return;
    int64_t mono = ems_time_mono_ms();
    bool changed = !a->status_sent || status_changed(s, a->status_sent);
    if (!changed && (!strcmp(s, a->status_sent) || mono - a->status_sent_mono < 5000)) {
        free(s);
        return;
    }
    if (changed) {
        json_t *o = json_loads(s, 0, NULL);
        const char *err = json_string_value(json_object_get(o, "error"));
        ems_log_info("database state: %s, migrations %s%s%s",
                     json_string_value(json_object_get(o, "db")), a->migrated ? "done" : "pending",
                     err ? ": " : "", err ? err : "");
        json_decref(o);
    }
    for (link_t *l = a->links; l; l = l->next)
        link_send_status(l, s);
    free(a->status_sent);
    a->status_sent = s;
    a->status_sent_mono = mono;
}

/* A device's credential changed ("" = every device's may have). */
static void links_credentials(app_t *a, const char *id)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    if (ems_link_put_credentials(&b, id, strlen(id)) == 0)
        for (link_t *l = a->links; l; l = l->next)
            if (l->wants_credentials)
                link_send_frame(l, &b, "CREDENTIALS");
    ems_buf_free(&b);
}

/* Every second: a commit since the last look moves last_commit_ms; failed
 * attempts and no commit mean the database takes no rows although the
 * connection is up (a full disk, a revoked privilege). */
static void status_cb(uv_timer_t *t)
{
    app_t *a = t->data;
    ems_ingest_stats_t s;
    ems_ingest_stats(a->ingest, &s);
    if (s.batches != a->seen_batches) {
        a->last_commit_ms = ems_time_now_ms();
        a->commits_failing = false;
    } else if (s.batch_failures != a->seen_failures && s.queue_rows > 0) {
        a->commits_failing = true;
    }
    a->seen_batches = s.batches;
    a->seen_failures = s.batch_failures;
    status_broadcast(a);
}

static void link_unref(link_t *l)
{
    if (--l->refs == 0)
        free(l);
}

static void link_send_ack(link_t *l)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    if (ems_link_put_ack(&b, l->ack_seq) == 0 &&
        ems_link_conn_send_raw(l->conn, ems_buf_data(&b), ems_buf_len(&b)) == 0)
        l->ack_pending = false;
    else
        l->ack_pending = true; /* the gateway is not reading; on_drain retries */
    ems_buf_free(&b);
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
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    if (ems_link_put_reject(&b, link_seq, index, reason, strlen(reason)) == 0 &&
        ems_link_conn_send_raw(l->conn, ems_buf_data(&b), ems_buf_len(&b)) < 0)
        ems_log_warn("link: could not queue REJECT for link_seq %llu (send queue full)",
                     (unsigned long long)link_seq);
    ems_buf_free(&b);
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

/* Answers go to the link's bulk lane, behind every ACK: acknowledgements
 * must not wait behind megabytes of history. An answer is never dropped in
 * silence: when the bulk lane is full (the gateway reads too slowly) a
 * short error answer goes in the urgent lane instead, so the gateway can
 * say "try again" at once rather than time out. */
static void on_query_done(void *ud, uint64_t id, int status, const char *json, size_t len)
{
    link_t *l = ud;
    if (!l->closed) {
        ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
        int rc = ems_link_put_result(&b, id, status, json, len);
        if (rc == EMS_EMSGSIZE) {
            static const char big[] =
                "{\"error\":\"result larger than the link's frame limit; ask for less\"}";
            ems_buf_clear(&b);
            rc = ems_link_put_result(&b, id, EMS_EMSGSIZE, big, sizeof big - 1);
        }
        if (rc == 0)
            rc = ems_link_conn_send_bulk(l->conn, ems_buf_data(&b), ems_buf_len(&b));
        if (rc == EMS_ENOSPC || rc == EMS_ENOMEM) {
            static const char full[] =
                "{\"error\":\"the DB writer's answer queue for this gateway is full; try again\"}";
            ems_buf_clear(&b);
            ems_log_warn("link: answer queue full (%zu bytes); query %llu answered with an error",
                         ems_link_conn_bulk_queued(l->conn), (unsigned long long)id);
            rc = ems_link_put_result(&b, id, EMS_EAGAIN, full, sizeof full - 1);
            if (rc == 0)
                rc = ems_link_conn_send_raw(l->conn, ems_buf_data(&b), ems_buf_len(&b));
        }
        if (rc < 0 && rc != EMS_ECLOSED)
            ems_log_warn("link: could not queue the result of query %llu (%s); the gateway's "
                         "timeout answers it",
                         (unsigned long long)id, ems_strerror(rc));
        ems_buf_free(&b);
    }
    link_unref(l);
}

/* Reads "accepts" from the peer's HELLO info. */
static void link_parse_accepts(link_t *l, const char *info, size_t n)
{
    json_t *o = json_loadb(info, n, 0, NULL);
    json_t *acc = json_object_get(o, "accepts"), *v;
    size_t i;
    json_array_foreach(acc, i, v)
    {
        const char *s = json_string_value(v);
        if (s && !strcmp(s, "status"))
            l->wants_status = true;
        else if (s && !strcmp(s, "credentials"))
            l->wants_credentials = true;
    }
    json_decref(o);
}

static void link_ready(ems_link_conn_t *c, void *ud, const char *info, size_t n)
{
    (void)c;
    link_t *l = ud;
    ems_log_info("link: gateway connected (%.*s)", (int)(n > 200 ? 200 : n), info);
    link_parse_accepts(l, info, n);
    if (l->wants_status) {
        char *s = status_json(l->app);
        if (s)
            link_send_status(l, s);
        free(s);
    }
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
    ems_log_info("link: gateway connection closed (%s)", status == 0 ? "normal"
                                                         : status == EMS_ECLOSED
                                                             ? "by the gateway"
                                                             : ems_strerror(status));
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

static char *stats_append_maint(app_t *a, char *out);

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
    return stats_append_maint(a, out);
}

/* ------------------------------------------------------------------ maintenance */

/* Maintenance runs on its own connection (pg_maint), never on the writing
 * one: a rollup step or a retention run that takes long must not hold back
 * a single commit (a backfill of old minutes once made one rollup step run
 * for minutes, and no device got an ACK meanwhile). */

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
 * its own policies (their failures are watched by jobs_cb). */
static void maint_cb(uv_timer_t *t)
{
    app_t *a = t->data;
    ems_ingest_stats_t s;
    ems_ingest_stats(a->ingest, &s);
    if (s.rows_received != a->last_logged.rows_received ||
        s.batch_failures != a->last_logged.batch_failures)
        ems_log_info("stats: %llu rows written, %llu duplicates, %llu batches (%llu failed), "
                     "commit %llu ms (max %llu), %llu rows held",
                     (unsigned long long)s.rows_written, (unsigned long long)s.rows_duplicate,
                     (unsigned long long)s.batches, (unsigned long long)s.batch_failures,
                     (unsigned long long)s.commit_ms_last, (unsigned long long)s.commit_ms_max,
                     (unsigned long long)s.queue_rows);
    a->last_logged = s;
    if (!a->migrated || a->storage != EMS_STORAGE_POSTGRES || a->maint_busy ||
        a->maint_ticks++ % 60)
        return;
    snprintf(a->maint_sql, sizeof a->maint_sql,
             "SELECT ems_ensure_partitions(now() - interval '8 days', now() + interval '2 days'),"
             " ems_apply_retention(now() - interval '%u days', now() - interval '%u days')",
             a->cfg.retention_days, a->cfg.rollup_retention_days);
    a->maint_req.send = maint_send;
    a->maint_req.on_done = maint_done;
    a->maint_req.on_result = NULL;
    a->maint_req.data = a;
    if (ems_pg_submit(a->pg_maint, &a->maint_req) == 0)
        a->maint_busy = true;
}

/* Plain PostgreSQL mode: the rollup step (cloud/db/0003_rollup_queue.pg.sql)
 * sweeps the minutes that closed and recomputes queued late buckets, a
 * bounded amount per step. It runs on pg_maint; the inserts on pg_ingest
 * queue late rows in their own transactions and take the shared barrier
 * lock the step waits on, so no late row is missed. While a step reports
 * that work is left (`more`), the next one follows at once. */
#define ROLLUP_BACKLOG_PAUSE_MS 20

static int rollup_send(ems_pg_req_t *r, PGconn *conn)
{
    app_t *a = r->data;
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT swept, recomputed, more FROM ems_rollup_step(interval '30 seconds', %u)",
             a->cfg.rollup_max_buckets);
    return PQsendQuery(conn, sql) == 1 ? 0 : EMS_EDB;
}

static void rollup_result(ems_pg_req_t *r, const PGresult *res)
{
    app_t *a = r->data;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 3)
        return;
    a->rollup.swept_last = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    a->rollup.recomputed_last = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    a->rollup.more = PQgetvalue(res, 0, 2)[0] == 't';
}

static void rollup_cb(uv_timer_t *t);

static void rollup_done(ems_pg_req_t *r, int status)
{
    app_t *a = r->data;
    rollup_stats_t *st = &a->rollup;
    a->rollup_busy = false;
    uint64_t ms = uv_now(a->loop) - st->started;
    if (status == 0) {
        st->steps++;
        st->ms_last = ms;
        if (ms > st->ms_max)
            st->ms_max = ms;
        st->recomputed_total += st->recomputed_last;
        if (st->recomputed_last > st->recomputed_max)
            st->recomputed_max = st->recomputed_last;
        if (st->more && !st->backlog) {
            st->backlog = true;
            st->backlog_steps = 0;
            ems_log_info("rollup: backlog (a step recomputes at most %u late buckets); running "
                         "steps back to back until it is done",
                         a->cfg.rollup_max_buckets);
        } else if (!st->more && st->backlog) {
            st->backlog = false;
            ems_log_info("rollup: backlog done after %llu steps",
                         (unsigned long long)st->backlog_steps);
        }
        st->backlog_steps++;
    } else {
        st->failures++;
        st->more = false;
        if (status == EMS_EDB)
            ems_log_warn("rollup step failed: %s", r->error);
    }
    if (!a->stopping && a->migrated)
        uv_timer_start(&a->rollup_timer, rollup_cb,
                       st->more ? ROLLUP_BACKLOG_PAUSE_MS : a->cfg.rollup_interval_ms, 0);
}

static void rollup_cb(uv_timer_t *t)
{
    app_t *a = t->data;
    if (a->rollup_busy || !a->migrated || a->stopping)
        return;
    a->rollup_req.send = rollup_send;
    a->rollup_req.on_done = rollup_done;
    a->rollup_req.on_result = rollup_result;
    a->rollup_req.data = a;
    a->rollup.started = uv_now(a->loop);
    a->rollup.more = false;
    if (ems_pg_submit(a->pg_maint, &a->rollup_req) == 0)
        a->rollup_busy = true;
    else /* the maintenance connection is down: try again later */
        uv_timer_start(&a->rollup_timer, rollup_cb, a->cfg.rollup_interval_ms, 0);
}

/* TimescaleDB mode: the background jobs (compression, retention,
 * continuous-aggregate refresh) run inside PostgreSQL, and their failures
 * are silent unless someone looks: TimescaleDB 2.26 on PostgreSQL 15.20
 * fails every job with "cannot drop portal "" while it is being set up"
 * after the work is done, then retries only hours later. The writer reads
 * timescaledb_information.job_stats every --tsdb-jobs-check-ms, shows it
 * in its stats (tsdb_jobs, tsdb_job_failures, tsdb_jobs_failing) and logs
 * once each time a job's failure count grows (docs/operations.md). */
static const char SQL_JOBS[] =
    "SELECT coalesce(json_agg(json_build_object('job_id', j.job_id,"
    " 'application_name', j.application_name, 'proc_name', j.proc_name,"
    " 'hypertable', j.hypertable_name, 'last_run_status', s.last_run_status,"
    " 'total_runs', coalesce(s.total_runs, 0), 'total_failures', coalesce(s.total_failures, 0),"
    " 'next_start', ems_rfc3339(s.next_start)) ORDER BY j.job_id), '[]')::text"
    " FROM timescaledb_information.jobs j"
    " LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id";

static int jobs_send(ems_pg_req_t *r, PGconn *conn)
{
    (void)r;
    return PQsendQuery(conn, SQL_JOBS) == 1 ? 0 : EMS_EDB;
}

static json_int_t job_int(json_t *job, const char *key)
{
    return json_integer_value(json_object_get(job, key));
}

static json_t *job_find(json_t *jobs, json_int_t id)
{
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j) if (job_int(j, "job_id") == id) return j;
    return NULL;
}

static void jobs_result(ems_pg_req_t *r, const PGresult *res)
{
    app_t *a = r->data;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 1)
        return;
    json_t *jobs = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    if (!json_is_array(jobs)) {
        json_decref(jobs);
        return;
    }
    size_t i;
    json_t *j;
    json_int_t total = 0, failing = 0;
    json_array_foreach(jobs, i, j)
    {
        json_int_t id = job_int(j, "job_id"), f = job_int(j, "total_failures");
        const char *last = json_string_value(json_object_get(j, "last_run_status"));
        total += f;
        failing += last && !strcmp(last, "Failed");
        json_t *old = a->tsdb_jobs ? job_find(a->tsdb_jobs, id) : NULL;
        if (f > (old ? job_int(old, "total_failures") : 0)) {
            const char *app = json_string_value(json_object_get(j, "application_name"));
            const char *next = json_string_value(json_object_get(j, "next_start"));
            ems_log_warn("timescaledb: background job %lld (%s) has failed %lld of %lld runs "
                         "(last run: %s, next start %s). The error: SELECT * FROM "
                         "timescaledb_information.job_errors; if it is 'cannot drop portal \"\" "
                         "while it is being set up' (TimescaleDB 2.26 on PostgreSQL 15.20) the "
                         "work was done anyway. Run it now with CALL run_job(%lld) "
                         "(docs/operations.md 5.8)",
                         (long long)id, app ? app : "?", (long long)f,
                         (long long)job_int(j, "total_runs"), last ? last : "none",
                         next ? next : "not scheduled", (long long)id);
        }
    }
    json_decref(a->tsdb_jobs);
    a->tsdb_jobs = jobs;
    a->tsdb_job_failures = total;
    a->tsdb_jobs_failing = failing;
}

static void jobs_done(ems_pg_req_t *r, int status)
{
    app_t *a = r->data;
    a->jobs_busy = false;
    if (status == EMS_EDB && !a->jobs_error_logged) {
        a->jobs_error_logged = true;
        ems_log_warn("timescaledb: cannot read the background jobs' state: %s (logged once)",
                     r->error);
    }
}

static void jobs_cb(uv_timer_t *t)
{
    app_t *a = t->data;
    if (a->jobs_busy || !a->migrated || a->stopping || a->storage != EMS_STORAGE_TIMESCALEDB)
        return;
    a->jobs_req.send = jobs_send;
    a->jobs_req.on_done = jobs_done;
    a->jobs_req.on_result = jobs_result;
    a->jobs_req.data = a;
    if (ems_pg_submit(a->pg_maint, &a->jobs_req) == 0)
        a->jobs_busy = true;
}

/* The maintenance connection's counters, appended to the stats object
 * `out` (which ends with '}'). Returns the new string (frees `out`). */
static char *stats_append_maint(app_t *a, char *out)
{
    if (!out)
        return NULL;
    const rollup_stats_t *r = &a->rollup;
    char *jobs = a->tsdb_jobs ? json_dumps(a->tsdb_jobs, JSON_COMPACT) : NULL;
    size_t n = strlen(out);
    size_t cap = n + 640 + (jobs ? strlen(jobs) : 4);
    char *s = malloc(cap);
    if (!s || n == 0 || out[n - 1] != '}') {
        free(s);
        free(jobs);
        return out;
    }
    snprintf(s, cap,
             "%.*s,\"pg_maint_up\":%s,\"rollup_steps\":%llu,\"rollup_failures\":%llu,"
             "\"rollup_ms_last\":%llu,\"rollup_ms_max\":%llu,\"rollup_swept_last\":%llu,"
             "\"rollup_recomputed_last\":%llu,\"rollup_recomputed_max\":%llu,"
             "\"rollup_recomputed_total\":%llu,\"rollup_max_buckets\":%u,\"rollup_backlog\":%s,"
             "\"tsdb_jobs\":%s,\"tsdb_job_failures\":%lld,\"tsdb_jobs_failing\":%lld}",
             (int)(n - 1), out, a->pg_maint && ems_pg_is_up(a->pg_maint) ? "true" : "false",
             (unsigned long long)r->steps, (unsigned long long)r->failures,
             (unsigned long long)r->ms_last, (unsigned long long)r->ms_max,
             (unsigned long long)r->swept_last, (unsigned long long)r->recomputed_last,
             (unsigned long long)r->recomputed_max, (unsigned long long)r->recomputed_total,
             a->cfg.rollup_max_buckets, r->backlog ? "true" : "false", jobs ? jobs : "null",
             (long long)a->tsdb_job_failures, (long long)a->tsdb_jobs_failing);
    free(jobs);
    free(out);
    return s;
}

/* ------------------------------------------------------------------ credential notifications */

static int listen_send(ems_pg_req_t *r, PGconn *conn)
{
    (void)r;
    return PQsendQuery(conn, "LISTEN ems_device_auth") == 1 ? 0 : EMS_EDB;
}

/* Listening (again): changes made while nobody listened were missed, so
 * every gateway drops its whole credential cache and re-checks. */
static void listen_done(ems_pg_req_t *r, int status)
{
    app_t *a = r->data;
    if (status == 0) {
        ems_log_info("listening for credential changes (ems_device_auth); gateways re-check "
                     "every device");
        links_credentials(a, "");
    } else if (status == EMS_EDB) {
        ems_log_warn("LISTEN ems_device_auth failed: %s; revocations reach live connections "
                     "only at the gateway's periodic re-check",
                     r->error);
    }
}

static void pg_listen_up(ems_pg_t *pg, void *ud)
{
    app_t *a = ud;
    a->listen_req.send = listen_send;
    a->listen_req.on_done = listen_done;
    a->listen_req.on_result = NULL;
    a->listen_req.data = a;
    if (ems_pg_submit(pg, &a->listen_req) < 0)
        ems_log_warn("cannot send LISTEN ems_device_auth");
}

static void pg_listen_notify(ems_pg_t *pg, void *ud, const char *channel, const char *payload)
{
    (void)pg;
    app_t *a = ud;
    if (strcmp(channel, "ems_device_auth") != 0)
        return;
    if (!ems_device_id_valid(payload, strlen(payload))) {
        ems_log_warn("ems_device_auth: ignoring a notification with a bad device id");
        return;
    }
    ems_log_info("credential of device %s changed; telling %u gateway link(s)", payload, a->nlinks);
    links_credentials(a, payload);
}

/* ------------------------------------------------------------------ start and stop */

static void shutdown_begin(app_t *a, int code);

static void on_migrated(void *ud, int status, const ems_migrate_result_t *r)
{
    app_t *a = ud;
    a->migrating = false;
    if (status == EMS_ECLOSED) {
        /* Once, then at most once a minute: a server that ends every
         * session must not fill the log (the connection backs off too). */
        uint64_t now = uv_now(a->loop);
        if (a->mig_interrupts++ == 0 || now - a->mig_logged_ms >= 60000) {
            ems_log_warn("migrations: interrupted (%s); again when the database is back "
                         "(%u time(s) so far)",
                         r->error, a->mig_interrupts);
            a->mig_logged_ms = now;
        }
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
    status_broadcast(a);
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
        uv_timer_start(&a->rollup_timer, rollup_cb, a->cfg.rollup_interval_ms, 0);
    else
        uv_timer_start(&a->jobs_timer, jobs_cb, 1000, a->cfg.tsdb_jobs_check_ms);
}

static void pg_ingest_up(ems_pg_t *pg, void *ud)
{
    app_t *a = ud;
    a->db_state = DB_OK;
    a->db_error[0] = '\0';
    a->commits_failing = false; /* a new connection; the next failed batch says otherwise */
    status_broadcast(a);
    /* The server is back: the other connections need not wait out their
     * backoff (device logins would get 503 from the query connection for
     * up to its delay while /healthz already says ok). */
    ems_pg_retry_now(a->pg_query);
    ems_pg_retry_now(a->pg_listen);
    ems_pg_retry_now(a->pg_maint);
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
    (void)pg;
    app_t *a = ud;
    a->db_state = DB_FAILING;
    /* libpq's message may span lines; the first one says it. */
    snprintf(a->db_error, sizeof a->db_error, "%s", why && *why ? why : "connection lost");
    char *nl = strchr(a->db_error, '\n');
    if (nl)
        *nl = '\0';
    status_broadcast(a);
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
    if (a->pg_listen)
        ems_pg_close(a->pg_listen, NULL, NULL);
    if (a->pg_maint)
        ems_pg_close(a->pg_maint, NULL, NULL);
    a->pg_ingest = a->pg_query = a->pg_listen = a->pg_maint = NULL;
    ems_ingest_close(a->ingest, NULL, NULL);
    close_handle((uv_handle_t *)&a->maint_timer);
    close_handle((uv_handle_t *)&a->rollup_timer);
    close_handle((uv_handle_t *)&a->jobs_timer);
    close_handle((uv_handle_t *)&a->shutdown_timer);
    close_handle((uv_handle_t *)&a->status_timer);
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
    uv_timer_stop(&a->jobs_timer);
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

/* ------------------------------------------------------------------ life */

int ems_dbw_new(uv_loop_t *loop, const ems_dbw_config_t *cfg, ems_dbw_t **out)
{
    app_t *a = calloc(1, sizeof *a);
    if (!a) {
        ems_log_error("out of memory");
        return EMS_ENOMEM;
    }
    a->cfg = *cfg;
    if (a->cfg.migrations)
        snprintf(a->dir, sizeof a->dir, "%s", a->cfg.migrations);
    else if (ems_migrate_find_dir(a->dir, sizeof a->dir) < 0) {
        ems_log_error("cannot find the migrations (cloud/db); set --migrations or EMS_DB_DIR");
        free(a);
        return EMS_ECONFIG;
    }

    a->loop = loop;
    uv_timer_init(loop, &a->maint_timer);
    uv_timer_init(loop, &a->shutdown_timer);
    uv_timer_init(loop, &a->rollup_timer);
    uv_timer_init(loop, &a->jobs_timer);
    uv_timer_init(loop, &a->status_timer);
    a->jobs_timer.data = a;
    a->maint_timer.data = a->shutdown_timer.data = a->rollup_timer.data = a;
    a->status_timer.data = a;
    uv_signal_init(loop, &a->sigterm);
    uv_signal_init(loop, &a->sigint);
    a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_init(loop, &a->sighup);
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
        /* jit=off: the planner's cost of a fleet-wide energy query passes
         * jit_above_cost, and compiling it took 2.5 s of a 0.4 s query
         * (docs/energy.md); none of these queries gains from JIT. */
        .options = "-c statement_timeout=30000 -c jit=off",
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
    ems_pg_opts_t lo = {
        .conninfo = a->cfg.dsn,
        .name = "pg listen",
        .app_name = "ems-dbwriter-listen",
        .on_up = pg_listen_up,
        .on_notify = pg_listen_notify,
        .ud = a,
    };
    /* Rollup steps, partitions and retention, TimescaleDB job checks: off
     * the writing connection, so none of them delays a commit. */
    ems_pg_opts_t mo = {
        .conninfo = a->cfg.dsn,
        .name = "pg maint",
        .app_name = "ems-dbwriter-maint",
    };
    ems_query_opts_t qy = {.stats_json = stats_json, .stats_ud = a};
    if (ems_pg_new(loop, &po, &a->pg_ingest) < 0 || ems_pg_new(loop, &qo, &a->pg_query) < 0 ||
        ems_ingest_new(loop, a->pg_ingest, &io, &a->ingest) < 0 ||
        ems_query_new(a->pg_query, &qy, &a->query) < 0) {
        ems_log_error("out of memory");
        return EMS_ENOMEM;
    }

    if (!a->cfg.migrate_only) {
        if (ems_pg_new(loop, &lo, &a->pg_listen) < 0 || ems_pg_new(loop, &mo, &a->pg_maint) < 0) {
            ems_log_error("out of memory");
            return EMS_ENOMEM;
        }
        uv_timer_start(&a->status_timer, status_cb, 1000, 1000);
        uv_pipe_init(loop, &a->server, 0);
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

    *out = a;
    return 0;
}

int ems_dbw_exit_status(const ems_dbw_t *a)
{
    return a->exit_code;
}

void ems_dbw_free(ems_dbw_t *a)
{
    ems_query_free(a->query);
    free(a->status_sent);
    json_decref(a->tsdb_jobs);
    if (!a->cfg.migrate_only)
        unlink(a->cfg.socket_path);
    free(a);
}
