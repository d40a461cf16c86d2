/* state.h: what the edge must remember across a restart besides the
 * telemetry buffer: a latched ERROR with its flags, and the battery's state
 * of charge when the hardware back end counts it.
 *
 * Why: docs/state-machine.md says only RESET_ERROR leaves ERROR. A restart
 * of the daemon (by an operator, by systemd after a crash, by a power cut)
 * must not clear a latched fault behind the operator's back, so the latch
 * is written to disk the moment it changes, before the tick that entered
 * or left ERROR finishes.
 *
 * The file lives beside the buffer (PATH.state for buffer_path PATH) and is
 * plain text an installer can read:
 *
 *   # ems-edge state (written by the daemon; edit only while it is stopped)
 *   error_latched = 1
 *   error_flags = OVERHEAT,SENSOR_FAULT
 *   error_since_ms = 1765123456789
 *   soc = 53.210
 *   soc_saved_ms = 1765123456789
 *   energy_since_ms = 1765000000000
 *   energy_battery_charged_mwh = 1234567
 *   energy_battery_discharged_mwh = 1200000
 *   energy_grid_import_mwh = 5230001
 *   energy_grid_export_mwh = 0
 *   crc32c = 1a2b3c4d
 *
 * It is replaced atomically (write PATH.state.tmp, fsync, rename, fsync the
 * folder), so a crash leaves the old or the new file, never a mix. The last
 * line is a CRC-32C of everything before it: a file that fails it, or that
 * cannot be parsed, is not trusted, and the daemon starts latched in ERROR
 * (fail-safe: an unknown state needs a human RESET_ERROR) and says why. A
 * missing file is a first start: nothing latched, SoC unknown.
 *
 * The energy lines are the ceilings of edge/energy.h, in whole mWh: values
 * the counters may be reported up to, and restart from. They come as a
 * group of five (all or none; a file written before energy counting has
 * none). A damaged file gives no energy (has_energy false): the daemon then
 * starts a new series (a new energy_since_ms) rather than trust a number
 * it cannot check (docs/edge-daemon.md, "Energy counters").
 */
#ifndef EMS_EDGE_STATE_H
#define EMS_EDGE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_EDGE_STATE_ENERGY 4 /* counters, in the order of ems_energy_counter_t */

typedef struct {
    bool error_latched;
    uint32_t error_flags;   /* EMS_FAULT_* bits latched when the file was written */
    int64_t error_since_ms; /* UTC ms when ERROR was entered; 0 = unknown */
    bool has_soc;
    double soc;           /* percent, the hardware back end's coulomb counter */
    int64_t soc_saved_ms; /* UTC ms of that value */
    bool has_energy;
    int64_t energy_since_ms;                    /* UTC ms the series began at 0 */
    uint64_t energy_mwh[EMS_EDGE_STATE_ENERGY]; /* ceilings, mWh (edge/energy.h) */
} ems_edge_state_t;

/* The state file's path for a buffer path: PATH.state into out (capacity
 * cap). Returns 0 or EMS_ENOSPC when it does not fit. */
int ems_edge_state_path(const char *buffer_path, char *out, size_t cap);

/* Reads the file at `path` into *out. Returns:
 *   0           read and verified;
 *   EMS_ENOENT  no file (first start): *out is all zero;
 *   EMS_EINVAL  the file exists but is damaged: *out says error_latched
 *               with no flags, and err names the line or the checksum;
 *   EMS_EIO     it cannot be read (permissions...): as EMS_EINVAL.
 */
int ems_edge_state_load(const char *path, ems_edge_state_t *out, char *err, size_t cap);

/* Replaces the file atomically with *st. `sync` false skips the fsyncs
 * (buffer_sync = off: tmpfs and tests). Returns 0 or a negative EMS_E*
 * code with the failing step and path in err. */
int ems_edge_state_save(const char *path, const ems_edge_state_t *st, bool sync, char *err,
                        size_t cap);

#endif
