// Checks a SET_MODE against the device's limits before it is sent, so the
// operator learns at once what the edge would refuse anyway. The edge checks
// again (it is the authority); this only saves a round trip and explains.

export const MODES = ['AUTO', 'MANUAL_CHARGE', 'MANUAL_DISCHARGE', 'MANUAL_IDLE'];
export const PROTOCOL_MAX_POWER = 1000000; // docs/protocol.md 3.1

export function needsPower(mode) {
    return mode === 'MANUAL_CHARGE' || mode === 'MANUAL_DISCHARGE';
}

/** The largest target power the device takes for `mode`, or the protocol's bound. */
export function maxPower(mode, limits) {
    const l = limits || {};
    const m = mode === 'MANUAL_CHARGE' ? l.max_charge_w : mode === 'MANUAL_DISCHARGE' ? l.max_discharge_w : undefined;
    return typeof m === 'number' && Number.isFinite(m) ? Math.min(m, PROTOCOL_MAX_POWER) : PROTOCOL_MAX_POWER;
}

/**
 * Validates a SET_MODE form.
 *
 * mode: one of MODES; powerText: what the operator typed (string); limits:
 * the device's limits or null; soc: the newest SoC or null.
 * Returns { ok, payload, error, warning }: `payload` is the command payload
 * when ok; `error` says what to fix; `warning` is advice that does not block
 * (the SoC window, which the device's hysteresis decides on its own).
 */
export function validateSetMode(mode, powerText, limits, soc) {
    if (!MODES.includes(mode)) return { ok: false, error: 'Choose a mode.' };
    if (!needsPower(mode)) return { ok: true, payload: { target_mode: mode } };

    const text = String(powerText ?? '').trim();
    if (text === '') return { ok: false, error: 'Enter the target power in watts.' };
    const p = Number(text);
    if (!Number.isFinite(p)) return { ok: false, error: `"${text}" is not a number.` };
    if (p < 0) return { ok: false, error: 'The target power cannot be negative: the mode gives the direction.' };
    const max = maxPower(mode, limits);
    if (p > max) {
        const what = mode === 'MANUAL_CHARGE' ? 'maximum charge power' : 'maximum discharge power';
        const key = mode === 'MANUAL_CHARGE' ? 'max_charge_w' : 'max_discharge_w';
        const known = Number.isFinite(limits?.[key]);
        return {
            ok: false,
            error: known
                ? `${p} W is above the device's ${what} of ${max} W.`
                : `${p} W is above the largest allowed target power of ${max} W.`,
        };
    }
    let warning = null;
    const l = limits || {};
    if (typeof soc === 'number') {
        if (mode === 'MANUAL_DISCHARGE' && typeof l.soc_min === 'number' && soc <= l.soc_min)
            warning = `The battery is at ${soc} %, at or below its minimum of ${l.soc_min} %: the device will not discharge.`;
        if (mode === 'MANUAL_CHARGE' && typeof l.soc_max === 'number' && soc >= l.soc_max)
            warning = `The battery is at ${soc} %, at or above its maximum of ${l.soc_max} %: the device will not charge.`;
    }
    return { ok: true, payload: { target_mode: mode, target_power: p }, warning };
}
