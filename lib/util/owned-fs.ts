// Working in directories other users can write (/var/tmp, /dev/shm, group
// project directories): such a directory is hostile. Anything found there may
// be a symlink, hardlink or FIFO planted by someone else, and may be swapped
// between two system calls. So:
//   - never follow a link: every entry is opened with O_NOFOLLOW, relative to
//     an open descriptor of its parent (through /proc/self/fd/N/NAME, which
//     resolves NAME in that very directory and so can't be redirected by a
//     rename of any ancestor);
//   - only ever trust, reuse or remove what the caller owns, and what no one
//     else can write;
//   - an entry that can't be removed is an error, not a warning.

import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants as C, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, rmdirSync, rmSync, unlinkSync, type Stats } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ChError, why, type Log } from './log.js';
import { userInfo } from './host-fs.js';

// (libuv opens every descriptor close-on-exec.)
const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;

/** Path of NAME inside the directory open as FD, resolved by the kernel from that descriptor. */
export function at(fd: number, name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/')) throw new Error(`bad entry name '${name}'`);
  return `/proc/self/fd/${fd}/${name}`;
}

/** "user (uid N)" for error messages. */
export function ownerName(uid: number, read: (file: string) => string = (f) => readFileSync(f, 'utf8')): string {
  try {
    for (const line of read('/etc/passwd').split('\n')) {
      const f = line.split(':');
      if (f.length > 2 && Number(f[2]) === uid && f[2] !== '') return `${f[0]} (uid ${uid})`;
    }
  } catch { /* no passwd: the number alone */ }
  return `uid ${uid}`;
}

export function myUid(): number { return process.getuid!(); }

/**
 * Why ST, found at WHERE, can't be trusted as the caller's own; null if it
 * can: owned by the caller, not writable by group or others, and (for files)
 * not hardlinked from elsewhere.
 */
export function untrusted(st: Stats, where: string): string | null {
  if (st.uid !== myUid()) return `${where}: belongs to ${ownerName(st.uid)}, not you (${userInfo().username})`;
  if (st.mode & 0o022) return `${where}: writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`;
  if (!st.isDirectory() && st.nlink > 1) return `${where}: has ${st.nlink} hard links`;
  return null;
}

/**
 * Throw unless NAME in directory fd DIRFD (WHERE in messages) is absent or a
 * plain file the caller may replace: its own, writable by no one else, with
 * one link (ch-builder2tar's tarball, ch-pull --tar's). No link followed.
 */
export function refuseForeignFile(dirFd: number, name: string, where: string): void {
  let st: Stats;
  try { st = lstatSync(at(dirFd, name)); } catch { return; }
  const bad = st.isFile() ? untrusted(st, where) : `${where}: exists and is not a regular file`;
  if (bad) throw new ChError(`${bad}; not replacing it`, 1);
}

/** Open directory NAME inside directory fd PARENT, refusing symlinks; returns its fd. */
export function openDirAt(parent: number, name: string): number {
  return openSync(at(parent, name), DIR_FLAGS);
}

/** Open DIR (a path the user gave) as a directory fd. The path itself is the user's choice. */
export function openDir(path: string): number {
  return openSync(path, C.O_RDONLY | C.O_DIRECTORY);
}

/**
 * Remove NAME (file, symlink, FIFO or whole tree) from the directory open as
 * PARENT without following any link, and only if it and everything in it
 * belong to the caller. Throws a ChError naming WHERE (the path for messages)
 * and the first entry that can't be removed; entries already removed stay so.
 */
/**
 * Remove PATH, a tree inside a directory only the caller can enter (a private
 * stage or work directory: nothing there can be swapped by anyone else), as
 * rm -rf. A user can't list or empty a directory of theirs without u+rwx (an
 * image's mode-000 directory, as unsquashfs or tar made it): those are given
 * u+rwx (find -P: no link followed) and the removal tried again.
 */
export function removePrivateTree(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
    // By its real path: find can't see our /proc/self/fd/N. One chmod per
    // directory (';', not '+'), before find descends into it, so one inside
    // another is reached too.
    spawnSync('find', ['-P', realpathSync(path), '-type', 'd', '!', '-perm', '-u+rwx', '-exec', 'chmod', 'u+rwx', '{}', ';'], { stdio: 'ignore' });
    rmSync(path, { recursive: true, force: true });
  }
}

/** Linux's O_PATH (not in Node's fs.constants): a descriptor of the entry itself, needing no permission on it. */
const O_PATH = 0o10000000;

/**
 * Give directory NAME in fd PARENT u+rwx, through an O_PATH descriptor
 * (O_NOFOLLOW: the entry itself, never a link's target), only if it is the
 * caller's own directory.
 */
function makeUsable(parent: number, name: string, where: string): void {
  const fd = openSync(at(parent, name), O_PATH | C.O_NOFOLLOW | C.O_DIRECTORY);
  try {
    const st = fstatSync(fd);
    if (st.uid !== myUid()) throw new ChError(`can't remove ${where}: belongs to ${ownerName(st.uid)}, not you; not removing it`, 1);
    chmodSync(`/proc/self/fd/${fd}`, (st.mode & 0o7777) | 0o700);
  } finally {
    closeSync(fd);
  }
}

export function removeOwned(parent: number, name: string, where: string): void {
  const path = at(parent, name);
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ChError(`can't remove ${where}: ${why(err)}`, 1);
  }
  if (st.uid !== myUid())
    throw new ChError(`can't remove ${where}: belongs to ${ownerName(st.uid)}, not you; not removing it`, 1);
  try {
    if (!st.isDirectory()) {
      unlinkSync(path);   // unlink(2) never follows the final component
      return;
    }
    // A directory of ours without u+rwx (an image's mode-000 directory, unpacked
    // as a user) can't be listed or emptied: given u+rwx first, as it is going.
    if ((st.mode & 0o700) !== 0o700) makeUsable(parent, name, where);
    const fd = openDirAt(parent, name);   // O_NOFOLLOW: a symlink swapped in is refused
    try {
      const now = fstatSync(fd);
      if (now.uid !== myUid())
        throw new ChError(`can't remove ${where}: belongs to ${ownerName(now.uid)}, not you; not removing it`, 1);
      for (const e of readdirSync(`/proc/self/fd/${fd}`)) removeOwned(fd, e, `${where}/${e}`);
    } finally {
      closeSync(fd);
    }
    rmdirSync(path);
  } catch (err) {
    if (err instanceof ChError) throw err;
    throw new ChError(`can't remove ${where}: ${why(err)}`, 1);
  }
}

/**
 * Remove the caller's entries of directory fd DIRFD (path DIR, for messages)
 * whose names start with PREFIX: temporaries of runs that died (the caller
 * holds the lock that makes them stale). Another user's entry of that pattern
 * is none of ours; our names are unpredictable, so it is not in our way.
 */
export function removeStaleTemps(log: Log, dirFd: number, dir: string, prefix: string, exact = false): void {
  for (const e of readdirSync(`/proc/self/fd/${dirFd}`)) {
    if (!e.startsWith(prefix)) continue;
    // EXACT: only names makeTempDir() gives, PREFIX + its random part, never
    // a temporary of another name that merely starts with PREFIX (DST "a" and
    // DST "a.ch-convert-x" hold different locks).
    if (exact && !TEMP_RANDOM.test(e.slice(prefix.length))) continue;
    let st: Stats;
    try { st = lstatSync(at(dirFd, e)); } catch { continue; }
    if (st.uid !== myUid()) {
      log.info(`ignoring ${join(dir, e)}: belongs to ${ownerName(st.uid)}, not you`);
      continue;
    }
    log.info(`removing stale temporary ${join(dir, e)}`);
    removeOwned(dirFd, e, join(dir, e));
  }
}

/** The random part of makeTempDir()'s names (randomBytes(6) in hex). */
const TEMP_RANDOM = /^[0-9a-f]{12}$/;

/** A new directory (mode 0700) PREFIX + random in directory fd DIRFD (path DIR): its name and fd. */
export function makeTempDir(dirFd: number, dir: string, prefix: string): { tmpName: string; tmpFd: number } {
  for (let i = 0; ; i++) {
    const tmpName = prefix + randomBytes(6).toString('hex');
    try {
      mkdirSync(at(dirFd, tmpName), { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && i < 8) continue;
      throw new ChError(`${dir}: can't create a temporary directory in it: ${why(err)}`, 1);
    }
    const tmpFd = openDirAt(dirFd, tmpName);
    const st = fstatSync(tmpFd);
    if (st.uid !== myUid()) {   // swapped between mkdir and open
      closeSync(tmpFd);
      throw new ChError(`${join(dir, tmpName)}: replaced by ${ownerName(st.uid)} while being created`, 1);
    }
    return { tmpName, tmpFd };
  }
}
