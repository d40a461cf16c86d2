/* dashboard.c: /ws/dashboard messages (see dashboard.h). */
#include "dashboard.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "timefmt.h"

#include <string.h>

static int sub_type(const json_t *obj, bool *unsub, ems_verr_t *err)
{
    if (ems_jr_require_object(obj, err) < 0)
        return EMS_EINVAL;
    const json_t *t = json_object_get(obj, "type");
    *unsub = json_is_string(t) && strcmp(json_string_value(t), "unsubscribe") == 0 &&
             json_string_length(t) == 11;
    return *unsub ? 0 : ems_jr_expect_type(obj, "subscribe", err);
}

static int sub_list(const json_t *arr, ems_verr_t *err)
{
    size_t n = json_array_size(arr);
    if (n > EMS_DASH_DEVICES_MAX) {
        ems_verr_set(err, "devices", "has %zu ids; at most 10000 are allowed", n);
        return EMS_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        ems_jr_at_t at = {"devices", NULL, (long)i};
        const char *s = NULL;
        size_t len = 0;
        char q[64], path[32];
        if (ems_jr_v_string(json_array_get(arr, i), &at, &s, &len, err) < 0)
            return EMS_EINVAL;
        if (!ems_device_id_valid(s, len)) {
            ems_verr_set(err, ems_jr_path(&at, path, sizeof path),
                         "%s is not 1..64 characters of [A-Za-z0-9_.-]",
                         ems_jr_quote(s, len, q, sizeof q));
            return EMS_EINVAL;
        }
    }
    return 0;
}

int ems_dash_sub_from_json(const json_t *obj, ems_dash_sub_t *out, ems_verr_t *err)
{
    const json_t *d;
    memset(out, 0, sizeof *out);
    if (sub_type(obj, &out->unsubscribe, err) < 0 ||
        ems_jr_member(obj, "", "devices", true, &d, err) < 0)
        return EMS_EINVAL;
    if (json_is_string(d) && json_string_length(d) == 1 && json_string_value(d)[0] == '*') {
        out->all = true;
        return 0;
    }
    if (!json_is_array(d)) {
        ems_verr_set(err, "devices", "expected \"*\" or an array of device ids, got %s",
                     json_is_string(d) ? "another string" : ems_jr_type_name(d));
        return EMS_EINVAL;
    }
    out->devices = d;
    return sub_list(d, err);
}

size_t ems_dash_sub_count(const ems_dash_sub_t *s)
{
    return s->all ? 0 : json_array_size(s->devices);
}

const char *ems_dash_sub_device(const ems_dash_sub_t *s, size_t i)
{
    return s->all ? NULL : json_string_value(json_array_get(s->devices, i));
}

int ems_dash_telemetry_from_json(const json_t *obj, ems_telemetry_t *out, ems_verr_t *err)
{
    const json_t *pkt;
    if (ems_jr_expect_type(obj, "telemetry", err) < 0 ||
        ems_jr_member(obj, "", "packet", true, &pkt, err) < 0)
        return EMS_EINVAL;
    if (ems_telemetry_from_json(pkt, out, err) < 0) {
        ems_verr_prefix(err, "packet");
        return EMS_EINVAL;
    }
    return 0;
}

int ems_dash_telemetry_encode(const char *packet, size_t len, char *buf, size_t cap)
{
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "telemetry");
    ems_jw_key(&w, "packet");
    ems_jw_raw(&w, packet, len);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}

int ems_dash_device_from_json(const json_t *obj, ems_dash_device_t *out, ems_verr_t *err)
{
    memset(out, 0, sizeof *out);
    if (ems_jr_expect_type(obj, "device", err) < 0 ||
        ems_jr_ident(obj, "", "device_id", true, EMS_DEVICE_ID_MAX, false, out->device_id,
                     sizeof out->device_id, err) < 0 ||
        ems_jr_bool(obj, "", "online", true, &out->online, err) < 0 ||
        ems_jr_timestamp(obj, "", "since", true, &out->since_ms, err) < 0)
        return EMS_EINVAL;
    return 0;
}

int ems_dash_device_encode(const ems_dash_device_t *d, char *buf, size_t cap)
{
    char ts[EMS_TIME_STR_MAX];
    if (!ems_device_id_valid(d->device_id, strnlen(d->device_id, sizeof d->device_id)) ||
        ems_time_format(d->since_ms, ts, sizeof ts) < 0)
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "device");
    ems_jw_key(&w, "device_id");
    ems_jw_str(&w, d->device_id);
    ems_jw_key(&w, "online");
    ems_jw_bool(&w, d->online);
    ems_jw_key(&w, "since");
    ems_jw_str(&w, ts);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}

int ems_dash_error_validate(const json_t *obj, ems_verr_t *err)
{
    char path[4 * EMS_DASH_PATH_MAX + 1], reason[4 * EMS_DASH_REASON_MAX + 1];
    if (ems_jr_expect_type(obj, "error", err) < 0 ||
        ems_jr_text(obj, "", "path", true, EMS_DASH_PATH_MAX, path, sizeof path, err) < 0 ||
        ems_jr_text(obj, "", "reason", true, EMS_DASH_REASON_MAX, reason, sizeof reason, err) < 0)
        return EMS_EINVAL;
    if (!reason[0]) {
        ems_verr_set(err, "reason", "must not be empty");
        return EMS_EINVAL;
    }
    return 0;
}

int ems_dash_error_encode(const ems_verr_t *e, char *buf, size_t cap)
{
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "error");
    ems_jw_key(&w, "path");
    ems_jw_str(&w, e->path);
    ems_jw_key(&w, "reason");
    ems_jw_str(&w, e->reason[0] ? e->reason : "refused");
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}
