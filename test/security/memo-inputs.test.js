// A memoized plan (lib/run/memo.ts, native/launcher/memo/) must never give a command
// what a fresh plan would not: issue #20, item 7. Both cases are inputs whose
// name doesn't identify what the kernel opens: a descriptor's magic link
// (/proc/self/fd/N names whatever the launching process holds as fd N), and
// a path with ".." after a symlink (the kernel goes up from the link's
// target, a lexical normalization from the link). In each, the launch after
// the input changed must see the new content, as a fresh plan does.

import test from 'ava';
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, image, PKG } from '../helpers/env.js';
import { ownedByUser, scratch, settled } from '../helpers/fixtures.js';

/** ch-run -v with a private plan directory, memo in effect (not verify mode); FD, if given, is the command's fd 3. */
async function memoLauncher(t) {
  const dir = await scratch(t, 'memo-sec');
  const plans = join(dir, 'plans');
  await settled(join(PKG, 'dist'), join(PKG, 'build', 'Release'), image('busybox'));
  return {
    dir,
    run: (args, fd) => ch('ch-run', ['-v', ...args], {
      env: { CH_RUN_CACHE_DIR: plans, CH_RUN_MEMO_VERIFY: '0' },
      ...(fd === undefined ? {} : { stdio: ['ignore', 'pipe', 'pipe', fd] }),
    }),
  };
}

const hit = (r) => /plan memo: hit/.test(r.stderr);

for (const name of ['/proc/self/fd/3', '/dev/fd/3']) {
  test(`--set-env=${name}: a later launch with another file as fd 3 gets that file's values`, async (t) => {
    const { dir, run } = await memoLauncher(t);
    for (const [f, v] of [['e1', 'one'], ['e2', 'two']]) writeFileSync(join(dir, f), `X=${v}\n`, { mode: 0o644 });
    await ownedByUser(dir);
    await settled(dir);
    const args = [`--set-env=${name}`, image('busybox'), '--', 'sh', '-c', 'echo "X=$X"'];
    const launch = async (file) => {
      const fd = openSync(join(dir, file), 'r');
      try { return await run(args, fd); } finally { closeSync(fd); }
    };
    const first = await launch('e1');
    t.is(first.exitCode, 0, first.stderr);
    t.is(first.stdout, 'X=one');
    const second = await launch('e2');
    t.is(second.exitCode, 0, second.stderr);
    t.is(second.stdout, 'X=two', `fd 3 is e2 now: ${second.stderr}`);
    t.false(hit(second), second.stderr);
    t.regex(first.stderr, /plan memo: not stored: read .* \(process state, under \/proc\)/);
  });
}

test('--set-env=DIR/lnk/../env with lnk -> real/sub: after real/env changes, the launch gets the new values', async (t) => {
  const { dir, run } = await memoLauncher(t);
  mkdirSync(join(dir, 'real', 'sub'), { recursive: true });
  symlinkSync('real/sub', join(dir, 'lnk'));
  writeFileSync(join(dir, 'real', 'env'), 'X=real1\n');
  writeFileSync(join(dir, 'env'), 'X=lexical\n');   // where a lexical ".." would lead
  await ownedByUser(dir);
  await settled(dir);
  const args = [`--set-env=${join(dir, 'lnk')}/../env`, image('busybox'), '--', 'sh', '-c', 'echo "X=$X"'];
  const first = await run(args);
  t.is(first.exitCode, 0, first.stderr);
  t.is(first.stdout, 'X=real1', 'the kernel reads real/env');
  const again = await run(args);
  t.is(again.stdout, 'X=real1');
  t.true(hit(again), `memoized while nothing changed: ${again.stderr}`);
  writeFileSync(join(dir, 'real', 'env'), 'X=real2\n');
  const changed = await run(args);
  t.is(changed.exitCode, 0, changed.stderr);
  t.is(changed.stdout, 'X=real2', `real/env changed: ${changed.stderr}`);
  t.false(hit(changed), changed.stderr);
});
