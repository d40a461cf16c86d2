// One device: a status strip that is always visible, and five tabs (live,
// history, energy, alarms, control). Switching tabs keeps the strip and replaces the panel.

import { api } from '../api.js';
import { h, add, setText, clear } from '../dom.js';
import { ago, clock, num, power } from '../format.js';
import { stateBadge, onlineBadge, modeText } from './common.js';
import { mountLive } from './livepanel.js';
import { mountHistory } from './history.js';
import { mountControl } from './control.js';
import { mountEnergy } from './energy.js';
import { mountDeviceAlarms } from './alarmlist.js';

const TABS = [
    { key: 'live', label: 'Live', mount: mountLive },
    { key: 'history', label: 'History', mount: mountHistory },
    { key: 'energy', label: 'Energy', mount: mountEnergy },
    { key: 'alarms', label: 'Alarms', mount: mountDeviceAlarms },
    { key: 'control', label: 'Control', mount: mountControl },
];

export function mountDevice(root, ctx, r) {
    const { store } = ctx;
    const id = r.id;
    let panel = null;
    let tab = null;

    const title = h('h1', { id: 'device-title' }, id);
    const strip = h('div', { class: 'strip', id: 'device-strip' });
    const offline = h('p', { class: 'offline-banner', id: 'offline-banner', role: 'status', hidden: true });
    const missing = h('p', { class: 'alert', role: 'alert', hidden: true });
    const nav = h('nav', { class: 'tabs', 'aria-label': 'Device sections' });
    const panelBox = h('div', { class: 'panel', id: 'device-panel' });
    for (const t of TABS)
        nav.append(h('a', { href: `#/device/${encodeURIComponent(id)}/${t.key}`, dataset: { tab: t.key } }, t.label));

    add(root, h('section', { class: 'device-view', 'aria-labelledby': 'device-title' },
        h('p', { class: 'crumbs' }, h('a', { href: '#/fleet' }, '← Fleet')),
        h('div', { class: 'view-head' }, title, strip),
        offline, missing, nav, panelBox));

    function renderStrip() {
        const d = store.devices.get(id);
        const now = Date.now();
        const ss = d?.telemetry?.system_status || {};
        const b = d?.telemetry?.battery || {};
        const sig = [d?.online, ss.state, modeText(ss), b.soc, b.power, ago(d?.last_seen, now)].join('|');
        if (strip.dataset.sig !== sig) {
            strip.dataset.sig = sig;
            clear(strip);
            if (d) {
                strip.append(
                    onlineBadge(d.online),
                    h('span', { class: 'strip-item' }, h('span', { class: 'k' }, 'State '), h('span', { 'data-field': 'strip-state' }, stateBadge(ss.state))),
                    h('span', { class: 'strip-item' }, h('span', { class: 'k' }, 'Mode '), h('span', { 'data-field': 'strip-mode' }, modeText(ss))),
                    h('span', { class: 'strip-item' }, h('span', { class: 'k' }, 'SoC '), num(b.soc, '%', 1)),
                    h('span', { class: 'strip-item' }, h('span', { class: 'k' }, 'Battery '), power(b.power)),
                    h('span', { class: 'strip-item muted' }, `updated ${ago(d.last_seen, now)}`));
            }
        }
        // The offline banner: when the device dropped, and how long ago.
        const off = d && !d.online;
        offline.hidden = !off;
        if (off) {
            const since = d.offline_since || d.last_seen;
            setText(offline, since
                ? `Offline since ${clock(since, now)} (${ago(since, now)}). The values below are the last ones it sent.`
                : 'Offline. The device has not connected yet.');
        }
        document.title = `${id}${ss.state ? ' · ' + ss.state : ''} · ems dashboard`;
    }

    function showTab(key) {
        const t = TABS.find((x) => x.key === key) || TABS[0];
        if (tab === t.key) return;
        if (panel) panel.destroy();
        clear(panelBox);
        tab = t.key;
        for (const a of nav.children) {
            if (a.dataset.tab === t.key) a.setAttribute('aria-current', 'page');
            else a.removeAttribute('aria-current');
        }
        panel = t.mount(panelBox, { ...ctx, id });
    }

    const onChange = (e) => {
        if (!e.detail || e.detail.id === id) renderStrip();
    };
    store.addEventListener('device', onChange);
    store.addEventListener('devices', onChange);
    store.addEventListener('telemetry', onChange);
    const tick = setInterval(renderStrip, 1000);

    // The list may not be loaded yet (a bookmark straight to a device).
    if (!store.devices.has(id)) {
        api.device(id).then((d) => store.put(d), (e) => {
            missing.hidden = false;
            setText(missing, e.status === 404 ? `There is no device "${id}".` : `Could not load ${id}: ${e.message}`);
        });
    }
    renderStrip();
    showTab(r.tab);
    ctx.setOnScreen([id]);

    return {
        route(r2) {
            showTab(r2.tab);
        },
        destroy() {
            clearInterval(tick);
            store.removeEventListener('device', onChange);
            store.removeEventListener('devices', onChange);
            store.removeEventListener('telemetry', onChange);
            if (panel) panel.destroy();
        },
    };
}
