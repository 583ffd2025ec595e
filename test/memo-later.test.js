// A launch that plans runs its plan first and keeps its record after
// (native/launcher/memo/later.c, lib/run/main.ts recordLater): the front end
// hands the plan over, detaches, and then writes the record; a storer the
// front end's waiter forked (never the command's child) keeps it, holding
// the key's lock meanwhile. Without -v only: the
// rest of memo.test.js (all under -v) and the suite's verify modes test the
// record kept before the command runs.

import test from 'ava';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, image, needs, noFuse, PKG } from './helpers/env.js';
import { listingsSettled, ownedByUser, scratch, settled, until, userSquash } from './helpers/fixtures.js';

const NO_NODE = { CH_RUN_NODE: '/nonexistent/node' };   // a launch that needs Node fails
const isRecord = (n) => /^[0-9a-f]{16}$/.test(n);
const records = (dir) => readdirSync(dir).filter(isRecord);

/** A private plan directory, and ch-run with it: no -v, no verify mode (test/helpers/env.js sets one). */
async function laterRun(t) {
  await settled(join(PKG, 'dist'), join(PKG, 'build', 'Release'));
  const cache = join(await scratch(t, 'memo-later'), 'plans');
  const run = (args, env = {}) => ch('ch-run', args,
    { env: { CH_RUN_CACHE_DIR: cache, CH_RUN_MEMO_VERIFY: '0', CH_RUN_NODE: 'node', ...env } });
  return { cache, run };
}

/** PIDs of processes whose command line holds MARK (ours: the front end's and the storer's hold the command's). */
function holding(mark) {
  const pids = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(mark)) pids.push(Number(p));
    } catch { /* gone */ }
  }
  return pids.filter((p) => p !== process.pid);
}

test('the record comes after the plan: the next launch hits it at once, it is the record made before, and nothing is left', async (t) => {
  const { cache, run } = await laterRun(t);
  const img = image('busybox');
  await settled(img);
  const mark = `later-${process.pid}-${Date.now()}`;
  // The shell's children as it runs: its pipeline's grep and wc alone (the
  // storer, the front end and its waiter are no children of the command's).
  const args = [img, '--', 'sh', '-c', `echo ${mark}; grep -l "^PPid:[[:space:]]*$$\\$" /proc/[0-9]*/status 2>/dev/null | wc -l`];
  const first = await run(args);
  t.is(first.exitCode, 0, first.stderr);
  t.is(first.stderr, '', 'nothing said: no -v');
  t.is(first.stdout, `${mark}\n2`, 'the command has no child but its own');
  // Right after: the storer holds the key's lock, the launch waits for it and hits.
  const hit = await run(args, NO_NODE);
  t.is(hit.exitCode, 0, hit.stderr);
  t.is(hit.stdout, first.stdout);
  t.is(records(cache).length, 1);
  t.is(statSync(join(cache, `${records(cache)[0]}.lock`)).size, 0, 'no mark of a lost record');
  // The record planned again after the hand-over is the one a launch that
  // records before running makes (verify mode does), byte for byte.
  const before = join(cache, '..', 'before');
  const sync = await run(args, { CH_RUN_MEMO_VERIFY: '1', CH_RUN_CACHE_DIR: before });
  t.is(sync.exitCode, 0, sync.stderr);
  t.deepEqual(records(before), records(cache));
  t.deepEqual(readFileSync(join(before, records(before)[0])), readFileSync(join(cache, records(cache)[0])));
  // Front end and storer gone.
  await until(`processes of ours holding ${mark}`, () => holding(mark).length === 0);
  t.pass();
});

test('a record lost after its plan (the storer killed: Slurm ends a step\'s processes with its task): the next launch records before it runs', async (t) => {
  const { cache, run } = await laterRun(t);
  const img = image('busybox');
  await settled(img);
  // The command lists the plan directory: a record kept before it runs is there.
  const run2 = () => run(['-b', `${cache}:/mnt/0`, img, '--', 'ls', '/mnt/0']);
  t.is((await run2()).exitCode, 0);
  await until('a record', () => records(cache).length === 1);
  const [key] = records(cache);
  const lock = join(cache, `${key}.lock`);
  await until('the lock unmarked', () => statSync(lock).size === 0);
  // As a storer killed before it kept the record leaves it: no record, the lock marked.
  rmSync(join(cache, key));
  writeFileSync(lock, 'l');
  const again = await run2();
  t.is(again.exitCode, 0, again.stderr);
  t.true(again.stdout.split('\n').includes(key), `kept before the command ran: ${again.stdout}`);
  t.is(statSync(lock).size, 0, 'the mark goes with the record kept');
});

test('under -v the record is kept before the command runs (what is said of it comes first)', async (t) => {
  const { cache, run } = await laterRun(t);
  const img = image('busybox');
  await settled(img);
  const r = await run(['-v', '-b', `${cache}:/mnt/0`, img, '--', 'ls', '/mnt/0']);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /plan memo: miss \(no record\)/);
  t.is(r.stdout.split('\n').filter(isRecord).length, 1, r.stdout);
});

test('concurrent launches of one key: one plans, the others wait for the storer and hit', async (t) => {
  const { cache, run } = await laterRun(t);
  const img = image('busybox');
  const dir = await scratch(t, 'memo-later-node');
  // A Node wrapper that counts the front ends started.
  const count = join(dir, 'starts');
  const wrapper = join(dir, 'node');
  writeFileSync(wrapper, `#!/bin/sh\necho x >> ${count}\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
  await ownedByUser(dir);
  await settled(img, dir);
  const args = [img, '--', 'echo', 'peer'];
  const all = await Promise.all(Array.from({ length: 6 }, () => run(args, { CH_RUN_NODE: wrapper })));
  for (const r of all) {
    t.is(r.exitCode, 0, r.stderr);
    t.is(r.stdout, 'peer');
  }
  t.is(readFileSync(count, 'utf8'), 'x\n', 'one front end for six launches');
  t.is(records(cache).length, 1);
});

needs(test, noFuse, { tool: true })('a .sqfs image: the record after the plan is kept, and the next launch hits', async (t) => {
  const { run: runLater } = await laterRun(t);
  const file = await userSquash(t, 'memo-later-sq');
  const args = [file, '--', 'cat', '/etc/os-release'];
  const run = (env = {}) => runLater(args, { CH_RUN_SQUASH_LINGER: '0', ...env });
  t.is((await run()).exitCode, 0);   // lists the image, caches the listing: not kept
  // Other tests' SquashFS launches (the same user's /var/tmp/$USER.ch) may
  // change what a plan read in between: a few rounds.
  let hit;
  for (let round = 0; round < 3; round++) {
    await listingsSettled();
    const planned = await run();
    t.is(planned.exitCode, 0, planned.stderr);
    hit = await run(NO_NODE);
    if (hit.exitCode === 0) break;
    t.log(`round ${round}: no hit: ${hit.stderr.split('\n')[0]}`);
  }
  t.is(hit.exitCode, 0, hit.stderr);
  t.regex(hit.stdout, /NAME=/);
});

test('a front end that can\'t detach (no addon: CH_HOST_FS=node) records before the command runs', async (t) => {
  const { cache, run } = await laterRun(t);
  const img = image('busybox');
  await settled(img);
  const args = ['-b', `${cache}:/mnt/0`, img, '--', 'ls', '/mnt/0'];
  const r = await run(args, { CH_HOST_FS: 'node' });
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stderr, '');
  t.is(r.stdout.split('\n').filter(isRecord).length, 1, `kept before the command ran: ${r.stdout}`);
  t.is(statSync(join(cache, `${r.stdout.split('\n').find(isRecord)}.lock`)).size, 0, 'no mark left');
  const hit = await run(args, { CH_HOST_FS: 'node', ...NO_NODE });
  t.is(hit.exitCode, 0, hit.stderr);
});
