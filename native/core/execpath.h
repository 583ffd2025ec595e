/* execvpe(3) as ch-run's core (main.c) and the SPANK plugin's joiner
   (native/spank/joiner.c) both need it. Header-only: the joiner is a static
   program built from native/spank alone, without the core's objects. */

#ifndef CH_EXECPATH_H
#define CH_EXECPATH_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Exec CMD with ARGV and ENV: as it is if it has a slash, else each entry
   of PATH (NULL: /bin:/usr/bin; an empty entry is the current directory, as
   execvp's) in turn. With ARGV0_FOUND, argv[0] becomes the path tried (as
   slurmstepd gives a task its program). Returns only on failure: the errno
   to report, EACCES if a candidate existed but could not be run, as
   execvp(3). A candidate too long for PATH_MAX is skipped, never truncated
   into some other path. */
static inline int exec_path(const char *cmd, char **argv, char **env, const char *path, bool argv0_found)
{
   if (strchr(cmd, '/') != NULL) {
      execve(cmd, argv, env);
      return errno;
   }
   if (cmd[0] == '\0')
      return ENOENT;
   char *copy = strdup(path != NULL ? path : "/bin:/usr/bin"), *save = NULL, full[PATH_MAX];
   if (copy == NULL)
      return errno;
   int err = ENOENT;
   bool eacces = false;
   for (char *dir = strtok_r(copy, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
      int n = snprintf(full, sizeof(full), "%s/%s", *dir ? dir : ".", cmd);
      if (n < 0 || (size_t)n >= sizeof(full))
         continue;   /* ENAMETOOLONG, as the kernel would say */
      if (argv0_found)
         argv[0] = full;
      execve(full, argv, env);
      if (errno == EACCES)
         eacces = true;
      else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP && errno != ENAMETOOLONG) {
         eacces = false;
         err = errno;
         break;
      }
   }
   free(copy);
   return eacces ? EACCES : err;
}

#endif
