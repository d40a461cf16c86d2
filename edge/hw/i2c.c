/* i2c.c: the retrying transfer, the register helpers and the Linux i2c-dev
 * bus (see i2c.h).
 *
 * The Linux bus uses only open(), ioctl(I2C_FUNCS), ioctl(I2C_RDWR) and
 * close(): one I2C_RDWR per transfer carries the write message and the read
 * message together, so the kernel issues a repeated start between them and
 * no I2C_SLAVE address has to be set (and raced) beforehand.
 */
#include "i2c.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ------------------------------------------------------------- transfer */

int ems_i2c_transfer(ems_i2c_bus_t *bus, uint16_t addr, const uint8_t *w, size_t wlen, uint8_t *r,
                     size_t rlen)
{
    if (!bus || addr > 0x7F || (wlen == 0 && rlen == 0) || wlen > EMS_I2C_MAX_LEN ||
        rlen > EMS_I2C_MAX_LEN || (wlen && !w) || (rlen && !r))
        return EMS_EINVAL;
    bus->transfers++;
    int rc = bus->ops->transfer(bus, addr, w, wlen, r, rlen);
    if (rc == EMS_ENXIO) {
        bus->nacks++;
        bus->retries++;
        rc = bus->ops->transfer(bus, addr, w, wlen, r, rlen);
        if (rc == EMS_ENXIO)
            bus->nacks++;
    }
    if (rc < 0)
        bus->errors++;
    return rc < 0 ? rc : 0;
}

void ems_i2c_close(ems_i2c_bus_t *bus)
{
    if (bus)
        bus->ops->close(bus);
}

/* ------------------------------------------------------------- registers */

int ems_i2c_read_reg8(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, uint8_t *buf, size_t n)
{
    return ems_i2c_transfer(bus, addr, &reg, 1, buf, n);
}

int ems_i2c_write_reg8(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, const uint8_t *buf, size_t n)
{
    uint8_t w[1 + EMS_I2C_REG_MAX];
    if (n > EMS_I2C_REG_MAX || (n && !buf))
        return EMS_EINVAL;
    w[0] = reg;
    if (n)
        memcpy(w + 1, buf, n);
    return ems_i2c_transfer(bus, addr, w, 1 + n, NULL, 0);
}

int ems_i2c_read_reg16(ems_i2c_bus_t *bus, uint16_t addr, uint16_t reg, uint8_t *buf, size_t n)
{
    uint8_t p[2];
    ems_i2c_put_be16(p, reg);
    return ems_i2c_transfer(bus, addr, p, 2, buf, n);
}

int ems_i2c_write_reg16(ems_i2c_bus_t *bus, uint16_t addr, uint16_t reg, const uint8_t *buf,
                        size_t n)
{
    uint8_t w[2 + EMS_I2C_REG_MAX];
    if (n > EMS_I2C_REG_MAX || (n && !buf))
        return EMS_EINVAL;
    ems_i2c_put_be16(w, reg);
    if (n)
        memcpy(w + 2, buf, n);
    return ems_i2c_transfer(bus, addr, w, 2 + n, NULL, 0);
}

int ems_i2c_read_u16(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, uint16_t *val)
{
    uint8_t b[2];
    int rc = ems_i2c_read_reg8(bus, addr, reg, b, 2);
    if (rc == 0)
        *val = ems_i2c_be16(b);
    return rc;
}

int ems_i2c_write_u16(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, uint16_t val)
{
    uint8_t b[2];
    ems_i2c_put_be16(b, val);
    return ems_i2c_write_reg8(bus, addr, reg, b, 2);
}

/* ------------------------------------------------------------- messages */

int ems_i2c_busno(const ems_i2c_bus_t *bus)
{
    const char *dash = bus ? strrchr(bus->name, '-') : NULL;
    if (!dash || dash[1] < '0' || dash[1] > '9')
        return -1;
    char *end;
    long n = strtol(dash + 1, &end, 10);
    return (*end == '\0' && n <= 1 << 20) ? (int)n : -1;
}

int ems_i2c_explain(const ems_i2c_bus_t *bus, uint16_t addr, int rc, const char *doing, char *err,
                    size_t cap)
{
    if (!err || cap == 0)
        return rc;
    const char *name = bus ? bus->name : "i2c";
    if (rc == EMS_ENXIO) {
        int n = ems_i2c_busno(bus);
        char hint[32];
        if (n >= 0)
            snprintf(hint, sizeof hint, "i2cdetect -y %d", n);
        else
            snprintf(hint, sizeof hint, "i2cdetect");
        snprintf(err, cap, "%s 0x%02x: no answer (check the wiring and the address, `%s`)", name,
                 addr, hint);
    } else if (doing) {
        snprintf(err, cap, "%s 0x%02x: %s: %s", name, addr, doing, ems_strerror(rc));
    } else {
        snprintf(err, cap, "%s 0x%02x: %s", name, addr, ems_strerror(rc));
    }
    return rc;
}

/* ------------------------------------------------------------- Linux i2c-dev */

typedef struct {
    ems_i2c_bus_t bus; /* first: the ops receive this pointer */
    int fd;
} i2c__dev_t;

/* The kernel's adapter drivers report a NACK on the address as ENXIO (most)
 * or EREMOTEIO (some, e.g. the Raspberry Pi's bcm2835 on a data NACK). */
static int i2c__map_errno(int e)
{
    switch (e) {
    case ENXIO:
    case EREMOTEIO:
        return EMS_ENXIO;
    case ETIMEDOUT:
        return EMS_ETIMEDOUT;
    default:
        return EMS_EIO;
    }
}

static int i2c__dev_transfer(ems_i2c_bus_t *bus, uint16_t addr, const uint8_t *w, size_t wlen,
                             uint8_t *r, size_t rlen)
{
    i2c__dev_t *d = (i2c__dev_t *)bus;
    struct i2c_msg msgs[2];
    unsigned n = 0;
    if (wlen) {
        /* The kernel's struct is not const-correct; it does not write here. */
        msgs[n++] = (struct i2c_msg){
            .addr = addr, .flags = 0, .len = (uint16_t)wlen, .buf = (uint8_t *)(uintptr_t)w};
    }
    if (rlen)
        msgs[n++] =
            (struct i2c_msg){.addr = addr, .flags = I2C_M_RD, .len = (uint16_t)rlen, .buf = r};
    struct i2c_rdwr_ioctl_data data = {.msgs = msgs, .nmsgs = n};
    int rc;
    do {
        rc = ioctl(d->fd, I2C_RDWR, &data);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return i2c__map_errno(errno);
    return (unsigned)rc == n ? 0 : EMS_EIO;
}

static void i2c__dev_close(ems_i2c_bus_t *bus)
{
    i2c__dev_t *d = (i2c__dev_t *)bus;
    close(d->fd);
    free(d);
}

static const ems_i2c_ops_t i2c__dev_ops = {
    .transfer = i2c__dev_transfer,
    .close = i2c__dev_close,
};

static int i2c__open_error(const char *path, int e, char *err, size_t cap)
{
    switch (e) {
    case ENOENT:
        snprintf(err, cap, "%s: %s: enable I2C (raspi-config, dtparam=i2c_arm=on)", path,
                 strerror(e));
        return EMS_ENOENT;
    case EACCES:
    case EPERM:
        snprintf(err, cap, "%s: %s: add the user to group i2c", path, strerror(e));
        return EMS_EPERM;
    case ENODEV:
    case ENXIO:
        snprintf(err, cap, "%s: %s: the adapter is gone (check the overlay and dmesg)", path,
                 strerror(e));
        return EMS_ENODEV;
    default:
        snprintf(err, cap, "%s: %s", path, strerror(e));
        return EMS_EIO;
    }
}

int ems_i2c_dev_open(int busno, ems_i2c_bus_t **out, char *err, size_t cap)
{
    char scratch[8];
    if (!err || cap == 0) {
        err = scratch;
        cap = sizeof scratch;
    }
    *out = NULL;
    if (busno < 0) {
        snprintf(err, cap, "i2c bus %d: the bus number must be 0 or more", busno);
        return EMS_EINVAL;
    }
    char path[32];
    snprintf(path, sizeof path, "/dev/i2c-%d", busno);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return i2c__open_error(path, errno, err, cap);

    unsigned long funcs = 0;
    if (ioctl(fd, I2C_FUNCS, &funcs) < 0) {
        int e = errno;
        snprintf(err, cap, "%s: I2C_FUNCS: %s: is this an i2c-dev device?", path, strerror(e));
        close(fd);
        return EMS_EIO;
    }
    if (!(funcs & I2C_FUNC_I2C)) {
        snprintf(err, cap,
                 "%s: the adapter cannot do plain I2C transfers (no I2C_FUNC_I2C; an SMBus-only "
                 "adapter is not supported): use the SoC's I2C controller",
                 path);
        close(fd);
        return EMS_ENODEV;
    }
    i2c__dev_t *d = calloc(1, sizeof *d);
    if (!d) {
        close(fd);
        snprintf(err, cap, "%s: out of memory", path);
        return EMS_ENOMEM;
    }
    d->bus.ops = &i2c__dev_ops;
    snprintf(d->bus.name, sizeof d->bus.name, "%s", path);
    d->fd = fd;
    *out = &d->bus;
    return 0;
}
