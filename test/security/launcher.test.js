// The launcher (native/launcher/launcher.c) as a way in (issue 20 #10). An attacker
// plants a `node` in a shared directory: a victim whose PATH has an empty
// (or relative) entry, working there, must never run it when ch-run starts
// its front end. And ch-run is never a privilege boundary: given file
// capabilities (setcap), or ambient ones by its caller, the launcher and
// the core refuse to run (exit 31) instead of lending them out.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, image, isRoot, PKG } from '../helpers/env.js';
import { ensureUser, runAs, scratch } from './lib.js';

const serial = isRoot ? test.serial : test.skip;
const RELEASE = join(PKG, 'build', 'Release');

let victim, attacker, base;

test.before(async () => {
  if (!isRoot) return;
  victim = await ensureUser('chvictim');
  attacker = await ensureUser('chattack');
  base = scratch('launcher');
});

async function as(user, script) {
  const r = await runAs(user, '/bin/sh', ['-c', script]);
  if (r.exitCode !== 0) throw new Error(`${user.name}: ${script}: ${r.stderr}`);
}

serial('a node planted in a shared working directory never runs, whatever PATH\'s empty or relative entries', async (t) => {
  const shared = join(base, 'shared');
  rmSync(shared, { recursive: true, force: true });
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  // The plant leaves a marker, then runs the real Node so nothing looks amiss.
  const plant = (dir) => `mkdir -p '${dir}' && printf '#!/bin/sh\\ntouch "%s/ran-as-$(id -u)"\\nexec /usr/bin/node "$@"\\n' `
    + `'${shared}' > '${dir}/node' && chmod 755 '${dir}/node'`;
  await as(attacker, `${plant(shared)} && ${plant(join(shared, 'bin'))}`);
  for (const PATH of [':/usr/local/bin:/usr/bin:/bin', '/usr/local/bin::/usr/bin:/bin', 'bin:/usr/bin:/bin',
    './bin:/usr/bin:/bin', '/usr/local/bin:/usr/bin:/bin:']) {
    // CH_RUN_NO_CACHE: no memoized plan, so the front end (Node) must start.
    const r = await runAs(victim, join(BIN, 'ch-run'), [image('busybox'), '--', 'echo', 'ran'],
      { cwd: shared, env: { PATH, CH_RUN_NO_CACHE: '1' }, timeout: 60_000 });
    t.is(r.exitCode, 0, `PATH=${PATH}: ${r.stderr}`);
    t.is(r.stdout, 'ran', PATH);
    t.false(existsSync(join(shared, `ran-as-${victim.uid}`)), `PATH=${PATH}: the attacker's node ran as the victim`);
  }
  // No Node on PATH's absolute entries: the clear error as before, not the plant.
  const r = await runAs(victim, '/bin/sh', ['-c', `PATH=:bin exec '${join(BIN, 'ch-run')}' '${image('busybox')}' -- true`],
    { cwd: shared, env: { CH_RUN_NO_CACHE: '1' }, timeout: 60_000 });
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /can't execute Node\.js \(node\): No such file or directory \(ENOENT\); ch-run needs node >= 20 on PATH or in CH_RUN_NODE/);
  t.false(existsSync(join(shared, `ran-as-${victim.uid}`)));
});

/** A copy of the staged program NAME, next to it (so it finds its package), given file capabilities. */
async function capped(t, name) {
  const copy = join(RELEASE, `${name}.capped`);
  copyFileSync(join(RELEASE, name), copy);
  chmodSync(copy, 0o755);
  t.teardown(() => rmSync(copy, { force: true }));
  await execa('setcap', ['cap_net_raw+ep', copy]);
  t.regex((await execa('getcap', [copy])).stdout, /cap_net_raw[=+]ep/);
  return copy;
}

serial('a setcap\'d launcher, and a setcap\'d core run directly, refuse to run (exit 31)', async (t) => {
  const launcher = await capped(t, 'ch-run');
  let r = await runAs(victim, launcher, [image('busybox'), '--', 'echo', 'ran'], { timeout: 60_000 });
  t.is(r.exitCode, 31, r.stdout);
  t.is(r.stdout, '', 'nothing ran');
  t.regex(r.stderr, /^ch-run\[\d+\]: error: ch-run started in secure-execution mode \(AT_SECURE: setuid, setgid or file capabilities\); refusing to run/);
  const core = await capped(t, 'ch-run-core');
  r = await runAs(victim, core, [], { timeout: 60_000 });
  t.is(r.exitCode, 31);
  t.regex(r.stderr, /^ch-run\[\d+\]: error: ch-run core started in secure-execution mode .*; refusing to run/);
});

serial('ambient capabilities from the caller: refused (exit 31); without them the same launch runs', async (t) => {
  const cmd = `exec '${join(BIN, 'ch-run')}' '${image('busybox')}' -- echo ran`;
  const env = { PATH: '/usr/sbin:/usr/bin:/bin', HOME: '/', LANG: 'C.UTF-8' };
  let r = await execa('capsh', ['--keep=1', `--user=${victim.name}`, '--inh=cap_net_raw', '--addamb=cap_net_raw',
    '--', '-c', `grep ^CapAmb /proc/self/status >&2; ${cmd}`], { reject: false, env, extendEnv: false, cwd: '/' });
  t.regex(r.stderr, /CapAmb:\s+0*2000\b/, 'the launch really had an ambient capability');
  t.is(r.exitCode, 31, r.stdout);
  t.regex(r.stderr, /ch-run\[\d+\]: error: ch-run holds capabilities \(file capabilities on ch-run, or ambient ones from its caller\); refusing to run/);
  r = await execa('capsh', [`--user=${victim.name}`, '--', '-c', cmd], { reject: false, env, extendEnv: false, cwd: '/' });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'ran');
});
