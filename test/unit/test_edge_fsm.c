/* test_edge_fsm.c: every transition and every safety rule of edge/fsm.c. */
#include "ems_test.h"

#include "error.h"
#include "fsm.h"

#include <math.h>
#include <string.h>

/* A healthy reading at `now`: battery idle at 50 %, grid balanced. */
static ems_fsm_input_t nominal(int64_t now)
{
    ems_fsm_input_t in;
    memset(&in, 0, sizeof in);
    in.sample.battery_ms = in.sample.temp_ms = in.sample.grid_ms = now;
    in.sample.battery_voltage = 52.0;
    in.sample.battery_current = 0.0;
    in.sample.battery_power = 0.0;
    in.sample.battery_soc = 50.0;
    in.sample.battery_temperature = 25.0;
    in.sample.grid_voltage = 230.0;
    in.sample.grid_power = 0.0;
    in.sample.grid_frequency = 50.0;
    in.cloud_connected = true;
    return in;
}

/* Sets the battery to `watts` (+ charge) with a consistent current. */
static void set_battery(ems_fsm_input_t *in, double watts)
{
    in->sample.battery_power = watts;
    in->sample.battery_current = watts / in->sample.battery_voltage;
}

static ems_fsm_t fresh(void)
{
    ems_fsm_limits_t l;
    ems_fsm_limits_default(&l);
    ems_fsm_t f;
    ems_fsm_init(&f, &l);
    return f;
}

/* ------------------------------------------------------------ safety rules */

typedef struct {
    const char *name;
    void (*mutate)(ems_fsm_input_t *in, int64_t now);
    uint32_t fault; /* 0: the reading is within the limits */
    int ticks;      /* consecutive samples needed before ERROR */
} safety_case_t;

static void m_hot(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_temperature = 55.1;
}
static void m_at_temp_max(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_temperature = 55.0;
}
static void m_cold(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_temperature = -0.1;
}
static void m_overvolt(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_voltage = 58.5;
    set_battery(in, -1000);
}
static void m_undervolt(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_voltage = 41.9;
    set_battery(in, -1000);
}
static void m_overcurrent_charge(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    set_battery(in, 52.0 * 120.5);
}
static void m_overcurrent_discharge(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    set_battery(in, -52.0 * 120.5);
}
static void m_at_current_max(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    set_battery(in, -52.0 * 120.0);
}
static void m_nan_voltage(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_voltage = NAN;
}
static void m_inf_current(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_current = INFINITY;
}
static void m_nan_temp(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_temperature = NAN;
}
static void m_temp_absurd(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_temperature = 300.0;
}
static void m_soc_above_100(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_soc = 100.5;
}
static void m_voltage_absurd(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.battery_voltage = 5.0;
    set_battery(in, 0);
}
static void m_power_mismatch(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    set_battery(in, -2000);
    in->sample.battery_power = -2000 + 150; /* 7.5 % off: beyond 5 % and 50 W */
}
static void m_power_within_tol(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    set_battery(in, -2000);
    in->sample.battery_power = -2000 + 90; /* 4.5 %: within 5 % of 2000 W */
}
static void m_stale_battery(ems_fsm_input_t *in, int64_t now)
{
    in->sample.battery_ms = now - 3001;
}
static void m_battery_age_limit(ems_fsm_input_t *in, int64_t now)
{
    in->sample.battery_ms = now - 3000;
}
static void m_stale_temp(ems_fsm_input_t *in, int64_t now)
{
    in->sample.temp_ms = now - 10000;
}
static void m_stale_grid(ems_fsm_input_t *in, int64_t now)
{
    in->sample.grid_ms = now - 3500;
}
static void m_grid_nan(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_frequency = NAN;
}
static void m_grid_absurd(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_voltage = 900;
}
static void m_grid_low_v(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_voltage = 195.9;
}
static void m_grid_high_v(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_voltage = 253.1;
}
static void m_grid_low_f(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_frequency = 47.4;
}
static void m_grid_high_f(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_frequency = 51.6;
}
static void m_grid_outage(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_voltage = 0;
    in->sample.grid_frequency = 0;
    in->sample.grid_power = 0;
}
static void m_grid_edges(ems_fsm_input_t *in, int64_t now)
{
    (void)now;
    in->sample.grid_voltage = 196.0;
    in->sample.grid_frequency = 51.5;
}

static const safety_case_t safety_cases[] = {
    {"temperature above temp_max_c", m_hot, EMS_FAULT_OVERHEAT, 1},
    {"temperature at temp_max_c", m_at_temp_max, 0, 1},
    {"temperature below temp_min_c", m_cold, EMS_FAULT_UNDERTEMP, 1},
    {"voltage above voltage_max_v", m_overvolt, EMS_FAULT_OVERVOLTAGE, 1},
    {"voltage below voltage_min_v", m_undervolt, EMS_FAULT_UNDERVOLTAGE, 1},
    {"charge current above current_max_a", m_overcurrent_charge, EMS_FAULT_OVERCURRENT, 1},
    {"discharge current above current_max_a", m_overcurrent_discharge, EMS_FAULT_OVERCURRENT, 1},
    {"current at current_max_a", m_at_current_max, 0, 1},
    {"battery voltage NaN", m_nan_voltage, EMS_FAULT_SENSOR_FAULT, 1},
    {"battery current infinite", m_inf_current, EMS_FAULT_SENSOR_FAULT, 1},
    {"temperature NaN", m_nan_temp, EMS_FAULT_SENSOR_FAULT, 1},
    {"temperature out of physical range", m_temp_absurd, EMS_FAULT_SENSOR_FAULT, 1},
    {"SoC above 100", m_soc_above_100, EMS_FAULT_SENSOR_FAULT, 1},
    {"battery voltage out of physical range", m_voltage_absurd, EMS_FAULT_SENSOR_FAULT, 1},
    {"power disagrees with V x I", m_power_mismatch, EMS_FAULT_SENSOR_FAULT, 1},
    {"power within tolerance of V x I", m_power_within_tol, 0, 1},
    {"battery reading older than 3 s", m_stale_battery, EMS_FAULT_SENSOR_FAULT, 1},
    {"battery reading exactly 3 s old", m_battery_age_limit, 0, 1},
    {"temperature reading stale", m_stale_temp, EMS_FAULT_SENSOR_FAULT, 1},
    {"grid reading stale", m_stale_grid, EMS_FAULT_SENSOR_FAULT, 1},
    {"grid frequency NaN", m_grid_nan, EMS_FAULT_SENSOR_FAULT, 1},
    {"grid voltage out of physical range", m_grid_absurd, EMS_FAULT_SENSOR_FAULT, 1},
    {"grid voltage below window", m_grid_low_v, EMS_FAULT_GRID_FAULT, 3},
    {"grid voltage above window", m_grid_high_v, EMS_FAULT_GRID_FAULT, 3},
    {"grid frequency below window", m_grid_low_f, EMS_FAULT_GRID_FAULT, 3},
    {"grid frequency above window", m_grid_high_f, EMS_FAULT_GRID_FAULT, 3},
    {"grid outage (0 V, 0 Hz)", m_grid_outage, EMS_FAULT_GRID_FAULT, 3},
    {"grid exactly at the window edges", m_grid_edges, 0, 3},
};

/* Each rule from a running state: DISCHARGING at 1000 W in MANUAL mode.
 * A fault must give ERROR and 0 W in the very tick it is seen (or, for the
 * debounced grid rule, in the tick that completes the count, not before). */
static void test_safety_rules(void)
{
    for (size_t k = 0; k < sizeof safety_cases / sizeof safety_cases[0]; k++) {
        const safety_case_t *c = &safety_cases[k];
        ems_fsm_t f = fresh();
        ems_fsm_output_t out;
        int64_t now = 100000;
        ems_fsm_input_t in = nominal(now);
        EMS_CHECK(ems_fsm_set_mode(&f, EMS_TARGET_MANUAL_DISCHARGE, 1000, NULL) == 0);
        ems_fsm_step(&f, &in, now, &out);
        if (out.state != EMS_STATE_DISCHARGING || out.setpoint_w != -1000)
            EMS_FAIL("%s: precondition: not discharging", c->name);
        for (int t = 1; t <= c->ticks; t++) {
            now += 1000;
            in = nominal(now);
            set_battery(&in, -1000);
            c->mutate(&in, now);
            ems_fsm_step(&f, &in, now, &out);
            bool last = t == c->ticks;
            if (c->fault && last) {
                if (out.state != EMS_STATE_ERROR || out.setpoint_w != 0.0 || !out.entered_error)
                    EMS_FAIL("%s: state %s setpoint %g, want ERROR and 0 W at tick %d", c->name,
                             ems_state_name(out.state), out.setpoint_w, t);
                if (out.error_flags != c->fault || out.active_faults != c->fault)
                    EMS_FAIL("%s: flags 0x%x, want 0x%x", c->name, out.error_flags, c->fault);
            } else if (out.state == EMS_STATE_ERROR || out.error_flags) {
                EMS_FAIL("%s: ERROR (flags 0x%x) at tick %d of %d", c->name, out.error_flags, t,
                         c->ticks);
            }
        }
    }
}

/* A single out-of-window grid sample between good ones never trips. */
static void test_grid_debounce_resets(void)
{
    ems_fsm_t f = fresh();
    ems_fsm_output_t out;
    for (int t = 0; t < 20; t++) {
        ems_fsm_input_t in = nominal(t * 1000);
        if (t % 3 != 2) /* two bad, one good, repeated */
            in.sample.grid_frequency = 52.0;
        ems_fsm_step(&f, &in, t * 1000, &out);
        EMS_CHECK(out.state != EMS_STATE_ERROR);
    }
}

/* Several faults at once are all reported, and ERROR collects every fault
 * seen while it lasts even after a condition went away. */
static void test_fault_latching(void)
{
    ems_fsm_t f = fresh();
    ems_fsm_output_t out;
    ems_fsm_input_t in = nominal(0);
    in.sample.battery_temperature = 60;
    in.sample.battery_voltage = 59;
    ems_fsm_step(&f, &in, 0, &out);
    EMS_CHECK_INT(out.error_flags, ==, EMS_FAULT_OVERHEAT | EMS_FAULT_OVERVOLTAGE);
    in = nominal(1000);
    in.sample.battery_temperature = 60; /* still hot, voltage fine again */
    ems_fsm_step(&f, &in, 1000, &out);
    EMS_CHECK_INT(out.state, ==, EMS_STATE_ERROR);
    EMS_CHECK_INT(out.active_faults, ==, EMS_FAULT_OVERHEAT);
    EMS_CHECK_INT(out.error_flags, ==, EMS_FAULT_OVERHEAT | EMS_FAULT_OVERVOLTAGE);
    EMS_CHECK(!out.entered_error);
    in = nominal(2000);
    ems_fsm_step(&f, &in, 2000, &out);
    /* Everything back to normal: still ERROR (latched), no active fault. */
    EMS_CHECK_INT(out.state, ==, EMS_STATE_ERROR);
    EMS_CHECK_INT(out.active_faults, ==, 0);
    EMS_CHECK_INT(out.error_flags, ==, EMS_FAULT_OVERHEAT | EMS_FAULT_OVERVOLTAGE);
    EMS_CHECK(out.setpoint_w == 0.0);
    char buf[128];
    EMS_CHECK_STR(ems_fsm_faults_format(out.error_flags, buf, sizeof buf), "OVERHEAT, OVERVOLTAGE");
    EMS_CHECK_STR(ems_fsm_faults_format(0, buf, sizeof buf), "none");
}

/* RESET_ERROR: refused while hot, also in the hysteresis band below the
 * limit; accepted after cooling; refused outside ERROR; the machine comes
 * back in AUTO. */
static void test_reset_error(void)
{
    ems_fsm_t f = fresh();
    ems_fsm_output_t out;
    uint32_t active = 0;
    uint64_t gen = 0;
    EMS_CHECK_INT(ems_fsm_reset_error(&f, &active, NULL), ==, EMS_EPERM);

    EMS_CHECK(ems_fsm_set_mode(&f, EMS_TARGET_MANUAL_DISCHARGE, 800, NULL) == 0);
    const double temps[] = {70.0, 54.0, 50.1};
    int64_t now = 0;
    for (size_t i = 0; i < 3; i++, now += 1000) {
        ems_fsm_input_t in = nominal(now);
        in.sample.battery_temperature = temps[i];
        ems_fsm_step(&f, &in, now, &out);
        EMS_CHECK_INT(out.state, ==, EMS_STATE_ERROR);
        EMS_CHECK_INT(ems_fsm_reset_error(&f, &active, NULL), ==, EMS_EAGAIN);
        EMS_CHECK_INT(active, ==, EMS_FAULT_OVERHEAT);
        EMS_CHECK_INT(ems_fsm_set_mode(&f, EMS_TARGET_AUTO, 0, NULL), ==, EMS_EPERM);
    }
    ems_fsm_input_t in = nominal(now);
    in.sample.battery_temperature = 50.0; /* 55 - 5: gone */
    in.sample.grid_power = 700;           /* the house imports */
    ems_fsm_step(&f, &in, now, &out);
    EMS_CHECK_INT(out.state, ==, EMS_STATE_ERROR); /* latched */
    EMS_CHECK_INT(out.active_faults, ==, 0);
    EMS_CHECK_INT(ems_fsm_reset_error(&f, &active, &gen), ==, 0);
    EMS_CHECK(!ems_fsm_applied(&f, gen));
    now += 1000;
    in.sample.battery_ms = in.sample.temp_ms = in.sample.grid_ms = now;
    ems_fsm_step(&f, &in, now, &out);
    EMS_CHECK(ems_fsm_applied(&f, gen));
    EMS_CHECK_INT(out.target_mode, ==, EMS_TARGET_AUTO);
    EMS_CHECK_INT(out.mode, ==, EMS_MODE_AUTO);
    EMS_CHECK_INT(out.state, ==, EMS_STATE_DISCHARGING);
    EMS_CHECK_NEAR(out.setpoint_w, -700, 1e-9);
    EMS_CHECK_INT(out.error_flags, ==, 0);
    EMS_CHECK_INT(ems_fsm_reset_error(&f, &active, NULL), ==, EMS_EPERM);
}

/* ------------------------------------------------------------ transitions */

typedef struct {
    double soc;
    double grid_w;    /* measured grid power, including the battery */
    double battery_w; /* measured battery power */
    ems_state_t want;
    double want_w; /* expected setpoint */
} tick_t;

typedef struct {
    const char *name;
    ems_target_mode_t mode;
    double power;
    tick_t ticks[8];
    int n;
} transition_case_t;

#define S_IDLE EMS_STATE_IDLE
#define S_CHG EMS_STATE_CHARGING
#define S_DIS EMS_STATE_DISCHARGING
#define S_FULL EMS_STATE_FULL
#define S_EMPTY EMS_STATE_EMPTY

static const transition_case_t transitions[] = {
    {"AUTO IDLE stays IDLE when balanced", EMS_TARGET_AUTO, 0, {{50, 0, 0, S_IDLE, 0}}, 1},
    {"AUTO IDLE -> CHARGING on export", EMS_TARGET_AUTO, 0, {{50, -1000, 0, S_CHG, 1000}}, 1},
    {"AUTO IDLE -> DISCHARGING on import", EMS_TARGET_AUTO, 0, {{50, 800, 0, S_DIS, -800}}, 1},
    {"AUTO deadband keeps IDLE",
     EMS_TARGET_AUTO,
     0,
     {{50, -50, 0, S_IDLE, 0}, {50, 50, 0, S_IDLE, 0}},
     2},
    {"AUTO follows the house, not the battery's own draw",
     EMS_TARGET_AUTO,
     0,
     {{50, -1000, 0, S_CHG, 1000}, {50, 0, 1000, S_CHG, 1000}, {50, 300, 1000, S_CHG, 700}},
     3},
    {"AUTO clamps to max_charge_w", EMS_TARGET_AUTO, 0, {{50, -8000, 0, S_CHG, 5000}}, 1},
    {"AUTO clamps to max_discharge_w", EMS_TARGET_AUTO, 0, {{50, 9000, 0, S_DIS, -5000}}, 1},
    {"AUTO CHARGING -> IDLE when the surplus ends",
     EMS_TARGET_AUTO,
     0,
     {{50, -1000, 0, S_CHG, 1000}, {50, 1000, 1000, S_IDLE, 0}},
     2},
    {"AUTO CHARGING -> DISCHARGING when the house imports",
     EMS_TARGET_AUTO,
     0,
     {{50, -1000, 0, S_CHG, 1000}, {50, 1600, 1000, S_DIS, -600}},
     2},
    {"AUTO CHARGING -> FULL at soc_max",
     EMS_TARGET_AUTO,
     0,
     {{94.9, -1000, 0, S_CHG, 1000}, {95.0, 0, 1000, S_FULL, 0}},
     2},
    {"AUTO FULL holds within the hysteresis",
     EMS_TARGET_AUTO,
     0,
     {{95, -1000, 0, S_FULL, 0}, {93, -1000, 0, S_FULL, 0}, {92.0, -1000, 0, S_FULL, 0}},
     3},
    {"AUTO FULL -> CHARGING below soc_max - hysteresis",
     EMS_TARGET_AUTO,
     0,
     {{95, -1000, 0, S_FULL, 0}, {91.9, -1000, 0, S_CHG, 1000}},
     2},
    {"AUTO FULL -> DISCHARGING on import",
     EMS_TARGET_AUTO,
     0,
     {{95, -1000, 0, S_FULL, 0}, {94.5, 500, 0, S_DIS, -500}},
     2},
    {"AUTO DISCHARGING -> FULL (charge wanted, still in band)",
     EMS_TARGET_AUTO,
     0,
     {{96, 500, 0, S_DIS, -500}, {94, -1000, -500, S_FULL, 0}},
     2},
    {"AUTO DISCHARGING -> EMPTY at soc_min",
     EMS_TARGET_AUTO,
     0,
     {{10.1, 800, 0, S_DIS, -800}, {10.0, 0, -800, S_EMPTY, 0}},
     2},
    {"AUTO EMPTY holds within the hysteresis",
     EMS_TARGET_AUTO,
     0,
     {{10, 800, 0, S_EMPTY, 0}, {12.9, 800, 0, S_EMPTY, 0}, {13.0, 800, 0, S_EMPTY, 0}},
     3},
    {"AUTO EMPTY -> DISCHARGING above soc_min + hysteresis",
     EMS_TARGET_AUTO,
     0,
     {{10, 800, 0, S_EMPTY, 0}, {13.1, 800, 0, S_DIS, -800}},
     2},
    {"AUTO EMPTY -> CHARGING on export",
     EMS_TARGET_AUTO,
     0,
     {{10, 800, 0, S_EMPTY, 0}, {10, -600, 0, S_CHG, 600}},
     2},
    {"AUTO balanced at empty shows EMPTY", EMS_TARGET_AUTO, 0, {{9, 0, 0, S_EMPTY, 0}}, 1},
    {"AUTO balanced at full shows FULL", EMS_TARGET_AUTO, 0, {{97, 0, 0, S_FULL, 0}}, 1},
    {"MANUAL_CHARGE ignores the house",
     EMS_TARGET_MANUAL_CHARGE,
     2000,
     {{50, 3000, 0, S_CHG, 2000}, {50, 5000, 2000, S_CHG, 2000}},
     2},
    {"MANUAL_CHARGE -> FULL at soc_max",
     EMS_TARGET_MANUAL_CHARGE,
     2000,
     {{94, 0, 0, S_CHG, 2000}, {95, 2000, 2000, S_FULL, 0}, {93, 0, 0, S_FULL, 0}},
     3},
    {"MANUAL_DISCHARGE 500 W",
     EMS_TARGET_MANUAL_DISCHARGE,
     500,
     {{50, -4000, 0, S_DIS, -500}, {50, -4500, -500, S_DIS, -500}},
     2},
    {"MANUAL_DISCHARGE -> EMPTY at soc_min",
     EMS_TARGET_MANUAL_DISCHARGE,
     500,
     {{11, 0, 0, S_DIS, -500}, {10, 0, -500, S_EMPTY, 0}, {12, 0, 0, S_EMPTY, 0}},
     3},
    {"MANUAL_CHARGE 0 W is IDLE", EMS_TARGET_MANUAL_CHARGE, 0, {{50, -900, 0, S_IDLE, 0}}, 1},
    {"MANUAL_IDLE ignores the house",
     EMS_TARGET_MANUAL_IDLE,
     0,
     {{50, -3000, 0, S_IDLE, 0}, {50, 3000, 0, S_IDLE, 0}},
     2},
    {"MANUAL_IDLE at the top shows FULL", EMS_TARGET_MANUAL_IDLE, 0, {{96, 0, 0, S_FULL, 0}}, 1},
    {"MANUAL_IDLE at the bottom shows EMPTY",
     EMS_TARGET_MANUAL_IDLE,
     0,
     {{5, 0, 0, S_EMPTY, 0}},
     1},
};

static void test_transitions(void)
{
    for (size_t k = 0; k < sizeof transitions / sizeof transitions[0]; k++) {
        const transition_case_t *c = &transitions[k];
        ems_fsm_t f = fresh();
        EMS_CHECK(ems_fsm_set_mode(&f, c->mode, c->power, NULL) == 0);
        for (int t = 0; t < c->n; t++) {
            const tick_t *tk = &c->ticks[t];
            int64_t now = (t + 1) * 1000;
            ems_fsm_input_t in = nominal(now);
            in.sample.battery_soc = tk->soc;
            in.sample.grid_power = tk->grid_w;
            set_battery(&in, tk->battery_w);
            ems_fsm_output_t out;
            ems_fsm_step(&f, &in, now, &out);
            if (out.state != tk->want || fabs(out.setpoint_w - tk->want_w) > 1e-9)
                EMS_FAIL("%s, tick %d: %s %g W, want %s %g W", c->name, t,
                         ems_state_name(out.state), out.setpoint_w, ems_state_name(tk->want),
                         tk->want_w);
            EMS_CHECK_INT(out.target_mode, ==, c->mode);
            EMS_CHECK_INT(out.mode, ==,
                          c->mode == EMS_TARGET_AUTO ? EMS_MODE_AUTO : EMS_MODE_MANUAL);
        }
    }
}

/* Every state reaches ERROR in one tick and commands 0 W. */
static void test_every_state_to_error(void)
{
    const tick_t setups[] = {
        {50, 0, 0, S_IDLE, 0},     {50, -1000, 0, S_CHG, 1000}, {50, 800, 0, S_DIS, -800},
        {96, -1000, 0, S_FULL, 0}, {9, 800, 0, S_EMPTY, 0},
    };
    for (size_t k = 0; k < sizeof setups / sizeof setups[0]; k++) {
        ems_fsm_t f = fresh();
        ems_fsm_input_t in = nominal(1000);
        in.sample.battery_soc = setups[k].soc;
        in.sample.grid_power = setups[k].grid_w;
        ems_fsm_output_t out;
        ems_fsm_step(&f, &in, 1000, &out);
        EMS_CHECK_INT(out.state, ==, setups[k].want);
        in = nominal(2000);
        in.sample.battery_soc = setups[k].soc;
        in.sample.grid_power = setups[k].grid_w;
        in.sample.battery_temperature = 80;
        ems_fsm_step(&f, &in, 2000, &out);
        EMS_CHECK_INT(out.state, ==, EMS_STATE_ERROR);
        EMS_CHECK(out.setpoint_w == 0.0);
        EMS_CHECK(out.state_changed && out.entered_error);
    }
}

/* ------------------------------------------------------------ no flapping */

/* SoC noise around soc_max with a steady surplus: FULL is entered once and
 * kept; charging resumes only once the SoC has left the band. */
static void test_full_no_flapping(void)
{
    ems_fsm_t f = fresh();
    const double socs[] = {94.0, 94.9, 95.0, 94.8, 95.1, 94.9, 93.5, 92.5, 92.0,
                           93.0, 94.9, 95.0, 94.0, 92.1, 91.9, 92.5, 94.0};
    int changes = 0;
    ems_state_t last = EMS_STATE_IDLE;
    for (size_t i = 0; i < sizeof socs / sizeof socs[0]; i++) {
        int64_t now = (int64_t)(i + 1) * 1000;
        ems_fsm_input_t in = nominal(now);
        in.sample.battery_soc = socs[i];
        in.sample.grid_power = -2000;
        ems_fsm_output_t out;
        ems_fsm_step(&f, &in, now, &out);
        if (out.state != last)
            changes++;
        last = out.state;
        if (i >= 2 && i <= 13)
            EMS_CHECK_INT(out.state, ==, EMS_STATE_FULL);
    }
    /* IDLE->CHARGING, CHARGING->FULL, FULL->CHARGING: nothing else. */
    EMS_CHECK_INT(changes, ==, 3);
    EMS_CHECK_INT(last, ==, EMS_STATE_CHARGING);
}

static void test_empty_no_flapping(void)
{
    ems_fsm_t f = fresh();
    const double socs[] = {11, 10.0, 10.2, 9.9, 10.1, 12.5, 13.0, 12.0, 13.1, 13.0};
    const ems_state_t want[] = {S_DIS,   S_EMPTY, S_EMPTY, S_EMPTY, S_EMPTY,
                                S_EMPTY, S_EMPTY, S_EMPTY, S_DIS,   S_DIS};
    for (size_t i = 0; i < sizeof socs / sizeof socs[0]; i++) {
        int64_t now = (int64_t)(i + 1) * 1000;
        ems_fsm_input_t in = nominal(now);
        in.sample.battery_soc = socs[i];
        in.sample.grid_power = 1500;
        ems_fsm_output_t out;
        ems_fsm_step(&f, &in, now, &out);
        if (out.state != want[i])
            EMS_FAIL("soc %g: %s, want %s", socs[i], ems_state_name(out.state),
                     ems_state_name(want[i]));
    }
}

/* The AUTO deadband has its own hysteresis: a balance hovering at the
 * deadband does not toggle the battery on and off. */
static void test_deadband_no_flapping(void)
{
    ems_fsm_t f = fresh();
    const double export_w[] = {60, 40, 30, 45, 26, 24, 40, 49, 51};
    const ems_state_t want[] = {S_CHG, S_CHG, S_CHG, S_CHG, S_CHG, S_IDLE, S_IDLE, S_IDLE, S_CHG};
    double battery = 0;
    for (size_t i = 0; i < sizeof export_w / sizeof export_w[0]; i++) {
        int64_t now = (int64_t)(i + 1) * 1000;
        ems_fsm_input_t in = nominal(now);
        set_battery(&in, battery);
        in.sample.grid_power = -export_w[i] + battery;
        ems_fsm_output_t out;
        ems_fsm_step(&f, &in, now, &out);
        if (out.state != want[i])
            EMS_FAIL("export %g W: %s, want %s", export_w[i], ems_state_name(out.state),
                     ems_state_name(want[i]));
        battery = out.setpoint_w;
    }
}

/* ------------------------------------------------------------ cloud loss */

static void test_cloud_loss_policy(void)
{
    ems_fsm_limits_t l;
    ems_fsm_limits_default(&l);
    l.manual_timeout_ms = 60000;
    ems_fsm_t f;
    ems_fsm_init(&f, &l);
    ems_fsm_output_t out;
    EMS_CHECK(ems_fsm_set_mode(&f, EMS_TARGET_MANUAL_DISCHARGE, 500, NULL) == 0);

    /* Down 50 s, back, down again: the timer starts over. */
    int64_t now = 0;
    for (; now <= 50000; now += 1000) {
        ems_fsm_input_t in = nominal(now);
        in.cloud_connected = false;
        ems_fsm_step(&f, &in, now, &out);
        EMS_CHECK_INT(out.target_mode, ==, EMS_TARGET_MANUAL_DISCHARGE);
    }
    ems_fsm_input_t in = nominal(now);
    ems_fsm_step(&f, &in, now, &out);
    int64_t down = now + 1000;
    for (now = down; now < down + 60000; now += 1000) {
        in = nominal(now);
        in.cloud_connected = false;
        ems_fsm_step(&f, &in, now, &out);
        EMS_CHECK_INT(out.target_mode, ==, EMS_TARGET_MANUAL_DISCHARGE);
        EMS_CHECK(!out.reverted_to_auto);
    }
    in = nominal(now);
    in.cloud_connected = false;
    in.sample.grid_power = 300;
    ems_fsm_step(&f, &in, now, &out);
    EMS_CHECK(out.reverted_to_auto);
    EMS_CHECK_INT(out.target_mode, ==, EMS_TARGET_AUTO);
    EMS_CHECK_INT(out.state, ==, EMS_STATE_DISCHARGING);
    EMS_CHECK_NEAR(out.setpoint_w, -300, 1e-9);

    /* 0 = never. */
    l.manual_timeout_ms = 0;
    ems_fsm_init(&f, &l);
    EMS_CHECK(ems_fsm_set_mode(&f, EMS_TARGET_MANUAL_IDLE, 0, NULL) == 0);
    for (now = 0; now < 10 * 3600 * 1000LL; now += 60000) {
        in = nominal(now);
        in.cloud_connected = false;
        ems_fsm_step(&f, &in, now, &out);
        EMS_CHECK_INT(out.target_mode, ==, EMS_TARGET_MANUAL_IDLE);
    }
}

/* ------------------------------------------------------------ misc */

static void test_set_mode_arguments(void)
{
    ems_fsm_t f = fresh();
    uint64_t g1 = 0, g2 = 0;
    EMS_CHECK_INT(ems_fsm_set_mode(&f, EMS_TARGET_MANUAL_CHARGE, -1, NULL), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_fsm_set_mode(&f, EMS_TARGET_MANUAL_CHARGE, NAN, NULL), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_fsm_set_mode(&f, (ems_target_mode_t)17, 0, NULL), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_fsm_set_mode(&f, EMS_TARGET_MANUAL_CHARGE, 100, &g1), ==, 0);
    EMS_CHECK_INT(ems_fsm_set_mode(&f, EMS_TARGET_AUTO, 12345, &g2), ==, 0);
    EMS_CHECK(g2 > g1);
    EMS_CHECK(ems_fsm_target_power(&f) == 0.0); /* AUTO ignores the power */
    EMS_CHECK(!ems_fsm_applied(&f, g1));
    ems_fsm_input_t in = nominal(0);
    ems_fsm_output_t out;
    ems_fsm_step(&f, &in, 0, &out);
    EMS_CHECK(ems_fsm_applied(&f, g1) && ems_fsm_applied(&f, g2));
}

static void test_limits_check(void)
{
    ems_fsm_limits_t l;
    char why[256];
    ems_fsm_limits_default(&l);
    EMS_CHECK_INT(ems_fsm_limits_check(&l, why, sizeof why), ==, 0);

    struct {
        const char *name;
        double *field;
        double value;
    } bad[] = {
        {"soc_min above soc_max", &l.soc_min, 96},
        {"bands overlap", &l.soc_hysteresis, 45},
        {"negative power", &l.max_charge_w, -1},
        {"zero discharge", &l.max_discharge_w, 0},
        {"NaN", &l.temp_max_c, NAN},
        {"temp window inverted", &l.temp_min_c, 60},
        {"voltage window inverted", &l.voltage_min_v, 59},
        {"grid window inverted", &l.grid_freq_min_hz, 52},
        {"plausible range inside limits", &l.plausible_voltage_max_v, 58},
        {"soc above 100", &l.soc_max, 101},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ems_fsm_limits_default(&l);
        *bad[i].field = bad[i].value;
        why[0] = '\0';
        if (ems_fsm_limits_check(&l, why, sizeof why) != EMS_EINVAL || !why[0])
            EMS_FAIL("%s: accepted", bad[i].name);
    }
}

int main(void)
{
    EMS_RUN(test_safety_rules);
    EMS_RUN(test_grid_debounce_resets);
    EMS_RUN(test_fault_latching);
    EMS_RUN(test_reset_error);
    EMS_RUN(test_transitions);
    EMS_RUN(test_every_state_to_error);
    EMS_RUN(test_full_no_flapping);
    EMS_RUN(test_empty_no_flapping);
    EMS_RUN(test_deadband_no_flapping);
    EMS_RUN(test_cloud_loss_policy);
    EMS_RUN(test_set_mode_arguments);
    EMS_RUN(test_limits_check);
    EMS_TEST_END();
}
