// Command-line conventions of the yargs-parsed commands (ch-build,
// ch-builder2tar, ch-docker2tar, ch-fromhost, ch-pull, ch-convert; lib/util/cli.ts): -h/-?/--help
// as the manual, --usage, -V/--version, unknown options and missing values
// refused with exit 2, shell completion; and the man pages built from every
// command's --help.

import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { asUser, BIN, ch, image, PKG, TEST_DIR, userEnv } from './helpers/env.js';

const VERSION = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8')).version;
const YARGS_COMMANDS = ['ch-build', 'ch-builder2tar', 'ch-docker2tar', 'ch-fromhost', 'ch-pull', 'ch-convert'];
/** An option of each command that takes a value. */
const VALUE_OPTION = { 'ch-fromhost': '--dest', 'ch-pull': '--tar', 'ch-convert': '-i' };

for (const prog of YARGS_COMMANDS) {
  test(`${prog}: -h, -? and --help print the manual`, async (t) => {
    for (const flag of ['-h', '-?', '--help']) {
      const r = await ch(prog, [flag]);
      t.is(r.exitCode, 0, `${flag}: ${r.stderr}`);
      t.regex(r.stdout, new RegExp(`^Usage: ${prog} `), flag);
      t.regex(r.stdout, /\nExit status/, `${flag}: exit statuses documented`);
      t.regex(r.stdout, /--version/);
    }
  });

  test(`${prog}: --usage, -V and --version`, async (t) => {
    const u = await ch(prog, ['--usage']);
    t.is(u.exitCode, 0, u.stderr);
    t.regex(u.stdout, new RegExp(`^Usage: ${prog} \\S[^\\n]*$`));   // one line
    for (const flag of ['-V', '--version']) {
      const r = await ch(prog, [flag]);
      t.is(r.exitCode, 0, r.stderr);
      t.is(r.stdout, VERSION);
    }
  });

  test(`${prog}: a missing option value is a usage error (exit 2)`, async (t) => {
    const opt = VALUE_OPTION[prog] ?? '-b';
    const r = await ch(prog, [opt]);
    t.is(r.exitCode, 2);
    t.regex(r.stderr, new RegExp(`^${prog}\\[\\d+\\]: error: Not enough arguments following: ${opt.replace(/^-+/, '')}\\n`
      + `Try '${prog} --help' for more information\\.`));
  });

  test(`${prog}: shell completion`, async (t) => {
    const r = await ch(prog, ['completion']);
    t.is(r.exitCode, 0, r.stderr);
    t.true(r.stdout.includes(`###-begin-${prog}-completions-###`));
    const c = await ch(prog, ['--get-yargs-completions', prog, '--']);
    t.is(c.exitCode, 0, c.stderr);
    t.true(c.stdout.split('\n').includes('--help'));
  });
}

for (const prog of ['ch-builder2tar', 'ch-docker2tar', 'ch-fromhost', 'ch-pull', 'ch-convert']) {
  test(`${prog}: an unknown option is a usage error (exit 2)`, async (t) => {
    const r = await ch(prog, ['--no-such-option', 'a', 'b']);
    t.is(r.exitCode, 2);
    t.regex(r.stderr, /error: Unknown argument: no-such-option\nTry '.*--help' for more information\./);
  });
}

test('ch-build: unknown options go to the builder, attached values are read as getopt does', async (t) => {
  const r = await ch('ch-build', ['-n', '-bpodman', '-tTAG', '--no-such-option', '--build-arg', 'A=1', 'ctx']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'podman build -t TAG --no-such-option --build-arg A=1 ctx');
  const u = await ch('ch-build', ['-n', 'ctx']);
  t.is(u.exitCode, 2);
  t.regex(u.stderr, /no tag given/);
});

test('ch-fromhost: usage errors exit 2, failures 31', async (t) => {
  const img = image('busybox');
  for (const [args, re] of [
    [[], /no IMGDIR given/],
    [['--path', '/bin/true', img, img], /more than one IMGDIR given/],
    [['--dest', 'rel', '--path', '/bin/true', img], /--dest: must be absolute: rel/],
    [[img], /nothing to inject/],
  ]) {
    const r = await ch('ch-fromhost', args);
    t.is(r.exitCode, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re);
    t.regex(r.stderr, /Try 'ch-fromhost --help'/);
  }
  const f = await ch('ch-fromhost', ['--path', '/no/such/file', img]);
  t.is(f.exitCode, 31);
  t.regex(f.stderr, /can't inject \/no\/such\/file/);
});

test('ch-fromhost: a bad name in a --file list or --cmd output names the file and line (exit 31)', async (t) => {
  const img = image('busybox');
  const list = join(TEST_DIR, 'fromhost-list.txt');
  writeFileSync(list, '/bin/true\n\n  hi  \n');
  const r = await ch('ch-fromhost', ['--no-ldconfig', '--file', list, img]);
  t.is(r.exitCode, 31, r.stderr);
  t.regex(r.stderr, new RegExp(`^ch-fromhost\\[\\d+\\]: error: --file ${list}, line 3: not an absolute path: hi$`, 'm'));
  writeFileSync(list, '/no/such/file\n');
  const m = await ch('ch-fromhost', ['--no-ldconfig', '--file', list, img]);
  t.is(m.exitCode, 31, m.stderr);
  t.regex(m.stderr, new RegExp(`--file ${list}, line 1: can't inject /no/such/file: no such file`));
  const c = await ch('ch-fromhost', ['--no-ldconfig', '--cmd', 'echo /bin/true; echo rel', img]);
  t.is(c.exitCode, 31, c.stderr);
  t.regex(c.stderr, /--cmd echo \/bin\/true; echo rel, line 2 of its output: not an absolute path: rel$/m);
});

test('ch-tar2dir: -h and --help print the manual; ch-run: -? and --help do, -h is argp\'s invalid option (exit 64, as Charliecloud)', async (t) => {
  for (const flag of ['-h', '--help']) {
    const r = await ch('ch-tar2dir', [flag]);
    t.is(r.exitCode, 0, `${flag}: ${r.stderr}`);
    t.regex(r.stdout, /^Usage: ch-tar2dir /, flag);
  }
  for (const flag of ['-?', '--help']) {
    const r = await ch('ch-run', [flag]);
    t.is(r.exitCode, 0, `${flag}: ${r.stderr}`);
    t.regex(r.stdout, /^Usage: ch-run /, flag);
  }
  const h = await ch('ch-run', ['-h']);
  t.is(h.exitCode, 64, h.stderr);
  t.is(h.stdout, '');
  t.regex(h.stderr, /^ch-run\[\d+\]: error: invalid option -- 'h'\nTry 'ch-run --help' for more information\.$/m);
});

test('a man page for every command, from its --help', (t) => {
  for (const prog of ['ch-run', 'ch-tar2dir', ...YARGS_COMMANDS]) {
    const p = join(PKG, 'dist', 'man', `${prog}.1`);
    t.true(existsSync(p), p);
    const page = readFileSync(p, 'utf8');
    t.regex(page, new RegExp(`^\\.TH ${prog.toUpperCase()} 1 `));
    t.regex(page, new RegExp(`^Usage: ${prog} `, 'm'));
    t.regex(page, /^Exit status/m);
  }
});

// Issue #26: "ch-run needs Node on every compute node" is half true; the
// message a node without Node gives says which half, and what sites do.
test('ch-run without Node: says a launch with a memoized plan needs none, why this one does, and how sites provide Node (exit 31)', async (t) => {
  const how = "a launch with one never starts Node. On compute nodes, load your site's Node.js (e.g. module load nodejs) "
    + 'or set CH_RUN_NODE to a Node.js on a shared file system (CH_RUN_NODE=/shared/node-v20/bin/node)';
  const cases = [
    [{ CH_RUN_NODE: '/nonexistent/node' }, /^ch-run\[\d+\]: error: can't execute Node\.js \(CH_RUN_NODE=\/nonexistent\/node\): No such file or directory \(ENOENT\); ch-run needs node >= 20 on PATH or in CH_RUN_NODE to plan a launch it has no memoized plan for \(here: [^)]+\); /],
    [{ CH_RUN_NODE: '/nonexistent/node', CH_RUN_NO_CACHE: '1' }, /\(here: CH_RUN_NO_CACHE is set\)/],
    // No node on PATH at all (the launcher looks only there; env(1) sets it past setpriv).
    [{ NO_PATH: '1' }, /^ch-run\[\d+\]: error: can't execute Node\.js \(node\): No such file or directory \(ENOENT\); ch-run needs node >= 20 on PATH or in CH_RUN_NODE/],
  ];
  for (const [env, re] of cases) {
    const args = [image('busybox'), '--', 'echo', `never-${Date.now()}`];
    const bare = [...asUser(), '/usr/bin/env', 'PATH=/nonexistent', join(BIN, 'ch-run'), ...args];
    const r = env.NO_PATH ? await execa(bare[0], bare.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' })
      : await ch('ch-run', args, { env });
    t.is(r.exitCode, 31, JSON.stringify(env));
    t.regex(r.stderr, re);
    t.true(r.stderr.trimEnd().endsWith(how), r.stderr);
    t.is(r.stdout, '');
  }
});
