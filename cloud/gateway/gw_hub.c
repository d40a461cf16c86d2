/* gw_hub.c: device -> dashboards (see gw_hub.h). */
#include "gw_hub.h"

#include "error.h"
#include "telemetry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_hub_dev {
    char id[EMS_DEVICE_ID_MAX + 1]; /* the map's key lives here */
    void **subs;
    size_t len, cap;
};

void gw_hub_init(gw_hub_t *h) { memset(h, 0, sizeof *h); }

void gw_hub_free(gw_hub_t *h)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&h->by_dev, &i, &k, &v);) {
        gw_hub_dev_t *d = v;
        free(d->subs);
        free(d);
    }
    gw_map_free(&h->by_dev);
    free(h->all);
    for (size_t i = 0; i < h->nfleet_ents; i++)
        free(h->fleet[i]);
    free(h->fleet);
    gw_map_free(&h->fleet_by_dev);
    free(h->dirty);
    free(h->fleet_subs);
    memset(h, 0, sizeof *h);
}

static int push(void ***arr, size_t *len, size_t *cap, void *p)
{
    if (*len == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        void **n = realloc(*arr, ncap * sizeof *n);
        if (!n)
            return EMS_ENOMEM;
        *arr = n;
        *cap = ncap;
    }
    (*arr)[(*len)++] = p;
    return 0;
}

/* Removes p from an unordered array (swap with the last). */
static bool drop(void **arr, size_t *len, void *p)
{
    for (size_t i = 0; i < *len; i++) {
        if (arr[i] == p) {
            arr[i] = arr[--*len];
            return true;
        }
    }
    return false;
}

int gw_hub_sub(gw_hub_t *h, void *sub, gw_hub_subs_t *s, const char *device_id)
{
    if (s->all)
        return 0;
    gw_hub_dev_t *d = gw_map_get(&h->by_dev, device_id);
    if (d) {
        for (size_t i = 0; i < s->len; i++)
            if (s->devs[i] == d)
                return 0;
    }
    if (s->len >= GW_HUB_SUBS_MAX)
        return EMS_ENOSPC;
    bool fresh = false;
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d)
            return EMS_ENOMEM;
        strncpy(d->id, device_id, EMS_DEVICE_ID_MAX);
        if (gw_map_put(&h->by_dev, d->id, d) != 0) {
            free(d);
            return EMS_ENOMEM;
        }
        fresh = true;
    }
    if (push(&d->subs, &d->len, &d->cap, sub) != 0 ||
        push((void ***)&s->devs, &s->len, &s->cap, d) != 0) {
        drop(d->subs, &d->len, sub);
        if (fresh) {
            gw_map_del(&h->by_dev, d->id);
            free(d->subs);
            free(d);
        }
        return EMS_ENOMEM;
    }
    return 0;
}

static void release(gw_hub_t *h, gw_hub_dev_t *d, void *sub)
{
    drop(d->subs, &d->len, sub);
    if (d->len == 0) {
        gw_map_del(&h->by_dev, d->id);
        free(d->subs);
        free(d);
    }
}

void gw_hub_unsub(gw_hub_t *h, void *sub, gw_hub_subs_t *s, const char *device_id)
{
    gw_hub_dev_t *d = gw_map_get(&h->by_dev, device_id);
    if (d && drop((void **)s->devs, &s->len, d))
        release(h, d, sub);
}

static void clear_explicit(gw_hub_t *h, void *sub, gw_hub_subs_t *s)
{
    for (size_t i = 0; i < s->len; i++)
        release(h, s->devs[i], sub);
    s->len = 0;
}

int gw_hub_sub_all(gw_hub_t *h, void *sub, gw_hub_subs_t *s)
{
    if (s->all)
        return 0;
    if (push(&h->all, &h->nall, &h->capall, sub) != 0)
        return EMS_ENOMEM;
    clear_explicit(h, sub, s);
    s->all = true;
    return 0;
}

void gw_hub_unsub_all(gw_hub_t *h, void *sub, gw_hub_subs_t *s)
{
    if (!s->all)
        return;
    drop(h->all, &h->nall, sub);
    s->all = false;
}

void gw_hub_remove(gw_hub_t *h, void *sub, gw_hub_subs_t *s)
{
    gw_hub_unsub_fleet(h, s);
    gw_hub_unsub_all(h, sub, s);
    clear_explicit(h, sub, s);
    free(s->devs);
    memset(s, 0, sizeof *s);
}

size_t gw_hub_fanout(gw_hub_t *h, const char *device_id, void (*send)(void *sub, void *ud),
                     void *ud)
{
    size_t n = 0;
    gw_hub_dev_t *d = gw_map_get(&h->by_dev, device_id);
    if (d)
        for (size_t i = 0; i < d->len; i++, n++)
            send(d->subs[i], ud);
    for (size_t i = 0; i < h->nall; i++, n++)
        send(h->all[i], ud);
    return n;
}

size_t gw_hub_count(const gw_hub_t *h, const char *device_id)
{
    gw_hub_dev_t *d = gw_map_get(&h->by_dev, device_id);
    return d ? d->len : 0;
}

bool gw_hub_wants_all(const gw_hub_t *h) { return h->nall > 0 || h->nfleet > 0; }

/* ------------------------------------------------------------ the fleet view */

#define WORD_BITS 64

/* Makes s's pending set hold bit `idx`. */
static int pend_fit(gw_hub_subs_t *s, size_t idx)
{
    size_t need = idx / WORD_BITS + 1;
    if (need <= s->pend_words)
        return 0;
    size_t words = s->pend_words ? s->pend_words : 16;
    while (words < need)
        words *= 2;
    uint64_t *n = realloc(s->pending, words * sizeof *n);
    if (!n)
        return EMS_ENOMEM;
    memset(n + s->pend_words, 0, (words - s->pend_words) * sizeof *n);
    s->pending = n;
    s->pend_words = words;
    return 0;
}

static void pend_set(gw_hub_subs_t *s, size_t idx)
{
    if (pend_fit(s, idx) < 0)
        return; /* out of memory: this update is lost, the next one may do */
    uint64_t bit = (uint64_t)1 << (idx % WORD_BITS);
    if (!(s->pending[idx / WORD_BITS] & bit)) {
        s->pending[idx / WORD_BITS] |= bit;
        s->npending++;
        if (idx / WORD_BITS < s->pend_from)
            s->pend_from = idx / WORD_BITS;
    }
}

int gw_hub_sub_fleet(gw_hub_t *h, gw_hub_subs_t *s)
{
    if (s->fleet)
        return 0;
    if (h->nfleet == h->capfleet) {
        size_t ncap = h->capfleet ? h->capfleet * 2 : 4;
        gw_hub_subs_t **n = realloc(h->fleet_subs, ncap * sizeof *n);
        if (!n)
            return EMS_ENOMEM;
        h->fleet_subs = n;
        h->capfleet = ncap;
    }
    if (h->nfleet_ents && pend_fit(s, h->nfleet_ents - 1) < 0)
        return EMS_ENOMEM;
    h->fleet_subs[h->nfleet++] = s;
    s->fleet = true;
    for (size_t i = 0; i < h->nfleet_ents; i++)
        pend_set(s, i);
    return 0;
}

void gw_hub_unsub_fleet(gw_hub_t *h, gw_hub_subs_t *s)
{
    if (!s->fleet)
        return;
    for (size_t i = 0; i < h->nfleet; i++) {
        if (h->fleet_subs[i] == s) {
            h->fleet_subs[i] = h->fleet_subs[--h->nfleet];
            break;
        }
    }
    free(s->pending);
    s->pending = NULL;
    s->pend_words = s->npending = s->pend_from = 0;
    s->fleet = false;
}

gw_hub_fleet_ent_t *gw_hub_fleet_get(gw_hub_t *h, const char *device_id, bool create)
{
    gw_hub_fleet_ent_t *e = gw_map_get(&h->fleet_by_dev, device_id);
    if (e || !create)
        return e;
    if (h->nfleet_ents >= UINT32_MAX)
        return NULL;
    if (h->nfleet_ents == h->capfleet_ents) {
        size_t ncap = h->capfleet_ents ? h->capfleet_ents * 2 : 64;
        gw_hub_fleet_ent_t **n = realloc(h->fleet, ncap * sizeof *n);
        if (!n)
            return NULL;
        h->fleet = n;
        h->capfleet_ents = ncap;
    }
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->item.device_id, sizeof e->item.device_id, "%s", device_id);
    e->idx = (uint32_t)h->nfleet_ents;
    if (gw_map_put(&h->fleet_by_dev, e->item.device_id, e) != 0) {
        free(e);
        return NULL;
    }
    h->fleet[h->nfleet_ents++] = e;
    return e;
}

void gw_hub_fleet_mark(gw_hub_t *h, gw_hub_fleet_ent_t *e)
{
    if (e->dirty)
        return;
    if (h->ndirty == h->capdirty) {
        size_t ncap = h->capdirty ? h->capdirty * 2 : 256;
        uint32_t *n = realloc(h->dirty, ncap * sizeof *n);
        if (!n)
            return; /* the entry stays clean: its next change tries again */
        h->dirty = n;
        h->capdirty = ncap;
    }
    h->dirty[h->ndirty++] = e->idx;
    e->dirty = true;
}

void gw_hub_fleet_collect(gw_hub_t *h)
{
    for (size_t i = 0; i < h->ndirty; i++) {
        uint32_t idx = h->dirty[i];
        h->fleet[idx]->dirty = false;
        for (size_t j = 0; j < h->nfleet; j++)
            pend_set(h->fleet_subs[j], idx);
    }
    h->ndirty = 0;
}

gw_hub_fleet_ent_t *gw_hub_fleet_peek(const gw_hub_t *h, gw_hub_subs_t *s)
{
    if (!s->npending)
        return NULL;
    for (size_t w = s->pend_from; w < s->pend_words; w++, s->pend_from = w) {
        if (s->pending[w]) {
            size_t idx = w * WORD_BITS + (size_t)__builtin_ctzll(s->pending[w]);
            return idx < h->nfleet_ents ? h->fleet[idx] : NULL;
        }
    }
    return NULL;
}

void gw_hub_fleet_sent(gw_hub_subs_t *s, const gw_hub_fleet_ent_t *e)
{
    size_t w = e->idx / WORD_BITS;
    uint64_t bit = (uint64_t)1 << (e->idx % WORD_BITS);
    if (w < s->pend_words && (s->pending[w] & bit)) {
        s->pending[w] &= ~bit;
        s->npending--;
    }
}

gw_hub_fleet_ent_t *gw_hub_fleet_next(const gw_hub_t *h, size_t *i)
{
    return *i < h->nfleet_ents ? h->fleet[(*i)++] : NULL;
}
