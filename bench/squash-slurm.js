#!/usr/bin/env node
// bench/squash-slurm: `srun -N4 -n32` from one .sqfs (issue #23's Slurm-scale
// bench), on the private test cluster's four fake nodes (test/helpers/slurm.js,
// partition "four"). Every rank reads the same part of the Debian test image
// (CACHE_DIR's debootstrap tree, made into a zstd .sqfs with mksquashfs):
// `find usr/bin usr/sbin usr/lib -type f -readable -exec cat {} + | wc -c`.
// Modes, in the same run:
//   bare                          the same command on the host, over the image's tree as a directory
//   ch-run IMG.sqfs               a shared mount per node, user and image (the default)
//   ch-run --join IMG.sqfs        the same, the ranks of a node in one container
//   ch-run IMG.sqfs, LINGER=0     CH_RUN_SQUASH_LINGER=0: a private mount per rank, as before issue #23
//   ch-run IMG.sqfs, squashfuse_ll  an experiment: the shared mount served by squashfuse_ll (PATH), own -m
//   Charliecloud ch-run IMG.sqfs  Debian's charliecloud-runtime (/usr/bin/ch-run, libsquashfuse_ll in-process)
// For each: one cold step (lingering holders ended, `echo 3 > drop_caches`)
// and REPS warm steps, round-robin; wall time of srun; sampled every ~100 ms
// during each step: the FUSE servers of this image (processes with both the
// .sqfs and /dev/fuse open: squashfuse for ch-toolkit, ch-run itself for
// Charliecloud), per fake node (SLURMD_NODENAME in their environment), and
// the sum of their RSS; during the cold step also the page cache: the peak
// rise of the system's Cached - Shmem (/proc/meminfo) and of this process's
// memory cgroup (v1 memory.stat total_cache - total_shmem; the cluster, its
// steps and their FUSE servers are our descendants, so charged there) over
// the value just after drop_caches, less the .sqfs file's own cached pages
// (fincore) at the same sample. See bench/squash.md for what that includes.
// (A child of a server holding both, Charliecloud's before its exec, is not
// counted; a mode counts only servers running its program, by /proc/PID/exe.)
// The shared modes run with CH_RUN_SQUASH_LINGER=--linger (default 600 s) so
// their warm steps find the mount live (a job's later steps); a server that
// was already up when a private or Charliecloud step began is not counted
// for it (it is another mode's lingering holder, idle).
//
// Needs root (it starts Slurm and drops caches) and a staged package:
//   CH_TEST_DIR=... node test/setup.js && CH_TEST_DIR=... node bench/squash-slurm.js
// Options: --reps N (warm steps per mode, default 5), --tasks N (default 32),
// --linger S, --read 'usr/bin,usr/lib' (what each rank reads, relative to /).

import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync,
  writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, CACHE_DIR } from '../test/helpers/env.js';
import { debianBase } from '../test/helpers/images.js';
import { startCluster } from '../test/helpers/slurm.js';
import { isRoot, median, opt } from './common.js';

const REPS = opt('--reps', 5);
const TASKS = opt('--tasks', 32);
const LINGER = opt('--linger', 600);
const READ = (process.argv.includes('--read') ? process.argv[process.argv.indexOf('--read') + 1] : 'usr/bin,usr/sbin,usr/lib')
  .split(',').filter(Boolean);
const CHRUN = join(BIN, 'ch-run');
const CC = '/usr/bin/ch-run';
const WORK = '/var/tmp/ch-bench-sqslurm';
const SQFS = join(WORK, 'debian.sqfs');
const MiB = 2 ** 20;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

if (!isRoot) { console.error('bench/squash-slurm: needs root (it starts Slurm and drops caches)'); process.exit(1); }
const deb = await debianBase(CACHE_DIR);
if (!deb) { console.error(`bench/squash-slurm: no Debian image in ${CACHE_DIR} (debootstrap)`); process.exit(1); }

// ---- measuring ----------------------------------------------------------------

/** This image's FUSE servers: processes with both the .sqfs and /dev/fuse open. */
function servers() {
  const out = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      let img = false, fuse = false;
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        let l;
        try { l = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
        if (l === SQFS) img = true; else if (l === '/dev/fuse') fuse = true;
      }
      if (!img || !fuse) continue;
      const st = readFileSync(`/proc/${pid}/status`, 'utf8');
      if (/^State:\s+Z/m.test(st)) continue;
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      let exe = '?';
      try { exe = readlinkSync(`/proc/${pid}/exe`); } catch { /* gone */ }
      out.push({ pid: Number(pid), exe, ppid: Number(/^PPid:\s+(\d+)/m.exec(st)[1]), comm: /^Name:\s+(\S+)/m.exec(st)[1], rss: Number(/^VmRSS:\s+(\d+)/m.exec(st)?.[1] ?? 0) * 1024,
        node: env.find((e) => e.startsWith('SLURMD_NODENAME='))?.slice(16) ?? '?' });
    } catch { /* gone */ }
  }
  // Charliecloud's ch-run serves FUSE in the parent; its child holds both
  // files too until it execs the command: the server's child is not a server.
  const pids = new Set(out.map((s) => s.pid));
  return out.filter((s) => !pids.has(s.ppid));
}

const cgroupDir = (() => {
  const l = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((x) => /^\d+:memory:/.test(x));
  const d = l && join('/sys/fs/cgroup/memory', l.split(':')[2]);
  return d && existsSync(join(d, 'memory.stat')) ? d : null;
})();

/** Page cache less shared memory: the system's (/proc/meminfo) and our memory cgroup's (v1), bytes. */
function cache() {
  const mi = readFileSync('/proc/meminfo', 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(mi)[1]) * 1024;
  let cg = null;
  if (cgroupDir) {
    const s = readFileSync(join(cgroupDir, 'memory.stat'), 'utf8');
    const v = (k) => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(s)?.[1] ?? NaN);
    cg = v('total_cache') - v('total_shmem');
  }
  return { sys: kb('Cached') - kb('Shmem'), cg };
}

/** Bytes of the .sqfs file itself in the host's page cache. */
function sqfsCached() {
  const r = spawnSync('fincore', ['-b', '-n', '-o', 'RES', SQFS], { encoding: 'utf8' });
  return r.status === 0 ? Number(r.stdout.trim()) : NaN;
}

function dropCaches() {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

/** SIGKILL this image's lingering FUSE servers (shared-mount holders' squashfuse: the holder exits with it). */
async function endServers() {
  for (const s of servers()) try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
  for (let i = 0; i < 250 && servers().length > 0; i++) await sleep(20);
}

// ---- the steps ----------------------------------------------------------------

const work = (root) => `cd ${root} && find ${READ.join(' ')} -type f -readable -exec cat {} + | wc -c`;
const sharedEnv = `CH_RUN_SQUASH_LINGER=${LINGER}`;
const modes = {
  bare: { argv: ['sh', '-c', work(deb)] },
  'ch-run IMG.sqfs': { argv: [CHRUN, SQFS, '--', 'sh', '-c', work('/')], env: sharedEnv, shared: true },
  'ch-run --join IMG.sqfs': { argv: [CHRUN, '--join', SQFS, '--', 'sh', '-c', work('/')], env: sharedEnv, shared: true },
  'ch-run IMG.sqfs, LINGER=0': { argv: [CHRUN, SQFS, '--', 'sh', '-c', work('/')], env: 'CH_RUN_SQUASH_LINGER=0' },
  // Not what ch-run does today: squashfuse_ll (Charliecloud's engine) under
  // the name squashfuse first on PATH (the front end finds squashfuse on
  // PATH), on a mount point of its own so it gets its own holder.
  // (PATH set by env(1) in the step: through srun --export it didn't reach ch-run.)
  'ch-run IMG.sqfs, squashfuse_ll': { argv: ['env', `PATH=${join(WORK, 'llbin')}:/usr/bin:/bin`, CHRUN, '-m', join(WORK, 'll-mnt'),
    SQFS, '--', 'sh', '-c', work('/')], env: sharedEnv, shared: true, exe: '/usr/bin/squashfuse_ll' },
  'Charliecloud ch-run IMG.sqfs': { argv: [CC, '-m', join(WORK, 'cc-mnt'), SQFS, '--', 'sh', '-c', work('/')], exe: CC },
};

let c = null;
let expected = null;

/** One srun step of mode M, sampled; COLD: lingering servers ended and caches dropped first, page cache measured. */
async function step(m, cold) {
  const { argv, env, shared } = modes[m];
  const exe = modes[m].exe ?? '/usr/bin/squashfuse';
  if (cold) { await endServers(); dropCaches(); await sleep(300); }
  const before = new Set(servers().map((s) => s.pid));
  const base = cold ? cache() : null;
  const peak = { n: 0, perNode: 0, rss: 0, sys: 0, cg: 0, sqfs: 0, comms: new Set() };
  const t0 = process.hrtime.bigint();
  const run = c.run('srun', [...(env ? [`--export=ALL,${env}`] : []), '-p', 'four', '-N4', '-n', String(TASKS), ...argv],
    { timeout: 600_000 });
  let ended = false;
  run.then(() => { ended = true; });
  while (!ended) {
    const sv = servers().filter((s) => s.exe === exe && (shared || !before.has(s.pid)));
    const per = new Map();
    for (const s of sv) per.set(s.node, (per.get(s.node) ?? 0) + 1);
    peak.n = Math.max(peak.n, sv.length);
    peak.perNode = Math.max(peak.perNode, ...per.values(), 0);
    peak.rss = Math.max(peak.rss, sv.reduce((a, s) => a + s.rss, 0));
    for (const s of sv) peak.comms.add(s.comm);
    if (cold) {
      const now = cache(), f = sqfsCached();
      if (now.sys - base.sys - f > peak.sys) { peak.sys = now.sys - base.sys - f; peak.sqfs = f; }
      if (base.cg !== null) peak.cg = Math.max(peak.cg, now.cg - base.cg - f);
    }
    await sleep(100);
  }
  const r = await run;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.exitCode !== 0) throw new Error(`${m}: srun failed (${r.exitCode}): ${r.all.slice(-3000)}`);
  const counts = r.stdout.trim().split('\n');
  if (counts.length !== TASKS || new Set(counts).size !== 1) throw new Error(`${m}: ranks said ${r.stdout}`);
  expected ??= counts[0];
  if (counts[0] !== expected) throw new Error(`${m}: each rank read ${counts[0]} bytes, bare read ${expected}`);
  return { ms, peak };
}

// ---- main ---------------------------------------------------------------------

const cc = spawnSync(CC, ['--version'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', USER: 'root' } });   // 0.31 wants $USER
const ccSquash = spawnSync('ldd', [CC], { encoding: 'utf8' }).stdout?.includes('libsquashfuse');
if (cc.status !== 0 || !ccSquash) {
  console.log(`Charliecloud: ${cc.status !== 0 ? `${CC} not runnable` : `${CC} not linked with libsquashfuse: can't mount .sqfs`}; left out`);
  delete modes['Charliecloud ch-run IMG.sqfs'];
}
rmSync(WORK, { recursive: true, force: true });
mkdirSync(WORK, { recursive: true });
chmodSync(WORK, 0o755);
const t = spawnSync('mksquashfs', [deb, SQFS, '-noappend', '-quiet', '-no-progress', '-comp', 'zstd'], { encoding: 'utf8' });
if (t.status !== 0) throw new Error(`mksquashfs: ${t.stderr}`);
chmodSync(SQFS, 0o644);

c = await startCluster({ dir: '/var/tmp/ch-bench-slurm-sq', portBase: 17400 });
if (c.reason) { console.error(c.reason); process.exit(1); }
for (const d of ['cc-mnt', 'll-mnt']) {   // the user's own mount points (-m)
  mkdirSync(join(WORK, d), { mode: 0o700 });
  chownSync(join(WORK, d), c.user.uid, c.user.gid);
}
if (existsSync('/usr/bin/squashfuse_ll')) {
  mkdirSync(join(WORK, 'llbin'));
  symlinkSync('/usr/bin/squashfuse_ll', join(WORK, 'llbin/squashfuse'));
} else {
  console.log('squashfuse_ll not installed: its mode left out');
  delete modes['ch-run IMG.sqfs, squashfuse_ll'];
}
const du = spawnSync('du', ['-sm', ...READ.map((p) => join(deb, p))], { encoding: 'utf8' }).stdout
  .split('\n').filter(Boolean).reduce((a, l) => a + Number(l.split('\t')[0]), 0);

try {
  console.log(`bench/squash-slurm ${new Date().toISOString()}, load average ${loadavg()}`);
  console.log(`  image: ${deb} as ${SQFS} (zstd, ${(statSync(SQFS).size / MiB).toFixed(1)} MiB); each rank reads ${READ.join(' ')} `
    + `(${du} MB on disk); Charliecloud ${(cc.stdout + cc.stderr).trim()}`);
  console.log(`  memory cgroup: ${cgroupDir ?? 'none (v1 memory controller not found): system figures only'}`);
  await step('bare', false);   // warm-up: slurmd, the image's tree
  const res = Object.fromEntries(Object.keys(modes).map((m) => [m, { cold: null, warm: [], n: 0, perNode: 0, rss: 0 }]));
  const note = (m, s) => {
    res[m].n = Math.max(res[m].n, s.peak.n); res[m].perNode = Math.max(res[m].perNode, s.peak.perNode);
    res[m].rss = Math.max(res[m].rss, s.peak.rss);
    for (const x of s.peak.comms) (res[m].comms ??= new Set()).add(x);
  };
  for (const m of Object.keys(modes)) {
    const s = await step(m, true);
    res[m].cold = s;
    note(m, s);
    console.log(`  cold ${m}: ${s.ms.toFixed(0)} ms (load ${loadavg()})`);
  }
  for (let i = 0; i < REPS; i++)
    for (const m of Object.keys(modes)) {
      const s = await step(m, false);
      res[m].warm.push(s.ms);
      note(m, s);
    }
  const bareCold = res.bare.cold.ms, bareWarm = median(res.bare.warm);
  console.log(`\nsrun -p four -N4 -n${TASKS} (4 fake nodes on one kernel), each rank reading ${du} MB of the image; `
    + `cold: 1 step after drop_caches; warm: median of ${REPS} (range)`);
  console.log(`  ${'mode'.padEnd(30)} ${'cold ms'.padStart(8)} ${'x bare'.padStart(6)} ${'warm ms'.padStart(8)} ${'x bare'.padStart(6)}`
    + `  FUSE servers: peak (per fake node, by starter) RSS sum | cold page cache rise less .sqfs: system, cgroup | .sqfs cached`);
  for (const [m, r] of Object.entries(res)) {
    const w = median(r.warm), p = r.cold.peak;
    console.log(`  ${m.padEnd(30)} ${r.cold.ms.toFixed(0).padStart(8)} ${(r.cold.ms / bareCold).toFixed(2).padStart(6)} `
      + `${w.toFixed(0).padStart(8)} ${(w / bareWarm).toFixed(2).padStart(6)}  (${Math.min(...r.warm).toFixed(0)}-${Math.max(...r.warm).toFixed(0)})`
      + `  ${String(r.n).padStart(3)} (${r.perNode}) ${(r.rss / MiB).toFixed(1).padStart(6)} MiB ${[...(r.comms ?? [])].join(',')}`
      + ` | ${(p.sys / MiB).toFixed(0).padStart(5)} MiB, ${cgroupDir ? `${(p.cg / MiB).toFixed(0).padStart(5)} MiB` : '-'}`
      + ` | ${(p.sqfs / MiB).toFixed(0)} MiB`);
  }
  // The cgroup's figure where there is one: only pages our processes brought in, not other work on the machine.
  const pc = (m) => (cgroupDir ? res[m].cold.peak.cg : res[m].cold.peak.sys);
  const mem = (m) => res[m] && pc(m) + res[m].rss;
  const ratio = (a, b) => (res[a] && res[b] ? `${(mem(a) / mem(b)).toFixed(2)}x` : '-');
  console.log('  memory (cold: FUSE servers RSS + page cache rise less the .sqfs file) relative to bare\'s page cache rise'
    + ` (${(pc('bare') / MiB).toFixed(0)} MiB, "one image's worth"; ${cgroupDir ? 'cgroup' : 'system'} figures):`);
  for (const m of Object.keys(res).filter((x) => x !== 'bare'))
    console.log(`    ${m.padEnd(30)} ${(mem(m) / MiB).toFixed(0).padStart(5)} MiB  ${(mem(m) / pc('bare')).toFixed(2)}x`);
  console.log(`  private (LINGER=0) / shared: ${ratio('ch-run IMG.sqfs, LINGER=0', 'ch-run IMG.sqfs')}; `
    + `Charliecloud / shared: ${ratio('Charliecloud ch-run IMG.sqfs', 'ch-run IMG.sqfs')}`);
  const wr = (a, b) => (res[a] && res[b] ? `${(median(res[a].warm) / median(res[b].warm)).toFixed(2)}x` : '-');
  console.log(`  warm wall time: shared / private (LINGER=0) ${wr('ch-run IMG.sqfs', 'ch-run IMG.sqfs, LINGER=0')}, `
    + `shared / Charliecloud ${wr('ch-run IMG.sqfs', 'Charliecloud ch-run IMG.sqfs')}, --join / Charliecloud `
    + `${wr('ch-run --join IMG.sqfs', 'Charliecloud ch-run IMG.sqfs')}, shared squashfuse_ll / Charliecloud `
    + `${wr('ch-run IMG.sqfs, squashfuse_ll', 'Charliecloud ch-run IMG.sqfs')}`);
  console.log(`load average at the end: ${loadavg()}`);
} finally {
  await endServers();
  await c.stop();
  rmSync(WORK, { recursive: true, force: true });
}
