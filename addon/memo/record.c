/* Memoized plans: reading a record (what lib/run/memo.ts serializes). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define RECORD_MAGIC "CHMEMO1"

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
      if (!strcmp(t, "plan")) {
         r->plan = c.p;
         r->plan_len = c.end - c.p;
         return true;
      }
      const char *arg;
      if (!strcmp(t, "nostore") || !strcmp(t, "incomplete")) {
         r->incomplete = t[0] == 'i';
         if ((r->nostore = tokens_next(&c)) == NULL)
            break;
         continue;
      }
      if (!strcmp(t, "jointag")) {
         if ((r->join_ph = tokens_next(&c)) == NULL || (r->join_tmpl = tokens_next(&c)) == NULL)
            break;
         continue;
      }
      if (!strcmp(t, "verbose")) {
         if ((arg = tokens_next(&c)) == NULL)
            break;
         r->verbose = atoi(arg);
         continue;
      }
      if (!strcmp(t, "set") || !strcmp(t, "unset") || !strcmp(t, "log")) {
         if (r->edits_from == NULL)
            r->edits_from = t;   /* edits, then log lines, follow the dependencies */
         if (tokens_next(&c) == NULL || (t[0] == 's' && tokens_next(&c) == NULL))
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
