// Imported first by ch-run's front end (main.ts): when the launcher asked for
// a memoizable plan (CH_RUN_MEMO_FD), recording starts before any other
// module reads the environment or the file system (see memo.ts).

import { startRecording } from './memo.js';
import { LAUNCHER } from '../util/protocol.gen.js';

if (process.env[LAUNCHER.memoFd] !== undefined) startRecording();
