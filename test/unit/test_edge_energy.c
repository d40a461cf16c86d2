/* test_edge_energy.c: the edge's energy counters (edge/energy.h): the
 * sign split, dt from the readings and its cap, the carried fraction, and
 * the ceiling rule that keeps reported values from ever going backwards
 * across a crash, a power cut (a restore from the state file) or a failed
 * save, with the over-count bounded by the margin. */
#include "ems_test.h"

#include "energy.h"
#include "error.h"
#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static const char *tmp_path(const char *name)
{
    static char p[128];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/ems-energy-XXXXXX");
        EMS_CHECK(mkdtemp(dir) != NULL);
    }
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* One tick at monotonic `ms`: both groups read now. */
static void tick(ems_edge_energy_t *e, int64_t ms, double battery_w, double grid_w)
{
    ems_edge_energy_add(e, EMS_ENERGY_BATTERY, battery_w, ms);
    ems_edge_energy_add(e, EMS_ENERGY_GRID, grid_w, ms);
}

static void test_sign_split(void)
{
    ems_edge_energy_t e;
    ems_edge_energy_init(&e, 1000, 1, NULL);
    tick(&e, 1000, 3600, 3600); /* the first reading only starts the interval */
    for (int i = 0; i < EMS_ENERGY_COUNT; i++)
        EMS_CHECK_INT(e.count_mwh[i], ==, 0);
    /* 3600 W for 1 s is exactly 1 Wh = 1000 mWh. */
    tick(&e, 2000, 3600, 7200);   /* charging, importing */
    tick(&e, 3000, -3600, -1800); /* discharging, exporting */
    tick(&e, 4000, -7200, 0);     /* zero adds nothing anywhere */
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_CHARGED], ==, 1000);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_DISCHARGED], ==, 3000);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_GRID_IMPORT], ==, 2000);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_GRID_EXPORT], ==, 500);
    /* The reading at the end of an interval stands for it. */
    tick(&e, 4500, 0, 3600); /* half a second */
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_GRID_IMPORT], ==, 2500);
    EMS_CHECK_STR(ems_edge_energy_name(EMS_ENERGY_GRID_EXPORT), "grid_export");
    EMS_CHECK(ems_edge_energy_name(EMS_ENERGY_COUNT) == NULL);
}

static void test_dt_cap_and_stale_readings(void)
{
    ems_edge_energy_t e;
    ems_edge_energy_init(&e, 1000, 1, NULL);
    tick(&e, 1000, 3600, 0);
    /* A 10 s stall: only 2 periods count. */
    tick(&e, 11000, 3600, 0);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_CHARGED], ==, 2000);
    EMS_CHECK_INT(e.dt_capped, ==, 2); /* battery and grid */
    /* A group not read again (same time, or older) adds nothing; the grid
     * keeps its own interval. */
    ems_edge_energy_add(&e, EMS_ENERGY_BATTERY, 3600, 11000);
    ems_edge_energy_add(&e, EMS_ENERGY_BATTERY, 3600, 10000);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_CHARGED], ==, 2000);
    /* A sensor stale for 5 s, then back: the gap is not guessed at. */
    ems_edge_energy_add(&e, EMS_ENERGY_BATTERY, 3600, 16000);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_CHARGED], ==, 4000);
    EMS_CHECK_INT(e.dt_capped, ==, 3);
    /* Not finite: ignored, and the interval is not consumed. */
    ems_edge_energy_add(&e, EMS_ENERGY_BATTERY, NAN, 17000);
    ems_edge_energy_add(&e, EMS_ENERGY_BATTERY, 3600, 17000);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_CHARGED], ==, 5000);
    /* A 100 ms test tick caps at 200 ms. */
    ems_edge_energy_init(&e, 100, 1, NULL);
    tick(&e, 100, -36000, 0);
    tick(&e, 1100, -36000, 0);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_DISCHARGED], ==, 2000);
}

static void test_fraction_carried(void)
{
    ems_edge_energy_t e;
    ems_edge_energy_init(&e, 1000, 1, NULL);
    /* 1 W for an hour, one 0.278 mWh step a second: 1 Wh, not 0. */
    for (int s = 0; s <= 3600; s++)
        tick(&e, 1000 + 1000 * (int64_t)s, 1, -1);
    EMS_CHECK(e.count_mwh[EMS_ENERGY_BATTERY_CHARGED] >= 999 &&
              e.count_mwh[EMS_ENERGY_BATTERY_CHARGED] <= 1000);
    EMS_CHECK(e.count_mwh[EMS_ENERGY_GRID_EXPORT] >= 999 &&
              e.count_mwh[EMS_ENERGY_GRID_EXPORT] <= 1000);
}

/* The daemon's save step, against a real state file. `fail` simulates a
 * failed write (a full disk): nothing is recorded as durable. */
static int save(ems_edge_energy_t *e, const char *path, bool exact, bool fail)
{
    ems_edge_state_t st = {.has_energy = true, .energy_since_ms = e->since_ms};
    ems_edge_energy_propose(e, exact, st.energy_mwh);
    if (fail)
        return EMS_EIO;
    char err[256];
    int rc = ems_edge_state_save(path, &st, false, err, sizeof err);
    if (rc == 0)
        ems_edge_energy_persisted(e, st.energy_mwh);
    return rc;
}

static void restore(ems_edge_energy_t *e, const char *path)
{
    ems_edge_state_t st;
    char err[256];
    EMS_CHECK_INT(ems_edge_state_load(path, &st, err, sizeof err), ==, 0);
    EMS_CHECK(st.has_energy);
    ems_edge_energy_init(e, 1000, st.energy_since_ms, st.energy_mwh);
}

static void test_ceiling_and_margin(void)
{
    const char *p = tmp_path("margin.state");
    ems_edge_energy_t e;
    ems_edge_energy_init(&e, 1000, 7, NULL);
    uint64_t r[EMS_ENERGY_COUNT];
    tick(&e, 1000, 3600, 0);
    tick(&e, 2000, 3600, 0);
    EMS_CHECK(ems_edge_energy_needs_persist(&e));
    /* Not saved yet: reported no higher than the durable ceiling (0). */
    ems_edge_energy_report(&e, r);
    EMS_CHECK_INT(r[EMS_ENERGY_BATTERY_CHARGED], ==, 0);
    EMS_CHECK_INT(save(&e, p, false, false), ==, 0);
    EMS_CHECK(!ems_edge_energy_needs_persist(&e));
    ems_edge_energy_report(&e, r);
    EMS_CHECK_INT(r[EMS_ENERGY_BATTERY_CHARGED], ==, 1000);
    /* Margin: 60 s at 3600 W = 60 Wh; 1 Wh for the idle counters. */
    EMS_CHECK_INT(e.ceiling_mwh[EMS_ENERGY_BATTERY_CHARGED], ==, 61000);
    EMS_CHECK_INT(e.ceiling_mwh[EMS_ENERGY_BATTERY_DISCHARGED], ==, 1000);
    EMS_CHECK_INT(e.ceiling_mwh[EMS_ENERGY_GRID_IMPORT], ==, 1000);
    /* Steady flow: about one save a minute. */
    int saves = 0;
    for (int s = 3; s <= 602; s++) {
        tick(&e, 1000 * (int64_t)s, 3600, 0);
        if (ems_edge_energy_needs_persist(&e)) {
            EMS_CHECK_INT(save(&e, p, false, false), ==, 0);
            saves++;
        }
    }
    EMS_CHECK_INT(saves, >=, 9);
    EMS_CHECK_INT(saves, <=, 10);
    /* A clean shutdown saves the counts themselves: a restart is exact. */
    uint64_t before = e.count_mwh[EMS_ENERGY_BATTERY_CHARGED];
    EMS_CHECK_INT(save(&e, p, true, false), ==, 0);
    restore(&e, p);
    EMS_CHECK_INT(e.count_mwh[EMS_ENERGY_BATTERY_CHARGED], ==, before);
    EMS_CHECK_INT(e.since_ms, ==, 7);
    ems_edge_energy_report(&e, r);
    EMS_CHECK_INT(r[EMS_ENERGY_BATTERY_CHARGED], ==, before);
}

static void test_failed_save_clamps(void)
{
    const char *p = tmp_path("fail.state");
    ems_edge_energy_t e;
    ems_edge_energy_init(&e, 1000, 1, NULL);
    tick(&e, 1000, 0, 36000);
    tick(&e, 2000, 0, 36000); /* 10 Wh */
    EMS_CHECK_INT(save(&e, p, false, false), ==, 0);
    uint64_t ceiling = e.ceiling_mwh[EMS_ENERGY_GRID_IMPORT];
    EMS_CHECK_INT(ceiling, ==, 10000 + 600000);
    /* The disk fails: the count goes on, the report stops at the ceiling. */
    for (int s = 3; s < 200; s++) {
        tick(&e, 1000 * (int64_t)s, 0, 36000);
        if (ems_edge_energy_needs_persist(&e))
            EMS_CHECK_INT(save(&e, p, false, true), ==, EMS_EIO);
    }
    uint64_t r[EMS_ENERGY_COUNT];
    ems_edge_energy_report(&e, r);
    EMS_CHECK(e.count_mwh[EMS_ENERGY_GRID_IMPORT] > ceiling);
    EMS_CHECK_INT(r[EMS_ENERGY_GRID_IMPORT], ==, ceiling);
    /* A crash now restarts at that ceiling: equal to the last report. */
    restore(&e, p);
    uint64_t r2[EMS_ENERGY_COUNT];
    ems_edge_energy_report(&e, r2);
    EMS_CHECK_INT(r2[EMS_ENERGY_GRID_IMPORT], ==, r[EMS_ENERGY_GRID_IMPORT]);
    /* The disk is back: the next save lets the report move on. */
    tick(&e, 300000, 0, 36000);
    tick(&e, 301000, 0, 36000);
    EMS_CHECK(ems_edge_energy_needs_persist(&e));
    EMS_CHECK_INT(save(&e, p, false, false), ==, 0);
    ems_edge_energy_report(&e, r2);
    EMS_CHECK_INT(r2[EMS_ENERGY_GRID_IMPORT], ==, ceiling + 10000);
}

/* Random powers, stalls, failed saves and crashes: whatever the moment,
 * the first values after a restore are >= every value reported before, and
 * above the count at the crash by no more than the margin of the last
 * successful save. */
static void test_never_backwards_across_crashes(void)
{
    const char *p = tmp_path("crash.state");
    unlink(p);
    srand(12345);
    ems_edge_energy_t e;
    ems_edge_energy_init(&e, 1000, 99, NULL);
    uint64_t last[EMS_ENERGY_COUNT] = {0};
    uint64_t margin[EMS_ENERGY_COUNT] = {0}; /* ceiling - count at the last save */
    int64_t ms = 1000;
    int crashes = 0, failed = 0;
    for (int step = 0; step < 20000; step++) {
        double bw = (double)(rand() % 20001 - 10000);         /* -10..10 kW */
        double gw = (double)(rand() % 40001 - 20000);         /* -20..20 kW */
        ms += rand() % 50 == 0 ? 1000 + rand() % 5000 : 1000; /* stalls too */
        tick(&e, ms, bw, gw);
        if (ems_edge_energy_needs_persist(&e)) {
            bool fail = rand() % 10 == 0;
            failed += fail;
            if (save(&e, p, false, fail) == 0)
                for (int i = 0; i < EMS_ENERGY_COUNT; i++)
                    margin[i] = e.ceiling_mwh[i] - e.count_mwh[i];
        }
        uint64_t r[EMS_ENERGY_COUNT];
        ems_edge_energy_report(&e, r);
        for (int i = 0; i < EMS_ENERGY_COUNT; i++) {
            if (r[i] < last[i])
                EMS_FAIL("step %d: counter %d went back from %llu to %llu", step, i,
                         (unsigned long long)last[i], (unsigned long long)r[i]);
            last[i] = r[i];
        }
        if (rand() % 500 == 0 && access(p, F_OK) == 0) {
            /* kill -9 or a power cut: memory is gone, the file is not. */
            uint64_t count[EMS_ENERGY_COUNT];
            memcpy(count, e.count_mwh, sizeof count);
            restore(&e, p);
            crashes++;
            ems_edge_energy_report(&e, r);
            for (int i = 0; i < EMS_ENERGY_COUNT; i++) {
                EMS_CHECK(r[i] >= last[i]);
                uint64_t over = e.count_mwh[i] > count[i] ? e.count_mwh[i] - count[i] : 0;
                if (over > margin[i])
                    EMS_FAIL("counter %d over-counts %llu mWh, margin %llu", i,
                             (unsigned long long)over, (unsigned long long)margin[i]);
                EMS_CHECK(over <= 20000 * 60 / 3.6 + 1); /* 60 s at the largest power */
            }
            ms += 30000; /* the restart takes a while; the first reading starts anew */
        }
    }
    EMS_CHECK_INT(crashes, >=, 10);
    EMS_CHECK_INT(failed, >=, 10);
}

int main(void)
{
    EMS_RUN(test_sign_split);
    EMS_RUN(test_dt_cap_and_stale_readings);
    EMS_RUN(test_fraction_carried);
    EMS_RUN(test_ceiling_and_margin);
    EMS_RUN(test_failed_save_clamps);
    EMS_RUN(test_never_backwards_across_crashes);
    EMS_TEST_END();
}
