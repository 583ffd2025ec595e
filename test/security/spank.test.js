// The SPANK plugin (native/spank/) as a way to make root act for a user.
// Root's callbacks end the step's holder by PID at the step's end; that PID
// comes from the holder's report, which the job's user controls entirely
// (ch-run runs as them: CH_RUN_NODE, say, names their own "front end", which
// inherits the report pipe). A user who reports another process's PID must
// not get root to kill it: the signal is sent by a child that has become the
// job's user, so the kernel refuses it.

import test from 'ava';
import { execa } from 'execa';
import { chmodSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { image, isRoot, PKG, TEST_DIR } from '../helpers/env.js';
import { useCluster } from '../helpers/slurm.js';
import { scratch } from './lib.js';

const serial = isRoot ? test.serial : test.skip;
const c = useCluster(test, `wt-spank-sec-${basename(TEST_DIR)}`, 17150,
  { plugstack: `required ${join(PKG, 'build/Release/ch_spank.so')} cache=/var/tmp/%u.ch/spank-sec/%n\n` });

serial('a forged holder PID: root\'s process survives the step\'s end', async (t) => {
  if (!c.cluster) { t.fail(`no Slurm cluster: ${c.reason}`); return; }
  const s = c.cluster;
  const base = scratch('spank');
  // The user's "front end": writes a holder report naming root's process, then fails.
  const fake = join(base, 'fake-node');
  writeFileSync(fake, '#!/bin/sh\nprintf \'ok\\000%s\\000/\\000\\000\' "$VICTIM_PID" >&3\nexit 1\n');
  chmodSync(fake, 0o755);
  const victim = execa('sleep', ['300'], { reject: false });
  try {
    const r = await s.run('srun', ['-p', 'four', '-N1', '-n2', `--ch-image=${image('busybox')}`, 'true'],
      { timeout: 60000, env: { CH_RUN_NODE: fake, VICTIM_PID: String(victim.pid) } });
    t.not(r.exitCode, 0, r.all);
    t.regex(r.all, /can't open the container's namespace|can't join the container's namespace/);
    // slurm_spank_task_exit has run by the time srun returns; give a late one a moment.
    await new Promise((res) => setTimeout(res, 1000));
    t.is(victim.exitCode, null, `root's process was killed (${victim.signalCode}): ${r.all}`);
    t.notThrows(() => process.kill(victim.pid, 0));
  } finally {
    victim.kill('SIGKILL');
    await victim;
  }
});
