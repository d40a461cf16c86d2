/* command_result.h: the edge's answer to a command (edge -> cloud).
 *
 * docs/protocol.md section 2.3, proto-schemas/command-result.schema.json:
 *   { "type": "command_result", "command_id": "cmd_8293", "status": "rejected",
 *     "reason": "POWER_LIMIT", "message": "...", "timestamp": "..." }
 * `reason` is required when the status is rejected or failed; `message` is
 * at most 256 Unicode characters and holds no NUL.
 */
#ifndef EMS_COMMAND_RESULT_H
#define EMS_COMMAND_RESULT_H

#include "command.h"
#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_RESULT_MESSAGE_MAX 256 /* characters; up to 4 bytes each in UTF-8 */
#define EMS_RESULT_JSON_MAX 1536   /* an encoded result always fits */

typedef enum {
    EMS_RESULT_ACCEPTED = 0, /* valid, being applied */
    EMS_RESULT_REJECTED,     /* not applied; reason says why */
    EMS_RESULT_COMPLETED,    /* the new mode is in force */
    EMS_RESULT_FAILED,       /* accepted but could not be completed */
    EMS_RESULT_COUNT
} ems_result_status_t;

typedef enum {
    EMS_REASON_POWER_LIMIT = 0,
    EMS_REASON_SOC_LIMIT,
    EMS_REASON_IN_ERROR,
    EMS_REASON_FAULT_ACTIVE,
    EMS_REASON_NOT_IN_ERROR,
    EMS_REASON_INVALID,
    EMS_REASON_EXPIRED,
    EMS_REASON_UNSUPPORTED,
    EMS_REASON_COUNT
} ems_result_reason_t;

typedef struct {
    char command_id[EMS_COMMAND_ID_MAX + 1];
    ems_result_status_t status;
    bool has_reason;
    ems_result_reason_t reason;
    bool has_message;
    char message[4 * EMS_RESULT_MESSAGE_MAX + 1]; /* UTF-8, NUL-terminated */
    int64_t timestamp_ms;                         /* UTC, Unix ms */
} ems_command_result_t;

/* Wire names ("accepted", "POWER_LIMIT"): static strings, NULL if unknown. */
const char *ems_result_status_name(ems_result_status_t s);
const char *ems_result_reason_name(ems_result_reason_t r);
/* 0, or EMS_EINVAL leaving *out alone. */
int ems_result_status_parse(const char *s, ems_result_status_t *out);
int ems_result_reason_parse(const char *s, ems_result_reason_t *out);

/* Decodes and validates from `len` bytes of JSON ("type" must be
 * "command_result"). Returns 0 or EMS_EINVAL with err; *out is unspecified
 * on error. */
int ems_command_result_decode(const char *json, size_t len, ems_command_result_t *out,
                              ems_verr_t *err);
/* The same from a parsed object (borrowed). */
int ems_command_result_from_json(const json_t *obj, ems_command_result_t *out, ems_verr_t *err);

/* Checks the struct against the decoder's rules (the message must be valid
 * UTF-8 of at most 256 characters). 0 or EMS_EINVAL with err. */
int ems_command_result_check(const ems_command_result_t *r, ems_verr_t *err);

/* Encodes into buf (NUL-terminated) without allocating. Returns the length,
 * EMS_EINVAL (check failed) or EMS_ENOSPC (EMS_RESULT_JSON_MAX suffices). */
int ems_command_result_encode(const ems_command_result_t *r, char *buf, size_t cap);

/* Field-by-field equality (the message compared as text). */
bool ems_command_result_equal(const ems_command_result_t *a, const ems_command_result_t *b);

#endif
