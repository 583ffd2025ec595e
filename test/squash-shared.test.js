// One SquashFS mount per node, user and image (issue #23, native/core/holder.c):
// the first launch of a .sqfs starts a holder (its own user+mount namespace,
// the FUSE mount, squashfuse its child); later launches of the same user and
// image enter it and make their own mount namespace from there; it ends
// CH_RUN_SQUASH_LINGER seconds after its last user. Real squashfuse, as the
// unprivileged test user. Two users and planted names: test/security/squash-holder.test.js.

import test from 'ava';
import { execa } from 'execa';
import { readdirSync, readFileSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, ch as chBase, image, needs, noFuse, testUser, userEnv } from './helpers/env.js';
import { imageCopy, ownedByUser, scratch } from './helpers/fixtures.js';

const fuseTest = needs(test, noFuse, { tool: true });
const fuseSerial = needs(test.serial, noFuse, { tool: true });
const SWITCHES = Object.fromEntries(['CH_RUN_NO_PIDFD_OPEN'].filter((v) => process.env[v] !== undefined)
  .map((v) => [v, process.env[v]]));

/** A mark of one test's processes (the holder and squashfuse inherit the launching core's environment). */
function marked() {
  const mark = `CHTK_SQ_SHARED=${process.pid}.${Math.random().toString(36).slice(2)}`;
  const [k, v] = mark.split('=');
  const ch = (args, env = {}, opts = {}) => chBase('ch-run', args,
    { ...opts, env: { CH_RUN_SQUASH_LINGER: '2', ...SWITCHES, [k]: v, ...env } });
  /** Our processes: { pid, ppid, state, cmd }. */
  const procs = () => {
    const uid = testUser().uid, out = [];
    for (const pid of readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
      try {
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        if (Number(/^Uid:\s+(\d+)/m.exec(status)[1]) !== uid) continue;
        if (!readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(mark)) continue;
        out.push({ pid: Number(pid), ppid: Number(/^PPid:\s+(\d+)/m.exec(status)[1]),
          state: /^State:\s+(\S)/m.exec(status)[1], cmd: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() });
      } catch { /* gone */ }
    }
    return out;
  };
  const fuses = () => procs().filter((p) => /^squashfuse(_ll)? /.test(p.cmd) && p.state !== 'Z');
  /** Bounded wait until none of our processes is left (but what KEEP allows); what is left. */
  const gone = async (ms = 20_000, keep = () => false) => {
    const deadline = Date.now() + ms;
    const left = () => procs().filter((p) => p.state !== 'Z' && !keep(p));
    while (left().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return left().map((p) => `${p.pid} ${p.state} ${p.cmd}`);
  };
  return { ch, procs, fuses, gone };
}

/**
 * No process of the test user stuck in D state (uninterruptible: waiting on
 * a dead FUSE connection for ever, as an early keeper left them when
 * squashfuse died before FUSE's INIT). Disk I/O puts processes in D for a
 * moment, and other users' work on this machine too: only the test user's,
 * and only those still in D after 5 s.
 */
async function noDState(t) {
  const stuck = async () => (await execa('ps', ['-o', 'stat=,pid=,cmd=', '-u', String(testUser().uid)], { reject: false }))
    .stdout.split('\n').filter((l) => /^D/.test(l.trim()));
  let d = await stuck();
  for (let i = 0; i < 50 && d.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    d = await stuck();
  }
  t.deepEqual(d, [], 'no process left in D state');
}

/** DIR made into a .sqfs by the test user. */
async function sqfs(t, dir = image('busybox'), name = 'img.sqfs') {
  const out = join(await scratch(t, 'sqs'), name);
  const argv = [...asUser(), 'mksquashfs', dir, out, '-noappend', '-quiet', '-no-progress'];
  const r = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  if (r.exitCode !== 0) throw new Error(`mksquashfs: ${r.stderr}`);
  return out;
}

/** Start ch-run; resolves `ready` once its command printed "ready". */
function started(ch, args, env = {}) {
  const p = ch(args, env);
  const ready = new Promise((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d) => { out += d; if (out.includes('ready')) resolve(); });
    p.then((r) => reject(new Error(`ended before ready: ${r.exitCode} ${r.stderr}`)));
  });
  return { p, ready };
}

/** The major:minor of the container's root mount (the FUSE mount's), from its mountinfo. */
const ROOT_DEV = 'grep " / / " /proc/self/mountinfo | cut -d" " -f3';

fuseTest('two launches in a row share one mount: one squashfuse, the same holder; gone after the linger', async (t) => {
  const { ch, fuses, gone } = marked();
  const img = await sqfs(t);
  // A linger long enough for the second launch to come on a loaded machine
  // (2 s was not, in a CI run: the holder had retired).
  const linger = { CH_RUN_SQUASH_LINGER: '10' };
  const a = await ch(['-v', img, '--', 'sh', '-c', ROOT_DEV], linger);
  t.is(a.exitCode, 0, a.stderr);
  t.regex(a.stderr, /mounted at .*shared \(holder started\)/);
  const first = fuses();
  t.is(first.length, 1, 'the first launch left its squashfuse for the linger');
  const b = await ch(['-v', img, '--', 'sh', '-c', ROOT_DEV], linger);
  t.is(b.exitCode, 0, b.stderr);
  t.notRegex(b.stderr, /holder started/, 'no squashfuse start on the second launch');
  t.regex(b.stderr, /mounted at .* \(shared\)/);
  t.is(b.stdout, a.stdout, 'the same mount');
  t.deepEqual(fuses().map((p) => p.pid), first.map((p) => p.pid), 'the same squashfuse');
  // It serves a connection the holder mounted: no capability, no_new_privs.
  const status = readFileSync(`/proc/${first[0].pid}/status`, 'utf8');
  t.regex(status, /^CapEff:\s+0+$/m);
  t.regex(status, /^NoNewPrivs:\s+1$/m);
  t.deepEqual(await gone(30_000), [], 'holder and squashfuse gone after the linger');
});

fuseTest('8 concurrent launches race to create the mount and all end on one', async (t) => {
  const { ch, fuses, gone } = marked();
  const img = await sqfs(t);
  const rs = await Promise.all(Array.from({ length: 8 }, () => ch([img, '--', 'sh', '-c', ROOT_DEV], { CH_RUN_SQUASH_LINGER: '3' })));
  for (const r of rs) t.is(r.exitCode, 0, r.stderr);
  t.is(new Set(rs.map((r) => r.stdout)).size, 1, `one mount: ${rs.map((r) => r.stdout)}`);
  t.is(fuses().length, 1, 'one squashfuse');
  t.deepEqual(await gone(), []);
});

fuseTest('a replaced image gets a new mount; the old one goes after its last user', async (t) => {
  const { ch, fuses, gone } = marked();
  const tree = await imageCopy(t);
  const img = await sqfs(t, tree);
  const old = started(ch, [img, '--', 'sh', '-c', 'echo ready; read x; test -e /NEW && echo new || echo old'], { CH_RUN_SQUASH_LINGER: '1' });
  t.teardown(() => old.p.kill('SIGKILL'));
  await old.ready;
  const oldFuse = fuses();
  t.is(oldFuse.length, 1);
  writeFileSync(join(tree, 'NEW'), 'new\n');
  await ownedByUser(join(tree, 'NEW'));
  const next = await sqfs(t, tree, 'next.sqfs');
  renameSync(next, img);   // replaced: another inode
  const r = await ch([img, '--', 'cat', '/NEW'], { CH_RUN_SQUASH_LINGER: '1' });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'new', 'the new launch sees the new image');
  t.is(fuses().length, 2, 'a second mount while the old one has a user');
  old.p.stdin.write('go\n');
  const o = await old.p;
  t.is(o.stdout, 'ready\nold', 'the old container kept its image to the end');
  t.deepEqual(await gone(), [], 'both retired after their last user and the linger');
});

for (const victim of ['holder', 'squashfuse']) {
  fuseSerial(`SIGKILL of the ${victim}: a running container gets a clear error, the next launch mounts afresh, nothing left`, async (t) => {
    const { ch, fuses, gone } = marked();
    const img = await sqfs(t);
    // /ch/metadata.json: read by no one before (never in the page cache).
    const c = started(ch, [img, '--', 'sh', '-c', 'echo ready; read x; (read y < /ch/metadata.json); echo "read: $?"']);
    t.teardown(() => c.p.kill('SIGKILL'));
    await c.ready;
    const [fuse] = fuses();
    process.kill(victim === 'holder' ? fuse.ppid : fuse.pid, 'SIGKILL');
    t.deepEqual(await gone(5000, (p) => !p.cmd.startsWith('squashfuse') && p.pid !== fuse.ppid), [],
      'squashfuse and holder end together');
    c.p.stdin.write('go\n');
    const r = await c.p;
    // ENOTCONN from the dead connection; or, where the shell touches a page
    // of its own binary (busybox, from the image) not yet in memory, SIGBUS
    // (the shell then dies, or says so of its subshell).
    const what = JSON.stringify([r.exitCode, r.signal, r.stdout, r.stderr]);
    t.notRegex(r.stdout, /read: 0/, what);
    t.true(/read: [1-9]/.test(r.stdout) || r.exitCode !== 0 || r.signal !== undefined, what);
    t.regex(`${r.stderr} ${r.signal}`, /not connected|connection abort|Bus error|SIGBUS/i, what);
    const again = await ch(['-v', img, '--', 'cat', '/ch/metadata.json']);
    t.is(again.exitCode, 0, again.stderr);
    t.regex(again.stderr, /holder started/, 'a fresh mount');
    t.deepEqual(await gone(), []);
    await noDState(t);
  });
}

fuseSerial('SIGKILL of a container mid-run: the others keep working; nothing left after the linger', async (t) => {
  const { ch, fuses, gone } = marked();
  const img = await sqfs(t);
  const script = 'echo ready; read x; cat /ch/metadata.json >/dev/null && echo fine';
  const a = started(ch, [img, '--', 'sh', '-c', script]);
  const b = started(ch, [img, '--', 'sh', '-c', script]);
  t.teardown(() => { a.p.kill('SIGKILL'); b.p.kill('SIGKILL'); });
  await Promise.all([a.ready, b.ready]);
  t.is(fuses().length, 1);
  a.p.kill('SIGKILL');
  t.is((await a.p).signal, 'SIGKILL');
  b.p.stdin.write('go\n');
  const r = await b.p;
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'ready\nfine');
  t.deepEqual(await gone(), []);
  await noDState(t);
});

for (const linger of ['2', '0']) {
  fuseTest(`--join with a .sqfs: the peers share one container over one mount (linger ${linger})`, async (t) => {
    const { ch, fuses, gone } = marked();
    const img = await sqfs(t);
    const tag = `sq-${Math.random().toString(36).slice(2)}`;
    const show = 'readlink /proc/self/ns/mnt; readlink /proc/self/ns/user; cat /ch/metadata.json >/dev/null && echo read';
    const rs = await Promise.all(Array.from({ length: 4 }, () =>
      ch(['-v', '--join-ct=4', `--join-tag=${tag}`, img, '--', 'sh', '-c', show], { CH_RUN_SQUASH_LINGER: linger })));
    for (const r of rs) t.is(r.exitCode, 0, r.stderr);
    t.is(new Set(rs.map((r) => r.stdout)).size, 1, `one container: ${rs.map((r) => r.stdout)}`);
    t.regex(rs[0].stdout, /read$/);
    t.is(rs.filter((r) => /join: winner/.test(r.stderr)).length, 1);
    t.true(fuses().length <= 1, 'one squashfuse (gone already with linger 0)');
    t.deepEqual(await gone(), []);
  });
}

fuseTest('CH_RUN_SQUASH_LINGER=0: a private mount per launch, gone with its command, as before', async (t) => {
  const { ch, fuses, procs } = marked();
  const img = await sqfs(t);
  const env = { CH_RUN_SQUASH_LINGER: '0' };
  const a = started(ch, [img, '--', 'sh', '-c', `echo ready; read x; ${ROOT_DEV}`], env);
  const b = started(ch, [img, '--', 'sh', '-c', `echo ready; read x; ${ROOT_DEV}`], env);
  t.teardown(() => { a.p.kill('SIGKILL'); b.p.kill('SIGKILL'); });
  await Promise.all([a.ready, b.ready]);
  const f = fuses();
  t.is(f.length, 2, 'one squashfuse each');
  for (const p of f) t.true(p.cmd.includes(img), `squashfuse serves the image by its path: ${p.cmd}`);
  a.p.stdin.write('x\n'); b.p.stdin.write('x\n');
  const [ra, rb] = await Promise.all([a.p, b.p]);
  t.not(ra.stdout, rb.stdout, 'two mounts');
  // The keeper ends squashfuse when the command ends: no linger to wait for.
  for (let i = 0; i < 100 && procs().some((p) => p.state !== 'Z'); i++) await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(procs().filter((p) => p.state !== 'Z'), []);
});

fuseTest('CH_RUN_SQUASH_THREADS picks squashfuse\'s threads; bad values of it and of CH_RUN_SQUASH_LINGER are errors', async (t) => {
  const { ch, fuses, gone } = marked();
  const img = await sqfs(t);
  // Unset: single-threaded where squashfuse may use at most 2 CPUs (docs/design.md, "FUSE threads").
  const few = Number((await execa('nproc')).stdout) <= 2;
  for (const [v, want] of [['1', / -s /], ['4', / -o max_threads=4 /], ['', few ? / -s / : /^squashfuse -f [^-]/]]) {
    const a = started(ch, [img, '--', 'sh', '-c', 'echo ready; read x'], { CH_RUN_SQUASH_THREADS: v, CH_RUN_SQUASH_LINGER: '0' });
    await a.ready;
    t.regex(fuses()[0]?.cmd ?? '', want, `CH_RUN_SQUASH_THREADS='${v}'`);
    a.p.stdin.write('x\n');
    t.is((await a.p).exitCode, 0);
  }
  for (const [k, v] of [['CH_RUN_SQUASH_LINGER', 'soon'], ['CH_RUN_SQUASH_LINGER', '-1'], ['CH_RUN_SQUASH_THREADS', 'many']]) {
    const r = await ch([img, '--', 'true'], { [k]: v });
    t.is(r.exitCode, 31, r.stderr);
    t.regex(r.stderr, new RegExp(`${k}: want .*got '${v}'`));
  }
  t.deepEqual(await gone(), []);
});

fuseTest('the holder keeps none of the caller\'s descriptors: a pipe on fd 3 ends with ch-run, not with the linger', async (t) => {
  const { ch, fuses, gone } = marked();
  const img = await sqfs(t);
  const t0 = Date.now();
  // execa waits for every pipe it gave the child to close, fd 3 too.
  const r = await ch([img, '--', 'true'], { CH_RUN_SQUASH_LINGER: '20' }, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  t.is(r.exitCode, 0, r.stderr);
  t.true(Date.now() - t0 < 15_000, `ch-run's pipes closed after ${Date.now() - t0} ms`);
  const [f] = fuses();
  t.truthy(f, 'the holder lingers');
  const held = readdirSync(`/proc/${f.ppid}/fd`).map((n) => { try { return readlinkSync(`/proc/${f.ppid}/fd/${n}`); } catch { return '?'; } });
  // One pipe: its own, squashfuse's stderr; none of the caller's (fd 3, stdio).
  t.is(held.filter((l) => l.startsWith('pipe:')).length, 1, `no pipe of the caller's: ${held.join(' ')}`);
  process.kill(f.ppid, 'SIGKILL');   // the test is over: not the 20 s linger
  t.deepEqual(await gone(), []);
});
