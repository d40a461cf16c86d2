/* gw_map.c: string-keyed hash map (see gw_map.h). */
#include "gw_map.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

uint32_t gw_map_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    /* Never 0, so a zero hash marks nothing by accident. */
    return h ? h : 1;
}

void gw_map_free(gw_map_t *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->len = 0;
}

static size_t find(const gw_map_t *m, const char *key, uint32_t h, int *found)
{
    size_t mask = m->cap - 1, i = h & mask;
    for (;;) {
        const gw_map_slot_t *s = &m->slots[i];
        if (!s->key) {
            *found = 0;
            return i;
        }
        if (s->hash == h && strcmp(s->key, key) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & mask;
    }
}

void *gw_map_get(const gw_map_t *m, const char *key)
{
    if (m->len == 0)
        return NULL;
    int found;
    size_t i = find(m, key, gw_map_hash(key), &found);
    return found ? m->slots[i].value : NULL;
}

static int grow(gw_map_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    gw_map_slot_t *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return EMS_ENOMEM;
    gw_map_t nm = {ns, ncap, 0};
    for (size_t i = 0; i < m->cap; i++) {
        gw_map_slot_t *s = &m->slots[i];
        if (!s->key)
            continue;
        int found;
        size_t j = find(&nm, s->key, s->hash, &found);
        nm.slots[j] = *s;
        nm.len++;
    }
    free(m->slots);
    *m = nm;
    return 0;
}

int gw_map_put(gw_map_t *m, const char *key, void *value)
{
    /* Load factor at most 1/2 keeps probe sequences short. */
    if ((m->len + 1) * 2 > m->cap) {
        int rc = grow(m);
        if (rc)
            return rc;
    }
    uint32_t h = gw_map_hash(key);
    int found;
    size_t i = find(m, key, h, &found);
    m->slots[i].key = key;
    m->slots[i].value = value;
    m->slots[i].hash = h;
    if (!found)
        m->len++;
    return 0;
}

void *gw_map_del(gw_map_t *m, const char *key)
{
    if (m->len == 0)
        return NULL;
    int found;
    size_t i = find(m, key, gw_map_hash(key), &found);
    if (!found)
        return NULL;
    void *v = m->slots[i].value;
    /* Backward-shift deletion: move later members of the probe run back so
     * no lookup ever stops early at the hole. */
    size_t mask = m->cap - 1, j = i;
    for (;;) {
        m->slots[i].key = NULL;
        for (;;) {
            j = (j + 1) & mask;
            if (!m->slots[j].key) {
                m->len--;
                return v;
            }
            size_t home = m->slots[j].hash & mask;
            /* Slot j may move to i only if its home is not in (i, j]. */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                continue;
            break;
        }
        m->slots[i] = m->slots[j];
        i = j;
    }
}

int gw_map_next(const gw_map_t *m, size_t *pos, const char **key, void **value)
{
    for (size_t i = *pos; i < m->cap; i++) {
        if (m->slots[i].key) {
            if (key)
                *key = m->slots[i].key;
            if (value)
                *value = m->slots[i].value;
            *pos = i + 1;
            return 1;
        }
    }
    *pos = m->cap;
    return 0;
}
