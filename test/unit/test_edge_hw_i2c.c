/* test_edge_hw_i2c.c: the bus layer: one retry on a NACK and none on other
 * errors, the counters, argument checks, the register helpers' bytes, the
 * big-endian helpers, the messages, and the i2c-dev open errors. */
#include "ems_test.h"

#include "error.h"
#include "fake_i2c.h"
#include "i2c.h"

#include <string.h>
#include <sys/stat.h>

static void test_i2c_nack_retried_once(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = fake_i2c_add(&f, 0x40, 1, NULL);
    fake_reg_set(d, 0x05, 0xBEEF);
    d->nack = 1;
    uint16_t v = 0;
    EMS_CHECK_INT(ems_i2c_read_u16(&f.bus, 0x40, 0x05, &v), ==, 0);
    EMS_CHECK_INT(v, ==, 0xBEEF);
    EMS_CHECK_INT(f.bus.transfers, ==, 1);
    EMS_CHECK_INT(f.bus.nacks, ==, 1);
    EMS_CHECK_INT(f.bus.retries, ==, 1);
    EMS_CHECK_INT(f.bus.errors, ==, 0);
    /* The same transaction went out twice. */
    EMS_CHECK_INT(f.nlog, ==, 2);
    EMS_CHECK_INT(f.log[0].rc, ==, EMS_ENXIO);
    EMS_CHECK_INT(f.log[1].rc, ==, 0);
    EMS_CHECK_INT(f.log[1].w[0], ==, 0x05);
    EMS_CHECK_INT(f.log[1].rlen, ==, 2);
}

static void test_i2c_two_nacks_fail(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = fake_i2c_add(&f, 0x40, 1, NULL);
    fake_reg_set(d, 0x05, 0xBEEF);
    d->nack = 2;
    uint16_t v = 0x1111;
    EMS_CHECK_INT(ems_i2c_read_u16(&f.bus, 0x40, 0x05, &v), ==, EMS_ENXIO);
    EMS_CHECK_INT(v, ==, 0x1111);
    EMS_CHECK_INT(f.nlog, ==, 2); /* exactly one retry */
    EMS_CHECK_INT(f.bus.transfers, ==, 1);
    EMS_CHECK_INT(f.bus.nacks, ==, 2);
    EMS_CHECK_INT(f.bus.retries, ==, 1);
    EMS_CHECK_INT(f.bus.errors, ==, 1);

    /* An address nobody answers: the same, every time. */
    EMS_CHECK_INT(ems_i2c_read_u16(&f.bus, 0x41, 0x05, &v), ==, EMS_ENXIO);
    EMS_CHECK_INT(f.nlog, ==, 4);
    EMS_CHECK_INT(f.bus.errors, ==, 2);
}

static void test_i2c_other_errors_not_retried(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = fake_i2c_add(&f, 0x40, 1, NULL);
    fake_reg_set(d, 0x05, 0xBEEF);
    d->fail_io = 1;
    uint8_t b[2] = {0x12, 0x34};
    EMS_CHECK_INT(ems_i2c_write_reg8(&f.bus, 0x40, 0x05, b, 2), ==, EMS_EIO);
    EMS_CHECK_INT(f.nlog, ==, 1);
    EMS_CHECK_INT(f.bus.retries, ==, 0);
    EMS_CHECK_INT(f.bus.errors, ==, 1);
    EMS_CHECK_INT(fake_reg_get(d, 0x05), ==, 0xBEEF);
}

static void test_i2c_bad_arguments(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_add(&f, 0x40, 1, NULL);
    uint8_t b[4] = {0};
    EMS_CHECK_INT(ems_i2c_transfer(&f.bus, 0x40, b, 0, b, 0), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_i2c_transfer(&f.bus, 0x80, b, 1, NULL, 0), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_i2c_transfer(&f.bus, 0x40, NULL, 1, NULL, 0), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_i2c_transfer(&f.bus, 0x40, b, 1, NULL, 2), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_i2c_transfer(&f.bus, 0x40, b, EMS_I2C_MAX_LEN + 1, NULL, 0), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_i2c_transfer(NULL, 0x40, b, 1, NULL, 0), ==, EMS_EINVAL);
    uint8_t big[EMS_I2C_REG_MAX + 1] = {0};
    EMS_CHECK_INT(ems_i2c_write_reg8(&f.bus, 0x40, 0, big, sizeof big), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_i2c_write_reg16(&f.bus, 0x40, 0, big, sizeof big), ==, EMS_EINVAL);
    EMS_CHECK_INT(f.nlog, ==, 0);
    EMS_CHECK_INT(f.bus.transfers, ==, 0);
}

static int width3(uint16_t reg)
{
    return reg >= 0x300 ? 4 : reg >= 0x200 ? 3 : reg >= 0x100 ? 2 : 1;
}

static void test_i2c_register_helpers_bytes(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *a = fake_i2c_add(&f, 0x40, 1, NULL);
    fake_i2c_dev_t *b = fake_i2c_add(&f, 0x38, 2, width3);
    fake_reg_set(a, 0x3E, 0x5449);
    fake_reg_set(b, 0x31C, 0x005B3F60);

    uint8_t buf[4];
    EMS_CHECK_INT(ems_i2c_read_reg8(&f.bus, 0x40, 0x3E, buf, 2), ==, 0);
    EMS_CHECK_INT(f.log[0].wlen, ==, 1);
    EMS_CHECK_INT(f.log[0].w[0], ==, 0x3E);
    EMS_CHECK_INT(f.log[0].rlen, ==, 2);
    EMS_CHECK_INT(buf[0], ==, 0x54);
    EMS_CHECK_INT(buf[1], ==, 0x49);

    EMS_CHECK_INT(ems_i2c_write_u16(&f.bus, 0x40, 0x02, 0x0753), ==, 0);
    static const uint8_t w8[] = {0x02, 0x07, 0x53};
    EMS_CHECK(fake_i2c_write_is(&f, 0, w8, 3));
    uint16_t v;
    EMS_CHECK_INT(ems_i2c_read_u16(&f.bus, 0x40, 0x02, &v), ==, 0);
    EMS_CHECK_INT(v, ==, 0x0753);

    EMS_CHECK_INT(ems_i2c_read_reg16(&f.bus, 0x38, 0x31C, buf, 4), ==, 0);
    EMS_CHECK_INT(f.log[3].wlen, ==, 2);
    EMS_CHECK_INT(f.log[3].w[0], ==, 0x03);
    EMS_CHECK_INT(f.log[3].w[1], ==, 0x1C);
    EMS_CHECK_INT(ems_i2c_be32(buf), ==, 0x005B3F60);

    static const uint8_t data[] = {0x00, 0x30};
    EMS_CHECK_INT(ems_i2c_write_reg16(&f.bus, 0x38, 0x120, data, 2), ==, 0);
    static const uint8_t w16[] = {0x01, 0x20, 0x00, 0x30};
    EMS_CHECK(fake_i2c_write_is(&f, 1, w16, 4));
    EMS_CHECK_INT(fake_reg_get(b, 0x120), ==, 0x0030);
    EMS_CHECK(!a->bad && !b->bad);
}

static void test_i2c_endian_helpers(void)
{
    const uint8_t b[5] = {0x12, 0x34, 0x56, 0x78, 0x9A};
    EMS_CHECK_INT(ems_i2c_be16(b), ==, 0x1234);
    EMS_CHECK_INT(ems_i2c_be24(b), ==, 0x123456);
    EMS_CHECK_INT(ems_i2c_be32(b), ==, 0x12345678);
    EMS_CHECK(ems_i2c_be40(b) == 0x123456789AULL);
    uint8_t p[4];
    ems_i2c_put_be16(p, 0xABCD);
    EMS_CHECK(p[0] == 0xAB && p[1] == 0xCD);
    ems_i2c_put_be24(p, 0xABCDEF);
    EMS_CHECK(p[0] == 0xAB && p[1] == 0xCD && p[2] == 0xEF);
    ems_i2c_put_be32(p, 0x01020304);
    EMS_CHECK(p[0] == 1 && p[1] == 2 && p[2] == 3 && p[3] == 4);

    EMS_CHECK_INT(ems_i2c_sign_extend(0x7FFFF, 20), ==, 524287);
    EMS_CHECK_INT(ems_i2c_sign_extend(0x80000, 20), ==, -524288);
    EMS_CHECK_INT(ems_i2c_sign_extend(0xFFFFF, 20), ==, -1);
    EMS_CHECK_INT(ems_i2c_sign_extend(0xC0000, 20), ==, -262144);
    EMS_CHECK_INT(ems_i2c_sign_extend(0xFFFFF00000ULL, 40), ==, -1048576);
    EMS_CHECK_INT(ems_i2c_sign_extend(0x1FFFFF, 20), ==, -1); /* bits above are ignored */
    EMS_CHECK_INT(ems_i2c_sign_extend(0x8000, 16), ==, -32768);
}

static void test_i2c_messages(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    char err[160];
    EMS_CHECK_INT(ems_i2c_explain(&f.bus, 0x40, EMS_ENXIO, "reading CONFIG", err, sizeof err), ==,
                  EMS_ENXIO);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x40: no answer (check the wiring and the address, "
                       "`i2cdetect -y 1`)");
    ems_i2c_explain(&f.bus, 0x4a, EMS_EIO, "reading CONFIG", err, sizeof err);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x4a: reading CONFIG: Input/output error");
    ems_i2c_explain(&f.bus, 0x4a, EMS_ETIMEDOUT, NULL, err, sizeof err);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x4a: Connection timed out");

    snprintf(f.bus.name, sizeof f.bus.name, "/dev/i2c-22");
    EMS_CHECK_INT(ems_i2c_busno(&f.bus), ==, 22);
    snprintf(f.bus.name, sizeof f.bus.name, "emulated");
    EMS_CHECK_INT(ems_i2c_busno(&f.bus), ==, -1);
    ems_i2c_explain(&f.bus, 0x60, EMS_ENXIO, NULL, err, sizeof err);
    EMS_CHECK_STR(err, "emulated 0x60: no answer (check the wiring and the address, `i2cdetect`)");
    EMS_CHECK_INT(ems_i2c_explain(&f.bus, 0x60, EMS_EIO, NULL, NULL, 0), ==, EMS_EIO);
}

static void test_i2c_dev_open_errors(void)
{
    struct stat st;
    if (stat("/dev/i2c-99", &st) == 0)
        EMS_FAIL("/dev/i2c-99 exists here: this test needs it absent");
    ems_i2c_bus_t *bus = (ems_i2c_bus_t *)&bus; /* must be reset to NULL */
    char err[200] = "";
    EMS_CHECK_INT(ems_i2c_dev_open(99, &bus, err, sizeof err), ==, EMS_ENOENT);
    EMS_CHECK(bus == NULL);
    EMS_CHECK_STR(err, "/dev/i2c-99: No such file or directory: enable I2C (raspi-config, "
                       "dtparam=i2c_arm=on)");
    EMS_CHECK_INT(ems_i2c_dev_open(-1, &bus, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "-1") != NULL);
    EMS_CHECK_INT(ems_i2c_dev_open(99, &bus, NULL, 0), ==, EMS_ENOENT); /* no buffer is fine */
    ems_i2c_close(NULL);
}

static int closed;

static void count_close(ems_i2c_bus_t *bus)
{
    (void)bus;
    closed++;
}

static void test_i2c_close_calls_op(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    ems_i2c_ops_t ops = fake_i2c_ops;
    ops.close = count_close;
    f.bus.ops = &ops;
    ems_i2c_close(&f.bus);
    EMS_CHECK_INT(closed, ==, 1);
}

int main(void)
{
    EMS_RUN(test_i2c_nack_retried_once);
    EMS_RUN(test_i2c_two_nacks_fail);
    EMS_RUN(test_i2c_other_errors_not_retried);
    EMS_RUN(test_i2c_bad_arguments);
    EMS_RUN(test_i2c_register_helpers_bytes);
    EMS_RUN(test_i2c_endian_helpers);
    EMS_RUN(test_i2c_messages);
    EMS_RUN(test_i2c_dev_open_errors);
    EMS_RUN(test_i2c_close_calls_op);
    EMS_TEST_END();
}
