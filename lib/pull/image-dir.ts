// Making DIR/NAME, ch-pull's image directory, atomically and safely in a
// directory others may write (/var/tmp, a project directory): the rules are
// lib/image/shared-install.ts's, shared with ch-tar2dir. ch-pull's own are its names
// (lock DIR/.NAME.ch-pull.lock, temporaries DIR/.NAME.ch-pull-tmp.RANDOM)
// and its marker's fields; the marker and the rule (an image the user made
// with any of the image tools may be replaced) are every tool's.

import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { ChError, type Log } from '../util/log.js';
import { makeTempDir } from '../util/owned-fs.js';
import { imageDirs, MOUNT_FILES } from '../image/layout.js';
import { existingImage as existingImageOf, IMAGE_KIND, IMAGE_MARKER, installImage, markerText, stripToolState, type Marker } from '../image/shared-install.js';
import { tarAddon, useOpenat2, type FixupOp } from '../tar/native.js';
import { lockTimeoutMs } from './cache.js';

export type { Marker };
export const EXIT_FAIL = 1;
export const PROG = 'ch-pull';
/** The marker it writes, relative to the image root: every image tool's. */
export const MARKER = IMAGE_MARKER;
const KIND = IMAGE_KIND;

function tmpPrefix(name: string): string { return `.${name}.ch-pull-tmp.`; }

/**
 * What is at DIRFD/NAME (WHERE in messages): null if nothing, else its
 * marker. Anything that is not our own image directory is refused.
 */
export function existingImage(dirFd: number, name: string, where: string): Marker | null {
  return existingImageOf(KIND, dirFd, name, where);
}

/** A new directory (0700) with an unpredictable name in DIRFD: its name and fd. */
export function makeTemp(dirFd: number, dir: string, name: string): { tmpName: string; tmpFd: number } {
  return makeTempDir(dirFd, dir, tmpPrefix(name));
}

/**
 * Mount points ch-run needs, and the files under /ch, created inside ROOT
 * through the confined writer, after removing the /ch/.ch-* entries the
 * layers brought (markers are ours alone: lib/image/shared-install.ts). With
 * MARKER (this image's fields), ch-pull's marker last.
 */
export function finishImage(root: string, files: { path: string; content: string }[], marker?: object): void {
  for (const n of stripToolState(root))
    process.stderr.write(`${PROG}[${process.pid}]: warning: ${n}: removed (came with the image's layers; only our image tools write such files)\n`);
  if (marker) files = [...files, { path: MARKER, content: markerText(PROG, marker, root) }];
  const ops: FixupOp[] = imageDirs().map((d) => ({ op: 'dir', path: d }));
  for (const f of MOUNT_FILES) ops.push({ op: 'file', path: f });
  for (const f of files) ops.push({ op: 'write', path: f.path, content: f.content });
  for (const f of tarAddon().fixup(root, ops, { openat2: useOpenat2() })) {
    if (f.path.startsWith('ch/')) throw new ChError(`can't write /${f.path}: ${f.message}`, EXIT_FAIL);
    process.stderr.write(`${PROG}[${process.pid}]: warning: can't create mount point /${f.path}: ${f.message}\n`);
  }
  chmodSync(root, 0o755);
}

export interface InstallRequest {
  dirFd: number;
  dir: string;
  name: string;
  /** Reuse an existing image of ours with this marker (same manifest), unless force. */
  upToDate: (m: Marker) => boolean;
  force: boolean;
  /** Fill ROOT (a path through our descriptor) with the image; the marker content last. */
  build: (root: string) => Promise<void>;
}

/** Make DIR/NAME (lib/image/shared-install.ts): 'current' if it already was, 'installed' if made now. */
export function install(log: Log, req: InstallRequest, signal?: AbortSignal): Promise<'current' | 'installed'> {
  const target = join(req.dir, req.name);
  return installImage(log, {
    kind: KIND,
    tool: PROG,
    lock: { holder: `another ${PROG} of yours`, timeoutMs: lockTimeoutMs(), timeoutVar: 'CH_PULL_LOCK_TIMEOUT', signal,
      onWait: () => log.info(`waiting for another ${PROG} making ${target}`) },
    dirFd: req.dirFd, dir: req.dir, name: req.name, tmpPrefix: tmpPrefix(req.name),
    purpose: 'create the image in it',
    upToDate: req.upToDate, force: req.force,
    build: async (tmp) => { await req.build(tmp); return undefined; },
  });
}
