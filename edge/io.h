/* io.h: the edge's one sensor and actuator interface.
 *
 * The daemon talks to the battery, the inverter and the grid meter only
 * through this small vtable, so the simulated plant (edge/plant.h) and a
 * hardware back end are interchangeable. A back end embeds an ems_io_t and
 * fills `ops`; the daemon never branches on which one it has.
 *
 * Sign conventions (docs/state-machine.md, "Signs"): battery current and
 * power are positive when the battery charges; grid power is negative when
 * the house exports (sells) to the grid.
 *
 * Freshness: every sensor group carries the monotonic time (ms) of its last
 * fresh reading. A back end that could not read a group leaves the old value
 * and the old time, so the state machine sees the reading age and raises
 * SENSOR_FAULT once it is older than the configured limit. Nothing here reads
 * a clock: callers pass `now_ms`.
 */
#ifndef EMS_IO_H
#define EMS_IO_H

#include <stdint.h>

/* One measurement of everything the state machine needs. Plain data. */
typedef struct {
    /* battery (BMS / shunt): volts, amps (+ charge), watts (+ charge), percent */
    int64_t battery_ms; /* monotonic ms of the last fresh battery reading */
    double battery_voltage;
    double battery_current;
    double battery_power;
    double battery_soc;

    /* battery temperature, degrees Celsius (its own sensor) */
    int64_t temp_ms;
    double battery_temperature;

    /* grid meter: volts, watts (< 0 exporting), hertz */
    int64_t grid_ms;
    double grid_voltage;
    double grid_power;
    double grid_frequency;
} ems_io_sample_t;

typedef struct ems_io ems_io_t;

/* The operations of a back end. Each returns 0 or a negative EMS_E* code and
 * must not block for long (they run on the event loop once per second). */
typedef struct {
    /* Takes a reading at monotonic time `now_ms` into *out. On a partial
     * failure the groups that could not be read keep their previous value
     * and time (see above) and the call still returns 0; a negative return
     * means nothing could be read and *out holds the previous sample. */
    int (*read)(ems_io_t *io, int64_t now_ms, ems_io_sample_t *out);
    /* Commands the battery power in watts at the terminals, + = charge. The
     * caller has already applied every limit; a back end may still refuse
     * (returns EMS_EINVAL) but never silently changes the value. */
    int (*apply_setpoint)(ems_io_t *io, double watts);
    /* Brings the outputs to the safe state (no battery power). Must work in
     * any state, also after an error, and be cheap enough for a signal path. */
    int (*safe_off)(ems_io_t *io);
} ems_io_ops_t;

struct ems_io {
    const ems_io_ops_t *ops;
};

static inline int ems_io_read(ems_io_t *io, int64_t now_ms, ems_io_sample_t *out)
{
    return io->ops->read(io, now_ms, out);
}

static inline int ems_io_apply_setpoint(ems_io_t *io, double watts)
{
    return io->ops->apply_setpoint(io, watts);
}

static inline int ems_io_safe_off(ems_io_t *io)
{
    return io->ops->safe_off(io);
}

#endif
