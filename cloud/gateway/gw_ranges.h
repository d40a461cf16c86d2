/* gw_ranges.h: a set of sequence numbers as sorted inclusive ranges.
 *
 * Holds the telemetry `seq` values of one device that PostgreSQL has
 * committed and that the device has not yet been told about; flushed as one
 * {"type":"ack","ranges":[[lo,hi],...]} message (docs/protocol.md 3.2).
 * Commits arrive nearly in order, so adding the next seq extends the last
 * range in O(1); out-of-order values are merged in place. The set owns its
 * array.
 */
#ifndef GW_RANGES_H
#define GW_RANGES_H

#include <stddef.h>
#include <stdint.h>

#define GW_ACK_RANGES_MAX 256 /* ranges per ack message (protocol) */

typedef struct {
    uint64_t lo, hi;
} gw_range_t;

typedef struct {
    gw_range_t *r;
    size_t len, cap;
} gw_ranges_t;

void gw_ranges_free(gw_ranges_t *s);

/* Adds one value (merging with neighbours). Returns 0 or EMS_ENOMEM. */
int gw_ranges_add(gw_ranges_t *s, uint64_t v);

/* Writes {"type":"ack","ranges":[...]} for the first (at most 256) ranges
 * into buf and removes them from the set. Returns the length written,
 * 0 if the set is empty, or EMS_ENOSPC (set unchanged). 24 * 256 + 32 bytes
 * always suffice. */
int gw_ranges_take_ack(gw_ranges_t *s, char *buf, size_t cap);

#define GW_ACK_JSON_MAX (GW_ACK_RANGES_MAX * 44 + 40)

/* Time ranges of the history API (GET /api/devices/{id}/telemetry). */
#define GW_HISTORY_RAW_MAX_MS (2LL * 3600 * 1000) /* auto gives raw up to 2 h */
#define GW_HISTORY_BUCKETS_MAX 4000               /* the DB writer's limit */

/* The default ("auto") bucket width in seconds for a range of `span_ms`:
 * 0 (raw) up to 2 hours, else the first of 60, 3600 and 86400 whose buckets
 * cover the range in at most GW_HISTORY_BUCKETS_MAX buckets whatever its
 * alignment (the DB writer answers whole epoch-aligned buckets, so a range
 * can touch one bucket more than span / width). Every span up to 400 days
 * gets a width the DB writer accepts. */
int gw_ranges_auto_bucket(int64_t span_ms);

#endif
