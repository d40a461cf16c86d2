/* gw_ranges.c: sequence ranges (see gw_ranges.h). */
#include "gw_ranges.h"

#include "error.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_ranges_free(gw_ranges_t *s)
{
    free(s->r);
    s->r = NULL;
    s->len = s->cap = 0;
}

int gw_ranges_add(gw_ranges_t *s, uint64_t v)
{
    /* Fast path: the value extends or sits in the last range. */
    if (s->len > 0) {
        gw_range_t *last = &s->r[s->len - 1];
        if (v >= last->lo && v <= last->hi)
            return 0;
        if (v == last->hi + 1) {
            last->hi = v;
            return 0;
        }
    }
    /* Find the first range with hi + 1 >= v (binary search). */
    size_t a = 0, b = s->len;
    while (a < b) {
        size_t m = (a + b) / 2;
        if (s->r[m].hi + 1 < v)
            a = m + 1;
        else
            b = m;
    }
    if (a < s->len && s->r[a].lo <= v + 1 && v <= s->r[a].hi + 1) {
        gw_range_t *x = &s->r[a];
        if (v < x->lo)
            x->lo = v;
        if (v > x->hi)
            x->hi = v;
        /* Joining two ranges: [1,3] + 4 + [5,7] -> [1,7]. */
        if (a + 1 < s->len && s->r[a + 1].lo <= x->hi + 1) {
            x->hi = s->r[a + 1].hi;
            memmove(&s->r[a + 1], &s->r[a + 2], (s->len - a - 2) * sizeof *s->r);
            s->len--;
        }
        return 0;
    }
    if (s->len == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4;
        gw_range_t *nr = realloc(s->r, ncap * sizeof *nr);
        if (!nr)
            return EMS_ENOMEM;
        s->r = nr;
        s->cap = ncap;
    }
    memmove(&s->r[a + 1], &s->r[a], (s->len - a) * sizeof *s->r);
    s->r[a].lo = s->r[a].hi = v;
    s->len++;
    return 0;
}

int gw_ranges_take_ack(gw_ranges_t *s, char *buf, size_t cap)
{
    if (s->len == 0)
        return 0;
    size_t n = s->len < GW_ACK_RANGES_MAX ? s->len : GW_ACK_RANGES_MAX, o = 0;
    int w = snprintf(buf, cap, "{\"type\":\"ack\",\"ranges\":[");
    if (w < 0 || (size_t)w >= cap)
        return EMS_ENOSPC;
    o = (size_t)w;
    for (size_t i = 0; i < n; i++) {
        w = snprintf(buf + o, cap - o, "%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "", s->r[i].lo,
                     s->r[i].hi);
        if (w < 0 || (size_t)w >= cap - o)
            return EMS_ENOSPC;
        o += (size_t)w;
    }
    w = snprintf(buf + o, cap - o, "]}");
    if (w < 0 || (size_t)w >= cap - o)
        return EMS_ENOSPC;
    o += (size_t)w;
    memmove(s->r, s->r + n, (s->len - n) * sizeof *s->r);
    s->len -= n;
    return (int)o;
}

int gw_ranges_auto_bucket(int64_t span_ms)
{
    static const int widths[] = {60, 3600, 86400};
    if (span_ms <= GW_HISTORY_RAW_MAX_MS)
        return 0;
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        if (span_ms <= (int64_t)(GW_HISTORY_BUCKETS_MAX - 1) * widths[i] * 1000)
            return widths[i];
    /* Beyond the API's 400 days: whole days, as many as needed. */
    int64_t per = (int64_t)(GW_HISTORY_BUCKETS_MAX - 1) * 86400 * 1000;
    return 86400 * (int)((span_ms + per - 1) / per);
}
