// The REST API of the gateway (docs/api.md). Same origin, cookie session.

import { alarmQuery } from './alarms.js';

export class ApiError extends Error {
    constructor(status, body) {
        super(body?.error || `HTTP ${status}`);
        this.status = status;
        this.body = body || {};
        this.path = body?.path;
    }
}

let onUnauthorized = () => {};

/** Called with no argument whenever a request answers 401 (session gone). */
export function setUnauthorizedHandler(fn) {
    onUnauthorized = fn;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function request(method, path, body, { quiet401 = false } = {}) {
    const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
    }
    let res;
    // A GET refused for the user's share of the DB writer (429) or because
    // the gateway's query queue is full (503, Retry-After 2) is tried again
    // after the time it names, twice at most (docs/api.md, "Limits"). A DB
    // writer that is down (503, Retry-After 5) is reported at once.
    for (let attempt = 0; ; attempt++) {
        try {
            res = await fetch(path, init);
        } catch (e) {
            throw new ApiError(0, { error: 'the gateway cannot be reached' });
        }
        const retry = Number(res.headers.get('Retry-After'));
        const busy = res.status === 429 || (res.status === 503 && retry <= 2);
        if (method !== 'GET' || attempt >= 2 || !busy || !(retry > 0)) break;
        await sleep(retry * 1000);
    }
    if (res.status === 204) return null;
    let data = null;
    const type = res.headers.get('Content-Type') || '';
    if (type.includes('json')) {
        try {
            data = await res.json();
        } catch {
            data = null;
        }
    }
    if (!res.ok) {
        if (res.status === 401 && !quiet401) onUnauthorized();
        throw new ApiError(res.status, data);
    }
    return data;
}

export const api = {
    me: () => request('GET', '/api/me', undefined, { quiet401: true }),
    login: (username, password) => request('POST', '/api/login', { username, password }, { quiet401: true }),
    logout: () => request('POST', '/api/logout', {}),
    devices: () => request('GET', '/api/devices'),
    device: (id) => request('GET', `/api/devices/${encodeURIComponent(id)}`),
    telemetry: (id, params) => request('GET', telemetryUrl(id, params)),
    commands: (id, limit = 50) => request('GET', `/api/devices/${encodeURIComponent(id)}/commands?limit=${limit}`),
    command: (cid) => request('GET', `/api/commands/${encodeURIComponent(cid)}`),
    sendCommand: (id, body) => request('POST', `/api/devices/${encodeURIComponent(id)}/commands`, body),
    energy: (id, params) => request('GET', energyUrl(id, params)),
    alarms: (filter) => request('GET', `/api/alarms${alarmQuery(filter)}`),
    deviceAlarms: (id, filter) => request('GET', `/api/devices/${encodeURIComponent(id)}/alarms${alarmQuery(filter)}`),
    ackAlarm: (alarmId) => request('POST', `/api/alarms/${encodeURIComponent(alarmId)}/ack`, {}),
};

/** Energy per bucket of one device, or of the fleet when `id` is null; `format: 'csv'` for the export link. */
export function energyUrl(id, { from, to, bucket = 'day', format } = {}) {
    const q = new URLSearchParams();
    if (from) q.set('from', from);
    if (to) q.set('to', to);
    q.set('bucket', bucket);
    if (format) q.set('format', format);
    return id ? `/api/devices/${encodeURIComponent(id)}/energy?${q}` : `/api/energy?${q}`;
}

/** The history URL; `format: 'csv'` gives the CSV export link. */
export function telemetryUrl(id, { from, to, resolution = 'auto', format } = {}) {
    const q = new URLSearchParams();
    if (from) q.set('from', from);
    if (to) q.set('to', to);
    q.set('resolution', resolution);
    if (format) q.set('format', format);
    return `/api/devices/${encodeURIComponent(id)}/telemetry?${q}`;
}

/** A command id for idempotent retries: 1..64 of [A-Za-z0-9_.:-] (docs/protocol.md). */
export function newCommandId() {
    const b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return 'dash-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
