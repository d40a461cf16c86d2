/* jsonw.h: a JSON writer into a caller's fixed buffer, no allocation.
 *
 * The encoders of the wire messages (telemetry, commands, acks...) use it on
 * hot paths, where building a jansson tree and dumping it would allocate per
 * packet. Commas are placed automatically: a key or a value that does not
 * follow "{", "[" or ":" is preceded by ",". Errors are sticky: after the
 * first overflow or invalid value every call does nothing, and
 * ems_jw_finish() reports it, so an encoder checks once at the end.
 *
 *   char buf[256];
 *   ems_jw_t w;
 *   ems_jw_init(&w, buf, sizeof buf);
 *   ems_jw_obj_open(&w);
 *   ems_jw_key(&w, "type"); ems_jw_str(&w, "ack");
 *   ems_jw_obj_close(&w);
 *   int n = ems_jw_finish(&w);   // length, or EMS_ENOSPC / EMS_EINVAL
 */
#ifndef EMS_JSONW_H
#define EMS_JSONW_H

#include "buf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Enough for any double from ems_jw_fmt_double, with the NUL. */
#define EMS_JW_NUM_MAX 32

typedef struct {
    char *buf;  /* borrowed from the caller */
    size_t cap; /* bytes at buf, including room for the NUL */
    size_t len; /* bytes written so far, without the NUL */
    int error;  /* 0, EMS_ENOSPC or EMS_EINVAL: the first error, sticky */
} ems_jw_t;

/* Starts writing at buf[0]; buf must hold at least one byte (the NUL). */
void ems_jw_init(ems_jw_t *w, char *buf, size_t cap);

void ems_jw_obj_open(ems_jw_t *w);
void ems_jw_obj_close(ems_jw_t *w);
void ems_jw_arr_open(ems_jw_t *w);
void ems_jw_arr_close(ems_jw_t *w);

/* A member name, escaped like a string, followed by ":". */
void ems_jw_key(ems_jw_t *w, const char *key);

/* A string value (NUL-terminated / `len` bytes). The bytes must be UTF-8;
 * quotes, backslashes and control characters are escaped. */
void ems_jw_str(ems_jw_t *w, const char *s);
void ems_jw_strn(ems_jw_t *w, const char *s, size_t len);

/* A finite double in the shortest text that reads back to the same value.
 * NaN or an infinity sets EMS_EINVAL (JSON has no text for them). */
void ems_jw_num(ems_jw_t *w, double v);
void ems_jw_int(ems_jw_t *w, int64_t v);
void ems_jw_uint(ems_jw_t *w, uint64_t v);
void ems_jw_bool(ems_jw_t *w, bool v);
void ems_jw_null(ems_jw_t *w);

/* Appends text as is (already valid JSON, e.g. an encoded packet). */
void ems_jw_raw(ems_jw_t *w, const char *s, size_t len);

/* A jansson value, written with this writer's rules: numbers in the
 * shortest text that reads back exactly (jansson's own dump writes 17
 * digits: 52.899999999999999 for 52.9), members in the object's order. */
void ems_jw_json(ems_jw_t *w, const json_t *v);

/* NUL-terminates and returns the length, or the first error (EMS_ENOSPC if
 * the buffer was too small, EMS_EINVAL for a non-finite number). */
int ems_jw_finish(ems_jw_t *w);

/* Appends `len` bytes of `s` as a JSON string (quoted, escaped exactly as
 * ems_jw_str escapes) to a growable buffer, for answers too large for a
 * fixed one (the DB writer's query answers). Returns 0 or the buffer's
 * error (EMS_ENOSPC, EMS_ENOMEM); on error part of the string may have been
 * appended. */
int ems_jw_buf_str(ems_buf_t *b, const char *s, size_t len);

/* Writes the shortest of %.15g, %.16g, %.17g that strtod reads back to
 * exactly `v` into buf (EMS_JW_NUM_MAX bytes) and returns its length.
 * Non-finite values give "nan"/"inf" (callers refuse them first). Relies
 * on the "C" numeric locale, which no ems program changes. */
int ems_jw_fmt_double(double v, char *buf);

#endif
