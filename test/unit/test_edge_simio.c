/* test_edge_simio.c: the simulated back end with time acceleration and the
 * fault-injection queries (edge/simio.h), and the daemon's config keys
 * (edge/config.h) that drive them and the link. */
#include "ems_test.h"

#include "config.h"
#include "error.h"
#include "fsm.h"
#include "simio.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void sim_init(ems_simio_t *s, double speed)
{
    ems_plant_config_t pc;
    ems_plant_config_default(&pc, EMS_PLANT_SUNNY);
    pc.seed = 7;
    EMS_CHECK_INT(ems_simio_init(s, &pc, speed, 10000), ==, 0);
}

/* Speed 1 is the plant itself; sample times are the caller's clock. */
static void test_speed_one_is_the_plant(void)
{
    static ems_simio_t s;
    static ems_plant_t p;
    sim_init(&s, 1);
    ems_plant_config_t pc;
    ems_plant_config_default(&pc, EMS_PLANT_SUNNY);
    pc.seed = 7;
    EMS_CHECK_INT(ems_plant_init(&p, &pc, 10000), ==, 0);
    for (int i = 1; i <= 30; i++) {
        ems_io_sample_t a, b;
        EMS_CHECK_INT(ems_io_read(ems_simio_io(&s), 10000 + i * 1000, &a), ==, 0);
        EMS_CHECK_INT(ems_io_read(ems_plant_io(&p), 10000 + i * 1000, &b), ==, 0);
        EMS_CHECK(memcmp(&a, &b, sizeof a) == 0);
        ems_io_apply_setpoint(ems_simio_io(&s), 1000);
        ems_io_apply_setpoint(ems_plant_io(&p), 1000);
    }
}

/* Speed 60: a real minute is a simulated hour; freshness stays real time. */
static void test_speed_sixty(void)
{
    static ems_simio_t s;
    sim_init(&s, 60);
    ems_plant_truth_t t0, t1;
    ems_plant_truth(&s.plant, &t0);
    ems_io_sample_t smp;
    ems_io_apply_setpoint(ems_simio_io(&s), 3000);
    for (int i = 1; i <= 60; i++)
        EMS_CHECK_INT(ems_io_read(ems_simio_io(&s), 10000 + i * 1000, &smp), ==, 0);
    ems_plant_truth(&s.plant, &t1);
    EMS_CHECK_NEAR(t1.tod_s - t0.tod_s, 3600, 1);
    EMS_CHECK_INT(smp.battery_ms, ==, 70000);
    EMS_CHECK_INT(smp.grid_ms, ==, 70000);
    /* An hour at 3 kW: about 3 kWh went in. */
    EMS_CHECK_NEAR(t1.in_wh - t0.in_wh, 3000, 60);
    /* A dropped sensor ages in real time, not simulated time. */
    char msg[256];
    ems_fsm_limits_t lim;
    ems_fsm_limits_default(&lim);
    const char *q = "drop=grid";
    EMS_CHECK_INT(ems_simio_control(&s, &lim, q, strlen(q), msg, sizeof msg), ==, 0);
    EMS_CHECK_INT(ems_io_read(ems_simio_io(&s), 72000, &smp), ==, 0);
    EMS_CHECK_INT(smp.grid_ms, ==, 70000);
    EMS_CHECK_INT(smp.battery_ms, ==, 72000);
}

/* The control queries act on the plant, all or nothing. */
static void test_control(void)
{
    static ems_simio_t s;
    sim_init(&s, 1);
    ems_fsm_limits_t lim;
    ems_fsm_limits_default(&lim);
    char msg[256];
    ems_io_sample_t smp;
#define CTL(q) ems_simio_control(&s, &lim, q, strlen(q), msg, sizeof msg)
    EMS_CHECK_INT(CTL("overheat=on"), ==, 0);
    EMS_CHECK(strstr(msg, "70.0 C") != NULL);
    ems_io_read(ems_simio_io(&s), 11000, &smp);
    EMS_CHECK(smp.battery_temperature > 69);
    EMS_CHECK_INT(CTL("overheat=off"), ==, 0);
    ems_io_read(ems_simio_io(&s), 12000, &smp);
    EMS_CHECK(smp.battery_temperature < 26);
    EMS_CHECK_INT(CTL("temp=-10"), ==, 0);
    ems_io_read(ems_simio_io(&s), 13000, &smp);
    EMS_CHECK(smp.battery_temperature < -9);
    EMS_CHECK_INT(CTL("grid_outage=on"), ==, 0);
    ems_io_read(ems_simio_io(&s), 14000, &smp);
    EMS_CHECK(smp.grid_voltage == 0 && smp.grid_frequency == 0);
    EMS_CHECK_INT(CTL("grid_outage=off&drop=battery,temp"), ==, 0);
    ems_io_read(ems_simio_io(&s), 15000, &smp);
    EMS_CHECK(smp.grid_voltage > 200);
    EMS_CHECK_INT(smp.battery_ms, ==, 14000);
    EMS_CHECK_INT(smp.temp_ms, ==, 14000);
    EMS_CHECK_INT(CTL("restore=all"), ==, 0);
    ems_io_read(ems_simio_io(&s), 16000, &smp);
    EMS_CHECK_INT(smp.battery_ms, ==, 16000);

    /* Refusals name the problem and apply nothing. */
    const char *bad[] = {"",         "bogus=1", "overheat=maybe", "temp=hot", "temp=1e9",
                         "drop=cpu", "drop=",   "overheat",       "temp=",    "grid_outage=2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EMS_CHECK_INT(CTL(bad[i]), ==, EMS_EINVAL);
        EMS_CHECK(msg[0] != '\0');
    }
    EMS_CHECK_INT(CTL("temp=80&bogus=1"), ==, EMS_EINVAL);
    ems_io_read(ems_simio_io(&s), 17000, &smp);
    EMS_CHECK(smp.battery_temperature < 30); /* the valid half was not applied */
    char longq[600];
    memset(longq, 'a', sizeof longq - 1);
    longq[sizeof longq - 1] = '\0';
    EMS_CHECK_INT(CTL(longq), ==, EMS_EINVAL);
#undef CTL
}

/* The daemon's keys: defaults, ranges, cross-key rules, and the example. */
static void test_daemon_keys(void)
{
    ems_edge_config_t c;
    char err[512];
    ems_edge_config_default(&c);
    EMS_CHECK_INT(c.ws_ping_ms, ==, 5000);
    EMS_CHECK_INT(c.ws_timeout_ms, ==, 15000);
    EMS_CHECK_INT(c.reconnect_min_ms, ==, 1000);
    EMS_CHECK_INT(c.reconnect_max_ms, ==, 60000);
    EMS_CHECK_INT(c.ack_timeout_ms, ==, 60000);
    EMS_CHECK_INT(c.backfill_batch, ==, 100);
    EMS_CHECK_INT(c.backfill_interval_ms, ==, 200);
    EMS_CHECK_INT(c.backfill_inflight, ==, 4);
    EMS_CHECK_INT(c.tick_ms, ==, 1000);
    EMS_CHECK(c.sim_speed == 1 && !c.sim_control);

    const char *good[][2] = {
        {"ws_ping_s", "2.5"},           {"ws_timeout_s", "30"},     {"reconnect_min_s", "0.5"},
        {"reconnect_max_s", "120"},     {"ack_timeout_s", "10"},    {"backfill_batch", "50"},
        {"backfill_interval_ms", "50"}, {"backfill_inflight", "8"}, {"plant_speed", "60"},
        {"sim_control", "true"},        {"tick_ms", "20"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (ems_edge_config_set(&c, good[i][0], good[i][1], "t", 1, err, sizeof err) != 0)
            EMS_FAIL("%s", err);
    EMS_CHECK_INT(c.ws_ping_ms, ==, 2500);
    EMS_CHECK_INT(c.reconnect_min_ms, ==, 500);
    EMS_CHECK(c.sim_speed == 60 && c.sim_control);
    EMS_CHECK_INT(c.tick_ms, ==, 20);
    const char *bad[][2] = {
        {"backfill_batch", "101"}, {"backfill_batch", "0"},   {"backfill_inflight", "65"},
        {"tick_ms", "2000"},       {"tick_ms", "5"},          {"plant_speed", "0.5"},
        {"ws_ping_s", "0"},        {"sim_control", "perhaps"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EMS_CHECK_INT(ems_edge_config_set(&c, bad[i][0], bad[i][1], "t", 1, err, sizeof err), ==,
                      EMS_ECONFIG);

    char *argv1[] = {"ems-edge", "--device-id", "d",   "--url", "wss://h",      "--token-file",
                     "/t",       "--ca-file",   "/ca", "--set", "ws_ping_s=20", "--status-bind",
                     "0.0.0.0",  NULL};
    int rc = ems_edge_config_from_args(&c, 13, argv1, err, sizeof err);
    EMS_CHECK_INT(rc, ==, EMS_ECONFIG);
    EMS_CHECK(strstr(err, "ws_timeout_s must be longer than ws_ping_s") != NULL);
    argv1[10] = "reconnect_min_s=90";
    rc = ems_edge_config_from_args(&c, 13, argv1, err, sizeof err);
    EMS_CHECK_INT(rc, ==, EMS_ECONFIG);
    EMS_CHECK(strstr(err, "reconnect_max_s") != NULL);
    argv1[10] = "tick_ms=1000";
    EMS_CHECK_INT(ems_edge_config_from_args(&c, 13, argv1, err, sizeof err), ==, 0);
    EMS_CHECK_STR(c.status_bind, "0.0.0.0");

    /* Every new key is documented in the example (set or commented). */
    const char *root = getenv("EMS_ROOT") ? getenv("EMS_ROOT") : ".";
    char path[512];
    snprintf(path, sizeof path, "%s/edge/ems-edge.conf.example", root);
    FILE *f = fopen(path, "r");
    EMS_CHECK(f != NULL);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char pat[80];
        snprintf(pat, sizeof pat, "\n%s = ", good[i][0]);
        if (!strstr(text, pat))
            EMS_FAIL("key %s is not in the example", good[i][0]);
    }
    ems_edge_config_default(&c);
    EMS_CHECK_INT(ems_edge_config_load(&c, path, err, sizeof err), ==, 0);
    EMS_CHECK_INT(c.tick_ms, ==, 1000); /* the example states the defaults */
    EMS_CHECK_INT(c.backfill_interval_ms, ==, 200);
}

int main(void)
{
    EMS_RUN(test_speed_one_is_the_plant);
    EMS_RUN(test_speed_sixty);
    EMS_RUN(test_control);
    EMS_RUN(test_daemon_keys);
    EMS_TEST_END();
}
