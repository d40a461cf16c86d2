/* gw_dash.c: the dashboard endpoint /ws/dashboard (see gw.h).
 *
 * Upgrade: WebSocket headers (400/426), then a valid session cookie (401),
 * then the Origin (403: no cross-site WebSocket hijacking; a request
 * without Origin is not from a browser and is let through, the cookie still
 * decides), then the connection limit (429).
 *
 * A dashboard only subscribes and unsubscribes; commands go through the
 * REST API. On subscribe it gets the current online/offline state of each
 * device it asked for, then live telemetry, device events and command
 * changes. With the message bus on (gw_bus.h), a device's state is what
 * this gateway or the bus's presence knows (gw_dash_device_view), presence
 * changes reach the dashboards through gw_dash_device_refresh, and command
 * changes go to other gateways' watchers too (gw_dash_publish_shared).
 * Fan-out encodes each message once into a shared buffer; a
 * dashboard whose send queue would pass dashboard_send_queue is closed with
 * 4009 and never slows anyone else down.
 *
 * The fleet view ("mode": "fleet", gw_hub.h) costs a packet only a copy
 * into the device's hub entry; a timer (open while the view has
 * subscribers) flushes every fleet_interval_ms: the changed entries become
 * pending for each subscriber, which gets them in `fleet` frames of at most
 * 64 KiB while its send queue is under half of dashboard_send_queue. What
 * does not fit waits for the next flush as one pending bit per device, so
 * the fleet view alone never overflows a queue (no 4009) and a slow
 * browser simply gets the newest state later.
 */
#include "gw.h"

#include "dashboard.h"
#include "error.h"
#include "jread.h"
#include "log.h"
#include "message.h"
#include "timefmt.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void drop(gw_dash_t *ds)
{
    if (ds->dropping)
        return;
    ds->dropping = true;
    ems_metric_inc(ds->gw->m.dash_dropped);
    ems_log_warn("dashboard of %s: send queue over %" PRId64 " bytes (not reading); closing 4009",
                 ds->user, ds->gw->cfg.dashboard_send_queue);
    /* The close frame goes out behind what is queued; a dashboard that does
     * not read at all is cut off by the close timeout. Either way nothing
     * more is queued to it, so it costs at most its capped queue. */
    ems_ws_close(ds->ws, 4009, "send queue overflow");
}

static void dash_send_text(gw_dash_t *ds, const char *text, size_t len)
{
    if (ds->dropping)
        return;
    int rc = ems_ws_send_text(ds->ws, text, len);
    if (rc == 0) {
        ems_metric_inc(ds->gw->m.msgs_out[1]);
        ems_metric_add(ds->gw->m.bytes_out[1], (double)len);
    } else if (rc == EMS_ENOSPC || rc == EMS_EMSGSIZE) {
        drop(ds);
    }
}

typedef struct {
    ems_ws_msg_t *msg;
    size_t len;
} pub_t;

static void pub_one(void *sub, void *ud)
{
    gw_dash_t *ds = sub;
    pub_t *p = ud;
    if (ds->dropping)
        return;
    int rc = ems_ws_send_msg(ds->ws, p->msg);
    if (rc == 0) {
        ems_metric_inc(ds->gw->m.msgs_out[1]);
        ems_metric_add(ds->gw->m.bytes_out[1], (double)p->len);
        ems_metric_inc(ds->gw->m.fanout_msgs);
    } else if (rc == EMS_ENOSPC || rc == EMS_EMSGSIZE) {
        drop(ds);
    }
}

void gw_dash_publish(gw_t *gw, const char *device_id, const char *text, size_t len)
{
    if (!gw->hub.nall && !gw_hub_count(&gw->hub, device_id))
        return;
    pub_t p = {ems_ws_msg_new(text, len, false), len};
    if (!p.msg)
        return;
    gw_hub_fanout(&gw->hub, device_id, pub_one, &p);
    ems_ws_msg_unref(p.msg);
}

void gw_dash_publish_shared(gw_t *gw, const char *device_id, const char *text, size_t len)
{
    gw_dash_publish(gw, device_id, text, len);
    if (gw_bus_wants_telemetry(gw->bus, device_id))
        gw_bus_dash_message(gw, device_id, text, len);
}

static void send_error(gw_dash_t *ds, const ems_verr_t *err);

/* ------------------------------------------------------------ the fleet view */

void gw_dash_fleet_telemetry(gw_t *gw, const ems_telemetry_t *t)
{
    gw_hub_fleet_ent_t *e = gw_hub_fleet_get(&gw->hub, t->device_id, true);
    if (!e || (e->item.has_telemetry && t->timestamp_ms < e->item.timestamp_ms))
        return;
    ems_dash_fleet_item_set(&e->item, t);
    gw_hub_fleet_mark(&gw->hub, e);
}

/* The online state of a device changed (or is first known): into the
 * fleet view. */
static void fleet_presence(gw_t *gw, const ems_dash_device_t *v)
{
    if (!gw->hub.nfleet)
        return;
    gw_hub_fleet_ent_t *e = gw_hub_fleet_get(&gw->hub, v->device_id, true);
    if (!e || (e->item.online == v->online && e->item.since_ms == v->since_ms))
        return;
    e->item.online = v->online;
    e->item.since_ms = v->since_ms;
    gw_hub_fleet_mark(&gw->hub, e);
}

/* How a subscriber's drain ended. */
enum { FLEET_DONE, FLEET_MORE, FLEET_BLOCKED };

#define FLEET_SLICE_FRAMES 2 /* frames per subscriber per loop turn */
#define FLEET_RETRY_MS 10    /* a subscriber's queue was full: look again */

/* Sends one subscriber what is pending for it, in frames of at most
 * EMS_DASH_FLEET_FRAME_MAX bytes, while its queue stays under half of
 * dashboard_send_queue, and at most FLEET_SLICE_FRAMES frames now: the
 * rest stays pending for the next turn of the loop (FLEET_MORE) or, when
 * the queue is full, until it has drained (FLEET_BLOCKED). */
static int fleet_drain(gw_dash_t *ds, char *frame)
{
    gw_t *gw = ds->gw;
    size_t limit = (size_t)gw->cfg.dashboard_send_queue / 2;
    size_t cap = limit < EMS_DASH_FLEET_FRAME_MAX ? limit : EMS_DASH_FLEET_FRAME_MAX;
    for (int n = 0; !ds->dropping && ds->subs.npending; n++) {
        if (n == FLEET_SLICE_FRAMES)
            return FLEET_MORE;
        if (ems_ws_queued(ds->ws) + cap > limit)
            return FLEET_BLOCKED;
        ems_dash_fleet_frame_t f;
        ems_dash_fleet_frame_init(&f, frame, cap);
        gw_hub_fleet_ent_t *e;
        while ((e = gw_hub_fleet_peek(&gw->hub, &ds->subs)) != NULL) {
            if (ems_dash_fleet_frame_add(&f, &e->item) == EMS_ENOSPC)
                break;
            gw_hub_fleet_sent(&ds->subs, e); /* sent, or not encodable: skipped */
        }
        if (!f.count)
            break;
        size_t len = ems_dash_fleet_frame_finish(&f);
        dash_send_text(ds, frame, len);
    }
    return FLEET_DONE;
}

/* The flush timer: once per fleet_interval_ms it collects the changed
 * devices (at most one update per device per interval), and in between it
 * drains what is pending a slice at a time, one turn of the loop each, so
 * a large fleet's frames are encoded between the reads of device packets
 * (the loop never stalls for the whole fleet) and each dashboard's socket
 * can write out while the rest waits. */
static void fleet_timer_cb(uv_timer_t *t)
{
    static char frame[EMS_DASH_FLEET_FRAME_MAX];
    gw_t *gw = t->data;
    uint64_t now = uv_now(gw->loop);
    if (now >= gw->fleet_next_ms) {
        gw_hub_fleet_collect(&gw->hub);
        gw->fleet_next_ms += (uint64_t)gw->cfg.fleet_interval_ms;
        if (gw->fleet_next_ms <= now)
            gw->fleet_next_ms = now + (uint64_t)gw->cfg.fleet_interval_ms;
    }
    bool more = false, blocked = false;
    for (gw_dash_t *ds = gw->dashes; ds; ds = ds->next) {
        if (!ds->subs.fleet)
            continue;
        int r = fleet_drain(ds, frame);
        more |= r == FLEET_MORE;
        blocked |= r == FLEET_BLOCKED;
    }
    uint64_t wait = gw->fleet_next_ms - now;
    if (more)
        wait = 0;
    else if (blocked && wait > FLEET_RETRY_MS)
        wait = FLEET_RETRY_MS;
    uv_timer_start(t, fleet_timer_cb, wait, 0);
}

static void fleet_timer_closed(uv_handle_t *h) { free(h); }

/* The flush timer runs while the fleet view has subscribers; the last one
 * to go (at the latest when every dashboard has closed at shutdown) closes
 * it, so it never outlives the loop. `now` (true) runs it at the next turn
 * of the loop (a new subscriber's snapshot). */
static void fleet_timer_update(gw_t *gw, bool now)
{
    if (gw->hub.nfleet && !gw->fleet_timer && !gw->stopping) {
        uv_timer_t *t = malloc(sizeof *t);
        if (!t || uv_timer_init(gw->loop, t) != 0) {
            free(t);
            return;
        }
        t->data = gw;
        gw->fleet_next_ms = uv_now(gw->loop) + (uint64_t)gw->cfg.fleet_interval_ms;
        gw->fleet_timer = t;
    } else if (!gw->hub.nfleet && gw->fleet_timer) {
        uv_close((uv_handle_t *)gw->fleet_timer, fleet_timer_closed);
        gw->fleet_timer = NULL;
        return;
    }
    if (gw->fleet_timer && (now || !uv_is_active((uv_handle_t *)gw->fleet_timer))) {
        uint64_t ms = uv_now(gw->loop);
        uint64_t wait = now || gw->fleet_next_ms <= ms ? 0 : gw->fleet_next_ms - ms;
        uv_timer_start(gw->fleet_timer, fleet_timer_cb, wait, 0);
    }
}

/* The first fleet subscriber: the hub's entries are brought up to date
 * (they are not maintained while nobody watches). Local devices give their
 * newest live packet; devices on other gateways their presence, and their
 * values as soon as the bus carries their telemetry here. */
static void fleet_resync(gw_t *gw)
{
    gw_hub_fleet_ent_t *e;
    for (size_t i = 0; (e = gw_hub_fleet_next(&gw->hub, &i)) != NULL;)
        e->item.has_telemetry = false; /* perhaps stale */
    const char *k;
    void *v;
    ems_dash_device_t view;
    for (size_t i = 0; gw_map_next(&gw->devs, &i, &k, &v);) {
        const gw_dev_t *d = v;
        if (!gw_dash_device_view(gw, k, &view) || !(e = gw_hub_fleet_get(&gw->hub, k, true)))
            continue;
        e->item.online = view.online;
        e->item.since_ms = view.since_ms;
        if (d->has_last)
            ems_dash_fleet_item_set(&e->item, &d->last);
    }
    const gw_bus_presence_t *p;
    for (size_t i = 0; gw_bus_remote_next(gw->bus, &i, &k, &p);) {
        if (!gw_dash_device_view(gw, k, &view) || !(e = gw_hub_fleet_get(&gw->hub, k, true)))
            continue;
        e->item.online = view.online;
        e->item.since_ms = view.since_ms;
    }
}

static void fleet_subscribe(gw_dash_t *ds)
{
    gw_t *gw = ds->gw;
    ems_verr_t err;
    if (ds->subs.fleet)
        return;
    if (!gw->hub.nfleet)
        fleet_resync(gw);
    if (gw_hub_sub_fleet(&gw->hub, &ds->subs) < 0) {
        ems_verr_set(&err, "mode", "out of memory");
        send_error(ds, &err);
        return;
    }
    /* The snapshot at the next turn of the loop, a slice at a time as far
     * as the queue allows; what does not fit follows as the queue drains. */
    fleet_timer_update(gw, true);
}

void gw_dash_publish_remote(gw_t *gw, const char *device_id, const char *text, size_t len)
{
    static const char head[] = "{\"type\":\"telemetry\",\"packet\":";
    gw_dash_publish(gw, device_id, text, len);
    if (!gw->hub.nfleet || len < sizeof head || memcmp(text, head, sizeof head - 1) != 0)
        return;
    /* The gateway that had the packet wrapped the device's text as it came
     * (ems_dash_telemetry_encode): the packet is what lies between. */
    ems_telemetry_t t;
    const char *pkt = text + sizeof head - 1;
    size_t plen = len - (sizeof head - 1) - 1;
    if (text[len - 1] != '}' || ems_telemetry_scan(pkt, plen, &t) != 0) {
        ems_verr_t err;
        json_t *root = ems_jr_parse(text, len, &err);
        int rc = root ? ems_dash_telemetry_from_json(root, &t, &err) : EMS_EINVAL;
        json_decref(root);
        if (rc < 0)
            return;
    }
    if (strcmp(t.device_id, device_id) != 0 || (t.has_backfill && t.backfill))
        return;
    gw_dash_fleet_telemetry(gw, &t);
}

bool gw_dash_device_view(gw_t *gw, const char *device_id, ems_dash_device_t *e)
{
    memset(e, 0, sizeof *e);
    snprintf(e->device_id, sizeof e->device_id, "%s", device_id);
    const gw_dev_t *d = gw_dev_get(gw, device_id, false);
    const gw_bus_presence_t *rp = gw_bus_remote(gw->bus, device_id);
    if (d && d->conn) {
        e->online = true;
        e->since_ms = d->connected_ms;
    } else if (rp && rp->online) {
        e->online = true;
        e->since_ms = rp->since_ms;
    } else {
        /* An entry that never connected (a refused upgrade) is not news. */
        bool local = d && d->offline_ms;
        if (!local && !rp)
            return false;
        e->since_ms = local ? d->offline_ms : 0;
        if (rp && rp->since_ms > e->since_ms)
            e->since_ms = rp->since_ms;
    }
    if (!e->since_ms)
        e->since_ms = ems_time_now_ms();
    return true;
}

static void device_publish(gw_t *gw, const ems_dash_device_t *e)
{
    fleet_presence(gw, e);
    char buf[256];
    int n = ems_dash_device_encode(e, buf, sizeof buf);
    if (n > 0)
        gw_dash_publish(gw, e->device_id, buf, (size_t)n);
}

void gw_dash_device_event(gw_t *gw, const gw_dev_t *d)
{
    ems_dash_device_t e;
    if (gw_dash_device_view(gw, d->id, &e))
        device_publish(gw, &e);
}

void gw_dash_device_refresh(gw_t *gw, const char *device_id, const ems_dash_device_t *before)
{
    ems_dash_device_t e;
    if (!gw_dash_device_view(gw, device_id, &e))
        return;
    if (before && before->online == e.online && before->since_ms == e.since_ms)
        return;
    device_publish(gw, &e);
}

static void send_error(gw_dash_t *ds, const ems_verr_t *err)
{
    char buf[1600];
    int n = ems_dash_error_encode(err, buf, sizeof buf);
    if (n > 0)
        dash_send_text(ds, buf, (size_t)n);
}

/* After a subscribe: the state of what was asked for, so the page does not
 * wait for the next event to draw it. */
static void send_state(gw_dash_t *ds, const char *id)
{
    ems_dash_device_t e;
    if (!gw_dash_device_view(ds->gw, id, &e))
        return;
    char buf[256];
    int n = ems_dash_device_encode(&e, buf, sizeof buf);
    if (n > 0)
        dash_send_text(ds, buf, (size_t)n);
}

static void handle_sub(gw_dash_t *ds, const json_t *root)
{
    gw_t *gw = ds->gw;
    ems_dash_sub_t s;
    ems_verr_t err;
    if (ems_dash_sub_from_json(root, &s, &err) < 0) {
        ems_metric_inc(gw->m.invalid);
        send_error(ds, &err);
        return;
    }
    if (s.fleet) {
        if (s.unsubscribe)
            gw_hub_unsub_fleet(&gw->hub, &ds->subs);
        else
            fleet_subscribe(ds);
        fleet_timer_update(gw, false);
        return;
    }
    if (s.all) {
        if (s.unsubscribe) {
            gw_hub_unsub_all(&gw->hub, ds, &ds->subs);
            return;
        }
        if (gw_hub_sub_all(&gw->hub, ds, &ds->subs) < 0) {
            ems_verr_set(&err, "devices", "out of memory");
            send_error(ds, &err);
            return;
        }
        const char *k;
        void *v;
        for (size_t i = 0; gw_map_next(&gw->devs, &i, &k, &v) && !ds->dropping;)
            send_state(ds, k);
        /* Then the devices only other gateways have had (presence). */
        const gw_bus_presence_t *p;
        for (size_t i = 0; gw_bus_remote_next(gw->bus, &i, &k, &p) && !ds->dropping;) {
            const gw_dev_t *d = gw_dev_get(gw, k, false);
            if (!d || !(d->conn || d->offline_ms))
                send_state(ds, k);
        }
        return;
    }
    size_t n = ems_dash_sub_count(&s);
    for (size_t i = 0; i < n; i++) {
        const char *id = ems_dash_sub_device(&s, i);
        if (s.unsubscribe) {
            gw_hub_unsub(&gw->hub, ds, &ds->subs, id);
            continue;
        }
        int rc = gw_hub_sub(&gw->hub, ds, &ds->subs, id);
        if (rc < 0) {
            ems_verr_set(&err, "devices", "%s", rc == EMS_ENOSPC ? "too many subscriptions (use \"*\")"
                                                                  : "out of memory");
            send_error(ds, &err);
            return;
        }
        send_state(ds, id);
    }
}

static void dash_on_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    (void)binary;
    gw_dash_t *ds = ems_ws_user(ws);
    gw_t *gw = ds->gw;
    ems_metric_inc(gw->m.msgs_in[1]);
    ems_metric_add(gw->m.bytes_in[1], (double)len);
    ems_verr_t err;
    json_t *root = ems_jr_parse(data, len, &err);
    if (!root) {
        ems_metric_inc(gw->m.invalid);
        send_error(ds, &err);
        return;
    }
    ems_msg_kind_t kind = ems_message_identify(root, &err);
    if (kind == EMS_MSG_DASH_SUBSCRIBE) {
        handle_sub(ds, root);
    } else {
        ems_metric_inc(gw->m.invalid);
        if (kind != EMS_MSG_UNKNOWN)
            ems_verr_set(&err, "type",
                         "a dashboard sends only subscribe and unsubscribe here "
                         "(commands go to POST /api/devices/{id}/commands)");
        send_error(ds, &err);
    }
    json_decref(root);
}

static void dash_on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    gw_dash_t *ds = ems_ws_user(ws);
    gw_t *gw = ds->gw;
    gw_hub_remove(&gw->hub, ds, &ds->subs);
    fleet_timer_update(gw, false);
    if (ds->prev)
        ds->prev->next = ds->next;
    else
        gw->dashes = ds->next;
    if (ds->next)
        ds->next->prev = ds->prev;
    gw->ndashes--;
    ems_log_info("dashboard of %s closed (%s, code sent %d, received %d)", ds->user,
                 info->status ? ems_strerror(info->status) : "normal", info->code_sent,
                 info->code_received);
    free(ds);
}

static const ems_ws_callbacks_t dash_cbs = {NULL, dash_on_message, dash_on_close};

static void refuse(gw_t *gw, ems_server_req_t *req, int status, const char *peer, const char *why)
{
    ems_metric_inc(gw->m.refused[1]);
    ems_log_warn("dashboard from %s refused: %d %s", peer, status, why);
    if (status == 426) {
        ems_server_respond(req, 426, "application/json", "Sec-WebSocket-Version: 13\r\n",
                           "{\"error\":\"unsupported WebSocket version\"}", 40);
        return;
    }
    gw_reply_error(req, status, why, NULL);
}

void gw_dash_upgrade(gw_t *gw, ems_server_req_t *req)
{
    const ems_http_msg_t *m = ems_server_req_msg(req);
    char peer[64] = "?";
    ems_conn_t *c = ems_server_req_conn(req);
    if (c)
        ems_conn_peer(c, peer, sizeof peer);
    const char *why;
    int st = ems_http_ws_check_request(m, &why);
    if (st) {
        refuse(gw, req, st, peer, why);
        return;
    }
    gw_session_t s;
    if (!gw_req_session(gw, req, &s)) {
        refuse(gw, req, 401, peer, "no valid session (log in first)");
        return;
    }
    const char *origin = ems_http_msg_header(m, "Origin");
    if (!gw_origin_ok(gw, origin, ems_http_msg_header(m, "Host"))) {
        char w[300];
        snprintf(w, sizeof w, "foreign Origin %.200s", origin);
        refuse(gw, req, 403, peer, w);
        return;
    }
    if (gw->ndevconns + gw->ndashes >= (size_t)gw->cfg.max_connections) {
        refuse(gw, req, 429, peer, "connection limit reached");
        return;
    }
    gw_dash_t *ds = calloc(1, sizeof *ds);
    if (!ds) {
        refuse(gw, req, 503, peer, "out of memory");
        return;
    }
    ds->gw = gw;
    snprintf(ds->user, sizeof ds->user, "%s", s.user);
    ds->role = s.role;
    ems_ws_options_t o;
    ems_ws_options_default(&o);
    o.max_message = (size_t)gw->cfg.dashboard_max_message;
    o.max_send_queue = (size_t)gw->cfg.dashboard_send_queue;
    o.ping_interval_ms = (unsigned)(gw->cfg.ping_interval_s * 1000);
    o.idle_timeout_ms = (unsigned)(gw->cfg.idle_timeout_s * 1000);
    ems_ws_t *ws;
    if (ems_server_upgrade(req, &o, &dash_cbs, ds, NULL, &ws) < 0) {
        free(ds);
        return;
    }
    ds->ws = ws;
    ds->next = gw->dashes;
    if (gw->dashes)
        gw->dashes->prev = ds;
    gw->dashes = ds;
    gw->ndashes++;
    ems_metric_inc(gw->m.conns_total[1]);
    ems_log_info("dashboard of %s (%s) connected from %s", s.user, ems_auth_role_name(s.role),
                 peer);
}

void gw_dash_close_all(gw_t *gw, uint16_t code, const char *reason)
{
    for (gw_dash_t *ds = gw->dashes; ds; ds = ds->next)
        ems_ws_close(ds->ws, code, reason);
}
