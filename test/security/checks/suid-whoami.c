/* Installed setuid root (mode 4755, owner root) in the escape test image:
   prints "ruid euid suid rgid egid". Inside a container it must not gain
   anything: euid stays the caller's. */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
int main(void)
{
   uid_t r, e, s;
   gid_t rg, eg, sg;
   getresuid(&r, &e, &s);
   getresgid(&rg, &eg, &sg);
   printf("%u %u %u %u %u\n", r, e, s, rg, eg);
   return 0;
}
