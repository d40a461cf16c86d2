// Energy per day or month (GET /api/devices/{id}/energy, GET /api/energy):
// the pure part of the energy view. It says how complete each bucket is and
// derives the figures over the period. No DOM here, so node tests it
// (test/unit/energy.test.mjs). How the figures are defined: docs/energy.md,
// "The dashboard".

export const KEYS = ['battery_charged_wh', 'battery_discharged_wh', 'grid_import_wh', 'grid_export_wh'];

export const LABELS = {
    battery_charged_wh: 'Charged',
    battery_discharged_wh: 'Discharged',
    grid_import_wh: 'Imported',
    grid_export_wh: 'Exported',
};

/** A bucket counts as complete when its counters cover this share of it. */
export const COMPLETE = 0.9;

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

/**
 * How complete one bucket is:
 *   'none'     no packet with counters at all: the energy is unknown (null);
 *   'partial'  covered for less than COMPLETE of the time that has passed
 *              (its energy may include an earlier gap or miss part of it);
 *   'running'  the bucket has not ended yet but is covered so far;
 *   'complete' covered for at least COMPLETE of its length.
 * For the fleet (`devices` present) the time is per device that sent
 * counters in the bucket: 3 devices over a whole day are 3 device-days.
 * Returns {status, coverage (0..1 or null)}.
 */
export function bucketStatus(b, nowMs = Date.now()) {
    if (!b || !(b.samples > 0) || KEYS.every((k) => !isNum(b[k]))) return { status: 'none', coverage: null };
    const start = Date.parse(b.start);
    const end = Date.parse(b.end);
    const length = isNum(b.length_s) ? b.length_s : (end - start) / 1000;
    const running = Number.isFinite(end) && end > nowMs;
    const elapsed = running && Number.isFinite(start) ? Math.max(60, (nowMs - start) / 1000) : length;
    const devices = isNum(b.devices) && b.devices > 0 ? b.devices : 1;
    const coverage = Math.min(1, (b.covered_s || 0) / (Math.min(elapsed, length) * devices));
    if (coverage < COMPLETE) return { status: 'partial', coverage };
    return { status: running ? 'running' : 'complete', coverage };
}

/**
 * The totals over a period and the figures derived from them:
 *   roundTrip   discharged / charged (null without charging). Only a fair
 *               battery efficiency when the battery holds about the same
 *               energy at the end of the period as at its start.
 *   batteryShare discharged / (discharged + imported): of the energy drawn
 *               from the battery and the grid together, the battery's part.
 *   netGrid     imported - exported (> 0: bought more than sold).
 * Self-sufficiency (1 - imported / consumption) is not derivable: the
 * counters do not include the house's consumption or the solar production
 * (docs/energy.md).
 * Buckets without data add nothing and are counted in `missing`; partial
 * buckets add what they have and are counted in `partial`.
 */
export function summarize(buckets, nowMs = Date.now()) {
    const totals = Object.fromEntries(KEYS.map((k) => [k, 0]));
    let withData = 0, missing = 0, partial = 0, running = 0;
    for (const b of buckets || []) {
        const s = bucketStatus(b, nowMs).status;
        if (s === 'none') {
            // A bucket that has not started yet is not "missing".
            if (!(Date.parse(b.start) > nowMs)) missing++;
            continue;
        }
        withData++;
        if (s === 'partial') partial++;
        if (s === 'running') running++;
        for (const k of KEYS) if (isNum(b[k])) totals[k] += b[k];
    }
    const c = totals.battery_charged_wh, d = totals.battery_discharged_wh;
    const i = totals.grid_import_wh, e = totals.grid_export_wh;
    return {
        totals: withData ? totals : Object.fromEntries(KEYS.map((k) => [k, null])),
        buckets: (buckets || []).length,
        withData,
        missing,
        partial,
        running,
        roundTrip: withData && c > 0 ? d / c : null,
        batteryShare: withData && d + i > 0 ? d / (d + i) : null,
        netGrid: withData ? i - e : null,
    };
}

/** The largest energy of any key in any bucket (the bars' full height), at least 1 Wh. */
export function scaleMax(buckets) {
    let m = 0;
    for (const b of buckets || []) for (const k of KEYS) if (isNum(b[k]) && b[k] > m) m = b[k];
    return Math.max(1, m);
}

/** Energy in Wh below 10 kWh, in kWh above (unsigned: the key says the direction). */
export function energy(wh) {
    if (!isNum(wh)) return '–';
    const a = Math.abs(wh);
    const sign = wh < 0 ? '\u2212' : '';
    if (a >= 10000) return `${sign}${(a / 1000).toFixed(a >= 1e6 ? 0 : 1)}\u00a0kWh`;
    return `${sign}${a.toFixed(a >= 100 ? 0 : 1)}\u00a0Wh`;
}

/** A ratio as a percentage, "–" when it is unknown. */
export function percent(r, digits = 0) {
    return isNum(r) ? `${(r * 100).toFixed(digits)}\u00a0%` : '–';
}

/**
 * The query of a period: `days` buckets ending with today (bucket 'day'),
 * or `months` buckets ending with this month (bucket 'month'). Times, not
 * dates: the API's days are those of the gateway's time zone, which the
 * browser does not know; the first bucket is the one holding `from`.
 */
export function periodQuery(p, nowMs = Date.now()) {
    const to = new Date(nowMs);
    if (p.months) {
        const from = new Date(nowMs);
        from.setUTCDate(15); // mid-month: stepping back never lands in a neighbour
        from.setUTCMonth(from.getUTCMonth() - (p.months - 1));
        return { bucket: 'month', from: from.toISOString(), to: to.toISOString() };
    }
    return { bucket: 'day', from: new Date(nowMs - (p.days - 1) * 86400e3).toISOString(), to: to.toISOString() };
}
