/* buf.h: a growable byte buffer with a hard cap.
 *
 * Every queue in the network layer (a connection's output, the HTTP header
 * arena, a request body) is an ems_buf_t with a maximum size, so no peer can
 * make us allocate without bound: an append that would pass the cap fails
 * with EMS_ENOSPC and leaves the buffer unchanged.
 *
 * Layout: bytes [off, len) of `data` are the content; `cap` bytes are
 * allocated. Consuming from the front only moves `off`; the gap is reclaimed
 * lazily when space is needed at the end, so consume is O(1).
 *
 * The struct is public so it can be embedded without an extra allocation;
 * its fields are read-only for callers (use the functions).
 * Not thread-safe; owned by whoever embeds it.
 */
#ifndef EMS_BUF_H
#define EMS_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ems_buf {
    char *data; /* storage, NULL until the first append */
    size_t off; /* start of the content */
    size_t len; /* end of the content (content is data[off..len)) */
    size_t cap; /* bytes allocated */
    size_t max; /* hard limit on the content size (len - off) */
} ems_buf_t;

/* No cap: for buffers bounded one layer up (a link frame is checked against
 * EMS_LINK_FRAME_MAX when it is closed). */
#define EMS_BUF_UNBOUNDED SIZE_MAX
/* A static initialiser equivalent to ems_buf_init(b, max). */
#define EMS_BUF_INIT(max)                                                                          \
    {                                                                                              \
        NULL, 0, 0, 0, (max)                                                                       \
    }

/* Initialises an empty buffer whose content may never exceed `max` bytes.
 * Allocates nothing. */
void ems_buf_init(ems_buf_t *b, size_t max);

/* Releases the storage; the buffer is empty (and reusable) afterwards. */
void ems_buf_free(ems_buf_t *b);

/* Content pointer and size. The pointer is never NULL (an empty buffer
 * gives "") and is valid until the next call that may grow the buffer
 * (append, reserve, appendf). */
static inline const char *ems_buf_data(const ems_buf_t *b)
{
    return b->data ? b->data + b->off : "";
}
static inline size_t ems_buf_len(const ems_buf_t *b)
{
    return b->len - b->off;
}
/* Writable pointer to content byte `pos` (pos <= ems_buf_len), for
 * patching a header in place once its length is known. Valid like
 * ems_buf_data's pointer. */
static inline char *ems_buf_at(ems_buf_t *b, size_t pos)
{
    return b->data + b->off + pos;
}
/* Bytes that may still be appended before the cap is hit. */
static inline size_t ems_buf_room(const ems_buf_t *b)
{
    return b->max - (b->len - b->off);
}

/* Appends n bytes. Returns 0, EMS_ENOSPC (over the cap; nothing appended)
 * or EMS_ENOMEM. */
int ems_buf_append(ems_buf_t *b, const void *p, size_t n);

/* Appends a NUL-terminated string (without the NUL). Same errors. */
int ems_buf_append_str(ems_buf_t *b, const char *s);

/* printf-style append. Returns 0, EMS_ENOSPC or EMS_ENOMEM; on error
 * nothing is appended. */
int ems_buf_appendf(ems_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ems_buf_vappendf(ems_buf_t *b, const char *fmt, va_list ap);

/* Makes room for at least n more bytes and stores a pointer to that space
 * in *out; write into it, then ems_buf_commit() the number written.
 * Returns 0, EMS_ENOSPC (n would pass the cap) or EMS_ENOMEM. */
int ems_buf_reserve(ems_buf_t *b, size_t n, char **out);
void ems_buf_commit(ems_buf_t *b, size_t n);

/* Drops n bytes from the front (n <= ems_buf_len). */
void ems_buf_consume(ems_buf_t *b, size_t n);

/* Keeps the first n bytes of the content and drops the rest (n larger
 * than the content changes nothing). */
void ems_buf_truncate(ems_buf_t *b, size_t n);

/* Empties the buffer and keeps the storage for reuse. */
void ems_buf_clear(ems_buf_t *b);

/* Hands the storage to the caller, content at its start (free() it), and
 * stores the content size in *len; the buffer is empty afterwards (same
 * cap). Returns NULL when nothing was ever allocated (*len is then 0). */
char *ems_buf_steal(ems_buf_t *b, size_t *len);

/* Empties the buffer and frees the storage if more than `keep` bytes are
 * allocated: idle connections then hold little memory. */
void ems_buf_trim(ems_buf_t *b, size_t keep);

/* Swaps two buffers (content, storage and caps): used for double buffering
 * an output queue while one half is being written. */
void ems_buf_swap(ems_buf_t *a, ems_buf_t *b);

#endif
