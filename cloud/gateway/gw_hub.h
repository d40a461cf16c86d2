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
 *
 * The fleet view (a subscriber's "mode": "fleet") is apart from all that:
 * the hub keeps one entry per device with its latest state
 * (ems_dash_fleet_item_t). An update overwrites the entry and, the first
 * time in an interval, puts it on a dirty list; nothing is sent per
 * packet. Once per interval gw_hub_fleet_collect moves the dirty list into
 * each fleet subscriber's pending set (one bit per device), and the caller
 * drains each subscriber's pending entries as far as its send queue
 * allows (gw_hub_fleet_peek/_sent). A subscriber that cannot take them
 * now keeps them pending: at most one update per device, always the
 * newest state, whatever the packet rate.
 */
#ifndef GW_HUB_H
#define GW_HUB_H

#include "dashboard.h"
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
    bool fleet;          /* the fleet view */
    uint64_t *pending;   /* fleet entries not sent yet, one bit per entry index */
    size_t pend_words, npending;
    size_t pend_from;    /* no pending bit in words below this one */
} gw_hub_subs_t;

/* One device in the fleet view; never freed before the hub. */
typedef struct {
    ems_dash_fleet_item_t item; /* the latest state; item.device_id is the key */
    uint32_t idx;               /* bit index in the subscribers' pending sets */
    bool dirty;                 /* on the dirty list */
} gw_hub_fleet_ent_t;

typedef struct {
    gw_map_t by_dev;
    void **all;
    size_t nall, capall;
    /* the fleet view */
    gw_map_t fleet_by_dev;        /* id -> gw_hub_fleet_ent_t */
    gw_hub_fleet_ent_t **fleet;   /* by idx */
    size_t nfleet_ents, capfleet_ents;
    uint32_t *dirty;              /* indexes changed since the last collect */
    size_t ndirty, capdirty;
    gw_hub_subs_t **fleet_subs;   /* fleet subscribers' records */
    size_t nfleet, capfleet;
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

/* True while some subscriber wants every device's live traffic: "*" or
 * the fleet view (what the message bus subscribes to). */
bool gw_hub_wants_all(const gw_hub_t *h);

/* ---- the fleet view ---- */

/* Starts the fleet view for a subscriber: every entry the hub has is
 * pending for it (its first frames are a snapshot). 0 (also when already
 * on) or EMS_ENOMEM. */
int gw_hub_sub_fleet(gw_hub_t *h, gw_hub_subs_t *s);
/* Ends it (no effect when off); frees the pending set. gw_hub_remove
 * does this too. */
void gw_hub_unsub_fleet(gw_hub_t *h, gw_hub_subs_t *s);
/* The device's entry, created (online false, no telemetry) when `create`;
 * NULL when absent or out of memory. Change entry->item, then call
 * gw_hub_fleet_mark. */
gw_hub_fleet_ent_t *gw_hub_fleet_get(gw_hub_t *h, const char *device_id, bool create);
/* Puts a changed entry on the dirty list (once until the next collect). */
void gw_hub_fleet_mark(gw_hub_t *h, gw_hub_fleet_ent_t *e);
/* Once per interval: every dirty entry becomes pending for every fleet
 * subscriber, and the dirty list is emptied. */
void gw_hub_fleet_collect(gw_hub_t *h);
/* The subscriber's first pending entry (lowest index), or NULL. */
gw_hub_fleet_ent_t *gw_hub_fleet_peek(const gw_hub_t *h, gw_hub_subs_t *s);
/* The entry went out (or is to be skipped): no longer pending for s. */
void gw_hub_fleet_sent(gw_hub_subs_t *s, const gw_hub_fleet_ent_t *e);
/* Iterates entries: *i starts at 0; NULL at the end. */
gw_hub_fleet_ent_t *gw_hub_fleet_next(const gw_hub_t *h, size_t *i);

#endif
