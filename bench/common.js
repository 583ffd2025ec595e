// What the benches share: where the repository is, their numeric options,
// medians, and running ch-run as an unprivileged user (as root: the user
// CH_BENCH_USER, default chtest, through setpriv).

import { spawnSync } from 'node:child_process';
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
