// Imported first by test/run-fallback-*.test.js, as
// './run-fallback-env.js?VAR&VAR...': sets each VAR (a core switch such as
// CH_RUN_NO_OPENAT2) to 1 in process.env before the suite it imports next
// declares its tests (ava wants them declared synchronously, so the suite is
// a static import, evaluated after this one).

for (const v of new URL(import.meta.url).searchParams.keys()) process.env[v] = '1';
