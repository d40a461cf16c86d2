/* test_net_ws.c: WebSocket client and server over real loopback sockets,
 * plain and TLS. Each test runs its own loop in its own process and ends
 * with uv_loop_close() == 0, so a leaked handle fails it.
 *
 * Besides our own client, a "raw" peer built on ems_conn writes and reads
 * frames byte by byte, to send what our client never would (fragments,
 * frames glued to the upgrade request, silence). */
#include <stdint.h>
#include <string.h>

#include "client.h"
#include "conn.h"
#include "ems_test.h"
#include "error.h"
#include "http.h"
#include "server.h"
#include "test_net_util.h"
#include "ws.h"

/* ------------------------------------------------------------ fixture */

#define MAX_PEERS 32

typedef struct peer {
    ems_ws_t *ws;
    int open, closed, msgs;
    ems_ws_close_info_t info;
    char detail[256];
    char last[256];
    size_t last_len, bytes;
    bool last_binary;
    int close_in_msg; /* client: close from inside on_message */
} peer_t;

typedef struct fixture {
    uv_loop_t loop;
    const char *certs;
    ems_tls_config_t *stls, *ctls;
    ems_server_t *srv;
    uint16_t port;
    ems_ws_options_t sopts, copts;
    /* server behaviour */
    int echo;
    int close_in_msg, abort_in_msg;
    int refuse; /* answer upgrades with this status */
    int handler_calls;
    char last_auth[128];
    /* server side WebSockets, in accept order */
    peer_t s[MAX_PEERS];
    int ns;
    int s_close_calls;
    /* clients */
    peer_t c[MAX_PEERS];
    int stopped;
    ems_server_req_t *async_req;
    uv_timer_t async_timer;
} fixture_t;

static fixture_t F;
static const char *certs; /* made once in main */

static peer_t *peer_of(ems_ws_t *ws)
{
    return ems_ws_user(ws);
}

static void s_on_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    peer_t *p = peer_of(ws);
    p->msgs++;
    p->bytes += len;
    p->last_len = len < sizeof p->last ? len : sizeof p->last - 1;
    memcpy(p->last, data, p->last_len);
    p->last[p->last_len] = '\0';
    p->last_binary = binary;
    if (F.close_in_msg) {
        ems_ws_close(ws, 4001, "replaced");
        EMS_CHECK_INT(ems_ws_send_text(ws, "late", 4), ==, EMS_ECLOSED);
        EMS_CHECK(!ems_ws_is_open(ws));
        ems_ws_close(ws, 4002, "again"); /* idempotent */
        return;
    }
    if (F.abort_in_msg) {
        ems_ws_abort(ws, 0);
        ems_ws_abort(ws, 0);
        EMS_CHECK_INT(ems_ws_send_text(ws, "late", 4), ==, EMS_ECLOSED);
        return;
    }
    if (F.echo) {
        if (binary) {
            ems_ws_msg_t *m = ems_ws_msg_new(data, len, true);
            EMS_CHECK_INT(ems_ws_send_msg(ws, m), ==, 0);
            ems_ws_msg_unref(m);
        } else {
            EMS_CHECK_INT(ems_ws_send_text(ws, data, len), ==, 0);
        }
    }
}

static void record_close(peer_t *p, const ems_ws_close_info_t *info)
{
    EMS_CHECK(!p->closed); /* exactly once */
    p->closed = 1;
    p->info = *info;
    snprintf(p->detail, sizeof p->detail, "%s", info->detail ? info->detail : "");
    p->info.detail = p->detail;
}

static void s_on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    F.s_close_calls++;
    record_close(peer_of(ws), info);
}

static const ems_ws_callbacks_t s_cbs = {NULL, s_on_message, s_on_close};

static void async_answer(uv_timer_t *t)
{
    (void)t;
    ems_server_respond(F.async_req, 200, "text/plain", NULL, "later", 5);
    F.async_req = NULL;
}

static void handler(ems_server_req_t *req, void *user)
{
    (void)user;
    const ems_http_msg_t *m = ems_server_req_msg(req);
    F.handler_calls++;
    EMS_CHECK(ems_server_req_conn(req) != NULL);
    const char *auth = ems_http_msg_header(m, "Authorization");
    snprintf(F.last_auth, sizeof F.last_auth, "%s", auth ? auth : "");
    if (strcmp(m->path, "/hello") == 0) {
        EMS_CHECK_INT(ems_server_respond(req, 200, "text/plain", "X-Test: 1\r\n", "hi", 2), ==, 0);
        return;
    }
    if (strcmp(m->path, "/async") == 0) {
        F.async_req = req;
        uv_timer_start(&F.async_timer, async_answer, 50, 0);
        return;
    }
    if (strncmp(m->path, "/ws/", 4) != 0) {
        ems_server_respond(req, 404, "text/plain", NULL, "no", 2);
        return;
    }
    if (F.refuse) {
        ems_server_respond(req, F.refuse, "text/plain", NULL, "denied", 6);
        return;
    }
    EMS_CHECK(F.ns < MAX_PEERS);
    peer_t *p = &F.s[F.ns++];
    ems_ws_t *ws = NULL;
    int rc = ems_server_upgrade(req, &F.sopts, &s_cbs, p, "X-Upgraded: yes\r\n", &ws);
    if (rc == EMS_EPROTO) {
        F.ns--;
        return;
    }
    EMS_CHECK_INT(rc, ==, 0);
    p->ws = ws;
    p->open = 1;
}

static void c_on_open(ems_ws_t *ws)
{
    peer_of(ws)->open = 1;
}

static void c_on_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    peer_t *p = peer_of(ws);
    p->msgs++;
    p->bytes += len;
    p->last_len = len < sizeof p->last ? len : sizeof p->last - 1;
    memcpy(p->last, data, p->last_len);
    p->last[p->last_len] = '\0';
    p->last_binary = binary;
    if (p->close_in_msg)
        ems_ws_close(ws, 1000, "done");
}

static void c_on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    record_close(peer_of(ws), info);
}

static const ems_ws_callbacks_t c_cbs = {c_on_open, c_on_message, c_on_close};

/* Starts the loop, certificates and a server (TLS or not). */
static void fx_start(int tls)
{
    memset(&F, 0, sizeof F);
    EMS_CHECK_INT(uv_loop_init(&F.loop), ==, 0);
    uv_timer_init(&F.loop, &F.async_timer);
    F.certs = certs;
    EMS_CHECK_INT(ems_tls_server_config_new(net_path(F.certs, "chain.crt"),
                                            net_path(F.certs, "server.key"), &F.stls),
                  ==, 0);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(F.certs, "ca.crt"), &F.ctls), ==, 0);
    ems_ws_options_default(&F.sopts);
    ems_ws_options_default(&F.copts);
    F.echo = 1;
    ems_server_options_t o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.tls = tls ? F.stls : NULL;
    EMS_CHECK_INT(ems_server_start(&F.loop, &o, handler, NULL, &F.srv), ==, 0);
    F.port = ems_server_port(F.srv);
    EMS_CHECK_INT(F.port, >, 0);
}

static void fx_on_stopped(void *arg)
{
    (void)arg;
    F.stopped = 1;
}

static void fx_end(void)
{
    uv_close((uv_handle_t *)&F.async_timer, NULL);
    ems_server_stop(F.srv, fx_on_stopped, NULL);
    EMS_CHECK(net_run_until(&F.loop, &F.stopped, 5000));
    ems_tls_config_unref(F.stls);
    ems_tls_config_unref(F.ctls);
    net_loop_finish(&F.loop);
}

static int fx_connect_ex(peer_t *p, int tls, ems_tls_config_t *ctls, const char *tls_hostname,
                         const char *path)
{
    char url[128];
    snprintf(url, sizeof url, "%s://localhost:%u%s", tls ? "wss" : "ws", (unsigned)F.port, path);
    ems_wsclient_options_t o;
    memset(&o, 0, sizeof o);
    o.tls = ctls;
    o.tls_hostname = tls_hostname;
    o.extra_headers = "Authorization: Bearer t0ken\r\n";
    o.ws = &F.copts;
    return ems_wsclient_connect(&F.loop, url, &o, &c_cbs, p, &p->ws);
}

static void fx_connect(peer_t *p, int tls)
{
    EMS_CHECK_INT(fx_connect_ex(p, tls, F.ctls, NULL, "/ws/test"), ==, 0);
}

static void run_until(volatile int *flag, unsigned ms, const char *what)
{
    if (!net_run_until(&F.loop, flag, ms))
        EMS_FAIL("timed out waiting for %s", what);
}

/* ------------------------------------------------------------ echo */

static void echo_test(int tls)
{
    fx_start(tls);
    peer_t *c = &F.c[0];
    fx_connect(c, tls);
    run_until(&c->open, 5000, "client open");
    EMS_CHECK(ems_ws_is_open(c->ws));
    EMS_CHECK_INT(ems_conn_is_tls(ems_ws_conn(c->ws)), ==, tls);
    EMS_CHECK_STR(F.last_auth, "Bearer t0ken");
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "hello", 5), ==, 0);
    run_until(&c->msgs, 5000, "echo");
    EMS_CHECK_STR(c->last, "hello");
    /* a large message (several TLS records, 64-bit length) and an empty one */
    static char big[60000];
    memset(big, 'q', sizeof big);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, big, sizeof big), ==, 0);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "", 0), ==, 0);
    while (c->msgs < 3 && !c->closed)
        uv_run(&F.loop, UV_RUN_ONCE);
    EMS_CHECK_INT(c->msgs, ==, 3);
    EMS_CHECK_INT(c->bytes, ==, 5 + sizeof big);
    EMS_CHECK_INT(c->last_len, ==, 0);
    ems_ws_stats_t st;
    ems_ws_stats(c->ws, &st);
    EMS_CHECK_INT(st.msgs_in, ==, 3);
    EMS_CHECK_INT(st.msgs_out, ==, 3);
    EMS_CHECK_INT(st.bytes_out, >, sizeof big);
    char peer[64];
    EMS_CHECK_INT(ems_conn_peer(ems_ws_conn(c->ws), peer, sizeof peer), ==, 0);
    EMS_CHECK(strstr(peer, ":") != NULL);
    /* a normal close from the client: both sides see code 1000, status 0 */
    ems_ws_close(c->ws, 1000, "bye");
    run_until(&c->closed, 5000, "client close");
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(c->info.status, ==, 0);
    EMS_CHECK_INT(c->info.code_sent, ==, 1000);
    EMS_CHECK_INT(c->info.code_received, ==, 1000);
    EMS_CHECK_INT(F.s[0].info.status, ==, 0);
    EMS_CHECK_INT(F.s[0].info.code_received, ==, 1000);
    EMS_CHECK_INT(F.s[0].msgs, ==, 3);
    fx_end();
}

static void test_echo_plain(void)
{
    echo_test(0);
}

static void test_echo_tls(void)
{
    echo_test(1);
}

/* ------------------------------------------------------------ TLS refusals */

static void test_wrong_ca_refused(void)
{
    fx_start(1);
    ems_tls_config_t *other;
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(F.certs, "other-ca.crt"), &other), ==, 0);
    peer_t *c = &F.c[0];
    EMS_CHECK_INT(fx_connect_ex(c, 1, other, NULL, "/ws/test"), ==, 0);
    ems_tls_config_unref(other); /* the connection holds its own reference */
    run_until(&c->closed, 5000, "client failure");
    EMS_CHECK(!c->open);
    EMS_CHECK_INT(c->info.status, ==, EMS_ETLS);
    fprintf(stderr, "# detail: %s\n", c->detail);
    EMS_CHECK(strstr(c->detail, "not correctly signed by the trusted CA"));
    EMS_CHECK_INT(F.handler_calls, ==, 0);
    fx_end();
}

static void test_hostname_mismatch_refused(void)
{
    fx_start(1);
    peer_t *c = &F.c[0];
    EMS_CHECK_INT(fx_connect_ex(c, 1, F.ctls, "gateway.example.com", "/ws/test"), ==, 0);
    run_until(&c->closed, 5000, "client failure");
    EMS_CHECK(!c->open);
    EMS_CHECK_INT(c->info.status, ==, EMS_ETLS);
    fprintf(stderr, "# detail: %s\n", c->detail);
    EMS_CHECK(strstr(c->detail, "does not match"));
    EMS_CHECK_INT(F.handler_calls, ==, 0);
    fx_end();
}

static void test_wss_without_tls_config_is_einval(void)
{
    fx_start(1);
    peer_t *c = &F.c[0];
    EMS_CHECK_INT(fx_connect_ex(c, 1, NULL, NULL, "/ws/test"), ==, EMS_EINVAL);
    EMS_CHECK(c->ws == NULL);
    fx_end();
}

/* ------------------------------------------------------------ protocol violations */

static void test_oversized_is_1009(void)
{
    fx_start(0);
    F.sopts.max_message = 1000;
    peer_t *c = &F.c[0];
    fx_connect(c, 0);
    run_until(&c->open, 5000, "open");
    char buf[2000];
    memset(buf, 'x', sizeof buf);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, buf, 1000), ==, 0); /* at the limit: fine */
    run_until(&c->msgs, 5000, "echo");
    EMS_CHECK_INT(ems_ws_send_text(c->ws, buf, 1001), ==, 0);
    run_until(&c->closed, 5000, "close");
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(c->info.code_received, ==, 1009);
    EMS_CHECK_INT(F.s[0].info.code_sent, ==, 1009);
    EMS_CHECK_INT(F.s[0].info.status, ==, EMS_EMSGSIZE);
    EMS_CHECK_INT(F.s[0].msgs, ==, 1);
    fx_end();
}

static void test_client_limit_is_1009_too(void)
{
    fx_start(0);
    F.copts.max_message = 100;
    peer_t *c = &F.c[0];
    fx_connect(c, 0);
    run_until(&c->open, 5000, "open");
    char buf[200];
    memset(buf, 'x', sizeof buf);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, buf, sizeof buf), ==, 0); /* echoed back: too big */
    run_until(&c->closed, 5000, "close");
    EMS_CHECK_INT(c->info.code_sent, ==, 1009);
    EMS_CHECK_INT(c->info.status, ==, EMS_EMSGSIZE);
    EMS_CHECK_INT(c->msgs, ==, 0);
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(F.s[0].info.code_received, ==, 1009);
    fx_end();
}

static void test_invalid_utf8_is_1007(void)
{
    fx_start(1);
    peer_t *c = &F.c[0];
    fx_connect(c, 1);
    run_until(&c->open, 5000, "open");
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "ok \xc3\xa9", 5), ==, 0); /* valid "é" */
    run_until(&c->msgs, 5000, "echo");
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "bad \xff\xfe", 6), ==, 0);
    run_until(&c->closed, 5000, "close");
    EMS_CHECK_INT(c->info.code_received, ==, 1007);
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(F.s[0].info.code_sent, ==, 1007);
    EMS_CHECK_INT(F.s[0].info.status, ==, EMS_EPROTO);
    EMS_CHECK_INT(F.s[0].msgs, ==, 1);
    fx_end();
}

static void test_binary_is_1008_unless_allowed(void)
{
    for (int allow = 0; allow < 2; allow++) {
        fx_start(0);
        F.sopts.allow_binary = allow;
        F.copts.allow_binary = true;
        peer_t *c = &F.c[0];
        fx_connect(c, 0);
        run_until(&c->open, 5000, "open");
        ems_ws_msg_t *m = ems_ws_msg_new("\x00\x01\x02", 3, true);
        EMS_CHECK_INT(ems_ws_send_msg(c->ws, m), ==, 0);
        ems_ws_msg_unref(m);
        if (allow) {
            run_until(&c->msgs, 5000, "binary echo");
            EMS_CHECK(c->last_binary);
            EMS_CHECK_INT(c->last_len, ==, 3);
            EMS_CHECK(memcmp(c->last, "\x00\x01\x02", 3) == 0);
            ems_ws_close(c->ws, 1000, NULL);
        }
        run_until(&c->closed, 5000, "close");
        if (!allow) {
            EMS_CHECK_INT(c->info.code_received, ==, 1008);
            EMS_CHECK_INT(F.s[0].msgs, ==, 0);
        }
        run_until(&F.s[0].closed, 5000, "server close");
        fx_end();
    }
}

/* ------------------------------------------------------------ raw peers */

typedef struct raw {
    ems_conn_t *c;
    ems_buf_t in;
    ems_buf_t greeting; /* sent on open */
    int open, closed, close_status;
    int server_role; /* answer an upgrade request, then stay silent */
    int answered;
} raw_t;

static void raw_on_open(ems_conn_t *c)
{
    raw_t *r = ems_conn_user(c);
    r->open = 1;
    if (ems_buf_len(&r->greeting))
        EMS_CHECK_INT(ems_conn_write(c, ems_buf_data(&r->greeting), ems_buf_len(&r->greeting)), ==,
                      0);
}

static void raw_on_read(ems_conn_t *c, const char *data, size_t len)
{
    raw_t *r = ems_conn_user(c);
    EMS_CHECK_INT(ems_buf_append(&r->in, data, len), ==, 0);
    if (r->server_role && !r->answered) {
        ems_http_parser_t *p = ems_http_parser_new(EMS_HTTP_REQUEST, NULL);
        size_t used;
        if (ems_http_parser_feed(p, ems_buf_data(&r->in), ems_buf_len(&r->in), &used) == 1) {
            ems_buf_t out;
            ems_buf_init(&out, 4096);
            EMS_CHECK_INT(ems_http_ws_response_write(&out, ems_http_parser_msg(p), NULL), ==, 0);
            EMS_CHECK_INT(ems_conn_write(c, ems_buf_data(&out), ems_buf_len(&out)), ==, 0);
            ems_buf_free(&out);
            r->answered = 1;
        }
        ems_http_parser_free(p);
    }
}

static void raw_on_close(ems_conn_t *c, int status)
{
    raw_t *r = ems_conn_user(c);
    r->closed = 1;
    r->close_status = status;
    r->c = NULL;
}

static void raw_free(raw_t *r)
{
    ems_buf_free(&r->in);
    ems_buf_free(&r->greeting);
}

static const ems_conn_callbacks_t raw_cbs = {raw_on_open, raw_on_read, NULL, NULL, raw_on_close};

static void raw_init(raw_t *r)
{
    memset(r, 0, sizeof *r);
    ems_buf_init(&r->in, 1 << 22);
    ems_buf_init(&r->greeting, 1 << 20);
}

static void raw_connect(raw_t *r, uint16_t port)
{
    EMS_CHECK_INT(
        ems_conn_connect(&F.loop, "127.0.0.1", port, NULL, NULL, NULL, &raw_cbs, r, &r->c), ==, 0);
}

static void raw_upgrade_request(ems_buf_t *b)
{
    char key[25];
    EMS_CHECK_INT(ems_http_ws_request_write(b, "localhost", "/ws/raw", NULL, key), ==, 0);
}

/* A masked client frame. */
static void raw_frame(ems_buf_t *b, int fin, int opcode, const char *payload, size_t len)
{
    unsigned char h[14];
    size_t n = 0;
    const unsigned char mask[4] = {0x11, 0x22, 0x33, 0x44};
    h[n++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        h[n++] = (unsigned char)(0x80 | len);
    } else {
        h[n++] = 0x80 | 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    }
    memcpy(h + n, mask, 4);
    n += 4;
    ems_buf_append(b, h, n);
    for (size_t i = 0; i < len; i++) {
        unsigned char x = (unsigned char)payload[i] ^ mask[i & 3];
        ems_buf_append(b, &x, 1);
    }
}

typedef struct {
    int opcode;
    char payload[128];
    size_t len;
} rframe_t;

/* Parses the server's (unmasked) frames after the 101 response. Returns
 * the number of complete frames. */
static int raw_frames(raw_t *r, rframe_t *out, int max)
{
    const char *d = ems_buf_data(&r->in);
    size_t len = ems_buf_len(&r->in);
    const char *end = memmem(d, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    EMS_CHECK(strncmp(d, "HTTP/1.1 101", 12) == 0);
    size_t off = (size_t)(end - d) + 4;
    int n = 0;
    while (n < max && off + 2 <= len) {
        const unsigned char *p = (const unsigned char *)d + off;
        size_t plen = p[1] & 0x7f, hl = 2;
        EMS_CHECK((p[1] & 0x80) == 0); /* server frames are unmasked */
        if (plen == 126) {
            if (off + 4 > len)
                break;
            plen = ((size_t)p[2] << 8) | p[3];
            hl = 4;
        }
        if (off + hl + plen > len)
            break;
        out[n].opcode = p[0] & 0x0f;
        out[n].len = plen < sizeof out[n].payload ? plen : sizeof out[n].payload - 1;
        memcpy(out[n].payload, p + hl, out[n].len);
        out[n].payload[out[n].len] = '\0';
        n++;
        off += hl + plen;
    }
    return n;
}

static void test_fragments_reassembled_and_early_frames(void)
{
    fx_start(0);
    raw_t r;
    raw_init(&r);
    /* upgrade request and frames in one write: the frames reach the server
     * in the same read as the request */
    raw_upgrade_request(&r.greeting);
    raw_frame(&r.greeting, 0, 0x1, "H\xc3", 2); /* "é" split across fragments */
    raw_frame(&r.greeting, 1, 0x9, "p1", 2);    /* a ping between fragments */
    raw_frame(&r.greeting, 0, 0x0, "\xa9llo, ", 6);
    raw_frame(&r.greeting, 1, 0x0, "world", 5);
    raw_frame(&r.greeting, 1, 0x1, "second", 6);
    raw_connect(&r, F.port);
    rframe_t f[8];
    int n = 0;
    for (int i = 0; i < 500 && n < 3; i++) {
        uv_run(&F.loop, UV_RUN_ONCE);
        n = raw_frames(&r, f, 8);
    }
    EMS_CHECK_INT(n, ==, 3);
    EMS_CHECK_INT(f[0].opcode, ==, 0xA); /* pong with the ping's payload */
    EMS_CHECK_STR(f[0].payload, "p1");
    EMS_CHECK_INT(f[1].opcode, ==, 0x1);
    EMS_CHECK_STR(f[1].payload, "H\xc3\xa9llo, world");
    EMS_CHECK_STR(f[2].payload, "second");
    EMS_CHECK_INT(F.s[0].msgs, ==, 2);
    /* an unmasked frame from a client is a protocol error: 1002 */
    ems_buf_t bad;
    ems_buf_init(&bad, 64);
    ems_buf_append(&bad, "\x81\x02hi", 4);
    EMS_CHECK_INT(ems_conn_write(r.c, ems_buf_data(&bad), ems_buf_len(&bad)), ==, 0);
    ems_buf_free(&bad);
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(F.s[0].info.code_sent, ==, 1002);
    run_until(&r.closed, 5000, "raw close");
    raw_free(&r);
    fx_end();
}

/* Runs the loop until the server side has received `bytes` bytes. */
static void run_until_server_bytes(uint64_t bytes)
{
    ems_ws_stats_t st = {0};
    for (int i = 0; i < 2000; i++) {
        ems_ws_stats(F.s[0].ws, &st);
        if (st.bytes_in >= bytes)
            return;
        uv_run(&F.loop, UV_RUN_ONCE);
    }
    EMS_FAIL("server saw %llu bytes, waited for %llu", (unsigned long long)st.bytes_in,
             (unsigned long long)bytes);
}

static void raw_send(raw_t *r, const void *p, size_t n)
{
    EMS_CHECK_INT(ems_conn_write(r->c, p, n), ==, 0);
}

/* An idle server connection holds no wslay context (8.8 KB): it is made
 * for bytes that arrive and freed at the next frame boundary, kept only
 * while a frame or a fragmented message is unfinished. */
static void test_reader_released_between_messages(void)
{
    fx_start(0);
    raw_t r;
    raw_init(&r);
    raw_upgrade_request(&r.greeting);
    raw_connect(&r, F.port);
    for (int i = 0; i < 500 && !(F.ns == 1 && memmem(ems_buf_data(&r.in), ems_buf_len(&r.in),
                                                      "\r\n\r\n", 4));
         i++)
        uv_run(&F.loop, UV_RUN_ONCE);
    EMS_CHECK_INT(F.ns, ==, 1);
    ems_ws_t *ws = F.s[0].ws;
    ems_ws_stats_t st;
    ems_ws_stats(ws, &st);
    EMS_CHECK(!st.reader_held); /* upgraded, nothing received yet */
    uint64_t sent = st.bytes_in;

    ems_buf_t b;
    ems_buf_init(&b, 4096);
    raw_frame(&b, 1, 0x1, "one", 3);
    raw_send(&r, ems_buf_data(&b), ems_buf_len(&b));
    sent += ems_buf_len(&b);
    run_until(&F.s[0].msgs, 5000, "first message");
    ems_ws_stats(ws, &st);
    EMS_CHECK(!st.reader_held);
    EMS_CHECK_INT(st.readers_made, ==, 1);

    /* a frame cut in the middle of its header, then of its payload */
    ems_buf_clear(&b);
    raw_frame(&b, 1, 0x1, "second message", 14);
    const char *d = ems_buf_data(&b);
    size_t cuts[] = {1, 9, ems_buf_len(&b)};
    size_t at = 0;
    for (int k = 0; k < 3; k++) {
        raw_send(&r, d + at, cuts[k] - at);
        sent += cuts[k] - at;
        at = cuts[k];
        run_until_server_bytes(sent);
        ems_ws_stats(ws, &st);
        EMS_CHECK_INT(st.reader_held, ==, k < 2);
    }
    EMS_CHECK_INT(F.s[0].msgs, ==, 2);
    EMS_CHECK_STR(F.s[0].last, "second message");

    /* a fragmented message: held until its last fragment */
    ems_buf_clear(&b);
    raw_frame(&b, 0, 0x1, "frag", 4);
    raw_send(&r, ems_buf_data(&b), ems_buf_len(&b));
    sent += ems_buf_len(&b);
    run_until_server_bytes(sent);
    ems_ws_stats(ws, &st);
    EMS_CHECK(st.reader_held);
    ems_buf_clear(&b);
    raw_frame(&b, 1, 0x9, "pp", 2); /* a ping in between changes nothing */
    raw_frame(&b, 1, 0x0, "ment", 4);
    raw_send(&r, ems_buf_data(&b), ems_buf_len(&b));
    sent += ems_buf_len(&b);
    run_until_server_bytes(sent);
    for (int i = 0; i < 50 && F.s[0].msgs < 3; i++)
        uv_run(&F.loop, UV_RUN_ONCE);
    EMS_CHECK_INT(F.s[0].msgs, ==, 3);
    EMS_CHECK_STR(F.s[0].last, "fragment");
    ems_ws_stats(ws, &st);
    EMS_CHECK(!st.reader_held);

    /* a 300-byte message (16-bit length) across two reads */
    char big[300];
    memset(big, 'x', sizeof big);
    ems_buf_clear(&b);
    raw_frame(&b, 1, 0x1, big, sizeof big);
    raw_send(&r, ems_buf_data(&b), 3);
    sent += 3;
    run_until_server_bytes(sent);
    ems_ws_stats(ws, &st);
    EMS_CHECK(st.reader_held);
    raw_send(&r, ems_buf_data(&b) + 3, ems_buf_len(&b) - 3);
    sent += ems_buf_len(&b) - 3;
    run_until_server_bytes(sent);
    for (int i = 0; i < 50 && F.s[0].msgs < 4; i++)
        uv_run(&F.loop, UV_RUN_ONCE);
    EMS_CHECK_INT(F.s[0].msgs, ==, 4);
    EMS_CHECK_INT(F.s[0].last_len, ==, 255); /* the fixture keeps 255 bytes */
    ems_ws_stats(ws, &st);
    EMS_CHECK(!st.reader_held);

    /* the pong went out; a close from the client is answered as usual */
    rframe_t f[8];
    int nf = raw_frames(&r, f, 8), pongs = 0;
    for (int i = 0; i < nf; i++)
        pongs += f[i].opcode == 0xA && !strcmp(f[i].payload, "pp");
    EMS_CHECK_INT(pongs, ==, 1);
    ems_buf_clear(&b);
    raw_frame(&b, 1, 0x8, "\x03\xe8", 2);
    raw_send(&r, ems_buf_data(&b), ems_buf_len(&b));
    ems_buf_free(&b);
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(F.s[0].info.status, ==, 0);
    EMS_CHECK_INT(F.s[0].info.code_received, ==, 1000);
    run_until(&r.closed, 5000, "raw close");
    raw_free(&r);
    fx_end();
}

static void test_server_drop_noticed(void)
{
    fx_start(1);
    F.abort_in_msg = 1;
    peer_t *c = &F.c[0];
    fx_connect(c, 1);
    run_until(&c->open, 5000, "open");
    uint64_t t0 = uv_now(&F.loop);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "x", 1), ==, 0);
    run_until(&c->closed, 5000, "client notices");
    EMS_CHECK_INT(uv_now(&F.loop) - t0, <, 1000);
    EMS_CHECK_INT(c->info.status, ==, EMS_ECLOSED);
    EMS_CHECK_INT(c->info.code_received, ==, 0);
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(F.s_close_calls, ==, 1);
    EMS_CHECK_INT(F.s[0].msgs, ==, 1);
    fx_end();
}

static void test_connection_refused(void)
{
    fx_start(0);
    uint16_t port = F.port;
    ems_server_stop(F.srv, fx_on_stopped, NULL);
    run_until(&F.stopped, 5000, "stop");
    F.port = port;
    peer_t *c = &F.c[0];
    fx_connect(c, 0);
    run_until(&c->closed, 5000, "refusal");
    EMS_CHECK_INT(c->info.status, ==, UV_ECONNREFUSED);
    fprintf(stderr, "# detail: %s\n", c->detail);
    uv_close((uv_handle_t *)&F.async_timer, NULL);
    ems_tls_config_unref(F.stls);
    ems_tls_config_unref(F.ctls);
    net_loop_finish(&F.loop);
}

/* ------------------------------------------------------------ keepalive */

static void raw_listen_cb(uv_stream_t *l, int status)
{
    raw_t *r = l->data;
    EMS_CHECK_INT(status, ==, 0);
    EMS_CHECK_INT(ems_conn_accept(l, NULL, NULL, &raw_cbs, r, &r->c), ==, 0);
}

static void test_idle_timeout_detects_silent_server(void)
{
    fx_start(0);
    /* a server that answers the upgrade and then never says a word, not
     * even a pong */
    uv_tcp_t l;
    raw_t r;
    raw_init(&r);
    r.server_role = 1;
    uv_tcp_init(&F.loop, &l);
    l.data = &r;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    EMS_CHECK_INT(uv_tcp_bind(&l, (struct sockaddr *)&a, 0), ==, 0);
    EMS_CHECK_INT(uv_listen((uv_stream_t *)&l, 8, raw_listen_cb), ==, 0);
    int alen = sizeof a;
    uv_tcp_getsockname(&l, (struct sockaddr *)&a, &alen);
    uint16_t port = F.port;
    F.port = ntohs(a.sin_port);
    F.copts.ping_interval_ms = 100;
    F.copts.idle_timeout_ms = 400;
    peer_t *c = &F.c[0];
    fx_connect(c, 0);
    run_until(&c->open, 5000, "open");
    uint64_t t0 = uv_now(&F.loop);
    run_until(&c->closed, 5000, "idle timeout");
    uint64_t dt = uv_now(&F.loop) - t0;
    fprintf(stderr, "# noticed after %llu ms: %s\n", (unsigned long long)dt, c->detail);
    EMS_CHECK_INT(dt, >=, 390);
    EMS_CHECK_INT(dt, <, 1500);
    EMS_CHECK_INT(c->info.status, ==, EMS_ETIMEDOUT);
    /* the silent server got our pings */
    EMS_CHECK(memmem(ems_buf_data(&r.in), ems_buf_len(&r.in), "\x89\x80", 2) != NULL);
    run_until(&r.closed, 5000, "raw close");
    uv_close((uv_handle_t *)&l, NULL);
    F.port = port;
    raw_free(&r);
    fx_end();
}

static void test_open_timeout(void)
{
    fx_start(0);
    /* a server that accepts TCP and never answers the upgrade */
    uv_tcp_t l;
    raw_t r;
    raw_init(&r);
    uv_tcp_init(&F.loop, &l);
    l.data = &r;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    EMS_CHECK_INT(uv_tcp_bind(&l, (struct sockaddr *)&a, 0), ==, 0);
    EMS_CHECK_INT(uv_listen((uv_stream_t *)&l, 8, raw_listen_cb), ==, 0);
    int alen = sizeof a;
    uv_tcp_getsockname(&l, (struct sockaddr *)&a, &alen);
    uint16_t port = F.port;
    F.port = ntohs(a.sin_port);
    F.copts.open_timeout_ms = 300;
    peer_t *c = &F.c[0];
    uv_update_time(&F.loop);
    uint64_t t0 = uv_now(&F.loop);
    fx_connect(c, 0);
    run_until(&c->closed, 5000, "open timeout");
    uint64_t dt = uv_now(&F.loop) - t0;
    EMS_CHECK_INT(dt, >=, 290);
    EMS_CHECK_INT(dt, <, 1500);
    EMS_CHECK(!c->open);
    EMS_CHECK_INT(c->info.status, ==, EMS_ETIMEDOUT);
    run_until(&r.closed, 5000, "raw close");
    /* the request did reach the server */
    EMS_CHECK(memmem(ems_buf_data(&r.in), ems_buf_len(&r.in), "Upgrade: websocket", 18));
    uv_close((uv_handle_t *)&l, NULL);
    raw_free(&r);
    F.port = port;
    fx_end();
}

static void test_idle_timeout_detects_silent_client(void)
{
    fx_start(0);
    F.sopts.ping_interval_ms = 100;
    F.sopts.idle_timeout_ms = 300;
    raw_t r;
    raw_init(&r);
    raw_upgrade_request(&r.greeting);
    raw_connect(&r, F.port);
    run_until(&F.ns, 5000, "upgrade");
    uint64_t t0 = uv_now(&F.loop);
    run_until(&F.s[0].closed, 5000, "idle timeout");
    uint64_t dt = uv_now(&F.loop) - t0;
    EMS_CHECK_INT(dt, >=, 290);
    EMS_CHECK_INT(dt, <, 1500);
    EMS_CHECK_INT(F.s[0].info.status, ==, EMS_ETIMEDOUT);
    run_until(&r.closed, 5000, "raw close");
    raw_free(&r);
    fx_end();
}

static void stop_flag_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

static void test_pings_keep_a_quiet_link_alive(void)
{
    fx_start(1);
    F.sopts.ping_interval_ms = 50;
    F.sopts.idle_timeout_ms = 200;
    F.copts.ping_interval_ms = 50;
    F.copts.idle_timeout_ms = 200;
    peer_t *c = &F.c[0];
    fx_connect(c, 1);
    run_until(&c->open, 5000, "open");
    /* no messages for 1 s: five idle timeouts long */
    int done = 0;
    uv_timer_t t;
    uv_timer_init(&F.loop, &t);
    t.data = &done;
    uv_timer_start(&t, stop_flag_cb, 1000, 0);
    run_until(&done, 5000, "quiet second");
    uv_close((uv_handle_t *)&t, NULL);
    EMS_CHECK(!c->closed);
    EMS_CHECK(!F.s[0].closed);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "still here", 10), ==, 0);
    run_until(&c->msgs, 5000, "echo");
    ems_ws_close(c->ws, 1000, NULL);
    run_until(&c->closed, 5000, "close");
    run_until(&F.s[0].closed, 5000, "server close");
    fx_end();
}

/* ------------------------------------------------------------ backpressure */

typedef struct {
    ems_ws_t *ws;
    peer_t *reader; /* if set: keep at most 8 messages ahead of it */
    int sent, enospc, stop;
    size_t max_queued;
    char chunk[16384];
} flood_t;

static void flood_cb(uv_timer_t *t)
{
    flood_t *fl = t->data;
    if (fl->stop || (fl->reader && fl->sent - fl->reader->msgs >= 8))
        return;
    int rc = ems_ws_send_text(fl->ws, fl->chunk, sizeof fl->chunk);
    if (rc == EMS_ENOSPC) {
        fl->enospc = 1;
        fl->stop = 1;
        return;
    }
    EMS_CHECK_INT(rc, ==, 0);
    fl->sent++;
    if (ems_ws_queued(fl->ws) > fl->max_queued)
        fl->max_queued = ems_ws_queued(fl->ws);
}

static void slow_reader_test(int reading)
{
    fx_start(1);
    F.sopts.max_send_queue = 256 * 1024;
    peer_t *c = &F.c[0];
    fx_connect(c, 1);
    run_until(&c->open, 5000, "open");
    run_until(&F.ns, 5000, "server side");
    if (!reading)
        ems_conn_read_stop(ems_ws_conn(c->ws));
    static flood_t fl;
    memset(&fl, 0, sizeof fl);
    memset(fl.chunk, 'f', sizeof fl.chunk);
    fl.ws = F.s[0].ws;
    fl.reader = reading ? c : NULL;
    uv_timer_t t;
    uv_timer_init(&F.loop, &t);
    t.data = &fl;
    uv_timer_start(&t, flood_cb, 1, 1);
    if (reading) {
        /* a reader that keeps up (at most 8 messages behind, so scheduling
         * noise cannot fake a slow reader): 400 messages, 6.5 MB, and the
         * queue never overflows */
        while (fl.sent < 400 && !fl.enospc && !c->closed)
            uv_run(&F.loop, UV_RUN_ONCE);
        fl.stop = 1;
        EMS_CHECK(!fl.enospc);
        while (c->msgs < fl.sent && !c->closed)
            uv_run(&F.loop, UV_RUN_ONCE);
        EMS_CHECK_INT(c->msgs, ==, 400);
    } else {
        run_until(&fl.enospc, 20000, "ENOSPC");
        fprintf(stderr, "# ENOSPC after %d messages (%d KiB), queue peak %zu\n", fl.sent,
                fl.sent * 16, fl.max_queued);
        EMS_CHECK_INT(fl.max_queued, <=, 256 * 1024);
        EMS_CHECK_INT(fl.max_queued, >, 200 * 1024);
        EMS_CHECK_INT(c->msgs, ==, 0);
        /* the owner drops the slow peer; once it reads again it gets
         * everything queued, then the close */
        ems_ws_close(F.s[0].ws, 4009, "send queue overflow");
        ems_conn_read_start(ems_ws_conn(c->ws));
    }
    uv_timer_stop(&t);
    uv_close((uv_handle_t *)&t, NULL);
    if (reading)
        ems_ws_close(c->ws, 1000, NULL);
    run_until(&c->closed, 10000, "close");
    run_until(&F.s[0].closed, 10000, "server close");
    if (!reading) {
        EMS_CHECK_INT(c->info.code_received, ==, 4009);
        EMS_CHECK_INT(c->msgs, ==, fl.sent);
        EMS_CHECK_INT(F.s[0].info.status, ==, 0);
    }
    fx_end();
}

static void test_slow_reader_hits_enospc(void)
{
    slow_reader_test(0);
}

static void test_fast_reader_never_hits_enospc(void)
{
    slow_reader_test(1);
}

/* ------------------------------------------------------------ closing in callbacks */

static void test_close_inside_on_message(void)
{
    fx_start(1);
    F.close_in_msg = 1;
    peer_t *c = &F.c[0];
    fx_connect(c, 1);
    /* queued before the upgrade completes: sent right after it */
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "one", 3), ==, 0);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "two", 3), ==, 0);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "three", 5), ==, 0);
    run_until(&c->closed, 5000, "close");
    run_until(&F.s[0].closed, 5000, "server close");
    EMS_CHECK_INT(F.s[0].msgs, ==, 1); /* the rest arrived after the close */
    EMS_CHECK_INT(c->info.code_received, ==, 4001);
    EMS_CHECK_INT(c->info.status, ==, 0);
    EMS_CHECK_INT(F.s[0].info.status, ==, 0);
    EMS_CHECK_INT(F.s[0].info.code_sent, ==, 4001);
    EMS_CHECK_INT(F.s_close_calls, ==, 1);
    fx_end();
}

static void test_client_closes_inside_on_message(void)
{
    fx_start(0);
    peer_t *c = &F.c[0];
    c->close_in_msg = 1;
    fx_connect(c, 0);
    run_until(&c->open, 5000, "open");
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "a", 1), ==, 0);
    EMS_CHECK_INT(ems_ws_send_text(c->ws, "b", 1), ==, 0);
    run_until(&c->closed, 5000, "close");
    EMS_CHECK_INT(c->msgs, ==, 1);
    EMS_CHECK_INT(c->info.code_sent, ==, 1000);
    EMS_CHECK_INT(c->info.status, ==, 0);
    run_until(&F.s[0].closed, 5000, "server close");
    fx_end();
}

static void test_abort_while_connecting(void)
{
    fx_start(1);
    peer_t *c = &F.c[0];
    fx_connect(c, 1);
    ems_ws_close(c->ws, 1000, NULL); /* give up at once: still resolving */
    run_until(&c->closed, 5000, "close");
    EMS_CHECK(!c->open);
    EMS_CHECK_INT(c->info.status, ==, UV_ECANCELED);
    /* and in the middle of the TLS handshake */
    peer_t *d = &F.c[1];
    fx_connect(d, 1);
    while (F.srv && ems_server_connections(F.srv) == 0)
        uv_run(&F.loop, UV_RUN_ONCE);
    ems_ws_abort(d->ws, EMS_ETIMEDOUT);
    run_until(&d->closed, 5000, "close");
    EMS_CHECK_INT(d->info.status, ==, EMS_ETIMEDOUT);
    fx_end();
}

/* ------------------------------------------------------------ upgrade refusals */

static void test_upgrade_refused_with_401(void)
{
    fx_start(1);
    F.refuse = 401;
    peer_t *c = &F.c[0];
    fx_connect(c, 1);
    run_until(&c->closed, 5000, "refusal");
    EMS_CHECK(!c->open);
    EMS_CHECK_INT(c->info.status, ==, EMS_EPROTO);
    EMS_CHECK_INT(c->info.http_status, ==, 401);
    EMS_CHECK(strstr(c->detail, "401"));
    fx_end();
}

/* ------------------------------------------------------------ fan-out */

static void test_fanout_one_message_many_peers(void)
{
    fx_start(1);
    F.echo = 0;
    enum { N = 20 };
    for (int i = 0; i < N; i++)
        fx_connect(&F.c[i], 1);
    while (F.ns < N)
        uv_run(&F.loop, UV_RUN_ONCE);
    for (int i = 0; i < N; i++)
        run_until(&F.c[i].open, 5000, "open");
    const char text[] = "{\"type\":\"telemetry\",\"packet\":{}}";
    ems_ws_msg_t *m = ems_ws_msg_new(text, sizeof text - 1, false);
    size_t len;
    EMS_CHECK_STR(ems_ws_msg_data(m, &len), text);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < N; i++)
            EMS_CHECK_INT(ems_ws_send_msg(F.s[i].ws, m), ==, 0);
    ems_ws_msg_unref(m); /* the queues hold their own references */
    for (int i = 0; i < N; i++) {
        while (F.c[i].msgs < 3)
            uv_run(&F.loop, UV_RUN_ONCE);
        EMS_CHECK_STR(F.c[i].last, text);
    }
    EMS_CHECK_INT(ems_server_connections(F.srv), ==, N);
    for (int i = 0; i < N; i++)
        ems_ws_close(F.s[i].ws, 1001, "going away");
    for (int i = 0; i < N; i++) {
        run_until(&F.c[i].closed, 5000, "close");
        EMS_CHECK_INT(F.c[i].info.code_received, ==, 1001);
    }
    fx_end();
}

/* ------------------------------------------------------------ HTTP over sockets */

static void test_http_keepalive_pipelining_async(void)
{
    fx_start(0);
    raw_t r;
    raw_init(&r);
    ems_buf_append_str(&r.greeting, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                                    "GET /async HTTP/1.1\r\nHost: x\r\n\r\n"
                                    "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    raw_connect(&r, F.port);
    const char *want_end = "HTTP/1.1 404";
    for (int i = 0; i < 1000; i++) {
        uv_run(&F.loop, UV_RUN_ONCE);
        if (memmem(ems_buf_data(&r.in), ems_buf_len(&r.in), want_end, strlen(want_end)))
            break;
    }
    ems_buf_append(&r.in, "", 1);
    const char *s = ems_buf_data(&r.in);
    const char *a = strstr(s, "HTTP/1.1 200 OK"), *b = strstr(s, "later"),
               *c = strstr(s, "HTTP/1.1 404");
    EMS_CHECK(a && b && c && a < b && b < c); /* in order, one connection */
    EMS_CHECK(strstr(s, "X-Test: 1\r\n"));
    EMS_CHECK(!r.closed);
    EMS_CHECK_INT(F.handler_calls, ==, 3);
    /* the keep-alive connection is closed when idle (default 30 s is too
     * long for a test: close it ourselves) */
    ems_conn_close(r.c, 1000);
    run_until(&r.closed, 5000, "close");
    raw_free(&r);
    fx_end();
}

static void test_upgrade_pipelined_behind_async_request(void)
{
    fx_start(0);
    raw_t r;
    raw_init(&r);
    /* the upgrade request waits in the server's buffer until the async
     * answer is out, then is parsed from a timer: the HTTP state is handed
     * to the WebSocket layer from there */
    ems_buf_append_str(&r.greeting, "GET /async HTTP/1.1\r\nHost: x\r\n\r\n");
    raw_upgrade_request(&r.greeting);
    raw_frame(&r.greeting, 1, 0x1, "after", 5);
    raw_connect(&r, F.port);
    while (!F.s[0].msgs && !r.closed)
        uv_run(&F.loop, UV_RUN_ONCE);
    EMS_CHECK_STR(F.s[0].last, "after");
    ems_buf_append(&r.in, "", 1);
    const char *a = strstr(ems_buf_data(&r.in), "later");
    const char *b = strstr(ems_buf_data(&r.in), "HTTP/1.1 101");
    EMS_CHECK(a && b && a < b);
    ems_ws_close(F.s[0].ws, 1000, NULL);
    run_until(&F.s[0].closed, 5000, "server close");
    run_until(&r.closed, 5000, "raw close");
    raw_free(&r);
    fx_end();
}

static void test_http_idle_keepalive_closed(void)
{
    fx_start(0);
    uv_close((uv_handle_t *)&F.async_timer, NULL);
    ems_server_stop(F.srv, fx_on_stopped, NULL);
    run_until(&F.stopped, 5000, "stop");
    F.stopped = 0;
    uv_timer_init(&F.loop, &F.async_timer);
    ems_server_options_t o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.keepalive_timeout_ms = 200;
    EMS_CHECK_INT(ems_server_start(&F.loop, &o, handler, NULL, &F.srv), ==, 0);
    F.port = ems_server_port(F.srv);
    raw_t r;
    raw_init(&r);
    ems_buf_append_str(&r.greeting, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    raw_connect(&r, F.port);
    while (!memmem(ems_buf_data(&r.in), ems_buf_len(&r.in), "\r\n\r\nhi", 6))
        uv_run(&F.loop, UV_RUN_ONCE);
    uint64_t t0 = uv_now(&F.loop);
    EMS_CHECK(!r.closed);
    run_until(&r.closed, 5000, "idle close");
    uint64_t dt = uv_now(&F.loop) - t0;
    EMS_CHECK_INT(dt, >=, 150);
    EMS_CHECK_INT(dt, <, 1500);
    EMS_CHECK_INT(r.close_status, ==, EMS_ECLOSED);
    raw_free(&r);
    fx_end();
}

static char last_response[4096];

static void keep_on_close(ems_conn_t *c, int status)
{
    raw_t *r = ems_conn_user(c);
    size_t n = ems_buf_len(&r->in) < sizeof last_response - 1 ? ems_buf_len(&r->in)
                                                              : sizeof last_response - 1;
    memcpy(last_response, ems_buf_data(&r->in), n);
    last_response[n] = '\0';
    raw_on_close(c, status);
}

static void test_http_refusals_over_socket(void)
{
    fx_start(1);
    ems_conn_callbacks_t cbs = raw_cbs;
    cbs.on_close = keep_on_close;
    struct {
        const char *req, *want, *also;
    } cases[] = {
        {"GET /ws/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 400 ", "Sec-WebSocket-Key"},
        {"GET /ws/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
         "HTTP/1.1 426 ", "Sec-WebSocket-Version: 13\r\n"},
        {"GET /ws/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
         "HTTP/1.1 400 ", "Connection"},
        {"GET / HTTP/1.1\r\nHost h\r\n\r\n", "HTTP/1.1 400 ", "malformed"},
        {NULL, "HTTP/1.1 431 ", "8192 bytes"},
        {"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n", "HTTP/1.1 413 ",
         "65536 bytes"},
    };
    static char big[10000];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: %09000d\r\n\r\n", 0);
    cases[4].req = big;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        raw_t r;
        raw_init(&r);
        ems_buf_append_str(&r.greeting, cases[i].req);
        last_response[0] = '\0';
        EMS_CHECK_INT(ems_conn_connect(&F.loop, "127.0.0.1", F.port, F.ctls, "localhost", NULL,
                                       &cbs, &r, &r.c),
                      ==, 0);
        run_until(&r.closed, 5000, "refusal and close");
        raw_free(&r);
        if (strncmp(last_response, cases[i].want, strlen(cases[i].want)) != 0 ||
            !strstr(last_response, cases[i].also) || !strstr(last_response, "Connection: close"))
            EMS_FAIL("case %zu: got \"%.200s\"", i, last_response);
    }
    EMS_CHECK_INT(F.ns, ==, 0);
    ems_server_stats_t st;
    ems_server_stats(F.srv, &st);
    EMS_CHECK_INT(st.accepted, ==, 6);
    EMS_CHECK_INT(st.http_errors, ==, 3); /* malformed, 431, 413 */
    EMS_CHECK_INT(st.requests, ==, 3);    /* the bad upgrades reach the handler */
    EMS_CHECK_INT(st.upgrades, ==, 0);
    fx_end();
}

static void test_max_connections_and_handshake_deadline(void)
{
    fx_start(1);
    /* restart the server with small limits */
    uv_close((uv_handle_t *)&F.async_timer, NULL);
    ems_server_stop(F.srv, fx_on_stopped, NULL);
    run_until(&F.stopped, 5000, "stop");
    F.stopped = 0;
    uv_timer_init(&F.loop, &F.async_timer);
    ems_server_options_t o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.tls = F.stls;
    o.max_connections = 2;
    o.handshake_timeout_ms = 300;
    EMS_CHECK_INT(ems_server_start(&F.loop, &o, handler, NULL, &F.srv), ==, 0);
    F.port = ems_server_port(F.srv);
    /* two silent TCP clients that never start TLS */
    raw_t r[3];
    uv_update_time(&F.loop);
    uint64_t t0 = uv_now(&F.loop);
    for (int i = 0; i < 3; i++) {
        raw_init(&r[i]);
        raw_connect(&r[i], F.port);
        run_until(&r[i].open, 5000, "tcp open");
        while (ems_server_connections(F.srv) < (size_t)(i < 2 ? i + 1 : 2))
            uv_run(&F.loop, UV_RUN_ONCE);
    }
    /* the third is over the limit: closed at once, while the first two
     * still wait for their deadline */
    run_until(&r[2].closed, 5000, "third refused");
    EMS_CHECK_INT(r[2].close_status, ==, EMS_ECLOSED);
    EMS_CHECK(!r[0].closed && !r[1].closed);
    /* the first two are dropped at the handshake deadline */
    run_until(&r[0].closed, 5000, "deadline");
    run_until(&r[1].closed, 5000, "deadline");
    EMS_CHECK_INT(uv_now(&F.loop) - t0, >=, 290);
    EMS_CHECK_INT(r[0].close_status, ==, EMS_ECLOSED);
    ems_server_stats_t st;
    ems_server_stats(F.srv, &st);
    EMS_CHECK_INT(st.accepted, ==, 2);
    EMS_CHECK_INT(st.refused, ==, 1);
    while (ems_server_connections(F.srv) > 0)
        uv_run(&F.loop, UV_RUN_ONCE);
    for (int i = 0; i < 3; i++)
        raw_free(&r[i]);
    fx_end();
}

static void test_tls_reload_keeps_old_connections(void)
{
    fx_start(1);
    peer_t *c1 = &F.c[0];
    fx_connect(c1, 1);
    run_until(&c1->open, 5000, "open");
    ems_tls_config_t *other_srv, *other_cli;
    EMS_CHECK_INT(ems_tls_server_config_new(net_path(F.certs, "other-server.crt"),
                                            net_path(F.certs, "other-server.key"), &other_srv),
                  ==, 0);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(F.certs, "other-ca.crt"), &other_cli), ==, 0);
    EMS_CHECK_INT(ems_server_set_tls(F.srv, other_srv), ==, 0);
    ems_tls_config_unref(other_srv);
    /* a new client trusting the old CA is refused; one trusting the new CA
     * gets in; the old connection keeps working */
    peer_t *c2 = &F.c[1], *c3 = &F.c[2];
    EMS_CHECK_INT(fx_connect_ex(c2, 1, F.ctls, NULL, "/ws/a"), ==, 0);
    EMS_CHECK_INT(fx_connect_ex(c3, 1, other_cli, NULL, "/ws/b"), ==, 0);
    ems_tls_config_unref(other_cli);
    run_until(&c2->closed, 5000, "old CA refused");
    EMS_CHECK_INT(c2->info.status, ==, EMS_ETLS);
    run_until(&c3->open, 5000, "new CA accepted");
    EMS_CHECK_INT(ems_ws_send_text(c1->ws, "old", 3), ==, 0);
    EMS_CHECK_INT(ems_ws_send_text(c3->ws, "new", 3), ==, 0);
    run_until(&c1->msgs, 5000, "old echo");
    run_until(&c3->msgs, 5000, "new echo");
    EMS_CHECK_STR(c1->last, "old");
    EMS_CHECK_STR(c3->last, "new");
    ems_ws_close(c1->ws, 1000, NULL);
    ems_ws_close(c3->ws, 1000, NULL);
    run_until(&c1->closed, 5000, "close");
    run_until(&c3->closed, 5000, "close");
    for (int i = 0; i < F.ns; i++)
        run_until(&F.s[i].closed, 5000, "server close");
    fx_end();
}

static void dummy_handler(ems_server_req_t *req, void *user)
{
    (void)user;
    ems_server_respond(req, 204, NULL, NULL, NULL, 0);
}

static int stopped_count;
static void count_stopped(void *arg)
{
    (void)arg;
    stopped_count++;
}

static void test_reuseport(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    ems_server_options_t o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.reuseport = true;
    ems_server_t *a, *b, *c;
    EMS_CHECK_INT(ems_server_start(&loop, &o, dummy_handler, NULL, &a), ==, 0);
    o.port = ems_server_port(a);
    EMS_CHECK_INT(ems_server_start(&loop, &o, dummy_handler, NULL, &b), ==, 0);
    EMS_CHECK_INT(ems_server_port(b), ==, o.port);
    o.reuseport = false;
    int rc = ems_server_start(&loop, &o, dummy_handler, NULL, &c);
    EMS_CHECK_INT(rc, ==, UV_EADDRINUSE);
    EMS_CHECK(c == NULL);
    o.host = "not-an-address";
    EMS_CHECK_INT(ems_server_start(&loop, &o, dummy_handler, NULL, &c), ==, UV_EINVAL);
    ems_server_stop(a, count_stopped, NULL);
    ems_server_stop(b, count_stopped, NULL);
    for (int i = 0; i < 100 && stopped_count < 2; i++)
        uv_run(&loop, UV_RUN_ONCE);
    EMS_CHECK_INT(stopped_count, ==, 2);
    net_loop_finish(&loop);
}

/* ------------------------------------------------------------ URLs */

static void test_url_parse(void)
{
    ems_wsclient_url_t u;
    EMS_CHECK_INT(ems_wsclient_url_parse("wss://api.domain.com/ws/device/ems_001", &u), ==, 0);
    EMS_CHECK(u.tls);
    EMS_CHECK_STR(u.host, "api.domain.com");
    EMS_CHECK_INT(u.port, ==, 443);
    EMS_CHECK_STR(u.path, "/ws/device/ems_001");
    EMS_CHECK_INT(ems_wsclient_url_parse("WS://127.0.0.1:8080", &u), ==, 0);
    EMS_CHECK(!u.tls);
    EMS_CHECK_INT(u.port, ==, 8080);
    EMS_CHECK_STR(u.path, "/");
    EMS_CHECK_INT(ems_wsclient_url_parse("ws://[::1]:9/x?y=1", &u), ==, 0);
    EMS_CHECK_STR(u.host, "::1");
    EMS_CHECK_INT(u.port, ==, 9);
    EMS_CHECK_STR(u.path, "/x?y=1");
    EMS_CHECK_INT(ems_wsclient_url_parse("ws://h?q", &u), ==, 0);
    EMS_CHECK_STR(u.path, "/?q");
    const char *bad[] = {"http://h/",
                         "ws://",
                         "ws://:80/",
                         "ws://h:0/",
                         "ws://h:65536/",
                         "ws://h:8a/",
                         "ws://user:pw@h/",
                         "ws://h/#frag",
                         "ws://h/a b",
                         "ws://[::1/",
                         "ws://[::1]x/",
                         "ws://h:/",
                         NULL};
    for (int i = 0; bad[i]; i++)
        if (ems_wsclient_url_parse(bad[i], &u) != EMS_EINVAL)
            EMS_FAIL("accepted %s", bad[i]);
    EMS_CHECK_INT(ems_wsclient_url_parse(NULL, &u), ==, EMS_EINVAL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as every program using ems_conn must */
    certs = net_mkcerts();
    EMS_RUN(test_url_parse);
    EMS_RUN(test_echo_plain);
    EMS_RUN(test_echo_tls);
    EMS_RUN(test_wrong_ca_refused);
    EMS_RUN(test_hostname_mismatch_refused);
    EMS_RUN(test_wss_without_tls_config_is_einval);
    EMS_RUN(test_oversized_is_1009);
    EMS_RUN(test_client_limit_is_1009_too);
    EMS_RUN(test_invalid_utf8_is_1007);
    EMS_RUN(test_binary_is_1008_unless_allowed);
    EMS_RUN(test_fragments_reassembled_and_early_frames);
    EMS_RUN(test_reader_released_between_messages);
    EMS_RUN(test_server_drop_noticed);
    EMS_RUN(test_connection_refused);
    EMS_RUN(test_idle_timeout_detects_silent_server);
    EMS_RUN(test_idle_timeout_detects_silent_client);
    EMS_RUN(test_open_timeout);
    EMS_RUN(test_pings_keep_a_quiet_link_alive);
    EMS_RUN(test_slow_reader_hits_enospc);
    EMS_RUN(test_fast_reader_never_hits_enospc);
    EMS_RUN(test_close_inside_on_message);
    EMS_RUN(test_client_closes_inside_on_message);
    EMS_RUN(test_abort_while_connecting);
    EMS_RUN(test_upgrade_refused_with_401);
    EMS_RUN(test_fanout_one_message_many_peers);
    EMS_RUN(test_http_keepalive_pipelining_async);
    EMS_RUN(test_upgrade_pipelined_behind_async_request);
    EMS_RUN(test_http_idle_keepalive_closed);
    EMS_RUN(test_http_refusals_over_socket);
    EMS_RUN(test_max_connections_and_handshake_deadline);
    EMS_RUN(test_tls_reload_keeps_old_connections);
    EMS_RUN(test_reuseport);
    net_rmdir(certs);
    EMS_TEST_END();
}
