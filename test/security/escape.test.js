// Escape battery: a static check program (checks/escape.c) runs inside a
// container for each uid profile and tries, one by one, what a container must
// not be able to do. Plus: ch-run installed setuid/setgid refuses to run.

import test from 'ava';
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, PKG } from '../helpers/env.js';
import { compileStatic, copyBusybox, isRoot, runAs, scratch, testUser, treeSum } from './lib.js';

const PROFILES = {
  own: [],
  'fake-root': ['-u', '0', '-g', '0'],
  nobody: ['-u', '65534', '-g', '65534'],
};

// Checks every profile must report "ok".
const REQUIRED = ['chroot-escape', 'read-cpu_dma_latency', 'read-host-secret', 'read-proc-kmsg',
  'read-proc-1-environ', 'mknod', 'image-root-ro', 'image-root-nosuid', 'mount-tmpfs',
  'remount-root-rw-bind', 'remount-root-rw-sb', 'remount-hosts-rw', 'remount-root-suid', 'umount-/etc/passwd',
  'umount-/etc/hosts', 'umount-/tmp', 'umount-/', 'setgroups', 'setuid-other', 'seteuid-other', 'uid_map',
  'gid_map', 'no-new-privs', 'setuid-binary', 'write-image-root-create', 'write-etc-hosts',
  'write-etc-resolv.conf', 'kill-other-user', 'ptrace-other-user', 'open_by_handle_at'];
// Checks that depend on the host: "ok", or "skip" saying why (no root-only
// sysfs file on this kernel; a host that lets anyone bind any port).
const REQUIRED_OR_EXPLAINED = ['read-sysfs-root-only', 'bind-privileged-port'];

/** A sysfs file only root may read: which exist varies by kernel, so look. Null if none. */
function rootOnlySysfsFile() {
  const walk = (dir, depth) => {
    let names;
    try { names = readdirSync(dir); } catch { return null; }
    for (const n of names) {
      const p = join(dir, n);
      let st;
      try { st = lstatSync(p); } catch { continue; }
      if (st.isFile() && st.uid === 0 && (st.mode & 0o444) === 0o400) {
        try { readFileSync(p); return p; } catch { continue; }   // root can read it
      }
      if (st.isDirectory() && depth > 0) {
        const found = walk(p, depth - 1);
        if (found) return found;
      }
    }
    return null;
  };
  for (const [dir, depth] of [['/sys/kernel/slab', 1], ['/sys/class/dmi/id', 0], ['/sys/firmware', 3], ['/sys/kernel', 2]]) {
    const found = walk(dir, depth);
    if (found) return found;
  }
  return null;
}

let dir, img, secret, victim, user, sysfsRootOnly;

// The core's kernel-feature switches, as test/run-fallback-escape.test.js sets
// them to run this battery down the paths for older kernels.
const SWITCHES = Object.fromEntries(['CH_RUN_NO_OPENAT2', 'CH_RUN_NO_MOUNT_SETATTR']
  .filter((v) => process.env[v] !== undefined).map((v) => [v, process.env[v]]));
const SUFFIX = Object.keys(SWITCHES).length ? '-fallback' : '';   // own scratch when both run at once

// Every test here needs root: to make the setuid probe, the root-owned
// victim process and secret, and setuid copies of ch-run. Without root:
// skipped, and the title says why.
const serial = isRoot ? test.serial
  : (title, fn) => test.serial.skip(`${title} [skipped: not root; needs root for the setuid probe, victim and setuid installs]`, fn);

test.before(async (t) => {
  if (!isRoot) return;
  user = testUser();
  dir = scratch(`escape${SUFFIX}`);
  img = await copyBusybox(join(dir, 'img'));
  await compileStatic('escape.c', join(img, 'bin/escape'));
  copyFileSync(join(img, 'bin/escape'), join(img, 'bin/suid-probe'));
  writeFileSync(join(img, 'etc/secret-dst'), '');
  // The image belongs to the test user, so "read-only" is the mount's doing,
  // not file permissions. So does the setuid probe: its owner is the one uid
  // mapped inside, so only nosuid and no_new_privs keep the kernel from
  // honouring the bit (a root-owned one is unmapped: ignored regardless).
  await execa('chown', ['-R', `${user.uid}:${user.gid}`, img]);
  chmodSync(join(img, 'bin/suid-probe'), 0o4755);
  sysfsRootOnly = rootOnlySysfsFile();
  secret = join(dir, 'secret');
  writeFileSync(secret, 'TOPSECRET\n', { mode: 0o600 });
  chmodSync(secret, 0o600);
  // Another user's process outside the container: root's.
  victim = spawn('sleep', ['3600'], { stdio: 'ignore', detached: true });
  t.log(`escape image ${img}; victim pid ${victim.pid}; secret ${secret}; root-only sysfs file ${sysfsRootOnly}`);
});

test.after.always(() => { try { victim?.kill('SIGKILL'); } catch { /* gone */ } });

for (const [profile, idArgs] of Object.entries(PROFILES)) {
  serial(`escape battery: ${profile}`, async (t) => {
    const before = treeSum(img);
    const r = await runAs(user, join(BIN, 'ch-run'),
      [...idArgs, '-b', `${secret}:/etc/secret-dst`, img, '--',
        '/bin/escape', String(victim.pid), '/etc/secret-dst', String(user.uid), String(user.gid), sysfsRootOnly ?? '-'],
      { env: SWITCHES });
    t.log(r.stdout);
    if (r.stderr) t.log(`stderr: ${r.stderr}`);
    t.is(r.exitCode, 0, 'check program ran');
    const lines = r.stdout.split('\n').filter((l) => /^(ok|FAIL|skip) /.test(l));
    const byName = new Map(lines.map((l) => [l.split(' ')[1].replace(/:$/, ''), l.split(' ')[0]]));
    const failed = lines.filter((l) => l.startsWith('FAIL'));
    t.deepEqual(failed, [], `failed checks (${profile})`);
    for (const name of REQUIRED)
      t.true(byName.get(name) === 'ok', `${name} must be checked and pass (got ${byName.get(name)})`);
    for (const name of REQUIRED_OR_EXPLAINED)
      t.true(byName.get(name) === 'ok' || lines.some((l) => new RegExp(`^skip ${name}: \\S`).test(l)),
        `${name} must be checked, or skipped with a reason (got ${byName.get(name)})`);
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
serial('uid/gid inside match the profile', async (t) => {
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

serial('ch-run installed setuid or setgid refuses to run', async (t) => {
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

