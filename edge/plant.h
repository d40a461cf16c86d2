/* plant.h: a simulated house with PV, load, grid and a 48 V LFP battery.
 *
 * The default back end when no hardware is configured. It implements the
 * sensor/actuator interface of edge/io.h, so the daemon cannot tell it from
 * hardware. Deterministic: everything random comes from a generator seeded
 * with config.seed, and time only moves when the caller advances it, so the
 * same seed and the same sequence of calls replay the same day bit for bit.
 *
 * The model, per sub-step of at most 1 s (docs/state-machine.md, "The
 * simulated plant"):
 *   battery  OCV(SoC) of 16 LFP cells in series, internal resistance R:
 *            V = OCV + I x R, P = V x I (+ = charge). The current is solved
 *            from the commanded terminal power. Energy into the cells is
 *            P x eta_charge when charging and P / eta_discharge when
 *            discharging; SoC = stored energy / capacity.
 *   heat     C dT/dt = I^2 R + injected heat - k (T - ambient).
 *   PV       peak x sin-shaped day between 06:00 and 20:00 x (1 - clouds),
 *            clouds a seeded mean-reverting random walk.
 *   load     base + morning and evening peaks + seeded noise.
 *   grid     power = load - PV + battery power (< 0 exporting); voltage
 *            ~230 V and frequency ~50 Hz with small seeded noise.
 * The inverter limits |P| to max_power_w, and the simulated BMS stops
 * charging at 100 % SoC and discharging at 0 %, like real hardware would.
 */
#ifndef EMS_PLANT_H
#define EMS_PLANT_H

#include "io.h"
#include "rng.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    EMS_PLANT_SUNNY = 0, /* from 11:00, clear sky: surplus at midday, the battery charges */
    EMS_PLANT_EVENING,   /* from 18:30, full battery, house peak: the battery discharges */
    EMS_PLANT_FAULTY,    /* as sunny, but a cell heats up after fault_at_s: OVERHEAT */
    EMS_PLANT_PROFILE_COUNT
} ems_plant_profile_t;

const char *ems_plant_profile_name(ems_plant_profile_t p);
/* Returns 0 or EMS_EINVAL. */
int ems_plant_profile_parse(const char *s, ems_plant_profile_t *out);

typedef struct {
    ems_plant_profile_t profile;
    uint64_t seed;
    double start_tod_s; /* time of day at init, seconds after midnight */

    /* battery */
    double capacity_kwh;  /* 10 */
    double soc0;          /* SoC at init, % */
    int series_cells;     /* 16 */
    double r_int_ohm;     /* 0.02, whole pack */
    double eta_charge;    /* 0.96 */
    double eta_discharge; /* 0.96 */
    double max_power_w;   /* 6000: the inverter's own limit */

    /* temperature */
    double ambient_c;         /* 25 */
    double temp0_c;           /* at init */
    double thermal_tau_s;     /* 120: time constant of cooling toward ambient */
    double thermal_k_w_per_k; /* 20: heat flow to ambient per kelvin */

    /* sun and house */
    double pv_peak_w;      /* 6000 */
    double cloud_mean;     /* mean cloud cover 0..1 */
    double cloud_sigma;    /* its noise per sqrt(s) */
    double load_base_w;    /* 300 */
    double load_morning_w; /* peak around 07:30 */
    double load_evening_w; /* peak around 19:00 */

    /* the faulty profile: injected heat fault_heat_w for fault_duration_s,
     * starting fault_at_s after init; fault_at_s < 0 means never */
    double fault_at_s;
    double fault_heat_w;
    double fault_duration_s;
} ems_plant_config_t;

/* Fills the defaults of a profile (the values in the comments above, plus the
 * profile's start time, SoC and weather). */
void ems_plant_config_default(ems_plant_config_t *c, ems_plant_profile_t profile);

/* The sensor groups that can be dropped (edge/io.h freshness). */
typedef enum {
    EMS_PLANT_SENSOR_BATTERY = 1u << 0,
    EMS_PLANT_SENSOR_TEMP = 1u << 1,
    EMS_PLANT_SENSOR_GRID = 1u << 2,
} ems_plant_sensor_t;

/* What the simulation knows that no sensor shows, for tests. */
typedef struct {
    double tod_s; /* time of day, seconds after midnight */
    double pv_w;
    double load_w;
    double stored_wh; /* energy in the cells */
    double soc;       /* exact, % */
    double temp_c;
    double setpoint_w; /* as commanded */
    double battery_w;  /* as delivered (after the inverter and BMS limits) */
    double in_wh;      /* terminal energy that went in (charging), Wh */
    double out_wh;     /* terminal energy that came out (discharging), Wh */
} ems_plant_truth_t;

/* The plant. Plain data owned by the caller; no teardown. Fields private. */
typedef struct {
    ems_io_t io; /* the back-end interface; ems_plant_io() returns it */
    ems_plant_config_t cfg;
    ems_rng_t rng;
    int64_t t0_ms, now_ms;
    double capacity_wh;
    double stored_wh, temp_c;
    double setpoint_w, battery_w, current_a, voltage_v;
    double pv_w, load_w, cloud, load_noise;
    double grid_v, grid_f, grid_w, grid_f_dev;
    double in_wh, out_wh;
    unsigned dropped; /* ems_plant_sensor_t bits */
    bool outage;
    ems_io_sample_t sample; /* what the sensors show */
} ems_plant_t;

/* Starts the simulation at monotonic time `now_ms` with a copy of `cfg`.
 * Returns 0, or EMS_EINVAL if cfg is unusable (capacity, efficiencies,
 * SoC out of range). */
int ems_plant_init(ems_plant_t *p, const ems_plant_config_t *cfg, int64_t now_ms);

/* Runs the physics from the last time to `now_ms` in steps of at most 1 s,
 * with the last setpoint. A time in the past is ignored. */
void ems_plant_advance(ems_plant_t *p, int64_t now_ms);

/* The sensor readings after the last advance (see edge/io.h). */
void ems_plant_sample(const ems_plant_t *p, ems_io_sample_t *out);

/* Commands the battery terminal power in W (+ = charge); applied from the
 * next advance on. */
void ems_plant_set_setpoint(ems_plant_t *p, double watts);

void ems_plant_truth(const ems_plant_t *p, ems_plant_truth_t *out);

/* The edge/io.h interface of this plant (read = advance + sample). */
ems_io_t *ems_plant_io(ems_plant_t *p);

/* Fault injection. */
/* Sets the cell temperature now; the thermal model continues from there
 * (so a forced 70 C cools back toward ambient). */
void ems_plant_force_temperature(ems_plant_t *p, double celsius);
/* Drops (true) or restores (false) sensor groups: a dropped group keeps
 * its last value and time, so it goes stale. */
void ems_plant_drop_sensor(ems_plant_t *p, unsigned sensors, bool dropped);
/* Starts or ends a grid outage: the meter reads 0 V, 0 Hz, 0 W. */
void ems_plant_grid_outage(ems_plant_t *p, bool out);

/* The pack's open-circuit voltage at `soc` percent (clamped to 0..100). */
double ems_plant_ocv(const ems_plant_t *p, double soc);

#endif
