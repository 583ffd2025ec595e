// Uploading the layer while it is packed, as skopeo and docker do: an
// upload session is opened before packing, and one PATCH (no length:
// chunked transfer encoding, no Content-Range; the distribution spec's
// "streamed" upload, which every registry that takes docker's pushes
// takes) carries the file as the packer writes it; once packing is done the
// digest is known and the closing PUT ?digest= names it. On a network the
// upload then costs little more than the packing; without the overlap they
// add up. Before packing the digest is unknown, so the HEAD that spares an
// upload comes after: a layer the registry had already is sent anyway
// (only when no record of an earlier push says what it is: layer-cache.ts).
//
// A streamed PATCH can't be repeated (its body is read once), so a failure
// of the network or the registry's 5xx makes the upload start again the
// ordinary way (upload.ts: HEAD, then PUT or chunks) from the complete
// file; any other failure (refused, credentials) is the push's error and
// stops the packing.

import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { transient } from '../pull/http.js';
import { causeOf, finishUpload, startUpload, type Blob } from './upload.js';
import type { PushSession } from './session.js';

/** The file the packer is writing: read as it grows, to its end once finish() is called. */
export class Growing {
  private done = false;
  private failed: unknown;
  private wake: (() => void) | undefined;

  finish(): void { this.done = true; this.wake?.(); }
  fail(err: unknown): void { this.failed = err ?? new Error('packing failed'); this.wake?.(); }

  private pause(): Promise<void> {
    return new Promise((res) => { const t = setTimeout(res, 25); this.wake = () => { clearTimeout(t); res(); }; });
  }

  /** PATH's bytes as they are written (1 MiB reads), ending after finish() once all are read. */
  stream(path: string): Readable {
    const self = this;
    return Readable.from((async function* () {
      let fh;
      while (!fh) {
        try { fh = await open(path, 'r'); } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || self.failed || self.done) throw self.failed ?? err;
          await self.pause();
        }
      }
      try {
        let off = 0, sawDone = false;
        for (;;) {
          const buf = Buffer.allocUnsafe(1 << 20);
          const { bytesRead } = await fh.read(buf, 0, buf.length, off);
          if (bytesRead > 0) { off += bytesRead; yield buf.subarray(0, bytesRead); continue; }
          if (self.failed) throw self.failed;
          // Done: one more read, as the last bytes may have landed after the one above.
          if (self.done) { if (sawDone) return; sawDone = true; continue; }
          await self.pause();
        }
      } finally {
        await fh.close();
      }
    })(), { objectMode: false });
  }
}

/** Where a streamed upload got to: the session to finish, or why it gave up (to start again the ordinary way). */
export type Streamed = { loc: URL } | { retry: unknown };

/**
 * Open an upload session for WHAT and PATCH BODY (the growing file) into
 * it. ONSESSION hears of the session's URL (to cancel it if packing fails).
 * A failure worth starting again for resolves as {retry}; others reject.
 */
export async function streamLayer(s: PushSession, what: string, body: Readable, onSession: (loc: URL) => void): Promise<Streamed> {
  try {
    const loc = (await startUpload(s, what))!;   // no mount asked: never null
    onSession(loc);
    const step = `uploading ${what} (as it is packed)`;
    let used = false;
    const { res } = await s.send('PATCH', loc, step, { headers: { 'content-type': 'application/octet-stream' },
      body: () => { if (used) throw new Error('the streamed body was already sent'); used = true; return body; } });
    if (res.statusCode !== 202) throw await s.refusedBy(step, res);
    res.resume();
    const next = res.headers.location;
    return { loc: next ? new URL(next, loc) : loc };
  } catch (err) {
    body.destroy();
    const cause = causeOf(err);
    if (s.signal?.aborted) throw err;
    if (transient(cause) || /already sent/.test((cause as Error)?.message ?? '')) return { retry: err };
    throw err;
  }
}

/** Close the streamed session at LOC as blob B: true if the registry took it. */
export async function finishStreamed(s: PushSession, loc: URL, b: Blob): Promise<true | { retry: unknown }> {
  try {
    await finishUpload(s, loc, b);
    return true;
  } catch (err) {
    if (s.signal?.aborted || !transient(causeOf(err))) throw err;
    return { retry: err };
  }
}
