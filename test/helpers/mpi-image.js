// Debian images with extra packages, built offline from cached .debs, and the
// MPI image: Debian base + Open MPI runtime + the MPI programs of
// examples/mpihello compiled on the host with mpicc (host and image are both
// bookworm, so the host's binaries run in the image once it has libopenmpi3).
//
// The .debs are fetched once with the host's apt, resolved against the image's
// own dpkg status (so exactly what the image lacks), and kept in
// CACHE_DIR/debs/<name>; later builds need no network. Built images are kept
// in CACHE_DIR/images/<name>-<hash of inputs>, world-readable; tests use them
// read-only. A lock directory serializes concurrent builders (ava workers).

import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync }
  from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE_DIR } from './env.js';
import { debianBase } from './images.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../..');
export const MPI_PROGRAMS = ['hello', 'allreduce', 'pingpong'];
export const MPI_SRC = join(repo, 'examples/mpihello');

async function withLock(path, fn) {
  const lock = `${path}.lock`;
  mkdirSync(dirname(lock), { recursive: true });
  for (;;) {
    try { mkdirSync(lock); break; } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      // A lock older than 15 minutes belongs to a dead builder.
      try { if (Date.now() - statSync(lock).mtimeMs > 15 * 60e3) rmSync(lock, { recursive: true, force: true }); }
      catch { /* raced */ }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try { return await fn(); } finally { rmSync(lock, { recursive: true, force: true }); }
}

/** Fetch (or reuse) the .debs PACKAGES need on top of BASE into CACHE_DIR/debs/NAME. */
async function fetchDebs(name, base, packages) {
  const dir = join(CACHE_DIR, 'debs', name);
  const list = join(dir, 'packages.txt');
  if (existsSync(list) && readFileSync(list, 'utf8') === packages.join(' ')) return dir;
  mkdirSync(join(dir, 'partial'), { recursive: true });
  const r = await execa('apt-get', ['-q', '-y', '--download-only', '--no-install-recommends',
    '-o', `Dir::State::status=${join(base, 'var/lib/dpkg/status')}`,
    '-o', `Dir::Cache::archives=${dir}`, '-o', 'Debug::NoLocking=1', 'install', ...packages],
  { reject: false, all: true });
  if (r.exitCode !== 0) throw new Error(`can't download ${packages.join(' ')}: ${r.all.slice(-1500)}`);
  writeFileSync(list, packages.join(' '));
  return dir;
}

/**
 * A Debian image with PACKAGES installed, plus FILES ({ '/path': Buffer|string, mode }) and BUILD(dir) hook.
 * Returns { dir } or { reason } when it can't be built here (not root, no Debian base, no .debs).
 */
export async function debImage(name, packages, { files = {}, key = '', build } = {}) {
  if (process.getuid() !== 0) return { reason: 'building Debian images needs root (dpkg in a chroot)' };
  const base = await debianBase(CACHE_DIR);
  if (!base) return { reason: 'no Debian base image (debootstrap unavailable or failed)' };
  const hash = createHash('sha256').update(JSON.stringify([packages, key, Object.entries(files)]))
    .digest('hex').slice(0, 12);
  const out = join(CACHE_DIR, 'images', `${name}-${hash}`);
  if (existsSync(join(out, '.complete'))) return { dir: out };
  return withLock(out, async () => {
    if (existsSync(join(out, '.complete'))) return { dir: out };
    let debs;
    try { debs = await fetchDebs(name, base, packages); } catch (err) { return { reason: err.message }; }
    const tmp = `${out}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    await execa('cp', ['-a', base, tmp]);
    rmSync(join(tmp, '.complete'), { force: true });
    const inst = join(tmp, 'var/cache/ch-debs');
    mkdirSync(inst, { recursive: true });
    const names = readdirSync(debs).filter((f) => f.endsWith('.deb'));
    if (names.length > 0) {
      await execa('cp', [...names.map((f) => join(debs, f)), inst]);
      const r = await execa('chroot', [tmp, 'sh', '-c', // A batch can fail on Pre-Depends between its own packages (python3 ->
        // python3-minimal -> python3.11-minimal): each pass configures one more level.
        'for i in 1 2 3 4 5; do dpkg -i /var/cache/ch-debs/*.deb >/var/cache/ch-debs/log 2>&1 && exit 0; done; '
          + 'cat /var/cache/ch-debs/log; exit 1'],
        { reject: false, all: true, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive',
          LANG: 'C.UTF-8' }, extendEnv: false });
      if (r.exitCode !== 0) throw new Error(`dpkg -i in image ${name} failed:\n${r.all.slice(-3000)}`);
    }
    rmSync(inst, { recursive: true, force: true });
    for (const [path, content] of Object.entries(files)) {
      const p = join(tmp, path);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, content.data ?? content, { mode: content.mode ?? 0o644 });
    }
    if (build) await build(tmp);
    await execa('chmod', ['-R', 'a+rX', tmp]);
    writeFileSync(join(tmp, '.complete'), '');
    rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
    return { dir: out };
  });
}

/** Compile examples/mpihello's programs with the host's mpicc into DEST/NAME. */
export async function compileMpiPrograms(dest) {
  for (const p of MPI_PROGRAMS)
    await execa('mpicc', ['-O2', '-Wall', '-o', join(dest, p), join(MPI_SRC, `${p}.c`)]);
}

/** The MPI image: { dir } with /hello, /allreduce, /pingpong, or { reason }. */
export async function mpiImage() {
  const { exitCode } = await execa('sh', ['-c', 'command -v mpicc'], { reject: false });
  if (exitCode !== 0) return { reason: 'mpicc not installed on the host (libopenmpi-dev)' };
  const src = MPI_PROGRAMS.map((p) => readFileSync(join(MPI_SRC, `${p}.c`), 'utf8')).join('\0');
  const { stdout: mpiv } = await execa('mpicc', ['--showme:version'], { reject: false });
  // What examples/mpihello's Dockerfile installs at run time. openmpi-bin
  // matters beyond mpirun: it owns Debian's /etc/openmpi/openmpi-mca-params.conf
  // (pml ^ucx, mtl ^ofi), without which Open MPI takes libfabric's TCP path
  // between local ranks (~14x the latency of shared memory here).
  return debImage('mpi', ['libopenmpi3', 'openmpi-common', 'openmpi-bin'], {
    key: createHash('sha256').update(src + mpiv).digest('hex'),
    build: async (dir) => compileMpiPrograms(dir),
  });
}

/** The Dask image (examples/dask): Debian's python3-distributed and /pi.py. */
export async function daskImage() {
  return debImage('dask', ['python3-distributed'],
    { files: { '/pi.py': readFileSync(join(repo, 'examples/dask/pi.py'), 'utf8') } });
}
