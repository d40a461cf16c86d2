/* jread.h: reading members of a parsed JSON message with path errors.
 *
 * The decoders of every wire message use these so that all of them refuse
 * input the same way and with the same words (docs/protocol.md):
 *   battery: required member is missing
 *   battery.voltage: expected a number, got string
 *   battery.soc: 101 is above the maximum 100
 *   system_status.state: "SLEEPING" is not one of IDLE, CHARGING, ...
 * The path of the failing value is composed only when an error is reported,
 * so the success path does no string work.
 *
 * Member getters take the parent object, the parent's path ("" for the top
 * level) and the member name, and return 1 when the member was read, 0 when
 * it is absent and optional (out untouched), or EMS_EINVAL with `err` set.
 * Strings returned are borrowed from the json_t and live as long as it does.
 * Every string comparison honours the string's length, so a string holding
 * "\u0000" never matches a name by its prefix.
 */
#ifndef EMS_JREAD_H
#define EMS_JREAD_H

#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The jansson flags every ems decoder parses with: duplicate keys are
 * refused; any value may be the top level (so the error for "[]" names the
 * type); every number is read as a double (so a huge integer is a range
 * error, not a parse error, just as for other JSON readers); "\u0000" in a
 * string is kept and then refused by the members' own rules. */
#define EMS_JR_PARSE_FLAGS                                                     \
    (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL |      \
     JSON_ALLOW_NUL)

/* Where a value sits: parent path, member name (or NULL) and array index
 * (or -1). "battery" + "soc" -> "battery.soc"; "packets" + NULL + 3 ->
 * "packets[3]"; "" + "seq" -> "seq". */
typedef struct {
    const char *parent;
    const char *key;
    long index;
} ems_jr_at_t;

/* Parses `len` bytes with EMS_JR_PARSE_FLAGS. Returns a new reference, or
 * NULL with err = {"", "invalid JSON at line L, column C: <jansson's text>"}. */
json_t *ems_jr_parse(const char *text, size_t len, ems_verr_t *err);

/* Writes the path of `at` into out (cut to fit) and returns out. */
const char *ems_jr_path(const ems_jr_at_t *at, char *out, size_t cap);

/* Writes a string value for an error message: quoted, escaped, cut at 40
 * bytes (on a UTF-8 boundary) with "..." so a 1 MB id makes a short error. */
const char *ems_jr_quote(const char *s, size_t len, char *out, size_t cap);

/* "object", "array", "string", "number", "boolean" or "null" ("nothing"
 * for NULL, so a missing value still gives a readable error). */
const char *ems_jr_type_name(const json_t *v);

/* The whole message must be an object: 0, or EMS_EINVAL with path "". */
int ems_jr_require_object(const json_t *v, ems_verr_t *err);

/* The message must be an object whose "type" is the string `type`:
 * 0, or EMS_EINVAL ("type: required member is missing",
 * "type: \"x\" is not \"ack\""). */
int ems_jr_expect_type(const json_t *obj, const char *type, ems_verr_t *err);

/* Value checks, used for array items and by the member getters below. */
int ems_jr_v_object(const json_t *v, const ems_jr_at_t *at, ems_verr_t *err);
int ems_jr_v_array(const json_t *v, const ems_jr_at_t *at, ems_verr_t *err);
int ems_jr_v_string(const json_t *v, const ems_jr_at_t *at, const char **s, size_t *len,
                    ems_verr_t *err);
int ems_jr_v_number(const json_t *v, const ems_jr_at_t *at, double min, double max,
                    double *out, ems_verr_t *err);
/* An integer in min..max (|min|, |max| <= 2^53). A number with a zero
 * fraction (3.0) is an integer, as in JSON Schema. */
int ems_jr_v_integer(const json_t *v, const ems_jr_at_t *at, int64_t min, int64_t max,
                     int64_t *out, ems_verr_t *err);
/* One of `count` names given by name(i); *out = i. */
int ems_jr_v_enum(const json_t *v, const ems_jr_at_t *at, const char *(*name)(unsigned),
                  unsigned count, unsigned *out, ems_verr_t *err);

/* Member getters: 1 read, 0 absent and optional, EMS_EINVAL. */
int ems_jr_member(const json_t *obj, const char *path, const char *key, bool required,
                  const json_t **out, ems_verr_t *err);
int ems_jr_object(const json_t *obj, const char *path, const char *key, bool required,
                  const json_t **out, ems_verr_t *err);
int ems_jr_array(const json_t *obj, const char *path, const char *key, bool required,
                 const json_t **out, ems_verr_t *err);
int ems_jr_string(const json_t *obj, const char *path, const char *key, bool required,
                  const char **s, size_t *len, ems_verr_t *err);
int ems_jr_number(const json_t *obj, const char *path, const char *key, bool required,
                  double min, double max, double *out, ems_verr_t *err);
int ems_jr_integer(const json_t *obj, const char *path, const char *key, bool required,
                   int64_t min, int64_t max, int64_t *out, ems_verr_t *err);
int ems_jr_bool(const json_t *obj, const char *path, const char *key, bool required,
                bool *out, ems_verr_t *err);
int ems_jr_enum(const json_t *obj, const char *path, const char *key, bool required,
                const char *(*name)(unsigned), unsigned count, unsigned *out,
                ems_verr_t *err);
/* An RFC 3339 UTC timestamp (timefmt.h) as Unix ms. */
int ems_jr_timestamp(const json_t *obj, const char *path, const char *key, bool required,
                     int64_t *ms, ems_verr_t *err);
/* An identifier of 1..max characters of [A-Za-z0-9_.-] (plus ':' when
 * allow_colon), copied NUL-terminated into out (cap > max). */
int ems_jr_ident(const json_t *obj, const char *path, const char *key, bool required,
                 size_t max, bool allow_colon, char *out, size_t cap, ems_verr_t *err);
/* A string of at most max_chars Unicode characters, copied NUL-terminated
 * into out; cap must be at least 4 * max_chars + 1 (UTF-8). */
int ems_jr_text(const json_t *obj, const char *path, const char *key, bool required,
                size_t max_chars, char *out, size_t cap, ems_verr_t *err);

/* True when s[0..len) is 1..max of [A-Za-z0-9_.-] (and ':' if allowed). */
bool ems_jr_ident_valid(const char *s, size_t len, size_t max, bool allow_colon);

/* True when s[0..len) is valid UTF-8 (no overlong forms, surrogates or
 * code points above U+10FFFF) without NUL: what a JSON string may carry. */
bool ems_jr_utf8_valid(const char *s, size_t len);

/* Number of Unicode characters in valid UTF-8. */
size_t ems_jr_utf8_chars(const char *s, size_t len);

#endif
