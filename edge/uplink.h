/* uplink.h: the edge's one connection to the cloud, and the policy that
 * keeps it up.
 *
 * Mechanism lives in common/net (client.h: TLS through mbedTLS with the CA
 * and the host name checked, WebSocket through wslay, ping/pong keepalive);
 * this module decides when to connect and what a connection means:
 *
 *   - connect to the configured URL with "Authorization: Bearer <token>";
 *     the token file is read again before every attempt, so a rotated token
 *     is picked up without a restart;
 *   - after the upgrade, wait for the gateway's welcome (at most
 *     welcome_timeout_ms; a gateway that sends none is used anyway, with a
 *     warning) and then report the link READY;
 *   - when an attempt fails or a link drops, wait a backoff delay
 *     (exponential with full jitter, backoff_min_ms doubling to
 *     backoff_max_ms; a link that stayed up for stable_ms starts the series
 *     over) and try again, forever;
 *   - log every change of state with the reason, the attempt number, the
 *     reconnect count and the delay.
 *
 * Incoming messages are parsed once here (ems_jr_parse, strict) and
 * classified (common/message.h); a message that is not JSON is logged
 * (rate-limited) and dropped, it never closes the link. Messages larger than
 * max_message close the link with 1009 (the WebSocket layer does that) and
 * the uplink reconnects.
 *
 * Lifetime: one uv_timer plus the WebSocket. ems_uplink_stop() closes the
 * WebSocket with 1000 and a close frame, then the timer, then calls the
 * caller's callback and frees the uplink. Not thread-safe.
 */
#ifndef EMS_EDGE_UPLINK_H
#define EMS_EDGE_UPLINK_H

#include "message.h"
#include "welcome.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ems_uplink ems_uplink_t;

typedef enum {
    EMS_UPLINK_STOPPED = 0, /* not started, or stopped */
    EMS_UPLINK_WAITING,     /* backoff delay before the next attempt */
    EMS_UPLINK_CONNECTING,  /* TCP, TLS and the upgrade under way */
    EMS_UPLINK_OPEN,        /* upgraded; waiting for the welcome */
    EMS_UPLINK_READY,       /* messages flow both ways */
    EMS_UPLINK_CLOSING,     /* ems_uplink_stop: the close handshake runs */
} ems_uplink_state_t;

/* "stopped", "waiting", "connecting", "open", "ready", "closing". */
const char *ems_uplink_state_name(ems_uplink_state_t s);

typedef struct {
    const char *url;             /* ws:// or wss:// with the device path; copied */
    const char *ca_file;         /* wss: PEM CA bundle; copied */
    const char *token_file;      /* 64-hex device token; copied; read per attempt */
    unsigned ping_ms;            /* keepalive ping after this much silence */
    unsigned idle_timeout_ms;    /* the link is dead after this much silence */
    unsigned open_timeout_ms;    /* connect + TLS + upgrade */
    unsigned welcome_timeout_ms; /* wait for the welcome after the upgrade */
    uint64_t backoff_min_ms, backoff_max_ms;
    uint64_t stable_ms; /* a link up this long resets the backoff */
    uint64_t seed;      /* jitter seed (e.g. from getrandom) */
    size_t max_message; /* largest message accepted from the gateway */
} ems_uplink_config_t;

/* Fills the defaults: ping 5 s, idle 15 s, open 10 s, welcome 5 s, backoff
 * 1 s..60 s, stable 10 s, max_message 65536; url/ca/token NULL. */
void ems_uplink_config_default(ems_uplink_config_t *c);

typedef struct {
    /* The link is ready; `w` is the welcome (NULL if none came in time).
     * `local_utc_ms`/`mono_ms`: the local clocks read when it arrived. */
    void (*on_ready)(void *ud, const ems_welcome_t *w, int64_t local_utc_ms, int64_t mono_ms);
    /* A JSON message from the gateway (not the welcome), already parsed and
     * classified; `root` is borrowed for the call. */
    void (*on_message)(void *ud, ems_msg_kind_t kind, const json_t *root, const char *text,
                       size_t len);
    /* A READY link ended (never called for attempts that failed before). */
    void (*on_down)(void *ud);
} ems_uplink_callbacks_t;

/* Checks the config and builds the TLS configuration (wss://). Returns 0
 * and *out (state STOPPED), EMS_EINVAL (bad URL) or EMS_ECONFIG (the CA
 * file cannot be used; the reason is logged). */
int ems_uplink_new(uv_loop_t *loop, const ems_uplink_config_t *cfg,
                   const ems_uplink_callbacks_t *cbs, void *ud, ems_uplink_t **out);

/* Starts the first attempt now. */
void ems_uplink_start(ems_uplink_t *u);

/* Sends a text message. Only while READY: EMS_ECLOSED otherwise. Other
 * errors as ems_ws_send_text (EMS_ENOSPC: the send queue is full). */
int ems_uplink_send(ems_uplink_t *u, const char *text, size_t len);

/* True while READY. */
bool ems_uplink_ready(const ems_uplink_t *u);

/* Bytes waiting in the send queue of the current link (0 without one). */
size_t ems_uplink_queued(const ems_uplink_t *u);

/* Drops the current link at once (no close frame) and reconnects after a
 * backoff delay; `why` is logged. For a link whose send queue overflowed. */
void ems_uplink_drop(ems_uplink_t *u, const char *why);

/* Loads another CA file for the next attempts (SIGHUP). On failure the old
 * one stays and the error is returned (logged). */
int ems_uplink_reload_ca(ems_uplink_t *u, const char *ca_file);

/* Closes the link with 1000 and the close frame (waiting for the peer's
 * answer at most the WebSocket's close timeout), stops retrying, then calls
 * on_stopped(arg) and frees u. Calling it again forces the close (abort). */
void ems_uplink_stop(ems_uplink_t *u, void (*on_stopped)(void *arg), void *arg);

typedef struct {
    ems_uplink_state_t state;
    uint64_t attempts;   /* connection attempts started */
    uint64_t connects;   /* attempts that reached READY */
    uint64_t reconnects; /* READY after the first one */
    uint64_t failures;   /* attempts that ended before READY */
    uint64_t drops;      /* READY links that ended */
    uint64_t msgs_in, msgs_out, bad_in;
    int64_t ready_since_ms; /* monotonic ms when READY began; 0 when not READY */
    int64_t retry_at_ms;    /* monotonic ms of the next attempt while WAITING */
    bool tls;
    char last_error[256]; /* why the last attempt or link ended */
} ems_uplink_stats_t;

void ems_uplink_stats(const ems_uplink_t *u, ems_uplink_stats_t *out);

#endif
