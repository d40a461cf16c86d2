/* gw_bus.c: several gateways over NATS (see gw_bus.h, docs/scaling.md). */
#include "gw.h"

#include "device_info.h"
#include "error.h"
#include "jsonw.h"
#include "log.h"
#include "timefmt.h"

#include <nats/adapters/libuv.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEARTBEAT_MS 2000   /* ems.gw.<id>.alive this often */
#define GW_DEAD_MS 6000     /* another gateway silent this long is gone */
#define FORWARD_ACK_MS 3000 /* a forwarded command must be acknowledged within this */
#define CONNECT_TIMEOUT_MS 1000
#define RETRY_MAX_MS 5000  /* first connection: retried with backoff up to this */
#define INTEREST_MS 6000   /* an interest announcement holds this long (refreshed every 2 s) */
#define INTEREST_CHUNK 500 /* device ids per ems.interest message */
#define RELAY_MAX 20000    /* forwarded commands remembered by the delivering gateway */
#define ROSTER_CHUNK 1000  /* device ids per roster message */
/* A gateway's complete list of devices, after its presence messages. On the
 * presence subscription, so each receiver gets it in order with them ('~'
 * is never in a device id). */
#define ROSTER_SUBJECT "ems.presence.~roster"
#define BUS_URLS_MAX 8 /* servers in nats_url */

/* What a libnats thread hands to the loop. */
typedef struct bus_item {
    int kind; /* 0 message, 1 disconnected, 2 reconnected, 3 closed */
    natsMsg *msg;
    struct bus_item *next;
} bus_item_t;

typedef struct {
    int64_t last_mono;
    int64_t boot_ms; /* its "boot" (wall clock of its bus start), 0 unknown */
    bool alive;
} peer_t;

typedef struct {
    char gateway[GW_BUS_ID_MAX + 1];
    int64_t deadline_mono;
} pending_t;

typedef struct {
    char origin[GW_BUS_ID_MAX + 1];
    int64_t expires_mono;
    /* what it takes to adopt the command if the origin dies */
    ems_command_t cmd;
    char device_id[EMS_DEVICE_ID_MAX + 1];
    gw_cmd_status_t last; /* sent, or accepted once the device said so */
} relay_t;

struct gw_bus {
    gw_t *gw;
    char id[GW_BUS_ID_MAX + 1];
    int64_t boot_ms; /* wall clock at start: tells the others this is a new run */
    natsOptions *opts;
    natsConnection *nc;
    natsSubscription *subs[6]; /* destroyed after the connection closed */
    bool up;                   /* connected (loop's view, from the handlers) */
    bool closing;
    bool logged_down; /* "unreachable" said once per outage */
    int64_t next_try_mono;
    int64_t retry_ms;
    struct probe *probe;     /* TCP reachability check before a first connect */
    /* nats_url: one or more servers of one NATS cluster, comma-separated */
    char urls[GW_PATH_MAX];         /* a copy, cut at the commas */
    const char *url[BUS_URLS_MAX];  /* into urls */
    char host[BUS_URLS_MAX][256], port[BUS_URLS_MAX][8]; /* for the probe */
    int nurl;
    int probe_idx;                  /* the server the probe tries */
    char shown[GW_PATH_MAX + 8 * BUS_URLS_MAX]; /* nats_url for logs, passwords masked */
    int64_t next_hb_mono;

    uv_async_t wake;
    uv_mutex_t mu;
    bus_item_t *head, *tail; /* guarded by mu */

    gw_map_t remote;  /* device id -> gw_bus_presence_t */
    gw_map_t peers;   /* gateway id -> peer_t */
    gw_map_t pending; /* command id -> pending_t: forwarded, not acknowledged */
    gw_map_t relays;  /* command id -> relay_t: delivered here for another gateway */
    /* Live telemetry across gateways (subscribe by interest). */
    gw_map_t interest;          /* device id -> until_mono: others' dashboards watch it */
    int64_t all_until_mono;     /* another gateway's dashboard watches every device */
    gw_map_t tel_subs;          /* device id -> sub: ems.tel.<id> for our dashboards */
    natsSubscription *tel_all;  /* ems.tel.> while one of our dashboards watches "*" */
    bool interest_dirty;        /* our watched set changed: announce it now */
    int64_t next_interest_mono; /* announce again (refresh) then */
    /* Metrics (registered only when the bus is on). */
    ems_metric_t *m_forwarded, *m_relayed, *m_unacked, *m_delivered, *m_tel_out, *m_tel_in;
};

/* ------------------------------------------------------------ small helpers */

static void *map_take(gw_map_t *m, const char *key)
{
    /* gw_map keys point into the values; free the value after deleting. */
    return gw_map_del(m, key);
}

typedef struct {
    char key[EMS_COMMAND_ID_MAX + 1];
    union {
        pending_t p;
        relay_t r;
    } u;
} keyed_t;

static void *keyed_get(gw_map_t *m, const char *key)
{
    keyed_t *k = gw_map_get(m, key);
    return k ? &k->u : NULL;
}

static void *keyed_put(gw_map_t *m, const char *key)
{
    keyed_t *k = gw_map_get(m, key);
    if (k)
        return &k->u;
    k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    snprintf(k->key, sizeof k->key, "%s", key);
    if (gw_map_put(m, k->key, k) != 0) {
        free(k);
        return NULL;
    }
    return &k->u;
}

static void keyed_del(gw_map_t *m, const char *key)
{
    free(map_take(m, key));
}

static void map_free_all(gw_map_t *m)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(m, &i, &k, &v);)
        free(v);
    gw_map_free(m);
}

/* Entries with a string key copied in front of their value. */
typedef struct {
    char key[GW_BUS_ID_MAX + 1];
    union {
        gw_bus_presence_t pr;
        peer_t peer;
        int64_t until_mono;    /* interest: another gateway watches it until then */
        natsSubscription *sub; /* tel_subs: our subscription to its telemetry */
    } u;
} named_t;

static void *named_put(gw_map_t *m, const char *key)
{
    named_t *n = gw_map_get(m, key);
    if (n)
        return &n->u;
    n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    snprintf(n->key, sizeof n->key, "%s", key);
    if (gw_map_put(m, n->key, n) != 0) {
        free(n);
        return NULL;
    }
    return &n->u;
}

static void *named_get(const gw_map_t *m, const char *key)
{
    named_t *n = gw_map_get(m, key);
    return n ? &n->u : NULL;
}

/* A NATS subject token may not hold '.', '*', '>' or white space. */
static void make_token(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; in[n] && n + 1 < cap; n++) {
        char c = in[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == ':';
        out[n] = ok ? c : '_';
    }
    out[n] = '\0';
}

static void publish(gw_bus_t *b, const char *subject, const char *data, size_t len)
{
    if (!b->nc || !b->up)
        return;
    natsStatus s = natsConnection_Publish(b->nc, subject, data, (int)len);
    if (s != NATS_OK)
        ems_log_debug("bus: publish on %s: %s", subject, natsStatus_GetText(s));
}

static void publish_json(gw_bus_t *b, const char *subject, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s) {
        publish(b, subject, s, strlen(s));
        free(s);
    }
}

/* ------------------------------------------------------------ libnats threads */

static void push(gw_bus_t *b, int kind, natsMsg *msg)
{
    bus_item_t *it = calloc(1, sizeof *it);
    if (!it) {
        natsMsg_Destroy(msg);
        return;
    }
    it->kind = kind;
    it->msg = msg;
    uv_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->wake);
}

static void on_nats_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    push(closure, 0, msg);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    push(closure, 1, NULL);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    push(closure, 2, NULL);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    push(closure, 3, NULL);
}

/* Reconnect delay: 200 ms doubling to 2 s, plus up to 100 ms of jitter so
 * that gateways do not all knock at once. Runs on libnats's thread. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    (void)closure;
    int shift = attempts < 4 ? attempts : 4;
    int64_t ms = (int64_t)100 << shift;
    if (ms > 2000)
        ms = 2000;
    return ms + rand() % 100;
}

/* ------------------------------------------------------------ subjects */

/* "ems.presence.<id>", "ems.tel.<id>": a device id may hold '.', which NATS
 * reads as a token separator (and "a..b" or a leading '.' would make an
 * invalid subject), so in a subject each '.' of an id is written '%', a
 * character ids never hold (ems_device_id_valid). */
static void device_subject(const char *prefix, const char *device_id, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (const char *p = device_id; *p && n + 1 < cap; p++)
        out[n++] = *p == '.' ? '%' : *p;
    out[n < cap ? n : cap - 1] = '\0';
}

/* The id back from a subject's last part ('%' -> '.'); false if too long. */
static bool device_from_subject(const char *token, char *out, size_t cap)
{
    size_t n = 0;
    for (; token[n]; n++) {
        if (n + 1 >= cap)
            return false;
        out[n] = token[n] == '%' ? '.' : token[n];
    }
    out[n] = '\0';
    return true;
}

/* ------------------------------------------------------------ presence */

/* `info_json`: the device's normalised device_info (or NULL), so that every
 * gateway's GET /api/devices shows its firmware and limits. */
static void presence_publish(gw_bus_t *b, const char *device_id, bool online, int64_t at_ms,
                             const char *info_json)
{
    char subj[160];
    device_subject("ems.presence.", device_id, subj, sizeof subj);
    json_t *o = json_pack("{sssssbsI}", "gateway", b->id, "device_id", device_id, "online", online,
                          "at", (json_int_t)at_ms);
    json_t *info = online && info_json ? json_loads(info_json, 0, NULL) : NULL;
    if (o && json_is_object(info))
        json_object_set(o, "info", info);
    json_decref(info);
    publish_json(b, subj, o);
}

static json_t *roster_new(gw_bus_t *b, int64_t at)
{
    return json_pack("{sssIsbs[]}", "gateway", b->id, "at", (json_int_t)at, "last", 0, "devices");
}

/* Every local device's presence again (after a (re)connect, or when another
 * gateway asks), then the roster: the complete list, in chunks, the last
 * one marked. A device that left while the bus was down (its "offline"
 * could not be sent) is missing from it, and the others drop it; without
 * the roster they would show it online here until this gateway's next
 * restart, since a blip shorter than GW_DEAD_MS misses no heartbeat. */
static void presence_all(gw_bus_t *b)
{
    int64_t at = ems_time_now_ms();
    json_t *r = NULL;
    for (gw_devconn_t *dc = b->gw->devconns; dc; dc = dc->next) {
        if (!dc->dev || dc->dev->conn != dc)
            continue;
        presence_publish(b, dc->dev->id, true, dc->connected_ms, dc->dev->info_json);
        if (!r && !(r = roster_new(b, at)))
            return;
        json_array_append_new(json_object_get(r, "devices"), json_string(dc->dev->id));
        if (json_array_size(json_object_get(r, "devices")) >= ROSTER_CHUNK) {
            publish_json(b, ROSTER_SUBJECT, r);
            r = NULL;
        }
    }
    if (!r && !(r = roster_new(b, at)))
        return;
    json_object_set_new(r, "last", json_true());
    publish_json(b, ROSTER_SUBJECT, r);
}

static void sync_request(gw_bus_t *b, const char *to)
{
    json_t *o = json_pack("{ss}", "from", b->id);
    if (to)
        json_object_set_new(o, "to", json_string(to));
    publish_json(b, "ems.sync.presence", o);
}

void gw_bus_device_presence(gw_t *gw, const gw_dev_t *d, bool online)
{
    gw_bus_t *b = gw->bus;
    if (!b)
        return;
    if (online) {
        /* The device's connection here is its newest: whatever another
         * gateway announced before is over, even if that gateway died
         * before saying so. Else, once the device leaves here, it would be
         * shown online there until that gateway's heartbeat is missed. */
        gw_bus_presence_t *p = named_get(&b->remote, d->id);
        if (p && p->online) {
            p->online = false;
            p->since_ms = d->connected_ms;
        }
    }
    presence_publish(b, d->id, online, online ? d->connected_ms : ems_time_now_ms(),
                     d->info_json);
}

const gw_bus_presence_t *gw_bus_remote(const gw_bus_t *b, const char *device_id)
{
    return b ? named_get(&b->remote, device_id) : NULL;
}

bool gw_bus_remote_next(const gw_bus_t *b, size_t *i, const char **device_id,
                        const gw_bus_presence_t **p)
{
    void *v;
    if (!b || !gw_map_next(&b->remote, i, device_id, &v))
        return false;
    *p = &((named_t *)v)->u.pr;
    return true;
}

/* Applies one presence message to the map; true when it says the device is
 * now online on `gwid`. */
static bool presence_apply(gw_bus_t *b, const char *dev, const char *gwid, bool online, int64_t at)
{
    gw_bus_presence_t *p = named_get(&b->remote, dev);
    if (online) {
        /* A newer connection elsewhere wins; an older one announced late
         * (a gateway that has not yet noticed that the device left it)
         * does not, whether the newer one is on a third gateway or here. */
        if (p && p->online && strcmp(p->gateway, gwid) != 0 && at < p->since_ms)
            return false;
        const gw_dev_t *d = gw_dev_get(b->gw, dev, false);
        if (d && d->conn && at < d->connected_ms)
            return false;
        if (!p && !(p = named_put(&b->remote, dev)))
            return false;
        snprintf(p->gateway, sizeof p->gateway, "%s", gwid);
        p->online = true;
        p->since_ms = at;
        return true;
    }
    if (p && strcmp(p->gateway, gwid) == 0) {
        /* Only the gateway that had the device can say it went away. */
        p->online = false;
        p->since_ms = at;
    }
    return false;
}

static void on_presence(gw_bus_t *b, json_t *o)
{
    const char *gwid = json_string_value(json_object_get(o, "gateway"));
    const char *dev = json_string_value(json_object_get(o, "device_id"));
    json_t *on = json_object_get(o, "online");
    json_int_t at = json_integer_value(json_object_get(o, "at"));
    if (!gwid || !dev || !json_is_boolean(on) || strcmp(gwid, b->id) == 0 ||
        !ems_device_id_valid(dev, strlen(dev)) || strlen(gwid) > GW_BUS_ID_MAX)
        return;
    /* Dashboards here watching the device see the change (when it changes
     * their view: a device connected here stays online here). */
    ems_dash_device_t before;
    bool known = gw_dash_device_view(b->gw, dev, &before);
    bool arrived = presence_apply(b, dev, gwid, json_is_true(on), at);
    gw_bus_presence_t *p = named_get(&b->remote, dev);
    json_t *info = json_object_get(o, "info");
    if (p && p->online && strcmp(p->gateway, gwid) == 0 && json_is_object(info) &&
        json_object_size(info) <= 16) {
        char *s = json_dumps(info, JSON_COMPACT);
        if (s && strlen(s) < EMS_DEVICE_INFO_JSON_MAX) {
            free(p->info_json);
            p->info_json = s;
        } else {
            free(s);
        }
    }
    gw_dash_device_refresh(b->gw, dev, known ? &before : NULL);
    /* Commands queued here with a TTL go out now (forwarded), those still
     * `sent` go again, and the device is asked again for its answer to
     * those it accepted: an answer relayed while the bus was down, or
     * while the device moved, is lost otherwise. This runs on every
     * re-announcement (after a NATS outage: the sync), and the edge answers
     * a repeated command_id without executing it again. */
    if (arrived) {
        gw_cmds_online(b->gw->cmds, dev, ems_time_now_ms());
        gw_cmds_reask(b->gw->cmds, dev);
    }
}

/* ems.presence.~roster: another gateway's complete list of devices. Its
 * entries here that no chunk listed are over (their "offline" was lost). */
static void on_roster(gw_bus_t *b, json_t *o)
{
    const char *gwid = json_string_value(json_object_get(o, "gateway"));
    json_int_t at = json_integer_value(json_object_get(o, "at"));
    if (!gwid || strcmp(gwid, b->id) == 0 || strlen(gwid) > GW_BUS_ID_MAX || at <= 0)
        return;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "devices"), i, v)
    {
        const char *id = json_string_value(v);
        gw_bus_presence_t *p = id ? named_get(&b->remote, id) : NULL;
        if (p && p->online && strcmp(p->gateway, gwid) == 0)
            p->roster_ms = at;
    }
    if (!json_is_true(json_object_get(o, "last")))
        return;
    size_t n = 0;
    const char *k;
    void *pv;
    for (size_t j = 0; gw_map_next(&b->remote, &j, &k, &pv);) {
        gw_bus_presence_t *p = &((named_t *)pv)->u.pr;
        if (!p->online || strcmp(p->gateway, gwid) != 0 || p->roster_ms == at || p->since_ms > at)
            continue;
        ems_dash_device_t before;
        bool known = gw_dash_device_view(b->gw, k, &before);
        p->online = false;
        p->since_ms = at;
        gw_dash_device_refresh(b->gw, k, known ? &before : NULL);
        n++;
    }
    if (n)
        ems_log_info("bus: gateway %s no longer has %zu device(s) it had announced (they left "
                     "while their departure could not be sent)",
                     gwid, n);
}

/* ------------------------------------------------------------ peers */

/* A gateway started again (same id, new run; e.g. killed and restarted
 * by systemd faster than GW_DEAD_MS, so its heartbeat was never missed):
 * what its previous run announced is over. Every connection of the new run
 * began after its boot, so only older entries are dropped, whatever the
 * order in which its heartbeat and its new presence messages arrive. */
static void peer_restarted(gw_bus_t *b, const char *gwid, int64_t boot_ms)
{
    size_t n = 0;
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&b->remote, &i, &k, &v);) {
        gw_bus_presence_t *pr = &((named_t *)v)->u.pr;
        if (!pr->online || strcmp(pr->gateway, gwid) != 0 || pr->since_ms >= boot_ms)
            continue;
        ems_dash_device_t before;
        bool known = gw_dash_device_view(b->gw, k, &before);
        pr->online = false;
        pr->since_ms = boot_ms;
        gw_dash_device_refresh(b->gw, k, known ? &before : NULL);
        n++;
    }
    if (n)
        ems_log_warn("bus: gateway %s started again; %zu device(s) of its previous run marked "
                     "offline",
                     gwid, n);
}

static void on_alive(gw_bus_t *b, json_t *o)
{
    const char *gwid = json_string_value(json_object_get(o, "gateway"));
    if (!gwid || strcmp(gwid, b->id) == 0 || strlen(gwid) > GW_BUS_ID_MAX)
        return;
    peer_t *p = named_get(&b->peers, gwid);
    bool was_alive = p && p->alive;
    if (!p && !(p = named_put(&b->peers, gwid)))
        return;
    p->last_mono = ems_time_mono_ms();
    p->alive = true;
    json_int_t boot = json_integer_value(json_object_get(o, "boot"));
    if (boot > 0 && boot != p->boot_ms) {
        p->boot_ms = boot;
        peer_restarted(b, gwid, boot);
    }
    if (!was_alive) {
        ems_log_info("bus: gateway %s is here", gwid);
        /* It may have devices we marked offline while it was silent. */
        sync_request(b, gwid);
    }
}

/* A gateway that sent us a command is alive now; one we had not heard of
 * yet is tracked from here (its heartbeat will follow, or its silence will
 * be noticed after GW_DEAD_MS). */
static void peer_seen(gw_bus_t *b, const char *gwid)
{
    peer_t *p = named_get(&b->peers, gwid);
    if (!p && !(p = named_put(&b->peers, gwid)))
        return;
    p->last_mono = ems_time_mono_ms();
    p->alive = true;
}

/* A gateway is gone: the commands it created that were delivered here and
 * are still open become ours, so the device's answers (or a time-out) still
 * reach the audit trail and the dashboards. (A gateway that is only cut
 * off from the bus also finishes them itself: both records then end up in
 * the trail, the newest status wins in `commands`; docs/scaling.md.) */
static void adopt_commands_of(gw_bus_t *b, const char *origin)
{
    const char *k;
    void *v;
    size_t n = 0;
    int64_t now = ems_time_now_ms();
    for (size_t i = 0; gw_map_next(&b->relays, &i, &k, &v);) {
        relay_t *r = &((keyed_t *)v)->u.r;
        if (strcmp(r->origin, origin) != 0)
            continue;
        if (gw_cmds_adopt(b->gw->cmds, &r->cmd, r->device_id, r->last, now) == 0)
            n++;
        keyed_del(&b->relays, k);
        i = 0; /* the table changed: start over */
    }
    if (n)
        ems_log_warn("bus: took over %zu open command(s) of gateway %s, which is gone", n, origin);
}

static void peers_check(gw_bus_t *b, int64_t mono)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&b->peers, &i, &k, &v);) {
        peer_t *p = &((named_t *)v)->u.peer;
        if (!p->alive || mono - p->last_mono < GW_DEAD_MS)
            continue;
        p->alive = false;
        size_t n = 0;
        const char *dk;
        void *dv;
        for (size_t j = 0; gw_map_next(&b->remote, &j, &dk, &dv);) {
            gw_bus_presence_t *pr = &((named_t *)dv)->u.pr;
            if (pr->online && strcmp(pr->gateway, k) == 0) {
                ems_dash_device_t before;
                bool known = gw_dash_device_view(b->gw, dk, &before);
                pr->online = false;
                pr->since_ms = ems_time_now_ms();
                gw_dash_device_refresh(b->gw, dk, known ? &before : NULL);
                n++;
            }
        }
        ems_log_warn("bus: gateway %s silent for %d s; its %zu device(s) marked offline", k,
                     GW_DEAD_MS / 1000, n);
        adopt_commands_of(b, k);
    }
}

/* ------------------------------------------------------------ commands */

int gw_bus_forward_command(gw_t *gw, const gw_cmd_t *c)
{
    gw_bus_t *b = gw->bus;
    if (!b)
        return EMS_ENOENT;
    const gw_bus_presence_t *p = named_get(&b->remote, c->device_id);
    if (!p || !p->online)
        return EMS_ENOENT;
    if (!b->up)
        return EMS_ECLOSED;
    char wire[EMS_COMMAND_JSON_MAX];
    int n = ems_command_encode(&c->cmd, wire, sizeof wire);
    if (n < 0)
        return n;
    json_error_t je;
    json_t *cmd = json_loadb(wire, (size_t)n, 0, &je);
    if (!cmd)
        return EMS_ENOMEM;
    pending_t *pd = keyed_put(&b->pending, c->cmd.command_id);
    if (!pd) {
        json_decref(cmd);
        return EMS_ENOMEM;
    }
    snprintf(pd->gateway, sizeof pd->gateway, "%s", p->gateway);
    pd->deadline_mono = ems_time_mono_ms() + FORWARD_ACK_MS;
    char subj[160];
    snprintf(subj, sizeof subj, "ems.cmd.%s", p->gateway);
    /* The delivering gateway drops it after the ack deadline: a command this
     * gateway already failed must not reach the device late. */
    publish_json(b, subj,
                 json_pack("{sssssOsI}", "from", b->id, "device_id", c->device_id, "command", cmd,
                           "deliver_by", (json_int_t)(ems_time_now_ms() + FORWARD_ACK_MS)));
    json_decref(cmd);
    ems_metric_inc(b->m_forwarded);
    ems_log_info("command %s for %s: forwarded to gateway %s", c->cmd.command_id, c->device_id,
                 p->gateway);
    return 0;
}

static void cmdstatus_send(gw_bus_t *b, const char *to, json_t *o)
{
    char subj[160];
    snprintf(subj, sizeof subj, "ems.cmdstatus.%s", to);
    publish_json(b, subj, o);
}

/* ems.cmd.<us>: another gateway's command for one of our devices. */
static void on_cmd(gw_bus_t *b, json_t *o)
{
    gw_t *gw = b->gw;
    const char *from = json_string_value(json_object_get(o, "from"));
    const char *dev = json_string_value(json_object_get(o, "device_id"));
    json_t *jc = json_object_get(o, "command");
    if (!from || !dev || !json_is_object(jc) || strlen(from) > GW_BUS_ID_MAX ||
        strlen(dev) > EMS_DEVICE_ID_MAX)
        return;
    gw_cmd_t tmp;
    memset(&tmp, 0, sizeof tmp);
    ems_verr_t err;
    if (ems_command_from_json(jc, &tmp.cmd, &err) < 0) {
        ems_log_warn("bus: invalid command from gateway %s: %s", from, err.reason);
        return;
    }
    snprintf(tmp.device_id, sizeof tmp.device_id, "%s", dev);
    json_int_t by = json_integer_value(json_object_get(o, "deliver_by"));
    if (by && ems_time_now_ms() > by) {
        ems_log_warn("bus: command %s for %s from gateway %s arrived after its deadline: dropped",
                     tmp.cmd.command_id, dev, from);
        return;
    }
    int rc = gw_device_send_command(gw, &tmp);
    char msg[200] = "";
    if (rc == 0) {
        /* Bounded: past RELAY_MAX a new command is still delivered, but its
         * answers stay here and the origin times it out. */
        bool room = gw_map_get(&b->relays, tmp.cmd.command_id) || b->relays.len < RELAY_MAX;
        relay_t *r = room ? keyed_put(&b->relays, tmp.cmd.command_id) : NULL;
        if (r) {
            snprintf(r->origin, sizeof r->origin, "%s", from);
            peer_seen(b, from); /* so that its death is noticed even before its first heartbeat */
            r->cmd = tmp.cmd;
            snprintf(r->device_id, sizeof r->device_id, "%s", dev);
            if (r->last != GW_CMD_ACCEPTED)
                r->last = GW_CMD_SENT;
            r->expires_mono = ems_time_mono_ms() +
                              (gw->cfg.command_timeout_s + gw->cfg.command_complete_s + 60) * 1000;
        }
        ems_metric_inc(b->m_delivered);
        ems_log_info("command %s for %s: delivered for gateway %s", tmp.cmd.command_id, dev, from);
    } else if (rc == EMS_ENOENT) {
        snprintf(msg, sizeof msg, "device %s is no longer connected to gateway %s", dev, b->id);
    } else {
        snprintf(msg, sizeof msg, "device %s is not reading on gateway %s (send queue full)", dev,
                 b->id);
    }
    json_t *ack = json_pack("{sssssssssb}", "type", "ack", "command_id", tmp.cmd.command_id,
                            "device_id", dev, "gateway", b->id, "ok", rc == 0);
    if (msg[0])
        json_object_set_new(ack, "message", json_string(msg));
    cmdstatus_send(b, from, ack);
}

bool gw_bus_relay_result(gw_t *gw, const char *device_id, const char *command_id,
                         const json_t *root, bool final)
{
    gw_bus_t *b = gw->bus;
    relay_t *r = b ? keyed_get(&b->relays, command_id) : NULL;
    if (!r)
        return false;
    cmdstatus_send(b, r->origin,
                   json_pack("{sssssssO}", "type", "result", "device_id", device_id, "gateway",
                             b->id, "result", (json_t *)root));
    ems_metric_inc(b->m_relayed);
    if (!final)
        r->last = GW_CMD_ACCEPTED;
    if (final)
        keyed_del(&b->relays, command_id);
    return true;
}

/* ems.cmdstatus.<us>: the delivering gateway's acknowledgement or a relayed
 * answer of the device, applied to our tracker exactly as a local one. */
static void on_cmdstatus(gw_bus_t *b, json_t *o)
{
    gw_t *gw = b->gw;
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *dev = json_string_value(json_object_get(o, "device_id"));
    if (!type || !dev)
        return;
    if (strcmp(type, "ack") == 0) {
        const char *id = json_string_value(json_object_get(o, "command_id"));
        if (!id || !keyed_get(&b->pending, id))
            return;
        keyed_del(&b->pending, id);
        const gw_cmd_t *c = gw_cmds_find(gw->cmds, id);
        /* A refused re-ask (gw_cmds_reask) leaves an accepted command to
         * its own deadline: the device is executing it. */
        if (!json_is_true(json_object_get(o, "ok")) && !(c && c->status == GW_CMD_ACCEPTED)) {
            const char *m = json_string_value(json_object_get(o, "message"));
            gw_cmds_fail(gw->cmds, id, "GATEWAY_LOST_DEVICE",
                         m ? m : "the device's gateway refused it", ems_time_now_ms());
        }
        return;
    }
    if (strcmp(type, "result") != 0)
        return;
    ems_command_result_t r;
    ems_verr_t err;
    if (ems_command_result_from_json(json_object_get(o, "result"), &r, &err) < 0)
        return;
    keyed_del(&b->pending, r.command_id); /* an answer is an acknowledgement too */
    int rc = gw_cmds_result(gw->cmds, dev, &r, ems_time_now_ms());
    if (rc == EMS_EPERM)
        ems_log_warn("bus: device %s answered command %s of another device: ignored", dev,
                     r.command_id);
    else if (rc == EMS_EINVAL)
        ems_log_info("bus: late or out-of-order %s for command %s: ignored",
                     ems_result_status_name(r.status), r.command_id);
}

static void pending_check(gw_bus_t *b, int64_t mono)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&b->pending, &i, &k, &v);) {
        keyed_t *e = v;
        if (mono < e->u.p.deadline_mono)
            continue;
        char id[EMS_COMMAND_ID_MAX + 1], msg[240];
        snprintf(id, sizeof id, "%s", e->key);
        const gw_cmd_t *c = gw_cmds_find(b->gw->cmds, id);
        if (c && c->status == GW_CMD_ACCEPTED) {
            /* A re-ask (gw_cmds_reask) nobody acknowledged: the device is
             * executing the command; its own deadline applies. */
            keyed_del(&b->pending, id);
            i = 0;
            continue;
        }
        snprintf(msg, sizeof msg,
                 "gateway %s, which has the device, did not acknowledge the command within "
                 "%d s (message bus)",
                 e->u.p.gateway, FORWARD_ACK_MS / 1000);
        keyed_del(&b->pending, id);
        i = 0; /* the table changed: start over (it is small) */
        ems_metric_inc(b->m_unacked);
        gw_cmds_fail(b->gw->cmds, id, "GATEWAY_UNREACHABLE", msg, ems_time_now_ms());
    }
}

static void relays_check(gw_bus_t *b, int64_t mono)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&b->relays, &i, &k, &v);) {
        keyed_t *e = v;
        if (mono >= e->u.r.expires_mono) {
            keyed_del(&b->relays, e->key);
            i = 0;
        }
    }
}

/* ------------------------------------------------------------ live telemetry
 *
 * Subscribe by interest: a gateway whose dashboards watch device X
 * subscribes to ems.tel.X (ems.tel.> for a "*" dashboard) and announces the
 * ids it watches on ems.interest every 2 s and at once when they change.
 * The gateway holding X publishes X's live dashboard messages on ems.tel.X
 * only while some gateway's announcement for X (or for "*") is less than
 * INTEREST_MS old, so telemetry nobody watches never enters the bus. */

bool gw_bus_wants_telemetry(const gw_bus_t *b, const char *device_id)
{
    if (!b || !b->up)
        return false;
    int64_t mono = ems_time_mono_ms();
    if (mono < b->all_until_mono)
        return true;
    const int64_t *until = named_get(&b->interest, device_id);
    return until && mono < *until;
}

void gw_bus_dash_message(gw_t *gw, const char *device_id, const char *msg, size_t len)
{
    gw_bus_t *b = gw->bus;
    if (!b)
        return;
    char subj[160];
    device_subject("ems.tel.", device_id, subj, sizeof subj);
    publish(b, subj, msg, len);
}

void gw_bus_telemetry(gw_t *gw, const char *device_id, const char *msg, size_t len)
{
    gw_bus_t *b = gw->bus;
    if (!b)
        return;
    char subj[160];
    device_subject("ems.tel.", device_id, subj, sizeof subj);
    publish(b, subj, msg, len);
    ems_metric_inc(b->m_tel_out);
}

static void on_interest(gw_bus_t *b, json_t *o)
{
    const char *from = json_string_value(json_object_get(o, "from"));
    if (!from || strcmp(from, b->id) == 0)
        return;
    int64_t until = ems_time_mono_ms() + INTEREST_MS;
    if (json_is_true(json_object_get(o, "all")))
        b->all_until_mono = until;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "devices"), i, v)
    {
        const char *id = json_string_value(v);
        if (!id || !ems_device_id_valid(id, strlen(id)))
            continue;
        int64_t *u = named_put(&b->interest, id);
        if (u)
            *u = until;
    }
}

/* Announces what our dashboards watch (in chunks). */
static void interest_publish(gw_bus_t *b)
{
    gw_hub_t *h = &b->gw->hub;
    json_t *o = NULL;
    const char *k;
    void *v;
    for (size_t i = 0;;) {
        bool more = gw_map_next(&b->tel_subs, &i, &k, &v);
        if (more) {
            if (!o)
                o = json_pack("{sssbs[]}", "from", b->id, "all", gw_hub_wants_all(h), "devices");
            json_array_append_new(json_object_get(o, "devices"), json_string(k));
        }
        if (o && (!more || json_array_size(json_object_get(o, "devices")) >= INTEREST_CHUNK)) {
            publish_json(b, "ems.interest", o);
            o = NULL;
        }
        if (!more)
            break;
    }
    if (gw_hub_wants_all(h) && b->tel_subs.len == 0)
        publish_json(b, "ems.interest", json_pack("{sssbs[]}", "from", b->id, "all", 1, "devices"));
}

static void tel_unsub(natsSubscription *sub)
{
    if (sub) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
}

static void tel_sub(gw_bus_t *b, named_t *n)
{
    char subj[160];
    device_subject("ems.tel.", n->key, subj, sizeof subj);
    if (natsConnection_Subscribe(&n->u.sub, b->nc, subj, on_nats_msg, b) != NATS_OK)
        n->u.sub = NULL;
}

/* Brings our ems.tel.* subscriptions in line with what our dashboards
 * watch (1 s tick). tel_subs holds every device our dashboards watch by
 * name (they are announced as interest); each has its own subscription
 * unless a "*" dashboard made us subscribe to ems.tel.>, which alone must
 * then carry everything (NATS would deliver a message once per matching
 * subscription). */
static void tel_sync(gw_bus_t *b)
{
    gw_hub_t *h = &b->gw->hub;
    const char *k;
    void *v;
    bool want_all = gw_hub_wants_all(h); /* "*" or the fleet view */
    if (want_all != (b->tel_all != NULL)) {
        if (want_all &&
            natsConnection_Subscribe(&b->tel_all, b->nc, "ems.tel.>", on_nats_msg, b) != NATS_OK)
            b->tel_all = NULL;
        if (!want_all) {
            tel_unsub(b->tel_all);
            b->tel_all = NULL;
        }
        for (size_t i = 0; gw_map_next(&b->tel_subs, &i, &k, &v);) {
            named_t *n = v;
            tel_unsub(n->u.sub);
            n->u.sub = NULL;
            if (!b->tel_all)
                tel_sub(b, n);
        }
        b->interest_dirty = true;
    }
    for (size_t i = 0; gw_map_next(&b->tel_subs, &i, &k, &v);) {
        named_t *n = v;
        if (gw_hub_count(h, k) > 0)
            continue;
        tel_unsub(n->u.sub);
        free(gw_map_del(&b->tel_subs, n->key));
        i = 0;
        b->interest_dirty = true;
    }
    for (size_t i = 0; gw_map_next(&h->by_dev, &i, &k, &v);) {
        if (gw_hub_count(h, k) == 0 || gw_map_get(&b->tel_subs, k))
            continue;
        if (!named_put(&b->tel_subs, k))
            continue;
        named_t *n = gw_map_get(&b->tel_subs, k);
        if (!b->tel_all)
            tel_sub(b, n);
        b->interest_dirty = true;
    }
}

/* A dashboard message of a device from another gateway (live telemetry of
 * a device there, or a status change of a command created there): to our
 * dashboards that watch it, as if it had arrived here. */
static void on_telemetry(gw_bus_t *b, const char *device_id, const char *data, int len)
{
    static const char tel[] = "{\"type\":\"telemetry\"";
    gw_dev_t *d = gw_dev_get(b->gw, device_id, false);
    if (d && d->conn && len >= (int)sizeof tel - 1 && memcmp(data, tel, sizeof tel - 1) == 0)
        return; /* telemetry of our own device (its old gateway is late to notice): had it */
    if (len > 0 && ems_device_id_valid(device_id, strlen(device_id))) {
        ems_metric_inc(b->m_tel_in);
        gw_dash_publish_remote(b->gw, device_id, data, (size_t)len); /* + the fleet view */
    }
}

static void interest_expire(gw_bus_t *b, int64_t mono)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&b->interest, &i, &k, &v);) {
        named_t *n = v;
        if (mono >= n->u.until_mono) {
            free(gw_map_del(&b->interest, n->key));
            i = 0;
        }
    }
}

/* ------------------------------------------------------------ the loop side */

static void on_message(gw_bus_t *b, natsMsg *m)
{
    const char *subj = natsMsg_GetSubject(m);
    const char *data = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    if (strncmp(subj, "ems.tel.", 8) == 0) {
        char id[EMS_DEVICE_ID_MAX + 1];
        if (device_from_subject(subj + 8, id, sizeof id))
            on_telemetry(b, id, data, len);
        return;
    }
    json_error_t je;
    json_t *o = data && len > 0 ? json_loadb(data, (size_t)len, 0, &je) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    if (strcmp(subj, ROSTER_SUBJECT) == 0)
        on_roster(b, o);
    else if (strncmp(subj, "ems.presence.", 13) == 0)
        on_presence(b, o);
    else if (strncmp(subj, "ems.gw.", 7) == 0)
        on_alive(b, o);
    else if (strcmp(subj, "ems.interest") == 0)
        on_interest(b, o);
    else if (strcmp(subj, "ems.sync.presence") == 0) {
        const char *from = json_string_value(json_object_get(o, "from"));
        const char *to = json_string_value(json_object_get(o, "to"));
        if (from && strcmp(from, b->id) != 0 && (!to || strcmp(to, b->id) == 0))
            presence_all(b);
    } else if (strncmp(subj, "ems.cmdstatus.", 14) == 0)
        on_cmdstatus(b, o);
    else if (strncmp(subj, "ems.cmd.", 8) == 0)
        on_cmd(b, o);
    json_decref(o);
}

/* Back on the bus: say who we have and ask the others for theirs. */
static void on_up(gw_bus_t *b)
{
    b->up = true;
    b->next_hb_mono = 0;
    b->next_interest_mono = 0;
    presence_all(b);
    sync_request(b, NULL);
}

static void wake_cb(uv_async_t *a)
{
    gw_bus_t *b = a->data;
    uv_mutex_lock(&b->mu);
    bus_item_t *it = b->head;
    b->head = b->tail = NULL;
    uv_mutex_unlock(&b->mu);
    while (it) {
        bus_item_t *n = it->next;
        switch (it->kind) {
        case 0:
            if (!b->closing)
                on_message(b, it->msg);
            natsMsg_Destroy(it->msg);
            break;
        case 1:
            if (b->up && !b->closing)
                ems_log_warn("bus: connection to %s lost; reconnecting (commands for devices "
                             "on other gateways fail meanwhile)",
                             b->shown);
            b->up = false;
            break;
        case 2:
            if (!b->closing) {
                ems_log_info("bus: reconnected to %s", b->shown);
                on_up(b);
            }
            break;
        default:
            b->up = false;
            break;
        }
        free(it);
        it = n;
    }
}

/* Schedules the next attempt at the first connection, logging the failure
 * once per outage. */
static void connect_failed(gw_bus_t *b, const char *why, int64_t mono)
{
    if (!b->logged_down)
        ems_log_warn("bus: cannot connect to %s (%s); this gateway runs alone meanwhile and "
                     "retries in the background",
                     b->shown, why);
    b->logged_down = true;
    b->retry_ms = b->retry_ms ? b->retry_ms * 2 : 250;
    if (b->retry_ms > RETRY_MAX_MS)
        b->retry_ms = RETRY_MAX_MS;
    b->next_try_mono = mono + b->retry_ms;
}

static void try_connect(gw_bus_t *b, int64_t mono);
static void probe_start(gw_bus_t *b, int64_t mono);

/* natsConnection_Connect blocks the calling thread, and the first one must
 * run on the loop (the adapter attaches there). So the server's address is
 * first resolved and reached without blocking; only a server that accepts
 * the TCP connection is then asked for the NATS handshake (bounded by
 * CONNECT_TIMEOUT_MS). A black-holed address costs the loop nothing.
 * Memory: freed in probe_closed, or in probe_end when no TCP handle was
 * opened. */
typedef struct probe {
    gw_bus_t *b;
    uv_getaddrinfo_t gai;
    uv_tcp_t tcp;
    uv_connect_t conn;
    bool tcp_open, resolving;
    int64_t started_mono;
} probe_t;

static void probe_closed(uv_handle_t *h)
{
    free(h->data);
}

static void probe_end(probe_t *p, int status)
{
    gw_bus_t *b = p->b;
    if (b->probe == p)
        b->probe = NULL;
    if (p->tcp_open) {
        if (!uv_is_closing((uv_handle_t *)&p->tcp))
            uv_close((uv_handle_t *)&p->tcp, probe_closed);
    } else {
        free(p);
    }
    if (b->closing)
        return;
    int64_t mono = ems_time_mono_ms();
    if (status == 0) {
        try_connect(b, mono);
    } else if (b->probe_idx + 1 < b->nurl) {
        b->probe_idx++; /* the next server of the list, at once */
        probe_start(b, mono);
    } else {
        b->probe_idx = 0;
        connect_failed(b, status == UV_ECANCELED ? "no answer" : uv_strerror(status), mono);
    }
}

static void probe_connected(uv_connect_t *req, int status)
{
    probe_end(req->data, status);
}

static void probe_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    probe_t *p = req->data;
    p->resolving = false;
    if (status == 0 && !p->b->closing) {
        status = uv_tcp_init(p->b->gw->loop, &p->tcp);
        if (status == 0) {
            p->tcp_open = true;
            p->tcp.data = p;
            p->conn.data = p;
            status = uv_tcp_connect(&p->conn, &p->tcp, res->ai_addr, probe_connected);
        }
    } else if (status == 0) {
        status = UV_ECANCELED;
    }
    uv_freeaddrinfo(res);
    if (status != 0)
        probe_end(p, status);
}

static void probe_start(gw_bus_t *b, int64_t mono)
{
    probe_t *p = calloc(1, sizeof *p);
    if (!p) {
        connect_failed(b, "out of memory", mono);
        return;
    }
    p->b = b;
    p->started_mono = mono;
    p->gai.data = p;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    b->probe = p;
    p->resolving = true;
    int rc = uv_getaddrinfo(b->gw->loop, &p->gai, probe_resolved, b->host[b->probe_idx],
                            b->port[b->probe_idx], &hints);
    if (rc != 0) {
        p->resolving = false;
        probe_end(p, rc);
    }
}

/* A probe that has not finished in time is given up (its callbacks run). */
static void probe_check(gw_bus_t *b, int64_t mono)
{
    probe_t *p = b->probe;
    if (!p || mono - p->started_mono < 2 * CONNECT_TIMEOUT_MS)
        return;
    if (p->resolving)
        uv_cancel((uv_req_t *)&p->gai);
    else if (p->tcp_open && !uv_is_closing((uv_handle_t *)&p->tcp))
        uv_close((uv_handle_t *)&p->tcp, probe_closed);
}

/* One URL as log lines show it: "tls://ems:***@host:4222". */
static void url_masked(const char *url, char *out, size_t cap)
{
    const char *s = strstr(url, "://"), *at = s ? strchr(s + 3, '@') : NULL;
    const char *colon = at ? memchr(s + 3, ':', (size_t)(at - (s + 3))) : NULL;
    if (!colon)
        snprintf(out, cap, "%s", url);
    else
        snprintf(out, cap, "%.*s:***%s", (int)(colon - url), url, at);
}

/* The list as log lines show it, each password masked. */
static void urls_masked(gw_bus_t *b)
{
    size_t n = 0;
    b->shown[0] = '\0';
    for (int i = 0; i < b->nurl && n < sizeof b->shown; i++) {
        char one[GW_PATH_MAX + 8];
        url_masked(b->url[i], one, sizeof one);
        n += (size_t)snprintf(b->shown + n, sizeof b->shown - n, "%s%s", i ? "," : "", one);
    }
}

/* nats://[user[:password]@]host[:port] (or tls://), host may be [v6]. */
static int parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *p = strstr(url, "://");
    if (!p)
        return EMS_ECONFIG;
    p += 3;
    const char *at = strchr(p, '@');
    if (at)
        p = at + 1;
    const char *h = p, *e;
    if (*p == '[') {
        h = p + 1;
        e = strchr(h, ']');
        if (!e)
            return EMS_ECONFIG;
        p = e + 1;
    } else {
        e = p + strcspn(p, ":/");
        p = e;
    }
    size_t hl = (size_t)(e - h);
    if (hl == 0 || hl >= hcap)
        return EMS_ECONFIG;
    memcpy(host, h, hl);
    host[hl] = '\0';
    size_t pl = *p == ':' ? strcspn(p + 1, "/") : 0;
    if (pl == 0 || pl >= pcap) {
        snprintf(port, pcap, "4222");
        return 0;
    }
    memcpy(port, p + 1, pl);
    port[pl] = '\0';
    return 0;
}

/* The first connection, made on the loop thread (the libuv adapter must
 * attach there). Later losses are libnats's own reconnects. */
static void try_connect(gw_bus_t *b, int64_t mono)
{
    natsConnection *nc = NULL;
    /* The server the probe reached first, then the others in order (the
     * client's reconnects go round the same list in its own thread). */
    const char *order[BUS_URLS_MAX];
    for (int i = 0; i < b->nurl; i++)
        order[i] = b->url[(b->probe_idx + i) % b->nurl];
    b->probe_idx = 0;
    natsStatus s = natsOptions_SetServers(b->opts, order, b->nurl);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, b->opts);
    if (s != NATS_OK) {
        /* libnats's own text says more ("Authorization Violation", the
         * certificate check) than the status name. */
        const char *detail = nats_GetLastError(NULL);
        connect_failed(b, detail && *detail ? detail : natsStatus_GetText(s), mono);
        return;
    }
    b->nc = nc;
    static const char *const fixed[] = {"ems.presence.>", "ems.gw.*.alive", "ems.sync.presence",
                                        "ems.interest"};
    char mine[2][160];
    snprintf(mine[0], sizeof mine[0], "ems.cmd.%s", b->id);
    snprintf(mine[1], sizeof mine[1], "ems.cmdstatus.%s", b->id);
    const char *subjects[6] = {fixed[0], fixed[1], fixed[2], fixed[3], mine[0], mine[1]};
    for (int i = 0; i < 6; i++) {
        s = natsConnection_Subscribe(&b->subs[i], nc, subjects[i], on_nats_msg, b);
        if (s != NATS_OK)
            ems_log_error("bus: subscribe %s: %s", subjects[i], natsStatus_GetText(s));
    }
    ems_log_info("bus: connected to %s as gateway %s", b->shown, b->id);
    b->logged_down = false;
    on_up(b);
}

void gw_bus_tick(gw_t *gw, int64_t mono)
{
    gw_bus_t *b = gw->bus;
    if (!b || b->closing)
        return;
    if (!b->nc) {
        if (b->probe)
            probe_check(b, mono);
        else if (mono >= b->next_try_mono)
            probe_start(b, mono);
        return;
    }
    if (b->up && mono >= b->next_hb_mono) {
        char subj[160];
        snprintf(subj, sizeof subj, "ems.gw.%s.alive", b->id);
        publish_json(b, subj,
                     json_pack("{sssI}", "gateway", b->id, "boot", (json_int_t)b->boot_ms));
        b->next_hb_mono = mono + HEARTBEAT_MS;
    }
    peers_check(b, mono);
    pending_check(b, mono);
    relays_check(b, mono);
    interest_expire(b, mono);
    tel_sync(b);
    if (b->up && (b->interest_dirty || mono >= b->next_interest_mono)) {
        b->interest_dirty = false;
        b->next_interest_mono = mono + HEARTBEAT_MS;
        if (b->tel_subs.len || b->tel_all)
            interest_publish(b);
    }
}

/* ------------------------------------------------------------ life */

const char *gw_bus_id(const gw_bus_t *b)
{
    return b->id;
}
bool gw_bus_up(const gw_bus_t *b)
{
    return b && b->up;
}

static void bus_destroy(gw_bus_t *b)
{
    const char *rk;
    void *rv;
    for (size_t i = 0; gw_map_next(&b->remote, &i, &rk, &rv);)
        free(((named_t *)rv)->u.pr.info_json);
    map_free_all(&b->remote);
    map_free_all(&b->peers);
    map_free_all(&b->pending);
    map_free_all(&b->relays);
    map_free_all(&b->interest);
    map_free_all(&b->tel_subs);
    if (b->opts)
        natsOptions_Destroy(b->opts);
    uv_mutex_destroy(&b->mu);
    free(b);
}

static void metrics_register(gw_t *gw, gw_bus_t *b);

int gw_bus_start(gw_t *gw)
{
    const gw_config_t *cfg = &gw->cfg;
    if (!cfg->nats_url[0])
        return 0;
    bool tls = strncmp(cfg->nats_url, "tls://", 6) == 0;
    if (strncmp(cfg->nats_url, "nats://", 7) != 0 && !tls) {
        ems_log_error("nats_url must be nats://[USER:PASSWORD@]HOST:PORT or tls://...");
        return EMS_ECONFIG;
    }
    gw_bus_t *b = calloc(1, sizeof *b);
    if (!b)
        return EMS_ENOMEM;
    b->gw = gw;
    snprintf(b->urls, sizeof b->urls, "%s", cfg->nats_url);
    for (char *save = NULL, *t = strtok_r(b->urls, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        for (char *e = t + strlen(t); e > t && e[-1] == ' ';)
            *--e = '\0';
        if (*t && b->nurl < BUS_URLS_MAX)
            b->url[b->nurl++] = t;
    }
    urls_masked(b);
    b->boot_ms = ems_time_now_ms();
    make_token(cfg->gateway_id[0] ? cfg->gateway_id : gw->instance, b->id, sizeof b->id);
    for (int i = 0; i < b->nurl; i++) {
        bool same = strncmp(b->url[i], tls ? "tls://" : "nats://", tls ? 6 : 7) == 0;
        if (!same || parse_url(b->url[i], b->host[i], sizeof b->host[i], b->port[i],
                               sizeof b->port[i]) < 0) {
            ems_log_error("nats_url: '%s' is not a list of [nats|tls]://[USER:PASSWORD@]HOST:PORT "
                          "(one scheme for all)",
                          b->shown);
            free(b);
            return EMS_ECONFIG;
        }
    }
    if (b->nurl == 0) {
        ems_log_error("nats_url: no server in '%s'", b->shown);
        free(b);
        return EMS_ECONFIG;
    }
    if (uv_mutex_init(&b->mu) != 0) {
        free(b);
        return EMS_ENOMEM;
    }
    natsLibuv_Init();
    natsLibuv_SetThreadLocalLoop(gw->loop);
    natsStatus s = natsOptions_Create(&b->opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(b->opts, b->url, b->nurl);
    if (s == NATS_OK)
        s = natsOptions_SetNoRandomize(b->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetEventLoop(b->opts, gw->loop, natsLibuv_Attach, natsLibuv_Read,
                                     natsLibuv_Write, natsLibuv_Detach);
    if (s == NATS_OK)
        s = natsOptions_SetName(b->opts, b->id);
    if (s == NATS_OK)
        s = natsOptions_SetNoEcho(b->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(b->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(b->opts, CONNECT_TIMEOUT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(b->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetCustomReconnectDelay(b->opts, reconnect_delay, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(b->opts, 5000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(b->opts, 2);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(b->opts, on_disconnected, b);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(b->opts, on_reconnected, b);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(b->opts, on_closed, b);
    if (s == NATS_OK && tls) {
        /* The server's certificate must chain to nats_ca_file and carry
         * nats_tls_hostname (default: the URL's host; an IP address there
         * needs nats_tls_hostname, since only names are compared). */
        const char *name = cfg->nats_tls_hostname[0] ? cfg->nats_tls_hostname : b->host[0];
        s = natsOptions_SetSecure(b->opts, true);
        if (s == NATS_OK)
            s = natsOptions_LoadCATrustedCertificates(b->opts, cfg->nats_ca_file);
        if (s == NATS_OK)
            s = natsOptions_SetExpectedHostname(b->opts, name);
        if (s != NATS_OK)
            ems_log_error("bus: TLS to the NATS server: %s (nats_ca_file %s)",
                          nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s),
                          cfg->nats_ca_file);
    }
    if (s != NATS_OK) {
        ems_log_error("bus: cannot set up NATS options for %s: %s", b->shown,
                      natsStatus_GetText(s));
        bus_destroy(b);
        return s == NATS_NO_MEMORY ? EMS_ENOMEM : EMS_ECONFIG;
    }
    metrics_register(gw, b);
    uv_async_init(gw->loop, &b->wake, wake_cb);
    b->wake.data = b;
    gw->open_handles++;
    gw->bus = b;
    probe_start(b, ems_time_mono_ms());
    return 0;
}

static double g_up(void *ud)
{
    return gw_bus_up(((gw_t *)ud)->bus) ? 1 : 0;
}

static double g_remote(void *ud)
{
    const gw_bus_t *b = ((gw_t *)ud)->bus;
    double n = 0;
    const char *k;
    void *v;
    for (size_t i = 0; b && gw_map_next(&b->remote, &i, &k, &v);)
        n += ((named_t *)v)->u.pr.online;
    return n;
}

static double g_peers(void *ud)
{
    const gw_bus_t *b = ((gw_t *)ud)->bus;
    double n = 0;
    const char *k;
    void *v;
    for (size_t i = 0; b && gw_map_next(&b->peers, &i, &k, &v);)
        n += ((named_t *)v)->u.peer.alive;
    return n;
}

static void metrics_register(gw_t *gw, gw_bus_t *b)
{
    ems_metrics_t *m = gw->metrics;
    ems_metrics_gauge_fn(m, "ems_gateway_bus_connected", "1 while connected to the NATS server.",
                         NULL, g_up, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_bus_remote_devices",
                         "Devices online on other gateways, as presence says.", NULL, g_remote, gw);
    ems_metrics_gauge_fn(m, "ems_gateway_bus_peers", "Other gateways heard within 6 s.", NULL,
                         g_peers, gw);
    b->m_forwarded = ems_metrics_counter(m, "ems_gateway_bus_commands_total",
                                         "Commands across gateways.", "dir=\"forwarded\"");
    b->m_delivered = ems_metrics_counter(m, "ems_gateway_bus_commands_total",
                                         "Commands across gateways.", "dir=\"delivered\"");
    b->m_tel_out =
        ems_metrics_counter(m, "ems_gateway_bus_telemetry_total",
                            "Live packets across gateways (by interest).", "dir=\"published\"");
    b->m_tel_in =
        ems_metrics_counter(m, "ems_gateway_bus_telemetry_total",
                            "Live packets across gateways (by interest).", "dir=\"received\"");
    b->m_relayed = ems_metrics_counter(m, "ems_gateway_bus_results_relayed_total",
                                       "Device answers sent back to the origin gateway.", NULL);
    b->m_unacked =
        ems_metrics_counter(m, "ems_gateway_bus_commands_unacknowledged_total",
                            "Forwarded commands failed for want of an acknowledgement.", NULL);
}

static void wake_closed(uv_handle_t *h)
{
    gw_bus_t *b = h->data;
    b->gw->open_handles--;
}

void gw_bus_close(gw_t *gw)
{
    gw_bus_t *b = gw->bus;
    if (!b || b->closing)
        return;
    b->closing = true;
    b->up = false;
    if (b->probe) {
        probe_t *p = b->probe;
        if (p->resolving)
            uv_cancel((uv_req_t *)&p->gai); /* its callback ends it */
        else if (p->tcp_open && !uv_is_closing((uv_handle_t *)&p->tcp))
            uv_close((uv_handle_t *)&p->tcp, probe_closed);
    }
    if (b->nc) {
        natsConnection_Close(b->nc);
        for (int i = 0; i < 6; i++) {
            natsSubscription_Destroy(b->subs[i]);
            b->subs[i] = NULL;
        }
        const char *k;
        void *v;
        for (size_t i = 0; gw_map_next(&b->tel_subs, &i, &k, &v);) {
            natsSubscription_Destroy(((named_t *)v)->u.sub);
            ((named_t *)v)->u.sub = NULL;
        }
        natsSubscription_Destroy(b->tel_all);
        b->tel_all = NULL;
        natsConnection_Destroy(b->nc);
        b->nc = NULL;
    }
    /* After this no libnats thread runs, so none can touch `wake`. */
    nats_CloseAndWait(2000);
    wake_cb(&b->wake); /* frees what was queued */
    uv_close((uv_handle_t *)&b->wake, wake_closed);
}

void gw_bus_free(gw_t *gw)
{
    gw_bus_t *b = gw->bus;
    if (!b)
        return;
    gw->bus = NULL;
    bus_destroy(b);
}
