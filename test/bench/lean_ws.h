/* lean_ws.h: a minimal WebSocket client for load generation (bench_fleet).
 *
 * The project's client (common/net/client.h over ws.h and conn.h, i.e.
 * wslay and a bounded output queue) is built for one long-lived uplink;
 * a load generator holds tens of thousands of connections and pays for
 * every byte and system call per packet. This module speaks the same
 * protocol (RFC 6455: the HTTP/1.1 Upgrade with Sec-WebSocket-Key checked
 * against Sec-WebSocket-Accept, masked client frames, ping -> pong, the
 * close handshake) with the least work per message:
 *
 *   - sending builds the frame (header, a fresh mask key, the payload
 *     masked while it is copied) in one shared buffer and hands it to the
 *     kernel with one write(2) (uv_try_write): no allocation, no write
 *     request, no completion callback, no epoll_ctl;
 *   - reading uses one receive buffer for all connections; a connection
 *     keeps bytes only when a frame is split across reads (rare);
 *   - a connection is a uv_tcp_t and ~60 bytes (while connecting a
 *     handshake block of ~200 bytes more).
 *
 * Plain TCP only: wss:// stays on the project's client (TLS through
 * mbedTLS memory buffers), which bench_fleet selects for --tls-ca.
 *
 * The mask keys come from a fast PRNG (xorshift), not a cryptographic
 * source: RFC 6455 asks for unpredictable keys to protect intermediaries
 * from cache poisoning by hostile scripts; a load generator of our own
 * frames has no such attacker, and the server cannot tell the difference.
 *
 * Lifetime: lean_ws_connect hands out a connection; exactly one on_close
 * follows (a failed connect or upgrade, a close by either side, an
 * abort), after which the pointer is invalid. Every function may be called
 * from inside any callback. Not thread-safe; everything runs on ctx->loop.
 */
#ifndef LEAN_WS_H
#define LEAN_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct lean_ws lean_ws_t;

typedef struct lean_ws_callbacks {
    /* The upgrade succeeded; sending is allowed. */
    void (*on_open)(lean_ws_t *c, void *user);
    /* A complete text or binary message (reassembled if fragmented).
     * `data` is valid during the call only. */
    void (*on_message)(lean_ws_t *c, void *user, const char *data, size_t len);
    /* The connection is gone. `was_open`: on_open had been called.
     * `status` 0 after a completed close handshake, else a negative code
     * (EMS_E* or a libuv error); `http_status` the upgrade's refusal (e.g.
     * 401) or 0; `code` the close code received (or 0); `detail` a static
     * text. */
    void (*on_close)(lean_ws_t *c, void *user, bool was_open, int status, int http_status,
                     int code, const char *detail);
} lean_ws_callbacks_t;

/* Shared by all connections of a loop. Fill in the public part, then call
 * lean_ws_ctx_init. */
typedef struct lean_ws_ctx {
    uv_loop_t *loop;
    struct sockaddr_storage peer; /* the server's address and port */
    struct sockaddr_storage src;  /* local address to bind (port 0) */
    bool has_src;
    char host_header[300]; /* the Host header's value */
    unsigned open_timeout_ms;  /* connect + upgrade; default 30000 */
    unsigned close_timeout_ms; /* our close frame -> EOF; default 5000 */
    size_t max_message;        /* default 1 MiB */
    lean_ws_callbacks_t cbs;
    /* private */
    uv_timer_t sweep;
    lean_ws_t *pending; /* connecting, upgrading or closing: swept for deadlines */
    uint64_t rng;
    unsigned nconns;
    /* One receive buffer and one frame buffer for every connection of the
     * loop: reading and sending complete within a call. */
    char rbuf[65536];
    unsigned char sbuf[65536 + 14];
    bool closing;
} lean_ws_ctx_t;

/* Starts the context's one timer (deadlines). Returns 0 or a libuv error. */
int lean_ws_ctx_init(lean_ws_ctx_t *x);

/* Stops the timer (closes its handle); call when every connection is
 * gone or being closed. */
void lean_ws_ctx_close(lean_ws_ctx_t *x);

/* Opens a connection to x->peer and sends the upgrade request for `path`
 * with `extra_headers` (each line ending in "\r\n"; NULL for none) once
 * connected. Returns 0 and stores the connection in *out (on_open or
 * on_close follows later, never from inside this call), or a negative
 * code (socket(2), bind(2) failures, EMS_ENOMEM); then nothing follows. */
int lean_ws_connect(lean_ws_ctx_t *x, const char *path, const char *extra_headers, void *user,
                    lean_ws_t **out);

/* Sends one text message in one frame, with one write(2). Returns 0,
 * EMS_ECLOSED (not open), or EMS_EAGAIN when the kernel did not take the
 * whole frame earlier and the rest is still being written (the message is
 * not sent). A write error closes the connection (on_close follows). */
int lean_ws_send_text(lean_ws_t *c, const char *text, size_t len);

/* Starts the close handshake (a close frame with `code`, then waiting for
 * the server's close and its EOF, at most close_timeout_ms). A connection
 * not yet open is aborted. */
void lean_ws_close(lean_ws_t *c, uint16_t code);

/* Closes at once (no close frame). */
void lean_ws_abort(lean_ws_t *c, int status, const char *detail);

#endif
