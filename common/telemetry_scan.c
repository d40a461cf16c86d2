/* telemetry_scan.c: a one-pass decoder for the common telemetry packet
 * (see ems_telemetry_scan in telemetry.h).
 *
 * The gateway decodes every device frame; building a jansson tree for it
 * costs more than everything else it does with the packet. This scanner
 * reads the text once, straight into an ems_telemetry_t, with no tree and
 * no allocation. It is not a second decoder with its own verdicts: it only
 * ever accepts, and only what ems_telemetry_decode accepts, with the same
 * struct. Whatever it is not sure of (any error, an unknown or repeated
 * member, an escape or a non-ASCII byte in a string, a number it cannot
 * read exactly as jansson + strtod do, another message type) makes it
 * answer EMS_EAGAIN, and the caller runs the full decoder, which gives the
 * canonical verdict and the error with its JSON path.
 *
 * Why accepting here implies jansson accepts, piece by piece:
 *   - the whole text is consumed by this grammar, which is a subset of
 *     jansson's (EMS_JR_PARSE_FLAGS): whitespace is the same four bytes,
 *     strings are printable ASCII without escapes (so valid UTF-8, no
 *     control characters), literals are true/false/null, numbers follow
 *     jansson's lexer exactly, nesting is two levels, nothing follows the
 *     top-level object but whitespace;
 *   - every member is a known one, at most once (jansson refuses duplicates;
 *     "type" would make it another message kind), with the type the full
 *     decoder requires, and the required ones are all present;
 *   - numbers: jansson reads every number (JSON_DECODE_INT_AS_REAL) with
 *     strtod, which is correctly rounded. Here a number with at most 19
 *     significant digits, a value below 2^53 and a decimal exponent within
 *     +-22 is computed as one IEEE multiplication or division of two exact
 *     doubles, which is correctly rounded too, hence bit-identical (Clinger's
 *     fast path; needs FLT_EVAL_METHOD == 0, else strtod is always used).
 *     Other numbers go to strtod on a copy of the same text; one that does
 *     not read to its end (a locale with another decimal point), or that
 *     overflows or underflows (ERANGE), is left to jansson;
 *   - integers follow ems_jr_v_integer for a real value: integral and
 *     within the range, compared as doubles;
 *   - strings go through the full decoder's own functions
 *     (ems_device_id_valid, ems_time_parse, the *_name tables), and the
 *     ranges through ems_telemetry_check, which holds the same limits as
 *     the decoder (telemetry.c), so the rules cannot drift apart.
 * test/unit/test_msg_telemetry_scan.c and test/fuzz/fuzz_msg.c check the
 * claim on every vector and on random input.
 */
#include "telemetry.h"

#include "error.h"
#include "timefmt.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AGAIN EMS_EAGAIN

typedef struct {
    const char *p, *end;
} scan_t;

static void skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* Skips whitespace, then consumes `c` if it comes next. */
static bool eat(scan_t *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

/* A string of printable ASCII without escapes; anything else is left to
 * jansson (escapes, UTF-8, control characters that it refuses). The
 * result points into the input. Every value read here is then held to a
 * charset without backslashes or control characters anyway; refusing them here
 * keeps the grammar a plain subset of jansson's on its own. */
static int scan_str(scan_t *s, const char **str, size_t *len)
{
    if (!eat(s, '"'))
        return AGAIN;
    const char *start = s->p;
    for (; s->p < s->end; s->p++) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            *str = start;
            *len = (size_t)(s->p - start);
            s->p++;
            return 0;
        }
        if (c < 0x20 || c > 0x7E || c == '\\')
            return AGAIN;
    }
    return AGAIN;
}

/* A literal (true, false, null). What follows it is checked by the caller,
 * which expects ',' '}' or ']', as jansson's parser does. */
static bool eat_lit(scan_t *s, const char *lit, size_t n)
{
    skip_ws(s);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool is_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

/* 10^0 .. 10^22: every one is exact as a double. */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The number's text [start, end) through strtod, as jansson does; refused
 * (left to jansson) if strtod stops early or reports ERANGE. */
static int num_strtod(const char *start, const char *end, double *out)
{
    char buf[64], *stop;
    size_t n = (size_t)(end - start);
    if (n >= sizeof buf)
        return AGAIN;
    memcpy(buf, start, n);
    buf[n] = '\0';
    int saved = errno;
    errno = 0;
    double d = strtod(buf, &stop);
    bool ok = stop == buf + n && errno != ERANGE && isfinite(d);
    errno = saved;
    if (!ok)
        return AGAIN;
    *out = d;
    return 0;
}

/* A JSON number with jansson's grammar:
 *   -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static int scan_num(scan_t *s, double *out)
{
    skip_ws(s);
    const char *p = s->p, *end = s->end, *start = s->p;
    bool neg = p < end && *p == '-';
    uint64_t w = 0; /* the digits as an integer, while exact */
    int ndig = 0;   /* digits in w (leading zeros included: harmless) */
    long scale = 0; /* value = w * 10^scale */
    bool exact = true;
    p += neg;
    if (!is_digit(p, end))
        return AGAIN;
    if (*p == '0' && is_digit(p + 1, end))
        return AGAIN; /* a leading zero */
    for (; is_digit(p, end); p++, ndig++) {
        exact = exact && ndig < 19;
        w = w * 10 + (uint64_t)(*p - '0');
    }
    if (p < end && *p == '.') {
        if (!is_digit(++p, end))
            return AGAIN;
        for (; is_digit(p, end); p++, ndig++, scale--) {
            exact = exact && ndig < 19;
            w = w * 10 + (uint64_t)(*p - '0');
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = p < end && *p == '-';
        p += p < end && (*p == '-' || *p == '+');
        if (!is_digit(p, end))
            return AGAIN;
        long e = 0;
        for (; is_digit(p, end); p++)
            e = e < 100000 ? e * 10 + (*p - '0') : e;
        scale += eneg ? -e : e;
    }
    s->p = p;
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    if (exact && w <= (1ULL << 53) && scale >= -22 && scale <= 22) {
        double d = (double)w;
        d = scale < 0 ? d / pow10_exact[-scale] : d * pow10_exact[scale];
        *out = neg ? -d : d;
        return 0;
    }
#else
    (void)exact;
    (void)pow10_exact;
#endif
    return num_strtod(start, p, out);
}

/* An integer as ems_jr_v_integer reads a real value: integral, in range. */
static int scan_int(scan_t *s, int64_t min, int64_t max, int64_t *out)
{
    double d;
    if (scan_num(s, &d) < 0 || d != floor(d) || d < (double)min || d > (double)max)
        return AGAIN;
    *out = (int64_t)d;
    return 0;
}

static int scan_bool(scan_t *s, bool *out)
{
    if (eat_lit(s, "true", 4))
        *out = true;
    else if (eat_lit(s, "false", 5))
        *out = false;
    else
        return AGAIN;
    return 0;
}

/* s[0..len) (printable ASCII, no NUL) equals the NUL-terminated name. The
 * first byte is compared inline: most candidates differ there. strncmp
 * stops at the name's NUL, so name[len] is read only within the name. */
static bool same(const char *s, size_t len, const char *name)
{
    if (!name || len == 0)
        return name && len == 0 && name[0] == '\0';
    return name[0] == s[0] && strncmp(name, s, len) == 0 && name[len] == '\0';
}

/* One of `count` names given by name(i), as ems_jr_v_enum compares them. */
static int scan_enum(scan_t *s, const char *(*name)(unsigned), unsigned count, unsigned *out)
{
    const char *str;
    size_t len;
    if (scan_str(s, &str, &len) < 0)
        return AGAIN;
    for (unsigned i = 0; i < count; i++) {
        if (same(str, len, name(i))) {
            *out = i;
            return 0;
        }
    }
    return AGAIN;
}

static const char *state_name(unsigned i) { return ems_state_name((ems_state_t)i); }
static const char *mode_name(unsigned i) { return ems_mode_name((ems_mode_t)i); }
static const char *target_name(unsigned i) { return ems_target_mode_name((ems_target_mode_t)i); }
static const char *fault_name(unsigned i) { return ems_fault_name(1u << i); }

/* ------------------------------------------------------------ objects */

/* A member name and its length. */
typedef struct {
    const char *name;
    size_t len;
} scan_key_t;
#define K(name) {name, sizeof name - 1}

/* Reads one member's value; `key` indexes the object's key table. */
typedef int (*member_fn)(scan_t *s, unsigned key, ems_telemetry_t *t);

/* An object whose members are all in keys[0..n), each at most once; *seen
 * gets one bit per member read. An unknown member is left to jansson: the
 * full decoder ignores most, but "type" would change the message's kind,
 * and skipping a value would need the whole JSON grammar here. */
static int scan_object(scan_t *s, const scan_key_t *keys, unsigned n, member_fn member,
                       ems_telemetry_t *t, uint32_t *seen)
{
    unsigned next = 0;
    *seen = 0;
    if (!eat(s, '{'))
        return AGAIN;
    if (eat(s, '}'))
        return 0;
    do {
        const char *k;
        size_t len;
        if (scan_str(s, &k, &len) < 0 || !eat(s, ':'))
            return AGAIN;
        /* Members usually come in the table's order (the encoder's):
         * the search starts after the last one found. */
        unsigned tries = 0;
        while (tries < n && (keys[next].len != len || memcmp(keys[next].name, k, len) != 0)) {
            tries++;
            next = next + 1 < n ? next + 1 : 0;
        }
        if (tries == n || (*seen & (1u << next)) || member(s, next, t) < 0)
            return AGAIN;
        *seen |= 1u << next;
    } while (eat(s, ','));
    return eat(s, '}') ? 0 : AGAIN;
}

/* Bits 0..n-1 set: the first n keys of a table are the required ones. */
#define REQUIRED(n) ((1u << (n)) - 1u)

/* error_flags: fault names, each at most once. */
static int scan_flags(scan_t *s, uint32_t *flags)
{
    *flags = 0;
    if (!eat(s, '['))
        return AGAIN;
    if (eat(s, ']'))
        return 0;
    do {
        unsigned bit;
        if (scan_enum(s, fault_name, EMS_FAULT_COUNT, &bit) < 0 || (*flags & (1u << bit)))
            return AGAIN;
        *flags |= 1u << bit;
    } while (eat(s, ','));
    return eat(s, ']') ? 0 : AGAIN;
}

static const scan_key_t status_keys[] = {K("state"),         K("mode"),        K("error_flags"),
                                         K("wifi_strength"), K("target_mode"), K("target_power")};

static int status_member(scan_t *s, unsigned key, ems_telemetry_t *t)
{
    unsigned e = 0;
    int64_t w = 0;
    int rc;
    switch (key) {
    case 0:
        rc = scan_enum(s, state_name, EMS_STATE_COUNT, &e);
        t->state = (ems_state_t)e;
        return rc;
    case 1:
        rc = scan_enum(s, mode_name, EMS_MODE_COUNT, &e);
        t->mode = (ems_mode_t)e;
        return rc;
    case 2: return scan_flags(s, &t->error_flags);
    case 3: /* an integer, or null: no wireless interface */
        t->has_wifi_strength = !eat_lit(s, "null", 4);
        rc = t->has_wifi_strength ? scan_int(s, -127, 0, &w) : 0;
        t->wifi_strength = (int)w;
        return rc;
    case 4:
        rc = scan_enum(s, target_name, EMS_TARGET_COUNT, &e);
        t->has_target_mode = true;
        t->target_mode = (ems_target_mode_t)e;
        return rc;
    default:
        t->has_target_power = true;
        return scan_num(s, &t->target_power);
    }
}

static const scan_key_t battery_keys[] = {K("voltage"), K("current"), K("power"), K("soc"),
                                          K("temperature")};

static int battery_member(scan_t *s, unsigned key, ems_telemetry_t *t)
{
    double *const to[] = {&t->battery_voltage, &t->battery_current, &t->battery_power,
                          &t->battery_soc, &t->battery_temperature};
    if (key == 4)
        t->has_battery_temperature = true;
    return scan_num(s, to[key]);
}

static const scan_key_t grid_keys[] = {K("voltage"), K("power"), K("frequency")};

static int grid_member(scan_t *s, unsigned key, ems_telemetry_t *t)
{
    double *const to[] = {&t->grid_voltage, &t->grid_power, &t->grid_frequency};
    return scan_num(s, to[key]);
}

static const scan_key_t energy_keys[] = {K("battery_charged_wh"), K("battery_discharged_wh"),
                                         K("grid_import_wh"), K("grid_export_wh"), K("since")};

static int energy_member(scan_t *s, unsigned key, ems_telemetry_t *t)
{
    double *const to[] = {&t->energy_battery_charged_wh, &t->energy_battery_discharged_wh,
                          &t->energy_grid_import_wh, &t->energy_grid_export_wh};
    const char *str;
    size_t len;
    if (key < 4)
        return scan_num(s, to[key]);
    if (scan_str(s, &str, &len) < 0)
        return AGAIN;
    return ems_time_parse(str, len, &t->energy_since_ms) == 0 ? 0 : AGAIN;
}

/* A nested object with its required members. */
static int scan_nested(scan_t *s, const scan_key_t *keys, unsigned n, unsigned required,
                       member_fn member, ems_telemetry_t *t)
{
    uint32_t seen;
    if (scan_object(s, keys, n, member, t, &seen) < 0 ||
        (seen & REQUIRED(required)) != REQUIRED(required))
        return AGAIN;
    return 0;
}

#define N(keys) ((unsigned)(sizeof keys / sizeof keys[0]))

static const scan_key_t top_keys[] = {
    K("device_id"), K("timestamp"),    K("system_status"), K("battery"), K("grid"),
    K("seq"),       K("clock_synced"), K("backfill"),      K("backlog"), K("energy")};

/* seq and backlog: integers 0..2^53-1. */
static int scan_count(scan_t *s, bool *has, uint64_t *out)
{
    int64_t n;
    *has = true;
    if (scan_int(s, 0, (int64_t)EMS_SEQ_MAX, &n) < 0)
        return AGAIN;
    *out = (uint64_t)n;
    return 0;
}

static int top_member(scan_t *s, unsigned key, ems_telemetry_t *t)
{
    const char *str;
    size_t len;
    switch (key) {
    case 0:
        if (scan_str(s, &str, &len) < 0 || !ems_device_id_valid(str, len))
            return AGAIN;
        memcpy(t->device_id, str, len); /* len <= 64; the NUL is there */
        return 0;
    case 1:
        if (scan_str(s, &str, &len) < 0)
            return AGAIN;
        return ems_time_parse(str, len, &t->timestamp_ms) == 0 ? 0 : AGAIN;
    case 2: return scan_nested(s, status_keys, N(status_keys), 4, status_member, t);
    case 3: return scan_nested(s, battery_keys, N(battery_keys), 4, battery_member, t);
    case 4: return scan_nested(s, grid_keys, N(grid_keys), 3, grid_member, t);
    case 5: return scan_count(s, &t->has_seq, &t->seq);
    case 6:
        t->has_clock_synced = true;
        return scan_bool(s, &t->clock_synced);
    case 7:
        t->has_backfill = true;
        return scan_bool(s, &t->backfill);
    case 8: return scan_count(s, &t->has_backlog, &t->backlog);
    default:
        t->has_energy = true;
        return scan_nested(s, energy_keys, N(energy_keys), 5, energy_member, t);
    }
}

int ems_telemetry_scan(const char *json, size_t len, ems_telemetry_t *out)
{
    memset(out, 0, sizeof *out);
    if (!json)
        return AGAIN;
    scan_t s = {json, json + len};
    uint32_t seen;
    if (scan_object(&s, top_keys, N(top_keys), top_member, out, &seen) < 0 ||
        (seen & REQUIRED(5)) != REQUIRED(5))
        return AGAIN;
    skip_ws(&s);
    if (s.p != s.end)
        return AGAIN; /* trailing text */
    /* The ranges, with the decoder's own limits (telemetry.c). */
    return ems_telemetry_check(out, NULL) == 0 ? 0 : AGAIN;
}
