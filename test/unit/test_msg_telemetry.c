/* test_msg_telemetry.c: the telemetry packet, status names and verr. */
#include "ems_test.h"

#include "error.h"
#include "status.h"
#include "telemetry.h"
#include "timefmt.h"

/* The seed's packet (spec "Upstream Payload"), comments removed. */
static const char SEED[] =
    "{\"device_id\":\"ems_001\",\"timestamp\":\"2026-01-31T12:00:01Z\","
    "\"system_status\":{\"state\":\"CHARGING\",\"mode\":\"AUTO\",\"error_flags\":[],"
    "\"wifi_strength\":-45},"
    "\"battery\":{\"voltage\":53.2,\"current\":10.5,\"power\":558.6,\"soc\":85},"
    "\"grid\":{\"voltage\":230.1,\"power\":-200,\"frequency\":50.0}}";

/* Decodes SEED with `from` replaced by `to` and returns "path: reason". */
static const char *refuse(const char *from, const char *to)
{
    static char text[4096], out[512];
    const char *at = strstr(SEED, from);
    if (!at)
        EMS_FAIL("fixture text %s not in SEED", from);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - SEED), SEED, to, at + strlen(from));
    ems_telemetry_t t;
    ems_verr_t err;
    if (ems_telemetry_decode(text, strlen(text), &t, &err) != EMS_EINVAL)
        EMS_FAIL("accepted: %s", text);
    return ems_verr_format(&err, out, sizeof out);
}

static void test_status_names(void)
{
    for (int s = 0; s < EMS_STATE_COUNT; s++) {
        ems_state_t back;
        EMS_CHECK_INT(ems_state_parse(ems_state_name((ems_state_t)s), &back), ==, 0);
        EMS_CHECK_INT(back, ==, s);
    }
    ems_state_t st = EMS_STATE_FULL;
    EMS_CHECK_INT(ems_state_parse("idle", &st), ==, EMS_EINVAL);
    EMS_CHECK_INT(st, ==, EMS_STATE_FULL); /* left alone on error */
    EMS_CHECK(ems_state_name(EMS_STATE_COUNT) == NULL);
    ems_target_mode_t tm;
    EMS_CHECK_INT(ems_target_mode_parse("MANUAL_DISCHARGE", &tm), ==, 0);
    EMS_CHECK_INT(tm, ==, EMS_TARGET_MANUAL_DISCHARGE);
    EMS_CHECK_INT(ems_target_mode_to_mode(tm), ==, EMS_MODE_MANUAL);
    EMS_CHECK_INT(ems_target_mode_to_mode(EMS_TARGET_AUTO), ==, EMS_MODE_AUTO);
    ems_mode_t m;
    EMS_CHECK_INT(ems_mode_parse("MANUAL", &m), ==, 0);
    EMS_CHECK_STR(ems_mode_name(m), "MANUAL");
    uint32_t bit;
    EMS_CHECK_INT(ems_fault_parse("GRID_FAULT", &bit), ==, 0);
    EMS_CHECK_INT(bit, ==, EMS_FAULT_GRID_FAULT);
    EMS_CHECK_STR(ems_fault_name(EMS_FAULT_OVERHEAT), "OVERHEAT");
    EMS_CHECK(ems_fault_name(EMS_FAULT_OVERHEAT | EMS_FAULT_UNDERTEMP) == NULL);
    EMS_CHECK(ems_fault_name(0) == NULL);
    EMS_CHECK(ems_fault_name(1u << EMS_FAULT_COUNT) == NULL);
}

static void test_verr_format(void)
{
    ems_verr_t e;
    char buf[64];
    ems_verr_set(&e, "battery.soc", "%d is above the maximum %d", 101, 100);
    EMS_CHECK_STR(ems_verr_format(&e, buf, sizeof buf), "battery.soc: 101 is above the maximum 100");
    ems_verr_set(&e, "", "bad");
    EMS_CHECK_STR(ems_verr_format(&e, buf, sizeof buf), "bad");
    ems_verr_set(NULL, "x", "no crash");
    ems_verr_format(&e, buf, 4); /* cut, still NUL-terminated */
    EMS_CHECK_STR(buf, "bad");
}

static void test_decode_seed(void)
{
    ems_telemetry_t t;
    ems_verr_t err;
    EMS_CHECK_INT(ems_telemetry_decode(SEED, strlen(SEED), &t, &err), ==, 0);
    EMS_CHECK_STR(t.device_id, "ems_001");
    int64_t ms;
    EMS_CHECK_INT(ems_time_parse("2026-01-31T12:00:01Z", 20, &ms), ==, 0);
    EMS_CHECK_INT(t.timestamp_ms, ==, ms);
    EMS_CHECK_INT(t.state, ==, EMS_STATE_CHARGING);
    EMS_CHECK_INT(t.mode, ==, EMS_MODE_AUTO);
    EMS_CHECK_INT(t.error_flags, ==, 0);
    EMS_CHECK(t.has_wifi_strength);
    EMS_CHECK_INT(t.wifi_strength, ==, -45);
    EMS_CHECK(t.battery_voltage == 53.2 && t.battery_current == 10.5);
    EMS_CHECK(t.battery_power == 558.6 && t.battery_soc == 85);
    EMS_CHECK(t.grid_voltage == 230.1 && t.grid_power == -200 && t.grid_frequency == 50);
    EMS_CHECK(!t.has_seq && !t.has_target_mode && !t.has_battery_temperature && !t.has_backlog);
}

static void test_decode_extensions(void)
{
    const char *text =
        "{\"device_id\":\"a.b-C_9\",\"timestamp\":\"2026-01-31T12:00:01.250Z\","
        "\"system_status\":{\"state\":\"ERROR\",\"mode\":\"MANUAL\","
        "\"error_flags\":[\"GRID_FAULT\",\"OVERHEAT\"],\"wifi_strength\":null,"
        "\"target_mode\":\"MANUAL_IDLE\",\"target_power\":0,\"future\":1},"
        "\"battery\":{\"voltage\":0,\"current\":-10000,\"power\":1e6,\"soc\":100,"
        "\"temperature\":-50},\"grid\":{\"voltage\":1000,\"power\":-1e7,\"frequency\":100},"
        "\"seq\":9007199254740991,\"clock_synced\":false,\"backfill\":true,\"backlog\":3.0,"
        "\"unknown\":{\"x\":[1,2]}}";
    ems_telemetry_t t;
    ems_verr_t err;
    EMS_CHECK_INT(ems_telemetry_decode(text, strlen(text), &t, &err), ==, 0);
    EMS_CHECK_INT(t.timestamp_ms % 1000, ==, 250);
    EMS_CHECK_INT(t.error_flags, ==, EMS_FAULT_GRID_FAULT | EMS_FAULT_OVERHEAT);
    EMS_CHECK(!t.has_wifi_strength);
    EMS_CHECK(t.has_target_mode && t.target_mode == EMS_TARGET_MANUAL_IDLE);
    EMS_CHECK(t.has_target_power && t.target_power == 0);
    EMS_CHECK(t.has_battery_temperature && t.battery_temperature == -50);
    EMS_CHECK(t.has_seq && t.seq == EMS_SEQ_MAX);
    EMS_CHECK(t.has_clock_synced && !t.clock_synced);
    EMS_CHECK(t.has_backfill && t.backfill);
    EMS_CHECK(t.has_backlog && t.backlog == 3);
}

/* The error texts docs/protocol.md and the vectors rely on, word for word. */
static void test_decode_errors(void)
{
    EMS_CHECK_STR(refuse("\"soc\":85", "\"soc\":101"), "battery.soc: 101 is above the maximum 100");
    EMS_CHECK_STR(refuse("\"soc\":85", "\"soc\":-0.5"),
                  "battery.soc: -0.5 is below the minimum 0");
    EMS_CHECK_STR(refuse("\"CHARGING\"", "\"SLEEPING\""),
                  "system_status.state: \"SLEEPING\" is not one of IDLE, CHARGING, DISCHARGING, "
                  "FULL, EMPTY, ERROR");
    EMS_CHECK_STR(refuse("2026-01-31T12:00:01Z", "2026-13-01T00:00:00Z"),
                  "timestamp: \"2026-13-01T00:00:00Z\" is not an RFC 3339 UTC timestamp");
    EMS_CHECK_STR(refuse("\"battery\":", "\"batteryX\":"), "battery: required member is missing");
    EMS_CHECK_STR(refuse("\"voltage\":53.2", "\"voltage\":\"53.2\""),
                  "battery.voltage: expected a number, got string");
    EMS_CHECK_STR(refuse("\"error_flags\":[]", "\"error_flags\":[\"OVERHEAT\",\"OVERHEAT\"]"),
                  "system_status.error_flags: \"OVERHEAT\" is listed more than once");
    EMS_CHECK_STR(refuse("\"error_flags\":[]", "\"error_flags\":[\"OVERHEAT\",7]"),
                  "system_status.error_flags[1]: expected a string, got number");
    EMS_CHECK_STR(refuse("-45", "-45.5"), "system_status.wifi_strength: -45.5 is not an integer");
    EMS_CHECK_STR(refuse("-45", "-128"),
                  "system_status.wifi_strength: -128 is below the minimum -127");
    EMS_CHECK_STR(refuse("-45", "true"),
                  "system_status.wifi_strength: expected an integer, got boolean");
    EMS_CHECK_STR(refuse("\"ems_001\"", "\"ems 001\""),
                  "device_id: \"ems 001\" is not 1..64 characters of [A-Za-z0-9_.-]");
    EMS_CHECK_STR(refuse("\"ems_001\"", "\"ems\\u0000\""),
                  "device_id: \"ems\\u0000\" is not 1..64 characters of [A-Za-z0-9_.-]");
    EMS_CHECK_STR(refuse("50.0}}", "50.0},\"seq\":9007199254740992}"),
                  "seq: 9007199254740992 is above the maximum 9007199254740991");
    EMS_CHECK_STR(refuse("50.0}}", "50.0},\"seq\":1e300}"),
                  "seq: 1e+300 is above the maximum 9007199254740991");
    EMS_CHECK_STR(refuse("\"mode\":\"AUTO\"", "\"mode\":\"AUTO\",\"mode\":\"AUTO\""),
                  "invalid JSON at line 1, column 114: duplicate object key near '\"mode\"'");
    EMS_CHECK(strncmp(refuse("50.0}}", "50.0}"), "invalid JSON at line 1", 22) == 0);
    EMS_CHECK(strncmp(refuse("53.2", "NaN"), "invalid JSON", 12) == 0);
    EMS_CHECK_STR(refuse(SEED, "[]"), "expected an object, got array");
    EMS_CHECK_STR(refuse(SEED, "17"), "expected an object, got number");
}

static void test_decode_long_id(void)
{
    /* A 1 MB device id gives a short error that quotes only its start. */
    size_t n = 1 << 20;
    char *text = malloc(n + 300);
    EMS_CHECK(text != NULL);
    int k = sprintf(text, "{\"device_id\":\"");
    memset(text + k, 'a', n);
    strcpy(text + k + n, "\"}");
    ems_telemetry_t t;
    ems_verr_t err;
    EMS_CHECK_INT(ems_telemetry_decode(text, strlen(text), &t, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "device_id");
    if (!strstr(err.reason, "aaaa...\" is not 1..64"))
        EMS_FAIL("reason: %s", err.reason);
    free(text);
}

static ems_telemetry_t sample(void)
{
    ems_telemetry_t t;
    ems_verr_t err;
    if (ems_telemetry_decode(SEED, strlen(SEED), &t, &err) != 0)
        EMS_FAIL("seed refused: %s", err.reason);
    return t;
}

static void test_encode_round_trip(void)
{
    ems_telemetry_t t = sample(), back;
    t.has_seq = true;
    t.seq = 1042;
    t.has_target_power = true;
    t.target_power = 0.1 + 0.2; /* needs 17 digits */
    t.error_flags = EMS_FAULT_OVERHEAT | EMS_FAULT_GRID_FAULT;
    t.battery_voltage = -0.0;
    char buf[EMS_TELEMETRY_JSON_MAX];
    int n = ems_telemetry_encode(&t, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK_INT((size_t)n, ==, strlen(buf));
    EMS_CHECK(strstr(buf, "\"timestamp\":\"2026-01-31T12:00:01.000Z\"") != NULL);
    EMS_CHECK(strstr(buf, "\"voltage\":53.2,") == NULL); /* battery voltage changed */
    EMS_CHECK(strstr(buf, "\"voltage\":-0,") != NULL);
    EMS_CHECK(strstr(buf, "\"voltage\":230.1,") != NULL);
    EMS_CHECK(strstr(buf, "\"target_power\":0.30000000000000004") != NULL);
    EMS_CHECK(strstr(buf, "\"error_flags\":[\"OVERHEAT\",\"GRID_FAULT\"]") != NULL);
    ems_verr_t err;
    EMS_CHECK_INT(ems_telemetry_decode(buf, (size_t)n, &back, &err), ==, 0);
    EMS_CHECK(ems_telemetry_equal(&t, &back));
    back.battery_voltage = 0.0; /* +0 and -0 differ bitwise */
    EMS_CHECK(!ems_telemetry_equal(&t, &back));
}

static void test_encode_refuses(void)
{
    ems_telemetry_t t = sample();
    char buf[EMS_TELEMETRY_JSON_MAX];
    EMS_CHECK_INT(ems_telemetry_encode(&t, buf, 20), ==, EMS_ENOSPC);
    t.battery_soc = NAN;
    EMS_CHECK_INT(ems_telemetry_encode(&t, buf, sizeof buf), ==, EMS_EINVAL);
    ems_verr_t err;
    EMS_CHECK_INT(ems_telemetry_check(&t, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "battery.soc");
    t = sample();
    t.grid_frequency = INFINITY;
    EMS_CHECK_INT(ems_telemetry_encode(&t, buf, sizeof buf), ==, EMS_EINVAL);
    t = sample();
    strcpy(t.device_id, "bad id");
    EMS_CHECK_INT(ems_telemetry_check(&t, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "device_id");
    t = sample();
    t.state = EMS_STATE_COUNT;
    EMS_CHECK_INT(ems_telemetry_encode(&t, buf, sizeof buf), ==, EMS_EINVAL);
    t = sample();
    t.has_seq = true;
    t.seq = EMS_SEQ_MAX + 1;
    EMS_CHECK_INT(ems_telemetry_check(&t, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "seq");
    t = sample();
    t.battery_soc = 100.5;
    EMS_CHECK_INT(ems_telemetry_check(&t, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.reason, "100.5 is above the maximum 100");
}

static void test_to_json(void)
{
    ems_telemetry_t t = sample(), back;
    json_t *o = ems_telemetry_to_json(&t);
    EMS_CHECK(o != NULL);
    EMS_CHECK_STR(json_string_value(json_object_get(o, "device_id")), "ems_001");
    ems_verr_t err;
    EMS_CHECK_INT(ems_telemetry_from_json(o, &back, &err), ==, 0);
    EMS_CHECK(ems_telemetry_equal(&t, &back));
    json_decref(o);
    t.battery_power = NAN;
    EMS_CHECK(ems_telemetry_to_json(&t) == NULL);
}

/* The optional energy object: absent in the seed (an older edge), decoded
 * and re-encoded exactly when present, all-or-nothing, and the worst-case
 * packet with it still fits EMS_TELEMETRY_JSON_MAX. */
static void test_energy(void)
{
    ems_telemetry_t t = sample(), back;
    EMS_CHECK(!t.has_energy); /* the seed has none: still a valid packet */
    t.has_energy = true;
    t.energy_battery_charged_wh = 1234.567;
    t.energy_battery_discharged_wh = 0;
    t.energy_grid_import_wh = 0.1 + 0.2; /* needs 17 digits */
    t.energy_grid_export_wh = EMS_ENERGY_WH_MAX;
    t.energy_since_ms = 1767225600000; /* 2026-01-01T00:00:00Z */
    char buf[EMS_TELEMETRY_JSON_MAX];
    int n = ems_telemetry_encode(&t, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK(strstr(buf, "\"energy\":{\"battery_charged_wh\":1234.567,"
                          "\"battery_discharged_wh\":0,"
                          "\"grid_import_wh\":0.30000000000000004,"
                          "\"grid_export_wh\":1000000000000,"
                          "\"since\":\"2026-01-01T00:00:00.000Z\"}") != NULL);
    ems_verr_t err;
    EMS_CHECK_INT(ems_telemetry_decode(buf, (size_t)n, &back, &err), ==, 0);
    EMS_CHECK(back.has_energy);
    EMS_CHECK(ems_telemetry_equal(&t, &back));
    back.energy_grid_export_wh = 1;
    EMS_CHECK(!ems_telemetry_equal(&t, &back));
    back = t;
    back.has_energy = false;
    EMS_CHECK(!ems_telemetry_equal(&t, &back));

    /* Refused by check (so never encoded): negative, too large, not finite. */
    ems_telemetry_t bad = t;
    bad.energy_battery_discharged_wh = -0.001;
    EMS_CHECK_INT(ems_telemetry_encode(&bad, buf, sizeof buf), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_telemetry_check(&bad, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "energy.battery_discharged_wh");
    bad = t;
    bad.energy_grid_import_wh = NAN;
    EMS_CHECK_INT(ems_telemetry_check(&bad, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "energy.grid_import_wh");
    bad = t;
    bad.energy_battery_charged_wh = INFINITY;
    EMS_CHECK_INT(ems_telemetry_check(&bad, &err), ==, EMS_EINVAL);
    bad = t;
    bad.energy_since_ms = INT64_MAX;
    EMS_CHECK_INT(ems_telemetry_check(&bad, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "energy.since");

    /* Refused by the decoder at the member's path. */
    const char *tail = "\"grid\":{\"voltage\":230.1,\"power\":-200,\"frequency\":50.0}}";
    EMS_CHECK_STR(refuse(tail, "\"grid\":{\"voltage\":230.1,\"power\":-200,\"frequency\":50.0},"
                               "\"energy\":{\"battery_charged_wh\":1,\"battery_discharged_wh\":1,"
                               "\"grid_import_wh\":1,\"since\":\"2026-01-01T00:00:00Z\"}}"),
                  "energy.grid_export_wh: required member is missing");
    EMS_CHECK_STR(refuse(tail, "\"grid\":{\"voltage\":230.1,\"power\":-200,\"frequency\":50.0},"
                               "\"energy\":7}"),
                  "energy: expected an object, got number");

    /* The largest packet the edge can make still fits, with energy. */
    t.has_seq = t.has_backlog = t.has_target_mode = t.has_target_power = true;
    t.has_clock_synced = t.has_backfill = t.has_battery_temperature = true;
    t.seq = t.backlog = EMS_SEQ_MAX;
    t.error_flags = EMS_FAULT_ALL;
    t.target_power = t.battery_voltage = t.battery_current = t.battery_power = 0.1 + 0.2;
    t.battery_soc = t.battery_temperature = t.grid_voltage = t.grid_frequency = 0.1 + 0.2;
    t.grid_power = -(0.1 + 0.2) * 1e6;
    t.energy_battery_charged_wh = t.energy_battery_discharged_wh = 1e11 + 0.1 + 0.2;
    t.energy_grid_import_wh = t.energy_grid_export_wh = 0.1 + 0.2;
    t.has_wifi_strength = true;
    t.wifi_strength = -127;
    memset(t.device_id, 'x', EMS_DEVICE_ID_MAX);
    t.device_id[EMS_DEVICE_ID_MAX] = '\0';
    n = ems_telemetry_encode(&t, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK_INT(n, <, EMS_TELEMETRY_JSON_MAX - 100); /* and some room to spare */
}

static void test_device_id(void)
{
    char id[70];
    memset(id, 'x', sizeof id);
    EMS_CHECK(ems_device_id_valid(id, 64));
    EMS_CHECK(!ems_device_id_valid(id, 65));
    EMS_CHECK(!ems_device_id_valid(id, 0));
    EMS_CHECK(ems_device_id_valid("A-z.0_9", 7));
    EMS_CHECK(!ems_device_id_valid("a:b", 3));
    EMS_CHECK(!ems_device_id_valid("a/b", 3));
    EMS_CHECK(!ems_device_id_valid("\xc3\xa9", 2));
}

int main(void)
{
    EMS_RUN(test_status_names);
    EMS_RUN(test_verr_format);
    EMS_RUN(test_decode_seed);
    EMS_RUN(test_decode_extensions);
    EMS_RUN(test_decode_errors);
    EMS_RUN(test_decode_long_id);
    EMS_RUN(test_encode_round_trip);
    EMS_RUN(test_encode_refuses);
    EMS_RUN(test_to_json);
    EMS_RUN(test_device_id);
    EMS_RUN(test_energy);
    EMS_TEST_END();
}
