#!/usr/bin/env node
// bench/launch: what a container launch costs, against baselines measured in
// the same run (issue #14). Prints:
//   - median wall time of one launch of /bin/true: bare, `unshare -Urm`,
//     `node -e 0`, Charliecloud's ch-run, and ours three ways: warm (the same
//     argv again: a memoized plan, if this build has them and one was stored),
//     cold (a distinct argv every run: always a miss), new arguments after
//     "--" (the same command with arguments no launch had: a hit, where the
//     build memoizes per command name) and CH_RUN_NO_CACHE=1;
//   - wall time of 200 launches, 8 at a time, for each (median of --wide-reps);
//   - memory resident beside a running container (target: 0 bytes);
//   - as root: a 32-rank `srun` step on the test Slurm cluster (4 fake nodes,
//     test/helpers/slurm.js) bare, with ch-run, and with ch-run --join;
//   - the targets next to the figures, PASS or MISS (never fails the run).
// Whether warm launches really hit is checked, not assumed: `ch-run -v`, run
// twice with one argv, must say /plan.*(hit|memo)/i on stderr the second time.
// Runs ch-run as an unprivileged user (as root: CH_BENCH_USER, default chtest)
// in a clean environment (no NODE_EXTRA_CA_CERTS: it adds 40-100 ms to every
// Node start-up here; two variants set it, a cold ch-run and node -e 0), cwd /.
//
// Usage: node bench/launch.js [--runs N] [--wide-reps N] [--srun-reps N] [--no-srun] [--also PKGDIR]...
//                              [--also-bin FILE]...
//   --also PKGDIR: also time another build's ch-run (PKGDIR/bin/ch-run), warm and
//   cold, e.g. a copy staged before a change, so before and after share one
//   run's conditions.
//   --also-bin FILE: also time FILE as ch-run (say, the shell script npm
//   once linked as ch-run, issue #27).
// ch-run as npm installs it (issue #27) is timed too: `npm link` of this tree
// into a private prefix (scripts off: it is built), run through npm's link.
// Charliecloud: the Debian package charliecloud-runtime (installed with apt-get
// when run as root and missing), or CH_BENCH_CHARLIECLOUD=/path/to/ch-run.
// Sequential runs go over the variants in a new order each round, the
// 200-launch batches round-robin, so load from other users of the machine
// falls on all of them alike.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildBusybox } from '../test/helpers/images.js';
import { isRoot, median, opt, repo, user, userPrefix } from './common.js';

const { NODE_FLAGS } = await import(join(repo, 'dist', 'util', 'protocol.gen.js'));

const runs = opt('--runs', 100);
const wideReps = opt('--wide-reps', 5);
const srunReps = opt('--srun-reps', 5);
const WIDE_TOTAL = 200, WIDE_WIDTH = 8, RANKS = 32;


/** Charliecloud's ch-run: CH_BENCH_CHARLIECLOUD, or the Debian package's (installed if root). */
function charliecloud() {
  if (process.env.CH_BENCH_CHARLIECLOUD) return { path: process.env.CH_BENCH_CHARLIECLOUD };
  const listed = () => spawnSync('dpkg-query', ['-L', 'charliecloud-runtime'], { encoding: 'utf8' });
  let l = listed();
  if (l.status !== 0) {
    if (!isRoot) return { reason: 'charliecloud-runtime not installed (and not root to install it)' };
    console.log('set-up: installing charliecloud-runtime with apt-get');
    const a = spawnSync('apt-get', ['install', '-y', '-q', 'charliecloud-runtime'], { encoding: 'utf8',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (a.status !== 0) return { reason: `apt-get install charliecloud-runtime failed: ${(a.stderr || a.stdout).trim().split('\n').pop()}` };
    l = listed();
  }
  const path = l.stdout.split('\n').find((p) => /\/bin\/ch-run$/.test(p));
  return path ? { path } : { reason: 'charliecloud-runtime installs no bin/ch-run' };
}

const pre = userPrefix();
const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/', USER: user, LANG: 'C.UTF-8' };
const dir = mkdtempSync('/var/tmp/ch-bench-');
chmodSync(dir, 0o755);
const img = join(dir, 'img');
buildBusybox(img);
spawnSync('chmod', ['-R', 'a+rX', dir]);
const built = Date.now();
const chrun = join(repo, 'bin', 'ch-run');
const cc = charliecloud();
if (cc.reason) console.log(`Charliecloud: not measured: ${cc.reason}`);
const ccSaid = cc.path ? spawnSync(cc.path, ['--version'], { encoding: 'utf8', env }) : null;
const ccVersion = ccSaid ? `${ccSaid.stdout}${ccSaid.stderr}`.trim().split('\n')[0] : null;

/** This tree's ch-run as `npm link` installs it, into a prefix in the bench directory. */
function npmLink() {
  const prefix = join(dir, 'npm');
  const r = spawnSync('npm', ['link', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: repo, encoding: 'utf8',
    env: { ...process.env, npm_config_prefix: prefix } });
  if (r.error || r.status !== 0) return { reason: `npm link failed: ${r.error?.message ?? r.stderr.trim().split('\n').pop()}` };
  spawnSync('chmod', ['-R', 'a+rX', prefix]);
  return { path: join(prefix, 'bin', 'ch-run') };
}

// A cold launch must be a true miss: a plan is memoized per command line,
// so every cold launch gets one no launch had before (an argument /bin/true
// ignores). Without "--": after "--" and the command's name, the key leaves
// the arguments out (native/launcher/memo/store.c), and a launch with new
// ones there is a hit, timed on its own ("new arguments after --").
const tag = `${process.pid}-${Date.now()}`;
let coldN = 0;
const coldOf = (bin) => () => [bin, img, '/bin/true', `cold-${tag}-${coldN++}`];
const cold = coldOf(chrun);

// name -> { argv: () => argv, env }
const variants = {
  '/bin/true': { argv: () => ['/bin/true'] },
  'unshare -Urm /bin/true': { argv: () => ['unshare', '-Urm', '/bin/true'] },
  'node -e 0': { argv: () => [process.execPath, '-e', '0'] },
  // Node's own start as the launcher starts it (protocol.json nodeFlags: no
  // JIT, the fixed hash seed): how much of a cold launch is Node's, not ours.
  "node -e 0, ch-run's Node flags": { argv: () => [process.execPath, ...NODE_FLAGS, '-e', '0'] },
};
if (cc.path) variants[`Charliecloud ${ccVersion} ch-run`] = { argv: () => [cc.path, img, '--', '/bin/true'] };
variants['ch-run warm (same argv)'] = { argv: () => [chrun, img, '--', '/bin/true'] };
variants['ch-run cold (new argv)'] = { argv: cold };
variants['ch-run new arguments after --'] = { argv: () => [chrun, img, '--', '/bin/true', `args-${tag}-${coldN++}`] };
// As at a site that sets NODE_EXTRA_CA_CERTS (this machine does): Node
// loads the file as it starts; the launcher hides it from the front end's.
const caCerts = process.env.NODE_EXTRA_CA_CERTS || '/etc/ssl/certs/ca-certificates.crt';
if (existsSync(caCerts)) {
  variants['node -e 0, NODE_EXTRA_CA_CERTS'] = { argv: () => [process.execPath, '-e', '0'], env: { NODE_EXTRA_CA_CERTS: caCerts } };
  variants['ch-run cold, NODE_EXTRA_CA_CERTS'] = { argv: cold, env: { NODE_EXTRA_CA_CERTS: caCerts } };
}
variants['ch-run CH_RUN_NO_CACHE=1'] = { argv: () => [chrun, img, '--', '/bin/true'], env: { CH_RUN_NO_CACHE: '1' } };
const npmLinked = npmLink();
if (npmLinked.path) variants['ch-run npm-linked warm'] = { argv: () => [npmLinked.path, img, '--', '/bin/true'] };
else console.log(`npm-linked ch-run: not measured: ${npmLinked.reason}`);
process.argv.forEach((a, i) => {
  if (a === '--also-bin') variants[`ch-run (${process.argv[i + 1]})`] = { argv: () => [process.argv[i + 1], img, '--', '/bin/true'] };
  if (a !== '--also') return;
  const other = join(process.argv[i + 1], 'bin', 'ch-run');
  variants[`ch-run warm (${process.argv[i + 1]})`] = { argv: () => [other, img, '--', '/bin/true'] };
  variants[`ch-run cold (${process.argv[i + 1]})`] = { argv: coldOf(other) };
});
const CC = Object.keys(variants).find((k) => k.startsWith('Charliecloud'));

/** XS in a random order (Fisher-Yates). */
function shuffled(xs) {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function once(v, stderr = false) {
  const all = [...pre, ...v.argv()];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(all[0], all.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...env, ...v.env }, cwd: '/', encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${all.join(' ')} failed (${r.status}): ${r.stderr}`);
  return stderr ? r.stderr : ms;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function wide(v, total, width) {
  let started = 0, failed = 0;
  const t0 = process.hrtime.bigint();
  await new Promise((resolve) => {
    let running = 0;
    const next = () => {
      if (started === total && running === 0) return resolve();
      while (running < width && started < total) {
        const all = [...pre, ...v.argv()];
        started++; running++;
        spawn(all[0], all.slice(1), { stdio: 'ignore', env: { ...env, ...v.env }, cwd: '/' }).on('exit', (code) => {
          if (code !== 0) failed++;
          running--; next();
        });
      }
    };
    next();
  });
  if (failed) throw new Error(`${failed} of ${total} launches of ${v.argv().join(' ')} failed`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Did a repeated launch hit a memoized plan? `-v` twice with one argv; the second must say so. */
function hitSeen(probeArg) {
  const v = { argv: () => [chrun, '-v', img, '--', '/bin/true', probeArg] };
  once(v, true);
  const said = once(v, true);
  // "-v says hit/miss": a line about the memo that says miss is no hit.
  const line = said.split('\n').find((l) => /plan.*(hit|memo)/i.test(l) && !/miss/i.test(l));
  return line ?? null;
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

function descendants(pid) {
  const kids = new Map();
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(p));
    } catch { /* gone */ }
  }
  const out = [];
  const walk = (p) => { for (const k of kids.get(p) ?? []) { out.push(k); walk(k); } };
  walk(pid);
  return out;
}

async function resident() {
  const all = [...pre, chrun, img, '--', 'sleep', '3'];
  const p = spawn(all[0], all.slice(1), { stdio: 'ignore', env, cwd: '/' });
  await sleep(1000);
  const exe = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0')[0];
  const tree = [p.pid, ...descendants(p.pid)];
  const programRss = rssKiB(p.pid);
  const others = tree.slice(1).reduce((s, q) => s + rssKiB(q) * 1024, 0);
  const bare = spawn('sleep', ['3'], { stdio: 'ignore' });
  await sleep(300);
  const bareRss = rssKiB(bare.pid);
  bare.kill(); p.kill();
  return { exe, processes: tree.length, programRss, bareRss, others };
}

/** 32-rank steps on the test cluster's four fake nodes, round-robin; medians (ms). Root only. */
async function srunSteps() {
  if (!isRoot) return { reason: 'not root: the test Slurm cluster needs root' };
  const { startCluster } = await import('../test/helpers/slurm.js');
  const c = await startCluster({ dir: '/var/tmp/ch-bench-slurm-launch', portBase: 17300 });
  if (c.reason) return { reason: c.reason };
  const steps = {
    'bare srun': { argv: ['/bin/true'] },
    'srun ch-run': { argv: [chrun, img, '--', '/bin/true'] },
    'srun ch-run --join': { argv: [chrun, '--join', img, '--', '/bin/true'] },
    'srun ch-run, CH_RUN_NO_CACHE=1': { argv: [chrun, img, '--', '/bin/true'], env: { CH_RUN_NO_CACHE: '1' } },
    // The fake nodes share one /dev/shm, so their plans (which differ: each
    // node's own SLURM_NODEID in --join's tag) queue on one lock; real nodes
    // each have their own. A plan directory per node, as there:
    'srun ch-run --join, plans per node': { argv: ['sh', '-c',
      'CH_RUN_CACHE_DIR=/dev/shm/ch-bench-plans.$SLURMD_NODENAME exec "$0" "$@"', chrun, '--join', img, '--', '/bin/true'] },
  };
  const step = async (s) => {
    const t = process.hrtime.bigint();
    // Not the test suite's CH_RUN_MEMO_VERIFY (test/helpers/env.js): it plans every launch.
    const r = await c.run('srun', ['-p', 'four', '-N', '4', '-n', String(RANKS), ...s.argv],
      { timeout: 300000, env: { CH_RUN_MEMO_VERIFY: undefined, ...s.env } });
    if (r.exitCode !== 0) throw new Error(`srun -n${RANKS} ${s.argv.join(' ')}: ${r.all}`);
    return Number(process.hrtime.bigint() - t) / 1e6;
  };
  try {
    const times = Object.fromEntries(Object.keys(steps).map((k) => [k, []]));
    for (const s of Object.values(steps)) await step(s);   // prime: caches, and a plan to hit
    for (let i = 0; i < srunReps; i++)
      for (const [k, s] of Object.entries(steps)) times[k].push(await step(s));
    return { med: Object.fromEntries(Object.entries(times).map(([k, xs]) => [k, median(xs)])) };
  } finally {
    await c.stop();
    rmSync(c.dir, { recursive: true, force: true });
    for (const f of readdirSync('/dev/shm')) if (f.startsWith('ch-bench-plans.')) rmSync(join('/dev/shm', f), { recursive: true, force: true });
  }
}

console.log(`load average at the start: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
const verdict = (ok) => (ok ? 'PASS' : 'MISS');
const targets = [];

try {
  // A plan whose dependencies changed less than ~1 s before it was planned is
  // not stored: let the fresh image age before anything is planned from it.
  await sleep(Math.max(0, built + 1500 - Date.now()));
  for (const v of Object.values(variants)) once(v);   // warm caches; primes the warm plan
  const hitBefore = hitSeen(`probe-${tag}-a`);
  const times = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
  // Each round in a new order: a variant that always followed the same one
  // paid for its aftermath (Node with NODE_EXTRA_CA_CERTS, 78 ms and a big
  // heap to tear down, added ~2.5 ms to the variant after it).
  for (let i = 0; i < runs; i++)
    for (const [name, v] of shuffled(Object.entries(variants))) times[name].push(once(v));
  const med = Object.fromEntries(Object.entries(times).map(([k, xs]) => [k, median(xs)]));
  const node = med['node -e 0'];
  console.log(`launch of /bin/true: median of ${runs} sequential runs, each round in a new order (ms)`);
  for (const [name, ms] of Object.entries(med))
    console.log(`  ${name.padEnd(34)} ${ms.toFixed(2).padStart(7)}   ${(ms / node).toFixed(3)}x node -e 0`
      + (CC ? `   ${(ms / med[CC]).toFixed(2)}x Charliecloud` : ''));
  const hitAfter = hitSeen(`probe-${tag}-b`);
  if (hitBefore || hitAfter)
    console.log(`  memoized plan hits seen: yes (before timing: ${hitBefore ? 'yes' : 'no'}, after: ${hitAfter ? 'yes' : 'no'}): "${(hitBefore ?? hitAfter).trim()}"`);
  else
    console.log('  memoized plan hits seen: no (ch-run -v never said /plan.*(hit|memo)/): this build plans every launch, warm == cold');
  const warm = med['ch-run warm (same argv)'], coldMs = med['ch-run cold (new argv)'];
  if (CC) targets.push(['warm launch <= Charliecloud median', `${warm.toFixed(2)} vs ${med[CC].toFixed(2)} ms`, warm <= med[CC]]);
  else targets.push(['warm launch <= Charliecloud median', 'no Charliecloud', null]);
  const npmWarm = med['ch-run npm-linked warm'];
  if (CC && npmWarm) targets.push(['npm-linked warm launch <= Charliecloud median', `${npmWarm.toFixed(2)} vs ${med[CC].toFixed(2)} ms`, npmWarm <= med[CC]]);
  targets.push(['cold launch <= node -e 0 + 5 ms', `${coldMs.toFixed(2)} vs ${(node + 5).toFixed(2)} ms`, coldMs <= node + 5]);
  const newArgs = med['ch-run new arguments after --'];
  if (CC) targets.push(['new arguments after -- (a hit) <= Charliecloud median', `${newArgs.toFixed(2)} vs ${med[CC].toFixed(2)} ms`,
    newArgs <= med[CC]]);
  const caCold = med['ch-run cold, NODE_EXTRA_CA_CERTS'], caNode = med['node -e 0, NODE_EXTRA_CA_CERTS'];
  if (caCold) targets.push(['cold launch, NODE_EXTRA_CA_CERTS set <= node -e 0 + 5 ms, same env',
    `${caCold.toFixed(2)} vs ${(caNode + 5).toFixed(2)} ms`, caCold <= caNode + 5]);
  const flagged = med["node -e 0, ch-run's Node flags"];
  console.log(`  cold launch over node -e 0: +${(coldMs - node).toFixed(2)} ms; over node -e 0 under ch-run's Node flags: `
    + `+${(coldMs - flagged).toFixed(2)} ms (Node's start: ${(flagged - node).toFixed(2)} ms the flags' own)`);

  console.log(`\n${WIDE_TOTAL} launches, ${WIDE_WIDTH} at a time: wall time, median of ${wideReps} round-robin (ms)`);
  const wt = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
  for (let i = 0; i < wideReps; i++)
    for (const [name, v] of Object.entries(variants)) wt[name].push(await wide(v, WIDE_TOTAL, WIDE_WIDTH));
  const wmed = Object.fromEntries(Object.entries(wt).map(([k, xs]) => [k, median(xs)]));
  for (const [name, ms] of Object.entries(wmed))
    console.log(`  ${name.padEnd(34)} ${ms.toFixed(0).padStart(7)}   ${(ms / wmed['node -e 0']).toFixed(3)}x node -e 0`
      + (CC ? `   ${(ms / wmed[CC]).toFixed(2)}x Charliecloud` : ''));
  const wwarm = wmed['ch-run warm (same argv)'];
  if (CC) targets.push([`${WIDE_TOTAL} launches (warm) <= Charliecloud's`, `${wwarm.toFixed(0)} vs ${wmed[CC].toFixed(0)} ms`, wwarm <= wmed[CC]]);
  else targets.push([`${WIDE_TOTAL} launches (warm) <= Charliecloud's`, 'no Charliecloud', null]);

  const m = await resident();
  console.log('\nresident beside a running container (ch-run IMG -- sleep):');
  console.log(`  process at the launched PID: ${m.exe} (${m.programRss} KiB; bare sleep ${m.bareRss} KiB)`);
  console.log(`  other processes in the launch's tree: ${m.processes - 1}, ${m.others} bytes resident`);
  targets.push(['resident beside the program: 0 bytes', `${m.processes - 1} processes, ${m.others} bytes`, m.others === 0 && m.processes === 1]);

  if (process.argv.includes('--no-srun')) console.log(`\nsrun -n${RANKS}: skipped (--no-srun)`);
  else {
    const s = await srunSteps();
    if (s.reason) {
      console.log(`\nsrun -n${RANKS}: not measured: ${s.reason}`);
      targets.push([`${RANKS}-rank step <= 1.5x bare srun`, 'not measured', null]);
    } else {
      const b = s.med['bare srun'];
      console.log(`\nsrun -p four -N4 -n${RANKS} (4 fake nodes on this host): wall time, median of ${srunReps} round-robin (ms)`);
      for (const [k, ms] of Object.entries(s.med))
        console.log(`  ${k.padEnd(34)} ${ms.toFixed(0).padStart(7)}   ${(ms / b).toFixed(2)}x bare srun`);
      for (const k of ['srun ch-run', 'srun ch-run --join', 'srun ch-run --join, plans per node'])
        targets.push([`${RANKS}-rank step (${k.slice(5)}) <= 1.5x bare srun`, `${(s.med[k] / b).toFixed(2)}x`, s.med[k] / b <= 1.5]);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log('\ntargets (issues #14, #27):');
for (const [what, fig, ok] of targets)
  console.log(`  ${(ok === null ? 'n/a ' : verdict(ok)).padEnd(5)} ${what.padEnd(52)} ${fig}`);
console.log(`load average at the end: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
