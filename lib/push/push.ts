// Pushing an image directory to a registry, as a library (ch-convert -o
// registry; ch-image push): the tree, as ch-pull and ch-tar2dir install it
// (with /ch/metadata.json and /ch/environment), becomes one reproducible
// layer (layer.ts), an image config made from its /ch files by the code
// ch-convert's builder output uses (lib/image/metadata.ts), and a manifest
// (manifest.ts); the layer goes up as it is packed (overlap.ts), other blobs
// per the distribution spec (upload.ts), over
// ch-pull's connection, login and credential rules (session.ts). The layer
// is written into a private temporary directory in the storage directory
// (CH_IMAGE_STORAGE; $TMPDIR may be a small tmpfs) and removed after; what
// it was is remembered (layer-cache.ts), so an unchanged tree pushed again
// is not packed again when the registry has its layer.

import { closeSync, lstatSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ChError, type Log, why } from '../util/log.js';
import { makeTempDir, removeOwned } from '../util/owned-fs.js';
import { storageDir } from '../util/paths.js';
import { Progress } from '../util/progress.js';
import { imageConfig, metadataOf } from '../image/metadata.js';
import { Storage } from '../pull/cache.js';
import { parseReference, type Reference } from '../pull/reference.js';
import { parseSize } from '../pull/pull.js';
import { packLayer, type Compression, type PackedLayer } from './layer.js';
import { finishStreamed, Growing, streamLayer } from './overlap.js';
import { manifestBody, mediaTypes, type ManifestFormat } from './manifest.js';
import { PushSession } from './session.js';
import { blobExists, uploadBlob, type Blob, type BlobOutcome } from './upload.js';
import { fingerprint, readRecord, writeRecord, type LayerRecord } from './layer-cache.js';

export type { Compression, ManifestFormat, BlobOutcome };
export const EXIT_FAIL = 1;
export const EXIT_USAGE = 2;
export interface PushOptions {
  /** The image directory: a tree with /ch/metadata.json and /ch/environment, as ch-pull and ch-tar2dir install it. */
  image: string;
  /** Where to: a reference as ch-pull takes it (REGISTRY/REPO[:TAG], no digest), or one parsed already. */
  ref: string | Reference;
  /** The layer's compression (default gzip). */
  compression?: Compression;
  /** Manifest and media types: OCI (default) or Docker v2 schema 2 (gzip only). */
  format?: ManifestFormat;
  /** Plain HTTP and unverified TLS allowed (ch-pull --insecure). */
  insecure?: boolean;
  /**
   * How the layer goes up: not given (nor CH_PUSH_CHUNK_SIZE), streamed as it
   * is packed (overlap.ts); 0, one PUT once packed; N, PATCHes of N bytes
   * once packed. Other blobs (the config, a layer sent again) go as one PUT,
   * or in chunks of N.
   */
  chunkSize?: number;
  /** A repository of the same registry to mount blobs from when it has them (no upload). */
  mountFrom?: string;
  /** The architecture the config names (GOARCH; default this machine's). */
  architecture?: string;
  /** Progress and steps: info (-v) per step, a bar on a terminal, warnings. */
  log: Log;
  /** Aborts packing and uploads; an open upload session is cancelled (DELETE). */
  signal?: AbortSignal;
  /**
   * Reuse what the last push of this unchanged tree packed when the registry
   * has that layer (layer-cache.ts): no packing. Default true.
   */
  reuse?: boolean;
}

export interface PushedBlob { what: string; digest: string; size: number; outcome: BlobOutcome }

export interface PushResult {
  /** REGISTRY/REPO:TAG as pushed. */
  ref: string;
  /** The manifest's digest: REGISTRY/REPO@DIGEST names exactly this image. */
  digest: string;
  mediaType: string;
  config: PushedBlob;
  layers: PushedBlob[];
  /** Bytes sent as blobs (0 when the registry had them all). */
  uploaded: number;
}

/** The chunk size: OPT, else $CH_PUSH_CHUNK_SIZE (a size: 8M); null, neither: the layer streamed as it is packed. */
export function chunkSize(opt: number | undefined, env: NodeJS.ProcessEnv = process.env): number | null {
  if (opt !== undefined) {
    if (!Number.isSafeInteger(opt) || opt < 0) throw new ChError(`chunk size ${opt}: want a whole number of bytes`, EXIT_USAGE);
    return opt;
  }
  const e = env.CH_PUSH_CHUNK_SIZE;
  return e === undefined || e === '' ? null : parseSize(e, 'CH_PUSH_CHUNK_SIZE');
}

/**
 * When the image was made, for the config: SOURCE_DATE_EPOCH if set, else
 * when /ch/metadata.json (else the root) was last written. Never "now": the
 * same image pushed twice gives the same config, so the same digest.
 */
function createdOf(image: string, env: NodeJS.ProcessEnv = process.env): string {
  const sde = env.SOURCE_DATE_EPOCH;
  if (sde && /^[0-9]{1,12}$/.test(sde)) return new Date(Number(sde) * 1000).toISOString();
  for (const p of [join(image, 'ch', 'metadata.json'), image]) {
    try {
      const st = lstatSync(p);
      if (st.isFile() || st.isDirectory()) return new Date(Math.floor(st.mtimeMs / 1000) * 1000).toISOString();
    } catch { /* the next */ }
  }
  return new Date(0).toISOString();
}

function checkImage(image: string): void {
  let st;
  try { st = lstatSync(image); } catch (err) { throw new ChError(`can't push ${image}: ${why(err)}`, EXIT_FAIL); }
  if (!st.isDirectory()) throw new ChError(`can't push ${image}: not a directory (an image directory, as ch-pull or ch-tar2dir make)`, EXIT_FAIL);
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/**
 * Push image directory O.image to O.ref: pack, then config, layers and
 * manifest into the registry (blobs it has are not sent). Errors are
 * ChErrors naming the registry and the step; exit status 1, or 2 for usage.
 */
export async function pushImage(o: PushOptions): Promise<PushResult> {
  const { log, signal } = o;
  const ref = typeof o.ref === 'string' ? parseReference(o.ref) : o.ref;
  if (ref.digest) throw new ChError(`${ref.canonical}: push to a tag, not a digest (a digest names content, not a place)`, EXIT_USAGE);
  const compression = o.compression ?? 'gzip';
  if (compression !== 'gzip' && compression !== 'zstd') throw new ChError(`compression '${compression}': want gzip or zstd`, EXIT_USAGE);
  const types = mediaTypes(o.format ?? 'oci', compression);
  const chunk = chunkSize(o.chunkSize);
  checkImage(o.image);
  const meta = metadataOf(o.image, log);
  const target = `${ref.registry}/${ref.repository}:${ref.tag}`;
  const s = new PushSession(ref, { insecure: o.insecure === true, log, signal });
  await s.connect();   // unreachable, or credentials refused: said before any packing
  const storage = Storage.open(storageDir());
  const tmpDir = join(storage.path, 'tmp');
  let tmpDirFd = -1, tmpFd = -1, tmpName = '';
  try {
    tmpDirFd = storage.dir('tmp');
    ({ tmpName, tmpFd } = makeTempDir(tmpDirFd, tmpDir, '.ch-push.'));
    const { layer, outcome: layerOutcome } = await theLayer(o, s, storage, compression, types.layer, `/proc/self/fd/${tmpFd}/layer`, chunk === null);
    const config = Buffer.from(JSON.stringify(imageConfig(meta, [layer.diffId],
      { created: createdOf(o.image), createdBy: 'ch-toolkit push', architecture: o.architecture })));
    const blobs: Blob[] = [
      { what: 'layer 1/1', digest: layer.digest, size: layer.size, mediaType: types.layer, path: layer.path },
      { what: 'config', digest: `sha256:${createHash('sha256').update(config).digest('hex')}`, size: config.length,
        mediaType: types.config, data: config },
    ];
    const pushed: PushedBlob[] = [];
    let uploaded = 0;
    for (const b of blobs) {
      const bar = new Progress(`${log.prog}: ${b.what}`, b.size, log.verbosity >= 0 && b.size > 1 << 20);
      const outcome = b.data === undefined && layerOutcome ? layerOutcome
        : await uploadBlob(s, b, { chunkSize: chunk ?? 0, mountFrom: o.mountFrom, onProgress: (n) => bar.update(n) });
      bar.done();
      if (outcome === 'uploaded') uploaded += b.size;
      log.info(`${b.what} ${b.digest.slice(0, 19)} ${mib(b.size)}: ${outcome === 'present' ? 'already in the registry' : outcome}`);
      pushed.push({ what: b.what, digest: b.digest, size: b.size, outcome });
    }
    const manifest = manifestBody(types.manifest,
      { mediaType: types.config, digest: blobs[1].digest, size: blobs[1].size },
      [{ mediaType: types.layer, digest: layer.digest, size: layer.size }]);
    const digest = await putManifest(s, manifest, types.manifest, ref.tag!);
    log.info(`${target}: manifest ${digest}`);
    return { ref: target, digest, mediaType: types.manifest, config: pushed[1], layers: [pushed[0]], uploaded };
  } finally {
    if (tmpFd >= 0) closeSync(tmpFd);
    if (tmpName) removeOwned(tmpDirFd, tmpName, join(tmpDir, tmpName));
    if (tmpDirFd >= 0) closeSync(tmpDirFd);
    storage.close();
  }
}

/**
 * The layer: the one the last push of this unchanged tree packed, when the
 * registry has it (outcome 'present', nothing packed), else packed now into
 * OUT and remembered; with STREAM, uploaded as it is packed (outcome
 * 'uploaded' if that worked; none: upload it the ordinary way).
 */
async function theLayer(o: PushOptions, s: PushSession, storage: Storage, compression: Compression, mediaType: string,
  out: string, stream: boolean): Promise<{ layer: LayerRecord & { path?: string }; outcome?: BlobOutcome }> {
  const { log } = o;
  let fp: string | null = null;
  if (o.reuse !== false) {
    try { fp = fingerprint(o.image, compression); } catch (err) { log.debug(`can't fingerprint ${o.image}: ${why(err)}`); }
  }
  const rec = fp ? readRecord(storage, fp) : null;
  if (rec && await blobExists(s, { what: 'layer 1/1', digest: rec.digest, size: rec.size, mediaType })) {
    log.info(`${o.image}: unchanged since packed as ${rec.digest}, which the registry has: not packed again`);
    return { layer: rec, outcome: 'present' };
  }
  log.info(`packing ${o.image} (${compression})${stream ? ', uploading it as it is packed' : ''}`);
  const t0 = Date.now();
  const { layer, outcome } = stream ? await packStreaming(o, s, compression, mediaType, out)
    : { layer: await packLayer(o.image, out, compression, log, o.signal), outcome: undefined };
  log.info(`layer ${layer.digest}: ${mib(layer.size)} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  if (fp) writeRecord(storage, fp, { digest: layer.digest, diffId: layer.diffId, size: layer.size, compression });
  return { layer, outcome };
}

/** Pack into OUT while a streamed PATCH sends it (overlap.ts); the layer, and 'uploaded' if the registry took it so. */
async function packStreaming(o: PushOptions, s: PushSession, compression: Compression, mediaType: string,
  out: string): Promise<{ layer: PackedLayer; outcome?: BlobOutcome }> {
  const grow = new Growing();
  const stop = new AbortController();   // the packing: stopped by the signal, or by a refused upload
  const onAbort = () => stop.abort(o.signal!.reason);
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let loc: URL | undefined, sendErr: unknown, packFailedFirst = false;
  try {
    const packing = packLayer(o.image, out, compression, o.log, stop.signal)
      .then((l) => { grow.finish(); return l; }, (err) => { packFailedFirst = !stop.signal.aborted; grow.fail(err); throw err; });
    packing.catch(() => {});
    const sending = streamLayer(s, 'layer 1/1', grow.stream(out), (u) => { loc = u; })
      .catch((err) => { sendErr = err; stop.abort(err); return null; });
    let layer: PackedLayer;
    try { layer = await packing; } catch (err) {
      await sending;
      if (loc) await s.cancelUpload(loc);
      throw packFailedFirst ? err : sendErr ?? err;   // the upload failing because packing did says less
    }
    const sent = await sending;
    if (sent === null) { if (loc) await s.cancelUpload(loc); throw sendErr; }
    const blob: Blob = { what: 'layer 1/1', digest: layer.digest, size: layer.size, mediaType, path: out };
    const done = 'loc' in sent ? await finishStreamed(s, sent.loc, blob) : sent;
    if (done === true) return { layer, outcome: 'uploaded' };
    o.log.warn(`layer 1/1: streamed upload failed (${(done.retry as Error)?.message}); uploading it again`);
    if (loc) await s.cancelUpload('loc' in sent ? sent.loc : loc);
    return { layer };
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}

/** PUT the manifest BODY as TAG: its digest, checked against what the registry says it stored. */
async function putManifest(s: PushSession, body: Buffer, mediaType: string, tag: string): Promise<string> {
  const step = `putting the manifest as tag ${tag}`;
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const { res } = await s.send('PUT', s.url(`manifests/${tag}`), step,
    { retry: true, body: () => body, headers: { 'content-type': mediaType, 'content-length': String(body.length) } });
  if (res.statusCode !== 201) throw await s.refusedBy(step, res);
  res.resume();
  const said = res.headers['docker-content-digest'];
  if (typeof said === 'string' && said !== digest) throw s.fail(step, `the registry stored it as ${said}, not ${digest}`);
  return digest;
}
