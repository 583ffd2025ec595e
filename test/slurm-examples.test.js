// The examples, run the way their READMEs say on the private four-node
// cluster: image tarballs in a shared directory that is not /tmp, unpacked on
// every node with `srun ch-tar2dir` into a node-local directory, jobs
// submitted with sbatch (dask and spark from the shared directory, which
// holds their rendezvous files), each job with a /tmp of its own per node. hello's
// Dockerfile is built for real (podman, from a local base image through
// `--build-arg BASE`); the others' images are built offline to match their
// Dockerfiles (test/helpers/mpi-image.js), since apt needs a mirror.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync,
  symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, image, needs, notRoot, testUser, unavailable } from './helpers/env.js';
import { until } from './helpers/fixtures.js';
import { daskImage, debImage, mpiImage } from './helpers/mpi-image.js';
import { leftovers, useCluster, watchOpens } from './helpers/slurm.js';

// Root-only: without root these are skipped, and the title says why.
const serialRoot = needs(test.serial, notRoot && 'needs root: the images and the Slurm test cluster are made as root');

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
// Each job gets a /tmp (and /dev/shm) of its own on each node, as on separate
// machines: an example that counts on /tmp being shared fails here.
const c = useCluster(test, 'wt-examples', 17140,
  { nodeLocalTmp: true, tmpfs: '/var/tmp/ch-test-slurm-wt-examples/tmpfs' });
const PATH = `${BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`;
const PODMAN_ARGS = ['--isolation=chroot', '--pull=never', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=4096:4096'];
const TAG = `chtk-examples-${process.pid}`;
let podmanImages = [];

function cluster(t) {
  if (!c.cluster) { unavailable(t, 'Slurm cluster', c.reason); return null; }
  return c.cluster;
}

/**
 * The cluster's directories for the examples, owned by the test user:
 * shared (every node reads it; not /tmp) and nodelocal ($CH_IMAGES: where
 * images are unpacked; one host's, but ch-tar2dir serializes the nodes' runs).
 */
function dirs(s) {
  const d = { shared: join(s.dir, 'shared'), nodelocal: join(s.dir, 'nodelocal') };
  for (const p of Object.values(d)) {
    if (existsSync(p)) continue;
    mkdirSync(p, { mode: 0o755 });
    chownSync(p, s.user.uid, s.user.gid);
  }
  return d;
}

/** sbatch --wait EXAMPLE/SCRIPT ARGS as the test user, from directory CWD; returns { r, out, jobid }. */
async function sbatch(s, example, script, args, { sbatchArgs = [], vars = {}, cwd = '/' } = {}) {
  const job = join(s.dir, 'jobs', `${example}-${script}`);
  copyFileSync(join(repo, 'examples', example, script), job);
  chmodSync(job, 0o755);
  const out = join(s.dir, 'jobs', `${example}.out`);
  rmSync(out, { force: true });
  const d = dirs(s);
  const r = await s.run('sbatch', ['--wait', '--parsable', `--output=${out}`, ...sbatchArgs, job, ...args],
    { timeout: 400000, cwd, env: { PATH, CH_IMAGES: d.nodelocal, ...vars } });
  return { r, out: existsSync(out) ? readFileSync(out, 'utf8') : '(no output file)', jobid: r.stdout.trim().split(';')[0] };
}

/** Pack image directory IMG as SHARED/NAME.tar (what ch-builder2tar would leave there), readable by all. */
async function packImage(s, img, name) {
  const tar = join(dirs(s).shared, `${name}.tar`);
  // The cached images are hard-linked by other test files running at the
  // same time (slurm-site's cp -al), which changes their files' ctime: GNU
  // tar then says "file changed as we read it" and exits 1, though no byte
  // changed. That, and only that, is let pass.
  const r = await execa('tar', ['-C', img, '-cf', tar, '.'], { reject: false });
  const other = r.stderr.split('\n').filter((l) => l && !/: file changed as we read it$/.test(l));
  if (r.exitCode !== 0 && (r.exitCode !== 1 || other.length)) throw new Error(`tar of ${img} failed (exit ${r.exitCode}): ${r.stderr}`);
  chmodSync(tar, 0o644);
  return tar;
}

/** As the READMEs of dask and spark say: unpack TAR on every node of N with srun ch-tar2dir. */
async function unpackOnNodes(t, s, tar, n) {
  const d = dirs(s);
  const r = await s.run('srun', ['-p', 'four', '-N', String(n), '--ntasks-per-node=1', join(BIN, 'ch-tar2dir'), tar,
    d.nodelocal], { timeout: 300000, env: { PATH } });
  t.is(r.exitCode, 0, r.all);
  return join(d.nodelocal, tar.split('/').pop().replace(/\.tar$/, ''));
}

test.after.always(async () => {
  for (const i of podmanImages) await execa('podman', ['rmi', '-f', i], { reject: false });
  if (c.cluster) for (const d of ['shared', 'nodelocal']) rmSync(join(c.cluster.dir, d), { recursive: true, force: true });
});

serialRoot('examples/hello: ch-build (BASE from a local image), ch-builder2tar to a shared dir, sbatch -N 4', async (t) => {
  const s = cluster(t); if (!s) return;
  if ((await execa('sh', ['-c', 'command -v podman'], { reject: false })).exitCode !== 0)
    return unavailable(t, 'podman', 'not installed');
  const d = dirs(s);
  // The local base: the suite's busybox image, imported into podman.
  const base = `localhost/${TAG}-busybox`;
  const baseTar = join(s.dir, 'busybox.tar');
  await execa('tar', ['-C', image('busybox'), '-cf', baseTar, '.']);
  await execa('podman', ['import', baseTar, base]);
  podmanImages.push(base, `localhost/${TAG}-hello`);
  const b = await execa(join(BIN, 'ch-build'), ['-b', 'podman', '-t', `${TAG}-hello`, '--build-arg', `BASE=${base}`,
    ...PODMAN_ARGS, join(repo, 'examples/hello')], { reject: false, all: true });
  t.is(b.exitCode, 0, b.all);
  const x = await execa(join(BIN, 'ch-builder2tar'), ['-b', 'podman', `${TAG}-hello`, d.shared], { reject: false, all: true });
  t.is(x.exitCode, 0, x.all);
  const tar = join(d.shared, `${TAG}-hello.tar.gz`);
  chmodSync(tar, 0o644);

  const { r, out, jobid } = await sbatch(s, 'hello', 'hello.sbatch', [tar], { sbatchArgs: ['-p', 'four', '-N', '4'] });
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  const lines = [...out.matchAll(/^hello from task (\d) of 4 on (n\d) uid (\d+) container yes$/gm)];
  t.deepEqual(lines.map((m) => m[1]).sort(), ['0', '1', '2', '3'], out);
  t.deepEqual(lines.map((m) => m[2]).sort(), ['n1', 'n2', 'n3', 'n4'], out);
  for (const m of lines) t.is(Number(m[3]), s.user.uid);
  t.regex(out, new RegExp(`job ${jobid} done`));
  t.true(existsSync(join(d.nodelocal, `${TAG}-hello`, 'hello.sh')), 'unpacked into $CH_IMAGES');
});

serialRoot('examples/sbcast: image read once, sbcast to each node\'s own /tmp, .sqfs and unpacked tarball run from there', async (t) => {
  // The fake nodes share one host, so a plain /tmp would be one directory
  // for all four and "node-local" a fiction: this cluster gives each job a
  // /tmp of its own per node (job_container/tmpfs, BasePath/<node>/<job>),
  // into which sbcast, run by slurmd for that node, writes. So each copy is
  // checked where it must be, under the node's own BasePath directory, and
  // each rank against its node's copy.
  const s = cluster(t); if (!s) return;
  const d = dirs(s);
  const sqfs = join(d.shared, 'sbcast.sqfs');
  const cv = await execa(join(BIN, 'ch-convert'), ['-q', image('busybox'), sqfs], { reject: false, all: true });
  t.is(cv.exitCode, 0, cv.all);
  chmodSync(sqfs, 0o644);
  const tar = join(d.shared, 'sbcast.tar.gz');
  await execa('tar', ['-C', image('busybox'), '-czf', tar, '.']);
  chmodSync(tar, 0o644);
  const watch = await watchOpens([sqfs, tar]);   // who reads the shared copies during the job
  const { r, out, jobid } = await sbatch(s, 'sbcast', 'sbcast.sbatch', [sqfs, tar], { sbatchArgs: ['-p', 'four', '-N', '4'] });
  const opens = await watch.stop();
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  // Read once: one process (sbcast, on the batch node) opened each shared file, not one per node.
  t.is(new Set(opens[sqfs]).size, 1, `processes that opened ${sqfs}: ${opens[sqfs].join(' ')}`);
  t.is(new Set(opens[tar]).size, 1, `processes that opened ${tar}: ${opens[tar].join(' ')}`);
  const nodes = ['n1', 'n2', 'n3', 'n4'];
  const local = `/tmp/${s.user.name}.ch-sbcast.${jobid}`;
  const nodeTmp = (n) => `${join(s.dir, 'nodetmp', n, jobid)}/`;
  const esc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // Each node's copy: one per node, at the node-local path, on that node's own /tmp, distinct files.
  for (const f of ['image.sqfs', 'image.tar.gz', 'image']) {
    const copies = [...out.matchAll(new RegExp(`^copy on (n\\d): ${esc(`${local}/${f}`)} inode (\\d+:\\d+) on (.*)$`, 'gm'))];
    t.deepEqual(copies.map((m) => m[1]).sort(), nodes, `${f}: a copy on every node\n${out}`);
    for (const [, n, , src] of copies) t.true(src.includes(nodeTmp(n)), `${f} on ${n} lies in ${src}, not in ${nodeTmp(n)}`);
    t.is(new Set(copies.map((m) => m[2])).size, 4, `${f}: four distinct files`);
  }
  // (a) Each rank mounted its own node's copy: the task's line and ch-run's, under one PID.
  const ranks = (from) => [...out.matchAll(new RegExp(`^rank (\\d) on (n\\d) \\(pid (\\d+)\\) runs from ${esc(from)}$`, 'gm'))];
  const a = ranks(`${local}/image.sqfs`);
  t.deepEqual(a.map((m) => m[2]).sort(), nodes, out);
  for (const [, rank, n, pid] of a) {
    t.regex(out, new RegExp(`^ch-run\\[${pid}\\]: SquashFS ${esc(`${local}/image.sqfs`)} mounted at `, 'm'), `rank ${rank} on ${n}`);
    t.regex(out, new RegExp(`^rank ${rank} on ${n}: / is fuse\\.squashfuse /$`, 'm'), `rank ${rank} on ${n}`);
  }
  // (b) Each rank's root is the tree ch-tar2dir unpacked on its own node.
  const b = ranks(`${local}/image`);
  t.deepEqual(b.map((m) => m[2]).sort(), nodes, out);
  for (const [, rank, n] of b) {
    const m = new RegExp(`^rank ${rank} on ${n}: / is \\S+ (\\S+)$`, 'm').exec(out.slice(out.indexOf(`runs from ${local}/image\n`)));
    t.truthy(m, `rank ${rank} on ${n}: no root line\n${out}`);
    t.true(m?.[1].startsWith(nodeTmp(n)) && m[1].endsWith(`/${s.user.name}.ch-sbcast.${jobid}/image`), `rank ${rank} on ${n} ran from ${m?.[1]}`);
  }
  t.regex(out, new RegExp(`^job ${jobid} done$`, 'm'));
  // Slurm removes each node's job /tmp (job_container/tmpfs) as the node finishes the job, which can
  // come after sbatch -W returns under load: gone within a bounded wait, never left.
  for (const n of nodes) await until(`${n}: the job's /tmp ${nodeTmp(n)} removed`, () => !existsSync(nodeTmp(n)));
  for (const n of nodes) t.false(existsSync(nodeTmp(n)), `${n}: the job's /tmp is gone`);
  // Each node's SquashFS mount outlives the job by its holder's linger
  // (CH_RUN_SQUASH_LINGER, 30 s: native/core/holder.c; proctrack/linuxproc
  // doesn't kill a process that left the step's tree), then goes by itself.
  let left;
  for (const until = Date.now() + 45_000; Date.now() < until; await new Promise((res) => setTimeout(res, 500))) {
    left = await leftovers(s, [local], jobid);
    if (left.procs.length === 0 && left.mounts.length === 0 && left.shm.length === 0) break;
  }
  t.deepEqual(left, { procs: [], mounts: [], shm: [] }, 'no squashfuse, holder or mount left after the linger');
});

serialRoot('examples/mpihello: tarball in a shared dir, sbatch -N 2 (srun --mpi=pmix and mpirun)', async (t) => {
  const s = cluster(t); if (!s) return;
  const img = await mpiImage();
  if (!img.dir) return unavailable(t, 'MPI image', img.reason);
  const tar = await packImage(s, img.dir, 'mpihello');
  const { r, out, jobid } = await sbatch(s, 'mpihello', 'mpihello.sbatch', [tar], { sbatchArgs: ['-p', 'four', '-N', '2'] });
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  // The tarball unpacked by one task per node, with no complaint from srun about the job's --ntasks.
  t.notRegex(out, /can't honor/, out);
  t.is(out.match(/^ch-tar2dir\[\d+\]: .*\/mpihello: (unpacked|already unpacked)/gm)?.length, 2, out);
  t.is(out.match(/hello done: 4 ranks, allreduce ok/g)?.length, 2, out);
  const nodes = new Set([...out.matchAll(/^hello rank \d+ of 4 .* node (n\d)$/gm)].map((m) => m[1]));
  t.deepEqual([...nodes].sort(), ['n1', 'n2'], out);
  t.regex(out, /^allreduce ok$/m);
  t.regex(out, new RegExp(`job ${jobid} done`));
});

serialRoot('tools/test-cluster: root only; start (partition "four", 4 nodes, the default), sbatch -N 4 runs, status, stop leaves no daemon and no file', async (t) => {
  if (!existsSync('/usr/sbin/slurmctld')) return unavailable(t, 'Slurm', '/usr/sbin/slurmctld not installed');
  const dir = '/var/tmp/ch-test-cluster-command';
  const env = { ...process.env, CH_CLUSTER_DIR: dir, CH_CLUSTER_PORT: '17280' };
  const tool = join(repo, 'tools', 'test-cluster');
  const run = (cmd, o = {}) => execa(tool, [cmd], { env, reject: false, all: true, timeout: 180000, ...o });
  t.teardown(() => run('stop'));
  // Not root: refused, saying so (run as the test user, from a copy it can read).
  const u = testUser();
  {
    const r = await execa('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', '--', process.execPath, tool, 'start'],
      { env, reject: false, all: true, cwd: '/' });
    t.is(r.exitCode, 1, r.all);
    t.regex(r.all, /test-cluster: error: start needs root: slurmd and munged run as root/);
  }
  let r = await run('start');
  t.is(r.exitCode, 0, r.all);
  const conf = join(dir, 'slurm.conf');
  t.regex(r.stdout, new RegExp(`^ +export SLURM_CONF=${conf}$`, 'm'));
  const slurm = { ...process.env, SLURM_CONF: conf };
  const parts = (await execa('sinfo', ['-h', '-o', '%P %D'], { env: slurm })).stdout.split('\n').sort();
  t.deepEqual(parts, ['four* 4', 'one 1'], 'the default partition has the four nodes');
  // As the hello README says: sbatch -N 4, as an ordinary user.
  const out = join(dir, 'jobs', 'n4.out');
  r = await execa('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', '--', 'sbatch', '-N', '4', '--wait', `--output=${out}`,
    '--wrap', 'srun sh -c "echo on \\$SLURMD_NODENAME"'], { env: { PATH: process.env.PATH, SLURM_CONF: conf }, cwd: '/', reject: false, all: true, timeout: 120000 });
  t.is(r.exitCode, 0, r.all);
  t.deepEqual(readFileSync(out, 'utf8').trim().split('\n').sort(), ['on n1', 'on n2', 'on n3', 'on n4']);
  r = await run('status');
  t.is(r.exitCode, 0, r.all);
  t.regex(r.stdout, /^four\* +up .* 4 +idle n\[1-4\]$/m);
  // Stopped: none of its daemons or processes, none of its files.
  const { base } = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8'));
  const pids = readdirSync(dir).filter((f) => f.endsWith('.pid')).map((f) => Number(readFileSync(join(dir, f), 'utf8')));
  t.is(pids.length, 7, 'munged, slurmctld and five slurmd');
  r = await run('stop');
  t.is(r.exitCode, 0, r.all);
  const alive = (pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir); } catch { return false; } };
  t.deepEqual(pids.filter(alive), [], 'no daemon left');
  t.is((await execa('pgrep', ['-f', dir], { reject: false })).stdout, '', 'no process naming its directory');
  t.false(existsSync(dir));
  t.false(existsSync(`/dev/shm/ch-test-slurm-${base}`));
  r = await run('status');
  t.is(r.exitCode, 0, r.all);
  t.regex(r.stdout, /^not running/);
});

serialRoot('examples/dask: unpacked on both nodes, submitted from the shared dir: pi, clean shutdown', async (t) => {
  const s = cluster(t); if (!s) return;
  const img = await daskImage();
  if (!img.dir) return unavailable(t, 'Dask image', img.reason);
  const d = dirs(s);
  const local = await unpackOnNodes(t, s, await packImage(s, img.dir, 'dask'), 2);
  const { r, out, jobid } = await sbatch(s, 'dask', 'dask.sbatch', [local],
    { sbatchArgs: ['-p', 'four', '-N', '2'], vars: { DASK_HOST: '127.0.0.1' }, cwd: d.shared });
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  t.regex(out, /workers 2/, out);
  const m = /pi (\d\.\d+) from \d+ samples on 2 workers/.exec(out);
  t.truthy(m, out);
  t.true(Math.abs(Number(m?.[1]) - Math.PI) < 0.05, out);
  t.regex(out, /dask shutdown/);
  t.regex(out, /^scheduler exit 0, workers step exit 0$/m, out);   // a clean shutdown: both 0
  t.regex(out, new RegExp(`job ${jobid} done`));
  t.false(existsSync(join(d.shared, `dask-${jobid}`)), 'the job removed its directory in the shared dir');
  t.false(existsSync(`/tmp/dask-${jobid}`), 'nothing of the job in the host\'s /tmp');
  const left = await leftovers(s, [local], jobid);
  t.deepEqual(left.procs, [], 'no scheduler or worker left running');
});

serialRoot('examples/spark: the job itself, with a stand-in for Spark (shared conf, waits on logs, shutdown)', async (t) => {
  // No Spark here (see the next test): a busybox image whose spark-class and
  // spark-submit act out Spark's part as the job sees it: the master logs
  // that it is up, each worker registers in the master's log, spark-submit
  // reads the job's configuration from $SPARK_CONF_DIR. What this checks is
  // spark.sbatch: its shared directory, bindings, waits and shutdown.
  const s = cluster(t); if (!s) return;
  const d = dirs(s);
  const img = join(s.dir, 'spark-standin');
  rmSync(img, { recursive: true, force: true });
  await execa('cp', ['-a', image('busybox'), img]);
  mkdirSync(join(img, 'opt/spark/bin'), { recursive: true });
  const script = (name, body) => writeFileSync(join(img, 'opt/spark/bin', name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  script('spark-class', `case "$1" in
  *.Master) echo "Starting Spark master at spark://$3:$5"; echo "I have been elected leader! New state: ALIVE";;
  *.Worker) echo "Registering worker $SLURMD_NODENAME for $2" >> /mnt/0/master.log;;
  *) echo "no such class $1"; exit 1;;
esac
exec sleep 600`);
  script('spark-submit', `. "$SPARK_CONF_DIR/spark-env.sh" || exit 1
[ "$2" = "spark://$SPARK_MASTER_HOST:7077" ] || { echo "master $2, conf says $SPARK_MASTER_HOST"; exit 1; }
echo "workers: $(grep -c 'Registering worker' /mnt/0/master.log)"
echo "Pi is roughly 3.14159 (stand-in)"`);
  writeFileSync(join(img, 'ch/environment'), 'SPARK_HOME=/opt/spark\nPATH=/opt/spark/bin:/bin:/usr/bin\n');
  await execa('chmod', ['-R', 'a+rX', img]);
  const local = await unpackOnNodes(t, s, await packImage(s, img, 'spark-standin'), 2);
  const { r, out, jobid } = await sbatch(s, 'spark', 'spark.sbatch', [local],
    { sbatchArgs: ['-p', 'four', '-N', '2'], vars: { SPARK_HOST: '127.0.0.1' }, cwd: d.shared });
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  t.regex(out, /^workers: 2$/m, out);
  t.regex(out, /Pi is roughly 3\.1/);
  t.regex(out, new RegExp(`job ${jobid} done`));
  t.false(existsSync(join(d.shared, `spark-${jobid}`)), 'the job removed its directory in the shared dir');
  const left = await leftovers(s, [local], jobid);
  t.deepEqual(left.procs, [], 'no master or worker left running');
  rmSync(img, { recursive: true, force: true });
});

// Spark is not packaged by Debian and can't be downloaded here: the image
// needs a Spark distribution, given as CH_TEST_SPARK_TGZ (spark-*-bin-*.tgz).
// Without one the test is skipped, the reason in its title (in CI too: no
// CI setup can fetch Spark).
const SPARK_TGZ = process.env.CH_TEST_SPARK_TGZ;
const noSpark = !SPARK_TGZ ? 'no Spark distribution: set CH_TEST_SPARK_TGZ to a spark-*-bin-*.tgz'
  : !existsSync(SPARK_TGZ) ? `no Spark distribution: CH_TEST_SPARK_TGZ=${SPARK_TGZ} does not exist` : null;

needs(test.serial, notRoot ? 'needs root: the images and the Slurm test cluster are made as root' : noSpark)('examples/spark: with a real Spark image', async (t) => {
  // The image is built as the Dockerfile builds it (Debian's Java and
  // Python, Spark under /opt/spark, its ENV in /ch/environment) and the
  // example's job runs as its README says: master, one worker per node, pi.
  const tgz = SPARK_TGZ;
  const s = cluster(t); if (!s) return;
  const st = statSync(tgz);
  const img = await debImage('spark', ['openjdk-17-jre-headless', 'python3', 'procps'], {
    key: `${tgz}:${st.size}:${st.mtimeMs}`,
    files: { '/ch/environment': 'SPARK_HOME=/opt/spark\n'
      + 'PATH=/opt/spark/bin:/opt/spark/sbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' },
    build: async (dir) => {
      await execa('tar', ['-xzf', tgz, '-C', join(dir, 'opt')]);
      const top = readdirSync(join(dir, 'opt')).find((n) => /^spark-.*-bin-/.test(n));
      if (!top) throw new Error(`${tgz}: no spark-*-bin-* directory inside`);
      symlinkSync(top, join(dir, 'opt/spark'));
    },
  });
  if (!img.dir) return unavailable(t, 'Spark image', img.reason);
  const d = dirs(s);
  const local = await unpackOnNodes(t, s, await packImage(s, img.dir, 'spark'), 2);
  const { r, out, jobid } = await sbatch(s, 'spark', 'spark.sbatch', [local],
    { sbatchArgs: ['-p', 'four', '-N', '2'], vars: { SPARK_HOST: '127.0.0.1' }, cwd: d.shared });
  t.is(r.exitCode, 0, out);
  t.regex(out, /Pi is roughly 3\.1/);
  t.false(existsSync(join(d.shared, `spark-${jobid}`)));
});
