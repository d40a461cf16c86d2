// Browser tests of the dashboard in Debian's Chromium, driven by
// playwright-core, against a running system (test/suites/70-dashboard.sh
// starts PostgreSQL, the DB writer, the gateway and simulated edges, then
// runs this). Prints TAP lines "ok - name" / "not ok - name: why".
//
// Environment (set by the suite):
//   EMS_DASH_URL            the gateway's base URL, e.g. http://127.0.0.1:8443
//   EMS_DASH_OPERATOR       "user:password" of an operator
//   EMS_DASH_VIEWER         "user:password" of a viewer
//   EMS_DASH_DEVICES        every simulated device id, comma-separated
//   EMS_DASH_CONTROL        the device that gets SET_MODE
//   EMS_DASH_FAULT          the device whose simulated pack overheats
//   EMS_DASH_OFFLINE        the device that is stopped and started again
//   EMS_DASH_RESET_BELOW_C  the temperature under which the fault has gone
//   EMS_DASH_HOOK           a program: "HOOK stop ID", "HOOK start ID",
//                           "HOOK restart-gateway"
//   EMS_DASH_ARTIFACTS      where screenshots go
//   EMS_CHROMIUM            the browser (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const env = (k, d) => {
    const v = process.env[k] ?? d;
    if (v === undefined) {
        console.log(`not ok - environment: ${k} is not set`);
        process.exit(1);
    }
    return v;
};
const URL_BASE = env('EMS_DASH_URL').replace(/\/$/, '');
const [OP_USER, OP_PASS] = splitCred(env('EMS_DASH_OPERATOR'));
const [VIEW_USER, VIEW_PASS] = splitCred(env('EMS_DASH_VIEWER'));
const DEVICES = env('EMS_DASH_DEVICES').split(',').filter(Boolean);
const CTRL = env('EMS_DASH_CONTROL');
const FAULT = env('EMS_DASH_FAULT');
const OFF = env('EMS_DASH_OFFLINE');
const RESET_BELOW_C = Number(env('EMS_DASH_RESET_BELOW_C', '50'));
const HOOK = env('EMS_DASH_HOOK');
const ART = env('EMS_DASH_ARTIFACTS');
const CHROMIUM = env('EMS_CHROMIUM', '/usr/bin/chromium');
mkdirSync(ART, { recursive: true });

function splitCred(s) {
    const i = s.indexOf(':');
    return [s.slice(0, i), s.slice(i + 1)];
}

// ------------------------------------------------------------------ TAP
let failed = 0;
const oneLine = (s) => String(s).split('\n')[0].slice(0, 300);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function step(name, fn, timeoutMs = 60000) {
    let timer;
    try {
        await Promise.race([
            fn(),
            new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`no result within ${timeoutMs / 1000} s`)), timeoutMs))),
        ]);
        console.log(`ok - ${name}`);
        return true;
    } catch (e) {
        failed++;
        console.log(`not ok - ${name}: ${oneLine(e.message)}`);
        for (const p of pages) await shot(p.page, `fail-${p.tag}-${slug(name)}`).catch(() => {});
        return false;
    } finally {
        clearTimeout(timer);
    }
}

function assert(cond, msg) {
    if (!cond) throw new Error(msg);
}

const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);

async function shot(page, name, opts = {}) {
    await page.screenshot({ path: path.join(ART, `${name}.png`), fullPage: true, ...opts });
}

function hook(...args) {
    console.log(`# hook: ${args.join(' ')}`);
    execFileSync(HOOK, args, { stdio: ['ignore', 'inherit', 'inherit'], timeout: 60000 });
}

/**
 * Polls fn() until it returns true or an object (which is returned). Any
 * other value (false, a number, a string) means "not yet" and is shown in
 * the failure message as the last value seen.
 */
async function until(what, fn, timeoutMs = 20000, everyMs = 250) {
    const end = Date.now() + timeoutMs;
    let last;
    while (Date.now() < end) {
        last = await fn();
        if (last === true || (typeof last === 'object' && last !== null)) return last;
        await sleep(everyMs);
    }
    throw new Error(`${what} (waited ${timeoutMs / 1000} s${last !== undefined ? `, last: ${JSON.stringify(last)}` : ''})`);
}

// ------------------------------------------------------------------ browser
const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // playwright gives every launch a fresh temporary profile (user data dir).
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
console.log(`# chromium ${browser.version()}, gateway ${URL_BASE}`);

// Console errors are collected per page; a step that provokes one on purpose
// (a wrong password answered 401, the socket failing while the gateway is
// down) says so with `expectErrors`.
const pages = [];
const consoleErrors = [];
let expected = null; // RegExp of errors the current step provokes
// Content-Security-Policy violations are collected apart and never excused
// by expectErrors: an inline script or style, eval, or a request to another
// origin added to the dashboard fails the run (the gateway's policy is in
// cloud/gateway/gw_static.c).
const cspViolations = [];
let cspProbe = false; // the one step that provokes a violation on purpose

async function newPage(tag, contextOpts = {}) {
    // The gateway's certificate comes from a CA made for the test run.
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ignoreHTTPSErrors: true, ...contextOpts });
    // Init scripts come through the DevTools protocol, so the page's CSP
    // does not apply to this listener; the event names what was blocked.
    await context.addInitScript(() => {
        document.addEventListener('securitypolicyviolation', (e) => {
            console.error(`Content Security Policy violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
        });
    });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    const note = (text) => {
        if (expected && expected.test(text)) return;
        consoleErrors.push(`[${tag}] ${text}`);
    };
    page.on('console', (m) => {
        const t = m.text();
        if (/Content Security Policy|Content-Security-Policy/i.test(t)) {
            if (cspProbe) cspViolations.probe = (cspViolations.probe || 0) + 1;
            else cspViolations.push(`[${tag}] ${t}`);
            return;
        }
        if (m.type() === 'error') note(t);
    });
    page.on('pageerror', (e) => note(`uncaught: ${e.message}`));
    page.on('response', (r) => {
        if (r.status() >= 400) console.log(`# [${tag}] HTTP ${r.status()} ${r.request().method()} ${r.url().replace(URL_BASE, '')}`);
    });
    // What the page's dashboard socket sends, and the fleet frames and
    // telemetry messages it receives (the fleet-stream step reads them).
    const wsLog = { sent: [], fleet: [], telemetry: 0 };
    page.on('websocket', (ws) => {
        if (!ws.url().includes('/ws/dashboard')) return;
        ws.on('framesent', (f) => {
            try { wsLog.sent.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
        });
        ws.on('framereceived', (f) => {
            let m;
            try { m = JSON.parse(f.payload); } catch { return; }
            if (m.type === 'telemetry') wsLog.telemetry++;
            if (m.type !== 'fleet') return;
            wsLog.fleet.push({ at: Date.now(), devices: m.devices });
            if (wsLog.fleet.length > 200) wsLog.fleet.shift();
        });
    });
    page.wsLog = wsLog;
    pages.push({ tag, page, context });
    return page;
}

async function expectErrors(re, fn) {
    expected = re;
    try {
        return await fn();
    } finally {
        await sleep(300);
        expected = null;
    }
}

async function login(page, user, pass) {
    await page.goto(`${URL_BASE}/`);
    await page.getByLabel('User name').fill(user);
    await page.getByLabel('Password').fill(pass);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#fleet-table').waitFor();
}

/** The newest state of a device as the API gives it, fetched by the page (its cookie). */
async function apiDevice(page, id) {
    return page.evaluate(async (id) => {
        const r = await fetch(`/api/devices/${encodeURIComponent(id)}`);
        return r.ok ? r.json() : { status: r.status };
    }, id);
}

const text = (page, sel) => page.locator(sel).first().innerText();
const stateOf = (page) => page.locator('[data-field=strip-state]').innerText();

// ------------------------------------------------------------------ the scenarios
const op = await newPage('operator');

await step('login page has labelled fields and refuses a wrong password', async () => {
    await op.goto(`${URL_BASE}/`);
    await op.getByLabel('User name').waitFor();
    await shot(op, 'login');
    await expectErrors(/401/, async () => {
        await op.getByLabel('User name').fill(OP_USER);
        await op.getByLabel('Password').fill(`${OP_PASS}-wrong`);
        await op.getByRole('button', { name: 'Log in' }).click();
        await until('an error message', async () => /wrong user name or password/i.test(await text(op, '#login-error')));
    });
    assert(await op.locator('#fleet-table').count() === 0, 'the fleet is shown after a wrong password');
});

await step('operator logs in and the header names the user and the role', async () => {
    await op.getByLabel('Password').fill(OP_PASS);
    await op.getByRole('button', { name: 'Log in' }).click();
    await op.locator('#fleet-table').waitFor();
    const who = await text(op, '#who');
    assert(who.includes(OP_USER) && who.includes('operator'), `header says "${who}"`);
    await until('the socket to be live', async () => (await op.locator('#conn').getAttribute('data-state')) === 'open');
});

await step(`the fleet shows every simulated device online (${DEVICES.join(', ')})`, async () => {
    await until('every device listed and online', async () => {
        for (const id of DEVICES) {
            const row = op.locator(`#fleet-table tr[data-device="${id}"]`);
            if (await row.count() !== 1) return false;
            if (!/online/.test(await row.innerText())) return false;
            if (!/\d/.test(await row.locator('td').nth(4).innerText())) return false; // SoC has a value
        }
        return true;
    }, 30000);
    const summary = await text(op, '#fleet-summary');
    assert(new RegExp(`${DEVICES.length} devices`).test(summary), `summary "${summary}"`);
    await shot(op, 'fleet');
}, 40000);

await step('the fleet table shows live values from the coalesced fleet stream, not per-packet telemetry', async () => {
    const log = op.wsLog;
    assert(log.sent.some((m) => m.type === 'subscribe' && m.devices === '*' && m.mode === 'fleet'),
        `no fleet subscribe among ${JSON.stringify(log.sent)}`);
    assert(!log.sent.some((m) => m.type === 'subscribe' && m.devices === '*' && m.mode !== 'fleet'),
        'the page asked for every packet of every device ("*" without the fleet mode)');
    const id = DEVICES[0];
    const row = op.locator(`#fleet-table tr[data-device="${id}"]`);
    const latest = () => {
        for (let i = log.fleet.length - 1; i >= 0; i--) {
            const it = log.fleet[i].devices.find((d) => d.device_id === id && typeof d.soc === 'number');
            if (it) return it;
        }
        return null;
    };
    const n = (s) => parseFloat(String(s).replace('\u2212', '-'));
    const tel0 = log.telemetry;
    const frames0 = log.fleet.length;
    const seen = new Set();
    // The row follows the fleet frames: its SoC and battery power are those
    // of the newest item for the device, and they change while the page
    // gets no telemetry message at all.
    await until('the row to show the newest fleet item, twice with different values', async () => {
        const it = latest();
        if (!it) return 'no fleet item yet';
        const cells = row.locator('td');
        const soc = n(await cells.nth(4).innerText());
        const bp = await cells.nth(5).innerText();
        if (Math.abs(soc - Math.round(it.soc * 10) / 10) > 0.051) return `SoC ${soc} vs ${it.soc}`;
        seen.add(`${it.timestamp}|${bp}`);
        const frames = log.fleet.length - frames0;
        return seen.size >= 2 && frames >= 2 ? true : `${seen.size} states seen, ${frames} new frames`;
    }, 20000, 300);
    assert(log.fleet.length - frames0 >= 2, `only ${log.fleet.length - frames0} fleet frames`);
    assert(log.telemetry === tel0, `${log.telemetry - tel0} telemetry messages arrived on the fleet view`);
    const per = log.fleet.slice(frames0).map((f) => f.devices.filter((d) => d.device_id === id).length);
    assert(per.every((k) => k <= 1), `a device twice in one frame: ${per}`);
    console.log(`# ${log.fleet.length - frames0} fleet frames, ${seen.size} states of ${id}, 0 telemetry messages`);
}, 30000);

await step('the fleet sorts by a column header (SoC ascending, then descending)', async () => {
    const socs = async () => op.$$eval('#fleet-table tbody tr', (rows) =>
        rows.map((r) => parseFloat(r.querySelectorAll('td')[4].innerText.replace('\u2212', '-'))));
    const btn = op.locator('#fleet-table th[data-key=soc] button');
    await btn.click();
    assert((await op.locator('#fleet-table th[data-key=soc]').getAttribute('aria-sort')) === 'ascending', 'aria-sort is not ascending');
    const a = await socs();
    assert(a.every((v, i) => i === 0 || v >= a[i - 1]), `not ascending: ${a}`);
    await btn.click();
    const d = await socs();
    assert(d.every((v, i) => i === 0 || v <= d[i - 1]), `not descending: ${d}`);
    assert((await op.locator('#fleet-table th[data-key=soc]').getAttribute('aria-sort')) === 'descending', 'aria-sort is not descending');
    await op.locator('#fleet-table th[data-key=device_id] button').click();
});

await step('the live view updates its values every second', async () => {
    await op.locator(`#fleet-table tr[data-device="${CTRL}"] a`).click();
    await op.locator('#live-tiles').waitFor();
    await until('a first packet', async () => /^\d+$/.test(await text(op, '[data-field=seq]')));
    const seqs = [];
    const points = [];
    for (let i = 0; i < 6; i++) {
        seqs.push(Number(await text(op, '[data-field=seq]')));
        points.push(Number(await op.locator('#live-chart').getAttribute('data-points')));
        await sleep(1000);
    }
    const distinct = new Set(seqs).size;
    assert(distinct >= 4, `only ${distinct} different packets in 6 s: ${seqs}`);
    assert(seqs.every((v, i) => i === 0 || v >= seqs[i - 1]), `sequence went back: ${seqs}`);
    assert(points[5] > points[0], `the live chart did not grow: ${points}`);
    for (const f of ['battery-voltage', 'battery-current', 'grid-voltage', 'grid-frequency', 'soc', 'temperature'])
        assert(/\d/.test(await text(op, `[data-field=${f}]`)), `tile ${f} has no number`);
    assert(/V$/.test(await text(op, '[data-field=battery-voltage]')), 'battery voltage has no unit');
    assert(/Hz$/.test(await text(op, '[data-field=grid-frequency]')), 'frequency has no unit');
    await shot(op, 'device-live');
}, 30000);

await step('direction signs follow the sign conventions of the spec', async () => {
    const r = await op.evaluate(() => {
        const t = (f) => document.querySelector(`[data-field=${f}]`).textContent;
        return { bp: t('battery-power'), bd: t('battery-dir'), gp: t('grid-power'), gd: t('grid-dir') };
    });
    const n = (s) => parseFloat(s.replace('\u2212', '-'));
    const bp = n(r.bp), gp = n(r.gp);
    if (bp >= 1) assert(/Charging/.test(r.bd), `battery ${r.bp} shown as "${r.bd}"`);
    if (bp <= -1) assert(/Discharging/.test(r.bd), `battery ${r.bp} shown as "${r.bd}"`);
    if (gp <= -1) assert(/Exporting/.test(r.gd), `grid ${r.gp} shown as "${r.gd}"`);
    if (gp >= 1) assert(/Importing/.test(r.gd), `grid ${r.gp} shown as "${r.gd}"`);
    console.log(`# battery ${r.bp} ${r.bd}, grid ${r.gp} ${r.gd}`);
});

let limits = null;
await step('a target power above the device limit is refused before sending', async () => {
    const dev = await until('the device limits (device_info)', async () => (await apiDevice(op, CTRL)).limits, 15000);
    limits = dev;
    assert(typeof limits.max_discharge_w === 'number', `no max_discharge_w in ${JSON.stringify(limits)}`);
    await op.locator('nav.tabs a[data-tab=control]').click();
    await op.locator('#mode-form').waitFor();
    const before = await op.evaluate(async (id) => (await (await fetch(`/api/devices/${id}/commands?limit=500`)).json()), CTRL);
    const count = (x) => (Array.isArray(x) ? x : x.commands || []).length;
    await op.getByLabel(/Manual discharge/).check();
    await op.getByLabel('Target power (W)').fill(String(limits.max_discharge_w + 1));
    await op.locator('#send-mode').click();
    const err = await text(op, '#mode-error');
    assert(new RegExp(`above the device's maximum discharge power of ${limits.max_discharge_w} W`).test(err), `error "${err}"`);
    assert((await op.getByLabel('Target power (W)').getAttribute('aria-invalid')) === 'true', 'the field is not marked invalid');
    await sleep(500);
    const after = await op.evaluate(async (id) => (await (await fetch(`/api/devices/${id}/commands?limit=500`)).json()), CTRL);
    assert(count(after) === count(before), 'a command was sent anyway');
});

await step('Reset Error is disabled while the device is not in ERROR', async () => {
    assert(await op.locator('#reset-error').isDisabled(), 'the button is enabled');
    assert(/only while the device is in the ERROR state/.test(await text(op, '#reset-hint')), 'no explanation');
});

await step('SET_MODE MANUAL_DISCHARGE 500 W by clicking: status goes to completed, state to DISCHARGING', async () => {
    await op.getByLabel(/Manual discharge/).check();
    await op.getByLabel('Target power (W)').fill('500');
    // Record every status the page shows, as it shows it.
    await op.evaluate(() => {
        window.__seen = [];
        const box = document.querySelector('#cmd-status');
        new MutationObserver(() => {
            const s = box.dataset.status;
            if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
        }).observe(box, { attributes: true, childList: true, subtree: true });
    });
    await op.locator('#send-mode').click();
    await until('status completed', async () => (await op.locator('#cmd-status').getAttribute('data-status')) === 'completed', 30000);
    const seen = await op.evaluate(() => window.__seen);
    const steps = await op.locator('#cmd-status ol.steps li').allInnerTexts();
    console.log(`# statuses shown: ${seen.join(' -> ')}; history: ${steps.map((s) => s.split(/\s/)[0]).join(' -> ')}`);
    assert(steps.some((s) => /accepted/.test(s)), `no "accepted" in the history: ${steps}`);
    await until('state DISCHARGING', async () => (await stateOf(op)).includes('DISCHARGING'), 20000);
    const mode = await text(op, '[data-field=strip-mode]');
    assert(/Manual discharge 500\s?W/.test(mode), `mode shown "${mode}"`);
    const row = op.locator('#cmd-log tbody tr').first();
    const rowText = await row.innerText();
    assert(rowText.includes(OP_USER) && /completed/.test(rowText) && /500/.test(rowText), `log row "${rowText}"`);
    await shot(op, 'device-control');
    await op.locator('nav.tabs a[data-tab=live]').click();
    await until('battery power near -500 W', async () => {
        const p = parseFloat((await text(op, '[data-field=battery-power]')).replace('\u2212', '-'));
        return p <= -450 && p >= -550 ? true : p;
    }, 15000);
    assert(/Discharging/.test(await text(op, '[data-field=battery-dir]')), 'not shown as discharging');
}, 70000);

await step('back to AUTO by clicking', async () => {
    await op.locator('nav.tabs a[data-tab=control]').click();
    await op.getByLabel(/Automatic/).check();
    assert(await op.getByLabel('Target power (W)').isDisabled(), 'target power is enabled for AUTO');
    await op.locator('#send-mode').click();
    await until('status completed', async () => (await op.locator('#cmd-status').getAttribute('data-status')) === 'completed', 30000);
    await until('mode AUTO', async () => /Automatic|AUTO/.test(await text(op, '[data-field=strip-mode]')), 15000);
}, 50000);

await step(`an injected fault shows ERROR in the fleet (${FAULT})`, async () => {
    await op.locator('#nav-fleet').click();
    const row = op.locator(`#fleet-table tr[data-device="${FAULT}"]`);
    await until('the row marked as error', async () => (await row.getAttribute('class') || '').includes('is-error'), 150000, 500);
    assert(/ERROR/.test(await row.innerText()), 'no ERROR in the row');
    assert(/OVERHEAT/.test(await row.innerText()), 'no OVERHEAT flag in the row');
    assert((await text(op, '#fleet-errors')).includes(FAULT), 'no alert above the table');
    await shot(op, 'fleet-error');
}, 160000);

await step('Reset Error asks for confirmation and is refused while the fault lasts', async () => {
    await op.goto(`${URL_BASE}/#/device/${FAULT}/control`);
    await until('reset enabled', async () => !(await op.locator('#reset-error').isDisabled()), 10000);
    const t = (await apiDevice(op, FAULT)).telemetry?.battery?.temperature;
    console.log(`# ${FAULT} at ${t} C`);
    assert(t > RESET_BELOW_C, `the pack cooled too early to test a refusal (${t} C)`);
    assert(await op.locator('#send-mode').isDisabled(), 'Set mode is enabled in ERROR');
    // Cancel sends nothing.
    await op.locator('#reset-error').click();
    assert(await op.locator('#confirm-dialog').evaluate((d) => d.open), 'no confirmation dialog');
    assert(/inspect/i.test(await text(op, '#confirm-msg')), 'the dialog does not explain');
    await op.locator('#cancel-reset').click();
    assert(!(await op.locator('#confirm-dialog').evaluate((d) => d.open)), 'the dialog stayed open');
    assert((await op.locator('#cmd-status').getAttribute('data-status')) === null, 'cancel sent a command');
    await op.locator('#reset-error').click();
    await op.locator('#confirm-reset').click();
    await until('status rejected', async () => (await op.locator('#cmd-status').getAttribute('data-status')) === 'rejected', 20000);
    const why = await text(op, '#cmd-status');
    assert(/FAULT_ACTIVE/.test(why), `the reason is not shown: "${why}"`);
    assert((await stateOf(op)).includes('ERROR'), 'the state left ERROR');
    await shot(op, 'device-reset-refused');
}, 40000);

// ---- alarms: the fault above raised an `error` alarm (the suite runs the
// gateway with a debounce of 2 s); the page polls the list every 5 s.
let faultAlarm = null;
const activeCount = async (page) => page.evaluate(async () =>
    ((await (await fetch('/api/alarms?state=active&limit=1000')).json()).alarms || []).length);

await step('the fault raises an alarm: the banner counts it on every view, the list shows it', async () => {
    faultAlarm = await until(`an open error alarm of ${FAULT}`, async () => {
        const r = await op.evaluate(async (id) => (await (await fetch(`/api/alarms?state=open&device=${id}`)).json()), FAULT);
        return (r.alarms || []).find((a) => a.rule === 'error') || false;
    }, 20000, 500);
    assert(faultAlarm.state === 'active' && faultAlarm.severity === 'critical', `alarm ${JSON.stringify(faultAlarm)}`);
    assert(/OVERHEAT/.test(JSON.stringify(faultAlarm.details)), `details ${JSON.stringify(faultAlarm.details)}`);
    const banner = op.locator('#alarm-banner');
    for (const route of ['#/fleet', `#/device/${FAULT}/live`, '#/energy']) {
        await op.goto(`${URL_BASE}/${route}`);
        await until(`the banner on ${route}`, async () => (await banner.isVisible()) &&
            Number(await banner.getAttribute('data-count')) >= 1 && /not acknowledged/.test(await banner.innerText()), 12000);
    }
    await shot(op, 'alarm-banner');
    await op.locator('#alarm-banner-link').click();
    await op.locator('#alarm-state').selectOption('active');
    await op.locator('#alarm-device').selectOption(FAULT);
    const row = op.locator(`#alarm-table tr[data-alarm-id="${faultAlarm.alarm_id}"]`);
    await until('the alarm in the filtered list', async () => (await row.count()) === 1, 10000);
    assert((await op.locator('#alarm-table tbody tr').count()) >= 1, 'empty list');
    for (const r of await op.locator('#alarm-table tbody tr').all())
        assert((await r.getAttribute('data-device')) === FAULT && (await r.getAttribute('data-state')) === 'active',
            `the filter let through ${await r.getAttribute('data-device')} ${await r.getAttribute('data-state')}`);
    const t = await row.innerText();
    assert(/OVERHEAT/.test(t) && /active/.test(t) && /critical/.test(t), `row "${t}"`);
    // Another filter: a state this alarm is not in hides it.
    await op.locator('#alarm-state').selectOption('cleared');
    await until('the row gone under "cleared"', async () => (await row.count()) === 0, 10000);
    await op.locator('#alarm-state').selectOption('active');
    await until('the row back', async () => (await row.count()) === 1, 10000);
    await shot(op, 'alarm-list');
}, 60000);

await step('an operator acknowledges it: the list shows who, the banner no longer counts it', async () => {
    const before = await activeCount(op);
    const row = op.locator(`#alarm-table tr[data-alarm-id="${faultAlarm.alarm_id}"]`);
    await op.locator('#alarm-state').selectOption('open');
    await row.locator('button.ack').click();
    await until('the row acknowledged', async () => (await row.getAttribute('data-state')) === 'acknowledged', 10000);
    const t = await row.innerText();
    assert(t.includes(OP_USER), `acknowledged by whom? "${t}"`);
    assert(await row.locator('button.ack').count() === 0, 'the button stays after acknowledging');
    const after = await until(`active alarms ${before} - 1`, async () => {
        const n = await activeCount(op);
        return n === before - 1 ? { n } : n;
    }, 8000).then((r) => r.n);
    const banner = op.locator('#alarm-banner');
    await until('the banner count to follow', async () => {
        const n = Number(await banner.getAttribute('data-count'));
        return n === after ? true : n;
    }, 8000);
    // The device's own history shows it too.
    await op.goto(`${URL_BASE}/#/device/${FAULT}/alarms`);
    const hrow = op.locator(`#alarm-table tr[data-alarm-id="${faultAlarm.alarm_id}"]`);
    await until('the alarm in the device history', async () => (await hrow.getAttribute('data-state').catch(() => null)) === 'acknowledged', 10000);
    await shot(op, 'device-alarms-acknowledged');
}, 40000);

await step('Reset Error succeeds once the fault has gone', async () => {
    await op.goto(`${URL_BASE}/#/device/${FAULT}/control`);
    await op.locator('#reset-error').waitFor();
    await until(`${FAULT} cooled below ${RESET_BELOW_C} C`, async () => {
        const t = (await apiDevice(op, FAULT)).telemetry?.battery?.temperature;
        return t < RESET_BELOW_C - 0.5 ? true : t;
    }, 180000, 1000);
    await op.locator('#reset-error').click();
    await op.locator('#confirm-reset').click();
    await until('status completed', async () => (await op.locator('#cmd-status').getAttribute('data-status')) === 'completed', 30000);
    await until('the state leaves ERROR', async () => !(await stateOf(op)).includes('ERROR'), 15000);
    assert(await op.locator('#reset-error').isDisabled(), 'reset still enabled after the error was cleared');
}, 230000);

await step('the alarm clears once the device leaves ERROR, and stays in the device history', async () => {
    await op.goto(`${URL_BASE}/#/device/${FAULT}/alarms`);
    const row = op.locator(`#alarm-table tr[data-alarm-id="${faultAlarm.alarm_id}"]`);
    // Debounce 2 s, then the next reload of the list (5 s).
    await until('the alarm cleared', async () => (await row.getAttribute('data-state').catch(() => null)) === 'cleared', 20000);
    const t = await row.innerText();
    assert(t.includes(OP_USER), `the acknowledgement is gone from the history: "${t}"`);
    assert((await row.locator('td').nth(4).innerText()).trim() !== '–', 'no clear time');
    await op.locator('#alarm-state').selectOption('open');
    await until('no open alarm of the device', async () => (await op.locator('#alarm-table tbody tr').count()) === 0, 10000);
    await shot(op, 'device-alarms-cleared');
}, 40000);

// ---- energy: what the edges' counters sent through the gateway, the DB
// writer and PostgreSQL, as bars, a table and figures.
const ENERGY_KEYS = ['battery_charged_wh', 'battery_discharged_wh', 'grid_import_wh', 'grid_export_wh'];
const FIGURES = { battery_charged_wh: 'charged', battery_discharged_wh: 'discharged', grid_import_wh: 'imported', grid_export_wh: 'exported' };
const fmtWh = (wh) => {
    const a = Math.abs(wh);
    return a >= 10000 ? `${(a / 1000).toFixed(a >= 1e6 ? 0 : 1)}\u00a0kWh` : `${a.toFixed(a >= 100 ? 0 : 1)}\u00a0Wh`;
};
/**
 * Reloads the energy view and returns the answer the page received (what
 * the system gave it), once the page has drawn it. A second request would
 * not do: the devices keep counting.
 */
async function energyShown(page) {
    const chart = page.locator('#energy-chart');
    await page.locator('#energy-chart[data-buckets]').waitFor();
    const href = await page.locator('#energy-csv').getAttribute('href');
    assert(/format=csv/.test(href), `CSV link ${href}`);
    const [resp] = await Promise.all([
        page.waitForResponse((r) => /\/energy\?/.test(r.url()) && !/format=csv/.test(r.url())),
        page.locator('section:has(#energy-chart) button', { hasText: 'Refresh' }).click(),
    ]);
    const res = await resp.json();
    await until('the answer drawn', async () => (await chart.getAttribute('aria-busy')) === null, 5000, 50);
    return res;
}

await step(`the device's energy tab shows today's bars, the days without data and figures that match the counters (${CTRL})`, async () => {
    await op.goto(`${URL_BASE}/#/device/${CTRL}/energy`);
    const chart = op.locator('#energy-chart');
    await until('7 days', async () => (await chart.getAttribute('data-buckets')) === '7', 15000);
    const res = await energyShown(op);
    assert(res.buckets.length === 7 && res.device_id === CTRL, `answer ${JSON.stringify(res).slice(0, 200)}`);
    const today = res.buckets[res.buckets.length - 1];
    assert(today.samples > 0 && today.battery_charged_wh !== null, `no data today: ${JSON.stringify(today)}`);
    // The test's database began minutes ago: the days before have no data
    // (one of them may, when the run crossed midnight) and say so.
    const empty = res.buckets.filter((b) => !(b.samples > 0)).length;
    assert(empty >= 5, `${empty} days without data`);
    assert((await chart.getAttribute('data-missing')) === String(empty), `missing ${await chart.getAttribute('data-missing')} vs ${empty}`);
    assert((await op.locator('#energy-chart .ebar-group[data-status=none] .ebar-none').count()) === empty, 'the empty days are not marked');
    const g = op.locator(`#energy-chart .ebar-group[data-local="${today.local}"]`);
    const st = await g.getAttribute('data-status');
    // A few minutes of data in a day that began hours ago: partial (right
    // after midnight it could be "running", a day so far fully covered).
    assert(st === 'partial' || (st === 'running' && Date.now() - Date.parse(today.start) < 3600e3), `today is "${st}"`);
    for (const k of ENERGY_KEYS) {
        const bar = g.locator(`.ebar[data-key=${k}]`);
        assert(Number(await bar.getAttribute('data-wh')) === today[k], `${k} bar ${await bar.getAttribute('data-wh')} vs ${today[k]}`);
    }
    // The tallest bar is full height; the others in proportion.
    const max = Math.max(...res.buckets.flatMap((b) => ENERGY_KEYS.map((k) => b[k] || 0)));
    const heights = await g.locator('.ebar').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().height));
    const full = await g.locator('.ebar-bars').evaluate((e) => e.getBoundingClientRect().height);
    ENERGY_KEYS.forEach((k, i) => assert(Math.abs(heights[i] - (today[k] / max) * full) <= 2, `${k} bar ${heights[i]} px of ${full}`));
    // The table: today first, marked; the empty days say "no data".
    const rows = op.locator('#energy-table tbody tr');
    assert((await rows.first().getAttribute('data-local')) === today.local, 'today is not the first row');
    assert(/partial|in progress/.test(await rows.first().innerText()), `today's row "${await rows.first().innerText()}"`);
    assert((await op.locator('#energy-table tbody tr[data-status=none]').count()) === empty, `not ${empty} rows without data`);
    assert(/no data/.test(await op.locator('#energy-table tbody tr[data-status=none]').first().innerText()), 'no "no data"');
    // Figures: the totals over the period, and the ratios computed from them.
    const tot = Object.fromEntries(ENERGY_KEYS.map((k) => [k, res.buckets.reduce((a, b) => a + (b[k] || 0), 0)]));
    for (const k of ENERGY_KEYS) {
        const v = await text(op, `[data-figure=${FIGURES[k]}] .fig-value`);
        assert(v === fmtWh(tot[k]), `${k}: "${v}" vs ${tot[k]}`);
    }
    const rt = await text(op, '[data-figure=round-trip] .fig-value');
    const want = tot.battery_charged_wh > 0 ? `${(100 * tot.battery_discharged_wh / tot.battery_charged_wh).toFixed(0)}\u00a0%` : '–';
    assert(rt === want, `round trip "${rt}" vs ${want}`);
    const share = tot.battery_discharged_wh + tot.grid_import_wh;
    const ws = share > 0 ? `${(100 * tot.battery_discharged_wh / share).toFixed(0)}\u00a0%` : '–';
    assert((await text(op, '[data-figure=battery-share] .fig-value')) === ws, 'battery share');
    assert(/not measured/.test(await text(op, '[data-figure=self-sufficiency]')), 'self-sufficiency is claimed');
    assert(new RegExp(`${empty} days without data`).test(await text(op, '#energy-caveat')), `caveat "${await text(op, '#energy-caveat')}"`);
    // The counters agree with the battery power the device reported:
    // the integral of the raw packets' power over the same stretch.
    const raw = await op.evaluate(async ([id, from]) => (await (await fetch(
        `/api/devices/${id}/telemetry?from=${from}&to=${new Date(Date.now() + 5000).toISOString()}&resolution=raw`)).json()), [CTRL, today.start]);
    let ch = 0, dis = 0;
    const pts = raw.points || [];
    for (let i = 1; i < pts.length; i++) {
        const dt = (Date.parse(pts[i].t) - Date.parse(pts[i - 1].t)) / 3600e3;
        if (!(dt > 0 && dt < 10 / 3600) || typeof pts[i].battery_power !== 'number') continue;
        const p = pts[i].battery_power;
        if (p > 0) ch += p * dt; else dis -= p * dt;
    }
    console.log(`# ${CTRL} today: counters charged ${today.battery_charged_wh} Wh, discharged ${today.battery_discharged_wh} Wh;` +
        ` integral of ${pts.length} packets ${ch.toFixed(2)} / ${dis.toFixed(2)} Wh`);
    const near = (a, b) => Math.abs(a - b) <= Math.max(1, 0.15 * Math.max(a, b));
    assert(near(today.battery_discharged_wh, dis) && near(today.battery_charged_wh, ch),
        `counters ${today.battery_charged_wh}/${today.battery_discharged_wh} Wh vs power integral ${ch.toFixed(2)}/${dis.toFixed(2)} Wh`);
    await shot(op, 'device-energy');
    // Month buckets.
    await op.locator(`label[for=energy-period-12m]`).click();
    await until('12 months', async () => (await chart.getAttribute('data-buckets')) === '12', 15000);
    assert(Number(await chart.getAttribute('data-with-data')) >= 1, 'no month with data');
}, 45000);

await step('the fleet energy is the sum of the devices', async () => {
    await op.locator('#nav-energy').click();
    const chart = op.locator('#energy-chart');
    await until('7 days', async () => (await chart.getAttribute('data-buckets')) === '7', 15000);
    const res = await energyShown(op);
    assert(res.device_id === null, 'not the fleet answer');
    const today = res.buckets[res.buckets.length - 1];
    assert(today.devices === DEVICES.length, `${today.devices} devices with counters today`);
    const row = op.locator(`#energy-table tbody tr[data-local="${today.local}"]`);
    assert((await row.locator('td').nth(4).innerText()).trim() === String(DEVICES.length), 'devices column');
    // Every device's own answer for the same range adds up to the fleet's.
    const per = await op.evaluate(async ([ids, from, to]) => Promise.all(ids.map(async (id) =>
        (await (await fetch(`/api/devices/${id}/energy?from=${from}&to=${to}&bucket=day`)).json()))), [DEVICES, today.start, today.end]);
    for (const k of ENERGY_KEYS) {
        const sum = per.reduce((s, r) => s + (r.buckets[0]?.[k] || 0), 0);
        // The devices keep counting between the two requests.
        assert(today[k] <= sum + 1e-6 && sum - today[k] <= Math.max(2, 0.1 * sum), `${k}: fleet ${today[k]} vs devices ${sum}`);
        const tot = res.buckets.reduce((a, b) => a + (b[k] || 0), 0);
        assert((await text(op, `[data-figure=${FIGURES[k]}] .fig-value`)) === fmtWh(tot), `${k} figure`);
    }
    await shot(op, 'fleet-energy');
}, 30000);

const viewer = await newPage('viewer');
await step('a viewer sees the fleet and the device but cannot send commands', async () => {
    await login(viewer, VIEW_USER, VIEW_PASS);
    await until('the devices', async () => (await viewer.locator('#fleet-table tbody tr').count()) === DEVICES.length, 15000);
    await viewer.goto(`${URL_BASE}/#/device/${CTRL}/control`);
    await viewer.locator('#role-note').waitFor();
    assert(/cannot send commands/.test(await text(viewer, '#role-note')), 'no explanation for the viewer');
    assert(await viewer.locator('#send-mode').isDisabled(), 'Set mode is enabled');
    assert(await viewer.locator('#reset-error').isDisabled(), 'Reset error is enabled');
    for (const r of await viewer.locator('#mode-form input[type=radio]').all())
        assert(await r.isDisabled(), 'a mode is selectable');
    // The gateway refuses too, not just the page.
    const status = await expectErrors(/403/, () => viewer.evaluate(async (id) => (await fetch(`/api/devices/${id}/commands`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ action: 'SET_MODE', payload: { target_mode: 'AUTO' } }),
    })).status, CTRL));
    assert(status === 403, `POST as viewer answered ${status}`);
    await shot(viewer, 'device-control-viewer');
    // The live view works for a viewer.
    await viewer.locator('nav.tabs a[data-tab=live]').click();
    const a = await text(viewer, '[data-field=seq]');
    await sleep(2200);
    assert(a !== await text(viewer, '[data-field=seq]'), 'live values do not move for the viewer');
});

await step('a viewer sees the alarms but cannot acknowledge', async () => {
    await viewer.goto(`${URL_BASE}/#/alarms`);
    await viewer.locator('#alarm-state').selectOption('');
    await until('the fault alarm in the list', async () =>
        (await viewer.locator(`#alarm-table tr[data-alarm-id="${faultAlarm?.alarm_id}"]`).count()) === 1, 10000);
    assert(await viewer.locator('#alarm-table button.ack').count() === 0, 'an Acknowledge button for a viewer');
    assert(/cannot acknowledge/.test(await text(viewer, '#alarm-role-note')), 'no explanation for the viewer');
    const status = await expectErrors(/403/, () => viewer.evaluate(async (id) => (await fetch(`/api/alarms/${id}/ack`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
    })).status, faultAlarm?.alarm_id));
    assert(status === 403, `POST ack as viewer answered ${status}`);
    await shot(viewer, 'alarms-viewer');
});

let offlineAt = 0;
let onlineAgainAt = 0;
await step(`a device that drops shows "offline since" (${OFF})`, async () => {
    await op.goto(`${URL_BASE}/#/device/${OFF}/live`);
    await op.locator('#live-tiles').waitFor();
    await sleep(3000); // some live data before the hole
    offlineAt = Date.now();
    hook('stop', OFF);
    await op.locator('#offline-banner').waitFor({ state: 'visible', timeout: 20000 });
    assert(/Offline since \d\d:\d\d:\d\d/.test(await text(op, '#offline-banner')), 'no time in the banner');
    await op.locator('#nav-fleet').click();
    const row = op.locator(`#fleet-table tr[data-device="${OFF}"]`);
    await until('the fleet row offline', async () => /offline/.test(await row.innerText()) && /since/.test(await row.innerText()), 10000);
    await sleep(Math.max(0, 12000 - (Date.now() - offlineAt))); // a hole of 12 s or more
    await op.goto(`${URL_BASE}/#/device/${OFF}/live`);
    await shot(op, 'device-offline');
}, 60000);

await step('the history chart shows a gap where the device was offline', async () => {
    onlineAgainAt = Date.now();
    hook('start', OFF);
    await until('the device back online', async () => !(await op.locator('#offline-banner').isVisible()), 40000);
    await sleep(5000); // data after the hole
    await op.locator('nav.tabs a[data-tab=history]').click();
    const chart = op.locator('#hist-chart');
    await until('history loaded', async () => Number(await chart.getAttribute('data-points')) > 0, 20000);
    assert((await chart.getAttribute('data-resolution')) === 'raw', `resolution ${await chart.getAttribute('data-resolution')} for the last hour`);
    const gaps = Number(await chart.getAttribute('data-gaps'));
    assert(gaps >= 1, `no gap in the chart data (${await chart.getAttribute('data-points')} points)`);
    // The hole we made is listed: from about when the edge stopped to when it started again.
    const holes = await op.$$eval('#hist-gaps li.gap', (lis) => lis.map((li) => [Number(li.dataset.from), Number(li.dataset.to), li.textContent]));
    const ours = holes.find(([from, to]) => from <= offlineAt / 1000 + 2 && to >= onlineAgainAt / 1000 - 1);
    assert(ours, `no missing stretch covers ${new Date(offlineAt).toISOString()}..${new Date(onlineAgainAt).toISOString()}: ${JSON.stringify(holes)}`);
    console.log(`# listed as missing: ${ours[2]}`);
    await shot(op, 'device-history');
    // CSV export of the same range.
    const href = await op.locator('#hist-csv').getAttribute('href');
    const csv = await op.evaluate(async (u) => {
        const r = await fetch(u);
        return { status: r.status, type: r.headers.get('Content-Type'), body: await r.text() };
    }, href);
    assert(csv.status === 200 && /text\/csv/.test(csv.type), `CSV answered ${csv.status} ${csv.type}`);
    const lines = csv.body.trim().split('\n');
    assert(lines.length > 10 && /soc/.test(lines[0]), `CSV has ${lines.length} lines, header "${lines[0]}"`);
}, 90000);

await step('history over a day, a week and a custom range uses 1-minute, 1-hour and raw data', async () => {
    const chart = op.locator('#hist-chart');
    await op.locator('label[for=hist-range-24h]').click();
    await until('1m resolution', async () => (await chart.getAttribute('data-resolution')) === '1m', 20000);
    await op.locator('label[for=hist-range-7d]').click();
    await until('1h resolution', async () => (await chart.getAttribute('data-resolution')) === '1h', 20000);
    // A custom range of the last 30 minutes: raw again.
    await op.locator('label[for=hist-range-custom]').click();
    const [from, to] = await op.evaluate(() => {
        const f = (ms) => { const d = new Date(ms), p = (n) => String(n).padStart(2, '0');
            return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`; };
        return [f(Date.now() - 30 * 60e3), f(Date.now() + 60e3)];
    });
    await op.getByLabel('From').fill(from);
    await op.getByLabel('To', { exact: true }).fill(to);
    await op.getByRole('button', { name: 'Show' }).click();
    await until('raw resolution', async () => (await chart.getAttribute('data-resolution')) === 'raw', 20000);
    assert(/from \d\d:\d\d:00 to/.test(await text(op, '#hist-status')), `status "${await text(op, '#hist-status')}"`);
});

await step('the page reconnects after the gateway restarts, and backfilled data is marked', async () => {
    await op.goto(`${URL_BASE}/#/device/${CTRL}/live`);
    await until('live', async () => (await op.locator('#conn').getAttribute('data-state')) === 'open', 10000);
    await expectErrors(/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/, async () => {
        hook('restart-gateway');
        await until('the page noticing the loss', async () => (await op.locator('#conn').getAttribute('data-state')) !== 'open', 20000, 100);
        await until('the page reconnected', async () => (await op.locator('#conn').getAttribute('data-state')) === 'open', 60000);
    });
    const a = await text(op, '[data-field=seq]');
    await until('live values again', async () => (await text(op, '[data-field=seq]')) !== a, 10000);
    // The edges kept their packets while the gateway was away and send them late.
    await op.locator('nav.tabs a[data-tab=history]').click();
    await until('backfilled points in the history', async () => {
        await op.locator('#device-panel button', { hasText: 'Refresh' }).click();
        await sleep(1500);
        return Number(await op.locator('#hist-chart').getAttribute('data-backfilled')) > 0;
    }, 40000, 500);
    await shot(op, 'device-history-backfill');
}, 120000);

await step('phone layout: fleet and device fit the screen', async () => {
    const phone = await newPage('phone', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await login(phone, OP_USER, OP_PASS);
    await until('rows', async () => (await phone.locator('#fleet-table tbody tr').count()) === DEVICES.length, 15000);
    await sleep(1200);
    const fits = () => phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
    assert(await fits(), 'the fleet scrolls sideways');
    await shot(phone, 'phone-fleet');
    await phone.goto(`${URL_BASE}/#/device/${CTRL}/live`);
    await phone.locator('#live-tiles').waitFor();
    await sleep(2500);
    assert(await fits(), 'the device view scrolls sideways');
    await shot(phone, 'phone-device-live');
    await phone.goto(`${URL_BASE}/#/device/${CTRL}/control`);
    await phone.locator('#mode-form').waitFor();
    assert(await fits(), 'the control view scrolls sideways');
    await shot(phone, 'phone-device-control');
    await phone.goto(`${URL_BASE}/#/device/${CTRL}/energy`);
    await phone.locator('#energy-chart[data-buckets]').waitFor();
    assert(await fits(), 'the energy view scrolls sideways');
    await shot(phone, 'phone-device-energy');
    await phone.goto(`${URL_BASE}/#/alarms`);
    await phone.locator('#alarm-status[data-count]').waitFor();
    assert(await fits(), 'the alarm list scrolls sideways');
    await shot(phone, 'phone-alarms');
});

await step('every form control has a label and every button a name', async () => {
    const problems = [];
    for (const route of ['#/fleet', '#/energy', '#/alarms', `#/device/${CTRL}/live`, `#/device/${CTRL}/history`,
        `#/device/${CTRL}/energy`, `#/device/${FAULT}/alarms`, `#/device/${CTRL}/control`]) {
        await op.goto(`${URL_BASE}/${route}`);
        await sleep(1000);
        problems.push(...await op.evaluate((route) => {
            const out = [];
            for (const el of document.querySelectorAll('input, select, textarea')) {
                const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
                if (!named) out.push(`${route}: ${el.outerHTML.slice(0, 80)}`);
            }
            for (const b of document.querySelectorAll('button, a[href]')) {
                if (!(b.textContent.trim() || b.getAttribute('aria-label') || b.title)) out.push(`${route}: ${b.outerHTML.slice(0, 80)}`);
            }
            return out;
        }, route));
    }
    assert(problems.length === 0, `unlabelled: ${problems.slice(0, 3).join(' | ')}`);
});

await step('logout ends the session', async () => {
    await op.locator('#logout').click();
    await op.getByLabel('User name').waitFor();
    const status = await expectErrors(/401/, () => op.evaluate(async () => (await fetch('/api/devices')).status));
    assert(status === 401, `GET /api/devices after logout answered ${status}`);
});

await step('the Content-Security-Policy is enforced: an injected inline script is blocked', async () => {
    const r = await op.goto(`${URL_BASE}/`);
    const csp = (await r.allHeaders())['content-security-policy'] || '';
    assert(/script-src 'self'/.test(csp) && /frame-ancestors 'none'/.test(csp), `CSP header: '${csp}'`);
    cspProbe = true;
    try {
        const ran = await op.evaluate(async () => {
            window.__inlineRan = false;
            const s = document.createElement('script');
            s.textContent = 'window.__inlineRan = true';
            document.head.append(s);
            await new Promise((res) => setTimeout(res, 200));
            return window.__inlineRan;
        });
        await sleep(300);
        assert(ran === false, 'an inline script ran');
        assert(cspViolations.probe > 0, 'the blocked inline script was not reported (the violation listener is broken)');
    } finally {
        cspProbe = false;
    }
});

await step('no Content-Security-Policy violations', async () => {
    assert(cspViolations.length === 0, `${cspViolations.length} violations: ${cspViolations.slice(0, 3).join(' | ')}`);
});

await step('no errors in the browser console', async () => {
    assert(consoleErrors.length === 0, `${consoleErrors.length} errors: ${consoleErrors.slice(0, 3).join(' | ')}`);
});

await browser.close();
console.log(`# screenshots in ${ART}`);
process.exit(failed ? 1 : 0);
