/* valid.h: validation errors that name the JSON path and the reason.
 *
 * Every decoder of a wire message fills an ems_verr_t when it refuses input,
 * e.g. path "battery.soc", reason "101 is above the maximum 100". The path
 * uses dots for members and [i] for array items ("system_status.error_flags[2]");
 * the empty path means the whole message.
 */
#ifndef EMS_VALID_H
#define EMS_VALID_H

#include <stddef.h>

typedef struct {
    char path[128];
    char reason[256];
} ems_verr_t;

/* Sets both parts; `reason` is a printf format. Safe with err == NULL.
 * Text too long for a part is cut at a UTF-8 character boundary, so both
 * parts are always valid UTF-8 when the inputs are (a nack carries them). */
void ems_verr_set(ems_verr_t *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Puts `prefix` in front of the path: "battery.soc" with prefix "packets[3]"
 * becomes "packets[3].battery.soc"; the empty path becomes "packets[3]".
 * Used when a message is validated inside another one. Safe with NULL. */
void ems_verr_prefix(ems_verr_t *err, const char *prefix);

/* Writes "path: reason" (or just "reason" for the whole message) into buf. */
const char *ems_verr_format(const ems_verr_t *err, char *buf, size_t cap);

#endif
