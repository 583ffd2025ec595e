#!/usr/bin/env node
// bench/launch: what a container launch costs, against baselines measured in
// the same run. Prints:
//   - median wall time of `ch-run IMG -- /bin/true` vs `/bin/true`,
//     `unshare -Urm /bin/true` and `node -e 0` (target: <= node -e 0 + 5 ms);
//   - wall time of 200 launches, 8 at a time, for each;
//   - memory resident beside a running container: every process of the
//     launch's tree other than the program itself (target: 0 bytes).
// Runs as an unprivileged user (as root: CH_BENCH_USER, default chtest).
//
// Usage: node bench/launch.js [--runs N] [--also PKGDIR]...
//   --also PKGDIR: also time another build's ch-run (PKGDIR/bin/ch-run), e.g. a
//   copy staged before a change, so before and after share one run's conditions.
// Sequential runs go round-robin over the variants, so load from other users
// of the machine falls on all of them alike.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildBusybox } from '../test/helpers/images.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 100;
const user = process.env.CH_BENCH_USER ?? 'chtest';

function userPrefix() {
  if (process.getuid() !== 0) return [];
  const r = spawnSync('id', ['-u', user], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench runs ch-run unprivileged: create user ${user} or set CH_BENCH_USER`);
  const g = spawnSync('id', ['-g', user], { encoding: 'utf8' });
  return ['setpriv', `--reuid=${r.stdout.trim()}`, `--regid=${g.stdout.trim()}`, '--clear-groups', '--'];
}

const dir = mkdtempSync('/var/tmp/ch-bench-');
chmodSync(dir, 0o755);
const img = join(dir, 'img');
buildBusybox(img);
spawnSync('chmod', ['-R', 'a+rX', dir]);
const pre = userPrefix();
const chrun = join(repo, 'bin', 'ch-run');

const variants = {
  '/bin/true': ['/bin/true'],
  'unshare -Urm /bin/true': ['unshare', '-Urm', '/bin/true'],
  'node -e 0': [process.execPath, '-e', '0'],
  'ch-run IMG -- /bin/true': [chrun, img, '--', '/bin/true'],
};
process.argv.forEach((a, i) => {
  if (a === '--also') variants[`ch-run (${process.argv[i + 1]})`] = [join(process.argv[i + 1], 'bin', 'ch-run'), img, '--', '/bin/true'];
});

function once(argv) {
  const all = [...pre, ...argv];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(all[0], all.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
  return ms;
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

async function wide(argv, total, width) {
  const all = [...pre, ...argv];
  let started = 0, failed = 0;
  const t0 = process.hrtime.bigint();
  await new Promise((resolve) => {
    let running = 0;
    const next = () => {
      if (started === total && running === 0) return resolve();
      while (running < width && started < total) {
        started++; running++;
        spawn(all[0], all.slice(1), { stdio: 'ignore' }).on('exit', (code) => {
          if (code !== 0) failed++;
          running--; next();
        });
      }
    };
    next();
  });
  if (failed) throw new Error(`${failed} of ${total} launches of ${argv.join(' ')} failed`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
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
  const p = spawn(all[0], all.slice(1), { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 1000));
  const exe = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0')[0];
  const tree = [p.pid, ...descendants(p.pid)];
  const programRss = rssKiB(p.pid);
  const others = tree.slice(1).reduce((s, q) => s + rssKiB(q) * 1024, 0);
  const bare = spawn('sleep', ['3'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  const bareRss = rssKiB(bare.pid);
  bare.kill(); p.kill();
  return { exe, processes: tree.length, programRss, bareRss, others };
}

try {
  const med = {};
  for (const [name, argv] of Object.entries(variants)) once(argv);   // warm caches
  const times = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
  for (let i = 0; i < runs; i++)
    for (const [name, argv] of Object.entries(variants)) times[name].push(once(argv));
  for (const [name, xs] of Object.entries(times)) med[name] = median(xs);
  const node = med['node -e 0'], ch = med['ch-run IMG -- /bin/true'];
  console.log(`launch: median of ${runs} sequential runs (ms)`);
  for (const [name, ms] of Object.entries(med))
    console.log(`  ${name.padEnd(34)} ${ms.toFixed(2).padStart(7)}   ${(ms / node).toFixed(3)}x node -e 0`);
  console.log(`  ch-run - (node -e 0)       ${(ch - node).toFixed(2).padStart(7)} ms   target <= 5 ms: ${ch - node <= 5 ? 'met' : 'NOT met'}`);
  console.log('200 launches, 8 at a time: wall time (ms)');
  const wideNode = await wide(variants['node -e 0'], 200, 8);
  for (const [name, argv] of Object.entries(variants)) {
    const ms = name === 'node -e 0' ? wideNode : await wide(argv, 200, 8);
    console.log(`  ${name.padEnd(34)} ${ms.toFixed(0).padStart(7)}   ${(ms / wideNode).toFixed(3)}x node -e 0`);
  }
  const m = await resident();
  console.log('resident beside a running container (ch-run IMG -- sleep):');
  console.log(`  process at the launched PID: ${m.exe} (${m.programRss} KiB; bare sleep ${m.bareRss} KiB)`);
  console.log(`  other processes in the launch's tree: ${m.processes - 1}, ${m.others} bytes resident   target 0: ${m.others === 0 && m.processes === 1 ? 'met' : 'NOT met'}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
