// The fleet stream in the page (src/live.js): Store.onFleet applies `fleet`
// frames (docs/api.md, "The fleet view") and LiveSocket asks for the fleet
// view and for full-rate detail subscriptions without reconnecting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Store, LiveSocket } from '../../src/live.js';

const item = (id, ts, over = {}) => ({
    device_id: id, online: true, since: '2026-01-31T11:00:00.000Z', timestamp: ts,
    state: 'CHARGING', mode: 'AUTO', error_flags: [], soc: 50, battery_power: 500, grid_power: -200, ...over,
});

const packet = (id, seq, ts) => ({
    device_id: id, timestamp: ts, seq,
    system_status: { state: 'IDLE', mode: 'MANUAL', error_flags: [], wifi_strength: -40, target_mode: 'MANUAL_IDLE' },
    battery: { voltage: 52, current: 0, power: 0, soc: 40, temperature: 25 },
    grid: { voltage: 230, power: 10, frequency: 50 },
});

test('a fleet frame adds devices with their latest values and says which changed', () => {
    const s = new Store();
    const seen = [];
    s.addEventListener('fleet', (e) => seen.push(e.detail.ids));
    s.onFleet([item('a', '2026-01-31T12:00:01.000Z'), item('b', '2026-01-31T12:00:01.000Z', { online: false, since: '2026-01-31T11:30:00.000Z' }), { device_id: 'c', online: true }]);
    assert.deepEqual(seen, [['a', 'b', 'c']]);
    const a = s.devices.get('a');
    assert.equal(a.online, true);
    assert.equal(a.telemetry.battery.soc, 50);
    assert.equal(a.telemetry.battery.power, 500);
    assert.equal(a.telemetry.grid.power, -200);
    assert.equal(a.telemetry.system_status.state, 'CHARGING');
    assert.ok(a.last_seen);
    const b = s.devices.get('b');
    assert.equal(b.online, false);
    assert.equal(b.offline_since, '2026-01-31T11:30:00.000Z');
    const c = s.devices.get('c');
    assert.equal(c.online, true);
    assert.equal(c.telemetry, undefined); // no packet yet: no values
});

test('fleet items and detail packets: the newer wins, the rest of the packet is kept', () => {
    const s = new Store();
    s.onTelemetry(packet('a', 7, '2026-01-31T12:00:05.000Z'));
    s.onFleet([item('a', '2026-01-31T12:00:04.000Z')]); // older than the detail packet
    assert.equal(s.devices.get('a').telemetry.seq, 7);
    assert.equal(s.devices.get('a').telemetry.battery.soc, 40);
    s.onFleet([item('a', '2026-01-31T12:00:06.000Z', { target_mode: 'MANUAL_CHARGE', target_power: 1500 })]);
    const t = s.devices.get('a').telemetry;
    assert.equal(t.battery.soc, 50);
    assert.equal(t.battery.temperature, 25); // not in the fleet item: the last known value
    assert.equal(t.seq, undefined);
    assert.deepEqual([t.system_status.target_mode, t.system_status.target_power], ['MANUAL_CHARGE', 1500]);
    s.onFleet([item('a', '2026-01-31T12:00:07.000Z')]); // no target mode in this packet
    assert.equal(s.devices.get('a').telemetry.system_status.target_mode, undefined);
    s.onTelemetry(packet('a', 8, '2026-01-31T12:00:08.000Z'));
    assert.equal(s.devices.get('a').telemetry.seq, 8);
});

test('going offline in the fleet view', () => {
    const s = new Store();
    s.onFleet([item('a', '2026-01-31T12:00:01.000Z')]);
    s.onFleet([item('a', '2026-01-31T12:00:01.000Z', { online: false, since: '2026-01-31T12:00:03.000Z' })]);
    const a = s.devices.get('a');
    assert.equal(a.online, false);
    assert.equal(a.offline_since, '2026-01-31T12:00:03.000Z');
    assert.equal(a.telemetry.battery.soc, 50); // the last values stay
});

test('the socket asks for the fleet view and for detail devices on the open socket', () => {
    globalThis.WebSocket = globalThis.WebSocket || { OPEN: 1 };
    const sent = [];
    const sock = new LiveSocket(new Store());
    sock.ws = { readyState: WebSocket.OPEN, send: (t) => sent.push(JSON.parse(t)) };
    sock.setInterest({ fleet: true, devices: [] });
    assert.deepEqual(sent, [{ type: 'subscribe', devices: '*', mode: 'fleet' }]);
    sent.length = 0;
    sock.setInterest({ fleet: false, devices: ['x', 'y', 'x'] });
    assert.deepEqual(sent, [
        { type: 'unsubscribe', devices: '*', mode: 'fleet' },
        { type: 'subscribe', devices: ['x', 'y'] },
    ]);
    sent.length = 0;
    sock.setInterest({ fleet: true, devices: ['y'] });
    assert.deepEqual(sent, [
        { type: 'subscribe', devices: '*', mode: 'fleet' },
        { type: 'unsubscribe', devices: ['x'] },
    ]);
    sent.length = 0;
    sock.setInterest({ fleet: true, devices: ['y'] });
    assert.deepEqual(sent, []); // nothing changed, nothing sent
    sock.onMessage(JSON.stringify({ type: 'fleet', devices: [item('y', '2026-01-31T12:00:01.000Z')] }));
    assert.equal(sock.store.devices.get('y').telemetry.battery.soc, 50);
});
