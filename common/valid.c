/* valid.c: validation errors (see valid.h). */
#include "valid.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Drops a UTF-8 sequence that snprintf cut in half at the end of buf. */
static void trim_utf8(char *buf)
{
    size_t len = strlen(buf), i = len;
    while (i > 0 && ((unsigned char)buf[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0 || ((unsigned char)buf[i - 1] & 0x80) == 0)
        return; /* ends in ASCII or holds no lead byte */
    unsigned char lead = (unsigned char)buf[i - 1];
    size_t need = (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
    if (len - (i - 1) < need)
        buf[i - 1] = '\0';
}

void ems_verr_set(ems_verr_t *err, const char *path, const char *fmt, ...)
{
    if (!err)
        return;
    /* A path longer than the buffer is cut, never overflowed: the reason
     * still tells the user what went wrong. */
    snprintf(err->path, sizeof err->path, "%s", path ? path : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->reason, sizeof err->reason, fmt, ap);
    va_end(ap);
    trim_utf8(err->path);
    trim_utf8(err->reason);
}

void ems_verr_prefix(ems_verr_t *err, const char *prefix)
{
    if (!err || !prefix || !*prefix)
        return;
    char old[sizeof err->path];
    memcpy(old, err->path, sizeof old);
    size_t n = strlen(prefix), cap = sizeof err->path - 1;
    n = n < cap ? n : cap;
    memcpy(err->path, prefix, n);
    if (old[0] && n < cap)
        err->path[n++] = '.';
    size_t rest = strlen(old);
    rest = rest < cap - n ? rest : cap - n;
    memcpy(err->path + n, old, rest);
    err->path[n + rest] = '\0';
    trim_utf8(err->path);
}

const char *ems_verr_format(const ems_verr_t *err, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return buf;
    if (!err)
        snprintf(buf, cap, "(no error)");
    else if (err->path[0])
        snprintf(buf, cap, "%s: %s", err->path, err->reason);
    else
        snprintf(buf, cap, "%s", err->reason);
    return buf;
}
