// Shared test environment: where the staged package and test images live, who
// the unprivileged test user is, and how to run commands as that user.
//
// CI runs as root in a clone an unprivileged user may not be able to reach
// (e.g. under /root, mode 0700). test/setup.js (run by `npm test` before ava)
// therefore stages the built package and the test images in a world-readable
// directory, CH_TEST_DIR, and creates the test user if needed.

import { execa } from 'execa';
import { accessSync, chmodSync, constants as FS, existsSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const uid = process.getuid();

/**
 * Why DIR, a directory in a place every user can write (/var/tmp), can't be
 * trusted, or null: it must be a directory, not a link (never followed there),
 * owned by one of OWNERS and writable by nobody else. Missing: null.
 */
function distrust(dir, owners) {
  let st;
  try { st = lstatSync(dir); } catch (err) { if (err.code === 'ENOENT') return null; throw err; }
  if (st.isSymbolicLink()) return 'is a symbolic link';
  if (!st.isDirectory()) return 'is not a directory';
  if (!owners.includes(st.uid)) return `is owned by uid ${st.uid}`;
  if (st.mode & 0o022) return `is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
  return null;
}

/**
 * Staged package and test images. Default: one per user, named by uid
 * (/var/tmp/ch-toolkit-test.UID), so runs by different users on a shared
 * machine don't collide; checked in prepareTestDirs(). Under /var/tmp because
 * the unprivileged test user must reach it when root runs the suite.
 */
const DEFAULT_TEST_DIR = `/var/tmp/ch-toolkit-test.${uid}`;
export const TEST_DIR = process.env.CH_TEST_DIR ?? DEFAULT_TEST_DIR;

/**
 * Long-lived cache (the debootstrap image), survives between runs. Root (CI)
 * keeps /var/tmp/ch-toolkit-cache. A user reads it only if root or the user
 * made it and nobody else can write it (only root can build the Debian image,
 * so a user's run only reads the cache); otherwise a cache of their own.
 */
const SHARED_CACHE = '/var/tmp/ch-toolkit-cache';
function defaultCache() {
  if (uid === 0) return SHARED_CACHE;
  return existsSync(SHARED_CACHE) && distrust(SHARED_CACHE, [0, uid]) === null ? SHARED_CACHE : `${SHARED_CACHE}.${uid}`;
}
export const CACHE_DIR = process.env.CH_TEST_CACHE ?? defaultCache();

/**
 * Create TEST_DIR (mode 0755, reachable by the test user) and check it and
 * CACHE_DIR before anything is written there. A default directory someone
 * else made first (/var/tmp is everyone's) is refused, never used or removed.
 */
export function prepareTestDirs() {
  const refuse = (what, dir, why, variable) => {
    throw new Error(`${what} ${dir} ${why}: not using it (set ${variable} to a directory of your own)`);
  };
  if (process.env.CH_TEST_DIR) mkdirSync(TEST_DIR, { recursive: true });
  else {
    try { mkdirSync(TEST_DIR, { mode: 0o755 }); } catch (err) { if (err.code !== 'EEXIST') throw err; }
    const why = distrust(TEST_DIR, [uid]);
    if (why) refuse('test directory', TEST_DIR, why, 'CH_TEST_DIR');
  }
  try { chmodSync(TEST_DIR, 0o755); } catch (err) {
    refuse('test directory', TEST_DIR, `can't be made mode 755 (${err.code})`, 'CH_TEST_DIR');
  }
  if (!process.env.CH_TEST_CACHE) {
    if (uid === 0) {
      try { mkdirSync(CACHE_DIR, { mode: 0o755 }); } catch (err) { if (err.code !== 'EEXIST') throw err; }
    }
    const why = distrust(CACHE_DIR, [0, uid]);
    if (why) refuse('test cache', CACHE_DIR, why, 'CH_TEST_CACHE');
  }
}
export const PKG = join(TEST_DIR, 'pkg');
export const BIN = join(PKG, 'bin');
export const IMAGES = join(TEST_DIR, 'img');
export const TEST_USER = process.env.CH_TEST_USER ?? 'chtest';

export const isRoot = process.getuid() === 0;

/** The unprivileged identity tests run ch-run as. */
export function testUser() {
  if (!isRoot) return { name: process.env.USER ?? String(process.getuid()), uid: process.getuid(), gid: process.getgid() };
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === TEST_USER) return { name: f[0], uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new Error(`test user ${TEST_USER} missing: run test/setup.js first (npm test does)`);
}

/** argv prefix that runs a command as the unprivileged test user (nothing if we are one). */
export function asUser(user = testUser()) {
  if (!isRoot) return [];
  return ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--'];
}

/** A clean environment for the test user: no root HOME, no inherited oddities. */
export function userEnv(user = testUser(), extra = {}) {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
    HOME: isRoot ? `/home/${user.name}` : process.env.HOME,
    USER: user.name,
    LANG: 'C.UTF-8',
    // Every launch in the suite runs from its plan memo's rebuild, checked
    // equal to the planned one, and is launched again as a real hit whose
    // command would see the same (CH_RUN_MEMO_VERIFY=replay, native/launcher/memo/;
    // package.json's ava environment sets it); test/memo.test.js tests hits.
    CH_RUN_MEMO_VERIFY: process.env.CH_RUN_MEMO_VERIFY || '1',
    ...extra,
  };
}

/**
 * Run a toolkit command (ch-run, ch-tar2dir, ...) from the staged package.
 * opts.root: run as root instead of the test user; opts.bin: another package's bin/.
 * Never throws on non-zero exit.
 */
export function ch(cmd, args, opts = {}) {
  const { root = false, env = {}, bin = BIN, ...rest } = opts;
  const argv = [...(root ? [] : asUser()), join(bin, cmd), ...args];
  return execa(argv[0], argv.slice(1), {
    reject: false,
    env: root ? { ...process.env, ...env } : userEnv(undefined, env),
    extendEnv: false,
    cwd: '/',
    ...rest,
  });
}

export function image(name) {
  const p = join(IMAGES, name);
  if (!existsSync(p)) throw new Error(`test image ${name} missing (${p}); run test/setup.js`);
  return p;
}

/**
 * A prerequisite (Slurm cluster, built image, ...) is missing. Outside CI
 * that is logged and the test passes vacuously; in CI, which installs every
 * system package the suite needs, it is a failure: a broken setup must not
 * pass as green.
 */
export function unavailable(t, what, reason) {
  if (process.env.CI) t.fail(`${what} unavailable in CI: ${reason}`);
  else { t.log(`${what} unavailable here, not tested: ${reason}`); t.pass(); }
}

/**
 * Declare a test that needs something: with REASON null, TEST(title, fn);
 * otherwise skipped, with the reason in its title, so a run as a non-root
 * user or on a distribution without some tool says what it left out. TOOL:
 * the reason is a missing tool, which in CI (where every tool is installed)
 * fails like unavailable() instead. Pass test.serial for a serial test.
 */
export function needs(test, reason, { tool = false } = {}) {
  return (title, fn) => {
    if (!reason) return test(title, fn);
    if (tool && process.env.CI) return test(title, (t) => { t.fail(`${reason} (in CI every tool and device the suite needs must be there)`); });
    return test.skip(`${title} [skipped: ${reason}]`, fn);
  };
}

/** Why a root-only test can't run here, or null as root. */
export const notRoot = isRoot ? null : 'not root';

/**
 * Why the test user can't mount a .sqfs (ch-run IMAGE.sqfs needs /dev/fuse
 * readable and writable), or null. As root, test/setup.js has made /dev/fuse
 * 0666 for the test user; a user can't, and many machines keep it 0600.
 * Declare such tests with needs(test, noFuse, { tool: true }): skipped, the
 * reason in the title, outside CI; a failure in CI (its setup as root makes
 * /dev/fuse usable, so unusable FUSE there is a broken setup).
 */
export const noFuse = (() => {
  if (isRoot) return null;
  try {
    accessSync('/dev/fuse', FS.R_OK | FS.W_OK);
    return null;
  } catch (err) {
    const why = { EACCES: 'permission denied', ENOENT: 'no such device', EPERM: 'operation not permitted' }[err.code];
    return `FUSE unusable: /dev/fuse: ${why ?? err.message} (${err.code}) for uid ${process.getuid()}; `
      + 'root runs of the suite make it 0666';
  }
})();
