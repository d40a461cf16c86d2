/* test_msg_timefmt.c: RFC 3339 UTC timestamps and the clocks. */
#include "ems_test.h"

#include "error.h"
#include "timefmt.h"

static int64_t parse(const char *s)
{
    int64_t ms = -1;
    if (ems_time_parse(s, strlen(s), &ms) != 0)
        EMS_FAIL("refused: %s", s);
    return ms;
}

static bool refused(const char *s)
{
    int64_t ms = 12345;
    return ems_time_parse(s, strlen(s), &ms) == EMS_EINVAL && ms == 12345;
}

static void test_parse_valid(void)
{
    EMS_CHECK_INT(parse("1970-01-01T00:00:00Z"), ==, 0);
    EMS_CHECK_INT(parse("2026-01-31T12:00:01Z"), ==, 1769860801000LL);
    EMS_CHECK_INT(parse("2026-01-31T12:00:01.250Z"), ==, 1769860801250LL);
    EMS_CHECK_INT(parse("2026-01-31T12:00:01.2Z"), ==, 1769860801200LL);
    /* Digits beyond ms are truncated, never rounded up into the next second. */
    EMS_CHECK_INT(parse("2026-01-31T12:00:01.999999999Z"), ==, 1769860801999LL);
    EMS_CHECK_INT(parse("1969-12-31T23:59:59.999Z"), ==, -1);
    EMS_CHECK_INT(parse("2000-02-29T00:00:00Z"), ==, 951782400000LL);
    EMS_CHECK_INT(parse("2024-02-29T23:59:59Z"), >, 0);
    EMS_CHECK_INT(parse("0000-01-01T00:00:00Z"), ==, EMS_TIME_MIN_MS);
    EMS_CHECK_INT(parse("9999-12-31T23:59:59.999Z"), ==, EMS_TIME_MAX_MS);
    /* Not NUL-terminated: only len bytes are read. */
    int64_t ms;
    EMS_CHECK_INT(ems_time_parse("1970-01-01T00:00:01Zjunk", 20, &ms), ==, 0);
    EMS_CHECK_INT(ms, ==, 1000);
}

static void test_parse_refused(void)
{
    const char *bad[] = {
        "", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-32T00:00:00Z",
        "2026-01-00T00:00:00Z", "2026-01-31T24:00:00Z", "2026-01-31T12:60:00Z",
        "2026-12-31T23:59:60Z", "2026-01-31t12:00:01Z", "2026-01-31T12:00:01z",
        "2026-01-31 12:00:01Z", "2026-01-31T12:00:01", "2026-01-31T12:00:01+00:00",
        "2026-01-31T12:00:01.Z", "2026-01-31T12:00:01.1234567890Z", "26-01-31T12:00:01Z",
        "2026-1-31T12:00:01Z", "+2026-01-31T12:00:01Z", "2026-01-31T12:00:01Z ",
        "2026-01-31T12:00:01Z\n", "2026-01-31T12:0a:01Z", "-001-01-01T00:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (!refused(bad[i]))
            EMS_FAIL("accepted: \"%s\"", bad[i]);
}

static void test_format(void)
{
    char buf[EMS_TIME_STR_MAX];
    EMS_CHECK_INT(ems_time_format(0, buf, sizeof buf), ==, 24);
    EMS_CHECK_STR(buf, "1970-01-01T00:00:00.000Z");
    EMS_CHECK_INT(ems_time_format(-1, buf, sizeof buf), ==, 24);
    EMS_CHECK_STR(buf, "1969-12-31T23:59:59.999Z");
    ems_time_format(1769860801250LL, buf, sizeof buf);
    EMS_CHECK_STR(buf, "2026-01-31T12:00:01.250Z");
    ems_time_format(EMS_TIME_MIN_MS, buf, sizeof buf);
    EMS_CHECK_STR(buf, "0000-01-01T00:00:00.000Z");
    ems_time_format(EMS_TIME_MAX_MS, buf, sizeof buf);
    EMS_CHECK_STR(buf, "9999-12-31T23:59:59.999Z");
    EMS_CHECK_INT(ems_time_format(EMS_TIME_MAX_MS + 1, buf, sizeof buf), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_time_format(EMS_TIME_MIN_MS - 1, buf, sizeof buf), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_time_format(0, buf, 24), ==, EMS_ENOSPC);
}

/* Every day of 0000..9999 at a pseudo-random time survives format+parse. */
static void test_round_trip(void)
{
    char buf[EMS_TIME_STR_MAX];
    uint64_t x = 88172645463325252ULL;
    for (int64_t day = EMS_TIME_MIN_MS / 86400000; day <= EMS_TIME_MAX_MS / 86400000; day++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t ms = day * 86400000 + (int64_t)(x % 86400000);
        EMS_CHECK_INT(ems_time_format(ms, buf, sizeof buf), ==, 24);
        EMS_CHECK_INT(parse(buf), ==, ms);
    }
}

static void test_clocks(void)
{
    int64_t now = ems_time_now_ms();
    EMS_CHECK_INT(now, >, 1700000000000LL); /* after 2023 */
    int64_t a = ems_time_mono_ms();
    usleep(20000);
    int64_t b = ems_time_mono_ms();
    EMS_CHECK_INT(b - a, >=, 19);
    EMS_CHECK_INT(b - a, <, 5000);
}

int main(void)
{
    EMS_RUN(test_parse_valid);
    EMS_RUN(test_parse_refused);
    EMS_RUN(test_format);
    EMS_RUN(test_round_trip);
    EMS_RUN(test_clocks);
    EMS_TEST_END();
}
