/* gw_rate.h: a token bucket, for per-device message rate limits.
 *
 * The bucket holds at most `burst` tokens and refills at `per_s` tokens per
 * second; each message takes one. It lives in the gateway's per-device
 * record (not the connection), so reconnecting does not refill it. Time is
 * the caller's monotonic milliseconds, which makes the module pure.
 */
#ifndef GW_RATE_H
#define GW_RATE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    double tokens;
    int64_t last_ms;
    bool init;
} gw_rate_t;

/* Takes one token at `now_ms`. True if allowed; false leaves the bucket as
 * it was apart from the refill. */
bool gw_rate_take(gw_rate_t *r, double burst, double per_s, int64_t now_ms);

#endif
