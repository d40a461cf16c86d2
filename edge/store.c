/* store.c: the edge's store-and-forward buffer (see store.h for the contract
 * and docs/edge-buffer.md for the design and the measurements).
 *
 * The file reads top-down: small helpers (CRC-32C, little-endian, time),
 * the sequence file, SQLite plumbing (error mapping, statements,
 * transactions), opening with damage detection, salvage and recovery, and
 * last the public operations.
 *
 * Invariants worth keeping in mind:
 *   - cur is the metadata including the open transaction, committed the one
 *     on disk; a rollback copies committed over cur.
 *   - PATH.seq slot 0 holds hwm = next_seq - 1 (written before an append
 *     returns) and reserved > hwm; reserved is durable in both slots before
 *     any seq at or above the previous reservation is handed out.
 *   - Every seq at or below win_lo, or at or above win_hi, counts as sent
 *     in the current session; the unsent backlog is the open interval.
 */
#include "store.h"

#include "crc32c.h"

#include "error.h"
#include "le.h"
#include "log.h"
#include "timefmt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define STORE_APP_ID 0x454d5342   /* "EMSB": PRAGMA application_id of our files */
#define STORE_SCHEMA 1            /* PRAGMA user_version */
#define STORE_EXPIRE_SCAN 10000   /* rows one ems_store_expire() looks at */
#define STORE_DISK_CHECK_EVERY 64 /* appends between statvfs() calls */
#define STORE_SALVAGE_COMMIT 1000 /* rows per transaction while salvaging */
#define STORE_BAD 1               /* store__attach: damaged or foreign file */

/* The metadata is one more row of the packets table, under a key above
 * every seq (2^62). The newest packets and it share the rightmost leaf
 * page, so an append commit rewrites one page, not two: half the bytes
 * written to an SD card. Every packet query is bounded by SEQ_MAX so it
 * never sees this row. */
#define STORE_META_KEY 4611686018427387904LL
#define STORE_META_KEY_SQL "4611686018427387904"
#define STORE_SEQ_MAX_SQL "9007199254740991"
#define STORE_META_BYTES 64

/* ------------------------------------------------------------ helpers */

/* The record checksum covers the key and the timestamp too, so a bit flip
 * that moves a row to another seq is caught like one in the payload. */
static uint32_t store__rec_crc(uint64_t seq, int64_t ts_ms, const void *data, size_t len)
{
    uint8_t head[16];
    ems_le_put64(head, seq);
    ems_le_put64(head + 8, (uint64_t)ts_ms);
    return ems_crc32c(ems_crc32c(0, head, sizeof head), data, len);
}

static uint64_t store__mono_ms(void)
{
    return (uint64_t)ems_time_mono_ms();
}

static const char *store__fmt_ts(int64_t ms, char *buf, size_t cap)
{
    time_t s = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
    struct tm tm;
    if (!gmtime_r(&s, &tm) || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "%" PRId64 " ms", ms);
    return buf;
}

static char *store__cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

static int store__errno_code(int e)
{
    switch (e) {
    case EACCES:
    case EPERM:
    case EROFS:
        return EMS_EPERM;
    case ENOSPC:
    case EDQUOT:
        return EMS_ENOSPC;
    case ENOMEM:
        return EMS_ENOMEM;
    default:
        return EMS_EIO;
    }
}

/* ------------------------------------------------------------ the store */

typedef struct {
    uint64_t db_id; /* random, also in PATH.seq: tells a replaced file apart */
    uint64_t count; /* rows in packets */
    uint64_t max_seq;
    uint64_t acked, nacked, evicted, expired, corrupt;
} store_meta_t;

/* One slot of PATH.seq. */
typedef struct {
    uint64_t gen;      /* the newest valid slot wins */
    uint64_t hwm;      /* highest seq possibly handed out */
    uint64_t reserved; /* no seq >= reserved was handed out (durable) */
    uint64_t db_id;
    bool clean; /* written by ems_store_close: hwm is exact */
    char boot_id[40];
} store_slot_t;

enum {
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_INSERT,
    Q_DELETE,
    Q_META_GET,
    Q_META_PUT,
    Q_PAGES,
    Q_FREE,
    Q_ASC,
    Q_DESC,
    Q_OLDEST,
    Q_NTH,
    Q_SCAN,
    Q_MAXSEQ,
    Q_N
};

static const char *const store__sql[Q_N] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_INSERT] = "INSERT INTO packets(seq, ts_ms, crc, data) VALUES(?1, ?2, ?3, ?4)",
    [Q_DELETE] = "DELETE FROM packets WHERE seq BETWEEN ?1 AND ?2",
    [Q_META_GET] = "SELECT crc, data FROM packets WHERE seq = " STORE_META_KEY_SQL,
    [Q_META_PUT] = "INSERT OR REPLACE INTO packets(seq, ts_ms, crc, data) "
                   "VALUES(" STORE_META_KEY_SQL ", 0, ?1, ?2)",
    [Q_PAGES] = "PRAGMA page_count",
    [Q_FREE] = "PRAGMA freelist_count",
    [Q_ASC] = "SELECT seq, ts_ms, crc, data FROM packets WHERE seq > ?1 AND seq < ?2 "
              "ORDER BY seq ASC LIMIT ?3",
    [Q_DESC] = "SELECT seq, ts_ms, crc, data FROM packets WHERE seq > ?1 AND seq < ?2 "
               "ORDER BY seq DESC LIMIT ?3",
    [Q_OLDEST] = "SELECT seq, ts_ms FROM packets WHERE seq <= " STORE_SEQ_MAX_SQL
                 " ORDER BY seq ASC LIMIT 1",
    [Q_NTH] = "SELECT seq, ts_ms FROM packets WHERE seq <= " STORE_SEQ_MAX_SQL
              " ORDER BY seq ASC LIMIT 1 OFFSET ?1",
    [Q_SCAN] = "SELECT seq, ts_ms FROM packets WHERE seq > ?1 AND seq <= " STORE_SEQ_MAX_SQL
               " ORDER BY seq ASC LIMIT ?2",
    [Q_MAXSEQ] =
        "SELECT seq FROM packets WHERE seq <= " STORE_SEQ_MAX_SQL " ORDER BY seq DESC LIMIT 1",
};

struct ems_store {
    ems_store_config_t cfg; /* path and boot_id cleared: not kept */
    char *path, *path_wal, *path_shm, *path_seq, *path_bad, *path_bad_wal, *dir;
    char boot_id[40];

    sqlite3 *db; /* NULL after a recovery that failed: buffering is off */
    sqlite3_stmt *q[Q_N];
    uint64_t page_size;
    bool in_txn;
    bool txn_appends; /* the open transaction holds appended packets */
    uint64_t txn_start_ms;
    store_meta_t cur, committed;
    bool created; /* this open created the database */
    bool broken;  /* a statement reported corruption: recover before returning */

    int seq_fd;
    store_slot_t slot; /* as read at open */
    bool slot_valid;
    bool seq_new; /* PATH.seq did not exist: fsync the folder after its first write */
    uint64_t next_seq, reserved, gen;

    uint64_t win_lo, win_hi; /* unsent backlog of this session: (win_lo, win_hi) */

    uint64_t commits, recoveries;
    unsigned disk_countdown;
    bool disk_low;
    uint64_t bad[EMS_STORE_BATCH_MAX]; /* records with a failed checksum, per backlog call */
};

void ems_store_config_default(ems_store_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_bytes = 1ull << 30;
    cfg->max_packets = 0;
    cfg->max_age_ms = 30ll * 24 * 3600 * 1000;
    cfg->min_free_bytes = 64ull << 20;
    cfg->sync = EMS_STORE_SYNC_NORMAL;
    cfg->commit_interval_ms = 0;
    cfg->seq_block = 1024;
    cfg->cache_kib = 1024;
    cfg->checkpoint_pages = 1000;
    cfg->check = EMS_STORE_CHECK_AUTO;
}

int ems_store_sync_parse(const char *s, ems_store_sync_t *out)
{
    static const char *const names[] = {"off", "normal", "full"};
    for (int i = 0; i < 3; i++) {
        if (s && strcmp(s, names[i]) == 0) {
            *out = (ems_store_sync_t)i;
            return 0;
        }
    }
    return EMS_EINVAL;
}

/* ------------------------------------------------------------ PATH.seq
 *
 * Two 128-byte slots at offsets 0 and 4096 (different pages, so one torn
 * page write cannot damage both), each with magic, version, generation and
 * a CRC-32C. Slot 0 is rewritten in place on every append without fsync:
 * that survives kill -9 (the page cache outlives the process) and costs one
 * small pwrite. At each reservation both slots are written and fsynced, slot
 * 0 first, so at every instant at least one durable slot holds a
 * reservation above every seq handed out, whatever a power cut tears.
 */
#define SLOT_BYTES 128
#define SLOT_MAGIC 0x51534d45u /* "EMSQ" */
#define SLOT_VERSION 1u

static const off_t store__slot_off[2] = {0, 4096};

static void store__slot_encode(const store_slot_t *s, uint8_t *b)
{
    memset(b, 0, SLOT_BYTES);
    ems_le_put32(b, SLOT_MAGIC);
    ems_le_put32(b + 4, SLOT_VERSION);
    ems_le_put64(b + 8, s->gen);
    ems_le_put64(b + 16, s->hwm);
    ems_le_put64(b + 24, s->reserved);
    ems_le_put64(b + 32, s->db_id);
    ems_le_put32(b + 40, s->clean ? 1u : 0u);
    memcpy(b + 44, s->boot_id, strnlen(s->boot_id, sizeof s->boot_id - 1));
    ems_le_put32(b + SLOT_BYTES - 4, ems_crc32c(0, b, SLOT_BYTES - 4));
}

static bool store__slot_decode(const uint8_t *b, store_slot_t *s)
{
    if (ems_le_get32(b) != SLOT_MAGIC || ems_le_get32(b + 4) != SLOT_VERSION ||
        ems_le_get32(b + SLOT_BYTES - 4) != ems_crc32c(0, b, SLOT_BYTES - 4))
        return false;
    memset(s, 0, sizeof *s);
    s->gen = ems_le_get64(b + 8);
    s->hwm = ems_le_get64(b + 16);
    s->reserved = ems_le_get64(b + 24);
    s->db_id = ems_le_get64(b + 32);
    s->clean = (ems_le_get32(b + 40) & 1u) != 0;
    memcpy(s->boot_id, b + 44, sizeof s->boot_id - 1);
    /* A slot that checks out but breaks the invariants is not trusted. */
    return s->hwm <= EMS_STORE_SEQ_MAX && s->reserved > s->hwm &&
           s->reserved <= EMS_STORE_SEQ_MAX + 1;
}

static int store__fsync_dir(ems_store_t *st)
{
    int fd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return store__errno_code(errno);
    int rc = fsync(fd) == 0 ? 0 : store__errno_code(errno);
    close(fd);
    return rc;
}

static int store__seq_open(ems_store_t *st)
{
    st->seq_fd = open(st->path_seq, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (st->seq_fd < 0) {
        int e = errno;
        ems_log_error("store %s: cannot open %s: %s", st->path, st->path_seq, strerror(e));
        return store__errno_code(e);
    }
    /* The flock keeps a second daemon away from both files: two writers
     * would hand out the same seqs. */
    if (flock(st->seq_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            ems_log_error("store %s: in use by another process (%s is locked)", st->path,
                          st->path_seq);
            return EMS_EAGAIN;
        }
        ems_log_error("store %s: cannot lock %s: %s", st->path, st->path_seq, strerror(e));
        return store__errno_code(e);
    }
    struct stat sb;
    if (fstat(st->seq_fd, &sb) != 0)
        return store__errno_code(errno);
    st->seq_new = sb.st_size == 0;
    int damaged = 0;
    for (int i = 0; i < 2; i++) {
        uint8_t b[SLOT_BYTES];
        store_slot_t s;
        /* A slot never written (a crash during the very first open) is
         * not damage; one with bytes that do not check out is. */
        if (pread(st->seq_fd, b, sizeof b, store__slot_off[i]) != (ssize_t)sizeof b)
            continue;
        if (!store__slot_decode(b, &s)) {
            damaged++;
            continue;
        }
        if (!st->slot_valid || s.gen > st->slot.gen) {
            st->slot = s;
            st->slot_valid = true;
        }
        if (s.gen > st->gen)
            st->gen = s.gen;
    }
    if (damaged)
        ems_log_warn("store %s: %s: %d of 2 slots damaged%s", st->path, st->path_seq, damaged,
                     st->slot_valid ? ", using the other" : "");
    return 0;
}

static int store__seq_write(ems_store_t *st, int idx, bool clean, bool durable)
{
    /* The slot's invariant (store__slot_decode refuses a slot without it):
     * hwm = next_seq - 1 is below the reservation. */
    assert(st->next_seq >= 1 && st->reserved > st->next_seq - 1);
    store_slot_t s = {
        .gen = ++st->gen,
        .hwm = st->next_seq - 1,
        .reserved = st->reserved,
        .db_id = st->cur.db_id,
        .clean = clean,
    };
    memcpy(s.boot_id, st->boot_id, sizeof s.boot_id);
    uint8_t b[SLOT_BYTES];
    store__slot_encode(&s, b);
    ssize_t w = pwrite(st->seq_fd, b, sizeof b, store__slot_off[idx]);
    if (w != (ssize_t)sizeof b || (durable && fdatasync(st->seq_fd) != 0)) {
        int e = w < 0 || w == (ssize_t)sizeof b ? errno : EIO;
        ems_log_error("store %s: cannot write %s: %s", st->path, st->path_seq, strerror(e));
        return store__errno_code(e);
    }
    if (durable && st->seq_new) {
        st->seq_new = false;
        return store__fsync_dir(st);
    }
    return 0;
}

/* Writes both slots durably, slot 0 first (see the comment above). */
static int store__seq_sync(ems_store_t *st, bool clean)
{
    int rc = store__seq_write(st, 0, clean, true);
    return rc ? rc : store__seq_write(st, 1, clean, true);
}

/* Consumes `seq` (== next_seq): reserves a new block durably when it
 * reaches the reservation, else records it in slot 0 without fsync. On
 * failure nothing is consumed. */
static int store__seq_take(ems_store_t *st, uint64_t seq)
{
    assert(seq == st->next_seq);
    uint64_t old_reserved = st->reserved;
    st->next_seq = seq + 1;
    int rc;
    if (seq >= st->reserved) {
        uint64_t r = seq + st->cfg.seq_block;
        st->reserved = r > EMS_STORE_SEQ_MAX + 1 ? EMS_STORE_SEQ_MAX + 1 : r;
        rc = store__seq_sync(st, false);
    } else {
        rc = store__seq_write(st, 0, false, false);
    }
    if (rc) {
        st->next_seq = seq;
        st->reserved = old_reserved;
    }
    return rc;
}

static void store__read_boot_id(char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f)
        return;
    if (fgets(out, (int)cap, f))
        out[strcspn(out, "\r\n")] = '\0';
    else
        out[0] = '\0';
    fclose(f);
}

/* ------------------------------------------------------------ SQLite plumbing */

static bool store__is_corrupt(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

static int store__map(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_NOMEM:
        return EMS_ENOMEM;
    case SQLITE_FULL:
        return EMS_ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return EMS_EAGAIN;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return EMS_EPERM;
    case SQLITE_TOOBIG:
        return EMS_EMSGSIZE;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return EMS_EIO;
    default:
        return EMS_EDB;
    }
}

/* Maps an SQLite failure at the boundary: logs SQLite's own text, flags
 * corruption for recovery, returns the EMS_E* code. */
static int store__fail(ems_store_t *st, int rc, const char *what)
{
    if (store__is_corrupt(rc))
        st->broken = true;
    ems_log_error("store %s: %s: %s (%s)", st->path, what,
                  st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc), sqlite3_errstr(rc));
    return store__map(rc);
}

static int store__exec(ems_store_t *st, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return 0;
    if (store__is_corrupt(rc))
        st->broken = true;
    ems_log_error("store %s: %s: %s (%s)", st->path, what, msg ? msg : sqlite3_errmsg(st->db),
                  sqlite3_errstr(rc));
    sqlite3_free(msg);
    return store__map(rc);
}

/* Steps a statement that returns no rows (or ignores them) and resets it. */
static int store__run(ems_store_t *st, int q, const char *what)
{
    int rc = sqlite3_step(st->q[q]);
    sqlite3_reset(st->q[q]);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return store__fail(st, rc, what);
    return 0;
}

/* One integer from a one-row statement (a PRAGMA or an aggregate). A NULL
 * result reads as 0. */
static int store__scalar(ems_store_t *st, int q, int64_t *out, const char *what)
{
    int rc = sqlite3_step(st->q[q]);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st->q[q], 0) : 0;
    sqlite3_reset(st->q[q]);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return store__fail(st, rc, what);
    return 0;
}

/* The metadata row: eight little-endian u64, checksummed like a packet. */
static void store__meta_encode(const store_meta_t *m, uint8_t *b)
{
    const uint64_t v[8] = {m->db_id,  m->count,   m->max_seq, m->acked,
                           m->nacked, m->evicted, m->expired, m->corrupt};
    for (size_t i = 0; i < 8; i++)
        ems_le_put64(b + 8 * i, v[i]);
}

/* Parses a metadata row; false if its size or checksum is wrong. */
static bool store__meta_decode(const void *data, int len, uint32_t crc, store_meta_t *m)
{
    if (!data || len != STORE_META_BYTES ||
        store__rec_crc((uint64_t)STORE_META_KEY, 0, data, STORE_META_BYTES) != crc)
        return false;
    const uint8_t *b = data;
    m->db_id = ems_le_get64(b);
    m->count = ems_le_get64(b + 8);
    m->max_seq = ems_le_get64(b + 16);
    m->acked = ems_le_get64(b + 24);
    m->nacked = ems_le_get64(b + 32);
    m->evicted = ems_le_get64(b + 40);
    m->expired = ems_le_get64(b + 48);
    m->corrupt = ems_le_get64(b + 56);
    return m->max_seq <= EMS_STORE_SEQ_MAX;
}

static int store__meta_put(ems_store_t *st)
{
    uint8_t b[STORE_META_BYTES];
    store__meta_encode(&st->cur, b);
    sqlite3_stmt *s = st->q[Q_META_PUT];
    sqlite3_bind_int64(s, 1, store__rec_crc((uint64_t)STORE_META_KEY, 0, b, sizeof b));
    sqlite3_bind_blob(s, 2, b, sizeof b, SQLITE_TRANSIENT);
    return store__run(st, Q_META_PUT, "update meta");
}

static int store__begin(ems_store_t *st)
{
    if (st->in_txn)
        return 0;
    if (!st->db)
        return EMS_EIO;
    int rc = store__run(st, Q_BEGIN, "begin");
    if (rc)
        return rc;
    st->in_txn = true;
    st->txn_appends = false;
    st->txn_start_ms = store__mono_ms();
    return 0;
}

/* Drops the open transaction after a failure and returns the metadata to
 * what is on disk. */
static void store__abort(ems_store_t *st, const char *why)
{
    if (!st->in_txn)
        return;
    if (st->db && !sqlite3_get_autocommit(st->db)) {
        sqlite3_step(st->q[Q_ROLLBACK]);
        sqlite3_reset(st->q[Q_ROLLBACK]);
    }
    uint64_t lost =
        st->cur.max_seq > st->committed.max_seq ? st->cur.max_seq - st->committed.max_seq : 0;
    ems_log_warn("store %s: %s: rolled back the uncommitted changes (%" PRIu64
                 " appended packets among them)",
                 st->path, why, lost);
    st->in_txn = false;
    st->cur = st->committed;
}

static int store__commit(ems_store_t *st)
{
    if (!st->in_txn)
        return 0;
    int rc = store__meta_put(st);
    if (!rc)
        rc = store__run(st, Q_COMMIT, "commit");
    if (rc) {
        store__abort(st, "commit failed");
        return rc;
    }
    st->in_txn = false;
    st->committed = st->cur;
    st->commits++;
    return 0;
}

/* Commit policy. An append commits when commit_interval_ms is 0 or the
 * open transaction is that old. Deletions (acks, nacks, expiry, damaged
 * records) never force a commit of their own: they ride along with the
 * next append's commit, or ems_store_tick() commits them once they are
 * max(commit_interval_ms, 1 s) old. Losing them in a crash only makes the
 * cloud see those packets again, and at 1 Hz this halves the commits. */
#define STORE_DELETE_COMMIT_MS 1000u

static int store__maybe_commit(ems_store_t *st)
{
    if (!st->in_txn)
        return 0;
    uint32_t iv = st->cfg.commit_interval_ms;
    uint64_t due = st->txn_appends ? iv : iv > STORE_DELETE_COMMIT_MS ? iv : STORE_DELETE_COMMIT_MS;
    if (store__mono_ms() - st->txn_start_ms >= due)
        return store__commit(st);
    return 0;
}

static int store__pages(ems_store_t *st, uint64_t *used, uint64_t *freeb)
{
    int64_t pc = 0, fc = 0;
    int rc = store__scalar(st, Q_PAGES, &pc, "page_count");
    if (!rc)
        rc = store__scalar(st, Q_FREE, &fc, "freelist_count");
    if (rc)
        return rc;
    if (fc > pc)
        fc = pc;
    *used = (uint64_t)(pc - fc) * st->page_size;
    *freeb = (uint64_t)fc * st->page_size;
    return 0;
}

/* Deletes seqs a..b (clamped to 1..SEQ_MAX, so never the metadata row);
 * *n gets the number of rows deleted. */
static int store__delete_range(ems_store_t *st, uint64_t a, uint64_t b, uint64_t *n)
{
    /* Deletions change cur, so they belong to the open transaction: a
     * rollback must be able to undo them. */
    assert(st->in_txn);
    *n = 0;
    if (a < 1)
        a = 1;
    if (b > EMS_STORE_SEQ_MAX)
        b = EMS_STORE_SEQ_MAX;
    if (a > b)
        return 0;
    sqlite3_stmt *s = st->q[Q_DELETE];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)a);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)b);
    int rc = store__run(st, Q_DELETE, "delete");
    *n = rc ? 0 : (uint64_t)sqlite3_changes64(st->db);
    if (*n > st->cur.count) {
        ems_log_warn("store %s: deleted %" PRIu64 " packets but counted %" PRIu64, st->path, *n,
                     st->cur.count);
        *n = st->cur.count;
    }
    st->cur.count -= *n;
    return rc;
}

/* ------------------------------------------------------------ opening */

static void store__detach(ems_store_t *st)
{
    for (int i = 0; i < Q_N; i++) {
        sqlite3_finalize(st->q[i]);
        st->q[i] = NULL;
    }
    if (st->db) {
        int rc = sqlite3_close(st->db);
        if (rc != SQLITE_OK)
            ems_log_error("store %s: close: %s", st->path, sqlite3_errstr(rc));
    }
    st->db = NULL;
    st->in_txn = false;
}

static uint64_t store__random_id(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
        v = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ store__mono_ms();
    v &= EMS_STORE_SEQ_MAX; /* fits an SQLite integer and a JSON number */
    return v ? v : 1;
}

static int store__create(ems_store_t *st)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "BEGIN;"
             "PRAGMA application_id = %d;"
             "PRAGMA user_version = %d;"
             "CREATE TABLE packets ("
             " seq INTEGER PRIMARY KEY," /* the rowid: no second index */
             " ts_ms INTEGER NOT NULL,"
             " crc INTEGER NOT NULL," /* CRC-32C over seq, ts_ms, data */
             " data BLOB NOT NULL);",
             STORE_APP_ID, STORE_SCHEMA);
    int rc = store__exec(st, sql, "create schema");
    if (!rc) {
        /* The metadata row, with the statement that later updates it. */
        rc = sqlite3_prepare_v2(st->db, store__sql[Q_META_PUT], -1, &st->q[Q_META_PUT], NULL);
        if (rc != SQLITE_OK) {
            rc = store__fail(st, rc, "create schema");
        } else {
            memset(&st->cur, 0, sizeof st->cur);
            st->cur.db_id = store__random_id();
            rc = store__meta_put(st);
        }
        sqlite3_finalize(st->q[Q_META_PUT]);
        st->q[Q_META_PUT] = NULL;
    }
    if (!rc)
        rc = store__exec(st, "COMMIT", "create schema");
    if (rc) {
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    st->created = true;
    return 0;
}

/* Runs one statement that yields one integer, without a prepared handle. */
static int store__pragma_int(ems_store_t *st, const char *sql, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    return rc;
}

/* PRAGMA quick_check: the structure of every page (not our checksums,
 * which are checked whenever a record is read). */
static int store__quick_check(ems_store_t *st, char *why, size_t cap)
{
    uint64_t t0 = store__mono_ms();
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA quick_check(3)", -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    bool ok = false;
    size_t n = (size_t)snprintf(why, cap, "integrity check failed:");
    if (rc == SQLITE_ROW) {
        const char *txt = (const char *)sqlite3_column_text(s, 0);
        ok = txt && strcmp(txt, "ok") == 0;
        /* The first lines of the report say what and where. */
        for (int i = 0; i < 3 && rc == SQLITE_ROW && n < cap; i++) {
            txt = (const char *)sqlite3_column_text(s, 0);
            n += (size_t)snprintf(why + n, cap - n, " %s", txt ? txt : "(null)");
            rc = sqlite3_step(s);
        }
        rc = SQLITE_ROW;
        for (char *c = why; *c; c++)
            if (*c == '\n')
                *c = ' '; /* one log line */
    } else {
        snprintf(why + n, cap - n, " %s", sqlite3_errstr(rc));
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && !store__is_corrupt(rc) && (rc & 0xff) != SQLITE_ERROR)
        return store__fail(st, rc, "quick_check");
    ems_log_info("store %s: integrity check: %s (%" PRIu64 " ms)", st->path, ok ? "ok" : "FAILED",
                 store__mono_ms() - t0);
    return ok ? 0 : STORE_BAD;
}

/* Opens PATH, creates the schema if the file is new, prepares the
 * statements and reads the metadata. Returns 0, STORE_BAD (the reason is
 * logged; the caller moves the file aside) or a negative error. */
static int store__attach(ems_store_t *st, bool check, bool after_quarantine)
{
    char why[256] = "";
    int rc = sqlite3_open_v2(
        st->path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int e = store__fail(st, rc, "open");
        store__detach(st);
        return e;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_db_config(st->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_busy_timeout(st->db, 0);

    /* EXCLUSIVE before the first access keeps the WAL index in heap memory:
     * no -shm file, no mmap, one writer (we also hold the flock). */
    static const char *const sync_names[] = {"OFF", "NORMAL", "FULL"};
    char sql[512];
    snprintf(sql, sizeof sql,
             "PRAGMA locking_mode = EXCLUSIVE;"
             "PRAGMA cell_size_check = ON;"
             "PRAGMA cache_size = -%u;"
             "PRAGMA temp_store = MEMORY;",
             st->cfg.cache_kib);
    if ((rc = store__exec(st, sql, "configure")) != 0)
        goto failed;

    int64_t tables = 0;
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    bool wal = rc == SQLITE_ROW && sqlite3_column_text(s, 0) &&
               strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
    sqlite3_finalize(s);
    if (store__is_corrupt(rc)) {
        snprintf(why, sizeof why, "not a database (%s)", sqlite3_errstr(rc));
        goto bad;
    }
    if ((rc & 0xff) == SQLITE_BUSY) {
        ems_log_error("store %s: in use by another process", st->path);
        return EMS_EAGAIN;
    }
    if (rc != SQLITE_ROW)
        return store__fail(st, rc, "journal_mode");
    if (!wal)
        ems_log_warn("store %s: WAL mode refused by the file system; using a rollback journal",
                     st->path);

    snprintf(sql, sizeof sql,
             "PRAGMA synchronous = %s;"
             "PRAGMA wal_autocheckpoint = %u;"
             "PRAGMA journal_size_limit = %llu;",
             sync_names[st->cfg.sync], st->cfg.checkpoint_pages,
             (unsigned long long)st->cfg.checkpoint_pages * 4096ull);
    if ((rc = store__exec(st, sql, "configure")) != 0)
        goto failed;

    rc = store__pragma_int(st, "SELECT count(*) FROM sqlite_master", &tables);
    if (store__is_corrupt(rc)) {
        snprintf(why, sizeof why, "schema unreadable (%s)", sqlite3_errstr(rc));
        goto bad;
    }
    if (rc != SQLITE_OK)
        return store__fail(st, rc, "read schema");
    if (tables == 0) {
        if ((rc = store__create(st)) != 0) {
            if (!st->broken)
                return rc;
            snprintf(why, sizeof why, "cannot create the schema");
            goto bad;
        }
        if (!after_quarantine && st->slot_valid && st->slot.db_id != 0)
            ems_log_error("store %s: the buffer database is missing or empty although %s says "
                          "it existed: the packets it held are lost; starting a new one",
                          st->path, st->path_seq);
    } else {
        int64_t app = 0, ver = 0;
        store__pragma_int(st, "PRAGMA application_id", &app);
        store__pragma_int(st, "PRAGMA user_version", &ver);
        if (app != STORE_APP_ID) {
            snprintf(why, sizeof why, "not an ems buffer (application_id %" PRId64 ")", app);
            goto bad;
        }
        if (ver > STORE_SCHEMA) {
            ems_log_error("store %s: written by a newer version (schema %" PRId64
                          ", this one reads %d); not touching it",
                          st->path, ver, STORE_SCHEMA);
            return EMS_ECONFIG;
        }
        if (ver != STORE_SCHEMA) {
            snprintf(why, sizeof why, "unknown schema version %" PRId64, ver);
            goto bad;
        }
    }

    for (int i = 0; i < Q_N; i++) {
        rc = sqlite3_prepare_v3(st->db, store__sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i],
                                NULL);
        if (rc != SQLITE_OK) {
            /* A missing table or column is damage too (SQLITE_ERROR). */
            if (store__is_corrupt(rc) || (rc & 0xff) == SQLITE_ERROR) {
                snprintf(why, sizeof why, "schema damaged (%s)", sqlite3_errmsg(st->db));
                goto bad;
            }
            return store__fail(st, rc, "prepare");
        }
    }

    sqlite3_stmt *m = st->q[Q_META_GET];
    rc = sqlite3_step(m);
    if (rc == SQLITE_ROW) {
        store_meta_t v;
        bool ok = store__meta_decode(sqlite3_column_blob(m, 1), sqlite3_column_bytes(m, 1),
                                     (uint32_t)sqlite3_column_int64(m, 0), &v);
        sqlite3_reset(m);
        if (!ok) {
            snprintf(why, sizeof why, "metadata checksum mismatch");
            goto bad;
        }
        st->cur = st->committed = v;
    } else {
        sqlite3_reset(m);
        snprintf(why, sizeof why, "metadata %s",
                 rc == SQLITE_DONE ? "missing" : sqlite3_errstr(rc));
        if (rc == SQLITE_DONE || store__is_corrupt(rc))
            goto bad;
        return store__fail(st, rc, "read meta");
    }

    if (check && !st->created) {
        rc = store__quick_check(st, why, sizeof why);
        if (rc == STORE_BAD)
            goto bad;
        if (rc)
            return rc;
    }
    int64_t ps = 0;
    if ((rc = store__pragma_int(st, "PRAGMA page_size", &ps)) != SQLITE_OK)
        return store__fail(st, rc, "page_size");
    st->page_size = ps > 0 ? (uint64_t)ps : 4096;
    st->broken = false;
    return 0;

failed:
    /* store__exec logged SQLite's text; damage goes the STORE_BAD way. */
    if (!st->broken)
        return rc;
    snprintf(why, sizeof why, "%s", sqlite3_errmsg(st->db));
bad:
    ems_log_error("store %s: damaged: %s", st->path, why);
    st->broken = false;
    return STORE_BAD;
}

/* Moves PATH and PATH-wal to PATH.corrupt(-wal), replacing an older pair so
 * the disk never fills with them. The WAL must go too: a stale WAL next to
 * a new database would be replayed into it. */
static int store__quarantine(ems_store_t *st)
{
    unlink(st->path_bad);
    unlink(st->path_bad_wal);
    if (rename(st->path, st->path_bad) != 0 && errno != ENOENT) {
        ems_log_error("store %s: cannot move the damaged file aside: %s", st->path,
                      strerror(errno));
        return store__errno_code(errno);
    }
    if (rename(st->path_wal, st->path_bad_wal) != 0 && errno != ENOENT &&
        unlink(st->path_wal) != 0 && errno != ENOENT) {
        ems_log_error("store %s: cannot remove %s: %s", st->path, st->path_wal, strerror(errno));
        return store__errno_code(errno);
    }
    unlink(st->path_shm);
    store__fsync_dir(st);
    ems_log_error("store %s: moved the damaged buffer aside to %s; starting a fresh one", st->path,
                  st->path_bad);
    return 0;
}

/* Copies one row of the damaged file into the new one if its checksum
 * holds. Returns 1 copied, 0 dropped, or a negative error of the insert. */
static int store__salvage_row(ems_store_t *st, sqlite3_stmt *src, sqlite3_stmt *ins)
{
    int64_t seq = sqlite3_column_int64(src, 0);
    int64_t ts = sqlite3_column_int64(src, 1);
    uint32_t crc = (uint32_t)sqlite3_column_int64(src, 2);
    const void *data = sqlite3_column_blob(src, 3);
    int len = sqlite3_column_bytes(src, 3);
    if (seq <= 0 || (uint64_t)seq > EMS_STORE_SEQ_MAX || !data || len <= 0 ||
        len > EMS_STORE_RECORD_MAX || sqlite3_column_type(src, 3) != SQLITE_BLOB ||
        store__rec_crc((uint64_t)seq, ts, data, (size_t)len) != crc)
        return 0;
    sqlite3_bind_int64(ins, 1, seq);
    sqlite3_bind_int64(ins, 2, ts);
    sqlite3_bind_int64(ins, 3, crc);
    sqlite3_bind_blob(ins, 4, data, len, SQLITE_STATIC);
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    if (rc != SQLITE_DONE)
        return store__fail(st, rc, "salvage insert");
    if (sqlite3_changes64(st->db) != 1)
        return 0; /* a damaged tree can yield a key twice */
    st->cur.count++;
    if ((uint64_t)seq > st->cur.max_seq)
        st->cur.max_seq = (uint64_t)seq;
    return 1;
}

typedef struct {
    uint64_t copied, dropped;
    uint64_t lo, hi; /* lowest and highest seq read in the last scan (0: none) */
    bool full;       /* max_packets reached */
} store_salvage_t;

/* Copies the rows one scan of the damaged file yields (`src` bound to the
 * open range (a, b)) until its end, a damaged page, or max_packets.
 * Returns the SQLite code that ended the scan, or a negative EMS_E* error
 * of the fresh database. */
static int store__salvage_scan(ems_store_t *st, sqlite3_stmt *src, sqlite3_stmt *ins, uint64_t a,
                               uint64_t b, store_salvage_t *sv)
{
    sqlite3_reset(src);
    sqlite3_bind_int64(src, 1, (sqlite3_int64)a);
    sqlite3_bind_int64(src, 2, (sqlite3_int64)b);
    sv->lo = sv->hi = 0;
    int rc;
    while ((rc = sqlite3_step(src)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(src, 0);
        if (seq > 0) {
            if (!sv->lo || (uint64_t)seq < sv->lo)
                sv->lo = (uint64_t)seq;
            if ((uint64_t)seq > sv->hi)
                sv->hi = (uint64_t)seq;
        }
        if (st->cfg.max_packets && st->cur.count >= st->cfg.max_packets) {
            sv->full = true;
            return SQLITE_DONE;
        }
        int r = st->in_txn ? 0 : store__begin(st);
        if (!r)
            r = store__salvage_row(st, src, ins);
        if (r < 0)
            return r;
        if (r == 1)
            sv->copied++;
        else
            sv->dropped++;
        if ((sv->copied + sv->dropped) % STORE_SALVAGE_COMMIT == 0 && (r = store__commit(st)) != 0)
            return r;
    }
    return rc;
}

/* Copies every record whose checksum holds from PATH.corrupt into the
 * fresh database: ascending until the first unreadable page, descending
 * from the end down to it, then from 63 points spread over the gap between
 * (a damaged interior page hides a subtree; seeks past it still work).
 * What lies on damaged pages is lost; nothing unverified is copied.
 * writable_schema (with query_only, so nothing is written) makes SQLite
 * read a truncated file up to its end instead of refusing it whole. */
static void store__salvage(ems_store_t *st)
{
    sqlite3 *bad = NULL;
    sqlite3_stmt *q[2] = {NULL, NULL}, *ins = NULL;
    store_salvage_t sv = {0};
    const char *stop = "end of file";
    int rc = sqlite3_open_v2(st->path_bad, &bad, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(bad,
                          "PRAGMA locking_mode = EXCLUSIVE; PRAGMA cell_size_check = ON;"
                          "PRAGMA query_only = 1; PRAGMA writable_schema = ON;",
                          NULL, NULL, NULL);
    uint64_t old_max = 0;
    if (rc == SQLITE_OK) {
        /* The old high-water mark bounds the probes, and helps numbering
         * if PATH.seq is gone too. */
        sqlite3_stmt *m = NULL;
        store_meta_t old;
        if (sqlite3_prepare_v2(bad, store__sql[Q_META_GET], -1, &m, NULL) == SQLITE_OK &&
            sqlite3_step(m) == SQLITE_ROW &&
            store__meta_decode(sqlite3_column_blob(m, 1), sqlite3_column_bytes(m, 1),
                               (uint32_t)sqlite3_column_int64(m, 0), &old)) {
            old_max = old.max_seq;
            if (old.max_seq > st->cur.max_seq)
                st->cur.max_seq = old.max_seq;
        }
        sqlite3_finalize(m);
        rc = sqlite3_prepare_v2(bad,
                                "SELECT seq, ts_ms, crc, data FROM packets WHERE seq > ?1 "
                                "AND seq < ?2 ORDER BY seq ASC",
                                -1, &q[0], NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(bad,
                                "SELECT seq, ts_ms, crc, data FROM packets WHERE seq > ?1 "
                                "AND seq < ?2 ORDER BY seq DESC",
                                -1, &q[1], NULL);
    if (rc == SQLITE_OK &&
        sqlite3_prepare_v2(st->db,
                           "INSERT OR IGNORE INTO packets(seq, ts_ms, crc, data) "
                           "VALUES(?1, ?2, ?3, ?4)",
                           -1, &ins, NULL) != SQLITE_OK) {
        store__fail(st, sqlite3_errcode(st->db), "prepare salvage");
        goto out;
    }
    if (rc != SQLITE_OK) {
        ems_log_error("store %s: nothing could be salvaged from %s: %s", st->path, st->path_bad,
                      bad ? sqlite3_errmsg(bad) : sqlite3_errstr(rc));
        goto out;
    }
    const uint64_t top = EMS_STORE_SEQ_MAX + 1;
    rc = store__salvage_scan(st, q[0], ins, 0, top, &sv);
    if (rc == SQLITE_DONE || rc < 0)
        goto out;
    stop = sqlite3_errstr(rc);
    uint64_t gap_lo = sv.hi; /* read up to here ascending */
    rc = store__salvage_scan(st, q[1], ins, gap_lo, top, &sv);
    if (rc == SQLITE_DONE || rc < 0)
        goto out;
    uint64_t gap_hi = sv.lo ? sv.lo : old_max + 1; /* and down to here descending */
    for (uint64_t k = 1; k < 64 && gap_hi > gap_lo + 64 && !sv.full; k++) {
        uint64_t span = gap_hi - gap_lo;
        uint64_t a = gap_lo + span / 64 * k, b = k == 63 ? gap_hi : gap_lo + span / 64 * (k + 1);
        rc = store__salvage_scan(st, q[0], ins, a, b, &sv);
        if (rc < 0)
            goto out;
    }
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(q[0]);
    sqlite3_finalize(q[1]);
    sqlite3_close(bad);
    ems_log_warn("store %s: salvaged %" PRIu64 " packets from %s (%" PRIu64
                 " dropped: checksum failed; first scan stopped at: %s%s)",
                 st->path, sv.copied, st->path_bad, sv.dropped, stop,
                 sv.full ? "; max_packets reached" : "");
    st->cur.corrupt += sv.dropped;
    /* One commit also persists the counters and max_seq taken over. */
    if (st->db && store__begin(st) == 0)
        store__commit(st);
}

/* A statement reported a damaged database while running: move it aside,
 * salvage, start fresh. next_seq is in memory and PATH.seq, so numbering
 * goes on unharmed. If even a fresh database fails, buffering stays off
 * (st->db NULL) and calls return EMS_EIO until the next open. */
static void store__recover(ems_store_t *st)
{
    st->broken = false;
    ems_log_error("store %s: the database reported damage while running", st->path);
    store__abort(st, "damaged database");
    store_meta_t keep = st->cur;
    store__detach(st);
    st->created = false;
    int rc = store__quarantine(st);
    if (!rc)
        rc = store__attach(st, false, true);
    if (rc) {
        store__detach(st);
        ems_log_error("store %s: cannot start a fresh buffer (%s): buffering is off until "
                      "restart",
                      st->path, rc == STORE_BAD ? "damaged" : ems_strerror(rc));
        return;
    }
    /* Lifetime counters carry over; the damaged rows are accounted by the
     * salvage. */
    st->cur.acked = keep.acked;
    st->cur.nacked = keep.nacked;
    st->cur.evicted = keep.evicted;
    st->cur.expired = keep.expired;
    st->cur.corrupt = keep.corrupt;
    if (keep.max_seq > st->cur.max_seq)
        st->cur.max_seq = keep.max_seq;
    st->committed = st->cur;
    store__salvage(st);
    st->recoveries++;
    store__seq_sync(st, false); /* the new db_id */
}

/* After an operation: if the database reported damage, recover (move it
 * aside, salvage, start fresh) and say whether the operation should run
 * once more on the fresh database. */
static bool store__recovered_retry(ems_store_t *st, int rc)
{
    if (!st->broken)
        return false;
    store__recover(st);
    return rc < 0 && st->db != NULL;
}

/* Damage found by the retry itself is recovered too, but not retried. */
static void store__settle(ems_store_t *st)
{
    if (st->broken)
        store__recover(st);
}

/* Where numbering continues (see store.h, "Sequence numbers"). */
static int store__init_seq(ems_store_t *st)
{
    int64_t maxrow = 0;
    if (st->db && store__scalar(st, Q_MAXSEQ, &maxrow, "max(seq)") != 0)
        maxrow = 0;
    uint64_t db_max = st->cur.max_seq;
    if (maxrow > 0 && (uint64_t)maxrow > db_max)
        db_max = (uint64_t)maxrow;
    uint64_t next;
    if (st->slot_valid) {
        const store_slot_t *s = &st->slot;
        bool same_boot = st->boot_id[0] && strcmp(s->boot_id, st->boot_id) == 0;
        if (s->clean || same_boot) {
            next = s->hwm + 1;
        } else {
            next = s->reserved;
            ems_log_warn("store %s: the last run ended without a clean close in an earlier boot "
                         "(power loss?): seq continues at the reservation %" PRIu64
                         " (up to %" PRIu64 " numbers may be skipped, none repeated)",
                         st->path, next, (uint64_t)st->cfg.seq_block);
        }
        if (db_max + 1 > next)
            next = db_max + 1;
        st->reserved = s->reserved > next ? s->reserved : next;
        if (s->db_id && st->cur.db_id != s->db_id && !st->created && !st->recoveries)
            ems_log_warn("store %s: the database belongs to another sequence file (id %" PRIu64
                         ", expected %" PRIu64 "); adopting it",
                         st->path, st->cur.db_id, s->db_id);
    } else if (db_max > 0) {
        next = db_max + 1 + st->cfg.seq_block;
        st->reserved = next;
        ems_log_warn("store %s: %s is missing or damaged: seq continues at %" PRIu64
                     ", skipping %u numbers in case the last ones were sent but not stored",
                     st->path, st->path_seq, next, st->cfg.seq_block);
    } else {
        next = st->cfg.first_seq ? st->cfg.first_seq : 1;
        st->reserved = next;
    }
    if (next > EMS_STORE_SEQ_MAX + 1)
        next = EMS_STORE_SEQ_MAX + 1;
    st->next_seq = next;
    /* Mark the run as started. Without fsync is enough: reserved >= next,
     * and the first seq at the reservation fsyncs a new one before it is
     * handed out. A new or replaced database id must be durable though. */
    if (!st->slot_valid || st->slot.db_id != st->cur.db_id)
        return store__seq_sync(st, false);
    return store__seq_write(st, 0, false, false);
}

static void store__free(ems_store_t *st)
{
    store__detach(st);
    if (st->seq_fd >= 0)
        close(st->seq_fd); /* releases the flock */
    free(st->path);
    free(st->path_wal);
    free(st->path_shm);
    free(st->path_seq);
    free(st->path_bad);
    free(st->path_bad_wal);
    free(st->dir);
    free(st);
}

int ems_store_open(ems_store_t **out, const ems_store_config_t *cfg)
{
    if (!out)
        return EMS_EINVAL;
    *out = NULL;
    if (!cfg || !cfg->path || !cfg->path[0] || strlen(cfg->path) > 4000 || cfg->seq_block == 0 ||
        (unsigned)cfg->sync > EMS_STORE_SYNC_FULL || (unsigned)cfg->check > EMS_STORE_CHECK_NEVER ||
        (cfg->max_bytes && cfg->max_bytes < (64u << 10)) || cfg->max_age_ms < 0 ||
        cfg->first_seq > EMS_STORE_SEQ_MAX)
        return EMS_EINVAL;
    ems_store_t *st = calloc(1, sizeof *st);
    if (!st)
        return EMS_ENOMEM;
    st->cfg = *cfg;
    st->cfg.path = NULL;
    st->cfg.boot_id = NULL;
    if (st->cfg.checkpoint_pages == 0)
        st->cfg.checkpoint_pages = 1000;
    if (st->cfg.cache_kib == 0)
        st->cfg.cache_kib = 1024;
    st->seq_fd = -1;
    st->path = store__cat(cfg->path, "");
    st->path_wal = store__cat(cfg->path, "-wal");
    st->path_shm = store__cat(cfg->path, "-shm");
    st->path_seq = store__cat(cfg->path, ".seq");
    st->path_bad = store__cat(cfg->path, ".corrupt");
    st->path_bad_wal = store__cat(cfg->path, ".corrupt-wal");
    st->dir = store__cat(cfg->path, "");
    int rc = EMS_ENOMEM;
    if (!st->path || !st->path_wal || !st->path_shm || !st->path_seq || !st->path_bad ||
        !st->path_bad_wal || !st->dir)
        goto fail;
    char *slash = strrchr(st->dir, '/');
    if (!slash)
        strcpy(st->dir, ".");
    else
        slash[slash == st->dir ? 1 : 0] = '\0';
    if (cfg->boot_id)
        snprintf(st->boot_id, sizeof st->boot_id, "%s", cfg->boot_id);
    else
        store__read_boot_id(st->boot_id, sizeof st->boot_id);

    if ((rc = store__seq_open(st)) != 0)
        goto fail;
    bool unclean = !st->slot_valid || !st->slot.clean;
    bool check =
        cfg->check == EMS_STORE_CHECK_ALWAYS || (cfg->check == EMS_STORE_CHECK_AUTO && unclean);
    rc = store__attach(st, check, false);
    if (rc == STORE_BAD) {
        store__detach(st);
        st->created = false;
        rc = store__quarantine(st);
        if (!rc)
            rc = store__attach(st, false, true);
        if (rc == STORE_BAD)
            rc = EMS_EIO;
        if (!rc) {
            st->recoveries++;
            store__salvage(st);
        }
    }
    if (rc)
        goto fail;
    if ((rc = store__init_seq(st)) != 0)
        goto fail;
    st->win_lo = 0;
    st->win_hi = st->next_seq;
    uint64_t used = 0, freeb = 0;
    store__pages(st, &used, &freeb);
    ems_log_info("store %s: %s, %" PRIu64 " packets pending, next seq %" PRIu64
                 ", %.1f MiB in use, sync=%s, commit every %u ms",
                 st->path,
                 st->created ? "created"
                             : (unclean ? "opened after an unclean shutdown" : "opened"),
                 st->cur.count, st->next_seq, (double)used / 1048576.0,
                 (const char *[]){"off", "normal", "full"}[cfg->sync], cfg->commit_interval_ms);
    *out = st;
    return 0;
fail:
    store__free(st);
    return rc;
}

int ems_store_close(ems_store_t *st)
{
    if (!st)
        return 0;
    int rc = st->db ? store__commit(st) : 0;
    bool had_db = st->db != NULL;
    store__detach(st); /* the last connection checkpoints and removes the WAL */
    /* hwm is exact now: record a clean close, so the next run neither skips
     * numbers nor checks the whole file. After a failed commit the next
     * open checks it anyway. reserved drops to next_seq so that the next
     * run's first append writes a durable reservation (and clean = 0)
     * before it hands out anything: a stale "clean" slot surviving a power
     * cut must never vouch for numbers handed out after it. */
    st->reserved = st->next_seq;
    int src = store__seq_sync(st, rc == 0 && had_db);
    if (!rc)
        rc = src;
    store__free(st);
    return rc;
}

uint64_t ems_store_next_seq(const ems_store_t *st)
{
    return st->next_seq;
}

uint64_t ems_store_pending(const ems_store_t *st)
{
    return st->cur.count;
}

/* Picks how many rows one eviction removes: enough that a full buffer logs
 * and deletes in batches (about 0.4 % of it), not once per packet. */
static uint64_t store__evict_batch(const ems_store_t *st)
{
    uint64_t n = st->cur.count / 256;
    return n < 16 ? 16 : n;
}

static bool store__disk_low(ems_store_t *st)
{
    if (st->disk_countdown > 0) {
        st->disk_countdown--;
        return st->disk_low;
    }
    st->disk_countdown = STORE_DISK_CHECK_EVERY;
    struct statvfs v;
    if (statvfs(st->dir, &v) != 0)
        return st->disk_low;
    bool low = (uint64_t)v.f_bavail * v.f_frsize < st->cfg.min_free_bytes;
    if (low && !st->disk_low)
        ems_log_warn("store %s: less than %" PRIu64 " MiB free on the file system: the buffer "
                     "stops growing and evicts its oldest packets instead",
                     st->path, st->cfg.min_free_bytes >> 20);
    st->disk_low = low;
    return low;
}

/* Deletes the `n` oldest packets because the buffer is full. */
static int store__evict(ems_store_t *st, uint64_t n, const char *why)
{
    int64_t first = 0, first_ts = 0, last = INT64_MAX, last_ts = 0;
    sqlite3_stmt *s = st->q[Q_OLDEST];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        first = sqlite3_column_int64(s, 0);
        first_ts = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store__fail(st, rc, "evict");
    s = st->q[Q_NTH];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)(n - 1));
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        last = sqlite3_column_int64(s, 0);
        last_ts = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store__fail(st, rc, "evict");
    uint64_t d = 0;
    if ((rc = store__delete_range(st, 0, (uint64_t)last, &d)) != 0)
        return rc;
    st->cur.evicted += d;
    char a[32], b[32];
    ems_log_warn("store %s: buffer full (%s): evicted the %" PRIu64 " oldest packets, seq %" PRId64
                 "..%" PRId64 ", taken %s..%s; %" PRIu64 " evicted in total",
                 st->path, why, d, first, last == INT64_MAX ? (int64_t)st->cur.max_seq : last,
                 store__fmt_ts(first_ts, a, sizeof a),
                 last == INT64_MAX ? "now" : store__fmt_ts(last_ts, b, sizeof b), st->cur.evicted);
    return 0;
}

/* Evicts until a record of `len` bytes fits every bound. */
static int store__make_room(ems_store_t *st, size_t len)
{
    for (int round = 0; round < 64; round++) {
        uint64_t n = 0;
        const char *why = NULL;
        if (st->cfg.max_packets && st->cur.count >= st->cfg.max_packets) {
            n = st->cur.count - st->cfg.max_packets + 1 + store__evict_batch(st);
            why = "max_packets";
        } else if (st->cfg.max_bytes || st->cfg.min_free_bytes) {
            uint64_t used = 0, freeb = 0;
            int rc = store__pages(st, &used, &freeb);
            if (rc)
                return rc;
            /* A row may need a new leaf and a new interior page. */
            uint64_t need = len + 2 * st->page_size;
            if (st->cfg.max_bytes && used + need > st->cfg.max_bytes) {
                n = store__evict_batch(st);
                why = "max_bytes";
            } else if (st->cfg.min_free_bytes && freeb < need && store__disk_low(st)) {
                n = store__evict_batch(st);
                why = "file system almost full";
            }
        }
        if (!n)
            return 0;
        if (st->cur.count == 0) {
            ems_log_error("store %s: a record of %zu bytes does not fit (%s)", st->path, len, why);
            return EMS_ENOSPC;
        }
        int rc = store__evict(st, n, why);
        if (rc)
            return rc;
    }
    return 0;
}

static int store__insert(ems_store_t *st, uint64_t seq, int64_t ts_ms, const void *data, size_t len)
{
    int rc = store__begin(st);
    if (rc)
        return rc;
    if ((rc = store__make_room(st, len)) != 0)
        goto fail;
    sqlite3_stmt *s = st->q[Q_INSERT];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)seq);
    sqlite3_bind_int64(s, 2, ts_ms);
    sqlite3_bind_int64(s, 3, store__rec_crc(seq, ts_ms, data, len));
    sqlite3_bind_blob(s, 4, data, (int)len, SQLITE_STATIC);
    rc = store__run(st, Q_INSERT, "append");
    sqlite3_bind_null(s, 4); /* drop the borrowed pointer */
    if (rc)
        goto fail;
    st->cur.count++;
    st->cur.max_seq = seq;
    st->txn_appends = true;
    return store__maybe_commit(st);
fail:
    store__abort(st, "append failed");
    return rc;
}

int ems_store_append(ems_store_t *st, uint64_t seq, int64_t ts_ms, const void *data, size_t len)
{
    if (!st || !data || len == 0)
        return EMS_EINVAL;
    if (len > EMS_STORE_RECORD_MAX)
        return EMS_EMSGSIZE;
    if (seq != st->next_seq)
        return EMS_EINVAL;
    if (seq > EMS_STORE_SEQ_MAX)
        return EMS_ENOSPC;
    int rc = store__seq_take(st, seq);
    if (rc)
        return rc;
    if (!st->db)
        return EMS_EIO;
    rc = store__insert(st, seq, ts_ms, data, len);
    if (store__recovered_retry(st, rc))
        rc = store__insert(st, seq, ts_ms, data, len);
    store__settle(st);
    return rc;
}

static int store__ack(ems_store_t *st, const uint64_t (*ranges)[2], size_t n, uint64_t *deleted)
{
    int rc = store__begin(st);
    uint64_t total = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t d = 0;
        rc = store__delete_range(st, ranges[i][0], ranges[i][1], &d);
        total += d;
    }
    if (rc) {
        store__abort(st, "ack failed");
    } else {
        st->cur.acked += total;
        if (deleted)
            *deleted = total;
        rc = store__maybe_commit(st);
    }
    return rc;
}

int ems_store_ack(ems_store_t *st, const uint64_t (*ranges)[2], size_t n, uint64_t *deleted)
{
    if (deleted)
        *deleted = 0;
    if (!st || (n && !ranges))
        return EMS_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ranges[i][0] > ranges[i][1])
            return EMS_EINVAL;
    if (n == 0)
        return 0;
    int rc = store__ack(st, ranges, n, deleted);
    if (store__recovered_retry(st, rc))
        rc = store__ack(st, ranges, n, deleted);
    store__settle(st);
    return rc;
}

static int store__nack(ems_store_t *st, uint64_t seq)
{
    uint64_t d = 0;
    int rc = store__begin(st);
    if (!rc)
        rc = store__delete_range(st, seq, seq, &d);
    if (rc) {
        store__abort(st, "nack failed");
    } else {
        st->cur.nacked += d;
        rc = store__maybe_commit(st);
    }
    return rc ? rc : (d ? 1 : 0);
}

int ems_store_nack(ems_store_t *st, uint64_t seq)
{
    if (!st)
        return EMS_EINVAL;
    int rc = store__nack(st, seq);
    if (store__recovered_retry(st, rc))
        rc = store__nack(st, seq);
    store__settle(st);
    return rc;
}

void ems_store_session_start(ems_store_t *st)
{
    st->win_lo = 0;
    st->win_hi = st->next_seq;
}

static int store__backlog(ems_store_t *st, ems_store_order_t order, size_t max, ems_store_rec_cb cb,
                          void *ctx)
{
    if (!st->db)
        return EMS_EIO;
    if (max == 0 || st->win_hi <= st->win_lo + 1)
        return 0;
    sqlite3_stmt *s = st->q[order == EMS_STORE_OLDEST_FIRST ? Q_ASC : Q_DESC];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)st->win_lo);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)st->win_hi);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)max);
    int delivered = 0, rc;
    size_t nbad = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(s, 0);
        ems_store_rec_t rec = {
            .seq = (uint64_t)seq,
            .ts_ms = sqlite3_column_int64(s, 1),
        };
        uint32_t crc = (uint32_t)sqlite3_column_int64(s, 2);
        rec.data = sqlite3_column_blob(s, 3);
        int len = sqlite3_column_bytes(s, 3);
        rec.len = len > 0 ? (size_t)len : 0;
        bool ok = seq > 0 && rec.data && len > 0 &&
                  store__rec_crc(rec.seq, rec.ts_ms, rec.data, rec.len) == crc;
        if (ok && cb(ctx, &rec) != 0)
            break;
        /* LIMIT max (at most EMS_STORE_BATCH_MAX) rows: bad[] has room. The
         * window itself is not asserted: a bit flip in a row's key is
         * damage to survive, not a bug. */
        assert(nbad < EMS_STORE_BATCH_MAX);
        if (!ok)
            st->bad[nbad++] = rec.seq;
        else
            delivered++;
        if (order == EMS_STORE_OLDEST_FIRST)
            st->win_lo = rec.seq;
        else
            st->win_hi = rec.seq;
    }
    sqlite3_reset(s);
    int err = 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = store__fail(st, rc, "read backlog");
    if (nbad && st->db && !st->broken) {
        /* Never hand out what fails its checksum: drop it, loudly. */
        int r = store__begin(st);
        for (size_t i = 0; i < nbad && !r; i++) {
            uint64_t d = 0;
            ems_log_error("store %s: packet seq %" PRIu64 " fails its checksum: dropped", st->path,
                          st->bad[i]);
            r = store__delete_range(st, st->bad[i], st->bad[i], &d);
            st->cur.corrupt += d;
        }
        if (r)
            store__abort(st, "dropping damaged packets");
        else
            r = store__maybe_commit(st);
        if (!err)
            err = r;
    }
    return err ? err : delivered;
}

int ems_store_backlog(ems_store_t *st, ems_store_order_t order, size_t max, ems_store_rec_cb cb,
                      void *ctx)
{
    if (!st || !cb || (order != EMS_STORE_OLDEST_FIRST && order != EMS_STORE_NEWEST_FIRST))
        return EMS_EINVAL;
    if (max > EMS_STORE_BATCH_MAX)
        max = EMS_STORE_BATCH_MAX;
    /* What was handed out before damage showed stays handed out (the
     * window is kept); the rest comes from the salvaged copy. */
    int rc = store__backlog(st, order, max, cb, ctx);
    if (store__recovered_retry(st, rc))
        rc = store__backlog(st, order, max, cb, ctx);
    store__settle(st);
    return rc;
}

static int store__oldest_ts(ems_store_t *st, int64_t *ts_ms)
{
    if (!st->db)
        return EMS_EIO;
    sqlite3_stmt *s = st->q[Q_OLDEST];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *ts_ms = sqlite3_column_int64(s, 1);
    sqlite3_reset(s);
    int err = 0;
    if (rc == SQLITE_DONE)
        err = EMS_ENOENT;
    else if (rc != SQLITE_ROW)
        err = store__fail(st, rc, "oldest");
    return err;
}

int ems_store_oldest_ts(ems_store_t *st, int64_t *ts_ms)
{
    if (!st || !ts_ms)
        return EMS_EINVAL;
    int rc = store__oldest_ts(st, ts_ms);
    if (store__recovered_retry(st, rc))
        rc = store__oldest_ts(st, ts_ms);
    store__settle(st);
    return rc;
}

static int store__expire(ems_store_t *st, int64_t now_ms, uint64_t *expired)
{
    if (!st->db)
        return EMS_EIO;
    int64_t cutoff = now_ms - st->cfg.max_age_ms;
    sqlite3_stmt *s = st->q[Q_SCAN];
    sqlite3_bind_int64(s, 1, 0);
    sqlite3_bind_int64(s, 2, STORE_EXPIRE_SCAN);
    int64_t first = 0, first_ts = 0, last = 0, last_ts = 0;
    int rc;
    /* Walk in seq order and stop at the first young packet: one packet
     * stamped with a wrong, far-future clock may hold older ones back, but
     * nothing younger than the limit is ever dropped. */
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t ts = sqlite3_column_int64(s, 1);
        if (ts >= cutoff)
            break;
        last = sqlite3_column_int64(s, 0);
        last_ts = ts;
        if (!first) {
            first = last;
            first_ts = ts;
        }
    }
    sqlite3_reset(s);
    int err = 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = store__fail(st, rc, "expire");
    if (!err && last > 0) {
        uint64_t d = 0;
        err = store__begin(st);
        if (!err)
            err = store__delete_range(st, 0, (uint64_t)last, &d);
        if (err) {
            store__abort(st, "expire failed");
        } else {
            st->cur.expired += d;
            if (expired)
                *expired = d;
            char a[32], b[32], c[32];
            ems_log_info("store %s: expired %" PRIu64 " packets older than %s (seq %" PRId64
                         "..%" PRId64 ", taken %s..%s)",
                         st->path, d, store__fmt_ts(cutoff, c, sizeof c), first, last,
                         store__fmt_ts(first_ts, a, sizeof a), store__fmt_ts(last_ts, b, sizeof b));
            err = store__maybe_commit(st);
        }
    }
    return err;
}

int ems_store_expire(ems_store_t *st, int64_t now_ms, uint64_t *expired)
{
    if (expired)
        *expired = 0;
    if (!st)
        return EMS_EINVAL;
    if (st->cfg.max_age_ms <= 0 || now_ms < INT64_MIN + st->cfg.max_age_ms)
        return 0;
    int rc = store__expire(st, now_ms, expired);
    if (store__recovered_retry(st, rc))
        rc = store__expire(st, now_ms, expired);
    store__settle(st);
    return rc;
}

int ems_store_tick(ems_store_t *st)
{
    if (!st)
        return EMS_EINVAL;
    int rc = store__maybe_commit(st);
    store__settle(st);
    return rc;
}

int ems_store_flush(ems_store_t *st)
{
    if (!st)
        return EMS_EINVAL;
    int rc = store__commit(st);
    store__settle(st);
    return rc;
}

void ems_store_stats(ems_store_t *st, ems_store_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->pending = st->cur.count;
    out->next_seq = st->next_seq;
    out->acked_total = st->cur.acked;
    out->nacked_total = st->cur.nacked;
    out->evicted_total = st->cur.evicted;
    out->expired_total = st->cur.expired;
    out->corrupt_total = st->cur.corrupt;
    out->commits = st->commits;
    out->recoveries = st->recoveries;
    uint64_t used = 0, freeb = 0;
    if (st->db && store__pages(st, &used, &freeb) == 0) {
        out->used_bytes = used;
        out->file_bytes = used + freeb;
    }
}
