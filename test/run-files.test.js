// Files ch-run reads on the user's or the image's say: --set-env FILE, the
// image's /ch/environment and /ch/metadata.json. Bounded, regular files only,
// an image's own files read inside the image, malformed metadata refused.
// Each bad case: exit 31, one error naming the file, and the command never ran.

import test from 'ava';
import { execa } from 'execa';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, image, isRoot } from './helpers/env.js';
import { imageCopy, ownedByUser, scratch } from './helpers/fixtures.js';

const BB = () => image('busybox');
// A hang is the bug being tested for: fail rather than wait for ava's timeout.
const run = (args, opts = {}) => ch('ch-run', args, { timeout: 20000, ...opts });

/** Expect a refusal: exit 31, RE in the one error line, and no output from the command. */
function refused(t, r, re, what) {
  t.false(r.timedOut, `${what}: hung`);
  t.is(r.exitCode, 31, `${what}: ${r.stderr}`);
  t.regex(r.stderr, /^ch-run\[\d+\]: error: /, what);
  t.regex(r.stderr, re, what);
  t.is(r.stdout, '', `${what}: the command must not have run`);
}

test('--set-env FILE: FIFO, device, directory and over-1-MiB files are refused, not read', async (t) => {
  const dir = await scratch(t);
  const fifo = join(dir, 'fifo'), big = join(dir, 'big'), max = join(dir, 'max');
  await execa('mkfifo', [fifo]);
  writeFileSync(big, `A=${'x'.repeat(1 << 20)}\n`);
  // Exactly 1 MiB is accepted: 16 variables of 64 KiB a line (one 1 MiB
  // variable would be over the kernel's limit for one exec string).
  const line = (i) => `V${String(i).padStart(2, '0')}=${'x'.repeat((1 << 16) - 5)}\n`;
  writeFileSync(max, Array.from({ length: 16 }, (_, i) => line(i)).join(''));
  await ownedByUser(dir);
  for (const [file, re] of [
    [fifo, new RegExp(`--set-env: can't open: ${fifo}: a FIFO, not a regular file`)],
    ['/dev/zero', /--set-env: can't open: \/dev\/zero: a character device, not a regular file/],
    // stdin here is a socket: not a regular file, or not openable at all (ENXIO).
    ['/dev/stdin', /--set-env: can't open: \/dev\/stdin: (.*not a regular file|.*ENXIO)/],
    [dir, new RegExp(`--set-env: can't open: ${dir}: a directory, not a regular file`)],
    [big, new RegExp(`--set-env: can't open: ${big}: larger than 1048576 bytes \\(1 MiB\\)`)],
  ])
    refused(t, await run([`--set-env=${file}`, BB(), '--', 'echo', 'ran']), re, file);
  const r = await run([`--set-env=${max}`, BB(), '--', 'sh', '-c', 'echo ${#V00} ${#V15}']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, `${(1 << 16) - 5} ${(1 << 16) - 5}`);
});

test('bare --set-env reads the image\'s /ch/environment inside the image, never the host\'s', async (t) => {
  const dir = await scratch(t);
  const img = await imageCopy(t);
  const hostEnv = join(dir, 'host-env');
  writeFileSync(hostEnv, 'LEAKED=from-host\n');
  const envFile = join(img, 'ch/environment');
  const show = ['sh', '-c', 'echo ${LEAKED-none} ${FROM-none}'];
  // An absolute link means the image's path: missing there, so an error, not the host's file.
  rmSync(envFile);
  symlinkSync(hostEnv, envFile);
  refused(t, await run(['--set-env', img, '--', ...show]),
    new RegExp(`--set-env: can't open: /ch/environment: No such file or directory \\(ENOENT\\) in image ${img}`), 'absolute link');
  // ... and the image's own file when it has one there.
  mkdirSync(join(img, dir), { recursive: true });
  writeFileSync(join(img, hostEnv), 'FROM=image\n');
  await ownedByUser(img);
  let r = await run(['--set-env', img, '--', ...show]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'none image');
  // A relative link climbing out stops at the image root.
  rmSync(envFile);
  symlinkSync(`../../../../../../../../..${hostEnv}`, envFile);
  r = await run(['--set-env', img, '--', ...show]);
  t.is(r.stdout, 'none image', r.stderr);
  // A FIFO or device in the image: refused, no hang.
  rmSync(envFile);
  await execa('mkfifo', [envFile]);
  await ownedByUser(img);
  refused(t, await run(['--set-env', img, '--', ...show]), /ch\/environment: a FIFO, not a regular file/, 'FIFO');
  // A link to /dev/zero means the image's /dev/zero: none there, so an error ...
  rmSync(envFile);
  symlinkSync('/dev/zero', envFile);
  refused(t, await run(['--set-env', img, '--', ...show]), /ch\/environment: No such file or directory \(ENOENT\) in image /,
    'link to /dev/zero, none in image');
  // ... and a device node there (root can make one) is refused, not read.
  if (!isRoot) return;
  await execa('mknod', [join(img, 'dev/zero'), 'c', '1', '5']);
  refused(t, await run(['--set-env', img, '--', ...show]), /ch\/environment: a character device, not a regular file/,
    'link to the image\'s /dev/zero');
});

test('malformed /ch/metadata.json is refused naming the file and field', async (t) => {
  const img = await imageCopy(t);
  const meta = join(img, 'ch/metadata.json');
  for (const [content, re] of [
    [{ Entrypoint: '/bin/echo' }, /Entrypoint must be an array of strings or null, not a string/],
    [{ Cmd: 'echo hi' }, /Cmd must be an array of strings or null, not a string/],
    [{ Cmd: ['echo', 1] }, /Cmd must be an array of strings or null, not an array with a non-string item/],
    [{ Entrypoint: { a: 1 } }, /Entrypoint must be an array of strings or null, not a object/],
    [{ Cmd: ['/bin/pwd'], WorkingDir: 5 }, /WorkingDir must be a string, not a number/],
    [{ Cmd: ['/bin/pwd'], WorkingDir: ['/etc'] }, /WorkingDir must be a string, not/],
  ]) {
    writeFileSync(meta, JSON.stringify(content));
    refused(t, await run([img]), new RegExp(`bad ${img}/ch/metadata\\.json: ${re.source}`), JSON.stringify(content));
  }
  for (const [text, re] of [['[1, 2]', /not a JSON object/], ['{"Cmd": [', /can't parse .*metadata\.json/]]) {
    writeFileSync(meta, text);
    refused(t, await run([img]), re, text);
  }
  // Well-formed variants run: null fields, and no WorkingDir.
  writeFileSync(meta, JSON.stringify({ Entrypoint: null, Cmd: ['/bin/echo', 'ok'], WorkingDir: null }));
  let r = await run([img]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'ok');
  // A command given on the command line doesn't need the metadata.
  writeFileSync(meta, JSON.stringify({ Entrypoint: '/bin/echo' }));
  r = await run([img, '--', 'echo', 'given']);
  t.is(r.stdout, 'given', r.stderr);
  // Read inside the image: a link to /dev/zero is the image's (none: no metadata) ...
  rmSync(meta);
  symlinkSync('/dev/zero', meta);
  refused(t, await run([img]), /records no ENTRYPOINT or CMD \(no \/ch\/metadata\.json\)/, 'link to /dev/zero');
  // ... a FIFO is refused, no hang, and so is a device node in the image.
  rmSync(meta);
  await execa('mkfifo', [meta]);
  await ownedByUser(meta);
  refused(t, await run([img]), /can't read .*ch\/metadata\.json: a FIFO, not a regular file/, 'FIFO');
  if (!isRoot) return;
  rmSync(meta);
  symlinkSync('/dev/zero', meta);
  await execa('mknod', [join(img, 'dev/zero'), 'c', '1', '5']);
  refused(t, await run([img]), /can't read .*ch\/metadata\.json: a character device, not a regular file/,
    'link to the image\'s /dev/zero');
});
