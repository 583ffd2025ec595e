// Making DIR/NAME, the image directory, atomically and safely in a directory
// others may write (/var/tmp, a project directory):
//   1. flock DIR/.NAME.ch-pull.lock (our own file; someone else's is refused);
//   2. remove our temporaries of NAME left by pulls that died;
//   3. look at DIR/NAME: replaced only if it is our own directory, writable by
//      no one else, with a ch-pull (or ch-tar2dir) marker that is ours; reused
//      if its marker names the same manifest;
//   4. build the image in DIR/.NAME.ch-pull-tmp.RANDOM (0700), reached only
//      through its descriptor;
//   5. rename it into place (RENAME_NOREPLACE, or RENAME_EXCHANGE with our old
//      image, which is then removed).
// DIR/NAME thus only ever holds a complete image, whatever kills the pull.

import { accessSync, chmodSync, closeSync, constants as C, fstatSync, lstatSync, openSync,
  readFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { ChError, why, type Log } from '../util/log.js';
import { at, makeTempDir, myUid, openDirAt, removeOwned, removeStaleTemps, untrusted } from '../util/owned-fs.js';
import { imageDirs, MOUNT_FILES } from '../image/layout.js';
import { tarAddon, type FixupOp } from '../tar/native.js';
import { lockOwn, unlock } from './cache.js';

export const EXIT_FAIL = 1;
export const PROG = 'ch-pull';
/** Marker of an image made by ch-pull, relative to the image root. */
export const MARKER = 'ch/.ch-pull.json';
/** ch-tar2dir's marker: such an image of ours may be replaced too. */
const TAR2DIR_MARKER = 'ch/.ch-tar2dir.json';

export interface Marker { tool: string; reference?: string; manifest?: string }

function tmpPrefix(name: string): string { return `.${name}.ch-pull-tmp.`; }

/**
 * What is at DIRFD/NAME (WHERE in messages): null if nothing, else its
 * marker. Anything that is not our own image directory is refused.
 */
export function existingImage(dirFd: number, name: string, where: string): Marker | null {
  let st: Stats;
  try { st = lstatSync(at(dirFd, name)); } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ChError(`${where}: ${why(err)}`, EXIT_FAIL);
  }
  const notOurs = (reason: string) => new ChError(`${where}: exists and is not an image made by your ch-pull or ch-tar2dir `
    + `(${reason}); not replacing it`, EXIT_FAIL);
  if (!st.isDirectory()) throw notOurs('not a directory');
  const fds: number[] = [];
  try {
    fds.push(openDirAt(dirFd, name));
    const bad = untrusted(fstatSync(fds[0]), where);
    if (bad) throw notOurs(bad);
    try { fds.push(openDirAt(fds[0], 'ch')); } catch { throw notOurs('no marker'); }
    const bad2 = untrusted(fstatSync(fds[1]), `${where}/ch`);
    if (bad2) throw notOurs(bad2);
    for (const m of [MARKER, TAR2DIR_MARKER]) {
      let mfd: number;
      try { mfd = openSync(at(fds[1], m.split('/')[1]), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK); } catch { continue; }
      fds.push(mfd);
      const mst = fstatSync(mfd);
      const bad3 = untrusted(mst, `${where}/${m}`) ?? (mst.isFile() && mst.size < 1 << 20 ? null : `${where}/${m}: not a marker file`);
      if (bad3) throw notOurs(bad3);
      let j: Marker;
      try { j = JSON.parse(readFileSync(mfd, 'utf8')); } catch { throw notOurs(`${where}/${m}: unreadable marker`); }
      if (j?.tool !== PROG && j?.tool !== 'ch-tar2dir') throw notOurs(`${where}/${m}: not a marker of ours`);
      return j;
    }
    throw notOurs('no marker');
  } catch (err) {
    if (err instanceof ChError) throw err;
    throw new ChError(`${where}: ${why(err)}`, EXIT_FAIL);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** A new directory (0700) with an unpredictable name in DIRFD: its name and fd. */
export function makeTemp(dirFd: number, dir: string, name: string): { tmpName: string; tmpFd: number } {
  return makeTempDir(dirFd, dir, tmpPrefix(name));
}

/** Mount points ch-run needs, and the files under /ch, created inside ROOT through the confined writer. */
export function finishImage(root: string, files: { path: string; content: string }[]): void {
  const ops: FixupOp[] = imageDirs().map((d) => ({ op: 'dir', path: d }));
  for (const f of MOUNT_FILES) ops.push({ op: 'file', path: f });
  for (const f of files) ops.push({ op: 'write', path: f.path, content: f.content });
  for (const f of tarAddon().fixup(root, ops, { openat2: process.env.CH_TAR2DIR_OPENAT2 !== '0' })) {
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

/** Make DIR/NAME per the steps above: 'current' if it already was, 'installed' if made now. */
export async function install(log: Log, req: InstallRequest, signal?: AbortSignal): Promise<'current' | 'installed'> {
  const { dirFd, dir, name } = req;
  const target = join(dir, name);
  try { accessSync(`/proc/self/fd/${dirFd}/.`, C.W_OK | C.X_OK); } catch (err) {
    throw new ChError(`${dir}: can't create the image in it: not writable by you: ${why(err)}`, EXIT_FAIL);
  }
  const lockName = `.${name}.ch-pull.lock`;
  const lockFd = await lockOwn(dirFd, lockName, join(dir, lockName), signal,
    () => log.info(`waiting for another ${PROG} making ${target}`));
  try {
    removeStaleTemps(log, dirFd, dir, tmpPrefix(name));
    const existing = existingImage(dirFd, name, target);
    if (existing && !req.force && req.upToDate(existing)) return 'current';
    const { tmpName, tmpFd } = makeTemp(dirFd, dir, name);
    const tmpPath = join(dir, tmpName);
    let renamedAway = false, failed = true;
    try {
      await req.build(`/proc/self/fd/${tmpFd}/.`);
      if (lstatSync(at(dirFd, tmpName)).ino !== fstatSync(tmpFd).ino)
        throw new ChError(`${tmpPath}: replaced by someone else during the pull; not installing it`, EXIT_FAIL);
      const ino = fstatSync(tmpFd).ino;
      tarAddon().rename2(at(dirFd, tmpName), at(dirFd, name), existing ? 'exchange' : 'noreplace');
      renamedAway = !existing;
      const now = lstatSync(at(dirFd, name));
      if (now.ino !== ino || now.uid !== myUid())
        throw new ChError(`${target}: replaced by someone else while being installed; don't use it`, EXIT_FAIL);
      failed = false;
    } finally {
      closeSync(tmpFd);
      if (!renamedAway) {
        // The failed build, or our old image swapped out by the exchange.
        try { removeOwned(dirFd, tmpName, tmpPath); } catch (err) {
          if (!failed) throw err;
          log.warn((err as Error).message);
        }
      }
    }
    return 'installed';
  } finally {
    unlock(dirFd, lockName, lockFd);
  }
}
