/* soc.h: battery state of charge by coulomb counting, anchored by the
 * open-circuit voltage at rest and by full and empty detection.
 *
 * Pure logic: no I/O, no clock reads, no allocation. The hardware back end
 * calls ems_soc_update() with every battery monitor reading (INA228: volts,
 * amps with + = charging, and the charge accumulator's delta in coulombs
 * since the previous reading; NAN from an INA226, or when the accumulator
 * restarted) and reports ems_soc_value() as battery_soc.
 *
 * Counting. With a finite hardware delta the charge is that delta: the chip
 * integrates continuously, far better than samples a second apart. Without
 * one, the current is integrated with the trapezoid rule between the
 * previous and this sample; a segment that crosses zero is split at the
 * crossing, so charge in and charge out are each exact for a linear ramp.
 * Charge going in counts charge_efficiency (coulombic, 0.99) of itself;
 * charge going out counts fully. SoC += 100 x stored Ah / capacity_ah,
 * clamped to 0..100 (each clamped update is counted: frequent clamping means
 * the capacity is set too small or the counter drifted).
 *
 * Gaps. Between samples more than soc_max_gap_s (10 s) apart the current is
 * unknown: a daemon stall, a bus failure, a suspended board. The amps path
 * then integrates nothing for the gap rather than guessing from the two
 * ends, counts it (gaps, unintegrated_s) and, if the charge it may have
 * missed (largest |I| at either end x gap) exceeds 1 % of capacity, marks
 * the value low-confidence. The hardware path still applies its delta (the
 * chip kept counting). Either way the rest, full and empty timers restart:
 * nobody knows whether the condition held during the gap. A time that goes
 * backwards is treated as a gap.
 *
 * Corrections, each applied once per episode (until its condition breaks):
 *  - full: volts >= soc_full_voltage_v while not discharging and the charge
 *    current has tapered below soc_full_tail_a (-rest < I < tail), held for
 *    soc_full_s -> 100 %. The most reliable anchor of an LFP pack.
 *  - empty: volts <= soc_empty_voltage_v while not charging
 *    (I < soc_rest_current_a), held for soc_empty_s -> 0 %.
 *  - rest: |I| < soc_rest_current_a for soc_rest_s (30 min: LFP relaxes
 *    slowly) -> the SoC the OCV table gives for the voltage, but only where
 *    the table is steep enough to say something: the slope of the table
 *    segment holding the voltage (the flatter one at a point between two)
 *    must be at least soc_rest_min_slope_mv
 *    (pack mV per %, 100 by default, about 6 mV/% per cell). LFP's curve is
 *    flat from ~20 to ~90 % (20-40 mV/% for the pack in the default table),
 *    where its charge/discharge hysteresis (~20 mV per cell, 0.3 V for the
 *    pack) alone would be worth 10 % of SoC; a rest there corrects nothing
 *    and is counted as rest_flat. At 100 mV/% the same hysteresis and the
 *    I x R of the rest current (2 A x ~20 mOhm) stay within 4 %. The
 *    default rest current, 0.02 C (2 A for 100 Ah), lies above an
 *    inverter's standby draw and below any real charge or discharge.
 *  Any correction makes the value confident again.
 *
 * Unknown start. Without a persisted value the first valid sample sets the
 * SoC from the OCV table (the voltage under load is off by I x R, and the
 * flat band makes it coarse anyway), flagged low-confidence until a rest,
 * full or empty correction.
 */
#ifndef EMS_SOC_H
#define EMS_SOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_SOC_OCV_MAX 32

/* Configuration; config keys in brackets, defaults for a 16-cell LFP pack of
 * 100 Ah. The time fields are ms; their keys are in seconds. */
typedef struct ems_soc_config {
    double capacity_ah;       /* [soc_capacity_ah] 100 */
    double charge_efficiency; /* [soc_charge_efficiency] 0.99, 0.5..1 */
    /* [soc_ocv_table] rested pack volts at SoC points, both strictly
     * increasing; default "0:44.0,5:48.0,10:50.0,20:51.2,30:51.6,40:52.0,
     * 50:52.2,60:52.4,70:52.6,80:52.8,90:53.2,100:54.4" */
    int ocv_points;
    double ocv_soc[EMS_SOC_OCV_MAX]; /* percent */
    double ocv_v[EMS_SOC_OCV_MAX];   /* volts */
    double rest_current_a;           /* [soc_rest_current_a] 2 (0.02 C) */
    int64_t rest_ms;                 /* [soc_rest_s] 1800 s */
    double rest_min_slope_mv;        /* [soc_rest_min_slope_mv] 100 mV per % (pack) */
    double full_voltage_v;           /* [soc_full_voltage_v] 56.8 (3.55 V per cell) */
    double full_tail_a;              /* [soc_full_tail_a] 5 (0.05 C) */
    int64_t full_ms;                 /* [soc_full_s] 60 s */
    double empty_voltage_v;          /* [soc_empty_voltage_v] 46.4 (2.9 V per cell) */
    int64_t empty_ms;                /* [soc_empty_s] 30 s */
    int64_t max_gap_ms;              /* [soc_max_gap_s] 10 s */
} ems_soc_config_t;

/* Fills the defaults above, OCV table included. */
void ems_soc_config_default(ems_soc_config_t *c);

/* Checks the configuration, OCV table included. Returns 0, or EMS_EINVAL
 * with a sentence in `why` (capacity `cap`, may be NULL) naming the key. */
int ems_soc_config_check(const ems_soc_config_t *c, char *why, size_t cap);

/* Parses an OCV table "SOC:VOLTS,SOC:VOLTS,..." (spaces allowed around
 * entries and numbers) into c->ocv_*. Returns 0, or EMS_EINVAL with a
 * sentence in `err` naming the offending entry by position and text (not
 * the key: callers prefix "soc_ocv_table: "); `c` is then unchanged. Errors:
 * not SOC:VOLTS, a number that is not finite, SoC outside 0..100, SoC or
 * volts not increasing, fewer than 2 or more than EMS_SOC_OCV_MAX entries. */
int ems_soc_ocv_parse(const char *text, ems_soc_config_t *c, char *err, size_t cap);

typedef enum {
    EMS_SOC_CORR_NONE = 0,
    EMS_SOC_CORR_REST,
    EMS_SOC_CORR_FULL,
    EMS_SOC_CORR_EMPTY,
} ems_soc_correction_t;

/* "none", "rest", "full", "empty" (for logs and /metrics labels). */
const char *ems_soc_correction_name(ems_soc_correction_t k);

/* Counters and the last correction, for /metrics and --probe. */
typedef struct ems_soc_stats {
    ems_soc_correction_t last_correction; /* NONE until the first */
    int64_t last_correction_ms;           /* monotonic ms; 0 while NONE */
    double last_correction_pct;           /* the jump it made: after - before, % */
    uint64_t rest_corrections;
    uint64_t full_corrections;  /* set_full() included */
    uint64_t empty_corrections; /* set_empty() included */
    uint64_t rest_flat;         /* rests that ended in the flat band: no correction */
    double ah_in;               /* Ah into the terminals, lifetime (persisted) */
    double ah_out;              /* Ah out of the terminals, lifetime (persisted), >= 0 */
    uint64_t clamps;            /* updates whose result had to be clamped to 0..100 */
    uint64_t bad_input;         /* updates skipped: volts or amps not finite */
    uint64_t gaps;              /* samples more than max_gap apart (or time backwards) */
    double unintegrated_s;      /* time of gaps the amps path could not integrate */
} ems_soc_stats_t;

/* What the back end persists (every minute and at shutdown) and hands back
 * to ems_soc_restore() at start. Plain data. */
typedef struct ems_soc_persist {
    double soc;           /* percent; NAN when unknown */
    double ah_since_full; /* Ah through the terminals (in + out) since the last full
                           * correction: how far the counter ran without its best anchor */
    double ah_in;         /* lifetime Ah in, at the terminals */
    double ah_out;        /* lifetime Ah out */
    int confident;        /* 0 when low-confidence (OCV start, uncounted gap) */
} ems_soc_persist_t;

typedef struct ems_soc_timer {
    bool on, done;
    int64_t since;
} ems_soc_timer_t;

/* The counter. Plain data owned by the caller; no teardown. Fields are
 * private. */
typedef struct ems_soc {
    ems_soc_config_t cfg;
    double soc; /* percent; NAN until known */
    bool confident;
    bool have_sample;
    int64_t last_ms;
    double last_a;
    double ah_since_full;
    ems_soc_timer_t rest, full, empty;
    ems_soc_stats_t stats;
} ems_soc_t;

/* Starts the counter. `c` is copied and must have passed
 * ems_soc_config_check(). `soc0` is the persisted SoC in percent; NAN (or
 * anything outside 0..100) means unknown: the first valid sample then takes
 * the OCV estimate, low-confidence. A known soc0 counts as confident. */
void ems_soc_init(ems_soc_t *s, const ems_soc_config_t *c, double soc0);

/* Like ems_soc_init(), restoring everything in *p (p->soc as soc0). */
void ems_soc_restore(ems_soc_t *s, const ems_soc_config_t *c, const ems_soc_persist_t *p);

/* Fills *p with what to persist. */
void ems_soc_save(const ems_soc_t *s, ems_soc_persist_t *p);

/* One battery reading at monotonic `now_ms`: pack `volts`, `amps` (+ =
 * charging) and `dcharge_c`, the hardware accumulator's delta in coulombs
 * since the previous reading (+ = charging) or NAN. Integrates, clamps and
 * applies the corrections (see above). The first update after init only
 * records the sample (and takes the OCV estimate when the SoC is unknown):
 * there is nothing to integrate against, so its dcharge_c is ignored.
 * Returns 0, or EMS_EINVAL when volts or amps is not finite: the sample is
 * skipped and nothing changes but the bad_input counter. */
int ems_soc_update(ems_soc_t *s, int64_t now_ms, double volts, double amps, double dcharge_c);

/* The state of charge in percent, 0..100; NAN while unknown (no persisted
 * value and no valid sample yet). */
double ems_soc_value(const ems_soc_t *s);

/* False after an OCV start or an uncounted gap, until a correction. */
bool ems_soc_confident(const ems_soc_t *s);

/* Hooks for an outside verdict (a BMS flag, the state machine): SoC :=
 * 100 % or 0 %, recorded as a FULL or EMPTY correction at the time of the
 * last sample. */
void ems_soc_set_full(ems_soc_t *s);
void ems_soc_set_empty(ems_soc_t *s);

/* The OCV table: pack volts at `soc_pct`, and the SoC (percent) at `volts`;
 * linear between points, the end values beyond the table. */
double ems_soc_ocv(const ems_soc_t *s, double soc_pct);
double ems_soc_from_ocv(const ems_soc_t *s, double volts);

/* Copies the counters into *out. */
void ems_soc_stats(const ems_soc_t *s, ems_soc_stats_t *out);

#endif
