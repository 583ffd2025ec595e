// ch-run's SquashFS listings (list-*.json in the storage directory, written
// by squash.ts): listed and bounded, least recently used first (their atime,
// which relatime updates at most daily; else when made: a read must not
// change what the plan memo records of them, so nothing is written on use).
// Only the user's own regular files, never through a link; a listing is read
// whole in one go and made again when missing, so it is simply unlinked.
// ch-pull --cache-list/--cache-prune shows and prunes them with the blobs
// (lib/pull/cache-bound.ts).

import { closeSync, lstatSync, readdirSync, unlinkSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { at, myUid, openDir, openDirAt } from '../util/owned-fs.js';

/** One cached thing. USED: its last use (ms since the epoch); INUSE: a running pull holds it. */
export interface Cached { kind: 'blob' | 'partial' | 'listing'; path: string; size: number; used: number; inUse: boolean;
  /** Remove it; false if it was not ours to remove, or is in use now. */
  remove: () => Promise<boolean> }

/** A regular file of ours (looked at, not followed) at DIRFD/NAME, or null. */
export function ownFile(dirFd: number, name: string): Stats | null {
  try {
    const st = lstatSync(at(dirFd, name));
    return st.isFile() && st.uid === myUid() ? st : null;
  } catch { return null; }
}

/** Directory DIRFD/NAME, opened (O_NOFOLLOW) if it is a real directory of ours; else null. */
export function ownDir(dirFd: number, name: string): number | null {
  try {
    const st = lstatSync(at(dirFd, name));
    return st.isDirectory() && st.uid === myUid() ? openDirAt(dirFd, name) : null;
  } catch { return null; }
}

/** How many SquashFS listings are kept. */
export const LISTINGS_MAX = 64;

/** SquashFS listings of ch-run in directory DIRFD (path DIR): least recently used first (atime, else their making). */
export function listings(dirFd: number, dir: string): Cached[] {
  const out: Cached[] = [];
  for (const e of readdirSync(`/proc/self/fd/${dirFd}`)) {
    if (!/^list-.*\.json(\.[0-9]+)?$/.test(e)) continue;   // and temporaries of writes that died
    const st = ownFile(dirFd, e);
    if (!st) continue;
    out.push({ kind: 'listing', path: join(dir, e), size: st.size, used: Math.max(st.atimeMs, st.mtimeMs), inUse: false,
      remove: async () => { try { unlinkSync(at(dirFd, e)); return true; } catch { return false; } } });
  }
  return out.sort((a, b) => a.used - b.used);
}

/** Keep at most KEEP listings in directory DIR (ch-run, after making one): the least recently used go. Never fails. */
export function boundListings(dir: string, keep = LISTINGS_MAX): void {
  let fd: number;
  try { fd = openDir(dir); } catch { return; }
  try {
    const all = listings(fd, dir);
    for (const c of all.slice(0, Math.max(0, all.length - keep))) void c.remove();
  } catch { /* a cache only */ } finally {
    closeSync(fd);
  }
}

