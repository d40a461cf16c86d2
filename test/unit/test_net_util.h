/* test_net_util.h: helpers shared by the network tests (test_net_*.c).
 *
 * Certificates are made per test run with test/lib/mkcerts.sh in a fresh
 * temporary directory; loops are driven until a condition holds or a
 * deadline passes; and every test ends with net_loop_finish(), which runs
 * the loop until every handle is closed and checks uv_loop_close() == 0,
 * so a leaked handle fails the test (libuv's own discipline).
 */
#ifndef TEST_NET_UTIL_H
#define TEST_NET_UTIL_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ems_test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define NET_LEAK_CHECK() (__lsan_do_recoverable_leak_check() != 0)
#else
#define NET_LEAK_CHECK() 0
#endif

/* Makes a fresh temporary directory with the test certificates and returns
 * it (static storage) or fails. Call it once in main(), before the tests
 * fork, so that every test shares one set and a failing test (which ends
 * with _exit) leaves nothing behind; net_rmdir() it at the end of main. */
static inline const char *net_mkcerts(void)
{
    static char dir[256];
    char cmd[1024];
    const char *root = getenv("EMS_ROOT");
    snprintf(dir, sizeof dir, "/tmp/ems-net-test-XXXXXX");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "# mkdtemp failed\n");
        exit(1);
    }
    snprintf(cmd, sizeof cmd, "%s/test/lib/mkcerts.sh %s", root ? root : ".", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "# %s failed\n", cmd);
        exit(1);
    }
    return dir;
}

/* Removes a directory made by net_mkcerts. */
static inline void net_rmdir(const char *dir)
{
    char cmd[300];
    if (!dir || strncmp(dir, "/tmp/ems-net-test-", 18) != 0)
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "# could not remove %s\n", dir);
}

/* Path of a file in the cert directory (static rotating storage). */
static inline const char *net_path(const char *dir, const char *file)
{
    static char buf[4][PATH_MAX];
    static int i;
    char *p = buf[i++ & 3];
    if (snprintf(p, PATH_MAX, "%s/%s", dir, file) >= PATH_MAX)
        EMS_FAIL("path too long");
    return p;
}

static void net__deadline_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until *flag becomes non-zero or `ms` pass. Returns 1 if
 * the flag was set. */
static inline int net_run_until(uv_loop_t *loop, volatile int *flag, unsigned ms)
{
    uv_timer_t t;
    int expired = 0;
    uv_timer_init(loop, &t);
    t.data = &expired;
    uv_timer_start(&t, net__deadline_cb, ms, 0);
    while (!*flag && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag != 0;
}

static void net__walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "# leaked handle: %s%s\n", uv_handle_type_name(uv_handle_get_type(h)),
            uv_is_closing(h) ? " (closing)" : "");
}

/* Runs the loop until nothing is left (at most ~5 s), then checks that
 * uv_loop_close succeeds and, under ASan, that nothing leaked (the test
 * harness ends each test with _exit, which skips LeakSanitizer's own
 * check, so ask for it here). */
static inline void net_loop_finish(uv_loop_t *loop)
{
    for (int i = 0; i < 500 && uv_loop_alive(loop); i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (uv_loop_alive(loop))
            uv_sleep(10);
    }
    int rc = uv_loop_close(loop);
    if (rc != 0)
        uv_walk(loop, net__walk_cb, NULL);
    EMS_CHECK_INT(rc, ==, 0);
    if (NET_LEAK_CHECK())
        EMS_FAIL("memory leaked (see the LeakSanitizer report above)");
}

#endif
