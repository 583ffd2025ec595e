// A real OCI registry for ch-pull's tests: Debian's docker-registry
// (Distribution 2.8) on 127.0.0.1 with a free port and filesystem storage in
// a temporary directory, anonymous, with htpasswd basic auth, or with bearer
// tokens from a small token server run here (RS256 JWTs signed with a key
// made by openssl; the registry trusts its certificate). Images are OCI
// layouts built here from tar entries and JSON, pushed with skopeo.

import { execa } from 'execa';
import { createHash, createSign, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export const REGISTRY_BIN = '/usr/bin/docker-registry';

export function haveTools() {
  const missing = [REGISTRY_BIN, '/usr/bin/skopeo', '/usr/bin/htpasswd', '/usr/bin/openssl'].filter((p) => !existsSync(p));
  return missing.length ? `missing ${missing.join(', ')}` : null;
}

// ---- tar layers ----

function octal(v, len) { return v.toString(8).padStart(len - 1, '0') + '\0'; }

/** One ustar member: {name, type: 'file'|'dir'|'symlink'|'link', data, mode, target}. */
function member(e) {
  const type = { file: '0', dir: '5', symlink: '2', link: '1' }[e.type ?? 'file'];
  const data = e.type === 'file' || !e.type ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
  const h = Buffer.alloc(512);
  Buffer.from(e.name).copy(h, 0, 0, 100);
  h.write(octal(e.mode ?? (type === '5' ? 0o755 : 0o644), 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  h.write(octal(data.length, 12), 124, 'latin1');
  h.write(octal(1700000000, 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(type, 156, 'latin1');
  Buffer.from(e.target ?? '').copy(h, 157, 0, 100);
  h.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return Buffer.concat([h, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

export function tarOf(entries) {
  return Buffer.concat([...entries.map(member), Buffer.alloc(1024)]);
}

// ---- OCI layouts ----

const sha = (b) => createHash('sha256').update(b).digest('hex');

function putBlob(layout, data) {
  const hex = sha(data);
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(layout, 'blobs', 'sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

/**
 * An image manifest in LAYOUT from layers (arrays of tar entries, or raw
 * Buffers already a tar) and a config; returns its descriptor. Layers are
 * gzipped unless gzip: false.
 */
export function addImage(layout, { layers, config = {}, arch = 'amd64', os = 'linux', variant, gzip = true }) {
  const descs = [];
  const diffIds = [];
  for (const l of layers) {
    const tar = Buffer.isBuffer(l) ? l : tarOf(l);
    diffIds.push(`sha256:${sha(tar)}`);
    const data = gzip ? gzipSync(tar) : tar;
    descs.push({ mediaType: `application/vnd.oci.image.layer.v1.tar${gzip ? '+gzip' : ''}`, ...putBlob(layout, data) });
  }
  const cfg = Buffer.from(JSON.stringify({ architecture: arch, os, ...(variant ? { variant } : {}), config,
    rootfs: { type: 'layers', diff_ids: diffIds }, history: [] }));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...putBlob(layout, cfg) }, layers: descs }));
  return { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...putBlob(layout, manifest),
    platform: { architecture: arch, os, ...(variant ? { variant } : {}) }, layers: descs };
}

/** Write LAYOUT's index.json naming DESC (a manifest, or an index of MANIFESTS) as TAG. */
export function writeLayout(layout, tag, descs) {
  mkdirSync(layout, { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  let top;
  if (descs.length === 1) {
    top = { mediaType: descs[0].mediaType, digest: descs[0].digest, size: descs[0].size };
  } else {
    const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: descs.map((d) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size, platform: d.platform })) }));
    top = { mediaType: 'application/vnd.oci.image.index.v1+json', ...putBlob(layout, idx) };
  }
  writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2,
    manifests: [{ ...top, annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
}

// ---- the registry ----

export async function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
    s.on('error', rej);
  });
}

/**
 * A port on 127.0.0.1 where nothing listens, and nothing of the suite's
 * will: a privileged one (below 1024) that refuses a connection now. A port
 * freePort() found free was that only for a moment: a registry another test
 * starts meanwhile can take it (seen: "unknown image or tag" where an
 * unreachable registry was meant), and the suite's servers all take
 * ephemeral or fixed high ports.
 */
export async function closedPort() {
  for (let port = 1; port < 1024; port++) {
    const refused = await new Promise((res) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); res(false); });
      s.on('error', (err) => res(err.code === 'ECONNREFUSED'));
    });
    if (refused) return port;
  }
  throw new Error('no closed port below 1024 on 127.0.0.1');
}

const b64url = (b) => Buffer.from(b).toString('base64url');

/** A bearer token server: {realm, service, issuer, cert path, close()}. USERS: {name: password}. */
async function tokenServer(dir, users) {
  const key = join(dir, 'token.key'), cert = join(dir, 'token.crt');
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', '/CN=ch-pull-test-token']);
  const der = (await execa('openssl', ['x509', '-in', cert, '-outform', 'DER'], { encoding: 'buffer' })).stdout;
  const pem = readFileSync(key, 'utf8');
  const service = 'ch-test-registry', issuer = 'ch-test-issuer';
  const requests = [];
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    requests.push(url.search);
    const auth = req.headers.authorization ?? '';
    const dec = auth.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString() : '';
    const [u, ...p] = dec.split(':');
    if (!dec || users[u] !== p.join(':')) { res.writeHead(401, { 'content-type': 'application/json' }); res.end('{"details":"bad credentials"}'); return; }
    const scope = url.searchParams.get('scope') ?? '';
    const [, name, actions] = scope.split(':');
    const now = Math.floor(Date.now() / 1000);
    const head = { typ: 'JWT', alg: 'RS256', x5c: [Buffer.from(der).toString('base64')] };
    const claims = { iss: issuer, sub: u, aud: service, exp: now + 600, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'),
      access: name ? [{ type: 'repository', name, actions: (actions ?? '').split(',').filter(Boolean) }] : [] };
    const signing = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(signing).sign(pem);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token: `${signing}.${b64url(sig)}` }));
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const realm = `http://127.0.0.1:${srv.address().port}/token`;
  return { realm, service, issuer, cert, requests, close: () => new Promise((r) => srv.close(r)) };
}

/**
 * Start a registry in DIR. auth: 'none' | 'basic' | 'token'; users: {name:
 * password} for basic/token; readonly: refuses every write (storage
 * maintenance mode). Returns {port, host, dir, storage, stop(), kill(), start()}.
 */
export async function startRegistry(dir, { auth = 'none', users = {}, tls = false, readonly = false } = {}) {
  mkdirSync(dir, { recursive: true });
  const storage = join(dir, 'storage');
  const port = await freePort();
  let authCfg = '';
  let token;
  if (auth === 'basic') {
    const file = join(dir, 'htpasswd');
    writeFileSync(file, '');
    for (const [u, p] of Object.entries(users)) await execa('htpasswd', ['-B', '-b', file, u, p]);
    authCfg = `auth:\n  htpasswd:\n    realm: ch-test\n    path: ${file}\n`;
  } else if (auth === 'token') {
    token = await tokenServer(dir, users);
    authCfg = `auth:\n  token:\n    realm: ${token.realm}\n    service: ${token.service}\n    issuer: ${token.issuer}\n    rootcertbundle: ${token.cert}\n`;
  }
  let tlsCfg = '';
  if (tls) {
    // A self-signed certificate for 127.0.0.1: trusted only through NODE_EXTRA_CA_CERTS.
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'tls.key'),
      '-out', join(dir, 'tls.crt'), '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    tlsCfg = `  tls:\n    certificate: ${join(dir, 'tls.crt')}\n    key: ${join(dir, 'tls.key')}\n`;
  }
  const cfg = join(dir, 'config.yml');
  // REG_LOG=debug in the environment makes the registry say why it refuses a token or a push (in r.log).
  writeFileSync(cfg, `version: 0.1\nlog:\n  level: ${process.env.REG_LOG ?? 'error'}\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\n  delete:\n    enabled: true\n`
    + (readonly ? '  maintenance:\n    readonly:\n      enabled: true\n' : '')
    + `http:\n  addr: 127.0.0.1:${port}\n${tlsCfg}${authCfg}`);
  const r = { port, host: `127.0.0.1:${port}`, dir, storage, token, proc: null, log: '', ca: tls ? join(dir, 'tls.crt') : null };
  r.start = async () => {
    r.proc = execa(REGISTRY_BIN, ['serve', cfg], { reject: false, all: true });
    r.proc.all.on('data', (d) => { r.log += d; });
    // Ready when /v2/ answers (any status): an observable state, not a sleep.
    for (let i = 0; ; i++) {
      if (r.proc.exitCode !== null) throw new Error(`docker-registry exited: ${r.log}`);
      const ok = await new Promise((res) => {
        const q = (tls ? https : http).get({ host: '127.0.0.1', port, path: '/v2/', rejectUnauthorized: false }, (resp) => { resp.resume(); res(true); });
        q.on('error', () => res(false));
      });
      if (ok) return;
      if (i > 400) throw new Error(`docker-registry did not answer on ${port}: ${r.log}`);
      await new Promise((res) => setTimeout(res, 25));
    }
  };
  r.kill = async () => {
    if (!r.proc || r.proc.exitCode !== null) return;
    r.proc.kill('SIGKILL');
    await r.proc;
  };
  r.stop = async () => { await r.kill(); await token?.close(); };
  await r.start();
  return r;
}

/** Push LAYOUT:TAG to REG as NAME:TAG with skopeo (all platforms of an index). */
export async function push(reg, layout, tag, name, { creds } = {}) {
  // (--dest-tls-verify=false also lets skopeo use plain HTTP on loopback.)
  // An auth file of our own: as a user, skopeo's default (/run/containers/UID/auth.json)
  // may exist but belong to root (left by podman), and it refuses to go on.
  const authfile = join(reg.dir, 'skopeo-auth.json');
  if (!existsSync(authfile)) writeFileSync(authfile, '{"auths":{}}\n', { mode: 0o600 });
  await execa('skopeo', ['copy', '--all', '--dest-tls-verify=false', '--dest-authfile', authfile,
    ...(creds ? ['--dest-creds', creds] : []),
    `oci:${layout}:${tag}`, `docker://${reg.host}/${name}:${tag}`], { env: { HOME: reg.dir } });
}

/** Path of blob DIGEST in the registry's filesystem storage. */
export function storedBlob(reg, digest) {
  const hex = digest.split(':')[1];
  return join(reg.storage, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

/**
 * The manifest of NAME:TAG as REG serves it (anonymous registries only):
 * skopeo compresses uncompressed layers on push, so a layer's digest in the
 * registry is not always the layout's.
 */
export async function servedManifest(reg, name, tag) {
  return new Promise((res, rej) => {
    http.get({ host: '127.0.0.1', port: reg.port, path: `/v2/${name}/manifests/${tag}`,
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } }, (r) => {
      let body = '';
      r.on('data', (d) => { body += d; });
      r.on('end', () => (r.statusCode === 200 ? res(JSON.parse(body)) : rej(new Error(`manifest ${name}:${tag}: HTTP ${r.statusCode}`))));
    }).on('error', rej);
  });
}

/**
 * A forward proxy on 127.0.0.1: absolute-URI requests (plain HTTP) and
 * CONNECT tunnels (HTTPS). Returns {url, seen: ['GET http://...', 'CONNECT host:port'], close()}.
 */
export async function startProxy() {
  const seen = [];
  const socks = new Set();
  const srv = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const u = new URL(req.url);
    const up = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  srv.on('connect', (req, client, head) => {
    seen.push(`CONNECT ${req.url}`);
    const [host, port] = req.url.split(':');
    const up = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection established\r\n\r\n');
      up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    for (const s of [up, client]) { socks.add(s); s.on('error', () => {}); s.on('close', () => socks.delete(s)); }
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}`, seen,
    close: () => { for (const s of socks) s.destroy(); return new Promise((r) => srv.close(r)); } };
}

/**
 * A reverse proxy in front of REG that answers the first FAIL requests for
 * blobs with HTTP 503, then passes everything through (without Range
 * headers if noRange): {host, failed(), close()}.
 */
export async function flakyFront(reg, fail, { noRange = false } = {}) {
  let failed = 0;
  const srv = http.createServer((req, res) => {
    if (noRange) delete req.headers.range;   // a registry (or cache) that ignores Range
    if (req.url.includes('/blobs/') && failed < fail) {
      failed++;
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('try later');
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: reg.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { host: `127.0.0.1:${srv.address().port}`, failed: () => failed, close: () => new Promise((r) => srv.close(r)) };
}

/**
 * A reverse proxy in front of REG that logs every request ({method, path,
 * authorization, contentRange}) and passes it on; route(req, res, url)
 * answers one itself (return true), for redirects, stalls and broken
 * connections; rewrite(headers) changes the registry's answers' headers.
 * Returns {host, port, log, close()}.
 */
export async function loggingFront(reg, { route, rewrite } = {}) {
  const log = [];
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    log.push({ method: req.method, path: url.pathname, authorization: req.headers.authorization, contentRange: req.headers['content-range'] });
    if (route?.(req, res, url)) return;
    const up = http.request({ host: '127.0.0.1', port: reg.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, rewrite ? rewrite(r.headers) : r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  return { port, host: `127.0.0.1:${port}`, log, close: () => { srv.closeAllConnections(); return new Promise((r) => srv.close(r)); } };
}

/**
 * A TCP relay to 127.0.0.1:PORT that passes LIMIT bytes of the answers,
 * then holds the rest back (the download stalls, the connection stays
 * open): {port, stalled, stop(), release()}.
 */
export async function stallingRelay(port, limit) {
  const relay = { stalled: false, port: 0 };
  let passed = 0;
  const held = [];
  const open = new Set();
  const srv = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) { open.add(s); s.on('error', () => {}); s.on('close', () => open.delete(s)); }
    client.pipe(upstream);
    upstream.on('data', (chunk) => {
      if (passed + chunk.length > limit) { upstream.pause(); relay.stalled = true; held.push([client, upstream, chunk]); return; }
      passed += chunk.length;
      client.write(chunk);
    });
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  relay.port = srv.address().port;
  relay.stop = () => { srv.close(); for (const s of open) s.destroy(); };
  /** Let everything through from now on, what was held back first. */
  relay.release = () => {
    limit = Infinity;
    for (const [client, upstream, chunk] of held.splice(0)) { client.write(chunk); upstream.resume(); }
  };
  return relay;
}

/** A port on 127.0.0.1 that accepts connections, counts them and closes them: {port, count(), close()}. */
export async function connectionCounter() {
  let n = 0;
  const srv = net.createServer((c) => { n++; c.destroy(); });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { port: srv.address().port, count: () => n, close: () => new Promise((r) => srv.close(r)) };
}

export { until } from './fixtures.js';

// ---- scripted registries (hostile ones, mostly) ----

/**
 * An image held in memory: {manifest (Buffer), digest, config (descriptor), layers (descriptors), blobs: Map digest ->
 * Buffer}. LAYERS: arrays of tar entries (gzipped here, at gzipLevel if given); CONFIG: the config's "config" object, or configBlob: raw
 * bytes; configSize: the size the manifest claims for the config (default: the true one).
 */
export function memImage({ layers = [[{ name: 'f', data: 'x' }]], config = {}, configBlob, configSize, gzipLevel } = {}) {
  const blobs = new Map();
  const put = (data) => { const digest = `sha256:${sha(data)}`; blobs.set(digest, data); return { digest, size: data.length }; };
  const gz = (l) => gzipSync(tarOf(l), gzipLevel === undefined ? {} : { level: gzipLevel });
  const descs = layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...put(gz(l)) }));
  const cfg = configBlob ?? Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config,
    rootfs: { type: 'layers', diff_ids: [] }, history: [] }));
  const cd = { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(cfg) };
  if (configSize !== undefined) cd.size = configSize;
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: cd, layers: descs }));
  return { manifest, digest: `sha256:${sha(manifest)}`, config: cd, layers: descs, blobs };
}

/**
 * A registry scripted in node on 127.0.0.1 serving IMAGE (memImage()) as any
 * NAME:TAG. basic: 'user:password' required of every request (challenge
 * `Basic`). route(req, res, url): answer a request itself (return true), for
 * redirects and hostile answers. Every request is logged: {method, path,
 * authorization}. Returns {host, port, log, close()}.
 */
export async function scriptedRegistry(image, { basic, route } = {}) {
  const log = [];
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    // conn: the client's port, which names the connection the request came on.
    log.push({ method: req.method, path: url.pathname, authorization: req.headers.authorization, conn: req.socket.remotePort });
    if (basic && req.headers.authorization !== `Basic ${Buffer.from(basic).toString('base64')}`) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="scripted"', 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
      return;
    }
    if (route?.(req, res, url)) return;
    if (url.pathname === '/v2/') { res.writeHead(200); res.end('{}'); return; }
    const m = /^\/v2\/.+\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (m?.[1] === 'manifests') {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': image.manifest.length });
      res.end(image.manifest);
      return;
    }
    const blob = m?.[1] === 'blobs' ? image.blobs.get(m[2]) : undefined;
    if (blob) { res.writeHead(200, { 'content-length': blob.length }); res.end(blob); return; }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"errors":[{"code":"NOT_FOUND","message":"no such thing"}]}');
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  return { port, host: `127.0.0.1:${port}`, log, close: () => { srv.closeAllConnections(); return new Promise((r) => srv.close(r)); } };
}

/**
 * The hostile blob host: answers every request 401 with `Bearer
 * realm=<itself>/token`, hands out a token at /token to anyone, and logs
 * every request with whatever credentials it carried: {path, authorization}.
 * Returns {host, port, log, close()}.
 */
export async function challengingHost() {
  const log = [];
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    log.push({ path: url.pathname, authorization: req.headers.authorization });
    if (url.pathname === '/token') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"token":"stolen"}'); return; }
    res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${srv.address().port}/token",service="evil"` });
    res.end();
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  return { port, host: `127.0.0.1:${port}`, log, close: () => { srv.closeAllConnections(); return new Promise((r) => srv.close(r)); } };
}
