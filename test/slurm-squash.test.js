// ch-run IMAGE.sqfs --join under real Slurm (issue #23): srun -N4 -n32 on the
// test cluster's four fake nodes. The ranks of each node share one container
// (--join, per node: the tag has the node id); every rank uses one shared
// SquashFS mount (native/core/holder.c). The fake nodes are slurmd processes
// on one kernel, so they are one node to the kernel: one user, one image,
// one mount for all 32 ranks (on a real cluster, one per node). Nothing is
// left after the linger.

import test from 'ava';
import { execa } from 'execa';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { asUser, BIN, image, isRoot, needs, TEST_DIR, unavailable, userEnv } from './helpers/env.js';
import { scratch } from './helpers/fixtures.js';
import { leftovers, useCluster } from './helpers/slurm.js';

const c = useCluster(test, `wt-slurm-sq-${basename(TEST_DIR)}`, 17300);
const serial = needs(test.serial, isRoot ? null : 'not root: the test cluster runs slurmd and munged as root');

/** squashfuse processes started by this cluster's steps (their environment names its slurm.conf). */
function fuses(s) {
  return readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d)).filter((pid) => {
    try {
      return /^squashfuse(_ll)?\0/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'))
        && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
        && readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`SLURM_CONF=${s.conf}`);
    } catch { return false; }
  });
}

serial('srun -N4 -n32 ch-run --join IMG.sqfs: one container per node, one mount, nothing left after the linger', async (t) => {
  const s = c.cluster;
  if (!s) { unavailable(t, 'Slurm cluster', c.reason); return; }
  const dir = await scratch(t, 'slurm-sq');
  const img = join(dir, 'img.sqfs');
  const argv = [...asUser(), 'mksquashfs', image('busybox'), img, '-noappend', '-quiet', '-no-progress'];
  const m = await execa(argv[0], argv.slice(1), { reject: false, env: userEnv(), extendEnv: false, cwd: '/' });
  t.is(m.exitCode, 0, m.stderr);
  // Each rank: its node, its container (mount namespace), and a read from the image.
  const step = s.run('srun', ['-p', 'four', '-N', '4', '-n', '32', join(BIN, 'ch-run'), '--join', img, '--', 'sh', '-c',
    'echo "$SLURMD_NODENAME $(readlink /proc/self/ns/mnt) $(head -c 12 /ch/metadata.json)"; sleep 2'],
  { timeout: 240_000, env: { CH_RUN_SQUASH_LINGER: '2' } });
  let most = 0, ended = false;
  step.then(() => { ended = true; });
  for (let i = 0; i < 4000 && !ended; i++) {
    most = Math.max(most, fuses(s).length);
    await new Promise((r) => setTimeout(r, 50));
  }
  const r = await step;
  t.is(r.exitCode, 0, r.all);
  const lines = r.stdout.trim().split('\n');
  t.is(lines.length, 32, r.all);
  const byNode = new Map();
  for (const l of lines) {
    const [node, ns, head] = l.split(' ');
    t.is(head, '{"Entrypoint', l);
    byNode.set(node, (byNode.get(node) ?? new Set()).add(ns));
  }
  t.deepEqual([...byNode.keys()].sort(), ['n1', 'n2', 'n3', 'n4']);
  for (const [node, ns] of byNode) t.is(ns.size, 1, `${node}: one container for its 8 ranks`);
  t.is(new Set([...byNode.values()].map((ns) => [...ns][0])).size, 4, 'a container per node');
  t.is(most, 1, 'one squashfuse for all ranks (the fake nodes share one kernel)');
  // After the step and the linger: nothing.
  let left;
  for (let i = 0; i < 100; i++) {
    left = await leftovers(s, [dir], 'none');
    if (left.procs.length === 0 && left.mounts.length === 0) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  t.deepEqual(left.procs, [], 'no process left (the holder ended after the linger)');
  t.deepEqual(left.mounts, []);
  t.deepEqual(fuses(s), []);
});
