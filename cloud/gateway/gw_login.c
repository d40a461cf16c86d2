/* gw_login.c: admission control for password logins (see gw_login.h). */
#include "gw_login.h"

#include "error.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_login_addr {
    char key[GW_LOGIN_ADDR_MAX]; /* key of gw_login_t.addrs */
    gw_rate_t r;                 /* failures */
    int inflight;                /* admitted, not ended */
    int waiting;                 /* of those, queued for a slot */
};

void gw_login_init(gw_login_t *l, int64_t per_min, int workers, int queue)
{
    memset(l, 0, sizeof *l);
    l->per_min = per_min < 1 ? 1 : per_min;
    l->workers = workers < 1 ? 1 : workers;
    l->queue = queue < 0 ? 0 : queue;
}

void gw_login_free(gw_login_t *l)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&l->addrs, &i, &k, &v);)
        free(v);
    gw_map_free(&l->addrs);
    l->head = l->tail = NULL;
    l->running = l->waiting = 0;
}

static double burst(const gw_login_t *l) { return (double)l->per_min; }
static double per_s(const gw_login_t *l) { return (double)l->per_min / 60.0; }

/* The bucket's level at now_ms (refilled; nothing taken). */
static double level(const gw_login_t *l, gw_login_addr_t *a, int64_t now_ms)
{
    gw_rate_t probe = a->r;
    if (!gw_rate_take(&probe, burst(l), per_s(l), now_ms))
        return probe.tokens;
    return probe.tokens + 1.0;
}

static bool idle_and_full(const gw_login_t *l, gw_login_addr_t *a, int64_t now_ms)
{
    return a->inflight == 0 && level(l, a, now_ms) >= burst(l);
}

void gw_login_sweep(gw_login_t *l, int64_t now_ms)
{
    /* The map must not change while it is walked: collect, then delete. */
    for (;;) {
        gw_login_addr_t *drop[64];
        size_t n = 0;
        const char *k;
        void *v;
        for (size_t i = 0; n < 64 && gw_map_next(&l->addrs, &i, &k, &v);)
            if (idle_and_full(l, v, now_ms))
                drop[n++] = v;
        for (size_t i = 0; i < n; i++) {
            gw_map_del(&l->addrs, drop[i]->key);
            free(drop[i]);
        }
        if (n < 64)
            return;
    }
}

static gw_login_addr_t *addr_get(gw_login_t *l, const char *key, int64_t now_ms)
{
    gw_login_addr_t *a = gw_map_get(&l->addrs, key);
    if (a)
        return a;
    if (l->addrs.len >= GW_LOGIN_TABLE_MAX) {
        gw_login_sweep(l, now_ms);
        if (l->addrs.len >= GW_LOGIN_TABLE_MAX)
            return NULL; /* every address is busy or failing: refuse */
    }
    a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    snprintf(a->key, sizeof a->key, "%s", key);
    if (gw_map_put(&l->addrs, a->key, a) != 0) {
        free(a);
        return NULL;
    }
    return a;
}

static gw_login_waiter_t *dispatch(gw_login_t *l)
{
    if (!l->head || l->running >= l->workers)
        return NULL;
    gw_login_waiter_t *w = l->head;
    l->head = w->next;
    if (!l->head)
        l->tail = NULL;
    w->next = NULL;
    l->waiting--;
    w->addr->waiting--;
    w->state = 1;
    l->running++;
    return w;
}

int gw_login_begin(gw_login_t *l, gw_login_waiter_t *w, const char *addr, int64_t now_ms,
                   int *retry_s)
{
    *retry_s = 1;
    memset(w, 0, sizeof *w);
    gw_login_addr_t *a = addr_get(l, addr, now_ms);
    if (!a)
        return l->addrs.len >= GW_LOGIN_TABLE_MAX ? GW_LOGIN_BUSY : EMS_ENOMEM;
    /* Every attempt in flight may still fail: admit only while the bucket
     * could pay for all of them and this one. */
    double have = level(l, a, now_ms), need = (double)a->inflight + 1.0;
    if (have < need) {
        double s = ceil((need - have) / per_s(l));
        *retry_s = s < 1 ? 1 : s > 3600 ? 3600 : (int)s;
        return GW_LOGIN_THROTTLED;
    }
    w->addr = a;
    if (l->running < l->workers && !l->head) {
        l->running++;
        a->inflight++;
        w->state = 1;
        return GW_LOGIN_RUN;
    }
    if (a->waiting > 0)
        return GW_LOGIN_THROTTLED; /* one waiting attempt per address */
    int reserve = l->queue / 4 > 0 ? l->queue / 4 : 1;
    bool clean = have >= burst(l);
    if (l->waiting >= l->queue || (!clean && l->waiting >= l->queue - reserve))
        return GW_LOGIN_BUSY;
    a->inflight++;
    a->waiting++;
    l->waiting++;
    w->state = 2;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    return GW_LOGIN_QUEUED;
}

gw_login_waiter_t *gw_login_end(gw_login_t *l, gw_login_waiter_t *w, bool ok, int64_t now_ms)
{
    gw_login_addr_t *a = w->addr;
    if (!a || w->state == 0)
        return NULL;
    a->inflight--;
    if (!ok)
        gw_rate_take(&a->r, burst(l), per_s(l), now_ms);
    int state = w->state;
    w->state = 0;
    w->addr = NULL;
    if (state == 2) {
        /* Still queued (the client went away): unlink it. */
        gw_login_waiter_t **p = &l->head, *prev = NULL;
        while (*p && *p != w) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) {
            *p = w->next;
            if (l->tail == w)
                l->tail = prev;
            l->waiting--;
            a->waiting--;
        }
        w->next = NULL;
        return NULL;
    }
    l->running--;
    return dispatch(l);
}

bool gw_login_take_slot(gw_login_t *l)
{
    if (l->running >= l->workers || l->head)
        return false;
    l->running++;
    return true;
}

gw_login_waiter_t *gw_login_put_slot(gw_login_t *l)
{
    l->running--;
    return dispatch(l);
}

void gw_login_fail(gw_login_t *l, const char *addr, int64_t now_ms)
{
    gw_login_addr_t *a = addr_get(l, addr, now_ms);
    if (a)
        gw_rate_take(&a->r, burst(l), per_s(l), now_ms);
}

void gw_login_addr_key(const char *host, char *out, size_t cap)
{
    size_t n = strlen(host);
    if (n > 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < 64) {
        char ip[64];
        memcpy(ip, host + 1, n - 2);
        ip[n - 2] = '\0';
        unsigned char b[16];
        if (inet_pton(AF_INET6, ip, b) == 1) {
            /* An IPv4-mapped address is one host; anything else counts by
             * its /64. */
            static const unsigned char v4map[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            if (memcmp(b, v4map, 12) != 0) {
                memset(b + 8, 0, 8);
                char txt[64];
                inet_ntop(AF_INET6, b, txt, sizeof txt);
                snprintf(out, cap, "[%s]/64", txt);
                return;
            }
        }
    }
    snprintf(out, cap, "%s", host);
}
