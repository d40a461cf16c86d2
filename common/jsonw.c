/* jsonw.c: JSON writer into a fixed buffer (see jsonw.h). */
#include "jsonw.h"

#include "buf.h"
#include "error.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ems_jw_init(ems_jw_t *w, char *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->error = cap ? 0 : EMS_ENOSPC;
    if (cap)
        buf[0] = '\0';
}

static void put(ems_jw_t *w, const char *s, size_t n)
{
    if (w->error)
        return;
    /* One byte always stays free for the NUL that ems_jw_finish writes. */
    if (n >= w->cap - w->len) {
        w->error = EMS_ENOSPC;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void putc_(ems_jw_t *w, char c)
{
    put(w, &c, 1);
}

/* A value or a key after another one at the same level needs a comma. */
static void sep(ems_jw_t *w)
{
    if (w->error || w->len == 0)
        return;
    char last = w->buf[w->len - 1];
    if (last != '{' && last != '[' && last != ':')
        putc_(w, ',');
}

void ems_jw_obj_open(ems_jw_t *w)
{
    sep(w);
    putc_(w, '{');
}

void ems_jw_obj_close(ems_jw_t *w)
{
    putc_(w, '}');
}

void ems_jw_arr_open(ems_jw_t *w)
{
    sep(w);
    putc_(w, '[');
}

void ems_jw_arr_close(ems_jw_t *w)
{
    putc_(w, ']');
}

/* The string escaping, shared by the fixed writer and ems_jw_buf_str:
 * bytes below 0x20, quotes and backslashes are escaped; everything else
 * (UTF-8 included) is copied as is. plain_run is the length of the prefix
 * that needs no escaping; escape writes the escape of one byte that does. */
static size_t plain_run(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\')
        i++;
    return i;
}

static size_t escape(unsigned char c, char esc[8])
{
    if (c == '"' || c == '\\')
        return (size_t)snprintf(esc, 8, "\\%c", c);
    return (size_t)snprintf(esc, 8, "\\u%04x", c);
}

static void escaped(ems_jw_t *w, const char *s, size_t len)
{
    putc_(w, '"');
    for (;;) {
        size_t run = plain_run(s, len);
        put(w, s, run);
        if (run == len)
            break;
        char esc[8];
        put(w, esc, escape((unsigned char)s[run], esc));
        s += run + 1;
        len -= run + 1;
    }
    putc_(w, '"');
}

int ems_jw_buf_str(ems_buf_t *b, const char *s, size_t len)
{
    int rc = ems_buf_append(b, "\"", 1);
    while (rc == 0) {
        size_t run = plain_run(s, len);
        rc = ems_buf_append(b, s, run);
        if (rc < 0 || run == len)
            break;
        char esc[8];
        rc = ems_buf_append(b, esc, escape((unsigned char)s[run], esc));
        s += run + 1;
        len -= run + 1;
    }
    return rc < 0 ? rc : ems_buf_append(b, "\"", 1);
}

void ems_jw_key(ems_jw_t *w, const char *key)
{
    sep(w);
    escaped(w, key, strlen(key));
    putc_(w, ':');
}

void ems_jw_str(ems_jw_t *w, const char *s)
{
    ems_jw_strn(w, s, strlen(s));
}

void ems_jw_strn(ems_jw_t *w, const char *s, size_t len)
{
    sep(w);
    escaped(w, s, len);
}

void ems_jw_json(ems_jw_t *w, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *m;
        ems_jw_obj_open(w);
        json_object_foreach((json_t *)v, k, m)
        {
            ems_jw_key(w, k);
            ems_jw_json(w, m);
        }
        ems_jw_obj_close(w);
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *m;
        ems_jw_arr_open(w);
        json_array_foreach(v, i, m) ems_jw_json(w, m);
        ems_jw_arr_close(w);
        break;
    }
    case JSON_STRING:
        ems_jw_strn(w, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        ems_jw_int(w, (int64_t)json_integer_value(v));
        break;
    case JSON_REAL:
        ems_jw_num(w, json_real_value(v));
        break;
    case JSON_TRUE:
        ems_jw_bool(w, true);
        break;
    case JSON_FALSE:
        ems_jw_bool(w, false);
        break;
    default:
        ems_jw_null(w);
        break;
    }
}

int ems_jw_fmt_double(double v, char *buf)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, EMS_JW_NUM_MAX, "%.*g", prec, v);
        if (!isfinite(v) || strtod(buf, NULL) == v)
            break;
    }
    return n;
}

void ems_jw_num(ems_jw_t *w, double v)
{
    if (!isfinite(v)) {
        if (!w->error)
            w->error = EMS_EINVAL;
        return;
    }
    char tmp[EMS_JW_NUM_MAX];
    int n = ems_jw_fmt_double(v, tmp);
    sep(w);
    put(w, tmp, (size_t)n);
}

void ems_jw_int(ems_jw_t *w, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    sep(w);
    put(w, tmp, (size_t)n);
}

void ems_jw_uint(ems_jw_t *w, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    sep(w);
    put(w, tmp, (size_t)n);
}

void ems_jw_bool(ems_jw_t *w, bool v)
{
    sep(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void ems_jw_null(ems_jw_t *w)
{
    sep(w);
    put(w, "null", 4);
}

void ems_jw_raw(ems_jw_t *w, const char *s, size_t len)
{
    sep(w);
    put(w, s, len);
}

int ems_jw_finish(ems_jw_t *w)
{
    if (w->error)
        return w->error;
    w->buf[w->len] = '\0';
    return (int)w->len;
}
