// The login form (POST /api/login).

import { api } from '../api.js';
import { h, setText } from '../dom.js';

export function mountLogin(root, { notice, onLogin }) {
    const error = h('p', { class: 'form-error', id: 'login-error', role: 'alert' });
    const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
    const pass = h('input', { id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const submit = h('button', { type: 'submit' }, 'Log in');

    const form = h('form', { class: 'login card', 'aria-labelledby': 'login-title', novalidate: true },
        h('h1', { id: 'login-title' }, 'ems dashboard'),
        h('p', { class: 'muted' }, 'Watch and steer your home batteries. Log in with the account your administrator gave you.'),
        notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
        h('label', { for: 'login-user' }, 'User name'), user,
        h('label', { for: 'login-pass' }, 'Password'), pass,
        error,
        submit,
    );

    form.addEventListener('submit', async (e) => {
        e.preventDefault();
        setText(error, '');
        if (!user.value.trim() || !pass.value) {
            setText(error, 'Enter your user name and password.');
            (user.value.trim() ? pass : user).focus();
            return;
        }
        submit.disabled = true;
        setText(submit, 'Logging in…');
        try {
            const me = await api.login(user.value.trim(), pass.value);
            onLogin(me);
        } catch (err) {
            submit.disabled = false;
            setText(submit, 'Log in');
            setText(error, err.status === 401 ? 'Wrong user name or password.'
                : err.status === 429 ? 'Too many attempts. Wait a minute and try again.'
                : `Login failed: ${err.message}`);
            pass.select();
        }
    });

    root.append(h('div', { class: 'login-wrap' }, form));
    user.focus();
    return { destroy() {} };
}
