/* The plugin's options for srun, sbatch and salloc, and the site's
   plugstack.conf arguments. Locally (srun, sbatch, salloc) each value's form
   is checked before anything runs, and the error names the option and the
   value; remotely (slurmstepd) the values are only kept. */

#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ch_spank.h"

enum { O_IMAGE = 1, O_MOUNTS, O_WORKDIR, O_ENV, O_SET_ENV, O_WRITABLE, O_GPU, O_DEVICE, O_VERBOSE };

static int keep(char **slot, const char *v)
{
   free(*slot);
   *slot = v != NULL ? strdup(v) : NULL;
   return v == NULL || *slot != NULL ? 0 : -1;
}

/* SRC:DST[:ro|rw] items, comma-separated, both paths absolute. */
static int check_mounts(const char *v)
{
   char *copy = strdup(v), *save = NULL;
   int rc = 0;
   if (copy == NULL)
      return -1;
   for (char *m = strtok_r(copy, ",", &save); m != NULL && rc == 0; m = strtok_r(NULL, ",", &save)) {
      char *dst = strchr(m, ':');
      char *flag = dst != NULL ? strchr(dst + 1, ':') : NULL;
      if (m[0] != '/' || dst == NULL || dst[1] != '/' || (flag != NULL && strcmp(flag, ":ro") && strcmp(flag, ":rw"))) {
         say("--ch-mounts=%s: bad mount '%s' (want SRC:DST[:ro], absolute paths, comma-separated)", v, m);
         rc = -1;
      }
   }
   free(copy);
   return rc;
}

/* NAME=VALUE items, comma-separated. */
static int check_env(const char *v)
{
   char *copy = strdup(v), *save = NULL;
   int rc = 0;
   if (copy == NULL)
      return -1;
   for (char *e = strtok_r(copy, ",", &save); e != NULL && rc == 0; e = strtok_r(NULL, ",", &save)) {
      char *eq = strchr(e, '=');
      bool ok = eq != NULL && eq != e && (isalpha((unsigned char)e[0]) || e[0] == '_');
      for (char *c = e; ok && c < eq; c++)
         ok = isalnum((unsigned char)*c) || *c == '_';
      if (!ok) {
         say("--ch-env=%s: bad item '%s' (want NAME=VALUE[,NAME=VALUE...])", v, e);
         rc = -1;
      }
   }
   free(copy);
   return rc;
}

static int option(int val, const char *v, int remote)
{
   bool local = !remote;
   switch (val) {
   case O_IMAGE:
      if (local && (v == NULL || v[0] == '\0')) {
         say("--ch-image: empty image name");
         return -1;
      }
      return keep(&opt.image, v);
   case O_MOUNTS:
      if (local && check_mounts(v) != 0)
         return -1;
      return keep(&opt.mounts, v);
   case O_WORKDIR:
      if (local && (v == NULL || v[0] != '/')) {
         say("--ch-workdir=%s: want an absolute path in the container", v ? v : "");
         return -1;
      }
      return keep(&opt.workdir, v);
   case O_ENV:
      if (local && check_env(v) != 0)
         return -1;
      return keep(&opt.env, v);
   case O_SET_ENV:
      if (local && (v == NULL || v[0] == '\0')) {
         say("--ch-set-env: want FILE or NAME=VALUE");
         return -1;
      }
      return keep(&opt.set_env, v);
   case O_WRITABLE:
      opt.writable = true;
      return 0;
   case O_GPU:
      opt.gpu_set = true;
      return keep(&opt.gpu, v != NULL && v[0] != '\0' ? v : NULL);
   case O_DEVICE:
      if (local && (v == NULL || strchr(v, '=') == NULL)) {
         say("--ch-device=%s: want KIND=NAME[,...], as ch-run --device", v ? v : "");
         return -1;
      }
      return keep(&opt.device, v);
   case O_VERBOSE:
      opt.verbose = true;
      return 0;
   }
   return -1;
}

static struct spank_option table[] = {
   { "ch-image", "IMAGE", "ch-toolkit: run the tasks in a container of IMAGE (directory, .sqfs, tarball or registry reference)", 1, O_IMAGE, option },
   { "ch-mounts", "SRC:DST[:ro],...", "ch-toolkit: bind host SRC at DST in the container", 1, O_MOUNTS, option },
   { "ch-workdir", "DIR", "ch-toolkit: working directory in the container", 1, O_WORKDIR, option },
   { "ch-env", "NAME=VALUE,...", "ch-toolkit: set variables in the container", 1, O_ENV, option },
   { "ch-set-env", "FILE|NAME=VALUE", "ch-toolkit: as ch-run --set-env", 1, O_SET_ENV, option },
   { "ch-writable", NULL, "ch-toolkit: writable tmpfs overlay over the image (ch-run -W)", 0, O_WRITABLE, option },
   { "ch-gpu", "VENDOR", "ch-toolkit: inject GPU libraries and devices (ch-run --gpu)", 2, O_GPU, option },
   { "ch-device", "KIND=NAME,...", "ch-toolkit: inject devices (ch-run --device)", 1, O_DEVICE, option },
   { "ch-verbose", NULL, "ch-toolkit: say more while making the container (ch-run -v)", 0, O_VERBOSE, option },
   SPANK_OPTIONS_TABLE_END
};

int options_register(spank_t sp)
{
   for (struct spank_option *o = table; o->name != NULL; o++)
      if (spank_option_register(sp, o) != ESPANK_SUCCESS) {
         slurm_error("ch-spank: can't register option --%s", o->name);
         return -1;
      }
   return 0;
}

/* An option of ours without --ch-image: say so before the job starts. */
EXPORT int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
   (void)sp; (void)ac; (void)av;
   if (spank_context() == S_CTX_REMOTE || opt.image != NULL)
      return 0;
   const char *lone = opt.mounts ? "--ch-mounts" : opt.workdir ? "--ch-workdir" : opt.env ? "--ch-env"
                      : opt.set_env ? "--ch-set-env" : opt.writable ? "--ch-writable" : opt.gpu_set ? "--ch-gpu"
                      : opt.device ? "--ch-device" : NULL;
   if (lone != NULL) {
      say("%s needs --ch-image=IMAGE", lone);
      return -1;
   }
   return 0;
}

int site_args(int ac, char **av)
{
   site.timeout_s = 600;
   for (int i = 0; i < ac; i++) {
      if (!strncmp(av[i], "root=", 5))
         site.root = av[i] + 5;
      else if (!strncmp(av[i], "cache=", 6))
         site.cache = av[i] + 6;
      else if (!strncmp(av[i], "cache_size=", 11))
         site.cache_size = av[i] + 11;
      else if (!strncmp(av[i], "timeout=", 8) && atoi(av[i] + 8) > 0)
         site.timeout_s = atoi(av[i] + 8);
      else {
         slurm_error("ch-spank: plugstack.conf: unknown argument '%s' (want root=DIR, cache=DIR, "
                     "cache_size=SIZE, timeout=SECONDS)", av[i]);
         return -1;
      }
   }
   return 0;
}
