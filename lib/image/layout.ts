// The image layout ch-run relies on: the directories it mounts on and the
// files it binds over. ch-tar2dir and ch-pull (and whatever else makes an
// image directory) create them, so that ch-run works on a read-only image;
// ch-run's planner (container/mounts.ts) takes its mount points from the same
// lists. One definition, so the two can't drift apart. Paths are relative to
// the image root; ch-run's planner makes them absolute with guestPath().

/** Host trees ch-run binds recursively at their own paths. */
export const HOST_TREES = ['dev', 'proc', 'sys'];

/**
 * The directories every container needs (the host trees and /tmp): ch-run
 * refuses an image without them, as not an image or unpacked incompletely.
 */
export const REQUIRED_DIRS = [...HOST_TREES, 'tmp'];

/** Slurm's default spool directory: bound where host and image both have it. */
export const SLURM_SPOOL = 'var/spool/slurmd';

/** Directories ch-run mounts on (parents first): the required ones first. */
export const MOUNT_DIRS = [
  ...REQUIRED_DIRS, 'home', 'mnt', 'etc', 'ch', 'run',
  'var', 'var/spool', SLURM_SPOOL,
];

/** Default destinations of `ch-run -b SRC` when the image lacks SRC: /mnt/0, /mnt/1, ... */
export const MNT_SLOTS = 10;

/** The Nth default --bind destination. */
export function mntSlot(n: number): string {
  return `mnt/${n}`;
}

/** Files ch-run binds read-only from the host. */
export const HOST_FILES = ['etc/hosts', 'etc/resolv.conf'];

/** Host files ch-run binds only where the image already has them (never created: an empty one means something). */
export const OPTIONAL_HOST_FILES = ['etc/machine-id'];

/** Files ch-run generates and binds over (unless --no-passwd). */
export const GENERATED_FILES = { passwd: 'etc/passwd', group: 'etc/group' };

/** Files ch-run binds over (from the host, or generated), made by whatever unpacks an image. */
export const MOUNT_FILES = [...HOST_FILES, GENERATED_FILES.passwd, GENERATED_FILES.group];

/** Every directory an unpacked image must have, /mnt/N included. */
export function imageDirs(): string[] {
  return [...MOUNT_DIRS, ...Array.from({ length: MNT_SLOTS }, (_, i) => mntSlot(i))];
}

/** A layout path as the absolute path a container sees. */
export function guestPath(p: string): string {
  return `/${p}`;
}
