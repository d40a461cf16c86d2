// The live tab: tiles with the newest values, and a chart of the last ten
// minutes fed by the socket. The chart is first filled from the history API
// (raw, last 10 minutes) so it is not empty when the page opens.

import { api } from '../api.js';
import { h, setText, clear } from '../dom.js';
import { num, power, clock, ago, wifi, batteryDirection, gridDirection, isoSeconds } from '../format.js';
import { LiveBuffer } from '../series.js';
import { createChart, COLORS } from '../chart.js';
import { stateBadge, modeText, FLAG_HELP, STATE_HELP } from './common.js';

const WINDOW_S = 600;

function tile(title, id, ...body) {
    return h('section', { class: 'tile', id: `tile-${id}`, 'aria-labelledby': `tile-${id}-h` },
        h('h2', { id: `tile-${id}-h` }, title), ...body);
}

function field(name, cls = 'big') {
    return h('span', { class: cls, 'data-field': name }, '–');
}

function row(label, name) {
    return h('div', { class: 'kv' }, h('span', { class: 'k' }, label), field(name, 'v'));
}

export function mountLive(root, { store, id }) {
    const f = {};
    const grab = (el) => {
        for (const x of el.querySelectorAll('[data-field]')) f[x.dataset.field] = x;
        return el;
    };

    const socBar = h('div', { class: 'socbar', role: 'meter', 'aria-label': 'State of charge', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' },
        h('span', { class: 'socbar-fill' }),
        h('span', { class: 'socbar-min', hidden: true }),
        h('span', { class: 'socbar-max', hidden: true }));

    const tiles = grab(h('div', { class: 'tiles', id: 'live-tiles' },
        tile('State', 'state', h('div', { 'data-field': 'state' }), field('state-help', 'sub')),
        tile('Mode', 'mode', field('mode'), field('mode-detail', 'sub')),
        tile('State of charge', 'soc', field('soc'), socBar, field('soc-window', 'sub')),
        tile('Battery', 'battery', field('battery-power'), field('battery-dir', 'dir-chip'),
            row('Voltage', 'battery-voltage'), row('Current', 'battery-current')),
        tile('Grid', 'grid', field('grid-power'), field('grid-dir', 'dir-chip'),
            row('Voltage', 'grid-voltage'), row('Frequency', 'grid-frequency')),
        tile('Temperature', 'temp', field('temperature')),
        tile('Wi-Fi', 'wifi', field('wifi'), field('wifi-quality', 'sub')),
        tile('Error flags', 'errors', h('div', { 'data-field': 'errors' })),
        tile('Last packet', 'packet', field('packet-time'), field('packet-age', 'sub'), row('Sequence', 'seq'), field('packet-note', 'sub'))));

    const chartBox = h('div', { class: 'chart', id: 'live-chart', role: 'img',
        'aria-label': 'Chart of battery power, grid power and state of charge over the last 10 minutes' });
    const chartNote = h('p', { class: 'muted small' },
        'Above the dashed zero line: battery charging, grid importing. Below: battery discharging, grid exporting. Breaks in a line are times without data.');
    root.append(tiles, h('section', { class: 'card', 'aria-labelledby': 'live-chart-h' },
        h('h2', { id: 'live-chart-h' }, 'Last 10 minutes'), chartBox, chartNote));

    const buf = new LiveBuffer(WINDOW_S);
    // The chart's "now" is the device's clock: the newest packet's timestamp
    // plus the time since it arrived, so a skewed browser clock does not
    // push the data out of the window.
    let anchor = null; // {s: packet time in s, at: Date.now() when received}
    const windowEnd = () => (anchor ? anchor.s + (Date.now() - anchor.at) / 1000 : Date.now() / 1000);
    const chart = createChart(chartBox, {
        series: [
            { label: 'Battery power', scale: 'W', color: COLORS.battery },
            { label: 'Grid power', scale: 'W', color: COLORS.grid },
            { label: 'SoC', scale: '%', color: COLORS.soc },
        ],
        xRange: () => {
            const end = windowEnd();
            return [end - WINDOW_S, end];
        },
    });

    function drawChart() {
        buf.trim(windowEnd());
        const { data, gaps } = buf.columns();
        chart.setData(data);
        chartBox.dataset.points = String(buf.rows.length);
        chartBox.dataset.gaps = String(gaps.length);
    }

    function renderTiles() {
        const d = store.devices.get(id);
        const t = d?.telemetry;
        const now = Date.now();
        if (!t) {
            setText(f['packet-time'], d ? 'no telemetry yet' : '–');
            return;
        }
        const ss = t.system_status || {};
        const b = t.battery || {};
        const g = t.grid || {};
        const lim = d.limits || {};

        if (f.state.dataset.v !== ss.state) {
            f.state.dataset.v = ss.state;
            clear(f.state);
            f.state.append(stateBadge(ss.state));
        }
        setText(f['state-help'], STATE_HELP[ss.state] || '');
        setText(f.mode, ss.mode || '–');
        setText(f['mode-detail'], ss.target_mode && ss.target_mode !== ss.mode ? modeText({ target_mode: ss.target_mode, target_power: ss.target_power }) : '');

        setText(f.soc, num(b.soc, '%', 1));
        const soc = typeof b.soc === 'number' ? Math.max(0, Math.min(100, b.soc)) : 0;
        socBar.setAttribute('aria-valuenow', String(soc));
        socBar.setAttribute('aria-valuetext', num(b.soc, '%', 1));
        socBar.querySelector('.socbar-fill').style.width = `${soc}%`;
        const mn = socBar.querySelector('.socbar-min'), mx = socBar.querySelector('.socbar-max');
        mn.hidden = typeof lim.soc_min !== 'number';
        mx.hidden = typeof lim.soc_max !== 'number';
        if (!mn.hidden) mn.style.left = `${lim.soc_min}%`;
        if (!mx.hidden) mx.style.left = `${lim.soc_max}%`;
        setText(f['soc-window'], typeof lim.soc_min === 'number' && typeof lim.soc_max === 'number'
            ? `allowed window ${lim.soc_min}–${lim.soc_max} %` : '');

        const bd = batteryDirection(b.power, b.current);
        setText(f['battery-power'], power(b.power));
        setText(f['battery-dir'], `${bd.arrow} ${bd.label}`);
        f['battery-dir'].className = `dir-chip dir-${bd.key}`;
        setText(f['battery-voltage'], num(b.voltage, 'V', 1));
        setText(f['battery-current'], num(b.current, 'A', 1));

        const gd = gridDirection(g.power);
        setText(f['grid-power'], power(g.power));
        setText(f['grid-dir'], `${gd.arrow} ${gd.label}`);
        f['grid-dir'].className = `dir-chip dir-${gd.key}`;
        setText(f['grid-voltage'], num(g.voltage, 'V', 1));
        setText(f['grid-frequency'], num(g.frequency, 'Hz', 2));

        setText(f.temperature, num(b.temperature, '°C', 1));
        const w = wifi(ss.wifi_strength);
        setText(f.wifi, w.value);
        setText(f['wifi-quality'], w.quality === 'unknown' ? '' : w.quality);

        const flags = ss.error_flags || [];
        const sig = flags.join(',');
        if (f.errors.dataset.v !== sig) {
            f.errors.dataset.v = sig;
            clear(f.errors);
            f.errors.append(flags.length
                ? h('ul', { class: 'flags has-flags' }, flags.map((x) => h('li', null, h('strong', null, x), FLAG_HELP[x] ? ` – ${FLAG_HELP[x]}` : '')))
                : h('span', { class: 'big ok' }, 'None'));
        }

        setText(f['packet-time'], clock(t.timestamp, now));
        setText(f['packet-age'], `received ${ago(d.last_seen, now)}`);
        setText(f.seq, typeof t.seq === 'number' ? String(t.seq) : '–');
        const notes = [];
        if (t.clock_synced === false) notes.push('device clock not synchronised');
        if (typeof t.backlog === 'number' && t.backlog > 0) notes.push(`sending ${t.backlog} buffered packets`);
        setText(f['packet-note'], notes.join('; '));
        tiles.classList.toggle('is-offline', !d.online);
    }

    const onTelemetry = (e) => {
        if (e.detail.id !== id) return;
        const p = e.detail.packet;
        if (buf.add(p) && e.detail.live) anchor = { s: Date.parse(p.timestamp) / 1000, at: Date.now() };
        if (e.detail.live) renderTiles();
    };
    const onDevice = (e) => {
        if (!e.detail || e.detail.id === id) renderTiles();
    };
    store.addEventListener('telemetry', onTelemetry);
    store.addEventListener('device', onDevice);
    store.addEventListener('devices', onDevice);
    const tick = setInterval(() => {
        drawChart();
        renderTiles();
    }, 1000);

    // Fill the chart with what the server has for the last ten minutes.
    const to = new Date();
    const from = new Date(to.getTime() - WINDOW_S * 1000);
    api.telemetry(id, { from: isoSeconds(from), to: isoSeconds(to), resolution: 'raw' }).then((res) => {
        for (const p of res.points || []) buf.add(pointToPacket(p));
        if (!anchor && buf.newest() !== null) {
            const d = store.devices.get(id);
            // Offline devices: anchor to the browser clock, the data ends where it ends.
            if (d?.online) anchor = { s: buf.newest(), at: Date.now() };
        }
        drawChart();
    }, (e) => console.warn('live chart prefill failed:', e.message));

    renderTiles();
    drawChart();

    return {
        destroy() {
            clearInterval(tick);
            store.removeEventListener('telemetry', onTelemetry);
            store.removeEventListener('device', onDevice);
            store.removeEventListener('devices', onDevice);
            chart.destroy();
        },
    };
}

function pointToPacket(p) {
    return {
        timestamp: p.t,
        battery: { power: p.battery_power, soc: p.soc },
        grid: { power: p.grid_power },
    };
}
