/* test_msg_fleet.c: the fleet view (docs/api.md, "The fleet view"): the
 * subscribe "mode", the `fleet` frame's encoder and decoder, and the
 * gateway hub's coalescer that feeds it (gw_hub.c: latest state only, one
 * pending update per device and subscriber). */
#include "ems_test.h"

#include "dashboard.h"
#include "error.h"
#include "gw_hub.h"
#include "jread.h"
#include "timefmt.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int sub_text(const char *text, ems_dash_sub_t *s, ems_verr_t *err)
{
    json_t *o = ems_jr_parse(text, strlen(text), err);
    if (!o)
        return EMS_EINVAL;
    int rc = ems_dash_sub_from_json(o, s, err);
    json_decref(o);
    return rc;
}

static void test_subscribe_mode(void)
{
    ems_dash_sub_t s;
    ems_verr_t err;
    EMS_CHECK_INT(
        sub_text("{\"type\":\"subscribe\",\"devices\":\"*\",\"mode\":\"fleet\"}", &s, &err), ==, 0);
    EMS_CHECK(s.all && s.fleet && !s.unsubscribe);
    EMS_CHECK_INT(
        sub_text("{\"type\":\"unsubscribe\",\"devices\":\"*\",\"mode\":\"fleet\"}", &s, &err), ==,
        0);
    EMS_CHECK(s.all && s.fleet && s.unsubscribe);
    EMS_CHECK_INT(sub_text("{\"type\":\"subscribe\",\"devices\":\"*\"}", &s, &err), ==, 0);
    EMS_CHECK(s.all && !s.fleet); /* the default stays the full-rate "*" */
    EMS_CHECK_INT(
        sub_text("{\"type\":\"subscribe\",\"devices\":[\"a\"],\"mode\":\"live\"}", &s, &err), ==,
        0);
    EMS_CHECK(!s.all && !s.fleet);

    EMS_CHECK_INT(
        sub_text("{\"type\":\"subscribe\",\"devices\":[\"a\"],\"mode\":\"fleet\"}", &s, &err), ==,
        EMS_EINVAL);
    EMS_CHECK_STR(err.path, "devices");
    EMS_CHECK(strstr(err.reason, "\"*\"") != NULL);
    EMS_CHECK_INT(
        sub_text("{\"type\":\"subscribe\",\"devices\":\"*\",\"mode\":\"Fleet\"}", &s, &err), ==,
        EMS_EINVAL);
    EMS_CHECK_STR(err.path, "mode");
    EMS_CHECK_STR(err.reason, "\"Fleet\" is not \"live\" or \"fleet\"");
    EMS_CHECK_INT(sub_text("{\"type\":\"subscribe\",\"devices\":\"*\",\"mode\":null}", &s, &err),
                  ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "mode");
    EMS_CHECK_STR(err.reason, "expected \"live\" or \"fleet\", got null");
    /* A bad id is reported before the mode. */
    EMS_CHECK_INT(
        sub_text("{\"type\":\"subscribe\",\"devices\":[\"a b\"],\"mode\":\"x\"}", &s, &err), ==,
        EMS_EINVAL);
    EMS_CHECK_STR(err.path, "devices[0]");
}

static ems_dash_fleet_item_t sample(const char *id, double soc)
{
    ems_dash_fleet_item_t it;
    memset(&it, 0, sizeof it);
    snprintf(it.device_id, sizeof it.device_id, "%s", id);
    it.online = true;
    it.since_ms = 1769860800000;
    it.has_telemetry = true;
    it.timestamp_ms = 1769860801250;
    it.state = EMS_STATE_CHARGING;
    it.mode = EMS_MODE_AUTO;
    it.error_flags = EMS_FAULT_OVERHEAT | EMS_FAULT_GRID_FAULT;
    it.soc = soc;
    it.battery_power = 558.6;
    it.grid_power = -200;
    return it;
}

typedef struct {
    ems_dash_fleet_item_t items[64];
    size_t n;
} collect_t;

static void collect(void *ud, const ems_dash_fleet_item_t *it)
{
    collect_t *c = ud;
    if (c->n < 64)
        c->items[c->n++] = *it;
}

static int fleet_text(const char *text, collect_t *c, ems_verr_t *err)
{
    json_t *o = ems_jr_parse(text, strlen(text), err);
    if (!o)
        return EMS_EINVAL;
    int rc = ems_dash_fleet_from_json(o, c ? collect : NULL, c, err);
    json_decref(o);
    return rc;
}

static void test_item_encode(void)
{
    char buf[EMS_DASH_FLEET_ITEM_MAX];
    ems_dash_fleet_item_t it = sample("ems_001", 85.5);
    int n = ems_dash_fleet_item_encode(&it, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK_STR(
        buf, "{\"device_id\":\"ems_001\",\"online\":true,\"since\":\"2026-01-31T12:00:00.000Z\","
             "\"timestamp\":\"2026-01-31T12:00:01.250Z\",\"state\":\"CHARGING\",\"mode\":"
             "\"AUTO\",\"error_flags\":[\"OVERHEAT\",\"GRID_FAULT\"],\"soc\":85.5,"
             "\"battery_power\":558.6,\"grid_power\":-200}");
    /* Without telemetry and without since: the online state alone. */
    it.has_telemetry = false;
    it.since_ms = 0;
    it.online = false;
    EMS_CHECK_INT(ems_dash_fleet_item_encode(&it, buf, sizeof buf), >, 0);
    EMS_CHECK_STR(buf, "{\"device_id\":\"ems_001\",\"online\":false}");
    /* The largest item fits the documented bound. */
    it = sample("", 0.30000000000000004);
    memset(it.device_id, 'x', EMS_DEVICE_ID_MAX);
    it.error_flags = EMS_FAULT_ALL;
    it.has_target_mode = it.has_target_power = true;
    it.target_mode = EMS_TARGET_MANUAL_DISCHARGE;
    it.target_power = 999999.99999999988;
    it.battery_power = -999999.99999999988;
    it.grid_power = -9999999.9999999981;
    n = ems_dash_fleet_item_encode(&it, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK_INT(n, <, EMS_DASH_FLEET_ITEM_MAX);
    /* What the decoder would refuse is not encoded. */
    it = sample("ems_001", 100.5);
    EMS_CHECK_INT(ems_dash_fleet_item_encode(&it, buf, sizeof buf), ==, EMS_EINVAL);
    it = sample("a b", 50);
    EMS_CHECK_INT(ems_dash_fleet_item_encode(&it, buf, sizeof buf), ==, EMS_EINVAL);
    it = sample("ems_001", 50);
    it.state = EMS_STATE_COUNT;
    EMS_CHECK_INT(ems_dash_fleet_item_encode(&it, buf, sizeof buf), ==, EMS_EINVAL);
    it = sample("ems_001", 50);
    it.grid_power = NAN;
    EMS_CHECK_INT(ems_dash_fleet_item_encode(&it, buf, sizeof buf), ==, EMS_EINVAL);
    it = sample("ems_001", 50);
    EMS_CHECK_INT(ems_dash_fleet_item_encode(&it, buf, 40), ==, EMS_ENOSPC);
}

static void test_frame_roundtrip(void)
{
    char buf[4096];
    ems_dash_fleet_frame_t f;
    ems_dash_fleet_frame_init(&f, buf, sizeof buf);
    EMS_CHECK_STR(buf + ems_dash_fleet_frame_finish(&f) - 2, "]}");
    EMS_CHECK_STR(buf, "{\"type\":\"fleet\",\"devices\":[]}");
    collect_t c = {.n = 0};
    ems_verr_t err;
    EMS_CHECK_INT(fleet_text(buf, &c, &err), ==, 0);
    EMS_CHECK_INT(c.n, ==, 0);

    ems_dash_fleet_frame_init(&f, buf, sizeof buf);
    ems_dash_fleet_item_t a = sample("ems_001", 10), b = sample("ems_002", 20.25),
                          bad = sample("x y", 1);
    a.has_target_mode = true;
    a.target_mode = EMS_TARGET_MANUAL_CHARGE;
    a.has_target_power = true;
    a.target_power = 1500;
    b.online = false;
    b.has_telemetry = false;
    EMS_CHECK_INT(ems_dash_fleet_frame_add(&f, &a), ==, 0);
    EMS_CHECK_INT(ems_dash_fleet_frame_add(&f, &bad), ==, EMS_EINVAL); /* skipped */
    EMS_CHECK_INT(ems_dash_fleet_frame_add(&f, &b), ==, 0);
    size_t len = ems_dash_fleet_frame_finish(&f);
    EMS_CHECK_INT(len, ==, strlen(buf));
    EMS_CHECK_INT(f.count, ==, 2);
    c.n = 0;
    EMS_CHECK_INT(fleet_text(buf, &c, &err), ==, 0);
    EMS_CHECK_INT(c.n, ==, 2);
    EMS_CHECK(memcmp(&c.items[0], &a, sizeof a) == 0);
    EMS_CHECK(strstr(buf, "\"target_mode\":\"MANUAL_CHARGE\",\"target_power\":1500,") != NULL);
    EMS_CHECK_STR(c.items[1].device_id, "ems_002");
    EMS_CHECK(!c.items[1].online && !c.items[1].has_telemetry && c.items[1].since_ms == b.since_ms);

    /* A frame never passes its capacity: items that do not fit are left
     * for the next frame, and what was built is still a valid frame. */
    char small[600];
    ems_dash_fleet_frame_init(&f, small, sizeof small);
    size_t added = 0;
    while (ems_dash_fleet_frame_add(&f, &a) == 0)
        added++;
    EMS_CHECK_INT(added, >=, 2);
    len = ems_dash_fleet_frame_finish(&f);
    EMS_CHECK_INT(len, <, sizeof small);
    c.n = 0;
    EMS_CHECK_INT(fleet_text(small, &c, &err), ==, 0);
    EMS_CHECK_INT(c.n, ==, added);
}

static void test_fleet_decode_errors(void)
{
    static const struct {
        const char *text, *path;
    } bad[] = {
        {"{\"type\":\"fleet\"}", "devices"},
        {"{\"type\":\"fleet\",\"devices\":{}}", "devices"},
        {"{\"type\":\"telemetry\",\"devices\":[]}", "type"},
        {"{\"type\":\"fleet\",\"devices\":[7]}", "devices[0]"},
        {"{\"type\":\"fleet\",\"devices\":[{\"online\":true}]}", "devices[0].device_id"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\"}]}", "devices[0].online"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":1}]}",
         "devices[0].online"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,\"since\":\"x\"}]}",
         "devices[0].since"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true},"
         "{\"device_id\":\"b\",\"online\":true,\"soc\":5}]}",
         "devices[1].timestamp"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"IDLE\",\"mode\":\"AUTO\","
         "\"error_flags\":[],\"soc\":5,\"battery_power\":0}]}",
         "devices[0].grid_power"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"idle\",\"mode\":\"AUTO\","
         "\"error_flags\":[],\"soc\":5,\"battery_power\":0,\"grid_power\":0}]}",
         "devices[0].state"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"IDLE\",\"mode\":\"AUTO\","
         "\"error_flags\":[\"OVERHEAT\",\"OVERHEAT\"],\"soc\":5,\"battery_power\":0,\"grid_power\":"
         "0}]}",
         "devices[0].error_flags"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"IDLE\",\"mode\":\"AUTO\","
         "\"error_flags\":[\"HOT\"],\"soc\":5,\"battery_power\":0,\"grid_power\":0}]}",
         "devices[0].error_flags[0]"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"IDLE\",\"mode\":\"AUTO\","
         "\"error_flags\":[],\"soc\":100.5,\"battery_power\":0,\"grid_power\":0}]}",
         "devices[0].soc"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"IDLE\",\"mode\":\"AUTO\","
         "\"error_flags\":[],\"soc\":1,\"battery_power\":1000001,\"grid_power\":0}]}",
         "devices[0].battery_power"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"IDLE\",\"mode\":\"AUTO\","
         "\"error_flags\":[],\"target_mode\":\"CHARGE\",\"soc\":1,\"battery_power\":0,\"grid_"
         "power\":0}]}",
         "devices[0].target_mode"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,"
         "\"timestamp\":\"2026-01-31T12:00:01Z\",\"state\":\"IDLE\",\"mode\":\"AUTO\","
         "\"error_flags\":[],\"target_power\":-1,\"soc\":1,\"battery_power\":0,\"grid_power\":0}]}",
         "devices[0].target_power"},
        {"{\"type\":\"fleet\",\"devices\":[{\"device_id\":\"a\",\"online\":true,\"target_mode\":"
         "\"AUTO\"}]}",
         "devices[0].timestamp"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ems_verr_t err;
        EMS_CHECK_INT(fleet_text(bad[i].text, NULL, &err), ==, EMS_EINVAL);
        EMS_CHECK_STR(err.path, bad[i].path);
    }
    /* Unknown members are ignored, as everywhere (forward compatibility). */
    ems_verr_t err;
    EMS_CHECK_INT(fleet_text("{\"type\":\"fleet\",\"x\":1,\"devices\":[{\"device_id\":\"a\","
                             "\"online\":true,\"gateway\":\"g1\"}]}",
                             NULL, &err),
                  ==, 0);
}

/* ------------------------------------------------------------ the hub's coalescer */

static ems_dash_fleet_item_t *update(gw_hub_t *h, const char *id, double soc)
{
    gw_hub_fleet_ent_t *e = gw_hub_fleet_get(h, id, true);
    EMS_CHECK(e != NULL);
    e->item.has_telemetry = true;
    e->item.soc = soc;
    gw_hub_fleet_mark(h, e);
    return &e->item;
}

/* Drains everything pending for s; returns how many, and the soc of `id`
 * as sent (or -1). */
static size_t drain(gw_hub_t *h, gw_hub_subs_t *s, const char *id, double *soc)
{
    size_t n = 0;
    gw_hub_fleet_ent_t *e;
    *soc = -1;
    while ((e = gw_hub_fleet_peek(h, s)) != NULL) {
        if (strcmp(e->item.device_id, id) == 0)
            *soc = e->item.soc;
        gw_hub_fleet_sent(s, e);
        n++;
    }
    return n;
}

static void test_hub_coalesce(void)
{
    gw_hub_t h;
    gw_hub_init(&h);
    gw_hub_subs_t fast, slow, late;
    memset(&fast, 0, sizeof fast);
    memset(&slow, 0, sizeof slow);
    memset(&late, 0, sizeof late);
    EMS_CHECK(!gw_hub_wants_all(&h));
    EMS_CHECK_INT(gw_hub_sub_fleet(&h, &fast), ==, 0);
    EMS_CHECK_INT(gw_hub_sub_fleet(&h, &slow), ==, 0);
    EMS_CHECK_INT(gw_hub_sub_fleet(&h, &fast), ==, 0); /* idempotent */
    EMS_CHECK_INT(h.nfleet, ==, 2);
    EMS_CHECK(gw_hub_wants_all(&h)); /* the bus must carry every device */

    /* 1000 devices, 5 packets each within one interval: one update each. */
    char id[32];
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < 1000; i++) {
            snprintf(id, sizeof id, "d%04d", i);
            update(&h, id, k);
        }
    }
    EMS_CHECK_INT(h.ndirty, ==, 1000);
    gw_hub_fleet_collect(&h);
    EMS_CHECK_INT(h.ndirty, ==, 0);
    EMS_CHECK_INT(fast.npending, ==, 1000);
    double soc;
    EMS_CHECK_INT(drain(&h, &fast, "d0500", &soc), ==, 1000);
    EMS_CHECK_NEAR(soc, 4, 0); /* the latest state */
    EMS_CHECK_INT(fast.npending, ==, 0);

    /* The slow subscriber takes nothing for three intervals while the
     * devices keep sending: still one pending update per device, and it
     * gets the newest values. */
    for (int k = 5; k < 8; k++) {
        for (int i = 0; i < 1000; i++) {
            snprintf(id, sizeof id, "d%04d", i);
            update(&h, id, k);
        }
        gw_hub_fleet_collect(&h);
        EMS_CHECK_INT(slow.npending, ==, 1000);
        EMS_CHECK_INT(drain(&h, &fast, "d0500", &soc), ==, 1000);
        EMS_CHECK_NEAR(soc, k, 0);
    }
    EMS_CHECK_INT(drain(&h, &slow, "d0999", &soc), ==, 1000);
    EMS_CHECK_NEAR(soc, 7, 0);

    /* Only what changed is sent. */
    update(&h, "d0007", 9);
    update(&h, "new_1", 1);
    gw_hub_fleet_collect(&h);
    EMS_CHECK_INT(drain(&h, &fast, "new_1", &soc), ==, 2);
    EMS_CHECK_NEAR(soc, 1, 0);

    /* A late subscriber gets a snapshot of every device. */
    EMS_CHECK_INT(gw_hub_sub_fleet(&h, &late), ==, 0);
    EMS_CHECK_INT(late.npending, ==, 1001);
    EMS_CHECK_INT(drain(&h, &late, "d0007", &soc), ==, 1001);
    EMS_CHECK_NEAR(soc, 9, 0);

    /* Leaving: the pending sets are freed; the hub forgets subscribers. */
    gw_hub_unsub_fleet(&h, &slow);
    EMS_CHECK(!slow.fleet && !slow.pending && slow.npending == 0);
    gw_hub_remove(&h, &fast, &fast);
    gw_hub_remove(&h, &late, &late);
    EMS_CHECK_INT(h.nfleet, ==, 0);
    EMS_CHECK(!gw_hub_wants_all(&h));
    EMS_CHECK(gw_hub_fleet_get(&h, "d0001", false) != NULL); /* entries stay */
    gw_hub_free(&h);
}

int main(void)
{
    EMS_RUN(test_subscribe_mode);
    EMS_RUN(test_item_encode);
    EMS_RUN(test_frame_roundtrip);
    EMS_RUN(test_fleet_decode_errors);
    EMS_RUN(test_hub_coalesce);
    EMS_TEST_END();
}
