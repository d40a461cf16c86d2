/* ws.h: WebSocket connections (RFC 6455) on top of ems_conn, using wslay.
 *
 * The h2o pattern: wslay never touches the socket. Bytes from on_read are
 * handed to wslay's receive callback, which drains them and answers
 * WSLAY_ERR_WOULDBLOCK when they are used up; wslay's send callback only
 * queues bytes on the connection. One proceed() function runs wslay and
 * decides what to send next, whether to close, and when.
 *
 * Receiving: whole messages only (wslay reassembles fragments), bounded by
 * max_message (a larger one is answered with close 1009). Text must be
 * valid UTF-8 (else close 1007, checked by wslay). A binary message is
 * refused with close 1008 unless allow_binary is set. Control frames are
 * answered by wslay (pong, the close echo).
 *
 * Sending: messages are queued as reference-counted ems_ws_msg_t. On the
 * server side a message holds its encoded, unmasked frame, so one message
 * can be queued to thousands of connections without a copy per connection
 * (dashboard fan-out): each connection keeps only a pointer until its socket
 * has room. Bytes queued on a connection (messages waiting plus bytes
 * waiting for the kernel) are capped by max_send_queue; a send over the cap
 * fails with EMS_ENOSPC so the owner can drop a peer that does not read.
 * Client frames are masked per RFC 6455, so a client encodes each message
 * itself (through wslay).
 *
 * Keepalive: when nothing has arrived for ping_interval_ms a ping is sent;
 * when nothing (no frame, no pong) has arrived for idle_timeout_ms the peer
 * is considered dead and the connection is aborted (status EMS_ETIMEDOUT).
 *
 * Closing: ems_ws_close queues a close frame after the messages already
 * queued, waits for the peer's close frame (at most close_timeout_ms), then
 * closes the TCP connection. Closing or aborting from inside on_message is
 * safe; on_close is called exactly once and the object is freed right after
 * it returns (memory goes away in the connection's last close callback).
 *
 * Not thread-safe; everything runs on the connection's loop.
 */
#ifndef EMS_WS_H
#define EMS_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"

typedef struct ems_ws ems_ws_t;
typedef struct ems_ws_msg ems_ws_msg_t;

typedef struct ems_ws_options {
    size_t max_message;        /* largest message received; default 65536 */
    size_t max_send_queue;     /* cap on bytes queued for sending; default 1 MiB */
    unsigned ping_interval_ms; /* ping after this much silence; default 15000; 0 = never */
    unsigned idle_timeout_ms;  /* abort after this much silence; default 45000; 0 = never */
    unsigned close_timeout_ms; /* wait for the peer's close frame; default 5000 */
    unsigned open_timeout_ms;  /* client: connect + TLS + upgrade; default 10000 */
    bool allow_binary;         /* deliver binary messages instead of closing with 1008 */
} ems_ws_options_t;

/* Fills in the defaults named above (the values of docs/protocol.md). */
void ems_ws_options_default(ems_ws_options_t *o);

/* Why a connection ended, passed to on_close. */
typedef struct ems_ws_close_info {
    /* 0 when the close handshake completed (either side started it; see
     * the codes for why), or when we closed and the peer hung up instead of
     * answering. Otherwise the reason:
     *   EMS_EMSGSIZE  we closed with 1009 (the peer's message was too big),
     *   EMS_EPROTO    we closed with 1002/1007/1008 (bad frame, invalid
     *                 UTF-8, binary message), or the upgrade was refused or
     *                 malformed (client; http_status tells the HTTP status),
     *   EMS_ETIMEDOUT the peer was silent past idle_timeout_ms, or the close
     *                 handshake or the upgrade took too long,
     *   EMS_ECLOSED   the peer dropped the TCP connection without a close
     *                 frame,
     *   EMS_ETLS      TLS failure (detail has mbedTLS's text, e.g. the
     *                 certificate verification result),
     *   UV_ECANCELED  ems_ws_close/abort before the upgrade completed,
     *   the status given to ems_ws_abort, or a libuv error such as
     *   UV_ECONNREFUSED, UV_ECONNRESET, UV_EAI_NONAME. */
    int status;
    int code_received; /* close code from the peer; 0 if no close frame came, 1005 if it had none */
    int code_sent;     /* close code we sent; 0 if none */
    int http_status;   /* client: status of a refused upgrade (e.g. 401); else 0 */
    const char *detail; /* readable detail ("" if none); valid during on_close */
} ems_ws_close_info_t;

typedef struct ems_ws_callbacks {
    /* Client role: the upgrade has completed. Not called on the server
     * side (the connection is open when ems_ws_accept returns). May be
     * NULL. */
    void (*on_open)(ems_ws_t *ws);
    /* One complete message. `data` is valid only during the call and is
     * NOT NUL-terminated (use a length-taking parser such as json_loadb);
     * for text it is valid UTF-8. An empty message has len 0 and data "".
     * `binary` can only be true with allow_binary. */
    void (*on_message)(ems_ws_t *ws, const char *data, size_t len, bool binary);
    /* Called once when the connection is gone; `ws` is freed after it
     * returns. May be NULL. */
    void (*on_close)(ems_ws_t *ws, const ems_ws_close_info_t *info);
} ems_ws_callbacks_t;

/* ---- messages ---- */

/* Makes a message holding a copy of `data` (one allocation), with one
 * reference. `binary` selects the opcode. Returns NULL when out of memory. */
ems_ws_msg_t *ems_ws_msg_new(const void *data, size_t len, bool binary);

/* Takes / drops a reference; the last unref frees. unref(NULL) is a no-op. */
ems_ws_msg_t *ems_ws_msg_ref(ems_ws_msg_t *m);
void ems_ws_msg_unref(ems_ws_msg_t *m);

/* Payload of a message. */
const char *ems_ws_msg_data(const ems_ws_msg_t *m, size_t *len);

/* ---- connections ---- */

/* Server role: runs the WebSocket protocol on `conn`, whose upgrade request
 * has been answered with 101 already (ems_server_upgrade does all this).
 * Takes over the connection's callbacks. `early`/`early_len` are bytes that
 * arrived after the request (frames sent before the 101 was read); they are
 * processed on the next loop turn, never inside this call. `opts` NULL means
 * defaults. Returns 0 and *out, or EMS_ENOMEM (the connection is then
 * aborted; no callback is called). */
int ems_ws_accept(ems_conn_t *conn, const ems_ws_options_t *opts, const ems_ws_callbacks_t *cbs,
                  void *user, const char *early, size_t early_len, ems_ws_t **out);

/* Client role: takes over `conn` (from ems_conn_connect, not yet open).
 * When it opens, sends the upgrade request for `path` with Host
 * `host_header` and `extra_headers` (e.g. "Authorization: Bearer x\r\n"),
 * checks the 101 answer, then calls on_open. A refused upgrade ends in
 * on_close with status EMS_EPROTO and http_status set. The whole upgrade
 * (connect, TLS, HTTP) must finish within opts->open_timeout_ms, else
 * on_close gets EMS_ETIMEDOUT. Returns 0 and *out or EMS_ENOMEM/EMS_EINVAL (the
 * connection is then aborted; no callback is called). */
int ems_ws_connect(ems_conn_t *conn, const char *host_header, const char *path,
                   const char *extra_headers, const ems_ws_options_t *opts,
                   const ems_ws_callbacks_t *cbs, void *user, ems_ws_t **out);

/* Queues a text message (copied). Allowed before on_open on the client
 * side (sent after the upgrade). Returns 0, EMS_ENOSPC (over
 * max_send_queue: nothing queued), EMS_EMSGSIZE (a single message larger
 * than max_send_queue), EMS_ECLOSED (closing or closed) or EMS_ENOMEM. */
int ems_ws_send_text(ems_ws_t *ws, const char *text, size_t len);

/* Queues a shared message: takes its own reference (the caller keeps
 * theirs). Same results as ems_ws_send_text. */
int ems_ws_send_msg(ems_ws_t *ws, ems_ws_msg_t *m);

/* Starts the closing handshake: the close frame (code, and a reason of at
 * most 123 bytes, truncated otherwise) is sent after the messages already
 * queued; no more messages are accepted. Idempotent. */
void ems_ws_close(ems_ws_t *ws, uint16_t code, const char *reason);

/* Closes the TCP connection now, without a close frame; on_close gets
 * `status`. Idempotent. */
void ems_ws_abort(ems_ws_t *ws, int status);

/* 1 while messages can be sent and received (after the upgrade, before any
 * close). */
int ems_ws_is_open(const ems_ws_t *ws);

/* Bytes queued for sending (messages and connection output). */
size_t ems_ws_queued(const ems_ws_t *ws);

void *ems_ws_user(const ems_ws_t *ws);
void ems_ws_set_user(ems_ws_t *ws, void *user);

/* The underlying connection (peer address, byte counters). Do not change
 * its callbacks or write to it. */
ems_conn_t *ems_ws_conn(const ems_ws_t *ws);

typedef struct ems_ws_stats {
    uint64_t msgs_in, msgs_out;   /* data messages */
    uint64_t bytes_in, bytes_out; /* on the wire (from the connection) */
    /* server: times its wslay context was made, and whether it holds one
     * now (only between the bytes of an unfinished frame or message, or
     * while closing; see ws.c) */
    uint64_t readers_made;
    bool reader_held;
} ems_ws_stats_t;
void ems_ws_stats(const ems_ws_t *ws, ems_ws_stats_t *out);

#endif
