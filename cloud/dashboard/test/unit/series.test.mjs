// Gap and backfill handling of the chart data (src/series.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toColumns, edgeGaps, gapThreshold, LiveBuffer, autoResolution } from '../../src/series.js';

const T0 = Date.parse('2026-01-31T12:00:00Z');
const at = (s) => new Date(T0 + s * 1000).toISOString();

test('raw points 1 s apart draw one line without nulls', () => {
    const pts = [0, 1, 2, 3].map((s) => ({ t: at(s), battery_power: s * 10 }));
    const c = toColumns(pts, 1, ['battery_power']);
    assert.deepEqual(c.cols.battery_power, [0, 10, 20, 30]);
    assert.equal(c.gaps.length, 0);
});

test('a raw hole longer than 2.5 s becomes a null between the points', () => {
    const pts = [0, 1, 2, 40, 41].map((s) => ({ t: at(s), soc: 50 }));
    const c = toColumns(pts, 1, ['soc']);
    assert.deepEqual(c.cols.soc, [50, 50, 50, null, 50, 50]);
    assert.equal(c.x.length, 6);
    assert.ok(c.x[3] > c.x[2] && c.x[3] < c.x[4], 'the null sits inside the hole');
    assert.deepEqual(c.gaps, [{ from: T0 / 1000 + 2, to: T0 / 1000 + 40 }]);
});

test('a jitter of 2 s between packets is not a gap', () => {
    const c = toColumns([0, 2, 4].map((s) => ({ t: at(s), soc: 1 })), 1, ['soc']);
    assert.equal(c.gaps.length, 0);
});

test('a missing 1-minute bucket is a gap, consecutive buckets are not', () => {
    const pts = [0, 60, 120, 240].map((s) => ({ t: at(s), grid_power: -1 }));
    const c = toColumns(pts, 60, ['grid_power']);
    assert.equal(c.gaps.length, 1);
    assert.deepEqual(c.cols.grid_power, [-1, -1, -1, null, -1]);
    assert.equal(gapThreshold(60), 90);
    assert.equal(gapThreshold(0), 2.5);
});

test('unsorted and duplicate points are sorted and deduplicated', () => {
    const pts = [{ t: at(2), soc: 3 }, { t: at(0), soc: 1 }, { t: at(1), soc: 2 }, { t: at(1), soc: 9 }];
    const c = toColumns(pts, 1, ['soc']);
    assert.deepEqual(c.cols.soc, [1, 2, 3]);
});

test('backfilled points are flagged: raw backfill and bucket backfill_count', () => {
    const raw = toColumns([{ t: at(0), backfill: true }, { t: at(1) }], 1, ['soc']);
    assert.deepEqual(raw.backfilled, [true, false]);
    const agg = toColumns([{ t: at(0), backfill_count: 3 }, { t: at(60), backfill_count: 0 }], 60, ['soc']);
    assert.deepEqual(agg.backfilled, [true, false]);
});

test('missing values and non-numbers become null', () => {
    const c = toColumns([{ t: at(0), soc: 'x' }, { t: at(1) }], 1, ['soc', 'grid_power']);
    assert.deepEqual(c.cols.soc, [null, null]);
    assert.deepEqual(c.cols.grid_power, [null, null]);
});

test('edge gaps: no data at the start or end of the range', () => {
    const s0 = T0 / 1000;
    assert.deepEqual(edgeGaps([s0 + 100, s0 + 101], s0, s0 + 102, 1), [{ from: s0, to: s0 + 100 }]);
    assert.deepEqual(edgeGaps([s0, s0 + 1], s0, s0 + 50, 1), [{ from: s0 + 1, to: s0 + 50 }]);
    assert.deepEqual(edgeGaps([], s0, s0 + 50, 1), [{ from: s0, to: s0 + 50 }]);
    // A 1-minute bucket stamped at its start covers the following minute.
    assert.deepEqual(edgeGaps([s0, s0 + 60], s0, s0 + 150, 60), []);
});

test('the live buffer keeps ten minutes, inserts late packets in order and breaks at holes', () => {
    const b = new LiveBuffer(600);
    const pkt = (s, p) => ({ timestamp: at(s), battery: { power: p, soc: 50 }, grid: { power: -p } });
    for (let s = 0; s < 700; s++) if (s < 300 || s > 320) b.add(pkt(s, s));
    assert.ok(b.rows[0].s >= T0 / 1000 + 699 - 600 - 2.5, 'old samples were trimmed');
    let { data, gaps } = b.columns();
    assert.equal(gaps.length, 1);
    assert.equal(data[0].length, data[1].length);
    // A backfilled packet fills part of the hole at its place.
    assert.equal(b.add(pkt(310, 310)), true);
    assert.equal(b.add(pkt(310, 310)), false, 'a packet already held is not added twice');
    ({ data, gaps } = b.columns());
    assert.equal(gaps.length, 2);
    for (let i = 1; i < data[0].length; i++) assert.ok(data[0][i] > data[0][i - 1]);
});

test('auto resolution follows docs/api.md', () => {
    assert.equal(autoResolution(3600), 'raw');
    assert.equal(autoResolution(7200), 'raw');
    assert.equal(autoResolution(86400), '1m');
    assert.equal(autoResolution(7 * 86400), '1h');
    assert.equal(autoResolution(3999 * 60), '1m');
    assert.equal(autoResolution(2.9 * 86400), '1h');
    assert.equal(autoResolution(3999 * 3600), '1h');
    assert.equal(autoResolution(170 * 86400), '1d');
    assert.equal(autoResolution(400 * 86400), '1d');
});
