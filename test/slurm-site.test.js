// Slurm laid out as sites lay it out: Open MPI ranks direct-launched by
// `srun --mpi=pmix ch-run IMG -- /hello`, with no binds from the user, on two
// private clusters: Slurm's default layout (TmpFS /tmp, SlurmdSpoolDir
// /var/spool/slurmd) and a site's (TmpFS /local/tmp, SlurmdSpoolDir
// /var/lib/slurm/slurmd). Slurm's PMIx plugin hands the ranks a directory in
// TmpFS (Open MPI's session directory; without it MPI_Init fails in
// orte/util/session_dir.c) and one in the spool (PMIx's shared-memory store;
// without it, the hash store): ch-run must show both at their own paths.

import test from 'ava';
import { execa } from 'execa';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync }
  from 'node:fs';
import { join } from 'node:path';
import { BIN, ch, image, IMAGES, needs, notRoot, PKG, TEST_DIR, testUser, unavailable } from './helpers/env.js';
import { mpiImage } from './helpers/mpi-image.js';
import { useCluster } from './helpers/slurm.js';

// Root-only: without root these are skipped, and the title says why.
const serialRoot = needs(test.serial, notRoot && 'needs root: the MPI image and the Slurm test cluster are made as root');

const CHRUN = join(BIN, 'ch-run');
// Each fake node gets BASE/<node>; {port} keeps concurrent clusters apart.
const plain = useCluster(test, 'wt-site-default', 17160,
  { tmpfs: '/tmp/ch-test-site-{port}', spool: '/var/spool/slurmd/ch-test-{port}' });
const site = useCluster(test, 'wt-site-local', 17200,
  { tmpfs: '/local/tmp/ch-test-{port}', spool: '/var/lib/slurm/slurmd/ch-test-{port}' });
let IMG = null, LOCAL = null, imgReason = null;

test.before(async () => {
  const r = await mpiImage();
  IMG = r.dir ?? null;
  imgReason = r.reason ?? null;
  if (!IMG) return;
  // The same image with a /local directory (a site's image would have it
  // for its TmpFS): hard links, so cheap; used read-only.
  LOCAL = join(IMAGES, 'mpi-local');
  rmSync(LOCAL, { recursive: true, force: true });
  await execa('cp', ['-al', IMG, LOCAL]);
  mkdirSync(join(LOCAL, 'local'), { mode: 0o755 });
});

test.after.always(() => { if (LOCAL) rmSync(LOCAL, { recursive: true, force: true }); });

function ready(t, holder) {
  if (!IMG) { unavailable(t, 'MPI image', imgReason); return null; }
  if (!holder.cluster) { unavailable(t, 'Slurm cluster', holder.reason); return null; }
  return holder.cluster;
}

/** srun --mpi=pmix ARGS -- ch-run -v IMG -- /hello (or CMD): { r, ranks }. */
async function hello(s, img, { srun = [], env = {}, chrun = [], cmd = ['/hello'] } = {}) {
  const r = await s.run('srun', ['--mpi=pmix', ...srun, CHRUN, '-v', ...chrun, img, '--', ...cmd],
    { timeout: 180000, env });
  const ranks = [...r.stdout.matchAll(/^hello rank (\d+) of (\d+) .* uid (\d+) node (\S+)$/gm)]
    .map((m) => ({ rank: Number(m[1]), size: Number(m[2]), uid: Number(m[3]), node: m[4] }))
    .sort((a, b) => a.rank - b.rank);
  return { r, ranks };
}

function allRanks(t, { r, ranks }, n, uid) {
  t.is(r.exitCode, 0, r.all);
  t.deepEqual(ranks.map((x) => x.rank), [...Array(n).keys()], r.all);
  for (const x of ranks) t.is(x.uid, uid, r.all);
  t.regex(r.stdout, new RegExp(`^hello done: ${n} ranks, allreduce ok$`, 'm'));
  t.notRegex(r.all, /ORTE_ERROR_LOG|session_dir\.c/);
}

serialRoot('Slurm defaults (TmpFS /tmp, spool /var/spool/slurmd): ranks start, client dir seen through /tmp', async (t) => {
  const s = ready(t, plain); if (!s) return;
  const h = await hello(s, IMG, { srun: ['-p', 'four', '-N', '4', '-n', '8'] });
  allRanks(t, h, 8, s.user.uid);
  t.deepEqual([...new Set(h.ranks.map((x) => x.node))].sort(), ['n1', 'n2', 'n3', 'n4']);
  t.regex(h.r.stderr, /Slurm PMIx client directory \(in TmpFS\) \/tmp\/ch-test-site-\d+\/n\d\/spmix_appdir_\d+_\d+\.\d+: visible through bind \/tmp/);
});

serialRoot('Slurm defaults, --private-tmp: the client dir gets a mount point in the private /tmp', async (t) => {
  const s = ready(t, plain); if (!s) return;
  const h = await hello(s, IMG, { srun: ['-n', '2'], chrun: ['--private-tmp'] });
  allRanks(t, h, 2, s.user.uid);
  t.regex(h.r.stderr, /Slurm PMIx client directory \(in TmpFS\) \/tmp\/ch-test-site-\d+\/n0\/spmix_appdir_\S+: bound at its own path, mount point made in tmpfs \/tmp\n/);
});

needs(test, notRoot && "needs root to plant another owner's directory")('a client directory that is not the user\'s own (a link in TmpFS, another owner) is not bound; nor over a user\'s bind', async (t) => {
  // TmpFS is every user's: someone could plant a link by the step's name.
  const base = join(TEST_DIR, 'hostile-tmpfs');
  rmSync(base, { recursive: true, force: true });
  mkdirSync(base, { mode: 0o1777 });
  await execa('chmod', ['1777', base]);
  const uid = testUser().uid;
  // The link leads to a directory of the user's own, so that only its being
  // a link can make ch-run refuse it (one to root's /etc would be refused
  // for its owner anyway).
  const target = join(TEST_DIR, 'hostile-tmpfs-target');
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { mode: 0o700 });
  chownSync(target, uid, testUser().gid);
  symlinkSync(target, join(base, `spmix_appdir_${uid}_42.0`));
  mkdirSync(join(base, 'spmix_appdir_43.0'));          // root's, the pre-22.05 name
  mkdirSync(join(base, `spmix_appdir_${uid}_44.0`));   // the user's own: this one counts
  chownSync(join(base, `spmix_appdir_${uid}_44.0`), uid, testUser().gid);
  try {
    const env = { PMIX_NAMESPACE: 'slurm.pmix.42.0', SLURM_PMIX_TMPDIR: base, SLURM_STEP_ID: '0' };
    for (const job of ['42', '43']) {
      const r = await ch('ch-run', ['-v', image('busybox'), '--', 'true'], { env: { ...env, SLURM_JOB_ID: job } });
      t.is(r.exitCode, 0, r.stderr);
      t.regex(r.stderr, new RegExp(`no Slurm PMIx client directory spmix_appdir_${uid}_${job}\\.0 of this step in ${base}; `
        + `Open MPI's session directory goes to /tmp/ompi\\.\\S+\\.${uid} in the container instead`));
      t.notRegex(r.stderr, /bind .*spmix_appdir/);
    }
    const r = await ch('ch-run', ['-v', image('debian'), '--', 'true'], { env: { ...env, SLURM_JOB_ID: '44' } });
    t.is(r.exitCode, 0, r.stderr);
    t.regex(r.stderr, new RegExp(`bind ${base}/spmix_appdir_${uid}_44\\.0 -> ${base}/spmix_appdir_${uid}_44\\.0$`, 'm'));
    // A user's bind over the place: theirs stays, and Open MPI goes elsewhere.
    const other = join(TEST_DIR, 'img');
    const u = await ch('ch-run', ['-v', '-b', `${other}:/var/tmp`, image('debian'), '--', 'sh', '-c', 'ls /var/tmp; env'],
      { env: { ...env, SLURM_JOB_ID: '44' } });
    t.is(u.exitCode, 0, u.stderr);
    t.regex(u.stdout, /^busybox$/m, "the user's bind is what /var/tmp shows");
    t.regex(u.stderr, new RegExp(`can't show Slurm PMIx client directory \\(in TmpFS\\) ${base}/spmix_appdir_${uid}_44\\.0 in the `
      + `container: /var/tmp inside is host ${other}, not the host's; Open MPI's session directory goes to`));
    t.regex(u.stdout, new RegExp(`^OMPI_MCA_orte_top_session_dir=/tmp/ompi\\.\\S+\\.${uid}$`, 'm'));
  } finally { rmSync(base, { recursive: true, force: true }); rmSync(target, { recursive: true, force: true }); }
});

serialRoot('site layout (TmpFS /local/tmp, spool /var/lib/slurm/slurmd): ranks start with no user binds', async (t) => {
  const s = ready(t, site); if (!s) return;
  const h = await hello(s, LOCAL, { srun: ['-p', 'four', '-N', '4', '-n', '8'] });
  allRanks(t, h, 8, s.user.uid);
  t.deepEqual([...new Set(h.ranks.map((x) => x.node))].sort(), ['n1', 'n2', 'n3', 'n4']);
  // The client directory: bound at its own path on the image's /local.
  t.regex(h.r.stderr, new RegExp(`Slurm PMIx client directory \\(in TmpFS\\) ${s.tmpfs}/n\\d/spmix_appdir_${s.user.uid}_\\d+\\.\\d+: `
    + "bound at its own path, mount point made in a tmpfs over the image's empty /local\\n"));
  t.regex(h.r.stderr, new RegExp(`bind (${s.tmpfs}/n\\d/spmix_appdir_\\S+) -> \\1\\n`));
  // The server's: the image's /var/lib is not empty and lacks slurm/, so
  // ch-run says so and PMIx uses its hash store.
  t.regex(h.r.stderr, /can't show PMIx server directory \(PMIX_SERVER_TMPDIR\) \/var\/lib\/slurm\/slurmd\/\S+ in the container: .* lacks \/var\/lib\/slurm, .*; PMIx uses its hash store instead \(PMIX_MCA_gds=hash\)/);
});

serialRoot('site layout, --join: one container per node, directories bound once', async (t) => {
  const s = ready(t, site); if (!s) return;
  // After MPI ran, each rank says where it ran: its node, its user and mount
  // namespaces, how many mounts show the step's client directory, and how
  // many mounts it sees in all.
  const h = await hello(s, LOCAL, { srun: ['-p', 'four', '-N', '2', '-n', '4', '--ntasks-per-node=2'], chrun: ['--join'],
    cmd: ['sh', '-c', '/hello && echo "where $SLURM_PROCID $SLURMD_NODENAME $(readlink /proc/self/ns/user) '
      + '$(readlink /proc/self/ns/mnt) $(grep -c spmix_appdir_ /proc/self/mountinfo) $(wc -l < /proc/self/mountinfo)"'] });
  allRanks(t, h, 4, s.user.uid);
  const where = [...h.r.stdout.matchAll(/^where (\d+) (n\d) (user:\[\d+\]) (mnt:\[\d+\]) (\d+) (\d+)$/gm)]
    .map((m) => ({ rank: Number(m[1]), node: m[2], userns: m[3], mntns: m[4], client: Number(m[5]), mounts: Number(m[6]) }));
  t.deepEqual(where.map((w) => w.rank).sort(), [0, 1, 2, 3], h.r.all);
  const nodes = [...new Set(where.map((w) => w.node))].sort();
  t.is(nodes.length, 2, 'two nodes');
  const containers = new Set();
  for (const n of nodes) {
    const on = where.filter((w) => w.node === n);
    t.is(on.length, 2, `two ranks on ${n}`);
    t.is(new Set(on.map((w) => w.userns)).size, 1, `one user namespace on ${n}: ${JSON.stringify(on)}`);
    t.is(new Set(on.map((w) => w.mntns)).size, 1, `one mount namespace on ${n}: ${JSON.stringify(on)}`);
    containers.add(`${on[0].userns} ${on[0].mntns}`);
    for (const w of on) t.is(w.client, 1, `rank ${w.rank} on ${n}: the client directory bound once`);
  }
  t.is(containers.size, 2, 'a container of its own on each node');
  t.is(new Set(where.map((w) => w.mounts)).size, 1, `as many mounts in each container: ${JSON.stringify(where)}`);
  // The plan's binds of the step's directories: made by the rank that set the container up, once per node.
  t.is([...h.r.stderr.matchAll(/ bind (\S*spmix_appdir_\S+) -> \1$/gm)].length, 2, h.r.stderr);
});

serialRoot('site layout, SLURM_PMIX_TMPDIR in /var/tmp: found from the environment, mounted on a tmpfs over the image\'s empty /var/tmp', async (t) => {
  const s = ready(t, site); if (!s) return;
  const dir = `/var/tmp/ch-test-site-${s.base}`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o1777 });
  await execa('chmod', ['1777', dir]);
  try {
    const h = await hello(s, IMG, { srun: ['-n', '2'], env: { SLURM_PMIX_TMPDIR: dir } });
    allRanks(t, h, 2, s.user.uid);
    t.regex(h.r.stderr, new RegExp(`client directory \\(in TmpFS\\) ${dir}/spmix_appdir_${s.user.uid}_\\d+\\.\\d+: bound at its own path, mount point made in a tmpfs over the image's empty /var/tmp`));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

serialRoot('site layout, image without /local: Open MPI makes its session directory in /tmp instead, and says so', async (t) => {
  const s = ready(t, site); if (!s) return;
  const h = await hello(s, IMG, { srun: ['-p', 'four', '-N', '2', '-n', '4'] });
  allRanks(t, h, 4, s.user.uid);
  t.regex(h.r.stderr, new RegExp(`ch-run\\[\\d+\\]: can't show Slurm PMIx client directory \\(in TmpFS\\) ${s.tmpfs}/n\\d/spmix_appdir_\\S+ `
    + `in the container: image ${IMG} has no /local to mount it on \\(create /local in the image, or use -w\\); `
    + `Open MPI's session directory goes to /tmp/ompi\\.n\\d\\.${s.user.uid} in the container instead \\(OMPI_MCA_orte_top_session_dir\\)`));
  // Open MPI removes what it made there at MPI_Finalize.
  t.deepEqual(readdirSync('/tmp').filter((f) => new RegExp(`^ompi\\.n\\d\\.${s.user.uid}$`).test(f)), []);
});

serialRoot('site layout, image without /local, OMPI_MCA_orte_top_session_dir set by the user: left alone', async (t) => {
  const s = ready(t, site); if (!s) return;
  const mine = `/tmp/ch-test-site-session-${s.base}`;
  const h = await hello(s, IMG, { srun: ['-n', '2'], env: { OMPI_MCA_orte_top_session_dir: mine } });
  allRanks(t, h, 2, s.user.uid);
  t.regex(h.r.stderr, new RegExp(`Open MPI's session directory is ${mine}, as \\$OMPI_MCA_orte_top_session_dir says`));
  rmSync(mine, { recursive: true, force: true });
});

serialRoot('site layout: the step cleans up; nothing of ours left in TmpFS or the spool', async (t) => {
  const s = ready(t, site); if (!s) return;
  const h = await hello(s, LOCAL, { srun: ['-n', '2'] });
  allRanks(t, h, 2, s.user.uid);
  // slurmstepd removes the step's directories as the step ends (shortly
  // after srun returns): our binds must not keep them busy.
  const ours = () => {
    const left = [];
    for (const base of [s.tmpfs, s.spool]) {
      const d = join(base, 'n0');
      if (existsSync(d)) left.push(...readdirSync(d).filter((f) => /^(spmix_appdir|pmix\.)/.test(f)).map((f) => join(d, f)));
    }
    return left;
  };
  const until = Date.now() + 30000;
  let left = ours();
  while (left.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 200));
    left = ours();
  }
  t.deepEqual(left, []);
  t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(s.tmpfs), 'no mount of TmpFS left on the host');
});

test('discovery: TmpFS from slurm.conf (any case, last wins, Include, %n), only plain paths', async (t) => {
  const { launcherDirs, slurmConfValue } = await import(join(PKG, 'dist/container/mpi-env.js'));
  const host = (await import(join(PKG, 'dist/container/host.js'))).liveHost();   // planning reads through a Host
  const dir = join(TEST_DIR, 'conf-discovery');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'tmpfs/nx'), { recursive: true });
  writeFileSync(join(dir, 'slurm.conf'), `# TmpFS=/commented
TmpFS=/first
ClusterName=x tmpfs=/second   # several on a line
Include extra.conf
`);
  writeFileSync(join(dir, 'extra.conf'), `TMPFS="${dir}/tmpfs/%n"\n`);
  t.is(slurmConfValue(host, join(dir, 'slurm.conf'), 'TmpFS'), `${dir}/tmpfs/%n`);
  t.is(slurmConfValue(host, join(dir, 'slurm.conf'), 'SlurmdSpoolDir'), null);
  t.is(slurmConfValue(host, join(dir, 'missing.conf'), 'TmpFS'), null);

  const uid = process.getuid();
  mkdirSync(join(dir, `tmpfs/nx/spmix_appdir_${uid}_7.0`));
  mkdirSync(join(dir, 'spool/pmix.7.0'), { recursive: true });
  const env = new Map(Object.entries({ SLURM_CONF: join(dir, 'slurm.conf'), SLURMD_NODENAME: 'nx',
    PMIX_NAMESPACE: 'slurm.pmix.7.0', SLURM_JOB_ID: '7', SLURM_STEP_ID: '0', PMIX_SERVER_TMPDIR: `${dir}/spool/pmix.7.0//` }));
  t.deepEqual(launcherDirs(host, env, uid).map((d) => d.path), [`${dir}/spool/pmix.7.0`, `${dir}/tmpfs/nx/spmix_appdir_${uid}_7.0`]);
  // A server directory that doesn't exist here (stale, or a rank started by hand) is not shown.
  env.set('PMIX_SERVER_TMPDIR', '/nonexistent/pmix.7.0');
  t.deepEqual(launcherDirs(host, env, uid).map((d) => d.path), [`${dir}/tmpfs/nx/spmix_appdir_${uid}_7.0`]);
  env.set('PMIX_SERVER_TMPDIR', '/spool/../etc');
  env.set('SLURM_PMIX_TMPDIR', 'relative/dir');
  const logs = [];
  t.deepEqual(launcherDirs(host, env, uid, (m) => logs.push(m)), [], 'no ".." and no relative paths');
  t.regex(logs.join('\n'), /no Slurm PMIx client directory .* in \(TmpFS unusable\)/);
  rmSync(dir, { recursive: true, force: true });
});
