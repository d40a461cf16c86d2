/* tmp102.c: TI TMP102 on the battery pack (the plant's cell temperature).
 *
 * Pointer register P1:P0 selects TEMP (0, read-only), CONFIG (1), T_LOW (2)
 * and T_HIGH (3); every register is 16 bits, MSB first. TEMP is 12 bits
 * left-aligned, 0.0625 °C/LSB (13 bits with bit 0 set in extended mode,
 * EM). CONFIG resets to 0x60A0: R1:R0 = 11 (read-only), CR = 10 (4 Hz),
 * AL = 1 (read-only). T_LOW/T_HIGH reset to 75 / 80 °C. Conversions run
 * at the configured rate (0.25, 1, 4 or 8 Hz); shutdown (SD) stops them
 * and OS = 1 in shutdown takes one conversion. AL follows the comparator
 * (TM = 0) against T_HIGH/T_LOW with POL, without the fault queue; the
 * interrupt mode (TM = 1) is treated like the comparator.
 */
#include "hwemu.h"

#include <stdlib.h>
#include <string.h>

#define TMP102_SD 0x0100
#define TMP102_TM 0x0200
#define TMP102_POL 0x0400
#define TMP102_OS 0x8000
#define TMP102_R_BITS 0x6000
#define TMP102_AL 0x0020
#define TMP102_EM 0x0010

typedef struct {
    hwemu_chip_t chip;
    uint8_t ptr;
    uint16_t config, tlow, thigh;
    int64_t temp;      /* last conversion, in 0.0625 °C steps (13-bit range) */
    int64_t read_temp; /* what the host last saw */
    bool alert;        /* comparator state: temperature too high */
    int64_t next_conv_ns;
    bool one_shot_pending;
} tmp102_t;

static tmp102_t *tmp__of(hwemu_chip_t *c)
{
    return (tmp102_t *)(void *)c;
}

static int64_t tmp__period_ns(const tmp102_t *s)
{
    static const int64_t ms[4] = {4000, 1000, 250, 125};
    return ms[(s->config >> 6) & 3] * 1000000LL;
}

static void tmp__convert(tmp102_t *s)
{
    hwemu_t *e = s->chip.emu;
    double c = e->phys.batt_temp_c;
    s->temp = hwemu_adc_code(&s->chip, c / 0.0625, 0.6, -4096, 4095, s->read_temp);
    /* The comparator on the 12-bit value. */
    int64_t t12 = s->temp > 2047 ? 2047 : s->temp;
    if (t12 >= (int16_t)s->thigh >> 4)
        s->alert = true;
    else if (t12 < (int16_t)s->tlow >> 4)
        s->alert = false;
}

static void tmp__update(tmp102_t *s)
{
    hwemu_t *e = s->chip.emu;
    int64_t now = e->phys.now_ns;
    if (e->ctl.stuck[s->chip.addr])
        return;
    if (s->config & TMP102_SD) {
        if (s->one_shot_pending && now >= s->next_conv_ns) {
            tmp__convert(s);
            s->one_shot_pending = false;
        }
        return;
    }
    if (now >= s->next_conv_ns) {
        tmp__convert(s);
        int64_t p = tmp__period_ns(s);
        s->next_conv_ns += ((now - s->next_conv_ns) / p + 1) * p;
    }
}

static uint16_t tmp__config_read(const tmp102_t *s, bool wrong_id)
{
    uint16_t v = s->config & ~(TMP102_AL | TMP102_OS);
    /* AL shows the alert at the polarity POL: 1 = active high. */
    bool pol = s->config & TMP102_POL;
    if (s->alert == pol)
        v |= TMP102_AL;
    /* In shutdown, OS reads 0 while a one-shot conversion runs. */
    if ((s->config & TMP102_SD) && !s->one_shot_pending)
        v |= TMP102_OS;
    if (wrong_id)
        v &= ~TMP102_R_BITS; /* not a TMP102: the resolution bits read 00 */
    return v;
}

static void tmp__reset(hwemu_chip_t *c)
{
    tmp102_t *s = tmp__of(c);
    s->ptr = 0;
    s->config = 0x60A0;
    s->tlow = 0x4B00;
    s->thigh = 0x5000;
    s->alert = false;
    s->read_temp = INT64_MIN;
    s->one_shot_pending = false;
    /* The first conversion completes about 26 ms after power-on. */
    s->next_conv_ns = c->emu->phys.now_ns + 26000000LL;
    s->temp = 0;
}

static int tmp__write(hwemu_chip_t *c, const uint8_t *buf, size_t len)
{
    tmp102_t *s = tmp__of(c);
    tmp__update(s);
    if (len == 0)
        return 0;
    s->ptr = buf[0] & 3;
    if (len < 3)
        return 0;
    uint16_t v = (uint16_t)((buf[1] << 8) | buf[2]);
    switch (s->ptr) {
    case 1: {
        bool was_sd = s->config & TMP102_SD;
        /* R1:R0 and AL are read-only; bits 3:0 read zero. */
        s->config = (uint16_t)((v & ~(TMP102_R_BITS | TMP102_AL | TMP102_OS | 0x000F)) |
                               TMP102_R_BITS | TMP102_AL);
        if ((s->config & TMP102_SD) && (v & TMP102_OS)) {
            s->one_shot_pending = true;
            s->next_conv_ns = c->emu->phys.now_ns + 26000000LL;
        } else if (was_sd && !(s->config & TMP102_SD)) {
            s->next_conv_ns = c->emu->phys.now_ns + 26000000LL;
        }
        break;
    }
    case 2:
        s->tlow = v & 0xFFF0;
        break;
    case 3:
        s->thigh = v & 0xFFF0;
        break;
    default:
        break; /* TEMP is read-only */
    }
    return 0;
}

static int tmp__read(hwemu_chip_t *c, uint8_t *buf, size_t len)
{
    tmp102_t *s = tmp__of(c);
    tmp__update(s);
    uint16_t v;
    switch (s->ptr) {
    case 0:
        s->read_temp = s->temp;
        if (s->config & TMP102_EM) {
            v = (uint16_t)(((uint64_t)s->temp & 0x1FFF) << 3) | 1;
        } else {
            int64_t t12 = s->temp > 2047 ? 2047 : s->temp < -2048 ? -2048 : s->temp;
            v = (uint16_t)(((uint64_t)t12 & 0xFFF) << 4);
        }
        break;
    case 1:
        v = tmp__config_read(s, c->emu->ctl.wrong_id[c->addr]);
        break;
    case 2:
        v = s->tlow;
        break;
    default:
        v = s->thigh;
        break;
    }
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((i % 2) == 0 ? v >> 8 : v);
    return 0;
}

static const hwemu_chip_ops_t tmp102__ops = {
    .name = "TMP102", .reset = tmp__reset, .write = tmp__write, .read = tmp__read};

hwemu_chip_t *hwemu_tmp102_new(hwemu_t *e, unsigned addr)
{
    tmp102_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->chip.ops = &tmp102__ops;
    s->chip.emu = e;
    s->chip.addr = addr;
    ems_rng_seed(&s->chip.rng, e->cfg.plant.seed * 1000003ULL + addr);
    tmp__reset(&s->chip);
    /* The board has been powered for a while: the first conversion is done. */
    s->next_conv_ns = e->phys.now_ns;
    return &s->chip;
}
