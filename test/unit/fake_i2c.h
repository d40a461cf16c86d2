/* fake_i2c.h: an in-memory I2C bus for the chip drivers' unit tests.
 *
 * A fake_i2c_t is an ems_i2c_bus_t (its first member) with up to
 * FAKE_I2C_DEVS devices on it. It records every transfer (address, bytes
 * written, read length, result) so a test can assert the exact bytes a
 * driver sends, and it answers from per-address models:
 *
 *   - register devices (ptr_bytes 1 or 2): a register file with an 8- or
 *     16-bit pointer, big-endian data, the width of each register from a
 *     width() callback; hooks after a register write (to model read-only or
 *     self-clearing bits) and after a register read (clear-on-read flags);
 *   - raw devices (ptr_bytes 0, e.g. the MCP4725): a raw() callback sees
 *     every transfer as it is.
 *
 * Faults: `nack` NACKs that many transfers (-1: the address never answers),
 * `fail_io` answers EMS_EIO to that many. A register read of the wrong
 * length, or of a register the test never defined, answers EMS_EIO and is
 * flagged in `bad`, so a driver bug shows up as a failed check, not as a
 * silently wrong value.
 *
 * Header-only and static: each test file includes it once.
 */
#ifndef FAKE_I2C_H
#define FAKE_I2C_H

#include "error.h"
#include "i2c.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define FAKE_I2C_DEVS 4
#define FAKE_I2C_REGS 64
#define FAKE_I2C_LOG 1024
#define FAKE_I2C_WMAX 16

/* Static, and quiet when a test file does not use every helper. */
#define FAKE_I2C_FN static __attribute__((unused))

typedef struct fake_i2c_dev fake_i2c_dev_t;

typedef struct {
    uint16_t addr;
    uint8_t w[FAKE_I2C_WMAX];
    size_t wlen, rlen;
    int rc;
} fake_i2c_xfer_t;

struct fake_i2c_dev {
    uint16_t addr;
    int ptr_bytes;              /* 1 or 2: register device; 0: raw() answers */
    int (*width)(uint16_t reg); /* bytes of a register; NULL: 2 */
    struct {
        uint16_t reg;
        uint64_t val;
    } regs[FAKE_I2C_REGS];
    size_t nregs;
    /* Called after the register file took a write; may change registers. */
    void (*after_write)(fake_i2c_dev_t *d, uint16_t reg, uint64_t val);
    /* Called after a register was read (clear-on-read flags, new samples). */
    void (*after_read)(fake_i2c_dev_t *d, uint16_t reg);
    int (*raw)(fake_i2c_dev_t *d, const uint8_t *w, size_t wlen, uint8_t *r, size_t rlen);
    int nack;          /* NACK the next n transfers; -1: never answer */
    int fail_io;       /* answer EMS_EIO to the next n transfers */
    bool bad;          /* a malformed access happened (see above) */
    uint64_t state[8]; /* scratch for the test's model */
};

typedef struct {
    ems_i2c_bus_t bus; /* first: the driver's bus pointer is this */
    fake_i2c_dev_t devs[FAKE_I2C_DEVS];
    int ndevs;
    fake_i2c_xfer_t log[FAKE_I2C_LOG];
    size_t nlog;
} fake_i2c_t;

FAKE_I2C_FN fake_i2c_dev_t *fake_i2c_find(fake_i2c_t *f, uint16_t addr)
{
    for (int i = 0; i < f->ndevs; i++)
        if (f->devs[i].addr == addr)
            return &f->devs[i];
    return NULL;
}

FAKE_I2C_FN int fake_i2c_width(const fake_i2c_dev_t *d, uint16_t reg)
{
    return d->width ? d->width(reg) : 2;
}

FAKE_I2C_FN int fake_reg_index(const fake_i2c_dev_t *d, uint16_t reg)
{
    for (size_t i = 0; i < d->nregs; i++)
        if (d->regs[i].reg == reg)
            return (int)i;
    return -1;
}

/* Defines or changes register reg. */
FAKE_I2C_FN void fake_reg_set(fake_i2c_dev_t *d, uint16_t reg, uint64_t val)
{
    int i = fake_reg_index(d, reg);
    if (i < 0) {
        if (d->nregs == FAKE_I2C_REGS) {
            fprintf(stderr, "fake_i2c: too many registers\n");
            return;
        }
        i = (int)d->nregs++;
        d->regs[i].reg = reg;
    }
    d->regs[i].val = val;
}

/* The value of register reg; 0xDEADBEEF when the test never defined it. */
FAKE_I2C_FN uint64_t fake_reg_get(const fake_i2c_dev_t *d, uint16_t reg)
{
    int i = fake_reg_index(d, reg);
    return i < 0 ? 0xDEADBEEFu : d->regs[i].val;
}

FAKE_I2C_FN int fake_i2c__regdev(fake_i2c_dev_t *d, const uint8_t *w, size_t wlen, uint8_t *r,
                                 size_t rlen)
{
    size_t pb = (size_t)d->ptr_bytes;
    if (wlen < pb) {
        d->bad = true;
        return EMS_EIO;
    }
    uint16_t reg = pb == 2 ? (uint16_t)(w[0] << 8 | w[1]) : w[0];
    int width = fake_i2c_width(d, reg);
    if (wlen > pb) {
        if (wlen - pb != (size_t)width || rlen) {
            d->bad = true;
            return EMS_EIO;
        }
        uint64_t v = 0;
        for (size_t i = pb; i < wlen; i++)
            v = v << 8 | w[i];
        fake_reg_set(d, reg, v);
        if (d->after_write)
            d->after_write(d, reg, v);
        return 0;
    }
    if (!rlen)
        return 0; /* a pointer write alone */
    if (rlen != (size_t)width || fake_reg_index(d, reg) < 0) {
        d->bad = true;
        return EMS_EIO;
    }
    uint64_t v = fake_reg_get(d, reg);
    for (size_t i = 0; i < rlen; i++)
        r[i] = (uint8_t)(v >> (8 * (rlen - 1 - i)));
    if (d->after_read)
        d->after_read(d, reg);
    return 0;
}

FAKE_I2C_FN int fake_i2c__transfer(ems_i2c_bus_t *bus, uint16_t addr, const uint8_t *w, size_t wlen,
                                   uint8_t *r, size_t rlen)
{
    fake_i2c_t *f = (fake_i2c_t *)bus;
    fake_i2c_dev_t *d = fake_i2c_find(f, addr);
    int rc;
    if (!d || d->nack < 0) {
        rc = EMS_ENXIO;
    } else if (d->nack > 0) {
        d->nack--;
        rc = EMS_ENXIO;
    } else if (d->fail_io > 0) {
        d->fail_io--;
        rc = EMS_EIO;
    } else if (d->ptr_bytes == 0) {
        rc = d->raw ? d->raw(d, w, wlen, r, rlen) : EMS_EIO;
    } else {
        rc = fake_i2c__regdev(d, w, wlen, r, rlen);
    }
    if (f->nlog < FAKE_I2C_LOG) {
        fake_i2c_xfer_t *x = &f->log[f->nlog++];
        x->addr = addr;
        x->wlen = wlen;
        if (wlen)
            memcpy(x->w, w, wlen < FAKE_I2C_WMAX ? wlen : FAKE_I2C_WMAX);
        x->rlen = rlen;
        x->rc = rc;
    }
    return rc;
}

FAKE_I2C_FN void fake_i2c__close(ems_i2c_bus_t *bus)
{
    (void)bus; /* the fake lives in the test's frame */
}

static const ems_i2c_ops_t fake_i2c_ops = {
    .transfer = fake_i2c__transfer,
    .close = fake_i2c__close,
};

FAKE_I2C_FN void fake_i2c_init(fake_i2c_t *f)
{
    memset(f, 0, sizeof *f);
    f->bus.ops = &fake_i2c_ops;
    snprintf(f->bus.name, sizeof f->bus.name, "/dev/i2c-1");
}

/* Adds a device at addr with an 8-bit (ptr_bytes 1), 16-bit (2) or no (0)
 * register pointer. */
FAKE_I2C_FN fake_i2c_dev_t *fake_i2c_add(fake_i2c_t *f, uint16_t addr, int ptr_bytes,
                                         int (*width)(uint16_t reg))
{
    fake_i2c_dev_t *d = &f->devs[f->ndevs++];
    memset(d, 0, sizeof *d);
    d->addr = addr;
    d->ptr_bytes = ptr_bytes;
    d->width = width;
    return d;
}

FAKE_I2C_FN void fake_i2c_clear_log(fake_i2c_t *f)
{
    f->nlog = 0;
}

/* The number of write-only transfers logged (register writes). */
FAKE_I2C_FN size_t fake_i2c_count_writes(const fake_i2c_t *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nlog; i++)
        if (f->log[i].rlen == 0)
            n++;
    return n;
}

/* The k-th (0-based) write-only transfer, or NULL. */
FAKE_I2C_FN const fake_i2c_xfer_t *fake_i2c_write_at(const fake_i2c_t *f, size_t k)
{
    for (size_t i = 0; i < f->nlog; i++)
        if (f->log[i].rlen == 0 && k-- == 0)
            return &f->log[i];
    return NULL;
}

/* True when the k-th write-only transfer sent exactly bytes[0..n). */
FAKE_I2C_FN bool fake_i2c_write_is(const fake_i2c_t *f, size_t k, const uint8_t *bytes, size_t n)
{
    const fake_i2c_xfer_t *x = fake_i2c_write_at(f, k);
    if (!x || x->wlen != n || n > FAKE_I2C_WMAX)
        return false;
    return memcmp(x->w, bytes, n) == 0;
}

/* True when some logged write-only transfer starts with bytes[0..n). */
FAKE_I2C_FN bool fake_i2c_wrote(const fake_i2c_t *f, const uint8_t *bytes, size_t n)
{
    for (size_t i = 0; i < f->nlog; i++) {
        const fake_i2c_xfer_t *x = &f->log[i];
        if (x->rlen == 0 && x->wlen >= n && memcmp(x->w, bytes, n) == 0)
            return true;
    }
    return false;
}

/* Prints the log to stderr (for a failing test's diagnosis). */
FAKE_I2C_FN void fake_i2c_dump(const fake_i2c_t *f)
{
    for (size_t i = 0; i < f->nlog; i++) {
        const fake_i2c_xfer_t *x = &f->log[i];
        fprintf(stderr, "# %3zu 0x%02x w[", i, x->addr);
        for (size_t j = 0; j < x->wlen && j < FAKE_I2C_WMAX; j++)
            fprintf(stderr, "%s%02x", j ? " " : "", x->w[j]);
        fprintf(stderr, "] r%zu rc %d\n", x->rlen, x->rc);
    }
}

#endif
