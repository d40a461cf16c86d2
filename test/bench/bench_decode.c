/* bench_decode.c: the gateway's cost of decoding one telemetry packet, with
 * the full path (jansson tree: ems_jr_parse, ems_message_identify,
 * ems_telemetry_from_json, json_decref) and with the one-pass scanner
 * (ems_telemetry_scan). A benchmark, not a test: it prints numbers and
 * checks only that both paths decode the same structs.
 *
 *   bench_decode [N]     N decodes per path and round (default 200000)
 *
 * The packets are what the edge's encoder writes every second (every
 * optional member the edge sends: target mode and power, temperature, seq,
 * clock_synced, backlog, energy), 256 of them with varied values, ~600
 * bytes each. Allocations are counted through jansson's allocator hooks
 * (json_set_alloc_funcs), so they are exactly the tree's. A third row is the
 * price of a fallback: a valid packet the scanner leaves to jansson at its
 * very end (an unknown member), i.e. a full scan wasted, then the full path.
 * Each path runs 3 rounds; the best is printed.
 *
 * Build and run with the others: `make bench` (scripts/bench.sh); alone:
 * `make build/bench/bench_decode` (or BUILD=DIR DIR/bench/bench_decode).
 */
#include "error.h"
#include "jread.h"
#include "message.h"
#include "telemetry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PACKETS 256

static unsigned long g_allocs;
static unsigned long g_alloc_bytes;

static void *count_malloc(size_t n)
{
    g_allocs++;
    g_alloc_bytes += n;
    return malloc(n);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A value in lo..hi rounded as the edge rounds (ems_edge_round: to 0.01 or
 * 0.1, dividing by the exact reciprocal), so it is written "51.87". */
static double r(uint64_t x, double lo, double hi, double step)
{
    double v = lo + (double)(x % 1000003) / 1000003.0 * (hi - lo), inv = round(1.0 / step);
    return round(v * inv) / inv;
}

static int packet(uint64_t i, char *buf, size_t cap)
{
    ems_telemetry_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.device_id, sizeof t.device_id, "ems_%04u", (unsigned)(i % 10000));
    t.timestamp_ms = 1796600000000LL + (int64_t)i * 1000 + (int64_t)(mix(i) % 1000);
    t.state = EMS_STATE_CHARGING;
    t.mode = EMS_MODE_MANUAL;
    t.has_wifi_strength = true;
    t.wifi_strength = -30 - (int)(mix(i + 1) % 60);
    t.has_target_mode = true;
    t.target_mode = EMS_TARGET_MANUAL_CHARGE;
    t.has_target_power = true;
    t.target_power = r(mix(i + 2), 0, 5000, 0.1);
    t.battery_voltage = r(mix(i + 3), 44, 58, 0.01);
    t.battery_current = r(mix(i + 4), -100, 100, 0.01);
    t.battery_power = r(mix(i + 5), -5000, 5000, 0.1);
    t.battery_soc = r(mix(i + 6), 0, 100, 0.1);
    t.has_battery_temperature = true;
    t.battery_temperature = r(mix(i + 7), 10, 40, 0.1);
    t.grid_voltage = r(mix(i + 8), 220, 240, 0.1);
    t.grid_power = r(mix(i + 9), -5000, 5000, 0.1);
    t.grid_frequency = r(mix(i + 10), 49.8, 50.2, 0.01);
    t.has_seq = true;
    t.seq = 1000000 + i;
    t.has_clock_synced = true;
    t.clock_synced = true;
    t.has_backlog = true;
    t.backlog = 0;
    t.has_energy = true;
    t.energy_battery_charged_wh = (double)(mix(i + 11) % 100000000) / 1000.0;
    t.energy_battery_discharged_wh = (double)(mix(i + 12) % 100000000) / 1000.0;
    t.energy_grid_import_wh = (double)(mix(i + 13) % 100000000) / 1000.0;
    t.energy_grid_export_wh = (double)(mix(i + 14) % 100000000) / 1000.0;
    t.energy_since_ms = 1767225600000LL;
    return ems_telemetry_encode(&t, buf, cap);
}

typedef struct {
    char text[EMS_TELEMETRY_JSON_MAX + 32];
    size_t len;
} pkt_t;

/* The gateway's full path for one frame. */
static int full(const pkt_t *p, ems_telemetry_t *t)
{
    ems_verr_t err;
    json_t *root = ems_jr_parse(p->text, p->len, &err);
    if (!root)
        return EMS_EINVAL;
    int rc = EMS_EINVAL;
    if (ems_message_identify(root, &err) == EMS_MSG_TELEMETRY)
        rc = ems_telemetry_from_json(root, t, &err);
    json_decref(root);
    return rc;
}

/* The gateway's path with the scanner in front. */
static int fast(const pkt_t *p, ems_telemetry_t *t)
{
    return ems_telemetry_scan(p->text, p->len, t) == 0 ? 0 : full(p, t);
}

typedef struct {
    double ns;
    double allocs, bytes;
} result_t;

static result_t run(int (*fn)(const pkt_t *, ems_telemetry_t *), const pkt_t *pk, long n)
{
    result_t best = {1e30, 0, 0};
    volatile double sink = 0;
    for (int round = 0; round < 3; round++) {
        g_allocs = g_alloc_bytes = 0;
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            ems_telemetry_t t;
            if (fn(&pk[i % PACKETS], &t) != 0) {
                fprintf(stderr, "bench_decode: packet %ld refused\n", i % PACKETS);
                exit(1);
            }
            sink += t.battery_power;
        }
        double ns = (now_ns() - t0) / (double)n;
        if (ns < best.ns)
            best = (result_t){ns, (double)g_allocs / (double)n, (double)g_alloc_bytes / (double)n};
    }
    (void)sink;
    return best;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n <= 0)
        n = 200000;
    json_set_alloc_funcs(count_malloc, free);
    static pkt_t pk[PACKETS], slow[PACKETS];
    size_t bytes = 0;
    for (int i = 0; i < PACKETS; i++) {
        int len = packet((uint64_t)i, pk[i].text, sizeof pk[i].text);
        if (len <= 0) {
            fprintf(stderr, "bench_decode: cannot encode packet %d\n", i);
            return 1;
        }
        pk[i].len = (size_t)len;
        bytes += pk[i].len;
        /* The same packet with an unknown member at the end. */
        slow[i].len = (size_t)snprintf(slow[i].text, sizeof slow[i].text, "%.*s,\"x\":1}",
                                       len - 1, pk[i].text);
        ems_telemetry_t a, b;
        if (ems_telemetry_scan(pk[i].text, pk[i].len, &a) != 0 || full(&pk[i], &b) != 0 ||
            !ems_telemetry_equal(&a, &b) ||
            ems_telemetry_scan(slow[i].text, slow[i].len, &a) != EMS_EAGAIN) {
            fprintf(stderr, "bench_decode: the paths disagree on packet %d\n", i);
            return 1;
        }
    }
    printf("bench_decode: %d packets of %zu bytes on average, %ld decodes per path, best of 3\n"
           "the first: %s\n\n",
           PACKETS, bytes / PACKETS, n, pk[0].text);
    printf("| path | ns/packet | allocations/packet | bytes allocated/packet |\n");
    printf("| --- | ---: | ---: | ---: |\n");
    static const struct {
        const char *name;
        int (*fn)(const pkt_t *, ems_telemetry_t *);
        int slow;
    } paths[] = {
        {"full (jansson tree)", full, 0},
        {"fast (ems_telemetry_scan)", fast, 0},
        {"fallback (scan, then full)", fast, 1},
    };
    double base = 0;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        result_t r = run(paths[i].fn, paths[i].slow ? slow : pk, n);
        if (i == 0)
            base = r.ns;
        printf("| %s | %.0f (%.2fx) | %.1f | %.0f |\n", paths[i].name, r.ns, base / r.ns, r.allocs,
               r.bytes);
    }
    return 0;
}
