// ch-pull against hostile hosts and planted names, two accounts: a victim
// who pulls with registry credentials, and an attacker on the same node.
//
// 1. Credential leak across a redirect (issue 20, item 3): the victim's
//    registry redirects a blob to a host the attacker runs (an account of
//    theirs, a port on loopback), which answers 401 with `Bearer
//    realm=<itself>`. The attacker must never see the victim's credentials:
//    no Authorization header, no token request carrying them.
// 2. `ch-pull --tar FILE` where FILE is the attacker's symlink (or file) in a
//    shared directory (item 10): a clear error, exit 1, nothing followed, the
//    attacker's entry left alone, no temporary left; never an internal error.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync,
  writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, isRoot } from '../helpers/env.js';
import { memImage, scriptedRegistry } from '../helpers/registry.js';
import { ensureUser, runAs, scratch, treeSum } from './lib.js';

const serial = isRoot ? test.serial : test.skip;
const why = isRoot ? '' : ' [skipped: needs root to create the attacker and victim accounts]';

let victim, attacker, base, precious, storage;

// The attacker's server: every request logged on stdout as a JSON line (with
// any credentials it carried); 401 with a bearer realm on itself, and a token
// for anyone who asks.
const HOSTILE = `
const http = require('http');
const srv = http.createServer((req, res) => {
  console.log(JSON.stringify({ path: req.url, authorization: req.headers.authorization ?? null }));
  if (req.url.startsWith('/token')) { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"token":"stolen"}'); return; }
  res.writeHead(401, { 'www-authenticate': 'Bearer realm="http://127.0.0.1:' + srv.address().port + '/token",service="evil"' });
  res.end();
});
srv.listen(0, '127.0.0.1', () => console.log('PORT ' + srv.address().port));
`;

test.before(async () => {
  if (!isRoot) return;
  victim = await ensureUser('chvictim');
  attacker = await ensureUser('chattack');
  base = scratch('registry');
  writeFileSync(join(base, 'hostile.cjs'), HOSTILE, { mode: 0o644 });
  // The victim's own files, and a storage directory of theirs.
  precious = join(base, 'victim-home');
  mkdirSync(precious);
  writeFileSync(join(precious, 'notes.txt'), 'notes\n');
  storage = join(precious, 'storage');
  mkdirSync(storage, { mode: 0o700 });
  await execa('chown', ['-R', `${victim.uid}:${victim.gid}`, precious]);
  chmodSync(precious, 0o755);
});

/** The attacker's server, run as the attacker: {host, log (parsed lines), stop()}. */
async function attackerServer() {
  const p = runAs(attacker, process.execPath, [join(base, 'hostile.cjs')], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  let buf = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("attacker's server silent for 30 s")), 30_000);
    p.stdout.on('data', (d) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n')) >= 0;) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const m = /^PORT ([0-9]+)$/.exec(line);
        if (m) { clearTimeout(timer); resolve(Number(m[1])); } else log.push(JSON.parse(line));
      }
    });
    p.then((r) => { clearTimeout(timer); reject(new Error(`attacker's server ended: ${r.stderr}`)); }, () => {});
  });
  return { host: `127.0.0.1:${port}`, log, stop: async () => { p.kill('SIGKILL'); await p.catch(() => {}); } };
}

const asVictim = (args, env = {}) => runAs(victim, join(BIN, 'ch-pull'), args,
  { timeout: 120_000, env: { CH_IMAGE_STORAGE: storage, CH_PULL_RETRIES: '0', ...env } });

serial(`credentials: a blob redirected to the attacker's host, which challenges, never gets the victim's credentials${why}`, async (t) => {
  const evil = await attackerServer();
  const img = memImage({ layers: [[{ name: 'f', data: 'x' }]] });
  // The victim's registry (basic auth) keeps its blobs elsewhere: on the attacker's host, here.
  const reg = await scriptedRegistry(img, { basic: 'victim:s3cret', route: (req, res, url) => {
    const m = /\/blobs\/(.+)$/.exec(url.pathname);
    if (!m) return false;
    res.writeHead(307, { location: `http://${evil.host}/blobs/${m[1]}` });
    res.end();
    return true;
  } });
  try {
    const dest = join(precious, 'img');
    const r = await asVictim([`${reg.host}/team/app:v1`, dest], { CH_PULL_USER: 'victim', CH_PULL_PASSWORD: 's3cret' });
    await new Promise((res) => setTimeout(res, 200));   // the attacker's last log lines
    t.true(evil.log.some((e) => e.path.startsWith('/blobs/')), 'the redirect reached the attacker');
    t.deepEqual(evil.log.filter((e) => e.authorization !== null), [], "the attacker's log holds the victim's credentials");
    t.false(evil.log.some((e) => e.path.startsWith('/token')), "the attacker's token endpoint was asked for a token");
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`HTTP 401 from ${evil.host}, where ${reg.host} redirected it; credentials go only to ${reg.host}; refused`));
    t.false(existsSync(dest));
    t.true(reg.log.some((e) => e.authorization?.startsWith('Basic ')), 'the registry itself had them');
  } finally {
    await reg.close();
    await evil.stop();
  }
});

for (const kind of ['sticky', 'open']) {
  serial(`--tar FILE planted by the attacker (symlink to the victim's file, or a file of theirs) in a ${kind} shared dir: refused, nothing followed${why}`, async (t) => {
    const reg = await scriptedRegistry(memImage({ layers: [[{ name: 'f', data: 'x' }]] }));
    try {
      const d = join(base, `shared-${kind}`);
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d);
      chmodSync(d, kind === 'sticky' ? 0o1777 : 0o777);
      const before = treeSum(precious, { exclude: ['/storage'] });
      for (const [how, script, want] of [
        ['symlink', `ln -s ${precious}/notes.txt ${d}/app.tar.gz`, /app\.tar\.gz: exists and is not a regular file; not replacing it/],
        ['dangling symlink', `ln -s ${precious}/new.tar.gz ${d}/app.tar.gz`, /app\.tar\.gz: exists and is not a regular file; not replacing it/],
        ['file', `echo mine > ${d}/app.tar.gz && chmod 644 ${d}/app.tar.gz`, /app\.tar\.gz: belongs to chattack.*, not you \(chvictim\); not replacing it/],
      ]) {
        rmSync(join(d, 'app.tar.gz'), { force: true });
        const p = await runAs(attacker, '/bin/sh', ['-c', script]);
        t.is(p.exitCode, 0, p.stderr);
        const planted = lstatSync(join(d, 'app.tar.gz'));
        const r = await asVictim(['--tar', join(d, 'app.tar.gz'), `${reg.host}/team/app:v1`]);
        t.is(r.exitCode, 1, `${how}: ${r.stderr}`);
        t.regex(r.stderr, /^ch-pull\[[0-9]+\]: error: /, how);
        t.regex(r.stderr, want, how);
        t.notRegex(r.stderr, /internal error|at .*\.js:[0-9]+/, how);
        const now = lstatSync(join(d, 'app.tar.gz'));
        t.is(now.ino, planted.ino, `${how}: the attacker's entry left alone`);
        t.is(now.uid, attacker.uid, how);
        if (now.isSymbolicLink()) t.true(readlinkSync(join(d, 'app.tar.gz')).startsWith(precious), how);
        t.deepEqual(readdirSync(d), ['app.tar.gz'], `${how}: no temporary left`);
        t.false(existsSync(join(precious, 'new.tar.gz')), `${how}: nothing written through the link`);
        t.is(treeSum(precious, { exclude: ['/storage'] }), before, `${how}: the victim's files intact`);
        t.is(readFileSync(join(precious, 'notes.txt'), 'utf8'), 'notes\n');
      }
      // The victim's own file there is replaced as before.
      rmSync(join(d, 'app.tar.gz'));
      writeFileSync(join(d, 'app.tar.gz'), 'old');
      chownSync(join(d, 'app.tar.gz'), victim.uid, victim.gid);
      const ok = await asVictim(['--tar', join(d, 'app.tar.gz'), `${reg.host}/team/app:v1`]);
      t.is(ok.exitCode, 0, ok.stderr);
      t.is(lstatSync(join(d, 'app.tar.gz')).uid, victim.uid);
      t.true((await execa('tar', ['tzf', join(d, 'app.tar.gz')])).stdout.split('\n').includes('./f'));
    } finally {
      await reg.close();
    }
  });
}
