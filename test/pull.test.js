// ch-pull against a real registry (Debian's docker-registry on loopback,
// started here), images pushed with skopeo from OCI layouts built here.
// ch-pull runs as the unprivileged test user.

import test from 'ava';
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync,
  symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ch, image, isRoot, PKG, TEST_DIR, testUser } from './helpers/env.js';
import { addImage, challengingHost, flakyFront, haveTools, memImage, push, scriptedRegistry, servedManifest, stallingRelay,
  startProxy, startRegistry, storedBlob, tarOf, until, writeLayout } from './helpers/registry.js';

const BASE = join(TEST_DIR, 'pull');
const user = isRoot ? testUser() : null;
let n = 0;

/** A fresh directory owned by the test user. */
function userDir(name) {
  const d = join(BASE, `${name}-${n++}`);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  if (user) chownSync(d, user.uid, user.gid);
  return d;
}

// A hung pull fails the test (killed after 2 minutes) instead of hanging the suite.
function pull(args, env = {}, opts = {}) { return ch('ch-pull', args, { env, timeout: 120000, ...opts }); }

const BUSYBOX = readFileSync('/bin/busybox');
const BASE_LAYER = [
  { name: 'bin/', type: 'dir' }, { name: 'bin/busybox', data: BUSYBOX, mode: 0o755 },
  ...['sh', 'cat', 'env', 'ls', 'echo'].map((a) => ({ name: `bin/${a}`, type: 'symlink', target: 'busybox' })),
  { name: 'etc/', type: 'dir' }, { name: 'etc/motd', data: 'hello from layer 1\n' },
];
const CONFIG = { Env: ['PATH=/bin', 'GREETING=hi there', "QUOTED='q'"], Entrypoint: ['/bin/echo'], Cmd: ['default'],
  WorkingDir: '/etc', User: '1000', Labels: { 'org.example.team': 'hpc' } };

let reg;
const tools = haveTools();

test.before(async () => {
  if (tools) return;
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true });
  chmodSync(BASE, 0o755);
  reg = await startRegistry(join(BASE, 'registry'));
  const lay = join(BASE, 'layout-app');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [BASE_LAYER, [{ name: 'etc/motd', data: 'hello from layer 2\n' }]], config: CONFIG })]);
  await push(reg, lay, 'v1', 'team/app');
});

test.after.always(async () => { await reg?.stop(); });

function skip(t) {
  if (!tools) return false;
  if (process.env.CI) t.fail(`registry tools unavailable in CI: ${tools}`);
  else { t.log(`not tested: ${tools}`); t.pass(); }
  return true;
}

/** Every file under DIR (relative), with its type. */
function tree(dir, rel = '') {
  const out = [];
  for (const e of readdirSync(join(dir, rel)).sort()) {
    const p = rel ? `${rel}/${e}` : e;
    const st = lstatSync(join(dir, p));
    out.push(`${p}${st.isDirectory() ? '/' : st.isSymbolicLink() ? '@' : ''}`);
    if (st.isDirectory()) out.push(...tree(dir, p));
  }
  return out;
}

test('anonymous pull: layers in order, /ch files as ch-builder2tar writes them, runs under ch-run, cached', async (t) => {
  if (skip(t)) return;
  const d = userDir('anon');
  const storage = join(d, 'storage'), dest = join(d, 'img');
  const r = await pull([`${reg.host}/team/app:v1`, dest], { CH_IMAGE_STORAGE: storage });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /layer 1\/2 .* downloaded, applied/);
  t.is(readFileSync(join(dest, 'etc/motd'), 'utf8'), 'hello from layer 2\n');
  t.is(readFileSync(join(dest, 'ch/environment'), 'utf8'), "PATH=/bin\nGREETING=hi there\nQUOTED=''q''\n");
  t.deepEqual(JSON.parse(readFileSync(join(dest, 'ch/metadata.json'), 'utf8')), { Entrypoint: ['/bin/echo'], Cmd: ['default'],
    Env: CONFIG.Env, WorkingDir: '/etc', Labels: { 'org.example.team': 'hpc' }, User: '1000' });
  t.is(readFileSync(join(dest, 'ch/metadata.json'), 'utf8').split('\n')[1], '  "Entrypoint": [');   // same format
  for (const m of ['dev', 'proc', 'sys', 'tmp', 'mnt/9', 'var/spool/slurmd']) t.true(statSync(join(dest, m)).isDirectory(), m);
  t.true(statSync(join(dest, 'etc/hosts')).isFile());
  t.is(JSON.parse(readFileSync(join(dest, 'ch/.ch-image.json'), 'utf8')).tool, 'ch-pull');
  if (user) t.is(statSync(dest).uid, user.uid);
  t.is(statSync(storage).mode & 0o777, 0o700);
  t.deepEqual(readdirSync(d).sort(), ['img', 'storage']);   // no temporaries or lock left
  const run = await ch('ch-run', ['--set-env', dest, '--', '/bin/sh', '-c', 'cat /etc/motd; echo "$GREETING"']);
  t.is(run.exitCode, 0, run.stderr);
  t.is(run.stdout, 'hello from layer 2\nhi there');

  const again = await pull([`${reg.host}/team/app:v1`, dest], { CH_IMAGE_STORAGE: storage });
  t.is(again.exitCode, 0, again.stderr);
  t.regex(again.stderr, /already up to date/);
  const forced = await pull(['--force', `${reg.host}/team/app:v1`, dest], { CH_IMAGE_STORAGE: storage });
  t.is(forced.exitCode, 0, forced.stderr);
  t.regex(forced.stderr, /layer 1\/2 .* cached, applied/);
  t.notRegex(forced.stderr, /downloaded/);
  t.is(readFileSync(join(dest, 'etc/motd'), 'utf8'), 'hello from layer 2\n');

  // Without DEST: into the storage directory, by name.
  const st = await pull(['-q', `${reg.host}/team/app:v1`], { CH_IMAGE_STORAGE: storage });
  t.is(st.exitCode, 0, st.stderr);
  t.is(st.stderr, '');
  t.true(existsSync(join(storage, 'img', `127.0.0.1+${reg.port}%team%app+v1`, 'bin/busybox')));
});

test('--tar writes an image tarball with /ch/environment and /ch/metadata.json', async (t) => {
  if (skip(t)) return;
  const d = userDir('tar');
  const out = join(d, 'app.tar.gz');
  const r = await pull(['--tar', out, `${reg.host}/team/app:v1`], { CH_IMAGE_STORAGE: join(d, 'storage') });
  t.is(r.exitCode, 0, r.stderr);
  const list = (await execa('tar', ['tzf', out])).stdout.split('\n');
  for (const f of ['./ch/environment', './ch/metadata.json', './bin/busybox', './etc/motd']) t.true(list.includes(f), f);
  t.false(list.some((f) => f.startsWith('./ch/.ch-')), 'no marker in a tarball');
  t.deepEqual(readdirSync(d).sort(), ['app.tar.gz', 'storage']);
  // ch-tar2dir unpacks it; ch-pull may then replace that image of ours.
  const u = await ch('ch-tar2dir', [out, d]);
  t.is(u.exitCode, 0, u.stderr);
  t.is(readFileSync(join(d, 'app', 'etc/motd'), 'utf8'), 'hello from layer 2\n');
  const marker = () => JSON.parse(readFileSync(join(d, 'app', 'ch/.ch-image.json'), 'utf8'));
  t.is(marker().tool, 'ch-tar2dir');
  const over = await pull([`${reg.host}/team/app:v1`, join(d, 'app')], { CH_IMAGE_STORAGE: join(d, 'storage') });
  t.is(over.exitCode, 0, over.stderr);
  t.notRegex(over.stderr, /up to date/);
  t.is(marker().tool, 'ch-pull');
  t.deepEqual(readdirSync(join(d, 'app', 'ch')).filter((f) => f.startsWith('.')), ['.ch-image.json'], 'one marker');
});

test('one marker, one rule: ch-pull, ch-tar2dir and ch-convert replace each other\'s images of yours; old markers recognized', async (t) => {
  if (skip(t)) return;
  const d = userDir('onerule');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  const img = join(d, 'img');
  const ref = `${reg.host}/team/app:v1`;
  const tar = join(d, 'img.tar');   // another image, so each replacement shows
  await execa('tar', ['-C', image('busybox'), '-cf', tar, '.']);
  if (user) chownSync(tar, user.uid, user.gid);
  const marker = () => JSON.parse(readFileSync(join(img, 'ch/.ch-image.json'), 'utf8'));
  const markers = () => readdirSync(join(img, 'ch')).filter((f) => f.startsWith('.ch-'));
  const pulled = () => existsSync(join(img, 'etc/motd')) && readFileSync(join(img, 'etc/motd'), 'utf8') === 'hello from layer 2\n';
  const steps = [
    ['ch-pull', () => pull([ref, img], env)],
    ['ch-tar2dir', () => ch('ch-tar2dir', [tar, d])],
    ['ch-convert', () => ch('ch-convert', [tar, img])],
    ['ch-pull', () => pull([ref, img], env)],
    ['ch-convert', () => ch('ch-convert', [tar, img])],
    ['ch-tar2dir', () => ch('ch-tar2dir', [tar, d])],
    ['ch-pull', () => pull([ref, img], env)],
  ];
  for (const [tool, run] of steps) {
    const r = await run();
    t.is(r.exitCode, 0, `${tool}: ${r.stderr}`);
    t.notRegex(r.stderr, /up to date/, tool);
    t.is(marker().tool, tool);
    t.is(marker().root.ino, statSync(img).ino, `${tool}'s marker names its root`);
    t.deepEqual(markers(), ['.ch-image.json'], `${tool}: one marker`);
    t.is(pulled(), tool === 'ch-pull', `${tool}'s content`);
  }
  // Images of earlier versions, with their tool's own marker file: recognized,
  // reused by their own tool, replaced by another.
  const old = (name) => {
    const m = marker();
    rmSync(join(img, 'ch/.ch-image.json'));
    writeFileSync(join(img, 'ch', name), JSON.stringify(m));
    if (user) chownSync(join(img, 'ch', name), user.uid, user.gid);
  };
  old('.ch-pull.json');
  let r = await pull([ref, img], env);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /up to date/, 'an old ch-pull image of this manifest is reused');
  r = await ch('ch-tar2dir', [tar, d]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(marker().tool, 'ch-tar2dir');
  t.deepEqual(markers(), ['.ch-image.json']);
  old('.ch-tar2dir.json');
  r = await ch('ch-tar2dir', [tar, d]);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /up to date/, 'an old ch-tar2dir image of this tarball is reused');
  r = await pull([ref, img], env);
  t.is(r.exitCode, 0, r.stderr);
  t.true(pulled());
  t.is(marker().tool, 'ch-pull');
  // A directory no tool made: each refuses it and leaves it as it was.
  const mine = join(d, 'mine');
  mkdirSync(join(mine, 'ch'), { recursive: true });
  writeFileSync(join(mine, 'keep'), 'keep\n');
  if (user) for (const p of [mine, join(mine, 'ch'), join(mine, 'keep')]) chownSync(p, user.uid, user.gid);
  for (const [tool, run, want] of [
    ['ch-pull', () => pull([ref, mine], env), /mine: exists and was not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours \(no marker \/ch\/\.ch-image\.json\); not using or replacing it/],
    ['ch-tar2dir', () => ch('ch-tar2dir', [join(d, 'mine.tar'), d]), /mine: exists and was not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours \(no marker \/ch\/\.ch-image\.json\); not using or replacing it/],
    ['ch-convert', () => ch('ch-convert', [tar, mine]), /error: exists but does not appear to be an image: \S*mine \(not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours: no marker \/ch\/\.ch-image\.json\); not replacing it/],
  ]) {
    if (tool === 'ch-tar2dir') { await execa('cp', [tar, join(d, 'mine.tar')]); if (user) chownSync(join(d, 'mine.tar'), user.uid, user.gid); }
    const rr = await run();
    t.is(rr.exitCode, 1, `${tool}: ${rr.stderr}`);
    t.regex(rr.stderr, want, tool);
    t.deepEqual(readdirSync(mine).sort(), ['ch', 'keep'], `${tool} left it as it was`);
  }
});

test('whiteouts and opaque directories across layers', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-wh');
  const l1 = [
    { name: 'a/', type: 'dir' }, { name: 'a/keep', data: 'k' }, { name: 'a/gone', data: 'g' },
    { name: 'tree/', type: 'dir' }, { name: 'tree/sub/', type: 'dir' }, { name: 'tree/sub/f', data: 'f' },
    { name: 'opq/', type: 'dir' }, { name: 'opq/old1', data: '1' }, { name: 'opq/olddir/', type: 'dir' }, { name: 'opq/olddir/x', data: 'x' },
    { name: 'late/', type: 'dir' }, { name: 'late/old', data: 'o' }, { name: 'late/d/', type: 'dir' }, { name: 'late/d/old', data: 'o' },
    { name: 'wasdir/', type: 'dir' }, { name: 'wasdir/inner', data: 'i' },
    { name: 'wasfile', data: 'plain' },
    { name: 'linked', data: 'shared data' },
  ];
  const l2 = [
    { name: 'a/.wh.gone', data: '' },
    { name: 'a/.wh.never-existed', data: '' },
    { name: 'tree/.wh.sub', data: '' },
    { name: 'opq/.wh..wh..opq', data: '' }, { name: 'opq/new', data: 'n' },
    // The opaque marker after this layer's own entries: those stay, lower ones go.
    { name: 'late/mine', data: 'm' }, { name: 'late/d/mine', data: 'm' }, { name: 'late/.wh..wh..opq', data: '' },
    { name: 'wasdir', data: 'now a file' },
    { name: 'wasfile/', type: 'dir' }, { name: 'wasfile/x', data: 'x' },
    { name: 'hard', type: 'link', target: 'linked' },
  ];
  const l3 = [{ name: '.wh.tree', data: '' }, { name: 'a/gone', data: 'back again' }];
  writeLayout(lay, 'v1', [addImage(lay, { layers: [l1, l2, l3] })]);
  await push(reg, lay, 'v1', 'whiteouts');
  const d = userDir('wh');
  const dest = join(d, 'img');
  const r = await pull([`${reg.host}/whiteouts:v1`, dest], { CH_IMAGE_STORAGE: join(d, 'storage') });
  t.is(r.exitCode, 0, r.stderr);
  const got = tree(dest).filter((p) => !/^(dev|proc|sys|tmp|home|mnt|etc|ch|run|var)(\/|$)/.test(p));
  t.deepEqual(got, ['a/', 'a/gone', 'a/keep', 'hard', 'late/', 'late/d/', 'late/d/mine', 'late/mine', 'linked',
    'opq/', 'opq/new', 'wasdir', 'wasfile/', 'wasfile/x']);
  t.is(readFileSync(join(dest, 'a/gone'), 'utf8'), 'back again');
  t.is(readFileSync(join(dest, 'wasdir'), 'utf8'), 'now a file');
  t.is(statSync(join(dest, 'hard')).ino, statSync(join(dest, 'linked')).ino);
});

test('multi-arch index: this machine\'s platform by default, --arch and --platform choose, a missing one is an error', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-multi');
  const mk = (arch, variant) => addImage(lay, { arch, variant, layers: [[{ name: 'arch', data: `${arch}${variant ? `/${variant}` : ''}` }]] });
  writeLayout(lay, 'v1', [mk('amd64'), mk('arm64', 'v8'), mk('arm', 'v7'), mk('ppc64le')]);
  await push(reg, lay, 'v1', 'multi');
  const d = userDir('multi');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  const host = { x64: 'amd64', arm64: 'arm64/v8', ppc64: 'ppc64le' }[process.arch];
  const def = await pull([`${reg.host}/multi:v1`, join(d, 'def')], env);
  t.is(def.exitCode, 0, def.stderr);
  if (host) t.is(readFileSync(join(d, 'def', 'arch'), 'utf8'), host);
  for (const [args, want] of [[['--arch', 'arm/v7'], 'arm/v7'], [['-a', 'arm64'], 'arm64/v8'], [['--platform', 'linux/ppc64le'], 'ppc64le']]) {
    const dest = join(d, want.replace('/', '-'));
    const r = await pull([...args, `${reg.host}/multi:v1`, dest], env);
    t.is(r.exitCode, 0, r.stderr);
    t.is(readFileSync(join(dest, 'arch'), 'utf8'), want);
  }
  const none = await pull(['--platform', 'linux/s390x', `${reg.host}/multi:v1`, join(d, 'none')], env);
  t.is(none.exitCode, 1);
  t.regex(none.stderr, /no manifest for linux\/s390x \(the image has: linux\/amd64, linux\/arm64\/v8, linux\/arm\/v7, linux\/ppc64le\)/);
  t.false(existsSync(join(d, 'none')));
  const bad = await pull(['--platform', 'amd64', `${reg.host}/multi:v1`, join(d, 'bad')], env);
  t.is(bad.exitCode, 2);
});

/** Push the small app image to a registry with auth, and check ch-pull's credential sources. */
async function authCases(t, kind) {
  const users = { alice: 'pa:ss word' };
  const r = await startRegistry(join(BASE, `registry-${kind}`), { auth: kind, users });
  try {
    const lay = join(BASE, 'layout-auth');
    if (!existsSync(lay)) writeLayout(lay, 'v1', [addImage(lay, { layers: [[{ name: 'secret', data: 'only for alice' }]] })]);
    await push(r, lay, 'v1', 'private/app', { creds: 'alice:pa:ss word' });
    const d = userDir(kind);
    const ref = `${r.host}/private/app:v1`;
    const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
    const anon = await pull([ref, join(d, 'anon')], env);
    t.is(anon.exitCode, 1);
    t.regex(anon.stderr, /authentication refused \(no credentials/);
    t.false(existsSync(join(d, 'anon')));
    const wrong = await pull([ref, join(d, 'wrong')], { ...env, CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 'nope' });
    t.is(wrong.exitCode, 1);
    t.regex(wrong.stderr, /authentication refused for user 'alice' \(credentials from \$CH_PULL_USER\)/);
    const ok = await pull([ref, join(d, 'env')], { ...env, CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 'pa:ss word' });
    t.is(ok.exitCode, 0, ok.stderr);
    t.is(readFileSync(join(d, 'env', 'secret'), 'utf8'), 'only for alice');
    // ~/.docker/config.json, then $XDG_RUNTIME_DIR/containers/auth.json (which wins).
    const home = join(d, 'home');
    mkdirSync(join(home, '.docker'), { recursive: true });
    const auth = (pw) => JSON.stringify({ auths: { [r.host]: { auth: Buffer.from(`alice:${pw}`).toString('base64') } } });
    writeFileSync(join(home, '.docker', 'config.json'), auth('pa:ss word'));
    mkdirSync(join(d, 'xdg', 'containers'), { recursive: true });
    writeFileSync(join(d, 'xdg', 'containers', 'auth.json'), auth('stale'));
    if (user) for (const p of [home, join(home, '.docker'), join(home, '.docker', 'config.json'), join(d, 'xdg'), join(d, 'xdg', 'containers'), join(d, 'xdg', 'containers', 'auth.json')]) chownSync(p, user.uid, user.gid);
    const docker = await pull([ref, join(d, 'docker')], { ...env, HOME: home });
    t.is(docker.exitCode, 0, docker.stderr);
    const xdg = await pull([ref, join(d, 'xdg-img')], { ...env, HOME: home, XDG_RUNTIME_DIR: join(d, 'xdg') });
    t.is(xdg.exitCode, 1);
    t.regex(xdg.stderr, /credentials from .*containers\/auth\.json/);
    return r;
  } finally {
    await r.stop();
  }
}

test('basic auth (htpasswd, bcrypt): refused without or with wrong credentials; from the environment and auth files', async (t) => {
  if (skip(t)) return;
  await authCases(t, 'basic');
});

test('bearer tokens from the realm the registry names, for the repository\'s pull scope', async (t) => {
  if (skip(t)) return;
  const r = await authCases(t, 'token');
  t.true(r.token.requests.some((q) => new URLSearchParams(q).get('scope') === 'repository:private/app:pull'
    && new URLSearchParams(q).get('service') === 'ch-test-registry'), r.token.requests.join(' '));
});

test('a corrupted blob in the registry: digest mismatch, nothing kept', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-corrupt');
  const img = addImage(lay, { layers: [[{ name: 'good', data: 'good' }], [{ name: 'data', data: randomBytes(4096).toString('hex') }]] });
  writeLayout(lay, 'v1', [img]);
  await push(reg, lay, 'v1', 'corrupt');
  const served = (await servedManifest(reg, 'corrupt', 'v1')).layers[1];
  t.is(served.digest, img.layers[1].digest);   // gzipped already: pushed as is
  const blob = storedBlob(reg, served.digest);
  const data = readFileSync(blob);
  data[data.length >> 1] ^= 0xff;   // same size, different content
  writeFileSync(blob, data);
  const d = userDir('corrupt');
  const storage = join(d, 'storage');
  const r = await pull([`${reg.host}/corrupt:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
  t.is(r.exitCode, 1);
  t.regex(r.stderr, new RegExp(`blob ${img.layers[1].digest}: digest mismatch: the registry sent data with digest sha256:[0-9a-f]{64}; discarded`));
  t.deepEqual(readdirSync(d).sort(), ['storage']);
  const cached = readdirSync(join(storage, 'blobs', 'sha256'));
  t.false(cached.some((f) => f.startsWith(img.layers[1].digest.slice(7))), cached.join(' '));
});

test('the registry killed mid-pull: clear error, the partial blob kept; the next pull resumes it', async (t) => {
  if (skip(t)) return;
  const own = await startRegistry(join(BASE, 'registry-kill'));
  const big = randomBytes(8 << 20);
  const lay = join(BASE, 'layout-big');
  const img = addImage(lay, { layers: [[{ name: 'big', data: big }]], gzip: false });
  writeLayout(lay, 'v1', [img]);
  await push(own, lay, 'v1', 'big');
  const layer = (await servedManifest(own, 'big', 'v1')).layers[0];
  const relay = await stallingRelay(own.port, 2 << 20);
  const d = userDir('kill');
  const storage = join(d, 'storage');
  const part = join(storage, 'blobs', 'sha256', `${layer.digest.slice(7)}.part`);
  const env = { CH_IMAGE_STORAGE: storage, CH_PULL_RETRIES: '1' };
  try {
    const p = pull([`127.0.0.1:${relay.port}/big:v1`, join(d, 'img')], env);
    await until('part of the blob to arrive', () => relay.stalled && existsSync(part) && statSync(part).size > 0);
    await own.kill();
    relay.stop();
    const r = await p;
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, /registry 127\.0\.0\.1:[0-9]+ unreachable: .*ECONNREFUSED.* bytes kept; run again to resume/);
    t.false(existsSync(join(d, 'img')));
    const kept = statSync(part).size;
    t.true(kept > 0 && kept < layer.size, `${kept} of ${layer.size}`);
    await own.start();   // same port, same storage
    const again = await pull([`${own.host}/big:v1`, join(d, 'img')], env);
    t.is(again.exitCode, 0, again.stderr);
    t.regex(again.stderr, /downloaded \(resumed at [0-9.]+ MiB\)/);
    t.false(existsSync(part));
    t.is(createHash('sha256').update(readFileSync(join(d, 'img', 'big'))).digest('hex'), createHash('sha256').update(big).digest('hex'));
  } finally {
    relay.stop();
    await own.stop();
  }
});

test('8 concurrent pulls of one image into one cache: each blob downloaded once, all images complete', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-conc');
  const img = addImage(lay, { layers: [BASE_LAYER, [{ name: 'noise', data: randomBytes(4 << 20) }]], gzip: false });
  writeLayout(lay, 'v1', [img]);
  await push(reg, lay, 'v1', 'conc');
  const d = userDir('conc');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  // Four into their own directories, four into the same one.
  const dests = [0, 1, 2, 3].map((i) => join(d, `img${i}`)).concat([0, 1, 2, 3].map(() => join(d, 'shared')));
  const rs = await Promise.all(dests.map((dest) => pull([`${reg.host}/conc:v1`, dest], env)));
  for (const r of rs) t.is(r.exitCode, 0, r.stderr);
  const all = rs.map((r) => r.stderr).join('\n');
  t.is(all.match(/layer 2\/2 \S+ 4\.0 MiB downloaded/g)?.length, 1, all);
  t.is(all.match(/layer 2\/2 \S+ 4\.0 MiB cached/g)?.length ?? 0, rs.filter((r) => !/already up to date/.test(r.stderr)).length - 1, all);
  for (const dest of new Set(dests)) t.is(statSync(join(dest, 'noise')).size, 4 << 20);
  t.deepEqual(readdirSync(d).sort(), ['img0', 'img1', 'img2', 'img3', 'shared', 'storage']);
  const blobs = readdirSync(join(d, 'storage', 'blobs', 'sha256'));
  t.deepEqual(blobs.filter((b) => !/^[0-9a-f]{64}$/.test(b)), []);   // no .part or .lock left
  t.is(blobs.length, 3);
});

test('hostile layers are refused and nothing is written outside', async (t) => {
  if (skip(t)) return;
  const outside = userDir('outside');
  writeFileSync(join(outside, 'victim'), 'intact');
  if (user) chownSync(join(outside, 'victim'), user.uid, user.gid);
  const cases = {
    dotdot: [[{ name: '../escape', data: 'x' }]],
    abslink: [[{ name: 'evil', type: 'symlink', target: outside }], [{ name: 'evil/planted', data: 'x' }]],
    whiteoutThroughLink: [[{ name: 'evil', type: 'symlink', target: outside }], [{ name: 'evil/.wh.victim', data: '' }]],
    opaqueThroughLink: [[{ name: 'evil', type: 'symlink', target: outside }], [{ name: 'evil/.wh..wh..opq', data: '' }]],
    dotdotWhiteout: [[{ name: 'a/', type: 'dir' }], [{ name: 'a/.wh...', data: '' }]],
  };
  for (const [name, layers] of Object.entries(cases)) {
    const lay = join(BASE, `layout-hostile-${name}`);
    writeLayout(lay, 'v1', [addImage(lay, { layers })]);
    await push(reg, lay, 'v1', `hostile-${name.toLowerCase()}`);
    const d = userDir(`hostile-${name}`);
    const r = await pull([`${reg.host}/hostile-${name.toLowerCase()}:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: join(d, 'storage') });
    t.is(r.exitCode, 1, `${name}: ${r.stderr}`);
    t.regex(r.stderr, /refused|bad whiteout/, name);
    t.deepEqual(readdirSync(d).sort(), ['storage'], name);
  }
  t.deepEqual(readdirSync(outside), ['victim']);
  t.is(readFileSync(join(outside, 'victim'), 'utf8'), 'intact');
  t.false(existsSync(join(BASE, 'escape')));
});

test('DEST and the storage directory: only our own are used', async (t) => {
  if (skip(t)) return;
  const d = userDir('dest');
  const storage = join(d, 'storage');
  // A directory ch-pull did not make is not replaced.
  mkdirSync(join(d, 'mine'));
  writeFileSync(join(d, 'mine', 'precious'), 'keep');
  if (user) { chownSync(join(d, 'mine'), user.uid, user.gid); chownSync(join(d, 'mine', 'precious'), user.uid, user.gid); }
  const r = await pull([`${reg.host}/team/app:v1`, join(d, 'mine')], { CH_IMAGE_STORAGE: storage });
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /mine: exists and was not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours \(no marker \/ch\/\.ch-image\.json\); not using or replacing it/);
  t.deepEqual(readdirSync(join(d, 'mine')), ['precious']);
  // Someone else's directory at DEST (root's, here).
  if (user) {
    mkdirSync(join(d, 'roots'));
    const r2 = await pull([`${reg.host}/team/app:v1`, join(d, 'roots')], { CH_IMAGE_STORAGE: storage });
    t.is(r2.exitCode, 1);
    t.regex(r2.stderr, /roots: exists and was not made by .* of yours \(belongs to root/);
  }
  // A lock file or a symlink planted in DEST's directory by someone else: refused, never waited on or followed.
  if (user) {
    writeFileSync(join(d, '.planted.ch-pull.lock'), '');
    const lk = await pull([`${reg.host}/team/app:v1`, join(d, 'planted')], { CH_IMAGE_STORAGE: storage });
    t.is(lk.exitCode, 1);
    t.regex(lk.stderr, /\.planted\.ch-pull\.lock: belongs to root .*; refusing to use or wait on it as a lock/);
    t.false(existsSync(join(d, 'planted')));
  }
  symlinkSync(join(d, 'mine'), join(d, 'sym'));
  const sl = await pull([`${reg.host}/team/app:v1`, join(d, 'sym')], { CH_IMAGE_STORAGE: storage });
  t.is(sl.exitCode, 1);
  t.regex(sl.stderr, /sym: exists and was not made by .* of yours \(not a directory\)/);
  t.deepEqual(readdirSync(join(d, 'mine')), ['precious']);
  // The storage directory: a symlink, or open to others, is refused.
  const real = join(d, 'real');
  mkdirSync(real, { mode: 0o700 });
  if (user) chownSync(real, user.uid, user.gid);
  symlinkSync(real, join(d, 'link'));
  const l = await pull([`${reg.host}/team/app:v1`, join(d, 'x')], { CH_IMAGE_STORAGE: join(d, 'link') });
  t.is(l.exitCode, 1);
  t.regex(l.stderr, /storage directory .*link: can't use: a symlink/);
  chmodSync(real, 0o777);
  const w = await pull([`${reg.host}/team/app:v1`, join(d, 'x')], { CH_IMAGE_STORAGE: real });
  t.is(w.exitCode, 1);
  t.regex(w.stderr, /storage directory .*real: writable by group or others \(mode 777\)/);
  t.deepEqual(readdirSync(real), []);
  t.false(existsSync(join(d, 'x')));
  t.is(readlinkSync(join(d, 'link')), real);
});

test('errors: unknown image or tag, unreachable registry, usage', async (t) => {
  if (skip(t)) return;
  const d = userDir('err');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PULL_RETRIES: '0' };
  const tag = await pull([`${reg.host}/team/app:nope`, join(d, 'a')], env);
  t.is(tag.exitCode, 1);
  t.regex(tag.stderr, /team\/app:nope: unknown image or tag \(registry says: MANIFEST_UNKNOWN/);
  const repo = await pull([`${reg.host}/no/such:v1`, join(d, 'a')], env);
  t.is(repo.exitCode, 1);
  t.regex(repo.stderr, /unknown image or tag/);
  const port = (await import('./helpers/registry.js')).closedPort;
  const down = await pull([`127.0.0.1:${await port()}/x:v1`, join(d, 'a')], env);
  t.is(down.exitCode, 1);
  t.regex(down.stderr, /registry 127\.0\.0\.1:[0-9]+ unreachable: connect ECONNREFUSED/);
  t.false(existsSync(join(d, 'a')));
  // Refused at first contact: nothing listens there, said at once, even with retries asked for (no wait, no retry).
  const refused = await pull([`127.0.0.1:${await port()}/x:v1`, join(d, 'a')], { ...env, CH_PULL_RETRIES: '4' });
  t.is(refused.exitCode, 1);
  t.regex(refused.stderr, /error: registry 127\.0\.0\.1:[0-9]+ unreachable: connect ECONNREFUSED/);
  t.notRegex(refused.stderr, /retrying/);
  for (const args of [[], ['a', 'b', 'c'], ['Bad/Name'], ['x@sha256:12'], ['--jobs', '0', 'x'], ['--tar', 'f', 'x', 'dest'], ['--nope', 'x'],
    ['--arch', 'amd64', '--platform', 'linux/amd64', 'x']]) {
    const r = await pull(args, env);
    t.is(r.exitCode, 2, `${args.join(' ')}: ${r.stderr}`);
  }
  for (const args of [['--help'], ['-h'], ['--usage'], ['--version']]) {
    const r = await pull(args, env);
    t.is(r.exitCode, 0, args[0]);
    t.true(r.stdout.length > 0);
  }
  t.regex((await pull(['--help'], env)).stdout, /Exit status:\n  0 /);
});

test('HTTPS: the CA from NODE_EXTRA_CA_CERTS, refused without it unless --insecure; proxies for HTTP and HTTPS', async (t) => {
  if (skip(t)) return;
  const r = await startRegistry(join(BASE, 'registry-tls'), { tls: true });
  const proxy = await startProxy();
  try {
    const lay = join(BASE, 'layout-tls');
    writeLayout(lay, 'v1', [addImage(lay, { layers: [[{ name: 'over-tls', data: 'yes' }]] })]);
    await push(r, lay, 'v1', 'tls');
    const d = userDir('tls');
    const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
    const ref = `${r.host}/tls:v1`;
    const untrusted = await pull([ref, join(d, 'a')], env);
    t.is(untrusted.exitCode, 1);
    t.regex(untrusted.stderr, /registry 127\.0\.0\.1:[0-9]+: TLS certificate not trusted: .*self-signed/);
    t.false(existsSync(join(d, 'a')));
    const trusted = await pull([ref, join(d, 'b')], { ...env, NODE_EXTRA_CA_CERTS: r.ca });
    t.is(trusted.exitCode, 0, trusted.stderr);
    t.is(readFileSync(join(d, 'b', 'over-tls'), 'utf8'), 'yes');
    // Every connection verifies with one context, made once (lib/pull/http.ts
    // trustedContext): not the system's certificates parsed per connection.
    writeLayout(lay, 'v3', [addImage(lay, { layers: [0, 1, 2].map((i) => [{ name: `layer-${i}`, data: String(i) }]) })]);
    await push(r, lay, 'v3', 'tls');
    const counter = join(d, 'count-contexts.cjs');
    writeFileSync(counter, `const tls = require('node:tls'), made = tls.createSecureContext; let n = 0;
tls.createSecureContext = (...a) => { n++; return made(...a); };
process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(join(d, 'contexts'))}, String(n)));\n`);
    const three = await pull(['-j', '3', `${r.host}/tls:v3`, join(d, 'three')], { ...env, NODE_EXTRA_CA_CERTS: r.ca, NODE_OPTIONS: `--require ${counter}` });
    t.is(three.exitCode, 0, three.stderr);
    t.is(readFileSync(join(d, 'three', 'layer-2'), 'utf8'), '2');
    t.is(readFileSync(join(d, 'contexts'), 'utf8'), '1');
    const insecure = await pull(['--insecure', '--force', ref, join(d, 'b')], env);
    t.is(insecure.exitCode, 0, insecure.stderr);
    // HTTPS through the proxy: a CONNECT tunnel, the certificate still checked end to end.
    const viaTunnel = await pull(['--force', ref, join(d, 'b')], { ...env, NODE_EXTRA_CA_CERTS: r.ca, https_proxy: proxy.url });
    t.is(viaTunnel.exitCode, 0, viaTunnel.stderr);
    t.true(proxy.seen.includes(`CONNECT ${r.host}`), proxy.seen.join(' '));
    // Plain HTTP through the proxy (absolute URIs); no_proxy bypasses it.
    const before = proxy.seen.length;
    const viaProxy = await pull([`${reg.host}/team/app:v1`, join(d, 'c')], { ...env, HTTP_PROXY: proxy.url });
    t.is(viaProxy.exitCode, 0, viaProxy.stderr);
    t.true(proxy.seen.slice(before).some((l) => l.startsWith(`GET http://${reg.host}/v2/team/app/blobs/sha256:`)), proxy.seen.join(' '));
    const n = proxy.seen.length;
    const bypass = await pull(['--force', `${reg.host}/team/app:v1`, join(d, 'c')], { ...env, http_proxy: proxy.url, no_proxy: 'localhost,127.0.0.1' });
    t.is(bypass.exitCode, 0, bypass.stderr);
    t.is(proxy.seen.length, n);
  } finally {
    await proxy.close();
    await r.stop();
  }
});

test('SIGTERM mid-download: exit 143, DEST and temporaries gone, the partial blob kept for the next pull', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-sig');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [[{ name: 'big', data: randomBytes(6 << 20) }]] })]);
  await push(reg, lay, 'v1', 'sig');
  const layer = (await servedManifest(reg, 'sig', 'v1')).layers[0];
  const relay = await stallingRelay(reg.port, 1 << 20);
  const d = userDir('sig');
  const storage = join(d, 'storage');
  const part = join(storage, 'blobs', 'sha256', `${layer.digest.slice(7)}.part`);
  try {
    const p = pull([`127.0.0.1:${relay.port}/sig:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
    await until('part of the blob to arrive', () => relay.stalled && existsSync(part) && statSync(part).size > 0);
    t.true(readdirSync(d).some((e) => e.startsWith('.img.ch-pull-tmp.')));   // mid-pull: the temporary is there
    p.kill('SIGTERM');
    const r = await p;
    t.is(r.exitCode, 143, r.stderr);
    t.regex(r.stderr, /interrupted by SIGTERM; nothing left that looks complete/);
    t.deepEqual(readdirSync(d).sort(), ['storage']);
    t.true(statSync(part).size > 0);
    const again = await pull([`${reg.host}/sig:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
    t.is(again.exitCode, 0, again.stderr);
    t.regex(again.stderr, /resumed at/);
  } finally {
    relay.stop();
  }
});

test('blob cache: bounded (CH_PULL_CACHE_MAX), least recently used first; --cache-list, --cache-prune; what a running pull uses stays', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-lru');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [BASE_LAYER, [{ name: 'big', data: randomBytes(6 << 20) }]] })]);
  await push(reg, lay, 'v1', 'lru');
  const lru = await servedManifest(reg, 'lru', 'v1');
  const app = await servedManifest(reg, 'team/app', 'v1');
  const hexes = (m) => [m.config, ...m.layers].map((x) => x.digest.slice(7)).sort();
  const d = userDir('lru');
  const storage = join(d, 'storage');
  const env = { CH_IMAGE_STORAGE: storage };
  const cached = () => { try { return readdirSync(join(storage, 'blobs', 'sha256')).sort(); } catch { return []; } };
  const blobsDir = () => readdirSync(join(storage, 'blobs'));

  // A bound of 1 byte: nothing stays once the pull is done, and no pin or lock either.
  let r = await pull(['-v', `${reg.host}/team/app:v1`, join(d, 'app')], { ...env, CH_PULL_CACHE_MAX: '1' });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /blob cache: removed 3 least recently used .* \(CH_PULL_CACHE_MAX\)/);
  t.deepEqual(cached(), []);
  t.deepEqual(blobsDir(), ['sha256']);
  r = await pull(['x'], { ...env, CH_PULL_CACHE_MAX: 'lots' });
  t.is(r.exitCode, 2, r.stderr);
  t.regex(r.stderr, /CH_PULL_CACHE_MAX 'lots': want a size/);

  // The default bound keeps both images' blobs; --cache-list shows them, least recently used first.
  r = await pull(['--force', `${reg.host}/team/app:v1`, join(d, 'app')], env);
  t.is(r.exitCode, 0, r.stderr);
  r = await pull([`${reg.host}/lru:v1`, join(d, 'lru')], env);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(cached(), [...new Set([...hexes(app), ...hexes(lru)])].sort());
  const list = await pull(['--cache-list'], env);
  t.is(list.exitCode, 0, list.stderr);
  const rows = [...list.stdout.matchAll(/^blob +(\d+) +\S+ +.*\/sha256\/([0-9a-f]{64})$/gm)];
  t.deepEqual(rows.map((m) => m[2]).sort(), cached(), list.stdout);
  const appOnly = hexes(app).filter((h) => !hexes(lru).includes(h));
  const pos = (h) => rows.findIndex((m) => m[2] === h);
  for (const h of appOnly) for (const l of hexes(lru)) t.true(pos(h) < pos(l), `${h} (app only) listed before ${l} (used since)`);
  t.regex(list.stdout, /^# 5 blob\(s\) .*SquashFS listing/m);

  // --cache-prune=SIZE: the least recently used go until SIZE is left: here app's own blobs.
  const lruSize = rows.filter((m) => hexes(lru).includes(m[2])).reduce((n, m) => n + Number(m[1]), 0);
  r = await pull(['--cache-prune', String(lruSize)], env);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /removed 2 cached file\(s\)/);
  t.deepEqual(cached(), hexes(lru));

  // A pull running (its big layer stalled mid-download, the rest pinned) while everything is pruned:
  // what it uses stays, and it completes.
  const big = lru.layers[1].digest.slice(7);
  rmSync(join(storage, 'blobs', 'sha256', big));
  const relay = await stallingRelay(reg.port, 1 << 20);
  try {
    const p = pull([`127.0.0.1:${relay.port}/lru:v1`, join(d, 'again')], env);
    await until('the big layer to stall', () => relay.stalled && existsSync(join(storage, 'blobs', 'sha256', `${big}.part`)));
    const inUse = await pull(['--cache-list'], env);
    t.regex(inUse.stdout, new RegExp(`\\(in use\\) +\\S+/${lru.config.digest.slice(7)}$`, 'm'), inUse.stdout);
    r = await pull(['--cache-prune'], env);
    t.is(r.exitCode, 0, r.stderr);
    t.deepEqual(cached().filter((f) => !f.endsWith('.lock')), [...hexes(lru).filter((h) => h !== big), `${big}.part`].sort(),
      'pinned blobs and the partial download being written stay');
    relay.release();
    const done = await p;
    t.is(done.exitCode, 0, done.stderr);
    t.is(readFileSync(join(d, 'again', 'big')).length, 6 << 20);
  } finally {
    relay.stop();
  }
  r = await pull(['--cache-prune'], env);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(cached(), []);
  t.deepEqual(blobsDir(), ['sha256'], 'no pins left');
});

test('blob cache: pins of a pull killed by SIGKILL are removed by a prune once a minute old (younger: one of a live pull that may not have locked yet); a link planted in the cache is not followed', async (t) => {
  if (skip(t)) return;
  const d = userDir('pins');
  const storage = join(d, 'storage');
  const env = { CH_IMAGE_STORAGE: storage };
  const lay = join(BASE, 'layout-pins');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [BASE_LAYER, [{ name: 'big', data: randomBytes(4 << 20) }]] })]);
  await push(reg, lay, 'v1', 'pins');
  let r = await pull([`${reg.host}/team/app:v1`, join(d, 'app')], env);   // BASE_LAYER cached
  t.is(r.exitCode, 0, r.stderr);
  const relay = await stallingRelay(reg.port, 1 << 20);
  try {
    const p = pull([`127.0.0.1:${relay.port}/pins:v1`, join(d, 'img')], env);
    await until('a pin and a stalled download', () => relay.stalled && readdirSync(join(storage, 'blobs')).some((e) => e.startsWith('.pins.')));
    p.kill('SIGKILL');
    await p;
  } finally {
    relay.stop();
  }
  t.true(readdirSync(join(storage, 'blobs')).some((e) => e.startsWith('.pins.')), 'the killed pull left its pins');
  // Planted in the user's own cache (a link to a file of theirs, named as a blob): not followed, not removed.
  const keep = join(d, 'keep');
  writeFileSync(keep, 'keep\n');
  const link = join(storage, 'blobs', 'sha256', 'f'.repeat(64));
  symlinkSync(keep, link);
  if (user) for (const p of [keep]) chownSync(p, user.uid, user.gid);
  // A pins directory changed in the last minute may be a live pull's that has yet to lock it: kept.
  r = await pull(['-v', '--cache-prune'], env);
  t.is(r.exitCode, 0, r.stderr);
  t.notRegex(r.stderr, /pins of a pull that was killed/);
  t.true(readdirSync(join(storage, 'blobs')).some((e) => e.startsWith('.pins.')), 'young pins kept');
  const old = (Date.now() - 120_000) / 1000;
  for (const e of readdirSync(join(storage, 'blobs')).filter((n) => n.startsWith('.pins.'))) utimesSync(join(storage, 'blobs', e), old, old);
  r = await pull(['-v', '--cache-prune'], env);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /\.pins\.[0-9a-f]+: pins of a pull that was killed/);
  t.deepEqual(readdirSync(join(storage, 'blobs')), ['sha256']);
  t.deepEqual(readdirSync(join(storage, 'blobs', 'sha256')), ['f'.repeat(64)], 'only the link left');
  t.is(readFileSync(keep, 'utf8'), 'keep\n');
});

test('disk full, while downloading or while unpacking: said plainly, nothing left', async (t) => {
  if (skip(t)) return;
  if (!isRoot) { t.log('needs root to mount a small tmpfs; not tested'); t.pass(); return; }
  const lay = join(BASE, 'layout-full');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [[{ name: 'big', data: randomBytes(2 << 20) }]] })]);
  await push(reg, lay, 'v1', 'full');
  const d = userDir('full');
  const small = join(d, 'small');
  mkdirSync(small);
  await execa('mount', ['-t', 'tmpfs', '-o', `size=1m,mode=0755,uid=${user.uid},gid=${user.gid}`, 'tmpfs', small]);
  try {
    // The image on the full file system, the cache elsewhere.
    const unpack = await pull([`${reg.host}/full:v1`, join(small, 'img')], { CH_IMAGE_STORAGE: join(d, 'storage') });
    t.is(unpack.exitCode, 1);
    t.regex(unpack.stderr, /layer 1 \(sha256:[0-9a-f]+\): disk full: .*\(ENOSPC\)/);
    t.deepEqual(readdirSync(small), []);
    // The cache on the full file system.
    const download = await pull([`${reg.host}/full:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: join(small, 'storage') });
    t.is(download.exitCode, 1);
    t.regex(download.stderr, /\.part: can't write: disk full: .*\(ENOSPC\)/);
    t.false(existsSync(join(d, 'img')));
    t.deepEqual(readdirSync(d).sort(), ['small', 'storage']);
  } finally {
    await execa('umount', [small]);
  }
});

test('references in Docker syntax: Docker Hub defaults, registries with ports, digests; storage names', async (t) => {
  const { parseReference, storageName } = await import(join(PKG, 'dist/pull/reference.js'));
  const cases = {
    'alpine:3.20': ['docker.io', 'registry-1.docker.io', 'library/alpine', '3.20', undefined, 'alpine+3.20'],
    alpine: ['docker.io', 'registry-1.docker.io', 'library/alpine', 'latest', undefined, 'alpine+latest'],
    'user/repo': ['docker.io', 'registry-1.docker.io', 'user/repo', 'latest', undefined, 'user%repo+latest'],
    'registry:5000/team/app:v1': ['registry:5000', 'registry:5000', 'team/app', 'v1', undefined, 'registry+5000%team%app+v1'],
    'localhost/x': ['localhost', 'localhost', 'x', 'latest', undefined, 'localhost%x+latest'],
    ['ghcr.io/o/p@sha256:' + 'a'.repeat(64)]: ['ghcr.io', 'ghcr.io', 'o/p', undefined, 'sha256:' + 'a'.repeat(64), `ghcr.io%o%p+sha256+${'a'.repeat(64)}`],
    'docker.io/library/debian:12': ['docker.io', 'registry-1.docker.io', 'library/debian', '12', undefined, 'debian+12'],
  };
  for (const [ref, [registry, host, repository, tag, digest, name]] of Object.entries(cases)) {
    const r = parseReference(ref);
    t.deepEqual([r.registry, r.host, r.repository, r.tag, r.digest, storageName(r)], [registry, host, repository, tag, digest, name], ref);
  }
  for (const bad of ['', 'UPPER/case', 'a//b', 'x:', 'x@sha256:abc', 'x y', 'reg:5000/', '-x']) t.throws(() => parseReference(bad), undefined, bad);
});

test('SIGKILL mid-pull: nothing that looks complete; the next pull removes the temporary and finishes', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-kill9');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [BASE_LAYER, [{ name: 'big', data: randomBytes(6 << 20) }]] })]);
  await push(reg, lay, 'v1', 'kill9');
  const layer = (await servedManifest(reg, 'kill9', 'v1')).layers[1];
  const relay = await stallingRelay(reg.port, 4 << 20);
  const d = userDir('kill9');
  const storage = join(d, 'storage');
  const part = join(storage, 'blobs', 'sha256', `${layer.digest.slice(7)}.part`);
  try {
    const p = pull([`127.0.0.1:${relay.port}/kill9:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
    await until('part of the big layer to arrive', () => relay.stalled && existsSync(part) && statSync(part).size > 0);
    p.kill('SIGKILL');
    await p;
    const left = readdirSync(d).sort();
    t.false(left.includes('img'));
    t.true(left.every((e) => e === 'storage' || e.startsWith('.img.ch-pull')), left.join(' '));
    t.true(left.some((e) => e.startsWith('.img.ch-pull-tmp.')));
    const again = await pull(['-v', `${reg.host}/kill9:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
    t.is(again.exitCode, 0, again.stderr);
    t.regex(again.stderr, /removing stale temporary/);
    t.deepEqual(readdirSync(d).sort(), ['img', 'storage']);
    t.is(statSync(join(d, 'img', 'big')).size, 6 << 20);
  } finally {
    relay.stop();
  }
});

test('HTTP 503 from the registry: retried with backoff, then the pull succeeds', async (t) => {
  if (skip(t)) return;
  const front = await flakyFront(reg, 3);
  try {
    const d = userDir('flaky');
    const r = await pull([`${front.host}/team/app:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: join(d, 'storage') });
    t.is(r.exitCode, 0, r.stderr);
    t.is(front.failed(), 3);
    t.is(r.stderr.match(/HTTP 503 from 127\.0\.0\.1:[0-9]+; retrying in/g)?.length, 3, r.stderr);
    t.is(readFileSync(join(d, 'img', 'etc/motd'), 'utf8'), 'hello from layer 2\n');
  } finally {
    await front.close();
  }
});

test('a partial blob left by an earlier pull: resumed with Range, restarted where Range is ignored, discarded if wrong', async (t) => {
  if (skip(t)) return;
  const lay = join(BASE, 'layout-partial');
  writeLayout(lay, 'v1', [addImage(lay, { layers: [[{ name: 'big', data: randomBytes(3 << 20) }]] })]);
  await push(reg, lay, 'v1', 'partial');
  const layer = (await servedManifest(reg, 'partial', 'v1')).layers[0];
  const whole = readFileSync(storedBlob(reg, layer.digest));
  const noRange = await flakyFront(reg, 0, { noRange: true });
  try {
    for (const [name, host, head, want] of [
      ['range', reg.host, whole.subarray(0, 1 << 20), /downloaded \(resumed at 1\.0 MiB\)/],
      ['norange', noRange.host, whole.subarray(0, 1 << 20), /MiB downloaded, applied/],
      ['wrong', reg.host, randomBytes(1 << 20), /digest mismatch.*discarded/],
    ]) {
      const d = userDir(`partial-${name}`);
      const storage = join(d, 'storage');
      const dir = join(storage, 'blobs', 'sha256');
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const part = join(dir, `${layer.digest.slice(7)}.part`);
      writeFileSync(part, head, { mode: 0o600 });
      if (user) for (const p of [storage, join(storage, 'blobs'), dir, part]) chownSync(p, user.uid, user.gid);
      chmodSync(storage, 0o700); chmodSync(join(storage, 'blobs'), 0o700);
      const r = await pull([`${host}/partial:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
      t.regex(r.stderr, want, name);
      if (name === 'wrong') {
        t.is(r.exitCode, 1);
        t.false(existsSync(part));   // discarded: the next pull starts afresh and succeeds
        const again = await pull([`${host}/partial:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
        t.is(again.exitCode, 0, again.stderr);
      } else {
        t.is(r.exitCode, 0, r.stderr);
        t.notRegex(r.stderr, name === 'norange' ? /resumed/ : /^$/);
      }
      t.true(readFileSync(join(d, 'img', 'big')).length === 3 << 20, name);
    }
  } finally {
    await noRange.close();
  }
});

// ---- hostile registries (scripted in node on loopback; no registry tools needed) ----

/** Raw control characters (C0 but newline, DEL, C1): none may reach the terminal from a registry. */
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/;

/** Names in the storage's blob directory. */
function cached(storage) {
  try { return readdirSync(join(storage, 'blobs', 'sha256')); } catch { return []; }
}

test('a registry that challenges: /v2/ asked once, the manifest with the credentials on its connection; a refusal still said plainly', async (t) => {
  const img = memImage({ layers: [[{ name: 'f', data: 'x' }]] });
  const reg = await scriptedRegistry(img, { basic: 'alice:s3cret' });
  try {
    const d = userDir('login-once');
    const env = { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PULL_RETRIES: '0' };
    const r = await pull([`${reg.host}/x:v1`, join(d, 'img')], { ...env, CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 's3cret' });
    t.is(r.exitCode, 0, r.stderr);
    t.is(readFileSync(join(d, 'img', 'f'), 'utf8'), 'x');
    // lib/pull/registry.ts connect(): the credentials are tried by the manifest's request, not by a second /v2/.
    const probes = reg.log.filter((e) => e.path === '/v2/'), manifest = reg.log.find((e) => e.path.includes('/manifests/'));
    t.is(probes.length, 1, JSON.stringify(reg.log));
    t.is(probes[0].authorization, undefined);
    t.is(manifest.authorization, `Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    t.is(manifest.conn, probes[0].conn, JSON.stringify(reg.log));
    // Wrong credentials: refused at the manifest, as they were at the second /v2/, and nothing made.
    const wrong = await pull([`${reg.host}/x:v1`, join(d, 'wrong')], { ...env, CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 'nope' });
    t.is(wrong.exitCode, 1);
    t.regex(wrong.stderr, /authentication refused for user 'alice' \(credentials from \$CH_PULL_USER\)/);
    t.false(existsSync(join(d, 'wrong')));
  } finally {
    await reg.close();
  }
});

test('credentials go only to the registry named: a blob redirected to a host that challenges gets none', async (t) => {
  const img = memImage({ layers: [[{ name: 'f', data: 'x' }], [{ name: 'g', data: 'y' }]] });
  const evil = await challengingHost();
  const store = await scriptedRegistry(img);   // blob storage elsewhere that needs no credentials (as S3 URLs)
  const reg = await scriptedRegistry(img, { basic: 'victim:s3cret', route: (req, res, url) => {
    const m = /\/blobs\/(.+)$/.exec(url.pathname);
    if (!m) return false;
    const to = url.pathname.startsWith('/v2/evil/') ? `http://${evil.host}/blobs/${m[1]}` : `http://${store.host}/v2/x/blobs/${m[1]}`;
    res.writeHead(307, { location: to });
    res.end();
    return true;
  } });
  try {
    const d = userDir('redirect');
    const env = { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PULL_USER: 'victim', CH_PULL_PASSWORD: 's3cret', CH_PULL_RETRIES: '0' };
    const bad = await pull([`${reg.host}/evil/app:v1`, join(d, 'bad')], env);
    t.true(evil.log.length > 0);
    t.deepEqual(evil.log.filter((e) => e.authorization !== undefined), [], 'the redirect target was sent credentials');
    t.false(evil.log.some((e) => e.path === '/token'), 'the redirect target\'s token endpoint was asked');
    t.is(bad.exitCode, 1, bad.stderr);
    t.regex(bad.stderr, new RegExp(`blob sha256:[0-9a-f]+: HTTP 401 from ${evil.host}, where ${reg.host} redirected it;`
      + ` credentials go only to ${reg.host}; refused`));
    t.notRegex(bad.stderr, /internal error/);
    t.false(existsSync(join(d, 'bad')));
    // A redirect target that serves without credentials: the pull works, and it was sent none.
    const good = await pull([`${reg.host}/good/app:v1`, join(d, 'good')], env);
    t.is(good.exitCode, 0, good.stderr);
    t.is(readFileSync(join(d, 'good', 'g'), 'utf8'), 'y');
    t.true(store.log.filter((e) => e.path.includes('/blobs/')).length >= 3);
    t.deepEqual(store.log.filter((e) => e.authorization !== undefined), []);
    t.true(reg.log.some((e) => e.authorization?.startsWith('Basic ')));   // the registry itself did get them
  } finally {
    await reg.close(); await store.close(); await evil.close();
  }
});

test('an oversized config or manifest: refused before it is downloaded, nothing left in the cache', async (t) => {
  const d = userDir('oversize');
  const storage = join(d, 'storage');
  const env = { CH_IMAGE_STORAGE: storage, CH_PULL_RETRIES: '0' };
  // Claimed: the manifest says the config is 3 GB.
  const claimed = memImage({ configSize: 3 * 2 ** 30 });
  const r1 = await scriptedRegistry(claimed);
  try {
    const r = await pull([`${r1.host}/big:v1`, join(d, 'img')], env);
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, /config sha256:[0-9a-f]+ is 3221225472 bytes, more than 4 MiB; refused/);
    t.false(r1.log.some((e) => e.path.includes('/blobs/')), 'a blob was downloaded');
    t.deepEqual(cached(storage), []);
    t.false(existsSync(join(d, 'img')));
  } finally { await r1.close(); }
  // Actual: the config claims its true size, the registry sends 6 MiB more.
  const actual = memImage({});
  const hex = actual.config.digest.slice(7);
  const r2 = await scriptedRegistry(actual, { route: (req, res, url) => {
    if (!url.pathname.endsWith(actual.config.digest)) return false;
    res.writeHead(200);
    res.end(Buffer.concat([actual.blobs.get(actual.config.digest), Buffer.alloc(6 << 20, 0x20)]));
    return true;
  } });
  try {
    const r = await pull([`${r2.host}/big:v1`, join(d, 'img')], env);
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, /registry sent more than the [0-9]+ bytes the manifest says; discarded/);
    t.deepEqual(cached(storage).filter((n) => n.startsWith(hex)), []);
    t.false(existsSync(join(d, 'img')));
  } finally { await r2.close(); }
  // A manifest over 4 MiB: said to be one (not "unreachable"), whether its length is announced or not.
  const huge = Buffer.from(JSON.stringify({ schemaVersion: 2, pad: 'x'.repeat(5 << 20) }));
  for (const announced of [true, false]) {
    const r3 = await scriptedRegistry(memImage({}), { route: (req, res, url) => {
      if (!url.pathname.includes('/manifests/')) return false;
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', ...(announced ? { 'content-length': huge.length } : {}) });
      res.end(huge);
      return true;
    } });
    try {
      const r = await pull([`${r3.host}/big:v1`, join(d, 'img')], env);
      t.is(r.exitCode, 1, r.stderr);
      t.regex(r.stderr, /big:v1: manifest larger than 4 MiB; refused/, `announced: ${announced}`);
    } finally { await r3.close(); }
  }
  t.deepEqual(readdirSync(d), ['storage']);
});

test('control characters from a registry: never printed raw, never stored in /ch/environment', async (t) => {
  const d = userDir('control');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PULL_RETRIES: '0' };
  const img = memImage({ config: { Env: ['PATH=/bin', 'EVIL\x1b[31m=x', 'V=a\x1b]0;title\x07b', 'C1=a\u009b31mb', 'TAB=a\tb'],
    Labels: { l: 'x\u009by\x1b' }, Cmd: ['\x1b[2J'] } });
  const reg = await scriptedRegistry(img, { route: (req, res, url) => {
    if (url.pathname.startsWith('/v2/json/') && url.pathname.includes('/manifests/')) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: '\x1b]0;owned\x07\x1b[2Jgone\u009b1m\r\nch-pull: all fine' }] }));
      return true;
    }
    if (url.pathname.startsWith('/v2/text/') && url.pathname.includes('/manifests/')) {
      res.writeHead(418, { 'content-type': 'text/plain' });
      res.end('\x1b[31mred\x1b[0m\x08\x08');
      return true;
    }
    return false;
  } });
  const hdr = await scriptedRegistry(img, { route: (req, res) => {
    res.writeHead(401, { 'www-authenticate': 'Weird x=\u009b31m,y=\u0085' });
    res.end();
    return true;
  } });
  try {
    for (const [ref, want] of [[`${reg.host}/json/app:v1`, /unknown image or tag \(registry says: MANIFEST_UNKNOWN: \\x1b\]0;owned\\x07\\x1b\[2Jgone\\x9b1m\\x0d\\x0ach-pull: all fine\)/],
      [`${reg.host}/text/app:v1`, /manifest: HTTP 418: \\x1b\[31mred\\x1b\[0m\\x08\\x08/],
      [`${hdr.host}/app:v1`, /unsupported authentication challenge 'Weird x=\\x9b31m,y=\\x85'/]]) {
      const r = await pull([ref, join(d, 'img')], env);
      t.is(r.exitCode, 1, r.stderr);
      t.regex(r.stderr, want);
      t.false(CONTROL.test(r.stderr), JSON.stringify(r.stderr));
      t.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);   // no line forged
    }
    // Env entries with a control character (but TAB in a value) are not written to /ch/environment;
    // metadata.json keeps every value, escaped.
    const r = await pull([`${reg.host}/app:v1`, join(d, 'img')], env);
    t.is(r.exitCode, 0, r.stderr);
    t.false(CONTROL.test(r.stderr), JSON.stringify(r.stderr));
    t.regex(r.stderr, /warning: ENV EVIL\\x1b\[31m: can't be written to \/ch\/environment \(control character\); skipped/);
    t.regex(r.stderr, /warning: ENV V: can't be written/);
    t.regex(r.stderr, /warning: ENV C1: can't be written/);
    t.is(readFileSync(join(d, 'img', 'ch/environment'), 'utf8'), 'PATH=/bin\nTAB=a\tb\n');
    const meta = readFileSync(join(d, 'img', 'ch/metadata.json'), 'utf8');
    t.false(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/.test(meta), JSON.stringify(meta));
    const m = JSON.parse(meta);
    t.deepEqual(m.Labels, { l: 'x\u009by\x1b' });
    t.deepEqual(m.Cmd, ['\x1b[2J']);
  } finally {
    await reg.close(); await hdr.close();
  }
});

test('--max-unpacked and CH_PULL_MAX_UNPACKED bound what the layers unpack to; nothing left when over', async (t) => {
  const d = userDir('unpacked');
  const storage = join(d, 'storage');
  // Two layers of 300 KiB of zeros each: under 1 KiB each compressed.
  const img = memImage({ layers: [[{ name: 'a', data: Buffer.alloc(300 << 10) }], [{ name: 'b', data: Buffer.alloc(300 << 10) }]] });
  t.true(img.layers.every((l) => l.size < 2048));
  const reg = await scriptedRegistry(img);
  try {
    const ref = `${reg.host}/bomb:v1`;
    const over = /layer 2 \(sha256:[0-9a-f]+\): unpacked size over the limit of 512 KiB \(--max-unpacked or CH_PULL_MAX_UNPACKED\)/;
    for (const [args, env] of [[['--max-unpacked', '512K'], {}], [[], { CH_PULL_MAX_UNPACKED: '512k' }],
      [['--max-unpacked=524288'], { CH_PULL_MAX_UNPACKED: '100G' }]]) {
      const r = await pull([...args, ref, join(d, 'img')], { CH_IMAGE_STORAGE: storage, ...env });
      t.is(r.exitCode, 1, r.stderr);
      t.regex(r.stderr, over);
      t.deepEqual(readdirSync(d), ['storage']);
    }
    const tar = await pull(['--max-unpacked', '512K', '--tar', join(d, 'img.tar.gz'), ref], { CH_IMAGE_STORAGE: storage });
    t.is(tar.exitCode, 1, tar.stderr);
    t.regex(tar.stderr, over);
    t.deepEqual(readdirSync(d), ['storage']);
    t.deepEqual(readdirSync(join(storage, 'tmp')), []);
    // Under the limit: pulled.
    const ok = await pull(['--max-unpacked', '1M', ref, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
    t.is(ok.exitCode, 0, ok.stderr);
    t.is(statSync(join(d, 'img', 'b')).size, 300 << 10);
    for (const [args, env] of [[['--max-unpacked', '12Q'], {}], [['--max-unpacked', ''], {}], [[], { CH_PULL_MAX_UNPACKED: 'lots' }]]) {
      const r = await pull([...args, ref, join(d, 'x')], { CH_IMAGE_STORAGE: storage, ...env });
      t.is(r.exitCode, 2, `${args} ${JSON.stringify(env)}: ${r.stderr}`);
      t.regex(r.stderr, /max-unpacked|MAX_UNPACKED/);
    }
    const help = (await pull(['--help'])).stdout;
    t.regex(help, /--max-unpacked/);
    t.regex(help, /CH_PULL_MAX_UNPACKED/);
  } finally {
    await reg.close();
  }
});

// ---- layers applied while they download, in parallel ----

/** Every path under DIR (relative) whose last component is NAME. */
function findNamed(dir, name, rel = '') {
  const out = [];
  let ents = [];
  try { ents = readdirSync(join(dir, rel), { withFileTypes: true }); } catch { return out; }
  for (const e of ents) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.name === name) out.push(p);
    if (e.isDirectory()) out.push(...findNamed(dir, name, p));
  }
  return out;
}

test('a layer is applied while it downloads; a digest mismatch at its end discards the image, the stage and the blob', async (t) => {
  // Stored (gzip level 0): the served blob has the manifest's size and is a valid layer, only not the one
  // the manifest names, so the extractor unpacks all of it and only the digest, at the end, tells.
  const big = randomBytes(2 << 20);
  const layer = [{ name: 'early/', type: 'dir' }, { name: 'early/first-member', data: 'unpacked before the rest arrived\n' },
    { name: 'early/big', data: big }];
  const img = memImage({ layers: [layer], gzipLevel: 0 });
  const evil = Buffer.from(big);
  evil[evil.length >> 1] ^= 0xff;
  const served = gzipSync(tarOf([...layer.slice(0, 2), { name: 'early/big', data: evil }]), { level: 0 });
  const want = img.layers[0];
  t.is(served.length, want.size);
  const d = userDir('follow-mismatch');
  let early = false;
  const reg = await scriptedRegistry(img, { route: (req, res, url) => {
    if (!url.pathname.endsWith(`/blobs/${want.digest}`)) return false;
    res.writeHead(200, { 'content-length': served.length });
    const held = served.length - (256 << 10);
    res.write(served.subarray(0, held));
    // The last 256 KiB only once the first member is in the image being built: the overlap, seen.
    until('the first member unpacked', () => findNamed(d, 'first-member').length > 0)
      .then(() => { early = true; }, () => {})
      .finally(() => res.end(served.subarray(held)));
    return true;
  } });
  try {
    const storage = join(d, 'storage');
    const r = await pull([`${reg.host}/x:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`blob ${want.digest}: digest mismatch: the registry sent data with digest sha256:[0-9a-f]{64}; discarded`));
    t.true(early, 'the layer was being unpacked while it downloaded');
    t.false(existsSync(join(d, 'img')));
    t.deepEqual(findNamed(d, 'first-member'), [], 'no stage left');
    const blobs = readdirSync(join(storage, 'blobs', 'sha256'));
    t.false(blobs.some((f) => f.startsWith(want.digest.slice(7)) && !f.endsWith('.lock')), blobs.join(' '));
  } finally {
    await reg.close();
  }
});

test('a layer failing while another downloads stops that download; the error is the failing layer\'s', async (t) => {
  // The stalled download is layer 1's, the one being applied: without the cancel, the pull would wait on it
  // (until its idle timeout) and fail with its error, not layer 2's.
  const img = memImage({ layers: [[{ name: 'a', data: randomBytes(1 << 20) }], [{ name: 'b', data: randomBytes(1 << 20) }]] });
  const [slow, bad] = img.layers;
  const d = userDir('follow-cancel');
  let slowClosed = false, slowStarted = false;
  const reg = await scriptedRegistry(img, { route: (req, res, url) => {
    if (url.pathname.endsWith(`/blobs/${slow.digest}`)) {
      // Half of it, then nothing more: a download only a cancel ends.
      slowStarted = true;
      res.writeHead(200, { 'content-length': slow.size });
      res.write(img.blobs.get(slow.digest).subarray(0, slow.size >> 1));
      res.on('close', () => { slowClosed = true; });
      return true;
    }
    if (url.pathname.endsWith(`/blobs/${bad.digest}`)) {
      // Wrong bytes of the right size, sent once the other download is under way.
      until('the other layer downloading', () => slowStarted).then(() => {
        res.writeHead(200, { 'content-length': bad.size });
        res.end(randomBytes(bad.size));
      });
      return true;
    }
    return false;
  } });
  try {
    const storage = join(d, 'storage');
    const r = await pull([`${reg.host}/x:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage, CH_PULL_RETRIES: '0' });
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`blob ${bad.digest}: digest mismatch`));
    t.notRegex(r.stderr, new RegExp(`${slow.digest}`), 'the stopped download is no error of its own');
    await until('the stopped download closed', () => slowClosed);
    t.false(existsSync(join(d, 'img')));
    // What arrived of the stopped layer is kept for the next pull, its lock released.
    t.true(existsSync(join(storage, 'blobs', 'sha256', `${slow.digest.slice(7)}.part`)));
  } finally {
    await reg.close();
  }
});

test('layers download in parallel (--jobs), fill the cache with verified blobs only, and a second pull needs no registry', async (t) => {
  const layers = [0, 1, 2].map((i) => [{ name: `l${i}`, data: randomBytes(512 << 10) }]);
  const img = memImage({ layers });
  let inFlight = 0, most = 0;
  const reg = await scriptedRegistry(img, { route: (req, res, url) => {
    const l = img.layers.find((x) => url.pathname.endsWith(`/blobs/${x.digest}`));
    if (!l) return false;
    inFlight++;
    most = Math.max(most, inFlight);
    res.writeHead(200, { 'content-length': l.size });
    // Held until a second layer download is open at the same time (or 10 s: then the count below fails).
    const data = img.blobs.get(l.digest);
    res.write(data.subarray(0, 1000));
    const go = () => { res.end(data.subarray(1000)); };
    until('a second download at once', () => most >= 2).then(go, go);
    res.on('close', () => { inFlight--; });
    return true;
  } });
  try {
    const d = userDir('parallel');
    const storage = join(d, 'storage');
    const r = await pull(['--jobs', '3', `${reg.host}/x:v1`, join(d, 'img')], { CH_IMAGE_STORAGE: storage });
    t.is(r.exitCode, 0, r.stderr);
    t.true(most >= 2, `at most ${most} layer download(s) at once`);
    for (let i = 0; i < 3; i++) t.deepEqual(readFileSync(join(d, 'img', `l${i}`)), layers[i][0].data);
    const cached = readdirSync(join(storage, 'blobs', 'sha256'));
    for (const l of [img.config, ...img.layers]) {
      const f = join(storage, 'blobs', 'sha256', l.digest.slice(7));
      t.is(createHash('sha256').update(readFileSync(f)).digest('hex'), l.digest.slice(7));
    }
    t.false(cached.some((f) => f.endsWith('.part')), cached.join(' '));
    // Offline: only the manifest from the registry, every blob from the cache.
    const before = reg.log.length;
    const again = await pull([`${reg.host}/x:v1`, join(d, 'img2')], { CH_IMAGE_STORAGE: storage });
    t.is(again.exitCode, 0, again.stderr);
    t.false(reg.log.slice(before).some((e) => e.path.includes('/blobs/')));
    t.deepEqual(readFileSync(join(d, 'img2', 'l2')), layers[2][0].data);
    // The manifest is asked on the connection the /v2/ probe opened (lib/pull/http.ts drained), not a new one.
    const asked = reg.log.slice(before);
    const probe = asked.find((e) => e.path === '/v2/'), manifest = asked.find((e) => e.path.includes('/manifests/'));
    t.is(manifest.conn, probe.conn, JSON.stringify(asked));
  } finally {
    await reg.close();
  }
});
