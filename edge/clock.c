/* clock.c: clock_synced from adjtimex() and the welcome (see clock.h). */
#include "clock.h"

#include "error.h"

#include <errno.h>
#include <string.h>
#include <sys/timex.h>

void ems_edge_clock_init(ems_edge_clock_t *c)
{
    memset(c, 0, sizeof *c);
}

int ems_edge_clock_kernel_synced(void)
{
    /* modes = 0 only reads; it needs no privilege. TIME_ERROR as the return
     * value and STA_UNSYNC both say "not synchronised"; the flag is the
     * precise one (the return value also reports leap-second states). */
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    int rc = adjtimex(&tx);
    if (rc < 0)
        return -errno;
    return (tx.status & STA_UNSYNC) ? 0 : 1;
}

int64_t ems_edge_clock_welcome(ems_edge_clock_t *c, int64_t server_ms, int64_t local_utc_ms,
                               int64_t mono_ms)
{
    c->have_welcome = true;
    c->w_utc_ms = local_utc_ms;
    c->w_mono_ms = mono_ms;
    c->w_offset_ms = server_ms - local_utc_ms;
    return c->w_offset_ms;
}

void ems_edge_clock_forget(ems_edge_clock_t *c)
{
    c->have_welcome = false;
}

bool ems_edge_clock_offset(const ems_edge_clock_t *c, int64_t utc_ms, int64_t mono_ms,
                           int64_t *offset_ms)
{
    if (!c->have_welcome)
        return false;
    /* How far the wall clock moved beyond what really elapsed. */
    int64_t step = (utc_ms - c->w_utc_ms) - (mono_ms - c->w_mono_ms);
    *offset_ms = c->w_offset_ms - step;
    return true;
}

bool ems_edge_clock_synced(const ems_edge_clock_t *c, int kernel_synced, int64_t utc_ms,
                           int64_t mono_ms)
{
    if (kernel_synced == 1)
        return true;
    int64_t off;
    if (!ems_edge_clock_offset(c, utc_ms, mono_ms, &off))
        return false;
    return off >= -EMS_EDGE_CLOCK_TOLERANCE_MS && off <= EMS_EDGE_CLOCK_TOLERANCE_MS;
}
