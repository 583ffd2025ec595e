// What the last push of an unchanged tree packed: so that pushing it again
// (the registry has the layer) needs no packing, which is nearly all of a
// push's time (gzip of a 170 MB Debian tree: ~5 s here; the HEAD that finds
// the blob: milliseconds).
//
// The key is a fingerprint of the tree, walked without following links:
// every entry's path, type, mode, owner, size, inode, mtime and ctime (in
// ns), with the compression and the packing's version. Any write to a
// file, chmod, chown, rename or new entry changes some entry's ctime or
// the set of entries, and ctime can't be set by a user, so an unchanged
// fingerprint means an unchanged tree. Records live in the storage
// directory (0700, the user's, checked when opened: lib/pull/cache.ts), in
// push/, one small JSON file per fingerprint, written under a temporary name
// and renamed. A record is only a shortcut: the layer it names is used only
// when the registry has it.

import { closeSync, constants as C, fstatSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Storage } from '../pull/cache.js';
import type { Compression } from './layer.js';

/** Bump when the layer's bytes would differ for the same tree (tar options, compression settings). */
const PACKING_VERSION = 'ch-push-layer-3';

export interface LayerRecord { digest: string; diffId: string; size: number; compression: Compression }

/** The fingerprint of the tree at ROOT for COMPRESSION: sha256 hex. */
export function fingerprint(root: string, compression: Compression): string {
  const h = createHash('sha256').update(`${PACKING_VERSION}\0${compression}\0`);
  const walk = (rel: string) => {
    const names = readdirSync(join(root, rel)).sort();
    for (const name of names) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, p), { bigint: true });
      h.update(`${p}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.ino}\0${st.mtimeNs}\0${st.ctimeNs}\n`);
      if (st.isDirectory()) walk(p);
    }
  };
  const top = lstatSync(root, { bigint: true });
  h.update(`.\0${top.mode}\0${top.uid}\0${top.gid}\0${top.ino}\0${top.mtimeNs}\0${top.ctimeNs}\n`);
  walk('');
  return h.digest('hex');
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** The record for FP, or null (none, or not a plain file of ours, or not what we write). */
export function readRecord(storage: Storage, fp: string): LayerRecord | null {
  const dirFd = storage.dir('push');
  try {
    let fd: number;
    try { fd = openSync(`/proc/self/fd/${dirFd}/${fp}.json`, C.O_RDONLY | C.O_NOFOLLOW); } catch { return null; }
    try {
      const st = fstatSync(fd);
      if (!st.isFile() || st.uid !== process.getuid!() || st.size > 4096) return null;
      const r = JSON.parse(readFileSync(fd, 'utf8'));
      if (!DIGEST.test(r?.digest) || !DIGEST.test(r?.diffId) || !Number.isSafeInteger(r?.size) || (r.compression !== 'gzip' && r.compression !== 'zstd'))
        return null;
      return { digest: r.digest, diffId: r.diffId, size: r.size, compression: r.compression };
    } catch { return null; } finally { closeSync(fd); }
  } finally {
    closeSync(dirFd);
  }
}

/** Remember R for FP (best effort: a record is only a shortcut). */
export function writeRecord(storage: Storage, fp: string, r: LayerRecord): void {
  let dirFd = -1;
  try {
    dirFd = storage.dir('push');
    const tmp = `/proc/self/fd/${dirFd}/.${fp}.${randomBytes(6).toString('hex')}`;
    writeFileSync(tmp, JSON.stringify(r), { flag: 'wx', mode: 0o600 });
    renameSync(tmp, `/proc/self/fd/${dirFd}/${fp}.json`);
  } catch { /* not remembered: the next push packs again */ } finally {
    if (dirFd >= 0) closeSync(dirFd);
  }
}
