/* test_link.c: the gateway <-> DB writer link: framing in odd chunk sizes,
 * payload codecs, refusal of malformed input, and the libuv connection over
 * a real Unix socket (HELLO, version check, frames both ways, backpressure,
 * a peer that sends garbage). */
#include "ems_test.h"

#include "error.h"
#include "link.h"
#include "log.h"

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

/* ------------------------------------------------------------------ helpers */

static ems_telemetry_t sample(int i)
{
    ems_telemetry_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.device_id, sizeof t.device_id, "dev_%03d.x-y", i);
    t.timestamp_ms = 1769860800000LL + i * 1000;
    t.state = (ems_state_t)(i % EMS_STATE_COUNT);
    t.mode = (ems_mode_t)(i % EMS_MODE_COUNT);
    t.error_flags = (uint32_t)i & EMS_FAULT_ALL;
    t.has_wifi_strength = i % 2;
    t.wifi_strength = t.has_wifi_strength ? -45 - i % 80 : 0;
    t.has_target_mode = i % 3 != 0;
    t.target_mode = t.has_target_mode ? (ems_target_mode_t)(i % EMS_TARGET_COUNT) : EMS_TARGET_AUTO;
    t.has_target_power = i % 4 == 1;
    t.target_power = t.has_target_power ? 500.5 : 0;
    t.battery_voltage = 53.2 + i * 0.1;
    t.battery_current = -10.5 + i;
    t.battery_power = 558.6 - i;
    t.battery_soc = 85.1;
    t.has_battery_temperature = i % 5 != 0;
    t.battery_temperature = t.has_battery_temperature ? 27.5 : 0;
    t.grid_voltage = 230.1;
    t.grid_power = -200.25;
    t.grid_frequency = 50.01;
    t.has_seq = i % 7 != 3;
    t.seq = t.has_seq ? 1000000000000ULL + (uint64_t)i : 0;
    t.has_clock_synced = i % 2 == 0;
    t.clock_synced = t.has_clock_synced && i % 4 == 0;
    t.has_backfill = i % 3 == 0;
    t.backfill = t.has_backfill && i % 6 == 0;
    t.has_backlog = i % 2 == 1;
    t.backlog = t.has_backlog ? (uint64_t)i * 11 : 0;
    return t;
}

/* Builds a stream of every kind of frame, returns it in *out. */
static void build_stream(ems_buf_t *out, int records)
{
    EMS_CHECK_INT(ems_link_put_hello(out, "{\"name\":\"t\"}", 12), ==, 0);
    size_t mark;
    EMS_CHECK_INT(ems_link_telemetry_begin(out, 77, &mark), ==, 0);
    for (int i = 0; i < records; i++) {
        ems_telemetry_t t = sample(i);
        EMS_CHECK_INT(ems_link_telemetry_add(out, mark, &t, 1769860900000LL + i), ==, 0);
    }
    EMS_CHECK_INT(ems_link_telemetry_end(out, mark), ==, 0);
    EMS_CHECK_INT(ems_link_put_id_json(out, EMS_LINK_EVENT, 78, "{\"type\":\"x\"}", 12), ==, 0);
    EMS_CHECK_INT(ems_link_put_ack(out, 78), ==, 0);
    EMS_CHECK_INT(ems_link_put_reject(out, 77, 3, "bad", 3), ==, 0);
    EMS_CHECK_INT(ems_link_put_id_json(out, EMS_LINK_QUERY, 5, "{}", 2), ==, 0);
    EMS_CHECK_INT(ems_link_put_result(out, 5, EMS_EINVAL, "{\"error\":\"e\"}", 13), ==, 0);
    EMS_CHECK_INT(ems_link_put_error(out, "bye", 3), ==, 0);
}

/* Checks the frames of build_stream, fed to a decoder `chunk` bytes at a time. */
static void check_stream_chunked(size_t chunk, int records)
{
    ems_buf_t s = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    build_stream(&s, records);
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 0);
    int seen = 0;
    for (size_t off = 0; off < ems_buf_len(&s);) {
        size_t n = ems_buf_len(&s) - off < chunk ? ems_buf_len(&s) - off : chunk;
        EMS_CHECK_INT(ems_link_decoder_feed(&d, ems_buf_data(&s) + off, n), ==, 0);
        off += n;
        ems_link_frame_t f;
        int rc;
        while ((rc = ems_link_decoder_next(&d, &f)) == 1) {
            uint64_t id;
            const char *j;
            size_t jl;
            switch (seen) {
            case 0: {
                uint32_t v;
                EMS_CHECK_INT(f.kind, ==, EMS_LINK_HELLO);
                EMS_CHECK_INT(ems_link_parse_hello(&f, &v, &j, &jl), ==, 0);
                EMS_CHECK_INT(v, ==, EMS_LINK_VERSION);
                EMS_CHECK(jl == 12 && memcmp(j, "{\"name\":\"t\"}", 12) == 0);
                break;
            }
            case 1: {
                ems_link_telemetry_reader_t r;
                EMS_CHECK_INT(f.kind, ==, EMS_LINK_TELEMETRY);
                EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, 0);
                EMS_CHECK_INT(r.link_seq, ==, 77);
                EMS_CHECK_INT(r.count, ==, records);
                ems_telemetry_t t;
                int64_t recv;
                int i = 0;
                while ((rc = ems_link_telemetry_next(&r, &t, &recv)) == 1) {
                    ems_telemetry_t want = sample(i);
                    EMS_CHECK(ems_telemetry_equal(&t, &want));
                    EMS_CHECK_INT(recv, ==, 1769860900000LL + i);
                    i++;
                }
                EMS_CHECK_INT(rc, ==, 0);
                EMS_CHECK_INT(i, ==, records);
                break;
            }
            case 2:
                EMS_CHECK_INT(ems_link_parse_id_json(&f, &id, &j, &jl), ==, 0);
                EMS_CHECK_INT(f.kind, ==, EMS_LINK_EVENT);
                EMS_CHECK_INT(id, ==, 78);
                EMS_CHECK(jl == 12 && memcmp(j, "{\"type\":\"x\"}", 12) == 0);
                break;
            case 3:
                EMS_CHECK_INT(ems_link_parse_ack(&f, &id), ==, 0);
                EMS_CHECK_INT(id, ==, 78);
                break;
            case 4: {
                uint32_t idx;
                EMS_CHECK_INT(ems_link_parse_reject(&f, &id, &idx, &j, &jl), ==, 0);
                EMS_CHECK(id == 77 && idx == 3 && jl == 3 && memcmp(j, "bad", 3) == 0);
                break;
            }
            case 5:
                EMS_CHECK_INT(f.kind, ==, EMS_LINK_QUERY);
                EMS_CHECK_INT(ems_link_parse_id_json(&f, &id, &j, &jl), ==, 0);
                EMS_CHECK(id == 5 && jl == 2);
                break;
            case 6: {
                int32_t st;
                EMS_CHECK_INT(ems_link_parse_result(&f, &id, &st, &j, &jl), ==, 0);
                EMS_CHECK(id == 5 && st == EMS_EINVAL && jl == 13);
                break;
            }
            case 7:
                EMS_CHECK_INT(f.kind, ==, EMS_LINK_ERROR);
                EMS_CHECK(f.len == 3 && memcmp(f.payload, "bye", 3) == 0);
                break;
            default:
                EMS_FAIL("unexpected frame %d", seen);
            }
            seen++;
        }
        EMS_CHECK_INT(rc, ==, 0);
    }
    EMS_CHECK_INT(seen, ==, 8);
    EMS_CHECK_INT(ems_link_decoder_pending(&d), ==, 0);
    ems_link_decoder_free(&d);
    ems_buf_free(&s);
}

/* ------------------------------------------------------------------ framing */

static void test_stream_one_byte_chunks(void)
{
    check_stream_chunked(1, 3);
}

static void test_stream_odd_chunks(void)
{
    const size_t sizes[] = {2, 3, 5, 7, 13, 64, 127, 1000, 4096, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        check_stream_chunked(sizes[i], 50);
}

static void test_stream_max_records(void)
{
    check_stream_chunked(65536, EMS_LINK_RECORDS_MAX);
    /* One more record than the limit is refused and leaves the frame intact. */
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    size_t mark;
    EMS_CHECK_INT(ems_link_telemetry_begin(&b, 1, &mark), ==, 0);
    ems_telemetry_t t = sample(1);
    for (unsigned i = 0; i < EMS_LINK_RECORDS_MAX; i++)
        EMS_CHECK_INT(ems_link_telemetry_add(&b, mark, &t, 0), ==, 0);
    size_t len = ems_buf_len(&b);
    EMS_CHECK_INT(ems_link_telemetry_add(&b, mark, &t, 0), ==, EMS_ENOSPC);
    EMS_CHECK_INT(ems_buf_len(&b), ==, len);
    EMS_CHECK_INT(ems_link_telemetry_end(&b, mark), ==, 0);
    EMS_CHECK(ems_buf_len(&b) - mark <= EMS_LINK_FRAME_MAX + 4);
    ems_buf_free(&b);
}

static void test_zero_copy_reserve(void)
{
    ems_buf_t s = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    build_stream(&s, 10);
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 0);
    size_t off = 0;
    int frames = 0;
    while (off < ems_buf_len(&s)) {
        uint8_t *p;
        size_t cap;
        EMS_CHECK_INT(ems_link_decoder_reserve(&d, 17, &p, &cap), ==, 0);
        EMS_CHECK(cap >= 17);
        size_t n = ems_buf_len(&s) - off < 17 ? ems_buf_len(&s) - off : 17;
        memcpy(p, ems_buf_data(&s) + off, n);
        ems_link_decoder_commit(&d, n);
        off += n;
        ems_link_frame_t f;
        while (ems_link_decoder_next(&d, &f) == 1)
            frames++;
    }
    EMS_CHECK_INT(frames, ==, 8);
    ems_link_decoder_free(&d);
    ems_buf_free(&s);
}

static void test_oversized_frame_refused(void)
{
    /* Header announcing 1 MiB + 1: refused as soon as the length is read,
     * before any payload arrives, and the error is sticky. */
    uint8_t h[5] = {0x00, 0x10, 0x00, 0x01, EMS_LINK_EVENT};
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 0);
    ems_link_frame_t f;
    EMS_CHECK_INT(ems_link_decoder_feed(&d, h, 4), ==, 0);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, EMS_EMSGSIZE);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, EMS_EMSGSIZE);
    EMS_CHECK_INT(ems_link_decoder_feed(&d, h, 1), ==, EMS_EMSGSIZE);
    ems_link_decoder_free(&d);

    /* Exactly the maximum is accepted. */
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    static char big[EMS_LINK_FRAME_MAX];
    memset(big, 'x', sizeof big);
    EMS_CHECK_INT(ems_link_put_id_json(&b, EMS_LINK_QUERY, 1, big, EMS_LINK_FRAME_MAX - 9), ==, 0);
    EMS_CHECK_INT(ems_link_put_id_json(&b, EMS_LINK_QUERY, 1, big, EMS_LINK_FRAME_MAX - 8),
                  ==, EMS_EMSGSIZE);
    ems_link_decoder_init(&d, 0);
    EMS_CHECK_INT(ems_link_decoder_feed(&d, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, 1);
    EMS_CHECK_INT(f.len, ==, EMS_LINK_FRAME_MAX - 1);
    ems_link_decoder_free(&d);

    /* A smaller configured limit. */
    ems_link_decoder_init(&d, 100);
    EMS_CHECK_INT(ems_link_decoder_feed(&d, ems_buf_data(&b), 8), ==, 0);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, EMS_EMSGSIZE);
    ems_link_decoder_free(&d);
    ems_buf_free(&b);
}

static void test_malformed_frames_refused(void)
{
    ems_link_decoder_t d;
    ems_link_frame_t f;
    /* Zero length. */
    uint8_t z[5] = {0, 0, 0, 0, 1};
    ems_link_decoder_init(&d, 0);
    ems_link_decoder_feed(&d, z, sizeof z);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, EMS_EPROTO);
    ems_link_decoder_free(&d);
    /* Unknown kind, refused from the header alone. */
    uint8_t k[5] = {0, 0, 0, 9, 99};
    ems_link_decoder_init(&d, 0);
    ems_link_decoder_feed(&d, k, sizeof k);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, EMS_EPROTO);
    ems_link_decoder_free(&d);
    /* Feeding without taking frames is bounded. */
    ems_link_decoder_init(&d, 0);
    static uint8_t junk[EMS_LINK_FRAME_MAX];
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = ems_link_decoder_feed(&d, junk, sizeof junk);
    EMS_CHECK_INT(rc, ==, EMS_ENOSPC);
    ems_link_decoder_free(&d);
}

static void test_payload_parsers_check_lengths(void)
{
    uint8_t p[16] = {0};
    ems_link_frame_t f = {EMS_LINK_ACK, p, 7};
    uint64_t v;
    EMS_CHECK_INT(ems_link_parse_ack(&f, &v), ==, EMS_EPROTO);
    f.len = 9;
    EMS_CHECK_INT(ems_link_parse_ack(&f, &v), ==, EMS_EPROTO);
    f.kind = EMS_LINK_HELLO;
    f.len = 8;
    uint32_t ver;
    const char *s;
    size_t n;
    EMS_CHECK_INT(ems_link_parse_hello(&f, &ver, &s, &n), ==, EMS_EPROTO); /* bad magic */
    f.kind = EMS_LINK_RESULT;
    f.len = 11;
    int32_t st;
    EMS_CHECK_INT(ems_link_parse_result(&f, &v, &st, &s, &n), ==, EMS_EPROTO);
    f.kind = EMS_LINK_ACK;
    f.len = 8;
    EMS_CHECK_INT(ems_link_parse_id_json(&f, &v, &s, &n), ==, EMS_EPROTO); /* wrong kind */
}

/* Corrupts one byte at a time of a TELEMETRY frame's records: the reader
 * either reads it (a value changed) or refuses it; it never reads past the
 * frame (ASan would say so). */
static void test_telemetry_reader_refuses_bad_records(void)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    size_t mark;
    EMS_CHECK_INT(ems_link_telemetry_begin(&b, 9, &mark), ==, 0);
    for (int i = 0; i < 3; i++) {
        ems_telemetry_t t = sample(i);
        EMS_CHECK_INT(ems_link_telemetry_add(&b, mark, &t, 0), ==, 0);
    }
    EMS_CHECK_INT(ems_link_telemetry_end(&b, mark), ==, 0);
    const uint8_t *payload = (const uint8_t *)ems_buf_data(&b) + EMS_LINK_HEADER;
    size_t plen = ems_buf_len(&b) - EMS_LINK_HEADER;

    /* Truncated by one byte: the last record is incomplete. */
    ems_link_frame_t f = {EMS_LINK_TELEMETRY, payload, plen - 1};
    ems_link_telemetry_reader_t r;
    ems_telemetry_t t;
    EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, 0);
    int rc;
    while ((rc = ems_link_telemetry_next(&r, &t, NULL)) == 1) {
    }
    EMS_CHECK_INT(rc, ==, EMS_EPROTO);
    /* Trailing garbage after the announced records. */
    uint8_t *copy = malloc(plen + 1);
    memcpy(copy, payload, plen);
    copy[plen] = 0;
    f.payload = copy;
    f.len = plen + 1;
    EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, 0);
    while ((rc = ems_link_telemetry_next(&r, &t, NULL)) == 1) {
    }
    EMS_CHECK_INT(rc, ==, EMS_EPROTO);
    /* Bad device id character, bad state, bad version, zero count. */
    f.len = plen;
    copy[12 + 1] = '/';
    EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_next(&r, &t, NULL), ==, EMS_EPROTO);
    memcpy(copy, payload, plen);
    size_t idlen = copy[12];
    copy[12 + 1 + idlen + 32] = EMS_STATE_COUNT;
    EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_next(&r, &t, NULL), ==, EMS_EPROTO);
    memcpy(copy, payload, plen);
    copy[8] = 3; /* 1 and 2 are known (2 adds energy, test_energy_records) */
    EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, EMS_EPROTO);
    copy[8] = 0;
    EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, EMS_EPROTO);
    copy[8] = 1;
    copy[10] = copy[11] = 0;
    EMS_CHECK_INT(ems_link_telemetry_open(&r, &f), ==, EMS_EPROTO);
    /* Every single-byte corruption: never a crash or an over-read. */
    for (size_t i = 0; i < plen; i++) {
        memcpy(copy, payload, plen);
        copy[i] ^= 0xff;
        if (ems_link_telemetry_open(&r, &f) < 0)
            continue;
        while ((rc = ems_link_telemetry_next(&r, &t, NULL)) == 1) {
        }
    }
    /* Encoding refuses invalid structs. */
    ems_telemetry_t bad = sample(0);
    strcpy(bad.device_id, "no spaces");
    ems_buf_t e = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    EMS_CHECK_INT(ems_link_telemetry_begin(&e, 1, &mark), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_add(&e, mark, &bad, 0), ==, EMS_EINVAL);
    bad = sample(0);
    bad.state = EMS_STATE_COUNT;
    EMS_CHECK_INT(ems_link_telemetry_add(&e, mark, &bad, 0), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_link_telemetry_end(&e, mark), ==, EMS_EINVAL); /* empty */
    ems_buf_free(&e);
    free(copy);
    ems_buf_free(&b);
}

/* Reads back every record of the one TELEMETRY frame in b (after `mark`). */
static int read_back(const ems_buf_t *b, size_t mark, ems_telemetry_t *out, int max,
                     unsigned *version)
{
    ems_link_frame_t f = {EMS_LINK_TELEMETRY,
                          (const uint8_t *)ems_buf_data(b) + mark + EMS_LINK_HEADER,
                          ems_buf_len(b) - mark - EMS_LINK_HEADER};
    ems_link_telemetry_reader_t r;
    if (ems_link_telemetry_open(&r, &f) < 0)
        return -1;
    *version = r.version;
    int n = 0, rc;
    while (n < max && (rc = ems_link_telemetry_next(&r, &out[n], NULL)) == 1)
        n++;
    return ems_link_telemetry_next(&r, &out[0 < n ? n - 1 : 0], NULL) == 0 ? n : -1;
}

/* Energy counters (record version 2): a frame without them stays version 1
 * (readable by a DB writer that knows only version 1), the first record with
 * them raises the frame to 2, records with and without energy mix, and
 * HAS_ENERGY in a version 1 frame or a truncated energy block is refused. */
static void test_energy_records(void)
{
    ems_telemetry_t in[3], out[4];
    for (int i = 0; i < 3; i++)
        in[i] = sample(i + 1);
    in[1].has_energy = true;
    in[1].energy_battery_charged_wh = 1234.567;
    in[1].energy_battery_discharged_wh = 1100.25;
    in[1].energy_grid_import_wh = 5230.001;
    in[1].energy_grid_export_wh = 0;
    in[1].energy_since_ms = 1767225600000LL;
    unsigned version = 0;

    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    size_t mark;
    EMS_CHECK_INT(ems_link_telemetry_begin(&b, 9, &mark), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_add(&b, mark, &in[0], 0), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_end(&b, mark), ==, 0);
    EMS_CHECK_INT(read_back(&b, mark, out, 4, &version), ==, 1);
    EMS_CHECK_INT(version, ==, 1);
    EMS_CHECK_INT(ems_buf_len(&b) - mark, ==,
                  EMS_LINK_HEADER + 12 + EMS_LINK_RECORD_FIXED + strlen(in[0].device_id));
    EMS_CHECK(!out[0].has_energy && ems_telemetry_equal(&in[0], &out[0]));

    ems_buf_clear(&b);
    EMS_CHECK_INT(ems_link_telemetry_begin(&b, 10, &mark), ==, 0);
    for (int i = 0; i < 3; i++)
        EMS_CHECK_INT(ems_link_telemetry_add(&b, mark, &in[i], 0), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_end(&b, mark), ==, 0);
    EMS_CHECK_INT(read_back(&b, mark, out, 4, &version), ==, 3);
    EMS_CHECK_INT(version, ==, 2);
    for (int i = 0; i < 3; i++)
        EMS_CHECK(ems_telemetry_equal(&in[i], &out[i]));
    EMS_CHECK(out[1].has_energy && out[1].energy_grid_import_wh == 5230.001 &&
              out[1].energy_since_ms == 1767225600000LL);

    /* The same bytes announced as version 1: HAS_ENERGY is malformed there. */
    ems_buf_at(&b, mark + EMS_LINK_HEADER + 8)[0] = 1;
    EMS_CHECK_INT(read_back(&b, mark, out, 4, &version), ==, -1);
    /* A version 3 frame is refused by open. */
    ems_buf_at(&b, mark + EMS_LINK_HEADER + 8)[0] = 3;
    EMS_CHECK_INT(read_back(&b, mark, out, 4, &version), ==, -1);

    /* Truncated inside the energy block of the only record. */
    ems_buf_clear(&b);
    EMS_CHECK_INT(ems_link_telemetry_begin(&b, 11, &mark), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_add(&b, mark, &in[1], 0), ==, 0);
    EMS_CHECK_INT(ems_link_telemetry_end(&b, mark), ==, 0);
    EMS_CHECK_INT(read_back(&b, mark, out, 4, &version), ==, 1);
    ems_buf_truncate(&b, ems_buf_len(&b) - 8);
    EMS_CHECK_INT(read_back(&b, mark, out, 4, &version), ==, -1);
    ems_buf_free(&b);
}

/* ------------------------------------------------------------------ connection */

typedef struct {
    uv_loop_t loop;
    uv_pipe_t server;
    char path[108];
    ems_link_conn_t *srv; /* accepted side */
    ems_link_conn_t *cli; /* connecting side */
    int srv_ready, cli_ready;
    int srv_frames, cli_frames;
    int srv_closed, cli_closed;
    int srv_status, cli_status;
    uint64_t last_seq;
    bool pause_after_first;
    int closes_seen;
    char cli_info[64];
} net_t;

static void srv_ready(ems_link_conn_t *c, void *ud, const char *info, size_t n)
{
    (void)c, (void)info, (void)n;
    ((net_t *)ud)->srv_ready++;
}
static void cli_ready(ems_link_conn_t *c, void *ud, const char *info, size_t n)
{
    (void)c;
    net_t *t = ud;
    t->cli_ready++;
    snprintf(t->cli_info, sizeof t->cli_info, "%.*s", (int)n, info);
}

/* The server answers each EVENT with an ACK of its link_seq and closes when
 * it gets a QUERY. */
static void srv_frame(ems_link_conn_t *c, void *ud, const ems_link_frame_t *f)
{
    net_t *t = ud;
    t->srv_frames++;
    uint64_t id;
    const char *j;
    size_t n;
    if (f->kind == EMS_LINK_EVENT) {
        EMS_CHECK_INT(ems_link_parse_id_json(f, &id, &j, &n), ==, 0);
        EMS_CHECK_INT(id, ==, t->last_seq + 1);
        t->last_seq = id;
        ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
        ems_link_put_ack(&b, id);
        EMS_CHECK_INT(ems_link_conn_send_raw(c, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
        ems_buf_free(&b);
        if (t->pause_after_first && id == 1)
            ems_link_conn_pause(c);
    } else if (f->kind == EMS_LINK_QUERY) {
        /* Answer, then end gracefully: the ACKs and the RESULT still go out. */
        ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
        ems_link_put_result(&b, 1, 0, "{}", 2);
        EMS_CHECK_INT(ems_link_conn_send_raw(c, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
        ems_buf_free(&b);
        ems_link_conn_end(c, 0);
        EMS_CHECK_INT(ems_link_conn_send(c, EMS_LINK_ACK, "12345678", 8), ==, EMS_ECLOSED);
    }
}
static void cli_frame(ems_link_conn_t *c, void *ud, const ems_link_frame_t *f)
{
    net_t *t = ud;
    uint64_t s;
    if (f->kind == EMS_LINK_RESULT) {
        t->cli_frames += 1000;
        ems_link_conn_close(c, 0);
        /* Closing again and sending after close are harmless. */
        ems_link_conn_close(c, 0);
        EMS_CHECK_INT(ems_link_conn_send(c, EMS_LINK_ACK, "12345678", 8), ==, EMS_ECLOSED);
        return;
    }
    EMS_CHECK_INT(ems_link_parse_ack(f, &s), ==, 0);
    t->cli_frames++;
    EMS_CHECK_INT(s, ==, (uint64_t)t->cli_frames);
}
static void srv_close(ems_link_conn_t *c, void *ud, int st)
{
    (void)c;
    net_t *t = ud;
    t->srv_closed++;
    t->srv_status = st;
    t->srv = NULL;
    if (++t->closes_seen == 2)
        uv_close((uv_handle_t *)&t->server, NULL);
}
static void cli_close(ems_link_conn_t *c, void *ud, int st)
{
    (void)c;
    net_t *t = ud;
    t->cli_closed++;
    t->cli_status = st;
    t->cli = NULL;
    if (++t->closes_seen == 2)
        uv_close((uv_handle_t *)&t->server, NULL);
}

static const ems_link_conn_cb_t SRV_CB = {srv_ready, srv_frame, NULL, srv_close};
static const ems_link_conn_cb_t CLI_CB = {cli_ready, cli_frame, NULL, cli_close};

static void on_conn(uv_stream_t *server, int status)
{
    net_t *t = server->data;
    EMS_CHECK_INT(status, ==, 0);
    ems_link_conn_opts_t o = {.name = "test server", .hello_info = "{\"name\":\"srv\"}"};
    EMS_CHECK_INT(ems_link_conn_accept(server, &o, &SRV_CB, t, &t->srv), ==, 0);
}

static void net_setup(net_t *t)
{
    memset(t, 0, sizeof *t);
    EMS_CHECK_INT(uv_loop_init(&t->loop), ==, 0);
    snprintf(t->path, sizeof t->path, "/tmp/ems-test-link-%d.sock", (int)getpid());
    EMS_CHECK_INT(uv_pipe_init(&t->loop, &t->server, 0), ==, 0);
    t->server.data = t;
    EMS_CHECK_INT(ems_link_listen(&t->server, t->path, on_conn), ==, 0);
}

static void net_teardown(net_t *t)
{
    unlink(t->path);
    EMS_CHECK_INT(uv_loop_close(&t->loop), ==, 0);
}

static void test_conn_hello_frames_close(void)
{
    net_t t;
    net_setup(&t);
    ems_link_conn_opts_t o = {.name = "test client"};
    EMS_CHECK_INT(ems_link_conn_connect(&t.loop, t.path, &o, &CLI_CB, &t, &t.cli), ==, 0);
    /* Frames queued before the connect completes go out after HELLO. */
    char json[] = "{\"type\":\"session_open\"}";
    for (uint64_t i = 1; i <= 100; i++) {
        ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
        ems_link_put_id_json(&b, EMS_LINK_EVENT, i, json, strlen(json));
        EMS_CHECK_INT(ems_link_conn_send_raw(t.cli, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
        ems_buf_free(&b);
    }
    EMS_CHECK_INT(ems_link_conn_send(t.cli, EMS_LINK_QUERY, "12345678{}", 10), ==, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(t.srv_ready, ==, 1);
    EMS_CHECK_INT(t.cli_ready, ==, 1);
    EMS_CHECK_STR(t.cli_info, "{\"name\":\"srv\"}");
    EMS_CHECK_INT(t.srv_frames, ==, 101);
    EMS_CHECK_INT(t.cli_frames, ==, 1100);
    EMS_CHECK_INT(t.srv_closed, ==, 1);
    EMS_CHECK_INT(t.srv_status, ==, 0);
    EMS_CHECK_INT(t.cli_closed, ==, 1);
    EMS_CHECK_INT(t.cli_status, ==, 0);
    net_teardown(&t);
}

static void resume_timer_cb(uv_timer_t *tm)
{
    net_t *t = tm->data;
    EMS_CHECK(t->srv && ems_link_conn_paused(t->srv));
    /* While paused only the first event was delivered, although all were sent. */
    EMS_CHECK_INT(t->srv_frames, ==, 1);
    ems_link_conn_resume(t->srv);
    uv_close((uv_handle_t *)tm, NULL);
}

static void test_conn_pause_resume(void)
{
    net_t t;
    net_setup(&t);
    t.pause_after_first = true;
    ems_link_conn_opts_t o = {.name = "test client"};
    EMS_CHECK_INT(ems_link_conn_connect(&t.loop, t.path, &o, &CLI_CB, &t, &t.cli), ==, 0);
    for (uint64_t i = 1; i <= 50; i++) {
        ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
        ems_link_put_id_json(&b, EMS_LINK_EVENT, i, "{}", 2);
        EMS_CHECK_INT(ems_link_conn_send_raw(t.cli, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
        ems_buf_free(&b);
    }
    EMS_CHECK_INT(ems_link_conn_send(t.cli, EMS_LINK_QUERY, "12345678{}", 10), ==, 0);
    uv_timer_t tm;
    uv_timer_init(&t.loop, &tm);
    tm.data = &t;
    uv_timer_start(&tm, resume_timer_cb, 200, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(t.srv_frames, ==, 51);
    EMS_CHECK_INT(t.cli_frames, ==, 1050);
    net_teardown(&t);
}

static void test_conn_queue_bound(void)
{
    net_t t;
    net_setup(&t);
    ems_link_conn_opts_t o = {.name = "test client", .max_queued = 1000};
    EMS_CHECK_INT(ems_link_conn_connect(&t.loop, t.path, &o, &CLI_CB, &t, &t.cli), ==, 0);
    char big[600];
    memset(big, 'a', sizeof big);
    /* The queue holds only the HELLO: the first frame fits, the second
     * exceeds the bound. */
    EMS_CHECK_INT(ems_link_conn_send(t.cli, EMS_LINK_QUERY, big, sizeof big), ==, 0);
    EMS_CHECK_INT(ems_link_conn_send(t.cli, EMS_LINK_QUERY, big, sizeof big), ==, EMS_ENOSPC);
    EMS_CHECK(ems_link_conn_queued(t.cli) > 600);
    uv_run(&t.loop, UV_RUN_DEFAULT); /* the server closes on the query */
    EMS_CHECK_INT(t.srv_frames, ==, 1);
    net_teardown(&t);
}

/* A raw client (plain socket) that sends bytes and reads what comes back. */
static int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    return fd;
}

typedef struct {
    const uint8_t *bytes;
    size_t len;
    char *path;
    int got_error; /* an ERROR frame was received before EOF */
    char reason[256];
} raw_job_t;

static void *raw_thread(void *arg)
{
    raw_job_t *j = arg;
    int fd = raw_connect(j->path);
    if (fd < 0)
        return NULL;
    if (write(fd, j->bytes, j->len) < 0) {
    }
    shutdown(fd, SHUT_WR); /* the server sees EOF after the bytes */
    uint8_t in[4096];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, in + got, sizeof in - got)) > 0)
        got += (size_t)n;
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 0);
    ems_link_decoder_feed(&d, in, got);
    ems_link_frame_t f;
    while (ems_link_decoder_next(&d, &f) == 1) {
        if (f.kind == EMS_LINK_ERROR) {
            j->got_error = 1;
            snprintf(j->reason, sizeof j->reason, "%.*s", (int)f.len, (const char *)f.payload);
        }
    }
    ems_link_decoder_free(&d);
    close(fd);
    return NULL;
}

#include <pthread.h>

/* Runs the server loop against a raw client that sends `bytes`; returns the
 * server connection's close status. */
static int raw_case(const uint8_t *bytes, size_t len, raw_job_t *job)
{
    net_t t;
    net_setup(&t);
    t.cli = NULL;
    t.closes_seen = 1; /* only the server side closes here */
    memset(job, 0, sizeof *job);
    job->bytes = bytes;
    job->len = len;
    job->path = t.path;
    pthread_t th;
    pthread_create(&th, NULL, raw_thread, job);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    EMS_CHECK_INT(t.srv_closed, ==, 1);
    int st = t.srv_status;
    net_teardown(&t);
    return st;
}

static void test_conn_refuses_bad_version(void)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    ems_link_put_hello(&b, "", 0);
    ems_buf_at(&b, EMS_LINK_HEADER + 4)[0] = 2; /* version 2 */
    raw_job_t j;
    EMS_CHECK_INT(raw_case((const uint8_t *)ems_buf_data(&b), ems_buf_len(&b), &j), ==, EMS_EPROTO);
    EMS_CHECK(j.got_error);
    EMS_CHECK(strstr(j.reason, "unsupported link protocol version 2") != NULL);
    ems_buf_free(&b);
}

static void test_conn_refuses_oversized_frame(void)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    ems_link_put_hello(&b, "", 0);
    uint8_t h[5] = {0x7f, 0xff, 0xff, 0xff, EMS_LINK_TELEMETRY};
    ems_link_put_bytes(&b, h, sizeof h);
    raw_job_t j;
    EMS_CHECK_INT(raw_case((const uint8_t *)ems_buf_data(&b), ems_buf_len(&b), &j), ==,
                  EMS_EMSGSIZE);
    EMS_CHECK(j.got_error);
    EMS_CHECK(strstr(j.reason, "length above the limit") != NULL);
    ems_buf_free(&b);
}

static void test_conn_refuses_frame_before_hello(void)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    ems_link_put_ack(&b, 1);
    raw_job_t j;
    EMS_CHECK_INT(raw_case((const uint8_t *)ems_buf_data(&b), ems_buf_len(&b), &j), ==, EMS_EPROTO);
    EMS_CHECK(j.got_error);
    EMS_CHECK(strstr(j.reason, "first frame must be hello") != NULL);
    ems_buf_free(&b);
}

static void test_conn_peer_eof_midframe(void)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    ems_link_put_hello(&b, "", 0);
    ems_link_put_id_json(&b, EMS_LINK_EVENT, 1, "{\"a\":1}", 7);
    raw_job_t j;
    /* Cut in the middle of the second frame: EOF, no frame delivered. */
    EMS_CHECK_INT(raw_case((const uint8_t *)ems_buf_data(&b), ems_buf_len(&b) - 3, &j), ==,
                  EMS_ECLOSED);
    EMS_CHECK(!j.got_error);
    ems_buf_free(&b);
}

static void test_connect_to_nothing(void)
{
    net_t t;
    memset(&t, 0, sizeof t);
    EMS_CHECK_INT(uv_loop_init(&t.loop), ==, 0);
    uv_pipe_init(&t.loop, &t.server, 0); /* closed by cli_close (closes_seen) */
    t.closes_seen = 1;
    ems_link_conn_opts_t o = {.name = "test client"};
    EMS_CHECK_INT(ems_link_conn_connect(&t.loop, "/tmp/ems-no-such-socket", &o, &CLI_CB, &t,
                                        &t.cli), ==, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(t.cli_closed, ==, 1);
    EMS_CHECK_INT(t.cli_status, ==, UV_ENOENT);
    EMS_CHECK_INT(t.cli_ready, ==, 0);
    EMS_CHECK_INT(uv_loop_close(&t.loop), ==, 0);
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    ems_link_conn_t *c = NULL;
    EMS_CHECK_INT(ems_link_conn_connect(&t.loop, longpath, &o, &CLI_CB, &t, &c), ==, EMS_EINVAL);
}

/* ------------------------------------------------------------------ two lanes */

/* The server queues 16 RESULT frames of 512 KiB (8 MiB) in the bulk lane,
 * then one ACK in the urgent lane: the ACK must overtake all but the bulk
 * slice already being written, which is what keeps device acks flowing
 * while history answers are large. */
typedef struct {
    uv_loop_t loop;
    uv_pipe_t server;
    char path[108];
    ems_link_conn_t *srv, *cli;
    int results_before_ack; /* RESULT frames the client saw before the ACK */
    int results;
    bool got_ack;
    int closes;
    int bulk_full_rc;
} lanes_t;

#define LANES_BIG (512u * 1024u)
#define LANES_N 16

static void lanes_srv_ready(ems_link_conn_t *c, void *ud, const char *info, size_t n)
{
    (void)info, (void)n;
    lanes_t *t = ud;
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    char *big = malloc(LANES_BIG);
    memset(big, 'x', LANES_BIG);
    for (int i = 0; i < LANES_N; i++) {
        ems_buf_clear(&b);
        EMS_CHECK_INT(ems_link_put_result(&b, (uint64_t)i, 0, big, LANES_BIG), ==, 0);
        EMS_CHECK_INT(ems_link_conn_send_bulk(c, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
    }
    /* Over the bulk bound (one frame is already being written): refused. */
    t->bulk_full_rc = ems_link_conn_send_bulk(c, ems_buf_data(&b), ems_buf_len(&b));
    /* Not whole frames: refused. */
    EMS_CHECK_INT(ems_link_conn_send_bulk(c, ems_buf_data(&b), ems_buf_len(&b) - 1), ==,
                  EMS_EINVAL);
    ems_buf_clear(&b);
    ems_link_put_ack(&b, 42);
    EMS_CHECK_INT(ems_link_conn_send_raw(c, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
    EMS_CHECK(ems_link_conn_bulk_queued(c) > 0);
    free(big);
    ems_buf_free(&b);
}

static void lanes_cli_frame(ems_link_conn_t *c, void *ud, const ems_link_frame_t *f)
{
    lanes_t *t = ud;
    if (f->kind == EMS_LINK_ACK) {
        uint64_t s;
        EMS_CHECK_INT(ems_link_parse_ack(f, &s), ==, 0);
        EMS_CHECK_INT(s, ==, 42);
        t->got_ack = true;
        t->results_before_ack = t->results;
    } else if (f->kind == EMS_LINK_RESULT) {
        uint64_t id;
        int32_t st;
        const char *j;
        size_t n;
        EMS_CHECK_INT(ems_link_parse_result(f, &id, &st, &j, &n), ==, 0);
        EMS_CHECK_INT(id, ==, (uint64_t)t->results); /* bulk frames keep their order */
        EMS_CHECK_INT(n, ==, LANES_BIG);
        if (++t->results == LANES_N)
            ems_link_conn_close(c, 0);
    }
}

static void lanes_close(ems_link_conn_t *c, void *ud, int st)
{
    (void)st;
    lanes_t *t = ud;
    if (c == t->srv)
        t->srv = NULL;
    if (c == t->cli) {
        t->cli = NULL;
        if (t->srv)
            ems_link_conn_close(t->srv, 0);
    }
    if (++t->closes == 2)
        uv_close((uv_handle_t *)&t->server, NULL);
}

static const ems_link_conn_cb_t LANES_SRV = {lanes_srv_ready, NULL, NULL, lanes_close};
static const ems_link_conn_cb_t LANES_CLI = {NULL, lanes_cli_frame, NULL, lanes_close};

static void lanes_on_conn(uv_stream_t *server, int status)
{
    lanes_t *t = server->data;
    EMS_CHECK_INT(status, ==, 0);
    ems_link_conn_opts_t o = {.name = "lanes server",
                              .max_bulk = (LANES_N - 1) * (LANES_BIG + 64)};
    EMS_CHECK_INT(ems_link_conn_accept(server, &o, &LANES_SRV, t, &t->srv), ==, 0);
}

static void test_conn_urgent_lane_overtakes_bulk(void)
{
    lanes_t t;
    memset(&t, 0, sizeof t);
    EMS_CHECK_INT(uv_loop_init(&t.loop), ==, 0);
    snprintf(t.path, sizeof t.path, "/tmp/ems-test-lanes-%d.sock", (int)getpid());
    uv_pipe_init(&t.loop, &t.server, 0);
    t.server.data = &t;
    EMS_CHECK_INT(ems_link_listen(&t.server, t.path, lanes_on_conn), ==, 0);
    ems_link_conn_opts_t o = {.name = "lanes client"};
    EMS_CHECK_INT(ems_link_conn_connect(&t.loop, t.path, &o, &LANES_CLI, &t, &t.cli), ==, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(t.bulk_full_rc, ==, EMS_ENOSPC);
    EMS_CHECK(t.got_ack);
    EMS_CHECK_INT(t.results, ==, LANES_N);
    /* At most the slice in flight when the ACK was queued went first. */
    EMS_CHECK_INT(t.results_before_ack, <=, 1);
    unlink(t.path);
    EMS_CHECK_INT(uv_loop_close(&t.loop), ==, 0);
}

/* STATUS and CREDENTIALS frames: encoders, parsers, the decoder knows them. */
static void test_status_and_credentials_frames(void)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    EMS_CHECK_INT(ems_link_put_status(&b, "{\"db\":\"ok\"}", 11), ==, 0);
    EMS_CHECK_INT(ems_link_put_credentials(&b, "ems_001", 7), ==, 0);
    EMS_CHECK_INT(ems_link_put_credentials(&b, "", 0), ==, 0);
    EMS_CHECK_INT(ems_link_put_credentials(&b, "bad id", 6), ==, EMS_EINVAL);
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 0);
    EMS_CHECK_INT(ems_link_decoder_feed(&d, ems_buf_data(&b), ems_buf_len(&b)), ==, 0);
    ems_link_frame_t f;
    const char *j;
    size_t n;
    char id[EMS_DEVICE_ID_MAX + 1];
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, 1);
    EMS_CHECK_STR(ems_link_kind_name(f.kind), "status");
    EMS_CHECK_INT(ems_link_parse_status(&f, &j, &n), ==, 0);
    EMS_CHECK_INT(n, ==, 11);
    EMS_CHECK_INT(ems_link_parse_credentials(&f, id), ==, EMS_EPROTO);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, 1);
    EMS_CHECK_STR(ems_link_kind_name(f.kind), "credentials");
    EMS_CHECK_INT(ems_link_parse_credentials(&f, id), ==, 0);
    EMS_CHECK_STR(id, "ems_001");
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, 1);
    EMS_CHECK_INT(ems_link_parse_credentials(&f, id), ==, 0);
    EMS_CHECK_STR(id, "");
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, 0);
    /* A forged id on the wire is refused by the parser. */
    uint8_t bad[] = {0, 0, 0, 4, EMS_LINK_CREDENTIALS, 'a', '/', 'b'};
    EMS_CHECK_INT(ems_link_decoder_feed(&d, bad, sizeof bad), ==, 0);
    EMS_CHECK_INT(ems_link_decoder_next(&d, &f), ==, 1);
    EMS_CHECK_INT(ems_link_parse_credentials(&f, id), ==, EMS_EPROTO);
    ems_link_decoder_free(&d);
    ems_buf_free(&b);
}

int main(void)
{
    ems_log_init("test_link", EMS_LOG_ERROR);
    EMS_RUN(test_stream_one_byte_chunks);
    EMS_RUN(test_stream_odd_chunks);
    EMS_RUN(test_stream_max_records);
    EMS_RUN(test_zero_copy_reserve);
    EMS_RUN(test_oversized_frame_refused);
    EMS_RUN(test_malformed_frames_refused);
    EMS_RUN(test_payload_parsers_check_lengths);
    EMS_RUN(test_telemetry_reader_refuses_bad_records);
    EMS_RUN(test_energy_records);
    EMS_RUN(test_conn_hello_frames_close);
    EMS_RUN(test_conn_pause_resume);
    EMS_RUN(test_conn_queue_bound);
    EMS_RUN(test_conn_refuses_bad_version);
    EMS_RUN(test_conn_refuses_oversized_frame);
    EMS_RUN(test_conn_refuses_frame_before_hello);
    EMS_RUN(test_conn_peer_eof_midframe);
    EMS_RUN(test_connect_to_nothing);
    EMS_RUN(test_conn_urgent_lane_overtakes_bulk);
    EMS_RUN(test_status_and_credentials_frames);
    EMS_TEST_END();
}
