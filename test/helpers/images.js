// Test images, built hermetically from what the host has: no network at test
// time. busybox: the host's statically linked busybox (Debian's and Ubuntu's
// busybox-static, Fedora's busybox, ...) plus the mount points ch-run needs.
// debian: debootstrap --variant=minbase, built once into CACHE_DIR (it needs
// the Debian mirror, which CI's setup reaches) and copied from there.

import { execa } from 'execa';
import { chmodSync, closeSync, cpSync, existsSync, mkdirSync, openSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const MOUNT_POINTS = ['dev', 'proc', 'sys', 'tmp', 'etc', 'home', 'root', 'mnt', 'ch', 'var/spool/slurmd', 'usr/bin'];
const APPLETS = ['sh', 'ls', 'cat', 'echo', 'id', 'pwd', 'readlink', 'env', 'sleep', 'true', 'false', 'touch',
  'mount', 'umount', 'grep', 'mkdir', 'rm', 'stat', 'head', 'wc', 'printf', 'test', 'kill', 'ps', 'chroot',
  'mknod', 'nc', 'hostname', 'ln', 'cp', 'sed', 'tr', 'cut', 'sort', 'uniq', 'find', 'xargs', 'basename',
  'dirname', 'date', 'seq', 'awk', 'expr', 'nproc', 'ulimit', 'chmod', 'dd', 'od', 'uname', 'whoami'];

/** Is FILE an ELF executable without a program interpreter (statically linked)? */
export function isStaticElf(file) {
  let fd;
  try { fd = openSync(file, 'r'); } catch { return false; }
  try {
    const h = Buffer.alloc(64);
    if (readSync(fd, h, 0, 64, 0) < 64 || h.readUInt32BE(0) !== 0x7f454c46) return false;
    const is64 = h[4] === 2, le = h[5] === 1;
    const u16 = (b, o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b, o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const phoff = is64 ? Number(le ? h.readBigUInt64LE(32) : h.readBigUInt64BE(32)) : u32(h, 28);
    const phentsize = u16(h, is64 ? 54 : 42), phnum = u16(h, is64 ? 56 : 44);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (u32(ph, i * phentsize) === 3) return false;   // PT_INTERP
    return true;
  } finally { closeSync(fd); }
}

/** The host's statically linked busybox, wherever this distribution puts it. */
export function staticBusybox() {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/bin', '/usr/bin', '/sbin', '/usr/sbin', '/usr/lib/busybox'];
  const tried = [...new Set(dirs.filter((d) => d.startsWith('/')).map((d) => join(d, 'busybox')))];
  const found = tried.find(isStaticElf);
  if (!found)
    throw new Error(`no statically linked busybox found (tried ${tried.join(' ')}): install busybox-static `
      + "(Debian, Ubuntu) or your distribution's static busybox");
  return found;
}

/** Minimal image: a static busybox and the standard mount points. */
export function buildBusybox(dir) {
  const busybox = staticBusybox();
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['bin', ...MOUNT_POINTS]) mkdirSync(join(dir, d), { recursive: true });
  for (let n = 0; n < 10; n++) mkdirSync(join(dir, 'mnt', String(n)));
  cpSync(busybox, join(dir, 'bin/busybox'));
  for (const a of APPLETS) symlinkSync('busybox', join(dir, 'bin', a));
  for (const f of ['passwd', 'group', 'hosts', 'resolv.conf', 'machine-id']) writeFileSync(join(dir, 'etc', f), '');
  writeFileSync(join(dir, 'etc/os-release'), 'PRETTY_NAME="ch-toolkit busybox test image"\nID=busybox\n');
  writeFileSync(join(dir, 'ch/environment'), "FROM_IMAGE=yes\nIMG_PATH='/opt/bin:$PATH'\n");
  writeFileSync(join(dir, 'ch/metadata.json'), JSON.stringify({ Entrypoint: ['/bin/echo'], Cmd: ['default', 'cmd'], WorkingDir: '/tmp' }));
  chmodSync(join(dir, 'tmp'), 0o1777);
}

/** debootstrap minbase, cached as a directory in CACHE_DIR; null if it can't be made here. */
export async function debianBase(cacheDir) {
  const dir = join(cacheDir, 'debian-bookworm');
  if (existsSync(join(dir, '.complete'))) return dir;
  if (process.getuid() !== 0) return null;
  const { exitCode: have } = await execa('sh', ['-c', 'command -v debootstrap'], { reject: false });
  if (have !== 0) return null;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(cacheDir, { recursive: true });
  const r = await execa('debootstrap', ['--variant=minbase', 'bookworm', dir, 'http://deb.debian.org/debian'],
    { reject: false, all: true });
  if (r.exitCode !== 0) {
    process.stderr.write(`debootstrap failed; Debian-image tests will be skipped:\n${r.all.slice(-2000)}\n`);
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
  rmSync(join(dir, 'var/cache/apt/archives'), { recursive: true, force: true });
  mkdirSync(join(dir, 'var/cache/apt/archives/partial'), { recursive: true });
  writeFileSync(join(dir, '.complete'), '');
  return dir;
}
