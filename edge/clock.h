/* clock.h: whether the edge's wall clock can be trusted (clock_synced).
 *
 * docs/state-machine.md, "Time": a packet's clock_synced is true when the
 * kernel reports the clock as synchronised (adjtimex() without STA_UNSYNC),
 * or when the gateway's welcome server_time and the local clock agreed
 * within 2 s. A Raspberry Pi has no RTC and may run for minutes with a time
 * that is hours off until NTP syncs; the packets of that time are marked,
 * never re-stamped (docs/edge-daemon.md, "Time").
 *
 * The welcome is one measurement; it stays valid only while the wall clock
 * keeps pace with the monotonic clock. At welcome time the module records
 * both clocks and the offset to the server; later, a step of the wall clock
 * (settimeofday, an NTP step, a user running `date -s`) shows up as a
 * difference between the two elapsed times, and the estimated offset
 * (offset at welcome minus the step since) is checked again. So a clock
 * that agreed with the gateway and then jumped an hour reads as unsynced
 * until the next welcome or until NTP has synced it.
 *
 * Pure logic apart from ems_edge_clock_kernel_synced(); times are passed in.
 */
#ifndef EMS_EDGE_CLOCK_H
#define EMS_EDGE_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#define EMS_EDGE_CLOCK_TOLERANCE_MS 2000

typedef struct {
    bool have_welcome;
    int64_t w_utc_ms;    /* local wall clock when the welcome arrived */
    int64_t w_mono_ms;   /* local monotonic clock then */
    int64_t w_offset_ms; /* server_time - local wall clock, at that moment */
} ems_edge_clock_t;

/* Starts with no welcome. */
void ems_edge_clock_init(ems_edge_clock_t *c);

/* 1 when the kernel says the clock is synchronised, 0 when it says it is
 * not, a negative EMS_E* code when adjtimex() is unavailable (a seccomp
 * filter, an odd kernel): then only the welcome can vouch for the clock. */
int ems_edge_clock_kernel_synced(void);

/* Records a welcome: the gateway's time and the local clocks read when it
 * arrived. Returns the offset (server - local) in ms, for the log. */
int64_t ems_edge_clock_welcome(ems_edge_clock_t *c, int64_t server_ms, int64_t local_utc_ms,
                               int64_t mono_ms);

/* Forgets the welcome (not needed on a disconnect: the measurement stays
 * good while the clock does not step). */
void ems_edge_clock_forget(ems_edge_clock_t *c);

/* The estimated offset to the gateway now (server - local, ms), from the
 * welcome and the step of the wall clock since. False without a welcome. */
bool ems_edge_clock_offset(const ems_edge_clock_t *c, int64_t utc_ms, int64_t mono_ms,
                           int64_t *offset_ms);

/* The value of clock_synced for a packet taken at (utc_ms, mono_ms), given
 * what ems_edge_clock_kernel_synced() said. */
bool ems_edge_clock_synced(const ems_edge_clock_t *c, int kernel_synced, int64_t utc_ms,
                           int64_t mono_ms);

#endif
