/* plant.c: the simulated house and battery (see plant.h). */
#include "plant.h"

#include "error.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#define PLANT__PI 3.14159265358979323846
#define PLANT__DAY_S 86400.0
#define PLANT__SUNRISE_S (6.0 * 3600.0)
#define PLANT__SUNSET_S (20.0 * 3600.0)

static const char *const plant__profile_names[EMS_PLANT_PROFILE_COUNT] = {
    [EMS_PLANT_SUNNY] = "sunny",
    [EMS_PLANT_EVENING] = "evening",
    [EMS_PLANT_FAULTY] = "faulty",
};

const char *ems_plant_profile_name(ems_plant_profile_t p)
{
    return (unsigned)p < EMS_PLANT_PROFILE_COUNT ? plant__profile_names[p] : "?";
}

int ems_plant_profile_parse(const char *s, ems_plant_profile_t *out)
{
    for (unsigned i = 0; s && i < EMS_PLANT_PROFILE_COUNT; i++) {
        if (strcmp(s, plant__profile_names[i]) == 0) {
            *out = (ems_plant_profile_t)i;
            return 0;
        }
    }
    return EMS_EINVAL;
}

void ems_plant_config_default(ems_plant_config_t *c, ems_plant_profile_t profile)
{
    memset(c, 0, sizeof *c);
    c->profile = profile;
    c->seed = 1;
    c->start_tod_s = 11.0 * 3600.0;
    c->capacity_kwh = 10.0;
    c->soc0 = 50.0;
    c->series_cells = 16;
    c->r_int_ohm = 0.02;
    c->eta_charge = 0.96;
    c->eta_discharge = 0.96;
    c->max_power_w = 6000.0;
    c->ambient_c = 25.0;
    c->temp0_c = 25.0;
    c->thermal_tau_s = 120.0;
    c->thermal_k_w_per_k = 20.0;
    c->pv_peak_w = 6000.0;
    c->cloud_mean = 0.05;
    c->cloud_sigma = 0.01;
    c->load_base_w = 300.0;
    c->load_morning_w = 1200.0;
    c->load_evening_w = 2000.0;
    c->fault_at_s = -1.0;
    c->fault_heat_w = 0.0;
    c->fault_duration_s = 0.0;
    switch (profile) {
    case EMS_PLANT_EVENING:
        c->start_tod_s = 18.5 * 3600.0;
        c->soc0 = 80.0;
        c->ambient_c = c->temp0_c = 22.0;
        c->cloud_mean = 0.3;
        c->cloud_sigma = 0.03;
        break;
    case EMS_PLANT_FAULTY:
        /* A cell develops an internal fault a minute in: 2 kW of heat for
         * a minute take the pack past 55 C within about 40 s; afterwards it
         * cools back with the normal time constant. */
        c->fault_at_s = 60.0;
        c->fault_heat_w = 2000.0;
        c->fault_duration_s = 60.0;
        break;
    case EMS_PLANT_SUNNY:
    default:
        break;
    }
}

/* Per-cell open-circuit voltage of LFP over SoC: the flat plateau around
 * 3.2-3.3 V with the steep knees at both ends. */
static const double plant__ocv_soc[] = {0, 5, 10, 20, 40, 60, 80, 90, 95, 99, 100};
static const double plant__ocv_cell[] = {2.80, 3.10, 3.20, 3.24, 3.27, 3.29,
                                         3.32, 3.34, 3.36, 3.45, 3.55};

double ems_plant_ocv(const ems_plant_t *p, double soc)
{
    size_t n = sizeof plant__ocv_soc / sizeof plant__ocv_soc[0];
    if (!(soc > 0))
        return plant__ocv_cell[0] * p->cfg.series_cells;
    if (soc >= 100)
        return plant__ocv_cell[n - 1] * p->cfg.series_cells;
    size_t i = 1;
    while (plant__ocv_soc[i] < soc)
        i++;
    double x0 = plant__ocv_soc[i - 1], x1 = plant__ocv_soc[i];
    double y0 = plant__ocv_cell[i - 1], y1 = plant__ocv_cell[i];
    return (y0 + (y1 - y0) * (soc - x0) / (x1 - x0)) * p->cfg.series_cells;
}

static double plant__soc(const ems_plant_t *p)
{
    return 100.0 * p->stored_wh / p->capacity_wh;
}

static double plant__gauss(double x, double mu, double sigma)
{
    double z = (x - mu) / sigma;
    return exp(-0.5 * z * z);
}

static double plant__tod(const ems_plant_t *p)
{
    double t = p->cfg.start_tod_s + (double)(p->now_ms - p->t0_ms) / 1000.0;
    return fmod(t, PLANT__DAY_S);
}

/* Weather and house for one sub-step of dt seconds ending at time of day tod. */
static void plant__house(ems_plant_t *p, double tod, double dt)
{
    const ems_plant_config_t *c = &p->cfg;
    /* Clouds: a mean-reverting walk (time constant 10 min), so the sky
     * changes over minutes rather than jumping every second. */
    p->cloud += (c->cloud_mean - p->cloud) * dt / 600.0 +
                c->cloud_sigma * sqrt(dt) * ems_rng_normal(&p->rng);
    p->cloud = fmin(fmax(p->cloud, 0.0), 0.95);
    double sun = 0.0;
    if (tod > PLANT__SUNRISE_S && tod < PLANT__SUNSET_S)
        sun = sin(PLANT__PI * (tod - PLANT__SUNRISE_S) / (PLANT__SUNSET_S - PLANT__SUNRISE_S));
    p->pv_w = c->pv_peak_w * sun * sun * (1.0 - p->cloud);

    /* Load: appliances switch on and off; a walk with a one-minute memory. */
    p->load_noise += -p->load_noise * dt / 60.0 + 40.0 * sqrt(dt) * ems_rng_normal(&p->rng);
    double h = tod / 3600.0;
    double load = c->load_base_w + c->load_morning_w * plant__gauss(h, 7.5, 0.75) +
                  c->load_evening_w * plant__gauss(h, 19.0, 1.5) +
                  300.0 * plant__gauss(h, 12.5, 1.0) + p->load_noise;
    p->load_w = fmax(load, 50.0);

    /* Grid voltage and frequency: small noise around the nominal values. */
    p->grid_f_dev += -p->grid_f_dev * dt / 30.0 + 0.004 * sqrt(dt) * ems_rng_normal(&p->rng);
    p->grid_f_dev = fmin(fmax(p->grid_f_dev, -0.2), 0.2);
    p->grid_v =
        230.0 + 2.0 * sin(2.0 * PLANT__PI * tod / PLANT__DAY_S) + 0.5 * ems_rng_normal(&p->rng);
    p->grid_f = 50.0 + p->grid_f_dev;
}

/* The battery for one sub-step: current from the commanded power, then
 * energy and heat. */
static void plant__battery(ems_plant_t *p, double dt, double since_init_s)
{
    const ems_plant_config_t *c = &p->cfg;
    double soc = plant__soc(p);
    double want = fmax(fmin(p->setpoint_w, c->max_power_w), -c->max_power_w);
    /* The BMS opens the charge path when full and the discharge path when
     * empty, whatever the controller asks. */
    if ((want > 0 && soc >= 100.0) || (want < 0 && soc <= 0.0))
        want = 0.0;
    double ocv = ems_plant_ocv(p, soc), r = c->r_int_ohm;
    /* P = (OCV + I R) I, solved for I in the form that is exact for P = 0
     * and keeps its precision for small P. */
    double disc = ocv * ocv + 4.0 * r * want;
    if (disc < 0) { /* beyond the pack's maximum power transfer */
        disc = 0;
        want = -ocv * ocv / (4.0 * r);
    }
    double i = 2.0 * want / (ocv + sqrt(disc));
    double v = ocv + i * r;
    double pw = v * i;

    double e = pw * dt / 3600.0; /* Wh at the terminals */
    if (e > 0) {
        p->in_wh += e;
        p->stored_wh += e * c->eta_charge;
    } else {
        p->out_wh -= e;
        p->stored_wh += e / c->eta_discharge;
    }
    p->stored_wh = fmin(fmax(p->stored_wh, 0.0), p->capacity_wh);

    double heat = i * i * r;
    if (c->fault_at_s >= 0 && since_init_s > c->fault_at_s &&
        since_init_s <= c->fault_at_s + c->fault_duration_s)
        heat += c->fault_heat_w;
    double cap_j_per_k = c->thermal_k_w_per_k * c->thermal_tau_s;
    p->temp_c += (heat - c->thermal_k_w_per_k * (p->temp_c - c->ambient_c)) * dt / cap_j_per_k;

    p->current_a = i;
    p->voltage_v = v;
    p->battery_w = pw;
}

/* Copies the state into what the sensors show, except dropped groups. */
static void plant__measure(ems_plant_t *p)
{
    ems_io_sample_t *s = &p->sample;
    if (!(p->dropped & EMS_PLANT_SENSOR_BATTERY)) {
        s->battery_ms = p->now_ms;
        s->battery_voltage = p->voltage_v;
        s->battery_current = p->current_a;
        s->battery_power = p->battery_w;
        s->battery_soc = plant__soc(p);
    }
    if (!(p->dropped & EMS_PLANT_SENSOR_TEMP)) {
        s->temp_ms = p->now_ms;
        s->battery_temperature = p->temp_c;
    }
    if (!(p->dropped & EMS_PLANT_SENSOR_GRID)) {
        s->grid_ms = p->now_ms;
        if (p->outage) {
            s->grid_voltage = 0.0;
            s->grid_frequency = 0.0;
            s->grid_power = 0.0;
        } else {
            s->grid_voltage = p->grid_v;
            s->grid_frequency = p->grid_f;
            s->grid_power = p->grid_w;
        }
    }
}

static void plant__step(ems_plant_t *p, int64_t dt_ms)
{
    double dt = (double)dt_ms / 1000.0;
    p->now_ms += dt_ms;
    double tod = plant__tod(p);
    plant__house(p, tod, dt);
    plant__battery(p, dt, (double)(p->now_ms - p->t0_ms) / 1000.0);
    p->grid_w = p->load_w - p->pv_w + p->battery_w;
}

void ems_plant_advance(ems_plant_t *p, int64_t now_ms)
{
    while (p->now_ms < now_ms) {
        int64_t dt = now_ms - p->now_ms;
        plant__step(p, dt > 1000 ? 1000 : dt);
    }
    plant__measure(p);
}

void ems_plant_sample(const ems_plant_t *p, ems_io_sample_t *out)
{
    *out = p->sample;
}

void ems_plant_set_setpoint(ems_plant_t *p, double watts)
{
    p->setpoint_w = isfinite(watts) ? watts : 0.0;
}

void ems_plant_truth(const ems_plant_t *p, ems_plant_truth_t *out)
{
    out->tod_s = plant__tod(p);
    out->pv_w = p->pv_w;
    out->load_w = p->load_w;
    out->stored_wh = p->stored_wh;
    out->soc = plant__soc(p);
    out->temp_c = p->temp_c;
    out->setpoint_w = p->setpoint_w;
    out->battery_w = p->battery_w;
    out->in_wh = p->in_wh;
    out->out_wh = p->out_wh;
}

void ems_plant_force_temperature(ems_plant_t *p, double celsius)
{
    p->temp_c = celsius;
    plant__measure(p);
}

void ems_plant_drop_sensor(ems_plant_t *p, unsigned sensors, bool dropped)
{
    if (dropped)
        p->dropped |= sensors;
    else
        p->dropped &= ~sensors;
}

void ems_plant_grid_outage(ems_plant_t *p, bool out)
{
    p->outage = out;
    plant__measure(p);
}

/* ------------------------------------------------------------- io vtable */

static ems_plant_t *plant__of(ems_io_t *io)
{
    return (ems_plant_t *)(void *)((char *)io - offsetof(ems_plant_t, io));
}

static int plant__io_read(ems_io_t *io, int64_t now_ms, ems_io_sample_t *out)
{
    ems_plant_t *p = plant__of(io);
    ems_plant_advance(p, now_ms);
    ems_plant_sample(p, out);
    return 0;
}

static int plant__io_apply(ems_io_t *io, double watts)
{
    if (!isfinite(watts))
        return EMS_EINVAL;
    ems_plant_set_setpoint(plant__of(io), watts);
    return 0;
}

static int plant__io_safe_off(ems_io_t *io)
{
    ems_plant_set_setpoint(plant__of(io), 0.0);
    return 0;
}

static const ems_io_ops_t plant__ops = {
    .read = plant__io_read,
    .apply_setpoint = plant__io_apply,
    .safe_off = plant__io_safe_off,
};

ems_io_t *ems_plant_io(ems_plant_t *p)
{
    return &p->io;
}

int ems_plant_init(ems_plant_t *p, const ems_plant_config_t *cfg, int64_t now_ms)
{
    if (!(cfg->capacity_kwh > 0) || !(cfg->eta_charge > 0 && cfg->eta_charge <= 1) ||
        !(cfg->eta_discharge > 0 && cfg->eta_discharge <= 1) ||
        !(cfg->soc0 >= 0 && cfg->soc0 <= 100) || cfg->series_cells < 1 || !(cfg->r_int_ohm > 0) ||
        !(cfg->max_power_w > 0) || !(cfg->thermal_tau_s > 0) || !(cfg->thermal_k_w_per_k > 0) ||
        !(cfg->start_tod_s >= 0 && cfg->start_tod_s < PLANT__DAY_S) || !isfinite(cfg->temp0_c) ||
        !isfinite(cfg->ambient_c) || !(cfg->pv_peak_w >= 0))
        return EMS_EINVAL;
    memset(p, 0, sizeof *p);
    p->io.ops = &plant__ops;
    p->cfg = *cfg;
    ems_rng_seed(&p->rng, cfg->seed);
    p->t0_ms = p->now_ms = now_ms;
    p->capacity_wh = cfg->capacity_kwh * 1000.0;
    p->stored_wh = p->capacity_wh * cfg->soc0 / 100.0;
    p->temp_c = cfg->temp0_c;
    p->cloud = cfg->cloud_mean;
    p->voltage_v = ems_plant_ocv(p, cfg->soc0);
    /* The first reading must be complete: compute the house at t0 without
     * moving the clock (dt = 0 draws noise but integrates nothing). */
    plant__house(p, plant__tod(p), 0.0);
    p->grid_w = p->load_w - p->pv_w;
    plant__measure(p);
    return 0;
}
