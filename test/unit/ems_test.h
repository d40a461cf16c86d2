/* ems_test.h: the unit-test harness, one header, no library.
 *
 * Each test file defines `static void test_name(void)` functions and a main()
 * that calls EMS_RUN(test_name) for each. Every test runs in its own forked
 * process with a deadline (libuv's way), so a crash or a hang fails that one
 * test and the others still run. Output is TAP ("ok - name", "not ok - name"),
 * which test/run.sh counts.
 *
 * Inside a test, EMS_CHECK(cond) and friends print the file, line and the
 * failed expression, then end the test's process with status 1.
 */
#ifndef EMS_TEST_H
#define EMS_TEST_H

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef EMS_TEST_TIMEOUT_S
#define EMS_TEST_TIMEOUT_S 60
#endif

static int ems_test__failed;
static int ems_test__skip_fd = -1; /* the running test's pipe for EMS_SKIP */

/* Exit status of a test process that skipped itself (as in automake). */
#define EMS_TEST__SKIPPED 77

/* Ends the running test as skipped: TAP "ok - name # SKIP why", which
 * test/run.sh counts and lists as skipped, never as passed. For tests that
 * cannot run on this machine (a tool or module missing), never to hide a
 * failure. */
#define EMS_SKIP(...)                                                        \
    do {                                                                     \
        char ems__why[200];                                                  \
        int ems__n = snprintf(ems__why, sizeof ems__why, __VA_ARGS__);       \
        if (ems__n > 0 && ems_test__skip_fd >= 0 &&                          \
            write(ems_test__skip_fd, ems__why,                               \
                  (size_t)ems__n < sizeof ems__why ? (size_t)ems__n          \
                                                    : sizeof ems__why - 1) < 0) \
            ems__n = 0;                                                      \
        fflush(stdout);                                                      \
        _exit(EMS_TEST__SKIPPED);                                            \
    } while (0)

#define EMS_FAIL(...)                                                        \
    do {                                                                     \
        fprintf(stderr, "# %s:%d: ", __FILE__, __LINE__);                    \
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, "\n");                                               \
        fflush(stderr);                                                      \
        _exit(1);                                                            \
    } while (0)

#define EMS_CHECK(cond)                                                      \
    do {                                                                     \
        if (!(cond))                                                         \
            EMS_FAIL("check failed: %s", #cond);                             \
    } while (0)

#define EMS_CHECK_INT(a, op, b)                                              \
    do {                                                                     \
        long long ems__a = (long long)(a), ems__b = (long long)(b);          \
        if (!(ems__a op ems__b))                                             \
            EMS_FAIL("check failed: %s %s %s (%lld vs %lld)", #a, #op, #b,   \
                     ems__a, ems__b);                                        \
    } while (0)

#define EMS_CHECK_STR(a, b)                                                  \
    do {                                                                     \
        const char *ems__a = (a), *ems__b = (b);                             \
        if (!ems__a || !ems__b || strcmp(ems__a, ems__b) != 0)               \
            EMS_FAIL("check failed: %s == %s (\"%s\" vs \"%s\")", #a, #b,    \
                     ems__a ? ems__a : "(null)", ems__b ? ems__b : "(null)"); \
    } while (0)

#define EMS_CHECK_NEAR(a, b, eps)                                            \
    do {                                                                     \
        double ems__a = (a), ems__b = (b);                                   \
        if (!(fabs(ems__a - ems__b) <= (eps)))                               \
            EMS_FAIL("check failed: %s ~= %s (%g vs %g, eps %g)", #a, #b,    \
                     ems__a, ems__b, (double)(eps));                         \
    } while (0)

static inline void ems_test__run(const char *name, void (*fn)(void))
{
    fflush(stdout);
    fflush(stderr);
    int skip[2];
    if (pipe(skip) < 0) {
        printf("not ok - %s: pipe failed\n", name);
        ems_test__failed++;
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        printf("not ok - %s: fork failed\n", name);
        ems_test__failed++;
        close(skip[0]);
        close(skip[1]);
        return;
    }
    if (pid == 0) {
        close(skip[0]);
        ems_test__skip_fd = skip[1];
        alarm(EMS_TEST_TIMEOUT_S);
        fn();
        fflush(stdout);
        _exit(0);
    }
    close(skip[1]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    char why[200];
    ssize_t wn = read(skip[0], why, sizeof why - 1);
    close(skip[0]);
    why[wn > 0 ? wn : 0] = '\0';
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok - %s\n", name);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == EMS_TEST__SKIPPED && why[0]) {
        printf("ok - %s # SKIP %s\n", name, why);
    } else {
        ems_test__failed++;
        if (WIFSIGNALED(status))
            printf("not ok - %s: killed by signal %d%s\n", name, WTERMSIG(status),
                   WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
        else
            printf("not ok - %s: exit status %d\n", name, WEXITSTATUS(status));
    }
    fflush(stdout);
}

#define EMS_RUN(fn) ems_test__run(#fn, fn)
#define EMS_TEST_END() return ems_test__failed ? 1 : 0

#endif
