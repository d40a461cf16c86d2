/* le.h: little-endian loads and stores of fixed-width integers.
 *
 * The byte orders we write to the wire and to disk (the link's frames,
 * common/link.c; the edge buffer's slots and records, edge/store.c) are
 * fixed by their formats, not by the CPU, so every access goes byte by
 * byte through these. Compilers turn each into one load or store on a
 * little-endian machine. `p` need not be aligned.
 */
#ifndef EMS_LE_H
#define EMS_LE_H

#include <stdint.h>

static inline void ems_le_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void ems_le_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void ems_le_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t ems_le_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t ems_le_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t ems_le_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#endif
