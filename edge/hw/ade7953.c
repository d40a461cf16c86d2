/* ade7953.c: ADE7953 driver, I2C mode (see ade7953.h for the choices). */
#include "ade7953.h"

#include "error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define ADE_ADDR 0x38

#define R_UNLOCK 0x0FE    /* 8 bit */
#define R_CONFIG 0x102    /* 16 bit */
#define R_PERIOD 0x10E    /* 16 bit */
#define R_OPTIMUM 0x120   /* 16 bit */
#define R_AP_NOLOAD 0x303 /* 32 bit */
#define R_AWATT 0x312     /* 32 bit, signed */
#define R_IRMSA 0x31A     /* 32 bit */
#define R_VRMS 0x31C      /* 32 bit */
#define R_VERSION 0x702   /* 8 bit */

#define UNLOCK_KEY 0xADu
#define OPTIMUM_VALUE 0x0030u
#define CONFIG_VALUE 0x0004u /* HPFEN; COMM_LOCK (bit 15) cleared */
#define AP_NOLOAD_RESET 0x0000E419u
#define RMS_FULL_SCALE 9032007u
#define WATT_FULL_SCALE 4862401
#define STALE_READS 5u

void ems_ade7953_config_default(ems_ade7953_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->address = ADE_ADDR;
}

/* Register width in bytes from its address. */
static unsigned ade__width(uint16_t reg)
{
    switch (reg >> 8) {
    case 0x1:
        return 2;
    case 0x2:
        return 3;
    case 0x3:
        return 4;
    default:
        return 1;
    }
}

static int ade__rd(ems_ade7953_t *c, uint16_t reg, uint32_t *val)
{
    uint8_t b[4];
    unsigned n = ade__width(reg);
    int rc = ems_i2c_read_reg16(c->bus, c->cfg.address, reg, b, n);
    if (rc < 0)
        return rc;
    *val = (uint32_t)ems_i2c_be(b, n);
    return 0;
}

static int ade__wr(ems_ade7953_t *c, uint16_t reg, uint32_t val)
{
    uint8_t b[4];
    unsigned n = ade__width(reg);
    for (unsigned i = 0; i < n; i++)
        b[i] = (uint8_t)(val >> (8 * (n - 1 - i)));
    return ems_i2c_write_reg16(c->bus, c->cfg.address, reg, b, n);
}

/* CONFIG, then the unlock immediately followed by the optimum setting. */
static int ade__write_config(ems_ade7953_t *c, const char **doing)
{
    int rc;
    if ((rc = ade__wr(c, R_CONFIG, CONFIG_VALUE)) < 0) {
        *doing = "writing CONFIG";
        return rc;
    }
    if ((rc = ade__wr(c, R_UNLOCK, UNLOCK_KEY)) < 0) {
        *doing = "writing the unlock register 0x0FE";
        return rc;
    }
    if ((rc = ade__wr(c, R_OPTIMUM, OPTIMUM_VALUE)) < 0) {
        *doing = "writing register 0x120";
        return rc;
    }
    return 0;
}

static bool ade__calibration_ok(double v)
{
    return isfinite(v) && v > 0;
}

int ems_ade7953_init(ems_ade7953_t *c, ems_i2c_bus_t *bus, const ems_ade7953_config_t *cfg,
                     char *err, size_t cap)
{
    char scratch[8];
    if (!err || cap == 0) {
        err = scratch;
        cap = sizeof scratch;
    }
    memset(c, 0, sizeof *c);
    c->bus = bus;
    c->cfg = *cfg;
    if (cfg->address != ADE_ADDR) {
        snprintf(err, cap, "ADE7953: address 0x%02x: the ADE7953's I2C address is fixed at 0x38",
                 cfg->address);
        return EMS_EINVAL;
    }
    if (!ade__calibration_ok(cfg->v_per_lsb) || !ade__calibration_ok(cfg->a_per_lsb) ||
        !ade__calibration_ok(cfg->w_per_lsb)) {
        snprintf(err, cap,
                 "ADE7953: v_per_lsb (%g), a_per_lsb (%g) and w_per_lsb (%g) must all be set "
                 "(> 0): calibrate against a reference meter",
                 cfg->v_per_lsb, cfg->a_per_lsb, cfg->w_per_lsb);
        return EMS_EINVAL;
    }
    uint32_t v;
    int rc = ade__rd(c, R_AP_NOLOAD, &v);
    if (rc < 0)
        return ems_i2c_explain(bus, ADE_ADDR, rc, "reading AP_NOLOAD", err, cap);
    if (v != AP_NOLOAD_RESET) {
        snprintf(err, cap,
                 "%s 0x%02x: AP_NOLOAD (0x303) reads 0x%08x, expected its reset value 0x%08x: "
                 "is an ADE7953 at this address?",
                 bus->name, ADE_ADDR, v, AP_NOLOAD_RESET);
        return EMS_ENODEV;
    }
    const char *doing = NULL;
    if ((rc = ade__write_config(c, &doing)) < 0)
        return ems_i2c_explain(bus, ADE_ADDR, rc, doing, err, cap);
    if ((rc = ade__rd(c, R_CONFIG, &v)) < 0)
        return ems_i2c_explain(bus, ADE_ADDR, rc, "reading CONFIG", err, cap);
    if (v != CONFIG_VALUE) {
        snprintf(err, cap, "%s 0x%02x: CONFIG reads 0x%04x after writing 0x%04x", bus->name,
                 ADE_ADDR, v, CONFIG_VALUE);
        return EMS_EIO;
    }
    c->ready = true;
    return 0;
}

static int ade__fail(ems_ade7953_t *c, int rc, const char *doing)
{
    return ems_i2c_explain(c->bus, ADE_ADDR, rc, doing, c->err, sizeof c->err);
}

static int ade__reinit(ems_ade7953_t *c, uint32_t config)
{
    const char *doing = NULL;
    int rc = ade__write_config(c, &doing);
    if (rc < 0)
        return ade__fail(c, rc, doing);
    c->reinits++;
    c->have_last = false;
    c->same = 0;
    snprintf(c->err, sizeof c->err,
             "%s 0x%02x: CONFIG reads 0x%04x, init wrote 0x%04x: the chip reset; configuration "
             "written again",
             c->bus->name, ADE_ADDR, config, CONFIG_VALUE);
    return EMS_EAGAIN;
}

/* Counts identical consecutive readings (the stuck rule). */
static void ade__track(ems_ade7953_t *c, uint32_t vrms, uint32_t irms, uint32_t awatt)
{
    if (c->have_last && vrms == c->last_vrms && irms == c->last_irms && awatt == c->last_awatt)
        c->same++;
    else
        c->same = 0;
    c->have_last = true;
    c->last_vrms = vrms;
    c->last_irms = irms;
    c->last_awatt = awatt;
}

int ems_ade7953_read(ems_ade7953_t *c, ems_ade7953_reading_t *out)
{
    if (!c->ready) {
        snprintf(c->err, sizeof c->err, "ADE7953: not initialised (init failed)");
        return EMS_EINVAL;
    }
    uint32_t config, vrms, irms, awatt, period;
    int rc = ade__rd(c, R_CONFIG, &config);
    if (rc < 0)
        return ade__fail(c, rc, "reading CONFIG");
    if (config != CONFIG_VALUE)
        return ade__reinit(c, config);
    if ((rc = ade__rd(c, R_VRMS, &vrms)) < 0)
        return ade__fail(c, rc, "reading VRMS");
    if ((rc = ade__rd(c, R_IRMSA, &irms)) < 0)
        return ade__fail(c, rc, "reading IRMSA");
    if ((rc = ade__rd(c, R_AWATT, &awatt)) < 0)
        return ade__fail(c, rc, "reading AWATT");
    if ((rc = ade__rd(c, R_PERIOD, &period)) < 0)
        return ade__fail(c, rc, "reading PERIOD");

    ade__track(c, vrms, irms, awatt);
    int32_t watt = (int32_t)awatt;
    const char *what = NULL;
    if (vrms > RMS_FULL_SCALE)
        what = "VRMS beyond full scale (or negative): the voltage input clipped";
    else if (irms > RMS_FULL_SCALE)
        what = "IRMSA beyond full scale (or negative): the current input clipped";
    else if (watt > WATT_FULL_SCALE || watt < -WATT_FULL_SCALE)
        what = "AWATT beyond full scale";
    if (what) {
        snprintf(c->err, sizeof c->err, "%s 0x%02x: VRMS 0x%08x IRMSA 0x%08x AWATT 0x%08x: %s",
                 c->bus->name, ADE_ADDR, vrms, irms, awatt, what);
        return EMS_ERANGE;
    }
    if (c->same + 1 >= STALE_READS) {
        snprintf(c->err, sizeof c->err,
                 "%s 0x%02x: VRMS, IRMSA and AWATT identical on %u consecutive reads: the meter "
                 "is stuck",
                 c->bus->name, ADE_ADDR, c->same + 1);
        return EMS_ESTALE;
    }
    out->volts = (double)vrms * c->cfg.v_per_lsb;
    out->amps = (double)irms * c->cfg.a_per_lsb;
    out->watts = (double)watt * c->cfg.w_per_lsb * (c->cfg.invert ? -1.0 : 1.0);
    out->hertz = 223750.0 / ((double)period + 1.0);
    c->err[0] = '\0';
    return 0;
}

int ems_ade7953_probe(ems_ade7953_t *c, FILE *out)
{
    static const struct {
        uint16_t reg;
        const char *name;
    } regs[] = {
        {R_AP_NOLOAD, "AP_NOLOAD"}, {R_VERSION, "VERSION"}, {R_CONFIG, "CONFIG"}, {R_VRMS, "VRMS"},
        {R_IRMSA, "IRMSA"},         {R_AWATT, "AWATT"},     {R_PERIOD, "PERIOD"},
    };
    enum { N = sizeof regs / sizeof regs[0] };
    uint32_t v[N];
    bool ok[N];
    int first = 0;
    fprintf(out, "ADE7953 at %s 0x%02x (init %s)\n", c->bus->name, ADE_ADDR,
            c->ready ? "ok" : "failed");
    for (size_t i = 0; i < N; i++) {
        int rc = ade__rd(c, regs[i].reg, &v[i]);
        ok[i] = rc == 0;
        if (rc < 0) {
            char msg[160];
            ems_i2c_explain(c->bus, ADE_ADDR, rc, NULL, msg, sizeof msg);
            fprintf(out, "  %-9s (0x%03x): %s\n", regs[i].name, regs[i].reg, msg);
            first = first ? first : rc;
            if (rc == EMS_ENXIO)
                return rc;
            continue;
        }
        fprintf(out, "  %-9s (0x%03x) = 0x%0*x\n", regs[i].name, regs[i].reg,
                (int)ade__width(regs[i].reg) * 2, v[i]);
    }
    if (ok[0] && v[0] != AP_NOLOAD_RESET) {
        fprintf(out, "  AP_NOLOAD is not the reset value 0x0000e419: not an ADE7953, or "
                     "configured by something else\n");
        first = first ? first : EMS_ENODEV;
    }
    if (ok[2] && v[2] != CONFIG_VALUE)
        fprintf(out, "  CONFIG is not 0x%04x: not (or no longer) configured by us\n", CONFIG_VALUE);
    bool cal = ade__calibration_ok(c->cfg.v_per_lsb) && ade__calibration_ok(c->cfg.a_per_lsb) &&
               ade__calibration_ok(c->cfg.w_per_lsb);
    if (cal && ok[3] && ok[4] && ok[5])
        fprintf(out,
                "  voltage       %.2f V\n  current       %.3f A\n  power         %.1f W "
                "(+ import)\n",
                (double)v[3] * c->cfg.v_per_lsb, (double)v[4] * c->cfg.a_per_lsb,
                (double)(int32_t)v[5] * c->cfg.w_per_lsb * (c->cfg.invert ? -1.0 : 1.0));
    else if (!cal)
        fprintf(out, "  (uncalibrated: set v_per_lsb, a_per_lsb, w_per_lsb to see volts, amps, "
                     "watts)\n");
    if (ok[6])
        fprintf(out, "  frequency     %.3f Hz\n", 223750.0 / ((double)v[6] + 1.0));
    return first;
}
