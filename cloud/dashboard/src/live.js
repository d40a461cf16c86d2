// The page's picture of the fleet, and the dashboard WebSocket that keeps it
// current (docs/protocol.md section 4).
//
// Store holds every device as GET /api/devices gives it and applies the
// socket's events to it; views listen to its events:
//   'devices'   the whole list was (re)loaded
//   'telemetry' detail: {id, packet}   (live and backfilled packets)
//   'fleet'     detail: {ids}          (latest states from the fleet view)
//   'device'    detail: {id}           (online/offline changed)
//   'command'   detail: {command}      (a command record changed)
//   'conn'      detail: {state, retryIn}  socket state for the header

import { api } from './api.js';

export class Store extends EventTarget {
    constructor() {
        super();
        this.devices = new Map();
        this.me = null;
    }

    emit(type, detail) {
        this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    async load() {
        const { devices } = await api.devices();
        const seen = new Set();
        for (const d of devices || []) {
            seen.add(d.device_id);
            const old = this.devices.get(d.device_id);
            this.devices.set(d.device_id, normalise(d, old));
        }
        for (const id of [...this.devices.keys()]) if (!seen.has(id)) this.devices.delete(id);
        this.emit('devices');
    }

    /** Upserts one device from GET /api/devices/{id}. */
    put(d) {
        this.devices.set(d.device_id, normalise(d, this.devices.get(d.device_id)));
        this.emit('device', { id: d.device_id });
    }

    onTelemetry(packet) {
        const id = packet?.device_id;
        if (!id) return;
        let d = this.devices.get(id);
        if (!d) {
            d = normalise({ device_id: id, online: true }, null);
            this.devices.set(id, d);
        }
        // A backfilled packet is history: it goes to the charts but never
        // replaces the newest values.
        const live = packet.backfill !== true && isNewer(packet, d.telemetry);
        if (live) {
            d.telemetry = packet;
            d.last_seen = new Date().toISOString();
            d.receivedAt = Date.now();
            if (!d.online) {
                d.online = true;
                d.offline_since = null;
            }
        }
        this.emit('telemetry', { id, packet, live });
    }

    /**
     * A `fleet` frame (docs/api.md, "The fleet view"): the latest state of
     * the devices that changed, at most once a second each. It updates the
     * values the fleet table shows; a device opened in detail also gets
     * every packet through onTelemetry, and whichever is newer wins.
     */
    onFleet(items) {
        const now = Date.now();
        const ids = [];
        for (const it of Array.isArray(items) ? items : []) {
            const id = it?.device_id;
            if (!id) continue;
            let d = this.devices.get(id);
            if (!d) {
                d = normalise({ device_id: id, online: !!it.online }, null);
                this.devices.set(id, d);
            }
            d.online = !!it.online;
            if (d.online) {
                if (it.since) d.connected_since = it.since;
                d.offline_since = null;
            } else {
                d.offline_since = it.since || d.offline_since || new Date(now).toISOString();
            }
            if (it.timestamp && isNewer({ timestamp: it.timestamp }, d.telemetry)) {
                d.telemetry = fleetPacket(it, d.telemetry);
                d.last_seen = new Date(now).toISOString();
                d.receivedAt = now;
            }
            ids.push(id);
        }
        if (ids.length) this.emit('fleet', { ids });
    }

    onDevice(ev) {
        const d = this.devices.get(ev.device_id);
        if (!d) {
            // A device we have not seen: fetch it whole (limits and all).
            api.device(ev.device_id).then((full) => this.put(full), () => {});
            return;
        }
        d.online = !!ev.online;
        if (d.online) {
            d.connected_since = ev.since || new Date().toISOString();
            d.offline_since = null;
            // Limits come with the device_info after each connect.
            api.device(ev.device_id).then((full) => this.put(full), () => {});
        } else {
            d.offline_since = ev.since || new Date().toISOString();
        }
        this.emit('device', { id: ev.device_id });
    }
}

function normalise(d, old) {
    const out = { ...(old || {}), ...d };
    out.offline_since = out.online ? null : d.since || d.disconnected_at || old?.offline_since || d.last_seen || null;
    if (!out.receivedAt && out.last_seen) out.receivedAt = Date.parse(out.last_seen) || null;
    return out;
}

/**
 * A fleet item as a packet for the views: its values over the device's
 * previous packet (so members the fleet view does not carry, such as the
 * temperature, keep their last known value). The packet's seq is not in
 * the item: it is dropped, so "newer" is decided by the timestamp.
 */
function fleetPacket(it, old) {
    const o = old || {};
    const ss = { ...(o.system_status || {}), state: it.state, mode: it.mode, error_flags: it.error_flags || [] };
    delete ss.target_mode;
    delete ss.target_power;
    if (it.target_mode) ss.target_mode = it.target_mode;
    if (typeof it.target_power === 'number') ss.target_power = it.target_power;
    const p = {
        ...o,
        device_id: it.device_id,
        timestamp: it.timestamp,
        system_status: ss,
        battery: { ...(o.battery || {}), soc: it.soc, power: it.battery_power },
        grid: { ...(o.grid || {}), power: it.grid_power },
    };
    delete p.seq;
    delete p.backfill;
    return p;
}

function isNewer(p, old) {
    if (!old) return true;
    if (typeof p.seq === 'number' && typeof old.seq === 'number') return p.seq > old.seq;
    return (Date.parse(p.timestamp) || 0) >= (Date.parse(old.timestamp) || 0);
}

/**
 * The dashboard socket with reconnection: exponential backoff with full
 * jitter, 1 s doubling up to 30 s, reset once a connection has lasted 10 s.
 * After a reconnect the device list is reloaded, since online/offline events
 * may have been missed while away.
 *
 * What it subscribes to is set with setInterest({fleet, devices}):
 *   fleet    the coalesced fleet view ("mode": "fleet"): every device's
 *            latest state at most once a second, in a few frames whatever
 *            the fleet's size, so the fleet table works for any fleet;
 *   devices  the devices shown in detail: every live packet, their
 *            online/offline events and command changes, at full rate.
 * Both are changed on the open socket (subscribe/unsubscribe); nothing
 * needs a reconnect.
 */
export class LiveSocket {
    constructor(store, { onAuthLost } = {}) {
        this.store = store;
        this.onAuthLost = onAuthLost || (() => {});
        this.ws = null;
        this.attempt = 0;
        this.timer = null;
        this.stopped = true;
        this.openedAt = 0;
        this.hadConnection = false;
        this.state = 'idle';
        this.interest = { fleet: true, devices: [] }; // what we want
        this.sent = new Set(); // the detail ids the open socket is subscribed to
        this.sentFleet = false; // whether the open socket has the fleet view
    }

    /** want: {fleet: bool, devices: [ids]}. */
    setInterest(want) {
        this.interest = { fleet: !!want?.fleet, devices: [...new Set(want?.devices || [])].sort() };
        const ws = this.ws;
        if (ws && ws.readyState === WebSocket.OPEN) this.apply();
    }

    /** Brings the open socket's subscriptions in line with the interest. */
    apply() {
        const ws = this.ws;
        const { fleet, devices } = this.interest;
        if (fleet !== this.sentFleet) {
            ws.send(JSON.stringify({ type: fleet ? 'subscribe' : 'unsubscribe', devices: '*', mode: 'fleet' }));
            this.sentFleet = fleet;
        }
        const now = new Set(devices);
        const gone = [...this.sent].filter((id) => !now.has(id));
        const added = devices.filter((id) => !this.sent.has(id));
        if (gone.length) ws.send(JSON.stringify({ type: 'unsubscribe', devices: gone }));
        if (added.length) ws.send(JSON.stringify({ type: 'subscribe', devices: added }));
        this.sent = now;
    }

    start() {
        this.stopped = false;
        this.connect();
    }

    stop() {
        this.stopped = true;
        clearTimeout(this.timer);
        this.timer = null;
        if (this.ws) {
            this.ws.onclose = null;
            this.ws.close(1000);
            this.ws = null;
        }
        this.setState('idle');
    }

    setState(state, retryIn) {
        this.state = state;
        this.store.emit('conn', { state, retryIn });
    }

    connect() {
        if (this.stopped) return;
        const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/dashboard`;
        this.setState('connecting');
        let ws;
        try {
            ws = new WebSocket(url);
        } catch {
            this.scheduleRetry();
            return;
        }
        this.ws = ws;
        ws.onopen = () => {
            this.openedAt = Date.now();
            this.setState('open');
            this.sent = new Set();
            this.sentFleet = false;
            this.apply();
            if (this.hadConnection) this.store.load().catch(() => {});
            this.hadConnection = true;
        };
        ws.onmessage = (e) => this.onMessage(e.data);
        ws.onclose = () => {
            if (this.ws !== ws) return;
            this.ws = null;
            if (this.openedAt && Date.now() - this.openedAt > 10000) this.attempt = 0;
            this.openedAt = 0;
            this.scheduleRetry();
        };
        ws.onerror = () => {}; // onclose follows and does the work
    }

    async scheduleRetry() {
        if (this.stopped) return;
        // A refused upgrade looks like any other failure from here; ask the
        // API whether the session is still good before trying again.
        if (this.attempt > 0) {
            try {
                await api.me();
            } catch (e) {
                if (e.status === 401) {
                    this.stop();
                    this.onAuthLost();
                    return;
                }
            }
        }
        const cap = Math.min(30000, 1000 * 2 ** this.attempt);
        const delay = Math.max(500, Math.round(Math.random() * cap));
        this.attempt++;
        this.setState('waiting', delay);
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.connect(), delay);
    }

    onMessage(text) {
        let m;
        try {
            m = JSON.parse(text);
        } catch {
            return;
        }
        switch (m.type) {
            case 'telemetry':
                this.store.onTelemetry(m.packet);
                break;
            case 'fleet':
                this.store.onFleet(m.devices);
                break;
            case 'device':
                this.store.onDevice(m);
                break;
            case 'command':
                if (m.command) this.store.emit('command', { command: m.command });
                break;
            case 'error':
                console.warn('dashboard socket:', m.path, m.reason);
                break;
            default:
                break; // unknown kinds are ignored (docs/protocol.md)
        }
    }
}
