/* status_http.h: the edge's small local HTTP endpoint (status_port).
 *
 * For the installer on the LAN and for monitoring, and usable when the
 * cloud is down: it reads only the daemon's memory.
 *   GET /status     JSON: state, mode, faults, the link, the buffer and the
 *                   last telemetry packet (docs/edge-daemon.md)
 *   GET /metrics    the same counters as Prometheus text (version 0.0.4)
 *   POST /sim/fault?overheat=on   fault injection (edge/simio.h), only when
 *                   the daemon passes a `sim` callback (backend = sim and
 *                   sim_control = true) and only from a loopback peer
 *                   (403 otherwise), whatever status_bind is
 * Anything else is 404 (or 405 for a known path with the wrong method).
 * Off by default; when on, it binds status_bind (127.0.0.1 by default).
 *
 * Mechanism: common/net/server.h; the bodies come from the callbacks.
 */
#ifndef EMS_EDGE_STATUS_HTTP_H
#define EMS_EDGE_STATUS_HTTP_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ems_status_http ems_status_http_t;

typedef struct {
    /* Append the body; return 0 or a negative error (answered 500). */
    int (*status_json)(void *ud, ems_buf_t *out);
    int (*metrics)(void *ud, ems_buf_t *out);
    /* Fault injection; NULL when it is off. Returns 0 (msg says what was
     * done) or EMS_EINVAL (msg says why not). */
    int (*sim)(void *ud, const char *query, size_t len, char *msg, size_t cap);
} ems_status_http_callbacks_t;

/* Listens on bind:port (port 0 picks one). Returns 0 and *out, or the
 * server's error (UV_EADDRINUSE, UV_EINVAL for a bad address...). */
int ems_status_http_start(uv_loop_t *loop, const char *bind, uint16_t port,
                          const ems_status_http_callbacks_t *cbs, void *ud,
                          ems_status_http_t **out);

/* The bound port. */
uint16_t ems_status_http_port(const ems_status_http_t *s);

/* Replaces the fault-injection callback (NULL turns it off). */
void ems_status_http_set_sim(ems_status_http_t *s, int (*sim)(void *ud, const char *query,
                                                              size_t len, char *msg, size_t cap));

/* Closes the listener and its connections; on_stopped(arg) runs when all
 * is closed and s is freed. */
void ems_status_http_stop(ems_status_http_t *s, void (*on_stopped)(void *arg), void *arg);

#endif
