/* telemetry_columns.h: the columns of the telemetry table the DB writer
 * fills, described once.
 *
 * Every place in C that needs the column list derives it from this table:
 * the INSERT statement and its binary array parameters (ingest.c), the
 * insert benchmark's text forms (test/bench/bench_dbwriter.c), and the
 * unit test that checks the table against the migrations
 * (test/unit/test_dbw_columns.c). The SQL migrations in cloud/db/ are
 * history (they already ran on deployed databases) and are never edited
 * to follow this table: a new column is a new migration plus a row here.
 *
 * One row per column, in the statement's parameter order:
 *
 *     X(name, sql_type, kind, present, value)
 *
 *   name      the column (an identifier, also the unnest alias);
 *   sql_type  its type as PostgreSQL names it ("float4", "ems_state");
 *   kind      how the value travels: TEXT, TS (Unix ms -> timestamptz),
 *             I64, I32, I16, F32, BOOL; EMS_TCOL_PARAM_<kind> is the
 *             parameter's element type, EMS_TCOL_OID_<kind> and
 *             EMS_TCOL_ARRAY_OID_<kind> its binary OIDs;
 *   present   false stores NULL;
 *   value     the value (a C expression).
 *
 * `present` and `value` are evaluated with these in scope:
 * `const ems_telemetry_t *t`, `int64_t received_ms` (when the record
 * arrived) and `bool energy` (the five energy counters are present and in
 * range: stored all five or none, cloud/db/0005_energy).
 */
#ifndef EMS_TELEMETRY_COLUMNS_H
#define EMS_TELEMETRY_COLUMNS_H

#include "pg.h"

#include <math.h>
#include <string.h>

#define EMS_TELEMETRY_COLUMNS(X)                                                                   \
    X(device_id, "text", TEXT, true, t->device_id)                                                 \
    X(ts, "timestamptz", TS, true, t->timestamp_ms)                                                \
    X(seq, "int8", I64, true, t->has_seq ? (int64_t)t->seq : -1)                                   \
    X(received_at, "timestamptz", TS, true, received_ms)                                           \
    X(state, "ems_state", TEXT, true, ems_state_name(t->state))                                    \
    X(mode, "ems_mode", TEXT, true, ems_mode_name(t->mode))                                        \
    X(target_mode, "ems_target_mode", TEXT, t->has_target_mode,                                    \
      ems_target_mode_name(t->target_mode))                                                        \
    X(target_power, "float4", F32, t->has_target_power, t->target_power)                           \
    X(error_flags, "int4", I32, true, ems_ingest_db_faults(t->error_flags))                        \
    X(wifi_strength, "int2", I16, t->has_wifi_strength, t->wifi_strength)                          \
    X(battery_voltage, "float4", F32, true, t->battery_voltage)                                    \
    X(battery_current, "float4", F32, true, t->battery_current)                                    \
    X(battery_power, "float4", F32, true, t->battery_power)                                        \
    X(battery_soc, "float4", F32, true, t->battery_soc)                                            \
    X(battery_temperature, "float4", F32, t->has_battery_temperature, t->battery_temperature)      \
    X(grid_voltage, "float4", F32, true, t->grid_voltage)                                          \
    X(grid_power, "float4", F32, true, t->grid_power)                                              \
    X(grid_frequency, "float4", F32, true, t->grid_frequency)                                      \
    X(clock_synced, "bool", BOOL, t->has_clock_synced, t->clock_synced)                            \
    X(backfill, "bool", BOOL, true, t->has_backfill && t->backfill)                                \
    X(energy_since, "timestamptz", TS, energy, t->energy_since_ms)                                 \
    X(energy_charged_mwh, "int8", I64, energy, llround(t->energy_battery_charged_wh * 1000.0))     \
    X(energy_discharged_mwh, "int8", I64, energy,                                                  \
      llround(t->energy_battery_discharged_wh * 1000.0))                                           \
    X(energy_import_mwh, "int8", I64, energy, llround(t->energy_grid_import_wh * 1000.0))          \
    X(energy_export_mwh, "int8", I64, energy, llround(t->energy_grid_export_wh * 1000.0))

/* How many columns the table has. */
#define EMS_TCOL__ONE(name, sql_type, kind, present, value) +1
#define EMS_TELEMETRY_NCOLS (0 EMS_TELEMETRY_COLUMNS(EMS_TCOL__ONE))

/* Per kind: the parameter's element type name and its binary OIDs. */
#define EMS_TCOL_PARAM_TEXT "text"
#define EMS_TCOL_PARAM_TS "timestamptz"
#define EMS_TCOL_PARAM_I64 "int8"
#define EMS_TCOL_PARAM_I32 "int4"
#define EMS_TCOL_PARAM_I16 "int2"
#define EMS_TCOL_PARAM_F32 "float4"
#define EMS_TCOL_PARAM_BOOL "bool"
#define EMS_TCOL_OID_TEXT EMS_PG_OID_TEXT
#define EMS_TCOL_OID_TS EMS_PG_OID_TIMESTAMPTZ
#define EMS_TCOL_OID_I64 EMS_PG_OID_INT8
#define EMS_TCOL_OID_I32 EMS_PG_OID_INT4
#define EMS_TCOL_OID_I16 EMS_PG_OID_INT2
#define EMS_TCOL_OID_F32 EMS_PG_OID_FLOAT4
#define EMS_TCOL_OID_BOOL EMS_PG_OID_BOOL
#define EMS_TCOL_ARRAY_OID_TEXT EMS_PG_OID_TEXT_ARRAY
#define EMS_TCOL_ARRAY_OID_TS EMS_PG_OID_TIMESTAMPTZ_ARRAY
#define EMS_TCOL_ARRAY_OID_I64 EMS_PG_OID_INT8_ARRAY
#define EMS_TCOL_ARRAY_OID_I32 EMS_PG_OID_INT4_ARRAY
#define EMS_TCOL_ARRAY_OID_I16 EMS_PG_OID_INT2_ARRAY
#define EMS_TCOL_ARRAY_OID_F32 EMS_PG_OID_FLOAT4_ARRAY
#define EMS_TCOL_ARRAY_OID_BOOL EMS_PG_OID_BOOL_ARRAY

/* Appends one value of `kind` to a binary array parameter (pg.h). */
#define EMS_TCOL_PUT_TEXT(a, v) ems_tcol__put_text((a), (v))
#define EMS_TCOL_PUT_TS(a, v) ems_pg_array_ts_ms((a), (v))
#define EMS_TCOL_PUT_I64(a, v) ems_pg_array_i64((a), (int64_t)(v))
#define EMS_TCOL_PUT_I32(a, v) ems_pg_array_i32((a), (int32_t)(v))
#define EMS_TCOL_PUT_I16(a, v) ems_pg_array_i16((a), (int16_t)(v))
#define EMS_TCOL_PUT_F32(a, v) ems_pg_array_f32((a), (float)(v))
#define EMS_TCOL_PUT_BOOL(a, v) ems_pg_array_bool((a), (v))

static inline void ems_tcol__put_text(ems_pg_array_t *a, const char *s)
{
    ems_pg_array_bytes(a, s, (uint32_t)strlen(s));
}

#endif
