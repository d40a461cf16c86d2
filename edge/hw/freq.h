/* freq.h: grid frequency from the edges of a zero-crossing detector.
 *
 * Pure logic: no I/O, no clock reads, no allocation. The hardware back end
 * feeds every rising edge of the opto-isolated zero-crossing input (one per
 * mains cycle) with its kernel timestamp (libgpiod v1 line events,
 * CLOCK_MONOTONIC, ns) to ems_freq_edge(), and once a second asks
 * ems_freq_read() for the frequency over the last window_ms.
 *
 * The algorithm, and why:
 *
 *  1. Acquisition. Until it has a lock the estimator looks at raw intervals.
 *     An edge closer than tolerance x the shortest in-band period to the
 *     edge before it is contact bounce and is skipped. Three consecutive
 *     intervals that agree within tolerance give a candidate period; if its
 *     frequency lies in the band (band_low..band_high x nominal, 40..60 Hz
 *     at 50 Hz) the estimator locks on those four edges, else the candidate
 *     is counted as out of band and remembered as evidence for EMS_ERANGE.
 *     Starting from raw intervals rather than from the nominal period means
 *     a 100 Hz or 30 Hz signal is recognised for what it is instead of being
 *     folded onto 50 Hz by the slot rule below.
 *
 *  2. Slots. Once locked, a new edge at distance d from the tracked time of
 *     the last accepted cycle is compared with the tracked period P: with
 *     k = round(d / P), the edge is accepted as k periods later if
 *     |d / P - k| <= tolerance (0.2), and k - 1 edges are counted as missing
 *     (at most max_missing in a row; a longer gap cannot be counted reliably
 *     and drops the lock). An edge with k = 0 (closer than half a period) is
 *     a glitch, but it competes for the slot of the last accepted edge: it
 *     replaces that edge if it lies closer to where the edges before predict
 *     that slot, so a spurious edge just before a real one does not stick.
 *     An edge that fits no slot is a glitch and is dropped; the anchor stays
 *     where it is, so a glitch never shortens or lengthens a counted period.
 *     Jitter of +-200 us is 2 % of a period, far inside the 20 % tolerance.
 *
 *  3. Tracking. P and the phase of the slots come from a least-squares fit
 *     over the last 16 counted periods, so the slots follow a drifting grid
 *     and a glitch that took a slot barely moves them. If most recent
 *     decisions were rejections (16 of the last 32; bounce does not count)
 *     or P leaves the band, the lock is dropped and acquisition starts over:
 *     the signal is no longer the one we locked to.
 *
 *  4. Reading. The frequency comes from a least-squares fit of edge time
 *     against cycle number over the accepted edges in the window (the slope
 *     is the period). On clean input that equals periods / time spanned;
 *     with jitter it uses every edge rather than the two ends, and unlike
 *     the mean of 1/interval it is not biased by jitter (E[1/x] != 1/E[x])
 *     nor by a missing edge. Outliers are left out: a spurious edge that
 *     filled the slot of a lost one passes the slot test up to tolerance x P
 *     off, one such point would move a 1 s fit by ~0.02 Hz, and a cluster of
 *     them tilts a least-squares line enough to hide among its residuals. So
 *     a median line comes first (median slope between points half a window
 *     apart, median offset), and points farther from it than 5 x the
 *     median-based spread of the residuals and than 3 % of a period are left
 *     out of the least-squares fit; on clean or jittered input none is. The
 *     window slides: every read looks at the accepted edges in
 *     (now - window_ms, now].
 *
 *  Honesty. ems_freq_read() returns EMS_ESTALE when the window holds fewer
 *  than min_coverage x the nominal number of cycles as accepted edges: no
 *  edge at all (grid outage, cable off), start-up, a recent re-lock, most
 *  edges lost. It returns EMS_ERANGE instead when the window saw evidence
 *  that the signal is not mains (candidate periods outside the band, or the
 *  tracked period leaving it). On an error *hz is NAN, never 0 or an old
 *  value.
 *
 *  The band (0.8..1.2 x nominal) is wide enough for any real grid, whose
 *  protection trips generators near 47.5 and 51.5 Hz, so the state machine
 *  (grid_freq_min_hz..grid_freq_max_hz), not this estimator, judges an
 *  off-nominal grid; and narrow enough that a detector giving an edge per
 *  half cycle (2 x nominal), one missing every other edge (0.5 x nominal)
 *  or plain noise is refused. (A 50 Hz grid on a 60 Hz setting, 0.83 x, is
 *  read as what it is, 50 Hz, and left to the state machine.)
 *
 *  Timestamps that go backwards or repeat are counted and ignored. Three in a
 *  row mean the time base itself stepped (kernels before 5.7 stamp line
 *  events with CLOCK_REALTIME): the estimator then starts over from the new
 *  time base instead of waiting for it to catch up with the old one.
 */
#ifndef EMS_FREQ_H
#define EMS_FREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Accepted edges kept for the window. The config check keeps the most edges
 * a window can hold (window x max frequency / (1 - tolerance)) below this. */
#define EMS_FREQ_RING 1024

/* Configuration; config keys in brackets (used in messages; the last five
 * are optional keys, the defaults suit any 50 or 60 Hz grid). */
typedef struct ems_freq_config {
    double nominal_hz;   /* [grid_nominal_hz] 50; 50 or 60 */
    int32_t window_ms;   /* [grid_freq_window_ms] 1000; 200..10000 */
    double band_low;     /* [grid_freq_band_low] 0.8: lowest mains frequency / nominal */
    double band_high;    /* [grid_freq_band_high] 1.2: highest mains frequency / nominal */
    double tolerance;    /* [grid_freq_tolerance] 0.2: slot fit, fraction of a period */
    double min_coverage; /* [grid_freq_min_coverage] 0.5: accepted cycles / nominal cycles */
    int32_t max_missing; /* [grid_freq_max_missing] 9: lost edges in a row still counted */
} ems_freq_config_t;

/* Fills the defaults above (50 Hz). */
void ems_freq_config_default(ems_freq_config_t *c);

/* Checks the configuration. Returns 0, or EMS_EINVAL with a sentence in `why`
 * (capacity `cap`, may be NULL) naming the key. */
int ems_freq_config_check(const ems_freq_config_t *c, char *why, size_t cap);

/* Counters for /metrics and --probe. Monotonic since init. */
typedef struct ems_freq_stats {
    uint64_t edges;       /* every ems_freq_edge() call */
    uint64_t accepted;    /* edges accepted as a cycle boundary */
    uint64_t cycles;      /* periods counted, inferred missing ones included */
    uint64_t glitches;    /* edges rejected as bounce or spurious */
    uint64_t missing;     /* edges inferred lost (an interval of k periods adds k - 1) */
    uint64_t out_of_band; /* candidate periods outside the band */
    uint64_t backwards;   /* timestamps not after the newest one seen (ignored) */
    uint64_t locks;       /* times a lock was acquired */
    uint64_t unlocks;     /* times it was dropped (gap, rejections, band, clock step) */
} ems_freq_stats_t;

typedef struct ems_freq_point {
    int64_t t; /* ns */
    int64_t n; /* cycle number within the current lock */
} ems_freq_point_t;

/* The estimator. Plain data owned by the caller (about 16 KiB); no teardown.
 * Fields are private. */
typedef struct ems_freq {
    ems_freq_config_t cfg;
    double p_nom_ns;  /* nominal period */
    double bounce_ns; /* raw edges closer than this are bounce */
    int64_t window_ns;

    bool have_edge;
    int64_t last_ns; /* newest edge seen */
    int back_run;    /* consecutive backwards timestamps */

    int acq_n;
    int64_t acq[4]; /* last raw edges while acquiring */
    bool have_offband;
    int64_t offband_ns; /* newest out-of-band evidence */

    bool locked;
    double p_ref_ns;  /* tracked period */
    double phase_ns;  /* where the track puts the newest accepted cycle, from its edge */
    uint32_t history; /* 1 bits: recent rejections while locked */
    unsigned head, count;
    ems_freq_point_t ring[EMS_FREQ_RING];

    ems_freq_stats_t stats;
} ems_freq_t;

/* Starts an estimator with no edges. `c` is copied and must have passed
 * ems_freq_config_check(). */
void ems_freq_init(ems_freq_t *f, const ems_freq_config_t *c);

/* Feeds one rising edge at `ts_ns` (monotonic ns). Never fails; what became
 * of the edge shows in the stats. */
void ems_freq_edge(ems_freq_t *f, int64_t ts_ns);

/* The frequency over the window ending at `now_ns` (same clock as the edges,
 * not before the newest edge). Returns 0 with *hz set; EMS_ESTALE (too few
 * accepted cycles in the window, none at all included) or EMS_ERANGE (the
 * signal is not mains, see above) with *hz = NAN. Does not change `f`. */
int ems_freq_read(const ems_freq_t *f, int64_t now_ns, double *hz);

/* Copies the counters into *out. */
void ems_freq_stats(const ems_freq_t *f, ems_freq_stats_t *out);

#endif
