/* config.c: the edge configuration file and flags (see config.h). */
#include "config.h"

#include "error.h"
#include "telemetry.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the keys */

typedef enum {
    K_STR,    /* char[] of `size` bytes */
    K_DEVICE, /* device id */
    K_BOOL,
    K_DOUBLE,       /* double within [min, max] */
    K_OPTDOUBLE,    /* double, NAN = unset (plant keys) */
    K_INT,          /* int within [min, max] */
    K_MS_FROM_S,    /* int64 ms from a number of seconds within [min, max] */
    K_INT64_MS,     /* int64 ms within [min, max] */
    K_MB,           /* uint64 bytes from MiB within [min, max] */
    K_MS_FROM_DAYS, /* int64 ms from a number of days within [min, max] */
    K_U32,          /* uint32 within [min, max] */
    K_SYNC,         /* ems_store_sync_t: off, normal, full */
    K_LOGLEVEL,
    K_BACKEND,
    K_PROFILE,
    K_SEED,
    K_TOD,    /* HH:MM[:SS] into an optional double of seconds */
    K_ADDR,   /* int: a 7-bit I2C address, 0x03..0x77, hex (0x40) or decimal */
    K_BATCHIP /* ems_hw_battery_chip_t: ina228 | ina226 */
} cfg__kind_t;

typedef struct {
    const char *name;
    cfg__kind_t kind;
    size_t off;
    size_t size;
    double min, max;
} cfg__key_t;

#define OFF(m) offsetof(ems_edge_config_t, m)
#define SZ(m) sizeof(((ems_edge_config_t *)0)->m)
#define STR(n, m)                                                                                  \
    {                                                                                              \
        n, K_STR, OFF(m), SZ(m), 0, 0                                                              \
    }
#define DBL(n, m, lo, hi)                                                                          \
    {                                                                                              \
        n, K_DOUBLE, OFF(m), 0, lo, hi                                                             \
    }
#define OPT(n, m, lo, hi)                                                                          \
    {                                                                                              \
        n, K_OPTDOUBLE, OFF(m), 0, lo, hi                                                          \
    }
#define INT(n, m, lo, hi)                                                                          \
    {                                                                                              \
        n, K_INT, OFF(m), 0, lo, hi                                                                \
    }

static const cfg__key_t cfg__keys[] = {
    {"device_id", K_DEVICE, OFF(device_id), SZ(device_id), 0, 0},
    STR("cloud_url", cloud_url),
    STR("token_file", token_file),
    STR("ca_file", ca_file),
    {"allow_insecure_ws", K_BOOL, OFF(allow_insecure_ws), 0, 0, 0},
    {"log_level", K_LOGLEVEL, OFF(log_level), 0, 0, 0},

    {"backend", K_BACKEND, OFF(backend), 0, 0, 0},
    {"plant_profile", K_PROFILE, OFF(plant.profile), 0, 0, 0},
    {"plant_seed", K_SEED, OFF(plant.seed), 0, 0, 0},
    {"plant_start", K_TOD, OFF(plant.start_tod_s), 0, 0, 0},
    OPT("plant_soc", plant.soc, 0, 100),
    OPT("plant_capacity_kwh", plant.capacity_kwh, 0.1, 10000),
    OPT("plant_pv_peak_w", plant.pv_peak_w, 0, 1e6),
    OPT("plant_ambient_c", plant.ambient_c, -40, 60),
    OPT("plant_thermal_tau_s", plant.thermal_tau_s, 1, 1e6),
    OPT("plant_fault_at_s", plant.fault_at_s, -1, 1e7),

    DBL("soc_min", limits.soc_min, 0, 100),
    DBL("soc_max", limits.soc_max, 0, 100),
    DBL("soc_hysteresis", limits.soc_hysteresis, 0, 50),
    DBL("max_charge_w", limits.max_charge_w, 1, 1e6),
    DBL("max_discharge_w", limits.max_discharge_w, 1, 1e6),
    DBL("auto_deadband_w", limits.auto_deadband_w, 0, 1e5),
    DBL("temp_max_c", limits.temp_max_c, -50, 150),
    DBL("temp_min_c", limits.temp_min_c, -50, 150),
    DBL("temp_hysteresis_c", limits.temp_hysteresis_c, 0, 50),
    DBL("voltage_max_v", limits.voltage_max_v, 0, 1000),
    DBL("voltage_min_v", limits.voltage_min_v, 0, 1000),
    DBL("voltage_hysteresis_v", limits.voltage_hysteresis_v, 0, 100),
    DBL("current_max_a", limits.current_max_a, 0.1, 10000),
    DBL("current_hysteresis_a", limits.current_hysteresis_a, 0, 1000),
    DBL("grid_voltage_min_v", limits.grid_voltage_min_v, 0, 1000),
    DBL("grid_voltage_max_v", limits.grid_voltage_max_v, 0, 1000),
    DBL("grid_freq_min_hz", limits.grid_freq_min_hz, 0, 100),
    DBL("grid_freq_max_hz", limits.grid_freq_max_hz, 0, 100),
    INT("grid_fault_ticks", limits.grid_fault_ticks, 1, 3600),
    {"sensor_stale_ms", K_INT64_MS, OFF(limits.stale_ms), 0, 100, 3600000},
    DBL("power_tolerance_w", limits.power_tolerance_w, 0, 1e5),
    DBL("power_tolerance_frac", limits.power_tolerance_frac, 0, 1),
    DBL("plausible_voltage_min_v", limits.plausible_voltage_min_v, 0, 1000),
    DBL("plausible_voltage_max_v", limits.plausible_voltage_max_v, 0, 1000),
    DBL("plausible_temp_min_c", limits.plausible_temp_min_c, -100, 200),
    DBL("plausible_temp_max_c", limits.plausible_temp_max_c, -100, 200),
    {"manual_timeout_s", K_MS_FROM_S, OFF(limits.manual_timeout_ms), 0, 0, 30 * 86400},

    STR("buffer_path", buffer_path),
    {"buffer_max_mb", K_MB, OFF(buffer_max_bytes), 0, 1, 1 << 20},
    {"buffer_max_age_days", K_MS_FROM_DAYS, OFF(buffer_max_age_ms), 0, 0, 3650},
    {"buffer_min_free_mb", K_MB, OFF(buffer_min_free_bytes), 0, 0, 1 << 20},
    {"buffer_sync", K_SYNC, OFF(buffer_sync), 0, 0, 0},
    {"buffer_commit_interval_ms", K_U32, OFF(buffer_commit_interval_ms), 0, 0, 60000},
    INT("status_port", status_port, 0, 65535),
    STR("status_bind", status_bind),
    STR("wifi_path", wifi_path),

    {"ws_ping_s", K_MS_FROM_S, OFF(ws_ping_ms), 0, 0.1, 3600},
    {"ws_timeout_s", K_MS_FROM_S, OFF(ws_timeout_ms), 0, 0.5, 86400},
    {"reconnect_min_s", K_MS_FROM_S, OFF(reconnect_min_ms), 0, 0.01, 3600},
    {"reconnect_max_s", K_MS_FROM_S, OFF(reconnect_max_ms), 0, 0.01, 86400},
    {"ack_timeout_s", K_MS_FROM_S, OFF(ack_timeout_ms), 0, 1, 86400},
    INT("backfill_batch", backfill_batch, 1, 100),
    {"backfill_interval_ms", K_INT64_MS, OFF(backfill_interval_ms), 0, 10, 60000},
    INT("backfill_inflight", backfill_inflight, 1, 64),

    /* the hardware back end (edge/hw/hwio.h, docs/hardware.md) */
    INT("i2c_bus", hw.i2c_bus, 0, 255),
    STR("gpio_chip", hw.gpio_chip),
    {"battery_monitor", K_BATCHIP, OFF(hw.battery_chip), 0, 0, 0},
    {"battery_monitor_address", K_ADDR, OFF(hw.battery_address), 0, 0, 0},
    DBL("shunt_ohms", hw.shunt_ohms, 1e-6, 10),
    DBL("shunt_max_current_a", hw.shunt_max_current_a, 0.001, 10000),
    {"shunt_invert", K_BOOL, OFF(hw.shunt_invert), 0, 0, 0},
    INT("battery_monitor_averaging", hw.battery_averaging, 1, 1024),
    INT("battery_monitor_conversion_us", hw.battery_conversion_us, 50, 8244),
    {"temp_sensor_address", K_ADDR, OFF(hw.temp_address), 0, 0, 0},
    {"grid_meter_address", K_ADDR, OFF(hw.grid_address), 0, 0, 0},
    DBL("grid_voltage_per_lsb", hw.grid_v_per_lsb, 1e-12, 1),
    DBL("grid_current_per_lsb", hw.grid_a_per_lsb, 1e-12, 1),
    DBL("grid_power_per_lsb", hw.grid_w_per_lsb, 1e-12, 100),
    {"grid_power_invert", K_BOOL, OFF(hw.grid_invert), 0, 0, 0},
    INT("zero_cross_line", hw.zero_cross_line, 0, 1023),
    DBL("grid_nominal_hz", hw.grid_nominal_hz, 50, 60),
    {"grid_freq_window_ms", K_INT64_MS, OFF(hw.freq_window_ms), 0, 200, 10000},
    INT("charge_enable_line", hw.charge_line, 0, 1023),
    INT("discharge_enable_line", hw.discharge_line, 0, 1023),
    {"enable_active_low", K_BOOL, OFF(hw.enable_active_low), 0, 0, 0},
    {"dac_address", K_ADDR, OFF(hw.dac_address), 0, 0, 0},
    DBL("dac_vref_v", hw.dac_vref_v, 2.7, 5.5),
    DBL("dac_offset_v", hw.dac_offset_v, 0, 5.5),
    DBL("dac_volts_per_kw", hw.dac_volts_per_kw, 1e-6, 1000),
    DBL("soc_capacity_ah", hw.soc_capacity_ah, 0.1, 100000),
    STR("soc_ocv_table", hw.soc_ocv_table),
    DBL("soc_rest_current_a", hw.soc_rest_current_a, 0, 1000),
    DBL("soc_rest_s", hw.soc_rest_s, 0, 86400),
    DBL("soc_full_voltage_v", hw.soc_full_voltage_v, 0, 1000),
    DBL("soc_full_tail_a", hw.soc_full_tail_a, 0, 1000),
    DBL("soc_full_s", hw.soc_full_s, 0, 86400),
    DBL("soc_empty_voltage_v", hw.soc_empty_voltage_v, 0, 1000),
    DBL("soc_empty_s", hw.soc_empty_s, 0, 86400),
    DBL("soc_charge_efficiency", hw.soc_charge_efficiency, 0.5, 1),

    DBL("plant_speed", sim_speed, 1, 3600),
    {"sim_control", K_BOOL, OFF(sim_control), 0, 0, 0},
    {"tick_ms", K_INT64_MS, OFF(tick_ms), 0, 10, 1000},
};
#define CFG__NKEYS (sizeof cfg__keys / sizeof cfg__keys[0])

_Static_assert(CFG__NKEYS <= sizeof(((ems_edge_config_t *)0)->key_line) / sizeof(int),
               "key_line must have a slot per key");

static int cfg__key_index(const char *name)
{
    for (size_t i = 0; i < CFG__NKEYS; i++)
        if (strcmp(cfg__keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* ------------------------------------------------------------- messages */

static int cfg__fail(char *err, size_t cap, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cfg__fail(char *err, size_t cap, const char *where, const char *fmt, ...)
{
    if (err && cap) {
        int n = snprintf(err, cap, "%s: ", where);
        if (n >= 0 && (size_t)n < cap) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, cap - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return EMS_ECONFIG;
}

/* "FILE:LINE" for the place a key was set, for cross-key messages. */
static const char *cfg__where(const ems_edge_config_t *cfg, const char *key, char *buf, size_t cap)
{
    int k = cfg__key_index(key);
    int line = k >= 0 ? cfg->key_line[k] : 0;
    if (line > 0)
        snprintf(buf, cap, "%s:%d", cfg->source, line);
    else if (line < 0)
        snprintf(buf, cap, "command line");
    else
        snprintf(buf, cap, "%s", cfg->source[0] ? cfg->source : "configuration");
    return buf;
}

/* ------------------------------------------------------------- defaults */

void ems_edge_config_default(ems_edge_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    ems_fsm_limits_default(&cfg->limits);
    cfg->backend = EMS_EDGE_BACKEND_SIM;
    cfg->plant.profile = EMS_PLANT_SUNNY;
    cfg->plant.start_tod_s = NAN;
    cfg->plant.soc = NAN;
    cfg->plant.capacity_kwh = NAN;
    cfg->plant.pv_peak_w = NAN;
    cfg->plant.ambient_c = NAN;
    cfg->plant.thermal_tau_s = NAN;
    cfg->plant.fault_at_s = NAN;
    ems_hw_config_default(&cfg->hw);
    snprintf(cfg->buffer_path, sizeof cfg->buffer_path, "/var/lib/ems-edge/buffer");
    /* The buffer defaults match edge/store.h: 1 GiB, 30 days, 64 MiB kept
     * free, fsync at checkpoints, every append committed at once. */
    cfg->buffer_max_bytes = 1024ull << 20;
    cfg->buffer_max_age_ms = 30LL * 86400 * 1000;
    cfg->buffer_min_free_bytes = 64ull << 20;
    cfg->buffer_sync = EMS_STORE_SYNC_NORMAL;
    cfg->buffer_commit_interval_ms = 0;
    cfg->log_level = EMS_LOG_INFO;
    cfg->status_port = 0;
    snprintf(cfg->status_bind, sizeof cfg->status_bind, "127.0.0.1");
    snprintf(cfg->wifi_path, sizeof cfg->wifi_path, "/proc/net/wireless");
    /* The edge notices a dead link faster than docs/protocol.md's 15 s /
     * 45 s (which the gateway uses for 50,000 devices): one device, one
     * link, and every second it is dead is a second of live view lost. */
    cfg->ws_ping_ms = 5000;
    cfg->ws_timeout_ms = 15000;
    cfg->reconnect_min_ms = 1000;
    cfg->reconnect_max_ms = 60000;
    cfg->ack_timeout_ms = 60000;
    cfg->backfill_batch = 100;
    cfg->backfill_interval_ms = 200;
    cfg->backfill_inflight = 4;
    cfg->sim_speed = 1;
    cfg->sim_control = false;
    cfg->tick_ms = 1000;
}

/* ------------------------------------------------------------- values */

static int cfg__number(const char *v, double *out)
{
    if (!*v || isspace((unsigned char)*v))
        return EMS_EINVAL;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (*end || errno == ERANGE || !isfinite(d))
        return EMS_EINVAL;
    /* strtod also reads hex floats and "infinity"; neither belongs in a
     * config file a person edits. */
    for (const char *p = v; *p; p++)
        if (*p == 'x' || *p == 'X')
            return EMS_EINVAL;
    *out = d;
    return 0;
}

static int cfg__bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return EMS_EINVAL;
}

/* "HH:MM" or "HH:MM:SS" into seconds after midnight. */
static int cfg__tod(const char *v, double *out)
{
    unsigned h, m, s = 0;
    char extra;
    int n = sscanf(v, "%2u:%2u:%2u%c", &h, &m, &s, &extra);
    if (n == 2 || n == 3) {
        /* sscanf accepts "7:5"; require the two-digit form. */
        size_t len = strlen(v);
        if (!((n == 2 && len == 5) || (n == 3 && len == 8)) || v[2] != ':')
            return EMS_EINVAL;
        if (h > 23 || m > 59 || s > 59)
            return EMS_EINVAL;
        *out = h * 3600.0 + m * 60.0 + s;
        return 0;
    }
    return EMS_EINVAL;
}

int ems_edge_config_set(ems_edge_config_t *cfg, const char *key, const char *value,
                        const char *where, int line, char *err, size_t cap)
{
    int k = cfg__key_index(key);
    if (k < 0)
        return cfg__fail(err, cap, where, "unknown key '%s'", key);
    const cfg__key_t *d = &cfg__keys[k];
    char *field = (char *)cfg + d->off;
    double num = 0;

    if (!*value)
        return cfg__fail(err, cap, where, "%s: empty value", key);

    switch (d->kind) {
    case K_STR:
        if (strlen(value) >= d->size)
            return cfg__fail(err, cap, where, "%s: longer than %zu characters", key, d->size - 1);
        memcpy(field, value, strlen(value) + 1);
        break;
    case K_DEVICE:
        if (!ems_device_id_valid(value, strlen(value)))
            return cfg__fail(err, cap, where,
                             "%s: '%s' is not 1 to 64 characters of [A-Za-z0-9_.-]", key, value);
        memcpy(field, value, strlen(value) + 1);
        break;
    case K_BOOL:
        if (cfg__bool(value, (bool *)(void *)field) < 0)
            return cfg__fail(err, cap, where, "%s: '%s' is not true or false", key, value);
        break;
    case K_DOUBLE:
    case K_OPTDOUBLE:
    case K_INT:
    case K_MS_FROM_S:
    case K_INT64_MS:
    case K_MB:
    case K_MS_FROM_DAYS:
    case K_U32:
        if (cfg__number(value, &num) < 0)
            return cfg__fail(err, cap, where, "%s: '%s' is not a number", key, value);
        if (num < d->min || num > d->max)
            return cfg__fail(err, cap, where, "%s: %s is outside %g..%g", key, value, d->min,
                             d->max);
        if ((d->kind == K_INT || d->kind == K_INT64_MS || d->kind == K_MB || d->kind == K_U32) &&
            num != floor(num))
            return cfg__fail(err, cap, where, "%s: %s is not a whole number", key, value);
        if (d->kind == K_DOUBLE || d->kind == K_OPTDOUBLE)
            *(double *)(void *)field = num;
        else if (d->kind == K_INT)
            *(int *)(void *)field = (int)num;
        else if (d->kind == K_MS_FROM_S)
            *(int64_t *)(void *)field = (int64_t)llround(num * 1000.0);
        else if (d->kind == K_INT64_MS)
            *(int64_t *)(void *)field = (int64_t)num;
        else if (d->kind == K_MS_FROM_DAYS)
            *(int64_t *)(void *)field = (int64_t)llround(num * 86400000.0);
        else if (d->kind == K_U32)
            *(uint32_t *)(void *)field = (uint32_t)num;
        else
            *(uint64_t *)(void *)field = (uint64_t)num << 20;
        break;
    case K_LOGLEVEL:
        if (ems_log_level_parse(value, (ems_log_level_t *)(void *)field) < 0)
            return cfg__fail(err, cap, where, "%s: '%s' is not error, warn, info or debug", key,
                             value);
        break;
    case K_SYNC: {
        static const char *const names[] = {"off", "normal", "full"};
        static const ems_store_sync_t values[] = {EMS_STORE_SYNC_OFF, EMS_STORE_SYNC_NORMAL,
                                                  EMS_STORE_SYNC_FULL};
        size_t i = 0;
        while (i < 3 && strcmp(value, names[i]) != 0)
            i++;
        if (i == 3)
            return cfg__fail(err, cap, where, "%s: '%s' is not off, normal or full", key, value);
        cfg->buffer_sync = values[i];
        break;
    }
    case K_BACKEND:
        if (strcmp(value, "sim") == 0)
            cfg->backend = EMS_EDGE_BACKEND_SIM;
        else if (strcmp(value, "hw") == 0)
            cfg->backend = EMS_EDGE_BACKEND_HW;
        else
            return cfg__fail(err, cap, where, "%s: '%s' is not sim or hw", key, value);
        break;
    case K_ADDR: {
        char *end;
        errno = 0;
        long a = strtol(value, &end, 0);
        if (*end || errno || a < 0x03 || a > 0x77)
            return cfg__fail(err, cap, where,
                             "%s: '%s' is not a 7-bit I2C address (0x03..0x77, e.g. 0x40)", key,
                             value);
        *(int *)(void *)field = (int)a;
        break;
    }
    case K_BATCHIP:
        if (strcmp(value, "ina228") == 0)
            cfg->hw.battery_chip = EMS_HW_INA228;
        else if (strcmp(value, "ina226") == 0)
            cfg->hw.battery_chip = EMS_HW_INA226;
        else
            return cfg__fail(err, cap, where, "%s: '%s' is not ina228 or ina226", key, value);
        break;
    case K_PROFILE:
        if (ems_plant_profile_parse(value, &cfg->plant.profile) < 0)
            return cfg__fail(err, cap, where, "%s: '%s' is not sunny, evening or faulty", key,
                             value);
        break;
    case K_SEED: {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(value, &end, 10);
        if (*end || errno == ERANGE || !isdigit((unsigned char)value[0]))
            return cfg__fail(err, cap, where, "%s: '%s' is not a whole number >= 0", key, value);
        cfg->plant.seed = s;
        cfg->plant.has_seed = true;
        break;
    }
    case K_TOD:
        if (cfg__tod(value, &num) < 0)
            return cfg__fail(err, cap, where, "%s: '%s' is not a time of day HH:MM[:SS]", key,
                             value);
        *(double *)(void *)field = num;
        break;
    }
    cfg->key_line[k] = line;
    return 0;
}

/* ------------------------------------------------------------- the file */

static bool cfg__blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses one line (NUL-terminated, modified in place). */
static int cfg__line(ems_edge_config_t *cfg, char *s, const char *name, int lineno,
                     int first_line[], char *err, size_t cap)
{
    char where[EMS_EDGE_PATH_MAX + 16];
    snprintf(where, sizeof where, "%s:%d", name, lineno);

    while (cfg__blank(*s))
        s++;
    if (*s == '\0' || *s == '#')
        return 0;

    char *key = s;
    while (*s && (islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
        s++;
    char *key_end = s;
    while (cfg__blank(*s))
        s++;
    if (key_end == key || *s != '=')
        return cfg__fail(err, cap, where, "expected 'key = value'");
    *key_end = '\0';
    s++;
    while (cfg__blank(*s))
        s++;

    char *val = s, *end;
    if (*s == '"') {
        val = ++s;
        end = strchr(s, '"');
        if (!end)
            return cfg__fail(err, cap, where, "%s: unterminated quote", key);
        *end++ = '\0';
        while (cfg__blank(*end))
            end++;
        if (*end && *end != '#')
            return cfg__fail(err, cap, where, "%s: text after the closing quote", key);
    } else {
        /* An end-of-line comment starts at a '#' after a blank. */
        for (end = s; *end; end++)
            if (*end == '#' && end > s && cfg__blank(end[-1]))
                break;
        *end = '\0';
        while (end > val && cfg__blank(end[-1]))
            *--end = '\0';
    }

    int k = cfg__key_index(key);
    if (k >= 0 && first_line[k])
        return cfg__fail(err, cap, where, "%s is set twice (first at line %d)", key, first_line[k]);
    int rc = ems_edge_config_set(cfg, key, val, where, lineno, err, cap);
    if (rc == 0)
        first_line[k] = lineno;
    return rc;
}

int ems_edge_config_parse(ems_edge_config_t *cfg, const char *text, size_t len, const char *name,
                          char *err, size_t cap)
{
    int first_line[CFG__NKEYS] = {0};
    char line[4096];
    int lineno = 0;
    size_t i = 0;
    snprintf(cfg->source, sizeof cfg->source, "%s", name);
    while (i < len) {
        lineno++;
        size_t start = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t n = i - start;
        if (i < len)
            i++; /* the newline */
        if (n && text[start + n - 1] == '\r')
            n--;
        char where[EMS_EDGE_PATH_MAX + 16];
        snprintf(where, sizeof where, "%s:%d", name, lineno);
        if (n >= sizeof line)
            return cfg__fail(err, cap, where, "line longer than %zu characters", sizeof line - 1);
        memcpy(line, text + start, n);
        line[n] = '\0';
        if (memchr(line, '\0', n))
            return cfg__fail(err, cap, where, "NUL byte in the line");
        int rc = cfg__line(cfg, line, name, lineno, first_line, err, cap);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int ems_edge_config_load(ems_edge_config_t *cfg, const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return cfg__fail(err, cap, path, "%s", strerror(errno));
    char *buf = malloc(EMS_EDGE_CONFIG_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return cfg__fail(err, cap, path, "out of memory");
    }
    size_t n = fread(buf, 1, EMS_EDGE_CONFIG_FILE_MAX + 1, f);
    int rd_err = ferror(f);
    fclose(f);
    int rc;
    if (rd_err)
        rc = cfg__fail(err, cap, path, "read error");
    else if (n > EMS_EDGE_CONFIG_FILE_MAX)
        rc = cfg__fail(err, cap, path, "larger than %d bytes", EMS_EDGE_CONFIG_FILE_MAX);
    else
        rc = ems_edge_config_parse(cfg, buf, n, path, err, cap);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------- the URL */

int ems_edge_config_ws_target(const char *url, const char *device_id, ems_edge_ws_target_t *out,
                              char *err, size_t cap)
{
#define URL_FAIL(...) return (err && cap ? snprintf(err, cap, __VA_ARGS__) : 0), EMS_EINVAL
    memset(out, 0, sizeof *out);
    const char *p;
    if (strncmp(url, "wss://", 6) == 0) {
        out->tls = true;
        p = url + 6;
        out->port = 443;
    } else if (strncmp(url, "ws://", 5) == 0) {
        p = url + 5;
        out->port = 80;
    } else {
        URL_FAIL("cloud_url must start with wss:// (or ws:// with allow_insecure_ws)");
    }
    if (strpbrk(url, "?#"))
        URL_FAIL("cloud_url must not have a query or fragment");

    const char *host_end;
    const char *after;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end)
            URL_FAIL("cloud_url: unterminated [ in the host");
        p++;
        after = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        after = host_end;
    }
    size_t hl = (size_t)(host_end - p);
    if (hl == 0 || hl >= sizeof out->host)
        URL_FAIL("cloud_url: missing or too long host");
    memcpy(out->host, p, hl);
    out->host[hl] = '\0';
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = (unsigned char)out->host[i];
        if (!(isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_'))
            URL_FAIL("cloud_url: bad character '%c' in the host", c);
    }
    if (*after == ':') {
        char *end;
        errno = 0;
        long port = strtol(after + 1, &end, 10);
        if (end == after + 1 || (*end && *end != '/') || port < 1 || port > 65535)
            URL_FAIL("cloud_url: bad port");
        out->port = (int)port;
        after = end;
    } else if (*after && *after != '/') {
        URL_FAIL("cloud_url: unexpected text after the host");
    }

    /* The path prefix without a trailing '/'. */
    size_t pl = strlen(after);
    while (pl && after[pl - 1] == '/')
        pl--;
    char tail[EMS_DEVICE_ID_MAX + 16];
    snprintf(tail, sizeof tail, "/ws/device/%s", device_id);
    size_t tl = strlen(tail);
    int n;
    if (pl >= tl && memcmp(after + pl - tl, tail, tl) == 0)
        n = snprintf(out->path, sizeof out->path, "%.*s", (int)pl, after);
    else
        n = snprintf(out->path, sizeof out->path, "%.*s%s", (int)pl, after, tail);
    if (n < 0 || (size_t)n >= sizeof out->path)
        URL_FAIL("cloud_url: path too long");
    return 0;
#undef URL_FAIL
}

/* ------------------------------------------------------------- checks */

/* The hardware keys and how they fit the rest. */
static int cfg__check_hw(const ems_edge_config_t *cfg, char *err, size_t cap)
{
    const char *src = cfg->source[0] ? cfg->source : "configuration";
    char why[400];
    if (cfg->backend != EMS_EDGE_BACKEND_HW)
        return 0;
    if (cfg->sim_control)
        return cfg__fail(err, cap, src, "sim_control is for backend = sim only");
    if (ems_hw_config_check(&cfg->hw, cfg->limits.max_charge_w, cfg->limits.max_discharge_w, why,
                            sizeof why) < 0)
        return cfg__fail(err, cap, src, "%s", why);
    return 0;
}

int ems_edge_config_check(const ems_edge_config_t *cfg, char *err, size_t cap)
{
    char where[EMS_EDGE_PATH_MAX + 16];
    const char *src = cfg->source[0] ? cfg->source : "configuration";
    if (cfg->probe_only) {
        if (cfg->backend != EMS_EDGE_BACKEND_HW)
            return cfg__fail(err, cap, src, "--probe reads the hardware: set backend = hw");
        return cfg__check_hw(cfg, err, cap);
    }
    if (!cfg->device_id[0])
        return cfg__fail(err, cap, src, "device_id is required");
    if (!cfg->cloud_url[0])
        return cfg__fail(err, cap, src, "cloud_url is required");
    if (!cfg->token_file[0])
        return cfg__fail(err, cap, src, "token_file is required");

    ems_edge_ws_target_t t;
    char why[256];
    if (ems_edge_config_ws_target(cfg->cloud_url, cfg->device_id, &t, why, sizeof why) < 0)
        return cfg__fail(err, cap, cfg__where(cfg, "cloud_url", where, sizeof where), "%s", why);
    if (!t.tls && !cfg->allow_insecure_ws)
        return cfg__fail(err, cap, cfg__where(cfg, "cloud_url", where, sizeof where),
                         "cloud_url is plain ws:// but allow_insecure_ws is not true "
                         "(plain WebSocket only behind a TLS-terminating proxy)");
    if (t.tls && !cfg->ca_file[0])
        return cfg__fail(err, cap, cfg__where(cfg, "cloud_url", where, sizeof where),
                         "ca_file is required for a wss:// cloud_url");
    if (ems_fsm_limits_check(&cfg->limits, why, sizeof why) < 0)
        return cfg__fail(err, cap, src, "%s", why);
    if (!cfg->buffer_path[0])
        return cfg__fail(err, cap, src, "buffer_path must not be empty");
    if (cfg->ws_ping_ms >= cfg->ws_timeout_ms)
        return cfg__fail(err, cap, cfg__where(cfg, "ws_timeout_s", where, sizeof where),
                         "ws_timeout_s must be longer than ws_ping_s");
    if (cfg->reconnect_min_ms > cfg->reconnect_max_ms)
        return cfg__fail(err, cap, cfg__where(cfg, "reconnect_max_s", where, sizeof where),
                         "reconnect_max_s must not be below reconnect_min_s");
    return cfg__check_hw(cfg, err, cap);
}

/* ------------------------------------------------------------- plant */

void ems_edge_config_plant(const ems_edge_config_t *cfg, ems_plant_config_t *out)
{
    const ems_edge_plant_keys_t *k = &cfg->plant;
    ems_plant_config_default(out, k->profile);
    if (k->has_seed)
        out->seed = k->seed;
    if (!isnan(k->start_tod_s))
        out->start_tod_s = k->start_tod_s;
    if (!isnan(k->soc))
        out->soc0 = k->soc;
    if (!isnan(k->capacity_kwh))
        out->capacity_kwh = k->capacity_kwh;
    if (!isnan(k->pv_peak_w))
        out->pv_peak_w = k->pv_peak_w;
    if (!isnan(k->ambient_c))
        out->ambient_c = out->temp0_c = k->ambient_c;
    if (!isnan(k->thermal_tau_s))
        out->thermal_tau_s = k->thermal_tau_s;
    if (!isnan(k->fault_at_s))
        out->fault_at_s = k->fault_at_s;
}

/* ------------------------------------------------------------- flags */

static const char cfg__usage[] =
    "usage: ems-edge [options]\n"
    "  -c, --config FILE     read the configuration file FILE\n"
    "  -s, --set KEY=VALUE   set any key of the file (repeatable)\n"
    "      --sim             use the simulated plant (backend = sim)\n"
    "      --profile NAME    plant profile: sunny, evening, faulty\n"
    "      --seed N          plant random seed\n"
    "      --device-id ID    device_id\n"
    "      --url URL         cloud_url (wss://HOST[:PORT])\n"
    "      --token-file PATH token_file\n"
    "      --ca-file PATH    ca_file\n"
    "      --insecure-ws     allow a plain ws:// cloud_url\n"
    "      --log-level L     error, warn, info, debug\n"
    "      --buffer PATH     buffer_path\n"
    "      --status-port N   status_port (0 = off)\n"
    "      --status-bind A   status_bind (default 127.0.0.1)\n"
    "      --check           check the configuration and exit\n"
    "      --probe           read every configured chip once, print what it read, exit\n"
    "                        (backend = hw; the first thing to run after wiring)\n"
    "  -h, --help            this text\n"
    "  -V, --version         the version\n"
    "Flags override the file. See edge/ems-edge.conf.example for every key.\n";

const char *ems_edge_config_usage(void)
{
    return cfg__usage;
}

typedef struct {
    const char *lng;
    char shrt;
    const char *key; /* the file key it sets; NULL for special flags */
    bool has_arg;
    const char *fixed; /* value for flags without an argument */
} cfg__flag_t;

static const cfg__flag_t cfg__flags[] = {
    {"config", 'c', NULL, true, NULL},
    {"set", 's', NULL, true, NULL},
    {"sim", 0, "backend", false, "sim"},
    {"profile", 0, "plant_profile", true, NULL},
    {"seed", 0, "plant_seed", true, NULL},
    {"device-id", 0, "device_id", true, NULL},
    {"url", 0, "cloud_url", true, NULL},
    {"token-file", 0, "token_file", true, NULL},
    {"ca-file", 0, "ca_file", true, NULL},
    {"insecure-ws", 0, "allow_insecure_ws", false, "true"},
    {"log-level", 0, "log_level", true, NULL},
    {"buffer", 0, "buffer_path", true, NULL},
    {"status-port", 0, "status_port", true, NULL},
    {"status-bind", 0, "status_bind", true, NULL},
    {"check", 0, NULL, false, NULL},
    {"probe", 0, NULL, false, NULL},
    {"help", 'h', NULL, false, NULL},
    {"version", 'V', NULL, false, NULL},
};

/* Finds the flag of argv[*i] and its value; advances *i past a separate
 * value argument. Returns the flag or NULL with err set. */
static const cfg__flag_t *cfg__flag(int argc, char *const argv[], int *i, const char **val,
                                    char *err, size_t cap)
{
    const char *a = argv[*i];
    const char *inline_val = NULL;
    const cfg__flag_t *f = NULL;
    if (a[0] == '-' && a[1] == '-' && a[2]) {
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        for (size_t k = 0; k < sizeof cfg__flags / sizeof cfg__flags[0]; k++)
            if (strlen(cfg__flags[k].lng) == nl && strncmp(cfg__flags[k].lng, name, nl) == 0)
                f = &cfg__flags[k];
        if (eq)
            inline_val = eq + 1;
    } else if (a[0] == '-' && a[1] && !a[2]) {
        for (size_t k = 0; k < sizeof cfg__flags / sizeof cfg__flags[0]; k++)
            if (cfg__flags[k].shrt == a[1])
                f = &cfg__flags[k];
    }
    if (!f) {
        cfg__fail(err, cap, a, "unknown option (see --help)");
        return NULL;
    }
    *val = NULL;
    if (f->has_arg) {
        if (inline_val) {
            *val = inline_val;
        } else if (*i + 1 < argc) {
            *val = argv[++*i];
        } else {
            cfg__fail(err, cap, a, "needs a value");
            return NULL;
        }
    } else if (inline_val) {
        cfg__fail(err, cap, a, "takes no value");
        return NULL;
    }
    return f;
}

int ems_edge_config_from_args(ems_edge_config_t *cfg, int argc, char *const argv[], char *err,
                              size_t cap)
{
    ems_edge_config_default(cfg);

    /* Pass 1: the file, so that every other flag overrides it whatever the
     * order on the command line. */
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *val;
        const cfg__flag_t *f = cfg__flag(argc, argv, &i, &val, err, cap);
        if (!f)
            return EMS_ECONFIG;
        if (strcmp(f->lng, "config") == 0)
            file = val;
    }
    if (file) {
        int rc = ems_edge_config_load(cfg, file, err, cap);
        if (rc < 0)
            return rc;
    }

    /* Pass 2: everything else, in order (a later flag wins). */
    for (int i = 1; i < argc; i++) {
        const char *val;
        const cfg__flag_t *f = cfg__flag(argc, argv, &i, &val, err, cap);
        if (!f)
            return EMS_ECONFIG;
        int rc = 0;
        if (strcmp(f->lng, "config") == 0) {
            continue;
        } else if (strcmp(f->lng, "help") == 0) {
            cfg->show_help = true;
        } else if (strcmp(f->lng, "version") == 0) {
            cfg->show_version = true;
        } else if (strcmp(f->lng, "check") == 0) {
            cfg->check_only = true;
        } else if (strcmp(f->lng, "probe") == 0) {
            cfg->probe_only = true;
        } else if (strcmp(f->lng, "set") == 0) {
            const char *eq = strchr(val, '=');
            if (!eq || eq == val)
                return cfg__fail(err, cap, "--set", "'%s' is not KEY=VALUE", val);
            char key[64];
            size_t kl = (size_t)(eq - val);
            if (kl >= sizeof key)
                return cfg__fail(err, cap, "--set", "unknown key '%.*s'", (int)kl, val);
            memcpy(key, val, kl);
            key[kl] = '\0';
            rc = ems_edge_config_set(cfg, key, eq + 1, "--set", -1, err, cap);
        } else {
            char where[80];
            snprintf(where, sizeof where, "--%s", f->lng);
            rc = ems_edge_config_set(cfg, f->key, f->has_arg ? val : f->fixed, where, -1, err, cap);
        }
        if (rc < 0)
            return rc;
    }
    if (cfg->show_help || cfg->show_version)
        return 0;
    return ems_edge_config_check(cfg, err, cap);
}

/* ------------------------------------------------------------- the token */

int ems_edge_config_read_token(const char *path, char *token, size_t cap, char *err, size_t err_cap)
{
    if (cap < 65)
        return EMS_EINVAL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        cfg__fail(err, err_cap, path, "%s", strerror(errno));
        return EMS_EIO;
    }
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    buf[n] = '\0';
    size_t a = 0, b = n;
    while (a < b && isspace((unsigned char)buf[a]))
        a++;
    while (b > a && isspace((unsigned char)buf[b - 1]))
        b--;
    bool ok = !more && b - a == 64;
    for (size_t i = a; ok && i < b; i++)
        ok = isxdigit((unsigned char)buf[i]) != 0;
    if (!ok) {
        /* Never echo the file: it is a secret, even when malformed. */
        cfg__fail(err, err_cap, path, "does not hold a device token (64 hex characters)");
        return EMS_EINVAL;
    }
    memcpy(token, buf + a, 64);
    token[64] = '\0';
    return 0;
}
