/* command.c: the downstream control command (see command.h). */
#include "command.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "timefmt.h"

#include <math.h>
#include <string.h>

static const char *const action_names[EMS_ACTION_COUNT] = {"SET_MODE", "RESET_ERROR"};

const char *ems_action_name(ems_action_t a)
{
    return (unsigned)a < EMS_ACTION_COUNT ? action_names[a] : NULL;
}

int ems_action_parse(const char *s, ems_action_t *out)
{
    for (unsigned i = 0; s && i < EMS_ACTION_COUNT; i++) {
        if (strcmp(s, action_names[i]) == 0) {
            *out = (ems_action_t)i;
            return 0;
        }
    }
    return EMS_EINVAL;
}

static const char *action_name(unsigned i) { return ems_action_name((ems_action_t)i); }
static const char *target_name(unsigned i) { return ems_target_mode_name((ems_target_mode_t)i); }

bool ems_command_id_valid(const char *id, size_t len)
{
    return ems_jr_ident_valid(id, len, EMS_COMMAND_ID_MAX, true);
}

static bool needs_power(ems_target_mode_t t)
{
    return t == EMS_TARGET_MANUAL_CHARGE || t == EMS_TARGET_MANUAL_DISCHARGE;
}

static int decode_set_mode(const json_t *p, ems_command_t *c, ems_verr_t *err)
{
    unsigned t;
    if (ems_jr_enum(p, "payload", "target_mode", true, target_name, EMS_TARGET_COUNT, &t, err) < 0)
        return EMS_EINVAL;
    c->target_mode = (ems_target_mode_t)t;
    if (needs_power(c->target_mode) && !json_object_get(p, "target_power")) {
        ems_verr_set(err, "payload.target_power", "required member is missing for %s",
                     target_name(t));
        return EMS_EINVAL;
    }
    int rc = ems_jr_number(p, "payload", "target_power", false, 0, EMS_COMMAND_POWER_MAX,
                           &c->target_power, err);
    if (rc < 0)
        return EMS_EINVAL;
    c->has_target_power = rc == 1;
    return 0;
}

static int decode_payload(const json_t *obj, ems_command_t *c, ems_verr_t *err)
{
    const json_t *p;
    if (ems_jr_object(obj, "", "payload", true, &p, err) < 0)
        return EMS_EINVAL;
    if (c->action == EMS_ACTION_SET_MODE)
        return decode_set_mode(p, c, err);
    /* RESET_ERROR carries nothing; a member here means a confused sender. */
    if (json_object_size(p) != 0) {
        ems_verr_set(err, "payload", "must be an empty object for RESET_ERROR");
        return EMS_EINVAL;
    }
    return 0;
}

/* `request`: the REST form (command_id optional, expires_at not read). */
static int from_json(const json_t *obj, bool request, ems_command_t *out, ems_verr_t *err)
{
    memset(out, 0, sizeof *out);
    unsigned a;
    int rc;
    if (ems_jr_require_object(obj, err) < 0 ||
        ems_jr_ident(obj, "", "command_id", !request, EMS_COMMAND_ID_MAX, true, out->command_id,
                     sizeof out->command_id, err) < 0 ||
        ems_jr_enum(obj, "", "action", true, action_name, EMS_ACTION_COUNT, &a, err) < 0)
        return EMS_EINVAL;
    out->action = (ems_action_t)a;
    if (decode_payload(obj, out, err) < 0)
        return EMS_EINVAL;
    if (request)
        return 0;
    if ((rc = ems_jr_timestamp(obj, "", "expires_at", false, &out->expires_at_ms, err)) < 0)
        return EMS_EINVAL;
    out->has_expires_at = rc;
    return 0;
}

int ems_command_from_json(const json_t *obj, ems_command_t *out, ems_verr_t *err)
{
    return from_json(obj, false, out, err);
}

int ems_command_request_from_json(const json_t *obj, ems_command_t *out, ems_verr_t *err)
{
    return from_json(obj, true, out, err);
}

int ems_command_decode(const char *json, size_t len, ems_command_t *out, ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_command_from_json(root, out, err);
    json_decref(root);
    return rc;
}

static int check_set_mode(const ems_command_t *c, ems_verr_t *err)
{
    if ((unsigned)c->target_mode >= EMS_TARGET_COUNT)
        ems_verr_set(err, "payload.target_mode", "%d is not a known target mode",
                     (int)c->target_mode);
    else if (!c->has_target_power && needs_power(c->target_mode))
        ems_verr_set(err, "payload.target_power", "required member is missing for %s",
                     target_name(c->target_mode));
    else if (c->has_target_power &&
             !(c->target_power >= 0 && c->target_power <= EMS_COMMAND_POWER_MAX))
        ems_verr_set(err, "payload.target_power", "is not a number in 0..1000000");
    else
        return 0;
    return EMS_EINVAL;
}

int ems_command_check(const ems_command_t *c, ems_verr_t *err)
{
    if (!ems_command_id_valid(c->command_id, strnlen(c->command_id, sizeof c->command_id)))
        ems_verr_set(err, "command_id", "is not 1..64 characters of [A-Za-z0-9_.:-]");
    else if ((unsigned)c->action >= EMS_ACTION_COUNT)
        ems_verr_set(err, "action", "%d is not a known action", (int)c->action);
    else if (c->has_expires_at && !ems_time_ms_valid(c->expires_at_ms))
        ems_verr_set(err, "expires_at", "is outside the years 0000..9999");
    else if (c->action == EMS_ACTION_SET_MODE)
        return check_set_mode(c, err);
    else
        return 0;
    return EMS_EINVAL;
}

int ems_command_encode(const ems_command_t *c, char *buf, size_t cap)
{
    if (ems_command_check(c, NULL) < 0)
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "command_id");
    ems_jw_str(&w, c->command_id);
    ems_jw_key(&w, "action");
    ems_jw_str(&w, ems_action_name(c->action));
    ems_jw_key(&w, "payload");
    ems_jw_obj_open(&w);
    if (c->action == EMS_ACTION_SET_MODE) {
        ems_jw_key(&w, "target_mode");
        ems_jw_str(&w, ems_target_mode_name(c->target_mode));
        if (c->has_target_power) {
            ems_jw_key(&w, "target_power");
            ems_jw_num(&w, c->target_power);
        }
    }
    ems_jw_obj_close(&w);
    if (c->has_expires_at) {
        char ts[EMS_TIME_STR_MAX];
        ems_time_format(c->expires_at_ms, ts, sizeof ts);
        ems_jw_key(&w, "expires_at");
        ems_jw_str(&w, ts);
    }
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}

bool ems_command_equal(const ems_command_t *a, const ems_command_t *b)
{
    return strncmp(a->command_id, b->command_id, sizeof a->command_id) == 0 &&
           a->action == b->action && a->target_mode == b->target_mode &&
           a->has_target_power == b->has_target_power &&
           (!a->has_target_power ||
            memcmp(&a->target_power, &b->target_power, sizeof a->target_power) == 0) &&
           a->has_expires_at == b->has_expires_at &&
           (!a->has_expires_at || a->expires_at_ms == b->expires_at_ms);
}
