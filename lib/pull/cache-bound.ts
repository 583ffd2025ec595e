// What is cached in the storage directory, and its bound: ch-pull's blobs
// (blobs/ALGO/HEX, and HEX.part, a download to resume) and ch-run's SquashFS
// listings (list-*.json). Listed and pruned least recently used first: after
// each pull the blobs down to $CH_PULL_CACHE_MAX (default 10G), after each new
// listing the listings down to LISTINGS_MAX files; `ch-pull --cache-list`
// shows them, `ch-pull --cache-prune[=SIZE]` prunes to SIZE (default 0: all
// that no run is using).
//
// The storage directory is the user's alone (cache.ts checks it), yet
// pruning never follows a link and removes only the user's own regular files
// (lstat, then unlink, which never follows the final name). A blob is removed
// holding its HEX.lock (downloaders hold it) and only while no pin links it
// (nlink 1): a pull reads only pinned blobs (cache.ts), so what it reads
// never vanishes. Pin directories of runs that were killed (their .lock not
// held) are removed first. A listing is read whole in one go, and a missing
// one is made again: it is simply unlinked.

import { closeSync, fstatSync, lstatSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { type Log } from '../util/log.js';
import { at, myUid, openDirAt, removeOwned } from '../util/owned-fs.js';
import { ownDir, ownFile, type Cached } from '../container/listing-cache.js';
import { flockPath } from '../util/native-fs.js';
import { lockOwn, PINS_LOCK, PINS_PREFIX, unlock, type Storage } from './cache.js';


/** Default bound of the blob cache, in bytes ($CH_PULL_CACHE_MAX). */
export const BLOBS_MAX_DEFAULT = 10 * 2 ** 30;
/** A pins directory changed this recently is never taken for a dead pull's. */
const PINS_GRACE_MS = 60_000;

/** Remove pin directories in blobs/ (fd BLOBSFD) whose run is gone (their lock not held). */
async function removeDeadPins(log: Log, blobsFd: number, blobsPath: string): Promise<void> {
  for (const e of readdirSync(`/proc/self/fd/${blobsFd}`)) {
    if (!e.startsWith(PINS_PREFIX)) continue;
    const d = ownDir(blobsFd, e);
    if (d === null) continue;
    try {
      // A pull makes its pins directory, then its lock in it: one made in the
      // last minute may be one whose pull has yet to lock it (taking that lock
      // here and removing the directory made a concurrent pull fail).
      if (Date.now() - fstatSync(d).mtimeMs < PINS_GRACE_MS) continue;
      const l = lstatSync(at(d, PINS_LOCK), { throwIfNoEntry: false });
      if (l && (!l.isFile() || l.uid !== myUid())) continue;
      let lock: number;
      try { lock = await flockPath(at(d, PINS_LOCK), false); } catch { continue; }   // held: a pull is running
      closeSync(lock);
      log.info(`removing ${join(blobsPath, e)}: pins of a pull that was killed`);
      removeOwned(blobsFd, e, join(blobsPath, e));
    } catch (err) {
      log.warn((err as Error).message);
    } finally {
      closeSync(d);
    }
  }
}

/** Blobs and partial downloads in blobs/ of STORAGE, least recently used first (after removing dead pins). */
export async function blobs(log: Log, storage: Storage): Promise<{ items: Cached[]; close: () => void }> {
  const fds: number[] = [];
  const close = () => { for (const fd of fds) closeSync(fd); };
  let blobsFd: number;
  try { blobsFd = openDirAt(storage.fd, 'blobs'); } catch { return { items: [], close }; }
  fds.push(blobsFd);
  const blobsPath = join(storage.path, 'blobs');
  await removeDeadPins(log, blobsFd, blobsPath);
  const items: Cached[] = [];
  for (const algo of readdirSync(`/proc/self/fd/${blobsFd}`)) {
    if (algo.startsWith('.')) continue;
    const fd = ownDir(blobsFd, algo);
    if (fd === null) continue;
    fds.push(fd);
    for (const e of readdirSync(`/proc/self/fd/${fd}`)) {
      const m = /^([0-9a-f]+)(\.part)?$/.exec(e);
      if (!m) continue;
      const st = ownFile(fd, e);
      if (!st) continue;
      const path = join(blobsPath, algo, e);
      items.push({ kind: m[2] ? 'partial' : 'blob', path, size: st.size, used: st.ctimeMs, inUse: st.nlink > 1,
        remove: () => removeBlob(fd, m[1], e, path) });
    }
  }
  return { items: items.sort((a, b) => a.used - b.used), close };
}

/** Remove NAME (blob HEX or its .part) in algorithm directory FD, holding HEX.lock; false if in use. */
async function removeBlob(fd: number, hex: string, name: string, path: string): Promise<boolean> {
  let lock: number;
  try { lock = await lockOwn(fd, `${hex}.lock`, `${path}.lock`, undefined, undefined, 0); } catch { return false; }
  try {
    const st = ownFile(fd, name);
    if (!st || st.nlink > 1) return false;   // pinned since it was listed
    unlinkSync(at(fd, name));
    return true;
  } catch { return false; } finally {
    unlock(fd, `${hex}.lock`, lock);
  }
}

/**
 * Prune ITEMS (least recently used first) until their total size is at most
 * MAX bytes; what a run is using stays. Returns [removed count, bytes freed].
 */
export async function prune(items: Cached[], max: number): Promise<[number, number]> {
  let total = items.reduce((n, c) => n + c.size, 0);
  let count = 0, freed = 0;
  for (const c of items) {
    if (total <= max) break;
    if (c.inUse || !(await c.remove())) continue;
    total -= c.size;
    freed += c.size;
    count++;
  }
  return [count, freed];
}

/** After a pull: the blob cache down to MAX bytes. Never fails (a cache only: said at -v). */
export async function boundBlobs(log: Log, storage: Storage, max: number): Promise<void> {
  let b: Awaited<ReturnType<typeof blobs>> | undefined;
  try {
    b = await blobs(log, storage);
    const [n, bytes] = await prune(b.items, max);
    if (n) log.info(`blob cache: removed ${n} least recently used (${(bytes / 1048576).toFixed(1)} MiB) to stay under ${(max / 1048576).toFixed(0)} MiB (CH_PULL_CACHE_MAX)`);
  } catch (err) {
    log.info(`blob cache: can't prune: ${(err as Error).message}`);
  } finally {
    b?.close();
  }
}
