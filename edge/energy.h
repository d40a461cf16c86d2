/* energy.h: the edge's four energy counters (battery charged, battery
 * discharged, grid import, grid export), integrated every tick from the
 * powers the packet reports, and the rule that keeps them from ever going
 * backwards on the wire across a crash or a power cut.
 *
 * Integration. Each tick the daemon hands over the battery and grid power
 * it is about to report (battery > 0 charging, grid > 0 importing; the
 * signs of docs/protocol.md) with the monotonic time (ms) of that sensor
 * group's reading. The energy of the interval since the previous reading
 * of the same group is power x dt: the positive part goes to one counter,
 * the negative part to the other. The reading at the end of an interval
 * stands for the interval, because it measures the setpoint applied during
 * it. dt is capped at `max_dt_ms` (2 tick periods): after a stall, a
 * skipped tick or a sensor that was stale, the gap is not guessed at. The
 * first reading after a start, and a reading whose time did not move (the
 * group was not read again) or whose power is not finite, add nothing.
 *
 * Units. Counters are whole milliwatt-hours (uint64_t); the fraction of a
 * mWh is carried to the next tick, so no energy is lost to rounding while
 * the daemon runs. The wire carries mWh / 1000 (at most three decimals).
 *
 * Never backwards: the ceiling. Besides the running counter (`count`), each
 * counter has a `ceiling` that is on disk (the state file, edge/state.h).
 * The daemon reports min(count, ceiling), never more, and restarts from
 * the ceiling. So every value ever reported is <= what a restart begins
 * with, whatever the moment of the crash. When a count passes its ceiling
 * the daemon writes new ceilings, count + margin, before it builds the
 * packet (ems_edge_energy_propose, then _persisted once the write is
 * durable). The margin is 60 s of the counter's current power, at least
 * 1 Wh: so in steady flow a ceiling is written about once a minute, and a
 * restart after a crash counts at most that margin that never flowed. A
 * clean shutdown writes ceilings equal to the counts: no error at all.
 * docs/edge-daemon.md, "Energy counters", has the argument and the bounds.
 *
 * Pure logic: no clock, no file. Not thread-safe.
 */
#ifndef EMS_EDGE_ENERGY_H
#define EMS_EDGE_ENERGY_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    EMS_ENERGY_BATTERY_CHARGED,
    EMS_ENERGY_BATTERY_DISCHARGED,
    EMS_ENERGY_GRID_IMPORT,
    EMS_ENERGY_GRID_EXPORT,
    EMS_ENERGY_COUNT
} ems_energy_counter_t;

/* The two sensor groups the counters come from. */
typedef enum { EMS_ENERGY_BATTERY, EMS_ENERGY_GRID, EMS_ENERGY_GROUPS } ems_energy_group_t;

#define EMS_ENERGY_RESERVE_S 60        /* a ceiling covers this long at the current power */
#define EMS_ENERGY_MIN_MARGIN_MWH 1000 /* and at least 1 Wh */

typedef struct {
    int64_t since_ms;                       /* UTC ms when this series began at 0 */
    uint64_t count_mwh[EMS_ENERGY_COUNT];   /* integrated so far */
    double frac_mwh[EMS_ENERGY_COUNT];      /* the part of a mWh not yet counted, [0, 1) */
    uint64_t ceiling_mwh[EMS_ENERGY_COUNT]; /* durable: on disk */
    double power_w[EMS_ENERGY_GROUPS];      /* the last power added, for the margin */
    int64_t last_ms[EMS_ENERGY_GROUPS];     /* the last reading integrated; 0 = none yet */
    int64_t max_dt_ms;
    uint64_t dt_capped; /* intervals cut to max_dt_ms */
} ems_edge_energy_t;

/* Starts the counters at `start_mwh` (the ceilings read from the state file,
 * or NULL for a new series at 0) in the series that began at `since_ms`.
 * The start values count as durable. `period_ms` is the tick period; dt is
 * capped at twice it. */
void ems_edge_energy_init(ems_edge_energy_t *e, int64_t period_ms, int64_t since_ms,
                          const uint64_t start_mwh[EMS_ENERGY_COUNT]);

/* Integrates one reading of `group`: `watts` (signed as on the wire) read
 * at monotonic `reading_ms`. */
void ems_edge_energy_add(ems_edge_energy_t *e, ems_energy_group_t group, double watts,
                         int64_t reading_ms);

/* True when some counter has passed its ceiling, i.e. new ceilings must be
 * written before the counters may be reported in full. */
bool ems_edge_energy_needs_persist(const ems_edge_energy_t *e);

/* The ceilings to write now: each count plus its margin (60 s at the last
 * power that fed it, at least 1 Wh), or with `exact` (clean shutdown) the
 * counts themselves. Never below a value already reported. */
void ems_edge_energy_propose(const ems_edge_energy_t *e, bool exact,
                             uint64_t out_mwh[EMS_ENERGY_COUNT]);

/* Records that `ceiling_mwh` (from _propose) is durable on disk now. */
void ems_edge_energy_persisted(ems_edge_energy_t *e, const uint64_t ceiling_mwh[EMS_ENERGY_COUNT]);

/* The values to report: min(count, ceiling) per counter, in mWh. */
void ems_edge_energy_report(const ems_edge_energy_t *e, uint64_t out_mwh[EMS_ENERGY_COUNT]);

/* The counter's name on the wire and in the state file ("battery_charged"). */
const char *ems_edge_energy_name(ems_energy_counter_t c);

#endif
