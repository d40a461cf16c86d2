/* command.h: the downstream control command (dashboard -> cloud -> edge).
 *
 * The seed's two commands (spec "Downstream Payload") plus the optional
 * expires_at extension; docs/protocol.md section 3.1 and
 * proto-schemas/command.schema.json:
 *   { "command_id": "cmd_8293", "action": "SET_MODE",
 *     "payload": { "target_mode": "MANUAL_DISCHARGE", "target_power": 500 } }
 *   { "command_id": "cmd_8294", "action": "RESET_ERROR", "payload": {} }
 * A message without "type" that has "action" is a command (message.h).
 *
 * Rules beyond the types: SET_MODE needs payload.target_mode;
 * payload.target_power (W, 0..1000000) is optional except for MANUAL_CHARGE
 * and MANUAL_DISCHARGE, which need it; RESET_ERROR's payload is an empty
 * object. Unknown top-level members are ignored.
 */
#ifndef EMS_COMMAND_H
#define EMS_COMMAND_H

#include "status.h"
#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_COMMAND_ID_MAX 64         /* [A-Za-z0-9_.:-]{1,64} */
#define EMS_COMMAND_POWER_MAX 1000000.0 /* W */
#define EMS_COMMAND_JSON_MAX 512      /* an encoded command always fits */

typedef enum {
    EMS_ACTION_SET_MODE = 0,
    EMS_ACTION_RESET_ERROR,
    EMS_ACTION_COUNT
} ems_action_t;

/* Plain data, copyable. Fields that an action does not use are zero. */
typedef struct {
    char command_id[EMS_COMMAND_ID_MAX + 1];
    ems_action_t action;
    ems_target_mode_t target_mode; /* SET_MODE only */
    bool has_target_power;         /* SET_MODE only */
    double target_power;           /* W, 0..EMS_COMMAND_POWER_MAX */
    bool has_expires_at;
    int64_t expires_at_ms; /* UTC, Unix ms */
} ems_command_t;

/* "SET_MODE" / "RESET_ERROR" (static string), NULL for an unknown value. */
const char *ems_action_name(ems_action_t a);
/* 0, or EMS_EINVAL leaving *out alone. */
int ems_action_parse(const char *s, ems_action_t *out);

/* True when id[0..len) is 1..64 of [A-Za-z0-9_.:-]. */
bool ems_command_id_valid(const char *id, size_t len);

/* Decodes and validates a command from `len` bytes of JSON text. Returns 0,
 * or EMS_EINVAL with `err` naming the path ("payload.target_power: ...").
 * *out is unspecified on error. */
int ems_command_decode(const char *json, size_t len, ems_command_t *out, ems_verr_t *err);

/* The same from a parsed object (borrowed, not modified). */
int ems_command_from_json(const json_t *obj, ems_command_t *out, ems_verr_t *err);

/* A command as a REST client submits it (docs/api.md): the same rules,
 * but command_id is optional (left "" when absent: the gateway makes one)
 * and expires_at is not read (the gateway sets it from ttl_s). */
int ems_command_request_from_json(const json_t *obj, ems_command_t *out, ems_verr_t *err);

/* Checks a struct against the decoder's rules: 0 or EMS_EINVAL with err. */
int ems_command_check(const ems_command_t *c, ems_verr_t *err);

/* Encodes into buf (NUL-terminated) without allocating. Returns the length,
 * EMS_EINVAL if the struct fails ems_command_check, or EMS_ENOSPC
 * (EMS_COMMAND_JSON_MAX always suffices). */
int ems_command_encode(const ems_command_t *c, char *buf, size_t cap);

/* Field-by-field equality (bitwise for target_power). */
bool ems_command_equal(const ems_command_t *a, const ems_command_t *b);

#endif
