/* Memoized plans: what a hit replays. The planner's environment edits on
   the live environment, the plan rebuilt around it, the planner's log
   lines said again. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

/* The live environment with the planner's edits replayed (Map semantics:
   a set of a present name replaces it in place, of a new one appends). */
char **edited_env(const struct record *r)
{
   size_t n = 0, cap = 16;
   for (char **e = environ; *e; e++)
      cap++;
   char **env = malloc(cap * sizeof(char *));
   if (env == NULL)
      return NULL;
   for (char **e = environ; *e; e++)
      env[n++] = *e;
   /* From the first edit, token by token as written: "set K V", "unset K",
      "log LINE", up to "plan" (RECORD_*). */
   struct tokens c = { r->edits_from ? r->edits_from : r->plan, r->plan };
   for (const char *t = tokens_next(&c); t != NULL && strcmp(t, RECORD_PLAN) != 0; t = tokens_next(&c)) {
      bool set = !strcmp(t, RECORD_SET);
      if (!strcmp(t, RECORD_LOG)) {
         if (tokens_next(&c) == NULL)
            return NULL;
         continue;
      }
      if (!set && strcmp(t, RECORD_UNSET) != 0)
         return NULL;   /* not what the front end writes here */
      const char *k = tokens_next(&c), *v = set ? tokens_next(&c) : NULL;
      if (k == NULL || (set && v == NULL))
         return NULL;
      size_t kl = strlen(k), i;
      for (i = 0; i < n; i++)
         if (!strncmp(env[i], k, kl) && env[i][kl] == '=')
            break;
      if (!set) {
         if (i < n) {
            memmove(env + i, env + i + 1, (n - i - 1) * sizeof(char *));
            n--;
         }
         continue;
      }
      char *kv = malloc(kl + strlen(v) + 2);
      if (kv == NULL)
         return NULL;
      sprintf(kv, "%s=%s", k, v);
      if (i == n) {
         if (n + 1 >= cap) {
            char **more = realloc(env, (cap *= 2) * sizeof(char *));
            if (more == NULL)
               return NULL;
            env = more;
         }
         n++;
      }
      env[i] = kv;
   }
   env[n] = NULL;
   return env;
}

/* TEMPLATE with each ${NAME} replaced by NAME's value here ("" if unset). */
static void fill_template(struct buf *out, const char *t)
{
   while (*t) {
      const char *open = strstr(t, "${"), *close = open ? strchr(open, '}') : NULL;
      if (open == NULL || close == NULL) {
         put(out, t, strlen(t));
         break;
      }
      put(out, t, open - t);
      char name[256];
      size_t n = close - open - 2;
      if (n < sizeof(name)) {
         memcpy(name, open + 2, n);
         name[n] = '\0';
         const char *v = getenv(name);
         if (v != NULL)
            put(out, v, strlen(v));
      }
      t = close + 1;
   }
   put(out, "", 1);
}

/* The plan a hit runs: the recorded one, --join's tag filled in, the
   command's arguments appended where the record leaves them to this launch
   (RECORD_ARGSLOT: the plan's command ends with its name; its arguments are
   the last of its tokens before the environment), its environment from ENV. */
bool build_plan(const struct record *r, char **env, struct buf *out)
{
   /* The plan ends with PLAN_END and its NUL: environment entries go just before it. */
   size_t end = sizeof(PLAN_END);
   if (r->plan_len < end || memcmp(r->plan + r->plan_len - end, PLAN_END, end) != 0)
      return false;
   struct tokens c = { r->plan, r->plan + r->plan_len - end };
   for (const char *t = tokens_next(&c); t != NULL; t = tokens_next(&c))
      if (r->join_ph != NULL && !strcmp(t, r->join_ph))
         fill_template(out, r->join_tmpl);
      else
         tok(out, t);
   for (int i = 0; i < r->tail_n; i++) {
      tok(out, PLAN_ARG);
      tok(out, r->tail[i]);
   }
   for (char **e = env; *e; e++) {
      tok(out, PLAN_ENV);
      tok(out, *e);
   }
   tok(out, PLAN_END);
   return !out->failed;
}

void replay_log(const struct record *r)
{
   struct tokens c = { r->edits_from ? r->edits_from : r->plan, r->plan };
   for (const char *t = tokens_next(&c); t != NULL && strcmp(t, RECORD_PLAN) != 0; t = tokens_next(&c)) {
      const char *arg = tokens_next(&c);
      if (arg == NULL || (!strcmp(t, RECORD_SET) && tokens_next(&c) == NULL))
         return;
      if (!strcmp(t, RECORD_LOG))
         say("%s", arg);
   }
}
