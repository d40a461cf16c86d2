// Energy buckets: completeness and the derived figures (src/energy.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bucketStatus, summarize, scaleMax, energy, percent, periodQuery } from '../../src/energy.js';

const DAY = 86400;
const NOW = Date.parse('2026-10-27T12:00:00Z');

function day(local, over = {}) {
    const start = Date.parse(`${local}T00:00:00Z`);
    return {
        local, start: new Date(start).toISOString(), end: new Date(start + DAY * 1000).toISOString(),
        length_s: DAY, samples: 1440, covered_s: DAY,
        battery_charged_wh: 1000, battery_discharged_wh: 800, grid_import_wh: 300, grid_export_wh: 100, ...over,
    };
}
const NONE = { samples: 0, covered_s: 0, battery_charged_wh: null, battery_discharged_wh: null, grid_import_wh: null, grid_export_wh: null };

test('a day without samples has no data: unknown, not zero', () => {
    assert.deepEqual(bucketStatus(day('2026-10-25', NONE), NOW), { status: 'none', coverage: null });
});

test('a whole day covered is complete; a day covered for an hour is partial', () => {
    assert.equal(bucketStatus(day('2026-10-25'), NOW).status, 'complete');
    const p = bucketStatus(day('2026-10-25', { samples: 60, covered_s: 3600 }), NOW);
    assert.equal(p.status, 'partial');
    assert.ok(Math.abs(p.coverage - 1 / 24) < 1e-9);
});

test('today is judged against the time that has passed, not the whole day', () => {
    // 12 h into the day with 11.5 h covered: running, not partial.
    assert.equal(bucketStatus(day('2026-10-27', { covered_s: 11.5 * 3600 }), NOW).status, 'running');
    assert.equal(bucketStatus(day('2026-10-27', { covered_s: 600 }), NOW).status, 'partial');
});

test('the day summer time ends (25 h) is complete only when 25 h are covered', () => {
    const b = day('2026-10-25', { length_s: 90000, covered_s: DAY });
    assert.equal(bucketStatus(b, NOW).status, 'complete'); // 24/25 = 96 %
    assert.equal(bucketStatus({ ...b, covered_s: 72000 }, NOW).status, 'partial'); // 80 %
});

test('fleet buckets count device-time: 3 devices over one day need 3 device-days', () => {
    const b = day('2026-10-25', { devices: 3, covered_s: DAY });
    const s = bucketStatus(b, NOW);
    assert.equal(s.status, 'partial');
    assert.ok(Math.abs(s.coverage - 1 / 3) < 1e-9);
    assert.equal(bucketStatus({ ...b, covered_s: 3 * DAY }, NOW).status, 'complete');
});

test('summarize: totals, round-trip efficiency, battery share and net grid over the days with data', () => {
    const s = summarize([day('2026-10-24'), day('2026-10-25', NONE), day('2026-10-26', { samples: 10, covered_s: 600, battery_charged_wh: 1000, battery_discharged_wh: 900, grid_import_wh: 100, grid_export_wh: 300 })], NOW);
    assert.deepEqual(s.totals, { battery_charged_wh: 2000, battery_discharged_wh: 1700, grid_import_wh: 400, grid_export_wh: 400 });
    assert.equal(s.withData, 2);
    assert.equal(s.missing, 1);
    assert.equal(s.partial, 1);
    assert.equal(s.roundTrip, 0.85);
    assert.equal(s.batteryShare, 1700 / 2100);
    assert.equal(s.netGrid, 0);
});

test('summarize without any data: every figure unknown', () => {
    const s = summarize([day('2026-10-25', NONE), day('2026-10-26', NONE)], NOW);
    assert.equal(s.withData, 0);
    assert.equal(s.missing, 2);
    assert.equal(s.totals.battery_charged_wh, null);
    assert.equal(s.roundTrip, null);
    assert.equal(s.batteryShare, null);
    assert.equal(s.netGrid, null);
});

test('no charging means no round-trip efficiency (not infinity)', () => {
    const s = summarize([day('2026-10-24', { battery_charged_wh: 0, battery_discharged_wh: 50 })], NOW);
    assert.equal(s.roundTrip, null);
    assert.equal(s.batteryShare, 50 / 350);
});

test('a bucket that has not started is neither data nor missing', () => {
    const s = summarize([day('2026-10-28', NONE)], NOW);
    assert.equal(s.missing, 0);
    assert.equal(s.withData, 0);
});

test('scale, energy and percent formatting', () => {
    assert.equal(scaleMax([day('2026-10-24'), day('2026-10-25', NONE)]), 1000);
    assert.equal(scaleMax([]), 1);
    assert.equal(energy(null), '–');
    assert.equal(energy(12.345), '12.3\u00a0Wh');
    assert.equal(energy(2500), '2500\u00a0Wh');
    assert.equal(energy(12345), '12.3\u00a0kWh');
    assert.equal(energy(-200), '\u2212200\u00a0Wh');
    assert.equal(percent(0.853), '85\u00a0%');
    assert.equal(percent(null), '–');
});

test('periods: 7 days back to today, 12 months back to this month', () => {
    const d = periodQuery({ days: 7 }, NOW);
    assert.equal(d.bucket, 'day');
    assert.equal(d.to, '2026-10-27T12:00:00.000Z');
    assert.equal(d.from, '2026-10-21T12:00:00.000Z');
    const m = periodQuery({ months: 12 }, Date.parse('2026-03-31T10:00:00Z'));
    assert.equal(m.bucket, 'month');
    assert.equal(m.from.slice(0, 7), '2025-04');
});
