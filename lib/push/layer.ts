// An image directory as one compressed layer file, and its two digests
// (the compressed blob's, which names it in the registry, and the
// uncompressed tar's, the config's diff_id), both computed as the bytes
// stream past: the tree is read once and nothing is held in memory whole.
//
// The tar is GNU tar's, as every other tarball of ours (ch-convert's
// directory-to-tar and builder archives), made reproducible: entries sorted
// by name, owner and group root (numeric), pax format without atime and
// ctime, so the same tree gives the same bytes and a second push finds the
// layer already there. No member has a setuid or setgid bit (--mode=ug-s:
// docs/design.md, "No tool ever creates a setuid or setgid file"), and no
// xattrs, ACLs or SELinux labels go in (file capabilities are privilege
// too). ch-pull's and ch-tar2dir's markers (/ch/.ch-*) stay out: they are
// those tools' state about this directory, not content.
//
// gzip is zlib's on every core (pgzip.ts; Node 20's zlib has no zstd); zstd
// is the zstd command (-T0).

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ChError, type Log, why } from '../util/log.js';
import { ParallelGzip } from './pgzip.js';

export const EXIT_FAIL = 1;

export type Compression = 'gzip' | 'zstd';

/**
 * zlib's level 4, its fastest "lazy" level: the 170 MB Debian tree to 59.7
 * MiB in 2.6 s (one core, here), against 58.3 MiB in 3.8 s at gzip's default
 * 6 and 60.2 MiB from skopeo's push of the same tree.
 */
export const GZIP_LEVEL = 4;

export interface PackedLayer {
  /** The compressed file. */
  path: string;
  /** sha256:HEX of the file: the blob's digest. */
  digest: string;
  size: number;
  /** sha256:HEX of the uncompressed tar (the config's rootfs.diff_ids). */
  diffId: string;
  compression: Compression;
}

/** Hashes (and counts) what passes through. */
class Tap extends Transform {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/** GNU tar's arguments for a reproducible layer of ROOT on stdout. */
export function tarArgs(root: string): string[] {
  return ['--create', '--file', '-', '--directory', root, '--sort=name', '--format=posix',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    '--numeric-owner', '--owner=0', '--group=0', '--mode=ug-s',
    '--no-xattrs', '--no-acls', '--no-selinux', '--exclude=./ch/.ch-*', '.'];
}

/** A child's stderr, kept (the last 4 KiB) for the error message. */
function stderrOf(p: ChildProcess): () => string {
  let err = '';
  p.stderr!.on('data', (d) => { err = (err + d).slice(-4096); });
  return () => err.trim();
}

/** P's exit: resolves with its status (or signal name). */
function exited(p: ChildProcess): Promise<number | string> {
  return new Promise((res) => {
    p.on('error', (err) => res(`can't run: ${why(err)}`));
    p.on('close', (code, sig) => res(code ?? sig ?? 'unknown'));
  });
}

/**
 * ROOT packed into the new file OUT, compressed with COMPRESSION. SIGNAL
 * kills the tools and fails the packing; OUT is then the caller's to remove.
 */
export async function packLayer(root: string, out: string, compression: Compression, log: Log, signal?: AbortSignal): Promise<PackedLayer> {
  const tar = spawn('tar', tarArgs(root), { stdio: ['ignore', 'pipe', 'pipe'] });
  const tarErr = stderrOf(tar), tarDone = exited(tar);
  let zstd: ChildProcess | undefined;
  let zstdErr = () => '', zstdDone: Promise<number | string> = Promise.resolve(0);
  const kill = () => { tar.kill('SIGKILL'); zstd?.kill('SIGKILL'); };
  signal?.addEventListener('abort', kill, { once: true });
  const raw = new Tap(), packed = new Tap();
  try {
    const file = createWriteStream(out, { flags: 'wx', mode: 0o600 });
    try {
      if (compression === 'gzip') {
        await pipeline(tar.stdout!, raw, new ParallelGzip(GZIP_LEVEL), packed, file, { signal });
      } else {
        // -T0: all cores (the frame layout, so the bytes, do not depend on how many).
        zstd = spawn('zstd', ['-q', '-c', '-3', '-T0'], { stdio: ['pipe', 'pipe', 'pipe'] });
        zstdErr = stderrOf(zstd);
        zstdDone = exited(zstd);
        await Promise.all([pipeline(tar.stdout!, raw, zstd.stdin!, { signal }), pipeline(zstd.stdout!, packed, file, { signal })]);
      }
    } catch (err) {
      kill();
      if (signal?.aborted) throw err;
      // A tool that failed says why on stderr; the broken pipe is only its echo.
      const [t, z] = [await tarDone, await zstdDone];
      if (t !== 0) throw new ChError(`can't pack ${root}: tar failed (${t}): ${tarErr()}`, EXIT_FAIL);
      if (z !== 0) throw new ChError(`can't compress the layer of ${root}: zstd failed (${z}): ${zstdErr()}`, EXIT_FAIL);
      throw new ChError(`can't write the layer of ${root} to ${out}: ${why(err)}`, EXIT_FAIL);
    }
    const [t, z] = [await tarDone, await zstdDone];
    if (t !== 0) throw new ChError(`can't pack ${root}: tar failed (exit ${t}): ${tarErr()}`, EXIT_FAIL);
    if (z !== 0) throw new ChError(`can't compress the layer of ${root}: zstd failed (exit ${z}): ${zstdErr()}`, EXIT_FAIL);
    for (const l of tarErr().split('\n').filter(Boolean)) log.warn(`packing ${root}: ${l}`);   // e.g. "socket ignored"
  } finally {
    signal?.removeEventListener('abort', kill);
  }
  return { path: out, digest: `sha256:${packed.hash.digest('hex')}`, size: packed.bytes, diffId: `sha256:${raw.hash.digest('hex')}`, compression };
}
