/* gw_api_commands.c: commands (docs/api.md): POST /api/devices/{id}/commands,
 * GET of one command and of a device's list, and the command tracker's
 * callbacks (delivery to the device here or through the bus, and every
 * status change as an audit event and to the dashboards).
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
    ems_metric_inc(gw->m.cmd_status[c->status]);
    char rec[GW_CMD_JSON_MAX], out[GW_CMD_JSON_MAX + 32];
    /* Audit trail: the command once, then each status change. */
    int n = gw_cmd_event_json(c, out, sizeof out);
    if (n > 0)
        gw_event(gw, out, (size_t)n);
    /* Dashboards watching the device see the change at once. */
    n = gw_cmd_to_json(c, rec, sizeof rec);
    if (n > 0) {
        ems_jw_t w;
        ems_jw_init(&w, out, sizeof out);
        ems_jw_obj_open(&w);
        ems_jw_key(&w, "type");
        ems_jw_str(&w, "command");
        ems_jw_key(&w, "command");
        ems_jw_raw(&w, rec, (size_t)n);
        ems_jw_obj_close(&w);
        if ((n = ems_jw_finish(&w)) > 0)
            gw_dash_publish_shared(gw, c->device_id, out, (size_t)n);
    }
}

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
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
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
            gw_api_reply(c->req, 200, json_incref(json_array_get(out, 0)), NULL);
        json_decref(out);
    } else {
        gw_api_reply(c->req, 200, json_pack("{so}", "commands", out), NULL);
    }
    gw_api_ctx_free(c);
}

void gw_api_command_get(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    gw_cmd_t *mem = gw_cmds_find(gw->cmds, r->id1);
    if (mem) {
        gw_api_reply(req, 200, cmd_record(mem), NULL);
        return;
    }
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (c)
        gw_api_ask(c, json_pack("{sssssi}", "op", "commands", "command_id", r->id1, "limit", 1),
                   commands_result);
}

void gw_api_commands_list(gw_t *gw, ems_server_req_t *req, const gw_route_t *r)
{
    int limit;
    if (gw_api_query_limit(req, 50, 500, &limit) < 0) {
        gw_reply_error(req, 400, "limit: expected an integer 1..500", "limit");
        return;
    }
    gw_api_ctx_t *c = gw_api_ctx_new(gw, req, r);
    if (c)
        gw_api_ask(c, json_pack("{sssssi}", "op", "commands", "device_id", r->id1, "limit", limit),
                   commands_result);
}

static void command_reply(gw_api_ctx_t *c, int status, const char *error, const gw_cmd_t *cmd)
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
    gw_api_reply(c->req, status, o, loc);
}

/* A POST of a command: the request context and the body, validated once
 * (ems_command_request_from_json) before the device is looked up. */
typedef struct {
    gw_api_ctx_t c; /* first: freed as a gw_api_ctx_t */
    ems_command_t cmd;
    int64_t ttl_s;
} cmd_post_t;

/* The device exists (and is not revoked): create the command. */
static void command_submit(cmd_post_t *p)
{
    gw_api_ctx_t *c = &p->c;
    gw_t *gw = c->gw;
    gw_cmd_req_t q;
    memset(&q, 0, sizeof q);
    q.cmd = p->cmd;
    gw_dev_t *d = gw_dev_get(gw, c->route.id1, false);
    q.device_id = c->route.id1;
    q.created_by = c->sess.user;
    q.ttl_s = p->ttl_s;
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
                     q.device_id, rp ? " (last seen on gateway " : "", rp ? rp->gateway : "");
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
    gw_api_ctx_t *c = ud;
    json_t *o = gw_api_result(c, status, json, len);
    if (!o) {
        gw_api_ctx_free(c);
        return;
    }
    if (!json_is_true(json_object_get(o, "found")))
        gw_reply_error(c->req, 404, "unknown device", NULL);
    else if (json_is_true(json_object_get(o, "revoked")))
        gw_reply_error(c->req, 409, "device is revoked", NULL);
    else
        command_submit((cmd_post_t *)c);
    json_decref(o);
    gw_api_ctx_free(c);
}

void gw_api_command_post(gw_t *gw, ems_server_req_t *req, const gw_route_t *r,
                         const gw_session_t *s)
{
    if (s->role < EMS_AUTH_ROLE_OPERATOR) {
        ems_log_warn("user %s (%s) may not send commands", s->user, ems_auth_role_name(s->role));
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
    int64_t ttl = 0;
    ems_command_t cmd;
    int rc = ems_jr_integer(b, "", "ttl_s", false, 1, 86400, &ttl, &err);
    if (rc >= 0)
        rc = ems_command_request_from_json(b, &cmd, &err);
    json_decref(b);
    if (rc < 0) {
        gw_reply_error(req, 400, err.reason, err.path);
        return;
    }
    cmd_post_t *p = (cmd_post_t *)gw_api_ctx_alloc(gw, req, r, sizeof *p);
    if (!p)
        return;
    p->c.sess = *s;
    p->cmd = cmd;
    p->ttl_s = ttl;
    gw_dev_t *d = gw_dev_get(gw, r->id1, false);
    if (d && d->auth_ok && !d->auth_revoked) {
        command_submit(p);
        gw_api_ctx_free(&p->c);
        return;
    }
    gw_api_ask(&p->c, json_pack("{ssss}", "op", "device_auth", "device_id", r->id1),
               command_device_result);
}
