/* gw_api.c: the REST API (docs/api.md), /healthz, /metrics and the
 * dashboard's static files.
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
#include "gw.h"

#include "error.h"
#include "gw_auth.h"
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
#define RANGE_MAX_MS (400LL * 86400 * 1000)

/* ------------------------------------------------------------ small helpers */

/* Answers with `o` (consumed). Numbers are written in the shortest text
 * that reads back exactly, as the device sent them (ems_jw_json); jansson's
 * dump sizes the buffer: the writer's text is at most three times as long
 * (it escapes a newline as \u000a where jansson writes \n). */
static void reply_jansson(ems_server_req_t *req, int status, json_t *o, const char *extra)
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

static json_t *time_json(int64_t ms)
{
    char t[EMS_TIME_STR_MAX];
    if (ms <= 0 || ems_time_format(ms, t, sizeof t) < 0)
        return json_null();
    return json_string(t);
}

/* A request context for handlers that wait for the DB writer. */
typedef struct {
    gw_t *gw;
    ems_server_req_t *req;
    gw_route_t route;
    gw_session_t sess;
    int64_t t0, from, to;
    int bucket; /* 0 raw, else seconds */
    bool csv;
    int limit;
    json_t *acc; /* partial answer being built */
    char password[256];
    char hash[GW_AUTH_HASH_MAX];
    gw_role_t role;
    int verify_rc;
    uv_work_t work;
    char peer[64];
    gw_login_waiter_t lw; /* login: its place in gw_login_t */
} ctx_t;

static ctx_t *ctx_new(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    ctx_t *c = calloc(1, sizeof *c);
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

static void ctx_free(ctx_t *c)
{
    json_decref(c->acc);
    memset(c->password, 0, sizeof c->password);
    free(c);
}

/* Sends a query for `c` on behalf of the session's user (the link bounds
 * each user's share, gw_link.h); on refusal answers 429 or 503 with
 * Retry-After and frees c. */
static int ask(ctx_t *c, json_t *q, gw_link_result_fn fn)
{
    char *s = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    gw_session_t who;
    const char *user = c->sess.user[0] ? c->sess.user
                       : gw_req_session(c->gw, c->req, &who) ? who.user
                                                             : "";
    int rc = s ? gw_link_query_user(c->gw->link, user, s, strlen(s), fn, c) : EMS_ENOMEM;
    free(s);
    if (rc < 0) {
        char msg[300], hdr[40];
        unsigned retry;
        int st = gw_link_refusal(c->gw->link, rc, user, msg, sizeof msg, &retry);
        snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", retry);
        reply_jansson(c->req, st, json_pack("{ss}", "error", msg), hdr);
        ctx_free(c);
    }
    return rc;
}

/* Common start of every query callback: the client may be gone, the query
 * may have failed. Returns the parsed result, or NULL after answering. */
static json_t *result_or_reply(ctx_t *c, int status, const char *json, size_t len)
{
    gw_metric_observe(c->gw->m.query_latency, (double)(ems_time_mono_ms() - c->t0) / 1000.0);
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

/* ------------------------------------------------------------ commands: tracker callbacks */

int gw_api_cmd_deliver(void *ud, const gw_cmd_t *c)
{
    gw_t *gw = ud;
    int rc = gw_device_send_command(gw, c);
    /* Not connected here: maybe to another gateway (gw_bus.h). */
    if (rc == EMS_ENOENT && gw->bus)
        rc = gw_bus_forward_command(gw, c);
    return rc;
}

static json_t *cmd_record(const gw_cmd_t *c)
{
    char buf[GW_CMD_JSON_MAX];
    int n = gw_cmd_to_json(c, buf, sizeof buf);
    json_error_t je;
    return n > 0 ? json_loadb(buf, (size_t)n, 0, &je) : NULL;
}

void gw_api_cmd_changed(void *ud, const gw_cmd_t *c)
{
    gw_t *gw = ud;
    gw_metric_inc(gw->m.cmd_status[c->status]);
    json_t *rec = cmd_record(c);
    if (!rec)
        return;
    /* Audit trail: the command once, then each status change. */
    json_t *ev = json_object();
    const char *at_key = "at";
    if (c->nhist <= 1) {
        json_object_set_new(ev, "type", json_string("command"));
        static const char *const keys[] = {"command_id", "device_id", "action", "payload",
                                           "created_by", "created_at", "expires_at", "status"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            json_t *v = json_object_get(rec, keys[i]);
            if (v && !json_is_null(v))
                json_object_set(ev, keys[i], v);
        }
        at_key = NULL;
    } else {
        json_object_set_new(ev, "type", json_string("command_status"));
        json_object_set(ev, "command_id", json_object_get(rec, "command_id"));
        json_object_set(ev, "status", json_object_get(rec, "status"));
    }
    if (at_key)
        json_object_set_new(ev, at_key, time_json(c->updated_ms));
    if (c->reason[0])
        json_object_set_new(ev, "reason", json_string(c->reason));
    if (c->message[0])
        json_object_set_new(ev, "message", json_string(c->message));
    json_object_set_new(ev, "actor",
                        json_string(c->status == GW_CMD_ACCEPTED || c->status == GW_CMD_REJECTED ||
                                            c->status == GW_CMD_COMPLETED ||
                                            (c->status == GW_CMD_FAILED && c->reason[0] &&
                                             strncmp(c->reason, "GATEWAY_", 8) != 0)
                                        ? c->device_id
                                    : c->nhist <= 1 ? c->created_by
                                                    : "gateway"));
    char *s = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (s) {
        gw_event(gw, s, strlen(s));
        free(s);
    }
    /* Dashboards watching the device see the change at once. */
    json_t *msg = json_pack("{sssO}", "type", "command", "command", rec);
    s = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    json_decref(rec);
    if (s) {
        gw_dash_publish_shared(gw, c->device_id, s, strlen(s));
        free(s);
    }
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
    char *out;
    size_t len;
    if (gw_metrics_render(gw->metrics, &out, &len) < 0) {
        gw_reply_error(req, 500, "out of memory", NULL);
        return;
    }
    ems_server_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                       "Cache-Control: no-store\r\n", out, len);
    free(out);
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
    ems_server_respond(req, 200, gw_static_type(file), hdr, data,
                       method == GW_M_HEAD ? 0 : len);
    free(data);
}

/* ------------------------------------------------------------ sessions */

static bool secure_cookies(const gw_t *gw, ems_server_req_t *req)
{
    const char *p = ems_http_msg_header(ems_server_req_msg(req), "X-Forwarded-Proto");
    return gw->cfg.tls || (p && strcasecmp(p, "https") == 0);
}

/* The client address without the port (so one host is one bucket; an
 * IPv6 client counts by its /64, gw_login_addr_key). */
static void peer_host(ems_server_req_t *req, char *out, size_t cap)
{
    char host[64] = "?";
    ems_conn_t *c = ems_server_req_conn(req);
    if (c)
        ems_conn_peer(c, host, sizeof host);
    char *colon = strrchr(host, ':');
    if (colon && colon != host && (host[0] != '[' || colon[-1] == ']'))
        *colon = '\0';
    gw_login_addr_key(host, out, cap);
}

void gw_api_abuse_init(gw_t *gw)
{
    if (gw->abuse_ready)
        return;
    gw->abuse_ready = true;
    gw_login_init(&gw->login, gw->cfg.login_per_min, (int)gw->cfg.login_hash_workers,
                  (int)gw->cfg.login_queue);
    if (gw_neg_init(&gw->dev_neg, 4096, gw->cfg.auth_negative_s * 1000) != 0)
        ems_log_warn("no memory for the unknown-device cache; every upgrade is looked up");
    gw->log_login.what = "login refused";
    gw->log_upgrade.what = "device upgrade refused";
    gw->log_foreign.what = "packet for another device refused";
    gw->log_ts.what = "packet refused for its timestamp";
    gw->log_login.interval_ms = gw->log_upgrade.interval_ms = gw->log_foreign.interval_ms =
        gw->log_ts.interval_ms = 10000;
}

void gw_api_tick(gw_t *gw, int64_t now_mono)
{
    if (!gw->abuse_ready)
        return;
    ems_log_limit_flush(&gw->log_login, now_mono);
    ems_log_limit_flush(&gw->log_upgrade, now_mono);
    ems_log_limit_flush(&gw->log_foreign, now_mono);
    ems_log_limit_flush(&gw->log_ts, now_mono);
    if (now_mono - gw->abuse_sweep_mono >= 60000) {
        gw->abuse_sweep_mono = now_mono;
        gw_login_sweep(&gw->login, now_mono);
        gw_session_revoked_sweep(&gw->revoked, ems_time_now_ms() / 1000);
    }
}

void gw_api_free(gw_t *gw)
{
    gw_login_free(&gw->login);
    gw_session_revoked_free(&gw->revoked);
    gw_neg_free(&gw->dev_neg);
    gw_map_free(&gw->auth_pending);
}

bool gw_api_session_revoked(const gw_t *gw, const char *value, size_t len)
{
    return gw_session_is_revoked(&gw->revoked, value, len);
}

/* A hash of a password nobody has, so an unknown user costs the same
 * PBKDF2 time as a known one (no user enumeration by timing): the same
 * iteration count as every current hash. */
#define STR_(x) #x
#define STR(x) STR_(x)
#define DUMMY_HASH                                                                                 \
    "pbkdf2-sha256$" STR(GW_AUTH_PBKDF2_ITER) "$00000000000000000000000000000000$"                 \
    "0000000000000000000000000000000000000000000000000000000000000000"

static void login_start(ctx_t *c);

/* Ends the login attempt `c` (its budget and its hash slot), and starts the
 * attempt that was waiting for the slot, if any. */
static void login_end(ctx_t *c, bool ok)
{
    gw_t *gw = c->gw;
    gw_login_waiter_t *next = gw_login_end(&gw->login, &c->lw, ok, ems_time_mono_ms());
    if (!ok)
        gw_metric_inc(gw->m.logins_failed);
    if (next)
        login_start((ctx_t *)(void *)((char *)next - offsetof(ctx_t, lw)));
}

/* Ends `c` with `status` and frees it. A refusal of the password (401) is
 * charged to the address; our own trouble (503) is not. */
static void login_fail_reply(ctx_t *c, int status, const char *why)
{
    login_end(c, status != 503);
    gw_reply_error(c->req, status, why, NULL);
    ctx_free(c);
}

typedef struct {
    gw_t *gw;
    char user[GW_USER_MAX + 1];
    char password[256];
    char old_hash[GW_AUTH_HASH_MAX];
    char new_hash[GW_AUTH_HASH_MAX];
    int rc;
    uv_work_t work;
} rehash_t;

static void rehash_work(uv_work_t *w)
{
    rehash_t *r = w->data;
    r->rc = gw_auth_password_hash(r->password, GW_AUTH_PBKDF2_ITER, r->new_hash,
                                  sizeof r->new_hash);
    memset(r->password, 0, sizeof r->password);
}

/* Stores the new hash with a compare-and-set event (user_rehash,
 * cloud/db/0004): it applies only while the stored hash is still the one
 * the password was checked against, so an `emsctl user passwd`, a role
 * change or a delete in the meantime wins. */
static void rehash_done(uv_work_t *w, int status)
{
    rehash_t *r = w->data;
    gw_t *gw = r->gw;
    gw_login_waiter_t *next = gw_login_put_slot(&gw->login);
    if (next)
        login_start((ctx_t *)(void *)((char *)next - offsetof(ctx_t, lw)));
    if (status == 0 && r->rc == 0 && !gw->stopping) {
        json_t *ev = json_pack("{ssssssss}", "type", "user_rehash", "name", r->user, "old_hash",
                               r->old_hash, "password_hash", r->new_hash);
        char *s = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
        json_decref(ev);
        if (s) {
            gw_event(gw, s, strlen(s));
            free(s);
            gw_metric_inc(gw->m.password_rehashes);
            ems_log_info("password hash of '%s' raised to %d iterations", r->user,
                         GW_AUTH_PBKDF2_ITER);
        }
    }
    memset(r, 0, sizeof *r);
    free(r);
}

/* After a successful login with a hash of fewer iterations than the current
 * count: hash the password again in the background, if a hash slot is free
 * now (else at a later login), and store it. */
static void maybe_rehash(ctx_t *c)
{
    gw_t *gw = c->gw;
    long iter = gw_auth_password_iterations(c->hash);
    if (iter <= 0 || iter >= GW_AUTH_PBKDF2_ITER || gw->stopping ||
        !gw_login_take_slot(&gw->login))
        return;
    rehash_t *r = calloc(1, sizeof *r);
    if (!r) {
        gw_login_put_slot(&gw->login); /* nobody can wait: the slot was free */
        return;
    }
    r->gw = gw;
    snprintf(r->user, sizeof r->user, "%s", c->sess.user);
    memcpy(r->password, c->password, sizeof r->password);
    snprintf(r->old_hash, sizeof r->old_hash, "%s", c->hash);
    r->work.data = r;
    if (uv_queue_work(gw->loop, &r->work, rehash_work, rehash_done) != 0) {
        memset(r, 0, sizeof *r);
        free(r);
        gw_login_waiter_t *next = gw_login_put_slot(&gw->login);
        if (next)
            login_start((ctx_t *)(void *)((char *)next - offsetof(ctx_t, lw)));
        return;
    }
    gw_metric_inc(gw->m.password_hashes);
}

static void verify_work(uv_work_t *w)
{
    ctx_t *c = w->data;
    c->verify_rc = gw_auth_password_verify(c->password, c->hash);
}

static void verify_done(uv_work_t *w, int status)
{
    ctx_t *c = w->data;
    gw_t *gw = c->gw;
    bool ok = status == 0 && c->verify_rc == 0 && c->role != GW_ROLE_NONE;
    login_end(c, ok);
    if (!ok) {
        memset(c->password, 0, sizeof c->password);
        ems_log_limited(&gw->log_login, ems_time_mono_ms(), EMS_LOG_WARN,
                        "login of '%s' from %s refused", c->sess.user, c->peer);
        gw_reply_error(c->req, 401, "invalid username or password", NULL);
        ctx_free(c);
        return;
    }
    gw_metric_inc(gw->m.logins_ok);
    c->sess.role = c->role;
    c->sess.expires_s = ems_time_now_ms() / 1000 + GW_SESSION_TTL_S;
    char cookie[GW_SESSION_MAX], hdr[GW_SESSION_MAX + 160];
    int n;
    /* A login in the same second as a logout of that user would sign the
     * very text just revoked: expire a second earlier instead. */
    for (int i = 0;; i++) {
        n = gw_session_sign(&gw->skey, &c->sess, cookie, sizeof cookie);
        if (n < 0 || i == 10 || !gw_session_is_revoked(&gw->revoked, cookie, (size_t)n))
            break;
        c->sess.expires_s--;
    }
    if (n < 0) {
        gw_reply_error(c->req, 500, "cannot sign the session", NULL);
        ctx_free(c);
        return;
    }
    snprintf(hdr, sizeof hdr,
             "Set-Cookie: ems_session=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d%s\r\n",
             cookie, GW_SESSION_TTL_S, secure_cookies(gw, c->req) ? "; Secure" : "");
    ems_log_info("login of '%s' (%s) from %s", c->sess.user, gw_role_name(c->role), c->peer);
    json_t *o = json_pack("{ssss}", "username", c->sess.user, "role", gw_role_name(c->role));
    reply_jansson(c->req, 200, o, hdr);
    maybe_rehash(c);
    ctx_free(c);
}

static void login_user_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    bool gone = ems_server_req_gone(c->req);
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        login_end(c, !gone); /* the DB writer's trouble is not the client's failure */
        ctx_free(c);
        return;
    }
    const char *h = json_string_value(json_object_get(o, "password_hash"));
    const char *role = json_string_value(json_object_get(o, "role"));
    c->role = GW_ROLE_NONE;
    snprintf(c->hash, sizeof c->hash, "%s", DUMMY_HASH);
    if (json_is_true(json_object_get(o, "found")) && h && role &&
        gw_role_parse(role, &c->role) == 0)
        snprintf(c->hash, sizeof c->hash, "%s", h);
    json_decref(o);
    c->work.data = c;
    if (uv_queue_work(c->gw->loop, &c->work, verify_work, verify_done) != 0) {
        login_fail_reply(c, 503, "cannot verify the password now");
        return;
    }
    gw_metric_inc(c->gw->m.password_hashes);
}

/* The attempt holds a hash slot now: look the user up, then hash. */
static void login_start(ctx_t *c)
{
    if (ems_server_req_gone(c->req)) {
        /* The client left while it waited; it still counts as a failure,
         * so dropping connections is no way around the budget. */
        login_end(c, false);
        ems_server_respond(c->req, 499, NULL, NULL, NULL, 0);
        ctx_free(c);
        return;
    }
    json_t *q = json_pack("{ssss}", "op", "user", "name", c->sess.user);
    char *s = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    int rc = s ? gw_link_query(c->gw->link, s, strlen(s), login_user_result, c) : EMS_ENOMEM;
    free(s);
    if (rc < 0)
        login_fail_reply(c, 503, "DB writer unavailable");
}

static void login_refuse(gw_t *gw, ems_server_req_t *req, const char *addr, int verdict,
                         int retry_s)
{
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Retry-After: %d\r\n", retry_s);
    json_t *o;
    int status;
    if (verdict == GW_LOGIN_THROTTLED) {
        gw_metric_inc(gw->m.logins_throttled);
        ems_log_limited(&gw->log_login, ems_time_mono_ms(), EMS_LOG_WARN,
                        "login from %s refused: too many failures or attempts at once", addr);
        status = 429;
        o = json_pack("{ss}", "error", "too many failed logins; try again in a minute");
    } else {
        gw_metric_inc(gw->m.logins_busy);
        ems_log_limited(&gw->log_login, ems_time_mono_ms(), EMS_LOG_WARN,
                        "login from %s refused: too many logins in progress", addr);
        status = 503;
        o = json_pack("{ss}", "error", "too many logins in progress; try again shortly");
    }
    reply_jansson(req, status, o, hdr);
}

static void handle_login(gw_t *gw, ems_server_req_t *req)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    char addr[GW_LOGIN_ADDR_MAX];
    peer_host(req, addr, sizeof addr);
    ems_verr_t err;
    json_t *b = ems_jr_parse(m->body ? m->body : "", m->body_len, &err);
    const char *user, *pw;
    size_t ul, pl;
    if (!b || ems_jr_require_object(b, &err) < 0 ||
        ems_jr_string(b, "", "username", true, &user, &ul, &err) < 0 ||
        ems_jr_string(b, "", "password", true, &pw, &pl, &err) < 0) {
        json_decref(b);
        gw_reply_error(req, 400, err.reason, err.path);
        return;
    }
    ctx_t *c = ctx_new(gw, req, NULL);
    if (!c) {
        json_decref(b);
        return;
    }
    int retry_s;
    int v = gw_login_begin(&gw->login, &c->lw, addr, ems_time_mono_ms(), &retry_s);
    if (v < 0 || v == GW_LOGIN_THROTTLED || v == GW_LOGIN_BUSY) {
        json_decref(b);
        ctx_free(c);
        if (v < 0)
            gw_reply_error(req, 503, "out of memory", NULL);
        else
            login_refuse(gw, req, addr, v, retry_s);
        return;
    }
    snprintf(c->peer, sizeof c->peer, "%s", addr);
    if (!gw_user_name_valid(user, ul) || pl == 0 || pl >= 256 || memchr(pw, 0, pl)) {
        json_decref(b);
        login_fail_reply(c, 401, "invalid username or password");
        return;
    }
    memcpy(c->sess.user, user, ul);
    memcpy(c->password, pw, pl);
    json_decref(b);
    if (v == GW_LOGIN_RUN)
        login_start(c);
    /* else queued: login_end of an earlier attempt starts it */
}

/* Logout ends the session here too: the cookie's MAC is kept until the
 * cookie would have expired, and gw_req_session refuses it meanwhile. Other
 * sessions of the same user (other browsers) stay valid. */
static void handle_logout(gw_t *gw, ems_server_req_t *req)
{
    const char *cookie = ems_http_msg_header(ems_server_req_msg(req), "Cookie");
    size_t len;
    const char *v = cookie ? gw_cookie_find(cookie, strlen(cookie), "ems_session", &len) : NULL;
    gw_session_t s;
    int64_t now_s = ems_time_now_ms() / 1000;
    if (v && gw_session_verify(&gw->skey, v, len, now_s, &s) == 0) {
        int rc = gw_session_revoke(&gw->revoked, v, len, s.expires_s, now_s);
        if (rc < 0) {
            gw_reply_error(req, 503, "cannot end the session now", NULL);
            return;
        }
        if (rc == 1)
            ems_log_warn("logout: the list of ended sessions is full (%d); the one closest to "
                         "its expiry was forgotten",
                         GW_SESSION_REVOKED_MAX);
        gw_metric_inc(gw->m.sessions_revoked);
        ems_log_info("logout of '%s'", s.user);
    }
    char hdr[200];
    snprintf(hdr, sizeof hdr,
             "Set-Cookie: ems_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s\r\n"
             "Cache-Control: no-store\r\n",
             secure_cookies(gw, req) ? "; Secure" : "");
    ems_server_respond(req, 204, NULL, hdr, NULL, 0);
}

/* ------------------------------------------------------------ devices */

/* The gateway's live view of one device merged into `o`. */
static void add_live(gw_t *gw, json_t *o, const char *id)
{
    gw_dev_t *d = gw_dev_get(gw, id, false);
    const gw_bus_presence_t *rp = d && d->conn ? NULL : gw_bus_remote(gw->bus, id);
    if (rp && rp->online) {
        /* Connected to another gateway (gw_bus.h). */
        json_object_set_new(o, "online", json_true());
        json_object_set_new(o, "connected_since", time_json(rp->since_ms));
        json_object_set_new(o, "gateway", json_string(rp->gateway));
    } else {
        json_object_set_new(o, "online", json_boolean(d && d->conn));
        json_object_set_new(o, "connected_since",
                            d && d->conn ? time_json(d->connected_ms) : json_null());
        if (gw->bus)
            json_object_set_new(o, "gateway", d && d->conn ? json_string(gw_bus_id(gw->bus))
                                              : rp ? json_string(rp->gateway) : json_null());
    }
    json_object_set_new(o, "last_seen", d ? time_json(d->last_seen_ms) : json_null());
    /* Its device_info: as it told this gateway, or as its gateway told the
     * others (gw_bus.h). */
    const char *info_json = d && d->info_json ? d->info_json : rp ? rp->info_json : NULL;
    if (info_json) {
        json_error_t je;
        json_t *info = json_loads(info_json, 0, &je);
        const char *k;
        json_t *v;
        json_object_foreach(info, k, v) if (strcmp(k, "type") != 0) json_object_set(o, k, v);
        json_decref(info);
    }
    if (!json_object_get(o, "limits"))
        json_object_set_new(o, "limits", json_null());
    if (d && d->has_last) {
        char pkt[EMS_TELEMETRY_JSON_MAX];
        json_error_t je;
        int n = ems_telemetry_encode(&d->last, pkt, sizeof pkt);
        json_object_set_new(o, "telemetry", n > 0 ? json_loadb(pkt, (size_t)n, 0, &je) : json_null());
    } else if (!json_object_get(o, "telemetry")) {
        json_object_set_new(o, "telemetry", json_null());
    }
}

/* Fills "telemetry" of devices the gateway has no live packet for from the
 * DB writer's `latest` rows, then answers. */
static void devices_latest_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    json_t *list = json_object_get(c->acc, "devices"), *rows = json_object_get(o, "devices");
    size_t i, j;
    json_t *row, *dev;
    json_array_foreach(rows, i, row)
    {
        const char *rid = json_string_value(json_object_get(row, "device_id"));
        json_array_foreach(list, j, dev)
        {
            const char *id = json_string_value(json_object_get(dev, "device_id"));
            if (rid && id && strcmp(rid, id) == 0 && json_is_null(json_object_get(dev, "telemetry"))) {
                json_t *pkt = json_deep_copy(row);
                json_object_del(pkt, "received_at");
                json_object_set_new(dev, "telemetry", pkt);
            }
        }
    }
    json_decref(o);
    if (c->route.id == GW_R_DEVICE) {
        reply_jansson(c->req, 200, json_incref(json_array_get(list, 0)), NULL);
    } else {
        reply_jansson(c->req, 200, json_incref(c->acc), NULL);
    }
    ctx_free(c);
}

static void devices_finish(ctx_t *c)
{
    json_t *list = json_object_get(c->acc, "devices"), *need = json_array(), *dev;
    size_t i;
    json_array_foreach(list, i, dev)
    {
        add_live(c->gw, dev, json_string_value(json_object_get(dev, "device_id")));
        if (json_is_null(json_object_get(dev, "telemetry")))
            json_array_append(need, json_object_get(dev, "device_id"));
    }
    if (json_array_size(need) == 0) {
        json_decref(need);
        devices_latest_result(c, 0, "{\"devices\":[]}", 14);
        return;
    }
    ask(c, json_pack("{ssso}", "op", "latest", "device_ids", need), devices_latest_result);
}

static void devices_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    json_t *out = json_array(), *row;
    size_t i;
    json_array_foreach(json_object_get(o, "devices"), i, row)
    {
        const char *id = json_string_value(json_object_get(row, "device_id"));
        if (!id)
            continue;
        json_t *d = json_pack("{ss}", "device_id", id);
        json_t *rv = json_object_get(row, "revoked_at");
        json_object_set_new(d, "revoked", json_boolean(rv && !json_is_null(rv)));
        json_object_set(d, "created_at", json_object_get(row, "created_at"));
        json_array_append_new(out, d);
    }
    json_decref(o);
    c->acc = json_pack("{so}", "devices", out);
    devices_finish(c);
}

static void device_auth_for_get(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    if (!json_is_true(json_object_get(o, "found"))) {
        json_decref(o);
        gw_reply_error(c->req, 404, "unknown device", NULL);
        ctx_free(c);
        return;
    }
    json_t *d = json_pack("{ss}", "device_id", c->route.id1);
    json_object_set_new(d, "revoked", json_boolean(json_is_true(json_object_get(o, "revoked"))));
    json_decref(o);
    c->acc = json_pack("{s[o]}", "devices", d);
    devices_finish(c);
}

/* ------------------------------------------------------------ history */

typedef struct {
    const char *out, *series;
} col_t;

static const col_t raw_cols[] = {
    {"t", "ts"},
    {"count", NULL},
    {"seq", "seq"},
    {"state", "state"},
    {"mode", "mode"},
    {"target_mode", "target_mode"},
    {"soc", "battery_soc"},
    {"battery_power", "battery_power"},
    {"battery_voltage", "battery_voltage"},
    {"battery_current", "battery_current"},
    {"battery_temperature", "battery_temperature"},
    {"grid_power", "grid_power"},
    {"grid_voltage", "grid_voltage"},
    {"grid_frequency", "grid_frequency"},
    {"error_flags", "error_flags"},
    {"wifi_strength", "wifi_strength"},
    {"clock_synced", "clock_synced"},
    {"backfill", "backfill"},
};

static const col_t bucket_cols[] = {
    {"t", "ts"},
    {"count", "n"},
    {"soc", "battery_soc_avg"},
    {"soc_min", "battery_soc_min"},
    {"soc_max", "battery_soc_max"},
    {"battery_power", "battery_power_avg"},
    {"battery_power_min", "battery_power_min"},
    {"battery_power_max", "battery_power_max"},
    {"grid_power", "grid_power_avg"},
    {"grid_power_min", "grid_power_min"},
    {"grid_power_max", "grid_power_max"},
    {"battery_voltage", "battery_voltage_avg"},
    {"battery_current", "battery_current_avg"},
    {"battery_temperature", "battery_temperature_avg"},
    {"grid_voltage", "grid_voltage_avg"},
    {"grid_frequency", "grid_frequency_avg"},
    {"backfill_count", "backfill_count"},
};

static void csv_value(ems_buf_t *b, const json_t *v, bool is_time)
{
    if (is_time && json_is_number(v)) {
        char t[EMS_TIME_STR_MAX];
        if (ems_time_format((int64_t)json_number_value(v), t, sizeof t) > 0)
            ems_buf_append_str(b, t);
    } else if (json_is_number(v)) {
        char n[EMS_JW_NUM_MAX];
        ems_jw_fmt_double(json_number_value(v), n);
        ems_buf_append_str(b, n);
    } else if (json_is_string(v)) {
        /* Only enum names and ids reach here: no quoting needed. */
        ems_buf_append_str(b, json_string_value(v));
    } else if (json_is_boolean(v)) {
        ems_buf_append_str(b, json_is_true(v) ? "true" : "false");
    }
}

static void history_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    json_t *series = json_object_get(o, "series");
    json_t *ts = json_object_get(series, "ts");
    size_t n = json_array_size(ts);
    bool raw = c->bucket == 0;
    const col_t *cols = raw ? raw_cols : bucket_cols;
    size_t ncols = raw ? sizeof raw_cols / sizeof raw_cols[0]
                       : sizeof bucket_cols / sizeof bucket_cols[0];
    /* Columns the DB writer did not send are left out, not invented. */
    bool present[32];
    for (size_t k = 0; k < ncols; k++)
        present[k] = !cols[k].series || json_is_array(json_object_get(series, cols[k].series));

    if (c->csv) {
        ems_buf_t b;
        ems_buf_init(&b, 256u << 20);
        for (size_t k = 0, first = 1; k < ncols; k++) {
            if (!present[k])
                continue;
            if (!first)
                ems_buf_append_str(&b, ",");
            ems_buf_append_str(&b, cols[k].out);
            first = 0;
        }
        ems_buf_append_str(&b, "\n");
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0, first = 1; k < ncols; k++) {
                if (!present[k])
                    continue;
                if (!first)
                    ems_buf_append_str(&b, ",");
                first = 0;
                if (!cols[k].series) {
                    ems_buf_append_str(&b, "1");
                    continue;
                }
                json_t *v = json_array_get(json_object_get(series, cols[k].series), i);
                csv_value(&b, v, k == 0);
            }
            ems_buf_append_str(&b, "\n");
        }
        char hdr[200];
        snprintf(hdr, sizeof hdr,
                 "Cache-Control: no-store\r\nContent-Disposition: attachment; "
                 "filename=\"%s.csv\"\r\n",
                 c->route.id1);
        ems_server_respond(c->req, 200, "text/csv; charset=utf-8", hdr, ems_buf_data(&b),
                           ems_buf_len(&b));
        ems_buf_free(&b);
        json_decref(o);
        ctx_free(c);
        return;
    }

    json_t *points = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_object();
        for (size_t k = 0; k < ncols; k++) {
            if (!present[k])
                continue;
            if (!cols[k].series) {
                json_object_set_new(p, cols[k].out, json_integer(1));
                continue;
            }
            json_t *v = json_array_get(json_object_get(series, cols[k].series), i);
            if (k == 0)
                json_object_set_new(p, "t", time_json((int64_t)json_number_value(v)));
            else
                json_object_set(p, cols[k].out, v ? v : json_null());
        }
        json_array_append_new(points, p);
    }
    json_t *ans = json_pack("{sssososssisbso}", "device_id", c->route.id1, "from",
                            time_json(c->from), "to", time_json(c->to), "resolution",
                            raw                   ? "raw"
                            : c->bucket == 60     ? "1m"
                            : c->bucket == 3600   ? "1h"
                            : c->bucket == 86400  ? "1d"
                                                  : "bucket",
                            "bucket_seconds", c->bucket, "truncated",
                            json_is_true(json_object_get(o, "truncated")), "points", points);
    json_decref(o);
    reply_jansson(c->req, 200, ans, NULL);
    ctx_free(c);
}

static void handle_history(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    const char *q = m->query ? m->query : "";
    size_t ql = strlen(q);
    char v[64];
    int64_t now = ems_time_now_ms(), from, to = now;
    int rc = gw_query_get(q, ql, "to", v, sizeof v);
    if (rc >= 0 && ems_time_parse(v, (size_t)rc, &to) < 0) {
        gw_reply_error(req, 400, "to: not an RFC 3339 UTC time", "to");
        return;
    }
    from = to - 3600 * 1000;
    rc = gw_query_get(q, ql, "from", v, sizeof v);
    if (rc >= 0 && ems_time_parse(v, (size_t)rc, &from) < 0) {
        gw_reply_error(req, 400, "from: not an RFC 3339 UTC time", "from");
        return;
    }
    if (from >= to) {
        gw_reply_error(req, 400, "from must be before to", "from");
        return;
    }
    if (to - from > RANGE_MAX_MS) {
        gw_reply_error(req, 400, "the range is longer than 400 days", "from");
        return;
    }
    int bucket;
    rc = gw_query_get(q, ql, "resolution", v, sizeof v);
    if (rc < 0 || strcmp(v, "auto") == 0)
        bucket = gw_ranges_auto_bucket(to - from);
    else if (strcmp(v, "raw") == 0)
        bucket = 0;
    else if (strcmp(v, "1m") == 0)
        bucket = 60;
    else if (strcmp(v, "1h") == 0)
        bucket = 3600;
    else if (strcmp(v, "1d") == 0)
        bucket = 86400;
    else {
        gw_reply_error(req, 400, "resolution: expected raw, 1m, 1h, 1d or auto", "resolution");
        return;
    }
    bool csv = false;
    rc = gw_query_get(q, ql, "format", v, sizeof v);
    if (rc >= 0) {
        if (strcmp(v, "csv") == 0)
            csv = true;
        else if (strcmp(v, "json") != 0) {
            gw_reply_error(req, 400, "format: expected json or csv", "format");
            return;
        }
    }
    ctx_t *c = ctx_new(gw, req, r);
    if (!c)
        return;
    c->from = from;
    c->to = to;
    c->bucket = bucket;
    c->csv = csv;
    json_t *qj = json_pack("{sssssIsI}", "op", "history", "device_id", r->id1, "from",
                           (json_int_t)from, "to", (json_int_t)to);
    if (bucket)
        json_object_set_new(qj, "resolution", json_integer(bucket));
    else
        json_object_set_new(qj, "resolution", json_string("raw"));
    ask(c, qj, history_result);
}

/* ------------------------------------------------------------ energy */

/* Columns of an energy bucket, in CSV order (docs/energy.md). "devices"
 * only for the fleet total. */
static const char *const energy_cols[] = {
    "local",   "start",    "end",         "length_s",           "samples",
    "covered_s", "devices", "battery_charged_wh", "battery_discharged_wh", "grid_import_wh",
    "grid_export_wh",
};

static void energy_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    bool fleet = c->route.id == GW_R_ENERGY;
    json_t *buckets = json_object_get(o, "buckets"), *bk;
    size_t i;
    if (!fleet)
        json_array_foreach(buckets, i, bk) json_object_del(bk, "devices");
    if (!c->csv) {
        reply_jansson(c->req, 200, o, NULL);
        ctx_free(c);
        return;
    }
    ems_buf_t b;
    ems_buf_init(&b, 16u << 20);
    size_t ncols = sizeof energy_cols / sizeof energy_cols[0];
    for (size_t k = 0, first = 1; k < ncols; k++) {
        if (!fleet && !strcmp(energy_cols[k], "devices"))
            continue;
        ems_buf_append_str(&b, first ? "" : ",");
        ems_buf_append_str(&b, energy_cols[k]);
        first = 0;
    }
    ems_buf_append_str(&b, "\n");
    json_array_foreach(buckets, i, bk)
    {
        for (size_t k = 0, first = 1; k < ncols; k++) {
            if (!fleet && !strcmp(energy_cols[k], "devices"))
                continue;
            ems_buf_append_str(&b, first ? "" : ",");
            first = 0;
            /* Times and local dates are plain ASCII; null energy stays empty. */
            csv_value(&b, json_object_get(bk, energy_cols[k]), false);
        }
        ems_buf_append_str(&b, "\n");
    }
    char hdr[200];
    snprintf(hdr, sizeof hdr,
             "Cache-Control: no-store\r\nContent-Disposition: attachment; "
             "filename=\"%s-energy.csv\"\r\n",
             fleet ? "fleet" : c->route.id1);
    ems_server_respond(c->req, 200, "text/csv; charset=utf-8", hdr, ems_buf_data(&b),
                       ems_buf_len(&b));
    ems_buf_free(&b);
    json_decref(o);
    ctx_free(c);
}

/* GET /api/devices/{id}/energy and GET /api/energy (the fleet):
 * ?from=&to= as RFC 3339 times or local dates (YYYY-MM-DD, YYYY-MM),
 * &bucket=day|month, &format=json|csv. The DB writer checks the range and
 * the dates; the days are those of energy_time_zone. */
static void handle_energy(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    const char *q = m->query ? m->query : "";
    size_t ql = strlen(q);
    char bucket[16] = "day", from[64], to[64], v[16];
    int rc = gw_query_get(q, ql, "bucket", bucket, sizeof bucket);
    if ((rc < 0 && rc != EMS_ENOENT) || (strcmp(bucket, "day") != 0 && strcmp(bucket, "month") != 0)) {
        gw_reply_error(req, 400, "bucket: expected day or month", "bucket");
        return;
    }
    bool month = bucket[0] == 'm';
    int64_t now = ems_time_now_ms();
    rc = gw_query_get(q, ql, "to", to, sizeof to);
    if (rc == EMS_ENOENT)
        ems_time_format(now, to, sizeof to);
    else if (rc < 0) {
        gw_reply_error(req, 400, "to: expected an RFC 3339 time or a date", "to");
        return;
    }
    rc = gw_query_get(q, ql, "from", from, sizeof from);
    if (rc == EMS_ENOENT) {
        /* The last 30 days, or the last 12 months. */
        int64_t t = now;
        if (ems_time_parse(to, strlen(to), &t) < 0 && to[0]) {
            gw_reply_error(req, 400, "from: required when to is a date", "from");
            return;
        }
        ems_time_format(t - (month ? 365LL : 30LL) * 86400 * 1000, from, sizeof from);
    } else if (rc < 0) {
        gw_reply_error(req, 400, "from: expected an RFC 3339 time or a date", "from");
        return;
    }
    bool csv = false;
    rc = gw_query_get(q, ql, "format", v, sizeof v);
    if (rc >= 0) {
        if (strcmp(v, "csv") == 0)
            csv = true;
        else if (strcmp(v, "json") != 0) {
            gw_reply_error(req, 400, "format: expected json or csv", "format");
            return;
        }
    }
    ctx_t *c = ctx_new(gw, req, r);
    if (!c)
        return;
    c->csv = csv;
    json_t *qj = json_pack("{ssssssssss}", "op", "energy", "from", from, "to", to, "bucket",
                           bucket, "time_zone", gw->cfg.energy_time_zone);
    if (r->id == GW_R_DEVICE_ENERGY)
        json_object_set_new(qj, "device_id", json_string(r->id1));
    ask(c, qj, energy_result);
}

/* ------------------------------------------------------------ commands */

/* A command record from the DB writer in the API's form. */
static json_t *db_command(const json_t *row)
{
    json_t *o = json_deep_copy(row);
    json_t *events = json_object_get(o, "events"), *hist = json_array(), *e;
    size_t i;
    const char *reason = NULL, *message = NULL;
    json_array_foreach(events, i, e)
    {
        json_array_append_new(hist, json_pack("{sOsO}", "status", json_object_get(e, "status"),
                                              "at", json_object_get(e, "at")));
        const char *r = json_string_value(json_object_get(e, "reason"));
        const char *m = json_string_value(json_object_get(e, "message"));
        if (r)
            reason = r;
        if (m)
            message = m;
    }
    json_object_set_new(o, "reason", reason ? json_string(reason) : json_null());
    json_object_set_new(o, "message", message ? json_string(message) : json_null());
    json_object_del(o, "events");
    json_object_set_new(o, "history", hist);
    return o;
}

static void commands_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    json_t *out = json_array(), *row;
    size_t i;
    json_array_foreach(json_object_get(o, "commands"), i, row)
    {
        /* An in-flight command's freshest state is the tracker's. */
        const char *id = json_string_value(json_object_get(row, "command_id"));
        gw_cmd_t *mem = id ? gw_cmds_find(c->gw->cmds, id) : NULL;
        json_array_append_new(out, mem ? cmd_record(mem) : db_command(row));
    }
    json_decref(o);
    if (c->route.id == GW_R_COMMAND) {
        if (json_array_size(out) == 0)
            gw_reply_error(c->req, 404, "unknown command", NULL);
        else
            reply_jansson(c->req, 200, json_incref(json_array_get(out, 0)), NULL);
        json_decref(out);
    } else {
        reply_jansson(c->req, 200, json_pack("{so}", "commands", out), NULL);
    }
    ctx_free(c);
}

static int query_limit(ems_server_req_t *req, int def, int max, int *out)
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

static void handle_command_get(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    gw_cmd_t *mem = gw_cmds_find(gw->cmds, r->id1);
    if (mem) {
        reply_jansson(req, 200, cmd_record(mem), NULL);
        return;
    }
    ctx_t *c = ctx_new(gw, req, r);
    if (c)
        ask(c, json_pack("{sssssi}", "op", "commands", "command_id", r->id1, "limit", 1),
            commands_result);
}

static void handle_commands_list(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    int limit;
    if (query_limit(req, 50, 500, &limit) < 0) {
        gw_reply_error(req, 400, "limit: expected an integer 1..500", "limit");
        return;
    }
    ctx_t *c = ctx_new(gw, req, r);
    if (c)
        ask(c, json_pack("{sssssi}", "op", "commands", "device_id", r->id1, "limit", limit),
            commands_result);
}

static void sessions_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (o) {
        json_t *s = json_object_get(o, "sessions");
        reply_jansson(c->req, 200, json_pack("{sO}", "sessions", s ? s : json_array()), NULL);
        json_decref(o);
    }
    ctx_free(c);
}

static void handle_sessions(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    int limit;
    if (query_limit(req, 50, 1000, &limit) < 0) {
        gw_reply_error(req, 400, "limit: expected an integer 1..1000", "limit");
        return;
    }
    ctx_t *c = ctx_new(gw, req, r);
    if (c)
        ask(c, json_pack("{sssssi}", "op", "sessions", "device_id", r->id1, "limit", limit),
            sessions_result);
}

static void command_reply(ctx_t *c, int status, const char *error, const gw_cmd_t *cmd)
{
    json_t *o = json_object();
    if (error)
        json_object_set_new(o, "error", json_string(error));
    json_t *rec = cmd_record(cmd);
    if (error)
        json_object_set_new(o, "command", rec);
    else {
        json_decref(o);
        o = rec;
    }
    char loc[160];
    snprintf(loc, sizeof loc, "Location: /api/commands/%s\r\n", cmd->cmd.command_id);
    reply_jansson(c->req, status, o, loc);
}

/* The device exists (and is not revoked): create the command. */
static void command_submit(ctx_t *c)
{
    gw_t *gw = c->gw;
    const ems_http_msg_t *m = ems_server_req_msg(c->req);
    ems_verr_t err;
    json_t *b = ems_jr_parse(m->body ? m->body : "", m->body_len, &err);
    /* Parsed before; cannot fail now, but stay safe. */
    if (!b) {
        gw_reply_error(c->req, 400, err.reason, err.path);
        return;
    }
    int64_t ttl = 0;
    ems_jr_integer(b, "", "ttl_s", false, 1, 86400, &ttl, &err);
    bool has_id = json_object_get(b, "command_id") != NULL;
    if (!has_id)
        json_object_set_new(b, "command_id", json_string("pending"));
    json_object_del(b, "ttl_s");
    json_object_del(b, "expires_at");
    gw_cmd_req_t q;
    memset(&q, 0, sizeof q);
    ems_command_from_json(b, &q.cmd, &err);
    json_decref(b);
    if (!has_id)
        q.cmd.command_id[0] = '\0';
    gw_dev_t *d = gw_dev_get(gw, c->route.id1, false);
    q.device_id = c->route.id1;
    q.created_by = c->sess.user;
    q.ttl_s = ttl;
    q.online = d && d->conn && ems_ws_is_open(d->conn->ws);
    char busmsg[300];
    if (!q.online && gw->bus) {
        /* Maybe connected to another gateway: then the bus delivers it, and
         * a bus that is down fails it now, saying so. */
        const gw_bus_presence_t *rp = gw_bus_remote(gw->bus, q.device_id);
        if (!gw_bus_up(gw->bus)) {
            snprintf(busmsg, sizeof busmsg,
                     "message bus unavailable: device %s is not connected to this gateway and "
                     "the other gateways cannot be reached%s%s",
                     q.device_id, rp ? " (last seen on gateway " : "",
                     rp ? rp->gateway : "");
            if (rp)
                strncat(busmsg, ")", sizeof busmsg - strlen(busmsg) - 1);
            q.offline_msg = busmsg;
        } else if (rp && rp->online) {
            q.online = true;
            snprintf(busmsg, sizeof busmsg,
                     "device %s is on gateway %s, and the command could not be sent there "
                     "(message bus)",
                     q.device_id, rp->gateway);
            q.offline_msg = busmsg;
        }
    }
    gw_cmd_t *cmd;
    int rc = gw_cmds_submit(gw->cmds, &q, ems_time_now_ms(), &cmd);
    char msg[200];
    if (rc == 1) {
        command_reply(c, 200, NULL, cmd);
    } else if (rc == EMS_EEXIST) {
        snprintf(msg, sizeof msg, "command_id %s was already used for another command",
                 cmd->cmd.command_id);
        command_reply(c, 409, msg, cmd);
    } else if (rc < 0) {
        gw_reply_error(c->req, 503, "cannot create the command", NULL);
    } else if (cmd->status == GW_CMD_FAILED) {
        command_reply(c, 409, cmd->message, cmd);
    } else {
        ems_log_info("command %s (%s) for %s by %s: %s", cmd->cmd.command_id,
                     ems_action_name(cmd->cmd.action), cmd->device_id, c->sess.user,
                     gw_cmd_status_name(cmd->status));
        command_reply(c, 202, NULL, cmd);
    }
}

static void command_device_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    if (!json_is_true(json_object_get(o, "found")))
        gw_reply_error(c->req, 404, "unknown device", NULL);
    else if (json_is_true(json_object_get(o, "revoked")))
        gw_reply_error(c->req, 409, "device is revoked", NULL);
    else
        command_submit(c);
    json_decref(o);
    ctx_free(c);
}

static void handle_command_post(gw_t *gw, ems_server_req_t *req, const gw_route_t *r,
                                const gw_session_t *s)
{
    if (s->role < GW_ROLE_OPERATOR) {
        ems_log_warn("user %s (%s) may not send commands", s->user, gw_role_name(s->role));
        gw_reply_error(req, 403, "sending commands needs the operator role", NULL);
        return;
    }
    const ems_http_msg_t *m = ems_server_req_msg(req);
    ems_verr_t err;
    json_t *b = ems_jr_parse(m->body ? m->body : "", m->body_len, &err);
    if (!b || ems_jr_require_object(b, &err) < 0) {
        json_decref(b);
        gw_reply_error(req, 400, err.reason, err.path);
        return;
    }
    /* Validate everything now, so a bad body is a 400 whatever the device. */
    int64_t ttl;
    ems_command_t cmd;
    if (ems_jr_integer(b, "", "ttl_s", false, 1, 86400, &ttl, &err) < 0) {
        json_decref(b);
        gw_reply_error(req, 400, err.reason, err.path);
        return;
    }
    if (!json_object_get(b, "command_id"))
        json_object_set_new(b, "command_id", json_string("pending"));
    json_object_del(b, "expires_at");
    int rc = ems_command_from_json(b, &cmd, &err);
    json_decref(b);
    if (rc < 0) {
        gw_reply_error(req, 400, err.reason, err.path);
        return;
    }
    ctx_t *c = ctx_new(gw, req, r);
    if (!c)
        return;
    c->sess = *s;
    gw_dev_t *d = gw_dev_get(gw, r->id1, false);
    if (d && d->auth_ok && !d->auth_revoked) {
        command_submit(c);
        ctx_free(c);
        return;
    }
    ask(c, json_pack("{ssss}", "op", "device_auth", "device_id", r->id1), command_device_result);
}

/* ------------------------------------------------------------ alarms */

/* GET /api/alarms and /api/devices/{id}/alarms (docs/api.md, "Alarms"). */
static void alarms_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (o) {
        json_t *a = json_object_get(o, "alarms");
        reply_jansson(c->req, 200, json_pack("{sO}", "alarms", a ? a : json_array()), NULL);
        json_decref(o);
    }
    ctx_free(c);
}

static void handle_alarms_list(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    const char *qs = m->query ? m->query : "";
    char state[16], dev[EMS_DEVICE_ID_MAX + 2];
    int limit;
    if (query_limit(req, 100, 1000, &limit) < 0) {
        gw_reply_error(req, 400, "limit: expected an integer 1..1000", "limit");
        return;
    }
    int rs = gw_query_get(qs, strlen(qs), "state", state, sizeof state);
    if (rs != EMS_ENOENT && (rs < 0 || (strcmp(state, "active") && strcmp(state, "acknowledged") &&
                                        strcmp(state, "cleared") && strcmp(state, "open")))) {
        gw_reply_error(req, 400, "state: expected active, acknowledged, cleared or open", "state");
        return;
    }
    int rd = EMS_ENOENT;
    if (r->id == GW_R_DEVICE_ALARMS) {
        snprintf(dev, sizeof dev, "%s", r->id1);
        rd = 0;
    } else {
        rd = gw_query_get(qs, strlen(qs), "device", dev, sizeof dev);
        if (rd != EMS_ENOENT && (rd < 0 || !ems_device_id_valid(dev, strlen(dev)))) {
            gw_reply_error(req, 400, "device: expected a device id", "device");
            return;
        }
    }
    json_t *q = json_pack("{sssi}", "op", "alarms", "limit", limit);
    if (rs != EMS_ENOENT)
        json_object_set_new(q, "state", json_string(state));
    if (rd != EMS_ENOENT)
        json_object_set_new(q, "device_id", json_string(dev));
    ctx_t *c = ctx_new(gw, req, r);
    if (c)
        ask(c, q, alarms_result);
    else
        json_decref(q);
}

/* POST /api/alarms/{id}/ack: the alarm as the database has it decides
 * (404 unknown; already acknowledged: answered as it is, so a second click
 * changes nothing); otherwise a durable alarm_ack event, and the answer is
 * the alarm as it will be stored. */
static void alarm_ack_result(void *ud, int status, const char *json, size_t len)
{
    ctx_t *c = ud;
    json_t *o = result_or_reply(c, status, json, len);
    if (!o) {
        ctx_free(c);
        return;
    }
    json_t *a = json_array_get(json_object_get(o, "alarms"), 0);
    if (!json_is_object(a)) {
        gw_reply_error(c->req, 404, "unknown alarm", NULL);
    } else if (!json_is_null(json_object_get(a, "acked_at")) &&
               json_object_get(a, "acked_at")) {
        reply_jansson(c->req, 200, json_incref(a), NULL);
    } else {
        int64_t now = ems_time_now_ms();
        char at[EMS_TIME_STR_MAX];
        ems_time_format(now, at, sizeof at);
        json_t *ev = json_pack("{sssIssss}", "type", "alarm_ack", "alarm_id",
                               json_integer_value(json_object_get(a, "alarm_id")), "by",
                               c->sess.user, "at", at);
        char *s = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
        json_decref(ev);
        int rc = s && c->gw->link ? gw_link_event(c->gw->link, s, strlen(s)) : EMS_ENOMEM;
        free(s);
        if (rc < 0) {
            gw_reply_error(c->req, 503, "the acknowledgement cannot be stored now", NULL);
        } else {
            ems_log_info("alarm %" PRId64 " (%s, %s) acknowledged by %s",
                         (int64_t)json_integer_value(json_object_get(a, "alarm_id")),
                         json_string_value(json_object_get(a, "device_id")),
                         json_string_value(json_object_get(a, "rule")), c->sess.user);
            json_object_set_new(a, "acked_at", json_string(at));
            json_object_set_new(a, "acked_by", json_string(c->sess.user));
            const char *st = json_string_value(json_object_get(a, "state"));
            if (!st || strcmp(st, "cleared") != 0)
                json_object_set_new(a, "state", json_string("acknowledged"));
            reply_jansson(c->req, 200, json_incref(a), NULL);
        }
    }
    json_decref(o);
    ctx_free(c);
}

static void handle_alarm_ack(gw_t *gw, ems_server_req_t *req, const gw_route_t *r,
                             const gw_session_t *s)
{
    if (s->role < GW_ROLE_OPERATOR) {
        ems_log_warn("user %s (%s) may not acknowledge alarms", s->user, gw_role_name(s->role));
        gw_reply_error(req, 403, "acknowledging alarms needs the operator role", NULL);
        return;
    }
    const ems_http_msg_t *m = ems_server_req_msg(req);
    ems_verr_t err;
    json_t *b = ems_jr_parse(m->body && m->body_len ? m->body : "{}", m->body_len ? m->body_len : 2,
                             &err);
    if (!b || ems_jr_require_object(b, &err) < 0) {
        json_decref(b);
        gw_reply_error(req, 400, err.reason, err.path);
        return;
    }
    json_decref(b);
    ctx_t *c = ctx_new(gw, req, r);
    if (!c)
        return;
    c->sess = *s;
    ask(c, json_pack("{sssIsi}", "op", "alarms", "alarm_id", (json_int_t)strtoll(r->id1, NULL, 10),
                     "limit", 1),
        alarm_ack_result);
}

/* ------------------------------------------------------------ dispatch */

static bool is_json(const char *ct)
{
    if (!ct)
        return false;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';' ||
                                                            ct[n] == ' ');
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
        handle_login(gw, req);
        return;
    }
    if (r->id == GW_R_LOGOUT) {
        handle_logout(gw, req);
        return;
    }
    gw_session_t s;
    if (!gw_req_session(gw, req, &s)) {
        gw_reply_error(req, 401, "not logged in", NULL);
        return;
    }
    switch (r->id) {
    case GW_R_ME:
        reply_jansson(req, 200, json_pack("{ssss}", "username", s.user, "role", gw_role_name(s.role)),
                      NULL);
        return;
    case GW_R_DEVICES: {
        ctx_t *c = ctx_new(gw, req, r);
        if (c)
            ask(c, json_pack("{ss}", "op", "devices"), devices_result);
        return;
    }
    case GW_R_DEVICE: {
        ctx_t *c = ctx_new(gw, req, r);
        if (c)
            ask(c, json_pack("{ssss}", "op", "device_auth", "device_id", r->id1),
                device_auth_for_get);
        return;
    }
    case GW_R_DEVICE_TELEMETRY:
        handle_history(gw, req, r);
        return;
    case GW_R_DEVICE_COMMANDS:
        if (method == GW_M_POST)
            handle_command_post(gw, req, r, &s);
        else
            handle_commands_list(gw, req, r);
        return;
    case GW_R_DEVICE_SESSIONS:
        handle_sessions(gw, req, r);
        return;
    case GW_R_DEVICE_ENERGY:
    case GW_R_ENERGY:
        handle_energy(gw, req, r);
        return;
    case GW_R_COMMAND:
        handle_command_get(gw, req, r);
        return;
    case GW_R_ALARMS:
    case GW_R_DEVICE_ALARMS:
        handle_alarms_list(gw, req, r);
        return;
    case GW_R_ALARM_ACK:
        handle_alarm_ack(gw, req, r, &s);
        return;
    default:
        gw_reply_error(req, 404, "no such resource", NULL);
        return;
    }
}
