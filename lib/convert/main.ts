// ch-convert [-i FMT] [-o FMT] SRC DST: convert an image between formats:
// a directory, a tarball (.tar, .tar.gz, .tar.xz, .tar.zst), a SquashFS file
// (.sqfs), and a builder's image (docker, podman, buildah): as input through
// ch-builder2tar, as output loaded into its storage (to-builder.ts); and, as
// input only, an image in an OCI registry, pulled by ch-pull's code
// (lib/pull/pull.ts) through its blob cache. Formats are inferred from the
// names unless given.
//
// The output is written under a temporary name beside DST (mode 0700) and
// renamed into place only when complete. DST's directory may be shared
// (/var/tmp, a project directory): nothing there is followed through a link,
// and an existing DST is replaced only if it is the caller's own. No
// output has a setuid or setgid bit (docs/design.md, "No tool ever creates
// a setuid or setgid file"); a SquashFS input is unpacked into the private
// stage and walked with no-follow descriptors, its listing never read.

import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { accessSync, closeSync, fchmodSync, openSync, constants as fsConstants, lstatSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, type Stats } from 'node:fs';
import { availableParallelism, constants as osConstants, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { all, applyVerbosity, command, EXIT_USAGE, last, parseCommand, type CommandSpec, verbosityOptions } from '../util/cli.js';
import { ChError, isChError, Log, runMain, why } from '../util/log.js';
import { PKG_ROOT } from '../util/paths.js';
import { Progress } from '../util/progress.js';
import { extract } from '../tar/extract.js';
import { tarAddon } from '../tar/native.js';
import { at, makeTempDir, myUid, openDir, ownerName, removeOwned, removeStaleTemps } from '../util/owned-fs.js';
import { lockOwn, stripToolState, unlock } from '../image/install.js';
import { checkBuilder, checkReference, treeToBuilder } from './to-builder.js';
import type { BuilderName } from '../image/builder.js';
import { hostPlatform, parsePlatform } from '../pull/manifest.js';
import { parseReference } from '../pull/reference.js';
import { JOBS_DEFAULT, pullToDir, withImage, type PullOptions } from '../pull/pull.js';
import { existingImage } from '../pull/install.js';
import { requireMountPoints } from '../container/mounts.js';
import { liveHost } from '../container/host.js';

const PROG = 'ch-convert';
const EXIT_FAIL = 1;

export type Format = 'dir' | 'tar' | 'squash' | 'docker' | 'podman' | 'buildah' | 'registry';
const FORMATS: Format[] = ['dir', 'tar', 'squash', 'docker', 'podman', 'buildah', 'registry'];
/** The transport prefix skopeo and podman give registry references: the only sign that makes SRC one. */
const REGISTRY_PREFIX = 'docker://';
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const BUILDERS = new Set<Format>(['docker', 'podman', 'buildah']);
const TAR_COMPRESS: [string, string[]][] = [
  ['.tar.gz', ['--gzip']], ['.tgz', ['--gzip']], ['.tar.xz', ['--xz']], ['.txz', ['--xz']],
  ['.tar.zst', ['--zstd']], ['.tar.zstd', ['--zstd']], ['.tzst', ['--zstd']], ['.tar', []],
];
const SQUASH_EXTS = ['.sqfs', '.squashfs', '.squash'];

const SPEC: CommandSpec = {
  prog: PROG,
  synopsis: '[OPTION...] SRC DST',
  valueShorts: 'ioa',
  description: `Convert image SRC to DST; formats (below) are inferred from the names unless
-i/-o say. DST appears only when complete. An existing DST is replaced only
if it is yours (and, for a directory, everything in it); links are never
followed. Device nodes can't be created without privilege: they are skipped.
No output has setuid or setgid bits, whatever the input and whoever runs it
(files, tarball members and SquashFS entries alike; as ch-tar2dir), nor
extended attributes. DST is made in a stage beside it,
DIR/.NAME.ch-convert-RANDOM; conversions to the same DST wait for each
other (lock file DIR/.NAME.ch-convert.lock, there only while held; another
user's is refused; CH_CONVERT_LOCK_TIMEOUT=S waits at most S seconds,
default 3600), and a stage of yours left by a killed conversion is removed
by the next one to that DST (another user's is left alone).`,
  epilog: `Formats:
  dir     a directory (an existing directory, or a name without extension)
  tar     ${TAR_COMPRESS.map(([e]) => e).join(' ')}
  squash  ${SQUASH_EXTS.join(' ')} (mksquashfs: zstd if it has it, else
          gzip; all cores)
  docker, podman, buildah  an image of that builder, SRC or DST its name
          (never inferred: say -i or -o). As output: loaded into the
          builder's storage with the configuration in SRC's /ch/metadata.json
          (ENTRYPOINT, CMD, WORKDIR, USER, LABEL) and /ch/environment (ENV),
          files owned by root; DST gets the name only once fully loaded
  registry  input only: an image in an OCI registry, SRC a reference as
          ch-pull takes it, e.g. docker://registry:5000/team/app:v1 (inferred
          only from the docker:// prefix; with -i registry the prefix may be
          left out). Pulled as ch-pull pulls it (see ch-pull --help: --arch,
          --platform, --insecure; credentials; CH_IMAGE_STORAGE), its blobs
          kept in ch-pull's cache; a directory DST is installed as ch-pull
          installs one (an existing one replaced only if ch-pull or
          ch-tar2dir of yours made it). Pushing (-o registry) is not done
          here: convert with -o podman (or docker, buildah), then push with
          that builder, e.g. podman push NAME docker://REGISTRY/NAME

Exit status:
  0  converted
  1  failure: SRC unreadable or not of its format, DST not yours or not
     writable, a tool (tar, mksquashfs, unsquashfs, ch-builder2tar) failed,
     the builder missing or not working, the lock on DST not yours or held
     too long, the registry unreachable or
     without the image or tag (any of ch-pull's failures)
  2  usage error: unknown option, missing value, not two arguments, unknown
     format or extension, DST not an image name for a builder output, -o
     registry, a bad registry reference, --arch/--platform/--insecure
     without a registry SRC
  128+N  interrupted by signal N (SIGINT, SIGTERM, SIGHUP); DST as it was,
     no temporary left`,
};

function formatOf(name: string, what: string): Format {
  if (!(FORMATS as string[]).includes(name)) throw new ChError(`${what}: unknown format '${name}' (want ${FORMATS.join(', ')})`, EXIT_USAGE);
  if (what === '-o' && name === 'registry')
    throw new ChError(`-o registry: pushing to a registry is not supported; convert into a builder instead (${PROG} -o podman SRC NAME), then push with it (podman push NAME docker://REGISTRY/NAME)`, EXIT_USAGE);
  return name as Format;
}

/** The format a file name says, or null. */
function formatFromName(p: string): Format | null {
  if (TAR_COMPRESS.some(([e]) => p.endsWith(e))) return 'tar';
  if (SQUASH_EXTS.some((e) => p.endsWith(e))) return 'squash';
  return null;
}

function inferIn(src: string): Format {
  if (src.startsWith(REGISTRY_PREFIX)) return 'registry';
  let st: Stats;
  try { st = statSync(src); } catch (err) {
    // Never a registry reference or builder image by guess (a typo'd file
    // name would become a network request): a name that looks like one gets a hint.
    const hint = looksLikeReference(src) ? ` (a registry reference? say ${REGISTRY_PREFIX}${src}, or -i registry;`
      + ` an image of a builder? say -i podman, -i docker or -i buildah)` : '';
    throw new ChError(`can't read ${src}: ${why(err)}${hint}`, EXIT_FAIL);
  }
  if (st.isDirectory()) return 'dir';
  const f = formatFromName(src);
  if (f === null) throw new ChError(`${src}: can't tell its format from the name (use -i)`, EXIT_USAGE);
  return f;
}

/** Could SRC (no such file) be an image reference, as HOST[:PORT]/NAME[:TAG] or NAME:TAG, e.g. localhost/hello? */
function looksLikeReference(src: string): boolean {
  return /[/:@]/.test(src) && formatFromName(src) === null
    && /^[a-z0-9][\w.-]*(:[0-9]+)?(\/[\w.-]+)*(:\w[\w.-]*)?(@sha256:[0-9a-f]+)?$/i.test(src);
}

function inferOut(dst: string): Format {
  if (dst.startsWith(REGISTRY_PREFIX)) return formatOf('registry', '-o');   // refused, saying what to do instead
  const f = formatFromName(dst);
  if (f !== null) return f;
  if (/\.[a-z0-9]+$/i.test(basename(dst)) && !/^\./.test(basename(dst)))
    throw new ChError(`${dst}: unknown extension (use -o, or one of ${[...TAR_COMPRESS.map(([e]) => e), ...SQUASH_EXTS].join(' ')}, or no extension for a directory)`, EXIT_USAGE);
  return 'dir';
}

function run(log: Log, argv: string[], opts: SpawnSyncOptions = {}): void {
  log.debug(`running: ${argv.join(' ')}`);
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', log.verbosity >= 1 ? 'inherit' : 'ignore', 'pipe'], ...opts });
  if (r.error) throw new ChError(`can't run ${argv[0]}: ${why(r.error)}`, EXIT_FAIL);
  if (r.status !== 0) {
    const err = r.stderr ? r.stderr.toString().trim().split('\n').slice(-3).join('; ') : '';
    throw new ChError(`${argv[0]} failed (${r.signal ?? `exit ${r.status}`})${err ? `: ${err}` : ''}`, EXIT_FAIL);
  }
}

/** Unpack tarball SRC into the new directory OUT (our extractor: hostile archives refused). */
async function tarToDir(log: Log, src: string, out: string): Promise<void> {
  const bar = new Progress(`${PROG}: unpacking`, statSync(src).size, log.verbosity >= 0);
  const r = await extract(src, out, { onProgress: bar.active ? (n) => bar.update(n) : undefined });
  bar.done();
  if (r.top && lstatSync(join(out, r.top)).isDirectory()) {   // a single top-level directory: its contents
    const inner = `${out}.top`;
    renameSync(join(out, r.top), inner);
    rmSync(out, { recursive: true });
    renameSync(inner, out);
  }
  const fd = openSync(out, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
  try { fchmodSync(fd, 0o755); } finally { closeSync(fd); }   // as ch-tar2dir leaves an image's root
  if (r.devices > 0 || r.other > 0) log.warn(`skipped ${r.devices} device node(s)/fifo(s)`);
}

/**
 * Unpack SquashFS SRC into the new directory OUT. OUT is always inside a
 * directory only we can enter (a 0700 stage beside DST, or our private work
 * directory), so nothing another user does can redirect what unsquashfs
 * writes there. Its listing is never read: the tree it made is walked with
 * no-follow descriptor operations instead, clearing setuid and setgid bits
 * (unsquashfs keeps them when run as root; we never make such a file).
 */
function squashToDir(log: Log, src: string, out: string): void {
  rmSync(out, { recursive: true, force: true });   // unsquashfs makes it
  run(log, ['unsquashfs', '-no-xattrs', '-d', out, ...(process.stderr.isTTY && log.verbosity >= 0 ? [] : ['-no-progress']), src],
    { stdio: ['ignore', process.stderr.isTTY && log.verbosity >= 0 ? 'inherit' : 'ignore', 'pipe'] });
  noSetid(log, out);
}

/** Clear every setuid/setgid bit in the tree at DIR (following no link): no conversion makes such a file. */
function noSetid(log: Log, dir: string): void {
  let n: number;
  try { n = tarAddon().stripSetid(dir); } catch (err) { throw new ChError(why(err), EXIT_FAIL); }
  if (n > 0) log.info(`dropped setuid/setgid bits of ${n} file(s)`);
}

function dirToTar(log: Log, src: string, out: string, dstName: string): void {
  const comp = TAR_COMPRESS.find(([e]) => dstName.endsWith(e))?.[1] ?? [];
  // --mode: no member carries a setuid or setgid bit (a source tree of the user's may have them).
  run(log, ['tar', '--create', '--file', out, '--directory', src, '--numeric-owner', '--mode=ug-s', ...comp, '.']);
}

function dirToSquash(log: Log, src: string, out: string): void {
  const help = spawnSync('mksquashfs', ['-help'], { encoding: 'utf8' });
  const comp = /\bzstd\b/.test(`${help.stdout}${help.stderr}`) ? 'zstd' : 'gzip';
  const tty = process.stderr.isTTY && log.verbosity >= 0;
  // The action clears setuid and setgid bits on every entry as it goes into
  // the image (the source tree is not touched); no xattrs: file capabilities
  // are privilege too, and no other direction carries xattrs.
  run(log, ['mksquashfs', src, out, '-noappend', '-comp', comp, '-processors', String(availableParallelism()),
    '-no-xattrs', '-action', 'chmod(ug-s)@true', ...(tty ? [] : ['-no-progress', '-quiet'])],
    { stdio: ['ignore', tty ? 'inherit' : 'ignore', 'pipe'] });
}

/** A builder's image as a tarball in WORK, through ch-builder2tar. */
function builderToTar(log: Log, builder: Format, ref: string, work: string): string {
  const argv = [process.execPath, join(PKG_ROOT, 'bin', 'ch-builder2tar'), '-b', builder, '--nocompress', '-q', ref, work];
  log.debug(`running: ${argv.join(' ')}`);
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', log.verbosity >= 1 ? 'inherit' : 'ignore', 'pipe'] });
  if (r.error) throw new ChError(`can't run ch-builder2tar: ${why(r.error)}`, EXIT_FAIL);
  if (r.status !== 0) {
    // Its error, once, in our words: without its prefix, nor what we say
    // already (the builder, the image); a failed inspect: most likely no such image.
    const inspect = `${builder}: can't inspect image ${ref}: `;
    let missing = false;
    const said = r.stderr.toString().split('\n').filter((l) => /^ch-builder2tar\[\d+\]: error: /.test(l))
      .map((l) => l.replace(/^ch-builder2tar\[\d+\]: error: /, ''))
      .map((l) => (l.startsWith(inspect) ? (missing = true, l.slice(inspect.length).replace(/^Error: /, '')) : l));
    const detail = said.join('; ') || `ch-builder2tar failed (${r.signal ?? `exit ${r.status}`})`;
    throw new ChError(`can't read ${builder} image ${ref}: ${detail}${missing ? ` ('${builder} images' lists those there)` : ''}`, EXIT_FAIL);
  }
  const tars = readdirSync(work).filter((f) => f.endsWith('.tar'));
  if (tars.length !== 1) throw new ChError(`ch-builder2tar left no tarball for ${ref}`, EXIT_FAIL);
  return join(work, tars[0]);
}

export async function convert(argv: string[], log: Log): Promise<number> {
  const y = verbosityOptions(command(SPEC)
    .option('in-fmt', { alias: 'i', type: 'string', requiresArg: true, description: `FMT: input format: ${FORMATS.join(', ')} (default: from SRC)` })
    .option('out-fmt', { alias: 'o', type: 'string', requiresArg: true, description: `FMT: output format: ${FORMATS.filter((f) => f !== 'registry').join(', ')} (default: from DST; not registry: see below)` })
    .option('arch', { alias: 'a', type: 'string', requiresArg: true, description: 'ARCH: registry SRC: the architecture to pull (as ch-pull --arch)' })
    .option('platform', { type: 'string', requiresArg: true, description: 'OS/ARCH: registry SRC: the platform to pull (as ch-pull --platform)' })
    .option('insecure', { type: 'boolean', description: 'registry SRC: allow plain HTTP and unverified TLS certificates (as ch-pull --insecure)' }));
  const a = await parseCommand(y, SPEC, argv);
  if (!a) return 0;
  applyVerbosity(log, a);
  const arch = last(a.arch), plat = last(a.platform);
  const inArg = last(a['in-fmt']), outArg = last(a['out-fmt']);
  let inFmt: Format | null = inArg === undefined ? null : formatOf(inArg, '-i');
  let outFmt: Format | null = outArg === undefined ? null : formatOf(outArg, '-o');
  const pos = all(a._);
  if (pos.length !== 2) throw new ChError(`expected SRC and DST, got ${pos.length} argument(s)\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
  const [srcArg, dstArg] = pos;
  if (dstArg === '' || srcArg === '') throw new ChError('SRC and DST must not be empty', EXIT_USAGE);
  inFmt ??= inferIn(srcArg);
  outFmt ??= inferOut(dstArg);
  let pullOpts: PullOptions | undefined;
  if (inFmt === 'registry') {
    if (arch !== undefined && plat !== undefined) throw new ChError('give either --arch or --platform, not both', EXIT_USAGE);
    pullOpts = { ref: parseReference(srcArg.startsWith(REGISTRY_PREFIX) ? srcArg.slice(REGISTRY_PREFIX.length) : srcArg),
      platform: arch !== undefined ? parsePlatform(arch, true) : plat !== undefined ? parsePlatform(plat, false) : hostPlatform(),
      insecure: a.insecure === true, jobs: JOBS_DEFAULT };
  } else {
    for (const [opt, v] of [['--arch', arch], ['--platform', plat], ['--insecure', a.insecure]] as const)
      if (v !== undefined && v !== false) throw new ChError(`${opt}: only for a registry SRC (-i registry, or ${REGISTRY_PREFIX}REF)`, EXIT_USAGE);
  }
  const src = BUILDERS.has(inFmt) ? srcArg : pullOpts ? pullOpts.ref.canonical : resolve(srcArg);
  if (BUILDERS.has(outFmt)) checkReference(outFmt as BuilderName, dstArg);
  if (!BUILDERS.has(inFmt) && !pullOpts) checkSource(src, inFmt);
  if (inFmt === 'dir' && (outFmt === 'dir' || outFmt === 'squash')) checkRunnable(src, dstArg);
  return interruptible((signal) => {
    const from: Source = { fmt: inFmt!, path: src, pull: pullOpts, signal };
    if (BUILDERS.has(outFmt!)) return toBuilder(log, from, outFmt as BuilderName, dstArg);
    if (pullOpts && outFmt === 'dir') return registryToDir(log, from, pullOpts, dstArg);
    return toFile(log, from, outFmt!, dstArg);
  });
}

/** What to convert: SRC in format FMT (a registry reference: PULL); SIGNAL aborts a pull. */
interface Source { fmt: Format; path: string; pull?: PullOptions; signal: AbortSignal }

/**
 * Run CONVERSION with SIGINT, SIGTERM and SIGHUP caught: they abort it
 * (a pull at once; a tool we run when it returns) so that its finally
 * clauses remove the temporaries, then the status is 128+N.
 */
async function interruptible(conversion: (signal: AbortSignal) => Promise<number>): Promise<number> {
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(new ChError(`interrupted by ${sig}`, 128 + osConstants.signals[sig])); };
  for (const s of SIGNALS) process.on(s, onSignal);
  try {
    return await conversion(abort.signal);
  } catch (err) {
    await signalsDelivered();   // a tool killed by the signal fails before its handler has run
    if (caught) throw new ChError(`interrupted by ${caught}; nothing written, no temporary left`, 128 + osConstants.signals[caught]);
    throw err;
  } finally {
    for (const s of SIGNALS) process.off(s, onSignal);
  }
}

/**
 * Let the event loop read the signals that came while a tool ran
 * synchronously: their handlers run in its poll phase. One setImmediate is
 * not enough when we are already in a poll-phase callback (after awaiting
 * the addon's lock, a thread-pool completion): the immediate then runs in
 * this iteration's check phase, before the next poll. A second one always
 * comes after a poll phase.
 */
async function signalsDelivered(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise((res) => setImmediate(res));
}

/** Throw if a signal came; after letting the event loop run, as a tool run synchronously holds its handlers back. */
async function checkInterrupted(signal: AbortSignal): Promise<void> {
  await signalsDelivered();
  if (signal.aborted) throw signal.reason;
}

/** A registry image as directory DST: ch-pull's own install (atomic; an existing DST replaced only if an image of yours). */
async function registryToDir(log: Log, from: Source, o: PullOptions, dstArg: string): Promise<number> {
  const dst = resolve(dstArg);
  let parent: number;
  try { parent = openDir(dirname(dst)); } catch (err) { throw new ChError(`can't write ${dst}: ${why(err)}`, EXIT_FAIL); }
  try {
    existingImage(parent, basename(dst), dst);   // refused before any download if not an image of the user's
    log.info(`converting ${from.path} (registry) to ${dst} (dir)`);
    // Always rebuilt (from cached blobs): DST is to be SRC as it is now, not as it may have been edited since.
    await pulling(from, () => withImage(o, log, from.signal,
      (img) => pullToDir(img, log, { dirFd: parent, dir: dirname(dst), name: basename(dst) }, true, from.signal)));
  } finally {
    closeSync(parent);
  }
  if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${dst}: written (dir)\n`);
  return 0;
}

/** SRC as the file or directory DST, staged beside it and renamed into place. */
async function toFile(log: Log, from: Source, outFmt: Format, dstArg: string): Promise<number> {
  const { fmt: inFmt, path: src } = from;
  // The output's directory, held open: every name in it is resolved from this descriptor.
  const dst = resolve(dstArg);
  const name = basename(dst);
  let parent: number;
  try { parent = openDir(dirname(dst)); } catch (err) { throw new ChError(`can't write ${dst}: ${why(err)}`, EXIT_FAIL); }
  try {
    checkDestination(parent, name, dst, outFmt);
    try { accessSync(`/proc/self/fd/${parent}/.`, fsConstants.W_OK | fsConstants.X_OK); } catch (err) {
      throw new ChError(`can't write ${dst}: ${why(err)}`, EXIT_FAIL);
    }
    // One conversion to DST at a time (the lock file is there only while
    // held), so that under the lock any stage of ours for DST is one whose
    // conversion died (SIGKILL): removed, as ch-tar2dir and ch-pull remove
    // theirs (lib/image/install.ts).
    const lockName = `.${name}.${PROG}.lock`;
    const lockFd = await lockOwn(parent, lockName, join(dirname(dst), lockName), { holder: `another ${PROG} of yours`,
      timeoutMs: lockTimeoutMs(), timeoutVar: 'CH_CONVERT_LOCK_TIMEOUT', signal: from.signal,
      onWait: () => log.info(`waiting for another ${PROG} writing ${dst}`) });
    try {
      removeStaleTemps(log, parent, dirname(dst), stagePrefix(name), true);
      await stageAndPlace(log, from, outFmt, parent, dst);
    } finally {
      unlock(parent, lockName, lockFd);
    }
  } finally {
    closeSync(parent);
  }
  if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${dst}: written (${outFmt})\n`);
  return 0;
}

/** Names of ch-convert's stages for DST NAME, beside it. */
function stagePrefix(name: string): string { return `.${name}.${PROG}-`; }

/** Seconds to wait for another conversion of ours to the same DST (CH_CONVERT_LOCK_TIMEOUT, default 3600). */
function lockTimeoutMs(): number {
  const s = process.env.CH_CONVERT_LOCK_TIMEOUT;
  if (s === undefined || s === '') return 3600 * 1000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s)) throw new ChError(`CH_CONVERT_LOCK_TIMEOUT: want seconds, got '${s}'`, EXIT_USAGE);
  return Math.round(Number(s) * 1000);
}

/** Under DST's lock: SRC made in a stage beside DST (in directory fd PARENT), then renamed into place. */
async function stageAndPlace(log: Log, from: Source, outFmt: Format, parent: number, dst: string): Promise<void> {
  const { fmt: inFmt, path: src } = from;
  const name = basename(dst);
  // Intermediates in a private directory; the output in another, made
  // beside DST (a new 0700 directory, never someone else's), so the tools
  // we run write where nobody else can, and one rename places it.
  const work = mkdtempSync(join(process.env.TMPDIR ?? tmpdir(), 'ch-convert-'));
  let stageName: string;
  try {
    const made = makeTempDir(parent, dirname(dst), stagePrefix(name));
    closeSync(made.tmpFd);
    stageName = made.tmpName;
  } catch (err) {
    rmSync(work, { recursive: true, force: true });
    throw new ChError(`can't write ${dst}: ${isChError(err) ? err.message : why(err)}`, EXIT_FAIL);
  }
  const stage = join(dirname(dst), stageName);
  try {
    const out = join(stage, 'out');
    // 0755 unless the input says otherwise (a tarball's "./"): STAGE is private.
    if (outFmt === 'dir') mkdirSync(out, { mode: 0o755 });
    log.info(`converting ${src} (${inFmt}) to ${dst} (${outFmt})`);
    // A pulled image goes into STAGE too: beside DST, where there is room for it, and private.
    const tree = from.pull ? await pullTree(log, from, join(stage, 'tree')) : src;
    await produce(log, from.pull ? 'dir' : inFmt, tree, outFmt, out, name, work);
    // A directory made from content holds no tool's marker (ch/.ch-*): only
    // ch-pull and ch-tar2dir write one, for a root of their own (install.ts).
    if (outFmt === 'dir') for (const n of stripToolState(out)) log.info(`${n}: not copied (a marker is ours to write, never content)`);
    await checkInterrupted(from.signal);
    place(parent, stageName, name, dst, outFmt);
  } finally {
    try { removeOwned(parent, stageName, stage); } catch (err) { log.warn(why(err)); }
    rmSync(work, { recursive: true, force: true });
  }
}

/** Pull FROM (a registry image) into the new directory TREE, without ch-pull's marker: an intermediate. */
async function pullTree(log: Log, from: Source, tree: string): Promise<string> {
  mkdirSync(tree, { mode: 0o700 });   // finishImage makes it 0755 once complete
  await pulling(from, () => withImage(from.pull!, log, from.signal, (img) => img.build(tree, false)));
  return tree;
}

/** PULL's failures name the image (ch-pull's say "registry HOST unreachable", say of what), status kept. */
async function pulling<T>(from: Source, pull: () => Promise<T>): Promise<T> {
  try {
    return await pull();
  } catch (err) {
    if (!isChError(err) || err.message.includes(from.pull!.ref.canonical)) throw err;
    throw new ChError(`${from.path}: can't pull: ${err.message}`, err.exitCode);
  }
}

/** SRC into BUILDER's storage as image DST: through a directory tree, unless SRC is one. */
async function toBuilder(log: Log, from: Source, builder: BuilderName, dst: string): Promise<number> {
  const { fmt: inFmt, path: src } = from;
  checkBuilder(builder);
  const work = mkdtempSync(join(process.env.TMPDIR ?? tmpdir(), 'ch-convert-'));
  try {
    let tree = src;
    if (from.pull) {
      tree = await pullTree(log, from, join(work, 'tree'));
    } else if (inFmt !== 'dir') {
      tree = join(work, 'tree');
      mkdirSync(tree, { mode: 0o755 });
      await produce(log, inFmt, src, 'dir', tree, 'tree', work);
    }
    log.info(`converting ${src} (${inFmt}) to ${dst} (${builder})`);
    await checkInterrupted(from.signal);
    await treeToBuilder(log, builder, tree, dst, work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${dst}: written (${builder})\n`);
  return 0;
}

function checkSource(src: string, fmt: Format): void {
  let st: Stats;
  try { st = statSync(src); } catch (err) { throw new ChError(`can't read ${src}: ${why(err)}`, EXIT_FAIL); }
  if (fmt === 'dir' ? !st.isDirectory() : !st.isFile())
    throw new ChError(`${src}: not a ${fmt === 'dir' ? 'directory' : 'regular file'} (format ${fmt})`, EXIT_FAIL);
}

/**
 * A directory SRC converted to what ch-run runs as it is (a directory, a
 * .sqfs) must pass ch-run's own check: otherwise DST would be written, then
 * refused at every launch. (A tarball is left alone: ch-tar2dir makes the
 * mount points; a builder makes its own.)
 */
function checkRunnable(src: string, dst: string): void {
  try { requireMountPoints(liveHost(), src); } catch (err) {
    if (!isChError(err)) throw err;
    throw new ChError(`${err.message}; ch-run would refuse ${dst}, so it is not written`, EXIT_FAIL);
  }
}

/** DST may exist only as the caller's own thing of the output's kind. */
function checkDestination(parent: number, name: string, dst: string, fmt: Format): void {
  let st: Stats;
  try { st = lstatSync(at(parent, name)); } catch { return; }
  if (st.isSymbolicLink()) throw new ChError(`${dst}: exists as a symlink; not following or replacing it`, EXIT_FAIL);
  if (st.uid !== myUid()) throw new ChError(`${dst}: exists and belongs to ${ownerName(st.uid)}; not replacing it`, EXIT_FAIL);
  if (st.isDirectory() !== (fmt === 'dir'))
    throw new ChError(`${dst}: exists as a ${st.isDirectory() ? 'directory' : 'file'}; not replacing it with a ${fmt === 'dir' ? 'directory' : 'file'}`, EXIT_FAIL);
}

/** Write SRC (format IN) as OUT (format OUTFMT) at TMP; intermediates in WORK. */
async function produce(log: Log, inFmt: Format, src: string, outFmt: Format, tmp: string, name: string, work: string): Promise<void> {
  let from = src, fmt = inFmt;
  if (BUILDERS.has(fmt)) { from = builderToTar(log, fmt, src, work); fmt = 'tar'; }
  if (outFmt === 'dir') {
    if (fmt === 'tar') return tarToDir(log, from, tmp);
    if (fmt === 'squash') return squashToDir(log, from, tmp);
    rmSync(tmp, { recursive: true });
    // Into a private stage, as squashToDir; no xattrs (file capabilities among them), as in every other direction.
    run(log, ['cp', '-a', '--no-preserve=xattr', '--no-target-directory', from, tmp]);
    return noSetid(log, tmp);
  }
  if (fmt !== 'dir') {   // through a directory
    const dir = join(work, 'tree');
    mkdirSync(dir, { mode: 0o755 });   // in WORK, which is private
    if (fmt === 'tar') await tarToDir(log, from, dir); else squashToDir(log, from, dir);
    from = dir;
  }
  if (outFmt === 'tar') dirToTar(log, from, tmp, name);
  else dirToSquash(log, from, tmp);
}

/** Rename STAGE/out to NAME; an existing NAME (ours: checked) is replaced, a
    directory by exchange (the old one is then removed with STAGE). */
function place(parent: number, stage: string, name: string, dst: string, fmt: Format): void {
  checkDestination(parent, name, dst, fmt);   // again: someone may have put something there since
  const out = `${at(parent, stage)}/out`;
  let exists = true;
  try { lstatSync(at(parent, name)); } catch { exists = false; }
  if (fmt === 'dir') {
    tarAddon().rename2(out, at(parent, name), exists ? 'exchange' : 'noreplace');
  } else {
    renameSync(out, at(parent, name));
  }
}

const log = new Log(PROG);
void runMain(log, () => convert(process.argv.slice(2), log));
