/* mcp4725.h: Microchip MCP4725 12-bit DAC (DS22039), the analog power
 * setpoint to the inverter. Vout = VDD x code / 4096.
 *
 * The chip has no registers behind a pointer:
 *   fast write (2 bytes): 0 0 PD1 PD0 D11..D8 | D7..D0     sets the DAC only
 *   write DAC and EEPROM (3 bytes): 0x60 | PD << 1, D11..D4, D3..D0 << 4
 *   read (5 bytes): status (RDY/BSY bit 7, POR bit 6, PD bits 2:1), DAC
 *       D11..D4, D3..D0 << 4, EEPROM (PD bits 6:5, D11..D8 in 3:0), D7..D0
 *
 * Why these choices:
 *  - Every setpoint is a fast write followed by the 5-byte read-back: the
 *    DAC register must hold the code with normal power mode, and the EEPROM
 *    must still hold the power-on value init left. Anything else is
 *    EMS_EIO, so a write lost on the bus never passes for a setpoint.
 *  - The EEPROM (the power-on value) is written only by init and only when
 *    it is not code 0 in normal mode: a DAC that loses power, or a Pi that
 *    reboots, then starts the inverter at 0 V, and the EEPROM (rated for a
 *    finite number of writes) is not worn by restarts. Its write takes up
 *    to 50 ms; init polls RDY every 2 ms for at most 100 ms.
 *  - Init also sets the output to code 0: whatever the last process left,
 *    a new one starts from the safe level.
 *  - Volts outside 0..vref_v are refused (EMS_EINVAL), never clamped: the
 *    caller has already applied every limit, and a value it did not expect
 *    is a bug to see. Inside the range the code is the nearest one; vref_v
 *    itself maps to 4095, the largest the chip has (1 LSB below VDD).
 */
#ifndef EMS_EDGE_HW_MCP4725_H
#define EMS_EDGE_HW_MCP4725_H

#include "i2c.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    uint16_t address; /* 0x60..0x67 (A0 pin and the factory A2/A1 bits) */
    double vref_v;    /* the chip's VDD, its reference: 3.3 or 5.0 */
} ems_mcp4725_config_t;

/* Plain data; owned by the caller; the bus is borrowed. */
typedef struct {
    ems_i2c_bus_t *bus;
    ems_mcp4725_config_t cfg;
    bool configured;     /* cfg was valid: ems_mcp4725_safe() may write */
    bool ready;          /* init completed */
    uint16_t code;       /* the last code written and verified */
    bool eeprom_written; /* init stored code 0 as the power-on value */
    char err[192];       /* why the last call failed */
} ems_mcp4725_t;

/* 0x60, 3.3 V. */
void ems_mcp4725_config_default(ems_mcp4725_config_t *cfg);

/* Checks cfg, reads the chip, stores code 0 (normal mode) as the EEPROM
 * power-on value when it is not already, and sets the output to code 0.
 * c is filled enough for ems_mcp4725_probe() and ems_mcp4725_safe() even on
 * failure. Returns 0, EMS_EINVAL (cfg; the message names the key),
 * EMS_ENXIO (no answer), EMS_ETIMEDOUT (the EEPROM write did not finish),
 * EMS_EIO (a read-back did not match); the message goes to err. */
int ems_mcp4725_init(ems_mcp4725_t *c, ems_i2c_bus_t *bus, const ems_mcp4725_config_t *cfg,
                     char *err, size_t cap);

/* Sets the DAC to code (0..4095) with a fast write and verifies it by the
 * read-back. Returns 0, EMS_EINVAL (code above 4095, or init not done),
 * EMS_EIO (read-back mismatch), EMS_ENXIO, ...; c->err says why. c->code
 * changes only on success. */
int ems_mcp4725_set_code(ems_mcp4725_t *c, unsigned code);

/* Sets the output to v volts (0..vref_v, else EMS_EINVAL and nothing is
 * written), as ems_mcp4725_set_code() with the nearest code. */
int ems_mcp4725_set_volts(ems_mcp4725_t *c, double v);

/* Code 0, verified: the safe output. Works whenever init was called with a
 * valid config, also when init failed later (it tries). */
int ems_mcp4725_safe(ems_mcp4725_t *c);

/* Prints the 5 read-back bytes and their meaning (DAC code and volts,
 * power mode, EEPROM power-on value) to out, for `ems-edge --probe`. Works
 * after a failed init as long as init was called. Returns 0 or the error. */
int ems_mcp4725_probe(ems_mcp4725_t *c, FILE *out);

#endif
