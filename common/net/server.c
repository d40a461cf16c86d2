/* server.c: HTTP/1.1 listener that hands requests to a policy handler and
 * upgrades connections to WebSocket (see server.h).
 *
 * Each accepted connection gets an ems_server_req_t, which is both the HTTP
 * connection state and "the request being handled" (one at a time). It is
 * reference counted: one reference while the connection speaks HTTP, one
 * while a request waits for its answer, and one while our own code runs a
 * handler. So a handler may answer later, the client may vanish meanwhile,
 * and an upgrade may hand the connection away in the middle of parsing,
 * all without a dangling pointer.
 *
 * The list of HTTP connections is kept in accept order (oldest first), so
 * the oldest idle unauthenticated connection is found at once when the
 * unauthenticated share is full. Per-address counts live in a small
 * open-addressing table keyed by the address (IPv6 by its /64).
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

#define SERVER_DEFAULT_MAX_CONN 10000
#define SERVER_DEFAULT_HANDSHAKE_MS 10000
#define SERVER_DEFAULT_BACKLOG_AGE_MS 7500 /* see backlog_max_age_ms */
#define SERVER_DEFAULT_KEEPALIVE_MS 30000
#define SERVER_CLOSE_MS 2000
#define SERVER_DEFAULT_OUT_PAUSE (64u << 10)
#define SERVER_DEFAULT_OUT_BUDGET ((size_t)256 << 20)
#define SERVER_DEFAULT_HS_PCT 50
#define SERVER_DEFAULT_HS_BURST_MS 20
#define SERVER_LOG_EVERY_MS 10000
#define SERVER_EVICT_SCAN 64 /* victims looked at before refusing the newcomer */
#define SERVER_HS_COST_NS 5000000ull /* first guess of one handshake's CPU (mbedTLS, P-256) */
#define SERVER_FRESH_MS 1000 /* a silent new connection counts as a coming handshake this long */

typedef struct {
    uint8_t key[16];
    uint32_t count; /* 0: free slot */
} server_addr_t;

struct ems_server_req {
    ems_server_t *srv;
    ems_conn_t *conn; /* NULL once closed or upgraded */
    ems_http_parser_t *parser;
    ems_buf_t stash; /* received bytes not parsed yet */
    int refs;
    int pending;    /* a request waits for respond/upgrade */
    int in_handler; /* hc_process is running */
    int kick;       /* the timer means "parse the stash", not a deadline */
    int out_paused; /* not read or parsed until the output queue drains */
    int hs_waiting; /* in the handshake budget's queue */
    int hs_steps;   /* handshake steps run so far */
    int fresh;      /* in the fresh list: its next handshake bytes are due */
    uint64_t accepted_ms; /* or the time of its last handshake step */
    uint8_t addr[16];
    int has_addr; /* counted in the per-address table */
    struct ems_server_req *prev, *next;
    struct ems_server_req *hs_prev, *hs_next; /* handshake budget queue */
    struct ems_server_req *f_prev, *f_next;   /* fresh list, oldest first */
};

struct ems_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    ems_tls_config_t *tls;
    ems_server_handler_fn handler;
    void *user;
    ems_http_limits_t limits;
    ems_conn_options_t conn_opts;
    unsigned max_conn, handshake_ms, keepalive_ms;
    uint16_t port;
    size_t n_conns; /* live ems_conn_t from this listener */
    size_t n_reqs;  /* allocated ems_server_req_t */
    ems_server_stats_t stats;
    char headers[EMS_SERVER_MAX_HEADERS + 1]; /* added to every response */
    ems_server_req_t *reqs, *reqs_tail;       /* those still speaking HTTP, oldest first */
    size_t n_unauth;                          /* length of that list */
    unsigned max_unauth, max_per_addr;
    server_addr_t *addrs; /* per-address counts of unauthenticated connections */
    size_t addrs_cap, addrs_used;
    size_t out_total, out_pause, out_budget;
    /* Handshake budget: nanoseconds of handshake work allowed now. */
    uv_timer_t hs_timer;
    ems_conn_gate_t gate;
    int64_t hs_tokens, hs_burst;
    uint64_t hs_last;
    unsigned hs_pct;
    /* Waiting handshakes: first those already begun (oldest first), then
     * new ones in arrival order; hs_cont is the last of the begun ones. */
    ems_server_req_t *hs_head, *hs_tail, *hs_cont;
    size_t hs_count;
    /* Admission (server.h): accepting pauses while the handshakes queued
     * would take longer than admit_ns at the budget. */
    uv_timer_t admit_timer;
    ems_server_req_t *fresh_head, *fresh_tail;
    size_t n_fresh;
    uint64_t admit_ns, hs_cost_ns; /* target; estimated CPU of one handshake */
    uint64_t hs_ns_total, hs_ns_seen, hs_done_seen; /* for the estimate */
    int accept_held;               /* libuv holds one accepted socket for us */
    uint64_t log_due;
    ems_server_stats_t logged; /* counters at the last limits log line */
    int handles; /* listener and hs_timer not yet closed */
    int stopping;
    void (*on_stopped)(void *);
    void *stop_arg;
};

static void hc_process(ems_server_req_t *hc);
static void hs_dequeue(ems_server_req_t *hc);
static void fresh_unlink(ems_server_req_t *hc);
static void fresh_push(ems_server_req_t *hc);
static void admit_learn(ems_server_t *s);

static void server_free_handle(uv_handle_t *h)
{
    free(h);
}

/* Takes a connection off the backlog and closes it at once. */
static void server_drop_pending(uv_stream_t *listener)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t)
        return;
    uv_tcp_init(listener->loop, t);
    (void)uv_accept(listener, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, server_free_handle);
}

/* ------------------------------------------------------------ lifetime */

static void server_maybe_free(ems_server_t *s)
{
    if (!s->stopping || s->handles || s->n_conns || s->n_reqs)
        return;
    void (*cb)(void *) = s->on_stopped;
    void *arg = s->stop_arg;
    ems_tls_config_unref(s->tls);
    free(s->addrs);
    free(s);
    if (cb)
        cb(arg);
}

/* ------------------------------------------------------------ addresses */

/* The table key: IPv4 as v4-mapped IPv6; IPv6 by its /64, since one host
 * usually owns a whole /64 and could otherwise pick a new address for
 * every connection. */
static int server_addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return EMS_EINVAL;
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(key, a, memcmp(a, v4mapped, 12) == 0 ? 16 : 8);
    return 0;
}

static size_t server_addr_hash(const uint8_t key[16], size_t cap)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    return (size_t)(h & (cap - 1));
}

/* The slot holding `key`, or the free slot where it would go. */
static server_addr_t *server_addr_slot(ems_server_t *s, const uint8_t key[16])
{
    size_t i = server_addr_hash(key, s->addrs_cap);
    while (s->addrs[i].count && memcmp(s->addrs[i].key, key, 16) != 0)
        i = (i + 1) & (s->addrs_cap - 1);
    return &s->addrs[i];
}

static int server_addr_grow(ems_server_t *s)
{
    size_t cap = s->addrs_cap ? s->addrs_cap * 2 : 64;
    server_addr_t *old = s->addrs, *n = calloc(cap, sizeof *n);
    if (!n)
        return EMS_ENOMEM;
    size_t oldcap = s->addrs_cap;
    s->addrs = n;
    s->addrs_cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].count)
            *server_addr_slot(s, old[i].key) = old[i];
    free(old);
    return 0;
}

static uint32_t server_addr_count(ems_server_t *s, const uint8_t key[16])
{
    return s->addrs_cap ? server_addr_slot(s, key)->count : 0;
}

static int server_addr_add(ems_server_t *s, const uint8_t key[16])
{
    if ((s->addrs_used + 1) * 2 > s->addrs_cap && server_addr_grow(s) < 0)
        return EMS_ENOMEM;
    server_addr_t *e = server_addr_slot(s, key);
    if (e->count++ == 0) {
        memcpy(e->key, key, 16);
        s->addrs_used++;
    }
    return 0;
}

/* Decrements; a slot reaching 0 is removed with backward-shift deletion,
 * so lookups never need tombstones. */
static void server_addr_del(ems_server_t *s, const uint8_t key[16])
{
    server_addr_t *e = server_addr_slot(s, key);
    if (e->count == 0 || --e->count > 0)
        return;
    s->addrs_used--;
    size_t mask = s->addrs_cap - 1, i = (size_t)(e - s->addrs), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!s->addrs[j].count)
            break;
        size_t home = server_addr_hash(s->addrs[j].key, s->addrs_cap);
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            s->addrs[i] = s->addrs[j];
            s->addrs[j].count = 0;
            i = j;
        }
    }
}

/* One warning line per SERVER_LOG_EVERY_MS at most, with counts: a flood
 * must not turn into a flood of log lines. */
static void server_log_limits(ems_server_t *s)
{
    uint64_t now = uv_now(s->loop);
    if (now < s->log_due)
        return;
    s->log_due = now + SERVER_LOG_EVERY_MS;
    const ems_server_stats_t *a = &s->stats, *b = &s->logged;
    ems_log_warn("server: connection limits (since the last such line): %llu refused over "
                 "the per-address cap, %llu refused and %llu idle evicted with the "
                 "unauthenticated share full, %llu closed over the output budget",
                 (unsigned long long)(a->refused_addr - b->refused_addr),
                 (unsigned long long)(a->refused_share - b->refused_share),
                 (unsigned long long)(a->evicted - b->evicted),
                 (unsigned long long)(a->out_shed - b->out_shed));
    s->logged = s->stats;
}

/* ------------------------------------------------------------ lists */

static void hc_unlink(ems_server_req_t *hc)
{
    ems_server_t *s = hc->srv;
    if (hc->prev)
        hc->prev->next = hc->next;
    else if (s->reqs == hc)
        s->reqs = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    else if (s->reqs_tail == hc)
        s->reqs_tail = hc->prev;
    hc->prev = hc->next = NULL;
    s->n_unauth--;
    if (hc->has_addr)
        server_addr_del(s, hc->addr);
    hc->has_addr = 0;
    hs_dequeue(hc);
    fresh_unlink(hc);
}

static void hc_unref(ems_server_req_t *hc)
{
    if (--hc->refs > 0)
        return;
    ems_server_t *s = hc->srv;
    ems_http_parser_free(hc->parser);
    ems_buf_free(&hc->stash);
    free(hc);
    s->n_reqs--;
    server_maybe_free(s);
}

/* The connection is no longer ours (closed or upgraded). */
static void hc_detach(ems_server_req_t *hc)
{
    if (!hc->conn)
        return;
    hc->conn = NULL;
    hc_unlink(hc);
    hc_unref(hc);
}

/* ------------------------------------------------------------ handshake budget */

/* Tokens are nanoseconds of handshake work; they accrue at hs_pct of real
 * time up to hs_burst, and each step's measured CPU time is taken off. A
 * step may overdraw; the debt is paid back before the next one runs. */
static void hs_refill(ems_server_t *s)
{
    uint64_t now = uv_hrtime();
    s->hs_tokens += (int64_t)((now - s->hs_last) * s->hs_pct / 100);
    if (s->hs_tokens > s->hs_burst)
        s->hs_tokens = s->hs_burst;
    s->hs_last = now;
}

static void hs_timer_cb(uv_timer_t *t);

static void hs_arm(ems_server_t *s)
{
    if (!s->hs_head || uv_is_active((uv_handle_t *)&s->hs_timer) || s->stopping)
        return;
    int64_t debt = s->hs_tokens < 0 ? -s->hs_tokens : 0;
    uint64_t ms = (uint64_t)debt * 100 / s->hs_pct / 1000000 + 1;
    uv_update_time(s->loop);
    uv_timer_start(&s->hs_timer, hs_timer_cb, ms, 0);
}

static void hs_dequeue(ems_server_req_t *hc)
{
    if (!hc->hs_waiting)
        return;
    ems_server_t *s = hc->srv;
    if (s->hs_cont == hc)
        s->hs_cont = hc->hs_prev;
    if (hc->hs_prev)
        hc->hs_prev->hs_next = hc->hs_next;
    else
        s->hs_head = hc->hs_next;
    if (hc->hs_next)
        hc->hs_next->hs_prev = hc->hs_prev;
    else
        s->hs_tail = hc->hs_prev;
    hc->hs_prev = hc->hs_next = NULL;
    hc->hs_waiting = 0;
    s->hs_count--;
}

static int hs_admit(ems_conn_t *c, void *arg)
{
    ems_server_t *s = arg;
    ems_server_req_t *hc = ems_conn_user(c);
    fresh_unlink(hc);
    hs_refill(s);
    if (!s->hs_head && s->hs_tokens > 0)
        return 1;
    /* Handshakes already begun go first, in order: their earlier steps
     * were paid for, and finishing them is what lets clients in. New ones
     * follow in arrival order: admission (below) keeps this queue within
     * what the budget finishes before the deadline, so first come is
     * first served (newest first would let a steady trickle of newcomers
     * starve an older one past its deadline). */
    ems_server_req_t *after = hc->hs_steps > 0 ? s->hs_cont : s->hs_tail;
    hc->hs_waiting = 1;
    hc->hs_prev = after;
    hc->hs_next = after ? after->hs_next : s->hs_head;
    if (after)
        after->hs_next = hc;
    else
        s->hs_head = hc;
    if (hc->hs_next)
        hc->hs_next->hs_prev = hc;
    else
        s->hs_tail = hc;
    if (hc->hs_steps > 0)
        s->hs_cont = hc;
    s->hs_count++;
    s->stats.hs_deferred++;
    hs_arm(s);
    return 0;
}

static void hs_spent(ems_conn_t *c, uint64_t ns, void *arg)
{
    ems_server_t *s = arg;
    ems_server_req_t *hc = ems_conn_user(c);
    hc->hs_steps++;
    s->hs_tokens -= (int64_t)ns;
    s->hs_ns_total += ns;
    admit_learn(s);
    /* Its next step is due about a round trip from now. */
    fresh_unlink(hc);
    fresh_push(hc);
}

static void hs_timer_cb(uv_timer_t *t)
{
    ems_server_t *s = t->data;
    hs_refill(s);
    while (s->hs_head && s->hs_tokens > 0) {
        ems_server_req_t *hc = s->hs_head;
        ems_conn_t *c = hc->conn;
        hs_dequeue(hc);
        /* May finish the handshake and run the handler, which may free hc:
         * it is not touched afterwards. */
        if (c)
            ems_conn_gate_resume(c);
    }
    hs_arm(s);
}

/* ------------------------------------------------------------ admission */

/* Past its handshake capacity the server must keep finishing handshakes
 * at that capacity, not accept every connection and let them all run into
 * their deadline. So a new TLS connection is accepted only while the
 * handshakes already taken on can be worked through within admit_ns at the
 * budget's share of the loop, each counted as a whole handshake: steps
 * waiting at the budget, and handshakes whose next bytes are due (the
 * "fresh" list: accepted, or a step run, less than SERVER_FRESH_MS ago,
 * and no plaintext yet). Otherwise
 * the connection is left to libuv unaccepted: libuv then stops watching
 * the listener, the rest wait in the kernel's listen backlog (and beyond
 * it the clients' SYNs are retried), and admit_timer_cb accepts it as soon
 * as there is room, which makes libuv watch the listener again. */

static void fresh_unlink(ems_server_req_t *hc)
{
    if (!hc->fresh)
        return;
    ems_server_t *s = hc->srv;
    if (hc->f_prev)
        hc->f_prev->f_next = hc->f_next;
    else
        s->fresh_head = hc->f_next;
    if (hc->f_next)
        hc->f_next->f_prev = hc->f_prev;
    else
        s->fresh_tail = hc->f_prev;
    hc->f_prev = hc->f_next = NULL;
    hc->fresh = 0;
    s->n_fresh--;
}

static void fresh_push(ems_server_req_t *hc)
{
    ems_server_t *s = hc->srv;
    hc->fresh = 1;
    hc->accepted_ms = uv_now(s->loop);
    hc->f_prev = s->fresh_tail;
    if (s->fresh_tail)
        s->fresh_tail->f_next = hc;
    else
        s->fresh_head = hc;
    s->fresh_tail = hc;
    s->n_fresh++;
}

/* Handshakes taken on and not worked through. A silent connection counts
 * for SERVER_FRESH_MS only: it costs no CPU until it speaks, and idle
 * sockets (or finished handshakes that never send a request) must not
 * keep the door shut; the handshake deadline and the unauthenticated
 * share deal with them. */
static uint64_t admit_pending(ems_server_t *s)
{
    uint64_t now = uv_now(s->loop);
    while (s->fresh_head && now - s->fresh_head->accepted_ms >= SERVER_FRESH_MS)
        fresh_unlink(s->fresh_head);
    return (uint64_t)s->hs_count + s->n_fresh;
}

static int admit_ok(ems_server_t *s)
{
    uint64_t n = admit_pending(s);
    return n == 0 || (n + 1) * s->hs_cost_ns * 100 / s->hs_pct <= s->admit_ns;
}

/* Refines the estimate after a handshake step: all handshake CPU since
 * the last completed handshake(s), divided by their number (so the CPU of
 * abandoned handshakes is charged to those that complete), in a moving
 * average over about 8 handshakes: a wave of cheap resumptions or of full
 * handshakes is followed within a few of them. */
static void admit_learn(ems_server_t *s)
{
    ems_tls_stats_t ts;
    ems_tls_config_stats(s->tls, &ts);
    uint64_t done = ts.full + ts.resumed;
    if (done < s->hs_done_seen) /* a new configuration (reload) */
        s->hs_done_seen = done;
    if (done == s->hs_done_seen)
        return;
    uint64_t k = done - s->hs_done_seen;
    uint64_t per = (s->hs_ns_total - s->hs_ns_seen) / k;
    s->hs_cost_ns = k >= 8 ? per : (s->hs_cost_ns * (8 - k) + per * k) / 8;
    if (s->hs_cost_ns < 1000)
        s->hs_cost_ns = 1000;
    s->hs_done_seen = done;
    s->hs_ns_seen = s->hs_ns_total;
}

static void server_on_connection(uv_stream_t *listener, int status);

static void admit_timer_cb(uv_timer_t *t)
{
    ems_server_t *s = t->data;
    if (!s->accept_held || s->stopping)
        return;
    if (!admit_ok(s)) {
        uv_timer_start(&s->admit_timer, admit_timer_cb, 5, 0);
        return;
    }
    /* Accepts the socket libuv holds; libuv watches the listener again. */
    s->accept_held = 0;
    server_on_connection((uv_stream_t *)&s->listener, 0);
}

static void server_conn_freed(ems_conn_t *c, void *arg)
{
    ems_server_t *s = arg;
    (void)c;
    s->n_conns--;
    server_maybe_free(s);
}

/* ------------------------------------------------------------ HTTP conn */

static int hc_write_response(ems_server_req_t *hc, int status, const char *ctype, const char *extra,
                             const void *body, size_t len, bool keep)
{
    ems_buf_t out;
    ems_buf_init(&out, SIZE_MAX / 2);
    /* The server's own headers go first, the handler's after them. */
    char *both = NULL;
    if (hc->srv->headers[0] && extra && extra[0]) {
        size_t a = strlen(hc->srv->headers), b = strlen(extra);
        both = malloc(a + b + 1);
        if (!both)
            return EMS_ENOMEM;
        memcpy(both, hc->srv->headers, a);
        memcpy(both + a, extra, b + 1);
        extra = both;
    } else if (hc->srv->headers[0]) {
        extra = hc->srv->headers;
    }
    int rc = ems_http_response_write(&out, status, ctype, extra, body, len, keep);
    free(both);
    if (rc == 0)
        rc = ems_conn_write(hc->conn, ems_buf_data(&out), ems_buf_len(&out));
    ems_buf_free(&out);
    return rc;
}

/* Answers a request the parser refused, then closes. */
static void hc_refuse(ems_server_req_t *hc, int status, const char *why, const char *extra)
{
    char body[256];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status, ems_http_reason(status), why);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof body)
        n = sizeof body - 1;
    hc_write_response(hc, status, "text/plain; charset=utf-8", extra, body, (size_t)n, false);
    ems_conn_close(hc->conn, SERVER_CLOSE_MS);
}

static void hc_on_read(ems_conn_t *c, const char *data, size_t len)
{
    ems_server_req_t *hc = ems_conn_user(c);
    fresh_unlink(hc); /* plaintext: the handshake is done */
    if (ems_buf_append(&hc->stash, data, len) < 0) {
        /* More pipelined bytes than one full request may hold. */
        ems_conn_abort(c, EMS_ENOSPC);
        return;
    }
    if (!hc->pending)
        hc_process(hc);
}

/* Whether to stop reading and parsing for now: this client has not read
 * its earlier answers (it pipelines without reading). */
static int hc_should_pause(ems_server_req_t *hc)
{
    return ems_conn_out_pending(hc->conn) > hc->srv->out_pause;
}

static void hc_on_drain(ems_conn_t *c)
{
    ems_server_req_t *hc = ems_conn_user(c);
    if (!hc->out_paused)
        return;
    hc->out_paused = 0;
    ems_conn_read_start(c);
    if (!hc->pending && ems_buf_len(&hc->stash) > 0) {
        /* Parse what waited on a later loop turn (hc_on_timer). */
        hc->kick = 1;
        ems_conn_set_timer(c, 1);
    }
}

/* Over the output budget: close the HTTP connection with the most output
 * queued (the scan runs only while over budget). */
static void server_shed(ems_server_t *s)
{
    ems_server_req_t *worst = NULL;
    size_t most = 0;
    for (ems_server_req_t *hc = s->reqs; hc; hc = hc->next) {
        if (!hc->conn || ems_conn_is_closing(hc->conn))
            continue;
        size_t q = ems_conn_out_pending(hc->conn);
        if (q > most) {
            most = q;
            worst = hc;
        }
    }
    if (!worst)
        return;
    s->stats.out_shed++;
    server_log_limits(s);
    ems_conn_abort(worst->conn, EMS_ENOSPC);
}

static void hc_on_timer(ems_conn_t *c)
{
    ems_server_req_t *hc = ems_conn_user(c);
    if (hc->pending)
        return;
    if (hc->kick) {
        /* Set by a late answer: parse what arrived while it was pending. */
        hc->kick = 0;
        hc->refs++; /* a request parsed now may upgrade and detach hc */
        hc_process(hc);
        if (hc->conn && !hc->pending && !ems_conn_is_closing(c))
            ems_conn_set_timer(c, hc->srv->keepalive_ms);
        hc_unref(hc);
        return;
    }
    /* Handshake, first request or keep-alive idle deadline. */
    ems_conn_close(c, SERVER_CLOSE_MS);
}

static void hc_on_close(ems_conn_t *c, int status)
{
    (void)status;
    hc_detach(ems_conn_user(c));
}

static const ems_conn_callbacks_t hc_cbs = {
    .on_read = hc_on_read,
    .on_drain = hc_on_drain,
    .on_timer = hc_on_timer,
    .on_close = hc_on_close,
};

/* Parses the stash and runs the handler for each complete request, until a
 * request is left waiting, the bytes run out or the connection goes. */
static void hc_process(ems_server_req_t *hc)
{
    if (hc->in_handler)
        return;
    hc->refs++; /* keep hc alive across handlers that upgrade or close */
    while (hc->conn && !hc->pending && !ems_conn_is_closing(hc->conn)) {
        if (ems_buf_len(&hc->stash) > 0 && hc_should_pause(hc)) {
            /* Resumed by hc_on_drain; the keep-alive deadline still runs,
             * so a client that never reads is closed in the end. */
            if (!hc->out_paused)
                hc->srv->stats.out_paused++;
            hc->out_paused = 1;
            ems_conn_read_stop(hc->conn);
            break;
        }
        size_t used = 0;
        int rc = ems_http_parser_feed(hc->parser, ems_buf_data(&hc->stash), ems_buf_len(&hc->stash),
                                      &used);
        ems_buf_consume(&hc->stash, used);
        if (rc == 0)
            break;
        if (rc < 0) {
            hc->srv->stats.http_errors++;
            hc_refuse(hc, ems_http_parser_status(hc->parser), ems_http_parser_error(hc->parser),
                      NULL);
            break;
        }
        hc->srv->stats.requests++;
        hc->pending = 1;
        hc->refs++; /* the pending request's reference */
        ems_conn_set_timer(hc->conn, 0);
        hc->in_handler = 1;
        hc->srv->handler(hc, hc->srv->user);
        hc->in_handler = 0;
    }
    hc_unref(hc);
}

/* Finishes the pending request; the connection may take the next one. */
static void hc_finish(ems_server_req_t *hc, bool keep)
{
    hc->pending = 0;
    ems_http_parser_reset(hc->parser);
    if (hc->conn) {
        if (!keep) {
            ems_conn_close(hc->conn, SERVER_CLOSE_MS);
        } else if (ems_buf_len(&hc->stash) > 0 && !hc->in_handler) {
            /* Bytes of the next request arrived while this one waited:
             * parse them on a later loop turn, not inside the caller. */
            hc->kick = 1;
            ems_conn_set_timer(hc->conn, 1);
        } else {
            ems_conn_set_timer(hc->conn, hc->srv->keepalive_ms);
        }
    }
    hc_unref(hc);
}

/* The oldest unauthenticated connection with no request in progress. */
static ems_server_req_t *server_idle_victim(ems_server_t *s)
{
    int n = 0;
    for (ems_server_req_t *hc = s->reqs; hc && n < SERVER_EVICT_SCAN; hc = hc->next, n++)
        if (hc->conn && !hc->pending && !ems_conn_is_closing(hc->conn))
            return hc;
    return NULL;
}

/* ems_conn_accept's filter: runs right after accept(2), before any TLS
 * state is made, so a refusal costs little. */
static int server_filter(const struct sockaddr *peer, void *arg)
{
    ems_server_req_t *hc = arg;
    ems_server_t *s = hc->srv;
    if (s->max_per_addr && server_addr_key(peer, hc->addr) == 0) {
        if (server_addr_count(s, hc->addr) >= s->max_per_addr) {
            s->stats.refused_addr++;
            server_log_limits(s);
            return 1;
        }
        if (server_addr_add(s, hc->addr) < 0)
            return 1;
        hc->has_addr = 1;
    }
    if (s->n_unauth >= s->max_unauth) {
        /* The newcomer may be a device: make room by closing the oldest
         * idle unauthenticated connection rather than refusing it. */
        ems_server_req_t *v = server_idle_victim(s);
        if (!v) {
            if (hc->has_addr)
                server_addr_del(s, hc->addr);
            hc->has_addr = 0;
            s->stats.refused_share++;
            server_log_limits(s);
            return 1;
        }
        s->stats.evicted++;
        server_log_limits(s);
        ems_conn_abort(v->conn, EMS_ECLOSED);
    }
    return 0;
}

static void server_on_connection(uv_stream_t *listener, int status)
{
    ems_server_t *s = listener->data;
    if (status < 0) {
        ems_log_warn("server: accept failed: %s", uv_strerror(status));
        return;
    }
    if (s->stopping || s->n_conns >= s->max_conn) {
        /* Take it off the backlog and close it: a full server answers
         * quickly instead of leaving clients hanging in the backlog. */
        server_drop_pending(listener);
        s->stats.refused++;
        ems_log_debug("server: connection refused, %zu connections open", s->n_conns);
        return;
    }
    if (s->tls && !admit_ok(s)) {
        /* Not accepted: libuv keeps this one and stops watching the
         * listener; the rest wait in the backlog (see admission above). */
        s->accept_held = 1;
        s->stats.accept_paused++;
        if (!uv_is_active((uv_handle_t *)&s->admit_timer))
            uv_timer_start(&s->admit_timer, admit_timer_cb, 5, 0);
        return;
    }
    ems_server_req_t *hc = calloc(1, sizeof *hc);
    if (hc)
        hc->parser = ems_http_parser_new(EMS_HTTP_REQUEST, &s->limits);
    if (!hc || !hc->parser) {
        free(hc);
        server_drop_pending(listener);
        return;
    }
    hc->srv = s;
    ems_buf_init(&hc->stash, s->limits.max_header_bytes + s->limits.max_body + 4096);
    ems_conn_t *c = NULL;
    ems_conn_options_t co = s->conn_opts;
    co.filter_arg = hc;
    int rc = ems_conn_accept(listener, s->tls, &co, &hc_cbs, hc, &c);
    if (rc < 0) {
        /* The filter counted nothing for a refused one; undo otherwise. */
        if (hc->has_addr)
            server_addr_del(s, hc->addr);
        ems_http_parser_free(hc->parser);
        free(hc);
        if (rc == EMS_EPERM)
            s->stats.refused++;
        else if (rc == EMS_ECLOSED || rc == EMS_ETIMEDOUT)
            s->stats.abandoned++; /* its client left, or waited too long, in the backlog */
        else
            ems_log_warn("server: cannot accept: %s", ems_strerror(rc));
        return;
    }
    hc->conn = c;
    hc->refs = 1;
    s->stats.accepted++;
    s->n_reqs++;
    s->n_conns++;
    ems_conn_set_free_hook(c, server_conn_freed, s);
    hc->prev = s->reqs_tail;
    if (s->reqs_tail)
        s->reqs_tail->next = hc;
    else
        s->reqs = hc;
    s->reqs_tail = hc;
    s->n_unauth++;
    if (s->tls)
        fresh_push(hc);
    ems_conn_set_timer(c, s->handshake_ms);
}

/* ------------------------------------------------------------ listener */

static void server_handle_closed(uv_handle_t *h)
{
    ems_server_t *s = h->data;
    s->handles--;
    server_maybe_free(s);
}

static void server_close_handles(ems_server_t *s)
{
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    uv_close((uv_handle_t *)&s->hs_timer, server_handle_closed);
    uv_close((uv_handle_t *)&s->admit_timer, server_handle_closed);
}

static int server_bind(ems_server_t *s, const ems_server_options_t *o)
{
    struct sockaddr_storage ss;
    const char *host = o->host && *o->host ? o->host : "0.0.0.0";
    int rc = uv_ip4_addr(host, o->port, (struct sockaddr_in *)&ss);
    if (rc < 0)
        rc = uv_ip6_addr(host, o->port, (struct sockaddr_in6 *)&ss);
    if (rc < 0)
        return rc;
    /* libuv 1.44 cannot set SO_REUSEPORT, and it must be set before bind:
     * make the socket here and give it to libuv. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (o->reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    rc = uv_tcp_open(&s->listener, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, o->backlog > 0 ? o->backlog : 511,
                       server_on_connection);
    if (rc == 0) {
        int len = sizeof ss;
        rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
        if (rc == 0)
            s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return rc;
}

int ems_server_start(uv_loop_t *loop, const ems_server_options_t *o, ems_server_handler_fn handler,
                     void *user, ems_server_t **out)
{
    *out = NULL;
    if (!loop || !o || !handler || (o->tls && !ems_tls_config_is_server(o->tls)) ||
        (o->headers && strlen(o->headers) > EMS_SERVER_MAX_HEADERS))
        return EMS_EINVAL;
    ems_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return EMS_ENOMEM;
    s->loop = loop;
    s->handler = handler;
    s->user = user;
    ems_http_limits_default(&s->limits);
    if (o->limits.max_header_bytes)
        s->limits.max_header_bytes = o->limits.max_header_bytes;
    if (o->limits.max_headers)
        s->limits.max_headers = o->limits.max_headers;
    if (o->limits.max_body)
        s->limits.max_body = o->limits.max_body;
    if (o->limits.max_url)
        s->limits.max_url = o->limits.max_url;
    s->conn_opts.max_out = o->max_out;
    s->conn_opts.out_account = &s->out_total;
    s->conn_opts.filter = server_filter;
    s->out_pause = o->out_pause ? o->out_pause : SERVER_DEFAULT_OUT_PAUSE;
    s->out_budget = o->out_budget ? o->out_budget : SERVER_DEFAULT_OUT_BUDGET;
    s->max_per_addr = o->max_per_addr;
    s->hs_pct = o->handshake_cpu_pct ? o->handshake_cpu_pct : SERVER_DEFAULT_HS_PCT;
    if (s->hs_pct > 100)
        s->hs_pct = 100;
    s->hs_burst = (int64_t)(o->handshake_burst_ms ? o->handshake_burst_ms
                                                  : SERVER_DEFAULT_HS_BURST_MS) *
                  1000000;
    s->hs_tokens = s->hs_burst;
    s->hs_last = uv_hrtime();
    s->gate.admit = hs_admit;
    s->gate.spent = hs_spent;
    s->gate.arg = s;
    if (o->tls)
        s->conn_opts.gate = &s->gate;
    if (o->headers)
        strcpy(s->headers, o->headers);
    s->max_conn = o->max_connections ? o->max_connections : SERVER_DEFAULT_MAX_CONN;
    s->max_unauth = o->reserve < s->max_conn ? s->max_conn - o->reserve : 1;
    s->handshake_ms =
        o->handshake_timeout_ms ? o->handshake_timeout_ms : SERVER_DEFAULT_HANDSHAKE_MS;
    s->admit_ns = (uint64_t)(o->handshake_admit_ms ? o->handshake_admit_ms : s->handshake_ms / 2) *
                  1000000;
    if (o->tls)
        s->conn_opts.max_backlog_age_ms =
            o->backlog_max_age_ms ? o->backlog_max_age_ms : SERVER_DEFAULT_BACKLOG_AGE_MS;
    s->hs_cost_ns = SERVER_HS_COST_NS;
    s->keepalive_ms =
        o->keepalive_timeout_ms ? o->keepalive_timeout_ms : SERVER_DEFAULT_KEEPALIVE_MS;
    if (o->tls)
        s->tls = ems_tls_config_ref(o->tls);
    uv_tcp_init(loop, &s->listener);
    uv_timer_init(loop, &s->hs_timer);
    uv_timer_init(loop, &s->admit_timer);
    s->listener.data = s;
    s->hs_timer.data = s;
    s->admit_timer.data = s;
    s->handles = 3;
    int rc = server_bind(s, o);
    if (rc < 0) {
        /* The handles are initialised: free the server from their close
         * callbacks, as for any stop. */
        s->stopping = 1;
        server_close_handles(s);
        return rc;
    }
    *out = s;
    return 0;
}

uint16_t ems_server_port(const ems_server_t *s)
{
    return s->port;
}

int ems_server_set_tls(ems_server_t *s, ems_tls_config_t *tls)
{
    if (!s->tls || !tls || !ems_tls_config_is_server(tls))
        return EMS_EINVAL;
    ems_tls_config_ref(tls);
    ems_tls_config_unref(s->tls);
    s->tls = tls;
    ems_tls_stats_t ts;
    ems_tls_config_stats(tls, &ts);
    s->hs_done_seen = ts.full + ts.resumed;
    s->hs_ns_seen = s->hs_ns_total;
    return 0;
}

size_t ems_server_connections(const ems_server_t *s)
{
    return s->n_conns;
}

void ems_server_stats(const ems_server_t *s, ems_server_stats_t *out)
{
    *out = s->stats;
    out->unauth = s->n_unauth;
    out->out_bytes = s->out_total;
    out->hs_waiting = s->hs_count;
    out->accept_held = (uint64_t)s->accept_held;
    out->hs_cost_ns = s->hs_cost_ns;
}

void ems_server_stop(ems_server_t *s, void (*on_stopped)(void *arg), void *arg)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    s->on_stopped = on_stopped;
    s->stop_arg = arg;
    server_close_handles(s);
    for (ems_server_req_t *hc = s->reqs; hc; hc = hc->next)
        if (hc->conn)
            ems_conn_close(hc->conn, SERVER_CLOSE_MS);
}

/* ------------------------------------------------------------ requests */

const ems_http_msg_t *ems_server_req_msg(const ems_server_req_t *req)
{
    return ems_http_parser_msg(req->parser);
}

ems_conn_t *ems_server_req_conn(const ems_server_req_t *req)
{
    return req->conn;
}

int ems_server_req_gone(const ems_server_req_t *req)
{
    return req->conn == NULL || ems_conn_is_closing(req->conn);
}

int ems_server_respond(ems_server_req_t *req, int status, const char *content_type,
                       const char *extra_headers, const void *body, size_t body_len)
{
    if (!req->pending)
        return EMS_EINVAL;
    if (ems_server_req_gone(req)) {
        hc_finish(req, false);
        return EMS_ECLOSED;
    }
    const ems_http_msg_t *m = ems_http_parser_msg(req->parser);
    bool keep = m->keep_alive && !req->srv->stopping;
    int rc = hc_write_response(req, status, content_type, extra_headers, body, body_len, keep);
    if (rc < 0) {
        ems_conn_abort(req->conn, rc);
        hc_finish(req, false);
        return rc;
    }
    ems_server_t *s = req->srv;
    hc_finish(req, keep);
    if (s->out_total > s->out_budget)
        server_shed(s);
    return 0;
}

int ems_server_upgrade(ems_server_req_t *req, const ems_ws_options_t *opts,
                       const ems_ws_callbacks_t *cbs, void *user, const char *extra_headers,
                       ems_ws_t **out)
{
    *out = NULL;
    if (!req->pending)
        return EMS_EINVAL;
    if (ems_server_req_gone(req)) {
        hc_finish(req, false);
        return EMS_ECLOSED;
    }
    const ems_http_msg_t *m = ems_http_parser_msg(req->parser);
    const char *why = "";
    int status = ems_http_ws_check_request(m, &why);
    if (status != 0) {
        hc_refuse(req, status, why, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        hc_finish(req, false);
        return EMS_EPROTO;
    }
    ems_buf_t resp;
    ems_buf_init(&resp, 16384);
    int rc = ems_http_ws_response_write(&resp, m, extra_headers);
    if (rc == 0)
        rc = ems_conn_write(req->conn, ems_buf_data(&resp), ems_buf_len(&resp));
    ems_buf_free(&resp);
    if (rc < 0) {
        ems_conn_abort(req->conn, rc);
        hc_finish(req, false);
        return rc;
    }
    /* Hand the connection to the WebSocket layer, with any frames that
     * arrived behind the request. The free hook stays: the server still
     * counts this connection. */
    ems_conn_t *c = req->conn;
    req->srv->stats.upgrades++;
    /* The WebSocket layer bounds its own queue; the HTTP budget no longer
     * applies. */
    ems_conn_set_out_account(c, NULL);
    hc_detach(req);
    rc =
        ems_ws_accept(c, opts, cbs, user, ems_buf_data(&req->stash), ems_buf_len(&req->stash), out);
    ems_buf_clear(&req->stash);
    hc_finish(req, true);
    return rc;
}
