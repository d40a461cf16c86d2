/* gw_bus.h: several gateways as one system, over NATS (docs/scaling.md).
 *
 * Off unless `nats_url` is set: then gw_t.bus is NULL, no libnats function
 * is ever called, and every hook below is a no-op the callers skip.
 *
 * When on, the bus
 *   - publishes the presence of this gateway's devices
 *     (ems.presence.<device_id>; after each (re)connection also its
 *     complete roster, so departures lost while the bus was down are
 *     undone) and a heartbeat (ems.gw.<id>.alive, 2 s, with the run's boot
 *     time), and keeps the presence of every other gateway's devices; a
 *     gateway whose heartbeat is missing for 6 s, or that restarted, has
 *     its (previous run's) devices marked offline;
 *   - forwards a command for a device connected to another gateway to that
 *     gateway (ems.cmd.<gateway>), which delivers it on the device socket,
 *     acknowledges it and relays the device's answers
 *     (ems.cmdstatus.<origin>). The origin gateway keeps the command's one
 *     record: its tracker runs the state machine, its timeouts apply and it
 *     alone writes the audit trail; the delivering gateway writes nothing.
 *   - carries live telemetry, and the `command` messages of the command's
 *     origin gateway, to the dashboards of other gateways, by interest: a
 *     gateway subscribes to ems.tel.<id> for the devices its dashboards
 *     watch and announces them (ems.interest); a gateway publishes only
 *     what someone announced. Dashboards' `device` messages for devices on
 *     other gateways follow presence (gw_dash_device_refresh), which every
 *     gateway hears anyway.
 *
 * Threads: libnats reads and writes the socket on the gateway's loop (its
 * libuv adapter), but calls message and connection handlers on its own
 * threads. Those handlers only queue what they got (mutex + uv_async_t);
 * everything else, and every function here, runs on the loop thread.
 *
 * Ownership: gw_t owns the bus (gw_bus_start creates it, gw_bus_close
 * begins its end from the last shutdown step, gw_bus_free frees it after
 * the loop ended). Its uv_async_t is closed with a callback that decrements
 * gw_t.open_handles; the adapter closes its own handles.
 */
#ifndef GW_BUS_H
#define GW_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct gw;
struct gw_dev;
struct gw_cmd;
typedef struct gw_bus gw_bus_t;

#define GW_BUS_ID_MAX 95

/* What the bus knows of a device connected to another gateway. */
typedef struct {
    char gateway[GW_BUS_ID_MAX + 1];
    bool online;
    int64_t since_ms;  /* wall clock of the presence message */
    int64_t roster_ms; /* private: the last roster of `gateway` that listed it */
    char *info_json;   /* its device_info as `gateway` announced it (normalised), or NULL */
} gw_bus_presence_t;

/* Creates the bus when cfg.nats_url is set (gw->bus stays NULL
 * otherwise) and tries the first connection; a server that is not there
 * yet is tried again with backoff. Returns 0, EMS_ECONFIG for a bad URL, or
 * EMS_ENOMEM. */
int gw_bus_start(struct gw *gw);

/* The 1 s tick: heartbeat, other gateways' liveness, forwards that were not
 * acknowledged in time, connection retries. */
void gw_bus_tick(struct gw *gw, int64_t now_mono);

/* Closes the connection and the bus's handle (gateway shutdown). */
void gw_bus_close(struct gw *gw);

/* Frees what is left after the loop ended. */
void gw_bus_free(struct gw *gw);

/* This gateway's id on the bus. */
const char *gw_bus_id(const gw_bus_t *b);

/* True while connected to the NATS server. */
bool gw_bus_up(const gw_bus_t *b);

/* A local device connected (online) or went away: tells the others. */
void gw_bus_device_presence(struct gw *gw, const struct gw_dev *d, bool online);

/* The presence of a device connected to another gateway, or NULL. */
const gw_bus_presence_t *gw_bus_remote(const gw_bus_t *b, const char *device_id);

/* Walks the presence the bus knows of devices on other gateways: start
 * with *i = 0; false at the end. *device_id and *p are borrowed until the
 * next bus event. With b NULL: false at once. */
bool gw_bus_remote_next(const gw_bus_t *b, size_t *i, const char **device_id,
                        const gw_bus_presence_t **p);

/* Sends a command to the gateway the device is connected to. Returns 0 when
 * published (the record goes `sent`; it fails if that gateway does not
 * acknowledge within a few seconds), EMS_ENOENT when no other gateway has
 * the device, EMS_ECLOSED when the bus is down. */
int gw_bus_forward_command(struct gw *gw, const struct gw_cmd *c);

/* True when dashboards on another gateway watch `device_id` (or every
 * device) and the bus is up: its live telemetry is then published for them
 * with gw_bus_telemetry. */
bool gw_bus_wants_telemetry(const gw_bus_t *b, const char *device_id);

/* Publishes one live dashboard message of a local device (the text
 * dashboards get, ems_dash_telemetry_encode) on ems.tel.<device_id>. */
void gw_bus_telemetry(struct gw *gw, const char *device_id, const char *msg, size_t len);

/* Publishes another dashboard message about a device (a `command` status
 * change of a command created here) on the same subject as its telemetry,
 * for the other gateways whose dashboards watch it: call it only when
 * gw_bus_wants_telemetry says someone does. */
void gw_bus_dash_message(struct gw *gw, const char *device_id, const char *msg, size_t len);

/* A device's command_result (already validated; `root` is its JSON) for a
 * command this gateway does not track: if it was forwarded here by another
 * gateway, it is relayed to that gateway and true is returned. */
bool gw_bus_relay_result(struct gw *gw, const char *device_id, const char *command_id,
                         const json_t *root, bool final);

#endif
