#!/usr/bin/env node
// bench/squash: launch cost of a SquashFS image against the same image as a
// directory, in the same run (target: .sqfs <= 1.5x the directory). Prints
// the median wall time of `ch-run IMG -- /bin/true` for both, sequential
// runs round-robin so the machine's other load falls on both alike, and the
// cost of mounting (ch-run -v's own timing is not used: wall time only).
// Runs as an unprivileged user (as root: CH_BENCH_USER, default chtest);
// needs squashfuse, mksquashfs, and /dev/fuse usable by that user.
//
// Usage: node bench/squash.js [--runs N]

import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildBusybox } from '../test/helpers/images.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 50;
const user = process.env.CH_BENCH_USER ?? 'chtest';

function userPrefix() {
  if (process.getuid() !== 0) return [];
  const id = (f) => spawnSync('id', [f, user], { encoding: 'utf8' }).stdout.trim();
  if (id('-u') === '') throw new Error(`bench runs ch-run unprivileged: create user ${user} or set CH_BENCH_USER`);
  return ['setpriv', `--reuid=${id('-u')}`, `--regid=${id('-g')}`, '--clear-groups', '--'];
}

const pre = userPrefix();
const dir = mkdtempSync('/var/tmp/ch-bench-sq-');
chmodSync(dir, 0o755);
const img = join(dir, 'img');
buildBusybox(img);
spawnSync('chmod', ['-R', 'a+rwX', dir]);
// zstd: what ch-convert writes; gzip: mksquashfs's default (decompression
// is most of the difference: every launch is a new mount, a cold page cache).
function squash(comp) {
  const sq = join(dir, `img-${comp}.sqfs`);
  const argv = [...pre, 'mksquashfs', img, sq, '-noappend', '-quiet', '-no-progress', '-comp', comp];
  const mk = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  if (mk.status !== 0) throw new Error(`mksquashfs: ${mk.stderr}`);
  return sq;
}
const chrun = join(repo, 'bin', 'ch-run');
const env = { PATH: '/usr/bin:/bin', HOME: '/', USER: user, LANG: 'C.UTF-8' };

const variants = {
  'ch-run DIR -- /bin/true': [chrun, img, '--', '/bin/true'],
  'ch-run IMG.sqfs (zstd) -- /bin/true': [chrun, squash('zstd'), '--', '/bin/true'],
  'ch-run IMG.sqfs (gzip) -- /bin/true': [chrun, squash('gzip'), '--', '/bin/true'],
};

function once(argv) {
  const all = [...pre, ...argv];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(all[0], all.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env, cwd: '/' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
  return ms;
}

const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
for (const k of Object.keys(variants)) once(variants[k]);   // warm caches
for (let i = 0; i < runs; i++)
  for (const [k, argv] of Object.entries(variants)) times[k].push(once(argv));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const [d, z, g] = Object.keys(variants).map((k) => median(times[k]));
for (const k of Object.keys(variants))
  console.log(`${k.padEnd(38)} median ${median(times[k]).toFixed(1)} ms  (min ${Math.min(...times[k]).toFixed(1)}, ${runs} runs)`);
console.log(`ratio .sqfs / directory: zstd ${(z / d).toFixed(2)}x (target <= 1.5x), gzip ${(g / d).toFixed(2)}x`);
rmSync(dir, { recursive: true, force: true });
