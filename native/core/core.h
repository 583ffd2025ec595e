/* ch-run's single-threaded C core: shared declarations.

   The TypeScript front end decides everything (what to mount, which
   environment, which command); this core receives that decision as a plan and
   carries it out with checked syscalls. It must stay single-threaded:
   unshare(CLONE_NEWUSER) fails with EINVAL in a multithreaded process, which
   is why it is not part of the Node addon. */

#ifndef CH_CORE_H
#define CH_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The protocol with the front end (protocol.json, made into build/gen/
   protocol.h): the plan's form, and the exit statuses, as Charliecloud
   0.2x: EXIT_CHRUN our own failure, EXIT_CMD a command that could not be
   executed. Otherwise the command's own status is ch-run's. */
#include "protocol.h"

/** Logging **/

extern int verbose;   /* 0 normal, 1 -v, 2 -vv, ...; -1 quiet */

void fatal_(const char *file, int line, int errnum, const char *fmt, ...)
   __attribute__((noreturn, format(printf, 4, 5)));
void msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));         /* whatever -v says */
void say_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));   /* without exiting */

/* FATAL: report "what: why (ERRNO)" and exit EXIT_CHRUN. Uses errno. */
#define FATAL(...)      fatal_(__FILE__, __LINE__, errno, __VA_ARGS__)
/* FATAL_NOERR: a failure that is not a syscall's. */
#define FATAL_NOERR(...) fatal_(__FILE__, __LINE__, 0, __VA_ARGS__)
/* Z_: the syscall-ish expression must return 0. T_: must be true/non-negative. */
#define Z_(x, ...) do { if ((x) != 0) FATAL(__VA_ARGS__); } while (0)
#define T_(x, ...) do { if (!(x)) FATAL(__VA_ARGS__); } while (0)
#define INFO(...)  msg(1, __VA_ARGS__)
#define DEBUG(...) msg(2, __VA_ARGS__)
#define WARN(...)  msg(0, __VA_ARGS__)

/* The memo's replay mode (native/launcher/memo/, CH_RUN_MEMO_VERIFY=replay) sets
   this in a child of the launcher: instead of exec'ing the command, the core
   writes there what the command would see, and exits. -1: run it. */
extern int core_probe_fd;

/* Called by fatal_() before exiting, so a join winner can tell its peers. */
extern void (*fatal_hook)(void);

const char *errno_name(int errnum);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *xrealloc(void *p, size_t size);
long long now_ms(void);   /* CLOCK_MONOTONIC, in ms: for deadlines */
/* CH_RUN_NO_OPENAT2=1 and the like: behave as on a kernel without that
   syscall, so that the fallbacks run, and are tested, on a new kernel too. */
bool switched_off(const char *var);
bool path_find(const char *prog, char *buf, size_t size);   /* absolute $PATH entries only */
void refuse_privilege(const char *who);   /* exit if run with more privilege than the caller's */

/** The plan **/

enum mount_kind { MK_BIND, MK_TMPFS, MK_FILE, MK_MKDIR, MK_MKFILE, MK_SYMLINK };

/* Flags of a mount operation. */
#define MF_REC      0x01  /* recursive bind */
#define MF_RO       0x02  /* really read-only: separate remount, locked flags kept */
#define MF_NOSUID   0x04
#define MF_NODEV    0x08
#define MF_NOEXEC   0x10
#define MF_OPTIONAL 0x20  /* skip quietly if the destination is not in the image */
#define MF_SRCOPT   0x40  /* skip quietly if the source is not on the host */
#define MF_HEX      0x80  /* file: content is hex-encoded (binary, may hold NUL) */

struct mount_op {
   enum mount_kind kind;
   unsigned flags;
   char *src;      /* host path; tmpfs options; file content; mkdir/mkfile mode (octal);
                      symlink target */
   size_t src_len; /* length of src (file content may hold any byte but NUL) */
   char *dst;      /* path inside the image */
};

struct plan {
   int verbose;
   char *root;                 /* host path of the image directory */
   bool writable;
   bool seccomp;               /* --seccomp: root emulation filter before exec */
   pid_t join_pid;             /* --join-pid: enter this process's namespaces; 0: none */
   char *exec_hint;            /* said after "command not found"; NULL: none */
   uid_t uid;  gid_t gid;      /* inside the container */
   char *cwd;                  /* inside */
   bool cwd_fallback;          /* cwd is only a wish (the host's): else "/" */
   char *stage_dir;            /* dir in the image to stage generated files over */
   bool join;
   char *join_tag;
   int join_ct;
   int join_timeout_ms;
   char *squash_image;         /* a SquashFS image to mount at root, or NULL */
   char *squashfuse;           /* the squashfuse program (host path) */
   int squash_timeout_ms;      /* how long it may take to serve the mount */
   int squash_linger_ms;       /* a shared mount's life after its last user; 0: a private mount */
   int squash_threads;         /* squashfuse's: 0 auto (-s on <= 2 CPUs), 1 -s, N max_threads=N */
   bool write_fake;            /* -W: tmpfs overlay over the image root */
   char *write_fake_size;      /* its size= ("" for the kernel's default) */
   struct mount_op *mounts; size_t mount_ct;
   char **env;  size_t env_ct;   /* NULL-terminated */
   char **argv; size_t argc;     /* NULL-terminated */
};

void plan_read(int fd, struct plan *p);
/* Reading NUL-terminated tokens (the plan's form; the memo's records too). */
struct tokens { const char *p, *end; };
const char *tokens_next(struct tokens *c);   /* the next whole token, or NULL */
/* ch-run-core FD PID NONBLOCK, as a call (main.c). Never returns. */
_Noreturn void core_main(int argc, char **argv);

/** User namespaces **/
void userns_enter(uid_t uid_in, uid_t uid_out, gid_t gid_in, gid_t gid_out);

/** Finding things by path (lookup.c) **/
int  open_in_root(int rootfd, const char *path);  /* O_PATH fd or -1 with errno */
struct mnt { int id, parent; char *point; bool in_tree; };
struct mnt *mounts_read(size_t *ct);              /* our namespace's mounts, from mountinfo */
int  mount_id(int fd);                            /* the ID of the mount FD is on */
int *mount_ids(size_t *ct);                       /* IDs of our namespace's mounts, now */
int  open_new_mount(const char *path, const int *before, size_t ct, long magic);

/** Mounts **/
int  root_setup(const struct plan *p, int mounted);   /* returns fd of the bound root; MOUNTED: a
                                                        mount's root fd to use as it is, or -1 */
void mounts_apply(const struct plan *p, int rootfd);
void root_pivot(int rootfd);

/** --seccomp **/
void seccomp_install(void);
/** SquashFS images (squash.c) and -W overlays (overlay.c) **/
#define FUSE_SUPER_MAGIC 0x65735546
int  squash_mount(const struct plan *p);           /* mounts squash_image at root; its root fd */
/* A shared SquashFS mount (holder.c): the mount point, opened and checked
   once; start a holder serving listening socket LFD for image IMGFD; */
int  squash_mount_point(const struct plan *p);
void squash_holder_start(const struct plan *p, int lfd, int imgfd);
struct watch;
_Noreturn void holder_serve(const struct plan *p, const struct watch *core, pid_t fuse, int errr, int lfd,
                            int imgfd, int mpfd, const int *before, size_t ct);
/* in the core: find the holder of this image, or start one, and register
   with it (false: every name taken by others; mount privately instead);
   enter its namespaces and a mount namespace of our own (the mount's root
   fd); or, a --join peer, let go of it. */
bool squash_attach(const struct plan *p);
int  squash_enter(const struct plan *p);
void squash_detach(void);
int  overlay_setup(const struct plan *p, int lowerfd);   /* returns the overlay's root fd */

/** --join **/
enum join_role { JOIN_WINNER, JOIN_PEER };
enum join_role join_begin(const struct plan *p);
void join_winner_ready(const struct plan *p);
void join_peer_enter(const struct plan *p);

#endif
