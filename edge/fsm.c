/* fsm.c: the battery state machine (see fsm.h and docs/state-machine.md). */
#include "fsm.h"

#include "error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Physical ranges that no healthy sensor leaves; a reading outside is a
 * broken sensor, not an operating condition. The battery voltage and
 * temperature ranges are configurable because they depend on the pack. */
#define EMS_FSM__GRID_V_PLAUSIBLE_MAX 500.0
#define EMS_FSM__GRID_F_PLAUSIBLE_MAX 100.0
#define EMS_FSM__GRID_P_PLAUSIBLE_MAX 1e7
#define EMS_FSM__CURRENT_PLAUSIBLE_FACTOR 10.0

void ems_fsm_limits_default(ems_fsm_limits_t *l)
{
    memset(l, 0, sizeof *l);
    l->soc_min = 10.0;
    l->soc_max = 95.0;
    l->soc_hysteresis = 3.0;
    l->max_charge_w = 5000.0;
    l->max_discharge_w = 5000.0;
    l->auto_deadband_w = 50.0;
    l->temp_max_c = 55.0;
    l->temp_min_c = 0.0;
    l->temp_hysteresis_c = 5.0;
    l->voltage_max_v = 58.4;
    l->voltage_min_v = 42.0;
    l->voltage_hysteresis_v = 0.5;
    l->current_max_a = 120.0;
    l->current_hysteresis_a = 5.0;
    l->grid_voltage_min_v = 196.0;
    l->grid_voltage_max_v = 253.0;
    l->grid_freq_min_hz = 47.5;
    l->grid_freq_max_hz = 51.5;
    l->grid_fault_ticks = 3;
    l->stale_ms = 3000;
    l->power_tolerance_w = 50.0;
    l->power_tolerance_frac = 0.05;
    l->plausible_voltage_min_v = 20.0;
    l->plausible_voltage_max_v = 80.0;
    l->plausible_temp_min_c = -40.0;
    l->plausible_temp_max_c = 125.0;
    l->manual_timeout_ms = 3600 * 1000;
}

#define EMS_FSM__WHY(...)                                                                          \
    do {                                                                                           \
        if (why && cap)                                                                            \
            snprintf(why, cap, __VA_ARGS__);                                                       \
        return EMS_EINVAL;                                                                         \
    } while (0)

int ems_fsm_limits_check(const ems_fsm_limits_t *l, char *why, size_t cap)
{
    /* Every double must be finite before any comparison means anything. */
    const double all[] = {l->soc_min,
                          l->soc_max,
                          l->soc_hysteresis,
                          l->max_charge_w,
                          l->max_discharge_w,
                          l->auto_deadband_w,
                          l->temp_max_c,
                          l->temp_min_c,
                          l->temp_hysteresis_c,
                          l->voltage_max_v,
                          l->voltage_min_v,
                          l->voltage_hysteresis_v,
                          l->current_max_a,
                          l->current_hysteresis_a,
                          l->grid_voltage_min_v,
                          l->grid_voltage_max_v,
                          l->grid_freq_min_hz,
                          l->grid_freq_max_hz,
                          l->power_tolerance_w,
                          l->power_tolerance_frac,
                          l->plausible_voltage_min_v,
                          l->plausible_voltage_max_v,
                          l->plausible_temp_min_c,
                          l->plausible_temp_max_c};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!isfinite(all[i]))
            EMS_FSM__WHY("every limit must be a finite number");

    if (l->soc_min < 0 || l->soc_max > 100)
        EMS_FSM__WHY("soc_min and soc_max must lie within 0..100");
    if (l->soc_hysteresis < 0)
        EMS_FSM__WHY("soc_hysteresis must not be negative");
    /* The two hysteresis bands must not overlap, or FULL and EMPTY could
     * both hold and the machine could not leave either. */
    if (l->soc_min + l->soc_hysteresis >= l->soc_max - l->soc_hysteresis)
        EMS_FSM__WHY("soc_min %g + soc_hysteresis %g must stay below soc_max %g - soc_hysteresis",
                     l->soc_min, l->soc_hysteresis, l->soc_max);
    if (l->max_charge_w <= 0 || l->max_discharge_w <= 0)
        EMS_FSM__WHY("max_charge_w and max_discharge_w must be positive");
    if (l->auto_deadband_w < 0)
        EMS_FSM__WHY("auto_deadband_w must not be negative");
    if (l->temp_hysteresis_c < 0 || l->voltage_hysteresis_v < 0 || l->current_hysteresis_a < 0)
        EMS_FSM__WHY("fault hysteresis values must not be negative");
    if (l->temp_min_c + l->temp_hysteresis_c >= l->temp_max_c - l->temp_hysteresis_c)
        EMS_FSM__WHY("temp_min_c %g and temp_max_c %g leave no room for temp_hysteresis_c %g",
                     l->temp_min_c, l->temp_max_c, l->temp_hysteresis_c);
    if (l->voltage_min_v + l->voltage_hysteresis_v >= l->voltage_max_v - l->voltage_hysteresis_v)
        EMS_FSM__WHY("voltage_min_v %g and voltage_max_v %g leave no room for "
                     "voltage_hysteresis_v %g",
                     l->voltage_min_v, l->voltage_max_v, l->voltage_hysteresis_v);
    if (l->current_max_a <= l->current_hysteresis_a)
        EMS_FSM__WHY("current_max_a must be above current_hysteresis_a");
    if (l->grid_voltage_min_v >= l->grid_voltage_max_v)
        EMS_FSM__WHY("grid_voltage_min_v must be below grid_voltage_max_v");
    if (l->grid_freq_min_hz >= l->grid_freq_max_hz)
        EMS_FSM__WHY("grid_freq_min_hz must be below grid_freq_max_hz");
    if (l->grid_fault_ticks < 1)
        EMS_FSM__WHY("grid_fault_ticks must be at least 1");
    if (l->stale_ms < 1)
        EMS_FSM__WHY("the sensor stale limit must be positive");
    if (l->power_tolerance_w < 0 || l->power_tolerance_frac < 0)
        EMS_FSM__WHY("power tolerances must not be negative");
    if (l->plausible_voltage_min_v >= l->voltage_min_v ||
        l->plausible_voltage_max_v <= l->voltage_max_v)
        EMS_FSM__WHY("the plausible voltage range must enclose voltage_min_v..voltage_max_v");
    if (l->plausible_temp_min_c >= l->temp_min_c || l->plausible_temp_max_c <= l->temp_max_c)
        EMS_FSM__WHY("the plausible temperature range must enclose temp_min_c..temp_max_c");
    if (l->manual_timeout_ms < 0)
        EMS_FSM__WHY("manual_timeout_s must not be negative");
    return 0;
}

void ems_fsm_init(ems_fsm_t *f, const ems_fsm_limits_t *lim)
{
    memset(f, 0, sizeof *f);
    f->lim = *lim;
    f->state = EMS_STATE_IDLE;
    f->target = EMS_TARGET_AUTO;
    f->last_soc = NAN;
    f->cloud_lost_ms = -1;
}

void ems_fsm_set_limits(ems_fsm_t *f, const ems_fsm_limits_t *lim)
{
    f->lim = *lim;
}

/* ------------------------------------------------------------------ faults */

/* One fault with hysteresis: set when `trip`, cleared when `clear`, kept in
 * between (the band where the reading is back inside the limit but not yet
 * by the hysteresis). */
static uint32_t fsm__band(uint32_t active, uint32_t bit, bool trip, bool clear)
{
    if (trip)
        return active | bit;
    if (clear)
        return active & ~bit;
    return active;
}

static bool fsm__battery_plausible(const ems_fsm_limits_t *l, const ems_io_sample_t *s)
{
    double v = s->battery_voltage, i = s->battery_current, p = s->battery_power;
    double soc = s->battery_soc;
    if (!isfinite(v) || !isfinite(i) || !isfinite(p) || !isfinite(soc))
        return false;
    if (v < l->plausible_voltage_min_v || v > l->plausible_voltage_max_v)
        return false;
    if (fabs(i) > EMS_FSM__CURRENT_PLAUSIBLE_FACTOR * l->current_max_a)
        return false;
    if (soc < 0.0 || soc > 100.0)
        return false;
    /* The three readings come from different places (shunt, voltage tap,
     * inverter); if they disagree, at least one of them lies. */
    double vi = v * i;
    double tol = fmax(l->power_tolerance_w, l->power_tolerance_frac * fabs(vi));
    return fabs(p - vi) <= tol;
}

static bool fsm__temp_plausible(const ems_fsm_limits_t *l, const ems_io_sample_t *s)
{
    double t = s->battery_temperature;
    return isfinite(t) && t >= l->plausible_temp_min_c && t <= l->plausible_temp_max_c;
}

static bool fsm__grid_plausible(const ems_io_sample_t *s)
{
    /* 0 V and 0 Hz are plausible: that is what a grid outage looks like,
     * and it is a GRID_FAULT, not a broken meter. */
    double v = s->grid_voltage, p = s->grid_power, hz = s->grid_frequency;
    return isfinite(v) && isfinite(p) && isfinite(hz) && v >= 0 &&
           v <= EMS_FSM__GRID_V_PLAUSIBLE_MAX && hz >= 0 && hz <= EMS_FSM__GRID_F_PLAUSIBLE_MAX &&
           fabs(p) <= EMS_FSM__GRID_P_PLAUSIBLE_MAX;
}

static bool fsm__fresh(const ems_fsm_limits_t *l, int64_t t_ms, int64_t now_ms)
{
    return now_ms - t_ms <= l->stale_ms;
}

/* Recomputes f->active from one sample. A group that is stale or implausible
 * raises SENSOR_FAULT and keeps the value faults it had, because a broken
 * sensor can neither confirm nor clear them. */
static void fsm__faults(ems_fsm_t *f, const ems_io_sample_t *s, int64_t now_ms)
{
    const ems_fsm_limits_t *l = &f->lim;
    uint32_t a = f->active;
    bool bat_ok = fsm__fresh(l, s->battery_ms, now_ms) && fsm__battery_plausible(l, s);
    bool temp_ok = fsm__fresh(l, s->temp_ms, now_ms) && fsm__temp_plausible(l, s);
    bool grid_ok = fsm__fresh(l, s->grid_ms, now_ms) && fsm__grid_plausible(s);

    a = fsm__band(a, EMS_FAULT_SENSOR_FAULT, !(bat_ok && temp_ok && grid_ok),
                  bat_ok && temp_ok && grid_ok);

    if (temp_ok) {
        double t = s->battery_temperature;
        a = fsm__band(a, EMS_FAULT_OVERHEAT, t > l->temp_max_c,
                      t <= l->temp_max_c - l->temp_hysteresis_c);
        a = fsm__band(a, EMS_FAULT_UNDERTEMP, t < l->temp_min_c,
                      t >= l->temp_min_c + l->temp_hysteresis_c);
    }
    if (bat_ok) {
        double v = s->battery_voltage, i = fabs(s->battery_current);
        a = fsm__band(a, EMS_FAULT_OVERVOLTAGE, v > l->voltage_max_v,
                      v <= l->voltage_max_v - l->voltage_hysteresis_v);
        a = fsm__band(a, EMS_FAULT_UNDERVOLTAGE, v < l->voltage_min_v,
                      v >= l->voltage_min_v + l->voltage_hysteresis_v);
        a = fsm__band(a, EMS_FAULT_OVERCURRENT, i > l->current_max_a,
                      i <= l->current_max_a - l->current_hysteresis_a);
    }
    if (grid_ok) {
        /* A grid excursion must persist for grid_fault_ticks samples: single
         * samples outside the window are meter noise and switching
         * transients, and the inverter's own grid protection acts on those
         * within milliseconds anyway. */
        bool bad =
            s->grid_voltage < l->grid_voltage_min_v || s->grid_voltage > l->grid_voltage_max_v ||
            s->grid_frequency < l->grid_freq_min_hz || s->grid_frequency > l->grid_freq_max_hz;
        f->grid_bad_ticks = bad ? f->grid_bad_ticks + 1 : 0;
        a = fsm__band(a, EMS_FAULT_GRID_FAULT, f->grid_bad_ticks >= l->grid_fault_ticks, !bad);
    }
    f->active = a;

    /* The SoC window flags follow the SoC with their own hysteresis and are
     * kept while the battery readings cannot be trusted. */
    if (bat_ok) {
        double soc = s->battery_soc;
        f->have_soc = true;
        f->last_soc = soc;
        if (soc >= l->soc_max)
            f->full = true;
        else if (soc < l->soc_max - l->soc_hysteresis)
            f->full = false;
        if (soc <= l->soc_min)
            f->empty = true;
        else if (soc > l->soc_min + l->soc_hysteresis)
            f->empty = false;
    }
}

/* ---------------------------------------------------------------- strategy */

/* The battery power the active mode asks for, before the SoC window. */
static double fsm__desired(const ems_fsm_t *f, const ems_io_sample_t *s)
{
    const ems_fsm_limits_t *l = &f->lim;
    switch (f->target) {
    case EMS_TARGET_MANUAL_CHARGE:
        return f->target_power;
    case EMS_TARGET_MANUAL_DISCHARGE:
        return -f->target_power;
    case EMS_TARGET_MANUAL_IDLE:
        return 0.0;
    case EMS_TARGET_AUTO:
    default:
        break;
    }
    /* Self-consumption: the house balance without the battery is the grid
     * power minus what the battery draws now (grid = load - pv + battery).
     * Steering the battery to the negative of that brings the grid to 0. */
    double house = s->grid_power - s->battery_power; /* > 0: the house imports */
    double want = -house;
    /* Deadband with hysteresis: start only above the deadband, keep running
     * down to half of it, so a balance near the edge does not toggle. */
    bool running = (want > 0 && f->state == EMS_STATE_CHARGING) ||
                   (want < 0 && f->state == EMS_STATE_DISCHARGING);
    double band = running ? l->auto_deadband_w / 2.0 : l->auto_deadband_w;
    if (fabs(want) <= band)
        return 0.0;
    if (want > l->max_charge_w)
        want = l->max_charge_w;
    if (want < -l->max_discharge_w)
        want = -l->max_discharge_w;
    return want;
}

static void fsm__control(ems_fsm_t *f, const ems_io_sample_t *s, ems_fsm_output_t *out)
{
    double d = fsm__desired(f, s);
    if (d > 0 && f->full) {
        f->state = EMS_STATE_FULL;
        d = 0;
    } else if (d < 0 && f->empty) {
        f->state = EMS_STATE_EMPTY;
        d = 0;
    } else if (d > 0) {
        f->state = EMS_STATE_CHARGING;
    } else if (d < 0) {
        f->state = EMS_STATE_DISCHARGING;
    } else if (f->full) {
        f->state = EMS_STATE_FULL;
    } else if (f->empty) {
        f->state = EMS_STATE_EMPTY;
    } else {
        f->state = EMS_STATE_IDLE;
    }
    out->setpoint_w = d;
}

/* ---------------------------------------------------------------- the step */

static void fsm__cloud_policy(ems_fsm_t *f, bool connected, int64_t now_ms, ems_fsm_output_t *out)
{
    if (connected) {
        f->cloud_lost_ms = -1;
        return;
    }
    if (f->cloud_lost_ms < 0)
        f->cloud_lost_ms = now_ms;
    if (f->target != EMS_TARGET_AUTO && f->lim.manual_timeout_ms > 0 &&
        now_ms - f->cloud_lost_ms >= f->lim.manual_timeout_ms) {
        /* Nobody can see or end the manual mode any more: fall back to the
         * strategy that needs no operator. */
        f->target = EMS_TARGET_AUTO;
        f->target_power = 0;
        f->mode_gen++;
        out->reverted_to_auto = true;
    }
}

void ems_fsm_step(ems_fsm_t *f, const ems_fsm_input_t *in, int64_t now_ms, ems_fsm_output_t *out)
{
    ems_state_t before = f->state;
    memset(out, 0, sizeof *out);

    fsm__faults(f, &in->sample, now_ms);
    fsm__cloud_policy(f, in->cloud_connected, now_ms, out);

    /* Safety first: an active fault ends everything else in this tick. */
    if (f->active) {
        f->latched |= f->active;
        f->state = EMS_STATE_ERROR;
        out->setpoint_w = 0.0;
    } else if (f->state == EMS_STATE_ERROR) {
        out->setpoint_w = 0.0; /* latched until RESET_ERROR */
    } else {
        fsm__control(f, &in->sample, out);
    }

    f->applied_gen = f->mode_gen;
    out->state = f->state;
    out->target_mode = f->target;
    out->mode = f->target == EMS_TARGET_AUTO ? EMS_MODE_AUTO : EMS_MODE_MANUAL;
    out->target_power = f->target_power;
    out->active_faults = f->active;
    out->error_flags = f->latched | f->active;
    out->state_changed = f->state != before;
    out->entered_error = f->state == EMS_STATE_ERROR && before != EMS_STATE_ERROR;
}

/* ---------------------------------------------------------------- commands */

int ems_fsm_set_mode(ems_fsm_t *f, ems_target_mode_t mode, double power_w, uint64_t *gen_out)
{
    if ((unsigned)mode >= EMS_TARGET_COUNT)
        return EMS_EINVAL;
    bool needs_power = mode == EMS_TARGET_MANUAL_CHARGE || mode == EMS_TARGET_MANUAL_DISCHARGE;
    if (needs_power && (!isfinite(power_w) || power_w < 0))
        return EMS_EINVAL;
    if (f->state == EMS_STATE_ERROR)
        return EMS_EPERM;
    f->target = mode;
    f->target_power = needs_power ? power_w : 0.0;
    f->mode_gen++;
    if (gen_out)
        *gen_out = f->mode_gen;
    return 0;
}

int ems_fsm_reset_error(ems_fsm_t *f, uint32_t *active_out, uint64_t *gen_out)
{
    if (active_out)
        *active_out = f->active;
    if (f->state != EMS_STATE_ERROR)
        return EMS_EPERM;
    if (f->active)
        return EMS_EAGAIN;
    /* IDLE until the next step decides. The machine comes back in AUTO,
     * the strategy that needs no operator: a manual mode that ran into a
     * fault is not resumed behind the operator's back; they command it
     * again if they still want it (docs/state-machine.md). */
    f->state = EMS_STATE_IDLE;
    f->target = EMS_TARGET_AUTO;
    f->target_power = 0.0;
    f->latched = 0;
    f->grid_bad_ticks = 0;
    f->mode_gen++;
    if (gen_out)
        *gen_out = f->mode_gen;
    return 0;
}

void ems_fsm_restore_error(ems_fsm_t *f, uint32_t flags)
{
    f->state = EMS_STATE_ERROR;
    f->latched = flags & EMS_FAULT_ALL;
    f->target = EMS_TARGET_AUTO;
    f->target_power = 0.0;
    f->mode_gen++;
}

bool ems_fsm_applied(const ems_fsm_t *f, uint64_t gen)
{
    return f->applied_gen >= gen;
}

ems_state_t ems_fsm_state(const ems_fsm_t *f)
{
    return f->state;
}

ems_target_mode_t ems_fsm_target_mode(const ems_fsm_t *f)
{
    return f->target;
}

double ems_fsm_target_power(const ems_fsm_t *f)
{
    return f->target_power;
}

uint32_t ems_fsm_active_faults(const ems_fsm_t *f)
{
    return f->active;
}

const ems_fsm_limits_t *ems_fsm_limits(const ems_fsm_t *f)
{
    return &f->lim;
}

bool ems_fsm_is_full(const ems_fsm_t *f)
{
    return f->full;
}

bool ems_fsm_is_empty(const ems_fsm_t *f)
{
    return f->empty;
}

double ems_fsm_last_soc(const ems_fsm_t *f)
{
    return f->have_soc ? f->last_soc : NAN;
}

const char *ems_fsm_faults_format(uint32_t flags, char *buf, size_t cap)
{
    if (!cap)
        return buf;
    buf[0] = '\0';
    size_t n = 0;
    for (unsigned i = 0; i < EMS_FAULT_COUNT; i++) {
        uint32_t bit = 1u << i;
        if (!(flags & bit))
            continue;
        const char *name = ems_fault_name(bit);
        int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", name ? name : "?");
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
    if (n == 0)
        snprintf(buf, cap, "none");
    return buf;
}
