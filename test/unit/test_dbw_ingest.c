/* Unit tests: the DB writer's ingest (cloud/dbwriter/ingest.c) against a
 * fake driver, no PostgreSQL.
 *
 * ingest.c is compiled into this file (h2o's way of reaching a module's
 * insides) with its calls into the pg driver (ems_pg_submit, ems_pg_is_up)
 * and into libpq (the PQsend* calls its pipeline makes, the PQresult*
 * accessors it reads answers with) renamed to the fakes below. The fake
 * driver runs a request's send() at once and records what it issued:
 * prepares, INSERTs (with the row count of their array parameters),
 * events and Syncs. A test then answers the request as the server would,
 * result by result and then on_done, with a commit, a refused statement
 * (the rest of its transaction aborted, as in pipeline mode) or a lost
 * connection. The archive's ingest.o is not linked: every symbol it
 * defines is defined here first.
 *
 * What is proven is what the gateway relies on: a batch is cut by rows or
 * by age; frames are acknowledged per source only after the commit; a
 * batch that did not commit is sent again and acknowledged only then; a
 * refused batch is written row by row and the refused rows are reported
 * before the ACK; replayed rows count as duplicates and are acknowledged;
 * the queue says full at queue_rows and calls on_space below half. */
#define ems_pg_submit fake_pg_submit
#define ems_pg_is_up fake_pg_is_up
#define PQsendPrepare fake_PQsendPrepare
#define PQsendQueryPrepared fake_PQsendQueryPrepared
#define PQsendQueryParams fake_PQsendQueryParams
#define PQpipelineSync fake_PQpipelineSync
#define PQresultStatus fake_PQresultStatus
#define PQresultErrorField fake_PQresultErrorField
#define PQntuples fake_PQntuples
#define PQnfields fake_PQnfields
#define PQfname fake_PQfname
#define PQgetvalue fake_PQgetvalue
#include "../../cloud/dbwriter/ingest.c"

#include "ems_test.h"

#include "link.h"

/* ------------------------------------------------------------------ the fake driver */

typedef enum { OP_PREPARE, OP_BARRIER, OP_INSERT, OP_EVENT, OP_SYNC } op_kind_t;

typedef struct {
    op_kind_t kind;
    char name[32]; /* statement name (prepare, insert, event) */
    uint32_t rows; /* OP_INSERT: elements of its array parameters */
} op_t;

#define MAX_OPS 256

static struct {
    bool up;
    ems_pg_req_t *req; /* submitted, not answered yet */
    unsigned submits;
    op_t ops[MAX_OPS];
    unsigned nops;
    int fail_send_at; /* -1, or the op index whose PQsend* call fails */
} F;

/* A result as the fake server gives it; PGresult is opaque to libpq's
 * users, so the test may say what it is. */
struct pg_result {
    ExecStatusType status;
    char fname[32];
    int nfields, ntuples;
    char value[32];
    char sqlstate[6];
    char message[64];
};

static int add_op(PGconn *conn, op_kind_t kind, const char *name, uint32_t rows)
{
    EMS_CHECK(conn != NULL);
    EMS_CHECK(F.nops < MAX_OPS);
    if (F.fail_send_at >= 0 && (unsigned)F.fail_send_at == F.nops)
        return 0;
    op_t *o = &F.ops[F.nops++];
    o->kind = kind;
    snprintf(o->name, sizeof o->name, "%s", name ? name : "");
    o->rows = rows;
    return 1;
}

int fake_PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, int nParams,
                       const Oid *paramTypes)
{
    (void)query;
    (void)nParams;
    (void)paramTypes;
    return add_op(conn, OP_PREPARE, stmtName, 0);
}

static uint32_t be32(const char *p)
{
    const uint8_t *u = (const uint8_t *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

int fake_PQsendQueryPrepared(PGconn *conn, const char *stmtName, int nParams,
                             const char *const *paramValues, const int *paramLengths,
                             const int *paramFormats, int resultFormat)
{
    (void)resultFormat;
    if (!strcmp(stmtName, STMT_NAMES[STMT_EVENT])) {
        EMS_CHECK_INT(nParams, ==, 1);
        return add_op(conn, OP_EVENT, stmtName, 0);
    }
    /* An INSERT: every column is one binary array of the same length. */
    EMS_CHECK_INT(nParams, ==, NCOLS);
    uint32_t rows = 0;
    for (int i = 0; i < nParams; i++) {
        EMS_CHECK_INT(paramFormats[i], ==, 1);
        EMS_CHECK(paramLengths[i] >= 12);
        uint32_t n = be32(paramValues[i]) == 0 ? 0 : be32(paramValues[i] + 12);
        if (i == 0)
            rows = n;
        EMS_CHECK_INT(n, ==, rows);
    }
    return add_op(conn, OP_INSERT, stmtName, rows);
}

int fake_PQsendQueryParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
                           const char *const *paramValues, const int *paramLengths,
                           const int *paramFormats, int resultFormat)
{
    (void)command;
    (void)nParams;
    (void)paramTypes;
    (void)paramValues;
    (void)paramLengths;
    (void)paramFormats;
    (void)resultFormat;
    return add_op(conn, OP_BARRIER, "", 0);
}

int fake_PQpipelineSync(PGconn *conn)
{
    return add_op(conn, OP_SYNC, "", 0);
}

ExecStatusType fake_PQresultStatus(const PGresult *res)
{
    return res->status;
}

char *fake_PQresultErrorField(const PGresult *res, int fieldcode)
{
    if (res->status != PGRES_FATAL_ERROR)
        return NULL;
    if (fieldcode == PG_DIAG_SQLSTATE)
        return (char *)res->sqlstate;
    if (fieldcode == PG_DIAG_MESSAGE_PRIMARY)
        return (char *)res->message;
    return NULL;
}

int fake_PQntuples(const PGresult *res)
{
    return res->ntuples;
}

int fake_PQnfields(const PGresult *res)
{
    return res->nfields;
}

char *fake_PQfname(const PGresult *res, int field_num)
{
    EMS_CHECK_INT(field_num, <, res->nfields);
    return (char *)res->fname;
}

char *fake_PQgetvalue(const PGresult *res, int tup_num, int field_num)
{
    EMS_CHECK_INT(tup_num, <, res->ntuples);
    EMS_CHECK_INT(field_num, <, res->nfields);
    return (char *)res->value;
}

static PGconn *const FAKE_CONN = (PGconn *)&F; /* never dereferenced by the fakes */

bool fake_pg_is_up(const ems_pg_t *pg)
{
    (void)pg;
    return F.up;
}

/* Runs send() at once; its outcome waits for answer(), drop() or the like. */
int fake_pg_submit(ems_pg_t *pg, ems_pg_req_t *r)
{
    (void)pg;
    if (!F.up)
        return EMS_EAGAIN;
    EMS_CHECK(F.req == NULL); /* the writer has one batch in flight at most */
    EMS_CHECK(r->pipeline);
    F.req = r;
    F.submits++;
    F.nops = 0;
    r->syncs = 0;
    r->sqlstate[0] = r->error[0] = '\0';
    if (r->send(r, FAKE_CONN) < 0) {
        /* The driver treats the connection as broken. */
        F.req = NULL;
        r->on_done(r, EMS_ECLOSED);
        return 0;
    }
    unsigned syncs = 0;
    for (unsigned i = 0; i < F.nops; i++)
        syncs += F.ops[i].kind == OP_SYNC;
    EMS_CHECK_INT(r->syncs, ==, syncs);
    EMS_CHECK(syncs >= 1);
    EMS_CHECK(F.ops[F.nops - 1].kind == OP_SYNC);
    return 0;
}

/* ------------------------------------------------------------------ the writer's side */

static struct {
    unsigned acks, rejects, spaces;
    uint64_t acked[2]; /* per source: the last ack */
    unsigned nacks[2];
    uint64_t reject_seq[16];
    uint32_t reject_idx[16];
    unsigned acks_at_reject[16];
} W;

static int SRC_A = 0, SRC_B = 1;

static void on_ack(void *ud, uint64_t link_seq)
{
    int i = *(int *)ud;
    /* The commit is reported to the driver's caller first: an ACK while a
     * request is still unanswered came before its COMMIT. */
    EMS_CHECK(F.req == NULL);
    EMS_CHECK(link_seq > W.acked[i] || W.nacks[i] == 0);
    W.acked[i] = link_seq;
    W.nacks[i]++;
    W.acks++;
}

static void on_reject(void *ud, uint64_t link_seq, uint32_t index, const char *reason)
{
    (void)ud;
    EMS_CHECK(reason && reason[0]);
    EMS_CHECK(W.rejects < 16);
    W.reject_seq[W.rejects] = link_seq;
    W.reject_idx[W.rejects] = index;
    W.acks_at_reject[W.rejects] = W.acks;
    W.rejects++;
}

static void on_space(void *ud)
{
    (void)ud;
    W.spaces++;
}

typedef struct {
    uv_loop_t loop;
    ems_ingest_t *g;
    ems_ingest_src_t *a, *b;
} fx_t;

static void fx_open(fx_t *fx, unsigned batch_rows, unsigned batch_ms, unsigned queue_rows)
{
    memset(&F, 0, sizeof F);
    memset(&W, 0, sizeof W);
    F.up = true;
    F.fail_send_at = -1;
    EMS_CHECK_INT(uv_loop_init(&fx->loop), ==, 0);
    ems_ingest_opts_t o = {.batch_rows = batch_rows,
                           .batch_ms = batch_ms,
                           .queue_rows = queue_rows,
                           .on_ack = on_ack,
                           .on_reject = on_reject,
                           .on_space = on_space};
    /* The fakes never look at the connection handle. */
    EMS_CHECK_INT(ems_ingest_new(&fx->loop, (ems_pg_t *)&F, &o, &fx->g), ==, 0);
    fx->a = ems_ingest_src_new(fx->g, &SRC_A);
    fx->b = ems_ingest_src_new(fx->g, &SRC_B);
    EMS_CHECK(fx->a && fx->b);
    ems_ingest_start(fx->g, false);
}

static void on_closed(void *ud)
{
    *(bool *)ud = true;
}

/* Closes like dbw.c does and proves nothing is left on the loop. */
static void fx_close(fx_t *fx)
{
    ems_ingest_src_close(fx->a);
    ems_ingest_src_close(fx->b);
    bool closed = false;
    ems_ingest_close(fx->g, on_closed, &closed);
    EMS_CHECK_INT(uv_run(&fx->loop, UV_RUN_DEFAULT), ==, 0);
    EMS_CHECK(closed);
    EMS_CHECK_INT(uv_loop_close(&fx->loop), ==, 0);
}

static ems_telemetry_t sample(const char *dev, uint64_t seq)
{
    ems_telemetry_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.device_id, sizeof t.device_id, "%s", dev);
    t.timestamp_ms = 1769860800000LL + (int64_t)seq * 1000;
    t.state = EMS_STATE_CHARGING;
    t.mode = EMS_MODE_AUTO;
    t.battery_voltage = 53.2;
    t.battery_current = 10.5;
    t.battery_power = 558.6;
    t.battery_soc = 85.0;
    t.grid_voltage = 230.1;
    t.grid_power = -200;
    t.grid_frequency = 50.0;
    t.has_seq = true;
    t.seq = seq;
    return t;
}

/* Adds a TELEMETRY frame of `rows` records to `s`, as the link delivers it. */
static int add_rows(fx_t *fx, ems_ingest_src_t *s, uint64_t link_seq, unsigned rows)
{
    ems_buf_t b;
    ems_buf_init(&b, EMS_BUF_UNBOUNDED);
    size_t mark;
    EMS_CHECK_INT(ems_link_telemetry_begin(&b, link_seq, &mark), ==, 0);
    for (unsigned i = 0; i < rows; i++) {
        ems_telemetry_t t = sample("dev_1", link_seq * 1000 + i);
        EMS_CHECK_INT(ems_link_telemetry_add(&b, mark, &t, t.timestamp_ms + 20), ==, 0);
    }
    EMS_CHECK_INT(ems_link_telemetry_end(&b, mark), ==, 0);
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 0);
    EMS_CHECK_INT(ems_link_decoder_feed(&d, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
    ems_link_frame_t f;
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, 1);
    EMS_CHECK_INT(f.kind, ==, EMS_LINK_TELEMETRY);
    int rc = ems_ingest_add_telemetry(fx->g, s, &f);
    ems_link_decoder_free(&d);
    ems_buf_free(&b);
    return rc;
}

static int add_event(fx_t *fx, ems_ingest_src_t *s, uint64_t link_seq)
{
    const char *json = "{\"type\":\"alarm.raised\"}";
    return ems_ingest_add_event(fx->g, s, link_seq, json, strlen(json));
}

/* Rows in the INSERTs and statements of each kind the request in flight sent. */
static uint32_t sent_rows(void)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < F.nops; i++)
        n += F.ops[i].kind == OP_INSERT ? F.ops[i].rows : 0;
    return n;
}

static unsigned sent(op_kind_t kind)
{
    unsigned n = 0;
    for (unsigned i = 0; i < F.nops; i++)
        n += F.ops[i].kind == kind;
    return n;
}

/* The index of the nth (from 1) statement of `kind` in the request in flight. */
static int op_index(op_kind_t kind, unsigned nth)
{
    unsigned seen = 0;
    for (unsigned i = 0; i < F.nops; i++)
        if (F.ops[i].kind == kind && ++seen == nth)
            return (int)i;
    EMS_FAIL("the request has no statement %u of kind %d", nth, (int)kind);
}

/* Answers the request in flight as the server does in pipeline mode: a
 * result per statement and one per Sync. The statements whose indices are
 * in `fail` (a -1 ends the list; NULL: none) are refused with `sqlstate`,
 * the rest of their transaction is aborted. Each INSERT reports
 * `new_rows` of its rows as new (-1: all of them). on_done follows: 0, or
 * EMS_EDB with the first error. */
static void answer(const int *fail, const char *sqlstate, int new_rows)
{
    ems_pg_req_t *r = F.req;
    EMS_CHECK(r != NULL);
    unsigned acks = W.acks;
    bool aborted = false, any = false;
    for (unsigned i = 0; i < F.nops; i++) {
        const op_t *o = &F.ops[i];
        struct pg_result res;
        memset(&res, 0, sizeof res);
        bool failed = false;
        for (const int *k = fail; k && *k >= 0; k++)
            failed |= (unsigned)*k == i;
        if (o->kind == OP_SYNC) {
            res.status = PGRES_PIPELINE_SYNC;
            aborted = false;
        } else if (aborted) {
            res.status = PGRES_PIPELINE_ABORTED;
        } else if (failed) {
            res.status = PGRES_FATAL_ERROR;
            snprintf(res.sqlstate, sizeof res.sqlstate, "%s", sqlstate);
            snprintf(res.message, sizeof res.message, "refused by the fake (%s)", sqlstate);
            if (!any) {
                snprintf(r->sqlstate, sizeof r->sqlstate, "%s", sqlstate);
                snprintf(r->error, sizeof r->error, "%s", res.message);
            }
            aborted = any = true;
        } else if (o->kind == OP_PREPARE) {
            res.status = PGRES_COMMAND_OK;
        } else {
            res.status = PGRES_TUPLES_OK;
            res.nfields = res.ntuples = 1;
            if (o->kind == OP_INSERT) {
                snprintf(res.fname, sizeof res.fname, "inserted");
                snprintf(res.value, sizeof res.value, "%u",
                         new_rows < 0 || (uint32_t)new_rows > o->rows ? o->rows
                                                                      : (unsigned)new_rows);
            } else {
                snprintf(res.fname, sizeof res.fname, "%s",
                         o->kind == OP_EVENT ? "ems_event" : "pg_advisory_xact_lock_shared");
            }
        }
        r->on_result(r, &res);
        EMS_CHECK_INT(W.acks, ==, acks); /* no ACK before on_done */
    }
    F.req = NULL;
    r->on_done(r, any ? EMS_EDB : 0);
}

static void commit(void)
{
    answer(NULL, NULL, -1);
}

/* The connection went away with the request unanswered: the COMMIT's
 * outcome is unknown. */
static void drop(void)
{
    ems_pg_req_t *r = F.req;
    EMS_CHECK(r != NULL);
    F.req = NULL;
    F.up = false;
    r->on_done(r, EMS_ECLOSED);
}

static void up(fx_t *fx)
{
    F.up = true;
    ems_ingest_pg_up(fx->g);
}

/* Runs the loop until a request is submitted (or `ms` pass). */
static void run_until_submitted(fx_t *fx, unsigned ms)
{
    uint64_t end = uv_now(&fx->loop) + ms;
    while (!F.req && uv_now(&fx->loop) < end) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        usleep(2000);
        uv_update_time(&fx->loop);
    }
}

/* ------------------------------------------------------------------ tests */

/* A batch is cut at batch_rows (whole frames) without waiting, and the
 * rows behind it wait for the commit of the one in flight. */
static void test_batch_by_rows(void)
{
    fx_t fx;
    fx_open(&fx, 10, 60000, 1000);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 1, 4), ==, 0);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 2, 4), ==, 0);
    EMS_CHECK(F.req == NULL); /* 8 < 10 rows, and the minute is far */
    EMS_CHECK_INT(add_rows(&fx, fx.a, 3, 4), ==, 0);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK_INT(F.submits, ==, 1);
    EMS_CHECK_INT(sent_rows(), ==, 12); /* whole frames: 4 + 4 + 4 */
    EMS_CHECK_INT(sent(OP_INSERT), ==, 1);
    EMS_CHECK_INT(sent(OP_SYNC), ==, 1);
    EMS_CHECK_INT(sent(OP_PREPARE), ==, 2); /* the insert and the event, once */
    /* One batch in flight: more rows wait (the fake checks there is one). */
    for (uint64_t k = 4; k < 9; k++)
        EMS_CHECK_INT(add_rows(&fx, fx.a, k, 3), ==, 0);
    EMS_CHECK_INT(F.submits, ==, 1);
    commit();
    EMS_CHECK_INT(W.acks, ==, 1);
    EMS_CHECK_INT(W.acked[0], ==, 3);
    /* Of the 15 rows held, whole frames up to 10 rows (12) went out at
     * once, without the prepares; the last 3 wait for more or for age. */
    EMS_CHECK_INT(F.submits, ==, 2);
    EMS_CHECK_INT(sent_rows(), ==, 12);
    EMS_CHECK_INT(sent(OP_PREPARE), ==, 0);
    commit();
    EMS_CHECK_INT(W.acked[0], ==, 7);
    EMS_CHECK(F.req == NULL);
    ems_ingest_stats_t st;
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.rows_received, ==, 27);
    EMS_CHECK_INT(st.rows_written, ==, 24);
    EMS_CHECK_INT(st.batches, ==, 2);
    EMS_CHECK_INT(st.queue_rows, ==, 3);
    fx_close(&fx); /* never acknowledged: the gateway sends them again */
}

/* Fewer rows than batch_rows go out once the oldest waited batch_ms. */
static void test_batch_by_time(void)
{
    fx_t fx;
    fx_open(&fx, 1000, 40, 5000);
    uv_update_time(&fx.loop);
    uint64_t t0 = uv_now(&fx.loop);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 1, 3), ==, 0);
    EMS_CHECK_INT(add_event(&fx, fx.a, 2), ==, 0);
    EMS_CHECK(F.req == NULL);
    run_until_submitted(&fx, 2000);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK(uv_now(&fx.loop) - t0 >= 40);
    EMS_CHECK_INT(sent_rows(), ==, 3);
    EMS_CHECK_INT(sent(OP_EVENT), ==, 1);
    EMS_CHECK_INT(W.acks, ==, 0);
    commit();
    EMS_CHECK_INT(W.acks, ==, 1);
    EMS_CHECK_INT(W.acked[0], ==, 2); /* the event's link_seq covers both */
    ems_ingest_stats_t st;
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.events_written, ==, 1);
    fx_close(&fx);
}

/* Acknowledgements follow the commit, per source, with the highest
 * link_seq of each in the batch; a closed source gets none but its rows
 * are written. */
static void test_ack_after_commit_per_source(void)
{
    fx_t fx;
    fx_open(&fx, 8, 60000, 1000);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 10, 2), ==, 0);
    EMS_CHECK_INT(add_rows(&fx, fx.b, 5, 2), ==, 0);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 11, 2), ==, 0);
    EMS_CHECK_INT(add_rows(&fx, fx.b, 6, 2), ==, 0);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK_INT(W.acks, ==, 0); /* sent is not committed */
    commit();
    EMS_CHECK_INT(W.acks, ==, 2);
    EMS_CHECK_INT(W.nacks[0], ==, 1);
    EMS_CHECK_INT(W.nacks[1], ==, 1);
    EMS_CHECK_INT(W.acked[0], ==, 11);
    EMS_CHECK_INT(W.acked[1], ==, 6);

    /* b goes away with a batch in flight: a is acked, b is not. */
    EMS_CHECK_INT(add_rows(&fx, fx.a, 12, 4), ==, 0);
    EMS_CHECK_INT(add_rows(&fx, fx.b, 7, 4), ==, 0);
    EMS_CHECK(F.req != NULL);
    ems_ingest_src_close(fx.b);
    fx.b = NULL;
    commit();
    EMS_CHECK_INT(W.acks, ==, 3);
    EMS_CHECK_INT(W.acked[0], ==, 12);
    EMS_CHECK_INT(W.nacks[1], ==, 1);
    ems_ingest_stats_t st;
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.rows_written, ==, 16);
    fx_close(&fx);
}

/* A batch whose COMMIT outcome is unknown (connection lost) is not
 * acknowledged; it goes out again when the connection is back, with what
 * arrived meanwhile, and is acknowledged then. */
static void test_lost_connection_retried_not_acked(void)
{
    fx_t fx;
    fx_open(&fx, 4, 60000, 1000);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 1, 4), ==, 0);
    EMS_CHECK(F.req != NULL);
    drop();
    EMS_CHECK_INT(W.acks, ==, 0);
    EMS_CHECK(F.req == NULL);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 2, 4), ==, 0); /* down: held */
    EMS_CHECK(F.req == NULL);
    EMS_CHECK_INT(W.acks, ==, 0);
    ems_ingest_stats_t st;
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.batch_failures, ==, 1);
    EMS_CHECK_INT(st.queue_rows, ==, 8);
    up(&fx);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK_INT(F.submits, ==, 2);
    EMS_CHECK_INT(sent(OP_PREPARE), ==, 2); /* a new connection prepares again */
    EMS_CHECK_INT(sent_rows(), ==, 4);      /* the same batch first */
    commit();
    EMS_CHECK_INT(W.acks, ==, 1);
    EMS_CHECK_INT(W.acked[0], ==, 1);
    EMS_CHECK(F.req != NULL);
    commit();
    EMS_CHECK_INT(W.acked[0], ==, 2);
    fx_close(&fx);
}

/* A transient refusal (serialization failure) is retried after a backoff,
 * never acknowledged before it commits. */
static void test_transient_error_retried(void)
{
    fx_t fx;
    fx_open(&fx, 3, 60000, 1000);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 1, 3), ==, 0);
    EMS_CHECK(F.req != NULL);
    int fail[] = {op_index(OP_INSERT, 1), -1};
    answer(fail, "40001", -1);
    EMS_CHECK_INT(W.acks, ==, 0);
    EMS_CHECK(F.req == NULL); /* not at once: after the backoff */
    run_until_submitted(&fx, 3000);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK_INT(F.submits, ==, 2);
    EMS_CHECK_INT(sent_rows(), ==, 3);
    EMS_CHECK_INT(sent(OP_SYNC), ==, 1); /* the whole batch, not row by row */
    commit();
    EMS_CHECK_INT(W.acks, ==, 1);
    EMS_CHECK_INT(W.acked[0], ==, 1);
    EMS_CHECK_INT(W.rejects, ==, 0);
    fx_close(&fx);
}

/* A permanent refusal (the data: a check violation) makes the next attempt
 * one transaction per row and per event; the refused ones are reported,
 * before the ACK that covers their frames; the rest are written. */
static void test_refused_batch_isolated(void)
{
    fx_t fx;
    fx_open(&fx, 5, 60000, 1000);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 1, 2), ==, 0);
    EMS_CHECK_INT(add_event(&fx, fx.a, 2), ==, 0);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 3, 2), ==, 0);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK_INT(sent_rows(), ==, 4);
    int fail[] = {op_index(OP_INSERT, 1), -1};
    answer(fail, "23514", -1);
    EMS_CHECK_INT(W.acks, ==, 0);
    /* At once, row by row: 4 one-row INSERTs and the event, 5 Syncs. */
    EMS_CHECK(F.req != NULL);
    EMS_CHECK_INT(sent(OP_INSERT), ==, 4);
    EMS_CHECK_INT(sent(OP_EVENT), ==, 1);
    EMS_CHECK_INT(sent(OP_SYNC), ==, 5);
    /* The second row of link_seq 3 (the 4th INSERT) is refused. */
    int fail2[] = {op_index(OP_INSERT, 4), -1};
    answer(fail2, "23514", -1);
    EMS_CHECK_INT(W.rejects, ==, 1);
    EMS_CHECK_INT(W.reject_seq[0], ==, 3);
    EMS_CHECK_INT(W.reject_idx[0], ==, 1);
    EMS_CHECK_INT(W.acks_at_reject[0], ==, 0); /* reported before the ACK */
    EMS_CHECK_INT(W.acks, ==, 1);
    EMS_CHECK_INT(W.acked[0], ==, 3);
    ems_ingest_stats_t st;
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.rows_written, ==, 3);
    EMS_CHECK_INT(st.rows_rejected, ==, 1);
    EMS_CHECK_INT(st.events_written, ==, 1);
    /* Back to whole batches afterwards. */
    EMS_CHECK_INT(add_rows(&fx, fx.a, 4, 5), ==, 0);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK_INT(sent(OP_INSERT), ==, 1);
    EMS_CHECK_INT(sent(OP_SYNC), ==, 1);
    commit();
    EMS_CHECK_INT(W.acked[0], ==, 4);
    fx_close(&fx);
}

/* A replay (rows already stored: ON CONFLICT DO NOTHING inserts fewer) is
 * counted as duplicates and acknowledged like new rows; a link_seq that
 * does not increase is a protocol error and nothing of it is kept. */
static void test_duplicates_acked(void)
{
    fx_t fx;
    fx_open(&fx, 6, 60000, 1000);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 5, 6), ==, 0);
    EMS_CHECK(F.req != NULL);
    answer(NULL, NULL, 2); /* 4 of the 6 were there already */
    EMS_CHECK_INT(W.acks, ==, 1);
    EMS_CHECK_INT(W.acked[0], ==, 5);
    ems_ingest_stats_t st;
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.rows_written, ==, 2);
    EMS_CHECK_INT(st.rows_duplicate, ==, 4);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 5, 1), ==, EMS_EPROTO);
    EMS_CHECK_INT(add_event(&fx, fx.a, 4), ==, EMS_EPROTO);
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.queue_rows, ==, 0);
    /* Another source has its own sequence. */
    EMS_CHECK_INT(add_rows(&fx, fx.b, 1, 6), ==, 0);
    EMS_CHECK(F.req != NULL);
    commit();
    EMS_CHECK_INT(W.acked[1], ==, 1);
    fx_close(&fx);
}

/* Backpressure: full at queue_rows (in flight included, an event counts
 * as one); on_space once the queue is below half again, not before. */
static void test_backpressure(void)
{
    fx_t fx;
    fx_open(&fx, 4, 60000, 20);
    F.up = false; /* everything is held */
    uint64_t seq = 1;
    for (; seq <= 4; seq++)
        EMS_CHECK_INT(add_rows(&fx, fx.a, seq, 4), ==, 0);
    EMS_CHECK(!ems_ingest_full(fx.g)); /* 16 < 20 */
    EMS_CHECK_INT(add_rows(&fx, fx.a, seq++, 3), ==, 0);
    EMS_CHECK(!ems_ingest_full(fx.g)); /* 19 */
    EMS_CHECK_INT(add_event(&fx, fx.a, seq++), ==, 0);
    EMS_CHECK(ems_ingest_full(fx.g)); /* 20 */
    EMS_CHECK(F.req == NULL);
    up(&fx);
    EMS_CHECK(F.req != NULL);
    EMS_CHECK(ems_ingest_full(fx.g)); /* in flight still counts */
    commit();                         /* 16 held */
    EMS_CHECK_INT(W.spaces, ==, 0);
    commit(); /* 12 */
    EMS_CHECK_INT(W.spaces, ==, 0);
    commit(); /* 8 < 10 */
    EMS_CHECK_INT(W.spaces, ==, 1);
    EMS_CHECK(!ems_ingest_full(fx.g));
    commit();                          /* 4 */
    EMS_CHECK_INT(sent_rows(), ==, 3); /* 3 rows and the event: one batch */
    EMS_CHECK_INT(sent(OP_EVENT), ==, 1);
    commit();
    EMS_CHECK_INT(W.spaces, ==, 1); /* once per time it was full */
    EMS_CHECK(F.req == NULL);
    EMS_CHECK_INT(W.acked[0], ==, seq - 1);
    ems_ingest_stats_t st;
    ems_ingest_stats(fx.g, &st);
    EMS_CHECK_INT(st.queue_rows, ==, 0);
    fx_close(&fx);
}

/* Drain (shutdown) writes what is held without waiting for size or age,
 * then calls back, from the loop. */
static void drained(void *ud)
{
    (*(int *)ud)++;
}

static void test_drain(void)
{
    fx_t fx;
    fx_open(&fx, 1000, 60000, 5000);
    EMS_CHECK_INT(add_rows(&fx, fx.a, 1, 2), ==, 0);
    EMS_CHECK(F.req == NULL);
    int done = 0;
    ems_ingest_drain(fx.g, drained, &done);
    EMS_CHECK_INT(done, ==, 0); /* never from inside the call */
    run_until_submitted(&fx, 2000);
    EMS_CHECK(F.req != NULL);
    commit();
    EMS_CHECK_INT(W.acked[0], ==, 1);
    for (int i = 0; i < 100 && !done; i++)
        uv_run(&fx.loop, UV_RUN_ONCE);
    EMS_CHECK_INT(done, ==, 1);
    fx_close(&fx);
}

int main(void)
{
    ems_log_set_level(EMS_LOG_ERROR); /* the retries warn by design */
    EMS_RUN(test_batch_by_rows);
    EMS_RUN(test_batch_by_time);
    EMS_RUN(test_ack_after_commit_per_source);
    EMS_RUN(test_lost_connection_retried_not_acked);
    EMS_RUN(test_transient_error_retried);
    EMS_RUN(test_refused_batch_isolated);
    EMS_RUN(test_duplicates_acked);
    EMS_RUN(test_backpressure);
    EMS_RUN(test_drain);
    EMS_TEST_END();
}
