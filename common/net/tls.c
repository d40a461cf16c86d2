/* tls.c: mbedTLS 2.28 configurations and memory-buffer sessions (see tls.h).
 *
 * The session's BIO callbacks are the whole trick: recv drains the chunk the
 * connection fed in and says WANT_READ when it is empty; send appends to the
 * connection's output buffer and never blocks. mbedTLS therefore runs to
 * completion on whatever bytes are at hand and never sees a socket.
 */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/gcm.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "error.h"
#include "log.h"

#define TLS_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* Server: session tickets (ems_tls_config_set_tickets). */
#define TICKET_HEAD 16 /* 4-byte key period, 12-byte GCM nonce */
#define TICKET_TAG 16
typedef struct {
    unsigned char secret[32];
    uint32_t lifetime_s;
    uint32_t period[2]; /* the key periods cached in key[], 0: none */
    unsigned char key[2][32];
} tls_tickets_t;

struct ems_tls_config {
    int refs;
    int server;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt crt;  /* server: own chain; client: trusted CAs */
    mbedtls_pk_context pk; /* server: own key */
    tls_tickets_t *tickets; /* server, when resumption is on */
    /* client: the last session established, offered again on the next
     * connection to the same host name (resumption with its ticket) */
    mbedtls_ssl_session saved;
    int has_saved;
    char saved_host[256];
    ems_tls_stats_t st;
};

struct ems_tls {
    ems_tls_config_t *cfg;
    mbedtls_ssl_context ssl;
    ems_buf_t *out;
    const unsigned char *in; /* the fed chunk */
    size_t in_len;
    int established;
    int offered; /* client: a saved session was offered */
    int resumed; /* the handshake resumed a session (client: known; server: ticket taken) */
    int nospc; /* the output buffer refused bytes */
    char err[256];
};

static void tls_errtext(int ret, char *buf, size_t len)
{
    char tmp[160];
    mbedtls_strerror(ret, tmp, sizeof tmp);
    snprintf(buf, len, "%s (-0x%04x)", tmp, (unsigned)-ret);
}

/* ------------------------------------------------------------ configs */

/* AEAD with forward secrecy, nothing else: ECDHE key exchange (ECDSA or RSA
 * certificates) with AES-GCM or ChaCha20-Poly1305. mbedTLS's default list
 * also offers CBC (MAC-then-encrypt, Lucky 13), CAMELLIA, CCM_8 (a 64-bit
 * tag) and static-RSA key exchange, none of which a current client needs.
 * Server preference order: AES-GCM first (AES-NI), ChaCha20 for clients
 * without it. Zero-terminated, as mbedtls_ssl_conf_ciphersuites wants. */
static const int tls_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

static int tls_config_alloc(int server, ems_tls_config_t **out)
{
    ems_tls_config_t *c = calloc(1, sizeof *c);
    if (!c)
        return EMS_ENOMEM;
    c->refs = 1;
    c->server = server;
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->crt);
    mbedtls_pk_init(&c->pk);
    mbedtls_ssl_session_init(&c->saved);
    *out = c;

    static const char pers[] = "ems-tls";
    char msg[200];
    int ret = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                                    (const unsigned char *)pers, sizeof pers - 1);
    if (ret != 0) {
        tls_errtext(ret, msg, sizeof msg);
        ems_log_error("tls: seeding the random generator failed: %s", msg);
        return EMS_ETLS;
    }
    ret = mbedtls_ssl_config_defaults(&c->conf,
                                      server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        tls_errtext(ret, msg, sizeof msg);
        ems_log_error("tls: config defaults failed: %s", msg);
        return EMS_ETLS;
    }
    /* TLS 1.2 only: older versions are broken, and 2.28 has no usable TLS
     * 1.3 (MBEDTLS_SSL_PROTO_TLS1_3_EXPERIMENTAL is a prototype, and off in
     * Debian's build). Both ends, gateway and edge, offer the same short list
     * of suites (tls_suites). */
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&c->conf, tls_suites);
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    return 0;
}

int ems_tls_server_config_new(const char *cert_file, const char *key_file, ems_tls_config_t **out)
{
    ems_tls_config_t *c = NULL;
    char msg[200];
    *out = NULL;
    if (!cert_file || !key_file)
        return EMS_EINVAL;
    int rc = tls_config_alloc(1, &c);
    if (rc < 0)
        goto fail;
    int ret = mbedtls_x509_crt_parse_file(&c->crt, cert_file);
    if (ret != 0) {
        tls_errtext(ret, msg, sizeof msg);
        ems_log_error("tls: cannot load certificate chain %s: %s", cert_file, msg);
        rc = EMS_ECONFIG;
        goto fail;
    }
    ret = mbedtls_pk_parse_keyfile(&c->pk, key_file, NULL);
    if (ret != 0) {
        tls_errtext(ret, msg, sizeof msg);
        ems_log_error("tls: cannot load private key %s: %s", key_file, msg);
        rc = EMS_ECONFIG;
        goto fail;
    }
    ret = mbedtls_pk_check_pair(&c->crt.pk, &c->pk);
    if (ret != 0) {
        tls_errtext(ret, msg, sizeof msg);
        ems_log_error("tls: key %s does not match certificate %s: %s", key_file, cert_file, msg);
        rc = EMS_ECONFIG;
        goto fail;
    }
    ret = mbedtls_ssl_conf_own_cert(&c->conf, &c->crt, &c->pk);
    if (ret != 0) {
        tls_errtext(ret, msg, sizeof msg);
        ems_log_error("tls: cannot use certificate: %s", msg);
        rc = EMS_ETLS;
        goto fail;
    }
    /* Devices authenticate with bearer tokens, not client certificates. */
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    *out = c;
    return 0;
fail:
    ems_tls_config_unref(c);
    return rc;
}

int ems_tls_client_config_new(const char *ca_file, ems_tls_config_t **out)
{
    ems_tls_config_t *c = NULL;
    char msg[200];
    *out = NULL;
    if (!ca_file)
        ca_file = TLS_DEFAULT_CA_FILE;
    int rc = tls_config_alloc(0, &c);
    if (rc < 0)
        goto fail;
    int ret = mbedtls_x509_crt_parse_file(&c->crt, ca_file);
    /* A positive result counts certificates that failed to parse in a
     * bundle; the others are usable, so only "none at all" is fatal. */
    if (ret < 0 || c->crt.version == 0) {
        tls_errtext(ret < 0 ? ret : MBEDTLS_ERR_X509_INVALID_FORMAT, msg, sizeof msg);
        ems_log_error("tls: cannot load CA file %s: %s", ca_file, msg);
        rc = EMS_ECONFIG;
        goto fail;
    }
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->crt, NULL);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    *out = c;
    return 0;
fail:
    ems_tls_config_unref(c);
    return rc;
}

ems_tls_config_t *ems_tls_config_ref(ems_tls_config_t *cfg)
{
    cfg->refs++;
    return cfg;
}

void ems_tls_config_unref(ems_tls_config_t *c)
{
    if (!c || --c->refs > 0)
        return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->crt);
    mbedtls_pk_free(&c->pk);
    mbedtls_ssl_session_free(&c->saved);
    if (c->tickets) {
        mbedtls_platform_zeroize(c->tickets, sizeof *c->tickets);
        free(c->tickets);
    }
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    free(c);
}

int ems_tls_config_is_server(const ems_tls_config_t *cfg)
{
    return cfg->server;
}

void ems_tls_config_stats(const ems_tls_config_t *cfg, ems_tls_stats_t *out)
{
    *out = cfg->st;
}

/* ------------------------------------------------------------ tickets */

/* The ticket key of a period: HMAC-SHA256(secret, label || period). Every
 * process holding the same secret derives the same keys and rotates them
 * at the same moments, so a ticket from one gateway opens on another, and
 * after a restart. */
static int ticket_key(tls_tickets_t *t, uint32_t period, const unsigned char **key)
{
    for (int i = 0; i < 2; i++)
        if (t->period[i] == period) {
            *key = t->key[i];
            return 0;
        }
    int slot = t->period[0] < t->period[1] ? 0 : 1; /* replace the older */
    unsigned char msg[32] = "ems tls session ticket key v1";
    size_t n = strlen((char *)msg);
    unsigned char be[4] = {(unsigned char)(period >> 24), (unsigned char)(period >> 16),
                           (unsigned char)(period >> 8), (unsigned char)period};
    unsigned char in[sizeof msg + 4];
    memcpy(in, msg, n);
    memcpy(in + n, be, 4);
    int ret = mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), t->secret,
                              sizeof t->secret, in, n + 4, t->key[slot]);
    if (ret != 0)
        return ret;
    t->period[slot] = period;
    *key = t->key[slot];
    return 0;
}

static uint32_t ticket_period_now(const tls_tickets_t *t)
{
    return (uint32_t)((uint64_t)time(NULL) / t->lifetime_s) + 1; /* never 0 */
}

/* mbedtls_ssl_ticket_write_t: period (4) | nonce (12) | AES-256-GCM of the
 * serialised session | tag (16); the period is authenticated too. */
static int ticket_write(void *p, const mbedtls_ssl_session *session, unsigned char *start,
                        const unsigned char *end, size_t *tlen, uint32_t *lifetime)
{
    ems_tls_config_t *cfg = p;
    tls_tickets_t *t = cfg->tickets;
    *tlen = 0;
    if (end - start < TICKET_HEAD + TICKET_TAG)
        return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
    uint32_t period = ticket_period_now(t);
    const unsigned char *key;
    int ret = ticket_key(t, period, &key);
    if (ret != 0)
        return ret;
    start[0] = (unsigned char)(period >> 24);
    start[1] = (unsigned char)(period >> 16);
    start[2] = (unsigned char)(period >> 8);
    start[3] = (unsigned char)period;
    ret = mbedtls_ctr_drbg_random(&cfg->drbg, start + 4, 12);
    if (ret != 0)
        return ret;
    unsigned char *body = start + TICKET_HEAD;
    size_t room = (size_t)(end - body) - TICKET_TAG, clen = 0;
    ret = mbedtls_ssl_session_save(session, body, room, &clen);
    if (ret != 0)
        return ret;
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    ret = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256);
    if (ret == 0)
        ret = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, clen, start + 4, 12, start, 4,
                                        body, body, TICKET_TAG, body + clen);
    mbedtls_gcm_free(&gcm);
    if (ret != 0)
        return ret;
    *tlen = TICKET_HEAD + clen + TICKET_TAG;
    *lifetime = t->lifetime_s;
    cfg->st.tickets_issued++;
    return 0;
}

/* mbedtls_ssl_ticket_parse_t: a ticket of this period or the one before,
 * authentic, and its session not older than the lifetime. Anything else:
 * an ordinary full handshake follows. */
static int ticket_parse(void *p, mbedtls_ssl_session *session, unsigned char *buf, size_t len)
{
    ems_tls_config_t *cfg = p;
    tls_tickets_t *t = cfg->tickets;
    cfg->st.tickets_refused++; /* until proven otherwise */
    if (len < TICKET_HEAD + TICKET_TAG)
        return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
    uint32_t period = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    uint32_t now = ticket_period_now(t);
    if (period != now && period + 1 != now)
        return MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
    const unsigned char *key;
    int ret = ticket_key(t, period, &key);
    if (ret != 0)
        return ret;
    size_t clen = len - TICKET_HEAD - TICKET_TAG;
    unsigned char *body = buf + TICKET_HEAD;
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    ret = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256);
    if (ret == 0)
        ret = mbedtls_gcm_auth_decrypt(&gcm, clen, buf + 4, 12, buf, 4, body + clen, TICKET_TAG,
                                       body, body);
    mbedtls_gcm_free(&gcm);
    if (ret != 0)
        return MBEDTLS_ERR_SSL_INVALID_MAC;
    ret = mbedtls_ssl_session_load(session, body, clen);
    if (ret != 0)
        return ret;
    time_t now_s = time(NULL);
    if (session->start > now_s || (uint64_t)(now_s - session->start) > t->lifetime_s)
        return MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
    cfg->st.tickets_refused--;
    cfg->st.resumed++;
    return 0;
}

int ems_tls_config_set_tickets(ems_tls_config_t *cfg, const void *secret, size_t len,
                               unsigned lifetime_s)
{
    if (!cfg->server || !secret || len < 16 || lifetime_s == 0)
        return EMS_EINVAL;
    tls_tickets_t *t = calloc(1, sizeof *t);
    if (!t)
        return EMS_ENOMEM;
    /* The secret is condensed to 32 bytes with a label of its own, so the
     * caller may pass a key that also serves elsewhere (the gateway's
     * session-cookie key) without the two uses meeting. */
    int ret = mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), secret, len,
                              (const unsigned char *)"ems tls tickets", 15, t->secret);
    if (ret != 0) {
        free(t);
        return EMS_ETLS;
    }
    t->lifetime_s = lifetime_s;
    if (cfg->tickets) {
        mbedtls_platform_zeroize(cfg->tickets, sizeof *cfg->tickets);
        free(cfg->tickets);
    }
    cfg->tickets = t;
    mbedtls_ssl_conf_session_tickets_cb(&cfg->conf, ticket_write, ticket_parse, cfg);
    return 0;
}

/* ------------------------------------------------------------ sessions */

static int tls_bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    ems_tls_t *s = ctx;
    if (ems_buf_append(s->out, buf, len) < 0) {
        s->nospc = 1;
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    }
    return (int)len;
}

static int tls_bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    ems_tls_t *s = ctx;
    if (s->in_len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = len < s->in_len ? len : s->in_len;
    memcpy(buf, s->in, n);
    s->in += n;
    s->in_len -= n;
    return (int)n;
}

int ems_tls_new(ems_tls_config_t *cfg, const char *hostname, ems_buf_t *out, ems_tls_t **session)
{
    *session = NULL;
    if (!cfg || !out || (!cfg->server && (!hostname || !*hostname)))
        return EMS_EINVAL;
    ems_tls_t *s = calloc(1, sizeof *s);
    if (!s)
        return EMS_ENOMEM;
    s->out = out;
    mbedtls_ssl_init(&s->ssl);
    int ret = mbedtls_ssl_setup(&s->ssl, &cfg->conf);
    if (ret == 0 && !cfg->server)
        ret = mbedtls_ssl_set_hostname(&s->ssl, hostname);
    if (ret == 0 && !cfg->server && cfg->has_saved && !strcmp(cfg->saved_host, hostname)) {
        /* Offer the last session (its ticket): the server may resume it
         * without the certificate and key exchange work of a full
         * handshake, or answer with a full handshake. */
        ret = mbedtls_ssl_set_session(&s->ssl, &cfg->saved);
        if (ret == 0)
            s->offered = 1;
    }
    if (ret != 0) {
        char msg[200];
        tls_errtext(ret, msg, sizeof msg);
        ems_log_error("tls: session setup failed: %s", msg);
        mbedtls_ssl_free(&s->ssl);
        free(s);
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? EMS_ENOMEM : EMS_ETLS;
    }
    s->cfg = ems_tls_config_ref(cfg);
    mbedtls_ssl_set_bio(&s->ssl, s, tls_bio_send, tls_bio_recv, NULL);
    *session = s;
    return 0;
}

void ems_tls_free(ems_tls_t *s)
{
    if (!s)
        return;
    mbedtls_ssl_free(&s->ssl);
    ems_tls_config_unref(s->cfg);
    free(s);
}

void ems_tls_feed(ems_tls_t *s, const void *cipher, size_t len)
{
    s->in = cipher;
    s->in_len = len;
}

size_t ems_tls_fed_left(const ems_tls_t *s)
{
    return s->in_len;
}

/* Records the failure text and logs it. A client's failures are warnings
 * (the edge's operator must see why the cloud is unreachable); a server's
 * are routine noise from scanners and broken clients, so only info. */
static int tls_fail(ems_tls_t *s, const char *what, int ret)
{
    char msg[200];
    if (s->nospc) {
        snprintf(s->err, sizeof s->err, "%s: output queue full", what);
    } else if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char info[200];
        uint32_t flags = mbedtls_ssl_get_verify_result(&s->ssl);
        int n = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
        /* verify_info separates reasons with newlines; keep one line. */
        for (int i = 0; i < n && info[i]; i++)
            if (info[i] == '\n')
                info[i] = (info[i + 1] ? ';' : '\0');
        snprintf(s->err, sizeof s->err, "%s: server certificate rejected: %s", what,
                 n > 0 ? info : "unknown reason");
    } else {
        tls_errtext(ret, msg, sizeof msg);
        snprintf(s->err, sizeof s->err, "%s: %s", what, msg);
    }
    if (s->cfg->server)
        ems_log_info("tls: %s", s->err);
    else
        ems_log_warn("tls: %s", s->err);
    return s->nospc ? EMS_ENOSPC : EMS_ETLS;
}

/* Bookkeeping after a completed handshake: counts it, and on a client
 * keeps the session for the next connection. A resumed session has the
 * master secret of the one offered. */
static void tls_handshake_done(ems_tls_t *s)
{
    ems_tls_config_t *cfg = s->cfg;
    if (cfg->server) {
        if (!s->resumed)
            cfg->st.full++;
        return;
    }
    mbedtls_ssl_session now;
    mbedtls_ssl_session_init(&now);
    if (mbedtls_ssl_get_session(&s->ssl, &now) != 0) {
        mbedtls_ssl_session_free(&now);
        cfg->st.full++;
        return;
    }
    s->resumed = s->offered && cfg->has_saved &&
                 !memcmp(now.master, cfg->saved.master, sizeof now.master);
    if (s->resumed)
        cfg->st.resumed++;
    else
        cfg->st.full++;
    mbedtls_ssl_session_free(&cfg->saved);
    cfg->saved = now; /* moves its allocations (peer certificate, ticket) */
    cfg->has_saved = 1;
    snprintf(cfg->saved_host, sizeof cfg->saved_host, "%s",
             s->ssl.hostname ? s->ssl.hostname : "");
}

int ems_tls_resumed(const ems_tls_t *s)
{
    return s->resumed;
}

int ems_tls_handshake(ems_tls_t *s)
{
    if (s->established)
        return 0;
    uint64_t resumed_before = s->cfg->st.resumed;
    int ret = mbedtls_ssl_handshake(&s->ssl);
    if (s->cfg->server && s->cfg->st.resumed != resumed_before)
        s->resumed = 1; /* its ticket was taken during this step */
    if (ret == 0) {
        s->established = 1;
        tls_handshake_done(s);
        return 0;
    }
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return EMS_EAGAIN;
    if (!s->cfg->server && s->cfg->has_saved) {
        /* Whatever went wrong, start the next attempt from scratch. */
        mbedtls_ssl_session_free(&s->cfg->saved);
        mbedtls_ssl_session_init(&s->cfg->saved);
        s->cfg->has_saved = 0;
    }
    int rc = tls_fail(s, "handshake failed", ret);
    return rc == EMS_ENOSPC ? EMS_ETLS : rc;
}

int ems_tls_is_established(const ems_tls_t *s)
{
    return s->established;
}

int ems_tls_read(ems_tls_t *s, void *buf, size_t len)
{
    if (len > INT32_MAX)
        len = INT32_MAX;
    for (;;) {
        int ret = mbedtls_ssl_read(&s->ssl, buf, len);
        if (ret > 0)
            return ret;
        if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            return 0;
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            return EMS_EAGAIN;
        /* A server asking to renegotiate, or a 1.3 ticket: not errors, but
         * nothing to deliver; go on reading. */
        if (ret == MBEDTLS_ERR_SSL_NON_FATAL)
            continue;
        int rc = tls_fail(s, "read failed", ret);
        return rc == EMS_ENOSPC ? EMS_ETLS : rc;
    }
}

int ems_tls_write(ems_tls_t *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (!s->established)
        return EMS_EAGAIN;
    while (len > 0) {
        int ret = mbedtls_ssl_write(&s->ssl, p, len);
        if (ret > 0) {
            p += ret;
            len -= (size_t)ret;
            continue;
        }
        return tls_fail(s, "write failed", ret);
    }
    return 0;
}

int ems_tls_close_notify(ems_tls_t *s)
{
    if (!s->established)
        return 0;
    int ret = mbedtls_ssl_close_notify(&s->ssl);
    if (ret == 0 || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return 0;
    int rc = tls_fail(s, "close_notify failed", ret);
    return rc == EMS_ENOSPC ? EMS_ETLS : rc;
}

const char *ems_tls_error(const ems_tls_t *s)
{
    return s->err;
}
