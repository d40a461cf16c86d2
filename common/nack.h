/* nack.h: the cloud refusing a telemetry packet for good (cloud -> edge).
 *
 * docs/protocol.md section 3.3, proto-schemas/nack.schema.json:
 *   { "type": "nack", "seq": 1043, "path": "battery.soc",
 *     "reason": "101 is above the maximum 100" }
 * `seq` is absent when the refused message had none. `path` may be empty
 * (the whole message); at most 128 characters; `reason` 1..256 characters.
 * Neither holds a NUL.
 */
#ifndef EMS_NACK_H
#define EMS_NACK_H

#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_NACK_PATH_MAX 128   /* characters */
#define EMS_NACK_REASON_MAX 256 /* characters */
#define EMS_NACK_JSON_MAX 4096  /* an encoded nack always fits */

typedef struct {
    bool has_seq;
    uint64_t seq;
    char path[4 * EMS_NACK_PATH_MAX + 1];     /* UTF-8 */
    char reason[4 * EMS_NACK_REASON_MAX + 1]; /* UTF-8 */
} ems_nack_t;

/* Fills a nack from a validation error; seq_or_neg < 0 means "no seq". */
void ems_nack_from_verr(ems_nack_t *n, int64_t seq_or_neg, const ems_verr_t *err);

/* Decodes and validates; 0 or EMS_EINVAL with err. */
int ems_nack_decode(const char *json, size_t len, ems_nack_t *out, ems_verr_t *err);
/* The same from a parsed object (borrowed, not modified). */
int ems_nack_from_json(const json_t *obj, ems_nack_t *out, ems_verr_t *err);

/* Checks the struct; 0 or EMS_EINVAL with err. */
int ems_nack_check(const ems_nack_t *n, ems_verr_t *err);

/* Encodes without allocating: the length, EMS_EINVAL or EMS_ENOSPC. */
int ems_nack_encode(const ems_nack_t *n, char *buf, size_t cap);

#endif
