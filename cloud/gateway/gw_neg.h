/* gw_neg.h: a bounded, short-lived set of names known not to exist.
 *
 * The device endpoint remembers "no such device" answers of the DB writer
 * for a few seconds (auth_negative_s), so 2,000 upgrades for an unknown id
 * cost one lookup, not 2,000. Entries expire `ttl_ms` after they were added;
 * since every entry lives equally long, insertion order is expiry order and
 * the set is a ring: the oldest entry is evicted when it is full, and
 * expired entries are dropped from its head. A lookup is one hash probe.
 *
 * The set owns its ring and map; names are copied (at most 64 characters,
 * a device id). Time is the caller's monotonic milliseconds (pure module).
 */
#ifndef GW_NEG_H
#define GW_NEG_H

#include "gw_map.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_NEG_NAME_MAX 64

typedef struct {
    char name[GW_NEG_NAME_MAX + 1];
    int64_t expires_ms;
} gw_neg_entry_t;

typedef struct {
    gw_neg_entry_t *ring;
    size_t cap, head, len;
    int64_t ttl_ms;
    gw_map_t map; /* name -> entry in ring */
} gw_neg_t;

/* Sets up an empty set of at most `cap` names kept `ttl_ms`. A ttl of 0
 * disables it (nothing is remembered). 0 or EMS_ENOMEM. */
int gw_neg_init(gw_neg_t *n, size_t cap, int64_t ttl_ms);
void gw_neg_free(gw_neg_t *n);

/* Remembers `name` (a longer one is ignored) until now_ms + ttl. */
void gw_neg_add(gw_neg_t *n, const char *name, int64_t now_ms);

/* True while `name` is remembered at now_ms. */
bool gw_neg_has(gw_neg_t *n, const char *name, int64_t now_ms);

/* Forgets `name` (it was just provisioned). */
void gw_neg_del(gw_neg_t *n, const char *name);

/* Forgets every name (credentials may have changed while nobody listened). */
void gw_neg_clear(gw_neg_t *n);

#endif
