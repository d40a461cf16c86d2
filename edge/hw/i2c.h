/* i2c.h: the I2C bus under the edge's chip drivers.
 *
 * A bus is a tiny vtable (ems_i2c_ops_t) so the drivers run unchanged on the
 * Linux i2c-dev character device (ems_i2c_dev_open) and on the in-memory fake
 * of the unit tests (test/unit/fake_i2c.h). Every driver goes through
 * ems_i2c_transfer(), never through the op directly: that is where a NACK is
 * retried once and where the counters for /metrics and --probe are kept.
 *
 * One transfer is one combined I2C transaction: START, address+W, the bytes
 * written, REPEATED START, address+R, the bytes read, STOP. Register reads
 * therefore cannot be split by another master or by another of our own
 * transfers between pointer write and data read.
 *
 * Errors are 0 or a negative EMS_E* code (common/error.h): EMS_ENXIO when the
 * address did not acknowledge, EMS_ETIMEDOUT when the adapter timed out
 * (a slave holding SCL low), EMS_EIO for everything else.
 */
#ifndef EMS_EDGE_HW_I2C_H
#define EMS_EDGE_HW_I2C_H

#include <stddef.h>
#include <stdint.h>

typedef struct ems_i2c_bus ems_i2c_bus_t;

typedef struct {
    /* One combined transaction to 7-bit address addr: write wlen bytes, then
     * (repeated start, no stop in between) read rlen bytes. wlen or rlen may
     * be 0, not both. 0 or a negative EMS_E* code: EMS_ENXIO when the
     * address did not acknowledge. */
    int (*transfer)(ems_i2c_bus_t *bus, uint16_t addr, const uint8_t *w, size_t wlen, uint8_t *r,
                    size_t rlen);
    void (*close)(ems_i2c_bus_t *bus); /* frees the bus */
} ems_i2c_ops_t;

struct ems_i2c_bus {
    const ems_i2c_ops_t *ops;
    char name[32]; /* "/dev/i2c-1", for messages */
    /* Counters for /metrics and --probe, kept by ems_i2c_transfer():
     * transfers: calls; nacks: attempts the address did not acknowledge
     * (a retried call counts each); retries: second attempts made;
     * errors: calls that finally failed, whatever the code. */
    uint64_t transfers, nacks, retries, errors;
};

/* The largest single write or read a transfer accepts (the kernel's i2c-dev
 * limit per message). Register transfers here are 1 to 6 bytes. */
#define EMS_I2C_MAX_LEN 8192u

/* The largest register payload the ems_i2c_write_reg* helpers send. */
#define EMS_I2C_REG_MAX 32u

/* Opens /dev/i2c-<busno> (Linux i2c-dev) into *out. The caller owns the bus
 * and releases it with ems_i2c_close(). Checks that the adapter can do plain
 * I2C transfers (I2C_FUNC_I2C); each transfer is then one I2C_RDWR ioctl.
 * On failure *out is NULL, a message naming the path and the fix is written
 * to err (capacity cap), and the return is EMS_ENOENT (no such device: I2C
 * not enabled), EMS_EPERM (no permission: the i2c group), EMS_ENODEV (the
 * adapter cannot do plain I2C), EMS_EINVAL (busno < 0), EMS_ENOMEM or
 * EMS_EIO. */
int ems_i2c_dev_open(int busno, ems_i2c_bus_t **out, char *err, size_t cap);

/* One combined transaction (see ems_i2c_ops_t.transfer) through bus->ops.
 * A NACK (EMS_ENXIO) is retried exactly once, at once: a chip busy with an
 * internal write or a glitch on a long cable answers the second time, a
 * missing chip does not. Other errors are not retried (the write half may
 * have reached the chip). Counts into the bus counters. Returns 0,
 * EMS_EINVAL (addr above 0x7F, both lengths 0, a length above
 * EMS_I2C_MAX_LEN, a NULL buffer with a length), or the op's code. */
int ems_i2c_transfer(ems_i2c_bus_t *bus, uint16_t addr, const uint8_t *w, size_t wlen, uint8_t *r,
                     size_t rlen);

/* Releases the bus (calls ops->close). NULL is allowed. */
void ems_i2c_close(ems_i2c_bus_t *bus);

/* Register helpers. "reg8": an 8-bit register pointer (INA2xx, TMP102);
 * "reg16": a 16-bit register address sent MSB first (ADE7953). A read writes
 * the pointer and reads n bytes in one transaction; a write sends the
 * pointer followed by n bytes (n <= EMS_I2C_REG_MAX). Data bytes are passed
 * as they travel on the wire; the be helpers below decode them. Return as
 * ems_i2c_transfer(). */
int ems_i2c_read_reg8(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, uint8_t *buf, size_t n);
int ems_i2c_write_reg8(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, const uint8_t *buf,
                       size_t n);
int ems_i2c_read_reg16(ems_i2c_bus_t *bus, uint16_t addr, uint16_t reg, uint8_t *buf, size_t n);
int ems_i2c_write_reg16(ems_i2c_bus_t *bus, uint16_t addr, uint16_t reg, const uint8_t *buf,
                        size_t n);

/* Reads/writes one 16-bit big-endian register behind an 8-bit pointer, the
 * common case of the TI and LM75-style chips. */
int ems_i2c_read_u16(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, uint16_t *val);
int ems_i2c_write_u16(ems_i2c_bus_t *bus, uint16_t addr, uint8_t reg, uint16_t val);

/* The bus number from a name ending in "-N" ("/dev/i2c-1" -> 1), for the
 * `i2cdetect -y N` hint; -1 when there is none. */
int ems_i2c_busno(const ems_i2c_bus_t *bus);

/* Writes a message for a failed transfer to err and returns rc unchanged:
 *   EMS_ENXIO: "/dev/i2c-1 0x40: no answer (check the wiring and the
 *              address, `i2cdetect -y 1`)"
 *   others:    "/dev/i2c-1 0x40: <doing>: <ems_strerror(rc)>"
 * doing names the step ("reading CONFIG"); it may be NULL. err may be NULL
 * (then nothing is written). */
int ems_i2c_explain(const ems_i2c_bus_t *bus, uint16_t addr, int rc, const char *doing, char *err,
                    size_t cap);

/* Big-endian decoding/encoding of register bytes. */
/* A big-endian value of n bytes (1..8), as the chips send their registers. */
static inline uint64_t ems_i2c_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static inline uint16_t ems_i2c_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t ems_i2c_be24(const uint8_t *p)
{
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static inline uint32_t ems_i2c_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | ems_i2c_be24(p + 1);
}

static inline uint64_t ems_i2c_be40(const uint8_t *p)
{
    return (uint64_t)p[0] << 32 | ems_i2c_be32(p + 1);
}

static inline void ems_i2c_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void ems_i2c_put_be24(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 16);
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)v;
}

static inline void ems_i2c_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    ems_i2c_put_be24(p + 1, v);
}

/* The two's complement value of the low `bits` bits of v (1 <= bits <= 64). */
static inline int64_t ems_i2c_sign_extend(uint64_t v, unsigned bits)
{
    if (bits >= 64)
        return (int64_t)v;
    uint64_t m = (uint64_t)1 << (bits - 1);
    v &= ((uint64_t)1 << bits) - 1;
    return (int64_t)(v ^ m) - (int64_t)m;
}

#endif
