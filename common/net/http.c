/* http.c: bounded incremental HTTP/1.x parsing on http_parser 2.9, response
 * writing and the RFC 6455 opening handshake (see http.h).
 *
 * Storage: the request target and the header names and values are copied
 * into one arena (an ems_buf_t capped at max_header_bytes) as NUL-terminated
 * strings. While parsing, headers are remembered as offsets, because the
 * arena may move when it grows; the pointer array is built once the header
 * section is complete and the arena no longer changes. The body has its own
 * buffer capped at max_body.
 */
#include "http.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <http_parser.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>

#include "error.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct {
    uint32_t name, value; /* arena offsets */
} http_hdr_off_t;

typedef enum { CB_NONE, CB_FIELD, CB_VALUE } http_last_cb_t;

struct ems_http_parser {
    http_parser hp;
    http_parser_settings settings;
    ems_http_kind_t kind;
    ems_http_limits_t lim;
    ems_buf_t arena;
    ems_buf_t body;
    http_hdr_off_t *offs; /* lim.max_headers entries */
    ems_http_header_t *hdrs;
    size_t n_hdrs;
    http_last_cb_t last;
    uint32_t url_off, path_off, query_off;
    size_t url_len;
    int url_open; /* the URL is still being appended */
    int built;    /* the message view exists: the arena must not move */
    int complete;
    int dead;
    int status; /* HTTP status for a refusal */
    char err[128];
    /* Raw header-section check of requests (http_precheck): */
    int head_done;  /* the blank line ending the header section was seen */
    int head_cr;    /* the last byte was CR */
    int head_bol;   /* at the beginning of a line */
    int head_start; /* the request line has begun */
    int head_name;  /* inside a field name (before its colon) */
    /* Chunked bodies: http_parser (non-strict) accepts any two bytes after a
     * chunk's data; we insist on CRLF (RFC 9112 7.1). */
    const char *feed_end;  /* end of the bytes given to the current feed */
    const char *crlf_want; /* CRLF bytes still expected at the next feed */
    ems_http_msg_t msg;
};

void ems_http_limits_default(ems_http_limits_t *l)
{
    l->max_header_bytes = 8192;
    l->max_headers = 64;
    l->max_body = 65536;
    l->max_url = 2048;
}

static int http_refuse(ems_http_parser_t *p, int status, const char *fmt, size_t n)
{
    p->status = status;
    snprintf(p->err, sizeof p->err, fmt, n);
    return 1; /* non-zero stops http_parser with a callback error */
}

static int http_arena_add(ems_http_parser_t *p, const char *at, size_t len)
{
    int rc = ems_buf_append(&p->arena, at, len);
    if (rc == EMS_ENOSPC)
        return http_refuse(p, 431, "header section over %zu bytes", p->lim.max_header_bytes);
    if (rc < 0)
        return http_refuse(p, 500, "out of memory", 0);
    return 0;
}

static int http_arena_nul(ems_http_parser_t *p)
{
    return http_arena_add(p, "", 1);
}

static uint32_t http_arena_pos(const ems_http_parser_t *p)
{
    return (uint32_t)ems_buf_len(&p->arena);
}

static int http_close_url(ems_http_parser_t *p)
{
    if (!p->url_open)
        return 0;
    p->url_open = 0;
    return http_arena_nul(p);
}

static int on_message_begin(http_parser *hp)
{
    (void)hp;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    ems_http_parser_t *p = hp->data;
    if (!p->url_open) {
        p->url_open = 1;
        p->url_off = http_arena_pos(p);
    }
    p->url_len += len;
    if (p->url_len > p->lim.max_url)
        return http_refuse(p, 414, "request target over %zu bytes", p->lim.max_url);
    return http_arena_add(p, at, len);
}

static int on_status(http_parser *hp, const char *at, size_t len)
{
    (void)hp, (void)at, (void)len; /* the reason phrase is not kept */
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    ems_http_parser_t *p = hp->data;
    /* Trailer fields of a chunked body come after the message view was
     * built over the arena; storing them could move it (a use after free).
     * RFC 9110 6.5.1 lets a recipient discard them, so we do. */
    if (p->built)
        return 0;
    if (http_close_url(p))
        return 1;
    if (p->last != CB_FIELD) {
        if (p->last == CB_VALUE && http_arena_nul(p))
            return 1;
        if (p->n_hdrs == p->lim.max_headers)
            return http_refuse(p, 431, "more than %zu header fields", p->lim.max_headers);
        p->offs[p->n_hdrs].name = http_arena_pos(p);
        p->offs[p->n_hdrs].value = UINT32_MAX;
        p->n_hdrs++;
        p->last = CB_FIELD;
    }
    return http_arena_add(p, at, len);
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    ems_http_parser_t *p = hp->data;
    if (p->built)
        return 0; /* a trailer field, see on_header_field */
    if (p->last != CB_VALUE) {
        if (http_arena_nul(p))
            return 1;
        p->offs[p->n_hdrs - 1].value = http_arena_pos(p);
        p->last = CB_VALUE;
    }
    return http_arena_add(p, at, len);
}

/* Builds the message view: pointers into the arena, which stops changing
 * here. Trailing blanks of values are cut (http_parser keeps them). */
static void http_build_msg(ems_http_parser_t *p)
{
    char *base = p->arena.data ? p->arena.data + p->arena.off : NULL;
    ems_http_msg_t *m = &p->msg;
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < p->n_hdrs; i++) {
        p->hdrs[i].name = base + p->offs[i].name;
        if (p->offs[i].value == UINT32_MAX) {
            p->hdrs[i].value = "";
        } else {
            char *v = base + p->offs[i].value;
            size_t n = strlen(v);
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                v[--n] = '\0';
            p->hdrs[i].value = v;
        }
    }
    m->headers = p->hdrs;
    m->n_headers = p->n_hdrs;
    m->version_major = p->hp.http_major;
    m->version_minor = p->hp.http_minor;
    if (p->kind == EMS_HTTP_REQUEST) {
        m->method = http_method_str((enum http_method)p->hp.method);
        m->url = base ? base + p->url_off : "";
        m->path = base ? base + p->path_off : "";
        m->query = base ? base + p->query_off : "";
    } else {
        m->method = m->url = m->path = m->query = "";
        m->status = (int)p->hp.status_code;
    }
    m->body = "";
    m->upgrade = ems_http_msg_header(m, "Upgrade") != NULL;
}

static int on_headers_complete(http_parser *hp)
{
    ems_http_parser_t *p = hp->data;
    if (http_close_url(p))
        return 3;
    if (p->last == CB_VALUE && http_arena_nul(p))
        return 3;
    p->last = CB_NONE;
    if (p->kind == EMS_HTTP_REQUEST) {
        /* Split the target into path and query: copy the path as its own
         * string so both stay NUL-terminated without touching the URL. */
        const char *url = p->arena.data + p->arena.off + p->url_off;
        size_t plen = strcspn(url, "?");
        int has_q = url[plen] == '?';
        size_t qoff = p->url_off + plen + (has_q ? 1 : 0);
        char *dst;
        /* Reserve first: growing the arena may move the URL we copy from. */
        if (ems_buf_reserve(&p->arena, plen + 1, &dst) < 0) {
            http_refuse(p, 431, "header section over %zu bytes", p->lim.max_header_bytes);
            return 3;
        }
        p->path_off = http_arena_pos(p);
        memcpy(dst, p->arena.data + p->arena.off + p->url_off, plen);
        dst[plen] = '\0';
        ems_buf_commit(&p->arena, plen + 1);
        p->query_off = has_q ? (uint32_t)qoff : p->path_off + (uint32_t)plen;
    }
    /* A declared length over the limit is refused before reading it. */
    if ((hp->flags & F_CONTENTLENGTH) && hp->content_length != ULLONG_MAX &&
        hp->content_length > p->lim.max_body) {
        http_refuse(p, 413, "body over %zu bytes", p->lim.max_body);
        return 3;
    }
    http_build_msg(p);
    p->built = 1;
    /* A 101 has no body whatever its headers say; the bytes after it belong
     * to the new protocol. */
    if (p->kind == EMS_HTTP_RESPONSE && hp->status_code == 101)
        return 2;
    /* A response body delimited only by the connection close is not
     * waited for: the client here wants the status of its upgrade answer,
     * and a server that keeps the connection open would otherwise leave it
     * waiting until its deadline. */
    if (p->kind == EMS_HTTP_RESPONSE && !(hp->flags & (F_CHUNKED | F_CONTENTLENGTH)))
        return 1;
    return 0;
}

/* Checks that the bytes from `end` on are `want` (the CRLF after a chunk's
 * data, or what is left of it): as many as this feed holds now, the rest
 * at the start of the next feed. */
static int http_check_crlf(ems_http_parser_t *p, const char *end, const char *want)
{
    for (; *want && end < p->feed_end; want++, end++)
        if (*end != *want)
            return http_refuse(p, 400, "malformed HTTP: chunk data not followed by CRLF", 0);
    p->crlf_want = *want ? want : NULL;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    ems_http_parser_t *p = hp->data;
    if (len > p->lim.max_body - ems_buf_len(&p->body))
        return http_refuse(p, 413, "body over %zu bytes", p->lim.max_body);
    /* The end of a chunk's data: the CRLF follows. */
    if ((hp->flags & F_CHUNKED) && hp->content_length == 0 &&
        http_check_crlf(p, at + len, "\r\n"))
        return 1;
    int rc = ems_buf_append(&p->body, at, len);
    if (rc < 0)
        return http_refuse(p, 500, "out of memory", 0);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    ems_http_parser_t *p = hp->data;
    /* NUL-terminate the body for convenience without counting it; the
     * buffer's cap has one byte of room for this (see on_body). */
    char *z;
    if (ems_buf_reserve(&p->body, 1, &z) < 0)
        return http_refuse(p, 500, "out of memory", 0);
    *z = '\0';
    p->msg.body = ems_buf_len(&p->body) ? ems_buf_data(&p->body) : "";
    p->msg.body_len = ems_buf_len(&p->body);
    p->msg.keep_alive = http_should_keep_alive(hp) != 0;
    p->complete = 1;
    /* Stop after each message: the caller answers before parsing on. */
    http_parser_pause(hp, 1);
    return 0;
}

ems_http_parser_t *ems_http_parser_new(ems_http_kind_t kind, const ems_http_limits_t *limits)
{
    ems_http_parser_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    ems_http_limits_t d;
    ems_http_limits_default(&d);
    p->lim = d;
    if (limits) {
        if (limits->max_header_bytes)
            p->lim.max_header_bytes = limits->max_header_bytes;
        if (limits->max_headers)
            p->lim.max_headers = limits->max_headers;
        if (limits->max_body)
            p->lim.max_body = limits->max_body;
        if (limits->max_url)
            p->lim.max_url = limits->max_url;
    }
    if (p->lim.max_header_bytes > UINT32_MAX / 2)
        p->lim.max_header_bytes = UINT32_MAX / 2;
    p->offs = calloc(p->lim.max_headers, sizeof *p->offs);
    p->hdrs = calloc(p->lim.max_headers, sizeof *p->hdrs);
    if (!p->offs || !p->hdrs) {
        free(p->offs);
        free(p->hdrs);
        free(p);
        return NULL;
    }
    p->kind = kind;
    ems_buf_init(&p->arena, p->lim.max_header_bytes);
    ems_buf_init(&p->body, p->lim.max_body + 1); /* + the NUL */
    http_parser_settings_init(&p->settings);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_url = on_url;
    p->settings.on_status = on_status;
    p->settings.on_header_field = on_header_field;
    p->settings.on_header_value = on_header_value;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_message_complete = on_message_complete;
    ems_http_parser_reset(p);
    return p;
}

void ems_http_parser_free(ems_http_parser_t *p)
{
    if (!p)
        return;
    ems_buf_free(&p->arena);
    ems_buf_free(&p->body);
    free(p->offs);
    free(p->hdrs);
    free(p);
}

void ems_http_parser_reset(ems_http_parser_t *p)
{
    http_parser_init(&p->hp, p->kind == EMS_HTTP_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
    p->hp.data = p;
    /* Keep small buffers for the next request on a keep-alive connection,
     * drop big ones. */
    ems_buf_trim(&p->arena, 4096);
    ems_buf_trim(&p->body, 4096);
    p->n_hdrs = 0;
    p->last = CB_NONE;
    p->url_off = p->path_off = p->query_off = 0;
    p->url_len = 0;
    p->url_open = 0;
    p->built = 0;
    p->complete = 0;
    p->dead = 0;
    p->status = 0;
    p->err[0] = '\0';
    p->head_done = p->head_cr = p->head_name = p->head_start = 0;
    p->head_bol = 1;
    p->crlf_want = NULL;
    memset(&p->msg, 0, sizeof p->msg);
}

/* Refuses what RFC 9112 calls ambiguous in a request's header section,
 * before http_parser sees it: a bare LF or bare CR instead of CRLF (2.2),
 * a line starting with SP or HTAB, i.e. an obs-fold continuation (5.2), and
 * SP or HTAB between a field name and its colon (5.1). A proxy in front of
 * us may read such a request differently from us, which is how requests
 * are smuggled.
 *
 * Why by hand: Debian builds http_parser with HTTP_PARSER_STRICT=0, which
 * accepts a space inside a field name ("Transfer-Encoding : chunked" became
 * a harmless header named "Transfer-Encoding "), folds continuation lines
 * into the value and takes LF for CRLF; and the callbacks never see the
 * line endings, so nothing after the fact can tell. Its lenient_http_headers
 * and allow_chunked_length flags stay off (the defaults), so it does refuse
 * Content-Length with Transfer-Encoding and a repeated Content-Length.
 * http_parser_set_max_header_size is global to the process and our own
 * limits already bound the header section, so it is not used.
 *
 * The scan covers the header section only (it ends at the first empty line
 * after the request line; empty lines before the request line are skipped as
 * http_parser does), so its cost is one pass over at most max_header_bytes.
 * Responses are not checked: the client side only talks to our gateway.
 * Returns the number of bytes that passed; *bad is set to 1 and the refusal
 * recorded when it stopped at an offending byte. */
static size_t http_precheck(ems_http_parser_t *p, const char *data, size_t len, int *bad)
{
    *bad = 0;
    for (size_t i = 0; i < len && !p->head_done; i++) {
        char c = data[i];
        const char *why = NULL;
        if (p->head_cr && c != '\n') {
            why = "bare CR in header section (lines must end in CRLF)";
        } else if (c == '\r') {
            p->head_cr = 1;
        } else if (c == '\n') {
            if (!p->head_cr)
                why = "bare LF in header section (lines must end in CRLF)";
            else if (p->head_bol && p->head_start)
                p->head_done = 1; /* the rest is body or the next request */
            p->head_cr = 0;
            p->head_bol = 1;
            p->head_name = 0;
        } else {
            int blank = c == ' ' || c == '\t';
            if (p->head_bol && !p->head_start) {
                p->head_start = 1; /* the request line: http_parser checks it */
            } else if (p->head_bol) {
                if (blank)
                    why = "header line starts with whitespace (obs-fold)";
                p->head_name = 1;
            }
            if (!why && p->head_name) {
                if (c == ':')
                    p->head_name = 0;
                else if (blank)
                    why = "whitespace in header field name or before its colon";
            }
            p->head_bol = 0;
        }
        if (why) {
            p->status = 400;
            snprintf(p->err, sizeof p->err, "malformed HTTP: %s", why);
            *bad = 1;
            return i;
        }
    }
    return len;
}

int ems_http_parser_feed(ems_http_parser_t *p, const char *data, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (p->dead)
        return EMS_EPROTO;
    if (p->complete)
        return 1;
    if (p->kind == EMS_HTTP_REQUEST && !p->head_done) {
        int bad;
        size_t ok = http_precheck(p, data, len, &bad);
        if (bad) {
            p->dead = 1;
            *consumed = ok;
            return EMS_EPROTO;
        }
    }
    p->feed_end = data + len;
    if (p->crlf_want && len > 0 && http_check_crlf(p, data, p->crlf_want)) {
        p->dead = 1;
        return EMS_EPROTO;
    }
    size_t n = http_parser_execute(&p->hp, &p->settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    if (p->complete) {
        /* Paused by on_message_complete (HPE_PAUSED). */
        *consumed = n;
        return 1;
    }
    if (e != HPE_OK) {
        p->dead = 1;
        *consumed = n;
        if (p->status == 0 && e == HPE_UNEXPECTED_CONTENT_LENGTH) {
            /* http_parser's own words ("unexpected content-length header")
             * do not say which rule (RFC 9112 6.3) was broken. */
            p->status = 400;
            snprintf(p->err, sizeof p->err, "malformed HTTP: %s",
                     p->hp.uses_transfer_encoding ? "both Content-Length and Transfer-Encoding"
                                                  : "Content-Length repeated");
        } else if (p->status == 0) {
            p->status = 400;
            snprintf(p->err, sizeof p->err, "malformed HTTP: %s", http_errno_description(e));
        }
        return EMS_EPROTO;
    }
    *consumed = n;
    return 0;
}

const ems_http_msg_t *ems_http_parser_msg(const ems_http_parser_t *p)
{
    return p->complete ? &p->msg : NULL;
}

int ems_http_parser_status(const ems_http_parser_t *p)
{
    return p->status;
}

const char *ems_http_parser_error(const ems_http_parser_t *p)
{
    return p->err;
}

const char *ems_http_msg_header(const ems_http_msg_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++)
        if (strcasecmp(m->headers[i].name, name) == 0)
            return m->headers[i].value;
    return NULL;
}

int ems_http_has_token(const char *value, const char *token)
{
    if (!value)
        return 0;
    size_t tlen = strlen(token);
    const char *s = value;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - s) == tlen && strncasecmp(s, token, tlen) == 0)
            return 1;
        s = e;
    }
    return 0;
}

const char *ems_http_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

int ems_http_response_write(ems_buf_t *out, int status, const char *content_type,
                            const char *extra_headers, const void *body, size_t body_len,
                            bool keep_alive)
{
    size_t mark = out->len;
    int rc = ems_buf_appendf(out, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s", status,
                             ems_http_reason(status), body_len,
                             keep_alive ? "" : "Connection: close\r\n");
    if (rc == 0 && content_type)
        rc = ems_buf_appendf(out, "Content-Type: %s\r\n", content_type);
    if (rc == 0 && extra_headers)
        rc = ems_buf_append_str(out, extra_headers);
    if (rc == 0)
        rc = ems_buf_append(out, "\r\n", 2);
    if (rc == 0 && body_len)
        rc = ems_buf_append(out, body, body_len);
    if (rc < 0 && out->len >= mark)
        out->len = mark; /* all or nothing */
    return rc;
}

/* ------------------------------------------------------------ WebSocket */

int ems_http_ws_accept(const char *key, char out[29])
{
    unsigned char cat[128], sha[20];
    size_t klen = key ? strlen(key) : 0, olen = 0;
    if (!key || klen + sizeof WS_GUID > sizeof cat)
        return EMS_EINVAL;
    memcpy(cat, key, klen);
    memcpy(cat + klen, WS_GUID, sizeof WS_GUID - 1);
    if (mbedtls_sha1_ret(cat, klen + sizeof WS_GUID - 1, sha) != 0)
        return EMS_EINVAL;
    if (mbedtls_base64_encode((unsigned char *)out, 29, &olen, sha, sizeof sha) != 0 || olen != 28)
        return EMS_EINVAL;
    out[28] = '\0';
    return 0;
}

static int ws_key_valid(const char *key)
{
    unsigned char raw[32];
    size_t olen = 0;
    if (!key || strlen(key) != 24)
        return 0;
    if (mbedtls_base64_decode(raw, sizeof raw, &olen, (const unsigned char *)key, 24) != 0)
        return 0;
    return olen == 16;
}

int ems_http_ws_check_request(const ems_http_msg_t *req, const char **why)
{
    const char *v;
    *why = "";
    if (strcmp(req->method, "GET") != 0) {
        *why = "WebSocket upgrade must use GET";
        return 400;
    }
    if (req->version_major < 1 || (req->version_major == 1 && req->version_minor < 1)) {
        *why = "WebSocket upgrade needs HTTP/1.1";
        return 400;
    }
    if (!ems_http_msg_header(req, "Host")) {
        *why = "missing Host header";
        return 400;
    }
    if (!ems_http_has_token(ems_http_msg_header(req, "Upgrade"), "websocket")) {
        *why = "missing or wrong Upgrade header (want websocket)";
        return 400;
    }
    if (!ems_http_has_token(ems_http_msg_header(req, "Connection"), "upgrade")) {
        *why = "Connection header lacks the upgrade token";
        return 400;
    }
    v = ems_http_msg_header(req, "Sec-WebSocket-Version");
    if (!v || strcmp(v, "13") != 0) {
        *why = "unsupported Sec-WebSocket-Version (want 13)";
        return 426;
    }
    if (!ws_key_valid(ems_http_msg_header(req, "Sec-WebSocket-Key"))) {
        *why = "missing or malformed Sec-WebSocket-Key";
        return 400;
    }
    return 0;
}

int ems_http_ws_response_write(ems_buf_t *out, const ems_http_msg_t *req, const char *extra_headers)
{
    char accept[29];
    if (ems_http_ws_accept(ems_http_msg_header(req, "Sec-WebSocket-Key"), accept) < 0)
        return EMS_EINVAL;
    size_t mark = out->len;
    int rc = ems_buf_appendf(out,
                             "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: %s\r\n"
                             "%s\r\n",
                             accept, extra_headers ? extra_headers : "");
    if (rc < 0 && out->len >= mark)
        out->len = mark;
    return rc;
}

static int http_token_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return 0;
    return 1;
}

int ems_http_ws_request_write(ems_buf_t *out, const char *host_header, const char *path,
                              const char *extra_headers, char key_out[25])
{
    unsigned char raw[16];
    size_t olen = 0;
    if (!host_header || !path || path[0] != '/' || !http_token_safe(path) ||
        !http_token_safe(host_header))
        return EMS_EINVAL;
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return EMS_EIO;
    if (mbedtls_base64_encode((unsigned char *)key_out, 25, &olen, raw, sizeof raw) != 0)
        return EMS_EINVAL;
    key_out[24] = '\0';
    size_t mark = out->len;
    int rc = ems_buf_appendf(out,
                             "GET %s HTTP/1.1\r\n"
                             "Host: %s\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Key: %s\r\n"
                             "Sec-WebSocket-Version: 13\r\n"
                             "%s\r\n",
                             path, host_header, key_out, extra_headers ? extra_headers : "");
    if (rc < 0 && out->len >= mark)
        out->len = mark;
    return rc;
}

int ems_http_ws_check_response(const ems_http_msg_t *resp, const char *key, const char **why)
{
    char want[29];
    *why = "";
    if (resp->status != 101) {
        *why = "server refused the upgrade";
        return EMS_EPROTO;
    }
    if (!ems_http_has_token(ems_http_msg_header(resp, "Upgrade"), "websocket")) {
        *why = "101 without Upgrade: websocket";
        return EMS_EPROTO;
    }
    if (!ems_http_has_token(ems_http_msg_header(resp, "Connection"), "upgrade")) {
        *why = "101 without Connection: upgrade";
        return EMS_EPROTO;
    }
    const char *acc = ems_http_msg_header(resp, "Sec-WebSocket-Accept");
    if (ems_http_ws_accept(key, want) < 0 || !acc || strcmp(acc, want) != 0) {
        *why = "wrong Sec-WebSocket-Accept";
        return EMS_EPROTO;
    }
    return 0;
}
