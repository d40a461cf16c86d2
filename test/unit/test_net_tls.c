/* test_net_tls.c: TLS sessions on memory buffers, no sockets: two sessions
 * hand each other their output until the handshake is done. Proves the
 * buffer plumbing, certificate checks and error texts. */
#include <string.h>

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

int main(void)
{
    certs = net_mkcerts();
    EMS_RUN(test_handshake_and_data);
    EMS_RUN(test_wrong_ca_is_refused);
    EMS_RUN(test_hostname_mismatch_is_refused);
    EMS_RUN(test_config_errors);
    net_rmdir(certs);
    EMS_TEST_END();
}
