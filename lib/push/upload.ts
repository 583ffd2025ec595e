// One blob into the registry, per the OCI distribution spec: HEAD first (a
// blob the repository has is not sent again); optionally mounted from
// another repository of the same registry (POST ?mount=&from=, 201);
// otherwise an upload session (POST, 202 and a Location), then either one
// monolithic PUT ?digest= with the whole blob, or, for a blob bigger than
// the chunk size, PATCHes of CHUNK bytes each (Content-Range START-END,
// inclusive) and a closing PUT ?digest= with no body. Every Location is
// resolved against the URL that sent it (relative or absolute), and the
// session continues there. A chunk that fails on the network is resumed
// where the registry says it has got to (GET of the session: Range 0-N);
// a failed or aborted session is cancelled (DELETE) so it leaves nothing
// behind. The blob is read from disk in 1 MiB pieces, never held whole.

import { createReadStream } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { ChError } from '../util/log.js';
import { readBody, retryPolicy, transient } from '../pull/http.js';
import { printable } from '../pull/text.js';
import type { PushSession } from './session.js';

export interface Blob {
  digest: string;
  size: number;
  mediaType: string;
  /** What it is, in messages ("layer 1", "config"). */
  what: string;
  /** Its bytes: a file, or in memory (a config). */
  path?: string;
  data?: Buffer;
}

export type BlobOutcome = 'present' | 'mounted' | 'uploaded';

export interface UploadOptions {
  /** Blobs bigger than this go in PATCH chunks of this size; 0: always one PUT. */
  chunkSize: number;
  /** Another repository of the registry that may hold the blob: mounted from there if so. */
  mountFrom?: string;
  /** Bytes of this blob sent so far (the registry's count: it may go back after a retry). */
  onProgress?: (sent: number) => void;
}

/** Does the repository have blob B? (HEAD: 200 yes, 404 no.) */
export async function blobExists(s: PushSession, b: Blob): Promise<boolean> {
  const step = `checking whether the registry has ${b.what} (${b.digest})`;
  const { res } = await s.send('HEAD', s.url(`blobs/${b.digest}`), step, { retry: true });
  if (res.statusCode === 200) { res.resume(); return true; }
  if (res.statusCode === 404) { res.resume(); return false; }
  throw await s.refusedBy(step, res);
}

/** Bytes START..END-1 of B, made afresh for each attempt; ON counts them as they go. */
function bytesOf(b: Blob, start: number, end: number, on?: (n: number) => void): () => Buffer | NodeJS.ReadableStream {
  if (b.data) return () => b.data!.subarray(start, end);
  return () => {
    const st = createReadStream(b.path!, { start, end: end - 1, highWaterMark: 1 << 20 });
    if (on) { let n = start; st.on('data', (c) => on(n += c.length)); }
    return st;
  };
}

/** The session's next URL: RES's Location, resolved against FROM. */
function location(s: PushSession, res: IncomingMessage, from: URL, step: string): URL {
  const loc = res.headers.location;
  if (!loc) throw s.fail(step, `HTTP ${res.statusCode} without a Location header`);
  try { return new URL(loc, from); } catch { throw s.fail(step, `bad Location header '${printable(loc)}'`); }
}

function withDigest(u: URL, digest: string): URL {
  const d = new URL(u);
  d.searchParams.set('digest', digest);
  return d;
}

/** Put B in the repository unless it is there: what was done. */
export async function uploadBlob(s: PushSession, b: Blob, o: UploadOptions): Promise<BlobOutcome> {
  if (await blobExists(s, b)) return 'present';
  // A whole session again on a failure of the network the chunk recovery did not cure.
  const policy = retryPolicy();
  for (let attempt = 0; ; attempt++) {
    try {
      return await uploadSession(s, b, o);
    } catch (err) {
      if (s.signal?.aborted || attempt >= policy.retries || !transient(causeOf(err))) throw err;
      const ms = policy.baseMs * 2 ** attempt;
      s.log.warn(`${b.what}: upload failed (${(err as Error).message}); starting again in ${(ms / 1000).toFixed(1)} s`);
      await new Promise((res) => setTimeout(res, ms));
    }
  }
}

/** What went wrong underneath a ChError of the session's (a network failure, a 5xx), else ERR itself. */
export function causeOf(err: unknown): unknown {
  return err instanceof ChError && (err as { cause?: unknown }).cause !== undefined ? (err as { cause?: unknown }).cause : err;
}

/** POST for an upload session of WHAT (mounting DIGEST from MOUNTFROM if given): its URL, or null if mounted. */
export async function startUpload(s: PushSession, what: string, mount?: { digest: string; from: string }): Promise<URL | null> {
  const step = `starting the upload of ${what}`;
  const start = s.url('blobs/uploads/');
  if (mount) { start.searchParams.set('mount', mount.digest); start.searchParams.set('from', mount.from); }
  const { res, url } = await s.send('POST', start, step, { retry: true, headers: { 'content-length': '0' } });
  if (res.statusCode === 201 && mount) { res.resume(); return null; }
  if (res.statusCode !== 202) throw await s.refusedBy(step, res);
  res.resume();
  return location(s, res, url, step);
}

/** The closing PUT ?digest= of the session at LOC for B, with BODY (default none); the registry's digest checked. */
export async function finishUpload(s: PushSession, loc: URL, b: Blob, body?: { make: () => Buffer | NodeJS.ReadableStream; size: number },
  step = `uploading ${b.what} (${b.digest}, ${b.size} bytes)`): Promise<void> {
  const done = await s.send('PUT', withDigest(loc, b.digest), step, { body: body?.make ?? (() => Buffer.alloc(0)),
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(body?.size ?? 0) } });
  if (done.res.statusCode !== 201) throw await s.refusedBy(step, done.res);
  done.res.resume();
  const said = done.res.headers['docker-content-digest'];
  if (typeof said === 'string' && said !== b.digest)
    throw s.fail(step, `the registry stored it as ${printable(said)}, not ${b.digest}`);
}

async function uploadSession(s: PushSession, b: Blob, o: UploadOptions): Promise<BlobOutcome> {
  const started = await startUpload(s, b.what, o.mountFrom ? { digest: b.digest, from: o.mountFrom } : undefined);
  if (started === null) return 'mounted';
  let loc = started;
  try {
    const chunked = o.chunkSize > 0 && b.size > o.chunkSize;
    const step = `uploading ${b.what} (${b.digest}, ${b.size} bytes${chunked ? ` in chunks of ${o.chunkSize}` : ''})`;
    if (chunked) loc = await sendChunks(s, b, o, loc, step);
    await finishUpload(s, loc, b, chunked ? undefined : { make: bytesOf(b, 0, b.size, o.onProgress), size: b.size }, step);
    o.onProgress?.(b.size);
    return 'uploaded';
  } catch (err) {
    await s.cancelUpload(loc);
    throw err;
  }
}

/** PATCH B to the session at LOC in chunks; resumes a chunk that broke where the registry has got to. The session's URL after. */
async function sendChunks(s: PushSession, b: Blob, o: UploadOptions, loc: URL, step: string): Promise<URL> {
  const policy = retryPolicy();
  let off = 0, failures = 0;
  while (off < b.size) {
    const end = Math.min(off + o.chunkSize, b.size);
    try {
      const { res } = await s.send('PATCH', loc, step, { body: bytesOf(b, off, end, o.onProgress),
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(end - off), 'content-range': `${off}-${end - 1}` } });
      if (res.statusCode !== 202) throw await s.refusedBy(`${step}: bytes ${off}-${end - 1}`, res);
      res.resume();
      loc = location(s, res, loc, step);
      off = end;
      failures = 0;
    } catch (err) {
      const cause = causeOf(err);
      if (s.signal?.aborted || !transient(cause) || ++failures > policy.retries) throw err;
      s.log.warn(`${b.what}: chunk at ${off} failed (${(cause as Error)?.message}); asking the registry where it stands`);
      ({ loc, off } = await status(s, loc, step));
      o.onProgress?.(off);
    }
  }
  return loc;
}

/** Where the upload session at LOC stands (GET: 204, Range 0-N): its URL and the next offset. */
async function status(s: PushSession, loc: URL, step: string): Promise<{ loc: URL; off: number }> {
  const { res, url } = await s.send('GET', loc, `${step}: asking how much arrived`, { retry: true });
  if (res.statusCode !== 204) throw await s.refusedBy(`${step}: asking how much arrived`, res);
  await readBody(res, 1 << 16).catch(() => undefined);
  const m = /^(?:bytes=)?0-([0-9]+)$/.exec(String(res.headers.range ?? ''));
  return { loc: res.headers.location ? location(s, res, url, step) : loc, off: m ? Number(m[1]) + 1 : 0 };
}
