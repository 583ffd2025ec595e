/* --seccomp: root emulation by a seccomp-bpf filter, as Charliecloud does it.

   In an unprivileged container, fake root (-u 0) still cannot chown files to
   ids outside the one-id map, create device nodes, or switch to unmapped ids,
   and package managers give up when those calls fail. The filter makes them
   succeed without doing anything: the kernel returns 0 without running the
   call (SECCOMP_RET_ERRNO with data 0). Calls that could only reboot or
   replace the kernel are refused with EPERM, which is what they get
   unprivileged anyway (Charliecloud fakes them too; a program that believes
   it rebooted is worse off than one told no).

   A filter sees the syscall number of whichever ABI the process used, and a
   64-bit process can enter the kernel through the 32-bit one (int 0x80), so
   the number alone means nothing: the architecture is checked first, each
   known one has its own table, x32 is refused, and any other architecture
   kills the process. Nothing gets through unfiltered.

   Installed last, after PR_SET_NO_NEW_PRIVS (which lets an unprivileged
   process install a filter at all), just before exec: ch-run's own set-up
   is never subject to it. Filters are inherited and cannot be removed. */

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "core.h"

/* The architectures we know the numbers of; the order of a row's numbers. */
enum { ARCH_X86_64, ARCH_I386, ARCH_AARCH64, ARCH_CT };
static const unsigned arch_audit[ARCH_CT] = { AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64 };

/* x86_64's x32 ABI: x86_64's architecture value, this bit in the number. */
#define X32_SYSCALL_BIT 0x40000000u

enum action {
   FAKE,        /* return 0, do nothing */
   FAKE_DEV,    /* mknod family: fake only for character/block devices */
   REFUSE,      /* return EPERM */
};

#define NONE (-1)   /* the architecture has no such call */

/* Numbers from the kernel's syscall tables (arch/x86/entry/syscalls/,
   include/uapi/asm-generic/unistd.h); the native column is checked against
   the C library's headers before the filter is built (a mismatch is fatal). MODE: argument index of
   the file mode, for FAKE_DEV. */
static const struct fake_call {
   const char *name;
   enum action action;
   int mode_arg;
   int nr[ARCH_CT];   /* x86_64, i386, aarch64 */
} calls[] = {
   { "capset",          FAKE,     0, { 126, 185,  91 } },
   { "chown",           FAKE,     0, {  92, 182, NONE } },
   { "chown32",         FAKE,     0, { NONE, 212, NONE } },
   { "fchown",          FAKE,     0, {  93,  95,  55 } },
   { "fchown32",        FAKE,     0, { NONE, 207, NONE } },
   { "fchownat",        FAKE,     0, { 260, 298,  54 } },
   { "lchown",          FAKE,     0, {  94,  16, NONE } },
   { "lchown32",        FAKE,     0, { NONE, 198, NONE } },
   { "mknod",           FAKE_DEV, 1, { 133,  14, NONE } },
   { "mknodat",         FAKE_DEV, 2, { 259, 297,  33 } },
   { "setfsgid",        FAKE,     0, { 123, 139, 152 } },
   { "setfsgid32",      FAKE,     0, { NONE, 216, NONE } },
   { "setfsuid",        FAKE,     0, { 122, 138, 151 } },
   { "setfsuid32",      FAKE,     0, { NONE, 215, NONE } },
   { "setgid",          FAKE,     0, { 106,  46, 144 } },
   { "setgid32",        FAKE,     0, { NONE, 214, NONE } },
   { "setgroups",       FAKE,     0, { 116,  81, 159 } },
   { "setgroups32",     FAKE,     0, { NONE, 206, NONE } },
   { "setregid",        FAKE,     0, { 114,  71, 143 } },
   { "setregid32",      FAKE,     0, { NONE, 204, NONE } },
   { "setresgid",       FAKE,     0, { 119, 170, 149 } },
   { "setresgid32",     FAKE,     0, { NONE, 210, NONE } },
   { "setresuid",       FAKE,     0, { 117, 164, 147 } },
   { "setresuid32",     FAKE,     0, { NONE, 208, NONE } },
   { "setreuid",        FAKE,     0, { 113,  70, 145 } },
   { "setreuid32",      FAKE,     0, { NONE, 203, NONE } },
   { "setuid",          FAKE,     0, { 105,  23, 146 } },
   { "setuid32",        FAKE,     0, { NONE, 213, NONE } },
   { "kexec_file_load", REFUSE,   0, { 320, NONE, 294 } },
   { "kexec_load",      REFUSE,   0, { 246, 283, 104 } },
   { "reboot",          REFUSE,   0, { 169,  88, 142 } },
};

/* The native column must agree with the headers we are built against: a
   wrong number would fake some other call. */
#if defined(__x86_64__) && !defined(__ILP32__)
#define NATIVE ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE ARCH_AARCH64
#endif
static void check_native_numbers(void)
{
#ifdef NATIVE
   static const struct { const char *name; int nr; } native[] = {
      { "capset", __NR_capset }, { "fchown", __NR_fchown }, { "fchownat", __NR_fchownat },
      { "mknodat", __NR_mknodat }, { "setfsgid", __NR_setfsgid }, { "setfsuid", __NR_setfsuid },
      { "setgid", __NR_setgid }, { "setgroups", __NR_setgroups }, { "setregid", __NR_setregid },
      { "setresgid", __NR_setresgid }, { "setresuid", __NR_setresuid },
      { "setreuid", __NR_setreuid }, { "setuid", __NR_setuid }, { "kexec_load", __NR_kexec_load },
      { "kexec_file_load", __NR_kexec_file_load }, { "reboot", __NR_reboot },
#if NATIVE == ARCH_X86_64
      { "chown", __NR_chown }, { "lchown", __NR_lchown }, { "mknod", __NR_mknod },
#endif
   };
   for (size_t i = 0; i < sizeof(native) / sizeof(native[0]); i++)
      for (size_t j = 0; j < sizeof(calls) / sizeof(calls[0]); j++)
         if (!strcmp(calls[j].name, native[i].name) && calls[j].nr[NATIVE] != native[i].nr)
            FATAL_NOERR("seccomp: internal error: %s is %d here, table says %d",
                        native[i].name, native[i].nr, calls[j].nr[NATIVE]);
#endif
}

/** Building the program **/

struct prog { struct sock_filter *ins; size_t len; };

static size_t emit(struct prog *p, unsigned short code, unsigned char jt, unsigned char jf, unsigned k)
{
   p->ins = xrealloc(p->ins, (p->len + 1) * sizeof(*p->ins));
   p->ins[p->len] = (struct sock_filter){ code, jt, jf, k };
   return p->len++;
}

#define LD_ABS(off)     (BPF_LD | BPF_W | BPF_ABS), 0, 0, (off)
#define RET(val)        (BPF_RET | BPF_K), 0, 0, (val)
#define JEQ(k, jt, jf)  (BPF_JMP | BPF_JEQ | BPF_K), (jt), (jf), (k)

/* Low 32 bits of argument I (the mode_t of mknod is 32 bits). */
static unsigned arg_low(int i)
{
   unsigned off = offsetof(struct seccomp_data, args) + 8 * (unsigned)i;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
   off += 4;
#endif
   return off;
}

/* One architecture's section: the number decides; unlisted calls run. */
static void emit_arch(struct prog *p, int arch)
{
   emit(p, LD_ABS(offsetof(struct seccomp_data, nr)));
   if (arch == ARCH_X86_64) {
      /* x32 shares x86_64's architecture value; refuse it (ENOSYS, as a
         kernel without x32 says) rather than read its numbers as x86_64's. */
      emit(p, (BPF_JMP | BPF_JSET | BPF_K), 0, 1, X32_SYSCALL_BIT);
      emit(p, RET(SECCOMP_RET_ERRNO | ENOSYS));
   }
   for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
      const struct fake_call *c = &calls[i];
      if (c->nr[arch] == NONE)
         continue;
      switch (c->action) {
      case FAKE:
      case REFUSE:
         emit(p, JEQ((unsigned)c->nr[arch], 0, 1));
         emit(p, RET(SECCOMP_RET_ERRNO | (c->action == FAKE ? 0 : EPERM)));
         break;
      case FAKE_DEV:
         emit(p, JEQ((unsigned)c->nr[arch], 0, 6));          /* else: next call */
         emit(p, LD_ABS(arg_low(c->mode_arg)));
         emit(p, (BPF_ALU | BPF_AND | BPF_K), 0, 0, S_IFMT);
         emit(p, JEQ(S_IFCHR, 2, 0));
         emit(p, JEQ(S_IFBLK, 1, 0));
         emit(p, RET(SECCOMP_RET_ALLOW));                      /* FIFO, socket, file */
         emit(p, RET(SECCOMP_RET_ERRNO | 0));
         break;
      }
   }
   emit(p, RET(SECCOMP_RET_ALLOW));
}

/* Dispatch on the architecture to its section; an unknown one is killed. */
static struct prog build_filter(void)
{
   struct prog p = { NULL, 0 }, sect[ARCH_CT];
   for (int a = 0; a < ARCH_CT; a++) {
      sect[a] = (struct prog){ NULL, 0 };
      emit_arch(&sect[a], a);
   }
   emit(&p, LD_ABS(offsetof(struct seccomp_data, arch)));
   size_t ja[ARCH_CT];
   for (int a = 0; a < ARCH_CT; a++) {
      emit(&p, JEQ(arch_audit[a], 0, 1));
      ja[a] = emit(&p, (BPF_JMP | BPF_JA), 0, 0, 0);   /* patched below */
   }
   emit(&p, RET(SECCOMP_RET_KILL_PROCESS));
   for (int a = 0; a < ARCH_CT; a++) {
      p.ins[ja[a]].k = (unsigned)(p.len - (ja[a] + 1));
      for (size_t i = 0; i < sect[a].len; i++)
         emit(&p, sect[a].ins[i].code, sect[a].ins[i].jt, sect[a].ins[i].jf, sect[a].ins[i].k);
      free(sect[a].ins);
   }
   return p;
}

void seccomp_install(void)
{
   check_native_numbers();
   struct prog p = build_filter();
   if (p.len > BPF_MAXINSNS)
      FATAL_NOERR("seccomp: internal error: filter has %zu instructions (limit %d)", p.len, BPF_MAXINSNS);
   struct sock_fprog fprog = { .len = (unsigned short)p.len, .filter = p.ins };
   Z_(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0),
      "can't install seccomp filter (--seccomp)");
   INFO("seccomp: root emulation filter installed (%zu instructions)", p.len);
   free(p.ins);
}
