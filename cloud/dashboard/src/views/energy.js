// Energy per day or month: of one device (the device's Energy tab) or of the
// whole fleet (#/energy). Bars per bucket for charged, discharged, imported
// and exported energy; the figures derived over the period; a table with
// every bucket and how complete it is. A bucket without data shows "no
// data" (its energy is unknown, not 0); one with little coverage is marked
// partial (docs/energy.md, "The dashboard").

import { api, energyUrl } from '../api.js';
import { h, add, setText, clear } from '../dom.js';
import { KEYS, LABELS, bucketStatus, summarize, scaleMax, energy, percent, periodQuery } from '../energy.js';

const PERIODS = [
    { key: '7d', label: 'Last 7 days', days: 7 },
    { key: '30d', label: 'Last 30 days', days: 30 },
    { key: '12m', label: 'Last 12 months', months: 12 },
];

const CLASSES = {
    battery_charged_wh: 'charged',
    battery_discharged_wh: 'discharged',
    grid_import_wh: 'imported',
    grid_export_wh: 'exported',
};

const STATUS_TEXT = { none: 'no data', partial: 'partial', running: 'in progress', complete: 'complete' };

/** id: a device id, or null for the fleet. */
export function mountEnergy(root, { id }) {
    const fleet = !id;
    const pre = fleet ? 'fleet-energy' : 'energy';
    let periodKey = '7d';
    let seq = 0;

    const group = h('fieldset', { class: 'segmented' }, h('legend', null, 'Period'));
    for (const p of PERIODS) {
        const input = h('input', { type: 'radio', name: `${pre}-period`, id: `${pre}-period-${p.key}`, value: p.key, checked: p.key === periodKey });
        input.addEventListener('change', () => {
            periodKey = p.key;
            load();
        });
        group.append(h('span', { class: 'seg' }, input, h('label', { for: `${pre}-period-${p.key}` }, p.label)));
    }
    const refresh = h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh');
    const csv = h('a', { class: 'button secondary', id: 'energy-csv', href: '#' }, 'Export CSV');
    const status = h('p', { class: 'muted', id: 'energy-status', role: 'status', 'aria-live': 'polite' }, 'Loading…');
    const figures = h('dl', { class: 'figures', id: 'energy-figures' });
    const caveatBox = h('p', { class: 'form-warn small', id: 'energy-caveat' });
    const chart = h('div', { class: 'ebars', id: 'energy-chart', role: 'img' });
    const legend = h('p', { class: 'elegend small' },
        KEYS.map((k) => h('span', { class: `key k-${CLASSES[k]}` }, LABELS[k])),
        h('span', { class: 'key k-partial' }, 'partial data'),
        h('span', { class: 'key k-none' }, 'no data'));
    const tbody = h('tbody');
    const table = h('table', { class: 'log energy-table', id: 'energy-table' },
        h('caption', { class: 'visually-hidden' }, 'Energy per bucket, with how complete its data is'),
        h('thead', null, h('tr', null,
            h('th', { scope: 'col' }, 'Period'),
            KEYS.map((k) => h('th', { scope: 'col' }, LABELS[k])),
            fleet ? h('th', { scope: 'col' }, 'Devices') : null,
            h('th', { scope: 'col' }, 'Data'))),
        tbody);

    root.append(h('section', { class: 'card', 'aria-labelledby': `${pre}-h` },
        h('h2', { id: `${pre}-h` }, fleet ? 'Energy of the fleet' : 'Energy'),
        h('div', { class: 'toolbar' }, group, refresh, csv),
        status, figures, caveatBox, chart, legend,
        h('p', { class: 'muted small' },
            'Charged and discharged: into and out of the battery. Imported and exported: bought from and sold to the grid. ' +
            'Days are those of the gateway\'s time zone. Energy that flowed while a device was offline is counted on the day it came back, ' +
            'so a day marked partial may hold energy of an earlier gap or miss the end of the day.'),
        h('div', { class: 'table-wrap' }, table)));

    async function load() {
        const p = PERIODS.find((x) => x.key === periodKey);
        const q = periodQuery(p);
        csv.href = energyUrl(id, { ...q, format: 'csv' });
        csv.setAttribute('download', fleet ? 'fleet-energy.csv' : `${id}-energy.csv`);
        const mine = ++seq;
        setText(status, 'Loading…');
        chart.setAttribute('aria-busy', 'true');
        try {
            const res = await api.energy(id, q);
            if (mine !== seq) return;
            show(res, p);
        } catch (e) {
            if (mine !== seq) return;
            setText(status, `Could not load the energy: ${e.message}`);
        } finally {
            if (mine === seq) chart.removeAttribute('aria-busy');
        }
    }

    function label(b, res) {
        if (res.bucket === 'month') return b.local;
        return b.local && b.local.length >= 10 ? b.local.slice(5) : b.local; // MM-DD
    }

    function show(res, p) {
        const now = Date.now();
        const buckets = res.buckets || [];
        const sum = summarize(buckets, now);
        const unit = res.bucket === 'month' ? 'month' : 'day';
        const units = (n) => `${n} ${unit}${n === 1 ? '' : 's'}`;

        const notes = [];
        if (sum.missing) notes.push(`${units(sum.missing)} without data`);
        if (sum.partial) notes.push(`${units(sum.partial)} with partial data`);
        if (sum.running) notes.push(`the current ${unit} is not over`);
        setText(status, sum.withData === 0
            ? `No energy data in the ${p.label.toLowerCase()}${fleet ? '' : ` from ${id}`} (time zone ${res.time_zone}).`
            : `${p.label}, by ${unit} (time zone ${res.time_zone}): ${units(sum.withData)} with data` +
              (notes.length ? `; ${notes.join(', ')}` : '') + '.');
        chart.dataset.buckets = String(buckets.length);
        chart.dataset.withData = String(sum.withData);
        chart.dataset.missing = String(sum.missing);
        chart.dataset.partial = String(sum.partial);

        // ---- figures over the period
        clear(figures);
        const fig = (key, name, value, help) => add(figures, h('div', { class: 'figure', dataset: { figure: key } },
            h('dt', null, name), h('dd', null, h('span', { class: 'fig-value' }, value), help ? h('span', { class: 'sub' }, help) : null)));
        for (const k of KEYS) fig(CLASSES[k], LABELS[k], energy(sum.totals[k]));
        fig('round-trip', 'Round-trip efficiency', percent(sum.roundTrip),
            'discharged ÷ charged; fair over a period that ends with the battery as full as it began');
        fig('battery-share', 'Battery share of supply', percent(sum.batteryShare),
            'discharged ÷ (discharged + imported): of what came from battery and grid, the battery\'s part');
        fig('net-grid', 'Net from the grid', energy(sum.netGrid), 'imported − exported');
        fig('self-sufficiency', 'Self-sufficiency', 'not measured',
            'needs the house\'s consumption or the solar production, which the devices do not count');
        figures.dataset.partial = String(sum.partial + sum.missing);
        const caveat = [];
        if (sum.partial) caveat.push(`include ${units(sum.partial)} with partial data`);
        if (sum.missing) caveat.push(`leave out ${units(sum.missing)} without data`);
        setText(caveatBox, caveat.length ? `The figures ${caveat.join(' and ')}.` : '');

        // ---- bars
        clear(chart);
        const max = scaleMax(buckets);
        chart.setAttribute('aria-label', `Energy per ${unit}: charged, discharged, imported and exported; ` +
            `${units(sum.missing)} without data. The table below has the numbers.`);
        const every = Math.ceil(buckets.length / 12); // room for about 12 labels
        for (const [i, b] of buckets.entries()) {
            const st = bucketStatus(b, now);
            const future = st.status === 'none' && Date.parse(b.start) > now;
            const g = h('div', { class: `ebar-group is-${future ? 'future' : st.status}`, dataset: { local: b.local, status: st.status },
                title: `${b.local}: ${st.status === 'none' ? 'no data' : KEYS.map((k) => `${LABELS[k]} ${energy(b[k])}`).join(', ')}` +
                    (st.status === 'partial' ? ` (partial: ${percent(st.coverage)} covered)` : '') });
            const bars = h('div', { class: 'ebar-bars' });
            if (st.status === 'none') {
                bars.append(h('span', { class: 'ebar-none' }, future ? '' : 'no data'));
            } else {
                for (const k of KEYS) {
                    const bar = h('span', { class: `ebar k-${CLASSES[k]}`, dataset: { key: k, wh: b[k] ?? '' } });
                    bar.style.height = `${Math.max(0, Math.min(100, ((b[k] || 0) / max) * 100)).toFixed(2)}%`;
                    bars.append(bar);
                }
            }
            add(g, bars, h('span', { class: 'ebar-label', 'aria-hidden': 'true' },
                (buckets.length - 1 - i) % every === 0 ? label(b, res) : ''));
            chart.append(g);
        }

        // ---- table, newest first
        clear(tbody);
        for (const b of [...buckets].reverse()) {
            const st = bucketStatus(b, now);
            if (st.status === 'none' && Date.parse(b.start) > now) continue;
            const cov = st.status === 'none' ? 'no data'
                : `${STATUS_TEXT[st.status]}, ${percent(st.coverage)} covered`;
            tbody.append(h('tr', { class: `is-${st.status}`, dataset: { local: b.local, status: st.status } },
                h('th', { scope: 'row', 'data-label': 'Period' }, b.local),
                KEYS.map((k) => h('td', { 'data-label': LABELS[k], dataset: { key: k } }, energy(b[k]))),
                fleet ? h('td', { 'data-label': 'Devices' }, String(b.devices ?? 0)) : null,
                h('td', { 'data-label': 'Data' }, cov)));
        }
    }

    load();
    return {
        destroy() {
            seq++;
        },
    };
}

/** #/energy: the fleet's total per day or month. */
export function mountFleetEnergy(root) {
    document.title = 'Energy · ems dashboard';
    root.append(h('div', { class: 'view-head' }, h('h1', { id: 'fleet-energy-title' }, 'Fleet energy'),
        h('p', { class: 'muted' }, 'The sum over every device that sends energy counters; open a device for its own.')));
    return mountEnergy(root, { id: null });
}
