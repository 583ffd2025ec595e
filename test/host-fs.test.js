// ch_host.node (native/host/hostfs.c, wrapped by lib/util/host-fs.ts) makes
// the front end's frequent reads in place of node:fs and node:os (issue #27:
// their first calls cost a launch that plans 1.5-2 ms). Whatever it answers
// must be what node:fs would have: the planner's messages, its decisions and
// the memo's recorded identities depend on it. Each read is made both ways
// on every kind of file, link and failure (test/fixtures/host-fs/compare.mjs),
// as the unprivileged test user (EACCES is real there) and as root where the
// suite runs as root, and node:fs alone must serve where the addon is
// missing or refused.

import test from 'ava';
import { execa, execaSync } from 'execa';
import { chmodSync, chownSync, copyFileSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { asUser, isRoot, needs, notRoot, PKG, TEST_DIR, testUser, userEnv } from './helpers/env.js';

const BASE = join(TEST_DIR, 'host-fs');

/** A directory of every kind of entry, owned by UID. */
function makeTree(dir, uid, gid) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'file'), 'héllo wörld\n');
  writeFileSync(join(dir, 'empty'), '');
  writeFileSync(join(dir, 'big'), randomBytes(3 << 20));   // several reads, and not UTF-8
  writeFileSync(join(dir, 'latin1'), Buffer.from([0x68, 0xe9, 0xff, 0x00, 0x0a]));
  mkdirSync(join(dir, 'dir'));
  writeFileSync(join(dir, 'unreadable'), 'secret\n', { mode: 0o000 });
  writeFileSync(join(dir, 'script'), '#!/bin/sh\n', { mode: 0o755 });
  mkdirSync(join(dir, 'closed'), { mode: 0o000 });
  symlinkSync('file', join(dir, 'link'));
  symlinkSync('dir', join(dir, 'dirlink'));
  symlinkSync('nowhere', join(dir, 'dangling'));
  symlinkSync('loop', join(dir, 'loop'));
  symlinkSync('closed/inside', join(dir, 'through-closed'));
  execaSync('mkfifo', [join(dir, 'fifo')]);
  copyFileSync(join(import.meta.dirname, 'fixtures', 'host-fs', 'compare.mjs'), join(dir, '..', 'compare.mjs'));
  for (const e of ['', 'file', 'empty', 'big', 'latin1', 'dir', 'unreadable', 'script', 'closed', 'fifo']) {
    chownSync(join(dir, e), uid, gid);
  }
  chmodSync(join(dir, 'closed'), 0o000);
}

/** compare.mjs on DIR as USER (null: as we are), with ENV. */
async function compare(dir, user, env = {}) {
  const argv = [...(user ? asUser(user) : []), process.execPath, join(BASE, 'compare.mjs'), PKG, dir];
  const r = await execa(argv[0], argv.slice(1), { reject: false, extendEnv: false, cwd: '/',
    env: user ? userEnv(user, env) : { ...process.env, ...env } });
  if (r.exitCode !== 0) throw new Error(`compare.mjs failed (${r.exitCode}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test.before(() => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true });
  const u = testUser();
  makeTree(join(BASE, 'user'), u.uid, u.gid);
  if (isRoot) makeTree(join(BASE, 'root'), 0, 0);
});

test('as the unprivileged user, ch_host.node answers every read exactly as node:fs and node:os', async (t) => {
  const r = await compare(join(BASE, 'user'), isRoot ? testUser() : null);
  t.is(r.backend, 'ch_host.node');
  t.true(r.checked > 500, `${r.checked} reads compared`);
  t.deepEqual(r.mismatches, []);
});

needs(test, notRoot)('as root too (permissions bypassed, other owners)', async (t) => {
  const r = await compare(join(BASE, 'root'), null);
  t.is(r.backend, 'ch_host.node');
  t.deepEqual(r.mismatches, []);
});

test('CH_HOST_FS=node, or no addon where it should be: node:fs serves, saying why', async (t) => {
  const user = isRoot ? testUser() : null;
  const forced = await compare(join(BASE, 'user'), user, { CH_HOST_FS: 'node' });
  t.is(forced.backend, 'node:fs (CH_HOST_FS=node)');
  t.deepEqual(forced.mismatches, []);
  const missing = await compare(join(BASE, 'user'), user, { CH_TOOLKIT_BUILD_DIR: join(BASE, 'no-build') });
  t.regex(missing.backend, new RegExp(`^node:fs \\(${join(BASE, 'no-build', 'ch_host.node')}: `));
  t.deepEqual(missing.mismatches, []);
});
