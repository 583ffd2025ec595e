// Memoized plans (lib/run/memo.ts records, native/launcher/memo/ checks and replays):
// a repeated launch runs without Node (CH_RUN_NODE pointing nowhere proves
// it), exactly as a fresh plan would; any change to what the plan depended on
// is a miss; the plan directory and its entries are trusted only if they are
// the user's own. The rest of the suite runs every launch from its record
// (CH_RUN_MEMO_VERIFY=1, test/helpers/env.js), checked equal to the fresh
// plan; these tests make real hits.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync,
  utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { asUser, ch, image, isRoot, needs, noFuse, notRoot, PKG, testUser, userEnv } from './helpers/env.js';
import { imageCopy, listingsSettled, ownedByUser, scratch, settled, userSquash } from './helpers/fixtures.js';

const NO_NODE = { CH_RUN_NODE: '/nonexistent/node' };   // a launch that needs Node fails

/** A private plan directory for one test, and ch-run with it, under -v. */
async function memoRun(t) {
  // The staged build is a dependency of every plan: younger than 1 s (just
  // staged by test/setup.js), no plan would be kept.
  await settled(join(PKG, 'dist'), join(PKG, 'build', 'Release'));
  const cache = join(await scratch(t, 'memo'), 'plans');
  // CH_RUN_NODE always set (node on PATH, as by default, or NO_NODE): a
  // hit's environment has the same names as its record's.
  const run = (args, env = {}, opts = {}) => ch('ch-run', ['-v', ...args],
    { env: { CH_RUN_CACHE_DIR: cache, CH_RUN_MEMO_VERIFY: '0', CH_RUN_NODE: 'node', ...env }, ...opts });
  return { cache, run };
}

const said = (r, what) => new RegExp(`plan memo: ${what}`).test(r.stderr);
/** Each launch's memo lines, one launch a line: what a failed count shows (a planner that kept no record says why). */
const memoLines = (launches) => launches.map((r) => r.stderr.split('\n').filter((l) => /plan memo/.test(l)).join(' / ')).join('\n');
/** stderr without PIDs and the memo's own lines: what the user reads either way. */
const words = (r) => r.stderr.split('\n').filter((l) => !/plan memo: /.test(l)).map((l) => l.replace(/^ch-run\[\d+\]/, 'ch-run')).join('\n');

test('two binds onto one destination: the hit mounts them in the same order, the later wins (issue #21)', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  const dir = await scratch(t);
  for (const [d, f] of [['a', 'file1'], ['b', 'file2']]) {
    mkdirSync(join(dir, d));
    writeFileSync(join(dir, d, f), `${f}\n`);
  }
  await ownedByUser(dir);
  await settled(img, dir);
  const args = ['-b', `${join(dir, 'a')}:/mnt/3`, '-b', `${join(dir, 'b')}:/mnt/3`, img, '--', 'ls', '/mnt/3'];
  const first = await run(args);
  t.is(first.exitCode, 0, first.stderr);
  t.true(said(first, 'miss'), first.stderr);
  t.is(first.stdout, 'file2');
  const hit = await run(args, NO_NODE);
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.stdout, 'file2', 'the later bind, on a hit too');
  t.regex(hit.stderr, /the later bind wins/);
  // The other order is another plan, and the other bind wins.
  const back = await run([...args.slice(2, 4), ...args.slice(0, 2), ...args.slice(4)]);
  t.is(back.stdout, 'file1', back.stderr);
});

test('a repeated launch runs from its memoized plan, without Node; CH_RUN_NO_CACHE=1 turns it off', async (t) => {
  const { cache, run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = [img, '--', 'sh', '-c', 'echo $CH_RUNNING; id -u'];
  const first = await run(args);
  t.is(first.exitCode, 0, first.stderr);
  t.true(said(first, 'miss \\(no record\\)'), first.stderr);
  t.is(readdirSync(cache).filter((n) => /^[0-9a-f]{16}$/.test(n)).length, 1, 'one record kept');
  const hit = await run(args, NO_NODE);
  t.is(hit.exitCode, 0, hit.stderr);
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.stdout, first.stdout);
  t.is(hit.stdout, `Weird Al Yankovic\n${testUser().uid}`);
  t.is(words(hit), words(first), 'the same messages, replayed');
  const off = await run(args, { CH_RUN_NO_CACHE: '1', ...NO_NODE });
  t.is(off.exitCode, 31, 'CH_RUN_NO_CACHE=1 starts Node');
  t.regex(off.stderr, /can't execute Node\.js/);
  // The key: another command line, another directory is another plan.
  const other = await run([img, '--', 'true'], NO_NODE);
  t.is(other.exitCode, 31, other.stderr);
  const elsewhere = await run(args, NO_NODE, { cwd: '/tmp' });
  t.is(elsewhere.exitCode, 31, 'cwd is part of the key');
});

test('names beyond ASCII (environment names, a listed directory) are ordered as the launcher orders them: the next launch hits', async (t) => {
  // The record orders names by their UTF-8 bytes, as the launcher's strcmp
  // (lib/run/memo.ts byteSort: JavaScript's own order for ASCII names, the
  // bytes otherwise; U+E000-U+FFFF sort before a character beyond U+FFFF in
  // UTF-16, after it in UTF-8). An order that differed would be a miss every time.
  const { run } = await memoRun(t);
  const { dir, img, env } = await cdiSetup(t);
  const odd = ['\u00e9t\u00e9', '\uff21wide', '\u{1f600}smile', 'plain', 'Zed'];
  for (const n of odd) writeFileSync(join(dir, 'cdi', n), '', { mode: 0o644 });   // listed, not specs (no .json)
  await ownedByUser(dir);
  await settled(dir);
  const vars = { ...env, ...Object.fromEntries(odd.map((n, i) => [`CH_T_${n}`, String(i)])) };
  const args = ['--device=example.com/dev=x', img, '--', 'sh', '-c', 'echo $V'];
  const first = await run(args, vars);
  t.is(first.exitCode, 0, first.stderr);
  t.true(said(first, 'miss'), first.stderr);
  const hit = await run(args, { ...vars, ...NO_NODE });
  t.is(hit.exitCode, 0, hit.stderr);
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.stdout, 'one');
});

test('launches that differ only in the arguments after "--" and the command name share a plan; nothing else does', async (t) => {
  const { cache, run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const first = await run([img, '--', 'echo', 'one']);
  t.is(first.stdout, 'one', first.stderr);
  t.true(said(first, 'miss \\(no record\\)'), first.stderr);
  // Other arguments, options and "--" among them: the command's own, from the same record.
  const args = [img, '--', 'echo', 'two', '-v', '--', '--set-env=X=1'];
  const hit = await run(args, NO_NODE);
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.stdout, 'two -v -- --set-env=X=1');
  t.regex(hit.stderr, /executing: echo two -v -- --set-env=X=1$/m);
  const fresh = await run(args, { CH_RUN_NO_CACHE: '1' });
  t.is(fresh.stdout, hit.stdout);
  t.is(words(hit), words(fresh), 'the same messages as a fresh plan');
  const none = await run([img, '--', 'echo'], NO_NODE);
  t.true(said(none, 'hit'), none.stderr);
  t.is(none.stdout, '');
  t.is(readdirSync(cache).filter((n) => /^[0-9a-f]{16}$/.test(n)).length, 1, 'one record for all three');
  // Another command name, or another word before "--": another plan.
  t.is((await run([img, '--', 'printf', 'one'], NO_NODE)).exitCode, 31);
  t.is((await run(['--home', img, '--', 'echo', 'one'], NO_NODE)).exitCode, 31);

  // A "--" that is an option's value: what follows it is ch-run's (here -v),
  // so that plan holds for its own arguments alone.
  const asValue = [img, '--unset-env', '--', 'echo'];
  t.is((await run(asValue)).stdout, '');
  t.true(said(await run(asValue, NO_NODE), 'hit'));
  const verbose = await run([...asValue, '-v'], NO_NODE);
  t.is(verbose.exitCode, 31, verbose.stderr);
  t.regex(verbose.stderr, /no memoized plan for \(here: the command's arguments changed\)/);
  const planned = await run([...asValue, '-v']);
  t.is(planned.stdout, '', 'echo with no arguments: -v was ch-run\'s');
  t.regex(planned.stderr, /executing: echo$/m);
  // The command begun before "--" (IMAGE CMD -- ARG): the same.
  t.is((await run([img, 'echo', 'a', '--', 'b', 'c'])).stdout, 'a b c');
  t.true(said(await run([img, 'echo', 'a', '--', 'b', 'c'], NO_NODE), 'hit'));
  const other = await run([img, 'echo', 'a', '--', 'b', 'd'], NO_NODE);
  t.regex(other.stderr, /no memoized plan for \(here: the command's arguments changed\)/);
});

test('the command gets the environment a fresh plan would give it, in the same order', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = ['--set-env=NEW=1', '--set-env=B=replaced', '--unset-env=C', '--set-env=C=again', img, '--', 'env'];
  const env = { A: 'a', B: 'b', C: 'c', D: 'd' };
  const fresh = await run(args, { ...env, CH_RUN_NO_CACHE: '1' });
  t.is(fresh.exitCode, 0, fresh.stderr);
  t.is((await run(args, env)).exitCode, 0);
  const hit = await run(args, { ...env, ...NO_NODE });
  t.true(said(hit, 'hit'), hit.stderr);
  const noNode = (s) => s.split('\n').filter((l) => !/^CH_RUN_(NODE|NO_CACHE)=/.test(l)).join('\n');
  t.is(noNode(hit.stdout), noNode(fresh.stdout), 'same variables, same order');
  t.regex(hit.stdout, /^A=a\nB=replaced\n(.*\n)*D=d\n(.*\n)*NEW=1\nC=again\n/m);
  // A variable the planner never read passes through from the live
  // environment (without --unset-env GLOB, which makes the names a dependency).
  const plain = ['--set-env=NEW=1', img, '--', 'env'];
  t.is((await run(plain, env)).exitCode, 0);
  const passed = await run(plain, { ...env, D: 'changed', E: 'new', ...NO_NODE });
  t.true(said(passed, 'hit'), passed.stderr);
  t.regex(passed.stdout, /^D=changed$/m);
  t.regex(passed.stdout, /^E=new$/m);
});

test('a change to anything the plan depended on is a miss, and the fresh plan is right', async (t) => {
  const { run } = await memoRun(t);
  const img = await imageCopy(t);
  const meta = join(img, 'ch', 'metadata.json');
  mkdirSync(join(img, 'ch'), { recursive: true });
  writeFileSync(meta, JSON.stringify({ Cmd: ['echo', 'one'] }));
  await ownedByUser(join(img, 'ch'));
  await settled(img);
  const hits = async (args, env = {}) => {
    const r = await run(args, { ...env, ...NO_NODE });
    return r.exitCode === 0 && said(r, 'hit') ? r : null;
  };
  t.is((await run([img])).stdout, 'one');
  t.truthy(await hits([img]), 'hit while nothing changed');

  // A file it read: the image's metadata.
  writeFileSync(meta, JSON.stringify({ Cmd: ['echo', 'two'] }));
  t.is(await hits([img]), null, 'metadata changed: miss');
  await settled(img);
  const r = await run([img]);
  t.true(said(r, 'miss \\(l?stat changed: .*metadata\\.json\\)'), r.stderr);
  t.is(r.stdout, 'two');
  t.is((await hits([img]))?.stdout, 'two');

  // A variable it read: HOME (kept only if the image has that directory).
  const home = await run([img, '--', 'sh', '-c', 'echo $HOME'], { HOME: '/tmp' });
  t.is(home.stdout, '/tmp');
  t.is((await hits([img, '--', 'sh', '-c', 'echo $HOME'], { HOME: '/tmp' }))?.stdout, '/tmp');
  t.is(await hits([img, '--', 'sh', '-c', 'echo $HOME'], { HOME: '/nowhere' }), null, 'HOME changed: miss');
  t.is((await run([img, '--', 'sh', '-c', 'echo $HOME'], { HOME: '/nowhere' })).stdout, '/root');

  // The set of names, when the planner enumerated them (--unset-env GLOB).
  const unset = [img, '--unset-env=X*', '--', 'sh', '-c', 'echo "${X1-unset} ${X2-unset}"'];
  t.is((await run(unset, { X1: '1' })).stdout, 'unset unset');
  t.truthy(await hits(unset, { X1: 'other value' }), 'same names, another value: hit');
  t.is(await hits(unset, { X1: '1', X2: '2' }), null, 'a new name matching the glob: miss');
  t.is((await run(unset, { X1: '1', X2: '2' })).stdout, 'unset unset');

  // A directory it looked into: a required mount point gone.
  await execa('rmdir', [join(img, 'proc')]);
  t.is(await hits([img]), null, 'image changed: miss');
  const gone = await run([img]);
  t.is(gone.exitCode, 31);
  t.regex(gone.stderr, /it has no \/proc directory/);
});

test('a file changed less than a second before planning is not memoized', async (t) => {
  const { cache, run } = await memoRun(t);
  const img = await imageCopy(t);
  const meta = join(img, 'ch', 'metadata.json');
  mkdirSync(join(img, 'ch'), { recursive: true });
  writeFileSync(meta, JSON.stringify({ Cmd: ['echo', 'fresh'] }));
  const r = await run([img]);
  t.is(r.stdout, 'fresh', r.stderr);
  t.regex(r.stderr, /plan memo: not stored: .*metadata\.json changed less than 1 s ago/);
  t.false(existsSync(cache) && readdirSync(cache).some((n) => /^[0-9a-f]{16}$/.test(n)), 'nothing kept');
});

test('warnings are replayed on a hit, with the launch\'s own PID', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = [img, '--', '/bin/true'];
  const noPath = { PATH: undefined };   // the front end warns: $PATH not set
  const miss = await run(args, noPath);
  t.is(miss.exitCode, 0, miss.stderr);
  t.regex(miss.stderr, /warning: \$PATH not set/);
  const launch = run(args, { ...noPath, ...NO_NODE });
  const hit = await launch;
  t.is(hit.exitCode, 0, hit.stderr);
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(words(hit), words(miss));
  t.regex(hit.stderr, new RegExp(`^ch-run\\[${launch.pid}\\]: warning: \\$PATH not set$`, 'm'));
});

/** The record files in DIR (16 hex digits). */
const records = (dir) => (existsSync(dir) ? readdirSync(dir).filter((n) => /^[0-9a-f]{16}(\.[1-3])?$/.test(n)) : []);

needs(test, notRoot && 'plants files as another user')('a plan directory that is not the user\'s alone is not used, and not followed', async (t) => {
  const base = await scratch(t, 'memo');
  const img = image('busybox');
  await settled(img);
  const args = [img, '--', 'echo', 'ok'];
  const run = (cache, env = {}) => ch('ch-run', ['-v', ...args], { env: { CH_RUN_CACHE_DIR: cache, CH_RUN_MEMO_VERIFY: '0', ...env } });
  // Another user's directory (here root's, open to the user to read).
  const foreign = join(base, 'foreign');
  mkdirSync(foreign, { mode: 0o700 });
  chmodSync(foreign, 0o755);
  // A link to a directory of the user's: followed, another user could plant one.
  const target = join(base, 'target');
  mkdirSync(target, { mode: 0o700 });
  await ownedByUser(target);
  const link = join(base, 'link');
  symlinkSync(target, link);
  // The user's own, but open to others.
  const open = join(base, 'open');
  mkdirSync(open);
  await ownedByUser(open);
  chmodSync(open, 0o777);
  for (const [dir, what] of [[foreign, 'foreign'], [link, 'symlink'], [open, 'mode 0777']]) {
    for (let i = 0; i < 2; i++) {
      const r = await run(dir);
      t.is(r.exitCode, 0, `${what}: ${r.stderr}`);
      t.is(r.stdout, 'ok');
      t.regex(r.stderr, /plan memo: (miss|off) \(plan directory .* is not yours alone/, what);
    }
  }
  t.deepEqual(readdirSync(target), [], 'nothing written through the link');
  t.deepEqual(readdirSync(open), [], 'nothing written in the open directory');
  t.deepEqual(readdirSync(foreign), []);
});

needs(test, notRoot && 'makes files of another owner')('a record that is not a plain file of the user\'s, or corrupt, or another key\'s, is not used', async (t) => {
  const { cache, run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = [img, '--', 'echo', 'ok'];
  t.is((await run(args)).exitCode, 0);
  const [name] = records(cache);
  const file = join(cache, name);
  const good = readFileSync(file);
  const hitNow = async () => said(await run(args, NO_NODE), 'hit');
  t.true(await hitNow());

  // Corrupt: one byte of the plan changed (a bind the planner never made).
  const forged = Buffer.from(good.toString('latin1').replace('/tmp\0/tmp', '/etc\0/tmp'), 'latin1');
  t.notDeepEqual(forged, good);
  writeFileSync(file, forged);
  await ownedByUser(file);
  const r = await run(args);
  t.true(said(r, 'miss \\(corrupt record, removed\\)'), r.stderr);
  t.is(r.stdout, 'ok');
  t.true(await hitNow(), 'replaced by a fresh record');

  // Not the user's: root's file, or writable by others.
  rmSync(file);
  writeFileSync(file, good);
  t.false(await hitNow(), 'owned by root');
  await ownedByUser(file);
  chmodSync(file, 0o622);
  t.false(await hitNow(), 'writable by others');
  chmodSync(file, 0o600);
  t.true(await hitNow());

  // Not a plain file at all: a symlink to a good record of the user's, and a
  // FIFO (which no one will ever write), each planted at the record's name.
  const planted = async (make) => {
    for (const f of records(cache)) rmSync(join(cache, f));
    await make();
    await execa('chown', ['-h', `${testUser().uid}:${testUser().gid}`, file]);
    const noNode = await run(args, NO_NODE, { timeout: 30000 });
    t.false(noNode.timedOut, 'not left waiting on the planted file');
    t.false(said(noNode, 'hit'), noNode.stderr);
    t.is(noNode.exitCode, 31, 'needed Node: the planted file was not used');
    const planned = await run(args, {}, { timeout: 30000 });
    t.is(planned.stdout, 'ok', planned.stderr);
    return planned;
  };
  const target = join(cache, '..', 'good-record');
  writeFileSync(target, good, { mode: 0o600 });
  await ownedByUser(target);
  const viaLink = await planted(() => symlinkSync(target, file));
  t.true(said(viaLink, 'miss \\(record unreadable\\)'), viaLink.stderr);
  t.true(lstatSync(file).isSymbolicLink(), 'the link is left alone');
  t.deepEqual(readFileSync(target), good, 'nothing written through the link');
  const viaFifo = await planted(() => execa('mkfifo', [file]));
  t.true(said(viaFifo, 'miss \\(record not a plain file of yours\\)'), viaFifo.stderr);
  t.true(lstatSync(file).isFIFO());
  for (const f of records(cache)) rmSync(join(cache, f));
  t.is((await run(args)).exitCode, 0);
  t.true(await hitNow());

  // Another key's record under this name (a hash collision, or a copy):
  // another command name (the key leaves out the command's arguments).
  const other = [img, '--', 'printf', 'other'];
  t.is((await run(other)).exitCode, 0);
  const otherName = records(cache).find((n) => n !== name);
  writeFileSync(file, readFileSync(join(cache, otherName)));
  await ownedByUser(file);
  const swapped = await run(args);
  t.is(swapped.stdout, 'ok', 'the other key\'s plan is not run');
  t.true(said(swapped, 'miss \\(corrupt record, removed\\)'), swapped.stderr);
});

test('the plan directory holds at most 256 records: the least recently used go, and leftovers', async (t) => {
  const { cache, run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  t.is((await run([img, '--', 'true'])).exitCode, 0);   // creates the directory
  const old = Date.now() / 1000 - 3600;
  for (let i = 0; i < 300; i++) {
    const f = join(cache, i.toString(16).padStart(16, '0'));
    writeFileSync(f, 'stale');
    utimesSync(f, old + i, old + i);
  }
  // What a killed writer leaves, and the lock of a key that kept no record.
  const leftovers = ['00000000000000ff.4242.tmp', 'feedfacefeedface.lock'];
  // Kept: an old lock of a key that has a record, and a new orphan lock (its launch may still be planning).
  const kept = [`${(299).toString(16).padStart(16, '0')}.lock`, 'feedfacefeedfac0.lock'];
  for (const f of [...leftovers, kept[0]]) {
    writeFileSync(join(cache, f), '');
    utimesSync(join(cache, f), old, old);
  }
  writeFileSync(join(cache, kept[1]), '');
  await ownedByUser(cache);
  const r = await run([img, '--', 'echo', 'new']);
  t.is(r.stdout, 'new', r.stderr);
  for (const f of leftovers) t.false(existsSync(join(cache, f)), `${f} removed`);
  for (const f of kept) t.true(existsSync(join(cache, f)), `${f} kept`);
  const left = records(cache);
  t.true(left.length <= 256, `${left.length} records left`);
  t.false(left.includes('0'.padStart(16, '0')), 'the oldest went');
  t.true(left.includes((299).toString(16).padStart(16, '0')), 'a recent one stayed');
  t.true(said(await run([img, '--', 'echo', 'new'], NO_NODE), 'hit'), 'ours stayed');
});

/** What a launcher gives rank I of a step, and not its peers. */
const rankEnv = (i) => ({ SLURM_PROCID: String(i), SLURM_LOCALID: String(i), PMIX_RANK: String(i),
  OMPI_COMM_WORLD_RANK: String(i), OMPI_COMM_WORLD_LOCAL_RANK: String(i) });

test('--join: the ranks of a step on a node plan once; the others wait for that record and hit', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const n = 4;
  const args = ['--join', `--join-ct=${n}`, '--join-tag=memo-test', img, '--', 'sh', '-c',
    'echo "$(readlink /proc/self/ns/user) $PMIX_RANK $SLURM_PROCID $OMPI_COMM_WORLD_RANK"'];
  // Each rank its own rank variables, as srun and mpirun give them: a plan
  // that depended on one's value would hold for one rank only.
  const ranks = await Promise.all(Array.from({ length: n }, (_, i) => run(args, rankEnv(i))));
  for (const r of ranks) t.is(r.exitCode, 0, r.stderr);
  t.is(new Set(ranks.map((r) => r.stdout.split(' ')[0])).size, 1, 'one container');
  t.deepEqual(ranks.map((r) => r.stdout.split(' ').slice(1).join(' ')), ranks.map((_, i) => `${i} ${i} ${i}`),
    'each rank sees its own rank');
  t.is(ranks.filter((r) => said(r, 'miss')).length, 1, ranks.map((r) => r.stderr).join('\n---\n'));
  t.is(ranks.filter((r) => said(r, 'hit')).length, n - 1);
});

needs(test, notRoot)('root\'s launches are memoized too', async (t) => {
  const cache = join(await scratch(t, 'memo'), 'root-plans');
  const img = image('busybox');
  await settled(img);
  const env = { CH_RUN_CACHE_DIR: cache, CH_RUN_MEMO_VERIFY: '0' };
  t.is((await ch('ch-run', ['-v', img, '--', 'id', '-u'], { root: true, env })).stdout, '0');
  const hit = await ch('ch-run', ['-v', img, '--', 'id', '-u'], { root: true, env: { ...env, ...NO_NODE } });
  t.is(hit.stdout, '0', hit.stderr);
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(statSync(cache).uid, 0);
});

test('a command line run in a few environments keeps a record for each (4 per key)', async (t) => {
  const { cache, run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = [img, '--', 'sh', '-c', 'echo $HOME'];
  const homes = ['/tmp', '/root', '/home', '/mnt', '/dev'];   // HOME is a dependency: each its own record
  for (const h of homes.slice(0, 4)) t.is((await run(args, { HOME: h })).exitCode, 0);
  t.is(records(cache).length, 4);
  for (const h of homes.slice(0, 4)) {
    const r = await run(args, { HOME: h, ...NO_NODE });
    t.true(said(r, 'hit'), `${h}: ${r.stderr}`);
    t.is(r.stdout, h);
  }
  // A fifth replaces the least recently used (the first, touched longest ago).
  t.is((await run(args, { HOME: homes[4] })).exitCode, 0);
  t.is(records(cache).length, 4);
  t.true(said(await run(args, { HOME: homes[4], ...NO_NODE }), 'hit'));
  t.false(said(await run(args, { HOME: homes[0], ...NO_NODE }), 'hit'), 'the least recently used went');
});

test('concurrent launches in two environments: one plans for each, the others wait and hit', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = [img, '--', 'sh', '-c', 'echo $HOME'];
  const launches = await Promise.all(Array.from({ length: 8 }, (_, i) => run(args, { HOME: i % 2 ? '/tmp' : '/root' })));
  for (const r of launches) t.is(r.exitCode, 0, r.stderr);
  t.is(launches.filter((r) => said(r, 'miss')).length, 2, memoLines(launches));
  t.is(launches.filter((r) => said(r, 'hit')).length, 6, memoLines(launches));
});

test('a planner that kept its record just before a waiter came: the waiters of other conditions plan one at a time, and the rest hit', async (t) => {
  // The race that made the test above fail now and then: the planner of one
  // environment keeps its record a moment before it lets go of the lock; a
  // launch of another environment that comes in between waits, wakes to no
  // newer record, and took that for "kept no record" (then every such waiter
  // planned, side by side). Here the lock is held by hand just after one
  // environment's record is kept, while two launches of another wait on it.
  const { cache, run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = [img, '--', 'sh', '-c', 'echo $HOME'];
  const a = await run(args, { HOME: '/root' });
  t.true(said(a, 'miss'), a.stderr);
  let lock;
  for (let i = 0; i < 200 && !lock; i++) {   // the record is kept by a storer, just after the command
    const names = readdirSync(cache);
    if (names.some((n) => !n.endsWith('.lock') && !n.startsWith('.'))) lock = names.find((n) => n.endsWith('.lock'));
    if (!lock) await new Promise((r) => setTimeout(r, 5));
  }
  t.truthy(lock, readdirSync(cache).join(' '));
  const holder = execa('flock', ['-x', join(cache, lock), 'sleep', '0.4'], { reject: false });
  for (let i = 0; i < 100; i++) {   // held once a try fails
    if ((await execa('flock', ['-n', join(cache, lock), 'true'], { reject: false })).exitCode !== 0) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const [b1, b2] = await Promise.all([run(args, { HOME: '/tmp' }), run(args, { HOME: '/tmp' })]);
  await holder;
  for (const r of [b1, b2]) t.is(r.exitCode, 0, r.stderr);
  t.is([b1, b2].filter((r) => said(r, 'miss')).length, 1, memoLines([b1, b2]));
  t.is([b1, b2].filter((r) => said(r, 'hit')).length, 1, memoLines([b1, b2]));
});

test('a hit runs the core in the launcher\'s process: the command gets the same process state as from a fresh plan', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const probe = [img, '--', 'sh', '-c', 'ls /proc/self/fd; grep -E "^(Uid|Gid|Groups|SigIgn|SigBlk|NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):" /proc/self/status; wc -l < /proc/self/mountinfo; cat /proc/self/comm'];
  const fresh = await run(probe, { CH_RUN_NO_CACHE: '1' });
  t.is(fresh.exitCode, 0, fresh.stderr);
  t.is((await run(probe)).exitCode, 0);
  const hit = await run(probe, NO_NODE);
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.stdout, fresh.stdout);
  t.regex(hit.stdout, /^NoNewPrivs:\s+1$/m);
});

needs(test, noFuse, { tool: true })('a .sqfs image is memoized too, and a hit leaves no squashfuse or mount behind', async (t) => {
  const { run: runMemo } = await memoRun(t);
  const file = await userSquash(t, 'memo-sq');
  // The first launch lists the image and caches the listing in
  // /var/tmp/$USER.ch (so it isn't memoized: a file it read changed
  // meanwhile); once that cache is over 1 s old, a launch is.
  const args = [file, '--', 'cat', '/etc/os-release'];
  // A private mount per launch (CH_RUN_SQUASH_LINGER=0), so that nothing
  // may be left once the command ends; shared mounts: the next test.
  const run = (a, env = {}) => runMemo(a, { CH_RUN_SQUASH_LINGER: '0', ...env });
  // Under the suite's verify mode too: the planner's own write of the
  // listing cache makes that plan unstorable, not a verify error.
  const first = await run(args, { CH_RUN_MEMO_VERIFY: '1' });
  t.is(first.exitCode, 0, first.stderr);
  t.regex(first.stderr, /plan memo: not stored: wrote .*list-.*\.json while planning/);
  // Other tests' SquashFS launches (the same user's /var/tmp/$USER.ch) may
  // change what a plan read in between: a few rounds, each logged.
  let hit;
  for (let round = 0; round < 3; round++) {
    await listingsSettled();
    const planned = await run(args);
    t.is(planned.exitCode, 0, planned.stderr);
    hit = await run(args, NO_NODE);
    if (said(hit, 'hit')) break;
    t.log(`round ${round}: ${planned.stderr.split('\n').filter((l) => /plan memo/.test(l)).join(' / ')}`);
  }
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.exitCode, 0, hit.stderr);
  t.regex(hit.stdout, /busybox test image/);
  const left = await execa('pgrep', ['-u', String(testUser().uid), '-f', file], { reject: false });
  t.is(left.stdout, '', 'no squashfuse left');
});

needs(test, noFuse, { tool: true })('a .sqfs hit with a live shared mount: the plan holds, no squashfuse starts (issue #23)', async (t) => {
  const { run: runMemo } = await memoRun(t);
  const file = await userSquash(t, 'memo-sq-shared');
  const mark = `chtk-memo-${Math.random().toString(36).slice(2)}`;
  const run = (a, env = {}) => runMemo(a, { CH_RUN_SQUASH_LINGER: '20', CHTK_MEMO_MARK: mark, ...env });
  const fuses = () => readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d)).filter((pid) => {
    try {
      return /^squashfuse(_ll)?\0/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'))
        && readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`CHTK_MEMO_MARK=${mark}`);
    } catch { return false; }
  });
  const args = [file, '--', 'cat', '/etc/os-release'];
  t.is((await run(args, { CH_RUN_MEMO_VERIFY: '1' })).exitCode, 0);   // lists the image, caches the listing
  const cacheDir = `/var/tmp/${testUser().name}.ch`;
  let hit, planned;
  for (let round = 0; round < 3; round++) {
    await settled(...readdirSync(cacheDir).filter((n) => n.startsWith('list-')).map((n) => join(cacheDir, n)));
    planned = await run(args);
    t.is(planned.exitCode, 0, planned.stderr);
    hit = await run(args, NO_NODE);
    if (said(hit, 'hit')) break;
    t.log(`round ${round}: ${planned.stderr.split('\n').filter((l) => /plan memo/.test(l)).join(' / ')}`);
  }
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.exitCode, 0, hit.stderr);
  t.regex(hit.stdout, /busybox test image/);
  t.regex(hit.stderr, /mounted at .* \(shared\)/);
  t.notRegex(hit.stderr, /holder started/, 'the hit started no squashfuse');
  t.is(fuses().length, 1, 'one squashfuse for all these launches');
  for (const pid of fuses()) process.kill(Number(pid), 'SIGKILL');   // not the linger: the test is over
});

needs(test, noFuse, { tool: true })('a subprocess\'s plan depends on its declared inputs, not on every variable (issue #22)', async (t) => {
  // `unsquashfs -cat` reads the image's /ch/environment (bare --set-env).
  // Recording by patching process.env made every variable a dependency of
  // such a plan (spawnSync walks the environment it passes on): a variable
  // the planner never looked at, different for every rank, was a miss.
  const { run } = await memoRun(t);
  const file = await userSquash(t, 'memo-sq-env');
  const args = ['--set-env', file, '--', 'true'];
  t.is((await run(args, { CH_RUN_MEMO_VERIFY: '1' })).exitCode, 0);   // lists the image, caches the listing
  let hit;
  for (let round = 0; round < 3; round++) {
    await listingsSettled();
    const planned = await run(args, { CHTK_UNRELATED: 'rank 0' });
    t.is(planned.exitCode, 0, planned.stderr);
    t.false(said(planned, 'not stored'), planned.stderr);
    hit = await run(args, { ...NO_NODE, CHTK_UNRELATED: 'rank 1' });
    if (said(hit, 'hit')) break;
    t.log(`round ${round}: ${hit.stderr.split('\n').filter((l) => /plan memo/.test(l)).join(' / ')}`);
  }
  t.true(said(hit, 'hit'), hit.stderr);
  t.is(hit.exitCode, 0, hit.stderr);
});

test('--join under Slurm: the ranks of a later step hit too, with that step\'s own group tag', async (t) => {
  const { run, cache: cacheDbg } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const args = ['--join', '--join-ct=2', img, '--', 'true'];
  const step = (id) => Promise.all([0, 1].map((i) => run(args, { SLURM_JOB_ID: '77', SLURM_STEP_ID: String(id), SLURM_NODEID: '0', ...rankEnv(i) })));
  const first = await step(1);
  for (const r of first) t.is(r.exitCode, 0, r.stderr);
  t.is(first.filter((r) => said(r, 'miss')).length, 1);
  const later = await step(2);
  // On failure, what the records depend on of the environment.
  if (!later.every((r) => said(r, 'hit')))
    for (const f of records(cacheDbg)) t.log(f, readFileSync(join(cacheDbg, f), 'latin1').split('\0').filter((x, i, a) => /^env/.test(a[i - 1] ?? '')).join(' '));
  for (const r of later) {
    t.is(r.exitCode, 0, r.stderr);
    t.true(said(r, 'hit'), r.stderr);
  }
  t.regex(later.map((r) => r.stderr).join('\n'), /join: winner of group slurm-77\.2\.0 \(2 peers\)/);
  // What the tag's form depends on is checked: no node id, another form, a miss.
  const noNode = await Promise.all([0, 1].map(() => run(args, { SLURM_JOB_ID: '77', SLURM_STEP_ID: '3', ...NO_NODE })));
  t.true(noNode.every((r) => r.exitCode === 31), 'a step without SLURM_NODEID is no hit');
});

test('outside a Slurm job a plan does not depend on Slurm\'s spool directory; inside one it does', async (t) => {
  // Issue #21's flake: a launch beside the Slurm tests failed verify mode
  // because slurmd's /var/spool/slurmd appeared while it planned.
  const { cache, run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  const recordsText = () => records(cache).map((f) => readFileSync(join(cache, f), 'latin1')).join('\n');
  t.is((await run([img, '--', 'true'])).exitCode, 0);
  t.is(records(cache).length, 1, 'a record kept');
  t.false(recordsText().includes('/var/spool/slurmd'), 'no Slurm path in a plan outside a job');
  t.is((await run([img, '--', 'true'], { SLURM_JOB_ID: '5', SLURM_STEP_ID: '0' })).exitCode, 0);
  t.is(records(cache).length, 2);
  t.true(recordsText().includes('/var/spool/slurmd'), 'inside a job the spool is looked at');
});

/**
 * A Node preload (NODE_OPTIONS=--require) that turns directory DIR into a
 * file, or back, once the front end has recorded its plan (just before it
 * says it is done): another process changing an input while ch-run plans.
 * ONCE: only the first front end does it.
 */
function flipper(dir, once) {
  // At the hand-over: the done byte, written by ch_host.node's writeAll
  // (which ch-run's loader leaves under this symbol) or, without it, by
  // fs.writeSync.
  return `const fs = require('fs');
const { existsSync, mkdirSync, rmSync, statSync, writeFileSync } = fs;   // bound before this preload patches writeSync
function flip(fd) {
  if (String(fd) === process.env.CH_RUN_DONE_FD && !${once ? `existsSync(${JSON.stringify(`${dir}.once`)})` : 'false'}) {
    ${once ? `writeFileSync(${JSON.stringify(`${dir}.once`)}, '');` : ''}
    const d = ${JSON.stringify(dir)};
    if (statSync(d).isDirectory()) { rmSync(d, { recursive: true }); writeFileSync(d, ''); }
    else { rmSync(d); mkdirSync(d); writeFileSync(d + '/marker', ''); }
  }
}
const write = fs.writeSync;
fs.writeSync = function (fd, ...rest) { flip(fd); return write.call(this, fd, ...rest); };
let addon;
Object.defineProperty(globalThis, Symbol.for('ch-toolkit.hostfs'), { configurable: true, get: () => addon, set: (a) => {
  const writeAll = a.writeAll;
  a.writeAll = function (fd, data) { flip(fd); return writeAll.call(this, fd, data); };
  addon = a;
} });
`;
}

test('verify mode: an input another process changed while ch-run planned means planning again, a few times at most', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  const dir = await scratch(t, 'memo-flip');
  await settled(img);
  const tmp = join(dir, 'tmpdir');   // TMPDIR: bound at /tmp if it is a directory
  const args = [img, '--', 'sh', '-c', 'test -e /tmp/marker && echo TMPDIR || echo host /tmp'];
  for (const [once, file] of [[true, 'once.cjs'], [false, 'always.cjs']]) {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(`${tmp}.once`, { force: true });
    mkdirSync(tmp);
    writeFileSync(join(tmp, 'marker'), '');
    writeFileSync(join(dir, file), flipper(tmp, once));
    await ownedByUser(dir);
    const r = await run(args, { CH_RUN_MEMO_VERIFY: '1', TMPDIR: tmp, NODE_OPTIONS: `--require ${join(dir, file)}` });
    const again = r.stderr.match(/plan memo verify: stat changed: .*tmpdir right after planning; planning again/g) ?? [];
    if (once) {
      // Changed once: the second plan holds, and is what runs (TMPDIR is now a file: host /tmp).
      t.is(r.exitCode, 0, r.stderr);
      t.is(r.stdout, 'host /tmp');
      t.is(again.length, 1, r.stderr);
    } else {
      // Changed after every plan (as an input the recorder got wrong would be): a failure, not a loop.
      t.is(r.exitCode, 31, r.stderr);
      t.is(again.length, 2, r.stderr);
      t.regex(r.stderr, /error: plan memo verify: stat changed: .*tmpdir right after planning \(3 plans in a row\)/);
      t.is(r.stdout, '');
    }
  }
});

test('verify mode with a Node wrapper (CH_RUN_NODE): the environment is still compared, but for what its shell sets', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  const dir = await scratch(t, 'memo-wrapper');
  await settled(img);
  // dash reorders the environment and adds PWD: not a difference a hit would make.
  const plain = join(dir, 'node-plain');
  writeFileSync(plain, `#!/bin/sh\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
  // A wrapper that changes a variable: a fresh launch's command sees it, a hit's would not.
  const changes = join(dir, 'node-changes');
  writeFileSync(changes, `#!/bin/sh\nFOO=wrapper exec ${process.execPath} "$@"\n`, { mode: 0o755 });
  await ownedByUser(dir);
  const args = [img, '--', 'sh', '-c', 'echo $FOO'];
  const env = { CH_RUN_MEMO_VERIFY: '1', FOO: 'caller', ZZ: 'last', AA: 'first' };
  const ok = await run(args, { ...env, CH_RUN_NODE: plain });
  t.is(ok.exitCode, 0, ok.stderr);
  t.is(ok.stdout, 'caller');
  const bad = await run(args, { ...env, CH_RUN_NODE: changes });
  t.is(bad.exitCode, 31, bad.stderr);
  t.regex(bad.stderr, /plan memo verify: rebuilt environment differs \(Node wrapper CH_RUN_NODE=.*node-changes\): planned 'FOO=wrapper', rebuilt 'FOO=caller'/);
});

// ---- "change -> miss", for every kind of input a plan reads ----
// Each: a first launch plans, a second hits (no Node); then the input
// changes, and a launch without Node must not hit (it needs Node: exit 31),
// and a fresh plan gives what the change says.

/**
 * RUN (as memoRun's) ARGS with ENV; BEFORE the expected stdout (if known);
 * CHANGE the input; AFTER checks the fresh launch (its stdout, or a function
 * of it and the first launch).
 */
async function changeMisses(t, run, { args, env = {}, opts = {}, before, change, after, what }) {
  const first = await run(args, env, opts);
  t.is(first.exitCode, 0, `${what}: ${first.stderr}`);
  if (before !== undefined) t.is(first.stdout, before, what);
  const hit = await run(args, { ...env, ...NO_NODE }, opts);
  t.true(said(hit, 'hit'), `${what}: memoized while nothing changed: ${hit.stderr}`);
  t.is(hit.stdout, first.stdout, what);
  const changed = await change();
  const o = { ...opts, ...(changed?.opts ?? {}) };
  const miss = await run(args, { ...env, ...NO_NODE }, o);
  t.false(said(miss, 'hit'), `${what} changed: a hit: ${miss.stderr}`);
  t.is(miss.exitCode, 31, `${what} changed: needed Node`);
  const fresh = await run(args, env, o);
  if (typeof after === 'function') after(fresh, first);
  else t.is(fresh.stdout, after, `${what}: ${fresh.stderr}`);
}

test('change -> miss: a --set-env file', async (t) => {
  const { run } = await memoRun(t);
  const dir = await scratch(t, 'memo-inputs');
  const envFile = join(dir, 'env');
  writeFileSync(envFile, 'X=one\n');
  await ownedByUser(dir);
  const img = image('busybox');
  await settled(dir, img);
  await changeMisses(t, run, {
    what: '--set-env file', args: [`--set-env=${envFile}`, img, '--', 'sh', '-c', 'echo $X'], before: 'one',
    change: () => writeFileSync(envFile, 'X=two\n'), after: 'two',
  });
});

test('change -> miss: a bind source', async (t) => {
  const { run } = await memoRun(t);
  const dir = await scratch(t, 'memo-inputs');
  const src = join(dir, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'in-src'), '');
  await ownedByUser(dir);
  const img = image('busybox');
  await settled(dir, img);
  await changeMisses(t, run, {
    what: 'bind source', args: ['-b', `${src}:/mnt`, img, '--', 'ls', '/mnt'], before: 'in-src',
    change: () => { rmSync(src, { recursive: true }); writeFileSync(src, ''); },
    after: (r) => {
      t.is(r.exitCode, 31);
      t.regex(r.stderr, /can't bind .*\/src to \/mnt: file onto directory/);
    },
  });
});

test('change -> miss: a symlinked image path', async (t) => {
  const { run } = await memoRun(t);
  const dir = await scratch(t, 'memo-inputs');
  const img1 = await imageCopy(t), img2 = await imageCopy(t);
  writeFileSync(join(img1, 'etc', 'marker'), 'one\n');
  writeFileSync(join(img2, 'etc', 'marker'), 'two\n');
  const link = join(dir, 'img');
  symlinkSync(img1, link);
  await ownedByUser(dir);
  await ownedByUser(img1);
  await ownedByUser(img2);
  await settled(dir, img1, img2);
  await changeMisses(t, run, {
    what: 'symlinked image path', args: [link, '--', 'cat', '/etc/marker'], before: 'one',
    change: () => { rmSync(link); symlinkSync(img2, link); }, after: 'two',
  });
});

test('change -> miss: the working directory', async (t) => {
  const { run } = await memoRun(t);
  const img = image('busybox');
  await settled(img);
  await changeMisses(t, run, {
    what: 'cwd', args: [img, '--', 'pwd'], opts: { cwd: '/mnt' }, before: '/mnt',
    change: () => ({ opts: { cwd: '/home' } }), after: '/home',
  });
});

/**
 * memoRun's RUN, but each launch in a private mount and UTS namespace where
 * root first ran the shell command ns.setup (bind a passwd copy over
 * /etc/passwd, set the host name): inputs changed for these launches only.
 */
async function nsMemoRun(t) {
  const { cache } = await memoRun(t);
  const ns = { setup: 'true' };
  const run = (args, env = {}, opts = {}) => execa('unshare',
    ['-m', '-u', '--propagation', 'private', 'sh', '-c', `${ns.setup} && exec "$@"`, 'sh',
      ...asUser(), join(PKG, 'bin', 'ch-run'), '-v', ...args],
    { reject: false, extendEnv: false, cwd: '/', ...opts,
      env: userEnv(undefined, { CH_RUN_CACHE_DIR: cache, CH_RUN_MEMO_VERIFY: '0', CH_RUN_NODE: 'node', ...env }) });
  return { ns, run };
}

/** Copies of /etc/passwd and /etc/group in DIR, the test user's and group's names changed to user{one,two}, group{one,two}. */
function renamedIdFiles(dir) {
  const u = testUser();
  const renamed = (file, id, name) => readFileSync(file, 'utf8').split('\n')
    .map((l) => (l.split(':')[2] === String(id) ? [name, ...l.split(':').slice(1)].join(':') : l)).join('\n');
  for (const n of ['one', 'two']) {
    writeFileSync(join(dir, `passwd-${n}`), renamed('/etc/passwd', u.uid, `user${n}`), { mode: 0o644 });
    writeFileSync(join(dir, `group-${n}`), renamed('/etc/group', u.gid, `group${n}`), { mode: 0o644 });
  }
  return (p, g) => `mount --bind ${join(dir, `passwd-${p}`)} /etc/passwd && mount --bind ${join(dir, `group-${g}`)} /etc/group`;
}

const nsTest = needs(test, notRoot && 'makes namespaces to change /etc/passwd, /etc/group or the host name for its launches only');
const IDS = ['sh', '-c', 'echo "$(id -un) $(id -gn)"'];

nsTest('change -> miss: the user name (passwd)', async (t) => {
  const { ns, run } = await nsMemoRun(t);
  const files = renamedIdFiles(await scratch(t, 'memo-ns'));
  const img = image('busybox');
  await settled(img);
  await new Promise((r) => setTimeout(r, 1100));   // the copies: over 1 s old
  ns.setup = files('one', 'one');
  await changeMisses(t, run, {
    what: 'user name', args: [img, '--', ...IDS], before: 'userone groupone',
    change: () => { ns.setup = files('two', 'one'); }, after: 'usertwo groupone',
  });
});

nsTest('change -> miss: the group name (group)', async (t) => {
  const { ns, run } = await nsMemoRun(t);
  const files = renamedIdFiles(await scratch(t, 'memo-ns'));
  const img = image('busybox');
  await settled(img);
  await new Promise((r) => setTimeout(r, 1100));
  ns.setup = files('one', 'one');
  await changeMisses(t, run, {
    what: 'group name', args: [img, '--', ...IDS], before: 'userone groupone',
    change: () => { ns.setup = files('one', 'two'); }, after: 'userone grouptwo',
  });
});

nsTest('change -> miss: the host name', async (t) => {
  const { ns, run } = await nsMemoRun(t);
  const img = image('busybox');
  await settled(img);
  // Read where Open MPI's session directory goes for a PMIx rank of a Slurm
  // step whose PMIx client directory isn't there.
  const rank = { PMIX_NAMESPACE: 'ns', SLURM_JOB_ID: '9', SLURM_STEP_ID: '0', SLURM_CONF: '/nonexistent' };
  ns.setup = 'hostname memo-host-one';
  await changeMisses(t, run, {
    what: 'host name', env: rank, args: [img, '--', 'sh', '-c', 'echo $OMPI_MCA_orte_top_session_dir'],
    before: `/tmp/ompi.memo-host-one.${testUser().uid}`,
    change: () => { ns.setup = 'hostname memo-host-two'; }, after: `/tmp/ompi.memo-host-two.${testUser().uid}`,
  });
});

/** A CDI spec directory in a scratch directory, and an image (with /run, where injected files go). */
async function cdiSetup(t) {
  const dir = await scratch(t, 'memo-cdi');
  mkdirSync(join(dir, 'cdi'));
  mkdirSync(join(dir, 'cdi2'));   // a later directory, empty for now
  writeFileSync(join(dir, 'cdi', 'dev.json'), cdiSpec('example.com/dev', 'one'), { mode: 0o644 });
  await ownedByUser(dir);
  const img = await imageCopy(t);
  mkdirSync(join(img, 'run'));
  await settled(dir, img);
  return { dir, img, env: { CH_RUN_CDI_DIRS: `${join(dir, 'cdi')}:${join(dir, 'cdi2')}` } };
}
const cdiSpec = (kind, v) => JSON.stringify({ cdiVersion: '0.6.0', kind, devices: [{ name: 'x', containerEdits: { env: [`V=${v}`] } }] });

test('change -> miss: a CDI spec', async (t) => {
  const { run } = await memoRun(t);
  const { dir, img, env } = await cdiSetup(t);
  await changeMisses(t, run, {
    what: 'CDI spec', env, args: ['--device=example.com/dev=x', img, '--', 'sh', '-c', 'echo $V'], before: 'one',
    change: () => writeFileSync(join(dir, 'cdi', 'dev.json'), cdiSpec('example.com/dev', 'two')), after: 'two',
  });
});

test('change -> miss: a CDI spec added to a later spec directory', async (t) => {
  const { run } = await memoRun(t);
  const { dir, img, env } = await cdiSetup(t);
  await changeMisses(t, run, {
    what: 'CDI spec directory', env, args: ['--device=example.com/dev=x', img, '--', 'sh', '-c', 'echo $V'], before: 'one',
    // A later directory's spec wins: the same device, another value.
    change: () => writeFileSync(join(dir, 'cdi2', 'dev.json'), cdiSpec('example.com/dev', 'later')), after: 'later',
  });
});

test('change -> miss: the image\'s ld.so.cache (merged into the one --gpu generates)', async (t) => {
  const { run } = await memoRun(t);
  const { buildGpuFixture, fxEnv, LDCONFIG } = await import('./fixtures/gpu/fixture.js');
  const fx = join(await scratch(t, 'memo-gpu'), 'fx');
  await buildGpuFixture(fx);
  const img = await imageCopy(t);
  mkdirSync(join(img, 'run'));
  const cache = join(img, 'etc', 'ld.so.cache');
  const conf = join(fx, 'image-ld.so.conf');
  // The image's loader cache: the host's trusted directories, then those and the fixture's libibverbs too.
  writeFileSync(conf, '');
  await execa(LDCONFIG, ['-C', cache, '-f', conf]);
  await ownedByUser(img);
  await settled(img, fx);
  await changeMisses(t, run, {
    what: 'image ld.so.cache', env: fxEnv(fx), args: ['--gpu', img, '--', 'sh', '-c', 'wc -c < /etc/ld.so.cache'],
    change: async () => {
      writeFileSync(conf, `${join(fx, 'ibv')}\n`);
      await execa(LDCONFIG, ['-C', cache, '-f', conf]);
    },
    after: (r, first) => {
      t.is(r.exitCode, 0, r.stderr);
      t.not(r.stdout, first.stdout, 'the generated cache holds the image\'s new entry');
    },
  });
});

test('replay mode (the suite\'s): a launch is launched again as a real hit, whose command would see the same', async (t) => {
  const { run } = await memoRun(t);
  const agreed = /plan memo replay: a second launch hit; its command would see the same \(\d+ bytes/;
  const img = image('busybox');
  await settled(img);
  const replay = { CH_RUN_MEMO_VERIFY: 'replay' };
  const r = await run(['-v', '--set-env=A=1', img, '--', 'sh', '-c', 'echo $A'], replay);   // -vv in all
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, '1');
  t.regex(r.stderr, agreed);
  // A writable image whose bind target the core makes (changing the image):
  // the second launch goes first, so it still hits, and both see the target.
  const w = await imageCopy(t);
  const src = await scratch(t, 'memo-replay');
  await settled(w, src);
  const made = await run(['-v', '-w', '-b', `${src}:/made/here`, w, '--', 'ls', '-d', '/made/here'], replay);
  t.is(made.exitCode, 0, made.stderr);
  t.is(made.stdout, '/made/here');
  t.regex(made.stderr, agreed);
  // --join is not replayed (a probe would count as a peer).
  const joined = await run(['-v', '--join-ct=1', '--join-tag=memo-replay', img, '--', 'true'], replay);
  t.is(joined.exitCode, 0, joined.stderr);
  t.notRegex(joined.stderr, /plan memo replay/);
});
