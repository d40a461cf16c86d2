// A tiny element builder. Text always goes in as text nodes, never as HTML,
// so nothing a device or a user sends can inject markup into the page.

const PROPS = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'min', 'max', 'step', 'open']);

export function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
        for (const [k, v] of Object.entries(attrs)) {
            if (v === undefined || v === null || v === false) continue;
            if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
            else if (k === 'class') el.className = v;
            else if (k === 'dataset') Object.assign(el.dataset, v);
            else if (PROPS.has(k)) el[k] = v;
            else el.setAttribute(k, v === true ? '' : String(v));
        }
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const c of children) {
        if (c === undefined || c === null || c === false) continue;
        if (Array.isArray(c)) append(el, c);
        else el.append(c instanceof Node ? c : String(c));
    }
}

/** Appends children, skipping null/undefined/false (Node.append would print "null"). */
export function add(el, ...children) {
    append(el, children);
    return el;
}

/** Sets the text of an element only when it changed (keeps screen readers calm). */
export function setText(el, text) {
    text = String(text);
    if (el.textContent !== text) el.textContent = text;
}

export function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
}
