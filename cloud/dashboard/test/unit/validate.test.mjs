// SET_MODE validation against the device's limits (src/validate.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateSetMode, maxPower, needsPower, PROTOCOL_MAX_POWER } from '../../src/validate.js';

const LIMITS = { max_charge_w: 3000, max_discharge_w: 5000, soc_min: 10, soc_max: 95 };

test('AUTO and MANUAL_IDLE take no power', () => {
    assert.deepEqual(validateSetMode('AUTO', '', LIMITS, 50), { ok: true, payload: { target_mode: 'AUTO' } });
    assert.deepEqual(validateSetMode('MANUAL_IDLE', '999999999', LIMITS, 50).payload, { target_mode: 'MANUAL_IDLE' });
    assert.equal(needsPower('AUTO'), false);
});

test('MANUAL_DISCHARGE 500 W within the limit is the payload of the spec', () => {
    const v = validateSetMode('MANUAL_DISCHARGE', '500', LIMITS, 50);
    assert.equal(v.ok, true);
    assert.deepEqual(v.payload, { target_mode: 'MANUAL_DISCHARGE', target_power: 500 });
    assert.equal(v.warning, null);
});

test('the power limit of each direction applies', () => {
    assert.equal(validateSetMode('MANUAL_CHARGE', '3000', LIMITS, 50).ok, true);
    const v = validateSetMode('MANUAL_CHARGE', '3001', LIMITS, 50);
    assert.equal(v.ok, false);
    assert.match(v.error, /maximum charge power of 3000 W/);
    assert.equal(validateSetMode('MANUAL_DISCHARGE', '5000', LIMITS, 50).ok, true);
    assert.match(validateSetMode('MANUAL_DISCHARGE', '5001', LIMITS, 50).error, /maximum discharge power of 5000 W/);
});

test('missing, negative and non-numeric power is refused', () => {
    assert.equal(validateSetMode('MANUAL_CHARGE', '', LIMITS, 50).ok, false);
    assert.equal(validateSetMode('MANUAL_CHARGE', '  ', LIMITS, 50).ok, false);
    assert.equal(validateSetMode('MANUAL_CHARGE', '-5', LIMITS, 50).ok, false);
    assert.equal(validateSetMode('MANUAL_CHARGE', 'abc', LIMITS, 50).ok, false);
    assert.equal(validateSetMode('MANUAL_CHARGE', 'Infinity', LIMITS, 50).ok, false);
    assert.equal(validateSetMode('BOOST', '1', LIMITS, 50).ok, false);
});

test('without limits the protocol bound applies', () => {
    assert.equal(maxPower('MANUAL_CHARGE', null), PROTOCOL_MAX_POWER);
    assert.equal(validateSetMode('MANUAL_CHARGE', '1000000', null, null).ok, true);
    const v = validateSetMode('MANUAL_CHARGE', '1000001', null, null);
    assert.equal(v.ok, false);
    assert.match(v.error, /largest allowed target power/);
});

test('the SoC window warns but does not block', () => {
    const d = validateSetMode('MANUAL_DISCHARGE', '500', LIMITS, 10);
    assert.equal(d.ok, true);
    assert.match(d.warning, /minimum of 10 %/);
    const c = validateSetMode('MANUAL_CHARGE', '500', LIMITS, 96);
    assert.equal(c.ok, true);
    assert.match(c.warning, /maximum of 95 %/);
});
