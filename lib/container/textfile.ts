// Small text files ch-run reads on the user's or the image's say: --set-env
// FILE, the image's /ch/environment and /ch/metadata.json. Bounded (a FIFO or
// /dev/zero must not hang ch-run or grow it without end), regular files only,
// and an image's own file only from inside the image.

import type { Stats } from 'node:fs';
import { ChError, why } from '../util/log.js';
import { constants, type Host } from './host.js';

/** Largest file read: far above any real environment file or image metadata. */
export const TEXT_FILE_MAX = 1 << 20;

function kindOf(st: Stats): string {
  return st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice()
    ? 'a block device' : st.isSocket() ? 'a socket' : st.isDirectory() ? 'a directory' : 'not a regular file';
}

/** Read all of FD, refusing more than TEXT_FILE_MAX bytes (size may lie: /proc files say 0). */
function readBounded(host: Host, fd: number, what: string): string {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const chunk = Buffer.allocUnsafe(64 << 10);
    const n = host.read(fd, chunk, 0, chunk.length, null);
    if (n === 0) break;
    total += n;
    if (total > TEXT_FILE_MAX) throw new ChError(`${what}: larger than ${TEXT_FILE_MAX} bytes (1 MiB)`);
    chunks.push(chunk.subarray(0, n));
  }
  return Buffer.concat(chunks, total).toString('utf8');
}

/**
 * Read text file PATH. WHAT prefixes every error ("--set-env: can't read
 * PATH"). With WITHIN (an image directory), PATH must have been resolved
 * inside it (resolveInImage): its last component is not followed, and what
 * was opened must lie under WITHIN, whatever happened to the path since.
 */
export function readTextFile(host: Host, path: string, what: string, within?: string): string {
  let fd: number;
  const flags = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY
    | (within !== undefined ? constants.O_NOFOLLOW : 0);
  try {
    fd = host.open(path, flags);   // O_NONBLOCK: opening a FIFO doesn't wait for a writer
  } catch (err) {
    // strerror(3)'s capital, as Charliecloud's "can't open: FILE: No such file or directory"
    const text = why(err);
    throw new ChError(`${what}: ${text.charAt(0).toUpperCase()}${text.slice(1)}`);
  }
  try {
    const st = host.fstat(fd);
    if (!st.isFile()) throw new ChError(`${what}: ${kindOf(st)}, not a regular file`);
    if (within !== undefined) {
      // Our own descriptor: not an input (its open is the dependency, memo.ts).
      const opened = host.fdPath(fd);
      if (!opened.startsWith(host.realpath(within).replace(/\/$/, '') + '/'))
        throw new ChError(`${what}: resolves outside the image (to ${opened})`);
    }
    if (st.size > TEXT_FILE_MAX) throw new ChError(`${what}: larger than ${TEXT_FILE_MAX} bytes (1 MiB)`);
    try {
      return readBounded(host, fd, what);
    } catch (err) {
      if (err instanceof ChError) throw err;
      throw new ChError(`${what}: ${why(err)}`);
    }
  } finally {
    host.close(fd);
  }
}
