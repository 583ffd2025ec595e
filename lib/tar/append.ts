// A pass-through for a tar stream that drops its end-of-archive marker and
// appends more entries before writing a new one. It only walks headers (each
// header's size says how much data follows), so it costs no copy of the data.

import { Transform, type TransformCallback } from 'node:stream';
import { entryBytes, type NewEntry } from './header.js';

function size(h: Buffer): number {
  if (h[124] & 0x80) {   // base-256
    let v = h[124] & 0x3f;
    for (let i = 125; i < 136; i++) v = v * 256 + h[i];
    return v;
  }
  const s = h.toString('latin1', 124, 136).replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]*$/.test(s)) throw new Error('corrupt tar stream from builder: bad size field');
  return s === '' ? 0 : parseInt(s, 8);
}

export class TarAppender extends Transform {
  private pending = Buffer.alloc(0);   // partial header
  private skip = 0;                    // data bytes (with padding) to pass through
  private ended = false;               // saw the end-of-archive block

  constructor(private readonly extra: NewEntry[]) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      let off = 0;
      while (off < chunk.length && !this.ended) {
        if (this.skip > 0) {
          const k = Math.min(this.skip, chunk.length - off);
          this.push(chunk.subarray(off, off + k));
          this.skip -= k;
          off += k;
          continue;
        }
        const need = 512 - this.pending.length;
        const take = chunk.subarray(off, off + need);
        off += take.length;
        this.pending = this.pending.length ? Buffer.concat([this.pending, take]) : Buffer.from(take);
        if (this.pending.length < 512) break;
        const h = this.pending;
        this.pending = Buffer.alloc(0);
        if (h.every((b) => b === 0)) { this.ended = true; break; }
        const n = size(h);
        this.push(h);
        this.skip = Math.ceil(n / 512) * 512;
      }
      cb();   // anything after the end marker is padding: dropped
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (!this.ended || this.skip > 0 || this.pending.length > 0) {
      cb(new Error('tar stream from builder ended early (no end-of-archive marker)'));
      return;
    }
    for (const e of this.extra) this.push(entryBytes(e));
    this.push(Buffer.alloc(1024));
    cb();
  }
}
