/* Unit tests: the alarm rules (cloud/gateway/gw_alarm.c): debounce,
 * hysteresis, the offline rule, the first clear of an unknown rule; the
 * alarm routes; the webhook's URL parsing and signature. */
#include "ems_test.h"

#include "error.h"
#include "gw_alarm.h"
#include "gw_router.h"
#include "gw_webhook.h"

#include <stdio.h>
#include <string.h>

/* What the engine emitted, in order. */
typedef struct {
    int n;
    gw_alarm_rule_t rule[64];
    bool raise[64];
    int64_t at[64], since[64];
    char msg[64][128];
    char det[64][160];
    bool refuse; /* the caller's queue is full */
    int refused;
} rec_t;

static bool rec(void *ud, const gw_alarm_change_t *c)
{
    rec_t *r = ud;
    if (r->refuse)
        return r->refused++, false;
    if (r->n >= 64)
        return true;
    r->rule[r->n] = c->rule;
    r->raise[r->n] = c->raise;
    r->at[r->n] = c->at_ms;
    r->since[r->n] = c->since_ms;
    snprintf(r->msg[r->n], sizeof r->msg[0], "%s", c->message);
    snprintf(r->det[r->n], sizeof r->det[0], "%s", c->details);
    r->n++;
    return true;
}

static int count(const rec_t *r, gw_alarm_rule_t rule, bool raise)
{
    int n = 0;
    for (int i = 0; i < r->n; i++)
        n += r->rule[i] == rule && r->raise[i] == raise;
    return n;
}

static ems_telemetry_t pkt(ems_state_t st, uint32_t flags, double soc)
{
    ems_telemetry_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.device_id, sizeof t.device_id, "dev_1");
    t.state = st;
    t.error_flags = flags;
    t.battery_soc = soc;
    return t;
}

static gw_alarm_cfg_t cfg10(void)
{
    gw_alarm_cfg_t c;
    gw_alarm_cfg_default(&c);
    c.debounce_ms = 10000;
    return c;
}

/* ERROR raises once, only after it held for the whole debounce; a short
 * ERROR blip raises nothing. */
static void test_error_debounce(void)
{
    gw_alarm_cfg_t c = cfg10();
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    int64_t t0 = 1000000;
    ems_telemetry_t ok = pkt(EMS_STATE_CHARGING, 0, 50);
    ems_telemetry_t err = pkt(EMS_STATE_ERROR, EMS_FAULT_OVERHEAT | EMS_FAULT_OVERCURRENT, 50);
    /* The first OK packets settle the unknown rules to clear, silently. */
    for (int s = 0; s < 20; s++)
        gw_alarm_packet(&c, &d, &ok, t0 + s * 1000, rec, &r);
    int settled = r.n;
    EMS_CHECK_INT(settled, ==, 0);
    EMS_CHECK_INT(d.state[GW_ALARM_ERROR], ==, GW_ALARM_CLEAR);
    /* A blip of 5 s in ERROR: nothing. */
    for (int s = 20; s < 25; s++)
        gw_alarm_packet(&c, &d, &err, t0 + s * 1000, rec, &r);
    for (int s = 25; s < 30; s++)
        gw_alarm_packet(&c, &d, &ok, t0 + s * 1000, rec, &r);
    EMS_CHECK_INT(r.n, ==, settled);
    /* ERROR for 9 s: still nothing; at 10 s: one raise; later packets: no more. */
    for (int s = 30; s < 40; s++)
        gw_alarm_packet(&c, &d, &err, t0 + s * 1000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_ERROR, true), ==, 0);
    gw_alarm_packet(&c, &d, &err, t0 + 40 * 1000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_ERROR, true), ==, 1);
    EMS_CHECK_INT(r.since[r.n - 1], ==, t0 + 30 * 1000);
    EMS_CHECK(strstr(r.msg[r.n - 1], "OVERHEAT, OVERCURRENT") != NULL);
    EMS_CHECK_STR(r.det[r.n - 1], "{\"error_flags\":[\"OVERHEAT\",\"OVERCURRENT\"]}");
    for (int s = 41; s < 100; s++)
        gw_alarm_packet(&c, &d, &err, t0 + s * 1000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_ERROR, true), ==, 1);
    /* Back to normal: cleared after the debounce, once. */
    for (int s = 100; s < 120; s++)
        gw_alarm_packet(&c, &d, &ok, t0 + s * 1000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_ERROR, false), ==, 1);
}

/* A SoC flapping around the threshold raises once and does not clear until
 * it is above threshold + hysteresis for the debounce. */
static void test_soc_hysteresis(void)
{
    gw_alarm_cfg_t c = cfg10();
    c.debounce_ms = 3000;
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    int64_t t = 5000000;
    ems_telemetry_t p = pkt(EMS_STATE_DISCHARGING, 0, 50);
    /* Start inside the band (10..15): an unknown rule stays quiet. */
    p.battery_soc = 12;
    for (int i = 0; i < 10; i++, t += 1000)
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, false) + count(&r, GW_ALARM_SOC_LOW, true), ==, 0);
    /* Flap 9.5 / 10.5 every second for a minute: below 10 never holds 3 s. */
    for (int i = 0; i < 60; i++, t += 1000) {
        p.battery_soc = i % 2 ? 10.5 : 9.5;
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    }
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, true), ==, 0);
    /* Flap 8 / 9.9 (always below 10): one raise after 3 s. */
    for (int i = 0; i < 60; i++, t += 1000) {
        p.battery_soc = i % 2 ? 9.9 : 8;
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    }
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, true), ==, 1);
    /* Flap 9 / 14 (14 is in the band): never clears. */
    for (int i = 0; i < 60; i++, t += 1000) {
        p.battery_soc = i % 2 ? 14 : 9;
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    }
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, true), ==, 1);
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, false), ==, 0);
    /* 14.9 for a minute: still in the band. */
    p.battery_soc = 14.9;
    for (int i = 0; i < 60; i++, t += 1000)
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, false), ==, 0);
    /* 15.5 for 3 s: one clear. */
    p.battery_soc = 15.5;
    for (int i = 0; i < 10; i++, t += 1000)
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, false), ==, 1);
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, true), ==, 1);
}

/* A band value between a below and an above resets the wait. */
static void test_soc_band_resets_debounce(void)
{
    gw_alarm_cfg_t c = cfg10();
    c.debounce_ms = 3000;
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    int64_t t = 100000;
    ems_telemetry_t p = pkt(EMS_STATE_IDLE, 0, 5);
    for (int i = 0; i < 4; i++, t += 1000) {
        p.battery_soc = i == 2 ? 12 : 5; /* below, below, band, below */
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    }
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, true), ==, 0);
    p.battery_soc = 5;
    for (int i = 0; i < 4; i++, t += 1000)
        gw_alarm_packet(&c, &d, &p, t, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, true), ==, 1);
}

/* Debounce 0: at once. soc_low 0: the rule is off. Sensor fault follows
 * its flag. */
static void test_zero_debounce_and_disabled(void)
{
    gw_alarm_cfg_t c = cfg10();
    c.debounce_ms = 0;
    c.soc_low = 0;
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    ems_telemetry_t p = pkt(EMS_STATE_IDLE, EMS_FAULT_SENSOR_FAULT, 0);
    gw_alarm_packet(&c, &d, &p, 1000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_SENSOR_FAULT, true), ==, 1);
    EMS_CHECK_INT(count(&r, GW_ALARM_SOC_LOW, true), ==, 0);
    p.error_flags = 0;
    gw_alarm_packet(&c, &d, &p, 2000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_SENSOR_FAULT, false), ==, 1);
}

/* Offline: raised once after offline_ms, with the disconnect as `since`;
 * a connect clears it; a connect of a known-clear rule emits nothing. */
static void test_offline(void)
{
    gw_alarm_cfg_t c = cfg10();
    c.offline_ms = 5000;
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    gw_alarm_connected(&c, &d, "dev_1", 1000, rec, &r); /* unknown: nothing */
    EMS_CHECK_INT(r.n, ==, 0);
    gw_alarm_disconnected(&d);
    for (int64_t t = 10000; t < 14999; t += 1000)
        gw_alarm_offline(&c, &d, "dev_1", 10000, t, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_OFFLINE, true), ==, 0);
    for (int64_t t = 15000; t < 30000; t += 1000)
        gw_alarm_offline(&c, &d, "dev_1", 10000, t, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_OFFLINE, true), ==, 1);
    EMS_CHECK_INT(r.since[r.n - 1], ==, 10000);
    gw_alarm_connected(&c, &d, "dev_1", 31000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_OFFLINE, false), ==, 1);
    gw_alarm_connected(&c, &d, "dev_1", 32000, rec, &r);
    EMS_CHECK_INT(r.n, ==, 2);
    /* offline_ms 0: off. */
    c.offline_ms = 0;
    gw_alarm_dev_t d2 = {0};
    rec_t r2 = {0};
    gw_alarm_offline(&c, &d2, "dev_1", 1, 100000000, rec, &r2);
    EMS_CHECK_INT(r2.n, ==, 0);
}

/* A disconnect forgets a pending condition: 5 s of ERROR, a reconnect, 5 s
 * more do not add up to the 10 s debounce. */
static void test_disconnect_resets_pending(void)
{
    gw_alarm_cfg_t c = cfg10();
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    ems_telemetry_t err = pkt(EMS_STATE_ERROR, 0, 50);
    for (int s = 0; s < 6; s++)
        gw_alarm_packet(&c, &d, &err, 1000 + s * 1000, rec, &r);
    gw_alarm_disconnected(&d);
    for (int s = 20; s < 26; s++)
        gw_alarm_packet(&c, &d, &err, 1000 + s * 1000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_ERROR, true), ==, 0);
}

/* The database's open alarms for a device that just connected to a fresh
 * gateway: an open offline alarm is cleared at once; an open error alarm
 * is taken as raised and cleared by the normal (debounced) rule; a rule
 * already settled clear here is cleared now; no open alarm: nothing. */
static void test_sync(void)
{
    gw_alarm_cfg_t c = cfg10();
    c.debounce_ms = 2000;
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    ems_telemetry_t ok = pkt(EMS_STATE_IDLE, 0, 60);
    gw_alarm_sync(&c, &d, "dev_1", 1u << GW_ALARM_OFFLINE | 1u << GW_ALARM_ERROR, 1000, rec, &r);
    EMS_CHECK_INT(r.n, ==, 1);
    EMS_CHECK(r.rule[0] == GW_ALARM_OFFLINE && !r.raise[0]);
    EMS_CHECK_INT(d.state[GW_ALARM_ERROR], ==, GW_ALARM_RAISED);
    EMS_CHECK_INT(d.state[GW_ALARM_SOC_LOW], ==, GW_ALARM_CLEAR);
    for (int64_t t = 1000; t <= 4000; t += 500)
        gw_alarm_packet(&c, &d, &ok, t, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_ERROR, false), ==, 1);
    EMS_CHECK_INT(r.n, ==, 2);

    /* Settled before the answer came. */
    gw_alarm_dev_t d2 = {0};
    rec_t r2 = {0};
    for (int64_t t = 1000; t <= 4000; t += 500)
        gw_alarm_packet(&c, &d2, &ok, t, rec, &r2);
    EMS_CHECK_INT(r2.n, ==, 0);
    gw_alarm_sync(&c, &d2, "dev_1", 1u << GW_ALARM_SENSOR_FAULT, 4100, rec, &r2);
    EMS_CHECK_INT(r2.n, ==, 1);
    EMS_CHECK(r2.rule[0] == GW_ALARM_SENSOR_FAULT && !r2.raise[0]);
    gw_alarm_sync(&c, &d2, "dev_1", 0, 4200, rec, &r2);
    EMS_CHECK_INT(r2.n, ==, 1);
}

/* A change the caller could not queue is tried again at the next packet
 * (no second debounce wait), and told exactly once when it is taken. */
static void test_refused_change_retried(void)
{
    gw_alarm_cfg_t c = cfg10();
    c.debounce_ms = 2000;
    c.offline_ms = 1000;
    gw_alarm_dev_t d = {0};
    rec_t r = {0};
    ems_telemetry_t err = pkt(EMS_STATE_ERROR, 0, 60);
    r.refuse = true;
    for (int64_t t = 1000; t <= 5000; t += 1000)
        gw_alarm_packet(&c, &d, &err, t, rec, &r);
    EMS_CHECK_INT(r.n, ==, 0);
    EMS_CHECK_INT(r.refused, ==, 3); /* at 3000, 4000, 5000 */
    EMS_CHECK(d.state[GW_ALARM_ERROR] != GW_ALARM_RAISED);
    r.refuse = false;
    gw_alarm_packet(&c, &d, &err, 6000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_ERROR, true), ==, 1);
    EMS_CHECK_INT(r.since[0], ==, 1000);
    gw_alarm_packet(&c, &d, &err, 7000, rec, &r);
    EMS_CHECK_INT(r.n, ==, 1);
    /* The offline raise likewise. */
    r.refuse = true;
    gw_alarm_offline(&c, &d, "dev_1", 10000, 12000, rec, &r);
    EMS_CHECK(d.state[GW_ALARM_OFFLINE] != GW_ALARM_RAISED);
    r.refuse = false;
    gw_alarm_offline(&c, &d, "dev_1", 10000, 13000, rec, &r);
    EMS_CHECK_INT(count(&r, GW_ALARM_OFFLINE, true), ==, 1);
}

static void test_routes(void)
{
    gw_route_t r;
    const char *p = "/api/alarms";
    gw_router_match(p, strlen(p), &r);
    EMS_CHECK_INT(r.id, ==, GW_R_ALARMS);
    p = "/api/alarms/42/ack";
    gw_router_match(p, strlen(p), &r);
    EMS_CHECK_INT(r.id, ==, GW_R_ALARM_ACK);
    EMS_CHECK_STR(r.id1, "42");
    EMS_CHECK_INT(r.methods, ==, GW_M_POST);
    const char *bad[] = {"/api/alarms/x/ack", "/api/alarms/042/ack",
                         "/api/alarms/42",    "/api/alarms/42/ack/",
                         "/api/alarms//ack",  "/api/alarms/12345678901234567890/ack"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_router_match(bad[i], strlen(bad[i]), &r);
        EMS_CHECK_INT(r.id, ==, GW_R_NOT_FOUND);
    }
    p = "/api/devices/ems_001/alarms";
    gw_router_match(p, strlen(p), &r);
    EMS_CHECK_INT(r.id, ==, GW_R_DEVICE_ALARMS);
    EMS_CHECK_STR(r.id1, "ems_001");
}

static void test_webhook_url(void)
{
    int tls;
    char host[64], path[64];
    uint16_t port;
    EMS_CHECK_INT(gw_webhook_parse_url("http://127.0.0.1:8080/hook?a=1", &tls, host, sizeof host,
                                       &port, path, sizeof path),
                  ==, 0);
    EMS_CHECK_INT(tls, ==, 0);
    EMS_CHECK_STR(host, "127.0.0.1");
    EMS_CHECK_INT(port, ==, 8080);
    EMS_CHECK_STR(path, "/hook?a=1");
    EMS_CHECK_INT(gw_webhook_parse_url("https://example.com", &tls, host, sizeof host, &port, path,
                                       sizeof path),
                  ==, 0);
    EMS_CHECK_INT(tls, ==, 1);
    EMS_CHECK_INT(port, ==, 443);
    EMS_CHECK_STR(path, "/");
    EMS_CHECK_INT(gw_webhook_parse_url("http://[::1]:99/x", &tls, host, sizeof host, &port, path,
                                       sizeof path),
                  ==, 0);
    EMS_CHECK_STR(host, "::1");
    EMS_CHECK_INT(port, ==, 99);
    const char *bad[] = {"ftp://x/",        "http://",     "http://:80/", "http://a:0/",
                         "http://a:99999/", "http://a b/", "http://u@h/", "http://h/a b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EMS_CHECK_INT(
            gw_webhook_parse_url(bad[i], &tls, host, sizeof host, &port, path, sizeof path), ==,
            EMS_EINVAL);
}

/* The signature is HMAC-SHA256 over "<timestamp>.<body>"; the expected
 * value is Python's hmac.new(b"Jefe", b"what do ya want .for nothing?",
 * hashlib.sha256). */
static void test_webhook_sign(void)
{
    char sig[72];
    EMS_CHECK_INT(gw_webhook_sign("Jefe", 4, "what do ya want ", "for nothing?", 12, sig), ==, 0);
    /* "what do ya want " + "." + "for nothing?" */
    EMS_CHECK_STR(sig, "sha256=83fb3421ec48dc8ee8cd58e1f03bb1f80ae0110c64a82771c98a0cea22cecdd2");
}

int main(void)
{
    EMS_RUN(test_error_debounce);
    EMS_RUN(test_soc_hysteresis);
    EMS_RUN(test_soc_band_resets_debounce);
    EMS_RUN(test_zero_debounce_and_disabled);
    EMS_RUN(test_offline);
    EMS_RUN(test_disconnect_resets_pending);
    EMS_RUN(test_sync);
    EMS_RUN(test_refused_change_retried);
    EMS_RUN(test_routes);
    EMS_RUN(test_webhook_url);
    EMS_RUN(test_webhook_sign);
    EMS_TEST_END();
}
