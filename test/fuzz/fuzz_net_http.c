/* fuzz_net_http.c: libFuzzer target for the HTTP parser of common/net.
 *
 * The first input byte picks a chunk size; the rest is fed as a request and
 * as a response, in chunks of that size, message after message as a
 * keep-alive connection would. Beyond "no crash, no leak, no undefined
 * behaviour" it checks the parser's promises: a refusal carries an HTTP
 * status of 400/413/414/431 and a reason, consumed counts never exceed the
 * input, and a parsed message respects the limits it was given. Complete
 * requests also go through the WebSocket upgrade check and, if accepted,
 * the 101 writer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "http.h"

static void run(ems_http_kind_t kind, const char *data, size_t len, size_t chunk)
{
    ems_http_limits_t lim = {
        .max_header_bytes = 1024, .max_headers = 8, .max_body = 512, .max_url = 256};
    ems_http_parser_t *p = ems_http_parser_new(kind, &lim);
    if (!p)
        abort();
    size_t off = 0;
    int messages = 0;
    while (off < len && messages < 64) {
        size_t n = len - off < chunk ? len - off : chunk, used = 0;
        int rc = ems_http_parser_feed(p, data + off, n, &used);
        if (used > n)
            abort();
        off += used;
        if (rc == EMS_EPROTO) {
            int st = ems_http_parser_status(p);
            if ((st != 400 && st != 413 && st != 414 && st != 431 && st != 500) ||
                !ems_http_parser_error(p)[0])
                abort();
            break;
        }
        if (rc == 1) {
            const ems_http_msg_t *m = ems_http_parser_msg(p);
            if (!m || m->body_len > lim.max_body || m->n_headers > lim.max_headers)
                abort();
            for (size_t i = 0; i < m->n_headers; i++)
                if (!m->headers[i].name || !m->headers[i].value)
                    abort();
            if (kind == EMS_HTTP_REQUEST) {
                const char *why;
                if (ems_http_ws_check_request(m, &why) == 0) {
                    ems_buf_t b;
                    ems_buf_init(&b, 4096);
                    if (ems_http_ws_response_write(&b, m, NULL) != 0)
                        abort();
                    ems_buf_free(&b);
                }
            } else {
                const char *why;
                (void)ems_http_ws_check_response(m, "dGhlIHNhbXBsZSBub25jZQ==", &why);
            }
            messages++;
            if (m->upgrade)
                break; /* the rest belongs to another protocol */
            ems_http_parser_reset(p);
            continue;
        }
        if (used < n)
            abort(); /* "need more" means every byte was taken */
    }
    ems_http_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)(data[0] % 16) + 1;
    if (data[0] >= 128)
        chunk = size; /* all at once */
    run(EMS_HTTP_REQUEST, (const char *)data + 1, size - 1, chunk);
    run(EMS_HTTP_RESPONSE, (const char *)data + 1, size - 1, chunk);
    return 0;
}
