// What the benches share: where the repository is, their numeric options,
// medians, and running ch-run as an unprivileged user (as root: the user
// CH_BENCH_USER, default chtest, through setpriv).

import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
export const isRoot = process.getuid() === 0;
export const user = process.env.CH_BENCH_USER ?? 'chtest';

/** The positive number after NAME on the command line, else DFLT. */
export function opt(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && Number(process.argv[i + 1]) > 0 ? Number(process.argv[i + 1]) : dflt;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** argv prefix that runs a command as the bench user (nothing unless root). */
export function userPrefix() {
  if (!isRoot) return [];
  const id = (f) => spawnSync('id', [f, user], { encoding: 'utf8' }).stdout.trim();
  if (id('-u') === '') throw new Error(`bench runs ch-run unprivileged: create user ${user} or set CH_BENCH_USER`);
  return ['setpriv', `--reuid=${id('-u')}`, `--regid=${id('-g')}`, '--clear-groups', '--'];
}

/** Above this many microseconds per file creation, bench/ calls a file system unsettled. */
const SLOW_US = 40;

/** Microseconds per empty file created in DIR now (the files stay until DIR goes). */
function creationUs(dir) {
  const d = mkdtempSync(join(dir, 'probe-'));
  // In 20 directories: ext4 spreads new directories over its block groups,
  // and the files in one go to its group, where the state may differ.
  const t0 = process.hrtime.bigint();
  for (let j = 0; j < 20; j++) {
    const sub = join(d, String(j));
    mkdirSync(sub);
    for (let k = 0; k < 100; k++) closeSync(openSync(join(sub, String(k)), 'wx'));
  }
  return Number(process.hrtime.bigint() - t0) / 1e3 / 2020;
}

const described = (us) => `${us.toFixed(1)} us per file` + (us > SLOW_US
  ? ' (slow: many files were deleted on this filesystem in the last minutes, and it passes over their inodes at each creation; bench/common.js fileCreation)'
  : '');

/**
 * What creating an empty file costs in DIR now (2000 of them in 20 new
 * directories, kept until DIR goes), as text, with a warning where it is
 * slow. On ext4 without a journal (this machine's root) the kernel does not
 * reuse an inode deleted in the last 60 s (300 s while its inode table block
 * is unwritten), and every new inode skips over each such one in its group,
 * one buffer lookup apiece: after a tree of 15k files is removed, each
 * creation there costs 100-600 us instead of ~20 for minutes, for every
 * tool alike (perf: find_inode_bit, recently_deleted). Both tools unpack the
 * same files, so that time is added to both sides and draws the ratio
 * towards 1; a run's figures compare only with a run made in the same state.
 */
export function fileCreation(dir) {
  return described(creationUs(dir));
}

/**
 * Before a bench's disk runs: wait (at most MAX_S seconds, not at all with
 * --no-settle on the command line) until a file creation in DIR costs no
 * more than a settled file system's (fileCreation), saying so every 20 s;
 * the last figure as text. Removing a tree slows creations for up to 5
 * minutes here, and a bench begun in that time times the kernel's skipping.
 */
export async function settledCreation(dir, maxS = process.argv.includes('--no-settle') ? 0 : 420) {
  const until = Date.now() + maxS * 1000;
  for (;;) {
    const us = creationUs(dir);
    if (us <= SLOW_US || Date.now() >= until) return described(us);
    console.log(`  waiting for recently deleted inodes to age: file creation ${us.toFixed(1)} us`);
    await new Promise((resolve) => setTimeout(resolve, 20_000));
  }
}
