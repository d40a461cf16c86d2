/* simio.h: the simulated plant as the daemon's io back end, with time
 * acceleration and fault injection for tests and demos.
 *
 * Time acceleration (`plant_speed`, docs/edge-daemon.md): the plant runs
 * `speed` simulated milliseconds per real millisecond, so a demo can show an
 * afternoon of sun and load in minutes. The daemon's own clocks stay real:
 * the tick, the timestamps, the stale-sensor limits and the command
 * timeouts. The sample's freshness times are mapped back to real time, so a
 * dropped sensor goes stale after sensor_stale_ms of real time whatever the
 * speed.
 *
 * Fault injection (`sim_control`): ems_simio_control() applies a query
 * string such as "overheat=on" or "temp=70&drop=grid" to the plant. The
 * status endpoint calls it for POST /sim/fault (loopback peers only).
 *   overheat=on|off      forces the pack to temp_max_c + 15 C / to ambient
 *   temp=C               forces the pack temperature (-100..300 C; the
 *                        model cools or heats from there toward ambient)
 *   drop=G[,G]           sensor groups battery, temp, grid, all stop
 *                        reporting (their readings go stale)
 *   restore=G[,G]        they report again
 *   grid_outage=on|off   the grid meter reads 0 V, 0 Hz, 0 W
 * Everything takes effect at the next tick's reading.
 */
#ifndef EMS_EDGE_SIMIO_H
#define EMS_EDGE_SIMIO_H

#include "fsm.h"
#include "io.h"
#include "plant.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    ems_io_t io; /* the back-end interface (ems_simio_io) */
    ems_plant_t plant;
    double speed;
    int64_t t0_ms; /* real monotonic time at init */
} ems_simio_t;

/* Starts the plant at real monotonic time now_ms. speed >= 1 (1 = real
 * time). Returns 0 or the plant's EMS_EINVAL. */
int ems_simio_init(ems_simio_t *s, const ems_plant_config_t *cfg, double speed, int64_t now_ms);

/* The io interface: read(now_ms) advances the plant to the simulated time
 * of real time now_ms; apply_setpoint and safe_off go to the plant. */
ems_io_t *ems_simio_io(ems_simio_t *s);

/* Applies a fault-injection query (see above) of `len` bytes. The limits
 * give the overheat temperature. Writes what was done (or why not) into
 * msg. Returns 0, or EMS_EINVAL for an unknown or malformed parameter
 * (then nothing was applied). */
int ems_simio_control(ems_simio_t *s, const ems_fsm_limits_t *lim, const char *query, size_t len,
                      char *msg, size_t cap);

#endif
