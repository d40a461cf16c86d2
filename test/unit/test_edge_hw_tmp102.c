/* test_edge_hw_tmp102.c: the TMP102 driver against a register model on the
 * fake bus: configuration bytes, 12- and 13-bit scaling, identity by
 * read-back, retries, re-init after a reset or shutdown, range. */
#include "ems_test.h"

#include "error.h"
#include "fake_i2c.h"
#include "tmp102.h"

#include <string.h>

#define ADDR 0x48

/* CONFIG as a TMP102 holds it: the writable bits as written, R1 R0 = 11
 * and AL = 1 (read-only), OS reads 0. state[0] = 1: a device that ignores
 * writes (not a TMP102). */
static void tmp102_after_write(fake_i2c_dev_t *d, uint16_t reg, uint64_t val)
{
    if (reg != 0x01)
        return;
    if (d->state[0])
        fake_reg_set(d, 0x01, 0x0000);
    else
        fake_reg_set(d, 0x01, (val & 0x1FD0) | 0x6000 | 0x0020);
}

/* A TMP102 at power-on (CONFIG 0x60A0) reading 25.0 C: 400 x 0.0625 =
 * 25.0, 400 = 0x190, left-aligned 0x1900. */
static fake_i2c_dev_t *tmp102_chip(fake_i2c_t *f)
{
    fake_i2c_dev_t *d = fake_i2c_add(f, ADDR, 1, NULL);
    d->after_write = tmp102_after_write;
    fake_reg_set(d, 0x00, 0x1900);
    fake_reg_set(d, 0x01, 0x60A0);
    fake_reg_set(d, 0x02, 0x4B00);
    fake_reg_set(d, 0x03, 0x5000);
    return d;
}

static void tmp102_ready(fake_i2c_t *f, fake_i2c_dev_t **d, ems_tmp102_t *c, bool extended)
{
    fake_i2c_init(f);
    *d = tmp102_chip(f);
    ems_tmp102_config_t cfg;
    ems_tmp102_config_default(&cfg);
    cfg.extended = extended;
    char err[200];
    int rc = ems_tmp102_init(c, &f->bus, &cfg, err, sizeof err);
    if (rc != 0)
        EMS_FAIL("init: %d %s", rc, err);
    fake_i2c_clear_log(f);
}

static void test_tmp102_init_writes(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = tmp102_chip(&f);
    ems_tmp102_config_t cfg;
    ems_tmp102_config_default(&cfg);
    ems_tmp102_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_tmp102_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    /* CONFIG: R1 R0 = 11, CR = 10 (4 Hz), SD = 0, EM = 0 -> 0x6080. */
    static const uint8_t w4[] = {0x01, 0x60, 0x80};
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 1);
    EMS_CHECK(fake_i2c_write_is(&f, 0, w4, 3));
    EMS_CHECK_INT(f.log[1].w[0], ==, 0x01); /* then read back */
    EMS_CHECK_INT(f.log[1].rlen, ==, 2);

    cfg.rate_hz = 1;
    cfg.extended = true; /* CR = 01, EM = 1 -> 0x6050 */
    fake_i2c_clear_log(&f);
    EMS_CHECK_INT(ems_tmp102_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    static const uint8_t w1[] = {0x01, 0x60, 0x50};
    EMS_CHECK(fake_i2c_write_is(&f, 0, w1, 3));
    EMS_CHECK(!d->bad);
}

static void test_tmp102_scaling(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_tmp102_t c;
    tmp102_ready(&f, &d, &c, false);
    double t = -1000;
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, 25.0, 1e-12);
    fake_reg_set(d, 0x00, 0x0010); /* one LSB */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, 0.0625, 1e-12);
    fake_reg_set(d, 0x00, 0xE700); /* -400 (12-bit 0xE70) = -25.0 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, -25.0, 1e-12);
    fake_reg_set(d, 0x00, 0xFFF0); /* -1 = -0.0625 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, -0.0625, 1e-12);
    fake_reg_set(d, 0x00, 0x7FF0); /* 12-bit maximum, 127.9375 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, 127.9375, 1e-12);
}

static void test_tmp102_extended_scaling(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_tmp102_t c;
    tmp102_ready(&f, &d, &c, true);
    double t;
    fake_reg_set(d, 0x00, 0x4B01); /* 2400 << 3 | EM flag: 150.0 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, 150.0, 1e-12);
    fake_reg_set(d, 0x00, 0xE701); /* -800 (13-bit 0x1CE0) << 3 | 1: -50 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, -50.0, 1e-12);
    fake_reg_set(d, 0x00, 0x1900); /* 12-bit format while EM is set */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, EMS_EIO);
}

static void test_tmp102_range_and_garbage(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_tmp102_t c;
    double t = 12345.0;

    tmp102_ready(&f, &d, &c, false);
    fake_reg_set(d, 0x00, 0xC800); /* -896 x 0.0625 = -56 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, EMS_ERANGE);
    EMS_CHECK(strstr(c.err, "-56.0000 C") != NULL);
    fake_reg_set(d, 0x00, 0xC900); /* -55 C: in range */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, -55.0, 1e-12);

    t = 12345.0;
    fake_reg_set(d, 0x00, 0xFFFF); /* a released bus, not -0.0625 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, EMS_EIO);
    EMS_CHECK(strstr(c.err, "0xffff") != NULL);
    EMS_CHECK_NEAR(t, 12345.0, 0);

    tmp102_ready(&f, &d, &c, true);
    fake_reg_set(d, 0x00, 0x4B81); /* 2416 x 0.0625 = 151 C */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, EMS_ERANGE);
    EMS_CHECK_NEAR(t, 12345.0, 0);
}

static void test_tmp102_not_a_tmp102(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = tmp102_chip(&f);
    d->state[0] = 1; /* CONFIG does not hold what is written */
    ems_tmp102_config_t cfg;
    ems_tmp102_config_default(&cfg);
    ems_tmp102_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_tmp102_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENODEV);
    EMS_CHECK(strstr(err, "/dev/i2c-1 0x48: CONFIG reads 0x0000 after writing 0x6080") != NULL);
    EMS_CHECK(strstr(err, "TMP102") != NULL);
    double t = 1;
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, EMS_EINVAL);
}

static void test_tmp102_no_answer_and_retry(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    ems_tmp102_config_t cfg;
    ems_tmp102_config_default(&cfg);
    cfg.address = 0x49;
    ems_tmp102_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_tmp102_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENXIO);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x49: no answer (check the wiring and the address, "
                       "`i2cdetect -y 1`)");

    fake_i2c_dev_t *d;
    tmp102_ready(&f, &d, &c, false);
    double t = 0;
    d->nack = 1;
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_INT(f.bus.retries, ==, 1);
    EMS_CHECK_NEAR(t, 25.0, 1e-12);
    t = 99;
    d->nack = 2;
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, EMS_ENXIO);
    EMS_CHECK_NEAR(t, 99, 0);
    EMS_CHECK_INT(f.bus.retries, ==, 2);
    EMS_CHECK_INT(f.bus.errors, ==, 1);
}

static void test_tmp102_reinit_after_shutdown(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_tmp102_t c;
    tmp102_ready(&f, &d, &c, false);
    double t = 99;
    fake_reg_set(d, 0x01, 0x61A0); /* SD set: the chip stopped converting */
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, EMS_EAGAIN);
    EMS_CHECK_NEAR(t, 99, 0);
    EMS_CHECK_INT(c.reinits, ==, 1);
    EMS_CHECK(strstr(c.err, "shut down") != NULL);
    static const uint8_t w[] = {0x01, 0x60, 0x80};
    EMS_CHECK(fake_i2c_write_is(&f, 0, w, 3));
    EMS_CHECK_INT(ems_tmp102_read(&c, &t), ==, 0);
    EMS_CHECK_NEAR(t, 25.0, 1e-12);
    EMS_CHECK_INT(c.reinits, ==, 1);
}

static void test_tmp102_bad_config(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    tmp102_chip(&f);
    ems_tmp102_config_t cfg;
    ems_tmp102_t c;
    char err[200];
    ems_tmp102_config_default(&cfg);
    cfg.rate_hz = 2;
    EMS_CHECK_INT(ems_tmp102_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "rate_hz 2: must be 1, 4 or 8") != NULL);
    ems_tmp102_config_default(&cfg);
    cfg.address = 0x40;
    EMS_CHECK_INT(ems_tmp102_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "address 0x40") != NULL);
    EMS_CHECK_INT(f.nlog, ==, 0);
}

static void test_tmp102_probe(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_tmp102_t c;
    tmp102_ready(&f, &d, &c, false);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    EMS_CHECK_INT(ems_tmp102_probe(&c, out), ==, 0);
    fclose(out);
    EMS_CHECK(strstr(buf, "TMP102 at /dev/i2c-1 0x48 (init ok)") != NULL);
    EMS_CHECK(strstr(buf, "CONFIG  (0x01) = 0x60a0") != NULL);
    EMS_CHECK(strstr(buf, "TEMP    (0x00) = 0x1900") != NULL);
    EMS_CHECK(strstr(buf, "continuous, 12-bit, 4 Hz") != NULL);
    EMS_CHECK(strstr(buf, "temperature   25.0000 C") != NULL);
    free(buf);
}

int main(void)
{
    EMS_RUN(test_tmp102_init_writes);
    EMS_RUN(test_tmp102_scaling);
    EMS_RUN(test_tmp102_extended_scaling);
    EMS_RUN(test_tmp102_range_and_garbage);
    EMS_RUN(test_tmp102_not_a_tmp102);
    EMS_RUN(test_tmp102_no_answer_and_retry);
    EMS_RUN(test_tmp102_reinit_after_shutdown);
    EMS_RUN(test_tmp102_bad_config);
    EMS_RUN(test_tmp102_probe);
    EMS_TEST_END();
}
