/* Unit tests: the gateway's link policy (gw_link) against a peer speaking
 * the real link protocol (common/link.c) over a real Unix socket in the
 * same loop: batching, cumulative ACKs, REJECT, resending with the same
 * link_seq after the peer drops the connection, the bounded hold, queries
 * and their timeout, and a clean close (uv_loop_close == 0). */
#include "ems_test.h"

#include "error.h"
#include "gw_link.h"
#include "link.h"
#include "log.h"
#include "timefmt.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
    /* peer side */
    uv_pipe_t server;
    ems_link_conn_t *peer;
    int accepts;
    uint64_t seqs[256]; /* link_seq of each TELEMETRY/EVENT frame seen */
    unsigned counts[256];
    int nframes;
    unsigned records;
    int ack_mode;    /* 0: ack each frame; 1: never ack; 2: reject index 1 then ack */
    int answer_queries;
    uint64_t held_ids[64];
    int nheld;
    /* gateway side */
    uint64_t committed[256];
    char rejects[256][64];
    int ncommitted;
    int acked_calls;
    int qstatus;
    char qjson[256];
    int qcalls;
    int ups;
    bool freed;
    /* credentials callbacks: how many, the last id ("*" for every device) */
    int creds;
    char cred_id[80];
    char peer_info[256]; /* the gateway's HELLO info as the peer saw it */
    /* device_auths queries the peer answered, and the ids they held */
    int auth_queries, auth_ids;
} T;

/* The DB writer's side of device_auths: every id not starting with "unk"
 * exists, with token hash "h-<id>". */
static void peer_device_auths(ems_link_conn_t *c, T *t, uint64_t id, const char *j, size_t n)
{
    json_t *q = json_loadb(j, n, 0, NULL);
    json_t *ids = json_object_get(q, "device_ids");
    EMS_CHECK(json_is_array(ids));
    json_t *devs = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        const char *d = json_string_value(v);
        char h[80];
        snprintf(h, sizeof h, "h-%s", d);
        if (strncmp(d, "unk", 3) != 0)
            json_array_append_new(devs, json_pack("{sssssbsn}", "device_id", d, "token_hash", h,
                                                  "revoked", 0, "revoked_at"));
    }
    t->auth_queries++;
    t->auth_ids += (int)json_array_size(ids);
    json_t *a = json_pack("{so}", "devices", devs);
    char *s = json_dumps(a, JSON_COMPACT);
    size_t len = strlen(s);
    uint8_t *buf = malloc(12 + len);
    memcpy(buf, &id, 8);
    int32_t st = 0;
    memcpy(buf + 8, &st, 4);
    memcpy(buf + 12, s, len);
    ems_link_conn_send(c, EMS_LINK_RESULT, buf, 12 + len);
    free(buf);
    free(s);
    json_decref(a);
    json_decref(q);
}

static void peer_frame(ems_link_conn_t *c, void *ud, const ems_link_frame_t *f)
{
    T *t = ud;
    if (f->kind == EMS_LINK_TELEMETRY || f->kind == EMS_LINK_EVENT) {
        uint64_t seq;
        unsigned count = 1;
        if (f->kind == EMS_LINK_TELEMETRY) {
            ems_link_telemetry_reader_t r;
            EMS_CHECK_INT(ems_link_telemetry_open(&r, f), ==, 0);
            seq = r.link_seq;
            count = r.count;
            t->records += count;
        } else {
            const char *j;
            size_t n;
            EMS_CHECK_INT(ems_link_parse_id_json(f, &seq, &j, &n), ==, 0);
        }
        if (t->nframes < 256) {
            t->seqs[t->nframes] = seq;
            t->counts[t->nframes] = count;
            t->nframes++;
        }
        if (t->ack_mode == 2 && f->kind == EMS_LINK_TELEMETRY) {
            uint8_t buf[64];
            memcpy(buf, &seq, 8); /* little-endian hosts only; fine for a test */
            uint32_t idx = 1;
            memcpy(buf + 8, &idx, 4);
            memcpy(buf + 12, "bad value", 9);
            ems_link_conn_send(c, EMS_LINK_REJECT, buf, 21);
        }
        if (t->ack_mode != 1)
            ems_link_conn_send(c, EMS_LINK_ACK, &seq, 8);
    } else if (f->kind == EMS_LINK_QUERY && t->answer_queries == 3) {
        uint64_t id;
        const char *j;
        size_t n;
        EMS_CHECK_INT(ems_link_parse_id_json(f, &id, &j, &n), ==, 0);
        peer_device_auths(c, t, id, j, n);
    } else if (f->kind == EMS_LINK_QUERY && t->answer_queries == 2) {
        uint64_t id;
        const char *j;
        size_t n;
        EMS_CHECK_INT(ems_link_parse_id_json(f, &id, &j, &n), ==, 0);
        if (t->nheld < 64)
            t->held_ids[t->nheld++] = id;
    } else if (f->kind == EMS_LINK_QUERY && t->answer_queries) {
        uint64_t id;
        const char *j;
        size_t n;
        EMS_CHECK_INT(ems_link_parse_id_json(f, &id, &j, &n), ==, 0);
        uint8_t buf[128];
        memcpy(buf, &id, 8);
        int32_t st = 0;
        memcpy(buf + 8, &st, 4);
        memcpy(buf + 12, "{\"found\":true}", 14);
        ems_link_conn_send(c, EMS_LINK_RESULT, buf, 26);
    }
}

static void peer_close(ems_link_conn_t *c, void *ud, int status)
{
    T *t = ud;
    (void)status;
    if (t->peer == c)
        t->peer = NULL;
}

static void peer_ready(ems_link_conn_t *c, void *ud, const char *info, size_t n)
{
    (void)c;
    T *t = ud;
    snprintf(t->peer_info, sizeof t->peer_info, "%.*s", (int)n, info);
}

static const ems_link_conn_cb_t peer_cbs = {peer_ready, peer_frame, NULL, peer_close};

static void on_conn(uv_stream_t *s, int status)
{
    T *t = s->data;
    EMS_CHECK_INT(status, ==, 0);
    ems_link_conn_opts_t o = {.name = "test peer", .hello_info = "{\"name\":\"peer\"}"};
    EMS_CHECK_INT(ems_link_conn_accept(s, &o, &peer_cbs, t, &t->peer), ==, 0);
    t->accepts++;
}

static void g_committed(void *ud, void *owner, bool has_seq, uint64_t seq, const char *reject)
{
    T *t = ud;
    EMS_CHECK(owner == t);
    EMS_CHECK(has_seq);
    if (t->ncommitted < 256) {
        snprintf(t->rejects[t->ncommitted], 64, "%s", reject ? reject : "");
        t->committed[t->ncommitted++] = seq;
    }
}

static void g_state(void *ud, bool up)
{
    T *t = ud;
    if (up)
        t->ups++;
}

static void g_acked(void *ud) { ((T *)ud)->acked_calls++; }

static void g_credentials(void *ud, const char *id)
{
    T *t = ud;
    t->creds++;
    snprintf(t->cred_id, sizeof t->cred_id, "%s", id ? id : "*");
}

static const gw_link_cb_t gcbs = {g_committed, g_state, g_acked, g_credentials};

static void q_done(void *ud, int status, const char *json, size_t len)
{
    T *t = ud;
    t->qcalls++;
    t->qstatus = status;
    snprintf(t->qjson, sizeof t->qjson, "%.*s", (int)len, json);
}

static void freed(void *arg) { ((T *)arg)->freed = true; }

static char sock_path[108];

static void start_peer(uv_loop_t *loop, T *t)
{
    uv_pipe_init(loop, &t->server, 0);
    t->server.data = t;
    EMS_CHECK_INT(ems_link_listen(&t->server, sock_path, on_conn), ==, 0);
}

/* Runs the loop until cond() or the deadline. */
#define RUN_UNTIL(loop, cond, ms)                                                                  \
    do {                                                                                           \
        int64_t end_ = ems_time_mono_ms() + (ms);                                                  \
        while (!(cond) && ems_time_mono_ms() < end_)                                               \
            uv_run(loop, UV_RUN_NOWAIT), usleep(1000);                                             \
        EMS_CHECK(cond);                                                                           \
    } while (0)

static ems_telemetry_t pkt(uint64_t seq)
{
    ems_telemetry_t p;
    memset(&p, 0, sizeof p);
    strcpy(p.device_id, "dev1");
    p.timestamp_ms = 1769860800000LL + (int64_t)seq * 1000;
    p.battery_voltage = 50;
    p.battery_soc = 50;
    p.grid_voltage = 230;
    p.grid_frequency = 50;
    p.has_seq = true;
    p.seq = seq;
    return p;
}

static unsigned inflight_cap, user_inflight, user_queue, per_user, lookup_queue, lookup_wait;

static gw_link_t *mk(uv_loop_t *loop, T *t, size_t ring, unsigned batch, unsigned qto)
{
    gw_link_opts_t o = {.path = sock_path, .ring = ring, .batch = batch, .flush_ms = 5,
                        .query_timeout_ms = qto, .max_inflight = inflight_cap,
                        .user_inflight = user_inflight, .user_queue = user_queue,
                        .per_user = per_user, .lookup_queue = lookup_queue,
                        .lookup_wait_ms = lookup_wait};
    gw_link_t *l;
    EMS_CHECK_INT(gw_link_new(loop, &o, &gcbs, t, &l), ==, 0);
    return l;
}

static void finish(uv_loop_t *loop, T *t, gw_link_t *l)
{
    gw_link_free(l, freed, t);
    if (t->peer)
        ems_link_conn_close(t->peer, 0);
    uv_close((uv_handle_t *)&t->server, NULL);
    RUN_UNTIL(loop, t->freed && !t->peer, 2000);
    uv_run(loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(uv_loop_close(loop), ==, 0);
    unlink(sock_path);
}

static void setup(uv_loop_t *loop, T *t)
{
    memset(t, 0, sizeof *t);
    snprintf(sock_path, sizeof sock_path, "/tmp/gw-link-test-%d.sock", (int)getpid());
    unlink(sock_path);
    EMS_CHECK_INT(uv_loop_init(loop), ==, 0);
}

static void test_batches_and_acks(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    start_peer(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 100, 4, 0);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    for (uint64_t s = 1; s <= 10; s++) {
        ems_telemetry_t p = pkt(s);
        EMS_CHECK_INT(gw_link_telemetry(l, &t, &p, 0), ==, 0);
    }
    EMS_CHECK_INT(gw_link_held(l), ==, 10);
    RUN_UNTIL(&loop, t.ncommitted == 10, 3000);
    for (int i = 0; i < 10; i++)
        EMS_CHECK_INT(t.committed[i], ==, i + 1); /* in order */
    EMS_CHECK_INT(t.nframes, ==, 3);               /* 4 + 4 + 2 (the flush) */
    EMS_CHECK_INT(t.counts[0], ==, 4);
    EMS_CHECK_INT(t.counts[2], ==, 2);
    EMS_CHECK(t.seqs[0] < t.seqs[1] && t.seqs[1] < t.seqs[2]);
    EMS_CHECK_INT(gw_link_held(l), ==, 0);
    /* An event between batches keeps link_seq increasing. */
    ems_telemetry_t p = pkt(11);
    gw_link_telemetry(l, &t, &p, 0);
    EMS_CHECK_INT(gw_link_event(l, "{\"type\":\"x\"}", 12), ==, 0);
    RUN_UNTIL(&loop, t.nframes == 5 && t.ncommitted == 11, 3000);
    EMS_CHECK(t.seqs[3] < t.seqs[4]);
    finish(&loop, &t, l);
}

static void test_reject(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    t.ack_mode = 2;
    start_peer(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 100, 3, 0);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    for (uint64_t s = 1; s <= 3; s++) {
        ems_telemetry_t p = pkt(s);
        gw_link_telemetry(l, &t, &p, 0);
    }
    RUN_UNTIL(&loop, t.ncommitted == 3, 3000);
    EMS_CHECK_STR(t.rejects[0], "");
    EMS_CHECK_STR(t.rejects[1], "bad value");
    EMS_CHECK_STR(t.rejects[2], "");
    finish(&loop, &t, l);
}

static void test_resend_after_drop(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    t.ack_mode = 1; /* receive, never ack */
    start_peer(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 100, 5, 0);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    for (uint64_t s = 1; s <= 5; s++) {
        ems_telemetry_t p = pkt(s);
        gw_link_telemetry(l, &t, &p, 0);
    }
    RUN_UNTIL(&loop, t.nframes == 1, 3000);
    uint64_t first = t.seqs[0];
    EMS_CHECK_INT(t.ncommitted, ==, 0);
    /* The peer drops the link without acknowledging. */
    ems_link_conn_close(t.peer, 0);
    t.ack_mode = 0;
    RUN_UNTIL(&loop, t.accepts == 2 && t.ncommitted == 5, 8000);
    EMS_CHECK_INT(t.nframes, ==, 2);
    EMS_CHECK_INT(t.seqs[1], ==, first); /* the same frame, the same link_seq */
    EMS_CHECK_INT(t.records, ==, 10);
    EMS_CHECK_INT(t.ups, ==, 2);
    for (int i = 0; i < 5; i++)
        EMS_CHECK_INT(t.committed[i], ==, i + 1); /* once each */
    finish(&loop, &t, l);
}

static void test_bounded_hold(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    /* No peer: the link stays down and holds records. */
    gw_link_t *l = mk(&loop, &t, 8, 4, 0);
    int ok = 0, full = 0;
    for (uint64_t s = 1; s <= 10; s++) {
        ems_telemetry_t p = pkt(s);
        int rc = gw_link_telemetry(l, &t, &p, 0);
        ok += rc == 0;
        full += rc == EMS_ENOSPC;
    }
    EMS_CHECK_INT(ok, ==, 8);
    EMS_CHECK_INT(full, ==, 2);
    EMS_CHECK_INT(gw_link_held(l), ==, 8);
    EMS_CHECK_INT(gw_link_event(l, "{}", 2), ==, EMS_ENOSPC);
    EMS_CHECK_INT(gw_link_query(l, "{}", 2, q_done, &t), ==, EMS_EAGAIN);
    /* The peer appears: the held records go and are committed. */
    start_peer(&loop, &t);
    RUN_UNTIL(&loop, t.ncommitted == 8, 8000);
    EMS_CHECK_INT(gw_link_held(l), ==, 0);
    finish(&loop, &t, l);
}

static void test_queries(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    start_peer(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 8, 4, 600);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    t.answer_queries = 1;
    EMS_CHECK_INT(gw_link_query(l, "{\"op\":\"x\"}", 10, q_done, &t), ==, 0);
    EMS_CHECK_INT(t.qcalls, ==, 0); /* never from inside the call */
    RUN_UNTIL(&loop, t.qcalls == 1, 3000);
    EMS_CHECK_INT(t.qstatus, ==, 0);
    EMS_CHECK_STR(t.qjson, "{\"found\":true}");
    /* No answer: timed out. */
    t.answer_queries = 0;
    EMS_CHECK_INT(gw_link_query(l, "{\"op\":\"x\"}", 10, q_done, &t), ==, 0);
    RUN_UNTIL(&loop, t.qcalls == 2, 3000);
    EMS_CHECK_INT(t.qstatus, ==, EMS_ETIMEDOUT);
    /* Pending at free: ECLOSED. */
    EMS_CHECK_INT(gw_link_query(l, "{\"op\":\"x\"}", 10, q_done, &t), ==, 0);
    gw_link_free(l, freed, &t);
    EMS_CHECK_INT(t.qcalls, ==, 3);
    EMS_CHECK_INT(t.qstatus, ==, EMS_ECLOSED);
    if (t.peer)
        ems_link_conn_close(t.peer, 0);
    uv_close((uv_handle_t *)&t.server, NULL);
    RUN_UNTIL(&loop, t.freed && !t.peer, 2000);
    uv_run(&loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(uv_loop_close(&loop), ==, 0);
    unlink(sock_path);
}

/* At most max_inflight queries reach the DB writer at once; the others
 * wait and go as answers come back. */
static void test_query_inflight_cap(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    start_peer(&loop, &t);
    inflight_cap = 4;
    gw_link_t *l = mk(&loop, &t, 8, 4, 5000);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    t.answer_queries = 2; /* hold them */
    for (int i = 0; i < 10; i++)
        EMS_CHECK_INT(gw_link_query(l, "{\"op\":\"x\"}", 10, q_done, &t), ==, 0);
    RUN_UNTIL(&loop, t.nheld == 4, 3000);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT), usleep(2000);
    EMS_CHECK_INT(t.nheld, ==, 4);
    EMS_CHECK_INT(gw_link_pending_queries(l), ==, 10);
    /* Answer what is held, round after round, until all ten are done. */
    int answered = 0;
    while (answered < 10) {
        RUN_UNTIL(&loop, t.nheld > answered, 3000);
        for (; answered < t.nheld; answered++) {
            uint8_t buf[32];
            memcpy(buf, &t.held_ids[answered], 8);
            int32_t st = 0;
            memcpy(buf + 8, &st, 4);
            memcpy(buf + 12, "{}", 2);
            ems_link_conn_send(t.peer, EMS_LINK_RESULT, buf, 14);
        }
        RUN_UNTIL(&loop, t.qcalls == answered, 3000);
        EMS_CHECK(t.nheld - answered <= 4);
    }
    EMS_CHECK_INT(t.qcalls, ==, 10);
    EMS_CHECK_INT(gw_link_pending_queries(l), ==, 0);
    inflight_cap = 0;
    finish(&loop, &t, l);
}

/* Answers the held query `id` with status 0 and "{}". */
static void answer(T *t, uint64_t id)
{
    uint8_t buf[32];
    memcpy(buf, &id, 8);
    int32_t st = 0;
    memcpy(buf + 8, &st, 4);
    memcpy(buf + 12, "{}", 2);
    ems_link_conn_send(t->peer, EMS_LINK_RESULT, buf, 14);
}

static void peer_status(T *t, const char *json)
{
    EMS_CHECK_INT(ems_link_conn_send(t->peer, EMS_LINK_STATUS, json, strlen(json)), ==, 0);
}

/* /healthz is 200 only while the DB writer reports that it can commit;
 * otherwise the body names the missing part. */
static void test_health_follows_status(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    start_peer(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 8, 4, 5000);
    char body[768];
    EMS_CHECK_INT(gw_link_health(l, body, sizeof body), ==, 503);
    EMS_CHECK(strstr(body, "\"reason\":\"dbwriter link down\"") != NULL);
    EMS_CHECK(strstr(body, "\"dbwriter\":\"disconnected\"") != NULL);
    RUN_UNTIL(&loop, gw_link_up(l) && t.peer_info[0], 3000);
    /* The gateway asks for the new frames in its HELLO. */
    EMS_CHECK(strstr(t.peer_info, "\"accepts\":[\"status\",\"credentials\"]") != NULL);
    /* Up, but no STATUS yet: the link alone does not make it healthy. */
    EMS_CHECK_INT(gw_link_health(l, body, sizeof body), ==, 503);
    EMS_CHECK(strstr(body, "has not reported") != NULL);
    peer_status(&t, "{\"db\":\"failing\",\"error\":\"password authentication failed for user "
                    "\\\"ems\\\"\",\"migrations\":\"pending\",\"last_commit_ms\":null}");
    RUN_UNTIL(&loop, gw_link_health(l, body, sizeof body) == 503 && strstr(body, "failing"), 3000);
    EMS_CHECK(strstr(body, "database unreachable: password authentication failed") != NULL);
    peer_status(&t, "{\"db\":\"ok\",\"error\":null,\"migrations\":\"pending\"}");
    RUN_UNTIL(&loop, strstr((gw_link_health(l, body, sizeof body), body), "migrations pending"),
              3000);
    EMS_CHECK_INT(gw_link_health(l, body, sizeof body), ==, 503);
    peer_status(&t, "{\"db\":\"ok\",\"error\":null,\"migrations\":\"done\","
                    "\"last_commit_ms\":1769860800000}");
    RUN_UNTIL(&loop, gw_link_health(l, body, sizeof body) == 200, 3000);
    EMS_CHECK(strstr(body, "\"last_commit\":\"2026-01-31T12:00:00.000Z\"") != NULL);
    EMS_CHECK(strstr(body, "\"status\":\"ok\"") != NULL);
    /* The link drops: 503 at once, and the old STATUS is forgotten. */
    ems_link_conn_close(t.peer, 0);
    RUN_UNTIL(&loop, !gw_link_up(l), 3000);
    EMS_CHECK_INT(gw_link_health(l, body, sizeof body), ==, 503);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    EMS_CHECK_INT(gw_link_health(l, body, sizeof body), ==, 503);
    EMS_CHECK(strstr(body, "has not reported") != NULL);
    finish(&loop, &t, l);
}

/* CREDENTIALS frames reach the callback; every (re)connect also says
 * "every device", since changes may have been missed meanwhile. */
static void test_credentials_frames(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    start_peer(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 8, 4, 5000);
    RUN_UNTIL(&loop, gw_link_up(l) && t.creds == 1, 3000);
    EMS_CHECK_STR(t.cred_id, "*");
    EMS_CHECK_INT(ems_link_conn_send(t.peer, EMS_LINK_CREDENTIALS, "ems_001", 7), ==, 0);
    RUN_UNTIL(&loop, t.creds == 2, 3000);
    EMS_CHECK_STR(t.cred_id, "ems_001");
    EMS_CHECK_INT(ems_link_conn_send(t.peer, EMS_LINK_CREDENTIALS, "", 0), ==, 0);
    RUN_UNTIL(&loop, t.creds == 3, 3000);
    EMS_CHECK_STR(t.cred_id, "*");
    /* A bad id is ignored, the link stays up. */
    EMS_CHECK_INT(ems_link_conn_send(t.peer, EMS_LINK_CREDENTIALS, "no/slash", 8), ==, 0);
    EMS_CHECK_INT(ems_link_conn_send(t.peer, EMS_LINK_CREDENTIALS, "dev2", 4), ==, 0);
    RUN_UNTIL(&loop, t.creds == 4, 3000);
    EMS_CHECK_STR(t.cred_id, "dev2");
    EMS_CHECK(gw_link_up(l));
    ems_link_conn_close(t.peer, 0);
    RUN_UNTIL(&loop, !gw_link_up(l), 3000);
    RUN_UNTIL(&loop, gw_link_up(l) && t.creds == 5, 3000);
    EMS_CHECK_STR(t.cred_id, "*");
    finish(&loop, &t, l);
}

/* One user holds at most per_user queries (429 beyond), at most
 * user_queue wait (503 beyond), at most user_inflight are at the DB writer,
 * and the gateway's own lookups overtake waiting user queries. */
static void test_user_query_bounds(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    start_peer(&loop, &t);
    inflight_cap = 8;
    user_inflight = 2;
    user_queue = 5;
    per_user = 3;
    gw_link_t *l = mk(&loop, &t, 8, 4, 5000);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    t.answer_queries = 2; /* hold them */
    const char *q = "{\"op\":\"history\"}";
    for (int i = 0; i < 3; i++)
        EMS_CHECK_INT(gw_link_query_user(l, "ann", q, strlen(q), q_done, &t), ==, 0);
    EMS_CHECK_INT(gw_link_query_user(l, "ann", q, strlen(q), q_done, &t), ==, GW_LINK_EUSER);
    char msg[300];
    unsigned retry = 0;
    EMS_CHECK_INT(gw_link_refusal(l, GW_LINK_EUSER, "ann", msg, sizeof msg, &retry), ==, 429);
    EMS_CHECK(strstr(msg, "'ann'") && strstr(msg, "at most 3") && retry > 0);
    /* Another user still gets in. */
    for (int i = 0; i < 3; i++)
        EMS_CHECK_INT(gw_link_query_user(l, "bob", q, strlen(q), q_done, &t), ==, 0);
    /* 6 made, 2 sent, 4 wait: one more fits the queue of 5, then it is full. */
    EMS_CHECK_INT(gw_link_query_user(l, "cy", q, strlen(q), q_done, &t), ==, 0);
    EMS_CHECK_INT(gw_link_query_user(l, "dee", q, strlen(q), q_done, &t), ==, EMS_ENOSPC);
    EMS_CHECK_INT(gw_link_refusal(l, EMS_ENOSPC, "dee", msg, sizeof msg, &retry), ==, 503);
    EMS_CHECK(strstr(msg, "query_queue") && retry > 0);
    RUN_UNTIL(&loop, t.nheld == 2, 3000);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT), usleep(2000);
    EMS_CHECK_INT(t.nheld, ==, 2); /* user_inflight */
    /* A lookup of the gateway's own goes out at once, past the waiting ones. */
    EMS_CHECK_INT(gw_link_query(l, "{\"op\":\"device_auth\"}", 21, q_done, &t), ==, 0);
    RUN_UNTIL(&loop, t.nheld == 3, 3000);
    EMS_CHECK_INT(t.held_ids[2], ==, 8); /* the 8th query made */
    /* Answers let the waiting ones go, two at a time. */
    int answered = 0;
    while (answered < 8) {
        RUN_UNTIL(&loop, t.nheld > answered, 3000);
        for (; answered < t.nheld; answered++)
            answer(&t, t.held_ids[answered]);
        RUN_UNTIL(&loop, t.qcalls == answered, 3000);
    }
    EMS_CHECK_INT(t.qcalls, ==, 8);
    EMS_CHECK_INT(gw_link_pending_queries(l), ==, 0);
    /* Shares are given back: ann may ask again. */
    EMS_CHECK_INT(gw_link_query_user(l, "ann", q, strlen(q), q_done, &t), ==, 0);
    RUN_UNTIL(&loop, t.nheld == 9, 3000);
    answer(&t, t.held_ids[8]);
    RUN_UNTIL(&loop, t.qcalls == 9, 3000);
    gw_link_stats_t st;
    gw_link_stats(l, &st);
    EMS_CHECK_INT(st.queries_refused_user, ==, 1);
    EMS_CHECK_INT(st.queries_refused_queue, ==, 1);
    inflight_cap = user_inflight = user_queue = per_user = 0;
    finish(&loop, &t, l);
}

/* One lookup's answer, kept per device index. */
typedef struct {
    int status, calls;
    char json[200];
} lk_t;

static void lk_done(void *ud, int status, const char *json, size_t len)
{
    lk_t *k = ud;
    k->calls++;
    k->status = status;
    snprintf(k->json, sizeof k->json, "%.*s", (int)len, json);
}

static int lk_all(const lk_t *k, int n)
{
    for (int i = 0; i < n; i++)
        if (!k[i].calls)
            return 0;
    return 1;
}

/* 300 lookups made in one loop turn travel as two device_auths queries
 * (256 ids, then 44), and each caller gets its own device's answer in the
 * shape of a device_auth answer, unknown ids included. */
static void test_lookups_batched(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    start_peer(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 8, 4, 5000);
    RUN_UNTIL(&loop, gw_link_up(l), 3000);
    t.answer_queries = 3;
    enum { N = 300 };
    static lk_t k[N];
    memset(k, 0, sizeof k);
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "%s-%d", i % 10 == 3 ? "unk" : "dev", i);
        EMS_CHECK_INT(gw_link_lookup(l, id, lk_done, &k[i]), ==, 0);
    }
    EMS_CHECK_INT(gw_link_lookup(l, "bad id!", lk_done, &k[0]), ==, EMS_EINVAL);
    EMS_CHECK_INT(k[0].calls, ==, 0); /* never from inside the call */
    EMS_CHECK_INT(gw_link_lookups_pending(l), ==, N);
    RUN_UNTIL(&loop, lk_all(k, N), 3000);
    EMS_CHECK_INT(t.auth_queries, ==, 2);
    EMS_CHECK_INT(t.auth_ids, ==, N);
    for (int i = 0; i < N; i++) {
        EMS_CHECK_INT(k[i].calls, ==, 1);
        EMS_CHECK_INT(k[i].status, ==, 0);
        json_t *o = json_loads(k[i].json, 0, NULL);
        if (i % 10 == 3) {
            EMS_CHECK(json_is_false(json_object_get(o, "found")));
        } else {
            char want[40];
            snprintf(want, sizeof want, "h-dev-%d", i);
            EMS_CHECK(json_is_true(json_object_get(o, "found")));
            EMS_CHECK_STR(json_string_value(json_object_get(o, "token_hash")), want);
        }
        json_decref(o);
    }
    gw_link_stats_t st;
    gw_link_stats(l, &st);
    EMS_CHECK_INT(st.lookups, ==, N);
    EMS_CHECK_INT(st.lookup_batches, ==, 2);
    EMS_CHECK_INT(gw_link_lookups_pending(l), ==, 0);
    finish(&loop, &t, l);
}

/* Lookups made while the DB writer is unreachable wait for it (instead of
 * failing at once, which devices saw as 503), and are answered when it
 * comes; a lost batch is asked again. */
static void test_lookups_wait_for_the_link(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    gw_link_t *l = mk(&loop, &t, 8, 4, 5000);
    lk_t k[5];
    memset(k, 0, sizeof k);
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "dev-%d", i);
        EMS_CHECK_INT(gw_link_lookup(l, id, lk_done, &k[i]), ==, 0);
    }
    for (int i = 0; i < 100; i++)
        uv_run(&loop, UV_RUN_NOWAIT), usleep(2000);
    EMS_CHECK_INT(k[0].calls, ==, 0);
    /* The writer comes up but loses the first batch (closes the link). */
    start_peer(&loop, &t);
    t.answer_queries = 2;
    RUN_UNTIL(&loop, t.nheld == 1, 5000);
    ems_link_conn_close(t.peer, 0);
    t.answer_queries = 3;
    RUN_UNTIL(&loop, lk_all(k, 5), 6000);
    for (int i = 0; i < 5; i++)
        EMS_CHECK_INT(k[i].status, ==, 0);
    gw_link_stats_t st;
    gw_link_stats(l, &st);
    EMS_CHECK_INT(st.lookups_retried, ==, 5);
    finish(&loop, &t, l);
}

/* The queue is bounded (EMS_ENOSPC beyond lookup_queue) and a lookup
 * waits at most lookup_wait_ms (then EMS_ETIMEDOUT); freeing the link
 * answers the rest with EMS_ECLOSED. */
static void test_lookup_queue_bound_and_deadline(void)
{
    uv_loop_t loop;
    T t;
    setup(&loop, &t);
    lookup_queue = 3;
    lookup_wait = 200;
    gw_link_t *l = mk(&loop, &t, 8, 4, 5000);
    lk_t k[5];
    memset(k, 0, sizeof k);
    for (int i = 0; i < 3; i++)
        EMS_CHECK_INT(gw_link_lookup(l, "dev-1", lk_done, &k[i]), ==, 0);
    EMS_CHECK_INT(gw_link_lookup(l, "dev-1", lk_done, &k[3]), ==, EMS_ENOSPC);
    RUN_UNTIL(&loop, lk_all(k, 3), 3000);
    for (int i = 0; i < 3; i++)
        EMS_CHECK_INT(k[i].status, ==, EMS_ETIMEDOUT);
    EMS_CHECK_INT(gw_link_lookup(l, "dev-2", lk_done, &k[4]), ==, 0);
    lookup_queue = lookup_wait = 0;
    gw_link_free(l, freed, &t);
    EMS_CHECK_INT(k[4].calls, ==, 1);
    EMS_CHECK_INT(k[4].status, ==, EMS_ECLOSED);
    RUN_UNTIL(&loop, t.freed, 2000);
    uv_run(&loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(uv_loop_close(&loop), ==, 0);
}

int main(void)
{
    ems_log_init("test_gw_link", EMS_LOG_ERROR);
    EMS_RUN(test_batches_and_acks);
    EMS_RUN(test_reject);
    EMS_RUN(test_resend_after_drop);
    EMS_RUN(test_bounded_hold);
    EMS_RUN(test_queries);
    EMS_RUN(test_query_inflight_cap);
    EMS_RUN(test_health_follows_status);
    EMS_RUN(test_credentials_frames);
    EMS_RUN(test_user_query_bounds);
    EMS_RUN(test_lookups_batched);
    EMS_RUN(test_lookups_wait_for_the_link);
    EMS_RUN(test_lookup_queue_bound_and_deadline);
    EMS_TEST_END();
}
