/* gw_api_alarms.c: GET /api/alarms, /api/devices/{id}/alarms and
 * POST /api/alarms/{id}/ack (docs/alarms.md).
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

/* ------------------------------------------------------------ alarms */

/* GET /api/alarms and /api/devices/{id}/alarms (docs/api.md, "Alarms"). */
static void alarms_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (o) {
        json_t *a = json_object_get(o, "alarms");
        gw_api_reply(c->req, 200, json_pack("{sO}", "alarms", a ? a : json_array()), NULL);
        json_decref(o);
    }
    gw_api_ctx_free(c);
}

void gw_api_alarms_list(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    const char *qs = m->query ? m->query : "";
    char state[16], dev[EMS_DEVICE_ID_MAX + 2];
    int limit;
    if (gw_api_query_limit(req, 100, 1000, &limit) < 0) {
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
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (c)
        gw_api_ask(c, q, alarms_result);
    else
        json_decref(q);
}

/* POST /api/alarms/{id}/ack: the alarm as the database has it decides
 * (404 unknown; already acknowledged: answered as it is, so a second click
 * changes nothing); otherwise a durable alarm_ack event, and the answer is
 * the alarm as it will be stored. */
static void alarm_ack_result(void *ud, int status, const char *json, size_t len)
{
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
        return;
    }
    json_t *a = json_array_get(json_object_get(o, "alarms"), 0);
    if (!json_is_object(a)) {
        gw_reply_error(c->req, 404, "unknown alarm", NULL);
    } else if (!json_is_null(json_object_get(a, "acked_at")) && json_object_get(a, "acked_at")) {
        gw_api_reply(c->req, 200, json_incref(a), NULL);
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
            gw_api_reply(c->req, 200, json_incref(a), NULL);
        }
    }
    json_decref(o);
    gw_api_ctx_free(c);
}

void gw_api_alarm_ack(gw_t *gw, ems_server_req_t *req, const gw_route_t *r, const gw_session_t *s)
{
    if (s->role < EMS_AUTH_ROLE_OPERATOR) {
        ems_log_warn("user %s (%s) may not acknowledge alarms", s->user,
                     ems_auth_role_name(s->role));
        gw_reply_error(req, 403, "acknowledging alarms needs the operator role", NULL);
        return;
    }
    const ems_http_msg_t *m = ems_server_req_msg(req);
    ems_verr_t err;
    json_t *b =
        ems_jr_parse(m->body && m->body_len ? m->body : "{}", m->body_len ? m->body_len : 2, &err);
    if (!b || ems_jr_require_object(b, &err) < 0) {
        json_decref(b);
        gw_reply_error(req, 400, err.reason, err.path);
        return;
    }
    json_decref(b);
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (!c)
        return;
    c->sess = *s;
    gw_api_ask(c,
               json_pack("{sssIsi}", "op", "alarms", "alarm_id",
                         (json_int_t)strtoll(r->id1, NULL, 10), "limit", 1),
               alarm_ack_result);
}
