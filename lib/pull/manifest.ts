// From what the registry returns to the list of blobs an image is made of:
// pick this machine's (or --arch/--platform's) manifest out of a manifest
// list or OCI index, then read the config and layer descriptors.

import { arch as nodeArch } from 'node:os';
import { ChError } from '../util/log.js';
import { MEDIA, type Manifest } from './registry.js';
import { EXIT_USAGE } from './reference.js';
import { printable } from './text.js';

export const EXIT_FAIL = 1;
/** The config blob is read into memory whole: at most this much (as containers/image). */
export const CONFIG_MAX = 4 << 20;

export interface Platform { os: string; architecture: string; variant?: string }

export interface Descriptor { mediaType: string; digest: string; size: number; urls?: string[] }

export interface ImageManifest { digest: string; config: Descriptor; layers: Descriptor[] }

const GO_ARCH: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loong64', mips: 'mips', mipsel: 'mipsle' };

/** This machine's platform, in OCI's (Go's) words. */
export function hostPlatform(): Platform {
  const a = GO_ARCH[nodeArch()] ?? nodeArch();
  return a === 'arm64' ? { os: 'linux', architecture: a, variant: 'v8' } : { os: 'linux', architecture: a };
}

/** Parse --platform OS/ARCH[/VARIANT] or --arch ARCH[/VARIANT]. */
export function parsePlatform(s: string, archOnly: boolean): Platform {
  const parts = s.split('/');
  const ok = (p: string) => /^[a-z0-9_.-]+$/.test(p);
  if (archOnly) {
    if (parts.length > 2 || !parts.every(ok)) throw new ChError(`--arch '${s}': want ARCH[/VARIANT], e.g. amd64 or arm/v7`, EXIT_USAGE);
    return { os: 'linux', architecture: parts[0], variant: parts[1] };
  }
  if (parts.length < 2 || parts.length > 3 || !parts.every(ok))
    throw new ChError(`--platform '${s}': want OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7`, EXIT_USAGE);
  return { os: parts[0], architecture: parts[1], variant: parts[2] };
}

export function platformText(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

export function isIndex(m: Manifest): boolean {
  return m.mediaType === MEDIA.ociIndex || m.mediaType === MEDIA.dockerList
    || (!m.mediaType && Array.isArray(m.json?.manifests));
}

/**
 * The descriptor in index M for platform WANT. A variant asked for must
 * match; when none was asked for, an entry without one, or arm64's "v8".
 */
export function selectPlatform(m: Manifest, want: Platform, what: string): Descriptor {
  const list: any[] = Array.isArray(m.json?.manifests) ? m.json.manifests : [];
  const cands = list.filter((d) => d?.platform?.os === want.os && d?.platform?.architecture === want.architecture
    && typeof d.digest === 'string');
  const exact = cands.find((d) => (d.platform.variant ?? '') === (want.variant ?? ''));
  const pick = exact ?? (want.variant && !(want.architecture === 'arm64' && want.variant === 'v8') ? undefined
    : cands.find((d) => !d.platform.variant) ?? cands[0]);
  if (!pick) {
    const have = list.filter((d) => d?.platform).map((d) => printable(platformText(d.platform)))
      .filter((p) => p !== 'unknown/unknown');
    throw new ChError(`${what}: no manifest for ${platformText(want)} (the image has: ${have.join(', ') || 'none'});`
      + ' choose one with --arch or --platform', EXIT_FAIL);
  }
  return descriptor(pick, what);
}

function descriptor(d: any, what: string): Descriptor {
  if (!d || typeof d.digest !== 'string' || !/^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/.test(d.digest)
    || !Number.isSafeInteger(d.size) || d.size < 0)
    throw new ChError(`${what}: manifest has a bad descriptor: ${printable(String(JSON.stringify(d)).slice(0, 200))}`, EXIT_FAIL);
  return { mediaType: String(d.mediaType ?? ''), digest: d.digest, size: d.size, urls: d.urls };
}

/** Layer media types we can unpack (the extractor detects the compression). */
const LAYER_TYPES = /^application\/vnd\.(oci\.image\.layer\.v1\.tar(\+gzip|\+zstd)?|docker\.image\.rootfs\.diff\.tar\.gzip)$/;

export function imageManifest(m: Manifest, what: string): ImageManifest {
  if (m.json?.schemaVersion === 1)
    throw new ChError(`${what}: Docker schema 1 manifest: not supported (push the image again with a current tool)`, EXIT_FAIL);
  if (m.mediaType && m.mediaType !== MEDIA.ociManifest && m.mediaType !== MEDIA.dockerManifest)
    throw new ChError(`${what}: unsupported manifest type ${printable(String(m.mediaType))}`, EXIT_FAIL);
  if (!Array.isArray(m.json?.layers)) throw new ChError(`${what}: manifest without layers`, EXIT_FAIL);
  const config = descriptor(m.json.config, what);
  // Refused before a byte of it is fetched: its size bounds the download too (cache.ts).
  if (config.size > CONFIG_MAX)
    throw new ChError(`${what}: config ${config.digest} is ${config.size} bytes, more than ${CONFIG_MAX >> 20} MiB; refused`, EXIT_FAIL);
  const layers = m.json.layers.map((d: any) => descriptor(d, what));
  for (const l of layers) {
    if (!LAYER_TYPES.test(l.mediaType))
      throw new ChError(`${what}: layer ${l.digest} has media type '${printable(l.mediaType)}', which ch-pull can't unpack`, EXIT_FAIL);
  }
  return { digest: m.digest, config, layers };
}
