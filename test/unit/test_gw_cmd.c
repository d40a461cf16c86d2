/* Unit tests: the command tracker's lifecycle (gw_cmd), with no sockets:
 * delivery and status changes are recorded by the test's callbacks. */
#include "ems_test.h"

#include "error.h"
#include "gw_cmd.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int deliver_ok; /* what deliver returns: 1 -> 0 (sent), 0 -> -1 */
    int delivered;
    int changed;
    char last_delivered[80];
    gw_cmd_status_t last_status;
} rec_t;

static int deliver(void *ud, const gw_cmd_t *c)
{
    rec_t *r = ud;
    if (!r->deliver_ok)
        return -1;
    r->delivered++;
    snprintf(r->last_delivered, sizeof r->last_delivered, "%s", c->cmd.command_id);
    return 0;
}

static void changed(void *ud, const gw_cmd_t *c)
{
    rec_t *r = ud;
    r->changed++;
    r->last_status = c->status;
}

static const gw_cmds_ops_t ops = {deliver, changed};

static gw_cmds_t *mk(rec_t *r, size_t retain)
{
    memset(r, 0, sizeof *r);
    r->deliver_ok = 1;
    gw_cmds_cfg_t cfg = {.answer_ms = 10000, .complete_ms = 60000, .retain = retain};
    gw_cmds_t *t = gw_cmds_new(&cfg, &ops, r);
    EMS_CHECK(t != NULL);
    return t;
}

static gw_cmd_req_t req_set_mode(const char *dev, const char *id, double power, bool online,
                                 int64_t ttl)
{
    gw_cmd_req_t q;
    memset(&q, 0, sizeof q);
    q.device_id = dev;
    q.created_by = "ada";
    q.online = online;
    q.ttl_s = ttl;
    q.cmd.action = EMS_ACTION_SET_MODE;
    q.cmd.target_mode = EMS_TARGET_MANUAL_DISCHARGE;
    q.cmd.has_target_power = true;
    q.cmd.target_power = power;
    if (id)
        snprintf(q.cmd.command_id, sizeof q.cmd.command_id, "%s", id);
    return q;
}

static ems_command_result_t result(const char *id, ems_result_status_t s)
{
    ems_command_result_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.command_id, sizeof r.command_id, "%s", id);
    r.status = s;
    if (s == EMS_RESULT_REJECTED || s == EMS_RESULT_FAILED) {
        r.has_reason = true;
        r.reason = EMS_REASON_POWER_LIMIT;
        r.has_message = true;
        strcpy(r.message, "too much");
    }
    return r;
}

static void test_online_happy_path(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", NULL, 500, true, 0);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 1000, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_SENT);
    EMS_CHECK_INT(r.delivered, ==, 1);
    EMS_CHECK(strncmp(c->cmd.command_id, "c_", 2) == 0);
    EMS_CHECK_STR(r.last_delivered, c->cmd.command_id);
    EMS_CHECK_INT(c->deadline_ms, ==, 11000);
    char id[80];
    strcpy(id, c->cmd.command_id);
    ems_command_result_t a = result(id, EMS_RESULT_ACCEPTED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &a, 1500), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_ACCEPTED);
    EMS_CHECK_INT(c->deadline_ms, ==, 61500);
    /* A repeated answer changes nothing. */
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &a, 1600), ==, 0);
    ems_command_result_t done = result(id, EMS_RESULT_COMPLETED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &done, 2000), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_COMPLETED);
    EMS_CHECK_INT(c->nhist, ==, 3);
    EMS_CHECK_INT(c->hist[0].status, ==, GW_CMD_SENT);
    EMS_CHECK_INT(c->hist[2].status, ==, GW_CMD_COMPLETED);
    EMS_CHECK_INT(r.changed, ==, 3);
    EMS_CHECK_INT(gw_cmds_count(t, GW_CMD_COMPLETED), ==, 1);
    EMS_CHECK_INT(gw_cmds_count(t, GW_CMD_SENT), ==, 0);
    /* Final: a late answer is refused and changes nothing. */
    ems_command_result_t late = result(id, EMS_RESULT_FAILED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &late, 3000), ==, EMS_EINVAL);
    EMS_CHECK_INT(c->status, ==, GW_CMD_COMPLETED);
    gw_cmds_free(t);
}

static void test_offline_fails_at_once(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "mine-1", 500, false, 0);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 1000, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_FAILED);
    EMS_CHECK(strstr(c->message, "offline") != NULL);
    EMS_CHECK_INT(r.delivered, ==, 0);
    EMS_CHECK_INT(r.changed, ==, 1);
    gw_cmds_free(t);
}

static void test_queued_then_delivered_on_reconnect(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "q1", 500, false, 300);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 1000, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_QUEUED);
    EMS_CHECK_INT(c->expires_ms, ==, 301000);
    EMS_CHECK(c->cmd.has_expires_at);
    EMS_CHECK_INT(c->cmd.expires_at_ms, ==, 301000);
    EMS_CHECK_INT(gw_cmds_next_deadline(t), ==, 301000);
    gw_cmds_online(t, "other", 2000);
    EMS_CHECK_INT(c->status, ==, GW_CMD_QUEUED);
    gw_cmds_online(t, "d1", 5000);
    EMS_CHECK_INT(c->status, ==, GW_CMD_SENT);
    EMS_CHECK_INT(r.delivered, ==, 1);
    EMS_CHECK_INT(c->nhist, ==, 2);
    EMS_CHECK_INT(c->hist[0].status, ==, GW_CMD_QUEUED);
    EMS_CHECK_INT(gw_cmds_next_deadline(t), ==, 15000);
    gw_cmds_free(t);
}

static void test_queued_expires(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "q1", 500, false, 2);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 1000, &c), ==, 0);
    gw_cmds_tick(t, 2999);
    EMS_CHECK_INT(c->status, ==, GW_CMD_QUEUED);
    gw_cmds_tick(t, 3000);
    EMS_CHECK_INT(c->status, ==, GW_CMD_EXPIRED);
    /* Coming back later does not send it. */
    gw_cmds_online(t, "d1", 4000);
    EMS_CHECK_INT(r.delivered, ==, 0);
    EMS_CHECK_INT(gw_cmds_next_deadline(t), ==, INT64_MAX);
    gw_cmds_free(t);
}

static void test_reconnect_after_ttl_expires_without_tick(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "q1", 500, false, 2);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 1000, &c), ==, 0);
    gw_cmds_online(t, "d1", 3500);
    EMS_CHECK_INT(c->status, ==, GW_CMD_EXPIRED);
    EMS_CHECK_INT(r.delivered, ==, 0);
    gw_cmds_free(t);
}

static void test_timeouts(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "a", 500, true, 0);
    gw_cmd_t *a, *b;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &a), ==, 0);
    q = req_set_mode("d1", "b", 600, true, 0);
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &b), ==, 0);
    ems_command_result_t acc = result("b", EMS_RESULT_ACCEPTED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &acc, 5000), ==, 0);
    gw_cmds_tick(t, 9999);
    EMS_CHECK_INT(a->status, ==, GW_CMD_SENT);
    gw_cmds_tick(t, 10000);
    EMS_CHECK_INT(a->status, ==, GW_CMD_TIMED_OUT);
    EMS_CHECK(strstr(a->message, "no answer") != NULL);
    EMS_CHECK_INT(b->status, ==, GW_CMD_ACCEPTED);
    gw_cmds_tick(t, 65000);
    EMS_CHECK_INT(b->status, ==, GW_CMD_TIMED_OUT);
    EMS_CHECK(strstr(b->message, "not completed") != NULL);
    gw_cmds_free(t);
}

/* A command another gateway created, adopted when that gateway is gone:
 * no report of the status it starts at, then the device's answer (or a
 * time-out) is recorded here. */
static void test_adopt(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "far", 500, true, 0);
    EMS_CHECK_INT(gw_cmds_adopt(t, &q.cmd, "d1", GW_CMD_ACCEPTED, 1000), ==, 0);
    EMS_CHECK_INT(r.changed, ==, 0); /* the origin reported "accepted" */
    EMS_CHECK_INT(gw_cmds_adopt(t, &q.cmd, "d1", GW_CMD_ACCEPTED, 1000), ==, EMS_EEXIST);
    gw_cmd_t *c = gw_cmds_find(t, "far");
    EMS_CHECK(c && c->status == GW_CMD_ACCEPTED && c->deadline_ms == 61000);
    EMS_CHECK_INT(gw_cmds_count(t, GW_CMD_ACCEPTED), ==, 1);
    ems_command_result_t done = result("far", EMS_RESULT_COMPLETED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &done, 2000), ==, 0);
    EMS_CHECK_INT(r.changed, ==, 1);
    EMS_CHECK_INT(r.last_status, ==, GW_CMD_COMPLETED);
    EMS_CHECK_INT(c->nhist, ==, 2);
    /* adopted at "sent": the answer deadline applies */
    q = req_set_mode("d1", "far2", 500, true, 0);
    EMS_CHECK_INT(gw_cmds_adopt(t, &q.cmd, "d1", GW_CMD_SENT, 5000), ==, 0);
    gw_cmds_tick(t, 15000);
    EMS_CHECK_INT(gw_cmds_find(t, "far2")->status, ==, GW_CMD_TIMED_OUT);
    EMS_CHECK_INT(gw_cmds_adopt(t, &q.cmd, "d1", GW_CMD_COMPLETED, 5000), ==, EMS_EINVAL);
    gw_cmds_free(t);
}

static void test_rejected(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "x", 9000, true, 0);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    ems_command_result_t rej = result("x", EMS_RESULT_REJECTED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &rej, 100), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_REJECTED);
    EMS_CHECK_STR(c->reason, "POWER_LIMIT");
    EMS_CHECK_STR(c->message, "too much");
    char json[GW_CMD_JSON_MAX];
    EMS_CHECK(gw_cmd_to_json(c, json, sizeof json) > 0);
    EMS_CHECK(strstr(json, "\"status\":\"rejected\"") != NULL);
    EMS_CHECK(strstr(json, "\"reason\":\"POWER_LIMIT\"") != NULL);
    EMS_CHECK(strstr(json, "\"target_power\":9000") != NULL);
    EMS_CHECK(strstr(json, "\"expires_at\":null") != NULL);
    gw_cmds_free(t);
}

/* The audit events: the creation with the user as actor, then each change
 * with the device (its answers) or the gateway (timeouts) as actor. */
static void test_event_json(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "ev1", 500, true, 0);
    q.created_by = "alice";
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 1000, &c), ==, 0);
    char json[GW_CMD_JSON_MAX];
    EMS_CHECK_INT(c->nhist, ==, 1); /* created and sent at once: one change */
    EMS_CHECK(gw_cmd_event_json(c, json, sizeof json) > 0);
    EMS_CHECK(strncmp(json, "{\"type\":\"command\",\"command_id\":\"ev1\",\"device_id\":\"d1\"",
                      49) == 0);
    EMS_CHECK(
        strstr(json, "\"payload\":{\"target_mode\":\"MANUAL_DISCHARGE\",\"target_power\":500}") !=
        NULL);
    EMS_CHECK(strstr(json, "\"status\":\"sent\",\"actor\":\"alice\"}") != NULL);
    EMS_CHECK(strstr(json, "\"expires_at\"") == NULL); /* none: left out, not null */
    ems_command_result_t rej = result("ev1", EMS_RESULT_REJECTED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &rej, 1100), ==, 0);
    EMS_CHECK(gw_cmd_event_json(c, json, sizeof json) > 0);
    EMS_CHECK(strstr(json, "{\"type\":\"command_status\",\"command_id\":\"ev1\",\"status\":"
                           "\"rejected\",\"at\":\"") == json);
    EMS_CHECK(
        strstr(json, "\"reason\":\"POWER_LIMIT\",\"message\":\"too much\",\"actor\":\"d1\"}") !=
        NULL);
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    EMS_CHECK(o != NULL);
    json_decref(o);
    EMS_CHECK_INT(gw_cmd_event_json(c, json, 20), ==, EMS_ENOSPC);
    gw_cmds_free(t);
}

static void test_idempotent_ids(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "retry-1", 500, true, 0);
    gw_cmd_t *c, *c2;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 10, &c2), ==, 1);
    EMS_CHECK(c == c2);
    EMS_CHECK_INT(r.delivered, ==, 1); /* not sent twice */
    gw_cmd_req_t other = req_set_mode("d1", "retry-1", 700, true, 0);
    EMS_CHECK_INT(gw_cmds_submit(t, &other, 20, &c2), ==, EMS_EEXIST);
    gw_cmd_req_t otherdev = req_set_mode("d2", "retry-1", 500, true, 0);
    EMS_CHECK_INT(gw_cmds_submit(t, &otherdev, 20, &c2), ==, EMS_EEXIST);
    /* With a TTL the stored command has expires_at; the retry does not:
     * still the same body. */
    gw_cmd_req_t ttl = req_set_mode("d1", "retry-2", 500, false, 60);
    EMS_CHECK_INT(gw_cmds_submit(t, &ttl, 0, &c), ==, 0);
    EMS_CHECK_INT(gw_cmds_submit(t, &ttl, 5, &c2), ==, 1);
    gw_cmds_free(t);
}

static void test_device_speaks_for_itself(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "k", 500, true, 0);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    ems_command_result_t a = result("k", EMS_RESULT_COMPLETED);
    EMS_CHECK_INT(gw_cmds_result(t, "d2", &a, 1), ==, EMS_EPERM);
    EMS_CHECK_INT(c->status, ==, GW_CMD_SENT);
    ems_command_result_t u = result("nope", EMS_RESULT_COMPLETED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &u, 1), ==, EMS_ENOENT);
    gw_cmds_free(t);
}

static void test_resend_sent_on_reconnect(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "s", 500, true, 0);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    EMS_CHECK_INT(r.delivered, ==, 1);
    gw_cmds_online(t, "d1", 100);
    EMS_CHECK_INT(r.delivered, ==, 2);
    EMS_CHECK_INT(c->status, ==, GW_CMD_SENT);
    EMS_CHECK_INT(c->deadline_ms, ==, 10000); /* the deadline does not move */
    gw_cmds_free(t);
}

static void test_undeliverable_online(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    r.deliver_ok = 0;
    gw_cmd_req_t q = req_set_mode("d1", "u", 500, true, 0);
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_FAILED);
    /* With a TTL it waits instead. */
    q = req_set_mode("d1", "u2", 500, true, 10);
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_QUEUED);
    gw_cmds_free(t);
}

/* gw_bus.c's hooks: a failure message of the caller's for an undeliverable
 * command (the message bus is down), and failing a command from outside
 * (the gateway that has the device did not acknowledge it). */
static void test_bus_hooks(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 100);
    gw_cmd_req_t q = req_set_mode("d1", "b1", 500, false, 0);
    q.offline_msg = "message bus unavailable";
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_FAILED);
    EMS_CHECK_STR(c->message, "message bus unavailable");
    /* delivered: offline_msg is not used */
    q = req_set_mode("d1", "b2", 500, true, 0);
    q.offline_msg = "unused";
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_SENT);
    int changes = r.changed;
    EMS_CHECK_INT(gw_cmds_fail(t, "b2", "UNREACHABLE", "no ack", 500), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_FAILED);
    EMS_CHECK_STR(c->reason, "UNREACHABLE");
    EMS_CHECK_STR(c->message, "no ack");
    EMS_CHECK_INT(r.changed, ==, changes + 1);
    /* final: nothing changes; unknown: ENOENT */
    EMS_CHECK_INT(gw_cmds_fail(t, "b2", "X", "again", 600), ==, EMS_EINVAL);
    EMS_CHECK_STR(c->message, "no ack");
    EMS_CHECK_INT(gw_cmds_fail(t, "nope", "X", "y", 600), ==, EMS_ENOENT);
    /* online but not deliverable: the caller's message too */
    r.deliver_ok = 0;
    q = req_set_mode("d1", "b3", 500, true, 0);
    q.offline_msg = "could not be forwarded";
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 0, &c), ==, 0);
    EMS_CHECK_INT(c->status, ==, GW_CMD_FAILED);
    EMS_CHECK_STR(c->message, "could not be forwarded");
    r.deliver_ok = 1;
    c = gw_cmds_find(t, "b2");
    /* a late answer after the failure is refused */
    ems_command_result_t a = result("b2", EMS_RESULT_ACCEPTED);
    EMS_CHECK_INT(gw_cmds_result(t, "d1", &a, 700), ==, EMS_EINVAL);
    gw_cmds_free(t);
}

static void test_retention(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 3);
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "k%d", i);
        gw_cmd_req_t q = req_set_mode("d1", id, 500, false, 0); /* fails at once */
        gw_cmd_t *c;
        EMS_CHECK_INT(gw_cmds_submit(t, &q, i, &c), ==, 0);
    }
    EMS_CHECK(gw_cmds_find(t, "k0") == NULL);
    EMS_CHECK(gw_cmds_find(t, "k6") == NULL);
    EMS_CHECK(gw_cmds_find(t, "k7") != NULL);
    EMS_CHECK(gw_cmds_find(t, "k9") != NULL);
    EMS_CHECK_INT(gw_cmds_count(t, GW_CMD_FAILED), ==, 3);
    gw_cmds_free(t);
}

static void test_reset_error_json(void)
{
    rec_t r;
    gw_cmds_t *t = mk(&r, 10);
    gw_cmd_req_t q;
    memset(&q, 0, sizeof q);
    q.device_id = "d1";
    q.created_by = "ada";
    q.online = false;
    q.ttl_s = 60;
    q.cmd.action = EMS_ACTION_RESET_ERROR;
    gw_cmd_t *c;
    EMS_CHECK_INT(gw_cmds_submit(t, &q, 1769860800000LL, &c), ==, 0);
    char json[GW_CMD_JSON_MAX];
    EMS_CHECK(gw_cmd_to_json(c, json, sizeof json) > 0);
    EMS_CHECK(strstr(json, "\"action\":\"RESET_ERROR\",\"payload\":{}") != NULL);
    EMS_CHECK(strstr(json, "\"status\":\"queued\"") != NULL);
    EMS_CHECK(strstr(json, "\"created_at\":\"2026-01-31T12:00:00.000Z\"") != NULL);
    EMS_CHECK(strstr(json, "\"expires_at\":\"2026-01-31T12:01:00.000Z\"") != NULL);
    EMS_CHECK(strstr(json, "\"created_by\":\"ada\"") != NULL);
    gw_cmds_free(t);
}

int main(void)
{
    EMS_RUN(test_online_happy_path);
    EMS_RUN(test_offline_fails_at_once);
    EMS_RUN(test_queued_then_delivered_on_reconnect);
    EMS_RUN(test_queued_expires);
    EMS_RUN(test_reconnect_after_ttl_expires_without_tick);
    EMS_RUN(test_timeouts);
    EMS_RUN(test_adopt);
    EMS_RUN(test_rejected);
    EMS_RUN(test_event_json);
    EMS_RUN(test_idempotent_ids);
    EMS_RUN(test_device_speaks_for_itself);
    EMS_RUN(test_resend_sent_on_reconnect);
    EMS_RUN(test_undeliverable_online);
    EMS_RUN(test_bus_hooks);
    EMS_RUN(test_retention);
    EMS_RUN(test_reset_error_json);
    EMS_TEST_END();
}
