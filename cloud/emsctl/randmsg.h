/* randmsg.h: random valid wire messages, for property tests.
 *
 * A seeded generator (xorshift64*), so a failing case is reproduced from its
 * seed. Values favour the edges of each rule: minimum, maximum, zero and
 * negative zero, one-decimal values like the edge sends, and full 53-bit
 * doubles that need 17 digits. Used by test/unit/test_msg_roundtrip.c and by
 * `emsctl _random`, whose output test/suites/10-schema-vectors.py checks
 * against the JSON schemas.
 */
#ifndef EMSCTL_RANDMSG_H
#define EMSCTL_RANDMSG_H

#include "ack.h"
#include "command.h"
#include "command_result.h"
#include "device_info.h"
#include "nack.h"
#include "telemetry.h"
#include "welcome.h"

#include <stdint.h>

typedef struct {
    uint64_t s; /* never 0 */
} emsctl_rand_t;

void emsctl_rand_seed(emsctl_rand_t *r, uint64_t seed);
uint64_t emsctl_rand_u64(emsctl_rand_t *r);
/* Uniform in 0..n-1 (n > 0). */
uint64_t emsctl_rand_below(emsctl_rand_t *r, uint64_t n);
/* A double in lo..hi, often exactly lo, hi, 0, -0 or a one-decimal value. */
double emsctl_rand_double(emsctl_rand_t *r, double lo, double hi);

/* Each fills a struct that passes the module's *_check(). */
void emsctl_rand_telemetry(emsctl_rand_t *r, ems_telemetry_t *t);
void emsctl_rand_command(emsctl_rand_t *r, ems_command_t *c);
void emsctl_rand_command_result(emsctl_rand_t *r, ems_command_result_t *c);
void emsctl_rand_ack(emsctl_rand_t *r, ems_ack_t *a);
void emsctl_rand_nack(emsctl_rand_t *r, ems_nack_t *n);
void emsctl_rand_welcome(emsctl_rand_t *r, ems_welcome_t *w);
void emsctl_rand_device_info(emsctl_rand_t *r, ems_device_info_t *d);

#endif
