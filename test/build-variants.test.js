// The build on a machine without ISA-L/liblzma/libzstd/zlib headers and without a
// static libc (RHEL-family clusters): built here for real, with
// CH_TOOLKIT_WITHOUT pretending those absent (tools/probe.js), into a copy of
// the package. Then: the addon links none of the libraries, ch-run and its
// core are dynamic executables that still launch a container, and every
// compression still unpacks, through the gzip/xz/zstd programs as GNU tar
// does; a missing program or a truncated stream is a clear error. And the
// build with zlib but no ISA-L: its gzip decoder (gzip.cc) and the gzip
// program treat every gzip case (test/helpers/gzip-cases.js) as ISA-L's does.

import test from 'ava';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { chownSync, cpSync, linkSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { asUser, image, TEST_DIR, testUser, userEnv } from './helpers/env.js';
import { gzipCases } from './helpers/gzip-cases.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = join(TEST_DIR, 'build-variants');
const PKG = join(BASE, 'pkg');
const RELEASE = join(PKG, 'build', 'Release');
const PKG_ZLIB = join(BASE, 'pkg-zlib');
let n = 0;

test.before(async () => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(PKG, { recursive: true });
  for (const [pkg, without] of [[PKG, 'isal,zlib,lzma,zstd,static-libc'], [PKG_ZLIB, 'isal']]) {
    for (const p of ['package.json', 'binding.gyp', 'protocol.json', 'native', 'tools', 'bin', 'dist'])
      cpSync(join(REPO, p), join(pkg, p), { recursive: true, verbatimSymlinks: true });
    symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'));
    await execa('node', ['tools/build.js', 'native'], { cwd: pkg, env: { CH_TOOLKIT_WITHOUT: without } });
  }
  // A tarball tree to pack, and a PATH with Node but no decompressors.
  const src = join(BASE, 'src', 'img');
  mkdirSync(join(src, 'd'), { recursive: true });
  writeFileSync(join(src, 'd', 'f'), 'hello\n'.repeat(1000));
  mkdirSync(join(BASE, 'nopath'));
  symlinkSync(process.execPath, join(BASE, 'nopath', 'node'));
  await execa('chmod', ['-R', 'a+rX', BASE]);
});

test('the addon links no compression library; ch-run and its core are dynamic', async (t) => {
  const addon = (await execa('ldd', [join(RELEASE, 'ch_tar.node')])).stdout;
  t.notRegex(addon, /libz\.so|libisal|liblzma|libzstd/);
  for (const exe of ['ch-run', 'ch-run-core']) {
    const r = await execa('ldd', [join(RELEASE, exe)], { reject: false });
    t.regex(r.stdout, /libc\.so/, `${exe} is dynamically linked`);
  }
});

test('the dynamic ch-run launches a container', async (t) => {
  const argv = [...asUser(), join(RELEASE, 'ch-run'), image('busybox'), '--', 'echo', 'dynamic'];
  const r = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'dynamic');
});

async function tar2dir(tarball, { path } = {}) {
  const d = join(BASE, `dest${n++}`);
  mkdirSync(d);
  const u = testUser();
  chownSync(d, u.uid, u.gid);
  // PATH set by env(1) last: setpriv itself is found on the usual one.
  const argv = [...asUser(), 'env', ...(path ? [`PATH=${path}`] : []), join(PKG, 'bin', 'ch-tar2dir'), tarball, d];
  const env = userEnv(undefined, { CH_TOOLKIT_BUILD_DIR: RELEASE });
  const r = await execa(argv[0], argv.slice(1), { reject: false, env, extendEnv: false, cwd: '/' });
  return { r, d };
}

for (const [ext, flag] of [['tar.gz', '-z'], ['tar.xz', '-J'], ['tar.zst', '--zstd']]) {
  test(`.${ext} unpacks through the program`, async (t) => {
    const tb = join(BASE, `img-${n++}.${ext}`);
    await execa('tar', ['-C', join(BASE, 'src'), flag, '-cf', tb, 'img']);
    const { r, d } = await tar2dir(tb);
    t.is(r.exitCode, 0, r.stderr);
    const name = readdirSync(d)[0];
    t.is(readFileSync(join(d, name, 'd', 'f'), 'utf8'), 'hello\n'.repeat(1000));
  });
}

test('gzip cases: the zlib build and the gzip program decode as ISA-L does', async (t) => {
  const zlibAddon = join(PKG_ZLIB, 'build', 'Release', 'ch_tar.node');
  t.regex((await execa('ldd', [zlibAddon])).stdout, /libz\.so/);
  t.notRegex((await execa('ldd', [zlibAddon])).stdout, /libisal/);
  const src = join(BASE, 'gz-src');
  mkdirSync(join(src, 'g'), { recursive: true });
  writeFileSync(join(src, 'g', 'random'), randomBytes(3 << 20));
  writeFileSync(join(src, 'g', 'text'), 'line of text\n'.repeat(100000));
  const tar = (await execa('tar', ['-C', src, '-cf', '-', 'g'], { encoding: 'buffer' })).stdout;
  const require = createRequire(import.meta.url);
  const addons = { zlib: require(zlibAddon), program: require(join(RELEASE, 'ch_tar.node')) };
  for (const [name, buf, want] of gzipCases(tar)) {
    const tb = join(BASE, `gz-${name}.tar.gz`);
    writeFileSync(tb, buf);
    for (const [which, a] of Object.entries(addons)) {
      const d = join(BASE, `dest${n++}`);
      mkdirSync(d);
      const r = await a.extract(tb, d, { openat2: true, umask: 0o022, progress: new ArrayBuffer(16) });
      if (want === 'ok') {
        t.is(r.error, undefined, `${which} ${name}`);
        t.is(readFileSync(join(d, 'g', 'text'), 'utf8'), 'line of text\n'.repeat(100000), `${which} ${name}`);
      } else {
        t.regex(r.error ?? 'no error', want, `${which} ${name}`);
      }
    }
  }
});

test('.tar.xz truncated: a clear error, nothing left', async (t) => {
  const tb = join(BASE, `trunc-${n++}.tar.xz`);
  await execa('tar', ['-C', join(BASE, 'src'), '-J', '-cf', tb, 'img']);
  const whole = readFileSync(tb);
  writeFileSync(tb, whole.subarray(0, whole.length - 40));
  const { r, d } = await tar2dir(tb);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /ch-tar2dir\[\d+\]: error: .*corrupt or truncated compressed data: 'xz -dc' exited with status 1/);
  t.deepEqual(readdirSync(d), []);
});

test('.tar.zst without the zstd program: the error says what to install', async (t) => {
  const tb = join(BASE, `nozstd-${n++}.tar.zst`);
  await execa('tar', ['-C', join(BASE, 'src'), '--zstd', '-cf', tb, 'img']);
  const { r, d } = await tar2dir(tb, { path: join(BASE, 'nopath') });
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /zstd data: this build of ch-toolkit has no libzstd, and the zstd program is not on PATH: install zstd, or install libzstd's headers/);
  t.deepEqual(readdirSync(d), []);
});

test('without the native part (npm skipped the install script), commands say how to build it', async (t) => {
  const bare = join(BASE, 'bare');
  mkdirSync(join(bare, 'tools'), { recursive: true });
  for (const p of ['package.json', 'bin', 'dist']) cpSync(join(PKG, p), join(bare, p), { recursive: true, verbatimSymlinks: true });
  // bin/ch-run as npm's package ships it, before the install script makes it the launcher.
  cpSync(join(REPO, 'tools', 'ch-run-unbuilt'), join(bare, 'bin', 'ch-run'));
  await execa('tar', ['-C', join(BASE, 'src'), '-cf', join(bare, 't.tar'), 'img']);
  const dest = join(BASE, `dest${n++}`);
  mkdirSync(dest);
  chownSync(dest, testUser().uid, testUser().gid);
  const run = (cmd) => {
    const argv = [...asUser(), ...cmd];
    return execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  };
  const how = `build it with: node ${bare}/tools/build.js native`;
  await execa('chmod', ['-R', 'a+rX', bare]);
  const x = await run([join(bare, 'bin', 'ch-tar2dir'), join(bare, 't.tar'), dest]);
  t.is(x.exitCode, 1);
  t.true(x.stderr.includes(how), x.stderr);
  const r = await run([join(bare, 'bin', 'ch-run'), image('busybox'), '--', 'true']);
  t.is(r.exitCode, 31);
  t.true(r.stderr.includes(how), r.stderr);
});

test("Node's headers: npm_config_nodedir, else the running Node's own prefix, else none (node-gyp downloads)", async (t) => {
  // Two Node installs elsewhere (as nvm or volta make them): one with headers, one without.
  const real = realpathSync(process.execPath);
  const prefixes = { withHeaders: join(BASE, 'node-a'), without: join(BASE, 'node-b') };
  for (const p of Object.values(prefixes)) {
    mkdirSync(join(p, 'bin'), { recursive: true });
    try { linkSync(real, join(p, 'bin', 'node')); } catch { cpSync(real, join(p, 'bin', 'node')); }
  }
  mkdirSync(join(prefixes.withHeaders, 'include'));
  symlinkSync(join(dirname(dirname(real)), 'include', 'node'), join(prefixes.withHeaders, 'include', 'node'));
  const nodeDir = async (node, env = {}) => (await execa(node, ['-e',
    `import(${JSON.stringify(join(REPO, 'tools', 'build.js'))}).then((m) => console.log(String(m.nodeDir())))`],
  { env: { PATH: '/usr/bin:/bin', ...env }, extendEnv: false })).stdout;
  t.is(await nodeDir(join(prefixes.withHeaders, 'bin', 'node')), prefixes.withHeaders);
  t.is(await nodeDir(join(prefixes.without, 'bin', 'node')), 'null');
  t.is(await nodeDir(join(prefixes.withHeaders, 'bin', 'node'), { npm_config_nodedir: '/site/node' }), '/site/node');
});
