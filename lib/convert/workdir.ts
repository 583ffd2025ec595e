// ch-convert's private work directory in $TMPDIR (TMPDIR/ch-convert-XXXXXX),
// for conversions into a builder's storage, which have no stage beside DST
// (the others work inside their stage, which the next conversion to DST
// removes if a run died: staging.ts). A run holds an flock on the .lock file
// inside its directory; a directory of the user's that no run holds (its run
// was killed by SIGKILL) is removed by the next conversion, so nothing stays
// in $TMPDIR. One without a .lock (an earlier version's, which took none, or
// one whose run has yet to lock it) only once a day old. $TMPDIR is hostile (/tmp): links are never followed, only the
// user's own entries are looked into or removed (lib/util/owned-fs.ts).

import { closeSync, lstatSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { type Log } from '../util/log.js';
import { at, myUid, openDir, openDirAt, removeOwned } from '../util/owned-fs.js';
import { flockPath } from '../util/native-fs.js';

const PREFIX = 'ch-convert-';
/** mkdtemp's names: PREFIX and six characters. */
const NAME = /^ch-convert-[A-Za-z0-9]{6}$/;
const LOCK = '.lock';
/** A directory younger than this may be one whose run has not locked it yet. */
const GRACE_MS = 60_000;
/** One with no lock file is left this long: an earlier version's run may still be using it. */
const UNLOCKED_MS = 86_400_000;

/** Run USE with a new private work directory in $TMPDIR, removed after, whatever happens (but SIGKILL: then by the next run). */
export async function withWorkDir<T>(log: Log, use: (work: string) => Promise<T>): Promise<T> {
  const base = tmpBase();
  await removeStale(log, base);
  const work = mkdtempSync(join(base, PREFIX));   // 0700
  let lock: number | undefined;
  try {
    lock = await flockPath(join(work, LOCK), false);
    return await use(work);
  } finally {
    if (lock !== undefined) closeSync(lock);
    removeWork(log, base, basename(work));
  }
}

/** Remove BASE/NAME, our work directory, through a descriptor of BASE; a failure only warned about. */
function removeWork(log: Log, base: string, name: string): void {
  let fd: number;
  try { fd = openDir(base); } catch (err) { log.warn(`can't remove ${join(base, name)}: ${(err as Error).message}`); return; }
  try { removeOwned(fd, name, join(base, name)); } catch (err) { log.warn((err as Error).message); } finally { closeSync(fd); }
}

function tmpBase(): string { return process.env.TMPDIR || tmpdir(); }

/** Work directories of the user's in $TMPDIR that killed runs (of this version or earlier ones) left: removed. Never fails. */
export function removeStaleWork(log: Log): Promise<void> { return removeStale(log, tmpBase()); }

/** Work directories of the user's in BASE that no live run holds, older than GRACE_MS: removed. Never fails. */
async function removeStale(log: Log, base: string): Promise<void> {
  let fd: number;
  try { fd = openDir(base); } catch { return; }
  try {
    for (const e of readdirSync(`/proc/self/fd/${fd}`)) {
      if (!NAME.test(e)) continue;
      try {
        const st = lstatSync(at(fd, e));
        if (!st.isDirectory() || st.uid !== myUid() || Date.now() - st.mtimeMs < GRACE_MS) continue;
        if (!(await held(fd, e, Date.now() - st.mtimeMs))) {
          log.info(`removing ${join(base, e)}: left by a conversion that was killed`);
          removeOwned(fd, e, join(base, e));
        }
      } catch (err) { log.debug(`${join(base, e)}: ${(err as Error).message}`); }
    }
  } finally {
    closeSync(fd);
  }
}

/** May a live run be using DIRFD/NAME (AGE ms old)? Its .lock held, or none there yet; looked at through a descriptor of NAME (O_NOFOLLOW). */
async function held(dirFd: number, name: string, age: number): Promise<boolean> {
  const d = openDirAt(dirFd, name);
  try {
    const st = lstatSync(at(d, LOCK), { throwIfNoEntry: false });
    if (!st) return age < UNLOCKED_MS;
    if (!st.isFile() || st.uid !== myUid()) return true;   // not ours to judge: leave it
    let lock: number;
    try { lock = await flockPath(at(d, LOCK), false); } catch { return true; }   // held (EWOULDBLOCK), or can't tell: leave it
    closeSync(lock);
    return false;
  } finally {
    closeSync(d);
  }
}
