// The ch-run suite (test/run.test.js) again, as on a kernel with openat2(2)
// but without mount_setattr(2) (Linux 5.6 to 5.11): read-only and nosuid
// set by non-recursive remounts.

import './run-fallback-env.js?CH_RUN_NO_MOUNT_SETATTR';
import './run.test.js';
import test from 'ava';
import { ch, image } from './helpers/env.js';

test('the switch takes effect: remounts, not mount_setattr(2)', async (t) => {
  const r = await ch('ch-run', ['-vv', image('busybox'), '--', 'true'], { env: { CH_RUN_NO_MOUNT_SETATTR: '1' } });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /no mount_setattr\(2\): remounting image root and its submounts one by one/);
  t.notRegex(r.stderr, /resolving paths component by component/);
});
