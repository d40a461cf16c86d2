/* backfill.c: the backlog behind the live packets (see backfill.h). */
#include "backfill.h"

#include "error.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define BF__HEAD "{\"type\":\"telemetry_batch\",\"packets\":["
#define BF__TAIL "]}"
#define BF__MARK ",\"backfill\":true}"

void ems_backfill_config_default(ems_backfill_config_t *c)
{
    c->batch_max = 100;
    c->frame_max = 60000;
    c->interval_ms = 200;
    c->inflight_max = 4;
    c->ack_timeout_ms = 60000;
}

static void bf__clamp(ems_backfill_config_t *c)
{
    if (c->batch_max < 1)
        c->batch_max = 1;
    if (c->batch_max > EMS_BATCH_MAX)
        c->batch_max = EMS_BATCH_MAX;
    if (c->frame_max > EMS_BACKFILL_FRAME_MAX)
        c->frame_max = EMS_BACKFILL_FRAME_MAX;
    if (c->frame_max < 2048)
        c->frame_max = 2048;
    if (c->inflight_max < 1)
        c->inflight_max = 1;
    if (c->inflight_max > EMS_BACKFILL_INFLIGHT_MAX)
        c->inflight_max = EMS_BACKFILL_INFLIGHT_MAX;
    if (c->interval_ms < 0)
        c->interval_ms = 0;
    if (c->ack_timeout_ms < 1)
        c->ack_timeout_ms = 1;
}

int ems_backfill_init(ems_backfill_t *b, ems_store_t *store, const ems_backfill_config_t *cfg)
{
    memset(b, 0, sizeof *b);
    b->store = store;
    b->cfg = *cfg;
    bf__clamp(&b->cfg);
    /* One buffer of the largest frame, made once: the batch is built in
     * place from the store's records, no allocation per batch. */
    b->buf = malloc(EMS_BACKFILL_FRAME_MAX + 1);
    return b->buf ? 0 : EMS_ENOMEM;
}

void ems_backfill_free(ems_backfill_t *b)
{
    free(b->buf);
    b->buf = NULL;
}

void ems_backfill_set_config(ems_backfill_t *b, const ems_backfill_config_t *cfg)
{
    b->cfg = *cfg;
    bf__clamp(&b->cfg);
}

static void bf__forget(ems_backfill_t *b)
{
    memset(b->flight_used, 0, sizeof b->flight_used);
    b->inflight = 0;
    b->live_head = b->live_count = 0;
}

void ems_backfill_session(ems_backfill_t *b)
{
    ems_store_session_start(b->store);
    bf__forget(b);
    b->session = true;
    b->active = false;
    b->exhausted = false;
}

void ems_backfill_down(ems_backfill_t *b)
{
    bf__forget(b);
    b->session = b->active = false;
}

void ems_backfill_live_sent(ems_backfill_t *b, uint64_t seq, int64_t now_ms)
{
    if (!b->session)
        return;
    if (!b->active) {
        b->active = true;
        b->next_ms = now_ms;
    }
    if (b->live_count == EMS_BACKFILL_LIVE_MAX) {
        /* Over a thousand live packets without an ack: the timeout has
         * restarted the session long ago; the oldest entry is dropped. */
        b->live_head = (b->live_head + 1) % EMS_BACKFILL_LIVE_MAX;
        b->live_count--;
    }
    ems_backfill__live_t *e = &b->live[(b->live_head + b->live_count) % EMS_BACKFILL_LIVE_MAX];
    e->seq = seq;
    e->sent_ms = now_ms;
    e->acked = false;
    b->live_count++;
}

bool ems_backfill_live_result(ems_backfill_t *b, uint64_t seq, int64_t now_ms, int rc)
{
    ems_backfill_live_sent(b, seq, now_ms);
    return rc == EMS_ENOSPC;
}

static bool bf__covered(const uint64_t (*r)[2], size_t n, uint64_t seq)
{
    for (size_t i = 0; i < n; i++)
        if (seq >= r[i][0] && seq <= r[i][1])
            return true;
    return false;
}

static void bf__live_pop(ems_backfill_t *b)
{
    while (b->live_count && b->live[b->live_head].acked) {
        b->live_head = (b->live_head + 1) % EMS_BACKFILL_LIVE_MAX;
        b->live_count--;
    }
}

/* Marks `seq`-matching entries done with the predicate `hit`. */
static void bf__retire(ems_backfill_t *b, const uint64_t (*r)[2], size_t n, bool single,
                       uint64_t one)
{
    for (unsigned i = 0; i < EMS_BACKFILL_INFLIGHT_MAX; i++) {
        if (!b->flight_used[i])
            continue;
        ems_backfill__flight_t *f = &b->flights[i];
        for (unsigned k = 0; k < f->n; k++) {
            if (f->done[k])
                continue;
            if (single ? f->seq[k] == one : bf__covered(r, n, f->seq[k])) {
                f->done[k] = true;
                f->left--;
                b->st.acked++;
            }
        }
        if (f->left == 0) {
            b->flight_used[i] = false;
            b->inflight--;
        }
    }
    for (unsigned k = 0; k < b->live_count; k++) {
        ems_backfill__live_t *e = &b->live[(b->live_head + k) % EMS_BACKFILL_LIVE_MAX];
        if (!e->acked && (single ? e->seq == one : bf__covered(r, n, e->seq)))
            e->acked = true;
    }
    bf__live_pop(b);
}

void ems_backfill_acked(ems_backfill_t *b, const uint64_t (*ranges)[2], size_t n)
{
    bf__retire(b, ranges, n, false, 0);
}

void ems_backfill_nacked(ems_backfill_t *b, uint64_t seq)
{
    bf__retire(b, NULL, 0, true, seq);
}

/* Everything unacknowledged becomes eligible again. */
static void bf__restart(ems_backfill_t *b)
{
    ems_store_session_start(b->store);
    bf__forget(b);
    b->exhausted = false;
    b->st.restarts++;
}

static bool bf__overdue(const ems_backfill_t *b, int64_t now_ms, uint64_t *seq_out)
{
    for (unsigned i = 0; i < EMS_BACKFILL_INFLIGHT_MAX; i++) {
        if (!b->flight_used[i])
            continue;
        const ems_backfill__flight_t *f = &b->flights[i];
        if (now_ms - f->sent_ms >= b->cfg.ack_timeout_ms) {
            for (unsigned k = 0; k < f->n; k++)
                if (!f->done[k]) {
                    *seq_out = f->seq[k];
                    break;
                }
            return true;
        }
    }
    if (b->live_count) {
        const ems_backfill__live_t *e = &b->live[b->live_head];
        if (now_ms - e->sent_ms >= b->cfg.ack_timeout_ms) {
            *seq_out = e->seq;
            return true;
        }
    }
    return false;
}

/* The store's callback: appends one record, re-marked as backfill. */
static int bf__take(void *ctx, const ems_store_rec_t *rec)
{
    ems_backfill_t *b = ctx;
    ems_backfill__flight_t *f = b->building;
    const char *d = rec->data;
    size_t len = rec->len;
    /* Room for a comma, the record without its '}', the mark, the tail. */
    size_t need = 1 + len + sizeof BF__MARK + sizeof BF__TAIL;
    if (b->len + need > b->cfg.frame_max)
        return f->n ? 1 : 0; /* full; a lone oversized record is taken and dropped below */
    if (len < 2 || d[0] != '{' || d[len - 1] != '}' || b->len + need > b->cfg.frame_max) {
        /* Not an encoded object: the encoder wrote it, so this cannot
         * happen short of a bug; it would poison every batch, so it is
         * taken here and deleted (like a nack) after the scan. */
        if (b->nbad < EMS_BATCH_MAX)
            b->bad[b->nbad++] = rec->seq;
        return 0;
    }
    if (f->n)
        b->buf[b->len++] = ',';
    memcpy(b->buf + b->len, d, len - 1);
    b->len += len - 1;
    memcpy(b->buf + b->len, BF__MARK, sizeof BF__MARK - 1);
    b->len += sizeof BF__MARK - 1;
    f->seq[f->n] = rec->seq;
    f->done[f->n] = false;
    f->n++;
    return 0;
}

int ems_backfill_pump(ems_backfill_t *b, int64_t now_ms, bool link_idle, ems_backfill_send_fn send,
                      void *ud)
{
    if (!b->active)
        return 0;
    uint64_t late = 0;
    if (bf__overdue(b, now_ms, &late)) {
        ems_log_warn("backfill: no ack for seq %llu after %lld ms; sending every "
                     "unacknowledged packet again",
                     (unsigned long long)late, (long long)b->cfg.ack_timeout_ms);
        bf__restart(b);
    }
    if (b->exhausted || now_ms < b->next_ms || b->inflight >= b->cfg.inflight_max || !link_idle)
        return 0;

    unsigned slot = 0;
    while (slot < EMS_BACKFILL_INFLIGHT_MAX && b->flight_used[slot])
        slot++;
    if (slot == EMS_BACKFILL_INFLIGHT_MAX)
        return 0;
    ems_backfill__flight_t *f = &b->flights[slot];
    f->n = 0;
    b->building = f;
    b->nbad = 0;
    b->len = sizeof BF__HEAD - 1;
    memcpy(b->buf, BF__HEAD, b->len);
    int rc = ems_store_backlog(b->store, EMS_STORE_OLDEST_FIRST, b->cfg.batch_max, bf__take, b);
    b->building = NULL;
    for (unsigned i = 0; i < b->nbad; i++) {
        ems_log_error("backfill: buffered packet seq %llu is not a JSON object; dropped",
                      (unsigned long long)b->bad[i]);
        ems_store_nack(b->store, b->bad[i]);
    }
    if (rc < 0) {
        ems_log_error("backfill: reading the buffer failed: %s", ems_strerror(rc));
        bf__restart(b);
        b->next_ms = now_ms + b->cfg.interval_ms;
        return rc;
    }
    if (f->n == 0) {
        if (rc == 0)
            b->exhausted = true;
        return 0;
    }
    memcpy(b->buf + b->len, BF__TAIL, sizeof BF__TAIL - 1);
    b->len += sizeof BF__TAIL - 1;
    b->buf[b->len] = '\0';
    b->next_ms = now_ms + b->cfg.interval_ms;
    rc = send(ud, b->buf, b->len);
    if (rc < 0) {
        /* The store counts these as sent in this session; restart it so
         * they are not skipped. */
        bf__restart(b);
        return rc;
    }
    f->left = f->n;
    f->sent_ms = now_ms;
    b->flight_used[slot] = true;
    b->inflight++;
    b->st.batches++;
    b->st.packets += f->n;
    return 1;
}

bool ems_backfill_busy(const ems_backfill_t *b)
{
    return b->session && (!b->exhausted || b->inflight > 0);
}

void ems_backfill_stats(const ems_backfill_t *b, ems_backfill_stats_t *out)
{
    *out = b->st;
    out->inflight = b->inflight;
    out->active = b->active;
    out->exhausted = b->exhausted;
}
