// An npm registry on loopback for install tests, serving exactly the
// package's runtime dependencies as package-lock.json pins them, from the
// tarballs root's npm cache already holds (the repository's `npm ci` put
// them there): `npm install` of the packed ch-toolkit then runs as it does
// against registry.npmjs.org, resolving, fetching and verifying each
// dependency, without the network. Only the packuments (names, versions,
// dependencies, tarball URLs and integrity) are made up, from the lock file.

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** npm's own cacache (the library npm reads its cache with). */
function cacache() {
  const npm = execFileSync('npm', ['root', '-g'], { encoding: 'utf8' }).trim();
  return createRequire(join(npm, 'npm', 'package.json'))('cacache');
}

/**
 * Start the registry for REPO's lock file; CACHE: the npm cache holding the
 * tarballs (default: npm's configured one). Returns { url, close() }.
 */
export async function startRegistry(repo, cache) {
  const npmCache = cache ?? join(execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).trim(), '_cacache');
  const cc = cacache();
  const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8'));
  const packuments = new Map();   // name -> { name, versions }
  const tarballs = new Map();     // URL path -> integrity
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  for (const [path, p] of Object.entries(lock.packages)) {
    if (path === '' || p.dev || p.link) continue;
    const name = path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const file = `/${name}/-/${name.split('/').pop()}-${p.version}.tgz`;
    tarballs.set(file, p.integrity);
    const doc = packuments.get(name) ?? { name, 'dist-tags': {}, versions: {} };
    const { dependencies, optionalDependencies, peerDependencies, peerDependenciesMeta, bin, engines, os, cpu, license } = p;
    doc.versions[p.version] = { name, version: p.version, dependencies, optionalDependencies, peerDependencies,
      peerDependenciesMeta, bin, engines, os, cpu, license, dist: { tarball: url + file, integrity: p.integrity } };
    const latest = doc['dist-tags'].latest;
    if (!latest || latest.localeCompare(p.version, undefined, { numeric: true }) < 0) doc['dist-tags'].latest = p.version;
    packuments.set(name, doc);
  }
  const missing = [];
  for (const [file, integrity] of tarballs)
    if (!(await cc.get.hasContent(npmCache, integrity))) missing.push(file);
  if (missing.length > 0) {
    server.close();
    throw new Error(`npm's cache (${npmCache}) lacks ${missing.join(', ')}: run npm ci in the repository first`);
  }
  server.on('request', async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, url).pathname);
    try {
      if (tarballs.has(path)) {
        const data = await cc.get.byDigest(npmCache, tarballs.get(path));
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length }).end(data);
      } else if (packuments.has(path.slice(1))) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(packuments.get(path.slice(1))));
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      }
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  });
  return { url, close: () => new Promise((resolve) => server.close(resolve)) };
}
