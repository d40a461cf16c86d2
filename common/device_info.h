/* device_info.h: what an edge tells the cloud about itself (edge -> cloud).
 *
 * docs/protocol.md section 2.4, proto-schemas/device-info.schema.json:
 *   { "type": "device_info", "firmware": "ems-edge 0.1.0", "capacity_wh": 10000,
 *     "limits": { "max_charge_w": 5000, "max_discharge_w": 5000,
 *                 "soc_min": 10, "soc_max": 95 } }
 * Sent once after each connect. All members but `type` are optional; the
 * numbers are >= 0, SoC limits 0..100 with soc_min <= soc_max (a rule JSON
 * Schema cannot state; the decoder enforces it). `firmware` is at most 128
 * characters without NUL (a bound this project sets so the struct is fixed).
 */
#ifndef EMS_DEVICE_INFO_H
#define EMS_DEVICE_INFO_H

#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define EMS_FIRMWARE_MAX 128      /* characters */
#define EMS_DEVICE_INFO_JSON_MAX 1024 /* an encoded device_info always fits */

typedef struct {
    bool has_firmware;
    char firmware[4 * EMS_FIRMWARE_MAX + 1]; /* UTF-8 */
    bool has_capacity_wh;
    double capacity_wh;
    bool has_max_charge_w, has_max_discharge_w, has_soc_min, has_soc_max;
    double max_charge_w, max_discharge_w; /* W */
    double soc_min, soc_max;              /* %, 0..100 */
} ems_device_info_t;

/* Decodes and validates; 0 or EMS_EINVAL with err ("limits.soc_max: ..."). */
int ems_device_info_decode(const char *json, size_t len, ems_device_info_t *out,
                           ems_verr_t *err);
/* The same from a parsed object (borrowed, not modified). */
int ems_device_info_from_json(const json_t *obj, ems_device_info_t *out, ems_verr_t *err);

/* Checks the struct: 0 or EMS_EINVAL with err. */
int ems_device_info_check(const ems_device_info_t *d, ems_verr_t *err);

/* Encodes without allocating: the length, EMS_EINVAL or EMS_ENOSPC. The
 * "limits" object is written only when it has a member. */
int ems_device_info_encode(const ems_device_info_t *d, char *buf, size_t cap);

#endif
