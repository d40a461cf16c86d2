// Alarm words, filters and the poller of the banner (src/alarms.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bannerText, unacknowledged, alarmQuery, sortAlarms, canAck, AlarmWatch } from '../../src/alarms.js';

const A = (id, device, state, severity = 'critical', raised = `2026-12-08T00:00:${String(id).padStart(2, '0')}Z`) =>
    ({ alarm_id: id, device_id: device, rule: 'error', state, severity, raised_at: raised });

test('the banner counts active alarms that nobody acknowledged', () => {
    assert.equal(bannerText([]), '');
    assert.equal(bannerText([A(1, 'a', 'cleared')]), '');
    assert.equal(bannerText([A(1, 'a', 'active')]), '1 active alarm not acknowledged on a (1 critical)');
    assert.equal(bannerText([A(1, 'a', 'active'), A(2, 'b', 'active', 'warning'), A(3, 'b', 'acknowledged')]),
        '2 active alarms not acknowledged on 2 devices (1 critical)');
    assert.equal(bannerText([A(3, 'b', 'acknowledged')]), '1 open alarm, all acknowledged');
    assert.equal(unacknowledged([A(1, 'a', 'active'), A(3, 'b', 'acknowledged')]).length, 1);
});

test('filters become the API query; empty ones are left out', () => {
    assert.equal(alarmQuery({}), '');
    assert.equal(alarmQuery({ state: 'open', device: '', limit: 200 }), '?state=open&limit=200');
    assert.equal(alarmQuery({ state: '', device: 'ems 1' }), '?device=ems+1');
});

test('newest first, then the higher id', () => {
    const s = sortAlarms([A(1, 'a', 'active'), A(3, 'a', 'active'), A(2, 'a', 'active', 'critical', '2026-12-08T00:00:03Z')]);
    assert.deepEqual(s.map((a) => a.alarm_id), [3, 2, 1]);
});

test('operators and admins may acknowledge, viewers may not', () => {
    assert.equal(canAck({ role: 'operator' }), true);
    assert.equal(canAck({ role: 'admin' }), true);
    assert.equal(canAck({ role: 'viewer' }), false);
    assert.equal(canAck(null), false);
});

test('AlarmWatch asks for open alarms, polls, keeps the list on an error and stops', async () => {
    const asked = [];
    let fail = false;
    const w = new AlarmWatch(async (f) => {
        asked.push(f);
        if (fail) throw new Error('gateway away');
        return { alarms: [A(1, 'a', 'active')] };
    }, { everyMs: 20 });
    const seen = [];
    w.addEventListener('alarms', (e) => seen.push(e.detail));
    w.start();
    await new Promise((r) => setTimeout(r, 70));
    assert.ok(asked.length >= 2, `polled ${asked.length} times`);
    assert.deepEqual(asked[0], { state: 'open', limit: 1000 });
    assert.equal(seen[0].alarms.length, 1);
    fail = true;
    await new Promise((r) => setTimeout(r, 50));
    const last = seen[seen.length - 1];
    assert.equal(last.error, 'gateway away');
    assert.equal(last.alarms.length, 1);
    w.stop();
    const n = asked.length;
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(asked.length, n, 'polled after stop');
    assert.equal(seen[seen.length - 1].alarms.length, 0);
});
