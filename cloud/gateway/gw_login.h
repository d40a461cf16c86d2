/* gw_login.h: admission control for password logins.
 *
 * A login costs one PBKDF2 hash (tenths of a second of CPU on purpose), so
 * the work an attacker can make the gateway do must be bounded before it is
 * started, not counted after it finished:
 *
 *   - Per client address, a token bucket of `per_min` failures a minute.
 *     An attempt in flight counts as a failure until it succeeds, so an
 *     address with n attempts in flight is admitted only while the bucket
 *     holds more than n tokens: 200 concurrent wrong passwords cost at most
 *     `per_min` hashes, not 200.
 *   - Globally, at most `workers` attempts hash at once (libuv's thread pool
 *     has 4 threads and serves other work too), and at most `queue` wait
 *     for a turn, in arrival order.
 *   - Fairness while under attack: an address has at most one attempt
 *     waiting, so a legitimate login waits behind at most one attempt of
 *     each other address, and the last quarter of the queue is kept for
 *     addresses without recent failures.
 *
 * The module is pure (the caller passes monotonic milliseconds) and knows
 * nothing of HTTP: the caller turns its answers into 429/503. Waiters are
 * the caller's structures (gw_login_waiter_t embedded in them); the table
 * owns only its per-address records, which it forgets once they are idle
 * and their bucket is full again.
 */
#ifndef GW_LOGIN_H
#define GW_LOGIN_H

#include "gw_map.h"
#include "gw_rate.h"

#include <stdbool.h>
#include <stdint.h>

#define GW_LOGIN_ADDR_MAX 64
#define GW_LOGIN_TABLE_MAX 65536 /* address records kept at most */

typedef struct gw_login_addr gw_login_addr_t;

/* One attempt waiting for a hash slot (embedded in the caller's context). */
typedef struct gw_login_waiter {
    gw_login_addr_t *addr; /* set by gw_login_begin */
    int state;             /* 0 idle, 1 holds a slot, 2 queued */
    struct gw_login_waiter *next;
} gw_login_waiter_t;

typedef struct {
    int64_t per_min; /* failures per address per minute (the bucket) */
    int workers;     /* hashes at once */
    int queue;       /* attempts waiting at most */
    gw_map_t addrs;  /* address -> gw_login_addr_t */
    int running;     /* slots in use */
    int waiting;     /* length of the queue */
    gw_login_waiter_t *head, *tail;
} gw_login_t;

/* Answers of gw_login_begin. */
enum {
    GW_LOGIN_RUN = 0,       /* go ahead now (a slot is held) */
    GW_LOGIN_QUEUED = 1,    /* wait: gw_login_end of another attempt hands over its slot */
    GW_LOGIN_THROTTLED = 2, /* too many failures, or one attempt waits already: 429 */
    GW_LOGIN_BUSY = 3,      /* the queue is full (for this address): 503 */
};

void gw_login_init(gw_login_t *l, int64_t per_min, int workers, int queue);
/* Frees the address records (waiters are the caller's). */
void gw_login_free(gw_login_t *l);

/* Admits an attempt from `addr` at `now_ms` and asks for a hash slot.
 * GW_LOGIN_RUN or GW_LOGIN_QUEUED: the attempt is in flight, and the caller
 * must end it with exactly one gw_login_end. THROTTLED/BUSY: nothing was
 * taken; *retry_s says when to try again. EMS_ENOMEM on allocation failure. */
int gw_login_begin(gw_login_t *l, gw_login_waiter_t *w, const char *addr, int64_t now_ms,
                   int *retry_s);

/* Ends an attempt: gives back its slot (if it still held one or waited) and
 * charges a failure unless `ok`. Returns the next waiter, which now holds
 * the slot and must be started by the caller, or NULL. */
gw_login_waiter_t *gw_login_end(gw_login_t *l, gw_login_waiter_t *w, bool ok, int64_t now_ms);

/* Takes a free slot for background work (rehashing a password) if there is
 * one and nobody waits. True if taken; give it back with gw_login_put_slot. */
bool gw_login_take_slot(gw_login_t *l);
/* Returns a slot taken by gw_login_take_slot; returns the next waiter to
 * start (it holds the slot now), or NULL. */
gw_login_waiter_t *gw_login_put_slot(gw_login_t *l);

/* Charges one failure to `addr` without an attempt in flight (a request
 * refused before hashing, e.g. a malformed user name). */
void gw_login_fail(gw_login_t *l, const char *addr, int64_t now_ms);

/* Forgets idle addresses whose bucket is full again. */
void gw_login_sweep(gw_login_t *l, int64_t now_ms);

/* The address part used as the bucket key: an IPv4 address as is, an IPv6
 * address cut to its /64 (one subscriber usually holds a whole /64). */
void gw_login_addr_key(const char *host, char *out, size_t cap);

#endif
