// Run by `npm test` before ava: create the unprivileged test user (when root),
// stage the built package and the test images where that user can reach them.

import { execa } from 'execa';
import { chmodSync, cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE_DIR, IMAGES, isRoot, PKG, prepareTestDirs, TEST_DIR, TEST_USER } from './helpers/env.js';
import { buildBusybox, debianBase } from './helpers/images.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');

async function ensureUser() {
  if (!isRoot) return;
  const { exitCode } = await execa('id', [TEST_USER], { reject: false });
  if (exitCode !== 0) await execa('useradd', ['--create-home', '--shell', '/bin/sh', TEST_USER]);
}

function stagePackage() {
  rmSync(PKG, { recursive: true, force: true });
  mkdirSync(PKG, { recursive: true });
  for (const p of ['package.json', 'bin', 'dist', 'build/Release', 'share', 'node_modules']) {
    if (!existsSync(join(repo, p))) continue;
    cpSync(join(repo, p), join(PKG, p), { recursive: true, dereference: false, verbatimSymlinks: true,
      filter: (src) => !src.includes('/build/Release/obj.target') && !src.includes('/.deps') });
  }
}

/**
 * Not root: copy what we may read of the cached Debian tree (root made it).
 * Left out: what only root may read (/etc/shadow, /root, ...) and the device
 * nodes, which only root can make. Enough for tests running as a user.
 */
async function copyReadable(src, dst) {
  mkdirSync(dst);
  const r = await execa('sh', ['-c', 'tar -C "$1" --exclude=./dev/* --ignore-failed-read -cf - . 2>/dev/null'
    + ' | tar -C "$2" --no-same-owner -xf -', 'sh', src, dst], { reject: false, all: true });
  if (r.exitCode !== 0) throw new Error(`can't copy ${src} to ${dst}: ${r.all}`);
  process.stdout.write(`test setup: not root: Debian image copied without what only root may read, and no device nodes\n`);
}

/** Unprivileged FUSE (ch-run IMAGE.sqfs) needs /dev/fuse 0666, as distributions ship it;
    this machine kind has it 0600. */
async function fuseForUsers() {
  if (isRoot && existsSync('/dev/fuse')) chmodSync('/dev/fuse', 0o666);
}

async function main() {
  await ensureUser();
  await fuseForUsers();
  try { prepareTestDirs(); } catch (err) { process.stderr.write(`test setup: ${err.message}\n`); process.exit(1); }
  stagePackage();
  mkdirSync(IMAGES, { recursive: true });
  buildBusybox(join(IMAGES, 'busybox'));
  const deb = await debianBase(CACHE_DIR);
  if (deb) {
    rmSync(join(IMAGES, 'debian'), { recursive: true, force: true });
    if (isRoot) await execa('cp', ['-a', deb, join(IMAGES, 'debian')]);
    else await copyReadable(deb, join(IMAGES, 'debian'));
  }
  // World-readable, so the test user can run everything staged here.
  await execa('chmod', ['-R', 'a+rX', TEST_DIR]);
  process.stdout.write(`test setup: package staged in ${PKG}; images in ${IMAGES}${deb ? '' : ' (no debian image)'}\n`);
}

await main();
