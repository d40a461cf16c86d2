/* gw_webhook.c: alarm webhooks (see gw_webhook.h). */
#include "gw_webhook.h"

#include "auth.h"
#include "backoff.h"
#include "conn.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "timefmt.h"
#include "tls.h"

#include <inttypes.h>
#include <jansson.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_MS 1000         /* an idle webhook asks for new events this often */
#define RESP_MAX (64 * 1024) /* response bytes read at most (status + headers matter) */

typedef enum { PH_IDLE, PH_CLAIMING, PH_SENDING, PH_ADVANCING } phase_t;

typedef struct hook {
    struct gw_webhooks *m;
    char url[1024];
    int tls;
    char host[256];
    uint16_t port;
    char path[768];
    phase_t phase;
    int64_t next_mono;
    ems_backoff_t backoff;
    uint64_t event_id; /* the event being delivered, 0 none */
    unsigned attempts; /* failed attempts of event_id */
    char *body;        /* its JSON */
    char kind[32];
    ems_conn_t *conn;
    ems_http_parser_t *parser;
    int http_status; /* 0 until a response was parsed */
    size_t resp_bytes;
} hook_t;

struct gw_webhooks {
    gw_webhooks_opts_t o;
    char owner[128];
    unsigned char key[256];
    size_t key_len;
    ems_tls_config_t *tls;
    hook_t *hooks;
    size_t n;
    uv_timer_t timer;
    int refs; /* the timer + open connections */
    bool closing;
};

/* ------------------------------------------------------------ pure helpers */

int gw_webhook_parse_url(const char *url, int *tls, char *host, size_t hcap, uint16_t *port,
                         char *path, size_t pcap)
{
    const char *p;
    if (!strncmp(url, "http://", 7)) {
        *tls = 0;
        *port = 80;
        p = url + 7;
    } else if (!strncmp(url, "https://", 8)) {
        *tls = 1;
        *port = 443;
        p = url + 8;
    } else {
        return EMS_EINVAL;
    }
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *colon = NULL;
    if (*p == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            return EMS_EINVAL;
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
        else if (rb + 1 != end)
            return EMS_EINVAL;
        if ((size_t)(rb - p - 1) >= hcap || rb == p + 1)
            return EMS_EINVAL;
        memcpy(host, p + 1, (size_t)(rb - p - 1));
        host[rb - p - 1] = '\0';
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        const char *he = colon ? colon : end;
        if (he == p || (size_t)(he - p) >= hcap)
            return EMS_EINVAL;
        memcpy(host, p, (size_t)(he - p));
        host[he - p] = '\0';
        for (const char *c = host; *c; c++)
            if (*c == '@' || *c == ' ' || *c == '?' || *c == '#')
                return EMS_EINVAL;
    }
    if (colon) {
        char *e;
        long v = strtol(colon + 1, &e, 10);
        if (e != end || v < 1 || v > 65535)
            return EMS_EINVAL;
        *port = (uint16_t)v;
    }
    const char *pp = slash ? slash : "/";
    if (strlen(pp) >= pcap)
        return EMS_EINVAL;
    for (const char *c = pp; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return EMS_EINVAL;
    strcpy(path, pp);
    return 0;
}

int gw_webhook_sign(const void *key, size_t key_len, const char *timestamp, const char *body,
                    size_t len, char out[72])
{
    unsigned char mac[32];
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc = mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    if (!rc)
        rc = mbedtls_md_hmac_starts(&ctx, key, key_len);
    if (!rc)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)timestamp, strlen(timestamp));
    if (!rc)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)".", 1);
    if (!rc)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)body, len);
    if (!rc)
        rc = mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    if (rc)
        return EMS_EIO;
    memcpy(out, "sha256=", 7);
    ems_auth_hex(mac, sizeof mac, out + 7);
    return 0;
}

/* ------------------------------------------------------------ lifetime */

static void unref(gw_webhooks_t *m)
{
    if (--m->refs > 0)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->hooks[i].body);
        ems_http_parser_free(m->hooks[i].parser);
    }
    free(m->hooks);
    ems_tls_config_unref(m->tls);
    memset(m->key, 0, sizeof m->key);
    free(m);
}

static void timer_closed(uv_handle_t *h)
{
    unref(h->data);
}

void gw_webhooks_free(gw_webhooks_t *m)
{
    if (!m || m->closing)
        return;
    m->closing = true;
    for (size_t i = 0; i < m->n; i++)
        if (m->hooks[i].conn)
            ems_conn_abort(m->hooks[i].conn, EMS_ECLOSED);
    uv_close((uv_handle_t *)&m->timer, timer_closed);
}

/* ------------------------------------------------------------ the loop */

static gw_link_t *link_of(hook_t *h)
{
    return h->m->o.link ? *h->m->o.link : NULL;
}

static void advance(hook_t *h, bool dead);

/* One attempt failed: retry after a backoff delay, or give the event up
 * (dead letter) after `retries` attempts. */
static void retry_later(hook_t *h, const char *why)
{
    gw_webhooks_t *m = h->m;
    h->phase = PH_IDLE;
    ems_metric_inc(m->o.failed);
    h->attempts++;
    if (h->attempts >= m->o.retries) {
        ems_log_warn("webhook %s: event %" PRIu64 " dead-lettered after %u attempts (last: %s)",
                     h->url, h->event_id, h->attempts, why);
        ems_metric_inc(m->o.dead);
        advance(h, true);
        return;
    }
    uint64_t d = ems_backoff_next(&h->backoff);
    ems_log_warn("webhook %s: event %" PRIu64 " attempt %u failed (%s); retry in %" PRIu64 " ms",
                 h->url, h->event_id, h->attempts, why, d);
    h->next_mono = ems_time_mono_ms() + (int64_t)d;
}

static void advance_result(void *ud, int status, const char *json, size_t len)
{
    hook_t *h = ud;
    if (h->m->closing)
        return;
    h->phase = PH_IDLE;
    if (status < 0) {
        ems_log_warn("webhook %s: cursor not moved (%s: %.*s); the event may be sent again", h->url,
                     ems_strerror(status), (int)len, json);
        h->next_mono = ems_time_mono_ms() + POLL_MS;
        return;
    }
    h->next_mono = ems_time_mono_ms(); /* the next event at once */
}

/* Moves the webhook's cursor past the current event (delivered, or dead). */
static void advance(hook_t *h, bool dead)
{
    gw_link_t *l = link_of(h);
    json_t *q = json_pack("{sssssssIsb}", "op", "webhook_advance", "name", h->url, "owner",
                          h->m->owner, "event_id", (json_int_t)h->event_id, "dead", dead);
    char *s = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    int rc = s && l ? gw_link_query(l, s, strlen(s), advance_result, h) : EMS_EAGAIN;
    free(s);
    h->phase = rc < 0 ? PH_IDLE : PH_ADVANCING;
    h->next_mono = ems_time_mono_ms() + POLL_MS;
}

/* ------------------------------------------------------------ HTTP POST */

static void conn_open(ems_conn_t *c)
{
    hook_t *h = ems_conn_user(c);
    char ts[32], sig[72], hdr[2048];
    snprintf(ts, sizeof ts, "%lld", (long long)(ems_time_now_ms() / 1000));
    size_t blen = strlen(h->body);
    if (gw_webhook_sign(h->m->key, h->m->key_len, ts, h->body, blen, sig) < 0) {
        ems_conn_abort(c, EMS_EIO);
        return;
    }
    char hostport[300];
    bool dflt = h->port == (h->tls ? 443 : 80);
    if (strchr(h->host, ':'))
        snprintf(hostport, sizeof hostport, "[%s]", h->host);
    else
        snprintf(hostport, sizeof hostport, "%s", h->host);
    if (!dflt) {
        size_t n = strlen(hostport);
        snprintf(hostport + n, sizeof hostport - n, ":%u", h->port);
    }
    int n = snprintf(hdr, sizeof hdr,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ems-gateway\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nX-EMS-Event: %s\r\nX-EMS-Event-Id: %" PRIu64 "\r\n"
                     "X-EMS-Timestamp: %s\r\nX-EMS-Signature: %s\r\n\r\n",
                     h->path, hostport, blen, h->kind, h->event_id, ts, sig);
    if (n < 0 || (size_t)n >= sizeof hdr || ems_conn_write(c, hdr, (size_t)n) < 0 ||
        ems_conn_write(c, h->body, blen) < 0)
        ems_conn_abort(c, EMS_EIO);
}

static void conn_read(ems_conn_t *c, const char *data, size_t len)
{
    hook_t *h = ems_conn_user(c);
    if (h->http_status)
        return;
    h->resp_bytes += len;
    size_t used;
    int rc = ems_http_parser_feed(h->parser, data, len, &used);
    if (rc == 1) {
        h->http_status = ems_http_parser_msg(h->parser)->status;
        ems_conn_close(c, 1000);
    } else if (rc < 0 || h->resp_bytes > RESP_MAX) {
        h->http_status = -1;
        ems_conn_abort(c, EMS_EPROTO);
    }
}

static void conn_closed(ems_conn_t *c, int status)
{
    hook_t *h = ems_conn_user(c);
    gw_webhooks_t *m = h->m;
    h->conn = NULL;
    if (!m->closing) {
        char why[300];
        if (h->http_status >= 200 && h->http_status < 300) {
            ems_backoff_reset(&h->backoff);
            advance(h, false);
            ems_metric_inc(m->o.delivered);
            ems_log_info("webhook %s: event %" PRIu64 " (%s) delivered", h->url, h->event_id,
                         h->kind);
        } else {
            if (h->http_status > 0)
                snprintf(why, sizeof why, "HTTP %d", h->http_status);
            else if (h->http_status < 0)
                snprintf(why, sizeof why, "malformed response");
            else
                snprintf(why, sizeof why, "%s%s%s", ems_strerror(status),
                         ems_conn_error(c)[0] ? ": " : "", ems_conn_error(c));
            retry_later(h, why);
        }
    }
    unref(m);
}

static const ems_conn_callbacks_t conn_cbs = {
    .on_open = conn_open, .on_read = conn_read, .on_close = conn_closed};

static void post(hook_t *h)
{
    gw_webhooks_t *m = h->m;
    if (!h->parser)
        h->parser = ems_http_parser_new(EMS_HTTP_RESPONSE, NULL);
    else
        ems_http_parser_reset(h->parser);
    h->http_status = 0;
    h->resp_bytes = 0;
    if (!h->parser) {
        retry_later(h, "out of memory");
        return;
    }
    int rc = ems_conn_connect(uv_handle_get_loop((uv_handle_t *)&m->timer), h->host, h->port,
                              h->tls ? m->tls : NULL, NULL, NULL, &conn_cbs, h, &h->conn);
    if (rc < 0) {
        retry_later(h, ems_strerror(rc));
        return;
    }
    m->refs++;
    h->phase = PH_SENDING;
    ems_conn_set_timer(h->conn, m->o.timeout_ms);
}

/* ------------------------------------------------------------ claim */

static void claim_result(void *ud, int status, const char *json, size_t len)
{
    hook_t *h = ud;
    if (h->m->closing)
        return;
    h->phase = PH_IDLE;
    h->next_mono = ems_time_mono_ms() + POLL_MS;
    if (status < 0) {
        ems_log_debug("webhook %s: claim failed: %s", h->url, ems_strerror(status));
        return;
    }
    json_t *o = json_loadb(json, len, 0, NULL);
    json_t *ev = json_array_get(json_object_get(o, "events"), 0);
    json_int_t id = json_integer_value(json_object_get(ev, "event_id"));
    if (!json_is_true(json_object_get(o, "claimed")) || !ev || id <= 0) {
        json_decref(o);
        return;
    }
    if ((uint64_t)id != h->event_id) {
        h->event_id = (uint64_t)id;
        h->attempts = 0;
        ems_backoff_reset(&h->backoff);
    }
    free(h->body);
    h->body = json_dumps(ev, JSON_COMPACT);
    snprintf(h->kind, sizeof h->kind, "%s",
             json_string_value(json_object_get(ev, "type"))
                 ? json_string_value(json_object_get(ev, "type"))
                 : "alarm");
    json_decref(o);
    if (!h->body) {
        retry_later(h, "out of memory");
        return;
    }
    if (h->attempts >= h->m->o.retries) { /* given up before; the cursor did not move */
        advance(h, true);
        return;
    }
    post(h);
}

static void claim(hook_t *h)
{
    gw_link_t *l = link_of(h);
    if (!l || !gw_link_up(l)) {
        h->next_mono = ems_time_mono_ms() + POLL_MS;
        return;
    }
    json_t *q = json_pack("{sssssssisi}", "op", "webhook_claim", "name", h->url, "owner",
                          h->m->owner, "lease_s", (int)h->m->o.lease_s, "limit", 1);
    char *s = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    int rc = s ? gw_link_query(l, s, strlen(s), claim_result, h) : EMS_ENOMEM;
    free(s);
    if (rc < 0)
        h->next_mono = ems_time_mono_ms() + POLL_MS;
    else
        h->phase = PH_CLAIMING;
}

static void timer_cb(uv_timer_t *t)
{
    gw_webhooks_t *m = t->data;
    int64_t now = ems_time_mono_ms();
    for (size_t i = 0; i < m->n; i++) {
        hook_t *h = &m->hooks[i];
        if (h->phase == PH_IDLE && now >= h->next_mono)
            claim(h);
    }
}

/* ------------------------------------------------------------ start */

static int read_key(gw_webhooks_t *m, const char *path)
{
    if (!path || !path[0]) {
        ems_log_warn("webhooks: no alarm_webhook_secret_file; signatures use an empty key");
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        ems_log_error("alarm_webhook_secret_file %s: cannot read", path);
        return EMS_ECONFIG;
    }
    size_t n = fread(m->key, 1, sizeof m->key, f);
    fclose(f);
    while (n && (m->key[n - 1] == '\n' || m->key[n - 1] == '\r'))
        n--;
    if (n == 0) {
        ems_log_error("alarm_webhook_secret_file %s: empty", path);
        return EMS_ECONFIG;
    }
    m->key_len = n;
    return 0;
}

int gw_webhooks_new(uv_loop_t *loop, const gw_webhooks_opts_t *o, gw_webhooks_t **out)
{
    *out = NULL;
    if (!o->urls || !o->urls[0])
        return 0;
    gw_webhooks_t *m = calloc(1, sizeof *m);
    if (!m)
        return EMS_ENOMEM;
    m->o = *o;
    if (!m->o.retries)
        m->o.retries = 10;
    snprintf(m->owner, sizeof m->owner, "%s", o->owner ? o->owner : "gateway");
    int rc = read_key(m, o->secret_file);
    const char *p = o->urls;
    while (rc == 0 && *p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len) {
            hook_t *nh = realloc(m->hooks, (m->n + 1) * sizeof *nh);
            if (!nh) {
                rc = EMS_ENOMEM;
                break;
            }
            m->hooks = nh;
            hook_t *h = &m->hooks[m->n];
            memset(h, 0, sizeof *h);
            h->m = m;
            if (len >= sizeof h->url ||
                (memcpy(h->url, p, len), h->url[len] = '\0',
                 gw_webhook_parse_url(h->url, &h->tls, h->host, sizeof h->host, &h->port, h->path,
                                      sizeof h->path) < 0)) {
                ems_log_error("alarm_webhooks: '%.*s' is not an http:// or https:// URL", (int)len,
                              p);
                rc = EMS_ECONFIG;
                break;
            }
            ems_backoff_init(&h->backoff, o->backoff_ms, o->backoff_max_ms,
                             (uint64_t)ems_time_now_ms() ^ (uint64_t)m->n * 0x9e3779b97f4a7c15ull);
            m->n++;
            if (h->tls && !m->tls && ems_tls_client_config_new(o->ca_file, &m->tls) < 0) {
                ems_log_error("alarm_webhook_ca_file %s: cannot load", o->ca_file);
                rc = EMS_ECONFIG;
                break;
            }
        }
        p += len;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == ',')
            p++;
    }
    if (rc < 0) {
        free(m->hooks);
        ems_tls_config_unref(m->tls);
        free(m);
        return rc;
    }
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    m->refs = 1;
    uv_timer_start(&m->timer, timer_cb, 100, 100);
    for (size_t i = 0; i < m->n; i++)
        ems_log_info("webhook %s: alarm events are delivered there", m->hooks[i].url);
    *out = m;
    return 0;
}
