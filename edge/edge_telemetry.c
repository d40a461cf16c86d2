/* edge_telemetry.c: telemetry from a tick (see edge_telemetry.h). */
#include "edge_telemetry.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

double ems_edge_round(double x, double step)
{
    if (!isfinite(x))
        return 0.0;
    /* Divide by the reciprocal's exact integer (100 for 0.01) rather than
     * multiply by the inexact step, so 53.2 comes out as the double 53.2. */
    double inv = round(1.0 / step);
    double r = round(x * inv) / inv;
    return r == 0.0 ? 0.0 : r; /* no "-0" on the wire */
}

static double clampd(double x, double lo, double hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

void ems_edge_telemetry_build(ems_telemetry_t *t, const ems_edge_telemetry_ctx_t *ctx,
                              const ems_fsm_output_t *out, const ems_io_sample_t *s)
{
    memset(t, 0, sizeof *t);
    snprintf(t->device_id, sizeof t->device_id, "%s", ctx->device_id);
    t->timestamp_ms = ctx->utc_ms;

    t->state = out->state;
    t->mode = out->mode;
    t->error_flags = out->error_flags;
    if (ctx->has_wifi && ctx->wifi_dbm >= -127 && ctx->wifi_dbm <= 0) {
        t->has_wifi_strength = true;
        t->wifi_strength = ctx->wifi_dbm;
    }
    t->has_target_mode = true;
    t->target_mode = out->target_mode;
    if (out->target_mode == EMS_TARGET_MANUAL_CHARGE ||
        out->target_mode == EMS_TARGET_MANUAL_DISCHARGE) {
        t->has_target_power = true;
        t->target_power = clampd(ems_edge_round(out->target_power, 0.1), 0, 1e6);
    }

    /* Ranges from docs/protocol.md; a pack never reaches them, a broken
     * sensor might. */
    double v = clampd(ems_edge_round(s->battery_voltage, 0.01), 0, 1000);
    double i = clampd(ems_edge_round(s->battery_current, 0.01), -10000, 10000);
    t->battery_voltage = v;
    t->battery_current = i;
    t->battery_power = clampd(ems_edge_round(v * i, 0.1), -1e6, 1e6);
    t->battery_soc = clampd(ems_edge_round(s->battery_soc, 0.1), 0, 100);
    double temp = s->battery_temperature;
    if (isfinite(temp) && temp >= -50 && temp <= 150) {
        t->has_battery_temperature = true;
        t->battery_temperature = ems_edge_round(temp, 0.1);
    }

    t->grid_voltage = clampd(ems_edge_round(s->grid_voltage, 0.1), 0, 1000);
    t->grid_power = clampd(ems_edge_round(s->grid_power, 0.1), -1e7, 1e7);
    t->grid_frequency = clampd(ems_edge_round(s->grid_frequency, 0.01), 0, 100);

    t->has_seq = true;
    t->seq = ctx->seq;
    t->has_clock_synced = true;
    t->clock_synced = ctx->clock_synced;
}
