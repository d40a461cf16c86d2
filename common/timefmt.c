/* timefmt.c: RFC 3339 UTC timestamps (see timefmt.h). */
#include "timefmt.h"

#include "error.h"

#include <stdio.h>
#include <time.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): exact for every year, no table, no timegm(). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)((int64_t)yoe + era * 400 + (*m <= 2));
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int y, unsigned m)
{
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Reads exactly `n` decimal digits at s[*i]; -1 if any is not a digit. */
static int digits(const char *s, size_t len, size_t *i, int n)
{
    int v = 0;
    for (int k = 0; k < n; k++, (*i)++) {
        if (*i >= len || s[*i] < '0' || s[*i] > '9')
            return -1;
        v = v * 10 + (s[*i] - '0');
    }
    return v;
}

static bool expect(const char *s, size_t len, size_t *i, char c)
{
    if (*i >= len || s[*i] != c)
        return false;
    (*i)++;
    return true;
}

/* The fraction after the seconds: 1..9 digits, truncated to ms. */
static int fraction_ms(const char *s, size_t len, size_t *i)
{
    int ms = 0, n = 0;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        if (n < 3)
            ms = ms * 10 + (s[*i] - '0');
        n++;
        (*i)++;
    }
    if (n < 1 || n > 9)
        return -1;
    for (; n < 3; n++)
        ms *= 10;
    return ms;
}

int ems_time_parse(const char *s, size_t len, int64_t *ms_out)
{
    size_t i = 0;
    int y = digits(s, len, &i, 4);
    if (y < 0 || !expect(s, len, &i, '-'))
        return EMS_EINVAL;
    int mo = digits(s, len, &i, 2);
    if (mo < 1 || mo > 12 || !expect(s, len, &i, '-'))
        return EMS_EINVAL;
    int d = digits(s, len, &i, 2);
    if (d < 1 || (unsigned)d > days_in_month(y, (unsigned)mo) || !expect(s, len, &i, 'T'))
        return EMS_EINVAL;
    int h = digits(s, len, &i, 2);
    if (h < 0 || h > 23 || !expect(s, len, &i, ':'))
        return EMS_EINVAL;
    int mi = digits(s, len, &i, 2);
    if (mi < 0 || mi > 59 || !expect(s, len, &i, ':'))
        return EMS_EINVAL;
    int sec = digits(s, len, &i, 2);
    if (sec < 0 || sec > 59)
        return EMS_EINVAL;
    int ms = 0;
    if (i < len && s[i] == '.') {
        i++;
        if ((ms = fraction_ms(s, len, &i)) < 0)
            return EMS_EINVAL;
    }
    if (!expect(s, len, &i, 'Z') || i != len)
        return EMS_EINVAL;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    *ms_out = ((days * 24 + h) * 60 + mi) * 60000LL + sec * 1000LL + ms;
    return 0;
}

bool ems_time_ms_valid(int64_t ms)
{
    return ms >= EMS_TIME_MIN_MS && ms <= EMS_TIME_MAX_MS;
}

int ems_time_format(int64_t ms, char *buf, size_t cap)
{
    if (!ems_time_ms_valid(ms))
        return EMS_EINVAL;
    if (cap < EMS_TIME_STR_MAX)
        return EMS_ENOSPC;
    /* Floor division, so times before 1970 format correctly. */
    int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t rem = ms - days * 86400000;
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    unsigned r = (unsigned)rem;
    int n = snprintf(buf, cap, "%04d-%02u-%02uT%02u:%02u:%02u.%03uZ", y, m, d,
                     r / 3600000, r / 60000 % 60, r / 1000 % 60, r % 1000);
    return n == EMS_TIME_STR_MAX - 1 ? n : EMS_EINVAL;
}

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ems_time_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t ems_time_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}
