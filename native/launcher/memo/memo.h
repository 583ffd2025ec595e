/* Memoized plans, the launcher's half: find, check and replay a plan the
   front end recorded earlier (lib/run/memo.ts), or keep the one it just made.
   See native/launcher/memo/ (internal.h lists its files). */

#ifndef CH_MEMO_H
#define CH_MEMO_H

#include <stdbool.h>
#include <stddef.h>

struct memo {
   bool enabled;
   bool verify;          /* CH_RUN_MEMO_VERIFY=1: every launch runs from its record (tests) */
   bool replay;          /* CH_RUN_MEMO_VERIFY=replay: and a second launch hits, compared (tests) */
   int check_fd;         /* that second launch: report what its command would see here */
   bool stored;          /* this launch's record was kept: in slot STORED_SLOT, inode STORED_INO */
   char stored_slot[32];
   unsigned long long stored_ino;
   bool quiet;           /* a hit says nothing (replay mode's own check) */
   int verbose;          /* the planned launch's -v count (its record says) */
   int argc;             /* the launcher's own, for the second launch */
   char **argv;
   int dirfd;            /* the user's own plan directory */
   char name[17];        /* this launch's entry: a hash of its key */
   char *key;            /* uid, gid, cwd and argv, as tokens (the command's arguments left out: TAIL) */
   size_t key_len;
   char **tail;          /* the command's arguments, after a "--" and its name, which the key leaves out; */
   int tail_n;           /* NULL where there is no "--" before a command name (the key is the whole argv) */
   int lockfd;           /* held while we plan, so peers wait for our record */
   bool record_first;    /* the last record that was to come after its plan was lost (later.c) */
   char why[512];        /* why there is no hit, for the front end's -v */
};

/* Decide whether memoized plans are used for this launch, and its key. */
void memo_init(struct memo *m, const char *launcher, int argc, char **argv);

/* A memfd holding the plan for this launch, from a record whose every
   dependency still holds, its log lines replayed; or -1, with M->why. */
int memo_hit(struct memo *m);

/* Keep the user's plan directory bounded and free of leftovers (records
   over the bound, the least recently used first; writers' temporaries and
   orphan locks a minute old). Run on a miss by the storer, once the front
   end has handed over its plan, so it costs the launch nothing. */
void memo_tidy(struct memo *m);

/* The front end planned: keep its record (MEMOFD) if it may be kept. Under
   CH_RUN_MEMO_VERIFY, return a memfd of the plan as a hit would build it,
   having checked it equals PLANFD's; else PLANFD. Failures to keep a record
   are not errors (the launch goes on); a verify mismatch is. Under
   CH_RUN_MEMO_VERIFY a record that doesn't hold right after planning
   (an input changed meanwhile, or a recorder bug) returns -1: plan again,
   until this was the MEMO_VERIFY_TRIES-th plan (TRIES counts them), then
   it is an error. */
#define MEMO_VERIFY_TRIES 3
int memo_store(struct memo *m, int memofd, int planfd, int tries);

/* The storer (later.c), in a process of its own that is never ch-run's
   child (the front end's waiter forks it): waits on REC, its pipe's read
   end, for LAUNCHER_DONE_BYTE (the front end's record is whole in MEMOFD)
   and keeps the record as memo_store does, holding the key's lock
   meanwhile; on EOF it lets the lock go. Then tidies the plan directory.
   Never returns. */
_Noreturn void memo_storer(struct memo *m, int memofd, int rec);

/* Mark the key's lock file before letting the front end record after its
   plan (later.c): whether it could. */
bool memo_mark_later(struct memo *m);

/* CH_RUN_MEMO_VERIFY=replay (tests): once this launch's record is kept,
   launch ch-run again, the same command line in the same environment, as a
   separate process that must hit that record (it never starts Node); it
   and a child carrying out PLANFD each build the container up to the
   command's exec and report what the command would see (cwd, ids,
   arguments, environment, mounts: the core's probe). They must agree: a
   difference, or no hit, is an error (exit EXIT_CHRUN). Returns PLANFD, which this
   launch then runs. NONBLOCK as for the core. */
int memo_replay(struct memo *m, int planfd, int nonblock);

/* Close what memo_init and memo_hit opened (before the core runs in this process). */
void memo_close(struct memo *m);

#endif
