/* ina2xx.h: TI INA228 and INA226 shunt monitors, the battery's voltage,
 * current, power and (INA228) charge.
 *
 * INA228 (SBOSA20): 85 V, 20-bit delta-sigma, with hardware energy and charge
 * accumulators. Registers used: CONFIG 0x00 (ADCRANGE, RSTACC), ADC_CONFIG
 * 0x01 (mode, conversion times, averaging), SHUNT_CAL 0x02, VSHUNT 0x04,
 * VBUS 0x05, DIETEMP 0x06, CURRENT 0x07, POWER 0x08, CHARGE 0x0A, DIAG_ALRT
 * 0x0B (ALATCH, CNVRF, MATHOF), MANUFACTURER_ID 0x3E, DEVICE_ID 0x3F.
 * INA226 (SBOS547): 36 V, 16-bit. CONFIG 0x00, SHUNT 0x01, BUS 0x02, POWER
 * 0x03, CURRENT 0x04, CALIBRATION 0x05, MASK/ENABLE 0x06 (CVRF, OVF),
 * MANUFACTURER 0xFE, DIE_ID 0xFF.
 *
 * Why these choices:
 *  - Calibration. Current_LSB = max_current_a / 2^19 (INA228) or / 2^15
 *    (INA226), so the CURRENT register spans exactly the configured range.
 *    The calibration register is an integer; the LSB actually used for
 *    scaling is computed back from the rounded value, so the reading is
 *    exactly what the chip computed. The INA228 takes the ±40.96 mV range
 *    (4x finer) when max_current_a x shunt_ohms fits in it, else ±163.84 mV;
 *    beyond that (or the INA226's ±81.92 mV) the currents we must see would
 *    clip, so init refuses the configuration. When the INA226's CAL would
 *    overflow 15 bits (max_current_a x shunt_ohms below 5.12 mV) the LSB is
 *    raised until it fits: resolution is lost, never range.
 *  - Averaging and conversion time. Continuous bus + shunt (+ die
 *    temperature on the INA228) conversion, averaged over `averaging`
 *    samples. The default, 64 x 1052 us per channel (about 200 ms for a full
 *    INA228 cycle, 140 ms on the INA226), spans some 20 periods of the 100 Hz
 *    ripple a single-phase inverter draws from the battery, so the 1 s reading
 *    is a true average rather than a snapshot of the ripple. A cycle longer
 *    than 500 ms is refused: the stuck rule below needs a conversion between
 *    two reads.
 *  - Stuck rule. The conversion-ready flag (INA228 DIAG_ALRT.CNVRF with
 *    ALATCH set, so it latches until read; INA226 MASK/ENABLE.CVRF, cleared
 *    by reading the register) must be set on each read: reads are ~1 s
 *    apart, a cycle is <= 500 ms. A missed flag is tolerated twice (the
 *    registers still hold the last real conversion); the third consecutive
 *    miss is EMS_ESTALE. Until the first conversion after init the result
 *    registers hold no measurement, so those reads are EMS_EAGAIN.
 *  - Brown-out. Each read compares CONFIG, ADC_CONFIG, SHUNT_CAL (and the
 *    INA228's ALATCH bit, whose reset value differs from ours) with what
 *    init wrote. A difference means the chip reset: the configuration is
 *    written again, `reinits` counts it, and that read returns EMS_EAGAIN
 *    because the INA228's charge accumulator restarted from zero.
 *  - Range. EMS_ERANGE when the bus voltage is above the chip's rating
 *    (85 V / 36 V), when the shunt or current register sits at its
 *    full-scale code (the ADC saturated: the true current is unknown), or
 *    when the chip flags a math overflow (MATHOF / OVF).
 *
 * Signs: + = charging. Without `invert`, charge current flows from IN+ to
 * IN-; the POWER register is a magnitude and takes the current's sign.
 */
#ifndef EMS_EDGE_HW_INA2XX_H
#define EMS_EDGE_HW_INA2XX_H

#include "i2c.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    EMS_INA228 = 228,
    EMS_INA226 = 226,
} ems_ina2xx_chip_t;

typedef struct {
    ems_ina2xx_chip_t chip;
    uint16_t address;       /* 0x40..0x4F (A0/A1 strapping) */
    double shunt_ohms;      /* > 0, e.g. 0.0005 for a 75 mV / 150 A shunt */
    double max_current_a;   /* > 0: the largest |current| to be measured */
    unsigned averaging;     /* 1, 4, 16, 64, 128, 256, 512, 1024 */
    unsigned conversion_us; /* per channel, see ina2xx.c for each chip's list */
    bool invert;            /* the shunt is wired the other way round */
} ems_ina2xx_config_t;

/* One reading, SI units, + = charging. */
typedef struct {
    double volts;       /* bus voltage */
    double amps;        /* battery current */
    double watts;       /* |POWER| with the current's sign */
    double shunt_volts; /* the shunt drop, for diagnosis */
    bool has_charge;    /* INA228: `coulombs` is valid */
    double coulombs;    /* charge since init or the last re-init, + = charged */
    bool has_temp;      /* INA228: `die_c` is valid */
    double die_c;       /* die temperature, degrees Celsius */
} ems_ina2xx_reading_t;

/* Plain data; owned by the caller. The bus is borrowed (the caller keeps it
 * open while the chip is used). */
typedef struct {
    ems_i2c_bus_t *bus;
    ems_ina2xx_config_t cfg;
    bool calibrated;    /* cfg was valid: the fields below are set */
    bool adcrange_low;  /* INA228 ADCRANGE=1 (±40.96 mV) */
    double current_lsb; /* amperes per CURRENT LSB (from the rounded CAL) */
    /* The register values init writes (reg_adc_config: INA228 only). */
    uint16_t reg_config, reg_adc_config, reg_cal;
    bool ready;       /* init completed */
    bool converted;   /* a conversion completed since init or re-init */
    unsigned misses;  /* consecutive reads without a new conversion */
    uint32_t reinits; /* configurations rewritten after a chip reset */
    char err[192];    /* why the last read failed (or returned EAGAIN) */
} ems_ina2xx_t;

/* INA228 at 0x40, shunt and current unset (init refuses them until set),
 * 64 x 1052 us, not inverted. */
void ems_ina2xx_config_default(ems_ina2xx_config_t *cfg);

/* "INA228" / "INA226" / "INA2xx?" */
const char *ems_ina2xx_chip_name(ems_ina2xx_chip_t chip);

/* Checks cfg, checks the chip's identity, writes its configuration
 * (resetting the INA228's accumulators) and reads it back. c is always
 * filled enough for ems_ina2xx_probe(), even on failure. Returns 0,
 * EMS_EINVAL (cfg: the message names the keys), EMS_ENXIO (no answer),
 * EMS_ENODEV (wrong manufacturer or device ID: the message names bus,
 * address, the value read and the one expected), EMS_EIO (a write did not
 * stick, or another bus error); the message goes to err (capacity cap). */
int ems_ina2xx_init(ems_ina2xx_t *c, ems_i2c_bus_t *bus, const ems_ina2xx_config_t *cfg, char *err,
                    size_t cap);

/* Takes one reading into *out. Returns 0, or on error leaves *out untouched
 * and returns EMS_EAGAIN (no conversion since init yet, or the chip reset
 * and was re-initialised: see `reinits`), EMS_ESTALE (no new conversion on 3
 * consecutive reads), EMS_ERANGE, EMS_ENXIO, EMS_EIO, or EMS_EINVAL (init
 * never succeeded). c->err says why. */
int ems_ina2xx_read(ems_ina2xx_t *c, ems_ina2xx_reading_t *out);

/* Prints the identity, the raw registers (hex) and the scaled values to out,
 * for `ems-edge --probe`. Works on a chip whose init failed, as long as init
 * was called (prints what it can read; currents are scaled only when the
 * config was valid). Reading DIAG_ALRT / MASK/ENABLE clears the conversion
 * flag; the next read tolerates one miss. Returns 0 when every register
 * read and the identity is the expected one, else the first error. */
int ems_ina2xx_probe(ems_ina2xx_t *c, FILE *out);

#endif
