/* rng.h: a small seeded pseudo-random generator for the simulation.
 *
 * xoshiro256** seeded through splitmix64 (Blackman and Vigna). Not for
 * secrets; only for replayable simulations: the same seed and the same
 * sequence of calls give the same numbers on every machine. The state is
 * plain data, so a copy forks the stream.
 */
#ifndef EMS_RNG_H
#define EMS_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} ems_rng_t;

static inline uint64_t ems_rng__splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void ems_rng_seed(ems_rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = ems_rng__splitmix(&seed);
}

static inline uint64_t ems_rng__rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t ems_rng_next(ems_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = ems_rng__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ems_rng__rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static inline double ems_rng_uniform(ems_rng_t *r)
{
    return (double)(ems_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Standard normal (Box-Muller; uses two uniforms per call, so the stream
 * position does not depend on a cached second value). */
static inline double ems_rng_normal(ems_rng_t *r)
{
    double u1 = ems_rng_uniform(r), u2 = ems_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
