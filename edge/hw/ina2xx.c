/* ina2xx.c: INA228 / INA226 driver (see ina2xx.h for the choices). */
#include "ina2xx.h"

#include "error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* INA228 registers and bits */
#define R228_CONFIG 0x00
#define R228_ADC_CONFIG 0x01
#define R228_SHUNT_CAL 0x02
#define R228_VSHUNT 0x04
#define R228_VBUS 0x05
#define R228_DIETEMP 0x06
#define R228_CURRENT 0x07
#define R228_POWER 0x08
#define R228_CHARGE 0x0A
#define R228_DIAG_ALRT 0x0B
#define R228_MFR_ID 0x3E
#define R228_DEVICE_ID 0x3F
#define C228_RSTACC 0x4000u
#define C228_ADCRANGE 0x0010u
#define C228_COMPARED 0x3FF0u      /* CONVDLY, TEMPCOMP, ADCRANGE: not RST/RSTACC */
#define A228_MODE_CONT_ALL 0xF000u /* continuous bus, shunt and temperature */
#define D228_ALATCH 0x8000u
#define D228_MATHOF 0x0200u
#define D228_CNVRF 0x0002u
#define ID228_DEVICE 0x228u /* DEVICE_ID bits 15:4 */

/* INA226 registers and bits */
#define R226_CONFIG 0x00
#define R226_SHUNT 0x01
#define R226_BUS 0x02
#define R226_POWER 0x03
#define R226_CURRENT 0x04
#define R226_CAL 0x05
#define R226_MASK 0x06
#define R226_MFR_ID 0xFE
#define R226_DIE_ID 0xFF
#define C226_RESERVED 0x4000u  /* bit 14 reads 1 */
#define C226_MODE_CONT 0x0007u /* continuous shunt and bus */
#define M226_CVRF 0x0008u
#define M226_OVF 0x0004u
#define ID226_DIE 0x2260u

#define INA_TI_ID 0x5449u /* "TI" */
#define INA_MAX_CYCLE_US 500000u
#define INA_STALE_MISSES 3u

static const unsigned ina2xx__avg[8] = {1, 4, 16, 64, 128, 256, 512, 1024};
static const unsigned ina228__ct[8] = {50, 84, 150, 280, 540, 1052, 2074, 4120};
static const unsigned ina226__ct[8] = {140, 204, 332, 588, 1100, 2116, 4156, 8244};

void ems_ina2xx_config_default(ems_ina2xx_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->chip = EMS_INA228;
    cfg->address = 0x40;
    cfg->averaging = 64;
    cfg->conversion_us = 1052;
}

const char *ems_ina2xx_chip_name(ems_ina2xx_chip_t chip)
{
    return chip == EMS_INA228 ? "INA228" : chip == EMS_INA226 ? "INA226" : "INA2xx?";
}

static bool ina__is228(const ems_ina2xx_t *c)
{
    return c->cfg.chip == EMS_INA228;
}

/* ------------------------------------------------------------- config */

static int ina__code(const unsigned list[8], unsigned v)
{
    for (int i = 0; i < 8; i++)
        if (list[i] == v)
            return i;
    return -1;
}

static void ina__list(char *buf, size_t cap, const unsigned list[8])
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < 8 && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%u", i ? ", " : "", list[i]);
}

/* Validates cfg and computes the register values into c. */
static int ina__calibrate(ems_ina2xx_t *c, char *err, size_t cap)
{
    const ems_ina2xx_config_t *g = &c->cfg;
    const char *name = ems_ina2xx_chip_name(g->chip);
    char list[96];
    if (g->chip != EMS_INA228 && g->chip != EMS_INA226) {
        snprintf(err, cap, "ina2xx: chip must be INA228 or INA226");
        return EMS_EINVAL;
    }
    if (g->address < 0x40 || g->address > 0x4F) {
        snprintf(err, cap, "%s: address 0x%02x: must be 0x40..0x4f", name, g->address);
        return EMS_EINVAL;
    }
    if (!(isfinite(g->shunt_ohms) && g->shunt_ohms > 0) ||
        !(isfinite(g->max_current_a) && g->max_current_a > 0)) {
        snprintf(err, cap, "%s: shunt_ohms (%g) and max_current_a (%g) must both be set (> 0)",
                 name, g->shunt_ohms, g->max_current_a);
        return EMS_EINVAL;
    }
    int avg = ina__code(ina2xx__avg, g->averaging);
    if (avg < 0) {
        ina__list(list, sizeof list, ina2xx__avg);
        snprintf(err, cap, "%s: averaging %u: must be one of %s", name, g->averaging, list);
        return EMS_EINVAL;
    }
    const unsigned *cts = ina__is228(c) ? ina228__ct : ina226__ct;
    int ct = ina__code(cts, g->conversion_us);
    if (ct < 0) {
        ina__list(list, sizeof list, cts);
        snprintf(err, cap, "%s: conversion_us %u: the %s's are %s", name, g->conversion_us, name,
                 list);
        return EMS_EINVAL;
    }
    unsigned channels = ina__is228(c) ? 3 : 2;
    unsigned long cycle = (unsigned long)g->averaging * g->conversion_us * channels;
    if (cycle > INA_MAX_CYCLE_US) {
        snprintf(err, cap,
                 "%s: averaging %u x conversion_us %u x %u channels = %lu ms: must be <= %u ms so "
                 "that each 1 s read sees a new conversion",
                 name, g->averaging, g->conversion_us, channels, cycle / 1000,
                 INA_MAX_CYCLE_US / 1000);
        return EMS_EINVAL;
    }

    double vmax = g->max_current_a * g->shunt_ohms;
    if (ina__is228(c)) {
        if (vmax > 0.16384) {
            snprintf(err, cap,
                     "%s: max_current_a %g x shunt_ohms %g = %.2f mV exceeds the +-163.84 mV "
                     "shunt range: lower max_current_a or use a smaller shunt",
                     name, g->max_current_a, g->shunt_ohms, vmax * 1e3);
            return EMS_EINVAL;
        }
        c->adcrange_low = vmax <= 0.04096;
        double scale = 13107.2e6 * g->shunt_ohms * (c->adcrange_low ? 4.0 : 1.0);
        long cal = lround(scale * g->max_current_a / 524288.0);
        if (cal < 1 || cal > 0x7FFF) {
            snprintf(err, cap,
                     "%s: max_current_a %g x shunt_ohms %g gives SHUNT_CAL %ld, outside 1..32767",
                     name, g->max_current_a, g->shunt_ohms, cal);
            return EMS_EINVAL;
        }
        c->reg_cal = (uint16_t)cal;
        c->current_lsb = (double)cal / scale;
        c->reg_config = c->adcrange_low ? C228_ADCRANGE : 0;
        c->reg_adc_config = (uint16_t)(A228_MODE_CONT_ALL | (unsigned)ct << 9 | (unsigned)ct << 6 |
                                       (unsigned)ct << 3 | (unsigned)avg);
    } else {
        if (vmax > 0.08192) {
            snprintf(err, cap,
                     "%s: max_current_a %g x shunt_ohms %g = %.2f mV exceeds the +-81.92 mV "
                     "shunt range: lower max_current_a or use a smaller shunt",
                     name, g->max_current_a, g->shunt_ohms, vmax * 1e3);
            return EMS_EINVAL;
        }
        double lsb = g->max_current_a / 32768.0;
        double calf = 0.00512 / (lsb * g->shunt_ohms);
        long cal = calf > 32767.0 ? 32767 : lround(calf);
        if (cal < 1) {
            snprintf(err, cap, "%s: max_current_a %g x shunt_ohms %g gives CAL 0", name,
                     g->max_current_a, g->shunt_ohms);
            return EMS_EINVAL;
        }
        c->reg_cal = (uint16_t)cal;
        c->current_lsb = 0.00512 / ((double)cal * g->shunt_ohms);
        c->reg_config = (uint16_t)(C226_RESERVED | (unsigned)avg << 9 | (unsigned)ct << 6 |
                                   (unsigned)ct << 3 | C226_MODE_CONT);
        c->reg_adc_config = 0;
    }
    c->calibrated = true;
    return 0;
}

/* ------------------------------------------------------------- registers */

/* Reads a big-endian register of `width` bytes (2, 3 or 5). */
static int ina__rd(ems_ina2xx_t *c, uint8_t reg, unsigned width, uint64_t *val)
{
    uint8_t b[5];
    int rc = ems_i2c_read_reg8(c->bus, c->cfg.address, reg, b, width);
    if (rc < 0)
        return rc;
    *val = ems_i2c_be(b, width);
    return 0;
}

static int ina__rd16(ems_ina2xx_t *c, uint8_t reg, uint16_t *val)
{
    return ems_i2c_read_u16(c->bus, c->cfg.address, reg, val);
}

static int ina__wr16(ems_ina2xx_t *c, uint8_t reg, uint16_t val)
{
    return ems_i2c_write_u16(c->bus, c->cfg.address, reg, val);
}

/* Writes the configuration. The INA228's CONFIG goes last, with RSTACC: the
 * charge accumulator then starts from zero under the final calibration. */
static int ina__write_config(ems_ina2xx_t *c, const char **doing)
{
    int rc;
    if (ina__is228(c)) {
        if ((rc = ina__wr16(c, R228_ADC_CONFIG, c->reg_adc_config)) < 0) {
            *doing = "writing ADC_CONFIG";
            return rc;
        }
        if ((rc = ina__wr16(c, R228_SHUNT_CAL, c->reg_cal)) < 0) {
            *doing = "writing SHUNT_CAL";
            return rc;
        }
        if ((rc = ina__wr16(c, R228_DIAG_ALRT, D228_ALATCH)) < 0) {
            *doing = "writing DIAG_ALRT";
            return rc;
        }
        if ((rc = ina__wr16(c, R228_CONFIG, (uint16_t)(c->reg_config | C228_RSTACC))) < 0) {
            *doing = "writing CONFIG";
            return rc;
        }
        return 0;
    }
    if ((rc = ina__wr16(c, R226_CONFIG, c->reg_config)) < 0) {
        *doing = "writing CONFIG";
        return rc;
    }
    if ((rc = ina__wr16(c, R226_CAL, c->reg_cal)) < 0) {
        *doing = "writing CALIBRATION";
        return rc;
    }
    return 0;
}

/* Reads the configuration back. *same is false, and why says which
 * register differs, when the chip no longer holds what init wrote. `diag`
 * is the INA228's DIAG_ALRT as just read (its ALATCH bit is ours). */
static int ina__check_config(ems_ina2xx_t *c, uint16_t diag, bool *same, char *why, size_t cap,
                             const char **doing)
{
    uint16_t v;
    int rc;
    *same = true;
    if (ina__is228(c)) {
        if ((rc = ina__rd16(c, R228_CONFIG, &v)) < 0) {
            *doing = "reading CONFIG";
            return rc;
        }
        if ((v & C228_COMPARED) != (c->reg_config & C228_COMPARED)) {
            snprintf(why, cap, "CONFIG reads 0x%04x, init wrote 0x%04x", v, c->reg_config);
            *same = false;
            return 0;
        }
        if ((rc = ina__rd16(c, R228_ADC_CONFIG, &v)) < 0) {
            *doing = "reading ADC_CONFIG";
            return rc;
        }
        if (v != c->reg_adc_config) {
            snprintf(why, cap, "ADC_CONFIG reads 0x%04x, init wrote 0x%04x", v, c->reg_adc_config);
            *same = false;
            return 0;
        }
        if ((rc = ina__rd16(c, R228_SHUNT_CAL, &v)) < 0) {
            *doing = "reading SHUNT_CAL";
            return rc;
        }
        if ((v & 0x7FFF) != c->reg_cal) {
            snprintf(why, cap, "SHUNT_CAL reads 0x%04x, init wrote 0x%04x", v, c->reg_cal);
            *same = false;
            return 0;
        }
        if (!(diag & D228_ALATCH)) {
            snprintf(why, cap, "DIAG_ALRT reads 0x%04x, without the ALATCH bit init set", diag);
            *same = false;
        }
        return 0;
    }
    if ((rc = ina__rd16(c, R226_CONFIG, &v)) < 0) {
        *doing = "reading CONFIG";
        return rc;
    }
    if ((v & 0x7FFF) != c->reg_config) {
        snprintf(why, cap, "CONFIG reads 0x%04x, init wrote 0x%04x", v, c->reg_config);
        *same = false;
        return 0;
    }
    if ((rc = ina__rd16(c, R226_CAL, &v)) < 0) {
        *doing = "reading CALIBRATION";
        return rc;
    }
    if ((v & 0x7FFF) != c->reg_cal) {
        snprintf(why, cap, "CALIBRATION reads 0x%04x, init wrote 0x%04x", v, c->reg_cal);
        *same = false;
    }
    return 0;
}

/* ------------------------------------------------------------- init */

static int ina__identify(ems_ina2xx_t *c, char *err, size_t cap)
{
    const char *name = ems_ina2xx_chip_name(c->cfg.chip);
    const ems_i2c_bus_t *bus = c->bus;
    uint16_t addr = c->cfg.address;
    uint16_t mfr, dev;
    int rc = ina__rd16(c, ina__is228(c) ? R228_MFR_ID : R226_MFR_ID, &mfr);
    if (rc < 0)
        return ems_i2c_explain(bus, addr, rc, "reading MANUFACTURER_ID", err, cap);
    if (mfr != INA_TI_ID) {
        snprintf(err, cap,
                 "%s 0x%02x: manufacturer ID 0x%04x, expected 0x%04x (TI): is an %s at this "
                 "address?",
                 bus->name, addr, mfr, INA_TI_ID, name);
        return EMS_ENODEV;
    }
    rc = ina__rd16(c, ina__is228(c) ? R228_DEVICE_ID : R226_DIE_ID, &dev);
    if (rc < 0)
        return ems_i2c_explain(bus, addr, rc, "reading DEVICE_ID", err, cap);
    if (ina__is228(c) && (dev >> 4) != ID228_DEVICE) {
        snprintf(err, cap,
                 "%s 0x%02x: device ID 0x%04x, expected 0x%03xN (INA228): is an INA228 at this "
                 "address?",
                 bus->name, addr, dev, ID228_DEVICE);
        return EMS_ENODEV;
    }
    if (!ina__is228(c) && dev != ID226_DIE) {
        snprintf(err, cap,
                 "%s 0x%02x: die ID 0x%04x, expected 0x%04x (INA226): is an INA226 at this "
                 "address?",
                 bus->name, addr, dev, ID226_DIE);
        return EMS_ENODEV;
    }
    return 0;
}

int ems_ina2xx_init(ems_ina2xx_t *c, ems_i2c_bus_t *bus, const ems_ina2xx_config_t *cfg, char *err,
                    size_t cap)
{
    char scratch[8];
    if (!err || cap == 0) {
        err = scratch;
        cap = sizeof scratch;
    }
    memset(c, 0, sizeof *c);
    c->bus = bus;
    c->cfg = *cfg;
    int rc = ina__calibrate(c, err, cap);
    if (rc < 0)
        return rc;
    if ((rc = ina__identify(c, err, cap)) < 0)
        return rc;
    const char *doing = NULL;
    if ((rc = ina__write_config(c, &doing)) < 0)
        return ems_i2c_explain(bus, cfg->address, rc, doing, err, cap);

    uint16_t diag = D228_ALATCH;
    if (ina__is228(c) && (rc = ina__rd16(c, R228_DIAG_ALRT, &diag)) < 0)
        return ems_i2c_explain(bus, cfg->address, rc, "reading DIAG_ALRT", err, cap);
    bool same;
    char why[96];
    if ((rc = ina__check_config(c, diag, &same, why, sizeof why, &doing)) < 0)
        return ems_i2c_explain(bus, cfg->address, rc, doing, err, cap);
    if (!same) {
        snprintf(err, cap, "%s 0x%02x: %s: the configuration did not stick", bus->name,
                 cfg->address, why);
        return EMS_EIO;
    }
    c->ready = true;
    return 0;
}

/* ------------------------------------------------------------- read */

static int ina__fail(ems_ina2xx_t *c, int rc, const char *doing)
{
    return ems_i2c_explain(c->bus, c->cfg.address, rc, doing, c->err, sizeof c->err);
}

static int ina__reinit(ems_ina2xx_t *c, const char *why)
{
    const char *doing = NULL;
    int rc = ina__write_config(c, &doing);
    if (rc < 0)
        return ina__fail(c, rc, doing);
    c->reinits++;
    c->converted = false;
    c->misses = 0;
    snprintf(c->err, sizeof c->err,
             "%s 0x%02x: %s: the chip reset (brown-out?); configuration written again%s",
             c->bus->name, c->cfg.address, why,
             ina__is228(c) ? ", charge accumulator restarted from 0" : "");
    return EMS_EAGAIN;
}

/* The conversion-ready bookkeeping: 0 to go on and read the results, or
 * EMS_EAGAIN / EMS_ESTALE. */
static int ina__freshness(ems_ina2xx_t *c, bool flag)
{
    if (flag) {
        c->misses = 0;
        c->converted = true;
        return 0;
    }
    c->misses++;
    if (c->misses >= INA_STALE_MISSES) {
        snprintf(c->err, sizeof c->err,
                 "%s 0x%02x: no new conversion on %u consecutive reads: the ADC is stuck",
                 c->bus->name, c->cfg.address, c->misses);
        return EMS_ESTALE;
    }
    if (!c->converted) {
        snprintf(c->err, sizeof c->err, "%s 0x%02x: no conversion completed since init yet",
                 c->bus->name, c->cfg.address);
        return EMS_EAGAIN;
    }
    return 0;
}

static int ina__range(ems_ina2xx_t *c, const char *what)
{
    snprintf(c->err, sizeof c->err, "%s 0x%02x: %s", c->bus->name, c->cfg.address, what);
    return EMS_ERANGE;
}

static int ina228__read(ems_ina2xx_t *c, ems_ina2xx_reading_t *out)
{
    uint16_t diag;
    int rc = ina__rd16(c, R228_DIAG_ALRT, &diag);
    if (rc < 0)
        return ina__fail(c, rc, "reading DIAG_ALRT");
    bool same;
    char why[96];
    const char *doing = NULL;
    if ((rc = ina__check_config(c, diag, &same, why, sizeof why, &doing)) < 0)
        return ina__fail(c, rc, doing);
    if (!same)
        return ina__reinit(c, why);
    if ((rc = ina__freshness(c, diag & D228_CNVRF)) < 0)
        return rc;

    uint64_t vbus, vshunt, cur, pow, chg, temp;
    if ((rc = ina__rd(c, R228_VBUS, 3, &vbus)) < 0)
        return ina__fail(c, rc, "reading VBUS");
    if ((rc = ina__rd(c, R228_VSHUNT, 3, &vshunt)) < 0)
        return ina__fail(c, rc, "reading VSHUNT");
    if ((rc = ina__rd(c, R228_CURRENT, 3, &cur)) < 0)
        return ina__fail(c, rc, "reading CURRENT");
    if ((rc = ina__rd(c, R228_POWER, 3, &pow)) < 0)
        return ina__fail(c, rc, "reading POWER");
    if ((rc = ina__rd(c, R228_CHARGE, 5, &chg)) < 0)
        return ina__fail(c, rc, "reading CHARGE");
    if ((rc = ina__rd(c, R228_DIETEMP, 2, &temp)) < 0)
        return ina__fail(c, rc, "reading DIETEMP");

    char what[128];
    int64_t vb = ems_i2c_sign_extend(vbus >> 4, 20);
    int64_t vs = ems_i2c_sign_extend(vshunt >> 4, 20);
    int64_t ic = ems_i2c_sign_extend(cur >> 4, 20);
    double volts = (double)vb * 195.3125e-6;
    if (vb < 0 || volts > 85.0) {
        snprintf(what, sizeof what, "VBUS 0x%06x = %.3f V: outside the INA228's 0..85 V",
                 (unsigned)vbus, volts);
        return ina__range(c, what);
    }
    if (vs == 0x7FFFF || vs == -0x80000 || ic == 0x7FFFF || ic == -0x80000) {
        snprintf(what, sizeof what,
                 "VSHUNT 0x%06x / CURRENT 0x%06x at full scale: |current| beyond max_current_a "
                 "%g A, true value unknown",
                 (unsigned)vshunt, (unsigned)cur, c->cfg.max_current_a);
        return ina__range(c, what);
    }
    if (diag & D228_MATHOF) {
        snprintf(what, sizeof what, "DIAG_ALRT 0x%04x: math overflow (MATHOF)", diag);
        return ina__range(c, what);
    }
    double sign = c->cfg.invert ? -1.0 : 1.0;
    double amps = (double)ic * c->current_lsb;
    double watts = (double)(pow & 0xFFFFFF) * 3.2 * c->current_lsb;
    memset(out, 0, sizeof *out);
    out->volts = volts;
    out->amps = sign * amps;
    out->watts = sign * (amps < 0 ? -watts : watts);
    out->shunt_volts = sign * (double)vs * (c->adcrange_low ? 78.125e-9 : 312.5e-9);
    out->has_charge = true;
    out->coulombs = sign * (double)ems_i2c_sign_extend(chg, 40) * c->current_lsb;
    out->has_temp = true;
    out->die_c = (double)(int16_t)temp * 7.8125e-3;
    c->err[0] = '\0';
    return 0;
}

static int ina226__read(ems_ina2xx_t *c, ems_ina2xx_reading_t *out)
{
    uint16_t mask;
    int rc = ina__rd16(c, R226_MASK, &mask);
    if (rc < 0)
        return ina__fail(c, rc, "reading MASK/ENABLE");
    bool same;
    char why[96];
    const char *doing = NULL;
    if ((rc = ina__check_config(c, 0, &same, why, sizeof why, &doing)) < 0)
        return ina__fail(c, rc, doing);
    if (!same)
        return ina__reinit(c, why);
    if ((rc = ina__freshness(c, mask & M226_CVRF)) < 0)
        return rc;

    uint16_t bus, shunt, cur, pow;
    if ((rc = ina__rd16(c, R226_BUS, &bus)) < 0)
        return ina__fail(c, rc, "reading BUS");
    if ((rc = ina__rd16(c, R226_SHUNT, &shunt)) < 0)
        return ina__fail(c, rc, "reading SHUNT");
    if ((rc = ina__rd16(c, R226_CURRENT, &cur)) < 0)
        return ina__fail(c, rc, "reading CURRENT");
    if ((rc = ina__rd16(c, R226_POWER, &pow)) < 0)
        return ina__fail(c, rc, "reading POWER");

    char what[128];
    double volts = (double)bus * 1.25e-3;
    if ((bus & 0x8000) || volts > 36.0) {
        snprintf(what, sizeof what, "BUS 0x%04x = %.3f V: outside the INA226's 0..36 V", bus,
                 volts);
        return ina__range(c, what);
    }
    if (shunt == 0x7FFF || shunt == 0x8000 || cur == 0x7FFF || cur == 0x8000) {
        snprintf(what, sizeof what,
                 "SHUNT 0x%04x / CURRENT 0x%04x at full scale: |current| beyond max_current_a "
                 "%g A, true value unknown",
                 shunt, cur, c->cfg.max_current_a);
        return ina__range(c, what);
    }
    if (mask & M226_OVF) {
        snprintf(what, sizeof what, "MASK/ENABLE 0x%04x: math overflow (OVF)", mask);
        return ina__range(c, what);
    }
    double sign = c->cfg.invert ? -1.0 : 1.0;
    double amps = (double)(int16_t)cur * c->current_lsb;
    double watts = (double)pow * 25.0 * c->current_lsb;
    memset(out, 0, sizeof *out);
    out->volts = volts;
    out->amps = sign * amps;
    out->watts = sign * (amps < 0 ? -watts : watts);
    out->shunt_volts = sign * (double)(int16_t)shunt * 2.5e-6;
    c->err[0] = '\0';
    return 0;
}

int ems_ina2xx_read(ems_ina2xx_t *c, ems_ina2xx_reading_t *out)
{
    if (!c->ready) {
        snprintf(c->err, sizeof c->err, "%s: not initialised (init failed)",
                 ems_ina2xx_chip_name(c->cfg.chip));
        return EMS_EINVAL;
    }
    return ina__is228(c) ? ina228__read(c, out) : ina226__read(c, out);
}

/* ------------------------------------------------------------- probe */

typedef struct {
    uint8_t reg;
    unsigned width;
    const char *name;
} ina__reg_t;

static const ina__reg_t ina228__regs[] = {
    {R228_MFR_ID, 2, "MANUFACTURER_ID"},
    {R228_DEVICE_ID, 2, "DEVICE_ID"},
    {R228_CONFIG, 2, "CONFIG"},
    {R228_ADC_CONFIG, 2, "ADC_CONFIG"},
    {R228_SHUNT_CAL, 2, "SHUNT_CAL"},
    {R228_DIAG_ALRT, 2, "DIAG_ALRT"},
    {R228_VBUS, 3, "VBUS"},
    {R228_VSHUNT, 3, "VSHUNT"},
    {R228_CURRENT, 3, "CURRENT"},
    {R228_POWER, 3, "POWER"},
    {R228_CHARGE, 5, "CHARGE"},
    {R228_DIETEMP, 2, "DIETEMP"},
};

static const ina__reg_t ina226__regs[] = {
    {R226_MFR_ID, 2, "MANUFACTURER_ID"},
    {R226_DIE_ID, 2, "DIE_ID"},
    {R226_CONFIG, 2, "CONFIG"},
    {R226_CAL, 2, "CALIBRATION"},
    {R226_MASK, 2, "MASK/ENABLE"},
    {R226_BUS, 2, "BUS"},
    {R226_SHUNT, 2, "SHUNT"},
    {R226_CURRENT, 2, "CURRENT"},
    {R226_POWER, 2, "POWER"},
};

int ems_ina2xx_probe(ems_ina2xx_t *c, FILE *out)
{
    const bool is228 = ina__is228(c);
    const ina__reg_t *regs = is228 ? ina228__regs : ina226__regs;
    size_t n = is228 ? sizeof ina228__regs / sizeof *regs : sizeof ina226__regs / sizeof *regs;
    uint64_t v[12];
    bool ok[12];
    int first = 0;

    fprintf(out, "%s at %s 0x%02x (init %s)\n", ems_ina2xx_chip_name(c->cfg.chip), c->bus->name,
            c->cfg.address, c->ready ? "ok" : "failed");
    for (size_t i = 0; i < n; i++) {
        int rc = ina__rd(c, regs[i].reg, regs[i].width, &v[i]);
        ok[i] = rc == 0;
        if (rc < 0) {
            char msg[160];
            ems_i2c_explain(c->bus, c->cfg.address, rc, NULL, msg, sizeof msg);
            fprintf(out, "  %-15s (0x%02x): %s\n", regs[i].name, regs[i].reg, msg);
            if (!first)
                first = rc;
            if (rc == EMS_ENXIO)
                return rc; /* nothing at this address: one line is enough */
            continue;
        }
        fprintf(out, "  %-15s (0x%02x) = 0x%0*llx\n", regs[i].name, regs[i].reg,
                (int)regs[i].width * 2, (unsigned long long)v[i]);
    }
    if (ok[0] && v[0] != INA_TI_ID) {
        fprintf(out, "  manufacturer ID is not TI's 0x5449: not an INA2xx\n");
        first = first ? first : EMS_ENODEV;
    } else if (ok[1] && (is228 ? (v[1] >> 4) != ID228_DEVICE : v[1] != ID226_DIE)) {
        fprintf(out, "  device ID is not an %s's\n", ems_ina2xx_chip_name(c->cfg.chip));
        first = first ? first : EMS_ENODEV;
    }

    double sign = c->cfg.invert ? -1.0 : 1.0;
    if (is228) {
        if (ok[6])
            fprintf(out, "  bus voltage   %.4f V\n",
                    (double)ems_i2c_sign_extend(v[6] >> 4, 20) * 195.3125e-6);
        if (ok[7] && ok[2])
            fprintf(out, "  shunt voltage %.6f mV (ADCRANGE %d)\n",
                    (double)ems_i2c_sign_extend(v[7] >> 4, 20) *
                        ((v[2] & C228_ADCRANGE) ? 78.125e-6 : 312.5e-6),
                    (v[2] & C228_ADCRANGE) ? 1 : 0);
        if (c->calibrated && ok[8])
            fprintf(out, "  current       %.4f A (+ = charging)\n",
                    sign * (double)ems_i2c_sign_extend(v[8] >> 4, 20) * c->current_lsb);
        if (c->calibrated && ok[9])
            fprintf(out, "  power         %.3f W (magnitude)\n",
                    (double)v[9] * 3.2 * c->current_lsb);
        if (c->calibrated && ok[10])
            fprintf(out, "  charge        %.3f C\n",
                    sign * (double)ems_i2c_sign_extend(v[10], 40) * c->current_lsb);
        if (ok[11])
            fprintf(out, "  die           %.2f C\n", (double)(int16_t)v[11] * 7.8125e-3);
    } else {
        if (ok[5])
            fprintf(out, "  bus voltage   %.4f V\n", (double)v[5] * 1.25e-3);
        if (ok[6])
            fprintf(out, "  shunt voltage %.4f mV\n", (double)(int16_t)v[6] * 2.5e-3);
        if (c->calibrated && ok[7])
            fprintf(out, "  current       %.4f A (+ = charging)\n",
                    sign * (double)(int16_t)v[7] * c->current_lsb);
        if (c->calibrated && ok[8])
            fprintf(out, "  power         %.3f W (magnitude)\n",
                    (double)v[8] * 25.0 * c->current_lsb);
    }
    if (c->calibrated && is228)
        fprintf(out,
                "  calibration   %.9g A/LSB; init writes CONFIG 0x%04x, ADC_CONFIG 0x%04x, "
                "SHUNT_CAL 0x%04x\n",
                c->current_lsb, c->reg_config, c->reg_adc_config, c->reg_cal);
    else if (c->calibrated)
        fprintf(out, "  calibration   %.9g A/LSB; init writes CONFIG 0x%04x, CALIBRATION 0x%04x\n",
                c->current_lsb, c->reg_config, c->reg_cal);
    fprintf(out, "  bus counters  transfers %llu, nacks %llu, retries %llu, errors %llu\n",
            (unsigned long long)c->bus->transfers, (unsigned long long)c->bus->nacks,
            (unsigned long long)c->bus->retries, (unsigned long long)c->bus->errors);
    return first;
}
