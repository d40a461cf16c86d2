/* mcp4725.c: Microchip MCP4725 12-bit DAC (DS22039): the inverter's analog
 * power reference.
 *
 * Commands (the upper bits of the first byte):
 *   00 PD1 PD0 D11..D8, D7..D0        fast write of the DAC register; the
 *                                     2-byte pairs may repeat, the last wins
 *   010 x x PD1 PD0 x, D11..D4, D3..D0 xxxx   write the DAC register
 *   011 x x PD1 PD0 x, (same)         write the DAC register and the EEPROM;
 *                                     RDY/BSY reads 0 for 25 ms, and a
 *                                     further EEPROM write meanwhile is
 *                                     ignored (our reading of the datasheet)
 * A read returns up to 5 bytes and then repeats them: status (RDY/BSY,
 * POR, PD1, PD0 at bits 7, 6, 2, 1), the DAC register (D11..D4, D3..D0 << 4),
 * the EEPROM (PD1 PD0 at bits 6:5, D11..D8; D7..D0). Power-down modes
 * (PD != 0) pull the output to ground through 1k/100k/500k: 0 V here.
 * At power-on, and on a general-call reset (0x00, 0x06), the DAC register
 * loads the EEPROM; a general-call wake-up (0x09) clears the PD bits. The
 * EEPROM keeps its content across power cycles (control key reset=) but not
 * across processes: each process starts with dac_eeprom_code.
 */
#include "hwemu.h"

#include <stdlib.h>

#define MCP4725_EEPROM_WRITE_NS (25 * 1000000LL)

typedef struct {
    hwemu_chip_t chip;
    unsigned code, pd;               /* the DAC register */
    unsigned eeprom_code, eeprom_pd; /* the EEPROM */
    int64_t busy_until_ns;
} mcp4725_t;

static mcp4725_t *dac__of(hwemu_chip_t *c)
{
    return (mcp4725_t *)(void *)c;
}

static const mcp4725_t *dac__cof(const hwemu_chip_t *c)
{
    return (const mcp4725_t *)(const void *)c;
}

double hwemu_mcp4725_volts(const hwemu_chip_t *c)
{
    const mcp4725_t *s = dac__cof(c);
    if (s->pd != 0)
        return 0.0;
    return (double)s->code / 4096.0 * c->emu->cfg.dac_vref_v;
}

unsigned hwemu_mcp4725_code(const hwemu_chip_t *c)
{
    return dac__cof(c)->code;
}

static bool dac__busy(const mcp4725_t *s)
{
    return s->chip.emu->phys.now_ns < s->busy_until_ns;
}

static void dac__set(mcp4725_t *s, unsigned code, unsigned pd)
{
    bool changed = code != s->code || pd != s->pd;
    s->code = code & 0xFFF;
    s->pd = pd & 3;
    if (changed)
        hwemu_outputs_changed(s->chip.emu);
}

static void dac__reset(hwemu_chip_t *c)
{
    mcp4725_t *s = dac__of(c);
    s->busy_until_ns = 0;
    s->code = s->eeprom_code;
    s->pd = s->eeprom_pd;
}

static int dac__write(hwemu_chip_t *c, const uint8_t *buf, size_t len)
{
    mcp4725_t *s = dac__of(c);
    if (len == 0)
        return 0;
    unsigned cmd = buf[0] >> 5;
    if ((cmd >> 1) == 0) { /* fast mode */
        unsigned code = s->code, pd = s->pd;
        size_t i;
        for (i = 0; i + 1 < len; i += 2) {
            pd = (buf[i] >> 4) & 3;
            code = ((unsigned)(buf[i] & 0x0F) << 8) | buf[i + 1];
        }
        if (i > 0)
            dac__set(s, code, pd);
        return 0;
    }
    if (cmd != 2 && cmd != 3)
        return 0; /* reserved commands: the MCP4725 ignores them */
    for (size_t i = 0; i + 2 < len; i += 3) {
        unsigned c3 = buf[i] >> 5;
        if (c3 != 2 && c3 != 3)
            break;
        unsigned pd = (buf[i] >> 1) & 3;
        unsigned code = ((unsigned)buf[i + 1] << 4) | (buf[i + 2] >> 4);
        if (c3 == 3) {
            if (dac__busy(s))
                continue;
            s->eeprom_code = code;
            s->eeprom_pd = pd;
            s->busy_until_ns = c->emu->phys.now_ns + MCP4725_EEPROM_WRITE_NS;
            hwemu_log(c->emu, "mcp4725 0x%02x: EEPROM <- code %u pd %u", c->addr, code, pd);
        }
        dac__set(s, code, pd);
    }
    return 0;
}

static int dac__read(hwemu_chip_t *c, uint8_t *buf, size_t len)
{
    mcp4725_t *s = dac__of(c);
    uint8_t b[5];
    b[0] = (uint8_t)((dac__busy(s) ? 0 : 0x80) | 0x40 | (s->pd << 1));
    b[1] = (uint8_t)(s->code >> 4);
    b[2] = (uint8_t)((s->code & 0xF) << 4);
    b[3] = (uint8_t)((s->eeprom_pd << 5) | (s->eeprom_code >> 8));
    b[4] = (uint8_t)(s->eeprom_code & 0xFF);
    bool wrong = c->emu->ctl.wrong_id[c->addr];
    for (size_t i = 0; i < len; i++)
        buf[i] = wrong ? 0xFF : b[i % 5];
    return 0;
}

static void dac__general_call(hwemu_chip_t *c, uint8_t cmd)
{
    mcp4725_t *s = dac__of(c);
    if (cmd == 0x06) {
        hwemu_log(c->emu, "mcp4725 0x%02x: general-call reset", c->addr);
        s->busy_until_ns = 0;
        dac__set(s, s->eeprom_code, s->eeprom_pd);
    } else if (cmd == 0x09) {
        hwemu_log(c->emu, "mcp4725 0x%02x: general-call wake-up", c->addr);
        dac__set(s, s->code, 0);
    }
}

static const hwemu_chip_ops_t mcp4725__ops = {.name = "MCP4725",
                                              .reset = dac__reset,
                                              .write = dac__write,
                                              .read = dac__read,
                                              .general_call = dac__general_call};

hwemu_chip_t *hwemu_mcp4725_new(hwemu_t *e, unsigned addr)
{
    mcp4725_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->chip.ops = &mcp4725__ops;
    s->chip.emu = e;
    s->chip.addr = addr;
    s->eeprom_code = e->cfg.dac_eeprom_code & 0xFFF;
    s->eeprom_pd = 0;
    dac__reset(&s->chip);
    return &s->chip;
}
