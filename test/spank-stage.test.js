// The SPANK plugin's stager (lib/stage/, bin/ch-spank-stage) without Slurm, as
// the test user: tarballs imported once into the cache and reused, the cache
// collected least recently used first beyond its limit, and a cache directory
// that isn't the user's own refused. (test/spank.test.js runs it under Slurm.)

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, BIN, IMAGES, isRoot, needs, TEST_DIR, testUser, userEnv } from './helpers/env.js';

const WORK = join(TEST_DIR, 'spank-stage');
const serial = needs(test.serial, isRoot ? null : 'not root: runs the stager as the test user');
let SIZE = 0;

test.before(async () => {
  if (!isRoot) return;
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  chmodSync(WORK, 0o755);
  await execa('tar', ['-C', IMAGES, '-czf', join(WORK, 'a.tar.gz'), 'busybox']);
  // Distinct files: distinct identities, distinct cache entries.
  for (const n of ['b', 'c', 'd']) copyFileSync(join(WORK, 'a.tar.gz'), join(WORK, `${n}.tar.gz`));
  for (const n of ['a', 'b', 'c', 'd']) chmodSync(join(WORK, `${n}.tar.gz`), 0o644);
  SIZE = Number((await execa('du', ['-sb', '--apparent-size', join(IMAGES, 'busybox')])).stdout.split('\t')[0]);
});

test.after.always(() => { if (isRoot) rmSync(WORK, { recursive: true, force: true }); });

function stage(img, cache, env = {}) {
  const argv = [...asUser(), join(BIN, 'ch-spank-stage'), img];
  return execa(argv[0], argv.slice(1), { reject: false, all: true, cwd: '/', extendEnv: false,
    env: userEnv(testUser(), { CH_SPANK_CACHE: cache, ...env }) });
}

const imported = (r) => /ch-spank\[\d+\]: imported /.test(r.stderr);
const entries = (cache) => readdirSync(cache).filter((e) => e.endsWith('.json')).length;

serial('a tarball is imported once, then reused; a directory is used where it is', async (t) => {
  const cache = join(WORK, 'cache1');
  mkdirSync(cache, { mode: 0o700 });
  await execa('chown', [`${testUser().uid}:${testUser().gid}`, cache]);
  const r1 = await stage(join(WORK, 'a.tar.gz'), cache);
  t.is(r1.exitCode, 0, r1.all);
  t.true(imported(r1));
  const path = r1.stdout.trim();
  t.true(existsSync(join(path, 'bin/sh')), path);
  const r2 = await stage(join(WORK, 'a.tar.gz'), cache);
  t.is(r2.exitCode, 0, r2.all);
  t.false(imported(r2), r2.all);
  t.is(r2.stdout.trim(), path);
  const r3 = await stage(join(IMAGES, 'busybox'), cache);
  t.is(r3.stdout.trim(), join(IMAGES, 'busybox'));
});

serial('beyond CH_SPANK_CACHE_SIZE, the least recently used go first', async (t) => {
  const mine = join(WORK, 'user');
  mkdirSync(mine, { mode: 0o755 });
  await execa('chown', [`${testUser().uid}:${testUser().gid}`, mine]);
  const cache = join(mine, 'cache2');   // made by the stager: mode 0700, the user's
  const env = { CH_SPANK_CACHE_SIZE: String(Math.floor(SIZE * 2.5)), CH_SPANK_CACHE_KEEP: '0' };
  const path = {};
  for (const n of ['a', 'b', 'c']) {
    const r = await stage(join(WORK, `${n}.tar.gz`), cache, env);
    t.is(r.exitCode, 0, r.all);
    path[n] = r.stdout.trim();
    await new Promise((res) => setTimeout(res, 20));
  }
  t.is(statSync(cache).mode & 0o777, 0o700);
  t.is(statSync(cache).uid, testUser().uid);
  // Three images over a limit of two and a half: the oldest, a, went.
  t.false(existsSync(path.a));
  t.true(existsSync(path.b) && existsSync(path.c));
  // b used again (not imported), then d: c is now the least recently used.
  const rb = await stage(join(WORK, 'b.tar.gz'), cache, env);
  t.false(imported(rb));
  await new Promise((res) => setTimeout(res, 20));
  const rd = await stage(join(WORK, 'd.tar.gz'), cache, env);
  t.true(imported(rd));
  t.false(existsSync(path.c));
  t.true(existsSync(path.b) && existsSync(rd.stdout.trim()));
  t.is(entries(cache), 2);
  // Within CH_SPANK_CACHE_KEEP nothing goes, whatever the limit.
  const ra = await stage(join(WORK, 'a.tar.gz'), cache, { ...env, CH_SPANK_CACHE_KEEP: '600' });
  t.true(imported(ra));
  t.is(entries(cache), 3);
});

serial('a cache directory that is not the user\'s own, mode 0700, is refused', async (t) => {
  const theirs = join(WORK, 'cache-root');
  mkdirSync(theirs, { mode: 0o755 });
  chmodSync(theirs, 0o777);
  let r = await stage(join(WORK, 'a.tar.gz'), theirs);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /ch-spank\[\d+\]: error: cache .*cache-root: belongs to root/);
  t.deepEqual(readdirSync(theirs), []);
  const open = join(WORK, 'cache-open');
  mkdirSync(open);
  await execa('chown', [`${testUser().uid}:${testUser().gid}`, open]);
  chmodSync(open, 0o755);
  r = await stage(join(WORK, 'a.tar.gz'), open);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /open to others \(mode 755\); want 0700; set CH_SPANK_CACHE/);
});
