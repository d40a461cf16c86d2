/* wifi.c: /proc/net/wireless parsing (see wifi.h). */
#include "wifi.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads one blank-separated field starting at *p (within end) as a number;
 * the kernel prints "70." or "-40." with a trailing dot. */
static bool wifi__field(const char **p, const char *end, double *out)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    const char *f = s;
    while (s < end && !isspace((unsigned char)*s))
        s++;
    *p = s;
    size_t n = (size_t)(s - f);
    if (n == 0 || n > 31)
        return false;
    char tmp[32];
    memcpy(tmp, f, n);
    tmp[n] = '\0';
    char *e;
    double d = strtod(tmp, &e);
    if (e == tmp || !isfinite(d))
        return false;
    if (*e == '.') /* "-40." */
        e++;
    if (*e)
        return false;
    *out = d;
    return true;
}

bool ems_wifi_parse(const char *text, size_t len, int *dbm_out)
{
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        /* An interface line is "NAME: status link level noise ...". The two
         * header lines have no ':' (the first has '|' before any word that
         * could look like a name). */
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        const char *bar = memchr(p, '|', (size_t)(eol - p));
        if (colon && !bar) {
            const char *q = colon + 1;
            double status, link, level;
            if (!wifi__field(&q, eol, &status) || !wifi__field(&q, eol, &link) ||
                !wifi__field(&q, eol, &level))
                return false;
            /* Only the first interface counts (wifi.h). */
            if (level > 0 && level <= 255)
                level -= 256; /* unsigned-byte drivers */
            long dbm = lround(level);
            if (dbm < -127 || dbm > -1)
                return false;
            *dbm_out = (int)dbm;
            return true;
        }
        p = eol + 1;
    }
    return false;
}

bool ems_wifi_read(const char *path, int *dbm_out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return ems_wifi_parse(buf, n, dbm_out);
}
