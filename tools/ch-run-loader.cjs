// dist/ch-run.cjs: what ch-run's launcher (native/launcher/launcher.c) starts Node on.
// It runs ch-run's front end, dist/ch-run-main.cjs, with the V8 code cache
// tools/build.js made for it (dist/ch-run-main.cjs.cache): compiled bytecode
// for what a launch runs, instead of compiling it anew on every launch
// (measured: 2.6 ms of each launch that plans; docs/design.md); and, when
// the planner asks, dist/ch-run-devices.cjs and dist/ch-run-yaml.cjs with
// theirs. A cache is used only for the very bundle it was made from: the
// bundle's first line and its length begin the cache (V8 itself checks
// only the length); V8 refuses it for another Node, V8 or flags. Without
// a usable cache the bundle is compiled as usual.
// ch_host.node compiles: it reads the bundle, maps its cache and hands them
// to V8 (native/host/compile.cc), which saved a launch that plans ~1 ms of
// requiring node:vm (compiled from source at every launch) and reading the
// bundle into a string. node:vm compiles, from the same cache, where the
// addon isn't built, is turned off (CH_HOST_FS=node), or was built for
// another Node.
// The build: CH_RUN_CODE_CACHE_DIR=DIR writes, when this run ends, the
// cache of every bundle it ran to DIR/BUNDLE.cache;
// CH_RUN_CODE_CACHE_PRELOAD=BUNDLE,... runs those first (their top level,
// where the planner would not load them).
'use strict';
// No node:module (Module.wrap, createRequire): Node's start-up snapshot
// lacks it, and compiling it cost ~0.35 ms a launch (docs/design.md). The
// wrapper is written here, and the front end gets a require that asks Node
// for its own modules, else this file's own (the same directory: it
// resolves alike).
// Node's own modules through process.getBuiltinModule where Node has it
// (20.16): require()'s first call compiled its machinery and made each
// module's ES module facade, ~0.06 ms of a launch that plans. The bundles
// get the same: their require() asks for Node's modules alone.
const builtin = typeof process.getBuiltinModule === 'function' ? process.getBuiltinModule : null;
const requireForBundle = builtin === null ? require : (id) => builtin(id) ?? require(id);
const { readFileSync, writeFileSync } = requireForBundle('node:fs');

// ch_host.node first (lib/util/host-fs.ts says why, native/host/): the
// bundles are compiled with it, and the front end's frequent reads go through it
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
/** What became of each bundle's cache, by file name, for the front end's -vv. */
const caches = globalThis[Symbol.for('ch-toolkit.codecache')] = {};

/** Bundles run so far, by file: each runs once, as require() would have it. */
const loaded = new Map();

/** Where the build has this run's caches written (CH_RUN_CODE_CACHE_DIR), or undefined. */
const cacheDir = process.env.CH_RUN_CODE_CACHE_DIR, preload = process.env.CH_RUN_CODE_CACHE_PRELOAD;
delete process.env.CH_RUN_CODE_CACHE_DIR;
delete process.env.CH_RUN_CODE_CACHE_PRELOAD;

/** The addon compiles (native/host/compile.cc) where it was built for this very Node. */
const compiler = host !== null && host.v8abi === Number(process.versions.modules) ? host : null;
const COMPILED = Symbol.for('ch-toolkit.compiled');

/** The parameters of the function a bundle is compiled as: Node's CommonJS module wrapper's. */
const PARAMS = ['exports', 'require', 'module', '__filename', '__dirname'];

/**
 * FILE compiled by node:vm, from its cache where that was made for it: the
 * same function, and the same cache, as the addon's (no addon, or one built
 * for another Node). [function, what became of the cache].
 */
function compileByVm(file) {
  const bytes = readFileSync(file);
  const source = bytes.toString('utf8');
  const nl = bytes.indexOf(10);
  // The stamp as native/host/compile.cc's stamp_of makes it.
  const stamp = Buffer.from(`CHCODECACHE2 ${bytes.length} ${bytes.toString('latin1', 0, nl < 0 ? bytes.length : nl)}\n`, 'latin1');
  let cachedData;
  try {
    const cache = readFileSync(`${file}.cache`);
    if (cache.length > stamp.length && cache.subarray(0, stamp.length).equals(stamp)) cachedData = cache.subarray(stamp.length);
  } catch { /* none */ }
  const fn = requireForBundle('node:vm').compileFunction(source, PARAMS, { filename: file, cachedData });
  return [fn, cachedData === undefined ? 'none' : fn.cachedDataRejected ? 'rejected by V8' : 'used'];
}

/**
 * Run bundle FILE (ours, in dist/) as a CommonJS module, from the code cache
 * made for it where there is one; its exports. For the build, its cache is
 * written when the process exits: what it holds is what this one run of the
 * bundle compiled, the planner's calls into it included.
 */
function load(file) {
  if (loaded.has(file)) return loaded.get(file).exports;
  const name = file.slice(file.lastIndexOf('/') + 1);
  let fn, status = compiler?.compile(file, cacheDir !== undefined);
  if (status !== undefined) {
    fn = globalThis[COMPILED];
    delete globalThis[COMPILED];
  } else {
    [fn, status] = compileByVm(file);
  }
  caches[name] = status;
  if (cacheDir !== undefined)
    process.on('exit', () => {
      const cache = compiler?.cacheOf(file);
      if (cache !== undefined) writeFileSync(`${cacheDir}/${name}.cache`, cache);
    });
  const mod = { exports: {}, filename: file, id: file, loaded: false };
  loaded.set(file, mod);
  fn.call(mod.exports, mod.exports, requireForBundle, mod, file, __dirname);
  return mod.exports;
}

// ch-run's other bundles, loaded only for --gpu, --ib and --device
// (lib/run/planner.ts, by host.load), and for a YAML CDI spec
// (lib/devices/cdi.ts): from their caches too. The build makes them by
// planning with --gpu over stand-in drivers and a YAML spec: what an
// injection runs is in them, not only their top level (a first --gpu
// launch ~2.4 ms less; one that reads a YAML spec ~15 ms less).
globalThis[Symbol.for('ch-toolkit.load')] = load;
for (const b of preload ? preload.split(',') : []) load(`${__dirname}/${b}`);
load(`${__dirname}/ch-run-main.cjs`);
