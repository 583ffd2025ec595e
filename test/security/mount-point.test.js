// ch-run -m DIR IMAGE.sqfs where another user can swap DIR (issue 20 #5). The
// attacker makes their own tree (a busybox root with /PWNED in it) and swaps
// it with the mount point by renameat2(RENAME_EXCHANGE) in a loop, while the
// victim launches again and again: a ch-run that checks the path and then
// resolves it again (to mount, to bind, to pivot) runs the attacker's tree
// as the victim's root. It must never; and a mount point that is not the
// caller's own directory (the attacker's, one others may write, a symlink)
// is refused with a clear error before anything is mounted.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, lstatSync, mkdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, image, isRoot, PKG } from '../helpers/env.js';
import { compileStatic, ensureUser, runAs, scratch, sharedDir as sharedDirIn } from './lib.js';

const serial = isRoot ? test.serial : test.skip;
const RUNS = 60;
const SHOW = 'if [ -e /PWNED ]; then echo ATTACKER; else echo image; fi';

let victim, attacker, base, sqfs, exchange;

test.before(async () => {
  if (!isRoot) return;
  victim = await ensureUser('chvictim');
  attacker = await ensureUser('chattack');
  base = scratch('mount-point');
  sqfs = join(base, 'bb.sqfs');
  await execa('mksquashfs', [image('busybox'), sqfs, '-noappend', '-quiet', '-no-progress', '-all-root']);
  chmodSync(sqfs, 0o644);
  exchange = await compileStatic('exchange.c', join(base, 'exchange'));
});

/** A fresh shared directory in this file's scratch: 'sticky' (like /var/tmp) or 'open' (0777, no sticky bit). */
const sharedDir = (label, kind) => sharedDirIn(base, label, kind);

async function as(user, script) {
  const r = await runAs(user, '/bin/sh', ['-c', script]);
  if (r.exitCode !== 0) throw new Error(`${user.name}: ${script}: ${r.stderr}`);
}

/** The attacker's tree: a root that would run the victim's command, marked. */
async function attackerTree(dir) {
  await as(attacker, `cp -a '${image('busybox')}' '${dir}/evil' && echo pwned > '${dir}/evil/PWNED'`);
}

const victimRun = (mp, opts = {}) => runAs(victim, join(BIN, 'ch-run'), ['-m', mp, sqfs, '--', 'sh', '-c', SHOW],
  { timeout: 60_000, ...opts });

/** RUNS launches while the attacker swaps DIR/mp and DIR/evil; what each ended as. */
async function race(t, dir) {
  const swapper = runAs(attacker, exchange, [join(dir, 'mp'), join(dir, 'evil'), '300']);
  const seen = { image: 0, attacker: 0, refused: 0 };
  const other = [];
  try {
    for (let i = 0; i < RUNS; i++) {
      const r = await victimRun(join(dir, 'mp'));
      if (r.stdout.includes('ATTACKER')) seen.attacker++;
      else if (r.exitCode === 0 && r.stdout === 'image') seen.image++;
      else if (r.exitCode === 31 && /--mount: can't use .*mp: |SquashFS mount point .*mp: |mount point .*mp changed while mounting/.test(r.stderr)) seen.refused++;
      else other.push(`exit ${r.exitCode}: ${r.stdout} ${r.stderr}`);
    }
  } finally {
    swapper.kill('SIGTERM');
  }
  const s = await swapper;
  t.regex(s.stdout, /^[1-9][0-9]* swaps/, `the attacker really swapped: ${s.stdout} ${s.stderr}`);
  t.log(dir, seen, other.slice(0, 3));
  t.is(seen.attacker, 0, `the attacker's tree ran as the victim's root in ${seen.attacker} of ${RUNS} launches`);
  t.deepEqual(other, [], 'every launch either ran the image or refused the mount point clearly');
  return seen;
}

serial('race as reported: the attacker\'s sticky/mp swapped with their tree never runs; refused', async (t) => {
  const dir = sharedDir('race', 'sticky');
  await as(attacker, `mkdir -m 755 '${dir}/mp'`);
  await attackerTree(dir);
  const seen = await race(t, dir);
  t.is(seen.image, 0, 'an attacker-owned mount point is never used');
});

serial('race on the victim\'s own 0700 mp in an open directory: only the image ever runs', async (t) => {
  // Here the attacker may rename the victim's directory (no sticky bit):
  // whatever the path names later, the mount and the root are the
  // directory that was checked, or the launch refuses.
  const dir = sharedDir('race', 'open');
  await as(victim, `mkdir -m 700 '${dir}/mp'`);
  await attackerTree(dir);
  await race(t, dir);
  // (Launches in the race run the image only when the path held still; how
  // often depends on the machine's load.) The swaps over, the victim's own
  // directory back under its name: it works.
  if (lstatSync(join(dir, 'mp')).uid !== victim.uid) {
    renameSync(join(dir, 'mp'), join(dir, 'tmp'));
    renameSync(join(dir, 'evil'), join(dir, 'mp'));
  }
  const r = await victimRun(join(dir, 'mp'));
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'image');
});

serial('-m must be the caller\'s own directory, not writable by others, not a symlink', async (t) => {
  const dir = sharedDir('own', 'sticky');
  await as(attacker, `mkdir -m 700 '${dir}/theirs' && mkdir -m 777 '${dir}/theirs-open'`);
  await as(victim, `mkdir -m 700 '${dir}/mine' && mkdir -m 755 '${dir}/mine-755' && mkdir -m 775 '${dir}/mine-775' `
    + `&& mkdir -m 777 '${dir}/mine-777' && ln -s mine '${dir}/link'`);
  for (const [name, re] of [
    ['theirs', /--mount: can't use .*\/theirs: owned by uid \d+, not you \(uid \d+\); use a directory of your own/],
    ['theirs-open', /--mount: can't use .*\/theirs-open: owned by uid \d+, not you/],
    ['mine-775', /--mount: can't use .*\/mine-775: mode 775 lets others write to it \(chmod go-w it\)/],
    ['mine-777', /--mount: can't use .*\/mine-777: mode 777 lets others write to it/],
    ['link', /--mount: can't use .*\/link: it is a symlink; give the directory itself/],
  ]) {
    const r = await victimRun(join(dir, name));
    t.is(r.exitCode, 31, `${name}: ${r.stdout} ${r.stderr}`);
    t.regex(r.stderr, re, name);
    t.notRegex(r.stdout, /ATTACKER|image/, `${name}: nothing ran`);
  }
  // The caller's own directory, 0700 or 0755 (what mkdir makes; Charliecloud's tests use one).
  for (const name of ['mine', 'mine-755']) {
    const r = await victimRun(join(dir, name));
    t.is(r.exitCode, 0, `${name}: ${r.stderr}`);
    t.is(r.stdout, 'image', name);
  }
  // A symlink higher up the path is the user's own business (the last component is checked).
  symlinkSync(dir, join(base, 'via-link'));
  const r = await victimRun(join(base, 'via-link', 'mine'));
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'image');
});

serial('the core checks the mount point itself (a memoized plan reaches it without the front end)', async (t) => {
  const dir = sharedDir('core', 'sticky');
  await as(attacker, `mkdir -m 700 '${dir}/theirs'`);
  await as(victim, `mkdir -m 777 '${dir}/mine-777' && mkdir -m 700 '${dir}/mine' && ln -s mine '${dir}/link'`);
  // A plan as the front end writes it (lib/run/plan-output.ts), on the core's stdin: squash IMAGE
  // SQUASHFUSE TIMEOUT LINGER THREADS; a private mount (linger 0) and a shared one (native/core/holder.c).
  for (const linger of ['0', '30000']) {
  const plan = (root) => Buffer.from(['CHPLAN1', 'verbose', '0', 'root', root, 'squash', sqfs, '/usr/bin/squashfuse',
    '10000', linger, '0', 'arg', '/bin/true', 'end', ''].join('\0'));
  for (const [name, re] of [
    ['theirs', /can't use SquashFS mount point .*\/theirs: not owned by you \(uid \d+\); use a directory of your own/],
    ['mine-777', /can't use SquashFS mount point .*\/mine-777: mode 777 lets others write to it/],
    ['link', /can't use SquashFS mount point .*\/link: it is a symlink; give the directory itself/],
  ]) {
    const r = await runAs(victim, join(PKG, 'build/Release/ch-run-core'), ['0', '0', '0'], { input: plan(join(dir, name)) });
    t.is(r.exitCode, 31, `${name} (linger ${linger}): ${r.stderr}`);
    t.regex(r.stderr, re, name);
  }
  }
});
