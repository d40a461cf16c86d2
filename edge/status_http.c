/* status_http.c: GET /status, GET /metrics, POST /sim/fault (see
 * status_http.h). */
#include "status_http.h"

#include "error.h"
#include "jsonw.h"
#include "log.h"
#include "server.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SH__BODY_MAX (256 * 1024)

struct ems_status_http {
    ems_server_t *srv;
    ems_status_http_callbacks_t cbs;
    void *ud;
    void (*on_stopped)(void *arg);
    void *stop_arg;
};

static bool sh__loopback(ems_server_req_t *req)
{
    ems_conn_t *c = ems_server_req_conn(req);
    char peer[80];
    if (!c || ems_conn_peer(c, peer, sizeof peer) != 0)
        return false;
    return strncmp(peer, "127.", 4) == 0 || strncmp(peer, "[::1]", 5) == 0 ||
           strncmp(peer, "[::ffff:127.", 12) == 0;
}

static void sh__json_reply(ems_server_req_t *req, int status, bool ok, const char *msg)
{
    char body[1024];
    ems_jw_t w;
    ems_jw_init(&w, body, sizeof body);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "ok");
    ems_jw_bool(&w, ok);
    ems_jw_key(&w, ok ? "applied" : "error");
    ems_jw_str(&w, msg);
    ems_jw_obj_close(&w);
    int n = ems_jw_finish(&w);
    if (n < 0)
        n = snprintf(body, sizeof body, "{\"ok\":%s}", ok ? "true" : "false");
    ems_server_respond(req, status, "application/json", NULL, body, (size_t)n);
}

static void sh__text(ems_server_req_t *req, int status, const char *extra, const char *text)
{
    ems_server_respond(req, status, "text/plain; charset=utf-8", extra, text, strlen(text));
}

static void sh__body(ems_status_http_t *s, ems_server_req_t *req, bool head,
                     int (*fn)(void *, ems_buf_t *), const char *ctype)
{
    ems_buf_t b;
    ems_buf_init(&b, SH__BODY_MAX);
    int rc = fn(s->ud, &b);
    if (rc < 0)
        sh__text(req, 500, NULL, "internal error\n");
    else
        ems_server_respond(req, 200, ctype, "Cache-Control: no-store\r\n",
                           head ? NULL : ems_buf_data(&b), head ? 0 : ems_buf_len(&b));
    ems_buf_free(&b);
}

static void sh__handle(ems_server_req_t *req, void *user)
{
    ems_status_http_t *s = user;
    const ems_http_msg_t *m = ems_server_req_msg(req);
    bool get = strcmp(m->method, "GET") == 0, head = strcmp(m->method, "HEAD") == 0;
    bool post = strcmp(m->method, "POST") == 0;

    if (strcmp(m->path, "/status") == 0 || strcmp(m->path, "/metrics") == 0) {
        if (!get && !head) {
            sh__text(req, 405, "Allow: GET, HEAD\r\n", "method not allowed\n");
            return;
        }
        if (m->path[1] == 's')
            sh__body(s, req, head, s->cbs.status_json, "application/json");
        else
            sh__body(s, req, head, s->cbs.metrics, "text/plain; version=0.0.4; charset=utf-8");
        return;
    }
    if (strcmp(m->path, "/sim/fault") == 0) {
        if (!post) {
            sh__text(req, 405, "Allow: POST\r\n", "method not allowed\n");
            return;
        }
        if (!s->cbs.sim) {
            sh__json_reply(req, 404, false,
                           "fault injection is off (needs backend = sim and sim_control = true)");
            return;
        }
        if (!sh__loopback(req)) {
            sh__json_reply(req, 403, false, "fault injection is allowed from loopback only");
            return;
        }
        char msg[512];
        /* Parameters may come in the query or as a form body. */
        const char *q = m->query;
        size_t qlen = strlen(q);
        if (qlen == 0 && m->body_len) {
            q = m->body;
            qlen = m->body_len;
            while (qlen && (q[qlen - 1] == '\n' || q[qlen - 1] == '\r'))
                qlen--;
        }
        int rc = s->cbs.sim(s->ud, q, qlen, msg, sizeof msg);
        if (rc == 0)
            ems_log_warn("status: fault injection: %s", msg);
        sh__json_reply(req, rc == 0 ? 200 : 400, rc == 0, msg);
        return;
    }
    sh__text(req, 404, NULL, "not found (try /status or /metrics)\n");
}

int ems_status_http_start(uv_loop_t *loop, const char *bind, uint16_t port,
                          const ems_status_http_callbacks_t *cbs, void *ud, ems_status_http_t **out)
{
    *out = NULL;
    ems_status_http_t *s = calloc(1, sizeof *s);
    if (!s)
        return EMS_ENOMEM;
    s->cbs = *cbs;
    s->ud = ud;
    ems_server_options_t o;
    memset(&o, 0, sizeof o);
    o.host = bind;
    o.port = port;
    /* A LAN endpoint for a person or a scraper: a handful of connections
     * is plenty, and a flood must not cost the controller memory. */
    o.max_connections = 16;
    o.keepalive_timeout_ms = 10000;
    o.handshake_timeout_ms = 5000;
    o.limits.max_body = 4096;
    int rc = ems_server_start(loop, &o, sh__handle, s, &s->srv);
    if (rc < 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

uint16_t ems_status_http_port(const ems_status_http_t *s)
{
    return ems_server_port(s->srv);
}

void ems_status_http_set_sim(ems_status_http_t *s, int (*sim)(void *ud, const char *query,
                                                              size_t len, char *msg, size_t cap))
{
    s->cbs.sim = sim;
}

static void sh__stopped(void *arg)
{
    ems_status_http_t *s = arg;
    void (*cb)(void *) = s->on_stopped;
    void *a = s->stop_arg;
    free(s);
    if (cb)
        cb(a);
}

void ems_status_http_stop(ems_status_http_t *s, void (*on_stopped)(void *arg), void *arg)
{
    s->on_stopped = on_stopped;
    s->stop_arg = arg;
    ems_server_stop(s->srv, sh__stopped, s);
}
