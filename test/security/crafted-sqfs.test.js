// Crafted images against ch-convert and ch-run (issue #20, items 1 and 2).
// Two unprivileged accounts: the attacker makes a .sqfs (with mksquashfs, as
// anyone can) and leaves it in a shared directory; the victim converts it or
// runs it.
//   1. A file named "x\n-rwsrwxrwx u 0 2020-01-01 00:00 lnk" beside
//      lnk -> ~victim/.bashrc: a converter that reads `unsquashfs -lln` text
//      for names and chmods through paths sees an injected line and makes the
//      victim's ~/.bashrc mode 4777. It must stay as it was.
//   2. bin/tool -rwsr-xr-x in the image: converted by the victim into a
//      shared directory, it must not become a setuid file of the victim's
//      that the attacker runs with the victim's euid. No conversion (any
//      direction, the victim's own tree included) makes a setuid or setgid
//      file, or a tarball or SquashFS image carrying those bits.
// ch-run reads the image's listing too (lib/container/squash.ts): a name or link
// target with a newline must not inject entries; such an image is refused.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BIN, image, isRoot } from '../helpers/env.js';
import { addImage, haveTools, push, startRegistry, writeLayout } from '../helpers/registry.js';
import { compileStatic, ensureUser, runAs, scratch } from './lib.js';

const serial = isRoot ? test.serial : test.skip;
const why = isRoot ? '' : ' [skipped: needs root to create the attacker and victim accounts]';

// The exact name of the issue: a line of `unsquashfs -lln` after the newline.
const INJECTED = 'x\n-rwsrwxrwx u 0 2020-01-01 00:00 lnk';
// A link target with a newline and a forged line after it, and a link name
// holding " -> " whose length makes the first line look whole to a parser
// that checks a link's size (its target's length) against the line's tail.
const FORGED = '-rw-r--r-- 0/0 0 2020-01-01 00:00 /etc/ghost';
const NL_TARGET = `foo\n${FORGED}`;
const ARROW_NAME = `a -> ${'y'.repeat(NL_TARGET.length - 7)}`;

let victim, attacker, base, shared, bashrc, bashrcMode, bashrcText, whoami;

test.before(async () => {
  if (!isRoot) return;
  victim = await ensureUser('chvictim');
  attacker = await ensureUser('chattack');
  base = scratch('crafted-sqfs');
  shared = join(base, 'shared');   // like /var/tmp: everyone writes, sticky
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  // The victim's ~/.bashrc, in the victim's real home.
  const home = (await execa('getent', ['passwd', victim.name])).stdout.split(':')[5];
  bashrc = join(home, '.bashrc');
  if (!existsSync(bashrc)) await runAs(victim, '/bin/sh', ['-c', `echo '# bashrc' > ${bashrc}`]);
  chmodSync(bashrc, 0o644);
  bashrcMode = lstatSync(bashrc).mode;
  bashrcText = readFileSync(bashrc, 'utf8');
  // What the attacker wants run with the victim's euid: prints its ids.
  whoami = await compileStatic('suid-whoami.c', join(base, 'whoami'));
  chmodSync(whoami, 0o755);
  const script = `set -e; umask 022; cd ${shared}
    mkdir evil && ln -s ${bashrc} evil/lnk && : > "evil/$(printf '${INJECTED.replace('\n', '\\n')}')"
    mksquashfs evil evil.sqfs -noappend -quiet -no-progress >/dev/null
    mkdir -p suid/bin suid/sgid-dir && cp ${whoami} suid/bin/tool && cp ${whoami} suid/bin/gtool
    chmod 4755 suid/bin/tool && chmod 2755 suid/bin/gtool && chmod 2775 suid/sgid-dir && chmod 6755 suid
    mksquashfs suid suid.sqfs -noappend -quiet -no-progress >/dev/null
    tar -C suid -cf suid.tar .
    cp -r ${image('busybox')} nl-name && : > "nl-name/$(printf 'a\\nb')"
    mksquashfs nl-name nl-name.sqfs -noappend -quiet -no-progress >/dev/null
    cp -r ${image('busybox')} nl-link && ln -s "$(printf 'x\\n-rw-r--r-- 0/0 0 2020-01-01 00:00 /etc/ghost')" nl-link/l
    mksquashfs nl-link nl-link.sqfs -noappend -quiet -no-progress >/dev/null
    cp -r ${image('busybox')} nl-arrow && ln -s "$(printf '${NL_TARGET.replace('\n', '\\n')}')" 'nl-arrow/${ARROW_NAME}'
    mksquashfs nl-arrow nl-arrow.sqfs -noappend -quiet -no-progress >/dev/null
    chmod 644 *.sqfs *.tar`;
  const r = await runAs(attacker, '/bin/sh', ['-c', script]);
  if (r.exitCode !== 0) throw new Error(`attacker's crafting failed: ${r.stderr}`);
  // The victim's private place for outputs (beside shared outputs).
  mkdirSync(join(base, 'victim'), { mode: 0o700 });
  await execa('chown', [`${victim.uid}:${victim.gid}`, join(base, 'victim')]);
});

test.after.always(() => {
  // Whatever happened, the victim's file back as it was.
  if (bashrc && bashrcMode !== undefined) chmodSync(bashrc, bashrcMode & 0o7777);
});

const asVictim = (cmd, args) => runAs(victim, join(BIN, cmd), args, { timeout: 120_000 });

/** Every entry under ROOT whose mode has a setuid or setgid bit: [path, mode]. */
function setidFiles(root) {
  const found = [];
  const walk = (p, rel) => {
    const st = lstatSync(p);
    if (!st.isSymbolicLink() && (st.mode & 0o6000)) found.push([rel || '/', (st.mode & 0o7777).toString(8)]);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n), `${rel}/${n}`);
  };
  walk(root, '');
  return found;
}

/** Members of tarball FILE (.tar or .tar.gz) with a setuid or setgid bit in their header: [name, mode]. */
function setidMembers(file) {
  let b = readFileSync(file);
  if (file.endsWith('.gz')) b = gunzipSync(b);
  const found = [];
  let longName = null, n = 0;
  for (let off = 0; off + 512 <= b.length; n++) {
    const h = b.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    const field = (o, l) => h.subarray(o, o + l).toString('latin1').replace(/\0.*$/s, '').trim();
    const size = parseInt(field(124, 12) || '0', 8);
    const type = field(156, 1);
    const name = longName ?? field(0, 100);
    const data = b.subarray(off + 512, off + 512 + size);
    if (type === 'L') longName = data.toString('latin1').replace(/\0.*$/s, '');
    else if (type === 'x' || type === 'g') {
      const m = /\d+ path=([^\n]*)\n/.exec(data.toString('latin1'));
      if (m) longName = m[1];
    } else {
      const mode = parseInt(field(100, 8), 8);
      if (mode & 0o6000) found.push([name, mode.toString(8)]);
      longName = null;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  if (n === 0) throw new Error(`${file}: no tar members`);
  return found;
}

/** Entries of SquashFS FILE with a setuid or setgid bit (from unsquashfs -lln; the names here are our own, plain). */
async function setidInSquash(file) {
  const r = await execa('unsquashfs', ['-lln', '-d', '', file]);
  return r.stdout.split('\n').filter((l) => /^.(..[sS]|.....[sS])/.test(l));
}

function assertBashrcIntact(t, what) {
  const st = lstatSync(bashrc);
  t.is((st.mode & 0o7777).toString(8), (bashrcMode & 0o7777).toString(8), `${what}: victim's ~/.bashrc mode unchanged`);
  t.is(readFileSync(bashrc, 'utf8'), bashrcText, `${what}: victim's ~/.bashrc content unchanged`);
}

serial(`ch-convert: a name injecting a line into unsquashfs's listing can't chmod the victim's file through a symlink (dir and tar output)${why}`, async (t) => {
  const evil = join(shared, 'evil.sqfs');
  for (const out of [join(base, 'victim', 'evil'), join(shared, 'evil-img'), join(shared, 'evil.tar'), join(base, 'victim', 'evil.tar.gz')]) {
    const r = await asVictim('ch-convert', [evil, out]);
    t.is(r.exitCode, 0, `${out}: ${r.stderr}`);
    assertBashrcIntact(t, out);
    if (out.includes('.tar')) {
      t.deepEqual(setidMembers(out), [], `${out}: no setuid/setgid member`);
    } else {
      t.deepEqual(setidFiles(out), [], `${out}: no setuid/setgid file`);
      t.is(readlinkSync(join(out, 'lnk')), bashrc, 'the image\'s symlink kept as it is');
      t.true(existsSync(join(out, INJECTED)), 'the oddly named file kept as it is');
    }
  }
});

serial(`ch-convert: setuid/setgid bits of a crafted .sqfs or tarball never reach a file the attacker can run (dir, tar, sqfs outputs)${why}`, async (t) => {
  for (const src of ['suid.sqfs', 'suid.tar']) {
    for (const o of ['img', 'img.tar', 'img.tar.gz', 'img.sqfs']) {
      const out = join(shared, `${src.replace('.', '-')}-${o}`);
      const r = await asVictim('ch-convert', [join(shared, src), out]);
      t.is(r.exitCode, 0, `${src} -> ${o}: ${r.stderr}`);
      if (o.includes('.tar')) t.deepEqual(setidMembers(out), [], `${src} -> ${o}: no setuid/setgid member`);
      else if (o.endsWith('.sqfs')) t.deepEqual(await setidInSquash(out), [], `${src} -> ${o}: no setuid/setgid entry`);
      else {
        t.deepEqual(setidFiles(out), [], `${src} -> ${o}: no setuid/setgid file`);
        t.is((lstatSync(join(out, 'bin/tool')).mode & 0o7777).toString(8), '755');
        // The attack as written: the attacker runs the tool from the shared directory.
        const who = await runAs(attacker, join(out, 'bin/tool'), []);
        t.is(who.exitCode, 0, who.stderr);
        t.is(who.stdout.split(' ')[1], String(attacker.uid), `${src} -> ${o}: the attacker's tool runs with the attacker's euid, not the victim's`);
      }
    }
  }
});

serial(`ch-convert: the victim's own tree with setuid/setgid files converts to dir, tar and sqfs without them${why}`, async (t) => {
  const src = join(base, 'victim', 'own');
  const r0 = await runAs(victim, '/bin/sh', ['-c', `set -e; mkdir -p ${src}/bin ${src}/d ${src}/dev ${src}/proc ${src}/sys ${src}/tmp && cp ${whoami} ${src}/bin/tool
    chmod 4755 ${src}/bin/tool && cp ${whoami} ${src}/bin/gtool && chmod 2755 ${src}/bin/gtool && chmod 2775 ${src}/d`]);
  t.is(r0.exitCode, 0, r0.stderr);
  t.is(setidFiles(src).length, 3, 'the source has them');
  for (const o of ['own-img', 'own.tar', 'own.sqfs']) {
    const out = join(shared, o);
    const r = await asVictim('ch-convert', [src, out]);
    t.is(r.exitCode, 0, `${o}: ${r.stderr}`);
    if (o.endsWith('.tar')) t.deepEqual(setidMembers(out), [], `${o}: no setuid/setgid member`);
    else if (o.endsWith('.sqfs')) t.deepEqual(await setidInSquash(out), [], `${o}: no setuid/setgid entry`);
    else t.deepEqual(setidFiles(out), [], `${o}: no setuid/setgid file`);
  }
  t.is(setidFiles(src).length, 3, 'the source itself left as it was');
});

serial(`ch-convert as root: unsquashfs keeps setuid bits for root; the output has none${why}`, async (t) => {
  const dir = join(base, 'root-out');
  mkdirSync(dir, { mode: 0o700 });
  for (const o of ['img', 'img.tar']) {
    const out = join(dir, o);
    const r = await execa(join(BIN, 'ch-convert'), [join(shared, 'suid.sqfs'), out], { reject: false });
    t.is(r.exitCode, 0, r.stderr);
    if (o.endsWith('.tar')) t.deepEqual(setidMembers(out), [], `${o}: no setuid/setgid member`);
    else t.deepEqual(setidFiles(out), [], `${o}: no setuid/setgid file`);
  }
  rmSync(dir, { recursive: true, force: true });
});

serial(`ch-pull and ch-convert from a hostile registry: a layer's setuid/setgid bits reach no file, member or entry${why}`, async (t) => {
  const missing = haveTools();
  if (missing) { t.log(`not tested: ${missing}`); t.pass(); return; }
  // The registry's owner plays the attacker: layers with setuid and setgid
  // files, a setgid directory, a hard link to the setuid file.
  const reg = await startRegistry(join(base, 'registry'));
  try {
    const lay = join(base, 'layout');
    const tool = readFileSync(whoami);
    writeLayout(lay, 'v1', [addImage(lay, { layers: [
      [{ name: 'bin/', type: 'dir', mode: 0o6755 }, { name: 'bin/tool', data: tool, mode: 0o4755 },
        { name: 'bin/gtool', data: tool, mode: 0o2755 }, { name: 'sgid/', type: 'dir', mode: 0o2775 }],
      [{ name: 'bin/tool2', type: 'link', target: 'bin/tool' }, { name: 'bin/tool3', data: tool, mode: 0o6755 }],
    ] })]);
    await push(reg, lay, 'v1', 'evil/suid');
    const ref = `${reg.host}/evil/suid:v1`;
    const env = { CH_IMAGE_STORAGE: join(base, 'victim', 'storage') };
    const asV = (cmd, args) => runAs(victim, join(BIN, cmd), args, { timeout: 120_000, env });
    const outs = [
      ['ch-pull', [ref, join(shared, 'pulled')], join(shared, 'pulled')],
      ['ch-pull', ['--tar', join(shared, 'pulled.tar.gz'), ref], join(shared, 'pulled.tar.gz')],
      ['ch-convert', [`docker://${ref}`, join(shared, 'reg-img')], join(shared, 'reg-img')],
      ['ch-convert', [`docker://${ref}`, join(shared, 'reg.tar.gz')], join(shared, 'reg.tar.gz')],
      ['ch-convert', [`docker://${ref}`, join(shared, 'reg.sqfs')], join(shared, 'reg.sqfs')],
    ];
    for (const [cmd, args, out] of outs) {
      const r = await asV(cmd, args);
      t.is(r.exitCode, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
      if (out.endsWith('.tar.gz')) t.deepEqual(setidMembers(out), [], `${out}: no setuid/setgid member`);
      else if (out.endsWith('.sqfs')) t.deepEqual(await setidInSquash(out), [], `${out}: no setuid/setgid entry`);
      else {
        t.deepEqual(setidFiles(out), [], `${out}: no setuid/setgid file`);
        const who = await runAs(attacker, join(out, 'bin/tool'), []);
        t.is(who.stdout.split(' ')[1], String(attacker.uid), `${out}: the attacker's euid`);
      }
    }
  } finally {
    await reg.stop();
  }
});

serial(`ch-run: an image whose listing a name or link target with a newline could forge is refused, clearly${why}`, async (t) => {
  for (const img of ['nl-name.sqfs', 'nl-link.sqfs', 'nl-arrow.sqfs']) {
    const r = await asVictim('ch-run', [join(shared, img), '--', '/bin/true']);
    t.is(r.exitCode, 31, `${img}: ${r.stderr}`);   // ch-run's failure status
    t.regex(r.stderr, /contains a newline/, img);
    t.notRegex(r.stderr, /\n\s+at /, `${img}: no stack trace`);
    t.log(r.stderr.trim());
  }
});
