/* test_msg_command.c: commands and command results. */
#include "ems_test.h"

#include "command.h"
#include "command_result.h"
#include "error.h"
#include "timefmt.h"

static const char SET_MODE[] = "{\"command_id\":\"cmd_8293\",\"action\":\"SET_MODE\","
                               "\"payload\":{\"target_mode\":\"MANUAL_DISCHARGE\",\"target_power\":500}}";
static const char RESET[] = "{\"command_id\":\"cmd_8294\",\"action\":\"RESET_ERROR\",\"payload\":{}}";

static const char *refused(const char *text)
{
    static char out[512];
    ems_command_t c;
    ems_verr_t err;
    if (ems_command_decode(text, strlen(text), &c, &err) != EMS_EINVAL)
        EMS_FAIL("accepted: %s", text);
    return ems_verr_format(&err, out, sizeof out);
}

static void test_seed_commands(void)
{
    ems_command_t c;
    ems_verr_t err;
    EMS_CHECK_INT(ems_command_decode(SET_MODE, strlen(SET_MODE), &c, &err), ==, 0);
    EMS_CHECK_STR(c.command_id, "cmd_8293");
    EMS_CHECK_INT(c.action, ==, EMS_ACTION_SET_MODE);
    EMS_CHECK_INT(c.target_mode, ==, EMS_TARGET_MANUAL_DISCHARGE);
    EMS_CHECK(c.has_target_power && c.target_power == 500);
    EMS_CHECK(!c.has_expires_at);
    char buf[EMS_COMMAND_JSON_MAX];
    EMS_CHECK_INT(ems_command_encode(&c, buf, sizeof buf), ==, (int)strlen(SET_MODE));
    EMS_CHECK_STR(buf, SET_MODE); /* same member order and number text */
    EMS_CHECK_INT(ems_command_decode(RESET, strlen(RESET), &c, &err), ==, 0);
    EMS_CHECK_INT(c.action, ==, EMS_ACTION_RESET_ERROR);
    EMS_CHECK_INT(ems_command_encode(&c, buf, sizeof buf), >, 0);
    EMS_CHECK_STR(buf, RESET);
}

static void test_command_rules(void)
{
    EMS_CHECK_STR(refused("{\"command_id\":\"c\",\"action\":\"SET_MODE\","
                          "\"payload\":{\"target_mode\":\"MANUAL_CHARGE\"}}"),
                  "payload.target_power: required member is missing for MANUAL_CHARGE");
    EMS_CHECK_STR(refused("{\"command_id\":\"c\",\"action\":\"RESET_ERROR\",\"payload\":{\"x\":1}}"),
                  "payload: must be an empty object for RESET_ERROR");
    EMS_CHECK_STR(refused("{\"command_id\":\"c\",\"action\":\"REBOOT\",\"payload\":{}}"),
                  "action: \"REBOOT\" is not one of SET_MODE, RESET_ERROR");
    EMS_CHECK_STR(refused("{\"command_id\":\"c d\",\"action\":\"RESET_ERROR\",\"payload\":{}}"),
                  "command_id: \"c d\" is not 1..64 characters of [A-Za-z0-9_.:-]");
    EMS_CHECK_STR(refused("{\"command_id\":\"c\",\"action\":\"SET_MODE\","
                          "\"payload\":{\"target_mode\":\"AUTO\",\"target_power\":-1}}"),
                  "payload.target_power: -1 is below the minimum 0");
    EMS_CHECK_STR(refused("{\"command_id\":\"c\",\"action\":\"SET_MODE\",\"payload\":{}}"),
                  "payload.target_mode: required member is missing");
    EMS_CHECK_STR(refused("{\"command_id\":\"c\",\"action\":\"RESET_ERROR\",\"payload\":{},"
                          "\"expires_at\":\"soon\"}"),
                  "expires_at: \"soon\" is not an RFC 3339 UTC timestamp");
    /* AUTO and MANUAL_IDLE need no power; a colon is allowed in a command id. */
    ems_command_t c;
    ems_verr_t err;
    const char *ok = "{\"command_id\":\"web:1\",\"action\":\"SET_MODE\","
                     "\"payload\":{\"target_mode\":\"MANUAL_IDLE\"},\"expires_at\":\"2026-01-31T12:05:00Z\"}";
    EMS_CHECK_INT(ems_command_decode(ok, strlen(ok), &c, &err), ==, 0);
    EMS_CHECK(!c.has_target_power && c.has_expires_at);
    EMS_CHECK(ems_command_id_valid("a:b.c-d_e", 9));
    EMS_CHECK(!ems_command_id_valid("", 0));
}

static void test_command_check_and_encode(void)
{
    ems_command_t c = {.action = EMS_ACTION_SET_MODE, .target_mode = EMS_TARGET_MANUAL_CHARGE};
    strcpy(c.command_id, "x1");
    char buf[EMS_COMMAND_JSON_MAX];
    ems_verr_t err;
    EMS_CHECK_INT(ems_command_check(&c, &err), ==, EMS_EINVAL); /* needs target_power */
    EMS_CHECK_STR(err.path, "payload.target_power");
    EMS_CHECK_INT(ems_command_encode(&c, buf, sizeof buf), ==, EMS_EINVAL);
    c.has_target_power = true;
    c.target_power = NAN;
    EMS_CHECK_INT(ems_command_encode(&c, buf, sizeof buf), ==, EMS_EINVAL);
    c.target_power = 1234.5;
    c.has_expires_at = true;
    c.expires_at_ms = 1769860800000LL;
    EMS_CHECK_INT(ems_command_encode(&c, buf, 30), ==, EMS_ENOSPC);
    int n = ems_command_encode(&c, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK(strstr(buf, "\"expires_at\":\"2026-01-31T12:00:00.000Z\"") != NULL);
    ems_command_t back;
    EMS_CHECK_INT(ems_command_decode(buf, (size_t)n, &back, &err), ==, 0);
    EMS_CHECK(ems_command_equal(&c, &back));
    c.action = EMS_ACTION_COUNT;
    EMS_CHECK_INT(ems_command_check(&c, &err), ==, EMS_EINVAL);
    ems_action_t a;
    EMS_CHECK_INT(ems_action_parse("RESET_ERROR", &a), ==, 0);
    EMS_CHECK_STR(ems_action_name(a), "RESET_ERROR");
    EMS_CHECK(ems_action_name(EMS_ACTION_COUNT) == NULL);
}

static const char RESULT[] =
    "{\"type\":\"command_result\",\"command_id\":\"cmd_8293\",\"status\":\"rejected\","
    "\"reason\":\"POWER_LIMIT\",\"message\":\"target_power 9000 W is above the maximum "
    "discharge power 5000 W\",\"timestamp\":\"2026-01-31T12:00:02.120Z\"}";

static void test_result_decode_encode(void)
{
    ems_command_result_t r, back;
    ems_verr_t err;
    EMS_CHECK_INT(ems_command_result_decode(RESULT, strlen(RESULT), &r, &err), ==, 0);
    EMS_CHECK_INT(r.status, ==, EMS_RESULT_REJECTED);
    EMS_CHECK(r.has_reason && r.reason == EMS_REASON_POWER_LIMIT);
    EMS_CHECK(r.has_message && strstr(r.message, "9000 W") != NULL);
    char buf[EMS_RESULT_JSON_MAX];
    EMS_CHECK_INT(ems_command_result_encode(&r, buf, sizeof buf), ==, (int)strlen(RESULT));
    EMS_CHECK_STR(buf, RESULT);
    /* A message with quotes, control characters and 4-byte UTF-8 survives. */
    strcpy(r.message, "say \"hi\"\n\x01 \xf0\x9f\x98\x80 \\");
    int n = ems_command_result_encode(&r, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK_INT(ems_command_result_decode(buf, (size_t)n, &back, &err), ==, 0);
    EMS_CHECK(ems_command_result_equal(&r, &back));
}

static void test_result_rules(void)
{
    ems_command_result_t r;
    ems_verr_t err;
    const char *no_reason = "{\"type\":\"command_result\",\"command_id\":\"c\",\"status\":\"failed\","
                            "\"timestamp\":\"2026-01-31T12:00:02Z\"}";
    EMS_CHECK_INT(ems_command_result_decode(no_reason, strlen(no_reason), &r, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "reason");
    const char *wrong_type = "{\"type\":\"ack\",\"command_id\":\"c\",\"status\":\"accepted\","
                             "\"timestamp\":\"2026-01-31T12:00:02Z\"}";
    EMS_CHECK_INT(ems_command_result_decode(wrong_type, strlen(wrong_type), &r, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "type");
    EMS_CHECK_STR(err.reason, "\"ack\" is not \"command_result\"");
    /* The struct check refuses what the decoder would refuse. */
    memset(&r, 0, sizeof r);
    strcpy(r.command_id, "c");
    r.status = EMS_RESULT_REJECTED;
    EMS_CHECK_INT(ems_command_result_check(&r, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "reason");
    r.has_reason = true;
    r.reason = EMS_REASON_EXPIRED;
    EMS_CHECK_INT(ems_command_result_check(&r, &err), ==, 0);
    r.has_message = true;
    memset(r.message, 'm', 257);
    r.message[257] = '\0';
    EMS_CHECK_INT(ems_command_result_check(&r, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "message");
    strcpy(r.message, "bad \xc3 utf8");
    EMS_CHECK_INT(ems_command_result_check(&r, &err), ==, EMS_EINVAL);
    char buf[EMS_RESULT_JSON_MAX];
    EMS_CHECK_INT(ems_command_result_encode(&r, buf, sizeof buf), ==, EMS_EINVAL);
    /* 256 four-byte characters are within the limit and fit the struct. */
    for (int i = 0; i < 256; i++)
        memcpy(r.message + 4 * i, "\xf0\x9f\x98\x80", 4);
    r.message[1024] = '\0';
    EMS_CHECK_INT(ems_command_result_check(&r, &err), ==, 0);
    EMS_CHECK_INT(ems_command_result_encode(&r, buf, sizeof buf), >, 0);
    ems_result_status_t s;
    ems_result_reason_t why;
    EMS_CHECK_INT(ems_result_status_parse("completed", &s), ==, 0);
    EMS_CHECK_INT(ems_result_reason_parse("NOT_IN_ERROR", &why), ==, 0);
    EMS_CHECK_STR(ems_result_reason_name(why), "NOT_IN_ERROR");
    EMS_CHECK_INT(ems_result_status_parse("COMPLETED", &s), ==, EMS_EINVAL);
}

int main(void)
{
    EMS_RUN(test_seed_commands);
    EMS_RUN(test_command_rules);
    EMS_RUN(test_command_check_and_encode);
    EMS_RUN(test_result_decode_encode);
    EMS_RUN(test_result_rules);
    EMS_TEST_END();
}
