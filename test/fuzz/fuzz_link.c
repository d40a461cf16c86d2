/* fuzz_link.c: libFuzzer target for the gateway <-> DB writer link decoder
 * (common/link.c): the stream decoder fed in chunk sizes taken from the
 * input, every payload parser, and the telemetry record reader.
 *
 * Beyond "no crash, no over-read, no leak": a record the reader accepts
 * must encode again (ems_link_telemetry_add) and read back equal, and a
 * decoder that reported an error must keep reporting it.
 */
#include "link.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_record(const ems_telemetry_t *t, int64_t recv)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    size_t mark;
    if (ems_link_telemetry_begin(&b, 1, &mark) < 0)
        abort();
    if (ems_link_telemetry_add(&b, mark, t, recv) < 0)
        abort(); /* whatever the reader accepts, the writer can write */
    if (ems_link_telemetry_end(&b, mark) < 0)
        abort();
    ems_link_frame_t f = {EMS_LINK_TELEMETRY, (const uint8_t *)ems_buf_data(&b) + EMS_LINK_HEADER,
                          ems_buf_len(&b) - EMS_LINK_HEADER};
    ems_link_telemetry_reader_t r;
    ems_telemetry_t back;
    int64_t recv2;
    if (ems_link_telemetry_open(&r, &f) < 0 || ems_link_telemetry_next(&r, &back, &recv2) != 1 ||
        !ems_telemetry_equal(t, &back) || recv != recv2)
        abort();
    ems_buf_free(&b);
}

static void check_frame(const ems_link_frame_t *f)
{
    uint32_t v32;
    uint64_t v64;
    int32_t st;
    const char *s;
    size_t n;
    switch (f->kind) {
    case EMS_LINK_HELLO: (void)ems_link_parse_hello(f, &v32, &s, &n); break;
    case EMS_LINK_ACK: (void)ems_link_parse_ack(f, &v64); break;
    case EMS_LINK_REJECT: (void)ems_link_parse_reject(f, &v64, &v32, &s, &n); break;
    case EMS_LINK_EVENT:
    case EMS_LINK_QUERY: (void)ems_link_parse_id_json(f, &v64, &s, &n); break;
    case EMS_LINK_RESULT: (void)ems_link_parse_result(f, &v64, &st, &s, &n); break;
    case EMS_LINK_STATUS: (void)ems_link_parse_status(f, &s, &n); break;
    case EMS_LINK_CREDENTIALS: {
        char id[EMS_DEVICE_ID_MAX + 1];
        if (ems_link_parse_credentials(f, id) == 0 && id[0] &&
            !ems_device_id_valid(id, strlen(id)))
            __builtin_trap(); /* the parser let a bad id through */
        break;
    }
    case EMS_LINK_TELEMETRY: {
        ems_link_telemetry_reader_t r;
        if (ems_link_telemetry_open(&r, f) < 0)
            break;
        ems_telemetry_t t;
        int64_t recv;
        while (ems_link_telemetry_next(&r, &t, &recv) == 1)
            check_record(&t, recv);
        break;
    }
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 64 + 1;
    data++, size--;
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 4096);
    int err = 0;
    for (size_t off = 0; off < size && !err;) {
        size_t c = size - off < chunk ? size - off : chunk;
        int rc = ems_link_decoder_feed(&d, data + off, c);
        if (rc < 0)
            break;
        off += c;
        ems_link_frame_t f;
        while ((rc = ems_link_decoder_next(&d, &f)) == 1) {
            if (f.len + 1 > 4096)
                abort(); /* the configured limit holds */
            check_frame(&f);
        }
        if (rc < 0) {
            err = rc;
            ems_link_frame_t g;
            if (ems_link_decoder_next(&d, &g) != err)
                abort(); /* errors are sticky */
        }
    }
    ems_link_decoder_free(&d);
    return 0;
}
