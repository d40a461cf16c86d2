/* message.c: classifying and validating any wire message (see message.h). */
#include "message.h"

#include "ack.h"
#include "batch.h"
#include "command.h"
#include "command_result.h"
#include "dashboard.h"
#include "device_info.h"
#include "error.h"
#include "jread.h"
#include "nack.h"
#include "telemetry.h"
#include "welcome.h"

#include <string.h>

static const char *const kind_names[EMS_MSG_COUNT] = {
    "unknown", "telemetry", "command", "command-result", "ack", "nack", "welcome",
    "telemetry-batch", "dashboard-subscribe", "dashboard-telemetry", "dashboard-device",
    "dashboard-error", "device-info", "dashboard-fleet",
};

/* The "type" values, and the kind each one names. */
static const struct {
    const char *type;
    ems_msg_kind_t kind;
} types[] = {
    {"command_result", EMS_MSG_COMMAND_RESULT}, {"ack", EMS_MSG_ACK},
    {"nack", EMS_MSG_NACK},                     {"welcome", EMS_MSG_WELCOME},
    {"telemetry_batch", EMS_MSG_TELEMETRY_BATCH}, {"subscribe", EMS_MSG_DASH_SUBSCRIBE},
    {"unsubscribe", EMS_MSG_DASH_SUBSCRIBE},    {"telemetry", EMS_MSG_DASH_TELEMETRY},
    {"device", EMS_MSG_DASH_DEVICE},            {"error", EMS_MSG_DASH_ERROR},
    {"device_info", EMS_MSG_DEVICE_INFO},
    {"fleet", EMS_MSG_DASH_FLEET},
};

const char *ems_message_kind_name(ems_msg_kind_t k)
{
    return (unsigned)k < EMS_MSG_COUNT ? kind_names[k] : kind_names[0];
}

int ems_message_kind_parse(const char *s, ems_msg_kind_t *out)
{
    for (unsigned i = 1; s && i < EMS_MSG_COUNT; i++) {
        if (strcmp(s, kind_names[i]) == 0) {
            *out = (ems_msg_kind_t)i;
            return 0;
        }
    }
    return EMS_EINVAL;
}

static ems_msg_kind_t by_type(const json_t *t)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (json_string_length(t) == strlen(types[i].type) &&
            strcmp(json_string_value(t), types[i].type) == 0)
            return types[i].kind;
    return EMS_MSG_UNKNOWN;
}

ems_msg_kind_t ems_message_identify(const json_t *v, ems_verr_t *err)
{
    if (ems_jr_require_object(v, err) < 0)
        return EMS_MSG_UNKNOWN;
    const json_t *t = json_object_get(v, "type");
    if (t) {
        ems_msg_kind_t k = json_is_string(t) ? by_type(t) : EMS_MSG_UNKNOWN;
        char q[64];
        if (k == EMS_MSG_UNKNOWN && json_is_string(t))
            ems_verr_set(err, "type", "%s is not a known message type",
                         ems_jr_quote(json_string_value(t), json_string_length(t), q, sizeof q));
        else if (k == EMS_MSG_UNKNOWN)
            ems_verr_set(err, "type", "expected a string, got %s", ems_jr_type_name(t));
        return k;
    }
    if (json_object_get(v, "device_id"))
        return EMS_MSG_TELEMETRY;
    if (json_object_get(v, "action"))
        return EMS_MSG_COMMAND;
    ems_verr_set(err, "",
                 "not a known message: no \"type\", and neither \"device_id\" (telemetry) "
                 "nor \"action\" (command)");
    return EMS_MSG_UNKNOWN;
}

ems_msg_kind_t ems_message_classify(const json_t *v)
{
    return ems_message_identify(v, NULL);
}

/* The decoders want somewhere to put what they decode. */
typedef union {
    ems_telemetry_t telemetry;
    ems_command_t command;
    ems_command_result_t result;
    ems_ack_t ack;
    ems_nack_t nack;
    ems_welcome_t welcome;
    ems_dash_sub_t sub;
    ems_dash_device_t device;
    ems_device_info_t info;
} any_msg_t;

int ems_message_validate(ems_msg_kind_t kind, const json_t *v, ems_verr_t *err)
{
    any_msg_t m;
    switch (kind) {
    case EMS_MSG_TELEMETRY: return ems_telemetry_from_json(v, &m.telemetry, err);
    case EMS_MSG_COMMAND: return ems_command_from_json(v, &m.command, err);
    case EMS_MSG_COMMAND_RESULT: return ems_command_result_from_json(v, &m.result, err);
    case EMS_MSG_ACK: return ems_ack_from_json(v, &m.ack, err);
    case EMS_MSG_NACK: return ems_nack_from_json(v, &m.nack, err);
    case EMS_MSG_WELCOME: return ems_welcome_from_json(v, &m.welcome, err);
    case EMS_MSG_TELEMETRY_BATCH:
        return ems_batch_from_json(v, NULL, NULL, err) == 0 ? 0 : EMS_EINVAL;
    case EMS_MSG_DASH_SUBSCRIBE: return ems_dash_sub_from_json(v, &m.sub, err);
    case EMS_MSG_DASH_TELEMETRY: return ems_dash_telemetry_from_json(v, &m.telemetry, err);
    case EMS_MSG_DASH_DEVICE: return ems_dash_device_from_json(v, &m.device, err);
    case EMS_MSG_DASH_ERROR: return ems_dash_error_validate(v, err);
    case EMS_MSG_DEVICE_INFO: return ems_device_info_from_json(v, &m.info, err);
    case EMS_MSG_DASH_FLEET: return ems_dash_fleet_from_json(v, NULL, NULL, err);
    default: break;
    }
    ems_verr_set(err, "", "unknown message kind %d", (int)kind);
    return EMS_EINVAL;
}

int ems_message_check_text(const char *text, size_t len, ems_msg_kind_t kind,
                           ems_msg_kind_t *kind_out, ems_verr_t *err)
{
    json_t *root = ems_jr_parse(text, len, err);
    if (kind_out)
        *kind_out = kind;
    if (!root)
        return EMS_EINVAL;
    if (kind == EMS_MSG_UNKNOWN)
        kind = ems_message_identify(root, err);
    if (kind_out)
        *kind_out = kind;
    int rc = kind == EMS_MSG_UNKNOWN ? EMS_EINVAL : ems_message_validate(kind, root, err);
    json_decref(root);
    return rc;
}
