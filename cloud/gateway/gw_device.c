/* gw_device.c: the device endpoint /ws/device/{id} (see gw.h).
 *
 * Upgrade: the WebSocket headers are checked first (400/426), then the
 * Bearer token: its SHA-256 is compared in constant time with the hash the
 * DB writer has for the device (device_auth query, cached for
 * auth_cache_s). Unknown device or wrong token: 401; revoked: 403; DB writer
 * unreachable and nothing cached: 503; too many connections: 429.
 *
 * After the upgrade: welcome, session_open event, online event to
 * dashboards, pending acks, queued commands. Every message is parsed once;
 * telemetry is validated, fanned out, and forwarded to the DB writer; the
 * device is acked only from gw_device_committed (after the commit).
 *
 * Revocation and rotation reach live connections in seconds: a trigger on
 * the devices table notifies the DB writer, which forwards a CREDENTIALS
 * frame; the cached credential is dropped and the connection re-checked at
 * once (gw_device_credentials_changed). As a fallback for a listener that
 * is down, every recheck_s each connected device's credential is looked up
 * again. A connection whose token is no longer the device's current,
 * unrevoked one is closed with 4003 (docs/api.md, "Provisioning").
 */
#include "gw.h"

#include "auth.h"
#include "batch.h"
#include "command_result.h"
#include "dashboard.h"
#include "device_info.h"
#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "log.h"
#include "message.h"
#include "nack.h"
#include "timefmt.h"
#include "welcome.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------ sending */

static void dev_send(gw_devconn_t *dc, const char *text, size_t len)
{
    gw_t *gw = dc->gw;
    int rc = ems_ws_send_text(dc->ws, text, len);
    if (rc == 0) {
        ems_metric_inc(gw->m.msgs_out[0]);
        ems_metric_add(gw->m.bytes_out[0], (double)len);
    } else if (rc == EMS_ENOSPC || rc == EMS_EMSGSIZE) {
        ems_log_warn("device %s: send queue over %" PRId64 " bytes (not reading); closing 4009",
                     dc->dev ? dc->dev->id : "?", gw->cfg.device_send_queue);
        dc->why_closed = "send queue overflow";
        ems_ws_close(dc->ws, 4009, "send queue overflow");
    }
}

static void send_nack(gw_devconn_t *dc, bool has_seq, uint64_t seq, const ems_verr_t *err)
{
    ems_nack_t n;
    ems_nack_from_verr(&n, has_seq ? (int64_t)seq : -1, err);
    char buf[EMS_NACK_JSON_MAX];
    int len = ems_nack_encode(&n, buf, sizeof buf);
    if (len > 0) {
        dev_send(dc, buf, (size_t)len);
        ems_metric_inc(dc->gw->m.nacks_sent);
    }
}

static void send_acks(gw_devconn_t *dc, gw_dev_t *d)
{
    char buf[GW_ACK_JSON_MAX];
    int n;
    bool sent = false;
    while ((n = gw_ranges_take_ack(&d->acks, buf, sizeof buf)) > 0) {
        dev_send(dc, buf, (size_t)n);
        ems_metric_inc(dc->gw->m.acks_sent);
        sent = true;
    }
    d->ack_waiting = 0;
    if (sent)
        d->ack_sent_ms = uv_now(dc->gw->loop);
}

void gw_device_committed(gw_t *gw, gw_dev_t *d, bool has_seq, uint64_t seq, const char *reject)
{
    if (reject) {
        if (d->conn) {
            ems_verr_t e;
            ems_verr_set(&e, "", "refused by the database: %s", reject);
            send_nack(d->conn, has_seq, seq, &e);
        }
        return;
    }
    ems_metric_inc(gw->m.acked_records);
    if (!has_seq)
        return; /* nothing the edge could match an ack to */
    if (gw_ranges_add(&d->acks, seq) != 0)
        return; /* out of memory: no ack; the edge sends it again */
    d->ack_waiting++;
    if (!d->ack_dirty) {
        d->ack_dirty = true;
        d->ack_next = gw->ack_dirty;
        gw->ack_dirty = d;
    }
}

/* Acks and ack_delay_ms. Every ack message costs the gateway one write()
 * on the device's socket, the largest share of its CPU per packet
 * (docs/benchmarks.md, "CPU per packet"). With ack_delay_ms a device gets
 * at most one ack message per that interval: seqs committed sooner after
 * the last one wait on a wheel of GW_ACK_SLOT_MS slots and go out together
 * in one message (an ack carries ranges, docs/protocol.md 3.2). A device
 * sending one packet a second with ack_delay_ms 3000 gets one ack for
 * three packets. What waits is only the edge's permission to delete rows
 * it has buffered anyway: the rows are committed, and if the gateway dies
 * with an ack held the edge sends the packets again and the DB writer
 * drops the duplicates. A backlog (ack_batch seqs waiting) and the
 * shutdown are acked at once. */
static bool ack_due(const gw_t *gw, const gw_dev_t *d, uint64_t now)
{
    return gw->cfg.ack_delay_ms == 0 || gw->stopping || d->ack_waiting >= (uint64_t)gw->cfg.ack_batch ||
           now - d->ack_sent_ms >= (uint64_t)gw->cfg.ack_delay_ms;
}

static void ack_timer_cb(uv_timer_t *t);

/* Puts `d` on the wheel slot of its due time (not yet due: see ack_due). */
static void ack_hold(gw_t *gw, gw_dev_t *d, uint64_t now)
{
    if (d->ack_wheel)
        return; /* already waiting: its slot comes */
    if (gw->ack_held == 0) {
        gw->ack_wheel_slot = now / GW_ACK_SLOT_MS;
        uv_timer_start(&gw->ack_timer, ack_timer_cb, GW_ACK_SLOT_MS, GW_ACK_SLOT_MS);
    }
    uint64_t due = d->ack_sent_ms + (uint64_t)gw->cfg.ack_delay_ms;
    uint64_t slot = (due + GW_ACK_SLOT_MS - 1) / GW_ACK_SLOT_MS; /* > now's slot: due > now */
    if (slot < gw->ack_wheel_slot)
        slot = gw->ack_wheel_slot;
    gw_dev_t **head = &gw->ack_wheel[slot % GW_ACK_SLOTS];
    d->wheel_next = *head;
    *head = d;
    d->ack_wheel = true;
    gw->ack_held++;
}

/* Sends the acks of `d` if they are due, else holds them. A device that
 * went away keeps its ranges: they are sent when it reconnects, which
 * saves it resending what is already stored. */
static void ack_consider(gw_t *gw, gw_dev_t *d, uint64_t now)
{
    if (!d->conn || d->acks.len == 0)
        return;
    if (ack_due(gw, d, now))
        send_acks(d->conn, d);
    else
        ack_hold(gw, d, now);
}

/* Runs the wheel's slots up to now (all of them while stopping). A slot
 * reached early (the wheel wrapped after a stall) is harmless: what is
 * not due yet goes back on a later slot. */
static void ack_timer_cb(uv_timer_t *t)
{
    gw_t *gw = t->data;
    uint64_t now = uv_now(gw->loop);
    uint64_t last = now / GW_ACK_SLOT_MS;
    if (gw->stopping || last - gw->ack_wheel_slot >= GW_ACK_SLOTS) /* one full turn */
        gw->ack_wheel_slot = last >= GW_ACK_SLOTS ? last + 1 - GW_ACK_SLOTS : 0;
    for (; gw->ack_wheel_slot <= last; gw->ack_wheel_slot++) {
        gw_dev_t **head = &gw->ack_wheel[gw->ack_wheel_slot % GW_ACK_SLOTS];
        gw_dev_t *d = *head;
        *head = NULL;
        while (d) {
            gw_dev_t *n = d->wheel_next;
            d->wheel_next = NULL;
            d->ack_wheel = false;
            gw->ack_held--;
            ack_consider(gw, d, now);
            d = n;
        }
    }
    if (gw->ack_held == 0)
        uv_timer_stop(&gw->ack_timer);
}

void gw_device_release_acks(gw_t *gw)
{
    if (gw->ack_held)
        ack_timer_cb(&gw->ack_timer); /* while stopping it runs every slot */
}

void gw_device_flush_acks(gw_t *gw)
{
    uint64_t now = uv_now(gw->loop);
    gw_dev_t *d = gw->ack_dirty;
    gw->ack_dirty = NULL;
    while (d) {
        gw_dev_t *n = d->ack_next;
        d->ack_dirty = false;
        d->ack_next = NULL;
        ack_consider(gw, d, now);
        d = n;
    }
}

int gw_device_send_command(gw_t *gw, const gw_cmd_t *c)
{
    gw_dev_t *d = gw_dev_get(gw, c->device_id, false);
    if (!d || !d->conn || !ems_ws_is_open(d->conn->ws))
        return EMS_ENOENT;
    char buf[EMS_COMMAND_JSON_MAX];
    int n = ems_command_encode(&c->cmd, buf, sizeof buf);
    if (n < 0)
        return n;
    int rc = ems_ws_send_text(d->conn->ws, buf, (size_t)n);
    if (rc == 0) {
        ems_metric_inc(gw->m.msgs_out[0]);
        ems_metric_add(gw->m.bytes_out[0], n);
    }
    return rc;
}

/* ------------------------------------------------------------ events */

static void session_event(gw_t *gw, gw_devconn_t *dc, bool open, const char *reason)
{
    char buf[1024], t1[EMS_TIME_STR_MAX], t2[EMS_TIME_STR_MAX];
    ems_time_format(dc->connected_ms, t1, sizeof t1);
    ems_jw_t w;
    ems_jw_init(&w, buf, sizeof buf);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, open ? "session_open" : "session_close");
    ems_jw_key(&w, "device_id");
    ems_jw_str(&w, dc->dev->id);
    ems_jw_key(&w, "connected_at");
    ems_jw_str(&w, t1);
    if (open) {
        ems_jw_key(&w, "remote");
        ems_jw_str(&w, dc->peer);
        ems_jw_key(&w, "gateway");
        ems_jw_str(&w, gw->instance);
    } else {
        ems_time_format(ems_time_now_ms(), t2, sizeof t2);
        ems_jw_key(&w, "disconnected_at");
        ems_jw_str(&w, t2);
        ems_jw_key(&w, "reason");
        ems_jw_str(&w, reason);
    }
    ems_jw_obj_close(&w);
    int n = ems_jw_finish(&w);
    if (n > 0)
        gw_event(gw, buf, (size_t)n);
}

/* ------------------------------------------------------------ messages */

/* The timestamp rule (docs/protocol.md 2.1): a packet stamped more than
 * telemetry_max_skew_s ahead of the gateway's clock, or older than
 * telemetry_max_age_days, is refused for good. Such a packet could never be
 * right: it would pin the device's "latest" state (the newest timestamp
 * wins) or land outside what the system keeps. Returns -1 if acceptable,
 * else the rule broken (0 future, 1 too old) with the nack's text in *e. */
static int timestamp_check(const gw_t *gw, int64_t ts_ms, int64_t now_ms, ems_verr_t *e)
{
    int64_t skew_ms = gw->cfg.telemetry_max_skew_s * 1000;
    int64_t age_ms = gw->cfg.telemetry_max_age_days * 86400 * 1000;
    char ts[EMS_TIME_STR_MAX] = "?", now[EMS_TIME_STR_MAX] = "?";
    if (ts_ms <= now_ms + skew_ms && ts_ms >= now_ms - age_ms)
        return -1;
    ems_time_format(ts_ms, ts, sizeof ts);
    ems_time_format(now_ms, now, sizeof now);
    if (ts_ms > now_ms + skew_ms) {
        ems_verr_set(e, "timestamp",
                     "%s is more than %" PRId64 " s ahead of the gateway's clock (%s); limit "
                     "telemetry_max_skew_s",
                     ts, gw->cfg.telemetry_max_skew_s, now);
        return 0;
    }
    ems_verr_set(e, "timestamp",
                 "%s is older than %" PRId64 " days before the gateway's clock (%s); limit "
                 "telemetry_max_age_days",
                 ts, gw->cfg.telemetry_max_age_days, now);
    return 1;
}

/* One validated packet from the connection's device. `live` packets are
 * fanned out to dashboards; backfill from a batch is history and is not.
 * `raw` (may be NULL) is the device's own text of the packet, already parsed
 * and validated into `t`: dashboards get it as it came, which saves encoding
 * the packet again for every message (unknown members ride along; receivers
 * ignore them, docs/protocol.md). */
static void handle_packet(gw_devconn_t *dc, const ems_telemetry_t *t, const char *raw,
                          size_t raw_len, bool live, int64_t now_ms)
{
    gw_t *gw = dc->gw;
    gw_dev_t *d = dc->dev;
    if (strcmp(t->device_id, d->id) != 0) {
        ems_metric_inc(gw->m.foreign);
        ems_log_limited(&gw->log_foreign, ems_time_mono_ms(), EMS_LOG_WARN,
                        "device %s (%s) sent a packet for device %s: refused", d->id, dc->peer,
                        t->device_id);
        ems_verr_t e;
        ems_verr_set(&e, "device_id", "is \"%s\" but this connection is authenticated as \"%s\"",
                     t->device_id, d->id);
        send_nack(dc, t->has_seq, t->seq, &e);
        return;
    }
    ems_verr_t te;
    int rule = timestamp_check(gw, t->timestamp_ms, now_ms, &te);
    if (rule >= 0) {
        ems_metric_inc(gw->m.ts_refused[rule]);
        ems_log_limited(&gw->log_ts, ems_time_mono_ms(), EMS_LOG_WARN,
                        "device %s (%s): packet seq %" PRIu64 " refused: timestamp %s", d->id,
                        dc->peer, t->has_seq ? t->seq : 0, te.reason);
        send_nack(dc, t->has_seq, t->seq, &te);
        return;
    }
    ems_metric_inc(gw->m.telemetry_ok);
    if (live && (!d->has_last || t->timestamp_ms >= d->last.timestamp_ms)) {
        d->last = *t;
        d->has_last = true;
        gw_alarms_packet(gw, d, t, now_ms); /* the live alarm rules (gw_alarm.h) */
        if (gw->hub.nfleet)
            gw_dash_fleet_telemetry(gw, t); /* the fleet view: latest state only */
    }
    bool here = gw->hub.nall || gw_hub_count(&gw->hub, d->id);
    bool there = live && gw_bus_wants_telemetry(gw->bus, d->id); /* other gateways' dashboards */
    if (live && (here || there)) {
        char pkt[EMS_TELEMETRY_JSON_MAX], msg[EMS_TELEMETRY_JSON_MAX + 64];
        int n = -1;
        if (raw && raw_len <= EMS_TELEMETRY_JSON_MAX)
            n = ems_dash_telemetry_encode(raw, raw_len, msg, sizeof msg);
        if (n <= 0) { /* no text, or a larger one (padding, unknown members) */
            n = ems_telemetry_encode(t, pkt, sizeof pkt);
            if (n > 0)
                n = ems_dash_telemetry_encode(pkt, (size_t)n, msg, sizeof msg);
        }
        if (n > 0 && here)
            gw_dash_publish(gw, d->id, msg, (size_t)n);
        if (n > 0 && there)
            gw_bus_telemetry(gw, d->id, msg, (size_t)n);
    }
    if (gw->stopping)
        return; /* not stored, not acked: the edge sends it to the next gateway */
    int rc = gw_link_telemetry(gw->link, d, t, now_ms);
    if (rc < 0) {
        ems_metric_inc(gw->m.not_stored);
        int64_t mono = ems_time_mono_ms();
        if (mono - gw->last_full_log_mono > 5000) {
            gw->last_full_log_mono = mono;
            ems_log_warn("DB writer queue full (%zu held): telemetry is fanned out but not "
                         "stored or acked; the edges keep it",
                         gw_link_held(gw->link));
        }
    }
}

typedef struct {
    gw_devconn_t *dc;
    int64_t now_ms;
} batch_ctx_t;

static void batch_item(void *ctx, const ems_batch_item_t *it)
{
    batch_ctx_t *b = ctx;
    if (it->packet) {
        handle_packet(b->dc, it->packet, NULL, 0, false, b->now_ms);
        return;
    }
    ems_metric_inc(b->dc->gw->m.invalid);
    ems_verr_t e;
    ems_verr_set(&e, it->packet_path ? it->packet_path : "", "%s", it->err->reason);
    send_nack(b->dc, it->has_seq, it->seq, &e);
}

/* device_info: kept (normalised) for /api/devices and dashboards. */
static int handle_info(gw_devconn_t *dc, const json_t *root, ems_verr_t *err)
{
    ems_device_info_t info;
    if (ems_device_info_from_json(root, &info, err) < 0)
        return EMS_EINVAL;
    char buf[EMS_DEVICE_INFO_JSON_MAX];
    int n = ems_device_info_encode(&info, buf, sizeof buf);
    if (n < 0) {
        ems_verr_set(err, "", "cannot re-encode device_info");
        return EMS_EINVAL;
    }
    char *copy = strdup(buf);
    if (copy) {
        free(dc->dev->info_json);
        dc->dev->info_json = copy;
        /* The other gateways learn its firmware and limits (with the bus). */
        gw_bus_device_presence(dc->gw, dc->dev, true);
    }
    return 0;
}

static void handle_result(gw_devconn_t *dc, const json_t *root)
{
    ems_command_result_t r;
    ems_verr_t err;
    if (ems_command_result_from_json(root, &r, &err) < 0) {
        char b[400];
        ems_metric_inc(dc->gw->m.invalid);
        ems_log_warn("device %s: invalid command_result: %s", dc->dev->id,
                     ems_verr_format(&err, b, sizeof b));
        send_nack(dc, false, 0, &err);
        return;
    }
    int rc = gw_cmds_result(dc->gw->cmds, dc->dev->id, &r, ems_time_now_ms());
    /* A command another gateway forwarded here: its answers go back there
     * (that gateway keeps the record). */
    if (rc == EMS_ENOENT &&
        gw_bus_relay_result(dc->gw, dc->dev->id, r.command_id, root,
                            r.status != EMS_RESULT_ACCEPTED))
        return;
    if (rc == EMS_EPERM)
        ems_log_warn("device %s answered command %s of another device: ignored", dc->dev->id,
                     r.command_id);
    else if (rc == EMS_ENOENT)
        ems_log_info("device %s answered unknown command %s (%s): ignored", dc->dev->id,
                     r.command_id, ems_result_status_name(r.status));
    else if (rc == EMS_EINVAL)
        ems_log_info("device %s: late or out-of-order %s for command %s: ignored", dc->dev->id,
                     ems_result_status_name(r.status), r.command_id);
}

static void dev_on_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    (void)binary; /* binary frames are refused with 1008 by the ws layer */
    gw_devconn_t *dc = ems_ws_user(ws);
    gw_t *gw = dc->gw;
    gw_dev_t *d = dc->dev;
    if (!d || d->conn != dc)
        return; /* replaced by a newer connection; its close is under way */
    int64_t now_ms = ems_time_now_ms(), mono = ems_time_mono_ms();
    ems_metric_inc(gw->m.msgs_in[0]);
    ems_metric_add(gw->m.bytes_in[0], (double)len);
    d->last_seen_ms = now_ms;
    if (!gw_rate_take(&d->rate, (double)gw->cfg.rate_burst, (double)gw->cfg.rate_per_s, mono)) {
        ems_metric_inc(gw->m.rate_limited);
        ems_log_warn("device %s (%s): more than %" PRId64 " messages/s (burst %" PRId64
                     "): closing 4008",
                     d->id, dc->peer, gw->cfg.rate_per_s, gw->cfg.rate_burst);
        dc->why_closed = "rate limit exceeded";
        ems_ws_close(ws, 4008, "rate limit exceeded");
        return;
    }
    /* The common case, one valid packet, is decoded in one pass without a
     * jansson tree. Anything else, errors included, takes the full path
     * below, which gives the verdict and the error (telemetry.h). */
    ems_telemetry_t t;
    if (ems_telemetry_scan(data, len, &t) == 0) {
        ems_metric_inc(gw->m.decodes[0]);
        handle_packet(dc, &t, data, len, !(t.has_backfill && t.backfill), now_ms);
        return;
    }
    ems_metric_inc(gw->m.decodes[1]);
    ems_verr_t err;
    json_t *root = ems_jr_parse(data, len, &err);
    if (!root) {
        ems_metric_inc(gw->m.invalid);
        send_nack(dc, false, 0, &err);
        return;
    }
    const char *type = json_string_value(json_object_get(root, "type"));
    ems_msg_kind_t kind = ems_message_identify(root, &err);
    switch (kind) {
    case EMS_MSG_TELEMETRY:
        if (ems_telemetry_from_json(root, &t, &err) == 0) {
            handle_packet(dc, &t, data, len, !(t.has_backfill && t.backfill), now_ms);
        } else {
            ems_metric_inc(gw->m.invalid);
            json_int_t seq = -1;
            const json_t *s = json_object_get(root, "seq");
            if (json_is_number(s) && json_number_value(s) >= 0 &&
                json_number_value(s) <= (double)EMS_SEQ_MAX &&
                json_number_value(s) == (double)(json_int_t)json_number_value(s))
                seq = (json_int_t)json_number_value(s);
            send_nack(dc, seq >= 0, (uint64_t)seq, &err);
        }
        break;
    case EMS_MSG_TELEMETRY_BATCH: {
        batch_ctx_t b = {dc, now_ms};
        if (ems_batch_from_json(root, batch_item, &b, &err) < 0) {
            ems_metric_inc(gw->m.invalid);
            send_nack(dc, false, 0, &err);
        }
        break;
    }
    case EMS_MSG_COMMAND_RESULT:
        handle_result(dc, root);
        break;
    case EMS_MSG_DEVICE_INFO:
        if (handle_info(dc, root, &err) < 0) {
            ems_metric_inc(gw->m.invalid);
            send_nack(dc, false, 0, &err);
        } else {
            ems_log_info("device %s: %s", d->id, d->info_json);
        }
        break;
    case EMS_MSG_UNKNOWN:
        ems_metric_inc(gw->m.invalid);
        send_nack(dc, false, 0, &err);
        break;
    default:
        ems_metric_inc(gw->m.invalid);
        ems_verr_set(&err, type ? "type" : "", "a device does not send %s messages",
                     ems_message_kind_name(kind));
        send_nack(dc, false, 0, &err);
        break;
    }
    json_decref(root);
}

static const char *close_text(const ems_ws_close_info_t *info, char *buf, size_t cap)
{
    if (info->status == 0)
        snprintf(buf, cap, "closed (code %d)",
                 info->code_received ? info->code_received : info->code_sent);
    else
        snprintf(buf, cap, "%s%s%s", ems_strerror(info->status), info->detail[0] ? ": " : "",
                 info->detail);
    return buf;
}

static void dev_on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    gw_devconn_t *dc = ems_ws_user(ws);
    gw_t *gw = dc->gw;
    char why[256];
    const char *reason = dc->why_closed ? dc->why_closed : close_text(info, why, sizeof why);
    if (dc->prev)
        dc->prev->next = dc->next;
    else
        gw->devconns = dc->next;
    if (dc->next)
        dc->next->prev = dc->prev;
    gw->ndevconns--;
    gw_dev_t *d = dc->dev;
    ems_log_info("device %s (%s) disconnected: %s", d->id, dc->peer, reason);
    session_event(gw, dc, false, reason);
    if (d->conn == dc) {
        d->conn = NULL;
        d->offline_ms = ems_time_now_ms();
        gw_alarms_disconnected(gw, d);
        gw_dash_device_event(gw, d);
        gw_bus_device_presence(gw, d, false);
    }
    free(dc);
}

static const ems_ws_callbacks_t dev_cbs = {NULL, dev_on_message, dev_on_close};

/* ------------------------------------------------------------ upgrade */

static void refuse(gw_t *gw, ems_server_req_t *req, int status, const char *id, const char *peer,
                   const char *why)
{
    ems_metric_inc(gw->m.refused[0]);
    ems_log_limited(&gw->log_upgrade, ems_time_mono_ms(), EMS_LOG_WARN,
                    "device %s from %s refused: %d %s", id, peer, status, why);
    const char *extra = status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL;
    if (status == 401)
        extra = "WWW-Authenticate: Bearer\r\n";
    char body[300];
    json_t *o = json_pack("{ss}", "error", why);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    snprintf(body, sizeof body, "%s", s ? s : "{}");
    free(s);
    json_decref(o);
    ems_server_respond(req, status, "application/json", extra, body, strlen(body));
}

/* 503 with Retry-After: the device's backoff is the floor, this spreads
 * a crowd over a few seconds. */
static void refuse_busy(gw_t *gw, ems_server_req_t *req, const char *id, const char *peer,
                        const char *why)
{
    ems_metric_inc(gw->m.refused[0]);
    ems_log_limited(&gw->log_upgrade, ems_time_mono_ms(), EMS_LOG_WARN,
                    "device %s from %s refused: 503 %s", id, peer, why);
    char body[300];
    snprintf(body, sizeof body, "{\"error\":\"%s\"}", why);
    char extra[40];
    snprintf(extra, sizeof extra, "Retry-After: %u\r\n", 2 + (unsigned)(ems_time_mono_ms() % 4));
    ems_server_respond(req, 503, "application/json", extra, body, strlen(body));
}

static void accept_device(gw_t *gw, ems_server_req_t *req, gw_dev_t *d, const char *hash,
                          const char *peer)
{
    ems_ws_options_t o;
    ems_ws_options_default(&o);
    o.max_message = (size_t)gw->cfg.device_max_message;
    o.max_send_queue = (size_t)gw->cfg.device_send_queue;
    o.ping_interval_ms = (unsigned)(gw->cfg.ping_interval_s * 1000);
    o.idle_timeout_ms = (unsigned)(gw->cfg.idle_timeout_s * 1000);
    gw_devconn_t *dc = calloc(1, sizeof *dc);
    if (!dc) {
        refuse(gw, req, 503, d->id, peer, "out of memory");
        return;
    }
    dc->gw = gw;
    dc->dev = d;
    snprintf(dc->token_hash, sizeof dc->token_hash, "%s", hash);
    snprintf(dc->peer, sizeof dc->peer, "%s", peer);
    ems_ws_t *ws;
    if (ems_server_upgrade(req, &o, &dev_cbs, dc, NULL, &ws) < 0) {
        free(dc); /* answered (400) or the client is gone */
        return;
    }
    dc->ws = ws;
    dc->gen = ++gw->next_gen;
    dc->connected_ms = ems_time_now_ms();
    dc->recheck_mono = ems_time_mono_ms() + gw->cfg.recheck_s * 1000;
    dc->next = gw->devconns;
    if (gw->devconns)
        gw->devconns->prev = dc;
    gw->devconns = dc;
    gw->ndevconns++;
    ems_metric_inc(gw->m.conns_total[0]);

    gw_devconn_t *old = d->conn;
    d->conn = dc;
    d->connected_ms = dc->connected_ms;
    d->offline_ms = 0;
    if (old) {
        ems_log_info("device %s: new connection from %s replaces the one from %s (4001)", d->id,
                     peer, old->peer);
        old->why_closed = "replaced by a newer connection";
        ems_ws_close(old->ws, 4001, "replaced by a newer connection");
    }
    ems_log_info("device %s connected from %s", d->id, peer);

    ems_welcome_t w;
    snprintf(w.device_id, sizeof w.device_id, "%s", d->id);
    w.server_time_ms = dc->connected_ms;
    char buf[EMS_WELCOME_JSON_MAX];
    int n = ems_welcome_encode(&w, buf, sizeof buf);
    if (n > 0)
        dev_send(dc, buf, (size_t)n);
    session_event(gw, dc, true, NULL);
    gw_alarms_connected(gw, d); /* after session_open: the DB orders offline by it */
    gw_dash_device_event(gw, d);
    gw_bus_device_presence(gw, d, true);
    send_acks(dc, d);
    gw_cmds_online(gw->cmds, d->id, ems_time_now_ms());
}

/* Applies a device_auth answer (cached or fresh) to an upgrade. */
static void decide(gw_t *gw, ems_server_req_t *req, gw_dev_t *d, const char *id, const char *hash,
                   const char *peer)
{
    if (!d || !d->auth_ok) {
        refuse(gw, req, 401, id, peer, "unknown device or wrong token");
        return;
    }
    if (d->auth_revoked) {
        refuse(gw, req, 403, id, peer, "device credential revoked");
        return;
    }
    if (!ems_auth_equal(hash, d->auth_hash)) {
        refuse(gw, req, 401, id, peer, "unknown device or wrong token");
        return;
    }
    accept_device(gw, req, d, hash, peer);
}

/* Parses a device_auth result into the device's cache entry; creates the
 * entry only for a device that exists. Returns the entry or NULL. */
static gw_dev_t *apply_auth(gw_t *gw, const char *id, const char *json, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(json, len, 0, &je);
    gw_dev_t *d = NULL;
    if (json_is_true(json_object_get(o, "found"))) {
        const char *h = json_string_value(json_object_get(o, "token_hash"));
        d = gw_dev_get(gw, id, true);
        if (d) {
            d->auth_ok = h && strlen(h) == 64;
            snprintf(d->auth_hash, sizeof d->auth_hash, "%s", h ? h : "");
            d->auth_revoked = json_is_true(json_object_get(o, "revoked"));
            d->auth_mono_ms = ems_time_mono_ms();
        }
    } else {
        d = gw_dev_get(gw, id, false);
        if (d) /* deleted since */
            d->auth_ok = false;
        d = NULL;
    }
    json_decref(o);
    return d;
}

typedef struct auth_ctx {
    gw_t *gw;
    ems_server_req_t *req;
    char id[EMS_DEVICE_ID_MAX + 1]; /* key of gw_t.auth_pending while the lookup is out */
    char hash[65];
    char peer[64];
    int64_t t0;
    bool stale;            /* the credential changed while the lookup was out */
    struct auth_ctx *next; /* upgrades of the same id waiting for this lookup */
} auth_ctx_t;

static void auth_result(void *ud, int status, const char *json, size_t len);

/* Asks for the credential of `a` (the leader of its id's waiters). The
 * link batches lookups made close together into one query, and keeps them
 * waiting (bounded, with a deadline) while it is busy or down. */
static int auth_send(gw_t *gw, auth_ctx_t *a)
{
    int rc = gw_link_lookup(gw->link, a->id, auth_result, a);
    if (rc == 0)
        ems_metric_inc(gw->m.device_lookups);
    return rc;
}

/* Answers one upgrade that waited for the lookup of its id. */
static void auth_decide(gw_t *gw, auth_ctx_t *a, int status, gw_dev_t *d)
{
    if (ems_server_req_gone(a->req)) {
        ems_server_respond(a->req, 499, NULL, NULL, NULL, 0); /* finishes it */
    } else if (status < 0) {
        if (d && d->auth_ok && status != EMS_ECLOSED) {
            ems_log_warn("device %s: credential lookup failed (%s); using the cached one", a->id,
                         ems_strerror(status));
            decide(gw, a->req, d, a->id, a->hash, a->peer);
        } else {
            refuse_busy(gw, a->req, a->id, a->peer, "credential store unavailable");
        }
    } else if (gw->stopping) {
        refuse(gw, a->req, 503, a->id, a->peer, "gateway is shutting down");
    } else {
        decide(gw, a->req, d, a->id, a->hash, a->peer);
    }
}

static void auth_result(void *ud, int status, const char *json, size_t len)
{
    auth_ctx_t *a = ud;
    gw_t *gw = a->gw;
    ems_metric_observe(gw->m.query_latency, (double)(ems_time_mono_ms() - a->t0) / 1000.0);
    /* A revocation or rotation was announced while this lookup was out:
     * its answer may predate the change, so ask once more before letting
     * anyone in on it. */
    if (a->stale && status >= 0) {
        a->stale = false;
        if (auth_send(gw, a) == 0)
            return;
    }
    if (gw_map_get(&gw->auth_pending, a->id) == a)
        gw_map_del(&gw->auth_pending, a->id);
    gw_dev_t *d;
    if (status < 0) {
        d = gw_dev_get(gw, a->id, false);
    } else {
        d = apply_auth(gw, a->id, json, len);
        json_error_t je;
        json_t *o = json_loadb(json, len, 0, &je);
        if (json_is_false(json_object_get(o, "found")))
            gw_neg_add(&gw->dev_neg, a->id, ems_time_mono_ms());
        json_decref(o);
    }
    /* One answer for every upgrade that asked for this id meanwhile. */
    while (a) {
        auth_ctx_t *next = a->next;
        auth_decide(gw, a, status, d);
        free(a);
        a = next;
    }
}

void gw_device_forget_unknown(gw_t *gw, const char *device_id)
{
    if (device_id)
        gw_neg_del(&gw->dev_neg, device_id);
    else
        gw_neg_clear(&gw->dev_neg);
}

void gw_device_upgrade(gw_t *gw, ems_server_req_t *req, const char *id)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    gw_api_abuse_init(gw);
    char peer[64] = "?";
    ems_conn_t *c = ems_server_req_conn(req);
    if (c)
        ems_conn_peer(c, peer, sizeof peer);
    const char *why;
    int st = ems_http_ws_check_request(m, &why);
    if (st) {
        refuse(gw, req, st, id, peer, why);
        return;
    }
    const char *auth = ems_http_msg_header(m, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        refuse(gw, req, 401, id, peer, "missing Authorization: Bearer token");
        return;
    }
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    size_t tlen = strlen(tok);
    if (tlen == 0 || tlen > 256) {
        refuse(gw, req, 401, id, peer, "malformed bearer token");
        return;
    }
    if (gw->ndevconns + gw->ndashes >= (size_t)gw->cfg.max_connections) {
        refuse(gw, req, 429, id, peer, "connection limit reached");
        return;
    }
    char hash[65];
    ems_auth_token_hash(tok, tlen, hash, sizeof hash);
    gw_dev_t *d = gw_dev_get(gw, id, false);
    int64_t mono = ems_time_mono_ms();
    if (d && d->auth_ok && mono - d->auth_mono_ms < gw->cfg.auth_cache_s * 1000) {
        decide(gw, req, d, id, hash, peer);
        return;
    }
    /* The DB writer said "no such device" a moment ago (auth_negative_s):
     * the same answer without asking again. */
    if (gw_neg_has(&gw->dev_neg, id, mono)) {
        ems_metric_inc(gw->m.device_negative_hits);
        refuse(gw, req, 401, id, peer, "unknown device or wrong token");
        return;
    }
    auth_ctx_t *a = calloc(1, sizeof *a);
    if (!a) {
        refuse(gw, req, 503, id, peer, "out of memory");
        return;
    }
    a->gw = gw;
    a->req = req;
    a->t0 = mono;
    snprintf(a->id, sizeof a->id, "%s", id);
    snprintf(a->hash, sizeof a->hash, "%s", hash);
    snprintf(a->peer, sizeof a->peer, "%s", peer);
    /* A lookup of this id is out already: wait for its answer rather than
     * sending the same question again (a burst before the first answer). */
    auth_ctx_t *lead = gw_map_get(&gw->auth_pending, a->id);
    if (lead) {
        a->next = lead->next;
        lead->next = a;
        return;
    }
    /* The DB writer is not reachable now: a cached credential, even an
     * old one, beats waiting. Without one the lookup waits for the link
     * (gw_link_lookup: bounded, with a deadline). */
    int rc = d && d->auth_ok && !gw_link_up(gw->link) ? EMS_EAGAIN : auth_send(gw, a);
    if (rc < 0) {
        free(a);
        if (d && d->auth_ok) {
            ems_log_warn("device %s: DB writer unavailable; using the cached credential", id);
            decide(gw, req, d, id, hash, peer);
        } else if (rc == EMS_ENOSPC) {
            refuse_busy(gw, req, id, peer, "too many credential lookups waiting (auth_queue)");
        } else {
            refuse_busy(gw, req, id, peer, "credential store unavailable");
        }
        return;
    }
    if (gw_map_put(&gw->auth_pending, a->id, a) != 0)
        ems_log_debug("device %s: lookup not shared (out of memory)", id);
}

/* ------------------------------------------------------------ re-check */

typedef struct {
    gw_t *gw;
    uint64_t gen;
    char id[EMS_DEVICE_ID_MAX + 1];
} recheck_ctx_t;

static int recheck_start(gw_t *gw, gw_devconn_t *dc, int64_t now_mono);

static void recheck_result(void *ud, int status, const char *json, size_t len)
{
    recheck_ctx_t *r = ud;
    gw_t *gw = r->gw;
    gw_dev_t *d = gw_dev_get(gw, r->id, false);
    gw_devconn_t *dc = d ? d->conn : NULL;
    if (!dc || dc->gen != r->gen || status < 0) {
        if (dc && dc->gen == r->gen) {
            dc->rechecking = false; /* try again next round */
            if (dc->recheck_again) /* a change is pending: soon, not in recheck_s */
                dc->recheck_mono = ems_time_mono_ms() + 1000;
        }
        free(r);
        return;
    }
    dc->rechecking = false;
    d = apply_auth(gw, r->id, json, len);
    const char *why = NULL;
    if (!d || !d->auth_ok)
        why = "device deleted";
    else if (d->auth_revoked)
        why = "credential revoked";
    else if (!ems_auth_equal(dc->token_hash, d->auth_hash))
        why = "token rotated";
    if (why) {
        ems_log_warn("device %s (%s): %s; closing 4003", r->id, dc->peer, why);
        dc->why_closed = why;
        ems_ws_close(dc->ws, 4003, "credential revoked");
    } else if (dc->recheck_again) {
        /* The credential changed while this lookup was out: its answer may
         * predate the change, so ask once more. */
        dc->recheck_again = false;
        recheck_start(gw, dc, ems_time_mono_ms());
    }
    free(r);
}

/* Sends one device_auth lookup for a live connection. Returns 0 or the
 * link's refusal (the caller retries later). */
static int recheck_start(gw_t *gw, gw_devconn_t *dc, int64_t now_mono)
{
    recheck_ctx_t *r = calloc(1, sizeof *r);
    if (!r)
        return EMS_ENOMEM;
    r->gw = gw;
    r->gen = dc->gen;
    snprintf(r->id, sizeof r->id, "%s", dc->dev->id);
    int rc = gw_link_lookup(gw->link, r->id, recheck_result, r);
    if (rc < 0) {
        free(r);
        return rc;
    }
    dc->rechecking = true;
    dc->recheck_again = false;
    dc->recheck_mono = now_mono + gw->cfg.recheck_s * 1000;
    return 0;
}

void gw_device_recheck(gw_t *gw, int64_t now_mono)
{
    if (!gw_link_up(gw->link))
        return;
    for (gw_devconn_t *dc = gw->devconns; dc; dc = dc->next) {
        if (dc->rechecking || now_mono < dc->recheck_mono || dc->dev->conn != dc)
            continue;
        if (recheck_start(gw, dc, now_mono) < 0)
            return;
    }
}

/* Drops one device's cached credential and re-checks its live connection
 * at once (or right after the lookup already out, whose answer may predate
 * the change). */
static void credentials_changed(gw_t *gw, gw_dev_t *d, int64_t now_mono)
{
    d->auth_ok = false; /* the next upgrade asks the database */
    gw_devconn_t *dc = d->conn;
    if (!dc || !ems_ws_is_open(dc->ws))
        return;
    if (dc->rechecking) {
        dc->recheck_again = true;
        return;
    }
    dc->recheck_mono = now_mono; /* if the link refuses now, the next tick retries */
    if (gw_link_up(gw->link))
        recheck_start(gw, dc, now_mono);
}

void gw_device_credentials_changed(gw_t *gw, const char *device_id)
{
    int64_t now = ems_time_mono_ms();
    if (device_id) {
        auth_ctx_t *a = gw_map_get(&gw->auth_pending, device_id);
        if (a)
            a->stale = true;
        gw_dev_t *d = gw_dev_get(gw, device_id, false);
        if (d) {
            ems_log_info("device %s: credential changed in the database; re-checking%s",
                         device_id, d->conn ? " its connection" : "");
            credentials_changed(gw, d, now);
        }
        return;
    }
    /* Every device: drop the whole cache; live connections are re-checked
     * now (the lookups queue in the link, lookups before REST queries). */
    const char *k;
    void *v;
    size_t n = 0;
    for (size_t i = 0; gw_map_next(&gw->auth_pending, &i, &k, &v);)
        ((auth_ctx_t *)v)->stale = true;
    for (size_t i = 0; gw_map_next(&gw->devs, &i, &k, &v);) {
        gw_dev_t *d = v;
        if (d->conn)
            n++;
        credentials_changed(gw, d, now);
    }
    if (n)
        ems_log_info("credentials may have changed while nobody listened; re-checking %zu live "
                     "device connection(s)",
                     n);
}

void gw_device_close_all(gw_t *gw, uint16_t code, const char *reason)
{
    for (gw_devconn_t *dc = gw->devconns; dc; dc = dc->next) {
        if (!dc->why_closed)
            dc->why_closed = reason;
        ems_ws_close(dc->ws, code, reason);
    }
}
