/* ack.h: the cloud's acknowledgement of stored telemetry (cloud -> edge).
 *
 * docs/protocol.md section 3.2, proto-schemas/ack.schema.json:
 *   { "type": "ack", "ranges": [[1040, 1042], [1100, 1100]] }
 * Inclusive seq ranges that PostgreSQL has committed: 1..256 ranges, each
 * [first, last] with first <= last, sorted and non-overlapping (each range
 * starts after the previous one ends). The last two rules are beyond what
 * JSON Schema can say; the decoder enforces them (test/vectors/README.md).
 */
#ifndef EMS_ACK_H
#define EMS_ACK_H

#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_ACK_RANGES_MAX 256
#define EMS_ACK_JSON_MAX 10240 /* 256 ranges of two 16-digit numbers fit */

typedef struct {
    uint64_t first, last; /* inclusive, 0..EMS_SEQ_MAX */
} ems_seq_range_t;

/* Plain data (4 KiB): sorted, non-overlapping ranges. */
typedef struct {
    size_t count;
    ems_seq_range_t ranges[EMS_ACK_RANGES_MAX];
} ems_ack_t;

/* Empties an ack. */
void ems_ack_init(ems_ack_t *a);

/* Adds one seq, merging it into a neighbouring range where it touches one,
 * so the ranges stay sorted and non-overlapping. Returns 0 (also when seq is
 * already covered), EMS_EINVAL if seq > EMS_SEQ_MAX, or EMS_ENOSPC when a
 * new range is needed and 256 exist (the caller sends this ack and starts
 * another). */
int ems_ack_add(ems_ack_t *a, uint64_t seq);

/* True when seq lies in one of the ranges (binary search). */
bool ems_ack_contains(const ems_ack_t *a, uint64_t seq);

/* Decodes and validates; 0 or EMS_EINVAL with err ("ranges[2]: ..."). */
int ems_ack_decode(const char *json, size_t len, ems_ack_t *out, ems_verr_t *err);
/* The same from a parsed object (borrowed, not modified). */
int ems_ack_from_json(const json_t *obj, ems_ack_t *out, ems_verr_t *err);

/* Checks the struct (1..256 ranges, ordered, in range): 0 or EMS_EINVAL. */
int ems_ack_check(const ems_ack_t *a, ems_verr_t *err);

/* Encodes without allocating. Returns the length, EMS_EINVAL (check failed)
 * or EMS_ENOSPC (EMS_ACK_JSON_MAX always suffices). */
int ems_ack_encode(const ems_ack_t *a, char *buf, size_t cap);

#endif
