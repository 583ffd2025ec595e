// The gzip streams every build's decoder must treat alike (ISA-L's igzip,
// zlib, the gzip program): a tarball split into members at odd offsets (with
// an empty member among them), trailing bytes after the last member, and the
// broken ones. Each: [name, bytes, expected] where expected is 'ok' (the
// tarball's tree unpacks whole) or a RegExp the error matches.

import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';

/** A tar of one directory with a random (incompressible) file and a compressible one. */
export function gzipTestTar(mktar) {
  return mktar([{ name: 'g/', type: '5' }, { name: 'g/random', data: randomBytes(3 << 20) },
    { name: 'g/text', data: Buffer.from('line of text\n'.repeat(100000)) }]);
}

export function gzipCases(tar) {
  const gz = gzipSync(tar);
  const cuts = [0, 12345, 1 << 20, (1 << 20) + 777, 3 << 20, tar.length];
  const members = [];
  for (let i = 0; i + 1 < cuts.length; i++) {
    members.push(gzipSync(tar.subarray(cuts[i], cuts[i + 1])));
    if (i === 1) members.push(gzipSync(Buffer.alloc(0)));
  }
  const flip = (buf, at) => { const b = Buffer.from(buf); b[at] ^= 0xff; return b; };
  return [
    ['whole', gz, 'ok'],
    ['members', Buffer.concat(members), 'ok'],
    ['trailing-garbage', Buffer.concat([gz, Buffer.from('not gzip at all\n')]), 'ok'],
    ['trailing-zeros', Buffer.concat([gz, Buffer.alloc(4096)]), 'ok'],
    // The stream is decoded to its end, past the tar's end-of-archive marker: a broken member there is an error.
    ['trailing-bad-member', Buffer.concat([gz, Buffer.from([0x1f, 0x8b, 0x63, 0, 0, 0, 0, 0, 0, 3])]), /corrupt gzip data|status 1/],
    ['truncated', gz.subarray(0, gz.length >> 1), /truncated gzip data|status 1/],
    ['truncated-trailer', gz.subarray(0, gz.length - 3), /truncated gzip data|status 1/],
    ['bad-crc', flip(gz, gz.length - 6), /corrupt gzip data|status 1/],
    ['bad-length', flip(gz, gz.length - 2), /corrupt gzip data|status 1/],
    ['bad-data', flip(gz, gz.length >> 1), /corrupt gzip data|status 1/],
  ];
}
