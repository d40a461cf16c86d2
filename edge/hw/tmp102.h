/* tmp102.h: TI TMP102 temperature sensor (LM75-compatible register map), the
 * battery pack's temperature.
 *
 * Registers: TEMP 0x00 (12-bit two's complement, 0.0625 C/LSB, left-aligned
 * in 16 bits; 13-bit when EM is set, bit 0 then reads 1), CONFIG 0x01,
 * T_LOW 0x02, T_HIGH 0x03. All 16-bit, MSB first.
 *
 * Why these choices:
 *  - Continuous conversion at 4 Hz (CR = 10, the power-on default), or 1 or
 *    8 Hz by config: a 1 s read then always gets a conversion at most 250 ms
 *    old, and at 4 Hz (26 ms per conversion) the self-heating is negligible.
 *    Normal 12-bit mode covers -55..128 C, the whole range a battery pack
 *    may see; `extended` selects the 13-bit mode (to 150 C).
 *  - Identity: the TMP102 has no ID register. Init writes CONFIG and reads
 *    it back; a device that does not hold the writable bits is not a TMP102
 *    (EMS_ENODEV). The read-only bits (OS, R1/R0, AL) are not compared.
 *  - No stuck rule on the value: a pack at a steady temperature reads the
 *    same code for minutes, so an unchanged value proves nothing. The only
 *    ways a live TMP102 stops converting are its own shutdown or one-shot
 *    modes, which show in CONFIG. So each read checks CONFIG against what
 *    init wrote; a difference (a reset, a shutdown) rewrites it, counts
 *    `reinits`, and that read returns EMS_EAGAIN. (Our 4 Hz configuration
 *    equals the power-on default, so a reset to it is invisible, and
 *    harmless: the chip then already converts as configured.)
 *  - Plausibility: in 12-bit mode the register's low 4 bits read 0 (13-bit
 *    mode: bits 2:1 read 0, bit 0 reads 1); anything else (e.g. 0xFFFF from
 *    a released bus) is EMS_EIO, not a temperature. EMS_ERANGE outside the
 *    chip's rated -55..150 C.
 */
#ifndef EMS_EDGE_HW_TMP102_H
#define EMS_EDGE_HW_TMP102_H

#include "i2c.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    uint16_t address; /* 0x48..0x4B (ADD0 to GND, V+, SDA, SCL) */
    unsigned rate_hz; /* 1, 4 or 8 conversions per second */
    bool extended;    /* 13-bit mode, -55..150 C (else 12-bit, to 128 C) */
} ems_tmp102_config_t;

/* Plain data; owned by the caller; the bus is borrowed. */
typedef struct {
    ems_i2c_bus_t *bus;
    ems_tmp102_config_t cfg;
    uint16_t reg_config; /* what init writes */
    bool ready;          /* init completed */
    uint32_t reinits;    /* CONFIG rewritten after a reset or a shutdown */
    char err[192];       /* why the last read failed (or returned EAGAIN) */
} ems_tmp102_t;

/* 0x48, 4 Hz, 12-bit. */
void ems_tmp102_config_default(ems_tmp102_config_t *cfg);

/* Checks cfg, writes CONFIG (continuous conversion, normal mode) and reads it
 * back as the identity check. c is filled enough for ems_tmp102_probe() even
 * on failure. Returns 0, EMS_EINVAL (cfg; the message names the key),
 * EMS_ENXIO (no answer), EMS_ENODEV (CONFIG did not read back: not a
 * TMP102), EMS_EIO; the message goes to err (capacity cap). */
int ems_tmp102_init(ems_tmp102_t *c, ems_i2c_bus_t *bus, const ems_tmp102_config_t *cfg, char *err,
                    size_t cap);

/* Reads the temperature in degrees Celsius into *celsius. On error leaves
 * *celsius untouched and returns EMS_EAGAIN (CONFIG had changed and was
 * rewritten: see `reinits`), EMS_ERANGE (outside -55..150 C), EMS_EIO
 * (implausible register bits, bus error), EMS_ENXIO, or EMS_EINVAL (init
 * never succeeded). c->err says why. */
int ems_tmp102_read(ems_tmp102_t *c, double *celsius);

/* Prints CONFIG, TEMP, T_LOW and T_HIGH (hex) and the temperature to out,
 * for `ems-edge --probe`; works after a failed init as long as init was
 * called. Returns 0 when every register read, else the first error. */
int ems_tmp102_probe(ems_tmp102_t *c, FILE *out);

#endif
