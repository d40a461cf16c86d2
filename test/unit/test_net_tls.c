/* test_net_tls.c: TLS sessions on memory buffers, no sockets: two sessions
 * hand each other their output until the handshake is done. Proves the
 * buffer plumbing, certificate checks, error texts and the cipher-suite
 * policy (a plain mbedTLS peer offering one suite at a time). */
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "buf.h"
#include "ems_test.h"
#include "error.h"
#include "test_net_util.h"
#include "tls.h"

static const char *certs; /* made once in main */

typedef struct {
    ems_tls_t *cli, *srv;
    ems_buf_t cout, sout;
} pair_t;

static void pair_new(pair_t *p, ems_tls_config_t *ccfg, ems_tls_config_t *scfg, const char *host)
{
    ems_buf_init(&p->cout, 1 << 20);
    ems_buf_init(&p->sout, 1 << 20);
    EMS_CHECK_INT(ems_tls_new(ccfg, host, &p->cout, &p->cli), ==, 0);
    EMS_CHECK_INT(ems_tls_new(scfg, NULL, &p->sout, &p->srv), ==, 0);
}

static void pair_free(pair_t *p)
{
    ems_tls_free(p->cli);
    ems_tls_free(p->srv);
    ems_buf_free(&p->cout);
    ems_buf_free(&p->sout);
}

/* Runs both handshakes, passing bytes `chunk` at a time. Returns the
 * client's final result (0 or an error). */
static int pair_handshake(pair_t *p, size_t chunk, int *srv_rc)
{
    int crc = ems_tls_handshake(p->cli), src = EMS_EAGAIN;
    for (int round = 0; round < 10000; round++) {
        int moved = 0;
        while (ems_buf_len(&p->cout) && src == EMS_EAGAIN) {
            size_t n = ems_buf_len(&p->cout) < chunk ? ems_buf_len(&p->cout) : chunk;
            ems_tls_feed(p->srv, ems_buf_data(&p->cout), n);
            src = ems_tls_handshake(p->srv);
            EMS_CHECK(src != EMS_EAGAIN || ems_tls_fed_left(p->srv) == 0);
            ems_buf_consume(&p->cout, n - ems_tls_fed_left(p->srv));
            moved = 1;
        }
        while (ems_buf_len(&p->sout) && crc == EMS_EAGAIN) {
            size_t n = ems_buf_len(&p->sout) < chunk ? ems_buf_len(&p->sout) : chunk;
            ems_tls_feed(p->cli, ems_buf_data(&p->sout), n);
            crc = ems_tls_handshake(p->cli);
            ems_buf_consume(&p->sout, n - ems_tls_fed_left(p->cli));
            moved = 1;
        }
        if ((crc != EMS_EAGAIN && src != EMS_EAGAIN) || !moved)
            break;
    }
    *srv_rc = src;
    return crc;
}

/* Moves everything in `from` into session `to` and reads the plaintext. */
static size_t pass(ems_buf_t *from, ems_tls_t *to, char *out, size_t cap)
{
    size_t got = 0;
    ems_tls_feed(to, ems_buf_data(from), ems_buf_len(from));
    for (;;) {
        int n = ems_tls_read(to, out + got, cap - got);
        if (n <= 0) {
            EMS_CHECK(n == EMS_EAGAIN || n == 0);
            break;
        }
        got += (size_t)n;
    }
    EMS_CHECK_INT(ems_tls_fed_left(to), ==, 0);
    ems_buf_clear(from);
    return got;
}

static void test_handshake_and_data(void)
{
    const char *d = certs;
    ems_tls_config_t *s, *c;
    EMS_CHECK_INT(
        ems_tls_server_config_new(net_path(d, "chain.crt"), net_path(d, "server.key"), &s), ==, 0);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(d, "ca.crt"), &c), ==, 0);
    EMS_CHECK(ems_tls_config_is_server(s) && !ems_tls_config_is_server(c));
    size_t chunks[] = {1, 7, 100000};
    for (int i = 0; i < 3; i++) {
        pair_t p;
        pair_new(&p, c, s, "localhost");
        int src;
        EMS_CHECK_INT(pair_handshake(&p, chunks[i], &src), ==, 0);
        EMS_CHECK_INT(src, ==, 0);
        EMS_CHECK(ems_tls_is_established(p.cli) && ems_tls_is_established(p.srv));
        /* a big message both ways (several records) */
        static char big[50000], got[60000];
        for (size_t k = 0; k < sizeof big; k++)
            big[k] = (char)('a' + k % 26);
        EMS_CHECK_INT(ems_tls_write(p.cli, big, sizeof big), ==, 0);
        EMS_CHECK_INT(ems_buf_len(&p.cout), >, sizeof big);
        EMS_CHECK_INT(pass(&p.cout, p.srv, got, sizeof got), ==, sizeof big);
        EMS_CHECK(memcmp(got, big, sizeof big) == 0);
        EMS_CHECK_INT(ems_tls_write(p.srv, "pong", 4), ==, 0);
        EMS_CHECK_INT(pass(&p.sout, p.cli, got, sizeof got), ==, 4);
        EMS_CHECK(memcmp(got, "pong", 4) == 0);
        /* close_notify reads as end of stream */
        EMS_CHECK_INT(ems_tls_close_notify(p.cli), ==, 0);
        ems_tls_feed(p.srv, ems_buf_data(&p.cout), ems_buf_len(&p.cout));
        EMS_CHECK_INT(ems_tls_read(p.srv, got, sizeof got), ==, 0);
        pair_free(&p);
    }
    ems_tls_config_unref(s);
    ems_tls_config_unref(c);
}

static void test_wrong_ca_is_refused(void)
{
    const char *d = certs;
    ems_tls_config_t *s, *c;
    EMS_CHECK_INT(
        ems_tls_server_config_new(net_path(d, "server.crt"), net_path(d, "server.key"), &s), ==, 0);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(d, "other-ca.crt"), &c), ==, 0);
    pair_t p;
    pair_new(&p, c, s, "localhost");
    int src;
    EMS_CHECK_INT(pair_handshake(&p, 1000, &src), ==, EMS_ETLS);
    fprintf(stderr, "# client error: %s\n", ems_tls_error(p.cli));
    EMS_CHECK(strstr(ems_tls_error(p.cli), "certificate rejected"));
    EMS_CHECK(strstr(ems_tls_error(p.cli), "not correctly signed"));
    EMS_CHECK(!ems_tls_is_established(p.cli));
    EMS_CHECK_INT(ems_tls_write(p.cli, "x", 1), ==, EMS_EAGAIN);
    pair_free(&p);
    ems_tls_config_unref(s);
    ems_tls_config_unref(c);
}

static void test_hostname_mismatch_is_refused(void)
{
    const char *d = certs;
    ems_tls_config_t *s, *c;
    EMS_CHECK_INT(
        ems_tls_server_config_new(net_path(d, "chain.crt"), net_path(d, "server.key"), &s), ==, 0);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(d, "ca.crt"), &c), ==, 0);
    pair_t p;
    pair_new(&p, c, s, "gateway.example.com");
    int src;
    EMS_CHECK_INT(pair_handshake(&p, 1000, &src), ==, EMS_ETLS);
    fprintf(stderr, "# client error: %s\n", ems_tls_error(p.cli));
    EMS_CHECK(strstr(ems_tls_error(p.cli), "CN"));
    pair_free(&p);
    ems_tls_config_unref(s);
    ems_tls_config_unref(c);
}

/* ---- a plain mbedTLS peer that offers exactly one suite ---- */

typedef struct {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    mbedtls_ssl_context ssl;
    int suites[2];
    ems_buf_t *out; /* what it sends */
    ems_buf_t *in;  /* what it reads (drained) */
} raw_t;

static int raw_send(void *ctx, const unsigned char *b, size_t n)
{
    raw_t *r = ctx;
    return ems_buf_append(r->out, b, n) < 0 ? MBEDTLS_ERR_SSL_ALLOC_FAILED : (int)n;
}

static int raw_recv(void *ctx, unsigned char *b, size_t n)
{
    raw_t *r = ctx;
    size_t have = ems_buf_len(r->in);
    if (have == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > have)
        n = have;
    memcpy(b, ems_buf_data(r->in), n);
    ems_buf_consume(r->in, n);
    return (int)n;
}

/* A client (no certificate check) or, with cert and key, a server. */
static void raw_new(raw_t *r, int suite, const char *crt, const char *key, ems_buf_t *out,
                    ems_buf_t *in)
{
    memset(r, 0, sizeof *r);
    int server = crt != NULL;
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    mbedtls_ssl_config_init(&r->conf);
    mbedtls_x509_crt_init(&r->crt);
    mbedtls_pk_init(&r->pk);
    mbedtls_ssl_init(&r->ssl);
    EMS_CHECK_INT(mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy, NULL, 0), ==,
                  0);
    EMS_CHECK_INT(mbedtls_ssl_config_defaults(
                      &r->conf, server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT),
                  ==, 0);
    mbedtls_ssl_conf_rng(&r->conf, mbedtls_ctr_drbg_random, &r->drbg);
    mbedtls_ssl_conf_authmode(&r->conf, MBEDTLS_SSL_VERIFY_NONE);
    r->suites[0] = suite;
    mbedtls_ssl_conf_ciphersuites(&r->conf, r->suites);
    if (server) {
        EMS_CHECK_INT(mbedtls_x509_crt_parse_file(&r->crt, crt), ==, 0);
        EMS_CHECK_INT(mbedtls_pk_parse_keyfile(&r->pk, key, NULL), ==, 0);
        EMS_CHECK_INT(mbedtls_ssl_conf_own_cert(&r->conf, &r->crt, &r->pk), ==, 0);
    }
    EMS_CHECK_INT(mbedtls_ssl_setup(&r->ssl, &r->conf), ==, 0);
    if (!server)
        EMS_CHECK_INT(mbedtls_ssl_set_hostname(&r->ssl, "localhost"), ==, 0);
    r->out = out;
    r->in = in;
    mbedtls_ssl_set_bio(&r->ssl, r, raw_send, raw_recv, NULL);
}

static void raw_free(raw_t *r)
{
    mbedtls_ssl_free(&r->ssl);
    mbedtls_ssl_config_free(&r->conf);
    mbedtls_x509_crt_free(&r->crt);
    mbedtls_pk_free(&r->pk);
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}

/* Runs the handshake between an ems session and a raw peer (the session
 * writes into r->in, the peer into r->out). Returns 1 when both ends
 * completed it, 0 when either failed. */
static int raw_handshake(ems_tls_t *t, raw_t *r)
{
    int erc = EMS_EAGAIN, rrc = MBEDTLS_ERR_SSL_WANT_READ;
    for (int round = 0; round < 100; round++) {
        if (erc == EMS_EAGAIN) {
            ems_tls_feed(t, ems_buf_data(r->out), ems_buf_len(r->out));
            erc = ems_tls_handshake(t);
            ems_buf_consume(r->out, ems_buf_len(r->out) - ems_tls_fed_left(t));
        }
        if (rrc == MBEDTLS_ERR_SSL_WANT_READ || rrc == MBEDTLS_ERR_SSL_WANT_WRITE)
            rrc = mbedtls_ssl_handshake(&r->ssl);
        if (erc != EMS_EAGAIN && rrc != MBEDTLS_ERR_SSL_WANT_READ &&
            rrc != MBEDTLS_ERR_SSL_WANT_WRITE)
            break;
        if (erc < 0 && erc != EMS_EAGAIN)
            break;
        if (rrc < 0 && rrc != MBEDTLS_ERR_SSL_WANT_READ && rrc != MBEDTLS_ERR_SSL_WANT_WRITE)
            break;
    }
    return erc == 0 && rrc == 0;
}

/* The gateway accepts only ECDHE with AES-GCM or ChaCha20-Poly1305: a client
 * offering only CBC, CAMELLIA, CCM_8 or static RSA is refused; one offering
 * only an allowed suite gets it. */
static void test_server_suites(void)
{
    static const struct {
        int suite, ok;
    } cases[] = {
        {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, 1},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 1},
        {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, 1},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, 1},
        {MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, 1},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, 1},
        {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, 0},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, 0},
        {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, 0},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, 0},
        {MBEDTLS_TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256, 0},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_GCM_SHA256, 0},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, 0},
        {MBEDTLS_TLS_RSA_WITH_AES_128_GCM_SHA256, 0},
        {MBEDTLS_TLS_DHE_RSA_WITH_AES_128_GCM_SHA256, 0},
    };
    const char *d = certs;
    ems_tls_config_t *s;
    EMS_CHECK_INT(
        ems_tls_server_config_new(net_path(d, "chain.crt"), net_path(d, "server.key"), &s), ==, 0);
    int accepted = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ems_buf_t sout, cout;
        ems_buf_init(&sout, 1 << 20);
        ems_buf_init(&cout, 1 << 20);
        ems_tls_t *t;
        EMS_CHECK_INT(ems_tls_new(s, NULL, &sout, &t), ==, 0);
        raw_t r;
        raw_new(&r, cases[i].suite, NULL, NULL, &cout, &sout);
        int ok = raw_handshake(t, &r);
        const char *name = mbedtls_ssl_get_ciphersuite_name(cases[i].suite);
        fprintf(stderr, "# client offering only %s: %s\n", name, ok ? "accepted" : "refused");
        /* A suite this client's key type cannot use is refused either way;
         * what must never happen is a disallowed suite being accepted. */
        EMS_CHECK(!ok || cases[i].ok);
        if (ok)
            EMS_CHECK_INT(mbedtls_ssl_get_ciphersuite_id(mbedtls_ssl_get_ciphersuite(&r.ssl)), ==,
                          cases[i].suite);
        accepted += ok;
        raw_free(&r);
        ems_tls_free(t);
        ems_buf_free(&sout);
        ems_buf_free(&cout);
    }
    /* The test certificate has one key type: half of the allowed suites. */
    EMS_CHECK_INT(accepted, ==, 3);
    ems_tls_config_unref(s);
}

/* The edge's client offers the same list: a server that insists on CBC gets
 * no handshake, one that speaks GCM does. */
static void test_client_suites(void)
{
    const char *d = certs;
    ems_tls_config_t *c;
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(d, "ca.crt"), &c), ==, 0);
    int ok_any = 0;
    static const int good[] = {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                               MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256};
    static const int bad[] = {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
                              MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256};
    /* First the allowed suites (one per key type), then CBC ones. */
    for (int pass_ = 0; pass_ < 2; pass_++) {
        for (int i = 0; i < 2; i++) {
            ems_buf_t cout, sout;
            ems_buf_init(&cout, 1 << 20);
            ems_buf_init(&sout, 1 << 20);
            ems_tls_t *t;
            EMS_CHECK_INT(ems_tls_new(c, "localhost", &cout, &t), ==, 0);
            raw_t r;
            raw_new(&r, pass_ ? bad[i] : good[i], net_path(d, "chain.crt"),
                    net_path(d, "server.key"), &sout, &cout);
            int ok = raw_handshake(t, &r);
            if (pass_)
                EMS_CHECK(!ok);
            else
                ok_any += ok;
            raw_free(&r);
            ems_tls_free(t);
            ems_buf_free(&cout);
            ems_buf_free(&sout);
        }
    }
    EMS_CHECK_INT(ok_any, ==, 1); /* the one matching the certificate's key */
    ems_tls_config_unref(c);
}

static void test_config_errors(void)
{
    const char *d = certs;
    ems_tls_config_t *x = (ems_tls_config_t *)1;
    EMS_CHECK_INT(ems_tls_server_config_new(net_path(d, "nope.crt"), net_path(d, "server.key"), &x),
                  ==, EMS_ECONFIG);
    EMS_CHECK(x == NULL);
    /* a key that does not belong to the certificate */
    EMS_CHECK_INT(
        ems_tls_server_config_new(net_path(d, "server.crt"), net_path(d, "other-server.key"), &x),
        ==, EMS_ECONFIG);
    EMS_CHECK_INT(
        ems_tls_server_config_new(net_path(d, "server.key"), net_path(d, "server.key"), &x), ==,
        EMS_ECONFIG);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(d, "nope.crt"), &x), ==, EMS_ECONFIG);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(d, "server.key"), &x), ==, EMS_ECONFIG);
    /* a client session needs a host name; sessions keep configs alive */
    ems_tls_config_t *c;
    ems_buf_t out;
    ems_buf_init(&out, 1 << 16);
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(d, "ca.crt"), &c), ==, 0);
    ems_tls_t *t;
    EMS_CHECK_INT(ems_tls_new(c, NULL, &out, &t), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_tls_new(c, "localhost", &out, &t), ==, 0);
    ems_tls_config_unref(c); /* the session still holds it */
    EMS_CHECK_INT(ems_tls_handshake(t), ==, EMS_EAGAIN);
    EMS_CHECK_INT(ems_buf_len(&out), >, 0); /* the ClientHello */
    ems_tls_free(t);
    ems_buf_free(&out);
}

/* One connection of client configuration `c` to server configuration `s`:
 * handshake, a message each way. Returns 1 if the client resumed. */
static int connect_once(ems_tls_config_t *c, ems_tls_config_t *s, const char *host)
{
    pair_t p;
    pair_new(&p, c, s, host);
    int src;
    EMS_CHECK_INT(pair_handshake(&p, 100000, &src), ==, 0);
    EMS_CHECK_INT(src, ==, 0);
    EMS_CHECK_INT(ems_tls_resumed(p.cli), ==, ems_tls_resumed(p.srv)); /* both sides agree */
    char got[16];
    EMS_CHECK_INT(ems_tls_write(p.cli, "ping", 4), ==, 0);
    EMS_CHECK_INT(pass(&p.cout, p.srv, got, sizeof got), ==, 4);
    EMS_CHECK_INT(ems_tls_write(p.srv, "pong", 4), ==, 0);
    EMS_CHECK_INT(pass(&p.sout, p.cli, got, sizeof got), ==, 4);
    EMS_CHECK(memcmp(got, "pong", 4) == 0);
    int resumed = ems_tls_resumed(p.cli);
    pair_free(&p);
    return resumed;
}

static ems_tls_config_t *server_with_tickets(const char *secret, unsigned lifetime_s)
{
    ems_tls_config_t *s;
    EMS_CHECK_INT(ems_tls_server_config_new(net_path(certs, "chain.crt"),
                                            net_path(certs, "server.key"), &s),
                  ==, 0);
    if (secret)
        EMS_CHECK_INT(ems_tls_config_set_tickets(s, secret, strlen(secret), lifetime_s), ==, 0);
    return s;
}

/* Session tickets: the second connection resumes, also on another server
 * with the same secret (another gateway, or this one after a restart);
 * a ticket from a foreign secret, an expired one, or one offered to a
 * server without tickets ends in an ordinary full handshake. */
static void test_tickets_resume(void)
{
    const char *secret = "0123456789abcdef0123456789abcdef";
    ems_tls_config_t *s1 = server_with_tickets(secret, 3600);
    ems_tls_config_t *c;
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(certs, "ca.crt"), &c), ==, 0);
    EMS_CHECK_INT(ems_tls_config_set_tickets(c, secret, strlen(secret), 60), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_tls_config_set_tickets(s1, "short", 5, 60), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_tls_config_set_tickets(s1, secret, strlen(secret), 0), ==, EMS_EINVAL);

    EMS_CHECK_INT(connect_once(c, s1, "localhost"), ==, 0); /* first: full */
    EMS_CHECK_INT(connect_once(c, s1, "localhost"), ==, 1);
    EMS_CHECK_INT(connect_once(c, s1, "localhost"), ==, 1);
    ems_tls_stats_t st;
    ems_tls_config_stats(s1, &st);
    EMS_CHECK_INT(st.full, ==, 1);
    EMS_CHECK_INT(st.resumed, ==, 2);
    EMS_CHECK_INT(st.tickets_issued, ==, 1);
    ems_tls_config_stats(c, &st);
    EMS_CHECK_INT(st.full, ==, 1);
    EMS_CHECK_INT(st.resumed, ==, 2);

    /* another process with the same secret takes the ticket */
    ems_tls_config_t *s2 = server_with_tickets(secret, 3600);
    EMS_CHECK_INT(connect_once(c, s2, "localhost"), ==, 1);

    /* a foreign secret: refused, full handshake, then a ticket of its own */
    ems_tls_config_t *s3 = server_with_tickets("another secret, another fleet", 3600);
    EMS_CHECK_INT(connect_once(c, s3, "localhost"), ==, 0);
    ems_tls_config_stats(s3, &st);
    EMS_CHECK_INT(st.tickets_refused, ==, 1);
    EMS_CHECK_INT(st.full, ==, 1);
    EMS_CHECK_INT(connect_once(c, s3, "localhost"), ==, 1);
    /* ... which the first server in turn does not take */
    EMS_CHECK_INT(connect_once(c, s1, "localhost"), ==, 0);

    /* no tickets on the server: the offer is ignored */
    ems_tls_config_t *s4 = server_with_tickets(NULL, 0);
    EMS_CHECK_INT(connect_once(c, s4, "localhost"), ==, 0);
    EMS_CHECK_INT(connect_once(c, s4, "localhost"), ==, 0);
    ems_tls_config_unref(s4);
    ems_tls_config_unref(s3);
    ems_tls_config_unref(s2);
    ems_tls_config_unref(s1);
    ems_tls_config_unref(c);
}

static void test_tickets_expire(void)
{
    const char *secret = "0123456789abcdef0123456789abcdef";
    ems_tls_config_t *s = server_with_tickets(secret, 1);
    ems_tls_config_t *c;
    EMS_CHECK_INT(ems_tls_client_config_new(net_path(certs, "ca.crt"), &c), ==, 0);
    EMS_CHECK_INT(connect_once(c, s, "localhost"), ==, 0);
    sleep(3); /* two key periods and the session's lifetime have passed */
    EMS_CHECK_INT(connect_once(c, s, "localhost"), ==, 0);
    ems_tls_stats_t st;
    ems_tls_config_stats(s, &st);
    EMS_CHECK_INT(st.tickets_refused, ==, 1);
    EMS_CHECK_INT(st.resumed, ==, 0);
    ems_tls_config_unref(s);
    ems_tls_config_unref(c);
}

int main(void)
{
    certs = net_mkcerts();
    EMS_RUN(test_handshake_and_data);
    EMS_RUN(test_wrong_ca_is_refused);
    EMS_RUN(test_hostname_mismatch_is_refused);
    EMS_RUN(test_server_suites);
    EMS_RUN(test_client_suites);
    EMS_RUN(test_config_errors);
    EMS_RUN(test_tickets_resume);
    EMS_RUN(test_tickets_expire);
    net_rmdir(certs);
    EMS_TEST_END();
}
