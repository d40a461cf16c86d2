/* edge_status.h: what the edge's local endpoint (status_http.h) shows, and
 * how: GET /status as JSON and GET /metrics as Prometheus text (version
 * 0.0.4), both rendered from one snapshot of the daemon's state.
 *
 * The daemon fills an ems_edge_status_t when a request arrives (it reads
 * only memory: usable when the cloud is down), and these functions turn it
 * into the bodies; status_http.c serves them. The names and meanings of the
 * JSON members and metrics are in docs/edge-daemon.md.
 */
#ifndef EMS_EDGE_STATUS_H
#define EMS_EDGE_STATUS_H

#include "backfill.h"
#include "buf.h"
#include "energy.h"
#include "hwio.h"
#include "status.h"
#include "store.h"
#include "uplink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One snapshot; pointers are borrowed for the duration of the call. */
typedef struct {
    const char *device_id;
    const char *cloud_url;
    const ems_hwio_t *hwio; /* backend = hw (its own metrics follow), else NULL */
    int64_t mono_ms, start_mono_ms;
    ems_state_t state;
    ems_target_mode_t target_mode;
    double target_power;
    bool have_last; /* a tick has run: the fields of the last one are set */
    double setpoint_w;
    uint32_t error_flags;   /* in the last packet */
    uint32_t active_faults; /* the state machine's */
    const char *last_json;  /* the last packet */
    size_t last_len;
    bool clock_synced;
    int kernel_synced; /* -1 unknown, 0, 1 */
    bool have_gateway_offset;
    int64_t gateway_offset_ms;
    bool have_link; /* the uplink exists (a cloud_url is set) */
    ems_uplink_stats_t link;
    ems_store_stats_t buffer;
    ems_backfill_stats_t backfill;
    bool energy_ready;
    uint64_t energy_mwh[EMS_ENERGY_COUNT];
    uint64_t energy_ceiling_mwh[EMS_ENERGY_COUNT];
    int64_t energy_since_ms;
    uint64_t energy_saves, energy_dt_capped;
    bool energy_save_failing;
    uint64_t ticks, ticks_skipped;
    unsigned results_waiting;
    uint64_t packets, live_sent, store_errors, commands, commands_invalid, ignored_msgs;
} ems_edge_status_t;

/* Appends the /status body (compact JSON and a newline). Returns 0,
 * EMS_ENOMEM, or the buffer's EMS_ENOSPC. */
int ems_edge_status_json(const ems_edge_status_t *s, ems_buf_t *out);

/* Appends the /metrics body. Same returns. */
int ems_edge_status_metrics(const ems_edge_status_t *s, ems_buf_t *out);

#endif
