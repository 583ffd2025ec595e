// ch-run IMAGE.sqfs (SquashFUSE inside the container's namespaces, no root,
// no setuid fusermount), -W (tmpfs overlay), --feature. As the unprivileged
// test user. test/setup.js makes /dev/fuse 0666, as distributions ship it.

import test from 'ava';
import { execa, execaSync } from 'execa';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { asUser, BIN, ch as chBase, image, isRoot, needs, noFuse, notRoot, testUser, unavailable, userEnv } from './helpers/env.js';
import { holdLock, imageCopy, ownedByUser, scratch } from './helpers/fixtures.js';

// The core's kernel-feature switches, as test/run-fallback-no-pidfd.test.js
// sets them to run this suite down the path for kernels without
// pidfd_open(2): passed on to every command run as the test user.
const SWITCHES = Object.fromEntries(['CH_RUN_NO_PIDFD_OPEN', 'CH_RUN_NO_OPENAT2', 'CH_RUN_NO_MOUNT_SETATTR']
  .filter((v) => process.env[v] !== undefined).map((v) => [v, process.env[v]]));
// Every process of this file's containers (command, keeper, squashfuse)
// carries MARK in its environment: other test files, and other people's
// runs, use the same test user, and their containers are none of ours.
const MARK = ['CH_TEST_SQUASH_RUN', `${process.pid}.${Math.random().toString(36).slice(2)}`];
// CH_RUN_SQUASH_LINGER=0 unless a test says otherwise: a private mount that
// ends with the command, as before shared mounts (native/core/holder.c;
// test/squash-shared.test.js tests those). The lifecycle tests below run
// both ways, LINGERS: '1' is a shared mount held 1 s after its last user.
const LINGERS = ['0', '1'];
const chOuter = (...a) => ch(...a);
const ch = (cmd, args, opts = {}) => chBase(cmd, args,
  { ...opts, env: { CH_RUN_SQUASH_LINGER: '0', ...SWITCHES, [MARK[0]]: MARK[1], ...opts.env } });
// Tests that mount a .sqfs: skipped, saying why, where the test user can't
// use FUSE (a user's run on a machine whose /dev/fuse is 0600); in CI a failure.
const fuseTest = needs(test, noFuse, { tool: true });
const fuseSerial = needs(test.serial, noFuse, { tool: true });

/** IMAGE (a directory) made into a .sqfs in a fresh scratch dir, by the test user. */
async function sqfs(t, img = image('busybox'), name = 'img.sqfs') {
  const dir = await scratch(t, 'sq');
  const file = join(dir, name);
  const argv = [...asUser(), 'mksquashfs', img, file, '-noappend', '-quiet', '-no-progress'];
  const r = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  if (r.exitCode !== 0) throw new Error(`mksquashfs: ${r.stderr}`);
  return file;
}

/** The test user's processes of our containers that still hold a SquashFUSE mount, or name MARKER in their argv. */
function leftovers(marker) {
  const ours = (pid) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(MARK.join('='));
  const uid = testUser().uid;
  const found = [];
  for (const pid of readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
    try {
      if (statSync(`/proc/${pid}`).uid !== uid) continue;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const mi = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
      if (cmd.includes(marker) || (mi.includes('fuse.squashfuse') && ours(pid))) found.push(`${pid}: ${cmd}`);
    } catch { /* gone meanwhile */ }
  }
  return found;
}

/** Wait (bounded) until nothing of the container is left but what KEEP allows; return what is. */
async function settled(marker, keep = () => false) {
  const deadline = Date.now() + 15000;
  const left = () => leftovers(marker).filter((l) => !keep(l));
  while (left().length > 0 && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  return left();
}

/** Start ch-run ARGS; resolve once its command printed LINE (it runs, mounted). */
function started(args, line = 'ready', env = {}) {
  const p = ch('ch-run', args, { env });
  const ready = new Promise((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d) => { out += d; if (out.includes(line)) resolve(); });
    p.then((r) => reject(new Error(`ended before ready: ${r.exitCode} ${r.stderr}`)));
  });
  return { p, ready };
}

fuseTest('runs a command from a .sqfs: output, status, the image is the root', async (t) => {
  const img = await sqfs(t);
  let r = await ch('ch-run', [img, '--', 'sh', '-c', 'cat /ch/metadata.json; grep " / / " /proc/self/mountinfo; exit 7']);
  t.is(r.exitCode, 7, r.stderr);
  t.regex(r.stdout, /"Entrypoint":\["\/bin\/echo"\]/);
  t.regex(r.stdout, / \/ \/ ro,nosuid\S* .* fuse\.squashfuse /, 'root is the SquashFUSE mount, read-only');
  r = await ch('ch-run', [img, '--', 'no-such-command']);
  t.is(r.exitCode, 49, r.stderr);
  r = await ch('ch-run', [img]);   // default command from the image's metadata, read from the .sqfs
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'default cmd');
  r = await ch('ch-run', ['--set-env', img, '--', 'sh', '-c', 'echo $FROM_IMAGE']);   // the image's /ch/environment
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'yes');
  r = await ch('ch-run', [img, '--', 'touch', '/x']);
  t.not(r.exitCode, 0, 'read-only');
  t.regex(r.stderr, /Read-only file system/);
});

fuseTest('signals and PID as for a directory image; squashfuse is not the command\'s child', async (t) => {
  const img = await sqfs(t);
  let r = await ch('ch-run', [img, '--', 'sh', '-c', 'kill -TERM $$']);
  t.is(r.signal, 'SIGTERM', r.stderr);
  const p = ch('ch-run', [img, '--', 'sh', '-c', 'echo $$']);
  r = await p;
  t.is(r.stdout, String(p.pid), 'the command has ch-run\'s PID');
  r = await ch('ch-run', [img, '--', 'cat', '/proc/thread-self/children']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout.trim(), '', 'the command has no children: wait(-1) would not wait on squashfuse');
});

for (const linger of LINGERS) for (const [what, script] of [
  ['ch-run (the command, same PID)', 'echo ready; exec sleep 1000'],
  ['ch-run whose command has a background child', 'sleep 1000 </dev/null >/dev/null 2>&1 & echo ready; wait'],
]) {
  fuseSerial(`SIGKILL of ${what} leaves no mount and no process (linger ${linger})`, async (t) => {
    const img = await sqfs(t, image('busybox'), `kill-${Math.random().toString(36).slice(2)}.sqfs`);
    const { p, ready } = started([img, '--', 'sh', '-c', script], 'ready', { CH_RUN_SQUASH_LINGER: linger });
    t.teardown(() => p.kill('SIGKILL'));   // whatever fails below
    await ready;
    const fuse = leftovers(img).filter((l) => / squashfuse(_ll)? -f /.test(l));
    t.is(fuse.length, 1, 'squashfuse runs while the command does');
    // It serves a connection the keeper mounted: no capability, no way to gain one.
    const status = readFileSync(`/proc/${fuse[0].split(':')[0]}/status`, 'utf8');
    t.regex(status, /^CapEff:\s+0+$/m);
    t.regex(status, /^CapAmb:\s+0+$/m);
    t.regex(status, /^NoNewPrivs:\s+1$/m);
    p.kill('SIGKILL');
    const r = await p;
    t.is(r.signal, 'SIGKILL');
    // A background child of the command is the user's own (it keeps its
    // mount namespace); it must not keep squashfuse or the keeper alive.
    const orphan = (l) => / sleep 1000 $/.test(l);
    t.deepEqual(await settled(img, orphan), []);
    for (const l of leftovers(img).filter(orphan)) process.kill(Number(l.split(':')[0]), 'SIGKILL');
  });
}

for (const linger of LINGERS)
fuseSerial(`a command that ended but is not reaped yet (a zombie) ends squashfuse all the same (linger ${linger})`, async (t) => {
  // ch-run's parent doesn't wait for it: the command stays a zombie, with
  // ch-run's PID, for as long as the parent lives. It has ended: the keeper
  // must see that (a pidfd does; /proc says "Z" and no thread left).
  const img = await sqfs(t, image('busybox'), 'zombie.sqfs');
  const argv = [...asUser(), 'sh', '-c', `"$0" "$1" -- true & echo $!; exec sleep 600`, join(BIN, 'ch-run'), img];
  const parent = execa(argv[0], argv.slice(1), { reject: false, env: userEnv(undefined, { CH_RUN_SQUASH_LINGER: linger, ...SWITCHES, [MARK[0]]: MARK[1] }), extendEnv: false, cwd: '/' });
  t.teardown(() => parent.kill('SIGKILL'));
  const pid = await new Promise((resolve) => {
    let out = '';
    parent.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(Number(out.trim())); });
  });
  // Bounded wait on the observable state: the command a zombie.
  const state = () => { try { return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]; } catch { return 'gone'; } };
  for (let i = 0; i < 300 && state() !== 'Z'; i++) await new Promise((r) => setTimeout(r, 50));
  t.is(state(), 'Z', 'the command is a zombie, not reaped');
  t.deepEqual(await settled(img), [], 'squashfuse and the keeper gone while the command is still a zombie');
  t.is(state(), 'Z', 'still a zombie: it was its end, not its reaping, that ended squashfuse');
});

for (const linger of LINGERS)
fuseSerial(`a normal exit leaves no mount and no process (linger ${linger})`, async (t) => {
  const img = await sqfs(t, image('busybox'), `exit-${linger}.sqfs`);
  const r = await ch('ch-run', [img, '--', 'true'], { env: { CH_RUN_SQUASH_LINGER: linger } });
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(await settled(img), []);
});

fuseTest('two containers from one .sqfs at once (same default mount point)', async (t) => {
  const img = await sqfs(t);
  const meet = await scratch(t, 'meet');
  // Each says it is up, then waits (bounded) for the other: both are mounted at once.
  const script = (me, other) => `touch /mnt/0/${me}; i=0; while [ ! -e /mnt/0/${other} ] && [ $i -lt 600 ]; `
    + `do sleep 0.05; i=$((i+1)); done; [ -e /mnt/0/${other} ] && echo met`;
  const [a, b] = await Promise.all([
    ch('ch-run', ['-b', `${meet}:/mnt/0`, img, '--', 'sh', '-c', script('a', 'b')]),
    ch('ch-run', ['-b', `${meet}:/mnt/0`, img, '--', 'sh', '-c', script('b', 'a')]),
  ]);
  t.is(a.exitCode, 0, a.stderr);
  t.is(b.exitCode, 0, b.stderr);
  t.is(a.stdout + b.stdout, 'metmet');
});

fuseTest('-m DIR: mount point of one\'s choice; a missing one is a clear error', async (t) => {
  const img = await sqfs(t);
  const dir = await scratch(t, 'mnt');
  let r = await ch('ch-run', ['-m', dir, img, '--', 'true']);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(readdirSync(dir), [], 'nothing written at the mount point on the host');
  r = await ch('ch-run', ['-m', join(dir, 'nope'), img, '--', 'true']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /--mount: can't use .*nope: no such file or directory/i);
});

test('a truncated .sqfs, and a file that is not SquashFS, are clear errors', async (t) => {
  const img = await sqfs(t);
  const dir = await scratch(t, 'bad');
  const cut = join(dir, 'cut.sqfs');
  copyFileSync(img, cut);
  truncateSync(cut, Math.floor(statSync(img).size / 2));
  const junk = join(dir, 'junk.sqfs');
  writeFileSync(junk, 'this is not a squashfs image\n'.repeat(10));
  await ownedByUser(dir);
  let r = await ch('ch-run', [cut, '--', 'true']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /can't use image .*cut\.sqfs: SquashFS image truncated/);
  r = await ch('ch-run', [junk, '--', 'true']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /can't use image .*junk\.sqfs: not a directory, and not a SquashFS image/);
});

needs(test, notRoot && 'needs root to hide /dev/fuse')('FUSE unusable (/dev/fuse inaccessible, squashfuse missing): clear errors', async (t) => {
  const img = await sqfs(t);
  // /dev/fuse as this machine kind ships it: root's only, mode 0600 (in a
  // private mount namespace, so nothing else is affected).
  const hidden = join(await scratch(t, 'fuse'), 'fuse');
  writeFileSync(hidden, '', { mode: 0o600 });
  const argv = ['unshare', '-m', 'sh', '-c', 'mount --bind "$0" /dev/fuse && exec "$@"', hidden,
    ...asUser(), join(BIN, 'ch-run')];
  let r = await execa(argv[0], [...argv.slice(1), img, '--', 'true'],
    { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(r.exitCode, 31, r.stderr);
  t.regex(r.stderr, /can't mount SquashFS image .*: FUSE unusable: \/dev\/fuse: permission denied \(EACCES\)/i);
  r = await execa(argv[0], [...argv.slice(1), '--feature=squash'], { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(r.exitCode, 1, '--feature=squash says no');

  const bin = await scratch(t, 'path');   // a PATH with node (and setpriv), and no squashfuse
  await execa('ln', ['-s', process.execPath, join(bin, 'node')]);
  await execa('ln', ['-s', '/usr/bin/setpriv', join(bin, 'setpriv')]);
  r = await ch('ch-run', [img, '--', 'true'], { env: { PATH: bin } });
  t.is(r.exitCode, 31, r.stderr);
  t.regex(r.stderr, /can't mount SquashFS image .*: squashfuse not found on PATH/);
});

fuseTest('--feature=squash: exit 0 here', async (t) => {
  const r = await ch('ch-run', ['--feature=squash']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, '');
});

test('--feature=overlayfs: exit 0 here; unknown feature: an error', async (t) => {
  let r = await ch('ch-run', ['--feature=overlayfs']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, '');
  r = await ch('ch-run', ['--feature=teleport']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /--feature: unknown feature 'teleport'/);
});

/** SHA-256 of FILE's contents. */
const digest = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');

// -W: the container writes to a tmpfs overlay; the image stays as it was:
// the directory it ran from, or the .sqfs file squashfuse served (the
// directory it was made from is never seen by the container).
for (const kind of ['directory', 'squashfs']) {
  (kind === 'squashfs' ? fuseTest : test)(`-W on a ${kind} image: writes work inside and vanish after`, async (t) => {
    const dir = await imageCopy(t);
    const img = kind === 'directory' ? dir : await sqfs(t, dir);
    const before = kind === 'directory' ? readdirSync(dir).sort() : { sum: digest(img), size: statSync(img).size };
    let r = await ch('ch-run', ['-W', img, '--', 'sh', '-c',
      'echo new > /new && echo more >> /ch/metadata.json && rm /bin/true && cat /new && ls /bin/true']);
    t.is(r.stdout, 'new', r.stderr);
    t.not(r.exitCode, 0, '/bin/true removed inside');
    if (kind === 'directory') {
      t.deepEqual(readdirSync(dir).sort(), before);
      t.true(existsSync(join(dir, 'bin/true')) || existsSync(join(dir, 'bin/busybox')));
      t.notRegex(readFileSync(join(dir, 'ch/metadata.json'), 'utf8'), /more/);
    } else {
      t.deepEqual({ sum: digest(img), size: statSync(img).size }, before, 'the .sqfs file is byte for byte as it was');
    }
    // What the next container mounts from the image: as it was.
    r = await ch('ch-run', [img, '--', 'sh', '-c', 'ls /new; ls /bin/true; grep -c more /ch/metadata.json']);
    t.regex(r.stderr, /\/new: No such file/);
    t.regex(r.stdout, /\/bin\/true/, 'the next container sees the image as it was');
    t.regex(r.stdout, /^0$/m, 'its /ch/metadata.json unchanged');
    r = await ch('ch-run', ['-W1m', img, '--', 'sh', '-c', 'dd if=/dev/zero of=/big bs=1k count=4096']);
    t.not(r.exitCode, 0, 'the overlay has the size asked for');
    t.regex(r.stderr, /No space left/);
  });
}

needs(test, notRoot && 'needs root: the read-only image must belong to someone else')('-W on a read-only image: -b creates its destination, in the overlay only', async (t) => {
  const img = await imageCopy(t);   // the user's (overlayfs copies up only what the user owns)
  const src = await scratch(t, 'src');
  writeFileSync(join(src, 'file'), 'from host\n');
  await ownedByUser(src);
  let r = await ch('ch-run', ['-b', `${src}:/not/there`, img, '--', 'true']);
  t.is(r.exitCode, 31, 'without -W: an error');
  r = await ch('ch-run', ['-W', '-b', `${src}:/not/there`, '-b', `${src}/file:/etc/new/file`, img, '--',
    'sh', '-c', 'cat /not/there/file /etc/new/file']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'from host\nfrom host');
  t.false(existsSync(join(img, 'not')));
  t.false(existsSync(join(img, 'etc/new')));
  // Someone else's image: what the user may not write there, the overlay can't either.
  r = await ch('ch-run', ['-W', '-b', `${src}/file:/etc/new/file`, image('busybox'), '--', 'true']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /can't create \/etc\/new in image: Permission denied \(EACCES\)/);
  t.false(existsSync(join(image('busybox'), 'etc/new')));
  r = await ch('ch-run', ['-W', '-w', img, '--', 'true']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /--write and --write-fake are exclusive/);
  r = await ch('ch-run', ['-Wbig', img, '--', 'true']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /--write-fake: bad size 'big'/);
});

fuseTest('a .sqfs image refuses -w (read-only: use -W); --join works (test/squash-shared.test.js)', async (t) => {
  const img = await sqfs(t);
  let r = await ch('ch-run', ['-w', img, '--', 'true']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /-w with a SquashFS image is not supported .*use -W/);
  r = await ch('ch-run', ['--join-ct=1', img, '--', 'true']);
  t.is(r.exitCode, 0, r.stderr);
});

for (const linger of LINGERS)
fuseSerial(`squashfuse that fails, or never serves: its words, or a timeout; nothing left (linger ${linger})`, async (t) => {
  const img = await sqfs(t, image('busybox'), 'fake.sqfs');
  const bin = await scratch(t, 'fakebin');
  const ch = (cmd, args, opts = {}) => chOuter(cmd, args, { env: { CH_RUN_SQUASH_LINGER: linger, ...opts.env } });
  writeFileSync(join(bin, 'squashfuse'), '#!/bin/sh\necho "fake squashfuse: cannot serve" >&2\nexit 3\n', { mode: 0o755 });
  let r = await ch('ch-run', [img, '--', 'true'], { env: { PATH: `${bin}:/usr/bin:/bin` } });
  t.is(r.exitCode, 31, r.stderr);
  t.regex(r.stderr, /can't mount .*fake\.sqfs: squashfuse exited with status 3 before serving .*: fake squashfuse: cannot serve/);
  writeFileSync(join(bin, 'squashfuse'), '#!/bin/sh\nexec sleep 1000\n', { mode: 0o755 });
  r = await ch('ch-run', [img, '--', 'true'], { env: { PATH: `${bin}:/usr/bin:/bin`, CH_RUN_SQUASH_TIMEOUT: '1' } });
  t.is(r.exitCode, 31, r.stderr);
  t.regex(r.stderr, /squashfuse did not serve .*fake\.sqfs within 1\.0 s \(CH_RUN_SQUASH_TIMEOUT\)/);
  t.deepEqual(await settled(bin), [], 'the hung squashfuse was ended');
  r = await ch('ch-run', [img, '--', 'true'], { env: { CH_RUN_SQUASH_TIMEOUT: 'soon' } });
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /CH_RUN_SQUASH_TIMEOUT: want seconds > 0, got 'soon'/);
});

// /var/tmp is everyone's: /var/tmp/$USER.ch is used only if it is a real
// directory of the user's, closed to others. (Serial: it moves the user's
// own directory aside meanwhile; ava runs serial tests before the others.)
needs(test.serial, notRoot && 'needs root to play the other user')('/var/tmp/$USER.ch planted by someone else, or open to others: refused', async (t) => {
  const img = await sqfs(t);
  const release = await holdLock('user-storage-dir');   // this test runs in two files at once
  t.teardown(release);   // teardowns run last-registered first: the directory is back before the lock goes
  const own = `/var/tmp/${testUser().name}.ch`;
  const aside = `${own}.aside-${process.pid}`;
  const had = existsSync(own);
  if (had) renameSync(own, aside);
  t.teardown(() => { rmSync(own, { recursive: true, force: true }); if (had) renameSync(aside, own); });
  const elsewhere = await scratch(t, 'elsewhere');
  for (const [plant, why] of [
    [() => symlinkSync(elsewhere, own), /can't use \/var\/tmp\/\S+\.ch: it is a symlink/],
    [() => mkdirSync(own, { mode: 0o755 }), /can't use \/var\/tmp\/\S+\.ch: owned by uid 0, not you/],
    [() => { mkdirSync(own); execaSync('chown', [String(testUser().uid), own]); chmodSync(own, 0o777); },
      /can't use \/var\/tmp\/\S+\.ch: mode 777 lets others in/],
  ]) {
    rmSync(own, { recursive: true, force: true });
    plant();
    const r = await ch('ch-run', [img, '--', 'true']);
    t.is(r.exitCode, 31, r.stderr);
    t.regex(r.stderr, why);
    t.deepEqual(readdirSync(elsewhere), [], 'nothing made through the link');
  }
  rmSync(own, { recursive: true, force: true });
  const r = await ch('ch-run', [img, '--', 'true']);
  t.is(r.exitCode, 0, r.stderr);
  t.is((statSync(own).mode & 0o777).toString(8), '700');
});

fuseTest('SquashFS listings in the storage directory: at most 64 kept, least recently used go; ch-pull --cache-list and --cache-prune; links and others\' files left', async (t) => {
  const img = await sqfs(t);
  const dir = await scratch(t, 'lst');
  const storage = join(dir, 'storage');
  mkdirSync(storage, { mode: 0o700 });
  // 70 listings of the user's, used long ago (the oldest first), ...
  const old = Date.now() / 1000 - 86400;
  const names = Array.from({ length: 70 }, (_, i) => `list-v2-0-${1000 + i}-1-1-1.json`);
  names.forEach((n, i) => { writeFileSync(join(storage, n), '[]'); utimesSync(join(storage, n), old + i, old + i); });
  // ... a link named like one (to a file of the user's) and root's file named like one.
  writeFileSync(join(dir, 'keep'), 'keep\n');
  symlinkSync(join(dir, 'keep'), join(storage, 'list-v2-link.json'));
  if (isRoot) writeFileSync(join(storage, 'list-v2-root.json'), '[]');
  await ownedByUser(storage);
  await ownedByUser(join(dir, 'keep'));
  if (isRoot) execaSync('chown', ['-h', '0:0', join(storage, 'list-v2-root.json')]);
  const env = { CH_IMAGE_STORAGE: storage };
  const mine = () => readdirSync(storage).filter((n) => /^list-.*\.json$/.test(n) && n !== 'list-v2-link.json' && n !== 'list-v2-root.json');
  let r = await ch('ch-run', [img, '--', 'true'], { env });
  t.is(r.exitCode, 0, r.stderr);
  const left = mine();
  t.is(left.length, 64, 'a new listing, and the 63 most recently used of the old');
  t.deepEqual(names.filter((n) => !left.includes(n)), names.slice(0, 7), 'the 7 least recently used went');
  t.true(left.some((n) => !names.includes(n)), 'the new listing stays');
  t.true(existsSync(join(storage, 'list-v2-link.json')));
  t.is(readFileSync(join(dir, 'keep'), 'utf8'), 'keep\n');
  // Listed (least recently used first) and pruned by ch-pull; the link, root's file left.
  r = await ch('ch-pull', ['--cache-list'], { env });
  t.is(r.exitCode, 0, r.stderr);
  const listed = [...r.stdout.matchAll(/^listing +\d+ +\S+ +(\S+)$/gm)].map((m) => m[1].split('/').pop());
  t.deepEqual(listed.slice(0, 63), names.slice(7), r.stdout);
  t.regex(r.stdout, /# 0 blob\(s\) \(0\.0 MiB\), 0 partial download\(s\) \(0\.0 MiB\), 64 SquashFS listing\(s\)/);
  r = await ch('ch-pull', ['--cache-prune'], { env });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /removed 64 cached file\(s\)/);
  t.deepEqual(mine(), []);
  t.true(lstatSync(join(storage, 'list-v2-link.json')).isSymbolicLink());
  t.is(readFileSync(join(dir, 'keep'), 'utf8'), 'keep\n');
  if (isRoot) t.true(existsSync(join(storage, 'list-v2-root.json')), "root's file left");
  // The image runs as before, listed again.
  r = await ch('ch-run', [img, '--', 'true'], { env });
  t.is(r.exitCode, 0, r.stderr);
  t.is(mine().length, 1);
});
