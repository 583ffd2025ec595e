// ch-pull's work as a library, for ch-pull (main.ts) and ch-convert: REF
// resolved to one image manifest (withImage), then that image built into a
// directory: DEST through shared-install.ts's atomic steps (pullToDir), a tarball
// (pullToTar), or any empty directory of the caller's (PulledImage.build).

import { spawn } from 'node:child_process';
import { closeSync, openSync, renameSync, unlinkSync, constants as C } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { ChError, Log, why } from '../util/log.js';
import { at, openDir, refuseForeignFile, removeOwned } from '../util/owned-fs.js';
import { EXIT_USAGE, manifestKey, type Reference } from './reference.js';
import { Registry } from './registry.js';
import { imageManifest, isIndex, platformText, selectPlatform,
  type Descriptor, type ImageManifest, type Platform } from './manifest.js';
import { BlobCache, fsWhy, Storage, type BlobResult } from './cache.js';
import { BLOBS_MAX_DEFAULT, boundBlobs } from './cache-bound.js';
import { storageDir } from '../util/paths.js';
import { applyLayer, canFollow, type UnpackBound } from './apply.js';
import type { ExtractResult } from '../tar/native.js';
import { readConfig } from './config.js';
import { printable } from './text.js';
import { finishImage, install, makeTemp, PROG } from './image-dir.js';

const EXIT_FAIL = 1;
export const JOBS_DEFAULT = 3;

/**
 * What to pull: REF for PLATFORM, at most JOBS blobs at a time. maxUnpacked:
 * at most this many bytes of file data unpacked from all layers (0: no
 * bound); not given: $CH_PULL_MAX_UNPACKED's, else none.
 */
export interface PullOptions { ref: Reference; platform: Platform; insecure: boolean; jobs: number; maxUnpacked?: number }

/** SIZE (WHAT in errors) in bytes: a number, optionally with K, M, G or T (powers of 1024). */
export function parseSize(size: string, what: string): number {
  const m = /^([0-9]{1,15})([kmgt]?)$/i.exec(size);
  const n = m ? Number(m[1]) * 1024 ** ' kmgt'.indexOf(m[2].toLowerCase() || ' ') : NaN;
  if (!Number.isSafeInteger(n))
    throw new ChError(`${what} '${printable(size)}': want a size in bytes, optionally with K, M, G or T (e.g. 500M)`, EXIT_USAGE);
  return n;
}

/** N bytes as people say it: "512 KiB", "2 GiB", "1000 bytes". */
function sizeText(n: number): string {
  for (const [u, k] of [['TiB', 40], ['GiB', 30], ['MiB', 20], ['KiB', 10]] as const)
    if (n >= 2 ** k && n % 2 ** k === 0) return `${n / 2 ** k} ${u}`;
  return `${n} bytes`;
}

/** The bound on unpacked size O asks for (or $CH_PULL_MAX_UNPACKED), in bytes; 0: none. */
function maxUnpacked(o: PullOptions, env: NodeJS.ProcessEnv = process.env): number {
  if (o.maxUnpacked !== undefined) return o.maxUnpacked;
  const e = env.CH_PULL_MAX_UNPACKED;
  return e === undefined || e === '' ? 0 : parseSize(e, 'CH_PULL_MAX_UNPACKED');
}

/** An image resolved to its manifest, ready to be built. */
export interface PulledImage {
  /** The manifest's digest. */
  digest: string;
  layers: number;
  storage: Storage;
  /** Fill ROOT, an empty directory only the caller can reach, with the image (ch-pull's marker too if MARKER). */
  build: (root: string, marker: boolean) => Promise<void>;
}

/** Progress: per layer on a terminal (one line, redrawn), one line per layer otherwise, nothing with -q. */
class PullProgress {
  private readonly tty: boolean;
  private readonly done: number[];
  private last = 0;
  constructor(private readonly log: Log, private readonly layers: Descriptor[]) {
    this.tty = log.verbosity >= 0 && Boolean(process.stderr.isTTY);
    this.done = layers.map(() => 0);
  }
  update(i: number, n: number): void {
    this.done[i] = n;
    if (!this.tty || Date.now() - this.last < 100) return;
    this.last = Date.now();
    const parts = this.layers.map((l, k) => `${k + 1}:${l.size ? Math.floor((100 * this.done[k]) / l.size) : 100}%`);
    const mib = this.done.reduce((a, b) => a + b, 0) / 1048576;
    const line = `${this.log.prog}: layers ${parts.join(' ')} (${mib.toFixed(1)} MiB)`;
    process.stderr.write(`\r${line.slice(0, Math.max(40, process.stderr.columns || 80) - 1)}\x1b[K`);
  }
  layer(i: number, r: BlobResult, applied: boolean): void {
    const l = this.layers[i];
    const how = r.cached ? 'cached' : r.resumedFrom ? `downloaded (resumed at ${(r.resumedFrom / 1048576).toFixed(1)} MiB)` : 'downloaded';
    const msg = `layer ${i + 1}/${this.layers.length} ${l.digest.slice(0, 19)} ${(l.size / 1048576).toFixed(1)} MiB ${how}${applied ? ', applied' : ''}`;
    if (this.tty) process.stderr.write(`\r\x1b[K${this.log.prog}: ${msg}\n`);
    else if (this.log.verbosity >= 0) process.stderr.write(`${this.log.prog}[${process.pid}]: ${msg}\n`);
  }
}

/** At most N of FNS run at once; results in order, as promises. */
function bounded<T>(n: number, fns: (() => Promise<T>)[]): Promise<T>[] {
  let running = 0;
  const queue: (() => void)[] = [];
  return fns.map((fn) => new Promise<T>((res, rej) => {
    const go = () => {
      running++;
      fn().then(res, rej).finally(() => { running--; queue.shift()?.(); });
    };
    if (running < n) go(); else queue.push(go);
  }));
}

async function resolveImage(reg: Registry, o: PullOptions, log: Log): Promise<ImageManifest> {
  const what = o.ref.canonical;
  let m = await reg.manifest(manifestKey(o.ref), what);
  if (isIndex(m)) {
    const d = selectPlatform(m, o.platform, what);
    log.info(`${what}: ${platformText(o.platform)} is ${d.digest}`);
    m = await reg.manifest(d.digest, `${what} (${platformText(o.platform)})`);
  }
  return imageManifest(m, what);
}

/** A promise and its resolver. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

/**
 * Apply the layer BLOB downloads (WHAT in errors) onto ROOT: from FD, its
 * .part as it grows, or once complete if FD is null. If extracting from FD
 * fails, the download's outcome is the error when it failed too: bytes that
 * are not what the manifest says broke the extractor, not the layer.
 */
async function applyInTurn(fd: number | null, blob: Promise<BlobResult>, root: string, what: string,
  signal: AbortSignal, bound?: UnpackBound): Promise<ExtractResult> {
  if (fd === null) return applyLayer((await blob).path, root, what, signal, bound);
  try {
    return await applyLayer(`/proc/self/fd/${fd}`, root, what, signal, bound, blob.then(() => true, () => false));
  } catch (err) {
    await blob;
    throw err;
  }
}

/**
 * Download (bounded in parallel) and apply every layer into ROOT, in order;
 * the /ch files and marker last. A layer this pull downloads is applied as
 * it arrives (the extractor follows its .part file, cache.ts), while later
 * layers download; it counts as applied only once its download is verified,
 * before the next layer is applied. Any failure stops every download, and
 * the error is the first one: a download's (a digest mismatch, say) over
 * what its unverified bytes did to the extractor.
 */
async function buildImage(root: string, o: PullOptions, reg: Registry, cache: BlobCache, img: ImageManifest,
  log: Log, signal: AbortSignal, marker: boolean, limit: number): Promise<void> {
  const bar = new PullProgress(log, img.layers);
  const bound: UnpackBound | undefined = limit > 0 ? { limit, used: 0, text: sizeText(limit) } : undefined;
  const stop = new AbortController();
  const sig = AbortSignal.any([signal, stop.signal]);
  let first: unknown;
  const fail = (err: unknown) => { if (!stop.signal.aborted) { first = err; stop.abort(); } };
  // Each layer's .part, reopened for the extractor (fd), or null once the blob is whole (cached, or done).
  const parts = img.layers.map(() => deferred<number | null>());
  const fds: number[] = [];
  const follow = (i: number) => (pfd: number) => {
    if (!canFollow(img.layers[i].mediaType)) return;
    let fd: number;
    try { fd = openSync(`/proc/self/fd/${pfd}`, 'r'); } catch { return; }   // no /proc, no fd left: applied once complete
    fds.push(fd);
    parts[i].resolve(fd);
  };
  // A job not yet started when the pull fails never starts.
  const stopped = () => Promise.reject(new ChError('stopped: another blob failed', EXIT_FAIL));
  const jobs = [() => (sig.aborted ? stopped() : cache.get(reg, img.config, log, () => {}, sig)),
    ...img.layers.map((l, i) => () => (sig.aborted ? stopped() : cache.get(reg, l, log, (n) => bar.update(i, n), sig, follow(i))))];
  const blobs = bounded(o.jobs, jobs);
  blobs.forEach((b, k) => {
    b.catch(fail);
    if (k > 0) void b.then(() => parts[k - 1].resolve(null), () => parts[k - 1].resolve(null));
  });
  try {
    const cfg = readConfig((await blobs[0]).path, img.config.digest);
    if (cfg.platform.architecture && cfg.platform.architecture !== o.platform.architecture)
      log.warn(`image is for ${printable(`${cfg.platform.os}/${cfg.platform.architecture}`)}, not ${platformText(o.platform)}`);
    for (const s of cfg.skipped) log.warn(`ENV ${s}: can't be written to /ch/environment (control character); skipped`);
    let whiteouts = 0;
    for (let i = 0; i < img.layers.length; i++) {
      const what = `layer ${i + 1} (${img.layers[i].digest})`;
      const r = await applyInTurn(await parts[i].promise, blobs[i + 1], root, what, sig, bound);
      const b = await blobs[i + 1];   // verified before the next layer goes on top
      whiteouts += r.whiteouts ?? 0;
      if (r.devices) log.warn(`layer ${i + 1}: skipped ${r.devices} device node(s)/fifo(s)`);
      bar.layer(i, b, true);
    }
    log.debug(`${whiteouts} whiteout(s) applied`);
    const files = [{ path: 'ch/environment', content: cfg.environment }, { path: 'ch/metadata.json', content: cfg.metadata }];
    finishImage(root, files, marker ? { reference: o.ref.canonical, manifest: img.digest, platform: platformText(o.platform),
      created: new Date().toISOString() } : undefined);
  } catch (err) {
    fail(err);
    throw first;
  } finally {
    // No download outlives the pull: each has closed its .part and let go of its lock.
    stop.abort();
    await Promise.allSettled(blobs);
    for (const fd of fds) closeSync(fd);
  }
}

/**
 * --tar FILE: build in the storage directory, then write FILE through a
 * temporary beside it. FILE's directory may be shared: it is named through
 * a descriptor, and FILE replaced only if it is a plain file of ours.
 */
async function writeTar(file: string, build: (root: string) => Promise<void>, storage: Storage, log: Log): Promise<void> {
  const out = resolve(file);
  const dir = dirname(out), name = basename(out);
  let dirFd: number;
  try { dirFd = openDir(dir); } catch (err) { throw new ChError(`${dir}: can't use as --tar FILE's directory: ${why(err)}`, EXIT_FAIL); }
  const part = `.${name}.ch-pull-tmp.${randomBytes(6).toString('hex')}`;
  let written = false;
  let tmpDirFd = -1, tmpFd = -1, tmpName = '';
  try {
    refuseForeignFile(dirFd, name, file);   // before anything is fetched, and again before the rename
    tmpDirFd = storage.dir('tmp');
    ({ tmpName, tmpFd } = makeTemp(tmpDirFd, join(storage.path, 'tmp'), 'tar'));
    const root = `/proc/self/fd/${tmpFd}/.`;
    await build(root);
    let outFd: number;
    try { outFd = openSync(at(dirFd, part), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o644); } catch (err) {
      throw new ChError(`${file}: can't write beside it: ${fsWhy(err)}`, EXIT_FAIL);
    }
    written = true;
    let code: number | null;
    try {
      code = await new Promise<number | null>((res, rej) => {
        // The image directory is tar's fd 3 and the new file its stdout: no path in a shared
        // directory is looked up twice.
        const p = spawn('tar', ['-C', '/proc/self/fd/3/.', '--numeric-owner', '--owner=0', '--group=0', '-czf', '-', '.'],
          { stdio: ['ignore', outFd, 'pipe', tmpFd] });
        let err = '';
        p.stderr!.on('data', (d) => { err += d; });
        p.on('error', rej);
        p.on('close', (c) => { if (c !== 0) log.error(err.trim()); res(c); });
      });
    } finally {
      closeSync(outFd);
    }
    if (code !== 0) throw new ChError(`${file}: tar failed (exit ${code})`, EXIT_FAIL);
    refuseForeignFile(dirFd, name, file);
    try { renameSync(at(dirFd, part), at(dirFd, name)); } catch (err) {
      throw new ChError(`${file}: can't put in place: ${fsWhy(err)}`, EXIT_FAIL);
    }
    written = false;
  } finally {
    if (tmpFd >= 0) closeSync(tmpFd);
    if (written) try { unlinkSync(at(dirFd, part)); } catch { /* gone */ }
    if (tmpName) removeOwned(tmpDirFd, tmpName, join(storage.path, 'tmp', tmpName));
    if (tmpDirFd >= 0) closeSync(tmpDirFd);
    closeSync(dirFd);
  }
}

/**
 * Open the storage directory, connect to O.ref's registry and resolve its
 * manifest for O.platform; USE then builds the image (blobs from the cache,
 * or downloaded into it). SIGNAL aborts downloads and unpacking.
 */
export async function withImage<T>(o: PullOptions, log: Log, signal: AbortSignal, use: (img: PulledImage) => Promise<T>): Promise<T> {
  const limit = maxUnpacked(o);   // a bad $CH_PULL_MAX_UNPACKED is refused before anything is fetched
  const cacheMax = blobCacheMax();   // likewise $CH_PULL_CACHE_MAX
  const storage = Storage.open(storageDir());
  const cache = new BlobCache(storage);
  try {
    const reg = new Registry(o.ref, { insecure: o.insecure, log, signal });
    await reg.connect();
    const img = await resolveImage(reg, o, log);
    log.info(`${o.ref.canonical}: manifest ${img.digest}, ${img.layers.length} layer(s)`);
    return await use({ digest: img.digest, layers: img.layers.length, storage,
      build: (root, marker) => buildImage(root, o, reg, cache, img, log, signal, marker, limit) });
  } finally {
    await cache.close();   // our pins gone: what this pull used is now the most recently used
    await boundBlobs(log, storage, cacheMax);
    storage.close();
  }
}

/** The bound on the blob cache ($CH_PULL_CACHE_MAX, a size; default BLOBS_MAX_DEFAULT), in bytes. */
export function blobCacheMax(env: NodeJS.ProcessEnv = process.env): number {
  const e = env.CH_PULL_CACHE_MAX;
  return e === undefined || e === '' ? BLOBS_MAX_DEFAULT : parseSize(e, 'CH_PULL_CACHE_MAX');
}

/** IMG as the directory DIR/NAME (DIRFD open on DIR), atomically (image-dir.ts, shared-install.ts); reused if already this manifest, unless FORCE. */
export function pullToDir(img: PulledImage, log: Log, where: { dirFd: number; dir: string; name: string }, force: boolean,
  signal: AbortSignal): Promise<'current' | 'installed'> {
  return install(log, { ...where, force,
    upToDate: (m) => m.tool === PROG && m.manifest === img.digest,
    build: (root) => img.build(root, true) }, signal);
}

/** IMG as the gzipped tarball FILE (as ch-builder2tar writes it), built in the storage directory. */
export function pullToTar(img: PulledImage, log: Log, file: string): Promise<void> {
  return writeTar(file, (root) => img.build(root, false), img.storage, log);
}
