// What ch-run's front end costs at start-up (issue #27, docs/design.md "First
// launch"): a launch that plans loads no Node module beyond what any Node
// script loads (ch_host.node compiles the bundle from its V8 code cache:
// native/host/compile.cc; node:vm only where the addon can't), and makes
// its frequent reads with ch_host.node (lib/util/host-fs.ts; node:os, for
// the user's and the host's names, no longer loads). Each Node module more was measured at 0.25-0.5 ms
// of every such launch (node:module with the ES module loader it pulls in,
// node:url), so one that creeps back in fails here, named.

import test from 'ava';
import { execa } from 'execa';
import { chownSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { asUser, ch, image, PKG, TEST_DIR, testUser, userEnv } from './helpers/env.js';
import { ownedByUser, scratch } from './helpers/fixtures.js';
import { beyondPlain, copyFromPackage, modulesOf as modulesLoaded, writeModuleProbe } from './helpers/modules.js';


const BASE = join(TEST_DIR, 'startup');
const ALLOWED = [];

/** The Node modules a run of SCRIPT ARGS loaded, as the test user, with the launcher's descriptors. */
const modulesOf = (name, script, args, env = {}) =>
  modulesLoaded(BASE, name, script, args, { pre: asUser(), env: userEnv(undefined, env) });

test.before(() => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true });
  chownSync(BASE, testUser().uid, testUser().gid);
  writeModuleProbe(BASE);
});

test('a launch that plans loads no Node module a plain script doesn\'t, starts from the code cache and reads with ch_host.node', async (t) => {
  const plain = await modulesOf('plain', join(BASE, 'plain.cjs'), []);
  t.is(plain.r.exitCode, 0, plain.r.stderr);
  // As the launcher runs it: a memoizable plan (the record too). Quiet: a
  // message written to a pipe (as here) loads Node's streams.
  const fds = { CH_RUN_PLAN_FD: '3', CH_RUN_DONE_FD: '4', CH_RUN_MEMO_FD: '5' };
  const fe = await modulesOf('front-end', join(PKG, 'dist', 'ch-run.cjs'), [image('busybox'), '--', 'true'], fds);
  t.is(fe.r.exitCode, 0, fe.r.stderr);
  t.is(fe.r.stderr, '');
  const vv = await modulesOf('front-end-vv', join(PKG, 'dist', 'ch-run.cjs'), ['-vv', image('busybox'), '--', 'true'], fds);
  t.regex(vv.r.stderr, /code cache: used/);
  t.regex(vv.r.stderr, /host reads: ch_host\.node\n/);
  const more = beyondPlain(fe.loaded, plain.loaded, ALLOWED);
  t.deepEqual(more, [], `loaded at start-up: ${more.join(', ')}`);
  // No copy of a whole Node module per import (esbuild's __toESM): tools/build.js's ch-builtins-once.
  t.notRegex(readFileSync(join(PKG, 'dist', 'ch-run-main.cjs'), 'utf8'), /__toESM\(/);
});

/**
 * The front end run by Node itself on a copy of dist/'s loader and bundles
 * in DIR (the addon the package's, CH_TOOLKIT_BUILD_DIR), with its
 * descriptors: what -vv says of the code cache, and the modules it loaded.
 */
async function frontEndIn(dir, name, env = {}) {
  return modulesLoaded(dir, name, join(dir, 'dist', 'ch-run.cjs'), ['-vv', image('busybox'), '--', 'true'], {
    env: { PATH: process.env.PATH, CH_TOOLKIT_BUILD_DIR: join(PKG, 'build', 'Release'),
      CH_RUN_PLAN_FD: '3', CH_RUN_DONE_FD: '4', ...env } });
}

/** DIR with a copy of the package's loader and front end, its cache CACHE (bytes). */
function packageCopy(dir, cache) {
  rmSync(dir, { recursive: true, force: true });
  copyFromPackage(dir, ['package.json', 'dist/ch-run.cjs', 'dist/ch-run-main.cjs']);
  writeFileSync(join(dir, 'dist', 'ch-run-main.cjs.cache'), cache);
  writeModuleProbe(dir);
}

test('without the addon, the front end compiles with node:vm from the same code cache (issue #27)', async (t) => {
  const dir = join(BASE, 'no-addon');
  packageCopy(dir, readFileSync(join(PKG, 'dist', 'ch-run-main.cjs.cache')));
  const r = await frontEndIn(dir, 'node-fs', { CH_HOST_FS: 'node' });
  t.is(r.r.exitCode, 0, r.r.stderr);
  t.regex(r.r.stderr, /code cache: used\n/);
  t.regex(r.r.stderr, /host reads: node:fs/);
  t.true(r.loaded.has('NativeModule vm'), 'node:vm compiled the bundle');
  const a = await frontEndIn(dir, 'addon');
  t.regex(a.r.stderr, /code cache: used\n/);
  t.false(a.loaded.has('NativeModule vm'), 'the addon compiled the bundle');
});

test('a code cache made for another bundle is not used, one V8 refuses is refused, and the front end plans all the same (issue #27)', async (t) => {
  const cache = readFileSync(join(PKG, 'dist', 'ch-run-main.cjs.cache'));
  const stampEnd = cache.indexOf(10) + 1;
  // Another build's: its stamp names another build id.
  const other = Buffer.from(cache);
  other[stampEnd - 2] = other[stampEnd - 2] === 0x30 ? 0x31 : 0x30;
  // V8's own header (magic, then the V8 version's hash) after the stamp: another V8's.
  const refused = Buffer.from(cache);
  refused[stampEnd + 4] ^= 0xff;
  for (const [name, bytes, status] of [['other', other, 'none'], ['refused', refused, 'rejected by V8']]) {
    for (const env of [{}, { CH_HOST_FS: 'node' }]) {
      const dir = join(BASE, `cache-${name}`);
      packageCopy(dir, bytes);
      const r = await frontEndIn(dir, name, env);
      t.is(r.r.exitCode, 0, r.r.stderr);
      t.regex(r.r.stderr, new RegExp(`code cache: ${status}\n`), `${name} ${JSON.stringify(env)}`);
      t.regex(r.r.stderr, /plan: \d+ mounts/);
    }
  }
});

/** tools/hash-seed.c's work for each seed FIRST..LAST: [seed, steps] pairs. */
async function hashSeedWork(tool, first, last) {
  const r = await execa(tool, [String(first), String(last)]);
  return r.stdout.split('\n').map((l) => l.split(' ').slice(0, 2).map(Number));
}

test('the front end\'s Node keeps its snapshot\'s hash seed, else the one whose secrets cost least, and its code cache is used under those flags (issue #27)', async (t) => {
  const { NODE_FLAGS } = await import(join(PKG, 'dist', 'util', 'protocol.gen.js'));
  const flag = NODE_FLAGS.find((f) => f.startsWith('--hash-seed='));
  t.truthy(flag, 'protocol.json nodeFlags names a hash seed');
  t.true(NODE_FLAGS.includes('--no-rehash-snapshot'), 'the snapshot\'s seed kept');
  const seed = Number(flag.slice('--hash-seed='.length));
  // As the launcher starts it: a Node that notes its arguments.
  const dir = await scratch(t, 'hash-seed');
  const wrapper = join(dir, 'node');
  writeFileSync(wrapper, `#!/bin/sh\nprintf '%s\\n' "$@" > ${dir}/argv\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
  await ownedByUser(dir);
  const r = await ch('ch-run', ['-vv', image('busybox'), '/bin/true', `hash-seed-${process.pid}-${Date.now()}`],
    { env: { CH_RUN_NODE: wrapper } });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /code cache: used\n/);
  t.deepEqual(readFileSync(join(dir, 'argv'), 'utf8').split('\n').slice(0, NODE_FLAGS.length), [...NODE_FLAGS]);
  // The seed is the cheapest the model finds (docs/design.md "The hash seed"):
  // no cheaper than any of the first 300 seeds, under half their mean.
  const tool = join(dir, 'hash-seed');
  await execa('cc', ['-O2', '-o', tool, fileURLToPath(new URL('../tools/hash-seed.c', import.meta.url))]);
  const [[, ours]] = await hashSeedWork(tool, seed, seed);
  const others = (await hashSeedWork(tool, 1, 300)).map(([, steps]) => steps);
  t.true(ours <= Math.min(...others), `seed ${seed}: ${ours} steps; least of 1-300: ${Math.min(...others)}`);
  t.true(ours < others.reduce((a, b) => a + b, 0) / others.length / 2);
});
