// Faults and load for ch-run: SIGKILL during launch, 1000 sequential and 200
// concurrent launches, two users side by side. After each batch: no leaked
// processes, host mounts, fds, /dev/shm files or generated /tmp files.
//
// Runs as dedicated users (chsec1, chsec2) so that other test runs on the
// machine using the usual test user can't disturb the leak counts.

import test from 'ava';
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, image } from '../helpers/env.js';
import { copyBusybox, ensureUser, isRoot, leakSnapshot, processesOf, runAs, scratch } from './lib.js';

let img, u1, u2;
const CH_RUN = () => join(BIN, 'ch-run');

test.before(async () => {
  if (!isRoot) return;
  u1 = await ensureUser('chsec1');
  u2 = await ensureUser('chsec2');
  img = await copyBusybox(join(scratch('faults'), 'img'));
});

/** Wait (bounded) for UID's processes to go; exiting containers may lag a moment. */
async function settled(uid) {
  for (let i = 0; i < 100 && processesOf(uid).length > 0; i++) await sleep(50);
}

function assertNoLeaks(t, before, uid, what) {
  const after = leakSnapshot(uid, img);
  t.deepEqual(after.processes, [], `${what}: no processes left`);
  t.deepEqual(after.hostMounts, before.hostMounts, `${what}: host mount table unchanged`);
  t.deepEqual(after.shm, before.shm, `${what}: no /dev/shm files left`);
  t.deepEqual(after.tmpGenerated, before.tmpGenerated, `${what}: no generated /tmp files left`);
}

test.serial('ch-run adds no fds: the command holds only what the caller passed', async (t) => {
  if (!isRoot) { t.pass(); return; }
  // Look at the running command's fds from outside (ch-run, the core and the
  // command share one PID), against the same command started without ch-run:
  // our own caller may hand down fds of its own; ch-run must add none.
  const fdsOf = async (argv) => {
    const p = spawn('setpriv', [`--reuid=${u1.uid}`, `--regid=${u1.gid}`, '--clear-groups', '--', ...argv],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: '/usr/bin:/bin' } });
    let fds = null;
    for (let i = 0; i < 200; i++) {
      await sleep(25);
      let comm = '';
      try { comm = readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim(); } catch { break; }
      if (comm === 'sleep') {
        fds = readdirSync(`/proc/${p.pid}/fd`).map(Number).sort((a, b) => a - b);
        break;
      }
    }
    p.kill('SIGKILL');
    await new Promise((res) => p.once('exit', res));
    return fds;
  };
  const base = await fdsOf(['sleep', '30']);
  const inCt = await fdsOf([CH_RUN(), img, '--', 'sleep', '30']);
  t.log(`without ch-run: ${base}; in container: ${inCt}`);
  t.truthy(inCt, 'container command started');
  t.deepEqual(inCt, base, 'same fds as without ch-run');
});

test.serial('SIGKILL during launch, then re-run works', async (t) => {
  if (!isRoot) { t.pass(); return; }
  const before = leakSnapshot(u1.uid, img);
  let killed = 0;
  // Kill at spread-out moments: in the launcher, in Node, in the core's
  // mount setup, and once the command runs.
  for (let delay = 0; delay <= 150; delay += 5) {
    const p = spawn('setpriv', [`--reuid=${u1.uid}`, `--regid=${u1.gid}`, '--clear-groups', '--',
      CH_RUN(), '-t', img, '--', 'sleep', '30'], { stdio: 'ignore', env: { PATH: '/usr/bin:/bin' } });
    await sleep(delay);
    // setpriv execs ch-run, which execs node, the core, the command: one PID.
    p.kill('SIGKILL');
    await new Promise((res) => p.once('exit', res));
    killed++;
    const r = await runAs(u1, CH_RUN(), [img, '--', 'echo', 'again']);
    t.is(r.exitCode, 0, `re-run after kill at ${delay} ms: ${r.stderr}`);
    t.is(r.stdout, 'again');
  }
  await settled(u1.uid);
  assertNoLeaks(t, before, u1.uid, `${killed} SIGKILLs`);
  t.log(`${killed} launches killed with SIGKILL at 0..150 ms; every re-run worked`);
});

test.serial('SIGKILL of a --join winner: peers fail clearly, the tag is reusable', async (t) => {
  if (!isRoot) { t.pass(); return; }
  const before = leakSnapshot(u1.uid, img);
  const winner = spawn('setpriv', [`--reuid=${u1.uid}`, `--regid=${u1.gid}`, '--clear-groups', '--',
    CH_RUN(), '--join-ct', '2', '--join-tag', 'sec-kill', img, '--', 'sleep', '30'],
  { stdio: 'ignore', env: { PATH: '/usr/bin:/bin', CH_RUN_JOIN_TIMEOUT: '20' } });
  // Wait until it has created its group file (it then waits for its peer).
  for (let i = 0; i < 200 && !leakSnapshot(u1.uid, img).shm.some((f) => f.includes('sec-kill')); i++) await sleep(25);
  t.true(leakSnapshot(u1.uid, img).shm.some((f) => f.includes('sec-kill')), 'winner created its group file');
  winner.kill('SIGKILL');
  await new Promise((res) => winner.once('exit', res));
  // A new pair with the same tag must work: the stale group is recognised.
  const pair = [0, 1].map(() => runAs(u1, CH_RUN(), ['--join-ct', '2', '--join-tag', 'sec-kill', img, '--',
    'sh', '-c', 'readlink /proc/self/ns/mnt'], { env: { CH_RUN_JOIN_TIMEOUT: '20' } }));
  const [a, b] = await Promise.all(pair);
  t.log(a.stderr, b.stderr);
  t.is(a.exitCode, 0, a.stderr);
  t.is(b.exitCode, 0, b.stderr);
  t.is(a.stdout, b.stdout, 'both peers in one mount namespace');
  await settled(u1.uid);
  assertNoLeaks(t, before, u1.uid, 'join after SIGKILL');
});

test.serial('1000 sequential launches leak nothing', async (t) => {
  if (!isRoot) { t.pass(); return; }
  const before = leakSnapshot(u1.uid, img);
  const script = `i=0; while [ $i -lt 1000 ]; do i=$((i+1)); out=$("$0" "$1" -- echo ok) || { echo "launch $i failed"; exit 1; };`
    + ` [ "$out" = ok ] || { echo "launch $i: bad output: $out"; exit 1; }; done; echo "$i launches"`;
  const r = await runAs(u1, 'sh', ['-c', script, CH_RUN(), img], { timeout: 480_000 });
  t.log(r.stdout, r.stderr);
  t.is(r.exitCode, 0);
  t.regex(r.stdout, /^1000 launches$/m);
  await settled(u1.uid);
  assertNoLeaks(t, before, u1.uid, '1000 sequential launches');
});

test.serial('200 concurrent launches (8 at a time, some joined) leak nothing', async (t) => {
  if (!isRoot) { t.pass(); return; }
  const before = leakSnapshot(u1.uid, img);
  // 160 plain launches and 20 joined pairs, interleaved, 8 in flight.
  const jobs = [];
  for (let i = 0; i < 160; i++) jobs.push({ args: [img, '--', 'sh', '-c', `echo plain ${i}`], want: `plain ${i}` });
  for (let g = 0; g < 20; g++)
    for (let k = 0; k < 2; k++)
      jobs.push({ args: ['--join-ct', '2', '--join-tag', `sec-conc-${g}`, img, '--', 'sh', '-c', `echo join ${g}`], want: `join ${g}` });
  // Interleave so join peers are near each other but mixed with plain runs.
  jobs.sort((a, b) => (a.want.split(' ')[1] % 10) - (b.want.split(' ')[1] % 10));
  let next = 0, done = 0;
  const failures = [];
  async function worker() {
    while (next < jobs.length) {
      const job = jobs[next++];
      const r = await runAs(u1, CH_RUN(), job.args, { env: { CH_RUN_JOIN_TIMEOUT: '60' } });
      if (r.exitCode !== 0 || r.stdout !== job.want) failures.push(`${job.want}: exit ${r.exitCode}: ${r.stderr}`);
      done++;
    }
  }
  await Promise.all(Array.from({ length: 8 }, worker));
  t.is(done, 200);
  t.deepEqual(failures, []);
  await settled(u1.uid);
  assertNoLeaks(t, before, u1.uid, '200 concurrent launches');
});

test.serial("two users' containers don't see each other's generated files", async (t) => {
  if (!isRoot) { t.pass(); return; }
  // Each user's container shows its own identity in /etc/passwd and /etc/group.
  for (const u of [u1, u2]) {
    const r = await runAs(u, CH_RUN(), [img, '--', 'sh', '-c', 'cat /etc/passwd /etc/group']);
    t.is(r.exitCode, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`^${u.name}:`, 'm'));
    const otherName = u === u1 ? u2.name : u1.name;
    t.notRegex(r.stdout, new RegExp(`^${otherName}:`, 'm'), `${u.name} doesn't see ${otherName}`);
  }
  // While u2 launches in a loop, u1 (inside a container, /tmp shared with the
  // host) hunts for u2's generated files in /tmp: ch-run stages them on a
  // tmpfs that exists only in u2's container, so there is nothing to find —
  // at most an empty, unlistable directory for an instant.
  const loop = runAs(u2, 'sh', ['-c', 'i=0; while [ $i -lt 60 ]; do i=$((i+1)); "$0" "$1" -- true || exit 1; done', CH_RUN(), img],
    { timeout: 300_000 });
  const hunter = runAs(u1, CH_RUN(), [img, '--', 'sh', '-c',
    'seen=0; read=0; end=$(( $(date +%s) + 8 )); while [ $(date +%s) -lt $end ]; do '
    + 'for f in /tmp/ch-run.* /tmp/ch-run.*/*; do [ -e "$f" ] || continue; [ -d "$f" ] && continue; '
    // only u2's: other test runs on this machine may have their own files here
    + `[ "$(stat -c %u "$f" 2>/dev/null)" = ${u2.uid} ] || continue; `
    + 'seen=$((seen+1)); echo "SEEN $f"; '
    + 'if cat "$f" >/dev/null 2>&1; then read=$((read+1)); echo "READ $f"; fi; done; done; echo "seen=$seen read=$read"']);
  const [l, h] = await Promise.all([loop, hunter]);
  t.is(l.exitCode, 0, l.stderr);
  t.is(h.exitCode, 0, h.stderr);
  t.log(h.stdout.split('\n').slice(-1)[0]);
  t.notRegex(h.stdout, /SEEN /, "u1 saw none of u2's generated files");
  t.notRegex(h.stdout, /READ /, "u1 could read none of u2's generated files");
  // u2's /dev/shm join files, if any exist, are private too.
  for (const f of readdirSync('/dev/shm').filter((n) => n.startsWith(`ch-run.${u2.uid}.`))) {
    const r = await runAs(u1, 'cat', [join('/dev/shm', f)]);
    t.not(r.exitCode, 0);
  }
  void readFileSync; void execa; void image;
});
