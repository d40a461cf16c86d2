/* server.h: an HTTP/1.1 + WebSocket listener (mechanism only).
 *
 * The server accepts TCP connections (optionally TLS), parses requests with
 * keep-alive and hands each complete request to one handler supplied by the
 * policy layer (the gateway). The handler decides: answer with
 * ems_server_respond, or turn the connection into a WebSocket with
 * ems_server_upgrade. The server itself answers only what it must: 400,
 * 413, 414, 431 for requests it cannot parse within its limits.
 *
 * Requests on one connection are handled one at a time; the next request is
 * not parsed before the current one is answered. A handler may answer later
 * (after an asynchronous lookup): the request stays valid until it is
 * finished with exactly one of ems_server_respond / ems_server_upgrade. If
 * the client went away meanwhile, that call returns EMS_ECLOSED and frees
 * the request.
 *
 * Deadlines: the TLS handshake plus the first request's headers must arrive
 * within handshake_timeout_ms; an idle keep-alive connection is closed after
 * keepalive_timeout_ms. At most max_connections connections (including the
 * WebSocket connections made from it) exist at once; more are accepted and
 * closed at once.
 *
 * Defences against clients that never authenticate (docs/deploy-cloud.md,
 * "Connection limits"). A connection counts as unauthenticated until the
 * handler upgrades it (the gateway upgrades only after authentication):
 *   - at most max_per_addr of them per client address (IPv6: per /64);
 *     more are closed right after accept, before any TLS state exists;
 *   - together they may use max_connections - reserve slots; when those are
 *     taken, the oldest idle one is closed to make room for the newcomer,
 *     so an attacker holding the share open cannot lock devices out;
 *   - TLS handshake steps get at most handshake_cpu_pct of the loop's time
 *     with bursts of handshake_burst_ms; the rest wait unread (handshakes
 *     already begun first, then new ones in arrival order; the deadline
 *     still runs), so connected clients keep their latency during a flood
 *     of new connections;
 *   - admission: a new TLS connection is accepted only while the handshakes
 *     already taken on (steps waiting at the budget, plus new connections
 *     silent for less than 1 s) times the estimated CPU of one handshake
 *     (a moving average of measured ones, 5 ms at first) fit in
 *     handshake_admit_ms at handshake_cpu_pct. Otherwise accepting pauses
 *     (libuv stops watching the listener) and later clients wait in the
 *     kernel's listen backlog, so the server keeps finishing handshakes at
 *     its capacity instead of starting more than it can finish before
 *     their deadline.
 * Output: a connection whose queued answers exceed out_pause bytes (a client
 * that pipelines requests and does not read) is not read or parsed further
 * until its queue drains. The queued output of all HTTP connections is
 * bounded by out_budget: when an answer takes it over, the connection with
 * the most output queued is closed. A single answer of any size (up to
 * max_out) still goes out.
 * Refusals are logged at most once per 10 s, with counts.
 *
 * SO_REUSEPORT (option `reuseport`) lets several gateway processes share a
 * port; libuv 1.44 has no flag for it, so the socket is created here, the
 * option set before bind, and the socket given to uv_tcp_open.
 *
 * Not thread-safe; everything runs on the server's loop.
 */
#ifndef EMS_SERVER_H
#define EMS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http.h"
#include "tls.h"
#include "ws.h"

typedef struct ems_server ems_server_t;
typedef struct ems_server_req ems_server_req_t;

/* Called for every complete request. Must finish `req` exactly once, now or
 * later (ems_server_respond or ems_server_upgrade). */
typedef void (*ems_server_handler_fn)(ems_server_req_t *req, void *user);

typedef struct ems_server_options {
    const char *host;         /* address to bind, e.g. "0.0.0.0", "::", "127.0.0.1" */
    uint16_t port;            /* 0 picks a free port (see ems_server_port) */
    ems_tls_config_t *tls;    /* server configuration; NULL for plain HTTP (a reference is taken) */
    bool reuseport;           /* set SO_REUSEPORT before bind */
    int backlog;              /* listen backlog; 0 means 511 */
    unsigned max_connections; /* 0 means 10000 */
    unsigned handshake_timeout_ms; /* TLS handshake + first request; 0 means 10000 */
    unsigned keepalive_timeout_ms; /* idle between requests; 0 means 30000 */
    ems_http_limits_t limits;      /* zero fields mean the defaults of ems_http_limits_default */
    size_t max_out;                /* output cap per HTTP connection; 0 means 1 MiB */
    size_t out_pause;              /* stop parsing above this queued output; 0 means 64 KiB */
    size_t out_budget;             /* queued output of all HTTP connections; 0 means 256 MiB */
    unsigned max_per_addr;         /* unauthenticated per address; 0 means no cap */
    unsigned reserve;              /* slots unauthenticated ones cannot take; 0 none */
    unsigned handshake_cpu_pct;    /* share of loop time for TLS handshakes; 0 means 50 */
    unsigned handshake_burst_ms;   /* handshake time allowed in one burst; 0 means 20 */
    /* TLS only: accept a new connection only while the handshakes already
     * taken on could be finished within this many ms at the budget (see
     * above); 0 means handshake_timeout_ms / 2. */
    unsigned handshake_admit_ms;
    /* TLS: a connection whose client last sent bytes (its ClientHello)
     * longer than this ago when it leaves the backlog is closed unserved:
     * its client has most likely given up (ems-edge's open timeout is 10 s).
     * 0: 7500. Counted as `abandoned`, like one the client closed. */
    unsigned backlog_max_age_ms;
    /* Header lines, each ending in "\r\n", added to every HTTP response the
     * server writes (the handler's answers and the server's own 4xx), e.g.
     * the policy layer's security headers. NULL for none; copied, at most
     * EMS_SERVER_MAX_HEADERS bytes (longer: ems_server_start fails with
     * EMS_EINVAL). Not added to the 101 of a WebSocket upgrade. */
    const char *headers;
} ems_server_options_t;

#define EMS_SERVER_MAX_HEADERS 1024

/* Binds, listens and starts accepting. Returns 0 and *out, or a libuv error
 * (e.g. UV_EADDRINUSE, UV_EINVAL for a bad address), EMS_EINVAL or
 * EMS_ENOMEM; then nothing is left open. */
int ems_server_start(uv_loop_t *loop, const ems_server_options_t *opts,
                     ems_server_handler_fn handler, void *user, ems_server_t **out);

/* The port actually bound (useful with port 0). */
uint16_t ems_server_port(const ems_server_t *s);

/* Replaces the TLS configuration for new connections (certificate reload);
 * existing connections keep theirs. Takes a reference to `tls`. A server
 * started without TLS ignores this (returns EMS_EINVAL). */
int ems_server_set_tls(ems_server_t *s, ems_tls_config_t *tls);

/* Live connections (HTTP and WebSocket made from this server). */
size_t ems_server_connections(const ems_server_t *s);

/* Counters since start and current values, for metrics. */
typedef struct ems_server_stats {
    uint64_t accepted;    /* connections accepted */
    uint64_t refused;     /* closed at once: any limit below, max_connections, stopping */
    uint64_t requests;    /* complete requests handed to the handler */
    uint64_t http_errors; /* requests refused by the server itself (400/413/414/431) */
    uint64_t upgrades;    /* successful WebSocket upgrades */
    uint64_t refused_addr;   /* closed at accept: over max_per_addr */
    uint64_t refused_share;  /* closed at accept: unauthenticated share full, none idle */
    uint64_t evicted;        /* idle unauthenticated ones closed to make room */
    uint64_t out_paused;     /* times a connection stopped being read for its unread answers */
    uint64_t out_shed;       /* connections closed over out_budget */
    uint64_t hs_deferred;    /* TLS handshake steps that waited for the CPU budget */
    uint64_t accept_paused;  /* times accepting paused (handshakes queued past admit) */
    uint64_t abandoned;      /* taken off the backlog closed by the client, or too old to serve */
    /* Current values: */
    uint64_t unauth;         /* connections not upgraded (yet) */
    uint64_t out_bytes;      /* queued output of all HTTP connections */
    uint64_t hs_waiting;     /* connections waiting at the handshake budget */
    uint64_t accept_held;    /* 1 while accepting is paused */
    uint64_t hs_cost_ns;     /* estimated CPU of one handshake (moving average) */
} ems_server_stats_t;
void ems_server_stats(const ems_server_t *s, ems_server_stats_t *out);

/* Stops: closes the listener and every connection still speaking HTTP.
 * WebSocket connections made by ems_server_upgrade belong to the caller,
 * who closes them (e.g. with 1001). `on_stopped` (may be NULL) runs once the
 * listener and all connections are closed and every pending request has
 * been finished; the server is freed right after it. */
void ems_server_stop(ems_server_t *s, void (*on_stopped)(void *arg), void *arg);

/* ---- the request being handled ---- */

/* The parsed request: valid until the request is finished. */
const ems_http_msg_t *ems_server_req_msg(const ems_server_req_t *req);

/* The connection the request came on (peer address). NULL once the client
 * has gone. */
ems_conn_t *ems_server_req_conn(const ems_server_req_t *req);

/* 1 if the client has gone (the answer would be dropped). */
int ems_server_req_gone(const ems_server_req_t *req);

/* Answers and finishes the request. `extra_headers` are lines ending in
 * "\r\n" (NULL for none); the connection stays open for the next request
 * if the request allowed keep-alive and the server is not stopping (the
 * body is always read completely before the handler runs). Returns 0,
 * EMS_ECLOSED (client gone; the request is freed anyway), EMS_ENOSPC or
 * EMS_ENOMEM (the connection is closed). */
int ems_server_respond(ems_server_req_t *req, int status, const char *content_type,
                       const char *extra_headers, const void *body, size_t body_len);

/* Validates the request as a WebSocket upgrade (ems_http_ws_check_request),
 * answers 101 with `extra_headers` (NULL for none), and returns the new
 * WebSocket connection in *out (server role). On an invalid upgrade request
 * answers 400 (or 426) itself and returns EMS_EPROTO. Returns EMS_ECLOSED
 * if the client has gone. In every case the request is finished. */
int ems_server_upgrade(ems_server_req_t *req, const ems_ws_options_t *opts,
                       const ems_ws_callbacks_t *cbs, void *user, const char *extra_headers,
                       ems_ws_t **out);

#endif
