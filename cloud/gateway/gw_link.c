/* gw_link.c: the gateway's link to ems-dbwriter (see gw_link.h). */
#include "gw_link.h"

#include "auth.h"
#include "backoff.h"
#include "error.h"
#include "gw_map.h"
#include "link.h"
#include "log.h"
#include "timefmt.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define HIGH_WATER (4u << 20) /* bytes queued on the socket before we wait for drain */

typedef struct {
    void *owner;
    uint64_t seq;
    bool has_seq;
    char *reject; /* strdup'ed REJECT reason, or NULL */
} rec_t;

typedef struct frame {
    struct frame *next;
    uint64_t link_seq;
    uint8_t *bytes; /* the whole frame, header included */
    size_t len;
    rec_t *recs;    /* telemetry records, NULL for an EVENT */
    unsigned nrec;
} frame_t;

/* One user's share of the query bounds; freed when its last query ends. */
typedef struct {
    unsigned n; /* queries waiting or at the DB writer */
    char name[];
} quser_t;

enum { Q_SYS, Q_USER }; /* the gateway's own lookups; queries for a user */

typedef struct query {
    struct query *prev, *next;   /* every query, oldest first (timeouts) */
    struct query *wprev, *wnext; /* waiting to be sent, per class */
    uint64_t id;
    int64_t deadline_ms;
    gw_link_result_fn fn;
    void *ud;
    quser_t *user; /* NULL for the gateway's own */
    bool sent;
    size_t len;
    uint8_t frame[]; /* the QUERY frame, until it is sent */
} query_t;

typedef struct {
    query_t *head, *tail;
    size_t n;
} qwait_t;

/* One credential lookup (gw_link_lookup), waiting or in a batch. */
typedef struct lookup {
    struct lookup *next;
    int64_t deadline_ms; /* must be sent by then */
    gw_link_result_fn fn;
    void *ud;
    char id[EMS_DEVICE_ID_MAX + 1];
} lookup_t;

/* The lookups of one device_auths query. */
typedef struct {
    gw_link_t *l;
    lookup_t *head;
    unsigned n;
} lbatch_t;

/* The DB writer's last STATUS (docs/protocol.md 5.7). */
typedef struct {
    bool known;
    bool commits_failing; /* connected, but batches do not commit */
    char db[16];
    char error[300];
    bool migrated;
    int64_t last_commit_ms;
    char storage[16];
} dbstate_t;

struct gw_link {
    uv_loop_t *loop;
    gw_link_opts_t o;
    char *path, *hello;
    gw_link_cb_t cb;
    void *ud;

    ems_link_conn_t *conn; /* NULL while down */
    bool ready, freeing;
    ems_backoff_t backoff;
    uv_timer_t retry, flush, qtimer, ltimer;
    int open_handles;
    void (*done)(void *);
    void *done_arg;

    uint64_t next_link_seq, next_query_id;

    /* The batch being built. */
    ems_buf_t open;
    size_t mark;
    uint64_t open_seq;
    rec_t *open_recs;
    unsigned open_n;

    /* Sealed durable frames, oldest first; `unsent` is the first one not
     * yet handed to the current connection. */
    frame_t *head, *tail, *unsent;
    size_t held; /* records + events in frames and in the open batch */

    query_t *qhead, *qtail; /* every query, in the order they were made */
    qwait_t wait[2];        /* not sent yet, per class */
    size_t nqueries, inflight, user_inflight;
    gw_map_t users;         /* name -> quser_t */
    lookup_t *lhead, *ltail; /* credential lookups waiting, oldest first */
    size_t lwaiting, lpending; /* waiting; waiting or in a batch */
    unsigned lbatches;         /* device_auths queries out */
    ems_backoff_t lback;       /* after a failed batch: no batch before lretry_mono */
    int64_t lretry_mono;
    dbstate_t db;
    gw_link_stats_t st;
};

static void connect_now(gw_link_t *l);
static void release(gw_link_t *l);
static void lookup_pump(gw_link_t *l);

bool gw_link_up(const gw_link_t *l) { return l->conn && l->ready; }
size_t gw_link_held(const gw_link_t *l) { return l->held; }
size_t gw_link_capacity(const gw_link_t *l) { return l->o.ring; }
size_t gw_link_pending_queries(const gw_link_t *l) { return l->nqueries; }
size_t gw_link_lookups_pending(const gw_link_t *l) { return l->lpending; }
void gw_link_stats(const gw_link_t *l, gw_link_stats_t *out) { *out = l->st; }

/* ------------------------------------------------------------ sending */

/* Hands sealed frames to the connection while it has room. */
static void pump(gw_link_t *l)
{
    if (!gw_link_up(l))
        return;
    while (l->unsent && ems_link_conn_queued(l->conn) < HIGH_WATER) {
        frame_t *f = l->unsent;
        int rc = ems_link_conn_send_raw(l->conn, f->bytes, f->len);
        if (rc == EMS_ENOSPC)
            return; /* on_drain calls us again */
        if (rc < 0) {
            ems_log_warn("dbwriter link: send failed: %s", ems_strerror(rc));
            ems_link_conn_close(l->conn, rc);
            return;
        }
        l->st.frames_sent++;
        l->st.records_sent += f->nrec;
        l->unsent = f->next;
    }
}

static void push_frame(gw_link_t *l, frame_t *f)
{
    f->next = NULL;
    if (l->tail)
        l->tail->next = f;
    else
        l->head = f;
    l->tail = f;
    if (!l->unsent)
        l->unsent = f;
    pump(l);
}

/* Moves the open batch into a frame of its own. */
static int seal(gw_link_t *l)
{
    if (l->open_n == 0)
        return 0;
    uv_timer_stop(&l->flush);
    int rc = ems_link_telemetry_end(&l->open, l->mark);
    frame_t *f = rc == 0 ? calloc(1, sizeof *f) : NULL;
    if (!f) {
        /* Cannot happen with sane limits; the records are lost to the DB
         * but were never acked, so the edges send them again. */
        ems_log_error("dbwriter link: cannot seal a batch: %s", ems_strerror(rc ? rc : EMS_ENOMEM));
        for (unsigned i = 0; i < l->open_n; i++)
            free(l->open_recs[i].reject);
        l->held -= l->open_n;
        l->open_n = 0;
        ems_buf_clear(&l->open);
        return rc ? rc : EMS_ENOMEM;
    }
    f->link_seq = l->open_seq;
    /* The frame takes the buffer's memory; the batch starts a fresh one. */
    f->bytes = (uint8_t *)ems_buf_steal(&l->open, &f->len);
    f->recs = l->open_recs;
    f->nrec = l->open_n;
    l->open_recs = NULL;
    l->open_n = 0;
    push_frame(l, f);
    return 0;
}

static void flush_cb(uv_timer_t *t)
{
    seal(t->data);
}

void gw_link_flush(gw_link_t *l) { seal(l); }

int gw_link_telemetry(gw_link_t *l, void *owner, const ems_telemetry_t *t, int64_t received_ms)
{
    if (l->freeing)
        return EMS_ECLOSED;
    if (l->held >= l->o.ring) {
        l->st.refused_full++;
        return EMS_ENOSPC;
    }
    if (l->open_n == 0) {
        l->open_recs = malloc(l->o.batch * sizeof *l->open_recs);
        if (!l->open_recs)
            return EMS_ENOMEM;
        int rc = ems_link_telemetry_begin(&l->open, l->next_link_seq, &l->mark);
        if (rc < 0) {
            free(l->open_recs);
            l->open_recs = NULL;
            return rc;
        }
        l->open_seq = l->next_link_seq++;
    }
    int rc = ems_link_telemetry_add(&l->open, l->mark, t, received_ms);
    if (rc < 0) {
        if (l->open_n == 0) {
            ems_buf_clear(&l->open);
            free(l->open_recs);
            l->open_recs = NULL;
        }
        return rc;
    }
    rec_t *r = &l->open_recs[l->open_n++];
    r->owner = owner;
    r->has_seq = t->has_seq;
    r->seq = t->seq;
    r->reject = NULL;
    l->held++;
    if (l->open_n >= l->o.batch)
        seal(l); /* on failure the records were dropped unacked: still 0 */
    if (l->open_n == 1)
        uv_timer_start(&l->flush, flush_cb, l->o.flush_ms, 0);
    return 0;
}

int gw_link_event(gw_link_t *l, const char *json, size_t len)
{
    if (l->freeing)
        return EMS_ECLOSED;
    if (l->held >= l->o.ring) {
        l->st.refused_full++;
        return EMS_ENOSPC;
    }
    seal(l);
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    int rc = ems_link_put_id_json(&b, EMS_LINK_EVENT, l->next_link_seq, json, len);
    frame_t *f = rc == 0 ? calloc(1, sizeof *f) : NULL;
    if (!f) {
        ems_buf_free(&b);
        return rc ? rc : EMS_ENOMEM;
    }
    f->link_seq = l->next_link_seq++;
    f->bytes = (uint8_t *)ems_buf_steal(&b, &f->len);
    l->held++;
    push_frame(l, f);
    return 0;
}

/* ------------------------------------------------------------ receiving */

static void free_frame(frame_t *f)
{
    for (unsigned i = 0; i < f->nrec; i++)
        free(f->recs[i].reject);
    free(f->recs);
    free(f->bytes);
    free(f);
}

static void on_ack(gw_link_t *l, uint64_t upto)
{
    bool any = false;
    while (l->head && l->head->link_seq <= upto) {
        frame_t *f = l->head;
        if (l->unsent == f) {
            /* An ACK for a frame we have not sent on this connection means
             * the writer and we disagree; never trust it. */
            ems_log_error("dbwriter link: ACK %" PRIu64 " covers unsent frame %" PRIu64, upto,
                          f->link_seq);
            ems_link_conn_close(l->conn, EMS_EPROTO);
            break;
        }
        l->head = f->next;
        if (!l->head)
            l->tail = NULL;
        if (f->recs) {
            for (unsigned i = 0; i < f->nrec; i++) {
                rec_t *r = &f->recs[i];
                if (r->reject)
                    l->st.records_rejected++;
                else
                    l->st.records_committed++;
                l->cb.committed(l->ud, r->owner, r->has_seq, r->seq, r->reject);
            }
            l->held -= f->nrec;
        } else {
            l->st.events_committed++;
            l->held--;
        }
        free_frame(f);
        any = true;
    }
    if (any && l->cb.acked)
        l->cb.acked(l->ud);
}

static void on_reject(gw_link_t *l, uint64_t link_seq, uint32_t index, const char *reason,
                      size_t len)
{
    for (frame_t *f = l->head; f && f != l->unsent; f = f->next) {
        if (f->link_seq != link_seq)
            continue;
        ems_log_warn("dbwriter refused record %u of frame %" PRIu64 " for good: %.*s", index,
                     link_seq, (int)len, reason);
        if (f->recs && index < f->nrec && !f->recs[index].reject) {
            char *s = malloc(len + 1);
            if (s) {
                memcpy(s, reason, len);
                s[len] = '\0';
                f->recs[index].reject = s;
            }
        }
        return;
    }
}

static void query_unlink(gw_link_t *l, query_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        l->qhead = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->qtail = q->prev;
    l->nqueries--;
}

static qwait_t *wait_of(gw_link_t *l, const query_t *q)
{
    return &l->wait[q->user ? Q_USER : Q_SYS];
}

static void wait_push(gw_link_t *l, query_t *q)
{
    qwait_t *w = wait_of(l, q);
    q->wnext = NULL;
    q->wprev = w->tail;
    if (w->tail)
        w->tail->wnext = q;
    else
        w->head = q;
    w->tail = q;
    w->n++;
}

static void wait_unlink(gw_link_t *l, query_t *q)
{
    qwait_t *w = wait_of(l, q);
    if (q->wprev)
        q->wprev->wnext = q->wnext;
    else
        w->head = q->wnext;
    if (q->wnext)
        q->wnext->wprev = q->wprev;
    else
        w->tail = q->wprev;
    q->wprev = q->wnext = NULL;
    w->n--;
}

static void user_release(gw_link_t *l, quser_t *u)
{
    if (u && --u->n == 0) {
        gw_map_del(&l->users, u->name);
        free(u);
    }
}

static void pump_queries(gw_link_t *l);

static void query_finish(gw_link_t *l, query_t *q, int status, const char *json, size_t len)
{
    if (q->sent) {
        l->inflight--;
        if (q->user)
            l->user_inflight--;
    } else {
        wait_unlink(l, q);
    }
    query_unlink(l, q);
    user_release(l, q->user);
    if (status < 0)
        l->st.query_errors++;
    q->fn(q->ud, status, json, len);
    free(q);
    pump_queries(l);
}

/* Sends waiting queries while fewer than max_inflight are at the DB
 * writer, which refuses more than it can run at once ("too many queries in
 * progress"); a reconnect storm of devices waits here instead. The
 * gateway's own lookups go first; user queries only while fewer than
 * user_inflight of them are out, so that answers (history can be large)
 * never pile up on the link. */
static void pump_queries(gw_link_t *l)
{
    while (l->inflight < l->o.max_inflight && gw_link_up(l) && !l->freeing) {
        query_t *q = l->wait[Q_SYS].head;
        if (!q && l->user_inflight < l->o.user_inflight)
            q = l->wait[Q_USER].head;
        if (!q)
            return;
        if (ems_link_conn_send_raw(l->conn, q->frame, q->len) < 0)
            return; /* full: the next result or drain retries */
        wait_unlink(l, q);
        q->sent = true;
        l->inflight++;
        if (q->user)
            l->user_inflight++;
    }
}

static void on_result(gw_link_t *l, uint64_t id, int32_t status, const char *json, size_t len)
{
    for (query_t *q = l->qhead; q; q = q->next) {
        if (q->id == id) {
            query_finish(l, q, status, json, len);
            return;
        }
    }
    ems_log_debug("dbwriter link: result for unknown query %" PRIu64 " (timed out?)", id);
}

static void fail_queries(gw_link_t *l, int status)
{
    while (l->qhead)
        query_finish(l, l->qhead, status, "", 0);
}

/* Keeps the DB writer's database state for gw_link_health. */
static void on_status(gw_link_t *l, const char *json, size_t len)
{
    json_t *o = json_loadb(json, len, 0, NULL);
    const char *db = json_string_value(json_object_get(o, "db"));
    const char *mig = json_string_value(json_object_get(o, "migrations"));
    if (!db || !mig) {
        ems_log_warn("dbwriter link: malformed status: %.*s", (int)(len > 200 ? 200 : len), json);
        json_decref(o);
        return;
    }
    const char *commits = json_string_value(json_object_get(o, "commits"));
    dbstate_t n = {.known = true,
                   .migrated = !strcmp(mig, "done"),
                   .commits_failing = commits && !strcmp(commits, "failing")};
    snprintf(n.db, sizeof n.db, "%s", db);
    const char *err = json_string_value(json_object_get(o, "error"));
    snprintf(n.error, sizeof n.error, "%s", err ? err : "");
    const char *stg = json_string_value(json_object_get(o, "storage"));
    snprintf(n.storage, sizeof n.storage, "%s", stg ? stg : "");
    json_t *lc = json_object_get(o, "last_commit_ms");
    n.last_commit_ms = json_is_integer(lc) ? (int64_t)json_integer_value(lc) : 0;
    if (!l->db.known || strcmp(n.db, l->db.db) || strcmp(n.error, l->db.error) ||
        n.migrated != l->db.migrated)
        ems_log(strcmp(n.db, "ok") ? EMS_LOG_WARN : EMS_LOG_INFO,
                "dbwriter reports: database %s%s%s, migrations %s", n.db, n.error[0] ? ": " : "",
                n.error, mig);
    l->db = n;
    json_decref(o);
}

static void conn_on_frame(ems_link_conn_t *c, void *ud, const ems_link_frame_t *f)
{
    gw_link_t *l = ud;
    (void)c;
    uint64_t a;
    uint32_t idx;
    int32_t st;
    const char *s;
    size_t n;
    switch (f->kind) {
    case EMS_LINK_ACK:
        if (ems_link_parse_ack(f, &a) == 0)
            on_ack(l, a);
        break;
    case EMS_LINK_REJECT:
        if (ems_link_parse_reject(f, &a, &idx, &s, &n) == 0)
            on_reject(l, a, idx, s, n);
        break;
    case EMS_LINK_RESULT:
        if (ems_link_parse_result(f, &a, &st, &s, &n) == 0)
            on_result(l, a, st, s, n);
        break;
    case EMS_LINK_STATUS:
        if (ems_link_parse_status(f, &s, &n) == 0)
            on_status(l, s, n);
        break;
    case EMS_LINK_CREDENTIALS: {
        char id[EMS_DEVICE_ID_MAX + 1];
        if (ems_link_parse_credentials(f, id) < 0) {
            ems_log_warn("dbwriter link: malformed credentials frame");
            break;
        }
        l->st.credential_changes++;
        if (l->cb.credentials)
            l->cb.credentials(l->ud, id[0] ? id : NULL);
        break;
    }
    default:
        ems_log_warn("dbwriter link: unexpected %s frame", ems_link_kind_name(f->kind));
        break;
    }
}

static void conn_on_ready(ems_link_conn_t *c, void *ud, const char *info, size_t len)
{
    gw_link_t *l = ud;
    (void)c;
    l->ready = true;
    ems_backoff_reset(&l->backoff);
    ems_log_info("dbwriter link up (%.*s); resending %zu held records/events", (int)len, info,
                 l->held);
    /* Everything not acknowledged goes again, oldest first. */
    l->unsent = l->head;
    pump(l);
    pump_queries(l);
    lookup_pump(l);
    if (l->cb.state)
        l->cb.state(l->ud, true);
    /* Credential changes made while the link was down were not forwarded. */
    if (l->cb.credentials)
        l->cb.credentials(l->ud, NULL);
}

static void conn_on_drain(ems_link_conn_t *c, void *ud)
{
    (void)c;
    pump(ud);
    pump_queries(ud);
}

static void retry_cb(uv_timer_t *t) { connect_now(t->data); }

static void conn_on_close(ems_link_conn_t *c, void *ud, int status)
{
    gw_link_t *l = ud;
    (void)c;
    bool was_up = l->ready;
    l->conn = NULL;
    l->ready = false;
    l->unsent = l->head;
    memset(&l->db, 0, sizeof l->db); /* unknown until the next STATUS */
    fail_queries(l, l->freeing ? EMS_ECLOSED : EMS_EAGAIN);
    if (l->freeing) {
        release(l);
        return;
    }
    uint64_t delay = ems_backoff_next(&l->backoff);
    if (was_up)
        ems_log_warn("dbwriter link down (%s); %zu records/events held; retry in %" PRIu64 " ms",
                     status ? ems_strerror(status) : "closed", l->held, delay);
    else
        ems_log_debug("dbwriter link: connect failed (%s); retry in %" PRIu64 " ms",
                      ems_strerror(status), delay);
    uv_timer_start(&l->retry, retry_cb, delay, 0);
    if (was_up && l->cb.state)
        l->cb.state(l->ud, false);
}

static const ems_link_conn_cb_t conn_cbs = {conn_on_ready, conn_on_frame, conn_on_drain,
                                            conn_on_close};

static void connect_now(gw_link_t *l)
{
    if (l->conn || l->freeing)
        return;
    ems_link_conn_opts_t o = {.name = "dbwriter link", .hello_info = l->hello};
    int rc = ems_link_conn_connect(l->loop, l->path, &o, &conn_cbs, l, &l->conn);
    if (rc < 0) {
        l->conn = NULL;
        uint64_t delay = ems_backoff_next(&l->backoff);
        ems_log_warn("dbwriter link: cannot connect to %s: %s; retry in %" PRIu64 " ms", l->path,
                     ems_strerror(rc), delay);
        uv_timer_start(&l->retry, retry_cb, delay, 0);
        return;
    }
    l->st.reconnects++;
}

/* ------------------------------------------------------------ queries */

static int query_add(gw_link_t *l, quser_t *u, const char *json, size_t len,
                     gw_link_result_fn fn, void *ud)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    int rc = ems_link_put_id_json(&b, EMS_LINK_QUERY, l->next_query_id + 1, json, len);
    query_t *q = rc == 0 ? malloc(sizeof *q + ems_buf_len(&b)) : NULL;
    if (!q) {
        ems_buf_free(&b);
        return rc ? rc : EMS_ENOMEM;
    }
    memset(q, 0, sizeof *q);
    q->id = ++l->next_query_id;
    q->len = ems_buf_len(&b);
    memcpy(q->frame, ems_buf_data(&b), q->len);
    ems_buf_free(&b);
    q->fn = fn;
    q->ud = ud;
    q->user = u;
    if (u)
        u->n++;
    q->deadline_ms = ems_time_mono_ms() + l->o.query_timeout_ms;
    q->prev = l->qtail;
    if (l->qtail)
        l->qtail->next = q;
    else
        l->qhead = q;
    l->qtail = q;
    wait_push(l, q);
    l->nqueries++;
    l->st.queries++;
    pump_queries(l);
    return 0;
}

int gw_link_query(gw_link_t *l, const char *json, size_t len, gw_link_result_fn fn, void *ud)
{
    if (!gw_link_up(l) || l->nqueries >= l->o.max_queries)
        return EMS_EAGAIN;
    return query_add(l, NULL, json, len, fn, ud);
}

int gw_link_query_user(gw_link_t *l, const char *user, const char *json, size_t len,
                       gw_link_result_fn fn, void *ud)
{
    if (!gw_link_up(l) || l->nqueries >= l->o.max_queries)
        return EMS_EAGAIN;
    quser_t *u = gw_map_get(&l->users, user);
    if (u && u->n >= l->o.per_user) {
        l->st.queries_refused_user++;
        return GW_LINK_EUSER;
    }
    if (l->wait[Q_USER].n >= l->o.user_queue) {
        l->st.queries_refused_queue++;
        return EMS_ENOSPC;
    }
    bool fresh = !u;
    if (fresh) {
        size_t n = strlen(user);
        u = calloc(1, sizeof *u + n + 1);
        if (!u)
            return EMS_ENOMEM;
        memcpy(u->name, user, n + 1);
        if (gw_map_put(&l->users, u->name, u) < 0) {
            free(u);
            return EMS_ENOMEM;
        }
    }
    int rc = query_add(l, u, json, len, fn, ud);
    if (rc < 0 && fresh) {
        gw_map_del(&l->users, u->name);
        free(u);
    }
    return rc;
}

/* ------------------------------------------------------------ credential lookups */

/* A reconnect storm brings thousands of upgrades within seconds, each
 * needing its device's credential. One query per device would queue
 * thousands of statements at the DB writer (one at a time on its query
 * connection) and time out; so lookups wait here a few milliseconds and
 * go as one device_auths query per lookup_batch ids. They wait with a
 * bound and a deadline, also while the link is down or a batch failed,
 * instead of failing at once: the link usually comes back within the
 * deadline. */

#define LOOKUP_POLL_MS 50 /* while lookups wait: retry and expire this often */

static void ltimer_cb(uv_timer_t *t);

static void lookup_arm(gw_link_t *l, unsigned ms)
{
    if (!l->freeing && !uv_is_active((uv_handle_t *)&l->ltimer))
        uv_timer_start(&l->ltimer, ltimer_cb, ms, 0);
}

static void lookup_finish(gw_link_t *l, lookup_t *k, int status, const char *json, size_t len)
{
    l->lpending--;
    gw_link_result_fn fn = k->fn;
    void *ud = k->ud;
    free(k);
    fn(ud, status, json, len);
}

/* Fails the waiting lookups past their deadline (oldest first; a batch
 * put back after a failure goes to the front, and is older). */
static void lookup_expire(gw_link_t *l, int64_t now)
{
    while (l->lhead && l->lhead->deadline_ms <= now) {
        lookup_t *k = l->lhead;
        l->lhead = k->next;
        if (!l->lhead)
            l->ltail = NULL;
        l->lwaiting--;
        l->st.lookups_expired++;
        lookup_finish(l, k, EMS_ETIMEDOUT, "", 0);
    }
}

/* Puts a failed batch back in front of the queue, in its order. */
static void lookup_requeue(gw_link_t *l, lookup_t *head)
{
    lookup_t *tail = head;
    size_t n = 1;
    while (tail->next) {
        tail = tail->next;
        n++;
    }
    tail->next = l->lhead;
    if (!l->lhead)
        l->ltail = tail;
    l->lhead = head;
    l->lwaiting += n;
    l->st.lookups_retried += n;
}

static void lbatch_result(void *ud, int status, const char *json, size_t len);

/* Sends waiting lookups as device_auths queries while fewer than
 * lookup_inflight are out. */
static void lookup_pump(gw_link_t *l)
{
    int64_t wait = l->lretry_mono - ems_time_mono_ms();
    if (wait > 0) { /* backing off after a failed batch */
        lookup_arm(l, wait < LOOKUP_POLL_MS ? (unsigned)wait : LOOKUP_POLL_MS);
        return;
    }
    while (l->lhead && l->lbatches < l->o.lookup_inflight && gw_link_up(l) && !l->freeing) {
        lbatch_t *b = calloc(1, sizeof *b);
        size_t cap = 64 + (size_t)l->o.lookup_batch * (EMS_DEVICE_ID_MAX + 3);
        char *q = b ? malloc(cap) : NULL;
        if (!q) {
            free(b);
            return;
        }
        b->l = l;
        size_t n = (size_t)snprintf(q, cap, "{\"op\":\"device_auths\",\"device_ids\":[");
        lookup_t **tail = &b->head;
        while (l->lhead && b->n < l->o.lookup_batch) {
            lookup_t *k = l->lhead;
            l->lhead = k->next;
            l->lwaiting--;
            k->next = NULL;
            *tail = k;
            tail = &k->next;
            /* Ids are checked (ems_device_id_valid): nothing to escape. */
            n += (size_t)snprintf(q + n, cap - n, "%s\"%s\"", b->n ? "," : "", k->id);
            b->n++;
        }
        if (!l->lhead)
            l->ltail = NULL;
        n += (size_t)snprintf(q + n, cap - n, "]}");
        int rc = gw_link_query(l, q, n, lbatch_result, b);
        free(q);
        if (rc < 0) {
            /* max_queries reached: wait for answers (or the poll). */
            lookup_requeue(l, b->head);
            l->st.lookups_retried -= b->n; /* not sent: no retry */
            free(b);
            break;
        }
        l->lbatches++;
        l->st.lookup_batches++;
    }
    if (l->lhead)
        lookup_arm(l, LOOKUP_POLL_MS);
}

/* One answer per lookup of the batch, in the shape of a device_auth
 * answer; ids the database does not have are {"found":false}. */
static void lbatch_answer(gw_link_t *l, lbatch_t *b, json_t *devs)
{
    gw_map_t byid = {0};
    size_t i;
    json_t *d;
    json_array_foreach(devs, i, d) {
        const char *id = json_string_value(json_object_get(d, "device_id"));
        if (id)
            (void)gw_map_put(&byid, id, d);
    }
    for (lookup_t *k = b->head, *next; k; k = next) {
        next = k->next;
        d = gw_map_get(&byid, k->id);
        char *s = NULL;
        if (d) {
            json_object_set_new(d, "found", json_true());
            s = json_dumps(d, JSON_COMPACT);
        }
        if (s)
            lookup_finish(l, k, 0, s, strlen(s));
        else if (d)
            lookup_finish(l, k, EMS_ENOMEM, "", 0);
        else
            lookup_finish(l, k, 0, "{\"found\":false}", 15);
        free(s);
    }
    gw_map_free(&byid);
}

static void lbatch_result(void *ud, int status, const char *json, size_t len)
{
    lbatch_t *b = ud;
    gw_link_t *l = b->l;
    l->lbatches--;
    json_t *o = NULL, *devs = NULL;
    if (status == 0) {
        o = json_loadb(json, len, 0, NULL);
        devs = json_object_get(o, "devices");
        if (!json_is_array(devs)) {
            ems_log_warn("dbwriter link: malformed device_auths answer");
            status = EMS_EPROTO;
        }
    }
    if (status == 0) {
        ems_backoff_reset(&l->lback);
        l->lretry_mono = 0;
        lbatch_answer(l, b, devs);
    } else if (!l->freeing &&
               (status == EMS_EAGAIN || status == EMS_ETIMEDOUT || status == EMS_EDB)) {
        /* The link went down, the DB writer was busy or its database
         * failed: ask again while the lookups' deadlines allow. */
        ems_log_debug("dbwriter link: credential batch of %u failed (%s); retrying", b->n,
                      ems_strerror(status));
        lookup_requeue(l, b->head);
        lookup_expire(l, ems_time_mono_ms());
        /* Backed off with jitter, so a database that is down is not asked
         * again by every new lookup of a storm. */
        l->lretry_mono = ems_time_mono_ms() + (int64_t)ems_backoff_next(&l->lback);
        lookup_arm(l, LOOKUP_POLL_MS);
    } else {
        for (lookup_t *k = b->head, *next; k; k = next) {
            next = k->next;
            lookup_finish(l, k, status, json, len);
        }
    }
    json_decref(o);
    free(b);
    if (status == 0)
        lookup_pump(l);
}

static void ltimer_cb(uv_timer_t *t)
{
    gw_link_t *l = t->data;
    lookup_expire(l, ems_time_mono_ms());
    lookup_pump(l);
}

int gw_link_lookup(gw_link_t *l, const char *device_id, gw_link_result_fn fn, void *ud)
{
    if (l->freeing)
        return EMS_ECLOSED;
    if (!ems_device_id_valid(device_id, strlen(device_id)))
        return EMS_EINVAL;
    if (l->lwaiting >= l->o.lookup_queue) {
        l->st.lookups_refused++;
        return EMS_ENOSPC;
    }
    lookup_t *k = calloc(1, sizeof *k);
    if (!k)
        return EMS_ENOMEM;
    snprintf(k->id, sizeof k->id, "%s", device_id);
    k->fn = fn;
    k->ud = ud;
    k->deadline_ms = ems_time_mono_ms() + l->o.lookup_wait_ms;
    if (l->ltail)
        l->ltail->next = k;
    else
        l->lhead = k;
    l->ltail = k;
    l->lwaiting++;
    l->lpending++;
    l->st.lookups++;
    lookup_arm(l, l->o.lookup_delay_ms);
    return 0;
}

int gw_link_refusal(const gw_link_t *l, int rc, const char *user, char *msg, size_t cap,
                    unsigned *retry_after_s)
{
    if (rc == GW_LINK_EUSER) {
        snprintf(msg, cap,
                 "too many requests in progress for user '%s': at most %u at once "
                 "(query_per_user); retry when one has finished",
                 user, l->o.per_user);
        *retry_after_s = 1;
        return 429;
    }
    if (rc == EMS_ENOSPC) {
        snprintf(msg, cap,
                 "the gateway is busy: %u queries are already waiting for the DB writer "
                 "(query_queue); retry shortly",
                 l->o.user_queue);
        *retry_after_s = 2;
        return 503;
    }
    snprintf(msg, cap, "DB writer unavailable");
    *retry_after_s = 5;
    return 503;
}

int gw_link_health(const gw_link_t *l, char *body, size_t cap)
{
    json_t *o = json_object();
    int code = 503;
    char reason[400] = "";
    if (!gw_link_up(l)) {
        json_object_set_new(o, "dbwriter", json_string("disconnected"));
        snprintf(reason, sizeof reason, "dbwriter link down");
    } else {
        json_object_set_new(o, "dbwriter", json_string("connected"));
        if (!l->db.known) {
            json_object_set_new(o, "database", json_string("unknown"));
            snprintf(reason, sizeof reason,
                     "the DB writer has not reported its database state yet (an older "
                     "ems-dbwriter does not)");
        } else {
            json_object_set_new(o, "database", json_string(l->db.db));
            json_object_set_new(o, "migrations",
                                json_string(l->db.migrated ? "done" : "pending"));
            if (l->db.error[0])
                json_object_set_new(o, "error", json_string(l->db.error));
            if (!strcmp(l->db.db, "failing") && l->db.commits_failing)
                snprintf(reason, sizeof reason, "database refuses commits: %s",
                         l->db.error[0] ? l->db.error : "unknown error");
            else if (!strcmp(l->db.db, "failing"))
                snprintf(reason, sizeof reason, "database unreachable: %s",
                         l->db.error[0] ? l->db.error : "unknown error");
            else if (strcmp(l->db.db, "ok") != 0)
                snprintf(reason, sizeof reason, "database not reached yet (%s)", l->db.db);
            else if (!l->db.migrated)
                snprintf(reason, sizeof reason, "migrations pending");
            else
                code = 200;
            char t[EMS_TIME_STR_MAX];
            json_object_set_new(o, "last_commit",
                                l->db.last_commit_ms > 0 &&
                                        ems_time_format(l->db.last_commit_ms, t, sizeof t) > 0
                                    ? json_string(t)
                                    : json_null());
        }
    }
    json_object_set_new(o, "status", json_string(code == 200 ? "ok" : "degraded"));
    if (code != 200)
        json_object_set_new(o, "reason", json_string(reason));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    snprintf(body, cap, "%s", s ? s : "{\"status\":\"degraded\",\"reason\":\"out of memory\"}");
    free(s);
    return code;
}

static void qtimer_cb(uv_timer_t *t)
{
    gw_link_t *l = t->data;
    int64_t now = ems_time_mono_ms();
    /* Queries are appended in time order (same timeout for all): the head
     * is always the first to be overdue. */
    while (l->qhead && l->qhead->deadline_ms <= now) {
        ems_log_warn("dbwriter link: query %" PRIu64 " timed out", l->qhead->id);
        query_finish(l, l->qhead, EMS_ETIMEDOUT, "", 0);
    }
}

/* ------------------------------------------------------------ life */

/* Our HELLO info with "accepts": the frame kinds this gateway understands
 * beyond version 1's (an older DB writer ignores the member). */
static char *hello_with_accepts(const char *info)
{
    json_t *o = info ? json_loads(info, 0, NULL) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        o = json_pack("{ss}", "name", "ems-gateway");
    }
    json_object_set_new(o, "accepts", json_pack("[ss]", "status", "credentials"));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    char *out = s ? strdup(s) : NULL; /* freed with free(), like the rest */
    free(s);
    return out;
}

int gw_link_new(uv_loop_t *loop, const gw_link_opts_t *o, const gw_link_cb_t *cb, void *ud,
                gw_link_t **out)
{
    if (!o->path || !o->path[0] || o->ring == 0 || o->batch == 0 ||
        o->batch > EMS_LINK_RECORDS_MAX || !cb->committed)
        return EMS_EINVAL;
    gw_link_t *l = calloc(1, sizeof *l);
    if (!l)
        return EMS_ENOMEM;
    ems_buf_init(&l->open, EMS_BUF_UNBOUNDED);
    l->loop = loop;
    l->o = *o;
    if (!l->o.query_timeout_ms)
        l->o.query_timeout_ms = 10000;
    if (!l->o.max_inflight)
        l->o.max_inflight = 64;
    if (!l->o.max_queries)
        l->o.max_queries = 50000;
    if (!l->o.user_inflight)
        l->o.user_inflight = 8;
    if (!l->o.user_queue)
        l->o.user_queue = 256;
    if (!l->o.per_user)
        l->o.per_user = 4;
    if (!l->o.lookup_batch)
        l->o.lookup_batch = 256;
    if (!l->o.lookup_queue)
        l->o.lookup_queue = 20000;
    if (!l->o.lookup_wait_ms)
        l->o.lookup_wait_ms = 8000;
    if (!l->o.lookup_delay_ms)
        l->o.lookup_delay_ms = 2;
    if (!l->o.lookup_inflight)
        l->o.lookup_inflight = 4;
    l->path = strdup(o->path);
    l->hello = hello_with_accepts(o->hello_info);
    if (!l->path || !l->hello) {
        free(l->path);
        free(l->hello);
        free(l);
        return EMS_ENOMEM;
    }
    l->cb = *cb;
    l->ud = ud;
    l->next_link_seq = 1;
    uint64_t seed;
    if (ems_auth_random(&seed, sizeof seed))
        seed = (uint64_t)ems_time_now_ms();
    ems_backoff_init(&l->backoff, 100, 5000, seed);
    ems_backoff_init(&l->lback, LOOKUP_POLL_MS, 1000, seed ^ 0x9e3779b97f4a7c15ull);
    uv_timer_init(loop, &l->retry);
    uv_timer_init(loop, &l->flush);
    uv_timer_init(loop, &l->qtimer);
    uv_timer_init(loop, &l->ltimer);
    l->retry.data = l->flush.data = l->qtimer.data = l->ltimer.data = l;
    l->open_handles = 4;
    uv_timer_start(&l->qtimer, qtimer_cb, 500, 500);
    connect_now(l);
    *out = l;
    return 0;
}

static void release(gw_link_t *l)
{
    if (--l->open_handles > 0)
        return;
    void (*done)(void *) = l->done;
    void *arg = l->done_arg;
    for (frame_t *f = l->head, *n; f; f = n) {
        n = f->next;
        free_frame(f);
    }
    for (unsigned i = 0; i < l->open_n; i++)
        free(l->open_recs[i].reject);
    free(l->open_recs);
    ems_buf_free(&l->open);
    free(l->path);
    free(l->hello);
    gw_map_free(&l->users);
    free(l);
    if (done)
        done(arg);
}

static void conn_gone_cb(uv_handle_t *h) { release(h->data); }

void gw_link_free(gw_link_t *l, void (*done)(void *arg), void *arg)
{
    if (!l || l->freeing)
        return;
    l->freeing = true;
    l->done = done;
    l->done_arg = arg;
    fail_queries(l, EMS_ECLOSED); /* batches in flight fail their lookups */
    while (l->lhead) {
        lookup_t *k = l->lhead;
        l->lhead = k->next;
        l->lwaiting--;
        lookup_finish(l, k, EMS_ECLOSED, "", 0);
    }
    l->ltail = NULL;
    if (l->conn) {
        /* The connection's on_close runs later; it only clears l->conn and
         * must find the link alive, so we count it as one more handle. */
        l->open_handles++;
        ems_link_conn_set_data(l->conn, l);
        ems_link_conn_close(l->conn, 0);
    }
    uv_close((uv_handle_t *)&l->retry, conn_gone_cb);
    uv_close((uv_handle_t *)&l->flush, conn_gone_cb);
    uv_close((uv_handle_t *)&l->qtimer, conn_gone_cb);
    uv_close((uv_handle_t *)&l->ltimer, conn_gone_cb);
}
