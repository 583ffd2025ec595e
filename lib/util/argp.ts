// A small command-line parser with the semantics of glibc argp/getopt_long,
// which Charliecloud's commands use, so scripts written for them parse the
// same here: bundled short options (-vv, -wt), attached values (-u0,
// -b/a:/b), long options with "=VALUE" or a separate argument, unambiguous
// long prefixes (--verb), optional arguments only in attached form
// (--set-env=FILE, never "--set-env FILE"), options anywhere before "--",
// and "--" ending option parsing. Hand-written rather than yargs: ch-run's
// launch time budget is a few milliseconds (yargs costs ~65 ms to import).

import { ChError } from './log.js';

export type ArgKind = 'none' | 'required' | 'optional';

export interface OptionSpec {
  name: string;          // long name, the key in results
  short?: string;        // one character
  arg: ArgKind;
  argName?: string;      // for --help
  help: string;
  hidden?: boolean;
}

export interface Parsed {
  /** Options in command-line order; value undefined for flags and omitted optionals. */
  options: { name: string; value: string | undefined }[];
  /** Non-option arguments before "--", in order. */
  positional: string[];
  /** Everything after "--" (null if there was no "--"). */
  rest: string[] | null;
}

/** -q, -v, --help, -V as the image-pipeline commands share them. */
export const VERBOSITY_AND_INFO_OPTIONS: OptionSpec[] = [
  { name: 'quiet', short: 'q', arg: 'none', help: 'print only errors' },
  { name: 'verbose', short: 'v', arg: 'none', help: 'print more (repeatable)' },
  { name: 'help', short: 'h', arg: 'none', help: 'give this help list' },
  { name: 'version', short: 'V', arg: 'none', help: 'print program version' },
];

export function parseArgs(prog: string, specs: OptionSpec[], argv: string[]): Parsed {
  const out: Parsed = { options: [], positional: [], rest: null };
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));
  const usage = (msg: string) => new ChError(`${msg}\nTry '${prog} --help' for more information.`);

  const findLong = (name: string): OptionSpec => {
    const exact = specs.find((s) => s.name === name);
    if (exact) return exact;
    const prefixed = specs.filter((s) => s.name.startsWith(name));
    if (prefixed.length === 1) return prefixed[0];
    if (prefixed.length > 1)
      throw usage(`option '--${name}' is ambiguous; possibilities: ${prefixed.map((s) => '--' + s.name).join(' ')}`);
    throw usage(`unrecognized option '--${name}'`);
  };

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.rest = argv.slice(i + 1);
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const spec = findLong(name);
      let value: string | undefined = eq < 0 ? undefined : a.slice(eq + 1);
      if (spec.arg === 'none' && value !== undefined)
        throw usage(`option '--${spec.name}' doesn't allow an argument`);
      if (spec.arg === 'required' && value === undefined) {
        if (i + 1 >= argv.length) throw usage(`option '--${spec.name}' requires an argument`);
        value = argv[++i];
      }
      out.options.push({ name: spec.name, value });
    } else if (a.startsWith('-') && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const spec = byShort.get(a[j]);
        if (!spec) throw usage(`invalid option -- '${a[j]}'`);
        if (spec.arg === 'none') {
          out.options.push({ name: spec.name, value: undefined });
          continue;
        }
        let value: string | undefined = a.slice(j + 1);
        if (value === '') {
          if (spec.arg === 'required') {
            if (i + 1 >= argv.length) throw usage(`option requires an argument -- '${a[j]}'`);
            value = argv[++i];
          } else {
            value = undefined;
          }
        }
        out.options.push({ name: spec.name, value });
        break;
      }
    } else {
      out.positional.push(a);
    }
  }
  return out;
}

/** Format option help in argp's two-column style. */
export function formatHelp(specs: OptionSpec[]): string {
  const rows = specs.filter((s) => !s.hidden).map((s) => {
    const short = s.short ? `-${s.short}, ` : '    ';
    const an = s.argName ?? 'ARG';
    const arg = s.arg === 'required' ? `=${an}` : s.arg === 'optional' ? `[=${an}]` : '';
    return [`  ${short}--${s.name}${arg}`, s.help] as const;
  });
  const width = Math.min(34, Math.max(...rows.map(([l]) => l.length)) + 2);
  return rows.map(([l, h]) => (l.length >= width ? `${l}\n${' '.repeat(width)}${h}` : l.padEnd(width) + h)).join('\n');
}
