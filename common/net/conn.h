/* conn.h: a stream connection over a uv_tcp_t with an optional TLS layer.
 *
 * Callers see plaintext only. A small transport vtable inside conn.c (plain
 * TCP or TLS, in the manner of redis' connection types) does the rest, so no
 * caller ever branches on the transport.
 *
 * Reading: the connection reads as soon as it is open (after connect, or
 * right away for an accepted one) and passes plaintext to on_read. For TLS
 * the handshake happens first, transparently; on_read only ever sees
 * application data.
 *
 * Writing: ems_conn_write copies (TCP) or encrypts (TLS) into a bounded
 * output queue. At most one uv_write is in flight; bytes written meanwhile
 * collect in the queue and go out in the next single write. When the queue
 * would pass its cap the write fails with EMS_ENOSPC, so the owner can drop a
 * peer that does not read instead of buffering without bound.
 *
 * Closing: ems_conn_close is graceful (flush the queue, TLS close_notify,
 * shut down the write side, drain the read side until the peer closes or a
 * deadline passes); ems_conn_abort closes at once. Either may be called from
 * inside any callback of the connection: the memory is released only in the
 * last libuv close callback, after on_close has run. on_close is called
 * exactly once for every connection that was handed out, whatever happened.
 *
 * Timer: each connection owns one timer that its owner (the HTTP server, the
 * WebSocket layer) uses for deadlines and keepalive, so a connection costs
 * two libuv handles, not three or four.
 *
 * SIGPIPE: libuv writes with write(2), so a program using connections must
 * ignore SIGPIPE (signal(SIGPIPE, SIG_IGN) in main); a write to a peer that
 * went away then fails with UV_EPIPE and closes the connection.
 *
 * Not thread-safe; everything runs on the connection's loop.
 */
#ifndef EMS_CONN_H
#define EMS_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tls.h"

typedef struct ems_conn ems_conn_t;

typedef struct ems_conn_callbacks {
    /* Client connections only: the TCP connect and the TLS handshake (if
     * any) have succeeded; writing is allowed from now on. If they fail,
     * on_open is not called; on_close reports the error instead. May be
     * NULL. */
    void (*on_open)(ems_conn_t *c);
    /* Plaintext received. `data` is valid only during the call; copy what
     * must be kept. May be NULL (data is dropped). */
    void (*on_read)(ems_conn_t *c, const char *data, size_t len);
    /* The output queue has just become empty (everything was handed to the
     * kernel). Used to refill the queue from an upper-layer queue. May be
     * NULL. */
    void (*on_drain)(ems_conn_t *c);
    /* The timer set with ems_conn_set_timer fired. If NULL, the timer
     * aborts the connection with EMS_ETIMEDOUT. */
    void (*on_timer)(ems_conn_t *c);
    /* The connection is closed; called once. `status` is 0 after
     * ems_conn_close completed normally, EMS_ECLOSED when the peer closed
     * the stream, the status given to ems_conn_abort, or the failure
     * (EMS_ETLS, EMS_ETIMEDOUT, a negative errno from libuv such as
     * UV_ECONNREFUSED, UV_ECONNRESET, UV_EAI_NONAME). ems_conn_error() gives
     * a readable detail. After on_close returns the connection must not be
     * used. May be NULL. */
    void (*on_close)(ems_conn_t *c, int status);
} ems_conn_callbacks_t;

/* A gate on the server side of TLS handshakes, so that a flood of new
 * connections cannot take the whole loop (each step of a handshake costs
 * milliseconds of CPU). Before each handshake step (bytes arrived during
 * the handshake) `admit` is asked; if it returns 0 the bytes are kept, the
 * connection stops reading and waits until the gate's owner calls
 * ems_conn_gate_resume. After each step `spent` is told its CPU time. */
typedef struct ems_conn_gate {
    int (*admit)(ems_conn_t *c, void *arg);
    void (*spent)(ems_conn_t *c, uint64_t ns, void *arg);
    void *arg;
} ems_conn_gate_t;

typedef struct ems_conn_options {
    /* Cap on queued output bytes (ciphertext for TLS) that the kernel has
     * not accepted yet. 0 means the default, 1 MiB. */
    size_t max_out;
    /* Accepted connections only: a counter shared by many connections to
     * which each adds its queued output bytes (kept up to date until the
     * connection is freed), so the owner can bound the process's total
     * output memory. NULL for none. See ems_conn_set_out_account. */
    size_t *out_account;
    /* Accepted connections only: called with the peer's address right after
     * accept(2), before any TLS state exists; non-zero refuses the
     * connection (it is closed, no callback runs, ems_conn_accept returns
     * EMS_EPERM). NULL admits everything. */
    int (*filter)(const struct sockaddr *peer, void *arg);
    void *filter_arg;
    /* Accepted TLS connections only: see ems_conn_gate_t. NULL: no gate.
     * The struct must outlive the connection's handshake. */
    const ems_conn_gate_t *gate;
    /* Accepted connections only: one whose client last sent anything (its
     * ClientHello) longer than this ago when it is taken off the backlog is
     * closed unserved (EMS_ETIMEDOUT): under admission control it waited
     * there, and its client has most likely given up or will before a
     * handshake could finish. 0: no limit. */
    unsigned max_backlog_age_ms;
    /* Client connections only: the local address (port 0: any) to bind
     * before connecting, e.g. one of several 127.0.0.x so that a load
     * generator is not limited to one address's ephemeral ports. NULL: the
     * kernel chooses. Copied (IPv4 or IPv6). */
    const struct sockaddr *bind_addr;
} ems_conn_options_t;

/* Connects to host:port (a name is resolved with uv_getaddrinfo; the first
 * address that accepts the connection is used). With `tls` (a client
 * configuration) the handshake follows and the server certificate is
 * verified against `tls_hostname`, or against `host` when that is NULL.
 * `opts` may be NULL. On success returns 0 and stores the connection in
 * *out; on_open or on_close follows later, never from inside this call.
 * Returns EMS_EINVAL (bad arguments, server-side TLS configuration) or
 * EMS_ENOMEM; then no callback is called. */
int ems_conn_connect(uv_loop_t *loop, const char *host, uint16_t port, ems_tls_config_t *tls,
                     const char *tls_hostname, const ems_conn_options_t *opts,
                     const ems_conn_callbacks_t *cbs, void *user, ems_conn_t **out);

/* Accepts one pending connection from `listener` (call it from the
 * listener's connection callback). With `tls` (a server configuration; a
 * reference is taken) the server handshake runs on the first bytes read.
 * The connection starts reading at once; on_open is not called for accepted
 * connections. Returns 0, or a libuv error from uv_accept / EMS_ENOMEM /
 * EMS_EPERM (refused by opts->filter), EMS_ECLOSED (the client had closed
 * already) or EMS_ETIMEDOUT (opts->max_backlog_age_ms); the pending connection is then
 * closed by this call and no callback runs. */
int ems_conn_accept(uv_stream_t *listener, ems_tls_config_t *tls, const ems_conn_options_t *opts,
                    const ems_conn_callbacks_t *cbs, void *user, ems_conn_t **out);

/* Replaces the callbacks and the user pointer: hands the connection over to
 * another layer (HTTP -> WebSocket). Takes effect for the next event. */
void ems_conn_set_callbacks(ems_conn_t *c, const ems_conn_callbacks_t *cbs, void *user);

void *ems_conn_user(const ems_conn_t *c);
uv_loop_t *ems_conn_loop(const ems_conn_t *c);

/* Queues `len` plaintext bytes for sending and starts a write if none is in
 * flight. Returns 0; EMS_ENOSPC when the output queue would pass max_out
 * (nothing queued; the connection stays usable); EMS_EAGAIN before on_open
 * (client) or before the TLS handshake completed (server); EMS_ECLOSED when
 * closing or closed; EMS_ETLS (the connection is then being aborted). */
int ems_conn_write(ems_conn_t *c, const void *data, size_t len);

/* Bytes queued and not yet accepted by the kernel (including the write in
 * flight). */
size_t ems_conn_out_pending(const ems_conn_t *c);

/* Bytes that ems_conn_write would still accept before EMS_ENOSPC
 * (plaintext; for TLS an estimate that accounts for record overhead). */
size_t ems_conn_out_room(const ems_conn_t *c);

/* Stops and restarts reading from the socket. Data already read from the
 * socket is still delivered in full to on_read (the current delivery is not
 * cut short), so an owner that stops reading must keep any surplus itself.
 * Reading is on by default. */
void ems_conn_read_stop(ems_conn_t *c);
int ems_conn_read_start(ems_conn_t *c);

/* Runs the handshake step that `gate->admit` deferred and starts reading
 * again. No-op if the connection is not waiting at the gate. May close the
 * connection (a failed handshake); on_close then follows later. */
void ems_conn_gate_resume(ems_conn_t *c);

/* Moves the connection's queued-output bytes from its current account (see
 * ems_conn_options_t.out_account) to `acct` (NULL: none), e.g. when a
 * WebSocket layer with its own bounds takes the connection over. */
void ems_conn_set_out_account(ems_conn_t *c, size_t *acct);

/* Arms the connection's timer to fire once after `ms` milliseconds,
 * replacing any earlier setting; 0 disarms it. Ignored once closing (the
 * close deadline owns the timer then). */
void ems_conn_set_timer(ems_conn_t *c, uint64_t ms);

/* Graceful close: no more on_read, flush the queue, send TLS close_notify,
 * shut down the write side, wait for the peer to close (reading and
 * discarding) or for `deadline_ms` to pass (0 means 5000 ms), then close.
 * Idempotent; calling it while an abort is under way changes nothing. */
void ems_conn_close(ems_conn_t *c, unsigned deadline_ms);

/* Immediate close: queued output is dropped. `status` is passed to
 * on_close (0 if the caller has nothing better). Idempotent. */
void ems_conn_abort(ems_conn_t *c, int status);

/* 1 once ems_conn_close/abort was called or the connection failed. */
int ems_conn_is_closing(const ems_conn_t *c);

/* 1 if the connection uses TLS. */
int ems_conn_is_tls(const ems_conn_t *c);

/* Peer address as "ip:port" ("[ip6]:port"), written into buf (NUL
 * terminated). Returns 0 or a libuv error. */
int ems_conn_peer(const ems_conn_t *c, char *buf, size_t len);

/* Readable detail of the failure that closed the connection, e.g. the
 * certificate verification text from mbedTLS. "" if none. */
const char *ems_conn_error(const ems_conn_t *c);

/* Traffic counters on the wire (ciphertext for TLS), for metrics. */
typedef struct ems_conn_stats {
    uint64_t bytes_in;
    uint64_t bytes_out;
} ems_conn_stats_t;
void ems_conn_stats(const ems_conn_t *c, ems_conn_stats_t *out);

/* A hook for the creator of a connection (the listener counts its live
 * connections with it): called once, after on_close, right before the memory
 * is released, independent of who owns the callbacks by then. */
void ems_conn_set_free_hook(ems_conn_t *c, void (*hook)(ems_conn_t *c, void *arg), void *arg);

#endif
