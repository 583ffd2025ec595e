// ch-image push IMAGE [DEST_REF]: image IMAGE of storage pushed to a
// registry by lib/push's pushImage (what ch-convert -o registry runs), with
// ch-pull's credentials, TLS rules and --insecure. As Charliecloud's
// `ch-image push`, DEST_REF defaults to IMAGE itself (a name that is a
// registry reference, as ch-image build -t and ch-pull store it).

import { ChError, type Log } from '../util/log.js';
import { all, applyVerbosity, command, last, parseCommand, verbosityOptions, type CommandSpec, EXIT_USAGE } from '../util/cli.js';
import { parseReference } from '../pull/reference.js';
import { pushImage, type Compression } from '../push/push.js';
import { closeStorage, imageMarker, noSuchImage, openStorage, PROG, tagDir } from './store.js';

export const PUSH_SPEC: CommandSpec = {
  prog: `${PROG} push`,
  synopsis: '[--insecure] [--compress gzip|zstd] [-q] [-v] IMAGE [DEST_REF]',
  description: `Push image IMAGE of storage to a registry as DEST_REF (default: IMAGE, which
then must be a registry reference such as registry:5000/team/app:v1), as
ch-convert -o registry pushes a directory: one reproducible layer (sorted,
owned by root, no setuid or setgid bit, no xattrs; gzip, or zstd with
--compress zstd), an OCI config made from the image's /ch/metadata.json and
/ch/environment, and an OCI manifest. Blobs the registry has already are not
sent again. Credentials, TLS and --insecure as ch-pull's (see ch-pull --help).
The storage directory is -s DIR, else $CH_IMAGE_STORAGE, else /var/tmp/$USER.ch.`,
  epilog: `Exit status:
  0    pushed
  1    failure: no such image, the registry refused or could not be reached
  2    usage error
  130  interrupted (SIGINT; 143 SIGTERM): the upload session is cancelled

Example: ${PROG} push hello registry.example.org:5000/me/hello:v1`,
};

/** The push subcommand; INTERRUPTIBLE runs the work with the signal SIGINT/SIGTERM/SIGHUP abort. */
export async function push(argv: string[], log: Log, storage: string | undefined,
  interruptible: <T>(work: (signal: AbortSignal) => Promise<T>) => Promise<T>): Promise<number> {
  const y = verbosityOptions(command(PUSH_SPEC)
    .option('insecure', { type: 'boolean', description: 'allow plain HTTP and unverified TLS (as ch-pull --insecure)' })
    .option('compress', { type: 'string', requiresArg: true, description: 'gzip (default) or zstd: the layer\'s compression' }));
  const a = await parseCommand(y, PUSH_SPEC, argv);
  if (!a) return 0;
  applyVerbosity(log, a);
  const pos = all(a._);
  if (pos.length < 1 || pos.length > 2) throw new ChError(`push: expected IMAGE [DEST_REF], got ${pos.length} argument(s)\nTry '${PROG} push --help' for more information.`, EXIT_USAGE);
  const compression = (last(a.compress) ?? 'gzip') as Compression;
  if (compression !== 'gzip' && compression !== 'zstd') throw new ChError(`--compress: '${compression}': want gzip or zstd`, EXIT_USAGE);
  const [tag, dest = pos[0]] = pos;
  let ref;
  try { ref = parseReference(dest); } catch (err) { throw new ChError(`${dest}: not a registry reference: ${(err as Error).message}`, EXIT_USAGE); }
  const st = openStorage(storage);
  try {
    if (!imageMarker(st.imgFd, st.imgDir, tag)) throw noSuchImage(tag, st.storage.path);
    const image = tagDir(tag, st.storage.path);
    return await interruptible(async (signal) => {
      const r = await pushImage({ image, ref, insecure: a.insecure === true, compression, log, signal });
      if (log.verbosity >= 0)
        process.stderr.write(`${PROG}: ${tag}: pushed to ${r.ref} (${r.digest}; ${r.uploaded ? `${(r.uploaded / 1048576).toFixed(1)} MiB sent` : 'the registry had every blob'})\n`);
      return 0;
    });
  } finally {
    closeStorage(st);
  }
}
