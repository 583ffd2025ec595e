// Directories other users can write are hostile. Two unprivileged accounts,
// an attacker and a victim, share a directory as users of a cluster node do
// (/var/tmp: sticky, mode 1777; a group project directory: writable, not
// sticky). The attacker plants symlinks, hardlinks, FIFOs, forged images and
// held locks under every fixed name the tools use there; the victim then runs
// ch-tar2dir, ch-builder2tar and ch-run --join. The victim's files elsewhere
// must stay intact, the victim must never be handed the attacker's image, and
// where the victim's command can't proceed it says so clearly, promptly and
// with a non-zero exit. Everything runs with fs.protected_symlinks 0 and 1
// (the kernel's own guard covers only sticky directories).

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, image, isRoot } from '../helpers/env.js';
import { ensureUser, runAs, scratch, treeSum, sharedDir as sharedDirIn } from './lib.js';

const SYSCTL = '/proc/sys/fs/protected_symlinks';
const serial = isRoot ? test.serial : test.skip;
const why = isRoot ? '' : ' [skipped: needs root to create the attacker and victim accounts]';

let victim, attacker, base, tarball, precious, savedSysctl;

test.before(async () => {
  if (!isRoot) return;
  victim = await ensureUser('chvictim');
  attacker = await ensureUser('chattack');
  base = scratch('shared-dirs');
  savedSysctl = readFileSync(SYSCTL, 'utf8').trim();
  tarball = join(base, 'img.tar.gz');
  await execa('tar', ['-C', image('busybox'), '-czf', tarball, '.']);
  chmodSync(tarball, 0o644);
  // The victim's own files, which no command of theirs may lose.
  precious = join(base, 'victim-home');
  mkdirSync(join(precious, 'work'), { recursive: true });
  writeFileSync(join(precious, 'work/results.dat'), 'months of computing\n');
  writeFileSync(join(precious, 'notes.txt'), 'notes\n');
  await execa('chown', ['-R', `${victim.uid}:${victim.gid}`, precious]);
  chmodSync(precious, 0o755);
});

test.after.always(() => {
  if (savedSysctl !== undefined) writeFileSync(SYSCTL, savedSysctl);
});

/** A fresh shared directory in this file's scratch: 'sticky' (like /var/tmp) or 'open' (0777, no sticky bit). */
const sharedDir = (label, kind) => sharedDirIn(base, label, kind);

const asAttacker = (script) => runAs(attacker, '/bin/sh', ['-c', script.replace(/\n\s*&&/g, ' &&')]);

/** USER holds an flock on LOCK (created if needed) in a process that is itself the holder, so killing it frees the lock. */
async function holdLock(user, lock) {
  const holder = runAs(user, '/bin/sh', ['-c', `exec 9>>'${lock}' && flock -x 9 && echo held && exec sleep 60`],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  // The holder says when it holds the lock; if it ends instead, say why.
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`lock holder for ${lock} silent for 60 s`)), 60_000);
    holder.stdout.on('data', (d) => { if (String(d).includes('held')) { clearTimeout(timer); resolve(); } });
    holder.then((r) => { clearTimeout(timer); reject(new Error(`lock holder ended (exit ${r.exitCode}): ${r.stderr}`)); },
      (e) => { clearTimeout(timer); reject(e); });
  });
  return { release: async () => { holder.kill('SIGKILL'); await holder.catch(() => {}); } };
}
const asVictim = (cmd, args, opts = {}) => runAs(victim, join(BIN, cmd), args, { timeout: 60_000, ...opts });

async function plant(t, script) {
  const r = await asAttacker(script);
  t.is(r.exitCode, 0, `attacker's plant failed: ${r.stderr}`);
}

/** Every plant is still there, as the attacker left it. */
function assertPlantsKept(t, dir, names) {
  for (const n of names) {
    const st = lstatSync(join(dir, n));
    t.is(st.uid, attacker.uid, `${n} kept, still the attacker's`);
  }
}

const preciousSum = () => treeSum(precious);

for (const protect of ['0', '1']) {
  for (const kind of ['sticky', 'open']) {
    const tag = `protected_symlinks=${protect}, ${kind} dir`;
    const setup = (label) => {
      writeFileSync(SYSCTL, protect);
      return sharedDir(`${label}-${protect}`, kind);
    };

    serial(`ch-tar2dir: planted temporaries (symlink to victim's files, FIFO, attacker's dir) are neither followed nor removed (${tag})${why}`, async (t) => {
      const d = setup('tmp');
      const before = preciousSum();
      await plant(t, `cd ${d} && ln -s ${precious} .img.ch-tmp.1 && ln -s ${precious}/notes.txt .img.ch-tmp.2
        && mkfifo .img.ch-tmp.3 && mkdir .img.ch-tmp.4 && touch .img.ch-tmp.4/x && ln -s ${precious}/work .img.ch-tmp.5`);
      const r = await asVictim('ch-tar2dir', ['-v', tarball, d]);
      t.is(r.exitCode, 0, r.stderr);
      t.regex(r.stderr, /ignoring .*\.img\.ch-tmp\.1: belongs to chattack/);
      t.is(preciousSum(), before, "victim's files intact");
      assertPlantsKept(t, d, ['.img.ch-tmp.1', '.img.ch-tmp.2', '.img.ch-tmp.3', '.img.ch-tmp.4', '.img.ch-tmp.5']);
      t.true(existsSync(join(d, 'img/bin/busybox')));
      t.is(statSync(join(d, 'img')).uid, victim.uid);
      // Replacing the victim's own image (--force) with the plants still there.
      const f = await asVictim('ch-tar2dir', ['--force', tarball, d]);
      t.is(f.exitCode, 0, f.stderr);
      t.is(preciousSum(), before);
      t.deepEqual(readdirSync(d).filter((n) => n.startsWith('.img.ch-tmp.')).sort(),
        ['.img.ch-tmp.1', '.img.ch-tmp.2', '.img.ch-tmp.3', '.img.ch-tmp.4', '.img.ch-tmp.5'], 'only the plants left');
    });

    serial(`ch-tar2dir: a forged image at DIR/NAME is refused, naming its owner, never "up to date" (${tag})${why}`, async (t) => {
      const d = setup('forge');
      // The attacker copies the identity of the victim's tarball into a marker.
      const st = statSync(tarball);
      const source = { path: tarball, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, dev: st.dev };
      const marker = JSON.stringify({ tool: 'ch-tar2dir', source });
      await plant(t, `mkdir -p ${d}/img/ch ${d}/img/bin && printf '%s' '${marker}' > ${d}/img/ch/.ch-tar2dir.json
        && printf '%s' '${marker}' > ${d}/img/ch/.ch-image.json
        && printf '#!/bin/sh\\necho pwned\\n' > ${d}/img/bin/evil && chmod -R go-w ${d}/img`);
      const r = await asVictim('ch-tar2dir', [tarball, d]);
      t.is(r.exitCode, 1, r.stderr);
      t.regex(r.stderr, /img: exists and was not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours \(belongs to chattack \(uid \d+\), not you \(chvictim\)\); not using or replacing it/);
      t.notRegex(r.stderr, /up to date/);
      t.true(existsSync(join(d, 'img/bin/evil')), "attacker's directory left as it was");
      t.false(readdirSync(d).some((n) => n.includes('ch-tmp')), 'no temporary left');
    });

    serial(`ch-tar2dir: DIR/NAME planted as a symlink, FIFO or attacker's file is refused (${tag})${why}`, async (t) => {
      const d = setup('target');
      const before = preciousSum();
      for (const [how, script] of [
        ['symlink', `ln -s ${precious} ${d}/img`],
        ['fifo', `mkfifo ${d}/img`],
        ['file', `echo x > ${d}/img`],
      ]) {
        rmSync(join(d, 'img'), { recursive: true, force: true });
        await plant(t, script);
        const r = await asVictim('ch-tar2dir', [tarball, d]);
        t.is(r.exitCode, 1, `${how}: ${r.stderr}`);
        t.regex(r.stderr, /img: exists and was not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours \((not a directory|belongs to chattack)/, how);
        t.is(preciousSum(), before, how);
        t.is(lstatSync(join(d, 'img')).uid, attacker.uid, `${how} left as it was`);
      }
    });

    serial(`ch-tar2dir: the victim's image whose marker or root another user can write is not trusted (${tag})${why}`, async (t) => {
      const d = setup('weak');
      const r = await asVictim('ch-tar2dir', [tarball, d]);
      t.is(r.exitCode, 0, r.stderr);
      // The victim's own image, but made writable by others (e.g. a careless chmod).
      chmodSync(join(d, 'img/ch'), 0o777);
      const again = await asVictim('ch-tar2dir', [tarball, d]);
      t.is(again.exitCode, 1, again.stderr);
      t.regex(again.stderr, /img\/ch: writable by group or others \(mode 777\)/);
      // Likewise the marker file itself, and the image root.
      chmodSync(join(d, 'img/ch'), 0o755);
      chmodSync(join(d, 'img/ch/.ch-image.json'), 0o666);
      const marker = await asVictim('ch-tar2dir', [tarball, d]);
      t.is(marker.exitCode, 1, marker.stderr);
      t.regex(marker.stderr, /img\/ch\/\.ch-image\.json: writable by group or others \(mode 666\)/);
      chmodSync(join(d, 'img/ch/.ch-image.json'), 0o644);
      chmodSync(join(d, 'img'), 0o777);
      const root = await asVictim('ch-tar2dir', [tarball, d]);
      t.is(root.exitCode, 1, root.stderr);
      t.regex(root.stderr, /img: exists and was not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours \(writable by group or others \(mode 777\)\)/);
    });

    serial(`ch-tar2dir: lock file planted (symlink, FIFO, attacker's file, held flock) is refused at once, never waited on (${tag})${why}`, async (t) => {
      const d = setup('lock');
      const lock = join(d, '.img.ch-tar2dir.lock');
      const before = preciousSum();
      for (const [how, script] of [
        ['symlink', `ln -s ${precious}/notes.txt ${lock}`],
        ['dangling symlink', `ln -s ${precious}/new-file ${lock}`],
        ['fifo', `mkfifo ${lock}`],
        ['hardlink', `echo x > ${d}/mine && ln ${d}/mine ${lock}`],
        ['file', `: > ${lock}`],
      ]) {
        rmSync(lock, { force: true });
        await plant(t, script);
        const r = await asVictim('ch-tar2dir', [tarball, d], { timeout: 20_000 });
        t.false(r.timedOut, `${how}: must not wait`);
        t.is(r.exitCode, 1, `${how}: ${r.stderr}`);
        t.regex(r.stderr, /\.img\.ch-tar2dir\.lock: (belongs to chattack|lock file is not a regular file)/, how);
        t.is(preciousSum(), before, how);
        t.false(existsSync(join(precious, 'new-file')), `${how}: nothing created through the link`);
        t.false(existsSync(join(d, 'img')), how);
      }
      // The attacker holds an flock on a lock file of theirs.
      rmSync(lock, { force: true });
      await plant(t, `: > ${lock}`);
      const held = await holdLock(attacker, lock);
      try {
        const r = await asVictim('ch-tar2dir', [tarball, d], { timeout: 20_000 });
        t.false(r.timedOut);
        t.is(r.exitCode, 1, r.stderr);
        t.regex(r.stderr, /belongs to chattack .*refusing to use or wait on it/);
      } finally {
        await held.release();
      }
    });
  }
}

serial(`ch-tar2dir: a lock held by the victim's own stuck run is waited on for CH_TAR2DIR_LOCK_TIMEOUT, then a clear error${why}`, async (t) => {
  writeFileSync(SYSCTL, '0');
  const d = sharedDir('ownlock', 'sticky');
  const lock = join(d, '.img.ch-tar2dir.lock');
  const held = await holdLock(victim, lock);
  try {
    const r = await asVictim('ch-tar2dir', ['-v', tarball, d], { env: { CH_TAR2DIR_LOCK_TIMEOUT: '1' }, timeout: 20_000 });
    t.false(r.timedOut);
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, /waiting for another ch-tar2dir/);
    t.regex(r.stderr, /another ch-tar2dir of yours has held this lock for over 1 s; giving up \(CH_TAR2DIR_LOCK_TIMEOUT/);
    const bad = await asVictim('ch-tar2dir', [tarball, d], { env: { CH_TAR2DIR_LOCK_TIMEOUT: 'soon' } });
    t.is(bad.exitCode, 2, bad.stderr);
  } finally {
    await held.release();
  }
});

for (const protect of ['0', '1']) {
  serial(`ch-run --join: planted /dev/shm directories and files don't block or redirect the group (protected_symlinks=${protect})${why}`, async (t) => {
    writeFileSync(SYSCTL, protect);
    const uid = victim.uid;
    const tagName = `shared-dirs-${protect}`;
    const plants = [`/dev/shm/.chtk-join.${uid}`, `/dev/shm/.chtk-join.${uid}.1`, `/dev/shm/.chtk-join.${uid}.2`, `/dev/shm/.chtk-join.${uid}.${tagName}`];
    const cleanup = () => { for (const p of [...plants, `/dev/shm/.chtk-join.${uid}.3`]) rmSync(p, { recursive: true, force: true }); };
    cleanup();
    const before = preciousSum();
    try {
      await plant(t, `mkdir -m 0777 ${plants[0]} && ln -s ${precious} ${plants[1]} && : > ${plants[2]} && chmod 666 ${plants[2]}
        && : > ${plants[3]} && chmod 666 ${plants[3]}`);
      const peer = () => asVictim('ch-run', ['--join', '--join-ct=2', `--join-tag=${tagName}`, image('busybox'), '--',
        'sh', '-c', 'echo $(readlink /proc/self/ns/user)'], { env: { CH_RUN_JOIN_TIMEOUT: '20' } });
      const [a, b] = await Promise.all([peer(), peer()]);
      t.is(a.exitCode, 0, a.stderr);
      t.is(b.exitCode, 0, b.stderr);
      t.is(a.stdout, b.stdout, 'both peers in one user namespace');
      t.is(preciousSum(), before);
      t.deepEqual(readdirSync(precious).sort(), ['notes.txt', 'work']);
      for (const p of plants) t.is(lstatSync(p).uid, attacker.uid, `${p} left as it was`);
      t.false(existsSync(`/dev/shm/.chtk-join.${uid}.3`), 'the group tidied its own directory away');
    } finally {
      cleanup();
    }
  });
}

/** A fake podman on PATH whose export is the busybox test image. */
function fakeBuilder(dir) {
  mkdirSync(dir, { recursive: true });
  symlinkSync(process.execPath, join(dir, 'node'));
  // setpriv: runAs starts the command through it; tar and cat: the fake podman's.
  for (const tool of ['tar', 'cat', 'setpriv']) symlinkSync(`/usr/bin/${tool}`, join(dir, tool));
  writeFileSync(join(dir, 'podman'), `#!/bin/sh
case "$1" in
  image) echo '[{"Config":{"Env":["A=1"]}}]' ;;
  create) echo c0ffee ;;
  export) exec tar -C "${image('busybox')}" -cf - . ;;
  *) exit 0 ;;
esac
`, { mode: 0o755 });
  chmodSync(dir, 0o755);
  return dir;
}

for (const protect of ['0', '1']) {
  for (const kind of ['sticky', 'open']) {
    serial(`ch-builder2tar: planted temporaries and a planted output name in OUTDIR (protected_symlinks=${protect}, ${kind} dir)${why}`, async (t) => {
      writeFileSync(SYSCTL, protect);
      const d = sharedDir(`b2t-${protect}`, kind);
      const path = fakeBuilder(join(base, `b2t-path-${protect}-${kind}`));
      const before = preciousSum();
      // A temporary name of a dead PID (99999999 can't exist), pointing at the victim's files.
      await plant(t, `cd ${d} && ln -s ${precious} .img.tar.gz.ch-tmp.99999999 && ln -s ${precious}/notes.txt .img.tar.gz.ch-tmp.99999998.x
        && ln -s ${precious}/notes.txt img.tar.gz`);
      const r = await asVictim('ch-builder2tar', ['-b', 'podman', 'img', d], { env: { PATH: path } });
      t.is(r.exitCode, 1, r.stderr);
      t.regex(r.stderr, /img\.tar\.gz: exists and is not a regular file; not replacing it/);
      t.is(preciousSum(), before);
      rmSync(join(d, 'img.tar.gz'));
      await plant(t, `: > ${d}/img.tar.gz`);
      const r2 = await asVictim('ch-builder2tar', ['-b', 'podman', 'img', d], { env: { PATH: path } });
      t.is(r2.exitCode, 1, r2.stderr);
      t.regex(r2.stderr, /img\.tar\.gz: belongs to chattack .*; not replacing it/);
      rmSync(join(d, 'img.tar.gz'));
      const ok = await asVictim('ch-builder2tar', ['-b', 'podman', 'img', d], { env: { PATH: path } });
      t.is(ok.exitCode, 0, ok.stderr);
      t.is(lstatSync(join(d, 'img.tar.gz')).uid, victim.uid);
      t.is(preciousSum(), before, "victim's files intact");
      assertPlantsKept(t, d, ['.img.tar.gz.ch-tmp.99999999', '.img.tar.gz.ch-tmp.99999998.x']);
      t.deepEqual(readdirSync(d).sort(), ['.img.tar.gz.ch-tmp.99999998.x', '.img.tar.gz.ch-tmp.99999999', 'img.tar.gz']);
    });
  }
}

async function waitFor(cond, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting for a condition');
    await new Promise((r) => setTimeout(r, 50));
  }
}

