#!/usr/bin/env node
// The one build script: `node tools/build.js [native|ts|all]` (default all).
//
//   native  the addons and ch-run's executables (node-gyp, binding.gyp) into
//           build/Release. Node's headers: $npm_config_nodedir if set, else
//           the running Node's own (<prefix>/include/node, found from
//           process.execPath: distro Node, nvm, volta, official tarballs),
//           else node-gyp's download (needs the network). Then the
//           launcher is copied to bin/ch-run, which npm links as ch-run.
//   spank   the SPANK plugin alone (native/spank/; also part of native, where
//           Slurm's headers are: otherwise skipped, saying so)
//   ts      type-checks and compiles lib/ (tsc: dist/**/*.js, the library
//           modules), then bundles every command into one CommonJS file,
//           dist/COMMAND.cjs, which bin/COMMAND loads (one file to read at
//           start-up instead of dozens of ES modules); then each command's
//           --help, which is written to be its manual, as a man page in
//           dist/man/COMMAND.1 (make install puts them in PREFIX/share/man).
//
// It runs as the package's install script too (npm ci, npm install -g):
// `native` then needs a C/C++ toolchain and Python (node-gyp), nothing else.
//
//   bin          bin/ch-run: the launcher if built, else (if missing) the
//                stand-in tools/ch-run-unbuilt (npm's postpack)
//   bin-unbuilt  bin/ch-run: the stand-in, always (npm's prepack: a package
//                never ships the packer's launcher)

import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spec, TS_MODULE, tsModule, writeIfChanged } from './protocol.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
/** The launcher's variables and Node flags (protocol.json), with which the build runs ch-run's front end alone. */
const { launcher: LAUNCHER, nodeFlags: NODE_FLAGS } = spec();

/** Each command's entry point and bundle (dist/NAME.cjs). */
export const BUNDLES = {
  'ch-run-main': 'lib/run/main.ts',   // ch-run's front end, which dist/ch-run.cjs loads (tools/ch-run-loader.cjs)
  'ch-run-devices': 'lib/devices/inject.ts',   // loaded by ch-run only with --gpu/--ib
  'ch-run-yaml': 'lib/devices/yaml.ts',   // the YAML parser, loaded (lib/devices/cdi.ts) only for a YAML CDI spec
  'ch-tar2dir': 'lib/image/tar2dir.ts',
  'ch-build': 'lib/image/build.ts',
  'ch-builder2tar': 'lib/image/builder2tar.ts',   // also ch-docker2tar
  'ch-fromhost': 'lib/fromhost/main.ts',
  'ch-pull': 'lib/pull/main.ts',
  'ch-convert': 'lib/convert/main.ts',
  'ch-spank-stage': 'lib/stage/main.ts',   // the SPANK plugin's stager (native/spank/)
  'ch-image': 'lib/ch-image/main.ts',
};

/** Commands with a man page: the name, and its bundle. */
const MAN_PAGES = { 'ch-run': 'ch-run', 'ch-tar2dir': 'ch-tar2dir', 'ch-build': 'ch-build',
  'ch-builder2tar': 'ch-builder2tar', 'ch-docker2tar': 'ch-builder2tar', 'ch-fromhost': 'ch-fromhost',
  'ch-pull': 'ch-pull', 'ch-convert': 'ch-convert', 'ch-image': 'ch-image' };

const SUMMARY = {
  'ch-run': 'run a command in an unprivileged container',
  'ch-tar2dir': 'unpack an image tarball into a directory, safely and atomically',
  'ch-build': 'build an image with docker, podman or buildah',
  'ch-builder2tar': "flatten a builder's image into a tarball",
  'ch-docker2tar': "flatten a builder's image into a tarball (older name of ch-builder2tar)",
  'ch-fromhost': 'copy host files (GPU libraries and tools) into an image',
  'ch-pull': 'pull an image from an OCI registry into a directory or tarball, verified and cached',
  'ch-convert': 'convert an image between directory, tarball, SquashFS and builder formats, or from a registry',
  'ch-image': 'build images from Dockerfiles without a builder, and manage image storage',
};

function say(msg) { process.stderr.write(`tools/build.js: ${msg}\n`); }

function run(cmd, args) {
  execFileSync(cmd, args, { cwd: ROOT, stdio: 'inherit' });
}

/** Where Node's headers are, or null to let node-gyp fetch them. */
export function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = dirname(dirname(realpathSync(process.execPath)));
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  return null;
}

function nodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // Installed without its dependencies' files? npm points at its own copy.
    if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
    throw new Error('node-gyp not found: run npm ci (or npm install) in ' + ROOT + ' first');
  }
}

function native() {
  const dir = nodeDir();
  if (dir) say(`Node headers from ${dir}/include/node`);
  else say(`no Node headers next to ${process.execPath}: node-gyp downloads them (set npm_config_nodedir to avoid that)`);
  run(process.execPath, [nodeGyp(), 'rebuild', ...(dir ? [`--nodedir=${dir}`] : [])]);
  spank();
  binLauncher();
}

/**
 * The SPANK plugin (native/spank/: build/Release/ch_spank.so and its static
 * holder, ch-spank-hold), only where Slurm's development headers are
 * (<slurm/spank.h>: Debian's libslurm-dev, RHEL's slurm-devel; or in
 * $CH_SPANK_CFLAGS, e.g. -I/opt/slurm/include); skipped with a word otherwise,
 * or with CH_TOOLKIT_WITHOUT=spank. After node-gyp, whose rebuild empties build/.
 */
export function spank() {
  const without = (process.env.CH_TOOLKIT_WITHOUT ?? '').split(',').includes('spank');
  const cc = process.env.CC || 'cc';
  const extra = (process.env.CH_SPANK_CFLAGS ?? '').split(/\s+/).filter(Boolean);
  const out = join(ROOT, 'build', 'Release');
  const src = (f) => join(ROOT, 'native', 'spank', f);
  let have = !without;
  if (have) {
    try {
      execFileSync(cc, [...extra, '-fsyntax-only', '-x', 'c', '-'], { input: '#include <slurm/spank.h>\n', stdio: ['pipe', 'ignore', 'ignore'] });
    } catch { have = false; }
  }
  if (!have) {
    say(without ? 'SPANK plugin skipped (CH_TOOLKIT_WITHOUT=spank)'
      : "SPANK plugin not built: Slurm's development headers (<slurm/spank.h>) not found; install libslurm-dev "
        + '(Debian) or slurm-devel (RHEL), or set CH_SPANK_CFLAGS=-I/path/to/slurm/include');
    return;
  }
  mkdirSync(out, { recursive: true });
  const flags = ['-std=gnu11', '-Wall', '-Wextra', '-O2', ...extra];
  // Written beside, then renamed: a running slurmd or slurmstepd has the old file mapped, and
  // overwriting it in place crashed one at exit (dlclose ran a fini address from the new file).
  const into = (name, build) => { build(join(out, `.${name}.tmp`)); renameSync(join(out, `.${name}.tmp`), join(out, name)); };
  into('ch_spank.so', (o) => run(cc, [...flags, '-fPIC', '-fvisibility=hidden', '-shared', '-o', o,
    src('ch_spank.c'), src('options.c'), src('container.c'), '-ldl', '-lpthread']));
  // Static: it runs inside any image, found by descriptor (no loader, no libc there needed).
  // ch-spank-join execs in the container after its setns: static, so nothing is loaded from the image.
  for (const [prog, file] of [['ch-spank-hold', 'hold.c'], ['ch-spank-join', 'joiner.c']]) {
    try {
      into(prog, (o) => run(cc, [...flags, '-static', '-o', o, src(file)]));
    } catch {
      say(`no static libc: ${prog} linked dynamically (works only in images with a compatible libc)`);
      into(prog, (o) => run(cc, [...flags, '-o', o, src(file)]));
    }
  }
  say(`SPANK plugin built: ${join(out, 'ch_spank.so')}`);
}

/**
 * Write DATA to FILE by a rename: a command started meanwhile (while
 * `npm test` rebuilds dist/, say) reads the old file or the new one, never
 * a missing or half-written one.
 */
function writeAtomic(file, data, mode = 0o644) {
  const tmp = join(dirname(file), `.${basename(file)}.tmp-${process.pid}`);
  try {
    writeFileSync(tmp, data, { mode });
    chmodSync(tmp, mode);   // whatever the umask
    renameSync(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
}

const BIN_RUN = join(ROOT, 'bin', 'ch-run');

/**
 * bin/ch-run, the file npm links as ch-run (package.json "bin"): the
 * launcher itself, a copy (npm packs no symlinks), so an npm-installed
 * ch-run runs without a shell in front (issue #27: 1.5-2 ms a launch).
 * npm links it before the install script builds the launcher, and skips a
 * missing file, so until then it is a stand-in that says how to build
 * (tools/ch-run-unbuilt), which the package ships. Each is put there by a
 * rename: a launch meanwhile runs the old file or the new one.
 */
function binLauncher() {
  const built = join(ROOT, 'build', 'Release', 'ch-run');
  if (!existsSync(built)) return false;
  writeAtomic(BIN_RUN, readFileSync(built), 0o755);
  return true;
}

function binUnbuilt(always) {
  if (always || !existsSync(BIN_RUN)) writeAtomic(BIN_RUN, readFileSync(join(ROOT, 'tools', 'ch-run-unbuilt')), 0o755);
}

/** Move every file under FROM to the same place under TO, each by a rename; their paths, relative. */
function moveTree(from, to, rel = '') {
  const moved = [];
  for (const e of readdirSync(join(from, rel), { withFileTypes: true })) {
    const r = join(rel, e.name);
    if (e.isDirectory()) {
      mkdirSync(join(to, r), { recursive: true });
      moved.push(...moveTree(from, to, r));
    } else {
      renameSync(join(from, r), join(to, r));
      moved.push(r);
    }
  }
  return moved;
}

/**
 * Remove what this build did not write under DIST (outputs of removed
 * sources, temporaries of a killed build), then empty directories. Dot files
 * (make's stamp) stay, but not our temporaries.
 */
function removeStale(dist, written, rel = '') {
  for (const e of readdirSync(join(dist, rel), { withFileTypes: true })) {
    const r = join(rel, e.name);
    if (e.isDirectory()) {
      if (/^\.tsc-/.test(e.name)) { rmSync(join(dist, r), { recursive: true, force: true }); continue; }
      removeStale(dist, written, r);
      if (readdirSync(join(dist, r)).length === 0) rmSync(join(dist, r), { recursive: true });
    } else if (!written.has(r) && (!e.name.startsWith('.') || /\.tmp-\d+$/.test(e.name))) {
      rmSync(join(dist, r), { force: true });
    }
  }
}

/**
 * The exports of Node's module PATH that are plain values, as a fresh Node
 * has them: an accessor (fs.promises, fs.ReadStream) loads more of Node
 * when read, and one read in this process (by esbuild, say) is a value here.
 */
function dataExports(path) {
  const code = `const d = Object.getOwnPropertyDescriptors(require(${JSON.stringify(path)}));`
    + "console.log(Object.keys(d).filter((k) => 'value' in d[k] && /^[A-Za-z_$][\\w$]*$/.test(k)).join(' '))";
  return execFileSync(process.execPath, ['-e', code], { encoding: 'utf8' }).trim().split(' ');
}

/**
 * ch-run's front end (and its devices bundle) imports node:fs, node:os and node:module as ES modules;
 * bundled, each import of fs or os became esbuild's __toESM copy of the
 * whole module (a getter per export, five times), and node:module, which
 * Node's start-up snapshot lacks, was compiled at start-up though only
 * createRequire is used, and rarely. Together ~0.9 ms of every launch that
 * plans (docs/design.md); node:module, with the ES module loader it brings,
 * ~1.3 ms more of a first --gpu launch. In those bundles they are plain modules made here:
 * fs and os as their exports, once; createRequire requiring node:module when
 * called. Only import statements (our sources); a name node:module doesn't
 * have here fails the build.
 */
/**
 * `string-width` (yargs, cliui and wrap-ansi measure --help with it) is
 * lib/util/string-width.ts in every bundle: the package builds its Unicode
 * machinery when loaded, 25-40 ms of each yargs command's start.
 */
const lazyStringWidth = {
  name: 'ch-lazy-string-width',
  setup(build) {
    build.onResolve({ filter: /^string-width$/ }, () => ({ path: join(ROOT, 'lib', 'util', 'string-width.ts') }));
  },
};

const builtinsOnce = {
  name: 'ch-builtins-once',
  setup(build) {
    build.onResolve({ filter: /^node:(fs|os|module)$/ }, (args) =>
      (args.kind === 'import-statement' ? { path: args.path, namespace: 'ch-builtin' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'ch-builtin' }, ({ path }) => {
      if (path === 'node:module')
        return { loader: 'js', contents: "export function createRequire(f) { return require('node:module').createRequire(f); }" };
      const names = dataExports(path);
      return { loader: 'js', contents: `const m = require(${JSON.stringify(path)});\nexport default m;\n`
        + `export const { ${names.join(', ')} } = m;\n` };
    });
  },
};

async function ts() {
  // Nothing is removed first, and every file is replaced by a rename, so
  // commands keep working while dist/ is rebuilt; what is stale goes last.
  const dist = join(ROOT, 'dist');
  mkdirSync(dist, { recursive: true });
  binUnbuilt(false);   // npm links bins after `prepare` (this), before `install` (native)
  const written = new Set();
  // The protocol's TypeScript form, made from protocol.json (tools/protocol.js; binding.gyp makes the C one).
  writeIfChanged(TS_MODULE, tsModule());
  const stage = mkdtempSync(join(dist, '.tsc-'));
  try {
    run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json', '--outDir', stage]);
    for (const f of moveTree(stage, dist)) written.add(f);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  const esbuild = await import('esbuild');
  const built = await Promise.all(Object.entries(BUNDLES).map(([name, entry]) => esbuild.build({
    entryPoints: [join(ROOT, entry)],
    outfile: join(dist, `${name}.cjs`),
    write: false,   // written below, each by a rename
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    logLevel: 'warning',
    plugins: [lazyStringWidth, ...(name === 'ch-run-main' || name === 'ch-run-devices' ? [builtinsOnce] : [])],
    // The sources are ES modules that find the package from import.meta:
    // in a bundle, its own file. The URL only when asked for: making it
    // (node:url) cost every ch-run launch ~0.3 ms (docs/design.md).
    define: { 'import.meta.url': '__chMeta.url', 'import.meta.filename': '__chMeta.filename',
      'import.meta.dirname': '__chMeta.dirname' },
    // ch-run's front end and devices bundle: a build id first, which their code caches name (tools/ch-run-loader.cjs).
    banner: { js: `${name === 'ch-run-main' || name === 'ch-run-devices' ? `// ch-toolkit build ${randomBytes(8).toString('hex')}\n` : ''}`
      + 'const __chMeta = { filename: __filename, dirname: __dirname, '
      + "get url() { return require('url').pathToFileURL(__filename).href; } };" },
  })));
  for (const r of built) {
    for (const out of r.outputFiles) {
      writeAtomic(out.path, out.contents);
      written.add(relative(dist, out.path));
    }
  }
  writeAtomic(join(dist, 'ch-run.cjs'), readFileSync(join(ROOT, 'tools', 'ch-run-loader.cjs')));
  written.add('ch-run.cjs');
  if (await codeCache()) for (const b of CACHED_BUNDLES) written.add(`${b}.cache`);
  for (const page of manPages()) written.add(page);
  removeStale(dist, written);
}

/** The bundles ch-run's loader runs from a code cache (tools/ch-run-loader.cjs). */
const CACHED_BUNDLES = ['ch-run-main.cjs', 'ch-run-devices.cjs', 'ch-run-yaml.cjs'];

/**
 * Stand-in GPU drivers in DIR for the devices bundle's cache run: a loader
 * cache listing a libcuda.so.1 (an empty shared object with that soname,
 * which the C toolchain node-gyp needs anyway compiles), device nodes as
 * plain files, an nvidia-smi; the variables that point --gpu's discovery
 * at them (lib/devices/inject.ts), or throws why it can't.
 */
function standInDrivers(dir) {
  for (const d of ['lib', 'dev', 'bin']) mkdirSync(join(dir, d), { recursive: true });
  const src = join(dir, 'empty.c');
  writeFileSync(src, 'int ch_toolkit_stand_in;\n');
  execFileSync(process.env.CC || 'cc', ['-shared', '-fPIC', '-Wl,-soname,libcuda.so.1', '-o', join(dir, 'lib', 'libcuda.so.1'), src],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  writeFileSync(join(dir, 'ld.so.conf'), `${join(dir, 'lib')}\n`);
  const ldconfig = ['/sbin/ldconfig', '/usr/sbin/ldconfig'].find(existsSync) ?? 'ldconfig';
  execFileSync(ldconfig, ['-C', join(dir, 'ld.so.cache'), '-f', join(dir, 'ld.so.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  for (const d of ['nvidia0', 'nvidiactl', 'nvidia-uvm']) writeFileSync(join(dir, 'dev', d), '');
  writeFileSync(join(dir, 'bin', 'nvidia-smi'), '#!/bin/sh\n', { mode: 0o755 });
  // A CDI spec in YAML (as nvidia-ctk writes them), of a kind --gpu doesn't
  // take: read all the same (the registry), so the YAML parser's cache holds its parsing.
  mkdirSync(join(dir, 'cdi'));
  writeFileSync(join(dir, 'cdi', 'stand-in.yaml'), 'cdiVersion: 0.6.0\nkind: example.com/stand-in\ndevices:\n'
    + '- name: "0"\n  containerEdits:\n    env: ["STAND_IN=0"]\n    deviceNodes:\n    - path: /dev/stand-in0\n'
    + 'containerEdits:\n  mounts:\n  - hostPath: /nonexistent\n    containerPath: /stand-in\n    options: [ro, nosuid, bind]\n');
  return { CH_GPU_LDCACHE: join(dir, 'ld.so.cache'), CH_GPU_DEVROOT: join(dir, 'dev'), CH_GPU_PATH: join(dir, 'bin'),
    CH_RUN_CDI_DIRS: join(dir, 'cdi') };
}

/**
 * V8's code caches for ch-run's front end, its devices bundle and the YAML
 * parser (tools/ch-run-loader.cjs says why): the front end's made by
 * planning a container for a stand-in image, with the options most
 * launches use, so that what a launch compiles is in it; the others' by
 * planning with --gpu over stand-in drivers and a YAML CDI spec
 * (standInDrivers), so that what an injection and a spec's parsing run is
 * in them too; where those can't be made, after their top level (loading
 * the devices bundle cost 7.2-7.9 ms compiled, 2.5 from that; what an
 * injection runs ~2.4 ms more of a first --gpu launch, the YAML parser's
 * parsing ~15 ms of one that reads a YAML spec).
 * Planning only: no container is started (the decision goes to /dev/null).
 * Made again by the install script (native), where Node may differ from
 * the one that built dist/.
 */
async function codeCache() {
  const bundle = join(ROOT, 'dist', 'ch-run-main.cjs');
  if (!existsSync(bundle)) return false;
  const { REQUIRED_DIRS, guestPath } = await import(join(ROOT, 'dist', 'image', 'layout.js'));
  const work = mkdtempSync(join(tmpdir(), 'ch-run-code-cache-'));
  const img = join(work, 'img');
  // Under the flags the launcher gives Node (V8 refuses a cache made under
  // others); the loader writes the cache of each bundle the run ran to OUT.
  const plan = (args, out, env = {}) => {
    mkdirSync(out);
    execFileSync(process.execPath, [...NODE_FLAGS, join(ROOT, 'dist', 'ch-run.cjs'), ...args], {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, HOME: '/root', USER: 'nobody', CH_RUN_CODE_CACHE_DIR: out,
        [LAUNCHER.planFd]: '3', [LAUNCHER.doneFd]: '4', [LAUNCHER.memoFd]: '5', ...env },
    });
    return out;
  };
  // Made under temporary names, then renamed over the old ones (which a
  // launch meanwhile finds not to match the new bundles, and ignores).
  const tmp = (b) => join(ROOT, 'dist', `.${b}.cache.tmp-${process.pid}`);
  try {
    for (const d of [...REQUIRED_DIRS.map(guestPath), '/root', '/home', '/mnt/0', '/ch', '/etc', '/run'])
      mkdirSync(join(img, d), { recursive: true });
    writeFileSync(join(img, 'ch', 'environment'), 'CODE_CACHE=1\n');
    writeFileSync(join(img, 'ch', 'metadata.json'), '{"Cmd": ["/bin/true"]}');
    const from = {};
    // As most launches that plan: no -v, the record made after the plan is
    // handed over (lib/run/main.ts recordLater). The recording's code stays
    // in the cache (~0.4 ms of each launch's deserialization): compiled from
    // source it slowed concurrent launches on 2 CPUs.
    from['ch-run-main.cjs'] = plan(['--set-env', '--set-env=A=$PATH:/x', '--unset-env=CODE_*', '-b', `${img}/ch:/mnt/0`, img],
      join(work, 'main'), { [LAUNCHER.memoLater]: '6' });   // the storer's pipe, here a plain one
    const others = { CH_RUN_CODE_CACHE_PRELOAD: 'ch-run-devices.cjs,ch-run-yaml.cjs' };
    let devices;
    try {
      devices = plan(['--gpu', img], join(work, 'devices'), { ...standInDrivers(join(work, 'drivers')), ...others });
    } catch (err) {
      say(`ch-run's devices and YAML bundles cached after their top level only (a first --gpu launch compiles the rest): `
        + `can't plan with stand-in drivers: ${err.stderr?.toString().trim().split('\n').pop() || err.message}`);
      devices = plan([img], join(work, 'top-level'), others);
    }
    from['ch-run-devices.cjs'] = from['ch-run-yaml.cjs'] = devices;
    for (const b of CACHED_BUNDLES) {
      writeFileSync(tmp(b), readFileSync(join(from[b], `${b}.cache`)));
      chmodSync(tmp(b), 0o644);
      renameSync(tmp(b), join(ROOT, 'dist', `${b}.cache`));
    }
    return true;
  } catch (err) {
    say(`no code cache for ch-run's front end (it still works, compiling at each launch): ${err.message}`);
    return false;
  } finally {
    rmSync(work, { recursive: true, force: true });
    for (const b of CACHED_BUNDLES) rmSync(tmp(b), { force: true });
  }
}

/** roff for TEXT shown as typed (no fill), each line safe from roff's control characters. */
function roffVerbatim(text) {
  return text.replace(/\\/g, '\\e').split('\n').map((l) => (/^[.']/.test(l) ? `\\&${l}` : l)).join('\n');
}

/** The man pages, in dist/man; their paths relative to dist/. */
function manPages() {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  mkdirSync(join(ROOT, 'dist', 'man'), { recursive: true });
  const pages = [];
  for (const [name, bundle] of Object.entries(MAN_PAGES)) {
    // argv[1] names the command (ch-docker2tar's help says ch-docker2tar).
    const help = execFileSync(process.execPath, ['-e', `process.argv = [process.argv[0], ${JSON.stringify(name)}, '--help']; require(${JSON.stringify(join(ROOT, 'dist', `${bundle}.cjs`))})`],
      // ch-run's front end hands its decision to the launcher on fds 3 and 4
      // (native/launcher/launcher.c); here the decision (nothing to run) is dropped.
      { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit', 'pipe', 'pipe'],
        env: { ...process.env, COLUMNS: '100', [LAUNCHER.planFd]: '3', [LAUNCHER.doneFd]: '4' } });
    const page = [`.TH ${name.toUpperCase()} 1 "" "ch-toolkit ${version}" "ch-toolkit"`, '.SH NAME',
      `${name} \\- ${SUMMARY[name]}`, '.SH DESCRIPTION', '.nf', roffVerbatim(help.trimEnd()), '.fi',
      '.SH SEE ALSO', Object.keys(MAN_PAGES).filter((n) => n !== name).map((n) => `.BR ${n} (1)`).join(',\n'), ''];
    writeAtomic(join(ROOT, 'dist', 'man', `${name}.1`), page.join('\n'));
    pages.push(join('man', `${name}.1`));
  }
  return pages;
}

async function main(what) {
  try {
    if (what === 'native' || what === 'all') native();
    if (what === 'spank') spank();
    if (what === 'native') await codeCache();   // the installed Node's own
    if (what === 'ts' || what === 'all') await ts();
    if (what === 'bin' && !binLauncher()) binUnbuilt(false);
    if (what === 'bin-unbuilt') binUnbuilt(true);
    if (!['native', 'ts', 'all', 'spank', 'bin', 'bin-unbuilt'].includes(what)) {
      say(`unknown target '${what}' (native, ts, all, spank, bin, bin-unbuilt)`);
      process.exit(2);
    }
  } catch (err) {
    say(`failed: ${err.message}`);
    process.exit(1);
  }
}

// Run as a program; imported (tests), it only exports.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url))
  await main(process.argv[2] ?? 'all');
