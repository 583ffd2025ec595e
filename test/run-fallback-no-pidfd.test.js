// The SquashFS suite (test/squash.test.js) again, as on a kernel without
// pidfd_open(2) (before 5.3, e.g. RHEL 8's 4.18): the SquashFUSE keeper
// watches squashfuse and the probe with waitid(WNOWAIT) and the command
// through its /proc directory, asking every few milliseconds. The core's
// switch CH_RUN_NO_PIDFD_OPEN=1 forces that path here.

import './run-fallback-env.js?CH_RUN_NO_PIDFD_OPEN';
import './squash.test.js';
import test from 'ava';
import { execa } from 'execa';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, ch, image, userEnv } from './helpers/env.js';
import { scratch } from './helpers/fixtures.js';

/** What the keeper of the container serving IMG holds open (it is squashfuse's parent). */
function keeperFds(img) {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd;
    try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { continue; }
    if (cmd[0] !== 'squashfuse' || cmd[2] !== img) continue;
    const keeper = /^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1];
    return readdirSync(`/proc/${keeper}/fd`).map((f) => { try { return readlinkSync(`/proc/${keeper}/fd/${f}`); } catch { return '?'; } });
  }
  return null;
}

/** Run ch-run IMG (ENV) until its command is up; return the keeper's fds, ch-run's PID and stderr. */
async function whileRunning(t, img, env) {
  const p = ch('ch-run', ['-vv', img, '--', 'sh', '-c', 'echo ready; exec sleep 600'], { env });
  t.teardown(() => p.kill('SIGKILL'));
  await new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => { if (String(d).includes('ready')) resolve(); });
    p.then((r) => reject(new Error(`ended before ready: ${r.exitCode} ${r.stderr}`)));
  });
  const fds = keeperFds(img);
  p.kill('SIGKILL');
  const r = await p;
  return { fds, pid: p.pid, stderr: r.stderr };
}

test.serial('the switch takes effect: the keeper holds the command\'s /proc directory, no pidfd', async (t) => {
  const dir = await scratch(t, 'nopidfd');
  const img = join(dir, 'img.sqfs');
  const argv = [...asUser(), 'mksquashfs', image('busybox'), img, '-noappend', '-quiet', '-no-progress'];
  const m = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(m.exitCode, 0, m.stderr);
  let w = await whileRunning(t, img, { CH_RUN_NO_PIDFD_OPEN: '1' });
  t.regex(w.stderr, /CH_RUN_NO_PIDFD_OPEN=1: watching squashfuse and the command without pidfds/);
  t.truthy(w.fds, 'found the keeper');
  t.false(w.fds.includes('anon_inode:[pidfd]'), w.fds.join(' '));
  t.true(w.fds.includes(`/proc/${w.pid}`), `the command's /proc directory: ${w.fds.join(' ')}`);
  w = await whileRunning(t, img, { CH_RUN_NO_PIDFD_OPEN: '' });
  t.notRegex(w.stderr, /without pidfds/);
  t.true(w.fds.includes('anon_inode:[pidfd]'), `by default (this kernel has pidfd_open) a pidfd: ${w.fds.join(' ')}`);
});
