/* batch.h: a telemetry batch, the edge's backfill (edge -> cloud).
 *
 * docs/protocol.md section 2.2, proto-schemas/telemetry-batch.schema.json:
 *   { "type": "telemetry_batch", "packets": [ {telemetry}, ... ] }
 * 1 to 100 packets, each a full telemetry packet that must carry `seq`.
 * Each packet is validated on its own: one bad packet is reported (with the
 * path "packets[3].battery.soc") while the good ones are still delivered,
 * so the cloud can store those and nack only the bad one.
 */
#ifndef EMS_BATCH_H
#define EMS_BATCH_H

#include "telemetry.h"
#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_BATCH_MAX 100
/* Room for 100 packets of the largest size plus the envelope. */
#define EMS_BATCH_JSON_MAX (EMS_BATCH_MAX * EMS_TELEMETRY_JSON_MAX + 64)

/* One packet of a batch, handed to the callback in order. Everything is
 * borrowed and valid only during the call. */
typedef struct {
    size_t index;                  /* position in "packets" */
    const json_t *json;            /* the packet as received */
    const ems_telemetry_t *packet; /* decoded packet, or NULL when refused */
    const ems_verr_t *err;         /* why it was refused (NULL when accepted);
                                    * err->path is "packets[i].<packet path>" */
    const char *packet_path;       /* the same path without "packets[i].", for a nack */
    bool has_seq;                  /* the packet's seq when it has a readable one, */
    uint64_t seq;                  /* even when refused (the nack names it) */
} ems_batch_item_t;

typedef void (*ems_batch_cb)(void *ctx, const ems_batch_item_t *item);

/* Decodes a batch from `len` bytes of JSON and calls cb once per packet.
 * Returns the number of refused packets (0..100), or EMS_EINVAL with err
 * set when the envelope itself is invalid (not JSON, wrong type, "packets"
 * not an array of 1..100 items); then cb is never called. */
int ems_batch_decode(const char *json, size_t len, ems_batch_cb cb, void *ctx, ems_verr_t *err);

/* The same from a parsed object (borrowed). cb may be NULL (validation
 * only); with NULL, `err` receives the first refused packet's error. */
int ems_batch_from_json(const json_t *obj, ems_batch_cb cb, void *ctx, ems_verr_t *err);

/* Encodes n (1..100) packets without allocating. Returns the length,
 * EMS_EINVAL (n out of range, a packet invalid or without seq) or
 * EMS_ENOSPC. An edge that must stay under the 64 KiB frame limit passes
 * cap = 65536 and sends fewer packets on EMS_ENOSPC. */
int ems_batch_encode(const ems_telemetry_t *packets, size_t n, char *buf, size_t cap);

#endif
