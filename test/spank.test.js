// The SPANK plugin (native/spank/) on the real test cluster: `srun
// --ch-image=IMAGE prog` on four fake nodes, for a directory, a tarball, a
// SquashFS file and a registry reference; one container per node; imports
// once per node; the same container as `srun ch-run --join IMAGE -- prog`;
// MPI with PMIx; sbatch; scancel; errors.
//
// The fake nodes share one host, so the plugin's cache is made per node by
// plugstack.conf's cache=...%n (a real node has its own /var/tmp).

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BIN, image, IMAGES, isRoot, needs, PKG, TEST_DIR, unavailable } from './helpers/env.js';
import { leftovers, useCluster } from './helpers/slurm.js';
import { settled } from './helpers/fixtures.js';
import { addImage, haveTools, push, startRegistry, writeLayout } from './helpers/registry.js';
import { mpiImage } from './helpers/mpi-image.js';
import { buildGpuFixture, fxEnv } from './fixtures/gpu/fixture.js';

const NAME = basename(TEST_DIR);
const PLUGIN = join(PKG, 'build/Release/ch_spank.so');
const CACHE = `/var/tmp/%u.ch/spank-test-${NAME}/%n`;
const WORK = join(TEST_DIR, 'spank');
const c = useCluster(test, `wt-spank-${NAME}`, 17140,
  { plugstack: `required ${PLUGIN} cache=${CACHE} timeout=120\n` });
const CHRUN = join(BIN, 'ch-run');
const serial = needs(test.serial, isRoot ? null : 'not root: the test cluster runs slurmd and munged as root');

let reg = null, regReason = null;
test.before(async () => {
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  chmodSync(WORK, 0o755);
  // The image as a tarball and a SquashFS file, readable by the test user.
  await execa('tar', ['-C', IMAGES, '-czf', join(WORK, 'bb.tar.gz'), 'busybox']);
  await execa('mksquashfs', [image('busybox'), join(WORK, 'bb.sqfs'), '-noappend', '-quiet', '-no-progress', '-all-root']);
  for (const f of ['bb.tar.gz', 'bb.sqfs']) chmodSync(join(WORK, f), 0o644);
  const why = haveTools();
  if (why) { regReason = why; return; }
  reg = await startRegistry(join(WORK, 'registry'));
  const lay = join(WORK, 'layout');
  const layer = Buffer.from((await execa('tar', ['-C', image('busybox'), '-cf', '-', '.'], { encoding: 'buffer' })).stdout);
  writeLayout(lay, 'v1', [addImage(lay, { layers: [layer], config: { Env: ['PATH=/bin:/usr/bin', 'FROM_IMAGE=yes'] } })]);
  await push(reg, lay, 'v1', 'spank/bb');
});

test.after.always(async () => {
  await reg?.stop();
  if (c.cluster) clearCache(c.cluster);
  rmSync(WORK, { recursive: true, force: true });
});

function cluster(t) {
  if (!c.cluster) { unavailable(t, 'Slurm cluster', c.reason); return null; }
  return c.cluster;
}

/** Clear the test user's plugin cache on every node (root does, between tests). */
function clearCache(s) {
  rmSync(`/var/tmp/${s.user.name}.ch/spank-test-${NAME}`, { recursive: true, force: true });
}

const imports = (r) => [...r.all.matchAll(/ch-spank\[\d+\]: imported /g)].length;

/** Lines "NODE PROCID UID MNTNS USERNS": what each task saw. */
const PROBE = 'echo "$SLURMD_NODENAME $SLURM_PROCID $(id -u) $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/user)"';
function perNode(t, r, n) {
  t.is(r.exitCode, 0, r.all);
  const lines = r.stdout.trim().split('\n').map((l) => l.split(' '));
  t.is(lines.length, n, r.all);
  t.deepEqual(lines.map((l) => Number(l[1])).sort((a, b) => a - b), [...Array(n).keys()]);
  const nodes = new Map();
  for (const [node, , uid, mnt, user] of lines) {
    t.is(Number(uid), c.cluster.user.uid);
    nodes.set(node, [...(nodes.get(node) ?? []), `${mnt} ${user}`]);
  }
  // One container per node: every task of a node in the same namespaces, each node its own.
  for (const [node, ns] of nodes) t.is(new Set(ns).size, 1, `node ${node}: ${ns.join(', ')}`);
  t.is(new Set([...nodes.values()].map((ns) => ns[0])).size, nodes.size);
  const host = lines.map((l) => l[3]);
  return { nodes, host };
}

serial('srun -N4 -n32 --ch-image=DIR: one container per node, every task in it', async (t) => {
  const s = cluster(t); if (!s) return;
  const hostMnt = (await execa('readlink', ['/proc/self/ns/mnt'])).stdout.trim();
  const r = await s.run('srun', ['-p', 'four', '-N4', '-n32', `--ch-image=${image('busybox')}`, 'sh', '-c', PROBE],
    { timeout: 120000 });
  const { nodes, host } = perNode(t, r, 32);
  t.is(nodes.size, 4);
  t.false(host.includes(hostMnt), 'tasks are not in the host mount namespace');
});

serial('the same container as srun ch-run --join: environment and mounts', async (t) => {
  const s = cluster(t); if (!s) return;
  const show = 'env | sort; echo ---; cut -d" " -f4- /proc/self/mountinfo | sed "s/ - .*//" | sort';
  // Job-specific values differ between any two jobs; the rest must not.
  const norm = (out) => out.split('\n').filter((l) => !/^SLURM_(JOB_?ID|JOB_NAME|SRUN_COMM_PORT|STEP_LAUNCHER_PORT|TASK_PID)=/.test(l)).join('\n');
  const plugin = await s.run('srun', ['-p', 'four', '-w', 'n1', '-n1', `--ch-image=${image('busybox')}`, '--ch-workdir=/bin',
    'sh', '-c', show], { timeout: 60000 });
  const prefix = await s.run('srun', ['-p', 'four', '-w', 'n1', '-n1', CHRUN, '--join', '--cd=/bin', image('busybox'), '--',
    'sh', '-c', show], { timeout: 60000 });
  t.is(plugin.exitCode, 0, plugin.all);
  t.is(prefix.exitCode, 0, prefix.all);
  t.is(norm(plugin.stdout), norm(prefix.stdout));
  t.regex(plugin.stdout, /^PWD=\/bin$/m);
  t.regex(plugin.stdout, /^CH_RUNNING=Weird Al Yankovic$/m);
});

serial('--ch-mounts, --ch-env, --ch-writable as ch-run -b, --set-env, -W', async (t) => {
  const s = cluster(t); if (!s) return;
  const src = join(WORK, 'mnt');
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, 'f'), 'from host\n');
  chmodSync(src, 0o755);
  const r = await s.run('srun', ['-p', 'four', '-N2', '-n4', `--ch-image=${image('busybox')}`,
    `--ch-mounts=${src}:/mnt:ro`, '--ch-env=A=1,B=two', '--ch-writable', 'sh', '-c',
    'cat /mnt/f; echo $A $B; touch /new && echo wrote; touch /mnt/g 2>/dev/null || echo ro'], { timeout: 60000 });
  t.is(r.exitCode, 0, r.all);
  const lines = r.stdout.trim().split('\n');
  t.is(lines.filter((l) => l === 'from host').length, 4, r.all);
  t.is(lines.filter((l) => l === '1 two').length, 4);
  t.is(lines.filter((l) => l === 'wrote').length, 4);
  t.is(lines.filter((l) => l === 'ro').length, 4);
});

serial('--ch-gpu injects as ch-run --gpu does (stand-in driver, test/fixtures/gpu)', async (t) => {
  const s = cluster(t); if (!s) return;
  const debian = join(IMAGES, 'debian');
  if (!existsSync(debian)) { unavailable(t, 'Debian image', `${debian} missing`); return; }
  const fx = join(WORK, 'gpu-fixture');
  await buildGpuFixture(fx);
  await execa('chmod', ['-R', 'a+rX', fx]);
  const show = '/mnt/dlcuda; ls /dev | grep nvidia | sort | tr "\\n" " "; echo; echo "CVD=$CUDA_VISIBLE_DEVICES"';
  const env = fxEnv(fx, { CUDA_VISIBLE_DEVICES: '2,0' });
  const plugin = await s.run('srun', ['-p', 'four', '-N2', '-n2', `--ch-image=${debian}`, '--ch-gpu=nvidia',
    `--ch-mounts=${join(fx, 'prog')}:/mnt`, 'sh', '-c', show], { timeout: 120000, env });
  const prefix = await s.run('srun', ['-p', 'four', '-N2', '-n2', CHRUN, '--join', '--gpu=nvidia', '-b',
    `${join(fx, 'prog')}:/mnt`, debian, '--', 'sh', '-c', show], { timeout: 120000, env });
  t.is(plugin.exitCode, 0, plugin.all);
  t.is(prefix.exitCode, 0, prefix.all);
  t.regex(plugin.stdout, /^cuda devices: \d+$/m);
  t.regex(plugin.stdout, /^nvidia-caps nvidia-uvm nvidia0 nvidia2 nvidiactl $/m);
  t.regex(plugin.stdout, /^CVD=0,1$/m);
  t.deepEqual(plugin.stdout.split('\n').sort(), prefix.stdout.split('\n').sort());
});

serial('tarball: unpacked once per node across three steps', async (t) => {
  const s = cluster(t); if (!s) return;
  clearCache(s);
  const counts = [];
  for (let i = 0; i < 3; i++) {
    const r = await s.run('srun', ['-p', 'four', '-N4', '-n8', `--ch-image=${join(WORK, 'bb.tar.gz')}`, 'sh', '-c', PROBE],
      { timeout: 120000 });
    perNode(t, r, 8);
    counts.push(imports(r));
  }
  t.deepEqual(counts, [4, 0, 0]);
});

serial('concurrent steps wait for one import per node', async (t) => {
  const s = cluster(t); if (!s) return;
  clearCache(s);
  const tb = join(WORK, 'bb-concurrent.tar.gz');   // a file of its own identity: a key no other test made
  copyFileSync(join(WORK, 'bb.tar.gz'), tb);
  chmodSync(tb, 0o644);
  const rs = await Promise.all([0, 1, 2].map(() => s.run('srun', ['-p', 'four', '-N4', '-n8', '--oversubscribe',
    `--ch-image=${tb}`, 'sh', '-c', PROBE], { timeout: 180000 })));
  const per = rs.map((r) => perNode(t, r, 8).nodes);
  t.is(rs.reduce((n, r) => n + imports(r), 0), 4, rs.map((r) => r.all).join('\n'));
  // Each step its own container on each node: no step joined another's (the join tag is per step).
  t.is(new Set(per.flatMap((nodes) => [...nodes.values()].map((ns) => ns[0]))).size, 12);
});

/** ch-run -v's memo verdicts in a step's output (--ch-verbose): [hits, misses]. */
const memo = (r) => [/plan memo: hit/g, /plan memo: miss/g].map((re) => [...r.all.matchAll(re)].length);

/** A plan directory of the test user's own (0700), for memo hits no other test's plans disturb. */
function planDir(s, name) {
  const dir = join(WORK, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
  chownSync(dir, s.user.uid, s.user.gid);
  return dir;
}

/** The test user's shared-mount holders of image SQ (ch-run's command line names it) and their squashfuse children. */
async function holders(s, sq) {
  const ps = (await execa('ps', ['-u', String(s.user.uid), '-o', 'pid=,ppid=,comm=,args='], { reject: false })).stdout;
  const procs = ps.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f.length >= 4)
    .map(([pid, ppid, comm, ...args]) => ({ pid, ppid, comm, args: args.join(' ') }));
  const held = procs.filter((p) => p.args.includes(sq) && !p.comm.startsWith('squashfuse')).map((p) => p.pid);
  return { held, fuse: procs.filter((p) => p.comm.startsWith('squashfuse') && held.includes(p.ppid)).map((p) => p.pid) };
}

serial('.sqfs: three steps over one shared mount, one container per node per step, nothing left after the linger', async (t) => {
  const s = cluster(t); if (!s) return;
  // An image file of its own: no other test's holder of it. The four fake
  // nodes share one kernel, hence one abstract socket namespace and one
  // mount point (/var/tmp/USER.ch/mnt): the shared mount is one per user
  // and image on this host, where a real node would have one each.
  const sq = join(WORK, 'bb-steps.sqfs');
  copyFileSync(join(WORK, 'bb.sqfs'), sq);
  chmodSync(sq, 0o644);
  // A plan that read a file changed less than 1 s before isn't kept (docs/design.md, "Memoized plans"): as an
  // image that has sat on the file system a while.
  await settled(sq);
  const LINGER = 5;
  // The plugin gives ch-run the task's environment: srun's, so the linger and the plan directory come with it.
  const env = { CH_RUN_SQUASH_LINGER: String(LINGER), CH_RUN_MEMO_VERIFY: '0', CH_RUN_CACHE_DIR: planDir(s, 'plans-sqfs') };
  const probe = `${PROBE.slice(0, -1)} $(grep -c " / / .* - fuse.squashfuse " /proc/self/mountinfo)"`;
  const fuses = [], verdicts = [], said = [];
  let started = 0;
  for (let i = 0; i < 3; i++) {
    const r = await s.run('srun', ['-p', 'four', '-N4', '-n8', `--ch-image=${sq}`, '--ch-verbose', 'sh', '-c', probe],
      { timeout: 120000, env });
    const { nodes } = perNode(t, r, 8);
    t.is(nodes.size, 4);
    t.true(r.stdout.trim().split('\n').every((l) => l.endsWith(' 1')), `every task's root is the SquashFS mount: ${r.stdout}`);
    verdicts.push(memo(r));
    // A joined container, as for a directory (--join over the shared mount), in a group per node of the step.
    t.is(new Set([...r.all.matchAll(/join: winner of group (slurm-\d+\.\d+\.\d+) /g)].map((m) => m[1])).size, 4, r.all);
    said.push(r.all.split('\n').filter((l) => /plan memo|holder started/.test(l)).join('\n'));
    started += [...r.all.matchAll(/SquashFS \S+ mounted at \S+, shared \(holder started\)/g)].length;
    // Between steps the holder lingers, with its one squashfuse.
    const h = await holders(s, sq);
    t.is(h.fuse.length, 1, `one squashfuse after step ${i}: ${JSON.stringify(h)}`);
    fuses.push(h.fuse[0]);
    // The first step wrote the image's listing cache; a plan that read it within 1 s would not be kept.
    if (i === 0) await new Promise((res) => setTimeout(res, 1100));
  }
  t.is(new Set(fuses).size, 1, `the same squashfuse served all three steps: ${fuses}`);
  t.is(started, 1, 'one launch of the twelve mounted the image; the others found its holder');
  // (Containers of two steps in a row can't be told apart by namespace ids, which the kernel reuses once
  // freed; the concurrent steps' test shows each step gets its own.)
  // Memoized plans: the command line is the same in every step, so later steps hit. Not yet the second: the
  // first launch of an image writes its listing cache as it plans, and such a plan isn't kept (the next
  // launch reads what was written); the second step plans once (the fake nodes share one plan directory:
  // the others wait for its record and hit) and the third hits on every node. A directory image hits from
  // the second step on (next test).
  const all = `memo [hits, misses] per step: ${JSON.stringify(verdicts)}\n${said.join('\n--\n')}`;
  t.is(verdicts[0][0] + verdicts[0][1], 4, all);
  t.true(verdicts[1][1] <= 1 && verdicts[1][0] + verdicts[1][1] === 4, all);
  t.deepEqual(verdicts[2], [4, 0], all);
  t.log(all);
  let h;
  for (let i = 0; i < (LINGER + 15) * 5; i++) {
    h = await holders(s, sq);
    if (h.held.length === 0 && h.fuse.length === 0) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  t.deepEqual(h, { held: [], fuse: [] }, 'no holder or squashfuse left after the linger');
  const left = await leftovers(s, [sq], 'none');
  t.deepEqual(left.procs, [], 'no process of the job left');
  t.deepEqual(left.mounts, []);
});

serial('a later step\'s ch-run hits the plan of the first (directory image): no Node on any node', async (t) => {
  const s = cluster(t); if (!s) return;
  const env = { CH_RUN_MEMO_VERIFY: '0', CH_RUN_CACHE_DIR: planDir(s, 'plans-dir') };
  const verdicts = [], groups = [];
  for (let i = 0; i < 3; i++) {
    const r = await s.run('srun', ['-p', 'four', '-N4', '-n8', `--ch-image=${image('busybox')}`, '--ch-verbose',
      'sh', '-c', PROBE], { timeout: 120000, env });
    perNode(t, r, 8);
    verdicts.push(memo(r));
    if (i === 0) t.is(verdicts[0][0] + verdicts[0][1], 4, r.all);
    // The group's tag is ch-run's default from the step's variables: one per node, the step's own.
    const tags = [...r.all.matchAll(/join: winner of group (slurm-\d+\.\d+\.\d+) /g)].map((m) => m[1]);
    t.is(new Set(tags).size, 4, r.all);
    groups.push(...tags);
  }
  t.is(new Set(groups).size, 12, 'a tag per node and step');
  // Every node's ch-run in the second and third steps ran from the first step's plan (the -v line says so;
  // a hit runs the core without starting Node).
  t.deepEqual(verdicts.slice(1), [[4, 0], [4, 0]], `memo [hits, misses] per step: ${JSON.stringify(verdicts)}`);
});

serial('registry reference: pulled once per node', async (t) => {
  const s = cluster(t); if (!s) { return; }
  if (!reg) { unavailable(t, 'registry', regReason); return; }
  clearCache(s);
  const ref = `${reg.host}/spank/bb:v1`;
  const counts = [];
  for (let i = 0; i < 3; i++) {
    const r = await s.run('srun', ['-p', 'four', '-N4', '-n8', `--ch-image=${ref}`, 'sh', '-c', PROBE],
      { timeout: 120000 });
    perNode(t, r, 8);
    counts.push(imports(r));
  }
  t.deepEqual(counts, [4, 0, 0]);
});

serial('errors: a bad image, an unreachable registry, an option typo, an option without --ch-image', async (t) => {
  const s = cluster(t); if (!s) return;
  const missing = join(WORK, 'nope.tar.gz');
  let r = await s.run('srun', ['-p', 'four', '-N2', '-n4', `--ch-image=${missing}`, 'true'], { timeout: 60000 });
  t.not(r.exitCode, 0);
  t.regex(r.all, new RegExp(`ch-spank\\[\\d+\\]: error: --ch-image=${missing}: no such file or directory`));
  let left;
  for (let i = 0; i < 50; i++) {
    left = await leftovers(s, [IMAGES, WORK], 'none');
    if (left.procs.length === 0) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  t.deepEqual(left.procs, [], 'nothing left after a failed step');
  r = await s.run('srun', ['-p', 'four', '-N1', '-n2', '--ch-image=127.0.0.1:9/none/such:v1', 'true'], { timeout: 60000 });
  t.not(r.exitCode, 0);
  t.regex(r.all, /ch-spank\[\d+\]: error: --ch-image=127\.0\.0\.1:9\/none\/such:v1: .*(refused|ECONNREFUSED|connect)/i);
  const notImage = join(WORK, 'not-an-image.txt');
  writeFileSync(notImage, 'text\n', { mode: 0o644 });
  r = await s.run('srun', ['-p', 'four', '-N1', '-n1', `--ch-image=${notImage}`, 'true'], { timeout: 60000 });
  t.not(r.exitCode, 0);
  t.regex(r.all, /--ch-image=.*: not a directory, SquashFS file/);
  // A typo is srun's own error (getopt), before anything runs.
  r = await s.run('srun', ['-p', 'four', '-N1', '-n1', `--ch-imgae=${image('busybox')}`, 'true'], { timeout: 60000 });
  t.not(r.exitCode, 0);
  t.regex(r.all, /unrecognized option '--ch-imgae/);
  r = await s.run('srun', ['-p', 'four', '-N1', '-n1', '--ch-mounts=/tmp', `--ch-image=${image('busybox')}`, 'true'], { timeout: 60000 });
  t.not(r.exitCode, 0);
  t.regex(r.all, /--ch-mounts=\/tmp: bad mount '\/tmp'/);
  r = await s.run('srun', ['-p', 'four', '-N1', '-n1', '--ch-writable', 'true'], { timeout: 60000 });
  t.not(r.exitCode, 0);
  t.regex(r.all, /--ch-writable needs --ch-image=IMAGE/);
  // A program missing from the image: ch-run's message and status.
  r = await s.run('srun', ['-p', 'four', '-N1', '-n1', `--ch-image=${image('busybox')}`, 'no-such-program'], { timeout: 60000 });
  t.is(r.exitCode, 49, r.all);
  t.regex(r.all, /can't execve\(2\): no-such-program: No such file or directory/);
});

serial('a full disk: the step fails naming --ch-image, and leaves no partial image', async (t) => {
  const s = cluster(t); if (!s) return;
  const full = join(WORK, 'full');
  mkdirSync(full, { recursive: true });
  await execa('mount', ['-t', 'tmpfs', '-o', `size=256k,mode=0755,uid=${s.user.uid},gid=${s.user.gid}`, 'ch-spank-full', full]);
  try {
    const cache = join(full, 'cache');   // CH_SPANK_CACHE in the job's environment wins over plugstack.conf's
    const r = await s.run('srun', ['-p', 'four', '-N1', '-n2', `--ch-image=${join(WORK, 'bb.tar.gz')}`, 'true'],
      { timeout: 60000, env: { CH_SPANK_CACHE: cache } });
    t.not(r.exitCode, 0);
    t.regex(r.all, /ENOSPC|No space left on device/i);
    t.regex(r.all, new RegExp(`ch-spank\\[\\d+\\]: error: --ch-image=${join(WORK, 'bb.tar.gz')}: `));
    const left = (await execa('find', [cache, '-mindepth', '1', '-not', '-name', 'tar-*'], { reject: false })).stdout.trim();
    t.is(left, '', 'no temporary, lock or meta file left');
    const inKey = (await execa('sh', ['-c', `ls -A ${cache}/tar-* 2>/dev/null`], { reject: false })).stdout.trim();
    t.is(inKey, '', 'no partial image');
  } finally {
    await execa('umount', [full]);
  }
});

serial('a node without the plugin: the step fails, naming the option and the image', async (t) => {
  const s = cluster(t); if (!s) return;
  // srun has the plugin (its own slurm.conf, with a plugstack.conf of its
  // own); the nodes' plugstack.conf is emptied for this step.
  const nodes = join(s.dir, 'plugstack.conf');
  const client = join(s.dir, 'slurm-client.conf');
  writeFileSync(join(s.dir, 'plugstack-client.conf'), readFileSync(nodes));
  writeFileSync(client, readFileSync(s.conf, 'utf8').replace(/^PlugStackConfig=.*$/m,
    `PlugStackConfig=${join(s.dir, 'plugstack-client.conf')}`));
  for (const f of ['plugstack-client.conf', 'slurm-client.conf']) chmodSync(join(s.dir, f), 0o644);
  const saved = readFileSync(nodes);
  writeFileSync(nodes, '# no plugins on the nodes for this test\n');
  let r;
  try {
    r = await s.run('srun', ['-p', 'four', '-N2', '-n2', `--ch-image=${image('busybox')}`, 'sh', '-c', 'echo ran on the host'],
      { timeout: 60000, env: { SLURM_CONF: client } });
  } finally { writeFileSync(nodes, saved); }
  t.not(r.exitCode, 0);
  t.notRegex(r.all, /ran on the host/);
  t.regex(r.all, new RegExp(`ch-spank: --ch-image=${image('busybox')} needs the ch-toolkit SPANK plugin on this node`));
});

serial('exit codes and --kill-on-bad-exit as bare srun', async (t) => {
  const s = cluster(t); if (!s) return;
  const fail = 'if [ "$SLURM_PROCID" = 2 ]; then exit 7; fi; sleep 8';
  for (const opts of [[], ['-K']]) {
    const t0 = Date.now();
    const r = await s.run('srun', ['-p', 'four', '-N2', '-n4', ...opts, `--ch-image=${image('busybox')}`, 'sh', '-c', fail],
      { timeout: 60000 });
    const took = Date.now() - t0;
    const bare = await s.run('srun', ['-p', 'four', '-N2', '-n4', ...opts, 'sh', '-c', fail], { timeout: 60000 });
    t.is(r.exitCode, bare.exitCode, `${opts}: plugin ${r.all}\nbare: ${bare.all}`);
    t.regex(r.all, /task 2: Exited with exit code 7/);
    if (opts.length) t.true(took < 15000, 'the other tasks were killed, not waited for');
  }
});

serial('scancel mid-step: the program sees SIGTERM, nothing is left', async (t) => {
  const s = cluster(t); if (!s) return;
  const mark = join(WORK, 'term');
  mkdirSync(mark, { recursive: true, mode: 0o777 });
  chmodSync(mark, 0o777);
  const step = s.run('srun', ['-J', 'spank-cancel', '-p', 'four', '-N4', '-n8', `--ch-image=${join(WORK, 'bb.tar.gz')}`,
    `--ch-mounts=${mark}:/mnt`, 'sh', '-c',
    'trap "touch /mnt/term.$SLURM_PROCID; exit 143" TERM; touch /mnt/ready.$SLURM_PROCID; while :; do sleep 1; done'],
  { timeout: 120000 });
  const until = Date.now() + 60000;
  while (Date.now() < until && [...Array(8).keys()].some((i) => !existsSync(join(mark, `ready.${i}`))))
    await new Promise((res) => setTimeout(res, 100));
  const sc = await s.run('scancel', ['--name', 'spank-cancel']);
  t.is(sc.exitCode, 0, sc.all);
  const r = await step;
  t.not(r.exitCode, 0);
  t.true([...Array(8).keys()].every((i) => existsSync(join(mark, `term.${i}`))), r.all);
  let left;
  for (let i = 0; i < 50; i++) {
    left = await leftovers(s, [IMAGES, WORK], 'none');
    if (left.procs.length === 0 && left.mounts.length === 0) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  t.deepEqual(left.procs, []);
  t.deepEqual(left.mounts, []);
});

serial('sbatch: a job script whose steps use --ch-image', async (t) => {
  const s = cluster(t); if (!s) return;
  const script = join(WORK, 'job.sh');
  const outDir = join(WORK, 'jobout');   // the user's job writes its output there
  mkdirSync(outDir, { recursive: true });
  chmodSync(outDir, 0o777);
  const out = join(outDir, 'job.out');
  rmSync(out, { force: true });
  writeFileSync(script, `#!/bin/sh
#SBATCH -p four -N 4 -n 8
srun --ch-image=${join(WORK, 'bb.tar.gz')} sh -c '${PROBE}'
srun --ch-image=${image('busybox')} sh -c 'echo second $CH_RUNNING' | sort -u
`, { mode: 0o755 });
  const r = await s.run('sbatch', ['--wait', `--output=${out}`, script], { timeout: 180000 });
  t.is(r.exitCode, 0, r.all);
  const text = readFileSync(out, 'utf8');
  const lines = text.trim().split('\n').filter((l) => /^n\d /.test(l));
  t.is(lines.length, 8, text);
  t.regex(text, /^second Weird Al Yankovic$/m);
  // #SBATCH --ch-image: the script itself runs on the host; its srun steps take the option.
  const script2 = join(WORK, 'job2.sh');
  const out2 = join(outDir, 'job2.out');
  rmSync(out2, { force: true });
  writeFileSync(script2, `#!/bin/sh
#SBATCH -p four -N 2 -n 2 --ch-image=${image('busybox')}
echo "batch [$CH_RUNNING]"
srun sh -c 'echo "step [$CH_RUNNING]"'
`, { mode: 0o755 });
  const r2 = await s.run('sbatch', ['--wait', `--output=${out2}`, script2], { timeout: 180000 });
  t.is(r2.exitCode, 0, r2.all);
  const text2 = readFileSync(out2, 'utf8');
  t.regex(text2, /^batch \[\]$/m);
  t.is([...text2.matchAll(/^step \[Weird Al Yankovic\]$/gm)].length, 2, text2);
});

serial('MPI hello with PMIx: srun --mpi=pmix -N4 -n8 --ch-image, one container per node', async (t) => {
  const s = cluster(t); if (!s) return;
  const m = await mpiImage();
  if (!m.dir) { unavailable(t, 'MPI image', m.reason); return; }
  const r = await s.run('srun', ['--mpi=pmix', '-p', 'four', '-N4', '-n8', `--ch-image=${m.dir}`, '/hello'],
    { timeout: 180000 });
  t.is(r.exitCode, 0, r.all);
  const h = [...r.stdout.matchAll(/^hello rank (\d+) of 8 on \S+ userns (\d+) mntns (\d+) uid (\d+) node (\S+)$/gm)];
  t.is(h.length, 8, r.all);
  const byNode = new Map();
  for (const x of h) byNode.set(x[5], new Set([...(byNode.get(x[5]) ?? []), x[2]]));
  t.is(byNode.size, 4);
  for (const ns of byNode.values()) t.is(ns.size, 1);
  t.regex(r.stdout, /hello done: 8 ranks, allreduce ok/);
  t.notRegex(r.all, /WARNING|CMA|single.copy/i);
});
