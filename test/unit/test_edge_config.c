/* test_edge_config.c: the edge config file, flags, URL and token
 * (edge/config.c). */
#include "ems_test.h"

#include "config.h"
#include "error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ems-test-edge-config-XXXXXX");
    if (!mkdtemp(tmpdir))
        EMS_FAIL("mkdtemp failed");
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        EMS_FAIL("cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static const char *root(void)
{
    const char *r = getenv("EMS_ROOT");
    return r && *r ? r : ".";
}

#define GOOD_BASE                                                                                  \
    "device_id = ems_001\n"                                                                        \
    "cloud_url = wss://gw.example.com:8443\n"                                                      \
    "token_file = /etc/ems/device.token\n"                                                         \
    "ca_file = /etc/ems/ca.pem\n"

/* The example file is a valid configuration, and it documents every key. */
static void test_example_file(void)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/edge/ems-edge.conf.example", root());
    ems_edge_config_t cfg;
    ems_edge_config_default(&cfg);
    if (ems_edge_config_load(&cfg, path, err, sizeof err) != 0)
        EMS_FAIL("%s", err);
    if (ems_edge_config_check(&cfg, err, sizeof err) != 0)
        EMS_FAIL("%s", err);
    EMS_CHECK_STR(cfg.device_id, "ems_001");
    /* The example states the defaults: loading it changes no limit. */
    ems_fsm_limits_t def;
    ems_fsm_limits_default(&def);
    EMS_CHECK(memcmp(&def, &cfg.limits, sizeof def) == 0);

    /* Every key the parser knows appears in the example (set or commented). */
    FILE *f = fopen(path, "r");
    EMS_CHECK(f != NULL);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *keys[] = {"device_id",
                          "cloud_url",
                          "token_file",
                          "ca_file",
                          "allow_insecure_ws",
                          "log_level",
                          "status_port",
                          "status_bind",
                          "wifi_path",
                          "buffer_path",
                          "buffer_max_mb",
                          "buffer_max_age_days",
                          "buffer_min_free_mb",
                          "buffer_sync",
                          "buffer_commit_interval_ms",
                          "backend",
                          "plant_profile",
                          "plant_seed",
                          "plant_start",
                          "plant_soc",
                          "plant_capacity_kwh",
                          "plant_pv_peak_w",
                          "plant_ambient_c",
                          "plant_thermal_tau_s",
                          "plant_fault_at_s",
                          "soc_min",
                          "soc_max",
                          "soc_hysteresis",
                          "max_charge_w",
                          "max_discharge_w",
                          "auto_deadband_w",
                          "temp_max_c",
                          "temp_min_c",
                          "temp_hysteresis_c",
                          "voltage_max_v",
                          "voltage_min_v",
                          "voltage_hysteresis_v",
                          "current_max_a",
                          "current_hysteresis_a",
                          "grid_voltage_min_v",
                          "grid_voltage_max_v",
                          "grid_freq_min_hz",
                          "grid_freq_max_hz",
                          "grid_fault_ticks",
                          "sensor_stale_ms",
                          "power_tolerance_w",
                          "power_tolerance_frac",
                          "plausible_voltage_min_v",
                          "plausible_voltage_max_v",
                          "plausible_temp_min_c",
                          "plausible_temp_max_c",
                          "manual_timeout_s"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char pat[80];
        snprintf(pat, sizeof pat, "\n%s = ", keys[i]);
        char pat2[80];
        snprintf(pat2, sizeof pat2, "\n#%s = ", keys[i]);
        if (!strstr(text, pat) && !strstr(text, pat2))
            EMS_FAIL("key %s is not in the example", keys[i]);
        /* and the parser knows it */
        ems_edge_config_t c2;
        ems_edge_config_default(&c2);
        int rc = ems_edge_config_set(&c2, keys[i], "x", "t", 1, err, sizeof err);
        if (rc == 0)
            continue; /* a string key */
        if (strstr(err, "unknown key"))
            EMS_FAIL("the parser does not know %s", keys[i]);
    }
}

/* A file with comments, quotes, CRLF and every kind of value. */
static void test_good_file(void)
{
    const char *text = "# a comment\n"
                       "   # an indented comment\n"
                       "\n" GOOD_BASE "soc_min = 15   # end-of-line comment\r\n"
                       "soc_max=90\n"
                       "max_discharge_w = 3500.5\n"
                       "manual_timeout_s = 0\n"
                       "sensor_stale_ms = 2500\n"
                       "log_level = debug\n"
                       "allow_insecure_ws = yes\n"
                       "plant_profile = evening\n"
                       "plant_seed = 18446744073709551615\n"
                       "plant_start = 06:30:15\n"
                       "plant_soc = 33\n"
                       "buffer_path = \"/var/lib/ems #1/buf\"\n"
                       "buffer_max_mb = 8\n"
                       "buffer_max_age_days = 1.5\n"
                       "buffer_sync = full\n"
                       "buffer_commit_interval_ms = 250\n"
                       "status_port = 8088\n";
    ems_edge_config_t cfg;
    char err[512];
    ems_edge_config_default(&cfg);
    if (ems_edge_config_parse(&cfg, text, strlen(text), "edge.conf", err, sizeof err) != 0)
        EMS_FAIL("%s", err);
    if (ems_edge_config_check(&cfg, err, sizeof err) != 0)
        EMS_FAIL("%s", err);
    EMS_CHECK(cfg.limits.soc_min == 15 && cfg.limits.soc_max == 90);
    EMS_CHECK(cfg.limits.max_discharge_w == 3500.5);
    EMS_CHECK(cfg.limits.manual_timeout_ms == 0);
    EMS_CHECK(cfg.limits.stale_ms == 2500);
    EMS_CHECK_INT(cfg.log_level, ==, EMS_LOG_DEBUG);
    EMS_CHECK(cfg.allow_insecure_ws);
    EMS_CHECK_STR(cfg.buffer_path, "/var/lib/ems #1/buf");
    EMS_CHECK(cfg.buffer_max_bytes == 8u << 20);
    EMS_CHECK(cfg.buffer_max_age_ms == 36LL * 3600 * 1000);
    EMS_CHECK_INT(cfg.buffer_sync, ==, EMS_STORE_SYNC_FULL);
    EMS_CHECK_INT(cfg.buffer_commit_interval_ms, ==, 250);
    EMS_CHECK_INT(cfg.status_port, ==, 8088);

    ems_plant_config_t pc;
    ems_edge_config_plant(&cfg, &pc);
    EMS_CHECK_INT(pc.profile, ==, EMS_PLANT_EVENING);
    EMS_CHECK(pc.seed == 18446744073709551615ULL);
    EMS_CHECK(pc.start_tod_s == 6 * 3600 + 30 * 60 + 15);
    EMS_CHECK(pc.soc0 == 33);
    EMS_CHECK(pc.capacity_kwh == 10); /* profile default kept */

    /* The profile key may come after the keys it would otherwise reset. */
    ems_edge_config_default(&cfg);
    const char *t2 = "plant_soc = 12\nplant_profile = faulty\n";
    EMS_CHECK(ems_edge_config_parse(&cfg, t2, strlen(t2), "x", err, sizeof err) == 0);
    ems_edge_config_plant(&cfg, &pc);
    EMS_CHECK(pc.soc0 == 12 && pc.fault_at_s == 60);
}

/* Each bad line is refused with FILE:LINE and the reason. */
static void test_bad_lines(void)
{
    const struct {
        const char *line;
        const char *want; /* expected error after "edge.conf:LINE: " */
    } cases[] = {
        {"soc_min 10", "expected 'key = value'"},
        {"= 10", "expected 'key = value'"},
        {"Soc_min = 10", "expected 'key = value'"},
        {"soc_minimum = 10", "unknown key 'soc_minimum'"},
        {"soc_min =", "soc_min: empty value"},
        {"soc_min = ten", "soc_min: 'ten' is not a number"},
        {"soc_min = 10 %", "soc_min: '10 %' is not a number"},
        {"soc_min = 0x10", "soc_min: '0x10' is not a number"},
        {"soc_min = nan", "soc_min: 'nan' is not a number"},
        {"soc_min = 101", "soc_min: 101 is outside 0..100"},
        {"max_charge_w = -5", "max_charge_w: -5 is outside 1..1e+06"},
        {"grid_fault_ticks = 2.5", "grid_fault_ticks: 2.5 is not a whole number"},
        {"status_port = 70000", "status_port: 70000 is outside 0..65535"},
        {"buffer_sync = sometimes", "buffer_sync: 'sometimes' is not off, normal or full"},
        {"allow_insecure_ws = maybe", "allow_insecure_ws: 'maybe' is not true or false"},
        {"log_level = loud", "log_level: 'loud' is not error, warn, info or debug"},
        {"backend = gpio", "backend: 'gpio' is not sim or hw"},
        {"battery_monitor_address = 0x80", "battery_monitor_address: '0x80' is not a 7-bit I2C"},
        {"dac_address = sixty", "dac_address: 'sixty' is not a 7-bit I2C address"},
        {"battery_monitor = ina219", "battery_monitor: 'ina219' is not ina228 or ina226"},
        {"shunt_ohms = 0", "shunt_ohms: 0 is outside 1e-06..10"},
        {"plant_profile = rainy", "plant_profile: 'rainy' is not sunny, evening or faulty"},
        {"plant_seed = -1", "plant_seed: '-1' is not a whole number >= 0"},
        {"plant_start = 25:00", "plant_start: '25:00' is not a time of day HH:MM[:SS]"},
        {"plant_start = 7:30", "plant_start: '7:30' is not a time of day HH:MM[:SS]"},
        {"device_id = ems 001", "device_id: 'ems 001' is not 1 to 64 characters"},
        {"device_id = a/b", "device_id: 'a/b' is not 1 to 64 characters"},
        {"buffer_path = \"/tmp/x", "buffer_path: unterminated quote"},
        {"buffer_path = \"/tmp/x\" y", "buffer_path: text after the closing quote"},
        {"soc_max = 90\nsoc_max = 80", "soc_max is set twice (first at line 4)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* Three good lines first, so the line number is checked too. */
        char text[512];
        snprintf(text, sizeof text, "# header\n\nstatus_bind = 127.0.0.1\n%s\n", cases[i].line);
        ems_edge_config_t cfg;
        char err[512], want[512];
        ems_edge_config_default(&cfg);
        int line = strchr(cases[i].line, '\n') ? 5 : 4;
        snprintf(want, sizeof want, "edge.conf:%d: %s", line, cases[i].want);
        int rc = ems_edge_config_parse(&cfg, text, strlen(text), "edge.conf", err, sizeof err);
        if (rc != EMS_ECONFIG)
            EMS_FAIL("'%s' was accepted", cases[i].line);
        if (strncmp(err, want, strlen(want)) != 0)
            EMS_FAIL("'%s': got \"%s\", want \"%s\"", cases[i].line, err, want);
    }

    /* A missing file. */
    ems_edge_config_t cfg;
    char err[512];
    ems_edge_config_default(&cfg);
    EMS_CHECK(ems_edge_config_load(&cfg, "/nonexistent/ems.conf", err, sizeof err) == EMS_ECONFIG);
    EMS_CHECK_STR(err, "/nonexistent/ems.conf: No such file or directory");
}

/* Rules between keys, checked after the file and the flags. */
static void test_cross_checks(void)
{
    const struct {
        const char *text;
        const char *want; /* NULL: valid */
    } cases[] = {
        {GOOD_BASE, NULL},
        {"cloud_url = wss://h\ntoken_file = t\nca_file = c\n", "cfg: device_id is required"},
        {"device_id = d\ntoken_file = t\n", "cfg: cloud_url is required"},
        {"device_id = d\ncloud_url = wss://h\nca_file = c\n", "cfg: token_file is required"},
        {"device_id = d\ncloud_url = ws://h\ntoken_file = t\n",
         "cfg:2: cloud_url is plain ws:// but allow_insecure_ws is not true"},
        {"device_id = d\ncloud_url = ws://h\ntoken_file = t\nallow_insecure_ws = true\n", NULL},
        {"device_id = d\ncloud_url = wss://h\ntoken_file = t\n",
         "cfg:2: ca_file is required for a wss:// cloud_url"},
        {"device_id = d\ncloud_url = https://h\ntoken_file = t\n",
         "cfg:2: cloud_url must start with wss://"},
        {"device_id = d\ncloud_url = wss://h:0\ntoken_file = t\nca_file = c\n",
         "cfg:2: cloud_url: bad port"},
        {GOOD_BASE "soc_min = 95\nsoc_max = 90\n", "cfg: soc_min 95 + soc_hysteresis 3"},
        {GOOD_BASE "temp_min_c = 50\n", "cfg: temp_min_c 50 and temp_max_c 55"},
        {GOOD_BASE "voltage_max_v = 40\n", "cfg: voltage_min_v 42 and voltage_max_v 40"},
        /* the hardware back end: the reference wiring is valid as it is */
        {GOOD_BASE "backend = hw\n", NULL},
        {GOOD_BASE "backend = hw\nsim_control = true\n", "cfg: sim_control is for backend = sim"},
        {GOOD_BASE "backend = hw\nbattery_monitor_averaging = 5\n",
         "cfg: battery_monitor_averaging: 5 is not 1, 4, 16"},
        {GOOD_BASE "backend = hw\nbattery_monitor = ina226\n",
         "cfg: battery_monitor_conversion_us: 1052 is not one of the INA226's times"},
        {GOOD_BASE "backend = hw\nshunt_max_current_a = 400\n",
         "cfg: shunt_ohms x shunt_max_current_a = 200.00 mV is beyond the INA228's"},
        {GOOD_BASE "backend = hw\ntemp_sensor_address = 0x40\n",
         "cfg: battery_monitor_address and temp_sensor_address are both 0x40"},
        {GOOD_BASE "backend = hw\nzero_cross_line = 17\n",
         "cfg: charge_enable_line and zero_cross_line are both line 17"},
        {GOOD_BASE "backend = hw\nmax_charge_w = 8000\n", "cfg: the DAC cannot command 8000 W"},
        {GOOD_BASE "backend = hw\nsoc_ocv_table = \"0:44,50:43,100:54\"\n",
         "cfg: soc_ocv_table: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ems_edge_config_t cfg;
        char err[512] = "";
        ems_edge_config_default(&cfg);
        if (ems_edge_config_parse(&cfg, cases[i].text, strlen(cases[i].text), "cfg", err,
                                  sizeof err) != 0)
            EMS_FAIL("case %zu: parse: %s", i, err);
        int rc = ems_edge_config_check(&cfg, err, sizeof err);
        if (!cases[i].want) {
            if (rc != 0)
                EMS_FAIL("case %zu refused: %s", i, err);
        } else if (rc != EMS_ECONFIG || strncmp(err, cases[i].want, strlen(cases[i].want)) != 0) {
            EMS_FAIL("case %zu: got \"%s\", want \"%s\"", i, rc ? err : "(accepted)",
                     cases[i].want);
        }
    }
}

/* --probe needs only the hardware keys: an installer runs it before the
 * device has an id or a token. */
static void test_probe_flag(void)
{
    ems_edge_config_t cfg;
    char err[512];
    char *ok[] = {"ems-edge", "--probe", "--set", "backend=hw", NULL};
    EMS_CHECK_INT(ems_edge_config_from_args(&cfg, 4, ok, err, sizeof err), ==, 0);
    EMS_CHECK(cfg.probe_only && cfg.backend == EMS_EDGE_BACKEND_HW);
    char *sim[] = {"ems-edge", "--probe", NULL};
    EMS_CHECK_INT(ems_edge_config_from_args(&cfg, 2, sim, err, sizeof err), ==, EMS_ECONFIG);
    EMS_CHECK(strstr(err, "--probe reads the hardware: set backend = hw") != NULL);
    char *bad[] = {"ems-edge", "--probe", "--set", "backend=hw", "--set", "dac_address=0x40", NULL};
    EMS_CHECK_INT(ems_edge_config_from_args(&cfg, 6, bad, err, sizeof err), ==, EMS_ECONFIG);
    EMS_CHECK(strstr(err, "both 0x40") != NULL);
}

/* Flags override the file whatever their position; --set reaches any key. */
static void test_flags_override(void)
{
    make_tmpdir();
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/edge.conf", tmpdir);
    write_file(path, GOOD_BASE "soc_min = 20\nlog_level = warn\nplant_seed = 5\n");

    ems_edge_config_t cfg;
    char *argv1[] = {"ems-edge",
                     "--set",
                     "soc_min=12",
                     "--log-level=debug",
                     "-c",
                     path,
                     "--seed",
                     "77",
                     "--device-id",
                     "ems_009",
                     "--sim",
                     "--insecure-ws",
                     "--url",
                     "ws://127.0.0.1:9000",
                     "--status-port",
                     "9100",
                     NULL};
    if (ems_edge_config_from_args(&cfg, 16, argv1, err, sizeof err) != 0)
        EMS_FAIL("%s", err);
    EMS_CHECK(cfg.limits.soc_min == 12);
    EMS_CHECK_INT(cfg.log_level, ==, EMS_LOG_DEBUG);
    EMS_CHECK(cfg.plant.seed == 77);
    EMS_CHECK_STR(cfg.device_id, "ems_009");
    EMS_CHECK_STR(cfg.cloud_url, "ws://127.0.0.1:9000");
    EMS_CHECK(cfg.allow_insecure_ws);
    EMS_CHECK_INT(cfg.status_port, ==, 9100);
    EMS_CHECK_STR(cfg.token_file, "/etc/ems/device.token"); /* from the file */

    /* Later flags win over earlier ones. */
    char *argv2[] = {"ems-edge", "-c", path, "-s", "soc_max=80", "--set=soc_max=85", NULL};
    EMS_CHECK(ems_edge_config_from_args(&cfg, 6, argv2, err, sizeof err) == 0);
    EMS_CHECK(cfg.limits.soc_max == 85);

    /* Errors name the flag. */
    const struct {
        char *argv[6];
        int argc;
        const char *want;
    } bad[] = {
        {{"ems-edge", "--bogus"}, 2, "--bogus: unknown option"},
        {{"ems-edge", "-c"}, 2, "-c: needs a value"},
        {{"ems-edge", "--sim=1"}, 2, "--sim=1: takes no value"},
        {{"ems-edge", "-c", path, "--set", "soc_min"}, 5, "--set: 'soc_min' is not KEY=VALUE"},
        {{"ems-edge", "-c", path, "--set", "nokey=1"}, 5, "--set: unknown key 'nokey'"},
        {{"ems-edge", "-c", path, "--seed", "x"}, 5, "--seed: plant_seed: 'x' is not"},
        {{"ems-edge", "-c", "/nonexistent"}, 3, "/nonexistent: No such file"},
        {{"ems-edge", "--sim"}, 2, "configuration: device_id is required"},
        {{"ems-edge", "-c", path, "--set", "soc_min=94"}, 5, ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = ems_edge_config_from_args(&cfg, bad[i].argc, bad[i].argv, err, sizeof err);
        if (rc != EMS_ECONFIG || strncmp(err, bad[i].want, strlen(bad[i].want)) != 0)
            EMS_FAIL("case %zu: got \"%s\", want \"%s\"", i, rc ? err : "(accepted)", bad[i].want);
    }
    /* The cross-key error names the file, since both keys matter. */
    EMS_CHECK(strncmp(err, path, strlen(path)) == 0);

    /* --help and --check. */
    char *argv3[] = {"ems-edge", "--help", NULL};
    EMS_CHECK(ems_edge_config_from_args(&cfg, 2, argv3, err, sizeof err) == 0);
    EMS_CHECK(cfg.show_help);
    EMS_CHECK(strstr(ems_edge_config_usage(), "--config FILE") != NULL);
    char *argv4[] = {"ems-edge", "-c", path, "--check", NULL};
    EMS_CHECK(ems_edge_config_from_args(&cfg, 4, argv4, err, sizeof err) == 0);
    EMS_CHECK(cfg.check_only);
    unlink(path);
    rmdir(tmpdir);
}

static void test_ws_target(void)
{
    const struct {
        const char *url;
        bool tls;
        const char *host;
        int port;
        const char *path;
    } good[] = {
        {"wss://ems.example.com", true, "ems.example.com", 443, "/ws/device/ems_001"},
        {"wss://ems.example.com/", true, "ems.example.com", 443, "/ws/device/ems_001"},
        {"ws://127.0.0.1:8080", false, "127.0.0.1", 8080, "/ws/device/ems_001"},
        {"wss://example.com/ems/", true, "example.com", 443, "/ems/ws/device/ems_001"},
        {"wss://h:8443/ws/device/ems_001", true, "h", 8443, "/ws/device/ems_001"},
        {"wss://[::1]:9443", true, "::1", 9443, "/ws/device/ems_001"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ems_edge_ws_target_t t;
        char err[256];
        if (ems_edge_config_ws_target(good[i].url, "ems_001", &t, err, sizeof err) != 0)
            EMS_FAIL("%s: %s", good[i].url, err);
        EMS_CHECK_INT(t.tls, ==, good[i].tls);
        EMS_CHECK_STR(t.host, good[i].host);
        EMS_CHECK_INT(t.port, ==, good[i].port);
        EMS_CHECK_STR(t.path, good[i].path);
    }
    const char *bad[] = {"http://h",   "wss://",      "wss://:443", "wss://h:99999",
                         "wss://h:x",  "wss://h?a=1", "wss://[::1", "wss://h h",
                         "wss://u@h/", "wss://h:443x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ems_edge_ws_target_t t;
        char err[256];
        if (ems_edge_config_ws_target(bad[i], "ems_001", &t, err, sizeof err) == 0)
            EMS_FAIL("%s accepted", bad[i]);
    }
}

static void test_token_file(void)
{
    make_tmpdir();
    char path[512], token[65], err[256];
    snprintf(path, sizeof path, "%s/token", tmpdir);
    const char *hex = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef";
    char text[128];
    snprintf(text, sizeof text, "  %s\n", hex);
    write_file(path, text);
    EMS_CHECK(ems_edge_config_read_token(path, token, sizeof token, err, sizeof err) == 0);
    EMS_CHECK_STR(token, hex);

    const char *bad[] = {"", "abc\n",
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        EMS_CHECK(ems_edge_config_read_token(path, token, sizeof token, err, sizeof err) ==
                  EMS_EINVAL);
        /* The secret is never echoed. */
        EMS_CHECK(strstr(err, "0123456789") == NULL);
    }
    unlink(path);
    EMS_CHECK(ems_edge_config_read_token(path, token, sizeof token, err, sizeof err) == EMS_EIO);
    rmdir(tmpdir);
}

int main(void)
{
    EMS_RUN(test_example_file);
    EMS_RUN(test_good_file);
    EMS_RUN(test_bad_lines);
    EMS_RUN(test_cross_checks);
    EMS_RUN(test_flags_override);
    EMS_RUN(test_probe_flag);
    EMS_RUN(test_ws_target);
    EMS_RUN(test_token_file);
    EMS_TEST_END();
}
