// Staging an image for the SPANK plugin (native/spank/): what --ch-image
// names made into something ch-run's core can run, once per node and cache.
// A directory or a SquashFS file is used where it is; a tarball is unpacked
// (ch-tar2dir's code) and a registry reference pulled (ch-pull's library)
// into a per-user cache on the node, keyed by the tarball's identity or the
// manifest's digest. Concurrent steps and tasks wait on the importer's lock
// (ch-tar2dir's and ch-pull's own, bounded) and then reuse its image. Entries
// beyond the size limit go, least recently used first.
//
// The cache is the user's: a directory of theirs, mode 0700, in /var/tmp by
// default (docs/design.md, "Shared directories are hostile").

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync,
  utimesSync, writeFileSync, renameSync, type Stats } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChError, Log, why } from '../util/log.js';
import { at, openDir, removeOwned, untrusted } from '../util/owned-fs.js';
import { lockOwn, lockWaitMs, unlock } from '../image/shared-install.js';
import { parseReference } from '../pull/reference.js';
import { hostPlatform } from '../pull/manifest.js';
import { JOBS_DEFAULT, pullToDir, withImage } from '../pull/pull.js';

export const EXIT_STAGE = 1;
/** The default size limit of the cache, in bytes (CH_SPANK_CACHE_SIZE). */
export const CACHE_SIZE_DEFAULT = 20 * 2 ** 30;
/** Seconds a stager waits for another importing the same image (CH_SPANK_LOCK_TIMEOUT). */
const LOCK_TIMEOUT_S = 3600;
/** Entries used this recently are never collected: a running step may have them mounted (CH_SPANK_CACHE_KEEP, s). */
export const KEEP_DEFAULT_S = 600;

const TARBALL = /\.(tar|tar\.gz|tgz|tar\.xz|txz|tar\.zst|tzst|tar\.bz2|tbz2)$/;
const SQFS = /\.(sqfs|squashfs)$/;

export interface StageOptions {
  /** The image as the user gave it (--ch-image). */
  image: string;
  /** The cache directory (made mode 0700 if absent). */
  cache: string;
  /** Size limit in bytes. */
  limit: number;
  /** Entries used less than this long ago (ms) are kept whatever the limit. */
  keepMs: number;
  /** The job's working directory: relative image paths are relative to it. */
  cwd: string;
  /** Runs ch-tar2dir (bin/ch-tar2dir) on TARBALL into DIR; resolves when it exited 0. */
  tar2dir: (tarball: string, dir: string) => Promise<void>;
}

export interface Staged { path: string; imported: boolean; kind: 'dir' | 'sqfs' | 'tarball' | 'registry' }

/** The cache directory, opened: ours, mode 0700 (created so), or an error saying why not. */
function openCache(dir: string): number {
  try { mkdirSync(dir, { recursive: true, mode: 0o700 }); } catch (err) {
    throw new ChError(`cache ${dir}: can't create: ${why(err)}`, EXIT_STAGE);
  }
  let fd: number;
  try { fd = openDir(dir); } catch (err) {
    throw new ChError(`cache ${dir}: can't open: ${why(err)}`, EXIT_STAGE);
  }
  const st = fstatSync(fd);
  const bad = untrusted(st, `cache ${dir}`) ?? ((st.mode & 0o077) ? `cache ${dir}: open to others (mode ${(st.mode & 0o777).toString(8)}); want 0700` : null);
  if (bad) { closeSync(fd); throw new ChError(`${bad}; set CH_SPANK_CACHE to a directory of yours`, EXIT_STAGE); }
  return fd;
}

interface Meta { key: string; kind: string; source: string; path: string; size: number }

function readMeta(fd: number, key: string): Meta | null {
  try {
    const st = lstatSync(at(fd, `${key}.json`));
    if (!st.isFile() || untrusted(st, key)) return null;
    const m = JSON.parse(readFileSync(at(fd, `${key}.json`), 'utf8')) as Meta;
    return m.key === key ? m : null;
  } catch { return null; }
}

function writeMeta(fd: number, m: Meta): void {
  const tmp = `.${m.key}.json.${process.pid}`;
  writeFileSync(at(fd, tmp), JSON.stringify(m), { mode: 0o600, flag: 'wx' });
  renameSync(at(fd, tmp), at(fd, `${m.key}.json`));
}

/** Mark KEY used now: its meta file's mtime is the LRU clock. */
function touch(fd: number, key: string): void {
  const now = new Date();
  try { utimesSync(at(fd, `${key}.json`), now, now); } catch { /* collected meanwhile: the next use imports again */ }
}

/** Bytes under directory P (lstat sizes, no link followed). */
function treeSize(p: string): number {
  let n = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const f = join(d, e.name);
      try {
        const st = lstatSync(f);
        n += st.size;
        if (e.isDirectory()) walk(f);
      } catch { /* unreadable: not counted */ }
    }
  };
  try { walk(p); } catch { /* unreadable root */ }
  return n;
}

/** A tarball's identity: the file, as the kernel has it now; another file or a rewrite is another key. */
function fileKey(path: string, st: Stats): string {
  const id = [path, st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs].join('\0');
  return 'tar-' + createHash('sha256').update(id).digest('hex').slice(0, 24);
}

/** What the user's IMAGE is, and the image ch-run is to be given. */
export async function stage(o: StageOptions, log: Log): Promise<Staged> {
  const looksLikePath = o.image.startsWith('/') || o.image.startsWith('./') || o.image.startsWith('../')
    || SQFS.test(o.image) || TARBALL.test(o.image);
  const path = resolve(o.cwd, o.image);
  let st: Stats | null = null;
  try { st = statSync(path); } catch (err) {
    if (looksLikePath) throw new ChError(`--ch-image=${o.image}: ${why(err)}`, EXIT_STAGE);
  }
  if (st?.isDirectory()) return { path, imported: false, kind: 'dir' };
  if (st?.isFile() && SQFS.test(path)) return { path, imported: false, kind: 'sqfs' };
  if (st?.isFile() && TARBALL.test(path)) return stageTarball(o, realpathSync(path), st, log);
  if (st) throw new ChError(`--ch-image=${o.image}: not a directory, SquashFS file (.sqfs) or image tarball `
    + '(.tar, .tar.gz, .tgz, .tar.xz, .tar.zst)', EXIT_STAGE);
  return stageRef(o, log);
}

async function stageTarball(o: StageOptions, path: string, st: Stats, log: Log): Promise<Staged> {
  const key = fileKey(path, st);
  return inCache(o, key, log, async (fd) => {
    const dir = join(o.cache, key);
    try { mkdirSync(at(fd, key), { mode: 0o700 }); } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ChError(`cache ${dir}: ${why(err)}`, EXIT_STAGE);
    }
    await o.tar2dir(path, dir);   // its lock: concurrent steps wait, then find it unpacked
    const name = readdirSync(at(fd, key)).find((e) => !e.startsWith('.'));
    if (!name) throw new ChError(`--ch-image=${o.image}: ch-tar2dir left no image in ${dir}`, EXIT_STAGE);
    return { kind: 'tarball', source: path, path: join(dir, name) };
  });
}

async function stageRef(o: StageOptions, log: Log): Promise<Staged> {
  let ref;
  try { ref = parseReference(o.image); } catch (err) {
    throw new ChError(`--ch-image=${o.image}: not a directory, file or registry reference: ${(err as Error).message}`, EXIT_STAGE);
  }
  const abort = new AbortController();
  // ch-pull's progress lines would go to every job's stderr: only its errors (thrown) are ours to say.
  const quiet = new Log(log.prog, Math.min(log.verbosity - 1, -1));
  try {
    return await withImage({ ref, platform: hostPlatform(), insecure: false, jobs: JOBS_DEFAULT }, quiet, abort.signal, async (img) => {
      const key = 'reg-' + img.digest.replace(/^sha256:/, '').slice(0, 32);
      return inCache(o, key, log, async (fd) => {
        await pullToDir(img, quiet, { dirFd: fd, dir: o.cache, name: `${key}.img` }, false, abort.signal);
        return { kind: 'registry', source: `${ref.canonical}@${img.digest}`, path: join(o.cache, `${key}.img`) };
      });
    });
  } catch (err) {
    if (err instanceof ChError && !err.message.startsWith('--ch-image'))
      throw new ChError(`--ch-image=${o.image}: ${err.message}`, err.exitCode);
    throw err;
  }
}

/**
 * KEY from the cache if an earlier import left it whole (its meta file is
 * written last), else IMPORT it; then mark it used and collect beyond the
 * limit. The importers lock per image, so concurrent stagers of one KEY wait
 * for the first and then reuse what it made.
 */
async function inCache(o: StageOptions, key: string, log: Log,
  importer: (fd: number) => Promise<{ kind: string; source: string; path: string }>): Promise<Staged> {
  const fd = openCache(o.cache);
  // One stager of KEY at a time: the others wait, then find its meta (bounded: CH_SPANK_LOCK_TIMEOUT).
  const lock = await lockOwn(fd, `.${key}.lock`, join(o.cache, `.${key}.lock`), { holder: 'another stager of yours',
    timeoutMs: lockWaitMs('CH_SPANK_LOCK_TIMEOUT', LOCK_TIMEOUT_S), timeoutVar: 'CH_SPANK_LOCK_TIMEOUT' });
  try {
    const have = readMeta(fd, key);
    if (have && exists(have.path)) {
      touch(fd, key);
      return { path: have.path, imported: false, kind: have.kind as Staged['kind'] };
    }
    const got = await importer(fd);
    writeMeta(fd, { key, ...got, size: treeSize(got.path) });
    // One line per import, in the job's stderr as pyxis says its own: users (and the tests) see it happen once.
    if (log.verbosity >= 0)
      process.stderr.write(`${log.prog}[${process.pid}]: imported ${got.source} into ${o.cache}\n`);
    await collect(fd, o, key, log);
    return { path: got.path, imported: true, kind: got.kind as Staged['kind'] };
  } finally {
    unlock(fd, `.${key}.lock`, lock);
    closeSync(fd);
  }
}

function exists(p: string): boolean {
  try { return lstatSync(p).isDirectory(); } catch { return false; }
}

/** Remove least recently used entries until the cache is within its limit; never KEEP or one in use. */
async function collect(fd: number, o: StageOptions, keep: string, log: Log): Promise<void> {
  const lock = await lockOwn(fd, '.gc.lock', join(o.cache, '.gc.lock'), { holder: 'another stager of yours',
    timeoutMs: lockWaitMs('CH_SPANK_LOCK_TIMEOUT', LOCK_TIMEOUT_S), timeoutVar: 'CH_SPANK_LOCK_TIMEOUT' });
  try {
    const entries = readdirSync(`/proc/self/fd/${fd}`).filter((e) => e.endsWith('.json') && !e.startsWith('.'))
      .map((e) => e.slice(0, -5)).map((k) => ({ k, m: readMeta(fd, k), t: mtime(fd, `${k}.json`) }))
      .filter((e) => e.m !== null).sort((a, b) => a.t - b.t);
    let total = entries.reduce((n, e) => n + e.m!.size, 0);
    for (const e of entries) {
      if (total <= o.limit) break;
      if (e.k === keep || Date.now() - e.t < o.keepMs) continue;
      // Meta first: a stager that finds no meta imports anew rather than use a half-removed tree.
      removeOwned(fd, `${e.k}.json`, join(o.cache, `${e.k}.json`));
      const top = e.m!.kind === 'registry' ? `${e.k}.img` : e.k;
      removeOwned(fd, top, join(o.cache, top));
      total -= e.m!.size;
      log.info(`removed ${e.m!.source} from ${o.cache} (least recently used; cache limit ${o.limit} bytes)`);
    }
  } finally {
    unlock(fd, '.gc.lock', lock);
  }
}

function mtime(fd: number, name: string): number {
  try { return lstatSync(at(fd, name)).mtimeMs; } catch { return 0; }
}

/** A size as CH_SPANK_CACHE_SIZE gives it: bytes, or with K, M, G, T (powers of 1024). */
export function parseLimit(s: string | undefined): number {
  if (s === undefined || s === '') return CACHE_SIZE_DEFAULT;
  const m = /^([0-9]+(?:\.[0-9]+)?)([KMGT]?)i?B?$/i.exec(s.trim());
  if (!m) throw new ChError(`CH_SPANK_CACHE_SIZE: want a size such as 20G, got '${s}'`, 2);
  return Math.round(Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()));
}
