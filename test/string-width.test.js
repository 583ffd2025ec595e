// lib/util/string-width.ts stands in for the string-width package in every
// bundle (tools/build.js): it must measure as the package does, and the
// yargs commands must start without the package's Unicode machinery (an
// Intl.Segmenter and property-of-strings expressions, 25-40 ms of each
// start: issue #27).

import test from 'ava';
import { execa } from 'execa';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import packageWidth from 'string-width';
import { scratch } from './helpers/fixtures.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const { default: ourWidth } = await import(join(repo, 'dist', 'util', 'string-width.js'));

const ESC = '\u001b';
const SAMPLES = [
  '', 'a', 'hello, world', '  --jobs N  download at most N blobs at a time  ', '~!@#$%^&*()_+{}|:"<>?`-=[]\\;\',./',
  'tab\there', 'line\nbreak', '\r\n', '\u0000\u0007\u007f', '\u0085\u009f',
  `${ESC}[31mred${ESC}[39m`, `${ESC}[1m${ESC}[4mbold underlined${ESC}[0m`, `${ESC}]8;;https://example.com${ESC}\\link${ESC}]8;;${ESC}\\`,
  'café', 'cafe\u0301', 'naïve façade', 'Ελληνικά', 'Русский', '±×÷§¶', '…—–‘’“”', '\u00a0nbsp',
  '日本語', '中文字符', '한국어', 'ｆｕｌｌｗｉｄｔｈ', 'ﾊﾝｶｸ', 'カタカナ', 'a日b本c',
  '\u200b', 'a\u200db', '\ufeffbom', '\u2060word\u2060', 'x\ufe0f', 'e\u0301\u0301\u0301', '\u0301', '\u20dd',
  '😀', '👍🏽', '👨‍👩‍👧‍👦', '🇫🇷', '🏳️‍🌈', '1️⃣', '#️⃣', '❤', '❤️', '☺', '☺️', '✔', '⌚', '©', '™',
  'mix 日本 and 😀 and e\u0301', 'ก่อน', 'हिन्दी', 'العربية', 'עברית', '\ud800', 'a\udc00b',
  '𝕏𝕐', '𠀋', '\u093f', 'का\u093fी', 'தமிழ்', 'ภาษาไทย', '각', 'ᄀ\u0301', '\u3000', '〜', '①②', 'ｱ', '̀',
];

test('our string-width measures as the string-width package does', (t) => {
  for (const s of SAMPLES) {
    for (const options of [undefined, { ambiguousIsNarrow: false }, { countAnsiEscapeCodes: true }]) {
      t.is(ourWidth(s, options), packageWidth(s, options), `${JSON.stringify(s)} ${JSON.stringify(options)}`);
    }
  }
  for (const notString of [undefined, null, 42, {}]) t.is(ourWidth(notString), 0);
});

test('the yargs commands start, and lay out their help, without making an Intl.Segmenter', async (t) => {
  const dir = await scratch(t, 'string-width');
  // A Node that refuses to make one: each command must still answer.
  const guard = join(dir, 'no-segmenter.cjs');
  writeFileSync(guard, "Intl.Segmenter = class { constructor() { throw new Error('Intl.Segmenter made'); } };\n");
  for (const cmd of ['ch-pull', 'ch-image', 'ch-convert', 'ch-build', 'ch-builder2tar', 'ch-fromhost']) {
    for (const args of [['--version'], ['--help']]) {
      const r = await execa(process.execPath, ['-r', guard, join(repo, 'dist', `${cmd}.cjs`), ...args], { reject: false });
      t.is(r.exitCode, 0, `${cmd} ${args}: ${r.stderr}`);
      t.not(r.stdout, '', `${cmd} ${args}`);
    }
  }
  // The same guard catches one made for text that needs it.
  const wide = await execa(process.execPath, ['-r', guard, '--input-type=module', '-e',
    `import w from ${JSON.stringify(join(repo, 'dist', 'util', 'string-width.js'))}; w('日本');`], { reject: false });
  t.regex(wide.stderr, /Intl\.Segmenter made/);
});
