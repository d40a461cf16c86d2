/* ade7953.h: Analog Devices ADE7953 single-phase energy meter in I2C mode,
 * the grid connection's voltage, current, active power and frequency.
 *
 * I2C framing: address 0x38 (fixed); a 16-bit register address MSB first,
 * then the data MSB first. The width follows from the address: 0x0xx (and
 * 0x7xx, 0x8xx) 8 bit, 0x1xx 16 bit, 0x2xx 24 bit, 0x3xx the same 24-bit
 * registers read as 32 bit (sign- or zero-extended). Registers used:
 *   CONFIG 0x102 (16)   COMM_LOCK (bit 15) cleared: locked to I2C; HPF on
 *   0x0FE (8) = 0xAD, then 0x120 (16) = 0x0030: the unlock and the "optimum
 *                       setting" the datasheet requires after power-up
 *   AP_NOLOAD 0x303     identity: its reset value 0x0000E419 (never written)
 *   VRMS 0x31C, IRMSA 0x31A (unsigned), AWATT 0x312 (signed), all 32-bit
 *   PERIOD 0x10E (16)   line frequency = 223750 / (PERIOD + 1) Hz
 *   VERSION 0x702 (8)   printed by probe
 *
 * Why these choices:
 *  - Calibration stays in software (v_per_lsb, a_per_lsb, w_per_lsb: physical
 *    unit per register LSB, measured once against a reference meter). The
 *    chip's gain registers keep their reset values, so a chip that resets
 *    measures exactly as before and the full-scale codes below hold.
 *  - Instantaneous AWATT rather than the energy accumulators: the control
 *    loop needs the grid power now, once a second; the energy registers
 *    reset on read and would tie the value to the read interval.
 *  - Range: with unity gains a full-scale sine reads 9032007 in VRMS/IRMS and
 *    4862401 in AWATT. A larger code means the input clipped and the true
 *    value is unknown (EMS_ERANGE), as does an RMS register read as negative.
 *  - Stuck rule: VRMS, IRMSA and AWATT bit-identical on 5 consecutive reads
 *    is EMS_ESTALE. The registers of a live meter update continuously and
 *    carry noise in their low bits (even at no load): identical 24-bit
 *    values a second apart, five times over, mean the DSP stopped or the bus
 *    returns a latched value.
 *  - Reset: CONFIG is read on every read; if it no longer holds our value
 *    (its reset value 0x8004 differs) the chip restarted and lost the
 *    optimum setting: it is written again, `reinits` counts it, and that
 *    read returns EMS_EAGAIN.
 *  - The frequency is a cross-check value: PERIOD holds the last measured
 *    period, so without a line voltage it keeps its last value; judge it
 *    together with the voltage.
 *
 * Signs: `watts` is + when importing from the grid and - when exporting,
 * provided the current transformer points so; `invert` flips it.
 */
#ifndef EMS_EDGE_HW_ADE7953_H
#define EMS_EDGE_HW_ADE7953_H

#include "i2c.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    uint16_t address; /* 0x38: the only I2C address an ADE7953 has */
    double v_per_lsb; /* volts per VRMS LSB (calibration, > 0) */
    double a_per_lsb; /* amperes per IRMSA LSB (> 0) */
    double w_per_lsb; /* watts per AWATT LSB (> 0) */
    bool invert;      /* negate the power: + must be import */
} ems_ade7953_config_t;

/* One reading, SI units. */
typedef struct {
    double volts; /* RMS line voltage */
    double amps;  /* RMS current, channel A */
    double watts; /* active power, + import, - export */
    double hertz; /* line frequency, a cross-check (see above) */
} ems_ade7953_reading_t;

/* Plain data; owned by the caller; the bus is borrowed. */
typedef struct {
    ems_i2c_bus_t *bus;
    ems_ade7953_config_t cfg;
    bool ready;     /* init completed */
    bool have_last; /* the last_* fields hold a reading */
    uint32_t last_vrms, last_irms, last_awatt;
    unsigned same;    /* consecutive reads identical to the one before */
    uint32_t reinits; /* configurations rewritten after a chip reset */
    char err[192];    /* why the last read failed (or returned EAGAIN) */
} ems_ade7953_t;

/* 0x38, not inverted, calibration unset (0: init refuses it until set). */
void ems_ade7953_config_default(ems_ade7953_config_t *cfg);

/* Checks cfg, checks the identity (AP_NOLOAD reset value), writes CONFIG and
 * the required optimum setting, and reads CONFIG back. Call it at least
 * 100 ms after the chip powered up. c is filled enough for
 * ems_ade7953_probe() even on failure. Returns 0, EMS_EINVAL (cfg; the
 * message names the keys), EMS_ENXIO (no answer), EMS_ENODEV (identity:
 * the message names bus, address, value read and expected), EMS_EIO; the
 * message goes to err (capacity cap). */
int ems_ade7953_init(ems_ade7953_t *c, ems_i2c_bus_t *bus, const ems_ade7953_config_t *cfg,
                     char *err, size_t cap);

/* Takes one reading into *out. On error leaves *out untouched and returns
 * EMS_EAGAIN (the chip had reset and was re-initialised), EMS_ERANGE
 * (beyond full scale), EMS_ESTALE (5 identical reads), EMS_ENXIO, EMS_EIO,
 * or EMS_EINVAL (init never succeeded). c->err says why. */
int ems_ade7953_read(ems_ade7953_t *c, ems_ade7953_reading_t *out);

/* Prints the identity, VERSION, CONFIG, the raw measurement registers (hex)
 * and the scaled values (when calibrated) to out, for `ems-edge --probe`;
 * works after a failed init as long as init was called. Returns 0 when
 * every register read and the identity is the expected one, else the first
 * error. */
int ems_ade7953_probe(ems_ade7953_t *c, FILE *out);

#endif
