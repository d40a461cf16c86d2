/* test_edge_hw_soc.c: the coulomb counter of edge/hw/soc.c: integration on
 * both paths, clamping, the full, empty and rest corrections and when they
 * must not happen, persistence, the unknown start, OCV tables, bad input
 * and gaps. */
#include "ems_test.h"

#include "error.h"
#include "soc.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define MIN_MS ((int64_t)60 * 1000)

static ems_soc_config_t config(void)
{
    ems_soc_config_t c;
    ems_soc_config_default(&c);
    char why[256] = "";
    if (ems_soc_config_check(&c, why, sizeof why) != 0)
        EMS_FAIL("default config rejected: %s", why);
    return c;
}

static ems_soc_t fresh(double soc0)
{
    ems_soc_config_t c = config();
    ems_soc_t s;
    ems_soc_init(&s, &c, soc0);
    return s;
}

static ems_soc_stats_t stats(const ems_soc_t *s)
{
    ems_soc_stats_t st;
    ems_soc_stats(s, &st);
    return st;
}

/* A mid-plateau voltage: no correction fires there (see soc.h). */
#define V_PLATEAU 52.3

/* Feeds samples every step_ms for dur_ms after *t (the sample at *t is
 * assumed fed), constant volts and amps; with hw, also the accumulator
 * delta a real INA228 would give. Advances *t. */
static void hold(ems_soc_t *s, int64_t *t, int64_t dur_ms, int64_t step_ms, double v, double a,
                 bool hw)
{
    for (int64_t end = *t + dur_ms; *t < end;) {
        *t += step_ms;
        double dq = hw ? a * (double)step_ms / 1000.0 : NAN;
        EMS_CHECK_INT(ems_soc_update(s, *t, v, a, dq), ==, 0);
    }
}

/* ------------------------------------------------------------- defaults */

static void test_default_config(void)
{
    ems_soc_config_t c = config();
    EMS_CHECK_NEAR(c.capacity_ah, 100, 0);
    EMS_CHECK_NEAR(c.charge_efficiency, 0.99, 0);
    EMS_CHECK_INT(c.ocv_points, ==, 12);
    EMS_CHECK_NEAR(c.ocv_soc[0], 0, 0);
    EMS_CHECK_NEAR(c.ocv_v[0], 44.0, 0);
    EMS_CHECK_NEAR(c.ocv_soc[11], 100, 0);
    EMS_CHECK_NEAR(c.ocv_v[11], 54.4, 0);
    EMS_CHECK_NEAR(c.rest_current_a, 2.0, 0);
    EMS_CHECK_INT(c.rest_ms, ==, 30 * MIN_MS);
    EMS_CHECK_INT(c.max_gap_ms, ==, 10000);

    ems_soc_t s = fresh(50);
    EMS_CHECK_NEAR(ems_soc_ocv(&s, 50), 52.2, 1e-12);
    EMS_CHECK_NEAR(ems_soc_ocv(&s, 15), 50.6, 1e-12);
    EMS_CHECK_NEAR(ems_soc_from_ocv(&s, 50.6), 15, 1e-9);
    EMS_CHECK_NEAR(ems_soc_from_ocv(&s, 52.2), 50, 1e-9);
    EMS_CHECK_NEAR(ems_soc_from_ocv(&s, 40.0), 0, 0);   /* below the table */
    EMS_CHECK_NEAR(ems_soc_from_ocv(&s, 58.0), 100, 0); /* above it */
    EMS_CHECK_STR(ems_soc_correction_name(EMS_SOC_CORR_NONE), "none");
    EMS_CHECK_STR(ems_soc_correction_name(EMS_SOC_CORR_REST), "rest");
    EMS_CHECK_STR(ems_soc_correction_name(EMS_SOC_CORR_FULL), "full");
    EMS_CHECK_STR(ems_soc_correction_name(EMS_SOC_CORR_EMPTY), "empty");
}

/* ---------------------------------------------------------- integration */

static void test_integration_exact(void)
{
    /* 10 A for 360 s = 1 Ah = 1 % of 100 Ah; 0.99 of it is stored */
    ems_soc_t s = fresh(50);
    int64_t t = 1000;
    ems_soc_update(&s, t, V_PLATEAU, 10, NAN);
    hold(&s, &t, 360 * 1000, 1000, V_PLATEAU, 10, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 50.99, 1e-9);
    EMS_CHECK_NEAR(stats(&s).ah_in, 1.0, 1e-12);
    EMS_CHECK_NEAR(stats(&s).ah_out, 0.0, 0);

    /* without losses exactly 1 % */
    ems_soc_config_t c = config();
    c.charge_efficiency = 1.0;
    ems_soc_init(&s, &c, 50);
    t = 1000;
    ems_soc_update(&s, t, V_PLATEAU, 10, NAN);
    hold(&s, &t, 360 * 1000, 1000, V_PLATEAU, 10, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 51.0, 1e-9);

    /* uneven steps do not matter for a constant current */
    ems_soc_init(&s, &c, 50);
    t = 0;
    ems_soc_update(&s, t, V_PLATEAU, 10, NAN);
    hold(&s, &t, 120 * 1000, 250, V_PLATEAU, 10, false);
    hold(&s, &t, 240 * 1000, 3000, V_PLATEAU, 10, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 51.0, 1e-9);
}

static void test_discharge(void)
{
    ems_soc_t s = fresh(80);
    int64_t t = 0;
    ems_soc_update(&s, t, V_PLATEAU, -50, NAN);
    hold(&s, &t, 60 * MIN_MS, 1000, V_PLATEAU, -50, false);
    /* discharge counts fully: 50 Ah out of 100 */
    EMS_CHECK_NEAR(ems_soc_value(&s), 30.0, 1e-9);
    EMS_CHECK_NEAR(stats(&s).ah_out, 50.0, 1e-9);
    EMS_CHECK_NEAR(stats(&s).ah_in, 0.0, 0);
}

/* Between two samples the current is taken as a straight line: a ramp
 * from 0 to 10 A over 10 s moved 50 As, not 0 or 100. */
static void test_trapezoid(void)
{
    ems_soc_t s = fresh(50);
    ems_soc_update(&s, 0, V_PLATEAU, 0, NAN);
    ems_soc_update(&s, 10000, V_PLATEAU, 10, NAN);
    EMS_CHECK_NEAR(stats(&s).ah_in, 50.0 / 3600, 1e-15);
    ems_soc_update(&s, 15000, V_PLATEAU, -10, NAN); /* crossing at 12.5 s */
    ems_soc_update(&s, 20000, V_PLATEAU, -30, NAN);
    EMS_CHECK_NEAR(stats(&s).ah_in, (50.0 + 12.5) / 3600, 1e-15);
    EMS_CHECK_NEAR(stats(&s).ah_out, (12.5 + 100) / 3600, 1e-15);
}

/* A ramp through zero within one step: the trapezoid is split at the
 * crossing, so only the charging half pays the efficiency. */
static void test_zero_crossing_split(void)
{
    ems_soc_t s = fresh(50);
    ems_soc_update(&s, 0, V_PLATEAU, -10, NAN);
    ems_soc_update(&s, 10000, V_PLATEAU, 10, NAN); /* -10 A -> +10 A over 10 s */
    double ah = 10.0 / 2 * 5 / 3600;               /* each triangle: 5 s at 5 A mean */
    EMS_CHECK_NEAR(stats(&s).ah_in, ah, 1e-15);
    EMS_CHECK_NEAR(stats(&s).ah_out, ah, 1e-15);
    EMS_CHECK_NEAR(ems_soc_value(&s), 50 + 100 * (ah * 0.99 - ah) / 100, 1e-12);
    /* and the other way round */
    ems_soc_update(&s, 20000, V_PLATEAU, -30, NAN); /* +10 -> -30: 2.5 s in, 7.5 s out */
    EMS_CHECK_NEAR(stats(&s).ah_in, ah + 10.0 / 2 * 2.5 / 3600, 1e-15);
    EMS_CHECK_NEAR(stats(&s).ah_out, ah + 30.0 / 2 * 7.5 / 3600, 1e-15);
}

/* The INA228's accumulator and the sampled current agree on a smooth
 * current; the hardware path wins where they would differ. */
static void test_hw_delta_matches_amps(void)
{
    ems_soc_t hw = fresh(50), am = fresh(50);
    double prev_q = 0;
    for (int64_t ms = 0; ms <= 2 * 3600 * 1000; ms += 1000) {
        /* 40 A charge/discharge cycle with a 20 min period */
        double w = 2 * M_PI / 1200.0, sec = ms / 1000.0;
        double a = 40 * sin(w * sec) + 5;
        double q = -40 / w * cos(w * sec) + 5 * sec; /* exact charge, C */
        ems_soc_update(&hw, ms, V_PLATEAU, a, ms ? q - prev_q : NAN);
        ems_soc_update(&am, ms, V_PLATEAU, a, NAN);
        prev_q = q;
    }
    EMS_CHECK_NEAR(ems_soc_value(&hw), ems_soc_value(&am), 0.001);
    EMS_CHECK_NEAR(stats(&hw).ah_in, stats(&am).ah_in, 0.002);
    EMS_CHECK_NEAR(stats(&hw).ah_out, stats(&am).ah_out, 0.002);
    /* net 5 A for 2 h = 10 Ah, minus 1 % of everything that went in */
    double net = stats(&hw).ah_in * 0.99 - stats(&hw).ah_out;
    EMS_CHECK_NEAR(ems_soc_value(&hw), 50 + net, 1e-9);

    /* The accumulator, not the sample, is what counts when both are given:
     * a current spike between two samples shows only in the delta. */
    ems_soc_t s = fresh(50);
    ems_soc_update(&s, 0, V_PLATEAU, 0, NAN);
    ems_soc_update(&s, 1000, V_PLATEAU, 0, 360.0); /* 0.1 Ah seen by the chip */
    EMS_CHECK_NEAR(ems_soc_value(&s), 50 + 0.1 * 0.99, 1e-12);
    ems_soc_update(&s, 2000, V_PLATEAU, 0, -720.0);
    EMS_CHECK_NEAR(ems_soc_value(&s), 50 + 0.1 * 0.99 - 0.2, 1e-12);
}

static void test_clamping(void)
{
    ems_soc_t s = fresh(99.5);
    int64_t t = 0;
    ems_soc_update(&s, t, V_PLATEAU, 10, NAN);
    hold(&s, &t, 10 * MIN_MS, 1000, V_PLATEAU, 10, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 100.0, 0);
    uint64_t clamps = stats(&s).clamps;
    EMS_CHECK_INT(clamps, >, 0);
    /* no wind-up: the first Ah out shows at once (the first second ramps
     * from +10 to -10 A, hence the small tolerance) */
    hold(&s, &t, 6 * MIN_MS, 1000, V_PLATEAU, -10, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 99.0, 0.005);
    EMS_CHECK_INT(stats(&s).clamps, ==, clamps);

    s = fresh(0.5);
    t = 0;
    ems_soc_update(&s, t, V_PLATEAU, -10, NAN);
    hold(&s, &t, 10 * MIN_MS, 1000, V_PLATEAU, -10, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 0.0, 0);
    EMS_CHECK_INT(stats(&s).clamps, >, 0);
}

/* --------------------------------------------------------------- full */

static void test_full_detection(void)
{
    ems_soc_t s = fresh(90);
    int64_t t = 5000;
    ems_soc_update(&s, t, 56.9, 3.0, NAN); /* CV phase, tapered below 5 A */
    hold(&s, &t, 59 * 1000, 1000, 56.9, 3.0, false);
    EMS_CHECK(ems_soc_value(&s) < 91); /* 59 s: not yet */
    EMS_CHECK_INT(stats(&s).last_correction, ==, EMS_SOC_CORR_NONE);
    hold(&s, &t, 1000, 1000, 56.9, 3.0, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 100.0, 0);
    ems_soc_stats_t st = stats(&s);
    EMS_CHECK_INT(st.last_correction, ==, EMS_SOC_CORR_FULL);
    EMS_CHECK_INT(st.last_correction_ms, ==, 65000);
    EMS_CHECK_NEAR(st.last_correction_pct, 100 - 90 - 3.0 * 60 / 3600 * 0.99, 1e-9);
    EMS_CHECK_INT(st.full_corrections, ==, 1);
    ems_soc_persist_t p;
    ems_soc_save(&s, &p);
    EMS_CHECK_NEAR(p.ah_since_full, 0, 0);
    /* once per episode: holding on changes nothing more */
    hold(&s, &t, 5 * MIN_MS, 1000, 56.9, 3.0, false);
    EMS_CHECK_INT(stats(&s).full_corrections, ==, 1);
}

static void test_full_not_before(void)
{
    /* the taper is interrupted before full_s: the timer starts over */
    ems_soc_t s = fresh(90);
    int64_t t = 0;
    ems_soc_update(&s, t, 56.9, 3.0, NAN);
    hold(&s, &t, 50 * 1000, 1000, 56.9, 3.0, false);
    hold(&s, &t, 1000, 1000, 56.9, 8.0, false); /* still 8 A: not tapered */
    hold(&s, &t, 50 * 1000, 1000, 56.9, 3.0, false);
    EMS_CHECK(ems_soc_value(&s) < 91);
    EMS_CHECK_INT(stats(&s).full_corrections, ==, 0);

    /* voltage just below full_voltage_v, for a long time */
    s = fresh(90);
    t = 0;
    ems_soc_update(&s, t, 56.7, 3.0, NAN);
    hold(&s, &t, 30 * MIN_MS, 1000, 56.7, 3.0, false);
    EMS_CHECK_INT(stats(&s).full_corrections, ==, 0);

    /* high voltage under a charge current that has not tapered (bulk) */
    s = fresh(80);
    t = 0;
    ems_soc_update(&s, t, 57.0, 20.0, NAN);
    hold(&s, &t, 10 * MIN_MS, 1000, 57.0, 20.0, false);
    EMS_CHECK_INT(stats(&s).full_corrections, ==, 0);
    EMS_CHECK_NEAR(ems_soc_value(&s), 80 + 20.0 / 6 * 0.99, 1e-9);

    /* high voltage while discharging is not full either */
    s = fresh(80);
    t = 0;
    ems_soc_update(&s, t, 57.0, -3.0, NAN);
    hold(&s, &t, 10 * MIN_MS, 1000, 57.0, -3.0, false);
    EMS_CHECK_INT(stats(&s).full_corrections, ==, 0);
}

/* -------------------------------------------------------------- empty */

static void test_empty_detection(void)
{
    ems_soc_t s = fresh(8);
    int64_t t = 0;
    ems_soc_update(&s, t, 46.3, -20, NAN);
    hold(&s, &t, 29 * 1000, 1000, 46.3, -20, false);
    EMS_CHECK(ems_soc_value(&s) > 7);
    EMS_CHECK_INT(stats(&s).empty_corrections, ==, 0);
    hold(&s, &t, 1000, 1000, 46.3, -20, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 0.0, 0);
    EMS_CHECK_INT(stats(&s).last_correction, ==, EMS_SOC_CORR_EMPTY);
    EMS_CHECK_INT(stats(&s).last_correction_ms, ==, 30000);
    EMS_CHECK_INT(stats(&s).empty_corrections, ==, 1);
}

static void test_empty_not_before(void)
{
    /* dips shorter than empty_s */
    ems_soc_t s = fresh(30);
    int64_t t = 0;
    ems_soc_update(&s, t, 50.0, -100, NAN);
    for (int i = 0; i < 5; i++) {
        hold(&s, &t, 20 * 1000, 1000, 46.0, -100, false);
        hold(&s, &t, 2000, 1000, 48.0, -60, false);
    }
    EMS_CHECK_INT(stats(&s).empty_corrections, ==, 0);
    EMS_CHECK(ems_soc_value(&s) > 20);

    /* low voltage while charging says nothing about empty */
    s = fresh(5);
    t = 0;
    ems_soc_update(&s, t, 46.0, 5, NAN);
    hold(&s, &t, 5 * MIN_MS, 1000, 46.0, 5, false);
    EMS_CHECK_INT(stats(&s).empty_corrections, ==, 0);
    /* just above empty_voltage_v */
    s = fresh(5);
    t = 0;
    ems_soc_update(&s, t, 46.5, -1, NAN);
    hold(&s, &t, 5 * MIN_MS, 1000, 46.5, -1, false);
    EMS_CHECK_INT(stats(&s).empty_corrections, ==, 0);
}

/* --------------------------------------------------------------- rest */

/* The counter says 20 % but the pack rests at 50.6 V, 15 % by the table,
 * on its steep low end: after 30 min of rest the table wins. */
static void test_rest_correction(void)
{
    ems_soc_t s = fresh(20);
    int64_t t = 0;
    ems_soc_update(&s, t, 50.6, 0.5, NAN); /* 0.5 A: below the rest current */
    hold(&s, &t, 30 * MIN_MS - 10000, 10000, 50.6, 0.5, false);
    double counted = 20 + 0.5 * (30 * 60 - 10) / 3600 * 0.99;
    EMS_CHECK_NEAR(ems_soc_value(&s), counted, 1e-9); /* 29:50: none yet */
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 0);
    hold(&s, &t, 10000, 10000, 50.6, 0.5, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 15.0, 1e-9);
    ems_soc_stats_t st = stats(&s);
    EMS_CHECK_INT(st.last_correction, ==, EMS_SOC_CORR_REST);
    EMS_CHECK_INT(st.last_correction_ms, ==, 30 * MIN_MS);
    EMS_CHECK_INT(st.rest_corrections, ==, 1);
    EMS_CHECK(st.last_correction_pct < -5);
    /* once per rest */
    hold(&s, &t, 60 * MIN_MS, 10000, 50.6, 0.5, false);
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 1);

    /* and at the top: 53.8 V is 95 % */
    s = fresh(90);
    t = 0;
    ems_soc_update(&s, t, 53.8, 0, NAN);
    hold(&s, &t, 30 * MIN_MS, 10000, 53.8, 0, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 95.0, 1e-9);
}

/* On the flat plateau the table says too little: no correction, counted. */
static void test_rest_flat_band(void)
{
    ems_soc_t s = fresh(30);
    int64_t t = 0;
    ems_soc_update(&s, t, 52.3, 0, NAN); /* 55 % by the table */
    hold(&s, &t, 120 * MIN_MS, 10000, 52.3, 0, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 30.0, 0);
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 0);
    EMS_CHECK_INT(stats(&s).rest_flat, ==, 1);
    EMS_CHECK_INT(stats(&s).last_correction, ==, EMS_SOC_CORR_NONE);

    /* at the 20 % point the table turns from steep (120 mV/% below) to
     * flat (40 mV/% above): the flatter side decides */
    s = fresh(40);
    t = 0;
    ems_soc_update(&s, t, 51.2, 0, NAN);
    hold(&s, &t, 40 * MIN_MS, 10000, 51.2, 0, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 40.0, 0);
    EMS_CHECK_INT(stats(&s).rest_flat, ==, 1);

    /* between 20 and 30 % (40 mV/%) it is flat too */
    s = fresh(50);
    t = 0;
    ems_soc_update(&s, t, 51.4, 0, NAN); /* 25 % */
    hold(&s, &t, 40 * MIN_MS, 10000, 51.4, 0, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 50.0, 0);

    /* a lower threshold makes the plateau count */
    ems_soc_config_t c = config();
    c.rest_min_slope_mv = 19; /* the plateau's 20 mV/% */
    ems_soc_init(&s, &c, 30);
    t = 0;
    ems_soc_update(&s, t, 52.3, 0, NAN);
    hold(&s, &t, 30 * MIN_MS, 10000, 52.3, 0, false);
    EMS_CHECK_NEAR(ems_soc_value(&s), 55.0, 1e-9);
}

static void test_rest_interrupted(void)
{
    ems_soc_t s = fresh(20);
    int64_t t = 0;
    ems_soc_update(&s, t, 50.6, 0, NAN);
    hold(&s, &t, 20 * MIN_MS, 10000, 50.6, 0, false);
    hold(&s, &t, 10000, 10000, 50.7, 5.0, false); /* a short charge */
    hold(&s, &t, 20 * MIN_MS, 10000, 50.6, 0, false);
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 0);
    hold(&s, &t, 10 * MIN_MS, 10000, 50.6, 0, false); /* 29:50 since the charge */
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 0);
    hold(&s, &t, 10000, 10000, 50.6, 0, false); /* 30:00 */
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 1);
    EMS_CHECK_NEAR(ems_soc_value(&s), 15.0, 1e-9);
}

/* ------------------------------------------------ persistence, start */

static void test_restart_continues(void)
{
    ems_soc_t a = fresh(60);
    int64_t t = 0;
    ems_soc_update(&a, t, V_PLATEAU, 30, NAN);
    hold(&a, &t, 20 * MIN_MS, 1000, V_PLATEAU, 30, false);
    hold(&a, &t, 50 * MIN_MS, 1000, V_PLATEAU, -25, false);

    ems_soc_persist_t p;
    ems_soc_save(&a, &p);
    EMS_CHECK_NEAR(p.soc, ems_soc_value(&a), 0);
    EMS_CHECK_NEAR(p.ah_in, 10.0, 0.01); /* + the ramp from +30 to -25 A */
    EMS_CHECK_NEAR(p.ah_out, 25.0 * 50 / 60, 0.01);
    EMS_CHECK_NEAR(p.ah_since_full, p.ah_in + p.ah_out, 1e-9);
    EMS_CHECK_INT(p.confident, ==, 1);

    /* a new process: restore, see the same sample, then both go on alike */
    ems_soc_config_t c = config();
    ems_soc_t b;
    ems_soc_restore(&b, &c, &p);
    EMS_CHECK_NEAR(ems_soc_value(&b), p.soc, 0);
    EMS_CHECK_INT(ems_soc_update(&b, t, V_PLATEAU, -25, NAN), ==, 0);
    EMS_CHECK_NEAR(ems_soc_value(&b), p.soc, 0);
    hold(&a, &t, 30 * MIN_MS, 1000, V_PLATEAU, 12, false);
    t -= 30 * MIN_MS;
    hold(&b, &t, 30 * MIN_MS, 1000, V_PLATEAU, 12, false);
    EMS_CHECK_NEAR(ems_soc_value(&b), ems_soc_value(&a), 1e-12);
    ems_soc_persist_t pa, pb;
    ems_soc_save(&a, &pa);
    ems_soc_save(&b, &pb);
    EMS_CHECK_NEAR(pb.ah_in, pa.ah_in, 1e-12);
    EMS_CHECK_NEAR(pb.ah_out, pa.ah_out, 1e-12);
    EMS_CHECK_NEAR(pb.ah_since_full, pa.ah_since_full, 1e-12);

    /* soc0 alone (the simple path) continues from the value */
    ems_soc_init(&b, &c, p.soc);
    EMS_CHECK_NEAR(ems_soc_value(&b), p.soc, 0);
    EMS_CHECK(ems_soc_confident(&b));

    /* a low-confidence value stays low-confidence across the restart */
    p.confident = 0;
    ems_soc_restore(&b, &c, &p);
    EMS_CHECK(!ems_soc_confident(&b));
    /* a garbage record restores as unknown */
    p.soc = 140;
    p.ah_in = NAN;
    ems_soc_restore(&b, &c, &p);
    EMS_CHECK(isnan(ems_soc_value(&b)));
    ems_soc_save(&b, &pb);
    EMS_CHECK_NEAR(pb.ah_in, 0, 0);
}

static void test_unknown_start_takes_ocv(void)
{
    ems_soc_t s = fresh(NAN);
    EMS_CHECK(isnan(ems_soc_value(&s))); /* not a silent 0 */
    EMS_CHECK_INT(ems_soc_update(&s, 0, 50.6, 0.3, NAN), ==, 0);
    EMS_CHECK_NEAR(ems_soc_value(&s), 15.0, 1e-9);
    EMS_CHECK(!ems_soc_confident(&s));
    ems_soc_persist_t p;
    ems_soc_save(&s, &p);
    EMS_CHECK_INT(p.confident, ==, 0);
    /* the rest correction makes it confident */
    int64_t t = 0;
    hold(&s, &t, 30 * MIN_MS, 10000, 50.6, 0.3, false);
    EMS_CHECK(ems_soc_confident(&s));
    EMS_CHECK_NEAR(ems_soc_value(&s), 15.0, 1e-9);

    /* a rest on the plateau does not: the OCV start stays a guess */
    s = fresh(NAN);
    ems_soc_update(&s, 0, 52.4, 0, NAN);
    EMS_CHECK_NEAR(ems_soc_value(&s), 60.0, 1e-9);
    t = 0;
    hold(&s, &t, 60 * MIN_MS, 10000, 52.4, 0, false);
    EMS_CHECK(!ems_soc_confident(&s));
    /* a full charge does (60 s from its first sample) */
    hold(&s, &t, 61 * 1000, 1000, 56.9, 2.5, false);
    EMS_CHECK(ems_soc_confident(&s));
    EMS_CHECK_NEAR(ems_soc_value(&s), 100, 0);

    /* out-of-range persisted values count as unknown */
    s = fresh(-3);
    EMS_CHECK(isnan(ems_soc_value(&s)));
    s = fresh(100.5);
    EMS_CHECK(isnan(ems_soc_value(&s)));
    s = fresh(INFINITY);
    EMS_CHECK(isnan(ems_soc_value(&s)));
}

static void test_set_full_empty_hooks(void)
{
    ems_soc_t s = fresh(70);
    ems_soc_update(&s, 1234, V_PLATEAU, 0, NAN);
    ems_soc_set_full(&s);
    EMS_CHECK_NEAR(ems_soc_value(&s), 100, 0);
    EMS_CHECK_INT(stats(&s).last_correction, ==, EMS_SOC_CORR_FULL);
    EMS_CHECK_INT(stats(&s).last_correction_ms, ==, 1234);
    EMS_CHECK_NEAR(stats(&s).last_correction_pct, 30, 1e-12);
    ems_soc_set_empty(&s);
    EMS_CHECK_NEAR(ems_soc_value(&s), 0, 0);
    EMS_CHECK_INT(stats(&s).last_correction, ==, EMS_SOC_CORR_EMPTY);
    EMS_CHECK_INT(stats(&s).full_corrections, ==, 1);
    EMS_CHECK_INT(stats(&s).empty_corrections, ==, 1);
}

/* ------------------------------------------------------- bad input, gaps */

static void test_nan_input_ignored(void)
{
    ems_soc_t s = fresh(50);
    ems_soc_update(&s, 0, V_PLATEAU, 10, NAN);
    EMS_CHECK_INT(ems_soc_update(&s, 1000, NAN, 10, NAN), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_soc_update(&s, 2000, V_PLATEAU, NAN, 36.0), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_soc_update(&s, 3000, INFINITY, 10, NAN), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_soc_update(&s, 4000, V_PLATEAU, -INFINITY, NAN), ==, EMS_EINVAL);
    EMS_CHECK_NEAR(ems_soc_value(&s), 50, 0);
    EMS_CHECK_INT(stats(&s).bad_input, ==, 4);
    /* the next good sample integrates from the last good one */
    EMS_CHECK_INT(ems_soc_update(&s, 5000, V_PLATEAU, 10, NAN), ==, 0);
    EMS_CHECK_NEAR(stats(&s).ah_in, 10.0 * 5 / 3600, 1e-15);

    /* an unknown start is not decided by a bad sample */
    s = fresh(NAN);
    EMS_CHECK_INT(ems_soc_update(&s, 0, NAN, 0, NAN), ==, EMS_EINVAL);
    EMS_CHECK(isnan(ems_soc_value(&s)));
}

static void test_long_gap(void)
{
    /* amps path: a gap is not integrated; 100 A x 60 s (1.7 Ah) may have
     * been missed, more than 1 % of capacity: low confidence */
    ems_soc_t s = fresh(50);
    ems_soc_update(&s, 0, V_PLATEAU, 100, NAN);
    ems_soc_update(&s, 60000, V_PLATEAU, 100, NAN);
    EMS_CHECK_NEAR(ems_soc_value(&s), 50, 0);
    ems_soc_stats_t st = stats(&s);
    EMS_CHECK_INT(st.gaps, ==, 1);
    EMS_CHECK_NEAR(st.unintegrated_s, 60, 1e-12);
    EMS_CHECK(!ems_soc_confident(&s));
    /* counting resumes after it */
    ems_soc_update(&s, 61000, V_PLATEAU, 100, NAN);
    EMS_CHECK_NEAR(stats(&s).ah_in, 100.0 / 3600, 1e-12);

    /* a gap at the max_gap limit is still integrated, one beyond is not */
    s = fresh(50);
    ems_soc_update(&s, 0, V_PLATEAU, 1, NAN);
    ems_soc_update(&s, 10000, V_PLATEAU, 1, NAN);
    EMS_CHECK_INT(stats(&s).gaps, ==, 0);
    EMS_CHECK_NEAR(stats(&s).ah_in, 10.0 / 3600, 1e-15);
    ems_soc_update(&s, 20001, V_PLATEAU, 1, NAN);
    EMS_CHECK_INT(stats(&s).gaps, ==, 1);
    EMS_CHECK_NEAR(stats(&s).ah_in, 10.0 / 3600, 1e-15);
    EMS_CHECK(ems_soc_confident(&s)); /* 1 A x 10 s could not matter */

    /* hardware path: the chip counted through the gap */
    s = fresh(50);
    ems_soc_update(&s, 0, V_PLATEAU, 10, NAN);
    ems_soc_update(&s, 120000, V_PLATEAU, 10, 1200.0);
    EMS_CHECK_NEAR(stats(&s).ah_in, 1200.0 / 3600, 1e-12);
    EMS_CHECK_INT(stats(&s).gaps, ==, 1);
    EMS_CHECK_NEAR(stats(&s).unintegrated_s, 0, 0);
    EMS_CHECK(ems_soc_confident(&s));

    /* a gap restarts the rest timer: nobody knows what happened in it */
    s = fresh(20);
    int64_t t = 0;
    ems_soc_update(&s, t, 50.6, 0, NAN);
    hold(&s, &t, 20 * MIN_MS, 10000, 50.6, 0, false);
    hold(&s, &t, 15000, 15000, 50.6, 0, false);
    hold(&s, &t, 20 * MIN_MS, 10000, 50.6, 0, false);
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 0);
    hold(&s, &t, 10 * MIN_MS, 10000, 50.6, 0, false);
    EMS_CHECK_INT(stats(&s).rest_corrections, ==, 1);

    /* time going backwards: treated as a gap, nothing integrated */
    s = fresh(50);
    ems_soc_update(&s, 50000, V_PLATEAU, 10, NAN);
    ems_soc_update(&s, 40000, V_PLATEAU, 10, NAN);
    EMS_CHECK_NEAR(ems_soc_value(&s), 50, 0);
    EMS_CHECK_INT(stats(&s).gaps, ==, 1);
    ems_soc_update(&s, 41000, V_PLATEAU, 10, NAN);
    EMS_CHECK_NEAR(stats(&s).ah_in, 10.0 / 3600, 1e-15);
}

/* -------------------------------------------------------- configuration */

static void expect_ocv_error(const char *table, const char *want1, const char *want2)
{
    ems_soc_config_t c = config();
    char err[256] = "";
    int rc = ems_soc_ocv_parse(table, &c, err, sizeof err);
    if (rc != EMS_EINVAL)
        EMS_FAIL("table \"%s\": %d, expected EMS_EINVAL", table, rc);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        EMS_FAIL("table \"%s\": message \"%s\" lacks \"%s\"/\"%s\"", table, err, want1,
                 want2 ? want2 : "");
    ems_soc_config_t d = config(); /* the table is unchanged */
    EMS_CHECK_INT(c.ocv_points, ==, d.ocv_points);
    EMS_CHECK(memcmp(c.ocv_soc, d.ocv_soc, sizeof c.ocv_soc) == 0);
    EMS_CHECK(memcmp(c.ocv_v, d.ocv_v, sizeof c.ocv_v) == 0);
}

static void test_ocv_parse_errors(void)
{
    expect_ocv_error("0:44.0,10:43.5,100:54.4", "entry 2", "10:43.5");
    expect_ocv_error("0:44.0,10:43.5,100:54.4", "volts", "increase");
    expect_ocv_error("0:44.0,20:50,10:51", "entry 3", "SoC");
    expect_ocv_error("0:44.0,0:45", "entry 2", "increase");
    expect_ocv_error("0:44.0,120:55", "entry 2", "outside 0..100");
    expect_ocv_error("-5:43,100:54.4", "entry 1", "outside 0..100");
    expect_ocv_error("50:52.2", "at least 2", "got 1");
    expect_ocv_error("", "at least 2", "got 0");
    expect_ocv_error("0:44,,100:54.4", "entry 2", "empty");
    expect_ocv_error("0:44,100:54.4,", "entry 3", "empty");
    expect_ocv_error("0-44,100:54.4", "entry 1", "SOC:VOLTS");
    expect_ocv_error("0:44,100:54.4V", "entry 2", "SOC:VOLTS");
    expect_ocv_error("0:44,100", "entry 2", "SOC:VOLTS");
    expect_ocv_error("0:nan,100:54.4", "entry 1", "finite");
    expect_ocv_error("0:44,100:inf", "entry 2", "finite");

    char many[1024] = "";
    for (int i = 0; i <= EMS_SOC_OCV_MAX; i++) {
        char e[32];
        snprintf(e, sizeof e, "%s%d:%d", i ? "," : "", i * 3, 40 + i);
        strcat(many, e);
    }
    expect_ocv_error(many, "more than 32", NULL);
    /* exactly 32 is fine */
    *strrchr(many, ',') = '\0';
    ems_soc_config_t c = config();
    char err[256];
    EMS_CHECK_INT(ems_soc_ocv_parse(many, &c, err, sizeof err), ==, 0);
    EMS_CHECK_INT(c.ocv_points, ==, 32);
    EMS_CHECK_INT(ems_soc_config_check(&c, err, sizeof err), ==, 0);
}

static void test_ocv_parse_good(void)
{
    ems_soc_config_t c = config();
    char err[128];
    EMS_CHECK_INT(ems_soc_ocv_parse(" 0 : 44.0 ,  100:54.4 ", &c, err, sizeof err), ==, 0);
    EMS_CHECK_INT(c.ocv_points, ==, 2);
    EMS_CHECK_NEAR(c.ocv_v[1], 54.4, 0);
    EMS_CHECK_INT(ems_soc_config_check(&c, err, sizeof err), ==, 0);
    ems_soc_t s;
    ems_soc_init(&s, &c, NAN);
    EMS_CHECK_NEAR(ems_soc_from_ocv(&s, 49.2), 50, 1e-9);
    /* a table that does not span 0..100 ends where it ends */
    EMS_CHECK_INT(ems_soc_ocv_parse("10:48,90:53", &c, err, sizeof err), ==, 0);
    ems_soc_init(&s, &c, NAN);
    EMS_CHECK_NEAR(ems_soc_from_ocv(&s, 40), 10, 0);
    EMS_CHECK_NEAR(ems_soc_from_ocv(&s, 60), 90, 0);
}

static void check_bad(const ems_soc_config_t *c, const char *key)
{
    char why[256] = "";
    EMS_CHECK_INT(ems_soc_config_check(c, why, sizeof why), ==, EMS_EINVAL);
    if (!strstr(why, key))
        EMS_FAIL("message \"%s\" does not name %s", why, key);
}

static void test_config_check(void)
{
    ems_soc_config_t c;
    c = config(), c.capacity_ah = 0, check_bad(&c, "soc_capacity_ah");
    c = config(), c.capacity_ah = NAN, check_bad(&c, "soc_capacity_ah");
    c = config(), c.charge_efficiency = 1.01, check_bad(&c, "soc_charge_efficiency");
    c = config(), c.charge_efficiency = 0.3, check_bad(&c, "soc_charge_efficiency");
    c = config(), c.ocv_points = 1, check_bad(&c, "soc_ocv_table");
    c = config(), c.ocv_points = 33, check_bad(&c, "soc_ocv_table");
    c = config(), c.ocv_v[5] = 40, check_bad(&c, "soc_ocv_table");
    c = config(), c.ocv_soc[3] = 101, check_bad(&c, "soc_ocv_table");
    c = config(), c.rest_current_a = 0, check_bad(&c, "soc_rest_current_a");
    c = config(), c.rest_ms = 0, check_bad(&c, "soc_rest_s");
    c = config(), c.rest_min_slope_mv = -1, check_bad(&c, "soc_rest_min_slope_mv");
    c = config(), c.full_voltage_v = NAN, check_bad(&c, "soc_full_voltage_v");
    c = config(), c.full_tail_a = 0, check_bad(&c, "soc_full_tail_a");
    c = config(), c.full_ms = -1, check_bad(&c, "soc_full_s");
    c = config(), c.empty_voltage_v = -2, check_bad(&c, "soc_empty_voltage_v");
    c = config(), c.empty_voltage_v = 57, check_bad(&c, "soc_empty_voltage_v");
    c = config(), c.empty_ms = -5, check_bad(&c, "soc_empty_s");
    c = config(), c.max_gap_ms = 0, check_bad(&c, "soc_max_gap_s");
}

int main(void)
{
    EMS_RUN(test_default_config);
    EMS_RUN(test_integration_exact);
    EMS_RUN(test_discharge);
    EMS_RUN(test_trapezoid);
    EMS_RUN(test_zero_crossing_split);
    EMS_RUN(test_hw_delta_matches_amps);
    EMS_RUN(test_clamping);
    EMS_RUN(test_full_detection);
    EMS_RUN(test_full_not_before);
    EMS_RUN(test_empty_detection);
    EMS_RUN(test_empty_not_before);
    EMS_RUN(test_rest_correction);
    EMS_RUN(test_rest_flat_band);
    EMS_RUN(test_rest_interrupted);
    EMS_RUN(test_restart_continues);
    EMS_RUN(test_unknown_start_takes_ocv);
    EMS_RUN(test_set_full_empty_hooks);
    EMS_RUN(test_nan_input_ignored);
    EMS_RUN(test_long_gap);
    EMS_RUN(test_ocv_parse_errors);
    EMS_RUN(test_ocv_parse_good);
    EMS_RUN(test_config_check);
    EMS_TEST_END();
}
