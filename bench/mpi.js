// MPI in a container vs bare metal, under srun on the private test cluster
// (test/helpers/slurm.js): ping-pong latency/bandwidth and allreduce bandwidth
// (examples/mpihello's programs), plus the launch time of a 32-rank step bare,
// with ch-run, and with ch-run --join. Ratios come from the same run, with
// bare and container interleaved. Needs root (it starts Slurm) and a staged
// package: CH_TEST_DIR=... node test/setup.js && CH_TEST_DIR=... node bench/mpi.js
// REPS (default 3) repetitions; medians are printed.

import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN } from '../test/helpers/env.js';
import { compileMpiPrograms, mpiImage } from '../test/helpers/mpi-image.js';
import { startCluster } from '../test/helpers/slurm.js';
import { execa } from 'execa';

const REPS = Number(process.env.REPS ?? 3);
const CHRUN = join(BIN, 'ch-run');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

const img = await mpiImage();
if (!img.dir) { console.error(`no MPI image: ${img.reason}`); process.exit(1); }
const bare = mkdtempSync('/var/tmp/ch-bench-mpi-');
await compileMpiPrograms(bare);
await execa('chmod', ['-R', 'a+rX', bare]);
const c = await startCluster({ dir: '/var/tmp/ch-bench-slurm', portBase: 17180 });
if (c.reason) { console.error(c.reason); process.exit(1); }

async function step(args) {
  const t = process.hrtime.bigint();
  const r = await c.run('srun', args, { timeout: 300000 });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.exitCode !== 0) throw new Error(`srun ${args.join(' ')}: ${r.all}`);
  return { out: r.stdout, ms };
}

const modes = {
  bare: (p, a) => [join(bare, p), ...a],
  'ch-run': (p, a) => [CHRUN, img.dir, '--', `/${p}`, ...a],
  'ch-run --join': (p, a) => [CHRUN, '--join', img.dir, '--', `/${p}`, ...a],
};

try {
  const pp = {}; const ar = {}; const launch = {};
  for (let i = 0; i < REPS; i++) {
    for (const [m, argv] of Object.entries(modes)) {
      const r1 = await step(['--mpi=pmix', '-n', '2', ...argv('pingpong', [String(1 << 22), '2000'])]);
      for (const l of r1.out.matchAll(/^pingpong (\d+) bytes ([\d.]+) us ([\d.]+) MB\/s$/gm))
        ((pp[m] ??= {})[l[1]] ??= []).push({ us: Number(l[2]), mbs: Number(l[3]) });
      const r2 = await step(['--mpi=pmix', '-n', '4', ...argv('allreduce', [String(1 << 22), '50'])]);
      for (const l of r2.out.matchAll(/^allreduce (\d+) bytes \d+ iters ([\d.]+) us\/op ([\d.]+) MB\/s$/gm))
        ((ar[m] ??= {})[l[1]] ??= []).push({ us: Number(l[2]), mbs: Number(l[3]) });
      const tr = m === 'bare' ? ['/bin/true'] : [...argv('x', []).slice(0, -1), '/bin/true'];
      (launch[m] ??= []).push((await step(['-n', '32', ...tr])).ms);
    }
  }
  const fmt = (x, d = 2) => x.toFixed(d);
  console.log(`MPI under srun --mpi=pmix, ${REPS} reps, medians (one host, loopback; ratios container/bare)`);
  console.log('\nping-pong (2 ranks, one node): one-way latency / bandwidth');
  for (const size of Object.keys(pp.bare)) {
    const b = pp.bare[size];
    let line = `  ${size.padStart(8)} B  bare ${fmt(median(b.map((x) => x.us)))} us ${fmt(median(b.map((x) => x.mbs)), 0)} MB/s`;
    for (const m of ['ch-run', 'ch-run --join']) {
      const x = pp[m][size];
      line += ` | ${m} ${fmt(median(x.map((y) => y.us)))} us (×${fmt(median(x.map((y) => y.us)) / median(b.map((y) => y.us)), 3)})`;
    }
    console.log(line);
  }
  console.log('\nallreduce (4 ranks, one node): time per operation');
  for (const size of Object.keys(ar.bare)) {
    const b = median(ar.bare[size].map((x) => x.us));
    let line = `  ${size.padStart(8)} B  bare ${fmt(b)} us ${fmt(median(ar.bare[size].map((x) => x.mbs)), 0)} MB/s`;
    for (const m of ['ch-run', 'ch-run --join']) {
      const x = median(ar[m][size].map((y) => y.us));
      line += ` | ${m} ${fmt(x)} us (×${fmt(x / b, 3)})`;
    }
    console.log(line);
  }
  console.log('\nlaunch: srun -n 32 of /bin/true, wall time');
  for (const m of Object.keys(modes))
    console.log(`  ${m.padEnd(14)} ${fmt(median(launch[m]), 0)} ms (×${fmt(median(launch[m]) / median(launch.bare), 2)})`);
} finally {
  await c.stop();
  rmSync(bare, { recursive: true, force: true });
}
