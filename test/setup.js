// Run by `npm test` before ava: create the unprivileged test user (when root),
// stage the built package and the test images where that user can reach them.

import { execa } from 'execa';
import { chmodSync, cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE_DIR, IMAGES, isRoot, PKG, TEST_DIR, TEST_USER } from './helpers/env.js';
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

/** Unprivileged FUSE (ch-run IMAGE.sqfs) needs /dev/fuse 0666, as distributions ship it;
    this machine kind has it 0600. */
async function fuseForUsers() {
  if (isRoot && existsSync('/dev/fuse')) chmodSync('/dev/fuse', 0o666);
}

async function main() {
  await ensureUser();
  await fuseForUsers();
  mkdirSync(TEST_DIR, { recursive: true });
  chmodSync(TEST_DIR, 0o755);
  stagePackage();
  mkdirSync(IMAGES, { recursive: true });
  buildBusybox(join(IMAGES, 'busybox'));
  const deb = await debianBase(CACHE_DIR);
  if (deb) {
    rmSync(join(IMAGES, 'debian'), { recursive: true, force: true });
    await execa('cp', ['-a', deb, join(IMAGES, 'debian')]);
  }
  // World-readable, so the test user can run everything staged here.
  await execa('chmod', ['-R', 'a+rX', TEST_DIR]);
  process.stdout.write(`test setup: package staged in ${PKG}; images in ${IMAGES}${deb ? '' : ' (no debian image)'}\n`);
}

await main();
