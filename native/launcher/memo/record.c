/* Memoized plans: reading a record (what lib/run/memo.ts serializes). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* RECORD_ARGS's count and arguments, at C: are they this launch's TAIL?
   (Unchecked, they are only skipped.) A malformed entry leaves C->p NULL. */
static bool args_hold(struct memo *m, struct tokens *c, bool check)
{
   const char *t = tokens_next(c);
   char *end;
   long n = t != NULL ? strtol(t, &end, 10) : -1;
   if (t == NULL || *t == '\0' || *end != '\0' || n < 0) {
      c->p = NULL;
      return false;
   }
   bool same = n == m->tail_n;
   for (long i = 0; i < n; i++) {
      if ((t = tokens_next(c)) == NULL) {
         c->p = NULL;
         return false;
      }
      same = same && strcmp(t, m->tail[i]) == 0;
   }
   return !check || same;
}

/* Walk record R: every dependency must hold (unless !CHECK); notes where the plan is. */
bool record_read(struct memo *m, const char *p, size_t len, struct record *r, bool check)
{
   memset(r, 0, sizeof(*r));
   struct tokens c = { p, p + len };
   const char *t = tokens_next(&c);
   if (t == NULL || strcmp(t, RECORD_MAGIC) != 0) {
      why(m, "%s", "record from a different build");
      return false;
   }
   bool args_said = false;
   while ((t = tokens_next(&c)) != NULL) {
      if (!strcmp(t, RECORD_PLAN)) {
         /* A key without the command's arguments has records that say
            what of them the plan holds for (args_hold). */
         if (m->tail != NULL && !args_said)
            break;
         r->plan = c.p;
         r->plan_len = c.end - c.p;
         return true;
      }
      const char *arg;
      if (!strcmp(t, RECORD_ARGSLOT) || !strcmp(t, RECORD_ARGS)) {
         if (m->tail == NULL)
            break;
         args_said = true;
         if (!strcmp(t, RECORD_ARGSLOT)) {
            r->tail = m->tail;
            r->tail_n = m->tail_n;
         } else if (!args_hold(m, &c, check)) {
            if (c.p == NULL)
               break;
            snprintf(m->why, sizeof(m->why), "%s", "the command's arguments changed");
            return false;
         }
         continue;
      }
      if (!strcmp(t, RECORD_NOSTORE) || !strcmp(t, RECORD_INCOMPLETE)) {
         r->incomplete = !strcmp(t, RECORD_INCOMPLETE);
         if ((r->nostore = tokens_next(&c)) == NULL)
            break;
         continue;
      }
      if (!strcmp(t, RECORD_JOINTAG)) {
         if ((r->join_ph = tokens_next(&c)) == NULL || (r->join_tmpl = tokens_next(&c)) == NULL)
            break;
         continue;
      }
      if (!strcmp(t, RECORD_VERBOSE)) {
         if ((arg = tokens_next(&c)) == NULL)
            break;
         r->verbose = atoi(arg);
         continue;
      }
      if (!strcmp(t, RECORD_SET) || !strcmp(t, RECORD_UNSET) || !strcmp(t, RECORD_LOG)) {
         if (r->edits_from == NULL)
            r->edits_from = t;   /* edits, then log lines, follow the dependencies */
         if (tokens_next(&c) == NULL || (!strcmp(t, RECORD_SET) && tokens_next(&c) == NULL))
            break;
         continue;
      }
      bool known;
      const char *what;
      bool holds = dep_holds(t, &c, &known, &what);
      if (!known)
         break;
      if (check && !holds) {
         snprintf(m->why, sizeof(m->why), "%s changed: %s", t, what);
         return false;
      }
   }
   why(m, "%s", "corrupt record");
   return false;
}
