/* mcp4725.c: MCP4725 driver (see mcp4725.h for the choices). */
#include "mcp4725.h"

#include "error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MCP_CODE_MAX 4095u
#define MCP_CMD_DAC_EEPROM 0x60u
#define MCP_RDY 0x80u
#define MCP_EEPROM_POLLS 50
#define MCP_EEPROM_POLL_NS 2000000L /* 2 ms: 50 polls cover the 50 ms maximum twice */

typedef struct {
    bool rdy;
    unsigned pd, dac, ee_pd, ee_dac;
} mcp__state_t;

void ems_mcp4725_config_default(ems_mcp4725_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->address = 0x60;
    cfg->vref_v = 3.3;
}

static void mcp__parse(const uint8_t b[5], mcp__state_t *s)
{
    s->rdy = (b[0] & MCP_RDY) != 0;
    s->pd = (b[0] >> 1) & 3u;
    s->dac = (unsigned)b[1] << 4 | b[2] >> 4;
    s->ee_pd = (b[3] >> 5) & 3u;
    s->ee_dac = (unsigned)(b[3] & 0x0F) << 8 | b[4];
}

static int mcp__read(ems_mcp4725_t *c, uint8_t b[5], mcp__state_t *s)
{
    int rc = ems_i2c_transfer(c->bus, c->cfg.address, NULL, 0, b, 5);
    if (rc == 0)
        mcp__parse(b, s);
    return rc;
}

static int mcp__fail(ems_mcp4725_t *c, int rc, const char *doing)
{
    return ems_i2c_explain(c->bus, c->cfg.address, rc, doing, c->err, sizeof c->err);
}

/* The fast write of code (normal power mode), then the read-back check. */
static int mcp__write_verified(ems_mcp4725_t *c, unsigned code)
{
    uint8_t w[2] = {(uint8_t)(code >> 8 & 0x0F), (uint8_t)(code & 0xFF)};
    int rc = ems_i2c_transfer(c->bus, c->cfg.address, w, 2, NULL, 0);
    if (rc < 0)
        return mcp__fail(c, rc, "writing the DAC");
    uint8_t b[5];
    mcp__state_t s;
    if ((rc = mcp__read(c, b, &s)) < 0)
        return mcp__fail(c, rc, "reading back the DAC");
    if (s.dac != code || s.pd != 0) {
        snprintf(c->err, sizeof c->err,
                 "%s 0x%02x: DAC reads code %u (power-down %u) after writing %u (normal)",
                 c->bus->name, c->cfg.address, s.dac, s.pd, code);
        return EMS_EIO;
    }
    if (s.ee_dac != 0 || s.ee_pd != 0) {
        snprintf(c->err, sizeof c->err,
                 "%s 0x%02x: EEPROM power-on value reads code %u (power-down %u), not the 0 "
                 "init stored: a power cycle would not start at 0 V",
                 c->bus->name, c->cfg.address, s.ee_dac, s.ee_pd);
        return EMS_EIO;
    }
    c->code = (uint16_t)code;
    c->err[0] = '\0';
    return 0;
}

/* Stores code 0, normal mode, as the power-on value and waits for the
 * EEPROM write to finish. */
static int mcp__store_zero(ems_mcp4725_t *c, char *err, size_t cap)
{
    const uint8_t w[3] = {MCP_CMD_DAC_EEPROM, 0x00, 0x00};
    int rc = ems_i2c_transfer(c->bus, c->cfg.address, w, 3, NULL, 0);
    if (rc < 0)
        return ems_i2c_explain(c->bus, c->cfg.address, rc, "writing the EEPROM", err, cap);
    c->eeprom_written = true;
    uint8_t b[5];
    mcp__state_t s = {0};
    for (int i = 0; i < MCP_EEPROM_POLLS; i++) {
        if ((rc = mcp__read(c, b, &s)) < 0)
            return ems_i2c_explain(c->bus, c->cfg.address, rc, "polling the EEPROM write", err,
                                   cap);
        if (s.rdy)
            break;
        struct timespec ts = {0, MCP_EEPROM_POLL_NS};
        nanosleep(&ts, NULL);
    }
    if (!s.rdy) {
        snprintf(err, cap, "%s 0x%02x: the EEPROM write did not finish in %d ms", c->bus->name,
                 c->cfg.address, MCP_EEPROM_POLLS * (int)(MCP_EEPROM_POLL_NS / 1000000));
        return EMS_ETIMEDOUT;
    }
    if (s.ee_dac != 0 || s.ee_pd != 0) {
        snprintf(err, cap,
                 "%s 0x%02x: EEPROM reads code %u (power-down %u) after storing 0: the write did "
                 "not stick",
                 c->bus->name, c->cfg.address, s.ee_dac, s.ee_pd);
        return EMS_EIO;
    }
    return 0;
}

int ems_mcp4725_init(ems_mcp4725_t *c, ems_i2c_bus_t *bus, const ems_mcp4725_config_t *cfg,
                     char *err, size_t cap)
{
    char scratch[8];
    if (!err || cap == 0) {
        err = scratch;
        cap = sizeof scratch;
    }
    memset(c, 0, sizeof *c);
    c->bus = bus;
    c->cfg = *cfg;
    if (cfg->address < 0x60 || cfg->address > 0x67) {
        snprintf(err, cap, "MCP4725: address 0x%02x: must be 0x60..0x67", cfg->address);
        return EMS_EINVAL;
    }
    if (!(isfinite(cfg->vref_v) && cfg->vref_v >= 2.7 && cfg->vref_v <= 5.5)) {
        snprintf(err, cap, "MCP4725: vref_v %g: must be the chip's supply, 2.7..5.5 V",
                 cfg->vref_v);
        return EMS_EINVAL;
    }
    c->configured = true;
    uint8_t b[5];
    mcp__state_t s;
    int rc = mcp__read(c, b, &s);
    if (rc < 0)
        return ems_i2c_explain(bus, cfg->address, rc, "reading the DAC", err, cap);
    if ((s.ee_dac != 0 || s.ee_pd != 0) && (rc = mcp__store_zero(c, err, cap)) < 0)
        return rc;
    if ((rc = mcp__write_verified(c, 0)) < 0) {
        snprintf(err, cap, "%s", c->err);
        return rc;
    }
    c->ready = true;
    return 0;
}

int ems_mcp4725_set_code(ems_mcp4725_t *c, unsigned code)
{
    if (!c->ready) {
        snprintf(c->err, sizeof c->err, "MCP4725: not initialised (init failed)");
        return EMS_EINVAL;
    }
    if (code > MCP_CODE_MAX) {
        snprintf(c->err, sizeof c->err, "MCP4725: code %u: must be 0..4095", code);
        return EMS_EINVAL;
    }
    return mcp__write_verified(c, code);
}

int ems_mcp4725_set_volts(ems_mcp4725_t *c, double v)
{
    if (!(isfinite(v) && v >= 0 && v <= c->cfg.vref_v)) {
        snprintf(c->err, sizeof c->err, "MCP4725: %g V: outside 0..%g V (vref_v)", v,
                 c->cfg.vref_v);
        return EMS_EINVAL;
    }
    long code = lround(v / c->cfg.vref_v * 4096.0);
    return ems_mcp4725_set_code(c, code > (long)MCP_CODE_MAX ? MCP_CODE_MAX : (unsigned)code);
}

int ems_mcp4725_safe(ems_mcp4725_t *c)
{
    if (!c->configured) {
        snprintf(c->err, sizeof c->err, "MCP4725: not configured (init was refused)");
        return EMS_EINVAL;
    }
    return mcp__write_verified(c, 0);
}

int ems_mcp4725_probe(ems_mcp4725_t *c, FILE *out)
{
    fprintf(out, "MCP4725 at %s 0x%02x (init %s)\n", c->bus->name, c->cfg.address,
            c->ready ? "ok" : "failed");
    uint8_t b[5];
    mcp__state_t s;
    int rc = mcp__read(c, b, &s);
    if (rc < 0) {
        char msg[160];
        ems_i2c_explain(c->bus, c->cfg.address, rc, "reading", msg, sizeof msg);
        fprintf(out, "  %s\n", msg);
        return rc;
    }
    static const char *const pd[4] = {"normal", "power-down 1k", "power-down 100k",
                                      "power-down 500k"};
    double vref = c->configured ? c->cfg.vref_v : NAN;
    fprintf(out, "  read-back     %02x %02x %02x %02x %02x\n", b[0], b[1], b[2], b[3], b[4]);
    fprintf(out, "  status        %s, %s\n", s.rdy ? "ready" : "EEPROM write in progress",
            pd[s.pd]);
    fprintf(out, "  DAC           code %u = %.3f V (vref %.2f V)\n", s.dac, vref * s.dac / 4096.0,
            vref);
    fprintf(out, "  EEPROM        code %u, %s: power-on output %.3f V%s\n", s.ee_dac, pd[s.ee_pd],
            s.ee_pd ? 0.0 : vref * s.ee_dac / 4096.0,
            (s.ee_dac || s.ee_pd) ? " (init stores code 0, normal)" : "");
    fprintf(out, "  bus counters  transfers %llu, nacks %llu, retries %llu, errors %llu\n",
            (unsigned long long)c->bus->transfers, (unsigned long long)c->bus->nacks,
            (unsigned long long)c->bus->retries, (unsigned long long)c->bus->errors);
    return 0;
}
