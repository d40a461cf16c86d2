/* gw_link.h: the gateway's end of the link to ems-dbwriter (policy).
 *
 * Mechanism (framing, HELLO, the pipe) is common/link.h; this module adds
 * what only the gateway needs (docs/protocol.md section 5.3):
 *
 *   - connecting to the DB writer's Unix socket and reconnecting with
 *     backoff (100 ms doubling to 5 s, full jitter);
 *   - batching telemetry records into TELEMETRY frames (up to `batch`
 *     records, or whatever arrived within `flush_ms`);
 *   - a bounded FIFO of durable frames (TELEMETRY and EVENT) that the DB
 *     writer has not acknowledged. Frames are sent in link_seq order as the
 *     socket takes them (at most ~4 MiB queued at once), kept until the
 *     cumulative ACK covers them, and sent again, in order and with the same
 *     link_seq, after a reconnect. While the link is down records are held
 *     (up to `ring` records); when the FIFO is full gw_link_telemetry
 *     refuses with EMS_ENOSPC, and the caller must then not acknowledge
 *     the packet to the device (backpressure ends at the edge's disk);
 *   - per record, once its frame is acknowledged, the `committed` callback
 *     (with the REJECT reason, if the DB writer refused the record for
 *     good), so the caller can ack or nack the device;
 *   - QUERY/RESULT with callbacks and a 10 s timeout; at most
 *     `max_inflight` queries are at the DB writer at once (it refuses more),
 *     the rest wait in order (at most `max_queries`). Queries made for a
 *     user (REST, gw_link_query_user) are bounded apart, so a crowd of
 *     dashboards asking for history can neither starve the lookups that
 *     let devices in nor flood the link: at most `user_inflight` of them
 *     are at the DB writer at once, at most `user_queue` wait, and one user
 *     holds at most `per_user` (waiting or at the writer). Lookups of the
 *     gateway itself (device_auth, stats) are sent first;
 *   - device credential lookups (gw_link_lookup), batched: the ids asked
 *     for within `lookup_delay_ms` travel as one device_auths query of up
 *     to `lookup_batch` ids (one SQL statement at the DB writer), at most
 *     `lookup_inflight` such queries at once. Lookups wait in a queue of at
 *     most `lookup_queue` for at most `lookup_wait_ms` (also while the link
 *     is down or a batch failed and is retried) instead of failing at once;
 *   - the DB writer's database state (STATUS frames): gw_link_health says
 *     whether it can commit, which is what /healthz answers;
 *   - CREDENTIALS frames: a device's credential changed in the database;
 *     the `credentials` callback tells the device endpoint.
 *
 * The owner of a record is an opaque pointer given with the record and
 * returned in `committed`; it must stay valid until then (or until
 * gw_link_free, which drops every record without callbacks).
 */
#ifndef GW_LINK_H
#define GW_LINK_H

#include "telemetry.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw_link gw_link_t;

typedef struct {
    /* One record of a committed frame. `reject` is NULL normally, or the DB
     * writer's reason when it refused the record for good. */
    void (*committed)(void *ud, void *owner, bool has_seq, uint64_t seq, const char *reject);
    /* The link came up (true) or went down (false). May be NULL. */
    void (*state)(void *ud, bool up);
    /* Every ACK that released at least one frame was processed (the caller
     * flushes the acks it collected). May be NULL. */
    void (*acked)(void *ud);
    /* A device's credential changed in the database: drop its cached
     * credential and re-check its live connection now. `device_id` is NULL
     * for "every device" (the DB writer may have missed changes: it just
     * (re)started listening, or this link was down). May be NULL. */
    void (*credentials)(void *ud, const char *device_id);
} gw_link_cb_t;

typedef struct {
    const char *path;     /* the DB writer's socket */
    size_t ring;          /* records + events held until acknowledged */
    unsigned batch;       /* records per TELEMETRY frame (1..EMS_LINK_RECORDS_MAX) */
    unsigned flush_ms;    /* a partial batch waits at most this long */
    unsigned query_timeout_ms; /* 0: 10000, from the call, waiting included */
    unsigned max_inflight;     /* queries at the DB writer at once; 0: 64 */
    unsigned max_queries;      /* queries waiting or in flight; 0: 50000 */
    unsigned user_inflight;    /* user queries at the DB writer at once; 0: 8 */
    unsigned user_queue;       /* user queries waiting to be sent; 0: 256 */
    unsigned per_user;         /* one user's queries, waiting or sent; 0: 4 */
    unsigned lookup_batch;     /* ids per device_auths query; 0: 256 */
    unsigned lookup_queue;     /* lookups waiting at most; 0: 20000 */
    unsigned lookup_wait_ms;   /* a lookup waits at most this long to be sent; 0: 8000 */
    unsigned lookup_delay_ms;  /* lookups gathered this long before a batch goes; 0: 2 */
    unsigned lookup_inflight;  /* device_auths queries at the DB writer at once; 0: 4 */
    const char *hello_info;    /* JSON object for our HELLO ("accepts" is added) */
} gw_link_opts_t;

/* Result of a query: status 0 and the JSON result, or a negative code
 * (EMS_EAGAIN link down or lost, EMS_ETIMEDOUT, or the DB writer's status)
 * with its {"error": ...} text (or "" for local errors). `json` is valid
 * only during the call. */
typedef void (*gw_link_result_fn)(void *ud, int status, const char *json, size_t len);

/* Creates the link and starts connecting. Returns 0, EMS_ENOMEM or
 * EMS_EINVAL. */
int gw_link_new(uv_loop_t *loop, const gw_link_opts_t *o, const gw_link_cb_t *cb, void *ud,
                gw_link_t **out);

/* Adds one validated packet. Returns 0, EMS_ENOSPC (the FIFO is full: not
 * stored, do not ack) or EMS_ECLOSED (the link is being freed). */
int gw_link_telemetry(gw_link_t *l, void *owner, const ems_telemetry_t *t, int64_t received_ms);

/* Adds one durable EVENT (JSON object, docs/protocol.md 5.4). The batch
 * being built is sealed first, so frames keep their order. Returns 0,
 * EMS_ENOSPC, EMS_EMSGSIZE or EMS_ENOMEM. */
int gw_link_event(gw_link_t *l, const char *json, size_t len);

/* Queues a QUERY; `fn` is called exactly once, never from inside this
 * call. Returns 0, or EMS_EAGAIN when the link is not up or max_queries
 * are waiting (no callback then), or EMS_ENOMEM. */
int gw_link_query(gw_link_t *l, const char *json, size_t len, gw_link_result_fn fn, void *ud);

/* Looks up one device's credential, batched with others (see above).
 * `fn` is called exactly once, never from inside this call, with status 0
 * and the same JSON a device_auth query answers ({"found":true,
 * "device_id":...,"token_hash":...,"revoked":...,"revoked_at":...} or
 * {"found":false}), or with EMS_ETIMEDOUT (not sent within lookup_wait_ms,
 * or the batch's query timed out), the DB writer's error, or EMS_ECLOSED
 * (gw_link_free). Returns 0, EMS_ENOSPC (lookup_queue lookups wait; no
 * callback), EMS_EINVAL (not a device id) or EMS_ENOMEM. The link may be
 * down: the lookup waits for it. */
int gw_link_lookup(gw_link_t *l, const char *device_id, gw_link_result_fn fn, void *ud);

/* Lookups waiting to be sent or in a batch at the DB writer. */
size_t gw_link_lookups_pending(const gw_link_t *l);

/* Refusals of gw_link_query_user besides EMS_EAGAIN (link down):
 * GW_LINK_EUSER: the user already has `per_user` queries; EMS_ENOSPC:
 * `user_queue` queries already wait. */
#define GW_LINK_EUSER (-EDQUOT)

/* Queues a QUERY on behalf of `user` (the session's user name; "" counts
 * as one anonymous user). Same contract as gw_link_query, plus the bounds
 * above: returns 0, EMS_EAGAIN, GW_LINK_EUSER, EMS_ENOSPC or EMS_ENOMEM. */
int gw_link_query_user(gw_link_t *l, const char *user, const char *json, size_t len,
                       gw_link_result_fn fn, void *ud);

/* How to answer a request whose query was refused with `rc`: returns the
 * HTTP status (429 for GW_LINK_EUSER, else 503), writes a message naming
 * the limit to `msg` and the seconds to put in Retry-After. */
int gw_link_refusal(const gw_link_t *l, int rc, const char *user, char *msg, size_t cap,
                    unsigned *retry_after_s);

/* What /healthz answers: 200 when the DB writer reports that it can commit
 * (its database is reachable, the migrations are applied, commits do not
 * fail), else 503; the JSON body (at most `cap` bytes, NUL-terminated) says
 * which part is missing: the DB writer link, the database (with its error)
 * or the migrations. */
int gw_link_health(const gw_link_t *l, char *body, size_t cap);

/* Seals the batch being built so it is sent now. */
void gw_link_flush(gw_link_t *l);

bool gw_link_up(const gw_link_t *l);
/* Records and events held (sent or not) until acknowledged. */
size_t gw_link_held(const gw_link_t *l);
size_t gw_link_capacity(const gw_link_t *l);
/* Queries waiting for their result. */
size_t gw_link_pending_queries(const gw_link_t *l);

typedef struct {
    uint64_t frames_sent, records_sent, records_committed, records_rejected, events_committed;
    uint64_t refused_full, reconnects, queries, query_errors;
    uint64_t queries_refused_user, queries_refused_queue; /* GW_LINK_EUSER, EMS_ENOSPC */
    uint64_t credential_changes;                          /* CREDENTIALS frames */
    uint64_t lookups, lookup_batches;   /* credential lookups asked; device_auths queries sent */
    uint64_t lookups_expired;           /* not answered within lookup_wait_ms */
    uint64_t lookups_refused;           /* lookup_queue full */
    uint64_t lookups_retried;           /* sent again after a failed batch */
} gw_link_stats_t;
void gw_link_stats(const gw_link_t *l, gw_link_stats_t *out);

/* Closes the connection and the timers. Pending queries get EMS_ECLOSED
 * (from this call); held records are dropped without callbacks. `done`
 * runs once every handle is closed; the link is freed right before it. */
void gw_link_free(gw_link_t *l, void (*done)(void *arg), void *arg);

#endif
