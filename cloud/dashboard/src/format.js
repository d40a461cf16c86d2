// Number, time and direction formatting. Every value on the page goes
// through here so units and signs look the same everywhere.

const NBSP = '\u00a0';
const MINUS = '\u2212';

function isNum(v) {
    return typeof v === 'number' && Number.isFinite(v);
}

/** A number with a fixed number of decimals and a unit; "–" when missing. */
export function num(v, unit, digits = 1) {
    if (!isNum(v)) return '–';
    let s = Math.abs(v).toFixed(digits);
    if (v < 0 && Number(s) !== 0) s = MINUS + s;
    return unit ? s + NBSP + unit : s;
}

/** Power in W below 10 kW, in kW above, signed. */
export function power(v) {
    if (!isNum(v)) return '–';
    if (Math.abs(v) >= 10000) return num(v / 1000, 'kW', 2);
    return num(v, 'W', 0);
}

/** Battery direction by the spec's sign rule: positive current/power = charging. */
export function batteryDirection(powerW, currentA) {
    const p = isNum(powerW) ? powerW : isNum(currentA) ? currentA : null;
    if (p === null) return { key: 'unknown', label: 'unknown', arrow: '' };
    if (Math.abs(p) < 1 && !(isNum(currentA) && Math.abs(currentA) >= 0.05))
        return { key: 'idle', label: 'Idle', arrow: '•' };
    return p > 0
        ? { key: 'charging', label: 'Charging', arrow: '▼' }
        : { key: 'discharging', label: 'Discharging', arrow: '▲' };
}

/** Grid direction by the spec's sign rule: negative grid power = exporting. */
export function gridDirection(powerW) {
    if (!isNum(powerW)) return { key: 'unknown', label: 'unknown', arrow: '' };
    if (Math.abs(powerW) < 1) return { key: 'balanced', label: 'Balanced', arrow: '•' };
    return powerW < 0
        ? { key: 'exporting', label: 'Exporting', arrow: '▲' }
        : { key: 'importing', label: 'Importing', arrow: '▼' };
}

/** Wi-Fi strength in dBm with a word; null means the device has no radio. */
export function wifi(dbm) {
    if (dbm === null) return { value: 'none', quality: 'no wireless interface (wired)' };
    if (!isNum(dbm)) return { value: '–', quality: 'unknown' };
    const q = dbm >= -55 ? 'excellent' : dbm >= -67 ? 'good' : dbm >= -75 ? 'fair' : 'weak';
    return { value: num(dbm, 'dBm', 0), quality: q };
}

export function parseTime(t) {
    if (t == null) return null;
    const ms = typeof t === 'number' ? t : Date.parse(t);
    return Number.isFinite(ms) ? ms : null;
}

const pad = (n) => String(n).padStart(2, '0');

/** Local wall-clock time, with the date when it is not today. */
export function clock(t, now = Date.now()) {
    const ms = parseTime(t);
    if (ms === null) return '–';
    const d = new Date(ms);
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date(now);
    if (d.toDateString() === today.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

/** "just now", "42 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function ago(t, now = Date.now()) {
    const ms = parseTime(t);
    if (ms === null) return 'never';
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 2) return 'just now';
    if (s < 90) return `${s}${NBSP}s ago`;
    if (s < 90 * 60) return `${Math.round(s / 60)}${NBSP}min ago`;
    if (s < 36 * 3600) return `${Math.round(s / 3600)}${NBSP}h ago`;
    return `${Math.round(s / 86400)}${NBSP}d ago`;
}

/** A duration in seconds as "45 s", "3 min 20 s", "2 h 5 min". */
export function duration(sec) {
    sec = Math.round(sec);
    if (sec < 60) return `${sec}${NBSP}s`;
    if (sec < 3600) {
        const m = Math.floor(sec / 60), s = sec % 60;
        return s ? `${m}${NBSP}min ${s}${NBSP}s` : `${m}${NBSP}min`;
    }
    const h = Math.floor(sec / 3600), m = Math.round((sec % 3600) / 60);
    return m ? `${h}${NBSP}h ${m}${NBSP}min` : `${h}${NBSP}h`;
}

/** The value for an <input type="datetime-local"> from epoch ms. */
export function toLocalInput(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A SET_MODE/RESET_ERROR command in a few words. */
export function describeCommand(cmd) {
    if (!cmd) return '';
    if (cmd.action === 'RESET_ERROR') return 'Reset error';
    const p = cmd.payload || {};
    const mode = MODE_LABELS[p.target_mode] || p.target_mode || '?';
    return isNum(p.target_power) && p.target_mode !== 'AUTO' && p.target_mode !== 'MANUAL_IDLE'
        ? `Set mode: ${mode}, ${power(p.target_power)}`
        : `Set mode: ${mode}`;
}

export const MODE_LABELS = {
    AUTO: 'Automatic',
    MANUAL_CHARGE: 'Manual charge',
    MANUAL_DISCHARGE: 'Manual discharge',
    MANUAL_IDLE: 'Manual idle',
};

export const STATUS_LABELS = {
    queued: 'queued',
    sent: 'sent',
    accepted: 'accepted',
    completed: 'completed',
    rejected: 'rejected',
    failed: 'failed',
    timed_out: 'timed out',
    expired: 'expired',
};

export const TERMINAL_STATUSES = new Set(['completed', 'rejected', 'failed', 'timed_out', 'expired']);

/** RFC 3339 UTC without the milliseconds, as the API's examples write it. */
export function isoSeconds(d) {
    return new Date(d).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
