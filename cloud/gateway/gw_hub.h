/* gw_hub.h: who watches which device (dashboard fan-out).
 *
 * Maps a device id to the subscribers (dashboards) watching it, plus a list
 * of subscribers watching every device ("*"). Subscribers are opaque
 * pointers owned by the caller; the hub only stores them. Fan-out walks the
 * device's subscribers and then the "*" list and calls `send` for each, so
 * the caller encodes a message once and queues the same reference-counted
 * buffer to every subscriber (ems_ws_msg_t). A subscriber is in a device's
 * list at most once, and a "*" subscriber is never also in a device list, so
 * nobody gets a message twice.
 *
 * `send` must not change the hub (a dashboard that overflows starts its
 * close; it is removed later, from its close callback, with
 * gw_hub_remove).
 */
#ifndef GW_HUB_H
#define GW_HUB_H

#include "gw_map.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_hub_dev gw_hub_dev_t;

/* What one subscriber is subscribed to; embedded in the subscriber and
 * owned by the hub's functions (zero-initialise it). */
typedef struct {
    bool all;
    gw_hub_dev_t **devs; /* explicit subscriptions */
    size_t len, cap;
} gw_hub_subs_t;

typedef struct {
    gw_map_t by_dev;
    void **all;
    size_t nall, capall;
} gw_hub_t;

#define GW_HUB_SUBS_MAX 10000 /* explicit subscriptions per subscriber */

void gw_hub_init(gw_hub_t *h);
/* Frees the hub's memory; subscribers must have been removed (or their
 * gw_hub_subs_t are left dangling). */
void gw_hub_free(gw_hub_t *h);

/* Subscribes `sub` (whose subscription record is `s`) to one device.
 * Returns 0 (also when already subscribed, or covered by "*"), EMS_ENOSPC
 * (GW_HUB_SUBS_MAX reached) or EMS_ENOMEM. */
int gw_hub_sub(gw_hub_t *h, void *sub, gw_hub_subs_t *s, const char *device_id);
/* Removes one explicit subscription (no effect when absent). */
void gw_hub_unsub(gw_hub_t *h, void *sub, gw_hub_subs_t *s, const char *device_id);
/* "*": replaces the explicit subscriptions by the all-devices list. */
int gw_hub_sub_all(gw_hub_t *h, void *sub, gw_hub_subs_t *s);
void gw_hub_unsub_all(gw_hub_t *h, void *sub, gw_hub_subs_t *s);
/* Removes every subscription of `sub` and frees s's memory. */
void gw_hub_remove(gw_hub_t *h, void *sub, gw_hub_subs_t *s);

/* Calls send(sub, ud) for every subscriber of `device_id` (explicit, then
 * "*"). Returns the number of calls. */
size_t gw_hub_fanout(gw_hub_t *h, const char *device_id, void (*send)(void *sub, void *ud),
                     void *ud);
/* Subscribers of one device (explicit only), for tests and metrics. */
size_t gw_hub_count(const gw_hub_t *h, const char *device_id);

#endif
