// Entries ch-builder2tar appends to an exported image (/ch/, /ch/environment,
// /ch/metadata.json), encoded by node-tar's Header (ustar). Only the header
// encoder: the export stream itself passes through TarAppender unparsed,
// which re-packing it with node-tar would make ~5x slower (docs/design.md).

import { Header } from 'tar/header';

export interface NewEntry { name: string; type: 'file' | 'dir'; mode: number; data?: Buffer; mtime?: number }

export function ustarHeader(e: NewEntry): Buffer {
  const h = new Header({
    path: e.name,
    type: e.type === 'dir' ? 'Directory' : 'File',
    mode: e.mode,
    uid: 0,
    gid: 0,
    uname: 'root',
    gname: 'root',
    size: e.data?.length ?? 0,
    mtime: new Date((e.mtime ?? Math.floor(Date.now() / 1000)) * 1000),
  });
  // needPax: a name or value ustar can't hold; ours are short and fixed.
  if (h.encode() || !h.block) throw new Error(`tar entry ${e.name} doesn't fit a ustar header`);
  return h.block;
}

export function entryBytes(e: NewEntry): Buffer {
  const parts = [ustarHeader(e)];
  if (e.data?.length) parts.push(e.data, Buffer.alloc((512 - (e.data.length % 512)) % 512));
  return Buffer.concat(parts);
}
