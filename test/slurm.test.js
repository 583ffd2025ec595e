// ch-run under real Slurm (a private cluster on loopback, test/helpers/slurm.js):
// plain steps on one node and on four fake nodes, exit codes, scancel, leftovers.

import test from 'ava';
import { execa } from 'execa';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BIN, image, IMAGES, isRoot, needs, TEST_DIR, unavailable } from './helpers/env.js';
import { leftovers, useCluster } from './helpers/slurm.js';

const c = useCluster(test, `wt-slurm-${basename(TEST_DIR)}`, 17100);
const CHRUN = join(BIN, 'ch-run');

// The test cluster's slurmd and munged run as root: as another user, every test is skipped, saying so.
const serial = needs(test.serial, isRoot ? null : 'not root: the test cluster runs slurmd and munged as root');

function cluster(t) {
  if (!c.cluster) { unavailable(t, 'Slurm cluster', c.reason); return null; }
  return c.cluster;
}

serial('srun -n 4 ch-run IMG -- hostname', async (t) => {
  const s = cluster(t); if (!s) return;
  const r = await s.run('srun', ['-n', '4', CHRUN, image('busybox'), '--', 'hostname'], { timeout: 60000 });
  t.is(r.exitCode, 0, r.all);
  const host = (await execa('hostname')).stdout.trim();
  t.deepEqual(r.stdout.trim().split('\n'), [host, host, host, host]);
});

serial('srun -N 4 on fake nodes: one task per node, Slurm environment inside', async (t) => {
  const s = cluster(t); if (!s) return;
  const r = await s.run('srun', ['-p', 'four', '-N', '4', '-n', '4', CHRUN, image('busybox'), '--',
    'sh', '-c', 'echo $SLURMD_NODENAME $SLURM_PROCID $(id -u) $CH_RUNNING'], { timeout: 60000 });
  t.is(r.exitCode, 0, r.all);
  const lines = r.stdout.trim().split('\n').sort();
  t.deepEqual(lines.map((l) => l.split(' ')[0]), ['n1', 'n2', 'n3', 'n4']);
  t.deepEqual(lines.map((l) => l.split(' ')[1]).sort(), ['0', '1', '2', '3']);
  for (const l of lines) t.true(l.endsWith(` ${s.user.uid} Weird Al Yankovic`), l);
});

serial('a failing task makes the step fail with its exit code', async (t) => {
  const s = cluster(t); if (!s) return;
  const r = await s.run('srun', ['-n', '4', CHRUN, image('busybox'), '--',
    'sh', '-c', 'if [ "$SLURM_PROCID" = 2 ]; then exit 7; fi'], { timeout: 60000 });
  t.is(r.exitCode, 7, r.all);
  t.regex(r.all, /task 2: Exited with exit code 7/);
});

serial('scancel delivers SIGTERM to the program in the container', async (t) => {
  const s = cluster(t); if (!s) return;
  const mark = `/tmp/ch-test-sigterm-${process.pid}`;
  rmSync(mark, { force: true });
  rmSync(`${mark}.ready`, { force: true });
  // The trap runs when sleep (also signalled) returns; TERM is what it saw.
  const step = s.run('srun', ['-J', 'ch-sigterm', '-n', '1', CHRUN, image('busybox'), '--', 'sh', '-c',
    `trap 'echo TERM > ${mark}; exit 143' TERM; touch ${mark}.ready; while :; do sleep 1; done`],
  { timeout: 60000 });
  const until = Date.now() + 30000;
  while (!existsSync(`${mark}.ready`) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  t.true(existsSync(`${mark}.ready`), 'the program started');
  const sc = await s.run('scancel', ['--name', 'ch-sigterm']);
  t.is(sc.exitCode, 0, sc.all);
  const r = await step;
  t.not(r.exitCode, 0);
  t.true(existsSync(mark), `the program's TERM trap did not run; srun said: ${r.all}`);
  t.is(readFileSync(mark, 'utf8').trim(), 'TERM');
  rmSync(mark, { force: true });
  rmSync(`${mark}.ready`, { force: true });
});

serial('steps leave no process, mount or /dev/shm file behind', async (t) => {
  const s = cluster(t); if (!s) return;
  const r = await s.run('srun', ['-n', '4', CHRUN, '--join', image('busybox'), '--',
    'sh', '-c', 'echo $SLURM_JOB_ID'], { timeout: 60000 });
  t.is(r.exitCode, 0, r.all);
  const jobid = r.stdout.trim().split('\n')[0];
  t.regex(jobid, /^[0-9]+$/);
  // Slurm reaps steps asynchronously; give it a moment before looking.
  let left;
  for (let i = 0; i < 50; i++) {
    left = await leftovers(s, [IMAGES], jobid);
    if (left.procs.length === 0 && left.mounts.length === 0 && left.shm.length === 0) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  t.deepEqual(left, { procs: [], mounts: [], shm: [] });
});
