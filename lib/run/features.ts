// ch-run --feature=FEAT: does this build, on this kernel and host, support
// FEAT? Exit 0 if so, 1 if not (as Charliecloud's ch-run), the reason with -v.
// Each feature is one entry of FEATURES; other features add their own.

import { constants as C, type Host } from '../container/host.js';
import { FUSE_DEV, onPath, SQUASHFUSE } from '../container/squash.js';

/** Kernel release at least MAJOR.MINOR? */
export function kernelAtLeast(major: number, minor: number, rel: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  return m !== null && (Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor));
}

/** null: supported; else why not. */
export const FEATURES: Record<string, (host: Host) => string | null> = {
  // --unset-env globs: ?(..) *(..) +(..) @(..) !(..) (glob.ts), always.
  extglob: () => null,
  // --seccomp: the kernel has seccomp filters.
  seccomp: (host) => {
    try { return /^Seccomp:\s/m.test(host.readFile('/proc/self/status', 'utf8')) ? null : 'kernel without seccomp'; }
    catch (err) { return `can't read /proc/self/status: ${(err as NodeJS.ErrnoException).code}`; }
  },
  // ch-run IMAGE.sqfs: squashfuse, a FUSE device we may open, FUSE mounts in a
  // user namespace (4.18); without pidfd_open(2) (< 5.3) the core's keeper
  // watches /proc instead (native/core/squash.c).
  squash: (host) => {
    if (onPath(host, SQUASHFUSE) === null) return 'squashfuse not found on PATH';
    try { host.access(FUSE_DEV, C.R_OK | C.W_OK); } catch (err) {
      return `${FUSE_DEV} not usable: ${(err as NodeJS.ErrnoException).code}`;
    }
    return kernelAtLeast(4, 18, host.release()) ? null : `kernel ${host.release()} lacks unprivileged FUSE mounts (needs 4.18)`;
  },
  // -W: unprivileged overlayfs in a user namespace (5.11).
  overlayfs: (host) => (kernelAtLeast(5, 11, host.release()) ? null : `kernel ${host.release()} lacks unprivileged overlayfs (needs 5.11)`),
};
