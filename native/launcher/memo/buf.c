/* Memoized plans: small buffers, tokens written, whole reads and writes of
   an fd, and the hash that names a key and checks an entry. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void put(struct buf *b, const void *s, size_t n)
{
   if (b->failed)
      return;
   if (b->len + n > b->cap) {
      size_t cap = b->cap ? b->cap : 4096;
      while (cap < b->len + n)
         cap *= 2;
      char *p = realloc(b->p, cap);
      if (p == NULL) { b->failed = true; return; }
      b->p = p; b->cap = cap;
   }
   memcpy(b->p + b->len, s, n);
   b->len += n;
}

void tok(struct buf *b, const char *s) { put(b, s, strlen(s) + 1); }

void tokf(struct buf *b, const char *fmt, long long v)
{
   char s[32];
   snprintf(s, sizeof(s), fmt, v);
   tok(b, s);
}

uint64_t fnv64(uint64_t h, const void *data, size_t n)
{
   const unsigned char *p = data;
   for (size_t i = 0; i < n; i++)
      h = (h ^ p[i]) * FNV_PRIME;
   return h;
}

void why(struct memo *m, const char *fmt, const char *arg)
{
   snprintf(m->why, sizeof(m->why), fmt, arg);
}

int cmp_str(const void *a, const void *b)
{
   return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Write all of B to FD. */
bool write_all(int fd, const struct buf *b)
{
   for (size_t off = 0; off < b->len;) {
      ssize_t w = write(fd, b->p + off, b->len - off);
      if (w < 0 && errno == EINTR)
         continue;
      if (w <= 0)
         return false;
      off += w;
   }
   return true;
}

int memfd_of(const struct buf *b)
{
   int fd = memfd_create("ch-run-plan", 0);   /* the core reads it: not close-on-exec */
   if (fd >= 0 && !write_all(fd, b)) {
      close(fd);
      return -1;
   }
   return fd;
}

char *read_fd(int fd, size_t *len)
{
   struct stat st;
   if (fstat(fd, &st) != 0 || st.st_size > ENTRY_MAX)
      return NULL;
   char *p = malloc(st.st_size + 1);
   if (p == NULL)
      return NULL;
   ssize_t n = pread(fd, p, st.st_size, 0);
   if (n != st.st_size) {
      free(p);
      return NULL;
   }
   *len = n;
   return p;
}
