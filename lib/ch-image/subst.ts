// Variable substitution in Dockerfile instructions, as Docker does it for
// ENV, ARG, COPY, ADD, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL and
// FROM (RUN, CMD and ENTRYPOINT are left to the shell): $NAME, ${NAME},
// ${NAME:-word} (word if unset or empty), ${NAME:+word} (word if set and
// non-empty); \$ is a literal dollar. Unset names expand to nothing.

export type Vars = Map<string, string>;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

/** TEXT with VARS substituted. */
export function expand(text: string, vars: Vars): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && text[i + 1] === '$') { out += '$'; i++; continue; }
    if (c !== '$') { out += c; continue; }
    const rest = text.slice(i + 1);
    if (rest.startsWith('{')) {
      const end = rest.indexOf('}');
      if (end < 0) { out += c; continue; }
      out += braced(rest.slice(1, end), vars);
      i += end + 1;
      continue;
    }
    const m = NAME.exec(rest);
    if (!m) { out += c; continue; }
    out += vars.get(m[0]) ?? '';
    i += m[0].length;
  }
  return out;
}

/** What ${INNER} expands to. */
function braced(inner: string, vars: Vars): string {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?$/s.exec(inner);
  if (!m) return '';
  const v = vars.get(m[1]);
  if (m[2] === '-') return v ? v : expand(m[3], vars);
  if (m[2] === '+') return v ? expand(m[3], vars) : '';
  return v ?? '';
}
