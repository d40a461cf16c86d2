/* gw_cmd.c: the command tracker (see gw_cmd.h). */
#include "gw_cmd.h"

#include "auth.h"
#include "error.h"
#include "jsonw.h"
#include "log.h"
#include "timefmt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[GW_CMD_STATUS_COUNT] = {
    "queued", "sent", "accepted", "rejected", "completed", "failed", "timed_out", "expired"};

const char *gw_cmd_status_name(gw_cmd_status_t s)
{
    return (unsigned)s < GW_CMD_STATUS_COUNT ? status_names[s] : "unknown";
}

bool gw_cmd_status_final(gw_cmd_status_t s)
{
    return s == GW_CMD_REJECTED || s == GW_CMD_COMPLETED || s == GW_CMD_FAILED ||
           s == GW_CMD_TIMED_OUT || s == GW_CMD_EXPIRED;
}

typedef struct {
    gw_cmd_t *head, *tail;
    size_t len;
} list_t;

struct gw_cmds {
    gw_cmds_cfg_t cfg;
    const gw_cmds_ops_t *ops;
    void *ud;
    gw_map_t by_id;
    list_t active;   /* in creation order */
    list_t finished; /* oldest first, for eviction */
    size_t counts[GW_CMD_STATUS_COUNT];
};

static void list_push(list_t *l, gw_cmd_t *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->len++;
}

static void list_remove(list_t *l, gw_cmd_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    l->len--;
}

gw_cmds_t *gw_cmds_new(const gw_cmds_cfg_t *cfg, const gw_cmds_ops_t *ops, void *ud)
{
    gw_cmds_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cfg = *cfg;
    t->ops = ops;
    t->ud = ud;
    return t;
}

static void free_list(list_t *l)
{
    for (gw_cmd_t *c = l->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
}

void gw_cmds_free(gw_cmds_t *t)
{
    if (!t)
        return;
    free_list(&t->active);
    free_list(&t->finished);
    gw_map_free(&t->by_id);
    free(t);
}

int gw_cmd_new_id(int64_t now_ms, char *out, size_t cap)
{
    unsigned char rnd[6];
    if (ems_auth_random(rnd, sizeof rnd))
        return EMS_EIO;
    char hex[13];
    ems_auth_hex(rnd, sizeof rnd, hex);
    /* The time first, so ids sort roughly by creation. */
    int n = snprintf(out, cap, "c_%011" PRIx64 "%s", (uint64_t)now_ms, hex);
    return n < 0 || (size_t)n >= cap ? EMS_ENOSPC : 0;
}

/* Sets the status, records it in the history and tells the owner. */
static void set_status(gw_cmds_t *t, gw_cmd_t *c, gw_cmd_status_t s, int64_t now_ms)
{
    t->counts[c->status]--;
    c->status = s;
    t->counts[s]++;
    c->updated_ms = now_ms;
    unsigned i = c->nhist < GW_CMD_HIST_MAX ? c->nhist++ : GW_CMD_HIST_MAX - 1;
    c->hist[i].status = s;
    c->hist[i].at_ms = now_ms;
    if (gw_cmd_status_final(s)) {
        c->deadline_ms = 0;
        list_remove(&t->active, c);
        list_push(&t->finished, c);
    }
    ems_log_info("command %s for %s: %s%s%s", c->cmd.command_id, c->device_id,
                 gw_cmd_status_name(s), c->reason[0] ? " " : "", c->reason);
    if (t->ops->changed)
        t->ops->changed(t->ud, c);
    /* Evict after telling the owner, never the record just changed. */
    while (t->finished.len > t->cfg.retain && t->finished.head != c) {
        gw_cmd_t *old = t->finished.head;
        list_remove(&t->finished, old);
        gw_map_del(&t->by_id, old->cmd.command_id);
        t->counts[old->status]--;
        free(old);
    }
}

static void fail(gw_cmds_t *t, gw_cmd_t *c, gw_cmd_status_t s, const char *msg, int64_t now_ms)
{
    snprintf(c->message, sizeof c->message, "%s", msg);
    set_status(t, c, s, now_ms);
}

/* Tries to send; on success the command is `sent` with an answer deadline. */
static int deliver(gw_cmds_t *t, gw_cmd_t *c, int64_t now_ms)
{
    if (!t->ops->deliver || t->ops->deliver(t->ud, c) != 0)
        return EMS_EAGAIN;
    c->deadline_ms = now_ms + t->cfg.answer_ms;
    if (c->status != GW_CMD_SENT)
        set_status(t, c, GW_CMD_SENT, now_ms);
    return 0;
}

static bool same_body(const gw_cmd_t *c, const gw_cmd_req_t *r)
{
    ems_command_t a = c->cmd, b = r->cmd;
    /* The stored command may carry the TTL's expires_at; the request never
     * does. Compare what the caller asked for. */
    a.has_expires_at = b.has_expires_at = false;
    a.expires_at_ms = b.expires_at_ms = 0;
    memcpy(b.command_id, a.command_id, sizeof a.command_id);
    return strcmp(c->device_id, r->device_id) == 0 && ems_command_equal(&a, &b);
}

int gw_cmds_submit(gw_cmds_t *t, const gw_cmd_req_t *req, int64_t now_ms, gw_cmd_t **out)
{
    if (req->cmd.command_id[0]) {
        gw_cmd_t *old = gw_map_get(&t->by_id, req->cmd.command_id);
        if (old) {
            *out = old;
            return same_body(old, req) ? 1 : EMS_EEXIST;
        }
    }
    gw_cmd_t *c = calloc(1, sizeof *c);
    if (!c)
        return EMS_ENOMEM;
    c->cmd = req->cmd;
    if (!c->cmd.command_id[0] &&
        gw_cmd_new_id(now_ms, c->cmd.command_id, sizeof c->cmd.command_id) != 0) {
        free(c);
        return EMS_EIO;
    }
    snprintf(c->device_id, sizeof c->device_id, "%s", req->device_id);
    snprintf(c->created_by, sizeof c->created_by, "%s", req->created_by ? req->created_by : "");
    c->created_ms = c->updated_ms = now_ms;
    c->cmd.has_expires_at = false;
    if (req->ttl_s > 0) {
        c->expires_ms = now_ms + req->ttl_s * 1000;
        /* The edge refuses it with EXPIRED if it arrives too late. */
        c->cmd.has_expires_at = true;
        c->cmd.expires_at_ms = c->expires_ms;
    }
    if (gw_map_put(&t->by_id, c->cmd.command_id, c) != 0) {
        free(c);
        return EMS_ENOMEM;
    }
    c->status = GW_CMD_QUEUED;
    t->counts[GW_CMD_QUEUED]++;
    list_push(&t->active, c);
    *out = c;

    if (req->online && deliver(t, c, now_ms) == 0)
        return 0;
    if (req->ttl_s > 0) {
        c->nhist = 1;
        c->hist[0].status = GW_CMD_QUEUED;
        c->hist[0].at_ms = now_ms;
        ems_log_info("command %s for %s: queued for %" PRId64 " s", c->cmd.command_id, c->device_id,
                     req->ttl_s);
        if (t->ops->changed)
            t->ops->changed(t->ud, c);
        return 0;
    }
    char msg[256];
    if (req->offline_msg)
        snprintf(msg, sizeof msg, "%s", req->offline_msg);
    else
        snprintf(msg, sizeof msg,
                 req->online ? "device %s is not reading (send queue full)"
                             : "device %s is offline",
                 c->device_id);
    fail(t, c, GW_CMD_FAILED, msg, now_ms);
    return 0;
}

void gw_cmds_online(gw_cmds_t *t, const char *device_id, int64_t now_ms)
{
    for (gw_cmd_t *c = t->active.head, *n; c; c = n) {
        n = c->next;
        if (strcmp(c->device_id, device_id) != 0)
            continue;
        if (c->status == GW_CMD_QUEUED) {
            if (c->expires_ms && now_ms >= c->expires_ms)
                fail(t, c, GW_CMD_EXPIRED, "time to live passed while queued", now_ms);
            else
                deliver(t, c, now_ms);
        } else if (c->status == GW_CMD_SENT) {
            /* Delivered before the link broke: maybe lost. The edge answers a
             * repeat with its earlier result, so sending again is safe. */
            if (t->ops->deliver)
                t->ops->deliver(t->ud, c);
        }
    }
}

void gw_cmds_reask(gw_cmds_t *t, const char *device_id)
{
    if (!t->ops->deliver)
        return;
    for (gw_cmd_t *c = t->active.head; c; c = c->next)
        if (c->status == GW_CMD_ACCEPTED && strcmp(c->device_id, device_id) == 0)
            t->ops->deliver(t->ud, c);
}

int gw_cmds_adopt(gw_cmds_t *t, const ems_command_t *cmd, const char *device_id,
                  gw_cmd_status_t status, int64_t now_ms)
{
    if (status != GW_CMD_SENT && status != GW_CMD_ACCEPTED)
        return EMS_EINVAL;
    if (gw_map_get(&t->by_id, cmd->command_id))
        return EMS_EEXIST;
    gw_cmd_t *c = calloc(1, sizeof *c);
    if (!c)
        return EMS_ENOMEM;
    c->cmd = *cmd;
    snprintf(c->device_id, sizeof c->device_id, "%s", device_id);
    if (gw_map_put(&t->by_id, c->cmd.command_id, c) != 0) {
        free(c);
        return EMS_ENOMEM;
    }
    c->created_ms = c->updated_ms = now_ms; /* here: the origin's own time is in the database */
    c->status = status;
    t->counts[status]++;
    c->deadline_ms = now_ms + (status == GW_CMD_SENT ? t->cfg.answer_ms : t->cfg.complete_ms);
    c->nhist = 1;
    c->hist[0].status = status;
    c->hist[0].at_ms = now_ms;
    list_push(&t->active, c);
    ems_log_info("command %s for %s: adopted at %s (its gateway is gone)", c->cmd.command_id,
                 c->device_id, gw_cmd_status_name(status));
    return 0;
}

static int status_of_result(ems_result_status_t s)
{
    switch (s) {
    case EMS_RESULT_ACCEPTED:
        return GW_CMD_ACCEPTED;
    case EMS_RESULT_REJECTED:
        return GW_CMD_REJECTED;
    case EMS_RESULT_COMPLETED:
        return GW_CMD_COMPLETED;
    case EMS_RESULT_FAILED:
        return GW_CMD_FAILED;
    default:
        return -1;
    }
}

int gw_cmds_result(gw_cmds_t *t, const char *device_id, const ems_command_result_t *r,
                   int64_t now_ms)
{
    gw_cmd_t *c = gw_map_get(&t->by_id, r->command_id);
    if (!c)
        return EMS_ENOENT;
    if (strcmp(c->device_id, device_id) != 0)
        return EMS_EPERM;
    int s = status_of_result(r->status);
    if (s < 0)
        return EMS_EINVAL;
    if ((gw_cmd_status_t)s == c->status)
        return 0;
    bool ok = c->status == GW_CMD_SENT ||
              (c->status == GW_CMD_ACCEPTED && (s == GW_CMD_COMPLETED || s == GW_CMD_FAILED));
    if (!ok)
        return EMS_EINVAL;
    c->reason[0] = '\0';
    if (r->has_reason)
        snprintf(c->reason, sizeof c->reason, "%s", ems_result_reason_name(r->reason));
    if (r->has_message)
        snprintf(c->message, sizeof c->message, "%s", r->message);
    if (s == GW_CMD_ACCEPTED)
        c->deadline_ms = now_ms + t->cfg.complete_ms;
    set_status(t, c, (gw_cmd_status_t)s, now_ms);
    return 0;
}

int gw_cmds_fail(gw_cmds_t *t, const char *command_id, const char *reason, const char *message,
                 int64_t now_ms)
{
    gw_cmd_t *c = gw_map_get(&t->by_id, command_id);
    if (!c)
        return EMS_ENOENT;
    if (gw_cmd_status_final(c->status))
        return EMS_EINVAL;
    snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "");
    fail(t, c, GW_CMD_FAILED, message ? message : "", now_ms);
    return 0;
}

void gw_cmds_tick(gw_cmds_t *t, int64_t now_ms)
{
    gw_cmd_t *c = t->active.head;
    while (c) {
        gw_cmd_t *n = c->next;
        char msg[96];
        if (c->status == GW_CMD_QUEUED && c->expires_ms && now_ms >= c->expires_ms) {
            fail(t, c, GW_CMD_EXPIRED, "time to live passed while queued", now_ms);
        } else if (c->status == GW_CMD_SENT && c->deadline_ms && now_ms >= c->deadline_ms) {
            snprintf(msg, sizeof msg, "no answer within %" PRId64 " s", t->cfg.answer_ms / 1000);
            fail(t, c, GW_CMD_TIMED_OUT, msg, now_ms);
        } else if (c->status == GW_CMD_ACCEPTED && c->deadline_ms && now_ms >= c->deadline_ms) {
            snprintf(msg, sizeof msg, "not completed within %" PRId64 " s",
                     t->cfg.complete_ms / 1000);
            fail(t, c, GW_CMD_TIMED_OUT, msg, now_ms);
        }
        c = n;
    }
}

int64_t gw_cmds_next_deadline(const gw_cmds_t *t)
{
    int64_t best = INT64_MAX;
    for (const gw_cmd_t *c = t->active.head; c; c = c->next) {
        int64_t d = c->status == GW_CMD_QUEUED ? c->expires_ms : c->deadline_ms;
        if (d && d < best)
            best = d;
    }
    return best;
}

gw_cmd_t *gw_cmds_find(gw_cmds_t *t, const char *command_id)
{
    return gw_map_get(&t->by_id, command_id);
}

size_t gw_cmds_count(const gw_cmds_t *t, gw_cmd_status_t s)
{
    return (unsigned)s < GW_CMD_STATUS_COUNT ? t->counts[s] : 0;
}

static void jw_time(ems_jw_t *w, int64_t ms)
{
    char ts[EMS_TIME_STR_MAX];
    if (ms && ems_time_format(ms, ts, sizeof ts) > 0)
        ems_jw_str(w, ts);
    else
        ems_jw_null(w);
}

static void jw_str_or_null(ems_jw_t *w, const char *s)
{
    if (s[0])
        ems_jw_str(w, s);
    else
        ems_jw_null(w);
}

static void jw_payload(ems_jw_t *w, const gw_cmd_t *c)
{
    ems_jw_obj_open(w);
    if (c->cmd.action == EMS_ACTION_SET_MODE) {
        ems_jw_key(w, "target_mode");
        ems_jw_str(w, ems_target_mode_name(c->cmd.target_mode));
        if (c->cmd.has_target_power) {
            ems_jw_key(w, "target_power");
            ems_jw_num(w, c->cmd.target_power);
        }
    }
    ems_jw_obj_close(w);
}

/* What names a command in its record and its creation event. */
static void jw_identity(ems_jw_t *w, const gw_cmd_t *c)
{
    ems_jw_key(w, "command_id");
    ems_jw_str(w, c->cmd.command_id);
    ems_jw_key(w, "device_id");
    ems_jw_str(w, c->device_id);
    ems_jw_key(w, "action");
    ems_jw_str(w, ems_action_name(c->cmd.action));
    ems_jw_key(w, "payload");
    jw_payload(w, c);
}

int gw_cmd_to_json(const gw_cmd_t *c, char *buf, size_t cap)
{
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    jw_identity(&w, c);
    ems_jw_key(&w, "status");
    ems_jw_str(&w, gw_cmd_status_name(c->status));
    ems_jw_key(&w, "reason");
    jw_str_or_null(&w, c->reason);
    ems_jw_key(&w, "message");
    jw_str_or_null(&w, c->message);
    ems_jw_key(&w, "created_by");
    ems_jw_str(&w, c->created_by);
    ems_jw_key(&w, "created_at");
    jw_time(&w, c->created_ms);
    ems_jw_key(&w, "updated_at");
    jw_time(&w, c->updated_ms);
    ems_jw_key(&w, "expires_at");
    jw_time(&w, c->expires_ms);
    ems_jw_key(&w, "history");
    ems_jw_arr_open(&w);
    for (unsigned i = 0; i < c->nhist; i++) {
        ems_jw_obj_open(&w);
        ems_jw_key(&w, "status");
        ems_jw_str(&w, gw_cmd_status_name(c->hist[i].status));
        ems_jw_key(&w, "at");
        jw_time(&w, c->hist[i].at_ms);
        ems_jw_obj_close(&w);
    }
    ems_jw_arr_close(&w);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}

static const char *change_actor(const gw_cmd_t *c)
{
    if (c->status == GW_CMD_ACCEPTED || c->status == GW_CMD_REJECTED ||
        c->status == GW_CMD_COMPLETED ||
        (c->status == GW_CMD_FAILED && c->reason[0] && strncmp(c->reason, "GATEWAY_", 8) != 0))
        return c->device_id;
    return c->nhist <= 1 ? c->created_by : "gateway";
}

int gw_cmd_event_json(const gw_cmd_t *c, char *buf, size_t cap)
{
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    if (c->nhist <= 1) {
        ems_jw_str(&w, "command");
        jw_identity(&w, c);
        ems_jw_key(&w, "created_by");
        ems_jw_str(&w, c->created_by);
        if (c->created_ms) {
            ems_jw_key(&w, "created_at");
            jw_time(&w, c->created_ms);
        }
        if (c->expires_ms) {
            ems_jw_key(&w, "expires_at");
            jw_time(&w, c->expires_ms);
        }
        ems_jw_key(&w, "status");
        ems_jw_str(&w, gw_cmd_status_name(c->status));
    } else {
        ems_jw_str(&w, "command_status");
        ems_jw_key(&w, "command_id");
        ems_jw_str(&w, c->cmd.command_id);
        ems_jw_key(&w, "status");
        ems_jw_str(&w, gw_cmd_status_name(c->status));
        ems_jw_key(&w, "at");
        jw_time(&w, c->updated_ms);
    }
    if (c->reason[0]) {
        ems_jw_key(&w, "reason");
        ems_jw_str(&w, c->reason);
    }
    if (c->message[0]) {
        ems_jw_key(&w, "message");
        ems_jw_str(&w, c->message);
    }
    ems_jw_key(&w, "actor");
    ems_jw_str(&w, change_actor(c));
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}
