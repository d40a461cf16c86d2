/* jread.c: reading JSON members with path errors (see jread.h). */
#include "jread.h"

#include "error.h"
#include "jsonw.h"
#include "timefmt.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* jansson quotes the input near the error; that text may hold control
 * characters or a cut UTF-8 sequence, and the reason ends up on one log
 * line or in a nack. Anything but printable ASCII becomes '?'. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7F)
            *s = '?';
}

json_t *ems_jr_parse(const char *text, size_t len, ems_verr_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, EMS_JR_PARSE_FLAGS, &jerr);
    if (!root) {
        sanitize(jerr.text);
        ems_verr_set(err, "", "invalid JSON at line %d, column %d: %s", jerr.line,
                     jerr.column, jerr.text);
    }
    return root;
}

const char *ems_jr_path(const ems_jr_at_t *at, char *out, size_t cap)
{
    const char *parent = at->parent ? at->parent : "";
    int n = snprintf(out, cap, "%s", parent);
    if (at->key && n >= 0 && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, "%s%s", *parent ? "." : "", at->key);
    if (at->index >= 0 && n >= 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "[%ld]", at->index);
    return out;
}

const char *ems_jr_quote(const char *s, size_t len, char *out, size_t cap)
{
    ems_jw_t w;
    char tmp[160];
    size_t cut = len > 40 ? 40 : len;
    /* Never split a UTF-8 sequence: step back over continuation bytes. */
    while (cut < len && cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    ems_jw_init(&w, tmp, sizeof tmp);
    ems_jw_strn(&w, s, cut);
    int n = ems_jw_finish(&w);
    if (cut < len && n > 0) /* "aaaa..." : the dots go inside the quotes */
        snprintf(out, cap, "%.*s...\"", n - 1, tmp);
    else
        snprintf(out, cap, "%s", n > 0 ? tmp : "\"\"");
    return out;
}

const char *ems_jr_type_name(const json_t *v)
{
    if (!v)
        return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

/* "expected a number, got string" at the path of `at`. */
static int type_error(const json_t *v, const ems_jr_at_t *at, const char *expected,
                      ems_verr_t *err)
{
    char path[128];
    ems_verr_set(err, ems_jr_path(at, path, sizeof path), "expected %s, got %s", expected,
                 ems_jr_type_name(v));
    return EMS_EINVAL;
}

int ems_jr_require_object(const json_t *v, ems_verr_t *err)
{
    static const ems_jr_at_t top = {"", NULL, -1};
    return json_is_object(v) ? 0 : type_error(v, &top, "an object", err);
}

int ems_jr_v_object(const json_t *v, const ems_jr_at_t *at, ems_verr_t *err)
{
    return json_is_object(v) ? 0 : type_error(v, at, "an object", err);
}

int ems_jr_v_array(const json_t *v, const ems_jr_at_t *at, ems_verr_t *err)
{
    return json_is_array(v) ? 0 : type_error(v, at, "an array", err);
}

int ems_jr_v_string(const json_t *v, const ems_jr_at_t *at, const char **s, size_t *len,
                    ems_verr_t *err)
{
    if (!json_is_string(v))
        return type_error(v, at, "a string", err);
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

static int range_error(const ems_jr_at_t *at, const char *val, const char *what,
                       const char *limit, ems_verr_t *err)
{
    char path[128];
    ems_verr_set(err, ems_jr_path(at, path, sizeof path), "%s is %s %s", val, what, limit);
    return EMS_EINVAL;
}

int ems_jr_v_number(const json_t *v, const ems_jr_at_t *at, double min, double max,
                    double *out, ems_verr_t *err)
{
    if (!json_is_number(v))
        return type_error(v, at, "a number", err);
    double d = json_number_value(v);
    if (!isfinite(d)) /* only possible for a json_t built by hand */
        return range_error(at, "a non-finite number", "not", "allowed", err);
    if (d >= min && d <= max) {
        *out = d;
        return 0;
    }
    /* Formatting numbers costs more than the whole check: only on error. */
    char val[EMS_JW_NUM_MAX], lim[EMS_JW_NUM_MAX];
    ems_jw_fmt_double(d, val);
    ems_jw_fmt_double(d < min ? min : max, lim);
    return range_error(at, val, d < min ? "below the minimum" : "above the maximum", lim, err);
}

int ems_jr_v_integer(const json_t *v, const ems_jr_at_t *at, int64_t min, int64_t max,
                     int64_t *out, ems_verr_t *err)
{
    if (!json_is_number(v))
        return type_error(v, at, "an integer", err);
    double d = json_number_value(v);
    int64_t i;
    if (json_is_integer(v)) {
        i = json_integer_value(v);
    } else if (!isfinite(d) || d != floor(d)) {
        i = 0;
    } else {
        /* Compare as doubles before converting: 1e300 must not overflow. */
        i = d < (double)min ? min - 1 : d > (double)max ? max + 1 : (int64_t)d;
    }
    bool integral = json_is_integer(v) || (isfinite(d) && d == floor(d));
    if (integral && i >= min && i <= max) {
        *out = i;
        return 0;
    }
    char val[EMS_JW_NUM_MAX], lim[24];
    if (json_is_integer(v))
        snprintf(val, sizeof val, "%" PRId64, i);
    else
        ems_jw_fmt_double(d, val);
    if (!integral)
        return range_error(at, val, "not", "an integer", err);
    snprintf(lim, sizeof lim, "%" PRId64, i < min ? min : max);
    return range_error(at, val, i < min ? "below the minimum" : "above the maximum", lim, err);
}

/* Compares a length-delimited string with a NUL-terminated name. */
static bool same(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(s, name, len) == 0;
}

int ems_jr_v_enum(const json_t *v, const ems_jr_at_t *at, const char *(*name)(unsigned),
                  unsigned count, unsigned *out, ems_verr_t *err)
{
    const char *s = NULL;
    size_t len = 0;
    if (ems_jr_v_string(v, at, &s, &len, err) < 0)
        return EMS_EINVAL;
    for (unsigned i = 0; i < count; i++) {
        if (same(s, len, name(i))) {
            *out = i;
            return 0;
        }
    }
    char list[200] = "", q[64], path[128];
    size_t n = 0;
    for (unsigned i = 0; i < count && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", name(i));
    ems_verr_set(err, ems_jr_path(at, path, sizeof path), "%s is not one of %s",
                 ems_jr_quote(s, len, q, sizeof q), list);
    return EMS_EINVAL;
}

int ems_jr_member(const json_t *obj, const char *path, const char *key, bool required,
                  const json_t **out, ems_verr_t *err)
{
    const json_t *v = json_object_get(obj, key);
    if (v) {
        *out = v;
        return 1;
    }
    if (!required)
        return 0;
    char p[128];
    ems_jr_at_t at = {path, key, -1};
    ems_verr_set(err, ems_jr_path(&at, p, sizeof p), "required member is missing");
    return EMS_EINVAL;
}

/* The member getters share one shape: look up, then check the value. */
#define MEMBER(check)                                                          \
    const json_t *v;                                                           \
    int rc = ems_jr_member(obj, path, key, required, &v, err);                 \
    if (rc <= 0)                                                               \
        return rc;                                                             \
    ems_jr_at_t at = {path, key, -1};                                          \
    return (check) < 0 ? EMS_EINVAL : 1

int ems_jr_object(const json_t *obj, const char *path, const char *key, bool required,
                  const json_t **out, ems_verr_t *err)
{
    MEMBER((*out = v, ems_jr_v_object(v, &at, err)));
}

int ems_jr_array(const json_t *obj, const char *path, const char *key, bool required,
                 const json_t **out, ems_verr_t *err)
{
    MEMBER((*out = v, ems_jr_v_array(v, &at, err)));
}

int ems_jr_string(const json_t *obj, const char *path, const char *key, bool required,
                  const char **s, size_t *len, ems_verr_t *err)
{
    MEMBER(ems_jr_v_string(v, &at, s, len, err));
}

int ems_jr_number(const json_t *obj, const char *path, const char *key, bool required,
                  double min, double max, double *out, ems_verr_t *err)
{
    MEMBER(ems_jr_v_number(v, &at, min, max, out, err));
}

int ems_jr_integer(const json_t *obj, const char *path, const char *key, bool required,
                   int64_t min, int64_t max, int64_t *out, ems_verr_t *err)
{
    MEMBER(ems_jr_v_integer(v, &at, min, max, out, err));
}

static int v_bool(const json_t *v, const ems_jr_at_t *at, bool *out, ems_verr_t *err)
{
    if (!json_is_boolean(v))
        return type_error(v, at, "a boolean", err);
    *out = json_is_true(v);
    return 0;
}

int ems_jr_bool(const json_t *obj, const char *path, const char *key, bool required,
                bool *out, ems_verr_t *err)
{
    MEMBER(v_bool(v, &at, out, err));
}

int ems_jr_enum(const json_t *obj, const char *path, const char *key, bool required,
                const char *(*name)(unsigned), unsigned count, unsigned *out,
                ems_verr_t *err)
{
    MEMBER(ems_jr_v_enum(v, &at, name, count, out, err));
}

static int v_timestamp(const json_t *v, const ems_jr_at_t *at, int64_t *ms, ems_verr_t *err)
{
    const char *s = NULL;
    size_t len = 0;
    if (ems_jr_v_string(v, at, &s, &len, err) < 0)
        return EMS_EINVAL;
    if (ems_time_parse(s, len, ms) == 0)
        return 0;
    char q[64], path[128];
    ems_verr_set(err, ems_jr_path(at, path, sizeof path), "%s is not an RFC 3339 UTC timestamp",
                 ems_jr_quote(s, len, q, sizeof q));
    return EMS_EINVAL;
}

int ems_jr_timestamp(const json_t *obj, const char *path, const char *key, bool required,
                     int64_t *ms, ems_verr_t *err)
{
    MEMBER(v_timestamp(v, &at, ms, err));
}

bool ems_jr_ident_valid(const char *s, size_t len, size_t max, bool allow_colon)
{
    if (!s || len < 1 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-' || (allow_colon && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

static int v_ident(const json_t *v, const ems_jr_at_t *at, size_t max, bool allow_colon,
                   char *out, size_t cap, ems_verr_t *err)
{
    const char *s = NULL;
    size_t len = 0;
    if (ems_jr_v_string(v, at, &s, &len, err) < 0)
        return EMS_EINVAL;
    if (ems_jr_ident_valid(s, len, max, allow_colon) && len < cap) {
        memcpy(out, s, len);
        out[len] = '\0';
        return 0;
    }
    char q[64], path[128];
    ems_verr_set(err, ems_jr_path(at, path, sizeof path), "%s is not 1..%zu characters of %s",
                 ems_jr_quote(s, len, q, sizeof q), max,
                 allow_colon ? "[A-Za-z0-9_.:-]" : "[A-Za-z0-9_.-]");
    return EMS_EINVAL;
}

int ems_jr_ident(const json_t *obj, const char *path, const char *key, bool required,
                 size_t max, bool allow_colon, char *out, size_t cap, ems_verr_t *err)
{
    MEMBER(v_ident(v, &at, max, allow_colon, out, cap, err));
}

size_t ems_jr_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static int v_text(const json_t *v, const ems_jr_at_t *at, size_t max_chars, char *out,
                  size_t cap, ems_verr_t *err)
{
    const char *s = NULL;
    size_t len = 0;
    char path[128];
    if (ems_jr_v_string(v, at, &s, &len, err) < 0)
        return EMS_EINVAL;
    size_t chars = ems_jr_utf8_chars(s, len);
    if (chars > max_chars || len >= cap) {
        ems_verr_set(err, ems_jr_path(at, path, sizeof path),
                     "string of %zu characters is longer than the maximum %zu", chars, max_chars);
        return EMS_EINVAL;
    }
    if (memchr(s, '\0', len)) {
        ems_verr_set(err, ems_jr_path(at, path, sizeof path), "string contains a NUL character");
        return EMS_EINVAL;
    }
    memcpy(out, s, len + 1);
    return 0;
}

int ems_jr_text(const json_t *obj, const char *path, const char *key, bool required,
                size_t max_chars, char *out, size_t cap, ems_verr_t *err)
{
    MEMBER(v_text(v, &at, max_chars, out, cap, err));
}

bool ems_jr_utf8_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (c == 0 || n == 0 || i + n > len || (n == 2 && c < 0xC2) || (n == 4 && c > 0xF4))
            return false;
        for (size_t k = 1; k < n; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80)
                return false;
        unsigned char c1 = n > 1 ? (unsigned char)s[i + 1] : 0;
        if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0) || (c == 0xF0 && c1 < 0x90) ||
            (c == 0xF4 && c1 >= 0x90))
            return false; /* overlong, surrogate or beyond U+10FFFF */
        i += n;
    }
    return true;
}

int ems_jr_expect_type(const json_t *obj, const char *type, ems_verr_t *err)
{
    const char *s = NULL;
    size_t len = 0;
    if (ems_jr_require_object(obj, err) < 0 ||
        ems_jr_string(obj, "", "type", true, &s, &len, err) < 0)
        return EMS_EINVAL;
    if (same(s, len, type))
        return 0;
    char q[64];
    ems_verr_set(err, "type", "%s is not \"%s\"", ems_jr_quote(s, len, q, sizeof q), type);
    return EMS_EINVAL;
}
