/* test_edge_plant.c: the simulated plant (edge/plant.c): physics,
 * determinism, profiles and fault injection, and a whole simulated day
 * under the state machine. */
#include "ems_test.h"

#include "edge_telemetry.h"
#include "fsm.h"
#include "plant.h"

#include <math.h>
#include <string.h>

static void plant_init(ems_plant_t *p, ems_plant_profile_t profile, uint64_t seed, int64_t now)
{
    ems_plant_config_t c;
    ems_plant_config_default(&c, profile);
    c.seed = seed;
    EMS_CHECK(ems_plant_init(p, &c, now) == 0);
}

/* ------------------------------------------------------------ a whole day */

typedef struct {
    double soc0, soc1;        /* exact SoC at start and end */
    double cell_wh;           /* energy into the cells from the sampled power */
    double cell_wh_telemetry; /* the same from the rounded telemetry */
    double max_grid_err;      /* |grid - (load - pv + battery)|, samples */
    double max_grid_err_tlm;  /* the same on the telemetry, over its rounding bound */
    double max_vi_err_tlm;    /* |P - V x I| on the telemetry */
    int state_ticks[EMS_STATE_COUNT];
    uint64_t hash; /* of every sample, for replay */
} day_t;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

/* 24 h at one tick a second: read, step, apply, build telemetry. */
static void run_day(ems_plant_profile_t profile, uint64_t seed, day_t *d)
{
    memset(d, 0, sizeof *d);
    d->hash = 1469598103934665603ULL;
    ems_plant_t p;
    int64_t now = 5000;
    plant_init(&p, profile, seed, now);
    ems_fsm_limits_t l;
    ems_fsm_limits_default(&l);
    ems_fsm_t f;
    ems_fsm_init(&f, &l);
    ems_io_t *io = ems_plant_io(&p);
    ems_plant_truth_t tr;
    ems_plant_truth(&p, &tr);
    d->soc0 = tr.soc;
    const double eta_c = p.cfg.eta_charge, eta_d = p.cfg.eta_discharge;

    for (int k = 0; k < 86400; k++) {
        now += 1000;
        ems_io_sample_t s;
        EMS_CHECK(ems_io_read(io, now, &s) == 0);
        d->hash = fnv(d->hash, &s, sizeof s);
        ems_plant_truth(&p, &tr);

        /* Energy: the sample's power flowed for the second that ended now. */
        double e = s.battery_power / 3600.0;
        d->cell_wh += e > 0 ? e * eta_c : e / eta_d;
        d->max_grid_err =
            fmax(d->max_grid_err, fabs(s.grid_power - (tr.load_w - tr.pv_w + s.battery_power)));

        ems_fsm_input_t in = {.sample = s, .cloud_connected = true};
        ems_fsm_output_t out;
        ems_fsm_step(&f, &in, now, &out);
        EMS_CHECK(ems_io_apply_setpoint(io, out.setpoint_w) == 0);
        d->state_ticks[out.state]++;

        ems_edge_telemetry_ctx_t ctx = {.device_id = "sim",
                                        .utc_ms = 1769817600000LL + now,
                                        .clock_synced = true,
                                        .seq = (uint64_t)k};
        ems_telemetry_t t;
        ems_edge_telemetry_build(&t, &ctx, &out, &s);
        ems_verr_t err;
        if (ems_telemetry_check(&t, &err) != 0)
            EMS_FAIL("tick %d: telemetry invalid: %s: %s", k, err.path, err.reason);
        double et = t.battery_power / 3600.0;
        d->cell_wh_telemetry += et > 0 ? et * eta_c : et / eta_d;
        /* On the wire the balance holds within the rounding: 0.05 W of the
         * grid power plus what rounding V and I to 0.01 moves V x I. */
        double bound = 0.05 + 0.05 + 0.005 * fabs(s.battery_current) +
                       0.005 * fabs(s.battery_voltage) + 0.000025;
        d->max_grid_err_tlm =
            fmax(d->max_grid_err_tlm,
                 fabs(t.grid_power - (tr.load_w - tr.pv_w + t.battery_power)) / bound);
        d->max_vi_err_tlm =
            fmax(d->max_vi_err_tlm, fabs(t.battery_power - t.battery_voltage * t.battery_current));
    }
    ems_plant_truth(&p, &tr);
    d->soc1 = tr.soc;
}

static void test_day_energy_balance(void)
{
    day_t d;
    run_day(EMS_PLANT_SUNNY, 7, &d);
    double cap_wh = 10000.0;
    double soc_wh = (d.soc1 - d.soc0) / 100.0 * cap_wh;
    /* SoC moves exactly with the energy that flowed, after efficiency. */
    EMS_CHECK_NEAR(soc_wh, d.cell_wh, 1e-6 * cap_wh);
    /* The telemetry, rounded to 0.01 V / 0.01 A, tells the same story
     * within a few Wh over a day (0.05 % of the capacity). */
    EMS_CHECK_NEAR(soc_wh, d.cell_wh_telemetry, 5.0);
    /* grid = load - pv + battery, exactly in the samples and within
     * rounding on the wire. */
    EMS_CHECK(d.max_grid_err < 1e-6);
    EMS_CHECK(d.max_grid_err_tlm <= 1.0);
    EMS_CHECK(d.max_vi_err_tlm <= 0.05 + 1e-9);
    /* A healthy day never trips a fault, and AUTO goes through the day:
     * charging at noon, full in the afternoon, discharging at night. */
    EMS_CHECK_INT(d.state_ticks[EMS_STATE_ERROR], ==, 0);
    EMS_CHECK(d.state_ticks[EMS_STATE_CHARGING] > 3600);
    EMS_CHECK(d.state_ticks[EMS_STATE_DISCHARGING] > 3600);
    EMS_CHECK(d.state_ticks[EMS_STATE_FULL] > 60);
}

/* The same seed replays the same day bit for bit; another seed does not. */
static void test_day_replay(void)
{
    day_t a, b, c;
    run_day(EMS_PLANT_SUNNY, 99, &a);
    run_day(EMS_PLANT_SUNNY, 99, &b);
    run_day(EMS_PLANT_SUNNY, 100, &c);
    EMS_CHECK(a.hash == b.hash);
    EMS_CHECK(memcmp(a.state_ticks, b.state_ticks, sizeof a.state_ticks) == 0);
    EMS_CHECK(a.soc1 == b.soc1);
    EMS_CHECK(a.hash != c.hash);
}

/* ------------------------------------------------------------ physics */

/* V = OCV + I x R and P = V x I, and the commanded power is delivered. */
static void test_battery_electrics(void)
{
    ems_plant_t p;
    plant_init(&p, EMS_PLANT_SUNNY, 1, 0);
    const double setpoints[] = {0, 1000, 4000, -500, -5000, 123.4};
    int64_t now = 0;
    for (size_t i = 0; i < sizeof setpoints / sizeof setpoints[0]; i++) {
        ems_plant_truth_t before;
        ems_plant_truth(&p, &before);
        ems_plant_set_setpoint(&p, setpoints[i]);
        now += 1000;
        ems_plant_advance(&p, now);
        ems_io_sample_t s;
        ems_plant_sample(&p, &s);
        EMS_CHECK_NEAR(s.battery_power, setpoints[i], 1e-6);
        EMS_CHECK_NEAR(s.battery_power, s.battery_voltage * s.battery_current, 1e-9);
        EMS_CHECK_NEAR(s.battery_voltage,
                       ems_plant_ocv(&p, before.soc) + s.battery_current * p.cfg.r_int_ohm, 1e-9);
        EMS_CHECK((setpoints[i] > 0) == (s.battery_current > 0));
    }
    /* The OCV rises with SoC, inside the pack's safe window. */
    double prev = 0;
    for (int soc = 0; soc <= 100; soc++) {
        double v = ems_plant_ocv(&p, soc);
        EMS_CHECK(v > prev);
        prev = v;
    }
    EMS_CHECK(ems_plant_ocv(&p, 0) > 42.0 && ems_plant_ocv(&p, 100) < 58.4);
}

/* The inverter limit and the simulated BMS. */
static void test_battery_limits(void)
{
    ems_plant_t p;
    ems_plant_config_t c;
    ems_plant_config_default(&c, EMS_PLANT_SUNNY);
    c.soc0 = 100;
    EMS_CHECK(ems_plant_init(&p, &c, 0) == 0);
    ems_io_sample_t s;
    ems_plant_set_setpoint(&p, 1000);
    ems_plant_advance(&p, 1000);
    ems_plant_sample(&p, &s);
    EMS_CHECK(s.battery_power == 0 && s.battery_current == 0);
    EMS_CHECK(s.battery_soc == 100);
    ems_plant_set_setpoint(&p, -20000);
    ems_plant_advance(&p, 2000);
    ems_plant_sample(&p, &s);
    EMS_CHECK_NEAR(s.battery_power, -c.max_power_w, 1e-6);

    c.soc0 = 0;
    EMS_CHECK(ems_plant_init(&p, &c, 0) == 0);
    ems_plant_set_setpoint(&p, -1000);
    ems_plant_advance(&p, 1000);
    ems_plant_sample(&p, &s);
    EMS_CHECK(s.battery_power == 0 && s.battery_soc == 0);

    c.eta_charge = 1.5;
    EMS_CHECK(ems_plant_init(&p, &c, 0) != 0);
}

/* Heat: the pack warms with current and cools back toward ambient. */
static void test_temperature(void)
{
    ems_plant_t p;
    plant_init(&p, EMS_PLANT_SUNNY, 1, 0);
    ems_plant_set_setpoint(&p, -5000);
    ems_plant_advance(&p, 600 * 1000);
    ems_plant_truth_t t;
    ems_plant_truth(&p, &t);
    EMS_CHECK(t.temp_c > p.cfg.ambient_c + 3.0);
    double warm = t.temp_c;
    ems_plant_set_setpoint(&p, 0);
    ems_plant_advance(&p, 1200 * 1000);
    ems_plant_truth(&p, &t);
    EMS_CHECK(t.temp_c < warm && t.temp_c < p.cfg.ambient_c + 0.5);

    ems_plant_force_temperature(&p, 70);
    ems_io_sample_t s;
    ems_plant_sample(&p, &s);
    EMS_CHECK(s.battery_temperature == 70);
    ems_plant_advance(&p, 1200 * 1000 + 120 * 1000); /* one time constant */
    ems_plant_truth(&p, &t);
    EMS_CHECK_NEAR(t.temp_c, 25 + 45 * exp(-1.0), 0.5);
}

/* The sun, the house and the clock. */
static void test_day_shape(void)
{
    ems_plant_t p;
    ems_plant_config_t c;
    ems_plant_config_default(&c, EMS_PLANT_SUNNY);
    c.start_tod_s = 2 * 3600; /* 02:00 */
    EMS_CHECK(ems_plant_init(&p, &c, 0) == 0);
    ems_plant_truth_t t;
    ems_plant_truth(&p, &t);
    EMS_CHECK(t.pv_w == 0);
    EMS_CHECK(t.load_w >= 50);
    ems_plant_advance(&p, 11 * 3600 * 1000LL); /* 13:00 */
    ems_plant_truth(&p, &t);
    EMS_CHECK_NEAR(t.tod_s, 13 * 3600, 1e-6);
    EMS_CHECK(t.pv_w > 0.7 * c.pv_peak_w);
    ems_io_sample_t s;
    ems_plant_sample(&p, &s);
    EMS_CHECK(s.grid_power < 0); /* exporting at noon */
    EMS_CHECK(fabs(s.grid_voltage - 230) < 5 && fabs(s.grid_frequency - 50) < 0.25);
    ems_plant_advance(&p, 22 * 3600 * 1000LL); /* 00:00 */
    ems_plant_truth(&p, &t);
    EMS_CHECK(t.tod_s < 1.0 || t.tod_s > 86399.0);
    EMS_CHECK(t.pv_w == 0);
}

/* ------------------------------------------------------------ profiles */

static void test_profiles(void)
{
    ems_plant_profile_t pr;
    EMS_CHECK(ems_plant_profile_parse("evening", &pr) == 0 && pr == EMS_PLANT_EVENING);
    EMS_CHECK(ems_plant_profile_parse("cloudy", &pr) != 0);
    EMS_CHECK_STR(ems_plant_profile_name(EMS_PLANT_FAULTY), "faulty");

    /* sunny: a surplus to charge from; evening: an import to cover. */
    ems_plant_t p;
    ems_fsm_limits_t l;
    ems_fsm_limits_default(&l);
    const struct {
        ems_plant_profile_t profile;
        ems_state_t want;
    } cases[] = {{EMS_PLANT_SUNNY, EMS_STATE_CHARGING}, {EMS_PLANT_EVENING, EMS_STATE_DISCHARGING}};
    for (size_t i = 0; i < 2; i++) {
        plant_init(&p, cases[i].profile, 3, 0);
        ems_fsm_t f;
        ems_fsm_init(&f, &l);
        ems_fsm_output_t out;
        int hits = 0;
        for (int k = 1; k <= 60; k++) {
            ems_io_sample_t s;
            ems_io_read(ems_plant_io(&p), k * 1000, &s);
            ems_fsm_input_t in = {.sample = s, .cloud_connected = true};
            ems_fsm_step(&f, &in, k * 1000, &out);
            ems_io_apply_setpoint(ems_plant_io(&p), out.setpoint_w);
            hits += out.state == cases[i].want;
        }
        EMS_CHECK(hits >= 55);
    }
}

/* faulty: the pack overheats on its own a minute in; the state machine
 * latches ERROR with OVERHEAT, and the pack cools back afterwards. */
static void test_faulty_profile_overheats(void)
{
    ems_plant_t p;
    plant_init(&p, EMS_PLANT_FAULTY, 5, 0);
    ems_fsm_limits_t l;
    ems_fsm_limits_default(&l);
    ems_fsm_t f;
    ems_fsm_init(&f, &l);
    int error_at = -1;
    double peak = 0;
    ems_fsm_output_t out;
    ems_io_sample_t s;
    for (int k = 1; k <= 600; k++) {
        ems_io_read(ems_plant_io(&p), k * 1000, &s);
        ems_fsm_input_t in = {.sample = s, .cloud_connected = true};
        ems_fsm_step(&f, &in, k * 1000, &out);
        ems_io_apply_setpoint(ems_plant_io(&p), out.setpoint_w);
        peak = fmax(peak, s.battery_temperature);
        if (out.state == EMS_STATE_ERROR && error_at < 0) {
            error_at = k;
            EMS_CHECK_INT(out.error_flags, ==, EMS_FAULT_OVERHEAT);
        }
    }
    EMS_CHECK(error_at > 60 && error_at < 130);
    EMS_CHECK(peak > 55 && peak < 90);
    EMS_CHECK(s.battery_temperature < 50); /* cooled: RESET_ERROR would pass */
    EMS_CHECK_INT(out.state, ==, EMS_STATE_ERROR);
    EMS_CHECK_INT(out.active_faults, ==, 0);
}

/* ------------------------------------------------------------ injection */

/* A dropped sensor keeps its value and time: stale after 3 s, so the state
 * machine reports SENSOR_FAULT on the 4th second and not before. */
static void test_drop_sensor(void)
{
    const unsigned groups[] = {EMS_PLANT_SENSOR_BATTERY, EMS_PLANT_SENSOR_TEMP,
                               EMS_PLANT_SENSOR_GRID};
    for (size_t g = 0; g < 3; g++) {
        ems_plant_t p;
        plant_init(&p, EMS_PLANT_SUNNY, 1, 0);
        ems_fsm_limits_t l;
        ems_fsm_limits_default(&l);
        ems_fsm_t f;
        ems_fsm_init(&f, &l);
        ems_fsm_output_t out;
        ems_io_sample_t s, at_drop;
        int64_t now = 0;
        for (int k = 0; k < 3; k++) {
            now += 1000;
            ems_io_read(ems_plant_io(&p), now, &s);
            ems_fsm_input_t in = {.sample = s, .cloud_connected = true};
            ems_fsm_step(&f, &in, now, &out);
        }
        at_drop = s;
        ems_plant_drop_sensor(&p, groups[g], true);
        for (int k = 1; k <= 4; k++) {
            now += 1000;
            ems_io_read(ems_plant_io(&p), now, &s);
            ems_fsm_input_t in = {.sample = s, .cloud_connected = true};
            ems_fsm_step(&f, &in, now, &out);
            EMS_CHECK_INT(out.state == EMS_STATE_ERROR, ==, k == 4);
        }
        EMS_CHECK_INT(out.error_flags, ==, EMS_FAULT_SENSOR_FAULT);
        if (groups[g] == EMS_PLANT_SENSOR_BATTERY)
            EMS_CHECK(s.battery_ms == at_drop.battery_ms && s.battery_soc == at_drop.battery_soc);
        else
            EMS_CHECK(s.battery_ms == now);
        /* Restored: fresh again, the condition is gone (ERROR stays latched). */
        ems_plant_drop_sensor(&p, groups[g], false);
        now += 1000;
        ems_io_read(ems_plant_io(&p), now, &s);
        ems_fsm_input_t in = {.sample = s, .cloud_connected = true};
        ems_fsm_step(&f, &in, now, &out);
        EMS_CHECK_INT(out.active_faults, ==, 0);
        EMS_CHECK_INT(out.state, ==, EMS_STATE_ERROR);
    }
}

static void test_grid_outage(void)
{
    ems_plant_t p;
    plant_init(&p, EMS_PLANT_SUNNY, 1, 0);
    ems_fsm_limits_t l;
    ems_fsm_limits_default(&l);
    ems_fsm_t f;
    ems_fsm_init(&f, &l);
    ems_fsm_output_t out;
    ems_io_sample_t s;
    ems_plant_grid_outage(&p, true);
    for (int k = 1; k <= 3; k++) {
        ems_io_read(ems_plant_io(&p), k * 1000, &s);
        EMS_CHECK(s.grid_voltage == 0 && s.grid_frequency == 0 && s.grid_power == 0);
        ems_fsm_input_t in = {.sample = s, .cloud_connected = true};
        ems_fsm_step(&f, &in, k * 1000, &out);
        EMS_CHECK_INT(out.state == EMS_STATE_ERROR, ==, k == 3);
    }
    EMS_CHECK_INT(out.error_flags, ==, EMS_FAULT_GRID_FAULT);
    ems_plant_grid_outage(&p, false);
    ems_io_read(ems_plant_io(&p), 4000, &s);
    EMS_CHECK(s.grid_voltage > 200);
}

int main(void)
{
    EMS_RUN(test_day_energy_balance);
    EMS_RUN(test_day_replay);
    EMS_RUN(test_battery_electrics);
    EMS_RUN(test_battery_limits);
    EMS_RUN(test_temperature);
    EMS_RUN(test_day_shape);
    EMS_RUN(test_profiles);
    EMS_RUN(test_faulty_profile_overheats);
    EMS_RUN(test_drop_sensor);
    EMS_RUN(test_grid_outage);
    EMS_TEST_END();
}
