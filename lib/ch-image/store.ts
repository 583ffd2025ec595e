// ch-image's images in the storage directory ch-pull and ch-run use
// (STORAGE/img/NAME, lib/image/names.ts): resolve a tag to its directory,
// list, delete, reset, and install a built tree under a tag through the
// install steps every tool shares (lib/image/shared-install.ts: lock, stage,
// rename, marker), so an interrupted build leaves the previous image intact.

import { closeSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ChError, type Log } from '../util/log.js';
import { removeOwned } from '../util/owned-fs.js';
import { storageDir } from '../util/paths.js';
import { lockTimeoutMs, Storage } from '../pull/cache.js';
import { imageFileName, STORAGE_IMAGES, storedImageDir } from '../image/names.js';
import { existingImage, IMAGE_KIND, IMAGE_MARKER, installImage, markerText, stripToolState, type ImageKind, type Marker } from '../image/shared-install.js';
import { imageDirs, MOUNT_FILES } from '../image/layout.js';
import { tarAddon, useOpenat2, type FixupOp } from '../tar/native.js';

export const PROG = 'ch-image';
export const EXIT_FAIL = 1;
/** The marker every image tool writes (shared-install.ts: one marker, one rule), relative to the image root. */
export const MARKER = IMAGE_MARKER;

/** Images ch-image may replace or delete: any the user made with one of our image tools (their one rule). */
const KIND: ImageKind = IMAGE_KIND;

/** The storage directory in use: -s DIR, else $CH_IMAGE_STORAGE, else /var/tmp/$USER.ch. */
export function storagePath(explicit?: string): string {
  return explicit ?? storageDir();
}

/** TAG with ":latest" if it names no tag, as ch-run and Charliecloud resolve names. */
export function fullTag(tag: string): string {
  return /:[^/]*$/.test(tag) ? tag : `${tag}:latest`;
}

/**
 * TAG's image directory in storage directory STORAGE (default: the one in
 * use): where `ch-run TAG` finds it, and what `ch-image push TAG REF` (lib/push)
 * will read. The name is checked to be usable as a file name.
 */
export function tagDir(tag: string, storage: string = storagePath()): string {
  imageFileName(fullTag(tag));
  return storedImageDir(storage, tag);
}

/** The name of TAG's entry in STORAGE/img. */
export function tagEntry(tag: string): string {
  return imageFileName(fullTag(tag));
}

/** A storage entry name back to the image name ('%' is '/', '+' is ':'). */
export function entryTag(entry: string): string {
  return entry.replaceAll('%', '/').replaceAll('+', ':');
}

/** Open the storage directory (created 0700, refused if not the user's alone) and its img/. */
export function openStorage(explicit?: string): { storage: Storage; imgFd: number; imgDir: string } {
  const storage = Storage.open(storagePath(explicit));
  try {
    return { storage, imgFd: storage.dir(STORAGE_IMAGES), imgDir: join(storage.path, STORAGE_IMAGES) };
  } catch (err) {
    storage.close();
    throw err;
  }
}

/** The images in storage, as tags, sorted. Temporaries and lock files (dot names) are not images. */
export function listImages(imgFd: number): string[] {
  return readdirSync(`/proc/self/fd/${imgFd}`).filter((e) => !e.startsWith('.')).map(entryTag).sort();
}

/** The marker of TAG's image (ours, ch-pull's or ch-tar2dir's), or null if storage has no such image; others refused. */
export function imageMarker(imgFd: number, imgDir: string, tag: string): Marker | null {
  return markerAt(imgFd, imgDir, tagEntry(tag));
}

/** The marker of entry NAME of STORAGE/img, or null if none; anything not the user's tools' refused. */
export function markerAt(imgFd: number, imgDir: string, name: string): Marker | null {
  return existingImage(KIND, imgFd, name, join(imgDir, name));
}

/** Delete TAG's image; false if there is none. Only an image of the user's own tools is removed. */
export async function deleteImage(log: Log, imgFd: number, imgDir: string, tag: string): Promise<boolean> {
  const name = tagEntry(tag);
  const where = join(imgDir, name);
  if (imageMarker(imgFd, imgDir, tag) === null) return false;
  removeOwned(imgFd, name, where);
  log.debug(`removed ${where}`);
  return true;
}

/** Remove everything in the storage directory that is the user's (images, caches, temporaries). */
export function resetStorage(storage: Storage): string[] {
  const removed: string[] = [];
  for (const e of readdirSync(`/proc/self/fd/${storage.fd}`)) {
    removeOwned(storage.fd, e, join(storage.path, e));
    removed.push(e);
  }
  return removed;
}

/**
 * Install a new image as TAG: FILL makes it in an empty directory of ours
 * (the image root); the marker (FIELDS) is written last, then the directory
 * takes TAG's place by a rename. An existing image of TAG stays as it was
 * until that rename, whatever stops the build. 'current' (nothing done):
 * TAG's image is one of the user's tools made and UPTODATE accepts its marker.
 */
export async function installTag(log: Log, imgFd: number, imgDir: string, tag: string, fields: object,
  fill: (root: string) => Promise<void>, signal?: AbortSignal, upToDate: (m: Marker) => boolean = () => false): Promise<'current' | 'installed'> {
  const name = tagEntry(tag);
  return installImage(log, {
    kind: KIND, tool: PROG,
    lock: { holder: `another ${PROG} of yours`, timeoutMs: lockTimeoutMs(), timeoutVar: 'CH_PULL_LOCK_TIMEOUT', signal,
      onWait: () => log.info(`waiting for another ${PROG} installing ${tag}`) },
    dirFd: imgFd, dir: imgDir, name, tmpPrefix: `.${name}.${PROG}-tmp.`,
    purpose: 'install the image in it',
    upToDate, force: false,
    build: async (tmp) => {
      await fill(tmp);
      writeConfined(tmp, [{ path: MARKER, content: markerText(PROG, fields, tmp) }]);
      return undefined;
    },
  });
}

/**
 * The mount points ch-run needs and FILES (relative paths, e.g. the /ch
 * files) made in ROOT through the confined writer (no link followed out of
 * ROOT), after removing the /ch/.ch-* entries the content brought: markers
 * are the tools' alone (lib/image/shared-install.ts).
 */
export function finishTree(log: Log, root: string, files: { path: string; content: string }[]): void {
  for (const n of stripToolState(root)) log.warn(`${n}: removed (came with the image's content; only the tools write such files)`);
  const ops: FixupOp[] = imageDirs().map((d) => ({ op: 'dir', path: d }));
  for (const f of MOUNT_FILES) ops.push({ op: 'file', path: f });
  writeConfined(root, files, ops);
}

/** FILES written in ROOT (after OPS) through the confined writer; a failure on /ch is an error, others warnings. */
function writeConfined(root: string, files: { path: string; content: string }[], ops: FixupOp[] = []): void {
  for (const f of files) ops.push({ op: 'write', path: f.path, content: f.content });
  for (const f of tarAddon().fixup(root, ops, { openat2: useOpenat2() })) {
    if (f.path.startsWith('ch/')) throw new ChError(`can't write /${f.path}: ${f.message}`, EXIT_FAIL);
    process.stderr.write(`${PROG}[${process.pid}]: warning: can't create /${f.path}: ${f.message}\n`);
  }
}

export function closeStorage(s: { storage: Storage; imgFd: number }): void {
  closeSync(s.imgFd);
  s.storage.close();
}

export function noSuchImage(tag: string, storage: string): ChError {
  return new ChError(`${tag}: no such image in ${join(storage, STORAGE_IMAGES)}`, EXIT_FAIL);
}
