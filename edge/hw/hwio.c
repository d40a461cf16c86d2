/* hwio.c: the hardware back end (see hwio.h). */
#include "hwio.h"

#include "ade7953.h"
#include "buf.h"
#include "error.h"
#include "freq.h"
#include "gpio.h"
#include "i2c.h"
#include "ina2xx.h"
#include "log.h"
#include "mcp4725.h"
#include "soc.h"
#include "tmp102.h"

#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HW__CONSUMER "ems-edge"
#define HW__DEAD_GRID_V 50.0 /* below this the grid is off: no zero crossings expected */
#define HW__EDGES_MAX 64

/* One sensor group's failure state, so a failure is logged when it starts
 * and when it ends, not every second. */
typedef struct {
    const char *what;  /* "battery monitor" */
    const char *then;  /* what a failure leads to, for the log */
    const char *again; /* what its recovery is called */
    char where[112];   /* "INA228 at /dev/i2c-1 0x40" */
    int rc;            /* the last read's result */
    uint64_t failures;
    uint64_t logged_ns; /* start of the current minute of logging */
    unsigned logged;    /* changes logged in it */
    uint64_t quiet;     /* changes not logged since the last logged one */
} hw__group_t;

struct ems_hwio {
    ems_io_t io;
    uv_loop_t *loop;
    ems_hw_config_t cfg;

    ems_i2c_bus_t *bus;
    ems_ina2xx_t bat;
    ems_tmp102_t temp;
    ems_ade7953_t grid;
    ems_mcp4725_t dac;
    ems_gpio_chip_t chip;
    ems_gpio_out_t chg, dis;
    ems_gpio_edges_t zc;
    uv_poll_t poll;

    ems_freq_t freq;
    uint64_t opened_ns, startup_ns; /* the first window after open */
    ems_soc_t soc;
    bool have_coulombs;
    double last_coulombs;
    uint32_t bat_reinits;

    ems_io_sample_t sample;
    hw__group_t g_bat, g_temp, g_grid, g_freq, g_out;
    uint64_t edges;

    void (*close_cb)(void *);
    void *close_arg;
};

static uint64_t hw__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void hw__group_init(hw__group_t *g, const char *what, const char *chip, int bus, int addr)
{
    g->what = what;
    g->then = "its readings go stale (SENSOR_FAULT after sensor_stale_ms)";
    g->again = "reads again";
    if (addr >= 0)
        snprintf(g->where, sizeof g->where, "%s at /dev/i2c-%d 0x%02x", chip, bus, addr);
    else
        snprintf(g->where, sizeof g->where, "%s", chip);
}

static uint64_t hw__mono_ns(void);

/* Logs a group's change between working and failing, once each way. A
 * group that flaps is not allowed to flood the journal: at most four
 * changes a minute are logged, the rest only counted, and the next logged
 * line says how many there were. */
static void hw__group_result(hw__group_t *g, int rc, const char *detail)
{
    if (rc < 0)
        g->failures++;
    bool change = (rc < 0) != (g->rc < 0);
    g->rc = rc;
    if (!change)
        return;
    uint64_t now = hw__mono_ns();
    if (!g->logged_ns || now - g->logged_ns >= 60000000000u) {
        g->logged_ns = now; /* a new minute */
        g->logged = 0;
    }
    if (g->logged >= 4) {
        g->quiet++;
        return;
    }
    g->logged++;
    char more[96] = "";
    if (g->quiet)
        snprintf(more, sizeof more, " (%llu changes since the last line were not logged)",
                 (unsigned long long)g->quiet);
    g->quiet = 0;
    if (rc < 0)
        ems_log_error("hw: %s (%s): %s%s%s; %s%s", g->what, g->where, ems_strerror(rc),
                      detail && detail[0] ? ": " : "", detail ? detail : "", g->then, more);
    else
        ems_log_info("hw: %s (%s) %s%s", g->what, g->where, g->again, more);
}

/* ------------------------------------------------------------- edges */

static void hw__drain_edges(ems_hwio_t *h)
{
    uint64_t ts[HW__EDGES_MAX];
    for (int round = 0; round < 8; round++) {
        int n = ems_gpio_edges_read(&h->zc, ts, HW__EDGES_MAX);
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++)
            ems_freq_edge(&h->freq, (int64_t)ts[i]);
        h->edges += (uint64_t)n;
        if (n < HW__EDGES_MAX)
            return;
    }
}

static void hw__poll_cb(uv_poll_t *p, int status, int events)
{
    ems_hwio_t *h = p->data;
    (void)events;
    if (status < 0) {
        ems_log_error("hw: zero-crossing line: poll failed: %s", uv_strerror(status));
        uv_poll_stop(p);
        return;
    }
    hw__drain_edges(h);
}

/* ------------------------------------------------------------- io ops */

static void hw__read_battery(ems_hwio_t *h, int64_t now_ms)
{
    ems_ina2xx_reading_t r;
    int rc = ems_ina2xx_read(&h->bat, &r);
    if (rc == EMS_EAGAIN) {
        /* No conversion yet, or the chip was reset and reconfigured: its
         * charge accumulator restarted, so the next delta is not a real
         * one. Only the reset is news. */
        h->have_coulombs = false;
        if (h->bat.reinits != h->bat_reinits)
            ems_log_warn("hw: battery monitor (%s): %s", h->g_bat.where, h->bat.err);
        h->bat_reinits = h->bat.reinits;
        return;
    }
    hw__group_result(&h->g_bat, rc, h->bat.err);
    if (rc < 0)
        return;
    double dq = NAN;
    if (r.has_charge) {
        if (h->have_coulombs)
            dq = r.coulombs - h->last_coulombs;
        h->last_coulombs = r.coulombs;
        h->have_coulombs = true;
    }
    ems_soc_update(&h->soc, now_ms, r.volts, r.amps, dq);
    h->sample.battery_voltage = r.volts;
    h->sample.battery_current = r.amps;
    h->sample.battery_power = r.watts;
    double soc = ems_soc_value(&h->soc);
    h->sample.battery_soc = isfinite(soc) ? soc : NAN;
    h->sample.battery_ms = now_ms;
}

static void hw__read_temp(ems_hwio_t *h, int64_t now_ms)
{
    double c;
    int rc = ems_tmp102_read(&h->temp, &c);
    if (rc == EMS_EAGAIN) { /* reconfigured after a reset: the next read counts */
        ems_log_warn("hw: temperature sensor (%s): %s", h->g_temp.where, h->temp.err);
        return;
    }
    hw__group_result(&h->g_temp, rc, h->temp.err);
    if (rc < 0)
        return;
    h->sample.battery_temperature = c;
    h->sample.temp_ms = now_ms;
}

static void hw__read_grid(ems_hwio_t *h, int64_t now_ms)
{
    ems_ade7953_reading_t r;
    int rc = ems_ade7953_read(&h->grid, &r);
    if (rc == EMS_EAGAIN) {
        ems_log_warn("hw: grid meter (%s): %s", h->g_grid.where, h->grid.err);
        return;
    }
    hw__group_result(&h->g_grid, rc, h->grid.err);
    if (rc < 0)
        return;
    hw__drain_edges(h);
    double hz;
    uint64_t now_ns = hw__mono_ns();
    int frc = ems_freq_read(&h->freq, (int64_t)now_ns, &hz);
    if (frc == EMS_ESTALE && now_ns - h->opened_ns < h->startup_ns && isfinite(r.hertz) &&
        r.hertz > h->cfg.grid_nominal_hz * 0.8 && r.hertz < h->cfg.grid_nominal_hz * 1.2) {
        /* The zero-crossing window has not filled since start: until it
         * has, the meter's own line-period measurement stands in, so a
         * start is not a SENSOR_FAULT. A real reading, not a guess. */
        hz = r.hertz;
        frc = 0;
    }
    if (frc < 0 && r.volts < HW__DEAD_GRID_V) {
        /* No voltage and no zero crossings agree: the grid is off. That
         * is a true reading (GRID_FAULT), not a sensor failure. */
        hz = 0;
        frc = 0;
    }
    hw__group_result(&h->g_freq, frc,
                     frc == EMS_ESTALE   ? "too few zero crossings while the grid has voltage"
                     : frc == EMS_ERANGE ? "the edges are not a mains frequency"
                                         : NULL);
    if (frc < 0)
        return;
    h->sample.grid_voltage = r.volts;
    h->sample.grid_power = r.watts;
    h->sample.grid_frequency = hz;
    h->sample.grid_ms = now_ms;
}

static int hw__read(ems_io_t *io, int64_t now_ms, ems_io_sample_t *out)
{
    ems_hwio_t *h = (ems_hwio_t *)io;
    hw__read_battery(h, now_ms);
    hw__read_temp(h, now_ms);
    hw__read_grid(h, now_ms);
    *out = h->sample;
    bool none = h->g_bat.rc < 0 && h->g_temp.rc < 0 && h->g_grid.rc < 0;
    return none ? EMS_EIO : 0;
}

/* Both enables off, then the DAC to 0 V. Both steps are tried whatever
 * the first did; the first error is returned. */
static int hw__safe_off(ems_io_t *io)
{
    ems_hwio_t *h = (ems_hwio_t *)io;
    int a = ems_gpio_out_set(&h->chg, false);
    int b = ems_gpio_out_set(&h->dis, false);
    int c = ems_mcp4725_safe(&h->dac);
    return a < 0 ? a : b < 0 ? b : c;
}

static int hw__apply(ems_io_t *io, double watts)
{
    ems_hwio_t *h = (ems_hwio_t *)io;
    if (!isfinite(watts))
        return EMS_EINVAL;
    double mag = fabs(watts);
    double volts = mag > 0 ? h->cfg.dac_offset_v + mag / 1000.0 * h->cfg.dac_volts_per_kw : 0.0;
    if (volts > h->cfg.dac_vref_v + 1e-9)
        return EMS_EINVAL; /* never clamped: the caller applied the limits */
    int dir = watts > 0 ? 1 : watts < 0 ? -1 : 0;
    int rc = 0;
    const char *step = "";
    /* Break before make: the other direction's enable goes off first. */
    if (dir != 1 && (rc = ems_gpio_out_set(&h->chg, false)) < 0)
        step = "setting the charge-enable line";
    else if (rc == 0 && dir != -1 && (rc = ems_gpio_out_set(&h->dis, false)) < 0)
        step = "setting the discharge-enable line";
    else if (rc == 0 && (rc = ems_mcp4725_set_volts(&h->dac, volts)) < 0)
        step = h->dac.err;
    else if (rc == 0 && dir != 0 && (rc = ems_gpio_out_set(dir > 0 ? &h->chg : &h->dis, true)) < 0)
        step = dir > 0 ? "setting the charge-enable line" : "setting the discharge-enable line";
    hw__group_result(&h->g_out, rc, step);
    return rc;
}

static const ems_io_ops_t hw__ops = {hw__read, hw__apply, hw__safe_off};

/* Takes a first reading of every group before the daemon's first tick.
 * The INA has no conversion to report until one averaging period after
 * its configuration was written (about 135 ms with the defaults), and a
 * group that was never read counts as stale at once: without this, a tick
 * that comes early after the start would be a SENSOR_FAULT. Bounded at
 * 2 s; a chip that has not converted by then is a real fault. This blocks,
 * but only at start, with the outputs inactive. */
static void hw__prime(ems_hwio_t *h)
{
    /* One full conversion (at most three channels, each averaged) before
     * each try: reading sooner would count as a missed conversion in the
     * driver's stuck rule. */
    uint64_t period_ns = (uint64_t)h->cfg.battery_averaging *
                         (uint64_t)h->cfg.battery_conversion_us * 3u * 1200u; /* +20 % */
    uint64_t t0 = hw__mono_ns();
    while (h->sample.battery_ms == 0 && h->g_bat.rc >= 0 &&
           hw__mono_ns() - t0 + period_ns < 2000000000u) {
        struct timespec ts = {(time_t)(period_ns / 1000000000u), (long)(period_ns % 1000000000u)};
        nanosleep(&ts, NULL);
        hw__read_battery(h, (int64_t)(hw__mono_ns() / 1000000u));
    }
    int64_t now_ms = (int64_t)(hw__mono_ns() / 1000000u);
    hw__read_temp(h, now_ms);
    hw__read_grid(h, now_ms);
}

/* ------------------------------------------------------------- life */

static void hw__release(ems_hwio_t *h)
{
    ems_gpio_out_close(&h->chg);
    ems_gpio_out_close(&h->dis);
    ems_gpio_edges_close(&h->zc);
    ems_gpio_chip_close(&h->chip);
    if (h->bus)
        ems_i2c_close(h->bus);
    h->bus = NULL;
}

static void hw__driver_configs(const ems_hw_config_t *c, ems_ina2xx_config_t *bat,
                               ems_tmp102_config_t *temp, ems_ade7953_config_t *grid,
                               ems_mcp4725_config_t *dac)
{
    ems_ina2xx_config_default(bat);
    bat->chip = c->battery_chip == EMS_HW_INA226 ? EMS_INA226 : EMS_INA228;
    bat->address = (uint16_t)c->battery_address;
    bat->shunt_ohms = c->shunt_ohms;
    bat->max_current_a = c->shunt_max_current_a;
    bat->averaging = (unsigned)c->battery_averaging;
    bat->conversion_us = (unsigned)c->battery_conversion_us;
    bat->invert = c->shunt_invert;
    ems_tmp102_config_default(temp);
    temp->address = (uint16_t)c->temp_address;
    ems_ade7953_config_default(grid);
    grid->address = (uint16_t)c->grid_address;
    grid->v_per_lsb = c->grid_v_per_lsb;
    grid->a_per_lsb = c->grid_a_per_lsb;
    grid->w_per_lsb = c->grid_w_per_lsb;
    grid->invert = c->grid_invert;
    ems_mcp4725_config_default(dac);
    dac->address = (uint16_t)c->dac_address;
    dac->vref_v = c->dac_vref_v;
}

int ems_hwio_open(uv_loop_t *loop, const ems_hw_config_t *cfg, double soc0, ems_hwio_t **out,
                  char *err, size_t cap)
{
    *out = NULL;
    ems_hwio_t *h = calloc(1, sizeof *h);
    if (!h)
        return EMS_ENOMEM;
    h->io.ops = &hw__ops;
    h->loop = loop;
    h->cfg = *cfg;
    h->zc.fd = -1;
    h->sample.battery_soc = NAN;
    const char *bname = cfg->battery_chip == EMS_HW_INA226 ? "INA226" : "INA228";
    hw__group_init(&h->g_bat, "battery monitor", bname, cfg->i2c_bus, cfg->battery_address);
    hw__group_init(&h->g_temp, "temperature sensor", "TMP102", cfg->i2c_bus, cfg->temp_address);
    hw__group_init(&h->g_grid, "grid meter", "ADE7953", cfg->i2c_bus, cfg->grid_address);
    char zc[96];
    snprintf(zc, sizeof zc, "%.63s line %d", cfg->gpio_chip, cfg->zero_cross_line);
    hw__group_init(&h->g_freq, "zero-crossing input", zc, 0, -1);
    hw__group_init(&h->g_out, "outputs", "MCP4725 and the enable lines", 0, -1);
    h->g_out.then = "the daemon puts the outputs in the safe state";
    h->g_out.again = "answer again";

    ems_ina2xx_config_t bc;
    ems_tmp102_config_t tc;
    ems_ade7953_config_t gc;
    ems_mcp4725_config_t dc;
    hw__driver_configs(cfg, &bc, &tc, &gc, &dc);

    ems_soc_config_t sc;
    ems_hw_soc_config(cfg, &sc);
    char why[256];
    int rc = ems_soc_ocv_parse(cfg->soc_ocv_table, &sc, why, sizeof why);
    if (rc < 0) {
        snprintf(err, cap, "soc_ocv_table: %s", why);
        goto fail;
    }
    ems_soc_init(&h->soc, &sc, soc0);
    ems_freq_config_t fc;
    ems_freq_config_default(&fc);
    fc.nominal_hz = cfg->grid_nominal_hz;
    fc.window_ms = (int32_t)cfg->freq_window_ms;
    ems_freq_init(&h->freq, &fc);

    /* The outputs first, in their safe state, so nothing else can leave
     * them undefined: the lines are requested inactive. */
    if ((rc = ems_gpio_chip_open(&h->chip, cfg->gpio_chip, err, cap)) < 0 ||
        (rc = ems_gpio_out_open(&h->chg, &h->chip, (unsigned)cfg->charge_line,
                                cfg->enable_active_low, HW__CONSUMER " charge", err, cap)) < 0 ||
        (rc = ems_gpio_out_open(&h->dis, &h->chip, (unsigned)cfg->discharge_line,
                                cfg->enable_active_low, HW__CONSUMER " discharge", err, cap)) < 0 ||
        (rc = ems_gpio_edges_open(&h->zc, &h->chip, (unsigned)cfg->zero_cross_line,
                                  HW__CONSUMER " zero-cross", err, cap)) < 0)
        goto fail;
    if ((rc = ems_i2c_dev_open(cfg->i2c_bus, &h->bus, err, cap)) < 0 ||
        (rc = ems_mcp4725_init(&h->dac, h->bus, &dc, err, cap)) < 0 ||
        (rc = ems_ina2xx_init(&h->bat, h->bus, &bc, err, cap)) < 0 ||
        (rc = ems_tmp102_init(&h->temp, h->bus, &tc, err, cap)) < 0 ||
        (rc = ems_ade7953_init(&h->grid, h->bus, &gc, err, cap)) < 0)
        goto fail;

    rc = uv_poll_init(loop, &h->poll, h->zc.fd);
    if (rc < 0) {
        snprintf(err, cap, "zero-crossing line: uv_poll_init: %s", uv_strerror(rc));
        goto fail;
    }
    h->poll.data = h;
    h->opened_ns = hw__mono_ns();
    h->startup_ns = (uint64_t)(cfg->freq_window_ms + 1000) * 1000000u;
    hw__prime(h);
    uv_poll_start(&h->poll, UV_READABLE, hw__poll_cb);
    *out = h;
    return 0;
fail:
    if (h->bus)
        ems_mcp4725_safe(&h->dac);
    hw__release(h);
    free(h);
    return rc < 0 ? rc : EMS_EIO;
}

ems_io_t *ems_hwio_io(ems_hwio_t *h)
{
    return &h->io;
}

double ems_hwio_soc(const ems_hwio_t *h)
{
    return ems_soc_value(&h->soc);
}

double ems_hwio_capacity_wh(const ems_hwio_t *h)
{
    /* Nominal pack voltage: the OCV at half charge. */
    return h->cfg.soc_capacity_ah * ems_soc_ocv(&h->soc, 50.0);
}

static void hw__closed(uv_handle_t *p)
{
    ems_hwio_t *h = p->data;
    void (*cb)(void *) = h->close_cb;
    void *arg = h->close_arg;
    hw__release(h);
    free(h);
    if (cb)
        cb(arg);
}

void ems_hwio_close(ems_hwio_t *h, void (*cb)(void *arg), void *arg)
{
    hw__safe_off(&h->io);
    h->close_cb = cb;
    h->close_arg = arg;
    uv_close((uv_handle_t *)&h->poll, hw__closed);
}

int ems_hwio_metrics(const ems_hwio_t *h, ems_buf_t *out)
{
    ems_freq_stats_t fs;
    ems_freq_stats(&h->freq, &fs);
    const hw__group_t *g[] = {&h->g_bat, &h->g_temp, &h->g_grid, &h->g_freq, &h->g_out};
    int rc = ems_buf_appendf(
        out,
        "# HELP ems_edge_i2c_transfers_total I2C transactions\n"
        "# TYPE ems_edge_i2c_transfers_total counter\nems_edge_i2c_transfers_total %llu\n"
        "# HELP ems_edge_i2c_nacks_total Transactions not acknowledged\n"
        "# TYPE ems_edge_i2c_nacks_total counter\nems_edge_i2c_nacks_total %llu\n"
        "# HELP ems_edge_i2c_retries_total Transactions retried after a NACK\n"
        "# TYPE ems_edge_i2c_retries_total counter\nems_edge_i2c_retries_total %llu\n"
        "# HELP ems_edge_i2c_errors_total Transactions that failed for good\n"
        "# TYPE ems_edge_i2c_errors_total counter\nems_edge_i2c_errors_total %llu\n"
        "# HELP ems_edge_zero_cross_edges_total Zero-crossing edges read\n"
        "# TYPE ems_edge_zero_cross_edges_total counter\nems_edge_zero_cross_edges_total %llu\n"
        "# HELP ems_edge_zero_cross_glitches_total Edges rejected as glitches\n"
        "# TYPE ems_edge_zero_cross_glitches_total counter\n"
        "ems_edge_zero_cross_glitches_total %llu\n"
        "# HELP ems_edge_zero_cross_missing_total Edges inferred missing\n"
        "# TYPE ems_edge_zero_cross_missing_total counter\n"
        "ems_edge_zero_cross_missing_total %llu\n"
        "# HELP ems_edge_hw_read_failures_total Failed reads per device\n"
        "# TYPE ems_edge_hw_read_failures_total counter\n",
        (unsigned long long)h->bus->transfers, (unsigned long long)h->bus->nacks,
        (unsigned long long)h->bus->retries, (unsigned long long)h->bus->errors,
        (unsigned long long)h->edges, (unsigned long long)fs.glitches,
        (unsigned long long)fs.missing);
    for (size_t i = 0; rc == 0 && i < sizeof g / sizeof g[0]; i++)
        rc = ems_buf_appendf(out, "ems_edge_hw_read_failures_total{device=\"%s\"} %llu\n",
                             g[i]->what, (unsigned long long)g[i]->failures);
    if (rc == 0)
        rc = ems_buf_appendf(out,
                             "# HELP ems_edge_dac_code The power reference DAC's code\n"
                             "# TYPE ems_edge_dac_code gauge\nems_edge_dac_code %u\n"
                             "# HELP ems_edge_enable Enable line levels (1 = active)\n"
                             "# TYPE ems_edge_enable gauge\nems_edge_enable{line=\"charge\"} %d\n"
                             "ems_edge_enable{line=\"discharge\"} %d\n",
                             (unsigned)h->dac.code, h->chg.active ? 1 : 0, h->dis.active ? 1 : 0);
    return rc;
}

/* ------------------------------------------------------------- probe */

int ems_hwio_probe(const ems_hw_config_t *cfg, FILE *out)
{
    char err[512];
    int bad = 0;
    ems_ina2xx_config_t bc;
    ems_tmp102_config_t tc;
    ems_ade7953_config_t gc;
    ems_mcp4725_config_t dc;
    hw__driver_configs(cfg, &bc, &tc, &gc, &dc);
    fprintf(out, "ems-edge --probe: I2C bus /dev/i2c-%d, GPIO chip %s\n\n", cfg->i2c_bus,
            cfg->gpio_chip);

    ems_i2c_bus_t *bus = NULL;
    if (ems_i2c_dev_open(cfg->i2c_bus, &bus, err, sizeof err) < 0) {
        fprintf(out, "I2C: FAILED: %s\n", err);
        bad++;
    } else {
        static ems_ina2xx_t bat;
        static ems_tmp102_t temp;
        static ems_ade7953_t grid;
        static ems_mcp4725_t dac;
        struct {
            const char *name;
            int rc;
        } r[4];
        r[0].name = "battery monitor";
        r[0].rc = ems_ina2xx_init(&bat, bus, &bc, err, sizeof err);
        fprintf(out, "== battery monitor (%s, 0x%02x): %s%s\n", ems_ina2xx_chip_name(bc.chip),
                cfg->battery_address, r[0].rc < 0 ? "FAILED: " : "ok", r[0].rc < 0 ? err : "");
        ems_ina2xx_probe(&bat, out);
        r[1].name = "temperature";
        r[1].rc = ems_tmp102_init(&temp, bus, &tc, err, sizeof err);
        fprintf(out, "\n== temperature sensor (TMP102, 0x%02x): %s%s\n", cfg->temp_address,
                r[1].rc < 0 ? "FAILED: " : "ok", r[1].rc < 0 ? err : "");
        ems_tmp102_probe(&temp, out);
        r[2].name = "grid meter";
        r[2].rc = ems_ade7953_init(&grid, bus, &gc, err, sizeof err);
        fprintf(out, "\n== grid meter (ADE7953, 0x%02x): %s%s\n", cfg->grid_address,
                r[2].rc < 0 ? "FAILED: " : "ok", r[2].rc < 0 ? err : "");
        ems_ade7953_probe(&grid, out);
        r[3].name = "DAC";
        r[3].rc = ems_mcp4725_init(&dac, bus, &dc, err, sizeof err);
        fprintf(out, "\n== power reference DAC (MCP4725, 0x%02x): %s%s\n", cfg->dac_address,
                r[3].rc < 0 ? "FAILED: " : "ok", r[3].rc < 0 ? err : "");
        ems_mcp4725_probe(&dac, out);
        for (int i = 0; i < 4; i++)
            bad += r[i].rc < 0;
        fprintf(out, "\nI2C: %llu transfers, %llu NACKs, %llu retries, %llu errors\n",
                (unsigned long long)bus->transfers, (unsigned long long)bus->nacks,
                (unsigned long long)bus->retries, (unsigned long long)bus->errors);
        ems_i2c_close(bus);
    }

    /* GPIO: the outputs are requested (inactive) and read back, the
     * zero-crossing input is watched for one window. */
    ems_gpio_chip_t chip;
    ems_gpio_out_t chg, dis;
    ems_gpio_edges_t zc;
    fprintf(out, "\n== GPIO chip %s\n", cfg->gpio_chip);
    if (ems_gpio_chip_open(&chip, cfg->gpio_chip, err, sizeof err) < 0) {
        fprintf(out, "FAILED: %s\n", err);
        return 1;
    }
    int lines_bad = 0;
    if (ems_gpio_out_open(&chg, &chip, (unsigned)cfg->charge_line, cfg->enable_active_low,
                          HW__CONSUMER " probe", err, sizeof err) < 0) {
        fprintf(out, "charge-enable line %d: FAILED: %s\n", cfg->charge_line, err);
        lines_bad++;
    } else {
        fprintf(out, "charge-enable line %d: output, inactive (%s)\n", cfg->charge_line,
                cfg->enable_active_low ? "driven high: active-low" : "driven low");
        ems_gpio_out_close(&chg);
    }
    if (ems_gpio_out_open(&dis, &chip, (unsigned)cfg->discharge_line, cfg->enable_active_low,
                          HW__CONSUMER " probe", err, sizeof err) < 0) {
        fprintf(out, "discharge-enable line %d: FAILED: %s\n", cfg->discharge_line, err);
        lines_bad++;
    } else {
        fprintf(out, "discharge-enable line %d: output, inactive (%s)\n", cfg->discharge_line,
                cfg->enable_active_low ? "driven high: active-low" : "driven low");
        ems_gpio_out_close(&dis);
    }
    if (ems_gpio_edges_open(&zc, &chip, (unsigned)cfg->zero_cross_line, HW__CONSUMER " probe", err,
                            sizeof err) < 0) {
        fprintf(out, "zero-crossing line %d: FAILED: %s\n", cfg->zero_cross_line, err);
        lines_bad++;
    } else {
        ems_freq_t f;
        ems_freq_config_t fc;
        ems_freq_config_default(&fc);
        fc.nominal_hz = cfg->grid_nominal_hz;
        fc.window_ms = (int32_t)cfg->freq_window_ms;
        ems_freq_init(&f, &fc);
        uint64_t t0 = hw__mono_ns(),
                 end = t0 + (uint64_t)cfg->freq_window_ms * 1000000u + 200000000u;
        uint64_t ts[HW__EDGES_MAX];
        unsigned long edges = 0;
        for (uint64_t now = t0; now < end; now = hw__mono_ns()) {
            struct pollfd pfd = {zc.fd, POLLIN, 0};
            poll(&pfd, 1, (int)((end - now) / 1000000u) + 1);
            int n = ems_gpio_edges_read(&zc, ts, HW__EDGES_MAX);
            for (int i = 0; i < n; i++)
                ems_freq_edge(&f, (int64_t)ts[i]);
            edges += n > 0 ? (unsigned long)n : 0;
        }
        double hz = 0;
        int rc = ems_freq_read(&f, (int64_t)hw__mono_ns(), &hz);
        ems_freq_stats_t fs;
        ems_freq_stats(&f, &fs);
        if (rc == 0)
            fprintf(out,
                    "zero-crossing line %d: %lu rising edges in %.1f s: %.3f Hz "
                    "(%llu glitches rejected, %llu edges missing)\n",
                    cfg->zero_cross_line, edges, (double)(end - t0) / 1e9, hz,
                    (unsigned long long)fs.glitches, (unsigned long long)fs.missing);
        else
            fprintf(out, "zero-crossing line %d: %lu rising edges in %.1f s: no frequency (%s)\n",
                    cfg->zero_cross_line, edges, (double)(end - t0) / 1e9, ems_strerror(rc));
        ems_gpio_edges_close(&zc);
    }
    ems_gpio_chip_close(&chip);
    bad += lines_bad;
    fprintf(out, "\n%s\n", bad ? "probe: FAILED (see above)" : "probe: every device answered");
    return bad ? 1 : 0;
}
