// A string's width in terminal columns, for yargs's --help layout (yargs,
// cliui and wrap-ansi import `string-width`; tools/build.js resolves that
// name here in every bundle). The string-width package builds an
// Intl.Segmenter and Unicode property-of-strings expressions when it is
// loaded: 25-40 ms of every ch-pull, ch-image and ch-convert start on this
// machine (the first Segmenter loads ICU's break rules), for help text that
// is printable ASCII, or for no help at all. Here printable ASCII is its
// length, and the Unicode machinery is made the first time a string needs it.
// The width rules are string-width's, checked against it in
// test/string-width.test.js: escape sequences take no room; so does a
// grapheme cluster with nothing visible (controls, format characters,
// non-spacing and enclosing marks alone); an RGI emoji takes two; anything
// else the East Asian width of its first visible code point (ambiguous ones
// narrow unless asked), and one more for each spacing mark after it (as in
// Devanagari's vowel signs).

import { eastAsianWidth } from 'get-east-asian-width';
import stripAnsi from 'strip-ansi';

export interface WidthOptions {
  /** Ambiguous-width characters count 1 (default) or, false, 2. */
  ambiguousIsNarrow?: boolean;
  /** Escape sequences count as the characters they are, not 0. */
  countAnsiEscapeCodes?: boolean;
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

interface Unicode { graphemes: Intl.Segmenter; visible: RegExp; emoji: RegExp; spacingMarks: RegExp }
let unicode: Unicode | undefined;

/** What non-ASCII text is measured with, made once, when first needed. */
function unicodeRules(): Unicode {
  unicode ??= {
    graphemes: new Intl.Segmenter(),
    visible: /[^\p{Default_Ignorable_Code_Point}\p{Control}\p{Format}\p{Nonspacing_Mark}\p{Enclosing_Mark}\p{Surrogate}]/u,
    spacingMarks: /\p{Spacing_Mark}/gu,
    emoji: new RegExp('^\\p{RGI_Emoji}$', 'v'),   // the v flag: Node 20 has it, TypeScript's target not
  };
  return unicode;
}

/** The columns INPUT takes in a terminal (0 for anything not a string). */
export default function stringWidth(input: unknown, options: WidthOptions = {}): number {
  if (typeof input !== 'string') return 0;
  if (PRINTABLE_ASCII.test(input)) return input.length;
  const text = options.countAnsiEscapeCodes ? input : stripAnsi(input);
  if (PRINTABLE_ASCII.test(text)) return text.length;
  const { graphemes, visible, emoji, spacingMarks } = unicodeRules();
  const ambiguousAsWide = options.ambiguousIsNarrow === false;
  let width = 0;
  for (const { segment } of graphemes.segment(text)) {
    const first = visible.exec(segment);
    if (first === null) continue;   // nothing visible in the cluster
    if (emoji.test(segment)) {
      width += 2;
      continue;
    }
    const after = segment.slice(first.index + first[0].length);
    width += eastAsianWidth(first[0].codePointAt(0)!, { ambiguousAsWide }) + (after.match(spacingMarks)?.length ?? 0);
  }
  return width;
}
