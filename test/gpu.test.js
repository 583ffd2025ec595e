// ch-run --gpu / --ib and ch-fromhost, without GPU or InfiniBand hardware:
// the driver is stood in for by real artifacts built here (a libcuda.so.1
// exporting cuInit/cuDeviceGetCount, a libibverbs.so.1 with a provider that
// the loader must find by name), registered in a loader cache made for the
// test (CH_GPU_LDCACHE), with device nodes under a fixture device root
// (CH_GPU_DEVROOT). The programs run in the Debian image and dlopen() by
// name with no LD_LIBRARY_PATH: what an unmodified CUDA or verbs program does.

import test from 'ava';
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync,
  writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, IMAGES, PKG, TEST_DIR, testUser, unavailable } from './helpers/env.js';
import { buildGpuFixture, fxEnv as fixtureEnv, hostDeviceFamily, LDCONFIG } from './fixtures/gpu/fixture.js';
import { beyondPlain, copyFromPackage, modulesOf, writeModuleProbe } from './helpers/modules.js';

const FX = join(TEST_DIR, 'gpu-fixture');
const DEBIAN = join(IMAGES, 'debian');
const haveDebian = existsSync(DEBIAN);
// In CI the Debian image must exist (the tests then fail loudly if it doesn't).
const dtest = haveDebian || process.env.CI ? test : test.skip;
const dserial = haveDebian || process.env.CI ? test.serial : test.skip;

const fxEnv = (extra = {}) => fixtureEnv(FX, extra);
const progBind = () => ['-b', `${join(FX, 'prog')}:/mnt`];

/** A digest of an image tree: names, types, modes, owners, link targets, contents. */
function treeDigest(root) {
  const h = createHash('sha256');
  const walk = (rel) => {
    const p = join(root, rel);
    const st = lstatSync(p);
    h.update(`${rel}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.mtimeMs}\0`);
    if (st.isSymbolicLink()) h.update(readlinkSync(p));
    else if (st.isFile()) h.update(readFileSync(p));
    else if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(rel, e));
  };
  walk('.');
  return h.digest('hex');
}

test.before(() => buildGpuFixture(FX));

dtest('--gpu: unmodified program dlopens libcuda.so.1 with no LD_LIBRARY_PATH; image unchanged', async (t) => {
  const before = treeDigest(DEBIAN);
  const r = await ch('ch-run', ['--gpu', ...progBind(), DEBIAN, '--', 'sh', '-c',
    '/mnt/dlcuda; echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH-unset}"'], { env: fxEnv() });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^cuda devices: 3$/m);
  t.regex(r.stdout, /^LD_LIBRARY_PATH=unset$/m);
  // The same without --gpu: the library is not there.
  const no = await ch('ch-run', [...progBind(), DEBIAN, '--', '/mnt/dlcuda'], { env: fxEnv() });
  t.is(no.exitCode, 2);
  t.regex(no.stderr, /libcuda\.so\.1: cannot open shared object file/);
  t.is(treeDigest(DEBIAN), before, 'image changed');
});

dtest('--gpu=nvidia: CUDA_VISIBLE_DEVICES picks device nodes, renumbered inside', async (t) => {
  const r = await ch('ch-run', ['--gpu=nvidia', DEBIAN, '--', 'sh', '-c',
    'ls /dev | grep nvidia | sort | tr "\\n" " "; echo; ls /dev/nvidia-caps; cat /dev/nvidia2; '
    + 'echo "CVD=$CUDA_VISIBLE_DEVICES"; test -c /dev/null && echo null-ok; ls -d /dev/pts /dev/shm'],
  { env: fxEnv({ CUDA_VISIBLE_DEVICES: '2,0' }) });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^nvidia-caps nvidia-uvm nvidia0 nvidia2 nvidiactl $/m);
  t.regex(r.stdout, /^nvidia-cap1$/m);
  t.regex(r.stdout, /^fake nvidia2$/m);
  t.regex(r.stdout, /^CVD=0,1$/m);
  t.regex(r.stdout, /^null-ok$/m);          // the rest of the host's /dev is still there
  t.regex(r.stdout, /\/dev\/pts\n\/dev\/shm/);
  const none = await ch('ch-run', ['--gpu=nvidia', DEBIAN, '--', 'sh', '-c', 'ls /dev | grep -c "^nvidia[0-9]" || true'],
    { env: fxEnv({ NVIDIA_VISIBLE_DEVICES: 'none' }) });
  t.is(none.exitCode, 0, none.stderr);
  t.is(none.stdout.trim(), '0');
});

dtest('--gpu with the host\'s /dev: every node chosen, /dev stays the host\'s; some hidden, /dev is rebuilt without them (issue #27)', async (t) => {
  // Rebuilding /dev took a bind per host entry (145 here): ~4 ms of a first
  // --gpu launch, ~2 of every memoized one, for nothing where no node is hidden.
  const conf = join(TEST_DIR, `gpu-host-dev-${process.pid}.conf`);
  const fam = hostDeviceFamily(FX, conf);   // nodes from /dev itself
  if (fam === null) return unavailable(t, 'the host /dev case', 'no family of numbered device nodes (name0, name1) in this host\'s /dev');
  const list = `ls /dev | grep -E "^${fam.name}[0-9]+$" | sort -V | tr "\\n" " "; echo; echo "CVD=$CUDA_VISIBLE_DEVICES"; test -c /dev/null && echo null-ok`;
  const launch = (extra) => ch('ch-run', ['-v', '--gpu=nvidia', DEBIAN, '--', 'sh', '-c', list], { env: { ...fam.env, ...extra } });
  try {
    for (const extra of [{}, { CUDA_VISIBLE_DEVICES: fam.members.map((_, i) => i).join(',') }]) {
      const r = await launch(extra);
      t.is(r.exitCode, 0, r.stderr);
      t.notRegex(r.stderr, /tmpfs \/dev\n/, `nothing hidden (${JSON.stringify(extra)}): no /dev of ours`);
      t.regex(r.stderr, /every host device node of nvidia is chosen: \/dev as without --gpu/);
      t.regex(r.stdout, new RegExp(`^${fam.members.join(' ')} $`, 'm'));
      t.regex(r.stdout, /^null-ok$/m);
    }
    const one = await launch({ CUDA_VISIBLE_DEVICES: '1' });
    t.is(one.exitCode, 0, one.stderr);
    t.regex(one.stderr, /tmpfs \/dev\n/);
    t.regex(one.stdout, new RegExp(`^${fam.name}1 \nCVD=0$`, 'm'));
    t.regex(one.stdout, /^null-ok$/m);
  } finally {
    rmSync(conf, { force: true });
  }
});

dtest('--gpu: the devices bundle runs from the code cache the build made for it (issue #27)', async (t) => {
  // Loading dist/ch-run-devices.cjs compiled 316 KB at every first --gpu launch (7.2-7.9 ms).
  const r = await ch('ch-run', ['-vv', '--gpu', DEBIAN, '--', 'true'], { env: fxEnv() });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /code cache: used\n/);
  t.regex(r.stderr, /code cache \(ch-run-devices\.cjs\): used\n/);
});

test('the build\'s devices cache holds what an injection runs, not only the bundle\'s top level (issue #27)', async (t) => {
  // tools/build.js plans with --gpu over stand-in drivers; a cache made
  // after the top level alone (its fallback) is what a plain plan leaves.
  // The bundles alone, without their caches: loaded from one, V8 would
  // write out all it holds again.
  const { NODE_FLAGS } = await import(join(PKG, 'dist', 'util', 'protocol.gen.js'));
  const dir = join(TEST_DIR, `devices-top-level-${process.pid}`), out = join(dir, 'caches');
  copyFromPackage(dir, ['package.json', 'dist/ch-run.cjs', 'dist/ch-run-main.cjs', 'dist/ch-run-devices.cjs']);
  mkdirSync(out);
  const r = await execa(process.execPath, [...NODE_FLAGS, join(dir, 'dist', 'ch-run.cjs'), IMAGES + '/busybox', '--', 'true'], {
    env: { PATH: process.env.PATH, CH_RUN_CODE_CACHE_DIR: out, CH_RUN_CODE_CACHE_PRELOAD: 'ch-run-devices.cjs',
      CH_TOOLKIT_BUILD_DIR: join(PKG, 'build', 'Release'),
      CH_RUN_PLAN_FD: '3', CH_RUN_DONE_FD: '4', CH_RUN_MEMO_FD: '5' },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'], reject: false });
  try {
    t.is(r.exitCode, 0, r.stderr);
    const topLevel = readFileSync(join(out, 'ch-run-devices.cjs.cache')).length;
    const built = readFileSync(join(PKG, 'dist', 'ch-run-devices.cjs.cache')).length;
    t.true(built > 1.5 * topLevel, `the build's cache: ${built} bytes; after the top level alone: ${topLevel}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

dtest('a --gpu launch that plans loads no Node module a plain script doesn\'t (issue #27)', async (t) => {
  // node:module, and the ES module loader it brings, was ~1.3 ms of every
  // first --gpu launch (tools/build.js ch-builtins-once, test/startup.test.js).
  const dir = join(TEST_DIR, `gpu-modules-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  writeModuleProbe(dir);
  const env = { PATH: process.env.PATH };
  try {
    const plain = await modulesOf(dir, 'plain', join(dir, 'plain.cjs'), [], { env });
    t.is(plain.r.exitCode, 0, plain.r.stderr);
    const gpu = await modulesOf(dir, 'gpu', join(PKG, 'dist', 'ch-run.cjs'), ['--gpu', DEBIAN, '--', 'true'],
      { env: { ...env, ...fxEnv({ CH_RUN_PLAN_FD: '3', CH_RUN_DONE_FD: '4', CH_RUN_MEMO_FD: '5' }) } });
    t.is(gpu.r.exitCode, 0, gpu.r.stderr);
    // Not node:vm either: ch_host.node compiles the bundles (native/host/compile.cc).
    const more = beyondPlain(gpu.loaded, plain.loaded, []);
    t.deepEqual(more, [], `loaded: ${more.join(', ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

dtest('--gpu: tools on PATH; -v lists what was injected', async (t) => {
  const r = await ch('ch-run', ['-v', '--gpu', DEBIAN, '--', 'sh', '-c',
    'command -v nvidia-smi; nvidia-smi; echo "VK=$VK_ICD_FILENAMES"; cat "$VK_ICD_FILENAMES"'],
  { env: fxEnv({ CUDA_VISIBLE_DEVICES: '1', CH_GPU_HOSTROOT: join(FX, 'host') }) });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^VK=\/run\/ch-toolkit\/etc\/nvidia-icd\.d-nvidia_icd\.json$/m);
  t.regex(r.stdout, /libGLX_nvidia\.so\.0/);
  t.regex(r.stdout, /^\/run\/ch-toolkit\/bin\/nvidia-smi$/m);
  t.regex(r.stdout, /^NVIDIA-SMI stand-in: 1 GPUs$/m);
  t.regex(r.stderr, /inject library .*\/lib\/libcuda\.so\.1 -> \/run\/ch-toolkit\/lib\/libcuda\.so\.1/);
  t.regex(r.stderr, /inject device .*\/dev\/nvidia1 -> \/dev\/nvidia1/);
  t.regex(r.stderr, /nvidia0 hidden by CUDA_VISIBLE_DEVICES/);
  t.regex(r.stderr, /inject executable .*nvidia-smi -> \/run\/ch-toolkit\/bin\/nvidia-smi/);
  t.regex(r.stderr, /inject \/etc\/ld\.so\.cache: image's \d+ entries \+ 1 injected/);
});

dtest('--gpu: injected files are read-only for real, even to fake root', async (t) => {
  const r = await ch('ch-run', ['-u', '0', '--gpu', DEBIAN, '--', 'sh', '-c',
    'for f in /run/ch-toolkit/lib/libcuda.so.1 /etc/ld.so.cache /run/ch-toolkit/bin/nvidia-smi; do '
    + '  (echo x >> $f) 2>/dev/null && echo "WROTE $f"; '
    + '  umount $f 2>/dev/null && echo "UNMOUNTED $f"; '
    + '  mount -o remount,rw,bind $f 2>/dev/null && echo "REMOUNTED $f"; '
    + 'done; grep -E " /(run/ch-toolkit/lib/libcuda.so.1|etc/ld.so.cache) " /proc/self/mountinfo'],
  { env: fxEnv() });
  t.is(r.exitCode, 0, r.stderr);
  t.notRegex(r.stdout, /WROTE|UNMOUNTED|REMOUNTED/);
  const lines = r.stdout.trim().split('\n');
  t.is(lines.length, 2, r.stdout);
  for (const l of lines) t.regex(l.split(' ')[5], /^ro(,|$)/);
});

dtest('--gpu: clear error when nothing is found, saying what was searched', async (t) => {
  const empty = join(FX, 'empty');
  mkdirSync(empty, { recursive: true });
  chmodSync(empty, 0o755);
  const env = { CH_GPU_DEVROOT: empty, CH_GPU_LDCACHE: '/etc/ld.so.cache', CH_GPU_PATH: empty };
  const r = await ch('ch-run', ['--gpu=nvidia', DEBIAN, '--', 'true'], { env });
  t.is(r.exitCode, 31);
  // One plain error line, not an "internal error" with a stack (the device
  // code is a separate bundle with its own copy of ChError).
  t.regex(r.stderr, /^ch-run\[\d+\]: error: --gpu=nvidia: no GPU found; searched:/);
  t.notRegex(r.stderr, /internal error|    at /);
  t.regex(r.stderr, /loader cache \/etc\/ld\.so\.cache \(as ldconfig -p\)/);
  t.regex(r.stderr, new RegExp(`devices ${empty}/\\{nvidia\\[0-9\\]\\*`));
  const any = await ch('ch-run', ['--gpu', DEBIAN, '--', 'true'], { env });
  t.is(any.exitCode, 31);
  t.regex(any.stderr, /nvidia: .*\n.*\n\s+amd: /);
  const norun = await ch('ch-run', ['--gpu', join(IMAGES, 'busybox'), '--', 'true'], { env: fxEnv() });
  t.is(norun.exitCode, 31);
  t.regex(norun.stderr, /it has no \/run directory \(injected files go in a tmpfs there/);
  const bad = await ch('ch-run', ['--gpu=intel', DEBIAN, '--', 'true']);
  t.is(bad.exitCode, 31);
  t.regex(bad.stderr, /--gpu: unknown vendor 'intel'/);
});

/**
 * AMD stand-ins, like the NVIDIA ones of fixtures/gpu/fixture.js: a real
 * libhsa-runtime64.so.1 in a loader cache of its own, a program that
 * dlopen()s it by name, device nodes (regular files) kfd and dri/*, and a
 * rocm-smi on the search path. Only AMD: --gpu (every vendor) must find it.
 */
async function buildAmdFixture(dir) {
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['lib', 'prog', 'hostbin', 'dev/dri', 'src']) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'src/hsa.c'), 'int stand_in_agents(void) { return 2; }\n');
  writeFileSync(join(dir, 'src/dlhsa.c'), `#include <dlfcn.h>
#include <stdio.h>
int main(void) {
   void *h = dlopen("libhsa-runtime64.so.1", RTLD_NOW);
   if (h == NULL) { fprintf(stderr, "%s\\n", dlerror()); return 2; }
   int (*agents)(void) = (int (*)(void))dlsym(h, "stand_in_agents");
   printf("hsa agents: %d\\n", agents());
   return 0;
}
`);
  await execa('gcc', ['-O2', '-Wall', '-shared', '-fPIC', '-Wl,-soname,libhsa-runtime64.so.1', '-o',
    join(dir, 'lib/libhsa-runtime64.so.1'), join(dir, 'src/hsa.c')]);
  await execa('gcc', ['-O2', '-Wall', '-o', join(dir, 'prog/dlhsa'), join(dir, 'src/dlhsa.c'), '-ldl']);
  writeFileSync(join(dir, 'ld.so.conf'), `${join(dir, 'lib')}\n`);
  await execa(LDCONFIG, ['-C', join(dir, 'ld.so.cache'), '-f', join(dir, 'ld.so.conf')]);
  for (const d of ['kfd', 'dri/card0', 'dri/card1', 'dri/renderD128', 'dri/renderD129'])
    writeFileSync(join(dir, 'dev', d), `fake ${d}\n`);
  writeFileSync(join(dir, 'hostbin/rocm-smi'), '#!/bin/sh\necho "ROCM-SMI stand-in: $(ls /dev/dri | grep -c "^renderD") GPUs"\n',
    { mode: 0o755 });
  await execa('chmod', ['-R', 'a+rX', dir]);
  return { CH_GPU_LDCACHE: join(dir, 'ld.so.cache'), CH_GPU_DEVROOT: join(dir, 'dev'), CH_GPU_PATH: join(dir, 'hostbin') };
}

dtest('--gpu=amd: kfd and dri devices, the HSA runtime found by name, rocm-smi on PATH', async (t) => {
  const dir = join(TEST_DIR, 'gpu-fixture-amd');
  const env = await buildAmdFixture(dir);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bind = ['-b', `${join(dir, 'prog')}:/mnt`];
  const script = 'ls /dev/dri | tr "\\n" " "; echo; cat /dev/kfd; /mnt/dlhsa; command -v rocm-smi; rocm-smi; '
    + 'ls /dev | grep -c "^nvidia" || true';
  for (const gpu of ['--gpu=amd', '--gpu']) {
    const r = await ch('ch-run', ['-v', gpu, ...bind, DEBIAN, '--', 'sh', '-c', script], { env });
    t.is(r.exitCode, 0, `${gpu}: ${r.stderr}`);
    t.is(r.stdout, ['card0 card1 renderD128 renderD129 ', 'fake kfd', 'hsa agents: 2', '/run/ch-toolkit/bin/rocm-smi',
      'ROCM-SMI stand-in: 2 GPUs', '0'].join('\n'), `${gpu}: ${r.stderr}`);
    t.regex(r.stderr, /inject library .*\/lib\/libhsa-runtime64\.so\.1 -> \/run\/ch-toolkit\/lib\/libhsa-runtime64\.so\.1/);
    t.regex(r.stderr, /inject device .*\/dev\/kfd -> \/dev\/kfd/);
  }
  // Without --gpu: no runtime, no kfd.
  const no = await ch('ch-run', [...bind, DEBIAN, '--', 'sh', '-c', 'test -e /dev/kfd && echo kfd; /mnt/dlhsa'], { env });
  t.is(no.exitCode, 2);
  t.is(no.stdout, '');
  t.regex(no.stderr, /libhsa-runtime64\.so\.1: cannot open shared object file/);
});

/** A writable copy of the Debian image owned by the test user. */
async function writableDebian(name) {
  const dir = join(TEST_DIR, name);
  rmSync(dir, { recursive: true, force: true });
  await execa('cp', ['-a', DEBIAN, dir]);
  const u = testUser();
  await execa('chown', ['-R', `${u.uid}:${u.gid}`, dir]);
  return dir;
}

dserial('--ib: verbs library and provider found by name, devices and provider config injected', async (t) => {
  const img = await writableDebian('gpu-img-ib');
  mkdirSync(join(img, 'etc/libibverbs.d'));
  const before = treeDigest(img);
  const env = fxEnv({ CH_IB_LIBS: 'libstubprov', CH_GPU_HOSTROOT: join(FX, 'host') });
  const r = await ch('ch-run', ['-v', '--ib', ...progBind(), img, '--', 'sh', '-c',
    '/mnt/dlverbs; ls /dev/infiniband | tr "\\n" " "'], { env });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^verbs devices: 2$/m);
  t.regex(r.stdout, /rdma_cm uverbs0 uverbs1/);
  t.regex(r.stderr, /inject directory .*\/host\/etc\/libibverbs\.d -> \/etc\/libibverbs\.d \(read-only\)/);
  t.is(treeDigest(img), before, 'image changed');
  rmSync(img, { recursive: true, force: true });
});

dserial('ch-fromhost: --lib-path, --path, --dest, --nvidia, then the image\'s ldconfig', async (t) => {
  const img = await writableDebian('gpu-img-fromhost');
  const lp = await ch('ch-fromhost', ['--lib-path', img]);
  t.is(lp.exitCode, 0, lp.stderr);
  const libdir = lp.stdout.trim();
  t.regex(libdir, /^\/(usr\/)?(local\/)?lib/);
  const r = await ch('ch-fromhost', ['-v', '--path', join(FX, 'lib/libcuda.so.1'), img]);
  t.is(r.exitCode, 0, r.stderr);
  t.true(existsSync(join(img, libdir, 'libcuda.so.1')));
  // The image's own ldconfig ran: a plain ch-run (no --gpu) finds it.
  const run = await ch('ch-run', [...progBind(), img, '--', '/mnt/dlcuda'], { env: fxEnv() });
  t.is(run.exitCode, 0, run.stderr);
  t.regex(run.stdout, /cuda devices: 3/);
  // --dest for other files; --file lists them.
  writeFileSync(join(FX, 'list'), `${join(FX, 'prog/count')}\n`);
  chmodSync(join(FX, 'list'), 0o644);
  const d = await ch('ch-fromhost', ['--file', join(FX, 'list'), '--dest', '/opt/site', img]);
  t.is(d.exitCode, 0, d.stderr);
  t.is(readFileSync(join(img, 'opt/site/count'), 'utf8'), '3\n');
  const c = await ch('ch-fromhost', ['--cmd', `echo ${join(FX, 'prog/dlverbs')}`, '--dest', '/opt/site/bin', img]);
  t.is(c.exitCode, 0, c.stderr);
  t.true(existsSync(join(img, 'opt/site/bin/dlverbs')));
  const nd = await ch('ch-fromhost', ['--path', join(FX, 'prog/count'), img]);
  t.is(nd.exitCode, 31);
  t.regex(nd.stderr, /use --dest/);
  // --nvidia: the driver files discovery finds (here: the fixture's).
  const nv = await ch('ch-fromhost', ['-v', '--nvidia', '--no-ldconfig', img], { env: fxEnv() });
  t.is(nv.exitCode, 0, nv.stderr);
  t.regex(nv.stderr, /injected .*libcuda\.so\.1 -> /);
  t.regex(nv.stderr, /injected .*nvidia-smi -> \/usr\/bin\/nvidia-smi/);
  // A symlink in the image never redirects a write onto the host.
  const victim = join(FX, 'victim');
  writeFileSync(victim, 'host file\n');
  chmodSync(victim, 0o666);
  rmSync(join(img, 'opt/site/count'));
  await execa('ln', ['-s', victim, join(img, 'opt/site/count')]);
  const s = await ch('ch-fromhost', ['--path', join(FX, 'prog/count'), '--dest', '/opt/site', img]);
  t.is(s.exitCode, 0, s.stderr);
  t.is(readFileSync(victim, 'utf8'), 'host file\n');
  rmSync(img, { recursive: true, force: true });
});

test('ld.so.cache: our reader and writer agree with glibc\'s ldconfig', async (t) => {
  const { buildCache, parseCache, parseLdconfigP, readCache } = await import(join(PKG, 'dist/devices/ldcache.js'));
  const cache = join(FX, 'ld.so.cache');
  const ours = readCache((await import(join(PKG, 'dist/container/host.js'))).liveHost(), cache);
  t.truthy(ours);
  const glibc = parseLdconfigP((await execa(LDCONFIG, ['-p', '-C', cache])).stdout);
  t.is(glibc.get('libcuda.so.1'), join(FX, 'lib/libcuda.so.1'));
  for (const [name, path] of glibc) t.true(ours.some((e) => e.key === name && e.value === path), name);
  // A generated cache: injected entry first among equal names, sorted as ldconfig sorts.
  const gen = buildCache([{ flags: ours[0].flags, key: 'libcuda.so.1', value: '/run/ch-toolkit/lib/libcuda.so.1', hwcap: 0n }],
    ours);
  const out = join(FX, 'generated.cache');
  writeFileSync(out, gen);
  const listed = (await execa(LDCONFIG, ['-p', '-C', out])).stdout.split('\n').slice(1).map((l) => l.trim().split(' ')[0]);
  t.is(listed.length, ours.length + 1);
  const back = parseCache(gen);
  t.deepEqual(back.map((e) => e.key), listed);
  const cuda = back.filter((e) => e.key === 'libcuda.so.1').map((e) => e.value);
  t.deepEqual(cuda, ['/run/ch-toolkit/lib/libcuda.so.1', join(FX, 'lib/libcuda.so.1')]);
  // A string table that isn't ASCII (read byte by byte as UTF-8, not through
  // the one Latin-1 string an ASCII table is read as): names and paths back
  // exactly, and as glibc reads them.
  const odd = { flags: ours[0].flags, key: 'libg\u00e9n\u00e9r\u00e9.so.1', value: '/run/ch-toolkit/lib/\u20acuro/libg\u00e9.so.1', hwcap: 0n };
  const gen2 = buildCache([odd], ours);
  const back2 = parseCache(gen2);
  t.deepEqual(back2.find((e) => e.key === odd.key)?.value, odd.value);
  t.deepEqual(back2.filter((e) => e.key !== odd.key).map((e) => [e.key, e.value]), back.filter((e) => e.key !== 'libcuda.so.1' || e.value !== cuda[0]).map((e) => [e.key, e.value]));
  const out2 = join(FX, 'generated-utf8.cache');
  writeFileSync(out2, gen2);
  t.regex((await execa(LDCONFIG, ['-p', '-C', out2])).stdout, new RegExp(`${odd.key.replace(/\./g, '\\.')} .*=> ${odd.value.replace(/\./g, '\\.')}`));
});
