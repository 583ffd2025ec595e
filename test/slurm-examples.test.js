// The examples' Slurm scripts, submitted with sbatch to the private cluster,
// each on an image built offline to match the example's Dockerfile.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, CACHE_DIR, image, IMAGES, unavailable } from './helpers/env.js';
import { daskImage, debImage, mpiImage } from './helpers/mpi-image.js';
import { leftovers, useCluster } from './helpers/slurm.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const c = useCluster(test, 'wt-examples', 17140);

/** sbatch --wait EXAMPLE/SCRIPT ARGS as the test user; returns { r, out, jobid }. */
async function sbatch(s, example, script, args, env = {}) {
  const job = join(s.dir, 'jobs', `${example}-${script}`);
  copyFileSync(join(repo, 'examples', example, script), job);
  chmodSync(job, 0o755);
  const out = join(s.dir, 'jobs', `${example}.out`);
  rmSync(out, { force: true });
  const r = await s.run('sbatch', ['--wait', '--parsable', `--output=${out}`, ...(env.SBATCH_ARGS ?? []), job, ...args],
    { timeout: 300000, env: { PATH: `${BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`, ...(env.vars ?? {}) } });
  return { r, out: existsSync(out) ? readFileSync(out, 'utf8') : '(no output file)', jobid: r.stdout.trim().split(';')[0] };
}

function cluster(t) {
  if (!c.cluster) { unavailable(t, 'Slurm cluster', c.reason); return null; }
  return c.cluster;
}

test.serial('examples/hello: sbatch hello.sbatch', async (t) => {
  const s = cluster(t); if (!s) return;
  // The Dockerfile's image: busybox plus hello.sh.
  const img = join(IMAGES, 'hello');
  rmSync(img, { recursive: true, force: true });
  await execa('cp', ['-a', image('busybox'), img]);
  copyFileSync(join(repo, 'examples/hello/hello.sh'), join(img, 'hello.sh'));
  await execa('chmod', ['-R', 'a+rX', img]);
  const { r, out, jobid } = await sbatch(s, 'hello', 'hello.sbatch', [img]);
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  const lines = out.split('\n').filter((l) => l.startsWith('hello from')).sort();
  t.deepEqual(lines, [0, 1, 2, 3].map((n) => `hello from task ${n} of 4 on n0 uid ${s.user.uid} container yes`), out);
  t.regex(out, new RegExp(`job ${jobid} done`));
});

test.serial('examples/mpihello: sbatch mpihello.sbatch (srun --mpi=pmix and mpirun)', async (t) => {
  const s = cluster(t); if (!s) return;
  const img = await mpiImage();
  if (!img.dir) return unavailable(t, 'MPI image', img.reason);
  const { r, out, jobid } = await sbatch(s, 'mpihello', 'mpihello.sbatch', [img.dir]);
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  t.is(out.match(/hello done: 4 ranks, allreduce ok/g)?.length, 2, out);
  t.regex(out, /allreduce ok/);
  t.regex(out, new RegExp(`job ${jobid} done`));
});

test.serial('examples/dask: scheduler and workers in containers, pi, clean shutdown', async (t) => {
  const s = cluster(t); if (!s) return;
  const img = await daskImage();
  if (!img.dir) return unavailable(t, 'Dask image', img.reason);
  const { r, out, jobid } = await sbatch(s, 'dask', 'dask.sbatch', [img.dir],
    { SBATCH_ARGS: ['-p', 'four'], vars: { DASK_HOST: '127.0.0.1' } });
  t.is(r.exitCode, 0, `${r.all}\n${out}`);
  t.regex(out, /workers 2/, out);
  const m = /pi (\d\.\d+) from \d+ samples on 2 workers/.exec(out);
  t.truthy(m, out);
  t.true(Math.abs(Number(m?.[1]) - Math.PI) < 0.05, out);
  t.regex(out, /dask shutdown/);
  t.regex(out, /scheduler and workers gone|scheduler exit \d+, workers step exit \d+/);
  t.regex(out, new RegExp(`job ${jobid} done`));
  t.false(existsSync(`/tmp/dask-${jobid}`));
  const left = await leftovers(s, [img.dir], jobid);
  t.deepEqual(left.procs, [], 'no scheduler or worker left running');
});

test.serial('examples/spark: only when a Spark image can be built here', async (t) => {
  // Spark is not packaged by Debian and can't be downloaded here: the image
  // needs a Spark distribution, given as CH_TEST_SPARK_TGZ (spark-*-bin-*.tgz).
  // With one, the image is built as the Dockerfile builds it (Debian's Java
  // and Python, Spark under /opt/spark, its ENV in /ch/environment) and the
  // example's job runs: master, one worker per node, pyspark's pi.
  const tgz = process.env.CH_TEST_SPARK_TGZ;
  if (!tgz || !existsSync(tgz)) {
    t.log(`skipped: no Spark distribution (set CH_TEST_SPARK_TGZ to a spark-*-bin-*.tgz; cache ${CACHE_DIR})`);
    return t.pass();
  }
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
  const { r, out } = await sbatch(s, 'spark', 'spark.sbatch', [img.dir],
    { SBATCH_ARGS: ['-p', 'four', '-N', '2'], vars: { SPARK_HOST: '127.0.0.1' } });
  t.is(r.exitCode, 0, out);
  t.regex(out, /Pi is roughly 3\.1/);
});
