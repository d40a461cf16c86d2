/* Unit tests: the gateway's small pure parts: hash map, ack ranges, rate
 * limiter, metrics text, fan-out hub, router, query strings, static file
 * resolution and configuration. */
#include "ems_test.h"

#include "error.h"
#include "gw_config.h"
#include "gw_hub.h"
#include "gw_map.h"
#include "gw_ranges.h"
#include "gw_rate.h"
#include "gw_router.h"
#include "gw_static.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void test_map_many(void)
{
    gw_map_t m = {0};
    enum { N = 5000 };
    static char keys[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "dev_%d", i);
        EMS_CHECK_INT(gw_map_put(&m, keys[i], (void *)(intptr_t)(i + 1)), ==, 0);
    }
    EMS_CHECK_INT(m.len, ==, N);
    for (int i = 0; i < N; i++)
        EMS_CHECK_INT((intptr_t)gw_map_get(&m, keys[i]), ==, i + 1);
    /* Delete every other key; the rest must still be found (backward
     * shift deletion keeps probe runs intact). */
    for (int i = 0; i < N; i += 2)
        EMS_CHECK_INT((intptr_t)gw_map_del(&m, keys[i]), ==, i + 1);
    for (int i = 0; i < N; i++)
        EMS_CHECK_INT((intptr_t)gw_map_get(&m, keys[i]), ==, i % 2 ? i + 1 : 0);
    EMS_CHECK_INT(m.len, ==, N / 2);
    size_t pos = 0, count = 0;
    const char *k;
    void *v;
    while (gw_map_next(&m, &pos, &k, &v))
        count++;
    EMS_CHECK_INT(count, ==, N / 2);
    EMS_CHECK(gw_map_del(&m, "absent") == NULL);
    gw_map_free(&m);
    EMS_CHECK(gw_map_get(&m, "dev_1") == NULL);
}

static void test_ranges(void)
{
    gw_ranges_t s = {0};
    char buf[GW_ACK_JSON_MAX];
    EMS_CHECK_INT(gw_ranges_take_ack(&s, buf, sizeof buf), ==, 0);
    uint64_t in[] = {5, 6, 7, 10, 9, 1, 3, 2, 8, 20, 20};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        EMS_CHECK_INT(gw_ranges_add(&s, in[i]), ==, 0);
    int n = gw_ranges_take_ack(&s, buf, sizeof buf);
    EMS_CHECK(n > 0);
    EMS_CHECK_STR(buf, "{\"type\":\"ack\",\"ranges\":[[1,3],[5,10],[20,20]]}");
    EMS_CHECK_INT(s.len, ==, 0);
    /* Joining across a gap filled last. */
    gw_ranges_add(&s, 1);
    gw_ranges_add(&s, 3);
    gw_ranges_add(&s, 2);
    gw_ranges_take_ack(&s, buf, sizeof buf);
    EMS_CHECK_STR(buf, "{\"type\":\"ack\",\"ranges\":[[1,3]]}");
    /* More than 256 ranges: split over messages. */
    for (uint64_t v = 0; v < 600; v++)
        gw_ranges_add(&s, v * 2);
    n = gw_ranges_take_ack(&s, buf, sizeof buf);
    EMS_CHECK(n > 0);
    EMS_CHECK_INT(s.len, ==, 600 - 256);
    EMS_CHECK(strstr(buf, "[510,510]]}") != NULL);
    gw_ranges_take_ack(&s, buf, sizeof buf);
    gw_ranges_take_ack(&s, buf, sizeof buf);
    EMS_CHECK_INT(s.len, ==, 0);
    EMS_CHECK(strstr(buf, "[1198,1198]]}") != NULL);
    /* Big seq values print exactly. */
    gw_ranges_add(&s, 9007199254740991ULL);
    gw_ranges_take_ack(&s, buf, sizeof buf);
    EMS_CHECK_STR(buf, "{\"type\":\"ack\",\"ranges\":[[9007199254740991,9007199254740991]]}");
    /* Too small a buffer leaves the set alone. */
    gw_ranges_add(&s, 1);
    EMS_CHECK_INT(gw_ranges_take_ack(&s, buf, 10), ==, EMS_ENOSPC);
    EMS_CHECK_INT(s.len, ==, 1);
    gw_ranges_free(&s);
}

/* Mirrors the DB writer's check (cloud/dbwriter/query.c parse_history):
 * every epoch-aligned bucket the range touches counts. */
static int64_t buckets_touched(int64_t from, int64_t to, int64_t w_s)
{
    int64_t w = w_s * 1000;
    int64_t from_a = (from / w) * w, to_a = ((to + w - 1) / w) * w;
    return (to_a - from_a) / w;
}

/* Every range from an hour to 400 days, at the worst alignment and an
 * aligned one, gets a default resolution the DB writer accepts. Before the
 * fix, 2.8..3 days (1m: over 4000 buckets) and over 166 days (1h) failed. */
static void test_history_auto_bucket(void)
{
    EMS_CHECK_INT(gw_ranges_auto_bucket(3600 * 1000LL), ==, 0);
    EMS_CHECK_INT(gw_ranges_auto_bucket(2 * 3600 * 1000LL), ==, 0);
    EMS_CHECK_INT(gw_ranges_auto_bucket(2 * 3600 * 1000LL + 1), ==, 60);
    EMS_CHECK_INT(gw_ranges_auto_bucket(2 * 86400 * 1000LL), ==, 60);
    EMS_CHECK_INT(gw_ranges_auto_bucket(3 * 86400 * 1000LL), ==, 3600);
    EMS_CHECK_INT(gw_ranges_auto_bucket(100 * 86400 * 1000LL), ==, 3600);
    EMS_CHECK_INT(gw_ranges_auto_bucket(200 * 86400 * 1000LL), ==, 86400);
    EMS_CHECK_INT(gw_ranges_auto_bucket(400 * 86400 * 1000LL), ==, 86400);
    EMS_CHECK_INT(gw_ranges_auto_bucket(5000 * 86400 * 1000LL), ==, 2 * 86400);
    const int64_t h = 3600 * 1000LL, base = 1769860800000LL; /* a whole day */
    for (int64_t span = h; span <= 400 * 24 * h; span += h) {
        for (int k = 0; k < 3; k++) {
            int64_t from = base + (k == 0 ? 0 : k == 1 ? 1 : 59999);
            int64_t to = from + span + (k == 2 ? 59998 : 0);
            int w = gw_ranges_auto_bucket(to - from);
            if (w == 0)
                continue; /* raw: no bucket limit */
            int64_t n = buckets_touched(from, to, w);
            if (n > GW_HISTORY_BUCKETS_MAX)
                EMS_FAIL("span %lld ms from %lld: width %d s gives %lld buckets",
                         (long long)(to - from), (long long)from, w, (long long)n);
        }
    }
}

static void test_rate(void)
{
    gw_rate_t r = {0};
    int ok = 0;
    for (int i = 0; i < 30; i++)
        ok += gw_rate_take(&r, 20, 5, 1000);
    EMS_CHECK_INT(ok, ==, 20); /* the burst */
    EMS_CHECK(!gw_rate_take(&r, 20, 5, 1100));
    EMS_CHECK(gw_rate_take(&r, 20, 5, 1200)); /* 1 token after 200 ms at 5/s */
    EMS_CHECK(!gw_rate_take(&r, 20, 5, 1200));
    /* Sustained 5/s over 10 s passes exactly. */
    ok = 0;
    for (int i = 1; i <= 50; i++)
        ok += gw_rate_take(&r, 20, 5, 1200 + i * 200);
    EMS_CHECK_INT(ok, ==, 50);
    /* A long pause refills only to the burst. */
    ok = 0;
    for (int i = 0; i < 40; i++)
        ok += gw_rate_take(&r, 20, 5, 1000000);
    EMS_CHECK_INT(ok, ==, 20);
}

static double six(void *ud)
{
    (void)ud;
    return 6;
}

static void test_metrics(void)
{
    ems_metrics_t *m = ems_metrics_new();
    ems_metric_t *a = ems_metrics_counter(m, "ems_msgs_total", "Messages.", "endpoint=\"device\"");
    ems_metric_t *b =
        ems_metrics_counter(m, "ems_msgs_total", "Messages.", "endpoint=\"dashboard\"");
    ems_metrics_gauge_fn(m, "ems_conns", "Open connections.", NULL, six, NULL);
    static const double bounds[] = {0.001, 0.01, 0.1};
    ems_metric_t *h = ems_metrics_histogram(m, "ems_lat_seconds", "Latency.", NULL, bounds, 3);
    EMS_CHECK(a && b && h);
    EMS_CHECK(ems_metrics_gauge(m, "ems_msgs_total", "x", NULL) == NULL); /* type clash */
    ems_metric_inc(a);
    ems_metric_add(a, 2);
    ems_metric_observe(h, 0.005);
    ems_metric_observe(h, 0.05);
    ems_metric_observe(h, 5);
    ems_buf_t text = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    EMS_CHECK_INT(ems_metrics_render(m, &text), ==, 0);
    size_t len = ems_buf_len(&text);
    EMS_CHECK_INT(ems_buf_append(&text, "", 1), ==, 0); /* a C string for strstr */
    const char *out = ems_buf_data(&text);
    EMS_CHECK_INT(strlen(out), ==, len);
    EMS_CHECK(strstr(out, "# HELP ems_msgs_total Messages.\n# TYPE ems_msgs_total counter\n"
                          "ems_msgs_total{endpoint=\"device\"} 3\n"
                          "ems_msgs_total{endpoint=\"dashboard\"} 0\n") != NULL);
    EMS_CHECK(strstr(out, "# TYPE ems_conns gauge\nems_conns 6\n") != NULL);
    EMS_CHECK(strstr(out, "ems_lat_seconds_bucket{le=\"0.001\"} 0\n"
                          "ems_lat_seconds_bucket{le=\"0.01\"} 1\n"
                          "ems_lat_seconds_bucket{le=\"0.1\"} 2\n"
                          "ems_lat_seconds_bucket{le=\"+Inf\"} 3\n") != NULL);
    EMS_CHECK(strstr(out, "ems_lat_seconds_count 3\n") != NULL);
    ems_buf_free(&text);
    ems_metrics_free(m);
}

static int got[8];
static void hub_send(void *sub, void *ud)
{
    (void)ud;
    got[(intptr_t)sub]++;
}

static void test_hub(void)
{
    gw_hub_t h;
    gw_hub_init(&h);
    gw_hub_subs_t s1 = {0}, s2 = {0}, s3 = {0};
    void *d1 = (void *)1, *d2 = (void *)2, *d3 = (void *)3;
    EMS_CHECK_INT(gw_hub_sub(&h, d1, &s1, "a"), ==, 0);
    EMS_CHECK_INT(gw_hub_sub(&h, d1, &s1, "a"), ==, 0); /* twice: once */
    EMS_CHECK_INT(gw_hub_sub(&h, d1, &s1, "b"), ==, 0);
    EMS_CHECK_INT(gw_hub_sub(&h, d2, &s2, "a"), ==, 0);
    EMS_CHECK_INT(gw_hub_sub(&h, d3, &s3, "a"), ==, 0);
    EMS_CHECK_INT(gw_hub_sub_all(&h, d3, &s3), ==, 0); /* replaces "a" */
    EMS_CHECK_INT(gw_hub_sub(&h, d3, &s3, "b"), ==, 0); /* covered by "*" */
    memset(got, 0, sizeof got);
    EMS_CHECK_INT(gw_hub_fanout(&h, "a", hub_send, NULL), ==, 3);
    EMS_CHECK(got[1] == 1 && got[2] == 1 && got[3] == 1);
    memset(got, 0, sizeof got);
    EMS_CHECK_INT(gw_hub_fanout(&h, "b", hub_send, NULL), ==, 2);
    EMS_CHECK(got[1] == 1 && got[2] == 0 && got[3] == 1);
    memset(got, 0, sizeof got);
    EMS_CHECK_INT(gw_hub_fanout(&h, "zzz", hub_send, NULL), ==, 1);
    gw_hub_unsub(&h, d1, &s1, "a");
    EMS_CHECK_INT(gw_hub_count(&h, "a"), ==, 1);
    gw_hub_remove(&h, d2, &s2);
    EMS_CHECK_INT(gw_hub_count(&h, "a"), ==, 0);
    gw_hub_unsub_all(&h, d3, &s3);
    memset(got, 0, sizeof got);
    EMS_CHECK_INT(gw_hub_fanout(&h, "a", hub_send, NULL), ==, 0);
    EMS_CHECK_INT(gw_hub_fanout(&h, "b", hub_send, NULL), ==, 1);
    gw_hub_remove(&h, d1, &s1);
    gw_hub_remove(&h, d3, &s3);
    EMS_CHECK_INT(h.by_dev.len, ==, 0);
    gw_hub_free(&h);
}

static void test_router(void)
{
    gw_route_t r;
#define R(p) gw_router_match(p, strlen(p), &r)
    R("/ws/device/ems_001");
    EMS_CHECK_INT(r.id, ==, GW_R_WS_DEVICE);
    EMS_CHECK_STR(r.id1, "ems_001");
    R("/ws/device/");
    EMS_CHECK_INT(r.id, ==, GW_R_NOT_FOUND);
    R("/ws/device/a/b");
    EMS_CHECK_INT(r.id, ==, GW_R_NOT_FOUND);
    R("/ws/device/a%20b");
    EMS_CHECK_INT(r.id, ==, GW_R_NOT_FOUND);
    R("/ws/dashboard");
    EMS_CHECK_INT(r.id, ==, GW_R_WS_DASHBOARD);
    R("/api/devices");
    EMS_CHECK_INT(r.id, ==, GW_R_DEVICES);
    R("/api/devices/x1/telemetry");
    EMS_CHECK_INT(r.id, ==, GW_R_DEVICE_TELEMETRY);
    EMS_CHECK_STR(r.id1, "x1");
    R("/api/devices/x1/commands");
    EMS_CHECK_INT(r.id, ==, GW_R_DEVICE_COMMANDS);
    EMS_CHECK(r.methods & GW_M_POST);
    R("/api/devices/x1");
    EMS_CHECK_INT(r.id, ==, GW_R_DEVICE);
    R("/api/devices/x1/nope");
    EMS_CHECK_INT(r.id, ==, GW_R_NOT_FOUND);
    R("/api/commands/c_1:2");
    EMS_CHECK_INT(r.id, ==, GW_R_COMMAND);
    EMS_CHECK_STR(r.id1, "c_1:2");
    R("/api/login");
    EMS_CHECK_INT(r.id, ==, GW_R_LOGIN);
    EMS_CHECK_INT(r.methods, ==, GW_M_POST);
    R("/api/unknown");
    EMS_CHECK_INT(r.id, ==, GW_R_NOT_FOUND);
    R("/");
    EMS_CHECK_INT(r.id, ==, GW_R_STATIC);
    R("/assets/app.js");
    EMS_CHECK_INT(r.id, ==, GW_R_STATIC);
    R("/healthz");
    EMS_CHECK_INT(r.id, ==, GW_R_HEALTHZ);
    R("/metrics");
    EMS_CHECK_INT(r.id, ==, GW_R_METRICS);
    EMS_CHECK_STR(gw_router_allow(GW_M_GET | GW_M_HEAD), "GET, HEAD");
    EMS_CHECK_INT(gw_router_method("DELETE"), ==, 0);
#undef R
}

static void test_query(void)
{
    const char *q = "from=2026-01-31T12%3A00%3A00Z&to=x+y&flag&resolution=1m";
    char v[64];
    EMS_CHECK_INT(gw_query_get(q, strlen(q), "from", v, sizeof v), ==, 20);
    EMS_CHECK_STR(v, "2026-01-31T12:00:00Z");
    EMS_CHECK_INT(gw_query_get(q, strlen(q), "to", v, sizeof v), ==, 3);
    EMS_CHECK_STR(v, "x y");
    EMS_CHECK_INT(gw_query_get(q, strlen(q), "flag", v, sizeof v), ==, 0);
    EMS_CHECK_INT(gw_query_get(q, strlen(q), "resolution", v, sizeof v), ==, 2);
    EMS_CHECK_INT(gw_query_get(q, strlen(q), "fro", v, sizeof v), ==, EMS_ENOENT);
    EMS_CHECK_INT(gw_query_get("a=%zz", 5, "a", v, sizeof v), ==, EMS_EINVAL);
    EMS_CHECK_INT(gw_query_get("a=%00", 5, "a", v, sizeof v), ==, EMS_EINVAL);
    EMS_CHECK_INT(gw_query_get("a=%4", 4, "a", v, sizeof v), ==, EMS_EINVAL);
    EMS_CHECK_INT(gw_query_get("a=12345", 7, "a", v, 4), ==, EMS_ENOSPC);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    EMS_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void test_static(void)
{
    char root[] = "/tmp/gwstaticXXXXXX";
    EMS_CHECK(mkdtemp(root) != NULL);
    char p[512], out[4096];
    snprintf(p, sizeof p, "%s/www", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/www/assets", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/www/index.html", root);
    write_file(p, "<html>");
    snprintf(p, sizeof p, "%s/www/assets/app.js", root);
    write_file(p, "x()");
    snprintf(p, sizeof p, "%s/secret.txt", root);
    write_file(p, "secret");
    char link[600];
    snprintf(link, sizeof link, "%s/www/assets/escape.txt", root);
    EMS_CHECK(symlink(p, link) == 0);
    char www[512];
    snprintf(www, sizeof www, "%s/www", root);

#define RES(path) gw_static_resolve(www, path, strlen(path), out, sizeof out)
    EMS_CHECK_INT(RES("/"), ==, 0);
    EMS_CHECK(strstr(out, "/www/index.html") != NULL);
    EMS_CHECK_INT(RES("/assets/app.js"), ==, 0);
    EMS_CHECK_INT(RES("/assets/%61pp.js"), ==, 0);
    EMS_CHECK_INT(RES("/assets/"), ==, EMS_ENOENT); /* no index there */
    EMS_CHECK_INT(RES("/../secret.txt"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/assets/../../secret.txt"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/%2e%2e/secret.txt"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/%2E%2E/secret.txt"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/assets/..%2f..%2fsecret.txt"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/..\\secret.txt"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/%5c..%5csecret.txt"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/index.html%00.js"), ==, EMS_ENOENT);
    EMS_CHECK_INT(RES("/assets/escape.txt"), ==, EMS_ENOENT); /* symlink out of the root */
    EMS_CHECK_INT(RES("/assets"), ==, EMS_ENOENT);             /* a directory */
    EMS_CHECK_INT(RES("/nope.html"), ==, EMS_ENOENT);
    EMS_CHECK_INT(gw_static_resolve(www, "/index.html\0x", 13, out, sizeof out), ==, EMS_ENOENT);
#undef RES
    EMS_CHECK_STR(gw_static_type("/a/index.html"), "text/html; charset=utf-8");
    EMS_CHECK_STR(gw_static_type("/a/app.JS"), "text/javascript; charset=utf-8");
    EMS_CHECK_STR(gw_static_type("/a/x.css"), "text/css; charset=utf-8");
    EMS_CHECK_STR(gw_static_type("/a/x.svg"), "image/svg+xml");
    EMS_CHECK_STR(gw_static_type("/a.b/noext"), "application/octet-stream");
    EMS_CHECK_STR(gw_static_cache("/x/index.html"), "no-cache");

    char *data;
    size_t len;
    snprintf(p, sizeof p, "%s/www/assets/app.js", root);
    EMS_CHECK_INT(gw_static_read(p, 100, &data, &len), ==, 0);
    EMS_CHECK_INT(len, ==, 3);
    EMS_CHECK(memcmp(data, "x()", 3) == 0);
    free(data);
    EMS_CHECK_INT(gw_static_read(p, 2, &data, &len), ==, EMS_EMSGSIZE);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    EMS_CHECK(system(cmd) == 0);
}

static void test_config(void)
{
    char path[] = "/tmp/gwconfXXXXXX";
    int fd = mkstemp(path);
    EMS_CHECK(fd >= 0);
    const char *text = "# a comment\n"
                       "listen = 127.0.0.1:0   # trailing comment\n"
                       "\n"
                       "tls = off\n"
                       "rate_burst = 7\n";
    EMS_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    gw_config_t c;
    char err[256];
    char *argv[] = {"ems-gateway", "--rate-burst=9", "-c", path, "--static_dir", "/srv", NULL};
    EMS_CHECK_INT(gw_config_from_args(&c, 6, argv, err, sizeof err), ==, 0);
    EMS_CHECK_STR(c.listen, "127.0.0.1:0");
    EMS_CHECK(!c.tls);
    EMS_CHECK_INT(c.rate_burst, ==, 9); /* the flag wins over the file */
    EMS_CHECK_STR(c.static_dir, "/srv");
    EMS_CHECK_INT(c.rate_per_s, ==, 10); /* default: live + backfill (docs/protocol.md) */
    EMS_CHECK_INT(gw_config_check(&c, err, sizeof err), ==, 0);

    gw_config_defaults(&c);
    EMS_CHECK_INT(gw_config_check(&c, err, sizeof err), ==, EMS_ECONFIG); /* TLS without files */
    EMS_CHECK(strstr(err, "tls_cert") != NULL);
    EMS_CHECK_INT(gw_config_set(&c, "rate_burst", "0", err, sizeof err), ==, EMS_ECONFIG);
    EMS_CHECK_INT(gw_config_set(&c, "rate_burst", "12x", err, sizeof err), ==, EMS_ECONFIG);
    EMS_CHECK_INT(gw_config_set(&c, "nope", "1", err, sizeof err), ==, EMS_ECONFIG);
    EMS_CHECK_INT(gw_config_set(&c, "tls", "maybe", err, sizeof err), ==, EMS_ECONFIG);

    FILE *f = fopen(path, "w");
    fputs("listen = x\nbogus line\n", f);
    fclose(f);
    EMS_CHECK_INT(gw_config_load(&c, path, err, sizeof err), ==, EMS_ECONFIG);
    EMS_CHECK(strstr(err, ":2:") != NULL);
    unlink(path);
    char *argv2[] = {"ems-gateway", "stray", NULL};
    EMS_CHECK_INT(gw_config_from_args(&c, 2, argv2, err, sizeof err), ==, EMS_ECONFIG);
}

int main(void)
{
    EMS_RUN(test_map_many);
    EMS_RUN(test_ranges);
    EMS_RUN(test_history_auto_bucket);
    EMS_RUN(test_rate);
    EMS_RUN(test_metrics);
    EMS_RUN(test_hub);
    EMS_RUN(test_router);
    EMS_RUN(test_query);
    EMS_RUN(test_static);
    EMS_RUN(test_config);
    EMS_TEST_END();
}
