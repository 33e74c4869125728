/* Deterministic random numbers. Two kinds: a small sequential generator (splitmix64 seeding a
 * xoshiro256**) for shuffles and initialisation, and a stateless counter hash for dropout masks,
 * so a mask depends only on (seed, layer, step, micro-batch, element) and never on the rank, the
 * schedule or the order in which work happens. */
#ifndef MP_RNG_H
#define MP_RNG_H

#include <stdint.h>

struct mp_rng {
    uint64_t s[4];
};

void mp_rng_seed(struct mp_rng *r, uint64_t seed);
uint64_t mp_rng_next(struct mp_rng *r);
/* Uniform float in [0, 1) with 24 random bits. */
float mp_rng_uniform(struct mp_rng *r);
/* Uniform integer in [0, n), unbiased (rejection). n > 0. */
uint64_t mp_rng_below(struct mp_rng *r, uint64_t n);
/* Standard normal (Box-Muller in double). */
double mp_rng_normal(struct mp_rng *r);

/* Stateless mixing of up to four words into 64 well-spread bits. */
uint64_t mp_hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d);
/* Uniform float in [0, 1) from a hash value. */
static inline float mp_hash_uniform(uint64_t h) { return (float)(h >> 40) * (1.0f / 16777216.0f); }

#endif
