// The history tab: a range (last hour, day, week, or custom), the resolution
// the range calls for, a chart that breaks its lines where data is missing,
// backfilled data marked, the missing stretches listed in words, and CSV.

import { api, telemetryUrl } from '../api.js';
import { h, add, setText, clear } from '../dom.js';
import { clock, duration, toLocalInput, isoSeconds } from '../format.js';
import { toColumns, edgeGaps, autoResolution } from '../series.js';
import { createChart, COLORS } from '../chart.js';

const RANGES = [
    { key: '1h', label: 'Last hour', seconds: 3600 },
    { key: '24h', label: 'Last day', seconds: 86400 },
    { key: '7d', label: 'Last week', seconds: 7 * 86400 },
    { key: 'custom', label: 'Custom' },
];

const RESOLUTIONS = [
    { key: 'auto', label: 'Automatic (by range)' },
    { key: 'raw', label: 'Every packet' },
    { key: '1m', label: '1-minute averages' },
    { key: '1h', label: '1-hour averages' },
    { key: '1d', label: '1-day averages' },
];

const KEYS = ['battery_power', 'grid_power', 'soc'];

export function mountHistory(root, { id }) {
    let rangeKey = '1h';
    let seq = 0; // answers of superseded requests are dropped

    const rangeGroup = h('fieldset', { class: 'segmented' }, h('legend', null, 'Range'));
    for (const r of RANGES) {
        const input = h('input', { type: 'radio', name: 'hist-range', id: `hist-range-${r.key}`, value: r.key, checked: r.key === rangeKey });
        input.addEventListener('change', () => {
            rangeKey = r.key;
            custom.hidden = rangeKey !== 'custom';
            if (rangeKey !== 'custom') load();
        });
        rangeGroup.append(h('span', { class: 'seg' }, input, h('label', { for: `hist-range-${r.key}` }, r.label)));
    }
    const now = Date.now();
    const fromInput = h('input', { type: 'datetime-local', id: 'hist-from', value: toLocalInput(now - 3600e3) });
    const toInput = h('input', { type: 'datetime-local', id: 'hist-to', value: toLocalInput(now) });
    const customError = h('p', { class: 'form-error', role: 'alert' });
    const custom = h('div', { class: 'custom-range', hidden: true },
        h('label', { for: 'hist-from' }, 'From'), fromInput,
        h('label', { for: 'hist-to' }, 'To'), toInput,
        h('button', { type: 'button', onclick: () => load() }, 'Show'),
        customError);
    const resSelect = h('select', { id: 'hist-res' }, RESOLUTIONS.map((r) => h('option', { value: r.key }, r.label)));
    resSelect.addEventListener('change', () => load());
    const refresh = h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh');
    const csv = h('a', { class: 'button secondary', id: 'hist-csv', href: '#', download: `${id}.csv` }, 'Export CSV');

    const status = h('p', { class: 'muted', id: 'hist-status', role: 'status', 'aria-live': 'polite' }, 'Loading…');
    const chartBox = h('div', { class: 'chart', id: 'hist-chart', role: 'img', 'aria-label': 'History chart of battery power, grid power and state of charge' });
    const gapBox = h('div', { class: 'gaps', id: 'hist-gaps' });
    const note = h('p', { class: 'muted small' },
        'Lines break where the device sent no data. Orange dots mark data that arrived late from the device\'s buffer (backfill). Above the dashed zero line: charging / importing.');

    root.append(
        h('section', { class: 'card', 'aria-labelledby': 'hist-h' },
            h('h2', { id: 'hist-h' }, 'History'),
            h('div', { class: 'toolbar' }, rangeGroup,
                h('div', { class: 'field' }, h('label', { for: 'hist-res' }, 'Resolution'), resSelect),
                refresh, csv),
            custom, status, chartBox, note, gapBox));

    const chart = createChart(chartBox, {
        height: 300,
        series: [
            { label: 'Battery power', scale: 'W', color: COLORS.battery },
            { label: 'Grid power', scale: 'W', color: COLORS.grid },
            { label: 'SoC', scale: '%', color: COLORS.soc },
        ],
        extraSeries: [{
            label: 'Backfilled',
            scale: 'W',
            stroke: COLORS.backfill,
            fill: COLORS.backfill,
            paths: () => null,
            points: { show: true, size: 6, stroke: COLORS.backfill, fill: COLORS.backfill },
            value: (u, v) => (v == null ? '–' : 'late'),
        }],
    });

    function range() {
        if (rangeKey !== 'custom') {
            const to = Date.now();
            const r = RANGES.find((x) => x.key === rangeKey);
            return { from: to - r.seconds * 1000, to };
        }
        const from = new Date(fromInput.value).getTime();
        const to = new Date(toInput.value).getTime();
        if (!Number.isFinite(from) || !Number.isFinite(to)) return { error: 'Enter both dates.' };
        if (to <= from) return { error: '"To" must be after "From".' };
        if (to - from > 400 * 86400e3) return { error: 'The range can be at most 400 days.' };
        return { from, to };
    }

    async function load() {
        setText(customError, '');
        const r = range();
        if (r.error) {
            setText(customError, r.error);
            return;
        }
        const resolution = resSelect.value;
        const q = { from: isoSeconds(new Date(r.from)), to: isoSeconds(new Date(r.to)), resolution };
        csv.href = telemetryUrl(id, { ...q, format: 'csv' });
        csv.download = `${id}_${q.from}_${q.to}.csv`.replace(/:/g, '');
        const mine = ++seq;
        const expect = resolution === 'auto' ? autoResolution((r.to - r.from) / 1000) : resolution;
        setText(status, `Loading ${expect === 'raw' ? 'every packet' : expect + ' averages'}…`);
        chartBox.setAttribute('aria-busy', 'true');
        try {
            const res = await api.telemetry(id, q);
            if (mine !== seq) return;
            show(res, r);
        } catch (e) {
            if (mine !== seq) return;
            setText(status, `Could not load the history: ${e.message}`);
        } finally {
            if (mine === seq) chartBox.removeAttribute('aria-busy');
        }
    }

    function show(res, r) {
        const bucket = res.bucket_seconds ?? ({ '1m': 60, '1h': 3600, '1d': 86400 }[res.resolution] ?? 1);
        const points = res.points || [];
        const c = toColumns(points, res.resolution === 'raw' ? 1 : bucket, KEYS);
        const marks = c.x.map((_, i) => (c.backfilled[i] ? c.cols.battery_power[i] ?? 0 : null));
        chart.u.setScale('x', { min: r.from / 1000, max: r.to / 1000 });
        chart.setData([c.x, c.cols.battery_power, c.cols.grid_power, c.cols.soc, marks], false);
        chart.u.setScale('x', { min: r.from / 1000, max: r.to / 1000 });

        const edges = edgeGaps(c.x.filter((_, i) => c.cols.soc[i] !== null || c.cols.battery_power[i] !== null),
            r.from / 1000, r.to / 1000, res.resolution === 'raw' ? 1 : bucket);
        const all = [...c.gaps, ...edges].sort((a, b) => a.from - b.from);
        const late = c.backfilled.filter(Boolean).length;
        const partial = res.resolution !== 'raw'
            ? points.filter((p) => typeof p.count === 'number' && p.count < bucket * 0.9).length : 0;

        chartBox.dataset.points = String(points.length);
        chartBox.dataset.gaps = String(c.gaps.length);
        chartBox.dataset.resolution = res.resolution || '';
        chartBox.dataset.backfilled = String(late);

        const resText = res.resolution === 'raw' ? 'every packet' : `${res.resolution} averages`;
        setText(status, points.length === 0
            ? `No data between ${clock(r.from)} and ${clock(r.to)}.`
            : `${points.length} points (${resText}) from ${clock(r.from)} to ${clock(r.to)}` +
              (late ? `; ${late} backfilled` : '') +
              (partial ? `; ${partial} partial buckets (the device was away part of the time)` : '') + '.');

        clear(gapBox);
        if (all.length) {
            add(gapBox, h('h3', null, `Missing data (${all.length})`),
                h('ul', null, all.slice(0, 50).map((g) => h('li', { class: 'gap', dataset: { from: g.from, to: g.to } },
                    `${clock(g.from * 1000)} – ${clock(g.to * 1000)} (${duration(g.to - g.from)})`))),
                all.length > 50 ? h('p', { class: 'muted' }, `and ${all.length - 50} more`) : null);
        }
    }

    load();
    return {
        destroy() {
            seq++;
            chart.destroy();
        },
    };
}
