/* dashboard.h: the messages on /ws/dashboard (docs/protocol.md section 4).
 *
 * Browser to gateway (proto-schemas/dashboard-subscribe.schema.json):
 *   { "type": "subscribe",   "devices": ["ems_001", "ems_002"] }
 *   { "type": "subscribe",   "devices": "*" }
 *   { "type": "unsubscribe", "devices": ["ems_001"] }
 *   { "type": "subscribe",   "devices": "*", "mode": "fleet" }   (the fleet view)
 * Gateway to browser (dashboard-telemetry, dashboard-device, dashboard-error):
 *   { "type": "telemetry", "packet": { ...telemetry... } }
 *   { "type": "device", "device_id": "ems_001", "online": false, "since": "..." }
 *   { "type": "error", "path": "devices", "reason": "..." }
 *   { "type": "fleet", "devices": [ {latest state of one device}, ... ] }
 * A device list holds 0..10000 device ids.
 *
 * "mode" is "live" (the default: every live message of the devices asked
 * for) or "fleet": the coalesced fleet view, only with "devices": "*". It
 * sends at most one latest state per device per interval, many devices in
 * one `fleet` frame, so its cost follows the number of devices that
 * changed, not the packet rate (docs/api.md, "The fleet view").
 */
#ifndef EMS_DASHBOARD_H
#define EMS_DASHBOARD_H

#include "telemetry.h"
#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_DASH_DEVICES_MAX 10000
#define EMS_DASH_PATH_MAX 128   /* characters of an error's path */
#define EMS_DASH_REASON_MAX 256 /* characters of an error's reason */

/* A decoded (un)subscribe. `devices` is borrowed from the parsed message
 * (valid while it lives); read the ids with ems_dash_sub_device(). */
typedef struct {
    bool unsubscribe;      /* false: subscribe */
    bool all;              /* "devices": "*" */
    bool fleet;            /* "mode": "fleet" (then all is true) */
    const json_t *devices; /* the array of ids, NULL when all */
} ems_dash_sub_t;

/* Validates a subscribe or unsubscribe; 0 or EMS_EINVAL with err
 * ("devices[2]: \"a b\" is not 1..64 characters of [A-Za-z0-9_.-]"). */
int ems_dash_sub_from_json(const json_t *obj, ems_dash_sub_t *out, ems_verr_t *err);

/* Number of ids (0 when all) and the i-th id (borrowed). */
size_t ems_dash_sub_count(const ems_dash_sub_t *s);
const char *ems_dash_sub_device(const ems_dash_sub_t *s, size_t i);

/* Validates {"type":"telemetry","packet":{...}}; the packet is decoded into
 * *out and errors are named "packet.battery.soc". */
int ems_dash_telemetry_from_json(const json_t *obj, ems_telemetry_t *out, ems_verr_t *err);

/* Wraps an encoded packet (already valid JSON, e.g. from
 * ems_telemetry_encode or as received) without allocating. Returns the
 * length or EMS_ENOSPC. */
int ems_dash_telemetry_encode(const char *packet, size_t len, char *buf, size_t cap);

typedef struct {
    char device_id[EMS_DEVICE_ID_MAX + 1];
    bool online;
    int64_t since_ms; /* UTC, Unix ms */
} ems_dash_device_t;

/* Validates and decodes {"type":"device",...}: 0 or EMS_EINVAL with err. */
int ems_dash_device_from_json(const json_t *obj, ems_dash_device_t *out, ems_verr_t *err);
/* Length, EMS_EINVAL (bad id or time) or EMS_ENOSPC; 192 bytes suffice. */
int ems_dash_device_encode(const ems_dash_device_t *d, char *buf, size_t cap);

/* {"type":"error","path":...,"reason":...}: path may be empty, reason 1..256
 * characters. Decoding only validates (the browser is the consumer). */
int ems_dash_error_validate(const json_t *obj, ems_verr_t *err);
/* Encodes a validation error for the browser: length, EMS_ENOSPC; 1536
 * bytes suffice. */
int ems_dash_error_encode(const ems_verr_t *e, char *buf, size_t cap);

/* ---- the fleet view ---- */

#define EMS_DASH_FLEET_FRAME_MAX 65536 /* bytes of one fleet frame at most */
#define EMS_DASH_FLEET_ITEM_MAX 512    /* bytes of one encoded item at most */

/* One device's latest state in a `fleet` frame. The telemetry members
 * (timestamp .. grid_power) come together or not at all: a device that has
 * not sent a live packet yet is listed with its online state only. */
typedef struct {
    char device_id[EMS_DEVICE_ID_MAX + 1];
    bool online;
    int64_t since_ms; /* online/offline since, UTC ms; 0: unknown (omitted) */
    bool has_telemetry;
    int64_t timestamp_ms; /* the newest live packet's own timestamp */
    ems_state_t state;
    ems_mode_t mode;
    uint32_t error_flags; /* ems_fault_t bits */
    bool has_target_mode; /* the packet's system_status.target_mode, if any */
    ems_target_mode_t target_mode;
    bool has_target_power; /* the packet's system_status.target_power, if any */
    double target_power;   /* W, 0..1e6 */
    double soc;           /* battery.soc, % */
    double battery_power; /* W, > 0 charging */
    double grid_power;    /* W, < 0 exporting */
} ems_dash_fleet_item_t;

/* Copies the fleet members of a packet into *it (device_id, timestamp and
 * the values; online and since are left alone). */
void ems_dash_fleet_item_set(ems_dash_fleet_item_t *it, const ems_telemetry_t *t);

/* Encodes one item (an object, no type) into buf: the length, EMS_EINVAL
 * (a value the decoder would refuse) or EMS_ENOSPC.
 * EMS_DASH_FLEET_ITEM_MAX bytes always suffice. */
int ems_dash_fleet_item_encode(const ems_dash_fleet_item_t *it, char *buf, size_t cap);

/* Builds one {"type":"fleet","devices":[...]} frame in a caller's buffer
 * without allocating: init, add items until one does not fit, finish. */
typedef struct {
    char *buf;
    size_t cap, len;
    size_t count; /* items added */
} ems_dash_fleet_frame_t;

/* cap must be at least 64 bytes; the frame never grows beyond it. */
void ems_dash_fleet_frame_init(ems_dash_fleet_frame_t *f, char *buf, size_t cap);
/* Appends one item: 0, EMS_ENOSPC (does not fit: the frame is unchanged)
 * or EMS_EINVAL (not encodable: skipped, the frame is unchanged). */
int ems_dash_fleet_frame_add(ems_dash_fleet_frame_t *f, const ems_dash_fleet_item_t *it);
/* Closes the frame: its length (NUL-terminated in buf). */
size_t ems_dash_fleet_frame_finish(ems_dash_fleet_frame_t *f);

/* Validates {"type":"fleet","devices":[...]} and calls each(ud, item) for
 * every item in order (each may be NULL: validate only). 0 or EMS_EINVAL
 * with err ("devices[3].soc: 101 is above the maximum 100"); on error no
 * item after the bad one is reported. */
int ems_dash_fleet_from_json(const json_t *obj,
                             void (*each)(void *ud, const ems_dash_fleet_item_t *it), void *ud,
                             ems_verr_t *err);

#endif
