/* ingest.c: batched, idempotent writing with acks after COMMIT (ingest.h). */
#include "ingest.h"

#include "error.h"
#include "log.h"
#include "status.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ SQL */

/* One statement, one round trip: rows arrive as one binary array per
 * column, ON CONFLICT DO NOTHING makes a replay harmless. The column list,
 * the casts and the unnest parameters come from telemetry_columns.h; the
 * text is built once (build_insert_sql).
 *
 * TimescaleDB: continuous aggregates follow the table by themselves. */
#define SQL_INSERT_HEAD "WITH ins AS ("
#define SQL_INSERT_TAIL " RETURNING 1) SELECT count(*) AS inserted FROM ins"

/* Plain PostgreSQL: the rollup (ems_rollup_step, cloud/db/0003_rollup_queue.pg.sql)
 * covers every bucket before its watermark. A row that lands behind the
 * rollup's mark (backfill, a late packet) queues its (device, minute), in
 * the same statement and so in the same transaction as the row, and a
 * later step recomputes that bucket. Live rows are ahead of the mark: for
 * them this costs one comparison. The queue has no unique key, so this
 * never waits for a rollup step running on another connection. */
#define SQL_INSERT_ROLLUP_TAIL                                                                     \
    " RETURNING device_id, ts),"                                                                   \
    " late AS (INSERT INTO ems_rollup_queue (device_id, bucket)"                                   \
    " SELECT DISTINCT device_id, date_bin('1 minute', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00')"   \
    " FROM ins WHERE ts < (SELECT mark FROM ems_rollup_state))"                                    \
    " SELECT count(*) AS inserted FROM ins"

/* Plain PostgreSQL: the first statement of every inserting transaction.
 * The rollup step waits for the holders of this shared lock before it
 * sweeps minutes, so no insert that read an older mark is still in flight
 * when the sweep takes its snapshot (ems_rollup_barrier_key in 0003). It
 * is its own statement so that the INSERT's snapshot is taken after it. */
static const char SQL_BARRIER[] = "SELECT pg_advisory_xact_lock_shared(7236577003)";

static const char SQL_EVENT[] = "SELECT ems_event($1::jsonb)";

#define NCOLS EMS_INGEST_NCOLS

#define COL_DESC(name, sql_type, kind, present, value)                                             \
    {#name, sql_type, EMS_TCOL_PARAM_##kind, EMS_TCOL_OID_##kind, EMS_TCOL_ARRAY_OID_##kind},
static const ems_ingest_col_t COLS[NCOLS] = {EMS_TELEMETRY_COLUMNS(COL_DESC)};
#undef COL_DESC

#define COL_ARRAY_OID(name, sql_type, kind, present, value) EMS_TCOL_ARRAY_OID_##kind,
static const Oid COL_TYPES[NCOLS] = {EMS_TELEMETRY_COLUMNS(COL_ARRAY_OID)};
#undef COL_ARRAY_OID

/* The statements this writer prepares, by name, on each connection. Which
 * of them the current connection holds is tracked explicitly
 * (ems_ingest.prepared), and so is which prepares a pipeline sent, so the
 * COMMAND_OK answers are matched to the statements they prepared. */
typedef enum { STMT_INSERT, STMT_INSERT_ROLLUP, STMT_EVENT, NSTMT } stmt_t;
static const char *const STMT_NAMES[NSTMT] = {"ems_ins", "ems_ins_rollup", "ems_ev"};

/* telemetry.error_flags bit positions are frozen in the schema (0001_init:
 * ems_fault_names); the C enum's values may change, so bits are mapped by
 * name. */
static const char *const DB_FAULTS[] = {"OVERHEAT",    "UNDERTEMP",    "OVERVOLTAGE", "UNDERVOLTAGE",
                                        "OVERCURRENT", "SENSOR_FAULT", "GRID_FAULT"};

/* ------------------------------------------------------------------ state */

typedef struct {
    ems_telemetry_t t;
    int64_t received_ms;
} row_t;

typedef struct frame {
    struct frame *next;
    ems_ingest_src_t *src;
    uint64_t link_seq;
    uint32_t nrows; /* telemetry rows; 0 for an event */
    uint64_t arrived_ms; /* uv_now when it was queued (batch age) */
    char *event;    /* NUL-terminated JSON of an EVENT, else NULL */
    row_t rows[];
} frame_t;

struct ems_ingest_src {
    ems_ingest_t *g;
    void *ud;
    bool closed;
    unsigned refs; /* frames held + 1 while open */
    bool have_seq;
    uint64_t last_seq;
    /* per batch, while acknowledging */
    uint64_t ack_to;
    ems_ingest_src_t *touched_next;
    bool touched;
};

/* Per-segment outcome while isolating a refused batch. */
typedef struct {
    bool failed;
    bool transient;
    char reason[160];
} seg_t;

struct ems_ingest {
    uv_loop_t *loop;
    ems_pg_t *pg;
    ems_ingest_opts_t o;
    uv_timer_t flush_timer; /* batch age */
    uv_timer_t retry_timer; /* backoff after a failed batch */
    uv_timer_t drain_timer; /* shutdown: polls until everything is written */
    int open_handles;
    void (*closed_cb)(void *);
    void *closed_ud;
    bool closing;

    bool started, rollup;
    /* Prepared on the current connection (cleared by ems_ingest_pg_up), and
     * the prepares the pipeline in flight sent, in order: their answers
     * (COMMAND_OK, no columns) arrive in that order. */
    bool prepared[NSTMT];
    stmt_t prep_sent[NSTMT];
    unsigned nprep_sent, nprep_answered;

    frame_t *head, *tail;
    uint64_t queued_rows;   /* rows + events held, in flight included */
    uint64_t queued_frames;
    uint64_t pending_rows;  /* not in flight */
    bool was_full;

    /* the batch in flight: the first `inflight_frames` frames of the FIFO */
    bool inflight;
    bool waiting_retry;     /* failed; retry timer or pg up will resend */
    unsigned inflight_frames;
    uint64_t inflight_rows;
    uint64_t inflight_started;
    bool isolate;           /* next attempt: one transaction per row/event */
    uint64_t inserted;      /* from the INSERT results of this attempt */
    seg_t *segs;
    unsigned nsegs, seg_cursor;
    bool seg_failed_now;
    unsigned retry_ms;
    ems_pg_req_t req;
    ems_pg_array_t cols[NCOLS];

    void (*drain_cb)(void *);
    void *drain_ud;

    ems_ingest_stats_t st;
};

static void start_batch(ems_ingest_t *g);

/* ------------------------------------------------------------------ sources */

ems_ingest_src_t *ems_ingest_src_new(ems_ingest_t *g, void *ud)
{
    ems_ingest_src_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->g = g;
    s->ud = ud;
    s->refs = 1;
    return s;
}

static void src_unref(ems_ingest_src_t *s)
{
    if (--s->refs == 0)
        free(s);
}

void ems_ingest_src_close(ems_ingest_src_t *s)
{
    if (!s || s->closed)
        return;
    s->closed = true;
    s->ud = NULL;
    src_unref(s);
}

/* ------------------------------------------------------------------ queue */

static int check_seq(ems_ingest_src_t *s, uint64_t link_seq)
{
    if (s->have_seq && link_seq <= s->last_seq) {
        ems_log_warn("ingest: link_seq %llu after %llu: not increasing",
                     (unsigned long long)link_seq, (unsigned long long)s->last_seq);
        return EMS_EPROTO;
    }
    return 0;
}

static void enqueue(ems_ingest_t *g, frame_t *f, uint64_t weight)
{
    f->src->refs++;
    f->src->have_seq = true;
    f->src->last_seq = f->link_seq;
    if (g->tail)
        g->tail->next = f;
    else
        g->head = f;
    g->tail = f;
    f->arrived_ms = uv_now(g->loop);
    g->queued_rows += weight;
    g->queued_frames++;
    g->pending_rows += weight;
    if (ems_ingest_full(g))
        g->was_full = true;
    start_batch(g);
}

int ems_ingest_add_telemetry(ems_ingest_t *g, ems_ingest_src_t *s, const ems_link_frame_t *lf)
{
    ems_link_telemetry_reader_t r;
    if (ems_link_telemetry_open(&r, lf) < 0)
        return EMS_EPROTO;
    int rc = check_seq(s, r.link_seq);
    if (rc < 0)
        return rc;
    frame_t *f = malloc(sizeof *f + (size_t)r.count * sizeof(row_t));
    if (!f)
        return EMS_ENOMEM;
    f->next = NULL;
    f->src = s;
    f->link_seq = r.link_seq;
    f->nrows = r.count;
    f->event = NULL;
    unsigned i = 0;
    while ((rc = ems_link_telemetry_next(&r, &f->rows[i].t, &f->rows[i].received_ms)) == 1)
        i++;
    if (rc < 0 || i != r.count) {
        free(f);
        ems_log_warn("ingest: malformed telemetry frame (link_seq %llu, record %u)",
                     (unsigned long long)r.link_seq, i);
        return EMS_EPROTO;
    }
    g->st.rows_received += f->nrows;
    enqueue(g, f, f->nrows);
    return 0;
}

int ems_ingest_add_event(ems_ingest_t *g, ems_ingest_src_t *s, uint64_t link_seq, const char *json,
                         size_t len)
{
    int rc = check_seq(s, link_seq);
    if (rc < 0)
        return rc;
    if (memchr(json, '\0', len))
        return EMS_EPROTO; /* a text parameter cannot hold NUL */
    frame_t *f = malloc(sizeof *f);
    char *copy = malloc(len + 1);
    if (!f || !copy) {
        free(f);
        free(copy);
        return EMS_ENOMEM;
    }
    memcpy(copy, json, len);
    copy[len] = '\0';
    f->next = NULL;
    f->src = s;
    f->link_seq = link_seq;
    f->nrows = 0;
    f->event = copy;
    enqueue(g, f, 1);
    return 0;
}

bool ems_ingest_full(const ems_ingest_t *g)
{
    return g->queued_rows >= g->o.queue_rows;
}

/* ------------------------------------------------------------------ encoding */

/* C fault bits -> the schema's frozen bit positions, by name. Faults are
 * rare, so the common case (no bits) costs nothing. */
uint32_t ems_ingest_db_faults(uint32_t bits)
{
    uint32_t out = 0;
    for (int i = 0; bits >> i && i < 32; i++) {
        const char *name = (bits >> i) & 1 ? ems_fault_name(1u << i) : NULL;
        for (unsigned k = 0; name && k < sizeof DB_FAULTS / sizeof DB_FAULTS[0]; k++)
            if (!strcmp(name, DB_FAULTS[k]))
                out |= 1u << k;
    }
    return out;
}

/* Appends to `out` (of `cap` bytes, `*len` used) like snprintf; the
 * statements are built once from a fixed table, into buffers sized for it. */
static void sql_cat(char *out, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void sql_cat(char *out, size_t cap, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = *len < cap ? vsnprintf(out + *len, cap - *len, fmt, ap) : 0;
    va_end(ap);
    *len += n > 0 ? (size_t)n : 0;
}

/* INSERT INTO telemetry (cols) SELECT r.col[::type], ... FROM
 * unnest($1::param[], ...) AS r(cols) ON CONFLICT DO NOTHING, wrapped in
 * the CTE of the storage mode. Enum columns travel as text and are cast. */
static void build_insert_sql(char *out, size_t cap, bool rollup)
{
    size_t n = 0;
    sql_cat(out, cap, &n, "%sINSERT INTO telemetry (", SQL_INSERT_HEAD);
    for (int i = 0; i < NCOLS; i++)
        sql_cat(out, cap, &n, "%s%s", i ? ", " : "", COLS[i].name);
    sql_cat(out, cap, &n, ") SELECT ");
    for (int i = 0; i < NCOLS; i++) {
        bool cast = strcmp(COLS[i].sql_type, COLS[i].param_type) != 0;
        sql_cat(out, cap, &n, "%sr.%s%s%s", i ? ", " : "", COLS[i].name, cast ? "::" : "",
                cast ? COLS[i].sql_type : "");
    }
    sql_cat(out, cap, &n, " FROM unnest(");
    for (int i = 0; i < NCOLS; i++)
        sql_cat(out, cap, &n, "%s$%d::%s[]", i ? ", " : "", i + 1, COLS[i].param_type);
    sql_cat(out, cap, &n, ") AS r(");
    for (int i = 0; i < NCOLS; i++)
        sql_cat(out, cap, &n, "%s%s", i ? ", " : "", COLS[i].name);
    sql_cat(out, cap, &n, ") ON CONFLICT DO NOTHING%s",
            rollup ? SQL_INSERT_ROLLUP_TAIL : SQL_INSERT_TAIL);
}

const char *ems_ingest_insert_sql(bool rollup)
{
    /* Built on first use; the writer runs on one thread. 4 KiB holds the
     * 25 columns with room to spare (test_dbw_columns checks the text). */
    static char sql[2][4096];
    if (!sql[rollup][0])
        build_insert_sql(sql[rollup], sizeof sql[rollup], rollup);
    return sql[rollup];
}

const Oid *ems_ingest_col_types(void)
{
    return COL_TYPES;
}

const ems_ingest_col_t *ems_ingest_cols(void)
{
    return COLS;
}

void ems_ingest_cols_reset(ems_pg_array_t cols[EMS_INGEST_NCOLS])
{
    for (int i = 0; i < NCOLS; i++)
        ems_pg_array_reset(&cols[i], COLS[i].elem_oid);
}

bool ems_ingest_energy_ok(const ems_telemetry_t *t)
{
    /* Energy counters in whole mWh (the edge sends at most three decimals
     * of Wh, docs/protocol.md 2.1), all five or none (0005_energy); the
     * gateway checked the range, a bad link record is checked here too. */
    const double e[4] = {t->energy_battery_charged_wh, t->energy_battery_discharged_wh,
                         t->energy_grid_import_wh, t->energy_grid_export_wh};
    bool energy = t->has_energy;
    for (int i = 0; energy && i < 4; i++)
        energy = e[i] >= 0 && e[i] <= EMS_ENERGY_WH_MAX;
    return energy;
}

void ems_ingest_cols_add(ems_pg_array_t cols[EMS_INGEST_NCOLS], const ems_telemetry_t *t,
                         int64_t received_ms)
{
    bool energy = ems_ingest_energy_ok(t);
    ems_pg_array_t *c = cols;
#define COL_PUT(name, sql_type, kind, present, value)                                              \
    if (present)                                                                                   \
        EMS_TCOL_PUT_##kind(c, value);                                                             \
    else                                                                                           \
        ems_pg_array_null(c);                                                                      \
    c++;
    EMS_TELEMETRY_COLUMNS(COL_PUT)
#undef COL_PUT
}

int ems_ingest_cols_params(ems_pg_array_t cols[EMS_INGEST_NCOLS], const char *vals[EMS_INGEST_NCOLS],
                           int lens[EMS_INGEST_NCOLS], int fmts[EMS_INGEST_NCOLS])
{
    for (int i = 0; i < NCOLS; i++) {
        if (ems_pg_array_finish(&cols[i]) < 0)
            return EMS_ENOMEM;
        vals[i] = (const char *)cols[i].data;
        lens[i] = (int)cols[i].len;
        fmts[i] = 1;
    }
    return 0;
}

static void cols_reset(ems_ingest_t *g)
{
    ems_ingest_cols_reset(g->cols);
}

static void cols_add(ems_ingest_t *g, const row_t *r)
{
    ems_ingest_cols_add(g->cols, &r->t, r->received_ms);
}

/* Sends the INSERT for the rows in the column arrays (in plain PostgreSQL
 * mode after the rollup barrier, SQL_BARRIER; each call starts the rows of
 * one transaction). */
static int send_insert(ems_ingest_t *g, PGconn *conn)
{
    const char *vals[NCOLS];
    int lens[NCOLS], fmts[NCOLS];
    if (ems_ingest_cols_params(g->cols, vals, lens, fmts) < 0)
        return EMS_ENOMEM;
    if (g->rollup && PQsendQueryParams(conn, SQL_BARRIER, 0, NULL, NULL, NULL, NULL, 0) != 1)
        return EMS_EDB;
    return PQsendQueryPrepared(conn, STMT_NAMES[g->rollup ? STMT_INSERT_ROLLUP : STMT_INSERT],
                               NCOLS, vals, lens, fmts, 0) == 1
               ? 0
               : EMS_EDB;
}

static int send_event(PGconn *conn, const char *json)
{
    return PQsendQueryPrepared(conn, STMT_NAMES[STMT_EVENT], 1, &json, NULL, NULL, 0) == 1
               ? 0
               : EMS_EDB;
}

/* Sends the prepare of `st` unless this connection holds it already, and
 * notes it, so its answer is matched to it (batch_result). */
static int prepare(ems_ingest_t *g, PGconn *conn, stmt_t st)
{
    if (g->prepared[st])
        return 0;
    const char *sql =
        st == STMT_EVENT ? SQL_EVENT : ems_ingest_insert_sql(st == STMT_INSERT_ROLLUP);
    int n = st == STMT_EVENT ? 1 : NCOLS;
    if (PQsendPrepare(conn, STMT_NAMES[st], sql, n, st == STMT_EVENT ? NULL : COL_TYPES) != 1)
        return EMS_EDB;
    g->prep_sent[g->nprep_sent++] = st;
    return 0;
}

/* The pipeline of one attempt. Normal: prepares (once per connection), one
 * INSERT for all rows, one statement per event, one Sync. Isolating: one
 * Sync per row and per event, so each is its own transaction. */
static int batch_send(ems_pg_req_t *req, PGconn *conn)
{
    ems_ingest_t *g = req->data;
    g->nprep_sent = g->nprep_answered = 0;
    if (prepare(g, conn, g->rollup ? STMT_INSERT_ROLLUP : STMT_INSERT) < 0 ||
        prepare(g, conn, STMT_EVENT) < 0)
        return EMS_EDB;
    unsigned syncs = 0;
    frame_t *f = g->head;
    if (!g->isolate) {
        cols_reset(g);
        unsigned nrows = 0;
        for (unsigned i = 0; i < g->inflight_frames; i++, f = f->next)
            for (uint32_t k = 0; k < f->nrows; k++, nrows++)
                cols_add(g, &f->rows[k]);
        if (nrows && send_insert(g, conn) < 0)
            return EMS_EDB;
        f = g->head;
        for (unsigned i = 0; i < g->inflight_frames; i++, f = f->next)
            if (f->event && send_event(conn, f->event) < 0)
                return EMS_EDB;
        if (PQpipelineSync(conn) != 1)
            return EMS_EDB;
        syncs = 1;
    } else {
        for (unsigned i = 0; i < g->inflight_frames; i++, f = f->next) {
            if (f->event) {
                if (send_event(conn, f->event) < 0 || PQpipelineSync(conn) != 1)
                    return EMS_EDB;
                syncs++;
                continue;
            }
            for (uint32_t k = 0; k < f->nrows; k++) {
                cols_reset(g);
                cols_add(g, &f->rows[k]);
                if (send_insert(g, conn) < 0 || PQpipelineSync(conn) != 1)
                    return EMS_EDB;
                syncs++;
            }
        }
    }
    req->syncs = syncs;
    return 0;
}

static void batch_result(ems_pg_req_t *req, const PGresult *res)
{
    ems_ingest_t *g = req->data;
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK && PQnfields(res) == 0) {
        /* The prepares are the only statements of this pipeline that
         * answer COMMAND_OK with no columns; they answer in the order
         * batch_send sent them. */
        if (g->nprep_answered < g->nprep_sent)
            g->prepared[g->prep_sent[g->nprep_answered++]] = true;
        return;
    }
    if (st == PGRES_TUPLES_OK) {
        if (PQnfields(res) == 1 && !strcmp(PQfname(res, 0), "inserted") && PQntuples(res) == 1)
            g->inserted += strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        return;
    }
    if (!g->isolate)
        return;
    if (st == PGRES_PIPELINE_SYNC) {
        g->seg_cursor++;
        return;
    }
    if ((st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) && g->seg_cursor < g->nsegs) {
        seg_t *s = &g->segs[g->seg_cursor];
        if (s->failed)
            return;
        s->failed = true;
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        s->transient = st == PGRES_PIPELINE_ABORTED || ems_pg_sqlstate_transient(state);
        const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(s->reason, sizeof s->reason, "%s", m ? m : "refused by the database");
    }
}

/* ------------------------------------------------------------------ completion */

static void pop_frame(ems_ingest_t *g)
{
    frame_t *f = g->head;
    g->head = f->next;
    if (!g->head)
        g->tail = NULL;
    g->queued_rows -= f->event ? 1 : f->nrows;
    g->queued_frames--;
    src_unref(f->src);
    free(f->event);
    free(f);
}

/* The batch committed (isolated segments included): reject what failed,
 * acknowledge per source, drop the frames. */
static void batch_committed(ems_ingest_t *g)
{
    uint64_t now = uv_now(g->loop);
    uint64_t ms = now - g->inflight_started;
    g->st.batches++;
    g->st.commit_ms_last = ms;
    g->st.commit_ms_sum += ms;
    if (ms > g->st.commit_ms_max)
        g->st.commit_ms_max = ms;

    ems_ingest_src_t *touched = NULL;
    unsigned seg = 0;
    uint64_t rows = 0, rejected_rows = 0;
    frame_t *f = g->head;
    for (unsigned i = 0; i < g->inflight_frames; i++, f = f->next) {
        ems_ingest_src_t *s = f->src;
        bool live = !s->closed;
        unsigned n = f->event ? 1 : f->nrows;
        for (unsigned k = 0; g->isolate && k < n; k++, seg++) {
            if (!g->segs[seg].failed)
                continue;
            ems_log_warn("ingest: refused for good (link_seq %llu, %s %u): %s",
                         (unsigned long long)f->link_seq, f->event ? "event" : "record", k,
                         g->segs[seg].reason);
            if (f->event)
                g->st.events_rejected++;
            else
                rejected_rows++;
            if (live && g->o.on_reject)
                g->o.on_reject(s->ud, f->link_seq, f->event ? 0 : k, g->segs[seg].reason);
        }
        if (f->event)
            g->st.events_written += g->isolate && g->segs[seg - 1].failed ? 0 : 1;
        rows += f->nrows;
        if (live) {
            s->ack_to = f->link_seq;
            if (!s->touched) {
                s->touched = true;
                s->touched_next = touched;
                touched = s;
            }
        }
    }
    g->st.rows_written += g->inserted;
    g->st.rows_rejected += rejected_rows;
    g->st.rows_duplicate += rows - rejected_rows - g->inserted;
    for (unsigned i = 0; i < g->inflight_frames; i++)
        pop_frame(g); /* sources stay alive: `touched` ones are held below */
    for (ems_ingest_src_t *s = touched, *next; s; s = next) {
        next = s->touched_next; /* on_ack may close (and free) the source */
        s->touched = false;
        if (!s->closed && g->o.on_ack)
            g->o.on_ack(s->ud, s->ack_to);
    }
}

static void end_attempt(ems_ingest_t *g)
{
    g->inflight = false;
    free(g->segs);
    g->segs = NULL;
    g->nsegs = g->seg_cursor = 0;
}

/* The attempt did not commit: its frames count as pending again. */
static void unwind_attempt(ems_ingest_t *g)
{
    end_attempt(g);
    g->pending_rows += g->inflight_rows;
    g->inflight_rows = 0;
    g->inflight_frames = 0;
}

static void retry_cb(uv_timer_t *t)
{
    ems_ingest_t *g = t->data;
    g->waiting_retry = false;
    start_batch(g);
}

static void batch_done(ems_pg_req_t *req, int status)
{
    ems_ingest_t *g = req->data;
    bool isolate_now = g->isolate;
    if (status == 0 && !isolate_now) {
        batch_committed(g);
        end_attempt(g);
        g->retry_ms = 0;
    } else if (isolate_now && status != EMS_ECLOSED) {
        /* Segments ran; any transient failure means: try it all again. */
        bool transient = false;
        for (unsigned i = 0; i < g->nsegs; i++)
            transient |= g->segs[i].failed && g->segs[i].transient;
        if (!transient) {
            batch_committed(g);
            end_attempt(g);
            g->isolate = false;
            g->retry_ms = 0;
        } else {
            g->st.batch_failures++;
            ems_log_warn("ingest: isolated batch hit a transient error; retrying");
            unwind_attempt(g);
            goto retry;
        }
    } else {
        g->st.batch_failures++;
        unwind_attempt(g);
        if (status == EMS_EDB && !ems_pg_sqlstate_transient(req->sqlstate)) {
            ems_log_warn("ingest: batch refused (%s %s); writing its rows one by one",
                         req->sqlstate, req->error);
            g->isolate = true;
            start_batch(g);
            return;
        }
        if (status == EMS_EDB)
            ems_log_warn("ingest: batch failed (%s %s); will retry", req->sqlstate, req->error);
        else
            ems_log_warn("ingest: batch not committed (connection lost); will retry");
        goto retry;
    }
    if (g->was_full && g->queued_rows < g->o.queue_rows / 2) {
        g->was_full = false;
        if (g->o.on_space)
            g->o.on_space(g->o.ud);
    }
    start_batch(g);
    return;
retry:
    /* The batch stays at the head; its frames go out again, with any that
     * arrived since, after a backoff (or as soon as the connection is back). */
    g->retry_ms = g->retry_ms ? (g->retry_ms * 2 > 5000 ? 5000 : g->retry_ms * 2) : 200;
    g->waiting_retry = true;
    if (!g->closing)
        uv_timer_start(&g->retry_timer, retry_cb, g->retry_ms, 0);
}

/* ------------------------------------------------------------------ scheduling */

static void flush_cb(uv_timer_t *t)
{
    start_batch(t->data);
}

/* Starts a batch if one is due: not in flight, schema ready, connection
 * up, and enough rows or old enough (or draining). */
static void start_batch(ems_ingest_t *g)
{
    if (!g->started || g->inflight || g->waiting_retry || g->closing || !g->head)
        return;
    if (!ems_pg_is_up(g->pg))
        return; /* ems_ingest_pg_up resumes */
    uint64_t now = uv_now(g->loop);
    uint64_t oldest = g->head->arrived_ms; /* nothing is in flight */
    bool due = g->pending_rows >= g->o.batch_rows || g->drain_cb || g->isolate ||
               now - oldest >= g->o.batch_ms;
    if (!due) {
        if (!uv_is_active((uv_handle_t *)&g->flush_timer))
            uv_timer_start(&g->flush_timer, flush_cb, oldest + g->o.batch_ms - now, 0);
        return;
    }
    uv_timer_stop(&g->flush_timer);
    /* Whole frames from the head until the batch has batch_rows rows. */
    unsigned nframes = 0;
    uint64_t rows = 0;
    for (frame_t *f = g->head; f && (nframes == 0 || rows < g->o.batch_rows); f = f->next) {
        rows += f->event ? 1 : f->nrows;
        nframes++;
    }
    g->inflight = true;
    g->inflight_frames = nframes;
    g->inflight_rows = rows;
    g->pending_rows -= rows;
    g->inflight_started = now;
    g->inserted = 0;
    if (g->isolate) {
        g->nsegs = (unsigned)rows;
        g->seg_cursor = 0;
        g->segs = calloc(rows, sizeof *g->segs);
        if (!g->segs) {
            g->isolate = false; /* try the whole batch again instead */
        }
    }
    g->req.pipeline = true;
    g->req.send = batch_send;
    g->req.on_result = batch_result;
    g->req.on_done = batch_done;
    g->req.data = g;
    if (ems_pg_submit(g->pg, &g->req) < 0)
        unwind_attempt(g); /* down after all: wait for ems_ingest_pg_up */
}

void ems_ingest_pg_up(ems_ingest_t *g)
{
    memset(g->prepared, 0, sizeof g->prepared);
    if (g->waiting_retry) {
        uv_timer_stop(&g->retry_timer);
        g->waiting_retry = false;
    }
    start_batch(g);
}

void ems_ingest_start(ems_ingest_t *g, bool rollup)
{
    g->started = true;
    g->rollup = rollup;
    start_batch(g);
}

/* ------------------------------------------------------------------ life */

int ems_ingest_new(uv_loop_t *loop, ems_pg_t *pg, const ems_ingest_opts_t *o, ems_ingest_t **out)
{
    ems_ingest_t *g = calloc(1, sizeof *g);
    if (!g)
        return EMS_ENOMEM;
    g->loop = loop;
    g->pg = pg;
    g->o = *o;
    if (!g->o.batch_rows)
        g->o.batch_rows = 2000;
    if (!g->o.batch_ms)
        g->o.batch_ms = 100;
    if (!g->o.queue_rows)
        g->o.queue_rows = 50000;
    for (int i = 0; i < NCOLS; i++) {
        ems_pg_array_init(&g->cols[i], COLS[i].elem_oid);
        if (g->cols[i].error) {
            for (int k = 0; k <= i; k++)
                ems_pg_array_free(&g->cols[k]);
            free(g);
            return EMS_ENOMEM;
        }
    }
    uv_timer_init(loop, &g->flush_timer);
    uv_timer_init(loop, &g->retry_timer);
    uv_timer_init(loop, &g->drain_timer);
    g->flush_timer.data = g->retry_timer.data = g->drain_timer.data = g;
    g->open_handles = 3;
    *out = g;
    return 0;
}

void ems_ingest_stats(const ems_ingest_t *g, ems_ingest_stats_t *out)
{
    *out = g->st;
    out->queue_rows = g->queued_rows;
    out->queue_frames = g->queued_frames;
    out->inflight_rows = g->inflight ? g->inflight_rows : 0;
}

static void drain_check(uv_timer_t *t);

void ems_ingest_drain(ems_ingest_t *g, void (*cb)(void *ud), void *ud)
{
    g->drain_cb = cb;
    g->drain_ud = ud;
    /* Checked from a timer, so the callback never runs inside this call. */
    uv_timer_start(&g->drain_timer, drain_check, 0, 0);
}

static void drain_check(uv_timer_t *t)
{
    ems_ingest_t *g = t->data;
    if (!g->head && !g->inflight) {
        void (*cb)(void *) = g->drain_cb;
        g->drain_cb = NULL;
        if (cb)
            cb(g->drain_ud);
        return;
    }
    start_batch(g);
    uv_timer_start(&g->drain_timer, drain_check, 20, 0);
}

static void ingest_handle_closed(uv_handle_t *h)
{
    ems_ingest_t *g = h->data;
    if (--g->open_handles > 0)
        return;
    while (g->head)
        pop_frame(g);
    for (int i = 0; i < NCOLS; i++)
        ems_pg_array_free(&g->cols[i]);
    free(g->segs);
    if (g->closed_cb)
        g->closed_cb(g->closed_ud);
    free(g);
}

void ems_ingest_close(ems_ingest_t *g, void (*cb)(void *ud), void *ud)
{
    if (g->closing)
        return;
    g->closing = true;
    g->closed_cb = cb;
    g->closed_ud = ud;
    uv_close((uv_handle_t *)&g->flush_timer, ingest_handle_closed);
    uv_close((uv_handle_t *)&g->retry_timer, ingest_handle_closed);
    uv_close((uv_handle_t *)&g->drain_timer, ingest_handle_closed);
}
