/* bench_storm.c: a reconnect storm against a running gateway (issue 13,
 * item 4).
 *
 * Opens N device WebSockets at once (wss:// with the project's client),
 * measures the time until all are upgraded, drops them all at once, and
 * measures the time until all are back, like a fleet after a gateway
 * restart. A failed attempt (handshake timeout, reset, hang-up, HTTP
 * status) is counted by kind and retried after 0.5-2 s, like the edge's
 * backoff. With --tickets every device keeps its own TLS client
 * configuration, so it offers the session ticket of its last connection;
 * without, each attempt uses a fresh configuration (a full handshake).
 *
 * Tokens are bench_fleet's: hex SHA-256 of "ems-bench:SEED:ID", IDs
 * PREFIX000000.. (scripts/bench-fleet.sh provisions them the same way).
 * The gateway needs max_unauth_per_addr = 0 (all devices come from one
 * address). */
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "client.h"
#include "error.h"
#include "log.h"

enum { K_TIMEOUT, K_RESET, K_HANGUP, K_HTTP, K_TLS, K_OTHER, K_N };
static const char *const KIND[K_N] = {"handshake timeout", "reset", "hang-up", "HTTP status",
                                      "TLS error", "other"};

typedef struct bench bench_t;

typedef struct {
    bench_t *b;
    int idx;
    ems_ws_t *ws;
    ems_tls_config_t *tls; /* --tickets: this device's, kept across attempts */
    uv_timer_t timer;      /* attempt deadline, or the retry delay */
    int up, dropping;
} sdev_t;

struct bench {
    uv_loop_t *loop;
    const char *url, *ca, *seed, *prefix;
    int n, tickets, phase; /* 1: first connect, 2: after the drop, 3: done */
    unsigned timeout_ms;
    int n_up, timers_open;
    uint64_t t0, t_phase[3];
    uint64_t fails[3][K_N], http[3][600];
    sdev_t *d;
    uv_timer_t tick;
};

static void dev_connect(sdev_t *d);

static void token(const char *seed, const char *id, char out[65])
{
    char in[256];
    unsigned char h[32];
    int n = snprintf(in, sizeof in, "ems-bench:%s:%s", seed, id);
    mbedtls_sha256_ret((const unsigned char *)in, (size_t)n, h, 0);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static void retry_cb(uv_timer_t *t) { dev_connect(t->data); }

static void timeout_cb(uv_timer_t *t)
{
    sdev_t *d = t->data;
    if (d->ws && !d->up)
        ems_ws_abort(d->ws, EMS_ETIMEDOUT);
}

static void on_open(ems_ws_t *ws)
{
    sdev_t *d = ems_ws_user(ws);
    bench_t *b = d->b;
    uv_timer_stop(&d->timer);
    d->up = 1;
    if (++b->n_up == b->n && b->phase <= 2) {
        b->t_phase[b->phase] = uv_hrtime() - b->t0;
        printf("phase %d: all %d devices upgraded in %.2f s\n", b->phase, b->n,
               (double)b->t_phase[b->phase] / 1e9);
        fflush(stdout);
    }
}

static void on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    sdev_t *d = ems_ws_user(ws);
    bench_t *b = d->b;
    d->ws = NULL;
    if (d->up)
        b->n_up--;
    int was_up = d->up;
    d->up = 0;
    if (d->dropping) {
        d->dropping = 0;
        dev_connect(d); /* the storm: everyone at once */
        return;
    }
    if (b->phase > 2)
        return;
    int k = info->status == EMS_ETIMEDOUT ? K_TIMEOUT
            : info->http_status          ? K_HTTP
            : info->status == UV_ECONNRESET ? K_RESET
            : info->status == EMS_ECLOSED   ? K_HANGUP
            : info->status == EMS_ETLS      ? K_TLS
                                            : K_OTHER;
    b->fails[b->phase][k]++;
    if (info->http_status > 0 && info->http_status < 600)
        b->http[b->phase][info->http_status]++;
    (void)was_up;
    uv_timer_start(&d->timer, retry_cb, 500 + (uint64_t)(rand() % 1500), 0);
}

static const ems_ws_callbacks_t cbs = {on_open, NULL, on_close};

static void dev_connect(sdev_t *d)
{
    bench_t *b = d->b;
    char id[64], tok[65], hdr[128], url[512];
    snprintf(id, sizeof id, "%s%06d", b->prefix, d->idx);
    token(b->seed, id, tok);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    snprintf(url, sizeof url, "%s/ws/device/%s", b->url, id);
    ems_tls_config_t *tls = d->tls;
    if (!b->tickets && ems_tls_client_config_new(b->ca, &tls) < 0)
        tls = NULL;
    ems_wsclient_options_t o = {.tls = tls, .tls_hostname = "localhost", .extra_headers = hdr};
    int rc = ems_wsclient_connect(b->loop, url, &o, &cbs, d, &d->ws);
    if (!b->tickets && tls)
        ems_tls_config_unref(tls); /* the connection holds its reference */
    if (rc < 0) {
        d->ws = NULL;
        b->fails[b->phase][K_OTHER]++;
        uv_timer_start(&d->timer, retry_cb, 1000, 0);
        return;
    }
    uv_timer_start(&d->timer, timeout_cb, b->timeout_ms, 0);
}

static void report(const bench_t *b)
{
    for (int p = 1; p <= 2; p++) {
        printf("phase %d (%s): %s", p, p == 1 ? "first connect" : "after dropping all",
               b->t_phase[p] ? "" : "NOT all back; ");
        printf("%.2f s; failed attempts:", (double)b->t_phase[p] / 1e9);
        for (int k = 0; k < K_N; k++)
            printf(" %s %llu,", KIND[k], (unsigned long long)b->fails[p][k]);
        for (int s = 100; s < 600; s++)
            if (b->http[p][s])
                printf(" [%d: %llu]", s, (unsigned long long)b->http[p][s]);
        printf("\n");
    }
}

static void timer_closed(uv_handle_t *h)
{
    bench_t *b = ((sdev_t *)h->data)->b;
    b->timers_open--;
}

static void tick_cb(uv_timer_t *t)
{
    bench_t *b = t->data;
    static uint64_t max_ns = 600e9;
    uint64_t el = uv_hrtime() - b->t0;
    if (b->n_up == b->n && b->phase == 1) {
        /* Everyone is in: drop them all at once, they come back at once. */
        b->phase = 2;
        b->t0 = uv_hrtime();
        for (int i = 0; i < b->n; i++) {
            b->d[i].dropping = 1;
            ems_ws_abort(b->d[i].ws, UV_ECANCELED);
        }
        return;
    }
    if ((b->n_up == b->n && b->phase == 2) || el > max_ns) {
        b->phase = 3;
        report(b);
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        for (int i = 0; i < b->n; i++) {
            if (b->d[i].ws)
                ems_ws_abort(b->d[i].ws, UV_ECANCELED);
            uv_close((uv_handle_t *)&b->d[i].timer, timer_closed);
        }
    }
}

static int usage(void)
{
    printf("usage: bench_storm WSS_BASE CA_FILE SEED N [--tickets] [--prefix P] [--timeout-ms MS]\n"
           "  Opens N device connections to WSS_BASE (e.g. wss://127.0.0.1:8443), devices\n"
           "  P000000.. (default prefix \"bench\") with bench_fleet's tokens (hex SHA-256 of\n"
           "  \"ems-bench:SEED:ID\"), until all are upgraded; then drops all at once and\n"
           "  measures until all are back. Failed attempts are counted by kind and\n"
           "  retried after 0.5-2 s. --tickets: each device resumes its TLS session;\n"
           "  --timeout-ms: a device's handshake + upgrade deadline (default 10000).\n"
           "  The gateway needs max_unauth_per_addr = 0. See scripts/bench-storm.sh.\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return usage();
    static bench_t b;
    b.url = argv[1];
    b.ca = argv[2];
    b.seed = argv[3];
    b.n = atoi(argv[4]);
    b.prefix = "bench";
    b.timeout_ms = 10000;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--tickets"))
            b.tickets = 1;
        else if (!strcmp(argv[i], "--prefix") && i + 1 < argc)
            b.prefix = argv[++i];
        else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc)
            b.timeout_ms = (unsigned)atoi(argv[++i]);
        else
            return usage() + 2;
    }
    if (b.n <= 0)
        return usage() + 2;
    ems_log_set_level(EMS_LOG_ERROR);
    b.loop = uv_default_loop();
    b.d = calloc((size_t)b.n, sizeof *b.d);
    if (!b.d)
        return 1;
    b.phase = 1;
    b.t0 = uv_hrtime();
    for (int i = 0; i < b.n; i++) {
        sdev_t *d = &b.d[i];
        d->b = &b;
        d->idx = i;
        uv_timer_init(b.loop, &d->timer);
        d->timer.data = d;
        b.timers_open++;
        if (b.tickets && ems_tls_client_config_new(b.ca, &d->tls) < 0) {
            fprintf(stderr, "bench_storm: cannot load CA %s\n", b.ca);
            return 1;
        }
    }
    for (int i = 0; i < b.n; i++)
        dev_connect(&b.d[i]);
    uv_timer_init(b.loop, &b.tick);
    b.tick.data = &b;
    uv_timer_start(&b.tick, tick_cb, 100, 100);
    uv_run(b.loop, UV_RUN_DEFAULT);
    for (int i = 0; i < b.n; i++)
        ems_tls_config_unref(b.d[i].tls);
    free(b.d);
    uv_loop_close(b.loop);
    return b.t_phase[2] ? 0 : 1;
}
