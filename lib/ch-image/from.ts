// FROM's base image: `scratch` (nothing), an image in storage (by its name,
// as ch-run finds it), else a registry reference, pulled into storage first
// through ch-pull's library (lib/pull/pull.ts: its blob cache, checks and
// install steps), as `ch-pull REF` would. Its identity (the marker its tool
// wrote, which names the manifest or build) is part of the cache key.

import { join } from 'node:path';
import type { Log } from '../util/log.js';
import { parseReference, storageName } from '../pull/reference.js';
import { hostPlatform } from '../pull/manifest.js';
import { JOBS_DEFAULT, pullToDir, withImage } from '../pull/pull.js';
import { markerAt, tagEntry, type openStorage } from './store.js';

export interface Base {
  /** The image directory, or null for scratch. */
  root: string | null;
  identity: string;
}

export async function baseImage(log: Log, st: ReturnType<typeof openStorage>, image: string, insecure: boolean,
  signal: AbortSignal): Promise<Base> {
  if (image === 'scratch') return { root: null, identity: 'scratch' };
  const local = tagEntry(image);
  let m = markerAt(st.imgFd, st.imgDir, local);
  if (m && !m.unverified) return { root: join(st.imgDir, local), identity: `${local} ${JSON.stringify(m)}` };
  const ref = parseReference(image);
  const name = storageName(ref);
  m = name === local ? null : markerAt(st.imgFd, st.imgDir, name);
  if (!m || m.unverified) {
    log.info(`FROM ${image}: pulling ${ref.canonical} into storage`);
    await withImage({ ref, platform: hostPlatform(), insecure, jobs: JOBS_DEFAULT }, log, signal,
      (img) => pullToDir(img, log, { dirFd: st.imgFd, dir: st.imgDir, name }, false, signal));
    m = markerAt(st.imgFd, st.imgDir, name);
  }
  // The same identity however the image was found (pulled now, or already in storage).
  return { root: join(st.imgDir, name), identity: `${name} ${JSON.stringify(m)}` };
}
