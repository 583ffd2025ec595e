// Faults and load for ch-run: SIGKILL during launch, 1000 sequential and 200
// concurrent launches, two users side by side. After each batch: no leaked
// processes, host mounts, fds, /dev/shm files or generated /tmp files.
//
// Runs as dedicated users (chsec1, chsec2) so that other test runs on the
// machine using the usual test user can't disturb the leak counts.

import test from 'ava';
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN } from '../helpers/env.js';
import { copyBusybox, joinFile, ensureUser, isRoot, joinGroup, leakSnapshot as snapshot, processesOf, runAs as runAsAny, scratch, stopAt, waitFor }
  from './lib.js';

let img, u1, u2, work;
const CH_RUN = () => join(BIN, 'ch-run');

// Every test here needs root: it runs as dedicated users so that the leak
// counts see only its own processes (as the invoking user they would see the
// test runner itself), and one test needs two users. Without root: skipped,
// and the title says why.
const serial = isRoot ? test.serial
  : (title, fn) => test.serial.skip(`${title} [skipped: not root; needs dedicated users chsec1/chsec2]`, fn);

test.before(async () => {
  if (!isRoot) return;
  u1 = await ensureUser('chsec1');
  u2 = await ensureUser('chsec2');
  work = scratch('faults');
  img = await copyBusybox(join(work, 'img'));
});

// Every process this file starts carries MARK in its environment (ch-run
// passes it into the container): the leak checks count only those, not
// those of another run of this file on the machine under the same users.
const MARK = `CH_TEST_FAULTS=${process.pid}`;
const [MARK_K, MARK_V] = MARK.split('=');
const runAs = (user, cmd, args, opts = {}) => runAsAny(user, cmd, args, { ...opts, env: { ...opts.env, [MARK_K]: MARK_V } });
const leakSnapshot = (uid, image) => snapshot(uid, image, MARK);

/** ch-run as USER, spawned (not awaited), with the environment runAs gives. */
function spawnAs(user, args, env = {}) {
  return spawn('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', CH_RUN(), ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: '/usr/bin:/bin', [MARK_K]: MARK_V, ...env } });
}

/** PID is a --join winner that has made the container and waits for its peers. */
const winnerWaiting = (user, tag, pid) => (w) => w.exe === CORE()
  && joinGroup(user.uid, tag)?.winner === pid && joinGroup(user.uid, tag)?.state === 'ready';

/** Resolves with { code, signal, stderr } once P has exited. */
function exited(p) {
  let stderr = '';
  p.stderr?.on('data', (b) => { stderr += b; });
  p.stdout?.resume();
  return new Promise((res) => {
    if (p.exitCode !== null || p.signalCode !== null) res({ code: p.exitCode, signal: p.signalCode, stderr });
    else p.once('exit', (code, signal) => res({ code, signal, stderr }));
  });
}

const HOST_USERNS = readlinkSync('/proc/self/ns/user');
const NODE = readlinkSync('/proc/self/exe');
// The launcher as run here (bin/ch-run: the build's copy of build/Release/ch-run,
// which npm links), and the core, which runs in the launcher's own process
// (native/launcher/launcher.c, run_core): one executable at every point held.
const LAUNCHER = () => join(BIN, 'ch-run');
const CORE = LAUNCHER;

/** The PIDs of PID's children. */
function childrenOf(pid) {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); }
  catch { return []; }
}

/** Wait (bounded) for UID's processes to go; exiting containers may lag a moment. */
async function settled(uid) {
  for (let i = 0; i < 100 && processesOf(uid, MARK).length > 0; i++) await sleep(50);
}

function assertNoLeaks(t, before, uid, what) {
  const after = leakSnapshot(uid, img);
  t.deepEqual(after.processes, [], `${what}: no processes left`);
  t.deepEqual(after.hostMounts, before.hostMounts, `${what}: host mount table unchanged`);
  t.deepEqual(after.shm, before.shm, `${what}: no /dev/shm files left`);
  t.deepEqual(after.tmpGenerated, before.tmpGenerated, `${what}: no generated /tmp files left`);
}

serial('ch-run adds no fds: the command holds only what the caller passed', async (t) => {
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

// Points of a launch where a SIGKILL can land, each held or recognised from
// outside: the process is stopped there (SIGSTOP) and checked before the kill.
// ch-run's launcher forks its Node front end: a CH_RUN_NODE that blocks on a
// FIFO before exec'ing Node holds the launcher waiting for its front end (the
// killed launcher's front end must die with it: no process may be left); a
// --join winner whose peer never comes holds the core after it has made the
// container (namespaces, mounts), before exec.
const LAUNCH_POINTS = [
  { name: 'waiting for its Node front end', hold: true, args: () => [img, '--', 'sleep', '30'],
    at: (w, pid) => w.exe === LAUNCHER() && childrenOf(pid).length > 0,
    check: (t, w) => t.is(w.userns, HOST_USERNS, 'not yet in a namespace') },
  { name: 'in the core, container made, before exec', args: (_, tag) => ['--join-ct', '2', '--join-tag', tag, img, '--', 'sleep', '30'],
    at: (w, pid, tag) => winnerWaiting(u1, tag, pid)(w),
    check: (t, w) => { t.is(w.exe, CORE()); t.not(w.userns, HOST_USERNS, 'inside its user namespace'); } },
  { name: 'the command running', args: () => ['-t', img, '--', 'sleep', '30'],
    at: (w) => w.comm === 'sleep', check: (t, w) => t.not(w.userns, HOST_USERNS, 'inside its user namespace') },
];

serial('SIGKILL during launch, at each point held from outside, then re-run works', async (t) => {
  const before = leakSnapshot(u1.uid, img);
  const fifo = join(work, 'hold.fifo');
  // Blocks until the FIFO is written, which never happens: only the kill ends it.
  const holdNode = join(work, 'hold-node');
  writeFileSync(holdNode, `#!/bin/sh\nread _ < "$CH_TEST_HOLD"\nexec ${NODE} "$@"\n`, { mode: 0o755 });
  let killed = 0;
  for (let round = 0; round < 3; round++) {
    for (const pt of LAUNCH_POINTS) {
      const what = `${pt.name} (round ${round})`;
      rmSync(fifo, { force: true });
      await execa('mkfifo', ['-m', '600', fifo]);
      await execa('chown', [`${u1.uid}:${u1.gid}`, fifo]);
      const tag = `sec-launch-${round}`;
      const hold = pt.hold ? { CH_RUN_NODE: holdNode, CH_TEST_HOLD: fifo } : {};
      const p = spawnAs(u1, pt.args(fifo, tag), { CH_RUN_JOIN_TIMEOUT: '120', ...hold });
      const done = exited(p);
      const w = await stopAt(p.pid, (x) => pt.at(x, p.pid, tag), what);
      if (!w) { t.fail(`${what}: ch-run ended before getting there: ${(await done).stderr}`); continue; }
      pt.check(t, w);
      p.kill('SIGKILL');
      const r = await done;
      t.is(r.signal, 'SIGKILL', `${what}: died of the SIGKILL`);
      killed++;
      // A killed join winner leaves its group file; the next run of the tag recognises it as stale.
      const again = await runAs(u1, CH_RUN(), ['--join-ct', '1', '--join-tag', tag, img, '--', 'echo', 'again']);
      t.is(again.exitCode, 0, `re-run after kill ${what}: ${again.stderr}`);
      t.is(again.stdout, 'again');
    }
  }
  rmSync(fifo, { force: true });
  await settled(u1.uid);
  assertNoLeaks(t, before, u1.uid, `${killed} SIGKILLs`);
  t.log(`${killed} launches killed with SIGKILL at ${LAUNCH_POINTS.length} points; every re-run worked`);
});

serial('SIGKILL of a --join winner: a joined peer keeps running, a later peer fails clearly, the tag is reusable', async (t) => {
  const before = leakSnapshot(u1.uid, img);
  const tag = 'sec-kill';
  const env = { CH_RUN_JOIN_TIMEOUT: '5' };
  // A group of 3: the winner makes the container and waits for two peers.
  const winner = spawnAs(u1, ['--join-ct', '3', '--join-tag', tag, img, '--', 'sleep', '30'], { CH_RUN_JOIN_TIMEOUT: '120' });
  const winnerDone = exited(winner);
  const w = await stopAt(winner.pid, winnerWaiting(u1, tag, winner.pid), 'the winner to make the container');
  t.truthy(w, 'winner reached its wait for peers');
  process.kill(winner.pid, 'SIGCONT');
  t.true(leakSnapshot(u1.uid, img).shm.some((f) => f.includes(tag)), 'winner created its group file');
  // The first peer joins and runs while the winner is still waiting for the third.
  const peer1 = await runAs(u1, CH_RUN(), ['--join-ct', '3', '--join-tag', tag, img, '--', 'readlink', '/proc/self/ns/user'], { env });
  t.is(peer1.exitCode, 0, peer1.stderr);
  t.is(peer1.stdout, w.userns, "the first peer ran in the winner's container");
  winner.kill('SIGKILL');
  t.is((await winnerDone).signal, 'SIGKILL');
  // The second peer finds a dead winner: it says so, starts a group of its own,
  // and when its peers don't come either, fails clearly instead of hanging.
  const peer2 = await runAs(u1, CH_RUN(), ['--join-ct', '3', '--join-tag', tag, img, '--', 'true'], { env });
  t.is(peer2.exitCode, 31, peer2.stderr);
  t.regex(peer2.stderr, new RegExp(`removing stale group /dev/shm/\\.chtk-join\\.${u1.uid}(\\.\\d+)?/${tag} \\(winner ${winner.pid} is gone\\)`));
  t.regex(peer2.stderr, /^ch-run\[\d+\]: error: join: timed out after 5000 ms: 1 of 3 peers joined group sec-kill/m);
  // A new pair with the same tag works.
  const pair = [0, 1].map(() => runAs(u1, CH_RUN(), ['--join-ct', '2', '--join-tag', tag, img, '--',
    'sh', '-c', 'readlink /proc/self/ns/mnt'], { env: { CH_RUN_JOIN_TIMEOUT: '60' } }));
  const [a, b] = await Promise.all(pair);
  t.is(a.exitCode, 0, a.stderr);
  t.is(b.exitCode, 0, b.stderr);
  t.is(a.stdout, b.stdout, 'both peers in one mount namespace');
  await settled(u1.uid);
  assertNoLeaks(t, before, u1.uid, 'join after SIGKILL');
});

serial('1000 sequential launches leak nothing', async (t) => {
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

serial('200 concurrent launches (8 at a time, some joined) leak nothing', async (t) => {
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

serial("two users' containers don't see each other's generated files", async (t) => {
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
  // at most an empty, unlistable directory for an instant. The two meet
  // through flag files: u2 starts once u1 is hunting, u1 stops once u2 is done.
  const flags = `/tmp/ch-test-faults-${process.pid}`;
  rmSync(flags, { recursive: true, force: true });
  mkdirSync(flags, { mode: 0o777 });
  await execa('chmod', ['1777', flags]);
  t.teardown(() => rmSync(flags, { recursive: true, force: true }));
  const loop = runAs(u2, 'sh', ['-c', 'n=0; while [ ! -e "$2/hunting" ]; do n=$((n+1)); [ $n -lt 2400 ] || exit 9; sleep 0.05; done; '
    + 'i=0; while [ $i -lt 60 ]; do i=$((i+1)); "$0" "$1" -- true || exit 1; done; touch "$2/done"', CH_RUN(), img, flags],
  { timeout: 300_000 });
  const hunter = runAs(u1, CH_RUN(), [img, '--', 'sh', '-c',
    `touch ${flags}/hunting; seen=0; read=0; rounds=0; while [ ! -e ${flags}/done ] && [ $rounds -lt 1000000 ]; do rounds=$((rounds+1)); `
    + 'for f in /tmp/ch-run.* /tmp/ch-run.*/*; do [ -e "$f" ] || continue; [ -d "$f" ] && continue; '
    // only u2's: other test runs on this machine may have their own files here
    + `[ "$(stat -c %u "$f" 2>/dev/null)" = ${u2.uid} ] || continue; `
    + 'seen=$((seen+1)); echo "SEEN $f"; '
    + 'if cat "$f" >/dev/null 2>&1; then read=$((read+1)); echo "READ $f"; fi; done; done; '
    + `[ -e ${flags}/done ] || echo "u2's loop never finished"; echo "rounds=$rounds seen=$seen read=$read"`]);
  const [l, h] = await Promise.all([loop, hunter]);
  t.is(l.exitCode, 0, l.stderr);
  t.is(h.exitCode, 0, h.stderr);
  t.log(h.stdout.split('\n').slice(-1)[0]);
  t.notRegex(h.stdout, /never finished/);
  t.notRegex(h.stdout, /SEEN /, "u1 saw none of u2's generated files");
  t.notRegex(h.stdout, /READ /, "u1 could read none of u2's generated files");

  // u2's --join group file, while it exists (u2's winner waiting for its
  // peer), is private: u1 can't read it or write it.
  const tag = 'sec-private';
  const shm = joinFile(u2.uid, tag);
  const winner = spawnAs(u2, ['--join-ct', '2', '--join-tag', tag, img, '--', 'true'], { CH_RUN_JOIN_TIMEOUT: '120' });
  const winnerDone = exited(winner);
  await waitFor(() => existsSync(shm) || winner.exitCode !== null, "u2's group file");
  t.true(existsSync(shm), "u2's winner made its group file");
  for (const argv of [['cat', shm], ['sh', '-c', `echo x >> ${shm}`], ['rm', '-f', shm]]) {
    const r = await runAs(u1, argv[0], argv.slice(1));
    t.not(r.exitCode, 0, `u1: ${argv.join(' ')}`);
  }
  t.true(existsSync(shm), 'still there');
  const peer = await runAs(u2, CH_RUN(), ['--join-ct', '2', '--join-tag', tag, img, '--', 'true']);
  t.is(peer.exitCode, 0, peer.stderr);
  t.is((await winnerDone).code, 0);
  t.false(existsSync(shm), 'removed once the group is complete');

  // /dev/shm is writable by everyone: whatever u1 plants under the name of
  // u2's join directory (a file, a world-writable file, a symlink, a directory
  // of u1's) is skipped, never used or followed, and u2's group still works.
  const elsewhere = `/dev/shm/ch-test-faults-${process.pid}`;
  const dirName = `/dev/shm/.chtk-join.${u2.uid}`;
  for (const [kind, make] of [['file', 'echo x >'], ['world-writable file', 'umask 0; echo x >'],
    ['symlink', `ln -s ${elsewhere}`], ['directory', 'umask 0; mkdir']]) {
    rmSync(dirName, { recursive: true, force: true });
    const pl = await runAs(u1, 'sh', ['-c', `${make} ${dirName}`]);
    t.is(pl.exitCode, 0, `u1 planted a ${kind}: ${pl.stderr}`);
    const r = await runAs(u2, CH_RUN(), ['--join-ct', '1', '--join-tag', `sec-planted-${kind.replaceAll(' ', '-')}`, img, '--', 'true'],
      { env: { CH_RUN_JOIN_TIMEOUT: '5' } });
    t.is(r.exitCode, 0, `${kind}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`join: ignoring ${dirName}:`), kind);
    t.false(existsSync(elsewhere), 'nothing created through the symlink');
    t.is(lstatSync(dirName).uid, u1.uid, `${kind} left as it was`);
    rmSync(dirName, { recursive: true, force: true });
  }
});
