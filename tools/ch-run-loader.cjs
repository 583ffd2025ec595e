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
const file = `${__dirname}/ch-run-main.cjs`;
const source = readFileSync(file, 'utf8');
const stamp = `CHCODECACHE1 ${source.length} ${source.slice(0, source.indexOf('\n'))}\n`;
/** The cache after its stamp line, if that is STAMP; else undefined. */
function codeCache() {
  if (host !== null) return host.codeCache(`${file}.cache`, stamp);
  let cache;
  try { cache = readFileSync(`${file}.cache`); } catch { return undefined; }
  return cache.length > stamp.length && cache.toString('latin1', 0, stamp.length) === stamp ? cache.subarray(stamp.length) : undefined;
}
const cachedData = codeCache();
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
