// ch-image build of a hostile context: another user (the attacker) prepares
// the context (a shared checkout, a downloaded project) with symlinks to the
// victim's files; the victim builds it. No file of the victim's outside the
// context may end up in the image: a COPY source that is or passes through a
// link leading out is refused, links inside a copied directory are copied as
// links (never followed), and names the layer extractor would take as
// whiteouts are refused.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, chownSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tarOf } from '../helpers/registry.js';
import { join } from 'node:path';
import { PKG } from '../helpers/env.js';
import { ensureUser, isRoot, runAs, scratch, sharedDir, testUser } from './lib.js';

const SECRET = 'victim-secret-7f3a9c';

test.serial('hostile context: symlinks out of the context refused, links inside copied as links, whiteout names refused', async (t) => {
  if (!isRoot) { t.log('needs root to make the attacker and victim accounts'); t.pass(); return; }
  const base = scratch('ch-image-context');
  const victim = testUser();
  const attacker = await ensureUser('chattacker');
  const home = join(base, 'victim');
  mkdirSync(join(home, 'private'), { recursive: true });
  writeFileSync(join(home, 'private', 'secret'), `${SECRET}\n`);
  chmodSync(join(home, 'private', 'secret'), 0o600);
  await execa('chown', ['-R', `${victim.uid}:${victim.gid}`, home]);
  const shared = sharedDir(base, 'shared', 'sticky');
  const ctx = join(shared, 'ctx');
  mkdirSync(ctx);
  symlinkSync(join(home, 'private', 'secret'), join(ctx, 'leak'));
  symlinkSync(join(home, 'private'), join(ctx, 'dir'));
  symlinkSync('../../victim/private/secret', join(ctx, 'up'));
  mkdirSync(join(ctx, 'sub'));
  symlinkSync(join(home, 'private', 'secret'), join(ctx, 'sub', 'inner'));
  writeFileSync(join(ctx, 'sub', 'ok.txt'), 'fine\n');
  await execa('chown', ['-R', '-h', `${attacker.uid}:${attacker.gid}`, ctx]);
  const storage = join(home, 'storage');
  const build = async (dockerfile) => {
    const f = join(home, `Dockerfile.${Math.random().toString(16).slice(2)}`);
    writeFileSync(f, dockerfile);
    chownSync(f, victim.uid, victim.gid);
    return runAs(victim, join(PKG, 'bin', 'ch-image'), ['build', '-t', 'h', '-f', f, ctx], { env: { CH_IMAGE_STORAGE: storage } });
  };
  for (const [src, why] of [['leak', /outside the build context; refused/], ['up', /leading out of the build context/],
    ['dir/secret', /outside the build context; refused/]]) {
    const r = await build(`FROM scratch\nCOPY ${src} /stolen\n`);
    t.is(r.exitCode, 1, `${src}: ${r.stderr}`);
    t.regex(r.stderr, why, src);
  }
  const r = await build('FROM scratch\nCOPY . /ctx/\n');
  t.is(r.exitCode, 0, r.stderr);
  const img = join(storage, 'img', 'h+latest');
  t.is((await execa('readlink', [join(img, 'ctx', 'sub', 'inner')])).stdout, join(home, 'private', 'secret'));
  const grep = await execa('grep', ['-r', '--no-messages', '-l', SECRET, storage], { reject: false });
  t.is(grep.stdout, '', 'the secret is nowhere in storage');
  // A name the layer extractor would take as a whiteout (".wh.etc" deletes /etc).
  writeFileSync(join(ctx, '.wh.etc'), '');
  await execa('chown', ['-h', `${attacker.uid}:${attacker.gid}`, join(ctx, '.wh.etc')]);
  const wh = await build('FROM scratch\nCOPY . /\n');
  t.is(wh.exitCode, 1, wh.stderr);
  t.regex(wh.stderr, /'\.wh\.' can't be copied/);
  rmSync(join(ctx, '.wh.etc'));

  // ADD of the attacker's tarball: a member climbing out, and a link then a write through it.
  for (const [label, entries] of [
    ['dotdot', [{ name: '../../../victim/planted', data: 'x' }]],
    ['through-link', [{ name: 'l', type: 'symlink', target: home }, { name: 'l/planted', data: 'x' }]],
  ]) {
    writeFileSync(join(ctx, `${label}.tar`), tarOf(entries));
    await execa('chown', ['-h', `${attacker.uid}:${attacker.gid}`, join(ctx, `${label}.tar`)]);
    const add = await build(`FROM scratch\nADD ${label}.tar /x/\n`);
    t.is(add.exitCode, 1, `${label}: ${add.stderr}`);
    t.regex(add.stderr, /refused/, label);
    t.false(existsSync(join(home, 'planted')), label);
  }
});
