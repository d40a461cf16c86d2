// uPlot with the options every chart of the page shares: a power axis in W
// on the left with a marked zero line (the sign is the direction), SoC in %
// on the right, the width of its container, and a resize observer.

import uPlot from 'uplot';
import { num, power } from './format.js';

export const COLORS = {
    battery: '#1565c0',
    grid: '#8e24aa',
    soc: '#2e7d32',
    backfill: '#ef6c00',
};

/** Draws a darker horizontal line at 0 W. */
function zeroLine() {
    return {
        hooks: {
            draw: (u) => {
                const y = u.valToPos(0, 'W', true);
                const { left, top, width, height } = u.bbox;
                if (!(y >= top && y <= top + height)) return;
                const ctx = u.ctx;
                ctx.save();
                ctx.strokeStyle = '#555';
                ctx.lineWidth = Math.max(1, devicePixelRatio);
                ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
                ctx.beginPath();
                ctx.moveTo(left, y);
                ctx.lineTo(left + width, y);
                ctx.stroke();
                ctx.restore();
            },
        },
    };
}

const pad2 = (n) => String(n).padStart(2, '0');

/** Tick labels in 24-hour local time; the date where the range needs it. */
function timeTicks(u, splits, axisIdx, foundSpace, foundIncr) {
    return splits.map((s, i) => {
        const d = new Date(s * 1000);
        const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
        if (foundIncr < 60) return `${hm}:${pad2(d.getSeconds())}`;
        if (foundIncr < 86400) {
            const prev = i > 0 ? new Date(splits[i - 1] * 1000) : null;
            const sameDay = prev ? prev.getDate() === d.getDate() : d.toDateString() === new Date().toDateString();
            return sameDay ? hm : `${d.getMonth() + 1}/${d.getDate()} ${hm}`;
        }
        return `${d.getMonth() + 1}/${d.getDate()}`;
    });
}

/**
 * series: extra series after x, e.g. {label, key, scale:'W'|'%', color}.
 * xRange: optional () => [min, max] in epoch seconds for a fixed window.
 */
export function createChart(container, { series, xRange, height = 260, extraSeries = [] }) {
    const width = Math.max(280, container.clientWidth || 600);
    const narrow = width < 500; // phones: smaller axes, more room for the data
    const opts = {
        width,
        height,
        cursor: { drag: { x: true, y: false } },
        legend: { live: true },
        scales: {
            x: xRange ? { time: true, range: () => xRange() } : { time: true },
            W: {
                // Keep 0 in view so above/below the line always reads as a direction.
                range: (u, min, max) => {
                    const lo = Math.min(min ?? 0, 0), hi = Math.max(max ?? 0, 0);
                    const pad = Math.max(50, (hi - lo) * 0.1);
                    return [lo - pad, hi + pad];
                },
            },
            '%': { range: [0, 100] },
        },
        series: [
            { label: 'Time', value: (u, v) => (v == null ? '–' : new Date(v * 1000).toLocaleString()) },
            ...series.map((s) => ({
                label: s.label,
                scale: s.scale,
                stroke: s.color,
                width: 2,
                spanGaps: false,
                value: (u, v) => (v == null ? '–' : s.scale === '%' ? num(v, '%', 1) : power(v)),
            })),
            ...extraSeries,
        ],
        axes: [
            { values: timeTicks, space: 60 },
            { scale: 'W', label: narrow ? '' : 'Power', size: narrow ? 58 : 70, values: (u, vals) => vals.map((v) => power(v)) },
            { scale: '%', label: narrow ? '' : 'SoC', side: 1, size: narrow ? 44 : 55, grid: { show: false }, values: (u, vals) => vals.map((v) => `${v} %`) },
        ],
        plugins: [zeroLine()],
    };
    const u = new uPlot(opts, [[], ...series.map(() => []), ...extraSeries.map(() => [])], container);
    const ro = new ResizeObserver(() => {
        const w = Math.max(280, container.clientWidth);
        if (Math.abs(w - u.width) > 2) u.setSize({ width: w, height });
    });
    ro.observe(container);
    return {
        u,
        setData(data, resetScales = true) {
            u.setData(data, resetScales);
        },
        destroy() {
            ro.disconnect();
            u.destroy();
        },
    };
}
