// Turning telemetry points into chart columns. Pure functions, no DOM, so
// the unit tests in test/unit/ run them under plain node.
//
// uPlot draws a line between every two neighbouring non-null values, so a
// stretch without data must be marked by a null. The history API leaves an
// empty bucket out (docs/api.md), and a device that is offline sends nothing,
// so wherever two consecutive points are further apart than one step we put
// a null between them: the line breaks there, it is never drawn across.

/** Raw telemetry comes every 1.0 s; a hole longer than this is a gap. */
export const RAW_GAP_SECONDS = 2.5;

/** The largest distance between two points that is not a gap. */
export function gapThreshold(bucketSeconds) {
    return bucketSeconds > 1 ? bucketSeconds * 1.5 : RAW_GAP_SECONDS;
}

/**
 * Columns for uPlot from points sorted or not by time.
 *
 * points: objects with `t` (RFC 3339 string or epoch ms) and numeric members.
 * keys: the members to take, one column each (a missing value is null).
 * Returns { x: [epoch seconds], cols: {key: [..]}, gaps: [{from, to}] (epoch
 * seconds of the last point before and the first after each hole),
 * backfilled: [bool per x] }.
 */
export function toColumns(points, bucketSeconds, keys, opts = {}) {
    const thr = opts.threshold ?? gapThreshold(bucketSeconds);
    const rows = [];
    for (const p of points) {
        const ms = typeof p.t === 'number' ? p.t : Date.parse(p.t);
        if (Number.isFinite(ms)) rows.push({ s: ms / 1000, p });
    }
    rows.sort((a, b) => a.s - b.s);

    const x = [];
    const cols = Object.fromEntries(keys.map((k) => [k, []]));
    const backfilled = [];
    const gaps = [];
    let prev = null;
    for (const r of rows) {
        if (prev !== null && r.s <= prev) continue; // uPlot needs strictly increasing x
        if (prev !== null && r.s - prev > thr) {
            gaps.push({ from: prev, to: r.s });
            x.push((prev + r.s) / 2);
            for (const k of keys) cols[k].push(null);
            backfilled.push(false);
        }
        x.push(r.s);
        for (const k of keys) {
            const v = r.p[k];
            cols[k].push(typeof v === 'number' && Number.isFinite(v) ? v : null);
        }
        backfilled.push(r.p.backfill === true || (r.p.backfill_count ?? 0) > 0);
        prev = r.s;
    }
    return { x, cols, gaps, backfilled };
}

/**
 * Holes at the edges of a requested range: no data at all between `from`
 * and the first point, or between the last point and `to` (epoch seconds).
 * A bucket is stamped with its start, so the end allows one more bucket.
 */
export function edgeGaps(x, from, to, bucketSeconds) {
    const thr = gapThreshold(bucketSeconds);
    const step = bucketSeconds > 1 ? bucketSeconds : 0;
    if (x.length === 0) return to - from > thr ? [{ from, to }] : [];
    const out = [];
    if (x[0] - from > thr) out.push({ from, to: x[0] });
    if (to - (x[x.length - 1] + step) > thr) out.push({ from: x[x.length - 1] + step, to });
    return out;
}

/**
 * A short rolling buffer of live samples for the live chart: time in epoch
 * seconds, kept sorted, trimmed to `windowSeconds` behind the newest sample.
 */
export class LiveBuffer {
    constructor(windowSeconds = 600) {
        this.windowSeconds = windowSeconds;
        this.rows = []; // {s, battery_power, grid_power, soc}
    }

    /** Adds a telemetry packet; out-of-order (backfilled) packets go in their place. */
    add(packet) {
        const ms = Date.parse(packet.timestamp);
        if (!Number.isFinite(ms)) return false;
        const row = {
            s: ms / 1000,
            battery_power: packet.battery?.power ?? null,
            grid_power: packet.grid?.power ?? null,
            soc: packet.battery?.soc ?? null,
        };
        const rows = this.rows;
        let i = rows.length;
        while (i > 0 && rows[i - 1].s > row.s) i--;
        if (i > 0 && rows[i - 1].s === row.s) return false; // already have it
        rows.splice(i, 0, row);
        this.trim();
        return true;
    }

    trim(nowSeconds) {
        const rows = this.rows;
        if (rows.length === 0) return;
        const newest = Math.max(rows[rows.length - 1].s, nowSeconds ?? -Infinity);
        const cut = newest - this.windowSeconds - RAW_GAP_SECONDS;
        let n = 0;
        while (n < rows.length && rows[n].s < cut) n++;
        if (n) rows.splice(0, n);
    }

    newest() {
        return this.rows.length ? this.rows[this.rows.length - 1].s : null;
    }

    /** uPlot data: [x, battery_power, grid_power, soc] with gaps as nulls. */
    columns() {
        const pts = this.rows.map((r) => ({ t: r.s * 1000, ...r }));
        const c = toColumns(pts, 1, ['battery_power', 'grid_power', 'soc']);
        return { data: [c.x, c.cols.battery_power, c.cols.grid_power, c.cols.soc], gaps: c.gaps };
    }
}

/** Resolution the API picks for `auto` (docs/api.md), for labels before an answer. */
export function autoResolution(rangeSeconds) {
    // raw up to 2 h, then the finest width that covers the range in at most
    // 4000 buckets (gw_ranges_auto_bucket in the gateway).
    if (rangeSeconds <= 2 * 3600) return 'raw';
    if (rangeSeconds <= 3999 * 60) return '1m';
    if (rangeSeconds <= 3999 * 3600) return '1h';
    return '1d';
}
