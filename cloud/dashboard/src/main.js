// Entry point: session, socket, header and the hash router.
//
// Routes (hash, so the gateway only has to serve index.html and assets/):
//   #/login  #/fleet  #/energy  #/alarms
//   #/device/ID[/live|/history|/energy|/alarms|/control]

import { api, setUnauthorizedHandler } from './api.js';
import { Store, LiveSocket } from './live.js';
import { setText, clear } from './dom.js';
import { mountLogin } from './views/login.js';
import { mountFleet } from './views/fleet.js';
import { mountDevice } from './views/device.js';
import { mountFleetEnergy } from './views/energy.js';
import { mountAlarmList } from './views/alarmlist.js';
import { AlarmWatch, bannerText, unacknowledged } from './alarms.js';

// A browser that has not logged in has no session to probe for: asking
// /api/me would only earn a 401. This hint is no secret (the HttpOnly cookie
// is what counts); it only saves that request.
const HINT = 'ems.session';

const store = new Store();
const socket = new LiveSocket(store, { onAuthLost: () => sessionLost() });
const alarms = new AlarmWatch((filter) => api.alarms(filter));
const view = document.getElementById('view');
const topbar = document.querySelector('.topbar');
let current = null; // the mounted view: {destroy(), route?(parts)}
let currentKey = '';
let loginNotice = '';

function parseRoute() {
    let parts;
    try {
        parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    } catch {
        parts = []; // a malformed %-escape: go to the fleet
    }
    if (parts[0] === 'device' && parts[1]) return { name: 'device', id: parts[1], tab: parts[2] || 'live' };
    if (parts[0] === 'login') return { name: 'login' };
    if (parts[0] === 'energy') return { name: 'energy' };
    if (parts[0] === 'alarms') return { name: 'alarms' };
    return { name: 'fleet' };
}

function unmount() {
    if (current) current.destroy();
    current = null;
    currentKey = '';
    clear(view);
}

// What the socket subscribes to follows the view: the fleet table takes the
// coalesced fleet stream (any fleet size: at most one update per device a
// second), a device opened in detail every packet of that device
// (LiveSocket explains both).
let wantFleet = false;
let detail = [];
function updateInterest() {
    socket.setInterest({ fleet: wantFleet, devices: detail });
}

/** Views tell which devices they show in detail (full-rate telemetry). */
function setOnScreen(ids) {
    detail = ids;
    updateInterest();
}

function route() {
    const r = parseRoute();
    if (!store.me) {
        if (currentKey !== 'login') showLogin();
        return;
    }
    if (r.name === 'login') {
        location.replace('#/fleet');
        return;
    }
    const key = r.name === 'device' ? `device:${r.id}` : r.name;
    if (key === currentKey) {
        current?.route?.(r); // same view (another tab of the device): keep it
        return;
    }
    unmount();
    currentKey = key;
    wantFleet = r.name === 'fleet';
    detail = [];
    const ctx = { store, me: store.me, setOnScreen, alarms };
    const mount = { device: mountDevice, energy: mountFleetEnergy, alarms: mountAlarmList }[r.name] || mountFleet;
    current = mount(view, ctx, r);
    updateInterest();
    for (const a of document.querySelectorAll('.topbar nav a[data-route]')) {
        if (a.dataset.route === r.name) a.setAttribute('aria-current', 'page');
        else a.removeAttribute('aria-current');
    }
    view.focus({ preventScroll: true });
}

function showLogin() {
    unmount();
    topbar.hidden = true;
    document.title = 'Log in · ems dashboard';
    currentKey = 'login';
    current = mountLogin(view, {
        notice: loginNotice,
        onLogin: (me) => {
            loginNotice = '';
            startSession(me);
        },
    });
}

function startSession(me) {
    localStorage.setItem(HINT, '1');
    store.me = me;
    topbar.hidden = false;
    setText(document.getElementById('who'), `${me.username} · ${me.role}`);
    store.load().catch((e) => console.warn('loading devices failed:', e.message));
    socket.start();
    alarms.start();
    if (parseRoute().name === 'login' || !location.hash) location.replace('#/fleet');
    unmount();
    route();
}

function sessionLost() {
    if (!store.me) return;
    socket.stop();
    alarms.stop();
    localStorage.removeItem(HINT);
    store.me = null;
    store.devices.clear();
    loginNotice = 'Your session has ended. Please log in again.';
    showLogin();
}

store.addEventListener('conn', (e) => {
    const { state, retryIn } = e.detail;
    const el = document.getElementById('conn');
    el.dataset.state = state;
    if (state === 'open') setText(el, 'Live');
    else if (state === 'connecting') setText(el, 'Connecting…');
    else if (state === 'waiting') setText(el, `Connection lost, retrying in ${Math.ceil(retryIn / 1000)} s`);
    else setText(el, '');
});

// The alarm banner under the top bar, on every view: how many alarms are
// active and not acknowledged (AlarmWatch polls; src/alarms.js says why).
alarms.addEventListener('alarms', (e) => {
    const { alarms: list, error } = e.detail;
    const banner = document.getElementById('alarm-banner');
    const text = bannerText(list);
    const active = unacknowledged(list).length;
    banner.hidden = !store.me || !text;
    banner.dataset.count = String(active);
    banner.classList.toggle('is-active', active > 0);
    setText(document.getElementById('alarm-banner-text'), text + (error ? ' (could not refresh: ' + error + ')' : ''));
});

document.getElementById('logout').addEventListener('click', async () => {
    try {
        await api.logout();
    } catch {
        /* the cookie may be gone already; log out locally anyway */
    }
    socket.stop();
    alarms.stop();
    localStorage.removeItem(HINT);
    store.me = null;
    store.devices.clear();
    loginNotice = 'You have logged out.';
    location.hash = '#/login';
    showLogin();
});

setUnauthorizedHandler(sessionLost);
window.addEventListener('hashchange', route);

if (localStorage.getItem(HINT)) {
    api.me().then(
        (me) => startSession(me),
        () => {
            localStorage.removeItem(HINT);
            showLogin();
        },
    );
} else {
    showLogin();
}
