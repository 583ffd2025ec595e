// A private Slurm cluster on loopback for the tests: munged with its own key
// and socket, slurmctld, and slurmd for five nodes on this machine (n0 alone in
// partition "one", fake nodes n1..n4 in partition "four", each `slurmd -N nX`
// with its own port, spool and TmpFS). Everything lives in one directory,
// except TmpFS (under /tmp unless asked otherwise) and a spool placed
// elsewhere on request (a site's layout); daemons run in the foreground as
// our children and are torn down by PID.
// Jobs run as the unprivileged test user (srun/sbatch/salloc via setpriv).
//
// Usage:  const c = await startCluster();  ...  await c.stop();
// startCluster() returns null (with c.reason) when Slurm can't run here.

import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmdirSync, rmSync,
  writeFileSync }
  from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { asUser, isRoot, testUser, userEnv } from './env.js';

const SBIN = '/usr/sbin';

function portFree(port) {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** First base in [from, from+step*tries) whose 6 consecutive ports are all free. */
async function freePorts(from, count, tries = 40, step = 10) {
  for (let t = 0; t < tries; t++) {
    const base = from + t * step;
    let ok = true;
    for (let p = base; p < base + count && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error(`no ${count} free consecutive ports from ${from}`);
}

/** FIRST and the directories between it and P (exclusive), deepest first. */
function ancestors(first, p) {
  const out = [];
  for (let d = dirname(p); d.length >= first.length; d = dirname(d)) out.push(d);
  return out;
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

function cmdline(pid) {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '); } catch { return ''; }
}

async function killPid(pid, grace = 3000) {
  if (!alive(pid)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const until = Date.now() + grace;
  while (alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  if (alive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  // Our own children: reap so they don't linger as zombies.
  while (alive(pid) && cmdline(pid) !== '') await new Promise((r) => setTimeout(r, 20));
}

/** Kill daemons a previous run in DIR left (their pid files, checked against their command line). */
async function killStale(dir) {
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.pid')) continue;
    const pid = Number(readFileSync(join(dir, f), 'utf8').trim());
    if (pid > 1 && cmdline(pid).includes(dir)) await killPid(pid);
  }
  // slurmstepd of old steps: they name no path, but their parent is gone; match on our conf.
  const { stdout } = await execa('pgrep', ['-f', `${dir}/`], { reject: false });
  for (const p of stdout.split('\n').filter(Boolean).map(Number))
    if (p !== process.pid && cmdline(p).includes(dir)) await killPid(p);
  // What jobs left running after they ended (a job script that failed with
  // its background processes still up, which proctrack/linuxproc loses):
  // their environment names this cluster's slurm.conf.
  for (const p of jobProcesses(join(dir, 'slurm.conf'))) await killPid(p);
}

/** Processes whose environment names slurm.conf CONF: the jobs of that cluster (readable to root only). */
function jobProcesses(conf) {
  const mark = `SLURM_CONF=${conf}`;
  return readdirSync('/proc').filter((f) => /^\d+$/.test(f)).map(Number).filter((pid) => {
    if (pid === process.pid) return false;
    try { return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(mark); } catch { return false; }
  });
}

function slurmConf(dir, base, user, layout, nodeLocalTmp, def = 'one', plugstack = null) {
  return `# ch-toolkit test cluster (generated)
ClusterName=chtest
# Job ids distinct per cluster, so --join's default shm names (slurm-JOBID.STEP) don't collide between test files.
FirstJobId=${base * 10}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=${base}
SlurmdPort=${base + 1}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${dir}/munge/munge.socket
CredType=cred/munge
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${layout.spool}/%n
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd-%n.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=${layout.tmpfs}/%n
TaskProlog=${dir}/taskprolog.sh
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=5
InactiveLimit=0
MinJobAge=2
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=30
MailProg=/bin/true
PropagateResourceLimits=NONE
${plugstack ? `PlugStackConfig=${dir}/plugstack.conf\n` : ''}${nodeLocalTmp ? 'JobContainerType=job_container/tmpfs\nPrologFlags=Contain\n' : ''}NodeName=n0 NodeAddr=127.0.0.1 Port=${base + 1} CPUs=32 State=UNKNOWN
NodeName=n[1-4] NodeAddr=127.0.0.1 Port=[${base + 2}-${base + 5}] CPUs=8 State=UNKNOWN
PartitionName=one Nodes=n0 ${def === 'one' ? 'Default=YES ' : ''}MaxTime=INFINITE State=UP OverSubscribe=YES
PartitionName=four Nodes=n[1-4] ${def === 'four' ? 'Default=YES ' : ''}MaxTime=INFINITE State=UP OverSubscribe=YES
# jobs run as ${user}
`;
}

export const NODES = ['n0', 'n1', 'n2', 'n3', 'n4'];

/**
 * Start the cluster in opts.dir (default /var/tmp/ch-test-slurm), ports from opts.portBase; opts.tmpfs and
 * opts.spool place TmpFS and SlurmdSpoolDir (each gets one subdirectory per node); opts.nodeLocalTmp gives
 * each job its own /tmp and /dev/shm per node (then keep TmpFS out of /tmp); opts.plugstack: plugstack.conf's text.
 * opts.defaultPartition: 'one' (default) or 'four' (tools/test-cluster's: `sbatch -N 4` as the examples say);
 * opts.user: who the readiness check runs as (default the test user).
 * Returns an object with run helpers, or { reason } when Slurm can't run here.
 */
export async function startCluster(opts = {}) {
  if (!isRoot) return { reason: 'not root: slurmd and munged must run as root' };
  for (const b of ['munged', 'slurmctld', 'slurmd'])
    if (!existsSync(join(SBIN, b))) return { reason: `${SBIN}/${b} not installed` };
  const dir = opts.dir ?? process.env.CH_TEST_SLURM_DIR ?? '/var/tmp/ch-test-slurm';
  const user = opts.user ?? testUser();
  await killStale(dir);
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['munge', 'state', 'log', 'jobs'])
    mkdirSync(join(dir, d), { recursive: true });
  chmodSync(dir, 0o755);
  chmodSync(join(dir, 'munge'), 0o755);
  chmodSync(join(dir, 'jobs'), 0o1777);
  const base = await freePorts(Number(opts.portBase ?? process.env.CH_TEST_SLURM_PORT ?? 17100), 6);
  // The site layout: TmpFS (where Slurm's PMIx plugin puts the clients'
  // tmpdir, which Open MPI uses as its session directory) and SlurmdSpoolDir
  // (the PMIx server's directory, pmix.JOB.STEP), each BASE/<node> so the
  // fake nodes don't clash. Defaults: TmpFS under /tmp, Slurm's own default;
  // the spool in DIR. Sites put them elsewhere (opts.tmpfs, opts.spool; "{port}"
  // in them becomes the port base, unique per running cluster).
  const place = (p) => p.replaceAll('{port}', String(base));
  const layout = { tmpfs: place(opts.tmpfs ?? '/tmp/ch-test-slurm-{port}'), spool: place(opts.spool ?? join(dir, 'spool')) };
  const made = [];   // directories above the layout's that we created, removed again if empty
  for (const [what, p] of Object.entries(layout)) {
    if (!p.startsWith('/') || p.split('/').includes('..')) throw new Error(`${what} ${p}: not an absolute, plain path`);
    if (p !== join(dir, 'spool')) rmSync(p, { recursive: true, force: true });
    const first = mkdirSync(p, { recursive: true });
    if (first && first !== p) made.unshift(...ancestors(first, p));
    chmodSync(p, 0o755);
    // TmpFS is every user's (sticky), like /tmp; the spool is root's.
    for (const n of NODES) mkdirSync(join(p, n), { mode: what === 'tmpfs' ? 0o1777 : 0o755 });
    if (what === 'tmpfs') for (const n of NODES) chmodSync(join(p, n), 0o1777);
  }
  // The fake nodes share one host, so one hostname and one /dev/shm: Open
  // MPI's shared-memory segments (named by hostname, job and local rank)
  // would collide between them. Give each node its own directory for them,
  // as separate machines would have, through a TaskProlog (its "export"
  // lines go into every task's environment).
  const shm = `/dev/shm/ch-test-slurm-${base}`;
  rmSync(shm, { recursive: true, force: true });
  for (const n of NODES) mkdirSync(join(shm, n), { recursive: true, mode: 0o1777 });
  for (const n of NODES) chmodSync(join(shm, n), 0o1777);
  // opts.nodeLocalTmp: each job gets a /tmp and /dev/shm of its own on each
  // node (Slurm's job_container/tmpfs), as separate machines have their own:
  // a job that counts on /tmp being shared between nodes fails here as it
  // would on a real cluster. Then no per-node shm directories are needed.
  writeFileSync(join(dir, 'taskprolog.sh'), opts.nodeLocalTmp ? '#!/bin/sh\n'
    : `#!/bin/sh\necho "export OMPI_MCA_btl_vader_backing_directory=${shm}/$SLURMD_NODENAME"\n`, { mode: 0o755 });
  if (opts.nodeLocalTmp) {
    for (const n of NODES) mkdirSync(join(dir, 'nodetmp', n), { recursive: true, mode: 0o700 });
    // One BasePath; slurmd built for several nodes on one host adds /<node> itself.
    writeFileSync(join(dir, 'job_container.conf'), `BasePath=${join(dir, 'nodetmp')}\n`, { mode: 0o644 });
  }
  const conf = join(dir, 'slurm.conf');
  // opts.plugstack: plugstack.conf's lines (SPANK plugins, test/spank.test.js), beside slurm.conf.
  if (opts.plugstack) writeFileSync(join(dir, 'plugstack.conf'), opts.plugstack, { mode: 0o644 });
  writeFileSync(conf, slurmConf(dir, base, user.name, layout, opts.nodeLocalTmp, opts.defaultPartition, opts.plugstack));
  // What stopIn() removes when another process stops the cluster (tools/test-cluster stop).
  writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ base, layout, made, shm: `/dev/shm/ch-test-slurm-${base}` }) + '\n');
  chmodSync(conf, 0o644);
  // As a site should (docs/design.md, "MPI and Slurm facts"): Slurm's default
  // (mixed) runs fences without data on a tree that, with fewer nodes than
  // TreeWidth, has no edges, so the barrier ending Open MPI's MPI_Init holds no
  // one and a rank on a slow node gets messages before it can take them
  // (SIGSEGV). The ring waits for every node. mpi.conf sits by slurm.conf.
  writeFileSync(join(dir, 'mpi.conf'), 'PMIxCollFence=ring\n', { mode: 0o644 });

  const key = join(dir, 'munge/munge.key');
  writeFileSync(key, randomBytes(1024), { mode: 0o400 });
  const socket = join(dir, 'munge/munge.socket');

  const children = [];
  const spawnDaemon = (name, argv) => {
    const out = openSync(join(dir, 'log', `${name}.out`), 'a');
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out], detached: true,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', SLURM_CONF: conf } });
    closeSync(out);
    p.unref();
    writeFileSync(join(dir, `${name}.pid`), `${p.pid}\n`);
    children.push({ name, pid: p.pid, proc: p });
    p.on('exit', (code, sig) => { p.exitInfo = { code, sig }; });
    return p;
  };

  const cluster = {
    dir, conf, base, user, children, socket, tmpfs: layout.tmpfs, spool: layout.spool,
    // The nodes are on loopback; Open MPI's TCP transports skip it unless told.
    env: (extra = {}) => userEnv(user, { SLURM_CONF: conf, OMPI_MCA_btl_tcp_if_include: 'lo',
      OMPI_MCA_oob_tcp_if_include: 'lo', ...extra }),
    reason: null,
    /** Run a Slurm client command (srun, sbatch, ...) as the test user. Never throws. */
    run(cmd, args, o = {}) {
      const { env = {}, root = false, ...rest } = o;
      const argv = [...(root ? [] : asUser(user)), cmd, ...args];
      return execa(argv[0], argv.slice(1), { reject: false, all: true, cwd: '/', extendEnv: false,
        env: root ? { ...process.env, SLURM_CONF: conf, ...env } : cluster.env(env), ...rest });
    },
    ready,
    log: (name) => { try { return readFileSync(join(dir, 'log', name), 'utf8'); } catch { return ''; } },
    async stop() {
      // Cancel jobs first so stepds and their tasks go, then daemons, slurmd before slurmctld, munge last.
      await cluster.run('scancel', ['--user', user.name], { timeout: 10000 }).catch(() => {});
      const order = [...children].reverse();
      for (const c of order) await killPid(c.pid);
      await removeAll(dir, { layout, made, shm });
      // Its logs too, unless asked to keep them for a post-mortem: a run leaves nothing in /var/tmp.
      if (!process.env.CH_TEST_KEEP_SLURM) rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    spawnDaemon('munged', [join(SBIN, 'munged'), '--foreground', '--force', `--socket=${socket}`,
      `--key-file=${key}`, `--pid-file=${join(dir, 'munge/munged.pid')}`, `--seed-file=${join(dir, 'munge/seed')}`,
      `--log-file=${join(dir, 'log/munged.log')}`, '--num-threads=4']);
    await waitFor(() => existsSync(socket), 5000, 'munged socket');
    chmodSync(socket, 0o777);
    spawnDaemon('slurmctld', [join(SBIN, 'slurmctld'), '-D', '-i', '-f', conf]);
    await waitForPort(base, 10000, 'slurmctld');
    for (const n of NODES) spawnDaemon(`slurmd-${n}`, [join(SBIN, 'slurmd'), '-D', '-N', n, '-f', conf]);
    await cluster.ready();
  } catch (err) {
    const logs = ['slurmctld.log', 'slurmd-n0.log', 'munged.log', 'slurmctld.out', 'slurmd-n0.out']
      .map((f) => `--- ${f}\n${cluster.log(f).slice(-1500)}`).join('\n');
    await cluster.stop();
    throw new Error(`Slurm test cluster failed to start: ${err.message}\n${logs}`);
  }
  return cluster;

  async function waitForPort(port, ms, what) {
    await waitFor(async () => !(await portFree(port)), ms, what);
  }
}

/** Kill what is left of the cluster in DIR (daemons, steps, jobs), then remove the places it made (STATE: cluster.json's). */
async function removeAll(dir, state) {
  await killStale(dir);
  for (const p of Object.values(state.layout)) rmSync(p, { recursive: true, force: true });
  for (const d of state.made) try { rmdirSync(d); } catch { /* not empty: another cluster's, or not ours */ }
  rmSync(state.shm, { recursive: true, force: true });
}

/**
 * Stop the cluster started in DIR by another process (tools/test-cluster
 * stop): its jobs cancelled, its daemons, steps and jobs' processes killed,
 * everything it made removed, DIR too. False if none was started there.
 */
export async function stopIn(dir) {
  let state;
  try { state = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')); } catch { return false; }
  await execa('scancel', ['--full', '--state=PENDING,RUNNING,SUSPENDED', '--quiet'], { reject: false, timeout: 10000,
    env: { ...process.env, SLURM_CONF: join(dir, 'slurm.conf') } });
  // slurmd before slurmctld, munge last, as stop() does.
  for (const name of readdirSync(dir).filter((f) => f.startsWith('slurmd-') && f.endsWith('.pid')).concat(['slurmctld.pid', 'munged.pid'])) {
    let pid;
    try { pid = Number(readFileSync(join(dir, name), 'utf8').trim()); } catch { continue; }
    if (pid > 1 && cmdline(pid).includes(dir)) await killPid(pid);
  }
  await removeAll(dir, state);
  rmSync(dir, { recursive: true, force: true });
  return true;
}

async function waitFor(pred, ms, what) {
  const until = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Readiness: a trial srun on every partition succeeds (sinfo can claim nodes are up before they are). */
async function ready() {
  const until = Date.now() + 60000;
  let last;
  for (const [part, n] of [['one', 1], ['four', 4]]) {
    for (;;) {
      last = await this.run('srun', ['-p', part, '-N', String(n), '--immediate=5', '-t', '1', 'true'],
        { timeout: 20000 });
      if (last.exitCode === 0) break;
      if (Date.now() > until)
        throw new Error(`trial srun on partition ${part} keeps failing: ${last.all}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}


/**
 * Wire a cluster into an ava test file: started in test.before (t.context is
 * per-test, so the cluster is returned through the holder), stopped in
 * test.after.always. NAME keeps its directory apart from other test files',
 * PORT its ports (ava runs files in parallel). EXTRA: { tmpfs, spool, nodeLocalTmp }, as startCluster.
 */
export function useCluster(test, name, port, extra = {}) {
  const holder = { cluster: null, reason: null };
  test.before(async () => {
    const c = await startCluster({ dir: `/var/tmp/ch-test-slurm-${name}`, portBase: port, ...extra });
    if (c.reason) holder.reason = c.reason; else holder.cluster = c;
  });
  test.after.always(async () => { if (holder.cluster) await holder.cluster.stop(); });
  return holder;
}

/**
 * What finished steps left behind on the host: processes of USER started by this cluster (their
 * environment names its slurm.conf; other test files run as the same user), mounts of ROOTS, and
 * /dev/shm files of --join groups of job JOBID.
 */
export async function leftovers(cluster, roots, jobid) {
  const { stdout } = await execa('pgrep', ['-u', String(cluster.user.uid)], { reject: false });
  const procs = stdout.split('\n').filter(Boolean).filter((pid) => {
    try { return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`SLURM_CONF=${cluster.conf}`); }
    catch { return false; }
  }).map((pid) => cmdline(Number(pid)) || pid);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .filter((l) => roots.some((r) => l.includes(r)));
  // Group files live in the user's join directories (native/core/join.c), named by their tags.
  const shm = readdirSync('/dev/shm').filter((d) => d.startsWith(`.chtk-join.${cluster.user.uid}`)).flatMap((d) => {
    try { return readdirSync(join('/dev/shm', d)).filter((f) => f.startsWith(`slurm-${jobid}.`)).map((f) => `${d}/${f}`); }
    catch { return []; }
  });
  return { procs, mounts, shm };
}

// fanotify (root only): one line "open PID PATH" per process opening a watched file.
const OPENS_PY = `import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
fd = libc.fanotify_init(1, os.O_RDONLY)   # FAN_CLASS_NOTIF | FAN_CLOEXEC
if fd < 0: sys.exit("fanotify_init: " + os.strerror(ctypes.get_errno()))
for p in sys.argv[1:]:
    if libc.fanotify_mark(fd, 1, 0x20, -100, p.encode()) != 0:   # FAN_MARK_ADD, FAN_OPEN, AT_FDCWD
        sys.exit("fanotify_mark " + p + ": " + os.strerror(ctypes.get_errno()))
print("watching", flush=True)
while True:
    buf = os.read(fd, 8192)
    i = 0
    while i < len(buf):
        length, _, _, _, mask, efd, pid = struct.unpack_from("IBBHQii", buf, i)
        if efd >= 0:
            print("open", pid, os.readlink("/proc/self/fd/%d" % efd), flush=True)
            os.close(efd)
        i += length
`;

/**
 * Watch who opens FILES (root: fanotify, through python3). Resolves once
 * watching, to { stop() }: stop() ends the watch and returns, per file, the
 * PIDs that opened it meanwhile (a process that opens a file twice may be
 * counted once: the kernel merges its events).
 */
export async function watchOpens(files) {
  const p = execa('python3', ['-c', OPENS_PY, ...files], { reject: false, all: true, buffer: true });
  let out = '';
  await new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => { out += d; if (out.includes('watching\n')) resolve(); });
    p.then((r) => reject(new Error(`fanotify watcher ended: ${r.all}`)));
  });
  return {
    async stop() {
      p.kill('SIGTERM');
      const r = await p;
      const opens = Object.fromEntries(files.map((f) => [f, []]));
      for (const m of r.stdout.matchAll(/^open (\d+) (.*)$/gm)) opens[m[2]]?.push(Number(m[1]));
      return opens;
    },
  };
}
