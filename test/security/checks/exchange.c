/* The attacker's half of the -m race (issue 20 #5): swap two directory
   entries with renameat2(RENAME_EXCHANGE) as fast as possible, so a victim
   that checks a path and later resolves it again may get the other tree.
   Usage: exchange A B SECONDS. Bounded: stops after SECONDS, or at SIGTERM.
   Prints how many swaps succeeded (a test can check it really swapped). */

#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#ifndef RENAME_EXCHANGE
#  define RENAME_EXCHANGE (1 << 1)
#endif

static volatile sig_atomic_t stop = 0;
static void on_term(int s) { (void)s; stop = 1; }

int main(int argc, char **argv)
{
   if (argc != 4) {
      fprintf(stderr, "usage: exchange A B SECONDS\n");
      return 2;
   }
   signal(SIGTERM, on_term);
   time_t end = time(NULL) + atoi(argv[3]);
   long swaps = 0, fails = 0;
   while (!stop && time(NULL) < end) {
      for (int i = 0; i < 1000 && !stop; i++) {
         if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) == 0)
            swaps++;
         else
            fails++;
      }
   }
   printf("%ld swaps, %ld failed\n", swaps, fails);
   return swaps > 0 ? 0 : 1;
}
