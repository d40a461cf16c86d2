/* gw_api_devices.c: GET /api/devices, /api/devices/{id}, its telemetry
 * history (JSON or CSV), energy per day or month (one device or the
 * fleet), and its connection sessions (docs/api.md). The DB writer
 * answers what is stored; the gateway adds who is online and the newest
 * live packet.
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

/* ------------------------------------------------------------ devices */

/* The gateway's live view of one device merged into `o`. */
static void add_live(gw_t *gw, json_t *o, const char *id)
{
    gw_dev_t *d = gw_dev_get(gw, id, false);
    const gw_bus_presence_t *rp = d && d->conn ? NULL : gw_bus_remote(gw->bus, id);
    if (rp && rp->online) {
        /* Connected to another gateway (gw_bus.h). */
        json_object_set_new(o, "online", json_true());
        json_object_set_new(o, "connected_since", gw_api_time(rp->since_ms));
        json_object_set_new(o, "gateway", json_string(rp->gateway));
    } else {
        json_object_set_new(o, "online", json_boolean(d && d->conn));
        json_object_set_new(o, "connected_since",
                            d && d->conn ? gw_api_time(d->connected_ms) : json_null());
        if (gw->bus)
            json_object_set_new(o, "gateway",
                                d && d->conn ? json_string(gw_bus_id(gw->bus))
                                : rp         ? json_string(rp->gateway)
                                             : json_null());
    }
    json_object_set_new(o, "last_seen", d ? gw_api_time(d->last_seen_ms) : json_null());
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
        json_object_set_new(o, "telemetry",
                            n > 0 ? json_loadb(pkt, (size_t)n, 0, &je) : json_null());
    } else if (!json_object_get(o, "telemetry")) {
        json_object_set_new(o, "telemetry", json_null());
    }
}

/* Fills "telemetry" of devices the gateway has no live packet for from the
 * DB writer's `latest` rows, then answers. */
static void devices_latest_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
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
            if (rid && id && strcmp(rid, id) == 0 &&
                json_is_null(json_object_get(dev, "telemetry"))) {
                json_t *pkt = json_deep_copy(row);
                json_object_del(pkt, "received_at");
                json_object_set_new(dev, "telemetry", pkt);
            }
        }
    }
    json_decref(o);
    if (c->route.id == GW_R_DEVICE) {
        gw_api_reply(c->req, 200, json_incref(json_array_get(list, 0)), NULL);
    } else {
        gw_api_reply(c->req, 200, json_incref(c->acc), NULL);
    }
    gw_api_ctx_free(c);
}

static void devices_finish(gw_api_ctx_t *c)
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
    gw_api_ask(c, json_pack("{ssso}", "op", "latest", "device_ids", need), devices_latest_result);
}

static void devices_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
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

static void device_auth_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
        return;
    }
    if (!json_is_true(json_object_get(o, "found"))) {
        json_decref(o);
        gw_reply_error(c->req, 404, "unknown device", NULL);
        gw_api_ctx_free(c);
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

/* ?format=json|csv of the history and energy answers: *csv, or < 0 after
 * answering 400. */
static int want_csv(ems_server_req_t *req, const char *q, size_t ql, bool *csv)
{
    char v[16];
    *csv = false;
    int rc = gw_query_get(q, ql, "format", v, sizeof v);
    if (rc == EMS_ENOENT)
        return 0; /* absent: JSON */
    if (rc >= 0 && strcmp(v, "csv") == 0)
        *csv = true;
    else if (rc < 0 || strcmp(v, "json") != 0) {
        gw_reply_error(req, 400, "format: expected json or csv", "format");
        return -1;
    }
    return 0;
}

/* Answers 200 with the CSV in `b` (freed) as a download NAME+SUFFIX.csv. */
static void reply_csv(gw_api_ctx_t *c, ems_buf_t *b, const char *name, const char *suffix)
{
    char hdr[200];
    snprintf(hdr, sizeof hdr,
             "Cache-Control: no-store\r\nContent-Disposition: attachment; "
             "filename=\"%s%s.csv\"\r\n",
             name, suffix);
    ems_server_respond(c->req, 200, "text/csv; charset=utf-8", hdr, ems_buf_data(b),
                       ems_buf_len(b));
    ems_buf_free(b);
}

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
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
        return;
    }
    json_t *series = json_object_get(o, "series");
    json_t *ts = json_object_get(series, "ts");
    size_t n = json_array_size(ts);
    bool raw = c->bucket == 0;
    const col_t *cols = raw ? raw_cols : bucket_cols;
    size_t ncols =
        raw ? sizeof raw_cols / sizeof raw_cols[0] : sizeof bucket_cols / sizeof bucket_cols[0];
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
        reply_csv(c, &b, c->route.id1, "");
        json_decref(o);
        gw_api_ctx_free(c);
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
                json_object_set_new(p, "t", gw_api_time((int64_t)json_number_value(v)));
            else
                json_object_set(p, cols[k].out, v ? v : json_null());
        }
        json_array_append_new(points, p);
    }
    json_t *ans = json_pack("{sssososssisbso}", "device_id", c->route.id1, "from",
                            gw_api_time(c->from), "to", gw_api_time(c->to), "resolution",
                            raw                  ? "raw"
                            : c->bucket == 60    ? "1m"
                            : c->bucket == 3600  ? "1h"
                            : c->bucket == 86400 ? "1d"
                                                 : "bucket",
                            "bucket_seconds", c->bucket, "truncated",
                            json_is_true(json_object_get(o, "truncated")), "points", points);
    json_decref(o);
    gw_api_reply(c->req, 200, ans, NULL);
    gw_api_ctx_free(c);
}

void gw_api_history(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
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
    bool csv;
    if (want_csv(req, q, ql, &csv) < 0)
        return;
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
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
    gw_api_ask(c, qj, history_result);
}

/* ------------------------------------------------------------ energy */

/* Columns of an energy bucket, in CSV order (docs/energy.md). "devices"
 * only for the fleet total. */
static const char *const energy_cols[] = {
    "local",
    "start",
    "end",
    "length_s",
    "samples",
    "covered_s",
    "devices",
    "battery_charged_wh",
    "battery_discharged_wh",
    "grid_import_wh",
    "grid_export_wh",
};

static void energy_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
        return;
    }
    bool fleet = c->route.id == GW_R_ENERGY;
    json_t *buckets = json_object_get(o, "buckets"), *bk;
    size_t i;
    if (!fleet)
        json_array_foreach(buckets, i, bk) json_object_del(bk, "devices");
    if (!c->csv) {
        gw_api_reply(c->req, 200, o, NULL);
        gw_api_ctx_free(c);
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
    reply_csv(c, &b, fleet ? "fleet" : c->route.id1, "-energy");
    json_decref(o);
    gw_api_ctx_free(c);
}

/* GET /api/devices/{id}/energy and GET /api/energy (the fleet):
 * ?from=&to= as RFC 3339 times or local dates (YYYY-MM-DD, YYYY-MM),
 * &bucket=day|month, &format=json|csv. The DB writer checks the range and
 * the dates; the days are those of energy_time_zone. */
void gw_api_energy(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    const char *q = m->query ? m->query : "";
    size_t ql = strlen(q);
    char bucket[16] = "day", from[64], to[64];
    int rc = gw_query_get(q, ql, "bucket", bucket, sizeof bucket);
    if ((rc < 0 && rc != EMS_ENOENT) ||
        (strcmp(bucket, "day") != 0 && strcmp(bucket, "month") != 0)) {
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
    bool csv;
    if (want_csv(req, q, ql, &csv) < 0)
        return;
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (!c)
        return;
    c->csv = csv;
    json_t *qj = json_pack("{ssssssssss}", "op", "energy", "from", from, "to", to, "bucket", bucket,
                           "time_zone", gw->cfg.energy_time_zone);
    if (r->id == GW_R_DEVICE_ENERGY)
        json_object_set_new(qj, "device_id", json_string(r->id1));
    gw_api_ask(c, qj, energy_result);
}

static void sessions_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (o) {
        json_t *s = json_object_get(o, "sessions");
        gw_api_reply(c->req, 200, json_pack("{sO}", "sessions", s ? s : json_array()), NULL);
        json_decref(o);
    }
    gw_api_ctx_free(c);
}

void gw_api_sessions(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    int limit;
    if (gw_api_query_limit(req, 50, 1000, &limit) < 0) {
        gw_reply_error(req, 400, "limit: expected an integer 1..1000", "limit");
        return;
    }
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (c)
        gw_api_ask(c, json_pack("{sssssi}", "op", "sessions", "device_id", r->id1, "limit", limit),
                   sessions_result);
}

void gw_api_devices(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (c)
        gw_api_ask(c, json_pack("{ss}", "op", "devices"), devices_result);
}

void gw_api_device(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (c)
        gw_api_ask(c, json_pack("{ssss}", "op", "device_auth", "device_id", r->id1),
                   device_auth_result);
}
