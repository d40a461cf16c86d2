/* ingest.h: batched, idempotent writing of telemetry and events, with
 * acknowledgements only after COMMIT.
 *
 * Durable frames from the link (TELEMETRY, EVENT) enter a FIFO. One batch
 * at a time is cut from its head (by size, `batch_rows`, or by age,
 * `batch_ms`) and written in one round trip: a pipeline holding
 *
 *     SELECT pg_advisory_xact_lock_shared(...)   (plain PostgreSQL mode only:
 *       the barrier the rollup step waits on, cloud/db/0003_rollup_queue.pg.sql)
 *     INSERT INTO telemetry ... SELECT FROM unnest($1..$20) ON CONFLICT DO NOTHING
 *       (binary array parameters, one per column; in plain PostgreSQL mode
 *        the same statement queues the (device, minute) of rows that arrive
 *        behind the rollup's mark, so a later ems_rollup_step recomputes
 *        those buckets)
 *     SELECT ems_event($1) for each event
 *     Sync  (the implicit transaction commits here)
 *
 * Only when the Sync result arrives without error are the batch's frames
 * acknowledged, per source (one source = one link connection), with the
 * highest link_seq of that source in the batch. Inserts are idempotent, so
 * a batch whose COMMIT outcome is unknown (connection lost) is simply sent
 * again after reconnecting.
 *
 * Failures:
 *   - connection lost, or a transient error (ems_pg_sqlstate_transient):
 *     the batch stays at the head and is retried with backoff; nothing is
 *     acknowledged meanwhile;
 *   - a permanent error (the data itself; should not happen as the gateway
 *     validates everything): the batch is written again with one
 *     transaction per row and per event (pipeline segments), the refused
 *     ones are reported through on_reject, the rest commit, and the batch
 *     is acknowledged.
 *
 * Backpressure: at most `queue_rows` rows (an event counts as one) are held;
 * ems_ingest_full() tells the caller to stop reading the link, on_space
 * tells it to resume once the queue is below half.
 */
#ifndef EMS_INGEST_H
#define EMS_INGEST_H

#include "link.h"
#include "pg.h"
#include "telemetry_columns.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct ems_ingest ems_ingest_t;
typedef struct ems_ingest_src ems_ingest_src_t;

typedef struct {
    unsigned batch_rows; /* cut a batch at this many rows; 0: 2000 */
    unsigned batch_ms;   /* or when the oldest row waited this long; 0: 100 */
    unsigned queue_rows; /* hold at most this many uncommitted rows; 0: 50000 */
    /* Committed: every frame of this source with link_seq <= `link_seq`. */
    void (*on_ack)(void *src_ud, uint64_t link_seq);
    /* A record (index in its frame) or event (index 0) refused for good;
     * reported before the ACK that covers its frame. */
    void (*on_reject)(void *src_ud, uint64_t link_seq, uint32_t index, const char *reason);
    /* The queue was full and is now below half. */
    void (*on_space)(void *ud);
    void *ud;
} ems_ingest_opts_t;

typedef struct {
    uint64_t rows_received;  /* telemetry records taken from the link */
    uint64_t rows_written;   /* inserted (new) */
    uint64_t rows_duplicate; /* already stored (replays) */
    uint64_t rows_rejected;
    uint64_t events_written;
    uint64_t events_rejected;
    uint64_t batches;        /* committed */
    uint64_t batch_failures; /* attempts that did not commit */
    uint64_t commit_ms_last, commit_ms_max, commit_ms_sum; /* send -> commit */
    uint64_t queue_rows;     /* held now, in flight included */
    uint64_t queue_frames;
    uint64_t inflight_rows;
} ems_ingest_stats_t;

/* Creates the writer on `pg` (borrowed; it must outlive the writer).
 * Nothing is written before ems_ingest_start. Returns 0 or EMS_ENOMEM. */
int ems_ingest_new(uv_loop_t *loop, ems_pg_t *pg, const ems_ingest_opts_t *o, ems_ingest_t **out);

/* The schema is ready: start writing. `rollup` selects the plain
 * PostgreSQL statement, which also marks late rows for the rollup. */
void ems_ingest_start(ems_ingest_t *g, bool rollup);

/* The connection is (again) up: its prepared statements are gone, and a
 * batch waiting for it is sent now. Call from the pg on_up callback. */
void ems_ingest_pg_up(ems_ingest_t *g);

/* A source per link connection; `ud` is passed to on_ack / on_reject. */
ems_ingest_src_t *ems_ingest_src_new(ems_ingest_t *g, void *ud);
/* The connection is gone: its frames are still written (the data is good)
 * but no acknowledgement is reported for them any more. */
void ems_ingest_src_close(ems_ingest_src_t *s);

/* Takes a TELEMETRY frame (decoded and copied). Returns 0, or EMS_EPROTO
 * for a malformed frame or a link_seq that does not increase (the caller
 * closes the connection; nothing of the frame is kept), or EMS_ENOMEM. */
int ems_ingest_add_telemetry(ems_ingest_t *g, ems_ingest_src_t *s, const ems_link_frame_t *f);
/* Takes an EVENT (JSON copied). Same returns. */
int ems_ingest_add_event(ems_ingest_t *g, ems_ingest_src_t *s, uint64_t link_seq, const char *json,
                         size_t len);

bool ems_ingest_full(const ems_ingest_t *g);
void ems_ingest_stats(const ems_ingest_t *g, ems_ingest_stats_t *out);

/* Shutdown, step 1: write everything held now, without waiting for size or
 * age, then call `cb` (from the loop). If PostgreSQL is down the callback
 * waits; the caller bounds that with its own timer. */
void ems_ingest_drain(ems_ingest_t *g, void (*cb)(void *ud), void *ud);

/* Shutdown, step 2: closes the timers and frees everything (what is still
 * held is dropped: it was never acknowledged, so the gateway resends it).
 * Call after the pg connection is closed. `cb` may be NULL. */
void ems_ingest_close(ems_ingest_t *g, void (*cb)(void *ud), void *ud);

/* The insert statement and its row encoding, shared with the benchmark
 * (test/bench/bench_dbwriter.c) so that it measures exactly what the writer
 * sends. The columns are those of telemetry_columns.h, in its order. */
#define EMS_INGEST_NCOLS EMS_TELEMETRY_NCOLS /* 20 measurements + 5 energy (0005_energy) */
typedef struct {
    const char *name;       /* the column */
    const char *sql_type;   /* its PostgreSQL type ("float4", "ems_state") */
    const char *param_type; /* the element type of its array parameter ("text") */
    Oid elem_oid, array_oid;
} ems_ingest_col_t;
const ems_ingest_col_t *ems_ingest_cols(void); /* EMS_INGEST_NCOLS, statement order */
/* The statement (built once, static storage). */
const char *ems_ingest_insert_sql(bool rollup);
const Oid *ems_ingest_col_types(void); /* EMS_INGEST_NCOLS array types */
void ems_ingest_cols_reset(ems_pg_array_t cols[EMS_INGEST_NCOLS]);
void ems_ingest_cols_add(ems_pg_array_t cols[EMS_INGEST_NCOLS], const ems_telemetry_t *t,
                         int64_t received_ms);
/* The five energy columns are stored (all present and in range) or NULL. */
bool ems_ingest_energy_ok(const ems_telemetry_t *t);
/* Finishes the arrays and points the PQexecPrepared parameters at them.
 * Returns 0 or EMS_ENOMEM. */
int ems_ingest_cols_params(ems_pg_array_t cols[EMS_INGEST_NCOLS], const char *vals[EMS_INGEST_NCOLS],
                           int lens[EMS_INGEST_NCOLS], int fmts[EMS_INGEST_NCOLS]);
/* ems_fault_t bits -> telemetry.error_flags (bit positions frozen in 0001_init). */
uint32_t ems_ingest_db_faults(uint32_t bits);

#endif
