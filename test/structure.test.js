// ch-run's planner reads the host only through a Host (lib/container/host.ts), so
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
  'lib/container/env.ts', 'lib/container/env-map.ts', 'lib/container/glob.ts', 'lib/container/image.ts',
  'lib/container/join.ts', 'lib/container/mounts.ts', 'lib/container/mpi-env.ts', 'lib/container/passwd.ts',
  'lib/container/plan.ts', 'lib/container/squash.ts', 'lib/container/textfile.ts',
  'lib/run/features.ts', 'lib/run/options.ts', 'lib/run/planner.ts',
  'lib/devices/cdi-apply.ts', 'lib/devices/cdi.ts', 'lib/devices/conf.ts', 'lib/devices/inject.ts', 'lib/devices/ldcache.ts',
];
/** Not planning: the front end and the Hosts. */
const NOT_PLANNER = ['lib/run/main.ts', 'lib/run/plan-output.ts', 'lib/container/host.ts', 'lib/run/memo.ts',
  'lib/run/recording-host.ts', 'lib/container/listing-cache.ts',
  'lib/devices/yaml.ts'];   // a bundle's entry: the YAML parser, which reads nothing (cdi.ts loads it through the Host)

/** Modules through which the host could be read behind the Host's back. */
const HOST_MODULES = new Set(['fs', 'fs/promises', 'os', 'child_process', 'worker_threads', 'process']
  .flatMap((m) => [m, `node:${m}`]));

/**
 * What planning may take from modules outside it (which read the host
 * themselves, some of them): names that read nothing, and functions that
 * read only through what they are passed (MINARGS: the call must pass the
 * Host's way of reading, not fall back on the live default).
 */
const OUTSIDE = {
  '../util/log.js': null,   // messages only: anything
  '../util/argp.js': null,  // parsing only
  '../image/layout.js': null,   // the image layout's constants
  '../image/names.js': null,    // image names, storage and file names: string functions only
  '../util/protocol.gen.js': null,   // the protocol's constants (made from protocol.json)
  '../util/paths.js': { PKG_ROOT: 0, SHARE_DIR: 0, storageDir: 2 },
  '../util/owned-fs.js': { ownerName: 2 },
};
/** Packages and built-ins planning may import (reading nothing of the host). */
const PACKAGES = new Set(['node:path', 'node:module', 'node:buffer', 'yaml']);   // node:buffer: isAscii, a function of its argument

/** What FILE (a planning module) does that it may not: a list of "FILE:LINE: what". */
function violations(file, text = readFileSync(join(ROOT, file), 'utf8')) {
  const src = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const bad = [];
  const limited = new Map();   // imported name -> arguments its calls must pass
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
      const outside = OUTSIDE[from.replace(/^\.\.\/(run|container)\//, './')];
      if (!typeOnly && ts.isImportDeclaration(node) && !from.startsWith('./') && !from.startsWith('../run/')
          && !from.startsWith('../container/') && !from.startsWith('../devices/') && !HOST_MODULES.has(from)) {
        if (outside === undefined && !PACKAGES.has(from)) at(node, `imports ${from} (not known to read nothing)`);
        const names = node.importClause?.namedBindings;
        if (outside && (node.importClause?.name || !names || !ts.isNamedImports(names))) at(node, `imports all of ${from}`);
        else if (outside)
          for (const e of names.elements)
            if (!e.isTypeOnly && !(e.name.text in outside)) at(node, `imports ${e.name.text} from ${from} (it may read the host)`);
            else if (outside[e.name.text] > 0) limited.set(e.name.text, outside[e.name.text]);
      }
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
      if (limited.has(callee) && node.arguments.length < limited.get(callee))
        at(node, `calls ${callee} without the Host's way of reading (its default reads the live host)`);
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

test('every module of lib/container, lib/run and lib/devices is listed as planning or not', (t) => {
  const all = ['lib/container', 'lib/run', 'lib/devices'].flatMap((d) => readdirSync(join(ROOT, d))
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
  t.true(caught("import { storageDir } from '../util/paths.js'; storageDir(env);"));
  t.true(caught("import { TAR_ADDON_PATH } from '../util/paths.js';"));
  t.true(caught("import { removeOwned } from '../util/owned-fs.js';"));
  t.true(caught("import * as paths from '../util/paths.js';"));
  t.true(caught("import { execa } from 'execa';"));
  t.false(caught("import { storageDir } from '../util/paths.js'; storageDir(varsOf(host), () => host.user().username);"));
  t.false(caught("import type { Stats } from 'node:fs';"));
  t.false(caught("import { type Stats } from 'node:fs';"));
  t.false(caught("import { LAUNCHER_VARS } from './memo.js';"));
  t.false(caught("import { constants, type Host } from './host.js';"));
});

// The layout (docs/design.md): lib/container/ is the container policy that
// ch-run (lib/run/), the device code (lib/devices/) and ch-fromhost use; it
// uses none of them. ch-run loads the device code (its own bundle, only with
// --gpu/--ib/--device); the device code never reaches back into ch-run.

/** lib/'s directories and which others each imports (imports, exports, import() and import types). */
function directoryImports() {
  const edges = new Map();
  for (const d of readdirSync(join(ROOT, 'lib'))) {
    edges.set(d, new Set());
    for (const f of readdirSync(join(ROOT, 'lib', d)).filter((x) => x.endsWith('.ts'))) {
      const src = ts.createSourceFile(f, readFileSync(join(ROOT, 'lib', d, f), 'utf8'), ts.ScriptTarget.Latest, true);
      const add = (spec) => {
        const m = /^\.\.\/([^/]+)\//.exec(spec);
        if (m && m[1] !== d) edges.get(d).add(m[1]);
      };
      const visit = (n) => {
        if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier) add(n.moduleSpecifier.text);
        if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword
            && n.arguments[0] && ts.isStringLiteral(n.arguments[0])) add(n.arguments[0].text);
        if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument)) add(n.argument.literal.text);
        ts.forEachChild(n, visit);
      };
      visit(src);
    }
  }
  return edges;
}

/** A circle of directories in EDGES ("a -> b -> a"), or null. */
function circle(edges) {
  const state = new Map();   // 1: on the path being walked, 2: done
  const walk = (d, path) => {
    if (state.get(d) === 1) return [...path.slice(path.indexOf(d)), d].join(' -> ');
    if (state.get(d) === 2) return null;
    state.set(d, 1);
    for (const to of edges.get(d) ?? []) {
      const c = walk(to, [...path, d]);
      if (c) return c;
    }
    state.set(d, 2);
    return null;
  };
  for (const d of edges.keys()) {
    const c = walk(d, []);
    if (c) return c;
  }
  return null;
}

test('lib/ directories import each other without a circle', (t) => {
  const edges = directoryImports();
  t.is(circle(edges), null);
  t.is(circle(new Map([['a', new Set(['b'])], ['b', new Set(['c'])], ['c', new Set(['a'])]])), 'a -> b -> c -> a',
    'the check finds a circle');
});

test('the container policy uses no command; the device code uses only it (and util/)', (t) => {
  const edges = directoryImports();
  t.deepEqual([...edges.get('container')].filter((d) => !['util', 'image'].includes(d)), []);
  t.deepEqual([...edges.get('devices')].sort(), ['container', 'util']);
  t.false(edges.get('fromhost').has('run'), "ch-fromhost takes nothing from ch-run's front end (its recorder included)");
});
