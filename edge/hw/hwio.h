/* hwio.h: the hardware back end of the edge (`backend = hw`): real chips
 * behind the edge/io.h interface. docs/hardware.md has the wiring, the
 * calibration and what each failure does.
 *
 *   battery V, I, P   INA228 (or INA226) on a shunt       edge/hw/ina2xx.h
 *   state of charge   coulomb counting + OCV at rest      edge/hw/soc.h
 *   pack temperature  TMP102                              edge/hw/tmp102.h
 *   grid V, P         ADE7953                             edge/hw/ade7953.h
 *   grid frequency    zero-crossing edges on a GPIO line  edge/hw/freq.h, gpio.h
 *   power setpoint    MCP4725 DAC -> inverter reference   edge/hw/mcp4725.h
 *   direction         charge-enable / discharge-enable GPIO outputs
 *
 * Freshness (edge/io.h): a group whose chip does not answer, answers out of
 * its range, or is stuck keeps its old value and time, so the state machine
 * raises SENSOR_FAULT after sensor_stale_ms. A failure is logged once when
 * it starts, with the chip, bus and address, and once when it ends.
 *
 * Outputs: the setpoint's sign picks the enable line and its magnitude the
 * DAC voltage (dac_offset_v + |W| x dac_volts_per_kw / 1000). A change of
 * direction is break-before-make: both enables off, the DAC, then the one
 * enable. safe_off drops both enables first, then the DAC to 0 V. The
 * outputs are re-asserted every tick, so a DAC that browned out and came
 * back at its power-on value is corrected within a second.
 *
 * Lifetime: ems_hwio_open() opens the bus, checks every chip (a wrong ID
 * refuses to start: the message names bus and address), requests the lines
 * inactive and starts a uv_poll on the zero-crossing line; ems_hwio_close()
 * puts the outputs safe, releases everything and calls `cb` once the poll
 * handle is closed, after which the caller frees the memory.
 */
#ifndef EMS_HW_HWIO_H
#define EMS_HW_HWIO_H

#include "io.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#define EMS_HW_OCV_TEXT_MAX 512

typedef enum { EMS_HW_INA228 = 0, EMS_HW_INA226 } ems_hw_battery_chip_t;

/* The hardware keys of the config file (edge/ems-edge.conf.example). */
typedef struct {
    int i2c_bus;        /* i2c_bus: /dev/i2c-N; 1 on a Pi */
    char gpio_chip[64]; /* gpio_chip: gpiochip0 */

    ems_hw_battery_chip_t battery_chip; /* battery_monitor: ina228 | ina226 */
    int battery_address;                /* battery_monitor_address: 0x40 */
    double shunt_ohms;                  /* shunt_ohms */
    double shunt_max_current_a;         /* shunt_max_current_a */
    bool shunt_invert;                  /* shunt_invert */
    int battery_averaging;              /* battery_monitor_averaging: 64 */
    int battery_conversion_us;          /* battery_monitor_conversion_us: 1052 (INA228) */

    int temp_address; /* temp_sensor_address: 0x48 (TMP102) */

    int grid_address;       /* grid_meter_address: 0x38 (ADE7953) */
    double grid_v_per_lsb;  /* grid_voltage_per_lsb */
    double grid_a_per_lsb;  /* grid_current_per_lsb */
    double grid_w_per_lsb;  /* grid_power_per_lsb */
    bool grid_invert;       /* grid_power_invert */
    int zero_cross_line;    /* zero_cross_line: GPIO offset */
    double grid_nominal_hz; /* grid_nominal_hz: 50 */
    int64_t freq_window_ms; /* grid_freq_window_ms: 1000 */

    int charge_line;         /* charge_enable_line */
    int discharge_line;      /* discharge_enable_line */
    bool enable_active_low;  /* enable_active_low */
    int dac_address;         /* dac_address: 0x60 */
    double dac_vref_v;       /* dac_vref_v: the MCP4725's supply, 3.3 */
    double dac_offset_v;     /* dac_offset_v: volts at 0 W */
    double dac_volts_per_kw; /* dac_volts_per_kw */

    double soc_capacity_ah;                  /* soc_capacity_ah */
    char soc_ocv_table[EMS_HW_OCV_TEXT_MAX]; /* soc_ocv_table */
    double soc_rest_current_a;               /* soc_rest_current_a */
    double soc_rest_s;                       /* soc_rest_s */
    double soc_full_voltage_v;               /* soc_full_voltage_v */
    double soc_full_tail_a;                  /* soc_full_tail_a */
    double soc_full_s;                       /* soc_full_s */
    double soc_empty_voltage_v;              /* soc_empty_voltage_v */
    double soc_empty_s;                      /* soc_empty_s */
    double soc_charge_efficiency;            /* soc_charge_efficiency */
} ems_hw_config_t;

/* Fills the defaults: the reference wiring of docs/hardware.md. */
void ems_hw_config_default(ems_hw_config_t *c);

/* The rules between the keys, with the power limits the DAC must reach.
 * 0 or EMS_EINVAL with a sentence naming the keys in `why`. */
int ems_hw_config_check(const ems_hw_config_t *c, double max_charge_w, double max_discharge_w,
                        char *why, size_t cap);

/* The coulomb counter's configuration from these keys (edge/hw/soc.h);
 * the OCV table is parsed separately (ems_soc_ocv_parse). */
struct ems_soc_config;
void ems_hw_soc_config(const ems_hw_config_t *c, struct ems_soc_config *out);

typedef struct ems_hwio ems_hwio_t;

/* Opens the hardware (see above). `soc0` is the persisted state of charge
 * in percent, or NAN when none. On failure nothing stays open and err
 * says which chip or line failed and why. */
int ems_hwio_open(uv_loop_t *loop, const ems_hw_config_t *cfg, double soc0, ems_hwio_t **out,
                  char *err, size_t cap);

/* The edge/io.h interface. */
ems_io_t *ems_hwio_io(ems_hwio_t *h);

/* The coulomb counter's state of charge now (percent), NAN if unknown. */
double ems_hwio_soc(const ems_hwio_t *h);

/* Usable capacity in Wh for device_info (capacity x nominal voltage). */
double ems_hwio_capacity_wh(const ems_hwio_t *h);

/* Prometheus lines for /metrics (I2C counters, per-chip failures,
 * frequency estimator counters). Returns 0 or EMS_ENOMEM. */
struct ems_buf;
int ems_hwio_metrics(const ems_hwio_t *h, struct ems_buf *out);

/* Outputs safe, lines released, bus closed; `cb(arg)` runs once the last
 * handle is closed. Safe to call once. */
void ems_hwio_close(ems_hwio_t *h, void (*cb)(void *arg), void *arg);

/* ems-edge --probe: opens each configured chip once (without the loop),
 * prints identity, raw registers and scaled values to `out`, and returns 0
 * when every chip answered as expected, else 1. */
int ems_hwio_probe(const ems_hw_config_t *cfg, FILE *out);

#endif
