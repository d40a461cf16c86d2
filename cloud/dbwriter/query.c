/* query.c: the QUERY operations (see query.h, docs/protocol.md 5.5). */
#include "query.h"

#include "error.h"
#include "jsonw.h"
#include "link.h"
#include "log.h"
#include "status.h"
#include "telemetry.h"
#include "timefmt.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every answer must fit one link frame (1 MiB): a raw row is ~170 bytes of
 * JSON, a bucket ~250, a latest packet ~450. */
#define RAW_LIMIT 5000      /* rows per raw answer; more sets "truncated" */
#define BUCKET_LIMIT 4000   /* buckets per downsampled answer */
#define LATEST_MAX_IDS 2000 /* device ids per latest query (ask in pages) */
#define ENERGY_BUCKETS_MAX 1200 /* days or months per energy answer (~300 bytes each) */

/* A time as SQL: Unix ms as an int8 parameter, exact (no float). */
#define TS(n) "(TIMESTAMPTZ 'epoch' + $" #n "::int8 * INTERVAL '1 millisecond')"
#define MS(col) "floor(extract(epoch FROM " col ") * 1000)::int8"
#define ORIGIN "TIMESTAMPTZ '1970-01-01 00:00:00+00'"

static const char SQL_RAW[] =
    "SELECT " MS("ts") ", seq, state, mode, target_mode, error_flags, wifi_strength,"
    " battery_voltage, battery_current, battery_power, battery_soc, battery_temperature,"
    " grid_voltage, grid_power, grid_frequency, clock_synced, backfill"
    " FROM telemetry WHERE device_id = $1 AND ts >= " TS(2) " AND ts < " TS(3)
    " ORDER BY ts, seq LIMIT $4::int8";

/* Names of the columns of SQL_RAW as they appear in the answer. */
static const char *const RAW_NAMES[] = {
    "ts",          "seq",          "state",           "mode",
    "target_mode", "error_flags",  "wifi_strength",   "battery_voltage",
    "battery_current", "battery_power", "battery_soc", "battery_temperature",
    "grid_voltage", "grid_power",  "grid_frequency",  "clock_synced",
    "backfill",
};

/* Measurements that are downsampled. */
#define NFIELDS 8
static const char *const FIELDS[NFIELDS] = {
    "battery_voltage", "battery_current", "battery_power", "battery_soc",
    "battery_temperature", "grid_voltage", "grid_power", "grid_frequency",
};

#define BUCKET_FROM_RAW_FIELD(f)                                                         \
    ", min(" f "), max(" f "), avg(" f "::float8)::real"
static const char SQL_BUCKET_RAW[] =
    "SELECT " MS("date_bin($4::int8 * INTERVAL '1 second', ts, " ORIGIN ")") " AS b, count(*)"
    BUCKET_FROM_RAW_FIELD("battery_voltage") BUCKET_FROM_RAW_FIELD("battery_current")
    BUCKET_FROM_RAW_FIELD("battery_power") BUCKET_FROM_RAW_FIELD("battery_soc")
    BUCKET_FROM_RAW_FIELD("battery_temperature") BUCKET_FROM_RAW_FIELD("grid_voltage")
    BUCKET_FROM_RAW_FIELD("grid_power") BUCKET_FROM_RAW_FIELD("grid_frequency")
    " FROM telemetry WHERE device_id = $1 AND ts >= " TS(2) " AND ts < " TS(3)
    " GROUP BY 1 ORDER BY 1 LIMIT $5::int8";

/* Re-bucketing a rollup: counts and sums add up, min of mins, max of maxes;
 * the result equals the one computed from raw rows (up to float rounding
 * in the averages). `src` has the columns of telemetry_1m. */
#define BUCKET_FROM_ROLLUP_FIELD(f, n)                                                   \
    ", min(" f "_min), max(" f "_max), (sum(" f "_sum) / nullif(sum(" n "), 0))::real"
#define BUCKET_OVER(src, tcol, where)                                                    \
    "SELECT " MS("date_bin($4::int8 * INTERVAL '1 second', " tcol ", " ORIGIN ")") " AS b,"  \
    " sum(n)::int8" BUCKET_FROM_ROLLUP_FIELD("battery_voltage", "n")                     \
        BUCKET_FROM_ROLLUP_FIELD("battery_current", "n")                                 \
            BUCKET_FROM_ROLLUP_FIELD("battery_power", "n")                               \
                BUCKET_FROM_ROLLUP_FIELD("battery_soc", "n")                             \
                    BUCKET_FROM_ROLLUP_FIELD("battery_temperature", "n_temp")            \
                        BUCKET_FROM_ROLLUP_FIELD("grid_voltage", "n")                    \
                            BUCKET_FROM_ROLLUP_FIELD("grid_power", "n")                  \
                                BUCKET_FROM_ROLLUP_FIELD("grid_frequency", "n")          \
    " FROM " src " " where " GROUP BY 1 HAVING sum(n) > 0 ORDER BY 1 LIMIT $5::int8"
#define SQL_BUCKET_CAGG(table)                                                           \
    BUCKET_OVER(table, "bucket",                                                        \
                "WHERE device_id = $1 AND bucket >= " TS(2) " AND bucket < " TS(3))
/* TimescaleDB: real-time continuous aggregates. */
static const char SQL_BUCKET_1M[] = SQL_BUCKET_CAGG("telemetry_1m");
static const char SQL_BUCKET_1H[] = SQL_BUCKET_CAGG("telemetry_1h");

/* Plain PostgreSQL: the rollup below its watermark, raw rows above it (the
 * minutes the rollup step has not reached yet), re-bucketed together, so
 * the answer is complete up to the last committed row. */
#define RAW_AS_ROLLUP(f) ", " f " AS " f "_min, " f " AS " f "_max, " f "::float8 AS " f "_sum"
#define WATERMARK "(SELECT watermark FROM ems_rollup_state)"
static const char SQL_BUCKET_1M_PG[] = BUCKET_OVER(
    "(SELECT bucket AS t, n, n_temp, battery_voltage_min, battery_voltage_max, battery_voltage_sum,"
    " battery_current_min, battery_current_max, battery_current_sum, battery_power_min,"
    " battery_power_max, battery_power_sum, battery_soc_min, battery_soc_max, battery_soc_sum,"
    " battery_temperature_min, battery_temperature_max, battery_temperature_sum, grid_voltage_min,"
    " grid_voltage_max, grid_voltage_sum, grid_power_min, grid_power_max, grid_power_sum,"
    " grid_frequency_min, grid_frequency_max, grid_frequency_sum"
    " FROM telemetry_1m WHERE device_id = $1 AND bucket >= " TS(2)
    " AND bucket < least(" TS(3) ", " WATERMARK ")"
    " UNION ALL"
    " SELECT ts, 1, (battery_temperature IS NOT NULL)::int" RAW_AS_ROLLUP("battery_voltage")
        RAW_AS_ROLLUP("battery_current") RAW_AS_ROLLUP("battery_power") RAW_AS_ROLLUP("battery_soc")
            ", battery_temperature, battery_temperature, coalesce(battery_temperature::float8, 0)"
                RAW_AS_ROLLUP("grid_voltage") RAW_AS_ROLLUP("grid_power") RAW_AS_ROLLUP("grid_frequency")
    " FROM telemetry WHERE device_id = $1 AND ts >= greatest(" TS(2) ", " WATERMARK ")"
    " AND ts < " TS(3) ") p",
    "t", "");

#define LATEST_COLS                                                                      \
    "t.device_id, " MS("t.ts") ", " MS("t.received_at") ", t.seq, t.state, t.mode,"      \
    " t.target_mode, t.target_power, t.error_flags, t.wifi_strength, t.battery_voltage," \
    " t.battery_current, t.battery_power, t.battery_soc, t.battery_temperature,"         \
    " t.grid_voltage, t.grid_power, t.grid_frequency, t.clock_synced, t.backfill"
/* Newest timestamp wins (then the highest seq): a backfilled packet, however
 * late it arrives, never replaces a newer live one. */
#define LATEST_LATERAL                                                                   \
    " CROSS JOIN LATERAL (SELECT * FROM telemetry x WHERE x.device_id = d.id"            \
    " ORDER BY x.ts DESC, x.seq DESC LIMIT 1) t ORDER BY t.device_id"
static const char SQL_LATEST_IDS[] =
    "SELECT " LATEST_COLS " FROM unnest($1::text[]) AS d(id)" LATEST_LATERAL;
static const char SQL_LATEST_ALL[] =
    "SELECT " LATEST_COLS " FROM (SELECT device_id AS id FROM devices) d" LATEST_LATERAL;

/* Commands with their status history, newest first; json_build_object
 * lists the members so the answer's shape is fixed here. */
static const char SQL_COMMANDS[] =
    "SELECT coalesce(json_agg(json_build_object('command_id', command_id, 'device_id', device_id,"
    " 'action', action, 'payload', payload, 'status', status, 'created_by', created_by,"
    " 'created_at', ems_rfc3339(created_at), 'updated_at', ems_rfc3339(updated_at),"
    " 'expires_at', ems_rfc3339(expires_at),"
    " 'events', (SELECT coalesce(json_agg(json_build_object('status', e.status,"
    " 'at', ems_rfc3339(e.at), 'reason', e.reason, 'message', e.message, 'actor', e.actor)"
    " ORDER BY e.at, e.status), '[]') FROM command_events e WHERE e.command_id = c.command_id))"
    " ORDER BY created_at DESC, command_id), '[]')::text"
    " FROM (SELECT * FROM commands"
    " WHERE ($1::text IS NULL OR device_id = $1) AND ($2::text IS NULL OR command_id = $2)"
    " AND ($3::int8 IS NULL OR created_at < " TS(3) ")"
    " ORDER BY created_at DESC, command_id LIMIT $4::int8) c";

static const char SQL_SESSIONS[] =
    "SELECT coalesce(json_agg(json_build_object('device_id', device_id,"
    " 'connected_at', ems_rfc3339(connected_at), 'disconnected_at', ems_rfc3339(disconnected_at),"
    " 'remote', remote, 'gateway', gateway, 'reason', reason)"
    " ORDER BY connected_at DESC, device_id), '[]')::text"
    " FROM (SELECT * FROM device_sessions"
    " WHERE ($1::text IS NULL OR device_id = $1)"
    " AND ($2::int8 IS NULL OR coalesce(disconnected_at, 'infinity') >= " TS(2) ")"
    " AND ($3::int8 IS NULL OR connected_at < " TS(3) ")"
    " ORDER BY connected_at DESC, device_id LIMIT $4::int8) s";

/* Devices whose newest packet is older than $1 ms and that have no open
 * offline alarm: the gateways' sweep for devices none of them saw go
 * (docs/alarms.md). One index probe per device (telemetry by device and
 * time), oldest first. */
static const char SQL_SILENT[] =
    "SELECT coalesce(json_agg(json_build_object('device_id', s.device_id, 'last_ms', s.last_ms)"
    " ORDER BY s.last_ms), '[]')::text FROM ("
    " SELECT d.device_id, (extract(epoch FROM t.ts) * 1000)::int8 AS last_ms FROM devices d"
    " CROSS JOIN LATERAL (SELECT x.ts FROM telemetry x WHERE x.device_id = d.device_id"
    " ORDER BY x.ts DESC LIMIT 1) t"
    " WHERE d.revoked_at IS NULL AND t.ts < now() - $1::int8 * interval '1 millisecond'"
    " AND NOT EXISTS (SELECT 1 FROM alarms a WHERE a.device_id = d.device_id"
    " AND a.rule = 'offline' AND a.cleared_at IS NULL)"
    " ORDER BY t.ts LIMIT $2::int8) s";

/* Alarms (0006_alarms.sql, docs/alarms.md), newest first; "open" is
 * active or acknowledged. */
static const char SQL_ALARMS[] =
    "SELECT coalesce(json_agg(ems_alarm_json(s.r) ORDER BY (s.r).raised_at DESC,"
    " (s.r).alarm_id DESC), '[]')::text"
    " FROM (SELECT x AS r FROM alarms x"
    " WHERE ($1::text IS NULL OR x.device_id = $1)"
    " AND ($2::text IS NULL OR ($2 = 'open' AND x.cleared_at IS NULL) OR ems_alarm_state(x) = $2)"
    " AND ($3::int8 IS NULL OR x.alarm_id = $3::int8)"
    " ORDER BY x.raised_at DESC, x.alarm_id DESC LIMIT $4::int8) s";

/* A webhook's outbox: take or renew the lease ($2 the gateway, $3 seconds)
 * and read the events after its cursor, oldest first. A webhook seen for
 * the first time starts after the newest event (it gets what happens from
 * now on). One statement, so the lease and the read agree. */
static const char SQL_WEBHOOK_CLAIM[] =
    "WITH ins AS (INSERT INTO webhook_cursors (name, last_event_id, lease_owner, lease_until)"
    " SELECT $1, coalesce((SELECT max(event_id) FROM alarm_events), 0), $2,"
    " now() + $3::int8 * INTERVAL '1 second'"
    " ON CONFLICT (name) DO NOTHING RETURNING last_event_id),"
    " claim AS (UPDATE webhook_cursors SET lease_owner = $2,"
    " lease_until = now() + $3::int8 * INTERVAL '1 second'"
    " WHERE name = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now())"
    " RETURNING last_event_id),"
    " cur AS (SELECT last_event_id FROM claim UNION ALL SELECT last_event_id FROM ins)"
    " SELECT EXISTS (SELECT 1 FROM cur),"
    " coalesce((SELECT json_agg(json_build_object('type', 'alarm.' || e.kind,"
    " 'event_id', e.event_id, 'at', ems_rfc3339(e.at), 'actor', e.actor,"
    " 'alarm', ems_alarm_json(a)) ORDER BY e.event_id)"
    " FROM (SELECT * FROM alarm_events WHERE event_id > (SELECT max(last_event_id) FROM cur)"
    " ORDER BY event_id LIMIT $4::int8) e JOIN alarms a ON a.alarm_id = e.alarm_id), '[]')::text";

/* Moves the cursor past a delivered (or dead-lettered, $4) event, only for
 * the lease holder. */
static const char SQL_WEBHOOK_ADVANCE[] =
    "UPDATE webhook_cursors SET last_event_id = greatest(last_event_id, $3::int8),"
    " delivered = delivered + CASE WHEN $4::bool THEN 0 ELSE 1 END,"
    " dead = dead + CASE WHEN $4::bool THEN 1 ELSE 0 END"
    " WHERE name = $1 AND lease_owner = $2 RETURNING last_event_id";

static const char SQL_DEVICE_AUTH[] =
    "SELECT device_id, token_hash, revoked_at IS NOT NULL, ems_rfc3339(revoked_at)"
    " FROM devices WHERE device_id = $1";

/* Many devices in one statement (a gateway's batched lookups during a
 * reconnect storm): one index probe per id, one round trip for all. */
static const char SQL_DEVICE_AUTHS[] =
    "SELECT device_id, token_hash, revoked_at IS NOT NULL, ems_rfc3339(revoked_at)"
    " FROM devices WHERE device_id = ANY($1::text[])";

#define DEVICE_AUTHS_MAX 1000 /* ids in one device_auths query */

static const char SQL_USER[] = "SELECT name, role, password_hash FROM users WHERE name = $1";

static const char SQL_DEVICES[] =
    "SELECT coalesce(json_agg(json_build_object('device_id', device_id,"
    " 'created_at', ems_rfc3339(created_at), 'revoked_at', ems_rfc3339(revoked_at))"
    " ORDER BY device_id), '[]')::text FROM devices";

/* Energy per local day or month (docs/energy.md), from the energy rollups
 * (0005_energy): per device and minute, and per device and hour, the
 * sample count and the first and last counter vectors. Parameters: $1
 * device id or NULL for the whole fleet, $2/$3 the range as Unix ms or a
 * local date (YYYY-MM-DD or YYYY-MM), $4 the time zone, $5 'day' or
 * 'month'.
 *
 *   p0  the range: lo = the start of the local day/month holding `from`,
 *       hi = `to` (a local date means its local midnight);
 *   k   the local buckets of the range (every one is answered);
 *   p   lim: where the rollups end (hi, or the plain rollup's watermark);
 *       eh: the UTC hours in [lo, lim) that a bucket edge (or lim) cuts:
 *       only zones with half-hour offsets have such edges inside;
 *   s   the items in [lo, hi): whole hours with one counter series, the
 *       minutes of the other whole hours, the minutes of the cut hours,
 *       and in plain PostgreSQL mode the raw rows above the watermark;
 *   m   s plus, per device, the last item before lo (at most
 *       ENERGY_LOOKBACK back), so the first one has a predecessor;
 *   e   in time order per device, with the previous item's last vector;
 *   g   summed per local bucket (ems_energy_delta: differences within a
 *       series, a new series counted from 0, a gap credited to the item
 *       that ends it), with the samples and covered minutes. */
#define ENERGY_LOOKBACK "INTERVAL '62 days'"
#define ENERGY_TIME(n)                                                                   \
    "(CASE WHEN $" #n "::text ~ '^-?[0-9]+$' THEN TIMESTAMPTZ 'epoch' + $" #n "::text::int8"  \
    " * INTERVAL '1 millisecond' ELSE (CASE WHEN length($" #n "::text) = 7 THEN $" #n "::text"  \
    " || '-01' ELSE $" #n "::text END)::date::timestamp AT TIME ZONE $4::text END)"
#define ENERGY_DEV(col) "($1::text IS NULL OR " col " = $1)"
#define ENERGY_VEC                                                                       \
    "ems_energy_vec(energy_since, energy_charged_mwh, energy_discharged_mwh,"            \
    " energy_import_mwh, energy_export_mwh)"
#define HOUR(x) "date_bin('1 hour', " x ", " ORIGIN ")"
#define ENERGY_WH(k) "round(sum(ems_energy_delta(pl, f, l, " #k "))::numeric / 1000, 3)"
/* minutes: the minute table; mend: where minutes end (exclusive); raw:
 * more items (" UNION ALL ...") or ""; raw_prev: a prev candidate or "". */
/* The range as InitPlan parameters (scalar subqueries), so that they reach
 * the indexes (a join with the CTE would filter after the scan). */
#define LO "(SELECT lo FROM p)"
#define HI "(SELECT hi FROM p)"
#define LIM "(SELECT lim FROM p)"
#define EH "(SELECT eh FROM p)::timestamptz[]"
/* OFFSET 0 keeps the planner from turning a LATERAL lookup of one hour's
 * minutes into a hash join over all minutes of the table. */
#define ENERGY_SQL(minutes, mend, raw, raw_prev)                                          \
    "WITH p0 AS (SELECT date_trunc($5::text, " ENERGY_TIME(2) ", $4::text) AS lo,"          \
    " " ENERGY_TIME(3) " AS hi),"                                                        \
    " k AS (SELECT z AT TIME ZONE $4::text AS b,"                                        \
    " (z + ('1 ' || $5::text)::interval) AT TIME ZONE $4::text AS b_end"                 \
    " FROM p0, generate_series(p0.lo AT TIME ZONE $4::text, p0.hi AT TIME ZONE $4::text," \
    " ('1 ' || $5::text)::interval) z WHERE z AT TIME ZONE $4::text < p0.hi),"            \
    " p AS (SELECT lo, hi, lim, ARRAY(SELECT DISTINCT " HOUR("x") " FROM (SELECT b FROM k"  \
    " UNION ALL SELECT lim) e(x) WHERE x <> " HOUR("x") " AND x >= lo AND x <= lim"        \
    " AND lim > lo) AS eh FROM (SELECT lo, hi, least(hi, " mend ") AS lim FROM p0) q),"    \
    " s AS (SELECT device_id, bucket AS t, n_energy AS n, minutes AS mins, energy_first AS f," \
    " energy_last AS l FROM telemetry_energy_1h WHERE " ENERGY_DEV("device_id")             \
    " AND bucket >= " LO " AND bucket <= " LIM " - INTERVAL '1 hour' AND bucket <> ALL (" EH ")" \
    " AND energy_first[1] = energy_last[1]"                                              \
    " UNION ALL"                                                                         \
    " SELECT x.device_id, x.bucket, x.n_energy, 1, x.energy_first, x.energy_last"        \
    " FROM telemetry_energy_1h h CROSS JOIN LATERAL (SELECT * FROM " minutes               \
    " WHERE device_id = h.device_id AND bucket >= h.bucket"                              \
    " AND bucket < h.bucket + INTERVAL '1 hour' AND n_energy > 0 OFFSET 0) x"            \
    " WHERE " ENERGY_DEV("h.device_id") " AND h.bucket >= " LO                           \
    " AND h.bucket <= " LIM " - INTERVAL '1 hour'"                                       \
    " AND h.bucket <> ALL (" EH ") AND h.energy_first[1] <> h.energy_last[1]"            \
    " UNION ALL"                                                                         \
    " SELECT x.device_id, x.bucket, x.n_energy, 1, x.energy_first, x.energy_last"        \
    " FROM unnest(" EH ") eh CROSS JOIN LATERAL (SELECT * FROM " minutes " WHERE "        \
    ENERGY_DEV("device_id") " AND bucket >= greatest(eh, " LO ")"                         \
    " AND bucket < least(eh + INTERVAL '1 hour', " LIM ") AND n_energy > 0 OFFSET 0) x"   \
    raw "),"                                                                             \
" m AS (SELECT * FROM s UNION ALL SELECT y.* FROM (SELECT DISTINCT device_id AS id FROM s) dv" \
    " CROSS JOIN LATERAL (SELECT * FROM ("                                               \
    "(SELECT device_id, bucket AS t, n_energy AS n, minutes AS mins, energy_first AS f,"  \
    " energy_last AS l FROM telemetry_energy_1h WHERE device_id = dv.id"                 \
    " AND bucket <= " LO " - INTERVAL '1 hour' AND bucket >= " LO " - " ENERGY_LOOKBACK       \
    " ORDER BY bucket DESC LIMIT 1)"                                                     \
    " UNION ALL"                                                                         \
    " (SELECT device_id, bucket, n_energy, 1, energy_first, energy_last FROM " minutes    \
    " WHERE device_id = dv.id AND bucket < least(" LO ", " mend ")"                      \
    " AND bucket > " LO " - INTERVAL '1 hour' AND n_energy > 0 ORDER BY bucket DESC LIMIT 1)" \
    raw_prev ") c ORDER BY t DESC LIMIT 1) y),"                                          \
    " e AS (SELECT device_id, t, n, mins, f, l,"                                         \
    " lag(l) OVER (PARTITION BY device_id ORDER BY t) AS pl FROM m),"                    \
    " g AS (SELECT date_trunc($5::text, t, $4::text) AS b, sum(n)::int8 AS samples,"     \
    " coalesce(sum(mins), 0) + count(DISTINCT CASE WHEN mins IS NULL THEN"               \
    " (device_id, date_bin('1 minute', t, " ORIGIN ")) END) AS minutes,"                 \
    " count(DISTINCT device_id) AS devices,"                                             \
    " " ENERGY_WH(2) " AS c, " ENERGY_WH(3) " AS d, " ENERGY_WH(4) " AS i, " ENERGY_WH(5) " AS x" \
    " FROM e WHERE t >= " LO " GROUP BY 1)"                                             \
    " SELECT (SELECT count(*) FROM k),"                                                  \
    " coalesce(json_agg(json_build_object('start', ems_rfc3339(k.b), 'end', ems_rfc3339(k.b_end)," \
    " 'local', to_char(k.b AT TIME ZONE $4::text, CASE WHEN $5::text = 'day' THEN 'YYYY-MM-DD'" \
    " ELSE 'YYYY-MM' END), 'length_s', extract(epoch FROM k.b_end - k.b)::int8,"         \
    " 'samples', coalesce(g.samples, 0), 'covered_s', coalesce(g.minutes, 0) * 60,"       \
    " 'devices', coalesce(g.devices, 0),"                                                \
    " 'battery_charged_wh', g.c, 'battery_discharged_wh', g.d,"                          \
    " 'grid_import_wh', g.i, 'grid_export_wh', g.x) ORDER BY k.b), '[]')::text"          \
    " FROM k LEFT JOIN g ON g.b = k.b"

/* TimescaleDB: the real-time continuous aggregates telemetry_energy_1m and
 * telemetry_energy_1h (complete up to the last committed row). */
static const char SQL_ENERGY_CAGG[] = ENERGY_SQL("telemetry_energy_1m", "'infinity'", "", "");

/* Plain PostgreSQL: telemetry_1m and telemetry_energy_1h below the rollup's
 * watermark (both written by ems_rollup_step), raw rows above it. */
static const char SQL_ENERGY_PG[] = ENERGY_SQL(
    "telemetry_1m", WATERMARK,
    " UNION ALL SELECT device_id, ts, 1, NULL::int, v, v FROM (SELECT device_id, ts, " ENERGY_VEC
    " AS v FROM telemetry WHERE " ENERGY_DEV("device_id")
    " AND ts >= greatest(" LO ", " WATERMARK ") AND ts < " HI " AND energy_since IS NOT NULL) r",
    " UNION ALL (SELECT device_id, ts, 1, NULL::int, " ENERGY_VEC ", " ENERGY_VEC " FROM telemetry"
    " WHERE device_id = dv.id AND ts >= " WATERMARK " AND ts < " LO
    " AND energy_since IS NOT NULL ORDER BY ts DESC LIMIT 1)");

/* ------------------------------------------------------------------ JSON text */

/* Answers are built in an ems_buf_t with common/jsonw's string escaping.
 * Append errors (ENOMEM) are not checked one by one: q_done answers "out
 * of memory" when nothing could be allocated. */

/* A JSON string; `s` is UTF-8 from PostgreSQL (server encoding UTF8). */
static void put_str(ems_buf_t *b, const char *s)
{
    (void)ems_jw_buf_str(b, s, strlen(s));
}

/* A number from PostgreSQL's text; NaN and infinities have no JSON form
 * and are written as null. */
static void put_pg_num(ems_buf_t *b, const char *s)
{
    if (!*s || strchr(s, 'N') || strchr(s, 'n') || strchr(s, 'I'))
        ems_buf_append_str(b, "null");
    else
        ems_buf_append_str(b, s);
}

/* ------------------------------------------------------------------ module */

typedef struct qreq qreq_t;

/* Queries wait here, not in the pg connection's FIFO, so that the short
 * lookups that gate a device or a login (device_auth, user) overtake
 * history queries: the connection runs one statement at a time, and a
 * re-check after a revocation must not wait behind seconds of history. */
typedef struct {
    qreq_t *head, *tail;
} qfifo_t;

struct ems_query {
    ems_pg_t *pg;
    ems_query_opts_t o;
    unsigned inflight; /* waiting here or running */
    qfifo_t fast, slow;
    qreq_t *running;   /* the one handed to pg, or NULL */
};

typedef enum {
    OP_HISTORY_RAW,
    OP_HISTORY_BUCKET,
    OP_LATEST,
    OP_COMMANDS,
    OP_SESSIONS,
    OP_DEVICE_AUTH,
    OP_DEVICE_AUTHS,
    OP_USER,
    OP_DEVICES,
    OP_ENERGY,
    OP_ALARMS,
    OP_WEBHOOK_CLAIM,
    OP_WEBHOOK_ADVANCE,
    OP_SILENT,
} op_t;

#define MAXP 6

struct qreq {
    ems_pg_req_t req;
    ems_query_t *q;
    qreq_t *next; /* in a qfifo_t */
    uint64_t id;
    ems_query_done_cb cb;
    void *ud;
    op_t op;
    const char *sql;
    int np;
    char *p[MAXP];
    char device_id[EMS_DEVICE_ID_MAX + 1];
    int64_t width_s;
    int64_t limit;
    char energy_bucket[8];
    char energy_tz[65];
    ems_buf_t out;
    bool answered;
};

int ems_query_new(ems_pg_t *pg, const ems_query_opts_t *o, ems_query_t **out)
{
    ems_query_t *q = calloc(1, sizeof *q);
    if (!q)
        return EMS_ENOMEM;
    q->pg = pg;
    q->o = *o;
    if (!q->o.max_inflight)
        q->o.max_inflight = 256;
    *out = q;
    return 0;
}

void ems_query_set_storage(ems_query_t *q, ems_storage_t storage)
{
    q->o.storage = storage;
}

unsigned ems_query_inflight(const ems_query_t *q)
{
    return q->inflight;
}

void ems_query_free(ems_query_t *q)
{
    free(q);
}

static void answer_error(ems_query_done_cb cb, void *ud, uint64_t id, int status, const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));
static void answer_error(ems_query_done_cb cb, void *ud, uint64_t id, int status, const char *fmt,
                         ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s}", "error", msg);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        cb(ud, id, status, s, strlen(s));
    else
        cb(ud, id, status, "{\"error\":\"out of memory\"}", 25);
    free(s);
    json_decref(o);
}

static void qreq_free(qreq_t *r)
{
    for (int i = 0; i < MAXP; i++)
        free(r->p[i]);
    ems_buf_free(&r->out);
    free(r);
}

static char *fmt_i64(int64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)v);
    return strdup(b);
}

/* ------------------------------------------------------------------ request parsing */

/* A time member: integer ms or an RFC 3339 string. 0 absent, 1 read, <0 bad. */
static int get_time(json_t *req, const char *key, int64_t *out, char *err, size_t cap)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == (double)(int64_t)json_real_value(v)) {
        *out = (int64_t)json_real_value(v);
    } else if (json_is_string(v)) {
        if (ems_time_parse(json_string_value(v), json_string_length(v), out) < 0) {
            snprintf(err, cap, "%s: not an RFC 3339 UTC time", key);
            return EMS_EINVAL;
        }
    } else {
        snprintf(err, cap, "%s: expected a time (ms since the epoch or RFC 3339)", key);
        return EMS_EINVAL;
    }
    if (!ems_time_ms_valid(*out)) {
        snprintf(err, cap, "%s: out of range", key);
        return EMS_EINVAL;
    }
    return 1;
}

static int get_int(json_t *req, const char *key, int64_t min, int64_t max, int64_t *out, char *err,
                   size_t cap)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return 0;
    double d = json_is_integer(v) ? (double)json_integer_value(v)
                                  : json_is_real(v) ? json_real_value(v) : -1e300;
    if (d == -1e300 || d != (double)(int64_t)d) {
        snprintf(err, cap, "%s: expected an integer", key);
        return EMS_EINVAL;
    }
    if ((int64_t)d < min || (int64_t)d > max) {
        snprintf(err, cap, "%s: %lld is outside %lld..%lld", key, (long long)d, (long long)min,
                 (long long)max);
        return EMS_EINVAL;
    }
    *out = (int64_t)d;
    return 1;
}

/* A string member checked as a device id. 0 absent, 1 read, <0 bad. */
static int get_device(json_t *req, const char *key, char *out, char *err, size_t cap)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || !ems_device_id_valid(json_string_value(v), json_string_length(v))) {
        snprintf(err, cap, "%s: expected a device id (1..64 of [A-Za-z0-9_.-])", key);
        return EMS_EINVAL;
    }
    snprintf(out, EMS_DEVICE_ID_MAX + 1, "%s", json_string_value(v));
    return 1;
}

static int get_string(json_t *req, const char *key, size_t maxlen, const char **out, char *err,
                      size_t cap)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > maxlen ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, cap, "%s: expected a string of 1..%zu characters", key, maxlen);
        return EMS_EINVAL;
    }
    *out = json_string_value(v);
    return 1;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t ems_query_auto_width(int64_t span_ms, int64_t max_points)
{
    static const int64_t ladder[] = {1, 10, 60, 300, 900, 3600, 21600, 86400};
    if (max_points < 1)
        max_points = 1;
    for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++) {
        int64_t w = ladder[i] * 1000;
        if ((span_ms + w - 1) / w <= max_points)
            return ladder[i];
    }
    /* Longer than max_points days: whole days. */
    int64_t days = (span_ms / 86400000 + max_points - 1) / max_points + 1;
    return days * 86400;
}

static int parse_history(qreq_t *r, json_t *req, char *err, size_t cap)
{
    int rc = get_device(req, "device_id", r->device_id, err, cap);
    if (rc == 0) {
        snprintf(err, cap, "device_id: required");
        return EMS_EINVAL;
    }
    if (rc < 0)
        return rc;
    int64_t from, to, max_points = 1000;
    if ((rc = get_time(req, "from", &from, err, cap)) <= 0) {
        if (rc == 0)
            snprintf(err, cap, "from: required");
        return EMS_EINVAL;
    }
    if ((rc = get_time(req, "to", &to, err, cap)) <= 0) {
        if (rc == 0)
            snprintf(err, cap, "to: required");
        return EMS_EINVAL;
    }
    if (to <= from) {
        snprintf(err, cap, "to: must be after from");
        return EMS_EINVAL;
    }
    if (get_int(req, "max_points", 1, BUCKET_LIMIT, &max_points, err, cap) < 0)
        return EMS_EINVAL;
    json_t *res = json_object_get(req, "resolution");
    int64_t w;
    if (!res || json_is_null(res) || (json_is_string(res) && !strcmp(json_string_value(res), "auto"))) {
        w = ems_query_auto_width(to - from, max_points);
    } else if (json_is_string(res) && !strcmp(json_string_value(res), "raw")) {
        w = 1;
    } else if (get_int(req, "resolution", 1, 366LL * 86400, &w, err, cap) == 1) {
        /* an explicit width in seconds */
    } else {
        snprintf(err, cap, "resolution: expected \"auto\", \"raw\" or seconds (1..31622400)");
        return EMS_EINVAL;
    }
    r->p[0] = strdup(r->device_id);
    if (w == 1) {
        r->op = OP_HISTORY_RAW;
        r->sql = SQL_RAW;
        r->np = 4;
        r->limit = RAW_LIMIT;
        r->p[1] = fmt_i64(from);
        r->p[2] = fmt_i64(to);
        r->p[3] = fmt_i64(RAW_LIMIT + 1);
        r->width_s = 0;
        return 0;
    }
    /* Every bucket that overlaps [from, to) is answered whole, so that the
     * answer does not depend on which table served it. */
    int64_t wms = w * 1000;
    int64_t from_a = floor_div(from, wms) * wms;
    int64_t to_a = -floor_div(-to, wms) * wms;
    if ((to_a - from_a) / wms > BUCKET_LIMIT) {
        snprintf(err, cap, "resolution: %lld s gives more than %d buckets for this range",
                 (long long)w, BUCKET_LIMIT);
        return EMS_EINVAL;
    }
    r->op = OP_HISTORY_BUCKET;
    r->np = 5;
    r->width_s = w;
    r->limit = BUCKET_LIMIT;
    bool tsdb = r->q->o.storage == EMS_STORAGE_TIMESCALEDB;
    if (w % 3600 == 0 && tsdb)
        r->sql = SQL_BUCKET_1H;
    else if (w % 60 == 0)
        r->sql = tsdb ? SQL_BUCKET_1M : SQL_BUCKET_1M_PG;
    else
        r->sql = SQL_BUCKET_RAW;
    r->p[1] = fmt_i64(from_a);
    r->p[2] = fmt_i64(to_a);
    r->p[3] = fmt_i64(w);
    r->p[4] = fmt_i64(BUCKET_LIMIT + 1);
    return 0;
}

/* A range end for energy: Unix ms / RFC 3339 (get_time), or a local date
 * "YYYY-MM-DD" (day and month) or "YYYY-MM" (month) that SQL reads in the
 * time zone. The parameter text is stored in *out. 0 absent, 1 read, <0 bad. */
static int get_energy_time(json_t *req, const char *key, bool month, char **out, int64_t *ms,
                           char *err, size_t cap)
{
    json_t *v = json_object_get(req, key);
    if (json_is_string(v)) {
        const char *t = json_string_value(v);
        size_t n = json_string_length(v);
        bool date = n == 10 || n == 7;
        for (size_t i = 0; date && i < n; i++)
            date = (i == 4 || i == 7) ? t[i] == '-' : (t[i] >= '0' && t[i] <= '9');
        if (date && n == 10 && month) {
            snprintf(err, cap, "%s: expected YYYY-MM for month buckets", key);
            return EMS_EINVAL;
        }
        if (date) {
            int mo = (t[5] - '0') * 10 + (t[6] - '0');
            int d = n == 10 ? (t[8] - '0') * 10 + (t[9] - '0') : 1;
            if (mo < 1 || mo > 12 || d < 1 || d > 31 || t[0] == '0') {
                snprintf(err, cap, "%s: not a valid date", key);
                return EMS_EINVAL;
            }
            /* The date's UTC midnight: within a day of the local one, good
             * enough for the order and span checks. */
            char iso[32];
            snprintf(iso, sizeof iso, "%.*s%sT00:00:00Z", (int)n, t, n == 7 ? "-01" : "");
            if (ems_time_parse(iso, strlen(iso), ms) < 0) {
                snprintf(err, cap, "%s: not a valid date", key);
                return EMS_EINVAL;
            }
            *out = strndup(t, n);
            return 1;
        }
    }
    int rc = get_time(req, key, ms, err, cap);
    if (rc == 1)
        *out = fmt_i64(*ms);
    return rc;
}

/* {"op":"energy","device_id":id or absent for the fleet,"from":..,"to":..,
 *  "bucket":"day"|"month","time_zone":"Europe/Berlin"} (docs/energy.md). */
static int parse_energy(qreq_t *r, json_t *req, char *err, size_t cap)
{
    int rc = get_device(req, "device_id", r->device_id, err, cap);
    if (rc < 0)
        return rc;
    const char *bucket = "day", *tz = "UTC";
    if (get_string(req, "bucket", 8, &bucket, err, cap) < 0 ||
        (strcmp(bucket, "day") != 0 && strcmp(bucket, "month") != 0)) {
        snprintf(err, cap, "bucket: expected \"day\" or \"month\"");
        return EMS_EINVAL;
    }
    if (get_string(req, "time_zone", 64, &tz, err, cap) < 0)
        return EMS_EINVAL;
    bool month = bucket[0] == 'm';
    int64_t from = 0, to = 0;
    if ((rc = get_energy_time(req, "from", month, &r->p[1], &from, err, cap)) <= 0 ||
        (rc = get_energy_time(req, "to", month, &r->p[2], &to, err, cap)) <= 0) {
        if (rc == 0)
            snprintf(err, cap, "from and to: required");
        return EMS_EINVAL;
    }
    if (to <= from) {
        snprintf(err, cap, "to: must be after from");
        return EMS_EINVAL;
    }
    /* At most ENERGY_BUCKETS_MAX buckets (with a day of slack either way). */
    if ((to - from) / 86400000 > (month ? 31 : 1) * ENERGY_BUCKETS_MAX) {
        snprintf(err, cap, "from, to: more than %d buckets", ENERGY_BUCKETS_MAX);
        return EMS_EINVAL;
    }
    r->op = OP_ENERGY;
    r->sql = r->q->o.storage == EMS_STORAGE_TIMESCALEDB ? SQL_ENERGY_CAGG : SQL_ENERGY_PG;
    r->np = 5;
    r->p[0] = r->device_id[0] ? strdup(r->device_id) : NULL;
    r->p[3] = strdup(tz);
    r->p[4] = strdup(bucket);
    snprintf(r->energy_bucket, sizeof r->energy_bucket, "%s", bucket);
    snprintf(r->energy_tz, sizeof r->energy_tz, "%s", tz);
    return 0;
}

static int parse_latest(qreq_t *r, json_t *req, char *err, size_t cap)
{
    json_t *ids = json_object_get(req, "device_ids");
    r->op = OP_LATEST;
    if (!ids || json_is_null(ids)) {
        r->sql = SQL_LATEST_ALL;
        r->np = 0;
        return 0;
    }
    if (!json_is_array(ids) || json_array_size(ids) > LATEST_MAX_IDS) {
        snprintf(err, cap, "device_ids: expected an array of at most %d device ids", LATEST_MAX_IDS);
        return EMS_EINVAL;
    }
    /* A text[] literal; device ids need no quoting ([A-Za-z0-9_.-]). */
    ems_buf_t lit = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    ems_buf_append(&lit, "{", 1);
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        if (!json_is_string(v) || !ems_device_id_valid(json_string_value(v), json_string_length(v))) {
            snprintf(err, cap, "device_ids[%zu]: expected a device id", i);
            ems_buf_free(&lit);
            return EMS_EINVAL;
        }
        if (i)
            ems_buf_append(&lit, ",", 1);
        ems_buf_append(&lit, json_string_value(v), json_string_length(v));
    }
    ems_buf_append(&lit, "}", 2); /* with the NUL */
    size_t litlen;
    r->p[0] = ems_buf_steal(&lit, &litlen); /* ownership moves to the request */
    if (!r->p[0]) {
        snprintf(err, cap, "out of memory");
        return EMS_ENOMEM;
    }
    r->sql = SQL_LATEST_IDS;
    r->np = 1;
    return 0;
}

static int parse_commands(qreq_t *r, json_t *req, char *err, size_t cap)
{
    char dev[EMS_DEVICE_ID_MAX + 1];
    const char *cid = NULL;
    int64_t before = 0, limit = 100;
    int rd = get_device(req, "device_id", dev, err, cap);
    if (rd < 0 || get_string(req, "command_id", 64, &cid, err, cap) < 0)
        return EMS_EINVAL;
    int rb = get_time(req, "before", &before, err, cap);
    if (rb < 0 || get_int(req, "limit", 1, 1000, &limit, err, cap) < 0)
        return EMS_EINVAL;
    r->op = OP_COMMANDS;
    r->sql = SQL_COMMANDS;
    r->np = 4;
    r->p[0] = rd ? strdup(dev) : NULL;
    r->p[1] = cid ? strdup(cid) : NULL;
    r->p[2] = rb ? fmt_i64(before) : NULL;
    r->p[3] = fmt_i64(limit);
    return 0;
}

static int parse_sessions(qreq_t *r, json_t *req, char *err, size_t cap)
{
    char dev[EMS_DEVICE_ID_MAX + 1];
    int64_t from = 0, to = 0, limit = 100;
    int rd = get_device(req, "device_id", dev, err, cap);
    if (rd < 0)
        return EMS_EINVAL;
    int rf = get_time(req, "from", &from, err, cap);
    int rt = rf < 0 ? rf : get_time(req, "to", &to, err, cap);
    if (rf < 0 || rt < 0 || get_int(req, "limit", 1, 1000, &limit, err, cap) < 0)
        return EMS_EINVAL;
    r->op = OP_SESSIONS;
    r->sql = SQL_SESSIONS;
    r->np = 4;
    r->p[0] = rd ? strdup(dev) : NULL;
    r->p[1] = rf ? fmt_i64(from) : NULL;
    r->p[2] = rt ? fmt_i64(to) : NULL;
    r->p[3] = fmt_i64(limit);
    return 0;
}

static const char *const ALARM_STATES[] = {"active", "acknowledged", "cleared", "open"};

static int parse_alarms(qreq_t *r, json_t *req, char *err, size_t cap)
{
    char dev[EMS_DEVICE_ID_MAX + 1];
    const char *state = NULL;
    int64_t id = 0, limit = 100;
    int rd = get_device(req, "device_id", dev, err, cap);
    if (rd < 0 || get_string(req, "state", 16, &state, err, cap) < 0)
        return EMS_EINVAL;
    if (state) {
        bool ok = false;
        for (size_t i = 0; i < sizeof ALARM_STATES / sizeof ALARM_STATES[0]; i++)
            ok = ok || !strcmp(state, ALARM_STATES[i]);
        if (!ok) {
            snprintf(err, cap, "state: expected active, acknowledged, cleared or open");
            return EMS_EINVAL;
        }
    }
    int ri = get_int(req, "alarm_id", 1, INT64_MAX, &id, err, cap);
    if (ri < 0 || get_int(req, "limit", 1, 1000, &limit, err, cap) < 0)
        return EMS_EINVAL;
    r->op = OP_ALARMS;
    r->sql = SQL_ALARMS;
    r->np = 4;
    r->p[0] = rd ? strdup(dev) : NULL;
    r->p[1] = state ? strdup(state) : NULL;
    r->p[2] = ri ? fmt_i64(id) : NULL;
    r->p[3] = fmt_i64(limit);
    return 0;
}

/* webhook_claim: name, owner, lease_s, limit; webhook_advance: name, owner,
 * event_id, dead. */
static int parse_webhook(qreq_t *r, json_t *req, bool claim, char *err, size_t cap)
{
    const char *name = NULL, *owner = NULL;
    int64_t lease = 30, limit = 1, event = 0;
    if (get_string(req, "name", 1024, &name, err, cap) != 1 ||
        get_string(req, "owner", 128, &owner, err, cap) != 1) {
        if (!err[0])
            snprintf(err, cap, "name and owner: required");
        return EMS_EINVAL;
    }
    r->p[0] = strdup(name);
    r->p[1] = strdup(owner);
    r->np = 4;
    if (claim) {
        if (get_int(req, "lease_s", 1, 86400, &lease, err, cap) < 0 ||
            get_int(req, "limit", 1, 100, &limit, err, cap) < 0)
            return EMS_EINVAL;
        r->op = OP_WEBHOOK_CLAIM;
        r->sql = SQL_WEBHOOK_CLAIM;
        r->p[2] = fmt_i64(lease);
        r->p[3] = fmt_i64(limit);
        return 0;
    }
    json_t *dead = json_object_get(req, "dead");
    if (get_int(req, "event_id", 1, INT64_MAX, &event, err, cap) != 1 ||
        (dead && !json_is_boolean(dead))) {
        if (!err[0])
            snprintf(err, cap, "event_id: required; dead: a boolean");
        return EMS_EINVAL;
    }
    r->op = OP_WEBHOOK_ADVANCE;
    r->sql = SQL_WEBHOOK_ADVANCE;
    r->p[2] = fmt_i64(event);
    r->p[3] = strdup(json_is_true(dead) ? "true" : "false");
    return 0;
}

/* ------------------------------------------------------------------ answers */

static const char *val(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* The first `n` values of one column as a JSON array: numbers, strings,
 * booleans, or seq numbers (where -1 means the packet had none) by `kind`. */
static void put_pg_column(ems_buf_t *b, const PGresult *res, int col, char kind, int n)
{
    ems_buf_append(b, "[", 1);
    for (int i = 0; i < n; i++) {
        if (i)
            ems_buf_append(b, ",", 1);
        const char *v = val(res, i, col);
        if (!v)
            ems_buf_append_str(b, "null");
        else if (kind == 's')
            put_str(b, v);
        else if (kind == 'b')
            ems_buf_append_str(b, v[0] == 't' ? "true" : "false");
        else if (kind == 'q' && v[0] == '-')
            ems_buf_append_str(b, "null");
        else
            put_pg_num(b, v);
    }
    ems_buf_append(b, "]", 1);
}

/* The query asks for one row more than the limit, to know whether the
 * answer is complete. */
static int rows_within_limit(const qreq_t *r, const PGresult *res, bool *truncated)
{
    int n = PQntuples(res);
    *truncated = n > r->limit;
    return *truncated ? (int)r->limit : n;
}

static void answer_history_raw(qreq_t *r, const PGresult *res)
{
    static const char kinds[] = "nqsssnnnnnnnnnnbb";
    bool truncated;
    int n = rows_within_limit(r, res, &truncated);
    ems_buf_t *b = &r->out;
    ems_buf_append_str(b, "{\"device_id\":");
    put_str(b, r->device_id);
    ems_buf_appendf(
        b, ",\"resolution\":\"raw\",\"bucket_s\":0,\"count\":%d,\"truncated\":%s,\"series\":{", n,
        truncated ? "true" : "false");
    for (int c = 0; c < (int)(sizeof RAW_NAMES / sizeof RAW_NAMES[0]); c++) {
        if (c)
            ems_buf_append(b, ",", 1);
        put_str(b, RAW_NAMES[c]);
        ems_buf_append(b, ":", 1);
        put_pg_column(b, res, c, kinds[c], n);
    }
    ems_buf_append_str(b, "}}");
}

static void answer_history_bucket(qreq_t *r, const PGresult *res)
{
    bool truncated;
    int n = rows_within_limit(r, res, &truncated);
    ems_buf_t *b = &r->out;
    ems_buf_append_str(b, "{\"device_id\":");
    put_str(b, r->device_id);
    ems_buf_appendf(
        b,
        ",\"resolution\":\"bucket\",\"bucket_s\":%lld,\"count\":%d,\"truncated\":%s,\"series\":{",
        (long long)r->width_s, n, truncated ? "true" : "false");
    ems_buf_append_str(b, "\"ts\":");
    put_pg_column(b, res, 0, 'n', n);
    ems_buf_append_str(b, ",\"n\":");
    put_pg_column(b, res, 1, 'n', n);
    static const char *const sfx[] = {"_min", "_max", "_avg"};
    for (int f = 0; f < NFIELDS; f++)
        for (int k = 0; k < 3; k++) {
            ems_buf_appendf(b, ",\"%s%s\":", FIELDS[f], sfx[k]);
            put_pg_column(b, res, 2 + f * 3 + k, 'n', n);
        }
    ems_buf_append_str(b, "}}");
}

/* Builds the packet of a latest row and appends it with received_at. */
static void answer_latest_row(qreq_t *r, const PGresult *res, int i, bool *first)
{
    ems_telemetry_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.device_id, sizeof t.device_id, "%s", val(res, i, 0));
    t.timestamp_ms = strtoll(val(res, i, 1), NULL, 10);
    int64_t received = strtoll(val(res, i, 2), NULL, 10);
    long long seq = strtoll(val(res, i, 3), NULL, 10);
    t.has_seq = seq >= 0;
    t.seq = t.has_seq ? (uint64_t)seq : 0;
    if (ems_state_parse(val(res, i, 4), &t.state) < 0 || ems_mode_parse(val(res, i, 5), &t.mode) < 0)
        return;
    const char *v;
    if ((v = val(res, i, 6)) && ems_target_mode_parse(v, &t.target_mode) == 0)
        t.has_target_mode = true;
    if ((v = val(res, i, 7))) {
        t.has_target_power = true;
        t.target_power = strtod(v, NULL);
    }
    /* DB bit k (frozen order) -> the C enum's bit of the same name. */
    static const char *const names[] = {"OVERHEAT",    "UNDERTEMP",    "OVERVOLTAGE", "UNDERVOLTAGE",
                                        "OVERCURRENT", "SENSOR_FAULT", "GRID_FAULT"};
    unsigned long dbf = strtoul(val(res, i, 8), NULL, 10);
    for (unsigned k = 0; k < 7; k++) {
        uint32_t bit;
        if ((dbf & (1ul << k)) && ems_fault_parse(names[k], &bit) == 0)
            t.error_flags |= bit;
    }
    if ((v = val(res, i, 9))) {
        t.has_wifi_strength = true;
        t.wifi_strength = atoi(v);
    }
    t.battery_voltage = strtod(val(res, i, 10), NULL);
    t.battery_current = strtod(val(res, i, 11), NULL);
    t.battery_power = strtod(val(res, i, 12), NULL);
    t.battery_soc = strtod(val(res, i, 13), NULL);
    if ((v = val(res, i, 14))) {
        t.has_battery_temperature = true;
        t.battery_temperature = strtod(v, NULL);
    }
    t.grid_voltage = strtod(val(res, i, 15), NULL);
    t.grid_power = strtod(val(res, i, 16), NULL);
    t.grid_frequency = strtod(val(res, i, 17), NULL);
    if ((v = val(res, i, 18))) {
        t.has_clock_synced = true;
        t.clock_synced = v[0] == 't';
    }
    t.has_backfill = true;
    t.backfill = val(res, i, 19)[0] == 't';

    char pkt[EMS_TELEMETRY_JSON_MAX];
    int n = ems_telemetry_encode(&t, pkt, sizeof pkt);
    if (n < 2) {
        ems_log_warn("query: latest row of %s does not encode (%s)", t.device_id, ems_strerror(n));
        return;
    }
    char when[EMS_TIME_STR_MAX];
    if (ems_time_format(received, when, sizeof when) < 0)
        snprintf(when, sizeof when, "1970-01-01T00:00:00.000Z");
    if (!*first)
        ems_buf_append(&r->out, ",", 1);
    *first = false;
    ems_buf_append(&r->out, pkt, (size_t)n - 1); /* without the closing brace */
    ems_buf_appendf(&r->out, ",\"received_at\":\"%s\"}", when);
}

static void answer_latest(qreq_t *r, const PGresult *res)
{
    ems_buf_append_str(&r->out, "{\"devices\":[");
    bool first = true;
    for (int i = 0; i < PQntuples(res); i++)
        answer_latest_row(r, res, i, &first);
    ems_buf_append_str(&r->out, "]}");
}

static void answer_wrapped(qreq_t *r, const PGresult *res, const char *key)
{
    ems_buf_appendf(&r->out, "{\"%s\":", key);
    ems_buf_append_str(&r->out, PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "[]");
    ems_buf_append_str(&r->out, "}");
}

/* {"device_id": id or null, "bucket": "day", "time_zone": ..., "buckets": [...]} */
static void answer_energy(qreq_t *r, const PGresult *res)
{
    ems_buf_t *b = &r->out;
    ems_buf_append_str(b, "{\"device_id\":");
    if (r->device_id[0])
        put_str(b, r->device_id);
    else
        ems_buf_append_str(b, "null");
    ems_buf_append_str(b, ",\"bucket\":");
    put_str(b, r->energy_bucket);
    ems_buf_append_str(b, ",\"time_zone\":");
    put_str(b, r->energy_tz);
    ems_buf_append_str(b, ",\"buckets\":");
    ems_buf_append_str(b, PQntuples(res) == 1 ? PQgetvalue(res, 0, 1) : "[]");
    ems_buf_append_str(b, "}");
}

/* {"claimed": bool, "events": [...]} */
static void answer_webhook_claim(qreq_t *r, const PGresult *res)
{
    bool ok = PQntuples(res) == 1 && val(res, 0, 0) && val(res, 0, 0)[0] == 't';
    ems_buf_appendf(&r->out, "{\"claimed\":%s,\"events\":", ok ? "true" : "false");
    ems_buf_append_str(&r->out, ok && val(res, 0, 1) ? val(res, 0, 1) : "[]");
    ems_buf_append_str(&r->out, "}");
}

static void answer_device_auth(qreq_t *r, const PGresult *res)
{
    if (PQntuples(res) != 1) {
        ems_buf_append_str(&r->out, "{\"found\":false}");
        return;
    }
    ems_buf_append_str(&r->out, "{\"found\":true,\"device_id\":");
    put_str(&r->out, val(res, 0, 0));
    ems_buf_append_str(&r->out, ",\"token_hash\":");
    put_str(&r->out, val(res, 0, 1));
    ems_buf_appendf(&r->out,
                    ",\"revoked\":%s,\"revoked_at\":", val(res, 0, 2)[0] == 't' ? "true" : "false");
    if (val(res, 0, 3))
        put_str(&r->out, val(res, 0, 3));
    else
        ems_buf_append_str(&r->out, "null");
    ems_buf_append_str(&r->out, "}");
}

/* {"devices":[{"device_id":...,"token_hash":...,"revoked":...,
 * "revoked_at":...},...]}: the ids found; the others do not exist. */
static void answer_device_auths(qreq_t *r, const PGresult *res)
{
    ems_buf_append_str(&r->out, "{\"devices\":[");
    for (int i = 0; i < PQntuples(res); i++) {
        ems_buf_append_str(&r->out, i ? ",{\"device_id\":" : "{\"device_id\":");
        put_str(&r->out, val(res, i, 0));
        ems_buf_append_str(&r->out, ",\"token_hash\":");
        put_str(&r->out, val(res, i, 1));
        ems_buf_appendf(&r->out, ",\"revoked\":%s,\"revoked_at\":",
                        val(res, i, 2)[0] == 't' ? "true" : "false");
        if (val(res, i, 3))
            put_str(&r->out, val(res, i, 3));
        else
            ems_buf_append_str(&r->out, "null");
        ems_buf_append_str(&r->out, "}");
    }
    ems_buf_append_str(&r->out, "]}");
}

/* device_ids: 1..DEVICE_AUTHS_MAX device ids, as a PostgreSQL text[]
 * literal (the ids' characters, [A-Za-z0-9_.-], need no escaping). */
static int parse_device_auths(qreq_t *r, json_t *req, char *err, size_t cap)
{
    json_t *a = json_object_get(req, "device_ids");
    size_t n = json_array_size(a);
    if (!json_is_array(a) || n == 0 || n > DEVICE_AUTHS_MAX) {
        snprintf(err, cap, "device_ids: expected an array of 1..%d device ids", DEVICE_AUTHS_MAX);
        return EMS_EINVAL;
    }
    char *lit = malloc(n * (EMS_DEVICE_ID_MAX + 3) + 3);
    if (!lit) {
        snprintf(err, cap, "out of memory");
        return EMS_ENOMEM;
    }
    size_t len = 0;
    lit[len++] = '{';
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v) ||
            !ems_device_id_valid(json_string_value(v), json_string_length(v))) {
            free(lit);
            snprintf(err, cap, "device_ids[%zu]: expected a device id (1..64 of [A-Za-z0-9_.-])",
                     i);
            return EMS_EINVAL;
        }
        len += (size_t)sprintf(lit + len, "%s\"%s\"", i ? "," : "", json_string_value(v));
    }
    lit[len++] = '}';
    lit[len] = 0;
    r->op = OP_DEVICE_AUTHS;
    r->sql = SQL_DEVICE_AUTHS;
    r->np = 1;
    r->p[0] = lit;
    return 0;
}

static void answer_user(qreq_t *r, const PGresult *res)
{
    if (PQntuples(res) != 1) {
        ems_buf_append_str(&r->out, "{\"found\":false}");
        return;
    }
    ems_buf_append_str(&r->out, "{\"found\":true,\"name\":");
    put_str(&r->out, val(res, 0, 0));
    ems_buf_append_str(&r->out, ",\"role\":");
    put_str(&r->out, val(res, 0, 1));
    ems_buf_append_str(&r->out, ",\"password_hash\":");
    put_str(&r->out, val(res, 0, 2));
    ems_buf_append_str(&r->out, "}");
}

/* ------------------------------------------------------------------ driver */

static int q_send(ems_pg_req_t *req, PGconn *conn)
{
    qreq_t *r = req->data;
    return PQsendQueryParams(conn, r->sql, r->np, NULL, (const char *const *)r->p, NULL, NULL, 0) == 1
               ? 0
               : EMS_EDB;
}

static void q_result(ems_pg_req_t *req, const PGresult *res)
{
    qreq_t *r = req->data;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || r->answered)
        return;
    r->answered = true;
    switch (r->op) {
    case OP_HISTORY_RAW: answer_history_raw(r, res); break;
    case OP_HISTORY_BUCKET: answer_history_bucket(r, res); break;
    case OP_LATEST: answer_latest(r, res); break;
    case OP_COMMANDS: answer_wrapped(r, res, "commands"); break;
    case OP_SESSIONS: answer_wrapped(r, res, "sessions"); break;
    case OP_SILENT: answer_wrapped(r, res, "devices"); break;
    case OP_DEVICES: answer_wrapped(r, res, "devices"); break;
    case OP_DEVICE_AUTH: answer_device_auth(r, res); break;
    case OP_DEVICE_AUTHS: answer_device_auths(r, res); break;
    case OP_USER: answer_user(r, res); break;
    case OP_ENERGY: answer_energy(r, res); break;
    case OP_ALARMS: answer_wrapped(r, res, "alarms"); break;
    case OP_WEBHOOK_CLAIM: answer_webhook_claim(r, res); break;
    case OP_WEBHOOK_ADVANCE:
        ems_buf_appendf(&r->out, "{\"moved\":%s}", PQntuples(res) == 1 ? "true" : "false");
        break;
    }
}

static void q_next(ems_query_t *q);

static void q_done(ems_pg_req_t *req, int status)
{
    qreq_t *r = req->data;
    ems_query_t *q = r->q;
    q->inflight--;
    q->running = NULL;
    if (status == 0 && r->answered && r->out.data) {
        r->cb(r->ud, r->id, 0, ems_buf_data(&r->out), ems_buf_len(&r->out));
    } else if (status == EMS_ECLOSED) {
        answer_error(r->cb, r->ud, r->id, EMS_EAGAIN, "database connection lost");
    } else if (status == 0) {
        answer_error(r->cb, r->ud, r->id, EMS_ENOMEM, "out of memory");
    } else {
        ems_log_warn("query: %s (%s)", req->error, req->sqlstate);
        answer_error(r->cb, r->ud, r->id, EMS_EDB, "database error: %s", req->error);
    }
    qreq_free(r);
    q_next(q);
}

static void fifo_push(qfifo_t *f, qreq_t *r)
{
    r->next = NULL;
    if (f->tail)
        f->tail->next = r;
    else
        f->head = r;
    f->tail = r;
}

static qreq_t *fifo_pop(qfifo_t *f)
{
    qreq_t *r = f->head;
    if (r) {
        f->head = r->next;
        if (!f->head)
            f->tail = NULL;
        r->next = NULL;
    }
    return r;
}

/* Hands the next waiting query (lookups first) to the connection, unless
 * one is running. A connection that is down answers every waiting query at
 * once with EMS_EAGAIN, as before. */
static void q_next(ems_query_t *q)
{
    while (!q->running) {
        qreq_t *r = fifo_pop(&q->fast);
        if (!r)
            r = fifo_pop(&q->slow);
        if (!r)
            return;
        /* Set first: the driver may end the request inside submit (a
         * connection that breaks on send), and q_done then moves on. */
        q->running = r;
        if (ems_pg_submit(q->pg, &r->req) == 0)
            return;
        q->running = NULL;
        q->inflight--;
        answer_error(r->cb, r->ud, r->id, EMS_EAGAIN, "database unavailable");
        qreq_free(r);
    }
}

void ems_query_run(ems_query_t *q, uint64_t id, const char *json, size_t len, ems_query_done_cb cb,
                   void *ud)
{
    json_error_t jerr;
    json_t *req = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req || !json_is_object(req)) {
        json_decref(req);
        answer_error(cb, ud, id, EMS_EINVAL, "not a JSON object");
        return;
    }
    const char *op = json_string_value(json_object_get(req, "op"));
    if (!op) {
        json_decref(req);
        answer_error(cb, ud, id, EMS_EINVAL, "op: required");
        return;
    }
    if (!strcmp(op, "stats")) {
        json_decref(req);
        char *s = q->o.stats_json ? q->o.stats_json(q->o.stats_ud) : NULL;
        if (s)
            cb(ud, id, 0, s, strlen(s));
        else
            answer_error(cb, ud, id, EMS_ENOMEM, "no stats");
        free(s);
        return;
    }
    qreq_t *r = calloc(1, sizeof *r);
    if (!r) {
        json_decref(req);
        answer_error(cb, ud, id, EMS_ENOMEM, "out of memory");
        return;
    }
    ems_buf_init(&r->out, EMS_BUF_UNBOUNDED);
    r->q = q;
    r->id = id;
    r->cb = cb;
    r->ud = ud;
    char err[300] = "";
    int rc = 0;
    if (!strcmp(op, "history")) {
        rc = parse_history(r, req, err, sizeof err);
    } else if (!strcmp(op, "latest")) {
        rc = parse_latest(r, req, err, sizeof err);
    } else if (!strcmp(op, "commands")) {
        rc = parse_commands(r, req, err, sizeof err);
    } else if (!strcmp(op, "sessions")) {
        rc = parse_sessions(r, req, err, sizeof err);
    } else if (!strcmp(op, "device_auth")) {
        rc = get_device(req, "device_id", r->device_id, err, sizeof err);
        if (rc == 0)
            snprintf(err, sizeof err, "device_id: required");
        rc = rc == 1 ? 0 : EMS_EINVAL;
        r->op = OP_DEVICE_AUTH;
        r->sql = SQL_DEVICE_AUTH;
        r->np = 1;
        r->p[0] = strdup(r->device_id);
    } else if (!strcmp(op, "device_auths")) {
        rc = parse_device_auths(r, req, err, sizeof err);
    } else if (!strcmp(op, "user")) {
        const char *name = NULL;
        rc = get_string(req, "name", 64, &name, err, sizeof err);
        if (rc == 0)
            snprintf(err, sizeof err, "name: required");
        rc = rc == 1 ? 0 : EMS_EINVAL;
        r->op = OP_USER;
        r->sql = SQL_USER;
        r->np = 1;
        r->p[0] = name ? strdup(name) : NULL;
    } else if (!strcmp(op, "energy")) {
        rc = parse_energy(r, req, err, sizeof err);
    } else if (!strcmp(op, "alarms")) {
        rc = parse_alarms(r, req, err, sizeof err);
    } else if (!strcmp(op, "webhook_claim") || !strcmp(op, "webhook_advance")) {
        rc = parse_webhook(r, req, !strcmp(op, "webhook_claim"), err, sizeof err);
    } else if (!strcmp(op, "silent")) {
        int64_t older = 300000, limit = 1000;
        if (get_int(req, "older_than_ms", 1000, 366LL * 86400 * 1000, &older, err, sizeof err) < 0 ||
            get_int(req, "limit", 1, 100000, &limit, err, sizeof err) < 0) {
            rc = EMS_EINVAL;
        } else {
            r->op = OP_SILENT;
            r->sql = SQL_SILENT;
            r->np = 2;
            r->p[0] = fmt_i64(older);
            r->p[1] = fmt_i64(limit);
        }
    } else if (!strcmp(op, "devices")) {
        r->op = OP_DEVICES;
        r->sql = SQL_DEVICES;
        r->np = 0;
    } else {
        snprintf(err, sizeof err, "op: unknown operation \"%.64s\"", op);
        rc = EMS_EINVAL;
    }
    json_decref(req);
    if (rc < 0) {
        qreq_free(r);
        answer_error(cb, ud, id, rc, "%s", err);
        return;
    }
    if (q->inflight >= q->o.max_inflight) {
        qreq_free(r);
        answer_error(cb, ud, id, EMS_EAGAIN, "too many queries in progress");
        return;
    }
    if (!ems_pg_is_up(q->pg)) {
        qreq_free(r);
        answer_error(cb, ud, id, EMS_EAGAIN, "database unavailable");
        return;
    }
    r->req.send = q_send;
    r->req.on_result = q_result;
    r->req.on_done = q_done;
    r->req.data = r;
    fifo_push(r->op == OP_DEVICE_AUTH || r->op == OP_DEVICE_AUTHS || r->op == OP_USER ? &q->fast
                                                                                      : &q->slow,
              r);
    q->inflight++;
    q_next(q);
}
