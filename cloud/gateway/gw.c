/* gw.c: the gateway's life, request dispatch and metrics (see gw.h). */
#include "gw.h"

#include "error.h"
#include "gw_static.h"
#include "jsonw.h"
#include "log.h"
#include "timefmt.h"

#include <errno.h>
#include <jansson.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SHUTDOWN_DRAIN_MS 5000 /* wait this long for the DB writer to commit */
#define GW_SILENT_MAX 10000    /* silent devices per answer (the rest: next sweep) */

/* ------------------------------------------------------------ helpers */

gw_dev_t *gw_dev_get(gw_t *gw, const char *id, bool create)
{
    gw_dev_t *d = gw_map_get(&gw->devs, id);
    if (d || !create)
        return d;
    d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    snprintf(d->id, sizeof d->id, "%s", id);
    if (gw_map_put(&gw->devs, d->id, d) != 0) {
        free(d);
        return NULL;
    }
    return d;
}

void gw_event(gw_t *gw, const char *json, size_t len)
{
    int rc = gw->link ? gw_link_event(gw->link, json, len) : EMS_ECLOSED;
    if (rc < 0)
        ems_log_warn("event not stored (%s): %.*s", ems_strerror(rc), (int)(len > 200 ? 200 : len),
                     json);
}

/* ------------------------------------------------------------ alarms */

/* The engine decided: one durable alarm_raise / alarm_clear EVENT
 * (docs/protocol.md 5.4). The database makes a duplicate raise (another
 * gateway, a replay) a no-op, so this never asks whether one is open. */
static bool alarm_emit(void *ud, const gw_alarm_change_t *c)
{
    gw_t *gw = ud;
    char buf[2048], at[EMS_TIME_STR_MAX], since[EMS_TIME_STR_MAX];
    ems_time_format(c->at_ms, at, sizeof at);
    ems_jw_t w;
    ems_jw_init(&w, buf, sizeof buf);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, c->raise ? "alarm_raise" : "alarm_clear");
    ems_jw_key(&w, "device_id");
    ems_jw_str(&w, c->device_id);
    ems_jw_key(&w, "rule");
    ems_jw_str(&w, gw_alarm_rule_name(c->rule));
    ems_jw_key(&w, "at");
    ems_jw_str(&w, at);
    ems_jw_key(&w, "gateway");
    ems_jw_str(&w, gw->instance);
    if (c->raise) {
        ems_time_format(c->since_ms, since, sizeof since);
        ems_jw_key(&w, "since");
        ems_jw_str(&w, since);
        ems_jw_key(&w, "severity");
        ems_jw_str(&w, c->rule == GW_ALARM_SOC_LOW || c->rule == GW_ALARM_OFFLINE ? "warning"
                                                                                 : "critical");
        ems_jw_key(&w, "message");
        ems_jw_str(&w, c->message);
        ems_jw_key(&w, "details");
        ems_jw_raw(&w, c->details, strlen(c->details));
    } else {
        ems_jw_key(&w, "reason");
        ems_jw_str(&w, c->message);
    }
    ems_jw_obj_close(&w);
    int n = ems_jw_finish(&w);
    if (n <= 0)
        return true; /* cannot happen (fixed shape, bounded texts); never retried */
    int rc = gw->link ? gw_link_event(gw->link, buf, (size_t)n) : EMS_ECLOSED;
    if (rc < 0) {
        ems_log_limited(&gw->log_alarm, ems_time_mono_ms(), EMS_LOG_WARN,
                        "alarm %s of device %s rule %s not queued (%s); tried again later",
                        c->raise ? "raise" : "clear", c->device_id, gw_alarm_rule_name(c->rule),
                        ems_strerror(rc));
        return false;
    }
    ems_log_info("alarm %s: device %s rule %s: %s", c->raise ? "raised" : "cleared", c->device_id,
                 gw_alarm_rule_name(c->rule), c->message);
    ems_metric_inc(gw->m.alarms[c->raise ? 0 : 1]);
    return true;
}

void gw_alarms_packet(gw_t *gw, gw_dev_t *d, const ems_telemetry_t *t, int64_t now_ms)
{
    gw_alarm_packet(&gw->alarm_cfg, &d->alarm, t, now_ms, alarm_emit, gw);
}

typedef struct {
    gw_t *gw;
    gw_dev_t *d; /* never freed before shutdown (gw.h) */
    uint64_t gen; /* the connection that asked */
} alarm_sync_t;

static void alarm_sync_result(void *ud, int status, const char *json, size_t len)
{
    alarm_sync_t *a = ud;
    gw_dev_t *d = a->d;
    if (status == 0 && d->conn && d->conn->gen == a->gen && !a->gw->stopping) {
        json_t *o = json_loadb(json, len, 0, NULL), *al;
        unsigned mask = 0;
        size_t i;
        json_array_foreach(json_object_get(o, "alarms"), i, al)
        {
            const char *rule = json_string_value(json_object_get(al, "rule"));
            for (int r = 0; rule && r < GW_ALARM_NRULES; r++)
                if (!strcmp(rule, gw_alarm_rule_name((gw_alarm_rule_t)r)))
                    mask |= 1u << r;
        }
        json_decref(o);
        gw_alarm_sync(&a->gw->alarm_cfg, &d->alarm, d->id, mask, ems_time_now_ms(), alarm_emit,
                      a->gw);
    } else if (status < 0) {
        ems_log_debug("device %s: open alarms not known (%s); its rules start unknown", d->id,
                      ems_strerror(status));
    }
    free(a);
}

void gw_alarms_connected(gw_t *gw, gw_dev_t *d)
{
    gw_alarm_connected(&gw->alarm_cfg, &d->alarm, d->id, ems_time_now_ms(), alarm_emit, gw);
    /* Which of its alarms are open (raised by an earlier gateway, or by
     * this one before a restart): the rules then know what to clear. */
    alarm_sync_t *a = calloc(1, sizeof *a);
    if (!a || !d->conn || !gw->link)
        goto fail;
    a->gw = gw;
    a->d = d;
    a->gen = d->conn->gen;
    char q[160];
    int n = snprintf(q, sizeof q,
                     "{\"op\":\"alarms\",\"device_id\":\"%s\",\"state\":\"open\",\"limit\":20}",
                     d->id);
    if (gw_link_query(gw->link, q, (size_t)n, alarm_sync_result, a) == 0)
        return;
fail:
    free(a);
}

void gw_alarms_disconnected(gw_t *gw, gw_dev_t *d)
{
    (void)gw;
    gw_alarm_disconnected(&d->alarm);
}

/* Raises `offline` for device `id`, silent since `since_ms` (wall clock),
 * unless it is connected here or, by the bus's presence, elsewhere. */
static void alarm_offline_check(gw_t *gw, gw_dev_t *d, int64_t since_ms, int64_t now)
{
    if (d->conn || d->alarm.state[GW_ALARM_OFFLINE] == GW_ALARM_RAISED)
        return;
    if (gw->bus) {
        const gw_bus_presence_t *rp = gw_bus_remote(gw->bus, d->id);
        if (rp && rp->online)
            return;
    }
    gw_alarm_offline(&gw->alarm_cfg, &d->alarm, d->id, since_ms, now, alarm_emit, gw);
}

static void silent_result(void *ud, int status, const char *json, size_t len)
{
    gw_t *gw = ud;
    gw->silent_inflight = false;
    if (status < 0 || gw->stopping) {
        if (status < 0)
            ems_log_debug("silent devices not known (%s); asked again later", ems_strerror(status));
        return;
    }
    json_t *o = json_loadb(json, len, 0, NULL), *row;
    size_t i;
    int64_t now = ems_time_now_ms();
    json_array_foreach(json_object_get(o, "devices"), i, row)
    {
        const char *id = json_string_value(json_object_get(row, "device_id"));
        int64_t last = json_integer_value(json_object_get(row, "last_ms"));
        gw_dev_t *d = id && last > 0 ? gw_dev_get(gw, id, true) : NULL;
        if (d)
            alarm_offline_check(gw, d, last, now);
    }
    json_decref(o);
}

/* Devices this gateway did not see go: it started after they fell silent,
 * or they never came back after its restart, or they left another
 * gateway that died. After min(alarm_offline_s, 60 s) from the start, and
 * then every max(alarm_offline_s, 60 s), the DB writer names the devices whose
 * newest packet is older than alarm_offline_s, and `offline` is raised for
 * those not connected anywhere. Several gateways may raise the same
 * alarm: the database keeps one (docs/alarms.md). */
static void alarms_silent_sweep(gw_t *gw, int64_t mono)
{
    int64_t off = gw->alarm_cfg.offline_ms;
    if (!gw->silent_due_mono) /* after the start: devices that reconnect are back by then */
        gw->silent_due_mono = mono + (off < 60000 ? off : 60000);
    if (gw->silent_inflight || mono < gw->silent_due_mono || !gw->link || gw->stopping)
        return;
    gw->silent_due_mono = mono + (off > 60000 ? off : 60000);
    char q[128];
    int n = snprintf(q, sizeof q, "{\"op\":\"silent\",\"older_than_ms\":%lld,\"limit\":%d}",
                     (long long)gw->alarm_cfg.offline_ms, GW_SILENT_MAX);
    if (gw_link_query(gw->link, q, (size_t)n, silent_result, gw) == 0)
        gw->silent_inflight = true;
}

/* The offline rule, once a second: devices this gateway saw disconnect and
 * that are not connected anywhere now. A device that moved to another
 * gateway is that gateway's (the bus's presence says so); one this
 * gateway never saw is found by alarms_silent_sweep (docs/alarms.md,
 * "Several gateways"). */
static void alarms_offline_sweep(gw_t *gw, int64_t mono)
{
    if (mono - gw->alarm_tick_mono < 1000)
        return;
    gw->alarm_tick_mono = mono;
    ems_log_limit_flush(&gw->log_alarm, mono);
    if (gw->alarm_cfg.offline_ms <= 0)
        return;
    int64_t now = ems_time_now_ms();
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&gw->devs, &i, &k, &v);) {
        gw_dev_t *d = v;
        if (d->offline_ms)
            alarm_offline_check(gw, d, d->offline_ms, now);
    }
    alarms_silent_sweep(gw, mono);
}

void gw_reply_json(ems_server_req_t *req, int status, const char *json, size_t len,
                   const char *extra)
{
    char hdr[512];
    snprintf(hdr, sizeof hdr, "Cache-Control: no-store\r\n%s", extra ? extra : "");
    ems_server_respond(req, status, "application/json", hdr, json, len);
}

void gw_reply_error(ems_server_req_t *req, int status, const char *reason, const char *path)
{
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(reason));
    if (path && path[0])
        json_object_set_new(o, "path", json_string(path));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    const char *extra = status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
    if (s) {
        gw_reply_json(req, status, s, strlen(s), extra);
        free(s);
    } else {
        gw_reply_json(req, status, "{\"error\":\"out of memory\"}", 25, extra);
    }
}

bool gw_req_session(const gw_t *gw, ems_server_req_t *req, gw_session_t *s)
{
    const char *cookie = ems_http_msg_header(ems_server_req_msg(req), "Cookie");
    if (!cookie)
        return false;
    size_t len;
    const char *v = gw_cookie_find(cookie, strlen(cookie), "ems_session", &len);
    return v && gw_session_verify(&gw->skey, v, len, ems_time_now_ms() / 1000, s) == 0 &&
           !gw_api_session_revoked(gw, v, len);
}

/* Compares the authority part of an Origin ("https://host:port") with a
 * Host header, ASCII case-insensitively. */
static bool origin_matches_host(const char *origin, const char *host)
{
    const char *p = strstr(origin, "://");
    if (!p || !host)
        return false;
    size_t slen = (size_t)(p - origin);
    if (!(slen == 4 && strncasecmp(origin, "http", 4) == 0) &&
        !(slen == 5 && strncasecmp(origin, "https", 5) == 0))
        return false;
    return strcasecmp(p + 3, host) == 0;
}

bool gw_origin_ok(const gw_t *gw, const char *origin, const char *host)
{
    if (!origin)
        return true; /* not a browser: browsers always send Origin on WebSocket */
    if (!gw->cfg.origins[0])
        return origin_matches_host(origin, host);
    const char *p = gw->cfg.origins;
    size_t olen = strlen(origin);
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == olen && strncasecmp(p, origin, olen) == 0)
            return true;
        p = e;
    }
    return false;
}

/* ------------------------------------------------------------ dispatch */

static void on_request(ems_server_req_t *req, void *user)
{
    gw_t *gw = user;
    const ems_http_msg_t *m = ems_server_req_msg(req);
    gw_route_t r;
    gw_router_match(m->path, strlen(m->path), &r);
    unsigned method = gw_router_method(m->method);
    ems_metric_inc(gw->m.http_requests);
    if (r.id != GW_R_NOT_FOUND && r.methods && !(method & r.methods)) {
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", gw_router_allow(r.methods));
        ems_server_respond(req, 405, "application/json", allow,
                           "{\"error\":\"method not allowed\"}", 30);
        return;
    }
    if (gw->stopping && (r.id == GW_R_WS_DEVICE || r.id == GW_R_WS_DASHBOARD)) {
        gw_reply_error(req, 503, "gateway is shutting down", NULL);
        return;
    }
    switch (r.id) {
    case GW_R_WS_DEVICE:
        gw_device_upgrade(gw, req, r.id1);
        return;
    case GW_R_WS_DASHBOARD:
        gw_dash_upgrade(gw, req);
        return;
    default:
        gw_api_handle(gw, req, &r, method);
        return;
    }
}

/* ------------------------------------------------------------ metrics */

static double g_devices(void *ud) { return (double)((gw_t *)ud)->ndevconns; }
static double g_dashes(void *ud) { return (double)((gw_t *)ud)->ndashes; }
static double g_held(void *ud)
{
    gw_t *gw = ud;
    return gw->link ? (double)gw_link_held(gw->link) : 0;
}
static double g_link_up(void *ud)
{
    gw_t *gw = ud;
    return gw->link && gw_link_up(gw->link) ? 1 : 0;
}
static double g_queries(void *ud)
{
    gw_t *gw = ud;
    return gw->link ? (double)gw_link_pending_queries(gw->link) : 0;
}
static double g_server_conns(void *ud)
{
    gw_t *gw = ud;
    return gw->server ? (double)ems_server_connections(gw->server) : 0;
}
static double g_known(void *ud) { return (double)((gw_t *)ud)->devs.len; }
static ems_server_stats_t server_stats(gw_t *gw)
{
    ems_server_stats_t st;
    memset(&st, 0, sizeof st);
    if (gw->server)
        ems_server_stats(gw->server, &st);
    return st;
}
static double g_unauth(void *ud) { return (double)server_stats(ud).unauth; }
static double g_out_bytes(void *ud) { return (double)server_stats(ud).out_bytes; }
static double g_hs_waiting(void *ud) { return (double)server_stats(ud).hs_waiting; }
static double g_accept_held(void *ud) { return (double)server_stats(ud).accept_held; }

/* The server's counters, copied into the metrics on every tick (so they
 * are at most 1 s old). Order: gw->m.srv[]. */
static void srv_metrics_register(gw_t *gw)
{
    ems_metrics_t *m = gw->metrics;
    static const char *const why[3] = {"reason=\"per_address\"", "reason=\"unauth_share\"",
                                       "reason=\"max_connections\""};
    for (int i = 0; i < 3; i++)
        gw->m.srv[i] = ems_metrics_counter(m, "ems_gateway_connections_refused_total",
                                           "TCP connections closed at accept, by limit.", why[i]);
    gw->m.srv[3] =
        ems_metrics_counter(m, "ems_gateway_unauth_evicted_total",
                            "Idle unauthenticated connections closed to make room.", NULL);
    gw->m.srv[4] =
        ems_metrics_counter(m, "ems_gateway_http_output_paused_total",
                            "Times a connection was not read for its unread answers.", NULL);
    gw->m.srv[5] = ems_metrics_counter(m, "ems_gateway_http_output_shed_total",
                                       "Connections closed over http_output_budget.", NULL);
    gw->m.srv[6] = ems_metrics_counter(m, "ems_gateway_tls_handshakes_deferred_total",
                                       "TLS handshake steps that waited for the CPU budget.", NULL);
    gw->m.srv[7] = ems_metrics_counter(m, "ems_gateway_accept_paused_total",
                                       "Times accepting paused: the TLS handshakes taken on "
                                       "filled handshake_admit_ms at the budget.",
                                       NULL);
    gw->m.srv[8] = ems_metrics_counter(m, "ems_gateway_backlog_abandoned_total",
                                       "Connections taken off the listen backlog but not served: "
                                       "the client had closed, or waited over 7.5 s.",
                                       NULL);
    ems_metrics_gauge_fn(m, "ems_gateway_accept_held",
                         "1 while accepting is paused (new connections wait in the backlog).", NULL,
                         g_accept_held, gw);
    gw->m.tls_hs[0] = ems_metrics_counter(m, "ems_gateway_tls_handshakes_total",
                                          "TLS handshakes completed.", "kind=\"full\"");
    gw->m.tls_hs[1] = ems_metrics_counter(m, "ems_gateway_tls_handshakes_total",
                                          "TLS handshakes completed.", "kind=\"resumed\"");
    ems_metrics_gauge_fn(m, "ems_gateway_unauth_connections",
                         "Connections not upgraded to WebSocket (yet).", NULL, g_unauth, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_http_output_bytes",
                         "Queued HTTP answer bytes, all connections.", NULL, g_out_bytes, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_tls_handshakes_waiting",
                         "Connections waiting for the TLS handshake budget.", NULL, g_hs_waiting,
                         gw);
}

static void srv_metrics_update(gw_t *gw)
{
    if (gw->link) {
        gw_link_stats_t ls;
        gw_link_stats(gw->link, &ls);
        ems_metric_set(gw->m.lnk[0], (double)ls.queries_refused_user);
        ems_metric_set(gw->m.lnk[1], (double)ls.queries_refused_queue);
        ems_metric_set(gw->m.lnk[2], (double)ls.credential_changes);
        ems_metric_set(gw->m.lnk[3], (double)ls.lookups);
        ems_metric_set(gw->m.lnk[4], (double)ls.lookup_batches);
        ems_metric_set(gw->m.lnk[5], (double)ls.lookups_expired);
        ems_metric_set(gw->m.lnk[6], (double)ls.lookups_refused);
        ems_metric_set(gw->m.lnk[7], (double)ls.lookups_retried);
    }
    if (!gw->server)
        return;
    ems_server_stats_t st = server_stats(gw);
    const uint64_t v[9] = {st.refused_addr, st.refused_share,
                           st.refused - st.refused_addr - st.refused_share,
                           st.evicted, st.out_paused, st.out_shed, st.hs_deferred,
                           st.accept_paused, st.abandoned};
    for (int i = 0; i < 9; i++)
        ems_metric_set(gw->m.srv[i], (double)v[i]);
    if (gw->tls) {
        ems_tls_stats_t ts;
        ems_tls_config_stats(gw->tls, &ts);
        ems_metric_set(gw->m.tls_hs[0], (double)(gw->tls_before.full + ts.full));
        ems_metric_set(gw->m.tls_hs[1], (double)(gw->tls_before.resumed + ts.resumed));
    }
}

typedef struct {
    gw_t *gw;
    gw_cmd_status_t s;
} cmd_gauge_t;

static double g_link_stat(void *ud);
static void dbw_metrics_register(gw_t *gw);

static void metrics_init(gw_t *gw)
{
    ems_metrics_t *m = gw->metrics;
    gw_metric_set_t *s = &gw->m;
    static const char *const ep[2] = {"endpoint=\"device\"", "endpoint=\"dashboard\""};
    for (int i = 0; i < 2; i++) {
        s->conns_total[i] = ems_metrics_counter(m, "ems_gateway_connections_total",
                                                "WebSocket connections accepted.", ep[i]);
        s->refused[i] = ems_metrics_counter(m, "ems_gateway_upgrades_refused_total",
                                            "WebSocket upgrades refused (auth, limits).", ep[i]);
        s->msgs_in[i] = ems_metrics_counter(m, "ems_gateway_messages_in_total",
                                            "WebSocket messages received.", ep[i]);
        s->msgs_out[i] = ems_metrics_counter(m, "ems_gateway_messages_out_total",
                                             "WebSocket messages queued for sending.", ep[i]);
        s->bytes_in[i] = ems_metrics_counter(m, "ems_gateway_bytes_in_total",
                                             "Message payload bytes received.", ep[i]);
        s->bytes_out[i] = ems_metrics_counter(m, "ems_gateway_bytes_out_total",
                                              "Message payload bytes queued for sending.", ep[i]);
    }
    ems_metrics_gauge_fn(m, "ems_gateway_connections", "Open WebSocket connections.", ep[0],
                         g_devices, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_connections", "Open WebSocket connections.", ep[1],
                         g_dashes, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_tcp_connections", "Open TCP connections (all kinds).",
                         NULL, g_server_conns, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_known_devices", "Devices seen since start.", NULL, g_known,
                         gw);
    s->telemetry_ok =
        ems_metrics_counter(m, "ems_gateway_telemetry_total", "Telemetry packets accepted.", NULL);
    s->invalid = ems_metrics_counter(m, "ems_gateway_validation_failures_total",
                                     "Messages refused by validation.", NULL);
    s->foreign = ems_metrics_counter(m, "ems_gateway_foreign_packets_total",
                                     "Packets naming another device than the connection's.", NULL);
    s->rate_limited =
        ems_metrics_counter(m, "ems_gateway_rate_limited_total",
                            "Device connections closed for their message rate.", NULL);
    s->decodes[0] = ems_metrics_counter(m, "ems_gateway_device_decodes_total",
                                        "Device messages decoded, by path.", "path=\"fast\"");
    s->decodes[1] = ems_metrics_counter(m, "ems_gateway_device_decodes_total",
                                        "Device messages decoded, by path.", "path=\"full\"");
    s->not_stored = ems_metrics_counter(m, "ems_gateway_telemetry_not_stored_total",
                                        "Packets not forwarded (DB writer queue full).", NULL);
    s->acks_sent =
        ems_metrics_counter(m, "ems_gateway_acks_sent_total", "Ack messages sent.", NULL);
    s->nacks_sent =
        ems_metrics_counter(m, "ems_gateway_nacks_sent_total", "Nack messages sent.", NULL);
    s->acked_records = ems_metrics_counter(m, "ems_gateway_committed_records_total",
                                           "Telemetry records the DB writer committed.", NULL);
    s->dash_dropped = ems_metrics_counter(m, "ems_gateway_dashboards_dropped_total",
                                          "Dashboards closed for a full send queue (4009).", NULL);
    s->fanout_msgs = ems_metrics_counter(m, "ems_gateway_fanout_deliveries_total",
                                         "Messages queued to dashboards by fan-out.", NULL);
    s->http_requests =
        ems_metrics_counter(m, "ems_gateway_http_requests_total", "HTTP requests handled.", NULL);
    s->logins_ok = ems_metrics_counter(m, "ems_gateway_logins_total", "Logins.", "result=\"ok\"");
    s->logins_failed =
        ems_metrics_counter(m, "ems_gateway_logins_total", "Logins.", "result=\"failed\"");
    s->logins_throttled =
        ems_metrics_counter(m, "ems_gateway_logins_total", "Logins.", "result=\"throttled\"");
    s->logins_busy =
        ems_metrics_counter(m, "ems_gateway_logins_total", "Logins.", "result=\"busy\"");
    s->password_hashes = ems_metrics_counter(m, "ems_gateway_password_hashes_total",
                                             "Password hashes computed (logins).", NULL);
    s->password_rehashes = ems_metrics_counter(m, "ems_gateway_password_rehashes_total",
                                               "Stored password hashes raised to the current "
                                               "iteration count.",
                                               NULL);
    s->sessions_revoked = ems_metrics_counter(m, "ems_gateway_sessions_revoked_total",
                                              "Sessions ended by logout.", NULL);
    s->device_lookups =
        ems_metrics_counter(m, "ems_gateway_device_lookups_total",
                            "Upgrades' credential lookups sent to the DB writer.", NULL);
    s->device_negative_hits =
        ems_metrics_counter(m, "ems_gateway_device_negative_hits_total",
                            "Upgrades refused from the unknown-device cache.", NULL);
    s->ts_refused[0] =
        ems_metrics_counter(m, "ems_gateway_telemetry_refused_total",
                            "Packets refused for their timestamp.", "rule=\"future\"");
    s->ts_refused[1] =
        ems_metrics_counter(m, "ems_gateway_telemetry_refused_total",
                            "Packets refused for their timestamp.", "rule=\"too_old\"");
    static const double lat[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10};
    s->query_latency = ems_metrics_histogram(m, "ems_gateway_query_latency_seconds",
                                             "DB writer query round trips.", NULL, lat, 13);
    for (int i = 0; i < GW_CMD_STATUS_COUNT; i++) {
        char l[48];
        snprintf(l, sizeof l, "status=\"%s\"", gw_cmd_status_name((gw_cmd_status_t)i));
        s->cmd_status[i] = ems_metrics_counter(m, "ems_gateway_command_transitions_total",
                                               "Commands entering each status.", l);
    }
    ems_metrics_gauge_fn(m, "ems_gateway_dbwriter_up", "1 when the DB writer link is up.", NULL,
                         g_link_up, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_dbwriter_held",
                         "Records and events held until the DB writer commits them.", NULL, g_held,
                         gw);
    ems_metrics_gauge_fn(m, "ems_gateway_dbwriter_pending_queries",
                         "Queries waiting for the DB writer.", NULL, g_queries, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_dbwriter_reconnects",
                         "Connection attempts to the DB writer.", NULL, g_link_stat, gw);
    dbw_metrics_register(gw);
    srv_metrics_register(gw);
    s->lnk[0] =
        ems_metrics_counter(m, "ems_gateway_queries_refused_total",
                            "REST queries refused: one user's limit (query_per_user) or the "
                            "queue (query_queue).",
                            "limit=\"per_user\"");
    s->lnk[1] =
        ems_metrics_counter(m, "ems_gateway_queries_refused_total",
                            "REST queries refused: one user's limit (query_per_user) or the "
                            "queue (query_queue).",
                            "limit=\"queue\"");
    s->lnk[2] = ems_metrics_counter(m, "ems_gateway_credential_changes_total",
                                    "Credential changes pushed by the database (NOTIFY).", NULL);
    s->lnk[3] = ems_metrics_counter(m, "ems_gateway_credential_lookups_total",
                                    "Device credential lookups (upgrades and re-checks).", NULL);
    s->lnk[4] = ems_metrics_counter(m, "ems_gateway_credential_lookup_batches_total",
                                    "device_auths queries sent to the DB writer (many lookups "
                                    "each).",
                                    NULL);
    s->lnk[5] =
        ems_metrics_counter(m, "ems_gateway_credential_lookups_failed_total",
                            "Credential lookups not answered, by reason.", "reason=\"expired\"");
    s->lnk[6] =
        ems_metrics_counter(m, "ems_gateway_credential_lookups_failed_total",
                            "Credential lookups not answered, by reason.", "reason=\"queue_full\"");
    s->lnk[7] = ems_metrics_counter(m, "ems_gateway_credential_lookups_retried_total",
                                    "Credential lookups asked again after a failed batch.", NULL);
    /* Alarms and webhooks (docs/alarms.md). */
    s->alarms[0] = ems_metrics_counter(m, "ems_gateway_alarm_changes_total",
                                       "Alarm raises and clears this gateway sent to the database.",
                                       "change=\"raise\"");
    s->alarms[1] = ems_metrics_counter(m, "ems_gateway_alarm_changes_total",
                                       "Alarm raises and clears this gateway sent to the database.",
                                       "change=\"clear\"");
    s->webhook[0] = ems_metrics_counter(m, "ems_gateway_webhook_deliveries_total",
                                        "Alarm events delivered to a webhook (2xx).", NULL);
    s->webhook[1] =
        ems_metrics_counter(m, "ems_gateway_webhook_failures_total",
                            "Webhook delivery attempts that failed (to be retried).", NULL);
    s->webhook[2] =
        ems_metrics_counter(m, "ems_gateway_webhook_dead_letters_total",
                            "Alarm events given up after alarm_webhook_retries attempts.", NULL);
}

/* The DB writer's own counters (docs/storage.md, "Counters"), fetched with
 * {"op":"stats"} every DBW_STATS_EVERY_MS and shown in the gateway's
 * /metrics, so one scrape covers both cloud processes. A value is as old
 * as the last answer (at most one period). */
#define DBW_STATS_EVERY_MS 10000
static const struct {
    const char *field, *name, *help;
    bool counter;
} dbw_stats[] = {
    {"rows_written", "ems_dbwriter_rows_written_total", "New telemetry rows committed.", true},
    {"rows_duplicate", "ems_dbwriter_rows_duplicate_total", "Replayed rows already stored.", true},
    {"rows_rejected", "ems_dbwriter_rows_rejected_total", "Rows refused for good.", true},
    {"events_written", "ems_dbwriter_events_written_total", "Command and session events.", true},
    {"batches", "ems_dbwriter_batches_total", "Batches committed.", true},
    {"batch_failures", "ems_dbwriter_batch_failures_total", "Batches that failed and were retried.",
     true},
    {"pg_reconnects", "ems_dbwriter_pg_reconnects_total", "Connections to PostgreSQL made again.",
     true},
    {"commit_ms_last", "ems_dbwriter_commit_ms_last", "Last batch: sent to COMMIT confirmed, ms.",
     false},
    {"commit_ms_max", "ems_dbwriter_commit_ms_max", "Slowest batch so far, ms.", false},
    {"commit_ms_avg", "ems_dbwriter_commit_ms_avg", "Average batch, ms.", false},
    {"queue_rows", "ems_dbwriter_queue_rows", "Rows held, not yet committed.", false},
    {"queue_limit", "ems_dbwriter_queue_limit", "Rows held before backpressure.", false},
    {"paused", "ems_dbwriter_paused", "1 while the writer applies backpressure.", false},
    {"pg_up", "ems_dbwriter_pg_up", "1 while the writer is connected to PostgreSQL.", false},
    {"links", "ems_dbwriter_links", "Gateway connections to the writer.", false},
    {"pg_maint_up", "ems_dbwriter_pg_maint_up",
     "1 while the maintenance connection (rollup, partitions, job checks) is up.", false},
    {"rollup_steps", "ems_dbwriter_rollup_steps_total", "Plain PostgreSQL: rollup steps run.", true},
    {"rollup_failures", "ems_dbwriter_rollup_failures_total", "Plain PostgreSQL: rollup steps failed.",
     true},
    {"rollup_recomputed_total", "ems_dbwriter_rollup_buckets_recomputed_total",
     "Plain PostgreSQL: 1-minute buckets recomputed for late rows.", true},
    {"rollup_ms_last", "ems_dbwriter_rollup_ms_last", "Plain PostgreSQL: last rollup step, ms.",
     false},
    {"rollup_backlog", "ems_dbwriter_rollup_backlog",
     "Plain PostgreSQL: 1 while late buckets wait beyond one step.", false},
    {"tsdb_job_failures", "ems_dbwriter_tsdb_job_failures",
     "TimescaleDB: failures summed over the background jobs (job_stats.total_failures).", false},
    {"tsdb_jobs_failing", "ems_dbwriter_tsdb_jobs_failing",
     "TimescaleDB: background jobs whose last run failed.", false},
};
_Static_assert(sizeof dbw_stats / sizeof dbw_stats[0] <= 24, "gw_metric_set_t.dbw is too small");

static void dbw_metrics_register(gw_t *gw)
{
    for (size_t i = 0; i < sizeof dbw_stats / sizeof dbw_stats[0]; i++)
        gw->m.dbw[i] =
            dbw_stats[i].counter
                ? ems_metrics_counter(gw->metrics, dbw_stats[i].name, dbw_stats[i].help, NULL)
                : ems_metrics_gauge(gw->metrics, dbw_stats[i].name, dbw_stats[i].help, NULL);
}

static void dbw_stats_result(void *ud, int status, const char *json, size_t len)
{
    gw_t *gw = ud;
    gw->stats_inflight = false;
    if (status != 0)
        return; /* link down or shutting down: keep the last values */
    json_t *o = json_loadb(json, len, 0, NULL);
    for (size_t i = 0; o && i < sizeof dbw_stats / sizeof dbw_stats[0]; i++) {
        json_t *v = json_object_get(o, dbw_stats[i].field);
        if (json_is_number(v))
            ems_metric_set(gw->m.dbw[i], json_number_value(v));
        else if (json_is_boolean(v))
            ems_metric_set(gw->m.dbw[i], json_is_true(v) ? 1 : 0);
    }
    json_decref(o);
}

static void dbw_stats_poll(gw_t *gw, int64_t mono)
{
    if (gw->stats_inflight || mono < gw->stats_due_mono || !gw->link || !gw_link_up(gw->link))
        return;
    static const char q[] = "{\"op\":\"stats\"}";
    gw->stats_due_mono = mono + DBW_STATS_EVERY_MS;
    if (gw_link_query(gw->link, q, sizeof q - 1, dbw_stats_result, gw) == 0)
        gw->stats_inflight = true;
}

static double g_link_stat(void *ud)
{
    gw_t *gw = ud;
    if (!gw->link)
        return 0;
    gw_link_stats_t st;
    gw_link_stats(gw->link, &st);
    return (double)st.reconnects;
}

/* ------------------------------------------------------------ link callbacks */

static void link_committed(void *ud, void *owner, bool has_seq, uint64_t seq, const char *reject)
{
    gw_device_committed(ud, owner, has_seq, seq, reject);
}

static void link_acked(void *ud) { gw_device_flush_acks(ud); }

static void link_state(void *ud, bool up)
{
    (void)ud;
    if (!up)
        ems_log_warn("DB writer unavailable: telemetry is still fanned out but not acknowledged");
}

static void link_credentials(void *ud, const char *device_id)
{
    gw_device_forget_unknown(ud, device_id); /* a device just provisioned */
    gw_device_credentials_changed(ud, device_id);
}

static const gw_link_cb_t link_cbs = {link_committed, link_state, link_acked, link_credentials};

static const gw_cmds_ops_t cmd_ops = {gw_api_cmd_deliver, gw_api_cmd_changed};

/* ------------------------------------------------------------ shutdown */

static void tick_cb(uv_timer_t *t);

static void handle_closed(uv_handle_t *h)
{
    gw_t *gw = h->data;
    gw->open_handles--;
}

static void close_handles(gw_t *gw)
{
    if (gw->closing_handles)
        return;
    gw->closing_handles = true;
    gw_bus_close(gw);
    gw_webhooks_free(gw->webhooks); /* after the link: no query answer is pending */
    gw->webhooks = NULL;
    uv_close((uv_handle_t *)&gw->tick, handle_closed);
    uv_close((uv_handle_t *)&gw->ack_timer, handle_closed);
    uv_close((uv_handle_t *)&gw->sig_term, handle_closed);
    uv_close((uv_handle_t *)&gw->sig_int, handle_closed);
    uv_close((uv_handle_t *)&gw->sig_hup, handle_closed);
    ems_log_info("gateway stopped");
}

static void maybe_done(gw_t *gw)
{
    if (gw->server_stopped && gw->link_freed && gw->ndevconns == 0 && gw->ndashes == 0)
        close_handles(gw);
}

static void on_server_stopped(void *arg)
{
    gw_t *gw = arg;
    gw->server = NULL;
    gw->server_stopped = true;
    maybe_done(gw);
}

static void on_link_freed(void *arg)
{
    gw_t *gw = arg;
    gw->link_freed = true;
    maybe_done(gw);
}

/* Runs on every tick while stopping, in three phases: (1) the DB writer
 * drains what is held, so connected devices still get their acks; (2) every
 * WebSocket closes with 1001; (3) the session-close events those closes
 * made are committed; then the link goes. Each wait is bounded. */
static void shutdown_step(gw_t *gw, int64_t now)
{
    if (!gw->link || gw->link_freed) {
        maybe_done(gw);
        return;
    }
    bool drained = gw_link_held(gw->link) == 0 || !gw_link_up(gw->link);
    switch (gw->stop_phase) {
    case 0:
        if (!drained && now < gw->stop_deadline)
            return;
        if (!drained)
            ems_log_warn("shutdown: %zu records/events not committed in time; the edges will "
                         "resend",
                         gw_link_held(gw->link));
        gw_device_release_acks(gw);
        gw_device_close_all(gw, 1001, "gateway shutting down");
        gw_dash_close_all(gw, 1001, "gateway shutting down");
        gw->stop_phase = 1;
        return;
    case 1:
        if (gw->ndevconns || gw->ndashes)
            return; /* the WebSocket close timeout bounds this */
        gw_link_flush(gw->link);
        gw->stop_deadline = now + 2000;
        gw->stop_phase = 2;
        return;
    default:
        if (!drained && now < gw->stop_deadline)
            return;
        if (!drained)
            ems_log_warn("shutdown: %zu events not committed", gw_link_held(gw->link));
        gw_link_t *l = gw->link;
        gw->link = NULL;
        gw_link_free(l, on_link_freed, gw);
        return;
    }
}

void gw_stop(gw_t *gw)
{
    if (gw->stopping)
        return;
    gw->stopping = true;
    gw->stop_deadline = ems_time_mono_ms() + SHUTDOWN_DRAIN_MS;
    gw_device_release_acks(gw);
    ems_log_info("shutting down: no new connections; waiting for the DB writer to commit");
    if (gw->server)
        ems_server_stop(gw->server, on_server_stopped, gw);
    else
        gw->server_stopped = true;
    if (gw->link)
        gw_link_flush(gw->link);
    uv_timer_start(&gw->tick, tick_cb, 50, 50);
}

/* ------------------------------------------------------------ tick, signals */

static void tick_cb(uv_timer_t *t)
{
    gw_t *gw = t->data;
    int64_t mono = ems_time_mono_ms();
    if (gw->cmds)
        gw_cmds_tick(gw->cmds, ems_time_now_ms());
    if (gw->bus)
        gw_bus_tick(gw, mono);
    if (gw->stopping) {
        shutdown_step(gw, mono);
        return;
    }
    gw_device_recheck(gw, mono);
    dbw_stats_poll(gw, mono);
    srv_metrics_update(gw);
    gw_api_tick(gw, mono);
    alarms_offline_sweep(gw, mono);
}

/* How long a TLS session may be resumed with its ticket (and the period
 * of the ticket keys). A device that reconnects within a day, e.g. after
 * this gateway restarts or moves it to another gateway, skips the
 * certificate signature and key exchange of a full handshake. */
#define GW_TLS_TICKET_LIFETIME_S 86400u

/* The server TLS configuration from the certificate files, with session
 * tickets sealed under keys derived from the session key: every gateway
 * sharing session_key_file takes the others' tickets, and a restarted one
 * its own. */
static int tls_config_load(gw_t *gw, ems_tls_config_t **out)
{
    int rc = ems_tls_server_config_new(gw->cfg.tls_cert, gw->cfg.tls_key, out);
    if (rc < 0)
        return rc;
    rc = ems_tls_config_set_tickets(*out, gw->skey.key, gw->skey.key_len, GW_TLS_TICKET_LIFETIME_S);
    if (rc < 0) {
        ems_tls_config_unref(*out);
        *out = NULL;
    }
    return rc;
}

static void reload_tls(gw_t *gw)
{
    if (!gw->cfg.tls || !gw->server)
        return;
    ems_tls_config_t *n = NULL;
    int rc = tls_config_load(gw, &n);
    if (rc < 0) {
        ems_log_error("SIGHUP: TLS reload failed (%s); keeping the old certificate",
                      ems_strerror(rc));
        return;
    }
    rc = ems_server_set_tls(gw->server, n);
    if (rc == 0) {
        /* Handshakes under the old configuration still count (open
         * connections keep it, but their handshakes are done). */
        ems_tls_stats_t ts;
        ems_tls_config_stats(gw->tls, &ts);
        gw->tls_before.full += ts.full;
        gw->tls_before.resumed += ts.resumed;
        ems_tls_config_unref(gw->tls);
        gw->tls = n;
        ems_log_info("SIGHUP: TLS certificate and key reloaded from %s; open connections keep "
                     "theirs",
                     gw->cfg.tls_cert);
    } else {
        ems_tls_config_unref(n);
        ems_log_error("SIGHUP: cannot install the new TLS configuration: %s", ems_strerror(rc));
    }
}

static void signal_cb(uv_signal_t *s, int signum)
{
    gw_t *gw = s->data;
    if (signum == SIGHUP)
        reload_tls(gw);
    else
        gw_stop(gw);
}

/* ------------------------------------------------------------ start */

static int parse_listen(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':')
            return EMS_ECONFIG;
        h = s + 1;
        hlen = (size_t)(e - h);
        colon = e + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return EMS_ECONFIG;
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= cap)
        return EMS_ECONFIG;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 0 || p > 65535)
        return EMS_ECONFIG;
    *port = (uint16_t)p;
    return 0;
}

static int write_port_file(const char *path, uint16_t port)
{
    char tmp[GW_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0)
        return EMS_EIO;
    return rename(tmp, path) == 0 ? 0 : -errno;
}

int gw_start(gw_t *gw, uv_loop_t *loop, const gw_config_t *cfg)
{
    memset(gw, 0, sizeof *gw);
    gw->loop = loop;
    gw->cfg = *cfg;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(gw->instance, sizeof gw->instance, "%s:%d", host, (int)getpid());
    gw_hub_init(&gw->hub);

    int rc;
    if (cfg->session_key_file[0]) {
        rc = gw_session_key_load(&gw->skey, cfg->session_key_file);
        if (rc < 0) {
            ems_log_error("session_key_file %s: %s (at least 32 bytes, raw or hex)",
                          cfg->session_key_file, ems_strerror(rc));
            return rc;
        }
    } else {
        gw_session_key_random(&gw->skey);
        ems_log_warn("no session_key_file: sessions use a random key and end with this process "
                     "(and are not valid on other gateways)");
    }

    if (cfg->tls) {
        rc = tls_config_load(gw, &gw->tls);
        if (rc < 0) {
            ems_log_error("TLS: cannot load %s / %s: %s", cfg->tls_cert, cfg->tls_key,
                          ems_strerror(rc));
            return rc;
        }
    }

    gw->metrics = ems_metrics_new();
    if (!gw->metrics) {
        ems_tls_config_unref(gw->tls);
        return EMS_ENOMEM;
    }
    metrics_init(gw);

    gw_cmds_cfg_t ccfg = {.answer_ms = cfg->command_timeout_s * 1000,
                          .complete_ms = cfg->command_complete_s * 1000,
                          .retain = 10000};
    gw->cmds = gw_cmds_new(&ccfg, &cmd_ops, gw);
    if (!gw->cmds) {
        ems_metrics_free(gw->metrics);
        ems_tls_config_unref(gw->tls);
        return EMS_ENOMEM;
    }

    ems_server_options_t so;
    memset(&so, 0, sizeof so);
    uint16_t port;
    rc = parse_listen(cfg->listen, host, sizeof host, &port);
    if (rc < 0) {
        ems_log_error("listen: '%s' is not HOST:PORT or [V6]:PORT", cfg->listen);
        goto fail;
    }
    so.host = host;
    so.port = port;
    so.tls = gw->tls;
    so.reuseport = cfg->reuseport;
    /* A little room above the limit so that one more client still gets a
     * clear 429 instead of a silent close. */
    so.max_connections = (unsigned)cfg->max_connections + 16;
    so.handshake_timeout_ms = (unsigned)cfg->handshake_timeout_ms;
    /* The largest answer the API builds is a raw history of up to 5,000
     * points (about 1.9 MB of JSON; docs/api.md): the default 1 MiB output
     * cap per HTTP connection would abort it. Memory is only taken while an
     * answer is being written. */
    so.max_out = 16u << 20;
    /* A client that pipelines requests without reading its answers is not
     * read further once about one answer waits (server.h); the budget
     * bounds all answers queued at once. */
    so.out_budget = (size_t)cfg->http_output_budget;
    so.max_per_addr = (unsigned)cfg->max_unauth_per_addr;
    so.reserve = (unsigned)(cfg->max_connections * cfg->connection_reserve_pct / 100);
    so.handshake_cpu_pct = (unsigned)cfg->handshake_cpu_pct;
    so.handshake_burst_ms = (unsigned)cfg->handshake_burst_ms;
    so.handshake_admit_ms = (unsigned)cfg->handshake_admit_ms;
    so.headers = gw_static_security_headers(gw->tls != NULL);
    ems_http_limits_default(&so.limits);
    so.limits.max_body = (size_t)cfg->http_max_body;
    rc = ems_server_start(loop, &so, on_request, gw, &gw->server);
    if (rc < 0) {
        ems_log_error("cannot listen on %s: %s", cfg->listen, ems_strerror(rc));
        goto fail;
    }
    if (cfg->port_file[0])
        write_port_file(cfg->port_file, ems_server_port(gw->server));

    char hello[256];
    snprintf(hello, sizeof hello, "{\"name\":\"ems-gateway\",\"instance\":\"%s\"}", gw->instance);
    gw_link_opts_t lo = {.path = cfg->dbwriter_socket,
                         .ring = (size_t)cfg->link_ring,
                         .batch = (unsigned)cfg->link_batch,
                         .flush_ms = (unsigned)cfg->link_flush_ms,
                         .user_inflight = (unsigned)cfg->query_inflight,
                         .per_user = (unsigned)cfg->query_per_user,
                         .user_queue = (unsigned)cfg->query_queue,
                         .lookup_batch = (unsigned)cfg->auth_batch,
                         .lookup_queue = (unsigned)cfg->auth_queue,
                         .lookup_wait_ms = (unsigned)cfg->auth_wait_ms,
                         .hello_info = hello};
    rc = gw_link_new(loop, &lo, &link_cbs, gw, &gw->link);
    if (rc < 0) {
        ems_log_error("dbwriter link: %s", ems_strerror(rc));
        ems_server_stop(gw->server, NULL, NULL);
        gw->server = NULL;
        goto fail;
    }

    uv_timer_init(loop, &gw->tick);
    uv_timer_init(loop, &gw->ack_timer); /* started while acks wait (gw_device.c) */
    uv_signal_init(loop, &gw->sig_term);
    uv_signal_init(loop, &gw->sig_int);
    uv_signal_init(loop, &gw->sig_hup);
    gw->tick.data = gw->ack_timer.data = gw->sig_term.data = gw->sig_int.data = gw->sig_hup.data = gw;
    gw->open_handles = 5;
    uv_timer_start(&gw->tick, tick_cb, 1000, 1000);
    uv_signal_start(&gw->sig_term, signal_cb, SIGTERM);
    uv_signal_start(&gw->sig_int, signal_cb, SIGINT);
    uv_signal_start(&gw->sig_hup, signal_cb, SIGHUP);

    gw->log_alarm.what = "alarm change not queued";
    gw->log_alarm.interval_ms = 10000;
    gw_alarm_cfg_default(&gw->alarm_cfg);
    gw->alarm_cfg.debounce_ms = cfg->alarm_debounce_s * 1000;
    gw->alarm_cfg.soc_low = (double)cfg->alarm_soc_low;
    gw->alarm_cfg.soc_hyst = (double)cfg->alarm_soc_hysteresis;
    gw->alarm_cfg.offline_ms = cfg->alarm_offline_s * 1000;
    gw_webhooks_opts_t wo = {.urls = cfg->alarm_webhooks,
                             .secret_file = cfg->alarm_webhook_secret_file,
                             .ca_file = cfg->alarm_webhook_ca_file,
                             .owner = gw->instance,
                             .retries = (unsigned)cfg->alarm_webhook_retries,
                             .backoff_ms = (uint64_t)cfg->alarm_webhook_backoff_ms,
                             .backoff_max_ms = (uint64_t)cfg->alarm_webhook_backoff_max_ms,
                             .timeout_ms = (unsigned)cfg->alarm_webhook_timeout_ms,
                             .lease_s = (unsigned)cfg->alarm_webhook_lease_s,
                             .link = &gw->link,
                             .delivered = gw->m.webhook[0],
                             .failed = gw->m.webhook[1],
                             .dead = gw->m.webhook[2]};
    if (gw_webhooks_new(loop, &wo, &gw->webhooks) < 0)
        ems_log_error("alarm webhooks not started (see above); alarms are still stored");

    /* Last: the bus's handlers may ask for anything set up above. A bad
     * URL was refused by gw_config_check; a server not there yet is tried
     * again in the background. */
    if (gw_bus_start(gw) < 0)
        ems_log_error("message bus not started; this gateway runs alone");

    ems_log_info("listening on %s port %u (%s); dbwriter at %s; dashboard files from %s", host,
                 ems_server_port(gw->server), cfg->tls ? "TLS" : "plain, behind a TLS proxy",
                 cfg->dbwriter_socket, cfg->static_dir);
    return 0;

fail:
    gw_cmds_free(gw->cmds);
    gw->cmds = NULL;
    ems_metrics_free(gw->metrics);
    gw->metrics = NULL;
    ems_tls_config_unref(gw->tls);
    gw->tls = NULL;
    return rc;
}

void gw_free(gw_t *gw)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&gw->devs, &i, &k, &v);) {
        gw_dev_t *d = v;
        free(d->info_json);
        gw_ranges_free(&d->acks);
        free(d);
    }
    gw_map_free(&gw->devs);
    gw_bus_free(gw);
    gw_api_free(gw);
    gw_hub_free(&gw->hub);
    gw_cmds_free(gw->cmds);
    gw->cmds = NULL;
    ems_metrics_free(gw->metrics);
    gw->metrics = NULL;
    ems_tls_config_unref(gw->tls);
    gw->tls = NULL;
}
