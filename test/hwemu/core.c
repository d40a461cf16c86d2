/* core.c: configuration, control file, time, the embedded plant, the
 * emulated inverter, the state file and the log (see hwemu.h). */
#include "hwemu.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HWEMU__CONTROL_PERIOD_NS (50 * 1000000LL)
#define HWEMU__STATE_PERIOD_NS (500 * 1000000LL)
#define HWEMU__OVERHEAT_C 75.0

static hwemu_t hwemu__g;
static bool hwemu__active;
static pthread_once_t hwemu__once = PTHREAD_ONCE_INIT;
static pthread_mutex_t hwemu__mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

int64_t hwemu_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void hwemu_lock(void)
{
    pthread_mutex_lock(&hwemu__mu);
}

void hwemu_unlock(void)
{
    pthread_mutex_unlock(&hwemu__mu);
}

/* ------------------------------------------------------------------ parsing helpers */

static char *hwemu__trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int hwemu__parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *hwemu__trim(end) != '\0' || !isfinite(d))
        return -EINVAL;
    *out = d;
    return 0;
}

/* Accepts "3.3/6000" as well as a plain number, for the transfer functions. */
static int hwemu__parse_ratio(const char *v, double *out)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", v);
    char *slash = strchr(buf, '/');
    if (!slash)
        return hwemu__parse_double(buf, out);
    *slash = '\0';
    double a, b;
    if (hwemu__parse_double(buf, &a) || hwemu__parse_double(slash + 1, &b) || b == 0)
        return -EINVAL;
    *out = a / b;
    return 0;
}

static int hwemu__parse_uint(const char *v, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long u = strtoul(v, &end, 0);
    if (errno || end == v || *hwemu__trim(end) != '\0' || u > max || v[0] == '-')
        return -EINVAL;
    *out = (unsigned)u;
    return 0;
}

/* An I2C address 0x03..0x77, or "none" (HWEMU_NOADDR). */
static int hwemu__parse_addr(const char *v, unsigned *out)
{
    if (strcmp(v, "none") == 0) {
        *out = HWEMU_NOADDR;
        return 0;
    }
    unsigned a;
    if (hwemu__parse_uint(v, 0x77, &a) || a < 0x03)
        return -EINVAL;
    *out = a;
    return 0;
}

static int hwemu__parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (unsigned i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return *out = true, 0;
        if (strcasecmp(v, no[i]) == 0)
            return *out = false, 0;
    }
    return -EINVAL;
}

/* ------------------------------------------------------------------ config */

static void hwemu__config_default(hwemu_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->i2c_bus = 1;
    snprintf(c->gpiochip, sizeof c->gpiochip, "gpiochip0");
    c->gpiochip_num = 0;
    c->gpio_lines = 54;
    c->monitor = HWEMU_MON_INA228;
    c->monitor_addr = 0x40;
    c->shunt_ohms = 0.0005;
    c->bus_divider = 1.0;
    c->temp_addr = 0x48;
    c->grid_addr = 0x38;
    /* The front end of edge/ems-edge.conf.example (README): 1/26000 V,
     * 10 uA and 1/154 W per LSB, i.e. full scale about 347 V rms, 90 A rms
     * and 31 kW, plenty for a 230 V / 50 A connection. */
    c->grid_v_per_lsb = 1.0 / 26000.0;
    c->grid_a_per_lsb = 1.0e-5;
    c->grid_w_per_lsb = 1.0 / 154.0;
    c->dac_addr = 0x60;
    c->dac_vref_v = 3.3;
    c->dac_offset_v = 0.0;
    c->dac_volts_per_w = 3.3 / 6000.0;
    c->dac_eeprom_code = 0;
    c->charge_line = 17;
    c->discharge_line = 27;
    c->zero_cross_line = 22;
    c->enable_active_low = false;
    ems_plant_config_default(&c->plant, EMS_PLANT_SUNNY);
    c->plant_speed = 1.0;
}

/* Applies one key; returns 0 or a static text saying what is wrong. */
static const char *hwemu__config_key(hwemu_config_t *c, const char *k, const char *v, double *soc,
                                     double *start, bool *seed_set, uint64_t *seed)
{
    unsigned u;
    if (strcmp(k, "i2c_bus") == 0) {
        if (hwemu__parse_uint(v, 255, &u))
            return "i2c_bus must be 0..255";
        c->i2c_bus = (int)u;
    } else if (strcmp(k, "gpiochip") == 0) {
        if (strncmp(v, "gpiochip", 8) != 0 || hwemu__parse_uint(v + 8, 255, &u))
            return "gpiochip must be gpiochipN";
        snprintf(c->gpiochip, sizeof c->gpiochip, "gpiochip%u", u);
        c->gpiochip_num = (int)u;
    } else if (strcmp(k, "gpio_lines") == 0) {
        if (hwemu__parse_uint(v, HWEMU_MAX_LINES, &u) || u == 0)
            return "gpio_lines must be 1..512";
        c->gpio_lines = u;
    } else if (strcmp(k, "battery_monitor") == 0) {
        if (strcmp(v, "ina228") == 0)
            c->monitor = HWEMU_MON_INA228;
        else if (strcmp(v, "ina226") == 0)
            c->monitor = HWEMU_MON_INA226;
        else if (strcmp(v, "none") == 0)
            c->monitor = HWEMU_MON_NONE;
        else
            return "battery_monitor must be ina228, ina226 or none";
    } else if (strcmp(k, "battery_monitor_address") == 0) {
        if (hwemu__parse_addr(v, &c->monitor_addr))
            return "not an I2C address (0x03..0x77 or none)";
    } else if (strcmp(k, "shunt_ohms") == 0) {
        if (hwemu__parse_double(v, &c->shunt_ohms) || !(c->shunt_ohms > 0))
            return "shunt_ohms must be > 0";
    } else if (strcmp(k, "bus_divider") == 0) {
        if (hwemu__parse_double(v, &c->bus_divider) || !(c->bus_divider >= 1))
            return "bus_divider must be >= 1";
    } else if (strcmp(k, "temp_sensor_address") == 0) {
        if (hwemu__parse_addr(v, &c->temp_addr))
            return "not an I2C address (0x03..0x77 or none)";
    } else if (strcmp(k, "grid_meter_address") == 0) {
        if (hwemu__parse_addr(v, &c->grid_addr))
            return "not an I2C address (0x03..0x77 or none)";
    } else if (strcmp(k, "grid_v_per_lsb") == 0) {
        if (hwemu__parse_ratio(v, &c->grid_v_per_lsb) || !(c->grid_v_per_lsb > 0))
            return "grid_v_per_lsb must be > 0";
    } else if (strcmp(k, "grid_a_per_lsb") == 0) {
        if (hwemu__parse_ratio(v, &c->grid_a_per_lsb) || !(c->grid_a_per_lsb > 0))
            return "grid_a_per_lsb must be > 0";
    } else if (strcmp(k, "grid_w_per_lsb") == 0) {
        if (hwemu__parse_ratio(v, &c->grid_w_per_lsb) || !(c->grid_w_per_lsb > 0))
            return "grid_w_per_lsb must be > 0";
    } else if (strcmp(k, "dac_address") == 0) {
        if (hwemu__parse_addr(v, &c->dac_addr))
            return "not an I2C address (0x03..0x77 or none)";
    } else if (strcmp(k, "dac_vref_v") == 0) {
        if (hwemu__parse_double(v, &c->dac_vref_v) || !(c->dac_vref_v > 0))
            return "dac_vref_v must be > 0";
    } else if (strcmp(k, "dac_offset_v") == 0) {
        if (hwemu__parse_double(v, &c->dac_offset_v))
            return "dac_offset_v must be a number";
    } else if (strcmp(k, "dac_volts_per_w") == 0) {
        if (hwemu__parse_ratio(v, &c->dac_volts_per_w) || !(c->dac_volts_per_w > 0))
            return "dac_volts_per_w must be > 0 (a number or A/B)";
    } else if (strcmp(k, "dac_eeprom_code") == 0) {
        if (hwemu__parse_uint(v, 4095, &c->dac_eeprom_code))
            return "dac_eeprom_code must be 0..4095";
    } else if (strcmp(k, "charge_enable_line") == 0) {
        if (hwemu__parse_uint(v, HWEMU_MAX_LINES - 1, &c->charge_line))
            return "not a line offset";
    } else if (strcmp(k, "discharge_enable_line") == 0) {
        if (hwemu__parse_uint(v, HWEMU_MAX_LINES - 1, &c->discharge_line))
            return "not a line offset";
    } else if (strcmp(k, "zero_cross_line") == 0) {
        if (hwemu__parse_uint(v, HWEMU_MAX_LINES - 1, &c->zero_cross_line))
            return "not a line offset";
    } else if (strcmp(k, "enable_active_low") == 0) {
        if (hwemu__parse_bool(v, &c->enable_active_low))
            return "enable_active_low must be true or false";
    } else if (strcmp(k, "plant_profile") == 0) {
        ems_plant_profile_t p;
        if (ems_plant_profile_parse(v, &p))
            return "plant_profile must be sunny, evening or faulty";
        ems_plant_config_default(&c->plant, p);
    } else if (strcmp(k, "plant_seed") == 0) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 0);
        if (errno || end == v || *end)
            return "plant_seed must be an unsigned integer";
        *seed = s;
        *seed_set = true;
    } else if (strcmp(k, "plant_speed") == 0) {
        if (hwemu__parse_double(v, &c->plant_speed) || !(c->plant_speed > 0) ||
            c->plant_speed > 10000)
            return "plant_speed must be in (0, 10000]";
    } else if (strcmp(k, "plant_soc") == 0) {
        if (hwemu__parse_double(v, soc) || *soc < 0 || *soc > 100)
            return "plant_soc must be 0..100";
    } else if (strcmp(k, "plant_start") == 0) {
        unsigned h, m;
        char tail;
        if (sscanf(v, "%u:%u%c", &h, &m, &tail) != 2 || h > 23 || m > 59)
            return "plant_start must be HH:MM";
        *start = h * 3600.0 + m * 60.0;
    } else {
        return "unknown key";
    }
    return NULL;
}

int hwemu_config_load(hwemu_config_t *c, const char *path)
{
    hwemu__config_default(c);
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(stderr, "ems-hwemu: %s: %s (the emulator stays off)\n", path, strerror(errno));
        return -EINVAL;
    }
    /* Profile first: plant_profile resets the plant's defaults, so the other
     * plant_* keys apply on top of it whatever their order in the file. */
    double soc = NAN, start = NAN;
    bool seed_set = false;
    uint64_t seed = 1;
    char line[512];
    int lineno = 0, rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        rewind(f);
        lineno = 0;
        while (fgets(line, sizeof line, f)) {
            lineno++;
            char *hash = strchr(line, '#');
            if (hash)
                *hash = '\0';
            char *s = hwemu__trim(line);
            if (!*s)
                continue;
            char *eq = strchr(s, '=');
            if (!eq) {
                fprintf(stderr, "ems-hwemu: %s:%d: expected key = value\n", path, lineno);
                rc = -EINVAL;
                break;
            }
            *eq = '\0';
            char *k = hwemu__trim(s), *v = hwemu__trim(eq + 1);
            bool is_profile = strcmp(k, "plant_profile") == 0;
            if (is_profile != (pass == 0))
                continue;
            const char *why = hwemu__config_key(c, k, v, &soc, &start, &seed_set, &seed);
            if (why) {
                fprintf(stderr, "ems-hwemu: %s:%d: %s: %s (the emulator stays off)\n", path, lineno,
                        k, why);
                rc = -EINVAL;
                break;
            }
        }
    }
    fclose(f);
    if (rc)
        return rc;
    if (!isnan(soc))
        c->plant.soc0 = soc;
    if (!isnan(start))
        c->plant.start_tod_s = start;
    c->plant.seed = seed_set ? seed : c->plant.seed;
    unsigned lines[3] = {c->charge_line, c->discharge_line, c->zero_cross_line};
    for (unsigned i = 0; i < 3; i++) {
        if (lines[i] >= c->gpio_lines) {
            fprintf(stderr, "ems-hwemu: %s: line %u is beyond gpio_lines = %u\n", path, lines[i],
                    c->gpio_lines);
            return -EINVAL;
        }
    }
    if (c->charge_line == c->discharge_line || c->charge_line == c->zero_cross_line ||
        c->discharge_line == c->zero_cross_line) {
        fprintf(stderr, "ems-hwemu: %s: the enable and zero-crossing lines must differ\n", path);
        return -EINVAL;
    }
    unsigned addrs[4] = {c->monitor == HWEMU_MON_NONE ? HWEMU_NOADDR : c->monitor_addr,
                         c->temp_addr, c->grid_addr, c->dac_addr};
    for (unsigned i = 0; i < 4; i++)
        for (unsigned j = i + 1; j < 4; j++)
            if (addrs[i] != HWEMU_NOADDR && addrs[i] == addrs[j]) {
                fprintf(stderr, "ems-hwemu: %s: two chips at address 0x%02x\n", path, addrs[i]);
                return -EINVAL;
            }
    return 0;
}

/* ------------------------------------------------------------------ control */

/* Parses "0x40,0x48" into a set; empty clears it. */
static void hwemu__parse_addr_set(const char *v, bool set[128], bool add_only)
{
    if (!add_only)
        memset(set, 0, 128 * sizeof set[0]);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        unsigned a;
        if (hwemu__parse_uint(tok, 0x7f, &a) == 0)
            set[a] = true;
    }
}

static void hwemu__control_apply(hwemu_t *e, const char *path)
{
    hwemu_control_t c;
    memset(&c, 0, sizeof c);
    c.forced_temp_c = NAN;
    c.freq_hz = NAN;
    bool resets[128] = {0}, overheat = false;
    memset(e->nack_once, 0, sizeof e->nack_once);

    FILE *f = fopen(path, "re");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            char *hash = strchr(line, '#');
            if (hash)
                *hash = '\0';
            char *s = hwemu__trim(line);
            char *eq = strchr(s, '=');
            if (!*s || !eq)
                continue;
            *eq = '\0';
            char *k = hwemu__trim(s), *v = hwemu__trim(eq + 1);
            double d;
            unsigned u;
            bool b;
            if (strcmp(k, "overheat") == 0 && hwemu__parse_bool(v, &b) == 0)
                overheat = b;
            else if (strcmp(k, "temp") == 0)
                c.forced_temp_c = hwemu__parse_double(v, &d) == 0 ? d : NAN;
            else if (strcmp(k, "silence") == 0)
                hwemu__parse_addr_set(v, c.silence, false);
            else if (strcmp(k, "nack_once") == 0)
                hwemu__parse_addr_set(v, e->nack_once, true);
            else if (strcmp(k, "stuck") == 0)
                hwemu__parse_addr_set(v, c.stuck, false);
            else if (strcmp(k, "wrong_id") == 0)
                hwemu__parse_addr_set(v, c.wrong_id, false);
            else if (strcmp(k, "reset") == 0)
                hwemu__parse_addr_set(v, resets, true);
            else if (strcmp(k, "freq") == 0)
                c.freq_hz = hwemu__parse_double(v, &d) == 0 && d > 1 && d < 1000 ? d : NAN;
            else if (strcmp(k, "freq_jitter_us") == 0)
                c.jitter_us = hwemu__parse_double(v, &d) == 0 && d >= 0 ? d : 0;
            else if (strcmp(k, "missing_edges") == 0)
                c.missing_edges = hwemu__parse_uint(v, 1000000, &u) == 0 && u >= 2 ? u : 0;
            else if (strcmp(k, "glitches") == 0)
                c.glitches = hwemu__parse_uint(v, 1000000, &u) == 0 ? u : 0;
            else if (strcmp(k, "grid_outage") == 0 && hwemu__parse_bool(v, &b) == 0)
                c.grid_outage = b;
            else
                hwemu_log(e, "control: ignored '%s=%s'", k, v);
        }
        fclose(f);
    }
    if (overheat)
        c.forced_temp_c = HWEMU__OVERHEAT_C;
    /* Released: the thermal model continues from the forced temperature. */
    e->ctl = c;
    ems_plant_grid_outage(&e->plant, c.grid_outage);
    for (unsigned a = 0; a < 128; a++)
        if (resets[a])
            hwemu_i2c_reset(e, a);
    hwemu_log(e, "control: re-read %s", path);
    hwemu_gpio_rearm_all(e);
    e->state_dirty = true;
}

static void hwemu__control_check(hwemu_t *e, int64_t now)
{
    if (!e->control_path || now - e->last_control_check_ns < HWEMU__CONTROL_PERIOD_NS)
        return;
    e->last_control_check_ns = now;
    int64_t mt = 0, sz = -1, ino = 0;
    if (hwemu_real_stat(e->control_path, &mt, &sz, &ino) != 0) {
        mt = 0, sz = -1, ino = 0; /* a missing file is "no faults" */
    }
    if (e->control_sig.seen && e->control_sig.mtime_ns == mt && e->control_sig.size == sz &&
        e->control_sig.ino == ino)
        return;
    e->control_sig.seen = true;
    e->control_sig.mtime_ns = mt;
    e->control_sig.size = sz;
    e->control_sig.ino = ino;
    hwemu__control_apply(e, e->control_path);
}

/* ------------------------------------------------------------------ time and plant */

static void hwemu__phys_update(hwemu_t *e, int64_t now)
{
    ems_io_sample_t s;
    ems_plant_sample(&e->plant, &s);
    ems_plant_truth_t t;
    ems_plant_truth(&e->plant, &t);
    hwemu_phys_t *p = &e->phys;
    p->now_ns = now;
    p->plant_s = (double)(e->plant.now_ms - e->plant.t0_ms) / 1000.0;
    p->batt_v = s.battery_voltage;
    p->batt_a = s.battery_current;
    p->batt_w = s.battery_power;
    p->batt_temp_c = s.battery_temperature;
    p->soc = t.soc;
    p->grid_v = s.grid_voltage;
    p->grid_w = s.grid_power;
    /* freq= overrides the grid frequency for everything that sees it: the
     * meter's PERIOD and the zero-crossing line (not the plant itself). */
    p->grid_hz = s.grid_frequency;
    if (!isnan(e->ctl.freq_hz) && !e->ctl.grid_outage)
        p->grid_hz = e->ctl.freq_hz;
    /* The board sits a few kelvin above the pack's ambient. */
    p->board_temp_c = e->plant.cfg.ambient_c + 8.0;
}

void hwemu_tick(hwemu_t *e)
{
    int64_t now = hwemu_mono_ns();
    hwemu__control_check(e, now);
    double real_s = (double)(now - e->t0_ns) / 1e9;
    int64_t plant_ms = (int64_t)(real_s * e->cfg.plant_speed * 1000.0);
    ems_plant_advance(&e->plant, plant_ms);
    if (!isnan(e->ctl.forced_temp_c))
        ems_plant_force_temperature(&e->plant, e->ctl.forced_temp_c);
    hwemu__phys_update(e, now);
    if (e->state_dirty || now - e->last_state_ns >= HWEMU__STATE_PERIOD_NS)
        hwemu_state_write(e);
}

/* ------------------------------------------------------------------ the inverter */

void hwemu_outputs_changed(hwemu_t *e)
{
    const hwemu_config_t *c = &e->cfg;
    int active = c->enable_active_low ? 0 : 1;
    bool ch = hwemu_gpio_level(e, c->charge_line) == active;
    bool dis = hwemu_gpio_level(e, c->discharge_line) == active;
    double volts = e->dac ? hwemu_mcp4725_volts(e->dac) : 0.0;
    double mag = fmax(0.0, (volts - c->dac_offset_v) / c->dac_volts_per_w);
    double cmd = 0.0;
    if (ch && !dis)
        cmd = mag;
    else if (dis && !ch)
        cmd = -mag;
    bool both = ch && dis;
    if (both && !e->both_now) {
        e->both_enables++;
        hwemu_log(e, "inverter: WIRING FAULT both enables active (count %lu)", e->both_enables);
    }
    e->both_now = both;
    bool changed = cmd != e->command_w || ch != e->charge_en || dis != e->discharge_en;
    e->charge_en = ch;
    e->discharge_en = dis;
    if (cmd != e->command_w) {
        e->command_w = cmd;
        ems_plant_set_setpoint(&e->plant, cmd);
    }
    if (changed) {
        hwemu_log(e, "inverter: charge=%d discharge=%d dac=%.4f V command=%.1f W", ch, dis, volts,
                  cmd);
    }
    hwemu_state_write(e);
}

/* ------------------------------------------------------------------ state and log */

static int hwemu__write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        long n = hwemu_real_write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -EIO;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

void hwemu_state_write(hwemu_t *e)
{
    int64_t now = hwemu_mono_ns();
    e->last_state_ns = now;
    e->state_dirty = false;
    if (!e->state_path)
        return;
    const hwemu_config_t *c = &e->cfg;
    ems_plant_truth_t t;
    ems_plant_truth(&e->plant, &t);
    const hwemu_phys_t *p = &e->phys;
    unsigned code = e->dac ? hwemu_mcp4725_code(e->dac) : 0;
    double volts = e->dac ? hwemu_mcp4725_volts(e->dac) : 0.0;
    char buf[2048];
    int n = snprintf(buf, sizeof buf,
                     "{\"t_ms\":%lld,\"pid\":%ld,\"dac_code\":%u,\"dac_volts\":%.5f,"
                     "\"charge_enable\":%s,\"discharge_enable\":%s,\"charge_line\":%d,"
                     "\"discharge_line\":%d,\"command_w\":%.3f,\"both_enables\":%lu,"
                     "\"i2c_transfers\":%lu,\"i2c_nacks\":%lu,\"events_sent\":%lu,"
                     "\"plant\":{\"t_s\":%.3f,\"soc\":%.4f,\"temp_c\":%.3f,\"battery_w\":%.3f,"
                     "\"setpoint_w\":%.3f,\"voltage_v\":%.4f,\"current_a\":%.4f,\"grid_v\":%.3f,"
                     "\"grid_w\":%.3f,\"grid_hz\":%.4f,\"pv_w\":%.3f,\"load_w\":%.3f}}\n",
                     (long long)((now - e->t0_ns) / 1000000), (long)getpid(), code, volts,
                     e->charge_en ? "true" : "false", e->discharge_en ? "true" : "false",
                     hwemu_gpio_level(e, c->charge_line), hwemu_gpio_level(e, c->discharge_line),
                     e->command_w, e->both_enables, e->i2c_transfers, e->i2c_nacks, e->events_sent,
                     p->plant_s, t.soc, t.temp_c, t.battery_w, t.setpoint_w, p->batt_v, p->batt_a,
                     p->grid_v, p->grid_w, p->grid_hz, t.pv_w, t.load_w);
    if (n < 0 || (size_t)n >= sizeof buf)
        return;
    char tmp[4096 + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", e->state_path, (long)getpid());
    int fd = hwemu_real_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    int rc = hwemu__write_all(fd, buf, (size_t)n);
    hwemu_real_close(fd);
    if (rc == 0 && rename(tmp, e->state_path) == 0)
        return;
    unlink(tmp);
}

void hwemu_log(hwemu_t *e, const char *fmt, ...)
{
    if (e->log_fd < 0)
        return;
    char buf[1024];
    int64_t ms = (hwemu_mono_ns() - e->t0_ns) / 1000000;
    int n = snprintf(buf, sizeof buf, "%lld.%03lld [%ld] ", (long long)(ms / 1000),
                     (long long)(ms % 1000), (long)getpid());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    hwemu__write_all(e->log_fd, buf, len);
}

/* ------------------------------------------------------------------ start and stop */

static int hwemu__add_chip(hwemu_t *e, hwemu_chip_t *chip)
{
    if (!chip || e->nchips >= HWEMU_MAX_CHIPS)
        return -ENOMEM;
    e->chips[e->nchips++] = chip;
    return 0;
}

static void hwemu__init(void)
{
    const char *path = getenv("EMS_HWEMU_CONFIG");
    if (!path || !*path)
        return;
    hwemu_t *e = &hwemu__g;
    memset(e, 0, sizeof *e);
    e->log_fd = -1;
    if (hwemu_config_load(&e->cfg, path) != 0)
        return;
    hwemu_check_glibc();
    const char *s;
    if ((s = getenv("EMS_HWEMU_LOG")) && *s)
        e->log_fd = hwemu_real_open(s, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if ((s = getenv("EMS_HWEMU_CONTROL")) && *s)
        e->control_path = strdup(s);
    if ((s = getenv("EMS_HWEMU_STATE")) && *s)
        e->state_path = strdup(s);

    e->t0_ns = hwemu_mono_ns();
    if (ems_plant_init(&e->plant, &e->cfg.plant, 0) != 0) {
        fprintf(stderr, "ems-hwemu: %s: the plant rejects this configuration\n", path);
        return;
    }
    ems_rng_seed(&e->rng, e->cfg.plant.seed ^ 0x7a65726f63726f73ULL);
    e->ctl.forced_temp_c = NAN;
    e->ctl.freq_hz = NAN;
    hwemu__phys_update(e, e->t0_ns);

    const hwemu_config_t *c = &e->cfg;
    int rc = 0;
    if (c->monitor != HWEMU_MON_NONE && c->monitor_addr != HWEMU_NOADDR)
        rc |= hwemu__add_chip(e, hwemu_ina2xx_new(e, c->monitor_addr, c->monitor));
    if (c->temp_addr != HWEMU_NOADDR)
        rc |= hwemu__add_chip(e, hwemu_tmp102_new(e, c->temp_addr));
    if (c->grid_addr != HWEMU_NOADDR)
        rc |= hwemu__add_chip(e, hwemu_ade7953_new(e, c->grid_addr));
    if (c->dac_addr != HWEMU_NOADDR) {
        e->dac = hwemu_mcp4725_new(e, c->dac_addr);
        rc |= hwemu__add_chip(e, e->dac);
    }
    if (rc) {
        fprintf(stderr, "ems-hwemu: out of memory\n");
        return;
    }
    hwemu_log(e, "start: config %s, /dev/i2c-%d, /dev/%s (%u lines), plant %s seed %llu x%g", path,
              c->i2c_bus, c->gpiochip, c->gpio_lines, ems_plant_profile_name(c->plant.profile),
              (unsigned long long)c->plant.seed, c->plant_speed);
    hwemu__active = true;
    hwemu_lock();
    hwemu_tick(e);
    hwemu_outputs_changed(e);
    hwemu_unlock();
}

hwemu_t *hwemu_get(void)
{
    pthread_once(&hwemu__once, hwemu__init);
    return hwemu__active ? &hwemu__g : NULL;
}

/* At a normal exit the kernel would close every fd: the lines go back to
 * inputs (the enables fall to their inactive level) while the DAC keeps its
 * code. The state file shows that, so a test sees what the hardware is left
 * with. */
__attribute__((destructor)) static void hwemu__fini(void)
{
    if (!hwemu__active)
        return;
    hwemu_t *e = &hwemu__g;
    hwemu_lock();
    hwemu_gpio_release_all(e);
    hwemu_outputs_changed(e);
    hwemu_log(e, "exit: lines released");
    hwemu_unlock();
}
