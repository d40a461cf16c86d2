// The fleet: one row per device, sortable, a device in ERROR stands out.
// Its values come from the coalesced fleet stream (live.js, Store.onFleet:
// each device's latest state at most once a second, whatever the fleet's
// size). Rows are keyed and updated in place at most a few times a second,
// so a large fleet does not rebuild the table per frame.

import { h, setText, clear } from '../dom.js';
import { ago, clock, num, power, batteryDirection, gridDirection } from '../format.js';
import { stateBadge, onlineBadge, modeText, flagsText } from './common.js';

const MAX_ROWS = 500;

const COLUMNS = [
    { key: 'device_id', label: 'Device', get: (d) => d.device_id },
    { key: 'online', label: 'Connection', get: (d) => (d.online ? 1 : 0) },
    { key: 'last_seen', label: 'Last seen', get: (d) => Date.parse(d.last_seen) || 0 },
    { key: 'state', label: 'State', get: (d) => stateOrder(d.telemetry?.system_status?.state) },
    { key: 'mode', label: 'Mode', get: (d) => modeText(d.telemetry?.system_status) },
    { key: 'soc', label: 'SoC', get: (d) => d.telemetry?.battery?.soc ?? -1 },
    { key: 'battery_power', label: 'Battery power', get: (d) => d.telemetry?.battery?.power ?? -Infinity },
    { key: 'grid_power', label: 'Grid power', get: (d) => d.telemetry?.grid?.power ?? -Infinity },
    { key: 'errors', label: 'Error flags', get: (d) => d.telemetry?.system_status?.error_flags?.length ?? 0 },
];

// States sort alphabetically, except that ERROR comes first, so an
// ascending sort by state puts the faulty devices on top.
function stateOrder(s) {
    return s === 'ERROR' ? ' ERROR' : s || '~';
}

export function mountFleet(root, { store }) {
    document.title = 'Fleet · ems dashboard';
    let sortKey = 'device_id';
    let sortDir = 1;
    let filter = '';
    const rows = new Map(); // id -> {tr, cells}

    const summary = h('p', { class: 'summary', id: 'fleet-summary', 'aria-live': 'polite' });
    const errorsBox = h('div', { class: 'alert', id: 'fleet-errors', role: 'alert', hidden: true });
    const filterInput = h('input', { id: 'fleet-filter', type: 'search', placeholder: 'device id or state', autocomplete: 'off' });
    const thead = h('tr');
    const tbody = h('tbody');
    const more = h('p', { class: 'muted', hidden: true });
    const table = h('table', { class: 'fleet', id: 'fleet-table', 'aria-describedby': 'fleet-summary' },
        h('caption', { class: 'visually-hidden' }, 'Devices of the fleet. Column headers sort the table.'),
        h('thead', null, thead), tbody);

    for (const c of COLUMNS) {
        const btn = h('button', { type: 'button', class: 'sort', dataset: { key: c.key } }, c.label, h('span', { class: 'sort-arrow', 'aria-hidden': 'true' }));
        btn.addEventListener('click', () => {
            if (sortKey === c.key) sortDir = -sortDir;
            else {
                sortKey = c.key;
                sortDir = 1;
            }
            render();
        });
        thead.append(h('th', { scope: 'col', dataset: { key: c.key } }, btn));
    }
    filterInput.addEventListener('input', () => {
        filter = filterInput.value.trim().toLowerCase();
        render();
    });

    root.append(
        h('section', { class: 'fleet-view', 'aria-labelledby': 'fleet-title' },
            h('div', { class: 'view-head' },
                h('h1', { id: 'fleet-title' }, 'Fleet'),
                h('div', { class: 'filter' }, h('label', { for: 'fleet-filter' }, 'Filter'), filterInput)),
            summary, errorsBox,
            h('div', { class: 'table-wrap' }, table),
            more));

    function makeRow(id) {
        const cells = {};
        const tr = h('tr', { dataset: { device: id } });
        for (const c of COLUMNS) {
            const td = h(c.key === 'device_id' ? 'th' : 'td', c.key === 'device_id' ? { scope: 'row' } : { dataset: { label: c.label } });
            cells[c.key] = td;
            tr.append(td);
        }
        cells.device_id.append(h('a', { href: `#/device/${encodeURIComponent(id)}` }, id));
        tr.addEventListener('click', (e) => {
            if (e.target.closest('a')) return;
            location.hash = `#/device/${encodeURIComponent(id)}`;
        });
        return { tr, cells, last: {} };
    }

    // Replaces a cell's content only when what it shows changed.
    function put(row, key, sig, build) {
        if (row.last[key] === sig) return;
        row.last[key] = sig;
        const td = row.cells[key];
        clear(td);
        td.append(build());
    }

    function fillRow(row, d, now) {
        const t = d.telemetry || {};
        const ss = t.system_status || {};
        const b = t.battery || {};
        const g = t.grid || {};
        const state = ss.state;
        row.tr.classList.toggle('is-error', state === 'ERROR');
        row.tr.classList.toggle('is-offline', !d.online);
        const off = !d.online && d.offline_since ? `since ${clock(d.offline_since, now)}` : '';
        put(row, 'online', `${d.online}|${off}`, () =>
            h('span', null, onlineBadge(d.online), off ? h('span', { class: 'sub' }, off) : null));
        put(row, 'last_seen', ago(d.last_seen, now), () =>
            h('time', { datetime: d.last_seen || '', title: d.last_seen ? new Date(d.last_seen).toLocaleString() : '' }, ago(d.last_seen, now)));
        put(row, 'state', state, () => stateBadge(state));
        put(row, 'mode', modeText(ss), () => modeText(ss));
        put(row, 'soc', b.soc, () => socCell(b.soc));
        const bd = batteryDirection(b.power, b.current);
        put(row, 'battery_power', `${b.power}`, () =>
            h('span', { class: `dir dir-${bd.key}` }, power(b.power), h('span', { class: 'sub' }, `${bd.arrow} ${bd.label}`)));
        const gd = gridDirection(g.power);
        put(row, 'grid_power', `${g.power}`, () =>
            h('span', { class: `dir dir-${gd.key}` }, power(g.power), h('span', { class: 'sub' }, `${gd.arrow} ${gd.label}`)));
        const flags = ss.error_flags || [];
        put(row, 'errors', flags.join(','), () =>
            h('span', { class: flags.length ? 'flags has-flags' : 'flags' }, flagsText(flags)));
    }

    function render() {
        const now = Date.now();
        const all = [...store.devices.values()];
        const shown = all.filter((d) => {
            if (!filter) return true;
            const s = d.telemetry?.system_status?.state || '';
            return d.device_id.toLowerCase().includes(filter) || s.toLowerCase() === filter;
        });
        const col = COLUMNS.find((c) => c.key === sortKey);
        shown.sort((a, b) => {
            const va = col.get(a), vb = col.get(b);
            const r = va < vb ? -1 : va > vb ? 1 : 0;
            return r * sortDir || a.device_id.localeCompare(b.device_id);
        });
        const visible = shown.slice(0, MAX_ROWS);

        const keep = new Set(visible.map((d) => d.device_id));
        for (const [id, row] of rows) if (!keep.has(id)) {
            row.tr.remove();
            rows.delete(id);
        }
        let prev = null;
        for (const d of visible) {
            let row = rows.get(d.device_id);
            if (!row) {
                row = makeRow(d.device_id);
                rows.set(d.device_id, row);
            }
            fillRow(row, d, now);
            // Move only rows that are out of place.
            const want = prev ? prev.nextSibling : tbody.firstChild;
            if (want !== row.tr) tbody.insertBefore(row.tr, want);
            prev = row.tr;
        }

        for (const th of thead.children) {
            const k = th.dataset.key;
            if (k === sortKey) th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
            else th.removeAttribute('aria-sort');
            setText(th.querySelector('.sort-arrow'), k === sortKey ? (sortDir > 0 ? ' ▲' : ' ▼') : '');
        }

        const online = all.filter((d) => d.online).length;
        const inError = all.filter((d) => d.telemetry?.system_status?.state === 'ERROR');
        setText(summary, all.length === 0 ? 'No devices yet. Add one with "emsctl device add ID".'
            : `${all.length} device${all.length === 1 ? '' : 's'}, ${online} online, ${all.length - online} offline, ${inError.length} in error.`);
        const errSig = inError.map((d) => d.device_id).join(',');
        if (errorsBox.dataset.sig !== errSig) {
            errorsBox.dataset.sig = errSig;
            clear(errorsBox);
            errorsBox.hidden = inError.length === 0;
            if (inError.length) {
                errorsBox.append('⚠ In ERROR: ');
                inError.forEach((d, i) => {
                    if (i) errorsBox.append(', ');
                    errorsBox.append(h('a', { href: `#/device/${encodeURIComponent(d.device_id)}` }, d.device_id));
                });
            }
        }
        more.hidden = shown.length <= MAX_ROWS;
        setText(more, `Showing ${MAX_ROWS} of ${shown.length} devices; use the filter to find others.`);
    }

    // Telemetry is not rendered per packet; fleet frames (a few a second
    // for a large fleet) are gathered into one render, and the tick below
    // shows the rest.
    const onNow = () => render();
    let soon = null;
    const onFleet = () => {
        if (!soon) soon = setTimeout(() => {
            soon = null;
            render();
        }, 150);
    };
    store.addEventListener('device', onNow);
    store.addEventListener('devices', onNow);
    store.addEventListener('fleet', onFleet);
    // Once a second: the live values and the "seen 3 s ago" column.
    const tick = setInterval(() => render(), 1000);
    render();

    return {
        destroy() {
            clearInterval(tick);
            clearTimeout(soon);
            store.removeEventListener('device', onNow);
            store.removeEventListener('devices', onNow);
            store.removeEventListener('fleet', onFleet);
        },
    };
}

function socCell(soc) {
    if (typeof soc !== 'number') return '–';
    return h('span', { class: 'soc-cell' },
        h('span', { class: 'minibar', 'aria-hidden': 'true' }, h('span', { style: `width:${Math.max(0, Math.min(100, soc))}%` })),
        num(soc, '%', 1));
}
