// Per-test scratch space the unprivileged test user owns: writable image
// copies, bind sources, env files. Removed by the caller (t.teardown).

import { execa } from 'execa';
import { lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, image, isRoot, TEST_DIR, testUser, userEnv } from './env.js';

/** A fresh directory under TEST_DIR owned by the test user. */
export async function scratch(t, prefix = 'scratch') {
  const dir = mkdtempSync(join(TEST_DIR, `${prefix}-`));
  if (isRoot) {
    const u = testUser();
    await execa('chown', [`${u.uid}:${u.gid}`, dir]);
  }
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A copy of a test image the test user owns (so -w and edits work). */
export async function imageCopy(t, name = 'busybox') {
  const dir = await scratch(t, `img-${name}`);
  const dst = join(dir, name);
  await execa('cp', ['-a', image(name), dst]);
  if (isRoot) {
    const u = testUser();
    await execa('chown', ['-R', `${u.uid}:${u.gid}`, dst]);
  }
  return dst;
}

/** Write a file as the test user would own it. */
export async function ownedByUser(path) {
  if (!isRoot) return;
  const u = testUser();
  await execa('chown', ['-R', `${u.uid}:${u.gid}`, path]);
}

/** The newest change time under PATH (ms), walking directories. */
export function newest(path) {
  const st = lstatSync(path);
  let t = Math.max(st.ctimeMs, st.mtimeMs);
  if (st.isDirectory()) for (const e of readdirSync(path)) t = Math.max(t, newest(join(path, e)));
  return t;
}

/** Wait until everything under PATHS is over 1 s old: a plan that read younger files is not memoized (memo.ts, "racy git"). */
export async function settled(...paths) {
  const wait = Math.max(...paths.map(newest)) + 1100 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

/** The busybox test image as a SquashFS file the test user made, in a scratch directory (PREFIX); settled. */
export async function userSquash(t, prefix) {
  const file = join(await scratch(t, prefix), 'img.sqfs');
  const argv = [...asUser(), 'mksquashfs', image('busybox'), file, '-noappend', '-quiet', '-no-progress'];
  const made = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(made.exitCode, 0, made.stderr);
  await settled(file);
  return file;
}

/** Wait until the test user's SquashFS listing caches are settled: other tests' launches write them (/var/tmp/$USER.ch). */
export async function listingsSettled() {
  const dir = `/var/tmp/${testUser().name}.ch`;
  await settled(...readdirSync(dir).filter((n) => n.startsWith('list-')).map((n) => join(dir, n)));
}

/** Wait until COND (maybe async) holds, polling; fail after about a minute saying WHAT. */
export async function until(what, cond) {
  for (let i = 0; i < 6000; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Hold a lock named NAME (a file in TEST_DIR, flock(1)) across test files,
 * which ava runs at once: for tests that move a shared thing of the test
 * user's aside (its /var/tmp/$USER.ch), and run in two files (squash.test.js
 * and run-fallback-no-pidfd.test.js, which imports it). Held by a child that
 * lets go when its stdin closes, so a killed test process holds nothing.
 * Returns the release.
 */
export async function holdLock(name) {
  const p = execa('flock', [join(TEST_DIR, `.lock-${name}`), 'sh', '-c', 'echo locked; exec cat'], { reject: false, stdin: 'pipe' });
  await new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => { if (String(d).includes('locked')) resolve(); });
    p.then((r) => reject(new Error(`flock ${name}: ended: ${r.stderr}`)));
  });
  return async () => { p.stdin.end(); await p; };
}
