// Extract a tarball into an existing empty directory with the native
// extractor, reporting progress (bytes of the input read) as it goes.

import { closeSync, constants, openSync, readSync } from 'node:fs';
import { ChError } from '../util/log.js';
import { decodeThread, tarAddon, type ExtractResult } from './native.js';

export interface ExtractOptions {
  /** Use openat2(RESOLVE_BENEATH); false forces the openat(O_NOFOLLOW) walk (old kernels, tests). */
  openat2?: boolean;
  /** Called every ~200 ms with bytes of the tarball read so far. */
  onProgress?: (bytesRead: number) => void;
  /** Aborting stops the extraction before its next entry; it then fails with "interrupted". */
  signal?: AbortSignal;
}

export const EXIT_REFUSED = 1;

/** Does FILE begin with SquashFS's magic ("hsqs", little-endian)? Asked only once extraction failed. */
function isSquashFs(file: string): boolean {
  const b = Buffer.alloc(4);
  let fd: number | undefined;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);   // never blocks (a fifo put there since)
    return readSync(fd, b, 0, 4, 0) === 4 && b.toString('latin1') === 'hsqs';
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export async function extract(tarball: string, dest: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const progress = new ArrayBuffer(16);
  const view = new BigUint64Array(progress);   // [bytes read, cancel]
  const cancel = () => { view[1] = 1n; };
  if (opts.signal?.aborted) cancel();
  opts.signal?.addEventListener('abort', cancel);
  // Never world-writable, whatever the caller's umask: others could plant files in the image.
  const um = process.umask() | 0o002;
  const work = tarAddon().extract(tarball, dest, { openat2: opts.openat2 ?? true, umask: um, progress, decodeThread: decodeThread() });
  let timer: NodeJS.Timeout | undefined;
  if (opts.onProgress) timer = setInterval(() => opts.onProgress!(Number(view[0])), 200);
  try {
    const r = await work;
    if (r.error) {
      if (isSquashFs(tarball))
        throw new ChError(`${tarball}: a SquashFS image, not a tarball: run it directly with ch-run, or ch-convert it`, EXIT_REFUSED);
      throw new ChError(`${tarball}: ${r.error}${r.code ? `: ${r.why} (${r.code})` : ''}`, EXIT_REFUSED);
    }
    opts.onProgress?.(Number(view[0]));
    return r;
  } finally {
    if (timer) clearInterval(timer);
    opts.signal?.removeEventListener('abort', cancel);
  }
}
