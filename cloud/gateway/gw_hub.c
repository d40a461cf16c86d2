/* gw_hub.c: device -> dashboards (see gw_hub.h). */
#include "gw_hub.h"

#include "error.h"
#include "telemetry.h"

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
