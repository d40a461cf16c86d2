// The table of alarms shared by the alarm list (#/alarms) and a device's
// Alarms tab: one row per alarm with its state, who acknowledged it and
// when it cleared, and an Acknowledge button for operators and admins.

import { api } from '../api.js';
import { h, add, setText, clear } from '../dom.js';
import { clock } from '../format.js';
import { RULE_LABELS, STATE_LABELS, canAck } from '../alarms.js';

/**
 * me: the session's user; showDevice: a device column; onAcked(alarm):
 * called with the stored alarm after an acknowledgement (to refresh lists
 * and the banner). Returns {el, render(alarms)}.
 */
export function alarmTable({ me, showDevice = true, onAcked = () => {} }) {
    const mayAck = canAck(me);
    const error = h('p', { class: 'form-error', id: 'alarm-ack-error', role: 'alert' });
    const tbody = h('tbody');
    const empty = h('p', { class: 'muted', id: 'alarm-empty', hidden: true }, 'No alarms.');
    const table = h('table', { class: 'log alarms', id: 'alarm-table' },
        h('caption', { class: 'visually-hidden' }, 'Alarms, newest first'),
        h('thead', null, h('tr', null,
            h('th', { scope: 'col' }, 'Raised'),
            showDevice ? h('th', { scope: 'col' }, 'Device') : null,
            h('th', { scope: 'col' }, 'Alarm'),
            h('th', { scope: 'col' }, 'State'),
            h('th', { scope: 'col' }, 'Acknowledged'),
            h('th', { scope: 'col' }, 'Cleared'),
            mayAck ? h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Action')) : null)),
        tbody);
    const note = mayAck ? null : h('p', { class: 'notice', id: 'alarm-role-note', role: 'note' },
        `You are logged in as ${me?.username} with the role "${me?.role}": you see the alarms but cannot acknowledge them.`);
    const el = h('div', { class: 'alarm-table' }, note, error, empty, h('div', { class: 'table-wrap' }, table));
    const acking = new Set(); // alarm ids with an acknowledgement on its way

    async function ack(a, btn) {
        setText(error, '');
        acking.add(a.alarm_id);
        btn.disabled = true;
        setText(btn, 'Acknowledging…');
        try {
            const stored = await api.ackAlarm(a.alarm_id);
            onAcked(stored || a);
        } catch (e) {
            setText(error, e.status === 403 ? 'Your role may not acknowledge alarms.'
                : `Could not acknowledge alarm ${a.alarm_id}: ${e.message}`);
            btn.disabled = false;
            setText(btn, 'Acknowledge');
        } finally {
            acking.delete(a.alarm_id);
        }
    }

    function row(a) {
        const rule = RULE_LABELS[a.rule] || a.rule;
        const acked = a.acked_at ? h('span', null, a.acked_by || '?', h('span', { class: 'sub' }, clock(a.acked_at))) : '–';
        const cleared = a.cleared_at
            ? h('span', null, clock(a.cleared_at), a.clear_reason ? h('span', { class: 'sub' }, a.clear_reason) : null) : '–';
        let action = null;
        if (mayAck) {
            action = h('td', { 'data-label': '' });
            if (!a.acked_at) {
                const btn = h('button', { type: 'button', class: 'ack', dataset: { alarmId: a.alarm_id },
                    disabled: acking.has(a.alarm_id), 'aria-label': `Acknowledge alarm ${a.alarm_id}: ${rule} on ${a.device_id}` },
                acking.has(a.alarm_id) ? 'Acknowledging…' : 'Acknowledge');
                btn.addEventListener('click', () => ack(a, btn));
                action.append(btn);
            }
        }
        return h('tr', { class: `alarm is-${a.state} sev-${a.severity}`, dataset: { alarmId: a.alarm_id, state: a.state, device: a.device_id, rule: a.rule } },
            h('td', { 'data-label': 'Raised' }, h('time', { datetime: a.raised_at || '' }, clock(a.raised_at))),
            showDevice ? h('td', { 'data-label': 'Device' }, h('a', { href: `#/device/${encodeURIComponent(a.device_id)}/alarms` }, a.device_id)) : null,
            h('td', { 'data-label': 'Alarm' }, h('span', null,
                h('span', { class: `badge sev sev-${a.severity}` }, a.severity), ' ', h('strong', null, rule),
                a.message ? h('span', { class: 'sub' }, a.message) : null)),
            h('td', { 'data-label': 'State' }, h('span', { class: `badge alarm-state as-${a.state}` }, STATE_LABELS[a.state] || a.state)),
            h('td', { 'data-label': 'Acknowledged' }, acked),
            h('td', { 'data-label': 'Cleared' }, cleared),
            action);
    }

    function render(alarms) {
        clear(tbody);
        const list = alarms || [];
        empty.hidden = list.length > 0;
        table.hidden = list.length === 0;
        add(tbody, list.map(row));
    }

    return { el, render };
}
