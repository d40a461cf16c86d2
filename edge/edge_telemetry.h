/* edge_telemetry.h: the telemetry packet from one tick of the edge.
 *
 * Builds an ems_telemetry_t (common/telemetry.h) from the state machine's
 * output, the sensor sample, the Wi-Fi level and the clock. Values are
 * rounded to what the sensors can resolve: volts and amps to 0.01, watts to
 * 0.1, SoC and temperature to 0.1, grid frequency to 0.01. Battery power is
 * not rounded on its own but computed from the rounded voltage and current,
 * so power = voltage x current holds on the wire within 0.05 W.
 *
 * A reading that is not finite (a broken sensor; the state machine has
 * SENSOR_FAULT set then) is sent as 0, and values are clamped into the
 * protocol's ranges, so the packet always passes ems_telemetry_check; the
 * error flags say why a value is meaningless. A temperature outside the
 * protocol range is left out (the field is optional).
 */
#ifndef EMS_EDGE_TELEMETRY_H
#define EMS_EDGE_TELEMETRY_H

#include "fsm.h"
#include "io.h"
#include "telemetry.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *device_id;
    int64_t utc_ms;    /* wall-clock time of the sample */
    bool clock_synced; /* false before NTP (docs/state-machine.md, "Time") */
    uint64_t seq;
    bool has_wifi;
    int wifi_dbm;
} ems_edge_telemetry_ctx_t;

/* Fills *t completely (optional fields: target_mode, target_power for the
 * manual power modes, battery.temperature, seq, clock_synced). */
void ems_edge_telemetry_build(ems_telemetry_t *t, const ems_edge_telemetry_ctx_t *ctx,
                              const ems_fsm_output_t *out, const ems_io_sample_t *s);

/* Rounds x to the nearest multiple of `step` (0.01, 0.1, ...), giving the
 * double closest to the decimal, so it prints short. Not finite -> 0. */
double ems_edge_round(double x, double step);

#endif
