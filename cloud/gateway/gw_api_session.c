/* gw_api_session.c: POST /api/login and /api/logout (docs/api.md,
 * docs/security.md): the per-address login budget, the bounded password
 * hashing off the loop, rehash on login, and the abuse-defence state the
 * API shares (set up at first use).
 */
#include "gw_api_int.h"

#include "auth.h"
#include "error.h"
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
    "pbkdf2-sha256$" STR(                                                                          \
        EMS_AUTH_PBKDF2_ITER) "$00000000000000000000000000000000$"                                 \
                              "0000000000000000000000000000000000000000000000000000000000000000"

static void login_start(gw_api_ctx_t *c);

/* Ends the login attempt `c` (its budget and its hash slot), and starts the
 * attempt that was waiting for the slot, if any. */
static void login_end(gw_api_ctx_t *c, bool ok)
{
    gw_t *gw = c->gw;
    gw_login_waiter_t *next = gw_login_end(&gw->login, &c->lw, ok, ems_time_mono_ms());
    if (!ok)
        ems_metric_inc(gw->m.logins_failed);
    if (next)
        login_start((gw_api_ctx_t *)(void *)((char *)next - offsetof(gw_api_ctx_t, lw)));
}

/* Ends `c` with `status` and frees it. A refusal of the password (401) is
 * charged to the address; our own trouble (503) is not. */
static void login_fail_reply(gw_api_ctx_t *c, int status, const char *why)
{
    login_end(c, status != 503);
    gw_reply_error(c->req, status, why, NULL);
    gw_api_ctx_free(c);
}

typedef struct {
    gw_t *gw;
    char user[EMS_AUTH_USER_MAX + 1];
    char password[256];
    char old_hash[EMS_AUTH_HASH_MAX];
    char new_hash[EMS_AUTH_HASH_MAX];
    int rc;
    uv_work_t work;
} rehash_t;

static void rehash_work(uv_work_t *w)
{
    rehash_t *r = w->data;
    r->rc =
        ems_auth_password_hash(r->password, EMS_AUTH_PBKDF2_ITER, r->new_hash, sizeof r->new_hash);
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
        login_start((gw_api_ctx_t *)(void *)((char *)next - offsetof(gw_api_ctx_t, lw)));
    if (status == 0 && r->rc == 0 && !gw->stopping) {
        json_t *ev = json_pack("{ssssssss}", "type", "user_rehash", "name", r->user, "old_hash",
                               r->old_hash, "password_hash", r->new_hash);
        char *s = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
        json_decref(ev);
        if (s) {
            gw_event(gw, s, strlen(s));
            free(s);
            ems_metric_inc(gw->m.password_rehashes);
            ems_log_info("password hash of '%s' raised to %d iterations", r->user,
                         EMS_AUTH_PBKDF2_ITER);
        }
    }
    memset(r, 0, sizeof *r);
    free(r);
}

/* After a successful login with a hash of fewer iterations than the current
 * count: hash the password again in the background, if a hash slot is free
 * now (else at a later login), and store it. */
static void maybe_rehash(gw_api_ctx_t *c)
{
    gw_t *gw = c->gw;
    long iter = ems_auth_password_iterations(c->hash);
    if (iter <= 0 || iter >= EMS_AUTH_PBKDF2_ITER || gw->stopping ||
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
            login_start((gw_api_ctx_t *)(void *)((char *)next - offsetof(gw_api_ctx_t, lw)));
        return;
    }
    ems_metric_inc(gw->m.password_hashes);
}

static void verify_work(uv_work_t *w)
{
    gw_api_ctx_t *c = w->data;
    c->verify_rc = ems_auth_password_verify(c->password, c->hash);
}

static void verify_done(uv_work_t *w, int status)
{
    gw_api_ctx_t *c = w->data;
    gw_t *gw = c->gw;
    bool ok = status == 0 && c->verify_rc == 0 && c->role != EMS_AUTH_ROLE_NONE;
    login_end(c, ok);
    if (!ok) {
        memset(c->password, 0, sizeof c->password);
        ems_log_limited(&gw->log_login, ems_time_mono_ms(), EMS_LOG_WARN,
                        "login of '%s' from %s refused", c->sess.user, c->peer);
        gw_reply_error(c->req, 401, "invalid username or password", NULL);
        gw_api_ctx_free(c);
        return;
    }
    ems_metric_inc(gw->m.logins_ok);
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
        gw_api_ctx_free(c);
        return;
    }
    snprintf(hdr, sizeof hdr,
             "Set-Cookie: ems_session=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d%s\r\n",
             cookie, GW_SESSION_TTL_S, secure_cookies(gw, c->req) ? "; Secure" : "");
    ems_log_info("login of '%s' (%s) from %s", c->sess.user, ems_auth_role_name(c->role), c->peer);
    json_t *o = json_pack("{ssss}", "username", c->sess.user, "role", ems_auth_role_name(c->role));
    gw_api_reply(c->req, 200, o, hdr);
    maybe_rehash(c);
    gw_api_ctx_free(c);
}

static void login_user_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    bool gone = ems_server_req_gone(c->req);
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        login_end(c, !gone); /* the DB writer's trouble is not the client's failure */
        gw_api_ctx_free(c);
        return;
    }
    const char *h = json_string_value(json_object_get(o, "password_hash"));
    const char *role = json_string_value(json_object_get(o, "role"));
    c->role = EMS_AUTH_ROLE_NONE;
    snprintf(c->hash, sizeof c->hash, "%s", DUMMY_HASH);
    if (json_is_true(json_object_get(o, "found")) && h && role &&
        ems_auth_role_parse(role, &c->role) == 0)
        snprintf(c->hash, sizeof c->hash, "%s", h);
    json_decref(o);
    c->work.data = c;
    if (uv_queue_work(c->gw->loop, &c->work, verify_work, verify_done) != 0) {
        login_fail_reply(c, 503, "cannot verify the password now");
        return;
    }
    ems_metric_inc(c->gw->m.password_hashes);
}

/* The attempt holds a hash slot now: look the user up, then hash. */
static void login_start(gw_api_ctx_t *c)
{
    if (ems_server_req_gone(c->req)) {
        /* The client left while it waited; it still counts as a failure,
         * so dropping connections is no way around the budget. */
        login_end(c, false);
        ems_server_respond(c->req, 499, NULL, NULL, NULL, 0);
        gw_api_ctx_free(c);
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
        ems_metric_inc(gw->m.logins_throttled);
        ems_log_limited(&gw->log_login, ems_time_mono_ms(), EMS_LOG_WARN,
                        "login from %s refused: too many failures or attempts at once", addr);
        status = 429;
        o = json_pack("{ss}", "error", "too many failed logins; try again in a minute");
    } else {
        ems_metric_inc(gw->m.logins_busy);
        ems_log_limited(&gw->log_login, ems_time_mono_ms(), EMS_LOG_WARN,
                        "login from %s refused: too many logins in progress", addr);
        status = 503;
        o = json_pack("{ss}", "error", "too many logins in progress; try again shortly");
    }
    gw_api_reply(req, status, o, hdr);
}

void gw_api_login(gw_t *gw, ems_server_req_t *req)
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
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, NULL);
    if (!c) {
        json_decref(b);
        return;
    }
    int retry_s;
    int v = gw_login_begin(&gw->login, &c->lw, addr, ems_time_mono_ms(), &retry_s);
    if (v < 0 || v == GW_LOGIN_THROTTLED || v == GW_LOGIN_BUSY) {
        json_decref(b);
        gw_api_ctx_free(c);
        if (v < 0)
            gw_reply_error(req, 503, "out of memory", NULL);
        else
            login_refuse(gw, req, addr, v, retry_s);
        return;
    }
    snprintf(c->peer, sizeof c->peer, "%s", addr);
    if (!ems_auth_user_name_valid(user, ul) || pl == 0 || pl >= 256 || memchr(pw, 0, pl)) {
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
void gw_api_logout(gw_t *gw, ems_server_req_t *req)
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
        ems_metric_inc(gw->m.sessions_revoked);
        ems_log_info("logout of '%s'", s.user);
    }
    char hdr[200];
    snprintf(hdr, sizeof hdr,
             "Set-Cookie: ems_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s\r\n"
             "Cache-Control: no-store\r\n",
             secure_cookies(gw, req) ? "; Secure" : "");
    ems_server_respond(req, 204, NULL, hdr, NULL, 0);
}
