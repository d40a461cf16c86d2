/* uplink.c: the cloud connection policy of the edge (see uplink.h). */
#include "uplink.h"

#include "backoff.h"
#include "client.h"
#include "config.h"
#include "error.h"
#include "jread.h"
#include "log.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UP__BAD_WINDOW_MS 10000 /* at most UP__BAD_LINES lines per window */
#define UP__BAD_LINES 5

struct ems_uplink {
    uv_loop_t *loop;
    ems_uplink_config_t cfg;
    char url[EMS_EDGE_URL_MAX + 96];
    char ca_file[EMS_EDGE_PATH_MAX];
    char token_file[EMS_EDGE_PATH_MAX];
    ems_uplink_callbacks_t cbs;
    void *ud;
    bool is_tls;
    ems_tls_config_t *tls;
    ems_backoff_t bo;
    uv_timer_t timer;
    ems_ws_t *ws;
    ems_uplink_state_t state;
    int64_t ready_ms;
    ems_uplink_stats_t st;
    bool stopping;
    void (*on_stopped)(void *arg);
    void *stop_arg;
    /* rate limit for logging bad messages */
    int64_t bad_window_ms;
    unsigned bad_lines;
    uint64_t bad_quiet;
};

static const char *const up__state_names[] = {"stopped", "waiting", "connecting",
                                              "open",    "ready",   "closing"};

const char *ems_uplink_state_name(ems_uplink_state_t s)
{
    return (unsigned)s < sizeof up__state_names / sizeof up__state_names[0] ? up__state_names[s]
                                                                            : "unknown";
}

void ems_uplink_config_default(ems_uplink_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->ping_ms = 5000;
    c->idle_timeout_ms = 15000;
    c->open_timeout_ms = 10000;
    c->welcome_timeout_ms = 5000;
    c->backoff_min_ms = 1000;
    c->backoff_max_ms = 60000;
    c->stable_ms = 10000;
    c->max_message = 65536;
}

/* Copies text cut to fit (logs and status carry it; cutting is fine). */
static void up__copy(char *dst, size_t cap, const char *a, const char *b)
{
    size_t n = 0;
    for (const char *p = a; p && *p && n + 1 < cap; p++)
        dst[n++] = *p;
    for (const char *p = b; p && *p && n + 1 < cap; p++)
        dst[n++] = *p;
    dst[n] = '\0';
}

static int64_t up__now(void)
{
    return (int64_t)(uv_hrtime() / 1000000u);
}

static void up__attempt(ems_uplink_t *u);
static void up__ready(ems_uplink_t *u, const ems_welcome_t *w, int64_t utc_ms, int64_t mono_ms);
static void up__ws_open(ems_ws_t *ws);
static void up__ws_message(ems_ws_t *ws, const char *data, size_t len, bool binary);
static void up__ws_close(ems_ws_t *ws, const ems_ws_close_info_t *info);

static const ems_ws_callbacks_t up__ws_cbs = {up__ws_open, up__ws_message, up__ws_close};

/* ------------------------------------------------------------- life */

static int up__tls(const char *ca_file, ems_tls_config_t **out)
{
    int rc = ems_tls_client_config_new(ca_file, out);
    if (rc < 0)
        ems_log_error("uplink: cannot use CA file %s: %s", ca_file, ems_strerror(rc));
    return rc < 0 ? EMS_ECONFIG : 0;
}

int ems_uplink_new(uv_loop_t *loop, const ems_uplink_config_t *cfg,
                   const ems_uplink_callbacks_t *cbs, void *ud, ems_uplink_t **out)
{
    *out = NULL;
    ems_wsclient_url_t parsed;
    if (!cfg->url || !cfg->token_file || ems_wsclient_url_parse(cfg->url, &parsed) < 0)
        return EMS_EINVAL;
    if (parsed.tls && (!cfg->ca_file || !cfg->ca_file[0]))
        return EMS_EINVAL;
    ems_uplink_t *u = calloc(1, sizeof *u);
    if (!u)
        return EMS_ENOMEM;
    u->loop = loop;
    u->cfg = *cfg;
    snprintf(u->url, sizeof u->url, "%s", cfg->url);
    snprintf(u->ca_file, sizeof u->ca_file, "%s", cfg->ca_file ? cfg->ca_file : "");
    snprintf(u->token_file, sizeof u->token_file, "%s", cfg->token_file);
    u->cfg.url = u->url;
    u->cfg.ca_file = u->ca_file;
    u->cfg.token_file = u->token_file;
    u->cbs = *cbs;
    u->ud = ud;
    u->is_tls = parsed.tls;
    if (u->is_tls) {
        int rc = up__tls(u->ca_file, &u->tls);
        if (rc < 0) {
            free(u);
            return rc;
        }
    }
    ems_backoff_init(&u->bo, cfg->backoff_min_ms, cfg->backoff_max_ms, cfg->seed);
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    u->state = EMS_UPLINK_STOPPED;
    *out = u;
    return 0;
}

static void up__timer_cb(uv_timer_t *t)
{
    ems_uplink_t *u = t->data;
    if (u->state == EMS_UPLINK_WAITING) {
        up__attempt(u);
    } else if (u->state == EMS_UPLINK_OPEN) {
        /* The protocol says the gateway greets first; one that does not is
         * still better than no link. The clock just stays unvouched. */
        ems_log_warn("uplink: no welcome within %u ms; using the link without it",
                     u->cfg.welcome_timeout_ms);
        up__ready(u, NULL, ems_time_now_ms(), up__now());
    }
}

void ems_uplink_start(ems_uplink_t *u)
{
    if (u->state != EMS_UPLINK_STOPPED || u->stopping)
        return;
    up__attempt(u);
}

static void up__wait(ems_uplink_t *u)
{
    uint64_t delay = ems_backoff_next(&u->bo);
    u->state = EMS_UPLINK_WAITING;
    u->st.retry_at_ms = up__now() + (int64_t)delay;
    uv_timer_start(&u->timer, up__timer_cb, delay, 0);
    ems_log_info("uplink: next attempt in %.1f s (attempt %llu, reconnects so far %llu)",
                 (double)delay / 1000.0, (unsigned long long)u->st.attempts + 1,
                 (unsigned long long)u->st.reconnects);
}

static void up__attempt(ems_uplink_t *u)
{
    char token[80], err[EMS_EDGE_PATH_MAX + 128];
    u->st.attempts++;
    int rc = ems_edge_config_read_token(u->token_file, token, sizeof token, err, sizeof err);
    if (rc < 0) {
        up__copy(u->st.last_error, sizeof u->st.last_error, "device token: ", err);
        ems_log_error("uplink: cannot read the device token: %s", err);
        up__wait(u);
        return;
    }
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", token);
    ems_ws_options_t wo;
    ems_ws_options_default(&wo);
    wo.max_message = u->cfg.max_message;
    wo.ping_interval_ms = u->cfg.ping_ms;
    wo.idle_timeout_ms = u->cfg.idle_timeout_ms;
    wo.open_timeout_ms = u->cfg.open_timeout_ms;
    ems_wsclient_options_t co = {.tls = u->tls, .extra_headers = hdr, .ws = &wo};
    rc = ems_wsclient_connect(u->loop, u->url, &co, &up__ws_cbs, u, &u->ws);
    /* The token is a secret; do not leave copies on the stack. */
    memset(token, 0, sizeof token);
    memset(hdr, 0, sizeof hdr);
    if (rc < 0) {
        u->ws = NULL;
        snprintf(u->st.last_error, sizeof u->st.last_error, "connect: %s", ems_strerror(rc));
        ems_log_error("uplink: cannot start connecting to %s: %s", u->url, ems_strerror(rc));
        u->st.failures++;
        up__wait(u);
        return;
    }
    u->state = EMS_UPLINK_CONNECTING;
    ems_log_info("uplink: connecting to %s (attempt %llu)", u->url,
                 (unsigned long long)u->st.attempts);
}

/* ------------------------------------------------------------- the ws */

static void up__ready(ems_uplink_t *u, const ems_welcome_t *w, int64_t utc_ms, int64_t mono_ms)
{
    uv_timer_stop(&u->timer);
    u->state = EMS_UPLINK_READY;
    u->ready_ms = mono_ms;
    u->st.connects++;
    if (u->st.connects > 1)
        u->st.reconnects++;
    ems_log_info("uplink: link ready (%s, connect %llu, reconnects %llu)",
                 u->is_tls ? "TLS" : "plain ws", (unsigned long long)u->st.connects,
                 (unsigned long long)u->st.reconnects);
    if (u->cbs.on_ready)
        u->cbs.on_ready(u->ud, w, utc_ms, mono_ms);
}

static void up__ws_open(ems_ws_t *ws)
{
    ems_uplink_t *u = ems_ws_user(ws);
    if (u->stopping)
        return;
    u->state = EMS_UPLINK_OPEN;
    ems_log_info("uplink: connected to %s; waiting for the welcome", u->url);
    uv_timer_start(&u->timer, up__timer_cb, u->cfg.welcome_timeout_ms, 0);
}

/* Logs a bad message, at most UP__BAD_LINES per window. */
static void up__bad(ems_uplink_t *u, size_t len, const char *why)
{
    u->st.bad_in++;
    int64_t now = up__now();
    if (now - u->bad_window_ms >= UP__BAD_WINDOW_MS) {
        if (u->bad_quiet)
            ems_log_warn("uplink: %llu more bad messages from the gateway were not logged",
                         (unsigned long long)u->bad_quiet);
        u->bad_window_ms = now;
        u->bad_lines = 0;
        u->bad_quiet = 0;
    }
    if (u->bad_lines < UP__BAD_LINES) {
        u->bad_lines++;
        ems_log_warn("uplink: bad message from the gateway (%zu bytes) ignored: %s", len, why);
    } else {
        u->bad_quiet++;
    }
}

static void up__ws_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    ems_uplink_t *u = ems_ws_user(ws);
    if (u->stopping || binary)
        return;
    u->st.msgs_in++;
    ems_verr_t err;
    json_t *root = ems_jr_parse(data, len, &err);
    if (!root) {
        char why[400];
        up__bad(u, len, ems_verr_format(&err, why, sizeof why));
        return;
    }
    ems_msg_kind_t kind = ems_message_identify(root, &err);
    if (kind == EMS_MSG_WELCOME) {
        int64_t utc = ems_time_now_ms(), mono = up__now();
        ems_welcome_t w;
        if (ems_welcome_from_json(root, &w, &err) < 0) {
            char why[400];
            up__bad(u, len, ems_verr_format(&err, why, sizeof why));
            if (u->state == EMS_UPLINK_OPEN)
                up__ready(u, NULL, utc, mono);
        } else if (u->state == EMS_UPLINK_OPEN) {
            up__ready(u, &w, utc, mono);
        } else {
            ems_log_debug("uplink: a second welcome ignored");
        }
    } else if (kind == EMS_MSG_UNKNOWN) {
        char why[400];
        up__bad(u, len, ems_verr_format(&err, why, sizeof why));
    } else if (u->cbs.on_message) {
        u->cbs.on_message(u->ud, kind, root, data, len);
    }
    json_decref(root);
}

static const char *up__err(int status)
{
    switch (status) {
    case EMS_ECLOSED:
        return "the gateway dropped the connection without a close frame";
    case EMS_ETIMEDOUT:
        return "timed out (no frame within the keepalive limit, or connect/upgrade too slow)";
    case EMS_EMSGSIZE:
        return "a message from the gateway was too large (closed with 1009)";
    case EMS_EPROTO:
        return "WebSocket protocol error";
    case EMS_ENOSPC:
        return "the send queue overflowed";
    default:
        return status <= -10000 ? ems_strerror(status) : uv_strerror(status);
    }
}

static void up__describe(const ems_ws_close_info_t *i, bool ours, char *buf, size_t cap)
{
    const char *d = i->detail && i->detail[0] ? i->detail : NULL;
    if (i->http_status && i->http_status != 101) {
        const char *hint = i->http_status == 401   ? " (the device token was refused)"
                           : i->http_status == 403 ? " (device revoked or forbidden)"
                           : i->http_status == 404 ? " (wrong URL path)"
                           : i->http_status == 429 ? " (rate or connection limit)"
                           : i->http_status == 503
                               ? " (the gateway is shutting down or cannot reach its DB writer)"
                                                   : "";
        snprintf(buf, cap, "the gateway refused the upgrade with HTTP %d%s", i->http_status, hint);
    } else if (i->status == EMS_ETLS) {
        snprintf(buf, cap, "TLS failure: %s", d ? d : "handshake failed");
    } else if (ours && i->status == 0) {
        snprintf(buf, cap, "closed by us with code %d, the gateway answered %d", i->code_sent,
                 i->code_received);
    } else if (i->code_received && i->status == 0) {
        snprintf(buf, cap, "the gateway closed the link (code %d%s%s)", i->code_received,
                 d ? ", " : "", d ? d : "");
    } else if (i->status == 0) {
        snprintf(buf, cap, "closed (code sent %d)", i->code_sent);
    } else {
        snprintf(buf, cap, "%s%s%s", up__err(i->status), d ? ": " : "", d ? d : "");
    }
}

static void up__timer_closed(uv_handle_t *h)
{
    ems_uplink_t *u = h->data;
    if (u->tls)
        ems_tls_config_unref(u->tls);
    void (*cb)(void *) = u->on_stopped;
    void *arg = u->stop_arg;
    free(u);
    if (cb)
        cb(arg);
}

static void up__finish(ems_uplink_t *u)
{
    u->state = EMS_UPLINK_STOPPED;
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, up__timer_closed);
}

static void up__ws_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    ems_uplink_t *u = ems_ws_user(ws);
    ems_uplink_state_t was = u->state;
    u->ws = NULL;
    char why[512];
    up__describe(info, u->stopping, why, sizeof why);
    up__copy(u->st.last_error, sizeof u->st.last_error, why, NULL);
    int64_t now = up__now();
    bool was_ready = u->ready_ms != 0;
    int64_t up_ms = was_ready ? now - u->ready_ms : 0;
    u->ready_ms = 0;
    if (was_ready) {
        u->st.drops++;
        if (u->stopping)
            ems_log_info("uplink: link closed after %.1f s: %s", (double)up_ms / 1000.0, why);
        else
            ems_log_warn("uplink: link lost after %.1f s: %s", (double)up_ms / 1000.0, why);
        if (u->cbs.on_down)
            u->cbs.on_down(u->ud);
    } else if (!u->stopping) {
        u->st.failures++;
        ems_log_warn("uplink: attempt %llu failed (%s): %s", (unsigned long long)u->st.attempts,
                     ems_uplink_state_name(was), why);
    }
    if (u->stopping) {
        up__finish(u);
        return;
    }
    /* A link that held for a while was a success: the next outage starts
     * the delays from the bottom again. One that dropped at once keeps
     * climbing, so a gateway that accepts and kicks us is not hammered. */
    if (was_ready && up_ms >= (int64_t)u->cfg.stable_ms)
        ems_backoff_reset(&u->bo);
    up__wait(u);
}

/* ------------------------------------------------------------- use */

int ems_uplink_send(ems_uplink_t *u, const char *text, size_t len)
{
    if (u->state != EMS_UPLINK_READY || !u->ws)
        return EMS_ECLOSED;
    int rc = ems_ws_send_text(u->ws, text, len);
    if (rc == 0)
        u->st.msgs_out++;
    return rc;
}

bool ems_uplink_ready(const ems_uplink_t *u)
{
    return u->state == EMS_UPLINK_READY;
}

size_t ems_uplink_queued(const ems_uplink_t *u)
{
    return u->ws ? ems_ws_queued(u->ws) : 0;
}

void ems_uplink_drop(ems_uplink_t *u, const char *why)
{
    if (!u->ws || u->stopping)
        return;
    ems_log_warn("uplink: dropping the link: %s", why);
    ems_ws_abort(u->ws, EMS_ENOSPC);
}

int ems_uplink_reload_ca(ems_uplink_t *u, const char *ca_file)
{
    if (!u->is_tls)
        return 0;
    ems_tls_config_t *t = NULL;
    int rc = up__tls(ca_file, &t);
    if (rc < 0)
        return rc;
    ems_tls_config_unref(u->tls);
    u->tls = t;
    snprintf(u->ca_file, sizeof u->ca_file, "%s", ca_file);
    ems_log_info("uplink: CA file %s loaded for the next connection", ca_file);
    return 0;
}

void ems_uplink_stop(ems_uplink_t *u, void (*on_stopped)(void *arg), void *arg)
{
    if (u->stopping) {
        if (u->ws)
            ems_ws_abort(u->ws, UV_ECANCELED);
        return;
    }
    u->stopping = true;
    u->on_stopped = on_stopped;
    u->stop_arg = arg;
    uv_timer_stop(&u->timer);
    ems_uplink_state_t was = u->state;
    u->state = EMS_UPLINK_CLOSING;
    if (!u->ws) {
        up__finish(u);
    } else if (was == EMS_UPLINK_OPEN || was == EMS_UPLINK_READY) {
        ems_ws_close(u->ws, 1000, "device shutting down");
    } else {
        ems_ws_abort(u->ws, UV_ECANCELED);
    }
}

void ems_uplink_stats(const ems_uplink_t *u, ems_uplink_stats_t *out)
{
    *out = u->st;
    out->state = u->state;
    out->ready_since_ms = u->state == EMS_UPLINK_READY ? u->ready_ms : 0;
    if (u->state != EMS_UPLINK_WAITING)
        out->retry_at_ms = 0;
    out->tls = u->is_tls;
}
