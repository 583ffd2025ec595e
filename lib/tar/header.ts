// Writing ustar headers: only what ch-builder2tar appends (short names, small files).

function octal(v: number, len: number): string {
  return v.toString(8).padStart(len - 1, '0') + '\0';
}

export interface NewEntry { name: string; type: 'file' | 'dir'; mode: number; data?: Buffer; mtime?: number }

export function ustarHeader(e: NewEntry): Buffer {
  const h = Buffer.alloc(512);
  const name = Buffer.from(e.name);
  if (name.length > 100) throw new Error(`tar entry name too long: ${e.name}`);
  name.copy(h, 0);
  h.write(octal(e.mode, 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  h.write(octal(e.data?.length ?? 0, 12), 124, 'latin1');
  h.write(octal(e.mtime ?? Math.floor(Date.now() / 1000), 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(e.type === 'dir' ? '5' : '0', 156, 'latin1');
  h.write('ustar\0' + '00', 257, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

export function entryBytes(e: NewEntry): Buffer {
  const parts = [ustarHeader(e)];
  if (e.data?.length) parts.push(e.data, Buffer.alloc((512 - (e.data.length % 512)) % 512));
  return Buffer.concat(parts);
}
