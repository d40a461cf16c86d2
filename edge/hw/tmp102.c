/* tmp102.c: TMP102 driver (see tmp102.h for the choices). */
#include "tmp102.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

#define R_TEMP 0x00
#define R_CONFIG 0x01
#define R_TLOW 0x02
#define R_THIGH 0x03

#define C_RES 0x6000u      /* R1 R0: read-only, 11 = 12 bit */
#define C_SD 0x0100u       /* shutdown */
#define C_EM 0x0010u       /* extended (13-bit) mode */
#define C_COMPARED 0x1FD0u /* F1 F0 POL TM SD CR1 CR0 EM: the writable bits */

void ems_tmp102_config_default(ems_tmp102_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->address = 0x48;
    cfg->rate_hz = 4;
}

static int tmp__config(ems_tmp102_t *c, char *err, size_t cap)
{
    unsigned cr;
    switch (c->cfg.rate_hz) {
    case 1:
        cr = 1;
        break;
    case 4:
        cr = 2;
        break;
    case 8:
        cr = 3;
        break;
    default:
        snprintf(err, cap, "TMP102: rate_hz %u: must be 1, 4 or 8", c->cfg.rate_hz);
        return EMS_EINVAL;
    }
    if (c->cfg.address < 0x48 || c->cfg.address > 0x4B) {
        snprintf(err, cap, "TMP102: address 0x%02x: must be 0x48..0x4b", c->cfg.address);
        return EMS_EINVAL;
    }
    /* Comparator mode, active-low alert, one fault: the alert pin is unused.
     * SD = 0 (continuous), the conversion rate, EM as configured. */
    c->reg_config = (uint16_t)(C_RES | cr << 6 | (c->cfg.extended ? C_EM : 0));
    return 0;
}

static bool tmp__config_holds(const ems_tmp102_t *c, uint16_t v)
{
    return (v & C_COMPARED) == (c->reg_config & C_COMPARED);
}

int ems_tmp102_init(ems_tmp102_t *c, ems_i2c_bus_t *bus, const ems_tmp102_config_t *cfg, char *err,
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
    int rc = tmp__config(c, err, cap);
    if (rc < 0)
        return rc;
    uint16_t addr = cfg->address;
    if ((rc = ems_i2c_write_u16(bus, addr, R_CONFIG, c->reg_config)) < 0)
        return ems_i2c_explain(bus, addr, rc, "writing CONFIG", err, cap);
    uint16_t v;
    if ((rc = ems_i2c_read_u16(bus, addr, R_CONFIG, &v)) < 0)
        return ems_i2c_explain(bus, addr, rc, "reading CONFIG", err, cap);
    if (!tmp__config_holds(c, v)) {
        snprintf(err, cap,
                 "%s 0x%02x: CONFIG reads 0x%04x after writing 0x%04x: not a TMP102/LM75? "
                 "(check the address)",
                 bus->name, addr, v, c->reg_config);
        return EMS_ENODEV;
    }
    c->ready = true;
    return 0;
}

static int tmp__fail(ems_tmp102_t *c, int rc, const char *doing)
{
    return ems_i2c_explain(c->bus, c->cfg.address, rc, doing, c->err, sizeof c->err);
}

/* Decodes TEMP: 0 and *t, or EMS_EIO when the fixed bits are wrong. */
static int tmp__decode(bool extended, uint16_t raw, double *t)
{
    int16_t s = (int16_t)raw;
    if (extended) {
        if ((raw & 0x0007) != 0x0001)
            return EMS_EIO;
        *t = (double)((s - 1) / 8) * 0.0625;
    } else {
        if (raw & 0x000F)
            return EMS_EIO;
        *t = (double)(s / 16) * 0.0625;
    }
    return 0;
}

int ems_tmp102_read(ems_tmp102_t *c, double *celsius)
{
    if (!c->ready) {
        snprintf(c->err, sizeof c->err, "TMP102: not initialised (init failed)");
        return EMS_EINVAL;
    }
    uint16_t addr = c->cfg.address;
    uint16_t v;
    int rc = ems_i2c_read_u16(c->bus, addr, R_CONFIG, &v);
    if (rc < 0)
        return tmp__fail(c, rc, "reading CONFIG");
    if (!tmp__config_holds(c, v)) {
        if ((rc = ems_i2c_write_u16(c->bus, addr, R_CONFIG, c->reg_config)) < 0)
            return tmp__fail(c, rc, "writing CONFIG");
        c->reinits++;
        snprintf(c->err, sizeof c->err,
                 "%s 0x%02x: CONFIG reads 0x%04x, init wrote 0x%04x%s: written again", c->bus->name,
                 addr, v, c->reg_config, (v & C_SD) ? " (shut down)" : "");
        return EMS_EAGAIN;
    }
    uint16_t raw;
    if ((rc = ems_i2c_read_u16(c->bus, addr, R_TEMP, &raw)) < 0)
        return tmp__fail(c, rc, "reading TEMP");
    double t;
    if (tmp__decode(c->cfg.extended, raw, &t) < 0) {
        snprintf(c->err, sizeof c->err,
                 "%s 0x%02x: TEMP 0x%04x: the low bits are not those of a TMP102 in %s mode",
                 c->bus->name, addr, raw, c->cfg.extended ? "13-bit" : "12-bit");
        return EMS_EIO;
    }
    if (t < -55.0 || t > 150.0) {
        snprintf(c->err, sizeof c->err, "%s 0x%02x: TEMP 0x%04x = %.4f C: outside -55..150 C",
                 c->bus->name, addr, raw, t);
        return EMS_ERANGE;
    }
    *celsius = t;
    c->err[0] = '\0';
    return 0;
}

int ems_tmp102_probe(ems_tmp102_t *c, FILE *out)
{
    static const struct {
        uint8_t reg;
        const char *name;
    } regs[] = {{R_CONFIG, "CONFIG"}, {R_TEMP, "TEMP"}, {R_TLOW, "T_LOW"}, {R_THIGH, "T_HIGH"}};
    uint16_t v[4];
    bool ok[4] = {false, false, false, false};
    int first = 0;
    fprintf(out, "TMP102 at %s 0x%02x (init %s)\n", c->bus->name, c->cfg.address,
            c->ready ? "ok" : "failed");
    for (size_t i = 0; i < 4; i++) {
        int rc = ems_i2c_read_u16(c->bus, c->cfg.address, regs[i].reg, &v[i]);
        ok[i] = rc == 0;
        if (rc < 0) {
            char msg[160];
            ems_i2c_explain(c->bus, c->cfg.address, rc, NULL, msg, sizeof msg);
            fprintf(out, "  %-7s (0x%02x): %s\n", regs[i].name, regs[i].reg, msg);
            first = first ? first : rc;
            if (rc == EMS_ENXIO)
                return rc;
            continue;
        }
        fprintf(out, "  %-7s (0x%02x) = 0x%04x\n", regs[i].name, regs[i].reg, v[i]);
    }
    if (ok[0])
        fprintf(out, "  mode          %s, %s, %s\n", (v[0] & C_SD) ? "SHUT DOWN" : "continuous",
                (v[0] & C_EM) ? "13-bit" : "12-bit",
                (v[0] & 0x00C0) == 0x0000   ? "0.25 Hz"
                : (v[0] & 0x00C0) == 0x0040 ? "1 Hz"
                : (v[0] & 0x00C0) == 0x0080 ? "4 Hz"
                                            : "8 Hz");
    double t;
    if (ok[0] && ok[1]) {
        if (tmp__decode((v[0] & C_EM) != 0, v[1], &t) == 0)
            fprintf(out, "  temperature   %.4f C\n", t);
        else
            fprintf(out, "  temperature   implausible register bits\n");
    }
    return first;
}
