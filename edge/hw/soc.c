/* soc.c: state of charge by coulomb counting (see soc.h). */
#include "soc.h"

#include "error.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A gap that may have hidden more than this share of the capacity makes the
 * value low-confidence. */
#define EMS_SOC__GAP_DOUBT 0.01

static const char *const soc__default_ocv = "0:44.0,5:48.0,10:50.0,20:51.2,30:51.6,40:52.0,50:52.2,"
                                            "60:52.4,70:52.6,80:52.8,90:53.2,100:54.4";

void ems_soc_config_default(ems_soc_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->capacity_ah = 100.0;
    c->charge_efficiency = 0.99;
    c->rest_current_a = 2.0;
    c->rest_ms = 1800 * 1000;
    c->rest_min_slope_mv = 100.0;
    c->full_voltage_v = 56.8;
    c->full_tail_a = 5.0;
    c->full_ms = 60 * 1000;
    c->empty_voltage_v = 46.4;
    c->empty_ms = 30 * 1000;
    c->max_gap_ms = 10 * 1000;
    int rc = ems_soc_ocv_parse(soc__default_ocv, c, NULL, 0);
    (void)rc; /* the default table is valid (test_edge_hw_soc checks) */
}

const char *ems_soc_correction_name(ems_soc_correction_t k)
{
    switch (k) {
    case EMS_SOC_CORR_REST:
        return "rest";
    case EMS_SOC_CORR_FULL:
        return "full";
    case EMS_SOC_CORR_EMPTY:
        return "empty";
    case EMS_SOC_CORR_NONE:
    default:
        return "none";
    }
}

#define EMS_SOC__WHY(...)                                                                          \
    do {                                                                                           \
        if (why && cap)                                                                            \
            snprintf(why, cap, __VA_ARGS__);                                                       \
        return EMS_EINVAL;                                                                         \
    } while (0)

/* --------------------------------------------------------------- OCV table */

/* Checks point `i` (0-based) against the one before it. Returns 0 or
 * EMS_EINVAL with a message about "entry i+1" plus `text` when given. */
static int soc__ocv_point(const double *soc, const double *v, int i, const char *text, char *why,
                          size_t cap)
{
    char name[64];
    if (text)
        snprintf(name, sizeof name, "entry %d (\"%.32s\")", i + 1, text);
    else
        snprintf(name, sizeof name, "entry %d", i + 1);
    if (!isfinite(soc[i]) || !isfinite(v[i]))
        EMS_SOC__WHY("%s: SoC and volts must be finite numbers", name);
    if (soc[i] < 0 || soc[i] > 100)
        EMS_SOC__WHY("%s: SoC %g is outside 0..100", name, soc[i]);
    if (v[i] <= 0)
        EMS_SOC__WHY("%s: volts %g must be positive", name, v[i]);
    if (i > 0 && soc[i] <= soc[i - 1])
        EMS_SOC__WHY("%s: SoC %g is not above %g of the entry before; SoC must increase", name,
                     soc[i], soc[i - 1]);
    if (i > 0 && v[i] <= v[i - 1])
        EMS_SOC__WHY("%s: volts %g are not above %g of the entry before; volts must increase", name,
                     v[i], v[i - 1]);
    return 0;
}

/* Reads one "SOC:VOLTS" entry of `len` bytes. */
static bool soc__ocv_entry(const char *p, size_t len, double *soc, double *v)
{
    char buf[64];
    if (len >= sizeof buf)
        return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    char *e;
    *soc = strtod(buf, &e);
    if (e == buf)
        return false;
    while (isspace((unsigned char)*e))
        e++;
    if (*e != ':')
        return false;
    char *q = e + 1;
    *v = strtod(q, &e);
    if (e == q)
        return false;
    while (isspace((unsigned char)*e))
        e++;
    return *e == '\0';
}

int ems_soc_ocv_parse(const char *text, ems_soc_config_t *c, char *err, size_t cap)
{
    char *why = err;
    double soc[EMS_SOC_OCV_MAX], v[EMS_SOC_OCV_MAX];
    int n = 0;
    const char *p = text ? text : "";
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        /* trim, for the message and the parse alike */
        while (len && isspace((unsigned char)*p))
            p++, len--;
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0) {
            if (!end && n == 0)
                break; /* an empty table: reported below */
            EMS_SOC__WHY("entry %d is empty", n + 1);
        }
        if (n == EMS_SOC_OCV_MAX)
            EMS_SOC__WHY("more than %d entries", EMS_SOC_OCV_MAX);
        char shown[40];
        snprintf(shown, sizeof shown, "%.*s", (int)(len < 32 ? len : 32), p);
        if (!soc__ocv_entry(p, len, &soc[n], &v[n]))
            EMS_SOC__WHY("entry %d (\"%s\"): expected SOC:VOLTS, e.g. \"50:52.2\"", n + 1, shown);
        int rc = soc__ocv_point(soc, v, n, shown, why, cap);
        if (rc < 0)
            return rc;
        n++;
        if (!end)
            break;
        p = end + 1;
    }
    if (n < 2)
        EMS_SOC__WHY("needs at least 2 entries SOC:VOLTS (got %d)", n);
    c->ocv_points = n;
    memcpy(c->ocv_soc, soc, sizeof soc[0] * (size_t)n);
    memcpy(c->ocv_v, v, sizeof v[0] * (size_t)n);
    return 0;
}

/* Interpolates y(x) over increasing xs; the end values beyond the ends. */
static double soc__interp(const double *xs, const double *ys, int n, double x)
{
    if (x <= xs[0])
        return ys[0];
    if (x >= xs[n - 1])
        return ys[n - 1];
    int i = 0;
    while (x > xs[i + 1])
        i++;
    return ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i]);
}

double ems_soc_ocv(const ems_soc_t *s, double soc_pct)
{
    const ems_soc_config_t *c = &s->cfg;
    return soc__interp(c->ocv_soc, c->ocv_v, c->ocv_points, soc_pct);
}

double ems_soc_from_ocv(const ems_soc_t *s, double volts)
{
    const ems_soc_config_t *c = &s->cfg;
    return soc__interp(c->ocv_v, c->ocv_soc, c->ocv_points, volts);
}

/* The table's slope at `volts`, pack mV per %: the segment holding the
 * voltage (the end segments beyond the table); at a point between two
 * segments, the flatter of the two. */
static double soc__slope_mv(const ems_soc_config_t *c, double volts)
{
    int n = c->ocv_points;
    double best = INFINITY;
    for (int i = 0; i + 1 < n; i++) {
        bool in = volts >= c->ocv_v[i] && volts <= c->ocv_v[i + 1];
        if ((i == 0 && volts < c->ocv_v[0]) || (i + 2 == n && volts > c->ocv_v[n - 1]))
            in = true;
        if (!in)
            continue;
        double m = 1000.0 * (c->ocv_v[i + 1] - c->ocv_v[i]) / (c->ocv_soc[i + 1] - c->ocv_soc[i]);
        best = m < best ? m : best;
    }
    return best;
}

/* ------------------------------------------------------------------ config */

int ems_soc_config_check(const ems_soc_config_t *c, char *why, size_t cap)
{
    if (!(isfinite(c->capacity_ah) && c->capacity_ah > 0))
        EMS_SOC__WHY("soc_capacity_ah must be a positive number (got %g)", c->capacity_ah);
    if (!(c->charge_efficiency >= 0.5 && c->charge_efficiency <= 1.0))
        EMS_SOC__WHY("soc_charge_efficiency must lie within 0.5..1 (got %g)", c->charge_efficiency);
    if (c->ocv_points < 2 || c->ocv_points > EMS_SOC_OCV_MAX)
        EMS_SOC__WHY("soc_ocv_table needs 2..%d entries (got %d)", EMS_SOC_OCV_MAX, c->ocv_points);
    for (int i = 0; i < c->ocv_points; i++) {
        char e[160];
        if (soc__ocv_point(c->ocv_soc, c->ocv_v, i, NULL, e, sizeof e) < 0)
            EMS_SOC__WHY("soc_ocv_table: %s", e);
    }
    if (!(isfinite(c->rest_current_a) && c->rest_current_a > 0))
        EMS_SOC__WHY("soc_rest_current_a must be a positive number (got %g)", c->rest_current_a);
    if (c->rest_ms <= 0)
        EMS_SOC__WHY("soc_rest_s must be positive (got %g)", c->rest_ms / 1000.0);
    if (!(isfinite(c->rest_min_slope_mv) && c->rest_min_slope_mv >= 0))
        EMS_SOC__WHY("soc_rest_min_slope_mv must not be negative (got %g)", c->rest_min_slope_mv);
    if (!(isfinite(c->full_voltage_v) && c->full_voltage_v > 0))
        EMS_SOC__WHY("soc_full_voltage_v must be a positive number (got %g)", c->full_voltage_v);
    if (!(isfinite(c->full_tail_a) && c->full_tail_a > 0))
        EMS_SOC__WHY("soc_full_tail_a must be a positive number (got %g)", c->full_tail_a);
    if (c->full_ms < 0)
        EMS_SOC__WHY("soc_full_s must not be negative (got %g)", c->full_ms / 1000.0);
    if (!(isfinite(c->empty_voltage_v) && c->empty_voltage_v > 0))
        EMS_SOC__WHY("soc_empty_voltage_v must be a positive number (got %g)", c->empty_voltage_v);
    if (c->empty_ms < 0)
        EMS_SOC__WHY("soc_empty_s must not be negative (got %g)", c->empty_ms / 1000.0);
    if (c->empty_voltage_v >= c->full_voltage_v)
        EMS_SOC__WHY("soc_empty_voltage_v %g must be below soc_full_voltage_v %g",
                     c->empty_voltage_v, c->full_voltage_v);
    if (c->max_gap_ms <= 0)
        EMS_SOC__WHY("soc_max_gap_s must be positive (got %g)", c->max_gap_ms / 1000.0);
    return 0;
}

/* ------------------------------------------------------------------ state */

void ems_soc_init(ems_soc_t *s, const ems_soc_config_t *c, double soc0)
{
    memset(s, 0, sizeof *s);
    s->cfg = *c;
    if (isfinite(soc0) && soc0 >= 0 && soc0 <= 100) {
        s->soc = soc0;
        s->confident = true;
    } else {
        s->soc = NAN;
    }
}

static double soc__nonneg(double x)
{
    return isfinite(x) && x > 0 ? x : 0;
}

void ems_soc_restore(ems_soc_t *s, const ems_soc_config_t *c, const ems_soc_persist_t *p)
{
    ems_soc_init(s, c, p->soc);
    if (isfinite(s->soc))
        s->confident = p->confident != 0;
    s->ah_since_full = soc__nonneg(p->ah_since_full);
    s->stats.ah_in = soc__nonneg(p->ah_in);
    s->stats.ah_out = soc__nonneg(p->ah_out);
}

void ems_soc_save(const ems_soc_t *s, ems_soc_persist_t *p)
{
    memset(p, 0, sizeof *p);
    p->soc = s->soc;
    p->ah_since_full = s->ah_since_full;
    p->ah_in = s->stats.ah_in;
    p->ah_out = s->stats.ah_out;
    p->confident = s->confident ? 1 : 0;
}

double ems_soc_value(const ems_soc_t *s)
{
    return s->soc;
}

bool ems_soc_confident(const ems_soc_t *s)
{
    return s->confident;
}

void ems_soc_stats(const ems_soc_t *s, ems_soc_stats_t *out)
{
    *out = s->stats;
}

static void soc__correct(ems_soc_t *s, ems_soc_correction_t kind, double value, int64_t now_ms)
{
    s->stats.last_correction = kind;
    s->stats.last_correction_ms = now_ms;
    s->stats.last_correction_pct = isfinite(s->soc) ? value - s->soc : 0;
    s->soc = value;
    s->confident = true;
    if (kind == EMS_SOC_CORR_FULL) {
        s->ah_since_full = 0;
        s->stats.full_corrections++;
    } else if (kind == EMS_SOC_CORR_EMPTY) {
        s->stats.empty_corrections++;
    } else {
        s->stats.rest_corrections++;
    }
}

void ems_soc_set_full(ems_soc_t *s)
{
    soc__correct(s, EMS_SOC_CORR_FULL, 100.0, s->last_ms);
}

void ems_soc_set_empty(ems_soc_t *s)
{
    soc__correct(s, EMS_SOC_CORR_EMPTY, 0.0, s->last_ms);
}

/* ---------------------------------------------------------------- update */

/* Adds charge through the terminals: `in` and `out` in Ah, both >= 0. */
static void soc__count(ems_soc_t *s, double in, double out)
{
    s->stats.ah_in += in;
    s->stats.ah_out += out;
    s->ah_since_full += in + out;
    s->soc += 100.0 * (in * s->cfg.charge_efficiency - out) / s->cfg.capacity_ah;
}

/* Trapezoid from current a to b over h hours, split at a zero crossing so
 * the efficiency applies to exactly the charge that went in. */
static void soc__trapezoid(ems_soc_t *s, double a, double b, double h)
{
    if (a >= 0 && b >= 0) {
        soc__count(s, (a + b) / 2 * h, 0);
    } else if (a <= 0 && b <= 0) {
        soc__count(s, 0, -(a + b) / 2 * h);
    } else {
        double f = a / (a - b); /* share of the segment before the crossing */
        double first = a / 2 * f * h, second = b / 2 * (1 - f) * h;
        if (a > 0)
            soc__count(s, first, -second);
        else
            soc__count(s, second, -first);
    }
}

/* True once when `cond` has held for `dur_ms`; re-arms when it breaks. */
static bool soc__held(ems_soc_timer_t *t, bool cond, int64_t now_ms, int64_t dur_ms)
{
    if (!cond) {
        t->on = t->done = false;
        return false;
    }
    if (!t->on) {
        t->on = true;
        t->since = now_ms;
    }
    if (t->done || now_ms - t->since < dur_ms)
        return false;
    t->done = true;
    return true;
}

static void soc__corrections(ems_soc_t *s, int64_t now_ms, double v, double a)
{
    const ems_soc_config_t *c = &s->cfg;
    bool full = v >= c->full_voltage_v && a > -c->rest_current_a && a < c->full_tail_a;
    bool empty = v <= c->empty_voltage_v && a < c->rest_current_a;
    bool rest = fabs(a) < c->rest_current_a;

    if (soc__held(&s->full, full, now_ms, c->full_ms))
        soc__correct(s, EMS_SOC_CORR_FULL, 100.0, now_ms);
    if (soc__held(&s->empty, empty, now_ms, c->empty_ms))
        soc__correct(s, EMS_SOC_CORR_EMPTY, 0.0, now_ms);
    if (soc__held(&s->rest, rest, now_ms, c->rest_ms)) {
        if (soc__slope_mv(c, v) >= c->rest_min_slope_mv)
            soc__correct(s, EMS_SOC_CORR_REST, ems_soc_from_ocv(s, v), now_ms);
        else
            s->stats.rest_flat++;
    }
}

int ems_soc_update(ems_soc_t *s, int64_t now_ms, double volts, double amps, double dcharge_c)
{
    if (!isfinite(volts) || !isfinite(amps)) {
        s->stats.bad_input++;
        return EMS_EINVAL;
    }
    if (!s->have_sample) {
        s->have_sample = true;
        if (!isfinite(s->soc)) {
            s->soc = ems_soc_from_ocv(s, volts);
            s->confident = false;
        }
    } else {
        int64_t dt = now_ms - s->last_ms;
        bool gap = dt < 0 || dt > s->cfg.max_gap_ms;
        if (isfinite(dcharge_c)) {
            /* The chip counted every coulomb, gap or not. */
            double ah = dcharge_c / 3600.0;
            soc__count(s, ah > 0 ? ah : 0, ah < 0 ? -ah : 0);
        } else if (!gap) {
            soc__trapezoid(s, s->last_a, amps, (double)dt / 3600000.0);
        } else if (dt > 0) {
            double hi = fmax(fabs(s->last_a), fabs(amps));
            s->stats.unintegrated_s += (double)dt / 1000.0;
            if (hi * (double)dt / 3600000.0 > EMS_SOC__GAP_DOUBT * s->cfg.capacity_ah)
                s->confident = false;
        }
        if (gap) {
            s->stats.gaps++;
            s->rest.on = s->full.on = s->empty.on = false;
            s->rest.done = s->full.done = s->empty.done = false;
        }
        if (s->soc > 100.0 || s->soc < 0.0) {
            s->soc = s->soc > 100.0 ? 100.0 : 0.0;
            s->stats.clamps++;
        }
    }
    s->last_ms = now_ms;
    s->last_a = amps;
    soc__corrections(s, now_ms, volts, amps);
    return 0;
}
