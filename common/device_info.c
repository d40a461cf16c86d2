/* device_info.c: the edge's self-description (see device_info.h). */
#include "device_info.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* One optional number member: sets *has and *v. */
static int opt_num(const json_t *o, const char *path, const char *key, double max, bool *has,
                   double *v, ems_verr_t *err)
{
    int rc = ems_jr_number(o, path, key, false, 0, max, v, err);
    *has = rc == 1;
    return rc < 0 ? EMS_EINVAL : 0;
}

static int soc_order(const ems_device_info_t *d, ems_verr_t *err)
{
    if (!d->has_soc_min || !d->has_soc_max || d->soc_min <= d->soc_max)
        return 0;
    char a[EMS_JW_NUM_MAX], b[EMS_JW_NUM_MAX];
    ems_jw_fmt_double(d->soc_max, a);
    ems_jw_fmt_double(d->soc_min, b);
    ems_verr_set(err, "limits.soc_max", "%s is below soc_min %s", a, b);
    return EMS_EINVAL;
}

int ems_device_info_from_json(const json_t *obj, ems_device_info_t *out, ems_verr_t *err)
{
    const json_t *lim = NULL;
    int rc;
    memset(out, 0, sizeof *out);
    if (ems_jr_expect_type(obj, "device_info", err) < 0 ||
        (rc = ems_jr_text(obj, "", "firmware", false, EMS_FIRMWARE_MAX, out->firmware,
                          sizeof out->firmware, err)) < 0)
        return EMS_EINVAL;
    out->has_firmware = rc;
    if (opt_num(obj, "", "capacity_wh", DBL_MAX, &out->has_capacity_wh, &out->capacity_wh, err) < 0 ||
        ems_jr_object(obj, "", "limits", false, &lim, err) < 0)
        return EMS_EINVAL;
    if (lim && (opt_num(lim, "limits", "max_charge_w", DBL_MAX, &out->has_max_charge_w,
                        &out->max_charge_w, err) < 0 ||
                opt_num(lim, "limits", "max_discharge_w", DBL_MAX, &out->has_max_discharge_w,
                        &out->max_discharge_w, err) < 0 ||
                opt_num(lim, "limits", "soc_min", 100, &out->has_soc_min, &out->soc_min, err) < 0 ||
                opt_num(lim, "limits", "soc_max", 100, &out->has_soc_max, &out->soc_max, err) < 0))
        return EMS_EINVAL;
    return soc_order(out, err);
}

int ems_device_info_decode(const char *json, size_t len, ems_device_info_t *out,
                           ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_device_info_from_json(root, out, err);
    json_decref(root);
    return rc;
}

static bool num_ok(bool has, double v, double max)
{
    return !has || (isfinite(v) && v >= 0 && v <= max);
}

int ems_device_info_check(const ems_device_info_t *d, ems_verr_t *err)
{
    size_t len = strnlen(d->firmware, sizeof d->firmware);
    if (d->has_firmware && (len == sizeof d->firmware || !ems_jr_utf8_valid(d->firmware, len) ||
                            ems_jr_utf8_chars(d->firmware, len) > EMS_FIRMWARE_MAX))
        ems_verr_set(err, "firmware", "is not UTF-8 of at most 128 characters");
    else if (!num_ok(d->has_capacity_wh, d->capacity_wh, DBL_MAX))
        ems_verr_set(err, "capacity_wh", "is not a finite number >= 0");
    else if (!num_ok(d->has_max_charge_w, d->max_charge_w, DBL_MAX) ||
             !num_ok(d->has_max_discharge_w, d->max_discharge_w, DBL_MAX))
        ems_verr_set(err, "limits", "a power limit is not a finite number >= 0");
    else if (!num_ok(d->has_soc_min, d->soc_min, 100) || !num_ok(d->has_soc_max, d->soc_max, 100))
        ems_verr_set(err, "limits", "a SoC limit is not a number in 0..100");
    else
        return soc_order(d, err);
    return EMS_EINVAL;
}

static void opt_key_num(ems_jw_t *w, bool has, const char *key, double v)
{
    if (!has)
        return;
    ems_jw_key(w, key);
    ems_jw_num(w, v);
}

int ems_device_info_encode(const ems_device_info_t *d, char *buf, size_t cap)
{
    if (ems_device_info_check(d, NULL) < 0)
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "device_info");
    if (d->has_firmware) {
        ems_jw_key(&w, "firmware");
        ems_jw_str(&w, d->firmware);
    }
    opt_key_num(&w, d->has_capacity_wh, "capacity_wh", d->capacity_wh);
    if (d->has_max_charge_w || d->has_max_discharge_w || d->has_soc_min || d->has_soc_max) {
        ems_jw_key(&w, "limits");
        ems_jw_obj_open(&w);
        opt_key_num(&w, d->has_max_charge_w, "max_charge_w", d->max_charge_w);
        opt_key_num(&w, d->has_max_discharge_w, "max_discharge_w", d->max_discharge_w);
        opt_key_num(&w, d->has_soc_min, "soc_min", d->soc_min);
        opt_key_num(&w, d->has_soc_max, "soc_max", d->soc_max);
        ems_jw_obj_close(&w);
    }
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}
