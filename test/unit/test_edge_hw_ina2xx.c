/* test_edge_hw_ina2xx.c: the INA228 / INA226 driver against register models
 * on the fake bus: the exact configuration bytes, scaling from known raw
 * values, identity, retries, the stuck rule, range, brown-out, signs. */
#include "ems_test.h"

#include "error.h"
#include "fake_i2c.h"
#include "ina2xx.h"

#include <math.h>
#include <string.h>

#define ADDR 0x40

/* ------------------------------------------------------------ INA228 model */

static int ina228_width(uint16_t reg)
{
    switch (reg) {
    case 0x04: /* VSHUNT */
    case 0x05: /* VBUS */
    case 0x07: /* CURRENT */
    case 0x08: /* POWER */
        return 3;
    case 0x09: /* ENERGY */
    case 0x0A: /* CHARGE */
        return 5;
    default:
        return 2;
    }
}

/* state[0]: 1 while the ADC converts (a conversion completes between any two
 * reads). DIAG_ALRT bits: ALATCH 0x8000, MATHOF 0x0200, CNVRF 0x0002,
 * MEMSTAT 0x0001. */
static void ina228_after_write(fake_i2c_dev_t *d, uint16_t reg, uint64_t val)
{
    if (reg == 0x00) {
        if (val & 0x4000) { /* RSTACC clears the accumulators */
            fake_reg_set(d, 0x09, 0);
            fake_reg_set(d, 0x0A, 0);
        }
        fake_reg_set(d, 0x00, val & 0x3FFF); /* RST and RSTACC self-clear */
    } else if (reg == 0x0B) {
        fake_reg_set(d, 0x0B, (val & 0xF000) | 0x0001 | (d->state[0] ? 0x0002 : 0));
    }
}

static void ina228_after_read(fake_i2c_dev_t *d, uint16_t reg)
{
    if (reg != 0x0B)
        return;
    uint64_t v = fake_reg_get(d, 0x0B);
    if (v & 0x8000)
        v &= ~(uint64_t)0x0202; /* latched flags clear on read */
    if (d->state[0])
        v |= 0x0002; /* the next conversion completes before the next read */
    fake_reg_set(d, 0x0B, v);
}

/* Power-on values of the registers (SBOSA20). */
static void ina228_por(fake_i2c_dev_t *d)
{
    fake_reg_set(d, 0x00, 0x0000);
    fake_reg_set(d, 0x01, 0xFB68);
    fake_reg_set(d, 0x02, 0x1000);
    fake_reg_set(d, 0x09, 0);
    fake_reg_set(d, 0x0A, 0);
    fake_reg_set(d, 0x0B, 0x0001);
}

/* An INA228 measuring 48.000 V, +75 A, 3600 W, 300 C, 25 C die, with the
 * 0.5 mOhm / 150 A calibration of cfg228() (Current_LSB = 150 / 2^19 A):
 *   VBUS    48 V / 195.3125 uV = 245760 = 0x3C000, << 4 -> 0x3C0000
 *   CURRENT 75 A / LSB = 262144 = 0x40000, << 4         -> 0x400000
 *   VSHUNT  37.5 mV / 312.5 nV = 120000 = 0x1D4C0, << 4 -> 0x1D4C00
 *   POWER   3600 W / (3.2 x LSB) = 3932160               = 0x3C0000
 *   CHARGE  300 C / LSB = 1048576                        = 0x0000100000
 *   DIETEMP 25 C / 7.8125 mC = 3200                      = 0x0C80 */
static fake_i2c_dev_t *ina228_chip(fake_i2c_t *f)
{
    fake_i2c_dev_t *d = fake_i2c_add(f, ADDR, 1, ina228_width);
    d->after_write = ina228_after_write;
    d->after_read = ina228_after_read;
    d->state[0] = 1;
    fake_reg_set(d, 0x3E, 0x5449);
    fake_reg_set(d, 0x3F, 0x2281);
    ina228_por(d);
    fake_reg_set(d, 0x04, 0x1D4C00);
    fake_reg_set(d, 0x05, 0x3C0000);
    fake_reg_set(d, 0x06, 0x0C80);
    fake_reg_set(d, 0x07, 0x400000);
    fake_reg_set(d, 0x08, 0x3C0000);
    return d;
}

static ems_ina2xx_config_t cfg228(void)
{
    ems_ina2xx_config_t cfg;
    ems_ina2xx_config_default(&cfg);
    cfg.shunt_ohms = 0.0005;
    cfg.max_current_a = 150;
    return cfg;
}

/* A chip after a good init, with the log cleared. */
static void ina228_ready(fake_i2c_t *f, fake_i2c_dev_t **d, ems_ina2xx_t *c)
{
    fake_i2c_init(f);
    *d = ina228_chip(f);
    ems_ina2xx_config_t cfg = cfg228();
    char err[200];
    int rc = ems_ina2xx_init(c, &f->bus, &cfg, err, sizeof err);
    if (rc != 0)
        EMS_FAIL("init: %d %s", rc, err);
    fake_reg_set(*d, 0x0A, 0x0000100000); /* charge counted since init */
    fake_i2c_clear_log(f);
}

static void test_ina228_init_writes(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina228_chip(&f);
    fake_reg_set(d, 0x0A, 0x0000123456); /* charge from before: RSTACC clears it */
    ems_ina2xx_config_t cfg = cfg228();
    ems_ina2xx_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);

    /* 150 A x 0.5 mOhm = 75 mV > 40.96 mV: ADCRANGE = 0 (+-163.84 mV).
     * Current_LSB = 150 / 2^19 = 2.86102294921875e-4 A.
     * SHUNT_CAL = 13107.2e6 x 2.86102294921875e-4 x 0.0005 = 1875 = 0x0753.
     * ADC_CONFIG = MODE 0xF | VBUSCT 5 (1052 us) << 9 | VSHCT 5 << 6 |
     *              VTCT 5 << 3 | AVG 3 (64) = 0xFB6B.
     * DIAG_ALRT = ALATCH (0x8000). CONFIG last: RSTACC (0x4000), ADCRANGE 0. */
    static const uint8_t w0[] = {0x01, 0xFB, 0x6B}, w1[] = {0x02, 0x07, 0x53},
                         w2[] = {0x0B, 0x80, 0x00}, w3[] = {0x00, 0x40, 0x00};
    if (fake_i2c_count_writes(&f) != 4)
        fake_i2c_dump(&f);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 4);
    EMS_CHECK(fake_i2c_write_is(&f, 0, w0, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 1, w1, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 2, w2, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 3, w3, 3));
    EMS_CHECK_INT(c.reg_cal, ==, 1875);
    EMS_CHECK(!c.adcrange_low);
    EMS_CHECK_NEAR(c.current_lsb, 150.0 / 524288.0, 1e-15);
    EMS_CHECK_INT(fake_reg_get(d, 0x0A), ==, 0); /* accumulator reset */
    EMS_CHECK(!d->bad);
    /* The identity came first, before any write. */
    EMS_CHECK_INT(f.log[0].w[0], ==, 0x3E);
    EMS_CHECK_INT(f.log[1].w[0], ==, 0x3F);
}

static void test_ina228_low_range_calibration(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    ina228_chip(&f);
    ems_ina2xx_config_t cfg = cfg228();
    cfg.shunt_ohms = 0.0002; /* 100 A x 0.2 mOhm = 20 mV: fits +-40.96 mV */
    cfg.max_current_a = 100;
    cfg.averaging = 16;
    cfg.conversion_us = 540;
    ems_ina2xx_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    /* SHUNT_CAL = 13107.2e6 x (100 / 2^19) x 0.0002 x 4 = 2000 = 0x07D0;
     * ADC_CONFIG = 0xF000 | 4 << 9 | 4 << 6 | 4 << 3 | 2 = 0xF922;
     * CONFIG = RSTACC | ADCRANGE = 0x4010. */
    static const uint8_t w0[] = {0x01, 0xF9, 0x22}, w1[] = {0x02, 0x07, 0xD0},
                         w3[] = {0x00, 0x40, 0x10};
    EMS_CHECK(fake_i2c_write_is(&f, 0, w0, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 1, w1, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 3, w3, 3));
    EMS_CHECK(c.adcrange_low);
}

static void test_ina228_scaling(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ina2xx_t c;
    ina228_ready(&f, &d, &c);
    ems_ina2xx_reading_t r;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.volts, 48.000, 1e-9);
    EMS_CHECK_NEAR(r.amps, 75.0, 1e-9);
    EMS_CHECK_NEAR(r.watts, 3600.0, 1e-6);
    EMS_CHECK_NEAR(r.shunt_volts, 0.0375, 1e-12);
    EMS_CHECK(r.has_charge);
    EMS_CHECK_NEAR(r.coulombs, 300.0, 1e-9);
    EMS_CHECK(r.has_temp);
    EMS_CHECK_NEAR(r.die_c, 25.0, 1e-9);
    EMS_CHECK(!d->bad);

    /* Discharging: CURRENT -262144 (20-bit 0xC0000), CHARGE -1048576 (40-bit).
     * POWER is a magnitude; watts take the current's sign. */
    fake_reg_set(d, 0x07, 0xC00000);
    fake_reg_set(d, 0x04, 0xE2B400); /* -120000 << 4 */
    fake_reg_set(d, 0x0A, 0xFFFFF00000);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.amps, -75.0, 1e-9);
    EMS_CHECK_NEAR(r.watts, -3600.0, 1e-6);
    EMS_CHECK_NEAR(r.coulombs, -300.0, 1e-9);
    EMS_CHECK_NEAR(r.shunt_volts, -0.0375, 1e-12);
    EMS_CHECK_STR(c.err, "");
}

static void test_ina228_invert(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina228_chip(&f);
    ems_ina2xx_config_t cfg = cfg228();
    cfg.invert = true;
    ems_ina2xx_t c;
    char err[200];
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    fake_reg_set(d, 0x0A, 0x0000100000);
    ems_ina2xx_reading_t r;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.volts, 48.0, 1e-9); /* voltage is never inverted */
    EMS_CHECK_NEAR(r.amps, -75.0, 1e-9);
    EMS_CHECK_NEAR(r.watts, -3600.0, 1e-6);
    EMS_CHECK_NEAR(r.coulombs, -300.0, 1e-9);
}

static void test_ina228_wrong_ids(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina228_chip(&f);
    fake_reg_set(d, 0x3E, 0x1234);
    ems_ina2xx_config_t cfg = cfg228();
    ems_ina2xx_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENODEV);
    EMS_CHECK(strstr(err, "/dev/i2c-1 0x40") != NULL);
    EMS_CHECK(strstr(err, "0x1234") != NULL);
    EMS_CHECK(strstr(err, "0x5449") != NULL);
    EMS_CHECK(strstr(err, "INA228") != NULL);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 0); /* nothing written to a stranger */

    ems_ina2xx_reading_t r;
    memset(&r, 0x5A, sizeof r);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_EINVAL);
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);

    fake_reg_set(d, 0x3E, 0x5449);
    fake_reg_set(d, 0x3F, 0x2381); /* an INA238 */
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENODEV);
    EMS_CHECK(strstr(err, "/dev/i2c-1 0x40: device ID 0x2381") != NULL);
}

static void test_ina228_no_answer(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f); /* nothing at 0x40 */
    ems_ina2xx_config_t cfg = cfg228();
    ems_ina2xx_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENXIO);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x40: no answer (check the wiring and the address, "
                       "`i2cdetect -y 1`)");
}

static void test_ina228_nack_retried_once(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ina2xx_t c;
    ina228_ready(&f, &d, &c);
    uint64_t retries = f.bus.retries;
    ems_ina2xx_reading_t r;
    d->nack = 1;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_INT(f.bus.retries - retries, ==, 1);
    EMS_CHECK_NEAR(r.volts, 48.0, 1e-9);

    memset(&r, 0x5A, sizeof r);
    d->nack = 2;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ENXIO);
    EMS_CHECK_INT(((unsigned char *)&r)[7], ==, 0x5A); /* untouched */
    EMS_CHECK(strstr(c.err, "no answer") != NULL);
}

static void test_ina228_stale(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ina2xx_t c;
    ina228_ready(&f, &d, &c);
    ems_ina2xx_reading_t r;
    d->state[0] = 0;                               /* the ADC stops */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0); /* the pending conversion */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0); /* miss 1: last real values */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0); /* miss 2 */
    memset(&r, 0x5A, sizeof r);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ESTALE); /* miss 3 */
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);
    EMS_CHECK(strstr(c.err, "3 consecutive") != NULL);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ESTALE);
    d->state[0] = 1; /* it converts again */
    fake_reg_set(d, 0x0B, fake_reg_get(d, 0x0B) | 0x0002);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.volts, 48.0, 1e-9);
}

static void test_ina228_no_conversion_yet(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ina2xx_t c;
    ina228_ready(&f, &d, &c);
    d->state[0] = 0;
    fake_reg_set(d, 0x0B, 0x8001); /* no conversion completed since init */
    ems_ina2xx_reading_t r;
    memset(&r, 0x5A, sizeof r);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_EAGAIN);
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);
    EMS_CHECK_INT(c.reinits, ==, 0);
    fake_reg_set(d, 0x0B, 0x8003);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
}

static void test_ina228_range(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ina2xx_t c;
    ina228_ready(&f, &d, &c);
    ems_ina2xx_reading_t r;
    memset(&r, 0x5A, sizeof r);

    fake_reg_set(d, 0x05, 0x6E0000); /* 450560 x 195.3125 uV = 88 V > 85 V */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    EMS_CHECK(strstr(c.err, "VBUS") != NULL);
    fake_reg_set(d, 0x05, 0x3C0000);

    fake_reg_set(d, 0x07, 0x7FFFF0); /* CURRENT at +full scale */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x07, 0x800000); /* CURRENT at -full scale */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x07, 0x400000);

    fake_reg_set(d, 0x04, 0x7FFFF0); /* the shunt ADC saturated */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x04, 0x1D4C00);

    fake_reg_set(d, 0x0B, 0x8203); /* MATHOF */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    EMS_CHECK(strstr(c.err, "MATHOF") != NULL);
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);

    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0); /* all back in range */
    EMS_CHECK_NEAR(r.amps, 75.0, 1e-9);
}

static void test_ina228_brownout_reinit(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ina2xx_t c;
    ina228_ready(&f, &d, &c);
    ems_ina2xx_reading_t r;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.coulombs, 300.0, 1e-9);

    ina228_por(d); /* brown-out: every register back to its reset value */
    fake_i2c_clear_log(&f);
    memset(&r, 0x5A, sizeof r);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_EAGAIN);
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);
    EMS_CHECK_INT(c.reinits, ==, 1);
    EMS_CHECK(strstr(c.err, "ADC_CONFIG reads 0xfb68") != NULL);
    EMS_CHECK(strstr(c.err, "charge") != NULL);
    static const uint8_t w0[] = {0x01, 0xFB, 0x6B}, w1[] = {0x02, 0x07, 0x53},
                         w2[] = {0x0B, 0x80, 0x00}, w3[] = {0x00, 0x40, 0x00};
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 4);
    EMS_CHECK(fake_i2c_write_is(&f, 0, w0, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 1, w1, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 2, w2, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 3, w3, 3));

    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.coulombs, 0.0, 1e-12); /* the accumulator restarted */
}

/* A configuration whose CONFIG, ADC_CONFIG and SHUNT_CAL equal the reset
 * values: only the ALATCH bit tells a reset chip from ours. */
static void test_ina228_brownout_seen_by_alatch(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina228_chip(&f);
    ems_ina2xx_config_t cfg = cfg228();
    cfg.shunt_ohms = 0.001;
    cfg.max_current_a = 163.84; /* SHUNT_CAL = 25000 x 0.16384 = 4096 = 0x1000 */
    cfg.averaging = 1;          /* ADC_CONFIG = 0xFB68 */
    ems_ina2xx_t c;
    char err[200];
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    EMS_CHECK_INT(c.reg_cal, ==, 0x1000);
    EMS_CHECK_INT(c.reg_adc_config, ==, 0xFB68);
    ems_ina2xx_reading_t r;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    ina228_por(d);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_EAGAIN);
    EMS_CHECK_INT(c.reinits, ==, 1);
    EMS_CHECK(strstr(c.err, "ALATCH") != NULL);
}

static void ignore_cal_writes(fake_i2c_dev_t *d, uint16_t reg, uint64_t val)
{
    if (reg == 0x02)
        fake_reg_set(d, 0x02, 0x1000);
    else
        ina228_after_write(d, reg, val);
}

static void test_ina228_write_did_not_stick(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina228_chip(&f);
    d->after_write = ignore_cal_writes;
    ems_ina2xx_config_t cfg = cfg228();
    ems_ina2xx_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EIO);
    EMS_CHECK(strstr(err, "SHUNT_CAL reads 0x1000, init wrote 0x0753") != NULL);
}

static void test_ina2xx_bad_config(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    ina228_chip(&f);
    ems_ina2xx_t c;
    char err[200];
    ems_ina2xx_config_t cfg;

    ems_ina2xx_config_default(&cfg); /* shunt and current unset */
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "shunt_ohms") && strstr(err, "max_current_a"));

    cfg = cfg228();
    cfg.conversion_us = 1000;
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "conversion_us 1000") != NULL);
    EMS_CHECK(strstr(err, "50, 84, 150, 280, 540, 1052, 2074, 4120") != NULL);

    cfg = cfg228();
    cfg.chip = EMS_INA226;
    cfg.conversion_us = 1052; /* an INA228 value */
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "140, 204, 332, 588, 1100, 2116, 4156, 8244") != NULL);

    cfg = cfg228();
    cfg.averaging = 32;
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "averaging 32") != NULL);

    cfg = cfg228();
    cfg.max_current_a = 400; /* 400 A x 0.5 mOhm = 200 mV > 163.84 mV */
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "max_current_a 400 x shunt_ohms 0.0005 = 200.00 mV") != NULL);

    cfg = cfg228();
    cfg.chip = EMS_INA226;
    cfg.conversion_us = 1100;
    cfg.max_current_a = 200; /* 100 mV > 81.92 mV */
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "81.92 mV") != NULL);

    cfg = cfg228();
    cfg.averaging = 1024;
    cfg.conversion_us = 4120; /* 12.7 s per cycle: no conversion between reads */
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "averaging 1024 x conversion_us 4120") != NULL);

    cfg = cfg228();
    cfg.address = 0x50;
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "address 0x50") != NULL);

    EMS_CHECK_INT(f.nlog, ==, 0); /* a bad config never touches the bus */
}

static void test_ina228_probe(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ina2xx_t c;
    ina228_ready(&f, &d, &c);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    EMS_CHECK_INT(ems_ina2xx_probe(&c, out), ==, 0);
    fclose(out);
    EMS_CHECK(strstr(buf, "INA228 at /dev/i2c-1 0x40 (init ok)") != NULL);
    EMS_CHECK(strstr(buf, "MANUFACTURER_ID (0x3e) = 0x5449") != NULL);
    EMS_CHECK(strstr(buf, "SHUNT_CAL       (0x02) = 0x0753") != NULL);
    EMS_CHECK(strstr(buf, "VBUS            (0x05) = 0x3c0000") != NULL);
    EMS_CHECK(strstr(buf, "CHARGE          (0x0a) = 0x0000100000") != NULL);
    EMS_CHECK(strstr(buf, "bus voltage   48.0000 V") != NULL);
    EMS_CHECK(strstr(buf, "current       75.0000 A") != NULL);
    free(buf);

    /* After a failed init (wrong ID) probe still prints what it reads. */
    fake_reg_set(d, 0x3E, 0x1234);
    char err[200];
    ems_ina2xx_config_t cfg = cfg228();
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENODEV);
    out = open_memstream(&buf, &len);
    EMS_CHECK_INT(ems_ina2xx_probe(&c, out), ==, EMS_ENODEV);
    fclose(out);
    EMS_CHECK(strstr(buf, "(init failed)") != NULL);
    EMS_CHECK(strstr(buf, "= 0x1234") != NULL);
    EMS_CHECK(strstr(buf, "not an INA2xx") != NULL);
    EMS_CHECK(strstr(buf, "bus voltage   48.0000 V") != NULL);
    free(buf);
}

/* ------------------------------------------------------------ INA226 model */

/* state[0]: 1 while the ADC converts (a conversion completes between any
 * two accesses). MASK/ENABLE bits: CVRF 0x0008 (cleared by reading the
 * register or writing CONFIG), OVF 0x0004. */
static void ina226_after_write(fake_i2c_dev_t *d, uint16_t reg, uint64_t val)
{
    (void)val;
    if (reg != 0x00)
        return;
    uint64_t v = fake_reg_get(d, 0x06) & ~(uint64_t)0x0008;
    if (d->state[0])
        v |= 0x0008;
    fake_reg_set(d, 0x06, v);
}

static void ina226_after_read(fake_i2c_dev_t *d, uint16_t reg)
{
    if (reg != 0x06)
        return;
    uint64_t v = fake_reg_get(d, 0x06) & ~(uint64_t)0x0008;
    if (d->state[0])
        v |= 0x0008;
    fake_reg_set(d, 0x06, v);
}

static void ina226_por(fake_i2c_dev_t *d)
{
    fake_reg_set(d, 0x00, 0x4127);
    fake_reg_set(d, 0x05, 0x0000);
    fake_reg_set(d, 0x06, 0x0000);
}

/* An INA226 at 24.000 V, +10 A, 240 W with cfg226() (Current_LSB
 * 0.000625 A): BUS 24 / 1.25 mV = 19200 = 0x4B00; CURRENT 10 / 0.000625 =
 * 16000 = 0x3E80; POWER 240 / (25 x 0.000625) = 15360 = 0x3C00; SHUNT
 * 10 mV / 2.5 uV = 4000 = 0x0FA0. */
static fake_i2c_dev_t *ina226_chip(fake_i2c_t *f)
{
    fake_i2c_dev_t *d = fake_i2c_add(f, ADDR, 1, NULL);
    d->after_write = ina226_after_write;
    d->after_read = ina226_after_read;
    d->state[0] = 1;
    fake_reg_set(d, 0xFE, 0x5449);
    fake_reg_set(d, 0xFF, 0x2260);
    ina226_por(d);
    fake_reg_set(d, 0x06, 0x0008);
    fake_reg_set(d, 0x01, 0x0FA0);
    fake_reg_set(d, 0x02, 0x4B00);
    fake_reg_set(d, 0x03, 0x3C00);
    fake_reg_set(d, 0x04, 0x3E80);
    return d;
}

static ems_ina2xx_config_t cfg226(void)
{
    ems_ina2xx_config_t cfg;
    ems_ina2xx_config_default(&cfg);
    cfg.chip = EMS_INA226;
    cfg.shunt_ohms = 0.001;
    cfg.max_current_a = 20.48;
    cfg.conversion_us = 1100;
    return cfg;
}

static void test_ina226_init_writes(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina226_chip(&f);
    ems_ina2xx_config_t cfg = cfg226();
    ems_ina2xx_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    /* Current_LSB = 20.48 / 2^15 = 0.000625 A; CAL = 0.00512 / (0.000625 x
     * 0.001) = 8192 = 0x2000. CONFIG = 0x4000 | AVG 3 (64) << 9 | VBUSCT 4
     * (1.1 ms) << 6 | VSHCT 4 << 3 | MODE 7 = 0x4727. */
    static const uint8_t w0[] = {0x00, 0x47, 0x27}, w1[] = {0x05, 0x20, 0x00};
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 2);
    EMS_CHECK(fake_i2c_write_is(&f, 0, w0, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 1, w1, 3));
    EMS_CHECK_INT(f.log[0].w[0], ==, 0xFE);
    EMS_CHECK_INT(f.log[1].w[0], ==, 0xFF);
    EMS_CHECK_NEAR(c.current_lsb, 0.000625, 1e-15);
    EMS_CHECK(!d->bad);
}

static void test_ina226_scaling_and_invert(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina226_chip(&f);
    ems_ina2xx_config_t cfg = cfg226();
    ems_ina2xx_t c;
    char err[200];
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    ems_ina2xx_reading_t r;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.volts, 24.0, 1e-9);
    EMS_CHECK_NEAR(r.amps, 10.0, 1e-9);
    EMS_CHECK_NEAR(r.watts, 240.0, 1e-9);
    EMS_CHECK_NEAR(r.shunt_volts, 0.010, 1e-12);
    EMS_CHECK(!r.has_charge);
    EMS_CHECK(!r.has_temp);

    fake_reg_set(d, 0x04, 0xC180); /* -16000: discharging */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.amps, -10.0, 1e-9);
    EMS_CHECK_NEAR(r.watts, -240.0, 1e-9);

    cfg.invert = true;
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.amps, 10.0, 1e-9);
    EMS_CHECK_NEAR(r.watts, 240.0, 1e-9);
    EMS_CHECK_NEAR(r.volts, 24.0, 1e-9);
}

static void test_ina226_wrong_die_id(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina226_chip(&f);
    fake_reg_set(d, 0xFF, 0x2270); /* an INA260 */
    ems_ina2xx_config_t cfg = cfg226();
    ems_ina2xx_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENODEV);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x40: die ID 0x2270, expected 0x2260 (INA226): is an INA226 "
                       "at this address?");
}

static void test_ina226_stale_range_brownout(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ina226_chip(&f);
    ems_ina2xx_config_t cfg = cfg226();
    ems_ina2xx_t c;
    char err[200];
    d->state[0] = 0; /* the ADC never converts: writing CONFIG cleared CVRF */
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    ems_ina2xx_reading_t r;
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_EAGAIN);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_EAGAIN);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ESTALE);
    d->state[0] = 1;
    fake_reg_set(d, 0x06, 0x0008);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);

    fake_reg_set(d, 0x02, 0x7530); /* 30000 x 1.25 mV = 37.5 V > 36 V */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x02, 0x4B00);
    fake_reg_set(d, 0x04, 0x8000); /* CURRENT at -full scale */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x04, 0x3E80);
    fake_reg_set(d, 0x01, 0x7FFF); /* shunt ADC saturated */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x01, 0x0FA0);
    fake_reg_set(d, 0x06, 0x000C); /* OVF */
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x06, 0x0008);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);

    ina226_por(d); /* brown-out: CAL back to 0 */
    fake_i2c_clear_log(&f);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, EMS_EAGAIN);
    EMS_CHECK_INT(c.reinits, ==, 1);
    EMS_CHECK(strstr(c.err, "CONFIG reads 0x4127, init wrote 0x4727") != NULL);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 2);
    fake_reg_set(d, 0x06, 0x0008);
    EMS_CHECK_INT(ems_ina2xx_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.amps, 10.0, 1e-9);
}

static void test_ina226_cal_overflow_raises_lsb(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    ina226_chip(&f);
    ems_ina2xx_config_t cfg = cfg226();
    cfg.shunt_ohms = 0.0001; /* 20 A x 0.1 mOhm = 2 mV: CAL would be 83886 */
    cfg.max_current_a = 20;
    ems_ina2xx_t c;
    char err[200];
    EMS_CHECK_INT(ems_ina2xx_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    EMS_CHECK_INT(c.reg_cal, ==, 32767);
    EMS_CHECK_NEAR(c.current_lsb, 0.00512 / (32767 * 0.0001), 1e-15);
    static const uint8_t w1[] = {0x05, 0x7F, 0xFF};
    EMS_CHECK(fake_i2c_write_is(&f, 1, w1, 3));
}

int main(void)
{
    EMS_RUN(test_ina228_init_writes);
    EMS_RUN(test_ina228_low_range_calibration);
    EMS_RUN(test_ina228_scaling);
    EMS_RUN(test_ina228_invert);
    EMS_RUN(test_ina228_wrong_ids);
    EMS_RUN(test_ina228_no_answer);
    EMS_RUN(test_ina228_nack_retried_once);
    EMS_RUN(test_ina228_stale);
    EMS_RUN(test_ina228_no_conversion_yet);
    EMS_RUN(test_ina228_range);
    EMS_RUN(test_ina228_brownout_reinit);
    EMS_RUN(test_ina228_brownout_seen_by_alatch);
    EMS_RUN(test_ina228_write_did_not_stick);
    EMS_RUN(test_ina2xx_bad_config);
    EMS_RUN(test_ina228_probe);
    EMS_RUN(test_ina226_init_writes);
    EMS_RUN(test_ina226_scaling_and_invert);
    EMS_RUN(test_ina226_wrong_die_id);
    EMS_RUN(test_ina226_stale_range_brownout);
    EMS_RUN(test_ina226_cal_overflow_raises_lsb);
    EMS_TEST_END();
}
