/* backoff.h: reconnect delays, exponential with full jitter.
 *
 * The n-th delay (n from 0) is uniform in [0, min(max, base * 2^n)]
 * ("full jitter", so a fleet that lost the cloud at the same instant does
 * not come back at the same instant). The random source is a small PRNG
 * seeded by the caller, so tests are repeatable and there is no global
 * state. Pure computation; the caller owns the timer.
 */
#ifndef EMS_BACKOFF_H
#define EMS_BACKOFF_H

#include <stdint.h>

typedef struct ems_backoff {
    uint64_t base_ms; /* first ceiling, e.g. 1000 */
    uint64_t max_ms;  /* largest ceiling, e.g. 60000 */
    unsigned attempt; /* delays handed out since the last reset */
    uint64_t rng;     /* PRNG state (splitmix64) */
} ems_backoff_t;

/* Initialises with the ceilings and a seed (e.g. from getrandom or the
 * device id's hash). base_ms 0 is treated as 1. */
void ems_backoff_init(ems_backoff_t *b, uint64_t base_ms, uint64_t max_ms, uint64_t seed);

/* Returns the next delay in ms and advances the attempt count. */
uint64_t ems_backoff_next(ems_backoff_t *b);

/* The ceiling the next call would draw under. */
uint64_t ems_backoff_ceiling(const ems_backoff_t *b);

/* Starts over (call after a connection has stayed up for a while). */
void ems_backoff_reset(ems_backoff_t *b);

#endif
