// Small pieces shared by the views: badges and flag descriptions.

import { h } from '../dom.js';
import { STATUS_LABELS, MODE_LABELS, power } from '../format.js';

export const STATE_HELP = {
    IDLE: 'Not charging or discharging',
    CHARGING: 'The battery is charging',
    DISCHARGING: 'The battery is discharging',
    FULL: 'The battery is full',
    EMPTY: 'The battery is at its minimum charge',
    ERROR: 'A fault stopped the battery; see the error flags',
};

export const FLAG_HELP = {
    OVERHEAT: 'battery too hot',
    UNDERTEMP: 'battery too cold',
    OVERVOLTAGE: 'voltage too high',
    UNDERVOLTAGE: 'voltage too low',
    OVERCURRENT: 'current too high',
    SENSOR_FAULT: 'a sensor failed or reads implausibly',
    GRID_FAULT: 'grid voltage or frequency out of range',
};

export function stateBadge(state) {
    const s = state || 'UNKNOWN';
    return h('span', { class: `badge state state-${s.toLowerCase()}`, title: STATE_HELP[s] || '' },
        s === 'ERROR' ? '⚠ ' : '', s);
}

export function statusBadge(status) {
    return h('span', { class: `badge status status-${status}` }, STATUS_LABELS[status] || status);
}

export function onlineBadge(online) {
    return h('span', { class: `badge ${online ? 'online' : 'offline'}` }, online ? '● online' : '○ offline');
}

/** "AUTO", or "MANUAL · Manual discharge 500 W" when the edge says which. */
export function modeText(ss) {
    if (!ss) return '–';
    const tm = ss.target_mode;
    if (!tm) return ss.mode || '–';
    let s = MODE_LABELS[tm] || tm;
    if ((tm === 'MANUAL_CHARGE' || tm === 'MANUAL_DISCHARGE') && typeof ss.target_power === 'number')
        s += ` ${power(ss.target_power)}`;
    return ss.mode && ss.mode !== 'AUTO' ? `${ss.mode} · ${s}` : s;
}

export function flagsText(flags) {
    if (!Array.isArray(flags) || flags.length === 0) return 'none';
    return flags.join(', ');
}
