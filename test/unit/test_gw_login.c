/* Unit tests: login admission control (cloud/gateway/gw_login.c), the
 * negative device cache (gw_neg.c) and the logout list (gw_session.c). */
#include "ems_test.h"

#include "error.h"
#include "gw_login.h"
#include "gw_neg.h"
#include "gw_session.h"

#include <stdio.h>
#include <string.h>

/* 200 attempts at once from one address: at most per_min are admitted
 * (an attempt in flight counts as a failure until it ends), however many
 * arrive before the first one finished. */
static void test_login_inflight_counts(void)
{
    gw_login_t l;
    gw_login_init(&l, 20, 2, 1000);
    static gw_login_waiter_t w[200];
    int admitted = 0, throttled = 0, retry = 0;
    for (int i = 0; i < 200; i++) {
        int v = gw_login_begin(&l, &w[i], "10.0.0.1", 1000, &retry);
        if (v == GW_LOGIN_RUN || v == GW_LOGIN_QUEUED)
            admitted++;
        else if (v == GW_LOGIN_THROTTLED)
            throttled++;
    }
    /* One waiting attempt per address: 2 running + 1 queued. */
    EMS_CHECK_INT(admitted, ==, 3);
    EMS_CHECK_INT(throttled, ==, 197);
    EMS_CHECK_INT(l.running, ==, 2);
    EMS_CHECK_INT(l.waiting, ==, 1);
    gw_login_free(&l);
}

/* Without the per-address queue limit (a large queue), the budget alone
 * admits exactly per_min. */
static void test_login_budget_bounds_admission(void)
{
    gw_login_t l;
    gw_login_init(&l, 20, 100, 1000);
    static gw_login_waiter_t w[200];
    int admitted = 0, retry = 0;
    for (int i = 0; i < 200; i++) {
        int v = gw_login_begin(&l, &w[i], "10.0.0.1", 1000, &retry);
        if (v == GW_LOGIN_RUN)
            admitted++;
    }
    EMS_CHECK_INT(admitted, ==, 20);
    /* They all fail: the budget is spent, the next is throttled with a
     * Retry-After of about the refill time of one token (3 s). */
    for (int i = 0; i < 20; i++)
        gw_login_end(&l, &w[i], false, 1000);
    EMS_CHECK_INT(gw_login_begin(&l, &w[0], "10.0.0.1", 1000, &retry), ==, GW_LOGIN_THROTTLED);
    EMS_CHECK_INT(retry, ==, 3);
    /* 3 s later one token is back. */
    EMS_CHECK_INT(gw_login_begin(&l, &w[0], "10.0.0.1", 4000, &retry), ==, GW_LOGIN_RUN);
    /* A success charges nothing. */
    gw_login_end(&l, &w[0], true, 4000);
    EMS_CHECK_INT(gw_login_begin(&l, &w[0], "10.0.0.1", 4000, &retry), ==, GW_LOGIN_RUN);
    gw_login_end(&l, &w[0], true, 4000);
    gw_login_free(&l);
}

/* Another address is served next, not after the attacker's backlog. */
static void test_login_fair_queue(void)
{
    gw_login_t l;
    gw_login_init(&l, 20, 2, 16);
    gw_login_waiter_t a[4], b;
    int retry;
    EMS_CHECK_INT(gw_login_begin(&l, &a[0], "10.0.0.1", 0, &retry), ==, GW_LOGIN_RUN);
    EMS_CHECK_INT(gw_login_begin(&l, &a[1], "10.0.0.1", 0, &retry), ==, GW_LOGIN_RUN);
    EMS_CHECK_INT(gw_login_begin(&l, &a[2], "10.0.0.1", 0, &retry), ==, GW_LOGIN_QUEUED);
    EMS_CHECK_INT(gw_login_begin(&l, &a[3], "10.0.0.1", 0, &retry), ==, GW_LOGIN_THROTTLED);
    EMS_CHECK_INT(gw_login_begin(&l, &b, "10.0.0.2", 0, &retry), ==, GW_LOGIN_QUEUED);
    /* Slots are handed over in order; b is second. */
    EMS_CHECK(gw_login_end(&l, &a[0], false, 0) == &a[2]);
    EMS_CHECK(gw_login_end(&l, &a[1], false, 0) == &b);
    EMS_CHECK(gw_login_end(&l, &a[2], false, 0) == NULL);
    EMS_CHECK(gw_login_end(&l, &b, true, 0) == NULL);
    EMS_CHECK_INT(l.running, ==, 0);
    /* A background job takes a free slot only. */
    EMS_CHECK(gw_login_take_slot(&l));
    EMS_CHECK(gw_login_take_slot(&l));
    EMS_CHECK(!gw_login_take_slot(&l));
    EMS_CHECK(gw_login_put_slot(&l) == NULL);
    EMS_CHECK(gw_login_put_slot(&l) == NULL);
    gw_login_free(&l);
}

/* The global queue is bounded, and its last quarter is kept for addresses
 * without recent failures. */
static void test_login_queue_bound_and_reserve(void)
{
    gw_login_t l;
    gw_login_init(&l, 20, 1, 8);
    gw_login_waiter_t run, q[16], clean;
    int retry;
    char addr[32];
    EMS_CHECK_INT(gw_login_begin(&l, &run, "10.1.0.0", 0, &retry), ==, GW_LOGIN_RUN);
    /* Addresses with a failure each fill the queue up to the reserve. */
    int queued = 0;
    for (int i = 0; i < 16; i++) {
        snprintf(addr, sizeof addr, "10.1.0.%d", i + 1);
        gw_login_fail(&l, addr, 0);
        int v = gw_login_begin(&l, &q[i], addr, 0, &retry);
        if (v == GW_LOGIN_QUEUED)
            queued++;
        else
            EMS_CHECK_INT(v, ==, GW_LOGIN_BUSY);
    }
    EMS_CHECK_INT(queued, ==, 6); /* 8 minus a reserve of 2 */
    EMS_CHECK_INT(gw_login_begin(&l, &clean, "10.2.0.1", 0, &retry), ==, GW_LOGIN_QUEUED);
    /* A waiter whose client left is unlinked by gw_login_end. */
    EMS_CHECK(gw_login_end(&l, &q[3], false, 0) == NULL);
    EMS_CHECK_INT(l.waiting, ==, 6);
    gw_login_free(&l);
}

static void test_login_sweep_and_keys(void)
{
    gw_login_t l;
    gw_login_init(&l, 60, 2, 4);
    gw_login_fail(&l, "10.0.0.9", 0);
    gw_login_sweep(&l, 500);
    EMS_CHECK_INT(l.addrs.len, ==, 1); /* bucket not full yet */
    gw_login_sweep(&l, 1000);
    EMS_CHECK_INT(l.addrs.len, ==, 0);
    gw_login_free(&l);
    char k[64];
    gw_login_addr_key("[2001:db8:1:2:3:4:5:6]", k, sizeof k);
    EMS_CHECK_STR(k, "[2001:db8:1:2::]/64");
    gw_login_addr_key("[::ffff:10.0.0.1]", k, sizeof k);
    EMS_CHECK_STR(k, "[::ffff:10.0.0.1]");
    gw_login_addr_key("127.0.0.1", k, sizeof k);
    EMS_CHECK_STR(k, "127.0.0.1");
}

static void test_neg_cache(void)
{
    gw_neg_t n;
    EMS_CHECK_INT(gw_neg_init(&n, 3, 10000), ==, 0);
    gw_neg_add(&n, "ghost", 0);
    EMS_CHECK(gw_neg_has(&n, "ghost", 9999));
    EMS_CHECK(!gw_neg_has(&n, "ghost", 10000)); /* expired */
    EMS_CHECK(!gw_neg_has(&n, "other", 0));
    /* Bounded: the oldest goes first. */
    gw_neg_add(&n, "a", 20000);
    gw_neg_add(&n, "b", 20001);
    gw_neg_add(&n, "c", 20002);
    gw_neg_add(&n, "d", 20003);
    EMS_CHECK(!gw_neg_has(&n, "a", 20004));
    EMS_CHECK(gw_neg_has(&n, "b", 20004) && gw_neg_has(&n, "c", 20004) &&
              gw_neg_has(&n, "d", 20004));
    gw_neg_del(&n, "c");
    EMS_CHECK(!gw_neg_has(&n, "c", 20004));
    gw_neg_add(&n, "e", 20005);
    gw_neg_add(&n, "f", 20006);
    EMS_CHECK(gw_neg_has(&n, "e", 20007) && gw_neg_has(&n, "f", 20007));
    EMS_CHECK(n.map.len <= 3);
    gw_neg_clear(&n);
    EMS_CHECK(!gw_neg_has(&n, "e", 20007) && n.len == 0);
    gw_neg_add(&n, "g", 20008);
    EMS_CHECK(gw_neg_has(&n, "g", 20009));
    gw_neg_free(&n);
    /* ttl 0: nothing is remembered. */
    EMS_CHECK_INT(gw_neg_init(&n, 3, 0), ==, 0);
    gw_neg_add(&n, "ghost", 0);
    EMS_CHECK(!gw_neg_has(&n, "ghost", 0));
    gw_neg_free(&n);
}

static void test_session_revoke(void)
{
    gw_session_key_t k;
    EMS_CHECK_INT(gw_session_key_random(&k), ==, 0);
    gw_session_t s = {.role = EMS_AUTH_ROLE_VIEWER, .expires_s = 2000};
    strcpy(s.user, "ada");
    char c1[GW_SESSION_MAX], c2[GW_SESSION_MAX];
    int n1 = gw_session_sign(&k, &s, c1, sizeof c1);
    s.expires_s = 2001;
    int n2 = gw_session_sign(&k, &s, c2, sizeof c2);
    EMS_CHECK(n1 > 0 && n2 > 0);
    gw_session_revoked_t r = {0};
    EMS_CHECK(!gw_session_is_revoked(&r, c1, (size_t)n1));
    EMS_CHECK_INT(gw_session_revoke(&r, c1, (size_t)n1, 2000, 1000), ==, 0);
    EMS_CHECK(gw_session_is_revoked(&r, c1, (size_t)n1));
    EMS_CHECK(!gw_session_is_revoked(&r, c2, (size_t)n2)); /* another session */
    gw_session_revoked_sweep(&r, 1999);
    EMS_CHECK(gw_session_is_revoked(&r, c1, (size_t)n1));
    gw_session_revoked_sweep(&r, 2000); /* expired: the cookie is refused anyway */
    EMS_CHECK_INT(r.map.len, ==, 0);
    EMS_CHECK_INT(gw_session_revoke(&r, "junk", 4, 2000, 1000), ==, EMS_EINVAL);
    gw_session_revoked_free(&r);
}

int main(void)
{
    EMS_RUN(test_login_inflight_counts);
    EMS_RUN(test_login_budget_bounds_admission);
    EMS_RUN(test_login_fair_queue);
    EMS_RUN(test_login_queue_bound_and_reserve);
    EMS_RUN(test_login_sweep_and_keys);
    EMS_RUN(test_neg_cache);
    EMS_RUN(test_session_revoke);
    EMS_TEST_END();
}
