/* gw_rate.c: token bucket (see gw_rate.h). */
#include "gw_rate.h"

bool gw_rate_take(gw_rate_t *r, double burst, double per_s, int64_t now_ms)
{
    if (!r->init) {
        r->tokens = burst;
        r->last_ms = now_ms;
        r->init = true;
    }
    if (now_ms > r->last_ms) {
        r->tokens += (double)(now_ms - r->last_ms) * per_s / 1000.0;
        if (r->tokens > burst)
            r->tokens = burst;
        r->last_ms = now_ms;
    }
    if (r->tokens < 1.0)
        return false;
    r->tokens -= 1.0;
    return true;
}
