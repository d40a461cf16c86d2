/* i2cbus.c: the emulated I2C adapter behind /dev/i2c-N.
 *
 * It behaves like the Raspberry Pi's i2c-bcm2835 under i2c-dev: I2C_RDWR
 * takes up to 42 messages of up to 8192 bytes; a message to an address
 * nobody acknowledges fails the whole transfer with EREMOTEIO before
 * anything is transferred; the adapter reports I2C_FUNC_I2C plus the SMBus
 * transactions the kernel's i2c core emulates over plain I2C messages, and
 * I2C_SMBUS is emulated here the same way (SMBus words are little-endian on
 * the wire, most chips' registers are big-endian: that is the chip's
 * business, not ours).
 */
#include "hwemu.h"

#include <errno.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define HWEMU__MAX_MSGS 42 /* I2C_RDWR_IOCTL_MAX_MSGS */
#define HWEMU__MAX_LEN 8192

/* ------------------------------------------------------------------ chip helpers */

double hwemu_chip_noise(hwemu_chip_t *c)
{
    return ems_rng_normal(&c->rng);
}

int64_t hwemu_clamp_round(double x, int64_t lo, int64_t hi)
{
    if (!(x == x))
        return lo;
    double r = floor(x + 0.5);
    if (r < (double)lo)
        return lo;
    if (r > (double)hi)
        return hi;
    return (int64_t)r;
}

int64_t hwemu_adc_code(hwemu_chip_t *c, double ideal, double sigma, int64_t lo, int64_t hi,
                       int64_t last_read)
{
    int64_t code = hwemu_clamp_round(ideal + sigma * hwemu_chip_noise(c), lo, hi);
    if (code == last_read) {
        /* One LSB away, toward the inside of the range. */
        int64_t step = (ems_rng_next(&c->rng) & 1) ? 1 : -1;
        if (code + step > hi || code + step < lo)
            step = -step;
        code += step;
    }
    return code;
}

/* ------------------------------------------------------------------ the bus */

static hwemu_chip_t *hwemu__chip_at(hwemu_t *e, unsigned addr)
{
    for (unsigned i = 0; i < e->nchips; i++)
        if (e->chips[i]->addr == addr)
            return e->chips[i];
    return NULL;
}

/* Whether `addr` acknowledges now; consumes a nack_once. */
static bool hwemu__acks(hwemu_t *e, unsigned addr)
{
    if (addr > 0x7f)
        return false;
    if (e->nack_once[addr]) {
        e->nack_once[addr] = false;
        return false;
    }
    if (e->ctl.silence[addr])
        return false;
    if (addr == 0x00) { /* general call: acknowledged if any chip takes it */
        for (unsigned i = 0; i < e->nchips; i++)
            if (e->chips[i]->ops->general_call && !e->ctl.silence[e->chips[i]->addr])
                return true;
        return false;
    }
    return hwemu__chip_at(e, addr) != NULL;
}

static void hwemu__log_msgs(hwemu_t *e, const struct i2c_msg *m, unsigned n, int rc)
{
    if (e->log_fd < 0)
        return;
    char line[768];
    size_t off = 0;
    for (unsigned i = 0; i < n && off < sizeof line - 64; i++) {
        bool rd = m[i].flags & I2C_M_RD;
        off += (size_t)snprintf(line + off, sizeof line - off, "%s%c%u@0x%02x", i ? " " : "",
                                rd ? 'r' : 'w', m[i].len, m[i].addr);
        if (rc < 0 && rd)
            continue;
        for (unsigned j = 0; j < m[i].len && j < 16 && off < sizeof line - 8; j++)
            off += (size_t)snprintf(line + off, sizeof line - off, " %02x", m[i].buf[j]);
        if (m[i].len > 16 && off < sizeof line - 8)
            off += (size_t)snprintf(line + off, sizeof line - off, " ...");
    }
    hwemu_log(e, "i2c %s -> %s", line, rc < 0 ? strerror(-rc) : "ok");
}

static int hwemu__transfer(hwemu_t *e, struct i2c_msg *m, unsigned n)
{
    if (n > HWEMU__MAX_MSGS)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++) {
        if (m[i].len > HWEMU__MAX_LEN)
            return -EINVAL;
        if (m[i].len > 0 && !m[i].buf)
            return -EFAULT;
        if (m[i].flags & (I2C_M_TEN | I2C_M_RECV_LEN))
            return -EOPNOTSUPP; /* the bcm2835 does neither */
    }
    e->i2c_transfers++;
    /* The controller reports the NACK and the driver fails the transfer;
     * a chip that is silent never sees any of it. */
    for (unsigned i = 0; i < n; i++) {
        if (!hwemu__acks(e, m[i].addr)) {
            e->i2c_nacks++;
            hwemu__log_msgs(e, m, n, -EREMOTEIO);
            return -EREMOTEIO;
        }
    }
    int rc = 0;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        if (m[i].addr == 0x00) {
            /* A general call carries a command byte; reads are undefined. */
            if ((m[i].flags & I2C_M_RD) || m[i].len < 1)
                continue;
            for (unsigned k = 0; k < e->nchips; k++)
                if (e->chips[k]->ops->general_call)
                    e->chips[k]->ops->general_call(e->chips[k], m[i].buf[0]);
            continue;
        }
        hwemu_chip_t *c = hwemu__chip_at(e, m[i].addr);
        if (m[i].flags & I2C_M_RD)
            rc = c->ops->read(c, m[i].buf, m[i].len);
        else
            rc = c->ops->write(c, m[i].buf, m[i].len);
    }
    hwemu__log_msgs(e, m, n, rc);
    if (rc < 0) {
        e->i2c_nacks++;
        return rc;
    }
    return (int)n;
}

unsigned long hwemu_i2c_funcs(void)
{
    /* I2C_FUNC_SMBUS_EMUL without PEC: we do not compute packet error codes. */
    return I2C_FUNC_I2C | (I2C_FUNC_SMBUS_EMUL & ~(unsigned long)I2C_FUNC_SMBUS_PEC);
}

int hwemu_i2c_rdwr(hwemu_t *e, void *msgs, unsigned n)
{
    return hwemu__transfer(e, (struct i2c_msg *)msgs, n);
}

long hwemu_i2c_rw(hwemu_t *e, unsigned addr, void *buf, size_t len, bool is_read)
{
    if (len > HWEMU__MAX_LEN)
        len = HWEMU__MAX_LEN;
    struct i2c_msg m = {
        .addr = (uint16_t)addr, .flags = is_read ? I2C_M_RD : 0, .len = (uint16_t)len, .buf = buf};
    int rc = hwemu__transfer(e, &m, 1);
    return rc < 0 ? rc : (long)len;
}

int hwemu_i2c_smbus(hwemu_t *e, unsigned addr, bool pec, void *args)
{
    struct i2c_smbus_ioctl_data *a = args;
    union i2c_smbus_data *d = a->data;
    bool rd = a->read_write == I2C_SMBUS_READ;
    if (a->read_write != I2C_SMBUS_READ && a->read_write != I2C_SMBUS_WRITE)
        return -EINVAL;
    if (pec)
        return -EOPNOTSUPP;
    if (!d && a->size != I2C_SMBUS_QUICK && !(a->size == I2C_SMBUS_BYTE && !rd))
        return -EINVAL;
    uint8_t w[I2C_SMBUS_BLOCK_MAX + 3], r[I2C_SMBUS_BLOCK_MAX + 2];
    struct i2c_msg m[2] = {
        {.addr = (uint16_t)addr, .flags = 0, .len = 1, .buf = w},
        {.addr = (uint16_t)addr, .flags = I2C_M_RD, .len = 0, .buf = r},
    };
    unsigned n = rd ? 2 : 1;
    w[0] = a->command;
    switch (a->size) {
    case I2C_SMBUS_QUICK:
        m[0].len = 0;
        m[0].flags = rd ? I2C_M_RD : 0;
        n = 1;
        break;
    case I2C_SMBUS_BYTE:
        if (rd) {
            m[0].flags = I2C_M_RD;
            m[0].buf = r;
            n = 1;
        }
        break;
    case I2C_SMBUS_BYTE_DATA:
        if (rd)
            m[1].len = 1;
        else {
            m[0].len = 2;
            w[1] = d->byte;
        }
        break;
    case I2C_SMBUS_WORD_DATA:
        if (rd)
            m[1].len = 2;
        else {
            m[0].len = 3;
            w[1] = d->word & 0xff;
            w[2] = d->word >> 8;
        }
        break;
    case I2C_SMBUS_PROC_CALL:
        n = 2;
        m[0].len = 3;
        w[1] = d->word & 0xff;
        w[2] = d->word >> 8;
        m[1].len = 2;
        rd = true;
        break;
    case I2C_SMBUS_BLOCK_DATA:
        if (rd)
            return -EOPNOTSUPP; /* needs I2C_M_RECV_LEN */
        if (d->block[0] < 1 || d->block[0] > I2C_SMBUS_BLOCK_MAX)
            return -EINVAL;
        m[0].len = (uint16_t)(d->block[0] + 2);
        memcpy(w + 1, d->block, (size_t)d->block[0] + 1);
        break;
    case I2C_SMBUS_I2C_BLOCK_BROKEN:
    case I2C_SMBUS_I2C_BLOCK_DATA:
        if (d->block[0] > I2C_SMBUS_BLOCK_MAX)
            return -EINVAL;
        if (rd) {
            m[1].len = d->block[0];
        } else {
            m[0].len = (uint16_t)(d->block[0] + 1);
            memcpy(w + 1, d->block + 1, d->block[0]);
        }
        break;
    default:
        return -EOPNOTSUPP;
    }
    int rc = hwemu__transfer(e, m, n);
    if (rc < 0)
        return rc;
    if (!rd)
        return 0;
    switch (a->size) {
    case I2C_SMBUS_BYTE:
    case I2C_SMBUS_BYTE_DATA:
        d->byte = r[0];
        break;
    case I2C_SMBUS_WORD_DATA:
    case I2C_SMBUS_PROC_CALL:
        d->word = (uint16_t)(r[0] | (r[1] << 8));
        break;
    case I2C_SMBUS_I2C_BLOCK_BROKEN:
    case I2C_SMBUS_I2C_BLOCK_DATA:
        memcpy(d->block + 1, r, d->block[0]);
        break;
    default:
        break;
    }
    return 0;
}

void hwemu_i2c_reset(hwemu_t *e, unsigned addr)
{
    hwemu_chip_t *c = hwemu__chip_at(e, addr);
    if (!c)
        return;
    hwemu_log(e, "i2c 0x%02x: power cycle (%s)", addr, c->ops->name);
    c->ops->reset(c);
    if (c == e->dac)
        hwemu_outputs_changed(e);
}
