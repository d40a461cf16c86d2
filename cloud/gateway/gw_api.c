/* gw_api.c: the REST API's entry (docs/api.md): the dispatch of every
 * request, the helpers the resource files share (gw_api_int.h), /healthz,
 * /metrics and the dashboard's static files. The resources have a file
 * each: gw_api_session.c (login, logout), gw_api_devices.c (devices,
 * history, energy, sessions), gw_api_commands.c, gw_api_alarms.c.
 *
 * Everything durable or historical is asked of the DB writer (QUERY over the
 * link); the gateway adds what only it knows (who is online, since when, the
 * newest live packet, in-flight commands). A request that needs the DB
 * writer while the link is down gets 503.
 *
 * Cross-site rules (docs/api.md): the session cookie is SameSite=Strict;
 * a POST must say Content-Type: application/json (415), and an Origin
 * header, when present, must be the gateway's own (403).
 */
#include "gw_api_int.h"

#include "auth.h"
#include "error.h"
#include "gw_static.h"
#include "jread.h"
#include "jsonw.h"
#include "log.h"
#include "timefmt.h"

#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STATIC_MAX (16u << 20)

/* ------------------------------------------------------------ small helpers */

/* Answers with `o` (consumed). Numbers are written in the shortest text
 * that reads back exactly, as the device sent them (ems_jw_json); jansson's
 * dump sizes the buffer: the writer's text is at most three times as long
 * (it escapes a newline as \u000a where jansson writes \n). */
void gw_api_reply(ems_server_req_t *req, int status, json_t *o, const char *extra)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    size_t cap = s ? 3 * strlen(s) + 64 : 0;
    char *out = s ? malloc(cap) : NULL;
    int n = EMS_ENOMEM;
    if (out) {
        ems_jw_t w;
        ems_jw_init(&w, out, cap);
        ems_jw_json(&w, o);
        n = ems_jw_finish(&w);
    }
    json_decref(o);
    if (!s) {
        free(out);
        gw_reply_error(req, 500, "out of memory", NULL);
        return;
    }
    if (n >= 0)
        gw_reply_json(req, status, out, (size_t)n, extra);
    else
        gw_reply_json(req, status, s, strlen(s), extra); /* not expected; jansson's text is valid */
    free(out);
    free(s);
}

json_t *gw_api_time(int64_t ms)
{
    char t[EMS_TIME_STR_MAX];
    if (ms <= 0 || ems_time_format(ms, t, sizeof t) < 0)
        return json_null();
    return json_string(t);
}

gw_api_ctx_t *gw_api_ctx_new(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    return gw_api_ctx_alloc(gw, req, r, sizeof(gw_api_ctx_t));
}

gw_api_ctx_t *gw_api_ctx_alloc(gw_t *gw, ems_server_req_t *req, const gw_route_t *r, size_t size)
{
    gw_api_ctx_t *c = calloc(1, size);
    if (!c) {
        gw_reply_error(req, 503, "out of memory", NULL);
        return NULL;
    }
    c->gw = gw;
    c->req = req;
    if (r)
        c->route = *r;
    c->t0 = ems_time_mono_ms();
    return c;
}

void gw_api_ctx_free(gw_api_ctx_t *c)
{
    json_decref(c->acc);
    memset(c->password, 0, sizeof c->password);
    free(c);
}

/* Sends a query for `c` on behalf of the session's user (the link bounds
 * each user's share, gw_link.h); on refusal answers 429 or 503 with
 * Retry-After and frees c. */
int gw_api_ask(gw_api_ctx_t *c, json_t *q, gw_link_result_fn fn)
{
    char *s = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    gw_session_t who;
    const char *user = c->sess.user[0]                       ? c->sess.user
                       : gw_req_session(c->gw, c->req, &who) ? who.user
                                                             : "";
    int rc = s ? gw_link_query_user(c->gw->link, user, s, strlen(s), fn, c) : EMS_ENOMEM;
    free(s);
    if (rc < 0) {
        char msg[300], hdr[40];
        unsigned retry;
        int st = gw_link_refusal(c->gw->link, rc, user, msg, sizeof msg, &retry);
        snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", retry);
        gw_api_reply(c->req, st, json_pack("{ss}", "error", msg), hdr);
        gw_api_ctx_free(c);
    }
    return rc;
}

/* Common start of every query callback: the client may be gone, the query
 * may have failed. Returns the parsed result, or NULL after answering. */
json_t *gw_api_result(gw_api_ctx_t *c, int status, const char *json, size_t len)
{
    ems_metric_observe(c->gw->m.query_latency, (double)(ems_time_mono_ms() - c->t0) / 1000.0);
    if (ems_server_req_gone(c->req)) {
        ems_server_respond(c->req, 500, NULL, NULL, NULL, 0);
        return NULL;
    }
    json_error_t je;
    json_t *o = len ? json_loadb(json, len, 0, &je) : NULL;
    if (status < 0) {
        const char *e = json_string_value(json_object_get(o, "error"));
        if (status == EMS_EINVAL) {
            gw_reply_error(c->req, 400, e ? e : "bad request", NULL);
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "DB writer unavailable (%s%s%s)", ems_strerror(status),
                     e ? ": " : "", e ? e : "");
            gw_reply_error(c->req, 503, msg, NULL);
        }
        json_decref(o);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        gw_reply_error(c->req, 502, "malformed answer from the DB writer", NULL);
        return NULL;
    }
    return o;
}

int gw_api_query_limit(ems_server_req_t *req, int def, int max, int *out)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    char v[32];
    int rc = gw_query_get(m->query ? m->query : "", m->query ? strlen(m->query) : 0, "limit", v,
                          sizeof v);
    *out = def;
    if (rc < 0)
        return rc == EMS_ENOENT ? 0 : rc;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || end == v || n < 1 || n > max)
        return EMS_EINVAL;
    *out = (int)n;
    return 0;
}

/* ------------------------------------------------------------ operations */

/* 200 only when the DB writer can commit (gw_link_health says why not). */
static void handle_healthz(gw_t *gw, ems_server_req_t *req)
{
    if (gw->stopping) {
        gw_reply_json(req, 503, "{\"status\":\"stopping\"}", 21, NULL);
        return;
    }
    char body[768];
    int st = gw_link_health(gw->link, body, sizeof body);
    gw_reply_json(req, st, body, strlen(body), NULL);
}

static void handle_metrics(gw_t *gw, ems_server_req_t *req)
{
    ems_buf_t out = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    if (ems_metrics_render(gw->metrics, &out) < 0) {
        ems_buf_free(&out);
        gw_reply_error(req, 500, "out of memory", NULL);
        return;
    }
    ems_server_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                       "Cache-Control: no-store\r\n", ems_buf_data(&out), ems_buf_len(&out));
    ems_buf_free(&out);
}

static void handle_static(gw_t *gw, ems_server_req_t *req, unsigned method)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    char file[4096];
    char *data = NULL;
    size_t len = 0;
    if (gw_static_resolve(gw->cfg.static_dir, m->path, strlen(m->path), file, sizeof file) != 0 ||
        gw_static_read(file, STATIC_MAX, &data, &len) != 0) {
        ems_server_respond(req, 404, "text/plain; charset=utf-8", NULL, "not found\n", 10);
        return;
    }
    char hdr[256];
    /* X-Content-Type-Options and the other security headers come with every
     * response (gw_static_security_headers). */
    snprintf(hdr, sizeof hdr, "Cache-Control: %s\r\n", gw_static_cache(file));
    ems_server_respond(req, 200, gw_static_type(file), hdr, data, method == GW_M_HEAD ? 0 : len);
    free(data);
}

/* ------------------------------------------------------------ dispatch */

static bool is_json(const char *ct)
{
    if (!ct)
        return false;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

void gw_api_handle(gw_t *gw, ems_server_req_t *req, const gw_route_t *r, unsigned method)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    gw_api_abuse_init(gw);
    switch (r->id) {
    case GW_R_HEALTHZ:
        handle_healthz(gw, req);
        return;
    case GW_R_METRICS:
        handle_metrics(gw, req);
        return;
    case GW_R_STATIC:
        handle_static(gw, req, method);
        return;
    case GW_R_NOT_FOUND:
        gw_reply_error(req, 404, "no such resource", NULL);
        return;
    default:
        break;
    }
    if (method == GW_M_POST) {
        const char *origin = ems_http_msg_header(m, "Origin");
        if (!gw_origin_ok(gw, origin, ems_http_msg_header(m, "Host"))) {
            ems_log_warn("POST %s refused: foreign Origin %s", m->path, origin);
            gw_reply_error(req, 403, "foreign Origin", NULL);
            return;
        }
        if (r->id != GW_R_LOGOUT && !is_json(ems_http_msg_header(m, "Content-Type"))) {
            gw_reply_error(req, 415, "the body must be application/json", NULL);
            return;
        }
    }
    if (r->id == GW_R_LOGIN) {
        gw_api_login(gw, req);
        return;
    }
    if (r->id == GW_R_LOGOUT) {
        gw_api_logout(gw, req);
        return;
    }
    gw_session_t s;
    if (!gw_req_session(gw, req, &s)) {
        gw_reply_error(req, 401, "not logged in", NULL);
        return;
    }
    switch (r->id) {
    case GW_R_ME:
        gw_api_reply(req, 200,
                     json_pack("{ssss}", "username", s.user, "role", ems_auth_role_name(s.role)),
                     NULL);
        return;
    case GW_R_DEVICES:
        gw_api_devices(gw, req, r);
        return;
    case GW_R_DEVICE:
        gw_api_device(gw, req, r);
        return;
    case GW_R_DEVICE_TELEMETRY:
        gw_api_history(gw, req, r);
        return;
    case GW_R_DEVICE_COMMANDS:
        if (method == GW_M_POST)
            gw_api_command_post(gw, req, r, &s);
        else
            gw_api_commands_list(gw, req, r);
        return;
    case GW_R_DEVICE_SESSIONS:
        gw_api_sessions(gw, req, r);
        return;
    case GW_R_DEVICE_ENERGY:
    case GW_R_ENERGY:
        gw_api_energy(gw, req, r);
        return;
    case GW_R_COMMAND:
        gw_api_command_get(gw, req, r);
        return;
    case GW_R_ALARMS:
    case GW_R_DEVICE_ALARMS:
        gw_api_alarms_list(gw, req, r);
        return;
    case GW_R_ALARM_ACK:
        gw_api_alarm_ack(gw, req, r, &s);
        return;
    default:
        gw_reply_error(req, 404, "no such resource", NULL);
        return;
    }
}
