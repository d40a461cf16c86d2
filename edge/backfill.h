/* backfill.h: draining the edge's buffer to the cloud behind the live packets.
 *
 * Policy only; the buffer is edge/store.h and the socket belongs to the
 * caller (a send callback). docs/edge-daemon.md, "Backfill" has the story:
 *
 *   - On every new connection (after the welcome) ems_backfill_session()
 *     starts a store session: every packet still unacknowledged becomes
 *     backlog, packets appended from then on are live.
 *   - The live packet goes first. The backlog starts moving only after the
 *     session's first live packet was sent (ems_backfill_live_sent()).
 *   - ems_backfill_pump(), called every backfill_interval_ms, sends at most
 *     one telemetry_batch of up to batch_max packets (oldest first, each
 *     re-marked "backfill": true) when fewer than inflight_max batches are
 *     unacknowledged and the caller says the socket is idle. So a batch never
 *     queues in front of a live packet for longer than one batch takes to
 *     write, and the rate is bounded both ways: by the interval and by the
 *     acks coming back.
 *   - Acks (ems_backfill_acked) and nacks retire the batches in flight.
 *   - A batch or a live packet without an ack for ack_timeout_ms means the
 *     cloud lost it without dropping the link (a gateway restart behind a
 *     proxy, a bug): the store session is restarted, so everything still
 *     unacknowledged is sent again. The cloud deduplicates by seq.
 *
 * No clock reads and no I/O except through the store and the callback.
 * Plain data owned by the caller (about 100 KiB: embed it in a heap object).
 */
#ifndef EMS_EDGE_BACKFILL_H
#define EMS_EDGE_BACKFILL_H

#include "batch.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_BACKFILL_INFLIGHT_MAX 64
#define EMS_BACKFILL_LIVE_MAX 1024   /* live packets tracked for the ack timeout */
#define EMS_BACKFILL_FRAME_MAX 65536 /* the protocol's message limit (docs/protocol.md) */

typedef struct {
    unsigned batch_max;     /* packets per batch, 1..EMS_BATCH_MAX */
    size_t frame_max;       /* bytes per batch message, <= EMS_BACKFILL_FRAME_MAX */
    int64_t interval_ms;    /* between two batches */
    unsigned inflight_max;  /* unacknowledged batches, 1..EMS_BACKFILL_INFLIGHT_MAX */
    int64_t ack_timeout_ms; /* resend what has no ack after this long */
} ems_backfill_config_t;

/* Defaults: 100 packets, 60000 bytes, 200 ms, 4 in flight, 60 s. */
void ems_backfill_config_default(ems_backfill_config_t *c);

/* Sends one text message; returns 0 or a negative EMS_E* code. */
typedef int (*ems_backfill_send_fn)(void *ud, const char *text, size_t len);

typedef struct {
    uint64_t batches;  /* batches sent */
    uint64_t packets;  /* packets sent in batches */
    uint64_t acked;    /* packets of batches acknowledged */
    uint64_t restarts; /* sessions restarted after an ack timeout or a failed send */
    unsigned inflight; /* batches sent and not fully acknowledged */
    bool active;       /* a session runs and its first live packet went out */
    bool exhausted;    /* nothing unsent left in this session */
} ems_backfill_stats_t;

typedef struct {
    unsigned n, left;
    int64_t sent_ms;
    uint64_t seq[EMS_BATCH_MAX];
    bool done[EMS_BATCH_MAX];
} ems_backfill__flight_t;

typedef struct {
    uint64_t seq;
    int64_t sent_ms;
    bool acked;
} ems_backfill__live_t;

typedef struct {
    ems_backfill_config_t cfg;
    ems_store_t *store; /* borrowed */
    bool session, active, exhausted;
    int64_t next_ms;
    ems_backfill__flight_t flights[EMS_BACKFILL_INFLIGHT_MAX];
    bool flight_used[EMS_BACKFILL_INFLIGHT_MAX];
    unsigned inflight;
    ems_backfill__live_t live[EMS_BACKFILL_LIVE_MAX];
    unsigned live_head, live_count;
    /* the batch being built */
    char *buf;
    size_t len;
    ems_backfill__flight_t *building;
    uint64_t bad[EMS_BATCH_MAX];
    unsigned nbad;
    ems_backfill_stats_t st;
} ems_backfill_t;

/* `store` must outlive b. The config is copied and clamped to the limits
 * above. Returns 0 or EMS_ENOMEM. */
int ems_backfill_init(ems_backfill_t *b, ems_store_t *store, const ems_backfill_config_t *cfg);
void ems_backfill_free(ems_backfill_t *b);

/* Replaces the config (reload); batches in flight are kept. */
void ems_backfill_set_config(ems_backfill_t *b, const ems_backfill_config_t *cfg);

/* A new connection is ready: starts a store session and forgets what was
 * in flight on the old one. */
void ems_backfill_session(ems_backfill_t *b);

/* The link is gone: nothing more is sent until the next session. */
void ems_backfill_down(ems_backfill_t *b);

/* A live packet `seq` was handed to the socket at now_ms. The first one of
 * a session lets the backlog start. */
void ems_backfill_live_sent(ems_backfill_t *b, uint64_t seq, int64_t now_ms);

/* The caller tried to send live packet `seq` at now_ms and the send
 * returned `rc` (0 or a negative EMS_E* code). Sent or not, the packet is
 * tracked for the ack timeout: it is in the store, so the timeout's session
 * restart sends it again (a failed send that leaves the link up would
 * otherwise wait for the next reconnect). Returns true when the caller
 * should drop the link: a full send queue at one packet a second means the
 * link is dead or hopeless, and a new one resends everything. */
bool ems_backfill_live_result(ems_backfill_t *b, uint64_t seq, int64_t now_ms, int rc);

/* The cloud acknowledged n inclusive ranges (the store is updated by the
 * caller). */
void ems_backfill_acked(ems_backfill_t *b, const uint64_t (*ranges)[2], size_t n);

/* The cloud refused `seq` for good. */
void ems_backfill_nacked(ems_backfill_t *b, uint64_t seq);

/* Does what is due at now_ms: restarts the session when an ack is overdue,
 * then sends at most one batch if the session is active, the interval has
 * passed, fewer than inflight_max batches are in flight, the backlog has
 * unsent packets and `link_idle` (the caller's socket has nothing queued).
 * Returns 1 when a batch was sent, 0 when nothing was due, or the negative
 * error of the store or of `send` (then the session is restarted so the
 * packets taken are sent again later). */
int ems_backfill_pump(ems_backfill_t *b, int64_t now_ms, bool link_idle, ems_backfill_send_fn send,
                      void *ud);

/* True while the session has backlog to send or batches in flight. */
bool ems_backfill_busy(const ems_backfill_t *b);

void ems_backfill_stats(const ems_backfill_t *b, ems_backfill_stats_t *out);

#endif
