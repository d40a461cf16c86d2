/* bench_store.c: measures the edge's store-and-forward buffer (edge/store.h)
 * on this machine. A benchmark, not a test: it prints numbers and checks
 * only that the calls succeed. docs/edge-buffer.md records the results.
 *
 *   bench_store [DIR] [--days N] [--appends N]
 *
 * DIR (default /tmp) gets a scratch folder that is removed at the end. The
 * week-long part writes N days of 1 Hz packets (default 7: 604,800) of a
 * realistic ~450-byte telemetry text, so it needs ~300 MB of disk per week.
 *
 * Build and run with the others: `make bench` (build/bench/bench_store, run
 * by scripts/bench.sh with the defaults); alone: `make build/bench/bench_store`.
 *
 * What it measures:
 *   1. append latency (p50/p99/p99.9/max) and bytes written per packet, for
 *      sync=normal|full|off with a commit per append, and for grouped
 *      commits (one per 10 packets), each with the daemon's 1 Hz pattern
 *      (append, ack of the packet before, tick);
 *   2. ack cost, single range and a 256-range message;
 *   3. a week at 1 Hz: build time, file size, bytes per packet;
 *   4. open time with that week buffered: clean, with quick_check (after
 *      an unclean shutdown), each with a warm and a cold page cache;
 *   5. draining it: backlog batches of 100 oldest-first, each acked;
 *   6. eviction when full: the append that evicts a batch.
 */
#include "error.h"
#include "log.h"
#include "store.h"

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, ems_strerror(rc));
    exit(1);
}

/* Bytes this process handed to write(2)/pwrite(2) so far (/proc/self/io
 * "wchar"): what the store writes, WAL and checkpoints included. */
static uint64_t written(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    uint64_t v = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "wchar: %" SCNu64, &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A packet like the edge sends (docs/protocol.md 2.1, every optional
 * member present), about 450 bytes. */
static size_t packet(uint64_t seq, char *buf, size_t cap)
{
    uint64_t r = mix(seq);
    time_t t = (time_t)(1769860800 + seq);
    struct tm tm;
    gmtime_r(&t, &tm);
    int n = snprintf(
        buf, cap,
        "{\"device_id\":\"ems_001\",\"timestamp\":\"%04d-%02d-%02dT%02d:%02d:%02d.000Z\","
        "\"system_status\":{\"state\":\"CHARGING\",\"mode\":\"AUTO\",\"error_flags\":[],"
        "\"wifi_strength\":-%u,\"target_mode\":\"AUTO\",\"target_power\":0},"
        "\"battery\":{\"voltage\":%u.%u,\"current\":%u.%u,\"power\":%u.%u,\"soc\":%u.%u,"
        "\"temperature\":%u.%u},"
        "\"grid\":{\"voltage\":%u.%u,\"power\":-%u.%u,\"frequency\":%u.%02u},"
        "\"seq\":%" PRIu64 ",\"clock_synced\":true,\"backlog\":0}",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        30 + (unsigned)(r % 60), 48 + (unsigned)(r >> 8) % 8, (unsigned)(r >> 11) % 10,
        (unsigned)(r >> 14) % 40, (unsigned)(r >> 17) % 10, (unsigned)(r >> 20) % 5000,
        (unsigned)(r >> 23) % 10, (unsigned)(r >> 26) % 100, (unsigned)(r >> 29) % 10,
        20 + (unsigned)(r >> 32) % 20, (unsigned)(r >> 35) % 10, 225 + (unsigned)(r >> 38) % 10,
        (unsigned)(r >> 41) % 10, (unsigned)(r >> 44) % 3000, (unsigned)(r >> 46) % 10,
        49 + (unsigned)(r >> 47) % 2, (unsigned)(r >> 50) % 100, seq);
    return (size_t)n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void percentiles(const char *name, double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    printf("| %-38s | %7.1f | %7.1f | %7.1f | %8.1f | %8.1f |\n", name, sum / (double)n, v[n / 2],
           v[(size_t)((double)n * 0.99)], v[(size_t)((double)n * 0.999)], v[n - 1]);
}

typedef struct {
    uint64_t first, last;
    size_t n;
} batch_t;

static int batch_cb(void *ctx, const ems_store_rec_t *r)
{
    batch_t *b = ctx;
    if (!b->n)
        b->first = r->seq;
    b->last = r->seq;
    b->n++;
    return 0;
}

static char g_path[600];

static ems_store_t *open_store(ems_store_config_t *cfg)
{
    ems_store_t *st = NULL;
    int rc = ems_store_open(&st, cfg);
    if (rc)
        die("open", rc);
    return st;
}

static void remove_store(void)
{
    const char *sfx[] = {"", "-wal", "-shm", ".seq", ".corrupt", ".corrupt-wal"};
    char p[700];
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        snprintf(p, sizeof p, "%s%s", g_path, sfx[i]);
        unlink(p);
    }
}

/* Reads the database once, so the next open finds it in the page cache. */
static void warm_cache(void)
{
    char b[1 << 16];
    int fd = open(g_path, O_RDONLY);
    while (fd >= 0 && read(fd, b, sizeof b) > 0) {
    }
    if (fd >= 0)
        close(fd);
}

/* Evicts the buffer's files from the page cache, so the next open reads
 * from the device. */
static void drop_cache(void)
{
    const char *sfx[] = {"", "-wal", ".seq"};
    char p[700];
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", g_path, sfx[i]);
        int fd = open(p, O_RDONLY);
        if (fd < 0)
            continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* The daemon's 1 Hz pattern, without the sleep: append the live packet,
 * ack the one before (as the cloud would a second later), tick. Records
 * the append and the ack+tick separately. */
static void steady(const char *name, ems_store_sync_t sync, unsigned group, size_t n)
{
    remove_store();
    ems_store_config_t cfg;
    ems_store_config_default(&cfg);
    cfg.path = g_path;
    cfg.sync = sync;
    if (group > 1)
        cfg.commit_interval_ms = 3600 * 1000; /* the bench flushes every `group` */
    ems_store_t *st = open_store(&cfg);
    double *lat = malloc(n * sizeof *lat), *ack = malloc(n * sizeof *ack);
    char buf[1024];
    uint64_t w0 = written();
    double t_all = now_us();
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = ems_store_next_seq(st);
        size_t len = packet(seq, buf, sizeof buf);
        double t0 = now_us();
        int rc = ems_store_append(st, seq, (int64_t)seq * 1000, buf, len);
        if (rc)
            die("append", rc);
        if (group > 1 && (i + 1) % group == 0 && (rc = ems_store_flush(st)) != 0)
            die("flush", rc);
        double t1 = now_us();
        lat[i] = t1 - t0;
        if (seq > 1) {
            uint64_t r[1][2] = {{seq - 1, seq - 1}};
            if ((rc = ems_store_ack(st, (const uint64_t(*)[2])r, 1, NULL)) != 0)
                die("ack", rc);
        }
        if (group <= 1 && (rc = ems_store_tick(st)) != 0)
            die("tick", rc);
        ack[i] = now_us() - t1;
    }
    t_all = now_us() - t_all;
    uint64_t w = written() - w0;
    char label[96];
    snprintf(label, sizeof label, "append, %s", name);
    percentiles(label, lat, n);
    snprintf(label, sizeof label, "ack + tick, %s", name);
    percentiles(label, ack, n);
    double per = (double)w / (double)n;
    printf("|   written per packet: %.0f B = %.0f MB/day at 1 Hz; %.0f packets/s max%*s|\n", per,
           per * 86400 / 1e6, (double)n / (t_all / 1e6), 1, "");
    ems_store_close(st);
    free(lat);
    free(ack);
}

int main(int argc, char **argv)
{
    const char *dir = "/tmp";
    double days = 7;
    size_t appends = 20000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--days") == 0 && i + 1 < argc)
            days = atof(argv[++i]);
        else if (strcmp(argv[i], "--appends") == 0 && i + 1 < argc)
            appends = (size_t)atol(argv[++i]);
        else
            dir = argv[i];
    }
    ems_log_init("bench", EMS_LOG_WARN);
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/ems-bench-store-XXXXXX", dir);
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_path, sizeof g_path, "%s/buffer.db", tmpl);
    char buf[1024];
    printf("# bench_store: SQLite %s, %zu appends per mode, packet %zu bytes, folder %s\n\n",
           sqlite3_libversion(), appends, packet(1, buf, sizeof buf), dir);

    printf("| operation (microseconds)               |    mean |     p50 |     p99 |    p99.9 |    "
           "  max |\n");
    printf("| -------------------------------------- | ------- | ------- | ------- | -------- | "
           "-------- |\n");
    steady("sync=normal, commit/packet", EMS_STORE_SYNC_NORMAL, 1, appends);
    steady("sync=full, commit/packet", EMS_STORE_SYNC_FULL, 1, appends / 4);
    steady("sync=off, commit/packet", EMS_STORE_SYNC_OFF, 1, appends);
    steady("sync=normal, commit/10 packets", EMS_STORE_SYNC_NORMAL, 10, appends);

    /* A 256-range ack (the protocol's maximum per message). */
    remove_store();
    ems_store_config_t cfg;
    ems_store_config_default(&cfg);
    cfg.path = g_path;
    cfg.commit_interval_ms = 3600 * 1000;
    ems_store_t *st = open_store(&cfg);
    for (int i = 0; i < 100000; i++) {
        uint64_t seq = ems_store_next_seq(st);
        size_t len = packet(seq, buf, sizeof buf);
        if (ems_store_append(st, seq, (int64_t)seq * 1000, buf, len))
            die("append", -1);
    }
    ems_store_flush(st);
    static uint64_t ranges[256][2];
    double a256[100];
    for (int k = 0; k < 100; k++) {
        for (int i = 0; i < 256; i++) {
            uint64_t s = 1 + (uint64_t)k * 1000 + (uint64_t)i * 3;
            ranges[i][0] = s;
            ranges[i][1] = s + 1;
        }
        double t0 = now_us();
        uint64_t d = 0;
        if (ems_store_ack(st, (const uint64_t(*)[2])ranges, 256, &d) || d != 512)
            die("ack256", -1);
        if (ems_store_flush(st))
            die("flush", -1);
        a256[k] = now_us() - t0;
    }
    percentiles("ack of 256 ranges (512 pkts) + commit", a256, 100);
    ems_store_close(st);

    /* A week (or --days) at 1 Hz. */
    size_t week = (size_t)(days * 86400);
    remove_store();
    ems_store_config_default(&cfg);
    cfg.path = g_path;
    cfg.max_bytes = 0;
    cfg.commit_interval_ms = 3600 * 1000;
    st = open_store(&cfg);
    double t0 = now_us();
    uint64_t payload = 0;
    for (size_t i = 0; i < week; i++) {
        uint64_t seq = ems_store_next_seq(st);
        size_t len = packet(seq, buf, sizeof buf);
        payload += len;
        if (ems_store_append(st, seq, (int64_t)seq * 1000, buf, len))
            die("append", -1);
        if (i % 1000 == 999 && ems_store_flush(st))
            die("flush", -1);
    }
    if (ems_store_close(st))
        die("close", -1);
    double build_s = (now_us() - t0) / 1e6;
    struct stat sb;
    stat(g_path, &sb);
    printf("\n| %.0f days at 1 Hz | value |\n| --- | --- |\n", days);
    printf("| packets | %zu |\n| payload | %.1f MB (%.0f B/packet) |\n", week,
           (double)payload / 1e6, (double)payload / (double)week);
    printf("| database file | %.1f MB (%.0f B/packet, %.2fx payload) |\n", (double)sb.st_size / 1e6,
           (double)sb.st_size / (double)week, (double)sb.st_size / (double)payload);
    printf("| build, 1000 per commit | %.1f s |\n", build_s);

    /* Open times. */
    const struct {
        const char *name;
        ems_store_check_t check;
        bool cold;
    } opens[] = {{"open, clean shutdown (warm cache)", EMS_STORE_CHECK_AUTO, false},
                 {"open, clean shutdown (cold cache)", EMS_STORE_CHECK_AUTO, true},
                 {"open + quick_check (warm cache)", EMS_STORE_CHECK_ALWAYS, false},
                 {"open + quick_check (cold cache)", EMS_STORE_CHECK_ALWAYS, true}};
    sync(); /* let writeback of the week finish before timing reads */
    for (size_t i = 0; i < 4; i++) {
        ems_store_config_default(&cfg);
        cfg.path = g_path;
        cfg.max_bytes = 0;
        cfg.check = opens[i].check;
        if (opens[i].cold)
            drop_cache();
        else
            warm_cache();
        t0 = now_us();
        st = open_store(&cfg);
        double ms = (now_us() - t0) / 1e3;
        int64_t ts;
        double t1 = now_us();
        ems_store_oldest_ts(st, &ts);
        double oldest_us = now_us() - t1;
        printf("| %s | %.1f ms (then oldest_ts: %.0f us, pending %" PRIu64 ") |\n", opens[i].name,
               ms, oldest_us, ems_store_pending(st));
        ems_store_close(st);
    }

    /* Appends with the week buffered, then the append that evicts. */
    ems_store_config_default(&cfg);
    cfg.path = g_path;
    cfg.max_bytes = 0;
    st = open_store(&cfg);
    double big[2000];
    for (size_t i = 0; i < 2000; i++) {
        uint64_t seq = ems_store_next_seq(st);
        size_t len = packet(seq, buf, sizeof buf);
        double a0 = now_us();
        if (ems_store_append(st, seq, (int64_t)seq * 1000, buf, len))
            die("append", -1);
        big[i] = now_us() - a0;
    }
    ems_store_stats_t s;
    ems_store_stats(st, &s);
    ems_store_close(st);
    printf("\n| operation (microseconds)               |    mean |     p50 |     p99 |    p99.9 |  "
           "    max |\n");
    printf("| -------------------------------------- | ------- | ------- | ------- | -------- | "
           "-------- |\n");
    percentiles("append, sync=normal, week buffered", big, 2000);
    ems_store_config_default(&cfg);
    cfg.path = g_path;
    cfg.max_bytes = s.used_bytes; /* full: the next append evicts a batch */
    st = open_store(&cfg);
    uint64_t seq = ems_store_next_seq(st);
    size_t len = packet(seq, buf, sizeof buf);
    double e0 = now_us();
    if (ems_store_append(st, seq, (int64_t)seq * 1000, buf, len))
        die("append", -1);
    double evict_ms = (now_us() - e0) / 1e3;
    ems_store_stats(st, &s);
    printf("| append that evicts %" PRIu64 " packets (full) | %.1f ms |\n", s.evicted_total,
           evict_ms);
    ems_store_close(st);

    /* Draining the week: batches of 100, oldest first, each acked. */
    ems_store_config_default(&cfg);
    cfg.path = g_path;
    cfg.max_bytes = 0;
    st = open_store(&cfg);
    ems_store_session_start(st);
    size_t nb = week / 100 + 2, k = 0;
    double *bl = malloc(nb * sizeof *bl), *ak = malloc(nb * sizeof *ak);
    t0 = now_us();
    size_t drained = 0;
    for (;;) {
        batch_t b = {0, 0, 0};
        double b0 = now_us();
        int n = ems_store_backlog(st, EMS_STORE_OLDEST_FIRST, 100, batch_cb, &b);
        if (n < 0)
            die("backlog", n);
        if (n == 0)
            break;
        double b1 = now_us();
        uint64_t r[1][2] = {{b.first, b.last}};
        /* The daemon drains at a bounded rate and gets one ack per batch;
         * commit each one so the number is the cost per batch. */
        if (ems_store_ack(st, (const uint64_t(*)[2])r, 1, NULL) || ems_store_flush(st))
            die("ack", -1);
        if (k < nb) {
            bl[k] = b1 - b0;
            ak[k] = now_us() - b1;
            k++;
        }
        drained += (size_t)n;
    }
    double drain_s = (now_us() - t0) / 1e6;
    percentiles("backlog batch of 100, oldest first", bl, k);
    percentiles("ack of that batch + commit", ak, k);
    printf("| drained %zu packets | %.1f s, %.0f packets/s |\n", drained, drain_s,
           (double)drained / drain_s);
    ems_store_close(st);
    free(bl);
    free(ak);
    remove_store();
    rmdir(tmpl);
    return 0;
}
