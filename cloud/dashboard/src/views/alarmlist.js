// The alarm list (#/alarms) and a device's alarm history (its Alarms tab):
// filters by state (and by device in the list), newest first, reloaded
// every POLL_MS while on screen (the gateway pushes no alarm changes over
// the dashboard socket; src/alarms.js) and at once after an acknowledgement.

import { api } from '../api.js';
import { h, setText } from '../dom.js';
import { clock } from '../format.js';
import { POLL_MS, STATE_FILTERS, sortAlarms } from '../alarms.js';
import { alarmTable } from './alarmtable.js';

// The list's filters survive leaving the view and coming back.
const listFilter = { state: 'open', device: '' };

/** The fleet's alarm list. ctx: {store, me, alarms (AlarmWatch)}. */
export function mountAlarmList(root, ctx) {
    document.title = 'Alarms · ems dashboard';
    return mountAlarms(root, ctx, null, listFilter);
}

/** One device's alarm history (every state by default). */
export function mountDeviceAlarms(root, ctx) {
    return mountAlarms(root, ctx, ctx.id, { state: '', device: ctx.id });
}

function mountAlarms(root, { store, me, alarms: watch }, deviceId, filter) {
    let seq = 0;
    let timer = null;
    const stateSel = h('select', { id: 'alarm-state' },
        STATE_FILTERS.map((f) => h('option', { value: f.value, selected: f.value === filter.state }, f.label)));
    stateSel.addEventListener('change', () => {
        filter.state = stateSel.value;
        load();
    });
    let deviceSel = null;
    if (!deviceId) {
        deviceSel = h('select', { id: 'alarm-device' });
        const fill = () => {
            const ids = [...store.devices.keys()].sort();
            if (filter.device && !ids.includes(filter.device)) ids.push(filter.device);
            const sig = ids.join(',');
            if (deviceSel.dataset.sig === sig) return;
            deviceSel.dataset.sig = sig;
            deviceSel.replaceChildren(h('option', { value: '' }, 'All devices'),
                ...ids.map((id) => h('option', { value: id, selected: id === filter.device }, id)));
            deviceSel.value = filter.device;
        };
        fill();
        store.addEventListener('devices', fill);
        deviceSel.fill = fill;
        deviceSel.addEventListener('change', () => {
            filter.device = deviceSel.value;
            load();
        });
    }
    const status = h('p', { class: 'muted', id: 'alarm-status', role: 'status', 'aria-live': 'polite' }, 'Loading…');
    const table = alarmTable({
        me,
        showDevice: !deviceId,
        onAcked: () => {
            load();
            watch?.refresh();
        },
    });
    const title = deviceId ? 'Alarm history' : 'Alarms';
    const head = deviceId ? h('h2', { id: 'alarms-h' }, title) : h('h1', { id: 'alarms-h' }, title);
    root.append(h('section', { class: deviceId ? 'card' : 'alarms-view', 'aria-labelledby': 'alarms-h' },
        h('div', { class: 'view-head' }, head),
        h('div', { class: 'toolbar' },
            h('div', { class: 'field' }, h('label', { for: 'alarm-state' }, 'State'), stateSel),
            deviceSel ? h('div', { class: 'field' }, h('label', { for: 'alarm-device' }, 'Device'), deviceSel) : null,
            h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh')),
        status, table.el,
        h('p', { class: 'muted small' },
            'An alarm is raised when its condition has held for the gateway\'s debounce time, and clears the same way. ' +
            'Acknowledging records who saw it; the alarm stays open until its condition is gone. This list reloads every ' +
            `${POLL_MS / 1000} s.`)));

    async function load() {
        clearTimeout(timer);
        const mine = ++seq;
        const q = { state: filter.state, limit: 200 };
        try {
            const res = deviceId ? await api.deviceAlarms(deviceId, q)
                : await api.alarms({ ...q, device: filter.device });
            if (mine !== seq) return;
            const list = sortAlarms(res?.alarms || []);
            table.render(list);
            const what = STATE_FILTERS.find((f) => f.value === filter.state)?.label.toLowerCase() || 'all';
            setText(status, `${list.length} ${list.length === 1 ? 'alarm' : 'alarms'} (${what}` +
                `${!deviceId && filter.device ? `, ${filter.device}` : ''}), updated ${clock(Date.now())}.`);
            status.dataset.count = String(list.length);
        } catch (e) {
            if (mine !== seq) return;
            setText(status, `Could not load the alarms: ${e.message}`);
        }
        if (mine === seq) timer = setTimeout(load, POLL_MS);
    }

    load();
    return {
        destroy() {
            seq++;
            clearTimeout(timer);
            if (deviceSel) store.removeEventListener('devices', deviceSel.fill);
        },
    };
}
