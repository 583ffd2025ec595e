// The SquashFS suite (test/squash.test.js) again, as on a kernel without
// pidfd_open(2) (before 5.3, e.g. RHEL 8's 4.18): the SquashFUSE keeper
// watches squashfuse and the probe with waitid(WNOWAIT) and the command
// through its /proc directory, asking every few milliseconds; so does a
// shared mount's holder with each user (test/squash-shared.test.js). The core's
// switch CH_RUN_NO_PIDFD_OPEN=1 forces that path here.

import './run-fallback-env.js?CH_RUN_NO_PIDFD_OPEN';
import './squash.test.js';
import './squash-shared.test.js';
import test from 'ava';
import { execa } from 'execa';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, BIN, ch, image, needs, noFuse, userEnv } from './helpers/env.js';
import { scratch } from './helpers/fixtures.js';

/** What the keeper (or shared holder) of the container whose environment has MARK holds open (it is squashfuse's parent). */
function keeperFds(mark) {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!/^squashfuse(_ll)?$/.test(cmd[0]) || !readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(mark)) continue;
    } catch { continue; }
    const keeper = /^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1];
    return readdirSync(`/proc/${keeper}/fd`).map((f) => { try { return readlinkSync(`/proc/${keeper}/fd/${f}`); } catch { return '?'; } });
  }
  return null;
}

/** Run ch-run IMG (ENV) until its command is up; return the keeper's fds, ch-run's PID and stderr. */
async function whileRunning(t, img, env) {
  const mark = `CHTK_NOPIDFD_MARK=${Math.random().toString(36).slice(2)}`;
  const p = ch('ch-run', ['-vv', img, '--', 'sh', '-c', 'echo ready; exec sleep 600'],
    { env: { ...env, [mark.split('=')[0]]: mark.split('=')[1] } });
  t.teardown(() => p.kill('SIGKILL'));
  await new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => { if (String(d).includes('ready')) resolve(); });
    p.then((r) => reject(new Error(`ended before ready: ${r.exitCode} ${r.stderr}`)));
  });
  const fds = keeperFds(mark);
  p.kill('SIGKILL');
  const r = await p;
  // A shared mount's holder lingers: the next launch must not find it.
  for (let i = 0; i < 500 && keeperFds(mark) !== null; i++) await new Promise((res) => setTimeout(res, 20));
  return { fds, pid: p.pid, stderr: r.stderr };
}

needs(test.serial, noFuse, { tool: true })('the switch takes effect: the keeper holds the command\'s /proc directory, no pidfd', async (t) => {
  const dir = await scratch(t, 'nopidfd');
  const img = join(dir, 'img.sqfs');
  const argv = [...asUser(), 'mksquashfs', image('busybox'), img, '-noappend', '-quiet', '-no-progress'];
  const m = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(m.exitCode, 0, m.stderr);
  // A private mount's keeper (linger 0) and a shared mount's holder (native/core/holder.c).
  for (const linger of ['0', '1']) {
    let w = await whileRunning(t, img, { CH_RUN_NO_PIDFD_OPEN: '1', CH_RUN_SQUASH_LINGER: linger });
    t.regex(w.stderr, /CH_RUN_NO_PIDFD_OPEN=1: watching squashfuse and the command without pidfds/);
    t.truthy(w.fds, 'found the keeper');
    t.false(w.fds.includes('anon_inode:[pidfd]'), w.fds.join(' '));
    t.true(w.fds.includes(`/proc/${w.pid}`), `the command's /proc directory: ${w.fds.join(' ')}`);
    w = await whileRunning(t, img, { CH_RUN_NO_PIDFD_OPEN: '', CH_RUN_SQUASH_LINGER: linger });
    t.notRegex(w.stderr, /without pidfds/);
    t.true(w.fds.includes('anon_inode:[pidfd]'), `by default (this kernel has pidfd_open) a pidfd: ${w.fds.join(' ')}`);
  }
});

// A kernel without pidfd_open, for real as far as ch-run can tell: a seccomp
// filter (x86_64) makes pidfd_open(2) fail with ENOSYS, as it does before
// Linux 5.3, for ch-run and everything it starts. No switch set.
const ENOSYS_PIDFD = `import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class F(ctypes.Structure): _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
class P(ctypes.Structure): _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(F))]
prog = (F * 6)(F(0x20, 0, 0, 4), F(0x15, 0, 3, 0xc000003e),   # arch == x86_64, else allow
               F(0x20, 0, 0, 0), F(0x15, 0, 1, 434),          # nr == pidfd_open
               F(0x06, 0, 0, 0x00050000 | 38), F(0x06, 0, 0, 0x7fff0000))   # ERRNO(ENOSYS); ALLOW
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(P(6, prog)), 0, 0) != 0:
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
`;

needs(test.serial, noFuse, { tool: true })('pidfd_open failing with ENOSYS (seccomp stands in for an old kernel): the fallback, chosen by itself', async (t) => {
  if (process.arch !== 'x64') { t.log(`skipped: the filter is written for x86_64, not ${process.arch}`); return t.pass(); }
  const dir = await scratch(t, 'enosys');
  const img = join(dir, 'img.sqfs');
  const mk = [...asUser(), 'mksquashfs', image('busybox'), img, '-noappend', '-quiet', '-no-progress'];
  const m = await execa(mk[0], mk.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(m.exitCode, 0, m.stderr);
  const run = (args) => {
    const argv = [...asUser(), 'python3', '-c', ENOSYS_PIDFD, join(BIN, 'ch-run'), ...args];
    // A shared mount's holder (the default), with a linger short enough to see it go.
    return execa(argv[0], argv.slice(1), { reject: false, env: userEnv(undefined, { CH_RUN_SQUASH_LINGER: '1' }), extendEnv: false, cwd: '/' });
  };
  let r = await run(['-vv', img, '--', 'sh', '-c', 'echo in; exit 3']);
  t.is(r.exitCode, 3, r.stderr);
  t.is(r.stdout, 'in');
  t.regex(r.stderr, /no pidfd_open\(2\) \(Linux < 5\.3\): watching squashfuse and the command without pidfds/);
  t.notRegex(r.stderr, /CH_RUN_NO_PIDFD_OPEN/);
  // squashfuse serving IMG: named in its arguments, or (a shared mount's) open as /dev/fd/N.
  const fuse = () => readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!/^squashfuse(_ll)?$/.test(argv[0])) return false;
      return argv.includes(img) || readdirSync(`/proc/${pid}/fd`).some((fd) => { try { return readlinkSync(`/proc/${pid}/fd/${fd}`) === img; } catch { return false; } });
    } catch { return false; }
  });
  // While it runs, its squashfuse is found (so that its absence after means something).
  const bg = run([img, '--', 'sh', '-c', 'sleep 2']);
  let seen = false;
  for (let i = 0; i < 100 && !seen; i++) { seen = fuse().length > 0; if (!seen) await new Promise((res) => setTimeout(res, 20)); }
  t.true(seen, 'squashfuse found while a command runs');
  t.is((await bg).exitCode, 0);
  for (let i = 0; i < 300 && fuse().length > 0; i++) await new Promise((res) => setTimeout(res, 50));
  t.deepEqual(fuse(), [], 'squashfuse ended with the commands (after the linger)');
  // The filter does bite: the same program asked for a pidfd gets ENOSYS.
  const ask = [...asUser(), 'python3', '-c', ENOSYS_PIDFD, '/usr/bin/python3', '-c',
    'import ctypes, os; l = ctypes.CDLL(None, use_errno=True); print(l.syscall(434, os.getpid(), 0), ctypes.get_errno())'];
  r = await execa(ask[0], ask.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(r.stdout, '-1 38', r.stderr);
});
