/* ina2xx.c: TI INA228 (SBOSA20) and INA226 (SBOS547) on the battery shunt.
 *
 * The physical inputs: the shunt voltage is battery current x shunt_ohms
 * (+ when charging), the bus input sees the battery voltage / bus_divider.
 * Everything else is the chip's own arithmetic on its registers:
 *
 * INA228  VSHUNT 20 bit, 312.5 nV/LSB (ADCRANGE 0) or 78.125 nV (1);
 *         VBUS 20 bit, 195.3125 uV/LSB; DIETEMP 7.8125 m°C/LSB;
 *         CURRENT = VSHUNT x 4096 / SHUNT_CAL, so that with the datasheet's
 *         SHUNT_CAL = 13107.2e6 x CURRENT_LSB x R (x4 with ADCRANGE 1) the
 *         reading times CURRENT_LSB is the current; POWER = |CURRENT| x VBUS
 *         / 16384 (3.2 x CURRENT_LSB per LSB); ENERGY (40 bit) and CHARGE
 *         (40 bit, signed) accumulate power/16 and current per second,
 *         RSTACC clears them; DIAG_ALRT.CNVRF is set by each completed
 *         conversion and cleared by reading DIAG_ALRT.
 * INA226  shunt 2.5 uV/LSB, bus 1.25 mV/LSB (15 bit, at most 40.96 V);
 *         CURRENT = SHUNT x CAL / 2048; POWER = |CURRENT| x BUS / 20000;
 *         MASK/ENABLE.CVRF set by a conversion, cleared by reading that
 *         register or writing CONFIG.
 *
 * Conversions follow the configured conversion times, averaging and mode
 * (continuous, triggered, shutdown); a register keeps the result of the
 * last completed conversion. Accumulators integrate in plant time, so
 * coulomb counting agrees with the plant's state of charge at any
 * plant_speed. Not emulated: the alert pin and limit comparisons, the
 * temperature compensation of the shunt (SHUNT_TEMPCO is stored only),
 * the accumulators' overflow flags.
 */
#include "hwemu.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* INA228 registers */
enum {
    INA228_CONFIG = 0x00,
    INA228_ADC_CONFIG = 0x01,
    INA228_SHUNT_CAL = 0x02,
    INA228_SHUNT_TEMPCO = 0x03,
    INA228_VSHUNT = 0x04,
    INA228_VBUS = 0x05,
    INA228_DIETEMP = 0x06,
    INA228_CURRENT = 0x07,
    INA228_POWER = 0x08,
    INA228_ENERGY = 0x09,
    INA228_CHARGE = 0x0A,
    INA228_DIAG_ALRT = 0x0B,
    INA228_SOVL = 0x0C,
    INA228_SUVL = 0x0D,
    INA228_BOVL = 0x0E,
    INA228_BUVL = 0x0F,
    INA228_TEMP_LIMIT = 0x10,
    INA228_PWR_LIMIT = 0x11,
    INA228_MANUFACTURER_ID = 0x3E,
    INA228_DEVICE_ID = 0x3F,
};
#define INA228_CONFIG_RST 0x8000
#define INA228_CONFIG_RSTACC 0x4000
#define INA228_CONFIG_ADCRANGE 0x0010
#define INA228_DIAG_CNVRF 0x0002
#define INA228_DIAG_MEMSTAT 0x0001

/* INA226 registers */
enum {
    INA226_CONFIG = 0x00,
    INA226_SHUNT = 0x01,
    INA226_BUS = 0x02,
    INA226_POWER = 0x03,
    INA226_CURRENT = 0x04,
    INA226_CAL = 0x05,
    INA226_MASK = 0x06,
    INA226_ALERT = 0x07,
    INA226_MANUFACTURER_ID = 0xFE,
    INA226_DIE_ID = 0xFF,
};
#define INA226_CONFIG_RST 0x8000
#define INA226_CONFIG_FIXED 0x4000 /* bits 14:12 read 100 */
#define INA226_MASK_CVRF 0x0008

typedef struct {
    hwemu_chip_t chip;
    hwemu_monitor_t type;
    uint8_t ptr;
    uint16_t reg16[0x40];                          /* INA228: the 16-bit registers, by address */
    uint16_t config, adc_config, cal, mask, alert; /* INA226 */

    /* the conversion engine */
    int64_t conv_start_ns;  /* when the current run of conversions started */
    int64_t conv_period_ns; /* one conversion (all channels, averaged) */
    int64_t conv_done;      /* conversions completed since conv_start_ns */
    bool continuous, running;
    bool cnvrf;
    int64_t last_conv_ns;

    /* results of the last conversion (raw codes) */
    int64_t vshunt, vbus, dietemp, current, power;
    /* what the host last read, to never hand out the same code twice */
    int64_t read_vshunt, read_vbus, read_dietemp;
    /* accumulators in raw units (double: sub-LSB precision between reads) */
    double energy, charge;
} ina2xx_t;

static ina2xx_t *ina__of(hwemu_chip_t *c)
{
    return (ina2xx_t *)(void *)c;
}

/* ------------------------------------------------------------------ timing */

static const unsigned ina228__ct_us[8] = {50, 84, 150, 280, 540, 1052, 2074, 4120};
static const unsigned ina226__ct_us[8] = {140, 204, 332, 588, 1100, 2116, 4156, 8244};
static const unsigned ina__avg[8] = {1, 4, 16, 64, 128, 256, 512, 1024};

/* Restarts the conversion engine after a configuration write. */
static void ina__restart(ina2xx_t *s, int64_t now)
{
    unsigned mode, t_us;
    int64_t delay_ns = 0;
    if (s->type == HWEMU_MON_INA228) {
        uint16_t a = s->reg16[INA228_ADC_CONFIG];
        mode = a >> 12;
        unsigned ch = mode & 7; /* bit 0 bus, bit 1 shunt, bit 2 temperature */
        t_us = ((ch & 1) ? ina228__ct_us[(a >> 9) & 7] : 0) +
               ((ch & 2) ? ina228__ct_us[(a >> 6) & 7] : 0) +
               ((ch & 4) ? ina228__ct_us[(a >> 3) & 7] : 0);
        t_us *= ina__avg[a & 7];
        s->continuous = mode >= 9;
        s->running = (mode & 7) != 0;
        delay_ns = (int64_t)((s->reg16[INA228_CONFIG] >> 6) & 0xff) * 2000000; /* CONVDLY */
    } else {
        uint16_t cfg = s->config;
        mode = cfg & 7;
        unsigned ch = mode & 3; /* bit 0 shunt, bit 1 bus */
        t_us = ((ch & 1) ? ina226__ct_us[(cfg >> 3) & 7] : 0) +
               ((ch & 2) ? ina226__ct_us[(cfg >> 6) & 7] : 0);
        t_us *= ina__avg[(cfg >> 9) & 7];
        s->continuous = (mode & 4) != 0;
        s->running = (mode & 3) != 0;
    }
    s->conv_period_ns = (int64_t)(t_us ? t_us : 1) * 1000;
    s->conv_start_ns = now + delay_ns;
    s->conv_done = 0;
}

/* Takes one conversion of the enabled channels at the present physics;
 * `count` conversions completed since the last look, and the accumulators
 * add the result for each of them (the chip adds CURRENT and POWER once per
 * conversion, so nothing accumulates in shutdown or between triggers). */
static void ina__convert(ina2xx_t *s, int64_t at_ns, int64_t count)
{
    hwemu_t *e = s->chip.emu;
    const hwemu_phys_t *p = &e->phys;
    hwemu_chip_t *c = &s->chip;
    bool is228 = s->type == HWEMU_MON_INA228;
    unsigned mode = is228 ? s->reg16[INA228_ADC_CONFIG] >> 12 : s->config & 7;
    bool bus_on = is228 ? (mode & 1) : (mode & 2);
    bool shunt_on = is228 ? (mode & 2) : (mode & 1);
    bool temp_on = is228 && (mode & 4);

    s->last_conv_ns = at_ns;

    double vsh = p->batt_a * e->cfg.shunt_ohms;
    double vbus = p->batt_v / e->cfg.bus_divider;
    if (is228) {
        double lsb = (s->reg16[INA228_CONFIG] & INA228_CONFIG_ADCRANGE) ? 78.125e-9 : 312.5e-9;
        if (shunt_on)
            s->vshunt = hwemu_adc_code(c, vsh / lsb, 1.5e-6 / lsb, -(1 << 19), (1 << 19) - 1,
                                       s->read_vshunt);
        if (bus_on)
            s->vbus = hwemu_adc_code(c, vbus / 195.3125e-6, 4.0, 0, (1 << 19) - 1, s->read_vbus);
        if (temp_on)
            s->dietemp =
                hwemu_adc_code(c, p->board_temp_c / 7.8125e-3, 3.0, -32768, 32767, s->read_dietemp);
        uint16_t cal = s->reg16[INA228_SHUNT_CAL] & 0x7fff;
        s->current =
            cal ? hwemu_clamp_round((double)s->vshunt * 4096.0 / cal, -(1 << 19), (1 << 19) - 1)
                : 0;
        s->power = hwemu_clamp_round(fabs((double)s->current) * (double)s->vbus / 16384.0, 0,
                                     (1 << 24) - 1);
        /* Per second of plant time: CHARGE += CURRENT, ENERGY += POWER / 16. */
        double dt = (double)count * (double)s->conv_period_ns * 1e-9 * e->cfg.plant_speed;
        s->charge += (double)s->current * dt;
        s->energy += (double)s->power * dt / 16.0;
    } else {
        if (shunt_on)
            s->vshunt = hwemu_adc_code(c, vsh / 2.5e-6, 1.0, -32768, 32767, s->read_vshunt);
        if (bus_on)
            s->vbus = hwemu_adc_code(c, vbus / 1.25e-3, 1.0, 0, 32767, s->read_vbus);
        /* The chip's integer arithmetic, truncating like the datasheet says. */
        int64_t cur = (s->vshunt * (int64_t)(s->cal & 0x7fff)) / 2048;
        s->current = cur < -32768 ? -32768 : cur > 32767 ? 32767 : cur;
        int64_t pw = (llabs(s->current) * s->vbus) / 20000;
        s->power = pw > 65535 ? 65535 : pw;
    }
    s->cnvrf = true;
}

/* Brings the conversions up to now. A stuck chip converts nothing. */
static void ina__update(ina2xx_t *s)
{
    hwemu_t *e = s->chip.emu;
    int64_t now = e->phys.now_ns;
    if (e->ctl.stuck[s->chip.addr] || !s->running || now < s->conv_start_ns)
        return;
    int64_t n = (now - s->conv_start_ns) / s->conv_period_ns;
    if (!s->continuous && n > 1)
        n = 1;
    if (n > s->conv_done) {
        ina__convert(s, s->conv_start_ns + n * s->conv_period_ns, n - s->conv_done);
        s->conv_done = n;
        if (!s->continuous)
            s->running = false;
    }
}

/* ------------------------------------------------------------------ registers */

static void ina__reset(hwemu_chip_t *c)
{
    ina2xx_t *s = ina__of(c);
    hwemu_t *e = c->emu;
    s->ptr = 0;
    memset(s->reg16, 0, sizeof s->reg16);
    s->reg16[INA228_CONFIG] = 0x0000;
    s->reg16[INA228_ADC_CONFIG] = 0xFB68;
    s->reg16[INA228_SHUNT_CAL] = 0x1000;
    s->reg16[INA228_SHUNT_TEMPCO] = 0x0000;
    s->reg16[INA228_DIAG_ALRT] = INA228_DIAG_MEMSTAT;
    s->reg16[INA228_SOVL] = 0x7FFF;
    s->reg16[INA228_SUVL] = 0x8000;
    s->reg16[INA228_BOVL] = 0x7FFF;
    s->reg16[INA228_BUVL] = 0x0000;
    s->reg16[INA228_TEMP_LIMIT] = 0x7FFF;
    s->reg16[INA228_PWR_LIMIT] = 0xFFFF;
    s->config = 0x4127;
    s->cal = 0;
    s->mask = 0;
    s->alert = 0;
    s->vshunt = s->vbus = s->dietemp = s->current = s->power = 0;
    s->read_vshunt = s->read_vbus = s->read_dietemp = INT64_MIN;
    s->energy = s->charge = 0;
    s->cnvrf = false;
    ina__restart(s, e->phys.now_ns);
}

static int ina__width228(uint8_t reg)
{
    switch (reg) {
    case INA228_VSHUNT:
    case INA228_VBUS:
    case INA228_CURRENT:
    case INA228_POWER:
        return 3;
    case INA228_ENERGY:
    case INA228_CHARGE:
        return 5;
    default:
        return 2;
    }
}

/* The value of register `reg` as `*width` bytes, big-endian in a uint64. */
static uint64_t ina__get228(ina2xx_t *s, uint8_t reg, int *width)
{
    hwemu_t *e = s->chip.emu;
    *width = ina__width228(reg);
    bool wrong = e->ctl.wrong_id[s->chip.addr];
    switch (reg) {
    case INA228_VSHUNT:
        s->read_vshunt = s->vshunt;
        return ((uint64_t)s->vshunt & 0xFFFFF) << 4;
    case INA228_VBUS:
        s->read_vbus = s->vbus;
        return ((uint64_t)s->vbus & 0xFFFFF) << 4;
    case INA228_DIETEMP:
        s->read_dietemp = s->dietemp;
        return (uint64_t)s->dietemp & 0xFFFF;
    case INA228_CURRENT:
        return ((uint64_t)s->current & 0xFFFFF) << 4;
    case INA228_POWER:
        return (uint64_t)s->power & 0xFFFFFF;
    case INA228_ENERGY: {
        double en = fmin(floor(s->energy), 1099511627775.0);
        return (uint64_t)en;
    }
    case INA228_CHARGE: {
        double q = fmax(fmin(floor(s->charge), 549755813887.0), -549755813888.0);
        return (uint64_t)(int64_t)q & 0xFFFFFFFFFFULL;
    }
    case INA228_DIAG_ALRT: {
        uint16_t v = s->reg16[INA228_DIAG_ALRT] | (s->cnvrf ? INA228_DIAG_CNVRF : 0);
        s->cnvrf = false; /* reading clears the flag */
        return v;
    }
    case INA228_MANUFACTURER_ID:
        return wrong ? 0x0000 : 0x5449;
    case INA228_DEVICE_ID:
        return wrong ? 0x2381 : 0x2281; /* 0x238: an INA238 */
    default:
        return reg < 0x40 ? s->reg16[reg] : 0;
    }
}

static uint64_t ina__get226(ina2xx_t *s, uint8_t reg, int *width)
{
    hwemu_t *e = s->chip.emu;
    bool wrong = e->ctl.wrong_id[s->chip.addr];
    *width = 2;
    switch (reg) {
    case INA226_CONFIG:
        return s->config;
    case INA226_SHUNT:
        s->read_vshunt = s->vshunt;
        return (uint64_t)s->vshunt & 0xFFFF;
    case INA226_BUS:
        s->read_vbus = s->vbus;
        return (uint64_t)s->vbus & 0x7FFF;
    case INA226_POWER:
        return (uint64_t)s->power & 0xFFFF;
    case INA226_CURRENT:
        return (uint64_t)s->current & 0xFFFF;
    case INA226_CAL:
        return s->cal;
    case INA226_MASK: {
        uint16_t v = s->mask | (s->cnvrf ? INA226_MASK_CVRF : 0);
        s->cnvrf = false;
        return v;
    }
    case INA226_ALERT:
        return s->alert;
    case INA226_MANUFACTURER_ID:
        return wrong ? 0x0000 : 0x5449;
    case INA226_DIE_ID:
        return wrong ? 0x2270 : 0x2260;
    default:
        return 0;
    }
}

static void ina__set228(ina2xx_t *s, uint8_t reg, uint16_t v)
{
    hwemu_t *e = s->chip.emu;
    switch (reg) {
    case INA228_CONFIG:
        if (v & INA228_CONFIG_RST) {
            ina__reset(&s->chip);
            return;
        }
        if (v & INA228_CONFIG_RSTACC)
            s->energy = s->charge = 0;
        s->reg16[INA228_CONFIG] = v & 0x3FF0; /* RST/RSTACC self-clear, 3:0 reserved */
        ina__restart(s, e->phys.now_ns);
        break;
    case INA228_ADC_CONFIG:
        s->reg16[reg] = v;
        ina__restart(s, e->phys.now_ns);
        break;
    case INA228_SHUNT_CAL:
        s->reg16[reg] = v & 0x7FFF;
        break;
    case INA228_SHUNT_TEMPCO:
        s->reg16[reg] = v & 0x3FFF;
        break;
    case INA228_DIAG_ALRT:
        /* Only the configuration bits 15:12 are writable. */
        s->reg16[reg] = (uint16_t)((v & 0xF000) | (s->reg16[reg] & 0x0FFF));
        break;
    case INA228_SOVL:
    case INA228_SUVL:
    case INA228_BOVL:
    case INA228_BUVL:
    case INA228_TEMP_LIMIT:
    case INA228_PWR_LIMIT:
        s->reg16[reg] = v;
        break;
    default:
        break; /* read-only or unimplemented: ignored like the chip does */
    }
}

static void ina__set226(ina2xx_t *s, uint8_t reg, uint16_t v)
{
    hwemu_t *e = s->chip.emu;
    switch (reg) {
    case INA226_CONFIG:
        if (v & INA226_CONFIG_RST) {
            ina__reset(&s->chip);
            return;
        }
        s->config = (uint16_t)((v & 0x0FFF) | INA226_CONFIG_FIXED);
        s->cnvrf = false;
        ina__restart(s, e->phys.now_ns);
        break;
    case INA226_CAL:
        s->cal = v & 0x7FFF;
        break;
    case INA226_MASK:
        s->mask = v & 0xFC03; /* alert enables, APOL, LEN; flags are read-only */
        break;
    case INA226_ALERT:
        s->alert = v;
        break;
    default:
        break;
    }
}

static int ina__write(hwemu_chip_t *c, const uint8_t *buf, size_t len)
{
    ina2xx_t *s = ina__of(c);
    ina__update(s);
    if (len == 0)
        return 0;
    s->ptr = buf[0];
    /* A register takes a complete 16-bit word; extra bytes are ignored. */
    if (len >= 3) {
        uint16_t v = (uint16_t)((buf[1] << 8) | buf[2]);
        if (s->type == HWEMU_MON_INA228)
            ina__set228(s, s->ptr, v);
        else
            ina__set226(s, s->ptr, v);
    }
    return 0;
}

static int ina__read(hwemu_chip_t *c, uint8_t *buf, size_t len)
{
    ina2xx_t *s = ina__of(c);
    ina__update(s);
    if (len == 0)
        return 0;
    int width;
    uint64_t v = s->type == HWEMU_MON_INA228 ? ina__get228(s, s->ptr, &width)
                                             : ina__get226(s, s->ptr, &width);
    /* The pointer does not move: clocking on repeats the register. */
    for (size_t i = 0; i < len; i++) {
        int k = (int)(i % (size_t)width);
        buf[i] = (uint8_t)(v >> (8 * (width - 1 - k)));
    }
    return 0;
}

static const hwemu_chip_ops_t ina228__ops = {
    .name = "INA228", .reset = ina__reset, .write = ina__write, .read = ina__read};
static const hwemu_chip_ops_t ina226__ops = {
    .name = "INA226", .reset = ina__reset, .write = ina__write, .read = ina__read};

hwemu_chip_t *hwemu_ina2xx_new(hwemu_t *e, unsigned addr, hwemu_monitor_t type)
{
    ina2xx_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->type = type;
    s->chip.ops = type == HWEMU_MON_INA226 ? &ina226__ops : &ina228__ops;
    s->chip.emu = e;
    s->chip.addr = addr;
    ems_rng_seed(&s->chip.rng, e->cfg.plant.seed * 1000003ULL + addr);
    ina__reset(&s->chip);
    /* The board has been powered for a while: a conversion is complete. */
    s->conv_start_ns -= s->conv_period_ns;
    return &s->chip;
}
