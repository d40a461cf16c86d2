/* backoff.c: exponential backoff with full jitter (see backoff.h). */
#include "backoff.h"

/* splitmix64: tiny, well mixed, and its whole state is one word the caller
 * owns. Not for secrets; only for spreading reconnects. */
static uint64_t backoff_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ems_backoff_init(ems_backoff_t *b, uint64_t base_ms, uint64_t max_ms, uint64_t seed)
{
    b->base_ms = base_ms ? base_ms : 1;
    b->max_ms = max_ms < b->base_ms ? b->base_ms : max_ms;
    b->attempt = 0;
    b->rng = seed;
}

uint64_t ems_backoff_ceiling(const ems_backoff_t *b)
{
    uint64_t c = b->base_ms;
    for (unsigned i = 0; i < b->attempt && c < b->max_ms; i++)
        c = c > UINT64_MAX / 2 ? UINT64_MAX : c * 2;
    return c < b->max_ms ? c : b->max_ms;
}

uint64_t ems_backoff_next(ems_backoff_t *b)
{
    uint64_t ceil = ems_backoff_ceiling(b);
    if (b->attempt < 64)
        b->attempt++;
    /* Inclusive range [0, ceil]; the modulo bias is negligible for ceilings
     * far below 2^64. */
    return ceil == UINT64_MAX ? backoff_rand(&b->rng) : backoff_rand(&b->rng) % (ceil + 1);
}

void ems_backoff_reset(ems_backoff_t *b)
{
    b->attempt = 0;
}
