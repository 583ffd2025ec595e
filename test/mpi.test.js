// Real Open MPI in a container: srun --mpi=pmix (one node, four fake nodes,
// with and without --join), mpirun outside Slurm and inside an allocation.
// The image is Debian + Open MPI runtime + examples/mpihello's programs.

import test from 'ava';
import { execa } from 'execa';
import { join } from 'node:path';
import { asUser, BIN, unavailable, userEnv } from './helpers/env.js';
import { mpiImage } from './helpers/mpi-image.js';
import { useCluster } from './helpers/slurm.js';

const c = useCluster(test, 'wt-mpi', 17120);
const CHRUN = join(BIN, 'ch-run');
let IMG = null;
let imgReason = null;

test.before(async () => {
  const r = await mpiImage();
  IMG = r.dir ?? null;
  imgReason = r.reason ?? null;
});

function ready(t) {
  if (!IMG) { unavailable(t, 'MPI image', imgReason); return null; }
  if (!c.cluster) { unavailable(t, 'Slurm cluster', c.reason); return null; }
  return c.cluster;
}

/** Parse hello's lines: rank, size, userns, mntns, uid, node ($SLURMD_NODENAME or -). */
function hellos(out) {
  const res = [];
  for (const m of out.matchAll(/^hello rank (\d+) of (\d+) on \S+ userns (\d+) mntns (\d+) uid (\d+) node (\S+)$/gm))
    res.push({ rank: Number(m[1]), size: Number(m[2]), userns: m[3], mntns: m[4], uid: Number(m[5]), node: m[6] });
  return res.sort((a, b) => a.rank - b.rank);
}

function checkRanks(t, r, n, uid) {
  t.is(r.exitCode, 0, r.all);
  const h = hellos(r.stdout);
  t.deepEqual(h.map((x) => x.rank), [...Array(n).keys()], r.all);
  for (const x of h) { t.is(x.size, n); t.is(x.uid, uid); }
  t.regex(r.stdout, new RegExp(`hello done: ${n} ranks, allreduce ok`));
  return h;
}

const WRAP = ['/hello'];
const distinct = (xs) => new Set(xs).size;

test.serial('srun --mpi=pmix -n 4 ch-run IMG -- /hello: one node, a container per rank', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('srun', ['--mpi=pmix', '-n', '4', CHRUN, IMG, '--', '/hello'], { timeout: 120000 });
  const h = checkRanks(t, r, 4, s.user.uid);
  t.is(distinct(h.map((x) => x.userns)), 4);
  t.notRegex(r.all, /WARNING|CMA|single.copy/i);
});

test.serial('srun --mpi=pmix -n 4 ch-run --join: one node, one container', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('srun', ['--mpi=pmix', '-n', '4', CHRUN, '--join', IMG, '--', '/hello'], { timeout: 120000 });
  const h = checkRanks(t, r, 4, s.user.uid);
  t.is(distinct(h.map((x) => x.userns)), 1);
  t.is(distinct(h.map((x) => x.mntns)), 1);
});

test.serial('srun --mpi=pmix -N 4 on fake nodes, without --join', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('srun', ['--mpi=pmix', '-p', 'four', '-N', '4', '-n', '4', CHRUN, IMG, '--', ...WRAP],
    { timeout: 120000 });
  const h = checkRanks(t, r, 4, s.user.uid);
  t.deepEqual(h.map((x) => x.node).sort(), ['n1', 'n2', 'n3', 'n4']);
  t.is(distinct(h.map((x) => x.userns)), 4);
});

test.serial('srun --mpi=pmix -N 4 -n 8 on fake nodes, with --join: one container per node', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('srun', ['--mpi=pmix', '-p', 'four', '-N', '4', '-n', '8', '--ntasks-per-node=2',
    CHRUN, '--join', IMG, '--', ...WRAP], { timeout: 120000 });
  const h = checkRanks(t, r, 8, s.user.uid);
  const byNode = new Map();
  for (const x of h) byNode.set(x.node, [...(byNode.get(x.node) ?? []), x.userns]);
  t.deepEqual([...byNode.keys()].sort(), ['n1', 'n2', 'n3', 'n4']);
  for (const [node, ns] of byNode) { t.is(ns.length, 2, node); t.is(distinct(ns), 1, node); }
  t.is(distinct([...byNode.values()].map((ns) => ns[0])), 4);
});

test.serial('an MPI rank exiting non-zero after MPI_Finalize: the step exits with its code', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('srun', ['--mpi=pmix', '-n', '4', CHRUN, IMG, '--', '/hello', '--exit', '2', '7'],
    { timeout: 120000 });
  t.is(r.exitCode, 7, r.all);
  t.regex(r.all, /task 2: Exited with exit code 7/);
});

test.serial('an MPI rank dying before MPI_Finalize: Slurm aborts the step and reports its code', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('srun', ['--mpi=pmix', '-n', '4', CHRUN, IMG, '--', '/hello', '--fail', '2', '7'],
    { timeout: 120000 });
  // The others are killed (SIGKILL: 137 is srun's status, the highest of the tasks'); the
  // failing rank's own code reaches Slurm through ch-run unchanged.
  t.not(r.exitCode, 0, r.all);
  t.regex(r.all, /rank 2 failing with 7/);
  t.regex(r.all, /task 2: Exited with exit code 7/);
});

test.serial('--join with 32 ranks on one node: one namespace, seen from inside', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('srun', ['--mpi=pmix', '-n', '32', CHRUN, '--join', IMG, '--', 'sh', '-c',
    'echo "ns $SLURM_PROCID $(readlink /proc/self/ns/user) $(readlink /proc/self/ns/mnt)"; exec /hello'],
  { timeout: 300000 });
  const h = checkRanks(t, r, 32, s.user.uid);
  t.is(distinct(h.map((x) => x.userns)), 1);
  t.is(distinct(h.map((x) => x.mntns)), 1);
  const ns = [...r.stdout.matchAll(/^ns (\d+) (user:\[\d+\]) (mnt:\[\d+\])$/gm)];
  t.is(ns.length, 32);
  t.is(distinct(ns.map((m) => m[2] + m[3])), 1);
  t.is(ns[0][2], `user:[${h[0].userns}]`);
  const host = (await execa('readlink', ['/proc/self/ns/user'])).stdout.trim();
  t.not(ns[0][2], host, 'ranks are in a container, not the host namespace');
});

test.serial('mpirun -np 4 ch-run IMG -- /hello outside Slurm', async (t) => {
  if (!IMG) return unavailable(t, 'MPI image', imgReason);
  const argv = [...asUser(), 'mpirun', '--oversubscribe', '-np', '4', CHRUN, IMG, '--', '/hello'];
  const r = await execa(argv[0], argv.slice(1), { reject: false, all: true, env: userEnv(), extendEnv: false,
    cwd: '/', timeout: 120000 });
  const h = checkRanks(t, r, 4, (await import('./helpers/env.js')).testUser().uid);
  t.is(distinct(h.map((x) => x.userns)), 4);
});

test.serial('mpirun -pernode ch-run inside an allocation (salloc -N 4)', async (t) => {
  const s = ready(t); if (!s) return;
  const r = await s.run('salloc', ['-p', 'four', '-N', '4', '--', 'mpirun', '-pernode', CHRUN, IMG, '--', ...WRAP],
    { timeout: 180000 });
  const h = checkRanks(t, r, 4, s.user.uid);
  t.deepEqual(h.map((x) => x.node).sort(), ['n1', 'n2', 'n3', 'n4']);
});
