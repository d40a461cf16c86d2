/* pg.c: the asynchronous PostgreSQL connection (see pg.h). */
#include "pg.h"

#include "error.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

typedef enum {
    PG_DOWN,       /* waiting for the reconnect timer */
    PG_CONNECTING, /* PQconnectPoll in progress */
    PG_UP,
    PG_CLOSED,     /* ems_pg_close called */
} pg_state_t;

/* A poll handle lives on the heap because libpq may switch sockets during
 * connect: the old handle is closed (freed in its close callback) and a new
 * one made for the new fd. */
typedef struct {
    uv_poll_t h;
    ems_pg_t *pg;
} pg_poll_t;

struct ems_pg {
    uv_loop_t *loop;
    uv_timer_t timer; /* reconnect backoff */
    pg_poll_t *poll;
    int fd;
    int events; /* UV_READABLE / UV_WRITABLE currently polled */
    PGconn *conn;
    pg_state_t state;

    ems_pg_req_t *head, *tail; /* FIFO; head is running when `running` */
    bool running;
    unsigned syncs_seen; /* pipeline request: Sync results so far */
    bool got_error;
    bool in_callback;   /* a user callback is on the stack */

    char *conninfo, *name, *app_name, *options;
    unsigned backoff_ms, backoff_min, backoff_max;
    uint64_t connects;
    uint64_t up_since;     /* uv_now of the last successful connect */
    /* The repeated-failure log: the last message logged in full, and when
     * a line about it was last written. */
    char last_err[256];
    unsigned failures;     /* consecutive failed attempts (any message) */
    bool quiet;            /* in a series of identical failures */
    uint64_t err_logged_ms;
    void (*on_up)(ems_pg_t *, void *);
    void (*on_down)(ems_pg_t *, void *, const char *);
    void (*on_notify)(ems_pg_t *, void *, const char *, const char *);
    void *ud;

    void (*on_closed)(void *);
    void *closed_ud;
    int open_handles; /* timer + poll handles not yet closed */
};

static void pg_connect_start(ems_pg_t *pg);
static void pg_start_next(ems_pg_t *pg);
static void pg_io(ems_pg_t *pg, int events);

/* One timer serves two purposes that never overlap: the reconnect backoff
 * while down, and starting a request submitted from inside a callback
 * while up. */
static void pg_timer_cb(uv_timer_t *t)
{
    ems_pg_t *pg = t->data;
    if (pg->state == PG_DOWN)
        pg_connect_start(pg);
    else if (pg->state == PG_UP)
        pg_start_next(pg);
}

/* ------------------------------------------------------------------ handles */

static void pg_maybe_free(ems_pg_t *pg)
{
    if (pg->state != PG_CLOSED || pg->open_handles > 0 || pg->in_callback)
        return;
    if (pg->on_closed)
        pg->on_closed(pg->closed_ud);
    free(pg->conninfo);
    free(pg->name);
    free(pg->app_name);
    free(pg->options);
    free(pg);
}

static void pg_handle_closed(uv_handle_t *h)
{
    ems_pg_t *pg = h->data;
    if (h != (uv_handle_t *)&pg->timer)
        free((pg_poll_t *)(void *)h); /* the handle is the first member */
    pg->open_handles--;
    pg_maybe_free(pg);
}

/* Stops watching the current socket. Must run before PQfinish/PQreset close
 * the fd: epoll must not hold a closed descriptor. */
static void pg_poll_drop(ems_pg_t *pg)
{
    if (!pg->poll)
        return;
    uv_poll_stop(&pg->poll->h);
    uv_close((uv_handle_t *)&pg->poll->h, pg_handle_closed);
    pg->poll = NULL;
    pg->fd = -1;
    pg->events = 0;
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    pg_poll_t *p = (pg_poll_t *)h;
    ems_pg_t *pg = p->pg;
    if (pg->poll != p)
        return; /* a handle being replaced */
    if (status < 0) {
        /* EPOLLERR (e.g. ECONNRESET from a backend that died with our
         * pipeline unread): libuv has stopped this handle and says so only
         * once. libpq may still read the server's last message without
         * error, so forget the armed events: the next pg_poll_set starts
         * polling again and the error or EOF shows up then. */
        pg->events = 0;
        events = UV_READABLE | UV_WRITABLE; /* let libpq find out what is wrong */
    }
    pg_io(pg, events);
}

/* Watches `fd` for `events`, creating a new handle if the fd changed. */
static int pg_poll_set(ems_pg_t *pg, int fd, int events)
{
    if (pg->poll && pg->fd != fd)
        pg_poll_drop(pg);
    if (!pg->poll) {
        pg_poll_t *p = calloc(1, sizeof *p);
        if (!p)
            return EMS_ENOMEM;
        int rc = uv_poll_init(pg->loop, &p->h, fd);
        if (rc < 0) {
            free(p);
            return rc;
        }
        p->h.data = pg;
        p->pg = pg;
        pg->poll = p;
        pg->fd = fd;
        pg->open_handles++;
        pg->events = 0;
    }
    if (pg->events != events) {
        int rc = uv_poll_start(&pg->poll->h, events, poll_cb);
        if (rc < 0)
            return rc;
        pg->events = events;
    }
    return 0;
}

/* ------------------------------------------------------------------ requests */

/* Ends the running request (the head) and calls its on_done. */
static void pg_finish_head(ems_pg_t *pg, int status)
{
    ems_pg_req_t *r = pg->head;
    pg->head = r->next;
    if (!pg->head)
        pg->tail = NULL;
    r->next = NULL;
    pg->running = false;
    pg->syncs_seen = 0;
    pg->got_error = false;
    bool outer = !pg->in_callback;
    pg->in_callback = true;
    r->on_done(r, status);
    if (outer)
        pg->in_callback = false;
}

/* Fails every request with EMS_ECLOSED (connection lost or closing). */
static void pg_fail_all(ems_pg_t *pg)
{
    while (pg->head) {
        ems_pg_req_t *r = pg->head;
        if (!pg->got_error || !pg->running) {
            r->sqlstate[0] = '\0';
            snprintf(r->error, sizeof r->error, "connection lost");
        }
        pg_finish_head(pg, EMS_ECLOSED);
    }
}

/* A connection that stayed up this long was healthy: after losing it the
 * backoff starts again from the minimum. One that drops sooner (a server
 * that accepts the login and then closes, e.g. a FATAL in the first
 * statement) keeps backing off, so it is never retried in a tight loop. */
#define PG_STABLE_MS 10000u
/* A failure that repeats the previous message is summed up at most this
 * often ("still failing: N attempts"). */
#define PG_REPEAT_LOG_MS 60000u

/* Logs a failure: a new message in full, the same message again only as a
 * count, once a minute. */
static void pg_log_failure(ems_pg_t *pg, bool was_up, bool stable, const char *msg, unsigned wait)
{
    uint64_t now = uv_now(pg->loop);
    bool same = pg->failures > 0 && !stable && !strcmp(msg, pg->last_err);
    pg->failures = stable ? 1 : pg->failures + 1;
    pg->quiet = same;
    if (!same) {
        snprintf(pg->last_err, sizeof pg->last_err, "%s", msg);
        pg->err_logged_ms = now;
        if (was_up)
            ems_log_warn("%s: connection lost: %s (reconnecting in %u ms)", pg->name, msg, wait);
        else
            ems_log_warn("%s: cannot connect: %s (retrying in %u ms)", pg->name, msg, wait);
        return;
    }
    if (now - pg->err_logged_ms >= PG_REPEAT_LOG_MS) {
        ems_log_warn("%s: still failing: %u attempts, last: %s (next in %u ms)", pg->name,
                     pg->failures, msg, wait);
        pg->err_logged_ms = now;
    } else {
        ems_log_debug("%s: %s again (%u attempts; next in %u ms)", pg->name, msg, pg->failures, wait);
    }
}

static void pg_go_down(ems_pg_t *pg, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s", why && *why ? why : "connection lost");
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    /* libpq's messages span lines ("FATAL: ...\nHINT: ..."): one line. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    pg_poll_drop(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    bool was_up = pg->state == PG_UP;
    bool stable = was_up && uv_now(pg->loop) - pg->up_since >= PG_STABLE_MS;
    if (stable)
        pg->backoff_ms = pg->backoff_min;
    if (pg->state != PG_CLOSED)
        pg->state = PG_DOWN;
    /* Exponential backoff with jitter (+-20%), so that restarts of several
     * writers do not hammer a recovering server in step. */
    unsigned jitter = pg->backoff_ms / 5;
    unsigned wait = pg->backoff_ms - jitter + (jitter ? (unsigned)rand() % (2 * jitter + 1) : 0);
    if (pg->state != PG_CLOSED)
        pg_log_failure(pg, was_up, stable, msg, wait);
    pg->in_callback = true;
    pg_fail_all(pg);
    if (pg->on_down && pg->state != PG_CLOSED)
        pg->on_down(pg, pg->ud, msg);
    pg->in_callback = false;
    if (pg->state == PG_CLOSED) {
        pg_maybe_free(pg);
        return;
    }
    uv_timer_start(&pg->timer, pg_timer_cb, wait, 0);
    pg->backoff_ms = pg->backoff_ms * 2 > pg->backoff_max ? pg->backoff_max : pg->backoff_ms * 2;
}

/* Records the first error of the running request. */
static void pg_note_error(ems_pg_t *pg, const PGresult *res, const char *fallback)
{
    ems_pg_req_t *r = pg->head;
    if (pg->got_error)
        return;
    pg->got_error = true;
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", st ? st : "");
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    snprintf(r->error, sizeof r->error, "%s", m && *m ? m : fallback);
    size_t n = strlen(r->error);
    while (n && (r->error[n - 1] == '\n' || r->error[n - 1] == ' '))
        r->error[--n] = '\0';
}

/* Takes every result libpq has complete. Returns false if the connection
 * broke (the caller stops then). */
static bool pg_drain(ems_pg_t *pg)
{
    int nulls = 0;
    while (pg->running && pg->conn && !PQisBusy(pg->conn)) {
        PGresult *res = PQgetResult(pg->conn);
        ems_pg_req_t *r = pg->head;
        if (!res) {
            if (!r->pipeline) {
                pg_finish_head(pg, pg->got_error ? EMS_EDB : 0);
                return true;
            }
            /* Pipeline: one NULL ends the results of each statement. Two in
             * a row mean libpq has nothing pending although the Sync result
             * never came: treat the connection as broken, never spin. */
            if (++nulls > 1 || PQstatus(pg->conn) == CONNECTION_BAD)
                return false;
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED || st == PGRES_BAD_RESPONSE ||
            st == PGRES_NONFATAL_ERROR)
            pg_note_error(pg, res, st == PGRES_PIPELINE_ABORTED ? "aborted by an earlier error"
                                                                 : "statement failed");
        if (r->on_result) {
            bool outer = !pg->in_callback;
            pg->in_callback = true;
            r->on_result(r, res);
            if (outer)
                pg->in_callback = false;
        }
        PQclear(res);
        if (pg->state != PG_UP)
            return false;
        if (st == PGRES_PIPELINE_SYNC && ++pg->syncs_seen >= r->syncs) {
            /* The last Sync committed (or rolled back) its transaction. */
            if (PQexitPipelineMode(pg->conn) != 1)
                ems_log_debug("%s: still in pipeline mode: %s", pg->name,
                              PQerrorMessage(pg->conn));
            pg_finish_head(pg, pg->got_error ? EMS_EDB : 0);
            return true;
        }
    }
    return pg->conn && PQstatus(pg->conn) != CONNECTION_BAD;
}

/* Flushes output; polls for writability while libpq still holds data. */
static bool pg_flush(ems_pg_t *pg)
{
    int f = PQflush(pg->conn);
    if (f < 0)
        return false;
    return pg_poll_set(pg, PQsocket(pg->conn), UV_READABLE | (f == 1 ? UV_WRITABLE : 0)) == 0;
}

static void pg_start_next(ems_pg_t *pg)
{
    while (pg->state == PG_UP && !pg->running && pg->head && !pg->in_callback) {
        ems_pg_req_t *r = pg->head;
        r->sqlstate[0] = '\0';
        r->error[0] = '\0';
        pg->running = true;
        pg->got_error = false;
        pg->syncs_seen = 0;
        r->syncs = 0;
        if (r->pipeline && PQpipelineStatus(pg->conn) == PQ_PIPELINE_OFF &&
            PQenterPipelineMode(pg->conn) != 1) {
            pg_go_down(pg, PQerrorMessage(pg->conn));
            return;
        }
        int rc = r->send(r, pg->conn);
        if (rc == 0 && r->pipeline && r->syncs == 0)
            rc = EMS_EINVAL; /* a pipeline request without a Sync never ends */
        if (rc < 0 || !pg_flush(pg)) {
            pg_go_down(pg, PQerrorMessage(pg->conn));
            return;
        }
    }
}

/* Hands out the notifications libpq has collected (PQconsumeInput and
 * PQgetResult gather them; nothing else does). */
static void pg_notifies(ems_pg_t *pg)
{
    PGnotify *n;
    while (pg->state == PG_UP && pg->conn && (n = PQnotifies(pg->conn)) != NULL) {
        if (pg->on_notify) {
            bool outer = !pg->in_callback;
            pg->in_callback = true;
            pg->on_notify(pg, pg->ud, n->relname, n->extra ? n->extra : "");
            if (outer)
                pg->in_callback = false;
        }
        PQfreemem(n);
    }
}

/* Socket activity while connected. */
static void pg_io_up(ems_pg_t *pg, int events)
{
    if ((events & UV_WRITABLE) || (events & UV_READABLE)) {
        if ((events & UV_READABLE) && PQconsumeInput(pg->conn) != 1) {
            pg_go_down(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (!pg_flush(pg)) {
            pg_go_down(pg, PQerrorMessage(pg->conn));
            return;
        }
    }
    /* Notices and notifications are consumed here too; results only matter
     * while a request runs. */
    if (!pg_drain(pg)) {
        if (pg->state == PG_UP)
            pg_go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    if (!pg->running && PQstatus(pg->conn) == CONNECTION_BAD) {
        pg_go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    pg_notifies(pg);
    if (pg->state != PG_UP)
        return;
    pg_start_next(pg);
}

static void pg_notice(void *arg, const char *msg)
{
    ems_pg_t *pg = arg;
    ems_log_debug("%s: %s", pg->name, msg);
}

/* One step of the non-blocking connect. */
static void pg_connect_step(ems_pg_t *pg)
{
    PostgresPollingStatusType st = PQconnectPoll(pg->conn);
    int fd = PQsocket(pg->conn); /* may differ after every step */
    switch (st) {
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (fd < 0 || pg_poll_set(pg, fd, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE) < 0)
            pg_go_down(pg, "no socket while connecting");
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        pg_go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    if (PQsetnonblocking(pg->conn, 1) != 0 || pg_poll_set(pg, fd, UV_READABLE) < 0) {
        pg_go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    PQsetNoticeProcessor(pg->conn, pg_notice, pg);
    pg->state = PG_UP;
    pg->up_since = uv_now(pg->loop);
    /* The backoff is not reset here but when a connection that stayed up
     * is lost (pg_go_down): a server that closes every new session at
     * once must not be retried every 100 ms. */
    if (pg->connects++ == 0)
        ems_log_info("%s: connected (server %d)", pg->name, PQserverVersion(pg->conn));
    else if (pg->quiet)
        ems_log_debug("%s: reconnected (%u failed attempts so far)", pg->name, pg->failures);
    else if (pg->failures > 1)
        ems_log_info("%s: reconnected after %u failed attempts", pg->name, pg->failures);
    else
        ems_log_info("%s: reconnected", pg->name);
    if (pg->on_up) {
        pg->in_callback = true;
        pg->on_up(pg, pg->ud);
        pg->in_callback = false;
    }
    if (pg->state == PG_CLOSED) {
        pg_maybe_free(pg);
        return;
    }
    pg_start_next(pg);
}

static void pg_io(ems_pg_t *pg, int events)
{
    if (pg->state == PG_CONNECTING)
        pg_connect_step(pg);
    else if (pg->state == PG_UP)
        pg_io_up(pg, events);
}

static void pg_connect_start(ems_pg_t *pg)
{
    if (pg->state == PG_CLOSED)
        return;
    const char *keys[5], *vals[5];
    int n = 0;
    if (pg->conninfo && *pg->conninfo) {
        keys[n] = "dbname";
        vals[n++] = pg->conninfo;
    }
    keys[n] = "application_name";
    vals[n++] = pg->app_name;
    if (pg->options) {
        keys[n] = "options";
        vals[n++] = pg->options;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    pg->conn = PQconnectStartParams(keys, vals, 1);
    pg->state = PG_CONNECTING;
    if (!pg->conn) {
        pg_go_down(pg, "out of memory");
        return;
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        pg_go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    /* The first PQconnectPoll call is made as if the socket were writable
     * (libpq's documented start). */
    pg_connect_step(pg);
}

/* ------------------------------------------------------------------ public */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int ems_pg_new(uv_loop_t *loop, const ems_pg_opts_t *o, ems_pg_t **out)
{
    ems_pg_t *pg = calloc(1, sizeof *pg);
    if (!pg)
        return EMS_ENOMEM;
    pg->loop = loop;
    pg->fd = -1;
    pg->conninfo = dup_or_null(o->conninfo);
    pg->name = strdup(o->name ? o->name : "pg");
    pg->app_name = strdup(o->app_name ? o->app_name : "ems");
    pg->options = dup_or_null(o->options);
    if (!pg->name || !pg->app_name || (o->conninfo && !pg->conninfo) ||
        (o->options && !pg->options)) {
        free(pg->conninfo);
        free(pg->name);
        free(pg->app_name);
        free(pg->options);
        free(pg);
        return EMS_ENOMEM;
    }
    pg->backoff_min = o->backoff_min_ms ? o->backoff_min_ms : 100;
    pg->backoff_max = o->backoff_max_ms ? o->backoff_max_ms : 30000;
    pg->backoff_ms = pg->backoff_min;
    pg->on_up = o->on_up;
    pg->on_down = o->on_down;
    pg->on_notify = o->on_notify;
    pg->ud = o->ud;
    uv_timer_init(loop, &pg->timer);
    pg->timer.data = pg;
    pg->open_handles = 1;
    pg->state = PG_DOWN;
    *out = pg;
    /* Connect from the loop, so that on_up/on_down never run inside new. */
    uv_timer_start(&pg->timer, pg_timer_cb, 0, 0);
    return 0;
}

int ems_pg_submit(ems_pg_t *pg, ems_pg_req_t *r)
{
    if (pg->state == PG_CLOSED)
        return EMS_ECLOSED;
    if (pg->state != PG_UP)
        return EMS_EAGAIN;
    r->next = NULL;
    if (pg->tail)
        pg->tail->next = r;
    else
        pg->head = r;
    pg->tail = r;
    if (!pg->in_callback)
        pg_start_next(pg);
    else if (!pg->running)
        /* From inside a callback: start from the loop, so that callbacks
         * never nest (a timer of 0 ms runs in this loop iteration's end). */
        uv_timer_start(&pg->timer, pg_timer_cb, 0, 0);
    return 0;
}

void ems_pg_retry_now(ems_pg_t *pg)
{
    if (pg && pg->state == PG_DOWN && uv_is_active((uv_handle_t *)&pg->timer))
        uv_timer_start(&pg->timer, pg_timer_cb, 0, 0);
}

bool ems_pg_is_up(const ems_pg_t *pg)
{
    return pg->state == PG_UP;
}

bool ems_pg_busy(const ems_pg_t *pg)
{
    return pg->head != NULL;
}

uint64_t ems_pg_reconnects(const ems_pg_t *pg)
{
    return pg->connects > 0 ? pg->connects - 1 : 0;
}

void ems_pg_close(ems_pg_t *pg, void (*on_closed)(void *ud), void *ud)
{
    if (pg->state == PG_CLOSED)
        return;
    pg->state = PG_CLOSED;
    pg->on_closed = on_closed;
    pg->closed_ud = ud;
    uv_timer_stop(&pg->timer);
    uv_close((uv_handle_t *)&pg->timer, pg_handle_closed);
    pg_poll_drop(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    bool outer = !pg->in_callback;
    pg->in_callback = true;
    pg_fail_all(pg);
    if (outer)
        pg->in_callback = false;
}

bool ems_pg_sqlstate_transient(const char *s)
{
    if (!s || strlen(s) != 5)
        return true; /* no SQLSTATE: a client-side or connection problem */
    if (!strncmp(s, "22", 2) || !strncmp(s, "23", 2))
        return false; /* data exception, integrity constraint violation */
    if (!strcmp(s, "P0001"))
        return false; /* raise_exception from our own functions: bad input */
    return true;
}

/* ------------------------------------------------------------------ binary arrays */

#define ARR_HEAD 20u

static void arr_need(ems_pg_array_t *a, size_t n)
{
    if (a->error || n <= a->cap - a->len)
        return;
    size_t cap = a->cap ? a->cap : 1024;
    while (cap - a->len < n)
        cap *= 2;
    uint8_t *p = realloc(a->data, cap);
    if (!p) {
        a->error = EMS_ENOMEM;
        return;
    }
    a->data = p;
    a->cap = cap;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void arr_elem(ems_pg_array_t *a, const void *p, uint32_t n)
{
    arr_need(a, 4 + (size_t)n);
    if (a->error)
        return;
    put_be32(a->data + a->len, n);
    memcpy(a->data + a->len + 4, p, n);
    a->len += 4 + (size_t)n;
    a->count++;
}

void ems_pg_array_init(ems_pg_array_t *a, uint32_t elem_oid)
{
    memset(a, 0, sizeof *a);
    ems_pg_array_reset(a, elem_oid);
}

void ems_pg_array_reset(ems_pg_array_t *a, uint32_t elem_oid)
{
    a->len = 0;
    a->count = 0;
    a->has_null = false;
    a->error = 0;
    a->elem_oid = elem_oid;
    arr_need(a, ARR_HEAD);
    if (!a->error)
        a->len = ARR_HEAD;
}

void ems_pg_array_free(ems_pg_array_t *a)
{
    free(a->data);
    memset(a, 0, sizeof *a);
}

void ems_pg_array_null(ems_pg_array_t *a)
{
    arr_need(a, 4);
    if (a->error)
        return;
    put_be32(a->data + a->len, 0xffffffffu);
    a->len += 4;
    a->count++;
    a->has_null = true;
}

void ems_pg_array_bytes(ems_pg_array_t *a, const void *p, uint32_t n)
{
    arr_elem(a, p, n);
}

void ems_pg_array_i16(ems_pg_array_t *a, int16_t v)
{
    uint8_t b[2] = {(uint8_t)((uint16_t)v >> 8), (uint8_t)v};
    arr_elem(a, b, 2);
}

void ems_pg_array_i32(ems_pg_array_t *a, int32_t v)
{
    uint8_t b[4];
    put_be32(b, (uint32_t)v);
    arr_elem(a, b, 4);
}

void ems_pg_array_i64(ems_pg_array_t *a, int64_t v)
{
    uint8_t b[8];
    put_be32(b, (uint32_t)((uint64_t)v >> 32));
    put_be32(b + 4, (uint32_t)v);
    arr_elem(a, b, 8);
}

void ems_pg_array_f32(ems_pg_array_t *a, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    uint8_t b[4];
    put_be32(b, u);
    arr_elem(a, b, 4);
}

void ems_pg_array_bool(ems_pg_array_t *a, bool v)
{
    uint8_t b = v ? 1 : 0;
    arr_elem(a, &b, 1);
}

/* PostgreSQL's timestamp epoch is 2000-01-01 UTC, in microseconds. */
#define PG_EPOCH_MS 946684800000LL

void ems_pg_array_ts_ms(ems_pg_array_t *a, int64_t unix_ms)
{
    ems_pg_array_i64(a, (unix_ms - PG_EPOCH_MS) * 1000);
}

int ems_pg_array_finish(ems_pg_array_t *a)
{
    if (a->error)
        return a->error;
    uint8_t *h = a->data;
    if (a->count == 0) {
        /* An empty array has no dimensions. */
        put_be32(h, 0);
        put_be32(h + 4, 0);
        put_be32(h + 8, a->elem_oid);
        a->len = 12;
        return 0;
    }
    put_be32(h, 1); /* ndim */
    put_be32(h + 4, a->has_null ? 1 : 0);
    put_be32(h + 8, a->elem_oid);
    put_be32(h + 12, a->count);
    put_be32(h + 16, 1); /* lower bound */
    return 0;
}
