/* test_edge_hw_freq.c: the grid frequency estimator of edge/hw/freq.c, fed
 * with synthetic zero-crossing edge trains: clean, jittered, with lost edges,
 * bounce and glitches, outages, off-band signals and bad timestamps. */
#include "ems_test.h"

#include "error.h"
#include "freq.h"
#include "rng.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* An arbitrary monotonic start, far from 0 like a real CLOCK_MONOTONIC. */
#define T0 ((int64_t)123456789012345)
#define SEC ((int64_t)1000000000)
#define MS ((int64_t)1000000)

static ems_freq_t *fresh(double nominal)
{
    static ems_freq_t f; /* 16 KiB: not on the stack */
    ems_freq_config_t c;
    ems_freq_config_default(&c);
    c.nominal_hz = nominal;
    EMS_CHECK_INT(ems_freq_config_check(&c, NULL, 0), ==, 0);
    ems_freq_init(&f, &c);
    return &f;
}

/* Edge i of an ideal train at `hz` from t0, rounded to the nanosecond. */
static int64_t ideal(int64_t t0, double hz, long i)
{
    return t0 + llround((double)i * 1e9 / hz);
}

/* Feeds `n` ideal edges from t0; returns the time of the last one. */
static int64_t feed_clean(ems_freq_t *f, int64_t t0, double hz, long n)
{
    for (long i = 0; i < n; i++)
        ems_freq_edge(f, ideal(t0, hz, i));
    return ideal(t0, hz, n - 1);
}

/* Feeds ideal edges from..to-1 of the train from t0; returns the last time. */
static int64_t feed_range(ems_freq_t *f, int64_t t0, double hz, long from, long to)
{
    for (long i = from; i < to; i++)
        ems_freq_edge(f, ideal(t0, hz, i));
    return ideal(t0, hz, to - 1);
}

static ems_freq_stats_t stats(const ems_freq_t *f)
{
    ems_freq_stats_t s;
    ems_freq_stats(f, &s);
    return s;
}

static double read_ok(const ems_freq_t *f, int64_t now)
{
    double hz = 0;
    int rc = ems_freq_read(f, now, &hz);
    if (rc != 0)
        EMS_FAIL("ems_freq_read: %d (%s), expected a value", rc, ems_strerror(rc));
    return hz;
}

static void check_err(const ems_freq_t *f, int64_t now, int want)
{
    double hz = 0;
    EMS_CHECK_INT(ems_freq_read(f, now, &hz), ==, want);
    EMS_CHECK(isnan(hz)); /* never a silent 0, never the last value */
}

/* ------------------------------------------------------------ edge trains */

/* A train with every impairment the detector may show. Real edge i sits at
 * i / hz plus jitter; lost edges are not fed; bounce follows a real edge;
 * a glitch lands at a random point between two real edges. Reads happen
 * once a second from `settle_s` on and must all lie within eps of hz. */
typedef struct {
    double hz;
    double jitter_us; /* uniform +- */
    int drop_mod;     /* edges with i % drop_mod >= drop_mod - drop_len are lost */
    int drop_len;
    int bounce_every; /* every Nth real edge bounces once, bounce_us later */
    double bounce_us;
    int glitch_every; /* a spurious edge inside every Nth period */
    double glitch_lo; /* where in the period (fraction), uniform in lo..hi */
    double glitch_hi;
    uint64_t seed;
} train_t;

typedef struct {
    int reads;
    double worst; /* largest |error| seen, Hz */
} train_result_t;

static train_result_t run_train(ems_freq_t *f, const train_t *tr, double seconds, double settle_s,
                                double eps)
{
    ems_rng_t rng;
    ems_rng_seed(&rng, tr->seed);
    train_result_t res = {0, 0};
    long n = (long)(seconds * tr->hz);
    int64_t next_read = T0 + (int64_t)(settle_s * 1e9);
    double period = 1e9 / tr->hz;

    double jit_next = tr->jitter_us > 0 ? (2 * ems_rng_uniform(&rng) - 1) * tr->jitter_us * 1e3 : 0;
    for (long i = 0; i < n; i++) {
        int64_t t = ideal(T0, tr->hz, i) + (int64_t)jit_next;
        jit_next = tr->jitter_us > 0 ? (2 * ems_rng_uniform(&rng) - 1) * tr->jitter_us * 1e3 : 0;
        int64_t t_next = ideal(T0, tr->hz, i + 1) + (int64_t)jit_next;

        /* The reads that fall before this edge. */
        while (next_read < t) {
            double hz = read_ok(f, next_read);
            double err = fabs(hz - tr->hz);
            if (err > res.worst)
                res.worst = err;
            if (err > eps)
                EMS_FAIL("read at %.3f s: %.5f Hz, want %.5f +- %g", (next_read - T0) / 1e9, hz,
                         tr->hz, eps);
            res.reads++;
            next_read += SEC;
        }

        bool lost = tr->drop_mod && i % tr->drop_mod >= tr->drop_mod - tr->drop_len;
        if (!lost) {
            ems_freq_edge(f, t);
            if (tr->bounce_every && i % tr->bounce_every == 0)
                ems_freq_edge(f, t + (int64_t)(tr->bounce_us * 1e3));
        }
        if (tr->glitch_every && i % tr->glitch_every == tr->glitch_every - 1) {
            double u = tr->glitch_lo + (tr->glitch_hi - tr->glitch_lo) * ems_rng_uniform(&rng);
            int64_t g = t + (int64_t)(u * period);
            if (g > t && g < t_next)
                ems_freq_edge(f, g);
        }
    }
    EMS_CHECK(res.reads >= (int)(seconds - settle_s) - 1);
    return res;
}

static train_t plain(double hz)
{
    train_t tr;
    memset(&tr, 0, sizeof tr);
    tr.hz = hz;
    tr.seed = 1;
    return tr;
}

/* ------------------------------------------------------------ clean input */

static void test_clean_50(void)
{
    ems_freq_t *f = fresh(50);
    int64_t last = feed_clean(f, T0, 50.0, 100);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    EMS_CHECK_NEAR(read_ok(f, last + 15 * MS), 50.0, 0.001);
    const ems_freq_stats_t st_ = stats(f), *s = &st_;
    EMS_CHECK_INT(s->edges, ==, 100);
    EMS_CHECK_INT(s->accepted, ==, 100);
    EMS_CHECK_INT(s->cycles, ==, 99);
    EMS_CHECK_INT(s->glitches, ==, 0);
    EMS_CHECK_INT(s->missing, ==, 0);
    EMS_CHECK_INT(s->locks, ==, 1);
    EMS_CHECK_INT(s->unlocks, ==, 0);
}

static void test_clean_49_80(void)
{
    ems_freq_t *f = fresh(50);
    int64_t last = feed_clean(f, T0, 49.80, 150);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 49.80, 0.001);
    EMS_CHECK_INT(stats(f).glitches, ==, 0);
}

static void test_clean_60(void)
{
    ems_freq_t *f = fresh(60);
    int64_t last = feed_clean(f, T0, 60.0, 120);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 60.0, 0.001);
    f = fresh(60);
    last = feed_clean(f, T0, 59.93, 120);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 59.93, 0.001);
}

/* Off-nominal but inside the band: the estimator reports it, the state
 * machine judges it (47.5 Hz trips GRID_FAULT there, not here). */
static void test_clean_off_nominal_in_band(void)
{
    const double hz[] = {41.0, 47.0, 52.5, 59.0};
    for (size_t i = 0; i < sizeof hz / sizeof hz[0]; i++) {
        ems_freq_t *f = fresh(50);
        int64_t last = feed_clean(f, T0, hz[i], 100);
        EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), hz[i], 0.001);
    }
}

/* A window that slides: after a step, the reading is the new frequency as
 * soon as the window holds only edges after the step. */
static void test_window_slides(void)
{
    ems_freq_t *f = fresh(50);
    int64_t last = feed_clean(f, T0, 50.0, 250);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    int64_t t1 = last + llround(1e9 / 49.5);
    last = feed_clean(f, t1, 49.5, 60);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 49.5, 0.001);
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);
}

/* ----------------------------------------------------------------- jitter */

static void test_jitter(void)
{
    const double hz[] = {50.0, 49.8, 50.2};
    for (size_t i = 0; i < sizeof hz / sizeof hz[0]; i++) {
        for (uint64_t seed = 1; seed <= 5; seed++) {
            ems_freq_t *f = fresh(50);
            train_t tr = plain(hz[i]);
            tr.jitter_us = 200;
            tr.seed = seed;
            run_train(f, &tr, 30, 1.5, 0.01);
            EMS_CHECK_INT(stats(f).glitches, ==, 0);
            EMS_CHECK_INT(stats(f).unlocks, ==, 0);
        }
    }
}

static void test_jitter_60(void)
{
    ems_freq_t *f = fresh(60);
    train_t tr = plain(60.0);
    tr.jitter_us = 200;
    tr.seed = 7;
    run_train(f, &tr, 30, 1.5, 0.01);
}

/* ---------------------------------------------------------- missing edges */

static void test_missing_every_7th(void)
{
    ems_freq_t *f = fresh(50);
    train_t tr = plain(49.9);
    tr.drop_mod = 7;
    tr.drop_len = 1;
    run_train(f, &tr, 20, 1.5, 0.001); /* without jitter still exact */
    const ems_freq_stats_t st_ = stats(f), *s = &st_;
    EMS_CHECK_INT(s->missing, >=, 20 * 49 / 7 - 2);
    EMS_CHECK_INT(s->glitches, ==, 0);
    EMS_CHECK_INT(s->unlocks, ==, 0);

    f = fresh(50);
    tr.jitter_us = 200;
    tr.seed = 11;
    run_train(f, &tr, 20, 1.5, 0.01);
}

static void test_missing_runs_of_3(void)
{
    ems_freq_t *f = fresh(50);
    train_t tr = plain(50.1);
    tr.drop_mod = 13;
    tr.drop_len = 3;
    tr.jitter_us = 200;
    tr.seed = 3;
    run_train(f, &tr, 20, 1.5, 0.01);
    const ems_freq_stats_t st_ = stats(f), *s = &st_;
    /* 3 of every 13 edges lost, each run counted as 3 missing */
    EMS_CHECK_INT(s->missing, >=, (20 * 50 / 13 - 1) * 3);
    EMS_CHECK_INT(s->missing % 3, ==, 0);
    EMS_CHECK_INT(s->unlocks, ==, 0);
}

/* Two of every three edges lost: what is left is too little to trust. */
static void test_most_edges_lost_is_stale(void)
{
    ems_freq_t *f = fresh(50);
    int64_t t = 0;
    for (long i = 0; i < 300; i++) {
        t = ideal(T0, 50.0, i);
        if (i < 20 || i % 3 == 0)
            ems_freq_edge(f, t);
    }
    check_err(f, t + 1 * MS, EMS_ESTALE);
    EMS_CHECK_INT(stats(f).missing, >, 100);
}

/* ----------------------------------------------------- glitches and bounce */

static void test_bounce_after_every_edge(void)
{
    ems_freq_t *f = fresh(50);
    train_t tr = plain(50.0);
    tr.bounce_every = 1;
    tr.bounce_us = 50;
    run_train(f, &tr, 10, 1.5, 0.001);
    const ems_freq_stats_t st_ = stats(f), *s = &st_;
    EMS_CHECK_INT(s->glitches, >=, 490);
    EMS_CHECK_INT(s->unlocks, ==, 0);

    /* with jitter, and a longer bounce */
    f = fresh(50);
    tr.jitter_us = 200;
    tr.bounce_us = 800;
    tr.bounce_every = 3;
    tr.seed = 5;
    run_train(f, &tr, 20, 1.5, 0.01);
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);
}

/* A spurious edge anywhere in the period, now and then. */
static void test_random_glitches(void)
{
    for (uint64_t seed = 1; seed <= 5; seed++) {
        ems_freq_t *f = fresh(50);
        train_t tr = plain(49.85);
        tr.jitter_us = 200;
        tr.glitch_every = 5;
        tr.glitch_lo = 0.02;
        tr.glitch_hi = 0.98;
        tr.seed = seed;
        run_train(f, &tr, 30, 1.5, 0.01);
        const ems_freq_stats_t st_ = stats(f), *s = &st_;
        EMS_CHECK_INT(s->glitches, >=, 30 * 50 / 5 - 10);
        EMS_CHECK_INT(s->unlocks, ==, 0);
    }
}

/* A spurious edge shortly before a real one fits the slot first; the real
 * edge must take the slot back, or the count of periods stays right but the
 * edge times in the fit are off. Clean otherwise, so the result is exact. */
static void test_glitch_just_before_edge(void)
{
    ems_freq_t *f = fresh(50);
    train_t tr = plain(50.0);
    tr.glitch_every = 3;
    tr.glitch_lo = 0.92;
    tr.glitch_hi = 0.97;
    run_train(f, &tr, 10, 1.5, 0.001);
    EMS_CHECK_INT(stats(f).glitches, >=, 160);
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);

    /* Before every edge, the spurious edges are a 50 Hz train of their own,
     * with uniform jitter of 1 ms (sigma 0.29 ms, 2.5 x the +-200 us case):
     * the estimator may follow either train, and must read within what that
     * jitter allows (sigma ~0.007 Hz for a 1 s fit), without losing lock. */
    f = fresh(50);
    tr.glitch_every = 1;
    run_train(f, &tr, 20, 1.5, 0.03);
    EMS_CHECK_INT(stats(f).glitches, >=, 990);
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);
}

/* Spurious edges that took the slots of lost ones, 2.6 to 3.8 ms off, a
 * cluster of them at the start of the window: they tilt a least-squares
 * line so much that its residuals no longer single them out, hence the
 * median line to start from. */
static void test_glitches_in_lost_slots(void)
{
    ems_freq_t *f = fresh(50);
    struct {
        long i;
        int64_t off;
    } g[] = {{100, 3800 * 1000}, {102, 3800 * 1000}, {104, 3700 * 1000}, {106, 3600 * 1000},
             {108, 3800 * 1000}, {115, 2600 * 1000}, {148, 3100 * 1000}};
    size_t k = 0;
    int64_t last = 0;
    for (long i = 0; i < 150; i++) {
        last = ideal(T0, 50.0, i);
        if (k < sizeof g / sizeof g[0] && g[k].i == i)
            ems_freq_edge(f, last + g[k++].off); /* the real edge is lost */
        else
            ems_freq_edge(f, last);
    }
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    EMS_CHECK_INT(stats(f).accepted, ==, 150); /* they took the slots */
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);
}

/* Everything at once: jitter, lost edges, bounce and glitches, over enough
 * seeds that a glitch filling the slot of a lost edge happens many times:
 * it must neither show in the reading nor make the lock drift off (the
 * phase of the slots comes from a fit, not from the last edge). */
static void test_all_impairments(void)
{
    for (uint64_t seed = 1; seed <= 20; seed++) {
        ems_freq_t *f = fresh(50);
        train_t tr = plain(50.05);
        tr.jitter_us = 200;
        tr.drop_mod = 7;
        tr.drop_len = 1;
        tr.bounce_every = 4;
        tr.bounce_us = 50;
        tr.glitch_every = 9;
        tr.glitch_lo = 0.02;
        tr.glitch_hi = 0.98;
        tr.seed = seed;
        run_train(f, &tr, 30, 1.5, 0.01);
        EMS_CHECK_INT(stats(f).unlocks, ==, 0);
    }
}

/* --------------------------------------------------------- outage, start */

static void test_outage_stale_then_recovery(void)
{
    ems_freq_t *f = fresh(50);
    int64_t last = feed_clean(f, T0, 50.0, 100);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    /* The cable is pulled. Inside the window the edges before the outage
     * still count; once none is left the reading is stale. */
    EMS_CHECK_NEAR(read_ok(f, last + 400 * MS), 50.0, 0.001);
    check_err(f, last + 700 * MS, EMS_ESTALE); /* too few cycles left */
    check_err(f, last + 1100 * MS, EMS_ESTALE);
    check_err(f, last + 5 * SEC, EMS_ESTALE);

    /* It comes back: stale until the window holds enough new cycles. */
    int64_t t1 = last + 5 * SEC;
    ems_freq_edge(f, t1);
    check_err(f, t1 + 1 * MS, EMS_ESTALE);
    last = feed_range(f, t1, 49.9, 1, 15);
    check_err(f, last + 1 * MS, EMS_ESTALE);
    last = feed_range(f, t1, 49.9, 15, 60);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 49.9, 0.001);
    const ems_freq_stats_t st_ = stats(f), *s = &st_;
    EMS_CHECK_INT(s->unlocks, ==, 1); /* the gap, not counted as missing edges */
    EMS_CHECK_INT(s->locks, ==, 2);
    EMS_CHECK_INT(s->missing, ==, 0);
}

/* A gap longer than max_missing periods cannot be counted reliably: the
 * lock restarts rather than guessing the number of cycles in it. */
static void test_long_gap_restarts(void)
{
    ems_freq_t *f = fresh(50);
    int64_t last = feed_clean(f, T0, 50.0, 100);
    /* 9 edges missing (max_missing): still counted */
    last = feed_clean(f, last + 10 * 20 * MS, 50.0, 100);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    EMS_CHECK_INT(stats(f).missing, ==, 9);
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);
    /* 10 missing: a new lock */
    last = feed_clean(f, last + 11 * 20 * MS, 50.0, 100);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    EMS_CHECK_INT(stats(f).missing, ==, 9);
    EMS_CHECK_INT(stats(f).unlocks, ==, 1);
}

static void test_startup(void)
{
    ems_freq_t *f = fresh(50);
    check_err(f, T0, EMS_ESTALE); /* nothing yet */
    for (long i = 0; i < 4; i++) {
        ems_freq_edge(f, ideal(T0, 50.0, i));
        check_err(f, ideal(T0, 50.0, i) + 1 * MS, EMS_ESTALE);
    }
    EMS_CHECK_INT(stats(f).locks, ==, 1);
    /* a quarter of a second: not yet half a window of cycles */
    int64_t last = feed_range(f, T0, 50.0, 4, 13);
    check_err(f, last + 1 * MS, EMS_ESTALE);
    /* 27 edges (26 cycles, more than half of 50) with the newest one final */
    last = feed_range(f, T0, 50.0, 13, 27);
    EMS_CHECK_NEAR(read_ok(f, last + 11 * MS), 50.0, 0.001);
    EMS_CHECK_INT(stats(f).locks, ==, 1);
}

/* The very first edges are a glitch and a lost edge: the lock waits for
 * three intervals that agree instead of locking onto nonsense. */
static void test_startup_with_glitch(void)
{
    ems_freq_t *f = fresh(50);
    ems_freq_edge(f, T0);
    ems_freq_edge(f, T0 + 7 * MS); /* glitch */
    ems_freq_edge(f, T0 + 20 * MS);
    ems_freq_edge(f, T0 + 60 * MS); /* one lost */
    ems_freq_edge(f, T0 + 80 * MS);
    EMS_CHECK_INT(stats(f).locks, ==, 0);
    int64_t last = 0;
    for (long i = 5; i < 60; i++)
        ems_freq_edge(f, last = T0 + i * 20 * MS);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    EMS_CHECK_INT(stats(f).locks, ==, 1);
}

/* ------------------------------------------------------------- off band */

static void test_off_band_is_erange(void)
{
    /* not mains: an edge per half cycle, every other edge, far off */
    const double hz[] = {100.0, 25.0, 30.0, 70.0, 38.0, 62.0};
    for (size_t i = 0; i < sizeof hz / sizeof hz[0]; i++) {
        ems_freq_t *f = fresh(50);
        int64_t last = feed_clean(f, T0, hz[i], (long)(2 * hz[i]));
        check_err(f, last + 1 * MS, EMS_ERANGE);
        EMS_CHECK_INT(stats(f).out_of_band, >, 0);
        EMS_CHECK_INT(stats(f).locks, ==, 0);
        /* the evidence ages with the window: no signal at all is stale */
        check_err(f, last + 1500 * MS, EMS_ESTALE);
    }
    /* 50 Hz mains on a 60 Hz setting is 0.83 x nominal: in band, reported */
    ems_freq_t *f = fresh(60);
    int64_t last = feed_clean(f, T0, 50.0, 100);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    /* 40 Hz on 60 is not */
    f = fresh(60);
    last = feed_clean(f, T0, 40.0, 100);
    check_err(f, last + 1 * MS, EMS_ERANGE);
}

/* Locked on 50 Hz, then the signal turns into something else: the lock is
 * dropped and the reading says so, rather than folding it onto 50 Hz. */
static void test_off_band_after_lock(void)
{
    const double hz[] = {100.0, 30.0, 70.0};
    for (size_t i = 0; i < sizeof hz / sizeof hz[0]; i++) {
        ems_freq_t *f = fresh(50);
        int64_t last = feed_clean(f, T0, 50.0, 100);
        EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
        last = feed_clean(f, last + llround(1e9 / hz[i]), hz[i], (long)(3 * hz[i]));
        check_err(f, last + 1 * MS, EMS_ERANGE);
        EMS_CHECK_INT(stats(f).unlocks, >=, 1);
        /* and mains again: the off-band evidence ages out with the window */
        int64_t t1 = last + 20 * MS;
        last = feed_clean(f, t1, 50.0, 75);
        EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    }
}

/* ------------------------------------------------------ timestamps, config */

static void test_backwards_timestamps(void)
{
    ems_freq_t *f = fresh(50);
    int64_t last = 0;
    int bad = 0;
    for (long i = 0; i < 100; i++) {
        last = ideal(T0, 50.0, i);
        ems_freq_edge(f, last);
        if (i % 10 == 5) {
            ems_freq_edge(f, last);          /* repeated */
            ems_freq_edge(f, last - 5 * MS); /* went back */
            bad += 2;
        }
    }
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    const ems_freq_stats_t st_ = stats(f), *s = &st_;
    EMS_CHECK_INT(s->backwards, ==, bad);
    EMS_CHECK_INT(s->edges, ==, 100 + bad);
    EMS_CHECK_INT(s->glitches, ==, 0);
    EMS_CHECK_INT(s->unlocks, ==, 0);
}

/* A time base that steps back (CLOCK_REALTIME stamps on old kernels): after
 * three edges behind the newest one the estimator follows the new base
 * instead of ignoring every edge until the old time comes back. */
static void test_clock_step_back(void)
{
    ems_freq_t *f = fresh(50);
    feed_clean(f, T0, 50.0, 100);
    int64_t t1 = T0 - 3600 * SEC;
    int64_t last = feed_clean(f, t1, 50.0, 100);
    EMS_CHECK_NEAR(read_ok(f, last + 1 * MS), 50.0, 0.001);
    const ems_freq_stats_t st_ = stats(f), *s = &st_;
    EMS_CHECK_INT(s->backwards, ==, 3);
    EMS_CHECK_INT(s->unlocks, ==, 1);
    EMS_CHECK_INT(s->locks, ==, 2);
}

/* Slow drift 49.9 -> 50.1 Hz over 60 s: every reading follows the grid
 * within the lag of the window (the fit measures the window's middle). */
static void test_drift(void)
{
    ems_freq_t *f = fresh(50);
    const double f0 = 49.9, rate = 0.2 / 60.0; /* Hz per s */
    /* phase(t) = f0 t + rate t^2 / 2; edge n at phase n */
    int64_t next_read = T0 + 2 * SEC;
    int reads = 0;
    for (long n = 0;; n++) {
        double t = (-f0 + sqrt(f0 * f0 + 2 * rate * (double)n)) / rate;
        if (t > 60)
            break;
        int64_t ts = T0 + llround(t * 1e9);
        while (next_read < ts) {
            double now_s = (double)(next_read - T0) / 1e9;
            double hz = read_ok(f, next_read);
            EMS_CHECK_NEAR(hz, f0 + rate * (now_s - 0.5), 0.001);      /* the window's middle */
            EMS_CHECK_NEAR(hz, f0 + rate * now_s, 0.001 + rate * 1.0); /* lag of one window */
            reads++;
            next_read += SEC;
        }
        ems_freq_edge(f, ts);
    }
    EMS_CHECK_INT(reads, ==, 58);
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);
}

/* Edge times of a train whose frequency follows f(t) = f0 + rate t for
 * t < t1 and stays at f(t1) after: edge n sits where the phase reaches n. */
static double ramp_edge_s(double f0, double rate, double t1, long n)
{
    double phase_t1 = f0 * t1 + rate * t1 * t1 / 2;
    if ((double)n <= phase_t1) {
        if (rate == 0)
            return (double)n / f0;
        return (-f0 + sqrt(f0 * f0 + 2 * rate * (double)n)) / rate;
    }
    return t1 + ((double)n - phase_t1) / (f0 + rate * t1);
}

/* A large, fast excursion inside the band (50 -> 45 Hz at -0.5 Hz/s, as in
 * a severe island event) with runs of three lost edges: the slots must
 * follow the period, or an interval of 4 periods at 45 Hz (88.9 ms) no
 * longer looks like 4 x 20 ms. */
static void test_tracks_large_excursion(void)
{
    ems_freq_t *f = fresh(50);
    const double f0 = 50, rate = -0.5, t1 = 10;
    int64_t next_read = T0 + 2 * SEC;
    int reads = 0;
    for (long n = 0;; n++) {
        double t = ramp_edge_s(f0, rate, t1, n);
        if (t > 20)
            break;
        int64_t ts = T0 + llround(t * 1e9);
        while (next_read < ts) {
            /* The fit measures the middle of the window; a run of lost
             * edges at one end moves that by up to 30 ms (0.015 Hz here). */
            double mid = (double)(next_read - T0) / 1e9 - 0.5;
            double want = f0 + rate * (mid < t1 ? mid : t1);
            EMS_CHECK_NEAR(read_ok(f, next_read), want, 0.02);
            reads++;
            next_read += SEC;
        }
        if (n < 20 || n % 13 < 10)
            ems_freq_edge(f, ts);
    }
    EMS_CHECK_INT(reads, ==, 18);
    EMS_CHECK_INT(stats(f).unlocks, ==, 0);
    EMS_CHECK_INT(stats(f).missing % 3, ==, 0);
}

/* A generator running down through the bottom of the band: readings while
 * inside it, ERANGE once the tracked period has left it. */
static void test_drift_out_of_band(void)
{
    ems_freq_t *f = fresh(50);
    const double f0 = 45, rate = -0.5; /* 40 Hz at 10 s */
    int64_t next_read = T0 + 2 * SEC;
    int values = 0, erange = 0;
    for (long n = 0;; n++) {
        double t = ramp_edge_s(f0, rate, 20, n);
        if (t > 18)
            break;
        int64_t ts = T0 + llround(t * 1e9);
        while (next_read < ts) {
            double now_s = (double)(next_read - T0) / 1e9, hz;
            int rc = ems_freq_read(f, next_read, &hz);
            if (now_s <= 9.5) {
                EMS_CHECK_INT(rc, ==, 0);
                EMS_CHECK_NEAR(hz, f0 + rate * (now_s - 0.5), 0.01);
                values++;
            } else if (now_s >= 11) {
                EMS_CHECK_INT(rc, ==, EMS_ERANGE);
                EMS_CHECK(isnan(hz));
                erange++;
            }
            next_read += SEC;
        }
        ems_freq_edge(f, ts);
    }
    EMS_CHECK_INT(values, ==, 8);
    EMS_CHECK_INT(erange, ==, 7);
    EMS_CHECK_INT(stats(f).out_of_band, >, 0);
}

/* A longer window averages more jitter. */
static void test_window_config(void)
{
    ems_freq_t f;
    ems_freq_config_t c;
    ems_freq_config_default(&c);
    c.window_ms = 5000;
    EMS_CHECK_INT(ems_freq_config_check(&c, NULL, 0), ==, 0);
    ems_freq_init(&f, &c);
    train_t tr = plain(49.95);
    tr.jitter_us = 200;
    tr.seed = 9;
    train_result_t r = run_train(&f, &tr, 30, 5.5, 0.002);
    EMS_CHECK(r.worst < 0.002);
    /* and a short one (25 edges: jitter sigma ~0.008 Hz) still works */
    c.window_ms = 500;
    ems_freq_init(&f, &c);
    tr.seed = 10;
    run_train(&f, &tr, 30, 1.5, 0.04);
}

static void test_config_check(void)
{
    ems_freq_config_t c;
    char why[200];
    ems_freq_config_default(&c);
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, 0);
    EMS_CHECK(c.nominal_hz == 50 && c.window_ms == 1000);

    ems_freq_config_default(&c);
    c.nominal_hz = 55;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_nominal_hz"));
    ems_freq_config_default(&c);
    c.window_ms = 100;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_freq_window_ms"));
    c.window_ms = 20000;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    c.window_ms = 10000;
    c.nominal_hz = 60;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, 0);
    ems_freq_config_default(&c);
    c.band_low = 0.5;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_freq_band_low"));
    ems_freq_config_default(&c);
    c.band_high = 1.5;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_freq_band_high"));
    ems_freq_config_default(&c);
    c.tolerance = 0.4;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_freq_tolerance"));
    ems_freq_config_default(&c);
    c.min_coverage = 0;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_freq_min_coverage"));
    ems_freq_config_default(&c);
    c.max_missing = -1;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_freq_max_missing"));
    /* a window that would overflow the ring of accepted edges */
    ems_freq_config_default(&c);
    c.nominal_hz = 60;
    c.window_ms = 10000;
    c.band_high = 1.45;
    c.tolerance = 0.3;
    EMS_CHECK_INT(ems_freq_config_check(&c, why, sizeof why), ==, EMS_EINVAL);
    EMS_CHECK(strstr(why, "grid_freq_window_ms"));
}

int main(void)
{
    EMS_RUN(test_clean_50);
    EMS_RUN(test_clean_49_80);
    EMS_RUN(test_clean_60);
    EMS_RUN(test_clean_off_nominal_in_band);
    EMS_RUN(test_window_slides);
    EMS_RUN(test_jitter);
    EMS_RUN(test_jitter_60);
    EMS_RUN(test_missing_every_7th);
    EMS_RUN(test_missing_runs_of_3);
    EMS_RUN(test_most_edges_lost_is_stale);
    EMS_RUN(test_bounce_after_every_edge);
    EMS_RUN(test_random_glitches);
    EMS_RUN(test_glitch_just_before_edge);
    EMS_RUN(test_glitches_in_lost_slots);
    EMS_RUN(test_all_impairments);
    EMS_RUN(test_outage_stale_then_recovery);
    EMS_RUN(test_long_gap_restarts);
    EMS_RUN(test_startup);
    EMS_RUN(test_startup_with_glitch);
    EMS_RUN(test_off_band_is_erange);
    EMS_RUN(test_off_band_after_lock);
    EMS_RUN(test_backwards_timestamps);
    EMS_RUN(test_clock_step_back);
    EMS_RUN(test_drift);
    EMS_RUN(test_tracks_large_excursion);
    EMS_RUN(test_drift_out_of_band);
    EMS_RUN(test_window_config);
    EMS_RUN(test_config_check);
    EMS_TEST_END();
}
