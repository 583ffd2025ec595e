// ch-convert: round trips between directory, SquashFS and tarballs give the
// same tree (modes, symlinks, hard links, contents); bad input is a clear
// error; an existing destination is replaced only if it is the user's own.
// As the unprivileged test user.

import test from 'ava';
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ch, image, isRoot, needs, notRoot, unavailable } from './helpers/env.js';
import { ownedByUser, scratch } from './helpers/fixtures.js';

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
  await ownedByUser(dir);
  // After chown (which can clear some bits): the modes under test.
  chmodSync(join(src, 'f'), 0o640);
  chmodSync(join(src, 'exe'), 0o750);
  chmodSync(join(src, 'sticky'), 0o1777);
  chmodSync(join(src, 'sub/deep'), 0o700);
  return { dir, src };
}

/** The tree under ROOT: path -> type, mode, content or target, hard link group. */
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
        Object.assign(e, { type: 'file', data: readFileSync(join(root, p), 'utf8').length, nlink: st.nlink });
        inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), p]);
      }
      out[p] = e;
      if (e.type === 'dir') walk(p);
    }
  };
  walk('');
  for (const names of inodes.values()) for (const n of names) out[n].links = names.join(' ');
  return out;
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

test('a converted .sqfs runs; an existing destination of the user\'s is replaced', async (t) => {
  const dir = await scratch(t, 'cvrun');
  const sq = join(dir, 'bb.sqfs');
  let r = await cv([image('busybox'), sq]);
  t.is(r.exitCode, 0, r.stderr);
  r = await ch('ch-run', [sq, '--', 'cat', '/ch/metadata.json']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stdout, /Entrypoint/);
  r = await cv([sq, join(dir, 'bb')]);
  t.is(r.exitCode, 0, r.stderr);
  r = await cv(['-o', 'dir', sq, join(dir, 'bb')]);   // again: replaces its own directory
  t.is(r.exitCode, 0, r.stderr);
  t.true(existsSync(join(dir, 'bb/bin/busybox')));
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
  r = await cv([join(dir, 'src.tar'), src]);   // the user's own directory: replaced
  t.is(r.exitCode, 0, r.stderr);
  t.true(existsSync(join(src, 'sub/hard')));
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
  r = await cv(['-o', 'podman', sq, 'x']);
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /-o podman: writing into a builder is not supported/);
});
