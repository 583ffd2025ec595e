// ch-tar2dir TARBALL DIR: unpack an image tarball to DIR/NAME, safely,
// atomically and once even when many tasks ask at the same time. The install
// into DIR (lock DIR/.NAME.ch-tar2dir.lock, stale temporaries, reuse or
// replacement of an existing DIR/NAME, staging in DIR/.NAME.ch-tmp.RANDOM,
// the atomic rename) follows lib/image/shared-install.ts, shared with ch-pull. What
// is ch-tar2dir's own: extract natively into the temporary, take a single
// top-level directory as the image root, create the standard mount points
// and write the marker, which records the tarball it was made from.
// DIR/NAME therefore only ever holds a complete image, whatever kills us.

import { chmodSync, closeSync, lstatSync, realpathSync, statSync, type Stats } from 'node:fs';
import { basename, join } from 'node:path';
import { constants as osConstants } from 'node:os';
import { ChError, Log, runMain, why } from '../util/log.js';
import { formatHelp, type OptionSpec, parseArgs, VERBOSITY_AND_INFO_OPTIONS } from '../util/argp.js';
import { Progress } from '../util/progress.js';
import { extract } from '../tar/extract.js';
import { tarAddon, useOpenat2, type FixupOp } from '../tar/native.js';
import { splitTarName, TAR_EXTS } from './names.js';
import { imageDirs, MOUNT_FILES } from './layout.js';
import { openDir } from '../util/owned-fs.js';
import { INTERRUPTS } from '../util/proc.js';
import { IMAGE_KIND, IMAGE_MARKER, installImage, lockWaitMs, markerText, OLD_MARKERS, stripToolState } from './shared-install.js';

const PROG = 'ch-tar2dir';
const EXIT_FAIL = 1;
const EXIT_USAGE = 2;
/** The marker it writes, relative to the image root: every image tool's (shared-install.ts). */
export const MARKER = IMAGE_MARKER;

const SPECS: OptionSpec[] = [
  { name: 'force', arg: 'none', help: 're-extract even if DIR/NAME is already this tarball\'s image' },
  ...VERBOSITY_AND_INFO_OPTIONS,
];

function help(): string {
  return `Usage: ${PROG} [OPTION...] TARBALL DIR

Unpack image tarball TARBALL into directory DIR/NAME, NAME being TARBALL's
base name less its extension (${TAR_EXTS.join(' ')}; the extension may be
omitted, if only one tarball of that name exists: several are refused as
ambiguous). Compression (gzip, xz, zstd, none) is detected from the content.

Hostile or broken archives are refused and nothing is written outside
DIR/NAME: '..' or absolute names, writes through symlinks leading outside,
hardlinks to outside files, NUL or over-long names, truncated or corrupt data.
Device nodes and fifos are skipped and counted. A single top-level directory
is unwrapped. The image appears at DIR/NAME only once complete.

DIR may be shared with other users (/var/tmp, a project directory): nothing
there is trusted unless it is yours. An existing DIR/NAME is reused (if made
from this same tarball, unless --force) or replaced only if it is a directory
you own that no one else can write, with a marker /${MARKER} (or, from
earlier versions, ${OLD_MARKERS.map((m) => `/${m}`).join(' or ')}) that is yours too: an image
you made with ch-tar2dir, ch-pull, ch-convert or ch-image. Anything else is
refused, naming its owner; a directory without a marker is never replaced. Links are never
followed in DIR, and only your own entries are ever removed. Concurrent runs
for the same DIR/NAME wait for each other (lock file
DIR/.NAME.ch-tar2dir.lock, present only while a run holds it); a lock file of
another user is refused, never waited on.

Environment: CH_TAR2DIR_OPENAT2=0 uses the openat(2) walk of old kernels
(symlinks in parent paths refused) instead of openat2(2);
CH_TAR2DIR_LOCK_TIMEOUT=S waits at most S seconds for another run of yours
holding the lock (default ${LOCK_TIMEOUT_DEFAULT_S});
CH_TAR2DIR_DECODE_THREAD=0 decompresses in line with the writes rather than
on a thread of its own (the default where two CPUs or more may be used;
=1 uses the thread on one CPU too).

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

/** Find the tarball: ARG itself, or ARG plus a known extension (only one may exist: else ambiguous). */
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
  const found = TAR_EXTS.map((ext) => ({ path: arg + ext, st: tryStat(arg + ext) }))
    .filter((f): f is { path: string; st: Stats } => !!f.st?.isFile());
  if (found.length > 1)
    throw new ChError(`${arg}: ambiguous: ${found.length === 2 ? 'both ' : ''}${found.map((f) => f.path).join(' and ')} exist; `
      + 'name the one to unpack', EXIT_FAIL);
  if (found.length === 1) {
    checkName(basename(arg), found[0].path);
    return { path: found[0].path, name: basename(arg), st: found[0].st };
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

/** The mount points ch-run binds onto, and the marker (of image root ROOT), created safely inside ROOT. */
function fixups(src: Identity, stats: object, root: string): FixupOp[] {
  const ops: FixupOp[] = imageDirs().map((d) => ({ op: 'dir', path: d }));
  for (const f of MOUNT_FILES) ops.push({ op: 'file', path: f });
  ops.push({ op: 'write', path: MARKER,
    content: markerText(PROG, { source: src, created: new Date().toISOString(), stats }, root) });
  return ops;
}

/** Seconds to wait for another run of ours holding the lock (CH_TAR2DIR_LOCK_TIMEOUT). */
export const LOCK_TIMEOUT_DEFAULT_S = 600;
function lockTimeoutMs(): number {
  return lockWaitMs('CH_TAR2DIR_LOCK_TIMEOUT', LOCK_TIMEOUT_DEFAULT_S);
}

/** What one unpacking works on: the tarball, where its image goes, and how. */
interface Job {
  log: Log;
  tb: { path: string; name: string; st: Stats };
  dir: string;
  dirFd: number;
  force: boolean;
  timeoutMs: number;
}

export async function tar2dir(argv: string[], log: Log): Promise<number> {
  const args = await parseCommandLine(argv, log);
  if (typeof args === 'number') return args;
  const { tarArg, dir, force } = args;
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
    return await unpackIn({ log, tb, dir, dirFd, force, timeoutMs });
  } finally {
    closeSync(dirFd);
  }
}

/** The command line: TARBALL, DIR and --force, or the exit status of --help/--version. */
async function parseCommandLine(argv: string[], log: Log): Promise<{ tarArg: string; dir: string; force: boolean } | number> {
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
  return { tarArg: pos[0], dir: pos[1], force };
}

/** Install DIR/NAME from the tarball (shared-install.ts's rules), or say it is up to date. */
async function unpackIn(job: Job): Promise<number> {
  const { log, tb, dir, dirFd, force, timeoutMs } = job;
  const name = tb.name;
  const target = join(dir, name);
  const src = identity(tb.path, tb.st);
  let r: Awaited<ReturnType<typeof extractTo>> | undefined;

  const done = await installImage(log, {
    kind: IMAGE_KIND,
    tool: PROG,
    // Concurrent runs for DIR/NAME (srun's tasks on one node) wait, then reuse the first one's image.
    lock: { holder: `another ${PROG} of yours`, timeoutMs, timeoutVar: 'CH_TAR2DIR_LOCK_TIMEOUT',
      onWait: () => log.info(`waiting for another ${PROG} unpacking ${name} in ${dir}`) },
    dirFd, dir, name,
    tmpPrefix: `.${name}.ch-tmp.`,
    purpose: 'unpack into it',
    // Reused only if its own image of this tarball; another tool's image of the user's is replaced.
    upToDate: (m) => m.tool === PROG && same(m.source as Identity | undefined, src),
    force,
    build: async (tmp) => {
      r = await extractTo(job, target, tmp);
      return finishRoot(log, r, src, tb.path, tmp);
    },
  });
  if (done === 'current') {
    if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${target}: already unpacked from ${tb.path}, up to date\n`);
    return 0;
  }
  if (r!.devices > 0 || r!.other > 0)
    log.warn(`skipped ${r!.devices} device node(s)/fifo(s)${r!.other ? ` and ${r!.other} entr(ies) of other types` : ''}`);
  if (log.verbosity >= 0)
    process.stderr.write(`${PROG}[${process.pid}]: ${target}: unpacked ${r!.files} files, ${r!.dirs} dirs, ${r!.symlinks} symlinks, ${r!.hardlinks} hardlinks (${(r!.bytes / 1048576).toFixed(1)} MiB)\n`);
  return 0;
}

/**
 * The extracted tree in TMP made an image: its root found (a single
 * top-level directory is the root, moved to DIR/NAME straight out of our
 * directory: its name returned), the tarball's markers removed, mount points
 * and our marker written, the root made 0755. TARBALL: as the user named it.
 */
function finishRoot(log: Log, r: Awaited<ReturnType<typeof extractTo>>, src: Identity, tarball: string, tmp: string): string | undefined {
  if (r.entries === 0)
    throw new ChError(`${tarball}: holds no files (an empty or all-zero archive); not an image`, EXIT_FAIL);
  log.debug(`${r.kind}; ${r.openat2 ? 'openat2(RESOLVE_BENEATH)' : 'openat(O_NOFOLLOW) walk'}; ${r.entries} entries`);
  let top = false;
  if (r.top) {
    try { top = lstatSync(`${tmp}/${r.top}`).isDirectory(); } catch { top = false; }
    if (top) log.info(`single top-level directory ${r.top}: it is the image root`);
  }
  const root = top ? `${tmp}/${r.top}` : tmp;
  const stats = { files: r.files, dirs: r.dirs, symlinks: r.symlinks, hardlinks: r.hardlinks, devices: r.devices, other: r.other, bytes: r.bytes };
  // Markers come from us, never from the tarball (lib/image/shared-install.ts).
  for (const n of stripToolState(root)) log.info(`${n}: removed (came with the tarball; only ${PROG} writes its marker)`);
  for (const f of tarAddon().fixup(root, fixups(src, stats, root), { openat2: useOpenat2() })) {
    if (f.path === MARKER) throw new ChError(`can't write marker /${MARKER}: ${f.message}`, EXIT_FAIL);
    log.warn(`can't create mount point /${f.path}: ${f.message}`);
  }
  chmodSync(root, 0o755);
  return top ? r.top : undefined;
}

/** Extract the tarball into DEST with a progress bar; SIGINT/SIGTERM/SIGHUP stop it, exit 128+N (the caller removes the temporary). */
async function extractTo(job: Job, target: string, dest: string) {
  const { log, tb } = job;
  const bar = new Progress(`${PROG}: ${tb.name}`, tb.st.size, log.verbosity >= 0);
  log.info(`unpacking ${tb.path} to ${target}`);
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(); };
  for (const sig of INTERRUPTS) process.on(sig, onSignal);
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
    for (const sig of INTERRUPTS) process.off(sig, onSignal);
  }
}

const log = new Log(PROG);
void runMain(log, () => tar2dir(process.argv.slice(2), log));
