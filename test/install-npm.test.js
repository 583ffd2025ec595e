// Installing with npm (issue #27): the `ch-run` npm links is the launcher
// itself, not a script in front of it. npm links a package's bins before
// it runs the package's install script, and skips a bin whose file is
// missing, so the package ships bin/ch-run as a stand-in that says how to
// build (tools/ch-run-unbuilt); the install script (tools/build.js native)
// renames the launcher over it, and npm's link then runs the launcher.
// Packed from a copy of the source tree (so `npm pack`'s prepare/prepack/
// postpack run there, not in the repository), installed as the
// unprivileged user with --prefix from a loopback registry that serves the
// dependencies as the lock file pins them (test/helpers/npm-registry.js).

import test from 'ava';
import { execa } from 'execa';
import { chownSync, cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { asUser, image, TEST_DIR, testUser, userEnv } from './helpers/env.js';
import { startRegistry } from './helpers/npm-registry.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = join(TEST_DIR, 'install-npm');
const SRC = join(BASE, 'src');
const ELF = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

let registry, tgz, packed;

/** npm as the test user, with its own cache, from the loopback registry. */
function npmAsUser(args, opts = {}) {
  const argv = [...asUser(), 'npm', ...args];
  return execa(argv[0], argv.slice(1), { reject: false, all: true, extendEnv: false, cwd: BASE,
    env: userEnv(undefined, { npm_config_registry: registry.url, npm_config_cache: join(BASE, 'npm-cache'),
      npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' }), ...opts });
}

function asTestUser(cmd, env = {}) {
  const argv = [...asUser(), ...cmd];
  return execa(argv[0], argv.slice(1), { reject: false, env: userEnv(undefined, env), extendEnv: false, cwd: '/' });
}

/** A prefix directory the test user owns. */
function userDir(name) {
  const d = join(BASE, name);
  mkdirSync(d, { recursive: true });
  chownSync(d, testUser().uid, testUser().gid);
  return d;
}

test.before(async () => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(SRC, { recursive: true });
  const files = (await execa('git', ['ls-files', '-z'], { cwd: REPO })).stdout.split('\0').filter(Boolean);
  for (const f of files) {
    if (!existsSync(join(REPO, f))) continue;   // removed in the work tree, not yet committed
    mkdirSync(dirname(join(SRC, f)), { recursive: true });
    cpSync(join(REPO, f), join(SRC, f), { verbatimSymlinks: true });
  }
  // What the packer built: its launcher (bin/ch-run) must not end up in the package.
  mkdirSync(join(SRC, 'build', 'Release'), { recursive: true });
  for (const f of ['ch-run', 'ch-run-core', 'ch_tar.node', 'ch_host.node'])
    cpSync(join(REPO, 'build', 'Release', f), join(SRC, 'build', 'Release', f));
  cpSync(join(REPO, 'build', 'Release', 'ch-run'), join(SRC, 'bin', 'ch-run'));
  symlinkSync(join(REPO, 'node_modules'), join(SRC, 'node_modules'));
  packed = await execa('npm', ['pack', '--json', '--pack-destination', BASE], { cwd: SRC, all: true, reject: false });
  if (packed.exitCode === 0) tgz = join(BASE, JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0].filename);
  registry = await startRegistry(REPO);
  mkdirSync(join(BASE, 'npm-cache'));
  chownSync(join(BASE, 'npm-cache'), testUser().uid, testUser().gid);
  await execa('chmod', ['-R', 'a+rX', BASE]);
});

test.after.always(async () => { await registry?.close(); });

test('npm pack ships bin/ch-run as the stand-in, never the packer\'s launcher, and puts the launcher back', async (t) => {
  t.is(packed.exitCode, 0, packed.all);
  const entry = await execa('tar', ['-xzOf', tgz, 'package/bin/ch-run']);
  t.regex(entry.stdout, /^#!\/bin\/sh\n/);
  const mode = await execa('tar', ['-tvzf', tgz, 'package/bin/ch-run']);
  t.regex(mode.stdout, /^-rwxr-xr-x /);
  t.deepEqual(readFileSync(join(SRC, 'bin', 'ch-run')), readFileSync(join(REPO, 'build', 'Release', 'ch-run')));
});

test('npm install -g --prefix, as a user: ch-run is the launcher itself, and runs a container', async (t) => {
  t.truthy(tgz, packed.all);
  const prefix = userDir('prefix');
  const r = await npmAsUser(['install', '-g', '--prefix', prefix, tgz]);
  t.is(r.exitCode, 0, r.all);
  const link = join(prefix, 'bin', 'ch-run');
  t.true(lstatSync(link).isSymbolicLink());
  t.is(readlinkSync(link), '../lib/node_modules/ch-toolkit/bin/ch-run');   // npm's link, the same path as before the build
  const pkg = join(prefix, 'lib', 'node_modules', 'ch-toolkit');
  t.deepEqual(readFileSync(link).subarray(0, 4), ELF, 'the link now leads to the launcher');
  t.deepEqual(readFileSync(link), readFileSync(join(pkg, 'build', 'Release', 'ch-run')));
  t.is(statSync(link).mode & 0o7777, 0o755);
  const c = await asTestUser([link, image('busybox'), '--', 'echo', 'npm-installed']);
  t.is(c.exitCode, 0, c.stderr);
  t.is(c.stdout, 'npm-installed');
  const v = await asTestUser([link, '-vv', image('busybox'), '--', 'true'], { CH_RUN_NO_CACHE: '1' });
  t.regex(v.stderr, /code cache: used/);
  // The same command line again: its plan memoized, run without Node.
  const again = () => asTestUser([link, '-v', image('busybox'), '--', 'echo', 'hit'], { CH_RUN_MEMO_VERIFY: '0' });
  await again();
  const h = await again();
  t.is(h.exitCode, 0, h.stderr);
  t.regex(h.stderr, /plan memo: hit/);
});

test('npm install --ignore-scripts: npm\'s ch-run is the stand-in, which says how to build (exit 31); npm rebuild as it says makes it the launcher', async (t) => {
  t.truthy(tgz, packed.all);
  const prefix = userDir('prefix-noscripts');
  const r = await npmAsUser(['install', '-g', '--ignore-scripts', '--prefix', prefix, tgz]);
  t.is(r.exitCode, 0, r.all);
  const pkg = join(prefix, 'lib', 'node_modules', 'ch-toolkit');
  const c = await asTestUser([join(prefix, 'bin', 'ch-run'), image('busybox'), '--', 'true']);
  t.is(c.exitCode, 31);
  t.regex(c.stderr, /^ch-run\[\d+\]: error: ch-toolkit's native part is not built \(npm did not run its install script\); build it with: node (\S+)\/tools\/build\.js native/);
  t.true(c.stderr.includes(`node ${realpathSync(pkg)}/tools/build.js native`), c.stderr);
  t.true(c.stderr.includes('(or: npm rebuild ch-toolkit, with -g if installed with -g)'), c.stderr);
  // Doing as it says: the same link now runs the launcher.
  const rebuilt = await npmAsUser(['rebuild', '-g', '--prefix', prefix, 'ch-toolkit']);
  t.is(rebuilt.exitCode, 0, rebuilt.all);
  t.deepEqual(readFileSync(join(prefix, 'bin', 'ch-run')).subarray(0, 4), ELF);
  const after = await asTestUser([join(prefix, 'bin', 'ch-run'), image('busybox'), '--', 'echo', 'rebuilt']);
  t.is(after.exitCode, 0, after.stderr);
  t.is(after.stdout, 'rebuilt');
});

test('npm link (a source tree): ch-run leads to the tree\'s bin/ch-run, the launcher', async (t) => {
  t.truthy(tgz, packed.all);
  // As root (the tree is root's); scripts off: the tree is built already.
  const prefix = join(BASE, 'prefix-link');
  // (npm link takes --prefix as the tree's own; the variable sets the global one.)
  const r = await execa('npm', ['link', '--ignore-scripts'], { cwd: SRC, reject: false, all: true,
    env: { ...process.env, npm_config_prefix: prefix, npm_config_registry: registry.url, npm_config_audit: 'false',
      npm_config_fund: 'false' } });
  t.is(r.exitCode, 0, r.all);
  const link = join(prefix, 'bin', 'ch-run');
  t.is(realpathSync(link), join(SRC, 'bin', 'ch-run'));
  t.deepEqual(readFileSync(link).subarray(0, 4), ELF);
  await execa('chmod', ['-R', 'a+rX', prefix]);
  const c = await asTestUser([link, image('busybox'), '--', 'echo', 'linked']);
  t.is(c.exitCode, 0, c.stderr);
  t.is(c.stdout, 'linked');
});
