/* test_edge_backfill.c: the backlog policy (edge/backfill.h) on a real
 * store (edge/store.h) in a temporary folder, with a send callback that
 * decodes every batch the way the cloud does (common/batch.h). */
#include "ems_test.h"

#include "backfill.h"
#include "batch.h"
#include "error.h"
#include "log.h"
#include "store.h"
#include "telemetry.h"

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ helpers */

typedef struct {
    char dir[128];
    char path[192];
    ems_store_t *st;
} tmp_t;

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void tmp_open(tmp_t *t)
{
    ems_log_init("test", EMS_LOG_WARN);
    snprintf(t->dir, sizeof t->dir, "/tmp/ems-backfill-test-XXXXXX");
    if (!mkdtemp(t->dir))
        EMS_FAIL("mkdtemp: %s", strerror(errno));
    snprintf(t->path, sizeof t->path, "%s/buffer", t->dir);
    ems_store_config_t c;
    ems_store_config_default(&c);
    c.path = t->path;
    c.sync = EMS_STORE_SYNC_OFF;
    c.boot_id = "test-boot";
    EMS_CHECK_INT(ems_store_open(&t->st, &c), ==, 0);
}

static void tmp_close(tmp_t *t)
{
    ems_store_close(t->st);
    nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Appends n packets, as the daemon's tick does. */
static void append(tmp_t *t, int n)
{
    for (int i = 0; i < n; i++) {
        ems_telemetry_t p;
        memset(&p, 0, sizeof p);
        snprintf(p.device_id, sizeof p.device_id, "dev_1");
        uint64_t seq = ems_store_next_seq(t->st);
        p.timestamp_ms = 1769860800000LL + (int64_t)seq * 1000;
        p.state = EMS_STATE_IDLE;
        p.battery_voltage = 52.1;
        p.battery_soc = 50;
        p.grid_voltage = 230;
        p.grid_frequency = 50;
        p.has_seq = true;
        p.seq = seq;
        p.has_backlog = true;
        p.backlog = 3;
        char buf[EMS_TELEMETRY_JSON_MAX];
        int len = ems_telemetry_encode(&p, buf, sizeof buf);
        EMS_CHECK(len > 0);
        EMS_CHECK_INT(ems_store_append(t->st, seq, p.timestamp_ms, buf, (size_t)len), ==, 0);
    }
}

/* What the "cloud" got. */
typedef struct {
    int batches;
    int packets;
    uint64_t seqs[4096];
    int sizes[256];
    size_t max_len;
    int refused;
    int fail_next; /* return this error from the next send */
} sink_t;

static void sink_item(void *ctx, const ems_batch_item_t *it)
{
    sink_t *s = ctx;
    if (!it->packet) {
        s->refused++;
        return;
    }
    EMS_CHECK(it->packet->has_backfill && it->packet->backfill);
    EMS_CHECK(it->packet->has_backlog && it->packet->backlog == 3); /* the rest kept as stored */
    s->seqs[s->packets++] = it->packet->seq;
}

static int sink_send(void *ud, const char *text, size_t len)
{
    sink_t *s = ud;
    if (s->fail_next) {
        int rc = s->fail_next;
        s->fail_next = 0;
        return rc;
    }
    ems_verr_t err;
    int n0 = s->packets;
    int bad = ems_batch_decode(text, len, sink_item, s, &err);
    if (bad != 0)
        EMS_FAIL("batch refused (%d): %s: %s", bad, err.path, err.reason);
    if (len > s->max_len)
        s->max_len = len;
    s->sizes[s->batches++] = s->packets - n0;
    return 0;
}

static ems_backfill_config_t cfg(unsigned batch, unsigned inflight)
{
    ems_backfill_config_t c;
    ems_backfill_config_default(&c);
    c.batch_max = batch;
    c.inflight_max = inflight;
    c.interval_ms = 200;
    c.ack_timeout_ms = 5000;
    return c;
}

static void ack_range(ems_backfill_t *b, tmp_t *t, uint64_t first, uint64_t last)
{
    uint64_t r[1][2] = {{first, last}};
    EMS_CHECK_INT(ems_store_ack(t->st, (const uint64_t(*)[2])r, 1, NULL), ==, 0);
    ems_backfill_acked(b, (const uint64_t(*)[2])r, 1);
}

/* ------------------------------------------------------------ tests */

/* Nothing moves before the session's first live packet: live goes first. */
static void test_waits_for_the_first_live_packet(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 30);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(100, 4);
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, 0); /* no session */
    ems_backfill_session(&b);
    EMS_CHECK_INT(ems_backfill_pump(&b, 1000, true, sink_send, &s), ==, 0);
    EMS_CHECK_INT(s.batches, ==, 0);
    append(&t, 1); /* the live packet of the next tick, seq 31 */
    ems_backfill_live_sent(&b, 31, 1000);
    EMS_CHECK_INT(ems_backfill_pump(&b, 1000, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(s.batches, ==, 1);
    EMS_CHECK_INT(s.packets, ==, 30); /* the backlog, without the live one */
    for (int i = 0; i < 30; i++)
        EMS_CHECK_INT(s.seqs[i], ==, i + 1); /* oldest first */
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* At most inflight_max batches without an ack; acks open the window. */
static void test_inflight_bound_and_acks(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 500);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(50, 3);
    c.ack_timeout_ms = 1000000; /* the live seq 1000 below is never acked */
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    ems_backfill_live_sent(&b, 1000, 0);
    int64_t now = 0;
    for (int i = 0; i < 20; i++, now += 200)
        ems_backfill_pump(&b, now, true, sink_send, &s);
    EMS_CHECK_INT(s.batches, ==, 3);
    EMS_CHECK_INT(s.packets, ==, 150);
    ems_backfill_stats_t st;
    ems_backfill_stats(&b, &st);
    EMS_CHECK_INT(st.inflight, ==, 3);
    /* A partial ack of the first batch frees nothing; the whole batch does. */
    ack_range(&b, &t, 1, 49);
    EMS_CHECK_INT(ems_backfill_pump(&b, now, true, sink_send, &s), ==, 0);
    ack_range(&b, &t, 50, 50);
    EMS_CHECK_INT(ems_backfill_pump(&b, now, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(s.seqs[150], ==, 151);
    /* Acking everything drains the rest, then the session is done. */
    for (int i = 0; i < 40; i++) {
        now += 200;
        ack_range(&b, &t, 1, s.seqs[s.packets - 1]); /* what the cloud has got */
        ems_backfill_pump(&b, now, true, sink_send, &s);
    }
    ack_range(&b, &t, 1, s.seqs[s.packets - 1]);
    EMS_CHECK_INT(s.packets, ==, 500);
    for (int i = 0; i < 500; i++)
        EMS_CHECK_INT(s.seqs[i], ==, i + 1);
    ems_backfill_pump(&b, now + 1000, true, sink_send, &s);
    EMS_CHECK(!ems_backfill_busy(&b));
    EMS_CHECK_INT(ems_store_pending(t.st), ==, 0);
    ems_backfill_stats(&b, &st);
    EMS_CHECK_INT(st.acked, ==, 500);
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* The interval paces batches; a busy socket holds them back. */
static void test_interval_and_idle_link(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 300);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(10, 64);
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    ems_backfill_live_sent(&b, 9999, 1000);
    EMS_CHECK_INT(ems_backfill_pump(&b, 1000, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(ems_backfill_pump(&b, 1000, true, sink_send, &s), ==, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 1199, true, sink_send, &s), ==, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 1200, false, sink_send, &s), ==, 0); /* socket busy */
    EMS_CHECK_INT(ems_backfill_pump(&b, 1200, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(s.batches, ==, 2);
    EMS_CHECK_INT(s.sizes[0], ==, 10);
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* A batch never exceeds frame_max bytes (the 64 KiB message limit). */
static void test_frame_limit(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 100);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(100, 64);
    c.frame_max = 2048;
    c.interval_ms = 0;
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    ems_backfill_live_sent(&b, 9999, 0);
    while (ems_backfill_pump(&b, 0, true, sink_send, &s) == 1) {
    }
    EMS_CHECK_INT(s.packets, ==, 100);
    EMS_CHECK(s.batches >= 15);
    EMS_CHECK(s.max_len <= 2048);
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* No ack within ack_timeout_ms: everything unacked is sent again. */
static void test_ack_timeout_resends(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 20);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(100, 1);
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    append(&t, 1);
    ems_backfill_live_sent(&b, 21, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(ems_backfill_pump(&b, 4999, true, sink_send, &s), ==, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 5000, true, sink_send, &s), ==, 1);
    /* The resend holds the 20 again and the live packet 21 (never acked). */
    EMS_CHECK_INT(s.packets, ==, 41);
    EMS_CHECK_INT(s.seqs[20], ==, 1);
    EMS_CHECK_INT(s.seqs[40], ==, 21);
    ems_backfill_stats_t st;
    ems_backfill_stats(&b, &st);
    EMS_CHECK_INT(st.restarts, ==, 1);
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* A live packet that stays unacked also triggers the resend. */
static void test_live_ack_timeout(void)
{
    tmp_t t;
    tmp_open(&t);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(100, 4);
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    append(&t, 2);
    ems_backfill_live_sent(&b, 1, 0);
    ems_backfill_live_sent(&b, 2, 1000);
    uint64_t r[1][2] = {{2, 2}};
    EMS_CHECK_INT(ems_store_ack(t.st, (const uint64_t(*)[2])r, 1, NULL), ==, 0);
    ems_backfill_acked(&b, (const uint64_t(*)[2])r, 1);
    EMS_CHECK_INT(ems_backfill_pump(&b, 4999, true, sink_send, &s), ==, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 5000, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(s.packets, ==, 1);
    EMS_CHECK_INT(s.seqs[0], ==, 1); /* only the one without an ack */
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* A live packet whose send failed (the link stayed up) is tracked like a
 * sent one: the ack timeout sends it again; only a full queue drops the link. */
static void test_live_send_failure_resent(void)
{
    tmp_t t;
    tmp_open(&t);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(100, 4);
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    append(&t, 2);
    EMS_CHECK(!ems_backfill_live_result(&b, 1, 0, 0));
    EMS_CHECK(!ems_backfill_live_result(&b, 2, 1000, EMS_ENOMEM));
    uint64_t r[1][2] = {{1, 1}};
    EMS_CHECK_INT(ems_store_ack(t.st, (const uint64_t(*)[2])r, 1, NULL), ==, 0);
    ems_backfill_acked(&b, (const uint64_t(*)[2])r, 1);
    EMS_CHECK_INT(ems_backfill_pump(&b, 5999, true, sink_send, &s), ==, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 6000, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(s.packets, ==, 1);
    EMS_CHECK_INT(s.seqs[0], ==, 2); /* the one that never left */
    EMS_CHECK(ems_backfill_live_result(&b, 3, 7000, EMS_ENOSPC));
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* A nack retires the packet from its batch; the store drops it. */
static void test_nack_retires(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 3);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(100, 1);
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    ems_backfill_live_sent(&b, 100, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(ems_store_nack(t.st, 2), ==, 1);
    ems_backfill_nacked(&b, 2);
    ack_range(&b, &t, 1, 1);
    ems_backfill_stats_t st;
    ems_backfill_stats(&b, &st);
    EMS_CHECK_INT(st.inflight, ==, 1);
    ack_range(&b, &t, 3, 3);
    ems_backfill_stats(&b, &st);
    EMS_CHECK_INT(st.inflight, ==, 0);
    EMS_CHECK_INT(ems_store_pending(t.st), ==, 0);
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* A failed send restarts the session: the taken packets are not lost. */
static void test_send_failure_keeps_packets(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 5);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(100, 4);
    c.interval_ms = 0;
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    ems_backfill_live_sent(&b, 100, 0);
    s.fail_next = EMS_ENOSPC;
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, EMS_ENOSPC);
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, 1);
    EMS_CHECK_INT(s.packets, ==, 5);
    EMS_CHECK_INT(s.seqs[0], ==, 1);
    ems_backfill_free(&b);
    tmp_close(&t);
}

/* The link going down stops everything; a new session starts over. */
static void test_down_and_new_session(void)
{
    tmp_t t;
    tmp_open(&t);
    append(&t, 10);
    static ems_backfill_t b;
    ems_backfill_config_t c = cfg(4, 8);
    c.interval_ms = 0;
    EMS_CHECK_INT(ems_backfill_init(&b, t.st, &c), ==, 0);
    static sink_t s;
    ems_backfill_session(&b);
    ems_backfill_live_sent(&b, 100, 0);
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, 1);
    ack_range(&b, &t, 1, 4);
    ems_backfill_down(&b);
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, 0);
    ems_backfill_live_sent(&b, 101, 0); /* ignored without a session */
    EMS_CHECK_INT(ems_backfill_pump(&b, 0, true, sink_send, &s), ==, 0);
    ems_backfill_session(&b);
    ems_backfill_live_sent(&b, 102, 0);
    while (ems_backfill_pump(&b, 0, true, sink_send, &s) == 1) {
    }
    /* 4 first, then 5..10 again from the buffer (1..4 were acked). */
    EMS_CHECK_INT(s.packets, ==, 10);
    EMS_CHECK_INT(s.seqs[4], ==, 5);
    EMS_CHECK_INT(s.seqs[9], ==, 10);
    ems_backfill_free(&b);
    tmp_close(&t);
}

int main(void)
{
    EMS_RUN(test_waits_for_the_first_live_packet);
    EMS_RUN(test_inflight_bound_and_acks);
    EMS_RUN(test_interval_and_idle_link);
    EMS_RUN(test_frame_limit);
    EMS_RUN(test_ack_timeout_resends);
    EMS_RUN(test_live_ack_timeout);
    EMS_RUN(test_live_send_failure_resent);
    EMS_RUN(test_nack_retires);
    EMS_RUN(test_send_failure_keeps_packets);
    EMS_RUN(test_down_and_new_session);
    EMS_TEST_END();
}
