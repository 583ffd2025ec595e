// The storage directory ($CH_IMAGE_STORAGE, default /var/tmp/$USER.ch) and
// its content-addressed blob cache, blobs/ALGO/HEX.
//
// The storage directory is the user's alone: created 0700, and refused if it
// is a link, not the user's, or writable by others (it usually sits in a
// shared /var/tmp). Everything in it is reached through descriptors, never
// by following a link.
//
// A blob is downloaded into blobs/ALGO/HEX.part and renamed to HEX only once
// its digest is verified, so HEX is always complete and correct; a .part left
// by a pull that died is resumed (Range) by the next. One pull at a time
// works on a given blob: the others wait on the flock of HEX.lock, then find
// the blob in place.
//
// The cache is bounded (cache-bound.ts prunes it, least recently used
// first), so a blob may go while a pull needs it: each pull reads its blobs
// through pins, hard links in a directory of its own, blobs/.pins.RANDOM,
// made as it gets each blob (link(2): the blob is either pinned, its data
// then kept whatever is pruned, or already gone, and then downloaded again)
// and removed when it is done. A pull holds an flock on .pins.RANDOM/.lock
// while it runs, so that the pins of one that was killed can be told apart
// and removed. A blob's ctime (each link and unlink sets it) is its last use.

import { createHash, type Hash } from 'node:crypto';
import { closeSync, constants as C, fstatSync, ftruncateSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync,
  readSync, renameSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { ChError, why, type Log } from '../util/log.js';
import { at, makeTempDir, myUid, openDirAt, removeOwned, untrusted } from '../util/owned-fs.js';
import { flockPath } from '../util/native-fs.js';
import { lockOwn as lockOwnFile, lockWaitMs, unlock } from '../image/shared-install.js';
import type { Descriptor } from './manifest.js';
import { netWhy, type Registry } from './registry.js';
import { withRetries } from './http.js';
import { printable } from './text.js';

export const EXIT_FAIL = 1;

/** "disk full" said plainly; other errors as "why (CODE)". */
export function fsWhy(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code === 'ENOSPC' ? `disk full: ${why(err)}` : why(err);
}

/** Directory NAME in PARENT (fd), created 0700 if missing, and checked to be ours alone; its fd. */
export function ownDirAt(parent: number, name: string, where: string): number {
  try { mkdirSync(at(parent, name), { mode: 0o700 }); } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ChError(`${where}: can't create: ${fsWhy(err)}`, EXIT_FAIL);
  }
  let fd: number;
  try { fd = openDirAt(parent, name); } catch (err) {
    throw new ChError(`${where}: can't use: ${(err as NodeJS.ErrnoException).code === 'ELOOP' ? 'a symlink (ELOOP)' : why(err)}`, EXIT_FAIL);
  }
  const bad = untrusted(fstatSync(fd), where);
  if (bad) { closeSync(fd); throw new ChError(`${bad}; refusing to use it`, EXIT_FAIL); }
  return fd;
}

export class Storage {
  private constructor(readonly path: string, readonly fd: number) {}

  /** Open (creating it 0700 if missing) the storage directory at PATH. */
  static open(path: string): Storage {
    try { mkdirSync(path, { mode: 0o700 }); } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ChError(`storage directory ${path}: can't create: ${fsWhy(err)}`, EXIT_FAIL);
    }
    let fd: number;
    try { fd = openSync(path, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW); } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ChError(`storage directory ${path}: can't use: ${code === 'ELOOP' || code === 'ENOTDIR' ? 'a symlink or not a directory' : why(err)}`
        + ' (set CH_IMAGE_STORAGE to choose another)', EXIT_FAIL);
    }
    const st = fstatSync(fd);
    const bad = untrusted(st, `storage directory ${path}`) ?? ((st.mode & 0o077) ? `storage directory ${path}: open to group or others (mode ${(st.mode & 0o7777).toString(8)}, want 700)` : null);
    if (bad) { closeSync(fd); throw new ChError(`${bad}; refusing to use it (set CH_IMAGE_STORAGE to choose another)`, EXIT_FAIL); }
    return new Storage(path, fd);
  }

  /** Subdirectory NAME (ours alone) of the storage directory; its fd. */
  dir(name: string): number { return ownDirAt(this.fd, name, join(this.path, name)); }

  close(): void { closeSync(this.fd); }
}

/** An flock on DIRFD/NAME, which must be our own regular file (lib/image/shared-install.ts's rules). */
export function lockOwn(dirFd: number, name: string, where: string, signal?: AbortSignal,
  onWait?: () => void, timeoutMs = lockTimeoutMs()): Promise<number> {
  return lockOwnFile(dirFd, name, where,
    { holder: 'another run of yours', timeoutMs, timeoutVar: 'CH_PULL_LOCK_TIMEOUT', signal, onWait });
}

/** Seconds to wait for a lock held by another run of ours ($CH_PULL_LOCK_TIMEOUT, default 3600). */
export function lockTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  return lockWaitMs('CH_PULL_LOCK_TIMEOUT', 3600, env);
}

export { unlock };

export interface BlobResult { path: string; cached: boolean; resumedFrom: number }

/** Names of the pin directories in blobs/ (makeTempDir's: PREFIX + random), and their lock file. */
export const PINS_PREFIX = '.pins.';
export const PINS_LOCK = '.lock';

export class BlobCache {
  private readonly algoFds = new Map<string, number>();
  private readonly blobsFd: number;
  readonly path: string;
  /** This cache's pin directory (name, fd, its lock's fd), made at the first pin. */
  private pins: Promise<{ name: string; fd: number; lock: number }> | null = null;

  constructor(private readonly storage: Storage) {
    this.blobsFd = storage.dir('blobs');
    this.path = join(storage.path, 'blobs');
  }

  private algoDir(algo: string): number {
    let fd = this.algoFds.get(algo);
    if (fd === undefined) {
      fd = ownDirAt(this.blobsFd, algo, join(this.path, algo));
      this.algoFds.set(algo, fd);
    }
    return fd;
  }

  /** Path of the cached blob, or null if it is not (completely) there. */
  private present(fd: number, hex: string, size: number): boolean {
    let st: Stats;
    try { st = lstatSync(at(fd, hex)); } catch { return false; }
    return st.isFile() && st.uid === myUid() && st.size === size;
  }

  /**
   * The blob D, from the cache or downloaded from REG into it, verified
   * against its digest while it streams. PROGRESS hears bytes done. ONPART
   * hears of the .part file (its fd, open until this returns) when this
   * call downloads it, before its first byte is written: a reader may follow
   * it as it grows, and trust what it read only once this resolves.
   */
  async get(reg: Registry, d: Descriptor, log: Log, progress: (done: number) => void, signal?: AbortSignal,
    onPart?: (fd: number) => void): Promise<BlobResult> {
    const [algo, hex] = d.digest.split(':');
    const fd = this.algoDir(algo);
    const path = join(this.path, algo, hex);
    if (this.present(fd, hex, d.size)) {
      const pinned = await this.pin(fd, algo, hex);
      if (pinned) { progress(d.size); return { path: pinned, cached: true, resumedFrom: 0 }; }
      // Pruned just now: downloaded again below.
    }
    const lockName = `${hex}.lock`;
    const lock = await lockOwn(fd, lockName, join(this.path, algo, lockName), signal,
      () => log.info(`${d.digest}: another pull is downloading it; waiting`));
    // Under the lock, which pruning takes too: pinned before anyone can prune it.
    const pinned = async () => {
      const p = await this.pin(fd, algo, hex);
      if (!p) throw new ChError(`${path}: gone just after it was written`, EXIT_FAIL);
      return p;
    };
    try {
      if (this.present(fd, hex, d.size)) { progress(d.size); return { path: await pinned(), cached: true, resumedFrom: 0 }; }
      const resumedFrom = await this.download(reg, d, fd, hex, progress, signal, onPart);
      return { path: await pinned(), cached: false, resumedFrom };
    } finally {
      unlock(fd, lockName, lock);
    }
  }

  /** A pin of blob ALGO/HEX (in directory fd FD) for this cache's user: its path, or null if the blob is gone. */
  private async pin(fd: number, algo: string, hex: string): Promise<string | null> {
    const pins = await (this.pins ??= this.makePins());
    const name = `${algo}-${hex}`;
    try { linkSync(at(fd, hex), at(pins.fd, name)); } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return null;
      if (code !== 'EEXIST') throw new ChError(`${join(this.path, algo, hex)}: can't pin: ${fsWhy(err)}`, EXIT_FAIL);
      // Pinned already (a blob named twice in one manifest).
    }
    return join(this.path, pins.name, name);
  }

  private async makePins(): Promise<{ name: string; fd: number; lock: number }> {
    const { tmpName, tmpFd } = makeTempDir(this.blobsFd, this.path, PINS_PREFIX);
    try {
      return { name: tmpName, fd: tmpFd, lock: await flockPath(at(tmpFd, PINS_LOCK), false) };
    } catch (err) {
      closeSync(tmpFd);
      throw new ChError(`${join(this.path, tmpName)}: can't lock: ${fsWhy(err)}`, EXIT_FAIL);
    }
  }

  private async download(reg: Registry, d: Descriptor, dirFd: number, hex: string,
    progress: (done: number) => void, signal?: AbortSignal, onPart?: (fd: number) => void): Promise<number> {
    const algo = d.digest.split(':')[0];
    const partName = `${hex}.part`;
    const partPath = join(this.path, algo, partName);
    let pfd: number;
    try {
      pfd = openSync(at(dirFd, partName), C.O_RDWR | C.O_CREAT | C.O_NOFOLLOW, 0o600);
    } catch (err) {
      throw new ChError(`${partPath}: can't open: ${fsWhy(err)}`, EXIT_FAIL);
    }
    try {
      const st = fstatSync(pfd);
      const bad = untrusted(st, partPath);
      if (bad || !st.isFile()) throw new ChError(`${bad ?? `${partPath}: not a regular file`}; refusing it`, EXIT_FAIL);
      // What an earlier, interrupted pull left: hashed again, then continued.
      let hash = createHash(algo);
      let done = st.size > d.size ? 0 : hashFile(pfd, st.size, hash);
      if (st.size > d.size) ftruncateSync(pfd, 0);
      let resumedFrom = done;
      progress(done);
      onPart?.(pfd);
      await withRetries(reg.retryPolicy, async () => {
        if (done === d.size) return;
        const res = await reg.blob(d.digest, done, signal);
        // Stopped when SIGNAL aborts (another layer failed), not only between attempts.
        const stop = () => res.destroy(new Error('aborted'));
        if (signal?.aborted) stop();
        signal?.addEventListener('abort', stop);
        let skip = 0;
        if (done > 0 && res.statusCode === 200) {
          // Range not honoured: the whole blob again. Its first DONE bytes are
          // passed over, not written: a reader following the .part may have read
          // them already, and the digest covers exactly what the file holds.
          skip = done;
          resumedFrom = 0;
        } else if (done > 0) {
          const start = /^bytes ([0-9]+)-/.exec(String(res.headers['content-range'] ?? ''))?.[1];
          if (Number(start) !== done) {
            res.destroy();
            throw new ChError(`blob ${d.digest}: registry answered range request for byte ${done} with '${printable(String(res.headers['content-range']))}'`, EXIT_FAIL);
          }
        }
        try {
          for await (const chunk of res) {
            let b = chunk as Buffer;
            if (skip > 0) {
              const k = Math.min(skip, b.length);
              skip -= k;
              b = b.subarray(k);
              if (b.length === 0) continue;
            }
            if (done + b.length > d.size) {
              // Not kept: the next pull would only resume what the manifest already ruled out.
              res.destroy();
              closeSync(pfd);
              pfd = -1;
              unlinkSync(at(dirFd, partName));
              throw new ChError(`blob ${d.digest}: registry sent more than the ${d.size} bytes the manifest says; discarded`, EXIT_FAIL);
            }
            hash.update(b);
            try { writeSync(pfd, b, 0, b.length, done); } catch (err) { throw new ChError(`${partPath}: can't write: ${fsWhy(err)}`, EXIT_FAIL); }
            done += b.length;
            progress(done);
          }
        } catch (err) {
          if (err instanceof ChError) throw err;
          throw Object.assign(new Error(`download of ${d.digest} broken off at byte ${done}: ${netWhy(err)}`), { code: 'ECONNRESET' });
        } finally {
          signal?.removeEventListener('abort', stop);
        }
        if (skip > 0 || done < d.size)
          throw Object.assign(new Error(`download of ${d.digest} ended early, at byte ${done} of ${d.size}`), { code: 'ECONNRESET' });
      }, (err, ms) => reg.onRetry(err, ms), signal).catch((err) => {
        if (err instanceof ChError && done > 0 && / unreachable: /.test(err.message))
          throw new ChError(`${err.message} (${done} of ${d.size} bytes kept; run again to resume)`, EXIT_FAIL);
        if (err instanceof ChError) throw err;
        throw new ChError(`registry ${reg.ref.registry} unreachable: ${netWhy(err)} (${done} of ${d.size} bytes kept; run again to resume)`, EXIT_FAIL);
      });
      const got = `${algo}:${hash.digest('hex')}`;
      if (got !== d.digest) {
        closeSync(pfd);
        pfd = -1;
        unlinkSync(at(dirFd, partName));
        throw new ChError(`blob ${d.digest}: digest mismatch: the registry sent data with digest ${got}; discarded`, EXIT_FAIL);
      }
      try { fsyncSync(pfd); } catch (err) { throw new ChError(`${partPath}: ${fsWhy(err)}`, EXIT_FAIL); }
      renameSync(at(dirFd, partName), at(dirFd, hex));
      return resumedFrom;
    } finally {
      if (pfd >= 0) closeSync(pfd);
    }
  }

  /** Unpin (remove this cache's pin directory), then close. */
  async close(): Promise<void> {
    if (this.pins) {
      try {
        const pins = await this.pins;
        closeSync(pins.fd);
        try { removeOwned(this.blobsFd, pins.name, join(this.path, pins.name)); } finally { closeSync(pins.lock); }
      } catch { /* never made (its error was said), or can't remove: the next prune removes it */ }
    }
    for (const fd of this.algoFds.values()) closeSync(fd);
    closeSync(this.blobsFd);
  }
}

/** Feed the first N bytes of FD to HASH; returns N. */
function hashFile(fd: number, n: number, hash: Hash): number {
  const buf = Buffer.allocUnsafe(1 << 20);
  let pos = 0;
  while (pos < n) {
    const k = readSync(fd, buf, 0, Math.min(buf.length, n - pos), pos);
    if (k === 0) break;
    hash.update(buf.subarray(0, k));
    pos += k;
  }
  return pos;
}

