/* welcome.c: the gateway's greeting (see welcome.h). */
#include "welcome.h"

#include "error.h"
#include "jread.h"
#include "jsonw.h"
#include "timefmt.h"

#include <string.h>

int ems_welcome_from_json(const json_t *obj, ems_welcome_t *out, ems_verr_t *err)
{
    memset(out, 0, sizeof *out);
    if (ems_jr_expect_type(obj, "welcome", err) < 0 ||
        ems_jr_ident(obj, "", "device_id", true, EMS_DEVICE_ID_MAX, false, out->device_id,
                     sizeof out->device_id, err) < 0 ||
        ems_jr_timestamp(obj, "", "server_time", true, &out->server_time_ms, err) < 0)
        return EMS_EINVAL;
    return 0;
}

int ems_welcome_decode(const char *json, size_t len, ems_welcome_t *out, ems_verr_t *err)
{
    json_t *root = ems_jr_parse(json, len, err);
    if (!root)
        return EMS_EINVAL;
    int rc = ems_welcome_from_json(root, out, err);
    json_decref(root);
    return rc;
}

int ems_welcome_encode(const ems_welcome_t *wm, char *buf, size_t cap)
{
    char ts[EMS_TIME_STR_MAX];
    if (!ems_device_id_valid(wm->device_id, strnlen(wm->device_id, sizeof wm->device_id)) ||
        ems_time_format(wm->server_time_ms, ts, sizeof ts) < 0)
        return EMS_EINVAL;
    ems_jw_t w;
    ems_jw_init(&w, buf, cap);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "type");
    ems_jw_str(&w, "welcome");
    ems_jw_key(&w, "device_id");
    ems_jw_str(&w, wm->device_id);
    ems_jw_key(&w, "server_time");
    ems_jw_str(&w, ts);
    ems_jw_obj_close(&w);
    return ems_jw_finish(&w);
}
