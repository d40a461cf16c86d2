/* gw.h: the gateway process: one libuv loop holding every connection.
 *
 * This header is the gateway's internal contract between its policy files:
 *   gw.c         life (start, SIGTERM shutdown, SIGHUP TLS reload), the
 *                request dispatcher, metrics, the 1 s tick
 *   gw_device.c  /ws/device/{id}: upgrade auth, telemetry, acks, results
 *   gw_dash.c    /ws/dashboard: session + Origin, subscriptions, fan-out
 *   gw_api.c     the REST API's dispatch (docs/api.md), /healthz, /metrics,
 *                static files; one file per resource: gw_api_session.c,
 *                gw_api_devices.c, gw_api_commands.c, gw_api_alarms.c
 *                (their shared helpers: gw_api_int.h)
 * The reusable pieces (gw_link, gw_cmd, gw_hub, gw_session, ...) know
 * nothing of this struct.
 *
 * Ownership: gw_t owns the device table (gw_dev_t, one per device that
 * authenticated since start; never freed before shutdown, so link records
 * and commands can point at them), the list of live device connections
 * (gw_devconn_t, freed in their WebSocket close callback) and of dashboards
 * (gw_dash_t, likewise).
 *
 * Several gateways: nothing here is shared state except the session key
 * (a file) and PostgreSQL. With nats_url set, gw_bus.c tells the others
 * which devices are here and routes commands for devices connected to
 * another gateway, and carries live telemetry and command changes to other
 * gateways' dashboards by interest; their device messages follow presence
 * (docs/scaling.md).
 */
#ifndef GW_H
#define GW_H

#include "command.h"
#include "dashboard.h"
#include "gw_alarm.h"
#include "gw_bus.h"
#include "gw_cmd.h"
#include "gw_config.h"
#include "gw_hub.h"
#include "gw_link.h"
#include "gw_login.h"
#include "gw_map.h"
#include "gw_neg.h"
#include "gw_ranges.h"
#include "gw_rate.h"
#include "gw_router.h"
#include "gw_session.h"
#include "gw_webhook.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "telemetry.h"
#include "tls.h"
#include "ws.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw gw_t;
typedef struct gw_devconn gw_devconn_t;
typedef struct gw_dash gw_dash_t;

/* One device known to this gateway. */
typedef struct gw_dev {
    char id[EMS_DEVICE_ID_MAX + 1]; /* key of gw_t.devs */
    gw_devconn_t *conn;             /* the live connection, or NULL */
    int64_t connected_ms;           /* wall clock of the current/last connect */
    int64_t offline_ms;             /* wall clock of the last disconnect, 0 if online */
    int64_t last_seen_ms;           /* wall clock of the last message */
    bool has_last;
    ems_telemetry_t last; /* newest live packet */
    char *info_json;      /* device_info, normalised ({"firmware":..,"limits":..}) or NULL */
    gw_rate_t rate;       /* messages from the device (persists across reconnects) */
    gw_ranges_t acks;     /* committed seqs not yet acked to the device */
    uint32_t ack_waiting; /* seqs added to `acks` since the last ack message */
    uint64_t ack_sent_ms;  /* loop time (uv_now) of the last ack message */
    bool ack_dirty;        /* on gw_t.ack_dirty */
    bool ack_wheel;        /* on a slot of gw_t.ack_wheel */
    struct gw_dev *ack_next, *wheel_next;
    /* Credential cache: the DB writer's answer to device_auth. */
    bool auth_ok;             /* cache entry present */
    bool auth_revoked;
    char auth_hash[65];
    int64_t auth_mono_ms;     /* when it was fetched */
    gw_alarm_dev_t alarm;     /* its alarm rules' states (gw_alarm.h) */
} gw_dev_t;

/* One live device WebSocket. */
struct gw_devconn {
    gw_t *gw;
    gw_dev_t *dev;
    ems_ws_t *ws;
    uint64_t gen;          /* unique per connection (for async callbacks) */
    char token_hash[65];   /* the credential it authenticated with */
    char peer[64];
    int64_t connected_ms;  /* wall clock */
    int64_t recheck_mono;  /* next credential re-check */
    bool rechecking;
    bool recheck_again;    /* the credential changed while a re-check was out */
    const char *why_closed; /* our reason for closing, for the session record */
    gw_devconn_t *prev, *next;
};

/* One live dashboard WebSocket. */
struct gw_dash {
    gw_t *gw;
    ems_ws_t *ws;
    gw_hub_subs_t subs;
    char user[EMS_AUTH_USER_MAX + 1];
    ems_auth_role_t role;
    bool dropping; /* closing because its send queue overflowed */
    gw_dash_t *prev, *next;
};

typedef struct {
    ems_metric_t *conns_total[2], *refused[2]; /* [0] device, [1] dashboard */
    ems_metric_t *msgs_in[2], *msgs_out[2], *bytes_in[2], *bytes_out[2];
    ems_metric_t *telemetry_ok, *invalid, *foreign, *rate_limited, *not_stored;
    ems_metric_t *acks_sent, *nacks_sent, *acked_records, *dash_dropped, *fanout_msgs;
    ems_metric_t *http_requests, *logins_ok, *logins_failed;
    ems_metric_t *logins_throttled, *logins_busy, *password_hashes, *password_rehashes;
    ems_metric_t *device_lookups, *device_negative_hits, *sessions_revoked;
    ems_metric_t *ts_refused[2]; /* [0] too far in the future, [1] too old */
    ems_metric_t *query_latency;
    ems_metric_t *cmd_status[GW_CMD_STATUS_COUNT];
    ems_metric_t *dbw[24];    /* the DB writer's counters, gw.c dbw_stats[] */
    ems_metric_t *srv[9];     /* the HTTP server's limit counters, gw.c srv_stats_update */
    ems_metric_t *lnk[8];     /* the DB writer link's refusals and credential notices */
    ems_metric_t *decodes[2]; /* device messages decoded: [0] one-pass scan, [1] jansson */
    ems_metric_t *tls_hs[2];  /* TLS handshakes completed: [0] full, [1] resumed */
    ems_metric_t *alarms[2];  /* alarm changes sent: [0] raise, [1] clear */
    ems_metric_t *webhook[3]; /* webhook deliveries: [0] ok, [1] failed attempts, [2] dead */
} gw_metric_set_t;

struct gw {
    uv_loop_t *loop;
    gw_config_t cfg;
    char instance[96]; /* host:pid, recorded with device sessions */

    ems_server_t *server;
    ems_tls_config_t *tls;
    ems_tls_stats_t tls_before; /* handshakes counted by configurations replaced on SIGHUP */
    gw_session_key_t skey;
    gw_link_t *link;
    gw_cmds_t *cmds;
    gw_bus_t *bus; /* NULL unless nats_url is set (gw_bus.h) */
    gw_hub_t hub;
    gw_map_t devs; /* id -> gw_dev_t */
    gw_dev_t *ack_dirty;           /* devices with new commits since the last flush */
    gw_dev_t *ack_wheel[GW_ACK_SLOTS]; /* acks held back by ack_delay_ms, by due slot */
    uint64_t ack_wheel_slot;       /* the next slot to run (absolute: mono ms / GW_ACK_SLOT_MS) */
    size_t ack_held;               /* devices on the wheel */
    uv_timer_t ack_timer;          /* runs the wheel while it holds devices */
    gw_devconn_t *devconns;
    size_t ndevconns;
    gw_dash_t *dashes;
    size_t ndashes;
    uv_timer_t *fleet_timer; /* flushes the fleet view; open while it has subscribers (gw_dash.c) */
    uint64_t fleet_next_ms;  /* loop time of the fleet view's next collect */
    uint64_t next_gen;
    /* Abuse defences (gw_api.c, gw_device.c); set up at first use, freed
     * by gw_api_free. */
    gw_login_t login;             /* per-address login budget, hash slots */
    gw_session_revoked_t revoked; /* cookies ended by logout */
    gw_neg_t dev_neg;             /* device ids the DB writer does not know */
    gw_map_t auth_pending;        /* device id -> its lookup in flight (and waiters) */
    ems_log_limit_t log_login, log_upgrade, log_foreign, log_ts; /* repeated warnings */
    bool abuse_ready;
    int64_t abuse_sweep_mono;

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t tick;
    ems_metrics_t *metrics;
    gw_metric_set_t m;

    gw_alarm_cfg_t alarm_cfg;  /* the rules' settings, from cfg (docs/alarms.md) */
    gw_webhooks_t *webhooks;   /* NULL without alarm_webhooks */
    int64_t alarm_tick_mono;   /* the offline rule's last sweep */
    int64_t silent_due_mono;   /* next query for devices silent longer than alarm_offline_s */
    bool silent_inflight;
    ems_log_limit_t log_alarm; /* alarm changes the link could not take */

    bool stats_inflight; /* a {"op":"stats"} query to the DB writer is out */
    int64_t stats_due_mono;

    bool stopping;       /* SIGTERM seen */
    int64_t stop_deadline;
    int stop_phase;
    bool server_stopped, link_freed, closing_handles;
    int open_handles;
    int64_t last_full_log_mono;
};

/* ---- gw.c ---- */

/* Starts everything from the configuration (TLS, listener, link, timers,
 * signals). Returns 0 or a negative code (logged). On error nothing is
 * left on the loop. */
int gw_start(gw_t *gw, uv_loop_t *loop, const gw_config_t *cfg);
/* Begins the graceful shutdown (what SIGTERM does). */
void gw_stop(gw_t *gw);
/* Frees what is left after uv_run returned. */
void gw_free(gw_t *gw);

/* Looks up or creates the device's entry. NULL on allocation failure. */
gw_dev_t *gw_dev_get(gw_t *gw, const char *id, bool create);

/* Queues a durable event for the DB writer; logs when it cannot. */
void gw_event(gw_t *gw, const char *json, size_t len);

/* True when `origin` (may be NULL) is acceptable for a request with Host
 * `host`: absent (non-browser clients), listed in cfg.origins, or, when
 * none are listed, http(s)://<host>. */
bool gw_origin_ok(const gw_t *gw, const char *origin, const char *host);

/* Answers a request with a JSON body / an error body
 * ({"error": reason, "path": path}); path may be NULL. */
void gw_reply_json(ems_server_req_t *req, int status, const char *json, size_t len,
                   const char *extra_headers);
void gw_reply_error(ems_server_req_t *req, int status, const char *reason, const char *path);

/* The request's session, if any valid one: fills *s and returns true. */
bool gw_req_session(const gw_t *gw, ems_server_req_t *req, gw_session_t *s);

/* ---- gw.c: alarms (gw_alarm.h holds the rules, this the wiring) ---- */

/* A live packet of a device connected here (its newest): the live rules. */
void gw_alarms_packet(gw_t *gw, gw_dev_t *d, const ems_telemetry_t *t, int64_t now_ms);
/* The device connected here / its connection here closed. */
void gw_alarms_connected(gw_t *gw, gw_dev_t *d);
void gw_alarms_disconnected(gw_t *gw, gw_dev_t *d);

/* ---- gw_device.c ---- */

void gw_device_upgrade(gw_t *gw, ems_server_req_t *req, const char *device_id);
/* Link callbacks: a record committed, and the end of one ACK. */
void gw_device_committed(gw_t *gw, gw_dev_t *d, bool has_seq, uint64_t seq, const char *reject);
void gw_device_flush_acks(gw_t *gw);
/* While stopping: sends every ack held back by ack_delay_ms. */
void gw_device_release_acks(gw_t *gw);
/* Sends a wire command to the device; 0 if queued on its socket. */
int gw_device_send_command(gw_t *gw, const gw_cmd_t *c);
/* Re-checks credentials of connected devices that are due (1 s tick). */
void gw_device_recheck(gw_t *gw, int64_t now_mono);
/* The DB writer says a device's credential changed (NULL: maybe every
 * device's): drops the cached credential and re-checks the live
 * connection(s) now; a revoked or rotated one is closed with 4003. */
void gw_device_credentials_changed(gw_t *gw, const char *device_id);
/* Forgets a cached "unknown device" answer for `device_id` (NULL: for
 * every id), e.g. when the database says a credential changed. */
void gw_device_forget_unknown(gw_t *gw, const char *device_id);
/* Closes every device connection with `code` (shutdown). */
void gw_device_close_all(gw_t *gw, uint16_t code, const char *reason);

/* ---- gw_dash.c ---- */

void gw_dash_upgrade(gw_t *gw, ems_server_req_t *req);
/* Fans a message out to the dashboards watching `device_id`. `text` is
 * encoded once into one shared buffer. */
void gw_dash_publish(gw_t *gw, const char *device_id, const char *text, size_t len);
/* {"type":"device",...} for a local device that came online or went
 * offline: its current view (gw_dash_device_view) to its dashboards. */
void gw_dash_device_event(gw_t *gw, const gw_dev_t *d);
/* The dashboards' view of a device: online here when connected here, else
 * what the bus's presence says (online on another gateway, or offline since
 * the later of its local and remote disconnects). False when neither this
 * gateway nor the bus has seen it connected. */
bool gw_dash_device_view(gw_t *gw, const char *device_id, ems_dash_device_t *out);
/* A change the bus learnt of (presence): pushes the device's view to its
 * dashboards when it differs from `before` (NULL: the device was unknown). */
void gw_dash_device_refresh(gw_t *gw, const char *device_id, const ems_dash_device_t *before);
/* A dashboard message about one device created here (a command's status
 * change): to this gateway's dashboards watching it, and over the bus to
 * the other gateways whose dashboards watch it (gw_bus_dash_message). */
void gw_dash_publish_shared(gw_t *gw, const char *device_id, const char *text, size_t len);
void gw_dash_close_all(gw_t *gw, uint16_t code, const char *reason);
/* A live packet of a device connected here that is its newest: into the
 * fleet view (call only while gw->hub.nfleet; cheap: no encoding, no
 * sending, the flush timer does that once per fleet_interval_ms). */
void gw_dash_fleet_telemetry(gw_t *gw, const ems_telemetry_t *t);
/* A dashboard message about a device on another gateway, as it came over
 * the bus: to the dashboards watching the device, and its telemetry into
 * the fleet view. */
void gw_dash_publish_remote(gw_t *gw, const char *device_id, const char *text, size_t len);

/* ---- gw_api.c and gw_api_*.c ---- */

/* The 1 s tick's share: summaries of rate-limited log lines, expiry of
 * login and logout records. */
void gw_api_tick(gw_t *gw, int64_t now_mono);
/* Frees the abuse-defence state (login table, revoked sessions, negative
 * device cache) after the loop ended. */
void gw_api_free(gw_t *gw);
/* Sets up the abuse-defence state from cfg (idempotent; gw_api_handle
 * and gw_device_upgrade call it). */
void gw_api_abuse_init(gw_t *gw);
/* True if the cookie value was ended by a logout (gw_req_session). */
bool gw_api_session_revoked(const gw_t *gw, const char *value, size_t len);

/* Every non-WebSocket request (REST, /healthz, /metrics, static files). */
void gw_api_handle(gw_t *gw, ems_server_req_t *req, const gw_route_t *route, unsigned method);
/* Command tracker callbacks. */
int gw_api_cmd_deliver(void *ud, const gw_cmd_t *c);
void gw_api_cmd_changed(void *ud, const gw_cmd_t *c);

#endif
