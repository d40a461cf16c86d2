// The control tab: set the mode (with a target power where it applies,
// checked against the device's limits), reset an error (only in ERROR, after
// a confirmation), the live status of each command from the socket, and the
// command log with who sent what.

import { api, newCommandId } from '../api.js';
import { h, add, setText, clear } from '../dom.js';
import { clock, describeCommand, power, MODE_LABELS, TERMINAL_STATUSES } from '../format.js';
import { MODES, needsPower, maxPower, validateSetMode } from '../validate.js';
import { statusBadge } from './common.js';

const MODE_HELP = {
    AUTO: 'Self-consumption: charge from solar surplus, discharge to cover the house.',
    MANUAL_CHARGE: 'Charge at a fixed power until the battery is full.',
    MANUAL_DISCHARGE: 'Discharge at a fixed power until the battery reaches its minimum.',
    MANUAL_IDLE: 'Neither charge nor discharge.',
};

export function mountControl(root, { store, me, id }) {
    const canSend = me.role === 'operator' || me.role === 'admin';
    const commands = new Map(); // command_id -> record
    let tracked = null; // the command sent from this page most recently

    // ---- set mode form
    const modeGroup = h('fieldset', { class: 'modes' }, h('legend', null, 'Mode'));
    for (const m of MODES) {
        const input = h('input', { type: 'radio', name: 'mode', id: `mode-${m}`, value: m, 'aria-describedby': `mode-${m}-help` });
        modeGroup.append(h('div', { class: 'mode-option' }, input,
            h('label', { for: `mode-${m}` }, MODE_LABELS[m], h('span', { class: 'code' }, ` (${m})`)),
            h('p', { class: 'muted small', id: `mode-${m}-help` }, MODE_HELP[m])));
    }
    const powerInput = h('input', { type: 'number', id: 'target-power', name: 'target_power', min: 0, step: 1, inputmode: 'numeric', 'aria-describedby': 'target-power-hint' });
    const powerHint = h('p', { class: 'muted small', id: 'target-power-hint' });
    const powerField = h('div', { class: 'field' }, h('label', { for: 'target-power' }, 'Target power (W)'), powerInput, powerHint);
    const formError = h('p', { class: 'form-error', id: 'mode-error', role: 'alert' });
    const formWarn = h('p', { class: 'form-warn', id: 'mode-warn', role: 'status' });
    const sendBtn = h('button', { type: 'submit', id: 'send-mode' }, 'Set mode');
    const modeForm = h('form', { class: 'card', id: 'mode-form', 'aria-labelledby': 'mode-h', novalidate: true },
        h('h2', { id: 'mode-h' }, 'Operating mode'), modeGroup, powerField, formError, formWarn, sendBtn);

    // ---- reset error
    const resetBtn = h('button', { type: 'button', id: 'reset-error', class: 'danger' }, 'Reset error');
    const resetHint = h('p', { class: 'muted small', id: 'reset-hint' });
    const resetCard = h('section', { class: 'card', 'aria-labelledby': 'reset-h' },
        h('h2', { id: 'reset-h' }, 'Error'), resetHint, resetBtn);
    const dialogMsg = h('p', { id: 'confirm-msg' });
    const confirmBtn = h('button', { type: 'button', class: 'danger', id: 'confirm-reset' }, 'Reset error');
    const cancelBtn = h('button', { type: 'button', class: 'secondary', id: 'cancel-reset' }, 'Cancel');
    const dialog = h('dialog', { id: 'confirm-dialog', 'aria-labelledby': 'confirm-h', 'aria-describedby': 'confirm-msg' },
        h('h2', { id: 'confirm-h' }, 'Reset the error?'), dialogMsg,
        h('div', { class: 'actions' }, cancelBtn, confirmBtn));

    // ---- role notice, live status, log
    const roleNote = canSend ? null : h('p', { class: 'notice', id: 'role-note', role: 'note' },
        `You are logged in as ${me.username} with the role "${me.role}". Viewers can watch everything but cannot send commands; ask an administrator for the operator role.`);
    const blockNote = h('p', { class: 'notice', id: 'block-note', hidden: true });
    const live = h('section', { class: 'card', id: 'cmd-live', 'aria-labelledby': 'cmd-live-h' },
        h('h2', { id: 'cmd-live-h' }, 'Last command'),
        h('div', { id: 'cmd-status', role: 'status', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'No command sent from this page yet.')));
    const logBody = h('tbody');
    const logStatus = h('p', { class: 'muted', id: 'cmd-log-status' }, 'Loading…');
    const logTable = h('div', { class: 'table-wrap', hidden: true }, h('table', { class: 'log' },
        h('caption', { class: 'visually-hidden' }, 'Commands sent to this device, newest first'),
        h('thead', null, h('tr', null, ['Time', 'By', 'Command', 'Status', 'Detail'].map((x) => h('th', { scope: 'col' }, x)))),
        logBody));
    const log = h('section', { class: 'card', id: 'cmd-log', 'aria-labelledby': 'cmd-log-h' },
        h('h2', { id: 'cmd-log-h' }, 'Command log'), logStatus,
        logTable);

    add(root, roleNote, blockNote, h('div', { class: 'control-grid' },
        h('div', null, modeForm, resetCard), h('div', null, live, log)), dialog);

    // ---- state of the controls
    function device() {
        return store.devices.get(id);
    }

    function selectedMode() {
        return modeGroup.querySelector('input[name=mode]:checked')?.value || null;
    }

    let busy = false;

    function why() {
        const d = device();
        if (!canSend) return 'Viewers cannot send commands.';
        if (!d) return 'Loading the device…';
        if (!d.online) return `${id} is offline: commands can be sent when it is back online.`;
        return null;
    }

    function refreshControls() {
        const d = device();
        const state = d?.telemetry?.system_status?.state;
        const blocked = why();
        blockNote.hidden = !blocked || !canSend;
        setText(blockNote, blocked || '');

        const inError = state === 'ERROR';
        const mode = selectedMode();
        const np = needsPower(mode);
        powerInput.disabled = !!blocked || !np || busy;
        powerField.classList.toggle('is-disabled', !np);
        for (const i of modeGroup.querySelectorAll('input')) i.disabled = !!blocked || busy;
        const max = maxPower(mode, d?.limits);
        powerInput.max = max;
        setText(powerHint, !np ? 'Only the manual charge and discharge modes take a target power.'
            : `0 to ${power(max)}${d?.limits ? ' (this device\'s limit)' : ' (the device has not reported its limits)'}.`);
        sendBtn.disabled = !!blocked || busy || !mode || inError;
        sendBtn.title = inError ? 'The device is in ERROR: reset the error first.' : blocked || '';
        if (inError && !blocked) setText(formWarn, 'The device is in ERROR: it accepts no mode change until the error is reset.');
        else if (formWarn.dataset.kind !== 'soc') setText(formWarn, '');

        resetBtn.disabled = !!blocked || busy || !inError;
        setText(resetHint, inError
            ? `The device is in ERROR (${(d.telemetry.system_status.error_flags || []).join(', ') || 'no flags'}). Inspect the battery, then reset. The device refuses while the fault is still present.`
            : 'Reset Error is available only while the device is in the ERROR state.');
        resetBtn.title = blocked || (inError ? '' : 'The device is not in ERROR.');
    }

    modeGroup.addEventListener('change', () => {
        const mode = selectedMode();
        setText(formError, '');
        formWarn.dataset.kind = '';
        refreshControls();
        if (needsPower(mode)) powerInput.focus();
    });
    powerInput.addEventListener('input', () => {
        powerInput.removeAttribute('aria-invalid');
        setText(formError, '');
    });

    modeForm.addEventListener('submit', async (e) => {
        e.preventDefault();
        const d = device();
        const v = validateSetMode(selectedMode(), powerInput.value, d?.limits, d?.telemetry?.battery?.soc);
        setText(formError, '');
        if (!v.ok) {
            setText(formError, v.error);
            if (needsPower(selectedMode())) {
                powerInput.setAttribute('aria-invalid', 'true');
                powerInput.focus();
            }
            return;
        }
        formWarn.dataset.kind = v.warning ? 'soc' : '';
        setText(formWarn, v.warning || '');
        await send({ action: 'SET_MODE', payload: v.payload });
    });

    resetBtn.addEventListener('click', () => {
        setText(dialogMsg, `${id} will leave the ERROR state only if the fault is gone. Only reset after the battery has been inspected.`);
        dialog.showModal();
        cancelBtn.focus();
    });
    cancelBtn.addEventListener('click', () => dialog.close());
    confirmBtn.addEventListener('click', async () => {
        dialog.close();
        await send({ action: 'RESET_ERROR', payload: {} });
    });

    async function send(body) {
        busy = true;
        refreshControls();
        const command_id = newCommandId();
        tracked = command_id;
        renderLive({ command_id, action: body.action, payload: body.payload, status: 'sending', history: [] });
        try {
            const rec = await api.sendCommand(id, { ...body, command_id });
            merge(rec);
        } catch (err) {
            const rec = err.body?.command;
            if (rec) merge(rec);
            tracked = rec?.command_id || command_id;
            renderLive(rec || { command_id, action: body.action, payload: body.payload, status: 'failed', history: [] },
                err.status === 403 ? 'Your role may not send commands.'
                    : err.status === 409 ? err.message
                    : err.status === 400 ? `The gateway refused the command: ${err.message}${err.path ? ` (${err.path})` : ''}`
                    : `Sending failed: ${err.message}`);
        } finally {
            busy = false;
            refreshControls();
        }
    }

    // ---- command records: from the POST answer, the socket, and the log
    const rank = (r) => (r.history?.length || 0) + (TERMINAL_STATUSES.has(r.status) ? 100 : 0);
    function merge(rec) {
        if (!rec?.command_id) return;
        const old = commands.get(rec.command_id);
        // Events can overtake the POST answer; keep the record that knows more.
        if (old && rank(old) > rank(rec) && !(Date.parse(rec.updated_at) > Date.parse(old.updated_at))) return;
        commands.set(rec.command_id, rec);
        if (rec.command_id === tracked) renderLive(rec);
        renderLog();
    }

    function renderLive(rec, extra) {
        const box = live.querySelector('#cmd-status');
        clear(box);
        const status = rec.status;
        box.dataset.status = status;
        box.dataset.commandId = rec.command_id || '';
        add(box,
            h('p', { class: 'cmd-title' }, describeCommand(rec), ' ',
                status === 'sending' ? h('span', { class: 'badge status' }, 'sending…') : statusBadge(status)),
            rec.reason || rec.message ? h('p', { class: 'cmd-reason' },
                rec.reason ? h('strong', null, rec.reason) : null, rec.reason && rec.message ? ': ' : '', rec.message || '') : null,
            extra ? h('p', { class: 'form-error' }, extra) : null,
            rec.history?.length ? h('ol', { class: 'steps', 'aria-label': 'Status history' }, rec.history.map((s) =>
                h('li', { class: 'step' }, statusBadge(s.status), ' ', h('time', { datetime: s.at }, clock(s.at))))) : null,
            rec.command_id && status !== 'sending' ? h('p', { class: 'muted small' }, `id ${rec.command_id}`) : null);
    }

    function renderLog() {
        const list = [...commands.values()].sort((a, b) => (Date.parse(b.created_at) || 0) - (Date.parse(a.created_at) || 0));
        clear(logBody);
        setText(logStatus, list.length ? '' : 'No commands yet.');
        logStatus.hidden = list.length > 0;
        logTable.hidden = list.length === 0;
        for (const r of list.slice(0, 50)) {
            logBody.append(h('tr', { dataset: { commandId: r.command_id, status: r.status } },
                h('td', { 'data-label': 'Time' }, h('time', { datetime: r.created_at || '' }, clock(r.created_at))),
                h('td', { 'data-label': 'By' }, r.created_by || '–'),
                h('td', { 'data-label': 'Command' }, describeCommand(r)),
                h('td', { 'data-label': 'Status' }, statusBadge(r.status)),
                h('td', { 'data-label': 'Detail' }, [r.reason, r.message].filter(Boolean).join(': ') || '')));
        }
    }

    const onCommand = (e) => {
        const c = e.detail.command;
        if (c?.device_id === id) merge(c);
    };
    const onDevice = (e) => {
        if (!e.detail || e.detail.id === id) refreshControls();
    };
    store.addEventListener('command', onCommand);
    store.addEventListener('device', onDevice);
    store.addEventListener('devices', onDevice);
    store.addEventListener('telemetry', onDevice);

    api.commands(id, 50).then((res) => {
        const list = Array.isArray(res) ? res : res?.commands || [];
        for (const c of list) if (!commands.has(c.command_id)) commands.set(c.command_id, c);
        renderLog();
    }, (e) => setText(logStatus, `Could not load the command log: ${e.message}`));

    // Preselect what the device runs now.
    const cur = device()?.telemetry?.system_status?.target_mode;
    const pre = modeGroup.querySelector(`input[value="${MODES.includes(cur) ? cur : 'AUTO'}"]`);
    if (pre) pre.checked = true;
    const tp = device()?.telemetry?.system_status?.target_power;
    if (typeof tp === 'number' && needsPower(cur)) powerInput.value = String(tp);
    refreshControls();

    return {
        destroy() {
            store.removeEventListener('command', onCommand);
            store.removeEventListener('device', onDevice);
            store.removeEventListener('devices', onDevice);
            store.removeEventListener('telemetry', onDevice);
            if (dialog.open) dialog.close();
        },
    };
}
