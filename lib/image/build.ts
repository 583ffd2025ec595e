// ch-build [-b BUILDER] -t TAG [-f DOCKERFILE] [BUILDER ARGS...] CONTEXT:
// build an image with docker, podman or buildah, streaming its output and
// exiting with its status.

import { spawn } from 'node:child_process';
import { ChError, Log, runMain } from '../util/log.js';
import { require_os_signal } from '../util/proc.js';
import { all, command, type CommandSpec, count, EXIT_USAGE, last, parseCommand } from '../util/cli.js';
import { buildArgv, selectBuilder, BUILDERS, PROXY_VARS } from './builder.js';

const PROG = 'ch-build';

const SPEC: CommandSpec = {
  prog: PROG,
  synopsis: '[-b BUILDER] -t TAG [-f DOCKERFILE] [BUILDER ARGS...] CONTEXT',
  passUnknown: true,
  valueShorts: 'btf',
  description: `Build image TAG from DOCKERFILE (default CONTEXT/Dockerfile) with BUILDER.
BUILDER is -b's argument, else $CH_BUILDER, else the first of
${BUILDERS.join(', ')} found working, else ch-image (this package's own
builder, which needs none of them). Proxy variables set in the environment
(${PROXY_VARS.filter((v) => v === v.toUpperCase()).join(' ')} and lower-case) are passed as --build-arg.
Other arguments, options included, go to the builder unchanged; the last one
is CONTEXT.`,
  epilog: `Environment:
  CH_BUILDER   the builder to use when -b is not given

Exit status: the builder's (128+N if it died of signal N); 1 if the builder
can't be started; 2 for usage errors.

Example: ${PROG} -t hello -f Dockerfile.hello --build-arg V=1 .`,
};

export async function build(argv: string[], log: Log): Promise<number> {
  const y = command(SPEC)
    .option('builder', { alias: 'b', type: 'string', requiresArg: true, description: 'BUILDER: docker, podman, buildah or ch-image' })
    .option('tag', { alias: 't', type: 'string', requiresArg: true, description: 'TAG: the image name (required)' })
    .option('file', { alias: 'f', type: 'string', requiresArg: true, description: 'DOCKERFILE: the Dockerfile to build' })
    .option('dry-run', { alias: 'n', type: 'boolean', description: 'print the builder command line instead of running it' })
    .option('verbose', { alias: 'v', type: 'count', description: 'say which builder was chosen and why' });
  const a = await parseCommand(y, SPEC, argv);
  if (!a) return 0;
  log.verbosity += count(a.verbose);
  const builder = last(a.builder), tag = last(a.tag), file = last(a.file), dry = a['dry-run'] === true;
  const rest = all(a._);
  if (!tag) throw new ChError(`no tag given (-t TAG)\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
  const context = rest.pop();
  if (context === undefined) throw new ChError(`no CONTEXT given\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
  const b = selectBuilder(builder, process.env, (m) => log.info(m));
  log.info(`building with ${b}`);
  const cmd = buildArgv(b, tag, file, rest, context);
  if (dry) {
    process.stdout.write(cmd.map((s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`)).join(' ') + '\n');
    return 0;
  }
  log.info(`running: ${cmd.join(' ')}`);
  return new Promise<number>((resolve, reject) => {
    const c = spawn(cmd[0], cmd.slice(1), { stdio: 'inherit' });
    // The builder gets terminal signals itself (same process group); don't die before it.
    const ignore = () => {};
    process.on('SIGINT', ignore);
    process.on('SIGTERM', () => c.kill('SIGTERM'));
    c.on('error', (e: NodeJS.ErrnoException) =>
      reject(new ChError(`can't run ${cmd[0]}: ${e.code === 'ENOENT' ? 'not found' : e.message} (${e.code})`, 1)));
    c.on('close', (code, sig) => resolve(code ?? 128 + (sig ? require_os_signal(sig) : 0)));
  });
}

const log = new Log(PROG);
void runMain(log, () => build(process.argv.slice(2), log));
