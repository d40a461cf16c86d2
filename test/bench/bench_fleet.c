/* bench_fleet.c: a fleet of simulated devices, or a dashboard, for the
 * end-to-end benchmark (scripts/bench-fleet.sh drives it; docs/benchmarks.md
 * records the results). A benchmark, not a test: it measures and reports,
 * it never fails on a number.
 *
 *   bench_fleet devices  [options]   N devices on one libuv loop
 *   bench_fleet dashboard [options]  one dashboard WebSocket
 *   bench_fleet token PREFIX SEED INDEX   prints a device's token (for checks)
 *
 * Without arguments it prints this usage and exits 0 (scripts/bench.sh runs
 * every bench program without arguments; the fleet needs the whole system,
 * which scripts/bench-fleet.sh starts).
 *
 * Devices use the project's own client (common/net/client.h, ws.h, conn.h),
 * so the edge's WebSocket code is part of what is measured. Each device
 * connects with its Bearer token (token = hex SHA-256 of
 * "ems-bench:SEED:ID", so the orchestrator can provision the hashes in one
 * SQL statement), bound to the --src address (one 127.0.0.x per process:
 * one address holds ~28,000 connections to one port). Connections are
 * opened at --rate per second. When every device is connected the process
 * prints "READY n" and waits for SIGUSR1; then each device sends one valid
 * telemetry packet per second (pre-encoded once with ems_telemetry_encode,
 * only the timestamp, seq and a timing field patched per send), phases
 * spread uniformly over the second. The timeline after SIGUSR1:
 *
 *   [0, warmup)                sending, not measured
 *   [warmup, warmup+window)    sending, measured (latency histograms)
 *   then                       no more sends; wait (at most --drain s)
 *                              until every packet is acked or nacked
 *
 * Then the results are written as one JSON object to --out and the process
 * closes its connections and exits.
 *
 * Timing field: the wire timestamp has millisecond precision, so the
 * microseconds within that millisecond ride in system_status.target_power
 * (0..999, a valid optional field the gateway passes to dashboards). A
 * dashboard computes fan-out latency as its receive time minus
 * timestamp + target_power us, on the same machine clock (CLOCK_REALTIME).
 * Ack latency is measured on CLOCK_MONOTONIC from the send to the ack
 * message that covers the packet's seq.
 *
 * A dashboard with --sub fleet takes the coalesced fleet view instead
 * ("mode": "fleet", docs/api.md): `fleet` frames with each device's latest
 * state at most once per fleet_interval_ms. Each item carries its packet's
 * timestamp and target_power, so the dashboard measures the latest-state
 * latency the same way: receipt of the item minus the packet's send time.
 */
#include "client.h"
#include "lean_ws.h"
#include "error.h"
#include "log.h"
#include "telemetry.h"
#include "timefmt.h"
#include "ws.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <inttypes.h>
#include <mbedtls/sha256.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

/* ------------------------------------------------------------ clocks */

static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------ histogram */

/* Linear pieces: 10 us steps below 10 ms, 100 us below 100 ms, 1 ms below
 * 1 s, 100 ms below 100 s; beyond that one overflow bucket. Exact bounds
 * are printed, so the orchestrator merges processes by lower bound. */
#define H_N (1000 + 900 + 900 + 990 + 1)

typedef struct {
    uint64_t c[H_N];
    uint64_t n;
    uint64_t max;
    double sum;
} hist_t;

static size_t h_index(uint64_t v)
{
    if (v < 10000)
        return (size_t)(v / 10);
    if (v < 100000)
        return 1000 + (size_t)((v - 10000) / 100);
    if (v < 1000000)
        return 1900 + (size_t)((v - 100000) / 1000);
    if (v < 100000000)
        return 2800 + (size_t)((v - 1000000) / 100000);
    return H_N - 1;
}

static void h_bounds(size_t i, uint64_t *lo, uint64_t *width)
{
    if (i < 1000) {
        *lo = i * 10, *width = 10;
    } else if (i < 1900) {
        *lo = 10000 + (i - 1000) * 100, *width = 100;
    } else if (i < 2800) {
        *lo = 100000 + (i - 1900) * 1000, *width = 1000;
    } else if (i < H_N - 1) {
        *lo = 1000000 + (uint64_t)(i - 2800) * 100000, *width = 100000;
    } else {
        *lo = 100000000, *width = 0;
    }
}

static void h_add(hist_t *h, int64_t v)
{
    if (v < 0)
        v = 0; /* clock granularity: same-machine times can tie */
    h->c[h_index((uint64_t)v)]++;
    h->n++;
    h->sum += (double)v;
    if ((uint64_t)v > h->max)
        h->max = (uint64_t)v;
}

static uint64_t h_pct(const hist_t *h, double p)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)(p * (double)h->n + 0.5), acc = 0;
    if (want < 1)
        want = 1;
    for (size_t i = 0; i < H_N; i++) {
        acc += h->c[i];
        if (acc >= want) {
            uint64_t lo, w;
            h_bounds(i, &lo, &w);
            return lo + w / 2;
        }
    }
    return h->max;
}

static void h_json(FILE *f, const char *name, const hist_t *h)
{
    fprintf(f, "\"%s\":{\"n\":%" PRIu64 ",\"mean_us\":%.1f,\"p50_us\":%" PRIu64
               ",\"p99_us\":%" PRIu64 ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"buckets\":[",
            name, h->n, h->n ? h->sum / (double)h->n : 0.0, h_pct(h, 0.5), h_pct(h, 0.99),
            h_pct(h, 0.999), h->max);
    int first = 1;
    for (size_t i = 0; i < H_N; i++) {
        if (!h->c[i])
            continue;
        uint64_t lo, w;
        h_bounds(i, &lo, &w);
        fprintf(f, "%s[%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", first ? "" : ",", lo, w, h->c[i]);
        first = 0;
    }
    fprintf(f, "]}");
}

/* ------------------------------------------------------------ small helpers */

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench_fleet: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static long num_arg(const char *s, const char *name)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0)
        die("bad number for %s", name);
    return v;
}

static void proc_usage(double *cpu_s, long *rss_kb, long *hwm_kb)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    *rss_kb = *hwm_kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6))
            *rss_kb = strtol(line + 6, NULL, 10);
        else if (!strncmp(line, "VmHWM:", 6))
            *hwm_kb = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

/* "ems-bench:SEED:ID" -> 64 hex characters. */
static void bench_token(const char *seed, const char *id, char out[65])
{
    char in[256];
    int n = snprintf(in, sizeof in, "ems-bench:%s:%s", seed, id);
    unsigned char h[32];
    mbedtls_sha256_ret((const unsigned char *)in, (size_t)n, h, 0);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* Parses a decimal number at *p, advancing it. */
static uint64_t parse_u64(const char **p, const char *end)
{
    uint64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9')
        v = v * 10 + (uint64_t)(*(*p)++ - '0');
    return v;
}

/* ------------------------------------------------------------ packet template */

/* The packet split around its variable parts: device id, timestamp,
 * target_power and seq, in the order they appear in the encoded text. */
enum { HOLE_ID, HOLE_TS, HOLE_US, HOLE_SEQ, HOLES };

typedef struct {
    char text[EMS_TELEMETRY_JSON_MAX];
    size_t seg_off[HOLES + 1], seg_len[HOLES + 1]; /* literal segments */
    int order[HOLES];                              /* hole kind of each gap */
} tmpl_t;

static void tmpl_build(tmpl_t *t)
{
    ems_telemetry_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.device_id, sizeof p.device_id, "IDIDIDIDIDIDIDID");
    p.timestamp_ms = 981173106789; /* 2001-02-03T04:05:06.789Z */
    p.state = EMS_STATE_CHARGING;
    p.mode = EMS_MODE_AUTO;
    p.has_wifi_strength = true;
    p.wifi_strength = -45;
    p.has_target_mode = true;
    p.target_mode = EMS_TARGET_AUTO;
    p.has_target_power = true;
    p.target_power = 777777;
    p.battery_voltage = 53.2;
    p.battery_current = 10.5;
    p.battery_power = 558.6;
    p.battery_soc = 85.5;
    p.has_battery_temperature = true;
    p.battery_temperature = 27.5;
    p.grid_voltage = 230.1;
    p.grid_power = -200;
    p.grid_frequency = 50.0;
    p.has_seq = true;
    p.seq = EMS_SEQ_MAX;
    p.has_clock_synced = true;
    p.clock_synced = true;
    int n = ems_telemetry_encode(&p, t->text, sizeof t->text);
    if (n < 0)
        die("cannot encode the packet template%s", "");
    const char *marks[HOLES] = {"IDIDIDIDIDIDIDID", "2001-02-03T04:05:06.789Z", "777777",
                                "9007199254740991"};
    size_t pos[HOLES];
    for (int i = 0; i < HOLES; i++) {
        const char *m = strstr(t->text, marks[i]);
        if (!m)
            die("template: marker %s not found", marks[i]);
        pos[i] = (size_t)(m - t->text);
        t->order[i] = i;
    }
    for (int i = 0; i < HOLES; i++) /* sort holes by position */
        for (int j = i + 1; j < HOLES; j++)
            if (pos[t->order[j]] < pos[t->order[i]]) {
                int x = t->order[i];
                t->order[i] = t->order[j];
                t->order[j] = x;
            }
    size_t at = 0;
    for (int i = 0; i < HOLES; i++) {
        int k = t->order[i];
        t->seg_off[i] = at;
        t->seg_len[i] = pos[k] - at;
        at = pos[k] + strlen(marks[k]);
    }
    t->seg_off[HOLES] = at;
    t->seg_len[HOLES] = (size_t)n - at;
}

/* Cached "YYYY-MM-DDTHH:MM:SS" of the current second. */
typedef struct {
    int64_t sec;
    char text[EMS_TIME_STR_MAX];
} tscache_t;

/* Decimal digits of v at out; returns their count. */
static size_t fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static size_t tmpl_fill(const tmpl_t *t, tscache_t *tc, char *out, const char *id, size_t id_len,
                        int64_t now_us, uint64_t seq)
{
    int64_t ms = now_us / 1000;
    if (ms / 1000 != tc->sec) {
        tc->sec = ms / 1000;
        ems_time_format(tc->sec * 1000, tc->text, sizeof tc->text);
    }
    size_t o = 0;
    for (int i = 0; i <= HOLES; i++) {
        memcpy(out + o, t->text + t->seg_off[i], t->seg_len[i]);
        o += t->seg_len[i];
        if (i == HOLES)
            break;
        switch (t->order[i]) {
        case HOLE_ID:
            memcpy(out + o, id, id_len);
            o += id_len;
            break;
        case HOLE_TS: {
            int m = (int)(ms % 1000);
            memcpy(out + o, tc->text, 20); /* "YYYY-MM-DDTHH:MM:SS." */
            out[o + 20] = (char)('0' + m / 100);
            out[o + 21] = (char)('0' + m / 10 % 10);
            out[o + 22] = (char)('0' + m % 10);
            out[o + 23] = 'Z';
            o += 24;
            break;
        }
        case HOLE_US:
            o += fmt_u64(out + o, (uint64_t)(now_us % 1000));
            break;
        case HOLE_SEQ:
            o += fmt_u64(out + o, seq);
            break;
        }
    }
    out[o] = '\0';
    return o;
}

/* ------------------------------------------------------------ devices */

#define RING 64 /* send times kept per device: 64 packets without an answer */

typedef struct fleet fleet_t;

/* One simulated device, ~280 bytes; its connection (lean_ws_t, or the
 * project's ems_ws_t for TLS) apart, and only while connected. The id and
 * token are derived from the index when needed. */
typedef struct {
    void *conn;        /* NULL when not connected */
    uint32_t index;    /* global device number, or line of --tokens */
    uint32_t phase_us; /* offset of its sends within the interval */
    uint32_t seq;      /* next seq to send */
    bool open, connecting;
    /* Send time of seq s in ring[s % RING]: the low 32 bits of the
     * monotonic clock in us (differences are right for 71 minutes), bit 0
     * set when sent in the window; 0 = answered or never sent. */
    uint32_t ring[RING];
} fdev_t;

typedef struct {
    uint32_t dev;
    uint64_t not_before;
} pend_t;

struct fleet {
    uv_loop_t *loop;
    /* options */
    char host[256];
    uint16_t ports[16];
    int nports;
    char path[128]; /* the device path; the id is appended */
    char src[64];
    char prefix[32];
    char seed[64];
    char tls_name[256];
    uint32_t first, count;
    unsigned rate;
    unsigned max_inflight;
    unsigned warmup_s, window_s, drain_s;
    uint64_t interval_us;
    unsigned tick_ms;
    bool autostart;
    bool lean;
    const char *out_path;
    ems_tls_config_t *tls;
    struct sockaddr_storage bind;
    bool has_bind;
    char **tok_ids, **tok_tokens; /* --tokens: line i's id and token */
    lean_ws_ctx_t lx[16];         /* lean engine: one context per port */
    /* state */
    fdev_t *devs;
    pend_t *pend; /* FIFO of devices to (re)connect */
    size_t pend_head, pend_len, pend_cap;
    unsigned inflight;
    uint32_t nopen;
    uint64_t ramp_t0, ramp_opened;
    bool ready_printed;
    uint64_t t_ready;
    /* run */
    bool started, sending, draining, finished;
    uint64_t t0, w_lo, w_hi, drain_end;
    size_t cursor;
    uint64_t cycle;
    tmpl_t tmpl;
    tscache_t tsc;
    /* counters */
    uint64_t connects, connect_fail, disconnects, http_refused, sent, sent_window, acked,
        acked_window, nacked, skipped, late_acks, dup_acks, bogus_acks, expired, unknown_msgs,
        send_fail;
    hist_t ack_lat;
    uint64_t t_connect_start;
    uv_timer_t ramp_timer, send_timer, report_timer;
    uv_signal_t sig_usr1, sig_term, sig_int;
};

/* The one fleet of the process (the connection callbacks reach it here). */
static fleet_t *the_fleet;

static void dev_connect(fleet_t *f, fdev_t *d);

static void pend_push(fleet_t *f, uint32_t dev, uint64_t not_before)
{
    if (f->pend_len == f->pend_cap)
        return; /* cannot happen: capacity is the device count */
    f->pend[(f->pend_head + f->pend_len) % f->pend_cap] = (pend_t){dev, not_before};
    f->pend_len++;
}

/* The device's id into out (at least EMS_DEVICE_ID_MAX + 1); its length. */
static size_t dev_id(const fleet_t *f, const fdev_t *d, char *out)
{
    if (f->tok_ids) {
        size_t n = strlen(f->tok_ids[d->index]);
        memcpy(out, f->tok_ids[d->index], n + 1);
        return n;
    }
    size_t p = strlen(f->prefix), n = fmt_u64(out + p, d->index);
    memcpy(out, f->prefix, p);
    if (n < 6) { /* PREFIX%06u */
        memmove(out + p + 6 - n, out + p, n);
        memset(out + p, '0', 6 - n);
        n = 6;
    }
    out[p + n] = '\0';
    return p + n;
}

/* One seq answered (ack or nack). Its send time is in the ring unless it
 * was answered already (a duplicate) or waited so long that its slot was
 * reused (a late ack: counted, latency unknown). */
static void settle(fleet_t *f, fdev_t *d, uint64_t seq, bool ack, uint64_t now)
{
    if (seq == 0 || seq >= d->seq) {
        f->bogus_acks++; /* never sent */
        return;
    }
    uint32_t *slot = &d->ring[seq % RING];
    if (seq + RING < d->seq) {
        f->late_acks++;
        if (ack)
            f->acked++;
        else
            f->nacked++;
        return;
    }
    if (*slot == 0) {
        f->dup_acks++;
        return;
    }
    uint32_t t = *slot;
    *slot = 0;
    if (ack) {
        f->acked++;
        if (t & 1) {
            f->acked_window++;
            h_add(&f->ack_lat, (int64_t)(uint32_t)((uint32_t)now - (t & ~1u)));
        }
    } else {
        f->nacked++;
    }
}

/* A message from the gateway to a device: acks ({"type":"ack","ranges":
 * [[a,b],...]}) and nacks are counted, the welcome ignored. */
static void dev_message(fleet_t *f, fdev_t *d, const char *data, size_t len)
{
    const char *end = data + len;
    static const char ack[] = "{\"type\":\"ack\",\"ranges\":[";
    static const char nack[] = "{\"type\":\"nack\"";
    uint64_t now = mono_us();
    if (len > sizeof ack - 1 && !memcmp(data, ack, sizeof ack - 1)) {
        const char *p = data + sizeof ack - 1;
        while (p < end && *p == '[') {
            p++;
            uint64_t lo = parse_u64(&p, end);
            if (p < end && *p == ',')
                p++;
            uint64_t hi = parse_u64(&p, end);
            if (p < end && *p == ']')
                p++;
            if (p < end && *p == ',')
                p++;
            if (hi < lo || hi - lo > 1000000)
                break;
            for (uint64_t s = lo; s <= hi; s++)
                settle(f, d, s, true, now);
        }
        return;
    }
    if (len > sizeof nack - 1 && !memcmp(data, nack, sizeof nack - 1)) {
        const char *s = memmem(data, len, "\"seq\":", 6);
        if (s) {
            const char *p = s + 6;
            settle(f, d, parse_u64(&p, end), false, now);
        } else {
            f->nacked++;
        }
        if (f->nacked <= 5) {
            char id[EMS_DEVICE_ID_MAX + 24];
            dev_id(f, d, id);
            fprintf(stderr, "bench_fleet: device %s nack: %.*s\n", id, (int)len, data);
        }
        return;
    }
    if (len > 18 && !memcmp(data, "{\"type\":\"welcome\"", 17))
        return;
    f->unknown_msgs++;
}

static void dev_opened(fleet_t *f, fdev_t *d)
{
    d->open = true;
    d->connecting = false;
    f->inflight--;
    f->nopen++;
    f->connects++;
}

/* The connection is gone (open or not): count it, connect again in 1 s. */
static void dev_closed(fleet_t *f, fdev_t *d, int status, int http_status, int code_recv,
                       int code_sent, const char *detail)
{
    char id[EMS_DEVICE_ID_MAX + 24];
    d->conn = NULL;
    if (d->open) {
        d->open = false;
        f->nopen--;
        if (!f->finished) {
            f->disconnects++;
            if (f->disconnects <= 10)
                fprintf(stderr, "bench_fleet: device %s disconnected: status %d (%s), code %d/%d\n",
                        (dev_id(f, d, id), id), status, detail, code_recv, code_sent);
        }
    } else if (d->connecting) {
        d->connecting = false;
        f->inflight--;
        f->connect_fail++;
        if (http_status)
            f->http_refused++;
        if (f->connect_fail <= 10)
            fprintf(stderr, "bench_fleet: device %s connect failed: %s %s (http %d)\n",
                    (dev_id(f, d, id), id), ems_strerror(status), detail, http_status);
    }
    if (!f->finished)
        pend_push(f, (uint32_t)(d - f->devs), mono_us() + 1000000); /* again in 1 s */
}

/* The project's client (TLS, or --engine client). */
static void cl_on_open(ems_ws_t *ws)
{
    dev_opened(the_fleet, ems_ws_user(ws));
}

static void cl_on_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    (void)binary;
    dev_message(the_fleet, ems_ws_user(ws), data, len);
}

static void cl_on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    dev_closed(the_fleet, ems_ws_user(ws), info->status, info->http_status, info->code_received,
               info->code_sent, info->detail);
}

static const ems_ws_callbacks_t cl_cbs = {cl_on_open, cl_on_message, cl_on_close};

/* The lean engine (lean_ws.h). */
static void lw_on_open(lean_ws_t *c, void *user)
{
    (void)c;
    dev_opened(the_fleet, user);
}

static void lw_on_message(lean_ws_t *c, void *user, const char *data, size_t len)
{
    (void)c;
    dev_message(the_fleet, user, data, len);
}

static void lw_on_close(lean_ws_t *c, void *user, bool was_open, int status, int http_status,
                        int code, const char *detail)
{
    (void)c, (void)was_open;
    dev_closed(the_fleet, user, status, http_status, code, 0, detail);
}

/* "Authorization: Bearer TOKEN\r\n" for the device. */
static void dev_auth_header(const fleet_t *f, const fdev_t *d, const char *id, char *hdr,
                            size_t cap)
{
    char tok[65];
    const char *t = tok;
    if (f->tok_tokens)
        t = f->tok_tokens[d->index];
    else
        bench_token(f->seed, id, tok);
    snprintf(hdr, cap, "Authorization: Bearer %s\r\n", t);
}

static void dev_connect(fleet_t *f, fdev_t *d)
{
    char id[EMS_DEVICE_ID_MAX + 24], path[sizeof f->path + sizeof id], hdr[600];
    int pi = (int)(d->index % (uint32_t)f->nports);
    dev_id(f, d, id);
    snprintf(path, sizeof path, "%s%s", f->path, id);
    dev_auth_header(f, d, id, hdr, sizeof hdr);
    int rc;
    if (f->lean) {
        lean_ws_t *c = NULL;
        rc = lean_ws_connect(&f->lx[pi], path, hdr, d, &c);
        d->conn = c;
    } else {
        char url[sizeof f->host + sizeof path + 32];
        bool v6 = strchr(f->host, ':') != NULL;
        snprintf(url, sizeof url, "%s://%s%s%s:%u%s", f->tls ? "wss" : "ws", v6 ? "[" : "", f->host,
                 v6 ? "]" : "", (unsigned)f->ports[pi], path);
        ems_ws_options_t wo;
        ems_ws_options_default(&wo);
        wo.max_send_queue = 64 * 1024;
        wo.open_timeout_ms = 30000;
        ems_conn_options_t co = {.max_out = 64 * 1024,
                                 .bind_addr = f->has_bind ? (const struct sockaddr *)&f->bind : NULL};
        ems_wsclient_options_t o = {.tls = f->tls,
                                    .tls_hostname = f->tls ? f->tls_name : NULL,
                                    .extra_headers = hdr,
                                    .ws = &wo,
                                    .conn = &co};
        ems_ws_t *ws = NULL;
        rc = ems_wsclient_connect(f->loop, url, &o, &cl_cbs, d, &ws);
        d->conn = ws;
    }
    if (rc < 0) {
        d->conn = NULL;
        f->connect_fail++;
        if (f->connect_fail <= 10)
            fprintf(stderr, "bench_fleet: device %s: cannot start a connection: %s\n", id,
                    rc > -10000 ? strerror(-rc) : ems_strerror(rc));
        pend_push(f, (uint32_t)(d - f->devs), mono_us() + 1000000);
        return;
    }
    d->connecting = true;
    f->inflight++;
}

static int dev_send(fleet_t *f, fdev_t *d, const char *text, size_t len)
{
    if (f->lean)
        return lean_ws_send_text(d->conn, text, len);
    return ems_ws_send_text(d->conn, text, len);
}

static void dev_close(fleet_t *f, fdev_t *d)
{
    if (f->lean)
        lean_ws_close(d->conn, 1000);
    else
        ems_ws_close(d->conn, 1000, "benchmark over");
}

static void write_results(fleet_t *f);
static void finish(fleet_t *f);
static void start(fleet_t *f);

static void ramp_cb(uv_timer_t *t)
{
    fleet_t *f = t->data;
    uint64_t now = mono_us();
    if (!f->ramp_t0)
        f->ramp_t0 = now;
    uint64_t allowed = (now - f->ramp_t0) * f->rate / 1000000 + 1;
    while (f->pend_len && f->ramp_opened < allowed && f->inflight < f->max_inflight) {
        pend_t *p = &f->pend[f->pend_head];
        if (p->not_before > now)
            break;
        fdev_t *d = &f->devs[p->dev];
        f->pend_head = (f->pend_head + 1) % f->pend_cap;
        f->pend_len--;
        f->ramp_opened++;
        if (!d->conn)
            dev_connect(f, d);
    }
    if (f->ramp_opened + f->rate < allowed) /* no backlog of budget after a pause */
        f->ramp_opened = allowed - f->rate;
    if (!f->ready_printed && f->nopen == f->count) {
        f->ready_printed = true;
        f->t_ready = now;
        printf("READY %u connected in %.1f s (failed attempts %" PRIu64 ")\n", f->nopen,
               (double)(now - f->t_connect_start) / 1e6, f->connect_fail);
        fflush(stdout);
        if (f->autostart)
            start(f);
    }
}

static void send_one(fleet_t *f, fdev_t *d, uint64_t now)
{
    if (!d->open) {
        f->skipped++;
        return;
    }
    char buf[EMS_TELEMETRY_JSON_MAX + 64], id[EMS_DEVICE_ID_MAX + 24];
    uint64_t seq = d->seq;
    uint32_t *slot = &d->ring[seq % RING];
    if (*slot != 0) {
        /* RING packets without an answer for that packet: its slot is
         * reused; a later ack for it counts as late (latency unknown). */
        *slot = 0;
        f->expired++;
    }
    size_t idl = dev_id(f, d, id);
    size_t n = tmpl_fill(&f->tmpl, &f->tsc, buf, id, idl, wall_us(), seq);
    if (dev_send(f, d, buf, n) < 0) {
        f->send_fail++;
        return;
    }
    bool in_window = now >= f->w_lo && now < f->w_hi;
    uint32_t v = ((uint32_t)now & ~1u) | (in_window ? 1u : 0u);
    *slot = v ? v : 2;
    d->seq++;
    f->sent++;
    if (in_window)
        f->sent_window++;
}

static bool all_settled(const fleet_t *f)
{
    return f->acked + f->nacked >= f->sent;
}

static void send_cb(uv_timer_t *t)
{
    fleet_t *f = t->data;
    uint64_t now = mono_us();
    if (f->sending) {
        /* Devices are sorted by phase; the cursor walks them once per
         * interval, sending what is due since the last tick. */
        for (;;) {
            fdev_t *d = &f->devs[f->cursor];
            uint64_t due = f->t0 + f->cycle * f->interval_us + d->phase_us;
            if (due > now)
                break;
            if (due >= f->w_hi) {
                f->sending = false;
                f->draining = true;
                f->drain_end = now + (uint64_t)f->drain_s * 1000000;
                break;
            }
            send_one(f, d, now);
            if (++f->cursor == f->count) {
                f->cursor = 0;
                f->cycle++;
            }
        }
    }
    if (f->draining && (all_settled(f) || now >= f->drain_end)) {
        f->draining = false;
        finish(f);
    }
}

static void report_cb(uv_timer_t *t)
{
    fleet_t *f = t->data;
    fprintf(stderr,
            "bench_fleet %s: open %u/%u sent %" PRIu64 " acked %" PRIu64 " nacked %" PRIu64
            " disconnects %" PRIu64 " connect failures %" PRIu64 "\n",
            f->src, f->nopen, f->count, f->sent, f->acked, f->nacked, f->disconnects,
            f->connect_fail);
}

static void start(fleet_t *f)
{
    if (f->started)
        return;
    f->started = true;
    f->sending = true;
    f->t0 = mono_us() + 100000;
    f->w_lo = f->t0 + (uint64_t)f->warmup_s * 1000000;
    f->w_hi = f->w_lo + (uint64_t)f->window_s * 1000000;
    f->cursor = 0;
    f->cycle = 0;
    fprintf(stderr, "bench_fleet %s: start (%u devices open of %u)\n", f->src, f->nopen, f->count);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish(fleet_t *f)
{
    if (f->finished)
        return;
    f->finished = true;
    write_results(f);
    for (uint32_t i = 0; i < f->count; i++) {
        fdev_t *d = &f->devs[i];
        if (d->conn)
            dev_close(f, d);
    }
    if (f->lean)
        for (int i = 0; i < f->nports; i++)
            lean_ws_ctx_close(&f->lx[i]);
    uv_timer_stop(&f->ramp_timer);
    uv_timer_stop(&f->send_timer);
    uv_timer_stop(&f->report_timer);
    uv_signal_stop(&f->sig_usr1);
    uv_signal_stop(&f->sig_term);
    uv_signal_stop(&f->sig_int);
    /* The connections close by themselves (close handshake, at most the
     * close timeout); the loop ends when they are gone. Our own handles: */
    uv_close((uv_handle_t *)&f->ramp_timer, NULL);
    uv_close((uv_handle_t *)&f->send_timer, NULL);
    uv_close((uv_handle_t *)&f->report_timer, NULL);
    uv_close((uv_handle_t *)&f->sig_usr1, NULL);
    uv_close((uv_handle_t *)&f->sig_term, NULL);
    uv_close((uv_handle_t *)&f->sig_int, NULL);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    fleet_t *f = s->data;
    if (signum == SIGUSR1) {
        start(f);
        return;
    }
    finish(f);
}

static void write_results(fleet_t *f)
{
    FILE *o = f->out_path ? fopen(f->out_path, "w") : stdout;
    if (!o) {
        perror(f->out_path);
        o = stdout;
    }
    double cpu;
    long rss, hwm;
    proc_usage(&cpu, &rss, &hwm);
    uint64_t unsettled = f->sent - (f->acked + f->nacked < f->sent ? f->acked + f->nacked : f->sent);
    fprintf(o,
            "{\"role\":\"devices\",\"src\":\"%s\",\"engine\":\"%s\",\"devices\":%u,\"first\":%u,"
            "\"tls\":%s,\"interval_ms\":%.1f,"
            "\"open_at_end\":%u,\"connects\":%" PRIu64 ",\"connect_failures\":%" PRIu64
            ",\"http_refused\":%" PRIu64 ",\"disconnects\":%" PRIu64 ",\"warmup_s\":%u,"
            "\"window_s\":%u,\"sent\":%" PRIu64 ",\"sent_window\":%" PRIu64 ",\"acked\":%" PRIu64
            ",\"acked_window\":%" PRIu64 ",\"nacked\":%" PRIu64 ",\"unsettled\":%" PRIu64
            ",\"skipped\":%" PRIu64 ",\"send_fail\":%" PRIu64 ",\"late_acks\":%" PRIu64
            ",\"dup_acks\":%" PRIu64 ",\"bogus_acks\":%" PRIu64 ",\"expired\":%" PRIu64
            ",\"unknown_msgs\":%" PRIu64
            ",\"drain_s\":%.2f,\"cpu_s\":%.2f,\"rss_kb\":%ld,\"hwm_kb\":%ld,",
            f->src, f->lean ? "lean" : "client", f->count, f->first, f->tls ? "true" : "false",
            (double)f->interval_us / 1000.0, f->nopen, f->connects,
            f->connect_fail, f->http_refused, f->disconnects, f->warmup_s, f->window_s, f->sent,
            f->sent_window, f->acked, f->acked_window, f->nacked, unsettled, f->skipped,
            f->send_fail, f->late_acks, f->dup_acks, f->bogus_acks, f->expired, f->unknown_msgs,
            f->started && f->w_hi ? (double)(mono_us() - f->w_hi) / 1e6 : 0.0, cpu, rss, hwm);
    h_json(o, "ack_latency", &f->ack_lat);
    fprintf(o, "}\n");
    if (o != stdout)
        fclose(o);
    fprintf(stderr,
            "bench_fleet %s: sent %" PRIu64 " acked %" PRIu64 " nacked %" PRIu64
            " unsettled %" PRIu64 "; ack latency p50 %.2f ms p99 %.2f ms (window n=%" PRIu64 ")\n",
            f->src, f->sent, f->acked, f->nacked, unsettled, h_pct(&f->ack_lat, 0.5) / 1000.0,
            h_pct(&f->ack_lat, 0.99) / 1000.0, f->ack_lat.n);
}

/* ------------------------------------------------------------ dashboard */

typedef struct {
    uv_loop_t *loop;
    ems_ws_t *ws;
    char sub[256 * 1024];
    unsigned warmup_s, window_s, tail_s;
    const char *out_path;
    bool started, finished, open;
    int64_t w_lo, w_hi; /* wall clock us: packets sent in this window are measured */
    uint64_t msgs, telemetry, device_events, other, measured, parse_fail;
    hist_t lat;
    uint64_t fleet_frames, fleet_items, fleet_measured; /* --sub fleet */
    hist_t fleet_lat;
    int64_t fleet_last_us, fleet_gap_max_us; /* receipt of the last frame, longest pause */
    int64_t *fleet_seen; /* by the id's number: the send time of the packet last measured */
    size_t fleet_nseen;
    int close_status, close_code;
    uv_timer_t timer;
    uv_signal_t sig_usr1, sig_term, sig_int;
} dash_t;

static void dash_write(dash_t *b)
{
    FILE *o = b->out_path ? fopen(b->out_path, "w") : stdout;
    if (!o) {
        perror(b->out_path);
        o = stdout;
    }
    double cpu;
    long rss, hwm;
    proc_usage(&cpu, &rss, &hwm);
    fprintf(o,
            "{\"role\":\"dashboard\",\"open_at_end\":%s,\"msgs\":%" PRIu64 ",\"telemetry\":%" PRIu64
            ",\"device_events\":%" PRIu64 ",\"other\":%" PRIu64 ",\"measured\":%" PRIu64
            ",\"parse_fail\":%" PRIu64 ",\"close_status\":%d,\"close_code\":%d,\"cpu_s\":%.2f,"
            "\"rss_kb\":%ld,",
            b->open ? "true" : "false", b->msgs, b->telemetry, b->device_events, b->other,
            b->measured, b->parse_fail, b->close_status, b->close_code, cpu, rss);
    h_json(o, "fanout_latency", &b->lat);
    fprintf(o,
            ",\"fleet_frames\":%" PRIu64 ",\"fleet_items\":%" PRIu64 ",\"fleet_measured\":%" PRIu64
            ",\"fleet_gap_max_ms\":%.1f,",
            b->fleet_frames, b->fleet_items, b->fleet_measured, (double)b->fleet_gap_max_us / 1000.0);
    h_json(o, "fleet_latency", &b->fleet_lat);
    fprintf(o, "}\n");
    if (o != stdout)
        fclose(o);
    fprintf(stderr,
            "bench_fleet dashboard: %" PRIu64 " telemetry (%" PRIu64
            " measured): fan-out p50 %.2f ms p99 %.2f ms\n",
            b->telemetry, b->measured, h_pct(&b->lat, 0.5) / 1000.0, h_pct(&b->lat, 0.99) / 1000.0);
    if (b->fleet_frames)
        fprintf(stderr,
                "bench_fleet dashboard: %" PRIu64 " fleet frames, %" PRIu64 " items (%" PRIu64
                " measured): latest-state p50 %.2f ms p99 %.2f ms; longest pause %.0f ms\n",
                b->fleet_frames, b->fleet_items, b->fleet_measured,
                h_pct(&b->fleet_lat, 0.5) / 1000.0, h_pct(&b->fleet_lat, 0.99) / 1000.0,
                (double)b->fleet_gap_max_us / 1000.0);
}

static void dash_finish(dash_t *b)
{
    if (b->finished)
        return;
    b->finished = true;
    dash_write(b);
    if (b->ws)
        ems_ws_close(b->ws, 1000, "benchmark over");
    uv_close((uv_handle_t *)&b->timer, NULL);
    uv_close((uv_handle_t *)&b->sig_usr1, NULL);
    uv_close((uv_handle_t *)&b->sig_term, NULL);
    uv_close((uv_handle_t *)&b->sig_int, NULL);
}

static void dash_on_open(ems_ws_t *ws)
{
    dash_t *b = ems_ws_user(ws);
    b->open = true;
    ems_ws_send_text(ws, b->sub, strlen(b->sub));
    printf("READY dashboard\n");
    fflush(stdout);
}

/* True the first time the state of the packet sent at `sent` arrives for
 * the device whose id starts at `id` (PREFIX%06u): an item is sent again
 * with the same packet when only the device's online state changed (as
 * when the devices disconnect at the end), which is not a new packet's
 * latency. Ids without a number are always measured. */
static bool fleet_first(dash_t *b, const char *id, const char *end, int64_t sent)
{
    const char *q = id;
    while (q < end && *q != '"')
        q++;
    const char *d = q;
    while (d > id && d[-1] >= '0' && d[-1] <= '9')
        d--;
    if (d == q || q - d > 7)
        return true;
    size_t n = (size_t)strtoul(d, NULL, 10);
    if (n >= b->fleet_nseen) {
        size_t cap = b->fleet_nseen ? b->fleet_nseen : 1024;
        while (cap <= n)
            cap *= 2;
        int64_t *m = realloc(b->fleet_seen, cap * sizeof *m);
        if (!m)
            return true;
        memset(m + b->fleet_nseen, 0, (cap - b->fleet_nseen) * sizeof *m);
        b->fleet_seen = m;
        b->fleet_nseen = cap;
    }
    if (b->fleet_seen[n] == sent)
        return false;
    b->fleet_seen[n] = sent;
    return true;
}

/* A `fleet` frame: every item with a packet is measured like a telemetry
 * message (the gateway writes an item's members in a fixed order:
 * device_id first, then timestamp, then target_power). */
static void dash_fleet(dash_t *b, const char *data, size_t len, int64_t now)
{
    static const char key[] = "{\"device_id\":\"";
    const char *end = data + len;
    const char *it = memmem(data, len, key, sizeof key - 1);
    b->fleet_frames++;
    if (b->started && b->fleet_last_us && now - b->fleet_last_us > b->fleet_gap_max_us)
        b->fleet_gap_max_us = now - b->fleet_last_us;
    b->fleet_last_us = now;
    while (it) {
        const char *from = it + sizeof key - 1;
        const char *next = memmem(from, (size_t)(end - from), key, sizeof key - 1);
        const char *stop = next ? next : end;
        b->fleet_items++;
        const char *ts = memmem(from, (size_t)(stop - from), "\"timestamp\":\"", 13);
        const char *us = memmem(from, (size_t)(stop - from), "\"target_power\":", 15);
        int64_t ms;
        if (ts && us && ts + 13 + 24 <= stop && ems_time_parse(ts + 13, 24, &ms) == 0) {
            const char *p = us + 15;
            int64_t sent = ms * 1000 + (int64_t)parse_u64(&p, stop);
            if (b->started && sent >= b->w_lo && sent < b->w_hi && fleet_first(b, from, stop, sent)) {
                b->fleet_measured++;
                h_add(&b->fleet_lat, now - sent);
            }

        } else if (ts) {
            b->parse_fail++;
        }
        it = next;
    }
}

static void dash_on_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    (void)binary;
    dash_t *b = ems_ws_user(ws);
    int64_t now = wall_us();
    b->msgs++;
    static const char tel[] = "{\"type\":\"telemetry\"", fleet[] = "{\"type\":\"fleet\"";
    if (len >= sizeof fleet && memcmp(data, fleet, sizeof fleet - 1) == 0) {
        dash_fleet(b, data, len, now);
        return;
    }
    if (len < sizeof tel || memcmp(data, tel, sizeof tel - 1) != 0) {
        if (memmem(data, len, "\"type\":\"device\"", 15))
            b->device_events++;
        else
            b->other++;
        return;
    }
    b->telemetry++;
    const char *ts = memmem(data, len, "\"timestamp\":\"", 13);
    if (ts && ts + 13 + 24 > data + len)
        ts = NULL;
    const char *us = memmem(data, len, "\"target_power\":", 15);
    int64_t ms;
    if (!ts || !us || ems_time_parse(ts + 13, 24, &ms) < 0) {
        b->parse_fail++;
        return;
    }
    const char *p = us + 15;
    int64_t sent = ms * 1000 + (int64_t)parse_u64(&p, data + len);
    if (b->started && sent >= b->w_lo && sent < b->w_hi) {
        b->measured++;
        h_add(&b->lat, now - sent);
    }
}

static void dash_on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    dash_t *b = ems_ws_user(ws);
    b->ws = NULL;
    b->open = false;
    b->close_status = info->status;
    b->close_code = info->code_received ? info->code_received : info->code_sent;
    if (!b->finished) {
        fprintf(stderr, "bench_fleet dashboard: closed: %s %s (code %d, http %d)\n",
                ems_strerror(info->status), info->detail, b->close_code, info->http_status);
        dash_finish(b);
    }
}

static const ems_ws_callbacks_t dash_cbs = {dash_on_open, dash_on_message, dash_on_close};

static void dash_timer_cb(uv_timer_t *t)
{
    dash_finish(t->data);
}

static void dash_signal_cb(uv_signal_t *s, int signum)
{
    dash_t *b = s->data;
    if (signum == SIGUSR1 && !b->started) {
        b->started = true;
        /* The same timeline as the devices (they start 0.1 s after the
         * signal); the extra tail lets the last packets arrive. */
        int64_t t0 = wall_us() + 100000;
        b->w_lo = t0 + (int64_t)b->warmup_s * 1000000;
        b->w_hi = b->w_lo + (int64_t)b->window_s * 1000000;
        uv_timer_start(&b->timer, dash_timer_cb,
                       100 + ((uint64_t)b->warmup_s + b->window_s + b->tail_s) * 1000, 0);
        return;
    }
    if (signum != SIGUSR1)
        dash_finish(b);
}

static int run_dashboard(int argc, char **argv)
{
    static dash_t b;
    const char *host = "127.0.0.1", *cookie = NULL, *ca = NULL, *sub = "*";
    unsigned port = 0;
    b.warmup_s = 5, b.window_s = 60, b.tail_s = 3;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("missing value after %s", a);
        i++;
        if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            port = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--cookie"))
            cookie = v;
        else if (!strcmp(a, "--tls-ca"))
            ca = v;
        else if (!strcmp(a, "--sub"))
            sub = v;
        else if (!strcmp(a, "--warmup"))
            b.warmup_s = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--window"))
            b.window_s = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--tail"))
            b.tail_s = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--out"))
            b.out_path = v;
        else
            die("unknown option %s", a);
    }
    if (!port || !cookie)
        die("dashboard needs --port and --cookie%s", "");
    /* --sub "*", "fleet" (the coalesced fleet view) or
     * "PREFIX:FIRST:COUNT:STEP" (ids PREFIX%06u). */
    if (!strcmp(sub, "*")) {
        snprintf(b.sub, sizeof b.sub, "{\"type\":\"subscribe\",\"devices\":\"*\"}");
    } else if (!strcmp(sub, "fleet")) {
        snprintf(b.sub, sizeof b.sub,
                 "{\"type\":\"subscribe\",\"devices\":\"*\",\"mode\":\"fleet\"}");
    } else {
        char pre[32];
        unsigned first, count, step;
        if (sscanf(sub, "%31[^:]:%u:%u:%u", pre, &first, &count, &step) != 4 || !step ||
            count > 10000)
            die("bad --sub %s (\"*\", fleet or PREFIX:FIRST:COUNT:STEP)", sub);
        size_t o = (size_t)snprintf(b.sub, sizeof b.sub, "{\"type\":\"subscribe\",\"devices\":[");
        for (unsigned k = 0; k < count; k++)
            o += (size_t)snprintf(b.sub + o, sizeof b.sub - o, "%s\"%s%06u\"", k ? "," : "", pre,
                                  first + k * step);
        snprintf(b.sub + o, sizeof b.sub - o, "]}");
    }
    uv_loop_t *loop = uv_default_loop();
    b.loop = loop;
    ems_tls_config_t *tls = NULL;
    if (ca && ems_tls_client_config_new(ca, &tls) < 0)
        die("cannot load CA %s", ca);
    char url[160], hdr[600];
    snprintf(url, sizeof url, "%s://%s:%u/ws/dashboard", tls ? "wss" : "ws", host, port);
    snprintf(hdr, sizeof hdr, "Cookie: %s\r\n", cookie);
    ems_ws_options_t wo;
    ems_ws_options_default(&wo);
    wo.max_message = 1u << 20;
    ems_wsclient_options_t o = {.tls = tls, .tls_hostname = tls ? "localhost" : NULL,
                                .extra_headers = hdr, .ws = &wo};
    uv_timer_init(loop, &b.timer);
    b.timer.data = &b;
    uv_signal_init(loop, &b.sig_usr1);
    uv_signal_init(loop, &b.sig_term);
    uv_signal_init(loop, &b.sig_int);
    b.sig_usr1.data = b.sig_term.data = b.sig_int.data = &b;
    uv_signal_start(&b.sig_usr1, dash_signal_cb, SIGUSR1);
    uv_signal_start(&b.sig_term, dash_signal_cb, SIGTERM);
    uv_signal_start(&b.sig_int, dash_signal_cb, SIGINT);
    if (ems_wsclient_connect(loop, url, &o, &dash_cbs, &b, &b.ws) < 0)
        die("cannot connect to %s", url);
    uv_run(loop, UV_RUN_DEFAULT);
    ems_tls_config_unref(tls);
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    free(b.fleet_seen);
    return 0;
}

/* ------------------------------------------------------------ devices: main */

/* --url ws[s]://HOST[:PORT][/PATH]: scheme, host, port and, if given, the
 * device path (the id is appended). Returns 0 or -1. */
static int parse_url(fleet_t *f, const char *url, bool *tls)
{
    const char *p;
    if (!strncmp(url, "ws://", 5))
        *tls = false, p = url + 5;
    else if (!strncmp(url, "wss://", 6))
        *tls = true, p = url + 6;
    else
        return -1;
    const char *hend, *rest;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend)
            return -1;
        snprintf(f->host, sizeof f->host, "%.*s", (int)(hend - p - 1), p + 1);
        rest = hend + 1;
    } else {
        hend = p + strcspn(p, ":/");
        snprintf(f->host, sizeof f->host, "%.*s", (int)(hend - p), p);
        rest = hend;
    }
    unsigned port = *tls ? 443 : 80;
    if (*rest == ':') {
        char *e;
        port = (unsigned)strtoul(rest + 1, &e, 10);
        rest = e;
    }
    if (!f->host[0] || !port || port > 65535 || (*rest && *rest != '/'))
        return -1;
    f->ports[0] = (uint16_t)port;
    f->nports = 1;
    if (*rest && strcmp(rest, "/"))
        snprintf(f->path, sizeof f->path, "%s%s", rest, rest[strlen(rest) - 1] == '/' ? "" : "/");
    return 0;
}

/* --tokens FILE: one "ID TOKEN" per line ('#' comments, blank lines
 * skipped). Keeps lines [first, first + count) (count 0: all). */
static void load_tokens(fleet_t *f, const char *path)
{
    FILE *in = fopen(path, "r");
    if (!in)
        die("cannot open --tokens %s", path);
    size_t cap = 1024, n = 0, line_no = 0;
    char **ids = malloc(cap * sizeof *ids), **toks = malloc(cap * sizeof *toks);
    char line[1024];
    while (ids && toks && fgets(line, sizeof line, in)) {
        char id[EMS_DEVICE_ID_MAX + 2], tok[512];
        if (line[0] == '#' || sscanf(line, "%65s %511s", id, tok) != 2)
            continue;
        if (line_no++ < f->first)
            continue;
        if (f->count && n == f->count)
            break;
        if (strlen(id) > EMS_DEVICE_ID_MAX)
            die("--tokens: device id too long: %s", id);
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, cap * sizeof *ids);
            toks = realloc(toks, cap * sizeof *toks);
            if (!ids || !toks)
                break;
        }
        ids[n] = strdup(id);
        toks[n] = strdup(tok);
        if (!ids[n] || !toks[n])
            die("out of memory%s", "");
        n++;
    }
    fclose(in);
    if (!ids || !toks)
        die("out of memory%s", "");
    if (!n)
        die("--tokens %s: no \"ID TOKEN\" lines (after --first)", path);
    f->tok_ids = ids;
    f->tok_tokens = toks;
    f->count = (uint32_t)n;
}

/* Raises the soft fd limit to the hard one; dies when the devices would
 * not fit (one fd each, plus a margin for the loop, stdio and the TLS
 * configuration). */
static void check_fd_limit(uint32_t count)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((uint64_t)count + 64 > (uint64_t)rl.rlim_cur) {
        fprintf(stderr,
                "bench_fleet: %u devices need %u file descriptors, the limit is %llu (ulimit -n);"
                " run several processes (--first/--count) or raise the limit\n",
                count, count + 64, (unsigned long long)rl.rlim_cur);
        exit(2);
    }
}

/* The lean engine resolves the server once, at start. */
static void lean_setup(fleet_t *f)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(f->host, NULL, &hints, &ai);
    if (rc != 0 || !ai)
        die("cannot resolve --host %s", f->host);
    for (int i = 0; i < f->nports; i++) {
        lean_ws_ctx_t *x = &f->lx[i];
        memset(x, 0, sizeof *x);
        x->loop = f->loop;
        memcpy(&x->peer, ai->ai_addr, ai->ai_addrlen);
        if (x->peer.ss_family == AF_INET)
            ((struct sockaddr_in *)&x->peer)->sin_port = htons(f->ports[i]);
        else
            ((struct sockaddr_in6 *)&x->peer)->sin6_port = htons(f->ports[i]);
        if (f->has_bind && f->bind.ss_family == x->peer.ss_family) {
            x->src = f->bind;
            x->has_src = true;
        }
        bool v6 = strchr(f->host, ':') != NULL;
        snprintf(x->host_header, sizeof x->host_header, "%s%s%s:%u", v6 ? "[" : "", f->host,
                 v6 ? "]" : "", (unsigned)f->ports[i]);
        x->open_timeout_ms = 30000;
        x->cbs = (lean_ws_callbacks_t){lw_on_open, lw_on_message, lw_on_close};
        if (lean_ws_ctx_init(x) < 0)
            die("cannot start the lean engine%s", "");
    }
    freeaddrinfo(ai);
}

static int run_devices(int argc, char **argv)
{
    static fleet_t f;
    the_fleet = &f;
    const char *ports = "8443", *ca = NULL, *url = NULL, *tokens = NULL, *engine = NULL;
    snprintf(f.host, sizeof f.host, "127.0.0.1");
    snprintf(f.path, sizeof f.path, "/ws/device/");
    snprintf(f.prefix, sizeof f.prefix, "bench");
    snprintf(f.seed, sizeof f.seed, "0");
    f.count = 1000;
    f.rate = 500;
    f.max_inflight = 200;
    f.warmup_s = 5, f.window_s = 60, f.drain_s = 30;
    f.interval_us = 1000000;
    f.tick_ms = 1;
    bool count_given = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--autostart")) {
            f.autostart = true;
            continue;
        }
        if (!v)
            die("missing value after %s", a);
        i++;
        if (!strcmp(a, "--host"))
            snprintf(f.host, sizeof f.host, "%s", v);
        else if (!strcmp(a, "--ports") || !strcmp(a, "--port"))
            ports = v;
        else if (!strcmp(a, "--url"))
            url = v;
        else if (!strcmp(a, "--path"))
            snprintf(f.path, sizeof f.path, "%s", v);
        else if (!strcmp(a, "--src"))
            snprintf(f.src, sizeof f.src, "%s", v);
        else if (!strcmp(a, "--prefix"))
            snprintf(f.prefix, sizeof f.prefix, "%s", v);
        else if (!strcmp(a, "--seed"))
            snprintf(f.seed, sizeof f.seed, "%s", v);
        else if (!strcmp(a, "--tokens"))
            tokens = v;
        else if (!strcmp(a, "--first"))
            f.first = (uint32_t)num_arg(v, a);
        else if (!strcmp(a, "--count"))
            f.count = (uint32_t)num_arg(v, a), count_given = true;
        else if (!strcmp(a, "--rate"))
            f.rate = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--max-inflight"))
            f.max_inflight = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--interval-ms"))
            f.interval_us = (uint64_t)num_arg(v, a) * 1000;
        else if (!strcmp(a, "--tick-ms"))
            f.tick_ms = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--warmup"))
            f.warmup_s = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--window"))
            f.window_s = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--drain"))
            f.drain_s = (unsigned)num_arg(v, a);
        else if (!strcmp(a, "--tls-ca"))
            ca = v;
        else if (!strcmp(a, "--tls-name"))
            snprintf(f.tls_name, sizeof f.tls_name, "%s", v);
        else if (!strcmp(a, "--engine"))
            engine = v;
        else if (!strcmp(a, "--out"))
            f.out_path = v;
        else
            die("unknown option %s (bench_fleet --help)", a);
    }
    bool want_tls = ca != NULL;
    if (url) {
        bool utls;
        if (parse_url(&f, url, &utls) < 0)
            die("bad --url %s (ws://HOST[:PORT][/PATH] or wss://...)", url);
        want_tls = utls;
        if (utls && !ca)
            ca = "/etc/ssl/certs/ca-certificates.crt";
        if (!utls && ca)
            die("--tls-ca with a ws:// --url%s", "");
    } else {
        for (const char *p = ports; *p && f.nports < 16;) {
            char *q;
            unsigned long v = strtoul(p, &q, 10);
            if (q == p || v == 0 || v > 65535)
                die("bad --ports %s", ports);
            f.ports[f.nports++] = (uint16_t)v;
            p = *q == ',' ? q + 1 : q;
        }
    }
    if (!f.tls_name[0])
        snprintf(f.tls_name, sizeof f.tls_name, "%s", f.host);
    if (tokens) {
        if (!count_given)
            f.count = 0;
        load_tokens(&f, tokens);
        f.first = 0; /* indexes are lines of the file from here on */
    }
    if (f.count == 0 || f.rate == 0 || f.max_inflight == 0 || f.interval_us == 0 ||
        f.tick_ms == 0)
        die("need devices, --rate, --max-inflight, --interval-ms and --tick-ms above 0%s", "");
    if (f.path[0] != '/')
        die("--path must start with /%s", "");
    if (engine && strcmp(engine, "lean") && strcmp(engine, "client"))
        die("--engine lean or client, not %s", engine);
    f.lean = !want_tls && !(engine && !strcmp(engine, "client"));
    if (want_tls && engine && !strcmp(engine, "lean"))
        die("the lean engine has no TLS; wss:// uses --engine client%s", "");
    check_fd_limit(f.count);
    if (f.src[0]) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&f.bind;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&f.bind;
        if (uv_ip4_addr(f.src, 0, s4) != 0 && uv_ip6_addr(f.src, 0, s6) != 0)
            die("bad --src %s (an IP address)", f.src);
        f.has_bind = true;
    } else {
        snprintf(f.src, sizeof f.src, "any");
    }
    uv_loop_t *loop = uv_default_loop();
    f.loop = loop;
    if (want_tls && ems_tls_client_config_new(ca, &f.tls) < 0)
        die("cannot load CA %s", ca);
    if (f.lean)
        lean_setup(&f);
    tmpl_build(&f.tmpl);
    f.devs = calloc(f.count, sizeof *f.devs);
    f.pend_cap = f.count;
    f.pend = calloc(f.pend_cap, sizeof *f.pend);
    if (!f.devs || !f.pend)
        die("out of memory%s", "");
    /* Phases spread uniformly over the interval; each process is offset by
     * a fraction of a slot so that processes interleave. */
    uint64_t slot = f.interval_us / f.count;
    uint64_t off = (f.first * 7919u) % (slot ? slot : 1);
    for (uint32_t i = 0; i < f.count; i++) {
        fdev_t *d = &f.devs[i];
        d->index = tokens ? i : f.first + i;
        d->phase_us = (uint32_t)((uint64_t)i * f.interval_us / f.count + off);
        d->seq = 1;
        pend_push(&f, i, 0);
    }
    f.t_connect_start = mono_us();
    uv_timer_init(loop, &f.ramp_timer);
    uv_timer_init(loop, &f.send_timer);
    uv_timer_init(loop, &f.report_timer);
    f.ramp_timer.data = f.send_timer.data = f.report_timer.data = &f;
    uv_timer_start(&f.ramp_timer, ramp_cb, 0, 10);
    uv_timer_start(&f.send_timer, send_cb, f.tick_ms, f.tick_ms);
    uv_timer_start(&f.report_timer, report_cb, 10000, 10000);
    uv_signal_init(loop, &f.sig_usr1);
    uv_signal_init(loop, &f.sig_term);
    uv_signal_init(loop, &f.sig_int);
    f.sig_usr1.data = f.sig_term.data = f.sig_int.data = &f;
    uv_signal_start(&f.sig_usr1, signal_cb, SIGUSR1);
    uv_signal_start(&f.sig_term, signal_cb, SIGTERM);
    uv_signal_start(&f.sig_int, signal_cb, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    ems_tls_config_unref(f.tls);
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    free(f.devs);
    free(f.pend);
    if (f.tok_ids) {
        for (uint32_t i = 0; i < f.count; i++)
            free(f.tok_ids[i]), free(f.tok_tokens[i]);
        free(f.tok_ids);
        free(f.tok_tokens);
    }
    return 0;
}

static void usage(FILE *o)
{
    fprintf(o,
"usage: bench_fleet devices [options]     simulated devices sending telemetry\n"
"       bench_fleet dashboard [options]   one dashboard measuring fan-out latency\n"
"       bench_fleet token PREFIX SEED INDEX   a device's token for --seed\n"
"       bench_fleet --help\n"
"\n"
"A load generator for ems-gateway: N devices on one libuv loop, each a real\n"
"WebSocket client (HTTP Upgrade with a Bearer token, masked frames) sending one\n"
"valid telemetry packet per --interval-ms with an increasing seq, and measuring\n"
"the latency from each send to the ack that covers it. scripts/bench-fleet.sh\n"
"runs it against a whole system it starts on loopback; it can also load-test\n"
"a real deployment.\n"
"\n"
"devices: where to connect\n"
"  --url ws[s]://HOST[:PORT][/PATH]  the gateway (PATH default /ws/device/; the\n"
"                          device id is appended); wss:// uses TLS\n"
"  --host H --ports P[,P2..]  the same as ws://H:P (127.0.0.1:8443); several\n"
"                          ports: device i uses port i mod the count\n"
"  --path /ws/device/      the device path prefix\n"
"  --src ADDR              local address to bind (e.g. one 127.0.0.x per process:\n"
"                          connections per address and destination are bounded\n"
"                          by the ephemeral port range, ~28,000)\n"
"  --tls-ca CA.crt         TLS: trust this CA (wss:// default: the system's)\n"
"  --tls-name NAME         TLS: the certificate's name (default: the host)\n"
"devices: who\n"
"  --tokens FILE           lines \"DEVICE_ID TOKEN\" (provisioned devices); with\n"
"                          --first/--count, a slice of the file's lines\n"
"  --prefix bench --seed S --first I --count N\n"
"                          without --tokens: ids PREFIX%%06u for I..I+N-1, token =\n"
"                          hex SHA-256 of \"ems-bench:SEED:ID\" (the token hash the\n"
"                          gateway stores is the SHA-256 of that hex string;\n"
"                          scripts/bench-fleet.sh provisions them in one INSERT)\n"
"devices: how fast\n"
"  --rate R                new connections per second (500)\n"
"  --max-inflight N        connections opening at once (200)\n"
"  --interval-ms MS        one packet per device every MS (1000); phases spread\n"
"                          evenly over the interval\n"
"  --tick-ms MS            the send timer's period: packets due are sent in\n"
"                          batches every MS (1)\n"
"  --engine lean|client    lean (default for ws://): bench_fleet's own minimal\n"
"                          client (test/bench/lean_ws.c), one write per packet;\n"
"                          client: the project's WebSocket client (wslay), which\n"
"                          is also what TLS always uses\n"
"devices: timeline (after SIGUSR1, or at once with --autostart)\n"
"  --autostart             start sending when every device is connected\n"
"  --warmup S              sending, not measured (5)\n"
"  --window S              sending, measured (60)\n"
"  --drain S               after sending: wait at most S for the last acks (30)\n"
"  --out FILE              results as one JSON object (default stdout)\n"
"  Prints \"READY n connected ...\" when all are connected, progress every 10 s\n"
"  on stderr; SIGTERM/SIGINT end the run early (results still written).\n"
"  Each process holds one fd per device: above `ulimit -n` run several\n"
"  processes with --first/--count and different --src.\n"
"\n"
"dashboard: bench_fleet dashboard --port P --cookie 'ems_session=...' [--host H]\n"
"           [--sub '*' | fleet | PREFIX:FIRST:COUNT:STEP] [--warmup S] [--window S]\n"
"           [--tail S] [--tls-ca CA.crt] [--out FILE]\n"
"  Measures send -> receipt of each packet (same machine clock) for packets sent\n"
"  in the window; starts its timeline on SIGUSR1 like the devices.\n"
"\n"
"Example against a deployment (tokens provisioned beforehand):\n"
"  bench_fleet devices --url wss://ems.example.com --tokens tokens.txt --rate 200 \\\n"
"      --autostart --warmup 10 --window 300\n"
"The whole loopback benchmark (PostgreSQL, ems-dbwriter, ems-gateway,\n"
"provisioning, these processes, results) is scripts/bench-fleet.sh; a ladder of\n"
"sizes is scripts/bench-ladder.sh.\n");
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    ems_log_init("bench_fleet", EMS_LOG_WARN);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "devices"))
        return run_devices(argc, argv);
    if (!strcmp(argv[1], "dashboard"))
        return run_dashboard(argc, argv);
    if (!strcmp(argv[1], "token") && argc == 5) {
        char id[64], tok[65];
        snprintf(id, sizeof id, "%s%06u", argv[2], (unsigned)num_arg(argv[4], "INDEX"));
        bench_token(argv[3], id, tok);
        printf("%s %s\n", id, tok);
        return 0;
    }
    usage(stderr);
    return 2;
}
