// The conversions themselves: the tools ch-convert runs (tar, mksquashfs,
// unsquashfs, cp, ch-builder2tar) and our own extractor, from SRC in one
// format to a new file or directory in another, in directories only we can
// enter. No output keeps a setuid or setgid bit.

import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { closeSync, fchmodSync, openSync, constants as fsConstants, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ChError, type Log, why } from '../util/log.js';
import { PKG_ROOT } from '../util/paths.js';
import { Progress } from '../util/progress.js';
import { extract } from '../tar/extract.js';
import { tarAddon } from '../tar/native.js';
import { TAR_COMPRESSION } from '../image/names.js';
import { BUILDERS, EXIT_FAIL, PROG, type Format } from './formats.js';

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
  const comp = TAR_COMPRESSION.find(([e]) => dstName.endsWith(e))?.[1];
  // --mode: no member carries a setuid or setgid bit (a source tree of the user's may have them).
  run(log, ['tar', '--create', '--file', out, '--directory', src, '--numeric-owner', '--mode=ug-s', ...(comp ? [`--${comp}`] : []), '.']);
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

/** Write SRC (format IN) as OUT (format OUTFMT) at TMP; intermediates in WORK. */
export async function produce(log: Log, inFmt: Format, src: string, outFmt: Format, tmp: string, name: string, work: string): Promise<void> {
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
