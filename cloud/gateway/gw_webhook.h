/* gw_webhook.h: delivery of alarm events to webhooks (docs/alarms.md).
 *
 * The outbox is in PostgreSQL: the alarm_events table holds every alarm
 * change, and webhook_cursors one row per webhook (named by its URL) with
 * the last event delivered and a lease. Each webhook here runs one loop:
 *
 *   claim   QUERY webhook_claim: take (or renew) the lease for this
 *           gateway and read the first event after the cursor;
 *   post    HTTP POST of the event's JSON with an HMAC-SHA256 signature,
 *           over common/net/conn.c (http:// or https://), parsed with
 *           common/net/http.c;
 *   advance QUERY webhook_advance: move the cursor past the event (only
 *           while holding the lease).
 *
 * A failed attempt (connection error, timeout, a status other than 2xx)
 * is retried after a delay with exponential backoff and full jitter
 * (common/net/backoff.h); after `retries` attempts the event is
 * dead-lettered (counted, the cursor moves past it). Events go out one at
 * a time in event order, so they are ordered per device. Nothing is kept
 * in memory that a restart could lose: the cursor moves only after a 2xx,
 * so an event is delivered at least once (a receiver deduplicates by
 * X-EMS-Event-Id). With several gateways the lease lets one of them
 * deliver; another takes over when the lease runs out.
 */
#ifndef GW_WEBHOOK_H
#define GW_WEBHOOK_H

#include "gw_link.h"
#include "metrics.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw_webhooks gw_webhooks_t;

typedef struct {
    const char *urls;        /* comma-separated http(s) URLs */
    const char *secret_file; /* HMAC key (trimmed of a trailing newline); may be "" */
    const char *ca_file;     /* for https */
    const char *owner;       /* this gateway's instance name (the lease owner) */
    unsigned retries;
    uint64_t backoff_ms, backoff_max_ms;
    unsigned timeout_ms;
    unsigned lease_s;
    gw_link_t **link; /* the gateway's link pointer (NULL while shutting down) */
    ems_metric_t *delivered, *failed, *dead; /* counters; may be NULL */
} gw_webhooks_opts_t;

/* Parses the URLs and starts delivering. Returns 0 (also with no URL: then
 * nothing runs), EMS_ECONFIG (a bad URL or an unreadable secret, logged)
 * or EMS_ENOMEM. */
int gw_webhooks_new(uv_loop_t *loop, const gw_webhooks_opts_t *o, gw_webhooks_t **out);

/* Stops: aborts a delivery in progress (it is sent again later, by this
 * gateway after a restart or by another one) and closes the timer; the
 * memory is freed once every handle is closed. NULL is allowed. */
void gw_webhooks_free(gw_webhooks_t *w);

/* Exposed for tests: splits "http(s)://host[:port][/path]". Returns 0 or
 * EMS_EINVAL. */
int gw_webhook_parse_url(const char *url, int *tls, char *host, size_t hcap, uint16_t *port,
                         char *path, size_t pcap);

/* Exposed for tests: the signature header value "sha256=<64 hex>" of
 * "<timestamp>.<body>" under `key`. Returns 0 or EMS_EIO. */
int gw_webhook_sign(const void *key, size_t key_len, const char *timestamp, const char *body,
                    size_t len, char out[72]);

#endif
