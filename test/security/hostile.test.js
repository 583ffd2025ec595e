// ch-run given hostile images: symlinks where mount points and generated files
// go, pointing outside the image; bind destinations escaping the image; images
// owned by someone else. Each case: a clear error (exit 31) or a container
// whose mounts all lie inside its own view; the host is unchanged.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN } from '../helpers/env.js';
import { copyBusybox, ensureUser, isRoot, runAs, scratch, testUser, treeSum } from './lib.js';

let dir, canary, user, other, baselineMounts;

const CH_RUN = () => join(BIN, 'ch-run');

function hostState() {
  return {
    canary: treeSum(canary),
    // Our own host mounts only: other test files may mount things meanwhile.
    hostMounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
      .filter((l) => l.includes(dir) || l.includes('ch-run.') || / \/etc\S* /.test(l)),
    etc: ['/etc/passwd', '/etc/group', '/etc/hosts', '/etc/resolv.conf'].map((f) => treeSum(f)),
  };
}

/** Copy the busybox image to NAME and let FIX hostile it up (as root). */
async function hostileImage(name, fix) {
  const img = join(dir, name);
  await copyBusybox(img);
  await fix(img);
  return img;
}

const repoint = (img, p, target) => { rmSync(join(img, p), { recursive: true, force: true }); symlinkSync(target, join(img, p)); };

// Every test here needs root: to build root-owned hostile images and a second
// user. Without root: skipped, and the title says why.
const serial = isRoot ? test.serial
  : (title, fn) => test.serial.skip(`${title} [skipped: not root; needs root to build hostile images and user chsec2]`, fn);

test.before(async () => {
  if (!isRoot) return;
  user = testUser();
  other = await ensureUser('chsec2');
  dir = scratch('hostile');
  canary = join(dir, 'canary');
  mkdirSync(join(canary, 'etc'), { recursive: true });
  for (const f of ['passwd', 'group', 'hosts']) writeFileSync(join(canary, 'etc', f), `canary ${f}\n`);
  writeFileSync(join(canary, 'file'), 'canary\n');
  await execa('chmod', ['-R', 'a+rwX', canary]);   // writable by anyone: a mount or write would show
  const r = await runAs(user, CH_RUN(), [await copyBusybox(join(dir, 'plain')), '--', 'cat', '/proc/self/mountinfo']);
  baselineMounts = r.stdout.split('\n').filter(Boolean).length;
});

// [name, how to break the image, extra ch-run args, 'ok' | 'error', regex for the error]
const CASES = [
  ['/etc/passwd -> absolute host path', (img) => repoint(img, 'etc/passwd', join(canary, 'etc/passwd')), () => [], 'ok'],
  ['/etc/passwd -> ../../.. host path', (img) => repoint(img, 'etc/passwd', '../../../../../../..' + join(canary, 'etc/passwd')), () => [], 'ok'],
  ['/etc/group -> host dir', (img) => repoint(img, 'etc/group', join(canary, 'etc')), () => [], 'ok'],
  ['/etc/hosts -> host canary file', (img) => repoint(img, 'etc/hosts', join(canary, 'file')), () => [], 'ok'],
  ['/etc -> host canary dir', (img) => repoint(img, 'etc', join(canary, 'etc')), () => [], 'ok'],
  ['/tmp -> /etc', (img) => repoint(img, 'tmp', '/etc'), () => [], 'ok'],
  ['/tmp -> host canary dir (absent in image)', (img) => repoint(img, 'tmp', canary), () => [], 'error', /no \/tmp directory/],
  ['/tmp -> /', (img) => repoint(img, 'tmp', '/'), () => [], 'error', /resolves to the image root/],
  ['/dev -> /', (img) => repoint(img, 'dev', '/'), () => [], 'error', /resolves to the image root/],
  ['/sys -> ..', (img) => repoint(img, 'sys', '..'), () => [], 'error', /resolves to the image root/],
  ['/proc -> ../../../proc (loop)', (img) => repoint(img, 'proc', '../../../../../../proc'), () => [], 'error', /no \/proc directory/],
  ['/dev -> /etc', (img) => repoint(img, 'dev', '/etc'), () => [], 'ok'],
  ['/home -> / with --home', (img) => repoint(img, 'home', '/'), () => ['--home'], 'error', /resolves to the image root|home/],
  ['bind DST -> relative escape', (img) => symlinkSync('../../../../../../..' + canary, join(img, 'mnt/esc')),
    () => ['-b', '/etc:/mnt/esc'], 'error', /\/mnt\/esc doesn't exist in read-only image/],
  ['bind DST -> absolute escape', (img) => symlinkSync(canary, join(img, 'mnt/esc')),
    () => ['-b', '/etc:/mnt/esc'], 'error', /\/mnt\/esc doesn't exist in read-only image/],
  ['bind DST -> absolute escape, -w', (img) => symlinkSync(canary, join(img, 'mnt/esc')),
    () => ['-w', '-b', '/etc:/mnt/esc'], 'error', /mnt\/esc is a symlink/],
  ['bind DST below escaping symlink, -w', (img) => symlinkSync(canary, join(img, 'mnt/esc')),
    () => ['-w', '-b', '/etc:/mnt/esc/sub'], 'error', /mnt\/esc is a symlink/],
  ['bind DST with .., -w', () => {}, () => ['-w', '-b', `/etc:/mnt/../../..${canary}/x`], 'error', /'\.\.' not allowed/],
  ['bind DST symlink into image', (img) => symlinkSync('/mnt/0', join(img, 'mnt/inside')), () => ['-b', `${canary}:/mnt/inside`], 'ok'],
];

for (const [name, fix, argsFn, want, re] of CASES) {
  serial(`hostile image: ${name}`, async (t) => {
    const args = argsFn();
    const img = await hostileImage(name.replace(/[^a-z0-9]+/gi, '_'), fix);
    // -w cases need an image the user owns; the others stay root's.
    if (args.includes('-w')) await execa('chown', ['-R', '-h', `${user.uid}:${user.gid}`, img]);
    const before = hostState();
    const imgBefore = treeSum(img);
    const r = await runAs(user, CH_RUN(), [...args, img, '--', 'cat', '/proc/self/mountinfo'],
      { env: { HOME: `/home/${user.name}` } });
    t.log(`exit ${r.exitCode}${r.stderr ? ': ' + r.stderr.trim() : ''}`);
    if (want === 'ok') {
      t.is(r.exitCode, 0);
      const mounts = r.stdout.split('\n').filter(Boolean);
      t.true(mounts.length <= baselineMounts + (args.includes('-b') ? 1 : 0), `no more mounts than a plain image (${mounts.length} vs ${baselineMounts})`);
      // Inside, no mount's source root names our canary unless we bound it on purpose.
      if (!args.includes(`${canary}:/mnt/inside`))
        t.false(mounts.some((l) => l.split(' ')[3].startsWith(canary)), 'canary not mounted');
    } else {
      t.is(r.exitCode, 31);
      t.regex(r.stderr, /^ch-run\[\d+\]: error: /m);
      t.regex(r.stderr, re);
    }
    t.deepEqual(hostState(), before, 'host unchanged (canary tree, host mount table, host /etc files)');
    if (!args.includes('-w')) t.is(treeSum(img), imgBefore, 'image unchanged');
  });
}

serial('hostile image: owned by another user', async (t) => {
  const img = join(dir, 'others');
  await copyBusybox(img);
  await execa('chown', ['-R', `${other.uid}:${other.gid}`, img]);
  const before = treeSum(img);
  // Readable: runs, read-only; -w: writes still denied by the owner's modes.
  let r = await runAs(user, CH_RUN(), [img, '--', 'sh', '-c', 'touch /x; echo $?']);
  t.is(r.exitCode, 0, r.stderr);
  r = await runAs(user, CH_RUN(), ['-w', img, '--', 'sh', '-c', 'touch /x 2>&1; touch /etc/x 2>&1; chmod 777 /bin 2>&1; exit 0']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /Permission denied|Operation not permitted/);
  t.is(treeSum(img), before, 'image unchanged');
  // Not readable: a clear error.
  chmodSync(img, 0o700);
  const before700 = treeSum(img);
  r = await runAs(user, CH_RUN(), [img, '--', 'true']);
  t.log(r.stderr);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /ch-run\[\d+\]: error: can't use image .*(EACCES)/);
  t.is(treeSum(img), before700, 'image unchanged');
});
