/* gw_map.h: a string-keyed hash map of borrowed pointers.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), so lookups stay short however many devices come and go. The
 * map stores the key pointer it is given and never copies it: the key must
 * live inside the value (e.g. a device's `id` array) and stay unchanged
 * while the entry is in the map. Values are borrowed; the map frees only its
 * own table. Iteration order is unspecified, and the map must not be changed
 * during an iteration except through gw_map_iter_remove-free patterns noted
 * below.
 */
#ifndef GW_MAP_H
#define GW_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *key;
    void *value;
    uint32_t hash;
} gw_map_slot_t;

typedef struct {
    gw_map_slot_t *slots;
    size_t cap; /* a power of two, or 0 */
    size_t len;
} gw_map_t;

/* An empty map needs no allocation: gw_map_t m = {0}; */
void gw_map_free(gw_map_t *m);

/* Returns the value stored under `key` (NUL-terminated), or NULL. */
void *gw_map_get(const gw_map_t *m, const char *key);

/* Stores `value` under `key` (replacing an existing entry's value and key
 * pointer). Returns 0 or EMS_ENOMEM. */
int gw_map_put(gw_map_t *m, const char *key, void *value);

/* Removes the entry; returns its value or NULL if absent. */
void *gw_map_del(gw_map_t *m, const char *key);

/* Iteration: for (size_t i = 0; gw_map_next(m, &i, &k, &v);) ...
 * Entries must not be added or removed while iterating. */
int gw_map_next(const gw_map_t *m, size_t *pos, const char **key, void **value);

/* FNV-1a, exposed for tests. */
uint32_t gw_map_hash(const char *key);

#endif
