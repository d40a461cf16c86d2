/* hwemu_check: drives the emulated hardware the way the edge's hardware back
 * end will (libgpiod 1.6 for GPIO, I2C_RDWR for the chips) and checks what
 * comes back, for test/suites/64-hwemu.sh. Run it with libemshwemu.so
 * preloaded; it knows nothing about the emulator except the state file.
 *
 *   hwemu_check [-c gpiochip0] [-b 1] freq LINE N [rising|falling|both]
 *       reads N events and prints "events=N freq_hz=F ..."
 *   hwemu_check overflow LINE
 *       does not read for a second, then checks the kernel's 16-event FIFO
 *   hwemu_check ebusy LINE
 *       a line requested twice answers EBUSY; released, it can be requested
 *   hwemu_check drive STATE [--both]
 *       DAC + enable lines -> the state file's command_w and the plant's
 *       battery power; the INA228's current follows with the right sign;
 *       --both also drives both enables at once and expects both_enables 1
 *   hwemu_check ina STATE
 *       INA228 arithmetic: CURRENT from VSHUNT and SHUNT_CAL, CHARGE
 *       accumulates and RSTACC clears it, CNVRF set by a conversion and
 *       cleared by reading, VBUS against the plant's voltage
 *   hwemu_check stuck CONTROL
 *       readings change from one read to the next; with stuck=0x40 in the
 *       control file they freeze and CNVRF stays clear
 *   hwemu_check nack CONTROL
 *       nack_once=0x40 fails the next transfer with EREMOTEIO, only that one
 *   hwemu_check stale
 *       an fd closed with syscall(SYS_close) and reused is not taken for ours
 *
 * Prints "ok: ..." lines and a final "PASS" or "FAIL: why"; exits 0 only on
 * PASS.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <gpiod.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *chip_name = "gpiochip0";
static int i2c_bus = 1;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stdout);
    vprintf(fmt, ap);
    fputs("\n", stdout);
    va_end(ap);
    fflush(stdout);
    return 1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------------ i2c */

static int i2c_open(void)
{
    char path[32];
    snprintf(path, sizeof path, "/dev/i2c-%d", i2c_bus);
    return open(path, O_RDWR | O_CLOEXEC);
}

/* Writes `wlen` bytes, then (if rlen) reads `rlen` after a repeated start. */
static int i2c_xfer(int fd, uint16_t addr, const uint8_t *w, uint16_t wlen, uint8_t *r,
                    uint16_t rlen)
{
    struct i2c_msg m[2];
    unsigned n = 0;
    if (wlen)
        m[n++] = (struct i2c_msg){.addr = addr, .flags = 0, .len = wlen, .buf = (uint8_t *)w};
    if (rlen)
        m[n++] = (struct i2c_msg){.addr = addr, .flags = I2C_M_RD, .len = rlen, .buf = r};
    struct i2c_rdwr_ioctl_data d = {.msgs = m, .nmsgs = n};
    return ioctl(fd, I2C_RDWR, &d) == (int)n ? 0 : -errno;
}

static int reg_read(int fd, uint16_t addr, uint8_t reg, unsigned width, uint64_t *v)
{
    uint8_t b[8];
    int rc = i2c_xfer(fd, addr, &reg, 1, b, (uint16_t)width);
    if (rc)
        return rc;
    *v = 0;
    for (unsigned i = 0; i < width; i++)
        *v = (*v << 8) | b[i];
    return 0;
}

static int reg_write16(int fd, uint16_t addr, uint8_t reg, uint16_t v)
{
    uint8_t b[3] = {reg, (uint8_t)(v >> 8), (uint8_t)v};
    return i2c_xfer(fd, addr, b, 3, NULL, 0);
}

static int64_t sext(uint64_t v, unsigned bits)
{
    uint64_t m = 1ULL << (bits - 1);
    return (int64_t)((v ^ m) - m);
}

/* ------------------------------------------------------------------ the state file */

static bool state_num(const char *path, const char *key, double *out)
{
    char buf[4096], pat[64];
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *p = strstr(buf, pat);
    if (!p)
        return false;
    p += strlen(pat);
    if (strncmp(p, "true", 4) == 0)
        return *out = 1, true;
    if (strncmp(p, "false", 5) == 0)
        return *out = 0, true;
    char *end;
    *out = strtod(p, &end);
    return end != p;
}

/* Waits up to 3 s for `key` within `tol` of `want`, touching the bus so the
 * emulator keeps running. */
static bool state_wait(const char *path, int i2c, const char *key, double want, double tol,
                       double *got)
{
    for (int i = 0; i < 60; i++) {
        uint64_t v;
        reg_read(i2c, 0x40, 0x05, 3, &v);
        if (state_num(path, key, got) && fabs(*got - want) <= tol)
            return true;
        sleep_ms(50);
    }
    return false;
}

/* ------------------------------------------------------------------ gpio: events */

static int cmd_freq(unsigned line, int n, const char *edges)
{
    struct gpiod_chip *chip = gpiod_chip_open_by_name(chip_name);
    if (!chip)
        return fail("gpiod_chip_open_by_name(%s): %s", chip_name, strerror(errno));
    struct gpiod_line *l = gpiod_chip_get_line(chip, line);
    if (!l)
        return fail("gpiod_chip_get_line(%u): %s", line, strerror(errno));
    int rc;
    if (strcmp(edges, "both") == 0)
        rc = gpiod_line_request_both_edges_events(l, "hwemu_check");
    else if (strcmp(edges, "falling") == 0)
        rc = gpiod_line_request_falling_edge_events(l, "hwemu_check");
    else
        rc = gpiod_line_request_rising_edge_events(l, "hwemu_check");
    if (rc)
        return fail("request events: %s", strerror(errno));
    int got = 0, rising = 0, falling = 0;
    int64_t first_rise = 0, last_rise = 0, prev = 0, min_gap = INT64_MAX, max_gap = 0;
    struct timespec timeout = {2, 0};
    while (got < n) {
        rc = gpiod_line_event_wait(l, &timeout);
        if (rc < 0)
            return fail("gpiod_line_event_wait: %s", strerror(errno));
        if (rc == 0)
            return fail("no event within 2 s after %d events", got);
        struct gpiod_line_event ev[16];
        int k = gpiod_line_event_read_multiple(l, ev, 16);
        if (k < 0)
            return fail("gpiod_line_event_read_multiple: %s", strerror(errno));
        for (int i = 0; i < k && got < n; i++, got++) {
            int64_t t = (int64_t)ev[i].ts.tv_sec * 1000000000LL + ev[i].ts.tv_nsec;
            if (prev && t < prev)
                return fail("timestamps go backwards at event %d", got);
            if (prev) {
                min_gap = t - prev < min_gap ? t - prev : min_gap;
                max_gap = t - prev > max_gap ? t - prev : max_gap;
            }
            prev = t;
            if (ev[i].event_type == GPIOD_LINE_EVENT_RISING_EDGE) {
                if (!rising++)
                    first_rise = t;
                last_rise = t;
            } else {
                falling++;
            }
        }
    }
    int64_t now = mono_ns();
    if (llabs(now - prev) > 2000000000LL)
        return fail("the last timestamp is %.3f s from CLOCK_MONOTONIC now",
                    (double)(now - prev) / 1e9);
    double freq = rising > 1 ? (rising - 1) / ((double)(last_rise - first_rise) / 1e9) : 0.0;
    if (strcmp(edges, "falling") == 0 && falling > 1)
        freq = 0; /* only falling edges: the gaps say it */
    printf("events=%d rising=%d falling=%d freq_hz=%.4f min_gap_ms=%.3f max_gap_ms=%.3f\n", got,
           rising, falling, freq, (double)min_gap / 1e6, (double)max_gap / 1e6);
    gpiod_line_release(l);
    gpiod_chip_close(chip);
    puts("PASS");
    return 0;
}

static int cmd_overflow(unsigned line)
{
    struct gpiod_chip *chip = gpiod_chip_open_by_name(chip_name);
    struct gpiod_line *l = chip ? gpiod_chip_get_line(chip, line) : NULL;
    if (!l || gpiod_line_request_rising_edge_events(l, "hwemu_check"))
        return fail("request events on %s %u: %s", chip_name, line, strerror(errno));
    sleep_ms(1000); /* ~50 edges at 50 Hz: more than the FIFO holds */
    struct gpiod_line_event ev[16];
    int k = gpiod_line_event_read_multiple(l, ev, 16);
    if (k != 16)
        return fail("read %d events after a second, want a full FIFO of 16", k);
    int64_t now = mono_ns();
    int64_t newest = (int64_t)ev[15].ts.tv_sec * 1000000000LL + ev[15].ts.tv_nsec;
    int64_t oldest = (int64_t)ev[0].ts.tv_sec * 1000000000LL + ev[0].ts.tv_nsec;
    if (now - newest > 250000000LL)
        return fail("the newest event is %.0f ms old: the FIFO kept old ones",
                    (double)(now - newest) / 1e6);
    if (newest - oldest > 400000000LL)
        return fail("16 events span %.0f ms: not the 16 newest", (double)(newest - oldest) / 1e6);
    /* Nothing else is pending: a non-blocking wait times out or finds the
     * next edge, which comes within a period. */
    struct timespec zero = {0, 0};
    int rc = gpiod_line_event_wait(l, &zero);
    printf("ok: FIFO full at 16, the oldest dropped (span %.0f ms), pending after read: %d\n",
           (double)(newest - oldest) / 1e6, rc);
    gpiod_chip_close(chip);
    puts("PASS");
    return 0;
}

static int cmd_ebusy(unsigned line)
{
    struct gpiod_chip *a = gpiod_chip_open_by_name(chip_name);
    struct gpiod_chip *b = gpiod_chip_open_by_name(chip_name);
    if (!a || !b)
        return fail("open %s twice: %s", chip_name, strerror(errno));
    struct gpiod_line *la = gpiod_chip_get_line(a, line), *lb = gpiod_chip_get_line(b, line);
    if (!la || !lb || gpiod_line_request_output(la, "first", 0))
        return fail("request line %u: %s", line, strerror(errno));
    if (gpiod_line_update(lb) || !gpiod_line_is_used(lb))
        return fail("line %u is not shown as used", line);
    if (strcmp(gpiod_line_consumer(lb) ? gpiod_line_consumer(lb) : "", "first") != 0)
        return fail("consumer is '%s', want 'first'", gpiod_line_consumer(lb));
    errno = 0;
    if (gpiod_line_request_output(lb, "second", 0) == 0 || errno != EBUSY)
        return fail("second request: %s, want EBUSY", errno ? strerror(errno) : "success");
    puts("ok: the second request answers EBUSY");
    gpiod_line_release(la);
    if (gpiod_line_request_output(lb, "second", 0))
        return fail("after release: %s", strerror(errno));
    puts("ok: after the release the line can be requested again");
    gpiod_chip_close(a);
    gpiod_chip_close(b);
    puts("PASS");
    return 0;
}

/* ------------------------------------------------------------------ the inverter */

#define DAC 0x60
#define INA 0x40

static int dac_fast_write(int fd, unsigned code)
{
    uint8_t b[2] = {(uint8_t)((code >> 8) & 0x0F), (uint8_t)code};
    return i2c_xfer(fd, DAC, b, 2, NULL, 0);
}

/* The INA228's current in A with a 200 A range on the 0.5 mOhm shunt. */
static int ina_current(int fd, double *amps)
{
    const double lsb = 200.0 / 524288.0;
    uint64_t v;
    int rc = reg_read(fd, INA, 0x07, 3, &v);
    if (rc)
        return rc;
    *amps = (double)sext(v >> 4, 20) * lsb;
    return 0;
}

static int cmd_drive(const char *state, bool both)
{
    int i2c = i2c_open();
    if (i2c < 0)
        return fail("open /dev/i2c-%d: %s", i2c_bus, strerror(errno));
    /* SHUNT_CAL for CURRENT_LSB = 200 A / 2^19 on 0.5 mOhm. */
    unsigned cal = (unsigned)lround(13107.2e6 * (200.0 / 524288.0) * 0.0005);
    if (reg_write16(i2c, INA, 0x02, (uint16_t)cal))
        return fail("write SHUNT_CAL: %s", strerror(errno));

    struct gpiod_chip *chip = gpiod_chip_open_by_name(chip_name);
    if (!chip)
        return fail("open %s: %s", chip_name, strerror(errno));
    struct gpiod_line *ch = gpiod_chip_get_line(chip, 17), *dis = gpiod_chip_get_line(chip, 27);
    if (!ch || !dis || gpiod_line_request_output(ch, "hwemu_check", 0) ||
        gpiod_line_request_output(dis, "hwemu_check", 0))
        return fail("request the enable lines: %s", strerror(errno));

    double got;
    /* 1.65 V on a 3.3 V reference = code 2048 = 3000 W at 3.3 V / 6 kW. */
    if (dac_fast_write(i2c, 2048))
        return fail("DAC fast write: %s", strerror(errno));
    uint8_t rb[5];
    if (i2c_xfer(i2c, DAC, NULL, 0, rb, 5) || ((rb[1] << 4) | (rb[2] >> 4)) != 2048)
        return fail("DAC read-back: %02x %02x %02x", rb[0], rb[1], rb[2]);
    puts("ok: DAC reads back code 2048");
    if (!state_wait(state, i2c, "command_w", 0, 0.001, &got))
        return fail("no enable yet, but command_w = %g", got);
    puts("ok: DAC set but no enable: command_w 0");

    gpiod_line_set_value(ch, 1);
    if (!state_wait(state, i2c, "command_w", 3000, 1.0, &got))
        return fail("charge enable: command_w = %g, want 3000", got);
    if (!state_wait(state, i2c, "battery_w", 3000, 30.0, &got))
        return fail("charge enable: the plant's battery_w = %g, want ~3000", got);
    double amps;
    for (int i = 0; i < 40 && (ina_current(i2c, &amps) || amps < 40); i++)
        sleep_ms(50);
    if (amps < 40 || amps > 80)
        return fail("charging 3 kW: INA228 current %.2f A, want about +58 A", amps);
    printf("ok: charge enable -> command_w 3000, battery_w %.0f, INA228 %+.2f A\n", got, amps);

    gpiod_line_set_value(ch, 0);
    gpiod_line_set_value(dis, 1);
    if (!state_wait(state, i2c, "command_w", -3000, 1.0, &got))
        return fail("discharge enable: command_w = %g, want -3000", got);
    for (int i = 0; i < 40 && (ina_current(i2c, &amps) || amps > -40); i++)
        sleep_ms(50);
    if (amps > -40 || amps < -80)
        return fail("discharging 3 kW: INA228 current %.2f A, want about -58 A", amps);
    printf("ok: discharge enable -> command_w -3000, INA228 %+.2f A\n", amps);

    if (dac_fast_write(i2c, 1024) || !state_wait(state, i2c, "command_w", -1500, 1.0, &got))
        return fail("DAC 1024 while discharging: command_w = %g, want -1500", got);
    puts("ok: DAC code 1024 -> command_w -1500");
    /* Power-down bits: the output goes to ground, the command to 0. */
    uint8_t pd[2] = {0x10 | (1024 >> 8), 1024 & 0xFF};
    if (i2c_xfer(i2c, DAC, pd, 2, NULL, 0) || !state_wait(state, i2c, "command_w", 0, 0.001, &got))
        return fail("DAC powered down: command_w = %g, want 0", got);
    puts("ok: DAC power-down -> command_w 0");

    gpiod_line_set_value(dis, 0);
    if (!state_wait(state, i2c, "command_w", 0, 0.001, &got))
        return fail("no enable: command_w = %g, want 0", got);
    if (!state_num(state, "both_enables", &got) || got != 0)
        return fail("both_enables = %g, want 0", got);
    puts("ok: no enable -> command_w 0, both_enables 0");

    if (both) {
        dac_fast_write(i2c, 2048);
        gpiod_line_set_value(ch, 1);
        gpiod_line_set_value(dis, 1);
        if (!state_wait(state, i2c, "both_enables", 1, 0, &got))
            return fail("both enables: both_enables = %g, want 1", got);
        if (!state_num(state, "command_w", &got) || got != 0)
            return fail("both enables: command_w = %g, want 0", got);
        puts("ok: both enables -> command_w 0, both_enables 1");
        gpiod_line_set_value(dis, 0);
    }

    /* Released lines fall back to their inactive level. */
    gpiod_line_release(ch);
    gpiod_line_release(dis);
    if (!state_wait(state, i2c, "charge_enable", 0, 0, &got))
        return fail("after release: charge_enable = %g, want false", got);
    puts("ok: released lines -> enables inactive");
    gpiod_chip_close(chip);
    close(i2c);
    puts("PASS");
    return 0;
}

/* ------------------------------------------------------------------ INA228 */

static int cmd_ina(const char *state)
{
    int i2c = i2c_open();
    if (i2c < 0)
        return fail("open /dev/i2c-%d: %s", i2c_bus, strerror(errno));
    uint64_t v;
    if (reg_read(i2c, INA, 0x3E, 2, &v) || v != 0x5449)
        return fail("MANUFACTURER_ID 0x%llx", (unsigned long long)v);
    if (reg_read(i2c, INA, 0x3F, 2, &v) || (v >> 4) != 0x228)
        return fail("DEVICE_ID 0x%llx", (unsigned long long)v);
    if (reg_read(i2c, INA, 0x01, 2, &v) || v != 0xFB68)
        return fail("ADC_CONFIG reset value 0x%llx, want 0xfb68", (unsigned long long)v);
    if (reg_read(i2c, INA, 0x02, 2, &v) || v != 0x1000)
        return fail("SHUNT_CAL reset value 0x%llx, want 0x1000", (unsigned long long)v);
    puts("ok: IDs and reset values");

    /* Discharge 2 kW so a current flows. */
    struct gpiod_chip *chip = gpiod_chip_open_by_name(chip_name);
    struct gpiod_line *dis = chip ? gpiod_chip_get_line(chip, 27) : NULL;
    if (!dis || gpiod_line_request_output(dis, "hwemu_check", 1))
        return fail("discharge enable: %s", strerror(errno));
    dac_fast_write(i2c, (unsigned)lround(2000.0 * (3.3 / 6000.0) / 3.3 * 4096.0));
    sleep_ms(300);

    /* One triggered conversion, so every register below holds the same one. */
    unsigned cal = 2048;
    reg_write16(i2c, INA, 0x02, (uint16_t)cal);
    reg_write16(i2c, INA, 0x01, 0x3B68);
    sleep_ms(30);
    uint64_t vsh, cur, vbus, pw;
    if (reg_read(i2c, INA, 0x04, 3, &vsh) || reg_read(i2c, INA, 0x07, 3, &cur) ||
        reg_read(i2c, INA, 0x05, 3, &vbus) || reg_read(i2c, INA, 0x08, 3, &pw))
        return fail("read measurements: %s", strerror(errno));
    int64_t s = sext(vsh >> 4, 20), c = sext(cur >> 4, 20);
    double want = (double)s * 4096.0 / cal;
    if (fabs((double)c - want) > 1.5)
        return fail("CURRENT %lld, want VSHUNT %lld x 4096 / %u = %.1f", (long long)c, (long long)s,
                    cal, want);
    double amps = (double)s * 312.5e-9 / 0.0005;
    if (amps > -20)
        return fail("discharging 2 kW but the shunt says %.2f A", amps);
    double volts = (double)(vbus >> 4) * 195.3125e-6, pv;
    double pwant = fabs((double)c) * (double)(vbus >> 4) / 16384.0;
    if (fabs((double)pw - pwant) > 2)
        return fail("POWER %llu, want |CURRENT| x VBUS / 16384 = %.1f", (unsigned long long)pw,
                    pwant);
    /* The state file is at most 500 ms old while the bus is in use. */
    if (!state_wait(state, i2c, "voltage_v", volts, 0.2, &pv))
        return fail("VBUS %.3f V, the plant says %.3f V", volts, pv);
    printf("ok: VSHUNT %lld -> CURRENT %lld (%.2f A), POWER %llu, VBUS %.3f V (plant %.3f V)\n",
           (long long)s, (long long)c, amps, (unsigned long long)pw, volts, pv);

    /* CHARGE: continuous conversions again, reset, about a second of current. */
    reg_write16(i2c, INA, 0x01, 0xFB68);
    reg_write16(i2c, INA, 0x00, 0x4000);
    uint64_t q0, q1;
    reg_read(i2c, INA, 0x0A, 5, &q0);
    int64_t t0 = mono_ns();
    for (int i = 0; i < 10; i++) {
        sleep_ms(100);
        reg_read(i2c, INA, 0x05, 3, &vbus);
    }
    reg_read(i2c, INA, 0x0A, 5, &q1);
    double dt = (double)(mono_ns() - t0) / 1e9;
    double dq = (double)(sext(q1, 40) - sext(q0, 40));
    double dq_want = (double)c * dt;
    if (!(dq < 0) || fabs(dq - dq_want) > 0.2 * fabs(dq_want))
        return fail("CHARGE moved %.0f in %.2f s, want about CURRENT x t = %.0f", dq, dt, dq_want);
    reg_write16(i2c, INA, 0x00, 0x4000);
    reg_read(i2c, INA, 0x0A, 5, &q1);
    if (llabs(sext(q1, 40)) > llabs(c) / 10 + 50)
        return fail("after RSTACC CHARGE = %lld", (long long)sext(q1, 40));
    printf("ok: CHARGE %+.0f in %.2f s (want %+.0f), RSTACC clears it\n", dq, dt, dq_want);

    /* CNVRF: shut down, the flag read once, then it stays clear; a
     * triggered conversion sets it again, and reading clears it. */
    reg_write16(i2c, INA, 0x01, 0x0000);
    reg_read(i2c, INA, 0x0B, 2, &v);
    reg_read(i2c, INA, 0x0B, 2, &v);
    if (v & 2)
        return fail("CNVRF set in shutdown after a read");
    reg_write16(i2c, INA, 0x01, 0x3000); /* triggered shunt + bus, 50 us each */
    sleep_ms(10);
    reg_read(i2c, INA, 0x0B, 2, &v);
    if (!(v & 2))
        return fail("CNVRF clear after a triggered conversion");
    reg_read(i2c, INA, 0x0B, 2, &v);
    if (v & 2)
        return fail("CNVRF still set after it was read");
    if (!(v & 1))
        return fail("MEMSTAT clear");
    puts("ok: CNVRF set by a conversion, cleared by reading");
    reg_write16(i2c, INA, 0x00, 0x8000); /* RST */
    reg_read(i2c, INA, 0x01, 2, &v);
    if (v != 0xFB68)
        return fail("after RST ADC_CONFIG 0x%llx", (unsigned long long)v);
    puts("ok: RST restores the reset values");
    gpiod_chip_close(chip);
    close(i2c);
    puts("PASS");
    return 0;
}

static int cmd_stuck(const char *control)
{
    int i2c = i2c_open();
    if (i2c < 0)
        return fail("open /dev/i2c-%d: %s", i2c_bus, strerror(errno));
    uint64_t a, b, d;
    for (int i = 0; i < 5; i++) {
        reg_read(i2c, INA, 0x05, 3, &a);
        sleep_ms(20);
        reg_read(i2c, INA, 0x05, 3, &b);
        if (a == b)
            return fail("two VBUS readings 20 ms apart are identical (0x%llx)",
                        (unsigned long long)a);
    }
    puts("ok: consecutive VBUS readings differ");
    FILE *f = fopen(control, "w");
    if (!f || fputs("stuck=0x40\n", f) < 0 || fclose(f))
        return fail("write %s", control);
    sleep_ms(150);
    reg_read(i2c, INA, 0x05, 3, &a);
    reg_read(i2c, INA, 0x0B, 2, &d);
    sleep_ms(100);
    reg_read(i2c, INA, 0x05, 3, &b);
    reg_read(i2c, INA, 0x0B, 2, &d);
    if (a != b)
        return fail("stuck, but VBUS moved 0x%llx -> 0x%llx", (unsigned long long)a,
                    (unsigned long long)b);
    if (d & 2)
        return fail("stuck, but CNVRF is set");
    puts("ok: stuck=0x40 freezes VBUS and keeps CNVRF clear");
    f = fopen(control, "w");
    if (!f || fclose(f))
        return fail("clear %s", control);
    sleep_ms(150);
    reg_read(i2c, INA, 0x05, 3, &a);
    sleep_ms(20);
    reg_read(i2c, INA, 0x05, 3, &b);
    if (a == b)
        return fail("released, but VBUS still frozen");
    puts("ok: released, readings move again");
    close(i2c);
    puts("PASS");
    return 0;
}

static int cmd_nack(const char *control)
{
    int i2c = i2c_open();
    if (i2c < 0)
        return fail("open /dev/i2c-%d: %s", i2c_bus, strerror(errno));
    uint64_t v;
    if (reg_read(i2c, INA, 0x3E, 2, &v))
        return fail("before nack_once: %s", strerror(errno));
    FILE *f = fopen(control, "w");
    if (!f || fputs("nack_once=0x40\n", f) < 0 || fclose(f))
        return fail("write %s", control);
    sleep_ms(150);
    int rc = reg_read(i2c, INA, 0x3E, 2, &v);
    if (rc != -EREMOTEIO)
        return fail("first transfer after nack_once: %s, want EREMOTEIO", strerror(-rc));
    rc = reg_read(i2c, INA, 0x3E, 2, &v);
    if (rc || v != 0x5449)
        return fail("second transfer: %s, 0x%llx", strerror(-rc), (unsigned long long)v);
    puts("ok: nack_once fails exactly one transfer with EREMOTEIO");
    close(i2c);
    puts("PASS");
    return 0;
}

/* An fd closed behind the emulator's back (syscall(SYS_close), as libuv
 * does in places) and its number reused must not be taken for the bus. */
static int cmd_stale(void)
{
    int p[2];
    if (pipe(p) != 0)
        return fail("pipe: %s", strerror(errno));
    int fd = i2c_open();
    if (fd < 0)
        return fail("open /dev/i2c-%d: %s", i2c_bus, strerror(errno));
    syscall(SYS_close, fd);
    if (syscall(SYS_dup3, p[1], fd, 0) != fd)
        return fail("pipe at fd %d: %s", fd, strerror(errno));
    char c = 0;
    if (write(fd, "x", 1) != 1 || read(p[0], &c, 1) != 1 || c != 'x')
        return fail("fd %d reused by a pipe: write/read failed (%s)", fd, strerror(errno));
    puts("ok: a reused fd number is the program's pipe, not the bus");
    puts("PASS");
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        if (strcmp(argv[i], "-c") == 0)
            chip_name = argv[i + 1];
        else if (strcmp(argv[i], "-b") == 0)
            i2c_bus = atoi(argv[i + 1]);
        else
            break;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *cmd = i < argc ? argv[i] : "";
    if (strcmp(cmd, "freq") == 0 && argc - i >= 3)
        return cmd_freq((unsigned)atoi(argv[i + 1]), atoi(argv[i + 2]),
                        argc - i >= 4 ? argv[i + 3] : "rising");
    if (strcmp(cmd, "overflow") == 0 && argc - i >= 2)
        return cmd_overflow((unsigned)atoi(argv[i + 1]));
    if (strcmp(cmd, "ebusy") == 0 && argc - i >= 2)
        return cmd_ebusy((unsigned)atoi(argv[i + 1]));
    if (strcmp(cmd, "drive") == 0 && argc - i >= 2)
        return cmd_drive(argv[i + 1], argc - i >= 3 && strcmp(argv[i + 2], "--both") == 0);
    if (strcmp(cmd, "ina") == 0 && argc - i >= 2)
        return cmd_ina(argv[i + 1]);
    if (strcmp(cmd, "stuck") == 0 && argc - i >= 2)
        return cmd_stuck(argv[i + 1]);
    if (strcmp(cmd, "nack") == 0 && argc - i >= 2)
        return cmd_nack(argv[i + 1]);
    if (strcmp(cmd, "stale") == 0)
        return cmd_stale();
    fprintf(stderr, "usage: hwemu_check [-c CHIP] [-b BUS] freq LINE N [rising|falling|both] |"
                    " overflow LINE | ebusy LINE | drive STATE [--both] | ina STATE |"
                    " stuck CONTROL | nack CONTROL | stale\n");
    return 2;
}
