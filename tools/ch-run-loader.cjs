// dist/ch-run.cjs: what ch-run's launcher (native/launcher/launcher.c) starts Node on.
// It runs ch-run's front end, dist/ch-run-main.cjs, with the V8 code cache
// tools/build.js made for it (dist/ch-run-main.cjs.cache): compiled bytecode
// for what a launch runs, instead of compiling it anew on every launch
// (measured: 2.6 ms of each launch that plans; docs/design.md); and, when
// the planner asks, dist/ch-run-devices.cjs with its own. A cache is
// used only for the very bundle it was made from: the bundle's first line,
// a random build id, and its length begin the cache (V8 itself checks only
// the length); V8 refuses it for another Node, V8 or flags. Without a
// usable cache the bundle is compiled as usual.
// CH_RUN_CODE_CACHE_OUT=FILE, CH_RUN_CODE_CACHE_DEVICES=FILE: write the
// caches when this run ends (the build).
'use strict';
// No node:module (Module.wrap, createRequire): Node's start-up snapshot
// lacks it, and compiling it cost ~0.35 ms a launch (docs/design.md). The
// wrapper is written here, and the front end gets this file's own require
// (the same directory: it resolves alike). node:vm, which the cache needs,
// is compiled all the same.
const { readFileSync, writeFileSync } = require('node:fs');
const { Script } = require('node:vm');

// ch_host.node first (lib/util/host-fs.ts says why, native/host/): the
// cache is read with it, and the front end's frequent reads go through it
// (host-fs.ts finds it here). Where it isn't built, node:fs does all.
// Its directory as paths.ts's buildDir() has it.
const build = process.env.CH_TOOLKIT_BUILD_DIR ?? `${__dirname}/../build/Release`;
let host = null;
if (process.env.CH_HOST_FS !== 'node') {
  try {
    const m = { exports: {} };
    process.dlopen(m, `${build}/ch_host.node`);
    host = globalThis[Symbol.for('ch-toolkit.hostfs')] = m.exports;
  } catch { /* not built */ }
}
/** FILE's code cache, after its stamp line, if that is STAMP; else undefined. */
function codeCache(file, stamp) {
  if (host !== null) return host.codeCache(`${file}.cache`, stamp);
  let cache;
  try { cache = readFileSync(`${file}.cache`); } catch { return undefined; }
  return cache.length > stamp.length && cache.toString('latin1', 0, stamp.length) === stamp ? cache.subarray(stamp.length) : undefined;
}

/** What became of each bundle's cache, by file name, for the front end's -vv. */
const caches = globalThis[Symbol.for('ch-toolkit.codecache')] = {};

/** Bundles run so far, by file: each runs once, as require() would have it. */
const loaded = new Map();

/**
 * Run bundle FILE (ours, in dist/) as a CommonJS module, from the code cache
 * made for it where there is one; its exports. OUT: write its cache there
 * when the process exits (the build: what the cache holds is what this one
 * run of the bundle compiled, the planner's calls into it included).
 */
function load(file, out) {
  if (loaded.has(file)) return loaded.get(file).exports;
  const source = readFileSync(file, 'utf8');
  const stamp = `CHCODECACHE1 ${source.length} ${source.slice(0, source.indexOf('\n'))}\n`;
  const cachedData = codeCache(file, stamp);
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source}\n});`;
  const script = new Script(wrapped, { filename: file, cachedData });
  caches[file.slice(file.lastIndexOf('/') + 1)] = cachedData === undefined ? 'none'
    : script.cachedDataRejected ? 'rejected by V8' : 'used';
  if (out) process.on('exit', () => writeFileSync(out, Buffer.concat([Buffer.from(stamp, 'latin1'), script.createCachedData()])));
  const mod = { exports: {}, filename: file, id: file, loaded: false };
  loaded.set(file, mod);
  script.runInThisContext().call(mod.exports, mod.exports, require, mod, file, __dirname);
  return mod.exports;
}

// ch-run's other bundle, loaded only for --gpu, --ib and --device
// (lib/run/planner.ts, by host.load): from its cache too (its top level:
// 7.2-7.9 ms compiled, 2.5 from the cache; and what an injection runs, made
// by the build over stand-in drivers: a first --gpu launch ~2.4 ms less).
globalThis[Symbol.for('ch-toolkit.load')] = (file) => load(file);
// The build (tools/build.js codeCache) makes the caches: the front end's
// after a planning run, the devices bundle's after its top level.
const out = process.env.CH_RUN_CODE_CACHE_OUT, devicesOut = process.env.CH_RUN_CODE_CACHE_DEVICES;
if (out !== undefined) delete process.env.CH_RUN_CODE_CACHE_OUT;
if (devicesOut !== undefined) {
  delete process.env.CH_RUN_CODE_CACHE_DEVICES;
  load(`${__dirname}/ch-run-devices.cjs`, devicesOut);
}
load(`${__dirname}/ch-run-main.cjs`, out);
