// Escape battery: a static check program (checks/escape.c) runs inside a
// container for each uid profile and tries, one by one, what a container must
// not be able to do. Plus: ch-run installed setuid/setgid refuses to run.

import test from 'ava';
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, PKG } from '../helpers/env.js';
import { compileStatic, copyBusybox, isRoot, runAs, scratch, testUser, treeSum } from './lib.js';

const PROFILES = {
  own: [],
  'fake-root': ['-u', '0', '-g', '0'],
  nobody: ['-u', '65534', '-g', '65534'],
};

// Checks every profile must report "ok" (or "skip" with a reason).
const REQUIRED = ['chroot-escape', 'read-cpu_dma_latency', 'read-host-secret', 'read-proc-kmsg',
  'read-proc-1-environ', 'read-sysfs-root-only', 'mknod', 'bind-port-81', 'mount-tmpfs',
  'remount-root-rw-bind', 'remount-root-rw-sb', 'remount-hosts-rw', 'remount-root-suid', 'umount-/etc/passwd',
  'umount-/etc/hosts', 'umount-/tmp', 'umount-/', 'setgroups', 'setuid-other', 'seteuid-other', 'uid_map',
  'gid_map', 'no-new-privs', 'setuid-binary', 'write-image-root-create', 'write-etc-hosts',
  'write-etc-resolv.conf', 'kill-other-user', 'ptrace-other-user', 'open_by_handle_at'];

let dir, img, secret, victim, user;

// The core's kernel-feature switches, as test/run-fallback-escape.test.js sets
// them to run this battery down the paths for older kernels.
const SWITCHES = Object.fromEntries(['CH_RUN_NO_OPENAT2', 'CH_RUN_NO_MOUNT_SETATTR']
  .filter((v) => process.env[v] !== undefined).map((v) => [v, process.env[v]]));
const SUFFIX = Object.keys(SWITCHES).length ? '-fallback' : '';   // own scratch when both run at once

test.before(async (t) => {
  if (!isRoot) return;
  user = testUser();
  dir = scratch(`escape${SUFFIX}`);
  img = await copyBusybox(join(dir, 'img'));
  await compileStatic('escape.c', join(img, 'bin/escape'));
  await compileStatic('suid-whoami.c', join(img, 'bin/suid-whoami'));
  writeFileSync(join(img, 'etc/secret-dst'), '');
  // The image belongs to the test user, so "read-only" is the mount's doing,
  // not file permissions; the setuid binary is root's, created before any
  // privilege is dropped.
  await execa('chown', ['-R', `${user.uid}:${user.gid}`, img]);
  chownSync(join(img, 'bin/suid-whoami'), 0, 0);
  chmodSync(join(img, 'bin/suid-whoami'), 0o4755);
  secret = join(dir, 'secret');
  writeFileSync(secret, 'TOPSECRET\n', { mode: 0o600 });
  chmodSync(secret, 0o600);
  // Another user's process outside the container: root's.
  victim = spawn('sleep', ['3600'], { stdio: 'ignore', detached: true });
  t.log(`escape image ${img}; victim pid ${victim.pid}; secret ${secret}`);
});

test.after.always(() => { try { victim?.kill('SIGKILL'); } catch { /* gone */ } });

for (const [profile, idArgs] of Object.entries(PROFILES)) {
  test.serial(`escape battery: ${profile}`, async (t) => {
    if (!isRoot) { t.log('not root: the suite needs root to create the setuid binary and victim; skipped'); t.pass(); return; }
    const before = treeSum(img);
    const r = await runAs(user, join(BIN, 'ch-run'),
      [...idArgs, '-b', `${secret}:/etc/secret-dst`, img, '--',
        '/bin/escape', String(victim.pid), '/etc/secret-dst', String(user.uid), String(user.gid)], { env: SWITCHES });
    t.log(r.stdout);
    if (r.stderr) t.log(`stderr: ${r.stderr}`);
    t.is(r.exitCode, 0, 'check program ran');
    const lines = r.stdout.split('\n').filter((l) => /^(ok|FAIL|skip) /.test(l));
    const byName = new Map(lines.map((l) => [l.split(' ')[1].replace(/:$/, ''), l.split(' ')[0]]));
    const failed = lines.filter((l) => l.startsWith('FAIL'));
    t.deepEqual(failed, [], `failed checks (${profile})`);
    for (const name of REQUIRED)
      t.true(byName.get(name) === 'ok', `${name} must be checked and pass (got ${byName.get(name)})`);
    const skipped = lines.filter((l) => l.startsWith('skip'));
    if (skipped.length) t.log(`could not check here:\n${skipped.join('\n')}`);
    const ok = lines.filter((l) => l.startsWith('ok')).length;
    t.log(`${profile}: ${ok} checks passed, ${skipped.length} skipped, ${failed.length} failed`);
    // The container could not change the image, and the victim lives.
    t.is(treeSum(img), before, 'image unchanged');
    t.notThrows(() => process.kill(victim.pid, 0), 'victim process still alive');
    t.is(readFileSync(secret, 'utf8'), 'TOPSECRET\n');
  });
}

// The uid inside is what -u says; the map's host side is always the invoker.
test.serial('uid/gid inside match the profile', async (t) => {
  if (!isRoot) { t.pass(); return; }
  for (const [profile, idArgs] of Object.entries(PROFILES)) {
    const r = await runAs(user, join(BIN, 'ch-run'), [...idArgs, img, '--', 'sh', '-c', 'id -u; id -g; cat /proc/self/uid_map'],
      { env: SWITCHES });
    t.is(r.exitCode, 0, r.stderr);
    const [u, g, ...map] = r.stdout.trim().split('\n');
    const want = profile === 'own' ? [user.uid, user.gid] : profile === 'fake-root' ? [0, 0] : [65534, 65534];
    t.deepEqual([Number(u), Number(g)], want, profile);
    t.is(map.length, 1);
    t.deepEqual(map[0].trim().split(/\s+/).map(Number), [want[0], user.uid, 1], `${profile} uid_map`);
  }
});

// ch-run installed setuid or setgid (a careless "make it work for users" by an
// admin) must refuse to run, whichever piece carries the bit.
const SETID_CASES = [
  ['launcher setuid', 'bin/ch-run', 0o4755],
  ['launcher setgid', 'bin/ch-run', 0o2755],
  ['front end setuid', 'dist/ch-run.cjs', 0o4755],
  ['core setuid root', 'build/Release/ch-run-core', 0o4755],
  ['core setgid root', 'build/Release/ch-run-core', 0o2755],
];

test.serial('ch-run installed setuid or setgid refuses to run', async (t) => {
  if (!isRoot) { t.log('needs root to install setuid copies; skipped'); t.pass(); return; }
  const base = scratch(`setid${SUFFIX}`);
  for (const [what, rel, mode] of SETID_CASES) {
    const pkg = join(base, what.replace(/ /g, '-'));
    await execa('cp', ['-a', PKG, pkg]);
    await execa('chown', ['-R', 'root:root', pkg]);
    chmodSync(join(pkg, rel), mode);
    const r = await runAs(user, join(pkg, 'bin/ch-run'), [img, '--', 'sh', '-c', `id; touch /tmp/x`], { env: SWITCHES });
    t.log(`${what}: exit ${r.exitCode}: ${r.stderr.trim()}`);
    t.is(r.exitCode, 31, `${what}: exit 31`);
    t.regex(r.stderr, /ch-run\[\d+\]: error: .*(setuid|setgid)/, `${what}: says why`);
    t.notRegex(r.stdout, /uid=/, `${what}: command did not run`);
  }
  // Direct exec of a setuid-root core (bypassing the front end) refuses too.
  const pkg = join(base, 'core-direct');
  await execa('cp', ['-a', PKG, pkg]);
  await execa('chown', ['-R', 'root:root', pkg]);
  chmodSync(join(pkg, 'build/Release/ch-run-core'), 0o4755);
  const r = await runAs(user, join(pkg, 'build/Release/ch-run-core'), ['0']);
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /setuid or setgid; refusing/);
});

