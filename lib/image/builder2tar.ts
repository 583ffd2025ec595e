// ch-builder2tar [-b BUILDER] [--nocompress] IMAGE OUTDIR (also ch-docker2tar):
// flatten a builder's image to OUTDIR/NAME.tar.gz through the builder's
// create + export, with the image's configuration added as /ch/environment
// and /ch/metadata.json. Written under a temporary name and renamed into
// place when complete, so a partial tarball never has the final name.

import { spawn } from 'node:child_process';
import { closeSync, constants as fsConstants, createReadStream, createWriteStream, fsyncSync, lstatSync, openSync, readdirSync, renameSync, type ReadStream, type Stats } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { ChError, Log, runMain, why } from '../util/log.js';
import { all, applyVerbosity, command, EXIT_USAGE, last, parseCommand, type CommandSpec, verbosityOptions } from '../util/cli.js';
import { capture, lastLine } from '../util/proc.js';
import { TarAppender } from '../tar/append.js';
import type { NewEntry } from '../tar/header.js';
import { pipe } from '../util/native-fs.js';
import { configFromInspect, environmentFile, selectBuilder, type BuilderName, type ImageConfig } from './builder.js';
import { imageFileName } from './names.js';
import { at, myUid, openDir, refuseForeignFile, removeOwned } from '../util/owned-fs.js';

const PROG = basename(process.argv[1] ?? 'ch-builder2tar');

const SPEC: CommandSpec = {
  prog: PROG,
  synopsis: '[OPTION...] IMAGE OUTDIR',
  valueShorts: 'b',
  description: `Flatten builder image IMAGE into OUTDIR/NAME.tar.gz, NAME being IMAGE with
'/' replaced by '%' and ':' by '+'. The image's ENV goes into /ch/environment
(what ch-run --set-env reads) and its ENTRYPOINT, CMD, ENV, WORKDIR, USER and
labels into /ch/metadata.json. The tarball is written under a temporary name
in OUTDIR and renamed into place when complete.`,
  epilog: `Environment:
  CH_BUILDER   the builder to use when -b is not given

Exit status:
  0  tarball written
  1  failure (no builder, unknown image, export or write failed)
  2  usage error`,
};

async function inspect(b: BuilderName, image: string): Promise<ImageConfig> {
  const argv = b === 'buildah' ? ['buildah', 'inspect', '--type', 'image', image] : [b, 'image', 'inspect', image];
  const r = await capture(argv);
  if (r.code !== 0) throw new ChError(`${b}: can't inspect image ${image}: ${lastLine(r.stderr)}`, 1);
  try {
    return configFromInspect(b, JSON.parse(r.stdout));
  } catch (err) {
    if (err instanceof ChError) throw err;
    throw new ChError(`${b}: can't parse inspect output for ${image}: ${(err as Error).message}`, 1);
  }
}

/** A container of IMAGE to export; its id. */
async function createContainer(b: BuilderName, image: string): Promise<string> {
  const argv = b === 'buildah' ? ['buildah', 'from', image]
    // Never run: the command only satisfies images that have neither ENTRYPOINT nor CMD.
    : [b, 'create', image, '/bin/true'];
  const r = await capture(argv);
  if (r.code !== 0) throw new ChError(`${b}: can't create a container of ${image}: ${lastLine(r.stderr)}`, 1);
  const id = r.stdout.trim().split('\n').pop()!;
  if (!/^[\w.-]+$/.test(id)) throw new ChError(`${b}: unexpected container id '${id}'`, 1);
  return id;
}

function exportArgv(b: BuilderName, id: string): string[] {
  if (b === 'buildah') {   // buildah has no export: mount (inside its user namespace when rootless) and tar it
    const script = ['sh', '-c', 'mnt=$(buildah mount "$1") && exec tar -C "$mnt" --numeric-owner -cf - .', 'sh', id];
    // As root, `buildah unshare` is neither needed nor working everywhere (memfd_create EINVAL seen here).
    return process.getuid?.() === 0 ? script : ['buildah', 'unshare', '--', ...script];
  }
  return [b, 'export', id];
}

async function removeContainer(b: BuilderName, id: string, log: Log): Promise<void> {
  const r = await capture(b === 'buildah' ? ['buildah', 'rm', id] : [b, 'rm', '-f', id]).catch(() => null);
  if (!r || r.code !== 0) log.warn(`${b}: can't remove container ${id}${r ? `: ${lastLine(r.stderr)}` : ''}`);
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

export async function builder2tar(argv: string[], log: Log): Promise<number> {
  const y = verbosityOptions(command(SPEC)
    .option('builder', { alias: 'b', type: 'string', requiresArg: true, description: 'BUILDER: docker, podman or buildah (default: $CH_BUILDER, else the first working)' })
    .option('nocompress', { type: 'boolean', description: 'write an uncompressed NAME.tar' }));
  const a = await parseCommand(y, SPEC, argv);
  if (!a) return 0;
  applyVerbosity(log, a);
  const builderOpt = last(a.builder), compress = a.nocompress !== true;
  const pos = all(a._);
  if (pos.length !== 2)
    throw new ChError(`expected IMAGE and OUTDIR, got ${pos.length} argument(s)\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
  const [image, outdir] = pos;
  const name = imageFileName(image);
  let dirFd: number;
  try {
    dirFd = openDir(outdir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ChError(code === 'ENOTDIR' ? `${outdir}: not a directory (ENOTDIR)` : `${outdir}: can't use as output directory: ${why(err)}`, 1);
  }
  try {
    return await flatten(log, image, builderOpt, outputIn(dirFd, outdir, name, compress));
  } finally {
    closeSync(dirFd);
  }
}

/**
 * Where the tarball goes: FILE in OUTDIR (open as DIRFD), written as TMPNAME
 * first. OUTDIR may be shared with other users: every entry is named through
 * our descriptor of it, never followed if a link, and only our own are
 * removed or replaced.
 */
interface Output { dirFd: number; outdir: string; compress: boolean; file: string; final: string; tmpPrefix: string; tmpName: string; tmp: string }

function outputIn(dirFd: number, outdir: string, name: string, compress: boolean): Output {
  const file = `${name}.tar${compress ? '.gz' : ''}`;
  const tmpPrefix = `.${file}.ch-tmp.`;
  // PID for the stale check (removeDeadTemps), random so that no one can plant it in advance.
  const tmpName = `${tmpPrefix}${process.pid}.${randomBytes(6).toString('hex')}`;
  return { dirFd, outdir, compress, file, final: join(outdir, file), tmpPrefix, tmpName, tmp: join(outdir, tmpName) };
}

/** IMAGE of builder BUILDEROPT (or the one chosen) flattened into OUT. */
async function flatten(log: Log, image: string, builderOpt: string | undefined, out: Output): Promise<number> {
  const b = selectBuilder(builderOpt, process.env, (m) => log.info(m));
  log.info(`using ${b}`);
  refuseForeignFile(out.dirFd, out.file, out.final);
  removeDeadTemps(log, out);
  const extra = chFiles(log, await inspect(b, image));
  const id = await createContainer(b, image);
  let ok = false;
  try {
    await exportTo(log, b, image, id, extra, out);
    refuseForeignFile(out.dirFd, out.file, out.final);
    try {
      renameSync(at(out.dirFd, out.tmpName), at(out.dirFd, out.file));
    } catch (err) {
      throw new ChError(`${out.final}: can't put in place: ${why(err)}`, 1);
    }
    ok = true;
  } finally {
    if (!ok) {
      try { removeOwned(out.dirFd, out.tmpName, out.tmp); } catch (err) { log.warn((err as Error).message); }
    }
    await removeContainer(b, id, log);
  }
  if (log.verbosity >= 0)
    process.stderr.write(`${PROG}[${process.pid}]: wrote ${out.final} (${(lstatSync(at(out.dirFd, out.file)).size / 1048576).toFixed(1)} MiB)\n`);
  return 0;
}

/** Our temporaries of runs that died (their PID is gone); others' are none of ours. */
function removeDeadTemps(log: Log, out: Output): void {
  for (const e of readdirSync(`/proc/self/fd/${out.dirFd}`)) {
    if (!e.startsWith(out.tmpPrefix)) continue;
    const pid = Number(e.slice(out.tmpPrefix.length).split('.')[0]);
    let st: Stats;
    try { st = lstatSync(at(out.dirFd, e)); } catch { continue; }
    if (st.uid !== myUid() || !Number.isInteger(pid) || pidAlive(pid)) continue;
    log.info(`removing stale temporary ${join(out.outdir, e)}`);
    removeOwned(out.dirFd, e, join(out.outdir, e));
  }
}

/** The entries added to the export: /ch/environment and /ch/metadata.json from CONFIG. */
function chFiles(log: Log, config: ImageConfig): NewEntry[] {
  const env = environmentFile(config.Env);
  for (const s of env.skipped) log.warn(`ENV ${s}: value can't be written to /ch/environment (newline or NUL); skipped`);
  const mtime = Math.floor(Date.now() / 1000);
  return [
    { name: 'ch/', type: 'dir' as const, mode: 0o755, mtime },
    { name: 'ch/environment', type: 'file' as const, mode: 0o644, data: Buffer.from(env.text), mtime },
    { name: 'ch/metadata.json', type: 'file' as const, mode: 0o644, data: Buffer.from(JSON.stringify(config, null, 2) + '\n'), mtime },
  ];
}

/** A builder's export (ARGV) running, its output read from a real pipe. */
interface Export { input: ReadStream; exited: Promise<number>; stderr: () => string; stop: () => Promise<void> }

function startExport(argv: string[]): Export {
  // A real pipe for the export: podman opens /dev/stdout, which fails on Node's socketpairs.
  const [rfd, wfd] = pipe();
  let child;
  try {
    child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', wfd, 'pipe'] });
  } finally {
    closeSync(wfd);
  }
  const input = createReadStream('', { fd: rfd, highWaterMark: 1 << 20 });
  const errs: Buffer[] = [];
  child.stderr!.on('data', (d) => errs.push(d));
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', (e) => reject(new ChError(`can't run ${argv[0]}: ${why(e)}`, 1)));
    child.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
  });
  const stop = async () => { child.kill(); input.destroy(); await exited.catch(() => {}); };
  return { input, exited, stderr: () => Buffer.concat(errs).toString(), stop };
}

/** Container ID's export, with EXTRA appended (and gzipped if OUT says), written and fsynced as OUT's temporary. */
async function exportTo(log: Log, b: BuilderName, image: string, id: string, extra: NewEntry[], out: Output): Promise<void> {
  const argv = exportArgv(b, id);
  log.info(`exporting: ${argv.join(' ')}`);
  const x = startExport(argv);
  const stages: NodeJS.ReadWriteStream[] = [new TarAppender(extra)];
  if (out.compress) stages.push(createGzip({ level: 6 }));
  let outFd: number;
  try {
    outFd = openSync(at(out.dirFd, out.tmpName), fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o644);
  } catch (err) {
    await x.stop();
    throw new ChError(`${out.outdir}: can't create ${out.tmpName} in it: ${why(err)}`, 1);
  }
  // autoClose off: on success we fsync before closing; a stream destroyed by
  // an error has closed the descriptor itself.
  const output = createWriteStream('', { fd: outFd, autoClose: false });
  try {
    try {
      await pipeline(x.input, ...stages as [NodeJS.ReadWriteStream], output);
    } catch (err) {
      await x.stop();
      const tail = lastLine(x.stderr());
      throw new ChError(`${b}: export of ${image} failed: ${(err as Error).message}${tail ? `: ${tail}` : ''}`, 1);
    }
    const code = await x.exited;
    if (code !== 0) throw new ChError(`${b}: export of ${image} failed (exit ${code}): ${lastLine(x.stderr())}`, 1);
    try { fsyncSync(outFd); } catch (err) { throw new ChError(`${out.tmp}: can't write: ${why(err)}`, 1); }
  } finally {
    if (!output.destroyed) closeSync(outFd);
  }
}

const log = new Log(PROG);
void runMain(log, () => builder2tar(process.argv.slice(2), log));
