// Pushing (lib/push, through ch-convert -o registry / docker:// DST) to a
// real registry on loopback (Debian's docker-registry), then reading back
// what was pushed with ch-pull, podman and skopeo. A logging front in front
// of the registry counts requests (blobs not sent twice, chunks), rewrites
// answers (a Location to another host) or holds an upload open (SIGINT).
// ch-convert runs as the unprivileged test user; podman and skopeo as root.

import test from 'ava';
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, isRoot, needs, notRoot, TEST_DIR, testUser } from './helpers/env.js';
import { imageCopy } from './helpers/fixtures.js';
import { challengingHost, haveTools, loggingFront, startRegistry, storedBlob, until } from './helpers/registry.js';

const BASE = join(TEST_DIR, 'push');
const user = isRoot ? testUser() : null;
let n = 0;
let reg;
const tools = haveTools();

test.before(async () => {
  if (tools) return;
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true, mode: 0o755 });
  reg = await startRegistry(join(BASE, 'registry'));
});

test.after.always(async () => { await reg?.stop(); });

function skip(t) {
  if (!tools) return false;
  if (process.env.CI) t.fail(`registry tools unavailable in CI: ${tools}`);
  else { t.log(`not tested: ${tools}`); t.pass(); }
  return true;
}

/** A fresh directory owned by the test user. */
function userDir(name) {
  const d = join(BASE, `${name}-${n++}`);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  if (user) chownSync(d, user.uid, user.gid);
  return d;
}

const cv = (args, env = {}, opts = {}) => ch('ch-convert', args, { env, timeout: 300000, ...opts });
const pull = (args, env = {}) => ch('ch-pull', args, { env, timeout: 300000 });

/** The tree under ROOT: path -> type, mode, content hash or target; device nodes and what SKIP says left out. */
function tree(root, skip = () => false) {
  const out = {};
  const walk = (rel) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      if (skip(p)) continue;
      const st = lstatSync(join(root, p));
      // Device nodes (debootstrap's /dev) are skipped by every unpacker of ours: not compared.
      if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) continue;
      // Setuid and setgid bits are never pushed (docs/design.md): compared without them, checked apart.
      const e = { mode: (st.mode & 0o1777).toString(8) };
      if (st.isSymbolicLink()) Object.assign(e, { type: 'link', target: readlinkSync(join(root, p)) });
      else if (st.isDirectory()) e.type = 'dir';
      else Object.assign(e, { type: 'file', data: createHash('sha256').update(readFileSync(join(root, p))).digest('hex') });
      out[p] = e;
      if (e.type === 'dir') walk(p);
    }
  };
  walk('');
  return out;
}

const EMPTY = createHash('sha256').update('').digest('hex');

/** GOT (a tree pulled back) is WANT, but for mount points ch-pull adds (empty directories and files). */
function sameTree(t, got, want) {
  const extra = Object.keys(got).filter((k) => !(k in want));
  t.deepEqual(extra.filter((k) => got[k].type !== 'dir' && got[k].data !== EMPTY), [], 'only mount points added');
  for (const k of extra) delete got[k];
  t.deepEqual(got, want);
}

/** The manifest of NAME:TAG as REG (anonymous) serves it. */
async function manifestOf(r, name, tag) {
  const res = await fetch(`http://${r.host}/v2/${name}/manifests/${tag}`,
    { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  if (res.status !== 200) throw new Error(`manifest ${name}:${tag}: HTTP ${res.status}`);
  return { json: await res.json(), type: res.headers.get('content-type') };
}

async function skopeoInspect(ref, creds) {
  // --no-creds: else skopeo reads $XDG_RUNTIME_DIR/containers/auth.json, by
  // default /run/containers/UID/, which fails (EACCES) for a plain user on a
  // machine where root has used podman (/run/containers is root's, 0700).
  const r = await execa('skopeo', ['inspect', '--tls-verify=false', ...(creds ? ['--creds', creds] : ['--no-creds']), `docker://${ref}`], { reject: false });
  if (r.exitCode !== 0) throw new Error(`skopeo inspect ${ref}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const BUSYBOX_META = { Entrypoint: ['/bin/echo'], Cmd: ['default', 'cmd'], WorkingDir: '/tmp' };
const BUSYBOX_ENV = ['FROM_IMAGE=yes', 'IMG_PATH=/opt/bin:$PATH'];
const isUpload = (e) => /\/blobs\/uploads\//.test(e.path) && e.method !== 'GET';

test('busybox pushed by ch-convert: ch-pull, podman and skopeo read back the same tree and config; pushed again, no blob sent', async (t) => {
  if (skip(t)) return;
  const src = await imageCopy(t, 'busybox');
  writeFileSync(join(src, 'bin/setid'), '#!/bin/sh\n');
  chmodSync(join(src, 'bin/setid'), 0o6755);   // the test user's own file: a mode it may set
  const d = userDir('busybox');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  const front = await loggingFront(reg);
  t.teardown(() => front.close());
  let r = await cv([src, `docker://${front.host}/bb:v1`], env);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /bb:v1: pushed \(sha256:[0-9a-f]{64}; [0-9.]+ MiB sent\)/);
  t.true(front.log.some((e) => e.method === 'PUT' && e.path === '/v2/bb/manifests/v1'));
  const { json: m, type } = await manifestOf(reg, 'bb', 'v1');
  t.is(type, 'application/vnd.oci.image.manifest.v1+json');
  t.is(m.layers.length, 1);
  t.is(m.layers[0].mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  // The layer: sorted, every member root's, no /ch marker of ch-pull's.
  const list = (await execa('tar', ['-tvzf', storedBlob(reg, m.layers[0].digest)])).stdout.split('\n');
  t.true(list.every((l) => / 0\/0 /.test(l)), list.filter((l) => !/ 0\/0 /.test(l)).join('\n'));
  const names = list.map((l) => l.replace(/^.* \d\d:\d\d /, '').replace(/ -> .*$/, ''));
  t.deepEqual(names.filter((x) => x.includes('/.ch-')), []);
  t.true(names.includes('./bin/busybox') && names.includes('./ch/metadata.json'), names.join(' '));
  t.deepEqual([...names].sort(), names, 'sorted');
  t.regex(list.find((l) => l.endsWith(' ./bin/setid')), /^-rwxr-xr-x /);

  // ch-pull: the same tree (its /ch files aside) and the same configuration.
  r = await pull([`${reg.host}/bb:v1`, join(d, 'back')], env);
  t.is(r.exitCode, 0, r.stderr);
  const notCh = (p) => p === 'ch' || p.startsWith('ch/');
  sameTree(t, tree(join(d, 'back'), notCh), tree(src, notCh));
  t.is(lstatSync(join(d, 'back/bin/setid')).mode & 0o7777, 0o755);
  t.deepEqual(JSON.parse(readFileSync(join(d, 'back/ch/metadata.json'), 'utf8')),
    { ...BUSYBOX_META, Env: BUSYBOX_ENV, Labels: {}, User: '' });
  t.is(readFileSync(join(d, 'back/ch/environment'), 'utf8'), `${BUSYBOX_ENV.join('\n')}\n`);   // the same values, as ch-pull writes them
  const run = await ch('ch-run', ['--set-env', join(d, 'back'), '--', '/bin/sh', '-c', 'echo $FROM_IMAGE']);
  t.is(run.stdout, 'yes', run.stderr);

  // skopeo: the config as a registry client sees it.
  const info = await skopeoInspect(`${reg.host}/bb:v1`);
  t.deepEqual(info.Env, BUSYBOX_ENV);
  t.is(info.Layers.length, 1);
  t.is(info.Architecture, { x64: 'amd64', arm64: 'arm64' }[process.arch] ?? info.Architecture);

  // Pushed again: same digests (reproducible), HEAD finds both blobs, nothing uploaded.
  const before = front.log.length;
  r = await cv(['-v', src, `docker://${front.host}/bb:v1`], env);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /the registry had every blob/);
  const again = front.log.slice(before);
  t.deepEqual(again.filter(isUpload), [], JSON.stringify(again));
  t.is(again.filter((e) => e.method === 'HEAD' && e.path.includes('/blobs/sha256:')).length, 2);
  t.regex(r.stderr, /unchanged since packed as sha256:[0-9a-f]{64}, which the registry has: not packed again/);
  t.deepEqual((await manifestOf(reg, 'bb', 'v1')).json, m);
  t.deepEqual(readdirSync(join(d, 'storage', 'tmp')), [], 'no temporary left');
  // Changed (a file rewritten, same size): packed again, the new layer sent.
  writeFileSync(join(src, 'etc/os-release'), readFileSync(join(src, 'etc/os-release'), 'utf8').replace('ID=busybox', 'ID=busyb0x'));
  const n0 = front.log.length;
  r = await cv(['-v', src, `docker://${front.host}/bb:v1`], env);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /packing /);
  t.is(front.log.slice(n0).filter((e) => e.method === 'PUT' && e.path.includes('/blobs/uploads/')).length, 2);   // layer and config
  t.notDeepEqual((await manifestOf(reg, 'bb', 'v1')).json.layers, m.layers);
});

needs(test.serial, notRoot && 'needs root (podman runs as root here)')('podman pulls and runs what was pushed: ENTRYPOINT, CMD, ENV, WORKDIR, same files', async (t) => {
  if (skip(t)) return;
  if ((await execa('podman', ['--version'], { reject: false })).exitCode !== 0) { t.log('podman missing: not tested'); t.pass(); return; }
  const src = await imageCopy(t, 'busybox');
  const d = userDir('podman');
  const r = await cv([src, `docker://${reg.host}/bb-podman:v1`], { CH_IMAGE_STORAGE: join(d, 'storage') });
  t.is(r.exitCode, 0, r.stderr);
  const ref = `${reg.host}/bb-podman:v1`;
  t.teardown(() => execa('podman', ['rmi', '-f', ref], { reject: false }));
  await execa('podman', ['pull', '-q', '--tls-verify=false', ref]);
  const c = JSON.parse((await execa('podman', ['image', 'inspect', ref])).stdout)[0].Config;
  t.deepEqual({ Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir }, BUSYBOX_META);
  for (const e of BUSYBOX_ENV) t.true(c.Env.includes(e), JSON.stringify(c.Env));
  // Its files: export a container and compare with the source tree (podman's own additions aside).
  const out = join(d, 'exported');
  mkdirSync(out);
  await execa('sh', ['-c', 'id=$(podman create "$0" /bin/true) && podman export "$id" | tar -xf - -C "$1"; podman rm "$id" >/dev/null', ref, out]);
  const want = tree(src);
  const got = tree(out, (p) => !(p in want));
  for (const k of Object.keys(want)) if (want[k].type === 'dir') { delete want[k].mode; delete got[k]?.mode; }   // tar -x applies umask to dirs
  t.deepEqual(got, want);
  const run = await execa('podman', ['run', '--rm', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=4096:4096', ref], { reject: false });
  t.is(run.exitCode, 0, run.stderr);
  t.is(run.stdout, 'default cmd');
});

test('Debian, in chunks: PATCHes of CH_PUSH_CHUNK_SIZE, then ch-pull gives the same tree, which runs', async (t) => {
  if (skip(t)) return;
  const src = await imageCopy(t, 'debian');
  const d = userDir('debian');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PUSH_CHUNK_SIZE: '8M' };
  const front = await loggingFront(reg);
  t.teardown(() => front.close());
  let r = await cv(['-o', 'registry', src, `${front.host}/debian:12`], env);
  t.is(r.exitCode, 0, r.stderr);
  const { json: m } = await manifestOf(reg, 'debian', '12');
  const patches = front.log.filter((e) => e.method === 'PATCH');
  t.is(patches.length, Math.ceil(m.layers[0].size / (8 << 20)));
  t.deepEqual(patches.map((e) => e.contentRange).slice(0, 2), ['0-8388607', '8388608-16777215']);
  r = await pull([`${reg.host}/debian:12`, join(d, 'back')], env);
  t.is(r.exitCode, 0, r.stderr);
  const notCh = (p) => p === 'ch' || p.startsWith('ch/');
  sameTree(t, tree(join(d, 'back'), notCh), tree(src, notCh));
  const run = await ch('ch-run', [join(d, 'back'), '--', 'cat', '/etc/debian_version']);
  t.is(run.exitCode, 0, run.stderr);
  t.regex(run.stdout, /^12\./);
  const info = await skopeoInspect(`${reg.host}/debian:12`);
  t.is(info.Layers[0], m.layers[0].digest);
});

test('zstd: an OCI +zstd layer that ch-pull pulls; a Docker-format push or a digest DST refused as usage', async (t) => {
  if (skip(t)) return;
  const src = await imageCopy(t, 'busybox');
  const d = userDir('zstd');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  let r = await cv(['--compress', 'zstd', src, `docker://${reg.host}/bb:zstd`], env);
  t.is(r.exitCode, 0, r.stderr);
  const { json: m } = await manifestOf(reg, 'bb', 'zstd');
  t.is(m.layers[0].mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
  t.is(readFileSync(storedBlob(reg, m.layers[0].digest)).readUInt32LE(0), 0xfd2fb528);   // zstd's magic
  r = await pull([`${reg.host}/bb:zstd`, join(d, 'back')], env);
  t.is(r.exitCode, 0, r.stderr);
  t.is(createHash('sha256').update(readFileSync(join(d, 'back/bin/busybox'))).digest('hex'),
    createHash('sha256').update(readFileSync(join(src, 'bin/busybox'))).digest('hex'));
  for (const [args, re] of [[['--compress', 'xz', src, `docker://${reg.host}/x:1`], /--compress 'xz': want gzip or zstd/],
    [['--compress', 'zstd', src, join(d, 'x.tar')], /--compress: only for a registry DST/],
    [[src, `docker://${reg.host}/x@sha256:${EMPTY}`], /push to a tag, not a digest/]]) {
    r = await cv(args, env);
    t.is(r.exitCode, 2, r.stderr);
    t.regex(r.stderr, re);
  }
});

/** Push to a registry with AUTH: refused anonymously and with a wrong password, done with the right one. */
async function authCases(t, auth) {
  const r = await startRegistry(join(BASE, `registry-${auth}`), { auth, users: { alice: 'pa:ss word' } });
  t.teardown(() => r.stop());
  const src = await imageCopy(t, 'busybox');
  const d = userDir(auth);
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  const dst = `docker://${r.host}/private/bb:v1`;
  let x = await cv([src, dst], env);
  t.is(x.exitCode, 1);
  t.regex(x.stderr, /registry 127\.0\.0\.1:[0-9]+: authentication refused \(no credentials/);
  x = await cv([src, dst], { ...env, CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 'wrong' });
  t.is(x.exitCode, 1);
  t.regex(x.stderr, /authentication refused for user 'alice' \(credentials from \$CH_PULL_USER\)/);
  x = await cv([src, dst], { ...env, CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 'pa:ss word' });
  t.is(x.exitCode, 0, x.stderr);
  const info = await skopeoInspect(`${r.host}/private/bb:v1`, 'alice:pa:ss word');
  t.deepEqual(info.Env, BUSYBOX_ENV);
  x = await pull([`${r.host}/private/bb:v1`, join(d, 'back')], { ...env, CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 'pa:ss word' });
  t.is(x.exitCode, 0, x.stderr);
  return r;
}

test('basic auth: push refused without or with wrong credentials, done with them', async (t) => {
  if (skip(t)) return;
  await authCases(t, 'basic');
});

test('bearer tokens: asked for the repository\'s pull,push scope', async (t) => {
  if (skip(t)) return;
  const r = await authCases(t, 'token');
  t.true(r.token.requests.some((q) => new URLSearchParams(q).get('scope') === 'repository:private/bb:pull,push'), r.token.requests.join(' '));
});

test('credentials go only to the registry: an upload Location on another host gets none, and its challenge is refused', async (t) => {
  if (skip(t)) return;
  const r = await startRegistry(join(BASE, 'registry-redirect'), { auth: 'basic', users: { victim: 's3cret' } });
  const evil = await challengingHost();
  // The registry's front sends the upload elsewhere.
  const front = await loggingFront(r, { route: (req, res, url) => {
    if (req.method !== 'POST' || !url.pathname.endsWith('/blobs/uploads/') || !req.headers.authorization) return false;
    req.resume();
    res.writeHead(202, { location: `http://${evil.host}/upload/1` });
    res.end();
    return true;
  } });
  t.teardown(async () => { await front.close(); await evil.close(); await r.stop(); });
  const src = await imageCopy(t, 'busybox');
  const d = userDir('redirect');
  const x = await cv([src, `docker://${front.host}/x:v1`], { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PULL_USER: 'victim', CH_PULL_PASSWORD: 's3cret', CH_PULL_RETRIES: '0' });
  t.is(x.exitCode, 1, x.stderr);
  t.true(evil.log.length > 0);
  t.deepEqual(evil.log.filter((e) => e.authorization !== undefined), [], 'the upload host was sent credentials');
  t.false(evil.log.some((e) => e.path === '/token'), 'the upload host\'s token endpoint was asked');
  t.regex(x.stderr, new RegExp(`push to ${front.host}/x: uploading layer 1/1 .*: HTTP 401 from ${evil.host}, where ${front.host} sent us;`
    + ` credentials go only to ${front.host}; refused`));
  t.true(front.log.some((e) => e.authorization?.startsWith('Basic ')));   // the registry itself did get them
});

test('a registry refusing writes: a clear error naming it and the step; nothing left behind', async (t) => {
  if (skip(t)) return;
  const r = await startRegistry(join(BASE, 'registry-ro'), { readonly: true });
  t.teardown(() => r.stop());
  const src = await imageCopy(t, 'busybox');
  const d = userDir('ro');
  const x = await cv([src, `docker://${r.host}/ro:v1`], { CH_IMAGE_STORAGE: join(d, 'storage') });
  t.is(x.exitCode, 1, x.stderr);
  t.regex(x.stderr, new RegExp(`push to ${r.host}/ro: starting the upload of layer 1/1: HTTP 405.*\\(the registry does not accept pushes`));
  t.deepEqual(readdirSync(join(d, 'storage', 'tmp')), []);
});

test('relative Location headers: resolved against the URL that sent them, monolithic and chunked', async (t) => {
  if (skip(t)) return;
  const front = await loggingFront(reg, { rewrite: (h) => (h.location ? { ...h, location: new URL(h.location).pathname + new URL(h.location).search } : h) });
  t.teardown(() => front.close());
  const src = await imageCopy(t, 'busybox');
  const d = userDir('relative');
  for (const chunk of ['', '0', '300K']) {   // streamed while packing, one PUT, chunks
    const r = await cv([src, `docker://${front.host}/rel${chunk.toLowerCase()}:v1`], { CH_IMAGE_STORAGE: join(d, 'storage'),
      CH_PUSH_CHUNK_SIZE: chunk }, {});
    t.is(r.exitCode, 0, r.stderr);
  }
  t.true(front.log.filter((e) => e.method === 'PATCH').length >= 4);
  t.is(front.log.filter((e) => e.method === 'PUT' && e.path.includes('/blobs/uploads/')).length, 6);
  const r = await pull([`${reg.host}/rel300k:v1`, join(d, 'back')], { CH_IMAGE_STORAGE: join(d, 'storage') });
  t.is(r.exitCode, 0, r.stderr);
});

test('a chunk whose connection breaks: resumed where the registry says it got to', async (t) => {
  if (skip(t)) return;
  let broke = 0;
  const front = await loggingFront(reg, { route: (req, res) => {
    // The second PATCH: read part of it, then drop the connection.
    if (req.method !== 'PATCH' || front.log.filter((e) => e.method === 'PATCH').length !== 2 || broke) return false;
    broke++;
    req.once('data', () => req.socket.destroy());
    return true;
  } });
  t.teardown(() => front.close());
  const src = await imageCopy(t, 'busybox');
  const d = userDir('resume');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PUSH_CHUNK_SIZE: '256K' };
  let r = await cv([src, `docker://${front.host}/resume:v1`], env);
  t.is(r.exitCode, 0, r.stderr);
  t.is(broke, 1);
  t.regex(r.stderr, /chunk at 262144 failed .*asking the registry where it stands/);
  t.true(front.log.some((e) => e.method === 'GET' && e.path.includes('/blobs/uploads/')));
  r = await pull([`${reg.host}/resume:v1`, join(d, 'back')], env);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(readFileSync(join(d, 'back/bin/busybox')), readFileSync(join(src, 'bin/busybox')));
});

for (const [how, chunk, method] of [['one PUT', '0', 'PUT'], ['streamed while packing', '', 'PATCH']]) {
  test(`SIGINT mid-upload (${how}): exit 130, the upload session cancelled (DELETE), no temporary left`, async (t) => {
    if (skip(t)) return;
    let held;
    const front = await loggingFront(reg, { route: (req, res) => {
      if (req.method !== method || !req.url.includes('/blobs/uploads/')) return false;
      held = res;   // take the body, never answer
      req.resume();
      return true;
    } });
    t.teardown(() => front.close());
    const src = await imageCopy(t, 'busybox');
    const d = userDir('sigint');
    const env = { CH_IMAGE_STORAGE: join(d, 'storage'), CH_PUSH_CHUNK_SIZE: chunk };
    const p = cv([src, `docker://${front.host}/sig${chunk}:v1`], env);
    await until('the layer upload to start', () => held !== undefined);
    t.true(readdirSync(join(d, 'storage', 'tmp')).length > 0, 'mid-push: the packed layer is there');
    p.kill('SIGINT');
    const r = await p;
    t.is(r.exitCode, 130, r.stderr);
    t.regex(r.stderr, /interrupted by SIGINT/);
    const up = front.log.find((e) => e.method === method);
    t.truthy(front.log.find((e) => e.method === 'DELETE' && e.path === up.path), JSON.stringify(front.log));
    t.deepEqual(readdirSync(join(d, 'storage', 'tmp')), []);
    t.false(existsSync(join(reg.storage, `docker/registry/v2/repositories/sig${chunk}/_manifests`)));
  });
}

test('streamed upload broken by the network: uploaded again the ordinary way; a tree tar can\'t read: its error, the session cancelled', async (t) => {
  if (skip(t)) return;
  let broke = 0;
  const front = await loggingFront(reg, { route: (req) => {
    if (req.method !== 'PATCH' || broke) return false;
    broke++;
    req.once('data', () => req.socket.destroy());
    return true;
  } });
  t.teardown(() => front.close());
  const src = await imageCopy(t, 'busybox');
  const d = userDir('stream-retry');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  let r = await cv([src, `docker://${front.host}/again:v1`], env);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /layer 1\/1: streamed upload failed .*; uploading it again/);
  t.true(front.log.some((e) => e.method === 'HEAD') && front.log.filter((e) => e.method === 'POST').length >= 3);
  r = await pull([`${reg.host}/again:v1`, join(d, 'back')], env);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(readFileSync(join(d, 'back/bin/busybox')), readFileSync(join(src, 'bin/busybox')));
  // A file the user can't read: tar's own words, nothing pushed, the open session cancelled.
  writeFileSync(join(src, 'etc/secret'), 'x');
  chmodSync(join(src, 'etc/secret'), 0);
  if (isRoot) { const u = testUser(); chownSync(join(src, 'etc/secret'), u.uid, u.gid); }
  const n0 = front.log.length;
  r = await cv([src, `docker://${front.host}/unreadable:v1`], env);
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /can't pack .*: tar failed \(exit 2\): .*etc\/secret: Cannot open: Permission denied/);
  t.true(front.log.slice(n0).some((e) => e.method === 'DELETE'), JSON.stringify(front.log.slice(n0)));
  t.deepEqual(readdirSync(join(d, 'storage', 'tmp')), []);
});

test('HTTPS: the CA from NODE_EXTRA_CA_CERTS, refused without it unless --insecure', async (t) => {
  if (skip(t)) return;
  const r = await startRegistry(join(BASE, 'registry-tls'), { tls: true });
  t.teardown(() => r.stop());
  const src = await imageCopy(t, 'busybox');
  const d = userDir('tls');
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  const dst = `docker://${r.host}/tls:v1`;
  let x = await cv([src, dst], env);
  t.is(x.exitCode, 1);
  t.regex(x.stderr, /registry 127\.0\.0\.1:[0-9]+: TLS certificate not trusted: .*self-signed/);
  x = await cv([src, dst], { ...env, NODE_EXTRA_CA_CERTS: r.ca });
  t.is(x.exitCode, 0, x.stderr);
  x = await cv(['--insecure', src, `docker://${r.host}/tls:v2`], env);
  t.is(x.exitCode, 0, x.stderr);
  x = await pull([`${r.host}/tls:v2`, join(d, 'back')], { ...env, NODE_EXTRA_CA_CERTS: r.ca });
  t.is(x.exitCode, 0, x.stderr);
  t.true(existsSync(join(d, 'back/bin/busybox')));
});
