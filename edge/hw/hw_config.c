/* hw_config.c: the hardware keys' defaults and the rules between them
 * (edge/hw/hwio.h). The defaults describe the reference wiring of
 * docs/hardware.md; every value can be changed in the config file. */
#include "hwio.h"

#include "error.h"
#include "soc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void ems_hw_config_default(ems_hw_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->i2c_bus = 1; /* the Pi's header pins 3 and 5 */
    snprintf(c->gpio_chip, sizeof c->gpio_chip, "gpiochip0");

    /* A 75 mV / 150 A shunt: 0.5 mOhm. 64 samples of 1.052 ms per channel
     * average out inverter ripple and still convert well within a tick. */
    c->battery_chip = EMS_HW_INA228;
    c->battery_address = 0x40;
    c->shunt_ohms = 0.0005;
    c->shunt_max_current_a = 150;
    c->battery_averaging = 64;
    c->battery_conversion_us = 1052;

    c->temp_address = 0x48;

    /* ADE7953 transfer functions of a common front end (1000:1 voltage
     * divider, 1 mOhm current shunt, as on Shelly boards): a starting
     * point only; docs/hardware.md says how to calibrate them. */
    c->grid_address = 0x38;
    c->grid_v_per_lsb = 1.0 / 26000.0;
    c->grid_a_per_lsb = 1.0 / 100000.0;
    c->grid_w_per_lsb = 1.0 / 154.0;
    c->zero_cross_line = 22;
    c->grid_nominal_hz = 50;
    c->freq_window_ms = 1000;

    /* GPIO17 / GPIO27 (header pins 11 and 13), active high with external
     * pull-downs; 0..3.3 V on the DAC is 0..6 kW. */
    c->charge_line = 17;
    c->discharge_line = 27;
    c->dac_address = 0x60;
    c->dac_vref_v = 3.3;
    c->dac_offset_v = 0;
    c->dac_volts_per_kw = 0.55;

    /* A 16-cell LFP pack of 100 Ah. */
    c->soc_capacity_ah = 100;
    snprintf(c->soc_ocv_table, sizeof c->soc_ocv_table,
             "0:44.0,5:48.0,10:50.0,20:51.2,30:51.6,40:52.0,50:52.2,60:52.4,70:52.6,80:52.8,"
             "90:53.2,100:54.4");
    c->soc_rest_current_a = 2;
    c->soc_rest_s = 1800;
    c->soc_full_voltage_v = 56.8; /* 3.55 V per cell */
    c->soc_full_tail_a = 5;
    c->soc_full_s = 60;
    c->soc_empty_voltage_v = 46.4; /* 2.9 V per cell */
    c->soc_empty_s = 30;
    c->soc_charge_efficiency = 0.99;
}

static bool hw__in(int v, const int *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == v)
            return true;
    return false;
}

void ems_hw_soc_config(const ems_hw_config_t *c, ems_soc_config_t *out)
{
    ems_soc_config_default(out);
    out->capacity_ah = c->soc_capacity_ah;
    out->charge_efficiency = c->soc_charge_efficiency;
    out->rest_current_a = c->soc_rest_current_a;
    out->rest_ms = (int64_t)llround(c->soc_rest_s * 1000.0);
    out->full_voltage_v = c->soc_full_voltage_v;
    out->full_tail_a = c->soc_full_tail_a;
    out->full_ms = (int64_t)llround(c->soc_full_s * 1000.0);
    out->empty_voltage_v = c->soc_empty_voltage_v;
    out->empty_ms = (int64_t)llround(c->soc_empty_s * 1000.0);
}

int ems_hw_config_check(const ems_hw_config_t *c, double max_charge_w, double max_discharge_w,
                        char *why, size_t cap)
{
    static const int avg[] = {1, 4, 16, 64, 128, 256, 512, 1024};
    static const int conv228[] = {50, 84, 150, 280, 540, 1052, 2074, 4120};
    static const int conv226[] = {140, 204, 332, 588, 1100, 2116, 4156, 8244};
    bool is228 = c->battery_chip == EMS_HW_INA228;
    if (!hw__in(c->battery_averaging, avg, 8)) {
        snprintf(why, cap,
                 "battery_monitor_averaging: %d is not 1, 4, 16, 64, 128, 256, 512 or 1024",
                 c->battery_averaging);
        return EMS_EINVAL;
    }
    if (!hw__in(c->battery_conversion_us, is228 ? conv228 : conv226, 8)) {
        snprintf(why, cap, "battery_monitor_conversion_us: %d is not one of the %s's times (%s)",
                 c->battery_conversion_us, is228 ? "INA228" : "INA226",
                 is228 ? "50, 84, 150, 280, 540, 1052, 2074, 4120"
                       : "140, 204, 332, 588, 1100, 2116, 4156, 8244");
        return EMS_EINVAL;
    }
    double range_v = is228 ? 0.16384 : 0.08192;
    if (c->shunt_ohms * c->shunt_max_current_a > range_v) {
        snprintf(why, cap,
                 "shunt_ohms x shunt_max_current_a = %.2f mV is beyond the %s's shunt input "
                 "range of %.2f mV",
                 c->shunt_ohms * c->shunt_max_current_a * 1000, is228 ? "INA228" : "INA226",
                 range_v * 1000);
        return EMS_EINVAL;
    }
    int addr[4] = {c->battery_address, c->temp_address, c->grid_address, c->dac_address};
    const char *akey[4] = {"battery_monitor_address", "temp_sensor_address", "grid_meter_address",
                           "dac_address"};
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            if (addr[i] == addr[j]) {
                snprintf(why, cap, "%s and %s are both 0x%02x: two chips cannot share an address",
                         akey[i], akey[j], addr[i]);
                return EMS_EINVAL;
            }
    int line[3] = {c->charge_line, c->discharge_line, c->zero_cross_line};
    const char *lkey[3] = {"charge_enable_line", "discharge_enable_line", "zero_cross_line"};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (line[i] == line[j]) {
                snprintf(why, cap, "%s and %s are both line %d", lkey[i], lkey[j], line[i]);
                return EMS_EINVAL;
            }
    if (c->dac_offset_v >= c->dac_vref_v) {
        snprintf(why, cap, "dac_offset_v (%g V) must be below dac_vref_v (%g V)", c->dac_offset_v,
                 c->dac_vref_v);
        return EMS_EINVAL;
    }
    double top_w = max_charge_w > max_discharge_w ? max_charge_w : max_discharge_w;
    double top_v = c->dac_offset_v + top_w / 1000.0 * c->dac_volts_per_kw;
    if (top_v > c->dac_vref_v + 1e-9) {
        snprintf(why, cap,
                 "the DAC cannot command %g W: dac_offset_v + %g kW x dac_volts_per_kw = %.3f V, "
                 "above dac_vref_v %g V (lower max_charge_w/max_discharge_w or dac_volts_per_kw)",
                 top_w, top_w / 1000.0, top_v, c->dac_vref_v);
        return EMS_EINVAL;
    }
    ems_soc_config_t sc;
    ems_hw_soc_config(c, &sc);
    char e[256];
    if (ems_soc_ocv_parse(c->soc_ocv_table, &sc, e, sizeof e) < 0) {
        snprintf(why, cap, "soc_ocv_table: %s", e);
        return EMS_EINVAL;
    }
    if (ems_soc_config_check(&sc, e, sizeof e) < 0) {
        snprintf(why, cap, "%s", e);
        return EMS_EINVAL;
    }
    return 0;
}
