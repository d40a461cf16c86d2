// Builds the dashboard into static files the gateway serves:
//   OUTDIR/index.html, OUTDIR/assets/app.js, OUTDIR/assets/app.css
// Usage: node build.mjs [--outdir DIR] [--dev]   (default DIR: ../../build/dashboard)

import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const dev = args.includes('--dev');
const i = args.indexOf('--outdir');
const outdir = path.resolve(i >= 0 && args[i + 1] ? args[i + 1] : path.join(here, '../../build/dashboard'));
const assets = path.join(outdir, 'assets');

await rm(assets, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const common = {
    bundle: true,
    minify: !dev,
    sourcemap: dev ? 'inline' : false,
    target: ['chrome100', 'firefox100', 'safari15.4'],
    logLevel: 'warning',
};

await Promise.all([
    build({ ...common, entryPoints: [path.join(here, 'src/main.js')], outfile: path.join(assets, 'app.js'), format: 'esm' }),
    build({ ...common, entryPoints: [path.join(here, 'src/app.css')], outfile: path.join(assets, 'app.css') }),
]);
await copyFile(path.join(here, 'src/index.html'), path.join(outdir, 'index.html'));
// The bundle contains uPlot; its MIT licence travels with it.
await copyFile(path.join(here, 'node_modules/uplot/LICENSE'), path.join(assets, 'uPlot.LICENSE.txt'));
console.log(`dashboard built into ${outdir}`);
