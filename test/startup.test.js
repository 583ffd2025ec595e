// What ch-run's front end costs at start-up (issue #27, docs/design.md "First
// launch"): a launch that plans loads, beyond what any Node script loads,
// only node:vm (the code cache), and starts from its V8 code cache, making
// its frequent reads with ch_host.node (lib/util/host-fs.ts; node:os, for
// the user's and the host's names, no longer loads). Each Node module more was measured at 0.25-0.5 ms
// of every such launch (node:module with the ES module loader it pulls in,
// node:url), so one that creeps back in fails here, named.

import test from 'ava';
import { chownSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, image, PKG, TEST_DIR, testUser, userEnv } from './helpers/env.js';
import { beyondPlain, modulesOf as modulesLoaded, writeModuleProbe } from './helpers/modules.js';


const BASE = join(TEST_DIR, 'startup');
const ALLOWED = ['NativeModule vm'];

/** The Node modules a run of SCRIPT ARGS loaded, as the test user, with the launcher's descriptors. */
const modulesOf = (name, script, args, env = {}) =>
  modulesLoaded(BASE, name, script, args, { pre: asUser(), env: userEnv(undefined, env) });

test.before(() => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true });
  chownSync(BASE, testUser().uid, testUser().gid);
  writeModuleProbe(BASE);
});

test('a launch that plans loads no Node module beyond node:vm, starts from the code cache and reads with ch_host.node', async (t) => {
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
