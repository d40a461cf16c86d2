/* link.c: framing, payload codecs and the libuv connection of the
 * gateway <-> DB writer link (see link.h and docs/protocol.md, section 5). */
#include "link.h"

#include "error.h"
#include "le.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ================================================================== names */

const char *ems_link_kind_name(int kind)
{
    switch (kind) {
    case EMS_LINK_HELLO: return "hello";
    case EMS_LINK_ERROR: return "error";
    case EMS_LINK_TELEMETRY: return "telemetry";
    case EMS_LINK_EVENT: return "event";
    case EMS_LINK_ACK: return "ack";
    case EMS_LINK_REJECT: return "reject";
    case EMS_LINK_QUERY: return "query";
    case EMS_LINK_RESULT: return "result";
    case EMS_LINK_STATUS: return "status";
    case EMS_LINK_CREDENTIALS: return "credentials";
    default: return "unknown";
    }
}

static bool kind_known(unsigned k)
{
    return k >= EMS_LINK_HELLO && k <= EMS_LINK_CREDENTIALS;
}

/* ================================================================== little-endian helpers */

/* common/le.h; the short names keep the frame code below readable. */
#define le16 ems_le_put16
#define le32 ems_le_put32
#define le64 ems_le_put64
#define rd16 ems_le_get16
#define rd32 ems_le_get32
#define rd64 ems_le_get64
static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static uint32_t rdbe32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
/* Writable bytes at content offset `pos` of a frame buffer. */
static uint8_t *at(ems_buf_t *b, size_t pos)
{
    return (uint8_t *)ems_buf_at(b, pos);
}
static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}
static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* ================================================================== encoder */

int ems_link_put_bytes(ems_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    return ems_buf_append(b, p, n);
}

int ems_link_put_u8(ems_buf_t *b, uint8_t v)
{
    return ems_link_put_bytes(b, &v, 1);
}

int ems_link_put_u16(ems_buf_t *b, uint16_t v)
{
    uint8_t t[2];
    le16(t, v);
    return ems_link_put_bytes(b, t, 2);
}

int ems_link_put_u32(ems_buf_t *b, uint32_t v)
{
    uint8_t t[4];
    le32(t, v);
    return ems_link_put_bytes(b, t, 4);
}

int ems_link_put_u64(ems_buf_t *b, uint64_t v)
{
    uint8_t t[8];
    le64(t, v);
    return ems_link_put_bytes(b, t, 8);
}

int ems_link_frame_begin(ems_buf_t *b, ems_link_kind_t kind, size_t *mark)
{
    char *h;
    int rc = ems_buf_reserve(b, EMS_LINK_HEADER, &h);
    if (rc < 0)
        return rc;
    *mark = ems_buf_len(b);
    be32((uint8_t *)h, 0);
    h[4] = (char)kind;
    ems_buf_commit(b, EMS_LINK_HEADER);
    return 0;
}

int ems_link_frame_end(ems_buf_t *b, size_t mark)
{
    size_t flen = ems_buf_len(b) - mark - 4; /* kind + payload */
    if (flen > EMS_LINK_FRAME_MAX)
        return EMS_EMSGSIZE;
    be32(at(b, mark), (uint32_t)flen);
    return 0;
}

void ems_link_frame_abort(ems_buf_t *b, size_t mark)
{
    ems_buf_truncate(b, mark);
}

/* Appends a frame made of a fixed head and a variable tail; all or nothing. */
static int put_frame(ems_buf_t *b, ems_link_kind_t kind, const void *head, size_t hlen,
                     const void *tail, size_t tlen)
{
    if (tlen > EMS_LINK_FRAME_MAX || 1 + hlen + tlen > EMS_LINK_FRAME_MAX)
        return EMS_EMSGSIZE;
    size_t mark;
    char *room;
    int rc = ems_buf_reserve(b, EMS_LINK_HEADER + hlen + tlen, &room);
    if (rc < 0)
        return rc;
    ems_link_frame_begin(b, kind, &mark); /* cannot fail after the reserve */
    ems_link_put_bytes(b, head, hlen);
    ems_link_put_bytes(b, tail, tlen);
    return ems_link_frame_end(b, mark);
}

int ems_link_put_hello(ems_buf_t *b, const char *info_json, size_t len)
{
    uint8_t h[8];
    le32(h, EMS_LINK_MAGIC);
    le16(h + 4, EMS_LINK_VERSION);
    le16(h + 6, 0);
    return put_frame(b, EMS_LINK_HELLO, h, sizeof h, info_json, info_json ? len : 0);
}

int ems_link_put_error(ems_buf_t *b, const char *text, size_t len)
{
    if (len > EMS_LINK_REASON_MAX)
        len = EMS_LINK_REASON_MAX;
    return put_frame(b, EMS_LINK_ERROR, NULL, 0, text, len);
}

int ems_link_put_ack(ems_buf_t *b, uint64_t link_seq)
{
    uint8_t h[8];
    le64(h, link_seq);
    return put_frame(b, EMS_LINK_ACK, h, sizeof h, NULL, 0);
}

int ems_link_put_reject(ems_buf_t *b, uint64_t link_seq, uint32_t index, const char *reason,
                        size_t len)
{
    uint8_t h[12];
    le64(h, link_seq);
    le32(h + 8, index);
    if (len > EMS_LINK_REASON_MAX)
        len = EMS_LINK_REASON_MAX;
    return put_frame(b, EMS_LINK_REJECT, h, sizeof h, reason, len);
}

int ems_link_put_id_json(ems_buf_t *b, ems_link_kind_t kind, uint64_t id, const char *json,
                         size_t len)
{
    uint8_t h[8];
    le64(h, id);
    return put_frame(b, kind, h, sizeof h, json, len);
}

int ems_link_put_result(ems_buf_t *b, uint64_t request_id, int32_t status, const char *json,
                        size_t len)
{
    uint8_t h[12];
    le64(h, request_id);
    le32(h + 8, (uint32_t)status);
    return put_frame(b, EMS_LINK_RESULT, h, sizeof h, json, len);
}

int ems_link_put_status(ems_buf_t *b, const char *json, size_t len)
{
    return put_frame(b, EMS_LINK_STATUS, NULL, 0, json, len);
}

int ems_link_put_credentials(ems_buf_t *b, const char *device_id, size_t len)
{
    if (len && !ems_device_id_valid(device_id, len))
        return EMS_EINVAL;
    return put_frame(b, EMS_LINK_CREDENTIALS, NULL, 0, device_id, len);
}

/* ================================================================== telemetry records */

/* TELEMETRY payload header: u64 link_seq, u16 version, u16 count. */
#define TEL_HEAD 12u
#define TEL_VERSION_OFF (EMS_LINK_HEADER + 8u)
#define TEL_COUNT_OFF (EMS_LINK_HEADER + 10u)

int ems_link_telemetry_begin(ems_buf_t *b, uint64_t link_seq, size_t *mark)
{
    char *room;
    int rc = ems_buf_reserve(b, EMS_LINK_HEADER + TEL_HEAD, &room);
    if (rc < 0)
        return rc;
    ems_link_frame_begin(b, EMS_LINK_TELEMETRY, mark);
    uint8_t h[TEL_HEAD];
    le64(h, link_seq);
    le16(h + 8, 1); /* raised to 2 by the first record with energy */
    le16(h + 10, 0);
    ems_link_put_bytes(b, h, sizeof h);
    return 0;
}

unsigned ems_link_telemetry_count(const ems_buf_t *b, size_t mark)
{
    return rd16((const uint8_t *)ems_buf_data(b) + mark + TEL_COUNT_OFF);
}

int ems_link_telemetry_add(ems_buf_t *b, size_t mark, const ems_telemetry_t *t, int64_t received_ms)
{
    unsigned count = ems_link_telemetry_count(b, mark);
    if (count >= EMS_LINK_RECORDS_MAX)
        return EMS_ENOSPC;
    size_t idlen = strnlen(t->device_id, sizeof t->device_id);
    if (!ems_device_id_valid(t->device_id, idlen))
        return EMS_EINVAL;
    if ((unsigned)t->state >= EMS_STATE_COUNT || (unsigned)t->mode >= EMS_MODE_COUNT ||
        (t->has_target_mode && (unsigned)t->target_mode >= EMS_TARGET_COUNT) ||
        (t->has_wifi_strength && (t->wifi_strength < -128 || t->wifi_strength > 127)))
        return EMS_EINVAL;
    char *room;
    int rc = ems_buf_reserve(
        b, EMS_LINK_RECORD_FIXED + idlen + (t->has_energy ? EMS_LINK_RECORD_ENERGY : 0), &room);
    if (rc < 0)
        return rc;

    uint16_t flags = 0;
    if (t->has_energy) flags |= EMS_LINK_F_HAS_ENERGY;
    if (t->has_seq) flags |= EMS_LINK_F_HAS_SEQ;
    if (t->has_backlog) flags |= EMS_LINK_F_HAS_BACKLOG;
    if (t->has_wifi_strength) flags |= EMS_LINK_F_HAS_WIFI;
    if (t->has_target_mode) flags |= EMS_LINK_F_HAS_TARGET_MODE;
    if (t->has_target_power) flags |= EMS_LINK_F_HAS_TARGET_POWER;
    if (t->has_battery_temperature) flags |= EMS_LINK_F_HAS_TEMPERATURE;
    if (t->has_clock_synced) flags |= EMS_LINK_F_HAS_CLOCK_SYNCED;
    if (t->has_clock_synced && t->clock_synced) flags |= EMS_LINK_F_CLOCK_SYNCED;
    if (t->has_backfill) flags |= EMS_LINK_F_HAS_BACKFILL;
    if (t->has_backfill && t->backfill) flags |= EMS_LINK_F_BACKFILL;

    uint8_t *const start = (uint8_t *)room, *p = start;
    *p++ = (uint8_t)idlen;
    memcpy(p, t->device_id, idlen);
    p += idlen;
    le64(p, (uint64_t)t->timestamp_ms), p += 8;
    le64(p, (uint64_t)received_ms), p += 8;
    le64(p, t->has_seq ? t->seq : 0), p += 8;
    le64(p, t->has_backlog ? t->backlog : 0), p += 8;
    *p++ = (uint8_t)t->state;
    *p++ = (uint8_t)t->mode;
    *p++ = (uint8_t)(t->has_target_mode ? t->target_mode : 0);
    *p++ = (uint8_t)(int8_t)(t->has_wifi_strength ? t->wifi_strength : 0);
    le16(p, flags), p += 2;
    le32(p, t->error_flags), p += 4;
    const double d[9] = {
        t->has_target_power ? t->target_power : 0.0,
        t->battery_voltage,
        t->battery_current,
        t->battery_power,
        t->battery_soc,
        t->has_battery_temperature ? t->battery_temperature : 0.0,
        t->grid_voltage,
        t->grid_power,
        t->grid_frequency,
    };
    for (int i = 0; i < 9; i++)
        le64(p, dbits(d[i])), p += 8;
    if (t->has_energy) {
        const double e[4] = {t->energy_battery_charged_wh, t->energy_battery_discharged_wh,
                             t->energy_grid_import_wh, t->energy_grid_export_wh};
        for (int i = 0; i < 4; i++)
            le64(p, dbits(e[i])), p += 8;
        le64(p, (uint64_t)t->energy_since_ms), p += 8;
        le16(at(b, mark + TEL_VERSION_OFF), 2);
    }
    ems_buf_commit(b, (size_t)(p - start));
    le16(at(b, mark + TEL_COUNT_OFF), (uint16_t)(count + 1));
    return 0;
}

int ems_link_telemetry_end(ems_buf_t *b, size_t mark)
{
    if (ems_link_telemetry_count(b, mark) == 0)
        return EMS_EINVAL;
    return ems_link_frame_end(b, mark);
}

int ems_link_telemetry_open(ems_link_telemetry_reader_t *r, const ems_link_frame_t *f)
{
    if (f->kind != EMS_LINK_TELEMETRY || f->len < TEL_HEAD)
        return EMS_EPROTO;
    const uint8_t *p = f->payload;
    r->link_seq = rd64(p);
    r->version = rd16(p + 8);
    r->count = rd16(p + 10);
    if (r->version < 1 || r->version > EMS_LINK_RECORD_VERSION || r->count == 0 ||
        r->count > EMS_LINK_RECORDS_MAX)
        return EMS_EPROTO;
    r->p = p + TEL_HEAD;
    r->end = p + f->len;
    r->index = 0;
    return 0;
}

int ems_link_telemetry_next(ems_link_telemetry_reader_t *r, ems_telemetry_t *t,
                            int64_t *received_ms)
{
    if (r->index >= r->count)
        return r->p == r->end ? 0 : EMS_EPROTO;
    const uint8_t *p = r->p;
    size_t left = (size_t)(r->end - p);
    if (left < 1)
        return EMS_EPROTO;
    size_t idlen = p[0];
    if (idlen < 1 || idlen > EMS_DEVICE_ID_MAX || left < EMS_LINK_RECORD_FIXED + idlen)
        return EMS_EPROTO;
    if (!ems_device_id_valid((const char *)p + 1, idlen))
        return EMS_EPROTO;
    memset(t, 0, sizeof *t);
    memcpy(t->device_id, p + 1, idlen);
    t->device_id[idlen] = '\0';
    p += 1 + idlen;
    t->timestamp_ms = (int64_t)rd64(p), p += 8;
    int64_t recv = (int64_t)rd64(p);
    p += 8;
    uint64_t seq = rd64(p), backlog = rd64(p + 8);
    p += 16;
    unsigned state = p[0], mode = p[1], target = p[2];
    int wifi = (int8_t)p[3];
    p += 4;
    unsigned flags = rd16(p);
    p += 2;
    t->error_flags = rd32(p);
    p += 4;
    double d[9];
    for (int i = 0; i < 9; i++)
        d[i] = bitsd(rd64(p)), p += 8;
    if (state >= EMS_STATE_COUNT || mode >= EMS_MODE_COUNT ||
        ((flags & EMS_LINK_F_HAS_TARGET_MODE) && target >= EMS_TARGET_COUNT))
        return EMS_EPROTO;
    if (flags & EMS_LINK_F_HAS_ENERGY) {
        if (r->version < 2 || (size_t)(r->end - p) < EMS_LINK_RECORD_ENERGY)
            return EMS_EPROTO;
        t->has_energy = true;
        t->energy_battery_charged_wh = bitsd(rd64(p));
        t->energy_battery_discharged_wh = bitsd(rd64(p + 8));
        t->energy_grid_import_wh = bitsd(rd64(p + 16));
        t->energy_grid_export_wh = bitsd(rd64(p + 24));
        t->energy_since_ms = (int64_t)rd64(p + 32);
        p += EMS_LINK_RECORD_ENERGY;
    }
    t->state = (ems_state_t)state;
    t->mode = (ems_mode_t)mode;
    t->has_seq = flags & EMS_LINK_F_HAS_SEQ;
    t->seq = t->has_seq ? seq : 0;
    t->has_backlog = flags & EMS_LINK_F_HAS_BACKLOG;
    t->backlog = t->has_backlog ? backlog : 0;
    t->has_wifi_strength = flags & EMS_LINK_F_HAS_WIFI;
    t->wifi_strength = t->has_wifi_strength ? wifi : 0;
    t->has_target_mode = flags & EMS_LINK_F_HAS_TARGET_MODE;
    t->target_mode = t->has_target_mode ? (ems_target_mode_t)target : EMS_TARGET_AUTO;
    t->has_target_power = flags & EMS_LINK_F_HAS_TARGET_POWER;
    t->target_power = t->has_target_power ? d[0] : 0.0;
    t->battery_voltage = d[1];
    t->battery_current = d[2];
    t->battery_power = d[3];
    t->battery_soc = d[4];
    t->has_battery_temperature = flags & EMS_LINK_F_HAS_TEMPERATURE;
    t->battery_temperature = t->has_battery_temperature ? d[5] : 0.0;
    t->grid_voltage = d[6];
    t->grid_power = d[7];
    t->grid_frequency = d[8];
    t->has_clock_synced = flags & EMS_LINK_F_HAS_CLOCK_SYNCED;
    t->clock_synced = t->has_clock_synced && (flags & EMS_LINK_F_CLOCK_SYNCED);
    t->has_backfill = flags & EMS_LINK_F_HAS_BACKFILL;
    t->backfill = t->has_backfill && (flags & EMS_LINK_F_BACKFILL);
    if (received_ms)
        *received_ms = recv;
    r->p = p;
    r->index++;
    return 1;
}

/* ================================================================== decoder */

void ems_link_decoder_init(ems_link_decoder_t *d, size_t max_frame)
{
    memset(d, 0, sizeof *d);
    ems_buf_init(&d->in, EMS_BUF_UNBOUNDED);
    d->max_frame =
        (max_frame == 0 || max_frame > EMS_LINK_FRAME_MAX) ? EMS_LINK_FRAME_MAX : max_frame;
}

void ems_link_decoder_free(ems_link_decoder_t *d)
{
    ems_buf_free(&d->in);
}

size_t ems_link_decoder_pending(const ems_link_decoder_t *d)
{
    return ems_buf_len(&d->in);
}

int ems_link_decoder_reserve(ems_link_decoder_t *d, size_t want, uint8_t **p, size_t *cap)
{
    if (d->error)
        return d->error;
    if (ems_link_decoder_pending(d) + want > d->max_frame + EMS_LINK_HEADER + EMS_LINK_DECODER_SLACK)
        return EMS_ENOSPC;
    /* ems_buf_reserve moves the unconsumed bytes to the front when that frees
     * enough room, so a long-lived decoder keeps a buffer of about one frame
     * instead of growing. */
    char *room;
    int rc = ems_buf_reserve(&d->in, want, &room);
    if (rc < 0)
        return rc;
    *p = (uint8_t *)room;
    *cap = d->in.cap - d->in.len;
    return 0;
}

void ems_link_decoder_commit(ems_link_decoder_t *d, size_t n)
{
    if (n <= d->in.cap - d->in.len)
        ems_buf_commit(&d->in, n);
}

int ems_link_decoder_feed(ems_link_decoder_t *d, const void *data, size_t len)
{
    uint8_t *p = NULL;
    size_t cap = 0;
    int rc = ems_link_decoder_reserve(d, len, &p, &cap);
    if (rc < 0)
        return rc;
    memcpy(p, data, len);
    ems_link_decoder_commit(d, len);
    return 0;
}

int ems_link_decoder_next(ems_link_decoder_t *d, ems_link_frame_t *f)
{
    if (d->error)
        return d->error;
    size_t avail = ems_link_decoder_pending(d);
    if (avail < 4)
        return 0;
    const uint8_t *p = (const uint8_t *)ems_buf_data(&d->in);
    uint32_t flen = rdbe32(p);
    if (flen == 0)
        return d->error = EMS_EPROTO;
    if (flen > d->max_frame)
        return d->error = EMS_EMSGSIZE;
    if (avail >= 5 && !kind_known(p[4]))
        return d->error = EMS_EPROTO;
    if (avail < 4 + (size_t)flen)
        return 0;
    f->kind = (ems_link_kind_t)p[4];
    f->payload = p + EMS_LINK_HEADER;
    f->len = flen - 1;
    /* Only the start moves (the bytes stay where they are until the next
     * reserve), so f->payload is valid until then; a decoder consumed to
     * the end restarts at the front. */
    ems_buf_consume(&d->in, 4 + (size_t)flen);
    return 1;
}

/* ================================================================== payload parsers */

int ems_link_parse_hello(const ems_link_frame_t *f, uint32_t *version, const char **info,
                         size_t *info_len)
{
    if (f->kind != EMS_LINK_HELLO || f->len < 8 || rd32(f->payload) != EMS_LINK_MAGIC)
        return EMS_EPROTO;
    *version = rd16(f->payload + 4);
    *info = (const char *)f->payload + 8;
    *info_len = f->len - 8;
    return 0;
}

int ems_link_parse_ack(const ems_link_frame_t *f, uint64_t *link_seq)
{
    if (f->kind != EMS_LINK_ACK || f->len != 8)
        return EMS_EPROTO;
    *link_seq = rd64(f->payload);
    return 0;
}

int ems_link_parse_reject(const ems_link_frame_t *f, uint64_t *link_seq, uint32_t *index,
                          const char **reason, size_t *len)
{
    if (f->kind != EMS_LINK_REJECT || f->len < 12)
        return EMS_EPROTO;
    *link_seq = rd64(f->payload);
    *index = rd32(f->payload + 8);
    *reason = (const char *)f->payload + 12;
    *len = f->len - 12;
    return 0;
}

int ems_link_parse_id_json(const ems_link_frame_t *f, uint64_t *id, const char **json,
                           size_t *len)
{
    if ((f->kind != EMS_LINK_EVENT && f->kind != EMS_LINK_QUERY) || f->len < 8)
        return EMS_EPROTO;
    *id = rd64(f->payload);
    *json = (const char *)f->payload + 8;
    *len = f->len - 8;
    return 0;
}

int ems_link_parse_result(const ems_link_frame_t *f, uint64_t *request_id, int32_t *status,
                          const char **json, size_t *len)
{
    if (f->kind != EMS_LINK_RESULT || f->len < 12)
        return EMS_EPROTO;
    *request_id = rd64(f->payload);
    *status = (int32_t)rd32(f->payload + 8);
    *json = (const char *)f->payload + 12;
    *len = f->len - 12;
    return 0;
}

int ems_link_parse_status(const ems_link_frame_t *f, const char **json, size_t *len)
{
    if (f->kind != EMS_LINK_STATUS)
        return EMS_EPROTO;
    *json = (const char *)f->payload;
    *len = f->len;
    return 0;
}

int ems_link_parse_credentials(const ems_link_frame_t *f, char *id)
{
    if (f->kind != EMS_LINK_CREDENTIALS || f->len > EMS_DEVICE_ID_MAX ||
        (f->len && !ems_device_id_valid((const char *)f->payload, f->len)))
        return EMS_EPROTO;
    memcpy(id, f->payload, f->len);
    id[f->len] = '\0';
    return 0;
}

/* ================================================================== connection */

/* The connection owns four libuv objects: the pipe, two timers (one delivers
 * buffered frames after resume, one bounds how long a failing connection
 * waits for its ERROR frame to be written) and at most one write request.
 * Its memory is freed when the last of the three handles has closed; libuv
 * cancels the pending connect and write requests (their callbacks run with
 * UV_ECANCELED) before any close callback, so no request outlives it.
 *
 * Writes come from two lanes. `pending` is the urgent lane; `bulk` holds
 * whole frames (query answers). One write is in flight at
 * a time (`inflight`): all of the urgent lane, or else one slice of whole
 * bulk frames, so urgent frames never wait behind more than one slice. */
#define BULK_SLICE (256u * 1024u)
struct ems_link_conn {
    uv_pipe_t pipe;
    uv_timer_t kick;     /* deferred delivery after resume */
    uv_timer_t deadline; /* closes a failing connection if its ERROR is stuck */
    uv_connect_t creq;
    uv_write_t wreq;

    ems_link_decoder_t dec;
    ems_buf_t pending;  /* frames queued behind the write in flight */
    ems_buf_t inflight; /* frames being written */
    size_t max_queued;
    ems_buf_t bulk; /* bulk lane: the unwritten frames */
    size_t max_bulk;

    ems_link_conn_cb_t cb;
    void *ud;
    char name[48];
    char *hello_info;

    bool started;     /* connected (or accepted) and HELLO queued */
    bool ready;       /* the peer's HELLO arrived */
    bool reading;
    bool paused;
    bool closing;
    bool failing;     /* close once the queue is written */
    int close_status;
    int open_handles;
};

static void conn_process(ems_link_conn_t *c);
static void conn_flush(ems_link_conn_t *c);

static void conn_handle_closed(uv_handle_t *h)
{
    ems_link_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (c->cb.on_close)
        c->cb.on_close(c, c->ud, c->close_status);
    ems_link_decoder_free(&c->dec);
    ems_buf_free(&c->pending);
    ems_buf_free(&c->inflight);
    ems_buf_free(&c->bulk);
    free(c->hello_info);
    free(c);
}

void ems_link_conn_close(ems_link_conn_t *c, int status)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    c->close_status = status;
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = false;
    uv_close((uv_handle_t *)&c->pipe, conn_handle_closed);
    uv_close((uv_handle_t *)&c->kick, conn_handle_closed);
    uv_close((uv_handle_t *)&c->deadline, conn_handle_closed);
}

static void deadline_cb(uv_timer_t *t)
{
    ems_link_conn_t *c = t->data;
    ems_link_conn_close(c, c->close_status);
}

/* Stops reading, and closes once the queue is written (or the deadline
 * passes, for a peer that does not read). */
static void conn_end(ems_link_conn_t *c, int status)
{
    c->failing = true;
    c->close_status = status;
    ems_link_conn_pause(c);
    if (!c->started || ems_link_conn_queued(c) == 0) {
        ems_link_conn_close(c, status);
        return;
    }
    uv_timer_start(&c->deadline, deadline_cb, 1000, 0);
    conn_flush(c);
}

void ems_link_conn_end(ems_link_conn_t *c, int status)
{
    if (!c || c->closing || c->failing)
        return;
    conn_end(c, status);
}

void ems_link_conn_fail(ems_link_conn_t *c, int status, const char *text)
{
    if (!c || c->closing || c->failing)
        return;
    ems_log_warn("%s: closing the link: %s", c->name, text);
    /* Whatever was queued before is exempt from the bound check: the ERROR
     * must go out, and the connection ends right after it. */
    if (ems_link_put_error(&c->pending, text, strlen(text)) < 0) {
        ems_link_conn_close(c, status);
        return;
    }
    conn_end(c, status);
}

static void write_cb(uv_write_t *req, int status)
{
    ems_link_conn_t *c = req->data;
    ems_buf_clear(&c->inflight);
    if (c->closing)
        return;
    if (status < 0) {
        /* A peer that went away is ordinary (it reconnects); log it quietly. */
        ems_log(status == UV_EPIPE || status == UV_ECONNRESET ? EMS_LOG_INFO : EMS_LOG_WARN,
                "%s: write failed: %s", c->name, uv_strerror(status));
        ems_link_conn_close(c, status);
        return;
    }
    /* The urgent lane is empty: the owner may queue more (an ACK it could
     * not queue before goes out ahead of the next bulk slice). */
    if (!ems_buf_len(&c->pending) && !c->failing && c->cb.on_drain) {
        c->cb.on_drain(c, c->ud);
        if (c->closing)
            return;
    }
    if (ems_link_conn_queued(c)) {
        conn_flush(c);
        return;
    }
    if (c->failing)
        ems_link_conn_close(c, c->close_status);
}

/* Length of the next bulk slice: whole frames from the start of the bulk
 * lane, at most BULK_SLICE bytes unless the first frame alone is longer. */
static size_t bulk_slice(const ems_link_conn_t *c)
{
    const uint8_t *p = (const uint8_t *)ems_buf_data(&c->bulk);
    size_t avail = ems_buf_len(&c->bulk), off = 0;
    while (off < avail) {
        size_t flen = 4 + (size_t)rdbe32(p + off);
        if (off > 0 && off + flen > BULK_SLICE)
            break;
        off += flen;
    }
    return off;
}

/* Moves the next bulk slice into `inflight`. Returns 0 or EMS_ENOMEM. */
static int bulk_take(ems_link_conn_t *c)
{
    size_t n = bulk_slice(c);
    ems_buf_clear(&c->inflight);
    int rc = ems_link_put_bytes(&c->inflight, ems_buf_data(&c->bulk), n);
    if (rc < 0)
        return rc;
    /* O(1); ems_buf_reserve moves what is left to the front when the next
     * answer needs the room, which keeps the buffer from creeping. */
    ems_buf_consume(&c->bulk, n);
    return 0;
}

/* Starts one write, unless a write is in flight: everything in the urgent
 * lane (the two buffers swap roles, so the steady state allocates nothing),
 * or else the next bulk slice. */
static void conn_flush(ems_link_conn_t *c)
{
    if (c->closing || !c->started || ems_buf_len(&c->inflight))
        return;
    if (ems_buf_len(&c->pending)) {
        ems_buf_swap(&c->inflight, &c->pending);
    } else if (ems_buf_len(&c->bulk)) {
        if (bulk_take(c) < 0) {
            ems_log_warn("%s: out of memory while writing", c->name);
            ems_link_conn_close(c, EMS_ENOMEM);
            return;
        }
    } else {
        return;
    }
    uv_buf_t buf = uv_buf_init(ems_buf_at(&c->inflight, 0), (unsigned)ems_buf_len(&c->inflight));
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &buf, 1, write_cb);
    if (rc < 0) {
        ems_buf_clear(&c->inflight);
        ems_log_warn("%s: write failed: %s", c->name, uv_strerror(rc));
        ems_link_conn_close(c, rc);
    }
}

size_t ems_link_conn_queued(const ems_link_conn_t *c)
{
    return ems_buf_len(&c->pending) + ems_buf_len(&c->inflight) + ems_link_conn_bulk_queued(c);
}

size_t ems_link_conn_bulk_queued(const ems_link_conn_t *c)
{
    return ems_buf_len(&c->bulk);
}

static int conn_room(ems_link_conn_t *c, size_t len)
{
    if (c->closing || c->failing)
        return EMS_ECLOSED;
    size_t q = ems_buf_len(&c->pending) + ems_buf_len(&c->inflight);
    if (q > 0 && q + len > c->max_queued)
        return EMS_ENOSPC;
    return 0;
}

int ems_link_conn_send(ems_link_conn_t *c, ems_link_kind_t kind, const void *payload, size_t len)
{
    if (len + 1 > EMS_LINK_FRAME_MAX)
        return EMS_EMSGSIZE;
    int rc = conn_room(c, len + EMS_LINK_HEADER);
    if (rc < 0)
        return rc;
    rc = put_frame(&c->pending, kind, NULL, 0, payload, len);
    if (rc < 0)
        return rc;
    conn_flush(c);
    return 0;
}

int ems_link_conn_send_raw(ems_link_conn_t *c, const void *frames, size_t len)
{
    int rc = conn_room(c, len);
    if (rc < 0)
        return rc;
    rc = ems_link_put_bytes(&c->pending, frames, len);
    if (rc < 0)
        return rc;
    conn_flush(c);
    return 0;
}

/* True when `p` holds only whole frames of a sane length. */
static bool frames_whole(const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        if (len - off < EMS_LINK_HEADER)
            return false;
        uint32_t flen = rdbe32(p + off);
        if (flen == 0 || flen > EMS_LINK_FRAME_MAX || flen > len - off - 4)
            return false;
        off += 4 + (size_t)flen;
    }
    return len > 0;
}

int ems_link_conn_send_bulk(ems_link_conn_t *c, const void *frames, size_t len)
{
    if (c->closing || c->failing)
        return EMS_ECLOSED;
    if (!frames_whole(frames, len))
        return EMS_EINVAL;
    size_t q = ems_link_conn_bulk_queued(c);
    if (q > 0 && q + len > c->max_bulk)
        return EMS_ENOSPC;
    int rc = ems_link_put_bytes(&c->bulk, frames, len);
    if (rc < 0)
        return rc;
    conn_flush(c);
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ems_link_conn_t *c = h->data;
    uint8_t *p = NULL;
    size_t cap = 0;
    if (suggested < 16384)
        suggested = 16384;
    if (ems_link_decoder_reserve(&c->dec, suggested, &p, &cap) < 0)
        cap = 0; /* libuv reports UV_ENOBUFS; read_cb closes */
    *buf = uv_buf_init((char *)p, (unsigned)(cap > UINT32_MAX ? UINT32_MAX : cap));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    ems_link_conn_t *c = s->data;
    if (c->closing)
        return;
    if (nread == UV_EOF) {
        ems_log_info("%s: the peer closed the link", c->name);
        ems_link_conn_close(c, EMS_ECLOSED);
        return;
    }
    if (nread < 0) {
        ems_log_warn("%s: read failed: %s", c->name, uv_strerror((int)nread));
        ems_link_conn_close(c, (int)nread);
        return;
    }
    ems_link_decoder_commit(&c->dec, (size_t)nread);
    conn_process(c);
}

static void conn_read_start(ems_link_conn_t *c)
{
    if (c->reading || c->paused || c->closing || !c->started)
        return;
    int rc = uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb);
    if (rc < 0) {
        ems_log_warn("%s: cannot read: %s", c->name, uv_strerror(rc));
        ems_link_conn_close(c, rc);
        return;
    }
    c->reading = true;
}

static void conn_hello(ems_link_conn_t *c, const ems_link_frame_t *f)
{
    uint32_t version;
    const char *info;
    size_t ilen;
    if (ems_link_parse_hello(f, &version, &info, &ilen) < 0) {
        ems_link_conn_fail(c, EMS_EPROTO, "malformed hello (bad magic or length)");
        return;
    }
    if (version != EMS_LINK_VERSION) {
        char text[128];
        snprintf(text, sizeof text, "unsupported link protocol version %u (this side speaks %u)",
                 (unsigned)version, EMS_LINK_VERSION);
        ems_link_conn_fail(c, EMS_EPROTO, text);
        return;
    }
    c->ready = true;
    if (c->cb.on_ready)
        c->cb.on_ready(c, c->ud, info, ilen);
}

/* Hands out every whole frame until paused, closing, or out of bytes. */
static void conn_process(ems_link_conn_t *c)
{
    while (!c->paused && !c->closing && !c->failing) {
        ems_link_frame_t f;
        int rc = ems_link_decoder_next(&c->dec, &f);
        if (rc == 0)
            break;
        if (rc < 0) {
            char text[128];
            snprintf(text, sizeof text, "bad frame: %s",
                     rc == EMS_EMSGSIZE ? "length above the limit" : "zero length or unknown kind");
            ems_link_conn_fail(c, rc, text);
            return;
        }
        if (!c->ready) {
            if (f.kind == EMS_LINK_HELLO)
                conn_hello(c, &f);
            else if (f.kind == EMS_LINK_ERROR)
                goto peer_error;
            else
                ems_link_conn_fail(c, EMS_EPROTO, "the first frame must be hello");
            continue;
        }
        if (f.kind == EMS_LINK_HELLO) {
            ems_link_conn_fail(c, EMS_EPROTO, "hello sent twice");
            return;
        }
        if (f.kind == EMS_LINK_ERROR) {
        peer_error:
            ems_log_warn("%s: the peer refused the link: %.*s", c->name,
                         (int)(f.len > EMS_LINK_REASON_MAX ? EMS_LINK_REASON_MAX : f.len),
                         (const char *)f.payload);
            ems_link_conn_close(c, EMS_EPROTO);
            return;
        }
        if (c->cb.on_frame)
            c->cb.on_frame(c, c->ud, &f);
    }
    if (c->paused && c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
}

static void kick_cb(uv_timer_t *t)
{
    ems_link_conn_t *c = t->data;
    conn_process(c);
    conn_read_start(c);
}

void ems_link_conn_pause(ems_link_conn_t *c)
{
    if (c->paused || c->closing)
        return;
    c->paused = true;
    uv_timer_stop(&c->kick);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
}

void ems_link_conn_resume(ems_link_conn_t *c)
{
    if (!c->paused || c->closing || c->failing)
        return;
    c->paused = false;
    if (c->started)
        uv_timer_start(&c->kick, kick_cb, 0, 0);
}

bool ems_link_conn_paused(const ems_link_conn_t *c)
{
    return c->paused;
}

void *ems_link_conn_data(const ems_link_conn_t *c)
{
    return c->ud;
}

void ems_link_conn_set_data(ems_link_conn_t *c, void *ud)
{
    c->ud = ud;
}

/* Allocates a connection with its handles initialised on `loop`. */
static int conn_new(uv_loop_t *loop, const ems_link_conn_opts_t *o, const ems_link_conn_cb_t *cb,
                    void *ud, ems_link_conn_t **out)
{
    ems_link_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return EMS_ENOMEM;
    if (o && o->hello_info && !(c->hello_info = strdup(o->hello_info))) {
        free(c);
        return EMS_ENOMEM;
    }
    int rc = uv_pipe_init(loop, &c->pipe, 0);
    if (rc < 0) {
        free(c->hello_info);
        free(c);
        return rc;
    }
    uv_timer_init(loop, &c->kick);
    uv_timer_init(loop, &c->deadline);
    c->pipe.data = c->kick.data = c->deadline.data = c;
    c->open_handles = 3;
    ems_link_decoder_init(&c->dec, o ? o->max_frame : 0);
    ems_buf_init(&c->pending, EMS_BUF_UNBOUNDED); /* bounded by max_queued */
    ems_buf_init(&c->inflight, EMS_BUF_UNBOUNDED);
    ems_buf_init(&c->bulk, EMS_BUF_UNBOUNDED); /* bounded by max_bulk */
    c->max_queued = (o && o->max_queued) ? o->max_queued : (16u << 20);
    c->max_bulk = (o && o->max_bulk) ? o->max_bulk : (64u << 20);
    snprintf(c->name, sizeof c->name, "%s", (o && o->name) ? o->name : "link");
    c->cb = *cb;
    c->ud = ud;
    /* HELLO goes first in the queue, ahead of anything the caller sends
     * before the connection is established. */
    const char *info = c->hello_info ? c->hello_info : "";
    if (ems_link_put_hello(&c->pending, info, strlen(info)) < 0) {
        c->cb.on_close = NULL;
        ems_link_conn_close(c, EMS_ENOMEM);
        return EMS_ENOMEM;
    }
    *out = c;
    return 0;
}

/* Connected or accepted: write what is queued (our HELLO first) and read. */
static void conn_start(ems_link_conn_t *c)
{
    c->started = true;
    conn_flush(c);
    conn_read_start(c);
}

static void connect_cb(uv_connect_t *req, int status)
{
    ems_link_conn_t *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        ems_link_conn_close(c, status);
        return;
    }
    conn_start(c);
}

int ems_link_conn_connect(uv_loop_t *loop, const char *path, const ems_link_conn_opts_t *o,
                          const ems_link_conn_cb_t *cb, void *ud, ems_link_conn_t **out)
{
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return EMS_EINVAL;
    ems_link_conn_t *c;
    int rc = conn_new(loop, o, cb, ud, &c);
    if (rc < 0)
        return rc;
    c->creq.data = c;
    uv_pipe_connect(&c->creq, &c->pipe, path, connect_cb);
    *out = c;
    return 0;
}

int ems_link_conn_accept(uv_stream_t *server, const ems_link_conn_opts_t *o,
                         const ems_link_conn_cb_t *cb, void *ud, ems_link_conn_t **out)
{
    ems_link_conn_t *c;
    int rc = conn_new(server->loop, o, cb, ud, &c);
    if (rc < 0)
        return rc;
    rc = uv_accept(server, (uv_stream_t *)&c->pipe);
    if (rc < 0) {
        /* Nothing was delivered yet: close silently and report the error. */
        c->cb.on_close = NULL;
        ems_link_conn_close(c, rc);
        return rc;
    }
    *out = c;
    conn_start(c);
    return 0;
}

int ems_link_listen(uv_pipe_t *server, const char *path, uv_connection_cb cb)
{
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return EMS_EINVAL;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return EMS_EEXIST; /* never delete a file that is not a socket */
        unlink(path);
    }
    int rc = uv_pipe_bind(server, path);
    if (rc < 0)
        return rc;
    chmod(path, 0660);
    return uv_listen((uv_stream_t *)server, 16, cb);
}
