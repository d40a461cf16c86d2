/* test_net_buf.c: the bounded buffer and the backoff helper. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "ems_test.h"
#include "error.h"

static void test_buf_cap_is_hard(void)
{
    ems_buf_t b;
    ems_buf_init(&b, 10);
    EMS_CHECK_INT(ems_buf_append(&b, "0123456789", 10), ==, 0);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 10);
    /* one byte over: refused, content unchanged */
    EMS_CHECK_INT(ems_buf_append(&b, "x", 1), ==, EMS_ENOSPC);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 10);
    EMS_CHECK(memcmp(ems_buf_data(&b), "0123456789", 10) == 0);
    /* the allocation never grows far past the cap */
    EMS_CHECK_INT(b.cap, <=, 10);
    /* consuming frees room again */
    ems_buf_consume(&b, 4);
    EMS_CHECK_INT(ems_buf_room(&b), ==, 4);
    EMS_CHECK_INT(ems_buf_append(&b, "abcd", 4), ==, 0);
    EMS_CHECK(memcmp(ems_buf_data(&b), "456789abcd", 10) == 0);
    EMS_CHECK_INT(ems_buf_append(&b, "", 0), ==, 0);
    ems_buf_free(&b);
}

static void test_buf_appendf_and_reserve(void)
{
    ems_buf_t b;
    ems_buf_init(&b, 1000);
    EMS_CHECK_INT(ems_buf_appendf(&b, "%d-%s", 42, "x"), ==, 0);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 4);
    /* long formatted text goes through the slow path */
    char big[600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    EMS_CHECK_INT(ems_buf_appendf(&b, "[%s]", big), ==, 0);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 4 + 601);
    EMS_CHECK(ems_buf_data(&b)[4] == '[' && ems_buf_data(&b)[604] == ']');
    /* over the cap: all or nothing */
    EMS_CHECK_INT(ems_buf_appendf(&b, "%s", big), ==, EMS_ENOSPC);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 605);
    char *p;
    EMS_CHECK_INT(ems_buf_reserve(&b, 395, &p), ==, 0);
    memset(p, 'z', 395);
    ems_buf_commit(&b, 395);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 1000);
    EMS_CHECK_INT(ems_buf_reserve(&b, 1, &p), ==, EMS_ENOSPC);
    ems_buf_trim(&b, 100);
    EMS_CHECK(b.data == NULL);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 0);
    ems_buf_free(&b);
}

static void test_buf_queue_does_not_grow(void)
{
    /* A queue filled and drained at the same pace stays at its size. */
    ems_buf_t b;
    ems_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++) {
        EMS_CHECK_INT(ems_buf_append(&b, "0123456789abcdef", 16), ==, 0);
        ems_buf_consume(&b, 15);
    }
    EMS_CHECK_INT(ems_buf_len(&b), ==, 10000);
    EMS_CHECK_INT(b.cap, <=, 16384);
    ems_buf_t c;
    ems_buf_init(&c, 5);
    ems_buf_swap(&b, &c);
    EMS_CHECK_INT(b.max, ==, 5);
    EMS_CHECK_INT(ems_buf_len(&c), ==, 10000);
    ems_buf_free(&b);
    ems_buf_free(&c);
}

static void test_backoff_full_jitter(void)
{
    ems_backoff_t b;
    ems_backoff_init(&b, 1000, 60000, 12345);
    uint64_t want[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        EMS_CHECK_INT(ems_backoff_ceiling(&b), ==, want[i]);
        uint64_t d = ems_backoff_next(&b);
        EMS_CHECK_INT(d, <=, want[i]);
    }
    /* the same seed gives the same sequence; another seed another one */
    ems_backoff_t x, y, z;
    ems_backoff_init(&x, 1000, 60000, 7);
    ems_backoff_init(&y, 1000, 60000, 7);
    ems_backoff_init(&z, 1000, 60000, 8);
    int differ = 0;
    for (int i = 0; i < 20; i++) {
        uint64_t a = ems_backoff_next(&x), c = ems_backoff_next(&z);
        EMS_CHECK_INT(a, ==, ems_backoff_next(&y));
        differ |= a != c;
    }
    EMS_CHECK(differ);
    /* jitter is spread over the whole range, not clustered at the top */
    ems_backoff_t s;
    ems_backoff_init(&s, 1000, 1000, 99);
    int low = 0, high = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t d = ems_backoff_next(&s);
        EMS_CHECK_INT(d, <=, 1000);
        low += d < 250;
        high += d > 750;
    }
    EMS_CHECK_INT(low, >, 150);
    EMS_CHECK_INT(high, >, 150);
    /* reset starts over; huge attempt counts do not overflow */
    for (int i = 0; i < 200; i++)
        ems_backoff_next(&b);
    EMS_CHECK_INT(ems_backoff_ceiling(&b), ==, 60000);
    ems_backoff_reset(&b);
    EMS_CHECK_INT(ems_backoff_ceiling(&b), ==, 1000);
}

/* Truncate keeps a prefix (a link frame is aborted this way), at() patches
 * a header in place, and steal hands the bytes over with the content at the
 * start even after a consume. */
static void test_buf_truncate_at_steal(void)
{
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    size_t len = 1;
    EMS_CHECK(ems_buf_steal(&b, &len) == NULL);
    EMS_CHECK_INT(len, ==, 0);
    EMS_CHECK_INT(ems_buf_append(&b, "xxhello world", 13), ==, 0);
    ems_buf_consume(&b, 2);
    ems_buf_truncate(&b, 100); /* longer than the content: no change */
    EMS_CHECK_INT(ems_buf_len(&b), ==, 11);
    ems_buf_truncate(&b, 5);
    EMS_CHECK_INT(ems_buf_len(&b), ==, 5);
    ems_buf_at(&b, 0)[0] = 'H';
    char *s = ems_buf_steal(&b, &len);
    EMS_CHECK(s != NULL);
    EMS_CHECK_INT(len, ==, 5);
    EMS_CHECK(memcmp(s, "Hello", 5) == 0);
    free(s);
    /* the buffer is empty, keeps its cap, and is usable again */
    EMS_CHECK_INT(ems_buf_len(&b), ==, 0);
    EMS_CHECK(b.max == EMS_BUF_UNBOUNDED);
    EMS_CHECK_INT(ems_buf_append(&b, "a", 1), ==, 0);
    ems_buf_free(&b);
}

int main(void)
{
    EMS_RUN(test_buf_cap_is_hard);
    EMS_RUN(test_buf_appendf_and_reserve);
    EMS_RUN(test_buf_queue_does_not_grow);
    EMS_RUN(test_buf_truncate_at_steal);
    EMS_RUN(test_backoff_full_jitter);
    EMS_TEST_END();
}
