// ch-run --join without Slurm: a peer arriving late, the peer count taken
// from mpirun's environment (for real, and by the variables alone) and from
// Slurm's, in the order lib/container/join.ts documents. Runs as the unprivileged
// test user (or as whoever runs it, when not root).
//
// Serial: with no --join-tag and no Slurm step, the group tag is the parent
// process's pid, which every ch-run this file starts shares.

import test from 'ava';
import { execa } from 'execa';
import { join } from 'node:path';
import { asUser, BIN, ch, image, testUser, unavailable, userEnv } from './helpers/env.js';
import { joinGroup, waitFor } from './security/lib.js';

const BB = () => image('busybox');
const NS = ['sh', '-c', 'readlink /proc/self/ns/mnt'];
// A wrong peer count must end in a clear error, not a long wait.
const QUICK = { CH_RUN_JOIN_TIMEOUT: '20' };

async function have(cmd) {
  return (await execa('sh', ['-c', `command -v ${cmd}`], { reject: false })).exitCode === 0;
}

test.serial('a peer arriving after the winner has made the container joins it', async (t) => {
  const tag = `late-${process.pid}`;
  const winner = ch('ch-run', ['--join-ct', '2', '--join-tag', tag, BB(), '--', ...NS], { env: { CH_RUN_JOIN_TIMEOUT: '120' } });
  // The winner has built the container (namespaces, mounts) and waits for its peer.
  const g = await waitFor(() => {
    const x = joinGroup(testUser().uid, tag);
    return (x?.state === 'ready' && x.winner === winner.pid) || winner.exitCode !== null ? x ?? {} : null;
  }, 'the winner to wait for its peer');
  t.like(g, { state: 'ready', ct: 2, arrived: 1 }, 'winner ready, no peer yet');
  t.is(winner.exitCode, null, 'winner still waiting');
  const peer = await ch('ch-run', ['--join-ct', '2', '--join-tag', tag, BB(), '--', ...NS], { env: QUICK });
  const w = await winner;
  t.is(peer.exitCode, 0, peer.stderr);
  t.is(w.exitCode, 0, w.stderr);
  t.regex(w.stdout, /^mnt:\[\d+\]$/);
  t.is(peer.stdout, w.stdout, 'one mount namespace');
  t.is(joinGroup(testUser().uid, tag), null, 'group file removed');
});

/** Two ch-run --join (no count, no tag) started together with ENV; their results. */
function pair(env) {
  return Promise.all([0, 1].map(() => ch('ch-run', ['--join', BB(), '--', ...NS], { env: { ...QUICK, ...env } })));
}

for (const [label, env] of [
  ["mpirun's OMPI_COMM_WORLD_LOCAL_SIZE", { OMPI_COMM_WORLD_LOCAL_SIZE: '2', SLURM_CPUS_ON_NODE: '8' }],
  ["Slurm's SLURM_STEP_TASKS_PER_NODE", { SLURM_STEP_TASKS_PER_NODE: '3,2(x2)', SLURM_NODEID: '2', SLURM_CPUS_ON_NODE: '8' }],
  ['the SLURM_CPUS_ON_NODE fallback', { SLURM_CPUS_ON_NODE: '2' }],
  ['the SLURM_CPUS_ON_NODE fallback, SLURM_STEP_TASKS_PER_NODE unusable', { SLURM_STEP_TASKS_PER_NODE: 'junk', SLURM_CPUS_ON_NODE: '2' }],
]) {
  test.serial(`--join: peer count from ${label}`, async (t) => {
    const [a, b] = await pair(env);
    t.is(a.exitCode, 0, a.stderr);
    t.is(b.exitCode, 0, b.stderr);
    t.regex(a.stdout, /^mnt:\[\d+\]$/);
    t.is(a.stdout, b.stdout, 'both in one container');
  });
}

test.serial('--join: a count of 1 from the environment gives each its own container', async (t) => {
  // The control for the tests above: the count really comes from the
  // variable. The first keeps its container alive (reading its stdin) while
  // the second starts, so namespace ids can't be recycled in between.
  const env = { ...QUICK, SLURM_CPUS_ON_NODE: '1' };
  const first = ch('ch-run', ['--join', BB(), '--', 'sh', '-c', 'readlink /proc/self/ns/mnt; read x; true'], { env });
  let out = '';
  first.stdout.on('data', (b) => { out += b; });
  await waitFor(() => out.includes('\n') || first.exitCode !== null, 'the first to run');
  const second = await ch('ch-run', ['--join', BB(), '--', ...NS], { env });
  first.stdin.end();
  const a = await first;
  t.is(a.exitCode, 0, a.stderr);
  t.is(second.exitCode, 0, second.stderr);
  t.regex(second.stdout, /^mnt:\[\d+\]$/);
  t.not(a.stdout.trim(), second.stdout, 'two containers');
});

test.serial('--join: no usable count is a clear error naming the variables', async (t) => {
  const r = await ch('ch-run', ['--join', BB(), '--', 'true'], { env: { SLURM_CPUS_ON_NODE: '0', OMPI_COMM_WORLD_LOCAL_SIZE: 'x' } });
  t.is(r.exitCode, 31, r.stderr);
  t.regex(r.stderr, /^ch-run\[\d+\]: error: --join: no valid peer group size found: give --join-ct, or run under mpirun or srun \(unusable: OMPI_COMM_WORLD_LOCAL_SIZE: no digits found: 'x'; SLURM_CPUS_ON_NODE: not positive: '0'\)/m);
  const none = await ch('ch-run', ['--join', BB(), '--', 'true']);
  t.is(none.exitCode, 31);
  t.regex(none.stderr, /\(OMPI_COMM_WORLD_LOCAL_SIZE, SLURM_STEP_TASKS_PER_NODE, SLURM_CPUS_ON_NODE all unset\)/);
});

test.serial('--join under a real mpirun: count and tag from mpirun, one container for its ranks', async (t) => {
  if (!(await have('mpirun'))) return unavailable(t, 'mpirun', 'Open MPI (openmpi-bin) not installed');
  const argv = [...asUser(), 'mpirun', '--oversubscribe', '-np', '3', join(BIN, 'ch-run'), '--join', BB(), '--',
    'sh', '-c', 'echo "$OMPI_COMM_WORLD_LOCAL_SIZE $(readlink /proc/self/ns/mnt)"'];
  const r = await execa(argv[0], argv.slice(1), { reject: false, all: true, env: userEnv(undefined, QUICK),
    extendEnv: false, cwd: '/', timeout: 120_000 });
  t.is(r.exitCode, 0, r.all);
  const lines = r.stdout.trim().split('\n');
  t.is(lines.length, 3, r.all);
  for (const l of lines) t.regex(l, /^3 mnt:\[\d+\]$/);
  t.is(new Set(lines).size, 1, 'all ranks in one container');
});
