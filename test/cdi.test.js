// ch-run --device / --gpu through CDI specs (Container Device Interface),
// without GPUs: specs written as `nvidia-ctk cdi generate` (JSON, with its
// three hooks) and AMD's generator (YAML) write them, pointing at stand-in
// libraries and device nodes the suite builds (test/fixtures/cdi). The
// stand-in libcuda counts the /dev/nvidiaN nodes it can see, so the program's
// output says which GPUs the container got. Programs run in the Debian image
// and dlopen() by name with no LD_LIBRARY_PATH.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, IMAGES, isRoot, TEST_DIR, testUser } from './helpers/env.js';
import { buildCdiFixture, LIBDIR, specText } from './fixtures/cdi/fixture.js';
import { fxEnv } from './fixtures/gpu/fixture.js';

const FX = join(TEST_DIR, 'cdi-fixture');
const DEBIAN = join(IMAGES, 'debian');
const dtest = existsSync(DEBIAN) || process.env.CI ? test : test.skip;

/** Environment: the fixture's conf-path knobs, and CDI specs from DIRS only. */
const env = (extra = {}, dirs = join(FX, 'cdi')) => ({ ...fxEnv(FX), CH_RUN_CDI_DIRS: dirs, ...extra });
const prog = ['-b', `${join(FX, 'prog')}:/mnt`];
const nvNodes = 'ls /dev | grep "^nvidia[0-9]" | tr "\\n" " "; echo';

/** A spec directory holding FILES (name -> text), readable by the test user. */
function specDir(name, files) {
  const dir = join(FX, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text, { mode: 0o644 });
  return dir;
}

test.before(() => buildCdiFixture(FX));

dtest('--device=nvidia.com/gpu=1: one GPU, driver found by SONAME, hooks interpreted, tools, env', async (t) => {
  const r = await ch('ch-run', ['-vv', '--device=nvidia.com/gpu=1', ...prog, DEBIAN, '--', 'sh', '-c',
    `/mnt/dlcuda; ${nvNodes}; echo "LD_LIBRARY_PATH=\${LD_LIBRARY_PATH-unset}"; nvidia-smi; `
    + 'echo "NVD=$NVIDIA_VISIBLE_DEVICES VK=$VK_ICD_FILENAMES"; cat /run/nvidia-persistenced/socket; '
    + 'head -c 4 /run/ch-toolkit/lib/libcuda.so | tail -c 3; echo; ls /dev/nvidia-caps; '
    + 'test -e /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05 || echo image-untouched'], { env: env() });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^cuda devices: 1$/m);             // the driver sees only GPU 1's node
  t.regex(r.stdout, /^nvidia1 $/m);
  t.regex(r.stdout, /^LD_LIBRARY_PATH=unset$/m);
  t.regex(r.stdout, /^NVIDIA-SMI stand-in \(CDI\): 1 GPUs$/m);
  t.regex(r.stdout, /^NVD=void VK=\/run\/ch-toolkit\/etc\/icd\.d-nvidia_icd\.json$/m);
  t.regex(r.stdout, /^persistenced stand-in$/m);      // a mount under /run: where the spec says
  t.regex(r.stdout, /^ELF$/m);                        // create-symlinks: libcuda.so -> libcuda.so.1 -> ...
  t.regex(r.stdout, /^nvidia-cap1$/m);
  t.regex(r.stdout, /^image-untouched$/m);
  t.regex(r.stderr, /update-ldcache --folder \/usr\/lib\/x86_64-linux-gnu: served by the generated \/etc\/ld\.so\.cache/);
  t.regex(r.stderr, /link \/usr\/lib\/x86_64-linux-gnu\/libcuda\.so -> libcuda\.so\.1 made at \/run\/ch-toolkit\/lib\/libcuda\.so/);
  t.regex(r.stderr, /hook \/usr\/bin\/nvidia-cdi-hook chmod --mode 755 --path \/dev\/dri: ignored/);
  t.notRegex(r.stderr, /warning/);
});

dtest('CDI mounts: each host directory bound once, read-only even to fake root', async (t) => {
  // The files probed are the test user's (fake root is the test user on the
  // host): only the mounts' read-only flag can stop the writes.
  const u = testUser();
  const probed = [join(FX, LIBDIR, 'libcuda.so.535.104.05'), join(FX, 'cdi-host/run/nvidia-persistenced/socket')];
  const before = probed.map((f) => readFileSync(f));
  if (isRoot) {
    for (const f of probed) chownSync(f, u.uid, u.gid);
    t.teardown(() => { for (const f of probed) chownSync(f, 0, 0); });
  }
  const r = await ch('ch-run', ['-u', '0', '--device=nvidia.com/gpu=0', DEBIAN, '--', 'sh', '-c',
    'grep -c " /run/ch-toolkit/cdi/" /proc/self/mountinfo; '
    + 'grep " /run/ch-toolkit/cdi/0 " /proc/self/mountinfo | cut -d" " -f6; '
    + 'grep " /run/nvidia-persistenced/socket " /proc/self/mountinfo | cut -d" " -f6; '
    + 'for f in /run/ch-toolkit/lib/libcuda.so.1 /run/nvidia-persistenced/socket; do '
    + '  test -O $f && echo "OWNED $f"; '
    + '  (echo x >> $f) 2>/dev/null && echo "WROTE $f"; '
    + '  mount -o remount,rw,bind /run/ch-toolkit/cdi/0 2>/dev/null && echo "REMOUNTED"; done; true'], { env: env() });
  t.is(r.exitCode, 0, r.stderr);
  const [count, opts, socketOpts] = r.stdout.trim().split('\n');
  t.is(count, '4');                                  // lib, bin, firmware, icd directories: 6 files, 4 mounts
  t.regex(opts, /^ro,nosuid,nodev/);
  t.regex(socketOpts, /^ro,nosuid,nodev,noexec/, 'the socket: read-only, and the spec\'s nodev and noexec');
  t.regex(r.stdout, /^OWNED \/run\/ch-toolkit\/lib\/libcuda\.so\.1$/m, 'the probe writes files its user owns');
  t.regex(r.stdout, /^OWNED \/run\/nvidia-persistenced\/socket$/m);
  t.notRegex(r.stdout, /WROTE|REMOUNTED/);
  t.deepEqual(probed.map((f) => readFileSync(f)), before, 'the host files unchanged');
});

dtest('selection: by UUID, "all", and --gpu with CUDA_VISIBLE_DEVICES renumbered inside', async (t) => {
  const uuid = await ch('ch-run', ['--device=nvidia.com/gpu=GPU-4c7a5b1e-0d5f-6a8e-95a3-1b2c3d4e5f02', ...prog, DEBIAN,
    '--', 'sh', '-c', `/mnt/dlcuda; ${nvNodes}`], { env: env() });
  t.is(uuid.exitCode, 0, uuid.stderr);
  t.regex(uuid.stdout, /^cuda devices: 1\nnvidia2 $/m);
  const all = await ch('ch-run', ['--device=nvidia.com/gpu=all', ...prog, DEBIAN, '--', 'sh', '-c',
    `/mnt/dlcuda; ${nvNodes}`], { env: env() });
  t.is(all.exitCode, 0, all.stderr);
  t.regex(all.stdout, /^cuda devices: 3\nnvidia0 nvidia1 nvidia2 $/m);
  // --gpu: CDI chosen because a spec for nvidia.com/gpu exists (the conf
  // path would have bound the fixture's libcuda.so.1, which reads a count file).
  const g = await ch('ch-run', ['-v', '--gpu=nvidia', ...prog, DEBIAN, '--', 'sh', '-c',
    `/mnt/dlcuda; ${nvNodes}; echo "CVD=$CUDA_VISIBLE_DEVICES"`], { env: env({ CUDA_VISIBLE_DEVICES: '2,0' }) });
  t.is(g.exitCode, 0, g.stderr);
  t.regex(g.stdout, /^cuda devices: 2\nnvidia0 nvidia2 \nCVD=0,1$/m);
  t.regex(g.stderr, /--gpu: nvidia GPUs from CDI spec nvidia\.com\/gpu/);
  const none = await ch('ch-run', ['--gpu', ...prog, DEBIAN, '--', 'sh', '-c', `/mnt/dlcuda; ${nvNodes}`],
    { env: env({ NVIDIA_VISIBLE_DEVICES: 'none' }) });
  t.is(none.exitCode, 0, none.stderr);
  t.is(none.stdout, 'cuda devices: 0\n');            // driver, no GPU
  // The same as root (no user namespace needed, same result).
  const root = await ch('ch-run', ['--device=nvidia.com/gpu=2', ...prog, DEBIAN, '--', 'sh', '-c', `/mnt/dlcuda; ${nvNodes}`],
    { root: true, env: env() });
  t.is(root.exitCode, 0, root.stderr);
  t.regex(root.stdout, /^cuda devices: 1\nnvidia2 $/m);
  const missing = await ch('ch-run', ['--gpu=nvidia', DEBIAN, '--', 'true'], { env: env({ CUDA_VISIBLE_DEVICES: '7' }) });
  t.is(missing.exitCode, 31);
  t.regex(missing.stderr, /--gpu \(CUDA_VISIBLE_DEVICES=7\): no CDI device nvidia\.com\/gpu=7; nvidia\.com\/gpu has: 0, 1, 2, GPU-.*all \(.*cdi\/nvidia\.json\)/);
});

dtest('two vendors at once: NVIDIA JSON and AMD YAML; ROCR_VISIBLE_DEVICES picks card and render nodes', async (t) => {
  const r = await ch('ch-run', ['--device=nvidia.com/gpu=0', '--device=amd.com/gpu=all', ...prog, DEBIAN, '--', 'sh', '-c',
    `/mnt/dlcuda; ${nvNodes}; ls /dev/dri | tr "\\n" " "; echo; cat /dev/kfd`], { env: env() });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^cuda devices: 1\nnvidia0 \ncard1 card2 renderD128 renderD129 \nfake kfd$/m);
  // The YAML parser, its own bundle, from the code cache the build made for it (issue #27: ~15 ms).
  const vv = await ch('ch-run', ['-vv', '--device=amd.com/gpu=all', DEBIAN, '--', 'true'], { env: env() });
  t.regex(vv.stderr, /code cache \(ch-run-yaml\.cjs\): used\n/);
  const amd = await ch('ch-run', ['--gpu=amd', DEBIAN, '--', 'sh', '-c',
    'ls /dev/dri | tr "\\n" " "; echo "ROCR=$ROCR_VISIBLE_DEVICES"; ls /dev | grep -c "^nvidia" || true'],
  { env: env({ ROCR_VISIBLE_DEVICES: '1' }) });
  t.is(amd.exitCode, 0, amd.stderr);
  t.regex(amd.stdout, /^card2 renderD129 ROCR=0\n0$/m);
});

// share/gpu/amd.conf's rule: GPU N is renderD(128+N), and the card on the same PCI device (sysfs).
dtest('AMD without a CDI spec: HIP_VISIBLE_DEVICES filters dri nodes from share/gpu/amd.conf', async (t) => {
  const empty = specDir('cdi-none', {});
  const cmd = ['sh', '-c', 'ls /dev/dri | tr "\\n" " "; echo "HIP=$HIP_VISIBLE_DEVICES"; cat /dev/kfd'];
  const extra = { HIP_VISIBLE_DEVICES: '1', CH_GPU_LIBS: 'libcuda', CH_GPU_SYSROOT: join(FX, 'sys') };
  const r = await ch('ch-run', ['--gpu=amd', DEBIAN, '--', ...cmd], { env: env(extra, empty) });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^card2 renderD129 HIP=0\nfake kfd$/m);
  // Without sysfs to pair them, cardN is taken for GPU N.
  const nosys = await ch('ch-run', ['--gpu=amd', DEBIAN, '--', ...cmd],
    { env: env({ ...extra, CH_GPU_SYSROOT: join(FX, 'nonexistent') }, empty) });
  t.is(nosys.exitCode, 0, nosys.stderr);
  t.regex(nosys.stdout, /^card1 renderD129 HIP=0\nfake kfd$/m);
});

dtest('invalid specs: errors name the spec file and what is wrong', async (t) => {
  const nv = specText('nvidia.json', FX);
  const cases = [
    ['unknown field', nv.replace('"kind"', '"vendorExtra": 1, "kind"'), /nvidia\.json: vendorExtra: unknown field/],
    ['unknown nested field', nv.replace('"hookName": "createContainer", "path"', '"hookName": "createContainer", "when": "x", "path"'),
      /nvidia\.json: containerEdits\.hooks\[0\]\.when: unknown field/],
    ['bad JSON', nv.slice(0, 200), /nvidia\.json: not valid JSON/],
    ['version too old for hostPath', nv.replace('"0.5.0"', '"0.4.0"'),
      /nvidia\.json: cdiVersion 0\.4\.0 is too old for what the spec uses \(deviceNodes\[\]\.hostPath needs 0\.5\.0\)/],
    ['unknown version', nv.replace('"0.5.0"', '"9.0.0"'), /nvidia\.json: cdiVersion: unsupported version '9\.0\.0'/],
    ['wrong type', nv.replace('"name": "1"', '"name": 1'), /nvidia\.json: devices\[1\]\.name: must be a string, not 1/],
  ];
  for (const [what, text, re] of cases) {
    const dir = specDir('cdi-bad', { 'nvidia.json': text });
    const r = await ch('ch-run', ['--device=nvidia.com/gpu=1', DEBIAN, '--', 'true'], { env: env({}, dir) });
    t.is(r.exitCode, 31, what);
    t.regex(r.stderr, /--device=nvidia\.com\/gpu=1: no CDI device nvidia\.com\/gpu=1/, what);
    t.regex(r.stderr, re, what);
  }
  const yaml = specDir('cdi-bad', { 'amd.yaml': specText('amd.yaml', FX).replace('kind: amd.com/gpu', 'kind: amd.com/gpu\nkind: x/y') });
  const y = await ch('ch-run', ['--device=amd.com/gpu=0', DEBIAN, '--', 'true'], { env: env({}, yaml) });
  t.is(y.exitCode, 31);
  t.regex(y.stderr, /amd\.yaml: not valid YAML: .*[Uu]nique/);
  // A broken spec of another vendor does not stop this one.
  const other = specDir('cdi-other', { 'amd.yaml': 'cdiVersion: [', 'nvidia.json': nv });
  const o = await ch('ch-run', ['--device=nvidia.com/gpu=1', DEBIAN, '--', 'true'], { env: env({}, other) });
  t.is(o.exitCode, 0, o.stderr);
  // A broken spec of the kind in use, next to a good one: used the good one, and said so.
  const two = specDir('cdi-two', { 'a.json': nv, 'b.json': nv.replace('"kind"', '"x": 1, "kind"') });
  const w = await ch('ch-run', ['--device=nvidia.com/gpu=1', DEBIAN, '--', 'true'], { env: env({}, two) });
  t.is(w.exitCode, 0, w.stderr);
  t.regex(w.stderr, /warning: CDI: ignoring invalid spec .*cdi-two\/b\.json \(nvidia\.com\/gpu\): x: unknown field/);
});

dtest('a spec naming a missing file or device node: error names spec, device and path', async (t) => {
  const nv = specText('nvidia.json', FX);
  const lib = specDir('cdi-missing', { 'nvidia.json': nv.replace('libnvidia-ml.so.535.104.05",\n        "containerPath"',
    'libnvidia-ml.so.999",\n        "containerPath"') });
  const r = await ch('ch-run', ['--device=nvidia.com/gpu=0', DEBIAN, '--', 'true'], { env: env({}, lib) });
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /error: CDI spec .*cdi-missing\/nvidia\.json: device nvidia\.com\/gpu \(spec-wide edits\): mount .*libnvidia-ml\.so\.999: .*ENOENT/);
  const node = specDir('cdi-missing', { 'nvidia.json': nv.replaceAll(`"${FX}/dev/nvidia2"`, `"${FX}/dev/nvidia9"`) });
  const n = await ch('ch-run', ['--device=nvidia.com/gpu=2', DEBIAN, '--', 'true'], { env: env({}, node) });
  t.is(n.exitCode, 31);
  t.regex(n.stderr, /nvidia\.json: device nvidia\.com\/gpu=2: device node .*\/dev\/nvidia9: .*ENOENT/);
  const bad = await ch('ch-run', ['--device=nvidia.com', DEBIAN, '--', 'true'], { env: env() });
  t.is(bad.exitCode, 31);
  t.regex(bad.stderr, /--device: bad device 'nvidia\.com' \(want KIND=NAME/);
});

dtest('unsupported edits warn; unknown hooks are not run; later spec directory wins; foreign specs not read', async (t) => {
  const spec = {
    cdiVersion: '0.7.0', kind: 'example.com/fpga',
    devices: [{ name: 'f0', containerEdits: { deviceNodes: [{ path: '/dev/fpga0', hostPath: join(FX, 'dev/nvidia0') }],
      env: ['FPGA=first'] } }],
    containerEdits: { additionalGids: [44], hooks: [{ hookName: 'createContainer', path: '/usr/bin/fpga-setup', args: ['fpga-setup', '--now'] }] },
  };
  const first = specDir('cdi-first', { 'fpga.json': JSON.stringify(spec) });
  spec.devices[0].containerEdits.env = ['FPGA=second'];
  const second = specDir('cdi-second', { 'fpga.json': JSON.stringify(spec) });
  const r = await ch('ch-run', ['--cdi-dirs', `${first}:${second}`, '--device=example.com/fpga=f0', DEBIAN, '--', 'sh', '-c',
    'cat /dev/fpga0; echo "FPGA=$FPGA"'], { env: env({}, '/nonexistent') });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^fake nvidia0\nFPGA=second$/m);
  t.regex(r.stderr, /warning: CDI example\.com\/fpga \(spec-wide edits\): additionalGids 44 not supported unprivileged/);
  t.regex(r.stderr, /warning: CDI spec .*fpga\.json: device example\.com\/fpga \(spec-wide edits\): createContainer hook \/usr\/bin\/fpga-setup --now: not run/);
  // A spec directory any user can write is not read.
  chmodSync(second, 0o777);
  const w = await ch('ch-run', ['--cdi-dirs', `${first}:${second}`, '--device=example.com/fpga=f0', DEBIAN, '--', 'sh', '-c',
    'echo "FPGA=$FPGA"'], { env: env() });
  t.is(w.exitCode, 0, w.stderr);
  t.regex(w.stdout, /^FPGA=first$/m);
  t.regex(w.stderr, new RegExp(`warning: CDI: not reading specs in ${second}: writable by all users`));
  chmodSync(second, 0o755);
});

dtest('--ib=HCA and CH_IB_HCAS: only the chosen HCAs\' device nodes', async (t) => {
  const ibEnv = (extra = {}) => env({ CH_IB_SYSROOT: join(FX, 'sys'), CH_IB_LIBS: 'libstubprov', ...extra });
  const ls = ['sh', '-c', 'ls /dev/infiniband | tr "\\n" " "'];
  const one = await ch('ch-run', ['-v', '--ib=mlx5_1', DEBIAN, '--', ...ls], { env: ibEnv() });
  t.is(one.exitCode, 0, one.stderr);
  t.is(one.stdout, 'rdma_cm uverbs1 ');
  t.regex(one.stderr, /--ib: \/dev\/infiniband\/uverbs0 \(mlx5_0\) hidden by --ib/);
  const byVar = await ch('ch-run', ['--ib', DEBIAN, '--', ...ls], { env: ibEnv({ CH_IB_HCAS: 'mlx5_0' }) });
  t.is(byVar.exitCode, 0, byVar.stderr);
  t.is(byVar.stdout, 'rdma_cm uverbs0 ');
  const all = await ch('ch-run', ['--ib', DEBIAN, '--', ...ls], { env: ibEnv() });
  t.is(all.stdout, 'rdma_cm uverbs0 uverbs1 ');
  const bad = await ch('ch-run', ['--ib=mlx5_0,mlx5_7', DEBIAN, '--', 'true'], { env: ibEnv() });
  t.is(bad.exitCode, 31);
  t.regex(bad.stderr, /error: --ib: no InfiniBand HCA mlx5_7 \(.*\/sys\/class\/infiniband has: mlx5_0, mlx5_1\)/);
});

dtest('ch-fromhost --cdi: the spec\'s files copied to their container paths, links, env; then found with no --device', async (t) => {
  const img = join(TEST_DIR, 'cdi-img-fromhost');
  rmSync(img, { recursive: true, force: true });
  await execa('cp', ['-a', DEBIAN, img]);
  // A link the image holds must not redirect the copy onto the host.
  const victim = join(FX, 'victim');
  writeFileSync(victim, 'host file\n', { mode: 0o666 });
  chmodSync(victim, 0o666);
  await execa('ln', ['-sf', victim, join(img, 'usr/bin/nvidia-smi')]);
  const u = testUser();
  await execa('chown', ['-R', '-h', `${u.uid}:${u.gid}`, img]);
  const r = await ch('ch-fromhost', ['-v', '--cdi', 'nvidia.com/gpu=all', '--cdi-dirs', join(FX, 'cdi'), img], { env: env() });
  t.is(r.exitCode, 0, r.stderr);
  t.is(readFileSync(victim, 'utf8'), 'host file\n');
  t.regex(r.stderr, /device node \/dev\/nvidia0 not copied \(per host: use ch-run --device\)/);
  const run = await ch('ch-run', ['--set-env', ...prog, img, '--', 'sh', '-c',
    '/mnt/dlcuda; readlink /usr/lib/x86_64-linux-gnu/libcuda.so; echo "NVD=$NVIDIA_VISIBLE_DEVICES"; nvidia-smi'], { env: env() });
  t.is(run.exitCode, 0, run.stderr);
  t.regex(run.stdout, /^cuda devices: 0\nlibcuda\.so\.1\nNVD=void\nNVIDIA-SMI stand-in \(CDI\): 0 GPUs$/m);
  const bad = await ch('ch-fromhost', ['--cdi', 'nvidia.com/gpu=7', '--cdi-dirs', join(FX, 'cdi'), img], { env: env() });
  t.is(bad.exitCode, 31);
  t.regex(bad.stderr, /--cdi=nvidia\.com\/gpu=7: no CDI device nvidia\.com\/gpu=7/);
  rmSync(img, { recursive: true, force: true });
});

test('ch-run --help lists --device and --cdi-dirs', async (t) => {
  const r = await ch('ch-run', ['--help']);
  t.is(r.exitCode, 0);
  t.regex(r.stdout, /--device=KIND=NAME/);
  t.regex(r.stdout, /--cdi-dirs=DIR/);
  t.true(readFileSync(join(FX, 'cdi/amd.yaml'), 'utf8').includes(FX));
});
