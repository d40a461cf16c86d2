// Alarms (docs/alarms.md, docs/api.md "Alarms"): the words the views use,
// and AlarmWatch, which keeps the open alarms of the fleet for the banner.
//
// The gateway does not push alarm changes over the dashboard WebSocket, so
// AlarmWatch polls GET /api/alarms?state=open every POLL_MS (and at once
// after an acknowledgement from this page). An alarm therefore reaches the
// banner at most POLL_MS after the gateway raised it.

export const POLL_MS = 5000;

export const RULE_LABELS = {
    error: 'Device in ERROR',
    sensor_fault: 'Sensor fault',
    soc_low: 'Low state of charge',
    offline: 'Device offline',
};

export const STATE_LABELS = {
    active: 'active',
    acknowledged: 'acknowledged',
    cleared: 'cleared',
};

/** The filter choices of the list: the API's `state` values, '' for all. */
export const STATE_FILTERS = [
    { value: 'open', label: 'Open (active or acknowledged)' },
    { value: 'active', label: 'Active, not acknowledged' },
    { value: 'acknowledged', label: 'Acknowledged' },
    { value: 'cleared', label: 'Cleared' },
    { value: '', label: 'All' },
];

/** Alarms nobody has acknowledged yet and that have not cleared. */
export function unacknowledged(alarms) {
    return (alarms || []).filter((a) => a && a.state === 'active');
}

/** The banner's sentence, or '' when there is nothing to say. */
export function bannerText(alarms) {
    const open = (alarms || []).filter((a) => a && (a.state === 'active' || a.state === 'acknowledged'));
    const act = unacknowledged(open);
    if (open.length === 0) return '';
    const crit = act.filter((a) => a.severity === 'critical').length;
    const devices = new Set(act.map((a) => a.device_id)).size;
    if (act.length === 0)
        return `${open.length} open ${open.length === 1 ? 'alarm' : 'alarms'}, all acknowledged`;
    let s = `${act.length} active ${act.length === 1 ? 'alarm' : 'alarms'} not acknowledged`;
    s += devices > 1 ? ` on ${devices} devices` : ` on ${act[0].device_id}`;
    if (crit) s += ` (${crit} critical)`;
    return s;
}

/** The API's query string for a filter {state, device}; empty values are left out. */
export function alarmQuery({ state, device, limit } = {}) {
    const q = new URLSearchParams();
    if (state) q.set('state', state);
    if (device) q.set('device', device);
    if (limit) q.set('limit', String(limit));
    const s = q.toString();
    return s ? `?${s}` : '';
}

/** Newest raised first, then the highest id (the API's order, kept after merging). */
export function sortAlarms(alarms) {
    return [...(alarms || [])].sort((a, b) =>
        (Date.parse(b.raised_at) || 0) - (Date.parse(a.raised_at) || 0) || (b.alarm_id || 0) - (a.alarm_id || 0));
}

/** May this user acknowledge? The gateway checks too (a viewer gets 403). */
export function canAck(me) {
    return !!me && (me.role === 'operator' || me.role === 'admin');
}

/**
 * Keeps the fleet's open alarms: `start()` polls, `stop()` stops, `refresh()`
 * asks at once. Emits 'alarms' with detail {alarms, error}. `list` is the
 * function that answers GET /api/alarms (injected, so node can test this).
 */
export class AlarmWatch extends EventTarget {
    constructor(list, { everyMs = POLL_MS } = {}) {
        super();
        this.list = list;
        this.everyMs = everyMs;
        this.alarms = [];
        this.error = null;
        this.timer = null;
        this.running = false;
        this.seq = 0;
    }

    start() {
        if (this.running) return;
        this.running = true;
        this.refresh();
    }

    stop() {
        this.running = false;
        clearTimeout(this.timer);
        this.timer = null;
        this.seq++;
        this.alarms = [];
        this.error = null;
        this.emit();
    }

    emit() {
        this.dispatchEvent(new CustomEvent('alarms', { detail: { alarms: this.alarms, error: this.error } }));
    }

    async refresh() {
        if (!this.running) return;
        clearTimeout(this.timer);
        const mine = ++this.seq;
        try {
            const res = await this.list({ state: 'open', limit: 1000 });
            if (mine !== this.seq) return;
            this.alarms = sortAlarms(res?.alarms || []);
            this.error = null;
        } catch (e) {
            if (mine !== this.seq) return;
            this.error = e.message || String(e); // keep the last list: better than an empty banner
        }
        this.emit();
        if (this.running) this.timer = setTimeout(() => this.refresh(), this.everyMs);
    }
}
