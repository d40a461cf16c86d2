/* energy.c: the edge's energy counters (see energy.h). */
#include "energy.h"

#include <math.h>
#include <string.h>

static const char *const energy__names[EMS_ENERGY_COUNT] = {"battery_charged", "battery_discharged",
                                                            "grid_import", "grid_export"};

const char *ems_edge_energy_name(ems_energy_counter_t c)
{
    return (unsigned)c < EMS_ENERGY_COUNT ? energy__names[c] : NULL;
}

void ems_edge_energy_init(ems_edge_energy_t *e, int64_t period_ms, int64_t since_ms,
                          const uint64_t start_mwh[EMS_ENERGY_COUNT])
{
    memset(e, 0, sizeof *e);
    e->since_ms = since_ms;
    e->max_dt_ms = 2 * (period_ms > 0 ? period_ms : 1000);
    for (int i = 0; i < EMS_ENERGY_COUNT; i++)
        e->count_mwh[i] = e->ceiling_mwh[i] = start_mwh ? start_mwh[i] : 0;
}

/* Adds `mwh` (>= 0) to counter c, carrying the fraction of a mWh. */
static void energy__count(ems_edge_energy_t *e, int c, double mwh)
{
    double f = e->frac_mwh[c] + mwh;
    double whole = floor(f);
    e->count_mwh[c] += (uint64_t)whole;
    e->frac_mwh[c] = f - whole;
}

void ems_edge_energy_add(ems_edge_energy_t *e, ems_energy_group_t group, double watts,
                         int64_t reading_ms)
{
    if ((unsigned)group >= EMS_ENERGY_GROUPS || !isfinite(watts))
        return;
    int64_t last = e->last_ms[group];
    if (last != 0 && reading_ms <= last)
        return; /* not read again since: nothing new to integrate */
    e->last_ms[group] = reading_ms;
    e->power_w[group] = watts;
    if (last == 0)
        return; /* the first reading starts the interval */
    int64_t dt = reading_ms - last;
    if (dt > e->max_dt_ms) {
        dt = e->max_dt_ms;
        e->dt_capped++;
    }
    /* W x ms / 3600 = mWh. The plant and the protocol bound |watts| by
     * 1e7, so one interval is at most ~5.6e3 mWh: no overflow. */
    double mwh = fabs(watts) * (double)dt / 3600.0;
    int base = group == EMS_ENERGY_BATTERY ? EMS_ENERGY_BATTERY_CHARGED : EMS_ENERGY_GRID_IMPORT;
    if (watts > 0)
        energy__count(e, base, mwh);
    else if (watts < 0)
        energy__count(e, base + 1, mwh);
}

bool ems_edge_energy_needs_persist(const ems_edge_energy_t *e)
{
    for (int i = 0; i < EMS_ENERGY_COUNT; i++)
        if (e->count_mwh[i] > e->ceiling_mwh[i])
            return true;
    return false;
}

void ems_edge_energy_propose(const ems_edge_energy_t *e, bool exact,
                             uint64_t out_mwh[EMS_ENERGY_COUNT])
{
    for (int i = 0; i < EMS_ENERGY_COUNT; i++) {
        uint64_t margin = 0;
        if (!exact) {
            /* The power that feeds this counter: the group's last power if
             * its sign matches (even counters take > 0, odd ones < 0). */
            double w = e->power_w[i / 2];
            double feed = (i % 2 == 0) ? (w > 0 ? w : 0) : (w < 0 ? -w : 0);
            double m = feed * EMS_ENERGY_RESERVE_S / 3.6; /* W x s -> mWh */
            margin = m > EMS_ENERGY_MIN_MARGIN_MWH ? (uint64_t)ceil(m) : EMS_ENERGY_MIN_MARGIN_MWH;
        }
        /* count >= every value reported (those are min(count, ceiling)),
         * so any ceiling >= count keeps the promise, even a lower one. */
        out_mwh[i] = e->count_mwh[i] + margin;
    }
}

void ems_edge_energy_persisted(ems_edge_energy_t *e, const uint64_t ceiling_mwh[EMS_ENERGY_COUNT])
{
    memcpy(e->ceiling_mwh, ceiling_mwh, sizeof e->ceiling_mwh);
}

void ems_edge_energy_report(const ems_edge_energy_t *e, uint64_t out_mwh[EMS_ENERGY_COUNT])
{
    for (int i = 0; i < EMS_ENERGY_COUNT; i++)
        out_mwh[i] = e->count_mwh[i] < e->ceiling_mwh[i] ? e->count_mwh[i] : e->ceiling_mwh[i];
}
