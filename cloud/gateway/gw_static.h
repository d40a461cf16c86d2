/* gw_static.h: the dashboard's static files, safely.
 *
 * A request path is turned into a file under the configured root or
 * refused. Refused (all answered 404, never 403, so probing learns nothing):
 * a backslash, a NUL or a malformed escape anywhere; a ".." or "." segment
 * after percent-decoding (so %2e%2e is caught too); a file whose real path
 * (symlinks resolved) lies outside the root; anything but a regular file.
 * "/" and paths ending in "/" mean index.html.
 */
#ifndef GW_STATIC_H
#define GW_STATIC_H

#include <stddef.h>

/* Resolves `len` bytes of a request path (no query) under `root` into
 * out (an absolute real path). Returns 0, EMS_ENOENT (refused or absent)
 * or EMS_ENOSPC. */
int gw_static_resolve(const char *root, const char *path, size_t len, char *out, size_t cap);

/* The Content-Type for a file name, from its extension. Never NULL. */
const char *gw_static_type(const char *file);

/* The Cache-Control for a file: HTML is revalidated every time (it names
 * the current assets); other files may be cached for an hour. */
const char *gw_static_cache(const char *file);

/* The security headers the gateway adds to every response (static files,
 * the REST API, errors), as "\r\n"-terminated lines: a Content-Security-
 * Policy the dashboard runs under, X-Frame-Options, X-Content-Type-Options
 * and Referrer-Policy; Strict-Transport-Security too when `tls` is set (over
 * plain HTTP a browser ignores it, and it must never be sent by a gateway
 * that cannot answer https). A static string, never NULL. */
const char *gw_static_security_headers(int tls);

/* Reads a whole regular file of at most `max` bytes into a new buffer
 * (caller frees). Returns 0, EMS_ENOENT, EMS_EMSGSIZE or EMS_EIO. */
int gw_static_read(const char *file, size_t max, char **data, size_t *len);

#endif
