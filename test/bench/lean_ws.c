/* lean_ws.c: a minimal WebSocket client for load generation (lean_ws.h).
 *
 * States: connecting (TCP), upgrading (request sent, reading the 101),
 * open, closing (our close frame sent, or the server's answered: waiting
 * for its EOF), closed (uv_close issued). Connections in the first two and
 * in closing are on the context's `pending` list, which one timer sweeps
 * for deadlines, so no connection owns a timer.
 *
 * All closing goes through lw_finish, which only issues uv_close: the
 * memory is freed in the close callback, after on_close, so any callback
 * may close its own connection.
 */
#include "lean_ws.h"

#include "error.h"
#include "http.h"

#include <errno.h>
#include <mbedtls/base64.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define LW_SWEEP_MS 250
#define LW_MAX_HEADER 8192
#define LW_FRAME_MAX 65536

typedef enum { LW_CONNECTING, LW_UPGRADING, LW_OPEN, LW_CLOSING, LW_CLOSED } lw_state_t;

/* What only a connection being opened needs. */
typedef struct lw_hs {
    uv_connect_t req;
    char key[25];
    size_t req_len;
    char req_text[]; /* the upgrade request */
} lw_hs_t;

/* The rest of a frame the kernel did not take at once. */
typedef struct lw_pend {
    uv_write_t req;
    size_t len;
    char data[];
} lw_pend_t;

struct lean_ws {
    uv_tcp_t tcp;
    lean_ws_ctx_t *x;
    void *user;
    lw_hs_t *hs;               /* connecting and upgrading only */
    lean_ws_t *prev, *next;    /* in x->pending */
    char *carry;               /* bytes of an incomplete header or frame */
    char *frag;                /* a fragmented message so far */
    uint32_t carry_len, carry_cap, frag_len;
    uint64_t deadline;         /* uv_now() ms, while pending */
    uint8_t state;
    bool listed, opened, writing, got_close;
    int status, http_status, code;
    const char *detail;
};

_Static_assert(sizeof(((lean_ws_ctx_t *)0)->sbuf) >= LW_FRAME_MAX + 14, "frame buffer");

/* ------------------------------------------------------------ helpers */

static uint64_t lw_rand(lean_ws_ctx_t *x)
{
    /* xorshift64* (see lean_ws.h on why not a cryptographic source) */
    uint64_t s = x->rng;
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    x->rng = s;
    return s * 0x2545F4914F6CDD1DULL;
}

static void lw_list_add(lean_ws_t *c, uint64_t deadline)
{
    c->deadline = deadline;
    if (c->listed)
        return;
    c->listed = true;
    c->prev = NULL;
    c->next = c->x->pending;
    if (c->next)
        c->next->prev = c;
    c->x->pending = c;
}

static void lw_list_del(lean_ws_t *c)
{
    if (!c->listed)
        return;
    c->listed = false;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->x->pending = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void lw_free(lean_ws_t *c)
{
    free(c->hs);
    free(c->carry);
    free(c->frag);
    free(c);
}

static void lw_close_cb(uv_handle_t *h)
{
    lean_ws_t *c = h->data;
    lean_ws_ctx_t *x = c->x;
    x->cbs.on_close(c, c->user, c->opened, c->status, c->http_status, c->code,
                    c->detail ? c->detail : "");
    lw_free(c);
    if (--x->nconns == 0 && x->closing && !uv_is_closing((uv_handle_t *)&x->sweep))
        uv_close((uv_handle_t *)&x->sweep, NULL);
}

static void lw_finish(lean_ws_t *c, int status, const char *detail)
{
    if (c->state == LW_CLOSED)
        return;
    c->state = LW_CLOSED;
    c->status = status;
    if (!c->detail)
        c->detail = detail;
    lw_list_del(c);
    uv_close((uv_handle_t *)&c->tcp, lw_close_cb);
}

void lean_ws_abort(lean_ws_t *c, int status, const char *detail)
{
    lw_finish(c, status, detail);
}

/* ------------------------------------------------------------ writing */

static void lw_pend_cb(uv_write_t *req, int status)
{
    lw_pend_t *p = req->data;
    lean_ws_t *c = (lean_ws_t *)req->handle->data;
    free(p);
    if (status == UV_ECANCELED)
        return;
    c->writing = false;
    if (status < 0)
        lw_finish(c, status, "write failed");
}

/* One frame: header, mask key, the payload masked while copied, then one
 * write. Returns 0, EMS_EAGAIN (an earlier frame is still being written),
 * EMS_EMSGSIZE or EMS_ECLOSED. */
static int lw_send_frame(lean_ws_t *c, int opcode, const void *payload, size_t len)
{
    if (c->writing)
        return EMS_EAGAIN;
    if (len > LW_FRAME_MAX)
        return EMS_EMSGSIZE;
    unsigned char *o = c->x->sbuf;
    size_t h = 0;
    o[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        o[h++] = (unsigned char)(0x80 | len);
    } else {
        o[h++] = 0x80 | 126;
        o[h++] = (unsigned char)(len >> 8);
        o[h++] = (unsigned char)len;
    }
    uint32_t key32 = (uint32_t)(lw_rand(c->x) >> 32);
    unsigned char key[4];
    memcpy(key, &key32, 4);
    memcpy(o + h, key, 4);
    h += 4;
    const unsigned char *in = payload;
    unsigned char *out = o + h;
    uint64_t m8;
    memcpy(&m8, key, 4);
    memcpy((unsigned char *)&m8 + 4, key, 4);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, in + i, 8);
        v ^= m8;
        memcpy(out + i, &v, 8);
    }
    for (; i < len; i++)
        out[i] = in[i] ^ key[i & 3];
    size_t total = h + len;
    uv_buf_t b = uv_buf_init((char *)o, (unsigned)total);
    int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rc == UV_EAGAIN)
        rc = 0;
    if (rc < 0) {
        lw_finish(c, rc, "write failed");
        return EMS_ECLOSED;
    }
    if ((size_t)rc < total) {
        /* The kernel's send buffer is full (the server does not read):
         * the rest of this frame is queued; later messages are refused
         * until it is written. */
        size_t rest = total - (size_t)rc;
        lw_pend_t *p = malloc(sizeof *p + rest);
        if (!p) {
            lw_finish(c, EMS_ENOMEM, "out of memory");
            return EMS_ECLOSED;
        }
        p->len = rest;
        memcpy(p->data, o + rc, rest);
        p->req.data = p;
        uv_buf_t rb = uv_buf_init(p->data, (unsigned)rest);
        int wrc = uv_write(&p->req, (uv_stream_t *)&c->tcp, &rb, 1, lw_pend_cb);
        if (wrc < 0) {
            free(p);
            lw_finish(c, wrc, "write failed");
            return EMS_ECLOSED;
        }
        c->writing = true;
    }
    return 0;
}

int lean_ws_send_text(lean_ws_t *c, const char *text, size_t len)
{
    if (c->state != LW_OPEN)
        return EMS_ECLOSED;
    return lw_send_frame(c, 1, text, len);
}

void lean_ws_close(lean_ws_t *c, uint16_t code)
{
    if (c->state == LW_CLOSED || c->state == LW_CLOSING)
        return;
    if (c->state != LW_OPEN) {
        lw_finish(c, EMS_ECLOSED, "closed before the upgrade completed");
        return;
    }
    unsigned char b[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    if (lw_send_frame(c, 8, b, 2) < 0) {
        lw_finish(c, EMS_ECLOSED, "could not send the close frame");
        return;
    }
    c->state = LW_CLOSING;
    lw_list_add(c, uv_now(c->x->loop) + c->x->close_timeout_ms);
}

/* ------------------------------------------------------------ reading */

static void lw_deliver(lean_ws_t *c, const char *data, size_t len)
{
    if (c->state == LW_OPEN)
        c->x->cbs.on_message(c, c->user, data, len);
}

static void lw_frame(lean_ws_t *c, bool fin, int op, const char *p, size_t n)
{
    switch (op) {
    case 0: /* continuation */
        if (!c->frag) {
            lw_finish(c, EMS_EPROTO, "continuation without a first fragment");
            return;
        }
        if (c->frag_len + n > c->x->max_message) {
            lw_finish(c, EMS_EMSGSIZE, "message too large");
            return;
        }
        {
            char *m = realloc(c->frag, c->frag_len + n + 1);
            if (!m) {
                lw_finish(c, EMS_ENOMEM, "out of memory");
                return;
            }
            c->frag = m;
        }
        memcpy(c->frag + c->frag_len, p, n);
        c->frag_len += (uint32_t)n;
        if (fin) {
            char *m = c->frag;
            uint32_t ml = c->frag_len;
            c->frag = NULL;
            c->frag_len = 0;
            lw_deliver(c, m, ml);
            free(m);
        }
        return;
    case 1:
    case 2:
        if (c->frag) {
            lw_finish(c, EMS_EPROTO, "new message inside a fragmented one");
            return;
        }
        if (fin) {
            lw_deliver(c, p, n);
            return;
        }
        c->frag = malloc(n + 1);
        if (!c->frag) {
            lw_finish(c, EMS_ENOMEM, "out of memory");
            return;
        }
        memcpy(c->frag, p, n);
        c->frag_len = (uint32_t)n;
        return;
    case 8: /* close */
        c->got_close = true;
        c->code = n >= 2 ? ((unsigned char)p[0] << 8 | (unsigned char)p[1]) : 1005;
        if (c->state == LW_OPEN) {
            unsigned char b[2] = {(unsigned char)(c->code >> 8), (unsigned char)c->code};
            if (c->code == 1005)
                b[0] = 1000 >> 8, b[1] = 1000 & 0xff;
            lw_send_frame(c, 8, b, 2);
            if (c->state == LW_CLOSED)
                return;
            c->state = LW_CLOSING;
            lw_list_add(c, uv_now(c->x->loop) + c->x->close_timeout_ms);
        }
        return; /* then the server's EOF */
    case 9: /* ping */
        if (c->state == LW_OPEN)
            lw_send_frame(c, 10, p, n); /* busy writing: the pong is skipped */
        return;
    case 10: /* pong */
        return;
    default:
        lw_finish(c, EMS_EPROTO, "unknown opcode");
    }
}

/* The 101 response in p[0, end). Returns 0 or fails the connection. */
static int lw_response(lean_ws_t *c, const char *p, size_t end)
{
    if (end < 12 || memcmp(p, "HTTP/1.", 7) != 0) {
        lw_finish(c, EMS_EPROTO, "not an HTTP response");
        return -1;
    }
    int status = atoi(p + 9);
    if (status != 101) {
        c->http_status = status;
        lw_finish(c, EMS_EPROTO, "upgrade refused");
        return -1;
    }
    static const char name[] = "\r\nsec-websocket-accept:";
    const char *acc = NULL;
    for (size_t i = 0; i + sizeof name - 1 < end; i++)
        if (p[i] == '\r' && !strncasecmp(p + i, name, sizeof name - 1)) {
            acc = p + i + sizeof name - 1;
            break;
        }
    char want[29];
    while (acc && (*acc == ' ' || *acc == '\t'))
        acc++;
    if (!acc || ems_http_ws_accept(c->hs->key, want) < 0 || (size_t)(p + end - acc) < 28 ||
        memcmp(acc, want, 28) != 0) {
        lw_finish(c, EMS_EPROTO, "wrong Sec-WebSocket-Accept");
        return -1;
    }
    return 0;
}

/* Consumes what it can of p[0, n): the 101 while upgrading, then whole
 * frames. Returns the bytes consumed; the rest waits for more. */
static size_t lw_parse(lean_ws_t *c, const char *p, size_t n)
{
    size_t off = 0;
    if (c->state == LW_UPGRADING) {
        const char *e = memmem(p, n, "\r\n\r\n", 4);
        if (!e) {
            if (n > LW_MAX_HEADER)
                lw_finish(c, EMS_EPROTO, "response header too long");
            return 0;
        }
        off = (size_t)(e - p) + 4;
        if (lw_response(c, p, off) < 0)
            return n;
        c->state = LW_OPEN;
        c->opened = true;
        lw_list_del(c);
        free(c->hs);
        c->hs = NULL;
        c->x->cbs.on_open(c, c->user);
    }
    while (off < n && c->state != LW_CLOSED) {
        const unsigned char *f = (const unsigned char *)p + off;
        size_t avail = n - off, hl = 2;
        if (avail < 2)
            break;
        if (f[1] & 0x80) {
            lw_finish(c, EMS_EPROTO, "masked frame from the server");
            break;
        }
        uint64_t len = f[1] & 0x7f;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = len << 8 | f[i];
            hl = 10;
        }
        if (len > c->x->max_message) {
            lw_finish(c, EMS_EMSGSIZE, "message too large");
            break;
        }
        if (avail - hl < len)
            break;
        lw_frame(c, (f[0] & 0x80) != 0, f[0] & 0x0f, (const char *)f + hl, (size_t)len);
        off += hl + (size_t)len;
    }
    return c->state == LW_CLOSED ? n : off;
}

/* Appends p[0, n) to the connection's carry buffer. */
static int lw_keep(lean_ws_t *c, const char *p, size_t n)
{
    if (c->carry_len + n > c->carry_cap) {
        size_t cap = c->carry_cap ? c->carry_cap : 512;
        while (cap < c->carry_len + n)
            cap *= 2;
        char *m = realloc(c->carry, cap);
        if (!m) {
            lw_finish(c, EMS_ENOMEM, "out of memory");
            return -1;
        }
        c->carry = m;
        c->carry_cap = (uint32_t)cap;
    }
    memcpy(c->carry + c->carry_len, p, n);
    c->carry_len += (uint32_t)n;
    return 0;
}

/* Bytes from the socket. Usually whole frames straight from the shared
 * receive buffer; an incomplete rest is kept and parsed with what follows. */
static void lw_input(lean_ws_t *c, const char *data, size_t n)
{
    if (!c->carry_len) {
        size_t used = lw_parse(c, data, n);
        if (used < n && c->state != LW_CLOSED)
            lw_keep(c, data + used, n - used);
        return;
    }
    if (lw_keep(c, data, n) < 0)
        return;
    size_t used = lw_parse(c, c->carry, c->carry_len);
    if (c->state == LW_CLOSED)
        return;
    memmove(c->carry, c->carry + used, c->carry_len - used);
    c->carry_len -= (uint32_t)used;
    if (!c->carry_len) {
        free(c->carry);
        c->carry = NULL;
        c->carry_cap = 0;
    }
}

static void lw_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    lean_ws_ctx_t *x = ((lean_ws_t *)h->data)->x;
    buf->base = x->rbuf;
    buf->len = sizeof x->rbuf;
}

static void lw_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    lean_ws_t *c = s->data;
    if (nread > 0) {
        if (c->state != LW_CLOSED)
            lw_input(c, buf->base, (size_t)nread);
    } else if (nread == UV_EOF) {
        if (c->state == LW_CLOSING || c->got_close)
            lw_finish(c, 0, NULL);
        else
            lw_finish(c, EMS_ECLOSED,
                      c->state == LW_UPGRADING ? "closed during the upgrade"
                                               : "server closed the connection");
    } else if (nread < 0) {
        lw_finish(c, (int)nread, "read failed");
    }
}

/* ------------------------------------------------------------ connecting */

static void lw_connect_cb(uv_connect_t *req, int status)
{
    lean_ws_t *c = req->handle->data;
    if (status == UV_ECANCELED || c->state == LW_CLOSED)
        return;
    if (status < 0) {
        lw_finish(c, status, "connect failed");
        return;
    }
    c->state = LW_UPGRADING;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, lw_alloc_cb, lw_read_cb);
    if (rc < 0) {
        lw_finish(c, rc, "read start failed");
        return;
    }
    uv_buf_t b = uv_buf_init(c->hs->req_text, (unsigned)c->hs->req_len);
    rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rc != (int)c->hs->req_len)
        lw_finish(c, rc < 0 ? rc : EMS_EIO, "could not send the upgrade request");
}

static void lw_silent_close_cb(uv_handle_t *h)
{
    lean_ws_t *c = h->data;
    c->x->nconns--;
    lw_free(c);
}

int lean_ws_connect(lean_ws_ctx_t *x, const char *path, const char *extra_headers, void *user,
                    lean_ws_t **out)
{
    *out = NULL;
    const char *eh = extra_headers ? extra_headers : "";
    unsigned char raw[16];
    for (int i = 0; i < 2; i++) {
        uint64_t r = lw_rand(x);
        memcpy(raw + 8 * i, &r, 8);
    }
    lean_ws_t *c = calloc(1, sizeof *c);
    size_t cap = strlen(path) + strlen(x->host_header) + strlen(eh) + 200;
    lw_hs_t *hs = malloc(sizeof *hs + cap);
    if (!c || !hs) {
        free(c);
        free(hs);
        return EMS_ENOMEM;
    }
    size_t olen = 0;
    mbedtls_base64_encode((unsigned char *)hs->key, sizeof hs->key, &olen, raw, sizeof raw);
    hs->key[24] = '\0';
    int n = snprintf(hs->req_text, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     path, x->host_header, hs->key, eh);
    hs->req_len = (size_t)n;
    c->x = x;
    c->user = user;
    c->hs = hs;
    int fd = socket(x->peer.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = -errno;
        lw_free(c);
        return e;
    }
    if (x->has_src) {
        /* The port is chosen at connect(2), per destination, not at
         * bind(2) per source address: one address then serves as many
         * connections as there are ports to each destination, and
         * TIME_WAIT sockets of an earlier run to another port do not
         * count. */
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        socklen_t sl = x->src.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                    : sizeof(struct sockaddr_in);
        if (bind(fd, (const struct sockaddr *)&x->src, sl) < 0) {
            int e = -errno;
            close(fd);
            lw_free(c);
            return e;
        }
    }
    uv_tcp_init(x->loop, &c->tcp);
    c->tcp.data = c;
    x->nconns++;
    int rc = uv_tcp_open(&c->tcp, fd);
    if (rc < 0)
        close(fd); /* not the handle's yet */
    if (rc == 0) {
        uv_tcp_nodelay(&c->tcp, 1);
        rc = uv_tcp_connect(&hs->req, &c->tcp, (const struct sockaddr *)&x->peer, lw_connect_cb);
    }
    if (rc < 0) {
        uv_close((uv_handle_t *)&c->tcp, lw_silent_close_cb);
        return rc;
    }
    c->state = LW_CONNECTING;
    lw_list_add(c, uv_now(x->loop) + x->open_timeout_ms);
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ context */

static void lw_sweep_cb(uv_timer_t *t)
{
    lean_ws_ctx_t *x = t->data;
    uint64_t now = uv_now(x->loop);
    for (lean_ws_t *c = x->pending, *next; c; c = next) {
        next = c->next;
        if (now < c->deadline)
            continue;
        if (c->state == LW_CLOSING)
            lw_finish(c, EMS_ETIMEDOUT, "close handshake timed out");
        else
            lw_finish(c, EMS_ETIMEDOUT,
                      c->state == LW_CONNECTING ? "connect timed out" : "upgrade timed out");
    }
}

int lean_ws_ctx_init(lean_ws_ctx_t *x)
{
    if (!x->open_timeout_ms)
        x->open_timeout_ms = 30000;
    if (!x->close_timeout_ms)
        x->close_timeout_ms = 5000;
    if (!x->max_message)
        x->max_message = 1u << 20;
    if (getrandom(&x->rng, sizeof x->rng, 0) != (ssize_t)sizeof x->rng || !x->rng)
        x->rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)uv_hrtime();
    x->pending = NULL;
    x->nconns = 0;
    x->closing = false;
    int rc = uv_timer_init(x->loop, &x->sweep);
    if (rc < 0)
        return rc;
    x->sweep.data = x;
    return uv_timer_start(&x->sweep, lw_sweep_cb, LW_SWEEP_MS, LW_SWEEP_MS);
}

void lean_ws_ctx_close(lean_ws_ctx_t *x)
{
    x->closing = true;
    if (x->nconns == 0 && !uv_is_closing((uv_handle_t *)&x->sweep))
        uv_close((uv_handle_t *)&x->sweep, NULL);
}
