/* rng: the one seeded random generator of tokenrec (xoshiro256**, seeded by splitmix64).
 * Every random draw in every stage comes from an rng_t seeded from --seed, so a run is
 * reproducible, and its state is a plain struct that checkpoints can store and restore. */
#ifndef TOKENREC_RNG_H
#define TOKENREC_RNG_H
#include <stdint.h>
#include <stddef.h>

typedef struct { uint64_t s[4]; } rng_t;

void     rng_seed(rng_t *r, uint64_t seed);
/* The seed of a stage's own stream of the shared --seed: the same seed gives each stage
 * (name: "cf", "tokenize", ...) a different stream, and the same stream every time. */
uint64_t rng_stream(uint64_t seed, const char *name);
/* A child generator for an independent stream (e.g. one per thread or per purpose),
 * derived deterministically from the parent's next draw and a stream id. */
void     rng_split(rng_t *parent, rng_t *child, uint64_t stream);
/* The next 64-bit draw. Inline: dropout calls it once per four elements in the hot loop. */
static inline uint64_t rng_u64(rng_t *r) {
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}
uint32_t rng_below(rng_t *r, uint32_t n);     /* uniform in [0, n), n > 0, unbiased */
float    rng_uniform(rng_t *r);               /* uniform in [0, 1) */
double   rng_uniform_d(rng_t *r);             /* uniform in [0, 1), 53 bits */
float    rng_normal(rng_t *r);                /* standard normal (Box-Muller) */
void     rng_shuffle_u32(rng_t *r, uint32_t *a, size_t n);   /* Fisher-Yates */
void     rng_shuffle_i32(rng_t *r, int32_t *a, size_t n);

#endif
