// What the command inherits: the process state its caller set up, as a bare
// exec(2) would hand it on (POSIX), and nothing of what Node does to its own
// process (ignores SIGPIPE and SIGXFSZ, raises the soft RLIMIT_NOFILE, marks
// stdio close-on-exec, may set O_NONBLOCK on stdio). Checked from inside the
// container, as the unprivileged user. And a front end that fails without
// saying so (CH_RUN_NODE naming some other program) is a clear error, exit 31.

import test from 'ava';
import { execa } from 'execa';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, BIN, ch, image, userEnv } from './helpers/env.js';
import { ownedByUser, scratch } from './helpers/fixtures.js';

const BB = () => image('busybox');

// The caller: every disposition default (Python ignores SIGPIPE and SIGXFSZ
// itself), then the signals named in argv[1] ignored, those in argv[2]
// blocked, the soft RLIMIT_NOFILE argv[3] (unless empty), then exec the rest.
const CALLER = `
import os, resource, signal, sys
for s in signal.valid_signals():
    if s not in (signal.SIGKILL, signal.SIGSTOP):
        try: signal.signal(s, signal.SIG_DFL)
        except (OSError, ValueError): pass
names = lambda a: [signal.Signals[n] for n in a.split(',') if n]
for s in names(sys.argv[1]): signal.signal(s, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_SETMASK, names(sys.argv[2]))
if sys.argv[3]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[3]), hard))
os.execv(sys.argv[4], sys.argv[4:])
`;

const SIGNO = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGUSR1: 10, SIGUSR2: 12, SIGPIPE: 13, SIGTERM: 15, SIGCHLD: 17, SIGXFSZ: 25 };
/** The /proc/PID/status mask of these signals, as its 16 hex digits. */
const mask = (...sigs) => sigs.reduce((m, s) => m | (1n << BigInt(SIGNO[s] - 1)), 0n).toString(16).padStart(16, '0');

/** Run ch-run ARGS from a caller with the given signal state and limit. */
function fromCaller({ ignore = [], block = [], nofile = '' }, args, env = {}) {
  const argv = [...asUser(), 'python3', '-c', CALLER, ignore.join(','), block.join(','), String(nofile),
    join(BIN, 'ch-run'), ...args];
  return execa(argv[0], argv.slice(1), { reject: false, env: userEnv(undefined, env), extendEnv: false, cwd: '/' });
}

/** The hard RLIMIT_NOFILE this test process (and so the caller) has. */
function hardNofile() {
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m[1];
}

test('nohup: a SIGHUP the caller ignored stays ignored in the command', async (t) => {
  const argv = [...asUser(), 'nohup', join(BIN, 'ch-run'), BB(), '--', 'sh', '-c', 'kill -HUP $$; echo survived'];
  const r = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'survived');
});

test('an ignored SIGINT stays ignored (a shell\'s & job); the command can still be killed', async (t) => {
  let r = await fromCaller({ ignore: ['SIGINT'] }, [BB(), '--', 'sh', '-c', 'kill -INT $$; echo survived']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'survived');
  r = await fromCaller({}, [BB(), '--', 'sh', '-c', 'kill -INT $$; echo survived']);
  t.is(r.signal, 'SIGINT', `not ignored by the caller, so it kills: ${r.stdout}`);
});

test('ignored and blocked signals are exactly the caller\'s: SIGPIPE and SIGXFSZ default', async (t) => {
  for (const caller of [
    { ignore: [], block: [] },
    { ignore: ['SIGHUP', 'SIGINT', 'SIGQUIT'], block: ['SIGUSR1', 'SIGTERM'] },
    { ignore: ['SIGPIPE', 'SIGUSR2'], block: ['SIGINT'] },
    // The launcher waits for its front end even so, and reaps it: none left to the command.
    { ignore: ['SIGCHLD'], block: ['SIGCHLD'] },
  ]) {
    const r = await fromCaller(caller, [BB(), '--', 'cat', '/proc/self/status']);
    t.is(r.exitCode, 0, r.stderr);
    const what = JSON.stringify(caller);
    t.is(/^SigIgn:\s+(\S+)/m.exec(r.stdout)[1], mask(...caller.ignore), `ignored, caller ${what}`);
    t.is(/^SigBlk:\s+(\S+)/m.exec(r.stdout)[1], mask(...caller.block), `blocked, caller ${what}`);
  }
});

test('the soft RLIMIT_NOFILE is the caller\'s, not the one Node raises to', async (t) => {
  for (const soft of [517, 1024]) {
    const r = await fromCaller({ nofile: soft }, [BB(), '--', 'cat', '/proc/self/limits']);
    t.is(r.exitCode, 0, r.stderr);
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(r.stdout);
    t.deepEqual([m[1], m[2]], [String(soft), hardNofile()]);
  }
});

test('stdio: open, not close-on-exec, not O_NONBLOCK, even when the front end wrote to it', async (t) => {
  const O_NONBLOCK = 0o4000, O_CLOEXEC = 0o2000000;
  // -v: the front end (Node) writes to stderr before the container starts.
  for (const args of [[], ['-v']]) {
    const r = await ch('ch-run', [...args, BB(), '--', 'sh', '-c',
      'for f in 0 1 2; do grep "^flags:" /proc/$$/fdinfo/$f || echo "fd $f closed"; done']);
    t.is(r.exitCode, 0, r.stderr);
    const flags = r.stdout.split('\n').map((l) => /^flags:\s+([0-7]+)$/.exec(l)?.[1]);
    t.is(flags.length, 3, r.stdout);
    flags.forEach((f, fd) => {
      t.truthy(f, `fd ${fd} open: ${r.stdout}`);
      t.is(parseInt(f, 8) & O_NONBLOCK, 0, `fd ${fd} not O_NONBLOCK (${args})`);
      t.is(parseInt(f, 8) & O_CLOEXEC, 0, `fd ${fd} not close-on-exec (${args})`);
    });
  }
});

test('nothing of the launcher reaches the command: no variable, no descriptor', async (t) => {
  const r = await ch('ch-run', [BB(), '--', 'env'], { env: { CH_RUN_NOFILE: 'x' } });
  t.is(r.exitCode, 0, r.stderr);
  const names = r.stdout.split('\n').map((l) => l.slice(0, l.indexOf('=')));
  t.deepEqual(names.filter((n) => n.startsWith('CH_')).sort(), ['CH_RUNNING', 'CH_RUN_NOFILE'],
    'only CH_RUNNING, and what the user set');
  // The command has the descriptors its caller passed, as under a bare exec:
  // no plan memfd, no pipe of the launcher's (ls's own directory left out).
  const fds = (out) => out.split('\n').map((l) => /\s(\d+) -> (.*)$/.exec(l)).filter((m) => m && !/^\/proc\/\d+\/fd$/.test(m[2]))
    .map((m) => Number(m[1])).sort((a, b) => a - b);
  const argv = [...asUser(), 'ls', '-l', '/proc/self/fd'];
  const bare = await execa(argv[0], argv.slice(1), { env: userEnv(), extendEnv: false, cwd: '/' });
  const inside = await ch('ch-run', [BB(), '--', 'ls', '-l', '/proc/self/fd']);
  t.is(inside.exitCode, 0, inside.stderr);
  t.deepEqual(fds(inside.stdout), fds(bare.stdout), inside.stdout);
  t.deepEqual(fds(bare.stdout).slice(0, 3), [0, 1, 2]);
});

test('CH_RUN_NODE that is not a working Node: exit 31 naming it, nothing runs', async (t) => {
  const dir = await scratch(t);
  const killed = join(dir, 'killed-node');
  writeFileSync(killed, '#!/bin/sh\nkill -KILL $$\n', { mode: 0o755 });
  const marker = join('/tmp', `ch-run-node-test-${process.pid}`);
  t.teardown(() => rmSync(marker, { force: true }));
  for (const [node, re] of [
    ['/bin/false', /front end \(CH_RUN_NODE=\/bin\/false\) exited with status 1 without starting the container/],
    ['/bin/true', /front end \(CH_RUN_NODE=\/bin\/true\) exited with status 0 without starting the container/],
    ['/nonexistent/node', /can't execute Node\.js \(CH_RUN_NODE=\/nonexistent\/node\): No such file or directory \(ENOENT\)/],
    [killed, /front end \(CH_RUN_NODE=.*killed-node\) was killed by signal 9/],
  ]) {
    const r = await ch('ch-run', [BB(), '--', 'touch', marker], { env: { CH_RUN_NODE: node } });
    t.is(r.exitCode, 31, `${node}: ${r.stderr}`);
    t.regex(r.stderr, /^ch-run\[\d+\]: error: /);
    t.regex(r.stderr, re);
    t.false(existsSync(marker), `${node}: the command must not have run`);
  }
  // The same with a real Node runs it.
  const r = await ch('ch-run', [BB(), '--', 'sh', '-c', `touch ${marker} && rm ${marker} && echo ran`],
    { env: { CH_RUN_NODE: process.execPath } });
  t.is(r.stdout, 'ran', r.stderr);
});

test('a process the front end leaves behind holding its pipes does not hold up the launch', async (t) => {
  // A Node wrapper (as a site's CH_RUN_NODE may be) that starts a long-lived
  // helper first: it inherits every descriptor the front end gets beyond
  // stdio (its stdio goes to /dev/null, or the test itself would wait on it).
  const dir = await scratch(t);
  const pidfile = join(dir, 'helper.pid');
  const wrapper = join(dir, 'node-wrapper');
  writeFileSync(wrapper, `#!/bin/sh\nsleep 600 </dev/null >/dev/null 2>&1 & echo $! > ${pidfile}\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
  await ownedByUser(dir);
  t.teardown(() => { try { process.kill(Number(readFileSync(pidfile, 'utf8')), 'SIGKILL'); } catch { /* gone */ } });
  // A hang is the failure: the guard turns it into one rather than ava's timeout.
  const r = await ch('ch-run', [BB(), '--', 'echo', 'ran'], { env: { CH_RUN_NODE: wrapper }, timeout: 60000 });
  t.false(r.timedOut, 'the launcher waited for the helper');
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'ran');
  t.notThrows(() => process.kill(Number(readFileSync(pidfile, 'utf8')), 0), 'the helper was still there');
});

/** Is PID gone (or a zombie nobody reaped yet), within MS? */
async function goneWithin(pid, ms) {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
    let stat;
    try { stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { return true; }
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return true;
  }
  return false;
}

test('ch-run killed while the front end plans takes it along; a front end done planning goes at once', async (t) => {
  // Node runs under a small waiter (launcher.c front_end_waiter): each dies
  // with its parent. A stand-in Node that says who it is and then hangs.
  const dir = await scratch(t);
  const pidfile = join(dir, 'front.pid');
  const hang = join(dir, 'hanging-node');
  writeFileSync(hang, `#!/bin/sh
echo $$ $PPID > ${pidfile}.tmp && mv ${pidfile}.tmp ${pidfile}
exec sleep 600
`, { mode: 0o755 });
  await ownedByUser(dir);
  const launch = ch('ch-run', [BB(), '--', 'true'], { env: { CH_RUN_NODE: hang } });
  while (!existsSync(pidfile)) await new Promise((r) => setTimeout(r, 20));
  const [front, waiter] = readFileSync(pidfile, 'utf8').trim().split(' ').map(Number);
  t.teardown(() => { for (const p of [front, waiter]) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  t.not(waiter, launch.pid, 'Node is not the launcher\'s own child');
  t.is(Number(readFileSync(`/proc/${waiter}/stat`, 'utf8').split(') ')[1].split(' ')[1]), launch.pid);
  process.kill(launch.pid, 'SIGKILL');
  await launch;
  t.true(await goneWithin(waiter, 5000), 'the waiter outlived ch-run');
  t.true(await goneWithin(front, 5000), 'the front end outlived ch-run');
  // A launch that plans: its front end, killed once the plan is read, is
  // gone (reaped by init) right after; found by a word of its command line.
  const word = `front-end-${process.pid}-${Date.now()}`;
  const r = await ch('ch-run', [BB(), '--', 'echo', word]);
  t.is(r.stdout, word, r.stderr);
  const holding = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(word); } catch { return false; }
  });
  for (const end = Date.now() + 5000; holding().length > 0 && Date.now() < end;) await new Promise((res) => setTimeout(res, 20));
  t.deepEqual(holding(), [], 'a front end outlived its launch');
});

test('help and version exit 0 through the launcher; an error of the front end is its own, once', async (t) => {
  let r = await ch('ch-run', ['--version']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^\d+\.\d+\.\d+/);
  r = await ch('ch-run', ['--help']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /^Usage: ch-run/);
  r = await ch('ch-run', ['-u', 'x', BB(), '--', 'true']);
  t.is(r.exitCode, 31);
  t.is(r.stderr.split('\n').length, 1, r.stderr);
});
