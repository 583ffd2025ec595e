// fnmatch(3) patterns as Charliecloud's --unset-env takes them: *, ?, [...]
// (with ! or ^ negation and ranges), backslash escapes, and the extended
// forms ?(a|b) *(a|b) +(a|b) @(a|b) !(a|b) (FNM_EXTMATCH), compiled to a
// RegExp anchored at both ends. Also the device patterns of --gpu's
// share/gpu/*.conf (devices/inject.ts), one path component at a time.

import { ChError } from '../util/log.js';

const special = /[.+^${}()|[\]\\*?]/g;

function compile(p: string, i: number, end: string | null): [string, number] {
  let re = '';
  while (i < p.length) {
    const c = p[i];
    if (end !== null && (c === '|' || c === ')')) return [re, i];
    if ('?*+@!'.includes(c) && p[i + 1] === '(') {
      const alts: string[] = [];
      let j = i + 2;
      for (;;) {
        const [sub, k] = compile(p, j, ')');
        alts.push(sub);
        if (p[k] === ')') { j = k + 1; break; }
        if (k >= p.length) throw new ChError(`unterminated extended glob in '${p}'`);
        j = k + 1;
      }
      const group = `(?:${alts.join('|')})`;
      if (c === '?') re += `${group}?`;
      else if (c === '*') re += `${group}*`;
      else if (c === '+') re += `${group}+`;
      else if (c === '@') re += group;
      else {
        // !(pat): anything that does not match pat here, given what follows.
        const [rest] = compile(p, j, end);
        re += `(?:(?!${group}${rest}$)[\\s\\S]*?)`;
      }
      i = j;
      continue;
    }
    if (c === '*') re += '[\\s\\S]*';
    else if (c === '?') re += '[\\s\\S]';
    else if (c === '\\' && i + 1 < p.length) re += p[++i].replace(special, '\\$&');
    else if (c === '[') {
      let j = i + 1;
      let neg = false;
      if (p[j] === '!' || p[j] === '^') { neg = true; j++; }
      let body = '';
      if (p[j] === ']') { body += '\\]'; j++; }
      while (j < p.length && p[j] !== ']') {
        body += p[j] === '\\' || p[j] === '^' || p[j] === '[' ? '\\' + p[j] : p[j];
        j++;
      }
      if (j >= p.length) re += '\\[';   // no closing bracket: a literal "["
      else { re += `[${neg ? '^' : ''}${body}]`; i = j; }
    } else re += c.replace(special, '\\$&');
    i++;
  }
  return [re, i];
}

export function globToRegExp(pattern: string): RegExp {
  const [re] = compile(pattern, 0, null);
  return new RegExp(`^${re}$`, 's');
}
