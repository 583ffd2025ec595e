// ch-convert: round trips between directory, SquashFS and tarballs give the
// same tree (modes, symlinks, hard links, contents); bad input is a clear
// error; an existing destination is replaced only if it is the user's own.
// As the unprivileged test user. Into a builder (-o podman), with real
// podman as root (docker's client is here without an engine: only its error
// is checked): the configuration kept, a round trip gives the same tree, a
// failure leaves the target name as it was. From a registry (Debian's
// docker-registry on loopback, an image pushed by skopeo): into every
// format, the same tree ch-pull makes, blobs from ch-pull's cache, clear
// errors, interrupted cleanly; pushing refused.

import test from 'ava';
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { ch, image, isRoot, needs, noFuse, notRoot, PKG, TEST_DIR, unavailable } from './helpers/env.js';
import { ownedByUser, scratch } from './helpers/fixtures.js';
import { addImage, closedPort, connectionCounter, haveTools, push, stallingRelay, startRegistry, until, writeLayout } from './helpers/registry.js';

/** A small tree with what conversions tend to lose. */
async function fixture(t) {
  const dir = await scratch(t, 'cv');
  const src = join(dir, 'src');
  mkdirSync(join(src, 'sub/deep'), { recursive: true });
  writeFileSync(join(src, 'f'), 'file\n');
  linkSync(join(src, 'f'), join(src, 'sub/hard'));
  writeFileSync(join(src, 'sub/deep/sp ace'), 'x'.repeat(70000));
  writeFileSync(join(src, 'exe'), '#!/bin/sh\n');
  symlinkSync('/etc/absolute', join(src, 'abs'));
  symlinkSync('sub/deep', join(src, 'rel'));
  mkdirSync(join(src, 'sticky'));
  mkdirSync(join(src, 'empty'));
  for (const d of ['dev', 'proc', 'sys', 'tmp']) mkdirSync(join(src, d));   // ch-run's mount points: an image
  await ownedByUser(dir);
  // After chown (which can clear some bits): the modes under test.
  chmodSync(join(src, 'f'), 0o640);
  chmodSync(join(src, 'exe'), 0o750);
  chmodSync(join(src, 'sticky'), 0o1777);
  chmodSync(join(src, 'sub/deep'), 0o700);
  return { dir, src };
}

/**
 * The tree under ROOT: path -> type, mode, content (its SHA-256) or target, hard link group. Less what
 * our tools add to an image directory (as Charliecloud's compare-ls leaves out /ch): the marker, checked
 * apart (marked()), and a /ch holding nothing else.
 */
function tree(root) {
  const out = {};
  const inodes = new Map();
  const walk = (rel) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, p));
      const e = { mode: (st.mode & 0o7777).toString(8) };
      if (st.isSymbolicLink()) Object.assign(e, { type: 'link', target: readlinkSync(join(root, p)) });
      else if (st.isDirectory()) e.type = 'dir';
      else {
        const data = createHash('sha256').update(readFileSync(join(root, p))).digest('hex');
        Object.assign(e, { type: 'file', data, nlink: st.nlink });
        inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), p]);
      }
      out[p] = e;
      if (e.type === 'dir') walk(p);
    }
  };
  walk('');
  for (const names of inodes.values()) for (const n of names) out[n].links = names.join(' ');
  delete out[IMAGE_MARKER];
  if (out.ch && !Object.keys(out).some((p) => p.startsWith('ch/'))) delete out.ch;
  return out;
}

const IMAGE_MARKER = 'ch/.ch-image.json';

/** The marker of image directory ROOT, less its creation time; it must name ROOT's inode. */
function marked(root) {
  const m = JSON.parse(readFileSync(join(root, IMAGE_MARKER), 'utf8'));
  delete m.created;
  if (m.root?.ino !== statSync(root).ino) throw new Error(`${root}/${IMAGE_MARKER}: names root inode ${m.root?.ino}, not its own`);
  delete m.root;
  return m;
}

const cv = (args, opts) => ch('ch-convert', args, opts);

test('dir -> sqfs -> tar.zst -> dir gives the same tree; so does every tar flavour', async (t) => {
  const { dir, src } = await fixture(t);
  const want = tree(src);
  t.truthy(want['sub/hard'].links.includes('f'), 'fixture has a hard link');
  let r = await cv([src, join(dir, 'a.sqfs')]);
  t.is(r.exitCode, 0, r.stderr);
  r = await cv([join(dir, 'a.sqfs'), join(dir, 'b.tar.zst')]);
  t.is(r.exitCode, 0, r.stderr);
  r = await cv([join(dir, 'b.tar.zst'), join(dir, 'c')]);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(tree(join(dir, 'c')), want);
  for (const ext of ['.tar', '.tar.gz', '.tar.xz']) {
    r = await cv([src, join(dir, `d${ext}`)]);
    t.is(r.exitCode, 0, r.stderr);
    r = await cv([join(dir, `d${ext}`), join(dir, `e${ext.replaceAll('.', '-')}`)]);
    t.is(r.exitCode, 0, r.stderr);
    t.deepEqual(tree(join(dir, `e${ext.replaceAll('.', '-')}`)), want, ext);
  }
  r = await cv([join(dir, 'b.tar.zst'), join(dir, 'f.sqfs')]);   // tar -> squash, squash -> dir
  t.is(r.exitCode, 0, r.stderr);
  r = await cv([join(dir, 'f.sqfs'), join(dir, 'g')]);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(tree(join(dir, 'g')), want);
  t.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.')), [], 'no temporaries left');
});

// Mounting a .sqfs needs FUSE: skipped, saying why, where the test user can't use it; in CI a failure.
needs(test, noFuse, { tool: true })('a converted .sqfs runs', async (t) => {
  const dir = await scratch(t, 'cvrun');
  const sq = join(dir, 'bb.sqfs');
  const r0 = await cv([image('busybox'), sq]);
  t.is(r0.exitCode, 0, r0.stderr);
  const r = await ch('ch-run', [sq, '--', 'cat', '/ch/metadata.json']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /Entrypoint/);
});

test('an existing destination of the user\'s is replaced, not written into', async (t) => {
  const dir = await scratch(t, 'cvrep');
  const sq = join(dir, 'bb.sqfs');
  let r = await cv([image('busybox'), sq]);
  t.is(r.exitCode, 0, r.stderr);
  r = await cv([sq, join(dir, 'bb')]);
  t.is(r.exitCode, 0, r.stderr);
  // Marks of the old destinations: gone once replaced.
  writeFileSync(join(dir, 'bb/old-marker'), 'from before\n');
  await ownedByUser(join(dir, 'bb/old-marker'));
  r = await cv(['-o', 'dir', sq, join(dir, 'bb')]);   // again: replaces its own directory
  t.is(r.exitCode, 0, r.stderr);
  t.true(existsSync(join(dir, 'bb/bin/busybox')));
  t.false(existsSync(join(dir, 'bb/old-marker')), 'the old directory replaced, not converted into');
  t.deepEqual(tree(join(dir, 'bb')), tree(image('busybox')));
  writeFileSync(sq, 'old .sqfs\n');   // the user's own file (written over, still theirs), as a stale DST
  r = await cv([image('busybox'), sq]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(readFileSync(sq).subarray(0, 4).toString('latin1'), 'hsqs', 'the old file replaced by a real SquashFS');
  t.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.')), [], 'no temporaries left');
});

test('bad input: clear errors, nothing written', async (t) => {
  const { dir, src } = await fixture(t);
  writeFileSync(join(dir, 'junk.sqfs'), 'not squashfs\n'.repeat(100));
  await ownedByUser(dir);
  let r = await cv([join(dir, 'nope'), join(dir, 'x.sqfs')]);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /can't read .*nope: no such file or directory \(ENOENT\)/i);
  r = await cv([join(dir, 'junk.sqfs'), join(dir, 'out')]);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /unsquashfs failed/);
  r = await cv([src, join(dir, 'x.zip')]);
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /x\.zip: unknown extension/);
  r = await cv(['-i', 'floppy', src, join(dir, 'x.tar')]);
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /-i: unknown format 'floppy'/);
  r = await cv([src, '/etc/x.tar']);   // root's directory
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /can't write \/etc\/x\.tar: permission denied/i);
  t.deepEqual(readdirSync(dir).sort(), ['junk.sqfs', 'src']);
});

test('errors that say what to do: a reference-like SRC that is no file; a directory ch-run would refuse', async (t) => {
  const { dir, src } = await fixture(t);
  let r = await cv(['localhost/hello', join(dir, 'x.sqfs')]);
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /^ch-convert\[\d+\]: error: can't read localhost\/hello: no such file or directory \(ENOENT\) \(a registry reference\? say docker:\/\/localhost\/hello, or -i registry; an image of a builder\? say -i podman, -i docker or -i buildah\)$/m);
  r = await cv([join(dir, 'nope'), join(dir, 'x.sqfs')]);
  t.is(r.exitCode, 1, r.stderr);
  t.notRegex(r.stderr, /registry reference|-i podman/, 'no hint for a path');
  // Not an image (no /dev, /proc, /sys, /tmp): ch-run refuses it, so neither a .sqfs nor a directory of it is made.
  const notImage = join(dir, 'data');
  mkdirSync(join(notImage, 'tmp'), { recursive: true });
  writeFileSync(join(notImage, 'f'), 'x\n');
  await ownedByUser(dir);
  for (const out of ['d.sqfs', 'd']) {
    r = await cv([notImage, join(dir, out)]);
    t.is(r.exitCode, 1, `${out}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`^ch-convert\\[\\d+\\]: error: can't use image ${notImage}: it has no /dev directory \\(not an image, or unpacked incompletely\\?\\); ch-run would refuse ${join(dir, out)}, so it is not written$`, 'm'), out);
  }
  const sub = await ch('ch-run', [notImage, '--', '/bin/true']);   // the very check ch-run makes
  t.regex(sub.stderr, new RegExp(`can't use image ${notImage}: it has no /dev directory`));
  r = await cv([notImage, join(dir, 'd.tar')]);   // a tarball: ch-tar2dir makes the mount points
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(readdirSync(dir).sort(), ['d.tar', 'data', 'src']);
  r = await cv([src, join(dir, 'ok.sqfs')]);
  t.is(r.exitCode, 0, r.stderr);
});

needs(test, notRoot && 'needs root (podman runs as root here)')('-i podman, an image podman does not have: said once, in our words', async (t) => {
  const probe = await execa('podman', ['--version'], { reject: false });
  if (probe.exitCode !== 0) return unavailable(t, 'podman', probe.stderr || 'not installed');
  const dir = await scratch(t, 'cvtypo');
  const ref = `localhost/chtk-no-such-image-${process.pid}`;
  const r = await cv(['-i', 'podman', ref, join(dir, 'x.sqfs')], { root: true });
  t.is(r.exitCode, 1, r.stderr);
  t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`^ch-convert\\[\\d+\\]: error: can't read podman image ${ref}: .*image not known \\('podman images' lists those there\\)$`));
  t.notRegex(r.stderr, /ch-builder2tar\[|\/node|Error: /);
  t.deepEqual(readdirSync(dir), []);
});

needs(test, notRoot && 'needs root to make a destination that belongs to someone else')('destination not the user\'s, or a symlink: not replaced, not followed', async (t) => {
  const { dir, src } = await fixture(t);
  const theirs = join(dir, 'theirs.tar');
  writeFileSync(theirs, 'root\'s\n');   // the test runs as root: owned by root
  symlinkSync(theirs, join(dir, 'link.tar'));
  let r = await cv([src, theirs]);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /theirs\.tar: exists and belongs to root/);
  r = await cv([src, join(dir, 'link.tar')]);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /link\.tar: exists as a symlink/);
  t.is(readFileSync(theirs, 'utf8'), 'root\'s\n');
  r = await cv([src, join(dir, 'src.tar')]);
  t.is(r.exitCode, 0, r.stderr);
  // The user's own directory, but not an image one of our tools made (no marker): refused, left as it was.
  const before = tree(src);
  r = await cv([join(dir, 'src.tar'), src]);
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /error: exists but does not appear to be an image: \S*\/src \(not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours: no marker \/ch\/\.ch-image\.json\); not replacing it/);
  t.deepEqual(tree(src), before);
  t.false(existsSync(join(src, 'ch')), 'no marker added');
  // Charliecloud's rule too (ch-convert's dir_out_validate): an empty
  // directory is used, one that looks like an image (bin, dev and usr) is
  // replaced, marker or not, so its scripts keep working.
  const empty = join(dir, 'empty-dst');
  const looks = join(dir, 'looks');
  mkdirSync(empty);
  for (const d of ['bin', 'dev', 'usr', 'old']) mkdirSync(join(looks, d), { recursive: true });
  await ownedByUser(empty);
  await ownedByUser(looks);
  for (const d of [empty, looks]) {
    r = await cv([join(dir, 'src.tar'), d]);
    t.is(r.exitCode, 0, `${d}: ${r.stderr}`);
    t.deepEqual(tree(d), before, d);
    t.is(marked(d).tool, 'ch-convert');
  }
  // An image directory ch-convert made (its marker): replaced.
  for (const i of [1, 2]) {
    r = await cv([join(dir, 'src.tar'), join(dir, 'conv')]);
    t.is(r.exitCode, 0, `${i}: ${r.stderr}`);
    t.deepEqual(tree(join(dir, 'conv')), before);
    t.is(marked(join(dir, 'conv')).tool, 'ch-convert');
  }
  r = await cv([src, join(dir, 'src.tar'), '-o', 'dir']);   // a file where a directory would go: refused
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /src\.tar: exists as a file; not replacing it with a directory/);
});

needs(test, notRoot && 'needs root (podman runs as root here)')('builder image -> .sqfs (through ch-builder2tar), which then runs', async (t) => {
  const probe = await execa('podman', ['--version'], { reject: false });
  if (probe.exitCode !== 0) return unavailable(t, 'podman', probe.stderr || 'not installed');
  const tag = `localhost/ch-convert-test-${process.pid}`;
  const tar = await execa('sh', ['-c', `tar -C "$0" -c . | podman import - "$1"`, image('busybox'), tag], { reject: false });
  if (tar.exitCode !== 0) return unavailable(t, 'podman import', tar.stderr);
  t.teardown(() => execa('podman', ['rmi', '-f', tag], { reject: false }));
  const dir = await scratch(t, 'cvb');
  const sq = join(dir, 'b.sqfs');
  let r = await cv(['-i', 'podman', tag, sq], { root: true });
  t.is(r.exitCode, 0, r.stderr);
  chmodSync(sq, 0o644);
  r = await ch('ch-run', [sq, '--', 'sh', '-c', 'echo ok; stat -c %a /']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'ok\n755', 'root directory 0755 (not the private work directory\'s 0700)');
});

/** The image configuration a fixture's /ch records, and the environment file in ch-run's syntax. */
const META = { Entrypoint: ['/bin/echo', 'a b'], Cmd: ['c', "'d'"], WorkingDir: '/sub', User: '1234:5678',
  Labels: { 'org.example.k': 'v w' } };
const ENVIRONMENT = "A=1\nSPACES=a  b c\nQUOTED='x y'\nLITERAL=/opt/bin:$PATH\nEQ=k=v\n";
const ENV_PARSED = ['A=1', 'SPACES=a  b c', 'QUOTED=x y', 'LITERAL=/opt/bin:$PATH', 'EQ=k=v'];

/** FIXTURE with a /ch/metadata.json and /ch/environment. */
async function withMetadata(t) {
  const f = await fixture(t);
  mkdirSync(join(f.src, 'ch'));
  writeFileSync(join(f.src, 'ch/metadata.json'), JSON.stringify(META));
  writeFileSync(join(f.src, 'ch/environment'), ENVIRONMENT);
  await ownedByUser(f.dir);
  return f;
}

async function podmanConfig(ref) {
  const r = await execa('podman', ['image', 'inspect', '--format', '{{json .Config}}', ref], { reject: false });
  return r.exitCode === 0 ? JSON.parse(r.stdout) : null;
}

async function podmanId(ref) {
  const r = await execa('podman', ['image', 'inspect', '--format', '{{.Id}}', ref], { reject: false });
  return r.exitCode === 0 ? r.stdout.trim() : null;
}

const podmanTest = needs(test.serial, notRoot && 'needs root (podman runs as root here)');

async function havePodman(t) {
  const probe = await execa('podman', ['--version'], { reject: false });
  if (probe.exitCode !== 0) { unavailable(t, 'podman', probe.stderr || 'not installed'); return false; }
  return true;
}

/** No image in podman's storage named like ch-convert's temporaries. */
async function temporaries() {
  const r = await execa('podman', ['images', '--format', '{{.Repository}}'], { reject: false });
  return r.stdout.split('\n').filter((n) => n.includes('ch-convert-tmp-'));
}

podmanTest('dir -> podman -> dir: same tree; ENTRYPOINT, CMD, ENV, WORKDIR, USER, LABEL kept; files root\'s', async (t) => {
  if (!await havePodman(t)) return;
  const { dir, src } = await withMetadata(t);
  const ref = `localhost/ch-convert-out-${process.pid}:v1`;
  t.teardown(() => execa('podman', ['rmi', '-f', ref], { reject: false }));
  let r = await cv(['-o', 'podman', src, ref], { root: true });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`${ref}: written \\(podman\\)`));
  const c = await podmanConfig(ref);
  t.deepEqual({ Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User, Labels: c.Labels, Env: c.Env },
    { ...META, Env: ENV_PARSED });
  t.deepEqual(await temporaries(), [], 'no temporary name left');
  // Owned by root in the builder's image (podman export of a container lists owners).
  r = await execa('sh', ['-c', 'id=$(podman create "$0" /bin/true) && podman export "$id" | tar -tvf - f sub/deep; podman rm "$id" >/dev/null', ref]);
  t.regex(r.stdout, /^-rw-r----- 0\/0 .* f$/m, r.stdout);
  t.regex(r.stdout, /^drwx------ 0\/0 .* sub\/deep\/$/m, r.stdout);
  // And back: the same tree; the same configuration, as ch-builder2tar writes it.
  r = await cv(['-i', 'podman', ref, join(dir, 'back')], { root: true });
  t.is(r.exitCode, 0, r.stderr);
  const want = tree(src), got = tree(join(dir, 'back'));
  for (const x of [want, got]) { delete x['ch/metadata.json']; delete x['ch/environment']; }
  t.deepEqual(got, want);
  const meta = JSON.parse(readFileSync(join(dir, 'back/ch/metadata.json'), 'utf8'));
  t.deepEqual(meta, { ...META, Env: ENV_PARSED });
  const env = readFileSync(join(dir, 'back/ch/environment'), 'utf8').split('\n').filter(Boolean)
    .map((l) => l.replace(/^([^=]*)='(.*)'$/, '$1=$2'));
  t.deepEqual(env, ENV_PARSED);
});

podmanTest('.sqfs and tarball -> podman; a busybox image so made runs under podman with its ENTRYPOINT and CMD', async (t) => {
  if (!await havePodman(t)) return;
  const dir = await scratch(t, 'cvp');
  const sq = join(dir, 'bb.sqfs');
  let r = await cv([image('busybox'), sq]);
  t.is(r.exitCode, 0, r.stderr);
  const ref = `localhost/ch-convert-bb-${process.pid}`;
  t.teardown(() => execa('podman', ['rmi', '-f', ref], { reject: false }));
  r = await cv(['-o', 'podman', sq, ref], { root: true });
  t.is(r.exitCode, 0, r.stderr);
  r = await execa('podman', ['run', '--rm', '--network=none', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=4096:4096',
    ref], { reject: false, all: true });
  t.is(r.exitCode, 0, r.all);
  t.is(r.stdout, 'default cmd', 'ENTRYPOINT /bin/echo with CMD "default cmd"');
  r = await execa('podman', ['run', '--rm', '--network=none', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=4096:4096',
    '--entrypoint', '/bin/sh', ref, '-c', 'pwd; echo $FROM_IMAGE'], { reject: false, all: true });
  t.is(r.stdout, '/tmp\nyes', r.all);
  const tar = join(dir, 'bb.tar.gz');
  r = await cv([image('busybox'), tar]);
  t.is(r.exitCode, 0, r.stderr);
  const first = await podmanId(ref);
  t.teardown(() => execa('podman', ['rmi', '-f', first], { reject: false }));   // untagged once replaced
  r = await cv(['-o', 'podman', tar, ref], { root: true });   // replaces the name
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual((await podmanConfig(ref)).Cmd, ['default', 'cmd']);
});

podmanTest('dir -> buildah (containers-storage, as podman\'s): the configuration kept, no temporary left', async (t) => {
  if (!await havePodman(t)) return;
  if ((await execa('buildah', ['version'], { reject: false })).exitCode !== 0) return unavailable(t, 'buildah', 'not working');
  const { src } = await withMetadata(t);
  const ref = `localhost/ch-convert-buildah-${process.pid}:v1`;
  t.teardown(() => execa('podman', ['rmi', '-f', ref], { reject: false }));
  const r = await cv(['-o', 'buildah', src, ref], { root: true });
  t.is(r.exitCode, 0, r.stderr);
  const c = await podmanConfig(ref);
  t.deepEqual({ Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User, Labels: c.Labels, Env: c.Env },
    { ...META, Env: ENV_PARSED });
  t.deepEqual(await temporaries(), []);
});

podmanTest('-o podman failing (load, then tag): the target name untouched, no temporary left', async (t) => {
  if (!await havePodman(t)) return;
  const { dir, src } = await withMetadata(t);
  const ref = `localhost/ch-convert-atomic-${process.pid}`;
  t.teardown(() => execa('podman', ['rmi', '-f', ref], { reject: false }));
  // The name exists already, on another image: it must stay there.
  let r = await execa('sh', ['-c', 'tar -C "$0" -c . | podman import -q - "$1"', image('busybox'), ref], { reject: false });
  t.is(r.exitCode, 0, r.stderr);
  const before = await podmanId(ref);
  t.teardown(() => execa('podman', ['rmi', '-f', before], { reject: false }));   // untagged once replaced
  // A podman that fails one subcommand and is the real one otherwise.
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const real = (await execa('sh', ['-c', 'command -v podman'])).stdout.trim();
  for (const fail of ['load', 'tag']) {
    writeFileSync(join(bin, 'podman'), `#!/bin/sh\n[ "$1" = ${fail} ] && { echo "injected ${fail} failure" >&2; exit 125; }\nexec ${real} "$@"\n`, { mode: 0o755 });
    r = await cv(['-o', 'podman', src, ref], { root: true, env: { PATH: `${bin}:${process.env.PATH}` } });
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`podman ${fail} failed \\(exit 125\\): injected ${fail} failure`));
    t.is(await podmanId(ref), before, `after a failed ${fail}: ${ref} still the old image`);
    t.deepEqual(await temporaries(), [], `after a failed ${fail}: no temporary name left`);
  }
  r = await cv(['-o', 'podman', src, ref], { root: true });
  t.is(r.exitCode, 0, r.stderr);
  t.not(await podmanId(ref), before, 'replaced once complete');
});

test('-o BUILDER: missing or unusable builder, bad image name: clear errors, exit 1 / 2', async (t) => {
  const { dir, src } = await fixture(t);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));   // ch-convert's #! and, as root, setpriv: found; no builder
  symlinkSync((await execa('sh', ['-c', 'command -v setpriv'])).stdout.trim(), join(bin, 'setpriv'));
  await ownedByUser(dir);
  let r = await cv(['-o', 'podman', src, 'localhost/x'], { env: { PATH: bin } });
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /-o podman: podman unusable: not found/);
  r = await cv(['-o', 'buildah', src, 'localhost/x'], { env: { PATH: bin } });
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /-o buildah: buildah unusable: not found/);
  const docker = await execa('docker', ['info'], { reject: false });
  if (docker.exitCode !== 0) {   // here: a docker client, no engine
    r = await cv(['-o', 'docker', src, 'x']);
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, /-o docker: docker unusable: (not found|`docker info` failed)/);
  } else t.log('docker works here: its missing-engine error not checked');
  for (const bad of ['Upper/case', 'a b', 'x@sha256:' + '0'.repeat(64), 'x:', '/abs']) {
    r = await cv(['-o', 'podman', src, bad]);
    t.is(r.exitCode, 2, `${bad}: ${r.stderr}`);
    t.regex(r.stderr, /is not an image name/);
  }
  t.deepEqual(readdirSync(dir).sort(), ['bin', 'src']);
});

// ---- from a registry ----

const REG_BASE = join(TEST_DIR, 'convert-registry');
const REG_CONFIG = { Env: ['PATH=/bin', 'GREETING=from the registry'], Entrypoint: ['/bin/echo'], Cmd: ['hello from the registry'] };
let registry;   // started by the first test that needs it: {reg, ref, big}

/** The registry, with team/app:v1 (two layers, a whiteout) and big:v1 (one 6 MiB layer); null (test done) if its tools are missing. */
async function needRegistry(t) {
  const missing = haveTools();
  if (missing) { unavailable(t, 'registry tools', missing); return null; }
  registry ??= (async () => {
    rmSync(REG_BASE, { recursive: true, force: true });
    mkdirSync(REG_BASE, { recursive: true });
    chmodSync(REG_BASE, 0o755);
    const reg = await startRegistry(join(REG_BASE, 'registry'));
    const app = join(REG_BASE, 'layout-app');
    const base = [
      { name: 'bin/', type: 'dir' }, { name: 'bin/busybox', data: readFileSync('/bin/busybox'), mode: 0o755 },
      ...['sh', 'cat', 'echo', 'env'].map((a) => ({ name: `bin/${a}`, type: 'symlink', target: 'busybox' })),
      { name: 'etc/', type: 'dir' }, { name: 'etc/motd', data: 'layer 1\n' }, { name: 'etc/gone', data: 'whited out\n' },
      { name: 'bin/hard', type: 'link', target: 'bin/busybox' }, { name: 'secret/', type: 'dir', mode: 0o700 },
    ];
    const top = [{ name: 'etc/', type: 'dir' }, { name: 'etc/motd', data: 'hello from layer 2\n' }, { name: 'etc/.wh.gone' }];
    writeLayout(app, 'v1', [addImage(app, { layers: [base, top], config: REG_CONFIG })]);
    await push(reg, app, 'v1', 'team/app');
    const big = join(REG_BASE, 'layout-big');
    writeLayout(big, 'v1', [addImage(big, { layers: [[{ name: 'big', data: randomBytes(6 << 20) }]] })]);
    await push(reg, big, 'v1', 'big');
    return { reg, ref: `${reg.host}/team/app:v1` };
  })();
  return registry;
}

test.after.always(async () => { await (await registry)?.reg.stop(); });

/** ch-convert as the test user with CH_IMAGE_STORAGE (and no retries: failures come at once). */
const cvPull = (args, storage, opts = {}) => cv(args, { timeout: 120000, ...opts,
  env: { CH_IMAGE_STORAGE: storage, CH_PULL_RETRIES: '0', ...opts.env } });

/** Names in DIR that look like temporaries (or locks). */
const leftovers = (dir) => readdirSync(dir).filter((n) => n.startsWith('.'));

test('registry -> dir, tar.gz, sqfs: the tree ch-pull makes, blobs from its cache', async (t) => {
  const r0 = await needRegistry(t);
  if (!r0) return;
  const dir = await scratch(t, 'cvreg');
  const storage = join(dir, 'storage');
  let r = await ch('ch-pull', [r0.ref, join(dir, 'pulled')], { env: { CH_IMAGE_STORAGE: join(dir, 'pull-storage') } });
  t.is(r.exitCode, 0, r.stderr);
  const want = tree(join(dir, 'pulled'));
  t.is(want['etc/gone'], undefined, 'the whiteout applied');
  t.is(want['bin/hard'].links, 'bin/busybox bin/hard', 'a hard link kept');

  // Into a directory: downloaded once, ch-pull's own install (its marker).
  r = await cvPull([`docker://${r0.ref}`, join(dir, 'img')], storage);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /layer 2\/2 .* downloaded, applied/);
  t.regex(r.stderr, /img: written \(dir\)/);
  // A marker names its creation time and its own image root's inode (marked()): each one's own, the rest must match.
  t.deepEqual(tree(join(dir, 'img')), want);
  t.deepEqual(marked(join(dir, 'img')), marked(join(dir, 'pulled')));
  t.is(marked(join(dir, 'img')).reference, r0.ref);

  // Into a tarball: nothing downloaded; the tarball unpacks to the same tree (less ch-pull's marker).
  r = await cvPull([`docker://${r0.ref}`, join(dir, 'img.tar.gz')], storage);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /layer 1\/2 .* cached, applied/);
  t.notRegex(r.stderr, /downloaded/);
  r = await cv([join(dir, 'img.tar.gz'), join(dir, 'untarred')]);
  t.is(r.exitCode, 0, r.stderr);
  const unmarked = want;
  t.deepEqual(tree(join(dir, 'untarred')), unmarked);
  t.is(marked(join(dir, 'untarred')).tool, 'ch-convert', "a directory output: ch-convert's marker");

  // Into SquashFS, -i registry without the prefix: cached.
  r = await cvPull(['-i', 'registry', r0.ref, join(dir, 'img.sqfs')], storage);
  t.is(r.exitCode, 0, r.stderr);
  t.notRegex(r.stderr, /downloaded/);
  r = await cv([join(dir, 'img.sqfs'), join(dir, 'unsquashed')]);
  t.is(r.exitCode, 0, r.stderr);
  t.deepEqual(tree(join(dir, 'unsquashed')), unmarked);

  // Again into the same directory: replaced (the user's own ch-pull image), from the cache; -q quiet.
  writeFileSync(join(dir, 'img/etc/motd'), 'edited\n');
  r = await cvPull(['-q', `docker://${r0.ref}`, join(dir, 'img')], storage);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stderr, '');
  t.is(readFileSync(join(dir, 'img/etc/motd'), 'utf8'), 'hello from layer 2\n');
  t.deepEqual(leftovers(dir), [], 'no temporary or lock left');
});

needs(test, noFuse, { tool: true })('registry -> sqfs: runs as the test user with the image\'s environment', async (t) => {
  const r0 = await needRegistry(t);
  if (!r0) return;
  const dir = await scratch(t, 'cvregsq');
  let r = await cvPull([`docker://${r0.ref}`, join(dir, 'img.sqfs')], join(dir, 'storage'));
  t.is(r.exitCode, 0, r.stderr);
  r = await ch('ch-run', ['--set-env', join(dir, 'img.sqfs'), '--', '/bin/sh', '-c', 'cat /etc/motd; echo "$GREETING"']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'hello from layer 2\nfrom the registry');
});

podmanTest('registry -> podman: runs under podman with its ENTRYPOINT and CMD', async (t) => {
  if (!await havePodman(t)) return;
  const r0 = await needRegistry(t);
  if (!r0) return;
  const dir = await scratch(t, 'cvregp');
  const ref = `localhost/ch-convert-reg-${process.pid}`;
  t.teardown(() => execa('podman', ['rmi', '-f', ref], { reject: false }));
  // As root (podman's storage here is root's), with root's own blob cache.
  let r = await cv(['-o', 'podman', `docker://${r0.ref}`, ref], { root: true, env: { CH_IMAGE_STORAGE: join(dir, 'root-storage') } });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`${ref}: written \\(podman\\)`));
  r = await execa('podman', ['run', '--rm', '--network=none', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=4096:4096',
    ref], { reject: false, all: true });
  t.is(r.exitCode, 0, r.all);
  t.is(r.stdout, 'hello from the registry');
  t.deepEqual(await temporaries(), []);
});

test('registry errors: a missing tag, an unreachable registry, a bad reference: named, nothing left', async (t) => {
  const r0 = await needRegistry(t);
  if (!r0) return;
  const dir = await scratch(t, 'cvrege');
  const storage = join(dir, 'storage');
  const missing = `${r0.reg.host}/team/app:nope`;
  const down = `127.0.0.1:${await closedPort()}/team/app:v1`;
  for (const dst of ['img', 'img.sqfs', 'img.tar.gz']) {
    let r = await cvPull([`docker://${missing}`, join(dir, dst)], storage);
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`${missing.replaceAll('.', '\\.')}: unknown image or tag`), dst);
    r = await cvPull([`docker://${down}`, join(dir, dst)], storage);
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`${down.replaceAll('.', '\\.')}: can't pull: registry 127\\.0\\.0\\.1:[0-9]+ unreachable: .*ECONNREFUSED`), dst);
    t.deepEqual(readdirSync(dir).filter((n) => n !== 'storage'), [], `${dst}: nothing left`);
  }
  for (const bad of ['docker://Team/App', 'docker://x@sha256:12', 'docker://']) {
    const r = await cvPull([bad, join(dir, 'img')], storage);
    t.is(r.exitCode, 2, `${bad}: ${r.stderr}`);
    t.regex(r.stderr, /image reference '.*'/);
  }
  t.deepEqual(readdirSync(dir).filter((n) => n !== 'storage'), []);
});

test('--help and the man page list the registry format', async (t) => {
  const r = await cv(['--help']);
  t.is(r.exitCode, 0, r.stderr);
  const man = readFileSync(join(PKG, 'dist/man/ch-convert.1'), 'utf8');
  for (const text of [r.stdout, man]) {
    t.regex(text, /input format: dir, tar, squash, docker, podman, buildah,\s+registry/);
    t.regex(text, /^ {2}registry {2}an image in an OCI registry, SRC or DST/m);
    t.regex(text, /a\s+bad registry reference \(a digest as registry DST\)/);
  }
});

test('-o registry and a docker:// DST push (test/push.test.js); registry options without a registry SRC refused', async (t) => {
  const { dir, src } = await fixture(t);
  // Nothing listens on port 9 of loopback: the push is tried (not refused as usage) and fails, named.
  for (const args of [['-o', 'registry', src, '127.0.0.1:9/x:v1'], [src, 'docker://127.0.0.1:9/x:v1']]) {
    const r = await cv(args, { env: { CH_PULL_RETRIES: '0' } });
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, /registry 127\.0\.0\.1:9 unreachable: .*ECONNREFUSED/);
  }
  for (const opt of [['--arch', 'arm64'], ['--platform', 'linux/arm64'], ['--insecure']]) {
    const r = await cv([...opt, src, join(dir, 'x.tar')]);
    t.is(r.exitCode, 2, r.stderr);
    t.regex(r.stderr, new RegExp(`${opt[0]}: only for a registry SRC`));
  }
  t.deepEqual(readdirSync(dir).sort(), ['src']);
});

test('docker:// makes SRC a registry reference; a bare name:tag never does (no connection made)', async (t) => {
  const dir = await scratch(t, 'cvregi');
  const port = await connectionCounter();
  t.teardown(() => port.close());
  const ref = `127.0.0.1:${port.port}/team/app:v1`;
  let r = await cvPull([ref, join(dir, 'img')], join(dir, 'storage'));
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`can't read ${ref.replaceAll('.', '\\.')}: no such file or directory \\(ENOENT\\) \\(a registry reference\\? say docker://`));
  t.is(port.count(), 0, 'no request for a bare name');
  r = await cvPull([`docker://${ref}`, join(dir, 'img')], join(dir, 'storage'));
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`${ref.replaceAll('.', '\\.')}: can't pull: `));
  t.true(port.count() > 0, 'docker:// contacted the registry');
  t.false(existsSync(join(dir, 'img')));
});

test('SIGTERM mid-download: exit 143, DST as it was, no temporary left; the next conversion resumes from the cache', async (t) => {
  const r0 = await needRegistry(t);
  if (!r0) return;
  const dir = await scratch(t, 'cvregs');
  const storage = join(dir, 'storage');
  writeFileSync(join(dir, 'big.sqfs'), 'old\n');
  await ownedByUser(dir);
  for (const dst of ['big.sqfs', 'big']) {
    const relay = await stallingRelay(r0.reg.port, 1 << 20);
    try {
      const p = cvPull([`docker://127.0.0.1:${relay.port}/big:v1`, join(dir, dst)], storage);
      await until('the download to stall', () => relay.stalled && readdirSync(dir).some((n) => n.startsWith(`.${dst}.`)));
      p.kill('SIGTERM');
      const r = await p;
      t.is(r.exitCode, 143, r.stderr);
      t.regex(r.stderr, /interrupted by SIGTERM; nothing written, no temporary left/);
      t.deepEqual(readdirSync(dir).sort(), ['big.sqfs', 'storage'], dst);
      t.is(readFileSync(join(dir, 'big.sqfs'), 'utf8'), 'old\n');
    } finally {
      relay.stop();
    }
  }
  const r = await cvPull([`docker://${r0.reg.host}/big:v1`, join(dir, 'big.sqfs')], storage);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /resumed at/);
  t.true(statSync(join(dir, 'big.sqfs')).size > 1 << 20);
  t.deepEqual(leftovers(dir), []);
});

/**
 * A mksquashfs in DIR/bin (returned) that touches DIR/started, waits for a
 * line on the FIFO DIR/go, then writes "fake" as its output.
 */
async function stalledMksquashfs(dir) {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  await execa('mkfifo', [join(dir, 'go')]);
  writeFileSync(join(bin, 'mksquashfs'), `#!/bin/sh\n[ "$1" = -help ] && exit 0\ntouch "${dir}/started"\nread x < "${dir}/go"\n`
    + 'echo fake > "$2"\n', { mode: 0o755 });
  return bin;
}

test('SIGTERM while a tool runs (dir -> sqfs): the tool is let finish, then nothing placed, exit 143, no temporary left', async (t) => {
  const { dir, src } = await fixture(t);
  // The signal arrives while ch-convert waits on the tool.
  const bin = await stalledMksquashfs(dir);
  writeFileSync(join(dir, 'x.sqfs'), 'old\n');
  await ownedByUser(dir);
  const p = cv([src, join(dir, 'x.sqfs')], { env: { PATH: `${bin}:/usr/bin:/bin` } });
  await until('the tool to start', () => existsSync(join(dir, 'started')));
  p.kill('SIGTERM');
  writeFileSync(join(dir, 'go'), 'go\n');   // let it finish
  const r = await p;
  t.is(r.exitCode, 143, r.stderr);
  t.regex(r.stderr, /interrupted by SIGTERM; nothing written, no temporary left/);
  t.is(readFileSync(join(dir, 'x.sqfs'), 'utf8'), 'old\n');
  t.deepEqual(readdirSync(dir).sort(), ['bin', 'go', 'src', 'started', 'x.sqfs']);
});

test('SIGKILL mid-conversion leaves the stage; the next conversion to DST removes it, and only it', async (t) => {
  const { dir, src } = await fixture(t);
  const bin = await stalledMksquashfs(dir);
  // A stage of the user's for another DST whose name merely starts like x.sqfs's stages.
  const otherDst = '.x.sqfs.ch-convert-y.ch-convert-0123456789ab';
  mkdirSync(join(dir, otherDst));
  writeFileSync(join(dir, otherDst, 'keep'), 'keep\n');
  await ownedByUser(dir);
  // Another user's stage for the same DST (root's: the suite runs as root), with the shape of ours.
  const roots = '.x.sqfs.ch-convert-abcdef012345';
  if (isRoot) {
    mkdirSync(join(dir, roots), { mode: 0o700 });
    writeFileSync(join(dir, roots, 'keep'), 'keep\n');
  }
  const stages = () => readdirSync(dir).filter((n) => n.startsWith('.x.sqfs.ch-convert-') && n !== otherDst && n !== roots);
  const p = cv([src, join(dir, 'x.sqfs')], { env: { PATH: `${bin}:/usr/bin:/bin` } });
  await until('the tool to start', () => existsSync(join(dir, 'started')));
  p.kill('SIGKILL');
  const r = await p;
  t.is(r.signal, 'SIGKILL', r.stderr);
  writeFileSync(join(dir, 'go'), 'go\n');   // the orphaned tool finishes: its output is in the stage
  await until('the orphaned tool to finish', () => stages().some((n) => existsSync(join(dir, n, 'out'))
    && readFileSync(join(dir, n, 'out'), 'utf8') === 'fake\n'));
  const left = stages();
  t.is(left.length, 1, `the killed conversion's stage is left: ${readdirSync(dir)}`);
  t.false(existsSync(join(dir, 'x.sqfs')), 'nothing placed');
  const again = await cv(['-v', src, join(dir, 'x.sqfs')]);
  t.is(again.exitCode, 0, again.stderr);
  t.regex(again.stderr, new RegExp(`removing stale temporary .*${left[0].replaceAll('.', '\\.')}`));
  t.deepEqual(stages(), [], 'the stale stage is gone');
  t.false(existsSync(join(dir, '.x.sqfs.ch-convert.lock')), 'no lock file left');
  t.is(readFileSync(join(dir, 'x.sqfs')).subarray(0, 4).toString('latin1'), 'hsqs', 'a real SquashFS this time');
  t.is(readFileSync(join(dir, otherDst, 'keep'), 'utf8'), 'keep\n', "another DST's stage is left alone");
  if (isRoot) {
    t.regex(again.stderr, new RegExp(`ignoring .*${roots.replaceAll('.', '\\.')}: belongs to root`));
    t.is(readFileSync(join(dir, roots, 'keep'), 'utf8'), 'keep\n', "root's stage is left alone");
  }
});

test('nothing left in $TMPDIR: conversions that succeed, fail, are interrupted (SIGTERM) or killed (SIGKILL)', async (t) => {
  const { dir, src } = await fixture(t);
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp, { mode: 0o700 });
  mkdirSync(join(dir, 'stall'));
  const bin = await stalledMksquashfs(join(dir, 'stall'));
  writeFileSync(join(dir, 'bad.tar'), 'not a tarball\n');
  // What an earlier version's killed run left (no .lock), two days ago: the first conversion removes it.
  mkdirSync(join(tmp, 'ch-convert-Legacy'), { mode: 0o700 });
  await ownedByUser(dir);
  const ago = new Date(Date.now() - 2 * 86_400_000);
  utimesSync(join(tmp, 'ch-convert-Legacy'), ago, ago);
  const env = { TMPDIR: tmp };
  const empty = (what) => t.deepEqual(readdirSync(tmp), [], `${what}: $TMPDIR empty`);
  for (const [from, to] of [[src, 'a.tar'], ['a.tar', 'b.sqfs'], ['b.sqfs', 'c'], ['c', 'd.tar.gz'], ['d.tar.gz', 'c'], ['c', 'b.sqfs']]) {
    const r = await cv([from.startsWith('/') ? from : join(dir, from), join(dir, to)], { env });
    t.is(r.exitCode, 0, `${from} -> ${to}: ${r.stderr}`);
    empty(`${from} -> ${to}`);
  }
  const bad = await cv([join(dir, 'bad.tar'), join(dir, 'e')], { env });
  t.is(bad.exitCode, 1, bad.stderr);
  empty('a failed conversion');
  // Interrupted and killed while mksquashfs runs.
  const stall = join(dir, 'stall');
  for (const sig of ['SIGTERM', 'SIGKILL']) {
    rmSync(join(stall, 'started'), { force: true });
    const p = cv([src, join(dir, `${sig}.sqfs`)], { env: { ...env, PATH: `${bin}:/usr/bin:/bin` } });
    await until('the tool to start', () => existsSync(join(stall, 'started')));
    p.kill(sig);
    writeFileSync(join(stall, 'go'), 'go\n');
    const r = await p;
    t.true(r.exitCode === 143 || r.signal === 'SIGKILL', `${sig}: ${r.exitCode} ${r.signal} ${r.stderr}`);
    // Killed, ch-convert leaves its tool running: let it write its output (into the stage) and end.
    if (sig === 'SIGKILL') await until('the orphaned tool to finish', () => readdirSync(dir).some((n) => n.startsWith(`.${sig}.sqfs.ch-convert-`)
      && existsSync(join(dir, n, 'out')) && readFileSync(join(dir, n, 'out'), 'utf8') === 'fake\n'));
    empty(sig);
  }
});

podmanTest('-o podman works in a directory of $TMPDIR, removed after; one a killed run left is removed by the next, only if ours and not held', async (t) => {
  if (!await havePodman(t)) return;
  const { dir, src } = await fixture(t);
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp, { mode: 0o700 });
  const ref = `localhost/ch-convert-tmp-${process.pid}:v1`;
  t.teardown(() => execa('podman', ['rmi', '-f', ref], { reject: false }));
  // Planted: a dead run's (root's, the user running here: its .lock not held; backdated past the
  // grace period), a live run's (its .lock held), one with no .lock (an earlier version's: removed
  // only once a day old), the test user's, a symlink to a directory of root's named like one.
  const old = new Date(Date.now() - 5 * 60_000);
  const plant = (name, when = old) => {
    mkdirSync(join(tmp, name), { mode: 0o700 });
    writeFileSync(join(tmp, name, 'x'), 'x\n');
    if (name.includes('Dead')) writeFileSync(join(tmp, name, '.lock'), '');
    utimesSync(join(tmp, name), when, when);
  };
  plant('ch-convert-Dead01');
  plant('ch-convert-Live01');
  plant('ch-convert-Young1');
  plant('ch-convert-Older1', new Date(Date.now() - 2 * 86_400_000));
  plant('ch-convert-User01');
  await ownedByUser(join(tmp, 'ch-convert-User01'));
  utimesSync(join(tmp, 'ch-convert-User01'), old, old);
  mkdirSync(join(dir, 'precious'));
  writeFileSync(join(dir, 'precious', 'keep'), 'keep\n');
  symlinkSync(join(dir, 'precious'), join(tmp, 'ch-convert-Link01'));
  const holder = execa('python3', ['-c', 'import fcntl,sys,time; f=open(sys.argv[1],"w"); fcntl.flock(f, fcntl.LOCK_EX); print("held", flush=True); time.sleep(120)',
    join(tmp, 'ch-convert-Live01', '.lock')], { reject: false });
  try {
    await new Promise((res) => holder.stdout.on('data', (d) => { if (String(d).includes('held')) res(); }));
    utimesSync(join(tmp, 'ch-convert-Live01'), old, old);
    const r = await cv(['-v', '-o', 'podman', src, ref], { root: true, env: { TMPDIR: tmp } });
    t.is(r.exitCode, 0, r.stderr);
    t.regex(r.stderr, /removing \S*ch-convert-Dead01: left by a conversion that was killed/);
    t.regex(r.stderr, /removing \S*ch-convert-Older1: left by a conversion that was killed/);
    t.deepEqual(readdirSync(tmp).sort(), ['ch-convert-Link01', 'ch-convert-Live01', 'ch-convert-User01', 'ch-convert-Young1']);
    t.is(readFileSync(join(dir, 'precious', 'keep'), 'utf8'), 'keep\n');
  } finally {
    holder.kill();
    await holder;
  }
});

needs(test, notRoot && 'needs root to plant a lock file of another user')('a lock file for DST of another user\'s is refused at once, never waited on; nothing written', async (t) => {
  const { dir, src } = await fixture(t);
  const lock = join(dir, '.x.sqfs.ch-convert.lock');
  writeFileSync(lock, '');   // root's
  const r = await cv([src, join(dir, 'x.sqfs')], { timeout: 60_000 });
  t.false(r.timedOut, 'must not wait');
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /\.x\.sqfs\.ch-convert\.lock: belongs to root .*; refusing to use or wait on it as a lock/);
  t.is(statSync(lock).uid, 0, 'left as it was');
  t.deepEqual(readdirSync(dir).sort(), ['.x.sqfs.ch-convert.lock', 'src']);
});

test('registry options as ch-pull\'s: credentials from the environment and auth files, --arch and --platform', async (t) => {
  if (!await needRegistry(t)) return;
  const dir = await scratch(t, 'cvrego');
  const storage = join(dir, 'storage');
  const reg = await startRegistry(join(REG_BASE, `registry-auth-${process.pid}`), { auth: 'basic', users: { alice: 'pa:ss word' } });
  t.teardown(() => reg.stop());
  const lay = join(REG_BASE, 'layout-multi');
  rmSync(lay, { recursive: true, force: true });
  writeLayout(lay, 'v1', ['amd64', 'arm64'].map((arch) => addImage(lay, { arch, layers: [[{ name: 'arch', data: arch }]] })));
  await push(reg, lay, 'v1', 'private/multi', { creds: 'alice:pa:ss word' });
  const ref = `docker://${reg.host}/private/multi:v1`;
  let r = await cvPull([ref, join(dir, 'anon.tar')], storage);
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /authentication refused \(no credentials/);
  const creds = { CH_PULL_USER: 'alice', CH_PULL_PASSWORD: 'pa:ss word' };
  r = await cvPull(['--arch', 'arm64', ref, join(dir, 'arm')], storage, { env: creds });
  t.is(r.exitCode, 0, r.stderr);
  t.is(readFileSync(join(dir, 'arm/arch'), 'utf8'), 'arm64');
  r = await cvPull(['--platform', 'linux/amd64', ref, join(dir, 'amd.sqfs')], storage, { env: creds });
  t.is(r.exitCode, 0, r.stderr);
  r = await cv([join(dir, 'amd.sqfs'), join(dir, 'amd')]);
  t.is(readFileSync(join(dir, 'amd/arch'), 'utf8'), 'amd64');
  // Credentials from ~/.docker/config.json, as ch-pull finds them.
  const home = join(dir, 'home');
  mkdirSync(join(home, '.docker'), { recursive: true });
  writeFileSync(join(home, '.docker/config.json'),
    JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('alice:pa:ss word').toString('base64') } } }));
  await ownedByUser(home);
  r = await cvPull(['-a', 'arm64', ref, join(dir, 'arm.tar')], storage, { env: { HOME: home } });
  t.is(r.exitCode, 0, r.stderr);
  r = await cvPull(['--arch', 'arm64', '--platform', 'linux/arm64', ref, join(dir, 'x')], storage, { env: creds });
  t.is(r.exitCode, 2, r.stderr);
  t.deepEqual(readdirSync(dir).sort(), ['amd', 'amd.sqfs', 'arm', 'arm.tar', 'home', 'storage']);
});

test('registry SRC, an existing DST not the user\'s image: refused before any request, left as it was', async (t) => {
  const dir = await scratch(t, 'cvregd');
  const port = await connectionCounter();
  t.teardown(() => port.close());
  const ref = `docker://127.0.0.1:${port.port}/team/app:v1`;
  mkdirSync(join(dir, 'mine'));
  writeFileSync(join(dir, 'mine/keep'), 'keep\n');
  await ownedByUser(dir);
  let r = await cvPull([ref, join(dir, 'mine')], join(dir, 'storage'));
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /mine: exists and was not made by ch-tar2dir, ch-pull, ch-convert or ch-image of yours \(no marker \/ch\/\.ch-image\.json\); not using or replacing it/);
  t.is(readFileSync(join(dir, 'mine/keep'), 'utf8'), 'keep\n');
  if (isRoot) {
    writeFileSync(join(dir, 'roots.sqfs'), 'root\'s\n');   // written by the suite, as root
    r = await cvPull([ref, join(dir, 'roots.sqfs')], join(dir, 'storage'));
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, /roots\.sqfs: exists and belongs to root.*; not replacing it/);
    t.is(readFileSync(join(dir, 'roots.sqfs'), 'utf8'), 'root\'s\n');
  }
  t.is(port.count(), 0, 'no request made');
  t.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.')), []);
});

needs(test, notRoot && 'needs root to squash a directory its owner can\'t read')('.sqfs with a directory its owner can\'t read -> tar, as a user: tar\'s error, nothing left beside DST or in $TMPDIR; -> dir works', async (t) => {
  const { dir, src } = await fixture(t);
  mkdirSync(join(src, 'locked/inner'), { recursive: true });
  writeFileSync(join(src, 'locked/inner/f'), 'x\n');
  // Made as root: the user couldn't read the tree to squash it either.
  chmodSync(join(src, 'locked'), 0);
  const sq = join(dir, 'locked.sqfs');
  await execa('mksquashfs', [src, sq, '-quiet', '-no-progress', '-all-root']);
  chmodSync(join(src, 'locked'), 0o755);
  await ownedByUser(dir);
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  await ownedByUser(tmp);
  const before = readdirSync(dir).sort();
  const r = await cv([sq, join(dir, 'out.tar')], { env: { TMPDIR: tmp } });
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, /error: tar failed \(exit 2\): tar: \.\/locked: Cannot open: Permission denied/);
  t.notRegex(r.stderr, /EACCES|scandir|\n\s+at /, 'no stack, no leftover removal failure');
  t.deepEqual(readdirSync(dir).sort(), before, 'no stage or partial DST left');
  t.deepEqual(readdirSync(tmp), []);
  // Into a directory it works: the mode kept.
  const d = await cv([sq, join(dir, 'out')], { env: { TMPDIR: tmp } });
  t.is(d.exitCode, 0, d.stderr);
  t.is(lstatSync(join(dir, 'out/locked')).mode & 0o777, 0);
  chmodSync(join(dir, 'out/locked'), 0o755);
});
