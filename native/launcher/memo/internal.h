/* Memoized plans: what the files of native/launcher/memo/ share. memo.h is what the
   launcher calls; each file here is one concern:
     memo.c     a hit (memo_hit, with the lock) and keeping a record (memo_store)
     store.c    the plan directory, the key, entries and their slots, eviction, the lock
     record.c   reading a record
     deps.c     checking a record's dependencies
     rebuild.c  a hit's environment, plan and log lines, rebuilt from its record
     later.c    keeping a record the front end writes after handing over its plan
     verify.c   the test suite's modes (CH_RUN_MEMO_VERIFY=1, =replay)
     buf.c      buffers, tokens written, whole fd reads and writes, the hash */

#ifndef CH_MEMO_INTERNAL_H
#define CH_MEMO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../core/core.h"
#include "memo.h"

#define ENTRY_MAX (16 << 20)   /* far above any plan; a bigger record isn't kept */

/* Records per key: the same command line in a few environments (a module
   loaded or not; fake nodes sharing one /dev/shm), each checked in turn.
   Slot 0 is KEY, slot I is KEY.I. */
#define SLOTS 4

/** buf.c **/
struct buf { char *p; size_t len, cap; bool failed; };   /* grows; FAILED: out of memory */
void put(struct buf *b, const void *s, size_t n);
void tok(struct buf *b, const char *s);                  /* S and its NUL */
void tokf(struct buf *b, const char *fmt, long long v);
#define FNV_INIT FNV_OFFSET   /* protocol.json's */
uint64_t fnv64(uint64_t h, const void *data, size_t n);  /* FNV-1a, 64 bits, from H */
void why(struct memo *m, const char *fmt, const char *arg);   /* why there is no hit */
int cmp_str(const void *a, const void *b);               /* qsort: char * by strcmp */
bool write_all(int fd, const struct buf *b);
int memfd_of(const struct buf *b);                       /* a memfd holding B (not close-on-exec) */
char *read_fd(int fd, size_t *len);                      /* all of FD, from offset 0 */

/** record.c **/
struct record {
   const char *edits_from;   /* first token after the dependencies */
   struct tokens body;       /* the whole record */
   const char *plan;         /* PLAN_MAGIC ... PLAN_END */
   size_t plan_len;
   int verbose;
   const char *nostore;      /* why it must not be kept, or NULL */
   const char *join_ph;      /* --join's tag in the plan is this placeholder... */
   const char *join_tmpl;    /* ...for this template, ${NAME} from the environment */
   bool incomplete;
   char **tail;              /* the command's arguments, appended to the plan's (RECORD_ARGSLOT), or NULL */
   int tail_n;
};
bool record_read(struct memo *m, const char *p, size_t len, struct record *r, bool check);

/** deps.c **/
bool dep_holds(const char *kw, struct tokens *c, bool *known, const char **what);

/** rebuild.c **/
char **edited_env(const struct record *r);
bool build_plan(const struct record *r, char **env, struct buf *out);
void replay_log(const struct record *r);

/** store.c **/
void slot_name(const struct memo *m, int i, char *out, size_t n);
char *entry_read(struct memo *m, const char *name, size_t *len, const char **whynot);
const char *entry_record(struct memo *m, const char *p, size_t len, size_t *rlen);
void entry_write(struct memo *m, const char *rec, size_t len);
long long newest_slot(struct memo *m);
bool lock_take(int fd, bool wait);

/** memo.c **/
int try_hit(struct memo *m);

/** verify.c **/
int verify(struct memo *m, const struct record *r, const char *rec, size_t len, int planfd);
int replay_check(struct memo *m);

#endif
