// ch-build [-b BUILDER] -t TAG [-f DOCKERFILE] [BUILDER ARGS...] CONTEXT:
// build an image with docker, podman or buildah, streaming its output and
// exiting with its status.

import { spawn } from 'node:child_process';
import { ChError, Log, runMain } from '../util/log.js';
import { require_os_signal } from '../util/proc.js';
import { buildArgv, selectBuilder, BUILDERS, PROXY_VARS } from './builder.js';

const PROG = 'ch-build';

function help(): string {
  return `Usage: ${PROG} [-b BUILDER] -t TAG [-f DOCKERFILE] [BUILDER ARGS...] CONTEXT

Build image TAG from DOCKERFILE (default CONTEXT/Dockerfile) with BUILDER.
BUILDER is -b's argument, else $CH_BUILDER, else the first of
${BUILDERS.join(', ')} found working. Proxy variables set in the environment
(${PROXY_VARS.filter((v) => v === v.toUpperCase()).join(' ')} and lower-case) are passed as --build-arg.
Other arguments go to the builder unchanged; the last one is CONTEXT.

  -b, --builder=BUILDER   docker, podman or buildah
  -t, --tag=TAG           image name (required)
  -f, --file=DOCKERFILE   Dockerfile to build
  -n, --dry-run           print the builder command line instead of running it
  -v, --verbose           say which builder was chosen and why
      --help              give this help list
  -V, --version           print program version

Exit status: the builder's (128+N if it died of signal N); 1 if no builder
works or it can't be started; 2 for usage errors.
`;
}

export async function build(argv: string[], log: Log): Promise<number> {
  let builder: string | undefined, tag: string | undefined, file: string | undefined, dry = false;
  const rest: string[] = [];
  const value = (i: number, opt: string) => {
    if (i >= argv.length) throw new ChError(`option '${opt}' requires an argument`, 2);
    return argv[i];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let m: RegExpMatchArray | null;
    if (a === '--') { rest.push(...argv.slice(i + 1)); break; }
    else if (a === '--help') { process.stdout.write(help()); return 0; }
    else if (a === '-V' || a === '--version') {
      const { version } = await import('../util/version.js');
      process.stdout.write(version() + '\n');
      return 0;
    }
    else if (a === '-n' || a === '--dry-run') dry = true;
    else if (a === '-v' || a === '--verbose') log.verbosity++;
    else if (a === '-b' || a === '--builder') builder = value(++i, a);
    else if (a === '-t' || a === '--tag') tag = value(++i, a);
    else if (a === '-f' || a === '--file') file = value(++i, a);
    else if ((m = a.match(/^(?:--builder=|-b)(.+)$/))) builder = m[1];
    else if ((m = a.match(/^(?:--tag=|-t)(.+)$/))) tag = m[1];
    else if ((m = a.match(/^(?:--file=|-f)(.+)$/))) file = m[1];
    else rest.push(a);
  }
  if (!tag) throw new ChError(`no tag given (-t TAG)\nTry '${PROG} --help' for more information.`, 2);
  const context = rest.pop();
  if (context === undefined) throw new ChError(`no CONTEXT given\nTry '${PROG} --help' for more information.`, 2);
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
