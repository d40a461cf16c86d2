/* test_edge_store.c: the edge's store-and-forward buffer (edge/store.h) on
 * real files in a fresh temp folder per test: append/backlog/ack semantics,
 * sequence numbers across reopen, crash and simulated reboot, bounds and
 * eviction, kill -9 at random moments, and damaged files (truncated,
 * bit-flipped, emptied, foreign) that must never crash the store nor make it
 * hand out a record that is not exactly what was appended.
 *
 * Every payload is a function of its seq (payload_of) and every timestamp
 * too (ts_of), so any record the store hands out can be checked byte for
 * byte.
 */
#define EMS_TEST_TIMEOUT_S 240
#include "ems_test.h"

#include "error.h"
#include "log.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

/* ------------------------------------------------------------ helpers */

typedef struct {
    char dir[128];
    char path[192];
    char log[192];
} tmp_t;

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* A fresh folder, and a tee for stderr: a helper process copies every line
 * (the store's log and the harness's failure messages) both to the real
 * stderr and to a file in the folder, where a test looks for the lines it
 * expects. */
static void tmp_init(tmp_t *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/ems-store-test-XXXXXX");
    if (!mkdtemp(t->dir))
        EMS_FAIL("mkdtemp: %s", strerror(errno));
    snprintf(t->path, sizeof t->path, "%s/buffer.db", t->dir);
    snprintf(t->log, sizeof t->log, "%s/log.txt", t->dir);
    int fd = open(t->log, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0600);
    int p[2];
    EMS_CHECK(fd >= 0 && pipe(p) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    EMS_CHECK(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        char buf[4096];
        ssize_t n;
        while ((n = read(p[0], buf, sizeof buf)) > 0) {
            if (write(fd, buf, (size_t)n) != n || write(2, buf, (size_t)n) != n)
                break;
        }
        _exit(0);
    }
    close(p[0]);
    close(fd);
    dup2(p[1], 2);
    close(p[1]);
}

static void tmp_done(tmp_t *t)
{
    nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *len = 0;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    EMS_CHECK(b != NULL);
    size_t r = fread(b, 1, (size_t)n, f);
    fclose(f);
    b[r] = '\0';
    *len = r;
    return b;
}

static void spit(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    EMS_CHECK(f != NULL);
    EMS_CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}

/* Waits until the tee has written everything logged so far (a marker line
 * went through it), then looks for `needle`. */
static bool log_has(const tmp_t *t, const char *needle)
{
    static unsigned mark_no;
    char mark[64];
    int ml = snprintf(mark, sizeof mark, "# mark %u %d\n", ++mark_no, (int)getpid());
    EMS_CHECK(write(2, mark, (size_t)ml) == ml);
    mark[ml - 1] = '\0';
    for (int i = 0; i < 2000; i++) {
        size_t n;
        char *b = slurp(t->log, &n);
        if (b && strstr(b, mark)) {
            bool found = strstr(b, needle) != NULL;
            free(b);
            return found;
        }
        free(b);
        usleep(1000);
    }
    EMS_FAIL("the stderr tee is stuck");
}

static void log_clear(const tmp_t *t)
{
    EMS_CHECK(truncate(t->log, 0) == 0);
}

static bool exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int64_t ts_of(uint64_t seq)
{
    return 1769860800000LL + (int64_t)seq * 1000;
}

/* A telemetry-like JSON text of about 450 bytes, determined by seq. */
static size_t payload_of(uint64_t seq, char *buf, size_t cap)
{
    uint64_t r = mix(seq);
    int n =
        snprintf(buf, cap,
                 "{\"device_id\":\"ems_001\",\"timestamp\":\"2026-01-31T12:00:%02u.000Z\","
                 "\"system_status\":{\"state\":\"CHARGING\",\"mode\":\"AUTO\",\"error_flags\":[],"
                 "\"wifi_strength\":-%u,\"target_mode\":\"AUTO\"},"
                 "\"battery\":{\"voltage\":%u.%u,\"current\":%u.%u,\"power\":%u.%u,\"soc\":%u.%u,"
                 "\"temperature\":%u.%u},"
                 "\"grid\":{\"voltage\":%u.%u,\"power\":-%u,\"frequency\":%u.%02u},"
                 "\"seq\":%" PRIu64 ",\"clock_synced\":true,\"pad\":\"%016" PRIx64 "%016" PRIx64
                 "%016" PRIx64 "\"}",
                 (unsigned)(seq % 60), (unsigned)(r % 90), 48 + (unsigned)(r >> 8) % 8,
                 (unsigned)(r >> 11) % 10, (unsigned)(r >> 14) % 40, (unsigned)(r >> 17) % 10,
                 (unsigned)(r >> 20) % 5000, (unsigned)(r >> 23) % 10, (unsigned)(r >> 26) % 100,
                 (unsigned)(r >> 29) % 10, 20 + (unsigned)(r >> 32) % 20, (unsigned)(r >> 35) % 10,
                 225 + (unsigned)(r >> 38) % 10, (unsigned)(r >> 41) % 10,
                 (unsigned)(r >> 44) % 3000, 49 + (unsigned)(r >> 47) % 2,
                 (unsigned)(r >> 50) % 100, seq, mix(r), mix(r + 1), mix(r + 2));
    EMS_CHECK(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static void default_cfg(ems_store_config_t *cfg, const tmp_t *t)
{
    ems_store_config_default(cfg);
    cfg->path = t->path;
    cfg->boot_id = "boot-A";
}

static ems_store_t *open_ok(const ems_store_config_t *cfg)
{
    ems_store_t *st = NULL;
    int rc = ems_store_open(&st, cfg);
    if (rc != 0)
        EMS_FAIL("ems_store_open: %s", ems_strerror(rc));
    return st;
}

static uint64_t append_one(ems_store_t *st)
{
    char buf[600];
    uint64_t seq = ems_store_next_seq(st);
    size_t len = payload_of(seq, buf, sizeof buf);
    int rc = ems_store_append(st, seq, ts_of(seq), buf, len);
    if (rc != 0)
        EMS_FAIL("append seq %" PRIu64 ": %s", seq, ems_strerror(rc));
    return seq;
}

static void append_n(ems_store_t *st, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        append_one(st);
}

/* What a backlog call handed out, each record checked against its seq. */
typedef struct {
    uint64_t *seq;
    size_t n, cap;
    size_t mismatches;
    size_t stop_after; /* 0: take all */
} got_t;

static int got_cb(void *ctx, const ems_store_rec_t *r)
{
    got_t *g = ctx;
    if (g->stop_after && g->n >= g->stop_after)
        return 1;
    char buf[600];
    size_t len = payload_of(r->seq, buf, sizeof buf);
    if (r->len != len || memcmp(r->data, buf, len) != 0 || r->ts_ms != ts_of(r->seq))
        g->mismatches++;
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 1024;
        g->seq = realloc(g->seq, g->cap * sizeof *g->seq);
        EMS_CHECK(g->seq != NULL);
    }
    g->seq[g->n++] = r->seq;
    return 0;
}

static int backlog(ems_store_t *st, ems_store_order_t order, size_t max, got_t *g)
{
    int n = ems_store_backlog(st, order, max, got_cb, g);
    EMS_CHECK_INT(n, >=, 0);
    return n;
}

/* Everything buffered, oldest first, in a fresh session. */
static void drain_all(ems_store_t *st, got_t *g)
{
    ems_store_session_start(st);
    while (backlog(st, EMS_STORE_OLDEST_FIRST, EMS_STORE_BATCH_MAX, g) > 0) {
    }
    EMS_CHECK_INT(g->mismatches, ==, 0);
    for (size_t i = 1; i < g->n; i++)
        EMS_CHECK(g->seq[i] > g->seq[i - 1]);
}

static void got_free(got_t *g)
{
    free(g->seq);
    memset(g, 0, sizeof *g);
}

static void ack1(ems_store_t *st, uint64_t a, uint64_t b, uint64_t expect)
{
    uint64_t r[1][2] = {{a, b}}, d = 99;
    EMS_CHECK_INT(ems_store_ack(st, (const uint64_t(*)[2])r, 1, &d), ==, 0);
    EMS_CHECK_INT(d, ==, expect);
}

/* ------------------------------------------------------------ semantics */

static void test_append_backlog_ack(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    ems_store_t *st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 1);
    int64_t ts;
    EMS_CHECK_INT(ems_store_oldest_ts(st, &ts), ==, EMS_ENOENT);
    append_n(st, 10);
    EMS_CHECK_INT(ems_store_pending(st), ==, 10);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 11);

    /* Appended before the session: all of it is backlog, handed out once. */
    ems_store_session_start(st);
    got_t g = {0};
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 4, &g), ==, 4);
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 4, &g), ==, 4);
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 4, &g), ==, 2);
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 4, &g), ==, 0);
    EMS_CHECK_INT(g.n, ==, 10);
    EMS_CHECK_INT(g.mismatches, ==, 0);
    for (size_t i = 0; i < 10; i++)
        EMS_CHECK_INT(g.seq[i], ==, i + 1);

    /* Acks delete; what was sent but not acked comes back after a reconnect. */
    uint64_t r[2][2] = {{1, 3}, {5, 5}}, d = 0;
    EMS_CHECK_INT(ems_store_ack(st, (const uint64_t(*)[2])r, 2, &d), ==, 0);
    EMS_CHECK_INT(d, ==, 4);
    EMS_CHECK_INT(ems_store_pending(st), ==, 6);
    EMS_CHECK_INT(ems_store_oldest_ts(st, &ts), ==, 0);
    EMS_CHECK_INT(ts, ==, ts_of(4));
    got_free(&g);
    drain_all(st, &g);
    EMS_CHECK_INT(g.n, ==, 6);
    const uint64_t want[] = {4, 6, 7, 8, 9, 10};
    for (size_t i = 0; i < 6; i++)
        EMS_CHECK_INT(g.seq[i], ==, want[i]);
    got_free(&g);

    ems_store_stats_t s;
    ems_store_stats(st, &s);
    EMS_CHECK_INT(s.pending, ==, 6);
    EMS_CHECK_INT(s.acked_total, ==, 4);
    EMS_CHECK_INT(s.next_seq, ==, 11);
    EMS_CHECK(s.file_bytes >= s.used_bytes && s.used_bytes > 0);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);

    /* All of it, counters included, survives a reopen. */
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st), ==, 6);
    ems_store_stats(st, &s);
    EMS_CHECK_INT(s.acked_total, ==, 4);
    drain_all(st, &g);
    EMS_CHECK_INT(g.n, ==, 6);
    got_free(&g);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

static void test_orders_window_live(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 20);
    ems_store_session_start(st);
    got_t g = {0};
    /* Newest-first and oldest-first shrink one unsent window from both ends. */
    EMS_CHECK_INT(backlog(st, EMS_STORE_NEWEST_FIRST, 3, &g), ==, 3);
    EMS_CHECK_INT(g.seq[0], ==, 20);
    EMS_CHECK_INT(g.seq[2], ==, 18);
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 2, &g), ==, 2);
    EMS_CHECK_INT(g.seq[3], ==, 1);
    EMS_CHECK_INT(g.seq[4], ==, 2);

    /* Live packets appended during the session are never backlog in it. */
    append_n(st, 5); /* 21..25 */
    /* A callback that stops leaves the record eligible. */
    g.stop_after = 7;
    EMS_CHECK_INT(backlog(st, EMS_STORE_NEWEST_FIRST, 100, &g), ==, 2);
    EMS_CHECK_INT(g.seq[5], ==, 17);
    EMS_CHECK_INT(g.seq[6], ==, 16);
    g.stop_after = 0;
    EMS_CHECK_INT(backlog(st, EMS_STORE_NEWEST_FIRST, 1000, &g), ==, 13);
    EMS_CHECK_INT(g.seq[7], ==, 15);
    EMS_CHECK_INT(g.seq[19], ==, 3);
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 1000, &g), ==, 0);
    EMS_CHECK_INT(backlog(st, EMS_STORE_NEWEST_FIRST, 1000, &g), ==, 0);
    EMS_CHECK_INT(g.mismatches, ==, 0);
    for (size_t i = 0; i < g.n; i++)
        EMS_CHECK(g.seq[i] <= 20);
    got_free(&g);

    /* A new session (reconnect) makes every unacked packet eligible again. */
    ack1(st, 1, 10, 10);
    drain_all(st, &g);
    EMS_CHECK_INT(g.n, ==, 15);
    EMS_CHECK_INT(g.seq[0], ==, 11);
    EMS_CHECK_INT(g.seq[14], ==, 25);
    got_free(&g);
    /* max 0 and max above the cap */
    ems_store_session_start(st);
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 0, &g), ==, 0);
    EMS_CHECK_INT(backlog(st, EMS_STORE_OLDEST_FIRST, 1u << 30, &g), ==, 15);
    got_free(&g);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

static void test_seq_survives_ack_and_reopen(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.seq_block = 8; /* several reservations on the way */
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 30);
    ack1(st, 1, 30, 30);
    EMS_CHECK_INT(ems_store_pending(st), ==, 0);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    for (int round = 0; round < 3; round++) {
        st = open_ok(&cfg);
        /* Clean close: no gap, even though every packet was deleted. */
        EMS_CHECK_INT(ems_store_next_seq(st), ==, 31 + round * 5);
        append_n(st, 5);
        ack1(st, 0, UINT64_MAX, 5);
        EMS_CHECK_INT(ems_store_close(st), ==, 0);
    }
    /* Even with the database deleted, PATH.seq keeps numbering above. */
    EMS_CHECK_INT(unlink(t.path), ==, 0);
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 46);
    EMS_CHECK(log_has(&t, "missing or empty"));
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    /* With both files gone, numbering starts at first_seq (the daemon's
     * clock floor), not at 1. */
    char p[256];
    snprintf(p, sizeof p, "%s.seq", t.path);
    EMS_CHECK_INT(unlink(t.path), ==, 0);
    EMS_CHECK_INT(unlink(p), ==, 0);
    cfg.first_seq = 1769860800123ull;
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 1769860800123ull);
    append_n(st, 2);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    cfg.first_seq = 5; /* only used when starting from nothing */
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 1769860800125ull);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

static void test_ack_ranges_and_nack(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 50);
    /* Overlapping ranges count each packet once. */
    uint64_t r1[3][2] = {{1, 10}, {5, 15}, {15, 15}};
    uint64_t d = 0;
    EMS_CHECK_INT(ems_store_ack(st, (const uint64_t(*)[2])r1, 3, &d), ==, 0);
    EMS_CHECK_INT(d, ==, 15);
    /* Already deleted, never handed out, beyond the seq space: no effect. */
    ack1(st, 1, 15, 0);
    ack1(st, 51, 1000, 0);
    ack1(st, UINT64_MAX - 1, UINT64_MAX, 0);
    ack1(st, 0, 0, 0);
    /* Partly known. */
    ack1(st, 45, 60, 6);
    /* A reversed range refuses the whole message and deletes nothing. */
    uint64_t r2[2][2] = {{16, 20}, {30, 29}};
    d = 7;
    EMS_CHECK_INT(ems_store_ack(st, (const uint64_t(*)[2])r2, 2, &d), ==, EMS_EINVAL);
    EMS_CHECK_INT(d, ==, 0);
    EMS_CHECK_INT(ems_store_pending(st), ==, 29);
    EMS_CHECK_INT(ems_store_ack(st, NULL, 0, &d), ==, 0);
    EMS_CHECK_INT(ems_store_ack(st, NULL, 1, &d), ==, EMS_EINVAL);
    /* nack: 1 when it was buffered, 0 when not. */
    EMS_CHECK_INT(ems_store_nack(st, 20), ==, 1);
    EMS_CHECK_INT(ems_store_nack(st, 20), ==, 0);
    EMS_CHECK_INT(ems_store_nack(st, 999), ==, 0);
    ems_store_stats_t s;
    ems_store_stats(st, &s);
    EMS_CHECK_INT(s.pending, ==, 28);
    EMS_CHECK_INT(s.acked_total, ==, 21);
    EMS_CHECK_INT(s.nacked_total, ==, 1);
    got_t g = {0};
    drain_all(st, &g);
    EMS_CHECK_INT(g.n, ==, 28);
    EMS_CHECK_INT(g.seq[0], ==, 16);
    EMS_CHECK_INT(g.seq[27], ==, 44);
    for (size_t i = 0; i < g.n; i++)
        EMS_CHECK(g.seq[i] != 20);
    got_free(&g);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    st = open_ok(&cfg);
    ems_store_stats(st, &s);
    EMS_CHECK_INT(s.pending, ==, 28);
    EMS_CHECK_INT(s.nacked_total, ==, 1);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

static void test_bad_arguments(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    ems_store_t *st = NULL;
    ems_store_config_t bad = cfg;
    bad.path = NULL;
    EMS_CHECK_INT(ems_store_open(&st, &bad), ==, EMS_EINVAL);
    bad = cfg;
    bad.max_bytes = 1000;
    EMS_CHECK_INT(ems_store_open(&st, &bad), ==, EMS_EINVAL);
    bad = cfg;
    bad.seq_block = 0;
    EMS_CHECK_INT(ems_store_open(&st, &bad), ==, EMS_EINVAL);
    bad = cfg;
    bad.path = "/nonexistent-folder-ems/x.db";
    EMS_CHECK(ems_store_open(&st, &bad) < 0);
    EMS_CHECK(st == NULL);

    ems_store_sync_t sy;
    EMS_CHECK_INT(ems_store_sync_parse("full", &sy), ==, 0);
    EMS_CHECK_INT(sy, ==, EMS_STORE_SYNC_FULL);
    EMS_CHECK_INT(ems_store_sync_parse("normal", &sy), ==, 0);
    EMS_CHECK_INT(sy, ==, EMS_STORE_SYNC_NORMAL);
    EMS_CHECK_INT(ems_store_sync_parse("off", &sy), ==, 0);
    EMS_CHECK_INT(ems_store_sync_parse("FULL", &sy), ==, EMS_EINVAL);

    st = open_ok(&cfg);
    static char big[EMS_STORE_RECORD_MAX + 1];
    EMS_CHECK_INT(ems_store_append(st, 1, 0, "x", 0), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_store_append(st, 1, 0, NULL, 1), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_store_append(st, 1, 0, big, sizeof big), ==, EMS_EMSGSIZE);
    EMS_CHECK_INT(ems_store_append(st, 2, 0, "x", 1), ==, EMS_EINVAL); /* not next_seq */
    EMS_CHECK_INT(ems_store_append(st, 0, 0, "x", 1), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 1); /* refused calls consume nothing */
    EMS_CHECK_INT(ems_store_append(st, 1, 0, big, EMS_STORE_RECORD_MAX), ==, 0);
    EMS_CHECK_INT(ems_store_backlog(st, (ems_store_order_t)7, 1, got_cb, NULL), ==, EMS_EINVAL);
    /* A second opener of the same buffer is refused while the first holds it. */
    ems_store_t *st2 = NULL;
    EMS_CHECK_INT(ems_store_open(&st2, &cfg), ==, EMS_EAGAIN);
    EMS_CHECK(log_has(&t, "in use by another process"));
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    st2 = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st2), ==, 1);
    EMS_CHECK_INT(ems_store_close(st2), ==, 0);
    EMS_CHECK_INT(ems_store_close(NULL), ==, 0);
    tmp_done(&t);
}

/* ------------------------------------------------------------ bounds */

static void test_evict_by_count(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.max_packets = 100;
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 250);
    ems_store_stats_t s;
    ems_store_stats(st, &s);
    EMS_CHECK(s.pending <= 100 && s.pending >= 80);
    EMS_CHECK_INT(s.evicted_total + s.pending, ==, 250);
    EMS_CHECK(log_has(&t, "buffer full (max_packets): evicted the"));
    /* The oldest went; what is left is the newest, without a hole. */
    got_t g = {0};
    drain_all(st, &g);
    EMS_CHECK_INT(g.n, ==, s.pending);
    EMS_CHECK_INT(g.seq[0], ==, s.evicted_total + 1);
    EMS_CHECK_INT(g.seq[g.n - 1], ==, 250);
    got_free(&g);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    st = open_ok(&cfg);
    ems_store_stats_t s2;
    ems_store_stats(st, &s2);
    EMS_CHECK_INT(s2.evicted_total, ==, s.evicted_total); /* persisted for metrics */
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

static void test_evict_by_size(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.max_bytes = 1 << 20;
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 6000); /* about 2.8 MB of payload */
    ems_store_stats_t s;
    ems_store_stats(st, &s);
    EMS_CHECK(s.evicted_total > 0);
    EMS_CHECK_INT(s.evicted_total + s.pending, ==, 6000);
    EMS_CHECK(s.used_bytes <= cfg.max_bytes);
    EMS_CHECK(s.file_bytes <= cfg.max_bytes + 4 * 4096);
    EMS_CHECK(s.pending > 1500); /* it does fill the space it has */
    EMS_CHECK(log_has(&t, "buffer full (max_bytes)"));
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    struct stat sb;
    EMS_CHECK_INT(stat(t.path, &sb), ==, 0);
    EMS_CHECK((uint64_t)sb.st_size <= cfg.max_bytes + 4 * 4096);
    got_t g = {0};
    st = open_ok(&cfg);
    drain_all(st, &g);
    EMS_CHECK_INT(g.seq[0], ==, s.evicted_total + 1);
    EMS_CHECK_INT(g.seq[g.n - 1], ==, 6000);
    got_free(&g);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

/* With the file system "almost full" (min_free above what is free), the
 * file stops growing and the oldest packets make room instead. */
static void test_no_growth_when_disk_low(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 500);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    struct stat before, after;
    EMS_CHECK_INT(stat(t.path, &before), ==, 0);
    cfg.min_free_bytes = UINT64_MAX / 2;
    st = open_ok(&cfg);
    append_n(st, 1000);
    ems_store_stats_t s;
    ems_store_stats(st, &s);
    EMS_CHECK(s.evicted_total > 0);
    EMS_CHECK_INT(s.evicted_total + s.pending, ==, 1500);
    EMS_CHECK(log_has(&t, "file system almost full"));
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    EMS_CHECK_INT(stat(t.path, &after), ==, 0);
    EMS_CHECK(after.st_size <= before.st_size + 2 * 4096);
    tmp_done(&t);
}

static void test_expire_by_age(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.max_age_ms = 10000;
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 100);
    uint64_t n = 0;
    /* ts_of(seq) = base + 1000 * seq: at base + 100 s, seq 1..89 are too old. */
    EMS_CHECK_INT(ems_store_expire(st, ts_of(100), &n), ==, 0);
    EMS_CHECK_INT(n, ==, 89);
    EMS_CHECK_INT(ems_store_pending(st), ==, 11);
    int64_t ts = 0;
    EMS_CHECK_INT(ems_store_oldest_ts(st, &ts), ==, 0);
    EMS_CHECK_INT(ts, ==, ts_of(90));
    EMS_CHECK(log_has(&t, "expired 89 packets"));
    EMS_CHECK_INT(ems_store_expire(st, ts_of(100), &n), ==, 0);
    EMS_CHECK_INT(n, ==, 0);
    /* A clock at 1970 expires nothing. */
    EMS_CHECK_INT(ems_store_expire(st, 0, &n), ==, 0);
    EMS_CHECK_INT(n, ==, 0);
    /* A packet stamped far in the future stops the walk: nothing younger
     * than the limit is dropped, even out of order. */
    char buf[16] = "{\"x\":1}";
    uint64_t s101 = ems_store_next_seq(st);
    EMS_CHECK_INT(ems_store_append(st, s101, ts_of(1000000), buf, strlen(buf)), ==, 0);
    append_n(st, 3);
    EMS_CHECK_INT(ems_store_expire(st, ts_of(200), &n), ==, 0);
    EMS_CHECK_INT(n, ==, 11);
    EMS_CHECK_INT(ems_store_pending(st), ==, 4);
    ems_store_stats_t s;
    ems_store_stats(st, &s);
    EMS_CHECK_INT(s.expired_total, ==, 100);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    /* max_age 0: never. */
    cfg.max_age_ms = 0;
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_expire(st, INT64_MAX, &n), ==, 0);
    EMS_CHECK_INT(n, ==, 0);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

static void test_bounded_memory(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.cache_kib = 512;
    ems_store_t *st = open_ok(&cfg);
    sqlite3_int64 base = sqlite3_memory_used();
    append_n(st, 20000);
    got_t g = {0};
    drain_all(st, &g);
    EMS_CHECK_INT(g.n, ==, 20000);
    got_free(&g);
    ack1(st, 1, 20000, 20000);
    EMS_CHECK_INT(ems_store_flush(st), ==, 0);
    sqlite3_int64 high = sqlite3_memory_highwater(0);
    /* The page cache (512 KiB) plus SQLite's fixed overhead, whatever the
     * size of the buffer. memory_used is 0 when SQLite was built without
     * memory statistics; then there is nothing to check. */
    if (base > 0)
        EMS_CHECK_INT(high, <, 4 << 20);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

/* ------------------------------------------------------------ crashes */

enum { AFTER_NOTHING, AFTER_APPEND, AFTER_TICK };

/* A child that appends n packets, optionally acks the older half and then
 * appends one more or waits and ticks, and dies without closing (as kill -9
 * would). */
static void crash_child(const ems_store_config_t *cfg, unsigned n, bool ack, int after)
{
    fflush(stdout);
    pid_t pid = fork();
    EMS_CHECK(pid >= 0);
    if (pid == 0) {
        ems_store_t *st = NULL;
        if (ems_store_open(&st, cfg) != 0)
            _exit(3);
        for (unsigned i = 0; i < n; i++) {
            char buf[600];
            uint64_t seq = ems_store_next_seq(st);
            size_t len = payload_of(seq, buf, sizeof buf);
            if (ems_store_append(st, seq, ts_of(seq), buf, len) != 0)
                _exit(4);
        }
        if (ack) {
            uint64_t r[1][2] = {{0, ems_store_next_seq(st) - 1 - n / 2}};
            ems_store_ack(st, (const uint64_t(*)[2])r, 1, NULL);
            if (ems_store_tick(st) != 0) /* too early: commits nothing */
                _exit(5);
        }
        if (after == AFTER_APPEND) {
            char buf[600];
            uint64_t seq = ems_store_next_seq(st);
            size_t len = payload_of(seq, buf, sizeof buf);
            if (ems_store_append(st, seq, ts_of(seq), buf, len) != 0)
                _exit(4);
        } else if (after == AFTER_TICK) {
            usleep(1100 * 1000);
            if (ems_store_tick(st) != 0)
                _exit(5);
        }
        _exit(0);
    }
    int status = 0;
    EMS_CHECK(waitpid(pid, &status, 0) == pid);
    EMS_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_crash_commit_policy(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    /* commit_interval 0: every append is committed when it returns. */
    crash_child(&cfg, 10, false, AFTER_NOTHING);
    ems_store_t *st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st), ==, 10);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 11); /* same boot: no gap */
    EMS_CHECK(log_has(&t, "integrity check: ok"));
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    /* Acks wait for the next commit point: the next append, or a tick once
     * they are a second old. Before that a crash loses them (the packets
     * are only sent again). */
    crash_child(&cfg, 10, true, AFTER_NOTHING); /* 11..20, ack 1..15 lost */
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st), ==, 20);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    crash_child(&cfg, 10, true, AFTER_APPEND); /* 21..31, ack 1..25 kept */
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st), ==, 6);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    crash_child(&cfg, 10, true, AFTER_TICK); /* 32..41, ack 1..36 kept */
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st), ==, 5);
    uint64_t next = ems_store_next_seq(st);
    EMS_CHECK_INT(next, ==, 42);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    /* Grouped commits: a crash loses what was not committed yet, but never
     * a sequence number. */
    cfg.commit_interval_ms = 600000;
    crash_child(&cfg, 10, false, AFTER_NOTHING);
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st), ==, 5);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, next + 10);
    /* ...and a flush commits them. */
    append_n(st, 3);
    EMS_CHECK_INT(ems_store_flush(st), ==, 0);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_pending(st), ==, 8);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

static void test_reboot_after_crash_skips_never_repeats(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.seq_block = 100;
    crash_child(&cfg, 150, false, AFTER_NOTHING); /* reservations at 1 and 101 */
    /* A different boot id: as after a power cut, the page cache may have
     * lost the last seqs, so numbering resumes at the durable reservation. */
    cfg.boot_id = "boot-B";
    ems_store_t *st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 201);
    EMS_CHECK_INT(ems_store_pending(st), ==, 150);
    EMS_CHECK(log_has(&t, "power loss?"));
    append_n(st, 3);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    /* After a clean close another reboot costs nothing. */
    cfg.boot_id = "boot-C";
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 204);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

/* A power cut keeps only what was fsynced. PATH.seq slot 0 is rewritten on
 * every append without fsync, so the cut is simulated by putting back slot
 * 0 as it was on disk before (right after the clean close); slot 1 is only
 * ever written with fsync. The numbers handed out after the restart must
 * not come back. */
static void test_power_cut_after_clean_restart(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 10);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    char p[256];
    snprintf(p, sizeof p, "%s.seq", t.path);
    size_t sl;
    char *clean = slurp(p, &sl);
    EMS_CHECK(clean && sl >= 4096 + 128);
    crash_child(&cfg, 3, false, AFTER_NOTHING); /* seq 11..13, then "power cut" */
    size_t nl;
    char *now = slurp(p, &nl);
    memcpy(now, clean, 128); /* slot 0 as the disk had it */
    spit(p, now, nl);
    cfg.boot_id = "boot-after-the-cut";
    st = open_ok(&cfg);
    EMS_CHECK(ems_store_next_seq(st) > 13);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    free(clean);
    free(now);
    tmp_done(&t);
}

typedef struct {
    uint8_t kind; /* 'a' appended a, 'k' acked a..b */
    uint64_t a, b;
} kill_rec_t;

static void kill_child_loop(const ems_store_config_t *cfg, int wfd)
{
    ems_store_t *st = NULL;
    if (ems_store_open(&st, cfg) != 0)
        _exit(3);
    for (unsigned i = 0;; i++) {
        char buf[600];
        uint64_t seq = ems_store_next_seq(st);
        size_t len = payload_of(seq, buf, sizeof buf);
        if (ems_store_append(st, seq, ts_of(seq), buf, len) != 0)
            _exit(4);
        kill_rec_t r;
        memset(&r, 0, sizeof r); /* no uninitialised padding into the pipe */
        r.kind = 'a';
        r.a = r.b = seq;
        if (write(wfd, &r, sizeof r) != (ssize_t)sizeof r)
            _exit(5);
        if (i % 5 == 4 && seq > 10) {
            uint64_t rg[1][2] = {{seq - 10, seq - 6}};
            if (ems_store_ack(st, (const uint64_t(*)[2])rg, 1, NULL) != 0)
                _exit(6);
            kill_rec_t k;
            memset(&k, 0, sizeof k);
            k.kind = 'k';
            k.a = seq - 10;
            k.b = seq - 6;
            if (write(wfd, &k, sizeof k) != (ssize_t)sizeof k)
                _exit(5);
        }
        if (i % 3 == 0 && ems_store_tick(st) != 0)
            _exit(7);
        if (i % 64 == 0) {
            got_t g = {0};
            ems_store_session_start(st);
            if (ems_store_backlog(st, EMS_STORE_OLDEST_FIRST, 20, got_cb, &g) < 0 || g.mismatches)
                _exit(8);
            free(g.seq);
        }
    }
}

#define KILL_MAX_SEQ (1u << 21)

/* Runs `rounds` child lifetimes, each ended by SIGKILL at a random moment,
 * and checks the buffer after each: it opens, nothing is damaged, seq goes
 * on above every number handed out, and (when every append commits) every
 * appended packet that was not acked is still there. */
static void kill9_rounds(const ems_store_config_t *cfg_in, int rounds, bool expect_all,
                         unsigned seed)
{
    ems_store_config_t cfg = *cfg_in;
    uint8_t *appended = calloc(KILL_MAX_SEQ, 1); /* 1 appended, 2 acked */
    EMS_CHECK(appended != NULL);
    uint64_t max_seq = 0;
    srand(seed);
    for (int round = 0; round < rounds; round++) {
        int fds[2];
        EMS_CHECK(pipe(fds) == 0);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        EMS_CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            kill_child_loop(&cfg, fds[1]);
        }
        close(fds[1]);
        /* Read what the child reports until a random moment, then kill it. */
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long deadline_ms = 20 + rand() % 300;
        uint64_t first_this_round = 0;
        kill_rec_t r;
        size_t have = 0;
        bool killed = false, eof = false;
        while (!eof) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long el = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
            if (!killed && el >= deadline_ms) {
                kill(pid, SIGKILL);
                killed = true;
            }
            struct pollfd p = {fds[0], POLLIN, 0};
            int pr = poll(&p, 1, killed ? 1000 : 5);
            if (pr <= 0)
                continue;
            ssize_t k = read(fds[0], (char *)&r + have, sizeof r - have);
            if (k == 0) {
                eof = true;
                break;
            }
            if (k < 0)
                continue;
            have += (size_t)k;
            if (have < sizeof r)
                continue;
            have = 0;
            if (r.kind == 'a') {
                /* Strictly increasing across every lifetime: no seq twice. */
                EMS_CHECK(r.a > max_seq);
                EMS_CHECK(r.a < KILL_MAX_SEQ);
                max_seq = r.a;
                if (!first_this_round)
                    first_this_round = r.a;
                appended[r.a] = 1;
            } else if (r.kind == 'k') {
                for (uint64_t s = r.a; s <= r.b && s < KILL_MAX_SEQ; s++)
                    if (appended[s])
                        appended[s] = 2;
            } else {
                EMS_FAIL("bad record from child");
            }
        }
        close(fds[0]);
        int status = 0;
        EMS_CHECK(waitpid(pid, &status, 0) == pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            EMS_FAIL("child ended with status %d before the kill", status);

        /* The check: a parent's open, after every kill. */
        ems_store_t *st = open_ok(&cfg);
        EMS_CHECK(ems_store_next_seq(st) > max_seq);
        got_t g = {0};
        drain_all(st, &g); /* every record byte-exact (mismatches == 0) */
        EMS_CHECK_INT(ems_store_pending(st), ==, g.n);
        ems_store_stats_t s;
        ems_store_stats(st, &s);
        EMS_CHECK_INT(s.corrupt_total, ==, 0);
        EMS_CHECK_INT(s.recoveries, ==, 0);
        size_t gi = 0;
        for (uint64_t q = 1; q <= max_seq; q++) {
            bool present = gi < g.n && g.seq[gi] == q;
            if (present)
                gi++;
            if (expect_all && appended[q] == 1 && !present)
                EMS_FAIL("round %d: seq %" PRIu64 " was appended, never acked, and is gone", round,
                         q);
        }
        /* Nothing beyond what may have been handed out (the child can die
         * between an append and its report: one more at most). */
        EMS_CHECK(gi == g.n || (gi == g.n - 1 && g.seq[gi] == max_seq + 1));
        if (gi == g.n - 1)
            max_seq++;
        got_free(&g);
        EMS_CHECK_INT(ems_store_close(st), ==, 0);
    }
    EMS_CHECK(max_seq > 50); /* the children did work */
    free(appended);
}

static void test_kill9_sync_normal(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.seq_block = 64;
    cfg.checkpoint_pages = 64; /* checkpoints run often, so kills hit them */
    kill9_rounds(&cfg, 10, true, 1);
    EMS_CHECK(!log_has(&t, "damaged"));
    tmp_done(&t);
}

static void test_kill9_sync_full_and_off(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.sync = EMS_STORE_SYNC_FULL;
    kill9_rounds(&cfg, 4, true, 2);
    cfg.sync = EMS_STORE_SYNC_OFF;
    kill9_rounds(&cfg, 4, true, 3);
    EMS_CHECK(!log_has(&t, "damaged"));
    tmp_done(&t);
}

static void test_kill9_grouped_commits(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.commit_interval_ms = 50;
    cfg.seq_block = 32;
    /* Presence is not promised (up to 50 ms may be lost), uniqueness and
     * integrity are. */
    kill9_rounds(&cfg, 8, false, 4);
    EMS_CHECK(!log_has(&t, "damaged"));
    tmp_done(&t);
}

/* ------------------------------------------------------------ damage */

/* Builds a cleanly closed buffer of n packets and returns copies of the
 * database and PATH.seq, to damage again and again. */
static void make_reference(const tmp_t *t, ems_store_config_t *cfg, unsigned n, char **db,
                           size_t *db_len, char **seq, size_t *seq_len)
{
    ems_store_t *st = open_ok(cfg);
    append_n(st, n);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    char p[256];
    *db = slurp(t->path, db_len);
    snprintf(p, sizeof p, "%s.seq", t->path);
    *seq = slurp(p, seq_len);
    EMS_CHECK(*db && *seq);
    snprintf(p, sizeof p, "%s-wal", t->path);
    EMS_CHECK(!exists(p)); /* a clean close leaves no WAL */
}

static void restore(const tmp_t *t, const char *db, size_t db_len, const char *seq, size_t seq_len)
{
    char p[256];
    spit(t->path, db, db_len);
    snprintf(p, sizeof p, "%s.seq", t->path);
    spit(p, seq, seq_len);
    snprintf(p, sizeof p, "%s-wal", t->path);
    unlink(p);
    snprintf(p, sizeof p, "%s.corrupt", t->path);
    unlink(p);
    snprintf(p, sizeof p, "%s.corrupt-wal", t->path);
    unlink(p);
}

/* Opens a damaged buffer and checks the promises: no crash, a clear line
 * when something was found, only byte-exact records, counts that agree,
 * seq above everything handed out, and a buffer that works afterwards. */
static void check_damaged_open(const tmp_t *t, const ems_store_config_t *cfg, unsigned n,
                               size_t *recovered)
{
    ems_store_t *st = open_ok(cfg);
    EMS_CHECK(ems_store_next_seq(st) > n);
    got_t g = {0};
    drain_all(st, &g);
    /* Without the check at open, a damaged interior page can hide rows
     * that SQLite never reports: they are not sent, only still counted. */
    if (cfg->check == EMS_STORE_CHECK_NEVER)
        EMS_CHECK(ems_store_pending(st) >= g.n);
    else
        EMS_CHECK_INT(ems_store_pending(st), ==, g.n);
    EMS_CHECK(g.n <= n);
    if (g.n < n && cfg->check != EMS_STORE_CHECK_NEVER)
        EMS_CHECK(log_has(t, "damaged") || log_has(t, "fails its checksum") ||
                  log_has(t, "missing or empty"));
    for (size_t i = 0; i < g.n; i++)
        EMS_CHECK(g.seq[i] >= 1 && g.seq[i] <= n);
    *recovered = g.n;
    got_free(&g);
    /* It keeps working: appends, acks, and a reopen that checks the whole
     * file finds it consistent (or repairs what the unchecked run missed). */
    append_n(st, 3);
    uint64_t r[1][2] = {{0, UINT64_MAX}}, d = 0;
    EMS_CHECK_INT(ems_store_ack(st, (const uint64_t(*)[2])r, 1, &d), ==, 0);
    if (cfg->check != EMS_STORE_CHECK_NEVER)
        EMS_CHECK_INT(ems_store_pending(st), ==, 0);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    ems_store_config_t again = *cfg;
    again.check = EMS_STORE_CHECK_ALWAYS;
    st = open_ok(&again);
    g = (got_t){0};
    drain_all(st, &g);
    EMS_CHECK_INT(ems_store_pending(st), ==, g.n);
    if (cfg->check != EMS_STORE_CHECK_NEVER)
        EMS_CHECK_INT(g.n, ==, 0);
    got_free(&g);
    EMS_CHECK(ems_store_next_seq(st) > n + 3);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
}

static void test_garbage_file_moved_aside(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    char *db, *seq;
    size_t dl, sl;
    make_reference(&t, &cfg, 50, &db, &dl, &seq, &sl);
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)mix(i);
    restore(&t, db, dl, seq, sl);
    spit(t.path, junk, sizeof junk);
    log_clear(&t);
    size_t rec = 0;
    check_damaged_open(&t, &cfg, 50, &rec);
    EMS_CHECK_INT(rec, ==, 0);
    EMS_CHECK(log_has(&t, "damaged: file is not a database"));
    EMS_CHECK(log_has(&t, "moved the damaged buffer aside"));
    char p[256];
    snprintf(p, sizeof p, "%s.corrupt", t.path);
    EMS_CHECK(exists(p));

    /* A valid SQLite file that is not ours is not trusted either. */
    restore(&t, db, dl, seq, sl);
    unlink(t.path);
    sqlite3 *other = NULL;
    EMS_CHECK(sqlite3_open(t.path, &other) == SQLITE_OK);
    EMS_CHECK(sqlite3_exec(other, "CREATE TABLE packets(x); INSERT INTO packets VALUES(1);", NULL,
                           NULL, NULL) == SQLITE_OK);
    sqlite3_close(other);
    log_clear(&t);
    check_damaged_open(&t, &cfg, 50, &rec);
    EMS_CHECK(log_has(&t, "not an ems buffer"));
    free(db);
    free(seq);
    tmp_done(&t);
}

static void test_truncated_database(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    const unsigned n = 3000;
    char *db, *seq;
    size_t dl, sl;
    make_reference(&t, &cfg, n, &db, &dl, &seq, &sl);
    srand(7);
    for (int i = 0; i < 12; i++) {
        size_t cut = i == 0 ? 0 : i == 1 ? 50 : i == 2 ? dl - 1 : (size_t)rand() % dl;
        restore(&t, db, dl, seq, sl);
        EMS_CHECK(truncate(t.path, (off_t)cut) == 0);
        log_clear(&t);
        size_t rec = 0;
        check_damaged_open(&t, &cfg, n, &rec);
        /* Every truncation loses something, and says so (check_damaged_open
         * looks for the line): SQLite finds most, the record checksums the
         * rest (a cut inside the last page reads back as zeros). */
        EMS_CHECK(rec < n);
    }
    free(db);
    free(seq);
    tmp_done(&t);
}

static void test_bitflips_never_trusted(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    const unsigned n = 2000;
    char *db, *seq;
    size_t dl, sl;
    make_reference(&t, &cfg, n, &db, &dl, &seq, &sl);
    srand(getenv("EMS_STORE_SEED") ? (unsigned)atoi(getenv("EMS_STORE_SEED")) : 11);
    size_t total = 0;
    for (int i = 0; i < 30; i++) {
        restore(&t, db, dl, seq, sl);
        char *bad = malloc(dl);
        EMS_CHECK(bad != NULL);
        memcpy(bad, db, dl);
        int flips = 1 + rand() % 64;
        for (int f = 0; f < flips; f++)
            bad[(size_t)rand() % dl] ^= (char)(1 + rand() % 255);
        spit(t.path, bad, dl);
        free(bad);
        /* Half the runs skip the check at open: damage then shows while
         * running, and must be handled there too. */
        cfg.check = i % 2 ? EMS_STORE_CHECK_ALWAYS : EMS_STORE_CHECK_NEVER;
        log_clear(&t);
        size_t rec = 0;
        check_damaged_open(&t, &cfg, n, &rec);
        total += rec;
    }
    /* Most flips hit payload bytes: those records are dropped one by one
     * and the rest survives. */
    EMS_CHECK(total > 30 * n / 2);
    free(db);
    free(seq);
    tmp_done(&t);
}

/* A record whose bytes changed under the store (a bit flip SQLite cannot
 * see) is dropped when it is read, with an error line. */
static void test_record_checksum(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    ems_store_t *st = open_ok(&cfg);
    append_n(st, 10);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    sqlite3 *raw = NULL;
    EMS_CHECK(sqlite3_open(t.path, &raw) == SQLITE_OK);
    EMS_CHECK(sqlite3_exec(raw,
                           "UPDATE packets SET data = CAST(replace(CAST(data AS TEXT), 'CHARGING', "
                           "'CHARGINX') AS BLOB) WHERE seq = 5;"
                           "UPDATE packets SET seq = 100 WHERE seq = 7;",
                           NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(raw);
    st = open_ok(&cfg);
    got_t g = {0};
    drain_all(st, &g);
    EMS_CHECK_INT(g.n, ==, 8);
    for (size_t i = 0; i < g.n; i++)
        EMS_CHECK(g.seq[i] != 5 && g.seq[i] != 7 && g.seq[i] != 100);
    got_free(&g);
    ems_store_stats_t s;
    ems_store_stats(st, &s);
    EMS_CHECK_INT(s.corrupt_total, ==, 2);
    EMS_CHECK_INT(s.pending, ==, 8);
    EMS_CHECK(log_has(&t, "packet seq 5 fails its checksum: dropped"));
    EMS_CHECK(log_has(&t, "packet seq 100 fails its checksum: dropped"));
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    tmp_done(&t);
}

/* Damage to one page in the middle of a large buffer loses that page's
 * records, not the buffer: the rest is salvaged on both sides. */
static void test_salvage_keeps_the_rest(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.check = EMS_STORE_CHECK_ALWAYS;
    const unsigned n = 5000;
    char *db, *seq;
    size_t dl, sl;
    make_reference(&t, &cfg, n, &db, &dl, &seq, &sl);
    restore(&t, db, dl, seq, sl);
    /* Wreck the header of a leaf page in the middle of the table. */
    size_t page = (dl / 4096) / 2;
    char *bad = malloc(dl);
    memcpy(bad, db, dl);
    memset(bad + page * 4096, 0x5a, 64);
    spit(t.path, bad, dl);
    free(bad);
    log_clear(&t);
    size_t rec = 0;
    check_damaged_open(&t, &cfg, n, &rec);
    EMS_CHECK(log_has(&t, "integrity check: FAILED"));
    EMS_CHECK(log_has(&t, "salvaged"));
    EMS_CHECK(rec < n);
    EMS_CHECK(rec >= n - 100);
    free(db);
    free(seq);
    tmp_done(&t);
}

static void test_truncated_wal_after_kill(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.checkpoint_pages = 100000; /* keep everything in the WAL */
    srand(5);
    uint64_t max_handed = 0;
    for (int i = 0; i < 8; i++) {
        crash_child(&cfg, 300, false, AFTER_NOTHING);
        ems_store_t *probe = NULL;
        char p[256];
        snprintf(p, sizeof p, "%s-wal", t.path);
        struct stat sb;
        EMS_CHECK_INT(stat(p, &sb), ==, 0);
        EMS_CHECK(sb.st_size > 0);
        off_t cut = (off_t)((size_t)rand() % (size_t)sb.st_size);
        EMS_CHECK(truncate(p, cut) == 0);
        max_handed += 300;
        probe = open_ok(&cfg);
        /* The WAL's torn tail is dropped (its frame checksums), seq goes on
         * from PATH.seq, and what is left reads back exactly. */
        EMS_CHECK(ems_store_next_seq(probe) > max_handed);
        max_handed = ems_store_next_seq(probe) - 1;
        got_t g = {0};
        drain_all(probe, &g);
        EMS_CHECK_INT(ems_store_pending(probe), ==, g.n);
        got_free(&g);
        ack1(probe, 0, UINT64_MAX, ems_store_pending(probe));
        EMS_CHECK_INT(ems_store_close(probe), ==, 0);
    }
    tmp_done(&t);
}

static void test_sequence_file_damage(void)
{
    tmp_t t;
    tmp_init(&t);
    ems_store_config_t cfg;
    default_cfg(&cfg, &t);
    cfg.seq_block = 50;
    char *db, *seq;
    size_t dl, sl;
    make_reference(&t, &cfg, 20, &db, &dl, &seq, &sl);
    char p[256];
    snprintf(p, sizeof p, "%s.seq", t.path);
    /* One slot damaged: the other one carries on, exactly. */
    restore(&t, db, dl, seq, sl);
    char *s2 = malloc(sl);
    memcpy(s2, seq, sl);
    s2[10] ^= 1;
    spit(p, s2, sl);
    log_clear(&t);
    ems_store_t *st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 21);
    EMS_CHECK(log_has(&t, "1 of 2 slots damaged"));
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    /* Both damaged (or the file gone): continue above the database's
     * high-water mark with a safety gap. */
    restore(&t, db, dl, seq, sl);
    s2[10] ^= 1;
    s2[4096 + 20] ^= 1;
    s2[10] ^= 2;
    spit(p, s2, sl);
    log_clear(&t);
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 21 + 50);
    EMS_CHECK(log_has(&t, "missing or damaged"));
    EMS_CHECK_INT(ems_store_pending(st), ==, 20);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    restore(&t, db, dl, seq, sl);
    unlink(p);
    st = open_ok(&cfg);
    EMS_CHECK_INT(ems_store_next_seq(st), ==, 21 + 50);
    EMS_CHECK_INT(ems_store_close(st), ==, 0);
    free(s2);
    free(db);
    free(seq);
    tmp_done(&t);
}

int main(void)
{
    ems_log_init("test", EMS_LOG_DEBUG);
    EMS_RUN(test_append_backlog_ack);
    EMS_RUN(test_orders_window_live);
    EMS_RUN(test_seq_survives_ack_and_reopen);
    EMS_RUN(test_ack_ranges_and_nack);
    EMS_RUN(test_bad_arguments);
    EMS_RUN(test_evict_by_count);
    EMS_RUN(test_evict_by_size);
    EMS_RUN(test_no_growth_when_disk_low);
    EMS_RUN(test_expire_by_age);
    EMS_RUN(test_bounded_memory);
    EMS_RUN(test_crash_commit_policy);
    EMS_RUN(test_reboot_after_crash_skips_never_repeats);
    EMS_RUN(test_power_cut_after_clean_restart);
    EMS_RUN(test_kill9_sync_normal);
    EMS_RUN(test_kill9_sync_full_and_off);
    EMS_RUN(test_kill9_grouped_commits);
    EMS_RUN(test_garbage_file_moved_aside);
    EMS_RUN(test_truncated_database);
    EMS_RUN(test_bitflips_never_trusted);
    EMS_RUN(test_record_checksum);
    EMS_RUN(test_salvage_keeps_the_rest);
    EMS_RUN(test_truncated_wal_after_kill);
    EMS_RUN(test_sequence_file_damage);
    EMS_TEST_END();
}
