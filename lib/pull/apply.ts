// Layers onto an image root, in order, through the confined native extractor
// in its OCI layer mode (whiteouts and opaque directories applied; nothing
// written outside the root, whatever the layer holds).

import { ChError } from '../util/log.js';
import { decodeThread, tarAddon, useOpenat2, type ExtractResult } from '../tar/native.js';
import { printable } from './text.js';

export const EXIT_FAIL = 1;

/** A bound on what the layers of an image unpack to: LIMIT bytes of file data in all, USED so far. */
export interface UnpackBound { limit: number; used: number; text: string }

/** Can a layer of media type MEDIA be applied while it downloads (a decoder for it built in)? */
export function canFollow(media: string): boolean {
  const d = tarAddon().decoders;
  if (/\.tar$/.test(media)) return true;
  if (/[.+]gzip$/.test(media)) return Boolean(d.gzip);
  if (/[.+]zstd$/.test(media)) return Boolean(d.zstd);
  return false;   // unknown: applied once downloaded, whatever its compression
}

/**
 * Apply layer tarball BLOB (any compression) on top of ROOT's contents,
 * within BOUND when given (counted up by what this layer wrote). GROWING:
 * BLOB is still being written (a download), whole once it resolves true;
 * false stops the extraction (the download failed).
 */
export async function applyLayer(blob: string, root: string, what: string, signal?: AbortSignal,
  bound?: UnpackBound, growing?: Promise<boolean>): Promise<ExtractResult> {
  const progress = new ArrayBuffer(24);
  const view = new BigUint64Array(progress);   // [bytes read, cancel, complete]
  const cancel = () => { view[1] = 1n; };
  if (signal?.aborted) cancel();
  signal?.addEventListener('abort', cancel);
  void growing?.then((whole) => { if (whole) view[2] = 1n; else cancel(); });
  try {
    // Never world-writable, whatever the umask: others could plant files in the image.
    const r = await tarAddon().extract(blob, root, { openat2: useOpenat2(), follow: Boolean(growing), decodeThread: decodeThread(),
      umask: process.umask() | 0o002, progress, layer: true, ...(bound ? { maxBytes: bound.limit - bound.used } : {}) });
    // A layer's names are the image maker's: printable, like everything a registry serves.
    if (r.overLimit)
      throw new ChError(`${what}: unpacked size over the limit of ${bound!.text} (--max-unpacked or CH_PULL_MAX_UNPACKED),`
        + ` at ${printable(r.error!)}`, EXIT_FAIL);
    if (r.error) throw new ChError(printable(`${what}: ${r.code === 'ENOSPC' ? 'disk full: ' : ''}${r.error}${r.code ? `: ${r.why} (${r.code})` : ''}`), EXIT_FAIL);
    if (bound) bound.used += r.bytes;
    return r;
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
}
