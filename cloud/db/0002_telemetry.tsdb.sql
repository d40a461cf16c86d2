-- 0002_telemetry (TimescaleDB): the same table as 0002_telemetry.pg.sql
-- as a hypertable, with compression, retention and continuous aggregates
-- for 1 minute and 1 hour that expose the same columns as the plain
-- PostgreSQL rollup (docs/storage.md explains every number below).
-- The migration runner has already run CREATE EXTENSION timescaledb.

CREATE TABLE telemetry (
    ts                  timestamptz NOT NULL,
    received_at         timestamptz NOT NULL,
    seq                 bigint NOT NULL,
    battery_voltage     real NOT NULL,
    battery_current     real NOT NULL,
    battery_power       real NOT NULL,
    battery_soc         real NOT NULL,
    battery_temperature real,
    grid_voltage        real NOT NULL,
    grid_power          real NOT NULL,
    grid_frequency      real NOT NULL,
    target_power        real,
    error_flags         integer NOT NULL,
    state               ems_state NOT NULL,
    mode                ems_mode NOT NULL,
    target_mode         ems_target_mode,
    wifi_strength       smallint,
    clock_synced        boolean,
    backfill            boolean NOT NULL DEFAULT false,
    device_id           text NOT NULL
);

-- 1-hour chunks: at 20,000 devices x 3,600 rows/h x ~190 B (row + index,
-- measured) the chunk being written is ~14 GB, a quarter of a 64 GB
-- server's memory (Timescale's sizing rule). Other fleets and servers:
-- set_chunk_time_interval, docs/storage.md section 4.
SELECT create_hypertable('telemetry', 'ts', chunk_time_interval => INTERVAL '1 hour',
                         create_default_indexes => false);
CREATE UNIQUE INDEX telemetry_key ON telemetry (device_id, ts, seq);

-- Compression: one segment per device, ordered by time, so a device's
-- range query decompresses only its own rows. Chunks are compressed when
-- they are a day old; later backfill still inserts (TimescaleDB >= 2.11
-- decompresses the affected segment to check the unique key).
ALTER TABLE telemetry SET (timescaledb.compress,
                           timescaledb.compress_segmentby = 'device_id',
                           timescaledb.compress_orderby = 'ts, seq');
SELECT add_compression_policy('telemetry', INTERVAL '1 day');
SELECT add_retention_policy('telemetry', INTERVAL '90 days');

-- Continuous aggregates, real-time (materialized_only = false: the newest
-- buckets are computed from raw rows at query time), WITH NO DATA so that
-- this migration can run inside a transaction.
CREATE MATERIALIZED VIEW telemetry_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id,
       time_bucket(INTERVAL '1 minute', ts) AS bucket,
       count(*)::integer AS n,
       count(battery_temperature)::integer AS n_temp,
       min(battery_voltage) AS battery_voltage_min, max(battery_voltage) AS battery_voltage_max,
       coalesce(sum(battery_voltage::float8), 0) AS battery_voltage_sum,
       min(battery_current) AS battery_current_min, max(battery_current) AS battery_current_max,
       coalesce(sum(battery_current::float8), 0) AS battery_current_sum,
       min(battery_power) AS battery_power_min, max(battery_power) AS battery_power_max,
       coalesce(sum(battery_power::float8), 0) AS battery_power_sum,
       min(battery_soc) AS battery_soc_min, max(battery_soc) AS battery_soc_max,
       coalesce(sum(battery_soc::float8), 0) AS battery_soc_sum,
       min(battery_temperature) AS battery_temperature_min,
       max(battery_temperature) AS battery_temperature_max,
       coalesce(sum(battery_temperature::float8), 0) AS battery_temperature_sum,
       min(grid_voltage) AS grid_voltage_min, max(grid_voltage) AS grid_voltage_max,
       coalesce(sum(grid_voltage::float8), 0) AS grid_voltage_sum,
       min(grid_power) AS grid_power_min, max(grid_power) AS grid_power_max,
       coalesce(sum(grid_power::float8), 0) AS grid_power_sum,
       min(grid_frequency) AS grid_frequency_min, max(grid_frequency) AS grid_frequency_max,
       coalesce(sum(grid_frequency::float8), 0) AS grid_frequency_sum
FROM telemetry
GROUP BY device_id, time_bucket(INTERVAL '1 minute', ts)
WITH NO DATA;

-- Refresh the last 8 days every minute: the edge keeps up to 7 days of
-- backlog, and a refresh only recomputes buckets that inserts invalidated.
SELECT add_continuous_aggregate_policy('telemetry_1m',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_retention_policy('telemetry_1m', INTERVAL '730 days');

-- 1 hour, stacked on the 1-minute aggregate (TimescaleDB >= 2.9).
CREATE MATERIALIZED VIEW telemetry_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id,
       time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       sum(n)::integer AS n, sum(n_temp)::integer AS n_temp,
       min(battery_voltage_min) AS battery_voltage_min, max(battery_voltage_max) AS battery_voltage_max,
       sum(battery_voltage_sum) AS battery_voltage_sum,
       min(battery_current_min) AS battery_current_min, max(battery_current_max) AS battery_current_max,
       sum(battery_current_sum) AS battery_current_sum,
       min(battery_power_min) AS battery_power_min, max(battery_power_max) AS battery_power_max,
       sum(battery_power_sum) AS battery_power_sum,
       min(battery_soc_min) AS battery_soc_min, max(battery_soc_max) AS battery_soc_max,
       sum(battery_soc_sum) AS battery_soc_sum,
       min(battery_temperature_min) AS battery_temperature_min,
       max(battery_temperature_max) AS battery_temperature_max,
       sum(battery_temperature_sum) AS battery_temperature_sum,
       min(grid_voltage_min) AS grid_voltage_min, max(grid_voltage_max) AS grid_voltage_max,
       sum(grid_voltage_sum) AS grid_voltage_sum,
       min(grid_power_min) AS grid_power_min, max(grid_power_max) AS grid_power_max,
       sum(grid_power_sum) AS grid_power_sum,
       min(grid_frequency_min) AS grid_frequency_min, max(grid_frequency_max) AS grid_frequency_max,
       sum(grid_frequency_sum) AS grid_frequency_sum
FROM telemetry_1m
GROUP BY device_id, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('telemetry_1h',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes');
