/* test_edge_clock.c: clock_synced from the kernel and the welcome
 * (edge/clock.h, docs/state-machine.md "Time"). */
#include "ems_test.h"

#include "clock.h"
#include "error.h"

#include <stdint.h>

/* Without a welcome only the kernel can vouch for the clock. */
static void test_no_welcome(void)
{
    ems_edge_clock_t c;
    ems_edge_clock_init(&c);
    EMS_CHECK(!ems_edge_clock_synced(&c, 0, 1000, 5));
    EMS_CHECK(!ems_edge_clock_synced(&c, EMS_EPERM, 1000, 5)); /* adjtimex unavailable */
    EMS_CHECK(ems_edge_clock_synced(&c, 1, 1000, 5));
    int64_t off;
    EMS_CHECK(!ems_edge_clock_offset(&c, 1000, 5, &off));
}

/* The welcome agrees within 2 s (inclusive) or it does not. */
static void test_welcome_tolerance(void)
{
    const int64_t utc = 1769860800000LL, mono = 123456;
    struct {
        int64_t server_minus_local;
        bool synced;
    } cases[] = {{0, true},      {2000, true},     {-2000, true},     {2001, false},
                 {-2001, false}, {3600000, false}, {-86400000, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ems_edge_clock_t c;
        ems_edge_clock_init(&c);
        int64_t off = ems_edge_clock_welcome(&c, utc + cases[i].server_minus_local, utc, mono);
        EMS_CHECK_INT(off, ==, cases[i].server_minus_local);
        EMS_CHECK(ems_edge_clock_synced(&c, 0, utc, mono) == cases[i].synced);
        /* An hour later, with no step, the verdict is the same. */
        EMS_CHECK(ems_edge_clock_synced(&c, 0, utc + 3600000, mono + 3600000) == cases[i].synced);
        /* The kernel's word wins either way. */
        EMS_CHECK(ems_edge_clock_synced(&c, 1, utc, mono));
    }
}

/* A step of the wall clock after the welcome is seen against the monotonic
 * clock: a trusted clock that jumps is no longer trusted, and a clock that
 * was wrong and is stepped right becomes trusted. */
static void test_clock_steps(void)
{
    const int64_t utc = 1769860800000LL, mono = 1000;
    ems_edge_clock_t c;
    ems_edge_clock_init(&c);
    ems_edge_clock_welcome(&c, utc, utc, mono);
    /* 10 s later the wall clock jumped back an hour */
    EMS_CHECK(!ems_edge_clock_synced(&c, 0, utc + 10000 - 3600000, mono + 10000));
    int64_t off;
    EMS_CHECK(ems_edge_clock_offset(&c, utc + 10000 - 3600000, mono + 10000, &off));
    EMS_CHECK_INT(off, ==, 3600000);
    /* a 1.5 s step stays within the tolerance */
    EMS_CHECK(ems_edge_clock_synced(&c, 0, utc + 10000 + 1500, mono + 10000));

    /* A device that booted in 1970 and is then set right by NTP. */
    ems_edge_clock_init(&c);
    ems_edge_clock_welcome(&c, utc, 5000, mono);
    EMS_CHECK(!ems_edge_clock_synced(&c, 0, 6000, mono + 1000));
    EMS_CHECK(ems_edge_clock_synced(&c, 0, utc + 2000, mono + 2000));
    ems_edge_clock_forget(&c);
    EMS_CHECK(!ems_edge_clock_synced(&c, 0, utc + 2000, mono + 2000));
}

/* The kernel query answers something sensible on this machine. */
static void test_kernel_query(void)
{
    int k = ems_edge_clock_kernel_synced();
    EMS_CHECK(k == 0 || k == 1 || k < 0);
    printf("# adjtimex says the clock is %s\n", k == 1   ? "synchronised"
                                                : k == 0 ? "not synchronised"
                                                         : "unknown");
}

int main(void)
{
    EMS_RUN(test_no_welcome);
    EMS_RUN(test_welcome_tolerance);
    EMS_RUN(test_clock_steps);
    EMS_RUN(test_kernel_query);
    EMS_TEST_END();
}
