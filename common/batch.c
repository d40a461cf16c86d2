/* batch.c: telemetry batches (see batch.h). */
#include "batch.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"

#include <stdio.h>
#include <string.h>

static int check_envelope(const json_t *obj, const json_t **arr, ems_verr_t *err)
{
    if (ems_jr_expect_type(obj, "telemetry_batch", err) < 0 ||
        ems_jr_array(obj, "", "packets", true, arr, err) < 0)
        return EMS_EINVAL;
    size_t n = json_array_size(*arr);
    if (n >= 1 && n <= EMS_BATCH_MAX)
        return 0;
    ems_verr_set(err, "packets", "has %zu packets; 1..100 are allowed", n);
    return EMS_EINVAL;
}

/* A packet's seq for the nack, read leniently from a refused packet. */
static void raw_seq(const json_t *pkt, ems_batch_item_t *item)
{
    int64_t seq;
    ems_jr_at_t at = {"", "seq", -1};
    const json_t *v = json_object_get(pkt, "seq"); /* NULL for a non-object */
    item->has_seq = v && ems_jr_v_integer(v, &at, 0, (int64_t)EMS_SEQ_MAX, &seq, NULL) == 0;
    item->seq = item->has_seq ? (uint64_t)seq : 0;
}

/* Decodes packet i; a batch packet must carry seq (the ack names it). */
static int decode_one(const json_t *pkt, size_t i, ems_telemetry_t *t, ems_verr_t *err)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "packets[%zu]", i);
    int rc = ems_telemetry_from_json(pkt, t, err);
    if (rc == 0 && !t->has_seq) {
        ems_verr_set(err, "seq", "required member is missing in a batch");
        rc = EMS_EINVAL;
    }
    if (rc < 0)
        ems_verr_prefix(err, prefix);
    return rc;
}

int ems_batch_from_json(const json_t *obj, ems_batch_cb cb, void *ctx, ems_verr_t *err)
{
    const json_t *arr;
    if (check_envelope(obj, &arr, err) < 0)
        return EMS_EINVAL;
    int refused = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        ems_telemetry_t t;
        ems_verr_t perr;
        ems_batch_item_t item = {.index = i, .json = json_array_get(arr, i)};
        if (decode_one(item.json, i, &t, &perr) < 0) {
            if (refused++ == 0 && err && !cb)
                *err = perr;
            item.err = &perr;
            /* The path starts "packets[i]"; skip that and the dot after it. */
            const char *close = strchr(perr.path, ']');
            item.packet_path = close ? close + 1 + (close[1] == '.') : perr.path;
            raw_seq(item.json, &item);
        } else {
            item.packet = &t;
            item.has_seq = true;
            item.seq = t.seq;
        }
        if (cb)
            cb(ctx, &item);
    }
    return refused;
}

int ems_batch_decode(const char *json, size_t len, ems_batch_cb cb, void *ctx, ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_batch_from_json(root, cb, ctx, err);
    json_decref(root);
    return rc;
}

int ems_batch_encode(const ems_telemetry_t *packets, size_t n, char *buf, size_t cap)
{
    if (n < 1 || n > EMS_BATCH_MAX)
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "telemetry_batch");
    ems_jw_key(&w, "packets");
    ems_jw_arr_open(&w);
    for (size_t i = 0; i < n; i++) {
        char one[EMS_TELEMETRY_JSON_MAX];
        int len = packets[i].has_seq ? ems_telemetry_encode(&packets[i], one, sizeof one)
                                     : EMS_EINVAL;
        if (len < 0)
            return len;
        ems_jw_raw(&w, one, (size_t)len);
    }
    ems_jw_arr_close(&w);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}
