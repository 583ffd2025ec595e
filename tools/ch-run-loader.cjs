// dist/ch-run.cjs: what ch-run's launcher (native/launcher/launcher.c) starts Node on.
// It runs ch-run's front end, dist/ch-run-main.cjs, with the V8 code cache
// tools/build.js made for it (dist/ch-run-main.cjs.cache): compiled bytecode
// for what a launch runs, instead of compiling it anew on every launch
// (measured: 2.6 ms of each launch that plans; docs/design.md). The cache is
// used only for the very bundle it was made from: the bundle's first line,
// a random build id, and its length begin the cache (V8 itself checks only
// the length); V8 refuses it for another Node, V8 or flags. Without a
// usable cache the bundle is compiled as usual.
// CH_RUN_CODE_CACHE_OUT=FILE: write the cache after this run (the build).
'use strict';
// No node:module (Module.wrap, createRequire): Node's start-up snapshot
// lacks it, and compiling it cost ~0.35 ms a launch (docs/design.md). The
// wrapper is written here, and the front end gets this file's own require
// (the same directory: it resolves alike). node:vm, which the cache needs,
// is compiled all the same.
const { readFileSync, writeFileSync } = require('node:fs');
const { Script } = require('node:vm');

const file = `${__dirname}/ch-run-main.cjs`;
const source = readFileSync(file, 'utf8');
const stamp = `CHCODECACHE1 ${source.length} ${source.slice(0, source.indexOf('\n'))}\n`;
let cachedData;
try {
  const cache = readFileSync(`${file}.cache`);
  if (cache.subarray(0, stamp.length).toString('latin1') === stamp) cachedData = cache.subarray(stamp.length);
} catch { /* none: compile */ }
const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source}\n});`;
const script = new Script(wrapped, { filename: file, cachedData });
// What became of the cache, for the front end's -vv.
globalThis[Symbol.for('ch-toolkit.codecache')] = cachedData === undefined ? 'none'
  : script.cachedDataRejected ? 'rejected by V8' : 'used';
const out = process.env.CH_RUN_CODE_CACHE_OUT;
if (out) {
  delete process.env.CH_RUN_CODE_CACHE_OUT;
  process.on('exit', () => writeFileSync(out, Buffer.concat([Buffer.from(stamp, 'latin1'), script.createCachedData()])));
}
const mod = { exports: {}, filename: file, id: file, loaded: false };
script.runInThisContext().call(mod.exports, mod.exports, require, mod, file, __dirname);
