// The escape battery (test/security/escape.test.js) again, as on a kernel
// with neither openat2(2) nor mount_setattr(2) (RHEL 8's 4.18): the core's
// switches force its fallbacks. (test/run-fallback-rhel8.test.js checks the
// switches take effect.)

import './run-fallback-env.js?CH_RUN_NO_OPENAT2&CH_RUN_NO_MOUNT_SETATTR';
import './security/escape.test.js';
