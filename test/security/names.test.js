// Trusted state and the names the tools choose (issue 20, items 4, 6 and 8).
// Two unprivileged accounts, an attacker and a victim, as on a shared node:
//   - image content never carries trusted state: a marker (ch/.ch-*) that
//     came in a tarball, a registry layer, a conversion or a copy never makes
//     ch-pull or ch-tar2dir take the attacker's tree for the victim's image;
//   - a bare image name never silently runs another user's directory of that
//     relative name instead of the victim's stored image;
//   - names the attacker plants in /dev/shm and /var/tmp under the fixed
//     names of old don't stop --join, the plan cache or .sqfs launches.

import test from 'ava';
import { execa, execaSync } from 'execa';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, image, isRoot } from '../helpers/env.js';
import { addImage, haveTools, push, startRegistry, tarOf, writeLayout } from '../helpers/registry.js';
import { ensureUser, runAs, scratch } from './lib.js';

const serial = isRoot ? test.serial : test.skip;
const why = isRoot ? '' : ' [skipped: needs root to create the attacker and victim accounts]';
const tools = haveTools();

let victim, attacker, base, shared, reg;

const BUSYBOX = readFileSync('/bin/busybox');
const LAYER = [
  { name: 'bin/', type: 'dir' }, { name: 'bin/busybox', data: BUSYBOX, mode: 0o755 },
  ...['sh', 'cat', 'ls', 'echo'].map((a) => ({ name: `bin/${a}`, type: 'symlink', target: 'busybox' })),
  { name: 'etc/', type: 'dir' }, { name: 'etc/motd', data: 'the real image\n' },
];

test.before(async () => {
  if (!isRoot) return;
  // Accounts of this file's own: it plants under the victim's fixed names in
  // /dev/shm and /var/tmp, which must not disturb other files' runs.
  victim = await ensureUser('chnvictim');
  attacker = await ensureUser('chnattack');
  base = scratch('names');
  shared = join(base, 'shared');   // like /var/tmp: everyone writes, sticky
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  if (!tools) {
    reg = await startRegistry(join(base, 'registry'));
    const lay = join(base, 'layout');
    writeLayout(lay, 'v1', [addImage(lay, { layers: [LAYER], config: { Env: ['PATH=/bin'] } })]);
    await push(reg, lay, 'v1', 'team/ok');
  }
});

test.after.always(async () => { await reg?.stop(); });

const asAttacker = (script, opts = {}) => runAs(attacker, '/bin/sh', ['-c', script], opts);
const asVictim = (cmd, args, opts = {}) => runAs(victim, join(BIN, cmd), args, { timeout: 60_000, ...opts });

/** A directory of USER's in the scratch area, mode 0755. */
function dirOf(user, name) {
  const d = join(base, name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { mode: 0o755 });
  chownTree(user, d);
  return d;
}
/** chown -R P to USER, done when it returns (it was an unawaited promise: dirOf's directory could still be
    root's when the victim wrote into it, a failure under load). */
function chownTree(user, p) { execaSync('chown', ['-R', `${user.uid}:${user.gid}`, p]); }

function needRegistry(t) {
  if (!tools) return false;
  if (process.env.CI) t.fail(`registry tools unavailable in CI: ${tools}`);
  else { t.log(`not tested: ${tools}`); t.pass(); }
  return true;
}

// ---- item 4: markers forged by image content ----

/** The manifest digest of REF as ch-pull reports it, learnt by the attacker pulling it. */
async function publicDigest(ref) {
  const d = join(base, `attacker-pull-${Date.now()}`);
  mkdirSync(d);
  await execa('chown', [`${attacker.uid}:${attacker.gid}`, d]);
  const r = await runAs(attacker, join(BIN, 'ch-pull'), ['-v', ref, join(d, 'img')], { env: { CH_IMAGE_STORAGE: join(d, 'storage') } });
  if (r.exitCode !== 0) throw new Error(`attacker's pull failed: ${r.stderr}`);
  return /manifest (sha256:[0-9a-f]{64})/.exec(r.stderr)[1];
}

/** The attacker's tarball in the shared directory: a ch-pull marker for REF's DIGEST (old and new names), and content of theirs. */
function evilTarball(name, marker) {
  const file = join(shared, name);
  writeFileSync(file, tarOf([
    { name: 'bin/', type: 'dir' }, { name: 'bin/evil', data: '#!/bin/sh\necho pwned\n', mode: 0o755 },
    { name: 'etc/', type: 'dir' }, { name: 'etc/motd', data: "the attacker's image\n" },
    { name: 'ch/', type: 'dir' }, { name: 'ch/.ch-pull.json', data: JSON.stringify(marker) },
    { name: 'ch/.ch-tar2dir.json', data: JSON.stringify({ tool: 'ch-tar2dir', source: {} }) },
    { name: 'ch/.ch-image.json', data: JSON.stringify(marker) },
  ]));
  return execa('chown', [`${attacker.uid}:${attacker.gid}`, file]).then(() => chmodSync(file, 0o644)).then(() => file);
}

serial(`markers: a tarball's ch/.ch-pull.json, unpacked by ch-tar2dir, never makes ch-pull say "up to date"${why}`, async (t) => {
  if (needRegistry(t)) return;
  const ref = `${reg.host}/team/ok:v1`;
  const digest = await publicDigest(ref);
  const tarball = await evilTarball('evil.tar', { tool: 'ch-pull', manifest: digest });
  const d = dirOf(victim, 'v-tar2dir');
  const storage = join(d, 'storage');
  let r = await asVictim('ch-tar2dir', [tarball, d]);
  t.is(r.exitCode, 0, r.stderr);
  const unpacked = readdirSync(join(d, 'evil/ch')).filter((f) => f.startsWith('.')).sort();
  const unpackedBy = JSON.parse(readFileSync(join(d, 'evil/ch/.ch-image.json'), 'utf8')).tool;
  r = await asVictim('ch-pull', [ref, join(d, 'evil')], { env: { CH_IMAGE_STORAGE: storage } });
  t.is(r.exitCode, 0, r.stderr);
  t.notRegex(r.stderr, /up to date/);
  t.false(existsSync(join(d, 'evil/bin/evil')), "the attacker's content is gone");
  t.is(readFileSync(join(d, 'evil/etc/motd'), 'utf8'), 'the real image\n');
  t.is(JSON.parse(readFileSync(join(d, 'evil/ch/.ch-image.json'), 'utf8')).manifest, digest);
  t.deepEqual(unpacked, ['.ch-image.json'], "ch-tar2dir kept none of the tarball's markers, and wrote its own");
  t.is(unpackedBy, 'ch-tar2dir');
});

serial(`markers: ch-convert's directory output carries only its own marker, never taken by ch-pull as up to date${why}`, async (t) => {
  if (needRegistry(t)) return;
  const ref = `${reg.host}/team/ok:v1`;
  const digest = await publicDigest(ref);
  const tarball = await evilTarball('evil2.tar', { tool: 'ch-pull', manifest: digest });
  const d = dirOf(victim, 'v-convert');
  const storage = join(d, 'storage');
  // Converted from the tarball: none of its markers, only ch-convert's own;
  // so ch-pull replaces it (the victim's image) and never trusts it.
  let r = await asVictim('ch-convert', [tarball, join(d, 'conv')]);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(readdirSync(join(d, 'conv/ch')), ['.ch-image.json'], 'no ch/.ch-* taken from the content');
  const m = JSON.parse(readFileSync(join(d, 'conv/ch/.ch-image.json'), 'utf8'));
  t.is(m.tool, 'ch-convert');
  t.is(m.manifest, undefined);
  t.is(m.root.ino, statSync(join(d, 'conv')).ino);
  r = await asVictim('ch-pull', [ref, join(d, 'conv')], { env: { CH_IMAGE_STORAGE: storage } });
  t.notRegex(r.stderr, /up to date/);
  t.is(r.exitCode, 0, r.stderr);
  t.false(existsSync(join(d, 'conv/bin/evil')), "the attacker's content is gone, the image pulled afresh");
  t.is(readFileSync(join(d, 'conv/etc/motd'), 'utf8'), 'the real image\n');
});

serial(`markers: a copy of another user's pulled image is not taken by ch-pull as up to date: replaced, not reused${why}`, async (t) => {
  if (needRegistry(t)) return;
  const ref = `${reg.host}/team/ok:v1`;
  const d = dirOf(victim, 'v-copy');
  const storage = join(d, 'storage');
  // The attacker's own pulled image, content changed after the pull, copied by the victim:
  // its marker is genuine, but for the attacker's directory, not the copy.
  const a = join(shared, 'attk');
  const ar = await runAs(attacker, join(BIN, 'ch-pull'), [ref, a], { env: { CH_IMAGE_STORAGE: join(shared, 'attk-storage') } });
  t.is(ar.exitCode, 0, ar.stderr);
  const w = await asAttacker(`printf '#!/bin/sh\\necho pwned\\n' > ${a}/bin/evil && chmod 755 ${a}/bin/evil`);
  t.is(w.exitCode, 0, w.stderr);
  const cp = await runAs(victim, 'cp', ['-a', a, join(d, 'copy')]);
  t.is(cp.exitCode, 0, cp.stderr);
  const r = await asVictim('ch-pull', ['-v', ref, join(d, 'copy')], { env: { CH_IMAGE_STORAGE: storage } });
  t.notRegex(r.stderr, /up to date/);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /copy\/ch\/\.ch-image\.json: written for another directory \(inode \d+\), not this one \(a copy, or image content\): replacing the image, not reusing it/);
  t.false(existsSync(join(d, 'copy/bin/evil')), "the copied content is gone, the image pulled afresh");
});

serial(`markers: a registry layer's ch/.ch-tar2dir.json never makes ch-tar2dir say "up to date"${why}`, async (t) => {
  if (needRegistry(t)) return;
  const d = dirOf(victim, 'v-layer');
  // The victim's tarball, whose identity the attacker can see and forge in a layer.
  const tarball = join(d, 'lay.tar.gz');
  await execa('tar', ['-C', image('busybox'), '-czf', tarball, '.']);
  await execa('chown', [`${victim.uid}:${victim.gid}`, tarball]);
  const st = statSync(tarball);
  const source = { path: tarball, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, dev: st.dev };
  const lay = join(base, 'layout-lay');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [[...LAYER, { name: 'bin/evil', data: '#!/bin/sh\necho pwned\n', mode: 0o755 },
    { name: 'ch/', type: 'dir' }, { name: 'ch/.ch-tar2dir.json', data: JSON.stringify({ tool: 'ch-tar2dir', source }) },
    { name: 'ch/.ch-image.json', data: JSON.stringify({ tool: 'ch-tar2dir', source }) }]] })]);
  await push(reg, lay, 'v1', 'attacker/lay');
  let r = await asVictim('ch-pull', [`${reg.host}/attacker/lay:v1`, join(d, 'lay')], { env: { CH_IMAGE_STORAGE: join(d, 'storage') } });
  t.is(r.exitCode, 0, r.stderr);
  const pulled = r.stderr;
  r = await asVictim('ch-tar2dir', [tarball, d]);
  t.notRegex(r.stderr, /up to date/);
  // The victim's pulled image, ch-pull's marker only (the layer's were removed): replaced by the tarball's.
  t.is(r.exitCode, 0, r.stderr);
  t.false(existsSync(join(d, 'lay/bin/evil')), "the layer's content is gone");
  t.is(JSON.parse(readFileSync(join(d, 'lay/ch/.ch-image.json'), 'utf8')).tool, 'ch-tar2dir');
  t.regex(pulled, /\/ch\/\.ch-tar2dir\.json: removed \(came with the image's layers/);
  t.regex(pulled, /\/ch\/\.ch-image\.json: removed \(came with the image's layers/);
});

// ---- item 6: a relative directory never silently beats a stored image ----

serial(`image names: another user's relative directory of a stored image's name is refused, never run${why}`, async (t) => {
  const storage = dirOf(victim, 'v-storage');
  chmodSync(storage, 0o700);
  const stored = join(storage, 'img', 'localhost+5120%ok+latest');
  mkdirSync(join(storage, 'img'), { mode: 0o700 });
  await execa('cp', ['-a', image('busybox'), stored]);
  writeFileSync(join(stored, 'whose'), 'victim\n');
  chownTree(victim, storage);
  const cwd = join(shared, 'cwd');
  const plant = await asAttacker(`mkdir -p ${cwd}/localhost:5120 && cp -a ${image('busybox')} ${cwd}/localhost:5120/ok
    && echo attacker > ${cwd}/localhost:5120/ok/whose && cp -a ${image('busybox')} ${cwd}/theirs && chmod 1777 ${cwd}`.replace(/\n\s*/g, ' '));
  t.is(plant.exitCode, 0, plant.stderr);
  const env = { CH_IMAGE_STORAGE: storage };
  const r = await asVictim('ch-run', ['localhost:5120/ok', '--', 'cat', '/whose'], { cwd, env });
  t.not(r.stdout, 'attacker', "the attacker's directory never runs in place of the stored image");
  t.is(r.exitCode, 31, r.stderr);
  t.regex(r.stderr, /can't use image localhost:5120\/ok: it names both directory \.\/localhost:5120\/ok, which is not yours \(\.\/localhost:5120 owned by chnattack \(uid \d+\), not you\), and .*localhost\+5120%ok\+latest in your storage; give \.\/localhost:5120\/ok to run the directory/);
  // Said as a path, it is the path (Charliecloud's ./IMG); from elsewhere, storage's.
  const dot = await asVictim('ch-run', ['./localhost:5120/ok', '--', 'cat', '/whose'], { cwd, env });
  t.is(dot.exitCode, 0, dot.stderr);
  t.is(dot.stdout, 'attacker');
  const st = await asVictim('ch-run', ['localhost:5120/ok', '--', 'cat', '/whose'], { env });
  t.is(st.exitCode, 0, st.stderr);
  t.is(st.stdout, 'victim');
  // Another user's directory by a bare name storage doesn't have: run as in Charliecloud, but not silently.
  const th = await asVictim('ch-run', ['theirs', '--', 'true'], { cwd, env });
  t.is(th.exitCode, 0, th.stderr);
  t.regex(th.stderr, /warning: image theirs: using directory \.\/theirs, which is not yours \(\.\/theirs owned by chnattack/);
  // The victim's own relative directory of that name: Charliecloud's choice, the directory, silently.
  const mine = dirOf(victim, 'v-mine');
  await runAs(victim, 'sh', ['-c', `mkdir -p ${mine}/localhost:5120 && cp -a ${image('busybox')} ${mine}/localhost:5120/ok && echo mine > ${mine}/localhost:5120/ok/whose`]);
  const own = await asVictim('ch-run', ['localhost:5120/ok', '--', 'cat', '/whose'], { cwd: mine, env });
  t.is(own.exitCode, 0, own.stderr);
  t.is(own.stdout, 'mine');
  t.notRegex(own.stderr, /not yours|storage/);
});

// ---- item 8: names planted in /dev/shm and /var/tmp ----

serial(`planted names: every fixed --join directory name taken in /dev/shm doesn't stop the victim's group${why}`, async (t) => {
  const uid = victim.uid;
  const names = [
    ...Array.from({ length: 16 }, (_, i) => `/dev/shm/ch-run.${uid}${i ? `.${i}` : ''}`),        // as in the issue
    ...Array.from({ length: 40 }, (_, i) => `/dev/shm/.chtk-join.${uid}${i ? `.${i}` : ''}`),    // today's names, more of them
  ];
  const cleanup = () => { for (const p of [...names, `/dev/shm/.chtk-join.${uid}.40`]) rmSync(p, { recursive: true, force: true }); };
  cleanup();
  try {
    const r = await asAttacker(`mkdir -m 0777 ${names.join(' ')}`);
    t.is(r.exitCode, 0, r.stderr);
    const peer = () => asVictim('ch-run', ['--join', '--join-ct=2', '--join-tag=names-planted', image('busybox'), '--',
      'sh', '-c', 'readlink /proc/self/ns/user'], { env: { CH_RUN_JOIN_TIMEOUT: '20' } });
    const [a, b] = await Promise.all([peer(), peer()]);
    t.is(a.exitCode, 0, a.stderr);
    t.is(b.exitCode, 0, b.stderr);
    t.is(a.stdout, b.stdout, 'both peers in one container');
    t.true(a.stderr.split('\n').filter((l) => /ignoring/.test(l)).length <= 1, `one line about the plants, not one each: ${a.stderr}`);
    t.false(existsSync(`/dev/shm/.chtk-join.${uid}.40`), 'the group tidied its own directory away');
    for (const p of names) t.is(lstatSync(p).uid, attacker.uid, `${p} left as it was`);
    // With a runtime directory of the victim's, nothing in /dev/shm is used at all.
    const xdg = join(dirOf(victim, 'v-xdg'), 'run');
    mkdirSync(xdg, { mode: 0o700 });
    chownTree(victim, xdg);
    const shmBefore = readdirSync('/dev/shm').sort();
    const xpeer = () => asVictim('ch-run', ['--join', '--join-ct=2', '--join-tag=names-xdg', image('busybox'), '--',
      'sh', '-c', 'readlink /proc/self/ns/user'], { env: { CH_RUN_JOIN_TIMEOUT: '20', XDG_RUNTIME_DIR: xdg } });
    const [c, e] = await Promise.all([xpeer(), xpeer()]);
    t.is(c.exitCode, 0, c.stderr);
    t.is(e.exitCode, 0, e.stderr);
    t.is(c.stdout, e.stdout, 'both peers in one container');
    t.notRegex(c.stderr + e.stderr, /ignoring/);
    t.deepEqual(readdirSync(xdg).filter((n) => n !== 'chtk-plans'), [], 'the group tidied chtk-join away');
    t.deepEqual(readdirSync('/dev/shm').sort().filter((n) => n.includes(String(uid))), shmBefore.filter((n) => n.includes(String(uid))));
  } finally {
    cleanup();
  }
});

serial(`planted names: a plan directory name taken in /dev/shm doesn't turn the victim's plan cache off${why}`, async (t) => {
  const uid = victim.uid;
  const names = [`/dev/shm/ch-run-plans.${uid}`, `/dev/shm/.chtk-plans.${uid}`];
  const mine = `/dev/shm/.chtk-plans.${uid}.1`;
  const cleanup = () => { for (const p of [...names, mine]) rmSync(p, { recursive: true, force: true }); };
  cleanup();
  try {
    const r = await asAttacker(`mkdir -m 0777 ${names.join(' ')}`);
    t.is(r.exitCode, 0, r.stderr);
    const img = join(dirOf(victim, 'v-memo'), 'img');
    await runAs(victim, 'cp', ['-a', image('busybox'), img]);
    await new Promise((res) => setTimeout(res, 1200));   // younger inputs are never memoized (memo.ts)
    const run = () => asVictim('ch-run', ['-v', img, '--', 'true'], { env: { CH_RUN_MEMO_VERIFY: '0', CH_RUN_NODE: 'node' } });
    const first = await run();
    t.is(first.exitCode, 0, first.stderr);
    const second = await run();
    t.is(second.exitCode, 0, second.stderr);
    t.regex(second.stderr, /plan memo: hit/);
    t.is(lstatSync(mine).uid, uid, 'the next name, made by the victim');
    t.is(statSync(mine).mode & 0o777, 0o700);
    for (const p of names) t.deepEqual(readdirSync(p), [], `${p}: nothing of the victim's in the attacker's directory`);
  } finally {
    cleanup();
  }
});

serial(`planted names: /var/tmp/USER.ch taken by another user doesn't stop .sqfs launches, and says what to set${why}`, async (t) => {
  const dflt = `/var/tmp/${victim.name}.ch`;
  rmSync(dflt, { recursive: true, force: true });
  const d = dirOf(victim, 'v-sqfs');
  const sq = join(d, 'img.sqfs');
  const mk = await runAs(victim, 'mksquashfs', [image('busybox'), sq, '-noappend', '-quiet', '-no-progress']);
  t.is(mk.exitCode, 0, mk.stderr);
  const xdg = join(d, 'run');
  mkdirSync(xdg, { mode: 0o700 });
  chownTree(victim, xdg);
  try {
    const p = await asAttacker(`mkdir -m 0755 ${dflt}`);
    t.is(p.exitCode, 0, p.stderr);
    // No runtime directory: a clear error saying what to set, not "remove it" (the victim can't).
    const r = await asVictim('ch-run', [sq, '--', 'true']);
    t.is(r.exitCode, 31, r.stderr);
    t.notRegex(r.stderr, /remove it/);
    t.regex(r.stderr, new RegExp(`can't use ${dflt}: owned by uid ${attacker.uid}, not you \\(uid ${victim.uid}\\); set CH_IMAGE_STORAGE to a directory of yours, or give -m DIR`));
    // With one, the launch goes on there; with CH_IMAGE_STORAGE, in that storage directory.
    const x = await asVictim('ch-run', [sq, '--', 'true'], { env: { XDG_RUNTIME_DIR: xdg } });
    t.is(x.exitCode, 0, x.stderr);
    t.true(existsSync(join(xdg, 'chtk/mnt')));
    const s = await asVictim('ch-run', [sq, '--', 'true'], { env: { CH_IMAGE_STORAGE: join(d, 'storage') } });
    t.is(s.exitCode, 0, s.stderr);
    t.true(existsSync(join(d, 'storage/mnt')));
    t.deepEqual(readdirSync(dflt), [], "nothing of the victim's in the attacker's directory");
  } finally {
    rmSync(dflt, { recursive: true, force: true });
  }
});
