/* freq.c: grid frequency from zero-crossing edges (see freq.h). */
#include "freq.h"

#include "error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Periods averaged for the tracked reference period (point 3 in freq.h). */
#define EMS_FREQ__TRACK 16
/* Rejections among the last 32 decisions that drop the lock. */
#define EMS_FREQ__REJECT_LIMIT 16
/* Backwards timestamps in a row that mean the time base stepped. */
#define EMS_FREQ__CLOCK_STEP 3

void ems_freq_config_default(ems_freq_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->nominal_hz = 50.0;
    c->window_ms = 1000;
    c->band_low = 0.8;
    c->band_high = 1.2;
    c->tolerance = 0.2;
    c->min_coverage = 0.5;
    c->max_missing = 9;
}

#define EMS_FREQ__WHY(...)                                                                         \
    do {                                                                                           \
        if (why && cap)                                                                            \
            snprintf(why, cap, __VA_ARGS__);                                                       \
        return EMS_EINVAL;                                                                         \
    } while (0)

int ems_freq_config_check(const ems_freq_config_t *c, char *why, size_t cap)
{
    if (c->nominal_hz != 50.0 && c->nominal_hz != 60.0)
        EMS_FREQ__WHY("grid_nominal_hz must be 50 or 60 (got %g)", c->nominal_hz);
    if (c->window_ms < 200 || c->window_ms > 10000)
        EMS_FREQ__WHY("grid_freq_window_ms must lie within 200..10000 (got %d)", (int)c->window_ms);
    /* The band must keep half and twice the nominal frequency out, or a
     * detector with an edge per half cycle (or every other edge lost)
     * would read as mains. */
    if (!(c->band_low > 0.5 && c->band_low < 1.0))
        EMS_FREQ__WHY("grid_freq_band_low must lie between 0.5 and 1 (got %g)", c->band_low);
    if (!(c->band_high > 1.0 && c->band_high < 1.5))
        EMS_FREQ__WHY("grid_freq_band_high must lie between 1 and 1.5 (got %g)", c->band_high);
    /* Slots k periods apart must stay distinct: a tolerance near half a
     * period would let every edge fit somewhere. */
    if (!(c->tolerance >= 0.05 && c->tolerance <= 0.3))
        EMS_FREQ__WHY("grid_freq_tolerance must lie within 0.05..0.3 of a period (got %g)",
                      c->tolerance);
    if (!(c->min_coverage >= 0.1 && c->min_coverage <= 1.0))
        EMS_FREQ__WHY("grid_freq_min_coverage must lie within 0.1..1 (got %g)", c->min_coverage);
    if (c->max_missing < 0 || c->max_missing > 20)
        EMS_FREQ__WHY("grid_freq_max_missing must lie within 0..20 (got %d)", (int)c->max_missing);
    double most = c->window_ms / 1000.0 * c->nominal_hz * c->band_high / (1.0 - c->tolerance);
    if (most + 1 >= EMS_FREQ_RING)
        EMS_FREQ__WHY("grid_freq_window_ms %d is too long for grid_freq_band_high %g and "
                      "grid_freq_tolerance %g (a window may hold %.0f edges, at most %d fit)",
                      (int)c->window_ms, c->band_high, c->tolerance, most, EMS_FREQ_RING - 1);
    return 0;
}

void ems_freq_init(ems_freq_t *f, const ems_freq_config_t *c)
{
    memset(f, 0, sizeof *f);
    f->cfg = *c;
    f->p_nom_ns = 1e9 / c->nominal_hz;
    f->bounce_ns = c->tolerance * f->p_nom_ns / c->band_high;
    f->window_ns = (int64_t)c->window_ms * 1000000;
    f->p_ref_ns = f->p_nom_ns;
}

void ems_freq_stats(const ems_freq_t *f, ems_freq_stats_t *out)
{
    *out = f->stats;
}

/* ------------------------------------------------------------------ ring */

/* The i-th newest accepted edge (0 = newest); i < count. */
static ems_freq_point_t *freq__at(ems_freq_t *f, unsigned i)
{
    return &f->ring[(f->head + EMS_FREQ_RING - i) % EMS_FREQ_RING];
}

static const ems_freq_point_t *freq__cat(const ems_freq_t *f, unsigned i)
{
    return &f->ring[(f->head + EMS_FREQ_RING - i) % EMS_FREQ_RING];
}

static void freq__push(ems_freq_t *f, int64_t t, int64_t n)
{
    f->head = (f->head + 1) % EMS_FREQ_RING;
    f->ring[f->head].t = t;
    f->ring[f->head].n = n;
    if (f->count < EMS_FREQ_RING)
        f->count++;
}

static bool freq__in_band(const ems_freq_t *f, double hz)
{
    return hz >= f->cfg.band_low * f->cfg.nominal_hz && hz <= f->cfg.band_high * f->cfg.nominal_hz;
}

static void freq__offband(ems_freq_t *f, int64_t t)
{
    f->stats.out_of_band++;
    f->have_offband = true;
    f->offband_ns = t;
}

/* Drops the lock and the accepted edges; acquisition starts over. */
static void freq__unlock(ems_freq_t *f)
{
    f->locked = false;
    f->count = 0;
    f->acq_n = 0;
    f->stats.unlocks++;
}

/* ----------------------------------------------------------- acquisition */

static void freq__track(ems_freq_t *f);

static void freq__acquire(ems_freq_t *f, int64_t ts)
{
    /* the raw edges whose intervals must agree before a lock (freq.h, 1.) */
    const int need = (int)(sizeof f->acq / sizeof f->acq[0]);
    if (f->acq_n > 0 && (double)(ts - f->acq[f->acq_n - 1]) < f->bounce_ns) {
        f->stats.glitches++;
        return;
    }
    if (f->acq_n == need) {
        memmove(f->acq, f->acq + 1, (size_t)(need - 1) * sizeof f->acq[0]);
        f->acq_n = need - 1;
    }
    f->acq[f->acq_n++] = ts;
    if (f->acq_n < need)
        return;

    double lo = INFINITY, hi = 0;
    for (int i = 1; i < need; i++) {
        double d = (double)(f->acq[i] - f->acq[i - 1]);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    /* Quick rather than strict: waiting for more or closer intervals
     * costs seconds of ESTALE when glitches are frequent, while a lock that
     * includes a glitch is put right by the tracking and the robust fit, and
     * a lock on a wrong period is dropped again (too many rejections). */
    double p = (double)(f->acq[need - 1] - f->acq[0]) / (need - 1);
    if (hi - lo > f->cfg.tolerance * p)
        return; /* not yet alike: a glitch or a lost edge among them */
    if (!freq__in_band(f, 1e9 / p)) {
        freq__offband(f, ts);
        return;
    }
    f->locked = true;
    f->p_ref_ns = p;
    f->phase_ns = 0;
    f->history = 0;
    f->count = 0;
    for (int i = 0; i < need; i++)
        freq__push(f, f->acq[i], i);
    f->acq_n = 0;
    f->stats.locks++;
    f->stats.accepted += (uint64_t)need;
    f->stats.cycles += (uint64_t)need - 1;
    freq__track(f);
}

/* ---------------------------------------------------------------- locked */

/* t - t0 = a + b (n - n0), with (t0, n0) the newest accepted point: b is
 * the period in ns, a the offset of the line from the newest edge. */
typedef struct {
    double a, b;
} freq__line_t;

/* Least squares over up to EMS_FREQ__TRACK + 1 accepted points, leaving out
 * the `skip` newest ones (count > skip + 1). */
static freq__line_t freq__local(const ems_freq_t *f, unsigned skip)
{
    unsigned m = f->count - skip;
    if (m > EMS_FREQ__TRACK + 1)
        m = EMS_FREQ__TRACK + 1;
    const ems_freq_point_t *o = freq__cat(f, 0);
    double sx = 0, sy = 0, sxy = 0, sxx = 0;
    for (unsigned i = skip; i < skip + m; i++) {
        sx += (double)(freq__cat(f, i)->n - o->n);
        sy += (double)(freq__cat(f, i)->t - o->t);
    }
    double mx = sx / m, my = sy / m;
    for (unsigned i = skip; i < skip + m; i++) {
        double dx = (double)(freq__cat(f, i)->n - o->n) - mx;
        sxy += dx * ((double)(freq__cat(f, i)->t - o->t) - my);
        sxx += dx * dx;
    }
    freq__line_t l;
    l.b = sxy / sxx;
    l.a = my - l.b * mx;
    return l;
}

/* Re-derives the reference period and phase from a fit over the last
 * EMS_FREQ__TRACK periods, so a single glitch that took a slot (up to
 * tolerance x P off) moves neither much; drops the lock when the period
 * has left the band. */
static void freq__track(ems_freq_t *f)
{
    if (f->count < 2)
        return;
    freq__line_t l = freq__local(f, 0);
    if (!freq__in_band(f, 1e9 / l.b)) {
        freq__offband(f, freq__at(f, 0)->t);
        freq__unlock(f);
        return;
    }
    f->p_ref_ns = l.b;
    f->phase_ns = l.a;
}

/* Records one decision (1 = rejected) and drops the lock when rejections
 * dominate: the edges no longer follow the period we locked to. Returns
 * true when it did. */
static bool freq__decide(ems_freq_t *f, unsigned rejected)
{
    f->history = (f->history << 1) | rejected;
    unsigned ones = 0;
    for (uint32_t h = f->history; h; h &= h - 1)
        ones++;
    if (ones < EMS_FREQ__REJECT_LIMIT)
        return false;
    freq__unlock(f);
    return true;
}

/* An edge closer than half a period to the last accepted one: it replaces
 * that edge when it lies closer to where the edges before predict that
 * slot (the accepted one was then the glitch). */
static void freq__compete(ems_freq_t *f, int64_t ts)
{
    if (f->count < 3)
        return;
    ems_freq_point_t *last = freq__at(f, 0);
    freq__line_t l = freq__local(f, 1); /* the prediction for last's cycle is l.a */
    double e_new = fabs((double)(ts - last->t) - l.a), e_old = fabs(l.a);
    if (e_new < e_old && e_new <= f->cfg.tolerance * f->p_ref_ns) {
        last->t = ts;
        freq__track(f);
    }
}

static void freq__locked_edge(ems_freq_t *f, int64_t ts, bool bounce)
{
    const ems_freq_point_t *last = freq__at(f, 0);
    double x = ((double)(ts - last->t) - f->phase_ns) / f->p_ref_ns;
    double k = floor(x + 0.5);

    if (k < 1) {
        /* Bounce right after an edge is expected from a mechanical or slow
         * opto edge and says nothing about the signal; any other early edge
         * counts as a rejection. */
        f->stats.glitches++;
        freq__compete(f, ts);
        if (!f->locked || (!bounce && freq__decide(f, 1)))
            freq__acquire(f, ts);
        return;
    }
    if (k > f->cfg.max_missing + 1) {
        /* Too long a gap to count the cycles in it: start over here. */
        freq__unlock(f);
        freq__acquire(f, ts);
        return;
    }
    if (fabs(x - k) > f->cfg.tolerance) {
        f->stats.glitches++;
        if (freq__decide(f, 1))
            freq__acquire(f, ts);
        return;
    }
    int64_t n = last->n + (int64_t)k;
    freq__push(f, ts, n);
    f->stats.accepted++;
    f->stats.cycles += (uint64_t)k;
    f->stats.missing += (uint64_t)k - 1;
    freq__decide(f, 0);
    freq__track(f);
}

void ems_freq_edge(ems_freq_t *f, int64_t ts_ns)
{
    f->stats.edges++;
    if (f->have_edge && ts_ns <= f->last_ns) {
        f->stats.backwards++;
        if (++f->back_run < EMS_FREQ__CLOCK_STEP)
            return;
        /* The time base stepped back: forget everything measured on the
         * old one and continue on the new one. */
        if (f->locked)
            freq__unlock(f);
        f->acq_n = 0;
        f->have_offband = false;
    }
    bool bounce = f->have_edge && (double)(ts_ns - f->last_ns) < f->bounce_ns;
    f->back_run = 0;
    f->have_edge = true;
    f->last_ns = ts_ns;
    if (f->locked)
        freq__locked_edge(f, ts_ns, bounce);
    else
        freq__acquire(f, ts_ns);
}

/* ----------------------------------------------------------------- read */

/* Least squares of time against cycle number over the m newest accepted
 * points, skipping those farther than `limit` ns from `prev` when it is
 * given. Here the line is relative to the oldest point (t - t_o = a + b (n -
 * n_o)), so every term stays exact in a double. Leaves *out alone and
 * returns 0 when fewer than 2 points remain, else the number used. */
static unsigned freq__fit(const ems_freq_t *f, unsigned m, const freq__line_t *prev, double limit,
                          freq__line_t *out)
{
    const ems_freq_point_t *o = freq__cat(f, m - 1);
    double sx = 0, sy = 0, sxy = 0, sxx = 0;
    unsigned used = 0;
    for (unsigned i = 0; i < m; i++) {
        const ems_freq_point_t *p = freq__cat(f, i);
        double x = (double)(p->n - o->n), y = (double)(p->t - o->t);
        if (prev && fabs(y - (prev->a + prev->b * x)) > limit)
            continue;
        sx += x;
        sy += y;
        used++;
    }
    if (used < 2)
        return 0;
    double mx = sx / used, my = sy / used;
    for (unsigned i = 0; i < m; i++) {
        const ems_freq_point_t *p = freq__cat(f, i);
        double x = (double)(p->n - o->n), y = (double)(p->t - o->t);
        if (prev && fabs(y - (prev->a + prev->b * x)) > limit)
            continue;
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    out->b = sxy / sxx; /* sxx > 0: cycle numbers are distinct */
    out->a = my - out->b * mx;
    return used;
}

static int freq__cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A line that outliers cannot tilt: the median of the slopes between
 * points half the window apart (each pair spans many periods, so jitter
 * barely shows in it), and the median offset from it. Uses buf[m]. */
static void freq__fit_median(const ems_freq_t *f, unsigned m, double *buf, freq__line_t *out)
{
    const ems_freq_point_t *o = freq__cat(f, m - 1);
    unsigned h = m / 2, k = 0;
    for (unsigned i = 0; i + h < m; i++) {
        const ems_freq_point_t *p = freq__cat(f, i), *q = freq__cat(f, i + h);
        buf[k++] = (double)(p->t - q->t) / (double)(p->n - q->n);
    }
    qsort(buf, k, sizeof buf[0], freq__cmp);
    out->b = buf[k / 2];
    for (unsigned i = 0; i < m; i++) {
        const ems_freq_point_t *p = freq__cat(f, i);
        buf[i] = (double)(p->t - o->t) - out->b * (double)(p->n - o->n);
    }
    qsort(buf, m, sizeof buf[0], freq__cmp);
    out->a = buf[m / 2];
}

/* The least-squares fit without the outliers: a spurious edge that filled
 * the slot of a lost one can sit up to tolerance x P off the line, and a
 * single such point would move a 1 s fit by ~0.02 Hz. An outlier is a
 * point farther from the median line than 5 x the robust spread of the
 * residuals (1.48 x their median absolute value, the standard deviation
 * for normal jitter) and than 3 % of a period (0.6 ms at 50 Hz: above the
 * +-200 us jitter of a zero-crossing detector even where the median of a
 * small sample comes out low, and a point that close moves a 1 s reading
 * by at most ~0.004 Hz). Without outliers this is the plain least-squares
 * fit. m >= 2. */
static void freq__fit_robust(const ems_freq_t *f, unsigned m, freq__line_t *line)
{
    double r[EMS_FREQ_RING];
    const ems_freq_point_t *o = freq__cat(f, m - 1);
    freq__line_t med;
    freq__fit_median(f, m, r, &med);
    for (unsigned i = 0; i < m; i++) {
        const ems_freq_point_t *p = freq__cat(f, i);
        r[i] = fabs((double)(p->t - o->t) - (med.a + med.b * (double)(p->n - o->n)));
    }
    qsort(r, m, sizeof r[0], freq__cmp);
    double limit = fmax(5 * 1.4826 * r[m / 2], 0.03 * f->p_ref_ns);
    if (freq__fit(f, m, &med, limit, line) == 0)
        *line = med; /* not reached: at least half the points are within */
}

int ems_freq_read(const ems_freq_t *f, int64_t now_ns, double *hz)
{
    /* Only accepted edges inside (now - window, now] count. No edge at all
     * (outage, cable off), start-up, a fresh lock and mostly lost edges all
     * show as too few of them. */
    *hz = NAN;
    int64_t from = now_ns - f->window_ns;
    unsigned m = 0;
    while (m < f->count && freq__cat(f, m)->t > from)
        m++;
    double expected = f->cfg.window_ms / 1000.0 * f->cfg.nominal_hz;
    if (m < 2 || (double)(m - 1) < f->cfg.min_coverage * expected) {
        if (f->have_offband && f->offband_ns > from)
            return EMS_ERANGE;
        return EMS_ESTALE;
    }
    freq__line_t line;
    freq__fit_robust(f, m, &line);
    *hz = 1e9 / line.b;
    return 0;
}
