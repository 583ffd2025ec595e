#!/usr/bin/env node
// npm run demo: a container, offline, no Docker. Assembles a tiny image from
// what the host has (busybox-static if installed, else the host's own sh,
// ls, cat, id and their shared libraries), then runs a command in it with
// ch-run, as you.

import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const work = mkdtempSync('/var/tmp/ch-demo-');
chmodSync(work, 0o755);
const img = join(work, 'img');

function fromHostBinaries(root) {
  // Each program plus every library ldd names, at the same paths.
  const progs = ['/bin/sh', '/bin/ls', '/bin/cat', '/usr/bin/id', '/bin/uname'];
  const files = new Set(progs);
  for (const p of progs)
    for (const m of execFileSync('ldd', [p], { encoding: 'utf8' }).matchAll(/(\/\S+) \(0x/g)) files.add(m[1]);
  for (const f of files) {
    mkdirSync(join(root, dirname(f)), { recursive: true });
    copyFileSync(f, join(root, f));
    chmodSync(join(root, f), 0o755);
  }
}

try {
  for (const d of ['bin', 'usr/bin', 'dev', 'proc', 'sys', 'tmp', 'etc', 'home', 'mnt'])
    mkdirSync(join(img, d), { recursive: true });
  for (const f of ['passwd', 'group', 'hosts', 'resolv.conf']) writeFileSync(join(img, 'etc', f), '');
  writeFileSync(join(img, 'etc/os-release'), 'PRETTY_NAME="ch-toolkit demo image"\n');
  if (existsSync('/bin/busybox')) {
    copyFileSync('/bin/busybox', join(img, 'bin/busybox'));
    chmodSync(join(img, 'bin/busybox'), 0o755);
    for (const a of ['sh', 'ls', 'cat', 'id', 'uname']) symlinkSync('busybox', join(img, 'bin', a));
    console.log(`demo: built a busybox image in ${img}`);
  } else {
    fromHostBinaries(img);
    console.log(`demo: built an image from host binaries in ${img}`);
  }
  spawnSync('chmod', ['-R', 'a+rX', work]);
  const cmd = 'cat /etc/os-release; echo "I am $(id -un) (uid $(id -u)) on $(uname -n)"; '
    + '(: > /probe) 2>/dev/null && echo "image root: writable" || echo "image root: read-only, as it should be"; ls /';
  console.log(`demo: ch-run ${img} -- sh -c '...'\n`);
  const r = spawnSync(join(repo, 'bin', 'ch-run'), [img, '--', '/bin/sh', '-c', cmd], { stdio: 'inherit' });
  process.exitCode = r.status ?? 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
