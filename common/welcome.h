/* welcome.h: the gateway's first message on a device connection.
 *
 * docs/protocol.md section 3.4, proto-schemas/welcome.schema.json:
 *   { "type": "welcome", "device_id": "ems_001",
 *     "server_time": "2026-01-31T12:00:00.512Z" }
 * The edge uses server_time to judge its own clock before NTP has synced.
 */
#ifndef EMS_WELCOME_H
#define EMS_WELCOME_H

#include "telemetry.h"
#include "valid.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_WELCOME_JSON_MAX 160 /* an encoded welcome always fits */

typedef struct {
    char device_id[EMS_DEVICE_ID_MAX + 1];
    int64_t server_time_ms; /* UTC, Unix ms */
} ems_welcome_t;

/* Decodes and validates; 0 or EMS_EINVAL with err. */
int ems_welcome_decode(const char *json, size_t len, ems_welcome_t *out, ems_verr_t *err);
/* The same from a parsed object (borrowed, not modified). */
int ems_welcome_from_json(const json_t *obj, ems_welcome_t *out, ems_verr_t *err);

/* Encodes without allocating: the length, EMS_EINVAL (bad device id or
 * time) or EMS_ENOSPC. */
int ems_welcome_encode(const ems_welcome_t *w, char *buf, size_t cap);

#endif
