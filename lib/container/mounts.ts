// Which host paths the container sees, and where: Charliecloud's default view
// plus the user's --bind and --home. Order matters; the core applies it as is.

import type { Host } from './host.js';
import { ChError, Log, why } from '../util/log.js';
import { createOps, kindInImage, resolveInImage } from './image.js';
import { LauncherDir, launcherDirs } from './mpi-env.js';
import { groupFile, Identity, passwdFile } from './passwd.js';
import type { MountOp } from './plan.js';
import * as layout from '../image/layout.js';
import { guestPath } from '../image/layout.js';

/** Files shared with the host read-only, when both host and image have them. */
const HOST_FILES = [...layout.HOST_FILES, ...layout.OPTIONAL_HOST_FILES].map(guestPath);

/** A --bind: SRC at DST (null: SRC's own path, else the next free /mnt/N); SPEC as given, for messages. */
export interface Bind { src: string; dst: string | null; readonly: boolean; spec: string }

/** What of ch-run's options the mounts depend on (ch-run's RunOptions has them all). */
export interface MountOptions {
  binds: Bind[];
  noPasswd: boolean;
  privateTmp: boolean;
  home: boolean;
  writable: boolean;
  writeFake?: string;
}

export interface MountContext {
  host: Host;
  root: string;
  opts: MountOptions;
  id: Identity;
  log: Log;
  env: Map<string, string>;
  /** Device and driver mounts (--gpu, --ib): before the user's binds, which may target /run or /dev. */
  devices?: MountOp[];
}

/** The mount points every container needs: checked first, for a clear error on a non-image. */
export function requireMountPoints(host: Host, root: string): void {
  for (const d of layout.REQUIRED_DIRS.map(guestPath))
    if (kindInImage(host, root, d) !== 'dir')
      throw new ChError(`can't use image ${root}: it has no ${d} directory (not an image, or unpacked incompletely?)`);
}

/** The mounts, in order; the image has passed requireMountPoints(). */
export function defaultMounts(ctx: MountContext): MountOp[] {
  const { root, opts } = ctx;
  const ops: MountOp[] = [];
  for (const d of layout.HOST_TREES.map(guestPath))
    ops.push({ kind: 'bind', src: d, dst: d, flags: ['rec'] });
  for (const f of HOST_FILES)
    ops.push({ kind: 'bind', src: f, dst: f, flags: ['ro', 'nosuid', 'nodev', 'optional', 'srcopt'] });
  if (!opts.noPasswd) {
    ops.push({ kind: 'file', content: passwdFile(ctx.id), dst: guestPath(layout.GENERATED_FILES.passwd), flags: ['ro', 'optional'] });
    ops.push({ kind: 'file', content: groupFile(ctx.id), dst: guestPath(layout.GENERATED_FILES.group), flags: ['ro', 'optional'] });
  }
  // Slurm's default spool (ch-tar2dir makes the mount point, as Charliecloud
  // does). Decided here rather than left optional to the core: whether it is
  // there tells launcherDirMounts what the container sees of the spool. Only
  // inside a Slurm job: outside one nothing there is the launch's, and its
  // plan must not depend on Slurm's state (a memoized plan would miss, or
  // fail the suite's verify mode, whenever a slurmd started beside it).
  const spool = guestPath(layout.SLURM_SPOOL);
  if (ctx.env.has('SLURM_JOB_ID') && isDir(ctx.host, spool) && kindInImage(ctx.host, root, spool) === 'dir')
    ops.push({ kind: 'bind', src: spool, dst: spool, flags: ['rec'] });
  if (opts.privateTmp) {
    ops.push({ kind: 'tmpfs', options: 'mode=1777', dst: '/tmp', flags: [] });
  } else {
    // Charliecloud shares $TMPDIR (the job's scratch under many Slurm setups) at /tmp.
    const tmpdir = ctx.env.get('TMPDIR');
    const src = tmpdir && isDir(ctx.host, tmpdir) ? tmpdir : '/tmp';
    ops.push({ kind: 'bind', src, dst: '/tmp', flags: ['rec'] });
  }
  if (opts.home) ops.push(...homeMounts(ctx));
  ops.push(...(ctx.devices ?? []));
  ops.push(...userBinds(ctx));
  // Last, so that no other mount hides them, and they see what the others made.
  for (const d of launcherDirs(ctx.host, ctx.env, ctx.host.uid(), (m) => ctx.log.info(m)))
    ops.push(...launcherDirMounts(ctx, d, ops));
  return ops;
}

/** Absolute path P's ancestors and P, from the root down: /a/b -> ['/', '/a', '/a/b']. */
function prefixes(p: string): string[] {
  const out = ['/'];
  for (const c of p.split('/').filter(Boolean)) out.push(`${out.length > 1 ? out[out.length - 1] : ''}/${c}`);
  return out;
}

const isUnder = (p: string, d: string) => p === d || p.startsWith(d === '/' ? '/' : d + '/');

/**
 * Show host directory D at its own path inside: the launcher handed the
 * ranks that path, so no other place will do. Nothing if a same-path bind
 * already shows it. Otherwise it needs a mount point: the image's own
 * directory; or a tmpfs we mounted (private /tmp, /home) to create one in;
 * or, where the image lacks the path, a tmpfs over the deepest ancestor the
 * image has, if that is empty there (/var/tmp, /mnt, /srv usually are).
 * With -w the path is created in the image. Otherwise ch-run does without
 * it (D.ifHidden: environment defaults for the ranks), and says so with -v.
 */
function launcherDirMounts(ctx: MountContext, d: LauncherDir, before: MountOp[]): MountOp[] {
  const { root, log } = ctx;
  const bind: MountOp = { kind: 'bind', src: d.path, dst: d.path, flags: ['rec'] };
  const fail = (reason: string): MountOp[] => {
    log.info(`can't show ${d.what} ${d.path} in the container: ${reason}; ${d.ifHidden(ctx.env)}`);
    return [];
  };
  // The last earlier mount at or above the path decides what is there.
  const over = [...before].reverse().find((m) => m.kind !== 'file' && m.kind !== 'mkfile' && isUnder(d.path, m.dst));
  if (over && over.dst !== '/') {
    if (over.kind === 'bind' && over.src === over.dst) {
      log.info(`${d.what} ${d.path}: visible through bind ${over.src}`);
      return [];
    }
    if (over.kind === 'tmpfs' || over.kind === 'mkdir') {
      log.info(`${d.what} ${d.path}: bound at its own path, mount point made in tmpfs ${over.dst}`);
      return [...mkdirs(over.dst, d.path), bind];
    }
    return fail(`${over.dst} inside is ${over.kind === 'bind' ? `host ${over.src}` : 'another mount'}, not the host's`);
  }
  const kind = kindInImage(ctx.host, root, d.path);
  if (kind === 'dir') {
    log.info(`${d.what} ${d.path}: bound at its own path`);
    return [bind];
  }
  if (kind !== null) return fail(`it is a ${kind === 'file' ? 'file' : 'special file'} in image ${root}`);
  // The deepest directory the image has on the way, and the first component it lacks.
  const chain = prefixes(d.path);
  let i = 0;
  while (i + 1 < chain.length && kindInImage(ctx.host, root, chain[i + 1]) === 'dir') i++;
  const have = chain[i], missing = chain[i + 1];
  if (kindInImage(ctx.host, root, missing) !== null) return fail(`${missing} in image ${root} is not a directory`);
  if (ctx.opts.writable) {
    log.info(`${d.what} ${d.path}: bound at its own path, created in writable image`);
    return [...createOps(ctx.host, d.path, false, root), bind];
  }
  if (have === '/')
    return fail(`image ${root} has no ${missing} to mount it on (create ${missing} in the image, or use -w)`);
  if (!emptyInImage(ctx, have))
    return fail(`image ${root} lacks ${missing}, and ${have} there is not empty to cover with a tmpfs `
      + `(create ${missing} in the image, or use -w)`);
  const mode = (ctx.host.stat(resolveInImage(ctx.host, root, have)!).mode & 0o7777).toString(8);
  log.info(`${d.what} ${d.path}: bound at its own path, mount point made in a tmpfs over the image's empty ${have}`);
  return [{ kind: 'tmpfs', options: `mode=0${mode}`, dst: have, flags: [] }, ...mkdirs(have, d.path), bind];
}

/** mkdir ops for the directories below FROM down to P (FROM exists). */
function mkdirs(from: string, p: string): MountOp[] {
  return prefixes(p).filter((q) => q.length > from.length && isUnder(q, from))
    .map((q) => ({ kind: 'mkdir', mode: 0o755, dst: q, flags: [] }));
}

/** Can a tmpfs cover image directory DIR without hiding anything? (The image's own entries can't be
    bound back: the tmpfs shadows the image's host path too, through the image's self-bind.) */
function emptyInImage(ctx: MountContext, dir: string): boolean {
  const found = resolveInImage(ctx.host, ctx.root, dir);
  try { return found !== null && ctx.host.readdir(found).length === 0; } catch { return false; }
}

function isDir(host: Host, p: string): boolean {
  try { return host.stat(p).isDirectory(); } catch { return false; }
}

function homeMounts(ctx: MountContext): MountOp[] {
  const home = ctx.env.get('HOME');
  if (!home) throw new ChError('--home: $HOME is not set');
  if (!isDir(ctx.host, home)) throw new ChError(`--home: $HOME is not a directory: ${home}`);
  if (kindInImage(ctx.host, ctx.root, '/home') !== 'dir')
    throw new ChError(`--home: image ${ctx.root} has no /home directory to mount over`);
  const dst = `/home/${ctx.id.user}`;
  return [
    // A tmpfs hides the image's /home and gives a place for the mount point.
    { kind: 'tmpfs', options: 'mode=0755', dst: '/home', flags: [] },
    { kind: 'mkdir', mode: 0o755, dst, flags: [] },
    { kind: 'bind', src: home, dst, flags: ['rec'] },
  ];
}

/** Where a --bind without DST goes: SRC's own path, else the next free /mnt/N. */
function defaultDst(ctx: MountContext, b: Bind, used: Set<string>): string {
  if (kindInImage(ctx.host, ctx.root, b.src) !== null) return b.src;
  for (let n = 0; ; n++) {
    const cand = guestPath(layout.mntSlot(n));
    const kind = kindInImage(ctx.host, ctx.root, cand);
    if (kind === null)
      throw new ChError(`can't bind ${b.src}: neither ${b.src} nor a free /mnt/N `
        + `(${used.size > 0 ? 'used: ' + [...used].filter((u) => u.startsWith('/mnt/')).join(' ') + '; ' : ''}`
        + `tried up to ${cand}) exists in image ${ctx.root}`);
    if (!used.has(cand) && kind === 'dir') return cand;
  }
}

function userBinds(ctx: MountContext): MountOp[] {
  const ops: MountOp[] = [];
  const used = new Set<string>();
  const usedBy = new Map<string, string>();   // destination -> the --bind that took it
  for (const b of ctx.opts.binds) {
    let st;
    try {
      st = ctx.host.stat(b.src);
    } catch (err) {
      throw new ChError(`can't bind ${b.src}: source: ${why(err)}`);
    }
    let dst = b.dst;
    if (dst === null) {
      dst = defaultDst(ctx, b, used);
      // A surprise worth a line unless -q: the data is not where the user will look.
      if (dst !== b.src && !st.isDirectory())
        throw new ChError(`can't bind file ${b.src}: no such path in image ${ctx.root}, and /mnt/N are `
          + `directories: give a destination, e.g. -b ${b.src}:/path/in/image`);
      if (dst !== b.src) ctx.log.warn(`--bind ${b.src}: no such path in image; bound at ${dst}`);
      else ctx.log.info(`bind ${b.src} -> ${dst}`);
    }
    // Charliecloud accepts this (its own tests do it): the later bind is
    // mounted over the earlier one and wins. Worth a note, not an error.
    if (usedBy.has(dst))
      ctx.log.info(`--bind: '${b.spec}' is mounted over '${usedBy.get(dst)}' at ${dst} (the later bind wins)`);
    const kind = kindInImage(ctx.host, ctx.root, dst);
    if (kind === null) {
      // The core creates it (-W: in the overlay; -w: in the image), confined to
      // the container's root as every mount destination is: planning writes nothing.
      if (!ctx.opts.writable && ctx.opts.writeFake === undefined)
        throw new ChError(`can't bind ${b.src} to ${dst}: ${dst} doesn't exist in read-only image ${ctx.root} `
          + '(create it in the image, or use -w or -W)');
      ops.push(...createOps(ctx.host, dst, !st.isDirectory(), ctx.opts.writable ? ctx.root : undefined));
    } else if (st.isDirectory() !== (kind === 'dir')) {
      const hint = b.dst === null && !st.isDirectory()
        ? ` (a file needs a file to mount on: give one, e.g. -b ${b.src}:/path/in/image${b.readonly ? ':ro' : ''})` : '';
      throw new ChError(`can't bind ${b.src} to ${dst}: ${st.isDirectory() ? 'directory' : 'file'} onto `
        + `${kind === 'dir' ? 'directory' : 'file'}${hint}`);
    }
    used.add(dst);
    usedBy.set(dst, b.spec);
    ops.push({ kind: 'bind', src: b.src, dst, flags: b.readonly ? ['rec', 'ro'] : ['rec'] });
  }
  return ops;
}
