// ch-tar2dir TARBALL DIR: unpack an image tarball to DIR/NAME, safely,
// atomically and once even when many tasks ask at the same time.
//
//   1. take an flock on DIR/.NAME.ch-tar2dir.lock (waits for concurrent runs);
//   2. remove stale temporaries of NAME (their owners died: we hold the lock);
//   3. if DIR/NAME is our image of this very tarball (marker file), reuse it;
//   4. extract natively into DIR/.NAME.ch-tmp.PID (mode 0700), move a single
//      top-level directory's contents up, create the standard mount points,
//      write the marker;
//   5. rename into place: renameat2(RENAME_NOREPLACE), or RENAME_EXCHANGE with
//      an older image of ours, which is then deleted.
// DIR/NAME therefore only ever holds a complete image, whatever kills us.

import { accessSync, chmodSync, closeSync, constants as fsConstants, fstatSync, lstatSync, openSync, readFileSync, realpathSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { basename, join } from 'node:path';
import { constants as osConstants } from 'node:os';
import { ChError, Log, runMain, why } from '../util/log.js';
import { formatHelp, type OptionSpec, parseArgs, VERBOSITY_AND_INFO_OPTIONS } from '../util/argp.js';
import { Progress } from '../util/progress.js';
import { extract } from '../tar/extract.js';
import { tarAddon, type FixupOp } from '../tar/native.js';
import { splitTarName, TAR_EXTS } from './names.js';
import { imageDirs, MOUNT_FILES } from './layout.js';
import { at, makeTempDir, myUid, openDir, openDirAt, removeOwned, removeStaleTemps, untrusted } from '../util/owned-fs.js';

const PROG = 'ch-tar2dir';
const EXIT_FAIL = 1;
const EXIT_USAGE = 2;
/** Marker of an image made by ch-tar2dir, relative to the image root. */
export const MARKER = 'ch/.ch-tar2dir.json';

const SPECS: OptionSpec[] = [
  { name: 'force', arg: 'none', help: 're-extract even if DIR/NAME is already this tarball\'s image' },
  ...VERBOSITY_AND_INFO_OPTIONS,
];

function help(): string {
  return `Usage: ${PROG} [OPTION...] TARBALL DIR

Unpack image tarball TARBALL into directory DIR/NAME, NAME being TARBALL's
base name less its extension (${TAR_EXTS.join(' ')}; the extension may be
omitted). Compression (gzip, xz, zstd, none) is detected from the content.

Hostile or broken archives are refused and nothing is written outside
DIR/NAME: '..' or absolute names, writes through symlinks leading outside,
hardlinks to outside files, NUL or over-long names, truncated or corrupt data.
Device nodes and fifos are skipped and counted. A single top-level directory
is unwrapped. The image appears at DIR/NAME only once complete.

DIR may be shared with other users (/var/tmp, a project directory): nothing
there is trusted unless it is yours. An existing DIR/NAME is reused (if made
from this same tarball, unless --force) or replaced only if it is a directory
you own that no one else can write, with a marker /${MARKER} that is
yours too; anything else is refused, naming its owner. Links are never
followed in DIR, and only your own entries are ever removed. Concurrent runs
for the same DIR/NAME wait for each other (lock file
DIR/.NAME.ch-tar2dir.lock, present only while a run holds it); a lock file of
another user is refused, never waited on.

Environment: CH_TAR2DIR_OPENAT2=0 uses the openat(2) walk of old kernels
(symlinks in parent paths refused) instead of openat2(2);
CH_TAR2DIR_LOCK_TIMEOUT=S waits at most S seconds for another run of yours
holding the lock (default ${LOCK_TIMEOUT_DEFAULT_S}).

${formatHelp(SPECS)}

Exit status:
  0  image unpacked, or already up to date
  1  failure: unreadable, hostile, broken or empty tarball; DIR/NAME, its marker
     or the lock file not yours; lock wait timed out; I/O error
  2  usage error
  128+N  interrupted by signal N (SIGINT, SIGTERM, SIGHUP) during extraction;
     the temporary is removed (after SIGKILL, the next run removes it)
`;
}

interface Identity { path: string; size: number; mtimeMs: number; ino: number; dev: number }

function identity(path: string, st: Stats): Identity {
  return { path: realpathSync(path), size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, dev: st.dev };
}

/** Find the tarball: ARG itself, or ARG plus a known extension. */
export function findTarball(arg: string): { path: string; name: string; st: Stats } {
  const tryStat = (p: string) => { try { return statSync(p); } catch { return null; } };
  let st = tryStat(arg);
  if (st) {
    if (!st.isFile()) throw new ChError(`${arg}: not a regular file`, EXIT_FAIL);
    // Compression is detected from the content: a name without a known
    // extension is the image's name as it is.
    const name = splitTarName(basename(arg))?.[0] ?? basename(arg);
    checkName(name, arg);
    return { path: arg, name, st };
  }
  for (const ext of TAR_EXTS) {
    st = tryStat(arg + ext);
    if (st?.isFile()) {
      checkName(basename(arg), arg + ext);
      return { path: arg + ext, name: basename(arg), st };
    }
  }
  throw new ChError(`${arg}: can't find tarball (tried extensions ${TAR_EXTS.join(' ')}): No such file or directory (ENOENT)`, EXIT_FAIL);
}

function checkName(name: string, tarball: string): void {
  if (name === '' || name === '.' || name === '..' || name.startsWith('.'))
    throw new ChError(`${tarball}: gives image name '${name}', which can't be used (empty, '.', '..' or hidden); rename the tarball`, EXIT_FAIL);
}

function same(a: Identity | undefined, b: Identity): boolean {
  return !!a && a.path === b.path && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino && a.dev === b.dev;
}

/** The mount points ch-run binds onto, and the marker, created safely inside ROOT. */
function fixups(src: Identity, stats: object): FixupOp[] {
  const ops: FixupOp[] = imageDirs().map((d) => ({ op: 'dir', path: d }));
  for (const f of MOUNT_FILES) ops.push({ op: 'file', path: f });
  ops.push({ op: 'write', path: MARKER,
    content: JSON.stringify({ tool: PROG, source: src, created: new Date().toISOString(), stats }, null, 1) + '\n' });
  return ops;
}

/** Seconds to wait for another run of ours holding the lock (CH_TAR2DIR_LOCK_TIMEOUT). */
export const LOCK_TIMEOUT_DEFAULT_S = 600;
function lockTimeoutMs(): number {
  const s = process.env.CH_TAR2DIR_LOCK_TIMEOUT;
  if (s === undefined || s === '') return LOCK_TIMEOUT_DEFAULT_S * 1000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s)) throw new ChError(`CH_TAR2DIR_LOCK_TIMEOUT: want seconds, got '${s}'`, EXIT_USAGE);
  return Math.round(Number(s) * 1000);
}

/**
 * What is at DIR/NAME now: null if nothing; else its marker's recorded source.
 * Refuses (ChError) anything this user's ch-tar2dir can't have made: not a
 * real directory, not owned by the caller, writable by others, or without a
 * marker that is itself the caller's and no one else's to write.
 */
function existingImage(dirFd: number, name: string, where: string): { source?: Identity } | null {
  let st: Stats;
  try {
    st = lstatSync(at(dirFd, name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ChError(`${where}: ${why(err)}`, EXIT_FAIL);
  }
  const notOurs = (reason: string) =>
    new ChError(`${where}: exists and was not made by ${PROG} of yours `
      + `(${reason.startsWith(`${where}: `) ? reason.slice(where.length + 2) : reason}); not using or replacing it`, EXIT_FAIL);
  if (!st.isDirectory()) throw notOurs('not a directory');
  const bad = untrusted(st, where);
  if (bad) throw notOurs(bad);
  const fds: number[] = [];
  try {
    fds.push(openDirAt(dirFd, name));
    const bad2 = untrusted(fstatSync(fds[0]), where);   // what we opened, not what we looked at
    if (bad2) throw notOurs(bad2);
    const [chDir, file] = MARKER.split('/');
    let chSt: Stats;
    try { chSt = lstatSync(at(fds[0], chDir)); } catch { throw notOurs(`no marker /${MARKER}`); }
    if (!chSt.isDirectory()) throw notOurs(`${where}/${chDir}: not a directory`);
    fds.push(openDirAt(fds[0], chDir));
    const bad3 = untrusted(fstatSync(fds[1]), `${where}/${chDir}`);
    if (bad3) throw notOurs(bad3);
    let mfd: number;
    try {
      mfd = openSync(at(fds[1], file), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    } catch { throw notOurs(`no marker /${MARKER}`); }
    fds.push(mfd);
    const mst = fstatSync(mfd);
    if (!mst.isFile() || mst.size > 1 << 20) throw notOurs(`${where}/${MARKER}: not a marker file`);
    const bad4 = untrusted(mst, `${where}/${MARKER}`);
    if (bad4) throw notOurs(bad4);
    let m;
    try { m = JSON.parse(readFileSync(mfd, 'utf8')); } catch { throw notOurs(`${where}/${MARKER}: unreadable marker`); }
    if (m?.tool !== PROG) throw notOurs(`${where}/${MARKER}: not ${PROG}'s marker`);
    return { source: m.source };
  } catch (err) {
    if (err instanceof ChError) throw err;
    throw new ChError(`${where}: ${why(err)}`, EXIT_FAIL);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

export async function tar2dir(argv: string[], log: Log): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(PROG, SPECS, argv);
  } catch (err) {
    if (err instanceof ChError) throw new ChError(err.message, EXIT_USAGE);
    throw err;
  }
  let force = false;
  for (const o of parsed.options) {
    switch (o.name) {
      case 'help': process.stdout.write(help()); return 0;
      case 'version': { const { version } = await import('../util/version.js'); process.stdout.write(version() + '\n'); return 0; }
      case 'quiet': log.verbosity = -1; break;
      case 'verbose': log.verbosity++; break;
      case 'force': force = true; break;
    }
  }
  const pos = [...parsed.positional, ...(parsed.rest ?? [])];
  if (pos.length !== 2)
    throw new ChError(`expected TARBALL and DIR, got ${pos.length} argument(s)\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
  const [tarArg, dir] = pos;
  const timeoutMs = lockTimeoutMs();

  const tb = findTarball(tarArg);
  let dirFd: number;
  try {
    dirFd = openDir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ChError(code === 'ENOTDIR' ? `${dir}: not a directory (ENOTDIR)` : `${dir}: can't use as destination: ${why(err)}`, EXIT_FAIL);
  }
  try {
    try { accessSync(dir, fsConstants.W_OK | fsConstants.X_OK); } catch (err) {
      throw new ChError(`${dir}: can't unpack into it: not writable by you: ${why(err)}`, EXIT_FAIL);
    }
    return await unpackIn(dirFd);
  } finally {
    closeSync(dirFd);
  }

  async function unpackIn(dirFd: number): Promise<number> {
  const name = tb.name;
  const target = join(dir, name);
  const src = identity(tb.path, tb.st);
  const addon = tarAddon();

  // 1. Lock, so concurrent runs for DIR/NAME (srun's tasks on one node) wait
  // and then reuse the first one's image. The lock file exists only while a
  // run holds it: the holder unlinks it before releasing, so nothing is left
  // in DIR; a waiter that then wakes on the unlinked file sees that the path
  // no longer names what it locked, and locks afresh. A SIGKILLed holder
  // leaves the file, released by the kernel, and the next run removes it.
  // A lock file of another user is never waited on; our own is waited on for
  // a bounded time.
  const lockName = `.${name}.ch-tar2dir.lock`;
  const lockFd = await lockFresh(addon, dirFd, lockName, join(dir, lockName), name, dir, timeoutMs);
  try {
    return await unpackLocked();
  } finally {
    try { unlinkSync(at(dirFd, lockName)); } catch { /* a stale one already gone */ }
    closeSync(lockFd);
  }

  async function unpackLocked(): Promise<number> {
  // 2. Stale temporaries: under the lock, any of ours left are from runs that died.
  removeStaleTemps(log, dirFd, dir, `.${name}.ch-tmp.`);

  // 3. What is at DIR/NAME now? Only an image our ch-tar2dir made is reused or replaced.
  const existing = existingImage(dirFd, name, target);
  if (existing && !force && same(existing.source, src)) {
    if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${target}: already unpacked from ${tb.path}, up to date\n`);
    return 0;
  }

  // 4. Extract beside the target, into a directory only we can enter; every
  // later step names it through our descriptor, never by its path in DIR.
  const { tmpName, tmpFd } = makeTempDir(dirFd, dir, `.${name}.ch-tmp.`);
  const tmpPath = join(dir, tmpName);
  const inTmp = `/proc/self/fd/${tmpFd}`;
  let renamedAway = false;   // the temporary itself became DIR/NAME
  let failed = true;
  try {
    const r = await extractTo(`${inTmp}/.`);
    if (r.entries === 0)
      throw new ChError(`${tb.path}: holds no files (an empty or all-zero archive); not an image`, EXIT_FAIL);
    log.debug(`${r.kind}; ${r.openat2 ? 'openat2(RESOLVE_BENEATH)' : 'openat(O_NOFOLLOW) walk'}; ${r.entries} entries`);
    // A single top-level directory is the image root: it moves to DIR/NAME
    // straight out of our directory.
    let top = false;
    if (r.top) {
      try { top = lstatSync(`${inTmp}/${r.top}`).isDirectory(); } catch { top = false; }
      if (top) log.info(`single top-level directory ${r.top}: it is the image root`);
    }
    const root = top ? `${inTmp}/${r.top}` : `${inTmp}/.`;
    const stats = { files: r.files, dirs: r.dirs, symlinks: r.symlinks, hardlinks: r.hardlinks, devices: r.devices, other: r.other, bytes: r.bytes };
    for (const f of addon.fixup(root, fixups(src, stats), { openat2: useOpenat2() })) {
      if (f.path === MARKER) throw new ChError(`can't write marker /${MARKER}: ${f.message}`, EXIT_FAIL);
      log.warn(`can't create mount point /${f.path}: ${f.message}`);
    }
    chmodSync(root, 0o755);
    const rootIno = lstatSync(root).ino;
    // 5. Into place. The source is inside our own directory when there was a
    // top-level directory; else it is our directory itself, by name in DIR.
    const from = top ? `${inTmp}/${r.top}` : at(dirFd, tmpName);
    if (!top && lstatSync(from).ino !== fstatSync(tmpFd).ino)
      throw new ChError(`${tmpPath}: replaced by someone else during the unpack; not installing it`, EXIT_FAIL);
    addon.rename2(from, at(dirFd, name), existing ? 'exchange' : 'noreplace');
    renamedAway = !top && !existing;
    const now = lstatSync(at(dirFd, name));
    if (now.ino !== rootIno || now.uid !== myUid())
      throw new ChError(`${target}: replaced by someone else while being installed; don't use it`, EXIT_FAIL);
    if (r.devices > 0 || r.other > 0)
      log.warn(`skipped ${r.devices} device node(s)/fifo(s)${r.other ? ` and ${r.other} entr(ies) of other types` : ''}`);
    if (log.verbosity >= 0)
      process.stderr.write(`${PROG}[${process.pid}]: ${target}: unpacked ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks, ${r.hardlinks} hardlinks (${(r.bytes / 1048576).toFixed(1)} MiB)\n`);
    failed = false;
  } catch (err) {
    if (err instanceof ChError) throw err;
    const e = err as { message: string; why?: string; code?: string };
    throw new ChError(`${target}: ${e.message}${e.why && !e.message.includes('(E') ? `: ${e.why} (${e.code})` : ''}`, EXIT_FAIL);
  } finally {
    // What is left is ours: the failed extraction, or the replaced old image
    // (exchanged into our directory or to our temporary name). An entry we
    // can't remove makes a successful run fail; after a failure it is said.
    closeSync(tmpFd);
    if (!renamedAway) {
      try {
        removeOwned(dirFd, tmpName, tmpPath);
      } catch (err) {
        if (!failed) throw err;
        log.warn((err as Error).message);
      }
    }
  }
  return 0;
  }

  async function extractTo(dest: string) {
    const bar = new Progress(`${PROG}: ${name}`, tb.st.size, log.verbosity >= 0);
    log.info(`unpacking ${tb.path} to ${target}`);
    // SIGINT/SIGTERM/SIGHUP: stop the extractor, exit 128+N (the caller removes the temporary).
    const abort = new AbortController();
    let caught: NodeJS.Signals | undefined;
    const onSignal = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(); };
    const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const sig of SIGNALS) process.on(sig, onSignal);
    try {
      const r = await extract(tb.path, dest, { openat2: useOpenat2(),
        onProgress: bar.active ? (n) => bar.update(n) : undefined, signal: abort.signal });
      if (caught) throw new ChError('interrupted', EXIT_FAIL);
      return r;
    } catch (err) {
      if (caught) throw new ChError(`${tb.path}: interrupted by ${caught}; nothing left behind`, 128 + osConstants.signals[caught]);
      throw err;
    } finally {
      bar.done();
      for (const sig of SIGNALS) process.off(sig, onSignal);
    }
  }
  }
}

function useOpenat2(): boolean { return process.env.CH_TAR2DIR_OPENAT2 !== '0'; }

/**
 * An flock on DIR/LOCKNAME that still names the file locked (see step 1),
 * on a lock file that is ours alone: a symlink, FIFO, hardlink or another
 * user's file there is refused at once, and our own is waited on for at most
 * TIMEOUTMS.
 */
async function lockFresh(addon: ReturnType<typeof tarAddon>, dirFd: number, lockName: string, where: string,
  name: string, dir: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let said = false, nap = 20;
  for (;;) {
    const ownLockOrThrow = (st: Stats) => {
      if (st.uid !== myUid() || st.isFile()) {
        const bad = untrusted(st, where);
        if (bad) throw new ChError(`${bad}; refusing to use or wait on it`, EXIT_FAIL);
      }
      if (!st.isFile()) throw new ChError(`${where}: lock file is not a regular file; refusing to use it (remove it if it is yours)`, EXIT_FAIL);
    };
    try { ownLockOrThrow(lstatSync(at(dirFd, lockName))); } catch (err) {
      if (err instanceof ChError) throw err;   // ENOENT: no lock file yet
    }
    let fd: number;
    try {
      fd = await addon.lock(at(dirFd, lockName), false);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EWOULDBLOCK' && code !== 'EAGAIN')
        throw new ChError(`${where}: can't lock: ${(err as { why?: string }).why ?? why(err)} (${code})`, EXIT_FAIL);
      if (Date.now() > deadline)
        throw new ChError(`${where}: another ${PROG} of yours has held this lock for over ${timeoutMs / 1000} s; `
          + 'giving up (CH_TAR2DIR_LOCK_TIMEOUT sets the wait, in seconds)', EXIT_FAIL);
      if (!said) { log.info(`waiting for another ${PROG} unpacking ${name} in ${dir}`); said = true; }
      await new Promise((res) => setTimeout(res, nap));
      nap = Math.min(nap * 2, 500);
      continue;
    }
    try {
      const st = fstatSync(fd);
      ownLockOrThrow(st);   // what we opened, not what we looked at
      if (lstatSync(at(dirFd, lockName)).ino === st.ino) return fd;
    } catch (err) {
      if (err instanceof ChError) { closeSync(fd); throw err; }
      /* unlinked by the holder we waited for: lock afresh */
    }
    closeSync(fd);
  }
}

const log = new Log(PROG);
void runMain(log, () => tar2dir(process.argv.slice(2), log));
