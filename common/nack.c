/* nack.c: a refused telemetry packet (see nack.h). */
#include "nack.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "telemetry.h"

#include <stdio.h>
#include <string.h>

void ems_nack_from_verr(ems_nack_t *n, int64_t seq_or_neg, const ems_verr_t *err)
{
    n->has_seq = seq_or_neg >= 0 && (uint64_t)seq_or_neg <= EMS_SEQ_MAX;
    n->seq = n->has_seq ? (uint64_t)seq_or_neg : 0;
    snprintf(n->path, sizeof n->path, "%s", err ? err->path : "");
    snprintf(n->reason, sizeof n->reason, "%s", err && err->reason[0] ? err->reason : "refused");
}

int ems_nack_from_json(const json_t *obj, ems_nack_t *out, ems_verr_t *err)
{
    int64_t seq = 0;
    int rc;
    memset(out, 0, sizeof *out);
    if (ems_jr_expect_type(obj, "nack", err) < 0 ||
        (rc = ems_jr_integer(obj, "", "seq", false, 0, (int64_t)EMS_SEQ_MAX, &seq, err)) < 0 ||
        ems_jr_text(obj, "", "path", true, EMS_NACK_PATH_MAX, out->path, sizeof out->path, err) < 0 ||
        ems_jr_text(obj, "", "reason", true, EMS_NACK_REASON_MAX, out->reason, sizeof out->reason,
                    err) < 0)
        return EMS_EINVAL;
    out->has_seq = rc;
    out->seq = (uint64_t)seq;
    if (!out->reason[0]) {
        ems_verr_set(err, "reason", "must not be empty");
        return EMS_EINVAL;
    }
    return 0;
}

int ems_nack_decode(const char *json, size_t len, ems_nack_t *out, ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_nack_from_json(root, out, err);
    json_decref(root);
    return rc;
}

/* A text member of the struct: valid UTF-8 of at most max characters. */
static bool text_ok(const char *s, size_t cap, size_t max)
{
    size_t len = strnlen(s, cap);
    return len < cap && ems_jr_utf8_valid(s, len) && ems_jr_utf8_chars(s, len) <= max;
}

int ems_nack_check(const ems_nack_t *n, ems_verr_t *err)
{
    if (n->has_seq && n->seq > EMS_SEQ_MAX)
        ems_verr_set(err, "seq", "is above the maximum 9007199254740991");
    else if (!text_ok(n->path, sizeof n->path, EMS_NACK_PATH_MAX))
        ems_verr_set(err, "path", "is not UTF-8 of at most 128 characters");
    else if (!n->reason[0] || !text_ok(n->reason, sizeof n->reason, EMS_NACK_REASON_MAX))
        ems_verr_set(err, "reason", "is not UTF-8 of 1..256 characters");
    else
        return 0;
    return EMS_EINVAL;
}

int ems_nack_encode(const ems_nack_t *n, char *buf, size_t cap)
{
    if (ems_nack_check(n, NULL) < 0)
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "nack");
    if (n->has_seq) {
        ems_jw_key(&w, "seq");
        ems_jw_uint(&w, n->seq);
    }
    ems_jw_key(&w, "path");
    ems_jw_str(&w, n->path);
    ems_jw_key(&w, "reason");
    ems_jw_str(&w, n->reason);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}
