/* test_net_http.c: HTTP parsing in odd chunk sizes, limits with the right
 * status, and the RFC 6455 handshake helpers. Pure: no sockets. */
#include <string.h>

#include "buf.h"
#include "ems_test.h"
#include "error.h"
#include "http.h"

/* Feeds `text` in chunks of `chunk` bytes (0 = all at once) and returns the
 * feed result of the last call; *used counts the bytes taken. */
static int feed_chunks(ems_http_parser_t *p, const char *text, size_t len, size_t chunk,
                       size_t *used)
{
    size_t off = 0;
    int rc = 0;
    *used = 0;
    while (off < len) {
        size_t n = chunk ? (len - off < chunk ? len - off : chunk) : len - off;
        size_t got = 0;
        rc = ems_http_parser_feed(p, text + off, n, &got);
        *used += got;
        if (rc != 0)
            return rc;
        EMS_CHECK_INT(got, ==, n);
        off += n;
    }
    return rc;
}

static const char GOOD[] = "POST /api/devices/ems_001/commands?dry=1&x=%20y HTTP/1.1\r\n"
                           "Host: example.com\r\n"
                           "Content-Type: application/json\r\n"
                           "X-Long-Header:   padded value   \r\n"
                           "Content-Length: 17\r\n"
                           "\r\n"
                           "{\"action\":\"none\"}";

static void check_good(const ems_http_msg_t *m)
{
    EMS_CHECK_STR(m->method, "POST");
    EMS_CHECK_STR(m->url, "/api/devices/ems_001/commands?dry=1&x=%20y");
    EMS_CHECK_STR(m->path, "/api/devices/ems_001/commands");
    EMS_CHECK_STR(m->query, "dry=1&x=%20y");
    EMS_CHECK_INT(m->version_major, ==, 1);
    EMS_CHECK_INT(m->version_minor, ==, 1);
    EMS_CHECK_INT(m->n_headers, ==, 4);
    EMS_CHECK_STR(ems_http_msg_header(m, "host"), "example.com");
    EMS_CHECK_STR(ems_http_msg_header(m, "CONTENT-TYPE"), "application/json");
    EMS_CHECK_STR(ems_http_msg_header(m, "x-long-header"), "padded value");
    EMS_CHECK(ems_http_msg_header(m, "Missing") == NULL);
    EMS_CHECK_INT(m->body_len, ==, 17);
    EMS_CHECK(memcmp(m->body, "{\"action\":\"none\"}", 17) == 0);
    EMS_CHECK(m->body[17] == '\0');
    EMS_CHECK(m->keep_alive);
    EMS_CHECK(!m->upgrade);
}

static void test_request_in_any_chunking(void)
{
    size_t sizes[] = {0, 1, 2, 3, 5, 7, 13, 64};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
        EMS_CHECK(p);
        size_t used;
        EMS_CHECK_INT(feed_chunks(p, GOOD, sizeof GOOD - 1, sizes[i], &used), ==, 1);
        EMS_CHECK_INT(used, ==, sizeof GOOD - 1);
        check_good(ems_http_parser_msg(p));
        ems_http_parser_free(p);
    }
}

static void test_pipelined_and_keepalive(void)
{
    const char two[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                       "GET /b?q HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                       "GET /c HTTP/1.0\r\n\r\n";
    ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
    const char *at = two;
    size_t left = sizeof two - 1, used;
    EMS_CHECK_INT(ems_http_parser_feed(p, at, left, &used), ==, 1);
    const ems_http_msg_t *m = ems_http_parser_msg(p);
    EMS_CHECK_STR(m->path, "/a");
    EMS_CHECK_STR(m->query, "");
    EMS_CHECK(m->keep_alive);
    EMS_CHECK_INT(m->body_len, ==, 0);
    /* feeding again before reset does not parse on */
    size_t u2;
    EMS_CHECK_INT(ems_http_parser_feed(p, at + used, left - used, &u2), ==, 1);
    EMS_CHECK_INT(u2, ==, 0);
    at += used, left -= used;
    ems_http_parser_reset(p);
    EMS_CHECK(ems_http_parser_msg(p) == NULL);
    EMS_CHECK_INT(ems_http_parser_feed(p, at, left, &used), ==, 1);
    m = ems_http_parser_msg(p);
    EMS_CHECK_STR(m->path, "/b");
    EMS_CHECK_STR(m->query, "q");
    EMS_CHECK(!m->keep_alive);
    at += used, left -= used;
    ems_http_parser_reset(p);
    EMS_CHECK_INT(ems_http_parser_feed(p, at, left, &used), ==, 1);
    m = ems_http_parser_msg(p);
    EMS_CHECK_STR(m->path, "/c");
    EMS_CHECK_INT(m->version_minor, ==, 0);
    EMS_CHECK(!m->keep_alive); /* HTTP/1.0 without keep-alive */
    EMS_CHECK_INT(used, ==, left);
    ems_http_parser_free(p);
}

static void test_chunked_body(void)
{
    const char req[] = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
    size_t used;
    EMS_CHECK_INT(feed_chunks(p, req, sizeof req - 1, 3, &used), ==, 1);
    EMS_CHECK_STR(ems_http_parser_msg(p)->body, "hello world");
    ems_http_parser_free(p);
}

/* Expects `text` (fed whole and in chunks of 1, 2, 3, 7 and 13 bytes) to be
 * refused with `status` and an error text containing `word`. */
static void expect_refused(const char *text, const ems_http_limits_t *lim, int status,
                           const char *word)
{
    size_t sizes[] = {0, 1, 2, 3, 7, 13};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, lim);
        size_t used;
        int rc = feed_chunks(p, text, strlen(text), sizes[i], &used);
        if (rc != EMS_EPROTO)
            EMS_FAIL("expected EMS_EPROTO for %.40s..., got %d", text, rc);
        EMS_CHECK_INT(ems_http_parser_status(p), ==, status);
        if (!strstr(ems_http_parser_error(p), word))
            EMS_FAIL("error \"%s\" lacks \"%s\"", ems_http_parser_error(p), word);
        /* a dead parser stays dead */
        EMS_CHECK_INT(ems_http_parser_feed(p, "GET", 3, &used), ==, EMS_EPROTO);
        ems_http_parser_free(p);
    }
}

/* http_parser (built non-strict) takes any two bytes after a chunk's data
 * for its CRLF; a proxy that does not may frame the body differently. */
static void test_chunk_data_needs_crlf(void)
{
    const char *bad[] = {
        "5\r\nhelloXY0\r\n\r\n",
        "5\r\nhello\rX0\r\n\r\n",
        "5\r\nhelloX\n0\r\n\r\n",
        "5\r\nhello\n\n0\r\n\r\n",
        "5\r\nhello\r\n6\r\n world!!0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n%s", bad[i]);
        expect_refused(req, NULL, 400, "CRLF");
    }
    /* the good one, in every chunking, so the check never misfires at a
     * feed boundary */
    const char good[] = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    for (size_t n = 0; n <= 13; n++) {
        ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
        size_t used;
        EMS_CHECK_INT(feed_chunks(p, good, sizeof good - 1, n, &used), ==, 1);
        EMS_CHECK_STR(ems_http_parser_msg(p)->body, "hello world");
        ems_http_parser_free(p);
    }
}

static void test_malformed_is_400(void)
{
    expect_refused("GET / HTTP/1.1\r\nHost h\r\n\r\n", NULL, 400, "malformed");
    expect_refused("G@T / HTTP/1.1\r\n\r\n", NULL, 400, "malformed");
    expect_refused("GET / HTTP/9.\r\n\r\n", NULL, 400, "malformed");
    expect_refused("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", NULL, 400, "malformed");
    expect_refused("\x01\x02\x03\x04", NULL, 400, "malformed");
}

/* RFC 9112: what a proxy in front of us may read differently is refused
 * (request smuggling), with a reason naming the fault. */
static void test_ambiguous_requests_are_400(void)
{
    /* 5.1: no whitespace between field name and colon */
    expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n"
                   "5\r\nhello\r\n0\r\n\r\n",
                   NULL, 400, "before its colon");
    expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n", NULL, 400,
                   "before its colon");
    expect_refused("POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello", NULL, 400,
                   "before its colon");
    expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX Y: 1\r\n\r\n", NULL, 400, "field name");
    /* 5.2: obs-fold, with SP or HTAB, and a first field line starting blank */
    expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n", NULL, 400,
                   "obs-fold");
    expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip,\r\n\tchunked\r\n\r\n",
                   NULL, 400, "obs-fold");
    expect_refused("GET / HTTP/1.1\r\n Host: h\r\n\r\n", NULL, 400, "obs-fold");
    /* 2.2: bare LF anywhere in the header section, bare CR */
    expect_refused("GET / HTTP/1.1\nHost: h\n\n", NULL, 400, "bare LF");
    expect_refused("GET / HTTP/1.1\nHost: h\r\n\r\n", NULL, 400, "bare LF");
    expect_refused("GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", NULL, 400, "bare LF");
    expect_refused("GET / HTTP/1.1\r\nHost: h\r\n\n", NULL, 400, "bare LF");
    expect_refused("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 400, "bare LF");
    expect_refused("GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n", NULL, 400, "bare CR");
    /* 6.3: Content-Length with Transfer-Encoding, Content-Length twice */
    expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                   NULL, 400, "both Content-Length and Transfer-Encoding");
    expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                   "Content-Length: 5\r\n\r\n0\r\n\r\n",
                   NULL, 400, "both Content-Length and Transfer-Encoding");
    expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                   "hello!",
                   NULL, 400, "Content-Length repeated");
    expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
                   "hello",
                   NULL, 400, "Content-Length repeated");
}

/* A good request followed on the same connection by a smuggled one: the
 * first is answered, the second refused, in any chunking. */
static void test_ambiguous_pipelined_request_is_400(void)
{
    const char two[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                       "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n"
                       "0\r\n\r\n";
    size_t sizes[] = {0, 1, 2, 3, 7, 13};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
        size_t used;
        EMS_CHECK_INT(feed_chunks(p, two, sizeof two - 1, sizes[i], &used), ==, 1);
        EMS_CHECK_STR(ems_http_parser_msg(p)->path, "/a");
        ems_http_parser_reset(p);
        size_t used2;
        EMS_CHECK_INT(feed_chunks(p, two + used, sizeof two - 1 - used, sizes[i], &used2), ==,
                      EMS_EPROTO);
        EMS_CHECK_INT(ems_http_parser_status(p), ==, 400);
        EMS_CHECK(strstr(ems_http_parser_error(p), "before its colon"));
        ems_http_parser_free(p);
    }
}

/* What the checks above must not catch: blanks inside and around values,
 * HTAB after the colon, empty values, an empty line before the request
 * line, bodies holding LF, SP and CR in any order, and pipelining. */
static void test_legitimate_whitespace_still_parses(void)
{
    const char reqs[] = "\r\nPOST /a HTTP/1.1\r\n"
                        "Host:\th\r\n"
                        "X-Sp: a  b\tc \t\r\n"
                        "X-Empty:\r\n"
                        "X-Tab:\t\tv\r\n"
                        "Content-Length: 8\r\n"
                        "\r\n"
                        "x\n y\r\n\tz"
                        "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "4\r\n\n \r\n\r\n0\r\n\r\n"
                        "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t sizes[] = {0, 1, 2, 3, 5, 7, 13, 64};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
        const char *at = reqs;
        size_t left = sizeof reqs - 1, used;
        EMS_CHECK_INT(feed_chunks(p, at, left, sizes[i], &used), ==, 1);
        const ems_http_msg_t *m = ems_http_parser_msg(p);
        EMS_CHECK_STR(m->path, "/a");
        EMS_CHECK_STR(ems_http_msg_header(m, "Host"), "h");
        EMS_CHECK_STR(ems_http_msg_header(m, "X-Sp"), "a  b\tc");
        EMS_CHECK_STR(ems_http_msg_header(m, "X-Empty"), "");
        EMS_CHECK_STR(ems_http_msg_header(m, "X-Tab"), "v");
        EMS_CHECK_INT(m->body_len, ==, 8);
        EMS_CHECK(memcmp(m->body, "x\n y\r\n\tz", 8) == 0);
        at += used, left -= used;
        ems_http_parser_reset(p);
        EMS_CHECK_INT(feed_chunks(p, at, left, sizes[i], &used), ==, 1);
        m = ems_http_parser_msg(p);
        EMS_CHECK_STR(m->path, "/b");
        EMS_CHECK_INT(m->body_len, ==, 4);
        EMS_CHECK(memcmp(m->body, "\n \r\n", 4) == 0);
        at += used, left -= used;
        ems_http_parser_reset(p);
        EMS_CHECK_INT(feed_chunks(p, at, left, sizes[i], &used), ==, 1);
        EMS_CHECK_STR(ems_http_parser_msg(p)->path, "/c");
        EMS_CHECK_INT(used, ==, left);
        ems_http_parser_free(p);
    }
}

/* Trailer fields of a chunked body are discarded; storing them used to
 * move the arena under the message already built (a use after free that
 * ASan reports here). */
static void test_chunked_trailers_are_dropped(void)
{
    char req[8192];
    int n = snprintf(req, sizeof req,
                     "POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked"
                     "\r\n\r\n5\r\nhello\r\n0\r\n");
    for (int i = 0; i < 30; i++)
        n += snprintf(req + n, sizeof req - (size_t)n, "X-T%d: %0150d\r\n", i, 0);
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    size_t sizes[] = {0, 1, 7};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
        size_t used;
        EMS_CHECK_INT(feed_chunks(p, req, (size_t)n, sizes[i], &used), ==, 1);
        const ems_http_msg_t *m = ems_http_parser_msg(p);
        EMS_CHECK_INT(m->n_headers, ==, 2);
        EMS_CHECK_STR(ems_http_msg_header(m, "Host"), "h");
        EMS_CHECK_STR(m->body, "hello");
        ems_http_parser_free(p);
    }
}

static void test_limits_have_their_status(void)
{
    ems_http_limits_t lim = {
        .max_header_bytes = 200, .max_headers = 4, .max_body = 10, .max_url = 50};
    char big[400];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-A: %0200d\r\n\r\n", 0);
    expect_refused(big, &lim, 431, "200 bytes");
    expect_refused("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", &lim, 431,
                   "more than 4 header");
    expect_refused("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", &lim, 413, "10 bytes");
    expect_refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n"
                   "8\r\n12345678\r\n0\r\n\r\n",
                   &lim, 413, "body over");
    char url[200];
    snprintf(url, sizeof url, "GET /%060d HTTP/1.1\r\n\r\n", 0);
    expect_refused(url, &lim, 414, "50 bytes");
    /* exactly at the limits is fine */
    ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, &lim);
    const char ok[] = "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
    size_t used;
    EMS_CHECK_INT(feed_chunks(p, ok, sizeof ok - 1, 1, &used), ==, 1);
    EMS_CHECK_INT(ems_http_parser_msg(p)->body_len, ==, 10);
    EMS_CHECK(ems_http_parser_msg(p)->body[10] == '\0');
    ems_http_parser_free(p);
}

static void test_has_token(void)
{
    EMS_CHECK(ems_http_has_token("Upgrade", "upgrade"));
    EMS_CHECK(ems_http_has_token("keep-alive, Upgrade", "upgrade"));
    EMS_CHECK(ems_http_has_token("keep-alive ,UPGRADE ", "upgrade"));
    EMS_CHECK(!ems_http_has_token("keep-alive", "upgrade"));
    EMS_CHECK(!ems_http_has_token("upgraded", "upgrade"));
    EMS_CHECK(!ems_http_has_token("", "upgrade"));
    EMS_CHECK(!ems_http_has_token(NULL, "upgrade"));
}

static void test_response_writer(void)
{
    ems_buf_t b;
    ems_buf_init(&b, 4096);
    EMS_CHECK_INT(ems_http_response_write(&b, 404, "text/plain", "X-A: 1\r\n", "nope", 4, false),
                  ==, 0);
    const char want[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nConnection: close\r\n"
                        "Content-Type: text/plain\r\nX-A: 1\r\n\r\nnope";
    EMS_CHECK_INT(ems_buf_len(&b), ==, sizeof want - 1);
    EMS_CHECK(memcmp(ems_buf_data(&b), want, sizeof want - 1) == 0);
    /* and a response parser reads it back */
    ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_RESPONSE, NULL);
    size_t used;
    EMS_CHECK_INT(feed_chunks(p, ems_buf_data(&b), ems_buf_len(&b), 2, &used), ==, 1);
    EMS_CHECK_INT(ems_http_parser_msg(p)->status, ==, 404);
    EMS_CHECK_STR(ems_http_parser_msg(p)->body, "nope");
    ems_http_parser_free(p);
    /* all or nothing when the buffer is too small */
    ems_buf_t small;
    ems_buf_init(&small, 20);
    EMS_CHECK_INT(ems_http_response_write(&small, 200, NULL, NULL, "x", 1, true), ==, EMS_ENOSPC);
    EMS_CHECK_INT(ems_buf_len(&small), ==, 0);
    ems_buf_free(&small);
    ems_buf_free(&b);
}

static void test_ws_accept_rfc_example(void)
{
    char out[29];
    EMS_CHECK_INT(ems_http_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out), ==, 0);
    EMS_CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    EMS_CHECK_INT(ems_http_ws_accept(NULL, out), ==, EMS_EINVAL);
}

static const char UPGRADE_FMT[] = "%s /ws/device/ems_001 HTTP/%s\r\n"
                                  "Host: gw.example\r\n"
                                  "%s"
                                  "%s"
                                  "%s"
                                  "%s"
                                  "\r\n";

/* Parses an upgrade request built from parts; returns the check status. */
static int check_upgrade(const char *method, const char *version, const char *upgrade,
                         const char *connection, const char *wsver, const char *key,
                         const char **why)
{
    char req[1024];
    snprintf(req, sizeof req, UPGRADE_FMT, method, version, upgrade, connection, wsver, key);
    ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
    size_t used;
    EMS_CHECK_INT(feed_chunks(p, req, strlen(req), 1, &used), ==, 1);
    int st = ems_http_ws_check_request(ems_http_parser_msg(p), why);
    if (st == 0) {
        /* the 101 answer carries the right Accept */
        ems_buf_t b;
        ems_buf_init(&b, 4096);
        EMS_CHECK_INT(ems_http_ws_response_write(&b, ems_http_parser_msg(p), "X-B: 2\r\n"), ==, 0);
        ems_buf_append(&b, "", 1);
        EMS_CHECK(strstr(ems_buf_data(&b), "HTTP/1.1 101 Switching Protocols\r\n") ==
                  ems_buf_data(&b));
        EMS_CHECK(
            strstr(ems_buf_data(&b), "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        EMS_CHECK(strstr(ems_buf_data(&b), "X-B: 2\r\n\r\n"));
        ems_buf_free(&b);
    }
    ems_http_parser_free(p);
    return st;
}

static void test_ws_upgrade_validation(void)
{
    const char *U = "Upgrade: websocket\r\n", *C = "Connection: keep-alive, Upgrade\r\n",
               *V = "Sec-WebSocket-Version: 13\r\n",
               *K = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    const char *why;
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, C, V, K, &why), ==, 0);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", "Upgrade: WebSocket\r\n", "Connection: upgrade\r\n",
                                V, K, &why),
                  ==, 0);
    EMS_CHECK_INT(check_upgrade("POST", "1.1", U, C, V, K, &why), ==, 400);
    EMS_CHECK(strstr(why, "GET"));
    EMS_CHECK_INT(check_upgrade("GET", "1.0", U, C, V, K, &why), ==, 400);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", "", C, V, K, &why), ==, 400);
    EMS_CHECK(strstr(why, "Upgrade"));
    EMS_CHECK_INT(check_upgrade("GET", "1.1", "Upgrade: h2c\r\n", C, V, K, &why), ==, 400);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, "Connection: keep-alive\r\n", V, K, &why), ==,
                  400);
    EMS_CHECK(strstr(why, "Connection"));
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, "", V, K, &why), ==, 400);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, C, "Sec-WebSocket-Version: 8\r\n", K, &why), ==,
                  426);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, C, "", K, &why), ==, 426);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, C, V, "", &why), ==, 400);
    EMS_CHECK(strstr(why, "Key"));
    /* 15 bytes, 17 bytes, not base64 */
    EMS_CHECK_INT(
        check_upgrade("GET", "1.1", U, C, V, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n", &why),
        ==, 400);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, C, V,
                                "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n", &why),
                  ==, 400);
    EMS_CHECK_INT(check_upgrade("GET", "1.1", U, C, V,
                                "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n", &why),
                  ==, 400);
}

static void test_ws_client_roundtrip(void)
{
    /* The client request passes the server check, and the server answer
     * passes the client check; a tampered answer does not. */
    ems_buf_t req;
    ems_buf_init(&req, 4096);
    char key[25];
    EMS_CHECK_INT(ems_http_ws_request_write(&req, "gw.example:8443", "/ws/device/ems_001",
                                            "Authorization: Bearer abc\r\n", key),
                  ==, 0);
    EMS_CHECK_INT(strlen(key), ==, 24);
    ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
    size_t used;
    EMS_CHECK_INT(feed_chunks(p, ems_buf_data(&req), ems_buf_len(&req), 3, &used), ==, 1);
    const ems_http_msg_t *m = ems_http_parser_msg(p);
    const char *why;
    EMS_CHECK_INT(ems_http_ws_check_request(m, &why), ==, 0);
    EMS_CHECK_STR(ems_http_msg_header(m, "Authorization"), "Bearer abc");
    EMS_CHECK_STR(ems_http_msg_header(m, "Host"), "gw.example:8443");
    EMS_CHECK_STR(m->path, "/ws/device/ems_001");
    ems_buf_t resp;
    ems_buf_init(&resp, 4096);
    EMS_CHECK_INT(ems_http_ws_response_write(&resp, m, NULL), ==, 0);
    /* a frame right behind the 101 must be left for the WebSocket layer */
    ems_buf_append(&resp, "\x81\x02hi", 4);
    ems_http_parser_t *r = ems_http_parser_new(EMS_HTTP_RESPONSE, NULL);
    EMS_CHECK_INT(feed_chunks(r, ems_buf_data(&resp), ems_buf_len(&resp), 0, &used), ==, 1);
    EMS_CHECK_INT(used, ==, ems_buf_len(&resp) - 4);
    EMS_CHECK_INT(ems_http_ws_check_response(ems_http_parser_msg(r), key, &why), ==, 0);
    char other[25];
    memcpy(other, key, 25);
    other[0] = other[0] == 'A' ? 'B' : 'A';
    EMS_CHECK_INT(ems_http_ws_check_response(ems_http_parser_msg(r), other, &why), ==, EMS_EPROTO);
    EMS_CHECK(strstr(why, "Accept"));
    /* two requests get different keys */
    char key2[25];
    ems_buf_clear(&req);
    EMS_CHECK_INT(ems_http_ws_request_write(&req, "h", "/", NULL, key2), ==, 0);
    EMS_CHECK(strcmp(key, key2) != 0);
    /* header injection through the path is refused */
    EMS_CHECK_INT(ems_http_ws_request_write(&req, "h", "/a\r\nX: y", NULL, key2), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_http_ws_request_write(&req, "h", "noslash", NULL, key2), ==, EMS_EINVAL);
    /* a refusal is reported as such */
    ems_http_parser_t *r2 = ems_http_parser_new(EMS_HTTP_RESPONSE, NULL);
    const char deny[] = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    EMS_CHECK_INT(feed_chunks(r2, deny, sizeof deny - 1, 1, &used), ==, 1);
    EMS_CHECK_INT(ems_http_parser_msg(r2)->status, ==, 401);
    EMS_CHECK_INT(ems_http_ws_check_response(ems_http_parser_msg(r2), key, &why), ==, EMS_EPROTO);
    /* a refusal without Content-Length completes after its headers */
    ems_http_parser_reset(r2);
    const char deny2[] = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nbody...";
    EMS_CHECK_INT(feed_chunks(r2, deny2, sizeof deny2 - 1, 0, &used), ==, 1);
    EMS_CHECK_INT(ems_http_parser_msg(r2)->status, ==, 403);
    ems_http_parser_free(r2);
    ems_http_parser_free(r);
    ems_http_parser_free(p);
    ems_buf_free(&req);
    ems_buf_free(&resp);
}

int main(void)
{
    EMS_RUN(test_request_in_any_chunking);
    EMS_RUN(test_pipelined_and_keepalive);
    EMS_RUN(test_chunked_body);
    EMS_RUN(test_chunk_data_needs_crlf);
    EMS_RUN(test_malformed_is_400);
    EMS_RUN(test_ambiguous_requests_are_400);
    EMS_RUN(test_ambiguous_pipelined_request_is_400);
    EMS_RUN(test_legitimate_whitespace_still_parses);
    EMS_RUN(test_chunked_trailers_are_dropped);
    EMS_RUN(test_limits_have_their_status);
    EMS_RUN(test_has_token);
    EMS_RUN(test_response_writer);
    EMS_RUN(test_ws_accept_rfc_example);
    EMS_RUN(test_ws_upgrade_validation);
    EMS_RUN(test_ws_client_roundtrip);
    EMS_TEST_END();
}
