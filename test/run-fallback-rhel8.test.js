// The ch-run suite (test/run.test.js) again, as on a kernel with neither
// openat2(2) (Linux 5.6) nor mount_setattr(2) (5.12), e.g. RHEL 8's 4.18:
// mount destinations resolved by the core's own component walk, read-only
// and nosuid set by non-recursive remounts. The core's switches force both.

import './run-fallback-env.js?CH_RUN_NO_OPENAT2&CH_RUN_NO_MOUNT_SETATTR';
import './run.test.js';
import test from 'ava';
import { ch, image } from './helpers/env.js';

test('the switches take effect: both fallbacks run', async (t) => {
  const r = await ch('ch-run', ['-vv', '-b', '/etc:/mnt/0:ro', image('busybox'), '--', 'true'],
    { env: { CH_RUN_NO_OPENAT2: '1', CH_RUN_NO_MOUNT_SETATTR: '1' } });
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /CH_RUN_NO_OPENAT2=1: resolving paths component by component/);
  t.regex(r.stderr, /no mount_setattr\(2\): remounting image root and its submounts one by one/);
  t.regex(r.stderr, /no mount_setattr\(2\): remounting \/mnt\/0 and its submounts one by one/);
});
