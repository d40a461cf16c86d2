/* ack.c: acknowledged seq ranges (see ack.h). */
#include "ack.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "telemetry.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void ems_ack_init(ems_ack_t *a)
{
    a->count = 0;
}

/* Index of the first range whose last >= seq (count if none). */
static size_t lower_bound(const ems_ack_t *a, uint64_t seq)
{
    size_t lo = 0, hi = a->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a->ranges[mid].last < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool ems_ack_contains(const ems_ack_t *a, uint64_t seq)
{
    size_t i = lower_bound(a, seq);
    return i < a->count && a->ranges[i].first <= seq;
}

int ems_ack_add(ems_ack_t *a, uint64_t seq)
{
    if (seq > EMS_SEQ_MAX)
        return EMS_EINVAL;
    size_t i = lower_bound(a, seq);
    if (i < a->count && a->ranges[i].first <= seq)
        return 0;
    bool joins_prev = i > 0 && a->ranges[i - 1].last + 1 == seq;
    bool joins_next = i < a->count && a->ranges[i].first == seq + 1;
    if (joins_prev && joins_next) { /* seq fills the gap: merge two ranges */
        a->ranges[i - 1].last = a->ranges[i].last;
        memmove(&a->ranges[i], &a->ranges[i + 1], (a->count - i - 1) * sizeof a->ranges[0]);
        a->count--;
    } else if (joins_prev) {
        a->ranges[i - 1].last = seq;
    } else if (joins_next) {
        a->ranges[i].first = seq;
    } else {
        if (a->count == EMS_ACK_RANGES_MAX)
            return EMS_ENOSPC;
        memmove(&a->ranges[i + 1], &a->ranges[i], (a->count - i) * sizeof a->ranges[0]);
        a->ranges[i].first = a->ranges[i].last = seq;
        a->count++;
    }
    return 0;
}

/* One [first, last] pair at ranges[i]. */
static int decode_range(const json_t *v, size_t i, ems_seq_range_t *r, ems_verr_t *err)
{
    char path[32];
    snprintf(path, sizeof path, "ranges[%zu]", i);
    ems_jr_at_t at = {"ranges", NULL, (long)i};
    if (ems_jr_v_array(v, &at, err) < 0)
        return EMS_EINVAL;
    if (json_array_size(v) != 2) {
        ems_verr_set(err, path, "expected 2 items [first, last], got %zu", json_array_size(v));
        return EMS_EINVAL;
    }
    int64_t n[2];
    for (size_t k = 0; k < 2; k++) {
        ems_jr_at_t item = {path, NULL, (long)k};
        if (ems_jr_v_integer(json_array_get(v, k), &item, 0, (int64_t)EMS_SEQ_MAX, &n[k], err) < 0)
            return EMS_EINVAL;
    }
    r->first = (uint64_t)n[0];
    r->last = (uint64_t)n[1];
    return 0;
}

/* first <= last, and each range starts after the previous one ends. */
static int check_order(const ems_ack_t *a, ems_verr_t *err)
{
    for (size_t i = 0; i < a->count; i++) {
        const ems_seq_range_t *r = &a->ranges[i];
        char path[32];
        snprintf(path, sizeof path, "ranges[%zu]", i);
        if (r->first > r->last) {
            ems_verr_set(err, path, "first %" PRIu64 " is above last %" PRIu64, r->first, r->last);
            return EMS_EINVAL;
        }
        if (i > 0 && r->first <= a->ranges[i - 1].last) {
            ems_verr_set(err, path,
                         "starts at %" PRIu64 ", not after the previous range's end %" PRIu64,
                         r->first, a->ranges[i - 1].last);
            return EMS_EINVAL;
        }
    }
    return 0;
}

static int check_count(size_t n, ems_verr_t *err)
{
    if (n >= 1 && n <= EMS_ACK_RANGES_MAX)
        return 0;
    ems_verr_set(err, "ranges", "has %zu ranges; 1..256 are allowed", n);
    return EMS_EINVAL;
}

int ems_ack_from_json(const json_t *obj, ems_ack_t *out, ems_verr_t *err)
{
    const json_t *arr;
    out->count = 0;
    if (ems_jr_expect_type(obj, "ack", err) < 0 ||
        ems_jr_array(obj, "", "ranges", true, &arr, err) < 0 ||
        check_count(json_array_size(arr), err) < 0)
        return EMS_EINVAL;
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (decode_range(json_array_get(arr, i), i, &out->ranges[i], err) < 0)
            return EMS_EINVAL;
    out->count = json_array_size(arr);
    return check_order(out, err);
}

int ems_ack_decode(const char *json, size_t len, ems_ack_t *out, ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_ack_from_json(root, out, err);
    json_decref(root);
    return rc;
}

int ems_ack_check(const ems_ack_t *a, ems_verr_t *err)
{
    if (check_count(a->count, err) < 0)
        return EMS_EINVAL;
    for (size_t i = 0; i < a->count; i++) {
        if (a->ranges[i].last > EMS_SEQ_MAX) {
            ems_verr_set(err, "ranges", "a seq is above the maximum 9007199254740991");
            return EMS_EINVAL;
        }
    }
    return check_order(a, err);
}

int ems_ack_encode(const ems_ack_t *a, char *buf, size_t cap)
{
    if (ems_ack_check(a, NULL) < 0)
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "ack");
    ems_jw_key(&w, "ranges");
    ems_jw_arr_open(&w);
    for (size_t i = 0; i < a->count; i++) {
        ems_jw_arr_open(&w);
        ems_jw_uint(&w, a->ranges[i].first);
        ems_jw_uint(&w, a->ranges[i].last);
        ems_jw_arr_close(&w);
    }
    ems_jw_arr_close(&w);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}
