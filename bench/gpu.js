#!/usr/bin/env node
// bench/gpu: what --gpu adds to a launch. Builds the same driver stand-ins as
// the tests (a real libcuda.so.1, device nodes under a fixture device root,
// a loader cache listing them), then times `ch-run IMG -- true` with and
// without --gpu, interleaved (memoized after the first), the first launch of a
// command line (it plans) with and without --gpu, and the generated
// ld.so.cache alone. CDI: the
// same with a spec of realistic size (as nvidia-ctk writes on a driver 535
// node: 44 libraries, 4 tools, firmware, 3 hooks; >= 40 mounts), through
// `--device=nvidia.com/gpu=0`, against today's conf-file path (--gpu).
//
// Usage: node bench/gpu.js [--runs N] IMAGE   (IMAGE: a glibc image with /run,
// e.g. the test suite's Debian image, $CH_TEST_DIR/img/debian, by default
// /var/tmp/ch-toolkit-test.UID/img/debian)

import { spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fxEnv, hostDeviceFamily } from '../test/fixtures/gpu/fixture.js';
import { bigNvidiaSpec, buildCdiFixture } from '../test/fixtures/cdi/fixture.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 31;
const image = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--runs')[0]
  ?? join(process.env.CH_TEST_DIR ?? `/var/tmp/ch-toolkit-test.${process.getuid()}`, 'img', 'debian');
const user = process.env.CH_BENCH_USER ?? 'chtest';

const pre = process.getuid() !== 0 ? [] : (() => {
  const id = (f) => spawnSync('id', [f, user], { encoding: 'utf8' }).stdout.trim();
  return ['setpriv', `--reuid=${id('-u')}`, `--regid=${id('-g')}`, '--clear-groups', '--'];
})();

/** Wait until files written now are over a second old. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 1100));

const fx = mkdtempSync('/var/tmp/ch-bench-gpu-');
chmodSync(fx, 0o755);
try {
  await buildCdiFixture(fx);
  const nMounts = await bigNvidiaSpec(fx, join(fx, 'big-cdi/nvidia.json'));
  const env = { PATH: '/usr/bin:/bin', ...fxEnv(fx), CH_RUN_CDI_DIRS: join(fx, 'big-cdi') };
  // --gpu alone must take the conf path here: no spec for it.
  const confEnv = { ...env, CH_RUN_CDI_DIRS: join(fx, 'none') };
  let coldN = 0;
  const once = (extra, e = env, cold = false) => {
    // Cold: a command line no launch had (no "--" before the command: the
    // whole of it is the memo's key), so the front end plans.
    const argv = [...pre, join(repo, 'bin/ch-run'), ...extra, image,
      ...(cold ? ['true', `cold-${process.pid}-${coldN++}`] : ['--', 'true'])];
    const t0 = process.hrtime.bigint();
    const r = spawnSync(argv[0], argv.slice(1), { env: e, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ch-run ${extra.join(' ')} failed: ${r.stderr}`);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const cdi = ['--device=nvidia.com/gpu=0'];
  // A plan that read a file changed in the last second is not memoized (a
  // change within the same timestamp tick could go unseen: lib/run/memo.ts),
  // and the fixture was just written: until it is older, every launch plans.
  await settle();
  once([]); once(['--gpu'], confEnv); once(cdi);
  const plain = [], gpu = [], dev = [];
  for (let i = 0; i < runs; i++) { plain.push(once([])); gpu.push(once(['--gpu'], confEnv)); dev.push(once(cdi)); }
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const coldPlain = [], coldGpu = [];
  for (let i = 0; i < runs; i++) { coldPlain.push(once([], env, true)); coldGpu.push(once(['--gpu'], confEnv, true)); }
  const cp = median(coldPlain), cg = median(coldGpu);
  console.log(`first launch (plans: a new command line each run), median of ${runs} interleaved: plain ${cp.toFixed(1)} ms,`
    + ` --gpu (conf) ${cg.toFixed(1)} ms (+${(cg - cp).toFixed(1)} ms)`);
  const p = median(plain), g = median(gpu), c = median(dev);
  console.log(`launch, median of ${runs} interleaved runs: plain ${p.toFixed(1)} ms, --gpu (conf) ${g.toFixed(1)} ms`
    + ` (+${(g - p).toFixed(1)} ms, ${(g / p).toFixed(3)}x), CDI ${nMounts}-mount spec ${c.toFixed(1)} ms`
    + ` (+${(c - p).toFixed(1)} ms over plain, ${(c - g >= 0 ? '+' : '')}${(c - g).toFixed(1)} ms over --gpu)`);
  const mounts = (extra, e = env) => {
    const argv = [...pre, join(repo, 'bin/ch-run'), ...extra, image, '--', 'sh', '-c', 'grep -c . /proc/self/mountinfo'];
    return spawnSync(argv[0], argv.slice(1), { env: e, encoding: 'utf8' }).stdout.trim();
  };
  console.log(`mounts in the container: plain ${mounts([])}, --gpu (conf) ${mounts(['--gpu'], confEnv)}, CDI ${mounts(cdi)}`
    + ` (the CDI spec's ${nMounts} file mounts take one bind per host directory)`);
  // GPU nodes in the host's own /dev, every one chosen (a node the job has
  // whole): /dev is then the host's, as without --gpu (lib/devices/inject.ts).
  const fam = hostDeviceFamily(fx, join(fx, 'host-dev.conf'), { CH_RUN_CDI_DIRS: join(fx, 'none') });
  if (fam === null) {
    console.log('--gpu with nodes in the host\'s /dev: skipped (no family of numbered device nodes in /dev to stand in)');
  } else {
    const hostEnv = { PATH: '/usr/bin:/bin', ...fam.env };
    await settle();   // its conf file is new too
    once(['--gpu=nvidia'], hostEnv);
    const warm = [], cold = [], warmPlain = [], coldPlain2 = [];
    for (let i = 0; i < runs; i++) {
      warmPlain.push(once([])); warm.push(once(['--gpu=nvidia'], hostEnv));
      coldPlain2.push(once([], env, true)); cold.push(once(['--gpu=nvidia'], hostEnv, true));
    }
    const [w, wp, cl, clp] = [warm, warmPlain, cold, coldPlain2].map(median);
    console.log(`--gpu, nodes in the host's /dev (${fam.name}0-${fam.members.length - 1} standing in), all chosen, median of ${runs} interleaved:`
      + ` launch ${w.toFixed(1)} ms (plain ${wp.toFixed(1)}, +${(w - wp).toFixed(1)}), first launch ${cl.toFixed(1)} ms`
      + ` (plain ${clp.toFixed(1)}, +${(cl - clp).toFixed(1)}); mounts ${mounts(['--gpu=nvidia'], hostEnv)}`);
  }
  const { buildCache, readCache } = await import(join(repo, 'dist/devices/ldcache.js'));
  const { liveHost } = await import(join(repo, 'dist/container/host.js'));
  const img = readCache(liveHost(), join(image, 'etc/ld.so.cache'));
  if (img === null) throw new Error(`${image}/etc/ld.so.cache: missing, or not a cache ch-run reads`);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 100; i++) buildCache([{ flags: 0x303, key: 'libcuda.so.1', value: '/x', hwcap: 0n }], img);
  console.log(`generated ld.so.cache for ${img.length} image entries: ${(Number(process.hrtime.bigint() - t0) / 1e8).toFixed(3)} ms`);
} finally {
  rmSync(fx, { recursive: true, force: true });
}
