/* ade7953.c: Analog Devices ADE7953 single-phase meter on the grid
 * connection, in I2C mode (address 0x38).
 *
 * A transaction writes the 16-bit register address MSB first, then either
 * the data (MSB first) or, after a repeated start, reads it. The width
 * follows from the address: 0x000-0x0FF 8 bits, 0x100-0x1FF 16 bits,
 * 0x200-0x2FF 24 bits, 0x300-0x3FF the same registers as 32 bits (signed
 * ones sign-extended), plus VERSION (0x702) and EX_REF (0x800), 8 bits.
 *
 * Measurements come from the plant through the configured transfer
 * functions (code = physical / per_lsb) and then through the chip's own
 * gains and offsets (PGA_V, PGA_IA, AVGAIN, AIGAIN, AWGAIN, VRMSOS,
 * AIRMSOS, AWATTOS), so a driver's calibration writes act like on the chip:
 *   VRMS 0x31C, IRMSA 0x31A (unsigned), AWATT 0x312 (signed, + = import),
 *   AVA 0x310, AVAR 0x314 (about 0: a resistive house), IA/V 0x316/0x318
 *   instantaneous samples, PFA 0x10A (0x7FFF = 1, signed with the power),
 *   PERIOD 0x10E = 223750 / f - 1 (0xFFFF without a grid voltage).
 * Also emulated: reset values (AP_NOLOAD 0x00E419, LCYCMODE 0x40, CONFIG
 * 0x8004, gains 0x400000, ...), CONFIG.SWRST, the 0xFE = 0xAD unlock that
 * must come immediately before a write of 0x120, WRITE_PROTECT, LAST_OP /
 * LAST_ADD / LAST_RWDATA, IRQSTATA.RESET (bit 20) after a reset and its
 * clearing by reading RSTIRQSTATA. Not emulated: the energy registers
 * (they read 0), channel B (reads 0), peaks, sag, the CF outputs, the
 * IRQ pin and the zero-crossing timeout.
 */
#include "hwemu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ADE_VERSION_VALUE 0x02 /* our choice: the datasheet gives none */
#define ADE_FS_RMS 9032007.0   /* VRMS/IRMS at full-scale input */
#define ADE_GAIN_ONE 4194304.0 /* 0x400000 */
#define ADE_IRQ_RESET (1u << 20)

enum {
    /* 8 bit */
    ADE_SAGCYC = 0x000,
    ADE_DISNOLOAD = 0x001,
    ADE_LCYCMODE = 0x004,
    ADE_PGA_V = 0x007,
    ADE_PGA_IA = 0x008,
    ADE_PGA_IB = 0x009,
    ADE_WRITE_PROTECT = 0x040,
    ADE_LAST_OP = 0x0FD,
    ADE_UNLOCK = 0x0FE,
    ADE_LAST_RWDATA8 = 0x0FF,
    ADE_VERSION = 0x702,
    ADE_EX_REF = 0x800,
    /* 16 bit */
    ADE_ZXTOUT = 0x100,
    ADE_LINECYC = 0x101,
    ADE_CONFIG = 0x102,
    ADE_CF1DEN = 0x103,
    ADE_CF2DEN = 0x104,
    ADE_CFMODE = 0x107,
    ADE_PFA = 0x10A,
    ADE_PFB = 0x10B,
    ADE_ANGLE_A = 0x10C,
    ADE_PERIOD = 0x10E,
    ADE_RESERVED_120 = 0x120,
    ADE_LAST_ADD = 0x1FE,
    ADE_LAST_RWDATA16 = 0x1FF,
    /* 24/32 bit, by the low byte */
    ADE_AP_NOLOAD = 0x03,
    ADE_VAR_NOLOAD = 0x04,
    ADE_AVA = 0x10,
    ADE_AWATT = 0x12,
    ADE_AVAR = 0x14,
    ADE_IA = 0x16,
    ADE_V = 0x18,
    ADE_IRMSA = 0x1A,
    ADE_VRMS = 0x1C,
    ADE_OVLVL = 0x24,
    ADE_OILVL = 0x25,
    ADE_IRQENA = 0x2C,
    ADE_IRQSTATA = 0x2D,
    ADE_RSTIRQSTATA = 0x2E,
    ADE_CRC = 0x7F,
    ADE_AIGAIN = 0x80,
    ADE_AVGAIN = 0x81,
    ADE_AWGAIN = 0x82,
    ADE_AVARGAIN = 0x83,
    ADE_AVAGAIN = 0x84,
    ADE_AIRMSOS = 0x86,
    ADE_VRMSOS = 0x88,
    ADE_AWATTOS = 0x89,
    ADE_BIGAIN = 0x8C,
    ADE_BVGAIN = 0x8D,
    ADE_BWGAIN = 0x8E,
    ADE_BVARGAIN = 0x8F,
    ADE_BVAGAIN = 0x90,
    ADE_LAST_RWDATA24 = 0xFF,
};
#define ADE_CONFIG_SWRST 0x0080

typedef struct {
    hwemu_chip_t chip;
    uint16_t ptr;
    uint8_t r8[256];
    uint16_t r16[256];
    uint32_t r24[256];
    uint8_t ex_ref;
    bool unlocked; /* 0xFE = 0xAD was the last write */
    uint32_t irqstata;
    /* the last measurement (kept while the chip is stuck) */
    int64_t vrms, irms, awatt, ava, avar, v_inst, i_inst, period, pf;
    int64_t read_vrms, read_irms, read_awatt;
} ade7953_t;

static ade7953_t *ade__of(hwemu_chip_t *c)
{
    return (ade7953_t *)(void *)c;
}

static bool ade__signed24(uint8_t r)
{
    return (r >= ADE_AVA && r <= ADE_V) || (r >= 0x1E && r <= 0x23) || r == 0x85 ||
           (r >= ADE_AIRMSOS && r <= 0x8B) || (r >= 0x91 && r <= 0x92) || (r >= 0x95 && r <= 0x97);
}

static int64_t ade__sext24(uint32_t v)
{
    return (v & 0x800000) ? (int64_t)v - 0x1000000 : (int64_t)v;
}

static void ade__reset(hwemu_chip_t *c)
{
    ade7953_t *s = ade__of(c);
    s->ptr = 0;
    memset(s->r8, 0, sizeof s->r8);
    memset(s->r16, 0, sizeof s->r16);
    memset(s->r24, 0, sizeof s->r24);
    s->r8[ADE_LCYCMODE] = 0x40;
    s->r16[ADE_ZXTOUT & 0xFF] = 0xFFFF;
    s->r16[ADE_CONFIG & 0xFF] = 0x8004;
    s->r16[ADE_CF1DEN & 0xFF] = 0x003F;
    s->r16[ADE_CF2DEN & 0xFF] = 0x003F;
    s->r16[ADE_CFMODE & 0xFF] = 0x0300;
    s->r24[ADE_AP_NOLOAD] = 0x00E419;
    s->r24[ADE_VAR_NOLOAD] = 0x00E419;
    s->r24[ADE_OVLVL] = 0xFFFFFF;
    s->r24[ADE_OILVL] = 0xFFFFFF;
    s->r24[ADE_IRQENA] = 0x100000;
    for (unsigned r = ADE_AIGAIN; r <= ADE_AVAGAIN; r++)
        s->r24[r] = 0x400000;
    for (unsigned r = ADE_BIGAIN; r <= ADE_BVAGAIN; r++)
        s->r24[r] = 0x400000;
    s->ex_ref = 0;
    s->unlocked = false;
    s->irqstata = ADE_IRQ_RESET;
    s->read_vrms = s->read_irms = s->read_awatt = INT64_MIN;
}

static double ade__pga(uint8_t code)
{
    static const double g[8] = {1, 2, 4, 8, 16, 22, 1, 1};
    return g[code & 7];
}

/* A fresh measurement from the plant, unless the chip is stuck. */
static void ade__measure(ade7953_t *s)
{
    hwemu_t *e = s->chip.emu;
    if (e->ctl.stuck[s->chip.addr])
        return;
    const hwemu_config_t *c = &e->cfg;
    const hwemu_phys_t *p = &e->phys;
    hwemu_chip_t *chip = &s->chip;
    double gv = ade__pga(s->r8[ADE_PGA_V]) * s->r24[ADE_AVGAIN] / ADE_GAIN_ONE;
    double gi = ade__pga(s->r8[ADE_PGA_IA]) * s->r24[ADE_AIGAIN] / ADE_GAIN_ONE;
    double gw = s->r24[ADE_AWGAIN] / ADE_GAIN_ONE;
    double volts = p->grid_v, watts = p->grid_w;
    double amps = volts > 1.0 ? fabs(watts) / volts : 0.0;

    double v_ideal = volts / c->grid_v_per_lsb * gv + ade__sext24(s->r24[ADE_VRMSOS]);
    double i_ideal = amps / c->grid_a_per_lsb * gi + ade__sext24(s->r24[ADE_AIRMSOS]);
    double w_ideal = watts / c->grid_w_per_lsb * gv * gi * gw + ade__sext24(s->r24[ADE_AWATTOS]);
    /* Noise: about 50 mV, 5 mA and 1 W with the default transfer functions,
     * never below a few codes. */
    double v_sig = fmax(0.05 / c->grid_v_per_lsb, 20.0);
    double i_sig = fmax(0.005 / c->grid_a_per_lsb, 20.0);
    double w_sig = fmax(1.0 / c->grid_w_per_lsb, 20.0);
    s->vrms =
        hwemu_adc_code(chip, fabs(v_ideal), v_sig, 0, (int64_t)(ADE_FS_RMS * 1.2), s->read_vrms);
    s->irms =
        hwemu_adc_code(chip, fabs(i_ideal), i_sig, 0, (int64_t)(ADE_FS_RMS * 1.2), s->read_irms);
    s->awatt = hwemu_adc_code(chip, w_ideal, w_sig, -0x800000, 0x7FFFFF, s->read_awatt);
    s->ava = llabs(s->awatt);
    s->avar = hwemu_clamp_round(w_sig * hwemu_chip_noise(chip), -0x800000, 0x7FFFFF);
    double phase = p->grid_hz > 0 ? fmod((double)p->now_ns * 1e-9 * p->grid_hz, 1.0) : 0.0;
    double sn = sin(2.0 * 3.14159265358979323846 * phase);
    s->v_inst = hwemu_clamp_round(s->vrms * sqrt(2.0) * sn, -0x800000, 0x7FFFFF);
    s->i_inst =
        hwemu_clamp_round((watts < 0 ? -1.0 : 1.0) * s->irms * sqrt(2.0) * sn, -0x800000, 0x7FFFFF);
    if (p->grid_hz > 1.0)
        s->period = hwemu_clamp_round(223750.0 / p->grid_hz - 1.0, 0, 0xFFFF);
    else
        s->period = 0xFFFF;
    if (s->ava > 0 && amps > 0.05)
        s->pf = watts < 0 ? -0x7FFF : 0x7FFF;
    else
        s->pf = 0;
}

static int ade__width(uint16_t a)
{
    if (a == ADE_VERSION || a == ADE_EX_REF || a < 0x100)
        return 1;
    if (a < 0x200)
        return 2;
    if (a < 0x300)
        return 3;
    if (a < 0x400)
        return 4;
    return 0;
}

static uint32_t ade__get(ade7953_t *s, uint16_t a)
{
    hwemu_t *e = s->chip.emu;
    bool wrong = e->ctl.wrong_id[s->chip.addr];
    if (a == ADE_VERSION)
        return wrong ? 0xFF : ADE_VERSION_VALUE;
    if (a == ADE_EX_REF)
        return s->ex_ref;
    if (a < 0x100)
        return s->r8[a];
    if (a < 0x200) {
        switch (a) {
        case ADE_PERIOD:
            ade__measure(s);
            return (uint32_t)s->period;
        case ADE_PFA:
            ade__measure(s);
            return (uint32_t)s->pf & 0xFFFF;
        default:
            return s->r16[a & 0xFF];
        }
    }
    uint8_t r = a & 0xFF;
    uint32_t v;
    switch (r) {
    case ADE_VRMS:
        ade__measure(s);
        s->read_vrms = s->vrms;
        v = (uint32_t)s->vrms;
        break;
    case ADE_IRMSA:
        ade__measure(s);
        s->read_irms = s->irms;
        v = (uint32_t)s->irms;
        break;
    case ADE_AWATT:
        ade__measure(s);
        s->read_awatt = s->awatt;
        v = (uint32_t)s->awatt;
        break;
    case ADE_AVA:
        ade__measure(s);
        v = (uint32_t)s->ava;
        break;
    case ADE_AVAR:
        ade__measure(s);
        v = (uint32_t)s->avar;
        break;
    case ADE_IA:
        ade__measure(s);
        v = (uint32_t)s->i_inst;
        break;
    case ADE_V:
        ade__measure(s);
        v = (uint32_t)s->v_inst;
        break;
    case ADE_IRQSTATA:
        v = s->irqstata;
        break;
    case ADE_RSTIRQSTATA:
        v = s->irqstata;
        s->irqstata = 0;
        break;
    case ADE_AP_NOLOAD:
        v = wrong ? 0 : s->r24[r];
        break;
    case ADE_CRC:
        v = 0xFFFFFFFF; /* not computed */
        return a >= 0x300 ? v : v & 0xFFFFFF;
    default:
        v = s->r24[r];
        break;
    }
    v &= 0xFFFFFF;
    if (a >= 0x300 && ade__signed24(r) && (v & 0x800000))
        v |= 0xFF000000u;
    return v;
}

static bool ade__protected(const ade7953_t *s, uint16_t a)
{
    uint8_t wp = s->r8[ADE_WRITE_PROTECT];
    if (a == ADE_WRITE_PROTECT)
        return false;
    if (a < 0x100 || a == ADE_VERSION || a == ADE_EX_REF)
        return wp & 1;
    if (a < 0x200)
        return wp & 2;
    return wp & 4;
}

static void ade__set(ade7953_t *s, uint16_t a, uint32_t v)
{
    bool was_unlocked = s->unlocked;
    s->unlocked = false;
    if (ade__protected(s, a))
        return;
    if (a == ADE_EX_REF) {
        s->ex_ref = v & 1;
    } else if (a == ADE_UNLOCK) {
        s->r8[a] = (uint8_t)v;
        s->unlocked = v == 0xAD;
    } else if (a < 0x100) {
        if (a != ADE_LAST_OP && a != ADE_LAST_RWDATA8)
            s->r8[a] = (uint8_t)v;
    } else if (a < 0x200) {
        switch (a) {
        case ADE_CONFIG:
            if (v & ADE_CONFIG_SWRST) {
                ade__reset(&s->chip);
                return;
            }
            s->r16[a & 0xFF] = (uint16_t)v;
            break;
        case ADE_RESERVED_120:
            if (was_unlocked)
                s->r16[a & 0xFF] = (uint16_t)v;
            break;
        case ADE_PFA:
        case ADE_PFB:
        case ADE_ANGLE_A:
        case ADE_ANGLE_A + 1:
        case ADE_PERIOD:
        case ADE_LAST_ADD:
        case ADE_LAST_RWDATA16:
            break; /* read-only */
        default:
            s->r16[a & 0xFF] = (uint16_t)v;
            break;
        }
    } else if (a < 0x400) {
        uint8_t r = a & 0xFF;
        bool ro = (r >= ADE_AVA && r <= 0x23) || (r >= 0x26 && r <= 0x2B) || r == ADE_IRQSTATA ||
                  r == ADE_RSTIRQSTATA || r == 0x30 || r == 0x31 || r == ADE_CRC ||
                  r == ADE_LAST_RWDATA24;
        if (!ro)
            s->r24[r] = v & 0xFFFFFF;
    }
}

/* LAST_OP / LAST_ADD / LAST_RWDATA: what the last good access was. */
static void ade__remember(ade7953_t *s, uint16_t a, uint32_t v, bool wr)
{
    s->r8[ADE_LAST_OP] = wr ? 0xCA : 0x35;
    s->r16[ADE_LAST_ADD & 0xFF] = a;
    int w = ade__width(a);
    if (w == 1)
        s->r8[ADE_LAST_RWDATA8] = (uint8_t)v;
    else if (w == 2)
        s->r16[ADE_LAST_RWDATA16 & 0xFF] = (uint16_t)v;
    else if (w >= 3)
        s->r24[ADE_LAST_RWDATA24] = v & 0xFFFFFF;
}

static int ade__write(hwemu_chip_t *c, const uint8_t *buf, size_t len)
{
    ade7953_t *s = ade__of(c);
    if (len < 2)
        return 0;
    s->ptr = (uint16_t)((buf[0] << 8) | buf[1]);
    int w = ade__width(s->ptr);
    if (len < 2 + (size_t)(w ? w : 1))
        return 0; /* an address for the next read, or an incomplete write */
    uint32_t v = 0;
    for (int i = 0; i < w; i++)
        v = (v << 8) | buf[2 + i];
    ade__set(s, s->ptr, v);
    ade__remember(s, s->ptr, v, true);
    return 0;
}

static int ade__read(hwemu_chip_t *c, uint8_t *buf, size_t len)
{
    ade7953_t *s = ade__of(c);
    int w = ade__width(s->ptr);
    uint32_t v = w ? ade__get(s, s->ptr) : 0;
    for (size_t i = 0; i < len; i++)
        buf[i] = (int)i < w ? (uint8_t)(v >> (8 * (w - 1 - (int)i))) : 0;
    if (w)
        ade__remember(s, s->ptr, v, false);
    return 0;
}

static const hwemu_chip_ops_t ade7953__ops = {
    .name = "ADE7953", .reset = ade__reset, .write = ade__write, .read = ade__read};

hwemu_chip_t *hwemu_ade7953_new(hwemu_t *e, unsigned addr)
{
    ade7953_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->chip.ops = &ade7953__ops;
    s->chip.emu = e;
    s->chip.addr = addr;
    ems_rng_seed(&s->chip.rng, e->cfg.plant.seed * 1000003ULL + addr);
    ade__reset(&s->chip);
    ade__measure(s);
    return &s->chip;
}
