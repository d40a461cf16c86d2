/* pg.h: an asynchronous PostgreSQL connection on a libuv loop.
 *
 * A small state machine around libpq's non-blocking API, driven by a
 * uv_poll_t on the connection's socket: PQconnectStartParams/PQconnectPoll
 * (re-checking PQsocket after every step, since libpq may open a new socket
 * while it tries hosts or SSL modes), then PQsend* + PQflush, and
 * PQconsumeInput + PQisBusy + PQgetResult until the request is complete.
 * Nothing on the loop thread ever blocks on the server.
 *
 * The connection runs one request at a time, in submission order. A request
 * is a caller-owned struct with three callbacks: `send` issues the libpq
 * calls (one query, or several in pipeline mode followed by
 * PQpipelineSync), `on_result` sees each result, `on_done` reports the end.
 * In pipeline mode the statements up to the Sync form one implicit
 * transaction: they commit together when the Sync is processed, or roll
 * back together on the first error. That is how the DB writer commits a
 * batch in one round trip.
 *
 * When the server goes away the connection reports "down", fails the
 * running and queued requests with EMS_ECLOSED, and reconnects with
 * exponential backoff and +-20% jitter (backoff_min_ms doubling to
 * backoff_max_ms); "up" is reported again after each successful connect.
 * The backoff starts from the minimum again only after a connection that
 * stayed up for 10 s is lost, so a server that accepts a session and then
 * drops it at once (a FATAL error) is not retried in a tight loop. A
 * failure that repeats the previous message is logged once, then as a
 * count ("still failing: N attempts, last: ...") at most once a minute.
 * Retrying a failed request is the caller's policy.
 *
 * Knows nothing about batteries or the schema (mechanism, not policy).
 */
#ifndef EMS_PG_H
#define EMS_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct ems_pg ems_pg_t;
typedef struct ems_pg_req ems_pg_req_t;

struct ems_pg_req {
    /* Set by the caller before ems_pg_submit. */
    bool pipeline; /* send() runs in pipeline mode and ends with PQpipelineSync */
    /* Issues the request on `conn` (already non-blocking). In pipeline mode
     * it must set `syncs` to the number of PQpipelineSync calls it made
     * (>= 1); each Sync ends one implicit transaction. Returns 0, or a
     * negative code if a PQsend* call failed (the driver then treats the
     * connection as broken and fails the request with EMS_ECLOSED). */
    int (*send)(ems_pg_req_t *r, PGconn *conn);
    unsigned syncs;
    /* Optional: every result (OK or error), in order, including one
     * PGRES_PIPELINE_SYNC per Sync, which marks where a transaction ended.
     * The driver clears `res` after the call; copy what you need. */
    void (*on_result)(ems_pg_req_t *r, const PGresult *res);
    /* Exactly once per submitted request: 0 when every result was OK;
     * EMS_EDB when the server refused a statement (connection still fine;
     * `sqlstate` and `error` hold the first error; in pipeline mode the
     * whole transaction was rolled back); EMS_ECLOSED when the connection
     * was lost or closed first (the outcome of a COMMIT is then unknown). */
    void (*on_done)(ems_pg_req_t *r, int status);
    void *data; /* for the caller */

    /* Filled by the driver. */
    char sqlstate[6];
    char error[256];
    ems_pg_req_t *next;
};

typedef struct {
    const char *conninfo;  /* DSN or URI; NULL or "" uses libpq's PG* variables */
    const char *name;      /* for log lines, e.g. "pg ingest" */
    const char *app_name;  /* application_name, e.g. "ems-dbwriter" */
    const char *options;   /* libpq "options" (e.g. "-c statement_timeout=30000"), or NULL */
    unsigned backoff_min_ms; /* 0: 100 */
    unsigned backoff_max_ms; /* 0: 30000 */
    /* Connected (again). The caller may submit from here. */
    void (*on_up)(ems_pg_t *pg, void *ud);
    /* Lost, or a connect attempt failed (`why` is libpq's message). */
    void (*on_down)(ems_pg_t *pg, void *ud, const char *why);
    /* Optional: a NOTIFY arrived on a channel this connection LISTENs to
     * (the caller issues LISTEN, again after every on_up). `payload` may be
     * "". Valid during the call only. */
    void (*on_notify)(ems_pg_t *pg, void *ud, const char *channel, const char *payload);
    void *ud;
} ems_pg_opts_t;

/* Creates the connection and starts connecting. Strings in `o` are copied.
 * Returns 0 or EMS_ENOMEM. */
int ems_pg_new(uv_loop_t *loop, const ems_pg_opts_t *o, ems_pg_t **out);

/* Queues a request. Returns 0, or EMS_EAGAIN when the connection is not up
 * (nothing queued, no callback), or EMS_ECLOSED when closing. */
int ems_pg_submit(ems_pg_t *pg, ems_pg_req_t *r);

bool ems_pg_is_up(const ems_pg_t *pg);

/* While down and waiting out its backoff: try to connect now (another
 * connection to the same server just succeeded, so the server is back). */
void ems_pg_retry_now(ems_pg_t *pg);
/* True when a request is running or queued. */
bool ems_pg_busy(const ems_pg_t *pg);
/* Successful connects after the first one. */
uint64_t ems_pg_reconnects(const ems_pg_t *pg);

/* Closes: queued and running requests end with EMS_ECLOSED, the socket is
 * closed, and `on_closed` (may be NULL) runs from the loop once every handle
 * is closed; the memory is freed after it. Safe from inside callbacks. */
void ems_pg_close(ems_pg_t *pg, void (*on_closed)(void *ud), void *ud);

/* Class of a SQLSTATE: true for errors that may go away by themselves
 * (connection, serialization, deadlock, resources, shutdown, system, and
 * "undefined table/function" while a migration is missing), false for
 * errors that the same input will always cause again (data exceptions,
 * integrity violations). */
bool ems_pg_sqlstate_transient(const char *sqlstate);

/* Binary array parameters for PQsendQueryParams (format 1), built column
 * by column: one value per row, then ems_pg_array_finish. Elements are
 * stored in network byte order as the server expects. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
    uint32_t count;
    uint32_t elem_oid;
    bool has_null;
    int error; /* sticky EMS_ENOMEM */
} ems_pg_array_t;

void ems_pg_array_init(ems_pg_array_t *a, uint32_t elem_oid);
void ems_pg_array_reset(ems_pg_array_t *a, uint32_t elem_oid); /* keeps memory */
void ems_pg_array_free(ems_pg_array_t *a);
void ems_pg_array_null(ems_pg_array_t *a);
void ems_pg_array_bytes(ems_pg_array_t *a, const void *p, uint32_t n); /* text, enum label */
void ems_pg_array_i16(ems_pg_array_t *a, int16_t v);
void ems_pg_array_i32(ems_pg_array_t *a, int32_t v);
void ems_pg_array_i64(ems_pg_array_t *a, int64_t v);
void ems_pg_array_f32(ems_pg_array_t *a, float v);
void ems_pg_array_bool(ems_pg_array_t *a, bool v);
/* timestamptz from Unix milliseconds. */
void ems_pg_array_ts_ms(ems_pg_array_t *a, int64_t unix_ms);
/* Writes the array header (dimensions, null flag, element type) in front
 * of the elements. Returns 0 or EMS_ENOMEM; afterwards data/len are the
 * parameter value. Call once, after the last element. */
int ems_pg_array_finish(ems_pg_array_t *a);

/* Element type OIDs (pg_type.dat) and the matching array type OIDs. */
#define EMS_PG_OID_BOOL 16
#define EMS_PG_OID_INT8 20
#define EMS_PG_OID_INT2 21
#define EMS_PG_OID_INT4 23
#define EMS_PG_OID_TEXT 25
#define EMS_PG_OID_FLOAT4 700
#define EMS_PG_OID_TIMESTAMPTZ 1184
#define EMS_PG_OID_BOOL_ARRAY 1000
#define EMS_PG_OID_INT2_ARRAY 1005
#define EMS_PG_OID_INT4_ARRAY 1007
#define EMS_PG_OID_TEXT_ARRAY 1009
#define EMS_PG_OID_INT8_ARRAY 1016
#define EMS_PG_OID_FLOAT4_ARRAY 1021
#define EMS_PG_OID_TIMESTAMPTZ_ARRAY 1185

#endif
