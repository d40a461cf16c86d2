/* client.c: ws:// and wss:// URLs and the edge's WebSocket connect
 * (see client.h). All the work is in conn.c and ws.c; this is the glue
 * that turns a URL into their arguments. */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

int ems_wsclient_url_parse(const char *url, ems_wsclient_url_t *out)
{
    memset(out, 0, sizeof *out);
    if (!url)
        return EMS_EINVAL;
    const char *p;
    if (strncasecmp(url, "wss://", 6) == 0) {
        out->tls = true;
        out->port = 443;
        p = url + 6;
    } else if (strncasecmp(url, "ws://", 5) == 0) {
        out->port = 80;
        p = url + 5;
    } else {
        return EMS_EINVAL;
    }
    for (const char *q = url; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f || *q == '#')
            return EMS_EINVAL;
    size_t alen = strcspn(p, "/?");
    const char *rest = p + alen;
    if (memchr(p, '@', alen))
        return EMS_EINVAL; /* user info: never send credentials in a URL */
    const char *host = p, *hend;
    const char *port = NULL;
    if (*p == '[') {
        hend = memchr(p, ']', alen);
        if (!hend)
            return EMS_EINVAL;
        host = p + 1;
        if (hend + 1 < rest) {
            if (hend[1] != ':')
                return EMS_EINVAL;
            port = hend + 2;
        }
    } else {
        hend = memchr(p, ':', alen);
        if (hend)
            port = hend + 1;
        else
            hend = rest;
    }
    size_t hlen = (size_t)(hend - host);
    if (hlen == 0 || hlen >= sizeof out->host)
        return EMS_EINVAL;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    if (port) {
        if (port >= rest)
            return EMS_EINVAL;
        unsigned long v = 0;
        for (const char *d = port; d < rest; d++) {
            if (*d < '0' || *d > '9')
                return EMS_EINVAL;
            v = v * 10 + (unsigned long)(*d - '0');
            if (v > 65535)
                return EMS_EINVAL;
        }
        if (v == 0)
            return EMS_EINVAL;
        out->port = (uint16_t)v;
    }
    int n;
    if (*rest == '\0')
        n = snprintf(out->path, sizeof out->path, "/");
    else if (*rest == '?')
        n = snprintf(out->path, sizeof out->path, "/%s", rest);
    else
        n = snprintf(out->path, sizeof out->path, "%s", rest);
    if (n < 0 || (size_t)n >= sizeof out->path)
        return EMS_EINVAL;
    return 0;
}

int ems_wsclient_connect(uv_loop_t *loop, const char *url, const ems_wsclient_options_t *opts,
                         const ems_ws_callbacks_t *cbs, void *user, ems_ws_t **out)
{
    ems_wsclient_url_t u;
    *out = NULL;
    if (ems_wsclient_url_parse(url, &u) < 0)
        return EMS_EINVAL;
    ems_tls_config_t *tls = u.tls ? (opts ? opts->tls : NULL) : NULL;
    if (u.tls && !tls)
        return EMS_EINVAL;
    /* Host header: brackets for IPv6, the port only when not the default. */
    char host_header[300];
    int v6 = strchr(u.host, ':') != NULL;
    if (u.port == (u.tls ? 443 : 80))
        snprintf(host_header, sizeof host_header, v6 ? "[%s]" : "%s", u.host);
    else
        snprintf(host_header, sizeof host_header, v6 ? "[%s]:%u" : "%s:%u", u.host,
                 (unsigned)u.port);
    ems_conn_t *conn = NULL;
    int rc = ems_conn_connect(loop, u.host, u.port, tls, opts ? opts->tls_hostname : NULL,
                              opts ? opts->conn : NULL, NULL, NULL, &conn);
    if (rc < 0)
        return rc;
    return ems_ws_connect(conn, host_header, u.path, opts ? opts->extra_headers : NULL,
                          opts ? opts->ws : NULL, cbs, user, out);
}
