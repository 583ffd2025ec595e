// Bad options and environment: each must fail before anything runs, with one
// clear "ch-run[PID]: error: ..." line naming the bad input, and exit 31 (64
// for a command line argp can't parse, as Charliecloud).

import test from 'ava';
import { existsSync, rmSync } from 'node:fs';
import { ch, image } from '../helpers/env.js';

const IMG = () => image('busybox');

// [title, args (IMG stands for the image), extra env, regex the error must match, exit status (31 if absent)]
const CASES = [
  ['unknown long flag', ['--frobnicate', 'IMG', '--', 'true'], {}, /unrecognized option '--frobnicate'/, 64],
  ['unknown short flag', ['-Z', 'IMG', '--', 'true'], {}, /invalid option -- 'Z'/, 64],
  ['empty image path', ['', '--', 'true'], {}, /IMAGE must not be an empty string/],
  ['no image', [], {}, /no IMAGE specified/],
  ['image does not exist', ['/nonexistent/img', '--', 'true'], {}, /can't use image \/nonexistent\/img: .*ENOENT/],
  ['image is a file', ['/etc/passwd', '--', 'true'], {}, /can't use image \/etc\/passwd: not a directory/],
  ['--join-ct 0', ['--join-ct', '0', 'IMG', '--', 'true'], {}, /--join-ct: must be a positive integer: '0'/],
  ['--join-ct -1', ['--join-ct', '-1', 'IMG', '--', 'true'], {}, /--join-ct: .*'-1'/],
  ['--join-ct abc', ['--join-ct', 'abc', 'IMG', '--', 'true'], {}, /--join-ct: .*'abc'/],
  ['--join-ct huge', ['--join-ct', '99999999999999999999', 'IMG', '--', 'true'], {}, /--join-ct: .*'99999999999999999999'/],
  ['--join-tag empty', ['--join-tag=', 'IMG', '--', 'true'], {}, /--join-tag: must not be empty/],
  ['bind with three colons', ['-b', 'a:b:c:d', 'IMG', '--', 'true'], {}, /--bind: too many colons in 'a:b:c:d'/],
  ['bind bad option', ['-b', '/etc:/mnt/0:xx', 'IMG', '--', 'true'], {}, /--bind: bad option 'xx'/],
  ['bind relative DST', ['-b', '/etc:relative', 'IMG', '--', 'true'], {}, /destination must be absolute: 'relative'/],
  ['bind empty', ['-b', '', 'IMG', '--', 'true'], {}, /--bind: empty argument/],
  ['bind empty SRC', ['-b', ':/mnt/0', 'IMG', '--', 'true'], {}, /--bind: empty source in ':\/mnt\/0'/],
  ['bind empty DST', ['-b', '/etc:', 'IMG', '--', 'true'], {}, /--bind: empty destination in '\/etc:'/],
  ['bind missing SRC', ['-b', '/nonexistent:/mnt/0', 'IMG', '--', 'true'], {}, /can't bind \/nonexistent: source: .*ENOENT/],
  ['bind DST missing in image', ['-b', '/etc:/nonexistent', 'IMG', '--', 'true'], {}, /\/nonexistent doesn't exist in read-only image/],
  ['bind file onto dir', ['-b', '/etc/hostname:/mnt/0', 'IMG', '--', 'true'], {}, /file onto directory/],
  ['non-numeric uid', ['-u', 'abc', 'IMG', '--', 'true'], {}, /invalid UID: 'abc'/],
  ['negative uid', ['-u', '-5', 'IMG', '--', 'true'], {}, /invalid UID: '-5'/],
  ['uid out of range', ['-u', '4294967295', 'IMG', '--', 'true'], {}, /invalid UID: '4294967295'/],
  ['uid with spaces', ['-u', ' 0', 'IMG', '--', 'true'], {}, /invalid UID: ' 0'/],
  ['non-numeric gid', ['-g', '1.5', 'IMG', '--', 'true'], {}, /invalid GID: '1.5'/],
  ['missing option argument', ['--cd'], {}, /option '--cd' requires an argument/, 64],
  ['relative --cd', ['-c', 'relative', 'IMG', '--', 'true'], {}, /--cd: must be an absolute path: 'relative'/],
  ['--cd missing in image', ['-c', '/nonexistent', 'IMG', '--', 'true'], {}, /can't cd to \/nonexistent: No such file or directory/],
  ['empty --set-env', ['--set-env=', 'IMG', '--', 'true'], {}, /--set-env: empty argument/],
  ['--set-env missing file', ['--set-env=/nonexistent', 'IMG', '--', 'true'], {}, /--set-env: can't open: \/nonexistent: No such file or directory \(ENOENT\)/],
  ['empty --unset-env', ['--unset-env=', 'IMG', '--', 'true'], {}, /--unset-env: GLOB must not be empty/],
  ['--home without $HOME dir', ['--home', 'IMG', '--', 'true'], { HOME: '/nonexistent' }, /--home: \$HOME is not a directory: \/nonexistent/],
  ['--join, no count', ['--join', 'IMG', '--', 'true'], {}, /--join: no valid peer group size found/],
  ['--join, bad OMPI count', ['--join', 'IMG', '--', 'true'], { OMPI_COMM_WORLD_LOCAL_SIZE: 'abc' }, /OMPI_COMM_WORLD_LOCAL_SIZE: no digits found: 'abc'/],
  ['--join, bad Slurm list', ['--join', 'IMG', '--', 'true'], { SLURM_STEP_TASKS_PER_NODE: 'x(x3)' }, /SLURM_STEP_TASKS_PER_NODE: no count for this node: 'x\(x3\)'/],
  ['bad join timeout', ['--join-ct', '1', 'IMG', '--', 'true'], { CH_RUN_JOIN_TIMEOUT: 'abc' }, /CH_RUN_JOIN_TIMEOUT: .*'abc'/],
];

CASES.forEach(([title, args, env, re, status = 31], i) => {
  test(`bad input: ${title}`, async (t) => {
    // The command, had it run, would print and leave a file in /tmp (the host's).
    const marker = `/tmp/ch-run-options-test-${process.pid}-${i}`;
    t.teardown(() => rmSync(marker, { force: true }));
    const cmd = ['sh', '-c', `echo ran; touch ${marker}`];
    const argv = args.flatMap((a, j) => (a === 'IMG' ? [IMG()] : a === 'true' && args[j - 1] === '--' ? cmd : [a]));
    const r = await ch('ch-run', argv, { env });
    t.log(r.stderr);
    t.is(r.exitCode, status);
    t.regex(r.stderr, /^ch-run\[\d+\]: error: /);
    t.regex(r.stderr, re);
    t.is(r.stdout, '', 'nothing ran');
    t.false(existsSync(marker), 'nothing ran');
  });
});

// Sanity: the same runs with good input succeed, so the errors above are the input's.
test('good input runs, and the evidence shows', async (t) => {
  const marker = `/tmp/ch-run-options-test-${process.pid}-good`;
  t.teardown(() => rmSync(marker, { force: true }));
  const r = await ch('ch-run', ['-u', '0', '-g', '0', '-b', '/etc:/mnt/0', '-c', '/tmp', IMG(), '--',
    'sh', '-c', `echo ran; touch ${marker}`]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'ran');
  t.true(existsSync(marker));
});
