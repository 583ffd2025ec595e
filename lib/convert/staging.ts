// ch-convert's output written beside DST, in a directory others may write:
// one conversion to DST at a time (lock DIR/.NAME.ch-convert.lock), made in
// a stage DIR/.NAME.ch-convert-RANDOM, renamed into place and checked there,
// through lib/image/shared-install.ts's steps, as ch-tar2dir and ch-pull
// install theirs; an existing DST replaced only if it is the caller's own:
// a directory only if an image of theirs with a marker (every image tool's
// rule), which a directory output gets too.

import { accessSync, closeSync, constants as fsConstants, fstatSync, lstatSync, mkdirSync, readdirSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ChError, isChError, type Log, why } from '../util/log.js';
import { at, myUid, openDir, openDirAt, ownerName, removePrivateTree, untrusted } from '../util/owned-fs.js';
import { bareReason, existingImage as existingImageOf, IMAGE_KIND, IMAGE_TOOLS_TEXT, IMAGE_MARKER, lockWaitMs, markerText, stageAndRename, stripToolState, underInstallLock,
  type InstallSite, type Placement } from '../image/shared-install.js';
import { tarAddon, useOpenat2 } from '../tar/native.js';
import { removeStaleWork } from './workdir.js';
import { pullToDir, withImage, type PullOptions } from '../pull/pull.js';
import { existingImage } from '../pull/image-dir.js';
import { EXIT_FAIL, PROG, type Format } from './formats.js';
import { checkInterrupted } from './signals.js';
import { produce } from './tools.js';
import { pullTree, pulling, type Source } from './source.js';

/** A registry image as directory DST: ch-pull's own install (atomic; an existing DST replaced only if an image of yours). */
export async function registryToDir(log: Log, from: Source, o: PullOptions, dstArg: string): Promise<number> {
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
export async function toFile(log: Log, from: Source, outFmt: Format, dstArg: string): Promise<number> {
  // The output's directory, held open: every name in it is resolved from this descriptor.
  const dst = resolve(dstArg);
  const name = basename(dst);
  await removeStaleWork(log);   // what killed conversions into a builder (or earlier versions) left in $TMPDIR
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
    // theirs (lib/image/shared-install.ts, whose steps these are).
    const site = { dirFd: parent, dir: dirname(dst), name, tmpPrefix: stagePrefix(name) };
    await underInstallLock(log, site, PROG, { holder: `another ${PROG} of yours`,
      timeoutMs: lockTimeoutMs(), timeoutVar: 'CH_CONVERT_LOCK_TIMEOUT', signal: from.signal,
      onWait: () => log.info(`waiting for another ${PROG} writing ${dst}`) },
    () => stageAndPlace(log, from, outFmt, site, dst), true);
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
  return lockWaitMs('CH_CONVERT_LOCK_TIMEOUT', 3600);
}

/**
 * Under DST's lock: SRC made in a stage beside DST (SITE), then renamed into
 * place and checked there (shared-install.ts's stageAndRename).
 */
async function stageAndPlace(log: Log, from: Source, outFmt: Format, site: InstallSite, dst: string): Promise<void> {
  const { fmt: inFmt, path: src } = from;
  const { dirFd: parent, name } = site;
  // The output and intermediates in a stage made beside DST (a new 0700
  // directory, never someone else's), so the tools we run write where nobody
  // else can, one rename places the output, and a run killed by SIGKILL
  // leaves nothing in $TMPDIR: the next conversion to DST removes its stage.
  await stageAndRename(log, site, async (tmp, stage) => {
    const work = join(stage, 'work');
    mkdirSync(`${tmp}/work`, { mode: 0o700 });
    try {
      const out = join(stage, 'out');
      // 0755 unless the input says otherwise (a tarball's "./"): STAGE is private.
      if (outFmt === 'dir') mkdirSync(out, { mode: 0o755 });
      log.info(`converting ${src} (${inFmt}) to ${dst} (${outFmt})`);
      // A pulled image goes into STAGE too: beside DST, where there is room for it, and private.
      const tree = from.pull ? await pullTree(log, from, join(stage, 'tree')) : src;
      await produce(log, from.pull ? 'dir' : inFmt, tree, outFmt, out, name, work);
      // A directory made from content holds no marker (ch/.ch-*) from it: our
      // tools write their own, for a root of their own (shared-install.ts).
      if (outFmt === 'dir') {
        for (const n of stripToolState(out)) log.info(`${n}: not copied (a marker is ours to write, never content)`);
        writeMarker(log, `${tmp}/out`, src, inFmt);
      }
      await checkInterrupted(from.signal);
      return { sub: 'out', how: placement(parent, name, dst, outFmt) };
    } finally {
      // Through our descriptor of the stage; as root, what tools made there may be anyone's.
      removePrivateTree(`${tmp}/work`);
    }
    // Run as root, unsquashfs and cp -a give the output's root the owner
    // it has in SRC: DST is checked to be what was built, owner and all.
  }, { warnLeftovers: true, ownerFromContent: true,
    cantStage: (err) => new ChError(`can't write ${dst}: ${isChError(err) ? err.message : why(err)}`, EXIT_FAIL) });
}

/**
 * The marker of directory output ROOT (a path through our descriptor): made
 * by ch-convert from SRC (format FMT), so any image tool of the user's may
 * replace it later. Written by the confined writer: the output's /ch is content.
 */
function writeMarker(log: Log, root: string, src: string, fmt: Format): void {
  const content = markerText(PROG, { source: { path: src, format: fmt }, created: new Date().toISOString() }, root);
  for (const f of tarAddon().fixup(root, [{ op: 'dir', path: 'ch' }, { op: 'write', path: IMAGE_MARKER, content }], { openat2: useOpenat2() }))
    log.warn(`can't write /${f.path}: ${f.message}; the output can't be replaced by our tools later`);
}

/**
 * DST may exist only as the caller's own thing of the output's kind; a
 * directory only as an image the caller made with one of our tools (its
 * marker; shared-install.ts's rule), as Charliecloud refuses a directory
 * that does not look like an image.
 */
function checkDestination(parent: number, name: string, dst: string, fmt: Format): void {
  let st: Stats;
  try { st = lstatSync(at(parent, name)); } catch { return; }
  if (st.isSymbolicLink()) throw new ChError(`${dst}: exists as a symlink; not following or replacing it`, EXIT_FAIL);
  if (st.uid !== myUid()) throw new ChError(`${dst}: exists and belongs to ${ownerName(st.uid)}; not replacing it`, EXIT_FAIL);
  if (st.isDirectory() !== (fmt === 'dir'))
    throw new ChError(`${dst}: exists as a ${st.isDirectory() ? 'directory' : 'file'}; not replacing it with a ${fmt === 'dir' ? 'directory' : 'file'}`, EXIT_FAIL);
  if (fmt === 'dir' && !charliecloudReplaceable(parent, name)) existingImageOf(CONVERT_KIND, parent, name, dst);
}

/**
 * A directory of the caller's that ch-convert may replace without our
 * marker, as Charliecloud's ch-convert does (its dir_out_validate): an empty
 * one, or one that looks like an image (bin, dev and usr, real directories),
 * so its scripts that convert over an image they unpacked some other way
 * keep working. Only the caller's own, writable by no one else: anything
 * else goes to existingImage()'s verdict and message.
 */
function charliecloudReplaceable(parent: number, name: string): boolean {
  let fd: number;
  try { fd = openDirAt(parent, name); } catch { return false; }
  try {
    const st = fstatSync(fd);
    if (st.uid !== myUid() || untrusted(st, name)) return false;
    const names = readdirSync(`/proc/self/fd/${fd}`);
    if (names.length === 0) return true;
    return ['bin', 'dev', 'usr'].every((d) => { try { return lstatSync(at(fd, d)).isDirectory(); } catch { return false; } });
  } catch { return false; } finally { closeSync(fd); }
}

/** Every image tool's rule, in Charliecloud's words for a directory that is no image of ours. */
const CONVERT_KIND = { ...IMAGE_KIND,
  refusal: (where: string, reason: string) => `exists but does not appear to be an image: ${where} `
    + `(not made by ${IMAGE_TOOLS_TEXT} of yours: ${bareReason(where, reason)}); not replacing it` };

/**
 * How the output takes NAME: an existing NAME (ours: checked again, as
 * someone may have put something there since) is replaced, a directory by
 * exchange (the old one then goes with the stage).
 */
function placement(parent: number, name: string, dst: string, fmt: Format): Placement {
  checkDestination(parent, name, dst, fmt);
  if (fmt !== 'dir') return 'replace';
  try { lstatSync(at(parent, name)); } catch { return 'noreplace'; }
  return 'exchange';
}
