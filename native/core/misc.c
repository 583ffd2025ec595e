/* Logging and small helpers for the core. */

#include <errno.h>
#include <linux/capability.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

int verbose = 0;
void (*fatal_hook)(void) = NULL;

/* Symbolic errno names, so messages read "(ENOENT)" like the rest of the
   toolkit; glibc >= 2.32 has strerrorname_np(), older ones get the number. */
const char *errno_name(int errnum)
{
   static char buf[16];
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
   const char *n = strerrorname_np(errnum);
   if (n != NULL)
      return n;
#endif
   snprintf(buf, sizeof(buf), "errno %d", errnum);
   return buf;
}

/* The one error and message reporter of ch-run's C code (the core, the
   launcher, the memo): "ch-run[PID]: KIND" and the message, then, if
   ERRNUM, ": why (ERRNO)". */
/* "ch-run[PID]: KIND", the message, then, if ERRNUM, ": why (ERRNO)", into
   LINE (SIZE bytes): its whole length, as snprintf says it. */
static int format_line(char *line, size_t size, const char *kind, int errnum, const char *fmt, va_list ap)
{
   va_list aq;
   va_copy(aq, ap);
   int n = snprintf(line, size, "ch-run[%d]: %s", getpid(), kind);
   if (n < 0) n = 0;
   if ((size_t)n < size)
      n += vsnprintf(line + n, size - n, fmt, aq);
   va_end(aq);
   if (errnum != 0 && (size_t)n < size)
      n += snprintf(line + n, size - n, ": %s (%s)", strerror(errnum), errno_name(errnum));
   return n;
}

/* The one error and message reporter of ch-run's C code: the core, the
   launcher and the memo. */
static void vreport(const char *kind, int errnum, const char *fmt, va_list ap)
{
   /* Build the whole line first and write it once, so lines from concurrent
      ranks under srun don't interleave mid-line. A longer one (a replayed
      log line of the front end's may be) is built on the heap. */
   char small[8192], *line = small;
   int n = format_line(small, sizeof(small), kind, errnum, fmt, ap);
   if ((size_t)n >= sizeof(small) - 1 && (line = malloc(n + 2)) != NULL)
      n = format_line(line, n + 2, kind, errnum, fmt, ap);
   if (line == NULL) {
      line = small;   /* no memory: cut short */
      n = sizeof(small) - 2;
   }
   line[n++] = '\n';
   ssize_t w = write(STDERR_FILENO, line, n);
   (void)w;
   if (line != small)
      free(line);
}

void say(const char *fmt, ...)
{
   va_list ap;
   va_start(ap, fmt);
   vreport("", 0, fmt, ap);
   va_end(ap);
}

void say_error(const char *fmt, ...)
{
   va_list ap;
   va_start(ap, fmt);
   vreport("error: ", 0, fmt, ap);
   va_end(ap);
}

void fatal_(const char *file, int line, int errnum, const char *fmt, ...)
{
   va_list ap;
   va_start(ap, fmt);
   vreport("error: ", errnum, fmt, ap);
   va_end(ap);
   if (verbose >= 2) {
      char where[256];
      int n = snprintf(where, sizeof(where), "ch-run[%d]: (at %s:%d)\n", getpid(), file, line);
      ssize_t w = write(STDERR_FILENO, where, n);
      (void)w;
   }
   if (fatal_hook != NULL) {
      void (*h)(void) = fatal_hook;
      fatal_hook = NULL;   /* no recursion if the hook itself fails */
      h();
   }
   exit(EXIT_CHRUN);
}

void msg(int level, const char *fmt, ...)
{
   if (verbose < level)
      return;
   va_list ap;
   va_start(ap, fmt);
   vreport(level == 0 ? "warning: " : "", 0, fmt, ap);
   va_end(ap);
}

/* CH_RUN_NO_OPENAT2=1, CH_RUN_NO_MOUNT_SETATTR=1: behave as on a kernel
   without that syscall (openat2: Linux 5.6; mount_setattr: 5.12; RHEL 8's
   4.18 has neither), so that the fallbacks run, and are tested, on a new
   kernel too. */
bool switched_off(const char *var)
{
   const char *v = getenv(var);
   return v != NULL && strcmp(v, "1") == 0;
}

long long now_ms(void)
{
   struct timespec ts;
   clock_gettime(CLOCK_MONOTONIC, &ts);
   return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

char *xasprintf(const char *fmt, ...)
{
   char *s;
   va_list ap;
   va_start(ap, fmt);
   T_(vasprintf(&s, fmt, ap) >= 0, "can't format string");
   va_end(ap);
   return s;
}

void *xrealloc(void *p, size_t size)
{
   void *q = realloc(p, size);
   T_(q != NULL || size == 0, "can't allocate %zu bytes", size);
   return q;
}

/* PROG's path on $PATH, into BUF (SIZE bytes): the first absolute directory
   that has it as an executable regular file. Unlike execvp(3), an empty or
   relative entry counts for nothing: it means the current directory, which
   may be anyone's (a shared one), and a program planted there would run as
   the caller. The front end looks up squashfuse the same way
   (lib/container/squash.ts, onPath). false with errno ENOENT if none. */
bool path_find(const char *prog, char *buf, size_t size)
{
   const char *path = getenv("PATH");
   if (path == NULL)
      path = "/usr/bin:/bin";
   for (const char *dir = path; *dir != '\0';) {
      size_t n = strcspn(dir, ":");
      struct stat st;
      if (dir[0] == '/' && snprintf(buf, size, "%.*s/%s", (int)n, dir, prog) < (int)size
          && access(buf, X_OK) == 0 && stat(buf, &st) == 0 && S_ISREG(st.st_mode))
         return true;
      dir += n + (dir[n] == ':');
   }
   errno = ENOENT;
   return false;
}

/* Why this process holds privilege ch-run must not have, or NULL. ch-run is
   never a privilege boundary: besides setuid and setgid (refuse_privilege),
   file capabilities on it (setcap) or ambient ones from its caller would
   give the user's command, or our own set-up, power the caller doesn't
   have. AT_SECURE says the kernel raised our privilege at exec; any
   permitted or effective capability of a non-root caller is one too many.
   Root is root with or without us, and may run ch-run. */
static const char *privilege_held(void)
{
   if (getauxval(AT_SECURE) != 0)
      return "started in secure-execution mode (AT_SECURE: setuid, setgid or file capabilities)";
   struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
   struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
   if (syscall(SYS_capget, &h, d) != 0)
      return "can't read own capabilities (capget)";
   if (getuid() == 0)
      return NULL;
   for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
      if (d[i].permitted != 0 || d[i].effective != 0)
         return "holds capabilities (file capabilities on ch-run, or ambient ones from its caller)";
   return NULL;
}

/* ch-run must never be a privilege boundary: exit unless this process runs
   with exactly its caller's privilege: not setuid or setgid (by the file's
   mode or a privileged caller's exec), not in secure-execution mode, no
   capabilities (privilege_held). WHO names this executable in messages
   ("ch-run", "ch-run core"). Each executable checks itself once, at its
   entry: the launcher (also for the core it runs in its own process on a
   memoized plan), and ch-run-core's main(). */
void refuse_privilege(const char *who)
{
   struct stat st;
   if (getuid() != geteuid() || getgid() != getegid()
       || (stat("/proc/self/exe", &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID))))
      FATAL_NOERR("%s is installed setuid or setgid; refusing to run (it needs no privileges: chmod ug-s it)", who);
   const char *why = privilege_held();
   if (why != NULL)
      FATAL_NOERR("%s %s; refusing to run (it needs no privilege: setcap -r it, or start it without capabilities)",
                  who, why);
}
