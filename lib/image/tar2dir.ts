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

import { closeSync, fstatSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmdirSync, rmSync, statSync, chmodSync, unlinkSync, type Stats } from 'node:fs';
import { basename, join } from 'node:path';
import { constants as osConstants } from 'node:os';
import { ChError, Log, runMain, why } from '../util/log.js';
import { formatHelp, type OptionSpec, parseArgs, VERBOSITY_AND_INFO_OPTIONS } from '../util/argp.js';
import { Progress } from '../util/progress.js';
import { extract } from '../tar/extract.js';
import { tarAddon, type FixupOp } from '../tar/native.js';
import { splitTarName, TAR_EXTS } from './names.js';

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
is unwrapped. The image appears at DIR/NAME only once complete. An existing
DIR/NAME is replaced only if ${PROG} made it (it keeps a marker, /${MARKER}),
and kept as it is if made from this same tarball (unless --force). Concurrent
runs for the same DIR/NAME wait for each other (lock file DIR/.NAME.ch-tar2dir.lock,
present only while a run holds it).

Environment: CH_TAR2DIR_OPENAT2=0 uses the openat(2) walk of old kernels
(symlinks in parent paths refused) instead of openat2(2).

${formatHelp(SPECS)}

Exit status:
  0  image unpacked, or already up to date
  1  failure: unreadable, hostile or broken tarball, DIR/NAME not ours, I/O error
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
    const split = splitTarName(basename(arg));
    if (!split) throw new ChError(`${arg}: unknown extension (expected one of ${TAR_EXTS.join(' ')})`, EXIT_FAIL);
    return { path: arg, name: split[0], st };
  }
  for (const ext of TAR_EXTS) {
    st = tryStat(arg + ext);
    if (st?.isFile()) return { path: arg + ext, name: basename(arg), st };
  }
  throw new ChError(`${arg}: can't find tarball (tried extensions ${TAR_EXTS.join(' ')}): No such file or directory (ENOENT)`, EXIT_FAIL);
}

function readMarker(image: string): { ok: boolean; source?: Identity } {
  try {
    const m = JSON.parse(readFileSync(join(image, MARKER), 'utf8'));
    return { ok: m?.tool === PROG, source: m?.source };
  } catch {
    return { ok: false };
  }
}

function same(a: Identity | undefined, b: Identity): boolean {
  return !!a && a.path === b.path && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino && a.dev === b.dev;
}

function removeTree(log: Log, path: string): void {
  try {
    rmSync(path, { recursive: true, force: true, maxRetries: 2 });
  } catch (err) {
    log.warn(`can't remove ${path}: ${why(err)}`);
  }
}

/** The mount points ch-run binds onto, and the marker, created safely inside ROOT. */
function fixups(src: Identity, stats: object): FixupOp[] {
  const ops: FixupOp[] = [];
  for (const d of ['dev', 'proc', 'sys', 'tmp', 'home', 'mnt', 'etc', 'ch', 'var', 'var/spool', 'var/spool/slurmd'])
    ops.push({ op: 'dir', path: d });
  for (let i = 0; i < 10; i++) ops.push({ op: 'dir', path: `mnt/${i}` });
  for (const f of ['etc/hosts', 'etc/resolv.conf', 'etc/passwd', 'etc/group'])
    ops.push({ op: 'file', path: f });
  ops.push({ op: 'write', path: MARKER,
    content: JSON.stringify({ tool: PROG, source: src, created: new Date().toISOString(), stats }, null, 1) + '\n' });
  return ops;
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

  const tb = findTarball(tarArg);
  let dst: Stats;
  try { dst = statSync(dir); } catch (err) { throw new ChError(`${dir}: can't use as destination: ${why(err)}`, EXIT_FAIL); }
  if (!dst.isDirectory()) throw new ChError(`${dir}: not a directory (ENOTDIR)`, EXIT_FAIL);
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
  const lockPath = join(dir, `.${name}.ch-tar2dir.lock`);
  const lockFd = await lockFresh(addon, lockPath, name, dir);
  try {
    return await unpackLocked();
  } finally {
    try { unlinkSync(lockPath); } catch { /* a stale one already gone */ }
    closeSync(lockFd);
  }

  async function unpackLocked(): Promise<number> {
  // 2. Stale temporaries: under the lock, any left are from runs that died.
  for (const e of readdirSync(dir)) {
    if (e.startsWith(`.${name}.ch-tmp.`) || e.startsWith(`.${name}.ch-old.`)) {
      log.info(`removing stale temporary ${join(dir, e)}`);
      removeTree(log, join(dir, e));
    }
  }

  // 3. What is at DIR/NAME now?
  let existing = false;
  try {
    const st = lstatSync(target);
    const m = st.isDirectory() ? readMarker(target) : { ok: false };
    if (!m.ok)
      throw new ChError(`${target}: exists and was not made by ${PROG}; not replacing it (remove it yourself)`, EXIT_FAIL);
    if (!force && same(m.source, src)) {
      if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${target}: already unpacked from ${tb.path}, up to date\n`);
      return 0;
    }
    existing = true;
  } catch (err) {
    if (err instanceof ChError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ChError(`${target}: ${why(err)}`, EXIT_FAIL);
  }

  // 4. Extract beside the target.
  const tmp = join(dir, `.${name}.ch-tmp.${process.pid}`);
  try { mkdirSync(tmp, { mode: 0o700 }); } catch (err) { throw new ChError(`${tmp}: can't create: ${why(err)}`, EXIT_FAIL); }
  const useOpenat2 = process.env.CH_TAR2DIR_OPENAT2 !== '0';
  const bar = new Progress(`${PROG}: ${name}`, tb.st.size, log.verbosity >= 0);
  log.info(`unpacking ${tb.path} to ${target}`);
  // SIGINT/SIGTERM/SIGHUP: stop the extractor, remove the temporary, exit 128+N.
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(); };
  const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const sig of SIGNALS) process.on(sig, onSignal);
  let r;
  try {
    r = await extract(tb.path, tmp, { openat2: useOpenat2,
      onProgress: bar.active ? (n) => bar.update(n) : undefined, signal: abort.signal });
    if (caught) throw new ChError('interrupted', EXIT_FAIL);
  } catch (err) {
    bar.done();
    removeTree(log, tmp);
    if (caught) throw new ChError(`${tb.path}: interrupted by ${caught}; nothing left behind`, 128 + osConstants.signals[caught]);
    throw err;
  } finally {
    for (const sig of SIGNALS) process.off(sig, onSignal);
  }
  bar.done();
  log.debug(`${r.kind}; ${r.openat2 ? 'openat2(RESOLVE_BENEATH)' : 'openat(O_NOFOLLOW) walk'}; ${r.entries} entries`);
  try {
    if (r.top) {
      const t = lstatSync(join(tmp, r.top));
      if (t.isDirectory()) {
        log.info(`single top-level directory ${r.top}: moving its contents up`);
        const inner = `${tmp}.top`;
        renameSync(join(tmp, r.top), inner);
        rmdirSync(tmp);
        renameSync(inner, tmp);
      }
    }
    const stats = { files: r.files, dirs: r.dirs, symlinks: r.symlinks, hardlinks: r.hardlinks, devices: r.devices, other: r.other, bytes: r.bytes };
    for (const f of addon.fixup(tmp, fixups(src, stats), { openat2: useOpenat2 })) {
      if (f.path === MARKER) throw new ChError(`can't write marker /${MARKER}: ${f.message}`, EXIT_FAIL);
      log.warn(`can't create mount point /${f.path}: ${f.message}`);
    }
    chmodSync(tmp, 0o755);
    // 5. Into place.
    if (existing) {
      addon.rename2(tmp, target, 'exchange');
      removeTree(log, tmp);   // now the old image
    } else {
      addon.rename2(tmp, target, 'noreplace');
    }
  } catch (err) {
    removeTree(log, tmp);
    const e = err as { message: string; why?: string; code?: string };
    if (err instanceof ChError) throw err;
    throw new ChError(`${target}: ${e.message}${e.why && !e.message.includes('(E') ? `: ${e.why} (${e.code})` : ''}`, EXIT_FAIL);
  }
  if (r.devices > 0 || r.other > 0)
    log.warn(`skipped ${r.devices} device node(s)/fifo(s)${r.other ? ` and ${r.other} entr(ies) of other types` : ''}`);
  if (log.verbosity >= 0)
    process.stderr.write(`${PROG}[${process.pid}]: ${target}: unpacked ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks, ${r.hardlinks} hardlinks (${(r.bytes / 1048576).toFixed(1)} MiB)\n`);
  return 0;
  }
}

/** An flock on PATH that still names the file locked (see step 1). */
async function lockFresh(addon: ReturnType<typeof tarAddon>, path: string, name: string, dir: string): Promise<number> {
  for (;;) {
    let fd: number;
    try {
      fd = await addon.lock(path, false).catch(async (err) => {
        if (err.code !== 'EWOULDBLOCK' && err.code !== 'EAGAIN') throw err;
        log.info(`waiting for another ${PROG} unpacking ${name} in ${dir}`);
        return addon.lock(path, true);
      });
    } catch (err) {
      throw new ChError(`${path}: can't lock: ${(err as { why?: string }).why ?? why(err)} (${(err as { code?: string }).code})`, EXIT_FAIL);
    }
    try {
      if (statSync(path).ino === fstatSync(fd).ino) return fd;
    } catch { /* unlinked by the holder we waited for: lock afresh */ }
    closeSync(fd);
  }
}

const log = new Log(PROG);
void runMain(log, () => tar2dir(process.argv.slice(2), log));
