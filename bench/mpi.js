// MPI in a container vs bare metal, under srun on the private test cluster
// (test/helpers/slurm.js): ping-pong latency/bandwidth and allreduce bandwidth
// (examples/mpihello's programs), plus the launch time of a 32-rank step bare,
// with ch-run, and with ch-run --join. Ratios come from the same run, with
// bare and container interleaved. Needs root (it starts Slurm) and a staged
// package: CH_TEST_DIR=... node test/setup.js && CH_TEST_DIR=... node bench/mpi.js
// REPS (default 3) repetitions; medians are printed.
//
// Two bare baselines: Open MPI's defaults, and the transport ch-run's policy
// selects in the container (ranks in separate containers can't use CMA single
// copy, so ch-run sets OMPI_MCA_btl_vader_single_copy_mechanism=none unless
// --join): the container's cost is the ratio to the bare run with the same
// transport; the ratio to bare defaults shows what that policy costs or saves
// on this machine. Allreduce uses at most as many ranks as cores: busy-polling
// ranks beyond that measure the scheduler, not MPI.

import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN } from '../test/helpers/env.js';
import { compileMpiPrograms, mpiImage } from '../test/helpers/mpi-image.js';
import { startCluster } from '../test/helpers/slurm.js';
import { execa } from 'execa';
import { median } from './common.js';

const REPS = Number(process.env.REPS ?? 3);
const CHRUN = join(BIN, 'ch-run');

const img = await mpiImage();
if (!img.dir) { console.error(`no MPI image: ${img.reason}`); process.exit(1); }
const bare = mkdtempSync('/var/tmp/ch-bench-mpi-');
await compileMpiPrograms(bare);
await execa('chmod', ['-R', 'a+rX', bare]);
const c = await startCluster({ dir: '/var/tmp/ch-bench-slurm', portBase: 17180 });
if (c.reason) { console.error(c.reason); process.exit(1); }

async function step(args, env = '') {
  const t = process.hrtime.bigint();
  const r = await c.run('srun', [...(env ? [`--export=ALL,${env}`] : []), ...args], { timeout: 300000 });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.exitCode !== 0) throw new Error(`srun ${args.join(' ')}: ${r.all}`);
  return { out: r.stdout, ms };
}

const NOCMA = 'OMPI_MCA_btl_vader_single_copy_mechanism=none';
const modes = {
  bare: { argv: (p, a) => [join(bare, p), ...a] },
  'bare, no CMA': { argv: (p, a) => [join(bare, p), ...a], env: NOCMA },
  'ch-run': { argv: (p, a) => [CHRUN, img.dir, '--', `/${p}`, ...a] },
  'ch-run --join': { argv: (p, a) => [CHRUN, '--join', img.dir, '--', `/${p}`, ...a] },
};
const AR_RANKS = Math.max(2, Math.min(4, (await import('node:os')).availableParallelism()));
// What each container mode is compared with: bare with the same transport.
const sameAs = { 'ch-run': 'bare, no CMA', 'ch-run --join': 'bare' };

try {
  const pp = {}; const ar = {}; const launch = {};
  for (let i = 0; i < REPS; i++) {
    for (const [m, { argv, env }] of Object.entries(modes)) {
      const r1 = await step(['--mpi=pmix', '-n', '2', ...argv('pingpong', [String(1 << 22), '2000'])], env);
      for (const l of r1.out.matchAll(/^pingpong (\d+) bytes ([\d.]+) us ([\d.]+) MB\/s$/gm))
        ((pp[m] ??= {})[l[1]] ??= []).push({ us: Number(l[2]), mbs: Number(l[3]) });
      const r2 = await step(['--mpi=pmix', '-n', String(AR_RANKS), ...argv('allreduce', [String(1 << 22), '50'])], env);
      for (const l of r2.out.matchAll(/^allreduce (\d+) bytes \d+ iters ([\d.]+) us\/op ([\d.]+) MB\/s$/gm))
        ((ar[m] ??= {})[l[1]] ??= []).push({ us: Number(l[2]), mbs: Number(l[3]) });
      if (m === 'bare, no CMA') continue;
      const tr = m === 'bare' ? ['/bin/true'] : [...argv('x', []).slice(0, -1), '/bin/true'];
      (launch[m] ??= []).push((await step(['-n', '32', ...tr])).ms);
    }
  }
  const fmt = (x, d = 2) => x.toFixed(d);
  console.log(`MPI under srun --mpi=pmix, ${REPS} reps, medians (one host, loopback; ratios container/bare)`);
  const report = (title, data) => {
    console.log(title);
    for (const size of Object.keys(data.bare)) {
      const us = (m) => median(data[m][size].map((x) => x.us));
      let line = `  ${size.padStart(8)} B  bare ${fmt(us('bare'))} us, no CMA ${fmt(us('bare, no CMA'))} us`;
      for (const m of ['ch-run', 'ch-run --join'])
        line += ` | ${m} ${fmt(us(m))} us: ×${fmt(us(m) / us(sameAs[m]), 3)} same transport, ×${fmt(us(m) / us('bare'), 3)} bare defaults`;
      console.log(line);
    }
    const sizes = Object.keys(data.bare);
    const geo = (m) => Math.exp(sizes.reduce((acc, size) => acc + Math.log(
      median(data[m][size].map((x) => x.us)) / median(data[sameAs[m]][size].map((x) => x.us))), 0) / sizes.length);
    console.log(`  geometric mean over sizes, same transport: ch-run ×${fmt(geo('ch-run'), 3)}, `
      + `ch-run --join ×${fmt(geo('ch-run --join'), 3)} (target <= 1.01)`);
  };
  report('\nping-pong (2 ranks, one node): one-way latency', pp);
  report(`\nallreduce (${AR_RANKS} ranks, one node): time per operation`, ar);
  console.log('\nlaunch: srun -n 32 of /bin/true, wall time');
  for (const m of Object.keys(launch))
    console.log(`  ${m.padEnd(14)} ${fmt(median(launch[m]), 0)} ms (×${fmt(median(launch[m]) / median(launch.bare), 2)})`);
} finally {
  await c.stop();
  rmSync(bare, { recursive: true, force: true });
}
