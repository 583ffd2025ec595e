// Shared test environment: where the staged package and test images live, who
// the unprivileged test user is, and how to run commands as that user.
//
// CI runs as root in a clone an unprivileged user may not be able to reach
// (e.g. under /root, mode 0700). test/setup.js (run by `npm test` before ava)
// therefore stages the built package and the test images in a world-readable
// directory, CH_TEST_DIR, and creates the test user if needed.

import { execa } from 'execa';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const TEST_DIR = process.env.CH_TEST_DIR ?? '/var/tmp/ch-toolkit-test';
/** Long-lived cache (the debootstrap image), survives between runs. */
export const CACHE_DIR = process.env.CH_TEST_CACHE ?? '/var/tmp/ch-toolkit-cache';
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
    // command would see the same (CH_RUN_MEMO_VERIFY=replay, addon/memo.c;
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
    if (tool && process.env.CI) return test(title, (t) => { t.fail(`${reason} (in CI every tool must be there)`); });
    return test.skip(`${title} [skipped: ${reason}]`, fn);
  };
}

/** Why a root-only test can't run here, or null as root. */
export const notRoot = isRoot ? null : 'not root';
