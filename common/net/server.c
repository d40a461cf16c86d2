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
#define SERVER_DEFAULT_KEEPALIVE_MS 30000
#define SERVER_CLOSE_MS 2000

struct ems_server_req {
    ems_server_t *srv;
    ems_conn_t *conn; /* NULL once closed or upgraded */
    ems_http_parser_t *parser;
    ems_buf_t stash; /* received bytes not parsed yet */
    int refs;
    int pending;    /* a request waits for respond/upgrade */
    int in_handler; /* hc_process is running */
    int kick;       /* the timer means "parse the stash", not a deadline */
    struct ems_server_req *prev, *next;
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
    ems_server_req_t *reqs;                   /* those still speaking HTTP */
    int stopping, listener_closed;
    void (*on_stopped)(void *);
    void *stop_arg;
};

static void hc_process(ems_server_req_t *hc);

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
    if (!s->stopping || !s->listener_closed || s->n_conns || s->n_reqs)
        return;
    void (*cb)(void *) = s->on_stopped;
    void *arg = s->stop_arg;
    ems_tls_config_unref(s->tls);
    free(s);
    if (cb)
        cb(arg);
}

static void hc_unlink(ems_server_req_t *hc)
{
    ems_server_t *s = hc->srv;
    if (hc->prev)
        hc->prev->next = hc->next;
    else if (s->reqs == hc)
        s->reqs = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    hc->prev = hc->next = NULL;
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
    if (ems_buf_append(&hc->stash, data, len) < 0) {
        /* More pipelined bytes than one full request may hold. */
        ems_conn_abort(c, EMS_ENOSPC);
        return;
    }
    if (!hc->pending)
        hc_process(hc);
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
    int rc = ems_conn_accept(listener, s->tls, &s->conn_opts, &hc_cbs, hc, &c);
    if (rc < 0) {
        ems_http_parser_free(hc->parser);
        free(hc);
        ems_log_warn("server: cannot accept: %s", ems_strerror(rc));
        return;
    }
    hc->conn = c;
    hc->refs = 1;
    s->stats.accepted++;
    s->n_reqs++;
    s->n_conns++;
    ems_conn_set_free_hook(c, server_conn_freed, s);
    hc->next = s->reqs;
    if (s->reqs)
        s->reqs->prev = hc;
    s->reqs = hc;
    ems_conn_set_timer(c, s->handshake_ms);
}

/* ------------------------------------------------------------ listener */

static void server_listener_closed(uv_handle_t *h)
{
    ems_server_t *s = h->data;
    s->listener_closed = 1;
    server_maybe_free(s);
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
    if (o->headers)
        strcpy(s->headers, o->headers);
    s->max_conn = o->max_connections ? o->max_connections : SERVER_DEFAULT_MAX_CONN;
    s->handshake_ms =
        o->handshake_timeout_ms ? o->handshake_timeout_ms : SERVER_DEFAULT_HANDSHAKE_MS;
    s->keepalive_ms =
        o->keepalive_timeout_ms ? o->keepalive_timeout_ms : SERVER_DEFAULT_KEEPALIVE_MS;
    if (o->tls)
        s->tls = ems_tls_config_ref(o->tls);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    int rc = server_bind(s, o);
    if (rc < 0) {
        /* The handle is initialised: free the server from its close
         * callback, as for any stop. */
        s->stopping = 1;
        uv_close((uv_handle_t *)&s->listener, server_listener_closed);
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
    return 0;
}

size_t ems_server_connections(const ems_server_t *s)
{
    return s->n_conns;
}

void ems_server_stats(const ems_server_t *s, ems_server_stats_t *out)
{
    *out = s->stats;
}

void ems_server_stop(ems_server_t *s, void (*on_stopped)(void *arg), void *arg)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    s->on_stopped = on_stopped;
    s->stop_arg = arg;
    uv_close((uv_handle_t *)&s->listener, server_listener_closed);
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
    hc_finish(req, keep);
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
    hc_detach(req);
    rc =
        ems_ws_accept(c, opts, cbs, user, ems_buf_data(&req->stash), ems_buf_len(&req->stash), out);
    ems_buf_clear(&req->stash);
    hc_finish(req, true);
    return rc;
}
