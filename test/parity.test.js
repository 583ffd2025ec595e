// Charliecloud 0.3x parity for ch-run (issue #11): the messages scripts rely
// on, --set-env as Charliecloud's man page defines it, --set-env0,
// --warnings, --join-pid, --unsafe, --feature, -s/--storage, and clear
// messages for surprises (-b falling back to /mnt/N, a command not found
// that the image's ENV PATH would have found), and what Charliecloud does
// without a word, said under -v only (two binds onto one destination, the
// working directory falling back to /, ids the host has no entry for).

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, existsSync, mkdirSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, ch, image, isRoot, needs, noFuse, notRoot, testUser, unavailable, userEnv } from './helpers/env.js';
import { imageCopy, ownedByUser, scratch } from './helpers/fixtures.js';

const BB = () => image('busybox');
const run = (args, opts = {}) => ch('ch-run', args, { timeout: 30000, ...opts });
const lines = (s) => s.split('\n').filter((l) => l !== '');

needs(test, notRoot && 'needs root to switch users')('$PATH unset: a warning, and PATH stays unset (not invented); -q silences it', async (t) => {
  const env = { ...userEnv(), PATH: undefined };
  const r = await run([BB(), '--', '/bin/env'], { env });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /^ch-run\[\d+\]: warning: \$PATH not set$/m);
  t.false(lines(r.stdout).some((l) => l.startsWith('PATH=')), r.stdout);
  const q = await run(['-q', BB(), '--', '/bin/true'], { env });
  t.is(q.stderr, '');
  // Set but without /bin: /bin appended (Charliecloud); empty: /bin, never ":/bin".
  const a = await run([BB(), '--', '/bin/sh', '-c', 'echo $PATH'], { env: { PATH: '/usr/bin' } });
  t.is(a.stdout, '/usr/bin:/bin');
  // (PATH is also how the test user's programs are found: full paths here.)
  const u = testUser();
  const e = await execa('/usr/bin/setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', '--',
    join(BIN, 'ch-run'), BB(), '--', '/bin/env'],
  { reject: false, env: { PATH: '', CH_RUN_NODE: process.execPath }, extendEnv: false, cwd: '/' });
  t.true(lines(e.stdout).includes('PATH=/bin'), e.stdout);
});

needs(test, notRoot && 'needs root to switch users')('a UID/GID with no host passwd/group entry: "using dummy info" under -v only (as Charliecloud), and the container still runs', async (t) => {
  const as = (args) => execa('setpriv', ['--reuid=54321', '--regid=54321', '--clear-groups', '--',
    join(BIN, 'ch-run'), ...args], { reject: false, env: { PATH: '/usr/bin:/bin' }, extendEnv: false, cwd: '/' });
  const r = await as([BB(), '--', 'id', '-u']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, '54321');
  t.is(r.stderr, '', 'nothing wrong, nothing said');
  const v = await as(['-v', BB(), '--', 'id', '-u']);
  t.is(v.exitCode, 0, v.stderr);
  t.regex(v.stderr, /^ch-run\[\d+\]: UID 54321 not found; using dummy info$/m);
  t.regex(v.stderr, /^ch-run\[\d+\]: GID 54321 not found; using dummy info$/m);
  const known = await run(['-v', BB(), '--', 'true']);
  t.notRegex(known.stderr, /dummy info/);
});

test('--uid/--gid the host has no entry for: "using dummy info" under -v (Charliecloud\'s "UID and/or GID invalid on host")', async (t) => {
  const [uid, gid] = [8675309, 8675310];
  for (const [args, want] of [
    [[`--uid=${uid}`], [`UID ${uid}`]], [[`--gid=${gid}`], [`GID ${gid}`]],
    [[`--uid=${uid}`, `--gid=${gid}`], [`UID ${uid}`, `GID ${gid}`]]]) {
    const r = await run(['-v', ...args, BB(), '--', 'id']);
    t.is(r.exitCode, 0, r.stderr);
    for (const w of want) t.regex(r.stderr, new RegExp(`: ${w} not found; using dummy info$`, 'm'), args.join(' '));
    const q = await run([...args, BB(), '--', 'true']);
    t.notRegex(q.stderr, /dummy info/, 'said under -v only');
  }
  // Named as the host names an id that it knows, not as the caller.
  const u = testUser();
  const r = await run(['--uid=0', '--gid=0', BB(), '--', 'id']);
  t.regex(r.stdout, /uid=0\(root\) gid=0\(root\)/);
  const d = await run([`--uid=${uid}`, `--gid=${gid}`, BB(), '--', 'id']);
  t.regex(d.stdout, new RegExp(`uid=${uid}\\(charlie\\) gid=${gid}\\(charliegroup\\)`), 'Charliecloud\'s dummy names');
  t.notRegex(d.stdout, new RegExp(`\\(${u.name}\\)`));
});

test('-v traces every environment change, one line per variable set or unset', async (t) => {
  const r = await run(['-v', '--set-env=FOO=bar', '--unset-env=GONE*', BB(), '--', 'true'],
    { env: { GONE_A: '1', GONE_B: '2', TMPDIR: '/tmp', PATH: '/usr/bin' } });
  t.is(r.exitCode, 0, r.stderr);
  const env = lines(r.stderr).filter((l) => /: environment: /.test(l)).map((l) => l.replace(/^.*: environment: /, ''));
  for (const want of ['PATH=/usr/bin:/bin', 'unset TMPDIR', 'FOO=bar', 'unset GONE_A', 'unset GONE_B',
    'CH_RUNNING=Weird Al Yankovic'])
    t.true(env.includes(want), `${want} traced: ${JSON.stringify(env)}`);
  t.is(env.filter((l) => l === 'FOO=bar').length, 1, 'one line per change');
  const quiet = await run(['--set-env=FOO=bar', BB(), '--', 'true']);
  t.notRegex(quiet.stderr, /environment:/);
});

test('--set-env values exactly as Charliecloud\'s man page defines them', async (t) => {
  // [assignment, expected value]; BAR=bar, UNSET unset, EMPTY empty.
  const cases = [
    ['FOO=bar', 'bar'], ['FOO=bar=baz', 'bar=baz'], ['FOO=-march=foo -mtune=bar', '-march=foo -mtune=bar'],
    ["FOO='-march=foo -mtune=bar'", '-march=foo -mtune=bar'], ['FOO=$BAR', 'bar'], ['FOO=$BAR:baz', 'bar:baz'],
    ['FOO=', ''], ['FOO=$UNSET', ''], ['FOO=$EMPTY', ''], ['FOO=baz:$UNSET:qux', 'baz:qux'],
    ['FOO=:bar:baz::', ':bar:baz::'], ["FOO=''", ''], ["FOO=''''", "''"], ['FOO="bar"', '"bar"'],
    ['FOO=bar # baz', 'bar # baz'], ['FOO=bar\\tbaz', 'bar\\tbaz'], ['FOO= bar', ' bar'],
    ['FOO=$BAR baz:qux', 'qux'], ['FOO=bar:$', 'bar:$'], ['FOO=$', '$'], ['FOO=$:$BAR', '$:bar'],
  ];
  for (const [assignment, want] of cases) {
    const r = await run([`--set-env=${assignment}`, BB(), '--', 'sh', '-c', 'printf %s "$FOO"'],
      { env: { BAR: 'bar', EMPTY: '' } });
    t.is(r.exitCode, 0, `${assignment}: ${r.stderr}`);
    t.is(r.stdout, want, assignment);
  }
  // --env-no-expand: values taken literally.
  const n = await run(['--env-no-expand', '--set-env=FOO=$BAR:baz', BB(), '--', 'sh', '-c', 'printf %s "$FOO"'],
    { env: { BAR: 'bar' } });
  t.is(n.stdout, '$BAR:baz');
  for (const [bad, re] of [['=bar', /can't parse variable: empty name: command line: '=bar'/]]) {
    const r = await run([`--set-env=${bad}`, BB(), '--', 'true']);
    t.is(r.exitCode, 31, bad);
    t.regex(r.stderr, re);
  }
});

test('--set-env0: NUL-separated file (values may hold newlines), VAR=VALUE form, empty assignments ignored', async (t) => {
  const dir = await scratch(t);
  const f = join(dir, 'env0');
  writeFileSync(f, 'ML=line one\nline two\0\0B=$A:x\0');
  await ownedByUser(dir);
  const r = await run([`--set-env0=${f}`, '--set-env0=C=c', BB(), '--', 'sh', '-c', 'printf "%s|%s|%s" "$ML" "$B" "$C"'],
    { env: { A: 'a' } });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'line one\nline two|a:x|c');
  // The same file through --set-env: a NUL byte is refused, naming file and line.
  const n = await run([`--set-env=${f}`, BB(), '--', 'true']);
  t.is(n.exitCode, 31);
  t.regex(n.stderr, new RegExp(`--set-env: NUL byte at ${f}:2 \\(a NUL-separated file\\? use --set-env0\\)`));
});

test('-b SRC falling back to /mnt/N says where, once, unless -q; two binds onto one destination: the later wins, said under -v', async (t) => {
  const dir = await scratch(t);
  writeFileSync(join(dir, 'marker'), 'm\n');
  const file = join(dir, 'marker');
  await ownedByUser(dir);
  const r = await run(['-b', dir, BB(), '--', 'cat', '/mnt/0/marker']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'm');
  const said = lines(r.stderr).filter((l) => l.includes('/mnt/0'));
  t.is(said.length, 1, r.stderr);
  t.regex(said[0], new RegExp(`^ch-run\\[\\d+\\]: warning: --bind ${dir}: no such path in image; bound at /mnt/0$`));
  const q = await run(['-q', '-b', dir, BB(), '--', 'true']);
  t.is(q.stderr, '');

  // As Charliecloud (its own test does this): accepted, the later bind is
  // mounted over the earlier one.
  const other = join(dir, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'file2'), 'two\n');
  await ownedByUser(dir);
  const probe = ['sh', '-c', '[ ! -e /mnt/3/marker ] && cat /mnt/3/file2'];
  const two = await run(['-b', `${dir}:/mnt/3`, '-b', `${other}:/mnt/3`, BB(), '--', ...probe]);
  t.is(two.exitCode, 0, two.stderr);
  t.is(two.stdout, 'two');
  t.is(two.stderr, '', 'silent by default');
  const back = await run(['-b', `${other}:/mnt/3`, '-b', `${dir}:/mnt/3`, BB(), '--', 'cat', '/mnt/3/marker']);
  t.is(back.stdout, 'm', 'the order decides');
  const v = await run(['-v', '-b', `${dir}:/mnt/3`, '-b', `${other}:/mnt/3`, BB(), '--', ...probe]);
  t.is(v.stdout, 'two', v.stderr);
  t.regex(v.stderr, new RegExp(`--bind: '${other}:/mnt/3' is mounted over '${dir}:/mnt/3' at /mnt/3 \\(the later bind wins\\)`));

  // A file without DST: /mnt/N are directories, so say to give a destination.
  const f = await run(['-b', file, BB(), '--', 'echo', 'ran']);
  t.is(f.exitCode, 31);
  t.is(f.stdout, '');
  t.regex(f.stderr, new RegExp(`error: can't bind file ${file}: .*give a destination, e\\.g\\. -b ${file}:/path/in/image`));
  t.notRegex(f.stderr, /warning/);
  const ok = await run(['-b', `${file}:/etc/hosts`, BB(), '--', 'cat', '/etc/hosts']);
  t.is(ok.stdout, 'm', ok.stderr);
});

test('the working directory falling back to / is said under -v only (Charliecloud starts in / silently); an explicit --cd that fails is an error', async (t) => {
  const dir = await scratch(t);
  const r = await run([BB(), '--', 'pwd'], { cwd: dir });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, '/');
  t.is(r.stderr, '', 'silent by default');
  const v = await run(['-v', BB(), '--', 'pwd'], { cwd: dir });
  t.is(v.stdout, '/');
  t.regex(v.stderr, new RegExp(`^ch-run\\[\\d+\\]: can't cd to ${dir} in container .*starting in /$`, 'm'));
  t.notRegex(v.stderr, /warning: can't cd/);
  const q = await run(['-q', BB(), '--', 'pwd'], { cwd: dir });
  t.is(q.stdout, '/');
  t.is(q.stderr, '');
  const same = await run([BB(), '--', 'pwd'], { cwd: '/tmp' });
  t.is(same.stdout, '/tmp');
  t.is(same.stderr, '');
  const cd = await run(['--cd=/nonexistent', BB(), '--', 'pwd']);
  t.is(cd.exitCode, 31);
  t.regex(cd.stderr, /can't cd to \/nonexistent: No such file or directory/);
});

test('command not found while the image records an ENV PATH that --set-env would supply: a hint', async (t) => {
  const img = await imageCopy(t);
  mkdirSync(join(img, 'opt/tool/bin'), { recursive: true });
  writeFileSync(join(img, 'opt/tool/bin/tool'), '#!/bin/sh\necho tool ran\n', { mode: 0o755 });
  writeFileSync(join(img, 'ch/environment'), 'PATH=/opt/tool/bin:/bin\n');
  await ownedByUser(img);
  const r = await run([img, '--', 'tool']);
  t.is(r.exitCode, 49);
  t.regex(r.stderr, /error: can't execve\(2\): tool: No such file or directory \(ENOENT\)/);
  t.regex(r.stderr, new RegExp(`hint: image ${img} records PATH=/opt/tool/bin:/bin in /ch/environment, which --set-env would apply`));
  const ok = await run(['--set-env', img, '--', 'tool']);
  t.is(ok.exitCode, 0, ok.stderr);
  t.is(ok.stdout, 'tool ran');
  // No hint where it wouldn't help: a path, or an image without ENV PATH.
  const abs = await run([img, '--', '/nope']);
  t.notRegex(abs.stderr, /hint:/);
  const plain = await run([BB(), '--', 'nope']);
  t.is(plain.exitCode, 49);
  t.notRegex(plain.stderr, /hint:/);
});

test('--feature reports support by exit status; an unknown feature is an error', async (t) => {
  // squash: squashfuse installed and /dev/fuse usable (a root run's test/setup.js makes it 0666; a user's
  // run may find it 0600, and then the answer is no, with the reason under -v); overlayfs: kernel >= 5.11.
  if (noFuse && process.env.CI) t.fail(`${noFuse} (CI's setup makes it usable)`);
  const yes = { extglob: 0, seccomp: 0, squash: noFuse ? 1 : 0, overlayfs: 0 };
  for (const [feat, code] of Object.entries(yes)) {
    const r = await run([`--feature=${feat}`]);
    t.is(r.exitCode, code, `${feat}: ${r.stderr}`);
    t.is(r.stdout, '');
  }
  if (noFuse) t.regex((await run(['-v', '--feature=squash'])).stderr, /\/dev\/fuse/);
  const bad = await run(['--feature=nope']);
  t.is(bad.exitCode, 31);
  t.regex(bad.stderr, /--feature: unknown feature 'nope'/);
});

test('--warnings=N reprints the last N warnings before ch-run\'s own error; --unsafe is accepted', async (t) => {
  const env = { ...userEnv(), PATH: undefined };
  const r = await run(['--warnings=1', '--set-env=/nonexistent-env', BB(), '--', 'true'], { env });
  t.is(r.exitCode, 31);
  const l = lines(r.stderr);
  t.is(l.filter((x) => /warning: \$PATH not set$/.test(x)).length, 2, r.stderr);
  t.regex(r.stderr, /warning: reprinting last 1 warning\(s\)\n.*warning: \$PATH not set\n.*error: --set-env: can't open:/);
  const none = await run(['--set-env=/nonexistent-env', BB(), '--', 'true'], { env });
  t.notRegex(none.stderr, /reprinting/);
  const bad = await run(['--warnings=x', BB(), '--', 'true']);
  t.is(bad.exitCode, 31);
  const u = await run(['--unsafe', BB(), '--', 'echo', 'ok']);
  t.is(u.stdout, 'ok', u.stderr);
});

needs(test, notRoot && 'needs root to make storage that belongs to someone else')('-s/--storage: an image name is found in the caller\'s own storage only', async (t) => {
  const dir = await scratch(t);
  const storage = join(dir, 'st');
  mkdirSync(join(storage, 'img'), { recursive: true });
  const img = await imageCopy(t);
  renameSync(img, join(storage, 'img', 'example.com+5050%foo%bar+latest'));
  chmodSync(storage, 0o700);
  await ownedByUser(storage);
  const r = await run(['-s', storage, 'example.com:5050/foo/bar', '--', 'cat', '/etc/os-release']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /busybox test image/);
  const env = await run(['example.com:5050/foo/bar:latest', '--', 'true'], { env: { CH_IMAGE_STORAGE: storage } });
  t.is(env.exitCode, 0, env.stderr);
  const missing = await run(['-s', storage, 'nothere', '--', 'true']);
  t.is(missing.exitCode, 31);
  t.regex(missing.stderr, /can't use image nothere: not a path, and not in storage/);
  // Writable by others, or someone else's: refused.
  chmodSync(join(storage, 'img'), 0o777);
  const open = await run(['-s', storage, 'example.com:5050/foo/bar', '--', 'echo', 'ran']);
  t.is(open.exitCode, 31);
  t.is(open.stdout, '');
  t.regex(open.stderr, /storage path .*\/img is writable by others/);
  chmodSync(join(storage, 'img'), 0o755);
  await execa('chown', ['root:root', storage]);
  const theirs = await run(['-s', storage, 'example.com:5050/foo/bar', '--', 'echo', 'ran']);
  t.is(theirs.exitCode, 31);
  t.regex(theirs.stderr, /is owned by uid 0, not you/);
});

test('--join-pid enters the namespaces of a running container; another user\'s process is refused', async (t) => {
  const img = await imageCopy(t);
  const dir = await scratch(t);
  const ready = join(dir, 'ready');
  const first = run(['-b', `${dir}:/mnt/0`, img, '--', 'sh', '-c', 'touch /mnt/0/ready; exec sleep 60'],
    { timeout: 60000 });
  // Exec in place (setpriv, ch-run, the command): the command has this PID.
  const pid = first.pid;
  // Wait for the container to say it is up (bounded: a dead one fails the test).
  for (let i = 0; i < 600 && !existsSync(ready) && first.exitCode === null; i++)
    await new Promise((r) => setTimeout(r, 50));
  t.true(existsSync(ready), 'first container started');
  const theirs = readlinkSync(`/proc/${pid}/ns/mnt`);
  const r = await run([`--join-pid=${pid}`, img, '--', 'readlink', '/proc/self/ns/mnt']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, theirs, 'same mount namespace as the running container');
  t.not(r.stdout, readlinkSync('/proc/self/ns/mnt'));
  const user = await run([`--join-pid=${pid}`, img, '--', 'readlink', '/proc/self/ns/user']);
  t.is(user.stdout, readlinkSync(`/proc/${pid}/ns/user`));
  process.kill(pid, 'SIGTERM');
  await first;

  const root = await run(['--join-pid=1', BB(), '--', 'echo', 'ran']);
  t.is(root.exitCode, 31);
  t.is(root.stdout, '');
  t.regex(root.stderr, /--join-pid: can't (join|find|open).*(EPERM|EACCES|EINVAL)/);
  const both = await run(['--join-pid=1', '--join', BB(), '--', 'true']);
  t.is(both.exitCode, 31);
  t.regex(both.stderr, /--join-pid: can't be combined with --join/);
  const bind = await run(['--join-pid=1', '-w', '-b', '/tmp:/newdir', img, '--', 'true']);
  t.is(bind.exitCode, 31);
  t.regex(bind.stderr, /--join-pid: can't be combined with --bind, --home or -w/);
  t.false(existsSync(join(img, 'newdir')), 'nothing created in the image');
});
