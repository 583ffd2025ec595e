// --seccomp: root emulation by a seccomp-bpf filter (native/core/seccomp.c).
// Privileged calls that fail unprivileged (chown family, device mknod,
// set*id, setgroups) succeed without doing anything; kexec/reboot are
// refused; the filter checks the architecture, so the 32-bit syscall ABI of a
// 64-bit process neither escapes it nor gets x86_64's numbers applied to it.

import test from 'ava';
import { execa } from 'execa';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ch, IMAGES, needs, notRoot, testUser, unavailable } from './helpers/env.js';
import { imageCopy, ownedByUser, scratch } from './helpers/fixtures.js';

const run = (args, opts = {}) => ch('ch-run', args, { timeout: 120000, ...opts });
// A PATH with sbin, as root's: dpkg wants ldconfig and start-stop-daemon.
const ROOT_PATH = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };

test('--seccomp fakes chown and device mknod, really makes FIFOs, and shows in /proc as a filter', async (t) => {
  const img = await imageCopy(t);
  const script = 'touch /f; chown 4242:4242 /f; echo chown=$?; mknod /dev0 c 1 3; echo mknod-c=$?; '
    + 'mknod /blk b 7 0; echo mknod-b=$?; mknod /fifo p; echo mknod-p=$?; grep ^Seccomp: /proc/self/status';
  const r = await run(['-w', '-u0', '--seccomp', img, '--', 'sh', '-c', script]);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'chown=0\nmknod-c=0\nmknod-b=0\nmknod-p=0\nSeccomp:\t2');
  const u = testUser();
  t.is(statSync(join(img, 'f')).uid, u.uid, 'faked chown changed nothing');
  t.false(existsSync(join(img, 'dev0')), 'faked mknod created nothing');
  t.false(existsSync(join(img, 'blk')), 'faked mknod created nothing');
  t.true(statSync(join(img, 'fifo')).isFIFO(), 'a FIFO is not a device: really created');

  // Without the option the same calls fail, and no filter is installed.
  const n = await run(['-w', '-u0', img, '--', 'sh', '-c', script]);
  t.regex(n.stdout, /^chown=1\nmknod-c=1\nmknod-b=1\n/, n.stderr);
  t.regex(n.stdout, /Seccomp:\t0$/);
});

needs(test, notRoot && "needs the full Debian image, which only root's setup makes (a user's copy lacks /etc/shadow)")('--seccomp: fake root installs local .deb packages whose scripts chown and add users; the program runs as the user', async (t) => {
  if (!existsSync(join(IMAGES, 'debian'))) return unavailable(t, 'Debian test image', 'not built (debootstrap)');
  const dir = await scratch(t, 'debs');
  const pkg = (name, postinst, files) => ({ root: join(dir, name), name, postinst, files });
  const hello = pkg('ch-hello', [
    'useradd --system --no-create-home --home-dir /nonexistent chsvc',
    'adduser --system --no-create-home chsvc2',
    'mkdir -p /var/lib/ch-hello',
    'chown chsvc:root /var/lib/ch-hello',
    'chown -R chsvc2:nogroup /usr/bin/ch-hello',
    'mknod /var/lib/ch-hello/null c 1 3',
    'echo postinst-done > /var/lib/ch-hello/done',
  ], { 'usr/bin/ch-hello': '#!/bin/sh\necho "hello from ch-hello as $(id -u)"\n' });
  const lib = pkg('ch-lib', ['chown root:root /usr/share/ch-lib/data', 'chgrp nogroup /usr/share/ch-lib/data'],
    { 'usr/share/ch-lib/data': 'data\n' });
  for (const p of [hello, lib]) {
    const control = `Package: ${p.name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.com>\n`
      + `Description: ch-toolkit --seccomp test package\n`;
    await execa('mkdir', ['-p', join(p.root, 'DEBIAN')]);
    writeFileSync(join(p.root, 'DEBIAN/control'), control);
    writeFileSync(join(p.root, 'DEBIAN/postinst'), `#!/bin/sh\nset -e\n${p.postinst.join('\n')}\n`, { mode: 0o755 });
    for (const [f, text] of Object.entries(p.files)) {
      await execa('mkdir', ['-p', join(p.root, f, '..')]);
      writeFileSync(join(p.root, f), text, { mode: 0o755 });
    }
    await execa('dpkg-deb', ['--root-owner-group', '--build', p.root, join(dir, `${p.name}.deb`)]);
  }
  await ownedByUser(dir);
  const install = async (seccomp) => {
    const img = await imageCopy(t, 'debian');
    const r = await run(['-w', '-u0', '-g0', '--no-passwd', ...(seccomp ? ['--seccomp'] : []),
      '-b', `${dir}:/mnt/0`, img, '--', 'dpkg', '-i', '/mnt/0/ch-lib.deb', '/mnt/0/ch-hello.deb'],
    { env: ROOT_PATH });
    return { img, r };
  };

  // Without --seccomp the maintainer script's chown to an unmapped id fails.
  const without = await install(false);
  t.not(without.r.exitCode, 0, 'dpkg -i without --seccomp must fail');
  t.regex(without.r.stderr, /chown: changing ownership of '\/var\/lib\/ch-hello': Invalid argument/);

  const { img, r } = await install(true);
  t.is(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stdout, /Setting up ch-hello \(1\.0\)/);
  t.is(readFileSync(join(img, 'var/lib/ch-hello/done'), 'utf8'), 'postinst-done\n');
  t.regex(readFileSync(join(img, 'etc/passwd'), 'utf8'), /^chsvc:x:\d+:\d+::\/nonexistent:/m);
  t.regex(readFileSync(join(img, 'etc/passwd'), 'utf8'), /^chsvc2:x:/m);
  const u = testUser();
  t.is(statSync(join(img, 'usr/bin/ch-hello')).uid, u.uid, 'chown was faked: still the user\'s file');
  t.false(existsSync(join(img, 'var/lib/ch-hello/null')), 'device node faked, not created');

  // The installed program runs as the normal user, without --seccomp.
  const s = await run([img, '--', 'dpkg-query', '-W', '-f=${Status}\\n', 'ch-hello', 'ch-lib']);
  t.is(s.stdout, 'install ok installed\ninstall ok installed', s.stderr);
  const h = await run([img, '--', 'ch-hello']);
  t.is(h.exitCode, 0, h.stderr);
  t.is(h.stdout, `hello from ch-hello as ${u.uid}`);
});

// A 64-bit program making calls through the 32-bit ABI (int 0x80), and one
// x32 call. Pointers must fit in 32 bits: static, not PIE, data in .bss.
const ABI_PROBE = String.raw`
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char path[256];
static long i386(long nr, long a, long b, long c)
{
   long r;
   __asm__ volatile ("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
   return r;
}
static void say(const char *what, long r) { printf("%s=%s\n", what, r == 0 ? "0" : r == -EPERM ? "EPERM"
   : r == -EINVAL ? "EINVAL" : r == -ENOSYS ? "ENOSYS" : r > 0 ? "positive" : "other"); }

int main(int argc, char **argv)
{
   if (argc < 2 || strlen(argv[1]) >= sizeof(path)) return 2;
   strcpy(path, argv[1]);
   if (argc == 3) { printf("%d\n", (int)i386(20, 0, 0, 0) == getpid()); return 0; }  /* probe: getpid */
   say("i386-chown", i386(182, (long)path, 4242, 4242));
   say("i386-chown32", i386(212, (long)path, 4242, 4242));
   say("i386-lchown32", i386(198, (long)path, 4242, 4242));
   say("i386-mknod-chr", i386(14, (long)path, S_IFCHR | 0600, 0x103));
   say("i386-setuid32", i386(213, 4242, 0, 0));
   say("i386-setgroups32", i386(206, 0, 0, 0));
   say("i386-reboot", i386(88, 0, 0, 0));
   say("i386-kexec_load", i386(283, 0, 0, 0));
   /* 92 is i386 truncate but x86_64 chown: must really truncate. */
   say("i386-truncate", i386(92, (long)path, 0, 0));
   struct stat st;
   if (stat(path, &st) != 0) return 3;
   printf("size=%lld uid-changed=%d\n", (long long)st.st_size, st.st_uid == 4242);
   say("i386-getuid32-is-4242", i386(199, 0, 0, 0) == 4242 ? 0 : -EINVAL);
   long x = syscall(0x40000000 | SYS_chown, path, 4242, 4242);
   say("x32-chown", x < 0 ? -errno : x);
   return 0;
}
`;

test('--seccomp checks the architecture: 32-bit calls (int 0x80) get i386 numbers, x32 is refused; -u 0 and normal uid', async (t) => {
  const dir = await scratch(t, 'abi');
  writeFileSync(join(dir, 'probe.c'), ABI_PROBE);
  const cc = await execa('gcc', ['-O1', '-static', '-no-pie', '-o', join(dir, 'probe'), join(dir, 'probe.c')],
    { reject: false, all: true });
  if (cc.exitCode !== 0) return unavailable(t, 'static x86_64 C compiler', cc.all);
  const probe = await execa(join(dir, 'probe'), ['/', 'probe'], { reject: false });
  if (probe.exitCode !== 0 || probe.stdout !== '1')
    return unavailable(t, 'the 32-bit syscall ABI (IA32 emulation)', `probe: ${probe.signal ?? probe.exitCode}`);
  await ownedByUser(dir);
  const img = await imageCopy(t);
  const expected = [
    'i386-chown=0', 'i386-chown32=0', 'i386-lchown32=0', 'i386-mknod-chr=0', 'i386-setuid32=0',
    'i386-setgroups32=0', 'i386-reboot=EPERM', 'i386-kexec_load=EPERM', 'i386-truncate=0',
    'size=0 uid-changed=0', 'i386-getuid32-is-4242=EINVAL', 'x32-chown=ENOSYS'].join('\n');
  for (const who of [['-u0', '-g0'], []]) {
    const file = join(dir, `victim${who.length}`);
    writeFileSync(file, 'twelve bytes');
    await ownedByUser(file);
    const r = await run(['--seccomp', ...who, '-b', `${dir}:/mnt/0`, img, '--', '/mnt/0/probe',
      `/mnt/0/victim${who.length}`]);
    t.is(r.exitCode, 0, `${who.join(' ') || 'normal uid'}: ${r.stderr}`);
    t.is(r.stdout, expected, who.join(' ') || 'normal uid');
    t.is(statSync(file).size, 0);
    t.is(statSync(file).uid, testUser().uid);
  }
  // Without the filter the same program sees the kernel's answers.
  writeFileSync(join(dir, 'victim9'), 'twelve bytes');
  await ownedByUser(join(dir, 'victim9'));
  const n = await run(['-b', `${dir}:/mnt/0`, img, '--', '/mnt/0/probe', '/mnt/0/victim9']);
  t.regex(n.stdout, /^i386-chown=EINVAL\n/, n.stderr);   // unmapped id
  t.regex(n.stdout, /\ni386-reboot=EPERM\n/);
});

// The filter's numbers, every column, against the kernel's own tables as the
// system headers carry them: a wrong number would fake some other call on
// that architecture (the core checks only its native column, at run time).
test('--seccomp syscall table agrees with the kernel headers for x86_64, i386 and aarch64', async (t) => {
  const src = readFileSync(new URL('../native/core/seccomp.c', import.meta.url), 'utf8');
  const rows = [...src.matchAll(/\{ "(\w+)",\s+\w+,\s+\d, \{\s*(NONE|\d+),\s*(NONE|\d+),\s*(NONE|\d+) \} \}/g)];
  t.true(rows.length >= 30, `table rows found: ${rows.length}`);
  const headers = [
    ['x86_64', '/usr/include/x86_64-linux-gnu/asm/unistd_64.h'],
    ['i386', '/usr/include/x86_64-linux-gnu/asm/unistd_32.h'],
    ['aarch64', '/usr/include/asm-generic/unistd.h'],
  ];
  for (const [col, [arch, file]] of headers.entries()) {
    if (!existsSync(file)) { t.log(`${arch}: ${file} not here, column not checked`); continue; }
    const text = readFileSync(file, 'utf8');
    for (const [, name, ...nrs] of rows) {
      const m = text.match(new RegExp(`^#define __NR_${name}\\s+(\\d+)\\s*$`, 'm'));
      t.is(nrs[col] === 'NONE' ? null : Number(nrs[col]), m ? Number(m[1]) : null, `${arch} ${name}`);
    }
  }
});

// The filter itself, evaluated for architectures this machine can't run: the
// core's filter builder compiled into a small program that prints the
// instructions, and a classic-BPF interpreter for the few opcodes it uses.
const DUMP = String.raw`
#include "seccomp.c"
#include <stdio.h>
int main(void)
{
   struct prog p = build_filter();
   for (size_t i = 0; i < p.len; i++)
      printf("%u %u %u %u\n", p.ins[i].code, p.ins[i].jt, p.ins[i].jf, p.ins[i].k);
   return 0;
}
`;

/** Run classic BPF program PROG on seccomp_data {nr, arch, args}; return its verdict. */
function bpfRun(prog, { nr, arch, args = [] }) {
  const data = Buffer.alloc(64);
  data.writeInt32LE(nr, 0);
  data.writeUInt32LE(arch, 4);
  args.forEach((a, i) => data.writeBigUInt64LE(BigInt(a), 16 + 8 * i));
  let A = 0;
  for (let pc = 0, steps = 0; pc < prog.length && steps < 10000; pc++, steps++) {
    const [code, jt, jf, k] = prog[pc];
    switch (code) {
      case 0x20: A = data.readUInt32LE(k); break;                      // ld [k]
      case 0x54: A = (A & k) >>> 0; break;                             // and #k
      case 0x05: pc += k; break;                                       // ja
      case 0x15: pc += A === k ? jt : jf; break;                       // jeq #k
      case 0x45: pc += (A & k) !== 0 ? jt : jf; break;                 // jset #k
      case 0x06: return k >>> 0;                                       // ret #k
      default: throw new Error(`opcode 0x${code.toString(16)} not interpreted`);
    }
  }
  throw new Error('fell off the end of the filter');
}

test('--seccomp filter: unknown architectures are killed, aarch64 and i386 use their own numbers, x32 refused', async (t) => {
  const dir = await scratch(t, 'bpf');
  const core = new URL('../native/core/', import.meta.url).pathname;
  writeFileSync(join(dir, 'dump.c'), DUMP);
  const gen = new URL('../build/gen/', import.meta.url).pathname;   // protocol.h, made at build time from protocol.json
  const cc = await execa('gcc', ['-D_GNU_SOURCE', '-std=gnu11', '-I', core, '-I', gen, '-o', join(dir, 'dump'), join(dir, 'dump.c'),
    join(core, 'misc.c')], { reject: false, all: true });
  if (cc.exitCode !== 0) return unavailable(t, 'a C compiler for the filter dump', cc.all);
  const prog = (await execa(join(dir, 'dump'))).stdout.split('\n').map((l) => l.split(' ').map(Number));
  const ALLOW = 0x7fff0000, KILL = 0x80000000, ERRNO = (e) => 0x00050000 | e;
  const X86_64 = 0xc000003e, I386 = 0x40000003, AARCH64 = 0xc00000b7, ARM = 0x40000028;
  const S_IFCHR = 0o020000, S_IFBLK = 0o060000, S_IFIFO = 0o010000, S_IFREG = 0o100000;
  const cases = [
    ['x86_64 chown', { arch: X86_64, nr: 92 }, ERRNO(0)],
    ['x86_64 getpid', { arch: X86_64, nr: 39 }, ALLOW],
    ['x86_64 mknod chr', { arch: X86_64, nr: 133, args: [0, S_IFCHR | 0o600, 0] }, ERRNO(0)],
    ['x86_64 mknod fifo', { arch: X86_64, nr: 133, args: [0, S_IFIFO | 0o600, 0] }, ALLOW],
    ['x86_64 reboot', { arch: X86_64, nr: 169 }, ERRNO(1)],
    ['x32 chown', { arch: X86_64, nr: 0x40000000 | 92 }, ERRNO(38)],
    ['x32 getpid', { arch: X86_64, nr: 0x40000000 | 39 }, ERRNO(38)],
    ['i386 chown32', { arch: I386, nr: 212 }, ERRNO(0)],
    ['i386 truncate (x86_64 chown number)', { arch: I386, nr: 92 }, ALLOW],
    ['aarch64 fchownat', { arch: AARCH64, nr: 54 }, ERRNO(0)],
    ['aarch64 setresuid', { arch: AARCH64, nr: 147 }, ERRNO(0)],
    ['aarch64 mknodat blk', { arch: AARCH64, nr: 33, args: [0, 0, S_IFBLK | 0o600, 0] }, ERRNO(0)],
    ['aarch64 mknodat file', { arch: AARCH64, nr: 33, args: [0, 0, S_IFREG | 0o600, 0] }, ALLOW],
    ['aarch64 92 (x86_64 chown; personality here)', { arch: AARCH64, nr: 92 }, ALLOW],
    ['aarch64 kexec_file_load', { arch: AARCH64, nr: 294 }, ERRNO(1)],
    ['arm (32-bit compat on aarch64): unknown, killed', { arch: ARM, nr: 212 }, KILL],
    ['unknown architecture, allowed-looking call: killed', { arch: 0x12345678, nr: 39 }, KILL],
  ];
  for (const [what, data, want] of cases)
    t.is(bpfRun(prog, data), want >>> 0, what);
});
