// ch-run's planner reads the host only through a Host (lib/run/host.ts), so
// that the recording Host (lib/run/recording-host.ts) sees every input of a plan: a
// read that doesn't go through it must not be possible in planning code.
// Parsed from the sources (the TypeScript compiler's own parser): each
// planning module's imports, and any use of process.env, a global symbol or
// a require()/import() of the host's modules. Outside planning (main.ts, the
// front end that writes to the launcher's descriptors; host.ts and
// recording-host.ts, the two Hosts; memo.ts, the record; the log printer) such imports are fine.

import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

const ROOT = join(import.meta.dirname, '..');

/** Every module that plans ch-run's container, listed by hand: a new one must be added here. */
const PLANNER = [
  'lib/run/env.ts', 'lib/run/env-map.ts', 'lib/run/features.ts', 'lib/run/glob.ts', 'lib/run/image.ts',
  'lib/run/join.ts', 'lib/run/mounts.ts', 'lib/run/mpi-env.ts', 'lib/run/options.ts', 'lib/run/passwd.ts',
  'lib/run/plan.ts', 'lib/run/planner.ts', 'lib/run/squash.ts', 'lib/run/textfile.ts',
  'lib/devices/cdi-apply.ts', 'lib/devices/cdi.ts', 'lib/devices/inject.ts', 'lib/devices/ldcache.ts',
];
/** Not planning: the front end and the Hosts. */
const NOT_PLANNER = ['lib/run/main.ts', 'lib/run/host.ts', 'lib/run/memo.ts', 'lib/run/recording-host.ts'];

/** Modules through which the host could be read behind the Host's back. */
const HOST_MODULES = new Set(['fs', 'fs/promises', 'os', 'child_process', 'worker_threads', 'process']
  .flatMap((m) => [m, `node:${m}`]));

/** What FILE (a planning module) does that it may not: a list of "FILE:LINE: what". */
function violations(file, text = readFileSync(join(ROOT, file), 'utf8')) {
  const src = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const bad = [];
  const at = (node, what) => bad.push(`${file}:${src.getLineAndCharacterOfPosition(node.getStart()).line + 1}: ${what}`);
  const visit = (node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      const from = node.moduleSpecifier.text;
      const typeOnly = ts.isImportDeclaration(node) ? node.importClause?.isTypeOnly === true
        || (node.importClause !== undefined && node.importClause.name === undefined
          && node.importClause.namedBindings !== undefined && ts.isNamedImports(node.importClause.namedBindings)
          && node.importClause.namedBindings.elements.every((e) => e.isTypeOnly))
        : node.isTypeOnly;
      if (HOST_MODULES.has(from) && !typeOnly) at(node, `imports ${from} (read the host through the Host)`);
      // The recorder is the Host's business; the only thing planning takes
      // from memo.ts is the list of the launcher's own variables.
      if (/(^|\/)memo\.js$/.test(from) && ts.isImportDeclaration(node)) {
        const names = node.importClause?.namedBindings;
        const ok = names !== undefined && ts.isNamedImports(names) && node.importClause.name === undefined
          && names.elements.every((e) => e.name.text === 'LAUNCHER_VARS');
        if (!ok) at(node, 'imports the recorder (memo.js)');
      }
    }
    if (ts.isCallExpression(node)) {
      const callee = node.expression.getText(src);
      const arg = node.arguments[0];
      if ((node.expression.kind === ts.SyntaxKind.ImportKeyword || /(^|\W)require$/.test(callee) || /createRequire\(/.test(callee))
          && arg !== undefined && ts.isStringLiteral(arg) && HOST_MODULES.has(arg.text))
        at(node, `loads ${arg.text}`);
    }
    if (ts.isPropertyAccessExpression(node)) {
      const t = node.getText(src);
      if (t === 'process.env') at(node, 'reads process.env (use host.env)');
      if (/^process\.(cwd|ppid|pid|chdir|binding|dlopen)$/.test(t)) at(node, `uses ${t} (use the Host)`);
      if (t === 'Symbol.for') at(node, 'uses a global symbol');
    }
    if (ts.isIdentifier(node) && node.text === 'globalThis') at(node, 'uses globalThis');
    ts.forEachChild(node, visit);
  };
  visit(src);
  return bad;
}

test('planning modules read the host only through the Host', (t) => {
  const bad = PLANNER.flatMap((f) => violations(f));
  t.deepEqual(bad, [], bad.join('\n'));
});

test('every module of lib/run and lib/devices is listed as planning or not', (t) => {
  const all = ['lib/run', 'lib/devices'].flatMap((d) => readdirSync(join(ROOT, d))
    .filter((f) => f.endsWith('.ts')).map((f) => `${d}/${f}`));
  const unlisted = all.filter((f) => !PLANNER.includes(f) && !NOT_PLANNER.includes(f));
  t.deepEqual(unlisted, [], `add to PLANNER or NOT_PLANNER in test/structure.test.js: ${unlisted.join(', ')}`);
});

test('the checker catches what it is for', (t) => {
  // The ways in of the old recorder's blind spots, each as planning code could have them.
  const caught = (code) => violations('probe.ts', code).length > 0;
  t.true(caught("import { statSync } from 'node:fs';"));
  t.true(caught("import fs from 'fs';"));
  t.true(caught("import { promises } from 'node:fs';"));
  t.true(caught("import { execFileSync } from 'node:child_process';"));
  t.true(caught("import { hostname } from 'node:os';"));
  t.true(caught("const cp = createRequire(import.meta.url)('node:child_process');"));
  t.true(caught("const fs = await import('node:fs');"));
  t.true(caught('const x = process.env.PATH;'));
  t.true(caught("const tap = globalThis[Symbol.for('ch-toolkit.logtap')];"));
  t.true(caught("import { subprocessDeps } from './memo.js';"));
  t.false(caught("import type { Stats } from 'node:fs';"));
  t.false(caught("import { type Stats } from 'node:fs';"));
  t.false(caught("import { LAUNCHER_VARS } from './memo.js';"));
  t.false(caught("import { constants, type Host } from './host.js';"));
});
