/* test_edge_telemetry.c: the packet built from a tick (edge/edge_telemetry.c):
 * rounding, power = V x I on the wire, optional fields, broken sensors. */
#include "ems_test.h"

#include "edge_telemetry.h"

#include <math.h>
#include <string.h>

static ems_fsm_output_t output(ems_state_t st, ems_target_mode_t tm, double power)
{
    ems_fsm_output_t o;
    memset(&o, 0, sizeof o);
    o.state = st;
    o.target_mode = tm;
    o.mode = tm == EMS_TARGET_AUTO ? EMS_MODE_AUTO : EMS_MODE_MANUAL;
    o.target_power = power;
    return o;
}

static ems_io_sample_t sample(void)
{
    ems_io_sample_t s;
    memset(&s, 0, sizeof s);
    s.battery_voltage = 53.2049;
    s.battery_current = 10.4951;
    s.battery_power = s.battery_voltage * s.battery_current;
    s.battery_soc = 85.04;
    s.battery_temperature = 27.46;
    s.grid_voltage = 230.123;
    s.grid_power = -200.04;
    s.grid_frequency = 49.9951;
    return s;
}

static const ems_edge_telemetry_ctx_t ctx = {.device_id = "ems_001",
                                             .utc_ms = 1769860801000LL,
                                             .clock_synced = true,
                                             .seq = 1042,
                                             .has_wifi = true,
                                             .wifi_dbm = -45};

static void test_rounding_and_encoding(void)
{
    ems_fsm_output_t o = output(EMS_STATE_CHARGING, EMS_TARGET_AUTO, 0);
    ems_io_sample_t s = sample();
    ems_telemetry_t t;
    ems_edge_telemetry_build(&t, &ctx, &o, &s);
    EMS_CHECK(t.battery_voltage == 53.2);
    EMS_CHECK(t.battery_current == 10.5);
    EMS_CHECK(t.battery_power == 558.6); /* round(53.2 x 10.5 = 558.6) */
    EMS_CHECK(t.battery_soc == 85.0);
    EMS_CHECK(t.has_battery_temperature && t.battery_temperature == 27.5);
    EMS_CHECK(t.grid_voltage == 230.1);
    EMS_CHECK(t.grid_power == -200.0);
    EMS_CHECK(t.grid_frequency == 50.0);
    EMS_CHECK(t.has_wifi_strength && t.wifi_strength == -45);
    EMS_CHECK(t.has_target_mode && t.target_mode == EMS_TARGET_AUTO);
    EMS_CHECK(!t.has_target_power);
    EMS_CHECK(t.has_seq && t.seq == 1042 && t.has_clock_synced && t.clock_synced);

    /* It encodes to the seed's numbers, short and exact. */
    char buf[EMS_TELEMETRY_JSON_MAX];
    int n = ems_telemetry_encode(&t, buf, sizeof buf);
    EMS_CHECK(n > 0);
    EMS_CHECK(strstr(buf, "\"voltage\":53.2") != NULL);
    EMS_CHECK(strstr(buf, "\"power\":558.6") != NULL);
    EMS_CHECK(strstr(buf, "\"wifi_strength\":-45") != NULL);
    ems_telemetry_t back;
    ems_verr_t err;
    EMS_CHECK(ems_telemetry_decode(buf, (size_t)n, &back, &err) == 0);
    EMS_CHECK(ems_telemetry_equal(&t, &back));
}

/* Over a sweep of values, power on the wire stays within 0.05 W of V x I
 * on the wire, and no "-0" appears. */
static void test_power_consistency_sweep(void)
{
    ems_fsm_output_t o = output(EMS_STATE_DISCHARGING, EMS_TARGET_MANUAL_DISCHARGE, 500);
    for (int k = 0; k < 20000; k++) {
        ems_io_sample_t s = sample();
        s.battery_voltage = 44.0 + k * 0.000731;
        s.battery_current = -120.0 + k * 0.0120017;
        s.battery_power = s.battery_voltage * s.battery_current;
        ems_telemetry_t t;
        ems_edge_telemetry_build(&t, &ctx, &o, &s);
        EMS_CHECK(fabs(t.battery_power - t.battery_voltage * t.battery_current) <= 0.05 + 1e-9);
        EMS_CHECK(!signbit(t.battery_current) || t.battery_current != 0);
        EMS_CHECK(!signbit(t.battery_power) || t.battery_power != 0);
    }
    ems_io_sample_t s = sample();
    ems_telemetry_t t;
    ems_edge_telemetry_build(&t, &ctx, &o, &s);
    EMS_CHECK(t.has_target_power && t.target_power == 500);
    EMS_CHECK(t.mode == EMS_MODE_MANUAL);
}

/* Broken readings: the packet stays valid; flags carry the meaning. */
static void test_broken_sensor_values(void)
{
    ems_fsm_output_t o = output(EMS_STATE_ERROR, EMS_TARGET_AUTO, 0);
    o.error_flags = EMS_FAULT_SENSOR_FAULT;
    ems_io_sample_t s = sample();
    s.battery_voltage = NAN;
    s.battery_soc = 130;
    s.battery_temperature = INFINITY;
    s.grid_frequency = -3;
    ems_edge_telemetry_ctx_t c = ctx;
    c.has_wifi = false;
    ems_telemetry_t t;
    ems_edge_telemetry_build(&t, &c, &o, &s);
    ems_verr_t err;
    if (ems_telemetry_check(&t, &err) != 0)
        EMS_FAIL("%s: %s", err.path, err.reason);
    EMS_CHECK(t.battery_voltage == 0 && t.battery_power == 0);
    EMS_CHECK(t.battery_soc == 100);
    EMS_CHECK(!t.has_battery_temperature);
    EMS_CHECK(t.grid_frequency == 0);
    EMS_CHECK(!t.has_wifi_strength);
    char buf[EMS_TELEMETRY_JSON_MAX];
    EMS_CHECK(ems_telemetry_encode(&t, buf, sizeof buf) > 0);
    EMS_CHECK(strstr(buf, "\"wifi_strength\":null") != NULL);
    EMS_CHECK(strstr(buf, "\"error_flags\":[\"SENSOR_FAULT\"]") != NULL);
}

static void test_round(void)
{
    EMS_CHECK(ems_edge_round(53.245, 0.01) == 53.25 || ems_edge_round(53.245, 0.01) == 53.24);
    EMS_CHECK(ems_edge_round(0.1 + 0.2, 0.1) == 0.3);
    EMS_CHECK(ems_edge_round(-0.04, 0.1) == 0.0 && !signbit(ems_edge_round(-0.04, 0.1)));
    EMS_CHECK(ems_edge_round(NAN, 0.1) == 0.0);
    EMS_CHECK(ems_edge_round(-558.64, 0.1) == -558.6);
}

int main(void)
{
    EMS_RUN(test_rounding_and_encoding);
    EMS_RUN(test_power_consistency_sweep);
    EMS_RUN(test_broken_sensor_values);
    EMS_RUN(test_round);
    EMS_TEST_END();
}
