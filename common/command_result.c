/* command_result.c: the edge's answer to a command (see command_result.h). */
#include "command_result.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "timefmt.h"

#include <string.h>

static const char *const status_names[EMS_RESULT_COUNT] = {
    "accepted", "rejected", "completed", "failed",
};
static const char *const reason_names[EMS_REASON_COUNT] = {
    "POWER_LIMIT", "SOC_LIMIT", "IN_ERROR", "FAULT_ACTIVE",
    "NOT_IN_ERROR", "INVALID", "EXPIRED", "UNSUPPORTED",
};

const char *ems_result_status_name(ems_result_status_t s)
{
    return (unsigned)s < EMS_RESULT_COUNT ? status_names[s] : NULL;
}

const char *ems_result_reason_name(ems_result_reason_t r)
{
    return (unsigned)r < EMS_REASON_COUNT ? reason_names[r] : NULL;
}

static int lookup(const char *const *names, unsigned n, const char *s)
{
    for (unsigned i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

int ems_result_status_parse(const char *s, ems_result_status_t *out)
{
    int i = lookup(status_names, EMS_RESULT_COUNT, s);
    if (i < 0)
        return EMS_EINVAL;
    *out = (ems_result_status_t)i;
    return 0;
}

int ems_result_reason_parse(const char *s, ems_result_reason_t *out)
{
    int i = lookup(reason_names, EMS_REASON_COUNT, s);
    if (i < 0)
        return EMS_EINVAL;
    *out = (ems_result_reason_t)i;
    return 0;
}

static const char *status_name(unsigned i) { return ems_result_status_name((ems_result_status_t)i); }
static const char *reason_name(unsigned i) { return ems_result_reason_name((ems_result_reason_t)i); }

static bool needs_reason(ems_result_status_t s)
{
    return s == EMS_RESULT_REJECTED || s == EMS_RESULT_FAILED;
}

int ems_command_result_from_json(const json_t *obj, ems_command_result_t *out, ems_verr_t *err)
{
    memset(out, 0, sizeof *out);
    unsigned e;
    int rc;
    if (ems_jr_expect_type(obj, "command_result", err) < 0 ||
        ems_jr_ident(obj, "", "command_id", true, EMS_COMMAND_ID_MAX, true, out->command_id,
                     sizeof out->command_id, err) < 0 ||
        ems_jr_enum(obj, "", "status", true, status_name, EMS_RESULT_COUNT, &e, err) < 0)
        return EMS_EINVAL;
    out->status = (ems_result_status_t)e;
    if (needs_reason(out->status) && !json_object_get(obj, "reason")) {
        ems_verr_set(err, "reason", "required member is missing for status %s", status_name(e));
        return EMS_EINVAL;
    }
    if ((rc = ems_jr_enum(obj, "", "reason", false, reason_name, EMS_REASON_COUNT, &e, err)) < 0)
        return EMS_EINVAL;
    out->has_reason = rc;
    out->reason = rc ? (ems_result_reason_t)e : EMS_REASON_POWER_LIMIT;
    if ((rc = ems_jr_text(obj, "", "message", false, EMS_RESULT_MESSAGE_MAX, out->message,
                          sizeof out->message, err)) < 0)
        return EMS_EINVAL;
    out->has_message = rc;
    return ems_jr_timestamp(obj, "", "timestamp", true, &out->timestamp_ms, err) < 0 ? EMS_EINVAL
                                                                                     : 0;
}

int ems_command_result_decode(const char *json, size_t len, ems_command_result_t *out,
                              ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_command_result_from_json(root, out, err);
    json_decref(root);
    return rc;
}

int ems_command_result_check(const ems_command_result_t *r, ems_verr_t *err)
{
    size_t mlen = strnlen(r->message, sizeof r->message);
    if (!ems_command_id_valid(r->command_id, strnlen(r->command_id, sizeof r->command_id)))
        ems_verr_set(err, "command_id", "is not 1..64 characters of [A-Za-z0-9_.:-]");
    else if ((unsigned)r->status >= EMS_RESULT_COUNT)
        ems_verr_set(err, "status", "%d is not a known status", (int)r->status);
    else if (needs_reason(r->status) && !r->has_reason)
        ems_verr_set(err, "reason", "required member is missing for status %s",
                     status_names[r->status]);
    else if (r->has_reason && (unsigned)r->reason >= EMS_REASON_COUNT)
        ems_verr_set(err, "reason", "%d is not a known reason", (int)r->reason);
    else if (r->has_message && (mlen == sizeof r->message || !ems_jr_utf8_valid(r->message, mlen) ||
                                ems_jr_utf8_chars(r->message, mlen) > EMS_RESULT_MESSAGE_MAX))
        ems_verr_set(err, "message", "is not UTF-8 of at most 256 characters");
    else if (!ems_time_ms_valid(r->timestamp_ms))
        ems_verr_set(err, "timestamp", "is outside the years 0000..9999");
    else
        return 0;
    return EMS_EINVAL;
}

int ems_command_result_encode(const ems_command_result_t *r, char *buf, size_t cap)
{
    if (ems_command_result_check(r, NULL) < 0)
        return EMS_EINVAL;
    char ts[EMS_TIME_STR_MAX];
    ems_time_format(r->timestamp_ms, ts, sizeof ts);
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "command_result");
    ems_jw_key(&w, "command_id");
    ems_jw_str(&w, r->command_id);
    ems_jw_key(&w, "status");
    ems_jw_str(&w, status_names[r->status]);
    if (r->has_reason) {
        ems_jw_key(&w, "reason");
        ems_jw_str(&w, reason_names[r->reason]);
    }
    if (r->has_message) {
        ems_jw_key(&w, "message");
        ems_jw_str(&w, r->message);
    }
    ems_jw_key(&w, "timestamp");
    ems_jw_str(&w, ts);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}

bool ems_command_result_equal(const ems_command_result_t *a, const ems_command_result_t *b)
{
    return strcmp(a->command_id, b->command_id) == 0 && a->status == b->status &&
           a->has_reason == b->has_reason && (!a->has_reason || a->reason == b->reason) &&
           a->has_message == b->has_message &&
           (!a->has_message || strcmp(a->message, b->message) == 0) &&
           a->timestamp_ms == b->timestamp_ms;
}
