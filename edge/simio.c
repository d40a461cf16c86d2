/* simio.c: the plant behind edge/io.h with a speed factor, and fault
 * injection (see simio.h). */
#include "simio.h"

#include "error.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t simio__to_sim(const ems_simio_t *s, int64_t real_ms)
{
    return s->t0_ms + (int64_t)llround((double)(real_ms - s->t0_ms) * s->speed);
}

static int64_t simio__to_real(const ems_simio_t *s, int64_t sim_ms)
{
    return s->t0_ms + (int64_t)floor((double)(sim_ms - s->t0_ms) / s->speed);
}

static int simio__read(ems_io_t *io, int64_t now_ms, ems_io_sample_t *out)
{
    ems_simio_t *s = (ems_simio_t *)io;
    ems_plant_advance(&s->plant, simio__to_sim(s, now_ms));
    ems_plant_sample(&s->plant, out);
    out->battery_ms = simio__to_real(s, out->battery_ms);
    out->temp_ms = simio__to_real(s, out->temp_ms);
    out->grid_ms = simio__to_real(s, out->grid_ms);
    return 0;
}

static int simio__apply(ems_io_t *io, double watts)
{
    ems_simio_t *s = (ems_simio_t *)io;
    return ems_io_apply_setpoint(ems_plant_io(&s->plant), watts);
}

static int simio__safe_off(ems_io_t *io)
{
    ems_simio_t *s = (ems_simio_t *)io;
    return ems_io_safe_off(ems_plant_io(&s->plant));
}

static const ems_io_ops_t simio__ops = {
    .read = simio__read,
    .apply_setpoint = simio__apply,
    .safe_off = simio__safe_off,
};

int ems_simio_init(ems_simio_t *s, const ems_plant_config_t *cfg, double speed, int64_t now_ms)
{
    memset(s, 0, sizeof *s);
    s->io.ops = &simio__ops;
    s->speed = (isfinite(speed) && speed >= 1) ? speed : 1;
    s->t0_ms = now_ms;
    return ems_plant_init(&s->plant, cfg, now_ms);
}

ems_io_t *ems_simio_io(ems_simio_t *s)
{
    return &s->io;
}

/* ------------------------------------------------------------- control */

typedef struct {
    bool set_temp;
    double temp;
    unsigned drop, restore;
    int outage; /* -1 unchanged, 0 off, 1 on */
} simio__plan_t;

static int simio__onoff(const char *v, int *out)
{
    if (strcmp(v, "on") == 0 || strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
        *out = 1;
    else if (strcmp(v, "off") == 0 || strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
        *out = 0;
    else
        return EMS_EINVAL;
    return 0;
}

static int simio__groups(const char *v, unsigned *out)
{
    char tmp[128];
    if (strlen(v) >= sizeof tmp)
        return EMS_EINVAL;
    strcpy(tmp, v);
    unsigned bits = 0;
    for (char *save = NULL, *g = strtok_r(tmp, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
        if (strcmp(g, "battery") == 0)
            bits |= EMS_PLANT_SENSOR_BATTERY;
        else if (strcmp(g, "temp") == 0)
            bits |= EMS_PLANT_SENSOR_TEMP;
        else if (strcmp(g, "grid") == 0)
            bits |= EMS_PLANT_SENSOR_GRID;
        else if (strcmp(g, "all") == 0)
            bits |= EMS_PLANT_SENSOR_BATTERY | EMS_PLANT_SENSOR_TEMP | EMS_PLANT_SENSOR_GRID;
        else
            return EMS_EINVAL;
    }
    if (!bits)
        return EMS_EINVAL;
    *out |= bits;
    return 0;
}

static int simio__param(simio__plan_t *p, const ems_simio_t *s, const ems_fsm_limits_t *lim,
                        const char *k, const char *v, char *msg, size_t cap)
{
    int on;
    if (strcmp(k, "overheat") == 0) {
        if (simio__onoff(v, &on) < 0)
            goto bad;
        p->set_temp = true;
        p->temp = on ? lim->temp_max_c + 15.0 : s->plant.cfg.ambient_c;
    } else if (strcmp(k, "temp") == 0) {
        char *end;
        errno = 0;
        double t = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(t) || t < -100 || t > 300)
            goto bad;
        p->set_temp = true;
        p->temp = t;
    } else if (strcmp(k, "drop") == 0) {
        if (simio__groups(v, &p->drop) < 0)
            goto bad;
    } else if (strcmp(k, "restore") == 0) {
        if (simio__groups(v, &p->restore) < 0)
            goto bad;
    } else if (strcmp(k, "grid_outage") == 0) {
        if (simio__onoff(v, &p->outage) < 0)
            goto bad;
    } else {
        snprintf(msg, cap, "unknown parameter '%s' (overheat, temp, drop, restore, grid_outage)",
                 k);
        return EMS_EINVAL;
    }
    return 0;
bad:
    snprintf(msg, cap, "bad value '%s' for %s", v, k);
    return EMS_EINVAL;
}

int ems_simio_control(ems_simio_t *s, const ems_fsm_limits_t *lim, const char *query, size_t len,
                      char *msg, size_t cap)
{
    char q[512];
    if (len == 0) {
        snprintf(msg, cap, "nothing to do: give overheat, temp, drop, restore or grid_outage");
        return EMS_EINVAL;
    }
    if (len >= sizeof q) {
        snprintf(msg, cap, "query too long");
        return EMS_EINVAL;
    }
    memcpy(q, query, len);
    q[len] = '\0';
    simio__plan_t plan = {.outage = -1};
    /* Parse everything first, so a bad parameter applies nothing. */
    for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(msg, cap, "'%s' is not NAME=VALUE", kv);
            return EMS_EINVAL;
        }
        *eq = '\0';
        int rc = simio__param(&plan, s, lim, kv, eq + 1, msg, cap);
        if (rc < 0)
            return rc;
    }
    size_t n = 0;
    msg[0] = '\0';
#define SAY(...)                                                                                   \
    do {                                                                                           \
        if (n < cap) {                                                                             \
            int w = snprintf(msg + n, cap - n, "%s", n ? "; " : "");                               \
            if (w > 0)                                                                             \
                n += (size_t)w;                                                                    \
            if (n < cap) {                                                                         \
                w = snprintf(msg + n, cap - n, __VA_ARGS__);                                       \
                if (w > 0)                                                                         \
                    n += (size_t)w;                                                                \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    if (plan.set_temp) {
        ems_plant_force_temperature(&s->plant, plan.temp);
        SAY("pack temperature forced to %.1f C", plan.temp);
    }
    if (plan.restore) {
        ems_plant_drop_sensor(&s->plant, plan.restore, false);
        SAY("sensors restored (mask %u)", plan.restore);
    }
    if (plan.drop) {
        ems_plant_drop_sensor(&s->plant, plan.drop, true);
        SAY("sensors dropped (mask %u)", plan.drop);
    }
    if (plan.outage >= 0) {
        ems_plant_grid_outage(&s->plant, plan.outage == 1);
        SAY("grid outage %s", plan.outage ? "started" : "ended");
    }
#undef SAY
    return 0;
}
