// The SPANK plugin vs the prefix form vs bare srun: wall time of one step,
// `srun -N4 -n32 true`, on the private test cluster's four fake nodes
// (test/helpers/slurm.js, the plugin in its plugstack.conf). Modes:
//   bare                       srun ... true
//   prefix ch-run --join DIR   srun ... ch-run --join DIR -- true
//   plugin DIR                 srun ... --ch-image=DIR true (every round but the first a later step:
//                              ch-run's memoized plan, kept by the first, hits on every node)
//   plugin DIR, no memo        the same, CH_RUN_NO_CACHE=1: every step plans (Node on every node), as
//                              every step did when the plugin gave a literal --join-tag per step
//   plugin .sqfs               --ch-image=IMAGE.sqfs: the shared SquashFS mount, started by the first
//                              round and reused while it lingers (CH_RUN_SQUASH_LINGER, default 30 s)
//   plugin .sqfs, no memo      the same, CH_RUN_NO_CACHE=1
//   plugin tarball, first      --ch-image=TARBALL, the node caches emptied first (imports: once per node)
//   plugin tarball, later      the same again (cached: pyxis's import-once is the anchor)
// Interleaved rounds, medians. Needs root (it starts Slurm) and a staged
// package: CH_TEST_DIR=... node test/setup.js && CH_TEST_DIR=... node bench/spank.js
// REPS (default 5), TASKS (default 32). Real launches: CH_RUN_MEMO_VERIFY=0 (the suite's check mode
// replans every launch), and a plan directory of the bench's own.

import { execa } from 'execa';
import { chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, image, IMAGES, PKG } from '../test/helpers/env.js';
import { startCluster } from '../test/helpers/slurm.js';
import { median } from './common.js';

const REPS = Number(process.env.REPS ?? 5);
const TASKS = String(process.env.TASKS ?? 32);
const CHRUN = join(BIN, 'ch-run');
const WORK = '/var/tmp/ch-bench-spank';
rmSync(WORK, { recursive: true, force: true });
mkdirSync(WORK, { recursive: true });
chmodSync(WORK, 0o755);
const TARBALL = join(WORK, 'busybox.tar.gz');
await execa('tar', ['-C', IMAGES, '-czf', TARBALL, 'busybox']);
chmodSync(TARBALL, 0o644);
const SQFS = join(WORK, 'busybox.sqfs');
await execa('mksquashfs', [image('busybox'), SQFS, '-noappend', '-quiet', '-no-progress', '-all-root']);
chmodSync(SQFS, 0o644);
await new Promise((res) => setTimeout(res, 1100));   // a plan that read a file younger than 1 s isn't kept

const c = await startCluster({ dir: '/var/tmp/ch-bench-slurm-spank', portBase: 17190,
  plugstack: `required ${join(PKG, 'build/Release/ch_spank.so')} cache=/var/tmp/%u.ch/spank-bench/%n\n` });
if (c.reason) { console.error(c.reason); process.exit(1); }
const PLANS = join(WORK, 'plans');
mkdirSync(PLANS, { mode: 0o700 });
chownSync(PLANS, c.user.uid, c.user.gid);
const ENV = { CH_RUN_MEMO_VERIFY: '0', CH_RUN_CACHE_DIR: PLANS };
const clearCache = () => rmSync(`/var/tmp/${c.user.name}.ch/spank-bench`, { recursive: true, force: true });

async function step(args, env = {}) {
  const t = process.hrtime.bigint();
  const r = await c.run('srun', ['-p', 'four', '-N4', '-n', TASKS, ...args], { timeout: 300000, env: { ...ENV, ...env } });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.exitCode !== 0) throw new Error(`srun ${args.join(' ')}: ${r.all}`);
  return ms;
}

const modes = {
  bare: () => step(['true']),
  'prefix ch-run --join DIR': () => step([CHRUN, '--join', image('busybox'), '--', 'true']),
  'plugin DIR': () => step([`--ch-image=${image('busybox')}`, 'true']),
  // What every step cost before the plugin's ch-run could hit (a literal --join-tag per step): planning.
  'plugin DIR, no memo': () => step([`--ch-image=${image('busybox')}`, 'true'], { CH_RUN_NO_CACHE: '1' }),
  'plugin .sqfs': () => step([`--ch-image=${SQFS}`, 'true']),
  'plugin .sqfs, no memo': () => step([`--ch-image=${SQFS}`, 'true'], { CH_RUN_NO_CACHE: '1' }),
  'plugin tarball, first': () => { clearCache(); return step([`--ch-image=${TARBALL}`, 'true']); },
  'plugin tarball, later': () => step([`--ch-image=${TARBALL}`, 'true']),
};

try {
  const times = Object.fromEntries(Object.keys(modes).map((m) => [m, []]));
  await modes.bare();   // warm-up: slurmd, the page cache
  const first = { 'plugin DIR, first step': await modes['plugin DIR'](), 'plugin .sqfs, first step': await modes['plugin .sqfs']() };
  for (let i = 0; i < REPS; i++)
    for (const [m, run] of Object.entries(modes)) times[m].push(await run());
  const base = median(times.bare);
  console.log(`srun -p four -N4 -n${TASKS}: step wall time, median of ${REPS} (ms)`);
  for (const [m, ts] of Object.entries(times))
    console.log(`  ${m.padEnd(28)} ${median(ts).toFixed(0).padStart(6)}  (+${(median(ts) - base).toFixed(0)} over bare; `
      + `min ${Math.min(...ts).toFixed(0)}, max ${Math.max(...ts).toFixed(0)})`);
  for (const [m, ms] of Object.entries(first)) console.log(`  ${m.padEnd(28)} ${ms.toFixed(0).padStart(6)}  (one run)`);
} finally {
  clearCache();
  await c.stop();
  // The shared mount's holder would linger past the cluster: ours is the bench user's ch-run naming our image.
  const ps = (await execa('ps', ['-u', String(c.user.uid), '-o', 'pid=,args='], { reject: false })).stdout;
  for (const l of ps.split('\n'))
    if (l.includes('ch-run') && l.includes(SQFS)) try { process.kill(Number(l.trim().split(' ')[0]), 'SIGKILL'); } catch {}
  rmSync(WORK, { recursive: true, force: true });
}
