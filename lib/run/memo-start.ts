// Imported first by ch-run's front end (main.ts): when the launcher asked for
// a memoizable plan (CH_RUN_MEMO_FD), recording starts before any other
// module reads the environment or the file system (see memo.ts).

import { startRecording } from './memo.js';

if (process.env.CH_RUN_MEMO_FD !== undefined) startRecording();
