/* How much work V8's start-up does to derive its string-hash secrets from
   each hash seed: the tool that picked ch-run's `--hash-seed` (protocol.json
   nodeFlags: the seed for a V8 that must derive them; --no-rehash-snapshot
   keeps the snapshot's own where there is one; docs/design.md "The hash
   seed").

   V8 >= 14.1, and the Node 20.20 this project is built with (a security
   backport), hashes strings with rapidhash keyed by three 64-bit secrets
   made at every isolate's start from the hash seed (random unless
   `--hash-seed` names one): words drawn from a small PRNG on the seed, each
   byte with four bits set, each pair 32 bits apart, each prime by twelve
   Miller-Rabin rounds whose modular multiplication is a loop of one bit per
   step with a 64-bit division in it. How many candidates fail before three
   are found depends on the seed alone: ~3.6 ms of `node -e 0` on this
   project's 2-CPU test machine on average, ~1.3 ms for the cheapest seeds.

   This is a model of that search written for counting, not V8's code: it
   prints, per seed, the number of modular-multiplication steps (the cost;
   everything else is noise beside it) and the secrets found.

     cc -O2 -o /tmp/hash-seed tools/hash-seed.c
     /tmp/hash-seed 1 20000 | sort -n -k2 | head     # the cheapest seeds
     /tmp/hash-seed 8644 8644                          # one seed

   Run on 1..20000 (62 s): mean 516,414 steps, least 189,089 (seed 8644),
   most 1,725,414; at least three primes' 36 rounds are always paid. */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t steps;   /* modular-multiplication steps so far */

/* The PRNG the secrets are drawn from: a Weyl sequence (the step is the
   default secret's first word) through a 128-bit multiply folded to 64. */
static uint64_t next_random(uint64_t *state)
{
   *state += UINT64_C(0x2d358dccaa6c78a5);
   __uint128_t product = (__uint128_t)*state * (*state ^ UINT64_C(0x8bb84b93962eacc9));
   return (uint64_t)product ^ (uint64_t)(product >> 64);
}

/* A*B mod M by doubling and adding, one bit of B per step (as V8 does it,
   so that the steps counted are the work done). */
static uint64_t mul_mod(uint64_t a, uint64_t b, uint64_t m)
{
   uint64_t r = 0;
   for (; b; b >>= 1) {
      steps++;
      if (b & 1) {
         uint64_t s = r + a;
         r = (s < r ? s - m : s) % m;
      }
      if (b > 1) {
         uint64_t d = a + a;
         a = (d < a ? d - m : d) % m;
      }
   }
   return r;
}

static uint64_t pow_mod(uint64_t a, uint64_t e, uint64_t m)
{
   uint64_t r = 1;
   for (; e; e >>= 1) {
      if (e & 1)
         r = mul_mod(r, a, m);
      if (e > 1)
         a = mul_mod(a, a, m);
   }
   return r;
}

/* Is odd N > 2047 a strong probable prime to base A? */
static int strong_probable_prime(uint64_t n, uint64_t a)
{
   uint64_t d = n - 1;
   int s = 0;
   for (; !(d & 1); d >>= 1)
      s++;
   uint64_t x = pow_mod(a, d, n);
   if (x == 1 || x == n - 1)
      return 1;
   for (int i = 1; i < s; i++) {
      x = mul_mod(x, x, n);
      if (x <= 1)
         return 0;
      if (x == n - 1)
         return 1;
   }
   return 0;
}

/* The twelve bases, in order: the first that fails ends the test. */
static int prime(uint64_t n)
{
   static const uint64_t bases[] = { 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37 };
   for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++)
      if (!strong_probable_prime(n, bases[i]))
         return 0;
   return 1;
}

int main(int argc, char **argv)
{
   if (argc != 3) {
      fprintf(stderr, "usage: %s FIRST LAST  (prints: SEED STEPS SECRET0 SECRET1 SECRET2)\n", argv[0]);
      return 2;
   }
   uint8_t balanced[70];   /* the bytes with four bits set, ascending */
   int n = 0;
   for (int b = 0; b < 256; b++)
      if (__builtin_popcount(b) == 4)
         balanced[n++] = (uint8_t)b;
   uint64_t first = strtoull(argv[1], NULL, 0), last = strtoull(argv[2], NULL, 0);
   for (uint64_t seed = first; seed <= last && seed != 0; seed++) {
      uint64_t state = seed, secret[3];
      steps = 0;
      for (int i = 0; i < 3; i++) {
         for (;;) {
            secret[i] = 0;
            for (int j = 0; j < 64; j += 8)
               secret[i] |= (uint64_t)balanced[next_random(&state) % n] << j;
            if (!(secret[i] & 1))
               continue;
            int apart = 1;
            for (int j = 0; j < i && apart; j++)
               apart = __builtin_popcountll(secret[j] ^ secret[i]) == 32;
            if (apart && prime(secret[i]))
               break;
         }
      }
      printf("%" PRIu64 " %" PRIu64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n",
             seed, steps, secret[0], secret[1], secret[2]);
   }
   return 0;
}
