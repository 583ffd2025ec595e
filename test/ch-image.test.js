// ch-image: real builds from Dockerfiles, offline. Bases come from the
// loopback registry (Debian's docker-registry, test/helpers/registry.js) by
// reference: the busybox test image and the debootstrap'd Debian image
// (CACHE_DIR). Builds run as the unprivileged test user (and one as root),
// with RUN as fake root through ch-run.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { CACHE_DIR, ch, image, needs, TEST_DIR, testUser, unavailable } from './helpers/env.js';
import { ownedByUser } from './helpers/fixtures.js';
import { debianBase } from './helpers/images.js';
import { addImage, haveTools, push, startRegistry, writeLayout } from './helpers/registry.js';

const BASE = join(TEST_DIR, 'ch-image');
const missing = haveTools();
let reg, debian;
let debianWhy = 'debootstrap needs root and the mirror once (test/setup.js)';
let n = 0;

/** A directory of the test user's for one test: its storage and contexts. */
async function space(name) {
  const d = join(BASE, `${name}-${n++}`);
  mkdirSync(d, { recursive: true });
  await ownedByUser(d);
  return d;
}

/** Write context files FILES ({path: content}) under DIR, owned by the test user. */
async function context(dir, files) {
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), c);
  }
  await ownedByUser(dir);
  return dir;
}

/** ch-image as the test user (opts.root: as root), storage in SP/storage. */
function chImage(sp, args, opts = {}) {
  return ch('ch-image', args, { ...opts, env: { CH_IMAGE_STORAGE: join(sp, 'storage'), ...(opts.env ?? {}) } });
}
function chRun(sp, args, opts = {}) {
  return ch('ch-run', args, { ...opts, env: { CH_IMAGE_STORAGE: join(sp, 'storage'), ...(opts.env ?? {}) } });
}

/** An image directory as a one-layer image pushed to the registry as NAME:latest. */
async function pushDir(dir, name, config = {}) {
  const lay = join(BASE, `layout-${name}`);
  const r = await execa('tar', ['-C', dir, '--numeric-owner', '--owner=0', '--group=0', '-cf', '-', '.'],
    { encoding: 'buffer', maxBuffer: 1 << 30, reject: false });
  // Its error alone: an ExecaError would carry the whole tarball, which ava then prints (out of memory).
  if (r.exitCode !== 0) throw new Error(`tar of ${dir}: exit ${r.exitCode}: ${r.stderr.toString().slice(0, 500)}`);
  const { stdout } = r;
  writeLayout(lay, 'latest', [addImage(lay, { layers: [Buffer.from(stdout)], config, gzip: name !== 'debian' })]);
  await push(reg, lay, 'latest', name);
}

test.before(async () => {
  if (missing) return;
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true });
  chmodSync(BASE, 0o755);
  reg = await startRegistry(join(BASE, 'registry'));
  await pushDir(image('busybox'), 'busybox', { Env: ['PATH=/bin:/usr/bin', 'FROM_BASE=yes'], Cmd: ['/bin/sh'] });
  debian = await debianBase(CACHE_DIR);
  // A user can't read all of root's cached Debian tree (/etc/shadow, ...): no Debian base then.
  if (debian) try { await pushDir(debian, 'debian'); } catch (err) { debianWhy = err.message; debian = null; }
});

test.after.always(async () => { await reg?.stop(); });

const t0 = needs(test, missing, { tool: true });

const MULTI = (host) => `ARG BASE=${host}/busybox
FROM \${BASE} AS build
ARG V=1
ENV GREETING="hello world" VER=v\${V}
WORKDIR /src
COPY . ./
RUN echo "$GREETING $VER $(id -u)" > built.txt && ls /src > listing.txt
RUN mkdir -p /out && cp built.txt listing.txt /out/

FROM ${host}/busybox
LABEL org.example.stage=final
COPY --from=build /out/ /app/
COPY --chown=1000:1000 data/keep.txt /app/keep.txt
WORKDIR /app
ENV APP_HOME=/app
USER nobody
EXPOSE 8080
ENTRYPOINT ["/bin/cat"]
CMD ["/app/built.txt"]
`;

t0('multi-stage build: FROM by reference, COPY with .dockerignore and --from, ARG/ENV substitution, metadata; cache hits on rebuild, a miss after a context change', async (t) => {
  const sp = await space('multi');
  const ctx = await context(join(sp, 'ctx'), {
    Dockerfile: MULTI(reg.host), '.dockerignore': 'secret*\n*.log\n!keep.log\n', 'data/keep.txt': 'kept\n',
    'secret.txt': 'no\n', 'x.log': 'no\n', 'keep.log': 'yes\n',
  });
  const r = await chImage(sp, ['build', '-t', 'multi', '--build-arg', 'V=7', ctx]);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /RUN echo .* \(cache miss\)/);
  // ch-run finds it by name; ENTRYPOINT + CMD from /ch/metadata.json.
  const run = await chRun(sp, ['multi']);
  t.is(run.exitCode, 0, run.stderr);
  t.is(run.stdout, 'hello world v7 0');
  const listing = (await chRun(sp, ['multi', '--', '/bin/cat', '/app/listing.txt'])).stdout.split('\n');
  t.true(listing.includes('keep.log') && listing.includes('data') && listing.includes('Dockerfile'), listing.join(' '));
  t.false(listing.includes('secret.txt') || listing.includes('x.log'), listing.join(' '));
  t.is((await chRun(sp, ['multi', '--', '/bin/cat', '/app/keep.txt'])).stdout, 'kept');
  const dir = join(sp, 'storage', 'img', 'multi+latest');
  const meta = JSON.parse(readFileSync(join(dir, 'ch', 'metadata.json'), 'utf8'));
  t.deepEqual(meta.Entrypoint, ['/bin/cat']);
  t.deepEqual(meta.Cmd, ['/app/built.txt']);
  t.is(meta.WorkingDir, '/app');
  t.is(meta.User, 'nobody');
  t.is(meta.Labels['org.example.stage'], 'final');
  const env = readFileSync(join(dir, 'ch', 'environment'), 'utf8');
  t.regex(env, /^APP_HOME=\/app$/m);
  t.regex(env, /^FROM_BASE=yes$/m);
  t.false(existsSync(join(dir, 'ch', '.ch-pull.json')));
  t.true(existsSync(join(dir, 'ch', '.ch-image.json')));
  // --set-env reads /ch/environment in the image: ENV as a built image's.
  t.is((await chRun(sp, ['--set-env', 'multi', '--', '/bin/sh', '-c', 'echo $APP_HOME'])).stdout, '/app');

  const again = await chImage(sp, ['build', '-t', 'multi', '--build-arg', 'V=7', ctx]);
  t.is(again.exitCode, 0, again.stderr);
  t.notRegex(again.stderr, /cache miss/);
  t.regex(again.stderr, /RUN echo .* \(cache hit\)/);

  writeFileSync(join(ctx, 'data', 'keep.txt'), 'changed\n');
  const changed = await chImage(sp, ['build', '-t', 'multi', '--build-arg', 'V=7', ctx]);
  t.is(changed.exitCode, 0, changed.stderr);
  t.regex(changed.stderr, /COPY \. \.\/ \(cache miss\)/);
  t.regex(changed.stderr, /RUN echo .* \(cache miss\)/);
  t.is((await chRun(sp, ['multi', '--', '/bin/cat', '/app/keep.txt'])).stdout, 'changed');

  // Only the context file the ignore file excludes changes: still all hits.
  writeFileSync(join(ctx, 'secret.txt'), 'other\n');
  const ign = await chImage(sp, ['build', '-t', 'multi', '--build-arg', 'V=7', ctx]);
  t.notRegex(ign.stderr, /cache miss/);

  // A different build argument misses from its ARG on; --target stops at a stage.
  const tgt = await chImage(sp, ['build', '-t', 'stage1', '--target', 'build', '--build-arg', 'V=8', ctx]);
  t.is(tgt.exitCode, 0, tgt.stderr);
  t.regex(tgt.stderr, /RUN echo .* \(cache miss\)/);
  t.is((await chRun(sp, ['stage1', '--', '/bin/cat', '/src/built.txt'])).stdout, 'hello world v8 0');
});

t0('list, delete, modify, gc, reset', async (t) => {
  const sp = await space('manage');
  const ctx = await context(join(sp, 'ctx'), { Dockerfile: `FROM ${reg.host}/busybox\nRUN echo one > /one && mkdir /ro && touch /ro/x && chmod 555 /ro\n` });
  t.is((await chImage(sp, ['build', '-t', 'a', ctx])).exitCode, 0);
  t.is((await chImage(sp, ['build', '-t', 'b:v2', ctx])).exitCode, 0);
  const list = (await chImage(sp, ['list'])).stdout.split('\n');
  t.true(list.includes('a:latest') && list.includes('b:v2'), list.join(' '));
  const mod = await chImage(sp, ['modify', 'a', '--', '/bin/sh', '-c', 'echo two > /two && id -u > /uid']);
  t.is(mod.exitCode, 0, mod.stderr);
  t.is((await chRun(sp, ['a', '--', '/bin/cat', '/two', '/uid'])).stdout, 'two\n0');
  const fail = await chImage(sp, ['modify', 'a', '--', '/bin/sh', '-c', 'echo three > /three; exit 3']);
  t.is(fail.exitCode, 3);
  t.is((await chRun(sp, ['a', '--', '/bin/sh', '-c', 'test -e /three || echo absent'])).stdout, 'absent');
  t.is((await chImage(sp, ['delete', 'b:v2'])).exitCode, 0);
  t.false((await chImage(sp, ['list'])).stdout.split('\n').includes('b:v2'));
  t.is((await chImage(sp, ['delete', 'nope'])).exitCode, 1);
  const gc = await chImage(sp, ['gc', '--all']);
  t.is(gc.exitCode, 0, gc.stderr);
  t.deepEqual(readdirSync(join(sp, 'storage', 'build-cache')), []);
  const rebuilt = await chImage(sp, ['build', '-t', 'a', ctx]);
  t.regex(rebuilt.stderr, /RUN echo one > \/one .* \(cache miss\)/);
  const hit = await chImage(sp, ['build', '-t', 'a', ctx]);
  t.regex(hit.stderr, /RUN echo one > \/one .* \(cache hit\)/);
  const nocache = await chImage(sp, ['build', '--no-cache', '-t', 'a', ctx]);
  t.is(nocache.exitCode, 0, nocache.stderr);
  t.regex(nocache.stderr, /RUN echo one > \/one .* \(cache miss\)/);
  // Bounded: a bound of 1 byte keeps nothing after the build.
  const bounded = await chImage(sp, ['build', '-t', 'a', ctx], { env: { CH_IMAGE_CACHE_MAX: '1' } });
  t.is(bounded.exitCode, 0, bounded.stderr);
  t.deepEqual(readdirSync(join(sp, 'storage', 'build-cache')), []);
  t.is((await chImage(sp, ['reset'])).exitCode, 0);
  t.deepEqual(readdirSync(join(sp, 'storage')), []);
});

t0('SIGINT mid-build leaves storage consistent: the previous image of the tag intact, no temporaries', async (t) => {
  const sp = await space('sigint');
  const ctx = await context(join(sp, 'ctx'), { Dockerfile: `FROM ${reg.host}/busybox\nRUN echo old > /version\n` });
  t.is((await chImage(sp, ['build', '-t', 'x', ctx])).exitCode, 0);
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${reg.host}/busybox\nRUN echo new > /version && touch /started && sleep 60\n`);
  const p = chImage(sp, ['build', '-t', 'x', ctx]);
  let out = '';
  p.stderr.on('data', (d) => { out += d; });
  for (let i = 0; i < 600 && !/cache miss/.test(out.split('RUN')[1] ?? ''); i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 1500));   // inside the RUN
  process.kill(p.pid, 'SIGINT');
  const r = await p;
  t.is(r.exitCode, 130, r.stderr);
  t.regex(r.stderr, /interrupted by SIGINT/);
  t.is((await chRun(sp, ['x', '--', '/bin/cat', '/version'])).stdout, 'old');
  t.deepEqual(readdirSync(join(sp, 'storage', 'img')).filter((e) => e.startsWith('.')), []);
  t.deepEqual(readdirSync(join(sp, 'storage', 'build-cache')).filter((e) => e.startsWith('.')), []);
  // The RUN's processes went with the build.
  const left = await execa('pgrep', ['-u', String(testUser().uid), '-f', 'sleep 60'], { reject: false });
  t.is(left.stdout, '');
});

t0('ADD of a local tarball (unpacked, confined), exec-form RUN, SHELL, long names, metadata-only instructions; ONBUILD and URLs refused', async (t) => {
  const sp = await space('more');
  const long = `${'d'.repeat(90)}/${'f'.repeat(90)}.txt`;
  const ctx = await context(join(sp, 'ctx'), { 'src/a.txt': 'a\n', [`src/${long}`]: 'long\n' });
  await execa('tar', ['-C', join(ctx, 'src'), '-czf', join(ctx, 'bundle.tar.gz'), '.']);
  await ownedByUser(ctx);
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${reg.host}/busybox
ADD bundle.tar.gz /opt/bundle/
ADD bundle.tar.gz /opt/again
ADD src/a.txt /opt/plain.txt
SHELL ["/bin/sh", "-e", "-c"]
RUN ["/bin/sh", "-c", "echo exec > /opt/exec.txt"]
RUN test -f /opt/bundle/${long} && echo shell > /opt/shell.txt
VOLUME ["/data"]
EXPOSE 80/udp 443
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s CMD ["/bin/true"]
`);
  await ownedByUser(ctx);
  const r = await chImage(sp, ['build', '-t', 'more', ctx]);
  t.is(r.exitCode, 0, r.stderr);
  const out = await chRun(sp, ['more', '--', '/bin/cat', '/opt/bundle/a.txt', `/opt/bundle/${long}`, '/opt/plain.txt', '/opt/exec.txt', '/opt/shell.txt']);
  t.is(out.stdout, 'a\nlong\na\nexec\nshell', out.stderr);
  t.is((await chRun(sp, ['more', '--', '/bin/cat', '/opt/again/a.txt'])).stdout, 'a');
  const marker = JSON.parse(readFileSync(join(sp, 'storage', 'img', 'more+latest', 'ch', '.ch-image.json'), 'utf8'));
  t.deepEqual(marker.config.Shell, ['/bin/sh', '-e', '-c']);
  t.deepEqual(Object.keys(marker.config.ExposedPorts).sort(), ['443/tcp', '80/udp']);
  t.deepEqual(Object.keys(marker.config.Volumes), ['/data']);
  t.is(marker.config.StopSignal, 'SIGTERM');
  t.deepEqual(marker.config.Healthcheck.Test, ['CMD', '/bin/true']);

  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${reg.host}/busybox\nONBUILD RUN true\n`);
  const ob = await chImage(sp, ['build', '-t', 'ob', ctx]);
  t.is(ob.exitCode, 1);
  t.regex(ob.stderr, /Dockerfile:2: ONBUILD: not supported/);
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${reg.host}/busybox\nADD http://127.0.0.1:1/x /x\n`);
  const url = await chImage(sp, ['build', '-t', 'url', ctx]);
  t.is(url.exitCode, 1);
  t.regex(url.stderr, /no URL fetches during a build/);
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${reg.host}/busybox\nRUN <<EOF\ntouch /x\nEOF\n`);
  const heredoc = await chImage(sp, ['build', '-t', 'hd', ctx]);
  t.is(heredoc.exitCode, 1);
  t.regex(heredoc.stderr, /here-documents \(RUN <<EOF\) are not supported/);
  const failing = await chImage(sp, ['build', '-t', 'bad', '-f', '/dev/null', ctx]);
  t.is(failing.exitCode, 1);
  t.regex(failing.stderr, /no FROM instruction/);
});

t0('as root: a build and ch-run of the image', async (t) => {
  const sp = join(BASE, `root-${n++}`);
  mkdirSync(sp, { recursive: true });
  const ctx = await context(join(sp, 'ctx'), { Dockerfile: `FROM ${reg.host}/busybox\nRUN id -u > /who && chmod u+s /who\nCMD ["/bin/cat", "/who"]\n` });
  const r = await chImage(sp, ['build', '-t', 'r', ctx], { root: true });
  t.is(r.exitCode, 0, r.stderr);
  const run = await chRun(sp, ['r'], { root: true });
  t.is(run.stdout, '0');
  // Nothing setuid is created, even when a RUN asks for it.
  const { stdout } = await execa('find', [join(sp, 'storage'), '-perm', '/6000']);
  t.is(stdout, '');
});

/** A .deb NAME installing /usr/share/NAME/hello, built with dpkg-deb under DIR. */
async function deb(dir, name, postinst = '') {
  const root = join(dir, `${name}-root`);
  mkdirSync(join(root, 'DEBIAN'), { recursive: true });
  mkdirSync(join(root, 'usr', 'share', name), { recursive: true });
  writeFileSync(join(root, 'usr', 'share', name, 'hello'), `hello from ${name}\n`);
  writeFileSync(join(root, 'DEBIAN', 'control'), `Package: ${name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test package\n`);
  if (postinst) { writeFileSync(join(root, 'DEBIAN', 'postinst'), `#!/bin/sh\nset -e\n${postinst}\n`); chmodSync(join(root, 'DEBIAN', 'postinst'), 0o755); }
  const out = join(dir, `${name}_1.0_all.deb`);
  await execa('dpkg-deb', ['--root-owner-group', '-b', root, out]);
  rmSync(root, { recursive: true });
  return out;
}

t0('Debian: dpkg -i of a local .deb, apt-get install from an apt repository on loopback, useradd', async (t) => {
  if (!debian) { unavailable(t, 'the Debian base image', debianWhy); return; }
  const scan = await execa('sh', ['-c', 'command -v dpkg-scanpackages'], { reject: false });
  if (scan.exitCode !== 0) { unavailable(t, 'dpkg-scanpackages', 'install dpkg-dev (apt-ftparchive is not used)'); return; }
  const sp = await space('debian');
  const ctx = join(sp, 'ctx');
  mkdirSync(ctx, { recursive: true });
  await deb(ctx, 'chtest-local', 'chown root:root /usr/share/chtest-local/hello');
  // The apt repository: a flat one (Packages from dpkg-scanpackages), served over HTTP on loopback.
  const repo = join(BASE, `apt-${n++}`);
  mkdirSync(repo, { recursive: true });
  await deb(repo, 'chtest-apt');
  const { stdout: pk } = await execa('dpkg-scanpackages', ['-m', '.'], { cwd: repo });
  writeFileSync(join(repo, 'Packages'), pk);
  const srv = http.createServer((q, s) => {
    const f = join(repo, decodeURIComponent(q.url.split('?')[0]).replace(/\.\.+/g, ''));
    if (!existsSync(f) || q.url.endsWith('/')) { s.statusCode = 404; s.end(); return; }
    s.end(readFileSync(f));
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const port = srv.address().port;
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${reg.host}/debian
COPY chtest-local_1.0_all.deb /root/
RUN dpkg -i /root/chtest-local_1.0_all.deb && rm /root/chtest-local_1.0_all.deb
RUN rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* \\
 && echo "deb [trusted=yes] http://127.0.0.1:${port}/ ./" > /etc/apt/sources.list.d/local.list \\
 && apt-get update && apt-get install -y chtest-apt && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 2000 alice && grep alice /etc/passwd
`);
  await ownedByUser(ctx);
  const r = await chImage(sp, ['build', '-t', 'deb', ctx]);
  t.is(r.exitCode, 0, r.stderr + r.stdout);
  const check = await chRun(sp, ['--no-passwd', 'deb', '--', '/bin/sh', '-c',
    'cat /usr/share/chtest-local/hello /usr/share/chtest-apt/hello; dpkg -s chtest-apt | grep Status; getent passwd alice | cut -d: -f1,3,6; test -d /home/alice && echo home'],
  { env: {} });
  t.is(check.exitCode, 0, check.stderr);
  t.is(check.stdout, 'hello from chtest-local\nhello from chtest-apt\nStatus: install ok installed\nalice:2000:/home/alice\nhome');
});

test('command line: help, usage errors (exit 2)', async (t) => {
  const sp = await space('cli');
  const help = await chImage(sp, ['--help']);
  t.is(help.exitCode, 0);
  t.regex(help.stdout, /Subcommands: build, modify, list, delete, push, reset, gc/);
  t.is((await chImage(sp, ['build', '--help'])).exitCode, 0);
  t.regex((await chImage(sp, ['push', '--help'])).stdout, /Usage: ch-image push \[--insecure\] \[--compress gzip\|zstd\]/);
  for (const args of [[], ['nope'], ['build'], ['build', 'a', 'b'], ['build', '--bogus', '.'], ['delete'], ['list', 'x'], ['push'],
    ['push', 'a', 'b', 'c'], ['push', '--compress', 'lz4', 'a'], ['push', 'a', 'Not A Ref']]) {
    const r = await chImage(sp, args);
    t.is(r.exitCode, 2, `${args.join(' ')}: ${r.stderr}`);
  }
  t.regex((await chImage(sp, ['nope'])).stderr, /unknown subcommand 'nope'/);
});

t0('a COPY over a file the parent step copied leaves the parent\'s cached tree as it was (hard-linked steps)', async (t) => {
  const sp = await space('links');
  const ctx = await context(join(sp, 'ctx'), { one: 'one\n', two: 'two\n', 'Dockerfile.1': `FROM ${reg.host}/busybox\nCOPY one /f\nCOPY one /g\n`,
    'Dockerfile.2': `FROM ${reg.host}/busybox\nCOPY one /f\nCOPY one /g\nCOPY two /g\nRUN echo three >> /f\n` });
  t.is((await chImage(sp, ['build', '-t', 'one', '-f', join(ctx, 'Dockerfile.1'), ctx])).exitCode, 0);
  const two = await chImage(sp, ['build', '-t', 'two', '-f', join(ctx, 'Dockerfile.2'), ctx]);
  t.is(two.exitCode, 0, two.stderr);
  t.is((await chRun(sp, ['two', '--', '/bin/cat', '/f', '/g'])).stdout, 'one\nthree\ntwo');
  const again = await chImage(sp, ['build', '-t', 'one-again', '-f', join(ctx, 'Dockerfile.1'), ctx]);
  t.notRegex(again.stderr, /cache miss/);
  t.is((await chRun(sp, ['one-again', '--', '/bin/cat', '/f', '/g'])).stdout, 'one\none');
});

t0('an entry whose tree was collected is made again, then hit', async (t) => {
  const sp = await space('stale');
  const ctx = await context(join(sp, 'ctx'), { Dockerfile: `FROM ${reg.host}/busybox\nRUN echo 1 > /a\nENV X=1\n` });
  t.is((await chImage(sp, ['build', '-t', 's', ctx])).exitCode, 0);
  // Collect the RUN's entry (the one with a tree/ that is not FROM's): ENV's entry names its tree.
  const bc = join(sp, 'storage', 'build-cache');
  const run = readdirSync(bc).find((e) => JSON.parse(readFileSync(join(bc, e, 'state.json'), 'utf8')).what.startsWith('RUN'));
  rmSync(join(bc, run, 'tree'), { recursive: true });   // its state.json stays: an entry that can't be used
  const again = await chImage(sp, ['build', '-t', 's', ctx]);
  t.regex(again.stderr, /RUN echo 1 > \/a \(cache miss\)/);
  t.regex(again.stderr, /ENV X=1 \(cache hit\)/);   // its tree is the RUN's, made again under the same key
  const third = await chImage(sp, ['build', '-t', 's', ctx]);
  t.notRegex(third.stderr, /cache miss/);
});

t0('push: a built image to the loopback registry, pulled back by ch-pull with the same tree and config; again: nothing sent', async (t) => {
  const sp = await space('push');
  const ctx = await context(join(sp, 'ctx'), {
    Dockerfile: `FROM ${reg.host}/busybox\nCOPY hello.txt /hello.txt\nRUN echo built > /built.txt\nENV PUSHED=yes\nWORKDIR /tmp\nCMD ["/bin/cat", "/hello.txt"]\n`,
    'hello.txt': 'hello\n',
  });
  const tag = `${reg.host}/ch-image-test/pushed:v1`;
  const b = await chImage(sp, ['build', '-t', tag, ctx]);
  t.is(b.exitCode, 0, b.stderr);
  // DEST_REF defaults to IMAGE, as Charliecloud's ch-image push.
  const p = await chImage(sp, ['push', tag]);
  t.is(p.exitCode, 0, p.stderr);
  t.regex(p.stderr, /ch-image: \S+pushed:v1: pushed to \S+pushed:v1 \(sha256:[0-9a-f]{64}; [\d.]+ MiB sent\)/);
  const again = await chImage(sp, ['push', tag, `${reg.host}/ch-image-test/copy:v2`]);
  t.is(again.exitCode, 0, again.stderr);
  const same = await chImage(sp, ['push', tag]);
  t.is(same.exitCode, 0, same.stderr);
  t.regex(same.stderr, /the registry had every blob/);
  // Pulled back into another storage: the same files and configuration, and it runs as built.
  const sp2 = await space('push-back');
  const pulled = join(sp2, 'pulled');
  const pr = await ch('ch-pull', [`${reg.host}/ch-image-test/copy:v2`, pulled], { env: { CH_IMAGE_STORAGE: join(sp2, 'storage') } });
  t.is(pr.exitCode, 0, pr.stderr);
  const built = join(sp, 'storage', 'img', readdirSync(join(sp, 'storage', 'img')).find((e) => e.includes('pushed')));
  const files = async (d) => (await execa('find', ['.', '-path', './ch', '-prune', '-o', '-printf', '%P %y %m %s %l\\n'], { cwd: d })).stdout.split('\n').sort();
  t.deepEqual(await files(pulled), await files(built));
  const meta = (d) => JSON.parse(readFileSync(join(d, 'ch', 'metadata.json'), 'utf8'));
  t.deepEqual(meta(pulled).Cmd, ['/bin/cat', '/hello.txt']);
  t.is(meta(pulled).WorkingDir, '/tmp');
  t.regex(readFileSync(join(pulled, 'ch', 'environment'), 'utf8'), /^PUSHED=yes$/m);
  const run = await ch('ch-run', [pulled]);
  t.is(run.exitCode, 0, run.stderr);
  t.is(run.stdout, 'hello');
  // An image not in storage: exit 1, naming it.
  const none = await chImage(sp, ['push', 'no-such-image', `${reg.host}/ch-image-test/none`]);
  t.is(none.exitCode, 1, none.stderr);
  t.regex(none.stderr, /no-such-image/);
});
