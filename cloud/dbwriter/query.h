/* query.h: the read side of the DB writer, the QUERY operations of the link
 * (docs/protocol.md 5.5): telemetry history (raw or downsampled), latest
 * value per device, energy per local day or month (docs/energy.md),
 * command history, device sessions, device and user lookups for
 * authentication, alarms and the webhooks' outbox (claim with a lease,
 * advance the cursor; docs/alarms.md).
 *
 * Each query is one statement on a connection of its own (so a long
 * history query never delays a commit), built from a fixed SQL text with
 * parameters (no SQL is ever assembled from request values). Results are
 * written as JSON text straight from libpq's text values; the columnar
 * history format copies PostgreSQL's shortest-exact float text, so a
 * stored 53.2 is answered as 53.2.
 */
#ifndef EMS_QUERY_H
#define EMS_QUERY_H

#include "migrate.h"
#include "pg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ems_query ems_query_t;

/* The answer to one query: `status` 0 with the result JSON, or a negative
 * EMS_E* code with {"error":"..."}. `json` is valid during the call only. */
typedef void (*ems_query_done_cb)(void *ud, uint64_t request_id, int status, const char *json,
                                  size_t len);

typedef struct {
    ems_storage_t storage; /* decides which rollup serves which bucket width */
    unsigned max_inflight; /* queries queued at once; more get EMS_EAGAIN; 0: 256 */
    /* Answers {"op":"stats"}: returns a new JSON object (caller frees) or NULL. */
    char *(*stats_json)(void *ud);
    void *stats_ud;
} ems_query_opts_t;

/* `pg` is borrowed and must outlive the query module. */
int ems_query_new(ems_pg_t *pg, const ems_query_opts_t *o, ems_query_t **out);
void ems_query_set_storage(ems_query_t *q, ems_storage_t storage);

/* Runs one QUERY; `cb` is called exactly once, possibly before this
 * returns (for a request refused without touching the database). */
void ems_query_run(ems_query_t *q, uint64_t request_id, const char *json, size_t len,
                   ems_query_done_cb cb, void *ud);

/* Queries queued or running. */
unsigned ems_query_inflight(const ems_query_t *q);

/* Frees the module; call after the pg connection is closed (which ended
 * every query with EMS_ECLOSED). */
void ems_query_free(ems_query_t *q);

/* Exposed for tests: the bucket width (seconds) "auto" picks for a span of
 * `span_ms` and at most `max_points` buckets; 1 means raw rows. */
int64_t ems_query_auto_width(int64_t span_ms, int64_t max_points);

#endif
