/* test_edge_hw_ade7953.c: the ADE7953 driver against a register model on the
 * fake bus (16-bit register addresses, widths by address range): init
 * bytes, identity, scaling, signs, the stuck rule, range, reset, retries. */
#include "ems_test.h"

#include "ade7953.h"
#include "error.h"
#include "fake_i2c.h"

#include <string.h>

#define ADDR 0x38

static int ade_width(uint16_t reg)
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

/* Calibration of the tests: 1/26000 V, 1e-5 A and 1/154 W per LSB. The meter
 * reads 230 V (5980000), 10 A (1000000), 2300 W import (354200), 50 Hz
 * (PERIOD 4474: 223750 / 4475 = 50). */
static fake_i2c_dev_t *ade_chip(fake_i2c_t *f)
{
    fake_i2c_dev_t *d = fake_i2c_add(f, ADDR, 2, ade_width);
    fake_reg_set(d, 0x303, 0x0000E419); /* AP_NOLOAD reset value */
    fake_reg_set(d, 0x102, 0x8004);     /* CONFIG reset value */
    fake_reg_set(d, 0x702, 0x02);       /* VERSION */
    fake_reg_set(d, 0x31C, 5980000);
    fake_reg_set(d, 0x31A, 1000000);
    fake_reg_set(d, 0x312, 354200);
    fake_reg_set(d, 0x10E, 4474);
    return d;
}

static ems_ade7953_config_t cfg_ade(void)
{
    ems_ade7953_config_t cfg;
    ems_ade7953_config_default(&cfg);
    cfg.v_per_lsb = 1.0 / 26000;
    cfg.a_per_lsb = 1e-5;
    cfg.w_per_lsb = 1.0 / 154;
    return cfg;
}

static void ade_ready(fake_i2c_t *f, fake_i2c_dev_t **d, ems_ade7953_t *c, bool invert)
{
    fake_i2c_init(f);
    *d = ade_chip(f);
    ems_ade7953_config_t cfg = cfg_ade();
    cfg.invert = invert;
    char err[200];
    int rc = ems_ade7953_init(c, &f->bus, &cfg, err, sizeof err);
    if (rc != 0)
        EMS_FAIL("init: %d %s", rc, err);
    fake_i2c_clear_log(f);
}

static void test_ade7953_init_writes(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ade_chip(&f);
    ems_ade7953_config_t cfg = cfg_ade();
    ems_ade7953_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ade7953_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    /* Identity first: AP_NOLOAD as 32 bit, address 0x0303 MSB first. */
    EMS_CHECK_INT(f.log[0].wlen, ==, 2);
    EMS_CHECK_INT(f.log[0].w[0], ==, 0x03);
    EMS_CHECK_INT(f.log[0].w[1], ==, 0x03);
    EMS_CHECK_INT(f.log[0].rlen, ==, 4);
    /* CONFIG 0x102 = 0x0004 (COMM_LOCK cleared, HPF on); unlock 0x0FE = 0xAD;
     * then 0x120 = 0x0030. */
    static const uint8_t w0[] = {0x01, 0x02, 0x00, 0x04}, w1[] = {0x00, 0xFE, 0xAD},
                         w2[] = {0x01, 0x20, 0x00, 0x30};
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 3);
    EMS_CHECK(fake_i2c_write_is(&f, 0, w0, 4));
    EMS_CHECK(fake_i2c_write_is(&f, 1, w1, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 2, w2, 4));
    EMS_CHECK_INT(fake_reg_get(d, 0x120), ==, 0x0030);
    EMS_CHECK(!d->bad);
}

static void test_ade7953_scaling_and_signs(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ade7953_t c;
    ade_ready(&f, &d, &c, false);
    ems_ade7953_reading_t r;
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.volts, 230.0, 1e-9);
    EMS_CHECK_NEAR(r.amps, 10.0, 1e-9);
    EMS_CHECK_NEAR(r.watts, 2300.0, 1e-9);
    EMS_CHECK_NEAR(r.hertz, 50.0, 1e-12);
    /* Reads: CONFIG, VRMS, IRMSA, AWATT, PERIOD with 16-bit addresses. */
    EMS_CHECK_INT(f.nlog, ==, 5);
    EMS_CHECK_INT(f.log[1].w[0] << 8 | f.log[1].w[1], ==, 0x31C);
    EMS_CHECK_INT(f.log[1].rlen, ==, 4);
    EMS_CHECK_INT(f.log[4].w[0] << 8 | f.log[4].w[1], ==, 0x10E);
    EMS_CHECK_INT(f.log[4].rlen, ==, 2);

    fake_reg_set(d, 0x312, (uint32_t)-354200); /* 0xFFFA9868: exporting */
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.watts, -2300.0, 1e-9);

    ade_ready(&f, &d, &c, true); /* the CT points the other way */
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.watts, -2300.0, 1e-9);
    EMS_CHECK_NEAR(r.volts, 230.0, 1e-9);
    fake_reg_set(d, 0x312, (uint32_t)-354200);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.watts, 2300.0, 1e-9);
}

static void test_ade7953_identity(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = ade_chip(&f);
    fake_reg_set(d, 0x303, 0x00123456);
    ems_ade7953_config_t cfg = cfg_ade();
    ems_ade7953_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_ade7953_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENODEV);
    EMS_CHECK(strstr(err, "/dev/i2c-1 0x38: AP_NOLOAD (0x303) reads 0x00123456, expected") != NULL);
    EMS_CHECK(strstr(err, "0x0000e419") != NULL);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 0);

    fake_i2c_init(&f); /* nothing on the bus */
    EMS_CHECK_INT(ems_ade7953_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENXIO);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x38: no answer (check the wiring and the address, "
                       "`i2cdetect -y 1`)");
}

static void test_ade7953_stale(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ade7953_t c;
    ade_ready(&f, &d, &c, false);
    ems_ade7953_reading_t r;
    for (int i = 0; i < 4; i++)
        EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    memset(&r, 0x5A, sizeof r);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ESTALE); /* the 5th identical */
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);
    EMS_CHECK(strstr(c.err, "5 consecutive") != NULL);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ESTALE);

    fake_reg_set(d, 0x31A, 1000001); /* one LSB of noise: alive */
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    /* Only all three identical count: a steady voltage alone is no fault. */
    for (int i = 0; i < 8; i++) {
        fake_reg_set(d, 0x312, (uint32_t)(354200 + (i & 1)));
        EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    }
}

static void test_ade7953_range(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ade7953_t c;
    ade_ready(&f, &d, &c, false);
    ems_ade7953_reading_t r;
    memset(&r, 0x5A, sizeof r);
    fake_reg_set(d, 0x31C, 9032008); /* one above a full-scale sine */
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ERANGE);
    EMS_CHECK(strstr(c.err, "VRMS beyond full scale") != NULL);
    fake_reg_set(d, 0x31C, 0x80000000); /* "negative" RMS */
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x31C, 9032007); /* full scale itself is a reading */
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    fake_reg_set(d, 0x31C, 5980000);

    memset(&r, 0x5A, sizeof r);
    fake_reg_set(d, 0x31A, 9100000);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ERANGE);
    EMS_CHECK(strstr(c.err, "IRMSA") != NULL);
    fake_reg_set(d, 0x31A, 1000000);
    fake_reg_set(d, 0x312, 4862402);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ERANGE);
    fake_reg_set(d, 0x312, (uint32_t)-4862402);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ERANGE);
    EMS_CHECK(strstr(c.err, "AWATT beyond full scale") != NULL);
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);
    fake_reg_set(d, 0x312, (uint32_t)-4862401);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
}

static void test_ade7953_reset_reinit(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ade7953_t c;
    ade_ready(&f, &d, &c, false);
    ems_ade7953_reading_t r;
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    fake_reg_set(d, 0x102, 0x8004); /* the chip restarted */
    fake_reg_set(d, 0x120, 0x0000);
    fake_i2c_clear_log(&f);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_EAGAIN);
    EMS_CHECK_INT(c.reinits, ==, 1);
    EMS_CHECK(strstr(c.err, "CONFIG reads 0x8004") != NULL);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 3);
    EMS_CHECK_INT(fake_reg_get(d, 0x120), ==, 0x0030);
    EMS_CHECK_INT(fake_reg_get(d, 0x102), ==, 0x0004);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    EMS_CHECK_NEAR(r.volts, 230.0, 1e-9);
}

static void test_ade7953_nack_retried_once(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ade7953_t c;
    ade_ready(&f, &d, &c, false);
    ems_ade7953_reading_t r;
    d->nack = 1;
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, 0);
    EMS_CHECK_INT(f.bus.retries, ==, 1);
    d->nack = 2;
    memset(&r, 0x5A, sizeof r);
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_ENXIO);
    EMS_CHECK_INT(((unsigned char *)&r)[0], ==, 0x5A);
    d->fail_io = 1; /* other errors are not retried */
    EMS_CHECK_INT(ems_ade7953_read(&c, &r), ==, EMS_EIO);
    EMS_CHECK_INT(f.bus.retries, ==, 2);
    EMS_CHECK(strstr(c.err, "reading CONFIG") != NULL);
}

static void test_ade7953_bad_config(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    ade_chip(&f);
    ems_ade7953_t c;
    char err[200];
    ems_ade7953_config_t cfg;
    ems_ade7953_config_default(&cfg);
    EMS_CHECK_INT(ems_ade7953_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "v_per_lsb") && strstr(err, "a_per_lsb") && strstr(err, "w_per_lsb"));
    cfg = cfg_ade();
    cfg.address = 0x39;
    EMS_CHECK_INT(ems_ade7953_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "fixed at 0x38") != NULL);
    EMS_CHECK_INT(f.nlog, ==, 0);
}

static void test_ade7953_probe(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_ade7953_t c;
    ade_ready(&f, &d, &c, false);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    EMS_CHECK_INT(ems_ade7953_probe(&c, out), ==, 0);
    fclose(out);
    EMS_CHECK(strstr(buf, "ADE7953 at /dev/i2c-1 0x38 (init ok)") != NULL);
    EMS_CHECK(strstr(buf, "AP_NOLOAD (0x303) = 0x0000e419") != NULL);
    EMS_CHECK(strstr(buf, "VERSION   (0x702) = 0x02") != NULL);
    EMS_CHECK(strstr(buf, "VRMS      (0x31c) = 0x005b3f60") != NULL);
    EMS_CHECK(strstr(buf, "voltage       230.00 V") != NULL);
    EMS_CHECK(strstr(buf, "power         2300.0 W") != NULL);
    EMS_CHECK(strstr(buf, "frequency     50.000 Hz") != NULL);
    free(buf);
}

int main(void)
{
    EMS_RUN(test_ade7953_init_writes);
    EMS_RUN(test_ade7953_scaling_and_signs);
    EMS_RUN(test_ade7953_identity);
    EMS_RUN(test_ade7953_stale);
    EMS_RUN(test_ade7953_range);
    EMS_RUN(test_ade7953_reset_reinit);
    EMS_RUN(test_ade7953_nack_retried_once);
    EMS_RUN(test_ade7953_bad_config);
    EMS_RUN(test_ade7953_probe);
    EMS_TEST_END();
}
