/* dashboard.c: /ws/dashboard messages (see dashboard.h). */
#include "dashboard.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "timefmt.h"

#include <stdio.h>
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

static int sub_mode(const json_t *obj, ems_dash_sub_t *out, ems_verr_t *err);

int ems_dash_sub_from_json(const json_t *obj, ems_dash_sub_t *out, ems_verr_t *err)
{
    const json_t *d;
    memset(out, 0, sizeof *out);
    if (sub_type(obj, &out->unsubscribe, err) < 0 ||
        ems_jr_member(obj, "", "devices", true, &d, err) < 0)
        return EMS_EINVAL;
    if (json_is_string(d) && json_string_length(d) == 1 && json_string_value(d)[0] == '*') {
        out->all = true;
        return sub_mode(obj, out, err);
    }
    if (!json_is_array(d)) {
        ems_verr_set(err, "devices", "expected \"*\" or an array of device ids, got %s",
                     json_is_string(d) ? "another string" : ems_jr_type_name(d));
        return EMS_EINVAL;
    }
    out->devices = d;
    if (sub_list(d, err) < 0)
        return EMS_EINVAL;
    return sub_mode(obj, out, err);
}

/* "mode": "live" (the default) or "fleet"; the fleet view is of every
 * device, so it goes with "devices": "*" only. */
static int sub_mode(const json_t *obj, ems_dash_sub_t *out, ems_verr_t *err)
{
    const json_t *m;
    int got = ems_jr_member(obj, "", "mode", false, &m, err);
    if (got <= 0)
        return got;
    const char *s = json_string_value(m);
    size_t len = json_string_length(m);
    if (!json_is_string(m)) {
        ems_verr_set(err, "mode", "expected \"live\" or \"fleet\", got %s", ems_jr_type_name(m));
        return EMS_EINVAL;
    }
    if (len == 5 && strcmp(s, "fleet") == 0) {
        out->fleet = true;
    } else if (!(len == 4 && strcmp(s, "live") == 0)) {
        char q[64];
        ems_verr_set(err, "mode", "%s is not \"live\" or \"fleet\"",
                     ems_jr_quote(s, len, q, sizeof q));
        return EMS_EINVAL;
    }
    if (out->fleet && !out->all) {
        ems_verr_set(
            err, "devices",
            "the fleet view is of every device: \"mode\": \"fleet\" needs \"devices\": \"*\"");
        return EMS_EINVAL;
    }
    return 0;
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

/* ------------------------------------------------------------ the fleet view */

#define FLEET_HEAD "{\"type\":\"fleet\",\"devices\":["
#define FLEET_TAIL "]}"
#define BATTERY_POWER_MAX 1e6 /* the telemetry schema's bounds */
#define GRID_POWER_MAX 1e7
#define TARGET_POWER_MAX 1e6

static const char *state_name(unsigned i)
{
    return ems_state_name((ems_state_t)i);
}
static const char *mode_name(unsigned i)
{
    return ems_mode_name((ems_mode_t)i);
}
static const char *fault_name(unsigned i)
{
    return ems_fault_name(1u << i);
}
static const char *target_name(unsigned i)
{
    return ems_target_mode_name((ems_target_mode_t)i);
}

void ems_dash_fleet_item_set(ems_dash_fleet_item_t *it, const ems_telemetry_t *t)
{
    snprintf(it->device_id, sizeof it->device_id, "%s", t->device_id);
    it->has_telemetry = true;
    it->timestamp_ms = t->timestamp_ms;
    it->state = t->state;
    it->mode = t->mode;
    it->error_flags = t->error_flags;
    it->has_target_mode = t->has_target_mode;
    it->target_mode = t->target_mode;
    it->has_target_power = t->has_target_power;
    it->target_power = t->target_power;
    it->soc = t->battery_soc;
    it->battery_power = t->battery_power;
    it->grid_power = t->grid_power;
}

static bool in_range(double v, double lim)
{
    return v >= -lim && v <= lim;
} /* false for NaN */

static bool item_valid(const ems_dash_fleet_item_t *it)
{
    if (!ems_device_id_valid(it->device_id, strnlen(it->device_id, sizeof it->device_id)))
        return false;
    if (!it->has_telemetry)
        return true;
    return (unsigned)it->state < EMS_STATE_COUNT && (unsigned)it->mode < EMS_MODE_COUNT &&
           !(it->error_flags & ~EMS_FAULT_ALL) && it->soc >= 0 && it->soc <= 100 &&
           (!it->has_target_mode || (unsigned)it->target_mode < EMS_TARGET_COUNT) &&
           (!it->has_target_power ||
            (it->target_power >= 0 && it->target_power <= TARGET_POWER_MAX)) &&
           in_range(it->battery_power, BATTERY_POWER_MAX) &&
           in_range(it->grid_power, GRID_POWER_MAX);
}

int ems_dash_fleet_item_encode(const ems_dash_fleet_item_t *it, char *buf, size_t cap)
{
    char ts[EMS_TIME_STR_MAX], since[EMS_TIME_STR_MAX];
    if (!item_valid(it) ||
        (it->since_ms && ems_time_format(it->since_ms, since, sizeof since) < 0) ||
        (it->has_telemetry && ems_time_format(it->timestamp_ms, ts, sizeof ts) < 0))
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "device_id");
    ems_jw_str(&w, it->device_id);
    ems_jw_key(&w, "online");
    ems_jw_bool(&w, it->online);
    if (it->since_ms) {
        ems_jw_key(&w, "since");
        ems_jw_str(&w, since);
    }
    if (it->has_telemetry) {
        ems_jw_key(&w, "timestamp");
        ems_jw_str(&w, ts);
        ems_jw_key(&w, "state");
        ems_jw_str(&w, ems_state_name(it->state));
        ems_jw_key(&w, "mode");
        ems_jw_str(&w, ems_mode_name(it->mode));
        ems_jw_key(&w, "error_flags");
        ems_jw_arr_open(&w);
        for (unsigned i = 0; i < EMS_FAULT_COUNT; i++)
            if (it->error_flags & (1u << i))
                ems_jw_str(&w, fault_name(i));
        ems_jw_arr_close(&w);
        if (it->has_target_mode) {
            ems_jw_key(&w, "target_mode");
            ems_jw_str(&w, ems_target_mode_name(it->target_mode));
        }
        if (it->has_target_power) {
            ems_jw_key(&w, "target_power");
            ems_jw_num(&w, it->target_power);
        }
        ems_jw_key(&w, "soc");
        ems_jw_num(&w, it->soc);
        ems_jw_key(&w, "battery_power");
        ems_jw_num(&w, it->battery_power);
        ems_jw_key(&w, "grid_power");
        ems_jw_num(&w, it->grid_power);
    }
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}

void ems_dash_fleet_frame_init(ems_dash_fleet_frame_t *f, char *buf, size_t cap)
{
    f->buf = buf;
    f->cap = cap;
    f->count = 0;
    f->len = sizeof FLEET_HEAD - 1;
    memcpy(buf, FLEET_HEAD, f->len);
}

int ems_dash_fleet_frame_add(ems_dash_fleet_frame_t *f, const ems_dash_fleet_item_t *it)
{
    /* Room for a comma before the item and the tail and NUL after it. */
    size_t sep = f->count ? 1 : 0, reserve = sizeof FLEET_TAIL;
    if (f->len + sep + reserve >= f->cap)
        return EMS_ENOSPC;
    char *at = f->buf + f->len + sep;
    int n = ems_dash_fleet_item_encode(it, at, f->cap - f->len - sep - reserve + 1);
    if (n == EMS_EINVAL)
        return EMS_EINVAL;
    if (n < 0)
        return EMS_ENOSPC;
    if (sep)
        f->buf[f->len] = ',';
    f->len += sep + (size_t)n;
    f->count++;
    return 0;
}

size_t ems_dash_fleet_frame_finish(ems_dash_fleet_frame_t *f)
{
    memcpy(f->buf + f->len, FLEET_TAIL, sizeof FLEET_TAIL); /* with its NUL */
    f->len += sizeof FLEET_TAIL - 1;
    return f->len;
}

static int fleet_flags(const json_t *o, const char *path, ems_dash_fleet_item_t *it,
                       ems_verr_t *err)
{
    const json_t *a;
    if (ems_jr_array(o, path, "error_flags", true, &a, err) < 0)
        return EMS_EINVAL;
    for (size_t i = 0; i < json_array_size(a); i++) {
        ems_jr_at_t at = {path, "error_flags", (long)i};
        unsigned bit;
        if (ems_jr_v_enum(json_array_get(a, i), &at, fault_name, EMS_FAULT_COUNT, &bit, err) < 0)
            return EMS_EINVAL;
        if (it->error_flags & (1u << bit)) {
            char p[64];
            ems_jr_at_t whole = {path, "error_flags", -1};
            ems_verr_set(err, ems_jr_path(&whole, p, sizeof p), "\"%s\" is listed more than once",
                         fault_name(bit));
            return EMS_EINVAL;
        }
        it->error_flags |= 1u << bit;
    }
    return 0;
}

/* The telemetry members come together: with "timestamp" all are required,
 * without it none may appear. */
static const char *const fleet_tel_keys[] = {"state",        "mode", "error_flags",   "target_mode",
                                             "target_power", "soc",  "battery_power", "grid_power"};

static int fleet_item(const json_t *o, const char *path, ems_dash_fleet_item_t *it, ems_verr_t *err)
{
    memset(it, 0, sizeof *it);
    unsigned st = 0, md = 0, tm = 0;
    int has_ts = 0, rc;
    if (ems_jr_ident(o, path, "device_id", true, EMS_DEVICE_ID_MAX, false, it->device_id,
                     sizeof it->device_id, err) < 0 ||
        ems_jr_bool(o, path, "online", true, &it->online, err) < 0 ||
        ems_jr_timestamp(o, path, "since", false, &it->since_ms, err) < 0 ||
        (has_ts = ems_jr_timestamp(o, path, "timestamp", false, &it->timestamp_ms, err)) < 0)
        return EMS_EINVAL;
    if (!has_ts) {
        for (size_t i = 0; i < sizeof fleet_tel_keys / sizeof fleet_tel_keys[0]; i++) {
            if (json_object_get(o, fleet_tel_keys[i])) {
                char p[64];
                ems_jr_at_t at = {path, "timestamp", -1};
                ems_verr_set(err, ems_jr_path(&at, p, sizeof p),
                             "required member is missing (%s is present)", fleet_tel_keys[i]);
                return EMS_EINVAL;
            }
        }
        return 0;
    }
    it->has_telemetry = true;
    if (ems_jr_enum(o, path, "state", true, state_name, EMS_STATE_COUNT, &st, err) < 0 ||
        ems_jr_enum(o, path, "mode", true, mode_name, EMS_MODE_COUNT, &md, err) < 0 ||
        fleet_flags(o, path, it, err) < 0 ||
        ems_jr_number(o, path, "soc", true, 0, 100, &it->soc, err) < 0 ||
        ems_jr_number(o, path, "battery_power", true, -BATTERY_POWER_MAX, BATTERY_POWER_MAX,
                      &it->battery_power, err) < 0 ||
        ems_jr_number(o, path, "grid_power", true, -GRID_POWER_MAX, GRID_POWER_MAX, &it->grid_power,
                      err) < 0)
        return EMS_EINVAL;
    it->state = (ems_state_t)st;
    it->mode = (ems_mode_t)md;
    if ((rc = ems_jr_enum(o, path, "target_mode", false, target_name, EMS_TARGET_COUNT, &tm, err)) <
        0)
        return EMS_EINVAL;
    it->has_target_mode = rc == 1;
    it->target_mode = (ems_target_mode_t)tm;
    if ((rc = ems_jr_number(o, path, "target_power", false, 0, TARGET_POWER_MAX, &it->target_power,
                            err)) < 0)
        return EMS_EINVAL;
    it->has_target_power = rc == 1;
    return 0;
}

int ems_dash_fleet_from_json(const json_t *obj,
                             void (*each)(void *ud, const ems_dash_fleet_item_t *it), void *ud,
                             ems_verr_t *err)
{
    const json_t *a;
    if (ems_jr_expect_type(obj, "fleet", err) < 0 ||
        ems_jr_array(obj, "", "devices", true, &a, err) < 0)
        return EMS_EINVAL;
    size_t n = json_array_size(a);
    if (n > EMS_DASH_DEVICES_MAX) {
        ems_verr_set(err, "devices", "has %zu items; at most 10000 are allowed", n);
        return EMS_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char path[32];
        ems_jr_at_t at = {"devices", NULL, (long)i};
        const json_t *o = json_array_get(a, i);
        ems_dash_fleet_item_t it;
        if (ems_jr_v_object(o, &at, err) < 0 ||
            fleet_item(o, ems_jr_path(&at, path, sizeof path), &it, err) < 0)
            return EMS_EINVAL;
        if (each)
            each(ud, &it);
    }
    return 0;
}
