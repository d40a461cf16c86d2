/* http.h: HTTP/1.1 message parsing (http_parser 2.9), response writing and
 * the WebSocket opening handshake of RFC 6455.
 *
 * The parser is incremental: feed it bytes as they arrive, in chunks of any
 * size. It stops after each complete message so the caller can answer a
 * request before parsing the next one (keep-alive, pipelining). Every part
 * is bounded (ems_http_limits_t); a request that passes a limit is refused
 * with the status a client expects (431 headers too large, 413 body too
 * large, 414 URI too long, 400 malformed), and the error names the limit.
 * Requests a proxy could read differently (RFC 9112) are refused with 400:
 * whitespace in a field name or before its colon, obs-fold lines, a bare
 * LF or CR in the header section, Content-Length with Transfer-Encoding and
 * a repeated Content-Length. Trailer fields of a chunked body are dropped.
 *
 * The parsed message (ems_http_msg_t) points into storage owned by the
 * parser; it is valid until ems_http_parser_reset or _free.
 * Nothing here does I/O.
 */
#ifndef EMS_HTTP_H
#define EMS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

typedef struct ems_http_limits {
    size_t max_header_bytes; /* request line + headers; default 8192 */
    size_t max_headers;      /* number of header fields; default 64 */
    size_t max_body;         /* body bytes; default 65536 */
    size_t max_url;          /* request target; default 2048 */
} ems_http_limits_t;

/* Fills in the defaults named above. */
void ems_http_limits_default(ems_http_limits_t *l);

typedef struct ems_http_header {
    const char *name;  /* NUL-terminated, as received (case kept) */
    const char *value; /* NUL-terminated, surrounding blanks removed */
} ems_http_header_t;

typedef struct ems_http_msg {
    /* Requests */
    const char *method; /* "GET", "POST", ... */
    const char *url;    /* the raw request target, e.g. "/ws/device/a?x=1" */
    const char *path;   /* the target up to '?', not percent-decoded */
    const char *query;  /* after '?', "" if none */
    /* Responses */
    int status;
    /* Both */
    int version_major, version_minor;
    size_t n_headers;
    const ems_http_header_t *headers;
    const char *body; /* NUL-terminated for convenience; may hold NULs */
    size_t body_len;
    bool keep_alive; /* per HTTP/1.x rules and the Connection header */
    bool upgrade;    /* the message carries an Upgrade header */
} ems_http_msg_t;

typedef enum { EMS_HTTP_REQUEST, EMS_HTTP_RESPONSE } ems_http_kind_t;

typedef struct ems_http_parser ems_http_parser_t;

/* Allocates a parser for requests or responses. `limits` may be NULL for
 * the defaults. Returns NULL when out of memory. */
ems_http_parser_t *ems_http_parser_new(ems_http_kind_t kind, const ems_http_limits_t *limits);
void ems_http_parser_free(ems_http_parser_t *p);

/* Feeds bytes. *consumed is set to the number of bytes taken. Returns
 *   0  the message is not complete yet (all bytes were taken),
 *   1  a message is complete (ems_http_parser_msg); bytes after it were not
 *      taken: after an Upgrade they belong to the new protocol, otherwise
 *      they start the next request (feed them after ems_http_parser_reset),
 *   EMS_EPROTO  malformed or over a limit: ems_http_parser_status gives the
 *      HTTP status to answer with (400, 413, 414, 431) and
 *      ems_http_parser_error a reason naming the limit. The parser is then
 *      dead; close the connection after answering.
 * For responses, a body without Content-Length or chunked encoding (one
 * delimited by the connection close) is not read: the message completes
 * after its headers. */
int ems_http_parser_feed(ems_http_parser_t *p, const char *data, size_t len, size_t *consumed);

/* The complete message after feed returned 1, else NULL. */
const ems_http_msg_t *ems_http_parser_msg(const ems_http_parser_t *p);

/* Readies the parser for the next message on the same connection. */
void ems_http_parser_reset(ems_http_parser_t *p);

/* After EMS_EPROTO: the status to answer with, and a static-ish reason
 * (valid until reset/free), e.g. "header section over 8192 bytes". */
int ems_http_parser_status(const ems_http_parser_t *p);
const char *ems_http_parser_error(const ems_http_parser_t *p);

/* First header named `name` (ASCII case-insensitive), or NULL. */
const char *ems_http_msg_header(const ems_http_msg_t *m, const char *name);

/* 1 if the comma-separated list `value` holds `token` (ASCII
 * case-insensitive, blanks around items ignored), e.g. Connection:
 * "keep-alive, Upgrade" holds "upgrade". NULL value -> 0. */
int ems_http_has_token(const char *value, const char *token);

/* Standard reason phrase ("Not Found"), "Unknown" for others. */
const char *ems_http_reason(int status);

/* Appends a complete response to `out`: status line, Date is not sent,
 * Content-Length always, "Connection: close" when !keep_alive,
 * Content-Type if non-NULL, then `extra_headers` verbatim (each line ending
 * in "\r\n"; NULL for none), a blank line and the body. Returns 0,
 * EMS_ENOSPC or EMS_ENOMEM. */
int ems_http_response_write(ems_buf_t *out, int status, const char *content_type,
                            const char *extra_headers, const void *body, size_t body_len,
                            bool keep_alive);

/* ---- WebSocket opening handshake (RFC 6455 section 4) ---- */

/* Computes Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64 of the
 * SHA-1 of key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11". out receives 28
 * characters and a NUL. Returns 0 or EMS_EINVAL (NULL or too long key). */
int ems_http_ws_accept(const char *key, char out[29]);

/* Checks that `req` is a valid WebSocket upgrade request: GET, HTTP/1.1 or
 * later, Host present, Upgrade: websocket, Connection holding the token
 * "upgrade", Sec-WebSocket-Version: 13, and a Sec-WebSocket-Key that is the
 * base64 of 16 bytes. Returns 0, or the HTTP status to refuse with (400, or
 * 426 for an unsupported version, to be answered with a
 * "Sec-WebSocket-Version: 13" header) and sets *why to a static reason. */
int ems_http_ws_check_request(const ems_http_msg_t *req, const char **why);

/* Appends the 101 response for an accepted upgrade request (which must have
 * passed ems_http_ws_check_request) plus `extra_headers` (NULL for none).
 * Returns 0, EMS_EINVAL, EMS_ENOSPC or EMS_ENOMEM. */
int ems_http_ws_response_write(ems_buf_t *out, const ems_http_msg_t *req,
                               const char *extra_headers);

/* Appends a client upgrade request for `path` (e.g. "/ws/device/ems_001")
 * with Host: `host_header` (e.g. "example.com:8443"), a fresh random
 * Sec-WebSocket-Key (from getrandom(2)) that is also copied to key_out, and
 * `extra_headers` verbatim (e.g. "Authorization: Bearer abc\r\n"; NULL for
 * none). Returns 0, EMS_EINVAL, EMS_EIO (no randomness), EMS_ENOSPC or
 * EMS_ENOMEM. */
int ems_http_ws_request_write(ems_buf_t *out, const char *host_header, const char *path,
                              const char *extra_headers, char key_out[25]);

/* Checks the server's answer to the request made with `key`: status 101,
 * Upgrade: websocket, Connection: upgrade and the matching
 * Sec-WebSocket-Accept. Returns 0 or EMS_EPROTO with *why set. */
int ems_http_ws_check_response(const ems_http_msg_t *resp, const char *key, const char **why);

#endif
