/* bench_tls.c: CPU of a TLS handshake on the gateway's side, full against
 * resumed with a session ticket (common/net/tls.h). A benchmark, not a
 * test: it prints numbers and checks only that the calls succeed.
 * docs/benchmarks.md records the results.
 *
 *   bench_tls [N]      (default N = 300 handshakes of each kind)
 *
 * Client and server sessions run in this one process on memory buffers
 * (no sockets, no kernel time), with the test certificates of
 * test/lib/mkcerts.sh (ECDSA P-256, as a small deployment would use; run
 * from the repository root, as scripts/bench.sh does). The server's CPU
 * is measured with CLOCK_THREAD_CPUTIME_ID around its own calls only, so
 * the client's work is not counted.
 */
#include "buf.h"
#include "error.h"
#include "log.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* One handshake; returns the server's CPU in ns, or -1. */
static double handshake(ems_tls_config_t *c, ems_tls_config_t *s, int *resumed)
{
    ems_buf_t cout, sout;
    ems_buf_init(&cout, 1 << 20);
    ems_buf_init(&sout, 1 << 20);
    ems_tls_t *cli = NULL, *srv = NULL;
    double spent = 0;
    int crc = -1, src = EMS_EAGAIN;
    if (ems_tls_new(c, "localhost", &cout, &cli) < 0)
        goto done;
    double t0 = cpu_ns();
    int rc = ems_tls_new(s, NULL, &sout, &srv);
    spent += cpu_ns() - t0;
    if (rc < 0)
        goto done;
    crc = ems_tls_handshake(cli);
    for (int round = 0; round < 100 && (crc == EMS_EAGAIN || src == EMS_EAGAIN); round++) {
        if (ems_buf_len(&cout)) {
            t0 = cpu_ns();
            ems_tls_feed(srv, ems_buf_data(&cout), ems_buf_len(&cout));
            src = ems_tls_handshake(srv);
            ems_tls_feed(srv, NULL, 0);
            spent += cpu_ns() - t0;
            ems_buf_clear(&cout);
        }
        if (ems_buf_len(&sout)) {
            ems_tls_feed(cli, ems_buf_data(&sout), ems_buf_len(&sout));
            crc = ems_tls_handshake(cli);
            ems_tls_feed(cli, NULL, 0);
            ems_buf_clear(&sout);
        }
    }
    *resumed = ems_tls_resumed(srv);
done:
    ems_tls_free(cli);
    t0 = cpu_ns();
    ems_tls_free(srv);
    spent += cpu_ns() - t0;
    ems_buf_free(&cout);
    ems_buf_free(&sout);
    return crc == 0 && src == 0 ? spent : -1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    printf("  %-32s %5d   mean %8.3f ms   p50 %8.3f ms   p99 %8.3f ms   (%.0f per second of "
           "one core)\n",
           what, n, sum / n / 1e6, v[n / 2] / 1e6, v[(n * 99) / 100] / 1e6, 1e9 / (sum / n));
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 300;
    if (n < 10)
        n = 10;
    ems_log_set_level(EMS_LOG_ERROR);
    char dir[] = "/tmp/ems-bench-tls-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char cmd[512], crt[300], key[300], ca[300];
    snprintf(cmd, sizeof cmd, "test/lib/mkcerts.sh %s", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_tls: %s failed (run from the repository root)\n", cmd);
        return 1;
    }
    snprintf(crt, sizeof crt, "%s/chain.crt", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    ems_tls_config_t *s = NULL, *c = NULL;
    const char secret[] = "bench ticket secret, 32 bytes ok";
    if (ems_tls_server_config_new(crt, key, &s) < 0 ||
        ems_tls_config_set_tickets(s, secret, sizeof secret - 1, 3600) < 0 ||
        ems_tls_client_config_new(ca, &c) < 0) {
        fprintf(stderr, "bench_tls: cannot set up TLS\n");
        return 1;
    }
    double *full = calloc((size_t)n, sizeof *full), *res = calloc((size_t)n, sizeof *res);
    int nf = 0, nr = 0, bad = 0;
    /* Alternate: a fresh client configuration (nothing to offer) gives a
     * full handshake, the same one again resumes. */
    while ((nf < n || nr < n) && bad < 10) {
        int resumed = 0;
        if (nf < n) {
            ems_tls_config_unref(c);
            if (ems_tls_client_config_new(ca, &c) < 0)
                return 1;
            double t = handshake(c, s, &resumed);
            if (t < 0 || resumed)
                bad++;
            else
                full[nf++] = t;
        }
        if (nr < n) {
            double t = handshake(c, s, &resumed);
            if (t < 0 || !resumed)
                bad++;
            else
                res[nr++] = t;
        }
    }
    printf("TLS 1.2 handshakes, server side CPU (ECDSA P-256 certificate, ECDHE, AES-GCM; "
           "mbedTLS 2.28):\n");
    if (nf)
        report("full handshake", full, nf);
    if (nr)
        report("resumed with a session ticket", res, nr);
    if (bad)
        printf("  %d handshakes failed or took the wrong path\n", bad);
    ems_tls_config_unref(s);
    ems_tls_config_unref(c);
    free(full);
    free(res);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_tls: could not remove %s\n", dir);
    return bad ? 1 : 0;
}
