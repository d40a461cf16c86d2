/* client.h: the WebSocket client the edge uses (ws:// and wss:// URLs).
 *
 * ems_wsclient_connect parses the URL, resolves and connects, runs the TLS
 * handshake (server certificate verified against the CA of the given client
 * configuration and the URL's host name), sends the upgrade request with the
 * caller's extra headers (Authorization: Bearer ...) and then runs an
 * ems_ws_t in client role. Everything after the call is reported through
 * the ems_ws callbacks: on_open when the upgrade is done, on_close with the
 * reason otherwise (connection refused, TLS failure, 401, timeout, ...).
 *
 * Reconnect policy is not here: the edge decides when to call connect again
 * (backoff.h has the delay helper).
 */
#ifndef EMS_CLIENT_H
#define EMS_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conn.h"
#include "tls.h"
#include "ws.h"

/* A parsed ws:// or wss:// URL. */
typedef struct ems_wsclient_url {
    bool tls;        /* wss:// */
    char host[256];  /* name or address, without brackets for IPv6 */
    uint16_t port;   /* explicit, or 80 / 443 */
    char path[1024]; /* path and query, "/" if the URL has none */
} ems_wsclient_url_t;

/* Parses "ws://host[:port][/path[?query]]" or "wss://..." (scheme case-
 * insensitive, "[v6addr]" accepted). Rejects user info, fragments, empty
 * hosts, bad ports and over-long parts. Returns 0 or EMS_EINVAL. */
int ems_wsclient_url_parse(const char *url, ems_wsclient_url_t *out);

typedef struct ems_wsclient_options {
    /* Client TLS configuration; required for wss://, ignored for ws://.
     * A reference is taken for the connection's life. */
    ems_tls_config_t *tls;
    /* Name to verify the server certificate against (and send as SNI)
     * instead of the URL's host; NULL to use the URL's host. For a gateway
     * reached by IP address whose certificate names it by DNS name. */
    const char *tls_hostname;
    /* Extra request header lines, each ending in "\r\n", e.g.
     * "Authorization: Bearer <token>\r\n"; NULL for none. Copied. */
    const char *extra_headers;
    /* WebSocket options; NULL for the defaults. */
    const ems_ws_options_t *ws;
    /* Connection options; NULL for the defaults. */
    const ems_conn_options_t *conn;
} ems_wsclient_options_t;

/* Starts connecting to `url`. Returns 0 and the WebSocket (client role, not
 * yet open) in *out; on_open or on_close follows, never inside this call.
 * Returns EMS_EINVAL (bad URL, wss:// without a client TLS configuration)
 * or EMS_ENOMEM without calling any callback. The caller may ems_ws_abort
 * or ems_ws_close the returned object at any time to give up. */
int ems_wsclient_connect(uv_loop_t *loop, const char *url, const ems_wsclient_options_t *opts,
                         const ems_ws_callbacks_t *cbs, void *user, ems_ws_t **out);

#endif
