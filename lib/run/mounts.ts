// Which host paths the container sees, and where: Charliecloud's default view
// plus the user's --bind and --home. Order matters; the core applies it as is.

import { statSync } from 'node:fs';
import { ChError, Log, why } from '../util/log.js';
import { createInImage, createInOverlay, kindInImage } from './image.js';
import type { Bind, RunOptions } from './options.js';
import { groupFile, Identity, passwdFile } from './passwd.js';
import type { MountOp } from './plan.js';

/** Files shared with the host read-only, when both host and image have them. */
const HOST_FILES = ['/etc/hosts', '/etc/resolv.conf', '/etc/machine-id'];

export interface MountContext {
  root: string;
  opts: RunOptions;
  id: Identity;
  log: Log;
  env: Map<string, string>;
  /** Device and driver mounts (--gpu, --ib): before the user's binds, which may target /run or /dev. */
  devices?: MountOp[];
}

/** The mount points every container needs: checked first, for a clear error on a non-image. */
export function requireMountPoints(root: string): void {
  for (const d of ['/dev', '/proc', '/sys', '/tmp'])
    if (kindInImage(root, d) !== 'dir')
      throw new ChError(`can't use image ${root}: it has no ${d} directory (not an image, or unpacked incompletely?)`);
}

/** The mounts, in order; the image has passed requireMountPoints(). */
export function defaultMounts(ctx: MountContext): MountOp[] {
  const { root, opts } = ctx;
  const ops: MountOp[] = [];
  for (const d of ['/dev', '/proc', '/sys'])
    ops.push({ kind: 'bind', src: d, dst: d, flags: ['rec'] });
  for (const f of HOST_FILES)
    ops.push({ kind: 'bind', src: f, dst: f, flags: ['ro', 'nosuid', 'nodev', 'optional', 'srcopt'] });
  if (!opts.noPasswd) {
    ops.push({ kind: 'file', content: passwdFile(ctx.id), dst: '/etc/passwd', flags: ['ro', 'optional'] });
    ops.push({ kind: 'file', content: groupFile(ctx.id), dst: '/etc/group', flags: ['ro', 'optional'] });
  }
  // Slurm's spool holds the PMI/PMIx rendezvous sockets of the step.
  ops.push({ kind: 'bind', src: '/var/spool/slurmd', dst: '/var/spool/slurmd', flags: ['rec', 'optional', 'srcopt'] });
  if (opts.privateTmp) {
    ops.push({ kind: 'tmpfs', options: 'mode=1777', dst: '/tmp', flags: [] });
  } else {
    // Charliecloud shares $TMPDIR (the job's scratch under many Slurm setups) at /tmp.
    const tmpdir = ctx.env.get('TMPDIR');
    const src = tmpdir && isDir(tmpdir) ? tmpdir : '/tmp';
    ops.push({ kind: 'bind', src, dst: '/tmp', flags: ['rec'] });
  }
  if (opts.home) ops.push(...homeMounts(ctx));
  ops.push(...(ctx.devices ?? []));
  ops.push(...userBinds(ctx));
  return ops;
}

function isDir(p: string): boolean {
  try { return statSync(p).isDirectory(); } catch { return false; }
}

function homeMounts(ctx: MountContext): MountOp[] {
  const home = ctx.env.get('HOME');
  if (!home) throw new ChError('--home: $HOME is not set');
  if (!isDir(home)) throw new ChError(`--home: $HOME is not a directory: ${home}`);
  if (kindInImage(ctx.root, '/home') !== 'dir')
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
  if (kindInImage(ctx.root, b.src) !== null) return b.src;
  for (let n = 0; ; n++) {
    const cand = `/mnt/${n}`;
    const kind = kindInImage(ctx.root, cand);
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
  for (const b of ctx.opts.binds) {
    let st;
    try {
      st = statSync(b.src);
    } catch (err) {
      throw new ChError(`can't bind ${b.src}: source: ${why(err)}`);
    }
    let dst = b.dst;
    if (dst === null) {
      dst = defaultDst(ctx, b, used);
      ctx.log.info(`bind ${b.src} -> ${dst}${dst !== b.src ? ' (no such path in image)' : ''}`);
    }
    const kind = kindInImage(ctx.root, dst);
    if (kind === null && ctx.opts.writeFake !== undefined) {
      ops.push(...createInOverlay(dst, !st.isDirectory()));   // -W: the core creates it, in the overlay
    } else if (kind === null) {
      if (!ctx.opts.writable)
        throw new ChError(`can't bind ${b.src} to ${dst}: ${dst} doesn't exist in read-only image ${ctx.root} `
          + '(create it in the image, or use -w)');
      createInImage(ctx.root, dst, !st.isDirectory());
    } else if (st.isDirectory() !== (kind === 'dir')) {
      throw new ChError(`can't bind ${b.src} to ${dst}: ${st.isDirectory() ? 'directory' : 'file'} onto `
        + `${kind === 'dir' ? 'directory' : 'file'}`);
    }
    used.add(dst);
    ops.push({ kind: 'bind', src: b.src, dst, flags: b.readonly ? ['rec', 'ro'] : ['rec'] });
  }
  return ops;
}
