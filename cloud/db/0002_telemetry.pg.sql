-- 0002_telemetry (plain PostgreSQL): the telemetry table, natively
-- partitioned by time, and the 1-minute rollup the DB writer maintains in
-- the same transaction as each batch. The TimescaleDB variant of this
-- version is 0002_telemetry.tsdb.sql; the two expose the same tables and
-- columns to queries (docs/storage.md).

-- One row per packet, typed columns (docs/protocol.md 2.1). Columns are
-- ordered widest first so that no alignment padding is wasted per row.
-- seq is -1 when the packet carried none. error_flags: see ems_fault_names.
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
) PARTITION BY RANGE (ts);

-- The idempotency key (ON CONFLICT DO NOTHING) and the index every device
-- query uses. It must contain the partition key, ts.
CREATE UNIQUE INDEX telemetry_key ON telemetry (device_id, ts, seq);

-- Rows whose day has no partition (a device clock years off, or a backfill
-- older than the partitions made ahead) land here instead of failing.
-- ems_ensure_partitions moves them out when their day gets a partition.
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;

-- Makes the daily partitions covering [p_from, p_to) that do not exist
-- yet; returns how many it made. Called by the DB writer at start and every
-- hour (ahead of time, so inserts never wait for DDL).
CREATE FUNCTION ems_ensure_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date := (p_from AT TIME ZONE 'UTC')::date;
    lo timestamptz;
    hi timestamptz;
    part text;
    made integer := 0;
BEGIN
    WHILE (d::timestamp AT TIME ZONE 'UTC') < p_to LOOP
        part := 'telemetry_p' || to_char(d, 'YYYYMMDD');
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF to_regclass(part) IS NULL THEN
            IF EXISTS (SELECT 1 FROM telemetry_default WHERE ts >= lo AND ts < hi) THEN
                -- Attaching over rows in the default partition would fail:
                -- move them into the new table first.
                EXECUTE format('CREATE TABLE %I (LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                EXECUTE format('WITH m AS (DELETE FROM telemetry_default WHERE ts >= $1 AND ts < $2 RETURNING *) '
                               'INSERT INTO %I SELECT * FROM m', part) USING lo, hi;
                EXECUTE format('ALTER TABLE telemetry ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               part, lo, hi);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                               part, lo, hi);
            END IF;
            made := made + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN made;
END
$$;

-- Retention: drops the daily partitions that end at or before p_raw_before
-- (and such rows in the default partition), and rollup rows older than
-- p_rollup_before. Returns the number of partitions dropped.
CREATE FUNCTION ems_apply_retention(p_raw_before timestamptz, p_rollup_before timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry'::regclass AND c.relname ~ '^telemetry_p[0-9]{8}$'
          AND (to_date(substr(c.relname, 12), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= p_raw_before
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM telemetry_default WHERE ts < p_raw_before;
    DELETE FROM telemetry_1m WHERE bucket < p_rollup_before;
    RETURN dropped;
END
$$;

-- 1-minute rollup: per device and minute, the sample count and min / max /
-- sum of each measurement (avg = sum / n; battery_temperature is optional,
-- so it has its own count). Buckets start on whole minutes of the Unix
-- epoch. Maintained exactly once per stored row: the writer adds only the
-- rows its INSERT ... ON CONFLICT DO NOTHING really inserted.
CREATE TABLE telemetry_1m (
    device_id                text NOT NULL,
    bucket                   timestamptz NOT NULL,
    n                        integer NOT NULL,
    n_temp                   integer NOT NULL,
    battery_voltage_min      real,
    battery_voltage_max      real,
    battery_voltage_sum      double precision NOT NULL,
    battery_current_min      real,
    battery_current_max      real,
    battery_current_sum      double precision NOT NULL,
    battery_power_min        real,
    battery_power_max        real,
    battery_power_sum        double precision NOT NULL,
    battery_soc_min          real,
    battery_soc_max          real,
    battery_soc_sum          double precision NOT NULL,
    battery_temperature_min  real,
    battery_temperature_max  real,
    battery_temperature_sum  double precision NOT NULL,
    grid_voltage_min         real,
    grid_voltage_max         real,
    grid_voltage_sum         double precision NOT NULL,
    grid_power_min           real,
    grid_power_max           real,
    grid_power_sum           double precision NOT NULL,
    grid_frequency_min       real,
    grid_frequency_max       real,
    grid_frequency_sum       double precision NOT NULL,
    PRIMARY KEY (device_id, bucket)
) WITH (fillfactor = 70); -- room for HOT updates: a bucket is updated ~60 times

-- The 1-hour rollup, as a view over the 1-minute one, for people and tools
-- writing SQL (the DB writer's queries re-bucket telemetry_1m directly so
-- that the time range reaches its index).
CREATE VIEW telemetry_1h AS
SELECT device_id,
       date_bin('1 hour', bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
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
GROUP BY 1, 2;

-- Partitions around now, so the first batch does not land in the default.
SELECT ems_ensure_partitions(now() - interval '8 days', now() + interval '2 days');
