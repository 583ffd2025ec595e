// The image manifest that names a pushed image's config and layers, in OCI's
// media types (the default: what registries, podman and ch-pull all read,
// and the only one that has zstd layers) or Docker's v2 schema 2 (for old
// registries; gzip only).

import { ChError } from '../util/log.js';
import { MEDIA } from '../pull/registry.js';
import type { Compression } from './layer.js';

export const EXIT_USAGE = 2;

export type ManifestFormat = 'oci' | 'docker';

export interface Descriptor { mediaType: string; digest: string; size: number }

/** The media types of FORMAT: the manifest's, the config's, and a layer's with COMPRESSION. */
export function mediaTypes(format: ManifestFormat, compression: Compression): { manifest: string; config: string; layer: string } {
  if (format === 'docker') {
    if (compression !== 'gzip')
      throw new ChError(`a Docker v2 manifest can't name a ${compression} layer (use gzip, or the OCI format)`, EXIT_USAGE);
    return { manifest: MEDIA.dockerManifest, config: 'application/vnd.docker.container.image.v1+json',
      layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip' };
  }
  return { manifest: MEDIA.ociManifest, config: 'application/vnd.oci.image.config.v1+json',
    layer: `application/vnd.oci.image.layer.v1.tar+${compression}` };
}

/** The manifest's bytes (compact JSON, as registries store them). */
export function manifestBody(mediaType: string, config: Descriptor, layers: Descriptor[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config, layers }));
}
