#!/usr/bin/env node
// The one build script: `node tools/build.js [native|ts|all]` (default all).
//
//   native  the addons and ch-run's executables (node-gyp, binding.gyp) into
//           build/Release. Node's headers: $npm_config_nodedir if set, else
//           the running Node's own (<prefix>/include/node, found from
//           process.execPath: distro Node, nvm, volta, official tarballs),
//           else node-gyp's download (needs the network).
//   ts      type-checks and compiles lib/ (tsc: dist/**/*.js, the library
//           modules), then bundles every command into one CommonJS file,
//           dist/COMMAND.cjs, which bin/COMMAND loads (one file to read at
//           start-up instead of dozens of ES modules); then each command's
//           --help, which is written to be its manual, as a man page in
//           dist/man/COMMAND.1 (make install puts them in PREFIX/share/man).
//
// It runs as the package's install script too (npm ci, npm install -g):
// `native` then needs a C/C++ toolchain and Python (node-gyp), nothing else.

import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

/** Each command's entry point and bundle (dist/NAME.cjs). */
export const BUNDLES = {
  'ch-run-main': 'lib/run/main.ts',   // ch-run's front end, which dist/ch-run.cjs loads (tools/ch-run-loader.cjs)
  'ch-run-devices': 'lib/devices/inject.ts',   // loaded by ch-run only with --gpu/--ib
  'ch-tar2dir': 'lib/image/tar2dir.ts',
  'ch-build': 'lib/image/build.ts',
  'ch-builder2tar': 'lib/image/builder2tar.ts',   // also ch-docker2tar
  'ch-fromhost': 'lib/fromhost/main.ts',
  'ch-pull': 'lib/pull/main.ts',
  'ch-convert': 'lib/convert/main.ts',
};

/** Commands with a man page: the name, and its bundle. */
const MAN_PAGES = { 'ch-run': 'ch-run', 'ch-tar2dir': 'ch-tar2dir', 'ch-build': 'ch-build',
  'ch-builder2tar': 'ch-builder2tar', 'ch-docker2tar': 'ch-builder2tar', 'ch-fromhost': 'ch-fromhost',
  'ch-pull': 'ch-pull', 'ch-convert': 'ch-convert' };

const SUMMARY = {
  'ch-run': 'run a command in an unprivileged container',
  'ch-tar2dir': 'unpack an image tarball into a directory, safely and atomically',
  'ch-build': 'build an image with docker, podman or buildah',
  'ch-builder2tar': "flatten a builder's image into a tarball",
  'ch-docker2tar': "flatten a builder's image into a tarball (older name of ch-builder2tar)",
  'ch-fromhost': 'copy host files (GPU libraries and tools) into an image',
  'ch-pull': 'pull an image from an OCI registry into a directory or tarball, verified and cached',
  'ch-convert': 'convert an image between directory, tarball, SquashFS and builder formats, or from a registry',
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
}

async function ts() {
  rmSync(join(ROOT, 'dist'), { recursive: true, force: true });   // nothing stale from removed sources
  run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json']);
  const esbuild = await import('esbuild');
  await Promise.all(Object.entries(BUNDLES).map(([name, entry]) => esbuild.build({
    entryPoints: [join(ROOT, entry)],
    outfile: join(ROOT, 'dist', `${name}.cjs`),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    logLevel: 'warning',
    // The sources are ES modules that find the package from import.meta.url.
    define: { 'import.meta.url': '__importMetaUrl' },
    // ch-run's front end: a build id first, which its code cache names (tools/ch-run-loader.cjs).
    banner: { js: `${name === 'ch-run-main' ? `// ch-toolkit build ${randomBytes(8).toString('hex')}\n` : ''}`
      + "const __importMetaUrl = require('url').pathToFileURL(__filename).href;" },
  })));
  for (const name of Object.keys(BUNDLES)) chmodSync(join(ROOT, 'dist', `${name}.cjs`), 0o644);
  copyFileSync(join(ROOT, 'tools', 'ch-run-loader.cjs'), join(ROOT, 'dist', 'ch-run.cjs'));
  chmodSync(join(ROOT, 'dist', 'ch-run.cjs'), 0o644);
  await codeCache();
  manPages();
}

/**
 * V8's code cache for ch-run's front end (tools/ch-run-loader.cjs says why):
 * made by planning a container for a stand-in image, with the options most
 * launches use, so that what a launch compiles is in it. Planning only: no
 * container is started (the decision goes to /dev/null). Made again by the
 * install script (native), where Node may differ from the one that built dist/.
 */
async function codeCache() {
  const bundle = join(ROOT, 'dist', 'ch-run-main.cjs');
  if (!existsSync(bundle)) return;
  const { REQUIRED_DIRS, guestPath } = await import(join(ROOT, 'dist', 'image', 'layout.js'));
  const img = mkdtempSync(join(tmpdir(), 'ch-run-code-cache-'));
  try {
    for (const d of [...REQUIRED_DIRS.map(guestPath), '/root', '/home', '/mnt/0', '/ch'])
      mkdirSync(join(img, d), { recursive: true });
    writeFileSync(join(img, 'ch', 'environment'), 'CODE_CACHE=1\n');
    writeFileSync(join(img, 'ch', 'metadata.json'), '{"Cmd": ["/bin/true"]}');
    const out = `${bundle}.cache`;
    rmSync(out, { force: true });
    execFileSync(process.execPath, [join(ROOT, 'dist', 'ch-run.cjs'), '-v', '--set-env', '--set-env=A=$PATH:/x',
      '--unset-env=CODE_*', '-b', `${img}/ch:/mnt/0`, img], {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, HOME: '/root', USER: 'nobody', CH_RUN_CODE_CACHE_OUT: out,
        CH_RUN_PLAN_FD: '3', CH_RUN_DONE_FD: '4', CH_RUN_MEMO_FD: '5' },
    });
    chmodSync(out, 0o644);
  } catch (err) {
    say(`no code cache for ch-run's front end (it still works, compiling at each launch): ${err.message}`);
  } finally {
    rmSync(img, { recursive: true, force: true });
  }
}

/** roff for TEXT shown as typed (no fill), each line safe from roff's control characters. */
function roffVerbatim(text) {
  return text.replace(/\\/g, '\\e').split('\n').map((l) => (/^[.']/.test(l) ? `\\&${l}` : l)).join('\n');
}

function manPages() {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  mkdirSync(join(ROOT, 'dist', 'man'), { recursive: true });
  for (const [name, bundle] of Object.entries(MAN_PAGES)) {
    // argv[1] names the command (ch-docker2tar's help says ch-docker2tar).
    const help = execFileSync(process.execPath, ['-e', `process.argv = [process.argv[0], ${JSON.stringify(name)}, '--help']; require(${JSON.stringify(join(ROOT, 'dist', `${bundle}.cjs`))})`],
      // ch-run's front end hands its decision to the launcher on fds 3 and 4
      // (addon/launcher.c); here the decision (nothing to run) is dropped.
      { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit', 'pipe', 'pipe'],
        env: { ...process.env, COLUMNS: '100', CH_RUN_PLAN_FD: '3', CH_RUN_DONE_FD: '4' } });
    const page = [`.TH ${name.toUpperCase()} 1 "" "ch-toolkit ${version}" "ch-toolkit"`, '.SH NAME',
      `${name} \\- ${SUMMARY[name]}`, '.SH DESCRIPTION', '.nf', roffVerbatim(help.trimEnd()), '.fi',
      '.SH SEE ALSO', Object.keys(MAN_PAGES).filter((n) => n !== name).map((n) => `.BR ${n} (1)`).join(',\n'), ''];
    writeFileSync(join(ROOT, 'dist', 'man', `${name}.1`), page.join('\n'));
  }
}

async function main(what) {
  try {
    if (what === 'native' || what === 'all') native();
    if (what === 'native') await codeCache();   // the installed Node's own
    if (what === 'ts' || what === 'all') await ts();
    if (!['native', 'ts', 'all'].includes(what)) {
      say(`unknown target '${what}' (native, ts, all)`);
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
