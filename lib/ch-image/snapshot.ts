// Snapshots of image trees for the build cache: a copy, by `cp -a` with
// --reflink=auto (shared extents where the file system has them: btrfs, XFS;
// a full copy elsewhere, e.g. ext4), extended attributes dropped (file
// capabilities are privilege as setuid bits are), then every setuid/setgid
// bit cleared (native stripSetid, no link followed). Hard-linked trees were
// measured too and rejected: a RUN writes files in place as fake root, which
// would change every snapshot sharing the inode (docs/design.md, "ch-image").
// Every tree handled here is inside the user's 0700 storage directory.

import { spawn } from 'node:child_process';
import { ChError, why } from '../util/log.js';
import { tarAddon } from '../tar/native.js';

export const EXIT_FAIL = 1;

/** Run ARGV to completion (killed if SIGNAL aborts); its stdout, or a ChError with its stderr. */
export function run(argv: string[], signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', (e) => reject(new ChError(`${argv[0]}: ${why(e)}`, EXIT_FAIL)));
    p.on('close', (code, sig) => {
      if (code === 0) resolve(out);
      else reject(new ChError(`${argv.join(' ')}: failed (${sig ?? `exit ${code}`})${err.trim() ? `: ${err.trim().split('\n').slice(-3).join('; ')}` : ''}`, EXIT_FAIL));
    });
  });
}

/** TO (not existing) as a copy of tree FROM, with no setuid/setgid bit. */
export async function copyTree(from: string, to: string, signal?: AbortSignal): Promise<void> {
  await run(['cp', '-a', '--no-preserve=xattr', '--reflink=auto', '--no-target-directory', from, to], signal);
  tarAddon().stripSetid(to);
}

/**
 * Make every directory of tree PATH u+rwx, as the extractor makes them, so
 * the user (and every tool of ours) can remove the image: a RUN may leave
 * some 0555. find -P follows no link.
 */
export async function userWritableDirs(path: string): Promise<void> {
  await run(['find', '-P', path, '-type', 'd', '!', '-perm', '-u+rwx', '-exec', 'chmod', 'u+rwx', '{}', '+']);
}

/** Remove tree PATH, ours (in our 0700 storage), making its directories writable first. */
export async function removeTree(path: string): Promise<void> {
  await userWritableDirs(path).catch(() => {});
  await run(['rm', '-rf', '--one-file-system', '--', path]);
}

/** Bytes tree PATH takes on disk. */
export async function treeBytes(path: string): Promise<number> {
  const out = await run(['du', '-s', '-B1', '-x', path]);
  return Number(out.split(/\s/)[0]) || 0;
}
