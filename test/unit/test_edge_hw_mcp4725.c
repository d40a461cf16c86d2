/* test_edge_hw_mcp4725.c: the MCP4725 driver against a model of the chip on
 * the fake bus: fast-write bytes, read-back verification, the EEPROM
 * power-on value written only when needed, volts, refusals, retries. */
#include "ems_test.h"

#include "error.h"
#include "fake_i2c.h"
#include "mcp4725.h"

#include <math.h>
#include <string.h>

#define ADDR 0x60

/* The model's state in d->state[]: */
enum {
    DAC,       /* DAC register code */
    DAC_PD,    /* DAC power-down bits */
    EE,        /* EEPROM code */
    EE_PD,     /* EEPROM power-down bits */
    EE_TIME,   /* reads an EEPROM write stays busy for (-1: forever) */
    BUSY,      /* reads left until the EEPROM write in progress completes */
    FROZEN,    /* 1: writes do not reach the DAC register */
    EE_WRITES, /* DAC+EEPROM commands received */
    PENDING,   /* the EEPROM value being written: code | pd << 12 */
};

static int mcp_raw(fake_i2c_dev_t *d, const uint8_t *w, size_t wlen, uint8_t *r, size_t rlen)
{
    uint64_t *s = d->state;
    if (wlen == 2 && rlen == 0 && (w[0] & 0xC0) == 0) { /* fast write */
        if (!s[FROZEN]) {
            s[DAC] = (uint64_t)(w[0] & 0x0F) << 8 | w[1];
            s[DAC_PD] = (w[0] >> 4) & 3;
        }
        return 0;
    }
    if (wlen == 3 && rlen == 0 && ((w[0] >> 5) == 2 || (w[0] >> 5) == 3)) {
        unsigned code = (unsigned)w[1] << 4 | w[2] >> 4, pd = (w[0] >> 1) & 3;
        if (!s[FROZEN]) {
            s[DAC] = code;
            s[DAC_PD] = pd;
        }
        if ((w[0] >> 5) == 3) {
            s[EE_WRITES]++;
            s[PENDING] = code | pd << 12;
            s[BUSY] = s[EE_TIME];
            if (s[BUSY] == 0) {
                s[EE] = code;
                s[EE_PD] = pd;
            }
        }
        return 0;
    }
    if (wlen == 0 && rlen == 5) {
        bool busy = s[BUSY] != 0;
        r[0] = (uint8_t)((busy ? 0 : 0x80) | 0x40 | s[DAC_PD] << 1);
        r[1] = (uint8_t)(s[DAC] >> 4);
        r[2] = (uint8_t)((s[DAC] & 0x0F) << 4);
        r[3] = (uint8_t)(s[EE_PD] << 5 | s[EE] >> 8);
        r[4] = (uint8_t)(s[EE] & 0xFF);
        if (busy && s[BUSY] != (uint64_t)-1 && --s[BUSY] == 0) { /* the write completes */
            s[EE] = s[PENDING] & 0xFFF;
            s[EE_PD] = s[PENDING] >> 12;
        }
        return 0;
    }
    d->bad = true;
    return EMS_EIO;
}

/* A DAC whose EEPROM holds ee / ee_pd and whose output sits there too. */
static fake_i2c_dev_t *mcp_chip(fake_i2c_t *f, unsigned ee, unsigned ee_pd)
{
    fake_i2c_dev_t *d = fake_i2c_add(f, ADDR, 0, NULL);
    d->raw = mcp_raw;
    d->state[EE] = d->state[DAC] = ee;
    d->state[EE_PD] = d->state[DAC_PD] = ee_pd;
    return d;
}

static void mcp_ready(fake_i2c_t *f, fake_i2c_dev_t **d, ems_mcp4725_t *c, double vref)
{
    fake_i2c_init(f);
    *d = mcp_chip(f, 0, 0);
    ems_mcp4725_config_t cfg;
    ems_mcp4725_config_default(&cfg);
    cfg.vref_v = vref;
    char err[200];
    int rc = ems_mcp4725_init(c, &f->bus, &cfg, err, sizeof err);
    if (rc != 0)
        EMS_FAIL("init: %d %s", rc, err);
    fake_i2c_clear_log(f);
}

static void test_mcp4725_init_eeprom_already_zero(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = mcp_chip(&f, 0, 0);
    d->state[DAC] = 1234; /* a previous process left an output */
    ems_mcp4725_config_t cfg;
    ems_mcp4725_config_default(&cfg);
    ems_mcp4725_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    /* read 5, fast write of code 0, read 5: no EEPROM command. */
    static const uint8_t zero[] = {0x00, 0x00};
    EMS_CHECK_INT(f.nlog, ==, 3);
    EMS_CHECK_INT(f.log[0].rlen, ==, 5);
    EMS_CHECK_INT(f.log[0].wlen, ==, 0);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 1);
    EMS_CHECK(fake_i2c_write_is(&f, 0, zero, 2));
    EMS_CHECK_INT(d->state[EE_WRITES], ==, 0);
    EMS_CHECK_INT(d->state[DAC], ==, 0);
    EMS_CHECK(!c.eeprom_written);
    EMS_CHECK(!d->bad);
}

static void test_mcp4725_init_stores_zero_once(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = mcp_chip(&f, 2048, 0); /* powers up at half scale */
    d->state[EE_TIME] = 3;                     /* the EEPROM write takes 3 polls */
    ems_mcp4725_config_t cfg;
    ems_mcp4725_config_default(&cfg);
    ems_mcp4725_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    static const uint8_t store[] = {0x60, 0x00, 0x00}, zero[] = {0x00, 0x00};
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 2);
    EMS_CHECK(fake_i2c_write_is(&f, 0, store, 3));
    EMS_CHECK(fake_i2c_write_is(&f, 1, zero, 2));
    EMS_CHECK_INT(d->state[EE_WRITES], ==, 1);
    EMS_CHECK_INT(d->state[EE], ==, 0);
    EMS_CHECK(c.eeprom_written);
    /* read, store, 3 polls busy + 1 ready, fast write, read-back */
    EMS_CHECK_INT(f.nlog, ==, 1 + 1 + 4 + 1 + 1);

    /* A restart finds code 0 stored: the EEPROM is not written again. */
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    EMS_CHECK_INT(d->state[EE_WRITES], ==, 1);
    EMS_CHECK(!c.eeprom_written);
}

static void test_mcp4725_init_power_down_eeprom(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = mcp_chip(&f, 0, 1); /* code 0 but power-down 1k */
    ems_mcp4725_config_t cfg;
    ems_mcp4725_config_default(&cfg);
    ems_mcp4725_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, 0);
    EMS_CHECK_INT(d->state[EE_WRITES], ==, 1);
    EMS_CHECK_INT(d->state[EE_PD], ==, 0);
    EMS_CHECK_INT(d->state[DAC_PD], ==, 0);
}

static void test_mcp4725_eeprom_timeout(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    fake_i2c_dev_t *d = mcp_chip(&f, 100, 0);
    d->state[EE_TIME] = (uint64_t)-1; /* never ready */
    ems_mcp4725_config_t cfg;
    ems_mcp4725_config_default(&cfg);
    ems_mcp4725_t c;
    char err[200] = "";
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ETIMEDOUT);
    EMS_CHECK(strstr(err, "/dev/i2c-1 0x60: the EEPROM write did not finish") != NULL);
    EMS_CHECK(!c.ready);
    EMS_CHECK_INT(f.nlog, ==, 1 + 1 + 50); /* bounded polling */
}

static void test_mcp4725_set_code_bytes(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_mcp4725_t c;
    mcp_ready(&f, &d, &c, 3.3);
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 0x123), ==, 0);
    static const uint8_t w0[] = {0x01, 0x23}, w1[] = {0x0F, 0xFF};
    EMS_CHECK(fake_i2c_write_is(&f, 0, w0, 2));
    EMS_CHECK_INT(f.nlog, ==, 2); /* write, then the 5-byte read-back */
    EMS_CHECK_INT(f.log[1].rlen, ==, 5);
    EMS_CHECK_INT(c.code, ==, 0x123);
    EMS_CHECK_INT(d->state[DAC], ==, 0x123);
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 4095), ==, 0);
    EMS_CHECK(fake_i2c_write_is(&f, 1, w1, 2));
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 4096), ==, EMS_EINVAL);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, 2);
    EMS_CHECK_INT(c.code, ==, 4095);
    EMS_CHECK_INT(d->state[EE_WRITES], ==, 0); /* setpoints never touch the EEPROM */
}

static void test_mcp4725_set_volts(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_mcp4725_t c;
    mcp_ready(&f, &d, &c, 5.0);
    EMS_CHECK_INT(ems_mcp4725_set_volts(&c, 2.5), ==, 0); /* 2.5 / 5 x 4096 = 2048 */
    static const uint8_t half[] = {0x08, 0x00};
    EMS_CHECK(fake_i2c_write_is(&f, 0, half, 2));
    EMS_CHECK_INT(c.code, ==, 2048);
    EMS_CHECK_INT(ems_mcp4725_set_volts(&c, 1.0), ==, 0); /* 819.2 -> 819 */
    EMS_CHECK_INT(c.code, ==, 819);
    EMS_CHECK_INT(ems_mcp4725_set_volts(&c, 5.0), ==, 0); /* the top code */
    EMS_CHECK_INT(c.code, ==, 4095);
    EMS_CHECK_INT(ems_mcp4725_set_volts(&c, 0.0), ==, 0);
    EMS_CHECK_INT(c.code, ==, 0);

    size_t writes = fake_i2c_count_writes(&f);
    EMS_CHECK_INT(ems_mcp4725_set_volts(&c, 5.001), ==, EMS_EINVAL);
    EMS_CHECK(strstr(c.err, "outside 0..5 V") != NULL);
    EMS_CHECK_INT(ems_mcp4725_set_volts(&c, -0.001), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_mcp4725_set_volts(&c, NAN), ==, EMS_EINVAL);
    EMS_CHECK_INT(fake_i2c_count_writes(&f), ==, writes); /* nothing written, no clamping */
    EMS_CHECK_INT(d->state[DAC], ==, 0);
}

static void test_mcp4725_readback_mismatch(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_mcp4725_t c;
    mcp_ready(&f, &d, &c, 3.3);
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 1000), ==, 0);
    d->state[FROZEN] = 1; /* the write is lost */
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 2000), ==, EMS_EIO);
    EMS_CHECK(strstr(c.err, "DAC reads code 1000 (power-down 0) after writing 2000") != NULL);
    EMS_CHECK_INT(c.code, ==, 1000);
    EMS_CHECK_INT(ems_mcp4725_safe(&c), ==, EMS_EIO);

    d->state[FROZEN] = 0;
    d->state[EE] = 300; /* something rewrote the power-on value */
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 2000), ==, EMS_EIO);
    EMS_CHECK(strstr(c.err, "EEPROM power-on value reads code 300") != NULL);
}

static void test_mcp4725_safe(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_mcp4725_t c;
    mcp_ready(&f, &d, &c, 3.3);
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 3000), ==, 0);
    fake_i2c_clear_log(&f);
    EMS_CHECK_INT(ems_mcp4725_safe(&c), ==, 0);
    static const uint8_t zero[] = {0x00, 0x00};
    EMS_CHECK(fake_i2c_write_is(&f, 0, zero, 2));
    EMS_CHECK_INT(d->state[DAC], ==, 0);
    EMS_CHECK_INT(c.code, ==, 0);

    /* After a failed init (EEPROM timeout) safe still drives code 0. */
    fake_i2c_init(&f);
    d = mcp_chip(&f, 100, 0);
    d->state[EE_TIME] = (uint64_t)-1;
    ems_mcp4725_config_t cfg;
    ems_mcp4725_config_default(&cfg);
    char err[200];
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ETIMEDOUT);
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 10), ==, EMS_EINVAL);
    d->state[DAC] = 555;
    /* EIO, because the EEPROM never took 0; but the output did. */
    EMS_CHECK_INT(ems_mcp4725_safe(&c), ==, EMS_EIO);
    EMS_CHECK_INT(d->state[DAC], ==, 0);
}

static void test_mcp4725_nack_and_no_answer(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_mcp4725_t c;
    mcp_ready(&f, &d, &c, 3.3);
    uint64_t retries = f.bus.retries;
    d->nack = 1;
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 77), ==, 0);
    EMS_CHECK_INT(f.bus.retries - retries, ==, 1);
    d->nack = 2;
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 78), ==, EMS_ENXIO);
    EMS_CHECK_INT(c.code, ==, 77);

    fake_i2c_init(&f); /* nothing at 0x61 */
    ems_mcp4725_config_t cfg;
    ems_mcp4725_config_default(&cfg);
    cfg.address = 0x61;
    char err[200] = "";
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_ENXIO);
    EMS_CHECK_STR(err, "/dev/i2c-1 0x61: no answer (check the wiring and the address, "
                       "`i2cdetect -y 1`)");
}

static void test_mcp4725_bad_config(void)
{
    fake_i2c_t f;
    fake_i2c_init(&f);
    mcp_chip(&f, 0, 0);
    ems_mcp4725_config_t cfg;
    ems_mcp4725_t c;
    char err[200];
    ems_mcp4725_config_default(&cfg);
    cfg.address = 0x58;
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "address 0x58") != NULL);
    EMS_CHECK_INT(ems_mcp4725_safe(&c), ==, EMS_EINVAL);
    ems_mcp4725_config_default(&cfg);
    cfg.vref_v = 12;
    EMS_CHECK_INT(ems_mcp4725_init(&c, &f.bus, &cfg, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(strstr(err, "vref_v 12") != NULL);
    EMS_CHECK_INT(f.nlog, ==, 0);
}

static void test_mcp4725_probe(void)
{
    fake_i2c_t f;
    fake_i2c_dev_t *d;
    ems_mcp4725_t c;
    mcp_ready(&f, &d, &c, 5.0);
    EMS_CHECK_INT(ems_mcp4725_set_code(&c, 2048), ==, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    EMS_CHECK_INT(ems_mcp4725_probe(&c, out), ==, 0);
    fclose(out);
    EMS_CHECK(strstr(buf, "MCP4725 at /dev/i2c-1 0x60 (init ok)") != NULL);
    EMS_CHECK(strstr(buf, "read-back     c0 80 00 00 00") != NULL);
    EMS_CHECK(strstr(buf, "DAC           code 2048 = 2.500 V") != NULL);
    EMS_CHECK(strstr(buf, "EEPROM        code 0, normal: power-on output 0.000 V") != NULL);
    free(buf);
}

int main(void)
{
    EMS_RUN(test_mcp4725_init_eeprom_already_zero);
    EMS_RUN(test_mcp4725_init_stores_zero_once);
    EMS_RUN(test_mcp4725_init_power_down_eeprom);
    EMS_RUN(test_mcp4725_eeprom_timeout);
    EMS_RUN(test_mcp4725_set_code_bytes);
    EMS_RUN(test_mcp4725_set_volts);
    EMS_RUN(test_mcp4725_readback_mismatch);
    EMS_RUN(test_mcp4725_safe);
    EMS_RUN(test_mcp4725_nack_and_no_answer);
    EMS_RUN(test_mcp4725_bad_config);
    EMS_RUN(test_mcp4725_probe);
    EMS_TEST_END();
}
