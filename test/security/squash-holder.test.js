// Shared SquashFS mounts (issue #23, native/core/holder.c) between two
// accounts. The rendezvous is an abstract unix socket: no file anyone could
// plant a link at, but a name anyone may bind, and one everyone can read in
// /proc/net/unix. So the attacker learns the victim's name there and plants
// it (and the names after it): a listener that answers with a forged holder
// reply and the attacker's own namespaces, and names bound without
// listening. The victim must run its own image every time (a plant costs at
// most a fresh mount); the attacker must get nothing from the victim's
// holder; two users of one image path get a mount each.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, image, isRoot } from '../helpers/env.js';
import { CHECKS, ensureUser, runAs, scratch } from './lib.js';

const serial = isRoot ? test.serial : test.skip;
const PLANT = join(CHECKS, 'plant_sock.py');

let victim, attacker, base, sqfs;

test.before(async () => {
  if (!isRoot) return;
  victim = await ensureUser('chvictim');
  attacker = await ensureUser('chattack');
  base = scratch('squash-holder');
  sqfs = join(base, 'bb.sqfs');   // one image path, readable by both
  await execa('mksquashfs', [image('busybox'), sqfs, '-noappend', '-quiet', '-no-progress', '-all-root']);
  chmodSync(sqfs, 0o644);
});

const run = (user, args, env = {}, opts = {}) => runAs(user, join(BIN, 'ch-run'), args,
  { timeout: 120_000, env: { CH_RUN_SQUASH_LINGER: '1', ...env }, ...opts });

/**
 * USER's squashfuse processes serving this file's image: { pid, ppid }.
 * Only ours: other test files run .sqfs images as the same accounts, and
 * their holders linger (CH_RUN_SQUASH_LINGER's default) while this runs.
 */
function fuses(user) {
  const out = [];
  for (const pid of readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      if (Number(/^Uid:\s+(\d+)/m.exec(status)[1]) !== user.uid || /^State:\s+Z/m.test(status)) continue;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!/^squashfuse(_ll)?\0/.test(cmd) || !serves(pid, cmd)) continue;
      out.push({ pid: Number(pid), ppid: Number(/^PPid:\s+(\d+)/m.exec(status)[1]) });
    } catch { /* gone */ }
  }
  return out;
}

/** Does squashfuse PID (command line CMD) serve this file's image: named, or open as its /dev/fd/N? */
function serves(pid, cmd) {
  if (cmd.split('\0').includes(sqfs)) return true;
  return readdirSync(`/proc/${pid}/fd`).some((fd) => { try { return readlinkSync(`/proc/${pid}/fd/${fd}`) === sqfs; } catch { return false; } });
}

/** Bounded wait until USER has no squashfuse left. */
async function noFuses(user, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (fuses(user).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return fuses(user);
}

/**
 * The rendezvous names of USER's holders of this file's image, as anyone
 * reads them in /proc/net/unix (the socket inodes of the holder, squashfuse's
 * parent, pick its lines: another image's holder of the same user may linger).
 */
function names(user) {
  const inodes = new Set();
  for (const { ppid } of fuses(user)) {
    for (const fd of readdirSync(`/proc/${ppid}/fd`)) {
      try { const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${ppid}/fd/${fd}`)); if (m) inodes.add(m[1]); } catch { /* gone */ }
    }
  }
  return readFileSync('/proc/net/unix', 'utf8').split('\n').map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 8 && inodes.has(f[6]) && f[7].startsWith(`@chtk-sqfs.${user.uid}.`)).map((f) => f[7].slice(1));
}

/** Start ch-run as USER; resolves once its command printed "ready". */
function started(user, args, env = {}) {
  const p = run(user, args, env);
  const ready = new Promise((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d) => { out += d; if (out.includes('ready')) resolve(); });
    p.then((r) => reject(new Error(`ended before ready: ${r.exitCode} ${r.stderr}`)));
  });
  return { p, ready };
}

/** The attacker's plants (plant_sock.py), up until killed. */
async function planted(t, specs) {
  const p = runAs(attacker, '/usr/bin/python3', [PLANT, 'plant', ...specs]);
  t.teardown(() => p.kill('SIGKILL'));
  await new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => { if (String(d).includes('planted')) resolve(); });
    p.then((r) => reject(new Error(`plants failed: ${r.stderr}`)));
  });
  return { p };   // (a bare execa promise returned here would be awaited to its end)
}

const SHOW = 'cat /ch/metadata.json; echo; grep " / / " /proc/self/mountinfo';

serial('two users of one image path get a mount each; the attacker gets nothing from the victim\'s holder', async (t) => {
  const v = started(victim, [sqfs, '--', 'sh', '-c', 'echo ready; read x'], { CH_RUN_SQUASH_LINGER: '5' });
  t.teardown(() => v.p.kill('SIGKILL'));
  await v.ready;
  const a = await run(attacker, [sqfs, '--', 'sh', '-c', SHOW]);
  t.is(a.exitCode, 0, a.stderr);
  t.is(fuses(victim).length, 1, 'the victim\'s mount');
  t.is(fuses(attacker).length, 1, 'the attacker\'s own mount, not the victim\'s');
  // The victim's name, as anyone reads it; connecting gives nothing.
  const [name] = names(victim);
  t.truthy(name, 'the victim\'s holder is listening');
  const g = await runAs(attacker, '/usr/bin/python3', [PLANT, 'grab', name]);
  t.is(g.exitCode, 0, g.stderr);
  t.is(g.stdout, 'nothing', 'no namespaces, no reply for another uid');
  // Nor through /proc: the holder's root (and so the mount's content) is
  // not the attacker's to enter, nor its namespaces. (Its mountinfo, like
  // any process's, is readable by all: that a mount exists is no secret.)
  const holder = fuses(victim)[0].ppid;
  const mnt = `/var/tmp/${victim.name}.ch/mnt`;
  for (const cmd of [`ls /proc/${holder}/root${mnt}/bin`, `cat /proc/${holder}/root${mnt}/ch/metadata.json`,
    `nsenter -U -m -t ${holder} true`]) {
    const peek = await runAs(attacker, '/bin/sh', ['-c', cmd]);
    t.not(peek.exitCode, 0, cmd);
    t.notRegex(peek.stdout, /busybox|Entrypoint/, cmd);
  }
  v.p.stdin.write('x\n');
  t.is((await v.p).exitCode, 0);
  t.deepEqual(await noFuses(victim), []);
  t.deepEqual(await noFuses(attacker), []);
});

serial('planted rendezvous names cost the victim at most a fresh mount, never another\'s image', async (t) => {
  // Learn the victim's name as the attacker can: from /proc/net/unix while a holder runs.
  const v = started(victim, [sqfs, '--', 'sh', '-c', 'echo ready; read x']);
  t.teardown(() => v.p.kill('SIGKILL'));
  await v.ready;
  const [name] = names(victim);
  t.regex(name ?? '', /\.0$/);
  const stem = name.slice(0, -2);
  v.p.stdin.write('x\n');
  await v.p;
  t.deepEqual(await noFuses(victim), [], 'the holder retired; its name is free');

  // The first name: a listener answering with a forged reply and the attacker's namespaces.
  let { p: plants } = await planted(t, [`${stem}.0`]);
  let r = await run(victim, ['-v', sqfs, '--', 'sh', '-c', SHOW]);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /"Entrypoint":\["\/bin\/echo"\]/, 'the victim\'s image');
  t.regex(r.stdout, / - fuse\.squashfuse /, 'its root the SquashFUSE mount');
  t.regex(r.stderr, /shared mount's name is taken by another process; trying others/);
  t.regex(r.stderr, /holder started/, 'a fresh mount, at the next name');
  t.deepEqual(await noFuses(victim), []);
  plants.kill('SIGKILL');
  await plants;

  // Every name: listeners and names bound without listening, alternately.
  ({ p: plants } = await planted(t, Array.from({ length: 16 }, (_, i) => `${stem}.${i}:${i % 2 ? 'bound' : 'listen'}`)));
  r = await run(victim, ['-v', sqfs, '--', 'sh', '-c', SHOW]);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /"Entrypoint":\["\/bin\/echo"\]/, 'the victim\'s image');
  t.regex(r.stderr, /all 16 shared-mount names taken; mounting privately/);
  t.deepEqual(await noFuses(victim), [], 'the private mount ended with the command');
  plants.kill('SIGKILL');
});
