/* Memoized plans: reading a record (what lib/run/memo.ts serializes). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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
   while ((t = tokens_next(&c)) != NULL) {
      if (!strcmp(t, RECORD_PLAN)) {
         r->plan = c.p;
         r->plan_len = c.end - c.p;
         return true;
      }
      const char *arg;
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
