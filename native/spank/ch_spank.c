/* ch_spank.so: Slurm-native containers, `srun --ch-image=IMAGE prog`, on
   ch-run's own core. One container per node per step; every task of the
   step on the node joins it before slurmstepd execs the task's program.

   Which SPANK callbacks, in which process, as whom, and why:

   - slurm_spank_init (srun, sbatch, salloc, slurmstepd): registers the
     options. Locally (srun/sbatch/salloc) the option callbacks check the
     values' form, so a bad --ch-mounts fails at once, naming the option;
     slurm_spank_init_post_opt refuses an option without --ch-image.
   - slurm_spank_local_user_init (srun): puts a guard in the command's
     argv[0], so a node without the plugin fails the task, naming the option,
     instead of running the program on the host.
   - slurm_spank_user_init (slurmstepd, once per node and step, before the
     tasks are forked; root, with the job's uid as effective uid): touches no
     file at all. It only makes the anonymous shared memory, the release
     pipe and the memfd that the step's tasks share.
   - slurm_spank_task_post_fork (slurmstepd, root): after the last task is
     forked, slurmstepd's own copies of the pipe and memfd are closed.
   - slurm_spank_task_init (each task's process, after slurmstepd has made it
     the job's user for good: setgroups/setgid/setuid done, no capabilities,
     single-threaded): puts the command back; the first task to take the
     shared lock stages the image and starts the container (ch-run, as the
     user, with the task's own environment: PMIx's variables are set by
     then); every task then has its argv[0] replaced by ch-spank-join
     (joiner.c), which slurmstepd execs after the TaskProlog: it enters the
     container's namespaces, takes its environment and execs the program.
     Doing the work in the task, not in user_init, means no root process
     ever runs our tools or opens a user's path, and nothing needs dropping
     privileges: the kernel checks everything as the user.
   - slurm_spank_task_exit (slurmstepd, root): after the last task on the
     node ended, ends the holder if it is still there (a SquashFS image's,
     which keeps the shared mount in use; or a task died before joining), from a child
     that has fully become the job's user; slurm_spank_exit again, last.

   Errors in task_init fail the task (slurmstepd: exit 1), so the step fails
   as srun would for a missing program; ch-run's and the stager's messages,
   which name --ch-image and the input, go to the task's stderr: the job's. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "ch_spank.h"

/* SPANK_PLUGIN's symbols, exported (the macro doesn't say so). */
EXPORT const char plugin_name[] = "ch_toolkit";
EXPORT const char plugin_type[] = "spank";
EXPORT const unsigned int plugin_version = SLURM_VERSION_NUMBER;
EXPORT const unsigned int spank_plugin_version = 1;

struct opts opt;            /* the user's options (options.c) */
struct site site;           /* plugstack.conf arguments */
static struct shared *sh;   /* shared by the step's tasks on this node */
static int release_w = -1, release_r = -1;
static int edits_fd = -1;   /* the container's environment edits, for ch-spank-join (memfd) */
static unsigned forked = 0, exited = 0;

/* "ch-spank: error: ..." on the task's stderr (the job's), and in slurmd's log. */
void say(const char *fmt, ...)
{
   char msg[2048];
   va_list ap;
   va_start(ap, fmt);
   vsnprintf(msg, sizeof(msg), fmt, ap);
   va_end(ap);
   if (spank_context() == S_CTX_REMOTE) {
      dprintf(STDERR_FILENO, "ch-spank[%d]: error: %s\n", (int)getpid(), msg);
      slurm_info("ch-spank: %s", msg);
   } else {
      slurm_error("ch-spank: %s", msg);
   }
}

EXPORT int slurm_spank_init(spank_t sp, int ac, char **av)
{
   if (spank_context() == S_CTX_SLURMD || spank_context() == S_CTX_JOB_SCRIPT)
      return 0;
   if (site_args(ac, av) != 0)
      return -1;
   return options_register(sp);
}

/* Only real steps: not the batch script, not the extern or interactive step. */
static bool real_step(spank_t sp)
{
   uint32_t step;
   if (spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS)
      return false;
   return step != SLURM_BATCH_SCRIPT && step != SLURM_EXTERN_CONT && step != SLURM_INTERACTIVE_STEP;
}

/* srun, before the step is launched: the command the nodes get becomes a
   name that can't run, which the plugin on the node turns back (task_init,
   from CH_SPANK_CMD). A node without the plugin ignores --ch-image silently
   (Slurm skips options of plugins it hasn't loaded) and would run the
   program on the host; instead its task fails, and slurmstepd's message
   names the option and the image: "execve(): ch-spank: --ch-image=IMG
   needs the ch-toolkit SPANK plugin on this node (...)". srun's argv array
   is what it sends (srun_opt->argv); only its first element is replaced. */
EXPORT int slurm_spank_local_user_init(spank_t sp, int ac, char **av)
{
   (void)ac; (void)av;
   int argc = 0;
   char **argv = NULL, *guard = NULL;
   if (opt.image == NULL)
      return 0;
   if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 || argv[0] == NULL) {
      say("--ch-image=%s: can't read the step's command line", opt.image);
      return -1;
   }
   if (asprintf(&guard, "ch-spank: --ch-image=%s needs the ch-toolkit SPANK plugin on this node "
                "(plugstack.conf)", opt.image) < 0 || setenv("CH_SPANK_CMD", argv[0], 1) != 0) {   /* srun merges its environment into the job's after this */
      say("--ch-image=%s: out of memory", opt.image);
      return -1;
   }
   argv[0] = guard;
   return 0;
}

EXPORT int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
   (void)ac; (void)av;
   if (opt.image == NULL || !real_step(sp))
      return 0;
   sh = mmap(NULL, SHARED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
   if (sh == MAP_FAILED) {
      sh = NULL;
      slurm_error("ch-spank: can't map shared memory: %s", strerror(errno));
      return 0;   /* reported by each task_init: user_init errors don't reach srun */
   }
   pthread_mutexattr_t a;
   pthread_mutexattr_init(&a);
   pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
   pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
   pthread_mutex_init(&sh->lock, &a);
   pthread_mutexattr_destroy(&a);
   int p[2];
   if (pipe2(p, O_CLOEXEC) != 0) {
      slurm_error("ch-spank: can't make release pipe: %s", strerror(errno));
      munmap(sh, SHARED_SIZE);
      sh = NULL;
      return 0;
   }
   release_r = p[0];
   release_w = p[1];
   edits_fd = memfd_create("ch-spank-env", MFD_CLOEXEC);
   if (edits_fd < 0)
      slurm_error("ch-spank: can't make memfd: %s", strerror(errno));
   return 0;
}

EXPORT int slurm_spank_task_post_fork(spank_t sp, int ac, char **av)
{
   (void)ac; (void)av;
   uint32_t n = 0;
   if (sh == NULL || spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &n) != ESPANK_SUCCESS)
      return 0;
   /* Every task holds its copy now: slurmstepd's must not keep the holder waiting. */
   if (++forked == n) {
      close(release_w);
      close(release_r);
      close(edits_fd);
      release_w = release_r = edits_fd = -1;
   }
   return 0;
}

EXPORT int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
   (void)ac; (void)av;
   if (opt.image == NULL || !real_step(sp))
      return 0;
   if (sh == NULL || edits_fd < 0) {
      say("--ch-image=%s: the plugin couldn't set up the step on this node (see slurmd's log)", opt.image);
      return -1;
   }
   int rc = command_restore(sp);
   if (rc == 0)
      rc = container_once(sp, sh, release_r, edits_fd);
   close(release_r);   /* the holder has its own copy */
   if (rc == 0)
      rc = container_join(sp, sh, release_w, edits_fd);
   if (rc != 0)
      close(release_w);   /* the holder need not wait for us */
   return rc;
}

static void end_holder(spank_t sp)
{
   uid_t uid;
   gid_t gid;
   if (spank_get_item(sp, S_JOB_UID, &uid) == ESPANK_SUCCESS && spank_get_item(sp, S_JOB_GID, &gid) == ESPANK_SUCCESS)
      holder_kill(sh, uid, gid);
}

/* In slurmstepd (root), as each task ends: after the last, the holder goes
   (it stays for a SquashFS image, whose shared mount lingers from then on; and
   slurmstepd waits for every process of the step before the step ends). */
EXPORT int slurm_spank_task_exit(spank_t sp, int ac, char **av)
{
   (void)ac; (void)av;
   uint32_t n = 0;
   if (sh != NULL && spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &n) == ESPANK_SUCCESS && ++exited == n)
      end_holder(sp);
   return 0;
}

EXPORT int slurm_spank_exit(spank_t sp, int ac, char **av)
{
   (void)sp; (void)ac; (void)av;
   if (sh == NULL || spank_context() != S_CTX_REMOTE)
      return 0;
   end_holder(sp);
   munmap(sh, SHARED_SIZE);
   sh = NULL;
   return 0;
}

/* The package this plugin belongs to: site's root=, else three levels above
   this file (ROOT/build/Release/ch_spank.so, in a checkout or an install). */
const char *package_root(void)
{
   static char root[PATH_MAX];
   if (site.root != NULL)
      return site.root;
   Dl_info info;
   if (root[0] == '\0' && dladdr((void *)package_root, &info) != 0 && info.dli_fname != NULL) {
      snprintf(root, sizeof(root), "%s", info.dli_fname);
      for (int i = 0; i < 3; i++) {
         char *slash = strrchr(root, '/');
         if (slash == NULL)
            break;
         *slash = '\0';
      }
   }
   return root;
}
