/* buf.c: bounded growable byte buffer (see buf.h). */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

void ems_buf_init(ems_buf_t *b, size_t max)
{
    b->data = NULL;
    b->off = b->len = b->cap = 0;
    b->max = max;
}

void ems_buf_free(ems_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

/* Makes room for n more bytes at the end. Moves the content to the front
 * first when that is enough, so a queue that is consumed as fast as it is
 * filled never grows. */
int ems_buf_reserve(ems_buf_t *b, size_t n, char **out)
{
    size_t used = b->len - b->off;
    if (n > b->max - used)
        return EMS_ENOSPC;
    if (b->cap - b->len < n) {
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, used);
            b->len = used;
            b->off = 0;
        }
        if (b->cap - b->len < n) {
            size_t want = used + n;
            size_t cap = b->cap ? b->cap : 256;
            while (cap < want)
                cap = cap > SIZE_MAX / 2 ? want : cap * 2;
            /* Never allocate far beyond the cap: the cap is the promise. */
            if (cap > b->max && want <= b->max)
                cap = b->max;
            char *d = realloc(b->data, cap);
            if (!d)
                return EMS_ENOMEM;
            b->data = d;
            b->cap = cap;
        }
    }
    *out = b->data + b->len;
    return 0;
}

void ems_buf_commit(ems_buf_t *b, size_t n)
{
    b->len += n;
}

int ems_buf_append(ems_buf_t *b, const void *p, size_t n)
{
    char *dst;
    if (n == 0)
        return 0;
    int rc = ems_buf_reserve(b, n, &dst);
    if (rc < 0)
        return rc;
    memcpy(dst, p, n);
    b->len += n;
    return 0;
}

int ems_buf_append_str(ems_buf_t *b, const char *s)
{
    return ems_buf_append(b, s, strlen(s));
}

int ems_buf_vappendf(ems_buf_t *b, const char *fmt, va_list ap)
{
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return EMS_EINVAL;
    if ((size_t)n < sizeof small)
        return ems_buf_append(b, small, (size_t)n);
    char *dst;
    /* vsnprintf writes a NUL too, so reserve one byte more but commit n. */
    int rc = ems_buf_reserve(b, (size_t)n + 1, &dst);
    if (rc < 0)
        return rc;
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int ems_buf_appendf(ems_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = ems_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void ems_buf_consume(ems_buf_t *b, size_t n)
{
    size_t used = b->len - b->off;
    if (n >= used) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
}

void ems_buf_truncate(ems_buf_t *b, size_t n)
{
    if (n < b->len - b->off)
        b->len = b->off + n;
}

void ems_buf_clear(ems_buf_t *b)
{
    b->off = b->len = 0;
}

char *ems_buf_steal(ems_buf_t *b, size_t *len)
{
    size_t used = b->len - b->off;
    if (b->off > 0)
        memmove(b->data, b->data + b->off, used);
    char *d = b->data;
    *len = used;
    b->data = NULL;
    b->off = b->len = b->cap = 0;
    return d;
}

void ems_buf_trim(ems_buf_t *b, size_t keep)
{
    b->off = b->len = 0;
    if (b->cap > keep)
        ems_buf_free(b);
}

void ems_buf_swap(ems_buf_t *a, ems_buf_t *b)
{
    ems_buf_t t = *a;
    *a = *b;
    *b = t;
}
