// ch-tar2dir: hostile and broken tarballs (a corpus generated here), atomicity,
// locking, SIGKILL, and the unpacked image working under ch-run. Everything
// runs as the unprivileged test user.

import test from 'ava';
import { execa } from 'execa';
import { chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { gzipSync } from 'node:zlib';
import { asUser, BIN, ch, image, isRoot, PKG, TEST_DIR, testUser, userEnv } from './helpers/env.js';
import { gzipCases, gzipTestTar } from './helpers/gzip-cases.js';

const BASE = join(TEST_DIR, 'tar2dir');
let n = 0;

// ---- a tiny tar writer, enough to build any hostile header we want ----

function octal(v, len) { return v.toString(8).padStart(len - 1, '0') + '\0'; }

function header({ name, type = '0', size = 0, mode = 0o644, linkname = '', mtime = 1700000000 }) {
  const h = Buffer.alloc(512);
  const nb = Buffer.isBuffer(name) ? name : Buffer.from(name);
  nb.copy(h, 0, 0, Math.min(nb.length, 100));
  h.write(octal(mode, 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  h.write(octal(size, 12), 124, 'latin1');
  h.write(octal(mtime, 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(type, 156, 'latin1');
  Buffer.from(linkname).copy(h, 157, 0, 100);
  h.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

function block(data) {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
}

/** entries: {name, type?, data?, linkname?, mode?, pax?: {k: v}, gnuLong?: Buffer} */
function mktar(entries, { end = true } = {}) {
  const parts = [];
  for (const e of entries) {
    if (e.pax) {
      let body = '';
      for (const [k, v] of Object.entries(e.pax)) {
        const rec = ` ${k}=${v}\n`;
        let len = rec.length + 1;
        while (String(len).length + rec.length !== len) len++;
        body += len + rec;
      }
      const pb = Buffer.from(body, 'latin1');
      parts.push(header({ name: 'PaxHeader', type: 'x', size: pb.length }), block(pb));
    }
    if (e.gnuLong) parts.push(header({ name: '././@LongLink', type: 'L', size: e.gnuLong.length }), block(e.gnuLong));
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    parts.push(header({ ...e, size: data.length }));
    if (data.length) parts.push(block(data));
  }
  if (end) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---- per-test sandbox: DIR (destination), OUT (a sibling that must stay untouched) ----

function sandbox(t) {
  const root = join(BASE, `s${n++}`);
  rmSync(root, { recursive: true, force: true });
  const dir = join(root, 'dir'), out = join(root, 'outside'), tars = join(root, 'tars');
  for (const d of [root, dir, out, tars]) mkdirSync(d, { recursive: true });
  writeFileSync(join(out, 'secret'), 'untouched\n');
  const u = testUser();
  if (isRoot) for (const d of [root, dir, out]) chownSync(d, u.uid, u.gid);
  chmodSync(tars, 0o755);
  return { root, dir, out, tars };
}

function put(sb, file, buf) {
  const p = join(sb.tars, file);
  writeFileSync(p, buf, { mode: 0o644 });
  return p;
}

/** After a refusal: nothing at DIR/NAME, no temporaries, OUT unchanged. */
function assertClean(t, sb, name) {
  t.false(existsSync(join(sb.dir, name)), 'no image left');
  t.deepEqual(readdirSync(sb.dir), [], 'no temporaries or lock left');
  t.deepEqual(readdirSync(sb.out), ['secret']);
  t.is(readFileSync(join(sb.out, 'secret'), 'utf8'), 'untouched\n');
}

test.before(() => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true, mode: 0o755 });
});

// ---- hostile and broken input ----

const hostile = [
  ['dot-dot', (o) => [{ name: 'ok' , data: 'x' }, { name: '../outside/evil', data: 'pwned' }], /'\.\.' in name refused/],
  ['dot-dot-deep', (o) => [{ name: 'a/b/../../../outside/evil', data: 'pwned' }], /'\.\.' in name refused/],
  ['absolute', (o) => [{ name: `${o}/evil`, data: 'pwned' }], /absolute name refused/],
  ['symlink-escape-relative', (o) => [{ name: 'l', type: '2', linkname: '../outside' }, { name: 'l/evil', data: 'pwned' }],
    /l\/evil: refused: path (leaves the destination|goes through a symlink)/],
  ['symlink-escape-absolute', (o) => [{ name: 'l', type: '2', linkname: o }, { name: 'l/evil', data: 'pwned' }],
    /refused: path (leaves the destination|goes through a symlink)/],
  ['symlink-escape-dir-via-mkdir', (o) => [{ name: 'l', type: '2', linkname: o }, { name: 'l/sub/', type: '5', mode: 0o755 }],
    /refused: path (leaves the destination|goes through a symlink)/],
  ['hardlink-outside-dotdot', (o) => [{ name: 'h', type: '1', linkname: '../outside/secret' }], /'\.\.' in hardlink target refused/],
  ['hardlink-outside-absolute', (o) => [{ name: 'h', type: '1', linkname: `${o}/secret` }], /absolute hardlink target refused/],
  ['hardlink-through-symlink', (o) => [{ name: 'l', type: '2', linkname: o }, { name: 'h', type: '1', linkname: 'l/secret' }],
    /refused: path (leaves the destination|goes through a symlink)/],
  ['nul-in-pax-name', (o) => [{ name: 'x', pax: { path: 'a\0b' }, data: 'x' }], /name contains a NUL byte/],
  ['nul-in-gnu-longname', (o) => [{ name: 'x', gnuLong: Buffer.from('abc\0def\0'), data: 'x' }], /name contains a NUL byte/],
  ['overlong-name', (o) => [{ name: 'x', gnuLong: Buffer.from('d/'.repeat(2100) + 'f\0'), data: 'x' }], /name too long/],
  ['overlong-component', (o) => [{ name: 'x', pax: { path: 'a'.repeat(300) }, data: 'x' }], /name component too long/],
];

const MODES = { '': {}, ' (openat fallback)': { CH_TAR2DIR_OPENAT2: '0' } };

for (const [label, entries, msg] of hostile) {
  for (const [mode, env] of Object.entries(MODES)) {
    test(`refuses hostile tarball: ${label}${mode}`, async (t) => {
      const sb = sandbox(t);
      const tb = put(sb, `${label}.tar`, mktar(entries(sb.out)));
      const r = await ch('ch-tar2dir', [tb, sb.dir], { env });
      t.is(r.exitCode, 1, r.stderr);
      t.regex(r.stderr, /^ch-tar2dir\[\d+\]: error: /m);
      t.regex(r.stderr, msg);
      // openat2 resolves the symlink and finds it leaving; the fallback refuses any symlink.
      if (msg.source.includes('goes through'))
        t.regex(r.stderr, env.CH_TAR2DIR_OPENAT2 === '0' ? /goes through a symlink/ : /leaves the destination/);
      assertClean(t, sb, label);
    });
  }
}

test('a file entry replaces a symlink pointing outside instead of writing through it', async (t) => {
  const sb = sandbox(t);
  const tb = put(sb, 'through.tar', mktar([
    { name: 's', type: '2', linkname: `${sb.out}/secret` },
    { name: 's', data: 'mine\n' },
    { name: 'h', type: '1', linkname: 's' },
    { name: 'h', data: 'replaced\n' },
  ]));
  const r = await ch('ch-tar2dir', [tb, sb.dir]);
  t.is(r.exitCode, 0, r.stderr);
  const img = join(sb.dir, 'through');
  t.true(lstatSync(join(img, 's')).isFile());
  t.is(readFileSync(join(img, 's'), 'utf8'), 'mine\n');
  t.is(readFileSync(join(img, 'h'), 'utf8'), 'replaced\n');
  t.is(readFileSync(join(sb.out, 'secret'), 'utf8'), 'untouched\n');
});

function validTar() {
  return mktar([
    { name: 'etc/', type: '5', mode: 0o755 },
    { name: 'etc/os-release', data: 'ID=hostiletest\n' },
    { name: 'ro/', type: '5', mode: 0o555 },
    { name: 'ro/file', data: 'y'.repeat(100000), mode: 0o444 },
    { name: 'bin/su', data: 'setuid?', mode: 0o4755 },
    { name: 'dev/null', type: '3' }, { name: 'dev/sda', type: '4' }, { name: 'run/fifo', type: '6' },
    { name: 'abs-link', type: '2', linkname: '/etc/os-release' },
    { name: 'hard', type: '1', linkname: 'etc/os-release' },
  ]);
}

test('broken input: truncated tar, truncated gzip, corrupt gzip, garbage, empty', async (t) => {
  const good = validTar();
  const gz = gzipSync(good);
  const corrupt = Buffer.from(gz);
  for (let i = 40; i < 60; i++) corrupt[i] ^= 0x5a;
  const cases = [
    ['trunc-data.tar', good.subarray(0, 512 * 4 + 300), /truncated archive/],
    ['no-end.tar', good.subarray(0, good.length - 1024), /truncated archive: no end-of-archive marker/],
    ['trunc.tar.gz', gz.subarray(0, Math.floor(gz.length / 2)), /truncated gzip data/],
    ['corrupt.tar.gz', corrupt, /corrupt gzip data|corrupt archive/],
    ['garbage.tar', Buffer.from('this is not a tarball at all\n'.repeat(40)), /: not a tar archive \(no tar header at its start\)$/m],
    ['text.tar', Buffer.from('hello\n'), /: not a tar archive \(shorter than one tar header\)$/m],
    ['text-gz.tar.gz', gzipSync(Buffer.from('hello\n')), /: not a tar archive \(shorter than one tar header\)$/m],
    ['trunc-header.tar', good.subarray(0, 300), /truncated archive: ends inside a header/],
    ['bad-second.tar', Buffer.concat([good.subarray(0, 512), Buffer.alloc(512, 0x41), good.subarray(1024)]),
      /corrupt archive: header checksum mismatch at offset 512 \(not a tar file, or damaged\)/],
    ['empty.tar', Buffer.alloc(0), /truncated archive/],
  ];
  for (const [file, buf, msg] of cases) {
    const sb = sandbox(t);
    const tb = put(sb, file, buf);
    const r = await ch('ch-tar2dir', [tb, sb.dir]);
    t.is(r.exitCode, 1, `${file}: ${r.stderr}`);
    t.regex(r.stderr, msg, file);
    assertClean(t, sb, file.replace(/\.tar(\.gz)?$/, ''));
  }
});

test('gzip: members at odd offsets, an empty member, trailing bytes unpack; bad CRC, length, data or truncation refused', async (t) => {
  // The same cases build-variants.test.js runs on the zlib build and the gzip program.
  const tar = gzipTestTar(mktar);
  // And with the decoder on a thread of its own (CH_TAR2DIR_DECODE_THREAD=1, native/tar/threaded.cc).
  const cases = gzipCases(tar).flatMap(([name, buf, want]) => [[name, buf, want, '0'], [`${name}-threaded`, buf, want, '1']]);
  for (const [name, buf, want, thread] of cases) {
    const sb = sandbox(t);
    const r = await ch('ch-tar2dir', [put(sb, `${name}.tar.gz`, buf), sb.dir], { env: { CH_TAR2DIR_DECODE_THREAD: thread } });
    if (want === 'ok') {
      t.is(r.exitCode, 0, `${name}: ${r.stderr}`);
      t.is(statSync(join(sb.dir, name, 'random')).size, 3 << 20, name);
      t.is(readFileSync(join(sb.dir, name, 'text'), 'utf8'), 'line of text\n'.repeat(100000), name);
    } else {
      t.is(r.exitCode, 1, `${name}: ${r.stderr}`);
      t.regex(r.stderr, want, name);
      assertClean(t, sb, name);
    }
  }
});

test('the decoder gets a thread of its own where two CPUs may be used, unless CH_TAR2DIR_DECODE_THREAD says', async (t) => {
  const { decodeThread } = await import(join(PKG, 'dist', 'tar', 'native.js'));
  t.true(decodeThread({ CH_TAR2DIR_DECODE_THREAD: '1' }));
  t.false(decodeThread({ CH_TAR2DIR_DECODE_THREAD: '0' }));
  t.is(decodeThread({}), availableParallelism() >= 2);
  // On one CPU (as a one-CPU Slurm task is bound), by default and forced: the same tree.
  const tar = mktar([{ name: 'one-cpu/', type: 'dir' }, { name: 'one-cpu/text', data: 'x\n'.repeat(300000) }]);
  for (const thread of [undefined, '1']) {
    const sb = sandbox(t);
    const r = await execa('taskset', ['-c', '0', ...asUser(), join(BIN, 'ch-tar2dir'), put(sb, 'one-cpu.tar.gz', gzipSync(tar)), sb.dir],
      { reject: false, extendEnv: false, cwd: '/', env: userEnv(undefined, thread ? { CH_TAR2DIR_DECODE_THREAD: thread } : {}) });
    t.is(r.exitCode, 0, r.stderr);
    t.is(readFileSync(join(sb.dir, 'one-cpu', 'text'), 'utf8'), 'x\n'.repeat(300000));
  }
});

test('gzip: at most 16 MiB decoded past the end-of-archive marker (a bomb there costs no more)', async (t) => {
  // 32 MiB of zeros after the tar, then a broken member: past the bound, so never reached.
  const tar = mktar([{ name: 'a', data: 'x\n' }, { name: 'b', data: 'y\n' }]);
  const buf = Buffer.concat([gzipSync(Buffer.concat([tar, Buffer.alloc(32 << 20)])), Buffer.from([0x1f, 0x8b, 0x63, 0, 0, 0, 0, 0, 0, 3])]);
  const sb = sandbox(t);
  const r = await ch('ch-tar2dir', [put(sb, 'bomb.tar.gz', buf), sb.dir]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(readFileSync(join(sb.dir, 'bomb', 'a'), 'utf8'), 'x\n');
});

test('a SquashFS image given as a tarball: said so, with what to do instead', async (t) => {
  const sb = sandbox(t);
  const src = join(sb.root, 'src');
  mkdirSync(join(src, 'etc'), { recursive: true });
  writeFileSync(join(src, 'etc/os-release'), 'ID=x\n');
  for (const name of ['img.sqfs', 'img2.tar']) {   // whatever its name
    const sq = join(sb.tars, name);
    await execa('mksquashfs', [src, sq, '-noappend', '-quiet', '-no-progress']);
    chmodSync(sq, 0o644);
    const r = await ch('ch-tar2dir', [sq, sb.dir]);
    t.is(r.exitCode, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`^ch-tar2dir\\[\\d+\\]: error: ${sq}: a SquashFS image, not a tarball: run it directly with ch-run, or ch-convert it$`, 'm'));
    assertClean(t, sb, name.replace(/\..*/, ''));
  }
});

test('devices skipped and counted; modes made safe; directories user-writable; mount points made', async (t) => {
  const sb = sandbox(t);
  const tb = put(sb, 'img.tar.gz', gzipSync(validTar()));
  const r = await ch('ch-tar2dir', [tb.replace(/\.tar\.gz$/, ''), sb.dir]);   // extension omitted
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /skipped 3 device node\(s\)\/fifo\(s\)/);
  const img = join(sb.dir, 'img');
  t.false(existsSync(join(img, 'dev/null')));
  t.is(statSync(join(img, 'ro')).mode & 0o777, 0o755);
  t.is(statSync(join(img, 'ro/file')).mode & 0o777, 0o444);
  t.is(statSync(join(img, 'bin/su')).mode & 0o7777, 0o755, 'setuid bit dropped');
  t.is(lstatSync(join(img, 'abs-link')).isSymbolicLink() && readFileSync(join(img, 'hard'), 'utf8'), 'ID=hostiletest\n');
  t.is(statSync(join(img, 'hard')).ino, statSync(join(img, 'etc/os-release')).ino);
  for (const d of ['dev', 'proc', 'sys', 'tmp', 'home', 'mnt', 'mnt/0', 'mnt/9', 'var/spool/slurmd'])
    t.true(statSync(join(img, d)).isDirectory(), d);
  for (const f of ['etc/hosts', 'etc/resolv.conf', 'etc/passwd', 'etc/group']) t.true(statSync(join(img, f)).isFile(), f);
  // The user can delete the whole image.
  const argv = [...asUser(), 'rm', '-rf', img];
  const rm = await execa(argv[0], argv.slice(1), { reject: false });
  t.is(rm.exitCode, 0, rm.stderr);
});

test('extension omitted with more than one tarball of that name: refused as ambiguous, naming each; nothing written', async (t) => {
  const sb = sandbox(t);
  const plain = put(sb, 'amb.tar', validTar());
  put(sb, 'amb.tar.gz', gzipSync(validTar()));
  const r = await ch('ch-tar2dir', [join(sb.tars, 'amb'), sb.dir]);
  t.is(r.exitCode, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`^ch-tar2dir\\[\\d+\\]: error: ${join(sb.tars, 'amb')}: ambiguous: both ${plain}\\.gz and ${plain} exist; name the one to unpack$`, 'm'));
  assertClean(t, sb, 'amb');
  await execa('zstd', ['-q', '-k', plain]);
  const three = await ch('ch-tar2dir', [join(sb.tars, 'amb'), sb.dir]);
  t.is(three.exitCode, 1, three.stderr);
  t.regex(three.stderr, new RegExp(`ambiguous: ${plain}\\.gz and ${plain}\\.zst and ${plain} exist`));
  assertClean(t, sb, 'amb');
  // Named in full, each is fine.
  const one = await ch('ch-tar2dir', [`${plain}.gz`, sb.dir]);
  t.is(one.exitCode, 0, one.stderr);
});

test('xz and zstd tarballs, compression found by content', async (t) => {
  const sb = sandbox(t);
  const plain = put(sb, 'c.tar', validTar());
  await execa('xz', ['-k', '-T1', plain]);
  await execa('zstd', ['-q', '-k', plain]);
  chmodSync(`${plain}.xz`, 0o644); chmodSync(`${plain}.zst`, 0o644);
  for (const ext of ['.tar.xz', '.tar.zst']) {
    const r = await ch('ch-tar2dir', ['-v', join(sb.tars, `c${ext}`), sb.dir, '--force']);
    t.is(r.exitCode, 0, r.stderr);
    t.is(readFileSync(join(sb.dir, 'c/etc/os-release'), 'utf8'), 'ID=hostiletest\n');
  }
});

test('usage errors exit 2; --help documents exit codes', async (t) => {
  const u = await ch('ch-tar2dir', ['onlyone']);
  t.is(u.exitCode, 2);
  t.regex(u.stderr, /expected TARBALL and DIR/);
  const b = await ch('ch-tar2dir', ['--bogus', 'a', 'b']);
  t.is(b.exitCode, 2);
  const h = await ch('ch-tar2dir', ['--help']);
  t.is(h.exitCode, 0);
  t.regex(h.stdout, /Exit status:[\s\S]*0 {2}image unpacked[\s\S]*1 {2}failure[\s\S]*2 {2}usage/);
  const m = await ch('ch-tar2dir', ['/nonexistent/x.tar', '/tmp']);
  t.is(m.exitCode, 1);
  t.regex(m.stderr, /can't find tarball.*\(ENOENT\)/);
});

// ---- the real image: busybox, single top-level directory, ch-run ----

async function busyboxTarball(sb, name = 'busybox') {
  const p = join(sb.tars, `${name}.tar.gz`);
  // Single top-level directory ("busybox/..."), as `tar -C img -czf x busybox` gives.
  await execa('tar', ['-C', join(image('busybox'), '..'), '--transform', `s,^busybox,${name},`, '-czf', p, 'busybox']);
  chmodSync(p, 0o644);
  return p;
}

test('busybox image: top-level dir unwrapped, runs under ch-run, --set-env reads /ch/environment', async (t) => {
  const sb = sandbox(t);
  const tb = await busyboxTarball(sb);
  const r = await ch('ch-tar2dir', [tb, sb.dir]);
  t.is(r.exitCode, 0, r.stderr);
  const img = join(sb.dir, 'busybox');
  t.true(existsSync(join(img, 'bin/busybox')), 'contents moved up');
  t.true(existsSync(join(img, 'ch/environment')));
  t.true(existsSync(join(img, 'ch/.ch-image.json')));
  const run = await ch('ch-run', [img, '--', 'cat', '/etc/os-release']);
  t.is(run.exitCode, 0, run.stderr);
  t.regex(run.stdout, /busybox test image/);
  const env = await ch('ch-run', ['--set-env', img, '--', 'sh', '-c', 'echo $FROM_IMAGE']);
  t.is(env.exitCode, 0, env.stderr);
  t.is(env.stdout.trim(), 'yes');
});

test('an existing DIR/NAME not made by ch-tar2dir is refused and left alone; ours is replaced', async (t) => {
  const sb = sandbox(t);
  const tb = await busyboxTarball(sb, 'mine');
  mkdirSync(join(sb.dir, 'mine'));
  writeFileSync(join(sb.dir, 'mine', 'precious'), 'keep');
  if (isRoot) chownSync(join(sb.dir, 'mine'), testUser().uid, testUser().gid);
  const r = await ch('ch-tar2dir', [tb, sb.dir]);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /exists and was not made by ch-tar2dir/);
  t.is(readFileSync(join(sb.dir, 'mine', 'precious'), 'utf8'), 'keep');
  rmSync(join(sb.dir, 'mine'), { recursive: true });
  t.is((await ch('ch-tar2dir', [tb, sb.dir])).exitCode, 0);
  const again = await ch('ch-tar2dir', [tb, sb.dir]);
  t.is(again.exitCode, 0);
  t.regex(again.stderr, /up to date/);
  // Something the user added to their image: gone with the old image.
  writeFileSync(join(sb.dir, 'mine', 'scratch'), 'x');
  if (isRoot) chownSync(join(sb.dir, 'mine', 'scratch'), testUser().uid, testUser().gid);
  const forced = await ch('ch-tar2dir', ['--force', tb, sb.dir]);
  t.is(forced.exitCode, 0, forced.stderr);
  t.false(existsSync(join(sb.dir, 'mine', 'scratch')), 'replaced by a fresh image');
  t.deepEqual(readdirSync(sb.dir).sort(), ['mine']);
});

// A tarball big enough that extraction takes a while: the Debian image if
// setup made one, else a synthetic tree.
async function bigTarball(sb) {
  const p = join(sb.tars, 'big.tar.gz');
  let src;
  try { src = image('debian'); } catch { src = null; }
  if (src) {
    await execa('sh', ['-c', `tar -C '${src}' -cf - . | gzip -1 > '${p}'`]);
  } else {
    const tree = join(sb.root, 'tree');
    for (let d = 0; d < 60; d++) {
      mkdirSync(join(tree, `d${d}`), { recursive: true });
      for (let f = 0; f < 50; f++) writeFileSync(join(tree, `d${d}`, `f${f}`), Buffer.alloc(40000, d + f));
    }
    await execa('sh', ['-c', `tar -C '${tree}' -cf - . | gzip -1 > '${p}'`]);
  }
  chmodSync(p, 0o644);
  return p;
}

test('8 concurrent unpackers of the same tarball: all succeed, one extraction', async (t) => {
  const sb = sandbox(t);
  const tb = await bigTarball(sb);
  const rs = await Promise.all(Array.from({ length: 8 }, () => ch('ch-tar2dir', [tb, sb.dir])));
  for (const r of rs) t.is(r.exitCode, 0, r.stderr);
  t.is(rs.filter((r) => /unpacked \d+ files/.test(r.stderr)).length, 1, 'exactly one extraction');
  t.is(rs.filter((r) => /up to date/.test(r.stderr)).length, 7);
  t.deepEqual(readdirSync(sb.dir).sort(), ['big']);
  t.true(existsSync(join(sb.dir, 'big/ch/.ch-image.json')));
});

// ---- signals and waiting: the signal must land mid-extraction, so the
// extractor is caught in the act (its temporary has content) and stopped
// (SIGSTOP) while that is checked; only then is the signal sent. ----

/** Poll PRED until it holds; fail naming WHAT after MS (never wait forever). */
async function waitFor(pred, what, ms = 120000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 5));
  }
}

function procState(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).split(' ')[0];
  } catch { return null; }
}

/** The temporary of NAME in DIR, once it holds something. */
function tmpWithContent(dir, name) {
  const tmp = readdirSync(dir).find((e) => e.startsWith(`.${name}.ch-tmp.`));
  try { return tmp && readdirSync(join(dir, tmp)).length > 0 ? tmp : null; } catch { return null; }
}

/**
 * Wait until the ch-tar2dir run P is extracting NAME into DIR, then stop it
 * and check it is stopped mid-way: temporary with content, no DIR/NAME yet.
 * The caller signals it, then sends SIGCONT (a signal other than SIGKILL is
 * handled once it runs again).
 */
async function stopMidExtraction(t, p, dir, name) {
  await waitFor(() => tmpWithContent(dir, name) || p.exitCode !== null, `${name} extraction to start`);
  t.is(p.exitCode, null, 'still running when caught extracting');
  process.kill(p.pid, 'SIGSTOP');   // setpriv execs: p.pid is ch-tar2dir's
  await waitFor(() => procState(p.pid) === 'T', 'the extractor to stop');
  t.truthy(tmpWithContent(dir, name), 'stopped with a partial temporary');
  t.false(existsSync(join(dir, name)), 'stopped before the image is in place');
}

test('SIGKILL mid-extraction leaves nothing that looks finished; the next run cleans up and succeeds', async (t) => {
  const sb = sandbox(t);
  const tb = await bigTarball(sb);
  const p = ch('ch-tar2dir', [tb, sb.dir]);
  await stopMidExtraction(t, p, sb.dir, 'big');
  process.kill(p.pid, 'SIGKILL');
  const r = await p;
  t.is(r.signal, 'SIGKILL');
  t.false(existsSync(join(sb.dir, 'big')), 'no image at DIR/NAME');
  t.true(readdirSync(sb.dir).some((e) => e.startsWith('.big.ch-tmp.')), 'partial temporary left behind');
  const again = await ch('ch-tar2dir', ['-v', tb, sb.dir]);
  t.is(again.exitCode, 0, again.stderr);
  t.regex(again.stderr, /removing stale temporary/);
  t.deepEqual(readdirSync(sb.dir).sort(), ['big']);
});

test('a run waiting for the lock takes over when the holder is SIGKILLed', async (t) => {
  const sb = sandbox(t);
  const tb = await bigTarball(sb);
  const holder = ch('ch-tar2dir', [tb, sb.dir]);
  await stopMidExtraction(t, holder, sb.dir, 'big');
  // The second run says when it starts waiting (-v); collect its stderr as it comes.
  const waiter = ch('ch-tar2dir', ['-v', tb, sb.dir]);
  let err = '';
  waiter.stderr.on('data', (b) => { err += b; });
  await waitFor(() => /waiting for another ch-tar2dir unpacking big/.test(err) || waiter.exitCode !== null,
    'the second run to wait for the lock');
  t.is(waiter.exitCode, null, `second run waiting: ${err}`);
  process.kill(holder.pid, 'SIGKILL');
  t.is((await holder).signal, 'SIGKILL');
  const r = await waiter;
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /removing stale temporary/);
  t.regex(r.stderr, /unpacked \d+ files/, 'the waiter extracted the image itself');
  t.deepEqual(readdirSync(sb.dir).sort(), ['big'], 'no temporary, no lock file left');
  t.true(existsSync(join(sb.dir, 'big/ch/.ch-image.json')));
});

for (const [sig, num] of [['SIGTERM', 15], ['SIGINT', 2], ['SIGHUP', 1]]) {
  test(`${sig} mid-extraction: the extractor stops, the temporary is removed, exit 128+${num}`, async (t) => {
    const sb = sandbox(t);
    const tb = await bigTarball(sb);
    const p = ch('ch-tar2dir', [tb, sb.dir]);
    await stopMidExtraction(t, p, sb.dir, 'big');
    process.kill(p.pid, sig);
    process.kill(p.pid, 'SIGCONT');
    const r = await p;
    // Outside extraction ch-tar2dir does not catch these: death by the
    // signal, not exit 128+N, would show that it landed too late.
    t.is(r.exitCode, 128 + num, `${r.signal ?? ''} ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`interrupted by ${sig}; nothing left behind`));
    t.deepEqual(readdirSync(sb.dir), []);
  });
}

test('a changed tarball at the same path is re-extracted; an unchanged one is not', async (t) => {
  const sb = sandbox(t);
  const tb = join(sb.tars, 'chg.tar');
  const version = (id) => mktar([{ name: 'bin/', type: '5', mode: 0o755 }, { name: 'etc/', type: '5', mode: 0o755 },
    { name: 'etc/os-release', data: `ID=${id}\n` }]);
  const unpack = async (want, what) => {
    const r = await ch('ch-tar2dir', [tb, sb.dir]);
    t.is(r.exitCode, 0, r.stderr);
    t.is(readFileSync(join(sb.dir, 'chg/etc/os-release'), 'utf8'), `ID=${want}\n`, what);
    t.deepEqual(readdirSync(sb.dir), ['chg']);
    return r.stderr;
  };
  writeFileSync(tb, version('one'), { mode: 0o644 });
  t.regex(await unpack('one', 'first unpack'), /unpacked/);
  t.regex(await unpack('one', 'unchanged'), /up to date/);
  // Rewritten in place (same inode, same size), only the content and mtime differ.
  writeFileSync(tb, version('two'));
  utimesSync(tb, 1700000000, 1700000000);
  t.regex(await unpack('two', 'rewritten in place'), /unpacked/);
  // Replaced by rename (as a builder writing a new tarball does): same size, same mtime, new inode.
  writeFileSync(`${tb}.new`, version('thr'), { mode: 0o644 });
  utimesSync(`${tb}.new`, 1700000000, 1700000000);
  renameSync(`${tb}.new`, tb);
  t.regex(await unpack('thr', 'replaced by rename'), /unpacked/);
  t.regex(await unpack('thr', 'unchanged again'), /up to date/);
});

test("tarball names giving an image name '.' or '..' are refused, nothing written", async (t) => {
  for (const file of ['..tar', '...tar', '..tar.gz', '...tgz']) {
    const sb = sandbox(t);
    const tb = put(sb, file, validTar());
    // If DIR's parent were an image of ours, '...tar' would replace it: make it one.
    mkdirSync(join(sb.root, 'ch'));
    writeFileSync(join(sb.root, 'ch/.ch-image.json'), JSON.stringify({ tool: 'ch-tar2dir', source: {} }));
    const r = await ch('ch-tar2dir', [tb, sb.dir]);
    t.is(r.exitCode, 1, `${file}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`^ch-tar2dir\\[\\d+\\]: error: ${file.replaceAll('.', '\\.')}: image name would be '\\.\\.?'`, 'm'));
    t.deepEqual(readdirSync(sb.dir), [], `${file}: nothing in DIR`);
    t.deepEqual(readdirSync(sb.root).sort(), ['ch', 'dir', 'outside', 'tars'], `${file}: nothing beside DIR`);
    t.true(existsSync(join(sb.root, 'ch/.ch-image.json')), `${file}: DIR's parent untouched`);
  }
});

// What ch-tar2dir adds to an image: mount points (lib/image/layout.ts's
// MOUNT_DIRS: /run is where ch-run mounts a tmpfs for what --gpu and
// --device inject, lib/devices/inject.ts), the files ch-run binds
// over, its marker. Paths relative to the image root. A Debian tree has /run
// already; the synthetic tree (no Debian image: a user's run on a fresh
// machine) gets it from ch-tar2dir, in both the openat2 and the fallback walk.
const ADDED = new Set(['dev', 'proc', 'sys', 'tmp', 'home', 'mnt', 'etc', 'ch', 'run', 'var', 'var/spool', 'var/spool/slurmd',
  ...Array.from({ length: 10 }, (_, i) => `mnt/${i}`),
  'etc/hosts', 'etc/resolv.conf', 'etc/passwd', 'etc/group', 'ch/.ch-image.json']);

/**
 * Lines of `diff -r GNU IMG` other than "Only in IMG...: X" for an X that
 * ch-tar2dir adds. Matched by exact path, not by pattern: TEST_DIR itself
 * may contain /var/, /etc/ or /ch (the default is /var/tmp/...).
 */
function unexpectedDiffs(out, img) {
  return out.split('\n').filter((l) => {
    if (!l) return false;
    const m = /^Only in (.*): (.*)$/.exec(l);
    if (!m) return true;
    const [, where, entry] = m;
    if (where !== img && !where.startsWith(`${img}/`)) return true;   // missing from the image
    return !ADDED.has(join(where.slice(img.length), entry).replace(/^\//, ''));
  });
}

test('the diff filter keeps what an extractor lost or added', (t) => {
  const img = '/var/tmp/ch-test/tar2dir/s1/dir/big', gnu = '/var/tmp/ch-test/tar2dir/s1/gnu';
  t.deepEqual(unexpectedDiffs(`Only in ${img}: ch\nOnly in ${img}: run\nOnly in ${img}/mnt: 3\nOnly in ${img}/var/spool: slurmd\n`, img), []);
  for (const l of [`Only in ${gnu}/var/lib: dpkg`, `Only in ${gnu}/etc: passwd`, `Only in ${gnu}: mnt`, `Only in ${img}/run: lock`,
    `Only in ${img}/usr: evil`, `Only in ${img}/var: lib`, `Files ${gnu}/a and ${img}/a differ`])
    t.deepEqual(unexpectedDiffs(l, img), [l]);
});

test('the openat2 path and the openat fallback give the same tree as GNU tar', async (t) => {
  const sb = sandbox(t);
  const tb = await bigTarball(sb);
  const gnu = join(sb.root, 'gnu');
  mkdirSync(gnu);
  // GNU tar leaves out exactly what ch-tar2dir skips: device nodes and fifos
  // (which only root could make anyway), by exact name.
  const skip = join(sb.root, 'devices.txt');
  await execa('python3', ['-c', 'import sys, tarfile\nfor m in tarfile.open(sys.argv[1]):\n'
    + '  if m.ischr() or m.isblk() or m.isfifo(): print(m.name)', tb], { stdout: { file: skip } });
  await execa('tar', ['--no-same-owner', '-C', gnu, '-xzf', tb, '--no-wildcards', `--exclude-from=${skip}`]);
  for (const openat2 of ['1', '0']) {
    const r = await ch('ch-tar2dir', ['--force', tb, sb.dir], { env: { CH_TAR2DIR_OPENAT2: openat2 } });
    t.is(r.exitCode, 0, r.stderr);
    const d = await execa('diff', ['-r', '--no-dereference', gnu, join(sb.dir, 'big')], { reject: false });
    t.deepEqual(unexpectedDiffs(d.stdout, join(sb.dir, 'big')), [], `CH_TAR2DIR_OPENAT2=${openat2}`);
  }
});

test('progress bar only on a terminal; -q prints nothing on success', async (t) => {
  const sb = sandbox(t);
  const tb = await busyboxTarball(sb, 'bar');
  // Not a TTY (a pipe, as in batch logs): one summary line, no bar.
  const plain = await ch('ch-tar2dir', [tb, sb.dir]);
  t.is(plain.exitCode, 0, plain.stderr);
  t.notRegex(plain.stderr, /\r|%/);
  t.regex(plain.stderr, /unpacked \d+ files/);
  const q = await ch('ch-tar2dir', ['-q', '--force', tb, sb.dir]);
  t.is(q.exitCode, 0);
  t.is(q.stderr, '');
  // On a TTY (script(1) gives it one): the bar, ending at 100%.
  const u = testUser();
  const cmd = `${join(TEST_DIR, 'pkg/bin/ch-tar2dir')} --force ${tb} ${sb.dir}`;
  const r = await execa('script', ['-qec', isRoot ? `setpriv --reuid=${u.uid} --regid=${u.gid} --clear-groups ${cmd}` : cmd, '/dev/null'],
    { reject: false, env: { PATH: '/usr/bin:/bin', TERM: 'dumb' } });
  t.is(r.exitCode, 0, r.stdout);
  t.regex(r.stdout, /ch-tar2dir: bar \[=+\] 100% [\d.]+\/[\d.]+ MiB/);
});

test('writes through a symlink that stays inside are allowed with openat2, refused by the fallback walk', async (t) => {
  const entries = [
    { name: 'usr/lib/', type: '5', mode: 0o755 },
    { name: 'lib', type: '2', linkname: 'usr/lib' },
    { name: 'lib/libfoo.so', data: 'elf' },
    { name: 'usr/bin/', type: '5', mode: 0o755 },
    { name: 'usr/bin/up', type: '2', linkname: '../lib' },
    { name: 'usr/bin/up/libbar.so', data: 'elf2' },
  ];
  const sb = sandbox(t);
  const tb = put(sb, 'inside.tar', mktar(entries));
  const r = await ch('ch-tar2dir', [tb, sb.dir]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(readFileSync(join(sb.dir, 'inside/usr/lib/libfoo.so'), 'utf8'), 'elf');
  t.is(readFileSync(join(sb.dir, 'inside/usr/lib/libbar.so'), 'utf8'), 'elf2');
  const sb2 = sandbox(t);
  const tb2 = put(sb2, 'inside.tar', mktar(entries));
  const f = await ch('ch-tar2dir', [tb2, sb2.dir], { env: { CH_TAR2DIR_OPENAT2: '0' } });
  t.is(f.exitCode, 1);
  t.regex(f.stderr, /lib\/libfoo\.so: refused: path goes through a symlink \(without openat2/);
  assertClean(t, sb2, 'inside');
});

test('mount points behind symlinks leaving the image: warned, not created outside; marker behind one: refused', async (t) => {
  const sb = sandbox(t);
  const tb = put(sb, 'links.tar', mktar([
    { name: 'etc/', type: '5', mode: 0o755 },
    { name: 'etc/hosts', type: '2', linkname: `${sb.out}/secret` },
    { name: 'mnt', type: '2', linkname: sb.out },
    { name: 'tmp', type: '2', linkname: '/tmp' },
  ]));
  const r = await ch('ch-tar2dir', [tb, sb.dir]);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /warning: can't create mount point \/mnt\/0: .*refused/);
  const img = join(sb.dir, 'links');
  t.true(lstatSync(join(img, 'tmp')).isSymbolicLink(), 'symlinked mount point left alone');
  t.true(lstatSync(join(img, 'etc/hosts')).isFile(), 'etc/hosts symlink replaced by a file');
  t.deepEqual(readdirSync(sb.out), ['secret']);
  t.is(readFileSync(join(sb.out, 'secret'), 'utf8'), 'untouched\n');

  const sb2 = sandbox(t);
  const tb2 = put(sb2, 'chlink.tar', mktar([{ name: 'ch', type: '2', linkname: sb2.out }]));
  const r2 = await ch('ch-tar2dir', [tb2, sb2.dir]);
  t.is(r2.exitCode, 1);
  t.regex(r2.stderr, /can't write marker \/ch\/\.ch-image\.json: .*refused/);
  assertClean(t, sb2, 'chlink');
});
