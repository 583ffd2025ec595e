// Command lines of the commands whose start-up time doesn't matter (ch-build,
// ch-builder2tar/ch-docker2tar, ch-fromhost, ch-pull, ch-convert), parsed with yargs so they all
// behave alike: -h/-?/--help, -V/--version, --usage, strict parsing (an
// unknown option is an error, except for ch-build, which passes it to the
// builder), exit 2 on any usage error, and shell completion (`PROG
// completion >> ~/.bashrc`). ch-run and ch-tar2dir keep the argp parser
// (util/argp.ts): yargs adds ~36 ms to a start (docs/design.md, "Command
// lines and start-up").
//
// yargs' parser is set to leave arguments as typed: no number parsing, no
// --no-X negation, no camel-case or dot expansion; repeated options collect.

import yargs, { type Argv } from 'yargs';
import { ChError, Log } from './log.js';
import { version } from './version.js';

export const EXIT_USAGE = 2;

export interface CommandSpec {
  prog: string;
  /** The synopsis after the program name, e.g. "[OPTION...] IMAGE OUTDIR". */
  synopsis: string;
  /** What the command does, and the rest of its manual: printed by --help. */
  description: string;
  /** Shown last in --help: exit status, environment, examples. */
  epilog: string;
  /** Unknown options are arguments (ch-build passes them to the builder) instead of errors. */
  passUnknown?: boolean;
  /** Short options that take a value, so "-tVALUE" means "-t VALUE" as with getopt. */
  valueShorts?: string;
}

/** getopt's attached short values ("-tfoo") in the separate form yargs reads. */
function detach(argv: string[], shorts: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') { out.push(...argv.slice(i)); break; }
    if (a.length > 2 && a[0] === '-' && a[1] !== '-' && shorts.includes(a[1])) out.push(a.slice(0, 2), a.slice(2));
    else out.push(a);
  }
  return out;
}

/** A yargs parser for SPEC with the toolkit's conventions; add options, then parse with parseCommand(). */
export function command(spec: CommandSpec): Argv {
  // usageConfiguration is yargs 18's; @types/yargs (17) doesn't know it yet.
  const y = yargs() as Argv & { usageConfiguration(c: { 'hide-types': boolean }): Argv };
  return y.usageConfiguration({ 'hide-types': true })   // no [boolean]/[string] clutter in the manual
    .scriptName(spec.prog)
    .usage(`Usage: ${spec.prog} ${spec.synopsis}\n\n${spec.description}`)
    .epilog(spec.epilog)
    .help('help', 'print this help and exit').alias('help', ['h', '?'])
    .version('version', 'print program version', version()).alias('version', 'V')
    .option('usage', { type: 'boolean', description: 'print a short usage message' })
    .completion('completion', 'print a bash/zsh completion script (add it to ~/.bashrc)')
    .strictOptions()
    .wrap(80)   // the same help on every terminal (it is the manual)
    .exitProcess(false)
    .fail((msg, err) => {
      if (err && err.name !== 'YError') throw err;   // ours, not a usage error
      throw new ChError(`${msg ?? err.message}\nTry '${spec.prog} --help' for more information.`, EXIT_USAGE);
    });
}

/**
 * Parse ARGV with Y. Returns null when yargs already answered (--help, --version,
 * --usage, completion): the command then exits 0.
 */
export async function parseCommand(y: Argv, spec: CommandSpec, argv: string[]): Promise<Record<string, unknown> | null> {
  // The shell's completion request is an option even where unknown options are arguments.
  const completing = argv[0] === '--get-yargs-completions';
  y.parserConfiguration({
    'parse-numbers': false,
    'parse-positional-numbers': false,
    'boolean-negation': false,
    'camel-case-expansion': false,
    'dot-notation': false,
    'duplicate-arguments-array': true,
    'greedy-arrays': false,
    'strip-aliased': true,
    'unknown-options-as-args': (spec.passUnknown ?? false) && !completing,
    'halt-at-non-option': false,
  });
  let answered = false;
  const args = await y.parseAsync(detach(argv, spec.valueShorts ?? ''), {}, (err, _argv, output) => {
    if (err) return;   // .fail() threw already
    if (output) {
      answered = true;
      process.stdout.write(output.endsWith('\n') ? output : output + '\n');
    }
  });
  if (answered) return null;
  if (args.usage) {
    process.stdout.write(`Usage: ${spec.prog} ${spec.synopsis}\n`);
    return null;
  }
  return args as Record<string, unknown>;
}

/** The last value of a string option given any number of times (undefined if never). */
export function last(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? String(v[v.length - 1]) : String(v);
}

/** Every value of a repeatable string option, in order. */
export function all(v: unknown): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** How many times a counted flag (-v) was given. */
export function count(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}

/** -q/--quiet and -v/--verbose (repeatable), last among a command's options. */
export function verbosityOptions(y: Argv): Argv {
  return y.option('quiet', { alias: 'q', type: 'boolean', description: 'print only errors' })
    .option('verbose', { alias: 'v', type: 'count', description: 'print more (repeatable)' });
}

/** What -q and -v (verbosityOptions) ask of LOG. */
export function applyVerbosity(log: Log, a: Record<string, unknown>): void {
  if (a.quiet === true) log.verbosity = -1;
  log.verbosity += count(a.verbose);
}
