/* splitmix64 / xoshiro256** (Vigna, public domain algorithms) and a counter hash. Pure functions of
 * their inputs: the same seed gives the same stream on every rank and every machine. */
#include "mp_rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void mp_rng_seed(struct mp_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t mp_rng_next(struct mp_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float mp_rng_uniform(struct mp_rng *r) { return (float)(mp_rng_next(r) >> 40) * (1.0f / 16777216.0f); }

uint64_t mp_rng_below(struct mp_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = mp_rng_next(r);
    while (x >= limit);
    return x % n;
}

double mp_rng_normal(struct mp_rng *r)
{
    double u1 = ((double)(mp_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(mp_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t mp_hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ULL;
    uint64_t h = splitmix64(&x);
    x = h ^ (b * 0xc2b2ae3d27d4eb4fULL);
    h = splitmix64(&x);
    x = h ^ (c * 0x165667b19e3779f9ULL);
    h = splitmix64(&x);
    x = h ^ (d * 0x27d4eb2f165667c5ULL);
    return splitmix64(&x);
}
