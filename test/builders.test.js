// ch-build and ch-builder2tar (ch-docker2tar): builder selection (always),
// then real builds with podman and buildah where installed, flattened to a
// tarball, unpacked by ch-tar2dir as the unprivileged user and run by ch-run.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, image, isRoot, needs, PKG, TEST_DIR, testUser } from './helpers/env.js';

const BASE = join(TEST_DIR, 'builders');
const TAG = `localhost/chtk-test-${process.pid}`;
const BASE_IMAGE = `${TAG}-base`;

/** Where CMD is on this host's PATH (distributions differ: /bin, /usr/bin, /usr/sbin), or null. */
async function which(cmd) {
  const r = await execa('sh', ['-c', 'command -v "$1"', 'sh', cmd], { reject: false });
  return r.exitCode === 0 && r.stdout.startsWith('/') ? r.stdout.trim() : null;
}
const HOST = Object.fromEntries(await Promise.all(['podman', 'buildah', 'docker', 'setpriv', 'head', 'tar', 'cat']
  .map(async (c) => [c, await which(c)])));

/** A PATH directory holding node and fake builders (shell scripts) given as {name: script}, plus host TOOLS. */
function fakePath(label, fakes, tools = []) {
  const d = join(BASE, `path-${label}`);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true, mode: 0o755 });
  symlinkSync(process.execPath, join(d, 'node'));
  // ch() runs the command through setpriv as root.
  for (const tool of [...(isRoot ? ['setpriv'] : []), ...tools]) {
    if (!HOST[tool]) throw new Error(`${tool} not found on this host's PATH`);
    symlinkSync(HOST[tool], join(d, tool));
  }
  for (const [name, body] of Object.entries(fakes)) writeFileSync(join(d, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return d;
}

test.before(() => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true, mode: 0o755 });
});

// ---- selection logic, with fake builders on PATH (no engine needed) ----

test('no docker, podman or buildah: ch-image, the package\'s own builder, saying what was tried', async (t) => {
  const r = await ch('ch-build', ['-v', '-n', '-t', 'x', '.'], { env: { PATH: fakePath('none', {}) } });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout.trim(), `${join(PKG, 'bin', 'ch-image')} build -t x .`);
  t.regex(r.stderr, /no working docker, podman or buildah \(tried: docker \(not found\), podman \(not found\), buildah \(not found\)\); using ch-image/);
});

test('ch-build -b ch-image builds into storage, where ch-run finds the image', async (t) => {
  const d = join(BASE, 'own');
  rmSync(d, { recursive: true, force: true });
  mkdirSync(join(d, 'ctx'), { recursive: true, mode: 0o755 });
  writeFileSync(join(d, 'ctx', 'Dockerfile'), 'FROM scratch\nCOPY hello.txt /\n');
  writeFileSync(join(d, 'ctx', 'hello.txt'), 'hi\n');
  if (isRoot) await execa('chown', ['-R', `${testUser().uid}`, d]);
  const env = { CH_IMAGE_STORAGE: join(d, 'storage') };
  const r = await ch('ch-build', ['-b', 'ch-image', '-t', 'own', join(d, 'ctx')], { env });
  t.is(r.exitCode, 0, r.stderr);
  t.is(readFileSync(join(d, 'storage', 'img', 'own+latest', 'hello.txt'), 'utf8'), 'hi\n');
});

test('docker without a working engine is passed over for podman', async (t) => {
  const p = fakePath('nodocker', {
    docker: '[ "$1" = info ] && { echo "Cannot connect to the Docker daemon" >&2; exit 1; }; exit 0',
    podman: 'exit 0',
  });
  const r = await ch('ch-build', ['-v', '-n', '-t', 'img', '--isolation=chroot', 'ctx'], { env: { PATH: p } });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout.trim(), 'podman build -t img --isolation=chroot ctx');
  t.regex(r.stderr, /builder docker: `docker info` failed \(exit 1\): Cannot connect to the Docker daemon/);
});

test('a working docker is preferred; -b and $CH_BUILDER choose; unknown builder is a usage error', async (t) => {
  const p = fakePath('all', { docker: 'exit 0', podman: 'exit 0', buildah: 'exit 0' });
  let r = await ch('ch-build', ['-n', '-t', 'img', '-f', 'D', 'ctx'], { env: { PATH: p } });
  t.is(r.stdout.trim(), 'docker build -t img -f D ctx');
  r = await ch('ch-build', ['-n', '-t', 'img', 'ctx'], { env: { PATH: p, CH_BUILDER: 'buildah' } });
  t.is(r.stdout.trim(), 'buildah bud -t img ctx');
  r = await ch('ch-build', ['-n', '-b', 'podman', '-t', 'img', 'ctx'], { env: { PATH: p, CH_BUILDER: 'buildah' } });
  t.is(r.stdout.trim(), 'podman build -t img ctx');
  r = await ch('ch-build', ['-n', '-b', 'kaniko', '-t', 'img', 'ctx'], { env: { PATH: p } });
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /unknown builder 'kaniko' \(from -b\)/);
  r = await ch('ch-build', ['-n', 'ctx'], { env: { PATH: p } });
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /no tag given/);
});

test('proxy variables become build arguments', async (t) => {
  const p = fakePath('proxy', { podman: 'exit 0' });
  const r = await ch('ch-build', ['-n', '-b', 'podman', '-t', 'img', 'ctx'],
    { env: { PATH: p, HTTP_PROXY: 'http://proxy:3128', no_proxy: 'localhost,.local' } });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout.trim(), 'podman build -t img --build-arg HTTP_PROXY=http://proxy:3128 --build-arg no_proxy=localhost,.local ctx');
});

test("the builder's output is streamed and its exit status is ch-build's", async (t) => {
  const p = fakePath('status', { docker: '[ "$1" = info ] && exit 0; echo "step 1/1: $*"; echo oops >&2; exit 7' });
  const r = await ch('ch-build', ['-t', 'img', 'ctx'], { env: { PATH: p } });
  t.is(r.exitCode, 7);
  t.is(r.stdout.trim(), 'step 1/1: build -t img ctx');
  t.is(r.stderr.trim(), 'oops');
});

// ---- real builders ----

const DOCKERFILE = `FROM ${BASE_IMAGE}
ENV GREETING="hello world" QUOTED="'q'"
WORKDIR /work
RUN echo built > /built.txt
LABEL org.chtoolkit.test=yes
ENTRYPOINT ["/bin/echo"]
CMD ["from-cmd"]
`;
// Root here may lack CAP_SYS_RESOURCE: ask for limits no higher than the hard ones we have.
function hardLimit(name, want) {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith(name));
  const hard = line?.slice(name.length).trim().split(/\s+/)[1];
  return !hard || hard === 'unlimited' ? want : Math.min(want, Number(hard));
}
const NOFILE = hardLimit('Max open files', 10000), NPROC = hardLimit('Max processes', 4096);
const PODMAN_ARGS = ['--isolation=chroot', '--pull=never', '--ulimit', `nofile=${NOFILE}:${NOFILE}`,
  '--ulimit', `nproc=${NPROC}:${NPROC}`];

let baseReady;
async function baseImage(t) {
  baseReady ??= (async () => {
    const tb = join(BASE, 'base.tar.gz');
    await execa('tar', ['-C', image('busybox'), '-czf', tb, '.']);
    await execa('podman', ['import', tb, BASE_IMAGE]);
    const ctx = join(BASE, 'ctx');
    mkdirSync(ctx, { recursive: true });
    writeFileSync(join(ctx, 'Dockerfile'), DOCKERFILE);
    return ctx;
  })();
  return baseReady;
}

test.after.always(async () => {
  if (!HOST.podman || !isRoot) return;
  for (const i of [`${TAG}-podman`, `${TAG}-buildah`, BASE_IMAGE])
    await execa('podman', ['rmi', '-f', i], { reject: false });
});

/** Unpack TARBALL as the test user and check the image works under ch-run. */
async function checkImage(t, tarball, name, builder) {
  const dir = join(BASE, `unpack-${builder}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  if (isRoot) chownSync(dir, testUser().uid, testUser().gid);
  const u = await ch('ch-tar2dir', [tarball, dir]);
  t.is(u.exitCode, 0, u.stderr);
  const img = join(dir, name);
  const meta = JSON.parse(readFileSync(join(img, 'ch/metadata.json'), 'utf8'));
  t.deepEqual(meta.Entrypoint, ['/bin/echo']);
  t.deepEqual(meta.Cmd, ['from-cmd']);
  t.is(meta.WorkingDir, '/work');
  t.is(meta.Labels['org.chtoolkit.test'], 'yes');
  t.true(meta.Env.includes('GREETING=hello world'));
  t.regex(readFileSync(join(img, 'ch/environment'), 'utf8'), /^GREETING=hello world$/m);

  let r = await ch('ch-run', [img, '--', 'cat', '/etc/os-release']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /busybox test image/);
  r = await ch('ch-run', [img, '--', 'cat', '/built.txt']);
  t.is(r.stdout.trim(), 'built');
  r = await ch('ch-run', ['--set-env', img, '--', 'sh', '-c', 'echo "$GREETING|$QUOTED"']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout.trim(), "hello world|'q'");
  r = await ch('ch-run', [img]);
  t.is(r.stdout.trim(), 'from-cmd', 'no command: ENTRYPOINT + CMD from /ch/metadata.json');
  r = await ch('ch-run', [img, '--', 'sh', '-c', 'echo "${GREETING:-unset}"']);
  t.is(r.stdout.trim(), 'unset', 'image ENV only with --set-env');
}

// The real builds use root's podman storage.
const NOT_ROOT = isRoot ? null : "not root: the real builds use root's podman storage";

for (const builder of ['podman', 'buildah']) {
  const missing = !HOST.podman ? 'podman not installed (it makes the base image)'
    : !HOST[builder] ? `${builder} not installed` : null;
  needs(test, NOT_ROOT ?? missing, { tool: !NOT_ROOT })(`${builder}: ch-build, ch-builder2tar, ch-tar2dir as the user, ch-run`, async (t) => {
    const ctx = await baseImage(t);
    const tag = `${TAG}-${builder}`;
    const b = await ch('ch-build', ['-b', builder, '-t', tag, ...PODMAN_ARGS, ctx], { root: true, all: true });
    t.is(b.exitCode, 0, b.all);
    t.regex(b.all, /STEP|COMMIT/i, 'builder output streamed');

    const out = join(BASE, `out-${builder}`);
    mkdirSync(out, { recursive: true, mode: 0o755 });
    const name = tag.replaceAll('/', '%').replaceAll(':', '+');
    const x = await ch(builder === 'podman' ? 'ch-docker2tar' : 'ch-builder2tar', ['-b', builder, tag, out], { root: true });
    t.is(x.exitCode, 0, x.stderr);
    t.deepEqual(readdirSync(out), [`${name}.tar.gz`], 'only the final tarball, no temporaries');
    chmodSync(join(out, `${name}.tar.gz`), 0o644);
    await checkImage(t, join(out, `${name}.tar.gz`), name, builder);

    const nc = await ch('ch-builder2tar', ['--nocompress', '-b', builder, tag, out], { root: true });
    t.is(nc.exitCode, 0, nc.stderr);
    t.true(existsSync(join(out, `${name}.tar`)));
    const list = await execa('tar', ['tf', join(out, `${name}.tar`)]);
    t.regex(list.stdout, /^ch\/metadata\.json$/m);
  });
}

needs(test, NOT_ROOT ?? (HOST.podman ? null : 'podman not installed'), { tool: !NOT_ROOT })(
  'ch-builder2tar: unknown image fails cleanly, nothing written', async (t) => {
  const out = join(BASE, 'out-missing');
  mkdirSync(out, { recursive: true });
  const r = await ch('ch-builder2tar', ['-b', 'podman', 'localhost/chtk-no-such-image-xyz', out], { root: true });
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /^ch-builder2tar\[\d+\]: error: podman: can't inspect image localhost\/chtk-no-such-image-xyz/m);
  t.deepEqual(readdirSync(out), []);
  const u = await ch('ch-builder2tar', ['onlyone'], { root: true });
  t.is(u.exitCode, 2);
});

// A fake podman whose export dies half-way, or emits a tar without its end:
// the final name must never appear, and no temporary may stay behind.
for (const [label, exportCmd, msg] of [
  ['dies', 'head -c 2048 /bin/sh; exit 3', /export of img failed|exit 3/],
  ['no-end', `tar -C '${BASE}' -cf - export-src | head -c 1024`, /ended early \(no end-of-archive marker\)/],
]) {
  test(`ch-builder2tar: a failing export (${label}) leaves no output`, async (t) => {
    // What the fake export archives: a file of our own, not one a distribution may lack.
    mkdirSync(join(BASE, 'export-src'), { recursive: true });
    writeFileSync(join(BASE, 'export-src', 'file'), 'x'.repeat(4096));
    const p = fakePath(`export-${label}`, {
      podman: `case "$1" in
  image) echo '[{"Config":{"Env":["A=1"]}}]' ;;
  create) echo c0ffee ;;
  export) ${exportCmd} ;;
  rm) exit 0 ;;
  *) exit 0 ;;
esac`,
    }, ['head', 'tar']);
    const out = join(BASE, `out-fake-${label}`);
    mkdirSync(out, { recursive: true });
    if (isRoot) chownSync(out, testUser().uid, testUser().gid);
    const r = await ch('ch-builder2tar', ['-b', 'podman', 'img', out], { env: { PATH: p } });
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, msg);
    t.deepEqual(readdirSync(out), []);
  });
}

test('ch-builder2tar with a well-behaved fake export: metadata appended, tarball unpacks', async (t) => {
  const p = fakePath('export-ok', {
    podman: `case "$1" in
  image) cat <<'JSON'
[{"Config":{"Env":["A=1","Q='x'"],"Cmd":["/bin/sh"],"WorkingDir":"/w","Labels":{"l":"v"}}}]
JSON
    ;;
  create) echo c0ffee ;;
  export) exec tar -C "${image('busybox')}" -cf - . ;;
  *) exit 0 ;;
esac`,
  }, ['tar', 'cat']);
  const out = join(BASE, 'out-fake-ok');
  mkdirSync(out, { recursive: true });
  if (isRoot) chownSync(out, testUser().uid, testUser().gid);
  const r = await ch('ch-builder2tar', ['-b', 'podman', 'localhost/my/img:1.0', out], { env: { PATH: p } });
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(readdirSync(out), ['localhost%my%img+1.0.tar.gz']);
  const env = await execa('tar', ['-xzOf', join(out, 'localhost%my%img+1.0.tar.gz'), 'ch/environment']);
  t.is(env.stdout, "A=1\nQ=''x''", 'a value in single quotes quoted once more for ch-run');
  const u = await ch('ch-tar2dir', [join(out, 'localhost%my%img+1.0'), out]);
  t.is(u.exitCode, 0, u.stderr);
  t.is(readFileSync(join(out, 'localhost%my%img+1.0/ch/environment'), 'utf8'), "A=1\nQ=''x''\n");
  const m = JSON.parse(readFileSync(join(out, 'localhost%my%img+1.0/ch/metadata.json'), 'utf8'));
  t.deepEqual(m, { Entrypoint: null, Cmd: ['/bin/sh'], Env: ['A=1', "Q='x'"], WorkingDir: '/w', Labels: { l: 'v' }, User: '' });
  const e = await ch('ch-run', ['--set-env', join(out, 'localhost%my%img+1.0'), '--', 'sh', '-c', 'echo "$A|$Q"']);
  t.is(e.stdout.trim(), "1|'x'");
});

// docker is optional everywhere (CI included): skipped where it is not installed.
needs(test, HOST.docker ? null : 'docker not installed')(
  'the real docker, where installed: chosen if its engine works, passed over with the reason if not', async (t) => {
  const works = (await execa('docker', ['info'], { reject: false })).exitCode === 0;
  const env = { PATH: process.env.PATH };
  const r = await ch('ch-build', ['-v', '-n', '-t', 'img', 'ctx'], { root: true, env });
  t.is(r.exitCode, 0, r.stderr);
  if (works) {
    t.is(r.stdout.trim(), 'docker build -t img ctx');
  } else {
    t.regex(r.stderr, /builder docker: `docker info` failed/);
    t.notRegex(r.stdout, /^docker /);
  }
});
