/* daemon.h: the edge daemon ems-edge, everything on one libuv loop.
 *
 * Wires the pure edge core (fsm, cmd, plant via simio, edge_telemetry,
 * clock, wifi) to the buffer (store), the cloud link (uplink, backfill),
 * the local status endpoint (status_http) and the signals. The design and
 * every knob are in docs/edge-daemon.md; the tick order is the one of
 * docs/state-machine.md:
 *
 *   every tick_ms (1000) on a drift-free monotonic schedule:
 *     read io -> fsm step -> apply setpoint -> settle commands (results
 *     upstream) -> build telemetry (seq from the store, clock_synced, wifi,
 *     backlog) -> append to the store -> send live
 *
 * Deadlines are absolute: the next one is the previous deadline plus the
 * period, never "now + period", so the schedule does not drift; if the
 * process was stalled past whole periods, those ticks are skipped (counted
 * and logged), not run in a burst.
 *
 * Signals: SIGTERM and SIGINT shut down (outputs safe at once, the link
 * closed with 1000 and a close frame, the buffer flushed and closed, every
 * handle closed); a second one forces the link closed. SIGHUP reloads the
 * configuration (limits, log level, backfill, CA file, sim_control; the
 * rest is logged as needing a restart).
 *
 * Lifetime: new -> start -> uv_run (returns after shutdown completed) ->
 * free. Not thread-safe.
 */
#ifndef EMS_EDGE_DAEMON_H
#define EMS_EDGE_DAEMON_H

#include "config.h"
#include "version.h"

#include <uv.h>

#define EMS_EDGE_VERSION EMS_VERSION
#define EMS_EDGE_FIRMWARE "ems-edge " EMS_EDGE_VERSION

typedef struct ems_edge_daemon ems_edge_daemon_t;

/* Makes a daemon for the checked configuration `cfg` (copied). argv is
 * borrowed (it must outlive the daemon) and parsed again on SIGHUP.
 * Returns 0 and *out, or EMS_ENOMEM. Opens nothing yet. */
int ems_edge_daemon_new(uv_loop_t *loop, const ems_edge_config_t *cfg, int argc, char *const argv[],
                        ems_edge_daemon_t **out);

/* Opens the buffer, starts the back end, the tick, the uplink, the status
 * endpoint and the signal handlers. Returns 0, or a negative error (logged)
 * after which the caller runs the loop once more so that whatever was
 * opened is closed (the daemon has begun its shutdown). */
int ems_edge_daemon_start(ems_edge_daemon_t *d);

/* Begins the shutdown, as SIGTERM does. `why` is logged. */
void ems_edge_daemon_shutdown(ems_edge_daemon_t *d, const char *why);

/* 0 after a clean shutdown on a signal, 1 after a start failure. */
int ems_edge_daemon_exit_status(const ems_edge_daemon_t *d);

/* Frees the daemon after uv_run has returned (all handles closed). */
void ems_edge_daemon_free(ems_edge_daemon_t *d);

#endif
