// `make clean && make install PREFIX=... DESTDIR=...` from a copy of the
// source tree: everything is rebuilt (and only what changed, the next time),
// and the installed commands work,
// without node_modules, as the unprivileged user, from wherever the tree is
// moved to (everything is found relative to the installed files).

import test from 'ava';
import { execa } from 'execa';
import { cpSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, utimesSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { asUser, image, TEST_DIR, userEnv } from './helpers/env.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = join(TEST_DIR, 'install');
const SRC = join(BASE, 'src');
const PREFIX = '/opt/ch-toolkit-test';

function asTestUser(cmd, opts = {}) {
  const argv = [...asUser(), ...cmd];
  return execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/', ...opts });
}

let made, again, changed;

test.before(async () => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(SRC, { recursive: true });
  const files = (await execa('git', ['ls-files', '-z'], { cwd: REPO })).stdout.split('\0').filter(Boolean);
  for (const f of files) {
    mkdirSync(dirname(join(SRC, f)), { recursive: true });
    cpSync(join(REPO, f), join(SRC, f), { verbatimSymlinks: true });
  }
  // The repository's dependencies, shared: make must not reinstall them (npm ci
  // through this link would empty the repository's node_modules), so the
  // copied lock file is made older than their install stamp, and checked.
  symlinkSync(join(REPO, 'node_modules'), join(SRC, 'node_modules'));
  utimesSync(join(SRC, 'package-lock.json'), 0, 0);
  const fresh = await execa('make', ['-q', 'node_modules/.package-lock.json'], { cwd: SRC, reject: false });
  if (fresh.exitCode !== 0) throw new Error('make would reinstall node_modules through the link: not running it');
  await execa('make', ['clean'], { cwd: SRC });
  const install = ['install', `PREFIX=${PREFIX}`, `DESTDIR=${join(BASE, 'dest')}`];
  made = await execa('make', install, { cwd: SRC, reject: false, all: true });
  if (made.exitCode === 0) {
    // Again: nothing to build. Then a changed TypeScript source: only that half is built again (make -n: said, not done).
    const bundle = statSync(join(SRC, 'dist', 'ch-run-main.cjs')).mtimeMs;
    again = await execa('make', install, { cwd: SRC, reject: false, all: true });
    again.rebuilt = statSync(join(SRC, 'dist', 'ch-run-main.cjs')).mtimeMs !== bundle;
    const later = Date.now() / 1000 + 5;
    utimesSync(join(SRC, 'lib', 'run', 'main.ts'), later, later);
    changed = await execa('make', ['-n', ...install], { cwd: SRC, reject: false, all: true });
  }
  // Somewhere else entirely, to show nothing points back at the build tree.
  if (made.exitCode === 0) {
    renameSync(join(BASE, 'dest', PREFIX.slice(1)), join(BASE, 'moved'));
    rmSync(SRC, { recursive: true, force: true });
  }
  await execa('chmod', ['-R', 'a+rX', BASE]);
});

test('make clean && make install builds and installs every command, man pages, no node_modules', (t) => {
  t.is(made.exitCode, 0, made.all);
  const bin = join(BASE, 'moved', 'bin');
  t.deepEqual(readdirSync(bin).sort(),
    ['ch-build', 'ch-builder2tar', 'ch-convert', 'ch-docker2tar', 'ch-fromhost', 'ch-image', 'ch-pull', 'ch-run', 'ch-tar2dir']);
  t.deepEqual(readdirSync(join(BASE, 'moved', 'share', 'man', 'man1')).sort(),
    ['ch-build.1', 'ch-builder2tar.1', 'ch-convert.1', 'ch-docker2tar.1', 'ch-fromhost.1', 'ch-image.1', 'ch-pull.1', 'ch-run.1', 'ch-tar2dir.1']);
  t.false(existsSync(join(BASE, 'moved', 'lib', 'ch-toolkit', 'node_modules')));
});

test('a second make install builds nothing; a changed source, only its half', (t) => {
  t.is(made.exitCode, 0, made.all);
  t.is(again.exitCode, 0, again.all);
  t.notRegex(again.all, /tools\/build\.js/, again.all);
  t.false(again.rebuilt, 'dist/ untouched');
  t.regex(again.all, /install -m 0755 build\/Release\/ch-run /, 'installed again all the same');
  t.is(changed.exitCode, 0, changed.all);
  t.regex(changed.all, /tools\/build\.js ts/);
  t.notRegex(changed.all, /tools\/build\.js native/);
});

test('the installed ch-run runs a container, as the user, after the tree moved', async (t) => {
  const r = await asTestUser([join(BASE, 'moved', 'bin', 'ch-run'), image('busybox'), '--', 'echo', 'installed']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'installed');
  // Its front end starts from the V8 code cache the build made (tools/ch-run-loader.cjs).
  const v = await asTestUser([join(BASE, 'moved', 'bin', 'ch-run'), '-vv', image('busybox'), '--', 'true'],
    { env: { ...userEnv(), CH_RUN_NO_CACHE: '1' } });
  t.regex(v.stderr, /code cache: used/);
});

test('the installed Node commands start', async (t) => {
  for (const c of ['ch-tar2dir', 'ch-build', 'ch-builder2tar', 'ch-docker2tar', 'ch-fromhost', 'ch-pull', 'ch-convert', 'ch-image']) {
    const r = await asTestUser([join(BASE, 'moved', 'bin', c), '--version']);
    t.is(r.exitCode, 0, `${c}: ${r.stderr}`);
    t.regex(r.stdout, /^\d+\.\d+\.\d+$/, c);
  }
});
