/* gw_neg.c: a bounded set of negative answers (see gw_neg.h). */
#include "gw_neg.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

int gw_neg_init(gw_neg_t *n, size_t cap, int64_t ttl_ms)
{
    memset(n, 0, sizeof *n);
    n->ttl_ms = ttl_ms;
    if (ttl_ms <= 0 || cap == 0)
        return 0;
    n->ring = calloc(cap, sizeof *n->ring);
    if (!n->ring)
        return EMS_ENOMEM;
    n->cap = cap;
    return 0;
}

void gw_neg_free(gw_neg_t *n)
{
    gw_map_free(&n->map);
    free(n->ring);
    memset(n, 0, sizeof *n);
}

/* Drops the oldest entry (the ring's head). */
static void pop(gw_neg_t *n)
{
    gw_neg_entry_t *e = &n->ring[n->head];
    /* A deleted entry has an empty name and is not in the map. */
    if (e->name[0] && gw_map_get(&n->map, e->name) == e)
        gw_map_del(&n->map, e->name);
    e->name[0] = '\0';
    n->head = (n->head + 1) % n->cap;
    n->len--;
}

static void expire(gw_neg_t *n, int64_t now_ms)
{
    while (n->len > 0 && n->ring[n->head].expires_ms <= now_ms)
        pop(n);
}

void gw_neg_add(gw_neg_t *n, const char *name, int64_t now_ms)
{
    size_t len = strlen(name);
    if (!n->cap || len == 0 || len > GW_NEG_NAME_MAX)
        return;
    expire(n, now_ms);
    gw_neg_del(n, name); /* re-adding moves it to the young end */
    if (n->len == n->cap)
        pop(n);
    gw_neg_entry_t *e = &n->ring[(n->head + n->len) % n->cap];
    memcpy(e->name, name, len + 1);
    e->expires_ms = now_ms + n->ttl_ms;
    if (gw_map_put(&n->map, e->name, e) != 0) {
        e->name[0] = '\0'; /* out of memory: just not remembered */
        e->expires_ms = now_ms;
    }
    n->len++;
}

bool gw_neg_has(gw_neg_t *n, const char *name, int64_t now_ms)
{
    if (!n->cap)
        return false;
    expire(n, now_ms);
    gw_neg_entry_t *e = gw_map_get(&n->map, name);
    return e && e->expires_ms > now_ms;
}

void gw_neg_del(gw_neg_t *n, const char *name)
{
    if (!n->cap)
        return;
    gw_neg_entry_t *e = gw_map_del(&n->map, name);
    if (e)
        e->name[0] = '\0'; /* its ring slot stays until it reaches the head */
}

void gw_neg_clear(gw_neg_t *n)
{
    if (!n->cap)
        return;
    gw_map_free(&n->map);
    memset(n->ring, 0, n->cap * sizeof *n->ring);
    n->head = n->len = 0;
}
