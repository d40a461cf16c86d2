/* store.h: the edge's store-and-forward buffer of telemetry packets.
 *
 * Every telemetry packet is appended here BEFORE it is sent, and stays until
 * the cloud acknowledges it as committed to PostgreSQL (an "ack" with seq
 * ranges) or refuses it for good (a "nack"). The buffer survives kill -9 and
 * power loss, is bounded by size and age, and gives the daemon what it needs
 * for backfill: the backlog in batches, oldest- or newest-first, without the
 * packets already sent on the current connection. docs/edge-buffer.md has
 * the design, the durability trade-offs and the measured numbers.
 *
 * Two files live side by side:
 *   PATH      SQLite database in WAL mode (plus PATH-wal while open): one row
 *             per packet, (seq, ts_ms, crc, data), with a CRC-32C over seq,
 *             ts_ms and data, checked before a packet is handed out; plus
 *             one checksummed metadata row (counters) in the same table.
 *   PATH.seq  the sequence-number file: 2 checksummed slots. It alone makes
 *             `seq` unique across restarts, kill -9, power loss and even a
 *             damaged or deleted database (see "Sequence numbers").
 * A damaged database is moved aside to PATH.corrupt (one generation kept)
 * after copying out every record whose checksum still holds; the store then
 * starts fresh, logs an error line, and seq continues above every number
 * ever handed out.
 *
 * The store keeps opaque bytes: the caller encodes the packet (with `seq`
 * inside) and hands over the text; a replay returns the same bytes. To mark
 * a resent packet, the daemon re-encodes it with "backfill": true (decode,
 * set the flag, encode) or splices `,"backfill":true` before the final `}`.
 *
 * Sequence numbers. ems_store_next_seq() says which seq the next append must
 * carry; ems_store_append() consumes it. A seq is consumed (never handed out
 * again, even if the database write then fails) before the database is
 * touched. After a clean close, or a crash of the process alone (same boot),
 * numbering continues exactly at max+1. After an unclean end in an earlier
 * boot (power loss, kernel crash) it continues at the durable reservation,
 * which may skip up to `seq_block` numbers: a gap in seq is never a lost
 * packet, a repeated seq would be. With both files gone it starts at
 * `first_seq`.
 *
 * Use from the daemon (one libuv loop, all calls on that thread):
 *   open at start; per 1 Hz tick: seq = ems_store_next_seq(), encode,
 *   ems_store_append(), send live if connected, ems_store_tick();
 *   on connect: ems_store_session_start(), then drain at a bounded rate with
 *   ems_store_backlog() (e.g. 100 packets per telemetry_batch, a few batches
 *   per second, a cap on packets sent but not yet acked);
 *   on "ack": ems_store_ack(); on "nack": ems_store_nack();
 *   the `backlog` telemetry field: ems_store_pending();
 *   once a minute with a synchronised clock: ems_store_expire();
 *   at shutdown: ems_store_close().
 *
 * Blocking: every call is synchronous file I/O. An append costs tens of
 * microseconds (one WAL write, no fsync with sync=normal); every
 * `checkpoint_pages` WAL pages one append also runs a checkpoint (two
 * fsyncs and a few hundred page writes: milliseconds on an SSD, up to some
 * 100 ms on a slow SD card). Every `seq_block` appends one append fsyncs the
 * small sequence file twice. Open after an unclean shutdown runs
 * PRAGMA quick_check, which reads the whole file. Numbers: docs/edge-buffer.md.
 *
 * Errors are negative EMS_E* codes (common/error.h); SQLite's text is logged
 * where it is mapped. Not thread-safe; one ems_store_t per buffer file, and
 * a second process opening the same file gets EMS_EAGAIN.
 */
#ifndef EMS_EDGE_STORE_H
#define EMS_EDGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_STORE_SEQ_MAX 9007199254740991ULL /* 2^53-1, the protocol's limit */
#define EMS_STORE_RECORD_MAX 65536            /* a device message is at most 64 KiB */
#define EMS_STORE_BATCH_MAX 1000              /* most records one backlog call returns */

typedef struct ems_store ems_store_t;

/* How hard a commit pushes data to the medium (config key buffer_sync).
 *   OFF:    never fsync. Survives kill -9, but power loss may corrupt the
 *           database (it is then detected, salvaged and moved aside). For
 *           tmpfs or tests.
 *   NORMAL: fsync only at checkpoints. Survives kill -9 completely; power
 *           loss can lose the last commits (up to one checkpoint interval),
 *           never corrupts. The default: no fsync per packet.
 *   FULL:   fsync the WAL at every commit. Survives power loss with nothing
 *           lost that was committed; one fsync per commit (SD card wear). */
typedef enum {
    EMS_STORE_SYNC_OFF = 0,
    EMS_STORE_SYNC_NORMAL = 1,
    EMS_STORE_SYNC_FULL = 2,
} ems_store_sync_t;

/* When open runs PRAGMA quick_check over the whole database. */
typedef enum {
    EMS_STORE_CHECK_AUTO = 0, /* only after an unclean shutdown (the default) */
    EMS_STORE_CHECK_ALWAYS = 1,
    EMS_STORE_CHECK_NEVER = 2,
} ems_store_check_t;

typedef struct {
    /* The database file; its folder must exist. Borrowed during open only. */
    const char *path;
    /* Bound of the database file (pages in use); 0 = none. Default 1 GiB. */
    uint64_t max_bytes;
    /* Bound of the number of packets; 0 = none (the default). */
    uint64_t max_packets;
    /* ems_store_expire() drops older packets; 0 = never. Default 30 days. */
    int64_t max_age_ms;
    /* The file stops growing while the file system has less free space
     * (the oldest packets make room instead). Default 64 MiB. */
    uint64_t min_free_bytes;
    ems_store_sync_t sync; /* default NORMAL */
    /* Longest time an appended packet may stay uncommitted. 0 (the
     * default) commits each append before it returns, so kill -9 loses
     * nothing. A larger value groups appends into one commit (fewer WAL
     * pages written, kinder to SD cards) at the price of losing up to that
     * much data on kill -9. Acks are always grouped: they are committed by
     * the next append or ems_store_tick(). */
    uint32_t commit_interval_ms;
    uint32_t seq_block; /* seqs reserved per fsync of PATH.seq; default 1024 */
    /* Where numbering starts when neither file holds any (first start, or
     * both PATH and PATH.seq lost). Default 1. The daemon may pass the wall
     * clock in ms when it trusts it: seqs grow by 1 per packet, the clock
     * by 1000 per second, so a device whose storage was wiped still never
     * repeats a seq the cloud already has. */
    uint64_t first_seq;
    uint32_t cache_kib;        /* SQLite page cache; default 1024 */
    uint32_t checkpoint_pages; /* WAL pages between automatic checkpoints; default 1000 */
    ems_store_check_t check;
    /* NULL: read /proc/sys/kernel/random/boot_id. Tests set another value
     * to simulate a reboot. Borrowed during open only. */
    const char *boot_id;
} ems_store_config_t;

/* One buffered packet. `data` is valid only during the callback. */
typedef struct {
    uint64_t seq;
    int64_t ts_ms; /* as given to append: the packet's timestamp */
    const void *data;
    size_t len;
} ems_store_rec_t;

/* Returns 0 to take the record (it counts as sent on this session) and go
 * on, non-zero to stop before it (it stays eligible). Must not call back
 * into the store. */
typedef int (*ems_store_rec_cb)(void *ctx, const ems_store_rec_t *rec);

typedef enum {
    EMS_STORE_OLDEST_FIRST = 0,
    EMS_STORE_NEWEST_FIRST = 1,
} ems_store_order_t;

/* Counters for metrics. The *_total ones are persisted in the database and
 * survive restarts (but not a damaged database). */
typedef struct {
    uint64_t pending;       /* packets in the buffer, sent or not */
    uint64_t next_seq;      /* what the next append carries */
    uint64_t file_bytes;    /* database file size (the WAL is extra) */
    uint64_t used_bytes;    /* pages holding data; eviction keeps this <= max_bytes */
    uint64_t acked_total;   /* deleted because the cloud committed them */
    uint64_t nacked_total;  /* deleted because the cloud refused them for good */
    uint64_t evicted_total; /* dropped unsent because the buffer was full */
    uint64_t expired_total; /* dropped unsent because older than max_age_ms */
    uint64_t corrupt_total; /* dropped because their checksum failed */
    uint64_t commits;       /* since open */
    uint64_t recoveries;    /* since open: damaged database moved aside */
} ems_store_stats_t;

/* Fills every default (path NULL). */
void ems_store_config_default(ems_store_config_t *cfg);

/* "off", "normal", "full" -> EMS_STORE_SYNC_*. Returns 0 or EMS_EINVAL. */
int ems_store_sync_parse(const char *s, ems_store_sync_t *out);

/* Opens or creates the buffer at cfg->path (and PATH.seq). A damaged or
 * foreign database is salvaged and moved aside (error logged) and a fresh
 * one started. On success *out owns the store until ems_store_close().
 * Errors: EMS_EINVAL (bad config), EMS_EAGAIN (another process holds it),
 * EMS_EIO, EMS_EPERM, EMS_ENOMEM, EMS_ECONFIG (written by a newer version). */
int ems_store_open(ems_store_t **out, const ems_store_config_t *cfg);

/* Commits what is pending, checkpoints, records a clean close in PATH.seq
 * and frees the store (always, even on error). Returns the commit's error:
 * then the close is not recorded as clean and the next open checks. */
int ems_store_close(ems_store_t *st);

/* The seq the next ems_store_append() must carry. */
uint64_t ems_store_next_seq(const ems_store_t *st);

/* Appends one packet of `len` bytes (1..EMS_STORE_RECORD_MAX, copied) with
 * seq == ems_store_next_seq() and its timestamp. Evicts the oldest packets
 * first when a bound would be exceeded (logged, counted). With
 * commit_interval_ms 0 the packet is committed when this returns.
 * Errors: EMS_EINVAL (wrong seq, bad args), EMS_EMSGSIZE, EMS_ENOSPC (seq
 * space exhausted, or nothing left to evict), EMS_EIO. When the error comes
 * from the database the seq is still consumed: the caller may send the
 * packet live, it just is not buffered. When it comes from PATH.seq
 * (EMS_EIO) the seq is not consumed and must not be sent. */
int ems_store_append(ems_store_t *st, uint64_t seq, int64_t ts_ms, const void *data, size_t len);

/* Deletes the packets in `n` inclusive ranges ranges[i][0]..ranges[i][1]
 * (the "ack" message). Ranges may overlap or name seqs that are not (or no
 * longer) buffered. *deleted (may be NULL) gets the number of packets
 * deleted. The deletion is committed with the next append, or by
 * ems_store_tick() a second later: a crash before that only makes the
 * cloud see those packets twice (it deduplicates by seq). EMS_EINVAL
 * (nothing deleted) if a range has first > last. */
int ems_store_ack(ems_store_t *st, const uint64_t (*ranges)[2], size_t n, uint64_t *deleted);

/* Deletes one packet the cloud refused for good (the "nack" message).
 * Returns 1 if it was buffered, 0 if not, or a negative error. */
int ems_store_nack(ems_store_t *st, uint64_t seq);

/* Starts a new connection: forgets what was sent on earlier ones. Every
 * buffered packet with seq < ems_store_next_seq() becomes backlog; packets
 * appended from now on are "live" (the daemon sends them itself) and are
 * never returned by ems_store_backlog() during this session. Call it again
 * to make everything unacked eligible again (e.g. when acks stop coming
 * while the link stays up, or a live send failed). */
void ems_store_session_start(ems_store_t *st);

/* Hands up to `max` (capped at EMS_STORE_BATCH_MAX) backlog packets not yet
 * sent in this session to `cb`, oldest-first or newest-first; both orders
 * may be mixed, the unsent backlog shrinks from either end. A record whose
 * checksum fails is never handed out: it is deleted, logged and counted.
 * Returns the number handed out (0: nothing left in this session) or a
 * negative error. */
int ems_store_backlog(ems_store_t *st, ems_store_order_t order, size_t max, ems_store_rec_cb cb,
                      void *ctx);

/* Packets in the buffer (sent or not): the telemetry `backlog` field. */
uint64_t ems_store_pending(const ems_store_t *st);

/* Timestamp of the oldest (lowest seq) buffered packet. 0, or EMS_ENOENT
 * when the buffer is empty. */
int ems_store_oldest_ts(ems_store_t *st, int64_t *ts_ms);

/* Drops buffered packets older than max_age_ms before `now_ms`, walking from
 * the oldest seq and stopping at the first younger one (at most 10,000 per
 * call; call again while *expired is that many). Only call it with a
 * synchronised clock: a clock years ahead would expire everything.
 * *expired (may be NULL) gets the number dropped (logged, counted). */
int ems_store_expire(ems_store_t *st, int64_t now_ms, uint64_t *expired);

/* Commits pending changes that are due: deletions (acks, nacks, expiry)
 * once they are max(commit_interval_ms, 1 s) old, appends once they are
 * commit_interval_ms old. At 1 Hz the next append usually commits them
 * first. Call once per loop tick. Returns 0 or a negative error. */
int ems_store_tick(ems_store_t *st);

/* Commits everything pending now. */
int ems_store_flush(ems_store_t *st);

void ems_store_stats(ems_store_t *st, ems_store_stats_t *out);

#endif
