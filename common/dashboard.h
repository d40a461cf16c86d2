/* dashboard.h: the messages on /ws/dashboard (docs/protocol.md section 4).
 *
 * Browser to gateway (proto-schemas/dashboard-subscribe.schema.json):
 *   { "type": "subscribe",   "devices": ["ems_001", "ems_002"] }
 *   { "type": "subscribe",   "devices": "*" }
 *   { "type": "unsubscribe", "devices": ["ems_001"] }
 * Gateway to browser (dashboard-telemetry, dashboard-device, dashboard-error):
 *   { "type": "telemetry", "packet": { ...telemetry... } }
 *   { "type": "device", "device_id": "ems_001", "online": false, "since": "..." }
 *   { "type": "error", "path": "devices", "reason": "..." }
 * A device list holds 0..10000 device ids.
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

#endif
