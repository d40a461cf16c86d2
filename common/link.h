/* link.h: the framed protocol between the gateway and the DB writer, over a
 * Unix stream socket (docs/protocol.md, section 5).
 *
 * Three layers, usable apart:
 *
 *   1. Framing, pure and allocation-light: an encoder that appends frames to
 *      a growable byte buffer (ems_buf_t) and a stream decoder
 *      (ems_link_decoder_t) that takes bytes in chunks of any size and hands
 *      out whole frames one at a time (a pull API, so the caller can stop
 *      taking frames when it is full: backpressure).
 *   2. Payload codecs for each frame kind: the binary telemetry record
 *      (derived from ems_telemetry_t, so the DB writer never parses JSON on
 *      the hot path), ACK, REJECT, and the "id + JSON" kinds (EVENT, QUERY,
 *      RESULT).
 *   3. A libuv connection (ems_link_conn_t) over a uv_pipe_t that both sides
 *      use: it exchanges HELLO, checks the version, decodes frames, queues
 *      writes with a bound in two lanes (urgent frames such as ACK go
 *      before bulk frames such as query answers), pauses and resumes
 *      reading, and closes once with one callback. Policy (reconnect with backoff, the gateway's
 * ring of unacknowledged frames, batching in the DB writer) stays with the callers.
 *
 * Wire format of a frame (all lengths in bytes):
 *
 *     u32 length   big-endian, counts kind + payload (so >= 1)
 *     u8  kind     ems_link_kind_t
 *     ... payload  length - 1 bytes; integers inside payloads are
 *                  LITTLE-endian (both ends are little-endian machines, the
 *                  records are copied with memcpy; the codecs below still
 *                  convert explicitly so a big-endian host also works)
 *
 * A frame longer than EMS_LINK_FRAME_MAX (kind + payload) is refused by both
 * the encoder and the decoder; a refused frame means the stream can no longer
 * be trusted, so the connection is closed (the peer reconnects and resends).
 *
 * Delivery rule (the heart of "nothing acknowledged is ever lost"): every
 * durable frame the gateway sends (TELEMETRY, EVENT) carries a link_seq, a
 * u64 that strictly increases over the frames sent on one connection (gaps
 * are allowed; the gateway normally keeps one counter for its whole life).
 * The DB writer answers with ACK(n): "every durable frame with link_seq <= n
 * that arrived on this connection is committed in PostgreSQL". ACKs are
 * cumulative and sent only after COMMIT succeeded. When the connection drops,
 * the gateway sends every unacknowledged frame again on the next connection,
 * in order, with the same link_seq values; the DB writer's inserts are
 * idempotent, so a frame that was committed but not yet acknowledged is
 * harmless when it comes again.
 *
 * Errors follow common/error.h: 0 or a negative EMS_E* code.
 */
#ifndef EMS_LINK_H
#define EMS_LINK_H

#include "buf.h"
#include "telemetry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ------------------------------------------------------------------ constants */

#define EMS_LINK_VERSION 1u          /* protocol version both sides speak */
#define EMS_LINK_MAGIC 0x4c534d45u   /* "EMSL" as little-endian bytes */
#define EMS_LINK_HEADER 5u           /* u32 length + u8 kind */
#define EMS_LINK_FRAME_MAX (1u << 20) /* 1 MiB: kind + payload */
/* Telemetry records per TELEMETRY frame. The largest record is
 * EMS_LINK_RECORD_MAX bytes, so a full frame stays far below the frame limit. */
#define EMS_LINK_RECORDS_MAX 4096u
#define EMS_LINK_RECORD_VERSION 2u   /* newest layout of one telemetry record */
#define EMS_LINK_RECORD_FIXED 115u   /* record bytes besides the device id */
#define EMS_LINK_RECORD_ENERGY 40u   /* version 2: the energy block, if present */
#define EMS_LINK_RECORD_MAX (EMS_LINK_RECORD_FIXED + EMS_LINK_RECORD_ENERGY + EMS_DEVICE_ID_MAX)
#define EMS_LINK_REASON_MAX 512u     /* longest reason text in REJECT / ERROR */

/* Frame kinds. Direction: G = gateway -> DB writer, D = DB writer -> gateway. */
typedef enum {
    /* both, first frame on a connection, exactly once:
     *   u32 magic (EMS_LINK_MAGIC), u16 version, u16 reserved (0),
     *   then optional UTF-8 JSON object with information about the sender
     *   (e.g. {"name":"ems-dbwriter","storage":"postgres"}), may be empty. */
    EMS_LINK_HELLO = 1,
    /* both: a fatal error; the sender closes the connection after it.
     *   UTF-8 reason text (at most EMS_LINK_REASON_MAX bytes). */
    EMS_LINK_ERROR = 2,
    /* G, durable: a batch of telemetry records.
     *   u64 link_seq, u16 record version (1 or 2, see below),
     *   u16 record count (1..EMS_LINK_RECORDS_MAX), then the records
     *   (see ems_link_telemetry_add for the layout). */
    EMS_LINK_TELEMETRY = 3,
    /* G, durable: an audit or session event for the database.
     *   u64 link_seq, then a UTF-8 JSON object (docs/protocol.md 5.4:
     *   "command", "command_status", "session_open", "session_close"). */
    EMS_LINK_EVENT = 4,
    /* D: cumulative acknowledgement.
     *   u64 link_seq: every durable frame <= link_seq is committed. */
    EMS_LINK_ACK = 5,
    /* D: one record or event that can never be stored (the database refused
     * its values for good); it is counted as done in the next ACK, so the
     * gateway should nack it to the device instead of acknowledging it.
     *   u64 link_seq, u32 record index in that frame (0 for an EVENT),
     *   then UTF-8 reason text. */
    EMS_LINK_REJECT = 6,
    /* G: a read request.
     *   u64 request id (chosen by the gateway, echoed in RESULT),
     *   then a UTF-8 JSON object {"op": ..., ...} (docs/protocol.md 5.5). */
    EMS_LINK_QUERY = 7,
    /* D: the answer to one QUERY.
     *   u64 request id, i32 status (0 or a negative EMS_E* code),
     *   then UTF-8 JSON: the result, or {"error": "text"} when status < 0. */
    EMS_LINK_RESULT = 8,
    /* D: the DB writer's database state, sent right after its HELLO and
     * again on every change (and every few seconds while commits happen).
     *   UTF-8 JSON object (docs/protocol.md 5.7):
     *   {"db": "ok" | "connecting" | "failing", "error": text or null,
     *    "migrations": "pending" | "done", "storage": ..., "schema_version": n,
     *    "last_commit_ms": Unix ms or null}.
     * Only sent to a peer whose HELLO info lists "status" in "accepts". */
    EMS_LINK_STATUS = 9,
    /* D: a device's credential changed in the database (token rotated,
     * revoked, device deleted): drop what is cached for it and re-check its
     * live connection now.
     *   the device id (1..EMS_DEVICE_ID_MAX bytes), or an empty payload for
     *   "every device" (notifications may have been missed).
     * Only sent to a peer whose HELLO info lists "credentials" in "accepts". */
    EMS_LINK_CREDENTIALS = 10,
} ems_link_kind_t;

/* "hello", "telemetry", ...; "unknown" for any other value. */
const char *ems_link_kind_name(int kind);

/* ------------------------------------------------------------------ buffer */

/* Frames are appended to an ems_buf_t (common/net/buf.h), normally
 * unbounded (EMS_BUF_INIT(EMS_BUF_UNBOUNDED)): every frame is checked
 * against EMS_LINK_FRAME_MAX when it is closed. A frame's `mark` is its
 * offset in the buffer's content (ems_buf_len when it was begun). */

/* ------------------------------------------------------------------ encoder */

/* Frames are built in place: begin writes the header with a placeholder
 * length and remembers where it starts in *mark; the caller appends payload
 * with the put helpers; end patches the length. If end fails (the frame is
 * larger than EMS_LINK_FRAME_MAX) or the caller gives up, ems_link_frame_abort
 * truncates the buffer back to *mark. */
int ems_link_frame_begin(ems_buf_t *b, ems_link_kind_t kind, size_t *mark);
int ems_link_frame_end(ems_buf_t *b, size_t mark); /* 0 or EMS_EMSGSIZE */
void ems_link_frame_abort(ems_buf_t *b, size_t mark);

/* Payload helpers (little-endian). Each returns 0 or EMS_ENOMEM. */
int ems_link_put_bytes(ems_buf_t *b, const void *p, size_t n);
int ems_link_put_u8(ems_buf_t *b, uint8_t v);
int ems_link_put_u16(ems_buf_t *b, uint16_t v);
int ems_link_put_u32(ems_buf_t *b, uint32_t v);
int ems_link_put_u64(ems_buf_t *b, uint64_t v);

/* Whole frames of the simple kinds, appended to `b`. `json`/`text` need not
 * be NUL-terminated. Return 0, EMS_ENOMEM, or EMS_EMSGSIZE (nothing is
 * appended on error). */
int ems_link_put_hello(ems_buf_t *b, const char *info_json, size_t len);
int ems_link_put_error(ems_buf_t *b, const char *text, size_t len);
int ems_link_put_ack(ems_buf_t *b, uint64_t link_seq);
int ems_link_put_reject(ems_buf_t *b, uint64_t link_seq, uint32_t index, const char *reason,
                        size_t len);
/* EVENT (id = link_seq) and QUERY (id = request id). */
int ems_link_put_id_json(ems_buf_t *b, ems_link_kind_t kind, uint64_t id, const char *json,
                         size_t len);
int ems_link_put_result(ems_buf_t *b, uint64_t request_id, int32_t status, const char *json,
                        size_t len);
/* STATUS: a JSON object. CREDENTIALS: a device id, or len 0 for "all";
 * EMS_EINVAL for an id that is not a valid device id. */
int ems_link_put_status(ems_buf_t *b, const char *json, size_t len);
int ems_link_put_credentials(ems_buf_t *b, const char *device_id, size_t len);

/* TELEMETRY frames, built record by record:
 *
 *     size_t mark;
 *     ems_link_telemetry_begin(&buf, link_seq, &mark);
 *     for (...) ems_link_telemetry_add(&buf, mark, &packet, received_ms);
 *     ems_link_telemetry_end(&buf, mark);   // refuses an empty frame
 *
 * One record (version 1), little-endian, 115 bytes + the device id:
 *
 *     u8  device id length n (1..64), then n bytes of the id
 *     i64 timestamp_ms      packet time, ms since the Unix epoch (UTC)
 *     i64 received_ms       when the gateway received it (the DB's received_at)
 *     u64 seq               valid if flags & HAS_SEQ
 *     u64 backlog           valid if flags & HAS_BACKLOG
 *     u8  state, u8 mode, u8 target_mode (ems_state_t, ems_mode_t,
 *                                         ems_target_mode_t numeric values)
 *     i8  wifi_strength     dBm, valid if flags & HAS_WIFI
 *     u16 flags             EMS_LINK_F_* below
 *     u32 error_flags       ems_fault_t bits
 *     f64 x 9               target_power, battery voltage, current, power,
 *                           soc, temperature, grid voltage, power, frequency
 *                           (IEEE-754 binary64 bit patterns)
 *
 * Version 2 is version 1 plus the energy counters: when flags has
 * EMS_LINK_F_HAS_ENERGY, 40 more bytes follow the nine f64:
 *
 *     f64 x 4               battery charged, battery discharged, grid
 *                           import, grid export (Wh)
 *     i64 energy_since_ms   start of the counters' series (UTC ms)
 *
 * A version 1 record is therefore a valid version 2 record without energy.
 * The frame header says the version: begin writes 1, and the first record
 * with energy raises the frame to 2, so a frame without energy (an older
 * edge) is still readable by a DB writer that knows only version 1. The
 * reader takes both; HAS_ENERGY in a version 1 frame is malformed.
 *
 * The record carries every field of ems_telemetry_t, so decode(encode(t))
 * is ems_telemetry_equal to t. add returns 0, EMS_ENOMEM, EMS_EINVAL (bad
 * device id, enum out of range) or EMS_ENOSPC (EMS_LINK_RECORDS_MAX reached);
 * on error nothing is appended. */
#define EMS_LINK_F_HAS_SEQ 0x0001u
#define EMS_LINK_F_HAS_BACKLOG 0x0002u
#define EMS_LINK_F_HAS_WIFI 0x0004u
#define EMS_LINK_F_HAS_TARGET_MODE 0x0008u
#define EMS_LINK_F_HAS_TARGET_POWER 0x0010u
#define EMS_LINK_F_HAS_TEMPERATURE 0x0020u
#define EMS_LINK_F_HAS_CLOCK_SYNCED 0x0040u
#define EMS_LINK_F_CLOCK_SYNCED 0x0080u
#define EMS_LINK_F_HAS_BACKFILL 0x0100u
#define EMS_LINK_F_BACKFILL 0x0200u
#define EMS_LINK_F_HAS_ENERGY 0x0400u /* version 2 only */

int ems_link_telemetry_begin(ems_buf_t *b, uint64_t link_seq, size_t *mark);
int ems_link_telemetry_add(ems_buf_t *b, size_t mark, const ems_telemetry_t *t,
                           int64_t received_ms);
int ems_link_telemetry_end(ems_buf_t *b, size_t mark); /* EMS_EINVAL if empty */
/* Number of records added so far to the frame that starts at `mark`. */
unsigned ems_link_telemetry_count(const ems_buf_t *b, size_t mark);

/* ------------------------------------------------------------------ decoder */

/* One decoded frame. `payload` points into the decoder's buffer and stays
 * valid until the next call of any ems_link_decoder_* function. */
typedef struct {
    ems_link_kind_t kind;
    const uint8_t *payload;
    size_t len; /* payload length (frame length - 1) */
} ems_link_frame_t;

/* A stream decoder. It buffers at most one partial frame plus the bytes fed
 * after it; feeding is refused with EMS_ENOSPC once more than
 * EMS_LINK_DECODER_SLACK bytes beyond a maximal frame are waiting (the
 * caller must take frames out, or stop reading, before feeding more). */
#define EMS_LINK_DECODER_SLACK (256u * 1024u)
typedef struct {
    ems_buf_t in;      /* the unconsumed bytes */
    size_t max_frame;  /* EMS_LINK_FRAME_MAX unless set smaller */
    int error;         /* sticky: once set, every call returns it */
} ems_link_decoder_t;

/* max_frame: 0 means EMS_LINK_FRAME_MAX; a value above it is clamped. */
void ems_link_decoder_init(ems_link_decoder_t *d, size_t max_frame);
void ems_link_decoder_free(ems_link_decoder_t *d);

/* Copies `len` bytes into the decoder. Returns 0, EMS_ENOMEM or EMS_ENOSPC. */
int ems_link_decoder_feed(ems_link_decoder_t *d, const void *data, size_t len);

/* Zero-copy feeding for a libuv alloc callback: reserve returns a writable
 * area of at least `want` bytes (0 or EMS_ENOMEM/EMS_ENOSPC); after the read,
 * commit says how many bytes were written there (<= the size reserved). */
int ems_link_decoder_reserve(ems_link_decoder_t *d, size_t want, uint8_t **p, size_t *cap);
void ems_link_decoder_commit(ems_link_decoder_t *d, size_t n);

/* Takes the next whole frame. Returns 1 and fills *f, 0 when more bytes are
 * needed, or a sticky error: EMS_EMSGSIZE (length above max_frame),
 * EMS_EPROTO (length 0, or an unknown kind). Unknown kinds are an error, not
 * skipped: both sides speak the same version after HELLO. */
int ems_link_decoder_next(ems_link_decoder_t *d, ems_link_frame_t *f);

/* Bytes waiting in the decoder (partial frame included). */
size_t ems_link_decoder_pending(const ems_link_decoder_t *d);

/* ------------------------------------------------------------------ payload parsers */

/* All parsers check lengths and return 0 or EMS_EPROTO; pointers they fill
 * point into the frame's payload (same lifetime). */

/* HELLO: *version is the peer's version; info/info_len its JSON (may be 0). */
int ems_link_parse_hello(const ems_link_frame_t *f, uint32_t *version,
                         const char **info, size_t *info_len);
int ems_link_parse_ack(const ems_link_frame_t *f, uint64_t *link_seq);
int ems_link_parse_reject(const ems_link_frame_t *f, uint64_t *link_seq, uint32_t *index,
                          const char **reason, size_t *len);
/* EVENT or QUERY. */
int ems_link_parse_id_json(const ems_link_frame_t *f, uint64_t *id, const char **json,
                           size_t *len);
int ems_link_parse_result(const ems_link_frame_t *f, uint64_t *request_id, int32_t *status,
                          const char **json, size_t *len);
/* STATUS: the JSON text (not checked here). */
int ems_link_parse_status(const ems_link_frame_t *f, const char **json, size_t *len);
/* CREDENTIALS: copies the device id into `id` (EMS_DEVICE_ID_MAX + 1
 * bytes), "" for "every device"; EMS_EPROTO for an invalid id. */
int ems_link_parse_credentials(const ems_link_frame_t *f, char *id);

/* Reads a TELEMETRY frame record by record:
 *
 *     ems_link_telemetry_reader_t r;
 *     if (ems_link_telemetry_open(&r, &frame) < 0) ...;   // r.link_seq, r.count
 *     while ((rc = ems_link_telemetry_next(&r, &t, &received_ms)) == 1) ...;
 *
 * open checks the header (version 1 or 2, count 1..EMS_LINK_RECORDS_MAX); next
 * returns 1 per record, 0 after the last, EMS_EPROTO on a truncated or
 * malformed record (bad id, enum out of range, bytes left over at the end). */
typedef struct {
    const uint8_t *p, *end;
    uint64_t link_seq;
    unsigned version; /* record layout of the frame: 1 or 2 */
    unsigned count; /* records in the frame */
    unsigned index; /* records read so far */
} ems_link_telemetry_reader_t;

int ems_link_telemetry_open(ems_link_telemetry_reader_t *r, const ems_link_frame_t *f);
int ems_link_telemetry_next(ems_link_telemetry_reader_t *r, ems_telemetry_t *out,
                            int64_t *received_ms);

/* ------------------------------------------------------------------ connection */

typedef struct ems_link_conn ems_link_conn_t;

/* Callbacks of a connection. Any of them may call ems_link_conn_close,
 * ems_link_conn_pause/resume and ems_link_conn_send* on the same connection:
 * closing from inside a callback is deferred until the callback returns. */
typedef struct {
    /* The peer's HELLO arrived and its version matches: the link is ready.
     * `info` is the peer's JSON (not NUL-terminated, may be empty). The
     * connection may already send before this (both sides send HELLO at
     * once), but a caller that waits for it knows the peer is really there. */
    void (*on_ready)(ems_link_conn_t *c, void *ud, const char *info, size_t info_len);
    /* One frame other than HELLO and ERROR (those are handled inside). The
     * frame's memory is valid only during the call. */
    void (*on_frame)(ems_link_conn_t *c, void *ud, const ems_link_frame_t *f);
    /* Optional: a write finished and the urgent lane is empty (the bulk
     * lane may still hold frames; they follow after this returns). */
    void (*on_drain)(ems_link_conn_t *c, void *ud);
    /* Called exactly once, after the socket is closed, for every connection
     * that was created successfully, whatever the reason: `status` is 0 for a
     * local ems_link_conn_close(c, 0), EMS_ECLOSED for EOF from the peer,
     * EMS_EPROTO/EMS_EMSGSIZE for a bad frame or version, a libuv code for a
     * failed connect or I/O error. The connection's memory is freed right
     * after this returns; do not use `c` afterwards. */
    void (*on_close)(ems_link_conn_t *c, void *ud, int status);
} ems_link_conn_cb_t;

typedef struct {
    const char *name;        /* for log lines, e.g. "gateway link"; copied */
    const char *hello_info;  /* JSON object sent in our HELLO; copied; may be NULL */
    size_t max_frame;        /* 0: EMS_LINK_FRAME_MAX */
    size_t max_queued;       /* write queue bound in bytes; 0: 16 MiB */
    size_t max_bulk;         /* bulk lane bound in bytes; 0: 64 MiB */
} ems_link_conn_opts_t;

/* Starts connecting to the Unix socket at `path`. On success *out is the new
 * connection (already owned by the loop) and either on_ready or on_close
 * follows. Returns 0, EMS_EINVAL (path too long for sockaddr_un), EMS_ENOMEM
 * or a libuv code; on error no callback is called and *out is untouched.
 * Retrying with backoff is the caller's policy. */
int ems_link_conn_connect(uv_loop_t *loop, const char *path, const ems_link_conn_opts_t *o,
                          const ems_link_conn_cb_t *cb, void *ud, ems_link_conn_t **out);

/* Accepts one pending connection from a listening pipe (call it from the
 * listener's uv_connection_cb). Same contract as connect. */
int ems_link_conn_accept(uv_stream_t *server, const ems_link_conn_opts_t *o,
                         const ems_link_conn_cb_t *cb, void *ud, ems_link_conn_t **out);

/* Binds and listens on a Unix socket path for the DB writer: removes a stale
 * socket file first (only if it is a socket), binds, sets mode 0660 and
 * listens. `server` must be uv_pipe_init'ed by the caller, who closes it. */
int ems_link_listen(uv_pipe_t *server, const char *path, uv_connection_cb cb);

/* Queues one frame of `kind` with `payload` (copied) in the urgent lane.
 * Returns 0, EMS_ECLOSED (closing), EMS_EMSGSIZE, EMS_ENOMEM, or EMS_ENOSPC
 * when the urgent lane already holds max_queued bytes (nothing is queued
 * then; the caller decides whether to drop, wait for on_drain, or close). */
int ems_link_conn_send(ems_link_conn_t *c, ems_link_kind_t kind, const void *payload,
                       size_t len);
/* Queues bytes that already hold one or more complete frames (e.g. built
 * with the put helpers, or a frame kept in the gateway's resend ring). Same
 * returns. */
int ems_link_conn_send_raw(ems_link_conn_t *c, const void *frames, size_t len);
/* Queues whole frames (e.g. a RESULT) in the bulk lane. The connection
 * has two write lanes: frames sent with ems_link_conn_send/send_raw (the
 * urgent lane: HELLO, ACK, REJECT, STATUS, ...) always go out before any
 * bulk frame that has not started yet, and the bulk lane is written one
 * slice of whole frames (about 256 KiB, or one larger frame) at a time, so
 * an ACK queued behind megabytes of history answers waits for at most one
 * slice. Returns 0, EMS_ECLOSED, EMS_EINVAL (not whole frames), EMS_ENOMEM,
 * or EMS_ENOSPC when the bulk lane already holds max_bulk bytes (nothing is
 * queued; the caller answers with something small instead). */
int ems_link_conn_send_bulk(ems_link_conn_t *c, const void *frames, size_t len);
/* Bytes queued and not yet written to the socket (both lanes). */
size_t ems_link_conn_queued(const ems_link_conn_t *c);
/* Bytes waiting in the bulk lane. */
size_t ems_link_conn_bulk_queued(const ems_link_conn_t *c);

/* Stops taking frames out of the socket (backpressure); frames already
 * decoded stay buffered. resume delivers them (from the loop, not from inside
 * the call) and starts reading again. Both are idempotent. */
void ems_link_conn_pause(ems_link_conn_t *c);
void ems_link_conn_resume(ems_link_conn_t *c);
bool ems_link_conn_paused(const ems_link_conn_t *c);

/* Closes the connection: queued writes are dropped, on_close(status)
 * follows from the loop. `status` is passed to on_close (0 for a normal
 * close). Safe to call more than once and from inside any callback. */
void ems_link_conn_close(ems_link_conn_t *c, int status);

/* Graceful close: stops reading, writes everything queued, then closes (at
 * most 1 s later if the peer does not read); on_close gets `status`. Sends
 * are refused with EMS_ECLOSED from now on. For shutdown after the last ACK. */
void ems_link_conn_end(ems_link_conn_t *c, int status);

/* Sends ERROR(text) after what is queued, then ends like ems_link_conn_end;
 * on_close gets `status`. For refusing a peer politely. Logs `text`. */
void ems_link_conn_fail(ems_link_conn_t *c, int status, const char *text);

/* The user data given at creation, and a way to change it (e.g. when a
 * gateway hands the connection from its connector to its sender). */
void *ems_link_conn_data(const ems_link_conn_t *c);
void ems_link_conn_set_data(ems_link_conn_t *c, void *ud);

#endif
