#!/usr/bin/env node
// bench/gpu: what --gpu adds to a launch. Builds the same driver stand-ins as
// the tests (a real libcuda.so.1, device nodes under a fixture device root,
// a loader cache listing them), then times `ch-run IMG -- true` with and
// without --gpu, interleaved, and the generated ld.so.cache alone.
//
// Usage: node bench/gpu.js [--runs N] IMAGE   (IMAGE: a glibc image with /run,
// e.g. the test suite's Debian image, /var/tmp/ch-toolkit-test/img/debian)

import { spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGpuFixture, fxEnv } from '../test/fixtures/gpu/fixture.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 31;
const image = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--runs')[0]
  ?? '/var/tmp/ch-toolkit-test/img/debian';
const user = process.env.CH_BENCH_USER ?? 'chtest';

const pre = process.getuid() !== 0 ? [] : (() => {
  const id = (f) => spawnSync('id', [f, user], { encoding: 'utf8' }).stdout.trim();
  return ['setpriv', `--reuid=${id('-u')}`, `--regid=${id('-g')}`, '--clear-groups', '--'];
})();

const fx = mkdtempSync('/var/tmp/ch-bench-gpu-');
chmodSync(fx, 0o755);
try {
  await buildGpuFixture(fx);
  const env = { PATH: '/usr/bin:/bin', ...fxEnv(fx) };
  const once = (extra) => {
    const argv = [...pre, join(repo, 'bin/ch-run'), ...extra, image, '--', 'true'];
    const t0 = process.hrtime.bigint();
    const r = spawnSync(argv[0], argv.slice(1), { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ch-run ${extra.join(' ')} failed: ${r.stderr}`);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  once([]); once(['--gpu']);
  const plain = [], gpu = [];
  for (let i = 0; i < runs; i++) { plain.push(once([])); gpu.push(once(['--gpu'])); }
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const p = median(plain), g = median(gpu);
  console.log(`launch, median of ${runs} interleaved runs: plain ${p.toFixed(1)} ms, --gpu ${g.toFixed(1)} ms`
    + ` (+${(g - p).toFixed(1)} ms, ${(g / p).toFixed(3)}x)`);
  const { buildCache, readCache } = await import(join(repo, 'dist/devices/ldcache.js'));
  const img = readCache(join(image, 'etc/ld.so.cache'));
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 100; i++) buildCache([{ flags: 0x303, key: 'libcuda.so.1', value: '/x', hwcap: 0n }], img);
  console.log(`generated ld.so.cache for ${img.length} image entries: ${(Number(process.hrtime.bigint() - t0) / 1e8).toFixed(3)} ms`);
} finally {
  rmSync(fx, { recursive: true, force: true });
}
