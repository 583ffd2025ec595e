// Installing an image directory DIR/NAME in a directory other users may write
// (/var/tmp, a project directory), for ch-tar2dir and ch-pull alike, and for
// ch-convert's outputs (underInstallLock and stageAndRename: steps 1, 2, 4
// and 5, with its own names; its directory outputs checked as step 3 says)
// and ch-image's. The rules
// live here, once (docs/design.md, "Shared directories are hostile"):
//   1. flock DIR/.NAME.TOOL.lock, a regular file of ours with one link,
//      writable by no one else; another user's file, a link or a FIFO there
//      is refused at once, never waited on; our own holder is waited on for a
//      bounded time. The holder unlinks the file before releasing it, so a
//      waiter that wakes on an unlinked file locks afresh;
//   2. under the lock, remove our own temporaries of NAME left by runs that
//      died (removeStaleTemps: never another user's, never through a link);
//   3. look at DIR/NAME: reused (if up to date) or replaced only if it is our
//      own directory, writable by no one else, whose /ch and marker file are
//      ours too and whose marker was written by one of our image tools
//      (IMAGE_KIND: any of them, whichever installs now) for this very
//      directory (it names the root's inode);
//   4. build the new image in DIR/PREFIX.RANDOM (mode 0700), reached only
//      through its descriptor, never by its path in DIR;
//   5. rename it into place (RENAME_NOREPLACE, or RENAME_EXCHANGE with our old
//      image, which is then removed) and check that DIR/NAME is then the very
//      inode we built, still ours.
// DIR/NAME thus only ever holds a complete image, whatever kills the run.
//
// Image content never carries trusted state: a marker (ch/.ch-*) is written
// by the tool, never taken from a tarball, layer, SquashFS or builder export.
// Every tool that makes an image directory from content removes the content's
// ch/.ch-* entries (stripToolState) before it writes its own marker, and the
// marker names the inode of the root it was written in, so a marker that
// came along in a copy (cp -a, rsync, a conversion) names another directory
// and is refused, even if the content was not stripped.

import { accessSync, closeSync, constants as C, fstatSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { ChError, why, type Log } from '../util/log.js';
import { at, makeTempDir, myUid, openDirAt, removeOwned, removeStaleTemps, untrusted } from '../util/owned-fs.js';
import { flockPath, rename2 } from '../util/native-fs.js';

const EXIT_FAIL = 1;

/** What a command accepts as an image of the caller's own, and how it says it refuses one. */
export interface ImageKind {
  /** Marker files, relative to the image root (ch/...), tried in order. */
  markers: string[];
  /** Values of a marker's "tool" field that make the image ours. */
  tools: string[];
  /**
   * The refusal of WHERE for REASON (which may start with "WHERE: " or a
   * path below it), each tool's words: e.g. "WHERE: exists and was not made
   * by ch-tar2dir of yours (REASON); not using or replacing it".
   */
  refusal: (where: string, reason: string) => string;
}

/**
 * The one marker every tool that installs an image writes (ch-tar2dir,
 * ch-pull, ch-convert's directory output, ch-image), relative to the image
 * root: {"tool": ..., tool's own fields, "root": {"ino": ...}}.
 */
export const IMAGE_MARKER = 'ch/.ch-image.json';
/** Each tool's marker before there was one for all: still read, so images earlier versions installed are recognized. */
export const OLD_MARKERS = ['ch/.ch-tar2dir.json', 'ch/.ch-pull.json'];
/** The tools whose markers make an image the caller's own: any of them may replace an image another made. */
export const IMAGE_TOOLS = ['ch-tar2dir', 'ch-pull', 'ch-convert', 'ch-image'];

/**
 * The one rule (docs/design.md, "One marker, one rule"): an existing DIR/NAME
 * is reused or replaced only if it is an image the caller made with one of
 * IMAGE_TOOLS; a directory with no marker (not made by a tool) never is.
 * Each tool reuses only its own kind of image (its upToDate checks the tool).
 */
export const IMAGE_KIND: ImageKind = {
  markers: [IMAGE_MARKER, ...OLD_MARKERS],
  tools: IMAGE_TOOLS,
  refusal: (where, reason) => `${where}: exists and was not made by ${IMAGE_TOOLS_TEXT} of yours (${bareReason(where, reason)}); `
    + 'not using or replacing it',
};

/** "ch-tar2dir, ch-pull, ch-convert or ch-image", for messages. */
export const IMAGE_TOOLS_TEXT = `${IMAGE_TOOLS.slice(0, -1).join(', ')} or ${IMAGE_TOOLS.at(-1)}`;

/** REASON without "WHERE: " again when it is about WHERE itself. */
export function bareReason(where: string, reason: string): string {
  return reason.startsWith(`${where}: `) ? reason.slice(where.length + 2) : reason;
}

/** A marker's content; each tool adds its own fields. */
export interface Marker {
  tool: string;
  /** Set by existingImage() when the marker can't vouch for the content it sits in: why. Such an image is replaced, never reused. */
  unverified?: string;
  [field: string]: unknown;
}

/** Names in an image's /ch that only our tools write: never taken from content. */
export const TOOL_STATE_PREFIX = '.ch-';

/**
 * A marker's text: TOOL, FIELDS, and the inode of ROOT (the image root it is
 * written in, which keeps its inode when renamed into place), which
 * existingImage() checks.
 */
export function markerText(tool: string, fields: object, root: string): string {
  return JSON.stringify({ tool, ...fields, root: { ino: lstatSync(root).ino } }, null, 1) + '\n';
}

/**
 * Remove every /ch/.ch-* entry of the image at ROOT (files, links, trees):
 * they came with the content, and only our tools write such names. A /ch
 * that is not a directory is left as it is (writing the marker then fails).
 * Returns the names removed.
 */
export function stripToolState(root: string): string[] {
  const removed: string[] = [];
  let rootFd: number, chFd: number;
  try { rootFd = openSync(root, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW); } catch (err) {
    throw new ChError(`${root}: ${why(err)}`, EXIT_FAIL);
  }
  try {
    try { chFd = openDirAt(rootFd, 'ch'); } catch { return removed; }   // none, or not a directory
    try {
      for (const e of readdirSync(`/proc/self/fd/${chFd}`)) {
        if (!e.startsWith(TOOL_STATE_PREFIX)) continue;
        removeOwned(chFd, e, `/ch/${e}`);
        removed.push(`/ch/${e}`);
      }
    } finally {
      closeSync(chFd);
    }
  } finally {
    closeSync(rootFd);
  }
  return removed;
}

/**
 * What is at DIRFD/NAME (WHERE in messages): null if nothing, else its marker.
 * Anything this user's tools of KIND can't have made is refused (ChError):
 * not a real directory, not the caller's, writable by others, or without a
 * /ch and marker file that are the caller's alone. Both what was looked at
 * and what was opened are checked, as the entry can be swapped in between.
 */
export function existingImage(kind: ImageKind, dirFd: number, name: string, where: string): Marker | null {
  let st: Stats;
  try { st = lstatSync(at(dirFd, name)); } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ChError(`${where}: ${why(err)}`, EXIT_FAIL);
  }
  const notOurs = (reason: string) => new ChError(kind.refusal(where, reason), EXIT_FAIL);
  const noMarker = `no marker /${kind.markers[0]}`;
  if (!st.isDirectory()) throw notOurs('not a directory');
  const bad = untrusted(st, where);
  if (bad) throw notOurs(bad);
  const fds: number[] = [];
  try {
    fds.push(openDirAt(dirFd, name));
    const bad2 = untrusted(fstatSync(fds[0]), where);
    if (bad2) throw notOurs(bad2);
    let chSt: Stats;
    try { chSt = lstatSync(at(fds[0], 'ch')); } catch { throw notOurs(noMarker); }
    if (!chSt.isDirectory()) throw notOurs(`${where}/ch: not a directory`);
    try { fds.push(openDirAt(fds[0], 'ch')); } catch { throw notOurs(noMarker); }
    const bad3 = untrusted(fstatSync(fds[1]), `${where}/ch`);
    if (bad3) throw notOurs(bad3);
    for (const m of kind.markers) {
      let mfd: number;
      try { mfd = openSync(at(fds[1], m.split('/')[1]), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK); } catch { continue; }
      fds.push(mfd);
      const mst = fstatSync(mfd);
      const bad4 = (mst.isFile() && mst.size < 1 << 20 ? null : `${where}/${m}: not a marker file`) ?? untrusted(mst, `${where}/${m}`);
      if (bad4) throw notOurs(bad4);
      let j: Marker;
      try { j = JSON.parse(readFileSync(mfd, 'utf8')); } catch { throw notOurs(`${where}/${m}: unreadable marker`); }
      if (!kind.tools.includes(j?.tool)) throw notOurs(`${where}/${m}: not a marker of ${kind.tools.join(' or ')}`);
      // Written for this very root, not copied along with a tree (or made
      // by a version that did not say which root it was written for)? If
      // not, the directory is still the caller's alone, so it may be
      // replaced, but the marker can't vouch for its content: never reused.
      const ino = (j as { root?: { ino?: unknown } }).root?.ino;
      delete j.unverified;
      if (ino !== fstatSync(fds[0]).ino)
        j.unverified = ino === undefined ? `${where}/${m}: names no image root (made before markers did, or image content)`
          : `${where}/${m}: written for another directory (inode ${String(ino)}), not this one (a copy, or image content)`;
      return j;
    }
    throw notOurs(noMarker);
  } catch (err) {
    if (err instanceof ChError) throw err;
    throw new ChError(`${where}: ${why(err)}`, EXIT_FAIL);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

export interface LockOptions {
  /** Who holds the lock when it is busy, for messages ("another ch-tar2dir of yours"). */
  holder: string;
  /** How long to wait for another run of ours holding the lock, and the variable that sets it. */
  timeoutMs: number;
  timeoutVar: string;
  signal?: AbortSignal;
  /** Called once when the lock is busy and we start to wait. */
  onWait?: () => void;
}

/**
 * How long to wait for a lock another run of ours holds, in ms: $VARIABLE
 * seconds (fractions allowed), DEFAULTS if unset or empty; anything else is
 * a usage error (2). Each tool has its variable (CH_TAR2DIR_LOCK_TIMEOUT, ...).
 */
export function lockWaitMs(variable: string, defaultS: number, env: NodeJS.ProcessEnv = process.env): number {
  const s = env[variable];
  if (s === undefined || s === '') return defaultS * 1000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s)) throw new ChError(`${variable}: want seconds, got '${s}'`, 2);
  return Math.round(Number(s) * 1000);
}

/** Why ST (the lock file at WHERE) is no lock of ours to use or wait on; null if it is. */
function badLock(st: Stats, where: string): string | null {
  if (st.uid !== myUid()) return untrusted(st, where);
  if (!st.isFile()) return `${where}: lock file is not a regular file`;
  return untrusted(st, where);   // writable by others, or hardlinked
}

/**
 * An flock on DIRFD/NAME (WHERE in messages) that still names the file
 * locked, on a lock file that is ours alone: refused at once if not (a link,
 * FIFO, hardlink or another user's file), waited on for at most
 * OPTS.timeoutMs if another run of ours holds it. Returns its fd.
 */
export async function lockOwn(dirFd: number, name: string, where: string, opts: LockOptions): Promise<number> {
  const deadline = Date.now() + opts.timeoutMs;
  const refuse = (bad: string) => new ChError(`${bad}; refusing to use or wait on it as a lock (remove it if it is yours)`, EXIT_FAIL);
  let nap = 20;
  let said = false;
  for (;;) {
    if (opts.signal?.aborted) throw new ChError('interrupted', EXIT_FAIL);
    try {
      const bad = badLock(lstatSync(at(dirFd, name)), where);
      if (bad) throw refuse(bad);
    } catch (err) {
      if (err instanceof ChError) throw err;   // else ENOENT: created by the lock below
    }
    let fd: number;
    try {
      fd = await flockPath(at(dirFd, name), false);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EWOULDBLOCK' && code !== 'EAGAIN')
        throw new ChError(`${where}: can't lock: ${(err as { why?: string }).why ?? why(err)} (${code})`, EXIT_FAIL);
      if (Date.now() > deadline)
        throw new ChError(`${where}: ${opts.holder} has held this lock for over ${opts.timeoutMs / 1000} s; `
          + `giving up (${opts.timeoutVar} sets the wait, in seconds)`, EXIT_FAIL);
      if (!said) { opts.onWait?.(); said = true; }
      await new Promise((res) => setTimeout(res, nap));
      nap = Math.min(nap * 2, 500);
      continue;
    }
    try {
      const st = fstatSync(fd);
      const bad = badLock(st, where);   // what we opened, not what we looked at
      if (bad) throw refuse(bad);
      if (lstatSync(at(dirFd, name)).ino === st.ino) return fd;
    } catch (err) {
      if (err instanceof ChError) { closeSync(fd); throw err; }
      /* unlinked by the holder we waited for: lock afresh */
    }
    closeSync(fd);
  }
}

/** Release a lock of lockOwn(), unlinking its file first so no lock file stays behind. */
export function unlock(dirFd: number, name: string, fd: number): void {
  try { unlinkSync(at(dirFd, name)); } catch { /* a stale one already gone */ }
  closeSync(fd);
}

export interface InstallRequest {
  kind: ImageKind;
  /** The tool installing: names its lock file DIR/.NAME.TOOL.lock. */
  tool: string;
  lock: LockOptions;
  dirFd: number;
  dir: string;
  name: string;
  /** Names of this tool's temporaries of NAME in DIR start with this. */
  tmpPrefix: string;
  /** What the tool does in DIR, for the not-writable error ("unpack into it"). */
  purpose: string;
  /** Reuse an existing image of ours with this marker, unless force. */
  upToDate: (m: Marker) => boolean;
  force: boolean;
  /**
   * Fill TMP (an empty directory of ours, named through our descriptor) with
   * the image, marker last. Returns the name of the directory inside TMP that
   * is the image root, or undefined if TMP itself is.
   */
  build: (tmp: string) => Promise<string | undefined>;
}

/** Make DIR/NAME per the steps above: 'current' if it already was, 'installed' if made now. */
export async function installImage(log: Log, req: InstallRequest): Promise<'current' | 'installed'> {
  const { dirFd, dir, name } = req;
  const target = join(dir, name);
  try { accessSync(`/proc/self/fd/${dirFd}/.`, C.W_OK | C.X_OK); } catch (err) {
    throw new ChError(`${dir}: can't ${req.purpose}: not writable by you: ${why(err)}`, EXIT_FAIL);
  }
  return underInstallLock(log, req, req.tool, req.lock, async () => {
    const existing = existingImage(req.kind, dirFd, name, target);
    if (existing?.unverified) log.info(`${existing.unverified}: replacing the image, not reusing it`);
    else if (existing && !req.force && req.upToDate(existing)) return 'current';
    await stageAndRename(log, req, async (tmp) => ({ sub: await req.build(tmp), how: existing ? 'exchange' : 'noreplace' }));
    return 'installed';
  });
}

/** Where an install happens: NAME in DIR (held open as DIRFD), staged in DIR/TMPPREFIX.RANDOM. */
export interface InstallSite {
  dirFd: number;
  dir: string;
  name: string;
  tmpPrefix: string;
}

/**
 * Steps 1 and 2: WORK run holding DIR/.NAME.TOOL.lock (LOCK: how long to
 * wait, what to say), after removing our own temporaries of NAME that runs
 * which died left (EXACT: only names makeTempDir() gives, PREFIX + random).
 */
export async function underInstallLock<T>(log: Log, site: InstallSite, tool: string, lock: LockOptions,
  work: () => Promise<T>, exact = false): Promise<T> {
  const { dirFd, dir, name } = site;
  const lockName = `.${name}.${tool}.lock`;
  const lockFd = await lockOwn(dirFd, lockName, join(dir, lockName), lock);
  try {
    removeStaleTemps(log, dirFd, dir, site.tmpPrefix, exact);
    return await work();
  } finally {
    unlock(dirFd, lockName, lockFd);
  }
}

/**
 * How the new entry takes DIR/NAME: 'noreplace' (nothing may be there),
 * 'exchange' (RENAME_EXCHANGE with a directory of ours, which then goes with
 * the temporary), 'replace' (rename(2) over a file of ours).
 */
export type Placement = 'noreplace' | 'exchange' | 'replace';

/** What a build put in the temporary: the entry to rename into place (undefined: the temporary itself), and how. */
export interface Built { sub: string | undefined; how: Placement }

export interface StageOptions {
  /** A failure to make the temporary, in the tool's words. */
  cantStage?: (err: unknown) => Error;
  /** An entry left in the temporary that can't be removed after a success is only warned about (default: the run fails). */
  warnLeftovers?: boolean;
  /**
   * The built entry may belong to someone else (unsquashfs run as root gives
   * the image root its owner in the SquashFS file): DIR/NAME is then checked
   * to have the owner it was built with, not to be the caller's.
   */
  ownerFromContent?: boolean;
}

/**
 * Steps 4 and 5, under the lock: BUILD fills TMP (an empty 0700 directory
 * of ours, DIR/PREFIX.RANDOM, given as a path through our descriptor and as
 * its path in DIR, for tools we run) and says what takes DIR/NAME and how;
 * it is renamed into place and checked to be, at DIR/NAME, the very inode
 * built and still ours (or still its builder's: OPTS.ownerFromContent). The
 * temporary, with what an exchange put there, is then removed.
 */
export async function stageAndRename(log: Log, site: InstallSite, build: (tmp: string, tmpPath: string) => Promise<Built>,
  opts: StageOptions = {}): Promise<void> {
  const { dirFd, dir, name } = site;
  const target = join(dir, name);
  let made: { tmpName: string; tmpFd: number };
  try { made = makeTempDir(dirFd, dir, site.tmpPrefix); } catch (err) {
    throw opts.cantStage ? opts.cantStage(err) : err;
  }
  const { tmpName, tmpFd } = made;
  const tmpPath = join(dir, tmpName);
  const inTmp = `/proc/self/fd/${tmpFd}`;
  let renamedAway = false;   // the temporary itself became DIR/NAME
  let failed = true;
  try {
    const { sub, how } = await build(`${inTmp}/.`, tmpPath);
    // The root moves to DIR/NAME straight out of our directory if it is inside
    // it; else it is our directory itself, named in DIR, so check first that
    // the name still leads to it.
    let from: string, built: Stats;
    if (sub !== undefined) {
      from = `${inTmp}/${sub}`;
      built = lstatSync(from);
    } else {
      from = at(dirFd, tmpName);
      built = fstatSync(tmpFd);
      if (lstatSync(from).ino !== built.ino)
        throw new ChError(`${tmpPath}: replaced by someone else while the image was made; not installing it`, EXIT_FAIL);
    }
    if (how === 'replace') renameSync(from, at(dirFd, name));
    else rename2(from, at(dirFd, name), how);
    renamedAway = sub === undefined && how !== 'exchange';
    const now = lstatSync(at(dirFd, name));
    if (now.ino !== built.ino || now.uid !== (opts.ownerFromContent ? built.uid : myUid()))
      throw new ChError(`${target}: replaced by someone else while being installed; don't use it`, EXIT_FAIL);
    failed = false;
  } catch (err) {
    if (err instanceof ChError) throw err;
    const e = err as { message: string; why?: string; code?: string };
    throw new ChError(`${target}: ${e.message}${e.why && !e.message.includes('(E') ? `: ${e.why} (${e.code})` : ''}`, EXIT_FAIL);
  } finally {
    // What is left is ours: the failed build, or the old image swapped out by
    // the exchange. An entry we can't remove makes a successful run fail
    // (unless WARNLEFTOVERS); after a failure it is said.
    closeSync(tmpFd);
    if (!renamedAway) {
      try { removeOwned(dirFd, tmpName, tmpPath); } catch (err) {
        if (!failed && !opts.warnLeftovers) throw err;
        log.warn((err as Error).message);
      }
    }
  }
}
