/* gw_static.c: static files (see gw_static.h). */
#include "gw_static.h"

#include "error.h"
#include "gw_router.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* True when any '/'-separated segment of s is "." or "..". */
static int has_dot_segment(const char *s)
{
    const char *p = s;
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = p;
        while (*e && *e != '/')
            e++;
        size_t n = (size_t)(e - p);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 1;
        p = e;
    }
    return 0;
}

int gw_static_resolve(const char *root, const char *path, size_t len, char *out, size_t cap)
{
    if (len == 0 || path[0] != '/' || memchr(path, '\\', len) || memchr(path, '\0', len))
        return EMS_ENOENT;
    char dec[1024];
    int n = gw_pct_decode(path, len, dec, sizeof dec - 16, 0);
    if (n < 0 || strchr(dec, '\\') || has_dot_segment(dec))
        return EMS_ENOENT;
    if (dec[n - 1] == '/')
        strcat(dec, "index.html");

    char rroot[PATH_MAX], want[PATH_MAX + 1024], real[PATH_MAX];
    if (!realpath(root, rroot))
        return EMS_ENOENT;
    snprintf(want, sizeof want, "%s%s", rroot, dec);
    if (!realpath(want, real))
        return EMS_ENOENT;
    size_t rl = strlen(rroot);
    /* The resolved file must be strictly inside the root. */
    if (strncmp(real, rroot, rl) != 0 || (real[rl] != '/' && rl != 1))
        return EMS_ENOENT;
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode))
        return EMS_ENOENT;
    if (strlen(real) >= cap)
        return EMS_ENOSPC;
    strcpy(out, real);
    return 0;
}

const char *gw_static_type(const char *file)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".woff", "font/woff"},
        {".woff2", "font/woff2"},
        {".txt", "text/plain; charset=utf-8"},
        {".wasm", "application/wasm"},
        {".webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(file, '.'), *slash = strrchr(file, '/');
    if (dot && (!slash || dot > slash)) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    }
    return "application/octet-stream";
}

const char *gw_static_cache(const char *file)
{
    const char *t = gw_static_type(file);
    return strncmp(t, "text/html", 9) == 0 ? "no-cache" : "public, max-age=3600";
}

/* The dashboard is one module script and one stylesheet from the same
 * origin (cloud/dashboard/build.mjs): no inline script, no eval, no inline
 * <style>. Two exceptions, both narrow:
 *  - style-src-attr 'unsafe-inline': the fleet view sets a bar's width with
 *    a style attribute (views/fleet.js); it allows style attributes only,
 *    never <style> elements nor any script;
 *  - img-src data: for the empty favicon (<link rel=icon href="data:,">).
 * connect-src 'self' covers fetch() and the WebSocket to the same host and
 * port: under CSP Level 3 'self' matches ws: and wss: of the page's origin
 * (Chromium, Firefox and Safari 15.4+, the dashboard's build targets).
 * frame-ancestors 'none' and X-Frame-Options: DENY (for older browsers)
 * keep the dashboard out of frames (clickjacking of the control view). */
#define GW_CSP                                                                                     \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "  \
    "manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'\r\n"
#define GW_SECURITY_HEADERS                                                                        \
    GW_CSP "X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n"                          \
           "Referrer-Policy: no-referrer\r\n"

const char *gw_static_security_headers(int tls)
{
    /* One year, the usual minimum; no includeSubDomains: the gateway's name
     * says nothing about the operator's other hosts. */
    return tls ? GW_SECURITY_HEADERS "Strict-Transport-Security: max-age=31536000\r\n"
               : GW_SECURITY_HEADERS;
}

int gw_static_read(const char *file, size_t max, char **data, size_t *len)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return EMS_ENOENT;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return EMS_ENOENT;
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return EMS_EMSGSIZE;
    }
    size_t size = (size_t)st.st_size, got = 0;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return EMS_ENOMEM;
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        free(buf);
        return EMS_EIO;
    }
    *data = buf;
    *len = size;
    return 0;
}
