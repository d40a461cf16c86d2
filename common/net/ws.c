/* ws.c: WebSocket connections on ems_conn with wslay (see ws.h).
 *
 * Shape (after h2o's lib/websocket.c): conn's on_read points ws->in at the
 * received bytes and calls ws_proceed(). wslay's recv callback drains
 * ws->in and answers WOULDBLOCK when it is empty; its send callback only
 * queues bytes on the connection. ws_proceed() is the one place that runs
 * wslay, moves queued messages to the connection, sends the close frame and
 * decides to close. It never recurses: a call made from inside a callback
 * (send, close) sets `again` and the running ws_proceed loops once more.
 *
 * Data frames from a server bypass wslay's send queue: the server frame of a
 * message is the same for every peer (no masking), so ems_ws_msg_t holds it
 * encoded once, and each connection copies it to its socket buffer only when
 * that buffer runs low. wslay still sends the control frames (pong, close);
 * since our send callback always takes every byte, wslay_event_send never
 * stops in the middle of a frame, so its frames and ours cannot interleave.
 * A client must mask every frame with a fresh key, so a client hands its
 * messages to wslay one at a time instead.
 *
 * A server holds its wslay context only while it needs one: a wslay
 * context is ~8.8 KB (its frame reader has a 4 KiB buffer), two thirds of
 * what an idle device connection used to cost. It is made when bytes
 * arrive (or a ping or close frame must go out) and freed again as soon as
 * the input stands at a frame boundary outside a fragmented message with
 * nothing left for wslay to send. A few lines below (ws_track) follow the
 * frame headers of the input to know where that boundary is; wslay still
 * parses and checks every frame. A client keeps its context: it has one
 * connection and sends through wslay.
 *
 * Lifetime: the ws is freed in the connection's on_close, right after our
 * on_close; the connection frees itself after that returns.
 */
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <wslay/wslay.h>

#include "error.h"
#include "http.h"
#include "log.h"

#define WS_LOW_WATER (64u * 1024) /* refill the socket buffer below this */
#define WS_MAX_HDR 10             /* largest unmasked frame header */

struct ems_ws_msg {
    int refs;
    bool binary;
    size_t len;          /* payload bytes */
    size_t hdr_len;      /* server frame header bytes, right before the payload */
    unsigned char buf[]; /* WS_MAX_HDR bytes of header room, payload, NUL */
};

typedef enum { WS_UPGRADING, WS_OPEN, WS_CLOSING, WS_CLOSED } ws_state_t;

struct ems_ws {
    ems_conn_t *conn;
    wslay_event_context_ptr wslay;
    int server;
    ws_state_t state;
    ems_ws_options_t opts;
    ems_ws_callbacks_t cbs;
    void *user;
    /* received bytes being drained by wslay (valid during ws_proceed) */
    const char *in;
    size_t in_len;
    /* messages waiting for room in the connection's buffer */
    ems_ws_msg_t **q;
    size_t q_head, q_len, q_cap, q_bytes;
    /* closing */
    int close_pending; /* ems_ws_close was called; frame not yet queued */
    uint16_t close_code;
    char close_reason[124];
    size_t close_reason_len;
    int conn_closing; /* ems_conn_close/abort was called */
    int fail_status;  /* our reason for an abort, reported in on_close */
    /* proceed */
    int in_proceed, again;
    /* keepalive */
    uint64_t last_rx, last_ping;
    /* client upgrade */
    ems_buf_t req;
    char key[25];
    ems_http_parser_t *resp;
    int http_status;
    /* server: bytes that came with the upgrade request */
    char *early;
    size_t early_len;
    ems_ws_stats_t stats;
    /* server: where the input stands in the frame stream (ws_track) */
    uint64_t trk_left;   /* payload bytes of the current frame still to come */
    uint8_t trk_hdr[14]; /* header bytes of the next frame seen so far */
    uint8_t trk_have;
    bool trk_fragment; /* a data message without FIN is under way */
    char detail[200];
};

static void ws_proceed(ems_ws_t *ws);
static void ws_arm_keepalive(ems_ws_t *ws);

void ems_ws_options_default(ems_ws_options_t *o)
{
    o->max_message = 65536;
    o->max_send_queue = 1u << 20;
    o->ping_interval_ms = 15000;
    o->idle_timeout_ms = 45000;
    o->close_timeout_ms = 5000;
    o->open_timeout_ms = 10000;
    o->allow_binary = false;
}

/* ------------------------------------------------------------ messages */

ems_ws_msg_t *ems_ws_msg_new(const void *data, size_t len, bool binary)
{
    if (len > SIZE_MAX - sizeof(ems_ws_msg_t) - WS_MAX_HDR - 1)
        return NULL;
    ems_ws_msg_t *m = malloc(sizeof *m + WS_MAX_HDR + len + 1);
    if (!m)
        return NULL;
    m->refs = 1;
    m->binary = binary;
    m->len = len;
    if (len)
        memcpy(m->buf + WS_MAX_HDR, data, len);
    m->buf[WS_MAX_HDR + len] = '\0';
    /* The unmasked frame header a server sends (RFC 6455 5.2), written
     * right-aligned against the payload so header and payload are one
     * contiguous frame. */
    unsigned char h[WS_MAX_HDR];
    size_t n = 0;
    h[n++] = 0x80 | (binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME);
    if (len < 126) {
        h[n++] = (unsigned char)len;
    } else if (len <= 0xffff) {
        h[n++] = 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    m->hdr_len = n;
    memcpy(m->buf + WS_MAX_HDR - n, h, n);
    return m;
}

ems_ws_msg_t *ems_ws_msg_ref(ems_ws_msg_t *m)
{
    m->refs++;
    return m;
}

void ems_ws_msg_unref(ems_ws_msg_t *m)
{
    if (m && --m->refs == 0)
        free(m);
}

const char *ems_ws_msg_data(const ems_ws_msg_t *m, size_t *len)
{
    if (len)
        *len = m->len;
    return (const char *)m->buf + WS_MAX_HDR;
}

static const unsigned char *ws_msg_frame(const ems_ws_msg_t *m, size_t *len)
{
    *len = m->hdr_len + m->len;
    return m->buf + WS_MAX_HDR - m->hdr_len;
}

/* Bytes a message costs in this connection's queue. */
static size_t ws_msg_cost(const ems_ws_t *ws, const ems_ws_msg_t *m)
{
    /* a client adds a 4-byte mask key to the header */
    return m->len + (ws->server ? m->hdr_len : m->hdr_len + 4);
}

/* ------------------------------------------------------------ queue */

static int ws_q_push(ems_ws_t *ws, ems_ws_msg_t *m)
{
    if (ws->q_head + ws->q_len == ws->q_cap) {
        if (ws->q_head > 0) {
            memmove(ws->q, ws->q + ws->q_head, ws->q_len * sizeof *ws->q);
            ws->q_head = 0;
        } else {
            size_t cap = ws->q_cap ? ws->q_cap * 2 : 8;
            ems_ws_msg_t **q = realloc(ws->q, cap * sizeof *q);
            if (!q)
                return EMS_ENOMEM;
            ws->q = q;
            ws->q_cap = cap;
        }
    }
    ws->q[ws->q_head + ws->q_len++] = m;
    ws->q_bytes += ws_msg_cost(ws, m);
    return 0;
}

static ems_ws_msg_t *ws_q_pop(ems_ws_t *ws)
{
    ems_ws_msg_t *m = ws->q[ws->q_head++];
    ws->q_len--;
    ws->q_bytes -= ws_msg_cost(ws, m);
    if (ws->q_len == 0)
        ws->q_head = 0;
    return m;
}

static void ws_q_clear(ems_ws_t *ws)
{
    while (ws->q_len)
        ems_ws_msg_unref(ws_q_pop(ws));
}

/* ------------------------------------------------------------ closing */

static void ws_set_detail(ems_ws_t *ws, const char *detail)
{
    if (!ws->detail[0] && detail)
        snprintf(ws->detail, sizeof ws->detail, "%s", detail);
}

/* Drops the connection now; on_close will report `status`. */
static void ws_abort(ems_ws_t *ws, int status, const char *detail)
{
    if (ws->state == WS_CLOSED)
        return;
    ws_set_detail(ws, detail);
    ws->fail_status = status;
    ws->state = WS_CLOSED;
    ws->conn_closing = 1;
    if (ws->wslay) {
        wslay_event_shutdown_read(ws->wslay);
        wslay_event_shutdown_write(ws->wslay);
    }
    ws->in_len = 0;
    ems_conn_abort(ws->conn, status);
}

/* The WebSocket conversation is over; close TCP politely. */
static void ws_conn_close(ems_ws_t *ws)
{
    if (ws->conn_closing)
        return;
    ws->conn_closing = 1;
    ws->state = WS_CLOSED;
    ems_conn_close(ws->conn, ws->opts.close_timeout_ms);
}

/* Enters the closing state: no more messages delivered or accepted; the
 * close handshake must finish within close_timeout_ms. */
static void ws_enter_closing(ems_ws_t *ws)
{
    if (ws->state != WS_OPEN)
        return;
    ws->state = WS_CLOSING;
    if (ws->opts.close_timeout_ms)
        ems_conn_set_timer(ws->conn, ws->opts.close_timeout_ms);
}

/* Closes with `code` because of something the peer did (the close frame
 * goes out before anything else still queued). */
static void ws_fail_close(ems_ws_t *ws, uint16_t code, const char *reason)
{
    ws_set_detail(ws, reason);
    ws_q_clear(ws);
    /* Only called from wslay's message callback: the context exists. */
    wslay_event_shutdown_read(ws->wslay);
    wslay_event_queue_close(ws->wslay, code, (const uint8_t *)reason, strlen(reason));
    ws_enter_closing(ws);
}

/* ------------------------------------------------------------ frame boundaries */

/* Follows the frame headers of the bytes handed to wslay (RFC 6455 5.2):
 * just enough to know when the input stands between frames and outside a
 * fragmented message, i.e. when wslay holds no state worth keeping. */
static void ws_track(ems_ws_t *ws, const uint8_t *p, size_t n)
{
    while (n) {
        if (ws->trk_left) {
            size_t k = n < ws->trk_left ? n : (size_t)ws->trk_left;
            ws->trk_left -= k;
            p += k;
            n -= k;
            continue;
        }
        ws->trk_hdr[ws->trk_have++] = *p++;
        n--;
        if (ws->trk_have < 2)
            continue;
        uint8_t len7 = ws->trk_hdr[1] & 0x7f;
        unsigned need = 2u + (len7 == 126 ? 2u : len7 == 127 ? 8u : 0u) +
                        ((ws->trk_hdr[1] & 0x80) ? 4u : 0u);
        if (ws->trk_have < need)
            continue;
        uint64_t plen = len7;
        if (len7 == 126)
            plen = (uint64_t)ws->trk_hdr[2] << 8 | ws->trk_hdr[3];
        else if (len7 == 127)
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | ws->trk_hdr[2 + i];
        unsigned opcode = ws->trk_hdr[0] & 0x0f;
        if (opcode < 8) /* continuation, text or binary; control frames interleave */
            ws->trk_fragment = !(ws->trk_hdr[0] & 0x80);
        ws->trk_left = plen;
        ws->trk_have = 0;
    }
}

static const struct wslay_event_callbacks ws_server_cbs;

/* The server's context, made when needed. 0 or EMS_ENOMEM. */
static int ws_need_wslay(ems_ws_t *ws)
{
    if (ws->wslay)
        return 0;
    if (wslay_event_context_server_init(&ws->wslay, &ws_server_cbs, ws) != 0) {
        ws->wslay = NULL;
        return EMS_ENOMEM;
    }
    wslay_event_config_set_max_recv_msg_length(ws->wslay, ws->opts.max_message);
    ws->stats.readers_made++;
    return 0;
}

/* Frees a server's context when nothing in it is worth keeping: open, no
 * close under way, input at a frame boundary, nothing for wslay to send. */
static void ws_drop_wslay_if_idle(ems_ws_t *ws)
{
    if (!ws->server || !ws->wslay || ws->state != WS_OPEN || ws->close_pending || ws->in_len ||
        ws->trk_left || ws->trk_have || ws->trk_fragment || wslay_event_want_write(ws->wslay) ||
        !wslay_event_get_read_enabled(ws->wslay) || wslay_event_get_close_received(ws->wslay) ||
        wslay_event_get_close_sent(ws->wslay))
        return;
    wslay_event_context_free(ws->wslay);
    ws->wslay = NULL;
}

/* The state questions, answered for a server without a context too (it
 * then has neither sent nor received a close). */
static bool ws_close_received(const ems_ws_t *ws)
{
    return ws->wslay && wslay_event_get_close_received(ws->wslay);
}

static bool ws_close_sent(const ems_ws_t *ws)
{
    return ws->wslay && wslay_event_get_close_sent(ws->wslay);
}

static bool ws_write_enabled(const ems_ws_t *ws)
{
    return !ws->wslay || wslay_event_get_write_enabled(ws->wslay);
}

static bool ws_read_enabled(const ems_ws_t *ws)
{
    return !ws->wslay || wslay_event_get_read_enabled(ws->wslay);
}

/* ------------------------------------------------------------ wslay glue */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *arg)
{
    ems_ws_t *ws = arg;
    (void)flags;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, n);
    if (ws->server)
        ws_track(ws, (const uint8_t *)ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *arg)
{
    ems_ws_t *ws = arg;
    (void)flags;
    int rc = ems_conn_write(ws->conn, data, len);
    if (rc < 0) {
        /* Only tiny control frames and client frames that were checked for
         * room come here, so a failure means the connection is gone. */
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *arg)
{
    (void)arg;
    if (getrandom(buf, len, 0) != (ssize_t)len) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return 0;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *p)
{
    ems_ws_t *ws = p;
    (void)ctx;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME: {
        int binary = arg->opcode == WSLAY_BINARY_FRAME;
        if (ws->state != WS_OPEN)
            return; /* closing: the conversation is over for the owner */
        if (binary && !ws->opts.allow_binary) {
            ws_fail_close(ws, WSLAY_CODE_POLICY_VIOLATION, "binary messages are not accepted");
            return;
        }
        ws->stats.msgs_in++;
        if (ws->cbs.on_message)
            ws->cbs.on_message(ws, arg->msg ? (const char *)arg->msg : "", arg->msg_length, binary);
        return;
    }
    case WSLAY_CONNECTION_CLOSE:
        /* wslay has queued the echo already; we just stop sending data. */
        ws_q_clear(ws);
        ws->close_pending = 0;
        ws_enter_closing(ws);
        return;
    default:
        return; /* ping (answered by wslay) and pong: any frame is life */
    }
}

static const struct wslay_event_callbacks ws_server_cbs = {ws_recv_cb, ws_send_cb, NULL, NULL,
                                                           NULL,       NULL,       ws_msg_cb};

/* ------------------------------------------------------------ proceed */

/* Moves queued messages to the connection while its buffer is low. */
static void ws_flush_queue(ems_ws_t *ws)
{
    while (ws->q_len && ws->state != WS_CLOSED && ems_conn_out_pending(ws->conn) < WS_LOW_WATER &&
           ws_write_enabled(ws) && !ws_close_received(ws)) {
        ems_ws_msg_t *m = ws->q[ws->q_head];
        size_t cost = ws_msg_cost(ws, m);
        if (ems_conn_out_room(ws->conn) < cost) {
            if (ems_conn_out_pending(ws->conn) == 0)
                ws_abort(ws, EMS_EMSGSIZE, "message larger than the connection's output cap");
            return;
        }
        int rc;
        if (ws->server) {
            size_t flen;
            const unsigned char *f = ws_msg_frame(m, &flen);
            rc = ems_conn_write(ws->conn, f, flen);
        } else {
            struct wslay_event_msg wm = {m->binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
                                         m->buf + WS_MAX_HDR, m->len};
            rc = wslay_event_queue_msg(ws->wslay, &wm);
            if (rc == 0)
                rc = wslay_event_send(ws->wslay);
            rc = rc == 0 ? 0 : (rc == WSLAY_ERR_NOMEM ? EMS_ENOMEM : EMS_EIO);
        }
        if (rc < 0) {
            ws_abort(ws, rc, "cannot write to the connection");
            return;
        }
        ems_ws_msg_unref(ws_q_pop(ws));
        ws->stats.msgs_out++;
    }
}

static void ws_proceed_once(ems_ws_t *ws)
{
    if (ws->state == WS_CLOSED || ws->state == WS_UPGRADING)
        return;
    if (ws->in_len && ws_need_wslay(ws) < 0) {
        ws_abort(ws, EMS_ENOMEM, "no memory for the WebSocket reader");
        return;
    }
    if (ws->in_len && wslay_event_want_read(ws->wslay)) {
        int r = wslay_event_recv(ws->wslay);
        if (r < 0) {
            ws_abort(ws, r == WSLAY_ERR_NOMEM ? EMS_ENOMEM : EMS_EPROTO, "receiving failed");
            return;
        }
        if (ws->state == WS_CLOSED)
            return;
    }
    ws->in_len = 0; /* bytes wslay no longer wants (after a close) */
    if (ws_close_received(ws) || !ws_read_enabled(ws))
        ws_enter_closing(ws);
    if (ws->wslay && wslay_event_send(ws->wslay) < 0) {
        ws_abort(ws, EMS_EIO, "sending failed");
        return;
    }
    ws_flush_queue(ws);
    if (ws->state == WS_CLOSED)
        return;
    /* Our close frame goes after the messages queued before it. */
    if (ws->close_pending && ws->q_len == 0) {
        if (ws_need_wslay(ws) < 0) {
            ws_abort(ws, EMS_ENOMEM, "no memory for the close frame");
            return;
        }
        ws->close_pending = 0;
        wslay_event_queue_close(ws->wslay, ws->close_code, (const uint8_t *)ws->close_reason,
                                ws->close_reason_len);
        if (wslay_event_send(ws->wslay) < 0) {
            ws_abort(ws, EMS_EIO, "sending failed");
            return;
        }
    }
    /* Done when the close frames have crossed, or when we sent ours and
     * wslay stopped reading (a protocol error: no answer to wait for). */
    if (ws_close_sent(ws) && (ws_close_received(ws) || !ws_read_enabled(ws))) {
        ws_conn_close(ws);
        return;
    }
    ws_drop_wslay_if_idle(ws);
}

static void ws_proceed(ems_ws_t *ws)
{
    if (ws->in_proceed) {
        ws->again = 1;
        return;
    }
    ws->in_proceed = 1;
    do {
        ws->again = 0;
        ws_proceed_once(ws);
    } while (ws->again && ws->state != WS_CLOSED);
    ws->in_proceed = 0;
}

/* ------------------------------------------------------------ keepalive */

static void ws_arm_keepalive(ems_ws_t *ws)
{
    if (ws->state != WS_OPEN)
        return;
    uint64_t now = uv_now(ems_conn_loop(ws->conn));
    uint64_t next = UINT64_MAX;
    if (ws->opts.idle_timeout_ms)
        next = ws->last_rx + ws->opts.idle_timeout_ms;
    if (ws->opts.ping_interval_ms) {
        uint64_t base = ws->last_rx > ws->last_ping ? ws->last_rx : ws->last_ping;
        uint64_t t = base + ws->opts.ping_interval_ms;
        if (t < next)
            next = t;
    }
    if (next == UINT64_MAX) {
        ems_conn_set_timer(ws->conn, 0);
        return;
    }
    ems_conn_set_timer(ws->conn, next > now ? next - now : 1);
}

static void ws_keepalive(ems_ws_t *ws)
{
    uint64_t now = uv_now(ems_conn_loop(ws->conn));
    uint64_t idle = now - ws->last_rx;
    if (ws->opts.idle_timeout_ms && idle >= ws->opts.idle_timeout_ms) {
        char msg[96];
        snprintf(msg, sizeof msg, "no frame from the peer for %llu ms", (unsigned long long)idle);
        ws_abort(ws, EMS_ETIMEDOUT, msg);
        return;
    }
    if (ws->opts.ping_interval_ms && idle >= ws->opts.ping_interval_ms &&
        now - ws->last_ping >= ws->opts.ping_interval_ms) {
        struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
        ws->last_ping = now;
        if (ws_need_wslay(ws) == 0 && wslay_event_queue_msg(ws->wslay, &ping) == 0)
            ws_proceed(ws);
    }
    ws_arm_keepalive(ws);
}

/* ------------------------------------------------------------ conn callbacks */

static void ws_start(ems_ws_t *ws, const char *data, size_t len);

static void ws_on_conn_open(ems_conn_t *c)
{
    ems_ws_t *ws = ems_conn_user(c);
    int rc = ems_conn_write(c, ems_buf_data(&ws->req), ems_buf_len(&ws->req));
    ems_buf_free(&ws->req);
    if (rc < 0)
        ws_abort(ws, rc, "cannot send the upgrade request");
}

static void ws_on_upgrade_response(ems_ws_t *ws, const char *data, size_t len)
{
    size_t used = 0;
    int rc = ems_http_parser_feed(ws->resp, data, len, &used);
    if (rc == 0)
        return;
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "bad upgrade response: %s", ems_http_parser_error(ws->resp));
        ws_abort(ws, EMS_EPROTO, msg);
        return;
    }
    const ems_http_msg_t *m = ems_http_parser_msg(ws->resp);
    const char *why = "";
    ws->http_status = m->status;
    if (ems_http_ws_check_response(m, ws->key, &why) < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "upgrade refused: HTTP %d %s (%s)", m->status,
                 ems_http_reason(m->status), why);
        ws_abort(ws, EMS_EPROTO, msg);
        return;
    }
    ems_http_parser_free(ws->resp);
    ws->resp = NULL;
    ws_start(ws, data + used, len - used);
}

static void ws_on_conn_read(ems_conn_t *c, const char *data, size_t len)
{
    ems_ws_t *ws = ems_conn_user(c);
    if (ws->state == WS_UPGRADING) {
        ws_on_upgrade_response(ws, data, len);
        return;
    }
    ws->last_rx = uv_now(ems_conn_loop(c));
    ws->in = data;
    ws->in_len = len;
    ws_proceed(ws);
    ws->in_len = 0;
}

static void ws_on_conn_drain(ems_conn_t *c)
{
    ws_proceed(ems_conn_user(c));
}

static void ws_on_conn_timer(ems_conn_t *c)
{
    ems_ws_t *ws = ems_conn_user(c);
    switch (ws->state) {
    case WS_UPGRADING:
        ws_abort(ws, EMS_ETIMEDOUT, "connect and upgrade took too long");
        return;
    case WS_CLOSING:
        ws_abort(ws, EMS_ETIMEDOUT, "no close frame from the peer in time");
        return;
    case WS_OPEN:
        if (ws->early) {
            /* Frames that came with the upgrade request (see ems_ws_accept). */
            char *early = ws->early;
            ws->early = NULL;
            ws->in = early;
            ws->in_len = ws->early_len;
            ws_proceed(ws);
            ws->in_len = 0;
            free(early);
            if (ws->state == WS_OPEN)
                ws_arm_keepalive(ws);
            return;
        }
        ws_keepalive(ws);
        return;
    case WS_CLOSED:
        return;
    }
}

static void ws_free(ems_ws_t *ws)
{
    ws_q_clear(ws);
    free(ws->q);
    if (ws->wslay)
        wslay_event_context_free(ws->wslay);
    ems_http_parser_free(ws->resp);
    ems_buf_free(&ws->req);
    free(ws->early);
    free(ws);
}

static void ws_on_conn_close(ems_conn_t *c, int status)
{
    ems_ws_t *ws = ems_conn_user(c);
    ems_ws_close_info_t info;
    memset(&info, 0, sizeof info);
    int received = ws_close_received(ws);
    int sent = ws_close_sent(ws);
    if (received)
        info.code_received = wslay_event_get_status_code_received(ws->wslay);
    if (sent)
        info.code_sent = wslay_event_get_status_code_sent(ws->wslay);
    if (ws->fail_status) {
        info.status = ws->fail_status;
    } else if (received && sent) {
        info.status = 0;
    } else if (sent) {
        /* We sent a close the peer never answered. If we refused something
         * the peer did, say what; if it was our own close, the peer simply
         * hung up instead of answering, which still ends the conversation. */
        switch (ws->close_code == info.code_sent ? 0 : info.code_sent) {
        case WSLAY_CODE_MESSAGE_TOO_BIG:
            info.status = EMS_EMSGSIZE;
            break;
        case WSLAY_CODE_PROTOCOL_ERROR:
        case WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA:
        case WSLAY_CODE_POLICY_VIOLATION:
            info.status = EMS_EPROTO;
            break;
        default:
            info.status = 0;
        }
    } else {
        info.status = status ? status : EMS_ECLOSED;
    }
    info.http_status = ws->http_status;
    ws_set_detail(ws, ems_conn_error(c));
    info.detail = ws->detail;
    ws->state = WS_CLOSED;
    if (ws->cbs.on_close)
        ws->cbs.on_close(ws, &info);
    ws_free(ws);
}

static const ems_conn_callbacks_t ws_conn_cbs = {
    .on_open = ws_on_conn_open,
    .on_read = ws_on_conn_read,
    .on_drain = ws_on_conn_drain,
    .on_timer = ws_on_conn_timer,
    .on_close = ws_on_conn_close,
};

/* ------------------------------------------------------------ creation */

static ems_ws_t *ws_new(ems_conn_t *conn, int server, const ems_ws_options_t *opts,
                        const ems_ws_callbacks_t *cbs, void *user)
{
    ems_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->conn = conn;
    ws->server = server;
    if (opts)
        ws->opts = *opts;
    else
        ems_ws_options_default(&ws->opts);
    if (cbs)
        ws->cbs = *cbs;
    ws->user = user;
    ems_buf_init(&ws->req, 16384);
    if (server)
        return ws; /* its wslay context is made when needed (ws_need_wslay) */
    static const struct wslay_event_callbacks client_cbs = {
        ws_recv_cb, ws_send_cb, ws_genmask_cb, NULL, NULL, NULL, ws_msg_cb};
    if (wslay_event_context_client_init(&ws->wslay, &client_cbs, ws) != 0) {
        free(ws);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(ws->wslay, ws->opts.max_message);
    return ws;
}

/* Both roles: the upgrade is done, frames may flow. */
static void ws_start(ems_ws_t *ws, const char *data, size_t len)
{
    ws->state = WS_OPEN;
    ws->last_rx = ws->last_ping = uv_now(ems_conn_loop(ws->conn));
    ws_arm_keepalive(ws);
    if (!ws->server && ws->cbs.on_open)
        ws->cbs.on_open(ws);
    if (ws->state == WS_CLOSED)
        return;
    ws->in = data;
    ws->in_len = len;
    ws_proceed(ws); /* also sends what was queued before the upgrade */
    ws->in_len = 0;
}

int ems_ws_accept(ems_conn_t *conn, const ems_ws_options_t *opts, const ems_ws_callbacks_t *cbs,
                  void *user, const char *early, size_t early_len, ems_ws_t **out)
{
    *out = NULL;
    ems_ws_t *ws = ws_new(conn, 1, opts, cbs, user);
    if (ws && early_len) {
        ws->early = malloc(early_len);
        if (!ws->early) {
            ws_free(ws);
            ws = NULL;
        } else {
            memcpy(ws->early, early, early_len);
            ws->early_len = early_len;
        }
    }
    if (!ws) {
        ems_conn_set_callbacks(conn, NULL, NULL);
        ems_conn_abort(conn, EMS_ENOMEM);
        return EMS_ENOMEM;
    }
    ems_conn_set_callbacks(conn, &ws_conn_cbs, ws);
    ws->state = WS_OPEN;
    ws->last_rx = ws->last_ping = uv_now(ems_conn_loop(conn));
    if (ws->early)
        ems_conn_set_timer(conn, 1); /* process them on a later loop turn */
    else
        ws_arm_keepalive(ws);
    *out = ws;
    return 0;
}

int ems_ws_connect(ems_conn_t *conn, const char *host_header, const char *path,
                   const char *extra_headers, const ems_ws_options_t *opts,
                   const ems_ws_callbacks_t *cbs, void *user, ems_ws_t **out)
{
    *out = NULL;
    ems_ws_t *ws = ws_new(conn, 0, opts, cbs, user);
    int rc = ws ? 0 : EMS_ENOMEM;
    if (rc == 0) {
        ems_http_limits_t lim;
        ems_http_limits_default(&lim);
        lim.max_body = 16384;
        ws->resp = ems_http_parser_new(EMS_HTTP_RESPONSE, &lim);
        rc = ws->resp
                 ? ems_http_ws_request_write(&ws->req, host_header, path, extra_headers, ws->key)
                 : EMS_ENOMEM;
    }
    if (rc < 0) {
        if (ws)
            ws_free(ws);
        ems_conn_set_callbacks(conn, NULL, NULL);
        ems_conn_abort(conn, rc);
        return rc;
    }
    ws->state = WS_UPGRADING;
    ems_conn_set_callbacks(conn, &ws_conn_cbs, ws);
    if (ws->opts.open_timeout_ms)
        ems_conn_set_timer(conn, ws->opts.open_timeout_ms);
    *out = ws;
    return 0;
}

/* ------------------------------------------------------------ public API */

int ems_ws_send_msg(ems_ws_t *ws, ems_ws_msg_t *m)
{
    if (ws->state != WS_OPEN && ws->state != WS_UPGRADING)
        return EMS_ECLOSED;
    if (ws->close_pending)
        return EMS_ECLOSED;
    size_t cost = ws_msg_cost(ws, m);
    if (cost > ws->opts.max_send_queue)
        return EMS_EMSGSIZE;
    if (ems_ws_queued(ws) + cost > ws->opts.max_send_queue)
        return EMS_ENOSPC;
    int rc = ws_q_push(ws, ems_ws_msg_ref(m));
    if (rc < 0) {
        ems_ws_msg_unref(m);
        return rc;
    }
    ws_proceed(ws);
    return 0;
}

int ems_ws_send_text(ems_ws_t *ws, const char *text, size_t len)
{
    if (ws->state != WS_OPEN && ws->state != WS_UPGRADING)
        return EMS_ECLOSED;
    ems_ws_msg_t *m = ems_ws_msg_new(text, len, false);
    if (!m)
        return EMS_ENOMEM;
    int rc = ems_ws_send_msg(ws, m);
    ems_ws_msg_unref(m);
    return rc;
}

void ems_ws_close(ems_ws_t *ws, uint16_t code, const char *reason)
{
    if (ws->state == WS_UPGRADING) {
        ws_abort(ws, UV_ECANCELED, "closed before the upgrade completed");
        return;
    }
    if (ws->state != WS_OPEN)
        return;
    size_t n = reason ? strlen(reason) : 0;
    if (n > 123) {
        n = 123;
        /* Do not cut a UTF-8 sequence: the peer would fail us with 1007. */
        while (n > 0 && ((unsigned char)reason[n] & 0xc0) == 0x80)
            n--;
    }
    if (n)
        memcpy(ws->close_reason, reason, n);
    ws->close_reason_len = n;
    ws->close_code = code;
    ws->close_pending = 1;
    ws_enter_closing(ws);
    ws_proceed(ws);
}

void ems_ws_abort(ems_ws_t *ws, int status)
{
    ws_abort(ws, status, "aborted locally");
}

int ems_ws_is_open(const ems_ws_t *ws)
{
    return ws->state == WS_OPEN;
}

size_t ems_ws_queued(const ems_ws_t *ws)
{
    return ws->q_bytes + ems_conn_out_pending(ws->conn);
}

void *ems_ws_user(const ems_ws_t *ws)
{
    return ws->user;
}

void ems_ws_set_user(ems_ws_t *ws, void *user)
{
    ws->user = user;
}

ems_conn_t *ems_ws_conn(const ems_ws_t *ws)
{
    return ws->conn;
}

void ems_ws_stats(const ems_ws_t *ws, ems_ws_stats_t *out)
{
    ems_conn_stats_t cs;
    ems_conn_stats(ws->conn, &cs);
    *out = ws->stats;
    out->bytes_in = cs.bytes_in;
    out->bytes_out = cs.bytes_out;
    out->reader_held = ws->wslay != NULL;
}
