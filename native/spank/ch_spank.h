/* The SPANK plugin's pieces: ch_spank.c (callbacks), options.c (the user's
   options, the site's plugstack.conf arguments), container.c (staging, the
   holder, joining). */

#ifndef CH_SPANK_H
#define CH_SPANK_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>
#include <slurm/spank.h>

/* Built with -fvisibility=hidden: srun and slurmstepd have globals of their
   own (srun's `opt`) that a plugin's symbols must not meet. Only what Slurm
   looks up is exported. */
#define EXPORT __attribute__((visibility("default")))

/* The user's options, as given (strings owned by us). */
struct opts {
   char *image, *mounts, *workdir, *env, *set_env, *gpu, *device;
   bool writable, gpu_set, verbose;
};

/* plugstack.conf: required /PATH/ch_spank.so [root=DIR] [cache=DIR] [cache_size=SIZE] [timeout=S] */
struct site {
   char *root;          /* the package (default: from the plugin's own path) */
   char *cache;         /* CH_SPANK_CACHE default; %n: node name, %u: user name */
   char *cache_size;    /* CH_SPANK_CACHE_SIZE default */
   int timeout_s;       /* bound on staging + starting the container (default 600) */
};

enum { ST_NONE = 0, ST_READY = 1, ST_FAILED = 2 };

/* Anonymous shared memory made in user_init, inherited by every task of the
   step on the node. ENV holds ch-run's edits of the first task's environment:
   "+NAME=VALUE" or "-NAME", each NUL-terminated, ENV_LEN bytes in all. */
#define SHARED_SIZE (16UL << 20)
struct shared {
   pthread_mutex_t lock;
   int state;
   pid_t holder;
   unsigned long long holder_start;   /* /proc/PID/stat starttime */
   char cwd[PATH_MAX];
   size_t env_len;
   char env[];
};

extern struct opts opt;
extern struct site site;

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *package_root(void);
int options_register(spank_t sp);
int site_args(int ac, char **av);
int container_once(spank_t sp, struct shared *sh, int release_r, int edits_fd);
int container_join(spank_t sp, struct shared *sh, int release_w, int edits_fd);
int command_restore(spank_t sp);
void holder_kill(struct shared *sh, uid_t uid, gid_t gid);
unsigned long long start_time(pid_t pid);

#endif
