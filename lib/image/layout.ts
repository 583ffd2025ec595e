// The image layout ch-run relies on: the directories it mounts on and the
// files it binds over. ch-tar2dir (and whatever else makes an image directory)
// creates them, so that ch-run works on a read-only image; ch-run's planner
// checks the same lists. One definition, so the two can't drift apart.

/** Directories ch-run mounts on, relative to the image root (parents first). */
export const MOUNT_DIRS = [
  'dev', 'proc', 'sys', 'tmp', 'home', 'mnt', 'etc', 'ch', 'run',
  'var', 'var/spool', 'var/spool/slurmd',
];

/** Default destinations of `ch-run -b SRC` when the image lacks SRC: /mnt/0 .. /mnt/9. */
export const MNT_SLOTS = 10;

/** Files ch-run binds over (from the host, or generated), relative to the image root. */
export const MOUNT_FILES = ['etc/hosts', 'etc/resolv.conf', 'etc/passwd', 'etc/group'];

/** Every directory an unpacked image must have, /mnt/N included. */
export function imageDirs(): string[] {
  return [...MOUNT_DIRS, ...Array.from({ length: MNT_SLOTS }, (_, i) => `mnt/${i}`)];
}
