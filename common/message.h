/* message.h: which wire message a JSON value is, and validating any kind.
 *
 * Receivers that accept several kinds on one socket classify first:
 *   - an object with "type" is classified by it ("command_result", "ack",
 *     "nack", "welcome", "telemetry_batch", "device_info", "subscribe"/"unsubscribe",
 *     "telemetry", "device", "error");
 *   - an object without "type" that has "device_id" is a telemetry packet;
 *   - one without "type" that has "action" is a command (the seed's two
 *     messages predate "type").
 * The kind names below are also the names of the schema files
 * (proto-schemas/<name>.schema.json) and of `emsctl validate --kind`.
 */
#ifndef EMS_MESSAGE_H
#define EMS_MESSAGE_H

#include "valid.h"

#include <jansson.h>
#include <stddef.h>

typedef enum {
    EMS_MSG_UNKNOWN = 0,
    EMS_MSG_TELEMETRY,           /* "telemetry"            edge -> cloud */
    EMS_MSG_COMMAND,             /* "command"              cloud -> edge */
    EMS_MSG_COMMAND_RESULT,      /* "command-result"       edge -> cloud */
    EMS_MSG_ACK,                 /* "ack"                  cloud -> edge */
    EMS_MSG_NACK,                /* "nack"                 cloud -> edge */
    EMS_MSG_WELCOME,             /* "welcome"              cloud -> edge */
    EMS_MSG_TELEMETRY_BATCH,     /* "telemetry-batch"      edge -> cloud */
    EMS_MSG_DASH_SUBSCRIBE,      /* "dashboard-subscribe"  browser -> cloud (also unsubscribe) */
    EMS_MSG_DASH_TELEMETRY,      /* "dashboard-telemetry"  cloud -> browser */
    EMS_MSG_DASH_DEVICE,         /* "dashboard-device"     cloud -> browser */
    EMS_MSG_DASH_ERROR,          /* "dashboard-error"      cloud -> browser */
    EMS_MSG_DEVICE_INFO,         /* "device-info"          edge -> cloud */
    EMS_MSG_DASH_FLEET,          /* "dashboard-fleet"      cloud -> browser */
    EMS_MSG_COUNT
} ems_msg_kind_t;

/* The kind's name ("command-result"), a static string; "unknown" for
 * EMS_MSG_UNKNOWN and out-of-range values. */
const char *ems_message_kind_name(ems_msg_kind_t k);

/* Parses a kind name; 0, or EMS_EINVAL leaving *out alone. */
int ems_message_kind_parse(const char *s, ems_msg_kind_t *out);

/* Classifies a parsed value by the rules above; EMS_MSG_UNKNOWN when it
 * fits none. Looks at "type", "device_id" and "action" only. */
ems_msg_kind_t ems_message_classify(const json_t *v);

/* Like ems_message_classify, but explains an EMS_MSG_UNKNOWN in err
 * ("type: \"foo\" is not a known message type"). Returns the kind. */
ems_msg_kind_t ems_message_identify(const json_t *v, ems_verr_t *err);

/* Validates `v` as a message of `kind` with the kind's decoder. Returns 0,
 * or EMS_EINVAL with err (the first refused packet for a batch). */
int ems_message_validate(ems_msg_kind_t kind, const json_t *v, ems_verr_t *err);

/* Parses `len` bytes (ems_jr_parse rules) and validates them as `kind`, or
 * classifies first when kind is EMS_MSG_UNKNOWN. Returns 0 or EMS_EINVAL
 * with err; *kind_out (may be NULL) receives the kind used. */
int ems_message_check_text(const char *text, size_t len, ems_msg_kind_t kind,
                           ems_msg_kind_t *kind_out, ems_verr_t *err);

#endif
