/* conn.c: stream connections over uv_tcp_t, plain or TLS (see conn.h).
 *
 * Lifetime. A connection owns two libuv handles (the TCP handle and one
 * timer) and, while a name is being resolved, a getaddrinfo request. Each
 * holds a reference; the memory is released when the last one is gone,
 * i.e. in the last close callback, after on_close. All closing goes
 * through conn_finish, which only starts the libuv closes, so it is safe
 * from inside any callback: the structure outlives the call stack.
 *
 * Transports. The only difference between TCP and TLS is what happens to
 * bytes read from the socket and bytes written by the owner; that is the
 * conn_transport_t vtable (in the manner of redis' ConnectionType), and no
 * other code asks which transport it runs on.
 *
 * Output. `out` collects bytes (plaintext for TCP, records for TLS) while
 * `inflight` is being written by the single uv_write in flight. When that
 * write completes the buffers are swapped and the next write covers all
 * that accumulated, so a burst of small messages costs one system call.
 */
#include "conn.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "error.h"
#include "log.h"

#define CONN_DEFAULT_MAX_OUT (1u << 20)
#define CONN_READ_SIZE 16384
#define CONN_KEEP_BUF 8192
#define CONN_DEFAULT_CLOSE_MS 5000

typedef enum {
    CONN_RESOLVING,
    CONN_CONNECTING,
    CONN_HANDSHAKE,
    CONN_OPEN,
    CONN_CLOSING, /* graceful: flushing, then lingering until EOF */
    CONN_CLOSED,  /* handles are closing */
} conn_state_t;

typedef struct conn_transport {
    const char *name;
    /* Bytes arrived from the socket. */
    void (*on_data)(ems_conn_t *c, const char *data, size_t len);
    /* Owner's plaintext to queue in c->out. */
    int (*write)(ems_conn_t *c, const void *data, size_t len);
    /* Worst-case bytes added to `len` plaintext bytes on the wire. */
    size_t (*overhead)(size_t len);
    /* Queue what must precede the end of the stream (close_notify). */
    void (*start_close)(ems_conn_t *c);
} conn_transport_t;

/* What only an outgoing connection needs (~700 bytes): allocated behind
 * the ems_conn_t of a client only, so that each of the tens of thousands
 * of accepted connections of a gateway does without it. */
typedef struct conn_client {
    uv_getaddrinfo_t gai;
    uv_connect_t connect_req;
    struct sockaddr_storage bind_addr; /* bound before connect if has_bind */
    int has_bind;
    int gai_pending;
    struct addrinfo *ai, *ai_next;
    char host[256]; /* names the peer in errors; the TLS server name */
} conn_client_t;

struct ems_conn {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer;
    conn_client_t *cl; /* clients only (right behind this struct), else NULL */
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    const conn_transport_t *tp;
    ems_tls_t *tls;
    ems_tls_config_t *tls_cfg; /* client: kept until the session exists */
    ems_buf_t out, inflight;
    size_t max_out;
    size_t *out_acct;  /* shared total of queued output (server), or NULL */
    size_t acct_held;  /* what this connection has added to *out_acct */
    const ems_conn_gate_t *gate;
    ems_buf_t hs_held; /* handshake bytes waiting at the gate */
    int hs_wait;       /* deferred by the gate: not reading */
    conn_state_t state;
    int refs;
    int status;       /* passed to on_close */
    int user_reading; /* the owner wants on_read */
    int reading;      /* uv_read_start is in effect */
    int writing;      /* a uv_write is in flight */
    int shutting;     /* uv_shutdown issued */
    int tcp_closing;  /* uv_close(tcp) issued */
    int silent;       /* never handed out: no on_close */
    unsigned close_ms;
    ems_conn_callbacks_t cbs;
    void *user;
    void (*free_hook)(ems_conn_t *, void *);
    void *free_arg;
    ems_conn_stats_t stats;
    char err[256];
};

static void conn_finish(ems_conn_t *c, int status);
static void conn_flush(ems_conn_t *c);
static void conn_update_reading(ems_conn_t *c);

/* Records a readable reason (first one wins) and closes at once. */
static void conn_fail(ems_conn_t *c, int status, const char *detail)
{
    if (c->state == CONN_CLOSED)
        return;
    if (!c->err[0] && detail)
        snprintf(c->err, sizeof c->err, "%.*s", (int)sizeof c->err - 1, detail);
    /* A failure during a graceful close is still the close we asked for. */
    conn_finish(c, c->state == CONN_CLOSING ? 0 : status);
}

/* Brings the shared output total in line with this connection's queue. */
static void conn_account(ems_conn_t *c)
{
    size_t now = ems_buf_len(&c->out) + ems_buf_len(&c->inflight);
    if (c->out_acct)
        *c->out_acct = *c->out_acct - c->acct_held + now;
    c->acct_held = now;
}

static void conn_release(ems_conn_t *c)
{
    if (!c->silent && c->cbs.on_close)
        c->cbs.on_close(c, c->status);
    if (c->free_hook)
        c->free_hook(c, c->free_arg);
    ems_tls_free(c->tls);
    ems_tls_config_unref(c->tls_cfg);
    if (c->cl && c->cl->ai)
        uv_freeaddrinfo(c->cl->ai);
    if (c->out_acct)
        *c->out_acct -= c->acct_held;
    ems_buf_free(&c->hs_held);
    ems_buf_free(&c->out);
    ems_buf_free(&c->inflight);
    free(c);
}

static void conn_unref(ems_conn_t *c)
{
    if (--c->refs == 0)
        conn_release(c);
}

static void conn_close_cb(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* The one way down: stop everything and close the handles. */
static void conn_finish(ems_conn_t *c, int status)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    c->status = status;
    /* The queue is dropped with the handles: stop counting it now, so an
     * owner shedding load does not pick this connection again. */
    if (c->out_acct)
        *c->out_acct -= c->acct_held;
    c->out_acct = NULL;
    c->acct_held = 0;
    if (!c->tcp_closing) {
        c->tcp_closing = 1;
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    }
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
    if (c->cl && c->cl->gai_pending)
        uv_cancel((uv_req_t *)&c->cl->gai); /* its callback drops the reference */
}

/* ------------------------------------------------------------ reading */

static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h, (void)hint;
    /* A buffer per read, freed right after: idle connections then hold no
     * read memory at all, which matters with tens of thousands of them. */
    buf->base = malloc(CONN_READ_SIZE);
    buf->len = buf->base ? CONN_READ_SIZE : 0;
}

static void conn_deliver(ems_conn_t *c, const char *data, size_t len)
{
    if (c->state == CONN_OPEN && c->cbs.on_read)
        c->cbs.on_read(c, data, len);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ems_conn_t *c = s->data;
    if (nread > 0) {
        c->stats.bytes_in += (uint64_t)nread;
        if (c->state == CONN_HANDSHAKE || c->state == CONN_OPEN)
            c->tp->on_data(c, buf->base, (size_t)nread);
    } else if (nread == UV_EOF) {
        if (c->state == CONN_CLOSING)
            conn_finish(c, 0);
        else
            conn_fail(c, EMS_ECLOSED,
                      c->state == CONN_HANDSHAKE ? "peer closed during the TLS handshake"
                                                 : "peer closed the connection");
    } else if (nread < 0) {
        conn_fail(c, (int)nread, uv_strerror((int)nread));
    }
    free(buf->base);
}

static void conn_update_reading(ems_conn_t *c)
{
    int want = (c->state == CONN_HANDSHAKE && !c->hs_wait) || c->state == CONN_CLOSING ||
               (c->state == CONN_OPEN && c->user_reading);
    if (want && !c->reading) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
        if (rc < 0) {
            conn_fail(c, rc, uv_strerror(rc));
            return;
        }
        c->reading = 1;
    } else if (!want && c->reading && c->state != CONN_CLOSED) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ------------------------------------------------------------ writing */

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    ems_conn_t *c = req->data;
    if (status < 0 && c->state == CONN_CLOSING)
        conn_finish(c, 0);
    /* Otherwise linger: conn_read_cb finishes on EOF, the timer on the
     * deadline. Closing only after the peer's EOF keeps the kernel from
     * answering late peer bytes with a reset that could destroy our last
     * bytes in flight. */
}

static void conn_shutdown(ems_conn_t *c)
{
    if (c->shutting || c->state != CONN_CLOSING)
        return;
    c->shutting = 1;
    c->shutdown_req.data = c;
    int rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, conn_shutdown_cb);
    if (rc < 0)
        conn_finish(c, 0);
}

static void conn_write_cb(uv_write_t *req, int status)
{
    ems_conn_t *c = req->data;
    c->writing = 0;
    if (status == UV_ECANCELED || c->state == CONN_CLOSED)
        return;
    c->stats.bytes_out += ems_buf_len(&c->inflight);
    /* With nothing else queued the connection goes idle: it keeps no
     * buffer (a few hundred bytes, times every idle device). A busy one
     * keeps up to CONN_KEEP_BUF for the next swap. */
    ems_buf_trim(&c->inflight, ems_buf_len(&c->out) ? CONN_KEEP_BUF : 0);
    conn_account(c);
    if (status < 0) {
        conn_fail(c, status, uv_strerror(status));
        return;
    }
    if (ems_buf_len(&c->out) > 0) {
        conn_flush(c);
        return;
    }
    if (c->state == CONN_CLOSING)
        conn_shutdown(c);
    else if (c->state == CONN_OPEN && c->cbs.on_drain)
        c->cbs.on_drain(c);
}

static void conn_flush(ems_conn_t *c)
{
    conn_account(c); /* every change to `out` is followed by a flush */
    if (c->writing || ems_buf_len(&c->out) == 0 || c->state == CONN_CLOSED)
        return;
    ems_buf_swap(&c->out, &c->inflight);
    uv_buf_t b =
        uv_buf_init((char *)ems_buf_data(&c->inflight), (unsigned)ems_buf_len(&c->inflight));
    c->write_req.data = c;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (rc < 0) {
        conn_fail(c, rc, uv_strerror(rc));
        return;
    }
    c->writing = 1;
}

/* ------------------------------------------------------------ transports */

static void tcp_on_data(ems_conn_t *c, const char *data, size_t len)
{
    conn_deliver(c, data, len);
}

static int tcp_write(ems_conn_t *c, const void *data, size_t len)
{
    return ems_buf_append(&c->out, data, len);
}

static size_t tcp_overhead(size_t len)
{
    (void)len;
    return 0;
}

static void tcp_start_close(ems_conn_t *c)
{
    (void)c;
}

static const conn_transport_t conn_tcp = {"tcp", tcp_on_data, tcp_write, tcp_overhead,
                                          tcp_start_close};

static void conn_opened(ems_conn_t *c)
{
    c->state = CONN_OPEN;
    conn_update_reading(c);
    if (c->state == CONN_OPEN && c->cl && c->cbs.on_open)
        c->cbs.on_open(c); /* client connections only (host is set) */
}

/* Bytes for the TLS layer, the gate already passed. */
static void tls_process(ems_conn_t *c, const char *data, size_t len)
{
    char plain[CONN_READ_SIZE];
    if (!c->tls) {
        /* Accepted: the session is made on the first bytes, so an idle
         * connection holds no mbedTLS buffers (tens of KiB each). */
        int rc = ems_tls_new(c->tls_cfg, NULL, &c->out, &c->tls);
        ems_tls_config_unref(c->tls_cfg);
        c->tls_cfg = NULL;
        if (rc < 0) {
            conn_fail(c, rc, "cannot create TLS session");
            return;
        }
    }
    ems_tls_feed(c->tls, data, len);
    if (c->state == CONN_HANDSHAKE) {
        uint64_t t0 = uv_hrtime();
        int rc = ems_tls_handshake(c->tls);
        if (c->gate && c->gate->spent)
            c->gate->spent(c, uv_hrtime() - t0, c->gate->arg);
        conn_flush(c);
        if (rc == EMS_EAGAIN)
            return;
        if (rc < 0) {
            conn_fail(c, rc, ems_tls_error(c->tls));
            return;
        }
        conn_opened(c);
    }
    /* Deliver everything this read brought, even if the owner stops
     * reading meanwhile (conn.h promises that). */
    while (c->state == CONN_OPEN) {
        int n = ems_tls_read(c->tls, plain, sizeof plain);
        if (n == EMS_EAGAIN)
            break;
        if (n == 0) {
            conn_fail(c, EMS_ECLOSED, "peer sent TLS close_notify");
            break;
        }
        if (n < 0) {
            conn_fail(c, n, ems_tls_error(c->tls));
            break;
        }
        conn_deliver(c, plain, (size_t)n);
    }
    ems_tls_feed(c->tls, NULL, 0);
    conn_flush(c); /* alerts mbedTLS may have produced */
}

static void tls_on_data(ems_conn_t *c, const char *data, size_t len)
{
    if (c->state == CONN_HANDSHAKE && c->gate &&
        (c->hs_wait || !c->gate->admit(c, c->gate->arg))) {
        /* Keep the bytes (the read buffer is freed after this call) and
         * read no more until the gate lets this step run. */
        if (ems_buf_append(&c->hs_held, data, len) < 0) {
            conn_fail(c, EMS_ENOSPC, "handshake bytes over the limit while waiting");
            return;
        }
        c->hs_wait = 1;
        conn_update_reading(c);
        return;
    }
    tls_process(c, data, len);
}

static int tls_write(ems_conn_t *c, const void *data, size_t len)
{
    int rc = ems_tls_write(c->tls, data, len);
    if (rc < 0)
        conn_fail(c, EMS_ETLS, ems_tls_error(c->tls));
    return rc < 0 ? EMS_ETLS : 0;
}

static size_t tls_overhead(size_t len)
{
    /* Per record of at most 16384 bytes: 5 header, up to 16 IV, 48 MAC and
     * 16 padding (CBC suites); GCM needs less. Rounded up. */
    return (len / 16384 + 1) * 128;
}

static void tls_start_close(ems_conn_t *c)
{
    if (c->tls && ems_tls_is_established(c->tls))
        ems_tls_close_notify(c->tls);
}

static const conn_transport_t conn_tls = {"tls", tls_on_data, tls_write, tls_overhead,
                                          tls_start_close};

/* ------------------------------------------------------------ creation */

static ems_conn_t *conn_alloc(uv_loop_t *loop, int client, const ems_conn_options_t *opts,
                              const ems_conn_callbacks_t *cbs, void *user)
{
    /* sizeof(ems_conn_t) is a multiple of its (pointer) alignment, which
     * is also conn_client_t's: the client part may follow it directly. */
    ems_conn_t *c = calloc(1, sizeof *c + (client ? sizeof(conn_client_t) : 0));
    if (!c)
        return NULL;
    c->loop = loop;
    c->max_out = opts && opts->max_out ? opts->max_out : CONN_DEFAULT_MAX_OUT;
    if (client) {
        c->cl = (conn_client_t *)(void *)(c + 1);
        if (opts && opts->bind_addr) {
            int v6 = opts->bind_addr->sa_family == AF_INET6;
            memcpy(&c->cl->bind_addr, opts->bind_addr,
                   v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
            c->cl->has_bind = 1;
        }
    }
    ems_buf_init(&c->out, c->max_out);
    ems_buf_init(&c->inflight, c->max_out);
    ems_buf_init(&c->hs_held, 4 * CONN_READ_SIZE);
    if (cbs)
        c->cbs = *cbs;
    c->user = user;
    c->user_reading = 1;
    c->tp = &conn_tcp;
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->refs = 2;
    return c;
}

static void conn_start_tls(ems_conn_t *c, ems_tls_config_t *cfg, const char *host)
{
    int rc = ems_tls_new(cfg, host, &c->out, &c->tls);
    if (rc < 0) {
        conn_fail(c, rc, "cannot create TLS session");
        return;
    }
    c->tp = &conn_tls;
    c->state = CONN_HANDSHAKE;
}

static void conn_connect_next(uv_handle_t *h);

static void conn_connect_cb(uv_connect_t *req, int status)
{
    ems_conn_t *c = req->data;
    if (status == UV_ECANCELED || c->state != CONN_CONNECTING)
        return;
    if (status < 0) {
        if (c->cl->ai_next) {
            /* The socket of a failed connect cannot be reused: close the
             * handle and try the next address from its close callback. */
            c->tcp_closing = 1;
            uv_close((uv_handle_t *)&c->tcp, conn_connect_next);
            return;
        }
        char msg[300];
        snprintf(msg, sizeof msg, "connect to %s failed: %s", c->cl->host, uv_strerror(status));
        conn_fail(c, status, msg);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (c->tls_cfg) {
        conn_start_tls(c, c->tls_cfg, c->cl->host);
        ems_tls_config_unref(c->tls_cfg);
        c->tls_cfg = NULL;
        if (c->state != CONN_HANDSHAKE)
            return;
        conn_update_reading(c);
        int rc = ems_tls_handshake(c->tls); /* writes the ClientHello */
        if (rc < 0 && rc != EMS_EAGAIN) {
            conn_fail(c, rc, ems_tls_error(c->tls));
            return;
        }
        conn_flush(c);
        return;
    }
    conn_opened(c);
}

static void conn_try(ems_conn_t *c)
{
    conn_client_t *cl = c->cl;
    struct addrinfo *ai = cl->ai_next;
    cl->ai_next = ai->ai_next;
    cl->connect_req.data = c;
    int rc = 0;
    if (cl->has_bind && cl->bind_addr.ss_family == ai->ai_family)
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&cl->bind_addr, 0);
    if (rc == 0)
        rc = uv_tcp_connect(&cl->connect_req, &c->tcp, ai->ai_addr, conn_connect_cb);
    if (rc < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "connect to %s failed: %s", cl->host, uv_strerror(rc));
        conn_fail(c, rc, msg);
    }
}

/* Close callback of the TCP handle after a failed connect attempt. */
static void conn_connect_next(uv_handle_t *h)
{
    ems_conn_t *c = h->data;
    c->tcp_closing = 0;
    if (c->state == CONN_CLOSED) {
        conn_unref(c); /* aborted meanwhile: this was the TCP handle's close */
        return;
    }
    uv_tcp_init(c->loop, &c->tcp);
    c->tcp.data = c;
    conn_try(c);
}

static void conn_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    ems_conn_t *c = req->data;
    c->cl->gai_pending = 0;
    c->cl->ai = res;
    if (c->state == CONN_CLOSED) {
        conn_unref(c);
        return;
    }
    if (status < 0 || !res) {
        char msg[300];
        snprintf(msg, sizeof msg, "cannot resolve %s: %s", c->cl->host, uv_strerror(status));
        conn_fail(c, status < 0 ? status : UV_EAI_NONAME, msg);
        conn_unref(c);
        return;
    }
    c->state = CONN_CONNECTING;
    c->cl->ai_next = res;
    conn_try(c);
    conn_unref(c);
}

static void conn_free_handle_cb(uv_handle_t *h)
{
    free(h);
}

/* Closes a connection that was never handed out: no callbacks. */
static void conn_discard(ems_conn_t *c)
{
    c->silent = 1;
    conn_finish(c, 0);
}

int ems_conn_connect(uv_loop_t *loop, const char *host, uint16_t port, ems_tls_config_t *tls,
                     const char *hostname, const ems_conn_options_t *opts,
                     const ems_conn_callbacks_t *cbs, void *user, ems_conn_t **out)
{
    *out = NULL;
    if (!loop || !host || !*host || port == 0 || (tls && ems_tls_config_is_server(tls)))
        return EMS_EINVAL;
    const char *name = hostname ? hostname : host;
    if (strlen(name) >= sizeof(((conn_client_t *)0)->host))
        return EMS_EINVAL;
    ems_conn_t *c = conn_alloc(loop, 1, opts, cbs, user);
    if (!c)
        return EMS_ENOMEM;
    snprintf(c->cl->host, sizeof c->cl->host, "%s", name);
    if (tls)
        c->tls_cfg = ems_tls_config_ref(tls);
    c->state = CONN_RESOLVING;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    c->cl->gai.data = c;
    int rc = uv_getaddrinfo(loop, &c->cl->gai, conn_gai_cb, host, service, &hints);
    if (rc < 0) {
        conn_discard(c);
        return rc;
    }
    c->cl->gai_pending = 1;
    c->refs++;
    *out = c;
    return 0;
}

/* Whether a connection just taken off the listen backlog is worth serving.
 * A client that gave up while it waited there (the server's admission
 * control, docs/security.md) has sent its FIN: the socket is in CLOSE_WAIT
 * (EMS_ECLOSED). One whose last bytes (its ClientHello) are older than
 * `max_age_ms` will most likely give up before a handshake finishes
 * (EMS_ETIMEDOUT). Serving either would spend a TLS handshake's CPU on
 * nobody while live clients wait. */
static int conn_backlog_check(uv_tcp_t *t, unsigned max_age_ms)
{
    uv_os_fd_t fd;
    struct tcp_info ti;
    socklen_t n = sizeof ti;
    if (uv_fileno((uv_handle_t *)t, &fd) < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &n) < 0)
        return 0;
    if (ti.tcpi_state != TCP_ESTABLISHED)
        return EMS_ECLOSED;
    if (max_age_ms && ti.tcpi_last_data_recv > max_age_ms)
        return EMS_ETIMEDOUT;
    return 0;
}

int ems_conn_accept(uv_stream_t *listener, ems_tls_config_t *tls, const ems_conn_options_t *opts,
                    const ems_conn_callbacks_t *cbs, void *user, ems_conn_t **out)
{
    *out = NULL;
    if (tls && !ems_tls_config_is_server(tls))
        return EMS_EINVAL;
    ems_conn_t *c = conn_alloc(listener->loop, 0, opts, cbs, user);
    if (!c) {
        /* Still take the connection off the backlog, or libuv would report
         * it again and again. */
        uv_tcp_t *t = malloc(sizeof *t);
        if (t) {
            uv_tcp_init(listener->loop, t);
            (void)uv_accept(listener, (uv_stream_t *)t);
            uv_close((uv_handle_t *)t, conn_free_handle_cb);
        }
        return EMS_ENOMEM;
    }
    int rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        conn_discard(c);
        return rc;
    }
    if ((rc = conn_backlog_check(&c->tcp, opts ? opts->max_backlog_age_ms : 0)) < 0) {
        conn_discard(c);
        return rc;
    }
    if (opts && opts->filter) {
        struct sockaddr_storage ss;
        int n = sizeof ss;
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &n) < 0 ||
            opts->filter((const struct sockaddr *)&ss, opts->filter_arg)) {
            conn_discard(c);
            return EMS_EPERM;
        }
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (opts) {
        c->out_acct = opts->out_account;
        c->gate = opts->gate;
    }
    if (tls) {
        /* The session itself is made on the first bytes (tls_process). */
        c->tls_cfg = ems_tls_config_ref(tls);
        c->tp = &conn_tls;
        c->state = CONN_HANDSHAKE;
    } else {
        c->state = CONN_OPEN;
    }
    conn_update_reading(c);
    if (c->state == CONN_CLOSED) {
        c->silent = 1;
        return EMS_EIO;
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ public API */

void ems_conn_set_callbacks(ems_conn_t *c, const ems_conn_callbacks_t *cbs, void *user)
{
    if (cbs)
        c->cbs = *cbs;
    else
        memset(&c->cbs, 0, sizeof c->cbs);
    c->user = user;
}

void *ems_conn_user(const ems_conn_t *c)
{
    return c->user;
}

uv_loop_t *ems_conn_loop(const ems_conn_t *c)
{
    return c->loop;
}

size_t ems_conn_out_pending(const ems_conn_t *c)
{
    return ems_buf_len(&c->out) + ems_buf_len(&c->inflight);
}

size_t ems_conn_out_room(const ems_conn_t *c)
{
    size_t used = ems_conn_out_pending(c);
    size_t over = c->tp->overhead(c->max_out);
    if (used + over >= c->max_out)
        return 0;
    return c->max_out - used - over;
}

int ems_conn_write(ems_conn_t *c, const void *data, size_t len)
{
    if (c->state >= CONN_CLOSING)
        return EMS_ECLOSED;
    if (c->state != CONN_OPEN)
        return EMS_EAGAIN;
    if (len == 0)
        return 0;
    size_t used = ems_conn_out_pending(c);
    size_t need = len + c->tp->overhead(len);
    if (need > c->max_out || used > c->max_out - need)
        return EMS_ENOSPC;
    int rc = c->tp->write(c, data, len);
    if (rc < 0)
        return rc;
    conn_flush(c);
    return 0;
}

void ems_conn_read_stop(ems_conn_t *c)
{
    c->user_reading = 0;
    conn_update_reading(c);
}

int ems_conn_read_start(ems_conn_t *c)
{
    if (c->state == CONN_CLOSED)
        return EMS_ECLOSED;
    c->user_reading = 1;
    conn_update_reading(c);
    return 0;
}

void ems_conn_gate_resume(ems_conn_t *c)
{
    if (!c->hs_wait)
        return;
    c->hs_wait = 0;
    ems_buf_t held = c->hs_held;
    ems_buf_init(&c->hs_held, 4 * CONN_READ_SIZE);
    if (c->state == CONN_HANDSHAKE)
        tls_process(c, ems_buf_data(&held), ems_buf_len(&held));
    ems_buf_free(&held);
    conn_update_reading(c);
}

void ems_conn_set_out_account(ems_conn_t *c, size_t *acct)
{
    if (c->out_acct)
        *c->out_acct -= c->acct_held;
    c->out_acct = acct;
    c->acct_held = 0;
    conn_account(c);
}

static void conn_timer_cb(uv_timer_t *t)
{
    ems_conn_t *c = t->data;
    if (c->state == CONN_CLOSING) {
        conn_finish(c, 0);
        return;
    }
    if (c->state == CONN_CLOSED)
        return;
    if (c->cbs.on_timer)
        c->cbs.on_timer(c);
    else
        conn_fail(c, EMS_ETIMEDOUT, "deadline passed");
}

void ems_conn_set_timer(ems_conn_t *c, uint64_t ms)
{
    if (c->state >= CONN_CLOSING)
        return;
    if (ms == 0) {
        uv_timer_stop(&c->timer);
        return;
    }
    /* libuv measures from the time cached at the start of the loop turn;
     * after a long callback (or blocking start-up work) that time is stale
     * and a short deadline would fire at once. */
    uv_update_time(c->loop);
    uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

void ems_conn_close(ems_conn_t *c, unsigned deadline_ms)
{
    if (c->state >= CONN_CLOSING)
        return;
    if (c->state != CONN_OPEN) {
        /* Nothing was exchanged yet: there is nothing to close politely. */
        conn_finish(c, 0);
        return;
    }
    c->state = CONN_CLOSING;
    c->close_ms = deadline_ms ? deadline_ms : CONN_DEFAULT_CLOSE_MS;
    uv_timer_start(&c->timer, conn_timer_cb, c->close_ms, 0);
    c->tp->start_close(c);
    conn_update_reading(c); /* drain the peer's bytes while lingering */
    if (c->state != CONN_CLOSING)
        return;
    conn_flush(c);
    if (!c->writing)
        conn_shutdown(c);
}

void ems_conn_abort(ems_conn_t *c, int status)
{
    conn_finish(c, status);
}

int ems_conn_is_closing(const ems_conn_t *c)
{
    return c->state >= CONN_CLOSING;
}

int ems_conn_is_tls(const ems_conn_t *c)
{
    return c->tp == &conn_tls || c->tls_cfg != NULL;
}

int ems_conn_peer(const ems_conn_t *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof ss;
    char ip[64];
    if (len == 0)
        return EMS_EINVAL;
    buf[0] = '\0';
    if (c->state == CONN_CLOSED || c->tcp_closing)
        return EMS_ECLOSED;
    int rc = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &n);
    if (rc < 0)
        return rc;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(buf, len, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    }
    return 0;
}

const char *ems_conn_error(const ems_conn_t *c)
{
    return c->err;
}

void ems_conn_stats(const ems_conn_t *c, ems_conn_stats_t *out)
{
    *out = c->stats;
}

void ems_conn_set_free_hook(ems_conn_t *c, void (*hook)(ems_conn_t *, void *), void *arg)
{
    c->free_hook = hook;
    c->free_arg = arg;
}
