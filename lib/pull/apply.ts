// Layers onto an image root, in order, through the confined native extractor
// in its OCI layer mode (whiteouts and opaque directories applied; nothing
// written outside the root, whatever the layer holds).

import { ChError } from '../util/log.js';
import { tarAddon, type ExtractResult } from '../tar/native.js';

export const EXIT_FAIL = 1;

/** Apply layer tarball BLOB (any compression) on top of ROOT's contents. */
export async function applyLayer(blob: string, root: string, what: string, signal?: AbortSignal): Promise<ExtractResult> {
  const progress = new ArrayBuffer(16);
  const view = new BigUint64Array(progress);   // [bytes read, cancel]
  const cancel = () => { view[1] = 1n; };
  if (signal?.aborted) cancel();
  signal?.addEventListener('abort', cancel);
  try {
    // Never world-writable, whatever the umask: others could plant files in the image.
    const r = await tarAddon().extract(blob, root, { openat2: process.env.CH_TAR2DIR_OPENAT2 !== '0',
      umask: process.umask() | 0o002, progress, layer: true });
    if (r.error) throw new ChError(`${what}: ${r.code === 'ENOSPC' ? 'disk full: ' : ''}${r.error}${r.code ? `: ${r.why} (${r.code})` : ''}`, EXIT_FAIL);
    return r;
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
}
