// The README's seed workflow, verbatim, with podman as the builder:
//
//     ch-build -t spark ./spark
//     ch-docker2tar spark /var/tmp
//     srun ch-tar2dir ~/spark.tar.gz /var/tmp          (several tasks per node)
//     srun ch-run -b CONF /var/tmp/spark -- ...
//     mpirun -pernode ch-run -b CONF /var/tmp/spark -- ...   (inside an allocation)
//
// The build runs as root (podman's storage is root's); everything from
// ch-tar2dir on runs as the unprivileged test user under the private Slurm
// cluster. "/var/tmp" is a test-private directory on each side, "~" a private
// home. The base image is the Debian + Open MPI test image, `podman import`ed
// offline as localhost/base, so mpirun works inside.
//
// podman gets a private storage (CONTAINERS_STORAGE_CONF) and configuration
// (CONTAINERS_CONF: runc, lowered ulimits, file locks) and chroot isolation
// (BUILDAH_ISOLATION) through the environment, so the commands stay verbatim
// (`-t spark`) without clashing with other podman users of this machine.
// CH_BUILDER=podman makes podman the builder even where a docker engine works.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync }
  from 'node:fs';
import { basename, join } from 'node:path';
import { BIN, ch, isRoot, needs, TEST_DIR, testUser } from './helpers/env.js';
import { mpiImage } from './helpers/mpi-image.js';
import { leftovers, useCluster } from './helpers/slurm.js';

const c = useCluster(test, `wt-seed-${basename(TEST_DIR)}`, 17160);

const ROOT = join(TEST_DIR, 'seed');
const PODMAN = join(ROOT, 'podman');       // private podman storage and configuration
const BUILD = join(ROOT, 'build');         // where ch-build runs: ./spark is the context
const BUILD_TMP = join(ROOT, 'build-tmp'); // the build box's /var/tmp
const HOME = join(ROOT, 'home');           // the user's ~
const NODE_TMP = join(ROOT, 'vartmp');     // the compute nodes' /var/tmp (one filesystem for the fake nodes)
const CONF = join(ROOT, 'conf');           // the host configuration directory bound with -b

const podmanEnv = {
  CONTAINERS_STORAGE_CONF: join(PODMAN, 'storage.conf'),
  CONTAINERS_CONF: join(PODMAN, 'containers.conf'),
  BUILDAH_ISOLATION: 'chroot',
  CH_BUILDER: 'podman',
};

const DOCKERFILE = `FROM localhost/base
ENV SPARK_HOME=/spark GREETING="seed workflow"
WORKDIR /spark
COPY app bin/app
# The mount point trick: the image's default configuration becomes /mnt/0,
# where ch-run -b CONF binds the host's configuration over it.
RUN chmod 755 bin/app \\
 && mkdir conf \\
 && echo "setting=image-default" > conf/app.conf \\
 && echo "built in $(pwd)" > built \\
 && mv /spark/conf /mnt/0
`;

// The program: reads its configuration at the default bind target, says what it sees.
const APP = `#!/bin/sh
conf=/mnt/0/app.conf
[ -r "$conf" ] || { echo "app: no configuration at $conf" >&2; exit 3; }
echo "app task \${SLURM_PROCID:--} node \${SLURMD_NODENAME:--} uid $(id -u) conf $(cat "$conf")" \\
  "spark_home \${SPARK_HOME:-unset} greeting \${GREETING:-unset} $(cat /spark/built)"
[ "$1" = --mpi ] && exec /hello
exit 0
`;

async function have(cmd) {
  return (await execa('sh', ['-c', `command -v ${cmd}`], { reject: false })).exitCode === 0;
}

function podman(args) {
  return execa('podman', args, { reject: false, all: true, env: { ...process.env, ...podmanEnv } });
}

/** Remove the private podman storage: images, then any mount left under it, then the files. */
async function dropPodman() {
  if (!existsSync(PODMAN)) return;
  await podman(['rm', '-a', '-f']);
  await podman(['rmi', '-a', '-f']);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(`${PODMAN}/`)).reverse();
  for (const m of mounts) await execa('umount', ['-l', m], { reject: false });
}

test.after.always(async () => {
  if (isRoot && (await have('podman'))) await dropPodman();
  rmSync(ROOT, { recursive: true, force: true });
});

/** Wait (up to a minute) until the cluster's queue is empty; what is still queued then. */
async function settled(s) {
  const until = Date.now() + 60000;
  for (;;) {
    const q = (await s.run('squeue', ['-h', '-o', '%i %T'])).stdout.trim();
    if (q === '' || Date.now() > until) return q;
    await new Promise((res) => setTimeout(res, 250));
  }
}

/** Lines of the app's output: { task, node, uid, conf, home, greeting, built }. */
function apps(out) {
  const res = [];
  for (const m of out.matchAll(/^app task (\S+) node (\S+) uid (\d+) conf (\S+) spark_home (\S+) greeting (.+?) (built in \S+)$/gm))
    res.push({ task: m[1], node: m[2], uid: Number(m[3]), conf: m[4], home: m[5], greeting: m[6], built: m[7] });
  return res.sort((a, b) => Number(a.task) - Number(b.task));
}

needs(test.serial, isRoot ? null : 'not root: podman builds as root, the Slurm daemons run as root')(
  'the seed workflow verbatim: ch-build (podman), ch-docker2tar, srun ch-tar2dir, srun ch-run, mpirun -pernode ch-run',
  async (t) => {
    // What this test needs; CI installs all of it, so there a missing piece is a failure.
    const missing = [];
    if (!(await have('podman'))) missing.push('podman');
    if (!c.cluster) missing.push(`Slurm cluster (${c.reason})`);
    const mpi = await mpiImage();
    if (!mpi.dir) missing.push(`MPI image (${mpi.reason})`);
    if (missing.length > 0) {
      if (process.env.CI) return t.fail(`seed workflow can't run: missing ${missing.join('; ')}`);
      t.log(`skipped: missing ${missing.join('; ')}`);
      return t.pass();
    }
    const s = c.cluster;
    const user = testUser();

    rmSync(ROOT, { recursive: true, force: true });
    for (const d of [ROOT, PODMAN, BUILD, join(BUILD, 'spark'), BUILD_TMP, HOME, NODE_TMP, CONF])
      mkdirSync(d, { recursive: true, mode: 0o755 });
    for (const d of [HOME, NODE_TMP]) chownSync(d, user.uid, user.gid);
    writeFileSync(join(PODMAN, 'storage.conf'),
      `[storage]\ndriver = "overlay"\ngraphroot = "${PODMAN}/storage"\nrunroot = "${PODMAN}/run"\n`);
    writeFileSync(join(PODMAN, 'containers.conf'), `[containers]
default_ulimits = ["nofile=10000:10000", "nproc=4096:4096"]
[engine]
runtime = "runc"
lock_type = "file"
tmp_dir = "${PODMAN}/tmp"
`);
    writeFileSync(join(BUILD, 'spark/Dockerfile'), DOCKERFILE);
    writeFileSync(join(BUILD, 'spark/app'), APP, { mode: 0o755 });
    writeFileSync(join(CONF, 'app.conf'), 'setting=from-host\n', { mode: 0o644 });

    // The base: the Debian + Open MPI test image, imported offline.
    const baseTar = join(PODMAN, 'base.tar');
    await execa('tar', ['-C', mpi.dir, '-cf', baseTar, '.']);
    const imp = await podman(['import', baseTar, 'localhost/base']);
    t.is(imp.exitCode, 0, imp.all);
    rmSync(baseTar);

    // 1. ch-build -t spark ./spark
    const b = await ch('ch-build', ['-t', 'spark', './spark'], { root: true, all: true, cwd: BUILD, env: podmanEnv,
      timeout: 120000 });
    t.is(b.exitCode, 0, b.all);
    t.regex(b.all, /^COMMIT spark$/m);
    const built = await podman(['image', 'exists', 'localhost/spark:latest']);
    t.is(built.exitCode, 0, 'podman (its private storage) holds the image');
    if (b.exitCode !== 0) return;

    // 2. ch-docker2tar spark /var/tmp, then the tarball goes to the user's ~.
    const x = await ch('ch-docker2tar', ['spark', BUILD_TMP], { root: true, env: podmanEnv, timeout: 120000 });
    t.is(x.exitCode, 0, x.stderr);
    t.deepEqual(readdirSync(BUILD_TMP), ['spark.tar.gz'], 'only the final tarball, no temporaries');
    if (x.exitCode !== 0) return;
    const tarball = join(HOME, 'spark.tar.gz');
    copyFileSync(join(BUILD_TMP, 'spark.tar.gz'), tarball);
    chownSync(tarball, user.uid, user.gid);
    chmodSync(tarball, 0o644);

    // As the test user, with the staged commands on PATH, ~ the private home.
    const env = { HOME, PATH: `${BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`, VT: NODE_TMP, CONF };

    // 3. srun ch-tar2dir ~/spark.tar.gz /var/tmp: 8 tasks, 2 per fake node, all on one
    // filesystem, so they race on one DIR/NAME: one extracts, the others wait and reuse it.
    const u = await s.run('sh', ['-c', 'exec srun -p four -N 4 -n 8 --ntasks-per-node=2 ch-tar2dir ~/spark.tar.gz "$VT"'],
      { env, timeout: 180000 });
    t.is(u.exitCode, 0, u.all);
    const unpacked = u.all.match(/^ch-tar2dir\[\d+\]: \S+\/spark: unpacked \d+ files, .*$/gm) ?? [];
    const upToDate = u.all.match(/^ch-tar2dir\[\d+\]: \S+\/spark: already unpacked from \S+spark\.tar\.gz, up to date$/gm) ?? [];
    t.is(unpacked.length, 1, `exactly one extraction:\n${u.all}`);
    t.is(upToDate.length, 7, `the other tasks reuse it:\n${u.all}`);
    t.deepEqual(readdirSync(NODE_TMP), ['spark'], 'no lock file or temporary left in DIR');
    t.is(readFileSync(join(NODE_TMP, 'spark/spark/built'), 'utf8'), 'built in /spark\n', 'RUN ran in WORKDIR');
    if (u.exitCode !== 0) return;

    // 4. srun ch-run -b CONF /var/tmp/spark -- ...: the host's configuration at the
    // default bind target /mnt/0, the Dockerfile's ENV with --set-env.
    const r = await s.run('sh', ['-c', 'exec srun -p four -N 4 -n 8 --ntasks-per-node=2 ch-run -b "$CONF" --set-env "$VT/spark" -- /spark/bin/app'],
      { env, timeout: 120000 });
    t.is(r.exitCode, 0, r.all);
    const a = apps(r.stdout);
    t.deepEqual(a.map((x) => x.task), ['0', '1', '2', '3', '4', '5', '6', '7'], r.all);
    t.deepEqual(a.map((x) => x.node).sort(), ['n1', 'n1', 'n2', 'n2', 'n3', 'n3', 'n4', 'n4']);
    for (const x of a) {
      t.is(x.uid, user.uid, 'the real uid inside');
      t.is(x.conf, 'setting=from-host', 'CONF bound over the image\'s /mnt/0');
      t.is(x.home, '/spark');
      t.is(x.greeting, 'seed workflow');
      t.is(x.built, 'built in /spark');
    }
    // The same without -b and --set-env: the image's own configuration, no image ENV.
    const plain = await s.run('sh', ['-c', 'exec srun -p four -n 1 ch-run "$VT/spark" -- /spark/bin/app'],
      { env, timeout: 60000 });
    t.is(plain.exitCode, 0, plain.all);
    const p = apps(plain.stdout);
    t.is(p.length, 1, plain.all);
    t.is(p[0]?.conf, 'setting=image-default');
    t.is(p[0]?.greeting, 'unset');

    // 5. mpirun -pernode ch-run -b CONF /var/tmp/spark -- ..., inside an allocation of the 4 fake nodes.
    const m = await s.run('sh', ['-c',
      'exec salloc -p four -N 4 -- mpirun -pernode ch-run -b "$CONF" --set-env "$VT/spark" -- /spark/bin/app --mpi'],
    { env, timeout: 180000 });
    t.is(m.exitCode, 0, m.all);
    const ma = apps(m.stdout);
    t.is(ma.length, 4, m.all);
    t.deepEqual(ma.map((x) => x.node).sort(), ['n1', 'n2', 'n3', 'n4'], 'one rank per node');
    for (const x of ma) { t.is(x.conf, 'setting=from-host'); t.is(x.greeting, 'seed workflow'); t.is(x.uid, user.uid); }
    const ranks = [...m.stdout.matchAll(/^hello rank (\d+) of 4 on \S+ userns \d+ mntns \d+ uid (\d+) node (\S+)$/gm)];
    t.deepEqual(ranks.map((x) => Number(x[1])).sort(), [0, 1, 2, 3], m.all);
    t.deepEqual(ranks.map((x) => x[3]).sort(), ['n1', 'n2', 'n3', 'n4']);
    t.regex(m.stdout, /hello done: 4 ranks, allreduce ok/);

    // Nothing left behind: no process of the cluster's jobs, no mount of the image or its binds.
    // salloc returns when mpirun does; the job may still be completing (CG), its srun of
    // orted on the way out. Judge what is left once Slurm has finished the jobs.
    const queue = await settled(s);
    t.is(queue, '', 'all jobs finished');
    const left = await leftovers(s, [NODE_TMP, CONF], 'none');
    t.deepEqual(left.procs, [], 'no process left');
    t.deepEqual(left.mounts, [], 'no mount left');
    t.deepEqual(readdirSync(NODE_TMP), ['spark']);
    t.deepEqual(readdirSync(HOME), ['spark.tar.gz']);
  });
