/* telemetry.c: the upstream telemetry packet (see telemetry.h).
 *
 * The ranges here are the ones in docs/protocol.md and
 * proto-schemas/telemetry.schema.json; test/suites/10-schema-vectors.py checks
 * that this decoder and the schema agree on every vector.
 */
#include "telemetry.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "timefmt.h"

#include <math.h>
#include <string.h>

#define WIFI_MIN (-127)
#define WIFI_MAX 0
#define TARGET_POWER_MAX 1e6
#define VOLTAGE_MAX 1e3
#define BAT_CURRENT_MAX 1e4
#define BAT_POWER_MAX 1e6
#define SOC_MAX 100.0
#define TEMP_MIN (-50.0)
#define TEMP_MAX 150.0
#define GRID_POWER_MAX 1e7
#define FREQ_MAX 100.0
#define ENERGY_MAX EMS_ENERGY_WH_MAX

static const char *state_name(unsigned i) { return ems_state_name((ems_state_t)i); }
static const char *mode_name(unsigned i) { return ems_mode_name((ems_mode_t)i); }
static const char *target_name(unsigned i) { return ems_target_mode_name((ems_target_mode_t)i); }
static const char *fault_name(unsigned i) { return ems_fault_name(1u << i); }

bool ems_device_id_valid(const char *id, size_t len)
{
    return ems_jr_ident_valid(id, len, EMS_DEVICE_ID_MAX, false);
}

/* error_flags: a list of fault names, each at most once. */
static int decode_flags(const json_t *st, ems_telemetry_t *t, ems_verr_t *err)
{
    const json_t *a;
    if (ems_jr_array(st, "system_status", "error_flags", true, &a, err) < 0)
        return EMS_EINVAL;
    t->error_flags = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        ems_jr_at_t at = {"system_status", "error_flags", (long)i};
        unsigned bit;
        if (ems_jr_v_enum(json_array_get(a, i), &at, fault_name, EMS_FAULT_COUNT, &bit, err) < 0)
            return EMS_EINVAL;
        if (t->error_flags & (1u << bit)) {
            ems_verr_set(err, "system_status.error_flags", "\"%s\" is listed more than once",
                         fault_name(bit));
            return EMS_EINVAL;
        }
        t->error_flags |= 1u << bit;
    }
    return 0;
}

/* wifi_strength: an integer dBm, or null for "no wireless interface". */
static int decode_wifi(const json_t *st, ems_telemetry_t *t, ems_verr_t *err)
{
    const json_t *v;
    if (ems_jr_member(st, "system_status", "wifi_strength", true, &v, err) < 0)
        return EMS_EINVAL;
    t->has_wifi_strength = !json_is_null(v);
    if (!t->has_wifi_strength)
        return 0;
    ems_jr_at_t at = {"system_status", "wifi_strength", -1};
    int64_t w;
    if (ems_jr_v_integer(v, &at, WIFI_MIN, WIFI_MAX, &w, err) < 0)
        return EMS_EINVAL;
    t->wifi_strength = (int)w;
    return 0;
}

static int decode_status(const json_t *root, ems_telemetry_t *t, ems_verr_t *err)
{
    const char *p = "system_status";
    const json_t *st;
    unsigned e;
    int rc;
    if (ems_jr_object(root, "", p, true, &st, err) < 0)
        return EMS_EINVAL;
    if (ems_jr_enum(st, p, "state", true, state_name, EMS_STATE_COUNT, &e, err) < 0)
        return EMS_EINVAL;
    t->state = (ems_state_t)e;
    if (ems_jr_enum(st, p, "mode", true, mode_name, EMS_MODE_COUNT, &e, err) < 0)
        return EMS_EINVAL;
    t->mode = (ems_mode_t)e;
    if (decode_flags(st, t, err) < 0 || decode_wifi(st, t, err) < 0)
        return EMS_EINVAL;
    if ((rc = ems_jr_enum(st, p, "target_mode", false, target_name, EMS_TARGET_COUNT, &e, err)) < 0)
        return EMS_EINVAL;
    t->has_target_mode = rc;
    t->target_mode = rc ? (ems_target_mode_t)e : EMS_TARGET_AUTO;
    rc = ems_jr_number(st, p, "target_power", false, 0, TARGET_POWER_MAX, &t->target_power, err);
    t->has_target_power = rc == 1;
    return rc < 0 ? EMS_EINVAL : 0;
}

static int decode_battery(const json_t *root, ems_telemetry_t *t, ems_verr_t *err)
{
    const char *p = "battery";
    const json_t *b;
    int rc;
    if (ems_jr_object(root, "", p, true, &b, err) < 0 ||
        ems_jr_number(b, p, "voltage", true, 0, VOLTAGE_MAX, &t->battery_voltage, err) < 0 ||
        ems_jr_number(b, p, "current", true, -BAT_CURRENT_MAX, BAT_CURRENT_MAX,
                      &t->battery_current, err) < 0 ||
        ems_jr_number(b, p, "power", true, -BAT_POWER_MAX, BAT_POWER_MAX, &t->battery_power,
                      err) < 0 ||
        ems_jr_number(b, p, "soc", true, 0, SOC_MAX, &t->battery_soc, err) < 0)
        return EMS_EINVAL;
    rc = ems_jr_number(b, p, "temperature", false, TEMP_MIN, TEMP_MAX, &t->battery_temperature,
                       err);
    t->has_battery_temperature = rc == 1;
    return rc < 0 ? EMS_EINVAL : 0;
}

static int decode_grid(const json_t *root, ems_telemetry_t *t, ems_verr_t *err)
{
    const char *p = "grid";
    const json_t *g;
    if (ems_jr_object(root, "", p, true, &g, err) < 0 ||
        ems_jr_number(g, p, "voltage", true, 0, VOLTAGE_MAX, &t->grid_voltage, err) < 0 ||
        ems_jr_number(g, p, "power", true, -GRID_POWER_MAX, GRID_POWER_MAX, &t->grid_power,
                      err) < 0 ||
        ems_jr_number(g, p, "frequency", true, 0, FREQ_MAX, &t->grid_frequency, err) < 0)
        return EMS_EINVAL;
    return 0;
}

/* seq, clock_synced, backfill, backlog: the delivery extensions. */
static int decode_delivery(const json_t *root, ems_telemetry_t *t, ems_verr_t *err)
{
    int64_t n = 0;
    int rc = ems_jr_integer(root, "", "seq", false, 0, (int64_t)EMS_SEQ_MAX, &n, err);
    if (rc < 0)
        return EMS_EINVAL;
    t->has_seq = rc;
    t->seq = (uint64_t)n;
    if ((rc = ems_jr_bool(root, "", "clock_synced", false, &t->clock_synced, err)) < 0)
        return EMS_EINVAL;
    t->has_clock_synced = rc;
    if ((rc = ems_jr_bool(root, "", "backfill", false, &t->backfill, err)) < 0)
        return EMS_EINVAL;
    t->has_backfill = rc;
    n = 0;
    if ((rc = ems_jr_integer(root, "", "backlog", false, 0, (int64_t)EMS_SEQ_MAX, &n, err)) < 0)
        return EMS_EINVAL;
    t->has_backlog = rc;
    t->backlog = (uint64_t)n;
    return 0;
}

/* energy: optional, but when present all four counters and `since`. An
 * older edge sends no energy member at all; that is still a valid packet. */
static int decode_energy(const json_t *root, ems_telemetry_t *t, ems_verr_t *err)
{
    const char *p = "energy";
    const json_t *e;
    int rc = ems_jr_object(root, "", p, false, &e, err);
    if (rc <= 0)
        return rc < 0 ? EMS_EINVAL : 0;
    if (ems_jr_number(e, p, "battery_charged_wh", true, 0, ENERGY_MAX,
                      &t->energy_battery_charged_wh, err) < 0 ||
        ems_jr_number(e, p, "battery_discharged_wh", true, 0, ENERGY_MAX,
                      &t->energy_battery_discharged_wh, err) < 0 ||
        ems_jr_number(e, p, "grid_import_wh", true, 0, ENERGY_MAX, &t->energy_grid_import_wh, err) <
            0 ||
        ems_jr_number(e, p, "grid_export_wh", true, 0, ENERGY_MAX, &t->energy_grid_export_wh, err) <
            0 ||
        ems_jr_timestamp(e, p, "since", true, &t->energy_since_ms, err) < 0)
        return EMS_EINVAL;
    t->has_energy = true;
    return 0;
}

int ems_telemetry_from_json(const json_t *obj, ems_telemetry_t *out, ems_verr_t *err)
{
    memset(out, 0, sizeof *out);
    if (ems_jr_require_object(obj, err) < 0 ||
        ems_jr_ident(obj, "", "device_id", true, EMS_DEVICE_ID_MAX, false, out->device_id,
                     sizeof out->device_id, err) < 0 ||
        ems_jr_timestamp(obj, "", "timestamp", true, &out->timestamp_ms, err) < 0 ||
        decode_status(obj, out, err) < 0 || decode_battery(obj, out, err) < 0 ||
        decode_grid(obj, out, err) < 0 || decode_delivery(obj, out, err) < 0 ||
        decode_energy(obj, out, err) < 0)
        return EMS_EINVAL;
    return 0;
}

int ems_telemetry_decode(const char *json, size_t len, ems_telemetry_t *out, ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_telemetry_from_json(root, out, err);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------ check */

/* One number field of the struct and the rule it must pass. */
static int check_num(const char *path, double v, double min, double max, ems_verr_t *err)
{
    char a[EMS_JW_NUM_MAX], b[EMS_JW_NUM_MAX];
    if (!isfinite(v)) {
        ems_verr_set(err, path, "%s is not a finite number", isnan(v) ? "NaN" : "infinity");
        return EMS_EINVAL;
    }
    if (v < min || v > max) {
        ems_jw_fmt_double(v, a);
        ems_jw_fmt_double(v < min ? min : max, b);
        ems_verr_set(err, path, "%s is %s %s", a, v < min ? "below the minimum" : "above the maximum",
                     b);
        return EMS_EINVAL;
    }
    return 0;
}

static int check_enums(const ems_telemetry_t *t, ems_verr_t *err)
{
    if ((unsigned)t->state >= EMS_STATE_COUNT)
        ems_verr_set(err, "system_status.state", "%d is not a known state", (int)t->state);
    else if ((unsigned)t->mode >= EMS_MODE_COUNT)
        ems_verr_set(err, "system_status.mode", "%d is not a known mode", (int)t->mode);
    else if (t->error_flags & ~EMS_FAULT_ALL)
        ems_verr_set(err, "system_status.error_flags", "0x%x has unknown fault bits",
                     (unsigned)t->error_flags);
    else if (t->has_wifi_strength && (t->wifi_strength < WIFI_MIN || t->wifi_strength > WIFI_MAX))
        ems_verr_set(err, "system_status.wifi_strength", "%d is outside -127..0", t->wifi_strength);
    else if (t->has_target_mode && (unsigned)t->target_mode >= EMS_TARGET_COUNT)
        ems_verr_set(err, "system_status.target_mode", "%d is not a known target mode",
                     (int)t->target_mode);
    else
        return 0;
    return EMS_EINVAL;
}

static int check_numbers(const ems_telemetry_t *t, ems_verr_t *err)
{
    if ((t->has_target_power &&
         check_num("system_status.target_power", t->target_power, 0, TARGET_POWER_MAX, err)) ||
        check_num("battery.voltage", t->battery_voltage, 0, VOLTAGE_MAX, err) ||
        check_num("battery.current", t->battery_current, -BAT_CURRENT_MAX, BAT_CURRENT_MAX, err) ||
        check_num("battery.power", t->battery_power, -BAT_POWER_MAX, BAT_POWER_MAX, err) ||
        check_num("battery.soc", t->battery_soc, 0, SOC_MAX, err) ||
        (t->has_battery_temperature &&
         check_num("battery.temperature", t->battery_temperature, TEMP_MIN, TEMP_MAX, err)) ||
        check_num("grid.voltage", t->grid_voltage, 0, VOLTAGE_MAX, err) ||
        check_num("grid.power", t->grid_power, -GRID_POWER_MAX, GRID_POWER_MAX, err) ||
        check_num("grid.frequency", t->grid_frequency, 0, FREQ_MAX, err))
        return EMS_EINVAL;
    if (t->has_energy &&
        (check_num("energy.battery_charged_wh", t->energy_battery_charged_wh, 0, ENERGY_MAX, err) ||
         check_num("energy.battery_discharged_wh", t->energy_battery_discharged_wh, 0, ENERGY_MAX,
                   err) ||
         check_num("energy.grid_import_wh", t->energy_grid_import_wh, 0, ENERGY_MAX, err) ||
         check_num("energy.grid_export_wh", t->energy_grid_export_wh, 0, ENERGY_MAX, err)))
        return EMS_EINVAL;
    if (t->has_energy && !ems_time_ms_valid(t->energy_since_ms)) {
        ems_verr_set(err, "energy.since", "%lld ms is outside the years 0000..9999",
                     (long long)t->energy_since_ms);
        return EMS_EINVAL;
    }
    return 0;
}

int ems_telemetry_check(const ems_telemetry_t *t, ems_verr_t *err)
{
    size_t idlen = strnlen(t->device_id, sizeof t->device_id);
    if (!ems_device_id_valid(t->device_id, idlen)) {
        ems_verr_set(err, "device_id", "is not 1..64 characters of [A-Za-z0-9_.-]");
        return EMS_EINVAL;
    }
    if (!ems_time_ms_valid(t->timestamp_ms)) {
        ems_verr_set(err, "timestamp", "%lld ms is outside the years 0000..9999",
                     (long long)t->timestamp_ms);
        return EMS_EINVAL;
    }
    if (check_enums(t, err) < 0 || check_numbers(t, err) < 0)
        return EMS_EINVAL;
    if ((t->has_seq && t->seq > EMS_SEQ_MAX) || (t->has_backlog && t->backlog > EMS_SEQ_MAX)) {
        ems_verr_set(err, t->has_seq && t->seq > EMS_SEQ_MAX ? "seq" : "backlog",
                     "is above the maximum 9007199254740991");
        return EMS_EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------ encode */

static void encode_status(const ems_telemetry_t *t, ems_jw_t *w)
{
    ems_jw_key(w, "system_status");
    ems_jw_obj_open(w);
    ems_jw_key(w, "state");
    ems_jw_str(w, ems_state_name(t->state));
    ems_jw_key(w, "mode");
    ems_jw_str(w, ems_mode_name(t->mode));
    ems_jw_key(w, "error_flags");
    ems_jw_arr_open(w);
    for (unsigned i = 0; i < EMS_FAULT_COUNT; i++)
        if (t->error_flags & (1u << i))
            ems_jw_str(w, fault_name(i));
    ems_jw_arr_close(w);
    ems_jw_key(w, "wifi_strength");
    if (t->has_wifi_strength)
        ems_jw_int(w, t->wifi_strength);
    else
        ems_jw_null(w);
    if (t->has_target_mode) {
        ems_jw_key(w, "target_mode");
        ems_jw_str(w, ems_target_mode_name(t->target_mode));
    }
    if (t->has_target_power) {
        ems_jw_key(w, "target_power");
        ems_jw_num(w, t->target_power);
    }
    ems_jw_obj_close(w);
}

static void encode_num(ems_jw_t *w, const char *key, double v)
{
    ems_jw_key(w, key);
    ems_jw_num(w, v);
}

static void encode_power(const ems_telemetry_t *t, ems_jw_t *w)
{
    ems_jw_key(w, "battery");
    ems_jw_obj_open(w);
    encode_num(w, "voltage", t->battery_voltage);
    encode_num(w, "current", t->battery_current);
    encode_num(w, "power", t->battery_power);
    encode_num(w, "soc", t->battery_soc);
    if (t->has_battery_temperature)
        encode_num(w, "temperature", t->battery_temperature);
    ems_jw_obj_close(w);
    ems_jw_key(w, "grid");
    ems_jw_obj_open(w);
    encode_num(w, "voltage", t->grid_voltage);
    encode_num(w, "power", t->grid_power);
    encode_num(w, "frequency", t->grid_frequency);
    ems_jw_obj_close(w);
}

static void encode_delivery(const ems_telemetry_t *t, ems_jw_t *w)
{
    if (t->has_seq) {
        ems_jw_key(w, "seq");
        ems_jw_uint(w, t->seq);
    }
    if (t->has_clock_synced) {
        ems_jw_key(w, "clock_synced");
        ems_jw_bool(w, t->clock_synced);
    }
    if (t->has_backfill) {
        ems_jw_key(w, "backfill");
        ems_jw_bool(w, t->backfill);
    }
    if (t->has_backlog) {
        ems_jw_key(w, "backlog");
        ems_jw_uint(w, t->backlog);
    }
}

static void encode_energy(const ems_telemetry_t *t, ems_jw_t *w)
{
    if (!t->has_energy)
        return;
    char since[EMS_TIME_STR_MAX];
    ems_time_format(t->energy_since_ms, since, sizeof since);
    ems_jw_key(w, "energy");
    ems_jw_obj_open(w);
    encode_num(w, "battery_charged_wh", t->energy_battery_charged_wh);
    encode_num(w, "battery_discharged_wh", t->energy_battery_discharged_wh);
    encode_num(w, "grid_import_wh", t->energy_grid_import_wh);
    encode_num(w, "grid_export_wh", t->energy_grid_export_wh);
    ems_jw_key(w, "since");
    ems_jw_str(w, since);
    ems_jw_obj_close(w);
}

int ems_telemetry_encode(const ems_telemetry_t *t, char *buf, size_t cap)
{
    if (ems_telemetry_check(t, NULL) < 0)
        return EMS_EINVAL;
    char ts[EMS_TIME_STR_MAX];
    ems_time_format(t->timestamp_ms, ts, sizeof ts);
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "device_id");
    ems_jw_str(&w, t->device_id);
    ems_jw_key(&w, "timestamp");
    ems_jw_str(&w, ts);
    encode_status(t, &w);
    encode_power(t, &w);
    encode_delivery(t, &w);
    encode_energy(t, &w);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}

json_t *ems_telemetry_to_json(const ems_telemetry_t *t)
{
    char buf[EMS_TELEMETRY_JSON_MAX];
    int n = ems_telemetry_encode(t, buf, sizeof buf);
    if (n < 0)
        return NULL;
    return json_loadb(buf, (size_t)n, 0, NULL);
}

/* ------------------------------------------------------------ equal */

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* An optional field is equal when both lack it or both carry the same value. */
#define OPT_EQ(flag, eq) (a->flag == b->flag && (!a->flag || (eq)))

bool ems_telemetry_equal(const ems_telemetry_t *a, const ems_telemetry_t *b)
{
    return strncmp(a->device_id, b->device_id, sizeof a->device_id) == 0 &&
           a->timestamp_ms == b->timestamp_ms && a->state == b->state && a->mode == b->mode &&
           a->error_flags == b->error_flags &&
           OPT_EQ(has_wifi_strength, a->wifi_strength == b->wifi_strength) &&
           OPT_EQ(has_target_mode, a->target_mode == b->target_mode) &&
           OPT_EQ(has_target_power, same_double(a->target_power, b->target_power)) &&
           same_double(a->battery_voltage, b->battery_voltage) &&
           same_double(a->battery_current, b->battery_current) &&
           same_double(a->battery_power, b->battery_power) &&
           same_double(a->battery_soc, b->battery_soc) &&
           OPT_EQ(has_battery_temperature,
                  same_double(a->battery_temperature, b->battery_temperature)) &&
           same_double(a->grid_voltage, b->grid_voltage) &&
           same_double(a->grid_power, b->grid_power) &&
           same_double(a->grid_frequency, b->grid_frequency) &&
           OPT_EQ(has_seq, a->seq == b->seq) &&
           OPT_EQ(has_clock_synced, a->clock_synced == b->clock_synced) &&
           OPT_EQ(has_backfill, a->backfill == b->backfill) &&
           OPT_EQ(has_backlog, a->backlog == b->backlog) &&
           OPT_EQ(
               has_energy,
               same_double(a->energy_battery_charged_wh, b->energy_battery_charged_wh) &&
                   same_double(a->energy_battery_discharged_wh, b->energy_battery_discharged_wh) &&
                   same_double(a->energy_grid_import_wh, b->energy_grid_import_wh) &&
                   same_double(a->energy_grid_export_wh, b->energy_grid_export_wh) &&
                   a->energy_since_ms == b->energy_since_ms);
}
