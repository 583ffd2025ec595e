/* Read the plan that the TypeScript front end wrote to an inherited fd.

   Format: a sequence of NUL-terminated tokens. The first is the magic
   PLAN_MAGIC; then records, each a keyword followed by a fixed number of
   tokens, up to PLAN_END. The words are protocol.json's (core.h). Nothing here is policy: values are taken as given, and
   only their form is checked. Unknown keywords are an error, so a front end
   and core from different builds fail loudly rather than half-apply a plan. */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

#define PLAN_MAX   (64 << 20)

/* The one reader of NUL-terminated tokens (the memo reads its records with
   it too, native/launcher/memo/): the token at C, C moved past it; NULL if no whole
   token is there. */
const char *tokens_next(struct tokens *c)
{
   if (c->p >= c->end)
      return NULL;
   const char *tok = c->p, *nul = memchr(c->p, '\0', c->end - c->p);
   if (nul == NULL)
      return NULL;
   c->p = nul + 1;
   return tok;
}

static char *next(struct tokens *c, const char *what)
{
   if (c->p >= c->end)
      FATAL_NOERR("plan: truncated before %s", what);
   const char *tok = tokens_next(c);
   if (tok == NULL)
      FATAL_NOERR("plan: unterminated token in %s", what);
   return (char *)tok;   /* our own buffer, writable: hex content is decoded in place */
}

static long long number(struct tokens *c, const char *what, long long min, long long max)
{
   char *tok = next(c, what), *e;
   errno = 0;
   long long v = strtoll(tok, &e, 10);
   if (errno != 0 || *tok == '\0' || *e != '\0' || v < min || v > max)
      FATAL_NOERR("plan: bad number for %s: '%s'", what, tok);
   return v;
}

static unsigned mount_flags(const char *s)
{
   static const struct { const char *name; unsigned flag; } names[] = {
      {MOUNT_FLAGS_REC, MF_REC}, {MOUNT_FLAGS_RO, MF_RO}, {MOUNT_FLAGS_NOSUID, MF_NOSUID},
      {MOUNT_FLAGS_NODEV, MF_NODEV}, {MOUNT_FLAGS_NOEXEC, MF_NOEXEC}, {MOUNT_FLAGS_OPTIONAL, MF_OPTIONAL},
      {MOUNT_FLAGS_SRCOPT, MF_SRCOPT}, {MOUNT_FLAGS_HEX, MF_HEX},
   };
   unsigned flags = 0;
   char *copy = strdup(s), *save = NULL;
   T_(copy != NULL, "strdup");
   for (char *w = strtok_r(copy, PLAN_FLAG_SEP, &save); w != NULL; w = strtok_r(NULL, PLAN_FLAG_SEP, &save)) {
      size_t i;
      for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
         if (strcmp(w, names[i].name) == 0)
            break;
      if (i == sizeof(names) / sizeof(names[0]))
         FATAL_NOERR("plan: unknown mount flag '%s'", w);
      flags |= names[i].flag;
   }
   free(copy);
   return flags;
}

static int hexval(char c)
{
   return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static char **push(char **v, size_t *n, char *s)
{
   v = xrealloc(v, (*n + 2) * sizeof(char *));
   v[(*n)++] = s;
   v[*n] = NULL;
   return v;
}

/* All of FD (closed), into a buffer of its own: *LEN bytes. */
static char *read_all(int fd, size_t *len_out)
{
   size_t cap = 1 << 16, len = 0;
   char *buf = xrealloc(NULL, cap);
   for (;;) {
      if (len == cap) {
         if (cap >= PLAN_MAX)
            FATAL_NOERR("plan: larger than %d bytes", PLAN_MAX);
         cap *= 2;
         buf = xrealloc(buf, cap);
      }
      ssize_t r = read(fd, buf + len, cap - len);
      if (r < 0 && errno == EINTR)
         continue;
      T_(r >= 0, "plan: can't read fd %d", fd);
      if (r == 0)
         break;
      len += r;
   }
   Z_(close(fd), "plan: can't close fd %d", fd);
   *len_out = len;
   return buf;
}

/* A mount record, its keyword read: kind, flags, source, destination. */
static void read_mount(struct tokens *c, struct plan *p)
{
   struct mount_op m;
   char *kind = next(c, "mount kind");
   if (!strcmp(kind, MOUNT_KINDS_BIND)) m.kind = MK_BIND;
   else if (!strcmp(kind, MOUNT_KINDS_TMPFS)) m.kind = MK_TMPFS;
   else if (!strcmp(kind, MOUNT_KINDS_FILE)) m.kind = MK_FILE;
   else if (!strcmp(kind, MOUNT_KINDS_MKDIR)) m.kind = MK_MKDIR;
   else if (!strcmp(kind, MOUNT_KINDS_MKFILE)) m.kind = MK_MKFILE;
   else if (!strcmp(kind, MOUNT_KINDS_SYMLINK)) m.kind = MK_SYMLINK;
   else FATAL_NOERR("plan: unknown mount kind '%s'", kind);
   m.flags = mount_flags(next(c, "mount flags"));
   m.src = next(c, "mount source");
   m.src_len = strlen(m.src);
   m.dst = next(c, "mount destination");
   if (m.dst[0] != '/')
      FATAL_NOERR("plan: mount destination not absolute: %s", m.dst);
   if (m.flags & MF_HEX) {   /* binary file content: decode in place */
      if (m.kind != MK_FILE || m.src_len % 2 != 0)
         FATAL_NOERR("plan: bad hex content for %s", m.dst);
      for (size_t i = 0; i < m.src_len / 2; i++) {
         int hi = hexval(m.src[2 * i]), lo = hexval(m.src[2 * i + 1]);
         if (hi < 0 || lo < 0)
            FATAL_NOERR("plan: bad hex content for %s", m.dst);
         m.src[i] = (char)(hi << 4 | lo);
      }
      m.src_len /= 2;
   }
   p->mounts = xrealloc(p->mounts, (p->mount_ct + 1) * sizeof(m));
   p->mounts[p->mount_ct++] = m;
}

void plan_read(int fd, struct plan *p)
{
   size_t len;
   char *buf = read_all(fd, &len);
   memset(p, 0, sizeof(*p));
   p->uid = getuid(); p->gid = getgid();
   p->cwd = "/";
   p->stage_dir = "/dev";
   p->join_timeout_ms = 30000;
   p->env = push(NULL, &p->env_ct, NULL);  p->env_ct = 0;
   p->argv = push(NULL, &p->argc, NULL);   p->argc = 0;

   struct tokens c = { buf, buf + len };
   if (strcmp(next(&c, "magic"), PLAN_MAGIC) != 0)
      FATAL_NOERR("plan: bad magic (front end and core from different builds?)");
   for (;;) {
      char *kw = next(&c, "keyword");
      if (!strcmp(kw, PLAN_END)) break;
      else if (!strcmp(kw, PLAN_VERBOSE)) verbose = p->verbose = number(&c, kw, -8, 8);
      else if (!strcmp(kw, PLAN_ROOT)) p->root = next(&c, kw);
      else if (!strcmp(kw, PLAN_WRITE)) p->writable = number(&c, kw, 0, 1);
      else if (!strcmp(kw, PLAN_SECCOMP)) p->seccomp = number(&c, kw, 0, 1);
      else if (!strcmp(kw, PLAN_JOIN_PID)) p->join_pid = number(&c, kw, 1, INT_MAX);
      else if (!strcmp(kw, PLAN_EXEC_HINT)) p->exec_hint = next(&c, kw);
      else if (!strcmp(kw, PLAN_UID)) p->uid = number(&c, kw, 0, UINT_MAX - 1);
      else if (!strcmp(kw, PLAN_GID)) p->gid = number(&c, kw, 0, UINT_MAX - 1);
      else if (!strcmp(kw, PLAN_CWD)) { p->cwd = next(&c, kw); p->cwd_fallback = false; }
      else if (!strcmp(kw, PLAN_CWD_TRY)) { p->cwd = next(&c, kw); p->cwd_fallback = true; }
      else if (!strcmp(kw, PLAN_STAGE_DIR)) p->stage_dir = next(&c, kw);
      else if (!strcmp(kw, PLAN_SQUASH)) {
         p->squash_image = next(&c, "squash image");
         p->squashfuse = next(&c, "squashfuse path");
         p->squash_timeout_ms = number(&c, "squash timeout", 1, INT_MAX);
         p->squash_linger_ms = number(&c, "squash linger", 0, INT_MAX);
         p->squash_threads = number(&c, "squash threads", 0, 1024);
      } else if (!strcmp(kw, PLAN_WRITE_FAKE)) {
         p->write_fake = true;
         p->write_fake_size = next(&c, "write-fake size");
      }
      else if (!strcmp(kw, PLAN_JOIN)) {
         p->join = true;
         p->join_tag = next(&c, "join tag");
         p->join_ct = number(&c, "join count", 1, 1 << 20);
         p->join_timeout_ms = number(&c, "join timeout", 1, INT_MAX);
      } else if (!strcmp(kw, PLAN_MOUNT)) {
         read_mount(&c, p);
      } else if (!strcmp(kw, PLAN_ENV)) {
         char *e = next(&c, kw);
         if (strchr(e, '=') == NULL || e[0] == '=')
            FATAL_NOERR("plan: bad environment entry: %s", e);
         p->env = push(p->env, &p->env_ct, e);
      } else if (!strcmp(kw, PLAN_ARG)) p->argv = push(p->argv, &p->argc, next(&c, kw));
      else FATAL_NOERR("plan: unknown keyword '%s'", kw);
   }
   if (p->root == NULL)
      FATAL_NOERR("plan: no image root");
   if (p->argc == 0)
      FATAL_NOERR("plan: no command");
}
